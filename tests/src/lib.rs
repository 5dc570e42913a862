//! Helpers for the end-to-end tests: spawn the app, drive it.
//!
//! Every test spawns the whole service ([`spawn_app`]) on port 0 with a database of its
//! own — SQLite in a temporary directory, or a fresh PostgreSQL database named at random
//! on the server of `MINIAUTH_TEST_DATABASE_URL` — and the WeChat simulator in-process.
//! [`TestApp`] then plays the mini program (through the simulator's device API) and the
//! HTTP client, and looks into the store to check what was (not) written. Its clock
//! ([`TestApp::clock`]) is moved forward where a test waits for something to expire.
//!
//! Run with `cargo test -p miniauth-e2e`. Each scenario runs on both engines (see
//! [`on_both_engines!`]); the PostgreSQL variants need a server where the user may
//! `CREATE DATABASE` — `postgres://postgres@127.0.0.1:5432/postgres` unless
//! `MINIAUTH_TEST_DATABASE_URL` says otherwise — and fail, saying how to start one,
//! when none answers. Each test's database is dropped when its [`TestApp`] is.

mod clock;
pub mod gitegg_db;

pub use clock::SettableClock;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use miniauth::config::{AppSection, Config, Secret, WeChatTarget, DEMO_APPID};
use miniauth_application::RegistrationPolicy;
use miniauth_domain::crypto::{encode_base64, encrypt_payload};
use miniauth_domain::{AppId, SessionKey, UserId};
use miniauth_store::Store;
use miniauth_wechat::sim::{DeviceClient, NewSimUser, RunningSimulator};
use rand::Rng;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The demo app: registration `auto`, bound to an Open Platform account (unionid).
pub const APP: &str = DEMO_APPID;
/// A second app of the same tenant, also `auto` and unionid-bound.
pub const SECOND_APP: &str = "wxsecondapp0000002";
/// An app that binds only phones of existing users (`existing_phone_only`).
pub const EXISTING_ONLY_APP: &str = "wxexistingonly0003";
/// An app that does no self-service by phone at all (`closed`).
pub const CLOSED_APP: &str = "wxclosedapp0000004";
/// The demo app's secret in the embedded default.
const DEMO_SECRET: &str = "demo-secret-not-for-production";
/// The tenant of every app.
pub const TENANT: &str = "default";

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which store engine a test runs on: the store's own.
pub use miniauth_store::Engine;

/// Generates a `sqlite` and a `postgres` test for each named scenario
/// `async fn name(engine: Engine)`; attributes before a name (`#[ignore = "…"]`) go
/// on both tests.
#[macro_export]
macro_rules! on_both_engines {
    ($($(#[$attr:meta])* $scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $(#[$attr])*
                async fn sqlite() {
                    super::$scenario($crate::Engine::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $(#[$attr])*
                async fn postgres() {
                    super::$scenario($crate::Engine::Postgres).await
                }
            }
        )*
    };
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name() -> String {
    format!(
        "miniauth_e2e_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// A database of one test; a PostgreSQL one is dropped with it.
struct TestDb {
    _dir: tempfile::TempDir,
    url: String,
    data_dir: PathBuf,
    pg: Option<(String, String)>,
}

impl TestDb {
    async fn new(engine: Engine) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data_dir = dir.path().to_owned();
        match engine {
            Engine::Sqlite => Self {
                url: format!("sqlite://{}", data_dir.join("miniauth.db").display()),
                data_dir,
                _dir: dir,
                pg: None,
            },
            Engine::Postgres => {
                let admin = std::env::var("MINIAUTH_TEST_DATABASE_URL")
                    .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
                let mut conn = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    <sqlx::PgConnection as sqlx::Connection>::connect(&admin),
                )
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut))
                .unwrap_or_else(|e| {
                    panic!(
                        "the end-to-end tests run on PostgreSQL too, and none answers at \
                         {admin}: {e}.\nStart one, e.g. `pg_ctlcluster 15 main start` (user \
                         postgres, trust auth on 127.0.0.1) or `docker run -d -p 5432:5432 -e \
                         POSTGRES_HOST_AUTH_METHOD=trust postgres:16`, or point \
                         MINIAUTH_TEST_DATABASE_URL at a server where this user may CREATE \
                         DATABASE."
                    )
                });
                let name = unique_name();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin}: {e}"));
                let _ = sqlx::Connection::close(conn).await;
                let server = admin
                    .rsplit_once('/')
                    .map(|(server, _)| server)
                    .unwrap_or_else(|| {
                        panic!("MINIAUTH_TEST_DATABASE_URL must end with /<database>")
                    });
                Self {
                    url: format!("{server}/{name}"),
                    data_dir,
                    _dir: dir,
                    pg: Some((admin, name)),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        // Drop may run inside the test's runtime, which must not block on itself.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                    let _ = sqlx::Connection::close(conn).await;
                }
            });
        })
        .join();
    }
}

