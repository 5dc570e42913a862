//! Builds the service from the configuration: the store, the keys, WeChat (real or the
//! in-process simulator), the use cases and the HTTP router. Only wiring lives here.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use miniauth_application::legacy_key::LegacyBridge;
use miniauth_application::ports::{Chain, Clock, WeChatApi};
use miniauth_application::{AppCatalog, AppSettings, Lifetimes, MiniAuth, Ports};
use miniauth_domain::crypto::WatermarkPolicy;
use miniauth_http::{
    AdminToken, ApiState, ConsoleSettings, HttpConfig, MetricsAccess, MetricsListener, ServerLimits,
};
use miniauth_security::{
    generate_ed25519_pkcs8, random_key_32, HmacTicketCodec, JwtIssuer, JwtSettings, SystemClock,
};
use miniauth_store::{PasswordCost, RefreshPurge, ServerKey, Store, StoreConfig};
use miniauth_wechat::sim::{RunningSimulator, SimApp, SimConfig};
use miniauth_wechat::{AppCredentials, ClientConfig, RetryPolicy, WeChatClient};

use crate::config::{Algorithm, Config, ResolvedApp, Secret, WeChatTarget};

/// Everything `serve` runs.
pub struct Built {
    /// The use cases.
    pub service: Arc<MiniAuth>,
    /// The store (for subcommands that read it directly).
    pub store: Store,
    /// The clock the use cases read (and `serve`'s purge).
    pub clock: Arc<dyn Clock>,
    /// The HTTP API.
    pub router: axum::Router,
    /// `/metrics` alone, when `[server] metrics_listen` serves it on its own listener.
    pub metrics_router: Option<axum::Router>,
    /// The header-read timeout and connection cap of every listener.
    pub server_limits: ServerLimits,
    /// The in-process simulator, when `api_base = "simulator"`.
    pub simulator: Option<RunningSimulator>,
    /// Where the admin token of the embedded default was written, if it was generated.
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The webhook deliveries, when `[[webhooks]]` are configured (`serve` runs them).
    pub webhooks: Option<Arc<miniauth_application::webhooks::WebhookDelivery>>,
}

/// Opens the store described by the configuration (migrating it).
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    open_store_on(config, Arc::new(SystemClock)).await
}

/// [`open_store`] on `clock`: the store dates what it writes by the same clock as the
/// use cases.
pub async fn open_store_on(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Store> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let store_config = StoreConfig {
        url: config.store.url.clone(),
        max_connections: config.store.max_connections,
        data_dir: config.store.data_dir.clone(),
        server_key: config.server_key(&env)?.map(ServerKey::new),
        refresh_ttl: chrono::Duration::seconds(config.tokens.refresh_ttl_secs),
        refresh_max_lifetime: chrono::Duration::seconds(config.tokens.refresh_max_lifetime_secs),
        password_cost: PasswordCost::default(),
        password_concurrency: config.throttle.password_concurrency(),
    };
    Store::connect(&store_config, clock)
        .await
        .with_context(|| format!("opening the store at {}", redact_url(&config.store.url)))
}

/// Whether and where the in-process WeChat simulator runs, when `[wechat] api_base =
/// "simulator"` (with a real WeChat URL, none ever does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulatorStart {
    /// On `[wechat] simulator_listen` (`serve`).
    Configured,
    /// On this address instead (tests and the demo use port 0).
    At(SocketAddr),
    /// Not at all: a tool that never calls WeChat (`users`, `erase`). The client still
    /// points at the configured address, where nothing answers.
    NotStarted,
}

/// Builds the whole service.
pub async fn build(config: &Config, simulator: SimulatorStart) -> anyhow::Result<Built> {
    build_with_clock(config, simulator, Arc::new(SystemClock)).await
}

