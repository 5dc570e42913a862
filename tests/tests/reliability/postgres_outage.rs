//! PostgreSQL stopped in the middle of a load and started again, on a throwaway cluster
//! of the test's own (`initdb` + `pg_ctl` on a free port in a temporary directory; the
//! machine's shared server is never touched).
//!
//! One scenario, run once and shared by the tests below (each asserts one property of
//! it): a load of first logins + phone registrations and returning logins; the cluster
//! stopped (`pg_ctl stop -m fast`) a second in, started again four seconds later; more
//! load after the restart on the same miniauth process; then every interrupted flow
//! retried, the orphan sweep run, and the storage invariants checked.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use miniauth::config::{Config, Secret};
use miniauth_domain::crypto::encode_base64;
use miniauth_domain::{AppId, OpenId};
use miniauth_e2e::{app as app_id, random_phone, random_token, Answer, APP};
use miniauth_store::Store;
use miniauth_wechat::sim::{DeviceClient, NewSimUser, RunningSimulator};
use serde_json::{json, Value};

use crate::support::{check_invariants, token_subject, Tally};

/// The service's own request timeout: a request stuck on an unreachable database is
/// answered 503 `request_timeout` after this, well before the pool's 10 s.
const REQUEST_TIMEOUT_MS: u64 = 2_500;
/// Concurrent simulated clients during the outage.
const WORKERS: usize = 6;
/// Users registered before the outage, who log in again during it.
const RETURNING: usize = 6;
/// Load before the stop, outage length, load after the restart.
const BEFORE_STOP: Duration = Duration::from_millis(1_200);
const DOWN: Duration = Duration::from_secs(4);
const AFTER_START: Duration = Duration::from_millis(1_500);
/// The whole scenario, cluster creation included.
const SCENARIO_LIMIT: Duration = Duration::from_secs(75);

// --- The throwaway cluster ------------------------------------------------------------

/// A PostgreSQL cluster in a temporary directory, on a free loopback port; stopped
/// (immediately) and deleted on drop, panic or not.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// initdb refuses to run as root: then every command runs as `postgres`.
    as_postgres: bool,
}

impl Cluster {
    /// initdb (trust auth, no fsync: the test stops the server cleanly, it does not
    /// crash the machine) and start.
    fn create() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let as_postgres = is_root();
        if as_postgres {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("hand the cluster's directory to the postgres user");
        }
        let port = free_port();
        let cluster = Self {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        cluster.start();
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
    }

    /// `pg_ctl stop -m fast`: sessions are terminated, the server shuts down cleanly.
    fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "fast", "-w", "-t", "30", "stop"],
        );
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command.args(args).current_dir(self.dir.path());
        command
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        if !output.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{program} {args:?} failed ({}):\n{}\n{}\nserver log:\n{log}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Only this cluster: its own data directory.
        let _ = self
            .command("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// The newest installed PostgreSQL's binaries.
fn postgres_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "the PostgreSQL outage test needs the server binaries (initdb, pg_ctl) under \
             /usr/lib/postgresql/<version>/bin: install the postgresql package"
        )
    })
}

fn is_root() -> bool {
    id(&["-u"]) == 0
}

fn postgres_ids() -> (u32, u32) {
    (id(&["-u", "postgres"]), id(&["-g", "postgres"]))
}

