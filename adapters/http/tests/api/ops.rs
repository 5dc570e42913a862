//! Operations routes, fallbacks and the OpenAPI document.

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn health_and_readiness() {
    let h = harness();
    let health = h.get("/healthz", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json, json!({ "status": "ok" }));
    let ready = h.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    h.not_ready.0.store(true, Ordering::Relaxed);
    let not_ready = h.get("/readyz", None).await;
    not_ready.assert_problem(503, "not_ready");
    assert_eq!(not_ready.header("retry-after"), Some("5"));
    assert!(!not_ready.text.contains("store unreachable"));
}

#[tokio::test]
async fn jwks_is_published_as_given() {
    let h = harness();
    let answer = h.get("/.well-known/jwks.json", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json["keys"][0]["kid"], "k1");
    assert!(answer.header("cache-control").unwrap().contains("max-age"));
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_logins_by_outcome() {
    let h = harness();
    h.login(APP, "sam").await;
    h.get("/v1/me", None).await;
    h.get(&format!("/wx/user/{APP}/login?code=invalid"), None)
        .await;
    let metrics = h.get("/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics
        .content_type()
        .starts_with("text/plain; version=0.0.4"));
    let text = &metrics.text;
    assert!(text.contains(
        "miniauth_http_requests_total{route=\"/v1/apps/{appid}/sessions\",method=\"POST\",status=\"2xx\"} 1"
    ), "{text}");
    assert!(
        text.contains(
            "miniauth_http_requests_total{route=\"/v1/me\",method=\"GET\",status=\"4xx\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("miniauth_logins_total{outcome=\"unbound\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("miniauth_logins_total{outcome=\"failed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("miniauth_http_request_duration_seconds_count 3"),
        "{text}"
    );
    // Client input never becomes a label.
    assert!(!text.contains("sam"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let h = harness();
    h.get("/v2/nothing", None)
        .await
        .assert_problem(404, "route_not_found");
    h.get("/v1/token", None)
        .await
        .assert_problem(405, "method_not_allowed");
}

#[tokio::test]
async fn openapi_describes_every_v1_route() {
    let h = harness();
    let doc = h.get("/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let paths = doc.json["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/apps/{appid}/sessions", "post"),
        ("/v1/apps/{appid}/profile", "post"),
        ("/v1/apps/{appid}/phone", "post"),
        ("/v1/apps/{appid}/binding", "post"),
        ("/v1/apps/{appid}/binding", "delete"),
        ("/v1/token", "post"),
        ("/v1/logout", "post"),
        ("/v1/me", "get"),
        ("/v1/admin/users", "post"),
        ("/v1/admin/users/{user_id}/disable", "post"),
        ("/v1/admin/users/{user_id}/enable", "post"),
        ("/v1/admin/apps/{appid}/accounts/{openid}/history", "get"),
        ("/v1/admin/apps/{appid}/accounts/{openid}/erase", "post"),
        ("/v1/admin/users/{user_id}/bindings", "get"),
        ("/v1/admin/bindings", "get"),
        ("/v1/admin/events", "get"),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} is not described");
        assert!(operation["responses"]
            .as_object()
            .is_some_and(|r| !r.is_empty()));
    }
    let v1_paths = paths.keys().filter(|p| p.starts_with("/v1/")).count();
    assert_eq!(v1_paths, 15);
    let sessions = &paths["/v1/apps/{appid}/sessions"]["post"];
    assert_eq!(
        sessions["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/SessionRequest"
    );
    let token = &paths["/v1/token"]["post"]["requestBody"]["content"];
    assert!(token["application/x-www-form-urlencoded"].is_object());
    let schemas = doc.json["components"]["schemas"].as_object().unwrap();
    for schema in [
        "SessionResponse",
        "TokenResponse",
        "MeResponse",
        "Problem",
        "PhoneResponse",
    ] {
        assert!(schemas.contains_key(schema), "{schema} missing");
    }
    assert!(doc.json["components"]["securitySchemes"]["bearer"].is_object());
}
