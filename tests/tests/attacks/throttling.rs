//! Attacks: throttling (see attacks.rs).
//!
//! Behind a reverse proxy every TCP peer is the proxy. The service believes
//! `X-Forwarded-For` from the proxies it is told to trust (here: the loopback the tests
//! connect from), so each test plays clients at documentation addresses behind it.

use miniauth_e2e::{on_both_engines, spawn_app_with, Answer, Engine, TestApp, APP};
use serde_json::json;

/// The proxy the tests connect through.
const PROXY: &str = "127.0.0.1/32";
/// The attacker's address, as the proxy saw it.
const ATTACKER: &str = "198.51.100.7";
/// The owner of the attacked account, at home.
const OWNER: &str = "203.0.113.9";
/// Another user of the same service.
const NEIGHBOUR: &str = "203.0.113.77";

on_both_engines!(
    wrong_passwords_behind_a_proxy_lock_out_other_users,
    password_guesses_spread_over_instances_escape_the_limit,
    login_floods_spend_the_apps_wechat_quota,
    admin_token_guesses_are_counted_before_they_are_compared,
);

/// `GET /v1/admin/webhooks/parked` with `token` as the admin token, from `client`.
async fn admin_from(app: &TestApp, client: &str, token: &str) -> Answer {
    let request = app
        .client
        .get(format!("{}/v1/admin/webhooks/parked", app.address))
        .header("x-forwarded-for", client)
        .bearer_auth(token);
    Answer::read(request.send().await.expect("GET /v1/admin/…")).await
}

/// An attacker guesses the admin token through the admin API (the door the console's
/// sign-in limit used not to cover), first one at a time, then as a burst of
/// simultaneous requests that would all pass a check made before any failed. Each try
/// is counted before the compare: the limit holds for the burst too, and once over it
/// even the right token is refused from that address. Failed passwords from the
/// operator's address spend another budget, and a right token forgives the tries.
async fn admin_token_guesses_are_counted_before_they_are_compared(engine: Engine) {
    let app = behind_proxy(engine, |config| {
        config.throttle.admin_token_tries_per_client = 5;
        config.throttle.password_failures_per_client = 2;
    })
    .await;
    let token = app.admin_token.clone();

    // The operator's network: failed passwords there leave the admin token usable.
    for _ in 0..3 {
        password_grant_from(&app, OWNER, "nobody", "wrong-password").await;
    }
    admin_from(&app, OWNER, &token).await.ok(200);
    // A right token forgives the address's earlier tries.
    for _ in 0..4 {
        admin_from(&app, OWNER, "not-the-admin-token-0000")
            .await
            .problem(401, "admin_token_invalid");
    }
    admin_from(&app, OWNER, &token).await.ok(200);
    for _ in 0..4 {
        admin_from(&app, OWNER, "not-the-admin-token-0000")
            .await
            .problem(401, "admin_token_invalid");
    }
    admin_from(&app, OWNER, &token).await.ok(200);

    // The attacker's burst: 40 guesses at once, of which at most 5 are compared.
    let guesses = (0..40).map(|i| {
        let app = &app;
        async move { admin_from(app, ATTACKER, &format!("guess-{i:020}")).await }
    });
    let answers = futures::future::join_all(guesses).await;
    let compared = answers.iter().filter(|a| a.status == 401).count();
    let refused = answers.iter().filter(|a| a.status == 429).count();
    assert_eq!((compared, refused), (5, 35));
    // Over the limit, the right token is refused from there too: the limiter answers
    // before the compare, so a guess that happens to be right learns nothing.
    admin_from(&app, ATTACKER, &token)
        .await
        .problem(429, "too_many_attempts");
    // Nobody else is locked out.
    admin_from(&app, NEIGHBOUR, &token).await.ok(200);
    // A request without a token guesses nothing: refused, and not counted.
    let tokenless = app
        .client
        .get(format!("{}/v1/admin/webhooks/parked", app.address))
        .header("x-forwarded-for", NEIGHBOUR)
        .send()
        .await
        .unwrap();
    assert_eq!(tokenless.status(), 401);
    admin_from(&app, NEIGHBOUR, &token).await.ok(200);
}

/// The service behind a trusted proxy at 127.0.0.1.
async fn behind_proxy(
    engine: Engine,
    extra: impl FnOnce(&mut miniauth::config::Config),
) -> TestApp {
    spawn_app_with(engine, |config| {
        config.server.trusted_proxies = vec![PROXY.to_owned()];
        extra(config);
    })
    .await
}

/// `POST /v1/token {grant_type: password}` from `client`, through the proxy.
async fn password_grant_from(app: &TestApp, client: &str, account: &str, password: &str) -> Answer {
    let request = app
        .client
        .post(format!("{}/v1/token", app.address))
        .header("x-forwarded-for", client)
        .form(&[
            ("grant_type", "password"),
            ("account", account),
            ("password", password),
        ]);
    Answer::read(request.send().await.expect("POST /v1/token")).await
}

/// `POST /v1/apps/{APP}/sessions {code}` from `client`, through the proxy.
async fn login_from(app: &TestApp, client: &str, code: &str) -> Answer {
    let request = app
        .client
        .post(format!("{}/v1/apps/{APP}/sessions", app.address))
        .header("x-forwarded-for", client)
        .json(&json!({ "code": code }));
    Answer::read(request.send().await.expect("POST /sessions")).await
}

