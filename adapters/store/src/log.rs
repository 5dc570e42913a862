//! The event log read by position: the one place that knows how far a reader may go.
//!
//! SQLite has one writer at a time, so positions are assigned in commit order and a
//! reader may read everything it sees.
//!
//! PostgreSQL appends do not take turns (no database-wide lock since issue 13): each
//! event records its writing transaction (`txid`, `pg_current_xact_id()`) and its
//! position is `txid * 65536 + its index in the append` ([`position_of`]). Every
//! reader by position — the read-model catch-up, `GET /v1/admin/events?after=`, the
//! audit export, the audit checkpoints and `audit verify` — goes through
//! [`select_after`], which reads only below the **safe horizon**:
//!
//! ```text
//! position > $after AND txid < pg_snapshot_xmin(pg_current_snapshot())
//! ```
//!
//! (refined to leave out transactions of other databases of the server: [`HORIZON_XID`]).
//! `pg_snapshot_xmin` is the oldest transaction still in flight: every transaction
//! below it has finished, so each of its events is either visible (committed) or never
//! will be (rolled back). Every transaction in flight, and every later one, has a txid
//! at or above the horizon, so all of its positions are at or above `horizon * 65536`,
//! above every position a reader can have read. Hence: a committed event is never
//! skipped, a position once read is final, and the order never goes back. Events
//! written before migration 0010 keep their positions (all lower) and a txid of 0.
//!
//! Why not positions from a sequence with the same filter: transaction A takes
//! position 10 with xid 105, B takes 11 with xid 101 (B got its xid first, its position
//! later) and commits; while A is in flight the horizon is 105, so a reader would read
//! 11 and then never read 10. With positions derived from the txid, A's events sort
//! after everything B wrote.

use std::time::{Duration, Instant};

use sqlx::Row;

use crate::db::{Engine, Pool};

/// Positions per transaction: the events of one append take consecutive indexes.
pub(crate) const EVENTS_PER_TRANSACTION: i64 = 65536;

/// The SQL expression of the position of the event at `index` in this transaction's
/// append (PostgreSQL).
pub(crate) fn position_of(index: usize) -> String {
    format!("pg_current_xact_id()::text::bigint * {EVENTS_PER_TRANSACTION} + {index}")
}

/// The safe horizon (PostgreSQL), as an `xid8`: `pg_snapshot_xmin(pg_current_snapshot())`
/// — the oldest transaction in flight, or the snapshot's end when none is — leaving out
/// the transactions that are known to run in *another* database of the server (they
/// cannot write this log). Without that, a `DROP DATABASE` next door (seconds: it
/// checkpoints) would hold every reader here back. A transaction of the snapshot that
/// has finished by the time `pg_stat_activity` is read is kept: it may have been ours.
/// (`pg_stat_activity` is read after the statement's snapshot is taken, so every
/// transaction the snapshot saw in flight and still running shows there.)
const HORIZON_XID: &str = "(SELECT COALESCE(MIN(x), pg_snapshot_xmax(pg_current_snapshot())) \
     FROM pg_snapshot_xip(pg_current_snapshot()) AS x WHERE NOT EXISTS (\
     SELECT 1 FROM pg_stat_activity a WHERE a.backend_xid IS NOT NULL \
     AND a.datname IS DISTINCT FROM current_database() \
     AND a.backend_xid::text::bigint = x::text::bigint % 4294967296))";

/// The condition on `events` rows that keeps a reader below the safe horizon
/// (empty on SQLite).
fn below_horizon(engine: Engine) -> String {
    match engine {
        Engine::Sqlite => String::new(),
        Engine::Postgres => format!(" AND txid < {HORIZON_XID}"),
    }
}

/// The one statement every reader of the log by position runs: `columns` of the
/// events of aggregate type `$1` after position `$2`, in position order, at most `$3`,
/// only below the safe horizon.
pub(crate) fn select_after(engine: Engine, columns: &str) -> String {
    let horizon = below_horizon(engine);
    format!(
        "SELECT {columns} FROM events WHERE aggregate_type = $1 AND position > $2{horizon} \
         ORDER BY position LIMIT $3"
    )
}

