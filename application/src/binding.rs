//! Step 11 and 13: binding with account + password or as the logged-in user, and
//! unbinding this app's binding only.

use miniauth_domain::{
    AccountError, AccountId, BindMethod, InvalidValue, SessionProof, SocialAccountCommand,
    TenantId, UnbindReason, UserId,
};

use crate::context::RequestContext;
use crate::error::AppError;
use crate::phone::BindRequest;
use crate::ports::{
    LoadedAccount, Password, SessionScope, ThrottleKey, ThrottleKind, TokenSubject, UserRecord,
};
use crate::service::{ensure_active, ensure_same_tenant, session_owner, MiniAuth, Tokens};
use crate::settings::limits;

impl MiniAuth {
    /// Binds the ticket's WeChat identity to the user who is logged in (bearer token),
    /// who must be of the app's tenant: a user is bound only to apps of their own.
    pub async fn bind_current_user(
        &self,
        ctx: &RequestContext,
        appid: &str,
        ticket: &str,
        subject: &TokenSubject,
    ) -> Result<UserId, AppError> {
        let opened = self.open_ticket_to_spend(appid, ticket)?;
        if subject.tenant != opened.app.tenant {
            return Err(AppError::TenantMismatch);
        }
        let id = opened.account.clone();
        let proof = SessionProof::ticket(opened.claims.session_seq);
        let context = self.checked_context(&id, proof).await?;
        let user = self.active_user(subject.user_id).await?;
        ensure_same_tenant(&user, opened.app)?;
        // A ticket binds once: one copied from a log cannot bind the identity to
        // whoever holds it after its owner used it.
        self.spend_ticket(&opened.claims).await?;
        let bind = BindRequest {
            linked_from: None,
            user: user.id,
            proof,
            via: BindMethod::CurrentUser,
        };
        self.bind_to(ctx, context, &id, bind, async { Ok(vec![]) }, None)
            .await?;
        Ok(user.id)
    }

    /// Binds the ticket's WeChat identity to the user with this account and password
    /// (the fallback when the user declines the phone), and logs that user in.
    pub async fn bind_with_password(
        &self,
        ctx: &RequestContext,
        appid: &str,
        ticket: &str,
        account: &str,
        password: &Password,
    ) -> Result<Tokens, AppError> {
        let opened = self.open_ticket_to_spend(appid, ticket)?;
        let id = opened.account.clone();
        let proof = SessionProof::ticket(opened.claims.session_seq);
        let context = self.checked_context(&id, proof).await?;
        let user = self
            .check_password(ctx, &opened.app.tenant, account, password)
            .await?;
        // A disabled user must not gain a binding: refuse before claiming anything.
        ensure_active(&user)?;
        self.spend_ticket(&opened.claims).await?;
        let bind = BindRequest {
            linked_from: None,
            user: user.id,
            proof,
            via: BindMethod::PasswordLogin,
        };
        // The binding and the login session in one commit.
        let owner = session_owner(&user, Some(opened.app))?;
        match self
            .bind_to(ctx, context, &id, bind, async { Ok(vec![]) }, Some(&owner))
            .await?
        {
            (_, Some(started)) => self.tokens_of(started),
            (_, None) => self.issue_tokens(&user, Some(opened.app)).await,
        }
    }

    /// Ends the caller's binding in `appid` — and only there: bindings in other apps
    /// stay — and the login sessions issued through `appid`: tokens die with the
    /// binding they stood for. A token of another tenant than the app's is refused.
    pub async fn unbind(
        &self,
        ctx: &RequestContext,
        appid: &str,
        subject: &TokenSubject,
    ) -> Result<(), AppError> {
        let app = self.app(appid)?;
        if subject.tenant != app.tenant {
            return Err(AppError::TenantMismatch);
        }
        let user_id = subject.user_id;
        let openid = self
            .ports
            .registry
            .identity_of(&app.appid, user_id)
            .await?
            .ok_or(AppError::NotBound)?;
        let id = AccountId::new(&app.appid, &openid);
        let ended = self
            .end_binding(ctx, &id, user_id, UnbindReason::UserRequest, None)
            .await;
        // Also when the log had already ended it (a retry after a failure): the
        // sessions must not outlive the binding either way.
        if matches!(ended, Ok(()) | Err(AppError::NotBound)) {
            self.revoke_sessions(user_id, SessionScope::App(app.appid.clone()))
                .await?;
        }
        ended
    }

