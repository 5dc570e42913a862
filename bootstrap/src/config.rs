//! The configuration file: TOML, every key overridable by `MINIAUTH__SECTION__KEY`.
//!
//! A bad configuration fails at start with the key and the reason; secrets are never
//! printed (their `Debug` is redacted).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::Serialized;
use figment::Figment;
use miniauth_application::ports::{Limit, ThrottleLimits};
use miniauth_application::RegistrationPolicy;
use miniauth_domain::{AppId, Channel, TenantId};
use miniauth_http::TrustedProxies;
use miniauth_store::PasswordConcurrency;
use serde::Deserialize;

/// The prefix of environment overrides: `MINIAUTH__STORE__URL=postgres://…`.
pub const ENV_PREFIX: &str = "MINIAUTH__";

/// The appid of the demo app that the embedded default serves with the simulator.
pub const DEMO_APPID: &str = miniauth_wechat::sim::DEMO_APPID;

/// A secret from the file or the environment: the application's one secret type.
pub use miniauth_application::Secret;

/// Where a configuration error is and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {key}: {reason}")]
pub struct ConfigError {
    /// The key, dotted (`apps[0].secret`).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Per-request timeout.
    pub request_timeout_ms: u64,
    /// Largest request body accepted (413 `body_too_large` above it).
    pub body_limit_bytes: usize,
    /// How long a client has to send a request's line and headers.
    pub header_read_timeout_ms: u64,
    /// Connections held at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` / `X-Real-IP` are believed.
    /// A list, or one comma-separated string (handy in an environment override).
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub trusted_proxies: Vec<String>,
    /// Serve `/metrics` only on this address (not on `listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// `/metrics` answers only requests with the admin token.
    pub metrics_require_admin: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default"),
            request_timeout_ms: miniauth_http::DEFAULT_REQUEST_TIMEOUT.as_millis() as u64,
            body_limit_bytes: miniauth_http::DEFAULT_BODY_LIMIT_BYTES,
            header_read_timeout_ms: 10_000,
            max_connections: 1024,
            trusted_proxies: Vec::new(),
            metrics_listen: None,
            metrics_require_admin: false,
        }
    }
}

/// A list of strings, or one string of comma-separated items.
pub(crate) fn list_or_comma_separated<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Items {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Items::deserialize(deserializer)? {
        Items::List(items) => items,
        Items::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// `[throttle]`: password attempts, logins and password hashing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSection {
    /// Failed passwords per (account, client address) within the window.
    pub password_failures_per_account_and_client: u32,
    /// Failed passwords per account, from anywhere, within the window.
    pub password_failures_per_account: u32,
    /// Failed passwords per client address, for any account, within the window.
    pub password_failures_per_client: u32,
    /// The window of failed passwords.
    pub password_window_secs: i64,
    /// Logins (`/sessions`, GitEgg `/login`) per client address within the window.
    pub logins_per_client: u32,
    /// The window of logins.
    pub login_window_secs: i64,
    /// Tries of the admin token (admin API, `/metrics`, console sign-in) per client
    /// address within the password window; a right token forgives the address's tries.
    pub admin_token_tries_per_client: u32,
    /// Tries of introspection client credentials per client address within the
    /// password window; right credentials forgive the address's tries.
    pub introspection_tries_per_client: u32,
    /// Password hashes computed at once (0: one per CPU core).
    pub password_hashes_concurrent: usize,
    /// Password checks that may wait for a turn (beyond: 503 `server_busy`); unset:
    /// four per concurrent hash.
    pub password_hash_queue: Option<usize>,
}

impl Default for ThrottleSection {
    fn default() -> Self {
        Self {
            password_failures_per_account_and_client: 5,
            password_failures_per_account: 100,
            password_failures_per_client: 50,
            password_window_secs: 900,
            logins_per_client: 60,
            login_window_secs: 60,
            admin_token_tries_per_client: 20,
            introspection_tries_per_client: 50,
            password_hashes_concurrent: 0,
            password_hash_queue: None,
        }
    }
}

impl ThrottleSection {
    /// The limits, as the use cases count them.
    pub fn limits(&self) -> ThrottleLimits {
        let password = chrono::Duration::seconds(self.password_window_secs);
        let limit = |max, window| Limit { max, window };
        ThrottleLimits {
            account_from_client: limit(self.password_failures_per_account_and_client, password),
            account: limit(self.password_failures_per_account, password),
            client: limit(self.password_failures_per_client, password),
            login: limit(
                self.logins_per_client,
                chrono::Duration::seconds(self.login_window_secs),
            ),
            operator_secret: limit(self.admin_token_tries_per_client, password),
            introspection_client: limit(self.introspection_tries_per_client, password),
        }
    }

    /// How many password hashes run and wait.
    pub fn password_concurrency(&self) -> PasswordConcurrency {
        let default = PasswordConcurrency::default();
        let concurrent = match self.password_hashes_concurrent {
            0 => default.concurrent,
            n => n,
        };
        PasswordConcurrency {
            concurrent,
            queue: self.password_hash_queue.unwrap_or(4 * concurrent),
            max_wait: default.max_wait,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `sqlite://data/miniauth.db` (default) or `postgres://…`.
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
    /// Where the embedded default keeps its files (database, server key, admin token).
    pub data_dir: PathBuf,
    /// The server key (base64 of 32 bytes) sealing session keys and data keys.
    pub server_key: Option<Secret>,
    /// The environment variable holding the server key instead.
    pub server_key_env: Option<String>,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            url: "sqlite://data/miniauth.db".into(),
            max_connections: 10,
            data_dir: PathBuf::from("data"),
            server_key: None,
            server_key_env: None,
        }
    }
}

/// Where miniauth calls WeChat: `[wechat] api_base`, written as a URL or `simulator`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum WeChatTarget {
    /// The in-process simulator (`api_base = "simulator"`).
    Simulator,
    /// WeChat's API (or a stand-in) at this http(s) base URL.
    Api(String),
}

