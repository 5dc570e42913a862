//! Operations routes, the OpenAPI document, JWKS, request ids and the admin API.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use miniauth_e2e::{on_both_engines, random_phone, spawn_app, spawn_app_with, Engine, APP};
use serde_json::{json, Value};

on_both_engines!(
    operations_routes,
    access_tokens_verify_against_the_jwks,
    admin_api,
    the_body_limit_is_configurable,
);

/// `[server] body_limit_bytes` is what the service enforces.
async fn the_body_limit_is_configurable(engine: Engine) {
    let app = spawn_app_with(engine, |config| config.server.body_limit_bytes = 4096).await;
    let sessions = format!("/v1/apps/{APP}/sessions");
    let over = json!({ "code": "a".repeat(5000) });
    app.post_json(&sessions, &over, None)
        .await
        .problem(413, "body_too_large");
    // Under the limit, the body is read and the code judged on its own.
    let under = json!({ "code": "a".repeat(3000) });
    let answer = app.post_json(&sessions, &under, None).await;
    assert_ne!(answer.status.as_u16(), 413, "{:?}", answer.body);
}

async fn operations_routes(engine: Engine) {
    let app = spawn_app(engine).await;

    assert_eq!(
        app.get("/healthz", None).await.ok(200),
        &json!({ "status": "ok" })
    );
    assert_eq!(
        app.get("/readyz", None).await.ok(200),
        &json!({ "status": "ready" })
    );

    // The OpenAPI document names every v1 route with its methods.
    let openapi = app.get("/openapi.json", None).await;
    let doc = openapi.ok(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v1/apps/{appid}/sessions", &["post"][..]),
        ("/v1/apps/{appid}/profile", &["post"]),
        ("/v1/apps/{appid}/phone", &["post"]),
        ("/v1/apps/{appid}/binding", &["post", "delete"]),
        ("/v1/token", &["post"]),
        ("/v1/logout", &["post"]),
        ("/v1/me", &["get"]),
        ("/v1/admin/users", &["post"]),
    ] {
        for method in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} missing from /openapi.json"
            );
        }
    }

    // Request ids: made up when absent, echoed when sent.
    let answer = app.get("/healthz", None).await;
    assert!(answer
        .header("x-request-id")
        .is_some_and(|id| !id.is_empty()));
    let echoed = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "e2e-trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        echoed.headers()["x-request-id"].to_str().unwrap(),
        "e2e-trace-42"
    );

    // The request id reaches the metadata of the events the request writes.
    let wechat = app.wechat_user(None).await;
    let code = app.wx_login(APP, wechat).await;
    let before = app.snapshot().await;
    let traced = app
        .client
        .post(format!("{}/v1/apps/{APP}/sessions", app.address))
        .header("x-request-id", "e2e-login-7")
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status().as_u16(), 200);
    assert_eq!(traced.headers()["x-request-id"], "e2e-login-7");
    let events = app.store.events_after(before.last_event, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].metadata.get("request_id").map(String::as_str),
        Some("e2e-login-7"),
        "{:?}",
        events[0].metadata
    );

    // Unknown routes and methods.
    app.get("/v1/nope", None)
        .await
        .problem(404, "route_not_found");
    app.get("/v1/token", None)
        .await
        .problem(405, "method_not_allowed");

    // Metrics count what happened, by route template and outcome.
    let wechat = app.wechat_user(Some(&random_phone())).await;
    app.session(APP, wechat).await;
    app.login(APP, "bogus-code-0000")
        .await
        .problem(400, "code_invalid");
    let metrics = app.get("/metrics", None).await;
    assert_eq!(metrics.status.as_u16(), 200);
    let text = &metrics.text;
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        metrics.headers
    );
    for needle in [
        "miniauth_http_requests_total{",
        "miniauth_http_request_duration_seconds",
        // The traced login above and this one.
        "miniauth_logins_total{outcome=\"unbound\"} 2",
        "miniauth_logins_total{outcome=\"failed\"} 1",
        "/v1/apps/{appid}/sessions",
    ] {
        assert!(text.contains(needle), "{needle} not in /metrics:\n{text}");
    }
    assert!(
        !text.contains(APP),
        "metrics must name route templates, not paths"
    );

    // The store gone: not ready (503 + Retry-After), still alive, and requests that
    // need it get a 503 that says nothing about why.
    app.store.close().await;
    let ready = app.get("/readyz", None).await;
    ready.problem(503, "not_ready");
    assert!(ready.retry_after() > 0);
    app.get("/healthz", None).await.ok(200);
    let code = app.wx_login(APP, wechat).await;
    let answer = app.login(APP, &code).await;
    answer.problem(503, "service_unavailable");
    assert!(
        !answer.text.to_lowercase().contains("sql"),
        "a store failure leaks details: {}",
        answer.text
    );
}

