//! Two miniauth instances on one PostgreSQL database (a fresh one on the server of
//! `MINIAUTH_TEST_DATABASE_URL`), under concurrent and conflicting load through both:
//! the same users logging in on both at once, two users racing to bind one WeChat
//! identity, two WeChat identities racing to register one phone number. Every storage
//! invariant holds, conflicts are clear 409s, and what one instance mints the other
//! accepts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use miniauth_domain::{AppId, OpenId};
use miniauth_e2e::{app as app_id, random_phone, spawn_app, Engine, TestApp, Tokens, APP};
use serde_json::json;

use crate::support::{bounded, check_invariants, token_subject, Tally};

/// Registered users who log in on both instances at once, and how often.
const SAME_USERS: usize = 4;
const LOGIN_ROUNDS: usize = 3;
/// Rounds of each race.
const RACES: usize = 4;

/// The codes a conflict may be answered with (docs/api.md).
const CONFLICTS: [&str; 4] = [
    "already_bound_to_other_user",
    "bound_to_other_user",
    "user_already_bound_in_app",
    "concurrent_update",
];

type Shared = Arc<(TestApp, TestApp, Mutex<Tally>)>;

fn openid(apps: &Shared, sim_user: u64) -> OpenId {
    apps.0
        .simulator
        .as_ref()
        .expect("the first instance runs the simulator")
        .simulator()
        .openid(&app_id(APP), sim_user)
        .expect("the user logged in")
}

fn tally(apps: &Shared, route: &str, answer: &miniauth_e2e::Answer) {
    apps.2.lock().expect("tally").add(route, answer);
}