impl TryFrom<String> for WeChatTarget {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text == "simulator" {
            Ok(Self::Simulator)
        } else if text.starts_with("http") {
            Ok(Self::Api(text))
        } else {
            Err("must be an http(s) URL or \"simulator\"".into())
        }
    }
}

/// The spelling of the configuration file.
impl std::fmt::Display for WeChatTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Simulator => f.write_str("simulator"),
            Self::Api(url) => f.write_str(url),
        }
    }
}

/// `[wechat]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeChatSection {
    /// WeChat's API base URL, or the in-process simulator.
    pub api_base: WeChatTarget,
    /// Per-request timeout.
    pub timeout_ms: u64,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Where the in-process simulator listens (its device API is for demos and tests).
    pub simulator_listen: SocketAddr,
}

impl Default for WeChatSection {
    fn default() -> Self {
        Self {
            api_base: WeChatTarget::Api("https://api.weixin.qq.com".into()),
            timeout_ms: 5_000,
            connect_timeout_ms: 2_000,
            simulator_listen: "127.0.0.1:9100".parse().expect("valid default"),
        }
    }
}

impl WeChatSection {
    /// Whether WeChat is the in-process simulator.
    pub fn is_simulator(&self) -> bool {
        self.api_base == WeChatTarget::Simulator
    }
}

/// One `[[apps]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    /// The app's AppID.
    pub appid: String,
    /// mini_program (default) | official_account | website | mobile_app.
    #[serde(default)]
    pub kind: Channel,
    /// Where the browser flow of an Official Account or a website may send the browser
    /// back: exact https URLs (http only for localhost).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Its AppSecret.
    pub secret: Option<Secret>,
    /// The environment variable holding the secret instead.
    pub secret_env: Option<String>,
    /// The tenant whose users it logs in.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// auto | existing_phone_only | closed.
    #[serde(default = "default_registration")]
    pub registration: RegistrationPolicy,
    /// Whether the app is bound to an Open Platform account (simulator only).
    #[serde(default)]
    pub unionid: bool,
    /// Oldest payload watermark accepted, in seconds; unset = not checked.
    #[serde(default)]
    pub watermark_max_age_secs: Option<i64>,
    /// Whether legacy encrypted payloads (profile and phone) are accepted.
    #[serde(default = "default_legacy_payloads")]
    pub legacy_payloads: bool,
    /// Rejected legacy payloads a session key may have before it is spent.
    #[serde(default = "default_payload_rejections_per_key")]
    pub payload_rejections_per_key: u32,
}

fn default_legacy_payloads() -> bool {
    true
}

fn default_payload_rejections_per_key() -> u32 {
    miniauth_application::DEFAULT_PAYLOAD_REJECTIONS_PER_KEY
}

fn default_tenant() -> String {
    "default".into()
}

fn default_registration() -> RegistrationPolicy {
    RegistrationPolicy::Auto
}

/// `[tokens]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensSection {
    /// Access token lifetime.
    pub access_ttl_secs: i64,
    /// Refresh token lifetime (sliding: each rotation issues a token valid this long).
    pub refresh_ttl_secs: i64,
    /// Absolute lifetime of a login session (refresh-token family): no rotation
    /// extends it; then the user logs in again. At least `refresh_ttl_secs`.
    pub refresh_max_lifetime_secs: i64,
    /// Ticket (bind key) lifetime.
    pub ticket_ttl_secs: i64,
    /// JWT `iss`.
    pub issuer: String,
    /// JWT `aud`.
    pub audience: String,
    /// `EdDSA` (default) or `RS256`.
    pub algorithm: Algorithm,
    /// PEM file of the RS256 private key (required for RS256).
    pub rs256_key_file: Option<PathBuf>,
}

impl Default for TokensSection {
    fn default() -> Self {
        Self {
            access_ttl_secs: 900,
            refresh_ttl_secs: 2_592_000,
            refresh_max_lifetime_secs: 7_776_000,
            ticket_ttl_secs: 3_600,
            issuer: "miniauth".into(),
            audience: "miniauth".into(),
            algorithm: Algorithm::EdDsa,
            rs256_key_file: None,
        }
    }
}

/// `[tokens] algorithm`: how access tokens are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Algorithm {
    /// Ed25519, with a key generated once and kept in the store.
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// RSA, with the PEM private key of `tokens.rs256_key_file`.
    #[serde(rename = "RS256")]
    Rs256,
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Bearer token of `/v1/admin`.
    pub token: Option<Secret>,
    /// The environment variable holding it instead.
    pub token_env: Option<String>,
}

