//! The user directory: business users with a mobile number unique per tenant, an
//! optional account name + argon2id password, and sealed personal data.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use miniauth_application::ports::{
    AccountCreation, NewAccountUser, NewUser, Password, PortError, Registration, UserDirectory,
    UserRecord, UserStatus,
};
use miniauth_domain::{AccountId, PhoneNumber, TenantId, UserId};
use sqlx::Row;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{PasswordConcurrency, PasswordCost};
use crate::crypto::{Binding, Keys, Legacy, OpenError};
use crate::db::{is_unique_violation, millis, on_pool, port_error, Db};

/// Users registered from a verified phone (candidates for the orphan sweep).
pub(crate) const ORIGIN_PHONE: &str = "phone_registration";
const ORIGIN_ADMIN: &str = "administration";

macro_rules! user_select {
    ($filter:literal) => {
        concat!(
            "SELECT id, tenant, account, mobile_sealed, nickname_sealed, status, password_hash \
             FROM users WHERE ",
            $filter
        )
    };
}

/// A sealed column of `users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    Mobile,
    Nickname,
    Avatar,
}

impl Column {
    pub(crate) const ALL: [Column; 3] = [Column::Mobile, Column::Nickname, Column::Avatar];

    /// The column's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Mobile => "mobile_sealed",
            Self::Nickname => "nickname_sealed",
            Self::Avatar => "avatar_sealed",
        }
    }

    /// What v1 values of the column were sealed with (their purpose, no owner).
    fn legacy_purpose(self) -> &'static str {
        match self {
            Self::Mobile => "mobile",
            Self::Nickname => "nickname",
            Self::Avatar => "avatar",
        }
    }

    fn purpose(self) -> &'static str {
        match self {
            Self::Mobile => "users.mobile",
            Self::Nickname => "users.nickname",
            Self::Avatar => "users.avatar",
        }
    }
}

/// The keyed lookup hash of a mobile number (`users.mobile_hash`).
pub(crate) fn mobile_hash(keys: &Keys, phone: &PhoneNumber) -> String {
    keys.lookup_hash(
        "mobile",
        &format!("+{} {}", phone.country_code(), phone.pure()),
    )
}

/// The text a mobile number is sealed as (`users.mobile_sealed`).
pub(crate) fn mobile_text(phone: &PhoneNumber) -> String {
    format!("{} {}", phone.country_code(), phone.pure())
}

/// Seals a column value of user `id`, bound to the column and the user.
pub(crate) fn seal_column(keys: &Keys, column: Column, id: i64, text: &str) -> String {
    keys.sealer.seal(
        Binding::new(column.purpose(), &format!("user:{id}")),
        text.as_bytes(),
    )
}

/// Opens a column value of user `id`: v2 bound to the column and the user, or v1 (not
/// re-sealed yet) bound to the column only.
pub(crate) fn open_column(
    keys: &Keys,
    column: Column,
    id: i64,
    sealed: &str,
) -> Result<Vec<u8>, OpenError> {
    keys.sealer.open(
        Binding::new(column.purpose(), &format!("user:{id}")),
        Legacy::Opens(column.legacy_purpose()),
        sealed,
    )
}

/// Which user to find.
enum Key<'a> {
    Id(i64),
    Phone(&'a str, &'a str),
    Account(&'a str, &'a str),
}

/// Whether any user answers: each lookup has a statement of its own.
#[derive(Clone, Copy)]
enum Lookup<'a> {
    /// Any user of the tenant.
    AnyInTenant(&'a TenantId),
    /// The account name within the tenant.
    Account(&'a TenantId, &'a str),
}

/// A user row to insert.
struct NewRow<'a> {
    tenant: &'a TenantId,
    account: Option<&'a str>,
    mobile: Option<&'a PhoneNumber>,
    nickname: Option<&'a str>,
    avatar: Option<&'a str>,
    password_hash: Option<String>,
    origin: &'a str,
}

/// `UserDirectory` on the `users` table. Cheap to clone.
#[derive(Clone)]
pub struct SqlUserDirectory {
    db: Db,
    keys: Keys,
    argon2: Argon2<'static>,
    gate: PasswordGate,
    /// A hash of nothing in particular, verified against when the account is unknown.
    dummy: std::sync::Arc<std::sync::OnceLock<String>>,
}

