//! Attacks: token lifecycle (see attacks.rs). Tokens die with what they stood for: a
//! refresh token stops refreshing, and an access token stops working on miniauth
//! (`access_token_revoked`, checked by its `sid`), once its login session ends —
//! logout, reuse, unbind of its app, erasure, a disabled user, or the session's
//! absolute lifetime.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Duration;
use miniauth_e2e::{
    enc, on_both_engines, random_phone, spawn_app, spawn_app_with, Engine, TestApp, Tokens, APP,
};
use serde_json::{json, Value};

on_both_engines!(
    refresh_token_survives_unbind,
    refresh_token_survives_gitegg_unbind,
    refresh_token_survives_erasure,
    tokens_survive_disabling_the_user,
    access_token_survives_logout,
    access_token_survives_refresh_token_reuse,
    refresh_rotation_slides_past_the_absolute_lifetime,
);

/// The JWT's claims.
fn claims(access: &str) -> Value {
    let payload = access.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).unwrap()
}

/// A password user with a phone, bound in APP by that phone: (user id, tokens issued
/// through APP, tokens of a password login, simulator user).
async fn bound_password_user(app: &TestApp) -> (i64, Tokens, Tokens, u64) {
    let phone = random_phone();
    let (user, account, password) = app.password_user(Some(&phone)).await;
    let wechat = app.wechat_user(Some(&phone)).await;
    let ticket = app.ticket(APP, wechat).await;
    let code = app.phone_code(APP, wechat).await;
    let answer = app
        .phone(APP, &json!({ "ticket": ticket, "code": code }))
        .await;
    let body = answer.ok(200);
    assert_eq!(body["user_id"], json!(user), "{body}");
    let through_app = Tokens::from_v1(&body["tokens"]);
    let by_password = app.password_tokens(&account, &password).await;
    (user, through_app, by_password, wechat)
}

/// The refresh token no longer refreshes and the access token no longer works here.
async fn assert_dead(app: &TestApp, tokens: &Tokens) {
    app.refresh(&tokens.refresh)
        .await
        .problem(401, "refresh_token_unknown");
    app.me(&tokens.access)
        .await
        .problem(401, "access_token_revoked");
}

async fn refresh_token_survives_unbind(engine: Engine) {
    let app = spawn_app(engine).await;
    let (user, through_app, by_password, wechat) = bound_password_user(&app).await;

    app.unbind(APP, &through_app.access).await.ok(204);

    // The session issued through APP died with the binding...
    assert_dead(&app, &through_app).await;
    let ticket = app.ticket(APP, wechat).await;
    app.bind(APP, &ticket, &through_app.access)
        .await
        .problem(401, "access_token_revoked");
    // ...and only that one: the password login goes on.
    let renewed = Tokens::from_v1(app.refresh(&by_password.refresh).await.ok(200));
    assert_eq!(
        app.me(&renewed.access).await.ok(200)["user_id"],
        json!(user)
    );
    app.me(&by_password.access).await.ok(200);
    // Each login is a session of its own, named in its access tokens.
    let sid = claims(&through_app.access)["sid"].clone();
    assert!(sid.as_str().is_some_and(|s| !s.is_empty()), "{sid}");
    assert_ne!(claims(&by_password.access)["sid"], sid);
    assert_eq!(
        claims(&renewed.access)["sid"],
        claims(&by_password.access)["sid"]
    );
}

async fn refresh_token_survives_gitegg_unbind(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, through_app, by_password, _) = bound_password_user(&app).await;
    // Rotate once first: the successor belongs to the same session.
    let rotated = Tokens::from_v1(app.refresh(&through_app.refresh).await.ok(200));
    assert_eq!(
        claims(&rotated.access)["sid"],
        claims(&through_app.access)["sid"]
    );

    app.wx("", APP, "unbind", "", Some(&rotated.access))
        .await
        .envelope_ok();

    assert_dead(&app, &rotated).await;
    app.user_info(&rotated.access).await.envelope_err(401);
    app.oauth_token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &rotated.refresh),
    ])
    .await
    .envelope_err(401);
    app.me(&by_password.access).await.ok(200);
}

