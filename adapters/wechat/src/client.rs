//! The WeChat server API client: code2session, the stable access token,
//! getuserphonenumber, checksession and resetusersessionkey, and the OAuth code
//! exchange and userinfo of the other channels (Official Account, website, mobile App).
//!
//! Two rules shape it. A call whose code WeChat may have consumed is replayed only when
//! WeChat certainly did not process it (`-1`, or the connection never opened): after a
//! timeout or a 5xx the code may be spent, and a replay would turn a success into 40163.
//! And secrets never leave it except on the wire: reqwest's errors carry the URL (with
//! `secret` or `access_token` in the query), so they are never logged or returned as is.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::{self, BoxFuture, FutureExt, Shared};
use miniauth_application::ports::{
    OAuthGrant, SnsUserInfo, VerifiedPhone, WeChatApi, WeChatError, WeChatSession,
};
use miniauth_domain::crypto::{session_hmac, string_or_number, Watermark};
use miniauth_domain::{AppId, OneTimeCode, OpenId, PhoneNumber, SessionKey, UnionId};
use rand::Rng;
use reqwest::RequestBuilder;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{ClientConfig, ConfigError, RetryPolicy, Secret};
use crate::errcode;

/// How long a login code lives at WeChat, and so how long its result is remembered.
pub const LOGIN_CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Where WeChat's consent pages are (Official Account authorize, website QR login).
pub const OPEN_BASE: &str = "https://open.weixin.qq.com";

/// The access token is refreshed this long before WeChat says it expires.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The most login-code results remembered at once; beyond it, codes are not
/// deduplicated until expired entries make room (memory stays bounded under a flood).
const MAX_REMEMBERED_CODES: usize = 100_000;

/// How often the code memory is swept of expired entries.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// An access token of one app. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct WeChatAccessToken(String);

impl WeChatAccessToken {
    /// The token, to put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WeChatAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeChatAccessToken(<redacted>)")
    }
}

/// What checksession said about a session key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// The key is the user's current session key.
    Valid,
    /// WeChat answered 87009: the key is not (or no longer) the user's session key.
    Invalid,
}

/// The WeChat server API client. Cheap to clone: clones share the token cache and the
/// login-code memory.
#[derive(Clone)]
pub struct WeChatClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for WeChatClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut appids: Vec<&str> = self.inner.apps.keys().map(AppId::as_str).collect();
        appids.sort_unstable();
        f.debug_struct("WeChatClient")
            .field("api_base", &self.inner.api_base)
            .field("apps", &appids)
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    api_base: String,
    open_base: String,
    retry: RetryPolicy,
    apps: HashMap<AppId, App>,
    codes: Mutex<CodeMemory>,
}

struct App {
    appid: AppId,
    secret: Secret,
    token: tokio::sync::Mutex<TokenSlot>,
}

#[derive(Default)]
struct TokenSlot {
    current: Option<CachedToken>,
    /// A token WeChat refused (40001/40014/42001): if the stable token endpoint hands
    /// it out again, the next fetch forces a refresh.
    rejected: Option<String>,
    /// The last failed fetch: callers that queued before it share its error instead of
    /// each trying again in turn.
    last_failure: Option<(Instant, WeChatError)>,
}

struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// What a one-time login code was exchanged for: code2session's answer (a mini
/// program) or the OAuth code exchange's (the other channels).
#[derive(Clone)]
enum CodeAnswer {
    Session(WeChatSession),
    OAuth(OAuthGrant),
}

type SessionFuture = Shared<BoxFuture<'static, Result<CodeAnswer, WeChatError>>>;

struct CodeMemory {
    entries: HashMap<(AppId, String), CodeEntry>,
    last_sweep: Instant,
}

struct CodeEntry {
    asked_at: Instant,
    result: SessionFuture,
}

/// Why one call failed, before it becomes a [`WeChatError`].
enum Failure {
    /// WeChat answered this errcode (not -1).
    ErrCode { code: i64, message: String },
    /// Busy, 5xx or transport failure, and no (more) retries allowed.
    Unavailable,
    /// The answer is not what WeChat sends; the text names no secret.
    Malformed(String),
    /// Already typed (the access token could not be had).
    Typed(WeChatError),
}

/// Whether a call may be sent again after a failure whose effect is unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Idempotent: replay after timeouts and 5xx too.
    Always,
    /// Consumes a code or rotates a key: replay only what WeChat did not process.
    OnlyUnprocessed,
}

