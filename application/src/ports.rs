//! The ports: what the use cases need from the world, as traits. Adapters implement
//! them; unit tests mock them (`mocks` feature, mockall).

use std::any::Any;
use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use miniauth_domain::audit::{AuditCheckpoint, LoggedEvent, VerifyReport};
use miniauth_domain::crypto::Watermark;
use miniauth_domain::{
    AccountId, AppId, OneTimeCode, OpenId, PersonalField, PhoneNumber, SealedDatum, SealedSecret,
    SealedUnionId, SessionKey, SocialAccount, SocialAccountEvent, TenantId, UnionId, UserId,
};
use thiserror::Error;

use crate::audit::BindingAt;

/// An infrastructure failure behind a port (database down, disk full, ...). Its
/// [`source`](std::error::Error::source) is the adapter's own error when it kept one
/// (see [`PortError::unavailable`], [`PortError::internal`]); log it with [`Chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortError {
    /// Temporarily unreachable: the client may retry. Displayed `{what} is
    /// unavailable`.
    Unavailable(Cause),
    /// Overloaded by design: a bounded resource (password hashing) is in use by
    /// others and its queue is full; the client may retry after the seconds given.
    Busy {
        /// What is busy, for people.
        what: String,
        /// When a retry makes sense.
        retry_after_secs: u64,
    },
    /// Anything else unexpected; the message is for logs, never for clients.
    Internal(Cause),
}

impl PortError {
    /// `what` is unavailable because of `source` (kept as the error's source).
    pub fn unavailable(what: impl Into<String>, source: impl Into<BoxedError>) -> Self {
        Self::Unavailable(Cause::with_source(what, source))
    }

    /// Something unexpected, said by `message`, because of `source` (kept as the
    /// error's source).
    pub fn internal(message: impl Into<String>, source: impl Into<BoxedError>) -> Self {
        Self::Internal(Cause::with_source(message, source))
    }
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(what) => write!(f, "{what} is unavailable"),
            Self::Busy {
                what,
                retry_after_secs,
            } => write!(f, "{what} is busy; retry in {retry_after_secs} s"),
            Self::Internal(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for PortError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unavailable(cause) | Self::Internal(cause) => cause.source(),
            Self::Busy { .. } => None,
        }
    }
}

/// Any error an adapter keeps as the source of a [`PortError`].
pub type BoxedError = Box<dyn std::error::Error + Send + Sync>;

