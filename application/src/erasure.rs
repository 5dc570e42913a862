//! Erasure: destroy an account's data key (crypto-shredding) and record it, so the
//! history stays replayable while the person's data is gone.

use miniauth_domain::{AccountId, AppId, OpenId, SocialAccountCommand};

use crate::context::RequestContext;
use crate::error::AppError;
use crate::ports::SessionScope;
use crate::service::MiniAuth;

impl MiniAuth {
    /// Erases the personal data of (appid, openid): ends its binding (reason: erasure),
    /// records the erasure, destroys the data key, ends the sessions its user logged in
    /// to through this app, and clears the copies held by the user this identity
    /// registered if that user has nothing else. Running it again records nothing more;
    /// an identity that never logged in is `AccountNotFound`.
    pub async fn erase(
        &self,
        ctx: &RequestContext,
        appid: &AppId,
        openid: &OpenId,
    ) -> Result<(), AppError> {
        let id = AccountId::new(appid, openid);
        let context = self.load(&id).await?;
        if context.state().latest_session() == 0 {
            // Nothing was ever recorded: nothing to erase, and a caller who named the
            // wrong identity must hear so.
            return Err(AppError::AccountNotFound);
        }
        let was_bound = context.state().bound_user();
        let registered = context.state().registered_user();
        let command = SocialAccountCommand::ErasePersonalData { at: self.now() };
        self.commit(ctx, &id, context, vec![command]).await?;
        self.ports.vault.forget(&id).await?;
        if let Some(user) = was_bound {
            self.ports.registry.release(appid, openid, user).await?;
            // The erased account's sessions: those of its user issued through this app.
            self.revoke_sessions(user, SessionScope::App(appid.clone()))
                .await?;
        }
        // The user this identity registered keeps its copies of the phone, nickname
        // and avatar only if it lives on without this identity (docs/operations.md).
        if let Some(user) = registered {
            self.ports.users.erase_registered(user, &id).await?;
        }
        Ok(())
    }
}