async fn refresh_token_survives_erasure(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, through_app, by_password, wechat) = bound_password_user(&app).await;
    let code = app.wx_login(APP, wechat).await;
    let login = app
        .wx("", APP, "login", &format!("code={}", enc(&code)), None)
        .await;
    let openid = login.envelope_ok()["openid"].as_str().unwrap().to_owned();
    // The session of that returning login, too.
    let returning = app.session(APP, wechat).await;
    let returning = Tokens::from_v1(&returning["tokens"]);

    app.post_json(
        &format!("/v1/admin/apps/{APP}/accounts/{openid}/erase"),
        &json!({}),
        Some(&app.admin_token),
    )
    .await
    .ok(204);

    assert_dead(&app, &through_app).await;
    assert_dead(&app, &returning).await;
    // The user's sessions that did not come through the erased account stay.
    app.me(&by_password.access).await.ok(200);
}

async fn tokens_survive_disabling_the_user(engine: Engine) {
    let app = spawn_app(engine).await;
    let (user, through_app, by_password, wechat) = bound_password_user(&app).await;

    let answer = app
        .post_json(
            &format!("/v1/admin/users/{user}/disable"),
            &json!({}),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(answer.ok(200)["status"], json!("disabled"));

    for tokens in [&through_app, &by_password] {
        assert_dead(&app, tokens).await;
        // Nothing the access token could still do on our side: unbind, logout.
        app.unbind(APP, &tokens.access)
            .await
            .problem(401, "access_token_revoked");
        app.logout(&tokens.access, &tokens.refresh)
            .await
            .problem(401, "access_token_revoked");
    }
    // A new login is refused while disabled.
    let code = app.wx_login(APP, wechat).await;
    app.login(APP, &code).await.problem(403, "user_disabled");

    // Enabled again: the old sessions stay dead; a new login works.
    let answer = app
        .post_json(
            &format!("/v1/admin/users/{user}/enable"),
            &json!({}),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(answer.ok(200)["status"], json!("active"));
    for tokens in [&through_app, &by_password] {
        assert_dead(&app, tokens).await;
    }
    let session = app.session(APP, wechat).await;
    let fresh = Tokens::from_v1(&session["tokens"]);
    app.me(&fresh.access).await.ok(200);
    // Disabling an unknown user says so.
    app.post_json(
        "/v1/admin/users/999999/disable",
        &json!({}),
        Some(&app.admin_token),
    )
    .await
    .problem(404, "user_not_found");
}

async fn access_token_survives_logout(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, through_app, by_password, _) = bound_password_user(&app).await;

    app.logout(&through_app.access, &through_app.refresh)
        .await
        .ok(204);

    assert_dead(&app, &through_app).await;
    app.me(&by_password.access).await.ok(200);
}

async fn access_token_survives_refresh_token_reuse(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, stolen, _, _) = bound_password_user(&app).await;
    // The thief refreshes first; the owner's later refresh with the same token is a
    // reuse, which ends the session — for the thief's new access token too.
    let thief = Tokens::from_v1(app.refresh(&stolen.refresh).await.ok(200));
    app.me(&thief.access).await.ok(200);
    app.refresh(&stolen.refresh)
        .await
        .problem(401, "refresh_token_reused");

    app.me(&thief.access)
        .await
        .problem(401, "access_token_revoked");
    app.refresh(&thief.refresh)
        .await
        .problem(401, "refresh_token_unknown");
}

async fn refresh_rotation_slides_past_the_absolute_lifetime(engine: Engine) {
    // Each refresh token lives 2 s, a session 3 s at most.
    let app = spawn_app_with(engine, |config| {
        config.tokens.refresh_ttl_secs = 2;
        config.tokens.refresh_max_lifetime_secs = 3;
    })
    .await;
    let (user, account, password) = app.password_user(None).await;
    let mut tokens = app.password_tokens(&account, &password).await;
    // Rotating well within the sliding lifetime keeps the session going...
    for _ in 0..2 {
        app.clock.advance(Duration::milliseconds(1200));
        let answer = app.refresh(&tokens.refresh).await;
        let body = answer.ok(200);
        assert!(
            body["refresh_expires_in"].as_u64().unwrap() <= 2,
            "never past the session's end: {body}"
        );
        tokens = Tokens::from_v1(body);
    }
    assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(user));
    // ...but not past its absolute lifetime, however often it rotates.
    app.clock.advance(Duration::milliseconds(1200));
    app.refresh(&tokens.refresh)
        .await
        .problem(401, "refresh_token_expired");
    app.me(&tokens.access)
        .await
        .problem(401, "access_token_revoked");
}