/// `[console]`: the operators' console at `/console` (served when an admin token is
/// configured; docs/console.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// A console session unused this long ends (seconds; default 900).
    pub idle_timeout_secs: u64,
    /// Mark the session cookie `Secure` on every answer (set it behind TLS); without
    /// it the cookie is `Secure` when the proxy says `X-Forwarded-Proto: https`.
    pub secure_cookie: bool,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 900,
            secure_cookie: false,
        }
    }
}

/// `[compat]`: the GitEgg-compatible routes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatSection {
    /// GitEgg OAuth clients allowed on `/oauth/token` (HTTP Basic); empty = not checked.
    pub clients: Vec<CompatClient>,
    /// The DES key (8 characters) of the GitEgg deployment migrated by `miniauth import
    /// gitegg`: with `legacy_des_iv`, its bind keys are accepted for imported accounts
    /// during the transition (docs/migrating-from-gitegg.md).
    pub legacy_des_key: Option<Secret>,
    /// The DES IV (8 characters) of that deployment.
    pub legacy_des_iv: Option<Secret>,
    /// Days after its import an account still accepts the old bind keys.
    pub legacy_bind_key_days: Option<u32>,
}

/// GitEgg's DES key and IV for its bind keys.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LegacyDes {
    /// The key.
    pub key: [u8; 8],
    /// The IV.
    pub iv: [u8; 8],
}

/// The transition period of GitEgg bind keys when `legacy_bind_key_days` is not set.
pub const DEFAULT_LEGACY_BIND_KEY_DAYS: u32 = 30;

impl CompatSection {
    /// GitEgg's DES key and IV, when the bridge is configured.
    pub fn legacy_des(&self) -> Result<Option<LegacyDes>, ConfigError> {
        let eight = |key: &'static str, secret: &Secret| -> Result<[u8; 8], ConfigError> {
            secret.expose().as_bytes().try_into().map_err(|_| {
                ConfigError::new(key, "must be exactly 8 bytes, as GitEgg configures it")
            })
        };
        match (&self.legacy_des_key, &self.legacy_des_iv) {
            (None, None) => Ok(None),
            (Some(key), Some(iv)) => Ok(Some(LegacyDes {
                key: eight("compat.legacy_des_key", key)?,
                iv: eight("compat.legacy_des_iv", iv)?,
            })),
            (Some(_), None) => Err(ConfigError::new(
                "compat.legacy_des_iv",
                "is needed with compat.legacy_des_key",
            )),
            (None, Some(_)) => Err(ConfigError::new(
                "compat.legacy_des_key",
                "is needed with compat.legacy_des_iv",
            )),
        }
    }

    /// The transition period of GitEgg bind keys.
    pub fn legacy_bind_key_period(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(
            self.legacy_bind_key_days
                .unwrap_or(DEFAULT_LEGACY_BIND_KEY_DAYS),
        ))
    }
}

/// One GitEgg OAuth client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompatClient {
    /// client_id.
    pub id: String,
    /// client_secret.
    pub secret: Secret,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info,miniauth=debug`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line, for a collector.
    Json,
}

/// `[tenants.<name>]`: what holds for every app of one tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantSection {
    /// A login whose unionid is bound, through another app of the tenant, to one user
    /// is bound to that user too (docs/channels.md).
    pub link_by_unionid: bool,
}

impl Default for TenantSection {
    fn default() -> Self {
        Self {
            link_by_unionid: true,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`.
    pub server: ServerSection,
    /// `[store]`.
    pub store: StoreSection,
    /// `[wechat]`.
    pub wechat: WeChatSection,
    /// `[[apps]]`.
    pub apps: Vec<AppSection>,
    /// `[tokens]`.
    pub tokens: TokensSection,
    /// `[admin]`.
    pub admin: AdminSection,
    /// `[compat]`.
    pub compat: CompatSection,
    /// `[console]`.
    pub console: ConsoleSection,
    /// `[log]`.
    pub log: LogSection,
    /// `[throttle]`.
    pub throttle: ThrottleSection,
    /// `[tenants.<name>]`; a tenant without a section has the defaults.
    pub tenants: std::collections::BTreeMap<String, TenantSection>,
    /// `[discovery]`.
    pub discovery: crate::integration::DiscoverySection,
    /// `[[introspection_clients]]`.
    pub introspection_clients: Vec<crate::integration::IntrospectionClient>,
    /// `[[webhooks]]`.
    pub webhooks: Vec<crate::integration::WebhookSection>,
    /// `[webhook_delivery]`.
    pub webhook_delivery: crate::integration::WebhookDeliverySection,
    /// Set when no file was given: the embedded default with the simulator.
    #[serde(skip)]
    pub demo: bool,
}

/// One app, resolved: secret read, ids parsed.
#[derive(Debug, Clone)]
pub struct ResolvedApp {
    /// The AppID.
    pub appid: AppId,
    /// The kind of app.
    pub kind: Channel,
    /// The browser flow's allowed redirect URIs.
    pub redirect_uris: Vec<String>,
    /// The AppSecret.
    pub secret: Secret,
    /// The tenant.
    pub tenant: TenantId,
    /// The registration policy.
    pub registration: RegistrationPolicy,
    /// Open Platform bound (simulator).
    pub unionid: bool,
    /// Watermark maximum age.
    pub watermark_max_age: Option<chrono::Duration>,
    /// Whether legacy encrypted payloads are accepted.
    pub legacy_payloads: bool,
    /// Rejected legacy payloads a session key may have before it is spent.
    pub payload_rejections_per_key: u32,
}

