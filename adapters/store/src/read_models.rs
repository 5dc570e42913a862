//! Read models projected from the event log: accounts by (appid, openid), by unionid
//! within a tenant (by its keyed hash: the unionid itself is never kept here, and
//! erasure drops the hash), a user's bindings; and the binding registry's repair.
//!
//! They follow the log by its global `position` with a checkpoint, and each account
//! row remembers the last sequence it reflects, so replaying an event twice changes
//! nothing. A projection that did not run (a crash right after a commit) is caught up
//! at start-up and before any question is answered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cqrs_es::Aggregate;
use miniauth_application::ports::{Binding, Chain, PortError};
use miniauth_application::AppCatalog;
use miniauth_domain::{
    AccountId, AppId, OpenId, SocialAccount, SocialAccountEvent, TenantId, UnionId, UserId,
};
use sqlx::Row;

use crate::crypto::Keys;
use crate::db::{millis, on_pool, on_tx, port_error, Db, Tx};
use crate::decode::{read_encoded, EncodedEvent, EventDecoder, UndecodableEvent, ENCODED_COLUMNS};
use crate::log::{count_after, select_after, settle};
use crate::vault::UNIONID_LOOKUP;

/// A fixed statement selecting account views `WHERE` the literal condition given.
macro_rules! view_select {
    ($condition:literal) => {
        concat!(
            "SELECT appid, openid, unionid_hash, bound_user, has_profile, has_phone, \
             latest_session, erased, last_sequence FROM account_view WHERE ",
            $condition
        )
    };
}

/// Events per catch-up transaction.
const BATCH: i64 = 5000;
/// Events per transaction of a rebuild: it replays the whole log, so fewer, larger
/// transactions; the next batch is read and decoded while one is written.
const REBUILD_BATCH: i64 = 10_000;
/// Accounts per multi-row statement (11 parameters each: well under SQLite's 32,766
/// and PostgreSQL's 65,535 bind limits).
const VIEW_CHUNK: usize = 500;
const CHECKPOINT: &str = "accounts";

/// One social account, as the read model knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    /// The app.
    pub appid: AppId,
    /// The WeChat identity within the app.
    pub openid: OpenId,
    /// The keyed hash of the Open Platform id, if known and not erased.
    pub unionid_hash: Option<String>,
    /// The user it is bound to.
    pub bound_user: Option<UserId>,
    /// Whether a profile is on record (and not erased).
    pub has_profile: bool,
    /// Whether a phone is on record (and not erased).
    pub has_phone: bool,
    /// The newest session's number.
    pub latest_session: u64,
    /// Whether its personal data was erased.
    pub erased: bool,
    /// The sequence of the last event it reflects.
    pub sequence: i64,
}

/// The read models. Cheap to clone.
#[derive(Clone)]
pub struct ReadModels {
    db: Db,
    keys: Keys,
    decoder: EventDecoder,
    background: Arc<Background>,
}

/// The state of this process's background catch-up: at most one runs at a time, and a
/// nudge while it runs makes it go round once more.
#[derive(Default)]
struct Background {
    running: AtomicBool,
    pending: AtomicBool,
}

/// What one catch-up transaction did.
struct Batch {
    /// Events read from the log.
    events: u64,
    /// The checkpoint afterwards.
    position: i64,
    /// The event it stopped before, if it met one it cannot decode.
    stopped_at: Option<UndecodableEvent>,
}

/// A batch of the log, read and decoded, not yet projected.
struct Decoded {
    /// Events read.
    read: u64,
    /// The position of the last event read.
    last_position: Option<i64>,
    /// The events up to the first that does not decode.
    events: Vec<(EncodedEvent, SocialAccountEvent)>,
    /// That one, if any.
    stopped_at: Option<UndecodableEvent>,
}

/// What a catch-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Events read from the log.
    pub events: u64,
    /// The checkpoint afterwards.
    pub position: i64,
}

struct ViewRow {
    appid: String,
    openid: String,
    unionid_hash: Option<String>,
    bound_user: Option<i64>,
    has_profile: bool,
    has_phone: bool,
    latest_session: i64,
    erased: bool,
    last_sequence: i64,
    last_position: i64,
    /// Users whose binding ended in this batch, with the log position of the
    /// `Unbound` (their registry claim is released unless the account is bound to them
    /// again by the end of it, or the claim was made after that position).
    released: BTreeMap<i64, i64>,
    bound_in_batch: bool,
    /// When the binding the batch projected was made (Unix ms): a claim the
    /// projection repairs is dated by the event, not by when it ran.
    bound_at: i64,
    /// The log position of that binding's `UserBound`.
    bound_position: i64,
}

impl ReadModels {
    pub(crate) fn new(db: Db, keys: Keys, decoder: EventDecoder) -> Self {
        Self {
            db,
            decoder,
            keys,
            background: Arc::default(),
        }
    }

