//! In-memory fakes of the ports, a real `MiniAuth` over the application's in-memory
//! account repository, and helpers to drive the router with `oneshot`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, Utc};
use miniauth_application::memory::InMemoryAccounts;
use miniauth_application::ports::*;
use miniauth_application::{
    AppCatalog, AppSettings, Lifetimes, MiniAuth, Ports, RegistrationPolicy,
};
use miniauth_domain::crypto::{Watermark, WatermarkPolicy};
use miniauth_domain::{
    AccountId, AppId, OneTimeCode, OpenId, PersonalField, PhoneNumber, SealedDatum, SealedSecret,
    SealedUnionId, SessionKey, TenantId, UnionId, UserId,
};
use miniauth_http::{AdminToken, ApiState, HttpConfig, Readiness};
use serde_json::Value;
use tower::ServiceExt;

/// An app that registers new users from their phone.
pub const APP: &str = "wx4f4bc4dec97d474b";
/// An app that registers nobody.
pub const CLOSED_APP: &str = "wx00000000000000c1";
/// A configured-nowhere app.
pub const UNKNOWN_APP: &str = "wx0000000000000bad";
/// The session key every fake login hands out.
pub const SESSION_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
/// The admin token of the harness.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// code2session: `c_{openid}` logs `openid` in; a few codes fail the WeChat way.
/// Phone codes `p_{digits}` verify `digits`; `p_other_app` comes for another app.
pub struct FakeWeChat;

#[async_trait]
impl WeChatApi for FakeWeChat {
    async fn code_to_session(
        &self,
        _appid: &AppId,
        code: &OneTimeCode,
    ) -> Result<WeChatSession, WeChatError> {
        match code.expose() {
            "invalid" => Err(WeChatError::InvalidCode),
            "used" => Err(WeChatError::CodeUsed),
            "busy" => Err(WeChatError::RateLimited),
            "down" => Err(WeChatError::Unavailable {
                retry_after_secs: 7,
            }),
            "badsecret" => Err(WeChatError::BadAppCredentials),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Err(WeChatError::InvalidCode)
            }
            other => {
                let openid = other.strip_prefix("c_").ok_or(WeChatError::InvalidCode)?;
                Ok(WeChatSession {
                    openid: OpenId::parse(openid).unwrap(),
                    unionid: Some(UnionId::parse(&format!("u_{openid}")).unwrap()),
                    session_key: SessionKey::parse(SESSION_KEY).unwrap(),
                })
            }
        }
    }

    async fn reset_session_key(
        &self,
        _appid: &AppId,
        _openid: &OpenId,
        _session_key: &SessionKey,
    ) -> Result<SessionKey, WeChatError> {
        Ok(SessionKey::parse(SESSION_KEY).unwrap())
    }

    async fn phone_number(
        &self,
        appid: &AppId,
        code: &OneTimeCode,
        _openid: &OpenId,
    ) -> Result<VerifiedPhone, WeChatError> {
        let rest = code
            .expose()
            .strip_prefix("p_")
            .ok_or(WeChatError::InvalidCode)?;
        let watermark = |appid: &str| Watermark {
            appid: appid.to_owned(),
            timestamp: Utc::now().timestamp(),
        };
        if rest == "other_app" {
            return Ok(VerifiedPhone {
                phone: PhoneNumber::new("13900000000", "86").unwrap(),
                watermark: watermark("wx1111111111111111"),
            });
        }
        Ok(VerifiedPhone {
            phone: PhoneNumber::new(rest, "86").map_err(|_| WeChatError::InvalidCode)?,
            watermark: watermark(appid.as_str()),
        })
    }
}

struct StoredUser {
    record: UserRecord,
    password: Option<String>,
}

/// The business users, in memory.
#[derive(Default)]
pub struct FakeUsers {
    users: Mutex<Vec<StoredUser>>,
}

impl FakeUsers {
    /// Disables a user.
    pub fn disable(&self, id: i64) {
        let mut users = self.users.lock().unwrap();
        let user = users.iter_mut().find(|u| u.record.id.get() == id).unwrap();
        user.record.status = UserStatus::Disabled;
    }