enum Attempt {
    Answer(Value),
    Final(Failure),
    /// WeChat certainly did not process it (-1, connection never opened).
    Unprocessed(&'static str),
    /// WeChat may have processed it (timeout, 5xx, broken answer).
    Ambiguous(&'static str),
}

impl WeChatClient {
    /// Builds the client; fails on a bad configuration.
    pub fn new(config: ClientConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("miniauth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Http(e.without_url().to_string()))?;
        let apps = config
            .apps
            .into_iter()
            .map(|creds| {
                let app = App {
                    appid: creds.appid.clone(),
                    secret: creds.secret,
                    token: tokio::sync::Mutex::new(TokenSlot::default()),
                };
                (creds.appid, app)
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                api_base: config.api_base.trim_end_matches('/').to_owned(),
                open_base: OPEN_BASE.to_owned(),
                retry: config.retry,
                apps,
                codes: Mutex::new(CodeMemory {
                    entries: HashMap::new(),
                    last_sweep: Instant::now(),
                }),
            }),
        })
    }

    /// The client with WeChat's consent pages at `open_base` instead of
    /// [`OPEN_BASE`] (the simulator's base, when it plays WeChat). Call it before the
    /// client is cloned: clones made earlier keep the old base.
    pub fn with_open_base(mut self, open_base: String) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.open_base = open_base.trim_end_matches('/').to_owned();
        }
        self
    }

    /// The app's stable access token, from the cache while it has more than
    /// [`TOKEN_REFRESH_MARGIN`] to live; one fetch per app at a time, however many wait.
    pub async fn access_token(&self, appid: &AppId) -> Result<WeChatAccessToken, WeChatError> {
        let app = self.inner.app(appid)?;
        self.inner.access_token(app).await.map(WeChatAccessToken)
    }

    /// checksession: whether `session_key` is still the user's current session key.
    pub async fn check_session(
        &self,
        appid: &AppId,
        openid: &OpenId,
        session_key: &SessionKey,
    ) -> Result<SessionStatus, WeChatError> {
        self.inner.check_session(appid, openid, session_key).await
    }

    /// resetusersessionkey: makes WeChat issue a new session key (the old one dies at
    /// once) and returns it.
    pub async fn reset_session_key(
        &self,
        appid: &AppId,
        openid: &OpenId,
        session_key: &SessionKey,
    ) -> Result<SessionKey, WeChatError> {
        self.inner
            .reset_session_key(appid, openid, session_key)
            .await
    }
}

#[async_trait]
impl WeChatApi for WeChatClient {
    /// code2session, remembered per code ([`WeChatClient::exchange_once`]).
    async fn code_to_session(
        &self,
        appid: &AppId,
        code: &OneTimeCode,
    ) -> Result<WeChatSession, WeChatError> {
        let answer = self
            .exchange_once(appid, code, |inner, appid, code| {
                async move {
                    inner
                        .code_to_session(&appid, &code)
                        .await
                        .map(CodeAnswer::Session)
                }
                .boxed()
            })
            .await?;
        match answer {
            CodeAnswer::Session(session) => Ok(session),
            // The code was answered at the other endpoint already.
            CodeAnswer::OAuth(_) => Err(WeChatError::CodeAlreadyAnswered),
        }
    }

    /// `/sns/oauth2/access_token`, remembered per code like code2session.
    async fn oauth_access_token(
        &self,
        appid: &AppId,
        code: &OneTimeCode,
    ) -> Result<OAuthGrant, WeChatError> {
        let answer = self
            .exchange_once(appid, code, |inner, appid, code| {
                async move {
                    inner
                        .oauth_access_token(&appid, &code)
                        .await
                        .map(CodeAnswer::OAuth)
                }
                .boxed()
            })
            .await?;
        match answer {
            CodeAnswer::OAuth(grant) => Ok(grant),
            CodeAnswer::Session(_) => Err(WeChatError::CodeAlreadyAnswered),
        }
    }

    async fn sns_userinfo(
        &self,
        access_token: &miniauth_application::Secret,
        openid: &OpenId,
    ) -> Result<SnsUserInfo, WeChatError> {
        self.inner.sns_userinfo(access_token, openid).await
    }

    fn open_base(&self) -> String {
        self.inner.open_base.clone()
    }