    /// Asks for a catch-up in the background, after a commit: the request that
    /// committed does not wait for it, and commits of many requests share one
    /// catch-up instead of each taking the checkpoint row in turn. Readers that may be
    /// behind still catch up before they answer, so nothing reads a stale model.
    pub(crate) fn nudge(&self) {
        let background = &self.background;
        background.pending.store(true, Ordering::SeqCst);
        if background.running.swap(true, Ordering::SeqCst) {
            return; // The running task will go round again.
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.background.pending.store(false, Ordering::SeqCst);
                if let Err(error) = this.catch_up().await {
                    tracing::warn!(error = %Chain(&error), "read models lag behind the log; the next catch-up will repair them");
                }
                this.background.running.store(false, Ordering::SeqCst);
                let again = this.background.pending.load(Ordering::SeqCst)
                    && !this.background.running.swap(true, Ordering::SeqCst);
                if !again {
                    break;
                }
            }
        });
    }

    /// Projects every event past the checkpoint. Idempotent; safe to run from several
    /// instances at once (they take turns on the checkpoint row). An event it cannot
    /// decode stops it with an error that names the event (see [`follow`](Self::follow)).
    pub async fn catch_up(&self) -> Result<CatchUp, PortError> {
        settle(&self.db.pool).await.map_err(port_error)?;
        self.project_readable().await
    }

    /// [`catch_up`](Self::catch_up) of what is readable now, without waiting.
    async fn project_readable(&self) -> Result<CatchUp, PortError> {
        match self.follow().await? {
            (done, None) => Ok(done),
            (_, Some(stopped_at)) => Err(undecodable(stopped_at)),
        }
    }

    /// Projects every event past the checkpoint up to the first it cannot decode, and
    /// answers that one: the checkpoint stays before it, so the projection never skips
    /// an event, and every catch-up stops there again until an upcaster reads it.
    pub(crate) async fn follow(&self) -> Result<(CatchUp, Option<UndecodableEvent>), PortError> {
        let mut total = CatchUp::default();
        loop {
            let batch = self.catch_up_batch().await.map_err(port_error)?;
            total.events += batch.events;
            total.position = batch.position;
            if batch.stopped_at.is_some() || batch.events < BATCH as u64 {
                return Ok((total, batch.stopped_at));
            }
        }
    }

    /// Empties the read models and replays the whole log into them, calling
    /// `progress(done, total)` after each batch; answers how many events it replayed.
    /// The binding registry follows the log as in any catch-up. Readers in the
    /// meantime catch up before answering, so they never see a half-built model.
    pub async fn rebuild(&self, progress: impl FnMut(u64, u64)) -> Result<u64, PortError> {
        self.rebuild_in_batches(REBUILD_BATCH, progress).await
    }

    /// [`rebuild`](Self::rebuild) with `batch` events per transaction (at least one):
    /// tests replay a small log in several batches.
    pub(crate) async fn rebuild_in_batches(
        &self,
        batch: i64,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, PortError> {
        let batch = batch.max(1);
        // Everything committed before the rebuild is replayed.
        settle(&self.db.pool).await.map_err(port_error)?;
        let total = {
            let _turn = self.db.write_turn().await;
            on_pool!(&self.db.pool, p => {
                let mut tx = p.begin().await.map_err(port_error)?;
                // Take the checkpoint row first, as catch-up does, so a concurrent
                // catch-up waits for the reset instead of interleaving with it.
                sqlx::query("UPDATE projection_checkpoints SET position = 0 WHERE name = $1")
                    .bind(CHECKPOINT)
                    .execute(&mut *tx)
                    .await
                    .map_err(port_error)?;
                sqlx::query("DELETE FROM account_view")
                    .execute(&mut *tx)
                    .await
                    .map_err(port_error)?;
                let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM events WHERE aggregate_type = $1")
                    .bind(SocialAccount::TYPE)
                    .fetch_one(&mut *tx)
                    .await
                    .and_then(|row| row.try_get("n"))
                    .map_err(port_error)?;
                tx.commit().await.map_err(port_error)?;
                u64::try_from(total).unwrap_or_default()
            })
        };
        let mut done = 0;
        progress(done, total);
        // The reader reads and decodes the log ahead, on a connection of its own, while
        // the batch before is written: at most two batches wait for the writer.
        let (batches, mut next) = tokio::sync::mpsc::channel(2);
        let reader = tokio::spawn(self.clone().read_ahead(batch, batches));
        let result = async {
            while let Some(decoded) = next.recv().await {
                let batch = self.write_batch(decoded?, true).await?;
                if let Some(stopped_at) = batch.stopped_at {
                    return Err(undecodable(stopped_at));
                }
                done += batch.events;
                progress(done.min(total), total.max(done));
            }
            Ok(done)
        }
        .await;
        // Dropping the receiver stops a reader still ahead (after an error).
        drop(next);
        reader
            .await
            .map_err(|e| PortError::internal("read models", e))?;
        result
    }

    /// Reads the whole log in batches of `batch` events below the safe horizon, in log
    /// order, decodes each on a blocking thread and hands it to `batches`; stops after
    /// a short batch, an event it cannot decode, or an error.
    async fn read_ahead(
        self,
        batch: i64,
        batches: tokio::sync::mpsc::Sender<Result<Decoded, PortError>>,
    ) {
        let mut after = 0;
        loop {
            let read = async {
                let stored = events_after_on(&self.db.pool, after, batch).await?;
                self.decode(stored).await
            }
            .await
            .map_err(port_error);
            let last = match &read {
                Ok(decoded) if decoded.stopped_at.is_none() && decoded.read == batch as u64 => {
                    decoded.last_position
                }
                _ => None,
            };
            if batches.send(read).await.is_err() {
                return; // The writer stopped.
            }
            match last {
                Some(position) => after = position,
                None => return,
            }
        }
    }

    /// How many committed events the read models have not projected yet.
    pub async fn lag(&self) -> Result<i64, PortError> {
        self.unprojected(false).await
    }

    /// How many committed events after the checkpoint there are: all, or only those
    /// below the safe horizon ([`crate::log`]).
    async fn unprojected(&self, readable_only: bool) -> Result<i64, PortError> {
        let statement = count_after(self.db.engine(), readable_only);
        on_pool!(&self.db.pool, p => {
            let seen: i64 = sqlx::query("SELECT position FROM projection_checkpoints WHERE name = $1")
                .bind(CHECKPOINT)
                .fetch_one(p)
                .await
                .and_then(|row| row.try_get("position"))
                .map_err(port_error)?;
            sqlx::query(&statement)
                .bind(seen)
                .fetch_one(p)
                .await
                .and_then(|row| row.try_get("n"))
                .map_err(port_error)
        })
    }

    /// Catches up before a question is answered, so that the answer reflects every
    /// event committed before it was asked: waits for the log's horizon to pass them
    /// ([`crate::log::settle`]: on PostgreSQL, the transactions in flight finish first),
    /// then projects what is readable. Answers false when the horizon did not get
    /// there in time (the answer then reflects what was final).
    pub(crate) async fn ensure_current(&self) -> Result<bool, PortError> {
        let settled = settle(&self.db.pool).await.map_err(port_error)?;
        if self.unprojected(true).await? > 0 {
            self.project_readable().await?;
        }
        Ok(settled)
    }

    /// Projects the next events after the checkpoint, at most [`BATCH`], in one
    /// transaction. An event it cannot decode stops it: what came before is projected,
    /// the checkpoint stays before that event, and the batch names it (logged here).
    async fn catch_up_batch(&self) -> Result<Batch, sqlx::Error> {
        let _turn = self.db.write_turn().await;
        let mut tx = self.db.pool.begin().await?;
        let checkpoint = lock_checkpoint(&mut tx).await?;
        let stored = events_after(&mut tx, checkpoint).await?;
        // Decoding (CPU) runs on another thread while the touched views are read.
        let ids: BTreeSet<String> = stored.iter().map(|e| e.aggregate_id.clone()).collect();
        let decoding = self.decode(stored);
        let (decoded, views) = tokio::join!(decoding, read_views(&mut tx, &ids));
        project_batch(tx, checkpoint, decoded?, views?).await
    }

    /// Projects a batch read ahead ([`read_ahead`](Self::read_ahead)) in one
    /// transaction, after the checkpoint: events at or before it (a concurrent
    /// catch-up got there first) are left out. `rebuilding`: the transaction does not
    /// wait for its WAL flush (PostgreSQL; a rebuild that crashes is run again).
    async fn write_batch(
        &self,
        mut decoded: Decoded,
        rebuilding: bool,
    ) -> Result<Batch, PortError> {
        let _turn = self.db.write_turn().await;
        let written = async {
            let mut tx = self.db.pool.begin().await?;
            if rebuilding {
                if let Tx::Postgres(t) = &mut tx {
                    sqlx::query("SET LOCAL synchronous_commit = off")
                        .execute(&mut **t)
                        .await?;
                }
            }
            let checkpoint = lock_checkpoint(&mut tx).await?;
            decoded.events.retain(|(e, _)| e.position > checkpoint);
            let ids: BTreeSet<String> = decoded
                .events
                .iter()
                .map(|(e, _)| e.aggregate_id.clone())
                .collect();
            let views = read_views(&mut tx, &ids).await?;
            project_batch(tx, checkpoint, decoded, views).await
        }
        .await;
        written.map_err(port_error)
    }

    /// Decodes `stored` on a blocking thread.
    async fn decode(&self, stored: Vec<EncodedEvent>) -> Result<Decoded, sqlx::Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.decode_in_order(stored))
            .await
            .map_err(|e| sqlx::Error::Protocol(format!("decoding the log: {e}")))
    }

    /// The events of `stored` up to the first that does not decode, and that one's error.
    fn decode_in_order(&self, stored: Vec<EncodedEvent>) -> Decoded {
        let read = stored.len() as u64;
        let last_position = stored.last().map(|e| e.position);
        let mut events = Vec::with_capacity(stored.len());
        let mut stopped_at = None;
        for encoded in stored {
            match self.decoder.decode(&encoded) {
                Ok((event, _)) => events.push((encoded, event)),
                Err(error) => {
                    stopped_at = Some(error);
                    break;
                }
            }
        }
        Decoded {
            read,
            last_position,
            events,
            stopped_at,
        }
    }

    /// The account of (appid, openid), caught up first.
    pub async fn account(
        &self,
        appid: &AppId,
        openid: &OpenId,
    ) -> Result<Option<AccountView>, PortError> {
        self.ensure_current().await?;
        let views = self
            .views(
                view_select!("aggregate_id = $1 ORDER BY aggregate_id"),
                &format!("{appid}:{openid}"),
            )
            .await?;
        Ok(views.into_iter().next())
    }

    /// Every account with this unionid among the apps of `tenant` (an identity known in
    /// one app of an Open Platform account is recognised in the others).
    pub async fn accounts_by_unionid(
        &self,
        tenant: &TenantId,
        unionid: &UnionId,
        apps: &AppCatalog,
    ) -> Result<Vec<AccountView>, PortError> {
        self.ensure_current().await?;
        let hash = self.keys.lookup_hash(UNIONID_LOOKUP, unionid.as_str());
        let views = self
            .views(
                view_select!("unionid_hash = $1 ORDER BY aggregate_id"),
                &hash,
            )
            .await?;
        Ok(views
            .into_iter()
            .filter(|v| apps.get(&v.appid).is_some_and(|a| a.tenant == *tenant))
            .collect())
    }

    /// The accounts of `apps` whose openid is `identity`, or whose unionid is: what a
    /// GitEgg bind key (which holds either) can name.
    pub async fn accounts_named(
        &self,
        identity: &str,
        apps: &[AppId],
    ) -> Result<Vec<AccountId>, PortError> {
        self.ensure_current().await?;
        let mut found = Vec::new();
        if let Ok(openid) = OpenId::parse(identity) {
            for appid in apps {
                let id = format!("{appid}:{openid}");
                if !self
                    .views(view_select!("aggregate_id = $1 ORDER BY aggregate_id"), &id)
                    .await?
                    .is_empty()
                {
                    found.push(AccountId::new(appid, &openid));
                }
            }
        }
        let hash = self.keys.lookup_hash(UNIONID_LOOKUP, identity);
        for view in self
            .views(
                view_select!("unionid_hash = $1 ORDER BY aggregate_id"),
                &hash,
            )
            .await?
        {
            let id = AccountId::new(&view.appid, &view.openid);
            if apps.contains(&view.appid) && !found.contains(&id) {
                found.push(id);
            }
        }
        Ok(found)
    }

    /// The accounts whose unionid has this keyed hash and that are bound, with their
    /// users, as the log says (caught up first).
    pub async fn bound_by_unionid_hash(
        &self,
        hash: &str,
    ) -> Result<Vec<(AccountId, UserId)>, PortError> {
        self.ensure_current().await?;
        let views = self
            .views(
                view_select!("unionid_hash = $1 ORDER BY aggregate_id"),
                hash,
            )
            .await?;
        Ok(views
            .into_iter()
            .filter_map(|v| Some((AccountId::new(&v.appid, &v.openid), v.bound_user?)))
            .collect())
    }

    /// The bindings of `user` in every app, as the log says.
    pub async fn bindings_of(&self, user: UserId) -> Result<Vec<Binding>, PortError> {
        self.ensure_current().await?;
        let views = on_pool!(&self.db.pool, p => {
            sqlx::query(view_select!("bound_user = $1 ORDER BY appid"))
                .bind(user.get())
                .fetch_all(p)
                .await
                .map_err(port_error)?
                .iter()
                .map(view_from_row)
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(views
            .into_iter()
            .map(|v| Binding {
                appid: v.appid,
                openid: v.openid,
                user_id: user,
            })
            .collect())
    }

    /// The views a fixed `statement` ([`view_select!`]) finds for `value`.
    async fn views(
        &self,
        statement: &'static str,
        value: &str,
    ) -> Result<Vec<AccountView>, PortError> {
        on_pool!(&self.db.pool, p => {
            sqlx::query(statement)
                .bind(value)
                .fetch_all(p)
                .await
                .map_err(port_error)?
                .iter()
                .map(view_from_row)
                .collect()
        })
    }
}

/// Takes the checkpoint row first: its lock (PostgreSQL) or the database's write lock
/// (SQLite) is taken before anything is read, so concurrent catch-ups take turns
/// instead of projecting the same events. Answers the checkpoint.
async fn lock_checkpoint(tx: &mut Tx) -> Result<i64, sqlx::Error> {
    on_tx!(tx, t => {
        sqlx::query("UPDATE projection_checkpoints SET position = position WHERE name = $1")
            .bind(CHECKPOINT)
            .execute(&mut **t)
            .await?;
        sqlx::query("SELECT position FROM projection_checkpoints WHERE name = $1")
            .bind(CHECKPOINT)
            .fetch_one(&mut **t)
            .await?
            .try_get("position")
    })
}

async fn save_checkpoint(tx: &mut Tx, position: i64) -> Result<(), sqlx::Error> {
    on_tx!(tx, t => {
        sqlx::query("UPDATE projection_checkpoints SET position = $1 WHERE name = $2")
            .bind(position)
            .bind(CHECKPOINT)
            .execute(&mut **t)
            .await?;
    });
    Ok(())
}

/// Projects `decoded` onto `views` (the stored views of the accounts it touches) and
/// writes them, the registry's repair and the checkpoint in `tx`, and commits.
async fn project_batch(
    mut tx: Tx,
    checkpoint: i64,
    decoded: Decoded,
    mut views: BTreeMap<String, ViewRow>,
) -> Result<Batch, sqlx::Error> {
    let Decoded {
        read,
        events,
        stopped_at,
        ..
    } = decoded;
    let position = events.last().map_or(checkpoint, |(e, _)| e.position);
    for event in events {
        project(&mut views, event);
    }
    write_views(&mut tx, &views).await?;
    repair_registry(&mut tx, &views).await?;
    save_checkpoint(&mut tx, position).await?;
    tx.commit().await?;
    if let Some(event) = &stopped_at {
        tracing::error!(
            position = event.position,
            event_type = %event.event_type,
            event_version = %event.event_version,
            error = %Chain(event),
            "the read models stop before an event they cannot decode"
        );
    }
    Ok(Batch {
        events: read,
        position,
        stopped_at,
    })
}

/// The next `limit` events after `after`, in log order, below the safe horizon, read
/// outside any transaction (a rebuild reads ahead of its writer).
async fn events_after_on(
    pool: &crate::db::Pool,
    after: i64,
    limit: i64,
) -> Result<Vec<EncodedEvent>, sqlx::Error> {
    let statement = select_after(pool.engine(), ENCODED_COLUMNS);
    on_pool!(pool, p => {
        sqlx::query(&statement)
        .bind(SocialAccount::TYPE)
        .bind(after)
        .bind(limit)
        .fetch_all(p)
        .await?
        .iter()
        .map(read_encoded)
        .collect()
    })
}

/// The next [`BATCH`] events after `checkpoint`, in log order, below the safe horizon
/// (without metadata: the projection does not need it).
async fn events_after(tx: &mut Tx, checkpoint: i64) -> Result<Vec<EncodedEvent>, sqlx::Error> {
    let statement = select_after(tx.engine(), ENCODED_COLUMNS);
    on_tx!(tx, t => {
        sqlx::query(&statement)
        .bind(SocialAccount::TYPE)
        .bind(checkpoint)
        .bind(BATCH)
        .fetch_all(&mut **t)
        .await?
        .iter()
        .map(read_encoded)
        .collect()
    })
}

/// The columns of `account_view` a batch reads back.
const VIEW_ROW_COLUMNS: &str = "aggregate_id, appid, openid, unionid_hash, bound_user, \
     has_profile, has_phone, latest_session, erased, last_sequence, last_position";

/// The stored views of the accounts `ids`: on PostgreSQL one query with the ids as an
/// array, on SQLite one per [`VIEW_CHUNK`] accounts; never one each.
async fn read_views(
    tx: &mut Tx,
    ids: &BTreeSet<String>,
) -> Result<BTreeMap<String, ViewRow>, sqlx::Error> {
    let mut views = BTreeMap::new();
    if ids.is_empty() {
        return Ok(views);
    }
    match tx {
        Tx::Postgres(t) => {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let rows = sqlx::query(&format!(
                "SELECT {VIEW_ROW_COLUMNS} FROM account_view WHERE aggregate_id = ANY($1)"
            ))
            .bind(ids)
            .fetch_all(&mut **t)
            .await?;
            for r in &rows {
                views.insert(r.try_get("aggregate_id")?, view_row(r)?);
            }
        }
        Tx::Sqlite(t) => {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            for chunk in ids.chunks(VIEW_CHUNK) {
                let mut query = sqlx::QueryBuilder::new(format!(
                    "SELECT {VIEW_ROW_COLUMNS} FROM account_view WHERE aggregate_id IN ("
                ));
                let mut list = query.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                query.push(")");
                for r in &query.build().fetch_all(&mut **t).await? {
                    views.insert(r.try_get("aggregate_id")?, view_row(r)?);
                }
            }
        }
    }
    Ok(views)
}

/// A stored view, as a batch projects onto it.
fn view_row<R>(r: &R) -> Result<ViewRow, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database>,
{
    Ok(ViewRow {
        appid: r.try_get("appid")?,
        openid: r.try_get("openid")?,
        unionid_hash: r.try_get("unionid_hash")?,
        bound_user: r.try_get("bound_user")?,
        has_profile: r.try_get("has_profile")?,
        has_phone: r.try_get("has_phone")?,
        latest_session: r.try_get("latest_session")?,
        erased: r.try_get("erased")?,
        last_sequence: r.try_get("last_sequence")?,
        last_position: r.try_get("last_position")?,
        released: BTreeMap::new(),
        bound_in_batch: false,
        bound_at: 0,
        bound_position: 0,
    })
}

/// Applies one event to its account's view, unless the view already reflects it.
fn project(
    views: &mut BTreeMap<String, ViewRow>,
    (stored, event): (EncodedEvent, SocialAccountEvent),
) {
    let view = views
        .entry(stored.aggregate_id)
        .or_insert_with_key(|id| ViewRow::new(id));
    if stored.sequence <= view.last_sequence {
        return; // Already projected.
    }
    apply(view, event, stored.position);
    view.last_sequence = stored.sequence;
    view.last_position = stored.position;
}

/// What an upsert of a view changes when the row exists.
const VIEW_UPDATE: &str =
    " ON CONFLICT (aggregate_id) DO UPDATE SET unionid_hash = excluded.unionid_hash, \
     bound_user = excluded.bound_user, has_profile = excluded.has_profile, \
     has_phone = excluded.has_phone, latest_session = excluded.latest_session, \
     erased = excluded.erased, last_sequence = excluded.last_sequence, \
     last_position = excluded.last_position";

const VIEW_INSERT: &str = "INSERT INTO account_view (aggregate_id, appid, openid, unionid_hash, \
     bound_user, has_profile, has_phone, latest_session, erased, last_sequence, last_position) ";

/// Upserts the views: on PostgreSQL one statement with a column array each (its
/// planning and binding cost no more for 10,000 rows than for one), on SQLite one
/// multi-row statement per [`VIEW_CHUNK`] accounts.
async fn write_views(tx: &mut Tx, views: &BTreeMap<String, ViewRow>) -> Result<(), sqlx::Error> {
    if views.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Postgres(t) => {
            let mut columns = ViewColumns::default();
            for (aggregate_id, view) in views {
                columns.push(aggregate_id, view);
            }
            sqlx::query(&format!(
                "{VIEW_INSERT}SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], \
                 $4::text[], $5::int8[], $6::bool[], $7::bool[], $8::int8[], $9::bool[], \
                 $10::int8[], $11::int8[]){VIEW_UPDATE}"
            ))
            .bind(columns.aggregate_id)
            .bind(columns.appid)
            .bind(columns.openid)
            .bind(columns.unionid_hash)
            .bind(columns.bound_user)
            .bind(columns.has_profile)
            .bind(columns.has_phone)
            .bind(columns.latest_session)
            .bind(columns.erased)
            .bind(columns.last_sequence)
            .bind(columns.last_position)
            .execute(&mut **t)
            .await?;
        }
        Tx::Sqlite(t) => {
            let views: Vec<(&String, &ViewRow)> = views.iter().collect();
            for chunk in views.chunks(VIEW_CHUNK) {
                let mut query = sqlx::QueryBuilder::new(VIEW_INSERT);
                query.push_values(chunk, |mut row, (aggregate_id, view)| {
                    row.push_bind(aggregate_id.as_str())
                        .push_bind(view.appid.as_str())
                        .push_bind(view.openid.as_str())
                        .push_bind(view.unionid_hash.as_deref())
                        .push_bind(view.bound_user)
                        .push_bind(view.has_profile)
                        .push_bind(view.has_phone)
                        .push_bind(view.latest_session)
                        .push_bind(view.erased)
                        .push_bind(view.last_sequence)
                        .push_bind(view.last_position);
                });
                query.push(VIEW_UPDATE);
                query.build().execute(&mut **t).await?;
            }
        }
    }
    Ok(())
}

