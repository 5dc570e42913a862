//! The audit contract, on both engines: point-in-time replay, tamper detection (rows
//! edited, deleted, inserted and reordered by SQL behind the store's back), rebuilding
//! the read models, and reading events an earlier release wrote.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::{AggregateContext, EventStore};
use miniauth_application::{PhoneInput, ProfileInput, RegistrationPolicy};
use miniauth_domain::audit::{cumulative_hash, ChainLink, LoggedEvent, HASH_KEY};
use miniauth_domain::{
    AccountId, BindMethod, ImportedBinding, OpenId, Provenance, SealedDatum, SealedSecret,
    SessionProof, SocialAccountCommand, UnbindReason, UserId,
};
use miniauth_store::{FindingKind, Store, VerifyReport};

use crate::support::{appid, service, Engine, FakeWeChat, TestDb, APPID};

contract!(
    point_in_time_replay_of_bind_unbind_rebind,
    history_masks_personal_data_and_shows_erasure,
    clean_log_verifies_and_records_a_checkpoint,
    edited_payload_is_found,
    edited_metadata_is_found,
    deleted_middle_event_is_found,
    deleted_tail_event_is_found,
    inserted_event_is_found,
    reordered_events_are_found,
    consistent_rewrite_is_caught_by_the_checkpoint,
    a_checkpoint_past_the_horizon_is_not_yet_verifiable,
    rebuilt_read_models_equal_the_ones_before,
    version_zero_event_is_upcast_on_every_read_path,
);

fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn id(openid: &str) -> AccountId {
    AccountId::new(&appid(), &OpenId::parse(openid).unwrap())
}

async fn decide(store: &Store, openid: &str, command: SocialAccountCommand) {
    let es = store.event_store();
    let mut context = es.load_aggregate(id(openid).as_str()).await.unwrap();
    let events = context.aggregate().decide(command).unwrap();
    es.commit(events, context, super::ctx().metadata(Utc::now()))
        .await
        .unwrap();
}

async fn login_at(store: &Store, openid: &str, at: DateTime<Utc>) {
    decide(
        store,
        openid,
        SocialAccountCommand::ObtainSession {
            appid: appid(),
            openid: OpenId::parse(openid).unwrap(),
            unionid: None,
            session_key: SealedSecret::from_sealed_text("v1.x.y".into()),
            at,
        },
    )
    .await;
}

async fn bind_at(store: &Store, openid: &str, who: i64, at: DateTime<Utc>) {
    decide(
        store,
        openid,
        SocialAccountCommand::Bind {
            proof: SessionProof::ticket(1),
            user_id: user(who),
            via: BindMethod::PhoneMatch,
            at,
        },
    )
    .await;
}

async fn unbind_at(store: &Store, openid: &str, who: i64, at: DateTime<Utc>) {
    decide(
        store,
        openid,
        SocialAccountCommand::Unbind {
            user_id: user(who),
            reason: UnbindReason::UserRequest,
            at,
        },
    )
    .await;
}

fn openids(bindings: &[miniauth_store::BindingAt]) -> Vec<(String, i64)> {
    bindings
        .iter()
        .map(|b| (b.openid.to_string(), b.span.user_id.get()))
        .collect()
}

