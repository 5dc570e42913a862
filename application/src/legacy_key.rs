//! The bind-key bridge of a GitEgg migration: for a transition period after
//! `miniauth import gitegg`, a bind key the old GitEgg deployment handed out
//! (`hex(DES(WECHAT_MINI_APP_<unionid or openid>))`, the same on every login) still buys
//! tokens for the imported mini program account it names, so that front ends holding
//! one keep working while they switch over. Only imported accounts, only for `period` after
//! their import (the `imported_at` of their `AccountImported` event); everything else
//! is refused with a code that says why. Every way a key fails to decode is one answer
//! (`legacy_bind_key_invalid`), so the answers are no padding oracle.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Duration;
use miniauth_domain::{AccountId, AppId, Channel};

use crate::error::{AppError, LegacyKeyRefusal};
use crate::ports::PortError;
use crate::service::{MiniAuth, Tokens};

/// Reads GitEgg bind keys with the DES key and IV of the migrated deployment.
pub trait LegacyBindKeys: Send + Sync {
    /// The unionid or openid inside `bind_key`; `None` whatever is wrong with it
    /// (not hex, wrong length, bad padding, no prefix, not an id): one answer for all.
    fn identity(&self, bind_key: &str) -> Option<String>;
}

/// The imported accounts a GitEgg bind key can name.
#[async_trait]
pub trait ImportedIdentities: Send + Sync {
    /// The accounts of `apps` whose openid is `identity`, or whose unionid is.
    async fn accounts_named(
        &self,
        identity: &str,
        apps: &[AppId],
    ) -> Result<Vec<AccountId>, PortError>;
}

/// The bridge, as configured (`[compat] legacy_des_key`, `legacy_des_iv`,
/// `legacy_bind_key_days`).
#[derive(Clone)]
pub struct LegacyBridge {
    /// The codec.
    pub keys: Arc<dyn LegacyBindKeys>,
    /// The lookup.
    pub accounts: Arc<dyn ImportedIdentities>,
    /// How long after its import an account still accepts GitEgg's bind key.
    pub period: Duration,
}

/// Whether `key` is shaped like a GitEgg bind key (hex digits only, whole DES blocks),
/// not like one of miniauth's tickets.
fn looks_legacy(key: &str) -> bool {
    let key = key.trim();
    !key.is_empty() && key.len().is_multiple_of(16) && key.bytes().all(|b| b.is_ascii_hexdigit())
}

impl MiniAuth {
    /// The same service, accepting GitEgg's bind keys through `bridge`.
    pub fn with_legacy_bridge(mut self, bridge: LegacyBridge) -> Self {
        self.legacy = Some(bridge);
        self
    }

    /// GitEgg's `grant_type=social`: a miniauth ticket, or — while the bridge is
    /// configured — a bind key of the old GitEgg deployment for an imported account.
    pub async fn grant_social_key(&self, key: &str) -> Result<Tokens, AppError> {
        match &self.legacy {
            Some(bridge) if looks_legacy(key) => self.grant_legacy_key(bridge, key).await,
            _ => self.grant_ticket(key).await,
        }
    }

    async fn grant_legacy_key(&self, bridge: &LegacyBridge, key: &str) -> Result<Tokens, AppError> {
        let identity = bridge
            .keys
            .identity(key)
            .ok_or(AppError::LegacyBindKey(LegacyKeyRefusal::Invalid))?;
        let apps: Vec<AppId> = self.apps.iter().map(|a| a.appid.clone()).collect();
        let now = self.now();
        let mut imported = Vec::new();
        for id in bridge.accounts.accounts_named(&identity, &apps).await? {
            let context = self.load(&id).await?;
            // GitEgg minted bind keys at its mini program's login only
            // (`WECHAT_MINI_APP_…`): an imported Official Account, website or App
            // identity sharing the unionid is not what the key names.
            if context.state().channel() != Channel::MiniProgram {
                continue;
            }
            if let Some(at) = context.state().imported_at() {
                imported.push((id, at, context.state().bound_user()));
            }
        }
        if imported.is_empty() {
            return Err(AppError::LegacyBindKey(LegacyKeyRefusal::NotImported));
        }
        let current: Vec<_> = imported
            .into_iter()
            .filter(|(_, at, _)| now < *at + bridge.period)
            .collect();
        if current.is_empty() {
            return Err(AppError::LegacyBindKey(LegacyKeyRefusal::Expired));
        }
        // A unionid names the person in every app: one user, or none at all.
        let mut users: Vec<_> = current
            .iter()
            .filter_map(|(id, _, user)| user.map(|u| (u, id)))
            .collect();
        users.sort_by_key(|(u, _)| *u);
        users.dedup_by_key(|(u, _)| *u);
        let [(user, account)] = users.as_slice() else {
            return Err(AppError::NotBound);
        };
        let app = self
            .apps
            .get(&account.appid())
            .ok_or(AppError::UnknownApp)?;
        let user = self.active_user(*user).await?;
        self.issue_tokens(&user, Some(app)).await
    }
}

#[cfg(test)]
mod tests {
    use super::looks_legacy;

    #[test]
    fn only_whole_des_blocks_of_hex_look_like_gitegg_keys() {
        assert!(looks_legacy("0123456789abcdef0123456789ABCDEF"));
        assert!(!looks_legacy("0123456789abcde"));
        assert!(!looks_legacy("eyJhbGciOi.payload.sig"));
        assert!(!looks_legacy(""));
    }
}
