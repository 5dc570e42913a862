//! The import's writes ([`ImportTarget`]), in batches: one transaction per batch, with
//! multi-row statements, so that a migration of 100,000 bindings takes seconds.
//!
//! A batch writes new streams only (from sequence 1): an account with a history is
//! never appended to by an import (the application asks [`known_accounts`] first, and
//! the events' unique key refuses a concurrent writer, failing the batch whole).
//!
//! [`known_accounts`]: ImportTarget::known_accounts

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use cqrs_es::Aggregate;
use miniauth_application::import::{
    ImportBatch, ImportTarget, ImportedUser, KnownUser, ProfileToSeal, SealedProfile,
    IMPORTED_ORIGIN,
};
use miniauth_application::ports::{PortError, UserStatus};
use miniauth_domain::{AccountId, AppId, PersonalField, SocialAccount, SocialAccountEvent, UserId};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Row};

use crate::crypto::{Keys, Sealer};
use crate::db::{millis, on_pool, port_error, Db};
use crate::event_store::{chain, Chained};
use crate::log::{position_of, EVENTS_PER_TRANSACTION};
use crate::users::{mobile_hash, mobile_text, seal_column, Column};
use crate::vault::{new_data_key, seal_datum, unionid_hash, SqlVault};

/// Rows per multi-row statement (at most 11 parameters each: well under SQLite's
/// 32,766 and PostgreSQL's 65,535 bind limits).
const CHUNK: usize = 500;

/// [`ImportTarget`] on the store's tables. Cheap to clone.
#[derive(Clone)]
pub struct SqlImportTarget {
    db: Db,
    keys: Keys,
}

impl SqlImportTarget {
    pub(crate) fn new(db: Db, keys: Keys) -> Self {
        Self { db, keys }
    }

    /// The data keys of these accounts that exist: account → (key id, sealed key).
    async fn data_keys(
        &self,
        accounts: &[&str],
    ) -> Result<HashMap<String, (String, String)>, sqlx::Error> {
        let mut found = HashMap::new();
        for chunk in accounts.chunks(CHUNK) {
            on_pool!(&self.db.pool, p => {
                let mut q = QueryBuilder::new(
                    "SELECT account_id, key_id, sealed_key FROM data_keys WHERE account_id IN (",
                );
                let mut list = q.separated(", ");
                for account in chunk {
                    list.push_bind(*account);
                }
                q.push(")");
                // Not a prepared statement kept for reuse: PostgreSQL would plan it once
                // for any values, and its generic plan for a list of 500 reads the
                // whole table (an unnamed statement is planned with the values given).
                for row in q.build().persistent(false).fetch_all(p).await? {
                    found.insert(
                        row.try_get("account_id")?,
                        (row.try_get("key_id")?, row.try_get("sealed_key")?),
                    );
                }
            });
        }
        Ok(found)
    }
}

