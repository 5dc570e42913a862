//! Every bad input of DESIGN.md ("Bad input: a clear error, nothing written"): each gets
//! its 4xx (or 503) and stable `code`, and leaves no event, user, binding, refresh token,
//! data key or account behind. On both engines.

use chrono::Duration;
use miniauth::config::WeChatTarget;
use miniauth_domain::crypto::{encode_base64, raw_data_signature};
use miniauth_e2e::{
    app as app_id, forge, on_both_engines, random_phone, spawn_app, spawn_app_with, Engine, Tokens,
    APP, EXISTING_ONLY_APP, SECOND_APP,
};
use miniauth_wechat::sim::{Endpoint, Fault, Faults};
use serde_json::json;

on_both_engines!(
    bad_login_codes_and_apps,
    wechat_busy_down_and_rate_limited,
    wechat_high_risk_user,
    bad_tickets,
    expired_tickets_and_refresh_tokens,
    bad_encrypted_payloads,
    plus_read_as_space_is_repaired,
    bad_phone_codes,
    conflicting_bindings,
    bad_credentials_are_throttled,
    bad_refresh_tokens,
    bad_bodies_and_fields,
    refused_phones_leave_no_data_key,
);

async fn bad_login_codes_and_apps(engine: Engine) {
    let app = spawn_app(engine).await;
    let sessions = format!("/v1/apps/{APP}/sessions");
    app.unchanged("missing and empty codes", || async {
        app.post_json(&sessions, &json!({}), None)
            .await
            .problem(400, "invalid_field");
        app.login(APP, "").await.problem(400, "invalid_field");
        app.login(APP, "   ").await.problem(400, "invalid_field");
    })
    .await;

    let wechat = app.wechat_user(None).await;
    let code = app.wx_login(APP, wechat).await;
    app.unchanged("unknown appid", || async {
        app.login("wxunknownapp000009", &code)
            .await
            .problem(404, "unknown_app");
    })
    .await;
    app.unchanged("an appid that cannot be one", || async {
        app.login("not-an-appid", &code)
            .await
            .problem(404, "unknown_app");
    })
    .await;
    app.unchanged("a code WeChat does not know (40029)", || async {
        app.login(APP, "0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d")
            .await
            .problem(400, "code_invalid");
    })
    .await;
    let other_app_code = app.wx_login(SECOND_APP, wechat).await;
    app.unchanged("a code of another app (40029)", || async {
        app.login(APP, &other_app_code)
            .await
            .problem(400, "code_invalid");
    })
    .await;

    // A code another backend already exchanged: WeChat says 40163.
    app.spend_code_elsewhere(APP, &code).await;
    app.unchanged("a used code (40163)", || async {
        app.login(APP, &code).await.problem(400, "code_used");
    })
    .await;
    // A code miniauth itself answered yields nothing more: a clear code_already_used
    // (call wx.login again), not WeChat's 40163, and no second session.
    let answered = app.wx_login(APP, wechat).await;
    app.login(APP, &answered).await.ok(200);
    app.unchanged("a code already answered", || async {
        app.login(APP, &answered)
            .await
            .problem(400, "code_already_used");
    })
    .await;

    // Codes live 5 minutes.
    let stale = app.wx_login(APP, wechat).await;
    app.device.advance_clock(301).await.unwrap();
    app.unchanged("an expired code (40029)", || async {
        app.login(APP, &stale).await.problem(400, "code_invalid");
    })
    .await;
}