    /// How many users exist.
    pub fn count(&self) -> usize {
        self.users.lock().unwrap().len()
    }

    fn next_id(users: &[StoredUser]) -> UserId {
        UserId::new(users.len() as i64 + 1).unwrap()
    }
}

#[async_trait]
impl UserDirectory for FakeUsers {
    async fn find_by_phone(
        &self,
        tenant: &TenantId,
        phone: &PhoneNumber,
    ) -> Result<Option<UserRecord>, PortError> {
        let users = self.users.lock().unwrap();
        Ok(users
            .iter()
            .find(|u| &u.record.tenant == tenant && u.record.mobile.as_ref() == Some(phone))
            .map(|u| u.record.clone()))
    }

    async fn get(&self, id: UserId) -> Result<Option<UserRecord>, PortError> {
        let users = self.users.lock().unwrap();
        Ok(users
            .iter()
            .find(|u| u.record.id == id)
            .map(|u| u.record.clone()))
    }

    async fn register(&self, user: NewUser) -> Result<Registration, PortError> {
        let mut users = self.users.lock().unwrap();
        let record = UserRecord {
            id: Self::next_id(&users),
            tenant: user.tenant,
            account: None,
            mobile: Some(user.mobile),
            nickname: user.nickname,
            status: UserStatus::Active,
        };
        users.push(StoredUser {
            record: record.clone(),
            password: None,
        });
        Ok(Registration::Created(record))
    }

    async fn create_account(&self, user: NewAccountUser) -> Result<AccountCreation, PortError> {
        let mut users = self.users.lock().unwrap();
        let same_tenant = |u: &&StoredUser| u.record.tenant == user.tenant;
        if users
            .iter()
            .filter(same_tenant)
            .any(|u| u.record.account.as_deref() == Some(user.account.as_str()))
        {
            return Ok(AccountCreation::AccountTaken);
        }
        if user.mobile.is_some()
            && users
                .iter()
                .filter(same_tenant)
                .any(|u| u.record.mobile == user.mobile)
        {
            return Ok(AccountCreation::PhoneTaken);
        }
        let record = UserRecord {
            id: Self::next_id(&users),
            tenant: user.tenant,
            account: Some(user.account),
            mobile: user.mobile,
            nickname: user.nickname,
            status: UserStatus::Active,
        };
        users.push(StoredUser {
            record: record.clone(),
            password: Some(user.password.expose().to_owned()),
        });
        Ok(AccountCreation::Created(record))
    }

    async fn discard_unbound(&self, _id: UserId) -> Result<(), PortError> {
        Ok(())
    }

    async fn set_status(
        &self,
        id: UserId,
        status: UserStatus,
    ) -> Result<Option<UserRecord>, PortError> {
        let mut users = self.users.lock().unwrap();
        Ok(users.iter_mut().find(|u| u.record.id == id).map(|u| {
            u.record.status = status;
            u.record.clone()
        }))
    }

    async fn tenant_exists(&self, tenant: &TenantId) -> Result<bool, PortError> {
        let users = self.users.lock().unwrap();
        Ok(users.iter().any(|u| &u.record.tenant == tenant))
    }

    async fn erase_registered(&self, _id: UserId) -> Result<bool, PortError> {
        Ok(false)
    }

    async fn check_password(
        &self,
        tenant: &TenantId,
        account: &str,
        password: &Password,
    ) -> Result<Option<UserRecord>, PortError> {
        let users = self.users.lock().unwrap();
        Ok(users
            .iter()
            .find(|u| {
                &u.record.tenant == tenant
                    && u.record.account.as_deref() == Some(account)
                    && u.password.as_deref() == Some(password.expose())
            })
            .map(|u| u.record.clone()))
    }
}

/// Bindings, unique both ways.
#[derive(Default)]
pub struct FakeRegistry {
    claims: Mutex<HashMap<(AppId, OpenId), UserId>>,
}

