//! Token services for the services that trust miniauth's tokens: introspection
//! (RFC 7662), for resource servers that would rather ask than verify, and revocation
//! (RFC 7009), for clients that are done with a token.

use std::fmt;

use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;

use crate::context::RequestContext;
use crate::error::AppError;
use crate::ports::{SessionScope, ThrottleKey, TokenSubject};
use crate::secret::Secret;
use crate::service::MiniAuth;

/// The clients allowed to introspect tokens: id and secret, checked with HTTP Basic.
#[derive(Clone, Default)]
pub struct IntrospectionClients(Vec<(String, Secret)>);

impl IntrospectionClients {
    /// The configured clients; none: introspection refuses everyone.
    pub fn new(clients: impl IntoIterator<Item = (String, Secret)>) -> Self {
        Self(clients.into_iter().collect())
    }

    /// Whether no client is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `id:secret` names a configured client. Every entry is compared, id and
    /// secret each in constant time and both every time (no short circuit), so that
    /// the time does not tell which id exists.
    fn authenticate(&self, id: &str, secret: &str) -> bool {
        self.0.iter().fold(false, |found, (client, expected)| {
            let id_matches: bool = client.as_bytes().ct_eq(id.as_bytes()).into();
            let secret_matches = expected.matches(secret);
            found | (id_matches & secret_matches)
        })
    }
}

impl fmt::Debug for IntrospectionClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(id, _)| id))
            .finish()
    }
}

/// Which kind of token a caller says it presents (`token_type_hint`). A hint only
/// orders the lookups: a token of the other kind is still found (RFC 7009 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenTypeHint {
    /// `access_token`.
    AccessToken,
    /// `refresh_token`.
    RefreshToken,
    /// No hint, or one this server does not know (ignored, as the RFCs allow).
    #[default]
    None,
}

impl TokenTypeHint {
    /// Reads a `token_type_hint` value; an unknown one is no hint.
    pub fn parse(raw: Option<&str>) -> Self {
        match raw.map(str::trim) {
            Some("access_token") => Self::AccessToken,
            Some("refresh_token") => Self::RefreshToken,
            _ => Self::None,
        }
    }

    fn refresh_first(self) -> bool {
        self == Self::RefreshToken
    }
}

/// Which kind a token turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A JWT access token.
    Access,
    /// An opaque refresh token.
    Refresh,
}

/// An active token, as introspection describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveToken {
    /// Access or refresh token.
    pub kind: TokenKind,
    /// Who it speaks for, and its session.
    pub subject: TokenSubject,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// The `jti` of an access token.
    pub token_id: Option<String>,
    /// The `aud` of an access token.
    pub audience: Option<String>,
}

/// What introspection answers: active with its claims, or inactive — one answer for
/// unknown, malformed, forged, expired, revoked and another issuer's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspection {
    /// The token can be used now.
    Active(Box<ActiveToken>),
    /// It cannot, for whatever reason.
    Inactive,
}

impl MiniAuth {
    /// Authenticates an introspection client (HTTP Basic credentials, if sent). Every
    /// try is counted per client address before the credentials are compared, with a
    /// budget of its own ([`MiniAuth::check_secret_try`]); right credentials forgive
    /// the address's tries. Answers whether the client may introspect.
    pub async fn authenticate_introspection_client(
        &self,
        ctx: &RequestContext,
        clients: &IntrospectionClients,
        credentials: Option<(&str, &str)>,
    ) -> Result<bool, AppError> {
        let key = ctx.client_net().map(ThrottleKey::IntrospectionClient);
        self.check_secret_try(key, || {
            credentials.is_some_and(|(id, secret)| clients.authenticate(id, secret))
        })
        .await
    }

    /// Describes a token (RFC 7662): an access token whose signature, issuer, audience
    /// and lifetime verify and whose session is live, or a refresh token that can
    /// still be used. Anything else is [`Introspection::Inactive`].
    pub async fn introspect(
        &self,
        token: &str,
        hint: TokenTypeHint,
    ) -> Result<Introspection, AppError> {
        let token = token.trim();
        if token.is_empty() {
            return Ok(Introspection::Inactive);
        }
        let found = if hint.refresh_first() {
            match self.introspect_refresh(token).await? {
                Some(active) => Some(active),
                None => self.introspect_access(token).await?,
            }
        } else {
            match self.introspect_access(token).await? {
                Some(active) => Some(active),
                None => self.introspect_refresh(token).await?,
            }
        };
        Ok(found.map_or(Introspection::Inactive, |active| {
            Introspection::Active(Box::new(active))
        }))
    }

