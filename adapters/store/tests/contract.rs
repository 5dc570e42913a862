//! The storage contract: the same tests against SQLite and PostgreSQL (each PostgreSQL
//! test in a fresh database of its own; see `support`).

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Duration, Utc};
use cqrs_es::{AggregateContext, AggregateError, EventStore};
use miniauth_application::ports::{
    AccountCreation, BindingRegistry, Claim, ClaimError, CommitError, LoadedAccount,
    NewAccountUser, NewUser, Password, PersonalDataVault, PortError, RefreshError,
    RefreshTokenStore, Registration, SessionOwner, SessionScope, TokenSubject, UserDirectory,
};
use miniauth_application::{Actor, AppError, PhoneInput, RegistrationPolicy, RequestContext};
use miniauth_domain::{
    AccountId, AppId, BindMethod, OpenId, PersonalField, PhoneNumber, ProfileSource, SealedDatum,
    SealedSecret, SessionKey, SocialAccountCommand, SocialAccountEvent, TenantId, UserId,
};
use miniauth_store::{AccountEventStore, Store, StoreError};
use support::{appid, service, tenant, Engine, FakeWeChat, TestDb};

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Engine::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Engine::Postgres).await;
                }
            )*
        }
    };
}

contract!(
    state_row_equals_replay_after_many_commits,
    concurrent_appends_conflict,
    the_account_port_applies_events_once_and_refuses_a_stale_version,
    long_history_loads_as_fast_as_a_new_account,
    events_after_reads_the_log_in_commit_order_with_metadata,
    users_are_unique_per_tenant_and_check_passwords,
    discard_unbound_keeps_bound_and_password_users,
    registry_claims_are_unique_both_ways,
    a_lagging_projection_keeps_a_rebind_claim,
    refresh_tokens_rotate_once_and_detect_reuse,
    sessions_die_by_scope_and_by_absolute_lifetime,
    purge_removes_dead_refresh_tokens_only,
    usage_counters_count_atomically_across_instances,
    vault_seals_and_forgets,
    key_material_is_shared_between_instances,
    read_models_catch_up_after_a_crash,
    an_undecodable_event_stops_the_catch_up,
    race_two_users_bind_one_identity,
    race_one_user_binds_two_identities,
    race_registrations_for_one_phone,
    race_fifty_logins_of_one_openid,
    no_phone_or_session_key_in_the_database,
    erasure_keeps_history_replayable,
    orphan_sweep_removes_unbound_registrations,
    v1_sealed_rows_keep_opening_and_are_resealed_bound_to_their_owner,
    sealed_user_columns_do_not_open_in_another_row,
    erasure_leaves_nothing_readable_with_the_server_key,
);

/// The audit contract (point-in-time replay, tamper evidence, rebuilds, upcasting).
#[path = "audit/mod.rs"]
mod audit;

fn ctx() -> RequestContext {
    RequestContext {
        request_id: "req-1".into(),
        actor: Actor::Cli,
        client_ip: Some("127.0.0.1".parse().unwrap()),
    }
}

fn account(openid: &str) -> AccountId {
    AccountId::new(&appid(), &OpenId::parse(openid).unwrap())
}

fn session(openid: &str, n: u64) -> SocialAccountEvent {
    SocialAccountEvent::SessionObtained(miniauth_domain::SessionObtained {
        appid: appid(),
        openid: OpenId::parse(openid).unwrap(),
        unionid: None,
        channel: miniauth_domain::Channel::MiniProgram,
        session_key: Some(SealedSecret::from_sealed_text(format!("v1.sealed.{n}"))),
        session_seq: n,
        occurred_at: Utc::now(),
    })
}

/// Decides `command` on a freshly loaded state and commits it, as the service does.
async fn run(es: &AccountEventStore, id: &AccountId, command: SocialAccountCommand) {
    let mut context = es.load_aggregate(id.as_str()).await.unwrap();
    let events = context.aggregate().decide(command).unwrap();
    es.commit(events, context, ctx().metadata(Utc::now()))
        .await
        .unwrap();
}

fn obtain(openid: &str) -> SocialAccountCommand {
    SocialAccountCommand::ObtainSession {
        appid: appid(),
        openid: OpenId::parse(openid).unwrap(),
        unionid: None,
        session_key: SealedSecret::from_sealed_text("v1.x.y".into()),
        at: Utc::now(),
    }
}

async fn state_row_equals_replay_after_many_commits(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let es = store.event_store();
    let id = account("o-many");
    for round in 0..60u64 {
        run(&es, &id, obtain("o-many")).await;
        let mut context = es.load_aggregate(id.as_str()).await.unwrap();
        let seq = context.aggregate().latest_session();
        let proof = miniauth_domain::SessionProof::ticket(seq);
        let command = match round % 4 {
            0 => SocialAccountCommand::AcceptProfile {
                proof,
                nickname: SealedDatum::from_sealed_text(format!("n{round}")),
                avatar_url: SealedDatum::from_sealed_text(format!("a{round}")),
                unionid: None,
                via: ProfileSource::ClientSupplied,
                at: Utc::now(),
            },
            1 => SocialAccountCommand::Bind {
                proof,
                user_id: UserId::new(7).unwrap(),
                via: BindMethod::CurrentUser,
                at: Utc::now(),
            },
            2 => SocialAccountCommand::Unbind {
                user_id: UserId::new(7).unwrap(),
                reason: miniauth_domain::UnbindReason::UserRequest,
                at: Utc::now(),
            },
            _ => SocialAccountCommand::ErasePersonalData { at: Utc::now() },
        };
        let events = context.aggregate().decide(command).unwrap();
        es.commit(events, context, HashMap::new()).await.unwrap();
    }
    // Several events in one commit, too.
    let context = es.load_aggregate(id.as_str()).await.unwrap();
    let next = context.sequence();
    let s = context.state().latest_session();
    es.commit(
        vec![session("o-many", s + 1), session("o-many", s + 2)],
        context,
        HashMap::new(),
    )
    .await
    .unwrap();

    let mut loaded = es.load_aggregate(id.as_str()).await.unwrap();
    let replayed = es.replay(id.as_str()).await.unwrap();
    assert_eq!(loaded.sequence(), next + 2);
    assert_eq!(*loaded.aggregate(), replayed);
    assert_eq!(replayed.event_count(), 122);
    assert_eq!(replayed.latest_session(), 62);
    assert_eq!(es.load_events(id.as_str()).await.unwrap().len(), 122);
    // A fresh connection reads the same state.
    let again = db.connect().await;
    let mut reloaded = again
        .event_store()
        .load_aggregate(id.as_str())
        .await
        .unwrap();
    assert_eq!(*reloaded.aggregate(), replayed);
}

async fn concurrent_appends_conflict(engine: Engine) {
    let db = TestDb::new(engine).await;
    let first = db.connect().await;
    let second = db.connect().await;
    let id = account("o-race");
    run(&first.event_store(), &id, obtain("o-race")).await;
    // Two instances load the same version; the second append must lose.
    let a = first
        .event_store()
        .load_aggregate(id.as_str())
        .await
        .unwrap();
    let b = second
        .event_store()
        .load_aggregate(id.as_str())
        .await
        .unwrap();
    first
        .event_store()
        .commit(vec![session("o-race", 2)], a, HashMap::new())
        .await
        .unwrap();
    let lost = second
        .event_store()
        .commit(vec![session("o-race", 2)], b, HashMap::new())
        .await;
    assert!(
        matches!(lost, Err(AggregateError::AggregateConflict)),
        "{lost:?}"
    );
    let mut fresh = second
        .event_store()
        .load_aggregate(id.as_str())
        .await
        .unwrap();
    assert_eq!(fresh.sequence(), 2);
    assert_eq!(fresh.aggregate().latest_session(), 2);
    assert_eq!(
        second
            .event_store()
            .load_events(id.as_str())
            .await
            .unwrap()
            .len(),
        2
    );
}

