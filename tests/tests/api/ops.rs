//! Operations routes, fallbacks and the OpenAPI document.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn health_and_readiness() {
    let h = harness().await;
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
    let h = harness().await;
    let answer = h.get("/.well-known/jwks.json", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json, h.jwks());
    assert!(answer.header("cache-control").unwrap().contains("max-age"));
}

/// Without `public_url` the discovery document's URLs follow the request's `Host`: no
/// shared cache may keep one (a forged Host would point jwks_uri at another host for
/// everyone). With it, the document is the same for all and cacheable.
#[tokio::test]
async fn discovery_is_cached_only_when_its_urls_do_not_follow_the_host() {
    async fn discovery(h: &Harness, host: &str) -> Answer {
        let request = Request::get("/.well-known/openid-configuration")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        h.send(request).await
    }
    let h = harness().await;
    let answer = discovery(&h, "evil.example").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json["jwks_uri"],
        "http://evil.example/.well-known/jwks.json"
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.header("vary"), Some("Host"));

    let mut config = config();
    config.token_services.public_url = Some("https://auth.example.com".into());
    let h = harness_with(config).await;
    let answer = discovery(&h, "evil.example").await;
    assert_eq!(
        answer.json["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );
    assert_eq!(answer.header("cache-control"), Some("public, max-age=300"));
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_logins_by_outcome() {
    let h = harness().await;
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
async fn a_prometheus_scrape_gets_well_formed_openmetrics() {
    let h = harness().await;
    h.login(APP, "sam").await;
    h.get("/v1/me", None).await;
    let request = Request::get("/metrics")
        .header(
            header::ACCEPT,
            // What Prometheus sends.
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        )
        .body(Body::empty())
        .unwrap();
    let scraped = h.send(request).await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert_eq!(
        scraped.content_type(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let families = parse_openmetrics(&scraped.text);
    assert_eq!(
        families,
        [
            ("miniauth_http_requests", "counter"),
            ("miniauth_http_request_duration_seconds", "histogram"),
            ("miniauth_logins", "counter"),
        ]
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
    );
}

/// Checks what the OpenMetrics text format asks of an exposition and returns its
/// families and types: a `# HELP` and a `# TYPE` before each family's samples, sample
/// names that are the family name with its type's suffix, numeric values, label sets
/// in braces, and `# EOF` as the last line.
fn parse_openmetrics(text: &str) -> Vec<(String, String)> {
    let mut families: Vec<(String, String)> = Vec::new();
    let mut lines = text.lines().peekable();
    let mut saw_eof = false;
    while let Some(line) = lines.next() {
        assert!(!saw_eof, "a line after # EOF: {line}\n{text}");
        if line == "# EOF" {
            saw_eof = true;
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            let kind = lines
                .next()
                .and_then(|l| l.strip_prefix(&format!("# TYPE {name} ")))
                .unwrap_or_else(|| panic!("no # TYPE after the # HELP of {name}\n{text}"));
            assert!(["counter", "histogram", "gauge"].contains(&kind), "{kind}");
            families.push((name.to_owned(), kind.to_owned()));
        } else if line.starts_with("# UNIT ") {
            let (family, _) = families.last().expect("a # UNIT before any family");
            assert!(line.starts_with(&format!("# UNIT {family} ")), "{line}");
        } else {
            let (family, kind) = families
                .last()
                .unwrap_or_else(|| panic!("a sample before any family: {line}"));
            let (series, value) = line.rsplit_once(' ').unwrap();
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("not a number: {line}"));
            let name = series.split('{').next().unwrap();
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            assert!(
                suffixes.iter().any(|s| name == format!("{family}{s}")),
                "{name} is not a sample of the {kind} {family}"
            );
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                }
            }
        }
    }
    assert!(saw_eof, "no # EOF\n{text}");
    families
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let h = harness().await;
    h.get("/v2/nothing", None)
        .await
        .assert_problem(404, "route_not_found");
    h.get("/v1/token", None)
        .await
        .assert_problem(405, "method_not_allowed");
}

#[tokio::test]
async fn openapi_describes_every_v1_route() {
    let h = harness().await;
    let doc = h.get("/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let paths = doc.json["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/apps/{appid}/sessions", "post"),
        ("/v1/apps/{appid}/profile", "post"),
        ("/v1/apps/{appid}/phone", "post"),
        ("/v1/apps/{appid}/authorize", "get"),
        ("/v1/apps/{appid}/callback", "get"),
        ("/v1/apps/{appid}/results", "post"),
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
        ("/v1/token/revoke", "post"),
        ("/v1/token/introspect", "post"),
        ("/v1/admin/webhooks/parked", "get"),
        ("/.well-known/openid-configuration", "get"),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} is not described");
        assert!(operation["responses"]
            .as_object()
            .is_some_and(|r| !r.is_empty()));
    }
    let v1_paths = paths.keys().filter(|p| p.starts_with("/v1/")).count();
    assert_eq!(v1_paths, 21);
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

/// The document says what the handlers do (tests/schemathesis/run.sh checks it against
/// a running service): optional parameters optional, bounds as enforced, alternatives
/// as `oneOf`, every error answer listed, the operational routes included.
#[test]
fn openapi_tells_the_truth() {
    let doc = serde_json::to_value(miniauth_http::openapi()).unwrap();
    let paths = &doc["paths"];
    let parameter = |path: &str, name: &str| {
        paths[path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} of {path}"))
    };
    let limit = parameter("/v1/admin/events", "limit");
    assert_eq!(limit["required"], false);
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 10_000);
    let after = parameter("/v1/admin/events", "after");
    assert_eq!(after["required"], false);
    assert_eq!(after["schema"]["minimum"], 0);
    let as_of = parameter("/v1/admin/bindings", "as_of");
    assert_eq!(as_of["required"], false);
    assert_eq!(as_of["schema"]["format"], "date-time");
    assert_eq!(
        parameter("/v1/admin/bindings", "appid")["schema"]["pattern"],
        "^wx[0-9A-Za-z]{16}$"
    );
    assert_eq!(
        parameter("/v1/admin/users/{user_id}/bindings", "user_id")["schema"]["minimum"],
        1
    );

    for (path, method, statuses) in [
        (
            "/v1/apps/{appid}/sessions",
            "post",
            &[200, 400, 403, 404, 409, 413, 415, 429, 500, 503][..],
        ),
        (
            "/v1/admin/events",
            "get",
            &[200, 400, 401, 403, 500, 501, 503],
        ),
        (
            "/v1/admin/bindings",
            "get",
            &[200, 400, 401, 403, 404, 500, 501, 503],
        ),
        (
            "/v1/admin/apps/{appid}/accounts/{openid}/erase",
            "post",
            &[204, 400, 401, 403, 404, 409, 500, 503],
        ),
        (
            "/v1/admin/apps/{appid}/accounts/{openid}/history",
            "get",
            &[200, 400, 401, 403, 404, 500, 501, 503],
        ),
        ("/v1/me", "get", &[200, 401, 403, 404, 500, 503]),
        ("/readyz", "get", &[200, 503]),
    ] {
        let responses = paths[path][method]["responses"].as_object().unwrap();
        let listed: Vec<u16> = responses.keys().map(|k| k.parse().unwrap()).collect();
        assert_eq!(listed, statuses, "{method} {path}");
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    response["content"]["application/problem+json"].is_object(),
                    "{method} {path} {status}"
                );
            }
        }
    }
    assert!(
        paths["/v1/admin/events"]["get"]["responses"]["501"]["description"]
            .as_str()
            .unwrap()
            .contains("audit_unavailable")
    );

    let schemas = &doc["components"]["schemas"];
    let alternatives = |name: &str| schemas[name]["allOf"][1]["oneOf"].as_array().unwrap().len();
    assert_eq!(alternatives("ProfileRequest"), 2);
    assert_eq!(alternatives("PhoneRequest"), 2);
    let grants: Vec<_> = schemas["TokenGrant"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["properties"]["grant_type"]["enum"][0].clone())
        .collect();
    assert_eq!(
        grants,
        [json!("ticket"), json!("password"), json!("refresh_token")]
    );
    assert_eq!(schemas["SessionRequest"]["required"], json!(["code"]));

    for (path, media) in [
        ("/healthz", "application/json"),
        ("/readyz", "application/json"),
        ("/.well-known/jwks.json", "application/json"),
        ("/openapi.json", "application/json"),
        ("/metrics", "text/plain"),
        ("/metrics", "application/openmetrics-text"),
    ] {
        assert!(
            paths[path]["get"]["responses"]["200"]["content"][media].is_object(),
            "{path} {media}"
        );
    }
}
