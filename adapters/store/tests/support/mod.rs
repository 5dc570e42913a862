//! Test support: a fresh store per test on either engine, and tiny fakes of the ports
//! the store does not implement (WeChat, tickets, access tokens, clock, limiter).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use miniauth_application::ports::{
    AccessToken, AccessTokenError, AttemptLimiter, BrowserState, Clock, IssuedState, PortError,
    ResultClaims, ThrottleError, ThrottleKey, TicketClaims, TicketCodec, TicketError, TokenIssuer,
    TokenSubject, VerifiedPhone, WeChatApi, WeChatError, WeChatSession,
};
use miniauth_application::{
    AppCatalog, AppSettings, Lifetimes, MiniAuth, Ports, RegistrationPolicy,
};
use miniauth_domain::crypto::{encode_base64, Watermark, WatermarkPolicy};
use miniauth_domain::{AppId, OneTimeCode, OpenId, PhoneNumber, SessionKey, TenantId, UnionId};
pub use miniauth_store::Engine;
use miniauth_store::{AccountEventStore, PasswordCost, ServerKey, Store, StoreConfig};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of its own for one test, removed when dropped.
pub struct TestDb {
    pub config: StoreConfig,
    /// The clock every store of this database runs on (see [`TestClock`]).
    pub clock: Arc<TestClock>,
    pub engine: Engine,
    pub dir: PathBuf,
    pg: Option<(String, String)>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name() -> String {
    format!(
        "miniauth_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

impl TestDb {
    pub async fn new(engine: Engine) -> Self {
        let name = unique_name();
        let dir = std::env::temp_dir().join(&name);
        let base = StoreConfig {
            max_connections: 8,
            data_dir: dir.clone(),
            password_cost: PasswordCost::testing(),
            refresh_ttl: Duration::days(30),
            ..StoreConfig::default()
        };
        match engine {
            Engine::Sqlite => Self {
                config: StoreConfig {
                    url: format!("sqlite://{}/miniauth.db", dir.display()),
                    ..base
                },
                engine,
                dir,
                clock: Arc::default(),
                pg: None,
            },
            Engine::Postgres => {
                let admin = std::env::var("MINIAUTH_TEST_DATABASE_URL")
                    .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
                let mut admin_conn = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    <sqlx::PgConnection as sqlx::Connection>::connect(&admin),
                )
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
                .unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is needed for the storage contract tests and could not be \
                         reached at {admin}: {e}.\nStart one, e.g. `apt-get install postgresql && \
                         pg_ctlcluster 15 main start` (user postgres, trust auth on 127.0.0.1), or \
                         `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`, \
                         or point MINIAUTH_TEST_DATABASE_URL at a server where this user may CREATE DATABASE."
                    )
                });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin_conn)
                    .await
                    .expect("CREATE DATABASE for a test");
                let _ = sqlx::Connection::close(admin_conn).await;
                let url = match admin.rsplit_once('/') {
                    Some((server, _)) => format!("{server}/{name}"),
                    None => panic!("MINIAUTH_TEST_DATABASE_URL must end with /<database>"),
                };
                Self {
                    config: StoreConfig {
                        url,
                        server_key: Some(ServerKey::generate()),
                        ..base
                    },
                    engine,
                    dir,
                    clock: Arc::default(),
                    pg: Some((admin, name)),
                }
            }
        }
    }

    pub async fn connect(&self) -> Store {
        Store::connect(&self.config, self.clock.clone())
            .await
            .expect("connect the store")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((admin, name)) = self.pg.take() {
            // Drop runs outside any runtime we may block: use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&pool)
                                .await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}

pub const APPID: &str = "wx4f4bc4dec97d474b";
pub const TENANT: &str = "acme";

pub fn appid() -> AppId {
    AppId::parse(APPID).unwrap()
}

pub fn tenant() -> TenantId {
    TenantId::parse(TENANT).unwrap()
}

pub fn catalog(policy: RegistrationPolicy) -> AppCatalog {
    AppCatalog::new([AppSettings {
        appid: appid(),
        kind: miniauth_domain::Channel::MiniProgram,
        redirect_uris: Vec::new(),
        tenant: tenant(),
        registration: policy,
        watermark: WatermarkPolicy::default(),
        legacy_payloads: true,
        payload_rejections_per_key: miniauth_application::DEFAULT_PAYLOAD_REJECTIONS_PER_KEY,
        link_by_unionid: true,
    }])
}

/// WeChat as the tests need it: a login code `o-<openid>` or `o-<openid>-<anything>`
/// names the openid; a phone code `p-<digits>` names the number. Session keys are fresh
/// each time and remembered, so tests can look for them.
#[derive(Default)]
pub struct FakeWeChat {
    pub session_keys: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl WeChatApi for FakeWeChat {
    async fn code_to_session(
        &self,
        _: &AppId,
        code: &OneTimeCode,
    ) -> Result<WeChatSession, WeChatError> {
        let rest = code
            .expose()
            .strip_prefix("o-")
            .ok_or(WeChatError::InvalidCode)?;
        let openid = rest.split('-').next().unwrap_or(rest);
        let key_text = encode_base64(&rand::random::<[u8; 16]>());
        self.session_keys.lock().unwrap().push(key_text.clone());
        Ok(WeChatSession {
            openid: OpenId::parse(openid).map_err(|_| WeChatError::InvalidCode)?,
            // A code ending in `-union` comes from an app bound to an Open Platform
            // account: WeChat adds the unionid.
            unionid: rest
                .ends_with("-union")
                .then(|| UnionId::parse(&format!("union-{openid}")).expect("a unionid")),
            session_key: SessionKey::parse(&key_text).expect("a 16-byte key"),
        })
    }

    /// No app of the store's tests is an Official Account, a website or a mobile App:
    /// WeChat knows no OAuth code of theirs.
    async fn oauth_access_token(
        &self,
        _: &AppId,
        _: &OneTimeCode,
    ) -> Result<miniauth_application::ports::OAuthGrant, WeChatError> {
        Err(WeChatError::InvalidCode)
    }

    async fn sns_userinfo(
        &self,
        _: &miniauth_application::Secret,
        _: &OpenId,
    ) -> Result<miniauth_application::ports::SnsUserInfo, WeChatError> {
        Err(WeChatError::InvalidCode)
    }

    async fn reset_session_key(
        &self,
        _: &AppId,
        _: &OpenId,
        _: &SessionKey,
    ) -> Result<SessionKey, WeChatError> {
        let key_text = encode_base64(&rand::random::<[u8; 16]>());
        self.session_keys.lock().unwrap().push(key_text.clone());
        Ok(SessionKey::parse(&key_text).expect("a 16-byte key"))
    }

    async fn phone_number(
        &self,
        appid: &AppId,
        code: &OneTimeCode,
        _: &OpenId,
    ) -> Result<VerifiedPhone, WeChatError> {
        let digits = code
            .expose()
            .strip_prefix("p-")
            .ok_or(WeChatError::InvalidCode)?;
        Ok(VerifiedPhone {
            phone: PhoneNumber::new(digits, "86").map_err(|_| WeChatError::InvalidCode)?,
            watermark: Watermark {
                appid: appid.as_str().to_owned(),
                timestamp: Utc::now().timestamp(),
            },
        })
    }
}

/// Tickets as plain text: enough for tests, never for production.
pub struct PlainTickets;

impl TicketCodec for PlainTickets {
    fn issue(&self, c: &TicketClaims) -> String {
        format!(
            "{}|{}|{}|{}|{}{}",
            c.appid,
            c.openid,
            c.session_seq,
            c.issued_at.timestamp(),
            c.expires_at.timestamp(),
            if c.spent { "|spent" } else { "" }
        )
    }

    fn verify(&self, ticket: &str, now: DateTime<Utc>) -> Result<TicketClaims, TicketError> {
        let (ticket, spent) = match ticket.strip_suffix("|spent") {
            Some(rest) => (rest, true),
            None => (ticket, false),
        };
        let parts: Vec<&str> = ticket.split('|').collect();
        let [appid, openid, seq, issued, expires] = parts[..] else {
            return Err(TicketError::Malformed);
        };
        let at = |s: &str| {
            s.parse()
                .ok()
                .and_then(|t| DateTime::from_timestamp(t, 0))
                .ok_or(TicketError::Malformed)
        };
        let claims = TicketClaims {
            appid: AppId::parse(appid).map_err(|_| TicketError::Malformed)?,
            openid: OpenId::parse(openid).map_err(|_| TicketError::Malformed)?,
            session_seq: seq.parse().map_err(|_| TicketError::Malformed)?,
            issued_at: at(issued)?,
            expires_at: at(expires)?,
            spent,
        };
        if claims.expires_at <= now {
            return Err(TicketError::Expired);
        }
        Ok(claims)
    }

    /// A readable state (`state|appid|expires|redirect_uri`), bound to the browser key
    /// `browser`: enough for tests that never run a browser login.
    fn issue_state(&self, state: &BrowserState) -> IssuedState {
        IssuedState {
            state: format!(
                "state|{}|{}|{}",
                state.appid,
                state.expires_at.timestamp(),
                state.redirect_uri
            ),
            browser_key: "browser".to_owned(),
        }
    }

    fn verify_state(
        &self,
        state: &str,
        browser_key: &str,
        now: DateTime<Utc>,
    ) -> Result<BrowserState, TicketError> {
        let mut parts = state.splitn(4, '|');
        let (Some("state"), Some(app), Some(expires), Some(redirect_uri)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TicketError::Malformed);
        };
        if browser_key != "browser" {
            return Err(TicketError::Forged);
        }
        let expires_at = DateTime::<Utc>::from_timestamp(
            expires.parse().map_err(|_| TicketError::Malformed)?,
            0,
        )
        .ok_or(TicketError::Malformed)?;
        if expires_at <= now {
            return Err(TicketError::Expired);
        }
        Ok(BrowserState {
            appid: AppId::parse(app).map_err(|_| TicketError::Malformed)?,
            redirect_uri: redirect_uri.to_owned(),
            issued_at: expires_at,
            expires_at,
            code_challenge: String::new(),
        })
    }

    /// No browser login runs here: a handle is never issued nor accepted.
    fn issue_result(&self, _: &ResultClaims) -> String {
        String::new()
    }

    fn verify_result(&self, _: &str, _: DateTime<Utc>) -> Result<ResultClaims, TicketError> {
        Err(TicketError::Malformed)
    }
}

/// Access tokens as plain text.
pub struct PlainTokens;

impl TokenIssuer for PlainTokens {
    fn issue(&self, s: &TokenSubject, _: DateTime<Utc>) -> Result<AccessToken, PortError> {
        Ok(AccessToken {
            token: format!("{}|{}", s.user_id, s.tenant),
            expires_in: 900,
        })
    }

    fn verify(&self, _: &str, _: DateTime<Utc>) -> Result<TokenSubject, AccessTokenError> {
        Err(AccessTokenError::Invalid)
    }

    fn inspect(
        &self,
        _: &str,
        _: DateTime<Utc>,
    ) -> Result<miniauth_application::ports::VerifiedAccessToken, AccessTokenError> {
        Err(AccessTokenError::Invalid)
    }
}

pub struct SystemClock;

/// The wall clock, moved forward by what a test asks for: the store's time, so that a
/// test ages rows instead of sleeping.
#[derive(Default)]
pub struct TestClock {
    ahead: std::sync::Mutex<Duration>,
}

impl TestClock {
    /// Moves the clock `by` forward.
    pub fn advance(&self, by: Duration) {
        *self.ahead.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.ahead.lock().unwrap()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

pub struct NoLimit;

#[async_trait]
impl AttemptLimiter for NoLimit {
    async fn check(&self, _: &ThrottleKey, _: DateTime<Utc>) -> Result<(), ThrottleError> {
        Ok(())
    }
    async fn record_failure(&self, _: &ThrottleKey, _: DateTime<Utc>) -> Result<(), PortError> {
        Ok(())
    }
    async fn hit(&self, _: &ThrottleKey, _: DateTime<Utc>) -> Result<(), ThrottleError> {
        Ok(())
    }
    async fn reset(&self, _: &ThrottleKey) -> Result<(), PortError> {
        Ok(())
    }
}

/// The real use cases over this store, with fakes for the rest.
pub fn service(
    store: &Store,
    events: AccountEventStore,
    wechat: Arc<FakeWeChat>,
    policy: RegistrationPolicy,
) -> MiniAuth {
    MiniAuth::new(
        Ports {
            wechat,
            users: Arc::new(store.users()),
            registry: Arc::new(store.registry()),
            tickets: Arc::new(PlainTickets),
            tokens: Arc::new(PlainTokens),
            refresh: Arc::new(store.refresh_tokens()),
            vault: Arc::new(store.vault()),
            clock: Arc::new(SystemClock),
            limiter: Arc::new(NoLimit),
            counters: Arc::new(store.usage_counters()),
            accounts: Arc::new(events),
        },
        catalog(policy),
        Lifetimes::default(),
    )
}