#[async_trait]
impl ImportTarget for SqlImportTarget {
    async fn known_accounts(
        &self,
        ids: &[AccountId],
    ) -> Result<HashMap<AccountId, bool>, PortError> {
        let by_text: HashMap<&str, &AccountId> = ids.iter().map(|id| (id.as_str(), id)).collect();
        let mut known = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            on_pool!(&self.db.pool, p => {
                let mut q = QueryBuilder::new(
                    "SELECT aggregate_id, event_type FROM events WHERE aggregate_type = ",
                );
                q.push_bind(SocialAccount::TYPE);
                q.push(" AND sequence = 1 AND aggregate_id IN (");
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(id.as_str());
                }
                q.push(")");
                for row in q.build().persistent(false).fetch_all(p).await.map_err(port_error)? {
                    let id: String = row.try_get("aggregate_id").map_err(port_error)?;
                    let first: String = row.try_get("event_type").map_err(port_error)?;
                    if let Some(account) = by_text.get(id.as_str()) {
                        known.insert((*account).clone(), first == "AccountImported");
                    }
                }
            });
        }
        Ok(known)
    }

    async fn known_users(
        &self,
        appid: &AppId,
        users: &[ImportedUser],
    ) -> Result<HashMap<UserId, KnownUser>, PortError> {
        let mut known = HashMap::new();
        for chunk in users.chunks(CHUNK) {
            let rows: Vec<(i64, String, Option<String>, Option<String>, String, bool)> = on_pool!(&self.db.pool, p => {
                // Any user with the id, the (tenant, account) or the (tenant, mobile)
                // of one of these.
                let mut q = QueryBuilder::new(
                    "SELECT id, tenant, account, mobile_hash, origin, EXISTS (SELECT 1 FROM \
                     bindings WHERE bindings.user_id = users.id AND bindings.appid = ",
                );
                q.push_bind(appid.as_str());
                q.push(") AS holds FROM users WHERE id IN (");
                let mut list = q.separated(", ");
                for user in chunk {
                    list.push_bind(user.id.get());
                }
                q.push(") OR account IN (");
                let mut list = q.separated(", ");
                list.push_bind("");
                for user in chunk {
                    if let Some(account) = &user.account {
                        list.push_bind(account.as_str());
                    }
                }
                q.push(") OR mobile_hash IN (");
                let mut list = q.separated(", ");
                list.push_bind("");
                for user in chunk {
                    if let Some(mobile) = &user.mobile {
                        list.push_bind(mobile_hash(&self.keys, mobile));
                    }
                }
                q.push(")");
                q.build().persistent(false)
                    .fetch_all(p)
                    .await
                    .map_err(port_error)?
                    .iter()
                    .map(|r| {
                        Ok((
                            r.try_get("id")?,
                            r.try_get("tenant")?,
                            r.try_get("account")?,
                            r.try_get("mobile_hash")?,
                            r.try_get("origin")?,
                            r.try_get("holds")?,
                        ))
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(port_error)?
            });
            for user in chunk {
                let mobile = user.mobile.as_ref().map(|m| mobile_hash(&self.keys, m));
                let answer = rows
                    .iter()
                    .find_map(|(id, tenant, account, hash, origin, holds)| {
                        if *id == user.id.get() {
                            return Some(if origin == IMPORTED_ORIGIN {
                                KnownUser::Imported {
                                    holds_identity: *holds,
                                }
                            } else {
                                KnownUser::IdTaken
                            });
                        }
                        if tenant != user.tenant.as_str() {
                            return None;
                        }
                        if account.is_some() && *account == user.account {
                            return Some(KnownUser::AccountTaken);
                        }
                        if hash.is_some() && *hash == mobile {
                            return Some(KnownUser::MobileTaken);
                        }
                        None
                    });
                if let Some(answer) = answer {
                    known.insert(user.id, answer);
                }
            }
        }
        Ok(known)
    }

    async fn seal_profiles(
        &self,
        profiles: Vec<ProfileToSeal>,
    ) -> Result<Vec<SealedProfile>, PortError> {
        let accounts: Vec<&str> = profiles.iter().map(|p| p.account.as_str()).collect();
        let mut keys = self.data_keys(&accounts).await.map_err(port_error)?;
        let missing: Vec<&ProfileToSeal> = profiles
            .iter()
            .filter(|p| !keys.contains_key(p.account.as_str()))
            .collect();
        if !missing.is_empty() {
            let now = millis(self.db.now());
            let _turn = self.db.write_turn().await;
            for chunk in missing.chunks(CHUNK) {
                on_pool!(&self.db.pool, p => {
                    let mut q = QueryBuilder::new(
                        "INSERT INTO data_keys (account_id, key_id, sealed_key, created_at) ",
                    );
                    q.push_values(chunk, |mut row, profile| {
                        let (key, key_id) = new_data_key();
                        row.push_bind(profile.account.as_str())
                            .push_bind(key_id)
                            .push_bind(SqlVault::seal_data_key(&self.keys, &profile.account, &key))
                            .push_bind(now);
                    });
                    // Concurrent first uses: one key wins, everyone uses it.
                    q.push(" ON CONFLICT (account_id) DO NOTHING");
                    q.build().execute(p).await.map_err(port_error)?;
                });
            }
            let created: Vec<&str> = missing.iter().map(|p| p.account.as_str()).collect();
            keys.extend(self.data_keys(&created).await.map_err(port_error)?);
        }
        profiles
            .iter()
            .map(|profile| {
                let account = &profile.account;
                let (key_id, sealed_key) = keys.get(account.as_str()).ok_or_else(|| {
                    PortError::Internal("data key vanished while being created".into())
                })?;
                let sealer =
                    Sealer::new(&SqlVault::open_data_key(&self.keys, account, sealed_key)?);
                let seal = |field, text: &Option<String>| {
                    text.as_deref()
                        .map(|t| seal_datum(key_id, &sealer, account, field, t))
                };
                Ok(SealedProfile {
                    unionid: profile
                        .unionid
                        .as_ref()
                        .map(|u| miniauth_domain::SealedUnionId {
                            hash: unionid_hash(&self.keys, u),
                            sealed: Some(seal_datum(
                                key_id,
                                &sealer,
                                account,
                                PersonalField::UnionId,
                                u.as_str(),
                            )),
                        }),
                    nickname: seal(PersonalField::Nickname, &profile.nickname),
                    avatar_url: seal(PersonalField::AvatarUrl, &profile.avatar_url),
                })
            })
            .collect()
    }

    async fn write(&self, batch: ImportBatch) -> Result<(), PortError> {
        let metadata: BTreeMap<String, String> = batch.metadata.into_iter().collect();
        let streams = batch
            .accounts
            .iter()
            .map(|(id, events)| Stream::new(id, events, &metadata))
            .collect::<Result<Vec<_>, _>>()
            .map_err(port_error)?;
        let users: Vec<UserRow> = batch
            .users
            .iter()
            .map(|u| UserRow::new(&self.keys, u))
            .collect();
        let now = millis(self.db.now());
        let postgres = self.db.is_postgres();
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            async {
                let mut tx = p.begin().await?;
                for chunk in users.chunks(CHUNK) {
                    let mut q = QueryBuilder::new(
                        "INSERT INTO users (id, tenant, account, mobile_hash, mobile_sealed, \
                         nickname_sealed, password_hash, status, origin, created_at) ",
                    );
                    q.push_values(chunk, |mut row, user| {
                        row.push_bind(user.id)
                            .push_bind(user.tenant.as_str())
                            .push_bind(user.account.as_deref())
                            .push_bind(user.mobile_hash.as_deref())
                            .push_bind(user.mobile_sealed.as_deref())
                            .push_bind(user.nickname_sealed.as_deref())
                            .push_bind(user.password_hash.as_deref())
                            .push_bind(user.status)
                            .push_bind(IMPORTED_ORIGIN)
                            .push_bind(user.created_at);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                if postgres && !users.is_empty() {
                    // Explicit ids leave the identity behind: users registered later
                    // must not be given an imported id.
                    sqlx::query(
                        "SELECT setval(pg_get_serial_sequence('users', 'id'), \
                         (SELECT MAX(id) FROM users))",
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                // A claim remembers the newest log position when it was made (see the
                // registry's repair); the events below come after it.
                let claimed_after: i64 =
                    sqlx::query("SELECT COALESCE(MAX(position), 0) AS last FROM events")
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get("last")?;
                let events: Vec<EventRow> = streams.iter().flat_map(Stream::rows).collect();
                // PostgreSQL: positions come from this transaction (`crate::log`), each
                // event's index given explicitly so that the log's order is the batch's.
                if postgres && events.len() as i64 >= EVENTS_PER_TRANSACTION {
                    return Err(sqlx::Error::Protocol(format!(
                        "a batch of {} events: at most {} per transaction (lower --batch-size)",
                        events.len(),
                        EVENTS_PER_TRANSACTION - 1
                    )));
                }
                for (n, chunk) in events.chunks(CHUNK).enumerate() {
                    let mut q = QueryBuilder::new(if postgres {
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                         event_version, payload, metadata, position) "
                    } else {
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                         event_version, payload, metadata) "
                    });
                    q.push_values(chunk.iter().enumerate(), |mut row, (i, event)| {
                        row.push_bind(SocialAccount::TYPE)
                            .push_bind(event.aggregate_id)
                            .push_bind(event.sequence)
                            .push_bind(event.event_type)
                            .push_bind(miniauth_domain::current_version(event.event_type))
                            .push_bind(Json(event.payload))
                            .push_bind(Json(event.metadata));
                        if postgres {
                            row.push(position_of(n * CHUNK + i));
                        }
                    });
                    q.build().execute(&mut *tx).await?;
                }
                for chunk in streams.chunks(CHUNK) {
                    let mut q = QueryBuilder::new(
                        "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, \
                         payload, updated_at, last_hash) ",
                    );
                    q.push_values(chunk, |mut row, stream| {
                        row.push_bind(SocialAccount::TYPE)
                            .push_bind(stream.id.as_str())
                            .push_bind(stream.events.len() as i64)
                            .push_bind(Json(&stream.state))
                            .push_bind(now)
                            .push_bind(stream.chained.hashes.last().map(String::as_str));
                    });
                    q.build().execute(&mut *tx).await?;
                }
                let claims: Vec<(&AccountId, UserId)> = streams
                    .iter()
                    .filter_map(|s| s.state.bound_user().map(|u| (s.id, u)))
                    .collect();
                for chunk in claims.chunks(CHUNK) {
                    // As the registry's claims do (`registry.rs`): on PostgreSQL the
                    // snapshot the claim was made in, too.
                    let mut q = QueryBuilder::new(if postgres {
                        "INSERT INTO bindings (appid, openid, user_id, claimed_at, claimed_after, \
                         claimed_snapshot) "
                    } else {
                        "INSERT INTO bindings (appid, openid, user_id, claimed_at, claimed_after) "
                    });
                    q.push_values(chunk, |mut row, (id, user)| {
                        row.push_bind(id.appid().to_string())
                            .push_bind(id.openid().to_string())
                            .push_bind(user.get())
                            .push_bind(now)
                            .push_bind(claimed_after);
                        if postgres {
                            row.push("pg_current_snapshot()");
                        }
                    });
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await
            }
            .await
            .map_err(port_error)?
        });
        // The read models are not nudged after each batch: catching up while the
        // import writes would make both take turns on the database. The caller catches
        // them up once at the end (and every start-up does).
        Ok(())
    }
}

/// A user row, sealed for its id.
struct UserRow {
    id: i64,
    tenant: String,
    account: Option<String>,
    mobile_hash: Option<String>,
    mobile_sealed: Option<String>,
    nickname_sealed: Option<String>,
    password_hash: Option<String>,
    status: &'static str,
    created_at: i64,
}

impl UserRow {
    fn new(keys: &Keys, user: &ImportedUser) -> Self {
        let id = user.id.get();
        Self {
            id,
            tenant: user.tenant.to_string(),
            account: user.account.clone(),
            mobile_hash: user.mobile.as_ref().map(|m| mobile_hash(keys, m)),
            mobile_sealed: user
                .mobile
                .as_ref()
                .map(|m| seal_column(keys, Column::Mobile, id, &mobile_text(m))),
            nickname_sealed: user
                .nickname
                .as_deref()
                .map(|n| seal_column(keys, Column::Nickname, id, n)),
            password_hash: user.password_hash.as_ref().map(|h| h.expose().to_owned()),
            status: match user.status {
                UserStatus::Active => "active",
                UserStatus::Disabled => "disabled",
            },
            created_at: millis(user.created_at),
        }
    }
}

/// A new stream: its events chained from sequence 1, and the state they build.
struct Stream<'a> {
    id: &'a AccountId,
    events: &'a [SocialAccountEvent],
    chained: Chained,
    state: SocialAccount,
}

/// One `events` row to insert.
struct EventRow<'a> {
    aggregate_id: &'a str,
    sequence: i64,
    event_type: &'static str,
    payload: &'a serde_json::Value,
    metadata: &'a serde_json::Value,
}

impl<'a> Stream<'a> {
    fn new(
        id: &'a AccountId,
        events: &'a [SocialAccountEvent],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, sqlx::Error> {
        let chained = chain(id.as_str(), 0, String::new(), events, metadata)?;
        let mut state = SocialAccount::default();
        for event in events {
            state.apply(event.clone());
        }
        Ok(Self {
            id,
            events,
            chained,
            state,
        })
    }

    fn rows(&self) -> impl Iterator<Item = EventRow<'_>> {
        self.events
            .iter()
            .zip(&self.chained.payloads)
            .zip(&self.chained.metadatas)
            .enumerate()
            .map(|(i, ((event, payload), metadata))| EventRow {
                aggregate_id: self.id.as_str(),
                sequence: i as i64 + 1,
                event_type: event.type_name(),
                payload,
                metadata,
            })
    }
}