/// What a [`PortError`] says happened — a message for logs — and the adapter's error
/// that caused it, if it kept one. Displays the message only (the source is the
/// error's [`source`](std::error::Error::source)); compared by the message only.
/// Its `Debug` shows the source's `Display`, not its `Debug`, which may hold data (an
/// adapter's error can carry the bytes it failed on).
#[derive(Clone)]
pub struct Cause {
    message: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// `message`, with no source.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// `message`, because of `source`.
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxedError>) -> Self {
        Self {
            message: message.into(),
            source: Some(std::sync::Arc::from(source.into())),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error that caused it, if kept.
    pub fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Cause");
        debug.field("message", &self.message);
        if let Some(source) = self.source() {
            debug.field("source", &format_args!("{}", Chain(source)));
        }
        debug.finish()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for Cause {}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// Displays an error with its sources, `error: cause: root cause`, for logs:
/// `tracing::error!(error = %Chain(&error), …)` (a plain `%error` shows the first
/// only).
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

/// An account loaded to decide on: its state, the version that state reflects, and
/// whatever the repository keeps until the commit (its lease).
///
/// The state is the state *before* the events about to be committed, and the use cases
/// cannot change it: a repository that keeps a snapshot builds it by applying the new
/// events to this state, each exactly once.
pub struct LoadedAccount {
    id: AccountId,
    state: SocialAccount,
    version: u64,
    lease: Option<Box<dyn Any + Send + Sync>>,
}

impl LoadedAccount {
    /// `id` in `state`, which reflects the account's first `version` events (0: none yet).
    pub fn new(id: AccountId, state: SocialAccount, version: u64) -> Self {
        Self {
            id,
            state,
            version,
            lease: None,
        }
    }

    /// The same account carrying `lease`, which the repository takes back at the commit
    /// (or drops with the account): a turn on the account, what the next events chain to.
    pub fn with_lease(mut self, lease: impl Any + Send + Sync) -> Self {
        self.lease = Some(Box::new(lease));
        self
    }

    /// Which account.
    pub fn id(&self) -> &AccountId {
        &self.id
    }

    /// Its state as loaded.
    pub fn state(&self) -> &SocialAccount {
        &self.state
    }

    /// How many events the state reflects: the version a commit appends after.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The state as loaded, for the repository to build on at the commit.
    pub fn into_state(self) -> SocialAccount {
        self.state
    }

    /// Takes the lease back, if it is a `T`.
    pub fn take_lease<T: Any>(&mut self) -> Option<T> {
        match self.lease.take()?.downcast::<T>() {
            Ok(lease) => Some(*lease),
            Err(other) => {
                self.lease = Some(other);
                None
            }
        }
    }
}

impl fmt::Debug for LoadedAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedAccount")
            .field("id", &self.id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Why decided events were not committed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommitError {
    /// Another writer committed to the account after it was loaded: nothing was
    /// written; load it again and decide again.
    #[error("the account changed since it was loaded")]
    Conflict,
    /// The repository failed.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// The `SocialAccount`s: their event streams, with optimistic concurrency.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AccountRepository: Send + Sync {
    /// The account `id` as its events leave it (a new, empty account at version 0 when
    /// it has none).
    async fn load(&self, id: &AccountId) -> Result<LoadedAccount, PortError>;

    /// Appends `events`, decided on `account`'s state, after its version, in one
    /// atomic write, each with `metadata`. [`CommitError::Conflict`] when the account
    /// is no longer at that version.
    async fn commit(
        &self,
        account: LoadedAccount,
        events: Vec<SocialAccountEvent>,
        metadata: HashMap<String, String>,
    ) -> Result<(), CommitError>;

    /// [`commit`](Self::commit), and in the same atomic, durable write starts a login
    /// session for `owner` exactly as [`RefreshTokenStore::issue`] does (its family and
    /// first refresh token): a login that answers tokens costs one commit, and a crash
    /// leaves both or neither. Answers what `issue` answers.
    async fn commit_with_session(
        &self,
        account: LoadedAccount,
        events: Vec<SocialAccountEvent>,
        metadata: HashMap<String, String>,
        owner: &SessionOwner,
        now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), CommitError>;
}

/// One event of an account's stream, decoded, with its place in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The global commit order.
    pub position: i64,
    /// `{appid}:{openid}`.
    pub aggregate_id: String,
    /// The event's number within its aggregate, from 1.
    pub sequence: i64,
    /// The stable event type name.
    pub event_type: String,
    /// The schema version of the payload as stored.
    pub event_version: String,
    /// The event (already upcast to the current version).
    pub event: SocialAccountEvent,
    /// The metadata as stored: read it as [`EventMetadata`](crate::context::EventMetadata).
    pub metadata: HashMap<String, String>,
}

/// The event log as auditors read it: facts as recorded, personal data still sealed
/// (the application's [`Audit`](crate::audit::Audit) opens and masks it).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Every event of `account` in sequence order; empty when it has none.
    async fn account_events(&self, account: &AccountId) -> Result<Vec<StoredEvent>, PortError>;

    /// The bindings of `user` at `instant`, replayed from the events up to it.
    async fn bindings_as_of(
        &self,
        user: UserId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAt>, PortError>;

    /// Every binding of `appid` at `instant`, replayed from the events up to it.
    async fn app_bindings_as_of(
        &self,
        appid: &AppId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAt>, PortError>;

    /// The log after `position` in commit order, at most `limit` events, as stored.
    async fn export(&self, position: i64, limit: u32) -> Result<Vec<LoggedEvent>, PortError>;

    /// Checks every event against its stream's chain and state row, and the whole log
    /// against the checkpoints; records a checkpoint at `now` when all is well.
    async fn verify(&self, now: DateTime<Utc>) -> Result<VerifyReport, PortError>;

    /// Records a checkpoint at `now` over the events committed since the last one;
    /// `None` when nothing new was committed.
    async fn checkpoint(&self, now: DateTime<Utc>) -> Result<Option<AuditCheckpoint>, PortError>;

    /// The newest checkpoint recorded, if any.
    async fn latest_checkpoint(&self) -> Result<Option<AuditCheckpoint>, PortError>;

    /// Every account the log ever bound to `user` (whether or not it still is), in
    /// no particular order.
    async fn accounts_of_user(&self, user: UserId) -> Result<Vec<AccountId>, PortError>;

    /// How many events of the log the read models have not projected yet.
    async fn projection_lag(&self) -> Result<i64, PortError>;
}

/// What code2session answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeChatSession {
    /// The user's id in the app.
    pub openid: OpenId,
    /// The Open Platform id, when the app is bound to one.
    pub unionid: Option<UnionId>,
    /// The session key (its `Debug` is redacted).
    pub session_key: SessionKey,
}

/// What getuserphonenumber answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPhone {
    /// The number.
    pub phone: PhoneNumber,
    /// Which app WeChat made it for.
    pub watermark: Watermark,
}

/// WeChat's refusals and failures, typed (see WECHAT.md for the errcodes).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WeChatError {
    /// 40029: the code is unknown or expired.
    #[error("WeChat rejected the code: it is invalid or expired")]
    InvalidCode,
    /// 40163: the code was already used (by another backend, or another instance).
    #[error("WeChat rejected the code: it was already used")]
    CodeUsed,
    /// This service already answered the code: a code yields credentials once. Only
    /// concurrent duplicates of the first request share its answer.
    #[error("this login code was already used; call wx.login again for a new one")]
    CodeAlreadyAnswered,
    /// 45011: the minute quota is reached.
    #[error("WeChat's rate limit is reached; try again shortly")]
    RateLimited,
    /// 40226: WeChat blocked this user as high-risk.
    #[error("WeChat blocked this user as high-risk")]
    BlockedUser,
    /// -1, 5xx, timeouts and transport errors after bounded retries.
    #[error("WeChat is busy or unreachable; try again in {retry_after_secs} s")]
    Unavailable {
        /// When a retry makes sense.
        retry_after_secs: u64,
    },
    /// 40013, 40125, 40002: the app's appid or secret is wrong (server misconfigured).
    #[error("WeChat refused this app's credentials")]
    BadAppCredentials,
    /// 40164: this server's IP is not whitelisted for the app.
    #[error("WeChat refused this server's IP address")]
    IpNotWhitelisted,
    /// 45009: the daily quota is used up.
    #[error("WeChat's daily quota for this app is used up")]
    QuotaExhausted,
    /// Anything else WeChat answered.
    #[error("WeChat answered errcode {code}: {message}")]
    Unknown {
        /// errcode.
        code: i64,
        /// errmsg.
        message: String,
    },
}

