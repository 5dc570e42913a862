//! The event store of `SocialAccount`s, on sqlx, with a state row per aggregate.
//!
//! It is the application's [`AccountRepository`], and a cqrs-es `EventStore` underneath.
//!
//! Why not postgres-es / sqlite-es: their snapshot and aggregate modes (cqrs-es 0.5)
//! apply new events twice when they write the snapshot, and their plain mode replays an
//! account's whole history on every load. This store keeps their `events` table shape
//! (so their tooling can read the log) and adds:
//!
//! * a `snapshots` row per aggregate, written in the same transaction as the events:
//!   the context's pre-commit state with the new events applied exactly once;
//! * optimistic concurrency on (aggregate_type, aggregate_id, sequence): a concurrent
//!   append fails on the unique key and answers `AggregateConflict`;
//! * a global `position`, for catch-up and exports: commit order on SQLite (one
//!   writer), and on PostgreSQL an order derived from the writing transaction that
//!   readers follow below the safe horizon ([`crate::log`]) — appends do not take turns;
//! * tamper evidence: each event's metadata `hash` chains it to the previous event of
//!   its stream ([`ChainLink`]); the state row keeps the last hash, so a commit links
//!   without reading the log (one hash per event, no extra query; see `audit.rs`);
//! * one decoder for every read, the read models' included, with one list of upcasters
//!   for older event versions ([`crate::default_upcasters`]);
//! * a per-aggregate turn within the process, so that concurrent commands on one
//!   account queue instead of burning their bounded retries.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use miniauth_application::ports::{
    AccountRepository, Chain, CommitError, LoadedAccount, PortError, RefreshToken, SessionOwner,
    StoredEvent, TokenSubject,
};
use miniauth_domain::audit::{ChainLink, HASH_KEY};
use miniauth_domain::{
    current_version, AccountError, AccountId, SocialAccount, SocialAccountEvent,
};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::db::{is_unique_violation, millis, on_pool, Db, Pool};
use crate::decode::{read_encoded, EventDecoder, ENCODED_COLUMNS};
use crate::log::{position_of, select_after, settle, EVENTS_PER_TRANSACTION};
use crate::read_models::ReadModels;
use crate::refresh::{NewSession, SqlRefreshTokens};

/// How long a command waits for its turn on an account before it goes ahead
/// optimistically (the unique key still protects the log).
const TURN_WAIT: Duration = Duration::from_secs(5);

type StoreResult<T> = Result<T, AggregateError<AccountError>>;

/// A loaded account: its state, the last sequence it reflects, and this process's
/// turn on it (released when the context is committed or dropped).
pub struct AccountContext {
    aggregate_id: String,
    state: SocialAccount,
    sequence: i64,
    /// The chain hash of the last event (None: no event yet, or a legacy one).
    last_hash: Option<String>,
    _turn: Option<AggregateTurn>,
}

impl AccountContext {
    /// The sequence of the last event the state reflects (0 for a new account).
    pub fn sequence(&self) -> i64 {
        self.sequence
    }

    /// The loaded state.
    pub fn state(&self) -> &SocialAccount {
        &self.state
    }
}

/// What an account loaded through the [`AccountRepository`] port carries to its
/// commit: what the next event chains to, and this process's turn on the account.
struct Lease {
    last_hash: Option<String>,
    turn: Option<AggregateTurn>,
}

impl AccountContext {
    fn into_loaded(self, id: AccountId) -> LoadedAccount {
        let version = u64::try_from(self.sequence).unwrap_or_default();
        LoadedAccount::new(id, self.state, version).with_lease(Lease {
            last_hash: self.last_hash,
            turn: self._turn,
        })
    }

    /// The context of an account this store loaded; `None` for any other.
    fn from_loaded(mut account: LoadedAccount) -> Option<Self> {
        let lease = account.take_lease::<Lease>()?;
        let aggregate_id = account.id().as_str().to_owned();
        let sequence = i64::try_from(account.version()).ok()?;
        Some(Self {
            aggregate_id,
            state: account.into_state(),
            sequence,
            last_hash: lease.last_hash,
            _turn: lease.turn,
        })
    }
}

impl AggregateContext<SocialAccount> for AccountContext {
    fn aggregate(&mut self) -> &mut SocialAccount {
        &mut self.state
    }
}

/// The `SocialAccount`s on SQLite or PostgreSQL: the [`AccountRepository`] the use cases
/// commit through, and `EventStore<SocialAccount>` underneath. Cheap to clone.
#[derive(Clone)]
pub struct AccountEventStore {
    db: Db,
    turns: Arc<AggregateTurns>,
    decoder: EventDecoder,
    projection: Option<ReadModels>,
    /// The login sessions started with a commit.
    sessions: SqlRefreshTokens,
}