impl SqlUserDirectory {
    pub(crate) fn new(
        db: Db,
        keys: Keys,
        cost: PasswordCost,
        concurrency: PasswordConcurrency,
    ) -> Result<Self, String> {
        if concurrency.concurrent == 0 {
            return Err("password hashing needs at least one concurrent turn".into());
        }
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| format!("argon2 parameters: {e}"))?;
        Ok(Self {
            db,
            keys,
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            gate: PasswordGate::new(concurrency),
            dummy: Default::default(),
        })
    }

    /// Uniqueness per tenant comes from the (tenant, mobile_hash) key.
    fn mobile_hash(&self, phone: &PhoneNumber) -> String {
        mobile_hash(&self.keys, phone)
    }

    fn seal(&self, column: Column, id: i64, text: Option<&str>) -> Option<String> {
        text.map(|t| seal_column(&self.keys, column, id, t))
    }

    fn open(
        &self,
        column: Column,
        id: i64,
        sealed: Option<String>,
    ) -> Result<Option<String>, PortError> {
        sealed
            .map(|s| {
                let name = column.legacy_purpose();
                open_column(&self.keys, column, id, &s)
                    .map_err(|e| PortError::internal(format!("users.{name}"), e))
                    .and_then(|b| {
                        String::from_utf8(b).map_err(|e| {
                            // Not `e`: it holds the opened bytes.
                            PortError::internal(format!("users.{name}: not UTF-8"), e.utf8_error())
                        })
                    })
            })
            .transpose()
    }

    fn record(
        &self,
        id: i64,
        tenant: String,
        account: Option<String>,
        mobile: Option<String>,
        nickname: Option<String>,
        status: String,
    ) -> Result<UserRecord, PortError> {
        let mobile = match self.open(Column::Mobile, id, mobile)? {
            Some(text) => {
                let (cc, pure) = text
                    .split_once(' ')
                    .ok_or_else(|| PortError::Internal("users.mobile: malformed".into()))?;
                Some(
                    PhoneNumber::new(pure, cc)
                        .map_err(|_| PortError::Internal("users.mobile: invalid".into()))?,
                )
            }
            None => None,
        };
        Ok(UserRecord {
            id: UserId::new(id).map_err(|_| PortError::Internal("users.id: invalid".into()))?,
            tenant: TenantId::parse(&tenant)
                .map_err(|_| PortError::Internal("users.tenant: invalid".into()))?,
            account,
            mobile,
            nickname: self.open(Column::Nickname, id, nickname)?,
            status: match status.as_str() {
                "active" => UserStatus::Active,
                _ => UserStatus::Disabled,
            },
        })
    }

    async fn find(&self, key: Key<'_>) -> Result<Option<(UserRecord, Option<String>)>, PortError> {
        let row = on_pool!(&self.db.pool, p => {
            let q = match key {
                Key::Id(id) => sqlx::query(user_select!("id = $1")).bind(id),
                Key::Phone(tenant, hash) => sqlx::query(user_select!("tenant = $1 AND mobile_hash = $2"))
                    .bind(tenant)
                    .bind(hash),
                Key::Account(tenant, account) => sqlx::query(user_select!("tenant = $1 AND account = $2"))
                    .bind(tenant)
                    .bind(account),
            };
            q.fetch_optional(p).await.map_err(port_error)?.map(|r| (
                    r.try_get::<i64, _>("id"),
                    r.try_get::<String, _>("tenant"),
                    r.try_get::<Option<String>, _>("account"),
                    r.try_get::<Option<String>, _>("mobile_sealed"),
                    r.try_get::<Option<String>, _>("nickname_sealed"),
                    r.try_get::<String, _>("status"),
                    r.try_get::<Option<String>, _>("password_hash"),
            ))
        });
        let Some((id, tenant, account, mobile, nickname, status, hash)) = row else {
            return Ok(None);
        };
        let record = self.record(
            id.map_err(port_error)?,
            tenant.map_err(port_error)?,
            account.map_err(port_error)?,
            mobile.map_err(port_error)?,
            nickname.map_err(port_error)?,
            status.map_err(port_error)?,
        )?;
        Ok(Some((record, hash.map_err(port_error)?)))
    }

    /// Inserts a user; `Ok(Err(_))` when a unique key (account, mobile) refused it.
    async fn insert(&self, new: NewRow<'_>) -> Result<Result<i64, sqlx::Error>, PortError> {
        let NewRow {
            tenant,
            account,
            mobile,
            nickname,
            avatar,
            password_hash,
            origin,
        } = new;
        let mobile_hash = mobile.map(|m| self.mobile_hash(m));
        let mobile_text = mobile.map(mobile_text);
        let _turn = self.db.write_turn().await;
        // The sealed columns name the row's id in their associated data: the row is
        // inserted first, sealed in the same transaction once its id is known.
        let result = on_pool!(&self.db.pool, p => {
            async {
                let mut tx = p.begin().await?;
                let id = sqlx::query(
                    "INSERT INTO users (tenant, account, mobile_hash, password_hash, status, \
                     origin, created_at) VALUES ($1, $2, $3, $4, 'active', $5, $6) RETURNING id",
                )
                .bind(tenant.as_str())
                .bind(account)
                .bind(mobile_hash)
                .bind(password_hash)
                .bind(origin)
                .bind(millis(self.db.now()))
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get::<i64, _>("id"))?;
                sqlx::query(
                    "UPDATE users SET mobile_sealed = $1, nickname_sealed = $2, avatar_sealed = $3 \
                     WHERE id = $4",
                )
                .bind(self.seal(Column::Mobile, id, mobile_text.as_deref()))
                .bind(self.seal(Column::Nickname, id, nickname))
                .bind(self.seal(Column::Avatar, id, avatar))
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok::<i64, sqlx::Error>(id)
            }
            .await
        });
        match result {
            Ok(id) => Ok(Ok(id)),
            Err(e) if is_unique_violation(&e) => Ok(Err(e)),
            Err(e) => Err(port_error(e)),
        }
    }

    /// Whether a user answers `lookup`.
    async fn exists(&self, lookup: Lookup<'_>) -> Result<bool, PortError> {
        on_pool!(&self.db.pool, p => {
            let query = match lookup {
                Lookup::AnyInTenant(tenant) => {
                    sqlx::query("SELECT 1 AS one FROM users WHERE tenant = $1 LIMIT 1")
                        .bind(tenant.as_str())
                }
                Lookup::Account(tenant, account) => {
                    sqlx::query("SELECT 1 AS one FROM users WHERE tenant = $1 AND account = $2")
                        .bind(tenant.as_str())
                        .bind(account)
                }
            };
            Ok(query.fetch_optional(p).await.map_err(port_error)?.is_some())
        })
    }

    async fn hash_password(&self, password: &Password) -> Result<String, PortError> {
        let argon2 = self.argon2.clone();
        let password = password.clone();
        let turn = self.gate.turn().await?;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            argon2
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| PortError::internal("argon2", e.to_string()))
        })
        .await
        .map_err(|e| PortError::internal("argon2 task", e))?
    }

    async fn verify_password(
        &self,
        hash: Option<String>,
        password: &Password,
    ) -> Result<bool, PortError> {
        let argon2 = self.argon2.clone();
        let password = password.clone();
        // An unknown account costs as much as a wrong password: timing tells nothing.
        let dummy = match self.dummy.get() {
            Some(d) => d.clone(),
            None => {
                let d = self
                    .hash_password(&Password::new("miniauth timing equaliser"))
                    .await?;
                self.dummy.get_or_init(|| d).clone()
            }
        };
        let turn = self.gate.turn().await?;
        tokio::task::spawn_blocking(move || {
            // Held until the hash is done, even if the request gave up waiting.
            let _turn = turn;
            let (hash, known) = match hash {
                Some(h) => (h, true),
                None => (dummy, false),
            };
            // A BCrypt hash imported from GitEgg (`miniauth import gitegg`): verified
            // once, then replaced by an argon2id hash (see `check_password`).
            if is_bcrypt(&hash) {
                let ok = bcrypt::verify(password.expose(), &hash).unwrap_or(false);
                return Ok(ok && known);
            }
            let parsed = PasswordHash::new(&hash)
                .map_err(|e| PortError::internal("stored password hash", e.to_string()))?;
            let ok = argon2
                .verify_password(password.expose().as_bytes(), &parsed)
                .is_ok();
            Ok(ok && known)
        })
        .await
        .map_err(|e| PortError::internal("argon2 task", e))?
    }
}