#[async_trait]
impl BindingRegistry for FakeRegistry {
    async fn claim(
        &self,
        appid: &AppId,
        openid: &OpenId,
        user: UserId,
    ) -> Result<Claim, ClaimError> {
        let mut claims = self.claims.lock().unwrap();
        if let Some(holder) = claims.get(&(appid.clone(), openid.clone())) {
            return if *holder == user {
                Ok(Claim::Existing)
            } else {
                Err(ClaimError::IdentityTaken(*holder))
            };
        }
        if claims.iter().any(|((a, _), u)| a == appid && *u == user) {
            return Err(ClaimError::UserHasIdentity);
        }
        claims.insert((appid.clone(), openid.clone()), user);
        Ok(Claim::New)
    }

    async fn release(&self, appid: &AppId, openid: &OpenId, user: UserId) -> Result<(), PortError> {
        let mut claims = self.claims.lock().unwrap();
        let key = (appid.clone(), openid.clone());
        if claims.get(&key) == Some(&user) {
            claims.remove(&key);
        }
        Ok(())
    }

    async fn identity_of(&self, appid: &AppId, user: UserId) -> Result<Option<OpenId>, PortError> {
        let claims = self.claims.lock().unwrap();
        Ok(claims
            .iter()
            .find(|((a, _), u)| a == appid && **u == user)
            .map(|((_, o), _)| o.clone()))
    }

    async fn bindings_of(&self, user: UserId) -> Result<Vec<Binding>, PortError> {
        let claims = self.claims.lock().unwrap();
        let mut bindings: Vec<Binding> = claims
            .iter()
            .filter(|(_, u)| **u == user)
            .map(|((appid, openid), user_id)| Binding {
                appid: appid.clone(),
                openid: openid.clone(),
                user_id: *user_id,
            })
            .collect();
        bindings.sort_by(|a, b| a.appid.cmp(&b.appid));
        Ok(bindings)
    }
}

/// Tickets as `T.{appid}.{openid}.{seq}.{expiry}.sig`; only `sig` verifies.
pub struct FakeTickets;

impl FakeTickets {
    /// A ticket as the fake would issue it, with any expiry and signature.
    pub fn forge(appid: &str, openid: &str, seq: u64, expires: i64, signature: &str) -> String {
        format!("T.{appid}.{openid}.{seq}.{expires}.{signature}")
    }
}

impl TicketCodec for FakeTickets {
    fn issue(&self, claims: &TicketClaims) -> String {
        Self::forge(
            claims.appid.as_str(),
            claims.openid.as_str(),
            claims.session_seq,
            claims.expires_at.timestamp(),
            "sig",
        )
    }

    fn verify(&self, ticket: &str, now: DateTime<Utc>) -> Result<TicketClaims, TicketError> {
        let parts: Vec<&str> = ticket.split('.').collect();
        let [t, appid, openid, seq, expires, signature] = parts[..] else {
            return Err(TicketError::Malformed);
        };
        if t != "T" {
            return Err(TicketError::Malformed);
        }
        if signature != "sig" {
            return Err(TicketError::Forged);
        }
        let expires_at = expires
            .parse::<i64>()
            .ok()
            .and_then(|e| DateTime::<Utc>::from_timestamp(e, 0))
            .ok_or(TicketError::Malformed)?;
        if expires_at <= now {
            return Err(TicketError::Expired);
        }
        Ok(TicketClaims {
            appid: AppId::parse(appid).map_err(|_| TicketError::Malformed)?,
            openid: OpenId::parse(openid).map_err(|_| TicketError::Malformed)?,
            session_seq: seq.parse().map_err(|_| TicketError::Malformed)?,
            issued_at: now,
            expires_at,
        })
    }
}

/// Access tokens as `AT.{user}.{tenant}.{appid or -}[.{sid}]` (session `s0` when
/// absent); `expired` is expired.
pub struct FakeTokens;

impl TokenIssuer for FakeTokens {
    fn issue(&self, subject: &TokenSubject, _now: DateTime<Utc>) -> Result<AccessToken, PortError> {
        let appid = subject.appid.as_ref().map_or("-", |a| a.as_str());
        Ok(AccessToken {
            token: format!(
                "AT.{}.{}.{appid}.{}",
                subject.user_id, subject.tenant, subject.session
            ),
            expires_in: 900,
        })
    }

