//! `AttemptLimiter` on the `attempt_counters` table: the counters of password
//! failures and logins, shared by every instance on the same database.
//!
//! Used on both engines, so that one behaviour is proven on both: on PostgreSQL every
//! instance sees the same counts; on SQLite the counts survive a restart. A hit is one
//! upsert, atomic on both engines.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use miniauth_application::ports::{
    AttemptLimiter, PortError, ThrottleError, ThrottleKey, ThrottleLimits,
};
use sqlx::Row;

use crate::crypto::Keys;
use crate::db::{millis, on_pool, port_error, Db, Engine};

/// The upsert of one hit. A window that has ended restarts at this hit; else the hit is
/// added.
///
/// On PostgreSQL its commit does not wait for the WAL flush (`synchronous_commit` off
/// for this statement's transaction only): every login from one network updates the
/// same row, and a durable commit would hold the row lock across a flush, queueing those
/// logins behind each other. What it risks is counts: a database crash forgets the hits
/// of at most the last few hundred milliseconds (three `wal_writer_delay`s) — a
/// throttle briefly more lenient after a crash, never a lost event, ticket or token.
fn hit_sql(engine: Engine) -> String {
    // (`WHERE true` keeps PostgreSQL from reading `ON CONFLICT` as a join's `ON`.)
    let values = match engine {
        Engine::Postgres => {
            "SELECT $1, $2, $3, 1 \
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit \
             WHERE true"
        }
        Engine::Sqlite => "VALUES ($1, $2, $3, 1)",
    };
    format!(
        "INSERT INTO attempt_counters (key_hash, window_started_at, window_ends_at, hits) \
         {values} \
         ON CONFLICT (key_hash) DO UPDATE SET \
           hits = CASE WHEN attempt_counters.window_ends_at <= excluded.window_started_at \
                  THEN 1 ELSE attempt_counters.hits + 1 END, \
           window_started_at = CASE WHEN attempt_counters.window_ends_at <= excluded.window_started_at \
                  THEN excluded.window_started_at ELSE attempt_counters.window_started_at END, \
           window_ends_at = CASE WHEN attempt_counters.window_ends_at <= excluded.window_started_at \
                  THEN excluded.window_ends_at ELSE attempt_counters.window_ends_at END \
         RETURNING window_ends_at, hits"
    )
}

/// `AttemptLimiter` on the `attempt_counters` table. Cheap to clone.
#[derive(Clone)]
pub struct SqlAttemptLimiter {
    db: Db,
    keys: Keys,
    limits: ThrottleLimits,
    /// [`hit_sql`] for the engine, built once: every login runs it.
    hit_statement: std::sync::Arc<str>,
}

impl std::fmt::Debug for SqlAttemptLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlAttemptLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A window as stored: when it ends and how many hits it holds.
struct Counted {
    ends_at: i64,
    hits: i64,
}

impl SqlAttemptLimiter {
    pub(crate) fn new(db: Db, keys: Keys, limits: ThrottleLimits) -> Self {
        let hit_statement = hit_sql(db.engine()).into();
        Self {
            db,
            keys,
            limits,
            hit_statement,
        }
    }

    /// The stored key: a keyed hash, since the key names an account and an address.
    fn key_hash(&self, key: &ThrottleKey) -> String {
        self.keys.lookup_hash("throttle", &key.canonical())
    }

    fn max(&self, key: &ThrottleKey) -> i64 {
        i64::from(self.limits.of(key.kind()).max)
    }

    /// Counts one hit of `key` at `now` and answers its window.
    async fn count(&self, key: &ThrottleKey, now: DateTime<Utc>) -> Result<Counted, PortError> {
        let hash = self.key_hash(key);
        let now_ms = millis(now);
        let ends_ms = millis(now + self.limits.of(key.kind()).window);
        let _turn = self.db.write_turn().await;
        let counted = on_pool!(&self.db.pool, p => {
            let row = sqlx::query(&self.hit_statement)
            .bind(&hash)
            .bind(now_ms)
            .bind(ends_ms)
            .fetch_one(p)
            .await
            .map_err(port_error)?;
            Counted {
                ends_at: row.try_get("window_ends_at").map_err(port_error)?,
                hits: row.try_get("hits").map_err(port_error)?,
            }
        });
        Ok(counted)
    }
}

/// Forgets windows that ended by `now`; answers how many went. `serve` runs it with
/// its other purges, off the request path.
pub(crate) async fn purge(db: &Db, now: DateTime<Utc>) -> Result<u64, PortError> {
    let _turn = db.write_turn().await;
    let purged = on_pool!(&db.pool, p => {
        sqlx::query("DELETE FROM attempt_counters WHERE window_ends_at <= $1")
            .bind(millis(now))
            .execute(p)
            .await
            .map_err(port_error)?
            .rows_affected()
    });
    Ok(purged)
}

/// Seconds until `ends_at`, rounded up so that a client waiting exactly this long is
/// let through; at least 1.
fn retry_after(ends_at: i64, now: DateTime<Utc>) -> u64 {
    let remaining = ends_at.saturating_sub(millis(now));
    u64::try_from(remaining).unwrap_or(0).div_ceil(1000).max(1)
}

#[async_trait]
impl AttemptLimiter for SqlAttemptLimiter {
    async fn check(&self, key: &ThrottleKey, now: DateTime<Utc>) -> Result<(), ThrottleError> {
        let hash = self.key_hash(key);
        let found = on_pool!(&self.db.pool, p => {
            sqlx::query(
                "SELECT window_ends_at, hits FROM attempt_counters \
                 WHERE key_hash = $1 AND window_ends_at > $2",
            )
            .bind(&hash)
            .bind(millis(now))
            .fetch_optional(p)
            .await
            .map_err(port_error)?
            .map(|row| -> Result<Counted, PortError> {
                Ok(Counted {
                    ends_at: row.try_get("window_ends_at").map_err(port_error)?,
                    hits: row.try_get("hits").map_err(port_error)?,
                })
            })
            .transpose()?
        });
        match found {
            Some(counted) if counted.hits >= self.max(key) => Err(ThrottleError::Exceeded {
                retry_after_secs: retry_after(counted.ends_at, now),
            }),
            _ => Ok(()),
        }
    }

    async fn record_failure(&self, key: &ThrottleKey, now: DateTime<Utc>) -> Result<(), PortError> {
        self.count(key, now).await.map(|_| ())
    }

    async fn hit(&self, key: &ThrottleKey, now: DateTime<Utc>) -> Result<(), ThrottleError> {
        let counted = self.count(key, now).await?;
        if counted.hits > self.max(key) {
            return Err(ThrottleError::Exceeded {
                retry_after_secs: retry_after(counted.ends_at, now),
            });
        }
        Ok(())
    }

    async fn reset(&self, key: &ThrottleKey) -> Result<(), PortError> {
        let hash = self.key_hash(key);
        // Like a hit, a reset does not wait for the flush on PostgreSQL (a crash may
        // bring the forgiven tries back: stricter, never laxer).
        let statement = match self.db.engine() {
            Engine::Postgres => {
                "DELETE FROM attempt_counters WHERE key_hash = $1 \
                 AND set_config('synchronous_commit', 'off', true) IS NOT NULL"
            }
            Engine::Sqlite => "DELETE FROM attempt_counters WHERE key_hash = $1",
        };
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            sqlx::query(statement)
                .bind(&hash)
                .execute(p)
                .await
                .map_err(port_error)?;
        });
        Ok(())
    }
}
