//! The user directory: business users with a mobile number unique per tenant, an
//! optional account name + argon2id password, and sealed personal data.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use miniauth_application::ports::{
    AccountCreation, NewAccountUser, NewUser, Password, PortError, Registration, UserDirectory,
    UserRecord, UserStatus,
};
use miniauth_domain::{PhoneNumber, TenantId, UserId};
use sqlx::Row;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{PasswordConcurrency, PasswordCost};
use crate::crypto::Keys;
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

/// Which user to find.
enum Key<'a> {
    Id(i64),
    Phone(&'a str, &'a str),
    Account(&'a str, &'a str),
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
        self.keys.lookup_hash(
            "mobile",
            &format!("+{} {}", phone.country_code(), phone.pure()),
        )
    }

    fn seal(&self, purpose: &str, text: Option<&str>) -> Option<String> {
        text.map(|t| self.keys.sealer.seal(purpose, t.as_bytes()))
    }

    fn open(&self, purpose: &str, sealed: Option<String>) -> Result<Option<String>, PortError> {
        sealed
            .map(|s| {
                self.keys
                    .sealer
                    .open(purpose, &s)
                    .map_err(|e| PortError::Internal(format!("users.{purpose}: {e}")))
                    .and_then(|b| {
                        String::from_utf8(b)
                            .map_err(|_| PortError::Internal(format!("users.{purpose}: not UTF-8")))
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
        let mobile = match self.open("mobile", mobile)? {
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
            nickname: self.open("nickname", nickname)?,
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
        let mobile_sealed = mobile.map(|m| {
            self.keys.sealer.seal(
                "mobile",
                format!("{} {}", m.country_code(), m.pure()).as_bytes(),
            )
        });
        let _turn = self.db.write_turn().await;
        let result = on_pool!(&self.db.pool, p => {
            sqlx::query(
                "INSERT INTO users (tenant, account, mobile_hash, mobile_sealed, nickname_sealed, \
                 avatar_sealed, password_hash, status, origin, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9) RETURNING id",
            )
            .bind(tenant.as_str())
            .bind(account)
            .bind(mobile_hash)
            .bind(mobile_sealed)
            .bind(self.seal("nickname", nickname))
            .bind(self.seal("avatar", avatar))
            .bind(password_hash)
            .bind(origin)
            .bind(millis(chrono::Utc::now()))
            .fetch_one(p)
            .await
            .and_then(|r| r.try_get::<i64, _>("id"))
        });
        match result {
            Ok(id) => Ok(Ok(id)),
            Err(e) if is_unique_violation(&e) => Ok(Err(e)),
            Err(e) => Err(port_error(e)),
        }
    }

    async fn exists(&self, filter: &str, tenant: &str, value: &str) -> Result<bool, PortError> {
        on_pool!(&self.db.pool, p => {
            Ok(sqlx::query(&format!("SELECT 1 AS one FROM users WHERE tenant = $1 AND {filter} = $2"))
                .bind(tenant)
                .bind(value)
                .fetch_optional(p)
                .await
                .map_err(port_error)?
                .is_some())
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
                .map_err(|e| PortError::Internal(format!("argon2: {e}")))
        })
        .await
        .map_err(|e| PortError::Internal(format!("argon2 task: {e}")))?
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
            let parsed = PasswordHash::new(&hash)
                .map_err(|e| PortError::Internal(format!("stored password hash: {e}")))?;
            let ok = argon2
                .verify_password(password.expose().as_bytes(), &parsed)
                .is_ok();
            Ok(ok && known)
        })
        .await
        .map_err(|e| PortError::Internal(format!("argon2 task: {e}")))?
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
        Ok(self
            .find(Key::Phone(tenant.as_str(), &hash))
            .await?
            .map(|(user, _)| user))
    }

    async fn get(&self, id: UserId) -> Result<Option<UserRecord>, PortError> {
        Ok(self.find(Key::Id(id.get())).await?.map(|(user, _)| user))
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
        let tenant = user.tenant.as_str();
        if self.exists("account", tenant, &user.account).await? {
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
            Err(_) if self.exists("account", tenant, &user.account).await? => {
                Ok(AccountCreation::AccountTaken)
            }
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
        if self.verify_password(hash, password).await? {
            Ok(user)
        } else {
            Ok(None)
        }
    }
}