async fn point_in_time_replay_of_bind_unbind_rebind(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    // o-a: bound to 42 at 10, unbound at 20, bound to 7 at 30.
    // o-b: bound to 42 at 25.
    login_at(&store, "o-a", t(0)).await;
    login_at(&store, "o-b", t(1)).await;
    bind_at(&store, "o-a", 42, t(10)).await;
    unbind_at(&store, "o-a", 42, t(20)).await;
    bind_at(&store, "o-b", 42, t(25)).await;
    bind_at(&store, "o-a", 7, t(30)).await;

    let of_42 = |m| {
        let store = store.clone();
        async move { openids(&store.bindings_as_of(user(42), t(m)).await.unwrap()) }
    };
    assert_eq!(of_42(5).await, vec![]);
    assert_eq!(of_42(10).await, vec![("o-a".to_owned(), 42)]);
    assert_eq!(of_42(15).await, vec![("o-a".to_owned(), 42)]);
    assert_eq!(of_42(20).await, vec![], "unbound at 20 exactly");
    assert_eq!(of_42(22).await, vec![]);
    assert_eq!(of_42(27).await, vec![("o-b".to_owned(), 42)]);
    assert_eq!(of_42(35).await, vec![("o-b".to_owned(), 42)]);
    let then = store.bindings_as_of(user(42), t(15)).await.unwrap();
    assert_eq!(then[0].span.bound_at, t(10));
    assert_eq!(then[0].span.via, BindMethod::PhoneMatch);
    assert_eq!(then[0].appid, appid());
    assert_eq!(
        openids(&store.bindings_as_of(user(7), t(35)).await.unwrap()),
        vec![("o-a".to_owned(), 7)]
    );
    assert_eq!(
        openids(&store.bindings_as_of(user(7), t(29)).await.unwrap()),
        vec![]
    );
    assert_eq!(
        openids(&store.app_bindings_as_of(&appid(), t(15)).await.unwrap()),
        vec![("o-a".to_owned(), 42)]
    );
    assert_eq!(
        openids(&store.app_bindings_as_of(&appid(), t(35)).await.unwrap()),
        vec![("o-a".to_owned(), 7), ("o-b".to_owned(), 42)]
    );
    let other_app = miniauth_domain::AppId::parse("wx00000000000000c1").unwrap();
    assert!(store
        .app_bindings_as_of(&other_app, t(35))
        .await
        .unwrap()
        .is_empty());
    // Today's read model agrees with the replay at "now".
    assert_eq!(
        store.bindings_of(user(42)).await.unwrap().len(),
        store
            .bindings_as_of(user(42), Utc::now())
            .await
            .unwrap()
            .len()
    );
    // The accounts a user's timeline draws: every one ever bound to them.
    use miniauth_application::ports::AuditLog;
    let mut ever = AuditLog::accounts_of_user(&store, user(42)).await.unwrap();
    ever.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(ever, vec![id("o-a"), id("o-b")]);
    assert_eq!(
        AuditLog::accounts_of_user(&store, user(7)).await.unwrap(),
        vec![id("o-a")]
    );
    assert!(AuditLog::accounts_of_user(&store, user(8))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(AuditLog::projection_lag(&store).await.unwrap(), 0);
}

async fn history_masks_personal_data_and_shows_erasure(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let auth = service(
        &store,
        store.event_store(),
        Arc::new(FakeWeChat::default()),
        RegistrationPolicy::Auto,
    );
    let outcome = super::login(&auth, "o-hist").await;
    auth.submit_profile(
        &super::ctx(),
        APPID,
        &outcome.ticket.token,
        ProfileInput::ClientSupplied {
            nickname: "Alice".into(),
            avatar_url: "https://example.com/a.png".into(),
        },
    )
    .await
    .unwrap();
    let bound = auth
        .verify_phone(
            &super::ctx(),
            APPID,
            &outcome.ticket.token,
            PhoneInput::Code("p-13812345678".into()),
        )
        .await
        .unwrap();
    let openid = OpenId::parse("hist").unwrap();
    let history = store.history(&appid(), &openid).await.unwrap();
    let types: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "SessionObtained",
            "ProfileDecrypted",
            "PhoneVerified",
            "UserBound"
        ]
    );
    assert_eq!(history[0].session_seq, Some(1));
    assert_eq!(history[1].nickname.as_deref(), Some("A****"));
    assert_eq!(history[1].via.as_deref(), Some("client_supplied"));
    assert_eq!(history[2].phone.as_deref(), Some("+86 138****5678"));
    assert_eq!(history[2].via.as_deref(), Some("phone_code"));
    assert_eq!(history[3].user_id, Some(bound.user_id.get()));
    assert_eq!(history[3].via.as_deref(), Some("auto_registration"));
    assert!(history.iter().all(|e| e.actor.is_some()
        && e.request_id.as_deref() == Some("req-1")
        && e.client_ip.as_deref() == Some("127.0.0.1")
        && e.hash.as_ref().is_some_and(|h| h.len() == 64)));
    assert!(history
        .windows(2)
        .all(|w| w[0].sequence + 1 == w[1].sequence));

    auth.erase(&super::ctx(), &appid(), &openid).await.unwrap();
    let after = store.history(&appid(), &openid).await.unwrap();
    assert_eq!(after.len(), 6);
    assert_eq!(after[1].nickname.as_deref(), Some("erased"));
    assert_eq!(after[2].phone.as_deref(), Some("erased"));
    assert_eq!(after[4].event_type, "Unbound");
    assert_eq!(after[4].reason.as_deref(), Some("erasure"));
    assert_eq!(after[5].event_type, "PersonalDataErased");
    let text = format!("{after:?}");
    assert!(!text.contains("13812345678") && !text.contains("Alice"));
    assert!(store
        .history(&appid(), &OpenId::parse("nobody").unwrap())
        .await
        .unwrap()
        .is_empty());
    assert!(store.verify().await.unwrap().is_clean());
}