/// One registered user logs in on both instances at the same time: each login that
/// succeeds answers tokens for that user; none fails with a 500.
async fn same_user_on_both(apps: Shared, sim_user: u64, user: i64) {
    let (a, b, _) = &*apps;
    for _ in 0..LOGIN_ROUNDS {
        let (code_a, code_b) = tokio::join!(a.wx_login(APP, sim_user), a.wx_login(APP, sim_user));
        let (x, y) = tokio::join!(a.login(APP, &code_a), b.login(APP, &code_b));
        for answer in [x, y] {
            tally(&apps, "same user on both: sessions", &answer);
            if answer.status == 200 {
                let access = answer.body["tokens"]["access_token"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a bound login without tokens: {}", answer.text));
                assert_eq!(token_subject(access), user, "{}", answer.text);
            }
        }
    }
}

/// Two password users bind the same fresh WeChat identity, one through each instance,
/// with a ticket the first instance minted: exactly one wins. Returns (identity, winner).
async fn bind_race(apps: Shared) -> (OpenId, i64) {
    let (a, b, _) = &*apps;
    let wechat = a.wechat_user(None).await;
    let ticket = a.ticket(APP, wechat).await;
    let ((u1, acc1, pw1), (u2, acc2, pw2)) =
        tokio::join!(a.password_user(None), b.password_user(None));
    // Each user's token from the other instance than the one it binds through.
    let (t1, t2) = tokio::join!(
        b.password_tokens(&acc1, &pw1),
        a.password_tokens(&acc2, &pw2)
    );
    let (x, y) = tokio::join!(
        a.bind(APP, &ticket, &t1.access),
        b.bind(APP, &ticket, &t2.access)
    );
    tally(&apps, "bind race: binding", &x);
    tally(&apps, "bind race: binding", &y);
    let mut statuses = [x.status.as_u16(), y.status.as_u16()];
    statuses.sort_unstable();
    // One ticket binds once, whichever instance each request reaches: the loser is
    // refused when it spends the ticket, before the registry's uniqueness.
    assert_eq!(statuses, [200, 401], "{} / {}", x.text, y.text);
    let (winner, loser) = if x.status == 200 {
        ((x, u1), y)
    } else {
        ((y, u2), x)
    };
    loser.problem(401, "ticket_already_used");
    assert_eq!(
        winner.0.body["user_id"],
        json!(winner.1),
        "{}",
        winner.0.text
    );
    (openid(&apps, wechat), winner.1)
}

/// Two WeChat identities with the same new phone verify it at once, one through each
/// instance, each with a ticket the other instance minted: one user, bound once.
/// Returns (winning identity, its user).
async fn phone_race(apps: Shared) -> (OpenId, i64) {
    let (a, b, _) = &*apps;
    let phone = random_phone();
    let (w1, w2) = tokio::join!(a.wechat_user(Some(&phone)), a.wechat_user(Some(&phone)));
    let (ticket1, ticket2) = tokio::join!(b.ticket(APP, w1), a.ticket(APP, w2));
    let (code1, code2) = tokio::join!(a.phone_code(APP, w1), a.phone_code(APP, w2));
    let (body1, body2) = (
        json!({ "ticket": ticket1, "code": code1 }),
        json!({ "ticket": ticket2, "code": code2 }),
    );
    let (x, y) = tokio::join!(a.phone(APP, &body1), b.phone(APP, &body2));
    tally(&apps, "phone race: phone", &x);
    tally(&apps, "phone race: phone", &y);
    let mut statuses = [x.status.as_u16(), y.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{} / {}", x.text, y.text);
    let (won, lost, wechat) = if x.status == 200 {
        (x, y, w1)
    } else {
        (y, x, w2)
    };
    assert!(
        CONFLICTS.contains(&lost.body["code"].as_str().unwrap_or_default()),
        "{}",
        lost.text
    );
    lost.problem(409, lost.body["code"].as_str().unwrap_or_default());
    let user = won.body["user_id"].as_i64().expect("user_id");
    let access = won.body["tokens"]["access_token"].as_str().expect("tokens");
    // The winner's access token, minted by one instance, is accepted by the other.
    for instance in [a, b] {
        assert_eq!(instance.me(access).await.ok(200)["user_id"], json!(user));
    }
    (openid(&apps, wechat), user)
}

/// Tickets, access tokens and refresh tokens minted by one instance work on the other;
/// a refresh token rotated on one is reused in vain on the other.
async fn minted_by_one_accepted_by_the_other(apps: Shared) -> (OpenId, i64) {
    let (a, b, _) = &*apps;
    let (user, tokens, _, wechat) = b.registered_user(APP).await;
    assert_eq!(a.me(&tokens.access).await.ok(200)["user_id"], json!(user));
    let rotated = Tokens::from_v1(a.refresh(&tokens.refresh).await.ok(200));
    b.refresh(&tokens.refresh)
        .await
        .problem(401, "refresh_token_reused");
    // Reuse revoked the whole family, on both instances.
    a.refresh(&rotated.refresh)
        .await
        .problem(401, "refresh_token_unknown");
    let ticket = a.bind_key(APP, wechat).await;
    let granted = b
        .token(&json!({ "grant_type": "ticket", "ticket": ticket }))
        .await;
    let granted = Tokens::from_v1(granted.ok(200));
    assert_eq!(token_subject(&granted.access), user);
    assert_eq!(b.me(&granted.access).await.ok(200)["user_id"], json!(user));
    (openid(&apps, wechat), user)
}

/// Everything above at once, through both instances; then the invariants of the whole
/// database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_under_conflicting_load_keep_every_invariant() {
    bounded("the two-instance load", Duration::from_secs(45), async {
        let a = spawn_app(Engine::Postgres).await;
        let b = a.another_instance().await;
        let mut registered = Vec::new();
        for _ in 0..SAME_USERS {
            let (user, _, _, wechat) = a.registered_user(APP).await;
            registered.push((wechat, user));
        }
        let apps: Shared = Arc::new((a, b, Mutex::new(Tally::default())));
        let before = apps.0.snapshot().await;

        let logins: Vec<_> = registered
            .iter()
            .map(|&(wechat, user)| tokio::spawn(same_user_on_both(apps.clone(), wechat, user)))
            .collect();
        let binds: Vec<_> = (0..RACES)
            .map(|_| tokio::spawn(bind_race(apps.clone())))
            .collect();
        let phones: Vec<_> = (0..RACES)
            .map(|_| tokio::spawn(phone_race(apps.clone())))
            .collect();
        let minted = tokio::spawn(minted_by_one_accepted_by_the_other(apps.clone()));
        for task in logins {
            task.await.expect("same users on both instances");
        }
        let appid: AppId = app_id(APP);
        let mut expected: Vec<(AppId, OpenId, i64)> = registered
            .iter()
            .map(|&(wechat, user)| (appid.clone(), openid(&apps, wechat), user))
            .collect();
        for task in binds.into_iter().chain(phones) {
            let (openid, user) = task.await.expect("a race");
            expected.push((appid.clone(), openid, user));
        }
        let (openid, user) = minted.await.expect("cross-instance tokens");
        expected.push((appid.clone(), openid, user));

        let (a, b, tally) = &*apps;
        let tally = tally.lock().expect("tally").clone();
        eprintln!("answers:\n{tally}");
        // 401 only where a used ticket is refused (the bind race).
        let bad: Vec<_> = tally
            .outside(&[200, 409])
            .into_iter()
            .filter(|line| !line.contains("bind race: binding → 401 ticket_already_used"))
            .collect();
        assert!(
            bad.is_empty(),
            "answers other than 200, 409 and a used ticket: {bad:?}\n{tally}"
        );
        for (route, status, code) in tally.0.keys() {
            if *status == 409 {
                assert!(CONFLICTS.contains(&code.as_str()), "{route} → 409 {code}");
            }
        }

        // Users: each race's password users, one per raced phone, one for the
        // cross-instance check; no orphan from a lost phone race.
        let after = a.snapshot().await;
        assert_eq!(
            after.users - before.users,
            (2 * RACES + RACES + 1) as i64,
            "users written by the load (an orphan, or a phone with two users?)"
        );
        assert_eq!(
            after.bindings - before.bindings,
            (RACES + RACES + 1) as i64,
            "registry claims written by the load"
        );
        // Both instances see the same database through their read models.
        let bound = check_invariants(&a.store, &expected).await;
        check_invariants(&b.store, &expected).await;
        assert_eq!(bound.by_identity.len(), expected.len());
        let sweep = a
            .store
            .sweep_orphans(chrono::Duration::zero())
            .await
            .expect("sweep orphans");
        assert_eq!(
            (sweep.users_removed, sweep.claims_released),
            (0, 0),
            "orphan users or unconfirmed claims were left"
        );
    })
    .await
}