/// The scope an OAuth login was granted (`snsapi_base` reads nothing more than the
/// openid; the others also read `/sns/userinfo`).
pub const SCOPES_WITH_USERINFO: [&str; 2] = ["snsapi_userinfo", "snsapi_login"];

/// What the OAuth code exchange (`/sns/oauth2/access_token`) answered: the login of an
/// Official Account, a website or a mobile App. The access token reads the user's
/// profile once; it is never kept (its `Debug` is redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthGrant {
    /// The user's id in the app.
    pub openid: OpenId,
    /// The Open Platform id, when the app is bound to one.
    pub unionid: Option<UnionId>,
    /// The scopes granted (`snsapi_base`, `snsapi_userinfo`, `snsapi_login`).
    pub scopes: Vec<String>,
    /// `is_snapshotuser = 1`: the user views a snapshot page in Moments and the openid
    /// is a virtual one, never to be bound or registered.
    pub snapshot_user: bool,
    /// The user's OAuth access token (for `/sns/userinfo`).
    pub access_token: crate::Secret,
}

impl OAuthGrant {
    /// Whether the grant may read `/sns/userinfo`.
    pub fn reads_userinfo(&self) -> bool {
        self.scopes
            .iter()
            .any(|scope| SCOPES_WITH_USERINFO.contains(&scope.as_str()))
    }
}

/// What `/sns/userinfo` answered. Its `Debug` shows the openid only.
#[derive(Clone, PartialEq, Eq)]
pub struct SnsUserInfo {
    /// The user's id in the app.
    pub openid: OpenId,
    /// The nickname.
    pub nickname: String,
    /// The avatar URL (`headimgurl`; may be empty).
    pub avatar_url: String,
    /// The Open Platform id, when the app is bound to one.
    pub unionid: Option<UnionId>,
}

impl fmt::Debug for SnsUserInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnsUserInfo")
            .field("openid", &self.openid)
            .finish_non_exhaustive()
    }
}

/// WeChat's server API, as the use cases need it.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait WeChatApi: Send + Sync {
    /// code2session for `appid`.
    async fn code_to_session(
        &self,
        appid: &AppId,
        code: &OneTimeCode,
    ) -> Result<WeChatSession, WeChatError>;

    /// getuserphonenumber for a phone code, checked against `openid`.
    async fn phone_number(
        &self,
        appid: &AppId,
        code: &OneTimeCode,
        openid: &OpenId,
    ) -> Result<VerifiedPhone, WeChatError>;

    /// resetusersessionkey: WeChat retires `session_key` (it dies at once) and answers
    /// the user's new one. Refused when `session_key` is not the user's current key.
    async fn reset_session_key(
        &self,
        appid: &AppId,
        openid: &OpenId,
        session_key: &SessionKey,
    ) -> Result<SessionKey, WeChatError>;

    /// The OAuth code exchange of an app that is not a mini program
    /// (`/sns/oauth2/access_token`).
    async fn oauth_access_token(
        &self,
        appid: &AppId,
        code: &OneTimeCode,
    ) -> Result<OAuthGrant, WeChatError>;

    /// Where WeChat's consent pages are (`https://open.weixin.qq.com`; the simulator's
    /// base when it plays WeChat).
    fn open_base(&self) -> String {
        "https://open.weixin.qq.com".to_owned()
    }

    /// `/sns/userinfo` with a grant's access token.
    async fn sns_userinfo(
        &self,
        access_token: &crate::Secret,
        openid: &OpenId,
    ) -> Result<SnsUserInfo, WeChatError>;
}

/// Whether a business user may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    /// May log in.
    Active,
    /// May not log in.
    Disabled,
}

/// A business user, as the directory knows it.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Primary key.
    pub id: UserId,
    /// The tenant the user belongs to.
    pub tenant: TenantId,
    /// The login name, for password users.
    pub account: Option<String>,
    /// The mobile number, unique per tenant.
    pub mobile: Option<PhoneNumber>,
    /// Display name; never an identity key.
    pub nickname: Option<String>,
    /// Active or disabled.
    pub status: UserStatus,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("mobile", &self.mobile)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A user to register from a verified phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// The tenant.
    pub tenant: TenantId,
    /// The verified number (unique per tenant).
    pub mobile: PhoneNumber,
    /// A display name, if the account has a profile.
    pub nickname: Option<String>,
    /// An avatar URL, if the account has a profile.
    pub avatar_url: Option<String>,
}