/// Two accounts, four events each, verified once (which records a checkpoint).
async fn seeded(engine: Engine) -> (TestDb, Store) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    for openid in ["o-a", "o-b"] {
        login_at(&store, openid, t(0)).await;
        bind_at(&store, openid, 42, t(1)).await;
        unbind_at(&store, openid, 42, t(2)).await;
        bind_at(&store, openid, 43, t(3)).await;
    }
    // Verify waits for the safe horizon to pass the events just committed.
    let report = store.verify().await.unwrap();
    assert!(report.is_clean() && report.is_complete(), "{report:?}");
    assert_eq!(report.checkpoint.map(|c| c.events), Some(8));
    (db, store)
}

/// Runs one statement behind the store's back.
async fn sql(db: &TestDb, sqlite: &str, postgres: &str) {
    match db.engine {
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.config.url).await.unwrap();
            sqlx::query(sqlite).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&db.config.url).await.unwrap();
            sqlx::query(postgres).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// Replaces text inside one event's payload or metadata column.
async fn replace_in(db: &TestDb, column: &str, openid: &str, sequence: i64, from: &str, to: &str) {
    let filter = format!(
        "WHERE aggregate_id = '{}' AND sequence = {sequence}",
        id(openid)
    );
    sql(
        db,
        &format!("UPDATE events SET {column} = replace({column}, '{from}', '{to}') {filter}"),
        // PostgreSQL hands JSON back as it was sent: with a space after each colon.
        &format!(
            "UPDATE events SET {column} = replace({column}::text, '{}', '{}')::json {filter}",
            from.replace("\":", "\": "),
            to.replace("\":", "\": ")
        ),
    )
    .await;
}

fn assert_found(report: &VerifyReport, kind: FindingKind, openid: &str, sequence: i64) {
    assert!(!report.is_clean());
    let account = id(openid).to_string();
    assert!(
        report.findings.iter().any(|f| f.kind == kind
            && f.aggregate_id.as_deref() == Some(account.as_str())
            && f.sequence == Some(sequence)),
        "expected {kind:?} at {account} #{sequence}, found {:#?}",
        report.findings
    );
    // The other account is untouched: nothing is said about it.
    let other = id(if openid == "o-a" { "o-b" } else { "o-a" }).to_string();
    assert!(report
        .findings
        .iter()
        .all(|f| f.aggregate_id.as_deref() != Some(other.as_str())));
}

async fn clean_log_verifies_and_records_a_checkpoint(engine: Engine) {
    let (_db, store) = seeded(engine).await;
    let checkpoints = store.checkpoints().await.unwrap();
    assert_eq!(checkpoints.len(), 1);
    assert_eq!(checkpoints[0].events, 8);
    let again = store.verify().await.unwrap();
    assert!(again.is_clean());
    assert_eq!(again.events, 8);
    assert_eq!(again.streams, 2);
    assert_eq!(again.chained, 8);
    assert_eq!(again.legacy, 0);
    assert_eq!(again.checkpoints_checked, 1);
    assert_eq!(again.checkpoint, None, "nothing new to cover");
    // An incremental checkpoint continues the same cumulative hash that verify folds.
    login_at(&store, "o-c", t(4)).await;
    let next = store.checkpoint().await.unwrap().expect("a new event");
    assert_eq!(next.events, 9);
    assert_eq!(store.checkpoint().await.unwrap(), None);
    let last = store.verify().await.unwrap();
    assert!(last.is_clean(), "{last:?}");
    assert_eq!(last.checkpoints_checked, 2);
}

async fn edited_payload_is_found(engine: Engine) {
    let (db, store) = seeded(engine).await;
    replace_in(
        &db,
        "payload",
        "o-a",
        2,
        "\"user_id\":42",
        "\"user_id\":666",
    )
    .await;
    let report = store.verify().await.unwrap();
    assert_found(&report, FindingKind::Edited, "o-a", 2);
    // The chain proves the content; the checkpoints prove the chain (see below).
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    assert_eq!(
        report.checkpoint, None,
        "no checkpoint blesses a tampered log"
    );
}

