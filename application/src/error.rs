//! The use cases' one error type, with a stable code and a transport-neutral kind.
//! The HTTP adapter maps kinds to status codes in one place.

use miniauth_domain::{AccountError, ErrorCode, InvalidValue, PayloadError};
use thiserror::Error;

use crate::ports::{
    AccessTokenError, Chain, ClaimError, PortError, RefreshError, ThrottleError, TicketError,
    WeChatError,
};

/// What kind of failure an error is, for the transport to choose a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or its content is wrong (400).
    BadRequest,
    /// Missing or bad credentials (401).
    Unauthorized,
    /// Understood and refused by policy (403).
    Forbidden,
    /// The thing asked about does not exist (404).
    NotFound,
    /// Conflicts with the current state (409).
    Conflict,
    /// Too many attempts; retry after the seconds given (429).
    TooManyRequests(u64),
    /// A dependency is down; retry after the seconds given (503).
    Unavailable(u64),
    /// A server-side fault or misconfiguration (500 / 502).
    Internal,
}

/// Everything a use case can answer instead of success.
#[derive(Debug, Error)]
pub enum AppError {
    /// A field failed to parse.
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    /// The appid is not configured here.
    #[error("unknown app: no mini program with this appid is configured")]
    UnknownApp,
    /// No configured app and no user belongs to this tenant.
    #[error("unknown tenant: no app or user of this tenant exists")]
    UnknownTenant,
    /// The user, the token or the app belong to different tenants.
    #[error("this app belongs to another tenant than the user")]
    TenantMismatch,
    /// WeChat refused or failed.
    #[error(transparent)]
    WeChat(#[from] WeChatError),
    /// The ticket was refused.
    #[error(transparent)]
    Ticket(#[from] TicketError),
    /// The ticket was issued for another app.
    #[error("the ticket was issued for another app")]
    TicketAppMismatch,
    /// An encrypted payload's shape is wrong (base64, lengths): nothing secret-dependent.
    #[error(transparent)]
    Payload(PayloadError),
    /// A legacy payload did not open, parse or check out under any session key the
    /// account holds. One answer for every cause (padding, JSON, openid, watermark,
    /// signature): a distinguishable one would be a padding oracle.
    #[error("the encrypted payload was rejected; call wx.login again and resend it")]
    PayloadRejected,
    /// The session key rejected too many payloads and was retired.
    #[error("this WeChat session rejected too many payloads and was retired; call wx.login again")]
    SessionKeySpent,
    /// The app does not accept legacy encrypted payloads.
    #[error("this app does not accept encrypted payloads; send the phone button's code or the profile fields")]
    LegacyPayloadsDisabled,
    /// WeChat says the login is a snapshot-page user (`is_snapshotuser = 1`): a
    /// virtual identity that is never bound or registered.
    #[error("this WeChat user views a snapshot page in Moments: open the page itself to log in")]
    SnapshotUser,
    /// The route does not serve the app's kind: a phone or a profile for an app that is
    /// not a mini program (no session key), a browser login for an app without one.
    #[error("this route does not serve this kind of app: phone and profile come from mini programs; browser logins are an Official Account's or a website's")]
    ChannelUnsupported,
    /// The `redirect_uri` is not one of the app's `redirect_uris`.
    #[error("redirect_uri is not one of this app's redirect_uris (compared exactly)")]
    RedirectUriNotAllowed,
    /// The browser login's state is forged, expired, for another app, or not this
    /// browser's (one answer for all: none of them is a client bug to debug).
    #[error(
        "the login's state is invalid, expired or from another browser; start the login again"
    )]
    StateInvalid,
    /// The state was already used by a callback.
    #[error("this login's state was already used; start the login again")]
    StateUsed,
    /// `authorize` without a PKCE `code_challenge`.
    #[error("code_challenge is required (PKCE, RFC 7636, with code_challenge_method=S256)")]
    CodeChallengeRequired,
    /// A PKCE method other than S256 (`plain`, or none, which RFC 7636 reads as plain).
    #[error("code_challenge_method must be S256 (plain is not accepted)")]
    CodeChallengeMethodUnsupported,
    /// The `code_verifier` does not answer the login's `code_challenge`: the handle is
    /// spent all the same (one guess per handle).
    #[error("code_verifier does not match the login's code_challenge; the result is spent, start the login again")]
    CodeVerifierMismatch,
    /// The result handle is unknown, expired, used or for another app.
    #[error("the login result is invalid, expired or already used; start the login again")]
    ResultInvalid,
    /// The ticket was already exchanged for tokens.
    #[error("this ticket was already exchanged for tokens; log in again")]
    TicketAlreadyUsed,
    /// A rule of the account was broken.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The app's policy refuses new users.
    #[error("this app does not register new users; ask the business to add you")]
    RegistrationClosed,
    /// The app only binds phones of existing users.
    #[error("no user of this business has this phone number; log in with your account instead")]
    PhoneNotRegistered,
    /// The user already holds another WeChat identity in this app.
    #[error("this user is already bound to another WeChat identity in this app")]
    UserAlreadyBoundInApp,
    /// Another user of the tenant has this account name.
    #[error("another user already has this account name")]
    AccountTaken,
    /// Another user of the tenant has this mobile number.
    #[error("another user already has this mobile number")]
    PhoneTaken,
    /// A bind key of the migrated GitEgg deployment was refused (the bridge of
    /// `miniauth import gitegg`).
    #[error(transparent)]
    LegacyBindKey(LegacyKeyRefusal),
    /// Nothing is bound (unbind, ticket grant).
    #[error("this WeChat identity is not bound to a user of this app")]
    NotBound,
    /// Account and password do not match.
    #[error("account or password is wrong")]
    BadCredentials,
    /// Too many failed password attempts.
    #[error("too many failed attempts; try again in {0} s")]
    TooManyAttempts(u64),
    /// Too many logins from this client (protects the app's WeChat quota).
    #[error("too many logins from this address; try again in {0} s")]
    TooManyLogins(u64),
    /// A bounded resource (password hashing) is saturated; retry after the seconds.
    #[error("the server is busy checking other passwords; try again in {0} s")]
    Busy(u64),
    /// The user may not log in.
    #[error("this user is disabled")]
    UserDisabled,
    /// The user the token or binding names no longer exists.
    #[error("the user no longer exists")]
    UserNotFound,
    /// No event was ever recorded for this WeChat identity in this app (the admin
    /// routes and the CLI name an account that never logged in).
    #[error("no event was ever recorded for this appid and openid")]
    AccountNotFound,
    /// A refresh token was refused.
    #[error(transparent)]
    Refresh(RefreshError),
    /// An access token was refused.
    #[error(transparent)]
    AccessToken(#[from] AccessTokenError),
    /// Concurrent updates kept conflicting after bounded retries.
    #[error("the account changed concurrently; retry the request")]
    Contention,
    /// A dependency is down.
    #[error("{0} is unavailable")]
    Unavailable(String),
    /// Anything unexpected; the message is for logs only.
    #[error("internal error")]
    Internal(String),
}

impl From<PortError> for AppError {
    fn from(error: PortError) -> Self {
        match error {
            // Clients see what is unavailable, never why.
            PortError::Unavailable(what) => Self::Unavailable(what.message().to_owned()),
            PortError::Busy {
                retry_after_secs, ..
            } => Self::Busy(retry_after_secs),
            // For logs only: the whole chain.
            ref internal @ PortError::Internal(_) => Self::Internal(Chain(internal).to_string()),
        }
    }
}

impl From<PayloadError> for AppError {
    /// Shape errors keep their precise code; everything that happens after decryption
    /// becomes [`AppError::PayloadRejected`], its cause logged for operators only.
    fn from(error: PayloadError) -> Self {
        match error {
            PayloadError::NotBase64 { .. } | PayloadError::WrongLength { .. } => {
                Self::Payload(error)
            }
            cause => {
                tracing::debug!(%cause, "legacy payload rejected");
                Self::PayloadRejected
            }
        }
    }
}

impl AppError {
    /// A throttle's refusal as `refused` (which says what was throttled), or the
    /// failure of its store.
    pub fn throttled(error: ThrottleError, refused: fn(u64) -> AppError) -> Self {
        match error {
            ThrottleError::Exceeded { retry_after_secs } => refused(retry_after_secs),
            ThrottleError::Port(port) => port.into(),
        }
    }
}

impl From<RefreshError> for AppError {
    fn from(error: RefreshError) -> Self {
        match error {
            RefreshError::Port(port) => port.into(),
            other => Self::Refresh(other),
        }
    }
}

impl From<ClaimError> for AppError {
    fn from(error: ClaimError) -> Self {
        match error {
            ClaimError::IdentityTaken(_) => Self::Account(AccountError::AlreadyBoundToOtherUser),
            ClaimError::UserHasIdentity => Self::UserAlreadyBoundInApp,
            ClaimError::Port(port) => port.into(),
        }
    }
}

/// Why a GitEgg bind key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LegacyKeyRefusal {
    /// It does not decode to a WeChat identity under the configured DES key and IV —
    /// one answer whatever the reason, so that no answer is a padding oracle.
    #[error("the GitEgg bind key is not valid; log in again for a new bind key")]
    Invalid,
    /// It names no imported account.
    #[error("the GitEgg bind key names no account imported from GitEgg; log in again for a new bind key")]
    NotImported,
    /// Its account was imported longer ago than the transition period.
    #[error(
        "GitEgg bind keys are no longer accepted for this account; log in again for a new bind key"
    )]
    Expired,
}

