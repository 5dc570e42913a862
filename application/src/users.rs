//! Administration of business users: disabling one ends every session they hold.

use miniauth_domain::UserId;

use crate::error::AppError;
use crate::ports::{SessionScope, UserRecord, UserStatus};
use crate::service::MiniAuth;

impl MiniAuth {
    /// Disables a user: no login, binding or refresh from now on, and every session
    /// they hold ends (refresh tokens stop refreshing, access tokens stop working
    /// here). Disabling a disabled user is harmless and revokes again.
    pub async fn disable_user(&self, id: UserId) -> Result<UserRecord, AppError> {
        let user = self
            .ports
            .users
            .set_status(id, UserStatus::Disabled)
            .await?
            .ok_or(AppError::UserNotFound)?;
        // After the status: a refresh racing with this finds the user disabled.
        self.revoke_sessions(id, SessionScope::All).await?;
        tracing::info!(user = %id, "user disabled");
        Ok(user)
    }

    /// Enables a user again. Their old sessions stay ended: they log in again.
    pub async fn enable_user(&self, id: UserId) -> Result<UserRecord, AppError> {
        let user = self
            .ports
            .users
            .set_status(id, UserStatus::Active)
            .await?
            .ok_or(AppError::UserNotFound)?;
        tracing::info!(user = %id, "user enabled");
        Ok(user)
    }
}
