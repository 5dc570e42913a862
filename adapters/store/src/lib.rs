//! Durable storage for miniauth on SQLite (embedded default) or PostgreSQL (several
//! instances sharing one database), with one behaviour on both:
//!
//! * [`AccountEventStore`]: the application's `AccountRepository` (a cqrs-es
//!   `EventStore<SocialAccount>` underneath) with optimistic concurrency, a state row
//!   per account written with its events, a global commit order;
//! * [`ReadModels`]: accounts by (appid, openid), by unionid, a user's bindings —
//!   caught up from the log at start-up and before each answer;
//! * the ports [`SqlUserDirectory`], [`SqlBindingRegistry`], [`SqlRefreshTokens`],
//!   [`SqlVault`], [`SqlUsageCounters`], [`SqlAttemptLimiter`];
//! * shared key material, sealed with the server key.
//!
//! Open it with [`Store::connect`]; see `docs/operations.md`.

#![warn(missing_docs)]

mod audit;
mod config;
mod counters;
mod crypto;
mod db;
mod decode;
mod event_store;
mod import;
mod limiter;
mod log;
mod purge;
mod read_models;
mod readiness;
mod refresh;
mod registry;
mod reseal;
mod upcast;
mod users;
mod vault;
mod webhooks;

use std::sync::Arc;

use chrono::Duration;
use miniauth_application::ports::{Binding, Clock, ThrottleLimits};
use miniauth_application::AppCatalog;
use miniauth_domain::{AppId, OpenId, TenantId, UnionId, UserId};
use sqlx::Row;

pub use audit::Rebuild;
pub use config::{
    InvalidServerKey, PasswordConcurrency, PasswordCost, ServerKey, StoreConfig, StoreError,
    DEFAULT_URL,
};
pub use counters::SqlUsageCounters;
pub use db::{Engine, UnknownEngine};
pub use decode::UndecodableEvent;
pub use event_store::{AccountContext, AccountEventStore};
pub use import::SqlImportTarget;
pub use limiter::SqlAttemptLimiter;
pub use miniauth_application::audit::{BindingAt, HistoryEntry};
pub use miniauth_application::ports::StoredEvent;
pub use miniauth_domain::audit::{
    AuditCheckpoint, Finding, FindingKind, LoggedEvent, VerifyReport,
};
pub use purge::REFRESH_PURGE_BATCH;
pub use read_models::{AccountView, CatchUp, ReadModels};
pub use refresh::{RefreshPurge, SqlRefreshTokens};
pub use registry::SqlBindingRegistry;
pub use reseal::Resealed;
pub use upcast::{default_upcasters, SessionObtainedV0};
pub use users::SqlUserDirectory;
pub use vault::SqlVault;
pub use webhooks::SqlWebhookLedger;

use crate::crypto::Keys;
use crate::db::{millis, on_pool, Db};
use crate::decode::EventDecoder;
use crate::refresh::RefreshLifetimes;

/// What an orphan sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Users registered from a phone and never bound.
    pub users_removed: u64,
    /// Registry claims the log never confirmed.
    pub claims_released: u64,
}

/// The store: one pool, every table, every port. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Db,
    keys: Keys,
    events: AccountEventStore,
    read_models: ReadModels,
    users: SqlUserDirectory,
    registry: SqlBindingRegistry,
    refresh: SqlRefreshTokens,
    vault: SqlVault,
    counters: SqlUsageCounters,
}

impl Store {
    /// Connects (creating the SQLite file and its directory when missing), applies
    /// the migrations, and catches the read models up with the log. What the store
    /// dates (claims, users, keys, state rows, sweeps) it dates by `clock`: the
    /// application's, so that tests can move it.
    pub async fn connect(config: &StoreConfig, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let db = Db::connect(config, clock).await?;
        let server_key = db::server_key(config, db.engine())?;
        let keys = Keys::new(&server_key);
        let decoder = EventDecoder::new(&keys);
        let read_models = ReadModels::new(db.clone(), keys.clone(), decoder.clone());
        let refresh = SqlRefreshTokens::new(
            db.clone(),
            RefreshLifetimes {
                ttl: config.refresh_ttl,
                max_lifetime: config.refresh_max_lifetime,
            },
        );
        let store = Self {
            events: AccountEventStore::new(
                db.clone(),
                decoder,
                read_models.clone(),
                refresh.clone(),
            ),
            users: SqlUserDirectory::new(
                db.clone(),
                keys.clone(),
                config.password_cost,
                config.password_concurrency,
            )
            .map_err(StoreError::InvalidConfig)?,
            registry: SqlBindingRegistry::new(db.clone(), read_models.clone()),
            refresh,
            vault: SqlVault::new(db.clone(), keys.clone()),
            counters: SqlUsageCounters::new(db.clone()),
            read_models,
            keys,
            db,
        };
        store.migrate().await?;
        // An event the read models cannot decode (logged) does not keep the store
        // closed: the tools that read the log as stored still work, and every question
        // to the read models fails until an upcaster reads it.
        store.read_models.follow().await?;
        Ok(store)
    }

