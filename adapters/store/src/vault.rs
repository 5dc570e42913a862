//! The personal-data vault: session keys sealed with the server key; personal data
//! sealed with a per-account data key, itself kept sealed by the server key. Forgetting
//! an account deletes its data key: what it sealed can never be opened again
//! (crypto-shredding) while the events that carry it stay replayable.
//!
//! Every value is bound to its purpose and its account (the AEAD associated data, see
//! [`crate::crypto`]). Formats: a sealed secret is `v2.<nonce>.<ciphertext>`; a sealed
//! datum is `v2.<key id>.<nonce>.<ciphertext>`, the key id telling an erased (or
//! replaced) key apart from corruption. The v1 forms of earlier releases still open
//! (they live in events, which are never rewritten): a v1 session key was bound to its
//! purpose only, a v1 datum to its account only.

use async_trait::async_trait;
use miniauth_application::ports::{PersonalDataVault, PortError};
use miniauth_domain::{
    AccountId, PersonalField, SealedDatum, SealedSecret, SealedUnionId, SessionKey, UnionId,
};
use sqlx::Row;

use crate::crypto::{Binding, Keys, Legacy, Sealer, V1, V2};
use crate::db::{millis, on_pool, port_error, Db};

const SESSION_KEY: &str = "session_key";
const DATA_KEY: &str = "data_key";
/// The purpose of the unionid's lookup hash (the same in every app of a tenant, so
/// that one person's accounts can be linked).
pub(crate) const UNIONID_LOOKUP: &str = "unionid";

/// The owner part of an account's associated data.
pub(crate) fn account_owner(account: &AccountId) -> String {
    format!("account:{}", account.as_str())
}

fn personal_purpose(field: PersonalField) -> String {
    format!("personal.{}", field.as_str())
}

/// A personal datum of `account` sealed under its data key `key_id`:
/// `v2.<key id>.<nonce>.<ciphertext>`, bound to the field and the account.
pub(crate) fn seal_datum(
    key_id: &str,
    sealer: &Sealer,
    account: &AccountId,
    field: PersonalField,
    plaintext: &str,
) -> SealedDatum {
    let sealed = sealer.seal(
        Binding::new(&personal_purpose(field), &account_owner(account)),
        plaintext.as_bytes(),
    );
    let body = sealed.strip_prefix("v2.").unwrap_or(&sealed);
    SealedDatum::from_sealed_text(format!("{V2}.{key_id}.{body}"))
}

/// The keyed lookup hash of a unionid (the same in every app of a tenant).
pub(crate) fn unionid_hash(keys: &Keys, unionid: &UnionId) -> String {
    keys.lookup_hash(UNIONID_LOOKUP, unionid.as_str())
}