/// Whether a stored hash is BCrypt (`$2a$`, `$2b$`, `$2y$`), as imported from GitEgg.
fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

impl SqlUserDirectory {
    /// Replaces a verified BCrypt hash by an argon2id hash of the same password (only
    /// if the row still holds that BCrypt hash: a concurrent login rehashed it first).
    async fn rehash(&self, id: UserId, old: &str, password: &Password) -> Result<(), PortError> {
        let new = self.hash_password(password).await?;
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
                .bind(new)
                .bind(id.get())
                .bind(old)
                .execute(p)
                .await
                .map_err(port_error)?;
        });
        Ok(())
    }
}

/// Admits at most `concurrent + queue` password hashes at a time and runs at most
/// `concurrent` of them: each argon2id hash holds ~19 MiB, so a flood of password
/// attempts must not spawn them without bound.
#[derive(Clone)]
struct PasswordGate {
    /// Hashes running or waiting.
    admitted: Arc<Semaphore>,
    /// Hashes running.
    running: Arc<Semaphore>,
    max_wait: std::time::Duration,
}

/// The turn of one hash: both permits, released when the hash is done.
struct Turn {
    _admitted: OwnedSemaphorePermit,
    _running: OwnedSemaphorePermit,
}

/// Seconds a refused client is told to wait.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