    fn verify(&self, token: &str, _now: DateTime<Utc>) -> Result<TokenSubject, AccessTokenError> {
        if token == "expired" {
            return Err(AccessTokenError::Expired);
        }
        let parts: Vec<&str> = token.split('.').collect();
        let (user, tenant, appid, session) = match parts[..] {
            ["AT", user, tenant, appid] => (user, tenant, appid, "s0"),
            ["AT", user, tenant, appid, session] => (user, tenant, appid, session),
            _ => return Err(AccessTokenError::Invalid),
        };
        Ok(TokenSubject {
            user_id: UserId::parse(user).map_err(|_| AccessTokenError::Invalid)?,
            tenant: TenantId::parse(tenant).map_err(|_| AccessTokenError::Invalid)?,
            appid: match appid {
                "-" => None,
                other => Some(AppId::parse(other).map_err(|_| AccessTokenError::Invalid)?),
            },
            session: SessionId::parse(session).map_err(|_| AccessTokenError::Invalid)?,
        })
    }
}

/// Refresh tokens, rotated, with reuse detection.
#[derive(Default)]
pub struct FakeRefresh {
    next: AtomicU64,
    tokens: Mutex<HashMap<String, (TokenSubject, bool)>>,
    revoked: Mutex<Vec<SessionId>>,
}

impl FakeRefresh {
    fn mint(&self, subject: &TokenSubject) -> RefreshToken {
        let token = format!("RT{}", self.next.fetch_add(1, Ordering::Relaxed));
        self.tokens
            .lock()
            .unwrap()
            .insert(token.clone(), (subject.clone(), false));
        RefreshToken {
            token,
            expires_in: 2_592_000,
        }
    }
}

#[async_trait]
impl RefreshTokenStore for FakeRefresh {
    async fn issue(
        &self,
        owner: &SessionOwner,
        _now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), PortError> {
        let n = self.next.load(Ordering::Relaxed);
        let subject = TokenSubject::new(owner.clone(), SessionId::parse(&format!("f{n}")).unwrap());
        let token = self.mint(&subject);
        Ok((subject, token))
    }

    async fn revoke_sessions(
        &self,
        user: UserId,
        scope: &SessionScope,
        _now: DateTime<Utc>,
    ) -> Result<u64, PortError> {
        let tokens = self.tokens.lock().unwrap();
        let mut revoked = self.revoked.lock().unwrap();
        let mut count = 0;
        for (subject, _) in tokens.values() {
            let in_scope = match scope {
                SessionScope::All => true,
                SessionScope::App(appid) => subject.appid.as_ref() == Some(appid),
            };
            if subject.user_id == user && in_scope && !revoked.contains(&subject.session) {
                revoked.push(subject.session.clone());
                count += 1;
            }
        }
        Ok(count)
    }

    async fn session_live(
        &self,
        subject: &TokenSubject,
        _now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        Ok(!self.revoked.lock().unwrap().contains(&subject.session))
    }

    async fn rotate(
        &self,
        token: &str,
        _now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), RefreshError> {
        let subject = {
            let mut tokens = self.tokens.lock().unwrap();
            let (subject, used) = tokens.get_mut(token).ok_or(RefreshError::Unknown)?;
            if *used {
                return Err(RefreshError::Reused);
            }
            *used = true;
            subject.clone()
        };
        let next = self.mint(&subject);
        Ok((subject, next))
    }

    async fn revoke(
        &self,
        token: &str,
        user: UserId,
        _now: DateTime<Utc>,
    ) -> Result<(), RefreshError> {
        let mut tokens = self.tokens.lock().unwrap();
        match tokens.get(token) {
            Some((subject, _)) if subject.user_id == user => {
                tokens.remove(token);
                Ok(())
            }
            _ => Err(RefreshError::Unknown),
        }
    }
}

/// A vault that "seals" by prefixing (the tests check HTTP, not sealing).
pub struct FakeVault;

#[async_trait]
impl PersonalDataVault for FakeVault {
    async fn seal_secret(
        &self,
        _account: &AccountId,
        key: &SessionKey,
    ) -> Result<SealedSecret, PortError> {
        Ok(SealedSecret::from_sealed_text(format!(
            "s:{}",
            key.expose_text()
        )))
    }