/// The port the use cases commit through: the state row is the pre-commit state with
/// the new events applied exactly once, and a commit after a stale version is a typed
/// conflict that writes nothing.
async fn the_account_port_applies_events_once_and_refuses_a_stale_version(engine: Engine) {
    // Here only: the store is a cqrs-es `EventStore` too, with a `commit` of its own.
    use miniauth_application::ports::AccountRepository;

    let db = TestDb::new(engine).await;
    let (first, second) = (db.connect().await, db.connect().await);
    let (a, b) = (first.event_store(), second.event_store());
    let id = account("o-port");
    let new = AccountRepository::load(&a, &id).await.unwrap();
    assert_eq!(new.version(), 0);
    AccountRepository::commit(&a, new, vec![session("o-port", 1)], HashMap::new())
        .await
        .unwrap();

    let winner = AccountRepository::load(&a, &id).await.unwrap();
    let loser = AccountRepository::load(&b, &id).await.unwrap();
    assert_eq!((winner.version(), loser.version()), (1, 1));
    let metadata = ctx().metadata(Utc::now());
    AccountRepository::commit(&a, winner, vec![session("o-port", 2)], metadata.clone())
        .await
        .unwrap();
    let lost = AccountRepository::commit(&b, loser, vec![session("o-port", 2)], metadata).await;
    assert_eq!(lost, Err(CommitError::Conflict));

    let loaded = AccountRepository::load(&b, &id).await.unwrap();
    let replayed = b.replay(id.as_str()).await.unwrap();
    assert_eq!(loaded.version(), 2);
    assert_eq!(*loaded.state(), replayed);
    assert_eq!(replayed.event_count(), 2);
    assert_eq!(replayed.latest_session(), 2);
    let log = b.load_events(id.as_str()).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].metadata["actor"], "cli");
    drop(loaded);

    // Only an account this store loaded carries what its next event chains to.
    let foreign = LoadedAccount::new(id.clone(), replayed, 2);
    let refused =
        AccountRepository::commit(&b, foreign, vec![session("o-port", 3)], HashMap::new()).await;
    assert!(
        matches!(refused, Err(CommitError::Port(PortError::Internal(_)))),
        "{refused:?}"
    );
    assert_eq!(b.load_events(id.as_str()).await.unwrap().len(), 2);
}

async fn long_history_loads_as_fast_as_a_new_account(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let es = store.event_store().without_projection();
    let id = account("o-long");
    let mut seq = 0;
    for _ in 0..50 {
        let context = es.load_aggregate(id.as_str()).await.unwrap();
        let events = (1..=200).map(|i| session("o-long", seq + i)).collect();
        seq += 200;
        es.commit(events, context, HashMap::new()).await.unwrap();
    }
    run(&es, &account("o-short"), obtain("o-short")).await;
    let time = |openid: &'static str| {
        let es = es.clone();
        async move {
            let mut best = std::time::Duration::MAX;
            for _ in 0..5 {
                let started = std::time::Instant::now();
                let mut c = es.load_aggregate(account(openid).as_str()).await.unwrap();
                assert!(c.aggregate().latest_session() > 0);
                best = best.min(started.elapsed());
            }
            best
        }
    };
    let long = time("o-long").await;
    let short = time("o-short").await;
    let mut context = es.load_aggregate(id.as_str()).await.unwrap();
    assert_eq!(context.sequence(), 10_000);
    assert_eq!(context.aggregate().latest_session(), 10_000);
    // A replay of 10,000 events takes far longer than this bound; the state row does not.
    assert!(
        long < short * 5 + std::time::Duration::from_millis(20),
        "10,000-event account loaded in {long:?}, a new one in {short:?}"
    );
}

async fn events_after_reads_the_log_in_commit_order_with_metadata(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let es = store.event_store();
    run(&es, &account("o-a"), obtain("o-a")).await;
    run(&es, &account("o-b"), obtain("o-b")).await;
    run(&es, &account("o-a"), obtain("o-a")).await;
    let all = store.events_after(0, 100).await.unwrap();
    let order: Vec<(String, i64)> = all
        .iter()
        .map(|e| (e.aggregate_id.clone(), e.sequence))
        .collect();
    assert_eq!(
        order,
        vec![
            (account("o-a").to_string(), 1),
            (account("o-b").to_string(), 1),
            (account("o-a").to_string(), 2)
        ]
    );
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(all[0].event_type, "SessionObtained");
    assert_eq!(all[0].event_version, "3");
    assert_eq!(all[0].metadata["request_id"], "req-1");
    assert_eq!(all[0].metadata["actor"], "cli");
    assert_eq!(all[0].metadata["client_ip"], "127.0.0.1");
    assert!(all[0].metadata.contains_key("recorded_at"));
    let rest = store.events_after(all[0].position, 1).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].position, all[1].position);
}

fn phone(digits: &str) -> PhoneNumber {
    PhoneNumber::new(digits, "86").unwrap()
}

