//! Attacks: http (see attacks.rs).
//!
//! Slow headers and connection floods run over raw TCP on loopback; the others over
//! HTTP. None of them depends on the store: they run on the embedded engine.

use std::time::{Duration, Instant};

use miniauth_e2e::{enc, spawn_app, spawn_app_with, Answer, Engine, TestApp, APP};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The start of a request head, never finished.
const HALF_A_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: miniauth\r\nX-Slow: ";

fn host_port(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection, up to `limit`; true if it closed.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before the close is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

/// 200 clients that sent half a request head were never disconnected: each held a
/// connection (and its task and buffers) forever. Now each is closed when the
/// header-read timeout (here 1 s; 10 s by default) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_hold_connections_forever() {
    let app = spawn_app_with(Engine::Sqlite, |config| {
        config.server.header_read_timeout_ms = 1_000;
    })
    .await;
    let address = host_port(&app);
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        stream.write_all(HALF_A_HEAD).await.expect("write");
        slow.push(stream);
    }
    // A client that sends nothing at all is no better off.
    slow.push(TcpStream::connect(&address).await.expect("connect"));

    let started = Instant::now();
    let closes = futures::future::join_all(
        slow.iter_mut()
            .map(|stream| closed_within(stream, Duration::from_secs(8))),
    )
    .await;
    let still_open = closes.iter().filter(|closed| !**closed).count();
    assert_eq!(
        still_open, 0,
        "{still_open} of 201 slow clients kept their connection"
    );
    assert!(started.elapsed() < Duration::from_secs(8));

    // The service still answers.
    app.get("/healthz", None).await.ok(200);
}

/// Connections were accepted without limit: a flood of idle ones took whatever the
/// process could hold. Now at most `max_connections` are held; the next ones wait in
/// the listen backlog until a slot frees, and are served then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_are_held_without_limit() {
    let app = spawn_app_with(Engine::Sqlite, |config| {
        config.server.max_connections = 8;
        config.server.header_read_timeout_ms = 60_000;
    })
    .await;
    let address = host_port(&app);
    let mut hogs = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        stream.write_all(HALF_A_HEAD).await.expect("write");
        hogs.push(stream);
    }
    // Let the server accept all eight.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut ninth = TcpStream::connect(&address)
        .await
        .expect("the backlog queues it");
    ninth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: miniauth\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let early = tokio::time::timeout(Duration::from_secs(1), ninth.read_to_end(&mut answer)).await;
    assert!(
        early.is_err(),
        "a connection beyond the cap was served at once: {}",
        String::from_utf8_lossy(&answer)
    );

    // The flood ends: the queued client is served.
    drop(hogs);
    tokio::time::timeout(Duration::from_secs(5), ninth.read_to_end(&mut answer))
        .await
        .expect("served once a slot is free")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// Asserts the answer may not be stored by any cache (RFC 6749 §5.1).
#[track_caller]
fn assert_not_cacheable(what: &str, answer: &Answer) {
    assert_eq!(
        answer.header("cache-control"),
        Some("no-store"),
        "{what}: Cache-Control of {} {}",
        answer.status,
        answer.text
    );
    assert_eq!(answer.header("pragma"), Some("no-cache"), "{what}: Pragma");
}

/// Answers carrying a ticket, access and refresh tokens had no `Cache-Control`: a
/// shared cache or the browser's could keep them. Now every answer that carries one
/// (v1 and GitEgg, success or not) says `no-store`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_answers_are_cacheable() {
    let app = spawn_app(Engine::Sqlite).await;
    let (_, account, password) = app.password_user(None).await;

    let wechat = app.wechat_user(None).await;
    let code = app.wx_login(APP, wechat).await;
    let session = app.login(APP, &code).await;
    session.ok(200);
    assert_not_cacheable("v1 login (ticket)", &session);

    let grant = app.password_grant(&account, &password).await;
    let tokens = miniauth_e2e::Tokens::from_v1(grant.ok(200));
    assert_not_cacheable("v1 password grant", &grant);
    let refreshed = app.refresh(&tokens.refresh).await;
    refreshed.ok(200);
    assert_not_cacheable("v1 refresh", &refreshed);
    let me = app.me(&tokens.access).await;
    me.ok(200);
    assert_not_cacheable("v1 me", &me);
    let refused = app.password_grant(&account, "wrong").await;
    assert_not_cacheable("v1 refusal", &refused);

    let code = app.wx_login(APP, wechat).await;
    let gitegg_login = app
        .wx("", APP, "login", &format!("code={}", enc(&code)), None)
        .await;
    gitegg_login.envelope_ok();
    assert_not_cacheable("GitEgg login (bindKey)", &gitegg_login);
    let oauth = app
        .oauth_token(&[
            ("grant_type", "password"),
            ("username", &account),
            ("password", &password),
        ])
        .await;
    oauth.envelope_ok();
    assert_not_cacheable("GitEgg /oauth/token", &oauth);

    // The public keys stay cacheable: nothing secret in them.
    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(jwks.header("cache-control"), Some("public, max-age=300"));
}

/// JSON answers came without `X-Content-Type-Options`: a browser could sniff an answer
/// that echoes input into HTML or script. Now every answer says `nosniff`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_can_be_sniffed() {
    let app = spawn_app(Engine::Sqlite).await;
    let answers = [
        ("healthz", app.get("/healthz", None).await),
        ("jwks", app.get("/.well-known/jwks.json", None).await),
        (
            "no route",
            app.get("/<script>alert(1)</script>", None).await,
        ),
        (
            "problem",
            app.post_json(&format!("/v1/apps/{APP}/sessions"), &json!({}), None)
                .await,
        ),
        ("envelope", app.wx("", APP, "login", "", None).await),
    ];
    for (what, answer) in &answers {
        assert_eq!(
            answer.header("x-content-type-options"),
            Some("nosniff"),
            "{what}: {} {}",
            answer.status,
            answer.text
        );
    }
}

/// `/metrics` was public on the API's listener, telling anyone the routes, rates and
/// error counts. Now it can require the admin token, or live on a listener of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_public_on_the_api_listener() {
    let guarded = spawn_app_with(Engine::Sqlite, |config| {
        config.server.metrics_require_admin = true;
    })
    .await;
    guarded
        .get("/metrics", None)
        .await
        .problem(401, "admin_token_invalid");
    guarded
        .get("/metrics", Some("not-the-admin-token"))
        .await
        .problem(401, "admin_token_invalid");
    let allowed = guarded.get("/metrics", Some(&guarded.admin_token)).await;
    assert!(allowed.ok(200).is_null(), "Prometheus text, not JSON");
    assert!(allowed.text.contains("miniauth_"), "{}", allowed.text);

    let separate = spawn_app_with(Engine::Sqlite, |config| {
        config.server.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    separate
        .get("/metrics", None)
        .await
        .problem(404, "route_not_found");
    let metrics_address = separate
        .metrics_address
        .clone()
        .expect("a metrics listener");
    let scraped = separate
        .client
        .get(format!("{metrics_address}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    let scraped = Answer::read(scraped).await;
    scraped.ok(200);
    assert!(scraped.text.contains("miniauth_"), "{}", scraped.text);
    // Only /metrics is there: the API is not reachable through the metrics port.
    let api = separate
        .client
        .get(format!("{metrics_address}/v1/me"))
        .send()
        .await
        .expect("GET /v1/me");
    assert_eq!(api.status().as_u16(), 404);
}
