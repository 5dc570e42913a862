//! Webhook deliveries against a real local receiver (an axum server of the test) that
//! fails, times out, goes away and comes back: nothing is lost, nothing is reordered
//! per account, retries carry the same `webhook-id`, signatures verify with the test's
//! own HMAC, and a delivery that runs out of attempts is parked and retried by id
//! (issue 14). A subscriber of one tenant never receives another tenant's events, personal
//! data included. On both engines.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use miniauth::integration::WebhookSection;
use miniauth_application::webhooks::WebhookDelivery;
use miniauth_application::RegistrationPolicy;
use miniauth_application::Secret;
use miniauth_e2e::{app_section, on_both_engines, spawn_app_with, Engine, TestApp, APP, TENANT};
use serde_json::Value;
use sha2::Sha256;

on_both_engines!(
    failures_timeouts_and_a_receiver_restart_lose_and_reorder_nothing,
    a_delivery_out_of_attempts_is_parked_blocks_its_subscription_and_is_retried,
    two_instances_on_one_store_deliver_each_event_once_in_order,
    a_subscriber_of_one_tenant_never_receives_another_tenants_events,
    a_payload_that_cannot_be_built_is_retried_then_parked_without_personal_data,
);

/// The key bytes of `SECRET`.
const KEY: &[u8] = b"miniauth webhook test key, 32 b";

fn secret() -> String {
    format!("whsec_{}", STANDARD.encode(KEY))
}

/// What the receiver does with the next requests; then it accepts.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Fail,
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    accepted: bool,
    body: Value,
}

#[derive(Default)]
struct Receiver {
    script: Mutex<VecDeque<Behaviour>>,
    received: Mutex<Vec<Received>>,
}

impl Receiver {
    fn then(&self, behaviours: &[Behaviour]) {
        self.script.lock().unwrap().extend(behaviours);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The ids of the accepted deliveries, in the order they were accepted.
    fn accepted(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|r| r.accepted)
            .map(|r| r.id)
            .collect()
    }
}

/// Verifies a Standard Webhooks signature the way a receiver would, independently of
/// miniauth's sender.
fn verify(headers: &HeaderMap, body: &[u8]) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert!(
        signature.split(' ').any(|s| s == expected),
        "bad signature on {id}"
    );
    let sent: i64 = timestamp.parse().expect("a Unix timestamp");
    assert!((chrono::Utc::now().timestamp() - sent).abs() < 300);
    id
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let id = verify(&headers, &body);
    let body: Value = serde_json::from_slice(&body).expect("a JSON body");
    let behaviour = receiver.script.lock().unwrap().pop_front();
    if let Some(Behaviour::Hang) = behaviour {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let accepted = behaviour.is_none();
    receiver
        .received
        .lock()
        .unwrap()
        .push(Received { id, accepted, body });
    if accepted {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// The receiver served on `addr` (port 0: a free one) until the handle is aborted.
async fn serve(
    receiver: Arc<Receiver>,
    addr: SocketAddr,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver);
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, handle)
}

/// A subscription `id` to `url` with personal data, of `tenant` (`None`: left out).
fn subscription(id: &str, url: &str, tenant: Option<&str>) -> WebhookSection {
    WebhookSection {
        id: id.into(),
        url: url.into(),
        secret: Some(Secret::new(secret())),
        secret_env: None,
        events: vec![
            "user_bound".into(),
            "unbound".into(),
            "phone_verified".into(),
            "personal_data_erased".into(),
        ],
        personal_data: true,
        tenant: tenant.map(str::to_owned),
        apps: Vec::new(),
    }
}

/// The service with one subscription to `url`: short backoffs and timeouts.
async fn app_delivering_to(engine: Engine, url: &str, max_attempts: u32) -> TestApp {
    let url = url.to_owned();
    spawn_app_with(engine, move |config| {
        config.webhooks = vec![subscription("crm", &url, None)];
        config.webhook_delivery.max_attempts = max_attempts;
        config.webhook_delivery.backoff_initial_ms = 10;
        config.webhook_delivery.backoff_max_ms = 40;
        config.webhook_delivery.timeout_ms = 300;
    })
    .await
}