async fn users_are_unique_per_tenant_and_check_passwords(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let users = store.users();
    let Registration::Created(alice) = users
        .register(NewUser {
            tenant: tenant(),
            mobile: phone("13800138000"),
            nickname: Some("Alice".into()),
            avatar_url: Some("https://a/1.png".into()),
        })
        .await
        .unwrap()
    else {
        panic!("first registration must create a user");
    };
    assert_eq!(alice.mobile, Some(phone("13800138000")));
    assert_eq!(alice.nickname.as_deref(), Some("Alice"));
    let again = users
        .register(NewUser {
            tenant: tenant(),
            mobile: phone("13800138000"),
            nickname: Some("Alice".into()),
            avatar_url: None,
        })
        .await
        .unwrap();
    assert_eq!(again, Registration::PhoneTaken);
    // Another tenant may have the same number; the same nickname is no identity.
    let other = miniauth_domain::TenantId::parse("other").unwrap();
    assert!(matches!(
        users
            .register(NewUser {
                tenant: other.clone(),
                mobile: phone("13800138000"),
                nickname: Some("Alice".into()),
                avatar_url: None
            })
            .await
            .unwrap(),
        Registration::Created(_)
    ));
    assert_eq!(
        users
            .find_by_phone(&tenant(), &phone("13800138000"))
            .await
            .unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        users
            .find_by_phone(&tenant(), &phone("13900139000"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(users.get(alice.id).await.unwrap(), Some(alice.clone()));

    let new = |account: &str, mobile: Option<&str>| NewAccountUser {
        tenant: tenant(),
        account: account.into(),
        password: Password::new("correct horse"),
        mobile: mobile.map(phone),
        nickname: Some("Bob".into()),
    };
    let AccountCreation::Created(bob) = users
        .create_account(new("bob", Some("13700137000")))
        .await
        .unwrap()
    else {
        panic!("bob must be created");
    };
    assert_eq!(
        users.create_account(new("bob", None)).await.unwrap(),
        AccountCreation::AccountTaken
    );
    assert_eq!(
        users
            .create_account(new("carol", Some("13800138000")))
            .await
            .unwrap(),
        AccountCreation::PhoneTaken
    );
    let ok = users
        .check_password(&tenant(), "bob", &Password::new("correct horse"))
        .await
        .unwrap();
    assert_eq!(ok.map(|u| u.id), Some(bob.id));
    assert_eq!(
        users
            .check_password(&tenant(), "bob", &Password::new("wrong"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        users
            .check_password(&tenant(), "nobody", &Password::new("x"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        users
            .check_password(&other, "bob", &Password::new("correct horse"))
            .await
            .unwrap(),
        None
    );
    // The console finds users by account name, per tenant, exactly.
    let found = users.find_by_account(&tenant(), " bob ").await.unwrap();
    assert_eq!(found.map(|u| u.id), Some(bob.id));
    assert_eq!(users.find_by_account(&other, "bob").await.unwrap(), None);
    assert_eq!(users.find_by_account(&tenant(), "bo").await.unwrap(), None);
}

async fn discard_unbound_keeps_bound_and_password_users(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let users = store.users();
    let register = |digits: &'static str| {
        let users = users.clone();
        async move {
            match users
                .register(NewUser {
                    tenant: tenant(),
                    mobile: phone(digits),
                    nickname: None,
                    avatar_url: None,
                })
                .await
                .unwrap()
            {
                Registration::Created(u) => u,
                Registration::PhoneTaken => panic!("fresh number"),
            }
        }
    };
    let orphan = register("13000000001").await;
    let bound = register("13000000002").await;
    store
        .registry()
        .claim(&appid(), &OpenId::parse("o-bound").unwrap(), bound.id)
        .await
        .unwrap();
    let AccountCreation::Created(admin) = users
        .create_account(NewAccountUser {
            tenant: tenant(),
            account: "admin".into(),
            password: Password::new("password1"),
            mobile: None,
            nickname: None,
        })
        .await
        .unwrap()
    else {
        panic!("admin must be created")
    };
    for user in [orphan.id, bound.id, admin.id] {
        users.discard_unbound(user).await.unwrap();
    }
    assert_eq!(users.get(orphan.id).await.unwrap(), None);
    assert!(users.get(bound.id).await.unwrap().is_some());
    assert!(users.get(admin.id).await.unwrap().is_some());
}

async fn registry_claims_are_unique_both_ways(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let registry = store.registry();
    let (o1, o2) = (OpenId::parse("o-1").unwrap(), OpenId::parse("o-2").unwrap());
    let (u1, u2) = (UserId::new(1).unwrap(), UserId::new(2).unwrap());
    assert_eq!(registry.claim(&appid(), &o1, u1).await.unwrap(), Claim::New);
    assert_eq!(
        registry.claim(&appid(), &o1, u1).await.unwrap(),
        Claim::Existing
    );
    assert_eq!(
        registry.claim(&appid(), &o1, u2).await,
        Err(ClaimError::IdentityTaken(u1))
    );
    assert_eq!(
        registry.claim(&appid(), &o2, u1).await,
        Err(ClaimError::UserHasIdentity)
    );
    let other_app = miniauth_domain::AppId::parse("wx00000000000000ff").unwrap();
    assert_eq!(
        registry.claim(&other_app, &o2, u1).await.unwrap(),
        Claim::New
    );
    assert_eq!(
        registry.identity_of(&appid(), u1).await.unwrap(),
        Some(o1.clone())
    );
    assert_eq!(registry.bindings_of(u1).await.unwrap().len(), 2);
    // Releasing someone else's claim does nothing.
    registry.release(&appid(), &o1, u2).await.unwrap();
    assert_eq!(
        registry.identity_of(&appid(), u1).await.unwrap(),
        Some(o1.clone())
    );
    registry.release(&appid(), &o1, u1).await.unwrap();
    assert_eq!(registry.identity_of(&appid(), u1).await.unwrap(), None);
    assert_eq!(registry.claim(&appid(), &o1, u2).await.unwrap(), Claim::New);
}

/// Bound, unbound, then claimed again by a rebind whose event is not committed yet:
/// the projection of the Unbound must not release the younger claim. A claim whose
/// release a crash lost is released by it. Log positions order them, not clocks.
async fn a_lagging_projection_keeps_a_rebind_claim(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let es = store.event_store().without_projection();
    let registry = store.registry();
    let (user, other) = (UserId::new(7).unwrap(), UserId::new(8).unwrap());
    // Unbound by an instance whose clock runs an hour ahead of the registry's.
    let ahead = Utc::now() + Duration::hours(1);
    let (rebound, lost) = (
        OpenId::parse("o-rebind").unwrap(),
        OpenId::parse("o-lost").unwrap(),
    );
    for (openid, user) in [(&rebound, user), (&lost, other)] {
        let id = AccountId::new(&appid(), openid);
        run(&es, &id, obtain(openid.as_str())).await;
        registry.claim(&appid(), openid, user).await.unwrap();
        let bind = SocialAccountCommand::Bind {
            proof: miniauth_domain::SessionProof::ticket(1),
            user_id: user,
            via: miniauth_domain::BindMethod::CurrentUser,
            at: Utc::now(),
        };
        run(&es, &id, bind).await;
        let unbind = SocialAccountCommand::Unbind {
            user_id: user,
            reason: miniauth_domain::UnbindReason::UserRequest,
            at: ahead,
        };
        run(&es, &id, unbind).await;
    }
    // o-lost: the process died before the release. o-rebind: released, then claimed
    // again at once, in the same millisecond as its Unbound at the latest.
    registry.release(&appid(), &rebound, user).await.unwrap();
    assert_eq!(
        registry.claim(&appid(), &rebound, user).await.unwrap(),
        Claim::New
    );

    store.catch_up().await.unwrap();

    assert_eq!(
        registry.identity_of(&appid(), user).await.unwrap(),
        Some(rebound),
        "the projection of the earlier Unbound released the rebind's claim"
    );
    assert_eq!(
        registry.identity_of(&appid(), other).await.unwrap(),
        None,
        "the claim whose release was lost is released by the projection"
    );
}

fn owner(user: i64, app: Option<AppId>) -> SessionOwner {
    SessionOwner {
        user_id: UserId::new(user).unwrap(),
        tenant: tenant(),
        appid: app,
    }
}

/// One use, few tries: fifty concurrent counts on two instances get fifty different
/// answers; a try given back lowers the count; purge forgets only what expired.
async fn usage_counters_count_atomically_across_instances(engine: Engine) {
    use miniauth_application::ports::{UsageCounters, UsageKey};
    let db = TestDb::new(engine).await;
    let (one, two) = (db.connect().await, db.connect().await);
    let now = Utc::now();
    let key = UsageKey::TicketExchanges("f".repeat(64));
    let later = now + chrono::Duration::hours(1);
    let mut counts = Vec::new();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let counters = if i % 2 == 0 {
                one.usage_counters()
            } else {
                two.usage_counters()
            };
            let key = key.clone();
            tokio::spawn(async move { counters.count(&key, later).await.unwrap() })
        })
        .collect();
    for task in tasks {
        counts.push(task.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=50).collect::<Vec<u32>>());

    let tries = UsageKey::PayloadTries("a".repeat(64));
    let counters = one.usage_counters();
    assert_eq!(
        counters
            .count(&tries, now - chrono::Duration::seconds(1))
            .await
            .unwrap(),
        1
    );
    counters.uncount(&tries).await.unwrap();
    assert_eq!(
        counters
            .count(&tries, now - chrono::Duration::seconds(1))
            .await
            .unwrap(),
        1
    );

    assert_eq!(
        counters.purge(now).await.unwrap(),
        1,
        "only the expired counter"
    );
    assert_eq!(counters.count(&tries, later).await.unwrap(), 1, "forgotten");
    assert_eq!(counters.count(&key, later).await.unwrap(), 51, "kept");

    // Reading a count counts nothing, and another instance reads the same.
    let ended = UsageKey::ConsoleSessionEnded("s".repeat(43));
    assert_eq!(two.usage_counters().uses(&ended).await.unwrap(), 0);
    counters.count(&ended, later).await.unwrap();
    assert_eq!(two.usage_counters().uses(&ended).await.unwrap(), 1);
    assert_eq!(two.usage_counters().uses(&ended).await.unwrap(), 1);
    assert_eq!(counters.uses(&key).await.unwrap(), 51);
}

async fn refresh_tokens_rotate_once_and_detect_reuse(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let tokens = store.refresh_tokens();
    let owner = owner(5, Some(appid()));
    let now = Utc::now();
    let (subject, first) = tokens.issue(&owner, now).await.unwrap();
    assert_eq!(
        subject,
        TokenSubject::new(owner.clone(), subject.session.clone())
    );
    assert_eq!(first.expires_in, 30 * 24 * 3600);
    assert!(!format!("{first:?}").contains(&first.token));
    let (who, second) = tokens.rotate(&first.token, now).await.unwrap();
    assert_eq!(who, subject, "a rotation stays in its session");
    assert_ne!(second.token, first.token);
    // The rotated token presented again: reuse, and the whole family dies.
    assert_eq!(
        tokens.rotate(&first.token, now).await.unwrap_err(),
        RefreshError::Reused
    );
    assert_eq!(
        tokens.rotate(&second.token, now).await.unwrap_err(),
        RefreshError::Unknown
    );
    assert!(!tokens.session_live(&subject, now).await.unwrap());
    assert_eq!(
        tokens.rotate("never-issued", now).await.unwrap_err(),
        RefreshError::Unknown
    );
    // Expiry.
    let (_, old) = tokens
        .issue(&owner, now - Duration::days(31))
        .await
        .unwrap();
    assert_eq!(
        tokens.rotate(&old.token, now).await.unwrap_err(),
        RefreshError::Expired
    );
    // Logout revokes only the caller's own family.
    let (_, mine) = tokens.issue(&owner, now).await.unwrap();
    let stranger = UserId::new(6).unwrap();
    assert_eq!(
        tokens.revoke(&mine.token, stranger, now).await.unwrap_err(),
        RefreshError::Unknown
    );
    assert!(tokens.rotate(&mine.token, now).await.is_ok());
    let (fresh_subject, fresh) = tokens.issue(&owner, now).await.unwrap();
    tokens
        .revoke(&fresh.token, owner.user_id, now)
        .await
        .unwrap();
    assert_eq!(
        tokens.rotate(&fresh.token, now).await.unwrap_err(),
        RefreshError::Unknown
    );
    assert!(!tokens.session_live(&fresh_subject, now).await.unwrap());
    // Concurrent rotations of one token: exactly one winner.
    let (_, contested) = tokens.issue(&owner, now).await.unwrap();
    let attempts = (0..20).map(|_| {
        let tokens = tokens.clone();
        let token = contested.token.clone();
        tokio::spawn(async move { tokens.rotate(&token, Utc::now()).await })
    });
    let results = futures::future::join_all(attempts).await;
    let winners = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(winners, 1);
    assert!(results
        .iter()
        .all(|r| matches!(r.as_ref().unwrap(), Ok(_) | Err(RefreshError::Reused))));
}

async fn sessions_die_by_scope_and_by_absolute_lifetime(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let tokens = store.refresh_tokens();
    let now = Utc::now();
    let other_app = AppId::parse("wx00000000000000b2").unwrap();
    let (in_app, in_app_token) = tokens.issue(&owner(5, Some(appid())), now).await.unwrap();
    let (elsewhere, elsewhere_token) = tokens
        .issue(&owner(5, Some(other_app.clone())), now)
        .await
        .unwrap();
    let (by_password, _) = tokens.issue(&owner(5, None), now).await.unwrap();
    let (someone_else, _) = tokens.issue(&owner(6, Some(appid())), now).await.unwrap();
    for subject in [&in_app, &elsewhere, &by_password, &someone_else] {
        assert!(tokens.session_live(subject, now).await.unwrap());
    }
    // A session id is only good for its own user and tenant.
    let forged = TokenSubject {
        user_id: UserId::new(6).unwrap(),
        ..in_app.clone()
    };
    assert!(!tokens.session_live(&forged, now).await.unwrap());
    let other_tenant = TokenSubject {
        tenant: TenantId::parse("t2").unwrap(),
        ..in_app.clone()
    };
    assert!(!tokens.session_live(&other_tenant, now).await.unwrap());

    // One session (logout with the access token alone): only that one, only its user's.
    let user = UserId::new(5).unwrap();
    let (second, _) = tokens.issue(&owner(5, Some(appid())), now).await.unwrap();
    let one = SessionScope::Session(second.session.clone());
    let stranger = UserId::new(6).unwrap();
    assert_eq!(
        tokens.revoke_sessions(stranger, &one, now).await.unwrap(),
        0
    );
    assert!(tokens.session_live(&second, now).await.unwrap());
    assert_eq!(tokens.revoke_sessions(user, &one, now).await.unwrap(), 1);
    assert!(!tokens.session_live(&second, now).await.unwrap());
    for subject in [&in_app, &elsewhere, &by_password, &someone_else] {
        assert!(tokens.session_live(subject, now).await.unwrap());
    }

    // One app's sessions (unbind, erasure): only the user's, only that app's.
    let scope = SessionScope::App(appid());
    assert_eq!(tokens.revoke_sessions(user, &scope, now).await.unwrap(), 1);
    assert!(!tokens.session_live(&in_app, now).await.unwrap());
    assert_eq!(
        tokens.rotate(&in_app_token.token, now).await.unwrap_err(),
        RefreshError::Unknown
    );
    for subject in [&elsewhere, &by_password, &someone_else] {
        assert!(tokens.session_live(subject, now).await.unwrap());
    }
    assert_eq!(tokens.revoke_sessions(user, &scope, now).await.unwrap(), 0);

    // Every session of the user (disabled).
    let (rotated, _) = tokens.rotate(&elsewhere_token.token, now).await.unwrap();
    assert_eq!(
        tokens
            .revoke_sessions(user, &SessionScope::All, now)
            .await
            .unwrap(),
        2
    );
    for subject in [&rotated, &by_password] {
        assert!(!tokens.session_live(subject, now).await.unwrap());
    }
    assert!(tokens.session_live(&someone_else, now).await.unwrap());

    // The absolute lifetime (90 days by default): rotating every day keeps a session
    // going only until then, and each token's expiry is clipped to it.
    let born = now - Duration::days(89) - Duration::hours(23);
    let (old, mut token) = tokens.issue(&owner(7, None), born).await.unwrap();
    let mut at = born;
    while at + Duration::days(1) < now {
        at += Duration::days(1);
        token = tokens.rotate(&token.token, at).await.unwrap().1;
    }
    // The last rotation, a day before the end: valid for that day, not for 30.
    assert_eq!(token.expires_in, 86_400);
    assert!(tokens.session_live(&old, now).await.unwrap());
    let past_end = now + Duration::hours(2);
    assert!(!tokens.session_live(&old, past_end).await.unwrap());
    assert_eq!(
        tokens.rotate(&token.token, past_end).await.unwrap_err(),
        RefreshError::Expired
    );
}

async fn purge_removes_dead_refresh_tokens_only(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let tokens = store.refresh_tokens();
    let now = Utc::now();
    let count = |table: &'static str| row_count(&db, table);
    // Expired long ago (never used), revoked long ago, rotated (its successor lives),
    // and a live one.
    let (_, _expired) = tokens
        .issue(&owner(1, None), now - Duration::days(40))
        .await
        .unwrap();
    let (_, revoked) = tokens
        .issue(&owner(2, None), now - Duration::days(3))
        .await
        .unwrap();
    tokens
        .revoke(
            &revoked.token,
            UserId::new(2).unwrap(),
            now - Duration::days(2),
        )
        .await
        .unwrap();
    let (rotated_subject, rotated) = tokens
        .issue(&owner(3, None), now - Duration::days(3))
        .await
        .unwrap();
    let (_, successor) = tokens
        .rotate(&rotated.token, now - Duration::days(2))
        .await
        .unwrap();
    let (live_subject, live) = tokens.issue(&owner(4, None), now).await.unwrap();
    assert_eq!(count("refresh_tokens").await, 5);
    assert_eq!(count("refresh_families").await, 4);

    // Bounded: one row per statement.
    let cutoff = now - Duration::days(1);
    let first = store.purge_refresh_tokens(cutoff, 1).await.unwrap();
    assert_eq!(first.tokens, 1);
    let mut total = first;
    loop {
        let purged = store.purge_refresh_tokens(cutoff, 1).await.unwrap();
        total.tokens += purged.tokens;
        total.families += purged.families;
        if purged.tokens == 0 && purged.families == 0 {
            break;
        }
    }
    assert_eq!(total.tokens, 2, "the expired and the revoked token");
    assert_eq!(total.families, 2, "their families, left without tokens");
    assert_eq!(count("refresh_tokens").await, 3);
    assert_eq!(count("refresh_families").await, 2);
    // What lives is untouched: the rotated family still detects reuse.
    assert!(tokens.session_live(&live_subject, now).await.unwrap());
    assert!(tokens.session_live(&rotated_subject, now).await.unwrap());
    assert!(tokens.rotate(&live.token, now).await.is_ok());
    assert_eq!(
        tokens.rotate(&rotated.token, now).await.unwrap_err(),
        RefreshError::Reused
    );
    assert_eq!(
        tokens.rotate(&successor.token, now).await.unwrap_err(),
        RefreshError::Unknown
    );
}

async fn vault_seals_and_forgets(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let vault = store.vault();
    let alice = account("o-alice");
    let bob = account("o-bob");
    let key = SessionKey::parse("tiihtNczf5v6AKRyjwEUhQ==").unwrap();
    let sealed = vault.seal_secret(&alice, &key).await.unwrap();
    assert!(sealed.as_sealed_text().starts_with("v2."));
    assert!(!sealed.as_sealed_text().contains("tiihtNczf5v6AKRyjwEUhQ"));
    assert_eq!(vault.unseal_secret(&alice, &sealed).await.unwrap(), key);
    // Bound to its account: under another account it does not open.
    assert!(vault.unseal_secret(&bob, &sealed).await.is_err());

    let datum = vault
        .seal_personal(&alice, PersonalField::Phone, "13800138000")
        .await
        .unwrap();
    assert!(!datum.as_sealed_text().contains("13800138000"));
    assert_eq!(
        vault
            .unseal_personal(&alice, PersonalField::Phone, &datum)
            .await
            .unwrap()
            .as_deref(),
        Some("13800138000")
    );
    // Bound to its field: a sealed phone does not open as a nickname.
    assert!(vault
        .unseal_personal(&alice, PersonalField::Nickname, &datum)
        .await
        .is_err());
    // Another account's key does not open it.
    vault
        .seal_personal(&bob, PersonalField::Phone, "x")
        .await
        .unwrap();
    assert!(vault
        .unseal_personal(&bob, PersonalField::Phone, &datum)
        .await
        .unwrap_or(None)
        .is_none());
    vault.forget(&alice).await.unwrap();
    assert_eq!(
        vault
            .unseal_personal(&alice, PersonalField::Phone, &datum)
            .await
            .unwrap(),
        None
    );
    // A new datum after erasure gets a new key; the old one stays unreadable.
    let later = vault
        .seal_personal(&alice, PersonalField::Phone, "13900139000")
        .await
        .unwrap();
    assert_eq!(
        vault
            .unseal_personal(&alice, PersonalField::Phone, &later)
            .await
            .unwrap()
            .as_deref(),
        Some("13900139000")
    );
    assert_eq!(
        vault
            .unseal_personal(&alice, PersonalField::Phone, &datum)
            .await
            .unwrap(),
        None
    );
    // Across a reconnect (same server key), sealed values still open.
    let again = db.connect().await;
    assert_eq!(
        again.vault().unseal_secret(&alice, &sealed).await.unwrap(),
        key
    );
}

async fn key_material_is_shared_between_instances(engine: Engine) {
    let db = TestDb::new(engine).await;
    let (a, b) = (db.connect().await, db.connect().await);
    let first = a.key_material("jwt", || vec![1, 2, 3]).await.unwrap();
    let second = b
        .key_material("jwt", || panic!("must not generate twice"))
        .await
        .unwrap();
    assert_eq!(first, vec![1, 2, 3]);
    assert_eq!(second, first);
    // Racing first uses agree on one winner.
    let racers = (0..10u8).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            store
                .key_material("tickets", move || vec![i; 32])
                .await
                .unwrap()
        })
    });
    let keys: Vec<Vec<u8>> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]));
}