/// A new data key and its id.
pub(crate) fn new_data_key() -> ([u8; 32], String) {
    (rand::random(), hex::encode(rand::random::<[u8; 6]>()))
}

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

    /// What v1 data keys were sealed with: their purpose and account, as one string.
    fn legacy_key_ad(account: &AccountId) -> String {
        format!("data_key:{}", account.as_str())
    }

    pub(crate) fn open_data_key(
        keys: &Keys,
        account: &AccountId,
        sealed: &str,
    ) -> Result<[u8; 32], PortError> {
        let legacy = Self::legacy_key_ad(account);
        let bytes = keys
            .sealer
            .open(
                Binding::new(DATA_KEY, &account_owner(account)),
                Legacy::Opens(&legacy),
                sealed,
            )
            .map_err(|e| PortError::internal("data key of an account (wrong server key?)", e))?;
        bytes
            .try_into()
            .map_err(|_| PortError::Internal("data key of an account: wrong length".into()))
    }

    pub(crate) fn seal_data_key(keys: &Keys, account: &AccountId, key: &[u8; 32]) -> String {
        keys.sealer
            .seal(Binding::new(DATA_KEY, &account_owner(account)), key)
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
        let bytes = Self::open_data_key(&self.keys, account, &sealed)?;
        Ok(Some((key_id, Sealer::new(&bytes))))
    }

    async fn data_key_or_create(&self, account: &AccountId) -> Result<(String, Sealer), PortError> {
        if let Some(found) = self.data_key(account).await? {
            return Ok(found);
        }
        let (key, key_id) = new_data_key();
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
                .bind(Self::seal_data_key(&self.keys, account, &key))
                .bind(millis(self.db.now()))
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
    async fn seal_secret(
        &self,
        account: &AccountId,
        key: &SessionKey,
    ) -> Result<SealedSecret, PortError> {
        Ok(SealedSecret::from_sealed_text(self.keys.sealer.seal(
            Binding::new(SESSION_KEY, &account_owner(account)),
            key.expose_text().as_bytes(),
        )))
    }

    async fn unseal_secret(
        &self,
        account: &AccountId,
        sealed: &SealedSecret,
    ) -> Result<SessionKey, PortError> {
        let bytes = self
            .keys
            .sealer
            .open(
                Binding::new(SESSION_KEY, &account_owner(account)),
                Legacy::Opens(SESSION_KEY),
                sealed.as_sealed_text(),
            )
            .map_err(|e| PortError::internal("sealed session key", e))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| PortError::Internal("sealed session key: not UTF-8".into()))?;
        SessionKey::parse(&text)
            .map_err(|_| PortError::Internal("sealed session key: invalid".into()))
    }

    async fn seal_personal(
        &self,
        account: &AccountId,
        field: PersonalField,
        plaintext: &str,
    ) -> Result<SealedDatum, PortError> {
        let (key_id, sealer) = self.data_key_or_create(account).await?;
        Ok(seal_datum(&key_id, &sealer, account, field, plaintext))
    }

    async fn unseal_personal(
        &self,
        account: &AccountId,
        field: PersonalField,
        sealed: &SealedDatum,
    ) -> Result<Option<String>, PortError> {
        let text = sealed.as_sealed_text();
        let malformed = || PortError::Internal("sealed personal datum: malformed".into());
        let (version, rest) = text.split_once('.').ok_or_else(malformed)?;
        if version != V1 && version != V2 {
            return Err(malformed());
        }
        let (key_id, body) = rest.split_once('.').ok_or_else(malformed)?;
        let Some((current, sealer)) = self.data_key(account).await? else {
            return Ok(None); // erased
        };
        if current != key_id {
            return Ok(None); // sealed under a key erased since
        }
        // v1 data (phone, nickname, avatar) were bound to their account only; unionids
        // and client IPs were never sealed before v2.
        let legacy = match field {
            PersonalField::UnionId | PersonalField::ClientIp => Legacy::Refused,
            _ => Legacy::Opens(account.as_str()),
        };
        let bytes = sealer
            .open(
                Binding::new(&personal_purpose(field), &account_owner(account)),
                legacy,
                &format!("{version}.{body}"),
            )
            .map_err(|e| PortError::internal("sealed personal datum", e))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PortError::Internal("sealed personal datum: not UTF-8".into()))
    }

    async fn seal_unionid(
        &self,
        account: &AccountId,
        unionid: &UnionId,
    ) -> Result<SealedUnionId, PortError> {
        Ok(SealedUnionId {
            hash: unionid_hash(&self.keys, unionid),
            sealed: Some(
                self.seal_personal(account, PersonalField::UnionId, unionid.as_str())
                    .await?,
            ),
        })
    }

    async fn forget(&self, account: &AccountId) -> Result<(), PortError> {
        {
            let _turn = self.db.write_turn().await;
            on_pool!(&self.db.pool, p => {
                sqlx::query("DELETE FROM data_keys WHERE account_id = $1")
                    .bind(account.as_str())
                    .execute(p)
                    .await
                    .map_err(port_error)?;
            });
        }
        self.db.scrub_deleted().await;
        Ok(())
    }
}