impl Config {
    /// Loads `path` (or the embedded default when `None`), applies the environment
    /// overrides, and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &vars)
    }

    /// [`Config::load`] with the environment given explicitly (for tests).
    ///
    /// figment layers the overrides on the file; TOML's own deserializer then reads the
    /// merged table, so an error names the key and reads as it always has.
    pub fn load_with_env(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
                })?;
                text.parse::<toml::Table>().map_err(|e| {
                    ConfigError::new(path.display().to_string(), e.message().to_owned())
                })?
            }
            None => demo_table(),
        };
        let mut layers = Figment::from(Serialized::defaults(by_index(file.into())));
        for (name, raw) in env {
            if let Some(path) = name.strip_prefix(ENV_PREFIX) {
                layers = layers.merge(Serialized::default(&override_key(path)?, parse_scalar(raw)));
            }
        }
        let merged: toml::Value = layers
            .extract()
            .map_err(|e| ConfigError::new("configuration", e.to_string()))?;
        let mut config: Config =
            serde_path_to_error::deserialize(as_lists(merged)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::new(error_key(&key, e.inner()), e.inner().message().to_owned())
            })?;
        config.demo = path.is_none();
        config.validate(env)?;
        Ok(config)
    }

    fn validate(&self, env: &[(String, String)]) -> Result<(), ConfigError> {
        if self.apps.is_empty() {
            return Err(ConfigError::new(
                "apps",
                "configure at least one [[apps]] entry",
            ));
        }
        self.resolve_apps(env)?;
        if !(60..=86_400).contains(&self.console.idle_timeout_secs) {
            return Err(ConfigError::new(
                "console.idle_timeout_secs",
                "must be 60 to 86400 seconds",
            ));
        }
        let url = &self.store.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "store.url",
                "must start with sqlite: or postgres://",
            ));
        }
        if self.store.max_connections == 0 {
            return Err(ConfigError::new(
                "store.max_connections",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            ("tokens.access_ttl_secs", self.tokens.access_ttl_secs),
            ("tokens.refresh_ttl_secs", self.tokens.refresh_ttl_secs),
            (
                "tokens.refresh_max_lifetime_secs",
                self.tokens.refresh_max_lifetime_secs,
            ),
            ("tokens.ticket_ttl_secs", self.tokens.ticket_ttl_secs),
        ] {
            if value <= 0 {
                return Err(ConfigError::new(
                    key,
                    "must be a positive number of seconds",
                ));
            }
        }
        if self.tokens.refresh_max_lifetime_secs < self.tokens.refresh_ttl_secs {
            return Err(ConfigError::new(
                "tokens.refresh_max_lifetime_secs",
                "must be at least tokens.refresh_ttl_secs",
            ));
        }
        if self.tokens.algorithm == Algorithm::Rs256 && self.tokens.rs256_key_file.is_none() {
            return Err(ConfigError::new(
                "tokens.rs256_key_file",
                "RS256 needs a PEM private key file",
            ));
        }
        if self.wechat.timeout_ms == 0 {
            return Err(ConfigError::new("wechat.timeout_ms", "must be positive"));
        }
        self.validate_server()?;
        self.compat.legacy_des()?;
        self.throttle
            .limits()
            .validate()
            .map_err(|reason| ConfigError::new("throttle", reason))?;
        self.server_key(env)?;
        if self.server.metrics_require_admin
            && self.admin_token(env)?.is_none()
            && !self.admin_token_generated(env)
        {
            return Err(ConfigError::new(
                "server.metrics_require_admin",
                "needs an admin token ([admin] token or token_env)",
            ));
        }
        self.admin_token(env)?;
        self.public_url()?;
        self.introspection_clients(env)?;
        self.webhooks(env)?;
        Ok(())
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        if self.server.header_read_timeout_ms == 0 {
            return Err(ConfigError::new(
                "server.header_read_timeout_ms",
                "must be positive",
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.server.body_limit_bytes) {
            return Err(ConfigError::new(
                "server.body_limit_bytes",
                "must be 1024 to 16777216 (1 KiB to 16 MiB)",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        if self.server.metrics_listen == Some(self.server.listen) {
            return Err(ConfigError::new(
                "server.metrics_listen",
                "must differ from server.listen",
            ));
        }
        self.trusted_proxies()?;
        Ok(())
    }

    /// `[server] trusted_proxies`, parsed.
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, ConfigError> {
        TrustedProxies::parse(&self.server.trusted_proxies)
            .map_err(|e| ConfigError::new("server.trusted_proxies", e.to_string()))
    }

    /// The settings of `tenant` (the defaults when it has no section).
    pub fn tenant(&self, tenant: &TenantId) -> TenantSection {
        self.tenants
            .get(tenant.as_str())
            .cloned()
            .unwrap_or_default()
    }

    /// The apps with their secrets read and ids parsed.
    pub fn resolve_apps(&self, env: &[(String, String)]) -> Result<Vec<ResolvedApp>, ConfigError> {
        let mut seen = std::collections::HashSet::new();
        self.apps
            .iter()
            .enumerate()
            .map(|(i, app)| {
                let key = |field: &str| format!("apps[{i}].{field}");
                let appid = AppId::parse(&app.appid)
                    .map_err(|e| ConfigError::new(key("appid"), e.reason))?;
                if !seen.insert(appid.clone()) {
                    return Err(ConfigError::new(key("appid"), "is configured twice"));
                }
                let secret = secret_from(app.secret.as_ref(), app.secret_env.as_deref(), env)
                    .map_err(|reason| ConfigError::new(key("secret"), reason))?
                    .ok_or_else(|| ConfigError::new(key("secret"), "set secret or secret_env"))?;
                let tenant = TenantId::parse(&app.tenant)
                    .map_err(|e| ConfigError::new(key("tenant"), e.reason))?;
                let watermark_max_age = match app.watermark_max_age_secs {
                    Some(secs) if secs <= 0 => {
                        return Err(ConfigError::new(
                            key("watermark_max_age_secs"),
                            "must be positive",
                        ))
                    }
                    Some(secs) => Some(chrono::Duration::seconds(secs)),
                    None => None,
                };
                if !(1..=20).contains(&app.payload_rejections_per_key) {
                    return Err(ConfigError::new(
                        key("payload_rejections_per_key"),
                        "must be 1 to 20: each rejection is one guess for a padding oracle",
                    ));
                }
                check_redirect_uris(app.kind, &app.redirect_uris)
                    .map_err(|reason| ConfigError::new(key("redirect_uris"), reason))?;
                Ok(ResolvedApp {
                    appid,
                    kind: app.kind,
                    redirect_uris: app.redirect_uris.clone(),
                    secret,
                    tenant,
                    registration: app.registration,
                    unionid: app.unionid,
                    watermark_max_age,
                    legacy_payloads: app.legacy_payloads,
                    payload_rejections_per_key: app.payload_rejections_per_key,
                })
            })
            .collect()
    }

    /// The server key's 32 bytes, if configured.
    pub fn server_key(&self, env: &[(String, String)]) -> Result<Option<[u8; 32]>, ConfigError> {
        let key = "store.server_key";
        if self.generated_here(
            self.store.server_key.as_ref(),
            self.store.server_key_env.as_deref(),
            env,
        ) {
            // The store generates it under data_dir, as for the embedded default.
            return Ok(None);
        }
        let Some(secret) = secret_from(
            self.store.server_key.as_ref(),
            self.store.server_key_env.as_deref(),
            env,
        )
        .map_err(|reason| ConfigError::new(key, reason))?
        else {
            return Ok(None);
        };
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret.expose().trim())
            .map_err(|_| ConfigError::new(key, "must be base64"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            ConfigError::new(key, "must decode to 32 bytes (openssl rand -base64 32)")
        })?;
        Ok(Some(bytes))
    }

    /// Whether the admin token is generated into `data_dir/admin.token`: the embedded
    /// default, or SQLite with a `token_env` that is not set.
    pub fn admin_token_generated(&self, env: &[(String, String)]) -> bool {
        self.demo
            || self.generated_here(
                self.admin.token.as_ref(),
                self.admin.token_env.as_deref(),
                env,
            )
    }

    /// A secret named only by an environment variable that is not set, on SQLite: it is
    /// generated under `data_dir` (a single box needs no secret store). PostgreSQL,
    /// shared by several instances, still requires the variable.
    fn generated_here(
        &self,
        inline: Option<&Secret>,
        env_name: Option<&str>,
        env: &[(String, String)],
    ) -> bool {
        let unset = |name: &str| !env.iter().any(|(k, _)| k == name);
        inline.is_none() && env_name.is_some_and(unset) && self.store.url.starts_with("sqlite:")
    }

    /// The admin token, if configured.
    pub fn admin_token(&self, env: &[(String, String)]) -> Result<Option<Secret>, ConfigError> {
        if self.generated_here(
            self.admin.token.as_ref(),
            self.admin.token_env.as_deref(),
            env,
        ) {
            return Ok(None);
        }
        let token = secret_from(
            self.admin.token.as_ref(),
            self.admin.token_env.as_deref(),
            env,
        )
        .map_err(|reason| ConfigError::new("admin.token", reason))?;
        if token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            return Err(ConfigError::new(
                "admin.token",
                "must be at least 16 characters",
            ));
        }
        Ok(token)
    }
}

pub(crate) fn secret_from(
    inline: Option<&Secret>,
    env_name: Option<&str>,
    env: &[(String, String)],
) -> Result<Option<Secret>, String> {
    match (inline, env_name) {
        (Some(_), Some(_)) => Err("set the value or its _env variable, not both".into()),
        (Some(secret), None) if secret.expose().is_empty() => Err("is empty".into()),
        (Some(secret), None) => Ok(Some(secret.clone())),
        (None, Some(name)) => env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| Some(Secret::new(v.clone())))
            .ok_or_else(|| format!("environment variable {name} is not set")),
        (None, None) => Ok(None),
    }
}

/// An app's `redirect_uris`: only for the kinds with a browser flow; each an absolute
/// https URL without a fragment (http only for localhost, for development), compared
/// exactly at the authorize route.
/// Whether `url` is https, or http to this machine (localhost, 127.0.0.1, [::1]: tests
/// and development), with a host.
pub(crate) fn https_or_local(url: &url::Url) -> bool {
    let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    url.host_str().is_some() && (url.scheme() == "https" || (url.scheme() == "http" && local))
}

fn check_redirect_uris(kind: Channel, uris: &[String]) -> Result<(), String> {
    if uris.is_empty() {
        return Ok(());
    }
    if !kind.has_browser_flow() {
        return Err(format!(
            "only an official_account or a website has a browser flow; this app is a {kind}"
        ));
    }
    for uri in uris {
        let parsed = url::Url::parse(uri).map_err(|_| format!("{uri:?} is not an absolute URL"))?;
        if !https_or_local(&parsed) || parsed.fragment().is_some() {
            return Err(format!(
                "{uri:?} must be an https URL without a fragment (http only for localhost)"
            ));
        }
    }
    Ok(())
}

/// The embedded default: SQLite under ./data, the simulator in-process, the demo apps of
/// one Open Platform account (two mini programs, an Official Account, a website, a
/// mobile App).
fn demo_table() -> toml::Table {
    use miniauth_wechat::sim::{
        DEMO_MOBILE_APP_APPID, DEMO_MOBILE_APP_SECRET, DEMO_OFFICIAL_ACCOUNT_APPID,
        DEMO_OFFICIAL_ACCOUNT_SECRET, DEMO_SECOND_APPID, DEMO_SECOND_SECRET, DEMO_SECRET,
        DEMO_WEBSITE_APPID, DEMO_WEBSITE_SECRET,
    };
    let text = format!(
        r#"
[wechat]
api_base = "simulator"

[[apps]]
appid = "{DEMO_APPID}"
secret = "{DEMO_SECRET}"
tenant = "default"
registration = "auto"
unionid = true

# A second mini program of the same Open Platform account and tenant: a person bound in
# the first is logged in here at once (docs/channels.md).
[[apps]]
appid = "{DEMO_SECOND_APPID}"
secret = "{DEMO_SECOND_SECRET}"
tenant = "default"
registration = "auto"
unionid = true

# The shop's Official Account, website and mobile App, in the same Open Platform
# account and tenant: the same person logs in to the same user (docs/channels.md).
[[apps]]
appid = "{DEMO_OFFICIAL_ACCOUNT_APPID}"
secret = "{DEMO_OFFICIAL_ACCOUNT_SECRET}"
kind = "official_account"
tenant = "default"
unionid = true
redirect_uris = ["https://shop.example/wechat/done"]

[[apps]]
appid = "{DEMO_WEBSITE_APPID}"
secret = "{DEMO_WEBSITE_SECRET}"
kind = "website"
tenant = "default"
unionid = true
redirect_uris = ["https://shop.example/wechat/done"]

[[apps]]
appid = "{DEMO_MOBILE_APP_APPID}"
secret = "{DEMO_MOBILE_APP_SECRET}"
kind = "mobile_app"
tenant = "default"
unionid = true
"#
    );
    text.parse().expect("the demo configuration parses")
}

/// The dotted key of an override: `APPS__0__SECRET` → `apps.0.secret`.
fn override_key(path: &str) -> Result<String, ConfigError> {
    let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if parts.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            format!("{ENV_PREFIX}{path}"),
            "malformed override name",
        ));
    }
    Ok(parts.join("."))
}