async fn login(
    auth: &miniauth_application::MiniAuth,
    code: &str,
) -> miniauth_application::LoginOutcome {
    auth.login(&ctx(), support::APPID, code).await.unwrap()
}

async fn read_models_catch_up_after_a_crash(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let wechat = Arc::new(FakeWeChat::default());
    // Commits go through the event store only: the projection "crashed" each time.
    let crashing = service(
        &store,
        store.event_store().without_projection(),
        wechat,
        RegistrationPolicy::Auto,
    );
    let first = login(&crashing, "o-crash-1").await;
    let outcome = crashing
        .verify_phone(
            &ctx(),
            support::APPID,
            &first.ticket.token,
            PhoneInput::Code("p-13800138000".into()),
        )
        .await
        .unwrap();
    login(&crashing, "o-crash-2").await;
    assert!(store.read_models().lag().await.unwrap() > 0);
    store.close().await;

    let restarted = db.connect().await; // catches up at start-up
    assert_eq!(restarted.read_models().lag().await.unwrap(), 0);
    let view = restarted
        .account(&appid(), &OpenId::parse("crash").unwrap())
        .await
        .unwrap()
        .expect("projected after restart");
    assert_eq!(view.bound_user, Some(outcome.user_id));
    assert_eq!(view.latest_session, 2);
    assert!(view.has_phone);
    assert_eq!(view.sequence, 4);
    let bindings = restarted.bindings_of(outcome.user_id).await.unwrap();
    assert_eq!(bindings.len(), 1);
    // Catch-up again changes nothing; nor does replaying the whole log into the
    // read models once more (each row remembers the sequence it reflects).
    assert_eq!(restarted.catch_up().await.unwrap().events, 0);
    rewind_checkpoint(&db).await;
    assert_eq!(restarted.read_models().lag().await.unwrap(), 4);
    assert_eq!(restarted.catch_up().await.unwrap().events, 4);
    assert_eq!(
        restarted.bindings_of(outcome.user_id).await.unwrap(),
        bindings
    );
    assert_eq!(
        restarted
            .registry()
            .bindings_of(outcome.user_id)
            .await
            .unwrap(),
        bindings
    );
    assert_eq!(
        restarted
            .account(&appid(), &OpenId::parse("crash").unwrap())
            .await
            .unwrap(),
        Some(view)
    );

    // Without a restart: a question the read model may be behind on catches up first.
    let crashing = service(
        &restarted,
        restarted.event_store().without_projection(),
        Arc::new(FakeWeChat::default()),
        RegistrationPolicy::Auto,
    );
    login(&crashing, "o-late").await;
    let late = restarted
        .account(&appid(), &OpenId::parse("late").unwrap())
        .await
        .unwrap();
    assert_eq!(late.map(|v| v.latest_session), Some(1));
}

