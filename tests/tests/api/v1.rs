//! The v1 API: success shapes and the problem for representative bad inputs.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use miniauth_domain::crypto::{encode_base64, encrypt_payload, raw_data_signature};
use miniauth_domain::SessionKey;
use serde_json::json;

use crate::support::*;

fn sessions(appid: &str) -> String {
    format!("/v1/apps/{appid}/sessions")
}

#[tokio::test]
async fn a_new_user_logs_in_gets_a_ticket_and_no_tokens() {
    let h = harness().await;
    let answer = h
        .post_json(&sessions(APP), json!({ "code": "c_alice" }), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.content_type(), "application/json");
    let body = &answer.json;
    assert!(body["ticket"].as_str().unwrap().starts_with("v1."));
    assert_eq!(body["ticket_expires_in"], 3600);
    assert_eq!(body["bound"], false);
    assert_eq!(body["has_profile"], false);
    assert_eq!(body["has_phone"], false);
    assert!(body["tokens"].is_null());
    let request_id = answer.header("x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(request_id).is_ok());
}

#[tokio::test]
async fn a_client_request_id_is_echoed() {
    let h = harness().await;
    let request = Request::get("/healthz")
        .header("x-request-id", "front-end-42")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        h.send(request).await.header("x-request-id"),
        Some("front-end-42")
    );
}

#[tokio::test]
async fn login_refuses_missing_code_unknown_app_and_wechat_refusals() {
    let h = harness().await;
    let missing = h.post_json(&sessions(APP), json!({}), None).await;
    missing.assert_problem(400, "invalid_field");
    assert!(missing.json["detail"].as_str().unwrap().contains("code"));
    h.post_json(&sessions(APP), json!({ "code": "" }), None)
        .await
        .assert_problem(400, "invalid_field");
    h.post_json(&sessions(UNKNOWN_APP), json!({ "code": "c_alice" }), None)
        .await
        .assert_problem(404, "unknown_app");
    h.post_json(
        &sessions("not-an-appid"),
        json!({ "code": "c_alice" }),
        None,
    )
    .await
    .assert_problem(404, "unknown_app");
    h.post_json(&sessions(APP), json!({ "code": "invalid" }), None)
        .await
        .assert_problem(400, "code_invalid");
    h.post_json(&sessions(APP), json!({ "code": "used" }), None)
        .await
        .assert_problem(400, "code_used");
}

#[tokio::test]
async fn rate_limits_and_outages_carry_retry_after() {
    let h = harness().await;
    let busy = h
        .post_json(&sessions(APP), json!({ "code": "busy" }), None)
        .await;
    busy.assert_problem(429, "wechat_rate_limited");
    assert_eq!(busy.header("retry-after"), Some("60"));
    let down = h
        .post_json(&sessions(APP), json!({ "code": "down" }), None)
        .await;
    down.assert_problem(503, "wechat_unavailable");
    assert_eq!(down.header("retry-after"), Some("7"));
}

#[tokio::test]
async fn internal_failures_hide_their_cause() {
    let h = harness().await;
    let answer = h
        .post_json(&sessions(APP), json!({ "code": "badsecret" }), None)
        .await;
    answer.assert_problem(500, "wechat_app_credentials");
    let detail = answer.json["detail"].as_str().unwrap();
    assert!(
        !detail.contains("WeChat") && !detail.contains("credentials"),
        "{detail}"
    );
}

#[tokio::test]
async fn bodies_that_are_not_what_they_claim_are_refused() {
    let h = harness().await;
    let send = |content_type: &'static str, body: Vec<u8>| {
        Request::post(sessions(APP))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    };
    h.send(send("application/json", b"{\"code\": ".to_vec()))
        .await
        .assert_problem(400, "invalid_json");
    h.send(send("application/json", b"[1, 2]".to_vec()))
        .await
        .assert_problem(400, "invalid_body");
    h.send(send("text/plain", b"{\"code\": \"c_alice\"}".to_vec()))
        .await
        .assert_problem(415, "unsupported_media_type");
    h.send(send(
        "application/json",
        b"{\"code\": \"\xff\xfe\"}".to_vec(),
    ))
    .await
    .assert_problem(400, "invalid_utf8");
    let huge = format!("{{\"code\": \"{}\"}}", "a".repeat(70 * 1024));
    h.send(send("application/json", huge.into_bytes()))
        .await
        .assert_problem(413, "body_too_large");
}