/// How many events after position `$1` are committed, as `n`: all of them, or only
/// those below the horizon.
pub(crate) fn count_after(engine: Engine, readable_only: bool) -> String {
    let horizon = if readable_only {
        below_horizon(engine)
    } else {
        String::new()
    };
    format!("SELECT COUNT(*) AS n FROM events WHERE position > $1{horizon}")
}

/// The horizon and the snapshot's end, as `xmin` and `xmax` (PostgreSQL): every
/// transaction that committed before this statement has a txid below `xmax`, and a
/// reader has seen all of them once the horizon has reached `xmax`.
fn horizon_sql() -> String {
    format!(
        "SELECT {HORIZON_XID}::text::bigint AS xmin, \
         pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax"
    )
}

/// The statement answering, as `below`, the position below which a reader in this
/// transaction reads every committed event ([`select_after`] reads exactly those):
/// `horizon * 65536` on PostgreSQL — every event of a transaction below the horizon has
/// a position below it, and every other at or above it ([`position_of`]) — and `None`
/// on SQLite, which reads everything. In a `REPEATABLE READ` transaction it answers for
/// the snapshot every later read of the transaction uses.
pub(crate) fn readable_below(engine: Engine) -> Option<String> {
    match engine {
        Engine::Sqlite => None,
        Engine::Postgres => Some(format!(
            "SELECT {HORIZON_XID}::text::bigint * {EVENTS_PER_TRANSACTION} AS below"
        )),
    }
}

/// How long a reader waits for transactions in flight to let the horizon pass the
/// events committed before it asked ([`settle`]).
const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// Waits until every event committed before the call is below the horizon, so that a
/// reader that asks after a commit reads it: until the transactions in flight when it
/// was called (on the whole server — they are short: an append, a token) have
/// finished. Immediate when none is in flight, and on SQLite. Answers false when
/// [`SETTLE_WAIT`] passed first (a long transaction holds the horizon back; the
/// reader then reads what is final, and the caller decides).
pub(crate) async fn settle(pool: &Pool) -> Result<bool, sqlx::Error> {
    let Pool::Postgres(pool) = pool else {
        return Ok(true);
    };
    let (mut xmin, target) = horizon(pool).await?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    while xmin < target {
        if started.elapsed() >= SETTLE_WAIT {
            tracing::warn!(
                horizon = xmin,
                target,
                "a transaction in flight holds the event log's horizon back; reading what is final"
            );
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
        xmin = horizon(pool).await?.0;
    }
    Ok(true)
}

/// The last position a reader has to get past to have read every event committed
/// before the call: on PostgreSQL, every position of a transaction below the snapshot's
/// end (compare with [`readable_below`]); None on SQLite, where a reader reads them all.
pub(crate) async fn committed_end(pool: &Pool) -> Result<Option<i64>, sqlx::Error> {
    let Pool::Postgres(pool) = pool else {
        return Ok(None);
    };
    let (_, xmax) = horizon(pool).await?;
    Ok(Some(xmax * EVENTS_PER_TRANSACTION - 1))
}

async fn horizon(pool: &sqlx::PgPool) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(&horizon_sql()).fetch_one(pool).await?;
    Ok((row.try_get("xmin")?, row.try_get("xmax")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_readers_stop_at_the_horizon_and_sqlite_readers_do_not_need_to() {
        let pg = select_after(Engine::Postgres, "position");
        assert!(pg.contains("position > $2 AND txid < (SELECT COALESCE(MIN(x), pg_snapshot_xmax(pg_current_snapshot()))"));
        assert!(pg.ends_with("ORDER BY position LIMIT $3"));
        let lite = select_after(Engine::Sqlite, "position");
        assert!(!lite.contains("txid"));
        assert_eq!(
            position_of(2),
            "pg_current_xact_id()::text::bigint * 65536 + 2"
        );
    }
}