    /// Applies the embedded migrations of the engine, then re-seals what earlier
    /// releases sealed in the v1 format (idempotent; see [`Store::reseal`]).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.db.migrate().await?;
        self.reseal().await?;
        Ok(())
    }

    /// Re-seals every v1 value outside the event log (users' sealed columns, data
    /// keys, key material) as v2, bound to its owner. Runs with every
    /// [`migrate`](Self::migrate); safe while other instances run.
    pub async fn reseal(&self) -> Result<Resealed, StoreError> {
        reseal::reseal_legacy(&self.db, &self.keys).await
    }

    /// Whether SQLite overwrites deleted content (`PRAGMA secure_delete`, always on);
    /// `None` on PostgreSQL.
    pub async fn secure_delete(&self) -> Result<Option<bool>, StoreError> {
        Ok(self.db.secure_delete().await?)
    }

    /// Checks that the database answers (for readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(&self.db.pool, p => {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }

    /// The engine in use.
    pub fn engine(&self) -> Engine {
        self.db.engine()
    }

    /// The event store of `SocialAccount`s.
    pub fn event_store(&self) -> AccountEventStore {
        self.events.clone()
    }

    /// The user directory port.
    pub fn users(&self) -> SqlUserDirectory {
        self.users.clone()
    }

    /// The import's target (`miniauth import gitegg`): batched writes of imported
    /// accounts, bindings and users.
    pub fn import_target(&self) -> SqlImportTarget {
        SqlImportTarget::new(self.db.clone(), self.keys.clone(), self.read_models.clone())
    }

    /// The binding registry port.
    pub fn registry(&self) -> SqlBindingRegistry {
        self.registry.clone()
    }

    /// The refresh-token port.
    pub fn refresh_tokens(&self) -> SqlRefreshTokens {
        self.refresh.clone()
    }

    /// The attempt limiter port, counting in the database so that every instance
    /// shares the counts.
    pub fn attempt_limiter(&self, limits: ThrottleLimits) -> SqlAttemptLimiter {
        SqlAttemptLimiter::new(self.db.clone(), self.keys.clone(), limits)
    }

    /// Forgets the throttles' windows that ended by `now` (see [`SqlAttemptLimiter`]);
    /// answers how many went.
    pub async fn purge_attempt_counters(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        Ok(limiter::purge(&self.db, now).await?)
    }

    /// The personal-data vault port.
    pub fn vault(&self) -> SqlVault {
        self.vault.clone()
    }

    /// The webhook cursors port (deliveries' positions, failures and leases).
    pub fn webhook_ledger(&self) -> SqlWebhookLedger {
        SqlWebhookLedger::new(self.db.clone())
    }

    /// The usage counters port (single use, few tries).
    pub fn usage_counters(&self) -> SqlUsageCounters {
        self.counters.clone()
    }

    /// The read models.
    pub fn read_models(&self) -> ReadModels {
        self.read_models.clone()
    }

    /// Projects every event the read models have not seen yet.
    pub async fn catch_up(&self) -> Result<CatchUp, StoreError> {
        Ok(self.read_models.catch_up().await?)
    }

    /// The account of (appid, openid), from the read model (caught up first).
    pub async fn account(
        &self,
        appid: &AppId,
        openid: &OpenId,
    ) -> Result<Option<AccountView>, StoreError> {
        Ok(self.read_models.account(appid, openid).await?)
    }

    /// The accounts with `unionid` in the apps of `tenant`.
    pub async fn accounts_by_unionid(
        &self,
        tenant: &TenantId,
        unionid: &UnionId,
        apps: &AppCatalog,
    ) -> Result<Vec<AccountView>, StoreError> {
        Ok(self
            .read_models
            .accounts_by_unionid(tenant, unionid, apps)
            .await?)
    }

    /// A user's bindings as the event log says (the registry port answers from the
    /// uniqueness table instead).
    pub async fn bindings_of(&self, user: UserId) -> Result<Vec<Binding>, StoreError> {
        Ok(self.read_models.bindings_of(user).await?)
    }

    /// Events after `position` in commit order, at most `limit` (exports, audits).
    pub async fn events_after(
        &self,
        position: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.events
            .events_after(position, limit)
            .await
            .map_err(|e| StoreError::EventLog(e.to_string()))
    }

    /// The key material called `name`, created by `generate` if no instance created it
    /// before; every instance gets the same bytes. Stored sealed by the server key.
    pub async fn key_material(
        &self,
        name: &str,
        generate: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        if let Some(sealed) = self.sealed_key_material(name).await? {
            return self.open_key_material(name, &sealed);
        }
        let sealed = self.keys.sealer.seal(
            crypto::Binding::new(reseal::KEY_MATERIAL, name),
            &generate(),
        );
        {
            let _turn = self.db.write_turn().await;
            on_pool!(&self.db.pool, p => {
                sqlx::query(
                    "INSERT INTO key_material (name, sealed, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(&sealed)
                .bind(millis(self.db.now()))
                .execute(p)
                .await?;
            });
        }
        let winner = self
            .sealed_key_material(name)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("key material {name} vanished")))?;
        self.open_key_material(name, &winner)
    }

    async fn sealed_key_material(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(&self.db.pool, p => {
            sqlx::query("SELECT sealed FROM key_material WHERE name = $1")
                .bind(name)
                .fetch_optional(p)
                .await?
                .map(|r| r.try_get::<String, _>("sealed"))
                .transpose()?
        }))
    }

    fn open_key_material(&self, name: &str, sealed: &str) -> Result<Vec<u8>, StoreError> {
        reseal::open_key_material(&self.keys, name, sealed).map_err(|e| {
            StoreError::Corrupt(format!(
                "key material {name}: {e} (is this the server key it was sealed with?)"
            ))
        })
    }

    /// Removes what a crash in the middle of a binding can leave behind, once older
    /// than `older_than`: registry claims the log never confirmed, and users
    /// registered from a phone that never got bound (and have no password).
    pub async fn sweep_orphans(&self, older_than: Duration) -> Result<Sweep, StoreError> {
        // Every event committed before now must be projected: a claim whose binding
        // is committed but not yet readable (a transaction in flight holds the log's
        // horizon back) is no orphan.
        if !self.read_models.ensure_current().await? {
            return Err(StoreError::EventLog(
                "a transaction in flight holds the event log's horizon back; the sweep waits for the next run".into(),
            ));
        }
        let cutoff = millis(self.db.now() - older_than);
        let _turn = self.db.write_turn().await;
        let (claims, users) = on_pool!(&self.db.pool, p => {
            let claims = sqlx::query(
                "DELETE FROM bindings WHERE claimed_at < $1 AND NOT EXISTS (\
                 SELECT 1 FROM account_view WHERE account_view.appid = bindings.appid \
                 AND account_view.openid = bindings.openid \
                 AND account_view.bound_user = bindings.user_id)",
            )
            .bind(cutoff)
            .execute(p)
            .await?
            .rows_affected();
            let users = sqlx::query(
                "DELETE FROM users WHERE origin = $1 AND password_hash IS NULL AND created_at < $2 \
                 AND NOT EXISTS (SELECT 1 FROM bindings WHERE bindings.user_id = users.id) \
                 AND NOT EXISTS (SELECT 1 FROM account_view WHERE account_view.bound_user = users.id)",
            )
            .bind(users::ORIGIN_PHONE)
            .bind(cutoff)
            .execute(p)
            .await?
            .rows_affected();
            (claims, users)
        });
        if claims + users > 0 {
            tracing::info!(claims, users, "swept orphans left by interrupted bindings");
        }
        Ok(Sweep {
            users_removed: users,
            claims_released: claims,
        })
    }

    /// Deletes at most `limit` refresh-token rows that expired or were revoked before
    /// `before`, and as many families left without tokens (see `docs/operations.md`).
    pub async fn purge_refresh_tokens(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<RefreshPurge, StoreError> {
        Ok(self.refresh.purge(before, limit).await?)
    }

    /// Closes the pool (waits for connections to return).
    pub async fn close(&self) {
        on_pool!(&self.db.pool, p => p.close().await)
    }
}
