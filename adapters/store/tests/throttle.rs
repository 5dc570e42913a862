//! The attempt limiter on the `attempt_counters` table, on both engines: windows,
//! refusals, restarts, resets, and keys that name no account or address in the clear.

mod support;

use chrono::{DateTime, Duration, TimeZone, Utc};
use miniauth_application::ports::{
    AttemptLimiter, ClientNet, Limit, ThrottleError, ThrottleKey, ThrottleLimits,
};
use support::{tenant, Engine, TestDb};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn limits() -> ThrottleLimits {
    let limit = |max, minutes| Limit {
        max,
        window: Duration::minutes(minutes),
    };
    ThrottleLimits {
        account_from_client: limit(3, 15),
        account: limit(10, 15),
        client: limit(10, 15),
        login: limit(2, 1),
        operator_secret: limit(3, 15),
        introspection_client: limit(3, 15),
    }
}

fn client() -> ClientNet {
    ClientNet::of("203.0.113.9".parse().unwrap())
}

fn pair(account: &str) -> ThrottleKey {
    ThrottleKey::AccountFromClient {
        tenant: tenant(),
        account: account.to_owned(),
        client: client(),
    }
}

fn exceeded(secs: u64) -> Result<(), ThrottleError> {
    Err(ThrottleError::Exceeded {
        retry_after_secs: secs,
    })
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name(super::Engine::Sqlite).await;
                }
                #[tokio::test]
                async fn postgres() {
                    super::$name(super::Engine::Postgres).await;
                }
            }
        )*
    };
}

on_both!(
    failures_refuse_within_the_window_and_the_window_frees_them,
    hits_are_refused_beyond_the_rate_and_restart_with_a_new_window,
    a_reset_forgets_only_its_key,
    keys_are_stored_hashed,
    the_purge_forgets_ended_windows_only,
    concurrent_hits_are_each_counted_once,
);

/// Forty logins from one network at once, where thirty are allowed: exactly thirty
/// pass. The hit is one atomic upsert on both engines (on PostgreSQL its commit does not
/// wait for the flush, which must not make two hits read the same count).
async fn concurrent_hits_are_each_counted_once(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let mut limits = limits();
    limits.login.max = 30;
    let limiter = store.attempt_limiter(limits);
    let login = ThrottleKey::Login(client());
    let hits = (0..40).map(|_| limiter.hit(&login, t0()));
    let results = futures::future::join_all(hits).await;
    let passed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(passed, 30, "{results:?}");
    assert!(limiter.check(&login, t0()).await.is_err());
}

/// The background purge drops windows that ended and keeps the running ones: a window
/// it kept still refuses.
async fn the_purge_forgets_ended_windows_only(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let limiter = store.attempt_limiter(limits());
    let login = ThrottleKey::Login(client());
    limiter.hit(&login, t0()).await.unwrap();
    limiter.hit(&login, t0()).await.unwrap();
    limiter
        .record_failure(&pair("alice"), t0() + Duration::minutes(5))
        .await
        .unwrap();

    let purged = store
        .purge_attempt_counters(t0() + Duration::minutes(2))
        .await
        .unwrap();

    assert_eq!(
        purged, 1,
        "the login window ended; the password window runs"
    );
    assert_eq!(
        store
            .purge_attempt_counters(t0() + Duration::minutes(2))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        limiter.hit(&login, t0() + Duration::minutes(2)).await,
        Ok(()),
        "a purged window starts afresh"
    );
}

async fn failures_refuse_within_the_window_and_the_window_frees_them(engine: Engine) {
    let db = TestDb::new(engine).await;
    let limiter = db.connect().await.attempt_limiter(limits());
    let alice = pair("alice");
    for i in 0..3 {
        assert_eq!(limiter.check(&alice, t0()).await, Ok(()), "before {i}");
        limiter
            .record_failure(&alice, t0() + Duration::seconds(i))
            .await
            .unwrap();
    }
    // The window started at the first failure and lasts 15 minutes.
    assert_eq!(
        limiter.check(&alice, t0() + Duration::seconds(10)).await,
        exceeded(15 * 60 - 10)
    );
    assert_eq!(limiter.check(&pair("bob"), t0()).await, Ok(()));
    let later = t0() + Duration::minutes(15);
    assert_eq!(limiter.check(&alice, later).await, Ok(()));
    // A failure after the window starts a new one with one failure.
    limiter.record_failure(&alice, later).await.unwrap();
    limiter.record_failure(&alice, later).await.unwrap();
    assert_eq!(limiter.check(&alice, later).await, Ok(()));
    limiter.record_failure(&alice, later).await.unwrap();
    assert!(limiter.check(&alice, later).await.is_err());
}

async fn hits_are_refused_beyond_the_rate_and_restart_with_a_new_window(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let limiter = store.attempt_limiter(limits());
    // Another instance on the same database counts with it.
    let other = db.connect().await.attempt_limiter(limits());
    let login = ThrottleKey::Login(client());
    assert_eq!(limiter.hit(&login, t0()).await, Ok(()));
    assert_eq!(other.hit(&login, t0()).await, Ok(()));
    assert_eq!(
        limiter.hit(&login, t0() + Duration::seconds(20)).await,
        exceeded(40)
    );
    let next_minute = t0() + Duration::seconds(60);
    assert_eq!(other.hit(&login, next_minute).await, Ok(()));
    assert_eq!(limiter.hit(&login, next_minute).await, Ok(()));
    assert!(limiter.hit(&login, next_minute).await.is_err());
}

async fn a_reset_forgets_only_its_key(engine: Engine) {
    let db = TestDb::new(engine).await;
    let limiter = db.connect().await.attempt_limiter(limits());
    let account = ThrottleKey::Account {
        tenant: tenant(),
        account: "alice".into(),
    };
    for _ in 0..3 {
        limiter.record_failure(&pair("alice"), t0()).await.unwrap();
    }
    for _ in 0..10 {
        limiter.record_failure(&account, t0()).await.unwrap();
    }
    limiter.reset(&pair("alice")).await.unwrap();
    assert_eq!(limiter.check(&pair("alice"), t0()).await, Ok(()));
    assert!(limiter.check(&account, t0()).await.is_err());
}

async fn keys_are_stored_hashed(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let limiter = store.attempt_limiter(limits());
    limiter
        .record_failure(&pair("alice@example.com"), t0())
        .await
        .unwrap();
    let url = db.config.url.clone();
    let keys: Vec<String> = if engine == Engine::Sqlite {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT key_hash FROM attempt_counters")
            .fetch_all(&pool)
            .await
            .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT key_hash FROM attempt_counters")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    assert_eq!(keys.len(), 1);
    assert!(!keys[0].contains("alice"), "{}", keys[0]);
    assert!(!keys[0].contains("203.0.113.9"), "{}", keys[0]);
}