/// An event no upcaster makes readable is not skipped: the catch-up projects what comes
/// before it, stops there with an error naming it, and stops there again next time.
async fn an_undecodable_event_stops_the_catch_up(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let es = store.event_store().without_projection();
    run(&es, &account("o-before"), obtain("o-before")).await;
    let before: i64 = scalar(&db, "SELECT MAX(position) FROM events").await;
    execute(
        &db,
        &format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) VALUES ('SocialAccount', '{}', 1, \
             'SessionObtained', '2', '{{\"SessionObtained\":{{\"appid\":7}}}}', '{{}}')",
            account("o-broken")
        ),
    )
    .await;
    let broken: i64 = scalar(&db, "SELECT MAX(position) FROM events").await;
    run(&es, &account("o-after"), obtain("o-after")).await;

    for _ in 0..2 {
        let error = store.catch_up().await.expect_err("an undecodable event");
        let message = miniauth_application::ports::Chain(&error).to_string();
        assert!(
            message.contains(&format!("position {broken}")) && message.contains("SessionObtained"),
            "the error names the event: {message}"
        );
        let checkpoint: i64 = scalar(&db, "SELECT position FROM projection_checkpoints").await;
        assert_eq!(
            checkpoint, before,
            "the checkpoint stops before the broken event"
        );
        assert_eq!(
            row_count(&db, "account_view").await,
            1,
            "only o-before is projected"
        );
    }
    assert!(store.read_models().lag().await.unwrap() > 0);
    assert!(
        store
            .account(&appid(), &OpenId::parse("o-after").unwrap())
            .await
            .is_err(),
        "a question the read model cannot catch up on fails instead of answering stale"
    );
    // The store still opens (its tools read the log as stored), and stops there again.
    let reopened = db.connect().await;
    assert!(reopened.catch_up().await.is_err());
    let checkpoint: i64 = scalar(&db, "SELECT position FROM projection_checkpoints").await;
    assert_eq!(checkpoint, before);
}

/// One `i64` read behind the store's back.
async fn scalar(db: &TestDb, sql: &str) -> i64 {
    match db.engine {
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.config.url).await.unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&db.config.url).await.unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }
}

/// How many rows `table` holds, read behind the store's back.
async fn row_count(db: &TestDb, table: &str) -> i64 {
    scalar(db, &format!("SELECT COUNT(*) FROM {table}")).await
}

/// Sets the read models' checkpoint back to the start of the log, behind the store's
/// back.
async fn rewind_checkpoint(db: &TestDb) {
    execute(db, "UPDATE projection_checkpoints SET position = 0").await;
}

/// Two instances over one database, as in production.
async fn two_instances(
    db: &TestDb,
    policy: RegistrationPolicy,
) -> (Store, Vec<Arc<miniauth_application::MiniAuth>>) {
    let (a, b) = (db.connect().await, db.connect().await);
    let wechat = Arc::new(FakeWeChat::default());
    let services = vec![
        Arc::new(service(&a, a.event_store(), wechat.clone(), policy)),
        Arc::new(service(&b, b.event_store(), wechat, policy)),
    ];
    (a, services)
}

async fn password_user(store: &Store, name: &str) -> UserId {
    match store
        .users()
        .create_account(NewAccountUser {
            tenant: tenant(),
            account: name.into(),
            password: Password::new("password1"),
            mobile: None,
            nickname: None,
        })
        .await
        .unwrap()
    {
        AccountCreation::Created(u) => u.id,
        other => panic!("{other:?}"),
    }
}