/// A read-only look at the tables, to count what a request wrote.
enum Peek {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Peek {
    async fn connect(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Self::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect(url)
                    .await
                    .expect("open the SQLite file to inspect it"),
            )
        } else {
            Self::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(url)
                    .await
                    .expect("connect to the test database to inspect it"),
            )
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        let result = match self {
            Self::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
            Self::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
        };
        result.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Every row of every table as one line of text (`table: v1 | v2 | …`).
    async fn every_row_text(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match self {
            Self::Sqlite(pool) => {
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                )
                .fetch_all(pool)
                .await
                .expect("list the tables");
                for table in tables {
                    let columns: Vec<String> = sqlx::query_scalar(&format!(
                        "SELECT name FROM pragma_table_info('{table}')"
                    ))
                    .fetch_all(pool)
                    .await
                    .expect("list the columns");
                    let row = columns
                        .iter()
                        .map(|c| {
                            format!(
                                "COALESCE(CASE WHEN typeof(\"{c}\") = 'blob' THEN hex(\"{c}\") \
                                 ELSE CAST(\"{c}\" AS TEXT) END, '')"
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" || ' | ' || ");
                    let rows: Vec<String> =
                        sqlx::query_scalar(&format!("SELECT {row} FROM \"{table}\""))
                            .fetch_all(pool)
                            .await
                            .unwrap_or_else(|e| panic!("read {table}: {e}"));
                    lines.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
                }
            }
            Self::Postgres(pool) => {
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
                     ORDER BY tablename",
                )
                .fetch_all(pool)
                .await
                .expect("list the tables");
                for table in tables {
                    let rows: Vec<String> =
                        sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                            .fetch_all(pool)
                            .await
                            .unwrap_or_else(|e| panic!("read {table}: {e}"));
                    lines.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
                }
            }
        }
        lines
    }

    async fn execute(&self, sql: &str) -> u64 {
        let result = match self {
            Self::Sqlite(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            Self::Postgres(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        };
        result.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn texts(&self, sql: &str) -> Vec<Option<String>> {
        let result = match self {
            Self::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            Self::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        };
        result.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Every value of a JSON column, as text.
    async fn json_texts(&self, table: &str, column: &str) -> Vec<String> {
        let result = match self {
            Self::Sqlite(pool) => {
                sqlx::query_scalar::<_, String>(&format!(
                    "SELECT CAST({column} AS TEXT) FROM {table}"
                ))
                .fetch_all(pool)
                .await
            }
            Self::Postgres(pool) => {
                sqlx::query_scalar::<_, String>(&format!("SELECT {column}::text FROM {table}"))
                    .fetch_all(pool)
                    .await
            }
        };
        result.unwrap_or_else(|e| panic!("{table}.{column}: {e}"))
    }
}

/// How many rows each table holds, and the newest event's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The newest event's position in the log (0 when empty).
    pub last_event: i64,
    /// Events in the log.
    pub events: i64,
    /// Business users.
    pub users: i64,
    /// Registry claims (bindings).
    pub bindings: i64,
    /// Refresh tokens issued.
    pub refresh_tokens: i64,
    /// Refresh tokens rotated or revoked.
    pub refresh_spent: i64,
    /// Per-account data keys.
    pub data_keys: i64,
    /// Accounts in the read model.
    pub accounts: i64,
}

/// One HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The body as text.
    pub text: String,
}

impl Answer {
    /// Reads a response whole (for requests the helpers do not build).
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read the body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
            text,
        }
    }