/// Lists of tables become tables keyed by index, so that figment merges an override of
/// `apps.0.secret` into the first app instead of replacing the whole list.
fn by_index(value: toml::Value) -> toml::Value {
    match value {
        toml::Value::Table(table) => toml::Value::Table(
            table
                .into_iter()
                .map(|(key, value)| (key, by_index(value)))
                .collect(),
        ),
        toml::Value::Array(items)
            if !items.is_empty() && items.iter().all(toml::Value::is_table) =>
        {
            toml::Value::Table(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| (i.to_string(), by_index(item)))
                    .collect(),
            )
        }
        other => other,
    }
}

/// The inverse of [`by_index`]: a table keyed by indices is a list again; entries an
/// override skipped over are empty tables (and then fail on their missing keys).
fn as_lists(value: toml::Value) -> toml::Value {
    let toml::Value::Table(table) = value else {
        return value;
    };
    let indices: Option<Vec<usize>> = table.keys().map(|key| key.parse().ok()).collect();
    match indices {
        Some(indices) if !indices.is_empty() => {
            let len = indices.iter().max().map_or(0, |max| max + 1);
            let mut items = vec![toml::Value::Table(toml::Table::new()); len];
            for (key, value) in table {
                let index: usize = key.parse().expect("checked above");
                items[index] = as_lists(value);
            }
            toml::Value::Array(items)
        }
        _ => toml::Value::Table(
            table
                .into_iter()
                .map(|(key, value)| (key, as_lists(value)))
                .collect(),
        ),
    }
}

