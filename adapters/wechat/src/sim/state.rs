//! The simulated WeChat: users, sessions, one-time codes and access tokens, with
//! WeChat's rules. Synchronous; the routes lock it for the length of one request.

use std::collections::HashMap;

use miniauth_domain::crypto::{encode_base64, encrypt_payload, raw_data_signature, session_hmac};
use miniauth_domain::{Channel, PhoneNumber, SessionKey};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};

use super::api::{
    CallCounts, Endpoint, Faults, LoginCode, NewSimUser, OAuthConsent, PhoneBundle, UserInfoBundle,
};
use crate::errcode;

/// How long login and phone codes live.
pub(crate) const CODE_LIFETIME_SECS: i64 = 300;
/// How long an access token lives.
pub(crate) const TOKEN_LIFETIME_SECS: i64 = 7200;
/// The stable token is rotated when less than this is left; the token endpoint keeps
/// the previous token alive this long.
pub(crate) const TOKEN_OVERLAP_SECS: i64 = 300;
/// force_refresh: at most this many a day...
pub(crate) const FORCE_REFRESH_PER_DAY: usize = 20;
/// ...and this far apart.
pub(crate) const FORCE_REFRESH_INTERVAL_SECS: i64 = 30;

/// A WeChat errcode and errmsg.
pub(crate) type WxError = (i64, &'static str);

/// A device or control call that cannot be served: HTTP status and message.
pub(crate) type DeviceError = (u16, String);

pub(crate) struct AppState {
    pub(crate) secret: String,
    pub(crate) unionid: bool,
    pub(crate) kind: Channel,
    stable: Option<String>,
    ordinary: Option<String>,
    forced_at: Vec<i64>,
}

impl AppState {
    pub(crate) fn new(secret: String, unionid: bool, kind: Channel) -> Self {
        Self {
            secret,
            unionid,
            kind,
            stable: None,
            ordinary: None,
            forced_at: Vec::new(),
        }
    }
}

struct User {
    nickname: String,
    avatar_url: String,
    phone: Option<PhoneNumber>,
    unionid: String,
    /// Per app: the openid and the one current session key.
    apps: HashMap<String, UserInApp>,
}

struct UserInApp {
    openid: String,
    /// A mini program's current session key (other kinds never hand it out).
    session_key: SessionKey,
}

impl User {
    /// The user in `appid`, with an openid of their own there from the first time.
    fn enter(&mut self, appid: &str) -> &mut UserInApp {
        self.apps
            .entry(appid.to_owned())
            .or_insert_with(|| UserInApp {
                openid: format!("o{}", random_text(27)),
                session_key: new_session_key(),
            })
    }
}

struct IssuedCode {
    appid: String,
    user_id: u64,
    issued_at: i64,
    used: bool,
}

/// A code an OAuth login (Official Account, website, mobile App) hands its app.
struct OAuthCode {
    appid: String,
    user_id: u64,
    scope: String,
    /// A snapshot-page view: the exchange names a virtual openid.
    snapshot: bool,
    issued_at: i64,
    used: bool,
}

/// A user's OAuth access token (for `/sns/userinfo`).
struct SnsToken {
    appid: String,
    user_id: u64,
    scope: String,
    expires_at: i64,
}

struct TokenRecord {
    appid: String,
    expires_at: i64,
}

/// Everything the simulator knows.
pub(crate) struct State {
    pub(crate) apps: HashMap<String, AppState>,
    users: HashMap<u64, User>,
    next_user: u64,
    login_codes: HashMap<String, IssuedCode>,
    phone_codes: HashMap<String, IssuedCode>,
    oauth_codes: HashMap<String, OAuthCode>,
    sns_tokens: HashMap<String, SnsToken>,
    tokens: HashMap<String, TokenRecord>,
    clock_offset: i64,
    pub(crate) faults: Faults,
    pub(crate) calls: CallCounts,
}

fn random_text(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::thread_rng().fill(&mut bytes[..]);
    bytes
}

fn new_session_key() -> SessionKey {
    SessionKey::parse(&encode_base64(&random_bytes::<16>()))
        .expect("16 random bytes always make a valid session key")
}

fn ok(mut body: Value) -> Value {
    body["errcode"] = json!(0);
    body["errmsg"] = json!("ok");
    body
}

impl State {
    pub(crate) fn new(apps: HashMap<String, AppState>, faults: Faults) -> Self {
        Self {
            apps,
            users: HashMap::new(),
            next_user: 1,
            login_codes: HashMap::new(),
            phone_codes: HashMap::new(),
            oauth_codes: HashMap::new(),
            sns_tokens: HashMap::new(),
            tokens: HashMap::new(),
            clock_offset: 0,
            faults,
            calls: Endpoint::ALL.iter().map(|e| (*e, 0)).collect(),
        }
    }

    /// The simulated time, in Unix seconds.
    pub(crate) fn now(&self) -> i64 {
        chrono::Utc::now().timestamp() + self.clock_offset
    }

    pub(crate) fn advance_clock(&mut self, seconds: u64) {
        self.clock_offset += i64::try_from(seconds).unwrap_or(i64::MAX / 4);
    }

    pub(crate) fn reset_calls(&mut self) {
        self.calls.values_mut().for_each(|count| *count = 0);
    }

    fn check_app(&self, appid: Option<&str>, secret: Option<&str>) -> Result<&AppState, WxError> {
        let appid = appid
            .filter(|a| !a.is_empty())
            .ok_or((errcode::APPID_MISSING, "appid missing"))?;
        let secret = secret
            .filter(|s| !s.is_empty())
            .ok_or((errcode::SECRET_MISSING, "appsecret missing"))?;
        let app = self
            .apps
            .get(appid)
            .ok_or((errcode::INVALID_APPID, "invalid appid"))?;
        if app.secret != secret {
            return Err((errcode::INVALID_SECRET, "invalid appsecret"));
        }
        Ok(app)
    }

    /// Which app an access token belongs to.
    fn check_token(&self, token: Option<&str>) -> Result<String, WxError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or((errcode::ACCESS_TOKEN_MISSING, "access_token missing"))?;
        let record = self.tokens.get(token).ok_or((
            errcode::INVALID_ACCESS_TOKEN,
            "invalid credential, access_token is invalid or not latest",
        ))?;
        if self.now() >= record.expires_at {
            return Err((errcode::ACCESS_TOKEN_EXPIRED, "access_token expired"));
        }
        Ok(record.appid.clone())
    }

    fn sweep(&mut self) {
        let now = self.now();
        // Used codes are kept for their whole life so that a replay gets 40163.
        self.login_codes
            .retain(|_, c| now - c.issued_at < CODE_LIFETIME_SECS);
        self.phone_codes
            .retain(|_, c| now - c.issued_at < CODE_LIFETIME_SECS);
        self.oauth_codes
            .retain(|_, c| now - c.issued_at < CODE_LIFETIME_SECS);
        self.tokens.retain(|_, t| now < t.expires_at);
        self.sns_tokens.retain(|_, t| now < t.expires_at);
    }

    // ---- WeChat's endpoints ----

    pub(crate) fn jscode2session(&mut self, q: &HashMap<String, String>) -> Result<Value, WxError> {
        let get = |k: &str| q.get(k).map(String::as_str);
        let appid = get("appid");
        self.check_app(appid, get("secret"))?;
        let appid = appid.unwrap_or_default().to_owned();
        if get("grant_type") != Some("authorization_code") {
            return Err((errcode::INVALID_GRANT_TYPE, "invalid grant_type"));
        }
        let code = get("js_code")
            .filter(|c| !c.is_empty())
            .ok_or((errcode::CODE_MISSING, "missing code"))?;
        let now = self.now();
        let issued = self
            .login_codes
            .get_mut(code)
            .filter(|c| c.appid == appid && now - c.issued_at < CODE_LIFETIME_SECS)
            .ok_or((errcode::INVALID_CODE, "invalid code"))?;
        if issued.used {
            return Err((errcode::CODE_USED, "code been used"));
        }
        issued.used = true;
        let user_id = issued.user_id;
        let app_unionid = self.apps.get(&appid).is_some_and(|a| a.unionid);
        let user = self
            .users
            .get(&user_id)
            .ok_or((errcode::INVALID_CODE, "invalid code"))?;
        let session = user
            .apps
            .get(&appid)
            .ok_or((errcode::INVALID_CODE, "invalid code"))?;
        let mut body = json!({
            "openid": session.openid,
            "session_key": session.session_key.expose_text(),
        });
        if app_unionid {
            body["unionid"] = json!(user.unionid);
        }
        Ok(body)
    }

    fn issue_token(&mut self, appid: &str) -> String {
        let token = random_text(96);
        let expires_at = self.now() + TOKEN_LIFETIME_SECS;
        self.tokens.insert(
            token.clone(),
            TokenRecord {
                appid: appid.to_owned(),
                expires_at,
            },
        );
        token
    }

    pub(crate) fn token(&mut self, q: &HashMap<String, String>) -> Result<Value, WxError> {
        let get = |k: &str| q.get(k).map(String::as_str);
        if get("grant_type") != Some("client_credential") {
            return Err((errcode::INVALID_GRANT_TYPE, "invalid grant_type"));
        }
        let appid = get("appid");
        self.check_app(appid, get("secret"))?;
        let appid = appid.unwrap_or_default().to_owned();
        self.sweep();
        let now = self.now();
        // Each call supersedes the previous token, which keeps working 5 more minutes.
        let previous = self.apps.get(&appid).and_then(|a| a.ordinary.clone());
        if let Some(record) = previous.and_then(|p| self.tokens.get_mut(&p)) {
            record.expires_at = record.expires_at.min(now + TOKEN_OVERLAP_SECS);
        }
        let token = self.issue_token(&appid);
        if let Some(app) = self.apps.get_mut(&appid) {
            app.ordinary = Some(token.clone());
        }
        Ok(json!({ "access_token": token, "expires_in": TOKEN_LIFETIME_SECS }))
    }

    pub(crate) fn stable_token(&mut self, body: &Value) -> Result<Value, WxError> {
        if body.get("grant_type").and_then(Value::as_str) != Some("client_credential") {
            return Err((errcode::INVALID_GRANT_TYPE, "invalid grant_type"));
        }
        let appid = body.get("appid").and_then(Value::as_str);
        self.check_app(appid, body.get("secret").and_then(Value::as_str))?;
        let appid = appid.unwrap_or_default().to_owned();
        let force = body
            .get("force_refresh")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        self.sweep();
        let now = self.now();
        let current = self
            .apps
            .get(&appid)
            .and_then(|a| a.stable.clone())
            .and_then(|t| self.tokens.get(&t).map(|r| (t, r.expires_at)));
        if force {
            let app = self.apps.get_mut(&appid).expect("checked above");
            app.forced_at.retain(|at| now - at < 86_400);
            if app
                .forced_at
                .last()
                .is_some_and(|last| now - last < FORCE_REFRESH_INTERVAL_SECS)
            {
                return Err((
                    errcode::RATE_LIMITED,
                    "api minute-quota reach limit, force_refresh needs 30 s between calls",
                ));
            }
            if app.forced_at.len() >= FORCE_REFRESH_PER_DAY {
                return Err((errcode::QUOTA_EXHAUSTED, "reach max api daily quota limit"));
            }
            app.forced_at.push(now);
            // A forced refresh kills the previous stable token at once.
            if let Some((old, _)) = current {
                self.tokens.remove(&old);
            }
        } else if let Some((token, expires_at)) = current {
            if expires_at - now > TOKEN_OVERLAP_SECS {
                return Ok(json!({ "access_token": token, "expires_in": expires_at - now }));
            }
        }
        // Rotated (the old one, if any, lives out its remaining minutes).
        let token = self.issue_token(&appid);
        if let Some(app) = self.apps.get_mut(&appid) {
            app.stable = Some(token.clone());
        }
        Ok(json!({ "access_token": token, "expires_in": TOKEN_LIFETIME_SECS }))
    }

    pub(crate) fn revoke_tokens(&mut self, appid: &str) -> Result<(), DeviceError> {
        let app = self
            .apps
            .get_mut(appid)
            .ok_or((404, "unknown appid".to_owned()))?;
        app.stable = None;
        app.ordinary = None;
        self.tokens.retain(|_, t| t.appid != appid);
        Ok(())
    }

    pub(crate) fn getuserphonenumber(
        &mut self,
        q: &HashMap<String, String>,
        body: &Value,
    ) -> Result<Value, WxError> {
        let appid = self.check_token(q.get("access_token").map(String::as_str))?;
        let code = body
            .get("code")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .ok_or((errcode::INVALID_CODE, "invalid code"))?;
        let openid = body.get("openid").and_then(Value::as_str);
        let now = self.now();
        let issued = self
            .phone_codes
            .get(code)
            .filter(|c| c.appid == appid && now - c.issued_at < CODE_LIFETIME_SECS && !c.used)
            .ok_or((errcode::INVALID_CODE, "invalid code"))?;
        let user = self
            .users
            .get(&issued.user_id)
            .ok_or((errcode::INVALID_CODE, "invalid code"))?;
        // With openid, WeChat checks that the code belongs to that user.
        if let Some(openid) = openid {
            if user.apps.get(&appid).map(|s| s.openid.as_str()) != Some(openid) {
                return Err((errcode::INVALID_CODE, "invalid code"));
            }
        }
        let phone = user
            .phone
            .clone()
            .ok_or((errcode::INVALID_CODE, "invalid code"))?;
        if let Some(issued) = self.phone_codes.get_mut(code) {
            issued.used = true;
        }
        let country: i64 = phone.country_code().parse().unwrap_or(86);
        Ok(ok(json!({
            "phone_info": {
                "phoneNumber": display_number(&phone),
                "purePhoneNumber": phone.pure(),
                "countryCode": country,
                "watermark": { "timestamp": now, "appid": appid },
            }
        })))
    }

    /// The user in the token's app whose session key signed the request.
    fn check_signature(&self, q: &HashMap<String, String>) -> Result<(String, u64), WxError> {
        let appid = self.check_token(q.get("access_token").map(String::as_str))?;
        let openid = q.get("openid").map(String::as_str).unwrap_or_default();
        let (user_id, session) = self
            .users
            .iter()
            .find_map(|(id, u)| {
                u.apps
                    .get(&appid)
                    .filter(|s| s.openid == openid)
                    .map(|s| (*id, s))
            })
            .ok_or((errcode::INVALID_OPENID, "invalid openid"))?;
        let expected = session_hmac(&session.session_key, "");
        let given = q.get("signature").map(|s| s.to_ascii_lowercase());
        if q.get("sig_method").map(String::as_str) != Some("hmac_sha256")
            || given.as_deref() != Some(expected.as_str())
        {
            return Err((errcode::INVALID_SIGNATURE, "invalid signature"));
        }
        Ok((appid, user_id))
    }

    pub(crate) fn checksession(&mut self, q: &HashMap<String, String>) -> Result<Value, WxError> {
        self.check_signature(q)?;
        Ok(ok(json!({})))
    }

    pub(crate) fn resetusersessionkey(
        &mut self,
        q: &HashMap<String, String>,
    ) -> Result<Value, WxError> {
        let (appid, user_id) = self.check_signature(q)?;
        let session = self
            .users
            .get_mut(&user_id)
            .and_then(|u| u.apps.get_mut(&appid))
            .ok_or((errcode::INVALID_OPENID, "invalid openid"))?;
        session.session_key = new_session_key();
        Ok(ok(json!({
            "openid": session.openid,
            "session_key": session.session_key.expose_text(),
        })))
    }

    // ---- the device (the mini program) ----

    pub(crate) fn create_user(&mut self, new: NewSimUser) -> Result<u64, DeviceError> {
        let nickname = new.nickname.trim();
        if nickname.is_empty() || nickname.chars().count() > 64 {
            return Err((400, "nickname must be 1 to 64 characters".to_owned()));
        }
        let phone = new
            .phone
            .as_deref()
            .map(|pure| PhoneNumber::new(pure, &new.country_code))
            .transpose()
            .map_err(|e| (400, e.to_string()))?;
        let id = self.next_user;
        self.next_user += 1;
        self.users.insert(
            id,
            User {
                nickname: nickname.to_owned(),
                avatar_url: if new.avatar_url.is_empty() {
                    super::api::DEFAULT_AVATAR_URL.to_owned()
                } else {
                    new.avatar_url
                },
                phone,
                unionid: format!("o{}", random_text(27)),
                apps: HashMap::new(),
            },
        );
        Ok(id)
    }

    /// The app, which must be of a kind that `wants` (a mini program for `wx.login`
    /// and its payloads, another kind for OAuth consent).
    fn app_of_kind(
        &self,
        appid: &str,
        wants: impl Fn(Channel) -> bool,
    ) -> Result<&AppState, DeviceError> {
        let app = self
            .apps
            .get(appid)
            .ok_or((404, format!("unknown appid {appid}")))?;
        if !wants(app.kind) {
            return Err((
                409,
                format!(
                    "app {appid} is a {}: {}",
                    app.kind,
                    if app.kind.has_session_key() {
                        "use login, user-info and phone"
                    } else {
                        "use oauth-code (or WeChat's authorize page)"
                    }
                ),
            ));
        }
        Ok(app)
    }

    fn user_app(&self, user_id: u64, appid: &str) -> Result<(&User, &UserInApp), DeviceError> {
        self.app_of_kind(appid, Channel::has_session_key)?;
        let user = self
            .users
            .get(&user_id)
            .ok_or((404, format!("unknown user {user_id}")))?;
        let session = user.apps.get(appid).ok_or((
            409,
            "the user has not logged in to this app yet: call login first".to_owned(),
        ))?;
        Ok((user, session))
    }

    /// `wx.login`: a new one-time code, and a new session key for this user and app.
    pub(crate) fn login(&mut self, user_id: u64, appid: &str) -> Result<LoginCode, DeviceError> {
        self.app_of_kind(appid, Channel::has_session_key)?;
        self.sweep();
        let user = self
            .users
            .get_mut(&user_id)
            .ok_or((404, format!("unknown user {user_id}")))?;
        user.enter(appid).session_key = new_session_key();
        let code = random_text(32);
        let issued_at = self.now();
        self.login_codes.insert(
            code.clone(),
            IssuedCode {
                appid: appid.to_owned(),
                user_id,
                issued_at,
                used: false,
            },
        );
        Ok(LoginCode { code })
    }

    /// Legacy `getUserInfo`: the profile signed and encrypted under the current key.
    pub(crate) fn user_info(
        &self,
        user_id: u64,
        appid: &str,
    ) -> Result<UserInfoBundle, DeviceError> {
        let (user, session) = self.user_app(user_id, appid)?;
        let raw_data = json!({
            "nickName": user.nickname,
            "gender": 0,
            "language": "zh_CN",
            "city": "",
            "province": "",
            "country": "",
            "avatarUrl": user.avatar_url,
        })
        .to_string();
        let mut full = json!({
            "openId": session.openid,
            "nickName": user.nickname,
            "gender": 0,
            "language": "zh_CN",
            "city": "",
            "province": "",
            "country": "",
            "avatarUrl": user.avatar_url,
            "watermark": { "timestamp": self.now(), "appid": appid },
        });
        if self.apps.get(appid).is_some_and(|a| a.unionid) {
            full["unionId"] = json!(user.unionid);
        }
        let iv = random_bytes::<16>();
        Ok(UserInfoBundle {
            signature: raw_data_signature(&raw_data, &session.session_key),
            encrypted_data: encrypt_payload(&session.session_key, &iv, full.to_string().as_bytes()),
            iv: encode_base64(&iv),
            raw_data,
        })
    }

    /// The phone button: a one-time phone code, and the legacy encrypted payload.
    pub(crate) fn phone(&mut self, user_id: u64, appid: &str) -> Result<PhoneBundle, DeviceError> {
        let (user, session) = self.user_app(user_id, appid)?;
        let phone = user.phone.clone().ok_or((
            409,
            "the user has no phone number bound to WeChat".to_owned(),
        ))?;
        let now = self.now();
        let plain = json!({
            "phoneNumber": display_number(&phone),
            "purePhoneNumber": phone.pure(),
            "countryCode": phone.country_code(),
            "watermark": { "timestamp": now, "appid": appid },
        });
        let iv = random_bytes::<16>();
        let encrypted_data =
            encrypt_payload(&session.session_key, &iv, plain.to_string().as_bytes());
        let code = random_text(32);
        self.phone_codes.insert(
            code.clone(),
            IssuedCode {
                appid: appid.to_owned(),
                user_id,
                issued_at: now,
                used: false,
            },
        );
        Ok(PhoneBundle {
            code,
            encrypted_data,
            iv: encode_base64(&iv),
        })
    }

    /// The person agrees to an OAuth login of `consent.appid` (an Official Account's web
    /// authorisation, a website's QR code, a mobile App's SDK): a one-time code for the
    /// app, exchanged at `/sns/oauth2/access_token`.
    pub(crate) fn oauth_code(
        &mut self,
        user_id: u64,
        consent: &OAuthConsent,
    ) -> Result<LoginCode, DeviceError> {
        let appid = consent.appid.as_str();
        let kind = self
            .app_of_kind(appid, |kind| !kind.has_session_key())?
            .kind;
        let allowed: &[&str] = match kind {
            Channel::OfficialAccount => &["snsapi_userinfo", "snsapi_base"],
            Channel::Website => &["snsapi_login"],
            Channel::MobileApp | Channel::MiniProgram => &["snsapi_userinfo"],
        };
        let scope = consent.scope.as_deref().unwrap_or(allowed[0]);
        if !allowed.contains(&scope) {
            return Err((
                400,
                format!(
                    "scope {scope} is not one of a {kind}'s: {}",
                    allowed.join(", ")
                ),
            ));
        }
        if consent.snapshot && (kind != Channel::OfficialAccount || scope != "snsapi_base") {
            return Err((
                400,
                "a snapshot page is an Official Account's, with scope snsapi_base".to_owned(),
            ));
        }
        self.sweep();
        let user = self
            .users
            .get_mut(&user_id)
            .ok_or((404, format!("unknown user {user_id}")))?;
        user.enter(appid);
        let code = random_text(32);
        let issued_at = self.now();
        self.oauth_codes.insert(
            code.clone(),
            OAuthCode {
                appid: appid.to_owned(),
                user_id,
                scope: scope.to_owned(),
                snapshot: consent.snapshot,
                issued_at,
                used: false,
            },
        );
        Ok(LoginCode { code })
    }

    /// WeChat's consent page (`/connect/oauth2/authorize` for an Official Account,
    /// `/connect/qrconnect` for a website): the person `sim_user` agrees, and the browser
    /// is sent back to `redirect_uri` with a code and the `state` unchanged. Answers
    /// the URL to redirect to.
    pub(crate) fn consent(
        &mut self,
        kind: Channel,
        q: &HashMap<String, String>,
    ) -> Result<String, DeviceError> {
        let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let appid = get("appid").ok_or((400, "appid is missing".to_owned()))?;
        let redirect_uri =
            get("redirect_uri").ok_or((400, "redirect_uri is missing".to_owned()))?;
        if get("response_type") != Some("code") {
            return Err((400, "response_type must be code".to_owned()));
        }
        let app_kind = self
            .apps
            .get(appid)
            .ok_or((404, format!("unknown appid {appid}")))?
            .kind;
        if app_kind != kind {
            return Err((400, format!("app {appid} is a {app_kind}, not a {kind}")));
        }
        let user_id: u64 = get("sim_user").and_then(|u| u.parse().ok()).ok_or((
            400,
            "the simulated consent needs sim_user=<user id>: the person who agrees".to_owned(),
        ))?;
        let consent = OAuthConsent {
            appid: appid.to_owned(),
            scope: get("scope").map(str::to_owned),
            snapshot: get("sim_snapshot") == Some("1"),
        };
        let code = self.oauth_code(user_id, &consent)?.code;
        let mut url = url::Url::parse(redirect_uri)
            .map_err(|_| (400, "redirect_uri is not a URL".to_owned()))?;
        url.set_fragment(None);
        url.query_pairs_mut().append_pair("code", &code);
        if let Some(state) = get("state") {
            url.query_pairs_mut().append_pair("state", state);
        }
        Ok(url.into())
    }

    pub(crate) fn oauth_access_token(
        &mut self,
        q: &HashMap<String, String>,
    ) -> Result<Value, WxError> {
        let get = |k: &str| q.get(k).map(String::as_str);
        let appid = get("appid");
        self.check_app(appid, get("secret"))?;
        let appid = appid.unwrap_or_default().to_owned();
        if get("grant_type") != Some("authorization_code") {
            return Err((errcode::INVALID_GRANT_TYPE, "invalid grant_type"));
        }
        let code = get("code")
            .filter(|c| !c.is_empty())
            .ok_or((errcode::CODE_MISSING, "missing code"))?;
        let now = self.now();
        let issued = self
            .oauth_codes
            .get_mut(code)
            .filter(|c| c.appid == appid)
            .ok_or((errcode::INVALID_CODE, "invalid code"))?;
        if issued.used {
            return Err((errcode::CODE_USED, "code been used"));
        }
        if now - issued.issued_at >= CODE_LIFETIME_SECS {
            return Err((errcode::OAUTH_CODE_EXPIRED, "code expired"));
        }
        issued.used = true;
        let (user_id, scope, snapshot) = (issued.user_id, issued.scope.clone(), issued.snapshot);
        let app_unionid = self.apps.get(&appid).is_some_and(|a| a.unionid);
        let user = self
            .users
            .get(&user_id)
            .ok_or((errcode::INVALID_CODE, "invalid code"))?;
        let openid = if snapshot {
            // A virtual openid: not the person's, and new every time.
            format!("o{}", random_text(27))
        } else {
            user.apps
                .get(&appid)
                .ok_or((errcode::INVALID_CODE, "invalid code"))?
                .openid
                .clone()
        };
        // WeChat sends the unionid when the scope reads the profile (snsapi_base only
        // names the openid) and the app is bound to an Open Platform account.
        let unionid =
            (app_unionid && !snapshot && scope != "snsapi_base").then(|| user.unionid.clone());
        let token = random_text(96);
        self.sns_tokens.insert(
            token.clone(),
            SnsToken {
                appid,
                user_id,
                scope: scope.clone(),
                expires_at: now + TOKEN_LIFETIME_SECS,
            },
        );
        let mut body = json!({
            "access_token": token,
            "expires_in": TOKEN_LIFETIME_SECS,
            "refresh_token": random_text(96),
            "openid": openid,
            "scope": scope,
        });
        if let Some(unionid) = unionid {
            body["unionid"] = json!(unionid);
        }
        if snapshot {
            body["is_snapshotuser"] = json!(1);
        }
        Ok(body)
    }

    pub(crate) fn sns_userinfo(&mut self, q: &HashMap<String, String>) -> Result<Value, WxError> {
        let token = q
            .get("access_token")
            .map(String::as_str)
            .filter(|t| !t.is_empty())
            .ok_or((errcode::ACCESS_TOKEN_MISSING, "access_token missing"))?;
        let record = self.sns_tokens.get(token).ok_or((
            errcode::INVALID_ACCESS_TOKEN,
            "invalid credential, access_token is invalid or not latest",
        ))?;
        if self.now() >= record.expires_at {
            return Err((errcode::ACCESS_TOKEN_EXPIRED, "access_token expired"));
        }
        if record.scope == "snsapi_base" {
            return Err((errcode::API_UNAUTHORIZED, "api unauthorized"));
        }
        let user = self
            .users
            .get(&record.user_id)
            .ok_or((errcode::INVALID_OPENID, "invalid openid"))?;
        let openid = user
            .apps
            .get(&record.appid)
            .map(|s| s.openid.as_str())
            .filter(|o| q.get("openid").map(String::as_str) == Some(*o))
            .ok_or((errcode::INVALID_OPENID, "invalid openid"))?;
        let mut body = json!({
            "openid": openid,
            "nickname": user.nickname,
            "sex": 0,
            "province": "",
            "city": "",
            "country": "",
            "headimgurl": user.avatar_url,
            "privilege": [],
        });
        if self.apps.get(&record.appid).is_some_and(|a| a.unionid) {
            body["unionid"] = json!(user.unionid);
        }
        Ok(body)
    }

    /// The user's current session key in `appid` (for tests).
    pub(crate) fn session_key(&self, user_id: u64, appid: &str) -> Option<SessionKey> {
        self.users
            .get(&user_id)?
            .apps
            .get(appid)
            .map(|s| s.session_key.clone())
    }

    /// The user's openid in `appid`, once they logged in there.
    pub(crate) fn openid(&self, user_id: u64, appid: &str) -> Option<String> {
        self.users
            .get(&user_id)?
            .apps
            .get(appid)
            .map(|s| s.openid.clone())
    }
}

/// `phoneNumber` as WeChat formats it: bare for China, `+cc number` otherwise.
fn display_number(phone: &PhoneNumber) -> String {
    if phone.country_code() == "86" {
        phone.pure().to_owned()
    } else {
        format!("+{} {}", phone.country_code(), phone.pure())
    }
}
