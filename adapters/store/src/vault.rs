//! The personal-data vault: session keys sealed with the server key; personal data
//! sealed with a per-account data key, itself kept sealed by the server key. Forgetting
//! an account deletes its data key: what it sealed can never be opened again
//! (crypto-shredding) while the events that carry it stay replayable.
//!
//! Formats: a sealed secret is `v1.<nonce>.<ciphertext>`; a sealed datum is
//! `v1.<key id>.<nonce>.<ciphertext>`, the key id telling an erased (or replaced) key
//! apart from corruption.

use async_trait::async_trait;
use miniauth_application::ports::{PersonalDataVault, PortError};
use miniauth_domain::{AccountId, SealedDatum, SealedSecret, SessionKey};
use sqlx::Row;

use crate::crypto::{Keys, Sealer};
use crate::db::{millis, on_pool, port_error, Db};

const SESSION_KEY: &str = "session_key";

/// `PersonalDataVault` on the `data_keys` table and the server key. Cheap to clone.
#[derive(Clone)]
pub struct SqlVault {
    db: Db,
    keys: Keys,
}

impl SqlVault {
    pub(crate) fn new(db: Db, keys: Keys) -> Self {
        Self { db, keys }
    }

    fn key_purpose(account: &AccountId) -> String {
        format!("data_key:{}", account.as_str())
    }

    async fn data_key(&self, account: &AccountId) -> Result<Option<(String, Sealer)>, PortError> {
        let row: Option<(String, String)> = on_pool!(&self.db.pool, p => {
            sqlx::query("SELECT key_id, sealed_key FROM data_keys WHERE account_id = $1")
                .bind(account.as_str())
                .fetch_optional(p)
                .await
                .and_then(|r| r.map(|r| Ok((r.try_get("key_id")?, r.try_get("sealed_key")?))).transpose())
                .map_err(port_error)?
        });
        let Some((key_id, sealed)) = row else {
            return Ok(None);
        };
        let bytes = self
            .keys
            .sealer
            .open(&Self::key_purpose(account), &sealed)
            .map_err(|e| {
                PortError::Internal(format!("data key of an account: {e} (wrong server key?)"))
            })?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| PortError::Internal("data key of an account: wrong length".into()))?;
        Ok(Some((key_id, Sealer::new(&bytes))))
    }

    async fn data_key_or_create(&self, account: &AccountId) -> Result<(String, Sealer), PortError> {
        if let Some(found) = self.data_key(account).await? {
            return Ok(found);
        }
        let key: [u8; 32] = rand::random();
        let key_id = hex::encode(rand::random::<[u8; 6]>());
        {
            let _turn = self.db.write_turn().await;
            on_pool!(&self.db.pool, p => {
                // Concurrent first uses: one key wins, everyone uses it.
                sqlx::query(
                    "INSERT INTO data_keys (account_id, key_id, sealed_key, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (account_id) DO NOTHING",
                )
                .bind(account.as_str())
                .bind(&key_id)
                .bind(self.keys.sealer.seal(&Self::key_purpose(account), &key))
                .bind(millis(chrono::Utc::now()))
                .execute(p)
                .await
                .map_err(port_error)?;
            });
        }
        self.data_key(account)
            .await?
            .ok_or_else(|| PortError::Internal("data key vanished while being created".into()))
    }
}

#[async_trait]
impl PersonalDataVault for SqlVault {
    async fn seal_secret(&self, key: &SessionKey) -> Result<SealedSecret, PortError> {
        Ok(SealedSecret::from_sealed_text(
            self.keys
                .sealer
                .seal(SESSION_KEY, key.expose_text().as_bytes()),
        ))
    }

    async fn unseal_secret(&self, sealed: &SealedSecret) -> Result<SessionKey, PortError> {
        let bytes = self
            .keys
            .sealer
            .open(SESSION_KEY, sealed.as_sealed_text())
            .map_err(|e| PortError::Internal(format!("sealed session key: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| PortError::Internal("sealed session key: not UTF-8".into()))?;
        SessionKey::parse(&text)
            .map_err(|_| PortError::Internal("sealed session key: invalid".into()))
    }

    async fn seal_personal(
        &self,
        account: &AccountId,
        plaintext: &str,
    ) -> Result<SealedDatum, PortError> {
        let (key_id, sealer) = self.data_key_or_create(account).await?;
        let sealed = sealer.seal(account.as_str(), plaintext.as_bytes());
        let body = sealed.strip_prefix("v1.").unwrap_or(&sealed);
        Ok(SealedDatum::from_sealed_text(format!("v1.{key_id}.{body}")))
    }

    async fn unseal_personal(
        &self,
        account: &AccountId,
        sealed: &SealedDatum,
    ) -> Result<Option<String>, PortError> {
        let text = sealed.as_sealed_text();
        let malformed = || PortError::Internal("sealed personal datum: malformed".into());
        let rest = text.strip_prefix("v1.").ok_or_else(malformed)?;
        let (key_id, body) = rest.split_once('.').ok_or_else(malformed)?;
        let Some((current, sealer)) = self.data_key(account).await? else {
            return Ok(None); // erased
        };
        if current != key_id {
            return Ok(None); // sealed under a key erased since
        }
        let bytes = sealer
            .open(account.as_str(), &format!("v1.{body}"))
            .map_err(|e| PortError::Internal(format!("sealed personal datum: {e}")))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PortError::Internal("sealed personal datum: not UTF-8".into()))
    }

    async fn forget(&self, account: &AccountId) -> Result<(), PortError> {
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            sqlx::query("DELETE FROM data_keys WHERE account_id = $1")
                .bind(account.as_str())
                .execute(p)
                .await
                .map_err(port_error)?;
        });
        Ok(())
    }
}
