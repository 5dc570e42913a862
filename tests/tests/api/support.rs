//! The router over the real service — `miniauth::wiring::service` on the store (in-memory
//! SQLite), the security adapter's tickets and tokens, and a settable clock — with a
//! fake of WeChat's API alone, and helpers to drive the router with `oneshot`.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use chrono::Utc;
use miniauth::config::{Config, Secret};
use miniauth::wiring::{self, Signing};
use miniauth_application::ports::*;
use miniauth_application::RegistrationPolicy;
use miniauth_domain::crypto::{encode_base64, Watermark};
use miniauth_domain::{
    AppId, OneTimeCode, OpenId, PhoneNumber, SessionKey, TenantId, UnionId, UserId,
};
use miniauth_e2e::{app_section, SettableClock};
use miniauth_http::{AdminToken, ApiState, HttpConfig};
use miniauth_security::HmacTicketCodec;
use miniauth_store::Store;
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

/// WeChat's API, the one external system: code2session answers `c_{openid}` with
/// `openid`; a few codes fail the WeChat way. Phone codes `p_{digits}` verify `digits`;
/// `p_other_app` comes for another app.
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
            // Never answers: the request's timeout must.
            "slow" => std::future::pending().await,
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

    /// The same codes as code2session's, for the apps that are not mini programs;
    /// `snapshot` is a snapshot-page user. The grant's scope reads no profile.
    async fn oauth_access_token(
        &self,
        _appid: &AppId,
        code: &OneTimeCode,
    ) -> Result<miniauth_application::ports::OAuthGrant, WeChatError> {
        let snapshot = code.expose() == "snapshot";
        let openid = if snapshot {
            "virtual"
        } else {
            code.expose()
                .strip_prefix("c_")
                .ok_or(WeChatError::InvalidCode)?
        };
        Ok(miniauth_application::ports::OAuthGrant {
            openid: OpenId::parse(openid).unwrap(),
            unionid: (!snapshot).then(|| UnionId::parse(&format!("u_{openid}")).unwrap()),
            scopes: vec!["snsapi_base".into()],
            snapshot_user: snapshot,
            access_token: miniauth_application::Secret::new("sns-token"),
        })
    }

    /// Never asked: no grant of this fake reads the profile.
    async fn sns_userinfo(
        &self,
        _access_token: &miniauth_application::Secret,
        _openid: &OpenId,
    ) -> Result<miniauth_application::ports::SnsUserInfo, WeChatError> {
        Err(WeChatError::Unknown {
            code: 48001,
            message: "api unauthorized".into(),
        })
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

/// The business users, in the store.
pub struct Users(Store);

impl Users {
    /// Disables a user behind the service's back (as another system sharing the
    /// directory would).
    pub async fn disable(&self, id: i64) {
        let id = UserId::new(id).unwrap();
        let user = self.0.users().set_status(id, UserStatus::Disabled).await;
        assert!(user.unwrap().is_some(), "user {id} exists");
    }

    /// Whether the tenant has any user.
    pub async fn any(&self) -> bool {
        let tenant = TenantId::parse("default").unwrap();
        self.0.users().tenant_exists(&tenant).await.unwrap()
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

/// A router over the real service, and handles on what the tests look into.
pub struct Harness {
    pub router: Router,
    pub users: Users,
    pub not_ready: Arc<Switch>,
    /// The store the service writes to.
    pub store: Store,
    /// The service's clock.
    pub clock: Arc<SettableClock>,
    signing: Signing,
}

/// The configuration of the harness: an admin token, 64 KiB, 2 s.
pub fn config() -> HttpConfig {
    let mut config = HttpConfig::new(TenantId::parse("default").unwrap());
    config.admin_token = Some(AdminToken::new(ADMIN_TOKEN).unwrap());
    config.request_timeout = Duration::from_secs(2);
    config
}

/// The service's configuration: [`APP`] registers, [`CLOSED_APP`] does not; three
/// failed passwords per account lock it for 30 s.
fn service_config() -> Config {
    let mut config = Config::load_with_env(None, &[]).expect("the embedded default loads");
    config.store.url = "sqlite::memory:".to_owned();
    config.store.server_key = Some(Secret::new(encode_base64(&rand::random::<[u8; 32]>())));
    config.apps = vec![
        app_section(APP, RegistrationPolicy::Auto),
        app_section(CLOSED_APP, RegistrationPolicy::Closed),
    ];
    config.throttle.password_failures_per_account = 3;
    config.throttle.password_window_secs = 30;
    config
}

/// A harness with [`config`].
pub async fn harness() -> Harness {
    harness_with(config()).await
}

/// A harness with another configuration.
pub async fn harness_with(config: HttpConfig) -> Harness {
    harness_full(config, None).await
}

/// A harness whose admin API serves `audit`.
pub async fn harness_with_audit(audit: Arc<dyn miniauth_application::ports::AuditLog>) -> Harness {
    harness_full(config(), Some(audit)).await
}

async fn harness_full(
    config: HttpConfig,
    audit: Option<Arc<dyn miniauth_application::ports::AuditLog>>,
) -> Harness {
    let service_config = service_config();
    let apps = service_config.resolve_apps(&[]).unwrap();
    // The store dates what it writes by the same clock the tests move.
    let clock = Arc::new(SettableClock::default());
    let store = wiring::open_store_on(&service_config, clock.clone())
        .await
        .unwrap();
    let signing = Signing::load(&service_config, &store).await.unwrap();
    let auth = wiring::service(
        &service_config,
        &apps,
        &store,
        &signing,
        Arc::new(FakeWeChat),
        clock.clone(),
    );
    let not_ready = Arc::new(Switch::default());
    let jwks = Arc::new(signing.tokens.jwks());
    let mut state = ApiState::new(auth, jwks, not_ready.clone(), config);
    if let Some(audit) = audit {
        state = state.with_audit(audit);
    }
    Harness {
        router: miniauth_http::router(state),
        users: Users(store.clone()),
        not_ready,
        store,
        clock,
        signing,
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

fn ticket_claims(
    appid: &str,
    openid: &str,
    session_seq: u64,
    issued_at: chrono::DateTime<Utc>,
) -> TicketClaims {
    TicketClaims {
        appid: AppId::parse(appid).unwrap(),
        openid: OpenId::parse(openid).unwrap(),
        session_seq,
        issued_at,
        expires_at: issued_at + chrono::Duration::hours(1),
        spent: false,
    }
}

fn owner(user_id: i64) -> SessionOwner {
    SessionOwner {
        user_id: UserId::new(user_id).unwrap(),
        tenant: TenantId::parse("default").unwrap(),
        appid: None,
    }
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
    /// A ticket for `openid`'s session `session_seq`, signed with a key that is not
    /// the service's.
    pub fn forged_ticket(&self, appid: &str, openid: &str, session_seq: u64) -> String {
        let now = self.clock.now();
        HmacTicketCodec::new([7; 32]).issue(&ticket_claims(appid, openid, session_seq, now))
    }

    /// A ticket the service signed, expired an hour ago.
    pub fn expired_ticket(&self, appid: &str, openid: &str, session_seq: u64) -> String {
        let issued = self.clock.now() - chrono::Duration::hours(2);
        self.signing
            .tickets
            .issue(&ticket_claims(appid, openid, session_seq, issued))
    }

    /// An access token the service signed, expired an hour ago.
    pub fn expired_access_token(&self) -> String {
        let subject = TokenSubject::new(owner(1), SessionId::parse("s0").unwrap());
        let issued = self.clock.now() - chrono::Duration::hours(1);
        self.signing.tokens.issue(&subject, issued).unwrap().token
    }

    /// A valid access token, with a live session, of a user the directory does not
    /// hold.
    pub async fn access_token_of_unknown_user(&self, user_id: i64) -> String {
        let now = self.clock.now();
        let (subject, _) = self
            .store
            .refresh_tokens()
            .issue(&owner(user_id), now)
            .await
            .unwrap();
        self.signing.tokens.issue(&subject, now).unwrap().token
    }

    /// The JWKS of the service's token issuer.
    pub fn jwks(&self) -> Value {
        self.signing.tokens.jwks()
    }

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

    /// Logs a password user in through v1; returns the access token.
    pub async fn password_access(&self, account: &str, password: &str) -> String {
        let answer = self
            .post_json(
                "/v1/token",
                serde_json::json!({ "grant_type": "password", "account": account, "password": password }),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json["access_token"].as_str().unwrap().to_owned()
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