impl ErrorCode for AppError {
    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code(),
            Self::UnknownApp => "unknown_app",
            Self::UnknownTenant => "unknown_tenant",
            Self::TenantMismatch => "tenant_mismatch",
            Self::WeChat(e) => match e {
                WeChatError::InvalidCode => "code_invalid",
                WeChatError::CodeUsed => "code_used",
                WeChatError::CodeAlreadyAnswered => "code_already_used",
                WeChatError::RateLimited => "wechat_rate_limited",
                WeChatError::BlockedUser => "wechat_user_blocked",
                WeChatError::Unavailable { .. } => "wechat_unavailable",
                WeChatError::BadAppCredentials => "wechat_app_credentials",
                WeChatError::IpNotWhitelisted => "wechat_ip_not_whitelisted",
                WeChatError::QuotaExhausted => "wechat_quota_exhausted",
                WeChatError::Unknown { .. } => "wechat_error",
            },
            Self::Ticket(e) => match e {
                TicketError::Missing => "ticket_missing",
                TicketError::Malformed => "ticket_malformed",
                TicketError::Forged => "ticket_forged",
                TicketError::Expired => "ticket_expired",
            },
            Self::TicketAppMismatch => "ticket_app_mismatch",
            Self::Payload(e) => e.code(),
            Self::PayloadRejected => "payload_rejected",
            Self::SessionKeySpent => "session_key_spent",
            Self::LegacyPayloadsDisabled => "legacy_payloads_disabled",
            Self::SnapshotUser => "snapshot_user",
            Self::ChannelUnsupported => "channel_unsupported",
            Self::RedirectUriNotAllowed => "redirect_uri_not_allowed",
            Self::StateInvalid => "state_invalid",
            Self::StateUsed => "state_used",
            Self::ResultInvalid => "result_invalid",
            Self::CodeChallengeRequired => "code_challenge_required",
            Self::CodeChallengeMethodUnsupported => "code_challenge_method_unsupported",
            Self::CodeVerifierMismatch => "code_verifier_mismatch",
            Self::TicketAlreadyUsed => "ticket_already_used",
            Self::Account(e) => e.code(),
            Self::RegistrationClosed => "registration_closed",
            Self::PhoneNotRegistered => "phone_not_registered",
            Self::UserAlreadyBoundInApp => "user_already_bound_in_app",
            Self::AccountTaken => "account_taken",
            Self::PhoneTaken => "phone_taken",
            Self::LegacyBindKey(e) => match e {
                LegacyKeyRefusal::Invalid => "legacy_bind_key_invalid",
                LegacyKeyRefusal::NotImported => "legacy_bind_key_not_imported",
                LegacyKeyRefusal::Expired => "legacy_bind_key_expired",
            },
            Self::NotBound => "not_bound",
            Self::BadCredentials => "invalid_credentials",
            Self::TooManyAttempts(_) => "too_many_attempts",
            Self::TooManyLogins(_) => "too_many_logins",
            Self::Busy(_) => "server_busy",
            Self::UserDisabled => "user_disabled",
            Self::UserNotFound => "user_not_found",
            Self::AccountNotFound => "account_not_found",
            Self::Refresh(e) => match e {
                RefreshError::Unknown => "refresh_token_unknown",
                RefreshError::Expired => "refresh_token_expired",
                RefreshError::Reused => "refresh_token_reused",
                RefreshError::Port(_) => "store_unavailable",
            },
            Self::AccessToken(e) => match e {
                AccessTokenError::Invalid => "access_token_invalid",
                AccessTokenError::Expired => "access_token_expired",
                AccessTokenError::Revoked => "access_token_revoked",
            },
            Self::Contention => "concurrent_update",
            Self::Unavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl AppError {
    /// How a transport should treat it.
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            Self::Invalid(_)
            | Self::Payload(_)
            | Self::PayloadRejected
            | Self::SessionKeySpent
            | Self::Ticket(TicketError::Missing)
            | Self::UnknownTenant => K::BadRequest,
            Self::LegacyPayloadsDisabled | Self::SnapshotUser => K::Forbidden,
            Self::ChannelUnsupported | Self::RedirectUriNotAllowed => K::BadRequest,
            Self::CodeChallengeRequired | Self::CodeChallengeMethodUnsupported => K::BadRequest,
            Self::StateInvalid | Self::StateUsed | Self::ResultInvalid => K::Unauthorized,
            Self::CodeVerifierMismatch => K::Unauthorized,
            Self::TicketAlreadyUsed => K::Unauthorized,
            Self::UnknownApp | Self::UserNotFound | Self::AccountNotFound => K::NotFound,
            Self::WeChat(e) => match e {
                WeChatError::InvalidCode
                | WeChatError::CodeUsed
                | WeChatError::CodeAlreadyAnswered => K::BadRequest,
                WeChatError::RateLimited => K::TooManyRequests(60),
                WeChatError::BlockedUser => K::Forbidden,
                WeChatError::Unavailable { retry_after_secs } => K::Unavailable(*retry_after_secs),
                WeChatError::QuotaExhausted => K::Unavailable(3600),
                WeChatError::BadAppCredentials
                | WeChatError::IpNotWhitelisted
                | WeChatError::Unknown { .. } => K::Internal,
            },
            Self::Ticket(_) | Self::TicketAppMismatch | Self::LegacyBindKey(_) => K::Unauthorized,
            Self::Account(e) => match e {
                AccountError::NoSession | AccountError::TicketUnknownSession => K::Unauthorized,
                AccountError::TicketSessionSuperseded => K::Unauthorized,
                AccountError::SessionKeyNotHeld => K::BadRequest,
                AccountError::NotBound => K::NotFound,
                _ => K::Conflict,
            },
            Self::RegistrationClosed
            | Self::PhoneNotRegistered
            | Self::UserDisabled
            | Self::TenantMismatch => K::Forbidden,
            Self::UserAlreadyBoundInApp
            | Self::Contention
            | Self::AccountTaken
            | Self::PhoneTaken => K::Conflict,
            Self::NotBound => K::NotFound,
            Self::BadCredentials | Self::Refresh(_) | Self::AccessToken(_) => K::Unauthorized,
            Self::TooManyAttempts(secs) | Self::TooManyLogins(secs) => K::TooManyRequests(*secs),
            Self::Busy(secs) => K::Unavailable(*secs),
            Self::Unavailable(_) => K::Unavailable(5),
            Self::Internal(_) => K::Internal,
        }
    }
}