/// The result of a registration attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// A new user exists now.
    Created(UserRecord),
    /// Another user of the tenant holds this number (a concurrent registration won).
    PhoneTaken,
}

/// A password user an administrator creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccountUser {
    /// The tenant.
    pub tenant: TenantId,
    /// The login name, unique per tenant.
    pub account: String,
    /// The password; the directory stores only its argon2id hash.
    pub password: Password,
    /// A mobile number, unique per tenant, if known.
    pub mobile: Option<PhoneNumber>,
    /// A display name.
    pub nickname: Option<String>,
}

/// The result of creating a password user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCreation {
    /// The user exists now.
    Created(UserRecord),
    /// Another user of the tenant has this account name.
    AccountTaken,
    /// Another user of the tenant has this mobile number.
    PhoneTaken,
}

/// A password, kept out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password as sent by the client.
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The password, to hash or verify.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The business system's users.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait UserDirectory: Send + Sync {
    /// The user of `tenant` with this mobile number.
    async fn find_by_phone(
        &self,
        tenant: &TenantId,
        phone: &PhoneNumber,
    ) -> Result<Option<UserRecord>, PortError>;

    /// A user by id.
    async fn get(&self, id: UserId) -> Result<Option<UserRecord>, PortError>;

    /// The user of `tenant` with this account (login) name.
    async fn find_by_account(
        &self,
        tenant: &TenantId,
        account: &str,
    ) -> Result<Option<UserRecord>, PortError>;

    /// Registers a user from a verified phone; the phone is unique per tenant.
    async fn register(&self, user: NewUser) -> Result<Registration, PortError>;

    /// Creates a user with account and password (administration).
    async fn create_account(&self, user: NewAccountUser) -> Result<AccountCreation, PortError>;

    /// Removes a user this request registered whose binding then failed, so that no
    /// orphan user stays behind. Does nothing to a user that has any binding.
    async fn discard_unbound(&self, id: UserId) -> Result<(), PortError>;

    /// Sets a user's status; `None` when no user has this id.
    async fn set_status(
        &self,
        id: UserId,
        status: UserStatus,
    ) -> Result<Option<UserRecord>, PortError>;

    /// Whether any user belongs to `tenant`.
    async fn tenant_exists(&self, tenant: &TenantId) -> Result<bool, PortError>;

    /// The user of `tenant` with this account name and password, if they match.
    async fn check_password(
        &self,
        tenant: &TenantId,
        account: &str,
        password: &Password,
    ) -> Result<Option<UserRecord>, PortError>;

    /// Erasure of the WeChat identity that registered `id`: clears the user's mobile,
    /// nickname and avatar when the user exists only through that identity — registered
    /// from its phone, no account and password, no binding left. Any other user keeps
    /// their data (it belongs to the business system). Answers whether it cleared.
    ///
    /// A binding of `erased` itself does not count: the registry may still hold it for a
    /// moment after the erasure released it (a lagging projection of the identity's
    /// earlier `UserBound` repairs the claim, and its `Unbound` releases it again).
    async fn erase_registered(&self, id: UserId, erased: &AccountId) -> Result<bool, PortError>;
}

/// Why a binding cannot be claimed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClaimError {
    /// The WeChat identity is bound (or being bound) to another user.
    #[error("the WeChat identity is bound to user {0}")]
    IdentityTaken(UserId),
    /// The user already holds another WeChat identity in this app.
    #[error("the user already holds another WeChat identity in this app")]
    UserHasIdentity,
    /// The registry failed.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Whether a claim is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This request claimed it: release it if the bind fails.
    New,
    /// It was this user's already.
    Existing,
}

/// One binding, as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The app.
    pub appid: AppId,
    /// The WeChat identity.
    pub openid: OpenId,
    /// The user.
    pub user_id: UserId,
}

/// The uniqueness guarantee across aggregates and service instances: one user per
/// WeChat identity, one WeChat identity per user per app.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait BindingRegistry: Send + Sync {
    /// Claims (appid, openid) for `user`; idempotent for the same triple.
    async fn claim(
        &self,
        appid: &AppId,
        openid: &OpenId,
        user: UserId,
    ) -> Result<Claim, ClaimError>;

    /// Releases a claim (after an unbind, or a bind that failed).
    async fn release(&self, appid: &AppId, openid: &OpenId, user: UserId) -> Result<(), PortError>;

    /// The identity `user` holds in `appid`.
    async fn identity_of(&self, appid: &AppId, user: UserId) -> Result<Option<OpenId>, PortError>;

    /// Every binding of `user`, in every app.
    async fn bindings_of(&self, user: UserId) -> Result<Vec<Binding>, PortError>;

    /// The bindings, as the log has them, of the accounts in `apps` whose unionid has
    /// this keyed hash: (account, user) pairs, `except` left out.
    async fn bound_by_unionid(
        &self,
        unionid_hash: &str,
        apps: &[AppId],
        except: &AccountId,
    ) -> Result<Vec<(AccountId, UserId)>, PortError>;
}