fn id(args: &[&str]) -> u32 {
    let output = Command::new("id").args(args).output().expect("run id");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "`id {}` failed: {}; the outage test runs PostgreSQL as the postgres user \
                 when run as root",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

// --- The service and its clients ------------------------------------------------------

/// miniauth on the cluster, and a client playing mini programs.
struct Harness {
    address: String,
    http: reqwest::Client,
    device: DeviceClient,
    simulator: RunningSimulator,
    store: Store,
    tally: Mutex<Tally>,
    started: Instant,
    timeline: Mutex<Vec<String>>,
    /// Returning logins answered for the wrong user, or bound: false.
    wrong: Mutex<Vec<String>>,
}

/// A first login + phone registration, as far as it got.
#[derive(Debug, Clone)]
struct Flow {
    sim_user: u64,
    /// (openid, user id) when the phone step answered 200.
    bound: Option<(OpenId, i64)>,
}

/// A user registered before the outage.
#[derive(Debug, Clone)]
struct Returning {
    sim_user: u64,
    openid: OpenId,
    user_id: i64,
}

impl Harness {
    fn note(&self, what: &str) {
        let line = format!("{:>6.2}s {what}", self.started.elapsed().as_secs_f64());
        self.timeline.lock().expect("timeline").push(line);
    }

    async fn post(&self, route: &str, path: &str, body: &Value) -> Option<Answer> {
        let sent = self
            .http
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await;
        let answer = match sent {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                let text = response.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                Answer {
                    status,
                    headers,
                    body,
                    text,
                }
            }
            Err(_) => {
                self.tally.lock().expect("tally").add_transport_error(route);
                return None;
            }
        };
        self.tally.lock().expect("tally").add(route, &answer);
        if answer.status.is_server_error() && answer.header("retry-after").is_none() {
            self.note(&format!(
                "{route}: {} without Retry-After: {}",
                answer.status, answer.text
            ));
        }
        Some(answer)
    }

    fn openid(&self, sim_user: u64) -> OpenId {
        self.simulator
            .simulator()
            .openid(&app_id(APP), sim_user)
            .expect("the simulator user logged in")
    }

    async fn new_sim_user(&self) -> u64 {
        self.device
            .create_user(&NewSimUser {
                nickname: "Load".into(),
                avatar_url: "https://example.com/a.png".into(),
                phone: Some(random_phone()),
                country_code: "86".into(),
            })
            .await
            .expect("create a simulator user")
    }

    /// wx.login, then the phone button; `phase` prefixes the routes in the tally.
    async fn first_flow(&self, sim_user: u64, phase: &str) -> Flow {
        let appid = app_id(APP);
        let mut flow = Flow {
            sim_user,
            bound: None,
        };
        let code = self.device.login(&appid, sim_user).await.expect("wx.login");
        let Some(session) = self
            .post(
                &format!("{phase}: POST /v1/apps/{{appid}}/sessions (new)"),
                &format!("/v1/apps/{APP}/sessions"),
                &json!({ "code": code }),
            )
            .await
        else {
            return flow;
        };
        if session.status == 200 && session.body["bound"] == json!(true) {
            // A retry of a flow whose phone step committed before the outage cut its
            // answer: the identity is bound, and this login answers its tokens at once
            // (and spends the ticket, so there is no phone step to repeat).
            let access = session.body["tokens"]["access_token"]
                .as_str()
                .expect("a bound login answers tokens");
            flow.bound = Some((self.openid(sim_user), token_subject(access)));
            return flow;
        }
        let Some(ticket) = session.body["ticket"]
            .as_str()
            .filter(|_| session.status == 200)
        else {
            return flow;
        };
        let phone_code = self
            .device
            .phone(&appid, sim_user)
            .await
            .expect("the phone button")
            .code;
        let Some(answer) = self
            .post(
                &format!("{phase}: POST /v1/apps/{{appid}}/phone"),
                &format!("/v1/apps/{APP}/phone"),
                &json!({ "ticket": ticket, "code": phone_code }),
            )
            .await
        else {
            return flow;
        };
        if answer.status == 200 {
            let user = answer.body["user_id"].as_i64().expect("user_id");
            let access = answer.body["tokens"]["access_token"]
                .as_str()
                .expect("access_token");
            assert_eq!(token_subject(access), user, "{}", answer.text);
            flow.bound = Some((self.openid(sim_user), user));
        }
        flow
    }

    /// A returning user's login: one round trip, tokens for the right user.
    async fn returning_login(&self, user: &Returning, phase: &str) -> bool {
        let code = self
            .device
            .login(&app_id(APP), user.sim_user)
            .await
            .expect("wx.login");
        let Some(answer) = self
            .post(
                &format!("{phase}: POST /v1/apps/{{appid}}/sessions (returning)"),
                &format!("/v1/apps/{APP}/sessions"),
                &json!({ "code": code }),
            )
            .await
        else {
            return false;
        };
        if answer.status != 200 {
            return false;
        }
        let subject = answer.body["tokens"]["access_token"]
            .as_str()
            .map(token_subject);
        if answer.body["bound"] != json!(true) || subject != Some(user.user_id) {
            self.wrong.lock().expect("wrong").push(format!(
                "returning user {} got {}",
                user.user_id, answer.text
            ));
        }
        true
    }
}

// --- The scenario ---------------------------------------------------------------------

/// What the scenario observed, for the tests to judge.
struct Outcome {
    /// Every answer of the run, by phase, route, status and code.
    tally: Tally,
    /// When what happened.
    timeline: Vec<String>,
    /// The service's ERROR log lines (the causes of 500s).
    errors: Vec<String>,
    /// The recovery and invariant checks: Ok(summary) or the failure.
    checks: Result<String, String>,
}

