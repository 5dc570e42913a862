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

use cqrs_es::persist::{EventUpcaster, SerializedEvent};

use cqrs_es::Aggregate;
use miniauth_application::ports::{Binding, PortError};
use miniauth_application::AppCatalog;
use miniauth_domain::{
    current_version, AppId, OpenId, SocialAccount, SocialAccountEvent, TenantId, UnionId, UserId,
};
use sqlx::Row;

use crate::crypto::Keys;
use crate::db::{millis, on_pool, port_error, Db};
use crate::vault::UNIONID_LOOKUP;
use sqlx::types::Json;

/// How many events one catch-up transaction projects.
/// Events per catch-up transaction.
const BATCH: i64 = 5000;
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
    upcasters: Arc<Vec<Box<dyn EventUpcaster>>>,
    background: Arc<Background>,
}

/// The state of this process's background catch-up: at most one runs at a time, and a
/// nudge while it runs makes it go round once more.
#[derive(Default)]
struct Background {
    running: AtomicBool,
    pending: AtomicBool,
}

/// What a catch-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Events read from the log.
    pub events: u64,
    /// The checkpoint afterwards.
    pub position: i64,
}

#[derive(Clone)]
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
    /// Users whose binding ended in this batch (their registry claim is released
    /// unless the account is bound to them again by the end of it).
    released: BTreeMap<i64, i64>,
    bound_in_batch: bool,
    /// When the binding the batch projected was made (Unix ms): a claim the
    /// projection repairs is dated by the event, not by when it ran.
    bound_at: i64,
}