/// What a ticket (the mini program's bind key) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketClaims {
    /// The app it was issued for.
    pub appid: AppId,
    /// The WeChat identity.
    pub openid: OpenId,
    /// The session it came from.
    pub session_seq: u64,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// Issued spent: the login that answered it answered tokens too, so it buys nothing
    /// more (no tokens, no binding, no phone). Signed into the ticket, so it needs no
    /// stored single-use mark — and no commit.
    pub spent: bool,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TicketError {
    /// No ticket was sent.
    #[error("the ticket is missing")]
    Missing,
    /// Not something this service issues.
    #[error("the ticket is malformed")]
    Malformed,
    /// The signature does not verify.
    #[error("the ticket's signature does not verify")]
    Forged,
    /// Past its lifetime.
    #[error("the ticket has expired; log in again")]
    Expired,
}

/// What the `state` of a browser login (an Official Account's or a website's) says: it
/// goes to WeChat and comes back unchanged, the only CSRF defence of the flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserState {
    /// The app the login is for.
    pub appid: AppId,
    /// Where the browser goes back once logged in (one of the app's `redirect_uris`).
    pub redirect_uri: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// The front end's PKCE challenge (RFC 7636, S256: base64url(SHA-256(verifier)),
    /// 43 characters), carried on into the result handle.
    pub code_challenge: String,
}

/// What a browser login's result handle says: the login it stands for, and the PKCE
/// challenge its redeemer must answer. A handle is never a ticket, nor the reverse (the
/// codec gives it a type of its own), and it travels in a URL, so the codec must not
/// let its payload (the openid) be read.
#[derive(Clone, PartialEq, Eq)]
pub struct ResultClaims {
    /// The app.
    pub appid: AppId,
    /// The WeChat identity.
    pub openid: OpenId,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// The PKCE challenge of the `authorize` request that started the login.
    pub code_challenge: String,
}

impl fmt::Debug for ResultClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultClaims")
            .field("appid", &self.appid)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A state as issued: the signed `state` and the secret that binds it to the browser
/// that started the flow (its cookie). Neither is shown in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedState {
    /// The signed state, for WeChat's authorize URL.
    pub state: String,
    /// The browser binding, for an httpOnly cookie.
    pub browser_key: String,
}

impl fmt::Debug for IssuedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IssuedState(<redacted>)")
    }
}

/// Issues and verifies tickets, and the states of browser logins.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait TicketCodec: Send + Sync {
    /// Signs a ticket.
    fn issue(&self, claims: &TicketClaims) -> String;
    /// Verifies a ticket's signature and lifetime.
    fn verify(&self, ticket: &str, now: DateTime<Utc>) -> Result<TicketClaims, TicketError>;
    /// Signs a browser login's state, bound to a fresh browser key.
    fn issue_state(&self, state: &BrowserState) -> IssuedState;
    /// Verifies a state's signature and lifetime, and that `browser_key` is the key it
    /// was issued with (the browser that started the flow).
    fn verify_state(
        &self,
        state: &str,
        browser_key: &str,
        now: DateTime<Utc>,
    ) -> Result<BrowserState, TicketError>;
    /// Seals a browser login's result handle (a type of its own: never a ticket or a
    /// state), its payload unreadable.
    fn issue_result(&self, claims: &ResultClaims) -> String;
    /// Opens a result handle: authentic, of the handle type, unexpired.
    fn verify_result(&self, handle: &str, now: DateTime<Utc>) -> Result<ResultClaims, TicketError>;
}

/// The id of a login session: the refresh-token family its tokens belong to. Access
/// tokens carry it (`sid`), so that revoking the family also refuses them here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// Parses a session id: 1 to 64 ASCII letters, digits, `-` or `_`.
    pub fn parse(raw: &str) -> Result<Self, InvalidSessionId> {
        let valid = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidSessionId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A session id that is not 1 to 64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("a session id is 1 to 64 characters of [A-Za-z0-9_-]")]
pub struct InvalidSessionId;

/// Who a new login session is for, before the refresh-token store names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    /// The user.
    pub user_id: UserId,
    /// The tenant the tokens are valid in: the app's, for a login through an app.
    pub tenant: TenantId,
    /// The app the login came through, if any.
    pub appid: Option<AppId>,
}

/// Who an access or refresh token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSubject {
    /// The user.
    pub user_id: UserId,
    /// The tenant the token is valid in: the app's, for a login through an app.
    pub tenant: TenantId,
    /// The app the login came through, if any.
    pub appid: Option<AppId>,
    /// The login session (refresh-token family) the token belongs to.
    pub session: SessionId,
}

impl TokenSubject {
    /// The subject of `owner`'s tokens in `session`.
    pub fn new(owner: SessionOwner, session: SessionId) -> Self {
        Self {
            user_id: owner.user_id,
            tenant: owner.tenant,
            appid: owner.appid,
            session,
        }
    }
}

/// A signed access token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AccessToken(<redacted>, expires_in: {})",
            self.expires_in
        )
    }
}

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AccessTokenError {
    /// Missing, malformed, forged or for another audience.
    #[error("the access token is invalid")]
    Invalid,
    /// Past its lifetime.
    #[error("the access token has expired")]
    Expired,
    /// Its session ended: logout, reuse of a refresh token, unbind, erasure, a
    /// disabled user, or the session's absolute lifetime.
    #[error("the access token's session has ended; log in again")]
    Revoked,
}

