//! The two engines ([`Engine`]) behind one handle, and what is shared: connecting, migrations,
//! the write lock of the embedded engine, error mapping.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use miniauth_application::ports::{Chain, Clock, PortError};
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::config::{ServerKey, StoreConfig, StoreError};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// How long SQLite waits for a lock held by another connection or process.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for a PostgreSQL connection before it is answered 503:
/// well inside the default request timeout, so an outage is reported, not timed out.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which engine a store runs on: the one list of engines, for the store, its tests,
/// the end-to-end tests and the load tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The embedded default.
    Sqlite,
    /// Production and scale-out.
    Postgres,
}

impl Engine {
    /// Every engine, the embedded default first.
    pub const ALL: [Engine; 2] = [Engine::Sqlite, Engine::Postgres];

    /// The engine a store URL names: `sqlite:…`, or `postgres:`/`postgresql:`.
    pub fn of_url(url: &str) -> Option<Self> {
        let url = url.trim();
        if url.starts_with("sqlite:") {
            Some(Engine::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Engine::Postgres)
        } else {
            None
        }
    }

    /// Its lowercase name (`sqlite`, `postgres`), as command lines and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an engine's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown store engine {0:?} (sqlite or postgres)")]
pub struct UnknownEngine(String);

impl FromStr for Engine {
    type Err = UnknownEngine;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Engine::ALL
            .into_iter()
            .find(|engine| engine.name() == name)
            .ok_or_else(|| UnknownEngine(name.to_owned()))
    }
}

/// The engine's pool: one variant per [`Engine`], holding that engine's sqlx pool.
#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Pool {
    pub(crate) fn engine(&self) -> Engine {
        match self {
            Pool::Sqlite(_) => Engine::Sqlite,
            Pool::Postgres(_) => Engine::Postgres,
        }
    }
}

/// Runs the same code against whichever pool the store has: each arm is compiled for
/// its engine, so one body of generic sqlx calls serves both.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A transaction on the engine's pool: one variant per [`Engine`], like [`Pool`], so
/// that the steps of one transaction can be functions of their own.
pub(crate) enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs the same code on whichever transaction it is (see [`on_pool!`]).
macro_rules! on_tx {
    ($tx:expr, $t:ident => $body:expr) => {
        match $tx {
            $crate::db::Tx::Sqlite($t) => $body,
            $crate::db::Tx::Postgres($t) => $body,
        }
    };
}
pub(crate) use on_tx;

impl Pool {
    /// Begins a transaction.
    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }
}

impl Tx {
    pub(crate) fn engine(&self) -> Engine {
        match self {
            Tx::Sqlite(_) => Engine::Sqlite,
            Tx::Postgres(_) => Engine::Postgres,
        }
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        on_tx!(self, t => t.commit().await)
    }
}

/// A connected database, and the clock that dates what the store writes.
#[derive(Clone)]
pub(crate) struct Db {
    pub(crate) pool: Pool,
    /// The application's clock, so that tests can move the store's time too.
    clock: Arc<dyn Clock>,
    /// SQLite has one writer at a time; taking turns in-process avoids its
    /// lock-upgrade failures (SQLITE_BUSY) when a transaction reads before it writes.
    writer: Arc<Mutex<()>>,
}

/// Held while a write transaction runs (SQLite only; PostgreSQL locks rows itself).
pub(crate) struct WriteTurn(#[allow(dead_code)] Option<OwnedMutexGuard<()>>);

impl Db {
    pub(crate) async fn connect(
        config: &StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let url = config.url.trim();
        let max = config.max_connections.max(1);
        let pool = match Engine::of_url(url) {
            Some(Engine::Sqlite) => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|e| StoreError::BadUrl(e.to_string()))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
                    // Deleted rows (an erased data key, cleared user columns) are
                    // overwritten with zeros, not left in free pages of the file.
                    .pragma("secure_delete", "ON");
                let file = options.get_filename().to_string_lossy().into_owned();
                let in_memory =
                    file.is_empty() || file == ":memory:" || url.contains("mode=memory");
                let pool = if in_memory {
                    // Every connection to `sqlite::memory:` is a database of its own: keep
                    // exactly one, forever (tests and throwaway runs).
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                } else {
                    create_parent_dir(options.get_filename())?;
                    SqlitePoolOptions::new().max_connections(max)
                };
                Pool::Sqlite(
                    pool.acquire_timeout(Duration::from_secs(30))
                        .connect_with(options)
                        .await?,
                )
            }
            Some(Engine::Postgres) => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(PG_ACQUIRE_TIMEOUT)
                    .connect(url)
                    .await?,
            ),
            None => {
                return Err(StoreError::BadUrl(
                    "must start with sqlite: or postgres://".into(),
                ))
            }
        };
        Ok(Self {
            pool,
            clock,
            writer: Arc::new(Mutex::new(())),
        })
    }

    /// Whether SQLite overwrites deleted content (`PRAGMA secure_delete`); `None` on
    /// PostgreSQL, whose dead tuples go when VACUUM reclaims them.
    pub(crate) async fn secure_delete(&self) -> Result<Option<bool>, sqlx::Error> {
        match &self.pool {
            Pool::Sqlite(p) => Ok(Some(
                sqlx::query_scalar::<_, i64>("PRAGMA secure_delete")
                    .fetch_one(p)
                    .await?
                    == 1,
            )),
            Pool::Postgres(_) => Ok(None),
        }
    }

    /// After deleting personal data (erasure): on SQLite, copies the write-ahead log
    /// into the database file and truncates it, so that the old page images the log
    /// still holds (with what was deleted) go too; `secure_delete` already zeroed the
    /// deleted content in the file. Best effort: a checkpoint that readers hold back
    /// completes at the next one. A no-op on PostgreSQL (VACUUM reclaims dead tuples).
    pub(crate) async fn scrub_deleted(&self) {
        if let Pool::Sqlite(p) = &self.pool {
            if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(p)
                .await
            {
                tracing::warn!(%error, "the write-ahead log was not truncated after an erasure");
            }
        }
    }

    pub(crate) fn engine(&self) -> Engine {
        self.pool.engine()
    }

    /// The time, by the application's clock.
    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    pub(crate) fn is_postgres(&self) -> bool {
        self.engine() == Engine::Postgres
    }

    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    /// Waits for this process's turn to write (SQLite); a no-op on PostgreSQL.
    pub(crate) async fn write_turn(&self) -> WriteTurn {
        match self.pool {
            Pool::Sqlite(_) => WriteTurn(Some(self.writer.clone().lock_owned().await)),
            Pool::Postgres(_) => WriteTurn(None),
        }
    }
}