async fn access_tokens_verify_against_the_jwks(engine: Engine) {
    let app = spawn_app(engine).await;
    let (user, tokens, _, _) = app.registered_user(APP).await;
    let jwks = app.get("/.well-known/jwks.json", None).await;
    let set: JwkSet = serde_json::from_value(jwks.ok(200).clone()).expect("a JWK set");
    assert!(!set.keys.is_empty());

    let header = decode_header(&tokens.access).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = header.kid.expect("tokens name their key");
    let jwk = set.find(&kid).expect("the token's key is published");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["miniauth"]);
    validation.set_issuer(&["miniauth"]);
    let claims = decode::<Value>(&tokens.access, &key, &validation)
        .expect("the access token verifies against the JWKS")
        .claims;
    assert_eq!(claims["sub"], json!(user.to_string()), "{claims}");
    assert_eq!(claims["tenant"], json!("default"));
    assert_eq!(claims["appid"], json!(APP));
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 900);

    // A tampered token does not verify, and miniauth refuses it too.
    let mut tampered = tokens.access.clone();
    tampered.insert(tampered.find('.').unwrap() + 3, 'x');
    assert!(decode::<Value>(&tampered, &key, &validation).is_err());
    app.me(&tampered).await.problem(401, "access_token_invalid");
}

async fn admin_api(engine: Engine) {
    let app = spawn_app(engine).await;
    let phone = random_phone();
    let created = app
        .add_user(&json!({ "account": "alice", "password": "correct horse", "mobile": phone, "nickname": "Alice" }))
        .await;
    let user = created.ok(201);
    assert_eq!(user["account"], json!("alice"));
    assert_eq!(user["tenant"], json!("default"));
    assert_eq!(user["nickname"], json!("Alice"));
    assert_eq!(
        user["phone"],
        json!(format!("{}****{}", &phone[..3], &phone[7..]))
    );
    app.password_tokens("alice", "correct horse").await;

    app.unchanged("bad admin requests", || async {
        app.add_user(&json!({ "account": "alice", "password": "another one" }))
            .await
            .problem(409, "account_taken");
        app.add_user(&json!({ "account": "alice2", "password": "another one", "mobile": phone }))
            .await
            .problem(409, "phone_taken");
        app.add_user(&json!({ "account": "carol", "password": "short" }))
            .await
            .problem(400, "invalid_field");
        app.add_user(&json!({ "account": "", "password": "long enough" }))
            .await
            .problem(400, "invalid_field");
        app.add_user(&json!({ "account": "dave", "password": "long enough", "mobile": "12" }))
            .await
            .problem(400, "invalid_field");
        app.post_json(
            "/v1/admin/users",
            &json!({ "account": "eve", "password": "long enough" }),
            Some("not-the-admin-token-at-all"),
        )
        .await
        .problem(401, "admin_token_invalid");
        app.post_json(
            "/v1/admin/users",
            &json!({ "account": "eve", "password": "long enough" }),
            None,
        )
        .await
        .problem(401, "admin_token_invalid");
    })
    .await;

    // Without a configured admin token (and outside the demo) the admin API is off.
    let closed = spawn_app_with(engine, |config| {
        config.admin.token = None;
        config.demo = false;
    })
    .await;
    closed
        .unchanged("the disabled admin API", || async {
            closed
                .post_json(
                    "/v1/admin/users",
                    &json!({ "account": "eve", "password": "long enough" }),
                    Some("anything-at-all-here"),
                )
                .await
                .problem(403, "admin_disabled");
        })
        .await;
}