fn delivery(app: &TestApp) -> &WebhookDelivery {
    app.webhooks.as_deref().expect("webhooks are configured")
}

/// Rounds until `done` or 200 of them (with the backoffs' waits in between).
async fn rounds_until(app: &TestApp, done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        delivery(app).round().await.expect("a delivery round");
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert!(done(), "the deliveries did not complete");
}

/// The wanted events of the log as (webhook-id, account), in log order.
async fn expected(app: &TestApp) -> Vec<(String, String)> {
    expected_of(app, 0).await
}

/// [`expected`] of the `index`-th subscription.
async fn expected_of(app: &TestApp, index: usize) -> Vec<(String, String)> {
    let subscription = &delivery(app).subscriptions()[index];
    app.store
        .events_after(0, u32::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| subscription.wants(e))
        .map(|e| {
            (
                format!("msg_{}_{}", subscription.id, e.position),
                e.aggregate_id,
            )
        })
        .collect()
}

/// Each account's ids in the order the receiver accepted them.
fn per_account(accepted: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut by_account: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, account) in accepted {
        by_account
            .entry(account.clone())
            .or_default()
            .push(id.clone());
    }
    by_account
}

async fn failures_timeouts_and_a_receiver_restart_lose_and_reorder_nothing(engine: Engine) {
    let receiver = Arc::new(Receiver::default());
    let (addr, server) = serve(receiver.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let app = app_delivering_to(engine, &format!("http://{addr}/hook"), 50).await;

    // Two registrations (phone_verified, user_registered each) and an unbind.
    let (_, first, phone, _) = app.registered_user(APP).await;
    app.registered_user(APP).await;
    app.unbind(APP, &first.access).await.ok(204);

    // The receiver fails twice, then hangs past the timeout once.
    receiver.then(&[Behaviour::Fail, Behaviour::Fail, Behaviour::Hang]);
    let want = expected(&app).await;
    assert_eq!(want.len(), 5, "{want:?}");
    rounds_until(&app, || receiver.accepted().len() >= 2).await;

    // The receiver goes away: attempts fail to connect, nothing is skipped.
    server.abort();
    let _ = server.await;
    for _ in 0..5 {
        delivery(&app).round().await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    // Another event while it is away, and then it comes back on the same port.
    app.registered_user(APP).await;
    let (_, server) = serve(receiver.clone(), addr).await;
    let want = expected(&app).await;
    rounds_until(&app, || receiver.accepted().len() >= want.len()).await;

    let accepted = receiver.accepted();
    let ids: Vec<String> = want.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(accepted, ids, "every event once, in log order");
    let received = receiver.received();
    let retried: Vec<&Received> = received.iter().filter(|r| !r.accepted).collect();
    assert!(retried.len() >= 2, "{retried:?}");
    assert!(
        retried.iter().all(|r| r.id == ids[0]),
        "the failed attempts were of the first delivery, under its id"
    );
    let accounts: Vec<(String, String)> = received
        .iter()
        .filter(|r| r.accepted)
        .map(|r| {
            (
                r.id.clone(),
                r.body["data"]["account"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(per_account(&accounts), per_account(&want));
    // Personal data opted in: the verified phone is in its event.
    let phone_event = received
        .iter()
        .find(|r| r.body["type"] == "phone_verified")
        .expect("a phone_verified delivery");
    assert_eq!(phone_event.body["data"]["phone"], phone);
    assert!(received.iter().any(|r| r.body["type"] == "user_registered"));
    assert!(received.iter().any(|r| r.body["type"] == "unbound"));
    server.abort();
}

async fn a_delivery_out_of_attempts_is_parked_blocks_its_subscription_and_is_retried(
    engine: Engine,
) {
    let receiver = Arc::new(Receiver::default());
    let (addr, server) = serve(receiver.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let app = app_delivering_to(engine, &format!("http://{addr}/hook"), 3).await;
    app.registered_user(APP).await;
    receiver.then(&[Behaviour::Fail; 3]);
    rounds_until(&app, || receiver.received().len() >= 3).await;

    let parked = app
        .get("/v1/admin/webhooks/parked", Some(&app.admin_token))
        .await
        .ok(200)
        .clone();
    let parked = parked.as_array().expect("a list");
    assert_eq!(parked.len(), 1, "{parked:?}");
    let id = parked[0]["webhook_id"].as_str().unwrap().to_owned();
    assert_eq!(parked[0]["attempts"], 3);
    assert_eq!(parked[0]["last_error"], "answered HTTP 500");

    // Parked, the subscription waits: a later event is not sent ahead of it.
    app.registered_user(APP).await;
    for _ in 0..5 {
        delivery(&app).round().await.unwrap();
    }
    assert_eq!(receiver.received().len(), 3);
    assert!(!delivery(&app).retry("msg_crm_999999").await.unwrap());
    assert!(delivery(&app).retry(&id).await.unwrap());
    let want = expected(&app).await;
    rounds_until(&app, || receiver.accepted().len() >= want.len()).await;
    let ids: Vec<String> = want.into_iter().map(|(id, _)| id).collect();
    assert_eq!(receiver.accepted(), ids);
    assert_eq!(ids[0], id, "the parked delivery went first");
    let parked = app
        .get("/v1/admin/webhooks/parked", Some(&app.admin_token))
        .await
        .ok(200)
        .clone();
    assert_eq!(parked, serde_json::json!([]));
    server.abort();
}

async fn two_instances_on_one_store_deliver_each_event_once_in_order(engine: Engine) {
    let receiver = Arc::new(Receiver::default());
    let (addr, server) = serve(receiver.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let first = app_delivering_to(engine, &format!("http://{addr}/hook"), 50).await;
    let second = first.another_instance().await;
    for _ in 0..4 {
        first.registered_user(APP).await;
    }
    let want = expected(&first).await;
    // Both instances deliver at once, round after round: the lease lets one at a time.
    for _ in 0..50 {
        if receiver.accepted().len() >= want.len() {
            break;
        }
        let (a, b) = tokio::join!(delivery(&first).round(), delivery(&second).round());
        a.unwrap();
        b.unwrap();
    }
    let ids: Vec<String> = want.into_iter().map(|(id, _)| id).collect();
    assert_eq!(receiver.accepted(), ids, "each event once, in log order");
    server.abort();
}

async fn a_subscriber_of_one_tenant_never_receives_another_tenants_events(engine: Engine) {
    const OTHER_APP: &str = "wxothertenant00005";
    let ours = Arc::new(Receiver::default());
    let theirs = Arc::new(Receiver::default());
    let (ours_at, ours_server) = serve(ours.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let (theirs_at, theirs_server) = serve(theirs.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let app = spawn_app_with(engine, move |config| {
        let mut other = app_section(OTHER_APP, RegistrationPolicy::Auto);
        other.tenant = "other".to_owned();
        config.apps.push(other);
        // Tenant A's CRM with personal data on, and tenant B's.
        config.webhooks = vec![
            subscription("crm", &format!("http://{ours_at}/hook"), Some(TENANT)),
            subscription(
                "other-crm",
                &format!("http://{theirs_at}/hook"),
                Some("other"),
            ),
        ];
    })
    .await;
    // One registration in each tenant (phone_verified and user_registered each), and
    // tenant B's user erased (unbound and personal_data_erased).
    let (_, _, our_phone, _) = app.registered_user(APP).await;
    let (_, _, their_phone, wechat) = app.registered_user(OTHER_APP).await;
    let openid = app
        .simulator
        .as_ref()
        .expect("the simulator runs")
        .simulator()
        .openid(&miniauth_e2e::app(OTHER_APP), wechat)
        .expect("logged in");
    let erase = format!("/v1/admin/apps/{OTHER_APP}/accounts/{openid}/erase");
    let answer = app
        .post_json(
            &erase,
            &serde_json::json!({}),
            Some(&app.admin_token.clone()),
        )
        .await;
    assert!(
        answer.status.is_success(),
        "erase answered {}",
        answer.status
    );

    let (want_ours, want_theirs) = (expected_of(&app, 0).await, expected_of(&app, 1).await);
    assert_eq!((want_ours.len(), want_theirs.len()), (2, 4));
    rounds_until(&app, || {
        ours.accepted().len() >= want_ours.len() && theirs.accepted().len() >= want_theirs.len()
    })
    .await;
    // One more round: nothing else turns up at either.
    delivery(&app).round().await.unwrap();
    let ids = |want: &[(String, String)]| want.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    assert_eq!(ours.accepted(), ids(&want_ours));
    assert_eq!(theirs.accepted(), ids(&want_theirs));

    let bodies = |receiver: &Receiver| {
        receiver
            .received()
            .iter()
            .map(|r| r.body.to_string())
            .collect::<Vec<_>>()
    };
    for body in bodies(&ours) {
        assert!(
            !body.contains(OTHER_APP),
            "tenant B's event at tenant A: {body}"
        );
        assert!(
            !body.contains(&their_phone),
            "tenant B's phone at tenant A: {body}"
        );
    }
    for body in bodies(&theirs) {
        assert!(!body.contains(APP), "tenant A's event at tenant B: {body}");
        assert!(
            !body.contains(&our_phone),
            "tenant A's phone at tenant B: {body}"
        );
    }
    assert!(bodies(&ours).iter().any(|b| b.contains(&our_phone)));
    assert!(bodies(&theirs)
        .iter()
        .any(|b| b.contains("personal_data_erased")));
    ours_server.abort();
    theirs_server.abort();
}

async fn a_payload_that_cannot_be_built_is_retried_then_parked_without_personal_data(
    engine: Engine,
) {
    let receiver = Arc::new(Receiver::default());
    let (addr, server) = serve(receiver.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let app = app_delivering_to(engine, &format!("http://{addr}/hook"), 2).await;
    let (_, _, phone, _) = app.registered_user(APP).await;
    // The sealed phone of the logged event is made unreadable (a version no vault
    // knows): its payload cannot be built.
    let text = |sql: &str| {
        if engine == Engine::Postgres {
            sql.replace("payload", "payload::text")
        } else {
            sql.to_owned()
        }
    };
    let payload = app
        .query_texts(&text(
            "SELECT payload FROM events WHERE event_type = 'PhoneVerified'",
        ))
        .await;
    let payload = payload[0].clone().expect("a PhoneVerified payload");
    let sealed = serde_json::from_str::<Value>(&payload).unwrap()["PhoneVerified"]["phone"]
        .as_str()
        .expect("a sealed phone")
        .to_owned();
    let set = format!(
        "UPDATE events SET payload = REPLACE({}, '{sealed}', 'v9.{sealed}'){} \
         WHERE event_type = 'PhoneVerified'",
        text("payload"),
        if engine == Engine::Postgres {
            "::json"
        } else {
            ""
        }
    );
    assert_eq!(app.execute_sql(&set).await, 1);

    let parked = || async {
        app.get("/v1/admin/webhooks/parked", Some(&app.admin_token))
            .await
            .ok(200)
            .clone()
    };
    for _ in 0..100 {
        delivery(&app).round().await.expect("a round, not an error");
        if parked().await.as_array().is_some_and(|p| !p.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let parked = parked().await;
    assert_eq!(parked.as_array().map(Vec::len), Some(1), "{parked}");
    assert_eq!(parked[0]["event_type"], "phone_verified");
    assert_eq!(parked[0]["attempts"], 2);
    assert_eq!(
        parked[0]["last_error"],
        miniauth_application::webhooks::PAYLOAD_FAILED
    );
    assert!(!parked.to_string().contains(&phone));
    // Nothing reached the receiver, and nothing after the event went ahead of it.
    assert!(receiver.received().is_empty());
    server.abort();
}