async fn edited_metadata_is_found(engine: Engine) {
    let (db, store) = seeded(engine).await;
    replace_in(
        &db,
        "metadata",
        "o-b",
        3,
        "\"actor\":\"cli\"",
        "\"actor\":\"eve\"",
    )
    .await;
    assert_found(
        &store.verify().await.unwrap(),
        FindingKind::Edited,
        "o-b",
        3,
    );
}

async fn deleted_middle_event_is_found(engine: Engine) {
    let (db, store) = seeded(engine).await;
    let statement = format!(
        "DELETE FROM events WHERE aggregate_id = '{}' AND sequence = 2",
        id("o-a")
    );
    sql(&db, &statement, &statement).await;
    let report = store.verify().await.unwrap();
    assert_found(&report, FindingKind::Deleted, "o-a", 2);
    assert!(report
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::CheckpointMismatch));
}

/// A checkpoint past the safe horizon (PostgreSQL: a transaction of this database in
/// flight since before the events it covers) is compared once the horizon passes it —
/// verify waits for that — and, while it does not, reported as not yet verifiable:
/// neither passed nor a mismatch.
async fn a_checkpoint_past_the_horizon_is_not_yet_verifiable(engine: Engine) {
    let (db, store) = seeded(engine).await;
    if engine == Engine::Sqlite {
        return; // One writer: everything committed is final, nothing holds a read back.
    }
    let pool = sqlx::PgPool::connect(&db.config.url).await.unwrap();
    let mut in_flight = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *in_flight)
        .await
        .unwrap();
    login_at(&store, "o-c", t(4)).await;
    // The checkpoint a run that saw the new event final would have recorded.
    let newest = store.checkpoints().await.unwrap().pop().unwrap();
    let row: (i64, String, i64, String, String, String, String) = sqlx::query_as(
        "SELECT position, aggregate_id, sequence, event_type, event_version, \
         payload::text, metadata::text FROM events ORDER BY position DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let event = LoggedEvent {
        position: row.0,
        aggregate_id: row.1,
        sequence: row.2,
        event_type: row.3,
        event_version: row.4,
        payload: serde_json::from_str(&row.5).unwrap(),
        metadata: serde_json::from_str(&row.6).unwrap(),
    };
    let cumulative = cumulative_hash(&newest.cumulative, event.position, &event.evidence_hash());
    sqlx::query(
        "INSERT INTO audit_checkpoints (position, cumulative, events, created_at) \
         VALUES ($1, $2, 9, 0)",
    )
    .bind(event.position)
    .bind(&cumulative)
    .execute(&pool)
    .await
    .unwrap();

    // Held back for all of verify's retries: the first checkpoint is compared, the
    // second is not yet verifiable.
    let held = store.verify().await.unwrap();
    assert!(held.is_clean(), "{held:#?}");
    assert_eq!(held.not_yet_verifiable, [event.position]);
    assert_eq!((held.events, held.checkpoints_checked), (9, 1));
    assert_eq!(held.checkpoint, None);

    // The transaction ends while verify retries: it reaches the checkpoint.
    let ends = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        in_flight.commit().await.unwrap();
    });
    let reached = store.verify().await.unwrap();
    ends.await.unwrap();
    assert!(reached.is_clean() && reached.is_complete(), "{reached:#?}");
    assert_eq!(reached.checkpoints_checked, 2);
    pool.close().await;
}

async fn deleted_tail_event_is_found(engine: Engine) {
    let (db, store) = seeded(engine).await;
    let statement = format!(
        "DELETE FROM events WHERE aggregate_id = '{}' AND sequence = 4",
        id("o-b")
    );
    sql(&db, &statement, &statement).await;
    assert_found(
        &store.verify().await.unwrap(),
        FindingKind::TailDeleted,
        "o-b",
        4,
    );
}

