//! The world the use cases run in during these tests: mocked ports where a test wants
//! to say which calls happen (and which must not), small reversible fakes where it
//! wants to look at what was sealed or issued, and the application's in-memory account
//! repository so every test can read the events that were (or were not) committed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use miniauth_application::memory::{InMemoryAccounts, RecordedEvent};
use miniauth_application::ports::{
    AccessToken, AccessTokenError, AccountRepository, AttemptLimiter, BrowserState, Clock,
    CommitError, IssuedState, LoadedAccount, MockAttemptLimiter, MockBindingRegistry,
    MockUserDirectory, MockWeChatApi, PersonalDataVault, PortError, RefreshError, RefreshToken,
    RefreshTokenStore, ResultClaims, SessionId, SessionOwner, SessionScope, TicketClaims,
    TicketCodec, TicketError, TokenIssuer, TokenSubject, UserRecord, UserStatus,
};
use miniauth_application::{
    Actor, AppCatalog, AppError, AppSettings, Lifetimes, MiniAuth, Ports, RegistrationPolicy,
    RequestContext,
};
use miniauth_domain::crypto::{
    encode_base64, encrypt_payload, raw_data_signature, WatermarkPolicy,
};
use miniauth_domain::{
    AccountId, AppId, BindMethod, OpenId, PersonalField, PhoneNumber, PhoneSource, PhoneVerified,
    ProfileDecrypted, ProfileSource, SealedDatum, SealedSecret, SealedUnionId, SessionKey,
    SessionObtained, SocialAccountEvent, TenantId, UnbindReason, Unbound, UnionId, UserBound,
    UserId,
};

/// The app most tests log in to.
pub const APP: &str = "wx4f4bc4dec97d474b";
/// A second app of the same tenant (tickets for it must not work in `APP`).
pub const OTHER_APP: &str = "wx00000000000000b2";
/// The WeChat identity most tests use.
pub const OPENID: &str = "oGZUI0egBJY1zhBYw2KhdUfwVJJE";
/// Session keys of successive `wx.login`s, and one the account never held.
pub const KEY1: &str = "tiihtNczf5v6AKRyjwEUhQ==";
pub const KEY2: &str = "o0q0otL8aEzpcZL/FT9WsQ==";
pub const KEY3: &str = "AAECAwQFBgcICQoLDA0ODw==";
/// A phone number as WeChat hands it out.
pub const PHONE: &str = "13800138000";
/// The tenant of both apps.
pub const TENANT: &str = "acme";

pub type Store = Arc<InMemoryAccounts>;

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap()
}

pub fn appid(raw: &str) -> AppId {
    AppId::parse(raw).unwrap()
}

pub fn openid(raw: &str) -> OpenId {
    OpenId::parse(raw).unwrap()
}

pub fn user_id(raw: i64) -> UserId {
    UserId::new(raw).unwrap()
}

pub fn tenant() -> TenantId {
    TenantId::parse(TENANT).unwrap()
}

pub fn key(text: &str) -> SessionKey {
    SessionKey::parse(text).unwrap()
}

pub fn phone() -> PhoneNumber {
    PhoneNumber::new(PHONE, "86").unwrap()
}

/// The account of (`APP`, `OPENID`).
pub fn account() -> AccountId {
    account_in(APP)
}

pub fn account_in(app: &str) -> AccountId {
    AccountId::new(&appid(app), &openid(OPENID))
}

pub fn ctx() -> RequestContext {
    RequestContext {
        request_id: "req-1".into(),
        actor: Actor::MiniProgram,
        client_ip: Some("203.0.113.9".parse().unwrap()),
    }
}

pub fn user(id: i64) -> UserRecord {
    UserRecord {
        id: user_id(id),
        tenant: tenant(),
        account: Some(format!("user{id}")),
        mobile: Some(phone()),
        nickname: None,
        status: UserStatus::Active,
    }
}

pub fn disabled_user(id: i64) -> UserRecord {
    UserRecord {
        status: UserStatus::Disabled,
        ..user(id)
    }
}

pub fn app_settings(app: &str, registration: RegistrationPolicy) -> AppSettings {
    AppSettings {
        appid: appid(app),
        kind: miniauth_domain::Channel::MiniProgram,
        redirect_uris: Vec::new(),
        tenant: tenant(),
        registration,
        watermark: WatermarkPolicy::default(),
        legacy_payloads: true,
        payload_rejections_per_key: miniauth_application::DEFAULT_PAYLOAD_REJECTIONS_PER_KEY,
        link_by_unionid: true,
    }
}

