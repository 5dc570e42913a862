//! Usage counters in the `usage_counters` table: one atomic upsert per count, so that
//! "one use" and "a few tries" hold however many instances and requests race.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use miniauth_application::ports::{PortError, UsageCounters, UsageKey};
use sqlx::Row;

use crate::db::{millis, on_pool, port_error, Db};

/// `UsageCounters` on the `usage_counters` table. Cheap to clone.
#[derive(Clone)]
pub struct SqlUsageCounters {
    db: Db,
}

impl SqlUsageCounters {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl UsageCounters for SqlUsageCounters {
    async fn count(&self, key: &UsageKey, keep_until: DateTime<Utc>) -> Result<u32, PortError> {
        let _turn = self.db.write_turn().await;
        let uses: i64 = on_pool!(&self.db.pool, p => {
            sqlx::query(
                "INSERT INTO usage_counters (counter_key, uses, keep_until) VALUES ($1, 1, $2) \
                 ON CONFLICT (counter_key) DO UPDATE SET uses = usage_counters.uses + 1, \
                 keep_until = CASE WHEN usage_counters.keep_until > excluded.keep_until \
                 THEN usage_counters.keep_until ELSE excluded.keep_until END \
                 RETURNING uses",
            )
            .bind(key.storage_key())
            .bind(millis(keep_until))
            .fetch_one(p)
            .await
            .and_then(|row| row.try_get::<i64, _>("uses"))
            .map_err(port_error)?
        });
        Ok(u32::try_from(uses).unwrap_or(u32::MAX))
    }

    async fn uncount(&self, key: &UsageKey) -> Result<(), PortError> {
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            sqlx::query(
                "UPDATE usage_counters SET uses = uses - 1 WHERE counter_key = $1 AND uses > 0",
            )
            .bind(key.storage_key())
            .execute(p)
            .await
            .map_err(port_error)?;
        });
        Ok(())
    }

    async fn uses(&self, key: &UsageKey) -> Result<u32, PortError> {
        let uses: Option<i64> = on_pool!(&self.db.pool, p => {
            sqlx::query("SELECT uses FROM usage_counters WHERE counter_key = $1")
                .bind(key.storage_key())
                .fetch_optional(p)
                .await
                .and_then(|row| row.map(|row| row.try_get::<i64, _>("uses")).transpose())
                .map_err(port_error)?
        });
        Ok(u32::try_from(uses.unwrap_or(0)).unwrap_or(u32::MAX))
    }

    async fn purge(&self, now: DateTime<Utc>) -> Result<u64, PortError> {
        let _turn = self.db.write_turn().await;
        let purged = on_pool!(&self.db.pool, p => {
            sqlx::query("DELETE FROM usage_counters WHERE keep_until < $1")
                .bind(millis(now))
                .execute(p)
                .await
                .map_err(port_error)?
                .rows_affected()
        });
        Ok(purged)
    }
}
