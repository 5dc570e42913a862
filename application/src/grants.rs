//! Step 12–13: token grants (ticket, password, refresh token), logout, and who the
//! bearer of an access token is.

use miniauth_domain::{AccountId, InvalidValue, PhoneNumber, SessionProof, TenantId};

use crate::context::RequestContext;
use crate::error::AppError;
use crate::ports::{
    AccessTokenError, AccountCreation, Binding, NewAccountUser, Password, SessionScope,
    TokenSubject, UserRecord,
};
use crate::service::{ensure_same_tenant, MiniAuth, Tokens};
use crate::settings::limits;

/// The logged-in user, with every binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// The user.
    pub user: UserRecord,
    /// Bindings in every app.
    pub bindings: Vec<Binding>,
}

impl MiniAuth {
    /// Exchanges a ticket of a bound identity for tokens, once: a second exchange of
    /// the same ticket is refused. The ticket must be the newest session's.
    pub async fn grant_ticket(&self, ticket: &str) -> Result<Tokens, AppError> {
        let claims = self.verify_ticket(ticket)?;
        let app = self.apps.get(&claims.appid).ok_or(AppError::UnknownApp)?;
        let id = AccountId::new(&claims.appid, &claims.openid);
        let context = self.load(&id).await?;
        let state = context.state();
        state.check_proof(SessionProof::ticket(claims.session_seq))?;
        let user_id = state.bound_user().ok_or(AppError::NotBound)?;
        let user = self.active_user(user_id).await?;
        // Counted last: a refused exchange (stale, unbound, disabled) spends nothing.
        self.spend_ticket(&claims).await?;
        self.issue_tokens(&user, Some(app)).await
    }

    /// Logs a user in with account + password (no WeChat identity involved). A tenant
    /// that no configured app and no user belongs to is refused as such.
    pub async fn grant_password(
        &self,
        ctx: &RequestContext,
        tenant: &TenantId,
        account: &str,
        password: &Password,
    ) -> Result<Tokens, AppError> {
        let configured = self.apps.iter().any(|app| &app.tenant == tenant);
        if !configured && !self.ports.users.tenant_exists(tenant).await? {
            return Err(AppError::UnknownTenant);
        }
        let user = self.check_password(ctx, tenant, account, password).await?;
        self.issue_tokens(&user, None).await
    }

    /// Rotates a refresh token: the old one stops working, a reused one revokes its
    /// family. The user must still be active and of the session's tenant.
    pub async fn grant_refresh(&self, refresh_token: &str) -> Result<Tokens, AppError> {
        let refresh_token = refresh_token.trim();
        if refresh_token.is_empty() {
            return Err(
                miniauth_domain::InvalidValue::new("refresh_token", "is missing or empty").into(),
            );
        }
        let (subject, refresh) = self.ports.refresh.rotate(refresh_token, self.now()).await?;
        let user = self.active_user(subject.user_id).await?;
        if user.tenant != subject.tenant {
            return Err(AppError::TenantMismatch);
        }
        if let Some(app) = subject.appid.as_ref().and_then(|a| self.apps.get(a)) {
            ensure_same_tenant(&user, app)?;
        }
        let access = self.ports.tokens.issue(&subject, self.now())?;
        Ok(Tokens {
            user_id: user.id,
            access,
            refresh,
        })
    }

    /// Revokes the caller's refresh token (and its family); without one, the session
    /// the access token belongs to.
    pub async fn logout(
        &self,
        subject: &TokenSubject,
        refresh_token: &str,
    ) -> Result<(), AppError> {
        let refresh_token = refresh_token.trim();
        if refresh_token.is_empty() {
            // The access token alone (GitEgg's front end posts no body): its session ends.
            self.revoke_sessions(
                subject.user_id,
                SessionScope::Session(subject.session.clone()),
            )
            .await?;
            return Ok(());
        }
        self.ports
            .refresh
            .revoke(refresh_token, subject.user_id, self.now())
            .await?;
        Ok(())
    }

    /// Who an access token speaks for: its signature and lifetime verify, and its
    /// session (`sid`) is still live — not logged out, unbound, erased, disabled or
    /// past its absolute lifetime.
    pub async fn authenticate(&self, access_token: &str) -> Result<TokenSubject, AppError> {
        let now = self.now();
        let subject = self.ports.tokens.verify(access_token.trim(), now)?;
        if !self.ports.refresh.session_live(&subject, now).await? {
            return Err(AccessTokenError::Revoked.into());
        }
        Ok(subject)
    }

    /// The user behind a token, with the bindings in the apps of the token's tenant.
    pub async fn me(&self, subject: &TokenSubject) -> Result<Me, AppError> {
        let user = self.active_user(subject.user_id).await?;
        if user.tenant != subject.tenant {
            return Err(AppError::TenantMismatch);
        }
        let mut bindings = self.ports.registry.bindings_of(user.id).await?;
        bindings.retain(|binding| {
            self.apps
                .get(&binding.appid)
                .is_some_and(|app| app.tenant == user.tenant)
        });
        Ok(Me { user, bindings })
    }

    /// Creates a password user (administration). Account names and mobile numbers are
    /// unique per tenant.
    pub async fn add_user(
        &self,
        tenant: &TenantId,
        account: &str,
        password: &Password,
        mobile: Option<&PhoneNumber>,
        nickname: Option<&str>,
    ) -> Result<UserRecord, AppError> {
        let account = account.trim();
        if account.is_empty()
            || account.chars().count() > limits::ACCOUNT_CHARS
            || account.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(
                InvalidValue::new("account", "must be 1 to 64 characters without spaces").into(),
            );
        }
        if password.expose().len() < 8 || password.expose().len() > limits::PASSWORD_BYTES {
            return Err(InvalidValue::new("password", "must be 8 to 256 bytes").into());
        }
        let nickname = nickname.map(str::trim).filter(|n| !n.is_empty());
        if nickname.is_some_and(|n| n.chars().count() > limits::NICKNAME_CHARS) {
            return Err(InvalidValue::new("nickname", "must be at most 64 characters").into());
        }
        let new_user = NewAccountUser {
            tenant: tenant.clone(),
            account: account.to_owned(),
            password: password.clone(),
            mobile: mobile.cloned(),
            nickname: nickname.map(str::to_owned),
        };
        match self.ports.users.create_account(new_user).await? {
            AccountCreation::Created(user) => Ok(user),
            AccountCreation::AccountTaken => Err(AppError::AccountTaken),
            AccountCreation::PhoneTaken => Err(AppError::PhoneTaken),
        }
    }
}
