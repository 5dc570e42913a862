//! One credential, one use. GitEgg front ends send the bind key and the login code in
//! query strings, which proxies and access logs keep: whoever reads such a log must
//! not be able to turn it into tokens.

use miniauth_e2e::{enc, on_both_engines, spawn_app, Engine, Tokens, APP};
use miniauth_wechat::sim::{Endpoint, Fault, Faults};
use serde_json::json;

on_both_engines!(
    ticket_exchanged_twice_mints_a_second_refresh_family,
    logged_login_code_replayed_for_a_new_session_and_tokens,
    logged_gitegg_login_code_replayed,
);

/// A ticket of a bound identity, exchanged once by its owner and again by whoever
/// copied it: the second exchange is refused and starts no refresh-token family.
async fn ticket_exchanged_twice_mints_a_second_refresh_family(engine: Engine) {
    let app = spawn_app(engine).await;
    let (user, _, _, wechat) = app.registered_user(APP).await;
    let ticket = app.ticket(APP, wechat).await;
    let grant = json!({ "grant_type": "ticket", "ticket": ticket });

    let owners = Tokens::from_v1(app.token(&grant).await.ok(200));
    assert_eq!(app.me(&owners.access).await.ok(200)["user_id"], json!(user));

    app.unchanged("a ticket exchanged a second time", || async {
        app.token(&grant).await.problem(401, "ticket_already_used");
        // The GitEgg grant is the same exchange.
        app.oauth_token(&[("grant_type", "social"), ("social_key", &ticket)])
            .await
            .envelope_err(401);
    })
    .await;
}

/// A `wx.login` code answered once, then replayed: no second session, no ticket, no
/// tokens — a clear `code_already_used`, not WeChat's opaque 40163.
async fn logged_login_code_replayed_for_a_new_session_and_tokens(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, _, _, wechat) = app.registered_user(APP).await;
    let code = app.wx_login(APP, wechat).await;
    let first = app.login(APP, &code).await;
    assert!(first.ok(200)["tokens"].is_object(), "{}", first.text);
    app.device.reset_calls().await.unwrap();

    let replay = app
        .unchanged("a replayed login code", || app.login(APP, &code))
        .await;
    replay.problem(400, "code_already_used");
    assert!(replay.body.get("tokens").is_none() && replay.body.get("ticket").is_none());
    let calls = app.device.calls().await.unwrap();
    assert_eq!(
        calls
            .get(&Endpoint::Jscode2Session)
            .copied()
            .unwrap_or_default(),
        0,
        "a replay is answered without asking WeChat"
    );

    // Concurrent duplicates (a front end retrying while WeChat has not answered yet)
    // still share the one code2session call and its answer.
    let slow = Fault {
        delay_ms: 300,
        ..Fault::default()
    };
    app.device
        .set_faults(&Faults::none().with(Endpoint::Jscode2Session, slow))
        .await
        .unwrap();
    let code = app.wx_login(APP, wechat).await;
    let (a, b) = tokio::join!(app.login(APP, &code), app.login(APP, &code));
    a.ok(200);
    b.ok(200);
    let calls = app.device.calls().await.unwrap();
    assert_eq!(calls.get(&Endpoint::Jscode2Session).copied(), Some(1));
}

/// The same replay through the GitEgg route, where the code sits in the query string.
async fn logged_gitegg_login_code_replayed(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, _, _, wechat) = app.registered_user(APP).await;
    let code = app.wx_login(APP, wechat).await;
    let query = format!("code={}", enc(&code));
    let data = app.wx("", APP, "login", &query, None).await;
    assert!(data.envelope_ok()["bindKey"].is_string());

    let replay = app
        .unchanged("a replayed GitEgg login code", || {
            app.wx("", APP, "login", &query, None)
        })
        .await;
    replay.envelope_err(410);
    assert!(replay.text.contains("wx.login"), "{}", replay.text);
}