fn create_parent_dir(file: &Path) -> Result<(), StoreError> {
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::BadUrl(format!("cannot create directory {}: {e}", parent.display()))
        })?;
    }
    Ok(())
}

/// The server key: from configuration, or — for the embedded engine only — generated
/// once into `<data_dir>/server.key` (mode 0600) and reused.
pub(crate) fn server_key(config: &StoreConfig, engine: Engine) -> Result<ServerKey, StoreError> {
    if let Some(key) = &config.server_key {
        return Ok(key.clone());
    }
    if engine == Engine::Postgres {
        return Err(StoreError::MissingServerKey);
    }
    key_file(&config.data_dir.join("server.key"))
}

fn key_file(path: &PathBuf) -> Result<ServerKey, StoreError> {
    use std::io::Write;
    let fail = |reason: String| StoreError::ServerKeyFile {
        path: path.clone(),
        reason,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            let key = ServerKey::generate();
            file.write_all(key.bytes())
                .and_then(|_| file.sync_all())
                .map_err(|e| fail(e.to_string()))?;
            tracing::info!(path = %path.display(), "generated a new server key");
            Ok(key)
        }
        // Another process created it first, or it exists from an earlier start.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)
                    .map_err(|e| fail(e.to_string()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "the server key file is readable by others; chmod 600 it");
                }
            }
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|_| fail("must hold exactly 32 bytes".into()))?;
            Ok(ServerKey::new(bytes))
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// A database failure as the ports report it: the cause goes to the log, the message
/// stays generic.
pub(crate) fn port_error(error: sqlx::Error) -> PortError {
    if is_unavailable(&error) {
        tracing::error!(error = %Chain(&error), "database unreachable");
        PortError::unavailable("the database", error)
    } else {
        PortError::internal("database", error)
    }
}

/// Whether the database is down or going away rather than refusing the statement:
/// no connection, or PostgreSQL's classes 08 (connection exception) and 57P
/// (operator intervention: shutting down, starting up). Clients should retry these.
pub(crate) fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// Whether a statement failed on a unique constraint.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

/// Unix milliseconds, the stored time format of both engines.
pub(crate) fn millis(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_millis()
}

/// A stored time (Unix milliseconds) of `table`, back as a time.
pub(crate) fn from_millis(
    table: &str,
    ms: i64,
) -> Result<chrono::DateTime<chrono::Utc>, PortError> {
    chrono::DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| PortError::Internal(format!("{table}: a time is out of range").into()))
}

#[cfg(test)]
mod unavailable_tests {
    use super::*;

    #[test]
    fn connection_loss_is_unavailable_and_other_errors_are_internal() {
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::PoolClosed));
        assert!(matches!(
            port_error(sqlx::Error::PoolClosed),
            PortError::Unavailable(_)
        ));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(matches!(
            port_error(sqlx::Error::RowNotFound),
            PortError::Internal(_)
        ));
    }
}

#[cfg(test)]
mod engine_tests {
    use super::*;

    #[test]
    fn an_engine_is_named_by_its_url_and_its_name() {
        assert_eq!(
            Engine::of_url("sqlite://data/miniauth.db"),
            Some(Engine::Sqlite)
        );
        assert_eq!(Engine::of_url(" postgres://u@h/db"), Some(Engine::Postgres));
        assert_eq!(
            Engine::of_url("postgresql://u@h/db"),
            Some(Engine::Postgres)
        );
        assert_eq!(Engine::of_url("mysql://u@h/db"), None);
        for engine in Engine::ALL {
            assert_eq!(engine.to_string().parse::<Engine>(), Ok(engine));
        }
        assert!("SQLite".parse::<Engine>().is_err());
    }
}