impl PasswordGate {
    fn new(concurrency: PasswordConcurrency) -> Self {
        Self {
            admitted: Arc::new(Semaphore::new(concurrency.concurrent + concurrency.queue)),
            running: Arc::new(Semaphore::new(concurrency.concurrent)),
            max_wait: concurrency.max_wait,
        }
    }

    async fn turn(&self) -> Result<Turn, PortError> {
        let busy = || PortError::Busy {
            what: "password hashing".into(),
            retry_after_secs: BUSY_RETRY_AFTER_SECS,
        };
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| busy())?;
        let running =
            tokio::time::timeout(self.max_wait, Arc::clone(&self.running).acquire_owned())
                .await
                .map_err(|_| busy())?
                .map_err(|_| busy())?;
        Ok(Turn {
            _admitted: admitted,
            _running: running,
        })
    }
}

#[async_trait]
impl UserDirectory for SqlUserDirectory {
    async fn find_by_phone(
        &self,
        tenant: &TenantId,
        phone: &PhoneNumber,
    ) -> Result<Option<UserRecord>, PortError> {
        let hash = self.mobile_hash(phone);
        let found = self
            .find(Key::Phone(tenant.as_str(), &hash))
            .await?
            .map(|(user, _)| user);
        // The lookup hash is not bound to its row, the sealed mobile is: a hash moved
        // to another user (by SQL) finds a user whose own mobile is another number.
        if let Some(user) = &found {
            if user.mobile.as_ref() != Some(phone) {
                return Err(PortError::Internal(
                    "users.mobile_hash does not match the row's sealed mobile".into(),
                ));
            }
        }
        Ok(found)
    }

    async fn get(&self, id: UserId) -> Result<Option<UserRecord>, PortError> {
        Ok(self.find(Key::Id(id.get())).await?.map(|(user, _)| user))
    }

    async fn find_by_account(
        &self,
        tenant: &TenantId,
        account: &str,
    ) -> Result<Option<UserRecord>, PortError> {
        Ok(self
            .find(Key::Account(tenant.as_str(), account.trim()))
            .await?
            .map(|(user, _)| user))
    }

    async fn register(&self, user: NewUser) -> Result<Registration, PortError> {
        match self
            .insert(NewRow {
                tenant: &user.tenant,
                account: None,
                mobile: Some(&user.mobile),
                nickname: user.nickname.as_deref(),
                avatar: user.avatar_url.as_deref(),
                password_hash: None,
                origin: ORIGIN_PHONE,
            })
            .await?
        {
            Ok(id) => Ok(Registration::Created(
                self.get(
                    UserId::new(id).map_err(|_| PortError::Internal("users.id: invalid".into()))?,
                )
                .await?
                .ok_or_else(|| PortError::Internal("registered user vanished".into()))?,
            )),
            Err(_) => Ok(Registration::PhoneTaken),
        }
    }

