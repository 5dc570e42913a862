//! One durable commit per login that answers tokens (issue 13): a returning login's
//! event, the account's state row and the new login session (refresh-token family and
//! token) are written by one transaction; the phone path likewise writes its events
//! and the session together. On both engines: when the session cannot be written,
//! nothing of the login is. On PostgreSQL, the rows carry their writing transaction:
//! the event's `txid` is the `xmin` of the session's rows.

mod support;

use std::sync::Arc;

use cqrs_es::{AggregateContext, EventStore};
use miniauth_application::{Actor, MiniAuth, PhoneInput, RegistrationPolicy, RequestContext};
use sqlx::Row;
use support::{service, Engine, FakeWeChat, TestDb};

fn ctx() -> RequestContext {
    RequestContext {
        request_id: "login-commit".into(),
        actor: Actor::Cli,
        client_ip: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_login_with_tokens_is_one_commit() {
    a_login_with_tokens_is_one_commit(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_login_with_tokens_is_one_commit() {
    a_login_with_tokens_is_one_commit(Engine::Postgres).await;
}

/// Runs `sql` (one statement) on the test's database.
async fn execute(db: &TestDb, sql: &str) {
    match db.engine {
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.config.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&db.config.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

async fn count(db: &TestDb, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) AS n FROM {table}");
    match db.engine {
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.config.url).await.unwrap();
            let n = sqlx::query(&sql).fetch_one(&pool).await.unwrap().get("n");
            pool.close().await;
            n
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&db.config.url).await.unwrap();
            let n = sqlx::query(&sql).fetch_one(&pool).await.unwrap().get("n");
            pool.close().await;
            n
        }
    }
}

/// On PostgreSQL: whether the newest event and the newest session's token were written
/// by one transaction.
async fn same_transaction(db: &TestDb) -> bool {
    let pool = sqlx::PgPool::connect(&db.config.url).await.unwrap();
    let row = sqlx::query(
        "SELECT (SELECT txid::text::bigint % 4294967296 FROM events ORDER BY position DESC LIMIT 1) \
         = (SELECT xmin::text::bigint FROM refresh_tokens ORDER BY issued_at DESC, xmin::text::bigint DESC LIMIT 1) \
         AND (SELECT xmin::text::bigint FROM refresh_tokens ORDER BY issued_at DESC, xmin::text::bigint DESC LIMIT 1) \
         = (SELECT xmin::text::bigint FROM refresh_families ORDER BY created_at DESC, xmin::text::bigint DESC LIMIT 1) AS same",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    row.get("same")
}

async fn a_login_with_tokens_is_one_commit(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let auth: Arc<MiniAuth> = Arc::new(service(
        &store,
        store.event_store(),
        Arc::new(FakeWeChat::default()),
        RegistrationPolicy::Auto,
    ));
    // First login, then the phone: a new user, bound, with tokens.
    let first = auth.login(&ctx(), support::APPID, "o-one-1").await.unwrap();
    assert!(first.tokens.is_none());
    let phone = auth
        .verify_phone(
            &ctx(),
            support::APPID,
            &first.ticket.token,
            PhoneInput::Code("p-13800138001".into()),
        )
        .await
        .unwrap();
    if engine == Engine::Postgres {
        assert!(
            same_transaction(&db).await,
            "the phone's events and the session in one transaction"
        );
    }

    // A returning login: tokens at once, in one commit.
    let returning = auth.login(&ctx(), support::APPID, "o-one-2").await.unwrap();
    let tokens = returning.tokens.expect("a returning user gets tokens");
    assert_eq!(tokens.user_id, phone.user_id);
    if engine == Engine::Postgres {
        assert!(
            same_transaction(&db).await,
            "the login's event and the session in one transaction"
        );
    }
    // The session works: its refresh token rotates.
    auth.grant_refresh(&tokens.refresh.token).await.unwrap();

    // When the session cannot be written, the login writes nothing.
    let (events, sessions) = (
        count(&db, "events").await,
        count(&db, "refresh_families").await,
    );
    execute(
        &db,
        match engine {
            Engine::Sqlite => {
                "CREATE TRIGGER no_tokens BEFORE INSERT ON refresh_tokens \
                 BEGIN SELECT RAISE(ABORT, 'no tokens today'); END;"
            }
            Engine::Postgres => {
                "CREATE FUNCTION no_tokens() RETURNS trigger AS $$ \
                 BEGIN RAISE EXCEPTION 'no tokens today'; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER no_tokens BEFORE INSERT ON refresh_tokens \
                 FOR EACH ROW EXECUTE FUNCTION no_tokens();"
            }
        },
    )
    .await;
    auth.login(&ctx(), support::APPID, "o-one-3")
        .await
        .expect_err("no session, no login");
    assert_eq!(count(&db, "events").await, events, "no event");
    assert_eq!(count(&db, "refresh_families").await, sessions, "no session");
    let mut context = store
        .event_store()
        .load_aggregate(&format!("{}:one", support::APPID))
        .await
        .unwrap();
    assert_eq!(
        context.aggregate().latest_session(),
        2,
        "the state row is untouched too"
    );
}