    async fn introspect_access(&self, token: &str) -> Result<Option<ActiveToken>, AppError> {
        let now = self.now();
        let Ok(verified) = self.ports.tokens.inspect(token, now) else {
            return Ok(None);
        };
        if !self
            .ports
            .refresh
            .session_live(&verified.subject, now)
            .await?
        {
            return Ok(None);
        }
        Ok(Some(ActiveToken {
            kind: TokenKind::Access,
            subject: verified.subject,
            issued_at: verified.issued_at,
            expires_at: verified.expires_at,
            token_id: Some(verified.token_id),
            audience: Some(verified.audience),
        }))
    }

    async fn introspect_refresh(&self, token: &str) -> Result<Option<ActiveToken>, AppError> {
        let live = self.ports.refresh.inspect(token, self.now()).await?;
        Ok(live.map(|live| ActiveToken {
            kind: TokenKind::Refresh,
            subject: live.subject,
            issued_at: live.issued_at,
            expires_at: live.expires_at,
            token_id: None,
            audience: None,
        }))
    }

    /// Revokes a token (RFC 7009): a refresh token ends its whole family (the login
    /// session); an access token ends the session its `sid` names, so that its
    /// refresh tokens and every access token of the session stop working. The token
    /// is its own credential. An unknown, malformed or already dead token is not an
    /// error: there is nothing left to revoke.
    pub async fn revoke_token(&self, token: &str, hint: TokenTypeHint) -> Result<(), AppError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(miniauth_domain::InvalidValue::new("token", "is missing or empty").into());
        }
        if hint.refresh_first() && self.revoke_refresh(token).await? {
            return Ok(());
        }
        if self.revoke_access(token).await? {
            return Ok(());
        }
        self.revoke_refresh(token).await?;
        Ok(())
    }

    async fn revoke_access(&self, token: &str) -> Result<bool, AppError> {
        // The token must verify (signature, issuer, audience, lifetime): a forged or
        // expired one ends nothing (its session's refresh token still can).
        let subject = match self.ports.tokens.verify(token, self.now()) {
            Ok(subject) => subject,
            Err(_) => return Ok(false),
        };
        self.revoke_sessions(subject.user_id, SessionScope::Session(subject.session))
            .await?;
        Ok(true)
    }

    async fn revoke_refresh(&self, token: &str) -> Result<bool, AppError> {
        Ok(self
            .ports
            .refresh
            .revoke_family_of(token, self.now())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_matched_exactly_and_hidden_from_debug() {
        let clients = IntrospectionClients::new([("gateway".to_owned(), Secret::new("s3cret"))]);
        assert!(clients.authenticate("gateway", "s3cret"));
        assert!(!clients.authenticate("gateway", "s3cre"));
        assert!(!clients.authenticate("other", "s3cret"));
        // One client's id with another's secret, a prefix of an id: no.
        let two = IntrospectionClients::new([
            ("gateway".to_owned(), Secret::new("s3cret")),
            ("billing".to_owned(), Secret::new("other-secret")),
        ]);
        assert!(two.authenticate("billing", "other-secret"));
        assert!(!two.authenticate("billing", "s3cret"));
        assert!(!two.authenticate("gate", "s3cret"));
        assert!(!IntrospectionClients::default().authenticate("gateway", "s3cret"));
        assert!(!format!("{clients:?}").contains("s3cret"));
    }

    #[test]
    fn hints_are_read_and_unknown_ones_ignored() {
        assert_eq!(
            TokenTypeHint::parse(Some("refresh_token")),
            TokenTypeHint::RefreshToken
        );
        assert_eq!(
            TokenTypeHint::parse(Some("access_token")),
            TokenTypeHint::AccessToken
        );
        assert_eq!(TokenTypeHint::parse(Some("id_token")), TokenTypeHint::None);
        assert_eq!(TokenTypeHint::parse(None), TokenTypeHint::None);
    }
}