    async fn unseal_secret(
        &self,
        _account: &AccountId,
        sealed: &SealedSecret,
    ) -> Result<SessionKey, PortError> {
        let text = sealed.as_sealed_text().trim_start_matches("s:");
        SessionKey::parse(text).map_err(|e| PortError::Internal(e.to_string().into()))
    }

    async fn seal_personal(
        &self,
        _account: &AccountId,
        _field: PersonalField,
        plaintext: &str,
    ) -> Result<SealedDatum, PortError> {
        Ok(SealedDatum::from_sealed_text(format!("p:{plaintext}")))
    }

    async fn unseal_personal(
        &self,
        _account: &AccountId,
        _field: PersonalField,
        sealed: &SealedDatum,
    ) -> Result<Option<String>, PortError> {
        Ok(sealed
            .as_sealed_text()
            .strip_prefix("p:")
            .map(str::to_owned))
    }

    async fn seal_unionid(
        &self,
        _account: &AccountId,
        unionid: &UnionId,
    ) -> Result<SealedUnionId, PortError> {
        Ok(SealedUnionId {
            hash: format!("h:{unionid}"),
            sealed: Some(SealedDatum::from_sealed_text(format!("p:{unionid}"))),
        })
    }

    async fn forget(&self, _account: &AccountId) -> Result<(), PortError> {
        Ok(())
    }
}

/// The real time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Refuses a key after three failures, for 30 s; lets every login through.
#[derive(Default)]
pub struct FakeLimiter {
    failures: Mutex<HashMap<ThrottleKey, u32>>,
}

#[async_trait]
impl AttemptLimiter for FakeLimiter {
    async fn check(&self, key: &ThrottleKey, _now: DateTime<Utc>) -> Result<(), ThrottleError> {
        match self.failures.lock().unwrap().get(key) {
            Some(count) if *count >= 3 => Err(ThrottleError::Exceeded {
                retry_after_secs: 30,
            }),
            _ => Ok(()),
        }
    }

    async fn record_failure(
        &self,
        key: &ThrottleKey,
        _now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        *self
            .failures
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default() += 1;
        Ok(())
    }

    async fn hit(&self, _key: &ThrottleKey, _now: DateTime<Utc>) -> Result<(), ThrottleError> {
        Ok(())
    }

    async fn reset(&self, key: &ThrottleKey) -> Result<(), PortError> {
        self.failures.lock().unwrap().remove(key);
        Ok(())
    }
}

/// A readiness check the test can flip.
#[derive(Default)]
pub struct Switch(pub AtomicBool);

#[async_trait]
impl Readiness for Switch {
    async fn check(&self) -> Result<(), String> {
        if self.0.load(Ordering::Relaxed) {
            Err("store unreachable".to_owned())
        } else {
            Ok(())
        }
    }
}

/// A router over a real `MiniAuth` and the fakes, and handles on the fakes.
pub struct Harness {
    pub router: Router,
    pub users: Arc<FakeUsers>,
    pub not_ready: Arc<Switch>,
}

/// The configuration of the harness: an admin token, 64 KiB, 2 s.
pub fn config() -> HttpConfig {
    let mut config = HttpConfig::new(TenantId::parse("default").unwrap());
    config.admin_token = Some(AdminToken::new(ADMIN_TOKEN).unwrap());
    config.request_timeout = Duration::from_secs(2);
    config
}

/// A harness with [`config`].
pub fn harness() -> Harness {
    harness_with(config())
}

/// A harness with another configuration.
pub fn harness_with(config: HttpConfig) -> Harness {
    harness_full(config, None)
}

/// A harness whose admin API serves `audit`.
pub fn harness_with_audit(audit: Arc<dyn miniauth_http::AuditLog>) -> Harness {
    harness_full(config(), Some(audit))
}