/// A verified access token's claims, as introspection answers them (RFC 7662).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAccessToken {
    /// Who it speaks for.
    pub subject: TokenSubject,
    /// Its issuer (`iss`).
    pub issuer: String,
    /// Its audience (`aud`).
    pub audience: String,
    /// Its id (`jti`).
    pub token_id: String,
    /// When it was issued (`iat`).
    pub issued_at: DateTime<Utc>,
    /// When it expires (`exp`).
    pub expires_at: DateTime<Utc>,
}

/// Signs and verifies access tokens.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait TokenIssuer: Send + Sync {
    /// Signs an access token for `subject`.
    fn issue(&self, subject: &TokenSubject, now: DateTime<Utc>) -> Result<AccessToken, PortError>;
    /// Verifies one.
    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<TokenSubject, AccessTokenError>;
    /// Verifies one as [`TokenIssuer::verify`] does, and answers all its claims.
    fn inspect(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedAccessToken, AccessTokenError>;
}

/// A refresh token as handed to the client.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    /// The opaque token; the store keeps only its hash.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RefreshToken(<redacted>, expires_in: {})",
            self.expires_in
        )
    }
}

/// Why a refresh token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RefreshError {
    /// Never issued, or revoked by logout.
    #[error("the refresh token is unknown or revoked")]
    Unknown,
    /// Past its lifetime.
    #[error("the refresh token has expired")]
    Expired,
    /// Already rotated: presenting it again revoked its whole family.
    #[error("the refresh token was already used; every token of this login is revoked")]
    Reused,
    /// The store failed.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Which of a user's sessions to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionScope {
    /// One session: the one an access token names (logout without a refresh token).
    Session(SessionId),
    /// The sessions of logins through this app (unbind, erasure).
    App(AppId),
    /// Every session of the user (disabled user).
    All,
}

/// Opaque refresh tokens, stored hashed, rotated on every use, with reuse detection.
/// Each family is a login session, with a sliding expiry per token and an absolute
/// lifetime per family.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RefreshTokenStore: Send + Sync {
    /// Starts a new family (login session) for a fresh login; answers the subject of
    /// its tokens, which names the session, and the first refresh token.
    async fn issue(
        &self,
        owner: &SessionOwner,
        now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), PortError>;

    /// Exchanges a token for its successor in the same family.
    async fn rotate(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), RefreshError>;

    /// Revokes a token's family (logout); only `user`'s own tokens.
    async fn revoke(
        &self,
        token: &str,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<(), RefreshError>;

    /// Revokes `user`'s sessions in `scope`; answers how many were live.
    async fn revoke_sessions(
        &self,
        user: UserId,
        scope: &SessionScope,
        now: DateTime<Utc>,
    ) -> Result<u64, PortError>;

    /// Whether the session `subject` names is `subject`'s and still live: not revoked
    /// and within its absolute lifetime.
    async fn session_live(
        &self,
        subject: &TokenSubject,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError>;

    /// What a refresh token stands for while it can still be used (introspection):
    /// `None` when it is unknown, rotated, revoked, expired or its session ended.
    async fn inspect(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<LiveRefreshToken>, PortError>;

    /// Revokes the family (session) of any refresh token the store knows, whoever holds
    /// it: the token is its own credential (RFC 7009). Answers whether it knew it.
    async fn revoke_family_of(&self, token: &str, now: DateTime<Utc>) -> Result<bool, PortError>;
}

/// A refresh token that can still be used, as introspection answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRefreshToken {
    /// Who it speaks for, and its session.
    pub subject: TokenSubject,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it expires (its sliding expiry, never past the session's end).
    pub expires_at: DateTime<Utc>,
}

/// Seals secrets with the server key and personal data with per-account data keys;
/// forgetting an account's key makes its sealed data unreadable (crypto-shredding).
/// Every sealed value is bound to what it is and whose it is: copied to another field
/// or another account, it does not open.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait PersonalDataVault: Send + Sync {
    /// Seals a session key of `account` with the server key.
    async fn seal_secret(
        &self,
        account: &AccountId,
        key: &SessionKey,
    ) -> Result<SealedSecret, PortError>;
    /// Opens a sealed session key of `account`.
    async fn unseal_secret(
        &self,
        account: &AccountId,
        sealed: &SealedSecret,
    ) -> Result<SessionKey, PortError>;
    /// Seals a personal datum with the account's data key (created on first use).
    async fn seal_personal(
        &self,
        account: &AccountId,
        field: PersonalField,
        plaintext: &str,
    ) -> Result<SealedDatum, PortError>;
    /// Opens a personal datum; `None` once the account's key was forgotten.
    async fn unseal_personal(
        &self,
        account: &AccountId,
        field: PersonalField,
        sealed: &SealedDatum,
    ) -> Result<Option<String>, PortError>;
    /// Seals a unionid with the account's data key, beside its keyed lookup hash.
    async fn seal_unionid(
        &self,
        account: &AccountId,
        unionid: &UnionId,
    ) -> Result<SealedUnionId, PortError>;
    /// Destroys the account's data key.
    async fn forget(&self, account: &AccountId) -> Result<(), PortError>;
}

/// What a usage counter counts. Each names its credential by a fingerprint, never by
/// the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UsageKey {
    /// Legacy payloads tried under one session key (its
    /// [`fingerprint`](miniauth_domain::SessionKey::fingerprint)); a success gives its
    /// try back, so what stays counted are the rejections.
    PayloadTries(String),
    /// Exchanges of one ticket for tokens (its fingerprint).
    TicketExchanges(String),
    /// Callbacks of one browser login's state (its fingerprint).
    BrowserStates(String),
    /// Redemptions of one browser login's result handle (its fingerprint).
    ResultExchanges(String),
    /// A console session that was signed out (its fingerprint): counted once it ends,
    /// on whichever instance, so that every instance refuses it from then on.
    ConsoleSessionEnded(String),
}