    async fn create_account(&self, user: NewAccountUser) -> Result<AccountCreation, PortError> {
        let taken = Lookup::Account(&user.tenant, &user.account);
        if self.exists(taken).await? {
            return Ok(AccountCreation::AccountTaken);
        }
        let hash = self.hash_password(&user.password).await?;
        match self
            .insert(NewRow {
                tenant: &user.tenant,
                account: Some(&user.account),
                mobile: user.mobile.as_ref(),
                nickname: user.nickname.as_deref(),
                avatar: None,
                password_hash: Some(hash),
                origin: ORIGIN_ADMIN,
            })
            .await?
        {
            Ok(id) => Ok(AccountCreation::Created(
                self.get(
                    UserId::new(id).map_err(|_| PortError::Internal("users.id: invalid".into()))?,
                )
                .await?
                .ok_or_else(|| PortError::Internal("created user vanished".into()))?,
            )),
            // Which key was it? Ask, rather than parse engine-specific messages.
            Err(_) if self.exists(taken).await? => Ok(AccountCreation::AccountTaken),
            Err(_) => Ok(AccountCreation::PhoneTaken),
        }
    }

    async fn discard_unbound(&self, id: UserId) -> Result<(), PortError> {
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            sqlx::query(
                "DELETE FROM users WHERE id = $1 AND password_hash IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM bindings WHERE bindings.user_id = $1) \
                 AND NOT EXISTS (SELECT 1 FROM account_view WHERE account_view.bound_user = $1)",
            )
            .bind(id.get())
            .execute(p)
            .await
            .map_err(port_error)?;
        });
        Ok(())
    }

    async fn set_status(
        &self,
        id: UserId,
        status: UserStatus,
    ) -> Result<Option<UserRecord>, PortError> {
        let label = match status {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        };
        let updated = {
            let _turn = self.db.write_turn().await;
            on_pool!(&self.db.pool, p => {
                sqlx::query("UPDATE users SET status = $1 WHERE id = $2")
                    .bind(label)
                    .bind(id.get())
                    .execute(p)
                    .await
                    .map_err(port_error)?
                    .rows_affected()
            })
        };
        if updated == 0 {
            return Ok(None);
        }
        self.get(id).await
    }

    async fn tenant_exists(&self, tenant: &TenantId) -> Result<bool, PortError> {
        self.exists(Lookup::AnyInTenant(tenant)).await
    }

    async fn erase_registered(&self, id: UserId, erased: &AccountId) -> Result<bool, PortError> {
        let turn = self.db.write_turn().await;
        let cleared = on_pool!(&self.db.pool, p => {
            sqlx::query(
                "UPDATE users SET mobile_hash = NULL, mobile_sealed = NULL, \
                 nickname_sealed = NULL, avatar_sealed = NULL \
                 WHERE id = $1 AND origin = $2 AND account IS NULL AND password_hash IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM bindings WHERE bindings.user_id = $1 \
                 AND NOT (bindings.appid = $3 AND bindings.openid = $4))",
            )
            .bind(id.get())
            .bind(ORIGIN_PHONE)
            .bind(erased.appid().as_str())
            .bind(erased.openid().as_str())
            .execute(p)
            .await
            .map_err(port_error)?
            .rows_affected()
        });
        drop(turn);
        if cleared > 0 {
            self.db.scrub_deleted().await;
        }
        Ok(cleared > 0)
    }

    async fn check_password(
        &self,
        tenant: &TenantId,
        account: &str,
        password: &Password,
    ) -> Result<Option<UserRecord>, PortError> {
        let found = self.find(Key::Account(tenant.as_str(), account)).await?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, None),
        };
        let imported = hash.as_deref().filter(|h| is_bcrypt(h)).map(str::to_owned);
        if !self.verify_password(hash, password).await? {
            return Ok(None);
        }
        if let (Some(user), Some(old)) = (&user, imported) {
            self.rehash(user.id, &old, password).await?;
        }
        Ok(user)
    }
}