/// The log, the read models, the registry and the users table tell the same story.
async fn assert_consistent(store: &Store) {
    store.catch_up().await.unwrap();
    let es = store.event_store();
    let events = store.events_after(0, 100_000).await.unwrap();
    let mut ids: Vec<String> = events.iter().map(|e| e.aggregate_id.clone()).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let replayed = es.replay(&id).await.unwrap();
        let mut loaded = es.load_aggregate(&id).await.unwrap();
        assert_eq!(*loaded.aggregate(), replayed, "state row of {id}");
        drop(loaded);
        let account = AccountId::parse(&id).unwrap();
        let view = store
            .account(&account.appid(), &account.openid())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.bound_user, replayed.bound_user(), "read model of {id}");
        assert_eq!(view.latest_session, replayed.latest_session());
        if let Some(user) = replayed.bound_user() {
            let registry = store.registry();
            assert_eq!(
                registry.identity_of(&account.appid(), user).await.unwrap(),
                Some(account.openid()),
                "registry of {id}"
            );
            assert!(
                store.users().get(user).await.unwrap().is_some(),
                "user of {id}"
            );
        }
    }
}

/// The subject of an access token of `user` (the use case trusts its caller's token).
fn logged_in(user: UserId) -> TokenSubject {
    TokenSubject {
        user_id: user,
        tenant: tenant(),
        appid: None,
        session: miniauth_application::ports::SessionId::parse("s1").unwrap(),
    }
}

fn is_conflict(error: &AppError) -> bool {
    matches!(error.kind(), miniauth_application::ErrorKind::Conflict)
}

async fn race_two_users_bind_one_identity(engine: Engine) {
    let db = TestDb::new(engine).await;
    let (store, services) = two_instances(&db, RegistrationPolicy::Auto).await;
    let ticket = login(&services[0], "o-contested").await.ticket.token;
    let mut users = Vec::new();
    for i in 0..50 {
        users.push(password_user(&store, &format!("user{i}")).await);
    }
    let attempts = users.iter().enumerate().map(|(i, user)| {
        let auth = services[i % 2].clone();
        let (ticket, user) = (ticket.clone(), *user);
        tokio::spawn(async move {
            auth.bind_current_user(&ctx(), support::APPID, &ticket, &logged_in(user))
                .await
        })
    });
    let results: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<UserId> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    // The ticket binds once: most losers are refused when they spend it, any that got
    // past it meet the registry's conflict.
    for error in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            is_conflict(error)
                || matches!(error, miniauth_application::AppError::TicketAlreadyUsed),
            "a clear refusal, not {error:?}"
        );
    }
    let view = store
        .account(&appid(), &OpenId::parse("contested").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.bound_user, Some(winners[0]));
    assert_consistent(&store).await;
}

async fn race_one_user_binds_two_identities(engine: Engine) {
    let db = TestDb::new(engine).await;
    let (store, services) = two_instances(&db, RegistrationPolicy::Auto).await;
    let user = password_user(&store, "solo").await;
    let mut tickets = Vec::new();
    for i in 0..50 {
        tickets.push(
            login(&services[i % 2], &format!("o-id{i}"))
                .await
                .ticket
                .token,
        );
    }
    let attempts = tickets.into_iter().enumerate().map(|(i, ticket)| {
        let auth = services[i % 2].clone();
        tokio::spawn(async move {
            auth.bind_current_user(&ctx(), support::APPID, &ticket, &logged_in(user))
                .await
        })
    });
    let results: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for error in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(is_conflict(error), "a clear conflict, not {error:?}");
    }
    assert_eq!(store.bindings_of(user).await.unwrap().len(), 1);
    assert_eq!(store.registry().bindings_of(user).await.unwrap().len(), 1);
    assert_consistent(&store).await;
}

async fn race_registrations_for_one_phone(engine: Engine) {
    let db = TestDb::new(engine).await;
    let (store, services) = two_instances(&db, RegistrationPolicy::Auto).await;
    let mut tickets = Vec::new();
    for i in 0..50 {
        tickets.push(
            login(&services[i % 2], &format!("o-phone{i}"))
                .await
                .ticket
                .token,
        );
    }
    let attempts = tickets.into_iter().enumerate().map(|(i, ticket)| {
        let auth = services[i % 2].clone();
        tokio::spawn(async move {
            auth.verify_phone(
                &ctx(),
                support::APPID,
                &ticket,
                PhoneInput::Code("p-13800138000".into()),
            )
            .await
        })
    });
    let results: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "one identity binds the number's user: {results:?}"
    );
    for error in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(is_conflict(error), "a clear conflict, not {error:?}");
    }
    let user = store
        .users()
        .find_by_phone(&tenant(), &phone("13800138000"))
        .await
        .unwrap()
        .expect("one user has the number");
    assert_eq!(user.id, winners[0].user_id);
    // No orphan: every user in the table is that one.
    for id in 1..=60 {
        let id = UserId::new(id).unwrap();
        if id != user.id {
            assert_eq!(
                store.users().get(id).await.unwrap(),
                None,
                "orphan user {id}"
            );
        }
    }
    assert_consistent(&store).await;
}

async fn race_fifty_logins_of_one_openid(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let auth = Arc::new(service(
        &store,
        store.event_store(),
        Arc::new(FakeWeChat::default()),
        RegistrationPolicy::Auto,
    ));
    let attempts = (0..50).map(|i| {
        let auth = auth.clone();
        tokio::spawn(async move {
            auth.login(&ctx(), support::APPID, &format!("o-busy-{i}"))
                .await
        })
    });
    let results: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let tickets = support::PlainTickets;
    let mut seqs: Vec<u64> = results
        .iter()
        .map(|r| {
            let outcome = r.as_ref().expect("every login succeeds");
            miniauth_application::ports::TicketCodec::verify(
                &tickets,
                &outcome.ticket.token,
                Utc::now(),
            )
            .unwrap()
            .session_seq
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<u64>>());
    assert_consistent(&store).await;
}

async fn no_phone_or_session_key_in_the_database(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let wechat = Arc::new(FakeWeChat::default());
    let auth = service(
        &store,
        store.event_store(),
        wechat.clone(),
        RegistrationPolicy::Auto,
    );
    let outcome = login(&auth, "o-private").await;
    auth.submit_profile(
        &ctx(),
        support::APPID,
        &outcome.ticket.token,
        miniauth_application::ProfileInput::ClientSupplied {
            nickname: "Zhang Wei".into(),
            avatar_url: "https://thirdwx.qlogo.cn/zhangwei.png".into(),
        },
    )
    .await
    .unwrap();
    auth.verify_phone(
        &ctx(),
        support::APPID,
        &outcome.ticket.token,
        PhoneInput::Code("p-13812345678".into()),
    )
    .await
    .unwrap();
    let session_key = wechat.session_keys.lock().unwrap()[0].clone();
    let secrets = [
        "13812345678",
        session_key.as_str(),
        "Zhang Wei",
        "zhangwei.png",
    ];
    let haystack = dump(&db, &store).await;
    assert!(haystack.len() > 1000, "the dump holds the tables");
    assert!(haystack.contains(support::APPID), "the dump is readable");
    for secret in secrets {
        assert!(
            !haystack.contains(secret),
            "{secret:?} found in plain text in the database"
        );
    }
}

/// Every byte of the SQLite files, or every row of every PostgreSQL table as text.
async fn dump(db: &TestDb, store: &Store) -> String {
    match db.engine {
        Engine::Sqlite => {
            store.close().await;
            let mut all = Vec::new();
            for entry in std::fs::read_dir(&db.dir).unwrap() {
                all.extend(std::fs::read(entry.unwrap().path()).unwrap());
            }
            String::from_utf8_lossy(&all).into_owned()
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&db.config.url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            let mut all = String::new();
            for table in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT t::text FROM {table} t"))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                all.push_str(&rows.join("\n"));
            }
            all
        }
    }
}

