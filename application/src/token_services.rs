//! Token services for the services that trust miniauth's tokens: introspection
//! (RFC 7662), for resource servers that would rather ask than verify, and revocation
//! (RFC 7009), for clients that are done with a token.

use std::fmt;

use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;

use crate::context::RequestContext;
use crate::error::AppError;
use miniauth_domain::TenantId;

use crate::ports::{SessionScope, ThrottleKey, TokenSubject};
use crate::secret::Secret;
use crate::service::MiniAuth;

/// A client allowed to introspect tokens: id and secret, checked with HTTP Basic, and
/// the tenants whose tokens it may see.
#[derive(Clone)]
pub struct IntrospectionClient {
    /// The client id.
    pub id: String,
    /// Its secret.
    pub secret: Secret,
    /// The tenants whose tokens it may see active; empty: every tenant's.
    pub tenants: Vec<TenantId>,
}

impl IntrospectionClient {
    /// A client that sees the tokens of every tenant.
    pub fn of_every_tenant(id: impl Into<String>, secret: Secret) -> Self {
        Self {
            id: id.into(),
            secret,
            tenants: Vec::new(),
        }
    }
}

/// The clients allowed to introspect tokens.
#[derive(Clone, Default)]
pub struct IntrospectionClients(Vec<IntrospectionClient>);

impl IntrospectionClients {
    /// The configured clients; none: introspection refuses everyone.
    pub fn new(clients: impl IntoIterator<Item = IntrospectionClient>) -> Self {
        Self(clients.into_iter().collect())
    }

    /// Whether no client is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The configured client `id:secret` names, if any. Every entry is compared, id and
    /// secret each in constant time and both every time (no short circuit), so that
    /// the time does not tell which id exists.
    fn authenticate(&self, id: &str, secret: &str) -> Option<IntrospectionScope> {
        self.0.iter().fold(None, |found, client| {
            let id_matches: bool = client.id.as_bytes().ct_eq(id.as_bytes()).into();
            let secret_matches = client.secret.matches(secret);
            match found {
                None if id_matches & secret_matches => Some(IntrospectionScope {
                    tenants: client.tenants.clone(),
                }),
                found => found,
            }
        })
    }
}

impl fmt::Debug for IntrospectionClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|client| &client.id))
            .finish()
    }
}

/// What an authenticated introspection client may see: the tokens of these tenants,
/// or of every tenant when the list is empty. A token of another tenant is described
/// as inactive, as any token the client may not know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionScope {
    tenants: Vec<TenantId>,
}

impl IntrospectionScope {
    /// Whether a token of `tenant` may be described to the client.
    fn sees(&self, tenant: &TenantId) -> bool {
        self.tenants.is_empty() || self.tenants.contains(tenant)
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
    /// the address's tries. Answers what the client may see, `None` when it is no
    /// client.
    pub async fn authenticate_introspection_client(
        &self,
        ctx: &RequestContext,
        clients: &IntrospectionClients,
        credentials: Option<(&str, &str)>,
    ) -> Result<Option<IntrospectionScope>, AppError> {
        let key = ctx.client_net().map(ThrottleKey::IntrospectionClient);
        let mut scope = None;
        self.check_secret_try(key, || {
            scope = credentials.and_then(|(id, secret)| clients.authenticate(id, secret));
            scope.is_some()
        })
        .await?;
        Ok(scope)
    }

    /// Describes a token (RFC 7662): an access token whose signature, issuer, audience
    /// and lifetime verify and whose session is live, or a refresh token that can
    /// still be used, of a tenant the client may see. Anything else is
    /// [`Introspection::Inactive`].
    pub async fn introspect(
        &self,
        scope: &IntrospectionScope,
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
        Ok(found
            .filter(|active| scope.sees(&active.subject.tenant))
            .map_or(Introspection::Inactive, |active| {
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
        let client =
            |id: &str, secret: &str| IntrospectionClient::of_every_tenant(id, Secret::new(secret));
        let clients = IntrospectionClients::new([client("gateway", "s3cret")]);
        assert!(clients.authenticate("gateway", "s3cret").is_some());
        assert!(clients.authenticate("gateway", "s3cre").is_none());
        assert!(clients.authenticate("other", "s3cret").is_none());
        // One client's id with another's secret, a prefix of an id: no.
        let billing_tenant = TenantId::parse("billing").unwrap();
        let two = IntrospectionClients::new([
            client("gateway", "s3cret"),
            IntrospectionClient {
                tenants: vec![billing_tenant.clone()],
                ..client("billing", "other-secret")
            },
        ]);
        let billing = two.authenticate("billing", "other-secret").unwrap();
        assert!(billing.sees(&billing_tenant));
        assert!(!billing.sees(&TenantId::parse("default").unwrap()));
        let gateway = two.authenticate("gateway", "s3cret").unwrap();
        assert!(gateway.sees(&TenantId::parse("default").unwrap()));
        assert!(two.authenticate("billing", "s3cret").is_none());
        assert!(two.authenticate("gate", "s3cret").is_none());
        assert!(IntrospectionClients::default()
            .authenticate("gateway", "s3cret")
            .is_none());
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