/// [`build`] on another clock: tests move a settable one instead of sleeping.
pub async fn build_with_clock(
    config: &Config,
    simulator: SimulatorStart,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Built> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let apps = config.resolve_apps(&env)?;
    let store = open_store_on(config, clock.clone()).await?;
    let (simulator, wechat) = wechat(config, &apps, simulator).await?;
    let signing = Signing::load(config, &store).await?;
    let service = service(config, &apps, &store, &signing, wechat, clock.clone());

    let (http, admin_token_file) = http_config(config, service.apps(), &env)?;
    let webhooks = crate::webhooks::delivery(config, &store, clock.clone())?;
    let mut state = ApiState::new(
        service.clone(),
        Arc::new(signing.tokens.jwks()),
        Arc::new(store.clone()),
        http,
    )
    .with_audit(Arc::new(store.clone()));
    if let Some(delivery) = &webhooks {
        state = state.with_webhooks(delivery.clone());
    }
    let metrics_router = config
        .server
        .metrics_listen
        .map(|_| miniauth_http::metrics_router(state.clone()));
    Ok(Built {
        service,
        router: miniauth_http::router(state),
        metrics_router,
        server_limits: ServerLimits {
            header_read_timeout: std::time::Duration::from_millis(
                config.server.header_read_timeout_ms,
            ),
            max_connections: config.server.max_connections,
        },
        store,
        clock,
        simulator,
        admin_token_file,
        webhooks,
    })
}

/// The WeChat API client, against WeChat or the in-process simulator (started here
/// when the configuration names it).
async fn wechat(
    config: &Config,
    apps: &[ResolvedApp],
    start: SimulatorStart,
) -> anyhow::Result<(Option<RunningSimulator>, Arc<dyn WeChatApi>)> {
    let listen = match start {
        SimulatorStart::At(listen) => listen,
        SimulatorStart::Configured | SimulatorStart::NotStarted => config.wechat.simulator_listen,
    };
    let (simulator, api_base) = match &config.wechat.api_base {
        WeChatTarget::Simulator if start == SimulatorStart::NotStarted => {
            (None, format!("http://{listen}"))
        }
        WeChatTarget::Simulator => {
            let running = miniauth_wechat::sim::start(listen, simulator_config(apps))
                .await
                .with_context(|| format!("starting the WeChat simulator on {listen}"))?;
            let api_base = running.base_url();
            (Some(running), api_base)
        }
        WeChatTarget::Api(url) => (None, url.clone()),
    };
    // The simulator plays WeChat's consent pages too.
    let open_base =
        matches!(config.wechat.api_base, WeChatTarget::Simulator).then(|| api_base.clone());
    let client = WeChatClient::new(ClientConfig {
        api_base,
        timeout: std::time::Duration::from_millis(config.wechat.timeout_ms),
        connect_timeout: std::time::Duration::from_millis(config.wechat.connect_timeout_ms),
        retry: RetryPolicy::default(),
        apps: apps
            .iter()
            .map(|app| AppCredentials {
                appid: app.appid.clone(),
                secret: app.secret.clone(),
            })
            .collect(),
    })
    .context("configuring the WeChat client")?;
    let client = match open_base {
        Some(base) => client.with_open_base(base),
        None => client,
    };
    Ok((simulator, Arc::new(client)))
}

/// The ticket codec and the access-token issuer, with their keys.
pub struct Signing {
    /// Signs and verifies tickets.
    pub tickets: Arc<HmacTicketCodec>,
    /// Signs and verifies access tokens; publishes the JWKS.
    pub tokens: Arc<JwtIssuer>,
}

impl Signing {
    /// Loads the keys: kept in the store (created on first use) and shared by every
    /// instance, so tickets and tokens minted by one verify on all of them; an RS256
    /// key comes from its file.
    pub async fn load(config: &Config, store: &Store) -> anyhow::Result<Self> {
        let ticket_key = store
            .key_material("ticket-hmac", || random_key_32().to_vec())
            .await
            .context("loading the ticket key")?;
        let ticket_key: [u8; 32] = ticket_key
            .try_into()
            .map_err(|_| anyhow::anyhow!("the stored ticket key is not 32 bytes"))?;
        Ok(Self {
            tickets: Arc::new(HmacTicketCodec::new(ticket_key)),
            tokens: Arc::new(jwt_issuer(config, store).await?),
        })
    }
}

