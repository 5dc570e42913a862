//! Races the uniqueness rules must win: one WeChat identity per user per app, one user
//! per phone, one user per identity. On both engines.

use miniauth_e2e::{on_both_engines, random_phone, spawn_app, Engine, APP};
use serde_json::json;

on_both_engines!(
    one_new_phone_registers_one_user,
    one_identity_binds_one_user,
);

/// Two WeChat accounts with the same new phone verify it at once: one user is
/// registered and bound once; the other request is refused (the user is bound in this
/// app), and its registration attempt leaves no orphan user.
async fn one_new_phone_registers_one_user(engine: Engine) {
    let app = spawn_app(engine).await;
    let phone = random_phone();
    let mut requests = Vec::new();
    for _ in 0..2 {
        let wechat = app.wechat_user(Some(&phone)).await;
        let ticket = app.ticket(APP, wechat).await;
        let code = app.phone_code(APP, wechat).await;
        requests.push(json!({ "ticket": ticket, "code": code }));
    }
    let before = app.snapshot().await;
    let (a, b) = tokio::join!(app.phone(APP, &requests[0]), app.phone(APP, &requests[1]));
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{} / {}", a.text, b.text);
    // The winner may be the one that found the other's fresh registration by phone
    // (`registered: false`); either way there is one user, bound once.
    let (won, lost) = if a.status == 200 { (a, b) } else { (b, a) };
    lost.problem(409, "user_already_bound_in_app");
    let user = won.body["user_id"].as_i64().expect("user_id");
    assert_eq!(app.bindings_of(user).await.len(), 1);
    let after = app.snapshot().await;
    assert_eq!(after.users, before.users + 1, "an orphan user was left");
    assert_eq!(after.bindings, before.bindings + 1);
}

/// Two users race to bind the same WeChat identity with its (logged) ticket: one wins.
async fn one_identity_binds_one_user(engine: Engine) {
    let app = spawn_app(engine).await;
    let wechat = app.wechat_user(None).await;
    let ticket = app.ticket(APP, wechat).await;
    let mut access = Vec::new();
    for _ in 0..2 {
        let (_, account, password) = app.password_user(None).await;
        access.push(app.password_tokens(&account, &password).await.access);
    }
    let before = app.snapshot().await;
    let (a, b) = tokio::join!(
        app.bind(APP, &ticket, &access[0]),
        app.bind(APP, &ticket, &access[1])
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    // A ticket binds once: the race is decided when the ticket is spent, before the
    // registry's uniqueness (which the phone race above still exercises).
    assert_eq!(statuses, [200, 401], "{} / {}", a.text, b.text);
    let lost = if a.status == 200 { b } else { a };
    lost.problem(401, "ticket_already_used");
    let after = app.snapshot().await;
    assert_eq!(after.bindings, before.bindings + 1);
    assert_eq!(
        app.event_types_after(before.last_event).await,
        ["UserBound"]
    );
}

/// Two instances on one PostgreSQL database: tickets, access tokens and refresh tokens
/// minted by one are accepted by the other, and the uniqueness rules hold across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_one_postgresql() {
    let a = spawn_app(Engine::Postgres).await;
    let b = a.another_instance().await;
    let phone = random_phone();
    let wechat = a.wechat_user(Some(&phone)).await;
    let ticket = a.ticket(APP, wechat).await;
    let code = a.phone_code(APP, wechat).await;
    let registered = b
        .phone(APP, &json!({ "ticket": ticket, "code": code }))
        .await;
    let body = registered.ok(200);
    let user = body["user_id"].as_i64().unwrap();
    let tokens = miniauth_e2e::Tokens::from_v1(&body["tokens"]);
    assert_eq!(a.me(&tokens.access).await.ok(200)["user_id"], json!(user));
    let rotated = miniauth_e2e::Tokens::from_v1(a.refresh(&tokens.refresh).await.ok(200));
    b.refresh(&tokens.refresh)
        .await
        .problem(401, "refresh_token_reused");
    a.refresh(&rotated.refresh)
        .await
        .problem(401, "refresh_token_unknown");

    // The same new phone at both instances at once: one user.
    let phone = random_phone();
    let mut requests = Vec::new();
    for _ in 0..2 {
        let wechat = a.wechat_user(Some(&phone)).await;
        let ticket = a.ticket(APP, wechat).await;
        let code = a.phone_code(APP, wechat).await;
        requests.push(json!({ "ticket": ticket, "code": code }));
    }
    let before = a.snapshot().await;
    let (x, y) = tokio::join!(a.phone(APP, &requests[0]), b.phone(APP, &requests[1]));
    let mut statuses = [x.status.as_u16(), y.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{} / {}", x.text, y.text);
    let after = a.snapshot().await;
    assert_eq!(after.users, before.users + 1, "an orphan user was left");
    assert_eq!(after.bindings, before.bindings + 1);
}