impl AccountEventStore {
    pub(crate) fn new(
        db: Db,
        decoder: EventDecoder,
        projection: ReadModels,
        sessions: SqlRefreshTokens,
    ) -> Self {
        Self {
            db,
            turns: Arc::new(AggregateTurns::default()),
            decoder,
            projection: Some(projection),
            sessions,
        }
    }

    /// The same store, but commits do not update the read models afterwards: what a
    /// crash between the commit and the projection leaves behind. Catch-up repairs it;
    /// tests and tools use this to prove so.
    pub fn without_projection(mut self) -> Self {
        self.projection = None;
        self
    }

    /// Events after `position` in log order, at most `limit`, for exports: only those
    /// below the safe horizon ([`crate::log`]), so that a position once answered is final.
    pub async fn events_after(&self, position: i64, limit: u32) -> StoreResult<Vec<StoredEvent>> {
        settle(&self.db.pool).await.map_err(db_error)?;
        let statement = select_after(self.db.engine(), &format!("{ENCODED_COLUMNS}, metadata"));
        on_pool!(&self.db.pool, p => {
            sqlx::query(&statement)
            .bind(SocialAccount::TYPE)
            .bind(position)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| self.decode_row(row))
            .collect()
        })
    }

    /// Replays every event of an account from the log, ignoring its state row.
    pub async fn replay(&self, aggregate_id: &str) -> StoreResult<SocialAccount> {
        let mut state = SocialAccount::default();
        for event in self.stored_events(aggregate_id, 0).await? {
            state.apply(event.event);
        }
        Ok(state)
    }

    pub(crate) async fn stored_events(
        &self,
        aggregate_id: &str,
        after: i64,
    ) -> StoreResult<Vec<StoredEvent>> {
        on_pool!(&self.db.pool, p => {
            sqlx::query(&format!(
                "SELECT {ENCODED_COLUMNS}, metadata FROM events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 \
                 ORDER BY sequence"
            ))
            .bind(SocialAccount::TYPE)
            .bind(aggregate_id)
            .bind(after)
            .fetch_all(p)
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| self.decode_row(row))
            .collect()
        })
    }

    /// An `events` row with its metadata, through the one decoder.
    fn decode_row<R>(&self, row: &R) -> StoreResult<StoredEvent>
    where
        R: Row,
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Json<HashMap<String, String>>:
            for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let encoded = read_encoded(row).map_err(db_error)?;
        let Json(metadata) = row
            .try_get::<Json<HashMap<String, String>>, _>("metadata")
            .map_err(db_error)?;
        let (event, event_version) = self
            .decoder
            .decode(&encoded)
            .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
        Ok(StoredEvent {
            position: encoded.position,
            aggregate_id: encoded.aggregate_id,
            sequence: encoded.sequence,
            event_type: encoded.event_type,
            event_version,
            event,
            metadata,
        })
    }

    async fn snapshot(
        &self,
        aggregate_id: &str,
    ) -> StoreResult<Option<(i64, SocialAccount, Option<String>)>> {
        let row = on_pool!(&self.db.pool, p => {
            sqlx::query(
                "SELECT last_sequence, payload, last_hash FROM snapshots \
                 WHERE aggregate_type = $1 AND aggregate_id = $2",
            )
            .bind(SocialAccount::TYPE)
            .bind(aggregate_id)
            .fetch_optional(p)
            .await
            .map_err(db_error)?
            .map(|row| -> Result<(i64, serde_json::Value, Option<String>), sqlx::Error> {
                let Json(payload) = row.try_get::<Json<serde_json::Value>, _>("payload")?;
                Ok((row.try_get("last_sequence")?, payload, row.try_get("last_hash")?))
            })
            .transpose()
            .map_err(db_error)?
        });
        let Some((sequence, payload, last_hash)) = row else {
            return Ok(None);
        };
        match serde_json::from_value(payload) {
            Ok(state) => Ok(Some((sequence, state, last_hash))),
            Err(error) => {
                // The state row is a cache of the log: when its shape no longer
                // matches the aggregate, rebuild from the events instead of failing.
                tracing::warn!(%error, aggregate_id, "unreadable state row; replaying events");
                Ok(None)
            }
        }
    }

    async fn append(
        &self,
        context: &AccountContext,
        events: &[SocialAccountEvent],
        new_state: &SocialAccount,
        metadata: &BTreeMap<String, String>,
        session: Option<&NewSession>,
    ) -> Result<Vec<String>, sqlx::Error> {
        let Chained {
            payloads,
            metadatas,
            hashes,
        } = chain(
            &context.aggregate_id,
            context.sequence,
            context.last_hash.clone().unwrap_or_default(),
            events,
            metadata,
        )?;
        let state =
            serde_json::to_value(new_state).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        if events.len() as i64 >= EVENTS_PER_TRANSACTION {
            return Err(sqlx::Error::Protocol(format!(
                "an append of {} events: at most {} per transaction",
                events.len(),
                EVENTS_PER_TRANSACTION - 1
            )));
        }
        let rows = Rows {
            aggregate_id: &context.aggregate_id,
            first: context.sequence + 1,
            events,
            payloads: &payloads,
            metadatas: &metadatas,
            state: &state,
            last_hash: hashes.last(),
            updated_at: millis(self.db.now()),
        };
        match &self.db.pool {
            // One statement, one round trip, one transaction: the events and the state
            // row. No lock: positions come from the writing transaction (`crate::log`),
            // the stream's unique key orders one account's appends.
            Pool::Postgres(p) => rows.postgres(session).build().execute(p).await.map(drop)?,
            // One writer at a time (the process's write turn, then SQLite's lock), so
            // positions are the commit order.
            Pool::Sqlite(p) => {
                let _turn = self.db.write_turn().await;
                let mut tx = p.begin().await?;
                for (i, ((event, payload), metadata)) in
                    events.iter().zip(&payloads).zip(&metadatas).enumerate()
                {
                    sqlx::query(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                         event_version, payload, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(SocialAccount::TYPE)
                    .bind(&context.aggregate_id)
                    .bind(rows.first + i as i64)
                    .bind(event.type_name())
                    .bind(current_version(event.type_name()))
                    .bind(Json(payload))
                    .bind(Json(metadata))
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(&format!(
                    "INSERT INTO snapshots {SNAPSHOT_COLUMNS} VALUES ($1, $2, $3, $4, $5, $6)\
                     {SNAPSHOT_UPSERT}"
                ))
                .bind(SocialAccount::TYPE)
                .bind(&context.aggregate_id)
                .bind(rows.last_sequence())
                .bind(Json(&state))
                .bind(rows.updated_at)
                .bind(rows.last_hash)
                .execute(&mut *tx)
                .await?;
                if let Some(session) = session {
                    session.write_sqlite(&mut tx).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(hashes)
    }
}

/// The state row's columns, for `INSERT INTO snapshots`.
const SNAPSHOT_COLUMNS: &str = "(aggregate_type, aggregate_id, last_sequence, payload, \
     updated_at, last_hash)";
/// What makes that insert an upsert.
const SNAPSHOT_UPSERT: &str = " ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
     last_sequence = excluded.last_sequence, payload = excluded.payload, \
     updated_at = excluded.updated_at, last_hash = excluded.last_hash";

/// What one append writes: its events and the account's state row.
struct Rows<'a> {
    aggregate_id: &'a str,
    first: i64,
    events: &'a [SocialAccountEvent],
    payloads: &'a [serde_json::Value],
    metadatas: &'a [serde_json::Value],
    state: &'a serde_json::Value,
    last_hash: Option<&'a String>,
    updated_at: i64,
}

impl<'a> Rows<'a> {
    fn last_sequence(&self) -> i64 {
        self.first + self.events.len() as i64 - 1
    }

    /// One PostgreSQL statement writing the events (positions from this transaction,
    /// [`crate::log::position_of`]), the state row, and the login session if any.
    fn postgres(&self, session: Option<&NewSession>) -> QueryBuilder<'a, Postgres> {
        let mut query = QueryBuilder::new(
            "WITH appended AS (INSERT INTO events (aggregate_type, aggregate_id, sequence, \
             event_type, event_version, payload, metadata, position) ",
        );
        let rows = self
            .events
            .iter()
            .zip(self.payloads)
            .zip(self.metadatas)
            .enumerate();
        let (aggregate_id, first) = (self.aggregate_id, self.first);
        query.push_values(rows, |mut row, (i, ((event, payload), metadata))| {
            row.push_bind(SocialAccount::TYPE)
                .push_bind(aggregate_id)
                .push_bind(first + i as i64)
                .push_bind(event.type_name())
                .push_bind(current_version(event.type_name()))
                .push_bind(Json(payload))
                .push_bind(Json(metadata))
                .push(position_of(i));
        });
        query.push("), ");
        if let Some(session) = session {
            session.push_postgres(&mut query);
            query.push(", ");
        }
        query.push(format!(
            "upserted AS (INSERT INTO snapshots {SNAPSHOT_COLUMNS} VALUES ("
        ));
        query
            .separated(", ")
            .push_bind(SocialAccount::TYPE)
            .push_bind(self.aggregate_id)
            .push_bind(self.last_sequence())
            .push_bind(Json(self.state))
            .push_bind(self.updated_at)
            .push_bind(self.last_hash);
        query.push(")").push(SNAPSHOT_UPSERT).push(") SELECT 1");
        query
    }
}

/// Events encoded as stored, with their chain hashes.
pub(crate) struct Chained {
    pub(crate) payloads: Vec<serde_json::Value>,
    pub(crate) metadatas: Vec<serde_json::Value>,
    pub(crate) hashes: Vec<String>,
}

/// Encodes `events`, appended after `sequence` to the stream `aggregate_id` whose last
/// hash is `previous` ("" for a new stream), and chains them: each event's hash covers
/// the previous one's, so linking needs no read of the log.
pub(crate) fn chain(
    aggregate_id: &str,
    sequence: i64,
    mut previous: String,
    events: &[SocialAccountEvent],
    metadata: &BTreeMap<String, String>,
) -> Result<Chained, sqlx::Error> {
    let payloads = events
        .iter()
        .map(|e| serde_json::to_value(e).map_err(|e| sqlx::Error::Encode(Box::new(e))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut hashes = Vec::with_capacity(events.len());
    let mut metadatas = Vec::with_capacity(events.len());
    for (i, (event, payload)) in events.iter().zip(&payloads).enumerate() {
        let hash = ChainLink {
            previous: &previous,
            aggregate_id,
            sequence: u64::try_from(sequence + 1 + i as i64).unwrap_or_default(),
            event_type: event.type_name(),
            event_version: current_version(event.type_name()),
            payload,
            metadata,
        }
        .hash();
        let mut with_hash = metadata.clone();
        with_hash.insert(HASH_KEY.to_owned(), hash.clone());
        metadatas
            .push(serde_json::to_value(with_hash).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
        previous = hash.clone();
        hashes.push(hash);
    }
    Ok(Chained {
        payloads,
        metadatas,
        hashes,
    })
}

impl EventStore<SocialAccount> for AccountEventStore {
    type AC = AccountContext;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> StoreResult<Vec<EventEnvelope<SocialAccount>>> {
        Ok(self
            .stored_events(aggregate_id, 0)
            .await?
            .into_iter()
            .map(|e| EventEnvelope {
                aggregate_id: e.aggregate_id,
                sequence: usize::try_from(e.sequence).unwrap_or_default(),
                payload: e.event,
                metadata: e.metadata,
            })
            .collect())
    }

    async fn load_aggregate(&self, aggregate_id: &str) -> StoreResult<AccountContext> {
        let turn = self.turns.take(aggregate_id).await;
        let (mut sequence, mut state, mut last_hash) =
            self.snapshot(aggregate_id).await?.unwrap_or_default();
        // Normally nothing: the state row is written with the events. Events appended
        // by other means (or before the state row existed) are applied here.
        for event in self.stored_events(aggregate_id, sequence).await? {
            sequence = event.sequence;
            last_hash = event.metadata.get(HASH_KEY).cloned();
            state.apply(event.event);
        }
        Ok(AccountContext {
            aggregate_id: aggregate_id.to_owned(),
            state,
            sequence,
            last_hash,
            _turn: turn,
        })
    }

    async fn commit(
        &self,
        events: Vec<SocialAccountEvent>,
        context: AccountContext,
        metadata: HashMap<String, String>,
    ) -> StoreResult<Vec<EventEnvelope<SocialAccount>>> {
        self.commit_events(events, context, metadata, None).await
    }
}

impl AccountEventStore {
    /// [`EventStore::commit`], starting `session` in the same transaction if given.
    async fn commit_events(
        &self,
        events: Vec<SocialAccountEvent>,
        mut context: AccountContext,
        metadata: HashMap<String, String>,
        session: Option<&NewSession>,
    ) -> StoreResult<Vec<EventEnvelope<SocialAccount>>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // The context holds the state before these events: apply each exactly once.
        let mut new_state = context.aggregate().clone();
        for event in &events {
            new_state.apply(event.clone());
        }
        let chained: BTreeMap<String, String> = metadata
            .iter()
            .filter(|(k, _)| k.as_str() != HASH_KEY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let hashes = match self
            .append(&context, &events, &new_state, &chained, session)
            .await
        {
            Ok(hashes) => hashes,
            Err(error) if is_unique_violation(&error) => {
                return Err(AggregateError::AggregateConflict)
            }
            Err(error) => return Err(db_error(error)),
        };
        let first = context.sequence + 1;
        let aggregate_id = context.aggregate_id.clone();
        drop(context);
        if let Some(projection) = &self.projection {
            // The events are committed; the read models follow in the background (and
            // catch up at start-up and before any question they may be behind on).
            projection.nudge();
        }
        Ok(events
            .into_iter()
            .zip(hashes)
            .enumerate()
            .map(|(i, (payload, hash))| {
                let mut metadata = metadata.clone();
                metadata.insert(HASH_KEY.to_owned(), hash);
                EventEnvelope {
                    aggregate_id: aggregate_id.clone(),
                    sequence: usize::try_from(first + i as i64).unwrap_or_default(),
                    payload,
                    metadata,
                }
            })
            .collect())
    }
}

#[async_trait]
impl AccountRepository for AccountEventStore {
    async fn load(&self, id: &AccountId) -> Result<LoadedAccount, PortError> {
        let context = self
            .load_aggregate(id.as_str())
            .await
            .map_err(store_port_error)?;
        Ok(context.into_loaded(id.clone()))
    }

    async fn commit(
        &self,
        account: LoadedAccount,
        events: Vec<SocialAccountEvent>,
        metadata: HashMap<String, String>,
    ) -> Result<(), CommitError> {
        let context = AccountContext::from_loaded(account).ok_or_else(|| {
            PortError::Internal("event store: a commit of an account it did not load".into())
        })?;
        match EventStore::commit(self, events, context, metadata).await {
            Ok(_) => Ok(()),
            Err(AggregateError::AggregateConflict) => Err(CommitError::Conflict),
            Err(error) => Err(store_port_error(error).into()),
        }
    }

    async fn commit_with_session(
        &self,
        account: LoadedAccount,
        events: Vec<SocialAccountEvent>,
        metadata: HashMap<String, String>,
        owner: &SessionOwner,
        now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), CommitError> {
        if events.is_empty() {
            return Err(PortError::Internal(
                "event store: a login session is started with events, not alone".into(),
            )
            .into());
        }
        let context = AccountContext::from_loaded(account).ok_or_else(|| {
            PortError::Internal("event store: a commit of an account it did not load".into())
        })?;
        let session = self.sessions.new_session(owner, now);
        match self
            .commit_events(events, context, metadata, Some(&session))
            .await
        {
            Ok(_) => Ok(session.started()?),
            Err(AggregateError::AggregateConflict) => Err(CommitError::Conflict),
            Err(error) => Err(store_port_error(error).into()),
        }
    }
}

fn store_port_error(error: AggregateError<AccountError>) -> PortError {
    match error {
        AggregateError::DatabaseConnectionError(error) => {
            tracing::error!(error = %Chain(&*error), "event store unreachable");
            PortError::unavailable("the event store", error)
        }
        other => PortError::internal("event store", other),
    }
}

/// An event row exactly as stored, for the audit's evidence (readers of events use
/// [`crate::decode`]).
pub(crate) struct RawEvent {
    pub(crate) position: i64,
    pub(crate) aggregate_id: String,
    pub(crate) sequence: i64,
    pub(crate) event_type: String,
    pub(crate) event_version: String,
    pub(crate) payload: serde_json::Value,
    pub(crate) metadata: serde_json::Value,
}

pub(crate) fn read_row<R>(row: &R) -> Result<RawEvent, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Json<serde_json::Value>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let Json(payload) = row.try_get::<Json<serde_json::Value>, _>("payload")?;
    let Json(metadata) = row.try_get::<Json<serde_json::Value>, _>("metadata")?;
    Ok(RawEvent {
        position: row.try_get("position")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload,
        metadata,
    })
}

pub(crate) fn db_error(error: sqlx::Error) -> AggregateError<AccountError> {
    if crate::db::is_unavailable(&error) {
        AggregateError::DatabaseConnectionError(Box::new(error))
    } else {
        AggregateError::UnexpectedError(Box::new(error))
    }
}

/// Per-aggregate turns within this process.
#[derive(Default)]
struct AggregateTurns {
    locks: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// This process's turn on one aggregate.
struct AggregateTurn {
    key: String,
    turns: Arc<AggregateTurns>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl AggregateTurns {
    async fn take(self: &Arc<Self>, key: &str) -> Option<AggregateTurn> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key.to_owned()).or_default().clone()
        };
        let guard = tokio::time::timeout(TURN_WAIT, lock.lock_owned())
            .await
            .ok();
        Some(AggregateTurn {
            key: key.to_owned(),
            turns: self.clone(),
            guard,
        })
    }
}

impl Drop for AggregateTurn {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.turns.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it now: nobody waits, forget the entry.
        if locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.key);
        }
    }
}