/// Five wrong passwords used to answer 429 to every client behind the proxy (one
/// shared address) and to the account's owner, correct password or not, for 15
/// minutes. Now the guesser is stopped at their own address only.
async fn wrong_passwords_behind_a_proxy_lock_out_other_users(engine: Engine) {
    let app = behind_proxy(engine, |_| {}).await;
    let (_, victim, victim_password) = app.password_user(None).await;
    let (_, neighbour, neighbour_password) = app.password_user(None).await;

    for _ in 0..5 {
        password_grant_from(&app, ATTACKER, &victim, "guess")
            .await
            .problem(401, "invalid_credentials");
    }
    // The guesser is throttled, even with the right password.
    let refused = password_grant_from(&app, ATTACKER, &victim, &victim_password).await;
    refused.problem(429, "too_many_attempts");
    assert!(refused.retry_after() > 0);

    // Another user behind the same proxy logs in.
    password_grant_from(&app, NEIGHBOUR, &neighbour, &neighbour_password)
        .await
        .ok(200);
    // The owner logs in from their own address.
    password_grant_from(&app, OWNER, &victim, &victim_password)
        .await
        .ok(200);
    // A header the client wrote left of the proxy's entry does not free the guesser.
    password_grant_from(&app, &format!("192.0.2.1, {ATTACKER}"), &victim, "guess")
        .await
        .problem(429, "too_many_attempts");
}

/// The counters lived in each process: behind a load balancer, every instance gave a
/// guesser a fresh budget. Now they are in the store, shared by every instance.
async fn password_guesses_spread_over_instances_escape_the_limit(engine: Engine) {
    let first = behind_proxy(engine, |_| {}).await;
    let second = first.another_instance().await;
    let (_, victim, victim_password) = first.password_user(None).await;

    for attempt in 0..5 {
        let instance = if attempt % 2 == 0 { &first } else { &second };
        password_grant_from(instance, ATTACKER, &victim, "guess")
            .await
            .problem(401, "invalid_credentials");
    }
    for instance in [&first, &second] {
        password_grant_from(instance, ATTACKER, &victim, &victim_password)
            .await
            .problem(429, "too_many_attempts");
    }
    // The owner is not locked out on either instance.
    password_grant_from(&second, OWNER, &victim, &victim_password)
        .await
        .ok(200);
}

/// Every login costs a code2session call against the app's quota, and one client
/// could log in as fast as it liked. Now each client has its share (here 3 a minute,
/// across instances), answered 429 `too_many_logins` with `Retry-After` beyond it.
async fn login_floods_spend_the_apps_wechat_quota(engine: Engine) {
    let app = behind_proxy(engine, |config| {
        config.throttle.logins_per_client = 3;
        config.throttle.login_window_secs = 60;
    })
    .await;
    let other_instance = app.another_instance().await;
    let wechat = app.wechat_user(None).await;

    for _ in 0..3 {
        let code = app.wx_login(APP, wechat).await;
        login_from(&app, ATTACKER, &code).await.ok(200);
    }
    let code = app.wx_login(APP, wechat).await;
    let refused = login_from(&other_instance, ATTACKER, &code).await;
    refused.problem(429, "too_many_logins");
    let retry_after = refused.retry_after();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    // GitEgg's login route shares the budget (and answers in its envelope).
    let gitegg = app
        .client
        .get(format!("{}/wx/user/{APP}/login?code={code}", app.address))
        .header("x-forwarded-for", ATTACKER)
        .send()
        .await
        .expect("GET /login");
    Answer::read(gitegg).await.envelope_err(429);
    // The refused code was not spent at WeChat: another client can still use it.
    login_from(&app, NEIGHBOUR, &code).await.ok(200);
}

/// Each password check costs ~19 MiB of argon2 memory, and nothing bounded how many
/// ran at once. Now at most `password_hashes_concurrent` run and a short queue waits;
/// the rest are answered 503 `server_busy` with `Retry-After` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_floods_run_argon2_without_bound() {
    let app = behind_proxy(Engine::Sqlite, |config| {
        config.throttle.password_hashes_concurrent = 1;
        config.throttle.password_hash_queue = Some(1);
    })
    .await;
    let (_, account, password) = app.password_user(None).await;

    // 40 guesses at once, each from its own address so that no throttle interferes.
    let answers = futures::future::join_all((0..40).map(|i| {
        let app = &app;
        let account = account.clone();
        async move {
            password_grant_from(app, &format!("198.51.100.{}", i + 10), &account, "guess").await
        }
    }))
    .await;
    let busy: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status.as_u16() == 503)
        .collect();
    for answer in &answers {
        match answer.status.as_u16() {
            401 => answer.problem(401, "invalid_credentials"),
            503 => {
                answer.problem(503, "server_busy");
                assert!(answer.retry_after() >= 1);
            }
            _ => panic!("unexpected answer {}: {}", answer.status, answer.text),
        }
    }
    assert!(
        busy.len() >= 10,
        "only {} of 40 concurrent password checks were turned away",
        busy.len()
    );
    // Once the flood is over, the owner logs in.
    password_grant_from(&app, OWNER, &account, &password)
        .await
        .ok(200);
}