/// The service's log lines of WARN and above, captured.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn dispatch(&self) -> tracing::Dispatch {
        let logs = self.clone();
        tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_ansi(false)
                .with_writer(move || logs.clone())
                .finish(),
        )
    }

    fn errors(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer"))
            .lines()
            .filter(|line| line.contains("ERROR"))
            .map(str::to_owned)
            .collect()
    }
}

impl Outcome {
    fn report(&self) -> String {
        format!(
            "timeline:\n{}\nanswers:\n{}service errors logged:\n{}",
            self.timeline.join("\n"),
            self.tally,
            self.errors.join("\n")
        )
    }
}

/// The scenario's outcome, run on first use; fails the calling test when the scenario
/// could not run at all (no PostgreSQL binaries, initdb failed, a timeout).
fn outcome() -> &'static Outcome {
    let outcome = scenario_once();
    if let Err(failure) = &outcome.checks {
        if failure.starts_with(SCENARIO_FAILED) {
            panic!("{failure}");
        }
    }
    outcome
}

const SCENARIO_FAILED: &str = "the scenario itself failed";

fn scenario_once() -> &'static Outcome {
    static OUTCOME: OnceLock<Outcome> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        std::thread::spawn(|| {
            let logs = Logs::default();
            let dispatch = logs.dispatch();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .on_thread_start(move || {
                    // For the thread's whole life: the service's warnings and errors
                    // are what explains a 5xx.
                    std::mem::forget(tracing::dispatcher::set_default(&dispatch));
                })
                .build()
                .expect("a runtime");
            let mut outcome = runtime.block_on(async {
                tokio::time::timeout(SCENARIO_LIMIT, scenario())
                    .await
                    .unwrap_or_else(|_| panic!("the outage scenario took over {SCENARIO_LIMIT:?}"))
            });
            outcome.errors = logs.errors();
            outcome
        })
        .join()
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Outcome {
                tally: Tally::default(),
                timeline: vec![],
                errors: vec![],
                checks: Err(format!("{SCENARIO_FAILED}: {message}")),
            }
        })
    })
}

async fn scenario() -> Outcome {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(Cluster::create)
            .await
            .expect("initdb"),
    );
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = Config::load_with_env(None, &[]).expect("the embedded default loads");
    config.store.url = cluster.url();
    config.store.data_dir = data_dir.path().to_owned();
    config.store.max_connections = 5;
    config.store.server_key = Some(Secret::new(encode_base64(&rand::random::<[u8; 32]>())));
    config.admin.token = Some(Secret::new(random_token()));
    // The load comes from one loopback address: it must not meet the login throttle.
    config.throttle.logins_per_client = 1_000_000;
    config.server.request_timeout_ms = REQUEST_TIMEOUT_MS;
    config.wechat.timeout_ms = 1_000;
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut built =
        miniauth::wiring::build(&config, miniauth::wiring::SimulatorStart::At(loopback))
            .await
            .unwrap_or_else(|e| panic!("building the service: {e:#}"));
    let listener = tokio::net::TcpListener::bind(loopback)
        .await
        .expect("bind port 0");
    let address = format!("http://{}", listener.local_addr().expect("local address"));
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(miniauth_http::serve(
        listener,
        built.router.clone(),
        async {
            let _ = shutdown_rx.await;
        },
    ));
    let simulator = built
        .simulator
        .take()
        .expect("the embedded default runs the simulator");
    let harness = Arc::new(Harness {
        address,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client"),
        device: simulator.device(),
        simulator,
        store: built.store.clone(),
        tally: Mutex::new(Tally::default()),
        started: Instant::now(),
        timeline: Mutex::new(vec![]),
        wrong: Mutex::new(vec![]),
    });

    // Users who will come back during the outage.
    let mut returning = Vec::new();
    for _ in 0..RETURNING {
        let sim_user = harness.new_sim_user().await;
        let flow = harness.first_flow(sim_user, "before").await;
        let (openid, user_id) = flow.bound.expect("registration works before the outage");
        returning.push(Returning {
            sim_user,
            openid,
            user_id,
        });
    }
    let returning = Arc::new(returning);
    harness.note("returning users registered; load starts");

    let stop_load = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (harness, returning, stop_load) =
            (harness.clone(), returning.clone(), stop_load.clone());
        workers.push(tokio::spawn(async move {
            let mut flows = Vec::new();
            let mut turn = worker;
            while !stop_load.load(Ordering::Relaxed) {
                if turn % 2 == 0 {
                    let sim_user = harness.new_sim_user().await;
                    flows.push(harness.first_flow(sim_user, "load").await);
                } else {
                    harness
                        .returning_login(&returning[turn % returning.len()], "load")
                        .await;
                }
                turn += 1;
            }
            flows
        }));
    }

    tokio::time::sleep(BEFORE_STOP).await;
    harness.note("pg_ctl stop -m fast");
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop())
        .await
        .expect("pg_ctl stop");
    harness.note("stopped");
    tokio::time::sleep(DOWN).await;
    harness.note("pg_ctl start");
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start())
        .await
        .expect("pg_ctl start");
    harness.note("started");
    tokio::time::sleep(AFTER_START).await;
    stop_load.store(true, Ordering::Relaxed);
    let mut flows = Vec::new();
    for worker in workers {
        flows.extend(worker.await.expect("a load worker"));
    }
    harness.note(&format!("load stopped: {} first-login flows", flows.len()));

    let checks = {
        let harness = harness.clone();
        let url = cluster.url();
        tokio::spawn(async move { recovery_checks(&harness, &returning, flows, &url).await })
            .await
            .map_err(|e| match e.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            })
    };
    let _ = shutdown.send(());
    let _ = server.await;
    harness.store.close().await;
    drop(cluster);
    let tally = harness.tally.lock().expect("tally").clone();
    let timeline = harness.timeline.lock().expect("timeline").clone();
    Outcome {
        tally,
        timeline,
        errors: vec![],
        checks,
    }
}