async fn erasure_keeps_history_replayable(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let auth = service(
        &store,
        store.event_store(),
        Arc::new(FakeWeChat::default()),
        RegistrationPolicy::Auto,
    );
    let outcome = login(&auth, "o-erase").await;
    let bound = auth
        .verify_phone(
            &ctx(),
            support::APPID,
            &outcome.ticket.token,
            PhoneInput::Code("p-13812345678".into()),
        )
        .await
        .unwrap();
    let id = account("erase");
    let mut before = store
        .event_store()
        .load_aggregate(id.as_str())
        .await
        .unwrap();
    let (sealed_phone, _) = before
        .aggregate()
        .phone()
        .map(|(p, c)| (p.clone(), c.to_owned()))
        .unwrap();
    drop(before);
    assert_eq!(
        store
            .vault()
            .unseal_personal(&id, PersonalField::Phone, &sealed_phone)
            .await
            .unwrap()
            .as_deref(),
        Some("13812345678")
    );

    auth.erase(&ctx(), &appid(), &OpenId::parse("erase").unwrap())
        .await
        .unwrap();

    assert_eq!(
        store
            .vault()
            .unseal_personal(&id, PersonalField::Phone, &sealed_phone)
            .await
            .unwrap(),
        None
    );
    let history = store.event_store().load_events(id.as_str()).await.unwrap();
    let types: Vec<String> = history
        .iter()
        .map(|e| cqrs_es::DomainEvent::event_type(&e.payload))
        .collect();
    assert_eq!(
        types,
        [
            "SessionObtained",
            "PhoneVerified",
            "UserBound",
            "Unbound",
            "PersonalDataErased"
        ]
    );
    let replayed = store.event_store().replay(id.as_str()).await.unwrap();
    assert!(!replayed.has_phone());
    assert_eq!(replayed.bound_user(), None);
    let view = store
        .account(&appid(), &OpenId::parse("erase").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(view.erased && !view.has_phone && view.bound_user.is_none());
    assert_eq!(
        store
            .registry()
            .identity_of(&appid(), bound.user_id)
            .await
            .unwrap(),
        None
    );
    // Erasing again is harmless.
    auth.erase(&ctx(), &appid(), &OpenId::parse("erase").unwrap())
        .await
        .unwrap();
    assert_consistent(&store).await;
}

async fn orphan_sweep_removes_unbound_registrations(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let users = store.users();
    // A registration whose process died before the bind: no claim, no event.
    let Registration::Created(orphan) = users
        .register(NewUser {
            tenant: tenant(),
            mobile: phone("13100000001"),
            nickname: None,
            avatar_url: None,
        })
        .await
        .unwrap()
    else {
        panic!("fresh number")
    };
    // A claim whose bind never committed.
    let stale = store
        .registry()
        .claim(
            &appid(),
            &OpenId::parse("o-stale").unwrap(),
            UserId::new(999).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stale, Claim::New);
    // A real binding, which must survive.
    let auth = service(
        &store,
        store.event_store(),
        Arc::new(FakeWeChat::default()),
        RegistrationPolicy::Auto,
    );
    let outcome = login(&auth, "o-kept").await;
    let kept = auth
        .verify_phone(
            &ctx(),
            support::APPID,
            &outcome.ticket.token,
            PhoneInput::Code("p-13100000002".into()),
        )
        .await
        .unwrap();

    // Young orphans are left alone: they may be a binding in flight.
    assert_eq!(
        store.sweep_orphans(Duration::minutes(10)).await.unwrap(),
        miniauth_store::Sweep::default()
    );
    db.clock.advance(Duration::minutes(11));
    let swept = store.sweep_orphans(Duration::minutes(10)).await.unwrap();
    assert_eq!(swept.users_removed, 1);
    assert_eq!(swept.claims_released, 1);
    assert_eq!(users.get(orphan.id).await.unwrap(), None);
    assert!(users.get(kept.user_id).await.unwrap().is_some());
    assert_eq!(
        store
            .registry()
            .identity_of(&appid(), kept.user_id)
            .await
            .unwrap(),
        Some(OpenId::parse("kept").unwrap())
    );
}

#[tokio::test]
async fn postgres_without_a_server_key_is_refused_clearly() {
    let db = TestDb::new(Engine::Postgres).await;
    let config = miniauth_store::StoreConfig {
        server_key: None,
        ..db.config.clone()
    };
    let error = Store::connect(&config, db.clock.clone())
        .await
        .err()
        .expect("refused");
    assert!(matches!(error, StoreError::MissingServerKey));
    assert!(error.to_string().contains("openssl rand -base64 32"));
}

#[tokio::test]
async fn sqlite_generates_its_server_key_once_with_private_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new(Engine::Sqlite).await;
    let store = db.connect().await;
    let key_file = db.dir.join("server.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let bytes = std::fs::read(&key_file).unwrap();
    assert_eq!(bytes.len(), 32);
    let sealed = store
        .vault()
        .seal_secret(
            &account("o-key"),
            &SessionKey::parse("tiihtNczf5v6AKRyjwEUhQ==").unwrap(),
        )
        .await
        .unwrap();
    store.close().await;
    let again = db.connect().await;
    assert_eq!(std::fs::read(&key_file).unwrap(), bytes);
    assert!(again
        .vault()
        .unseal_secret(&account("o-key"), &sealed)
        .await
        .is_ok());
}

#[tokio::test]
async fn default_sqlite_url_creates_file_and_directory() {
    let db = TestDb::new(Engine::Sqlite).await;
    let nested = db.dir.join("deeper/still");
    let config = miniauth_store::StoreConfig {
        url: format!("sqlite://{}/miniauth.db", nested.display()),
        ..db.config.clone()
    };
    let store = Store::connect(&config, db.clock.clone()).await.unwrap();
    store.ping().await.unwrap();
    assert!(nested.join("miniauth.db").exists());
    assert_eq!(store.engine(), miniauth_store::Engine::Sqlite);
}

#[tokio::test]
async fn in_memory_sqlite_keeps_one_database() {
    let config = miniauth_store::StoreConfig {
        url: "sqlite::memory:".into(),
        server_key: Some(miniauth_store::ServerKey::generate()),
        password_cost: miniauth_store::PasswordCost::testing(),
        ..Default::default()
    };
    let store = Store::connect(&config, Arc::new(support::TestClock::default()))
        .await
        .unwrap();
    let es = store.event_store();
    run(&es, &account("o-mem"), obtain("o-mem")).await;
    run(&es, &account("o-mem"), obtain("o-mem")).await;
    assert_eq!(store.events_after(0, 10).await.unwrap().len(), 2);
    assert_eq!(
        store
            .account(&appid(), &OpenId::parse("o-mem").unwrap())
            .await
            .unwrap()
            .map(|v| v.sequence),
        Some(2)
    );
}

#[tokio::test]
async fn bad_urls_and_costs_are_refused_clearly() {
    let bad_url = miniauth_store::StoreConfig {
        url: "mysql://x".into(),
        ..Default::default()
    };
    assert!(matches!(
        Store::connect(&bad_url, Arc::new(support::TestClock::default())).await,
        Err(StoreError::BadUrl(_))
    ));
    let bad_cost = miniauth_store::StoreConfig {
        url: "sqlite::memory:".into(),
        server_key: Some(miniauth_store::ServerKey::generate()),
        password_cost: miniauth_store::PasswordCost {
            memory_kib: 1,
            iterations: 0,
            parallelism: 0,
        },
        ..Default::default()
    };
    assert!(matches!(
        Store::connect(&bad_cost, Arc::new(support::TestClock::default())).await,
        Err(StoreError::InvalidConfig(_))
    ));
}

/// Seals as releases before v2 did: AES-256-GCM, associated data = `legacy_ad`.
fn seal_v1(key: &[u8; 32], legacy_ad: &str, plaintext: &[u8]) -> String {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let nonce: [u8; 12] = rand::random();
    let ciphertext = aes_gcm::Aes256Gcm::new(key.into())
        .encrypt(
            aes_gcm::Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: legacy_ad.as_bytes(),
            },
        )
        .unwrap();
    format!(
        "v1.{}.{}",
        URL_SAFE_NO_PAD.encode(nonce),
        URL_SAFE_NO_PAD.encode(ciphertext)
    )
}

fn user_id(raw: i64) -> UserId {
    UserId::new(raw).unwrap()
}

async fn texts(db: &TestDb, query: &str) -> Vec<Option<String>> {
    match db.engine {
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.config.url).await.unwrap();
            let rows = sqlx::query_scalar(query).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&db.config.url).await.unwrap();
            let rows = sqlx::query_scalar(query).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    }
}