#[tokio::test]
async fn the_body_limit_is_configurable() {
    let mut config = config();
    config.body_limit_bytes = 32;
    let h = harness_with(config).await;
    h.post_json(
        &sessions(APP),
        json!({ "code": "c_alice", "padding": "x".repeat(40) }),
        None,
    )
    .await
    .assert_problem(413, "body_too_large");
    let small = h
        .post_json(&sessions(APP), json!({ "code": "c_al" }), None)
        .await;
    assert_eq!(small.status, StatusCode::OK, "{}", small.text);
}

#[tokio::test]
async fn a_new_user_walks_profile_then_phone_and_gets_tokens() {
    let h = harness().await;
    let session = h.login(APP, "alice").await;
    let ticket = session["ticket"].as_str().unwrap();

    let profile = h
        .post_json(
            &format!("/v1/apps/{APP}/profile"),
            json!({ "ticket": ticket, "nickname": " Alice ", "avatar_url": "https://img.example/a.png" }),
            None,
        )
        .await;
    assert_eq!(profile.status, StatusCode::OK, "{}", profile.text);
    assert_eq!(
        profile.json,
        json!({ "nickname": "Alice", "avatar_url": "https://img.example/a.png" })
    );

    let phone = h
        .post_json(
            &format!("/v1/apps/{APP}/phone"),
            json!({ "ticket": ticket, "code": "p_13800138000" }),
            None,
        )
        .await;
    assert_eq!(phone.status, StatusCode::OK, "{}", phone.text);
    assert_eq!(phone.json["registered"], true);
    let user_id = phone.json["user_id"].as_i64().unwrap();
    let tokens = &phone.json["tokens"];
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert_eq!(tokens["refresh_expires_in"], 2_592_000);
    let access = tokens["access_token"].as_str().unwrap();

    let me = h.get("/v1/me", Some(access)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.json["user_id"], user_id);
    assert_eq!(me.json["phone"], "138****8000");
    assert_eq!(me.json["nickname"], "Alice");
    assert_eq!(me.json["status"], "active");
    assert_eq!(
        me.json["bindings"],
        json!([{ "appid": APP, "kind": "mini_program", "openid": "alice" }])
    );
    assert!(!me.text.contains("13800138000"));

    // A returning user logs in in one round trip.
    let again = h.login(APP, "alice").await;
    assert_eq!(again["bound"], true);
    assert_eq!(again["has_profile"], true);
    assert_eq!(again["has_phone"], true);
    assert_eq!(again["tokens"]["token_type"], "Bearer");
}