impl ReadModels {
    pub(crate) fn new(db: Db, keys: Keys) -> Self {
        Self {
            db,
            upcasters: Arc::new(crate::upcast::upcasters(&keys)),
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
                    tracing::warn!(%error, "read models lag behind the log; the next catch-up will repair them");
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
    /// instances at once (they take turns on the checkpoint row).
    pub async fn catch_up(&self) -> Result<CatchUp, PortError> {
        let mut total = CatchUp::default();
        loop {
            let (events, position) = self.catch_up_batch().await.map_err(port_error)?;
            total.events += events;
            total.position = position;
            if events < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Empties the read models and replays the whole log into them, calling
    /// `progress(done, total)` after each batch; answers how many events it replayed.
    /// The binding registry follows the log as in any catch-up. Readers in the
    /// meantime catch up before answering, so they never see a half-built model.
    pub async fn rebuild(&self, mut progress: impl FnMut(u64, u64)) -> Result<u64, PortError> {
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
        loop {
            let (events, _) = self.catch_up_batch().await.map_err(port_error)?;
            done += events;
            progress(done.min(total), total.max(done));
            if events < BATCH as u64 {
                return Ok(done);
            }
        }
    }

    /// How many log positions the read models have not projected yet.
    pub async fn lag(&self) -> Result<i64, PortError> {
        on_pool!(&self.db.pool, p => {
            let row = sqlx::query(
                "SELECT (SELECT position FROM projection_checkpoints WHERE name = $1) AS seen, \
                 (SELECT MAX(position) FROM events) AS last",
            )
            .bind(CHECKPOINT)
            .fetch_one(p)
            .await
            .map_err(port_error)?;
            let seen: Option<i64> = row.try_get("seen").map_err(port_error)?;
            let last: Option<i64> = row.try_get("last").map_err(port_error)?;
            Ok((last.unwrap_or(0) - seen.unwrap_or(0)).max(0))
        })
    }

    async fn ensure_current(&self) -> Result<(), PortError> {
        if self.lag().await? > 0 {
            self.catch_up().await?;
        }
        Ok(())
    }

    async fn catch_up_batch(&self) -> Result<(u64, i64), sqlx::Error> {
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            let mut tx = p.begin().await?;
            // Write first: it takes the checkpoint row's lock (PostgreSQL) or the
            // database's write lock (SQLite) before anything is read, so concurrent
            // catch-ups take turns instead of projecting the same events.
            sqlx::query("UPDATE projection_checkpoints SET position = position WHERE name = $1")
                .bind(CHECKPOINT)
                .execute(&mut *tx)
                .await?;
            let checkpoint: i64 = sqlx::query("SELECT position FROM projection_checkpoints WHERE name = $1")
                .bind(CHECKPOINT)
                .fetch_one(&mut *tx)
                .await?
                .try_get("position")?;
            // The projection needs neither metadata nor the aggregate type column.
            let rows = sqlx::query(
                "SELECT position, aggregate_id, sequence, event_type, event_version, payload \
                 FROM events WHERE position > $1 AND aggregate_type = $2 ORDER BY position LIMIT $3",
            )
            .bind(checkpoint)
            .bind(SocialAccount::TYPE)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            let count = rows.len() as u64;
            let mut position = checkpoint;
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                let event_position: i64 = row.try_get("position")?;
                position = event_position;
                let aggregate_id: String = row.try_get("aggregate_id")?;
                let sequence: i64 = row.try_get("sequence")?;
                let version: String = row.try_get("event_version")?;
                let event_type: String = row.try_get("event_type")?;
                let decoded = if version == current_version(&event_type) {
                    // Today's events decode straight into the typed event.
                    row.try_get::<Json<SocialAccountEvent>, _>("payload").map(|Json(e)| e).ok()
                } else {
                    // Older versions are read through the same upcasters as the event store.
                    let Json(payload) = row.try_get::<Json<serde_json::Value>, _>("payload")?;
                    let serialized = crate::upcast::upcast(
                        &self.upcasters,
                        SerializedEvent::new(
                            aggregate_id.clone(),
                            0,
                            SocialAccount::TYPE.to_owned(),
                            event_type,
                            version,
                            payload,
                            serde_json::Value::Null,
                        ),
                    );
                    serde_json::from_value::<SocialAccountEvent>(serialized.payload).ok()
                };
                let Some(event) = decoded else {
                    tracing::error!(position = event_position, "undecodable event skipped by the projection");
                    continue;
                };
                events.push((event_position, aggregate_id, sequence, event));
            }
            // One query for every account the batch touches, instead of one each.
            let mut touched: BTreeMap<String, ViewRow> = BTreeMap::new();
            let ids: BTreeSet<&String> = events.iter().map(|(_, id, _, _)| id).collect();
            for chunk in ids.into_iter().collect::<Vec<_>>().chunks(VIEW_CHUNK) {
                let mut query = sqlx::QueryBuilder::new(
                    "SELECT aggregate_id, appid, openid, unionid_hash, bound_user, has_profile, has_phone, \
                     latest_session, erased, last_sequence, last_position \
                     FROM account_view WHERE aggregate_id IN (",
                );
                let mut list = query.separated(", ");
                for id in chunk {
                    list.push_bind(id.as_str());
                }
                query.push(")");
                for r in query.build().fetch_all(&mut *tx).await? {
                    touched.insert(
                        r.try_get("aggregate_id")?,
                        ViewRow {
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
                        },
                    );
                }
            }
            for (event_position, aggregate_id, sequence, event) in events {
                let view = touched.entry(aggregate_id).or_insert_with_key(|id| {
                    let (appid, openid) = id.split_once(':').unwrap_or_default();
                    ViewRow {
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
                    }
                });
                if sequence <= view.last_sequence {
                    continue; // Already projected.
                }
                apply(view, event);
                view.last_sequence = sequence;
                view.last_position = event_position;
            }
            let views: Vec<(&String, &ViewRow)> = touched.iter().collect();
            for chunk in views.chunks(VIEW_CHUNK) {
                let mut query = sqlx::QueryBuilder::new(
                    "INSERT INTO account_view (aggregate_id, appid, openid, unionid_hash, bound_user, \
                     has_profile, has_phone, latest_session, erased, last_sequence, last_position) ",
                );
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
                query.push(
                    " ON CONFLICT (aggregate_id) DO UPDATE SET unionid_hash = excluded.unionid_hash, \
                     bound_user = excluded.bound_user, has_profile = excluded.has_profile, \
                     has_phone = excluded.has_phone, latest_session = excluded.latest_session, \
                     erased = excluded.erased, last_sequence = excluded.last_sequence, \
                     last_position = excluded.last_position",
                );
                query.build().execute(&mut *tx).await?;
            }
            for (aggregate_id, view) in &touched {
                // The registry follows the log: a binding the log holds is claimed
                // (a claim another user holds is left alone and reported), a binding
                // the log ended is released — unless the claim is younger than the
                // unbind: a rebind claimed it again and its event is not projected yet.
                for (user, unbound_at) in view.released.iter().filter(|(u, _)| Some(**u) != view.bound_user) {
                    sqlx::query(
                        "DELETE FROM bindings WHERE appid = $1 AND openid = $2 AND user_id = $3 \
                         AND claimed_at <= $4",
                    )
                    .bind(&view.appid)
                    .bind(&view.openid)
                    .bind(user)
                    .bind(unbound_at)
                    .execute(&mut *tx)
                    .await?;
                }
                if let (Some(user), true) = (view.bound_user, view.bound_in_batch) {
                    let inserted = sqlx::query(
                        "INSERT INTO bindings (appid, openid, user_id, claimed_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(&view.appid)
                    .bind(&view.openid)
                    .bind(user)
                    .bind(view.bound_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted == 1 {
                        tracing::info!(account = %aggregate_id, user, "registry repaired from the log");
                    }
                }
            }
            sqlx::query("UPDATE projection_checkpoints SET position = $1 WHERE name = $2")
                .bind(position)
                .bind(CHECKPOINT)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok((count, position))
        })
    }

    /// The account of (appid, openid), caught up first.
    pub async fn account(
        &self,
        appid: &AppId,
        openid: &OpenId,
    ) -> Result<Option<AccountView>, PortError> {
        self.ensure_current().await?;
        let views = self
            .views("aggregate_id = $1", &format!("{appid}:{openid}"))
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
        let views = self.views("unionid_hash = $1", &hash).await?;
        Ok(views
            .into_iter()
            .filter(|v| apps.get(&v.appid).is_some_and(|a| a.tenant == *tenant))
            .collect())
    }

    /// The bindings of `user` in every app, as the log says.
    pub async fn bindings_of(&self, user: UserId) -> Result<Vec<Binding>, PortError> {
        self.ensure_current().await?;
        let views = on_pool!(&self.db.pool, p => {
            sqlx::query(&format!("{VIEW_SELECT} WHERE bound_user = $1 ORDER BY appid"))
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

    async fn views(&self, filter: &str, value: &str) -> Result<Vec<AccountView>, PortError> {
        on_pool!(&self.db.pool, p => {
            sqlx::query(&format!("{VIEW_SELECT} WHERE {filter} ORDER BY aggregate_id"))
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

const VIEW_SELECT: &str =
    "SELECT appid, openid, unionid_hash, bound_user, has_profile, has_phone, \
     latest_session, erased, last_sequence FROM account_view";

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
    let bad = |what: &str| PortError::Internal(format!("account_view holds an invalid {what}"));
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

fn apply(view: &mut ViewRow, event: SocialAccountEvent) {
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
        }
        E::Unbound(e) => {
            view.bound_user = None;
            view.released.insert(e.user_id.get(), millis(e.occurred_at));
        }
        E::PersonalDataErased(_) => {
            view.unionid_hash = None;
            view.has_profile = false;
            view.has_phone = false;
            view.erased = true;
        }
    }
}