async fn inserted_event_is_found(engine: Engine) {
    let (db, store) = seeded(engine).await;
    let statement = format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('SocialAccount', '{}', 5, 'Unbound', '1', \
         '{{\"Unbound\":{{\"user_id\":43,\"reason\":\"administrator\",\"occurred_at\":\"2026-03-01T08:04:00Z\"}}}}', \
         '{{\"actor\":\"admin\"}}')",
        id("o-a")
    );
    sql(&db, &statement, &statement).await;
    let report = store.verify().await.unwrap();
    assert_found(&report, FindingKind::Inserted, "o-a", 5);
    // Even with a valid chain hash, an event no commit wrote is beyond the state row.
    let forged_db = seeded(engine).await;
    let (db, store) = (forged_db.0, forged_db.1);
    let last = store
        .history(&appid(), &OpenId::parse("o-a").unwrap())
        .await
        .unwrap();
    let previous = last[3].hash.clone().unwrap();
    let payload = serde_json::json!({"Unbound": {"user_id": 43, "reason": "administrator",
        "occurred_at": "2026-03-01T08:04:00Z"}});
    let metadata = std::collections::BTreeMap::from([("actor".to_owned(), "admin".to_owned())]);
    let aggregate = id("o-a").to_string();
    let hash = ChainLink {
        previous: &previous,
        aggregate_id: &aggregate,
        sequence: 5,
        event_type: "Unbound",
        event_version: "1",
        payload: &payload,
        metadata: &metadata,
    }
    .hash();
    let statement = format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('SocialAccount', '{aggregate}', 5, 'Unbound', '1', '{payload}', \
         '{{\"actor\":\"admin\",\"{HASH_KEY}\":\"{hash}\"}}')"
    );
    sql(&db, &statement, &statement).await;
    let report = store.verify().await.unwrap();
    assert_found(&report, FindingKind::Inserted, "o-a", 5);
}

async fn reordered_events_are_found(engine: Engine) {
    let (db, store) = seeded(engine).await;
    let account = id("o-b");
    for (from, to) in [(2, -1), (3, 2), (-1, 3)] {
        let statement = format!(
            "UPDATE events SET sequence = {to} WHERE aggregate_id = '{account}' AND sequence = {from}"
        );
        sql(&db, &statement, &statement).await;
    }
    let report = store.verify().await.unwrap();
    assert_found(&report, FindingKind::Reordered, "o-b", 2);
    assert_found(&report, FindingKind::Reordered, "o-b", 3);
    assert!(report
        .findings
        .iter()
        .find(|f| f.sequence == Some(2))
        .unwrap()
        .detail
        .contains("event 3"));
}

/// Whoever rewrites a stream with recomputed hashes and a matching state row defeats the
/// chain — not the checkpoint recorded before.
async fn consistent_rewrite_is_caught_by_the_checkpoint(engine: Engine) {
    let (db, store) = seeded(engine).await;
    let aggregate = id("o-a").to_string();
    let events: Vec<_> = store
        .export(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.aggregate_id == aggregate)
        .collect();
    let mut previous = String::new();
    for event in &events {
        let mut payload = event.payload.clone();
        if event.sequence == 2 {
            payload["UserBound"]["user_id"] = serde_json::json!(666);
        }
        let mut metadata: std::collections::BTreeMap<String, String> =
            serde_json::from_value(event.metadata.clone()).unwrap();
        metadata.remove(HASH_KEY);
        let hash = ChainLink {
            previous: &previous,
            aggregate_id: &aggregate,
            sequence: event.sequence as u64,
            event_type: &event.event_type,
            event_version: &event.event_version,
            payload: &payload,
            metadata: &metadata,
        }
        .hash();
        metadata.insert(HASH_KEY.to_owned(), hash.clone());
        let metadata = serde_json::to_string(&metadata).unwrap();
        let filter = format!(
            "WHERE aggregate_id = '{aggregate}' AND sequence = {}",
            event.sequence
        );
        sql(
            &db,
            &format!("UPDATE events SET payload = '{payload}', metadata = '{metadata}' {filter}"),
            &format!("UPDATE events SET payload = '{payload}'::json, metadata = '{metadata}'::json {filter}"),
        )
        .await;
        previous = hash;
    }
    let statement =
        format!("UPDATE snapshots SET last_hash = '{previous}' WHERE aggregate_id = '{aggregate}'");
    sql(&db, &statement, &statement).await;
    let report = store.verify().await.unwrap();
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    assert_eq!(report.findings[0].kind, FindingKind::CheckpointMismatch);
    assert_eq!(report.checkpoints_checked, 1);
}

