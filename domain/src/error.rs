//! The domain's errors, each with a stable machine code.

use thiserror::Error;

/// Something that has a stable, machine-readable error code (snake_case).
pub trait ErrorCode {
    /// The code clients can match on; never changes once published.
    fn code(&self) -> &'static str;
}

/// A value that failed to parse into a domain type.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidValue {
    /// The name of the field as clients send it.
    pub field: &'static str,
    /// What is wrong, in words a front-end developer understands.
    pub reason: &'static str,
}

impl InvalidValue {
    /// A parse failure of `field`.
    pub fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }
}

impl ErrorCode for InvalidValue {
    fn code(&self) -> &'static str {
        "invalid_field"
    }
}

/// Why an encrypted WeChat payload or its signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PayloadError {
    /// A field is not base64, even after repairing spaces.
    #[error("{field} is not valid base64")]
    NotBase64 {
        /// `session_key`, `iv` or `encrypted_data`.
        field: &'static str,
    },
    /// A field decodes to the wrong number of bytes.
    #[error("{field} has the wrong length: {reason}")]
    WrongLength {
        /// `session_key`, `iv` or `encrypted_data`.
        field: &'static str,
        /// What length was expected.
        reason: &'static str,
    },
    /// The plaintext's PKCS#7 padding is wrong: it was encrypted under another session key.
    #[error("the payload was not encrypted under this session's key (session key does not match)")]
    SessionKeyMismatch,
    /// The plaintext is not the JSON WeChat sends.
    #[error("the decrypted payload is not the JSON WeChat sends: {0}")]
    NotJson(String),
    /// The watermark names another mini program.
    #[error("the payload's watermark names another app")]
    WatermarkAppMismatch,
    /// The watermark is older than the configured maximum age.
    #[error("the payload's watermark is older than allowed")]
    WatermarkExpired,
    /// `signature` is not hex(sha1(rawData + session_key)).
    #[error("signature does not match rawData and the session key")]
    SignatureMismatch,
    /// The decrypted payload is about another WeChat user.
    #[error("the payload belongs to another WeChat user")]
    OpenIdMismatch,
}

impl ErrorCode for PayloadError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotBase64 { .. } => "payload_not_base64",
            Self::WrongLength { .. } => "payload_wrong_length",
            Self::SessionKeyMismatch => "session_key_mismatch",
            Self::NotJson(_) => "payload_not_json",
            Self::WatermarkAppMismatch => "watermark_app_mismatch",
            Self::WatermarkExpired => "watermark_expired",
            Self::SignatureMismatch => "signature_mismatch",
            Self::OpenIdMismatch => "payload_openid_mismatch",
        }
    }
}

/// A rule of the `SocialAccount` aggregate that a command broke.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AccountError {
    /// The account has never obtained a session (no login yet).
    #[error("this WeChat identity has not logged in yet")]
    NoSession,
    /// The ticket names a session this account never had.
    #[error("the ticket names a session this account never had")]
    TicketUnknownSession,
    /// The ticket's session was replaced by a newer login.
    #[error("the ticket comes from an earlier login that a newer one replaced; log in again")]
    TicketSessionSuperseded,
    /// The payload was decrypted under a key that is neither the ticket's nor the newest.
    #[error("the payload was not encrypted under a session key this account holds")]
    SessionKeyNotHeld,
    /// Binding to a user while bound to another one.
    #[error("this WeChat identity is already bound to another user")]
    AlreadyBoundToOtherUser,
    /// Unbinding while nothing is bound.
    #[error("this WeChat identity is not bound to any user")]
    NotBound,
    /// Unbinding a user the account is not bound to.
    #[error("this WeChat identity is bound to another user")]
    BoundToOtherUser,
    /// The session obtained is for another WeChat user than the account's.
    #[error("the session belongs to another WeChat user")]
    SessionForAnotherIdentity,
    /// WeChat names another unionid than the one on record for this identity.
    #[error("the unionid differs from the one on record for this WeChat identity")]
    UnionidMismatch,
    /// The command needs another kind of app than the one the identity logs in through
    /// (a phone or an encrypted payload for an identity without a session key, a login
    /// of another channel than its earlier ones).
    #[error("this WeChat identity logs in through another kind of app")]
    ChannelMismatch,
}

impl ErrorCode for AccountError {
    fn code(&self) -> &'static str {
        match self {
            Self::NoSession => "no_session",
            Self::TicketUnknownSession => "ticket_unknown_session",
            Self::TicketSessionSuperseded => "ticket_session_superseded",
            Self::SessionKeyNotHeld => "session_key_not_held",
            Self::AlreadyBoundToOtherUser => "already_bound_to_other_user",
            Self::NotBound => "not_bound",
            Self::BoundToOtherUser => "bound_to_other_user",
            Self::SessionForAnotherIdentity => "session_for_another_identity",
            Self::UnionidMismatch => "unionid_mismatch",
            Self::ChannelMismatch => "channel_mismatch",
        }
    }
}
