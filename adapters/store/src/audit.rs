//! What auditors ask of the log, as facts: an account's events, the bindings that held
//! at an instant (replayed from the events, never read from today's tables), an
//! export, and the proof that nobody edited, deleted, inserted or reordered an event.
//! The store is the application's [`AuditLog`]; the application masks personal data
//! and answers the questions.
//!
//! Tamper evidence has two layers (see docs/audit.md), checked by
//! [`miniauth_domain::audit::tamper`] over the rows read here:
//!
//! * per stream: each event's metadata `hash` is the [`ChainLink`] hash over the
//!   previous event's hash and every field of the event; the state row keeps the last
//!   hash and sequence, so a deleted tail shows;
//! * over the whole log: checkpoints, each the [`cumulative_hash`] of every event's
//!   hash in position order up to a position. They catch a stream rewritten
//!   consistently, or an event inserted with a valid chain, before the checkpoint.
//!
//! [`ChainLink`]: miniauth_domain::audit::ChainLink

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use miniauth_application::audit::{self, BindingAt, HistoryEntry};
use miniauth_application::ports::{AuditLog, PortError, StoredEvent};
use miniauth_domain::audit::{
    binding_as_of, cumulative_hash, AuditCheckpoint, Evidence, LogCheck, LoggedEvent, StreamState,
    VerifyReport,
};
use miniauth_domain::{AccountId, AppId, OpenId, SocialAccount, UserId};
use sqlx::Row;

use crate::config::StoreError;
use crate::db::{millis, on_pool};
use crate::event_store::{read_row, RawEvent};
use crate::log::{committed_end, readable_below, select_after, settle};
use crate::Store;

/// Rows read per query while walking the whole log.
const PAGE: i64 = 1000;

/// How long [`Store::verify`] tries again for the safe horizon to pass the newest
/// checkpoint.
const VERIFY_WAIT: Duration = Duration::from_secs(3);

/// What a rebuild of the read models did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rebuild {
    /// Events replayed.
    pub events: u64,
    /// How long it took.
    pub elapsed: std::time::Duration,
}

impl Rebuild {
    /// Events replayed per second.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }
}

fn log_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::EventLog(error.to_string())
}

impl From<RawEvent> for LoggedEvent {
    fn from(raw: RawEvent) -> Self {
        Self {
            position: raw.position,
            aggregate_id: raw.aggregate_id,
            sequence: raw.sequence,
            event_type: raw.event_type,
            event_version: raw.event_version,
            payload: raw.payload,
            metadata: raw.metadata,
        }
    }
}

const EVENT_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, payload, metadata";