/// Environment values are text; numbers and booleans are recognised as such.
fn parse_scalar(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_owned()),
    }
}

/// The dotted path of the failing key; for an unknown key, the key itself.
fn error_key(path: &str, error: &toml::de::Error) -> String {
    let message = error.message();
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    match (path, unknown) {
        (".", Some(field)) => field.to_owned(),
        (".", None) => "configuration".to_owned(),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    const MINIMAL: &str = r#"
[[apps]]
appid = "wx4f4bc4dec97d474b"
secret_env = "APP_SECRET"
"#;

    #[test]
    fn no_file_means_the_embedded_demo() {
        let config = Config::load_with_env(None, &[]).unwrap();
        assert!(config.demo);
        assert!(config.wechat.is_simulator());
        assert_eq!(config.store.url, "sqlite://data/miniauth.db");
        assert_eq!(config.apps[0].appid, DEMO_APPID);
    }

    #[test]
    fn reads_secrets_from_the_environment_and_never_shows_them() {
        let file = write(MINIMAL);
        let vars = env(&[("APP_SECRET", "s3cr3t-value")]);
        let config = Config::load_with_env(Some(file.path()), &vars).unwrap();
        let apps = config.resolve_apps(&vars).unwrap();
        assert_eq!(apps[0].secret.expose(), "s3cr3t-value");
        assert!(!format!("{config:?} {apps:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn environment_overrides_any_key() {
        let file = write(MINIMAL);
        let vars = env(&[
            ("APP_SECRET", "x"),
            ("MINIAUTH__STORE__URL", "postgres://db/miniauth"),
            ("MINIAUTH__SERVER__LISTEN", "0.0.0.0:9000"),
            ("MINIAUTH__TOKENS__ACCESS_TTL_SECS", "60"),
            ("MINIAUTH__APPS__0__REGISTRATION", "closed"),
        ]);
        let config = Config::load_with_env(Some(file.path()), &vars).unwrap();
        assert_eq!(config.store.url, "postgres://db/miniauth");
        assert_eq!(config.server.listen.port(), 9000);
        assert_eq!(config.tokens.access_ttl_secs, 60);
        assert_eq!(config.apps[0].registration, RegistrationPolicy::Closed);
    }

    #[test]
    fn bad_configuration_names_the_key_and_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("[[apps]]\nappid = \"nope\"\nsecret = \"x\"\n", "apps[0].appid"),
            (MINIMAL, "apps[0].secret"),
            ("[[apps]]\nappid = \"wx4f4bc4dec97d474b\"\nsecret = \"x\"\n[store]\nurl = \"mysql://x\"\n", "store.url"),
            ("[[apps]]\nappid = \"wx4f4bc4dec97d474b\"\nsecret = \"x\"\n[server]\nlisten = \"nowhere\"\n", "server.listen"),
            ("[[apps]]\nappid = \"wx4f4bc4dec97d474b\"\nsecret = \"x\"\n[server]\nbogus = 1\n", "server.bogus"),
            ("[[apps]]\nappid = \"wx4f4bc4dec97d474b\"\nsecret = \"x\"\n[tokens]\nalgorithm = \"HS256\"\n", "tokens.algorithm"),
            ("[[apps]]\nappid = \"wx4f4bc4dec97d474b\"\nsecret = \"x\"\n[store]\nserver_key = \"AAAA\"\n", "store.server_key"),
            ("[[apps]]\nappid = \"wx4f4bc4dec97d474b\"\nsecret = \"x\"\n[tokens]\nrefresh_ttl_secs = 600\nrefresh_max_lifetime_secs = 60\n", "tokens.refresh_max_lifetime_secs"),
            ("", "apps"),
        ];
        for (text, key) in cases {
            let file = write(text);
            let err = Config::load_with_env(Some(file.path()), &[]).unwrap_err();
            assert_eq!(&err.key, key, "{text}: {err}");
        }
    }

    #[test]
    fn the_documented_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/miniauth.example.toml");
        let vars = env(&[
            (
                "MINIAUTH_SERVER_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
            ("MINIAUTH_ADMIN_TOKEN", "0123456789abcdef0123"),
        ]);
        let config = Config::load_with_env(Some(&path), &vars).unwrap();
        assert!(!config.demo);
        assert_eq!(config.apps[0].registration, RegistrationPolicy::Auto);
        assert!(config.server_key(&vars).unwrap().is_some());
    }

    #[test]
    fn the_documented_example_starts_as_it_is_on_sqlite_and_postgres_requires_its_secrets() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/miniauth.example.toml");
        // No variable set: on SQLite the server key and the admin token are generated.
        let config = Config::load_with_env(Some(&path), &[]).unwrap();
        assert!(config.server_key(&[]).unwrap().is_none());
        assert!(config.admin_token(&[]).unwrap().is_none());
        assert!(config.admin_token_generated(&[]));
        // A variable that is set is used.
        let vars = env(&[("MINIAUTH_ADMIN_TOKEN", "0123456789abcdef0123")]);
        assert!(config.admin_token(&vars).unwrap().is_some());
        assert!(!config.admin_token_generated(&vars));
        // PostgreSQL: several instances must share them, so the variables are required.
        let vars = env(&[("MINIAUTH__STORE__URL", "postgres://miniauth@db/miniauth")]);
        let err = Config::load_with_env(Some(&path), &vars).unwrap_err();
        assert_eq!(err.key, "store.server_key", "{err}");
        let vars = env(&[
            ("MINIAUTH__STORE__URL", "postgres://miniauth@db/miniauth"),
            (
                "MINIAUTH_SERVER_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
        ]);
        let err = Config::load_with_env(Some(&path), &vars).unwrap_err();
        assert_eq!(err.key, "admin.token", "{err}");
    }

    #[test]
    fn trusted_proxies_come_as_a_list_or_a_comma_separated_override() {
        let file = write(&format!(
            "{MINIMAL}[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n"
        ));
        let vars = env(&[("APP_SECRET", "x")]);
        let config = Config::load_with_env(Some(file.path()), &vars).unwrap();
        assert_eq!(config.server.trusted_proxies, ["10.0.0.0/8", "127.0.0.1"]);
        let vars = env(&[
            ("APP_SECRET", "x"),
            ("MINIAUTH__SERVER__TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8"),
        ]);
        let config = Config::load_with_env(Some(file.path()), &vars).unwrap();
        assert_eq!(config.server.trusted_proxies, ["10.0.0.0/8", "fd00::/8"]);
        let vars = env(&[
            ("APP_SECRET", "x"),
            ("MINIAUTH__SERVER__TRUSTED_PROXIES", "10.0.0.0/33"),
        ]);
        let err = Config::load_with_env(Some(file.path()), &vars).unwrap_err();
        assert_eq!(err.key, "server.trusted_proxies");
    }

    #[test]
    fn server_limits_and_throttles_are_checked() {
        let vars = env(&[("APP_SECRET", "x")]);
        for (extra, key) in [
            ("[server]\nmax_connections = 0\n", "server.max_connections"),
            (
                "[server]\nbody_limit_bytes = 10\n",
                "server.body_limit_bytes",
            ),
            (
                "[server]\nheader_read_timeout_ms = 0\n",
                "server.header_read_timeout_ms",
            ),
            (
                "[server]\nmetrics_require_admin = true\n",
                "server.metrics_require_admin",
            ),
            ("[throttle]\nlogins_per_client = 0\n", "throttle"),
        ] {
            let file = write(&format!("{MINIMAL}{extra}"));
            let err = Config::load_with_env(Some(file.path()), &vars).unwrap_err();
            assert_eq!(err.key, key, "{extra}");
        }
    }

    #[test]
    fn choices_are_read_into_their_enums_and_refused_by_key() {
        let file = write(&format!(
            "{MINIMAL}[wechat]\napi_base = \"http://127.0.0.1:9\"\n[log]\nformat = \"json\"\n"
        ));
        let vars = env(&[("APP_SECRET", "x")]);
        let config = Config::load_with_env(Some(file.path()), &vars).unwrap();
        assert_eq!(
            config.wechat.api_base,
            WeChatTarget::Api("http://127.0.0.1:9".into())
        );
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.tokens.algorithm, Algorithm::EdDsa);
        let vars = env(&[
            ("APP_SECRET", "x"),
            ("MINIAUTH__WECHAT__API_BASE", "simulator"),
            ("MINIAUTH__TOKENS__ALGORITHM", "RS256"),
            ("MINIAUTH__TOKENS__RS256_KEY_FILE", "/etc/miniauth/jwt.pem"),
        ]);
        let config = Config::load_with_env(Some(file.path()), &vars).unwrap();
        assert_eq!(config.wechat.api_base, WeChatTarget::Simulator);
        assert_eq!(config.tokens.algorithm, Algorithm::Rs256);
        for (extra, key) in [
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[wechat]\napi_base = \"simulatr\"\n", "wechat.api_base"),
            ("[tokens]\nalgorithm = \"RS256\"\n", "tokens.rs256_key_file"),
        ] {
            let file = write(&format!("{MINIMAL}{extra}"));
            let err = Config::load_with_env(Some(file.path()), &vars[..1]).unwrap_err();
            assert_eq!(err.key, key, "{extra}");
        }
    }

    #[test]
    fn an_override_changes_one_list_entry_and_leaves_the_others() {
        let file = write(&format!(
            "{MINIMAL}\n[[apps]]\nappid = \"wx0000000000000002\"\nsecret = \"y\"\n"
        ));
        let vars = env(&[("APP_SECRET", "x"), ("MINIAUTH__APPS__1__TENANT", "second")]);
        let config = Config::load_with_env(Some(file.path()), &vars).unwrap();
        assert_eq!(config.apps.len(), 2);
        assert_eq!(config.apps[0].appid, "wx4f4bc4dec97d474b");
        assert_eq!(config.apps[0].tenant, "default");
        assert_eq!(config.apps[1].appid, "wx0000000000000002");
        assert_eq!(config.apps[1].tenant, "second");
        let vars = env(&[("APP_SECRET", "x"), ("MINIAUTH__STORE____URL", "x")]);
        let err = Config::load_with_env(Some(file.path()), &vars).unwrap_err();
        assert_eq!(err.key, "MINIAUTH__STORE____URL");
    }

    #[test]
    fn a_bad_secret_is_not_echoed_in_the_error() {
        let file = write("[[apps]]\nappid = \"wx4f4bc4dec97d474b\"\nsecret = \"x\"\n[admin]\ntoken = \"short-secret\"\n");
        let err = Config::load_with_env(Some(file.path()), &[]).unwrap_err();
        assert_eq!(err.key, "admin.token");
        assert!(!err.to_string().contains("short-secret"));
    }
}
