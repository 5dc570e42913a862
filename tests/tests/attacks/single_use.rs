//! One credential, one use. GitEgg front ends send the bind key and the login code in
//! query strings, which proxies and access logs keep: whoever reads such a log must
//! not be able to turn it into tokens.

use miniauth_e2e::{enc, on_both_engines, random_phone, spawn_app, Engine, Tokens, APP};
use miniauth_wechat::sim::{Endpoint, Fault, Faults};
use serde_json::json;

on_both_engines!(
    ticket_exchanged_twice_mints_a_second_refresh_family,
    logged_phone_request_replayed_for_new_sessions,
    logged_bind_key_binds_the_victims_identity_to_the_attacker,
    returning_logins_ticket_buys_a_second_session,
    logged_login_code_replayed_for_a_new_session_and_tokens,
    logged_gitegg_login_code_replayed,
);

/// A ticket of a bound identity, exchanged once by its owner and again by whoever
/// copied it: the second exchange is refused and starts no refresh-token family.
async fn ticket_exchanged_twice_mints_a_second_refresh_family(engine: Engine) {
    let app = spawn_app(engine).await;
    let (user, _, _, wechat) = app.registered_user(APP).await;
    // GitEgg's login answers the bind key only; the front end exchanges it next.
    let ticket = app.bind_key(APP, wechat).await;
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

/// The legacy phone request of a GitEgg front end sits in a proxy's log (ticket and
/// payload in the query string). Replayed — after the owner logged out, unbound, even
/// after erasure — it must buy no session and bind nothing again.
async fn logged_phone_request_replayed_for_new_sessions(engine: Engine) {
    let app = spawn_app(engine).await;
    let phone = random_phone();
    let wechat = app.wechat_user(Some(&phone)).await;
    let ticket = app.ticket(APP, wechat).await;
    let plain = json!({ "purePhoneNumber": phone, "countryCode": "86",
                        "watermark": { "appid": APP, "timestamp": chrono::Utc::now().timestamp() } });
    let (data, iv) = app.encrypt_for(APP, wechat, plain.to_string().as_bytes());
    let query = format!(
        "socialKey={}&encryptedData={}&iv={}",
        enc(&ticket),
        enc(&data),
        enc(&iv)
    );
    let owners = Tokens::from_gitegg(app.wx("", APP, "phone", &query, None).await.envelope_ok());
    app.unbind(APP, &owners.access).await.ok(204);

    app.unchanged("the logged phone request, replayed", || async {
        app.wx("", APP, "phone", &query, None)
            .await
            .envelope_err(401);
        app.phone(
            APP,
            &json!({ "ticket": ticket, "encrypted_data": data, "iv": iv }),
        )
        .await
        .problem(401, "ticket_already_used");
        // The identity is unbound now: the exchange finds nothing to log in.
        app.token(&json!({ "grant_type": "ticket", "ticket": ticket }))
            .await
            .problem(404, "not_bound");
    })
    .await;
}

/// A logged bind key of an identity not bound yet: someone logged in as themselves
/// binds it to their own account before its owner finishes — every later login of
/// the owner would then land in the attacker's account. Once the owner used the key,
/// it binds nothing.
async fn logged_bind_key_binds_the_victims_identity_to_the_attacker(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, account, password) = app.password_user(None).await;
    let attacker = app.password_tokens(&account, &password).await;
    let victim = app.wechat_user(Some(&random_phone())).await;
    let ticket = app.ticket(APP, victim).await;
    let code = app.phone_code(APP, victim).await;
    let owners = app
        .phone(APP, &json!({ "ticket": ticket, "code": code }))
        .await;
    let victim_user = owners.ok(200)["user_id"].clone();

    app.unchanged("a used bind key, bound by someone else", || async {
        app.wx(
            "",
            APP,
            "bind",
            &format!("socialKey={}", enc(&ticket)),
            Some(&attacker.access),
        )
        .await
        .envelope_err(401);
        app.bind(APP, &ticket, &attacker.access)
            .await
            .problem(401, "ticket_already_used");
    })
    .await;
    let again = app.session(APP, victim).await;
    assert_eq!(
        again["tokens"]["user_id"].as_i64().or(victim_user.as_i64()),
        victim_user.as_i64()
    );
}

/// A returning user's login answers tokens and a ticket: the ticket is spent by that
/// answer and buys no second session.
async fn returning_logins_ticket_buys_a_second_session(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, _, _, wechat) = app.registered_user(APP).await;
    let session = app.session(APP, wechat).await;
    assert!(session["tokens"].is_object(), "{session}");
    let ticket = session["ticket"].as_str().unwrap().to_owned();
    app.unchanged("the ticket of a login that answered tokens", || async {
        app.token(&json!({ "grant_type": "ticket", "ticket": ticket }))
            .await
            .problem(401, "ticket_already_used");
        app.oauth_token(&[("grant_type", "social"), ("social_key", &ticket)])
            .await
            .envelope_err(401);
        // Nor does it buy a phone registration for someone else's session.
        let (data, iv) = app.encrypt_for(
            APP,
            wechat,
            json!({ "purePhoneNumber": random_phone(), "countryCode": "86",
                    "watermark": { "appid": APP, "timestamp": chrono::Utc::now().timestamp() } })
            .to_string()
            .as_bytes(),
        );
        app.phone(
            APP,
            &json!({ "ticket": ticket, "encrypted_data": data, "iv": iv }),
        )
        .await
        .problem(401, "ticket_already_used");
    })
    .await;
}