impl UsageKey {
    /// The key as the store files it: the kind, a colon, the fingerprint.
    pub fn storage_key(&self) -> String {
        match self {
            Self::PayloadTries(fingerprint) => format!("payload_tries:{fingerprint}"),
            Self::TicketExchanges(fingerprint) => format!("ticket_exchanges:{fingerprint}"),
            Self::BrowserStates(fingerprint) => format!("browser_states:{fingerprint}"),
            Self::ResultExchanges(fingerprint) => format!("result_exchanges:{fingerprint}"),
            Self::ConsoleSessionEnded(fingerprint) => format!("console_ended:{fingerprint}"),
        }
    }
}

/// Counters shared by every instance of the service (they live in the store), for the
/// rules "one credential, one use" and "a few tries per session key". Counting is
/// atomic: concurrent callers each get a different count.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait UsageCounters: Send + Sync {
    /// Counts one use of `key`, remembered at least until `keep_until`, and answers
    /// the count including this one (1 for the first use).
    async fn count(&self, key: &UsageKey, keep_until: DateTime<Utc>) -> Result<u32, PortError>;
    /// Takes one counted use back (a try that turned out to be no rejection).
    async fn uncount(&self, key: &UsageKey) -> Result<(), PortError>;
    /// The uses of `key` counted so far (0 for a key never counted or purged), without
    /// counting one.
    async fn uses(&self, key: &UsageKey) -> Result<u32, PortError>;
    /// Forgets counters kept only until before `now`; answers how many went.
    async fn purge(&self, now: DateTime<Utc>) -> Result<u64, PortError>;
}

/// The time, injectable for tests.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// Whether the service can do its work: what it stores on answers (`/readyz`).
#[async_trait]
pub trait Readiness: Send + Sync {
    /// `Ok` when ready; otherwise why not (logged, not shown to clients).
    async fn check(&self) -> Result<(), String>;
}

/// Where a request comes from, as throttling sees it: an IPv4 address, or the /64
/// network of an IPv6 address (one subscriber usually holds a whole /64, so keying on
/// the full address would let them rotate through 2^64 keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientNet(std::net::IpAddr);

impl ClientNet {
    /// The network of `ip`: itself for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6.
    pub fn of(ip: std::net::IpAddr) -> Self {
        use std::net::{IpAddr, Ipv6Addr};
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                Self(IpAddr::V6(Ipv6Addr::from(bits)))
            }
        }
    }

    /// The address (an IPv6 one with its low 64 bits zeroed).
    pub fn addr(&self) -> std::net::IpAddr {
        self.0
    }
}

impl fmt::Display for ClientNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            std::net::IpAddr::V4(v4) => write!(f, "{v4}"),
            std::net::IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// What a throttle counts. Each kind has its own [`Limit`] ([`ThrottleLimits`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    /// Failed passwords for one account from one client: the tight limit, so that a
    /// guesser is stopped without locking the owner out from their own address.
    AccountFromClient {
        /// The tenant of the account.
        tenant: TenantId,
        /// The account name as typed (trimmed).
        account: String,
        /// The client.
        client: ClientNet,
    },
    /// Failed passwords for one account from anywhere: a much higher ceiling against
    /// guessing spread over many addresses.
    Account {
        /// The tenant of the account.
        tenant: TenantId,
        /// The account name as typed (trimmed).
        account: String,
    },
    /// Failed passwords from one client, whatever the account: against one address
    /// spraying many accounts.
    Client(ClientNet),
    /// Logins (code2session calls) from one client: protects the app's WeChat quota.
    Login(ClientNet),
    /// Tries of the admin token (the admin API, `/metrics`, the console's sign-in) from
    /// one client. Its own budget, so that failed passwords or introspection calls from
    /// an operator's network do not lock the operator out, nor the reverse.
    OperatorSecret(ClientNet),
    /// Tries of introspection client credentials from one client.
    IntrospectionClient(ClientNet),
}

/// The kinds of [`ThrottleKey`], each with its own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleKind {
    /// [`ThrottleKey::AccountFromClient`].
    AccountFromClient,
    /// [`ThrottleKey::Account`].
    Account,
    /// [`ThrottleKey::Client`].
    Client,
    /// [`ThrottleKey::Login`].
    Login,
    /// [`ThrottleKey::OperatorSecret`].
    OperatorSecret,
    /// [`ThrottleKey::IntrospectionClient`].
    IntrospectionClient,
}