    /// Ends the binding of account `id` to `user_id` (recording an operator's `note`
    /// with it, if any), then releases it in the registry.
    pub(crate) async fn end_binding(
        &self,
        ctx: &RequestContext,
        id: &AccountId,
        user_id: UserId,
        reason: UnbindReason,
        note: Option<&str>,
    ) -> Result<(), AppError> {
        let context = self.load(id).await?;
        let command = SocialAccountCommand::Unbind {
            user_id,
            reason,
            at: self.now(),
        };
        let committed = self
            .commit_noted(ctx, id, context, vec![command], note)
            .await;
        if let Err(AppError::Account(AccountError::NotBound)) = &committed {
            // The log says unbound but the registry still held the claim (a release
            // that failed after an earlier unbind): repair the registry, then say so.
            self.ports
                .registry
                .release(&id.appid(), &id.openid(), user_id)
                .await?;
            return Err(AppError::NotBound);
        }
        committed?;
        self.ports
            .registry
            .release(&id.appid(), &id.openid(), user_id)
            .await?;
        Ok(())
    }

    /// Loads the account and refuses a stale ticket before any other work.
    async fn checked_context(
        &self,
        id: &AccountId,
        proof: SessionProof,
    ) -> Result<LoadedAccount, AppError> {
        let context = self.load(id).await?;
        context.state().check_proof(proof)?;
        Ok(context)
    }

    /// Checks account + password, throttled per (account, client), per account (a much
    /// higher ceiling) and per client: a guesser is stopped at their own address
    /// without locking the owner out from theirs, or other users out of a shared one.
    pub(crate) async fn check_password(
        &self,
        ctx: &RequestContext,
        tenant: &TenantId,
        account: &str,
        password: &Password,
    ) -> Result<UserRecord, AppError> {
        let account = account.trim();
        if account.is_empty() || account.chars().count() > limits::ACCOUNT_CHARS {
            return Err(InvalidValue::new("account", "must be 1 to 64 characters").into());
        }
        if password.expose().is_empty() || password.expose().len() > limits::PASSWORD_BYTES {
            return Err(InvalidValue::new("password", "must be 1 to 256 bytes").into());
        }
        let now = self.now();
        let keys = password_keys(ctx, tenant, account);
        for key in &keys {
            self.ports
                .limiter
                .check(key, now)
                .await
                .map_err(|e| AppError::throttled(e, AppError::TooManyAttempts))?;
        }
        match self
            .ports
            .users
            .check_password(tenant, account, password)
            .await?
        {
            Some(user) => {
                // Only the (account, client) pair is forgiven: the account's and the
                // client's ceilings keep counting what others tried.
                if let Some(pair) = keys
                    .iter()
                    .find(|k| k.kind() == ThrottleKind::AccountFromClient)
                {
                    self.ports.limiter.reset(pair).await?;
                }
                Ok(user)
            }
            None => {
                for key in &keys {
                    self.ports.limiter.record_failure(key, now).await?;
                }
                Err(AppError::BadCredentials)
            }
        }
    }
}

/// The throttle keys of a password attempt: the account always, the client and the
/// pair when the transport knows the client.
fn password_keys(ctx: &RequestContext, tenant: &TenantId, account: &str) -> Vec<ThrottleKey> {
    let mut keys = Vec::with_capacity(3);
    if let Some(client) = ctx.client_net() {
        keys.push(ThrottleKey::AccountFromClient {
            tenant: tenant.clone(),
            account: account.to_owned(),
            client,
        });
        keys.push(ThrottleKey::Client(client));
    }
    keys.push(ThrottleKey::Account {
        tenant: tenant.clone(),
        account: account.to_owned(),
    });
    keys
}
