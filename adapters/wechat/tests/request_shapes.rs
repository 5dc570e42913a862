//! A stub WeChat that records every request: pins the exact request shapes of
//! WECHAT.md (method, path, query and body field names) and the answer parsing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::{Json, Router};
use common::*;
use miniauth_application::ports::{WeChatApi, WeChatError};
use miniauth_domain::crypto::session_hmac;
use miniauth_domain::{OpenId, SessionKey};
use miniauth_wechat::{SessionStatus, WeChatClient};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    body: Value,
}

impl Recorded {
    fn query_keys(&self) -> BTreeSet<&str> {
        self.query.keys().map(String::as_str).collect()
    }

    fn body_keys(&self) -> BTreeSet<&str> {
        self.body
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

struct Stub {
    requests: Vec<Recorded>,
    /// Phone calls with these access tokens get 40001.
    refused_tokens: Vec<String>,
    session_answer: Value,
}

type Shared = Arc<Mutex<Stub>>;

const KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
const NEW_KEY: &str = "o0q0otL8aEzpcZL/FT9WsQ==";

async fn answer(State(stub): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Json<Value> {
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut stub = stub.lock().unwrap();
    stub.requests.push(Recorded {
        method,
        path: uri.path().to_owned(),
        query: query.clone(),
        body: body.clone(),
    });
    Json(match uri.path() {
        "/sns/jscode2session" => stub.session_answer.clone(),
        "/cgi-bin/stable_token" if body["force_refresh"] == json!(true) => {
            json!({"access_token": "TOKEN-2", "expires_in": 7200})
        }
        "/cgi-bin/stable_token" => json!({"access_token": "TOKEN-1", "expires_in": 7200}),
        "/wxa/business/getuserphonenumber"
            if query
                .get("access_token")
                .is_some_and(|t| stub.refused_tokens.contains(t)) =>
        {
            json!({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"})
        }
        "/wxa/business/getuserphonenumber" => json!({
            "errcode": 0,
            "errmsg": "ok",
            "phone_info": {
                "phoneNumber": "+1 4155550100",
                "purePhoneNumber": "4155550100",
                "countryCode": "1",
                "watermark": {"timestamp": 1637744274, "appid": BOUND},
                "fieldFromTheFuture": [1, 2]
            }
        }),
        "/wxa/checksession" => json!({"errcode": 0, "errmsg": "ok"}),
        "/wxa/resetusersessionkey" => {
            json!({"errcode": 0, "errmsg": "ok", "openid": "oStubOpenid", "session_key": NEW_KEY})
        }
        _ => json!({"errcode": 404, "errmsg": "no such stub"}),
    })
}

async fn start_stub() -> (WeChatClient, Shared) {
    let stub = Arc::new(Mutex::new(Stub {
        requests: Vec::new(),
        refused_tokens: Vec::new(),
        session_answer: json!({
            "openid": "oStubOpenid",
            "session_key": KEY,
            "unionid": "oStubUnionid",
            "expires_in": 7200,
            "somethingNew": {"nested": true}
        }),
    }));
    let app = Router::new().fallback(answer).with_state(Arc::clone(&stub));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = WeChatClient::new(fast_config(format!("http://{addr}"))).unwrap();
    (client, stub)
}

fn requests(stub: &Shared) -> Vec<Recorded> {
    stub.lock().unwrap().requests.clone()
}

fn keys<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

fn openid() -> OpenId {
    OpenId::parse("oStubOpenid").unwrap()
}

#[tokio::test]
async fn code2session_is_a_get_with_appid_secret_js_code_and_grant_type() {
    let (client, stub) = start_stub().await;

    let session = client
        .code_to_session(&appid(BOUND), &code("0a1b2c3d"))
        .await
        .unwrap();

    let sent = requests(&stub);
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(r.method, Method::GET);
    assert_eq!(r.path, "/sns/jscode2session");
    assert_eq!(
        r.query_keys(),
        keys(&["appid", "secret", "js_code", "grant_type"])
    );
    assert_eq!(r.query["appid"], BOUND);
    assert_eq!(r.query["secret"], secret_of(BOUND));
    assert_eq!(r.query["js_code"], "0a1b2c3d");
    assert_eq!(r.query["grant_type"], "authorization_code");
    assert_eq!(r.body, Value::Null);
    // Unknown fields (expires_in, somethingNew) are ignored.
    assert_eq!(session.openid.as_str(), "oStubOpenid");
    assert_eq!(session.unionid.unwrap().as_str(), "oStubUnionid");
    assert_eq!(session.session_key.expose_text(), KEY);
}

#[tokio::test]
async fn stable_token_is_a_json_post_with_four_fields() {
    let (client, stub) = start_stub().await;

    let token = client.access_token(&appid(BOUND)).await.unwrap();

    assert_eq!(token.expose(), "TOKEN-1");
    let sent = requests(&stub);
    let r = &sent[0];
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/cgi-bin/stable_token");
    assert!(r.query.is_empty());
    assert_eq!(
        r.body,
        json!({
            "grant_type": "client_credential",
            "appid": BOUND,
            "secret": secret_of(BOUND),
            "force_refresh": false
        })
    );
}

#[tokio::test]
async fn getuserphonenumber_posts_code_and_openid_with_the_token_in_the_query() {
    let (client, stub) = start_stub().await;

    let phone = client
        .phone_number(&appid(BOUND), &code("phonecode1"), &openid())
        .await
        .unwrap();

    // countryCode as a string, and unknown fields, are accepted.
    assert_eq!(phone.phone.pure(), "4155550100");
    assert_eq!(phone.phone.country_code(), "1");
    assert_eq!(phone.watermark.appid, BOUND);
    assert_eq!(phone.watermark.timestamp, 1637744274);
    let sent = requests(&stub);
    let r = sent.last().unwrap();
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/wxa/business/getuserphonenumber");
    assert_eq!(r.query_keys(), keys(&["access_token"]));
    assert_eq!(r.query["access_token"], "TOKEN-1");
    assert_eq!(r.body_keys(), keys(&["code", "openid"]));
    assert_eq!(r.body["code"], "phonecode1");
    assert_eq!(r.body["openid"], "oStubOpenid");
}

#[tokio::test]
async fn checksession_and_reset_sign_with_hmac_of_the_key_text() {
    let (client, stub) = start_stub().await;
    let key = SessionKey::parse(KEY).unwrap();

    assert_eq!(
        client.check_session(&appid(BOUND), &openid(), &key).await,
        Ok(SessionStatus::Valid)
    );
    let fresh = client
        .reset_session_key(&appid(BOUND), &openid(), &key)
        .await
        .unwrap();

    assert_eq!(fresh.expose_text(), NEW_KEY);
    let sent = requests(&stub);
    let paths: Vec<&str> = sent.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/cgi-bin/stable_token",
            "/wxa/checksession",
            "/wxa/resetusersessionkey"
        ]
    );
    for r in &sent[1..] {
        assert_eq!(r.method, Method::GET);
        assert_eq!(
            r.query_keys(),
            keys(&["access_token", "openid", "signature", "sig_method"])
        );
        assert_eq!(r.query["access_token"], "TOKEN-1");
        assert_eq!(r.query["openid"], "oStubOpenid");
        assert_eq!(r.query["signature"], session_hmac(&key, ""));
        assert_eq!(r.query["sig_method"], "hmac_sha256");
    }
}

#[tokio::test]
async fn a_refused_token_that_wechat_hands_out_again_is_force_refreshed() {
    let (client, stub) = start_stub().await;
    stub.lock().unwrap().refused_tokens = vec!["TOKEN-1".into()];

    client
        .phone_number(&appid(BOUND), &code("phonecode1"), &openid())
        .await
        .unwrap();

    let sent = requests(&stub);
    let trail: Vec<(String, String)> = sent
        .iter()
        .map(|r| {
            let detail = match r.path.as_str() {
                "/cgi-bin/stable_token" => r.body["force_refresh"].to_string(),
                _ => r.query["access_token"].clone(),
            };
            (r.path.clone(), detail)
        })
        .collect();
    let expected = [
        ("/cgi-bin/stable_token", "false"),
        ("/wxa/business/getuserphonenumber", "TOKEN-1"),
        ("/cgi-bin/stable_token", "false"),
        ("/cgi-bin/stable_token", "true"),
        ("/wxa/business/getuserphonenumber", "TOKEN-2"),
    ]
    .map(|(p, d)| (p.to_owned(), d.to_owned()));
    assert_eq!(trail, expected);
}

#[tokio::test]
async fn a_token_refused_after_the_refresh_is_an_error_not_a_loop() {
    let (client, stub) = start_stub().await;
    stub.lock().unwrap().refused_tokens = vec!["TOKEN-1".into(), "TOKEN-2".into()];

    let result = client
        .phone_number(&appid(BOUND), &code("phonecode1"), &openid())
        .await;

    assert!(matches!(
        result,
        Err(WeChatError::Unknown { code: 40001, .. })
    ));
    let phone_calls = requests(&stub)
        .iter()
        .filter(|r| r.path == "/wxa/business/getuserphonenumber")
        .count();
    assert_eq!(phone_calls, 2);
}

#[tokio::test]
async fn a_malformed_answer_is_an_error_that_quotes_no_value() {
    let (client, stub) = start_stub().await;
    stub.lock().unwrap().session_answer =
        json!({"openid": "oStubOpenid", "session_key": "!!notakey-butasecret!!!!"});

    let Err(error) = client.code_to_session(&appid(BOUND), &code("c1")).await else {
        panic!("a malformed session key must be refused");
    };
    assert!(matches!(error, WeChatError::Unknown { .. }));
    assert!(!format!("{error} {error:?}").contains("butasecret"));

    stub.lock().unwrap().session_answer =
        json!({"openid": "oStubOpenid", "session_key": 123456789});
    let Err(error) = client.code_to_session(&appid(BOUND), &code("c2")).await else {
        panic!("a session key of the wrong type must be refused");
    };
    assert!(!format!("{error} {error:?}").contains("123456789"));
}

#[tokio::test]
async fn an_unreachable_wechat_is_unavailable() {
    // Bind and drop: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = WeChatClient::new(fast_config(format!("http://127.0.0.1:{port}"))).unwrap();

    assert_eq!(
        client.access_token(&appid(BOUND)).await,
        Err(WeChatError::Unavailable {
            retry_after_secs: 3
        })
    );
}