impl Store {
    /// Checks every event against its stream's chain and state row, and the whole log
    /// against the checkpoints; records a new checkpoint when all is well. Reads one
    /// consistent snapshot of the database.
    ///
    /// On PostgreSQL it reads the log by position only below the safe horizon
    /// ([`crate::log`]). While a transaction in flight holds the horizon below the
    /// newest checkpoint, or below an event committed before the call, it tries again
    /// (for up to [`VERIFY_WAIT`], with a short backoff). If the horizon has still not
    /// passed the newest checkpoint then, the report lists the checkpoints it could not
    /// compare as [`not_yet_verifiable`](VerifyReport::not_yet_verifiable) — never as a
    /// pass or as a mismatch.
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.verify_at(self.db.now()).await
    }

    /// [`verify`](Self::verify), dating a new checkpoint `now`.
    pub async fn verify_at(&self, now: DateTime<Utc>) -> Result<VerifyReport, StoreError> {
        let checkpoints = self.checkpoints().await?;
        let newest = checkpoints.last().map(|cp| cp.position);
        let target = committed_end(&self.db.pool).await?.max(newest);
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        let (evidence, mut report) = loop {
            let mut evidence = Evidence::new(&checkpoints);
            // The last try reads what is final, however far that is.
            let must_reach = target.filter(|_| started.elapsed() < VERIFY_WAIT);
            if let Some((mut report, below)) =
                self.read_and_check(&mut evidence, must_reach).await?
            {
                evidence.finish_below(&mut report, below);
                break (evidence, report);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        };
        if !report.is_complete() {
            tracing::warn!(
                checkpoints = ?report.not_yet_verifiable,
                "a transaction in flight holds the event log's horizon below the newest \
                 checkpoint; it is not yet verifiable"
            );
        }
        if report.is_clean() {
            if let Some(checkpoint) = evidence.new_checkpoint(&checkpoints, now) {
                self.record_checkpoint(&checkpoint).await?;
                report.checkpoint = Some(checkpoint);
            }
        } else {
            tracing::warn!(
                findings = report.findings.len(),
                "the event log shows tampering"
            );
        }
        Ok(report)
    }

    /// Reads the log in one snapshot, twice: by stream, for the chain checks, and in
    /// log order (below the safe horizon), folded into `evidence`. Answers the report
    /// and the position below which the snapshot read every committed event — or None,
    /// having read nothing, when that is not past `must_reach`.
    async fn read_and_check(
        &self,
        evidence: &mut Evidence<'_>,
        must_reach: Option<i64>,
    ) -> Result<Option<(VerifyReport, i64)>, StoreError> {
        let postgres = self.db.is_postgres();
        let by_position = select_after(self.db.engine(), EVENT_COLUMNS);
        let readable = readable_below(self.db.engine());
        Ok(on_pool!(&self.db.pool, p => {
            let mut tx = p.begin().await?;
            if postgres {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .execute(&mut *tx)
                    .await?;
            }
            // The first read takes the snapshot the others use.
            let below: i64 = match &readable {
                Some(statement) => sqlx::query(statement)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("below")?,
                None => i64::MAX,
            };
            if must_reach.is_some_and(|position| position >= below) {
                tx.rollback().await?;
                return Ok(None);
            }
            let mut states: HashMap<String, StreamState> = HashMap::new();
            for row in sqlx::query(
                "SELECT aggregate_id, last_sequence, last_hash FROM snapshots WHERE aggregate_type = $1",
            )
            .bind(SocialAccount::TYPE)
            .fetch_all(&mut *tx)
            .await?
            {
                states.insert(
                    row.try_get("aggregate_id")?,
                    StreamState {
                        last_sequence: row.try_get("last_sequence")?,
                        last_hash: row.try_get("last_hash")?,
                    },
                );
            }
            // Streams, in (aggregate_id, sequence) order, one stream at a time.
            let mut check = LogCheck::new(states);
            let (mut after_id, mut after_seq) = (String::new(), 0_i64);
            loop {
                let rows = sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 \
                     AND (aggregate_id > $2 OR (aggregate_id = $3 AND sequence > $4)) \
                     ORDER BY aggregate_id, sequence LIMIT $5"
                ))
                .bind(SocialAccount::TYPE)
                .bind(&after_id)
                .bind(&after_id)
                .bind(after_seq)
                .bind(PAGE)
                .fetch_all(&mut *tx)
                .await?;
                for row in &rows {
                    let raw = read_row(row)?;
                    after_id.clone_from(&raw.aggregate_id);
                    after_seq = raw.sequence;
                    check.push(raw.into());
                }
                if rows.len() < PAGE as usize {
                    break;
                }
            }
            // The whole log, in log order up to the safe horizon (`crate::log`), against
            // the checkpoints: a new checkpoint covers only final positions.
            let mut after = 0_i64;
            loop {
                let rows = sqlx::query(&by_position)
                .bind(SocialAccount::TYPE)
                .bind(after)
                .bind(PAGE)
                .fetch_all(&mut *tx)
                .await?;
                for row in &rows {
                    let event = LoggedEvent::from(read_row(row)?);
                    after = event.position;
                    evidence.fold(&event);
                }
                if rows.len() < PAGE as usize {
                    break;
                }
            }
            tx.commit().await?;
            Some((check.finish(), below))
        }))
    }

    /// Records a checkpoint over the events committed since the last one (continuing
    /// its cumulative hash without re-reading older events; [`verify`](Self::verify)
    /// checks those). None when nothing new was committed.
    pub async fn checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        self.checkpoint_at(self.db.now()).await
    }

    /// [`checkpoint`](Self::checkpoint), dated `now`.
    pub async fn checkpoint_at(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<AuditCheckpoint>, StoreError> {
        let latest = self.checkpoints().await?.pop();
        let (mut position, mut cumulative, mut events) = latest
            .map(|cp| (cp.position, cp.cumulative, cp.events))
            .unwrap_or_default();
        let start = position;
        loop {
            let rows = self.raw_events_after(position, PAGE).await?;
            let count = rows.len();
            for event in rows.into_iter().map(LoggedEvent::from) {
                cumulative = cumulative_hash(&cumulative, event.position, &event.evidence_hash());
                events += 1;
                position = event.position;
            }
            if count < PAGE as usize {
                break;
            }
        }
        if position == start {
            return Ok(None);
        }
        let checkpoint = AuditCheckpoint {
            position,
            cumulative,
            events,
            created_at: now,
        };
        self.record_checkpoint(&checkpoint).await?;
        Ok(Some(checkpoint))
    }

    /// Every checkpoint, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, StoreError> {
        Ok(on_pool!(&self.db.pool, p => {
            sqlx::query(
                "SELECT position, cumulative, events, created_at FROM audit_checkpoints ORDER BY position",
            )
            .fetch_all(p)
            .await?
            .iter()
            .map(|row| -> Result<AuditCheckpoint, sqlx::Error> {
                Ok(AuditCheckpoint {
                    position: row.try_get("position")?,
                    cumulative: row.try_get("cumulative")?,
                    events: row.try_get("events")?,
                    created_at: DateTime::from_timestamp_millis(row.try_get("created_at")?)
                        .unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?
        }))
    }

    async fn record_checkpoint(&self, checkpoint: &AuditCheckpoint) -> Result<(), StoreError> {
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            sqlx::query(
                "INSERT INTO audit_checkpoints (position, cumulative, events, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (position) DO NOTHING",
            )
            .bind(checkpoint.position)
            .bind(&checkpoint.cumulative)
            .bind(checkpoint.events)
            .bind(millis(checkpoint.created_at))
            .execute(p)
            .await?;
        });
        tracing::info!(
            position = checkpoint.position,
            "recorded an audit checkpoint"
        );
        Ok(())
    }

    async fn raw_events_after(
        &self,
        position: i64,
        limit: i64,
    ) -> Result<Vec<RawEvent>, StoreError> {
        settle(&self.db.pool).await?;
        let statement = select_after(self.db.engine(), EVENT_COLUMNS);
        Ok(on_pool!(&self.db.pool, p => {
            sqlx::query(&statement)
            .bind(SocialAccount::TYPE)
            .bind(position)
            .bind(limit)
            .fetch_all(p)
            .await?
            .iter()
            .map(read_row)
            .collect::<Result<Vec<_>, _>>()?
        }))
    }

    /// The log after `position` in log order, at most `limit` events, exactly as
    /// stored (exports: the chain can be recomputed from them). Only events below the
    /// safe horizon ([`crate::log`]): a position once exported is final, and passing the
    /// last one back as `position` never skips an event.
    pub async fn export(&self, position: i64, limit: u32) -> Result<Vec<LoggedEvent>, StoreError> {
        Ok(self
            .raw_events_after(position, i64::from(limit))
            .await?
            .into_iter()
            .map(LoggedEvent::from)
            .collect())
    }

    /// Every event of (appid, openid) in order, personal data masked or marked erased
    /// by the application's rules ([`audit::history`]). Empty when the account has no
    /// event.
    pub async fn history(
        &self,
        appid: &AppId,
        openid: &OpenId,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let account = AccountId::new(appid, openid);
        let events = self.account_events(&account).await?;
        Ok(audit::history(&self.vault(), &account, events).await)
    }

    /// Every event of `account` in sequence order, as recorded.
    async fn account_events(&self, account: &AccountId) -> Result<Vec<StoredEvent>, StoreError> {
        self.events
            .stored_events(account.as_str(), 0)
            .await
            .map_err(log_error)
    }

    /// The bindings of `user` as they stood at `instant`, replayed from the events up
    /// to it. The accounts considered are those the log ever bound to the user.
    pub async fn bindings_as_of(
        &self,
        user: UserId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAt>, StoreError> {
        let candidates = self.bound_to(user).await?;
        Ok(self
            .replay_bindings(candidates, instant)
            .await?
            .into_iter()
            .filter(|b| b.span.user_id == user)
            .collect())
    }

    /// The accounts with a `UserBound` event naming `user`.
    async fn bound_to(&self, user: UserId) -> Result<Vec<String>, StoreError> {
        if self.db.is_postgres() {
            self.bound_accounts(
                "payload->'UserBound'->>'user_id' = $2",
                Filter::Text(user.get().to_string()),
            )
            .await
        } else {
            self.bound_accounts(
                "json_extract(payload, '$.UserBound.user_id') = $2",
                Filter::Int(user.get()),
            )
            .await
        }
    }

    /// Every binding of `appid` as it stood at `instant`, replayed from the events.
    pub async fn app_bindings_as_of(
        &self,
        appid: &AppId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAt>, StoreError> {
        let prefix = format!("{appid}:");
        let candidates = self
            .bound_accounts(
                &format!("substr(aggregate_id, 1, {}) = $2", prefix.len()),
                Filter::Text(prefix),
            )
            .await?;
        self.replay_bindings(candidates, instant).await
    }

    /// The accounts with a `UserBound` event matching `filter`.
    async fn bound_accounts(&self, filter: &str, value: Filter) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = $1 \
             AND event_type = 'UserBound' AND {filter} ORDER BY aggregate_id"
        );
        Ok(on_pool!(&self.db.pool, p => {
            let query = sqlx::query(&sql).bind(SocialAccount::TYPE);
            let query = match value {
                Filter::Text(text) => query.bind(text),
                Filter::Int(number) => query.bind(number),
            };
            query
                .fetch_all(p)
                .await?
                .iter()
                .map(|row| row.try_get::<String, _>("aggregate_id"))
                .collect::<Result<Vec<_>, _>>()?
        }))
    }

    async fn replay_bindings(
        &self,
        accounts: Vec<String>,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAt>, StoreError> {
        let mut bindings = Vec::new();
        for id in accounts {
            let account = AccountId::parse(&id).map_err(|_| {
                StoreError::Corrupt(format!("an event names an invalid account {id}"))
            })?;
            let events = self.events.stored_events(&id, 0).await.map_err(log_error)?;
            if let Some(span) = binding_as_of(events.iter().map(|e| &e.event), instant) {
                bindings.push(BindingAt {
                    appid: account.appid(),
                    openid: account.openid(),
                    span,
                });
            }
        }
        Ok(bindings)
    }

    /// Rebuilds every read model from the log: empties them and replays every event,
    /// calling `progress(done, total)` after each batch.
    pub async fn rebuild_read_models(
        &self,
        progress: impl FnMut(u64, u64),
    ) -> Result<Rebuild, StoreError> {
        self.timed_rebuild(self.read_models.rebuild(progress)).await
    }

    /// [`rebuild_read_models`](Self::rebuild_read_models) with `events` events per
    /// transaction instead of the default, so that tests replay a small log in several
    /// batches.
    #[doc(hidden)]
    pub async fn rebuild_read_models_in_batches(
        &self,
        events: u32,
        progress: impl FnMut(u64, u64),
    ) -> Result<Rebuild, StoreError> {
        self.timed_rebuild(
            self.read_models
                .rebuild_in_batches(i64::from(events), progress),
        )
        .await
    }

    async fn timed_rebuild(
        &self,
        rebuild: impl std::future::Future<Output = Result<u64, PortError>>,
    ) -> Result<Rebuild, StoreError> {
        let started = Instant::now();
        let events = rebuild
            .await
            .map_err(|e| StoreError::EventLog(e.to_string()))?;
        Ok(Rebuild {
            events,
            elapsed: started.elapsed(),
        })
    }
}

enum Filter {
    Text(String),
    Int(i64),
}

/// Failures of the store as the [`AuditLog`] port reports them.
fn port(error: StoreError) -> PortError {
    match error {
        StoreError::Port(e) => e,
        other => PortError::Internal(other.to_string().into()),
    }
}

#[async_trait]
impl AuditLog for Store {
    async fn account_events(&self, account: &AccountId) -> Result<Vec<StoredEvent>, PortError> {
        Store::account_events(self, account).await.map_err(port)
    }

    async fn bindings_as_of(
        &self,
        user: UserId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAt>, PortError> {
        Store::bindings_as_of(self, user, instant)
            .await
            .map_err(port)
    }

    async fn app_bindings_as_of(
        &self,
        appid: &AppId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAt>, PortError> {
        Store::app_bindings_as_of(self, appid, instant)
            .await
            .map_err(port)
    }

    async fn export(&self, position: i64, limit: u32) -> Result<Vec<LoggedEvent>, PortError> {
        Store::export(self, position, limit).await.map_err(port)
    }

    async fn verify(&self, now: DateTime<Utc>) -> Result<VerifyReport, PortError> {
        self.verify_at(now).await.map_err(port)
    }

    async fn checkpoint(&self, now: DateTime<Utc>) -> Result<Option<AuditCheckpoint>, PortError> {
        self.checkpoint_at(now).await.map_err(port)
    }

    async fn latest_checkpoint(&self) -> Result<Option<AuditCheckpoint>, PortError> {
        Ok(self.checkpoints().await.map_err(port)?.pop())
    }

    async fn accounts_of_user(&self, user: UserId) -> Result<Vec<AccountId>, PortError> {
        self.bound_to(user)
            .await
            .map_err(port)?
            .iter()
            .map(|id| {
                AccountId::parse(id).map_err(|_| {
                    PortError::Internal(format!("an event names an invalid account {id}").into())
                })
            })
            .collect()
    }

    async fn projection_lag(&self) -> Result<i64, PortError> {
        self.read_models.lag().await
    }
}