/// After the restart, on the same miniauth process: it serves again; every flow the
/// outage interrupted completes when retried; nothing was lost or duplicated.
async fn recovery_checks(
    harness: &Arc<Harness>,
    returning: &[Returning],
    flows: Vec<Flow>,
    url: &str,
) -> String {
    // The first success after the restart, without restarting miniauth.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !harness
        .returning_login(&returning[0], "recovery probe")
        .await
    {
        assert!(
            Instant::now() < deadline,
            "miniauth did not recover within 15 s of PostgreSQL's restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    harness.note("a returning login succeeds again");

    // Every interrupted flow, retried: a new login and phone code for the same WeChat
    // user and phone. A claim or a registered user the outage left behind must not
    // block it.
    let interrupted: Vec<u64> = flows
        .iter()
        .filter(|f| f.bound.is_none())
        .map(|f| f.sim_user)
        .collect();
    let retried = all(
        harness,
        interrupted.iter().map(|&sim_user| {
            move |h: Arc<Harness>| async move { h.first_flow(sim_user, "after: retry").await }
        }),
    )
    .await;
    // And new work and returning users, all served.
    let fresh = all(
        harness,
        (0..WORKERS).map(|_| {
            |h: Arc<Harness>| async move {
                let sim_user = h.new_sim_user().await;
                h.first_flow(sim_user, "after: new").await
            }
        }),
    )
    .await;
    let logins = all(
        harness,
        returning
            .iter()
            .cloned()
            .map(|r| move |h: Arc<Harness>| async move { h.returning_login(&r, "after").await }),
    )
    .await;
    harness.note("retries and fresh load done");
    for flow in retried.iter().chain(&fresh) {
        assert!(
            flow.bound.is_some(),
            "after the restart, the flow of simulator user {} failed:\n{}",
            flow.sim_user,
            harness.tally.lock().expect("tally")
        );
    }
    assert!(
        logins.iter().all(|ok| *ok),
        "a returning login failed after the restart"
    );
    let wrong = harness.wrong.lock().expect("wrong").clone();
    assert!(
        wrong.is_empty(),
        "returning logins answered wrongly: {wrong:?}"
    );

    // What the outage may leave (by design): a registry claim the log never confirmed,
    // a user registered from a phone whose binding never committed. The sweep removes
    // exactly those; it must not touch anything a client was told about.
    let sweep = harness
        .store
        .sweep_orphans(chrono::Duration::zero())
        .await
        .expect("sweep orphans");
    harness.note(&format!(
        "orphan sweep: {} users, {} claims",
        sweep.users_removed, sweep.claims_released
    ));

    let appid: AppId = app_id(APP);
    let mut expected: Vec<(AppId, OpenId, i64)> = returning
        .iter()
        .map(|r| (appid.clone(), r.openid.clone(), r.user_id))
        .collect();
    for flow in flows.iter().chain(&retried).chain(&fresh) {
        if let Some((openid, user)) = &flow.bound {
            expected.push((appid.clone(), openid.clone(), *user));
        }
    }
    let bound = check_invariants(&harness.store, &expected).await;
    // Every WeChat user of the run, bound exactly once: none lost, none twice.
    let sim_users: std::collections::BTreeSet<u64> = returning
        .iter()
        .map(|r| r.sim_user)
        .chain(flows.iter().map(|f| f.sim_user))
        .chain(fresh.iter().map(|f| f.sim_user))
        .collect();
    assert_eq!(
        bound.by_identity.len(),
        sim_users.len(),
        "bound identities vs WeChat users of the run"
    );
    for &sim_user in &sim_users {
        let openid = harness.openid(sim_user);
        assert!(
            bound.by_identity.contains_key(&(appid.clone(), openid)),
            "simulator user {sim_user} has no binding after the retries"
        );
    }
    // One user per identity here (one phone each): as many users as bindings, so no
    // orphan outlived the sweep and no phone got two users.
    let users = count_users(url).await;
    assert_eq!(
        users,
        bound.by_identity.len() as i64,
        "users vs bound identities (each WeChat user of the run has a phone of its own)"
    );
    format!(
        "{} identities bound, {} flows interrupted and completed on retry, sweep removed \
         {} users and {} claims",
        bound.by_identity.len(),
        interrupted.len(),
        sweep.users_removed,
        sweep.claims_released
    )
}

/// The users the directory holds.
async fn count_users(url: &str) -> i64 {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("connect to the cluster to count users");
    let users = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users")
        .fetch_one(&pool)
        .await
        .expect("count users");
    pool.close().await;
    users
}

/// Runs each job on its own task and collects the outputs in order.
async fn all<T, F, Fut>(harness: &Arc<Harness>, jobs: impl IntoIterator<Item = F>) -> Vec<T>
where
    T: Send + 'static,
    F: FnOnce(Arc<Harness>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|job| tokio::spawn(job(harness.clone())))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.expect("a client task"));
    }
    out
}