#[cfg(test)]
mod port_error_tests {
    use super::*;

    fn boom() -> std::io::Error {
        std::io::Error::other("connection reset")
    }

    #[test]
    fn a_port_error_keeps_its_source_and_its_message() {
        let internal = PortError::internal("database", boom());
        assert_eq!(internal.to_string(), "database");
        assert_eq!(
            std::error::Error::source(&internal).map(ToString::to_string),
            Some("connection reset".to_owned())
        );
        assert_eq!(Chain(&internal).to_string(), "database: connection reset");
        // Logs get the whole chain; clients only ever see what is unavailable.
        assert!(matches!(
            AppError::from(internal),
            AppError::Internal(message) if message == "database: connection reset"
        ));
        let down = PortError::unavailable("the database", boom());
        assert_eq!(down.to_string(), "the database is unavailable");
        assert!(matches!(
            AppError::from(down),
            AppError::Unavailable(what) if what == "the database"
        ));
        // Without a source, as before.
        assert_eq!(PortError::Internal("odd".into()).to_string(), "odd");
        // Debug shows a source's Display, not its Debug (here: the bytes it failed on).
        let bytes = String::from_utf8(vec![0xff, 0x13, 0x80]).unwrap_err();
        let debug = format!("{:?}", PortError::internal("users.mobile", bytes));
        assert!(
            debug.contains("invalid utf-8") && !debug.contains("255"),
            "{debug}"
        );
    }
}