async fn wechat_busy_down_and_rate_limited(engine: Engine) {
    let app = spawn_app(engine).await;
    let wechat = app.wechat_user(Some(&random_phone())).await;
    let fault = |f: Fault| Faults::none().with(Endpoint::Jscode2Session, f);

    app.device
        .set_faults(&fault(Fault {
            rate_limited: 1.0,
            ..Fault::default()
        }))
        .await
        .unwrap();
    let code = app.wx_login(APP, wechat).await;
    let answer = app
        .unchanged("WeChat rate-limited (45011)", || app.login(APP, &code))
        .await;
    answer.problem(429, "wechat_rate_limited");
    assert!(answer.retry_after() > 0);

    for (what, f) in [
        (
            "WeChat busy (-1)",
            Fault {
                busy: 1.0,
                ..Fault::default()
            },
        ),
        (
            "WeChat down (HTTP 502)",
            Fault {
                server_error: 1.0,
                ..Fault::default()
            },
        ),
    ] {
        app.device.set_faults(&fault(f)).await.unwrap();
        app.device.reset_calls().await.unwrap();
        let answer = app.unchanged(what, || app.login(APP, &code)).await;
        answer.problem(503, "wechat_unavailable");
        assert!(answer.retry_after() > 0, "{what}");
        let calls = app.device.calls().await.unwrap();
        let tries = calls
            .get(&Endpoint::Jscode2Session)
            .copied()
            .unwrap_or_default();
        if f.busy > 0.0 {
            // Busy means unprocessed: retried, a bounded number of times.
            assert!((2..=5).contains(&tries), "{what}: {tries} attempts");
        } else {
            // A 5xx may have spent the one-time code: never replayed.
            assert_eq!(tries, 1, "{what}");
        }
    }

    // The same on the phone code exchange; and GitEgg answers its 500 envelope.
    app.device.set_faults(&Faults::none()).await.unwrap();
    let ticket = app.login(APP, &code).await.ok(200)["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let phone_code = app.phone_code(APP, wechat).await;
    app.device
        .set_faults(&Faults::none().with(
            Endpoint::GetUserPhoneNumber,
            Fault {
                busy: 1.0,
                ..Fault::default()
            },
        ))
        .await
        .unwrap();
    let answer = app
        .unchanged("WeChat busy on getuserphonenumber", || async {
            app.phone(APP, &json!({ "ticket": ticket, "code": phone_code }))
                .await
        })
        .await;
    answer.problem(503, "wechat_unavailable");
    assert!(answer.retry_after() > 0);

    app.device
        .set_faults(&fault(Fault {
            busy: 1.0,
            ..Fault::default()
        }))
        .await
        .unwrap();
    let gitegg_code = app.wx_login(APP, wechat).await;
    app.unchanged("GitEgg login while WeChat is busy", || async {
        app.wx("", APP, "login", &format!("code={gitegg_code}"), None)
            .await
            .envelope_err(500);
    })
    .await;

    // Faults gone, the untouched code still works (a faulted request spends nothing).
    app.device.set_faults(&Faults::none()).await.unwrap();
    app.login(APP, &gitegg_code).await.ok(200);
}

/// WeChat's 40226 (high-risk user), from a fake WeChat: the simulator never says it.
async fn wechat_high_risk_user(engine: Engine) {
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_base = format!("http://{}", fake.local_addr().unwrap());
    let router = axum::Router::new().fallback(|| async {
        axum::Json(json!({ "errcode": 40226, "errmsg": "high risk user, rid: e2e" }))
    });
    let fake_server = tokio::spawn(async move {
        let _ = axum::serve(fake, router).await;
    });
    let app = spawn_app_with(engine, |config| {
        config.wechat.api_base = WeChatTarget::Api(fake_base)
    })
    .await;
    app.unchanged("a high-risk user (40226)", || async {
        app.login(APP, "0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d")
            .await
            .problem(403, "wechat_user_blocked");
        app.wx("", APP, "login", "code=0a1b2c3d4e5f", None)
            .await
            .envelope_err(403);
    })
    .await;
    fake_server.abort();
}

async fn bad_tickets(engine: Engine) {
    let app = spawn_app(engine).await;
    let wechat = app.wechat_user(Some(&random_phone())).await;
    let ticket = app.ticket(APP, wechat).await;
    let profile = |ticket: Option<&str>| {
        let mut body = json!({ "nickname": "Mallory", "avatar_url": "https://example.com/m.png" });
        if let Some(ticket) = ticket {
            body["ticket"] = json!(ticket);
        }
        body
    };

    app.unchanged("a missing ticket", || async {
        app.profile(APP, &profile(None))
            .await
            .problem(400, "ticket_missing");
        app.profile(APP, &profile(Some("")))
            .await
            .problem(400, "ticket_missing");
        let code = app.phone_code(APP, wechat).await;
        app.phone(APP, &json!({ "code": code }))
            .await
            .problem(400, "ticket_missing");
    })
    .await;

    let forged = forge(&ticket);
    assert_ne!(forged, ticket);
    let other_app = app.ticket(SECOND_APP, wechat).await;
    let (_, account, password) = app.password_user(None).await;
    let access = app.password_tokens(&account, &password).await.access;
    for (what, bad, code) in [
        (
            "a malformed ticket",
            "not-a-ticket".to_owned(),
            "ticket_malformed",
        ),
        ("a forged ticket", forged, "ticket_forged"),
        ("a ticket of another app", other_app, "ticket_app_mismatch"),
    ] {
        app.unchanged(what, || async {
            app.profile(APP, &profile(Some(&bad)))
                .await
                .problem(401, code);
            let phone_code = app.phone_code(APP, wechat).await;
            app.phone(APP, &json!({ "ticket": bad, "code": phone_code }))
                .await
                .problem(401, code);
            app.bind(APP, &bad, &access).await.problem(401, code);
            // /v1/token names no app: a ticket of another app is just that app's.
            if code != "ticket_app_mismatch" {
                app.token(&json!({ "grant_type": "ticket", "ticket": bad }))
                    .await
                    .problem(401, code);
            }
            app.wx(
                "",
                APP,
                "info",
                &format!(
                    "socialKey={}&nickName=M&avatarUrl=x",
                    miniauth_e2e::enc(&bad)
                ),
                None,
            )
            .await
            .envelope_err(401);
        })
        .await;
    }

    // A newer login supersedes the first ticket: without a payload it cannot be used.
    let first = app.ticket(APP, wechat).await;
    let newer = app.ticket(APP, wechat).await;
    app.unchanged("a ticket of a superseded session", || async {
        app.profile(APP, &profile(Some(&first)))
            .await
            .problem(401, "ticket_session_superseded");
        let phone_code = app.phone_code(APP, wechat).await;
        app.phone(APP, &json!({ "ticket": first, "code": phone_code }))
            .await
            .problem(401, "ticket_session_superseded");
        app.bind(APP, &first, &access)
            .await
            .problem(401, "ticket_session_superseded");
    })
    .await;
    // The newest one works.
    app.profile(APP, &profile(Some(&newer))).await.ok(200);
}

async fn expired_tickets_and_refresh_tokens(engine: Engine) {
    let app = spawn_app_with(engine, |config| {
        config.tokens.ticket_ttl_secs = 1;
        config.tokens.refresh_ttl_secs = 1;
    })
    .await;
    let wechat = app.wechat_user(None).await;
    let session = app.session(APP, wechat).await;
    assert_eq!(session["ticket_expires_in"], json!(1));
    let ticket = session["ticket"].as_str().unwrap().to_owned();
    let (_, account, password) = app.password_user(None).await;
    let tokens = app.password_tokens(&account, &password).await;

    app.clock.advance(Duration::milliseconds(1200));
    app.unchanged("an expired ticket", || async {
        app.profile(
            APP,
            &json!({ "ticket": ticket, "nickname": "Late", "avatar_url": "https://e.com/l.png" }),
        )
        .await
        .problem(401, "ticket_expired");
        app.bind(APP, &ticket, &tokens.access)
            .await
            .problem(401, "ticket_expired");
        app.wx(
            "",
            APP,
            "info",
            &format!(
                "socialKey={}&nickName=Late&avatarUrl=https%3A%2F%2Fe.com%2Fl.png",
                miniauth_e2e::enc(&ticket)
            ),
            None,
        )
        .await
        .envelope_err(401);
    })
    .await;
    app.unchanged("an expired refresh token", || async {
        app.refresh(&tokens.refresh)
            .await
            .problem(401, "refresh_token_expired");
    })
    .await;
}

async fn bad_encrypted_payloads(engine: Engine) {
    // Every shape of bad payload on one session: more rejections than the default
    // budget of a session key (3), which the attack suite checks on its own.
    let app = spawn_app_with(engine, |config| {
        for app in &mut config.apps {
            app.payload_rejections_per_key = 20;
        }
    })
    .await;
    let wechat = app.wechat_user(Some(&random_phone())).await;
    let ticket = app.ticket(APP, wechat).await;
    let info = app.device.user_info(&app.appid, wechat).await.unwrap();
    let key = app.session_key(APP, wechat);
    let legacy_profile = |raw_data: &str, signature: &str, data: &str, iv: &str| {
        json!({ "ticket": ticket, "raw_data": raw_data, "signature": signature,
                "encrypted_data": data, "iv": iv })
    };
    let legacy_phone =
        |data: &str, iv: &str| json!({ "ticket": ticket, "encrypted_data": data, "iv": iv });
    let good_iv = encode_base64(&[7u8; 16]);
    let random_blocks = encode_base64(&[0x5au8; 48]);

    let cases: Vec<(&str, &str, String, String)> = vec![
        (
            "encrypted_data not base64",
            "payload_not_base64",
            "@@not*base64@@".into(),
            info.iv.clone(),
        ),
        (
            "iv not base64",
            "payload_not_base64",
            info.encrypted_data.clone(),
            "#iv#".into(),
        ),
        (
            "iv of the wrong length",
            "payload_wrong_length",
            info.encrypted_data.clone(),
            encode_base64(&[1u8; 8]),
        ),
        (
            "encrypted_data not a multiple of 16",
            "payload_wrong_length",
            encode_base64(&[9u8; 20]),
            good_iv.clone(),
        ),
        (
            "empty encrypted_data",
            "payload_wrong_length",
            String::new(),
            good_iv.clone(),
        ),
        (
            "bad padding (another key)",
            "payload_rejected",
            random_blocks,
            good_iv.clone(),
        ),
    ];
    for (what, code, data, iv) in &cases {
        app.unchanged(what, || async {
            app.profile(
                APP,
                &legacy_profile(&info.raw_data, &info.signature, data, iv),
            )
            .await
            .problem(400, code);
            app.phone(APP, &legacy_phone(data, iv))
                .await
                .problem(400, code);
        })
        .await;
    }

    // Well encrypted, but not the JSON WeChat sends.
    let (not_json, iv) = app.encrypt_for(APP, wechat, b"this is not json");
    let (wrong_json, iv2) = app.encrypt_for(APP, wechat, br#"{"hello":"world"}"#);
    app.unchanged("a payload that is not JSON", || async {
        app.phone(APP, &legacy_phone(&not_json, &iv))
            .await
            .problem(400, "payload_rejected");
        app.phone(APP, &legacy_phone(&wrong_json, &iv2))
            .await
            .problem(400, "payload_rejected");
        let raw = r#"{"nickName":"X"}"#;
        let signature = raw_data_signature(raw, &key);
        app.profile(APP, &legacy_profile(raw, &signature, &not_json, &iv))
            .await
            .problem(400, "payload_rejected");
    })
    .await;

    // The signature must be sha1(rawData + session_key).
    let mut tampered = info.raw_data.clone();
    tampered.insert_str(1, r#""injected":1,"#);
    let other_signature = "0".repeat(40);
    app.unchanged("a signature mismatch", || async {
        app.profile(
            APP,
            &legacy_profile(&tampered, &info.signature, &info.encrypted_data, &info.iv),
        )
        .await
        .problem(400, "payload_rejected");
        app.profile(
            APP,
            &legacy_profile(
                &info.raw_data,
                &other_signature,
                &info.encrypted_data,
                &info.iv,
            ),
        )
        .await
        .problem(400, "payload_rejected");
    })
    .await;

    // Under our session key but watermarked for another app.
    let now = chrono::Utc::now().timestamp();
    let phone = json!({ "phoneNumber": "13800138000", "purePhoneNumber": "13800138000",
                        "countryCode": "86", "watermark": { "appid": SECOND_APP, "timestamp": now } });
    let (foreign_phone, iv3) = app.encrypt_for(APP, wechat, phone.to_string().as_bytes());
    let openid = app
        .simulator
        .as_ref()
        .unwrap()
        .simulator()
        .openid(&app_id(APP), wechat)
        .unwrap();
    let profile = json!({ "openId": openid.as_str(), "nickName": "X", "gender": 0,
                          "language": "en", "city": "", "province": "", "country": "",
                          "avatarUrl": "", "watermark": { "appid": SECOND_APP, "timestamp": now } });
    let (foreign_profile, iv4) = app.encrypt_for(APP, wechat, profile.to_string().as_bytes());
    let raw = r#"{"nickName":"X","avatarUrl":""}"#;
    let signature = raw_data_signature(raw, &key);
    app.unchanged("a watermark for another appid", || async {
        app.phone(APP, &legacy_phone(&foreign_phone, &iv3))
            .await
            .problem(400, "payload_rejected");
        app.profile(
            APP,
            &legacy_profile(raw, &signature, &foreign_profile, &iv4),
        )
        .await
        .problem(400, "payload_rejected");
    })
    .await;

    // The real payloads still work afterwards.
    app.profile(
        APP,
        &legacy_profile(
            &info.raw_data,
            &info.signature,
            &info.encrypted_data,
            &info.iv,
        ),
    )
    .await
    .ok(200);
}

async fn plus_read_as_space_is_repaired(engine: Engine) {
    let app = spawn_app(engine).await;
    let wechat = app.wechat_user(Some(&random_phone())).await;
    let ticket = app.ticket(APP, wechat).await;
    // Each call encrypts afresh; wait for payloads that do contain a `+`.
    let mut info = app.device.user_info(&app.appid, wechat).await.unwrap();
    while !(info.encrypted_data.contains('+') || info.iv.contains('+')) {
        info = app.device.user_info(&app.appid, wechat).await.unwrap();
    }
    let answer = app
        .profile(
            APP,
            &json!({
                "ticket": ticket,
                "raw_data": info.raw_data,
                "signature": info.signature,
                "encrypted_data": info.encrypted_data.replace('+', " "),
                "iv": info.iv.replace('+', " "),
            }),
        )
        .await;
    answer.ok(200);

    let mut bundle = app.device.phone(&app.appid, wechat).await.unwrap();
    while !(bundle.encrypted_data.contains('+') || bundle.iv.contains('+')) {
        bundle = app.device.phone(&app.appid, wechat).await.unwrap();
    }
    // GitEgg front ends forget to encode: `+` arrives as a space.
    let query = format!(
        "socialKey={}&encryptedData={}&iv={}",
        miniauth_e2e::enc(&ticket),
        bundle.encrypted_data,
        bundle.iv
    );
    let answer = app.wx("", APP, "phone", &query, None).await;
    let data = answer.envelope_ok();
    assert_eq!(data["registered"], json!(true), "{data}");
}

async fn bad_phone_codes(engine: Engine) {
    let app = spawn_app(engine).await;
    let wechat = app.wechat_user(Some(&random_phone())).await;
    let ticket = app.ticket(APP, wechat).await;
    app.unchanged("an invalid phone code", || async {
        app.phone(
            APP,
            &json!({ "ticket": ticket, "code": "ffffffffffffffffffffffffffffffff" }),
        )
        .await
        .problem(400, "code_invalid");
        app.phone(APP, &json!({ "ticket": ticket, "code": "" }))
            .await
            .problem(400, "invalid_field");
        app.phone(APP, &json!({ "ticket": ticket }))
            .await
            .problem(400, "invalid_field");
    })
    .await;

    // The code of another user of the same app.
    let other = app.wechat_user(Some(&random_phone())).await;
    app.ticket(APP, other).await;
    let others_code = app.phone_code(APP, other).await;
    app.unchanged("another user's phone code", || async {
        app.phone(APP, &json!({ "ticket": ticket, "code": others_code }))
            .await
            .problem(400, "code_invalid");
    })
    .await;

    let code = app.phone_code(APP, wechat).await;
    app.phone(APP, &json!({ "ticket": ticket, "code": code }))
        .await
        .ok(200);
    // Used once: WeChat refuses it the second time. (A login of the bound identity
    // through GitEgg's `/login`: its bind key is unspent, so the phone code is what is
    // refused — a v1 login's ticket would be issued spent and refused first.)
    let ticket = app.bind_key(APP, wechat).await;
    app.unchanged("a used phone code", || async {
        let answer = app
            .phone(APP, &json!({ "ticket": ticket, "code": code }))
            .await;
        // WeChat answers 40029 for used phone codes too.
        answer.problem(400, "code_invalid");
    })
    .await;
}

async fn conflicting_bindings(engine: Engine) {
    let app = spawn_app(engine).await;
    let (alice, alice_tokens, alice_phone, alice_wechat) = app.registered_user(APP).await;
    let (bob, bob_account, bob_password) = app.password_user(None).await;
    let bob_tokens = app.password_tokens(&bob_account, &bob_password).await;

    // Alice's WeChat identity is hers: Bob cannot take it.
    let alice_ticket = app.bind_key(APP, alice_wechat).await;
    app.unchanged("binding an identity bound to another user", || async {
        let answer = app.bind(APP, &alice_ticket, &bob_tokens.access).await;
        answer.problem(409, "already_bound_to_other_user");
    })
    .await;

    // Bob binds one identity; a second one in the same app is refused.
    let bob_wechat = app.wechat_user(None).await;
    let ticket = app.ticket(APP, bob_wechat).await;
    app.bind(APP, &ticket, &bob_tokens.access).await.ok(200);
    let another = app.wechat_user(None).await;
    let ticket = app.ticket(APP, another).await;
    app.unchanged("a second identity for a user in one app", || async {
        app.bind(APP, &ticket, &bob_tokens.access)
            .await
            .problem(409, "user_already_bound_in_app");
    })
    .await;

    // A second WeChat account with Alice's phone cannot bind to her in the same app.
    let twin = app.wechat_user(Some(&alice_phone)).await;
    let twin_ticket = app.ticket(APP, twin).await;
    let twin_code = app.phone_code(APP, twin).await;
    let answer = app
        .unchanged(
            "a phone whose user is bound in this app already",
            || async {
                app.phone(APP, &json!({ "ticket": twin_ticket, "code": twin_code }))
                    .await
            },
        )
        .await;
    answer.problem(409, "user_already_bound_in_app");

    // Unbind with nothing bound.
    let (_, carol_account, carol_password) = app.password_user(None).await;
    let carol = app.password_tokens(&carol_account, &carol_password).await;
    app.unchanged("unbind with nothing bound", || async {
        app.unbind(APP, &carol.access)
            .await
            .problem(404, "not_bound");
        app.wx("", APP, "unbind", "", Some(&carol.access))
            .await
            .envelope_err(601);
    })
    .await;

    // No or a bad access token.
    app.unchanged("binding without a valid access token", || async {
        app.post_json(
            &format!("/v1/apps/{APP}/binding"),
            &json!({ "ticket": ticket }),
            None,
        )
        .await
        .problem(401, "access_token_missing");
        app.bind(APP, &ticket, "not.a.jwt")
            .await
            .problem(401, "access_token_invalid");
        app.bind(APP, &ticket, &forge(&alice_tokens.access))
            .await
            .problem(401, "access_token_invalid");
        app.delete(&format!("/v1/apps/{APP}/binding"), None)
            .await
            .problem(401, "access_token_missing");
    })
    .await;
    assert_eq!(app.bindings_of(alice).await.len(), 1);
    assert_eq!(app.bindings_of(bob).await.len(), 1);
}

async fn bad_credentials_are_throttled(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, account, password) = app.password_user(None).await;
    app.unchanged("wrong credentials", || async {
        app.password_grant(&account, "wrong password")
            .await
            .problem(401, "invalid_credentials");
        // An unknown account looks the same: accounts cannot be enumerated.
        app.password_grant("nobody-here", "whatever1")
            .await
            .problem(401, "invalid_credentials");
        app.password_grant(&account, "")
            .await
            .problem(400, "invalid_field");
        app.token(&json!({ "grant_type": "magic" }))
            .await
            .problem(400, "unsupported_grant_type");
        app.oauth_token(&[
            ("grant_type", "password"),
            ("username", &account),
            ("password", "nope"),
        ])
        .await
        .envelope_err(419);
    })
    .await;
    // Two failures so far for this account from this IP (the unknown account counts
    // for itself); three more reach the limit of five per (account, client).
    for _ in 0..3 {
        app.password_grant(&account, "still wrong")
            .await
            .problem(401, "invalid_credentials");
    }
    let answer = app
        .unchanged("a throttled password grant", || {
            app.password_grant(&account, &password)
        })
        .await;
    answer.problem(429, "too_many_attempts");
    assert!(answer.retry_after() > 0);
}

async fn bad_refresh_tokens(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, tokens, _, _) = app.registered_user(APP).await;
    app.unchanged("unknown refresh tokens", || async {
        app.refresh("not-a-refresh-token")
            .await
            .problem(401, "refresh_token_unknown");
        let mut altered = tokens.refresh.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        app.refresh(&altered)
            .await
            .problem(401, "refresh_token_unknown");
        app.oauth_token(&[("grant_type", "refresh_token"), ("refresh_token", "nope")])
            .await
            .envelope_err(401);
    })
    .await;

    // Reuse: the family is revoked (a write, by design), then nothing more.
    let rotated = Tokens::from_v1(app.refresh(&tokens.refresh).await.ok(200));
    let before = app.snapshot().await;
    app.refresh(&tokens.refresh)
        .await
        .problem(401, "refresh_token_reused");
    let after = app.snapshot().await;
    assert_eq!(
        after.refresh_tokens, before.refresh_tokens,
        "reuse issued a token"
    );
    assert_eq!(after.events, before.events);
    assert!(
        after.refresh_spent > before.refresh_spent,
        "the family was not revoked"
    );
    app.unchanged("a token of a revoked family", || async {
        let answer = app.refresh(&rotated.refresh).await;
        assert_eq!(answer.status.as_u16(), 401, "{}", answer.text);
    })
    .await;
}

async fn bad_bodies_and_fields(engine: Engine) {
    let app = spawn_app_with(engine, |config| {
        for app in &mut config.apps {
            app.payload_rejections_per_key = 20;
        }
    })
    .await;
    let sessions = format!("/v1/apps/{APP}/sessions");
    let wechat = app.wechat_user(None).await;
    let ticket = app.ticket(APP, wechat).await;

    app.unchanged("bodies over the size limit", || async {
        let huge = json!({ "code": "a".repeat(70 * 1024) });
        app.post_json(&sessions, &huge, None)
            .await
            .problem(413, "body_too_large");
        app.post_json(
            &format!("/v1/apps/{APP}/profile"),
            &json!({ "ticket": ticket, "nickname": "n".repeat(70 * 1024), "avatar_url": "" }),
            None,
        )
        .await
        .problem(413, "body_too_large");
        let padding = "x".repeat(70 * 1024);
        app.post_form(
            "/oauth/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &padding)],
            None,
        )
        .await
        .envelope_err(410);
    })
    .await;

    let wechat2 = app.wechat_user(None).await;
    let fresh = app.ticket(APP, wechat2).await;
    let info = app.device.user_info(&app.appid, wechat2).await.unwrap();
    let big = "A".repeat(40 * 1024);
    app.unchanged("oversized fields", || async {
        app.login(APP, &"a".repeat(4000))
            .await
            .problem(400, "invalid_field");
        app.profile(
            APP,
            &json!({ "ticket": ticket, "nickname": "n".repeat(2000), "avatar_url": "https://e.com/a.png" }),
        )
        .await
        .problem(400, "invalid_field");
        app.profile(
            APP,
            &json!({ "ticket": ticket, "nickname": "Ok", "avatar_url": format!("https://e.com/{}", "a".repeat(8000)) }),
        )
        .await
        .problem(400, "invalid_field");
        // Legacy payload fields far beyond anything WeChat sends, under the body limit:
        // refused by the check they fail, before anything is decrypted or written.
        let legacy = |raw: &str, signature: &str, data: &str, iv: &str| {
            json!({ "ticket": fresh, "raw_data": raw, "signature": signature,
                    "encrypted_data": data, "iv": iv })
        };
        for (body, code) in [
            (
                legacy(&big, &info.signature, &info.encrypted_data, &info.iv),
                "invalid_field",
            ),
            (
                legacy(&info.raw_data, &big, &info.encrypted_data, &info.iv),
                "invalid_field",
            ),
            (
                legacy(&info.raw_data, &info.signature, &big, &info.iv),
                "payload_rejected",
            ),
            (
                legacy(&info.raw_data, &info.signature, &info.encrypted_data, &big),
                "payload_wrong_length",
            ),
        ] {
            app.profile(APP, &body).await.problem(400, code);
        }
        app.phone(APP, &json!({ "ticket": fresh, "code": big }))
            .await
            .problem(400, "invalid_field");
        app.profile(
            APP,
            &json!({ "ticket": big, "nickname": "x", "avatar_url": "https://e.com/a.png" }),
        )
        .await
        .problem(401, "ticket_malformed");
        app.wx("", APP, "login", &format!("code={}", "a".repeat(4000)), None)
            .await
            .envelope_err(410);
    })
    .await;

    app.unchanged("non-UTF-8 and malformed bodies", || async {
        app.post_raw(
            &sessions,
            "application/json",
            b"{\"code\":\"\xff\xfe\"}".to_vec(),
        )
        .await
        .problem(400, "invalid_utf8");
        for form in [
            &b"grant_type=password&account=%FF%FE&password=x"[..],
            &b"grant_type=password&account=\xff&password=x"[..],
        ] {
            app.post_raw(
                "/v1/token",
                "application/x-www-form-urlencoded",
                form.to_vec(),
            )
            .await
            .problem(400, "invalid_utf8");
        }
        app.post_raw(&sessions, "application/json", b"{\"code\":".to_vec())
            .await
            .problem(400, "invalid_json");
        app.post_raw(&sessions, "application/json", b"{\"code\":5}".to_vec())
            .await
            .problem(400, "invalid_body");
        app.post_raw(&sessions, "text/plain", b"{\"code\":\"abc\"}".to_vec())
            .await
            .problem(415, "unsupported_media_type");
        app.wx("", APP, "login", "code=%FF%FE", None)
            .await
            .envelope_err(410);
        app.wx("", APP, "login", "code=abc&code=def", None)
            .await
            .envelope_err(410);
        app.wx("", APP, "login", "code=%G1", None)
            .await
            .envelope_err(410);
    })
    .await;

    // The ticket is still good after all that.
    app.profile(
        APP,
        &json!({ "ticket": ticket, "nickname": "Fine", "avatar_url": "https://e.com/f.png" }),
    )
    .await
    .ok(200);
}

/// The phone is sealed (creating the account's data key) before the registration policy
/// and the binding rules are checked (application/src/phone.rs), so these refusals
/// leave a `data_keys` row behind although DESIGN.md says they write nothing.
async fn refused_phones_leave_no_data_key(engine: Engine) {
    let app = spawn_app(engine).await;
    let wechat = app.wechat_user(Some(&random_phone())).await;
    let ticket = app.ticket(EXISTING_ONLY_APP, wechat).await;
    let code = app.phone_code(EXISTING_ONLY_APP, wechat).await;
    app.unchanged("a phone refused by existing_phone_only", || async {
        app.phone(
            EXISTING_ONLY_APP,
            &json!({ "ticket": ticket, "code": code }),
        )
        .await
        .problem(403, "phone_not_registered");
    })
    .await;

    let (_, _, phone, _) = app.registered_user(APP).await;
    let twin = app.wechat_user(Some(&phone)).await;
    let ticket = app.ticket(APP, twin).await;
    let code = app.phone_code(APP, twin).await;
    app.unchanged(
        "a phone whose user is bound in this app already",
        || async {
            app.phone(APP, &json!({ "ticket": ticket, "code": code }))
                .await
                .problem(409, "user_already_bound_in_app");
        },
    )
    .await;
}