// --- The tests ------------------------------------------------------------------------

/// While PostgreSQL is down every request is answered (no hang, no dropped
/// connection), and the refusals are 503s with `Retry-After` and a stable code: the
/// store's `service_unavailable`, or `request_timeout` when the pool waits for a
/// database that does not answer longer than the request may take.
#[test]
fn postgres_outage_is_answered_with_clear_503s() {
    let outcome = outcome();
    let report = outcome.report();
    assert!(
        outcome.tally.with_status(503) > 0,
        "the outage was not observed at all\n{report}"
    );
    let unanswered = outcome.tally.with_status(0);
    assert_eq!(unanswered, 0, "requests got no HTTP answer\n{report}");
    for (route, status, code) in outcome.tally.0.keys() {
        if *status == 503 {
            assert!(
                matches!(code.as_str(), "service_unavailable" | "request_timeout"),
                "{route} answered 503 with code {code:?}\n{report}"
            );
        }
    }
    let missing: Vec<&String> = outcome
        .timeline
        .iter()
        .filter(|line| line.contains("503 Service Unavailable without Retry-After"))
        .collect();
    assert!(missing.is_empty(), "{missing:?}\n{report}");
}

/// No request is answered 500 because the database went away: only 200 or 503.
///
/// A statement running when `pg_ctl stop -m fast` terminates its session gets
/// SQLSTATE 57P01 (admin_shutdown): the store maps it to unavailable, not internal.
#[test]
fn postgres_outage_is_never_answered_with_500() {
    let outcome = outcome();
    let bad = outcome.tally.outside(&[200, 503]);
    assert!(
        bad.is_empty(),
        "answers other than 200 and 503 around the outage: {bad:?}\n{}",
        outcome.report()
    );
}

/// After PostgreSQL's restart the same miniauth process serves again, every flow the
/// outage interrupted completes on retry, and nothing was lost or duplicated: every
/// identity a client was told is bound is bound to that user, in the log, the read
/// models and the registry; one binding per WeChat user; the log verifies.
#[test]
fn postgres_outage_loses_no_binding_and_recovers_without_restart() {
    let outcome = outcome();
    let interrupted = outcome
        .tally
        .0
        .iter()
        .filter(|((route, status, _), _)| route.starts_with("load") && *status != 200)
        .count();
    assert!(
        interrupted > 0,
        "the outage interrupted no request: nothing was tested\n{}",
        outcome.report()
    );
    match &outcome.checks {
        Ok(summary) => eprintln!("{summary}\n{}", outcome.report()),
        Err(failure) => panic!("{failure}\n{}", outcome.report()),
    }
}