/// The views of a batch as one array per column (PostgreSQL's `UNNEST`).
#[derive(Default)]
struct ViewColumns<'a> {
    aggregate_id: Vec<&'a str>,
    appid: Vec<&'a str>,
    openid: Vec<&'a str>,
    unionid_hash: Vec<Option<&'a str>>,
    bound_user: Vec<Option<i64>>,
    has_profile: Vec<bool>,
    has_phone: Vec<bool>,
    latest_session: Vec<i64>,
    erased: Vec<bool>,
    last_sequence: Vec<i64>,
    last_position: Vec<i64>,
}

impl<'a> ViewColumns<'a> {
    fn push(&mut self, aggregate_id: &'a str, view: &'a ViewRow) {
        self.aggregate_id.push(aggregate_id);
        self.appid.push(&view.appid);
        self.openid.push(&view.openid);
        self.unionid_hash.push(view.unionid_hash.as_deref());
        self.bound_user.push(view.bound_user);
        self.has_profile.push(view.has_profile);
        self.has_phone.push(view.has_phone);
        self.latest_session.push(view.latest_session);
        self.erased.push(view.erased);
        self.last_sequence.push(view.last_sequence);
        self.last_position.push(view.last_position);
    }
}

/// The registry follows the log: a binding the log holds is claimed (a claim another
/// user holds is left alone), a binding the log ended is released — unless the claim
/// was made after the `Unbound` was committed: a rebind claimed it again and its event
/// is not projected yet. The log orders them, whatever the clocks of the instances say:
/// on SQLite the claim's `claimed_after` is at or past the event's position (positions
/// are the commit order there); on PostgreSQL the claim's snapshot saw the `Unbound`'s
/// transaction committed (`claimed_snapshot`; claims made before migration 0010, and
/// those repaired here, have none and compare positions, which within one account's
/// stream follow its sequence).
async fn repair_registry(
    tx: &mut Tx,
    views: &BTreeMap<String, ViewRow>,
) -> Result<(), sqlx::Error> {
    // Releases first, so that a user who moved from one identity to another within the
    // batch is claimed again below.
    let released: Vec<(&ViewRow, i64, i64)> = views
        .values()
        .flat_map(|view| {
            view.released
                .iter()
                .filter(|(user, _)| Some(**user) != view.bound_user)
                .map(move |(user, unbound_position)| (view, *user, *unbound_position))
        })
        .collect();
    // The claims of the bindings projected.
    let bound: Vec<(&ViewRow, i64)> = views
        .values()
        .filter(|view| view.bound_in_batch)
        .filter_map(|view| Some((view, view.bound_user?)))
        .collect();
    let repaired = match tx {
        Tx::Postgres(t) => {
            release_claims_postgres(t, &released).await?;
            claim_postgres(t, &bound).await?
        }
        Tx::Sqlite(t) => {
            // One statement per release (rare, and local), one per [`VIEW_CHUNK`] claims.
            for (view, user, unbound_position) in &released {
                sqlx::query(
                    "DELETE FROM bindings WHERE appid = $1 AND openid = $2 AND user_id = $3 \
                     AND claimed_after < $4",
                )
                .bind(&view.appid)
                .bind(&view.openid)
                .bind(user)
                .bind(unbound_position)
                .execute(&mut **t)
                .await?;
            }
            let mut repaired = Vec::new();
            for chunk in bound.chunks(VIEW_CHUNK) {
                let mut query = sqlx::QueryBuilder::new(CLAIM_INSERT);
                query.push_values(chunk, |mut row, (view, user)| {
                    row.push_bind(view.appid.as_str())
                        .push_bind(view.openid.as_str())
                        .push_bind(*user)
                        .push_bind(view.bound_at)
                        // As if claimed just before its event, as a bind does.
                        .push_bind(view.bound_position - 1);
                });
                query.push(CLAIM_CONFLICT);
                repaired.extend(query.build().fetch_all(&mut **t).await?);
            }
            repaired
                .iter()
                .map(repaired_claim)
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    for (appid, openid, user) in repaired {
        tracing::info!(account = %format!("{appid}:{openid}"), user, "registry repaired from the log");
    }
    Ok(())
}

const CLAIM_INSERT: &str =
    "INSERT INTO bindings (appid, openid, user_id, claimed_at, claimed_after) ";
const CLAIM_CONFLICT: &str = " ON CONFLICT DO NOTHING RETURNING appid, openid, user_id";

/// The releases of a batch in one statement, the `Unbound`s as arrays (PostgreSQL).
async fn release_claims_postgres(
    t: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    released: &[(&ViewRow, i64, i64)],
) -> Result<(), sqlx::Error> {
    if released.is_empty() {
        return Ok(());
    }
    let appids: Vec<&str> = released.iter().map(|(v, _, _)| v.appid.as_str()).collect();
    let openids: Vec<&str> = released.iter().map(|(v, _, _)| v.openid.as_str()).collect();
    let users: Vec<i64> = released.iter().map(|(_, user, _)| *user).collect();
    let unbound: Vec<i64> = released.iter().map(|(_, _, position)| *position).collect();
    sqlx::query(
        "DELETE FROM bindings b USING UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) \
         AS r(appid, openid, user_id, unbound) \
         WHERE b.appid = r.appid AND b.openid = r.openid AND b.user_id = r.user_id \
         AND CASE WHEN b.claimed_snapshot IS NULL THEN b.claimed_after < r.unbound \
         ELSE NOT pg_visible_in_snapshot((r.unbound / 65536)::text::xid8, b.claimed_snapshot) END",
    )
    .bind(appids)
    .bind(openids)
    .bind(users)
    .bind(unbound)
    .execute(&mut **t)
    .await?;
    Ok(())
}

/// The claims of a batch in one statement, as arrays (PostgreSQL); answers those it made.
async fn claim_postgres(
    t: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    bound: &[(&ViewRow, i64)],
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    if bound.is_empty() {
        return Ok(Vec::new());
    }
    let appids: Vec<&str> = bound.iter().map(|(v, _)| v.appid.as_str()).collect();
    let openids: Vec<&str> = bound.iter().map(|(v, _)| v.openid.as_str()).collect();
    let users: Vec<i64> = bound.iter().map(|(_, user)| *user).collect();
    let at: Vec<i64> = bound.iter().map(|(v, _)| v.bound_at).collect();
    // As if claimed just before its event, as a bind does.
    let after: Vec<i64> = bound.iter().map(|(v, _)| v.bound_position - 1).collect();
    sqlx::query(&format!(
        "{CLAIM_INSERT}SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], \
         $5::int8[]){CLAIM_CONFLICT}"
    ))
    .bind(appids)
    .bind(openids)
    .bind(users)
    .bind(at)
    .bind(after)
    .fetch_all(&mut **t)
    .await?
    .iter()
    .map(repaired_claim)
    .collect()
}

fn repaired_claim<R>(row: &R) -> Result<(String, String, i64), sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok((
        row.try_get("appid")?,
        row.try_get("openid")?,
        row.try_get("user_id")?,
    ))
}

/// The error of a catch-up that stopped before `event`.
fn undecodable(event: UndecodableEvent) -> PortError {
    PortError::internal("read models", event)
}

fn view_from_row<R>(row: &R) -> Result<AccountView, PortError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database>,
{
    let bad =
        |what: &str| PortError::Internal(format!("account_view holds an invalid {what}").into());
    let get_err = |e: sqlx::Error| port_error(e);
    let appid: String = row.try_get("appid").map_err(get_err)?;
    let openid: String = row.try_get("openid").map_err(get_err)?;
    let unionid_hash: Option<String> = row.try_get("unionid_hash").map_err(get_err)?;
    let bound_user: Option<i64> = row.try_get("bound_user").map_err(get_err)?;
    Ok(AccountView {
        appid: AppId::parse(&appid).map_err(|_| bad("appid"))?,
        openid: OpenId::parse(&openid).map_err(|_| bad("openid"))?,
        unionid_hash,
        bound_user: bound_user
            .map(UserId::new)
            .transpose()
            .map_err(|_| bad("user id"))?,
        has_profile: row.try_get("has_profile").map_err(get_err)?,
        has_phone: row.try_get("has_phone").map_err(get_err)?,
        latest_session: u64::try_from(row.try_get::<i64, _>("latest_session").map_err(get_err)?)
            .unwrap_or_default(),
        erased: row.try_get("erased").map_err(get_err)?,
        sequence: row.try_get("last_sequence").map_err(get_err)?,
    })
}

impl ViewRow {
    /// The view of an account the read model has not seen yet.
    fn new(aggregate_id: &str) -> Self {
        let (appid, openid) = aggregate_id.split_once(':').unwrap_or_default();
        Self {
            appid: appid.to_owned(),
            openid: openid.to_owned(),
            unionid_hash: None,
            bound_user: None,
            has_profile: false,
            has_phone: false,
            latest_session: 0,
            erased: false,
            last_sequence: 0,
            last_position: 0,
            released: BTreeMap::new(),
            bound_in_batch: false,
            bound_at: 0,
            bound_position: 0,
        }
    }
}

fn apply(view: &mut ViewRow, event: SocialAccountEvent, position: i64) {
    use SocialAccountEvent as E;
    match event {
        E::SessionObtained(e) => {
            view.appid = e.appid.to_string();
            view.openid = e.openid.to_string();
            if let Some(unionid) = e.unionid {
                view.unionid_hash = Some(unionid.hash);
            }
            view.latest_session = i64::try_from(e.session_seq).unwrap_or(i64::MAX);
        }
        E::ProfileDecrypted(e) => {
            if let Some(unionid) = e.unionid {
                view.unionid_hash = Some(unionid.hash);
            }
            view.has_profile = true;
        }
        E::PhoneVerified(_) => view.has_phone = true,
        E::UserBound(e) => {
            view.bound_user = Some(e.user_id.get());
            view.bound_in_batch = true;
            view.bound_at = millis(e.occurred_at);
            view.bound_position = position;
        }
        E::Unbound(e) => {
            view.bound_user = None;
            view.released.insert(e.user_id.get(), position);
        }
        E::PersonalDataErased(_) => {
            view.unionid_hash = None;
            view.has_profile = false;
            view.has_phone = false;
            view.erased = true;
        }
        // A declined link changes no view: the account stays unbound.
        E::LinkDeclined(_) => {}
        E::AccountImported(e) => {
            view.appid = e.appid.to_string();
            view.openid = e.openid.to_string();
            view.unionid_hash = e.unionid.map(|u| u.hash);
            view.has_profile = e.nickname.is_some();
        }
    }
}

#[async_trait::async_trait]
impl miniauth_application::legacy_key::ImportedIdentities for ReadModels {
    async fn accounts_named(
        &self,
        identity: &str,
        apps: &[AppId],
    ) -> Result<Vec<AccountId>, PortError> {
        ReadModels::accounts_named(self, identity, apps).await
    }
}
