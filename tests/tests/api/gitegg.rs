//! The GitEgg-compatible API: always HTTP 200 with the envelope and GitEgg's codes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use miniauth_domain::crypto::{encode_base64, encrypt_payload, raw_data_signature};
use miniauth_domain::SessionKey;
use serde_json::json;

use crate::support::*;

fn wx(path: &str) -> String {
    format!("/wx/user/{APP}/{path}")
}

async fn bind_key(h: &Harness, prefix: &str, openid: &str) -> String {
    let answer = h
        .get(
            &format!("{prefix}/wx/user/{APP}/login?code=c_{openid}"),
            None,
        )
        .await;
    answer.assert_envelope(200)["bindKey"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn login_answers_the_gitegg_shape_under_both_prefixes() {
    let h = harness().await;
    for prefix in ["", "/extension"] {
        let answer = h
            .get(&format!("{prefix}/wx/user/{APP}/login?code=c_kate"), None)
            .await;
        assert_eq!(answer.content_type(), "application/json");
        let data = answer.assert_envelope(200);
        assert_eq!(data["openid"], "kate");
        assert_eq!(data["unionid"], "u_kate");
        assert_eq!(data["userInfoAlready"], false);
        assert_eq!(data["userBindAlready"], false);
        assert!(data["bindKey"].as_str().unwrap().starts_with("v1."));
        assert!(answer.header("x-request-id").is_some());
    }
}

#[tokio::test]
async fn login_failures_are_envelopes_with_gitegg_codes() {
    let h = harness().await;
    let missing = h.get(&wx("login"), None).await;
    missing.assert_envelope(410);
    assert!(missing.json["data"].is_null());
    assert!(missing.json["msg"].as_str().unwrap().contains("code"));
    h.get(&format!("/wx/user/{UNKNOWN_APP}/login?code=c_kate"), None)
        .await
        .assert_envelope(410);
    h.get(&wx("login?code=down"), None)
        .await
        .assert_envelope(500);
    h.get(&wx("login?code=a%FF"), None)
        .await
        .assert_envelope(410);
    h.get(&wx("login?code=a%2"), None)
        .await
        .assert_envelope(410);
}

#[tokio::test]
async fn info_accepts_legacy_payloads_whose_plus_signs_became_spaces() {
    let h = harness().await;
    let key = SessionKey::parse(SESSION_KEY).unwrap();
    let social_key = bind_key(&h, "", "liam").await;
    let now = chrono::Utc::now().timestamp();
    let info = json!({
        "openId": "liam", "nickName": "Liam", "avatarUrl": "https://img.example/l.png",
        "watermark": { "appid": APP, "timestamp": now }
    })
    .to_string();
    // Find an iv whose ciphertext or base64 contains '+', as real ones often do.
    let (iv, encrypted) = (0u8..=255)
        .map(|i| {
            let iv = [i; 16];
            (iv, encrypt_payload(&key, &iv, info.as_bytes()))
        })
        .find(|(iv, data)| data.contains('+') || encode_base64(iv).contains('+'))
        .unwrap();
    let raw_data = r#"{"nickName":"Liam"}"#;
    // Sent without encoding '+', as buggy front ends do: the query turns it into a space.
    let query = format!(
        "socialKey={social_key}&signature={}&rawData={}&encryptedData={encrypted}&iv={}",
        raw_data_signature(raw_data, &key),
        "%7B%22nickName%22%3A%22Liam%22%7D",
        encode_base64(&iv),
    );
    let answer = h.get(&format!("{}?{query}", wx("info")), None).await;
    let data = answer.assert_envelope(200);
    assert_eq!(data["nickName"], "Liam");
    assert_eq!(data["avatarUrl"], "https://img.example/l.png");

    let bad = h
        .get(
            &format!(
                "{}?socialKey={social_key}&rawData=x&signature=00&encryptedData={encrypted}&iv={}",
                wx("info"),
                encode_base64(&iv)
            ),
            None,
        )
        .await;
    bad.assert_envelope(410);
    h.get(
        &format!("{}?socialKey=&encryptedData=AAAA", wx("info")),
        None,
    )
    .await
    .assert_envelope(410);
    h.get(
        &format!(
            "{}?socialKey=T.x.y.1.2.bad&nickName=A&avatarUrl=https://a",
            wx("info")
        ),
        None,
    )
    .await
    .assert_envelope(401);
}

#[tokio::test]
async fn phone_binds_and_answers_token_data() {
    let h = harness().await;
    let social_key = bind_key(&h, "/extension", "mia").await;
    let answer = h
        .get(
            &format!("/extension/wx/user/{APP}/phone?socialKey={social_key}&code=p_13800138001"),
            None,
        )
        .await;
    let data = answer.assert_envelope(200);
    assert_eq!(data["tokenHead"], "Bearer ");
    assert_eq!(data["expiresIn"], 900);
    assert_eq!(data["refreshExpiresIn"], 2_592_000);
    assert!(data["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    assert!(data["refreshExp"].as_i64().unwrap() > data["exp"].as_i64().unwrap());
    assert!(data["token"].as_str().unwrap().starts_with("eyJ"));
    assert!(data["refreshToken"].is_string());
    assert_eq!(data["registered"], true);

    // Now bound: the login says so, and the social grant works.
    let login = h.get(&wx("login?code=c_mia"), None).await;
    let login = login.assert_envelope(200);
    assert_eq!(login["userBindAlready"], true);
    // The earlier bind key names a session the new login replaced.
    h.post_form(
        "/oauth/token",
        &format!("grant_type=social&social_key={social_key}"),
        None,
    )
    .await
    .assert_envelope(401);
    let social_key = login["bindKey"].as_str().unwrap();
    let social = h
        .post_form(
            "/oauth/token",
            &format!("grant_type=social&social_key={social_key}"),
            None,
        )
        .await;
    assert_eq!(social.assert_envelope(200)["tokenHead"], "Bearer ");
}

#[tokio::test]
async fn phone_refusals_map_to_gitegg_codes() {
    let h = harness().await;
    let key = bind_key(&h, "", "noah").await;
    h.get(&format!("{}?socialKey={key}", wx("phone")), None)
        .await
        .assert_envelope(410);
    let closed = h
        .get(&format!("/wx/user/{CLOSED_APP}/login?code=c_noah"), None)
        .await;
    let closed_key = closed.assert_envelope(200)["bindKey"]
        .as_str()
        .unwrap()
        .to_owned();
    h.get(
        &format!("/wx/user/{CLOSED_APP}/phone?socialKey={closed_key}&code=p_13800138002"),
        None,
    )
    .await
    .assert_envelope(403);
}

#[tokio::test]
async fn oauth_token_password_refresh_and_client_credentials() {
    let h = harness().await;
    h.add_user("olga", "password-1", None).await;
    let wrong = h
        .post_form(
            "/oauth/token",
            "grant_type=password&username=olga&password=nope",
            None,
        )
        .await;
    wrong.assert_envelope(419);
    let ok = h
        .post_form(
            "/oauth/token",
            "grant_type=password&username=olga&password=password-1",
            None,
        )
        .await;
    let refresh = ok.assert_envelope(200)["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = h
        .post_form(
            "/oauth/token",
            &format!("grant_type=refresh_token&refresh_token={refresh}"),
            None,
        )
        .await;
    rotated.assert_envelope(200);
    h.post_form(
        "/oauth/token",
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
        None,
    )
    .await
    .assert_envelope(401);
    h.post_form("/oauth/token", "grant_type=implicit", None)
        .await
        .assert_envelope(410);
    // v1's grant, and no grant at all, are not GitEgg grants.
    h.post_form("/oauth/token", "grant_type=ticket&ticket=x", None)
        .await
        .assert_envelope(410);
    h.post_form("/oauth/token", "social_key=x", None)
        .await
        .assert_envelope(410);
    h.post_form("/oauth/token", "grant_type=social&social_key=", None)
        .await
        .assert_envelope(410);

    let mut config = config();
    config.compat_clients = vec![("gitegg-client".into(), miniauth_http::Secret::new("123456"))];
    let strict = harness_with(config).await;
    strict.add_user("olga", "password-1", None).await;
    let form = "grant_type=password&username=olga&password=password-1";
    strict
        .post_form("/oauth/token", form, None)
        .await
        .assert_envelope(401);
    let wrong_client = STANDARD.encode("gitegg-client:654321");
    strict
        .post_form("/oauth/token", form, Some(&wrong_client))
        .await
        .assert_envelope(401);
    let client = STANDARD.encode("gitegg-client:123456");
    strict
        .post_form("/oauth/token", form, Some(&client))
        .await
        .assert_envelope(200);
}

#[tokio::test]
async fn bind_unbind_user_info_and_logout_for_a_logged_in_user() {
    let h = harness().await;
    h.add_user("paul", "password-1", Some("13300001111")).await;
    let tokens = h
        .post_form(
            "/oauth/token",
            "grant_type=password&username=paul&password=password-1",
            None,
        )
        .await;
    let data = tokens.assert_envelope(200).clone();
    let access = data["token"].as_str().unwrap();

    let key = bind_key(&h, "", "paul_wx").await;
    let bound = h
        .get(&format!("{}?socialKey={key}", wx("bind")), Some(access))
        .await;
    assert_eq!(bound.assert_envelope(200)["userId"], 1);

    // Another user may not take the same WeChat identity.
    h.add_user("quinn", "password-1", None).await;
    let quinn = h
        .post_form(
            "/oauth/token",
            "grant_type=password&username=quinn&password=password-1",
            None,
        )
        .await;
    let quinn_access = quinn.assert_envelope(200)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = bind_key(&h, "", "paul_wx").await;
    h.get(
        &format!("{}?socialKey={key}", wx("bind")),
        Some(&quinn_access),
    )
    .await
    .assert_envelope(603);

    let info = h.get("/system/account/user/info", Some(access)).await;
    let user = info.assert_envelope(200);
    assert_eq!(user["account"], "paul");
    assert_eq!(user["mobile"], "133****1111");
    assert_eq!(
        user["bindings"],
        json!([{ "appid": APP, "kind": "mini_program", "openid": "paul_wx" }])
    );

    h.get(&wx("unbind"), Some(access))
        .await
        .assert_envelope(200);
    h.get(&wx("unbind"), Some(access))
        .await
        .assert_envelope(601);

    let logout = h
        .post_json(
            "/oauth/logout",
            json!({ "refreshToken": data["refreshToken"] }),
            Some(access),
        )
        .await;
    logout.assert_envelope(200);
    h.post_form(
        "/oauth/token",
        &format!(
            "grant_type=refresh_token&refresh_token={}",
            data["refreshToken"].as_str().unwrap()
        ),
        None,
    )
    .await
    .assert_envelope(401);
}

#[tokio::test]
async fn bearer_and_body_failures_are_envelopes() {
    let h = harness().await;
    h.get("/system/account/user/info", None)
        .await
        .assert_envelope(401);
    h.get("/system/account/user/info", Some("garbage"))
        .await
        .assert_envelope(401);
    h.get(&wx("unbind"), Some(&h.expired_access_token()))
        .await
        .assert_envelope(401);
    h.get(&format!("{}?socialKey=x", wx("bind")), None)
        .await
        .assert_envelope(401);
    h.post_json("/oauth/logout", json!({ "refreshToken": "x" }), None)
        .await
        .assert_envelope(401);
    let id = h.add_user("rita", "password-1", None).await;
    let tokens = h
        .post_form(
            "/oauth/token",
            "grant_type=password&username=rita&password=password-1",
            None,
        )
        .await;
    let access = tokens.assert_envelope(200)["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let huge = json!({ "refreshToken": "x".repeat(70 * 1024) });
    h.post_json("/oauth/logout", huge, Some(&access))
        .await
        .assert_envelope(410);
    h.users.disable(id).await;
    h.get("/system/account/user/info", Some(&access))
        .await
        .assert_envelope(428);
    h.get(
        "/system/account/user/info",
        Some(&h.access_token_of_unknown_user(99).await),
    )
    .await
    .assert_envelope(423);
    h.get("/wx/user/nowhere", None).await.assert_envelope(410);
    h.post_form(&wx("login"), "code=c_x", None)
        .await
        .assert_envelope(410);
}