    async fn phone_number(
        &self,
        appid: &AppId,
        code: &OneTimeCode,
        openid: &OpenId,
    ) -> Result<VerifiedPhone, WeChatError> {
        self.inner.phone_number(appid, code, openid).await
    }

    async fn reset_session_key(
        &self,
        appid: &AppId,
        openid: &OpenId,
        session_key: &SessionKey,
    ) -> Result<SessionKey, WeChatError> {
        self.inner
            .reset_session_key(appid, openid, session_key)
            .await
    }
}

impl WeChatClient {
    /// One exchange of a one-time code, whatever the endpoint (`start`). Concurrent
    /// calls with one (appid, code) share one WeChat call and its answer; once it is
    /// answered, the code is remembered for its life and a replay gets
    /// [`WeChatError::CodeAlreadyAnswered`] (a code yields credentials once) instead of
    /// WeChat's 40163. WeChat's final refusals are remembered as they are. Transient
    /// failures (unavailable, rate limited, app misconfigured) are not remembered:
    /// WeChat did not consume the code, or may not have, so a later retry may ask again.
    async fn exchange_once(
        &self,
        appid: &AppId,
        code: &OneTimeCode,
        start: impl FnOnce(
            Arc<Inner>,
            AppId,
            OneTimeCode,
        ) -> BoxFuture<'static, Result<CodeAnswer, WeChatError>>,
    ) -> Result<CodeAnswer, WeChatError> {
        // Fail fast for an unknown app, without occupying the memory.
        self.inner.app(appid)?;
        let key = (appid.clone(), code.expose().to_owned());
        let shared = self.inner.remembered_or_started(&key, code, start);
        let result = shared.clone().await;
        if let Err(error) = &result {
            if !is_definitive(error) {
                self.inner.forget(&key, &shared);
            }
        }
        result
    }
}

/// Whether an error is WeChat's final word on a code (worth remembering).
fn is_definitive(error: &WeChatError) -> bool {
    matches!(
        error,
        WeChatError::InvalidCode
            | WeChatError::CodeUsed
            | WeChatError::BlockedUser
            | WeChatError::Unknown { .. }
    )
}

#[derive(Deserialize)]
struct SessionAnswer {
    openid: String,
    session_key: String,
    #[serde(default)]
    unionid: Option<String>,
}

#[derive(Deserialize)]
struct OAuthAnswer {
    access_token: String,
    openid: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    unionid: Option<String>,
    #[serde(default)]
    is_snapshotuser: Option<i64>,
}

#[derive(Deserialize)]
struct UserInfoAnswer {
    openid: String,
    #[serde(default)]
    nickname: String,
    #[serde(default)]
    headimgurl: String,
    #[serde(default)]
    unionid: Option<String>,
}

/// A unionid as WeChat sends it: absent or empty is none.
fn unionid_of(endpoint: &str, unionid: Option<String>) -> Result<Option<UnionId>, WeChatError> {
    unionid
        .filter(|u| !u.is_empty())
        .map(|u| UnionId::parse(&u))
        .transpose()
        .map_err(|_| malformed(endpoint, "unionid is not a valid unionid"))
}

