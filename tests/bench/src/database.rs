//! The bench's own PostgreSQL database, and what its backends were doing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::Connection;

use crate::procfs::{parent_pid, POSTMASTER};
use crate::report::{PostgresInfo, WaitShare};

/// Samples `pg_stat_activity` of one database every 20 ms: where its backends spend
/// their time (running, waiting on a lock, flushing WAL, or idle in a transaction while
/// the client works).
pub(crate) struct WaitSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(BTreeMap<String, u64>, u64)>,
}

impl WaitSampler {
    pub(crate) async fn start(url: Option<&str>) -> Option<Self> {
        let mut conn = connect_pg(url?).await.ok()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            let mut samples = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let states: Result<Vec<String>, _> = sqlx::query_scalar(
                    "SELECT CASE WHEN state = 'idle' THEN 'idle' \
                     WHEN state LIKE 'idle in transaction%' THEN 'idle in transaction (waiting for the client)' \
                     WHEN wait_event IS NULL THEN 'running' \
                     ELSE wait_event_type || ':' || wait_event END \
                     FROM pg_stat_activity WHERE datname = current_database() \
                     AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                )
                .fetch_all(&mut conn)
                .await;
                if let Ok(states) = states {
                    samples += 1;
                    for state in states {
                        *counts.entry(state).or_default() += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            conn.close().await.ok();
            (counts, samples)
        });
        Some(Self { stop, task })
    }

    pub(crate) async fn stop(self) -> Vec<WaitShare> {
        self.stop.store(true, Ordering::Relaxed);
        let Ok((counts, samples)) = self.task.await else {
            return Vec::new();
        };
        let total: u64 = counts.values().sum();
        let mut shares: Vec<WaitShare> = counts
            .into_iter()
            .map(|(state, n)| WaitShare {
                state,
                percent: n as f64 * 100.0 / total.max(1) as f64,
                mean_backends: n as f64 / samples.max(1) as f64,
            })
            .collect();
        shares.sort_by(|a, b| b.percent.total_cmp(&a.percent));
        shares
    }
}

/// Whether a `postgres://user@host:port/db` URL names a loopback host.
pub(crate) fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    matches!(host, "127.0.0.1" | "localhost" | "::1")
}

/// `postgres://u@h:p/old?x` with the database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or_default();
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// A fresh PostgreSQL database, dropped at the end.
pub(crate) struct Database {
    admin_url: String,
    pub(crate) name: String,
    pub(crate) url: String,
}

impl Database {
    pub(crate) async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!(
            "miniauth_bench_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut conn = connect_pg(admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating the database {name}"))?;
        // The server's postmaster is our backend's parent: count only its processes as
        // PostgreSQL's CPU (other clusters on the machine are not this benchmark's).
        if let Ok(backend) = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
        {
            if let Some(parent) = u32::try_from(backend).ok().and_then(parent_pid) {
                let _ = POSTMASTER.set(parent);
            }
        }
        conn.close().await.ok();
        Ok(Self {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        })
    }

    pub(crate) async fn info(&self) -> anyhow::Result<PostgresInfo> {
        let mut conn = connect_pg(&self.url).await?;
        let version: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(&mut conn)
            .await?;
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT name, setting, unit FROM pg_settings WHERE name IN \
             ('synchronous_commit', 'fsync', 'wal_sync_method', 'full_page_writes', \
              'commit_delay', 'commit_siblings', 'shared_buffers', 'max_connections', \
              'wal_level', 'wal_buffers', 'max_wal_size', 'checkpoint_timeout') ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await?;
        conn.close().await.ok();
        Ok(PostgresInfo {
            version,
            settings: rows
                .into_iter()
                .map(|(name, setting, unit)| {
                    let value = match unit {
                        Some(unit) => format!("{setting} × {unit}"),
                        None => setting,
                    };
                    (name, value)
                })
                .collect(),
        })
    }

    pub(crate) async fn prepare_pgbench(&self) -> anyhow::Result<()> {
        let mut conn = connect_pg(&self.url).await?;
        for statement in [
            "CREATE TABLE bench_one_row (id bigserial PRIMARY KEY, payload text NOT NULL, \
             created_at timestamptz NOT NULL DEFAULT now())",
            "CREATE TABLE bench_state (id bigint PRIMARY KEY, payload text NOT NULL)",
        ] {
            sqlx::query(statement)
                .execute(&mut conn)
                .await
                .context("creating the pgbench tables")?;
        }
        conn.close().await.ok();
        Ok(())
    }

    pub(crate) async fn drop_database(&self) -> anyhow::Result<()> {
        let mut conn = connect_pg(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        conn.close().await.ok();
        Ok(())
    }
}

async fn connect_pg(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url))
        .await
        .map_err(|_| anyhow::anyhow!("PostgreSQL did not answer within 10 s"))?
        .with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {} (is it running? pass --pg-url, or --store sqlite)",
                miniauth::wiring::redact_url(url)
            )
        })
}

pub(crate) async fn count_events(store_url: &str) -> anyhow::Result<u64> {
    let query = "SELECT COUNT(*) FROM events";
    let n: i64 = if store_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(store_url).await?;
        sqlx::query_scalar(query).fetch_one(&mut conn).await?
    } else {
        let mut conn = connect_pg(store_url).await?;
        sqlx::query_scalar(query).fetch_one(&mut conn).await?
    };
    Ok(u64::try_from(n).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_rewritten_and_checked_for_loopback() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b1"),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_database("postgres://u:p@localhost/x?sslmode=disable", "b2"),
            "postgres://u:p@localhost/b2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "b3"), "postgres://h/b3");
        assert!(is_loopback_url(
            "postgres://postgres@127.0.0.1:5432/postgres"
        ));
        assert!(is_loopback_url("postgresql://localhost/x"));
        assert!(is_loopback_url("postgres://u:p@[::1]:5432/x"));
        assert!(!is_loopback_url(
            "postgres://postgres@db.example.com:5432/x"
        ));
        assert!(!is_loopback_url("postgres://127.0.0.1.evil.com/x"));
    }
}