/// The use cases over the store's ports, `signing`, `wechat` and `clock`.
pub fn service(
    config: &Config,
    apps: &[ResolvedApp],
    store: &Store,
    signing: &Signing,
    wechat: Arc<dyn WeChatApi>,
    clock: Arc<dyn Clock>,
) -> Arc<MiniAuth> {
    let catalog = AppCatalog::new(apps.iter().map(|app| AppSettings {
        appid: app.appid.clone(),
        kind: app.kind,
        redirect_uris: app.redirect_uris.clone(),
        tenant: app.tenant.clone(),
        registration: app.registration,
        watermark: WatermarkPolicy {
            max_age: app.watermark_max_age,
        },
        legacy_payloads: app.legacy_payloads,
        payload_rejections_per_key: app.payload_rejections_per_key,
        link_by_unionid: config.tenant(&app.tenant).link_by_unionid,
    }));
    let lifetimes = Lifetimes {
        ticket: chrono::Duration::seconds(config.tokens.ticket_ttl_secs),
    };
    // In the database on both engines: shared by every instance on PostgreSQL, kept
    // across restarts on SQLite, one behaviour proven on both.
    let limiter = store.attempt_limiter(config.throttle.limits());
    let service = MiniAuth::new(
        Ports {
            wechat,
            users: Arc::new(store.users()),
            registry: Arc::new(store.registry()),
            tickets: signing.tickets.clone(),
            tokens: signing.tokens.clone(),
            refresh: Arc::new(store.refresh_tokens()),
            vault: Arc::new(store.vault()),
            clock,
            limiter: Arc::new(limiter),
            counters: Arc::new(store.usage_counters()),
            accounts: Arc::new(store.event_store()),
        },
        catalog,
        lifetimes,
    );
    Arc::new(match config.compat.legacy_des() {
        // Validated with the configuration.
        Ok(Some(des)) => service.with_legacy_bridge(LegacyBridge {
            keys: Arc::new(miniauth_security::LegacyBindKeyCodec::new(des.key, des.iv)),
            accounts: Arc::new(store.read_models()),
            period: config.compat.legacy_bind_key_period(),
        }),
        _ => service,
    })
}

/// The HTTP adapter's settings, and where a generated admin token was written.
fn http_config(
    config: &Config,
    apps: &AppCatalog,
    env: &[(String, String)],
) -> anyhow::Result<(HttpConfig, Option<std::path::PathBuf>)> {
    let (admin_token, admin_token_file) = admin_token(config, env)?;
    let default_tenant = apps.default_tenant().context("no app configured")?;
    let mut http = HttpConfig::new(default_tenant.clone());
    http.admin_token = admin_token;
    http.request_timeout = std::time::Duration::from_millis(config.server.request_timeout_ms);
    http.body_limit_bytes = config.server.body_limit_bytes;
    http.compat_clients = config
        .compat
        .clients
        .iter()
        .map(|c| (c.id.clone(), c.secret.clone()))
        .collect();
    http.trusted_proxies = config.trusted_proxies()?;
    http.console = ConsoleSettings {
        idle_timeout: std::time::Duration::from_secs(config.console.idle_timeout_secs),
        secure_cookie: config.console.secure_cookie,
    };
    if config.server.metrics_require_admin {
        http.metrics_access = MetricsAccess::AdminToken;
    }
    if config.server.metrics_listen.is_some() {
        http.metrics_listener = MetricsListener::Separate;
    }
    http.token_services = miniauth_http::TokenServices {
        issuer: config.tokens.issuer.clone(),
        public_url: config.public_url()?,
        introspection_clients: miniauth_application::IntrospectionClients::new(
            config.introspection_clients(env)?,
        ),
    };
    Ok((http, admin_token_file))
}

/// How often `serve` purges dead refresh tokens.
pub const REFRESH_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
/// How long an expired or revoked refresh token is kept before it is purged, so that
/// presenting it still answers `refresh_token_expired` (or `_unknown`) meaningfully.
pub const REFRESH_PURGE_GRACE: chrono::Duration = chrono::Duration::days(1);

/// Purges expired and revoked refresh tokens, the families left without tokens and the
/// expired usage counters,
/// once per [`REFRESH_PURGE_INTERVAL`], in bounded batches, until the task is aborted.
/// Several instances may run it at once: the deletes are idempotent.
pub fn spawn_refresh_purge(store: Store, clock: Arc<dyn Clock>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(REFRESH_PURGE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = clock.now();
            purge_refresh_once(&store, now).await;
            purge_usage_counters_once(&store, now).await;
        }
    })
}

async fn purge_refresh_once(store: &Store, now: chrono::DateTime<chrono::Utc>) {
    match store.purge_refresh_backlog(now - REFRESH_PURGE_GRACE).await {
        Ok(RefreshPurge {
            tokens: 0,
            families: 0,
        }) => {}
        Ok(RefreshPurge { tokens, families }) => {
            tracing::info!(tokens, families, "purged dead refresh tokens");
        }
        Err(error) => {
            tracing::warn!(error = %Chain(&error), "purging refresh tokens failed; retrying later")
        }
    }
}