fn openid_of(endpoint: &str, openid: &str) -> Result<OpenId, WeChatError> {
    OpenId::parse(openid).map_err(|_| malformed(endpoint, "openid is not a valid openid"))
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct PhoneAnswer {
    phone_info: PhoneInfo,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PhoneInfo {
    pure_phone_number: String,
    #[serde(deserialize_with = "string_or_number")]
    country_code: String,
    watermark: Watermark,
}

#[derive(Deserialize)]
struct ResetAnswer {
    session_key: String,
}

impl Inner {
    fn app(&self, appid: &AppId) -> Result<&App, WeChatError> {
        self.apps.get(appid).ok_or_else(|| {
            tracing::error!(%appid, "no WeChat credentials are configured for this app");
            WeChatError::BadAppCredentials
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_base)
    }

    fn unavailable(&self) -> WeChatError {
        WeChatError::Unavailable {
            retry_after_secs: self.retry.retry_after.as_secs().max(1),
        }
    }

    fn to_error(&self, failure: Failure) -> WeChatError {
        match failure {
            Failure::ErrCode { code, message } => {
                errcode::to_error(code, &message, self.retry.retry_after.as_secs().max(1))
            }
            Failure::Unavailable => self.unavailable(),
            Failure::Malformed(message) => WeChatError::Unknown { code: 0, message },
            Failure::Typed(error) => error,
        }
    }

    /// The shared call for this code: remembered, or started now.
    fn remembered_or_started(
        self: &Arc<Self>,
        key: &(AppId, String),
        code: &OneTimeCode,
        start: impl FnOnce(
            Arc<Inner>,
            AppId,
            OneTimeCode,
        ) -> BoxFuture<'static, Result<CodeAnswer, WeChatError>>,
    ) -> SessionFuture {
        let mut memory = self.codes.lock().expect("code memory lock poisoned");
        let now = Instant::now();
        if now.duration_since(memory.last_sweep) >= SWEEP_INTERVAL
            || memory.entries.len() >= MAX_REMEMBERED_CODES
        {
            memory
                .entries
                .retain(|_, entry| now.duration_since(entry.asked_at) < LOGIN_CODE_LIFETIME);
            memory.last_sweep = now;
        }
        if let Some(entry) = memory.entries.get(key) {
            if now.duration_since(entry.asked_at) < LOGIN_CODE_LIFETIME {
                return match entry.result.peek() {
                    // Answered already: the code has yielded its credentials, once. A
                    // replay (a code from a proxy's log) gets no second session.
                    Some(Ok(_)) => future::ready(Err(WeChatError::CodeAlreadyAnswered))
                        .boxed()
                        .shared(),
                    // Still in flight: concurrent duplicates share the one call.
                    _ => entry.result.clone(),
                };
            }
        }
        // A task of its own: the call completes (and is remembered) even when the
        // request that started it is cancelled by its client.
        let task = tokio::spawn(start(Arc::clone(self), key.0.clone(), code.clone()));
        let unavailable = self.unavailable();
        let result = async move { task.await.unwrap_or(Err(unavailable)) }
            .boxed()
            .shared();
        if memory.entries.len() < MAX_REMEMBERED_CODES {
            memory.entries.insert(
                key.clone(),
                CodeEntry {
                    asked_at: now,
                    result: result.clone(),
                },
            );
        }
        result
    }

    fn forget(&self, key: &(AppId, String), shared: &SessionFuture) {
        let mut memory = self.codes.lock().expect("code memory lock poisoned");
        if memory
            .entries
            .get(key)
            .is_some_and(|entry| entry.result.ptr_eq(shared))
        {
            memory.entries.remove(key);
        }
    }

    async fn code_to_session(
        &self,
        appid: &AppId,
        code: &OneTimeCode,
    ) -> Result<WeChatSession, WeChatError> {
        let app = self.app(appid)?;
        let url = self.url("/sns/jscode2session");
        let answer = self
            .call("jscode2session", Replay::OnlyUnprocessed, || {
                self.http.get(&url).query(&[
                    ("appid", app.appid.as_str()),
                    ("secret", app.secret.expose()),
                    ("js_code", code.expose()),
                    ("grant_type", "authorization_code"),
                ])
            })
            .await
            .map_err(|f| self.to_error(f))?;
        let answer: SessionAnswer = parse_answer("jscode2session", answer)?;
        Ok(WeChatSession {
            openid: openid_of("jscode2session", &answer.openid)?,
            unionid: unionid_of("jscode2session", answer.unionid)?,
            session_key: SessionKey::parse(&answer.session_key).map_err(|_| {
                malformed("jscode2session", "session_key is not 24 base64 characters")
            })?,
        })
    }

    /// The OAuth code exchange. Like code2session it consumes the code: replayed only
    /// when WeChat certainly did not process it. The access token is for
    /// `/sns/userinfo` only; it goes nowhere else (and never into a log).
    async fn oauth_access_token(
        &self,
        appid: &AppId,
        code: &OneTimeCode,
    ) -> Result<OAuthGrant, WeChatError> {
        const ENDPOINT: &str = "oauth2/access_token";
        let app = self.app(appid)?;
        let url = self.url("/sns/oauth2/access_token");
        let answer = self
            .call(ENDPOINT, Replay::OnlyUnprocessed, || {
                self.http.get(&url).query(&[
                    ("appid", app.appid.as_str()),
                    ("secret", app.secret.expose()),
                    ("code", code.expose()),
                    ("grant_type", "authorization_code"),
                ])
            })
            .await
            .map_err(|f| self.to_error(f))?;
        let answer: OAuthAnswer = parse_answer(ENDPOINT, answer)?;
        if answer.access_token.is_empty() {
            return Err(malformed(ENDPOINT, "access_token is empty"));
        }
        Ok(OAuthGrant {
            openid: openid_of(ENDPOINT, &answer.openid)?,
            unionid: unionid_of(ENDPOINT, answer.unionid)?,
            scopes: answer
                .scope
                .split(',')
                .map(str::trim)
                .filter(|scope| !scope.is_empty())
                .map(str::to_owned)
                .collect(),
            snapshot_user: answer.is_snapshotuser == Some(1),
            access_token: miniauth_application::Secret::new(answer.access_token),
        })
    }

    /// `/sns/userinfo`: reads, so replayed after any failure.
    async fn sns_userinfo(
        &self,
        access_token: &miniauth_application::Secret,
        openid: &OpenId,
    ) -> Result<SnsUserInfo, WeChatError> {
        const ENDPOINT: &str = "userinfo";
        let url = self.url("/sns/userinfo");
        let answer = self
            .call(ENDPOINT, Replay::Always, || {
                self.http.get(&url).query(&[
                    ("access_token", access_token.expose()),
                    ("openid", openid.as_str()),
                    ("lang", "zh_CN"),
                ])
            })
            .await
            .map_err(|f| self.to_error(f))?;
        let answer: UserInfoAnswer = parse_answer(ENDPOINT, answer)?;
        Ok(SnsUserInfo {
            openid: openid_of(ENDPOINT, &answer.openid)?,
            nickname: answer.nickname,
            avatar_url: answer.headimgurl,
            unionid: unionid_of(ENDPOINT, answer.unionid)?,
        })
    }

    async fn phone_number(
        &self,
        appid: &AppId,
        code: &OneTimeCode,
        openid: &OpenId,
    ) -> Result<VerifiedPhone, WeChatError> {
        let app = self.app(appid)?;
        let url = self.url("/wxa/business/getuserphonenumber");
        let body = json!({ "code": code.expose(), "openid": openid.as_str() });
        let answer = self
            .call_with_token(
                app,
                "getuserphonenumber",
                Replay::OnlyUnprocessed,
                |token| {
                    self.http
                        .post(&url)
                        .query(&[("access_token", token)])
                        .json(&body)
                },
            )
            .await
            .map_err(|f| self.to_error(f))?;
        let answer: PhoneAnswer = parse_answer("getuserphonenumber", answer)?;
        let info = answer.phone_info;
        let phone = PhoneNumber::new(&info.pure_phone_number, &info.country_code).map_err(|e| {
            malformed(
                "getuserphonenumber",
                &format!("phone_info has an invalid {}", e.field),
            )
        })?;
        Ok(VerifiedPhone {
            phone,
            watermark: info.watermark,
        })
    }

    async fn check_session(
        &self,
        appid: &AppId,
        openid: &OpenId,
        session_key: &SessionKey,
    ) -> Result<SessionStatus, WeChatError> {
        let app = self.app(appid)?;
        let url = self.url("/wxa/checksession");
        let signature = session_hmac(session_key, "");
        let answer = self
            .call_with_token(app, "checksession", Replay::Always, |token| {
                self.http.get(&url).query(&[
                    ("access_token", token),
                    ("openid", openid.as_str()),
                    ("signature", signature.as_str()),
                    ("sig_method", "hmac_sha256"),
                ])
            })
            .await;
        match answer {
            Ok(_) => Ok(SessionStatus::Valid),
            Err(Failure::ErrCode { code, .. }) if code == errcode::INVALID_SIGNATURE => {
                Ok(SessionStatus::Invalid)
            }
            Err(failure) => Err(self.to_error(failure)),
        }
    }

    async fn reset_session_key(
        &self,
        appid: &AppId,
        openid: &OpenId,
        session_key: &SessionKey,
    ) -> Result<SessionKey, WeChatError> {
        let app = self.app(appid)?;
        let url = self.url("/wxa/resetusersessionkey");
        let signature = session_hmac(session_key, "");
        // Not replayed after an ambiguous failure: if the reset went through, the old
        // key (and so the signature) is already dead and a replay gets 87009.
        let answer = self
            .call_with_token(
                app,
                "resetusersessionkey",
                Replay::OnlyUnprocessed,
                |token| {
                    self.http.get(&url).query(&[
                        ("access_token", token),
                        ("openid", openid.as_str()),
                        ("signature", signature.as_str()),
                        ("sig_method", "hmac_sha256"),
                    ])
                },
            )
            .await
            .map_err(|f| self.to_error(f))?;
        let answer: ResetAnswer = parse_answer("resetusersessionkey", answer)?;
        SessionKey::parse(&answer.session_key).map_err(|_| {
            malformed(
                "resetusersessionkey",
                "session_key is not 24 base64 characters",
            )
        })
    }

    async fn access_token(&self, app: &App) -> Result<String, WeChatError> {
        let asked_at = Instant::now();
        let mut slot = app.token.lock().await;
        if let Some(cached) = &slot.current {
            if Instant::now() < cached.refresh_at {
                return Ok(cached.token.clone());
            }
        }
        if let Some((failed_at, error)) = &slot.last_failure {
            if *failed_at >= asked_at {
                return Err(error.clone());
            }
        }
        match self.fetch_token(app, slot.rejected.as_deref()).await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                slot.current = Some(fresh);
                slot.rejected = None;
                slot.last_failure = None;
                Ok(token)
            }
            Err(error) => {
                slot.last_failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    async fn fetch_token(
        &self,
        app: &App,
        rejected: Option<&str>,
    ) -> Result<CachedToken, WeChatError> {
        let fresh = self.stable_token(app, false).await?;
        if rejected == Some(fresh.token.as_str()) {
            tracing::info!(appid = %app.appid, "WeChat refused its own stable token; forcing a refresh");
            return self.stable_token(app, true).await;
        }
        Ok(fresh)
    }

    async fn stable_token(
        &self,
        app: &App,
        force_refresh: bool,
    ) -> Result<CachedToken, WeChatError> {
        let url = self.url("/cgi-bin/stable_token");
        let body = json!({
            "grant_type": "client_credential",
            "appid": app.appid.as_str(),
            "secret": app.secret.expose(),
            "force_refresh": force_refresh,
        });
        // A forced refresh spends a daily quota: replay it only when WeChat did not see it.
        let replay = if force_refresh {
            Replay::OnlyUnprocessed
        } else {
            Replay::Always
        };
        let asked_at = Instant::now();
        let answer = self
            .call("stable_token", replay, || self.http.post(&url).json(&body))
            .await
            .map_err(|f| self.to_error(f))?;
        let answer: TokenAnswer = parse_answer("stable_token", answer)?;
        if answer.access_token.is_empty() {
            return Err(malformed("stable_token", "access_token is empty"));
        }
        let lifetime = Duration::from_secs(answer.expires_in);
        // WeChat rotates the stable token 5 minutes before it expires; an answer with
        // less left than that is kept for half of what remains.
        let keep = lifetime
            .checked_sub(TOKEN_REFRESH_MARGIN)
            .filter(|keep| !keep.is_zero())
            .unwrap_or(lifetime / 2);
        Ok(CachedToken {
            token: answer.access_token,
            refresh_at: asked_at + keep,
        })
    }

    async fn invalidate_token(&self, app: &App, refused: &str) {
        let mut slot = app.token.lock().await;
        // Only the token that was refused: another caller may have refreshed already.
        if slot
            .current
            .as_ref()
            .is_some_and(|cached| cached.token == refused)
        {
            slot.current = None;
            slot.rejected = Some(refused.to_owned());
        }
    }

    /// A call that needs the access token: on 40001/40014/42001 the token is fetched
    /// again and the call is sent once more (WeChat did not process it).
    async fn call_with_token(
        &self,
        app: &App,
        endpoint: &'static str,
        replay: Replay,
        build: impl Fn(&str) -> RequestBuilder,
    ) -> Result<Value, Failure> {
        let mut refreshed = false;
        loop {
            let token = self.access_token(app).await.map_err(Failure::Typed)?;
            match self.call(endpoint, replay, || build(&token)).await {
                Err(Failure::ErrCode { code, .. })
                    if errcode::is_token_error(code) && !refreshed =>
                {
                    tracing::info!(appid = %app.appid, endpoint, errcode = code, "WeChat refused the access token; refreshing it once");
                    self.invalidate_token(app, &token).await;
                    refreshed = true;
                }
                other => return other,
            }
        }
    }

    /// Sends a request with bounded, jittered retries.
    async fn call(
        &self,
        endpoint: &'static str,
        replay: Replay,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Value, Failure> {
        let max = self.retry.max_attempts.max(1);
        for attempt in 1..=max {
            let reason = match self.attempt(endpoint, build()).await {
                Attempt::Answer(value) => return Ok(value),
                Attempt::Final(failure) => return Err(failure),
                Attempt::Unprocessed(reason) => reason,
                Attempt::Ambiguous(reason) if replay == Replay::Always => reason,
                Attempt::Ambiguous(reason) => {
                    tracing::warn!(
                        endpoint,
                        attempt,
                        reason,
                        "WeChat call failed; not replayed, WeChat may have processed it"
                    );
                    return Err(Failure::Unavailable);
                }
            };
            tracing::warn!(endpoint, attempt, max, reason, "WeChat call failed");
            if attempt < max {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
        }
        Err(Failure::Unavailable)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry
            .base_delay
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.retry.max_delay);
        exp.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    async fn attempt(&self, endpoint: &'static str, request: RequestBuilder) -> Attempt {
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_connect() => return Attempt::Unprocessed("connect failed"),
            Err(e) if e.is_timeout() => return Attempt::Ambiguous("timed out"),
            Err(_) => return Attempt::Ambiguous("transport error"),
        };
        let status = response.status();
        if status.is_server_error() {
            return Attempt::Ambiguous("HTTP 5xx");
        }
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) if e.is_timeout() => return Attempt::Ambiguous("timed out reading the answer"),
            Err(_) => return Attempt::Ambiguous("answer cut off"),
        };
        if !status.is_success() {
            return Attempt::Final(Failure::Malformed(format!(
                "unexpected HTTP status {}",
                status.as_u16()
            )));
        }
        let value: Value = match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(e) => {
                return Attempt::Final(Failure::Malformed(format!(
                    "WeChat's answer is not JSON (line {}, column {})",
                    e.line(),
                    e.column()
                )))
            }
        };
        match value.get("errcode").and_then(Value::as_i64).unwrap_or(0) {
            0 => Attempt::Answer(value),
            errcode::BUSY => Attempt::Unprocessed("busy (-1)"),
            code => {
                let message = value
                    .get("errmsg")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                tracing::info!(endpoint, errcode = code, "WeChat refused the call");
                Attempt::Final(Failure::ErrCode { code, message })
            }
        }
    }
}

fn malformed(endpoint: &str, what: &str) -> WeChatError {
    WeChatError::Unknown {
        code: 0,
        message: format!("malformed {endpoint} answer: {what}"),
    }
}

/// Reads an answer into its shape; the error names the missing field but never a
/// value (serde's type errors quote the value, which may be a secret).
fn parse_answer<T: for<'de> Deserialize<'de>>(
    endpoint: &str,
    value: Value,
) -> Result<T, WeChatError> {
    serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        let what = if text.starts_with("missing field") {
            text
        } else {
            "a field has an unexpected type".to_owned()
        };
        malformed(endpoint, &what)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let client = WeChatClient::new(ClientConfig {
            retry: RetryPolicy {
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_millis(300),
                ..RetryPolicy::default()
            },
            ..ClientConfig::default()
        })
        .unwrap();
        for _ in 0..50 {
            let first = client.inner.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let second = client.inner.backoff(2);
            assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
            let capped = client.inner.backoff(10);
            assert!(capped >= Duration::from_millis(150) && capped <= Duration::from_millis(300));
        }
    }

    #[test]
    fn only_final_answers_about_a_code_are_remembered() {
        assert!(is_definitive(&WeChatError::InvalidCode));
        assert!(is_definitive(&WeChatError::CodeUsed));
        assert!(is_definitive(&WeChatError::BlockedUser));
        assert!(!is_definitive(&WeChatError::RateLimited));
        assert!(!is_definitive(&WeChatError::Unavailable {
            retry_after_secs: 1
        }));
        assert!(!is_definitive(&WeChatError::BadAppCredentials));
    }

    #[test]
    fn access_tokens_stay_out_of_debug() {
        let token = WeChatAccessToken("ACCESS-TOKEN-VALUE".into());
        assert!(!format!("{token:?}").contains("ACCESS-TOKEN-VALUE"));
    }
}