    /// The body, after checking the status.
    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status}, got {}: {}",
            self.status,
            self.text
        );
        &self.body
    }

    /// Checks a v1 problem: status, `code`, the problem+json shape.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status.as_u16(), self.body["code"].as_str()),
            (status, Some(code)),
            "expected {status} {code}, got {}: {}",
            self.status,
            self.text
        );
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/problem+json"),
            "content-type {content_type}"
        );
        assert_eq!(self.body["status"], json!(status));
        assert!(!self.body["title"].as_str().unwrap_or_default().is_empty());
        assert!(!self.body["detail"].as_str().unwrap_or_default().is_empty());
        if status == 401 {
            assert!(
                self.header("www-authenticate").is_some(),
                "401 without WWW-Authenticate: {}",
                self.text
            );
        }
    }

    /// A GitEgg success: HTTP 200, `{success: true, code: 200}`; returns `data`.
    #[track_caller]
    pub fn envelope_ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        assert_eq!(
            (&self.body["success"], &self.body["code"]),
            (&json!(true), &json!(200)),
            "expected a successful envelope, got {}",
            self.text
        );
        assert_eq!(self.body["msg"], json!("success"));
        &self.body["data"]
    }

    /// A GitEgg failure: HTTP 200, `{success: false, code, data: null}`.
    #[track_caller]
    pub fn envelope_err(&self, code: u16) {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        assert_eq!(
            (&self.body["success"], &self.body["code"]),
            (&json!(false), &json!(code)),
            "expected a failed envelope with code {code}, got {}",
            self.text
        );
        assert!(!self.body["msg"].as_str().unwrap_or_default().is_empty());
        assert_eq!(self.body["data"], Value::Null);
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Retry-After` in seconds; panics when absent.
    #[track_caller]
    pub fn retry_after(&self) -> u64 {
        self.header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After on {}: {}", self.status, self.text))
    }
}

/// Access and refresh token of a v1 token answer.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The JWT.
    pub access: String,
    /// The opaque refresh token.
    pub refresh: String,
}

impl Tokens {
    /// Reads `{access_token, refresh_token, …}`, checking the v1 shape.
    #[track_caller]
    pub fn from_v1(value: &Value) -> Self {
        assert_eq!(value["token_type"], json!("Bearer"), "{value}");
        assert!(
            value["expires_in"].as_u64().is_some_and(|s| s > 0),
            "{value}"
        );
        assert!(
            value["refresh_expires_in"].as_u64().is_some_and(|s| s > 0),
            "{value}"
        );
        Self {
            access: value["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh: value["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        }
    }

    /// Reads GitEgg's `{token, refreshToken, tokenHead, …}`.
    #[track_caller]
    pub fn from_gitegg(data: &Value) -> Self {
        assert_eq!(data["tokenHead"], json!("Bearer "), "{data}");
        for key in ["expiresIn", "exp", "refreshExpiresIn", "refreshExp"] {
            assert!(data[key].as_i64().is_some_and(|v| v > 0), "{key} in {data}");
        }
        Self {
            access: data["token"].as_str().expect("token").to_owned(),
            refresh: data["refreshToken"]
                .as_str()
                .expect("refreshToken")
                .to_owned(),
        }
    }
}

/// The running service of one test.
pub struct TestApp {
    /// `http://127.0.0.1:port`.
    pub address: String,
    /// `http://127.0.0.1:port` of the metrics listener, when `metrics_listen` is set.
    pub metrics_address: Option<String>,
    metrics_server: Option<tokio::task::JoinHandle<()>>,
    /// The mini program on the simulator (device and control API).
    pub device: DeviceClient,
    /// The store the service writes to.
    pub store: Store,
    /// The configured admin token.
    pub admin_token: String,
    /// The demo app.
    pub appid: AppId,
    /// The HTTP client.
    pub client: reqwest::Client,
    /// The engine of the store.
    pub engine: Engine,
    /// The in-process simulator (None when WeChat is a fake of the test).
    pub simulator: Option<RunningSimulator>,
    /// The service's clock: move it forward instead of sleeping (shared by every
    /// instance of the test).
    pub clock: Arc<SettableClock>,
    /// The webhook deliveries of `[[webhooks]]` (not run in the background: a test
    /// drives their rounds).
    pub webhooks: Option<Arc<miniauth_application::webhooks::WebhookDelivery>>,
    peek: Peek,
    server: tokio::task::JoinHandle<()>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    config: Config,
    db: Arc<TestDb>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.abort();
        if let Some(metrics) = &self.metrics_server {
            metrics.abort();
        }
    }
}

