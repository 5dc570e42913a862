//! How to reach the store, and the server key.

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use chrono::Duration;
use thiserror::Error;

/// The default store: an SQLite file under `./data`, created when missing.
pub const DEFAULT_URL: &str = "sqlite://data/miniauth.db";

/// The 32-byte key that seals session keys, data keys and key material (AES-256-GCM).
/// Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKey([u8; 32]);

/// A server key given in configuration that is not 32 bytes of base64 or hex.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "the server key must be 32 bytes, written as base64 (44 characters) or hex (64 characters)"
)]
pub struct InvalidServerKey;

impl ServerKey {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses a key from configuration or the environment: base64 (standard or URL-safe)
    /// or hex of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<Self, InvalidServerKey> {
        let text = text.trim();
        let bytes = if text.len() == 64 {
            hex::decode(text).map_err(|_| InvalidServerKey)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
                .map_err(|_| InvalidServerKey)?
        };
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| InvalidServerKey)?;
        Ok(Self(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// The key as base64, to put in a configuration file or secret store.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

/// How costly password hashing (argon2id) is. The default follows OWASP's minimum
/// (19 MiB, 2 passes); tests use [`PasswordCost::testing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl PasswordCost {
    /// The cheapest valid parameters: for tests only, never for real passwords.
    pub fn testing() -> Self {
        Self {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }
}

/// How many password hashes (argon2id, ~19 MiB each at the default cost) run at once,
/// and how many more may wait for a turn; beyond that a check is refused as busy
/// (503 + `Retry-After`), so memory stays bounded under a flood of password attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordConcurrency {
    /// Hashes computed at once (at least 1); about the number of cores.
    pub concurrent: usize,
    /// Checks that may wait for a turn; 0 refuses whenever all turns are taken.
    pub queue: usize,
    /// How long a waiting check waits for its turn before it is refused.
    pub max_wait: std::time::Duration,
}

impl Default for PasswordConcurrency {
    /// One hash per core, a queue of four per core, 2 s of waiting at most.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            concurrent: cores,
            queue: 4 * cores,
            max_wait: std::time::Duration::from_secs(2),
        }
    }
}

/// The `[store]` section of the configuration.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub url: String,
    /// Largest number of pooled connections (per instance).
    pub max_connections: u32,
    /// Where the embedded engine keeps a generated server key (`server.key`).
    pub data_dir: PathBuf,
    /// The server key; required with PostgreSQL (every instance needs the same one).
    pub server_key: Option<ServerKey>,
    /// How long a refresh token lives (sliding: each rotation issues a fresh one).
    pub refresh_ttl: Duration,
    /// How long a refresh-token family (a login session) lives at most, rotations or
    /// not.
    pub refresh_max_lifetime: Duration,
    /// argon2id cost for passwords.
    pub password_cost: PasswordCost,
    /// How many password hashes run at once, and how many wait.
    pub password_concurrency: PasswordConcurrency,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            max_connections: 10,
            data_dir: PathBuf::from("data"),
            server_key: None,
            refresh_ttl: Duration::days(30),
            refresh_max_lifetime: Duration::days(90),
            password_cost: PasswordCost::default(),
            password_concurrency: PasswordConcurrency::default(),
        }
    }
}

/// Why the store could not be opened or used.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A configuration value is out of range (pool size, password cost).
    #[error("store configuration: {0}")]
    InvalidConfig(String),
    /// The URL is neither `sqlite:` nor `postgres:`, or does not parse.
    #[error("store url: {0}")]
    BadUrl(String),
    /// PostgreSQL needs a server key shared by every instance.
    #[error(
        "no server key configured: with PostgreSQL every instance must share one; \
         set [store] server_key (or MINIAUTH__STORE__SERVER_KEY, or the variable named \
         by [store] server_key_env) to 32 bytes of base64 (`openssl rand -base64 32`)"
    )]
    MissingServerKey,
    /// The server key file could not be read, created, or is malformed.
    #[error("server key file {path}: {reason}")]
    ServerKeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The database refused or is unreachable.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Stored data could not be opened (wrong server key, corrupted rows).
    #[error("stored data: {0}")]
    Corrupt(String),
    /// A store operation failed as a port reports it.
    #[error(transparent)]
    Port(#[from] miniauth_application::ports::PortError),
    /// Reading the event log failed.
    #[error("event log: {0}")]
    EventLog(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_key_parses_base64_and_hex_and_hides_itself() {
        let key = ServerKey::generate();
        assert_eq!(ServerKey::parse(&key.to_base64()).unwrap(), key);
        assert_eq!(ServerKey::parse(&hex::encode(key.bytes())).unwrap(), key);
        assert!(ServerKey::parse("c2hvcnQ=").is_err());
        assert!(ServerKey::parse("not a key").is_err());
        assert_eq!(format!("{key:?}"), "ServerKey(<redacted>)");
        let config = StoreConfig {
            server_key: Some(key.clone()),
            ..StoreConfig::default()
        };
        assert!(!format!("{config:?}").contains(&key.to_base64()));
    }
}