fn harness_full(config: HttpConfig, audit: Option<Arc<dyn miniauth_http::AuditLog>>) -> Harness {
    let users = Arc::new(FakeUsers::default());
    let ports = Ports {
        wechat: Arc::new(FakeWeChat),
        users: users.clone(),
        registry: Arc::new(FakeRegistry::default()),
        tickets: Arc::new(FakeTickets),
        tokens: Arc::new(FakeTokens),
        refresh: Arc::new(FakeRefresh::default()),
        vault: Arc::new(FakeVault),
        clock: Arc::new(SystemClock),
        limiter: Arc::new(FakeLimiter::default()),
        counters: Arc::new(miniauth_application::memory::InMemoryUsageCounters::default()),
        accounts: Arc::new(InMemoryAccounts::default()),
    };
    let app = |appid: &str, registration| AppSettings {
        appid: AppId::parse(appid).unwrap(),
        tenant: TenantId::parse("default").unwrap(),
        registration,
        watermark: WatermarkPolicy::default(),
        legacy_payloads: true,
        payload_rejections_per_key: miniauth_application::DEFAULT_PAYLOAD_REJECTIONS_PER_KEY,
    };
    let apps = AppCatalog::new([
        app(APP, RegistrationPolicy::Auto),
        app(CLOSED_APP, RegistrationPolicy::Closed),
    ]);
    let auth = Arc::new(MiniAuth::new(ports, apps, Lifetimes::default()));
    let jwks = Arc::new(
        serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": "abc"}]}),
    );
    let not_ready = Arc::new(Switch::default());
    let mut state = ApiState::new(auth, jwks, not_ready.clone(), config);
    if let Some(audit) = audit {
        state = state.with_audit(audit);
    }
    Harness {
        router: miniauth_http::router(state),
        users,
        not_ready,
    }
}

/// An answer, with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Answer {
    /// The content type.
    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a v1 problem with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "{}",
            self.text
        );
        assert_eq!(self.json["code"], code, "{}", self.text);
        assert_eq!(self.json["status"], status);
        assert_eq!(self.json["type"], format!("urn:miniauth:error:{code}"));
        assert!(self.json["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(self.json["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }

    /// Asserts a GitEgg envelope with this code; returns its data.
    #[track_caller]
    pub fn assert_envelope(&self, code: u64) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        assert_eq!(self.json["code"], code, "{}", self.text);
        assert_eq!(self.json["success"], code == 200, "{}", self.text);
        assert!(self.json["msg"].is_string(), "{}", self.text);
        &self.json["data"]
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Harness {
    /// Sends a request.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            text,
            json,
        }
    }

    /// POSTs JSON, with a bearer token if given.
    pub async fn post_json(&self, uri: &str, body: Value, bearer: Option<&str>) -> Answer {
        let mut request = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// POSTs a form.
    pub async fn post_form(&self, uri: &str, form: &str, basic: Option<&str>) -> Answer {
        let mut request =
            Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(credentials) = basic {
            request = request.header(header::AUTHORIZATION, format!("Basic {credentials}"));
        }
        self.send(request.body(Body::from(form.to_owned())).unwrap())
            .await
    }

    /// GETs, with a bearer token if given.
    pub async fn get(&self, uri: &str, bearer: Option<&str>) -> Answer {
        let mut request = Request::get(uri);
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    /// DELETEs with a bearer token.
    pub async fn delete(&self, uri: &str, bearer: &str) -> Answer {
        let request = Request::delete(uri)
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .body(Body::empty())
            .unwrap();
        self.send(request).await
    }

    /// Logs `openid` in through v1; returns the session answer.
    pub async fn login(&self, appid: &str, openid: &str) -> Value {
        let answer = self
            .post_json(
                &format!("/v1/apps/{appid}/sessions"),
                serde_json::json!({ "code": format!("c_{openid}") }),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json
    }

    /// Creates a password user through the admin API; returns its id.
    pub async fn add_user(&self, account: &str, password: &str, mobile: Option<&str>) -> i64 {
        let answer = self
            .post_json(
                "/v1/admin/users",
                serde_json::json!({ "account": account, "password": password, "mobile": mobile, "nickname": "Nick" }),
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        answer.json["user_id"].as_i64().unwrap()
    }

    /// Registers `openid` through the phone flow; returns the phone answer.
    pub async fn register(&self, openid: &str, phone: &str) -> Value {
        let session = self.login(APP, openid).await;
        let answer = self
            .post_json(
                &format!("/v1/apps/{APP}/phone"),
                serde_json::json!({ "ticket": session["ticket"], "code": format!("p_{phone}") }),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json
    }
}