impl ThrottleKey {
    /// Which limit applies.
    pub fn kind(&self) -> ThrottleKind {
        match self {
            Self::AccountFromClient { .. } => ThrottleKind::AccountFromClient,
            Self::Account { .. } => ThrottleKind::Account,
            Self::Client(_) => ThrottleKind::Client,
            Self::Login(_) => ThrottleKind::Login,
            Self::OperatorSecret(_) => ThrottleKind::OperatorSecret,
            Self::IntrospectionClient(_) => ThrottleKind::IntrospectionClient,
        }
    }

    /// A stable text naming the key, for adapters that store keys (they should hash
    /// it: it names an account and an address).
    pub fn canonical(&self) -> String {
        match self {
            Self::AccountFromClient {
                tenant,
                account,
                client,
            } => format!("account-from-client\0{tenant}\0{account}\0{client}"),
            Self::Account { tenant, account } => format!("account\0{tenant}\0{account}"),
            Self::Client(client) => format!("client\0{client}"),
            Self::Login(client) => format!("login\0{client}"),
            Self::OperatorSecret(client) => format!("operator-secret\0{client}"),
            Self::IntrospectionClient(client) => format!("introspection-client\0{client}"),
        }
    }
}

/// At most `max` hits per `window`; the window starts at the first hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Hits allowed within a window (at least 1).
    pub max: u32,
    /// The window's length (at least one second).
    pub window: chrono::Duration,
}

/// The limit of each [`ThrottleKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleLimits {
    /// Failed passwords per (account, client).
    pub account_from_client: Limit,
    /// Failed passwords per account.
    pub account: Limit,
    /// Failed passwords per client.
    pub client: Limit,
    /// Logins per client.
    pub login: Limit,
    /// Tries of the admin token per client (a success forgives the client's tries).
    pub operator_secret: Limit,
    /// Tries of introspection client credentials per client (a success forgives them).
    pub introspection_client: Limit,
}

impl Default for ThrottleLimits {
    /// 5 failures per (account, client), 100 per account and 50 per client within 15
    /// minutes; 60 logins per client and minute; 20 tries of the admin token and 50 of
    /// introspection credentials per client within 15 minutes.
    fn default() -> Self {
        let quarter = chrono::Duration::minutes(15);
        Self {
            account_from_client: Limit {
                max: 5,
                window: quarter,
            },
            account: Limit {
                max: 100,
                window: quarter,
            },
            client: Limit {
                max: 50,
                window: quarter,
            },
            login: Limit {
                max: 60,
                window: chrono::Duration::minutes(1),
            },
            operator_secret: Limit {
                max: 20,
                window: quarter,
            },
            introspection_client: Limit {
                max: 50,
                window: quarter,
            },
        }
    }
}

impl ThrottleLimits {
    /// The limit of `kind`.
    pub fn of(&self, kind: ThrottleKind) -> Limit {
        match kind {
            ThrottleKind::AccountFromClient => self.account_from_client,
            ThrottleKind::Account => self.account,
            ThrottleKind::Client => self.client,
            ThrottleKind::Login => self.login,
            ThrottleKind::OperatorSecret => self.operator_secret,
            ThrottleKind::IntrospectionClient => self.introspection_client,
        }
    }

    /// Refuses a limit that would lock everyone out or never reset.
    pub fn validate(&self) -> Result<(), String> {
        for (name, limit) in [
            ("account_from_client", self.account_from_client),
            ("account", self.account),
            ("client", self.client),
            ("login", self.login),
            ("operator_secret", self.operator_secret),
            ("introspection_client", self.introspection_client),
        ] {
            if limit.max == 0 {
                return Err(format!("{name}: the limit must allow at least 1"));
            }
            if limit.window < chrono::Duration::seconds(1) {
                return Err(format!("{name}: the window must be at least one second"));
            }
        }
        Ok(())
    }
}

/// A throttle refused, or could not be consulted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ThrottleError {
    /// Over the limit: retry after this many seconds.
    #[error("over the limit; retry in {retry_after_secs} s")]
    Exceeded {
        /// When the window frees the key.
        retry_after_secs: u64,
    },
    /// The counters could not be read or written.
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Counts hits per [`ThrottleKey`] within the limit of its kind. With several
/// instances the counts must be shared (the store), else each instance multiplies
/// the limits.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AttemptLimiter: Send + Sync {
    /// Refuses when `key` has reached its limit within its window (counts nothing).
    async fn check(&self, key: &ThrottleKey, now: DateTime<Utc>) -> Result<(), ThrottleError>;
    /// Counts one failure of `key`.
    async fn record_failure(&self, key: &ThrottleKey, now: DateTime<Utc>) -> Result<(), PortError>;
    /// Counts one hit of `key` and refuses it when that exceeds the limit: a rate
    /// limit in one step, atomic across instances.
    async fn hit(&self, key: &ThrottleKey, now: DateTime<Utc>) -> Result<(), ThrottleError>;
    /// Forgets the failures of `key` after a success.
    async fn reset(&self, key: &ThrottleKey) -> Result<(), PortError>;
}