/// The read models and the registry, as rows.
async fn read_model_rows(db: &TestDb) -> Vec<String> {
    const VIEW: &str =
        "SELECT aggregate_id, appid, openid, unionid_hash, bound_user, has_profile, \
         has_phone, latest_session, erased, last_sequence, last_position FROM account_view \
         ORDER BY aggregate_id";
    const BINDINGS: &str =
        "SELECT appid, openid, user_id FROM bindings ORDER BY appid, openid, user_id";
    macro_rules! rows {
        ($pool:expr) => {{
            use sqlx::Row;
            let mut out = Vec::new();
            for row in sqlx::query(VIEW).fetch_all(&$pool).await.unwrap() {
                out.push(format!(
                    "{} {} {} {:?} {:?} {} {} {} {} {} {}",
                    row.get::<String, _>(0),
                    row.get::<String, _>(1),
                    row.get::<String, _>(2),
                    row.get::<Option<String>, _>(3),
                    row.get::<Option<i64>, _>(4),
                    row.get::<bool, _>(5),
                    row.get::<bool, _>(6),
                    row.get::<i64, _>(7),
                    row.get::<bool, _>(8),
                    row.get::<i64, _>(9),
                    row.get::<i64, _>(10),
                ));
            }
            for row in sqlx::query(BINDINGS).fetch_all(&$pool).await.unwrap() {
                out.push(format!(
                    "binding {} {} {}",
                    row.get::<String, _>(0),
                    row.get::<String, _>(1),
                    row.get::<i64, _>(2)
                ));
            }
            $pool.close().await;
            out
        }};
    }
    match db.engine {
        Engine::Sqlite => rows!(sqlx::SqlitePool::connect(&db.config.url).await.unwrap()),
        Engine::Postgres => rows!(sqlx::PgPool::connect(&db.config.url).await.unwrap()),
    }
}

async fn rebuilt_read_models_equal_the_ones_before(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let auth = service(
        &store,
        store.event_store(),
        Arc::new(FakeWeChat::default()),
        RegistrationPolicy::Auto,
    );
    for (i, openid) in ["o-r1", "o-r2", "o-r3"].iter().enumerate() {
        let outcome = super::login(&auth, openid).await;
        auth.verify_phone(
            &super::ctx(),
            APPID,
            &outcome.ticket.token,
            PhoneInput::Code(format!("p-1380013800{i}")),
        )
        .await
        .unwrap();
    }
    auth.erase(&super::ctx(), &appid(), &OpenId::parse("r2").unwrap())
        .await
        .unwrap();
    super::login(&auth, "o-r3").await;
    // Binds, unbinds and rebinds (to another user, to the same one), a user moving
    // from one identity to another, an erasure of a bound account, an import.
    for openid in ["o-x1", "o-x2", "o-x3", "o-x4", "o-x5"] {
        login_at(&store, openid, t(0)).await;
    }
    bind_at(&store, "o-x1", 101, t(1)).await;
    unbind_at(&store, "o-x1", 101, t(2)).await;
    bind_at(&store, "o-x1", 102, t(3)).await;
    bind_at(&store, "o-x2", 103, t(1)).await;
    unbind_at(&store, "o-x2", 103, t(2)).await;
    bind_at(&store, "o-x2", 103, t(3)).await;
    bind_at(&store, "o-x3", 104, t(1)).await;
    decide(
        &store,
        "o-x3",
        SocialAccountCommand::ErasePersonalData { at: t(2) },
    )
    .await;
    bind_at(&store, "o-x4", 106, t(1)).await;
    unbind_at(&store, "o-x4", 106, t(2)).await;
    bind_at(&store, "o-x5", 106, t(3)).await;
    let source = Provenance {
        system: "gitegg".into(),
        table: "t_just_auth_social".into(),
        row_id: 7,
    };
    decide(
        &store,
        "o-imp",
        SocialAccountCommand::Import {
            appid: appid(),
            channel: miniauth_domain::Channel::MiniProgram,
            openid: OpenId::parse("o-imp").unwrap(),
            unionid: None,
            nickname: Some(SealedDatum::from_sealed_text("v1.n.imp".into())),
            avatar_url: None,
            source: source.clone(),
            recorded_there: t(0),
            binding: Some(ImportedBinding {
                user_id: user(105),
                source,
                bound_there: t(0),
            }),
            at: t(1),
        },
    )
    .await;
    login_at(&store, "o-imp", t(2)).await;
    store.catch_up().await.unwrap();
    let before = read_model_rows(&db).await;
    let bindings: Vec<&String> = before.iter().filter(|r| r.starts_with("binding")).collect();
    assert_eq!(bindings.len(), 6, "{bindings:#?}");
    for (openid, user) in [("o-x1", 102), ("o-x2", 103), ("o-x5", 106), ("o-imp", 105)] {
        let row = format!("binding {APPID} {openid} {user}");
        assert!(bindings.contains(&&row), "{row} in {bindings:#?}");
    }

    // Replayed in batches of a few events, accounts span batches, and each batch is
    // read while the one before is written.
    let mut calls = Vec::new();
    let small = store
        .rebuild_read_models_in_batches(3, |done, total| calls.push((done, total)))
        .await
        .unwrap();
    assert!(calls.len() > 10, "{calls:?}");
    assert_eq!(calls.last(), Some(&(small.events, small.events)));
    assert_eq!(read_model_rows(&db).await, before);

    let mut calls = Vec::new();
    let rebuild = store
        .rebuild_read_models(|done, total| calls.push((done, total)))
        .await
        .unwrap();
    let total = store.events_after(0, 10_000).await.unwrap().len() as u64;
    assert_eq!(rebuild.events, total);
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert!(rebuild.events_per_second() > 0.0);
    assert_eq!(read_model_rows(&db).await, before);
    // And a rebuild of a damaged read model repairs it.
    let statement = "UPDATE account_view SET bound_user = NULL";
    sql(&db, statement, statement).await;
    assert_ne!(read_model_rows(&db).await, before);
    store.rebuild_read_models(|_, _| {}).await.unwrap();
    assert_eq!(read_model_rows(&db).await, before);
}