/// Runs one statement behind the store's back.
async fn execute(db: &TestDb, statement: &str) {
    match db.engine {
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.config.url).await.unwrap();
            sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&db.config.url).await.unwrap();
            sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// Rows of an earlier release (v1: associated data naming the purpose at most) keep
/// opening; `migrate` re-seals those outside the log as v2, bound to their owner.
async fn v1_sealed_rows_keep_opening_and_are_resealed_bound_to_their_owner(engine: Engine) {
    let mut db = TestDb::new(engine).await;
    let server = [9u8; 32];
    db.config.server_key = Some(miniauth_store::ServerKey::new(server));
    let store = db.connect().await;
    let users = store.users();
    let Registration::Created(user) = users
        .register(NewUser {
            tenant: tenant(),
            mobile: phone("13800138000"),
            nickname: Some("Ann".into()),
            avatar_url: None,
        })
        .await
        .unwrap()
    else {
        panic!("registered")
    };
    let id = user.id.get();
    // What the earlier release wrote: users' columns, a data key, a personal datum and a
    // session key in the log, and key material — all v1.
    let alice = account("o-v1");
    let data_key = [5u8; 32];
    execute(
        &db,
        &format!(
            "UPDATE users SET mobile_sealed = '{}', nickname_sealed = '{}' WHERE id = {id}",
            seal_v1(&server, "mobile", b"86 13800138000"),
            seal_v1(&server, "nickname", b"Ann"),
        ),
    )
    .await;
    execute(
        &db,
        &format!(
            "INSERT INTO data_keys (account_id, key_id, sealed_key, created_at) \
             VALUES ('{alice}', 'k1', '{}', 0)",
            seal_v1(&server, &format!("data_key:{alice}"), &data_key)
        ),
    )
    .await;
    execute(
        &db,
        &format!(
            "INSERT INTO key_material (name, sealed, created_at) VALUES ('legacy', '{}', 0)",
            seal_v1(&server, "key_material:legacy", b"shared")
        ),
    )
    .await;
    let datum = seal_v1(&data_key, alice.as_str(), b"13900139000");
    let datum = SealedDatum::from_sealed_text(format!("v1.k1.{}", &datum[3..]));
    let session = SealedSecret::from_sealed_text(seal_v1(
        &server,
        "session_key",
        b"tiihtNczf5v6AKRyjwEUhQ==",
    ));

    // They open before the re-seal (a rolling upgrade: an old instance wrote them)...
    let check = |store: Store| {
        let (datum, session, alice) = (datum.clone(), session.clone(), alice.clone());
        async move {
            let user = store.users().get(user_id(id)).await.unwrap().unwrap();
            assert_eq!(user.mobile, Some(phone("13800138000")));
            assert_eq!(user.nickname.as_deref(), Some("Ann"));
            let vault = store.vault();
            assert_eq!(
                vault
                    .unseal_personal(&alice, PersonalField::Phone, &datum)
                    .await
                    .unwrap()
                    .as_deref(),
                Some("13900139000")
            );
            assert!(vault.unseal_secret(&alice, &session).await.is_ok());
            assert_eq!(
                store
                    .key_material("legacy", || panic!("exists"))
                    .await
                    .unwrap(),
                b"shared"
            );
        }
    };
    check(store.clone()).await;
    // ... and after it: migrate re-seals the rows, never the log.
    let resealed = store.reseal().await.unwrap();
    assert_eq!(
        (
            resealed.user_columns,
            resealed.data_keys,
            resealed.key_material
        ),
        (2, 1, 1)
    );
    let rows = texts(
        &db,
        "SELECT mobile_sealed FROM users UNION ALL SELECT nickname_sealed FROM users \
         UNION ALL SELECT sealed_key FROM data_keys UNION ALL SELECT sealed FROM key_material",
    )
    .await;
    for row in rows.into_iter().flatten() {
        assert!(row.starts_with("v2."), "{row}");
    }
    check(store.clone()).await;
    assert!(store.reseal().await.unwrap().is_empty());
    // A restart migrates again: nothing left to do, everything opens.
    check(db.connect().await).await;
}

/// The users table's sealed columns name their row: copied to another user (by SQL,
/// without the server key), they do not open — nor does a lookup hash moved with them.
async fn sealed_user_columns_do_not_open_in_another_row(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    let users = store.users();
    let mut ids = Vec::new();
    for digits in ["13800138001", "13800138002"] {
        let Registration::Created(user) = users
            .register(NewUser {
                tenant: tenant(),
                mobile: phone(digits),
                nickname: Some(format!("N{digits}")),
                avatar_url: None,
            })
            .await
            .unwrap()
        else {
            panic!("registered")
        };
        ids.push(user.id.get());
    }
    let (a, b) = (ids[0], ids[1]);
    execute(
        &db,
        &format!(
            "UPDATE users SET nickname_sealed = (SELECT nickname_sealed FROM users WHERE id = {a}) \
             WHERE id = {b}"
        ),
    )
    .await;
    assert!(
        users.get(user_id(b)).await.is_err(),
        "a's nickname opens as b's"
    );
    // The lookup hash of a's phone moved to b (a lets go of it first: it is unique).
    let hash = texts(
        &db,
        &format!("SELECT mobile_hash FROM users WHERE id = {a}"),
    )
    .await[0]
        .clone()
        .unwrap();
    execute(
        &db,
        &format!("UPDATE users SET mobile_hash = NULL WHERE id = {a}"),
    )
    .await;
    execute(
        &db,
        &format!("UPDATE users SET mobile_hash = '{hash}', nickname_sealed = NULL WHERE id = {b}"),
    )
    .await;
    assert!(
        users
            .find_by_phone(&tenant(), &phone("13800138001"))
            .await
            .is_err(),
        "a's phone finds b"
    );
}

/// After an erasure nothing of the person opens with the server key: no data key, the
/// unionid only as a keyed hash in the log (not in the read model), the client IP
/// sealed, the user the identity registered cleared; SQLite overwrites what it deletes.
async fn erasure_leaves_nothing_readable_with_the_server_key(engine: Engine) {
    let db = TestDb::new(engine).await;
    let store = db.connect().await;
    if engine == Engine::Sqlite {
        assert_eq!(store.secure_delete().await.unwrap(), Some(true));
    }
    let auth = service(
        &store,
        store.event_store(),
        Arc::new(FakeWeChat::default()),
        RegistrationPolicy::Auto,
    );
    let outcome = login(&auth, "o-gone-union").await;
    let registered = auth
        .verify_phone(
            &ctx(),
            support::APPID,
            &outcome.ticket.token,
            PhoneInput::Code("p-13812345670".into()),
        )
        .await
        .unwrap();
    let user = registered.user_id;
    let id = account("gone");
    let view = store
        .account(&appid(), &OpenId::parse("gone").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(view.unionid_hash.is_some());
    let log = texts(&db, "SELECT CAST(payload AS TEXT) FROM events").await;
    assert!(
        log.iter().flatten().all(|p| !p.contains("union-gone")),
        "{log:?}"
    );
    let metadata = texts(&db, "SELECT CAST(metadata AS TEXT) FROM events").await;
    assert!(metadata.iter().flatten().all(|m| !m.contains("127.0.0.1")));

    auth.erase(&ctx(), &appid(), &OpenId::parse("gone").unwrap())
        .await
        .unwrap();
    store.catch_up().await.unwrap();

    assert_eq!(
        texts(
            &db,
            &format!("SELECT key_id FROM data_keys WHERE account_id = '{id}'")
        )
        .await
        .len(),
        0
    );
    let view = store
        .account(&appid(), &OpenId::parse("gone").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.unionid_hash, None);
    let cleared = store.users().get(user).await.unwrap().unwrap();
    assert_eq!((cleared.mobile, cleared.nickname), (None, None));
    assert_eq!(
        store
            .users()
            .find_by_phone(&tenant(), &phone("13812345670"))
            .await
            .unwrap(),
        None
    );
    let history = store
        .history(&appid(), &OpenId::parse("gone").unwrap())
        .await
        .unwrap();
    assert_eq!(history[0].unionid.as_deref(), Some("erased"));
    assert!(history
        .iter()
        .all(|e| e.client_ip.as_deref() == Some("erased") || e.client_ip.is_none()));
    assert!(store.verify().await.unwrap().is_clean());
}