#[tokio::test]
async fn legacy_encrypted_profile_and_phone_are_accepted() {
    let h = harness().await;
    let ticket = h.login(APP, "bob").await["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = SessionKey::parse(SESSION_KEY).unwrap();
    let iv = [7u8; 16];
    let now = chrono::Utc::now().timestamp();
    let info = json!({
        "openId": "bob", "nickName": "Bob", "avatarUrl": "https://img.example/b.png",
        "unionId": "u_bob", "watermark": { "appid": APP, "timestamp": now }
    })
    .to_string();
    let raw_data = r#"{"nickName":"Bob"}"#;
    let profile = h
        .post_json(
            &format!("/v1/apps/{APP}/profile"),
            json!({
                "ticket": ticket,
                "raw_data": raw_data,
                "signature": raw_data_signature(raw_data, &key),
                "encrypted_data": encrypt_payload(&key, &iv, info.as_bytes()),
                "iv": encode_base64(&iv),
            }),
            None,
        )
        .await;
    assert_eq!(profile.status, StatusCode::OK, "{}", profile.text);
    assert_eq!(profile.json["nickname"], "Bob");

    let bad_signature = h
        .post_json(
            &format!("/v1/apps/{APP}/profile"),
            json!({
                "ticket": ticket, "raw_data": raw_data, "signature": "0".repeat(40),
                "encrypted_data": encrypt_payload(&key, &iv, info.as_bytes()),
                "iv": encode_base64(&iv),
            }),
            None,
        )
        .await;
    bad_signature.assert_problem(400, "payload_rejected");

    let phone = json!({
        "phoneNumber": "13900001111", "purePhoneNumber": "13900001111", "countryCode": "86",
        "watermark": { "appid": APP, "timestamp": now }
    })
    .to_string();
    let not_base64 = h
        .post_json(
            &format!("/v1/apps/{APP}/phone"),
            json!({ "ticket": ticket, "encrypted_data": "***", "iv": encode_base64(&iv) }),
            None,
        )
        .await;
    not_base64.assert_problem(400, "payload_not_base64");
    let answer = h
        .post_json(
            &format!("/v1/apps/{APP}/phone"),
            json!({
                "ticket": ticket,
                "encrypted_data": encrypt_payload(&key, &iv, phone.as_bytes()),
                "iv": encode_base64(&iv),
            }),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["registered"], true);
}

#[tokio::test]
async fn profile_and_phone_need_one_of_their_inputs_and_a_good_ticket() {
    let h = harness().await;
    let ticket = h.login(APP, "carol").await["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    h.post_json(
        &format!("/v1/apps/{APP}/profile"),
        json!({ "ticket": ticket }),
        None,
    )
    .await
    .assert_problem(400, "invalid_field");
    h.post_json(
        &format!("/v1/apps/{APP}/phone"),
        json!({ "ticket": ticket }),
        None,
    )
    .await
    .assert_problem(400, "invalid_field");
    h.post_json(
        &format!("/v1/apps/{APP}/phone"),
        json!({ "code": "p_13800138000" }),
        None,
    )
    .await
    .assert_problem(400, "ticket_missing");
    let forged = h.forged_ticket(APP, "carol", 1);
    h.post_json(
        &format!("/v1/apps/{APP}/phone"),
        json!({ "ticket": forged, "code": "p_13800138000" }),
        None,
    )
    .await
    .assert_problem(401, "ticket_forged");
    let expired = h.expired_ticket(APP, "carol", 1);
    h.post_json(
        &format!("/v1/apps/{APP}/phone"),
        json!({ "ticket": expired, "code": "p_13800138000" }),
        None,
    )
    .await
    .assert_problem(401, "ticket_expired");
    h.post_json(
        &format!("/v1/apps/{CLOSED_APP}/phone"),
        json!({ "ticket": ticket, "code": "p_13800138000" }),
        None,
    )
    .await
    .assert_problem(401, "ticket_app_mismatch");
    h.post_json(
        &format!("/v1/apps/{APP}/phone"),
        json!({ "ticket": ticket, "code": "p_other_app" }),
        None,
    )
    .await
    .assert_problem(400, "payload_rejected");
}

#[tokio::test]
async fn a_closed_app_refuses_registration_with_403() {
    let h = harness().await;
    let ticket = h.login(CLOSED_APP, "dave").await["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    h.post_json(
        &format!("/v1/apps/{CLOSED_APP}/phone"),
        json!({ "ticket": ticket, "code": "p_13800138000" }),
        None,
    )
    .await
    .assert_problem(403, "registration_closed");
    assert!(!h.users.any().await);
}

#[tokio::test]
async fn password_users_bind_unbind_and_are_refused_twice() {
    let h = harness().await;
    h.add_user("erin", "password-1", None).await;
    let tokens = h
        .post_json(
            "/v1/token",
            json!({ "grant_type": "password", "account": "erin", "password": "password-1" }),
            None,
        )
        .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text);
    let access = tokens.json["access_token"].as_str().unwrap().to_owned();

    let ticket = h.login(APP, "erin_wx").await["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let binding = format!("/v1/apps/{APP}/binding");
    let bound = h
        .post_json(&binding, json!({ "ticket": ticket }), Some(&access))
        .await;
    assert_eq!(bound.status, StatusCode::OK, "{}", bound.text);
    assert_eq!(bound.json["user_id"], 1);

    // A second WeChat identity of the same user in the same app is refused.
    let other = h.login(APP, "erin_other").await["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    h.post_json(&binding, json!({ "ticket": other }), Some(&access))
        .await
        .assert_problem(409, "user_already_bound_in_app");

    // The ticket grant now works for the bound identity (with a ticket of a new
    // login: the first one was spent on the binding).
    let ticket = unspent_ticket(&h, "erin_wx").await;
    let granted = h
        .post_json(
            "/v1/token",
            json!({ "grant_type": "ticket", "ticket": ticket }),
            None,
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.text);

    let unbound = h.delete(&binding, &access).await;
    assert_eq!(unbound.status, StatusCode::NO_CONTENT);
    h.delete(&binding, &access)
        .await
        .assert_problem(404, "not_bound");
    let ticket = unspent_ticket(&h, "erin_wx").await;
    h.post_json(
        "/v1/token",
        json!({ "grant_type": "ticket", "ticket": ticket }),
        None,
    )
    .await
    .assert_problem(404, "not_bound");
}

/// A ticket of a new login that no answer spent on tokens: GitEgg's login answers only
/// the ticket (its bind key), where v1's answers a bound identity with tokens.
async fn unspent_ticket(h: &Harness, openid: &str) -> String {
    h.get(&format!("/wx/user/{APP}/login?code=c_{openid}"), None)
        .await
        .assert_envelope(200)["bindKey"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn bearer_routes_refuse_missing_and_bad_tokens() {
    let h = harness().await;
    let missing = h.get("/v1/me", None).await;
    missing.assert_problem(401, "access_token_missing");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    h.get("/v1/me", Some("garbage"))
        .await
        .assert_problem(401, "access_token_invalid");
    h.get("/v1/me", Some(&h.expired_access_token()))
        .await
        .assert_problem(401, "access_token_expired");
    let basic = Request::get("/v1/me")
        .header(header::AUTHORIZATION, "Basic abc")
        .body(Body::empty())
        .unwrap();
    h.send(basic)
        .await
        .assert_problem(401, "access_token_invalid");
    h.delete(&format!("/v1/apps/{APP}/binding"), "garbage")
        .await
        .assert_problem(401, "access_token_invalid");
    h.post_json("/v1/logout", json!({ "refresh_token": "x" }), None)
        .await
        .assert_problem(401, "access_token_missing");
    // A token of a user that does not exist.
    h.get("/v1/me", Some(&h.access_token_of_unknown_user(99).await))
        .await
        .assert_problem(404, "user_not_found");
}

#[tokio::test]
async fn a_disabled_user_is_refused() {
    let h = harness().await;
    let id = h.add_user("frank", "password-1", None).await;
    let tokens = h
        .post_json(
            "/v1/token",
            json!({ "grant_type": "password", "account": "frank", "password": "password-1" }),
            None,
        )
        .await;
    let access = tokens.json["access_token"].as_str().unwrap().to_owned();
    h.users.disable(id).await;
    h.get("/v1/me", Some(&access))
        .await
        .assert_problem(403, "user_disabled");
}

#[tokio::test]
async fn token_accepts_forms_and_refuses_bad_grants() {
    let h = harness().await;
    h.add_user("gina", "password-1", Some("13700001111")).await;
    let form = h
        .post_form(
            "/v1/token",
            "grant_type=password&account=gina&password=password-1",
            None,
        )
        .await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.text);
    let refresh = form.json["refresh_token"].as_str().unwrap().to_owned();

    let rotated = h
        .post_form(
            "/v1/token",
            &format!("grant_type=refresh_token&refresh_token={refresh}"),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    assert_ne!(rotated.json["refresh_token"], refresh.as_str());
    h.post_json(
        "/v1/token",
        json!({ "grant_type": "refresh_token", "refresh_token": refresh }),
        None,
    )
    .await
    .assert_problem(401, "refresh_token_reused");

    h.post_json("/v1/token", json!({ "grant_type": "magic" }), None)
        .await
        .assert_problem(400, "unsupported_grant_type");
    // GitEgg's grant, and no grant at all, are not v1 grants.
    h.post_json(
        "/v1/token",
        json!({ "grant_type": "social", "social_key": "x" }),
        None,
    )
    .await
    .assert_problem(400, "unsupported_grant_type");
    h.post_json("/v1/token", json!({ "ticket": "x" }), None)
        .await
        .assert_problem(400, "unsupported_grant_type");
    h.post_json("/v1/token", json!({ "grant_type": 3 }), None)
        .await
        .assert_problem(400, "invalid_body");
    h.post_json("/v1/token", json!({ "grant_type": "refresh_token" }), None)
        .await
        .assert_problem(400, "invalid_field");
    h.post_json(
        "/v1/token",
        json!({ "grant_type": "ticket", "ticket": "nonsense" }),
        None,
    )
    .await
    .assert_problem(401, "ticket_malformed");
    let plain = Request::post("/v1/token")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("grant_type=password"))
        .unwrap();
    h.send(plain)
        .await
        .assert_problem(415, "unsupported_media_type");

    for _ in 0..3 {
        h.post_json(
            "/v1/token",
            json!({ "grant_type": "password", "account": "gina", "password": "wrong" }),
            None,
        )
        .await
        .assert_problem(401, "invalid_credentials");
    }
    let throttled = h
        .post_json(
            "/v1/token",
            json!({ "grant_type": "password", "account": "gina", "password": "password-1" }),
            None,
        )
        .await;
    throttled.assert_problem(429, "too_many_attempts");
    assert_eq!(throttled.header("retry-after"), Some("30"));
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let h = harness().await;
    let phone = h.register("hank", "13600001111").await;
    let access = phone["tokens"]["access_token"].as_str().unwrap();
    let refresh = phone["tokens"]["refresh_token"].as_str().unwrap();
    let answer = h
        .post_json(
            "/v1/logout",
            json!({ "refresh_token": refresh }),
            Some(access),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text);
    h.post_json(
        "/v1/token",
        json!({ "grant_type": "refresh_token", "refresh_token": refresh }),
        None,
    )
    .await
    .assert_problem(401, "refresh_token_unknown");
    // Without a refresh token the access token's own session ends.
    let again = h.login(APP, "hank").await;
    let access = again["tokens"]["access_token"].as_str().unwrap();
    let answer = h.post_json("/v1/logout", json!({}), Some(access)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.text);
    h.get("/v1/me", Some(access))
        .await
        .assert_problem(401, "access_token_revoked");
}

#[tokio::test]
async fn admin_users_need_the_admin_token() {
    let h = harness().await;
    let body = json!({ "account": "ivy", "password": "password-1", "mobile": "13500001111", "nickname": "Ivy" });
    h.post_json(
        "/v1/admin/users",
        body.clone(),
        Some("wrong-token-0123456789"),
    )
    .await
    .assert_problem(401, "admin_token_invalid");
    h.post_json("/v1/admin/users", body.clone(), None)
        .await
        .assert_problem(401, "admin_token_invalid");
    let created = h
        .post_json("/v1/admin/users", body.clone(), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json["account"], "ivy");
    assert_eq!(created.json["phone"], "135****1111");
    assert_eq!(created.json["tenant"], "default");
    h.post_json("/v1/admin/users", body, Some(ADMIN_TOKEN))
        .await
        .assert_problem(409, "account_taken");
    h.post_json(
        "/v1/admin/users",
        json!({ "account": "jo", "password": "short" }),
        Some(ADMIN_TOKEN),
    )
    .await
    .assert_problem(400, "invalid_field");
    h.post_json(
        "/v1/admin/users",
        json!({ "account": "jo", "password": "password-1", "mobile": "12-34" }),
        Some(ADMIN_TOKEN),
    )
    .await
    .assert_problem(400, "invalid_field");

    let mut config = config();
    config.admin_token = None;
    harness_with(config)
        .await
        .post_json("/v1/admin/users", json!({}), Some(ADMIN_TOKEN))
        .await
        .assert_problem(403, "admin_disabled");
}

#[tokio::test]
async fn admins_disable_and_enable_users_and_disabling_ends_their_sessions() {
    let h = harness().await;
    let id = h.add_user("kim", "password-1", None).await;
    let tokens = h
        .post_json(
            "/v1/token",
            json!({ "grant_type": "password", "account": "kim", "password": "password-1" }),
            None,
        )
        .await;
    let access = tokens.json["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens.json["refresh_token"].as_str().unwrap().to_owned();
    let disable = format!("/v1/admin/users/{id}/disable");
    h.post_json(&disable, json!({}), None)
        .await
        .assert_problem(401, "admin_token_invalid");
    assert_eq!(h.get("/v1/me", Some(&access)).await.status, StatusCode::OK);

    let disabled = h.post_json(&disable, json!({}), Some(ADMIN_TOKEN)).await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.text);
    assert_eq!(disabled.json["status"], "disabled");
    assert_eq!(disabled.json["user_id"], id);
    h.get("/v1/me", Some(&access))
        .await
        .assert_problem(401, "access_token_revoked");
    h.post_json(
        "/v1/token",
        json!({ "grant_type": "refresh_token", "refresh_token": refresh }),
        None,
    )
    .await
    .assert_problem(401, "refresh_token_unknown");

    let enabled = h
        .post_json(
            &format!("/v1/admin/users/{id}/enable"),
            json!({}),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(enabled.json["status"], "active", "{}", enabled.text);
    h.get("/v1/me", Some(&access))
        .await
        .assert_problem(401, "access_token_revoked");
    h.post_json(
        "/v1/admin/users/12345/disable",
        json!({}),
        Some(ADMIN_TOKEN),
    )
    .await
    .assert_problem(404, "user_not_found");
    h.post_json("/v1/admin/users/zero/enable", json!({}), Some(ADMIN_TOKEN))
        .await
        .assert_problem(400, "invalid_field");
}

#[tokio::test]
async fn slow_requests_time_out_with_a_problem() {
    let mut config = config();
    config.request_timeout = std::time::Duration::from_millis(50);
    let h = harness_with(config).await;
    let answer = h
        .post_json(&sessions(APP), json!({ "code": "slow" }), None)
        .await;
    answer.assert_problem(503, "request_timeout");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(answer.header("x-request-id").is_some());
}