// ---------------------------------------------------------------- fakes

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> String {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

/// How the fake vault seals a session key: reversible, but not the plaintext.
pub fn sealed_secret(key_text: &str) -> SealedSecret {
    SealedSecret::from_sealed_text(format!("secret:{}", hex(key_text.as_bytes())))
}

/// How the fake vault seals a personal datum.
pub fn sealed_datum(text: &str) -> SealedDatum {
    SealedDatum::from_sealed_text(format!("datum:{}", hex(text.as_bytes())))
}

/// A vault that seals reversibly (hex with a prefix) and remembers what it did, so a
/// test can check what was sealed, which keys were tried, and what was forgotten.
#[derive(Default)]
pub struct FakeVault {
    /// Session keys sealed, as text.
    pub secrets_sealed: Mutex<Vec<String>>,
    /// Session keys opened, as text, in the order they were tried.
    pub secrets_unsealed: Mutex<Vec<String>>,
    /// Personal data sealed, with the account and field it was sealed for.
    pub personal_sealed: Mutex<Vec<(AccountId, PersonalField, String)>>,
    /// Accounts whose data key was destroyed.
    pub forgotten: Mutex<Vec<AccountId>>,
}

impl FakeVault {
    /// The personal data sealed, but the client IPs every commit seals.
    pub fn personal_sealed(&self) -> Vec<String> {
        let sealed = self.personal_sealed.lock().unwrap();
        sealed
            .iter()
            .filter(|(_, field, _)| *field != PersonalField::ClientIp)
            .map(|(_, _, text)| text.clone())
            .collect()
    }

    /// Every personal datum sealed, with its field.
    pub fn sealed_fields(&self) -> Vec<(PersonalField, String)> {
        let sealed = self.personal_sealed.lock().unwrap();
        sealed
            .iter()
            .map(|(_, field, text)| (*field, text.clone()))
            .collect()
    }

    pub fn secrets_unsealed(&self) -> Vec<String> {
        self.secrets_unsealed.lock().unwrap().clone()
    }

    pub fn forgotten(&self) -> Vec<AccountId> {
        self.forgotten.lock().unwrap().clone()
    }
}

#[async_trait]
impl PersonalDataVault for FakeVault {
    async fn seal_secret(
        &self,
        _account: &AccountId,
        key: &SessionKey,
    ) -> Result<SealedSecret, PortError> {
        let text = key.expose_text().to_owned();
        self.secrets_sealed.lock().unwrap().push(text.clone());
        Ok(sealed_secret(&text))
    }

    async fn unseal_secret(
        &self,
        _account: &AccountId,
        sealed: &SealedSecret,
    ) -> Result<SessionKey, PortError> {
        let hexed = sealed
            .as_sealed_text()
            .strip_prefix("secret:")
            .ok_or_else(|| PortError::Internal("not sealed by this vault".into()))?;
        let text = unhex(hexed);
        self.secrets_unsealed.lock().unwrap().push(text.clone());
        Ok(key(&text))
    }

    async fn seal_personal(
        &self,
        account: &AccountId,
        field: PersonalField,
        plaintext: &str,
    ) -> Result<SealedDatum, PortError> {
        self.personal_sealed
            .lock()
            .unwrap()
            .push((account.clone(), field, plaintext.to_owned()));
        Ok(sealed_datum(plaintext))
    }

    async fn unseal_personal(
        &self,
        account: &AccountId,
        _field: PersonalField,
        sealed: &SealedDatum,
    ) -> Result<Option<String>, PortError> {
        if self.forgotten.lock().unwrap().contains(account) {
            return Ok(None);
        }
        let hexed = sealed
            .as_sealed_text()
            .strip_prefix("datum:")
            .ok_or_else(|| PortError::Internal("not sealed by this vault".into()))?;
        Ok(Some(unhex(hexed)))
    }

    async fn seal_unionid(
        &self,
        account: &AccountId,
        unionid: &UnionId,
    ) -> Result<SealedUnionId, PortError> {
        Ok(SealedUnionId {
            hash: format!("hash:{}", hex(unionid.as_str().as_bytes())),
            sealed: Some(
                self.seal_personal(account, PersonalField::UnionId, unionid.as_str())
                    .await?,
            ),
        })
    }

    async fn forget(&self, account: &AccountId) -> Result<(), PortError> {
        self.forgotten.lock().unwrap().push(account.clone());
        Ok(())
    }
}

/// A ticket codec whose tickets are readable: `ticket|appid|openid|seq|expires`.
/// Signature and expiry are checked for real, so tests can also hand it garbage.
pub struct FakeTickets;

pub fn ticket(app: &str, seq: u64) -> String {
    let expires = now() + Lifetimes::default().ticket;
    format!("ticket|{app}|{OPENID}|{seq}|{}", expires.timestamp())
}

impl TicketCodec for FakeTickets {
    fn issue(&self, claims: &TicketClaims) -> String {
        format!(
            "ticket|{}|{}|{}|{}{}",
            claims.appid,
            claims.openid,
            claims.session_seq,
            claims.expires_at.timestamp(),
            if claims.spent { "|spent" } else { "" }
        )
    }

    fn verify(&self, ticket: &str, now: DateTime<Utc>) -> Result<TicketClaims, TicketError> {
        let (ticket, spent) = match ticket.strip_suffix("|spent") {
            Some(rest) => (rest, true),
            None => (ticket, false),
        };
        let parts: Vec<&str> = ticket.split('|').collect();
        let [tag, app, open, seq, expires] = parts[..] else {
            return Err(TicketError::Malformed);
        };
        if tag != "ticket" {
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
        Ok(TicketClaims {
            appid: AppId::parse(app).map_err(|_| TicketError::Malformed)?,
            openid: OpenId::parse(open).map_err(|_| TicketError::Malformed)?,
            session_seq: seq.parse().map_err(|_| TicketError::Malformed)?,
            issued_at: expires_at - Lifetimes::default().ticket,
            expires_at,
            spent,
        })
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

/// Reads a ticket the fake codec issued back into its claims.
pub fn read_ticket(ticket: &str) -> TicketClaims {
    FakeTickets.verify(ticket, now()).unwrap()
}

/// Access tokens that name their subject: `access|user|appid`.
pub struct FakeTokens;

impl TokenIssuer for FakeTokens {
    fn issue(&self, subject: &TokenSubject, _now: DateTime<Utc>) -> Result<AccessToken, PortError> {
        let app = subject.appid.as_ref().map_or("-", AppId::as_str);
        Ok(AccessToken {
            token: format!("access|{}|{app}", subject.user_id),
            expires_in: 900,
        })
    }

    fn verify(&self, _token: &str, _now: DateTime<Utc>) -> Result<TokenSubject, AccessTokenError> {
        Err(AccessTokenError::Invalid)
    }

    fn inspect(
        &self,
        _token: &str,
        _now: DateTime<Utc>,
    ) -> Result<miniauth_application::ports::VerifiedAccessToken, AccessTokenError> {
        Err(AccessTokenError::Invalid)
    }
}

/// The session id the fake refresh store gives its `n`th family (from 1).
pub fn session_id(n: usize) -> SessionId {
    SessionId::parse(&format!("s{n}")).unwrap()
}

/// The subject of an access token of user `id`, logged in through `APP`.
pub fn logged_in(id: i64) -> TokenSubject {
    TokenSubject {
        user_id: user_id(id),
        tenant: tenant(),
        appid: Some(appid(APP)),
        session: session_id(1),
    }
}

/// A refresh-token store that only issues, and remembers for whom and which sessions
/// were revoked.
#[derive(Default)]
pub struct FakeRefresh {
    pub issued: Mutex<Vec<TokenSubject>>,
    pub revoked: Mutex<Vec<(UserId, SessionScope)>>,
}

impl FakeRefresh {
    /// The (user, scope) of every `revoke_sessions` call.
    pub fn revoked(&self) -> Vec<(UserId, SessionScope)> {
        self.revoked.lock().unwrap().clone()
    }
}

#[async_trait]
impl RefreshTokenStore for FakeRefresh {
    async fn issue(
        &self,
        owner: &SessionOwner,
        _now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), PortError> {
        let mut issued = self.issued.lock().unwrap();
        let subject = TokenSubject::new(owner.clone(), session_id(issued.len() + 1));
        issued.push(subject.clone());
        Ok((
            subject,
            RefreshToken {
                token: format!("refresh|{}", owner.user_id),
                expires_in: 86_400,
            },
        ))
    }

    async fn revoke_sessions(
        &self,
        user: UserId,
        scope: &SessionScope,
        _now: DateTime<Utc>,
    ) -> Result<u64, PortError> {
        self.revoked.lock().unwrap().push((user, scope.clone()));
        Ok(1)
    }

    async fn session_live(
        &self,
        _subject: &TokenSubject,
        _now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        Ok(true)
    }

    async fn rotate(
        &self,
        _token: &str,
        _now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), RefreshError> {
        Err(RefreshError::Unknown)
    }

    async fn revoke(
        &self,
        _token: &str,
        _user: UserId,
        _now: DateTime<Utc>,
    ) -> Result<(), RefreshError> {
        Err(RefreshError::Unknown)
    }

    async fn inspect(
        &self,
        _token: &str,
        _now: DateTime<Utc>,
    ) -> Result<Option<miniauth_application::ports::LiveRefreshToken>, PortError> {
        Ok(None)
    }

    async fn revoke_family_of(&self, _token: &str, _now: DateTime<Utc>) -> Result<bool, PortError> {
        Ok(false)
    }
}

pub use miniauth_application::memory::InMemoryUsageCounters as FakeCounters;

pub struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        now()
    }
}

// ---------------------------------------------------------------- the world

/// Every port, ready to receive expectations; `build` wires them into `MiniAuth`.
/// Mocks without expectations panic when called, so a port a test does not set up
/// is one the use case must not touch.
pub struct World {
    pub wechat: MockWeChatApi,
    pub users: MockUserDirectory,
    pub registry: MockBindingRegistry,
    pub tickets: Arc<dyn TicketCodec>,
    pub tokens: Arc<dyn TokenIssuer>,
    pub refresh: Arc<dyn RefreshTokenStore>,
    pub limiter: MockAttemptLimiter,
    pub vault: Arc<FakeVault>,
    pub fake_refresh: Arc<FakeRefresh>,
    pub counters: Arc<FakeCounters>,
    pub store: Store,
    pub apps: Vec<AppSettings>,
}

impl World {
    /// `APP` with registration `auto` and `OTHER_APP` with `auto`, both of `TENANT`.
    pub fn new() -> Self {
        Self::with_policy(RegistrationPolicy::Auto)
    }

    /// `APP` with `policy`; `OTHER_APP` with `auto`.
    pub fn with_policy(policy: RegistrationPolicy) -> Self {
        let fake_refresh = Arc::new(FakeRefresh::default());
        // Logins are within their rate unless a test says otherwise (it replaces the
        // mock).
        let mut limiter = MockAttemptLimiter::new();
        limiter.expect_hit().returning(|_, _| Ok(()));
        Self {
            wechat: MockWeChatApi::new(),
            users: MockUserDirectory::new(),
            registry: {
                // No other app of the tenant knows the identity's unionid, unless a
                // test says so.
                let mut registry = MockBindingRegistry::new();
                registry
                    .expect_bound_by_unionid()
                    .returning(|_, _, _| Ok(Vec::new()));
                registry
            },
            tickets: Arc::new(FakeTickets),
            tokens: Arc::new(FakeTokens),
            refresh: fake_refresh.clone(),
            limiter,
            vault: Arc::new(FakeVault::default()),
            fake_refresh,
            counters: Arc::new(FakeCounters::default()),
            store: Store::default(),
            apps: vec![
                app_settings(APP, policy),
                app_settings(OTHER_APP, RegistrationPolicy::Auto),
            ],
        }
    }

    /// Commits `events` to `id` as if earlier requests had (the "given").
    pub async fn given(&self, id: &AccountId, events: Vec<SocialAccountEvent>) {
        let context = self.store.load(id).await.unwrap();
        self.store
            .commit(context, events, HashMap::new())
            .await
            .unwrap();
    }

    /// The service, over the in-memory store.
    pub fn build(self) -> Built {
        let store = self.store.clone();
        self.build_over(store)
    }

    /// The service, over another account repository (that wraps `self.store`).
    pub fn build_over(self, accounts: Arc<dyn AccountRepository>) -> Built {
        self.store.start_sessions_with(self.refresh.clone());
        let limiter: Arc<dyn AttemptLimiter> = Arc::new(self.limiter);
        let ports = Ports {
            wechat: Arc::new(self.wechat),
            users: Arc::new(self.users),
            registry: Arc::new(self.registry),
            tickets: self.tickets,
            tokens: self.tokens,
            refresh: self.refresh,
            vault: self.vault.clone(),
            clock: Arc::new(FixedClock),
            limiter,
            counters: self.counters.clone(),
            accounts,
        };
        Built {
            auth: MiniAuth::new(ports, AppCatalog::new(self.apps), Lifetimes::default()),
            store: self.store,
            vault: self.vault,
            refresh: self.fake_refresh,
            counters: self.counters,
        }
    }
}

/// The service and what the tests look at afterwards.
pub struct Built {
    pub auth: MiniAuth,
    pub store: Store,
    pub vault: Arc<FakeVault>,
    pub refresh: Arc<FakeRefresh>,
    pub counters: Arc<FakeCounters>,
}

impl Built {
    /// Every event stored for `id`, oldest first.
    pub async fn events(&self, id: &AccountId) -> Vec<SocialAccountEvent> {
        self.envelopes(id)
            .await
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    pub async fn envelopes(&self, id: &AccountId) -> Vec<RecordedEvent> {
        self.store.events(id)
    }

    /// The events stored for `id` after the first `given` ones.
    pub async fn new_events(&self, id: &AccountId, given: usize) -> Vec<SocialAccountEvent> {
        self.events(id).await.into_iter().skip(given).collect()
    }

    /// Every event stored for `id`, as the JSON a database would hold.
    pub async fn stored_json(&self, id: &AccountId) -> String {
        serde_json::to_string(&self.events(id).await).unwrap()
    }

    /// Who the fake refresh store issued tokens for.
    pub fn refresh_issued_for(&self) -> Vec<UserId> {
        let issued = self.refresh.issued.lock().unwrap();
        issued.iter().map(|s| s.user_id).collect()
    }
}

/// What an error says to clients: its stable code.
pub fn code(error: &AppError) -> &'static str {
    miniauth_domain::ErrorCode::code(error)
}

// ---------------------------------------------------------------- given events

pub fn session(seq: u64, key_text: &str) -> SocialAccountEvent {
    session_in(APP, seq, key_text)
}

pub fn session_in(app: &str, seq: u64, key_text: &str) -> SocialAccountEvent {
    SocialAccountEvent::SessionObtained(SessionObtained {
        appid: appid(app),
        openid: openid(OPENID),
        unionid: None,
        channel: miniauth_domain::Channel::MiniProgram,
        session_key: Some(sealed_secret(key_text)),
        session_seq: seq,
        occurred_at: now(),
    })
}

pub fn bound(id: i64) -> SocialAccountEvent {
    SocialAccountEvent::UserBound(UserBound {
        user_id: user_id(id),
        via: BindMethod::PhoneMatch,
        linked_from: None,
        imported_from: None,
        occurred_at: now(),
    })
}

pub fn unbound(id: i64) -> SocialAccountEvent {
    SocialAccountEvent::Unbound(Unbound {
        user_id: user_id(id),
        reason: UnbindReason::UserRequest,
        occurred_at: now(),
    })
}

pub fn profile(nickname: &str, avatar: &str) -> SocialAccountEvent {
    SocialAccountEvent::ProfileDecrypted(ProfileDecrypted {
        nickname: sealed_datum(nickname),
        avatar_url: sealed_datum(avatar),
        unionid: None,
        via: ProfileSource::ClientSupplied,
        occurred_at: now(),
    })
}

pub fn phone_verified() -> SocialAccountEvent {
    SocialAccountEvent::PhoneVerified(PhoneVerified {
        phone: sealed_datum(PHONE),
        country_code: "86".into(),
        via: PhoneSource::PhoneCode,
        occurred_at: now(),
    })
}

// ---------------------------------------------------------------- WeChat payloads

/// A legacy `getUserInfo` answer, built as WeChat builds it.
pub struct UserInfo {
    pub raw_data: String,
    pub signature: String,
    pub encrypted_data: String,
    pub iv: String,
}

/// The user-info payload of `openid` in app `watermark_app`, under `key_text`.
pub fn user_info(key_text: &str, watermark_app: &str, payload_openid: &str) -> UserInfo {
    let key = key(key_text);
    let raw_data =
        r#"{"nickName":"Band","gender":1,"avatarUrl":"https://wx.qlogo.cn/mmopen/band/0"}"#;
    let plain = format!(
        r#"{{"openId":"{payload_openid}","nickName":"Band","gender":1,"language":"zh_CN","avatarUrl":"https://wx.qlogo.cn/mmopen/band/0","unionId":"ocMvos6NjeKLIBqg5Mr9QjxrP1FA","watermark":{{"timestamp":{},"appid":"{watermark_app}"}}}}"#,
        now().timestamp() - 5
    );
    let iv = [0x42u8; 16];
    UserInfo {
        raw_data: raw_data.to_owned(),
        signature: raw_data_signature(raw_data, &key),
        encrypted_data: encrypt_payload(&key, &iv, plain.as_bytes()),
        iv: encode_base64(&iv),
    }
}

/// A legacy `getPhoneNumber` payload under `key_text` for `watermark_app`:
/// (encryptedData, iv).
pub fn phone_payload(key_text: &str, watermark_app: &str) -> (String, String) {
    let plain = format!(
        r#"{{"phoneNumber":"+86{PHONE}","purePhoneNumber":"{PHONE}","countryCode":"86","watermark":{{"timestamp":{},"appid":"{watermark_app}"}}}}"#,
        now().timestamp() - 5
    );
    let iv = [0x17u8; 16];
    (
        encrypt_payload(&key(key_text), &iv, plain.as_bytes()),
        encode_base64(&iv),
    )
}

// ---------------------------------------------------------------- a store that loses races

/// What the scripted store does with one commit.
pub enum Script {
    /// Another instance commits these events first; this commit then conflicts.
    LoseRaceTo(Vec<SocialAccountEvent>),
    /// Another writer got there first (nothing visible changes).
    Conflict,
    /// The database is down.
    Fail,
}

/// An account repository over the in-memory one that follows a script for its first
/// commits and commits normally afterwards; counts commit attempts.
pub struct ScriptedStore {
    pub inner: Store,
    pub script: Mutex<VecDeque<Script>>,
    pub always_conflict: bool,
    pub commits: Arc<AtomicUsize>,
}

impl ScriptedStore {
    pub fn new(inner: Store, script: Vec<Script>) -> Arc<Self> {
        Arc::new(Self::unscripted(inner, script))
    }

    pub fn always_conflicting(inner: Store) -> Arc<Self> {
        Arc::new(Self {
            always_conflict: true,
            ..Self::unscripted(inner, vec![])
        })
    }

    fn unscripted(inner: Store, script: Vec<Script>) -> Self {
        Self {
            inner,
            script: Mutex::new(script.into()),
            always_conflict: false,
            commits: Arc::default(),
        }
    }

    pub fn commit_attempts(&self) -> usize {
        self.commits.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl AccountRepository for ScriptedStore {
    async fn load(&self, id: &AccountId) -> Result<LoadedAccount, PortError> {
        self.inner.load(id).await
    }

    async fn commit(
        &self,
        account: LoadedAccount,
        events: Vec<SocialAccountEvent>,
        metadata: HashMap<String, String>,
    ) -> Result<(), CommitError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        if self.always_conflict {
            return Err(CommitError::Conflict);
        }
        let next = self.script.lock().unwrap().pop_front();
        match next {
            None => self.inner.commit(account, events, metadata).await,
            Some(Script::Conflict) => Err(CommitError::Conflict),
            Some(Script::Fail) => Err(PortError::Unavailable("the event store".into()).into()),
            Some(Script::LoseRaceTo(theirs)) => {
                let current = self.inner.load(account.id()).await?;
                self.inner.commit(current, theirs, HashMap::new()).await?;
                Err(CommitError::Conflict)
            }
        }
    }

    async fn commit_with_session(
        &self,
        account: LoadedAccount,
        events: Vec<SocialAccountEvent>,
        metadata: HashMap<String, String>,
        owner: &SessionOwner,
        now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), CommitError> {
        self.commit(account, events, metadata).await?;
        Ok(self.inner.start_session(owner, now).await?)
    }
}