/// A `SessionObtained` as releases before version "1" wrote it: the session number as
/// `seq`, no `unionid`, no chain hash; and its state row in a shape no longer read.
async fn version_zero_event_is_upcast_on_every_read_path(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let aggregate = id("o-old").to_string();
    let payload = format!(
        "{{\"SessionObtained\":{{\"appid\":\"{APPID}\",\"openid\":\"o-old\",\
         \"session_key\":\"v1.x.y\",\"seq\":3,\"occurred_at\":\"2025-06-01T00:00:00Z\"}}}}"
    );
    let insert = format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('SocialAccount', '{aggregate}', 1, 'SessionObtained', '0', \
         '{payload}', '{{\"actor\":\"wechat\"}}')"
    );
    sql(&db, &insert, &insert).await;
    let state = format!(
        "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, payload, updated_at) \
         VALUES ('SocialAccount', '{aggregate}', 1, '{{\"old_shape\":true}}', 0)"
    );
    sql(&db, &state, &state).await;

    // Loading the aggregate replays it through the upcaster.
    let es = store.event_store();
    let mut context = es.load_aggregate(&aggregate).await.unwrap();
    assert_eq!(context.aggregate().latest_session(), 3);
    drop(context);
    // So does the read model's projection.
    let view = store
        .account(&appid(), &OpenId::parse("o-old").unwrap())
        .await
        .unwrap()
        .expect("projected");
    assert_eq!(view.latest_session, 3);
    // And the history and exports.
    let history = store
        .history(&appid(), &OpenId::parse("o-old").unwrap())
        .await
        .unwrap();
    assert_eq!(history[0].event_version, "3", "read as the current version");
    assert_eq!(history[0].session_seq, Some(3));
    assert_eq!(history[0].hash, None);
    let stored = store.events_after(0, 10).await.unwrap();
    assert_eq!(stored[0].event_version, "3");
    let raw = store.export(0, 10).await.unwrap();
    assert_eq!(raw[0].event_version, "0", "exports keep what was stored");

    // The current code continues the stream, and the chain starts after the legacy event.
    login_at(&store, "o-old", t(0)).await;
    let mut context = es.load_aggregate(&aggregate).await.unwrap();
    assert_eq!(context.aggregate().latest_session(), 4);
    drop(context);
    let report = store.verify().await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!((report.legacy, report.chained), (1, 1));
    // A legacy event after the chain started would be suspicious.
    let late = insert
        .replace("', 1, 'SessionObtained'", "', 3, 'SessionObtained'")
        .replace("\"seq\":3", "\"seq\":9");
    sql(&db, &late, &late).await;
    let report = store.verify().await.unwrap();
    assert!(report
        .findings
        .iter()
        .any(|f| f.kind == FindingKind::Inserted && f.sequence == Some(3)));
}
