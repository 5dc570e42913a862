//! The migration of sealed values from the v1 format (associated data naming the
//! purpose at most) to v2 (purpose and owner): every row that can be re-sealed is, each
//! time the store starts. The event log is never rewritten: its v1 session keys and
//! personal data keep opening with their legacy associated data.

use miniauth_domain::AccountId;
use sqlx::Row;

use crate::config::StoreError;
use crate::crypto::{is_v1, Binding, Keys, Legacy};
use crate::db::{on_pool, Db};
use crate::users::{open_column, seal_column, Column};
use crate::vault::SqlVault;

/// How many values a run re-sealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Sealed columns of `users` (mobile, nickname, avatar).
    pub user_columns: u64,
    /// Account data keys.
    pub data_keys: u64,
    /// Shared key material.
    pub key_material: u64,
}

impl Resealed {
    /// Whether nothing was left to re-seal.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The purpose of shared key material; its owner is the key's name.
pub(crate) const KEY_MATERIAL: &str = "key_material";

/// What v1 key material was sealed with.
pub(crate) fn legacy_key_material_ad(name: &str) -> String {
    format!("key_material:{name}")
}

/// Opens key material sealed as v2 (or v1, not yet re-sealed).
pub(crate) fn open_key_material(
    keys: &Keys,
    name: &str,
    sealed: &str,
) -> Result<Vec<u8>, crate::crypto::OpenError> {
    keys.sealer.open(
        Binding::new(KEY_MATERIAL, name),
        Legacy::Opens(&legacy_key_material_ad(name)),
        sealed,
    )
}

/// Re-seals every v1 value outside the event log as v2. Each update names the old
/// value, so a concurrent writer's newer value is never overwritten.
pub(crate) async fn reseal_legacy(db: &Db, keys: &Keys) -> Result<Resealed, StoreError> {
    let mut done = Resealed::default();
    let corrupt = |what: String| StoreError::Corrupt(format!("{what} (is this the server key?)"));

    for column in Column::ALL {
        let name = column.name();
        let rows: Vec<(i64, String)> = on_pool!(&db.pool, p => {
            sqlx::query(&format!("SELECT id, {name} AS sealed FROM users WHERE {name} LIKE 'v1.%'"))
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("id")?, r.try_get("sealed")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        for (id, sealed) in rows {
            let plain = open_column(keys, column, id, &sealed)
                .map_err(|e| corrupt(format!("users.{name} of user {id}: {e}")))?;
            let text = String::from_utf8(plain)
                .map_err(|_| corrupt(format!("users.{name} of user {id}: not UTF-8")))?;
            let resealed = seal_column(keys, column, id, &text);
            let _turn = db.write_turn().await;
            done.user_columns += on_pool!(&db.pool, p => {
                sqlx::query(&format!("UPDATE users SET {name} = $1 WHERE id = $2 AND {name} = $3"))
                    .bind(&resealed)
                    .bind(id)
                    .bind(&sealed)
                    .execute(p)
                    .await?
                    .rows_affected()
            });
        }
    }

    let rows: Vec<(String, String)> = on_pool!(&db.pool, p => {
        sqlx::query("SELECT account_id, sealed_key FROM data_keys WHERE sealed_key LIKE 'v1.%'")
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("account_id")?, r.try_get("sealed_key")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?
    });
    for (account_id, sealed) in rows {
        let account = AccountId::parse(&account_id)
            .map_err(|_| corrupt(format!("data_keys.account_id {account_id:?}")))?;
        let key = SqlVault::open_data_key(keys, &account, &sealed)
            .map_err(|e| corrupt(format!("data key of {account_id}: {e}")))?;
        let resealed = SqlVault::seal_data_key(keys, &account, &key);
        let _turn = db.write_turn().await;
        done.data_keys += on_pool!(&db.pool, p => {
            sqlx::query("UPDATE data_keys SET sealed_key = $1 WHERE account_id = $2 AND sealed_key = $3")
                .bind(&resealed)
                .bind(&account_id)
                .bind(&sealed)
                .execute(p)
                .await?
                .rows_affected()
        });
    }

    let rows: Vec<(String, String)> = on_pool!(&db.pool, p => {
        sqlx::query("SELECT name, sealed FROM key_material WHERE sealed LIKE 'v1.%'")
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("sealed")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?
    });
    for (name, sealed) in rows {
        debug_assert!(is_v1(&sealed));
        let bytes = open_key_material(keys, &name, &sealed)
            .map_err(|e| corrupt(format!("key material {name}: {e}")))?;
        let resealed = keys.sealer.seal(Binding::new(KEY_MATERIAL, &name), &bytes);
        let _turn = db.write_turn().await;
        done.key_material += on_pool!(&db.pool, p => {
            sqlx::query("UPDATE key_material SET sealed = $1 WHERE name = $2 AND sealed = $3")
                .bind(&resealed)
                .bind(&name)
                .bind(&sealed)
                .execute(p)
                .await?
                .rows_affected()
        });
    }

    if !done.is_empty() {
        tracing::info!(
            user_columns = done.user_columns,
            data_keys = done.data_keys,
            key_material = done.key_material,
            "re-sealed v1 values as v2 (bound to their owner)"
        );
    }
    Ok(done)
}
