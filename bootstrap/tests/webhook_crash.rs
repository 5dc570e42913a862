//! A `kill -9` of miniauth in the middle of a webhook delivery: the delivery is made
//! again after the restart, under the same `webhook-id`, and nothing after it is lost
//! or sent ahead of it (issue 14).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

const APPID: &str = "wxdemo000000000001";

/// Each request's `webhook-id`; the first one hangs (the delivery in flight when
/// miniauth is killed), the others are accepted.
#[derive(Default)]
struct Receiver {
    requests: Mutex<Vec<String>>,
}

async fn receive(State(receiver): State<Arc<Receiver>>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let first = {
        let mut requests = receiver.requests.lock().unwrap();
        requests.push(id);
        requests.len() == 1
    };
    if first {
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    StatusCode::OK
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `miniauth`, killed (SIGKILL) when dropped: a failing test leaves none
/// behind.
struct Running(Child);

impl Running {
    /// `kill -9`, and reap it.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `miniauth` on `config`; answers it and its base URL.
fn start(config: &std::path::Path) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_miniauth"))
        .arg("--config")
        .arg(config)
        .env_remove("MINIAUTH_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting miniauth");
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match received.recv_timeout(left) {
            Ok(line) => {
                if let Some(base) = line.strip_prefix("miniauth listening on ") {
                    return (Running(child), base.trim().to_owned());
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("miniauth did not start within 60 s");
}

/// POSTs JSON and answers the JSON answer, which must be a success.
async fn post_json(client: &reqwest::Client, url: String, body: Value) -> Value {
    let answer = client.post(url).json(&body).send().await.unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    answer.json().await.unwrap()
}

/// A WeChat login through the simulator: one `SessionObtained` (`logged_in`).
async fn login(client: &reqwest::Client, base: &str, sim: &str, n: usize) {
    let nickname = format!("Crash {n}");
    let user = post_json(
        client,
        format!("{sim}/device/users"),
        json!({ "nickname": nickname }),
    )
    .await;
    let login = format!("{sim}/device/users/{}/login", user["user_id"]);
    let code = post_json(client, login, json!({ "appid": APPID })).await;
    let sessions = format!("{base}/v1/apps/{APPID}/sessions");
    post_json(client, sessions, json!({ "code": code["code"] })).await;
}

async fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_delivery_delivers_again_after_the_restart() {
    let receiver = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let dir = tempfile::tempdir().unwrap();
    let sim_port = free_port();
    let sim = format!("http://127.0.0.1:{sim_port}");
    let config = dir.path().join("miniauth.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[store]
url = "sqlite://{data}/miniauth.db"
data_dir = "{data}"

[wechat]
api_base = "simulator"
simulator_listen = "127.0.0.1:{sim_port}"

[[apps]]
appid = "{APPID}"
secret = "crash-test-app-secret"

[[webhooks]]
id = "crm"
url = "{hook}"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
events = ["logged_in"]

[webhook_delivery]
poll_interval_ms = 50
timeout_ms = 1000
lease_ms = 2100
backoff_initial_ms = 50
"#,
            data = dir.path().join("data").display(),
        ),
    )
    .unwrap();

    let client = reqwest::Client::new();
    let (mut first, base) = start(&config);
    for n in 0..3 {
        login(&client, &base, &sim, n).await;
    }
    // The first delivery reaches the receiver, which holds it: miniauth is killed
    // while it waits for the answer.
    wait_for("the first delivery", Duration::from_secs(30), || {
        !receiver.requests.lock().unwrap().is_empty()
    })
    .await;
    first.kill();
    let in_flight = receiver.requests.lock().unwrap()[0].clone();

    let (mut second, _) = start(&config);
    wait_for(
        "the deliveries after the restart",
        Duration::from_secs(30),
        || receiver.requests.lock().unwrap().len() >= 4,
    )
    .await;
    second.kill();
    server.abort();

    let requests = receiver.requests.lock().unwrap().clone();
    assert_eq!(
        requests[1], in_flight,
        "the killed delivery came again first"
    );
    let positions: Vec<i64> = requests[1..]
        .iter()
        .map(|id| id.trim_start_matches("msg_crm_").parse().unwrap())
        .collect();
    assert_eq!(positions.len(), 3, "{requests:?}");
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in log order: {requests:?}"
    );
}
