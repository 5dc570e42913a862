//! The log read by position under concurrent appends (issue 13): many writers whose
//! transactions commit after random delays, and a reader following the log by
//! position, which must see every committed event exactly once, in an order that
//! never goes back. On PostgreSQL the appends do not take turns (see
//! `adapters/store/src/log.rs`); the delay is a trigger on the state row, so it runs
//! inside each append's own transaction, after its events took their positions and
//! before it commits. SQLite (one writer) runs the same test without the delay.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::Utc;
use cqrs_es::{AggregateContext, AggregateError, EventStore};
use miniauth_application::{Actor, RequestContext};
use miniauth_domain::{AccountId, OpenId, SealedSecret, SocialAccountCommand};
use miniauth_store::{AccountEventStore, Store};
use rand::Rng;
use sqlx::Row;
use support::{appid, Engine, TestDb};

const WRITERS: usize = 16;
const APPENDS_PER_WRITER: usize = 20;
const ACCOUNTS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_reader_by_position_sees_every_event_once_in_order() {
    a_reader_by_position_sees_every_event_once_in_order(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_reader_by_position_sees_every_event_once_in_order() {
    a_reader_by_position_sees_every_event_once_in_order(Engine::Sqlite).await;
}

fn account(n: usize) -> AccountId {
    AccountId::new(&appid(), &OpenId::parse(&format!("ord-{n}")).unwrap())
}

/// Appends one session to account `n`, deciding again when another writer got there
/// first, as the service does.
async fn append(es: &AccountEventStore, n: usize) {
    let id = account(n);
    loop {
        let mut context = es.load_aggregate(id.as_str()).await.unwrap();
        let events = context
            .aggregate()
            .decide(SocialAccountCommand::ObtainSession {
                appid: appid(),
                openid: OpenId::parse(&format!("ord-{n}")).unwrap(),
                unionid: None,
                session_key: SealedSecret::from_sealed_text("v1.x.y".into()),
                at: Utc::now(),
            })
            .unwrap();
        let metadata = RequestContext {
            request_id: "ordering".into(),
            actor: Actor::Cli,
            client_ip: None,
        }
        .metadata(Utc::now());
        match es.commit(events, context, metadata).await {
            Ok(_) => return,
            Err(AggregateError::AggregateConflict) => continue,
            Err(error) => panic!("append: {error}"),
        }
    }
}

/// Follows the log by position until `done` and nothing more is readable: every
/// (position, account, sequence) in the order read.
async fn follow(store: &Store, done: &AtomicBool) -> Vec<(i64, String, i64)> {
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let finished = done.load(Ordering::SeqCst);
        // Small pages, so that the reader often stops mid-way.
        let page = store.events_after(after, 7).await.unwrap();
        for event in &page {
            assert!(
                event.position > after,
                "position {} read after {after}: the order went back",
                event.position
            );
            after = event.position;
            seen.push((event.position, event.aggregate_id.clone(), event.sequence));
        }
        if page.is_empty() {
            if finished {
                return seen;
            }
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
    }
}

async fn a_reader_by_position_sees_every_event_once_in_order(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    if engine == Engine::Postgres {
        let pool = sqlx::PgPool::connect(&db.config.url).await.unwrap();
        sqlx::raw_sql(
            "CREATE FUNCTION commit_delay() RETURNS trigger AS $$ \
             BEGIN PERFORM pg_sleep(random() * 0.04); RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER commit_delay AFTER INSERT OR UPDATE ON snapshots \
             FOR EACH ROW EXECUTE FUNCTION commit_delay();",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move { follow(&store, &done).await })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let es = store.event_store();
            tokio::spawn(async move {
                for _ in 0..APPENDS_PER_WRITER {
                    let n = rand::thread_rng().gen_range(0..ACCOUNTS);
                    append(&es, n).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();

    // Exactly the log, each event once.
    let logged: Vec<(i64, String, i64)> = {
        let all = store.events_after(0, u32::MAX).await.unwrap();
        all.into_iter()
            .map(|e| (e.position, e.aggregate_id, e.sequence))
            .collect()
    };
    assert_eq!(logged.len(), WRITERS * APPENDS_PER_WRITER);
    let missed: Vec<_> = logged.iter().filter(|e| !seen.contains(e)).collect();
    assert!(
        missed.is_empty(),
        "the reader skipped {} of {} events, first {:?}",
        missed.len(),
        logged.len(),
        missed.first()
    );
    assert_eq!(seen, logged, "the reader saw exactly the log, in its order");
    // Within each account, the order read is the stream's order, without a gap.
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (_, id, sequence) in &seen {
        let previous = last.insert(id.as_str(), *sequence).unwrap_or(0);
        assert_eq!(
            *sequence,
            previous + 1,
            "{id}: sequence {sequence} after {previous}"
        );
    }
    if engine == Engine::Postgres {
        let pool = sqlx::PgPool::connect(&db.config.url).await.unwrap();
        let rows = sqlx::query("SELECT COUNT(*) AS n FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows.get::<i64, _>("n"), logged.len() as i64);
        pool.close().await;
    }

    // The read models and the audit agree with the log.
    store.catch_up().await.unwrap();
    for (id, sequence) in &last {
        let (_, openid) = id.split_once(':').unwrap();
        let view = store
            .account(&appid(), &OpenId::parse(openid).unwrap())
            .await
            .unwrap()
            .expect("a view of every account");
        assert_eq!(view.sequence, *sequence, "{id}");
    }
    let report = store.verify().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.checkpoint.is_some());
}