/// Forgets single-use and few-tries counters past their keep-until time (used tickets
/// past their expiry, session keys' rejection counts after 30 days), and throttle
/// windows that ended.
async fn purge_usage_counters_once(store: &Store, now: chrono::DateTime<chrono::Utc>) {
    use miniauth_application::ports::UsageCounters;
    match store.usage_counters().purge(now).await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "purged expired usage counters"),
        Err(error) => {
            tracing::warn!(error = %Chain(&error), "purging usage counters failed; retrying later")
        }
    }
    match store.purge_attempt_counters(now).await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "purged ended throttle windows"),
        Err(error) => {
            tracing::warn!(error = %Chain(&error), "purging throttle windows failed; retrying later")
        }
    }
}

/// The simulator serves the configured apps with the same secrets, so a real client
/// configuration works against it unchanged.
pub fn simulator_config(apps: &[ResolvedApp]) -> SimConfig {
    SimConfig {
        apps: apps
            .iter()
            .map(|app| SimApp {
                appid: app.appid.clone(),
                secret: app.secret.clone(),
                unionid: app.unionid,
                kind: app.kind,
            })
            .collect(),
        faults: Default::default(),
    }
}

async fn jwt_issuer(config: &Config, store: &Store) -> anyhow::Result<JwtIssuer> {
    let settings = JwtSettings {
        issuer: config.tokens.issuer.clone(),
        audience: config.tokens.audience.clone(),
        access_ttl: chrono::Duration::seconds(config.tokens.access_ttl_secs),
    };
    match config.tokens.algorithm {
        Algorithm::Rs256 => {
            let path = config
                .tokens
                .rs256_key_file
                .as_deref()
                .context("tokens.rs256_key_file is required for RS256")?;
            let pem = std::fs::read(path).with_context(|| {
                format!("tokens.rs256_key_file: cannot read {}", path.display())
            })?;
            JwtIssuer::rs256_pem(&pem, settings)
                .map_err(|e| anyhow::anyhow!("tokens.rs256_key_file: {e}"))
        }
        Algorithm::EdDsa => {
            let der = store
                .key_material("jwt-ed25519", generate_ed25519_pkcs8)
                .await
                .context("loading the JWT signing key")?;
            JwtIssuer::ed25519(&der, settings).map_err(|e| anyhow::anyhow!("JWT key: {e}"))
        }
    }
}

/// The configured admin token; the embedded default, and SQLite with an unset
/// `token_env`, generate one into the data directory (0600) so that `miniauth demo` and
/// `curl` on the same machine can use it.
fn admin_token(
    config: &Config,
    env: &[(String, String)],
) -> anyhow::Result<(Option<AdminToken>, Option<std::path::PathBuf>)> {
    if let Some(token) = config.admin_token(env)? {
        let token = AdminToken::new(token.expose())
            .map_err(|e| anyhow::anyhow!("admin.token: {}", e.reason))?;
        return Ok((Some(token), None));
    }
    if !config.admin_token_generated(env) {
        return Ok((None, None));
    }
    let path = config.store.data_dir.join("admin.token");
    let token = read_or_create_secret_file(&path, || hex::encode(random_key_32()))?;
    let token = AdminToken::new(token.expose())
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.reason))?;
    Ok((Some(token), Some(path)))
}

/// Reads a secret file, or creates it with owner-only permissions.
pub fn read_or_create_secret_file(
    path: &Path,
    generate: impl FnOnce() -> String,
) -> anyhow::Result<Secret> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let text = text.trim().to_owned();
        if text.is_empty() {
            bail!("{} is empty", path.display());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                tracing::warn!(
                    path = %path.display(),
                    "the secret file is readable by others; chmod 600 it"
                );
            }
        }
        return Ok(Secret::new(text));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let value = generate();
    write_private(path, &value)?;
    Ok(Secret::new(value))
}

fn write_private(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(value.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `postgres://user:password@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/miniauth"),
            "postgres://app:***@db:5432/miniauth"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(
            redact_url("sqlite://data/miniauth.db"),
            "sqlite://data/miniauth.db"
        );
    }

    #[test]
    fn secret_files_are_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.token");
        let first = read_or_create_secret_file(&path, || "a".repeat(32)).unwrap();
        let second = read_or_create_secret_file(&path, || "b".repeat(32)).unwrap();
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