/// A random 32-character token.
pub fn random_token() -> String {
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// A random mainland mobile number.
pub fn random_phone() -> String {
    format!("139{:08}", rand::thread_rng().gen_range(0..100_000_000u32))
}

/// An extra app of the default tenant.
pub fn app_section(appid: &str, registration: RegistrationPolicy) -> AppSection {
    AppSection {
        appid: appid.to_owned(),
        kind: miniauth_domain::Channel::MiniProgram,
        redirect_uris: Vec::new(),
        secret: Some(Secret::new(format!("secret-of-{appid}"))),
        secret_env: None,
        tenant: TENANT.to_owned(),
        registration,
        unionid: true,
        watermark_max_age_secs: None,
        legacy_payloads: true,
        payload_rejections_per_key: miniauth_application::DEFAULT_PAYLOAD_REJECTIONS_PER_KEY,
    }
}

/// The service on the embedded default, with the four apps above.
pub async fn spawn_app(engine: Engine) -> TestApp {
    spawn_app_with(engine, |_| {}).await
}

/// [`spawn_app`] with the configuration changed by `customize` first.
pub async fn spawn_app_with(engine: Engine, customize: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDb::new(engine).await;
    let mut config = Config::load_with_env(None, &[]).expect("the embedded default loads");
    config.store.url = db.url.clone();
    config.store.data_dir = db.data_dir.clone();
    config.store.max_connections = 5;
    if engine == Engine::Postgres {
        config.store.server_key = Some(Secret::new(encode_base64(&rand::random::<[u8; 32]>())));
    }
    config.admin.token = Some(Secret::new(random_token()));
    // Every test client is 127.0.0.1: one login budget would be shared by whole
    // scenarios. The throttling attacks set their own.
    config.throttle.logins_per_client = 100_000;
    config.apps.extend([
        app_section(SECOND_APP, RegistrationPolicy::Auto),
        app_section(EXISTING_ONLY_APP, RegistrationPolicy::ExistingPhoneOnly),
        app_section(CLOSED_APP, RegistrationPolicy::Closed),
    ]);
    customize(&mut config);
    start_instance(
        engine,
        config,
        Arc::new(db),
        None,
        Arc::new(SettableClock::default()),
    )
    .await
}

/// Builds and serves one instance of the service on `config` and `clock`; `device`
/// names the simulator of another instance to share (else the configuration decides).
async fn start_instance(
    engine: Engine,
    config: Config,
    db: Arc<TestDb>,
    device: Option<DeviceClient>,
    clock: Arc<SettableClock>,
) -> TestApp {
    let ephemeral = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut built = miniauth::wiring::build_with_clock(
        &config,
        miniauth::wiring::SimulatorStart::At(ephemeral),
        clock.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("building the service: {e:#}"));
    let listener = tokio::net::TcpListener::bind(ephemeral)
        .await
        .expect("bind port 0");
    let address = format!("http://{}", listener.local_addr().expect("local address"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let router = built.router.clone();
    let limits = built.server_limits;
    // `/metrics` on a listener of its own when configured so (`metrics_listen`: the
    // test's port 0 is replaced by a free one).
    let (metrics_address, metrics_server) = match built.metrics_router.clone() {
        Some(metrics_router) => {
            let metrics_listener = tokio::net::TcpListener::bind(ephemeral)
                .await
                .expect("bind port 0");
            let metrics_address = format!(
                "http://{}",
                metrics_listener.local_addr().expect("local address")
            );
            let handle = tokio::spawn(async move {
                let _ = miniauth_http::serve_with(
                    metrics_listener,
                    metrics_router,
                    limits,
                    std::future::pending(),
                )
                .await;
            });
            (Some(metrics_address), Some(handle))
        }
        None => (None, None),
    };
    let server = tokio::spawn(async move {
        let _ = miniauth_http::serve_with(listener, router, limits, async {
            let _ = rx.await;
        })
        .await;
    });
    let simulator = built.simulator.take();
    let device = match (&simulator, device) {
        (Some(running), _) => running.device(),
        (None, Some(shared)) => shared,
        (None, None) => DeviceClient::new(config.wechat.api_base.to_string()),
    };
    TestApp {
        address,
        metrics_address,
        metrics_server,
        device,
        store: built.store.clone(),
        admin_token: config
            .admin
            .token
            .as_ref()
            .map(|t| t.expose().to_owned())
            .unwrap_or_default(),
        appid: AppId::parse(APP).expect("valid appid"),
        client: reqwest::Client::new(),
        engine,
        simulator,
        clock,
        webhooks: built.webhooks.clone(),
        peek: Peek::connect(&db.url).await,
        server,
        shutdown: Some(tx),
        config,
        db,
    }
}

/// An appid constant as an [`AppId`].
pub fn app(appid: &str) -> AppId {
    AppId::parse(appid).expect("valid appid")
}

impl TestApp {
    /// Another instance of the service on the same database and the same simulator,
    /// as when several stateless instances share one PostgreSQL.
    pub async fn another_instance(&self) -> TestApp {
        let mut config = self.config.clone();
        if let Some(running) = &self.simulator {
            config.wechat.api_base = WeChatTarget::Api(running.base_url());
        }
        start_instance(
            self.engine,
            config,
            self.db.clone(),
            Some(self.device.clone()),
            self.clock.clone(),
        )
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `POST path` with a JSON body, optionally with a bearer token.
    pub async fn post_json(&self, path: &str, body: &Value, bearer: Option<&str>) -> Answer {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        Answer::read(request.send().await.expect("POST")).await
    }

    /// `POST path` with raw bytes and a content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let request = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body);
        Answer::read(request.send().await.expect("POST")).await
    }

    /// `POST path` with raw bytes, an optional content type and a bearer token.
    pub async fn post_raw_with_bearer(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        bearer: &str,
    ) -> Answer {
        let mut request = self
            .client
            .post(self.url(path))
            .bearer_auth(bearer)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        Answer::read(request.send().await.expect("POST")).await
    }

    /// `POST path` with a form body.
    pub async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        bearer: Option<&str>,
    ) -> Answer {
        let mut request = self.client.post(self.url(path)).form(form);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        Answer::read(request.send().await.expect("POST")).await
    }

    /// `GET path_and_query` as given (no re-encoding), optionally with a bearer token.
    pub async fn get(&self, path_and_query: &str, bearer: Option<&str>) -> Answer {
        let mut request = self.client.get(self.url(path_and_query));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        Answer::read(request.send().await.expect("GET")).await
    }

    /// `DELETE path` with a bearer token.
    pub async fn delete(&self, path: &str, bearer: Option<&str>) -> Answer {
        let mut request = self.client.delete(self.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        Answer::read(request.send().await.expect("DELETE")).await
    }

    // --- v1 routes --------------------------------------------------------------

    /// `POST /v1/apps/{appid}/sessions {code}`.
    pub async fn login(&self, appid: &str, code: &str) -> Answer {
        self.post_json(
            &format!("/v1/apps/{appid}/sessions"),
            &json!({ "code": code }),
            None,
        )
        .await
    }

    /// `POST /v1/apps/{appid}/profile` with this body.
    pub async fn profile(&self, appid: &str, body: &Value) -> Answer {
        self.post_json(&format!("/v1/apps/{appid}/profile"), body, None)
            .await
    }

    /// `POST /v1/apps/{appid}/phone` with this body.
    pub async fn phone(&self, appid: &str, body: &Value) -> Answer {
        self.post_json(&format!("/v1/apps/{appid}/phone"), body, None)
            .await
    }

    /// `POST /v1/apps/{appid}/binding {ticket}` as the holder of `access`.
    pub async fn bind(&self, appid: &str, ticket: &str, access: &str) -> Answer {
        self.post_json(
            &format!("/v1/apps/{appid}/binding"),
            &json!({ "ticket": ticket }),
            Some(access),
        )
        .await
    }

    /// `DELETE /v1/apps/{appid}/binding` as the holder of `access`.
    pub async fn unbind(&self, appid: &str, access: &str) -> Answer {
        self.delete(&format!("/v1/apps/{appid}/binding"), Some(access))
            .await
    }

    /// `POST /v1/token` with a JSON body.
    pub async fn token(&self, body: &Value) -> Answer {
        self.post_json("/v1/token", body, None).await
    }

    /// `POST /v1/token {grant_type: refresh_token}`.
    pub async fn refresh(&self, refresh_token: &str) -> Answer {
        self.token(&json!({ "grant_type": "refresh_token", "refresh_token": refresh_token }))
            .await
    }

    /// `POST /v1/token {grant_type: password}` as a form.
    pub async fn password_grant(&self, account: &str, password: &str) -> Answer {
        self.post_form(
            "/v1/token",
            &[
                ("grant_type", "password"),
                ("account", account),
                ("password", password),
            ],
            None,
        )
        .await
    }

    /// `POST /v1/logout {refresh_token}`.
    pub async fn logout(&self, access: &str, refresh: &str) -> Answer {
        self.post_json(
            "/v1/logout",
            &json!({ "refresh_token": refresh }),
            Some(access),
        )
        .await
    }

    /// `GET /v1/me`.
    pub async fn me(&self, access: &str) -> Answer {
        self.get("/v1/me", Some(access)).await
    }

    /// `POST /v1/admin/users` with the admin token.
    pub async fn add_user(&self, body: &Value) -> Answer {
        self.post_json("/v1/admin/users", body, Some(&self.admin_token))
            .await
    }

    // --- GitEgg routes ----------------------------------------------------------

    /// `GET {prefix}/wx/user/{appid}/{route}?{query}`; `query` is sent as given.
    pub async fn wx(
        &self,
        prefix: &str,
        appid: &str,
        route: &str,
        query: &str,
        bearer: Option<&str>,
    ) -> Answer {
        let path = format!("{prefix}/wx/user/{appid}/{route}");
        let path = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        self.get(&path, bearer).await
    }

    /// `POST /oauth/token` with a form.
    pub async fn oauth_token(&self, form: &[(&str, &str)]) -> Answer {
        self.post_form("/oauth/token", form, None).await
    }

    /// `POST /oauth/logout {refreshToken}`.
    pub async fn oauth_logout(&self, access: &str, refresh: &str) -> Answer {
        self.post_json(
            "/oauth/logout",
            &json!({ "refreshToken": refresh }),
            Some(access),
        )
        .await
    }

    /// `GET /system/account/user/info`.
    pub async fn user_info(&self, access: &str) -> Answer {
        self.get("/system/account/user/info", Some(access)).await
    }

    // --- The mini program ---------------------------------------------------------

    /// A new WeChat user on the simulator, with this phone (or none).
    pub async fn wechat_user(&self, phone: Option<&str>) -> u64 {
        self.device
            .create_user(&NewSimUser {
                nickname: format!("User{}", rand::random::<u16>()),
                avatar_url: "https://example.com/avatar.png".into(),
                phone: phone.map(str::to_owned),
                country_code: "86".into(),
            })
            .await
            .expect("create a simulator user")
    }

    /// `wx.login` in `appid`: a fresh login code.
    pub async fn wx_login(&self, appid: &str, user: u64) -> String {
        self.device
            .login(&app(appid), user)
            .await
            .expect("wx.login on the simulator")
    }

    /// `wx.login` and `POST /v1/apps/{appid}/sessions`, expecting 200.
    pub async fn session(&self, appid: &str, user: u64) -> Value {
        let code = self.wx_login(appid, user).await;
        self.login(appid, &code).await.ok(200).clone()
    }

    /// The bind key of a fresh GitEgg login: a ticket no answer spent (a v1 login of a
    /// bound identity answers tokens, which uses its ticket).
    pub async fn bind_key(&self, appid: &str, user: u64) -> String {
        let code = self.wx_login(appid, user).await;
        let login = self
            .wx("", appid, "login", &format!("code={}", enc(&code)), None)
            .await;
        login.envelope_ok()["bindKey"]
            .as_str()
            .expect("bindKey")
            .to_owned()
    }

    /// The ticket of a fresh login.
    pub async fn ticket(&self, appid: &str, user: u64) -> String {
        self.session(appid, user).await["ticket"]
            .as_str()
            .expect("ticket")
            .to_owned()
    }

    /// Exchanges a login code at the simulator directly, as another backend would:
    /// the code is spent at WeChat without miniauth knowing.
    pub async fn spend_code_elsewhere(&self, appid: &str, code: &str) {
        let answer = self.code_to_session_elsewhere(appid, code).await;
        assert!(answer["openid"].is_string(), "{answer}");
    }

    /// Another backend's `jscode2session` at the simulator (as GitEgg did before a
    /// migration): WeChat's answer, `openid`, `unionid`, `session_key`.
    pub async fn code_to_session_elsewhere(&self, appid: &str, code: &str) -> Value {
        let sim = self
            .simulator
            .as_ref()
            .expect("the simulator runs")
            .base_url();
        let secret = if appid == APP {
            DEMO_SECRET.to_owned()
        } else {
            format!("secret-of-{appid}")
        };
        self.client
            .get(format!("{sim}/sns/jscode2session"))
            .query(&[
                ("appid", appid),
                ("secret", &secret),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ])
            .send()
            .await
            .expect("jscode2session on the simulator")
            .json()
            .await
            .expect("a JSON answer")
    }

    /// The phone button's code.
    pub async fn phone_code(&self, appid: &str, user: u64) -> String {
        self.device
            .phone(&app(appid), user)
            .await
            .expect("the phone button on the simulator")
            .code
    }

    /// A WeChat user with a new phone, registered in `appid` by phone code; returns
    /// (user id, tokens, phone, simulator user).
    pub async fn registered_user(&self, appid: &str) -> (i64, Tokens, String, u64) {
        let phone = random_phone();
        let wechat = self.wechat_user(Some(&phone)).await;
        let ticket = self.ticket(appid, wechat).await;
        let code = self.phone_code(appid, wechat).await;
        let answer = self
            .phone(appid, &json!({ "ticket": ticket, "code": code }))
            .await;
        let body = answer.ok(200);
        assert_eq!(body["registered"], json!(true), "{body}");
        let user = body["user_id"].as_i64().expect("user_id");
        (user, Tokens::from_v1(&body["tokens"]), phone, wechat)
    }

    /// A password user made by the admin API; returns (user id, account, password).
    pub async fn password_user(&self, mobile: Option<&str>) -> (i64, String, String) {
        let account = format!("user{}", rand::random::<u32>());
        let password = format!("pw-{}", random_token());
        let mut body = json!({ "account": account, "password": password, "nickname": "Bob" });
        if let Some(mobile) = mobile {
            body["mobile"] = json!(mobile);
        }
        let answer = self.add_user(&body).await;
        let user = answer.ok(201)["user_id"].as_i64().expect("user_id");
        (user, account, password)
    }

    /// Tokens of a password login (v1, expecting 200).
    pub async fn password_tokens(&self, account: &str, password: &str) -> Tokens {
        Tokens::from_v1(self.password_grant(account, password).await.ok(200))
    }

    /// The simulator's current session key of `user` in `appid`.
    pub fn session_key(&self, appid: &str, user: u64) -> SessionKey {
        self.simulator
            .as_ref()
            .expect("the simulator runs")
            .simulator()
            .session_key(&app(appid), user)
            .expect("the user logged in to this app")
    }

    /// `plaintext` encrypted as WeChat does under `user`'s current session key in
    /// `appid`: (encrypted_data, iv).
    pub fn encrypt_for(&self, appid: &str, user: u64, plaintext: &[u8]) -> (String, String) {
        let key = self.session_key(appid, user);
        let iv: [u8; 16] = rand::random();
        (encrypt_payload(&key, &iv, plaintext), encode_base64(&iv))
    }

    // --- What the store holds -----------------------------------------------------

    /// The row counts of every table the service writes, and the newest event.
    pub async fn snapshot(&self) -> Snapshot {
        // The read models follow commits in the background: bring them up to the log
        // first, so that a projection of an earlier request is not counted as written
        // by the request under test.
        self.store
            .catch_up()
            .await
            .expect("catch the read models up");
        // The newest position straight from the table: a read through the store stops
        // at the safe horizon, which an unrelated transaction can hold below an event
        // committed before the request under test.
        Snapshot {
            last_event: self
                .peek
                .count("SELECT COALESCE(MAX(position), 0) FROM events")
                .await,
            events: self.peek.count("SELECT COUNT(*) FROM events").await,
            users: self.peek.count("SELECT COUNT(*) FROM users").await,
            bindings: self.peek.count("SELECT COUNT(*) FROM bindings").await,
            refresh_tokens: self.peek.count("SELECT COUNT(*) FROM refresh_tokens").await,
            refresh_spent: self
                .peek
                .count(
                    "SELECT COUNT(*) FROM refresh_tokens \
                     WHERE rotated_at IS NOT NULL OR revoked_at IS NOT NULL",
                )
                .await,
            data_keys: self.peek.count("SELECT COUNT(*) FROM data_keys").await,
            accounts: self.peek.count("SELECT COUNT(*) FROM account_view").await,
        }
    }

    /// Runs `request` and checks that it wrote nothing: no event, user, binding,
    /// refresh token, data key or account.
    pub async fn unchanged<F, Fut, T>(&self, what: &str, request: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        self.check_unchanged(what, request).await
    }

    async fn check_unchanged<F, Fut, T>(&self, what: &str, request: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let before = self.snapshot().await;
        let out = request().await;
        let after = self.snapshot().await;
        let new = self
            .store
            .events_after(before.last_event, 10)
            .await
            .expect("read the event log");
        assert!(
            new.is_empty(),
            "{what} wrote events: {:?}",
            new.iter().map(|e| &e.event_type).collect::<Vec<_>>()
        );
        assert_eq!(before, after, "{what} wrote something");
        out
    }

    /// The event log (payloads and metadata) and the aggregate state rows as stored,
    /// to search for data that must never be there in clear.
    pub async fn stored_log_text(&self) -> String {
        let mut text = Vec::new();
        for (table, column) in [
            ("events", "payload"),
            ("events", "metadata"),
            ("snapshots", "payload"),
        ] {
            text.extend(self.peek.json_texts(table, column).await);
        }
        text.join("\n")
    }

    /// Every row of every table as text, one line per row prefixed with its table:
    /// what anyone who reads the database sees.
    pub async fn every_row_text(&self) -> Vec<String> {
        self.peek.every_row_text().await
    }

    /// Runs one SQL statement behind the service's back (attacks by database write
    /// access); answers the rows it changed.
    pub async fn execute_sql(&self, sql: &str) -> u64 {
        self.peek.execute(sql).await
    }

    /// The single text column of a query.
    pub async fn query_texts(&self, sql: &str) -> Vec<Option<String>> {
        self.peek.texts(sql).await
    }

    /// The SQLite database file (None on PostgreSQL): its `-wal` sits beside it.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        (self.engine == Engine::Sqlite).then(|| self.db.data_dir.join("miniauth.db"))
    }

    /// The bindings of `user` as the event log says.
    pub async fn bindings_of(&self, user: i64) -> Vec<(String, String)> {
        self.store
            .bindings_of(UserId::new(user).expect("positive user id"))
            .await
            .expect("read bindings")
            .into_iter()
            .map(|b| (b.appid.as_str().to_owned(), b.openid.as_str().to_owned()))
            .collect()
    }

    /// The event types written since `position`.
    pub async fn event_types_after(&self, position: i64) -> Vec<String> {
        self.store
            .events_after(position, 1000)
            .await
            .expect("read the event log")
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }
}

/// Flips one character in the middle of the ticket's signature.
pub fn forge(ticket: &str) -> String {
    let dot = ticket.rfind('.').expect("a ticket has a signature part");
    let at = dot + (ticket.len() - dot) / 2;
    let mut chars: Vec<char> = ticket.chars().collect();
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// Percent-encodes a query value (as a well-behaved front end does).
pub fn enc(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
