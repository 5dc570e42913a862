//! The one place where errors become HTTP: a status for every [`ErrorKind`], the
//! `application/problem+json` body of the v1 API and the GitEgg envelope code.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use miniauth_application::{AppError, ErrorKind};
use miniauth_domain::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of v1 errors (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A request refused by the transport before any use case ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// The body is not JSON: the parser's reason.
    InvalidJson(String),
    /// The body does not have the expected shape: what is wrong.
    InvalidBody(String),
    /// The named part of the request (body, query string) is not UTF-8.
    InvalidUtf8(String),
    /// A broken percent escape or a repeated parameter: what is wrong.
    InvalidQuery(String),
    /// The named path segment (appid, user id) is not UTF-8.
    InvalidPath(&'static str),
    /// The body could not be read.
    UnreadableBody,
    /// The body is larger than the configured limit.
    BodyTooLarge,
    /// The body is not of the named media type(s).
    UnsupportedMediaType(String),
    /// No bearer token was sent.
    AccessTokenMissing,
    /// The admin token is missing or wrong.
    AdminTokenInvalid,
    /// No admin token is configured.
    AdminDisabled,
    /// The OAuth client credentials are missing or wrong.
    ClientUnauthorized,
    /// `grant_type` is missing or not a grant of this endpoint.
    UnsupportedGrantType,
    /// No route matches the path.
    RouteNotFound,
    /// The route does not accept the method.
    MethodNotAllowed,
    /// The request took longer than the seconds given.
    Timeout(u64),
    /// The store cannot be reached yet.
    NotReady,
    /// No event was ever recorded for the account asked about.
    /// This deployment serves no audit log.
    AuditUnavailable,
}

impl RequestError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_)
            | Self::InvalidBody(_)
            | Self::InvalidUtf8(_)
            | Self::InvalidQuery(_)
            | Self::InvalidPath(_)
            | Self::UnreadableBody
            | Self::UnsupportedGrantType => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::AccessTokenMissing | Self::AdminTokenInvalid | Self::ClientUnauthorized => {
                StatusCode::UNAUTHORIZED
            }
            Self::AdminDisabled => StatusCode::FORBIDDEN,
            Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Timeout(_) | Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::AuditUnavailable => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidBody(_) => "invalid_body",
            Self::InvalidUtf8(_) => "invalid_utf8",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidPath(_) => "invalid_path",
            Self::UnreadableBody => "unreadable_body",
            Self::BodyTooLarge => "body_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::AccessTokenMissing => "access_token_missing",
            Self::AdminTokenInvalid => "admin_token_invalid",
            Self::AdminDisabled => "admin_disabled",
            Self::ClientUnauthorized => "client_unauthorized",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Timeout(_) => "request_timeout",
            Self::NotReady => "not_ready",
            Self::AuditUnavailable => "audit_unavailable",
        }
    }

    /// What went wrong, for a front-end developer.
    pub fn detail(&self) -> String {
        match self {
            Self::InvalidJson(reason) => format!("the body is not valid JSON: {reason}"),
            Self::InvalidBody(detail) | Self::InvalidQuery(detail) => detail.clone(),
            Self::InvalidUtf8(what) => format!("the {what} is not valid UTF-8"),
            Self::InvalidPath(what) => format!("the {what} in the path is not valid UTF-8"),
            Self::UnreadableBody => "the request body could not be read".to_owned(),
            Self::BodyTooLarge => "the request body is larger than this server accepts".to_owned(),
            Self::UnsupportedMediaType(expected) => format!("send the body as {expected}"),
            Self::AccessTokenMissing => {
                "send the access token as `Authorization: Bearer <token>`".to_owned()
            }
            Self::AdminTokenInvalid => {
                "send the configured admin token as `Authorization: Bearer <token>`".to_owned()
            }
            Self::AdminDisabled => {
                "the admin API is disabled: no admin token is configured".to_owned()
            }
            Self::ClientUnauthorized => {
                "the OAuth client credentials (HTTP Basic) are missing or wrong".to_owned()
            }
            Self::UnsupportedGrantType => {
                "grant_type must be one of the grants this endpoint lists".to_owned()
            }
            Self::RouteNotFound => "no such route".to_owned(),
            Self::MethodNotAllowed => "this route does not accept this method".to_owned(),
            Self::Timeout(after_secs) => {
                format!("the request took longer than {after_secs} s; try again")
            }
            Self::NotReady => "the service cannot reach its store yet".to_owned(),
            Self::AuditUnavailable => "this deployment serves no audit log".to_owned(),
        }
    }

    /// The seconds of the `Retry-After` header, if any.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Timeout(_) => Some(1),
            Self::NotReady => Some(5),
            _ => None,
        }
    }
}

/// Everything a handler can answer instead of success.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// A use case refused.
    App(AppError),
    /// The transport refused.
    Request(RequestError),
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        Self::App(error)
    }
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        Self::Request(error)
    }
}

/// The status of an [`ErrorKind`] and the seconds of its `Retry-After`, if any.
pub fn status_of(kind: ErrorKind) -> (StatusCode, Option<u64>) {
    match kind {
        ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, None),
        ErrorKind::Unauthorized => (StatusCode::UNAUTHORIZED, None),
        ErrorKind::Forbidden => (StatusCode::FORBIDDEN, None),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, None),
        ErrorKind::Conflict => (StatusCode::CONFLICT, None),
        ErrorKind::TooManyRequests(secs) => (StatusCode::TOO_MANY_REQUESTS, Some(secs)),
        ErrorKind::Unavailable(secs) => (StatusCode::SERVICE_UNAVAILABLE, Some(secs)),
        ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, None),
    }
}

/// What a client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rendered {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// Status, code and a detail safe to show; logs what is hidden.
    pub fn render(&self) -> Rendered {
        match self {
            Self::Request(e) => Rendered {
                status: e.status(),
                code: e.code(),
                detail: e.detail(),
                retry_after: e.retry_after(),
            },
            Self::App(e) => {
                let (status, retry_after) = status_of(e.kind());
                let detail = if status == StatusCode::INTERNAL_SERVER_ERROR {
                    // The cause may name internals (WeChat credentials, SQL): logs only.
                    tracing::error!(code = e.code(), cause = %internal_cause(e), "request failed");
                    "an internal error occurred; the x-request-id header identifies it in the logs"
                        .to_owned()
                } else {
                    if status.is_server_error() {
                        tracing::warn!(code = e.code(), cause = %e, "dependency unavailable");
                    }
                    e.to_string()
                };
                Rendered {
                    status,
                    code: e.code(),
                    detail,
                    retry_after,
                }
            }
        }
    }
}

fn internal_cause(error: &AppError) -> String {
    match error {
        AppError::Internal(message) => message.clone(),
        other => other.to_string(),
    }
}

/// An RFC 9457 problem, as every v1 error is answered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:miniauth:error:{code}`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The HTTP reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for a front-end developer.
    pub detail: String,
    /// The stable machine code (see docs/api.md).
    pub code: String,
}

impl Rendered {
    fn problem(&self) -> Problem {
        Problem {
            type_uri: format!("urn:miniauth:error:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
        }
    }

    /// The v1 answer: `application/problem+json` with the status.
    pub fn into_problem_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.render().into_problem_response()
    }
}

/// The GitEgg result code of a use case's refusal: the one table of the
/// GitEgg-compatible API. Variants not named here follow their HTTP status.
pub fn gitegg_code(error: &AppError) -> u16 {
    use miniauth_domain::AccountError;
    match error {
        AppError::BadCredentials => 419,
        AppError::UserNotFound => 423,
        AppError::UserDisabled => 428,
        AppError::NotBound | AppError::Account(AccountError::NotBound) => 601,
        AppError::TooManyLogins(_) => 429,
        AppError::UserAlreadyBoundInApp
        | AppError::Account(
            AccountError::AlreadyBoundToOtherUser | AccountError::BoundToOtherUser,
        ) => 603,
        other => gitegg_code_of_status(status_of(other.kind()).0),
    }
}

/// GitEgg's code for a refusal it has no code of its own for.
fn gitegg_code_of_status(status: StatusCode) -> u16 {
    match status.as_u16() {
        401 => 401,
        403 => 403,
        500..=599 => 500,
        _ => 410,
    }
}

impl ApiError {
    /// The GitEgg envelope code: the use case's by variant, the transport's by status.
    pub fn gitegg_code(&self) -> u16 {
        match self {
            Self::App(e) => gitegg_code(e),
            Self::Request(e) => gitegg_code_of_status(e.status()),
        }
    }
}

/// One row of the error table of docs/api.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRow {
    /// The stable code.
    pub code: &'static str,
    /// The v1 HTTP status.
    pub status: u16,
    /// The GitEgg envelope code.
    pub gitegg: u16,
    /// What it means (the message clients get).
    pub meaning: String,
}

/// Every error this API answers, with its status and GitEgg code, built from the same
/// code paths the handlers use (docs/api.md is checked against it by a test).
pub fn error_catalog() -> Vec<ErrorRow> {
    let errors = app_error_samples()
        .into_iter()
        .map(ApiError::App)
        .chain(request_error_samples().into_iter().map(ApiError::Request));
    let mut rows: Vec<ErrorRow> = Vec::new();
    for error in errors {
        let rendered = quietly(|| error.render());
        if rows.iter().any(|row| row.code == rendered.code) {
            continue;
        }
        let meaning = match &error {
            ApiError::App(e) if rendered.status == StatusCode::INTERNAL_SERVER_ERROR => {
                format!("{e} (logged; clients get a generic message)")
            }
            _ => rendered.detail,
        };
        rows.push(ErrorRow {
            code: rendered.code,
            status: rendered.status.as_u16(),
            gitegg: error.gitegg_code(),
            meaning,
        });
    }
    rows
}

/// The samples of an enum's variants, in the order given. The patterns are matched
/// with no wildcard, so a new variant does not compile until it is given its samples
/// (or `[]`, saying why it never reaches a client).
macro_rules! every_variant {
    ($type:ty { $($pattern:pat => [$($sample:expr),* $(,)?]),* $(,)? }) => {{
        let _every_variant_is_listed = |error: &$type| match error {
            $($pattern => ()),*
        };
        let samples: Vec<$type> = vec![$($($sample.into(),)*)*];
        samples
    }};
}

/// One use-case error of each code, in the order of the table.
fn app_error_samples() -> Vec<AppError> {
    use miniauth_application::ports::{AccessTokenError, RefreshError, TicketError, WeChatError};
    use miniauth_application::LegacyKeyRefusal;
    use miniauth_domain::{AccountError, InvalidValue, PayloadError};
    use AppError as E;

    every_variant!(AppError {
        E::Invalid(_) => [InvalidValue::new("{field}", "{reason}")],
        E::UnknownApp => [E::UnknownApp],
        E::UnknownTenant => [E::UnknownTenant],
        E::TenantMismatch => [E::TenantMismatch],
        E::WeChat(WeChatError::InvalidCode) => [WeChatError::InvalidCode],
        E::WeChat(WeChatError::CodeUsed) => [WeChatError::CodeUsed],
        E::WeChat(WeChatError::CodeAlreadyAnswered) => [WeChatError::CodeAlreadyAnswered],
        E::WeChat(WeChatError::RateLimited) => [WeChatError::RateLimited],
        E::WeChat(WeChatError::BlockedUser) => [WeChatError::BlockedUser],
        E::WeChat(WeChatError::Unavailable { .. }) => [WeChatError::Unavailable {
            retry_after_secs: 5,
        }],
        E::WeChat(WeChatError::BadAppCredentials) => [WeChatError::BadAppCredentials],
        E::WeChat(WeChatError::IpNotWhitelisted) => [WeChatError::IpNotWhitelisted],
        E::WeChat(WeChatError::QuotaExhausted) => [WeChatError::QuotaExhausted],
        E::WeChat(WeChatError::Unknown { .. }) => [WeChatError::Unknown {
            code: 0,
            message: "{errmsg}".into(),
        }],
        E::Ticket(TicketError::Missing) => [TicketError::Missing],
        E::Ticket(TicketError::Malformed) => [TicketError::Malformed],
        E::Ticket(TicketError::Forged) => [TicketError::Forged],
        E::Ticket(TicketError::Expired) => [TicketError::Expired],
        E::TicketAppMismatch => [E::TicketAppMismatch],
        E::Payload(PayloadError::NotBase64 { .. }) => [PayloadError::NotBase64 { field: "{field}" }],
        E::Payload(PayloadError::WrongLength { .. }) => [PayloadError::WrongLength {
            field: "{field}",
            reason: "{reason}",
        }],
        // `From<PayloadError>` answers these as `PayloadRejected`.
        E::Payload(
            PayloadError::SessionKeyMismatch
            | PayloadError::NotJson(_)
            | PayloadError::WatermarkAppMismatch
            | PayloadError::WatermarkExpired
            | PayloadError::SignatureMismatch
            | PayloadError::OpenIdMismatch,
        ) => [],
        E::PayloadRejected => [E::PayloadRejected],
        E::SessionKeySpent => [E::SessionKeySpent],
        E::LegacyPayloadsDisabled => [E::LegacyPayloadsDisabled],
        E::SnapshotUser => [E::SnapshotUser],
        E::ChannelUnsupported => [E::ChannelUnsupported],
        E::RedirectUriNotAllowed => [E::RedirectUriNotAllowed],
        E::StateInvalid => [E::StateInvalid],
        E::StateUsed => [E::StateUsed],
        E::ResultInvalid => [E::ResultInvalid],
        E::CodeChallengeRequired => [E::CodeChallengeRequired],
        E::CodeChallengeMethodUnsupported => [E::CodeChallengeMethodUnsupported],
        E::CodeVerifierMismatch => [E::CodeVerifierMismatch],
        E::TicketAlreadyUsed => [E::TicketAlreadyUsed],
        E::Account(AccountError::NoSession) => [AccountError::NoSession],
        E::Account(AccountError::TicketUnknownSession) => [AccountError::TicketUnknownSession],
        E::Account(AccountError::TicketSessionSuperseded) => [AccountError::TicketSessionSuperseded],
        E::Account(AccountError::SessionKeyNotHeld) => [AccountError::SessionKeyNotHeld],
        E::Account(AccountError::AlreadyBoundToOtherUser) => [AccountError::AlreadyBoundToOtherUser],
        E::Account(AccountError::BoundToOtherUser) => [AccountError::BoundToOtherUser],
        E::Account(AccountError::SessionForAnotherIdentity) => [AccountError::SessionForAnotherIdentity],
        E::Account(AccountError::UnionidMismatch) => [AccountError::UnionidMismatch],
        E::Account(AccountError::ChannelMismatch) => [AccountError::ChannelMismatch],
        E::RegistrationClosed => [E::RegistrationClosed],
        E::PhoneNotRegistered => [E::PhoneNotRegistered],
        E::UserAlreadyBoundInApp => [E::UserAlreadyBoundInApp],
        E::AccountTaken => [E::AccountTaken],
        E::PhoneTaken => [E::PhoneTaken],
        E::LegacyBindKey(LegacyKeyRefusal::Invalid) => [E::LegacyBindKey(LegacyKeyRefusal::Invalid)],
        E::LegacyBindKey(LegacyKeyRefusal::NotImported) => [E::LegacyBindKey(LegacyKeyRefusal::NotImported)],
        E::LegacyBindKey(LegacyKeyRefusal::Expired) => [E::LegacyBindKey(LegacyKeyRefusal::Expired)],
        E::NotBound => [E::NotBound],
        // Shares `not_bound` with the row above, which describes it.
        E::Account(AccountError::NotBound) => [AccountError::NotBound],
        E::BadCredentials => [E::BadCredentials],
        E::TooManyAttempts(_) => [E::TooManyAttempts(SAMPLE_RETRY_SECS)],
        E::TooManyLogins(_) => [E::TooManyLogins(SAMPLE_RETRY_SECS)],
        E::Busy(_) => [E::Busy(1)],
        E::UserDisabled => [E::UserDisabled],
        E::UserNotFound => [E::UserNotFound],
        E::AccountNotFound => [E::AccountNotFound],
        E::Refresh(RefreshError::Unknown) => [RefreshError::Unknown],
        E::Refresh(RefreshError::Expired) => [RefreshError::Expired],
        E::Refresh(RefreshError::Reused) => [RefreshError::Reused],
        // `From<RefreshError>` answers this as the port's error.
        E::Refresh(RefreshError::Port(_)) => [],
        E::AccessToken(AccessTokenError::Invalid) => [AccessTokenError::Invalid],
        E::AccessToken(AccessTokenError::Expired) => [AccessTokenError::Expired],
        E::AccessToken(AccessTokenError::Revoked) => [AccessTokenError::Revoked],
        E::Contention => [E::Contention],
        E::Unavailable(_) => [E::Unavailable("{dependency}".into())],
        E::Internal(_) => [E::Internal("{cause, logged only}".into())],
    })
}

/// The seconds of the sample throttling errors: the table shows them as `N` (the
/// service says how long is left of the window, the `Retry-After` header too).
const SAMPLE_RETRY_SECS: u64 = 4242;

/// One transport error of each code, in the order of the table.
fn request_error_samples() -> Vec<RequestError> {
    use RequestError as R;

    every_variant!(RequestError {
        R::InvalidJson(_) => [R::InvalidJson("{reason}".into())],
        R::InvalidBody(_) => [R::InvalidBody(
            "the JSON body does not have the expected shape: {reason}".into(),
        )],
        R::InvalidUtf8(_) => [R::InvalidUtf8("body or query string".into())],
        R::InvalidQuery(_) => [R::InvalidQuery(
            "the query string has an incomplete percent escape or names a parameter twice"
                .into(),
        )],
        R::InvalidPath(_) => [R::InvalidPath("appid")],
        R::UnreadableBody => [R::UnreadableBody],
        R::BodyTooLarge => [R::BodyTooLarge],
        R::UnsupportedMediaType(_) => [R::UnsupportedMediaType("application/json".into())],
        R::AccessTokenMissing => [R::AccessTokenMissing],
        R::AdminTokenInvalid => [R::AdminTokenInvalid],
        R::AdminDisabled => [R::AdminDisabled],
        R::ClientUnauthorized => [R::ClientUnauthorized],
        R::UnsupportedGrantType => [R::UnsupportedGrantType],
        R::RouteNotFound => [R::RouteNotFound],
        R::MethodNotAllowed => [R::MethodNotAllowed],
        R::Timeout(_) => [R::Timeout(crate::DEFAULT_REQUEST_TIMEOUT.as_secs())],
        R::NotReady => [R::NotReady],
        R::AuditUnavailable => [R::AuditUnavailable],
    })
}

/// Runs `f` without emitting its log lines (the catalog renders samples).
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), f)
}

/// The error table of docs/api.md, as markdown.
pub fn error_table_markdown() -> String {
    let mut table = String::from(
        "| code | HTTP status (v1) | GitEgg code | meaning |\n| --- | --- | --- | --- |\n",
    );
    for row in error_catalog() {
        table.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            row.code,
            row.status,
            row.gitegg,
            row.meaning
                .replace(&format!("{SAMPLE_RETRY_SECS} s"), "N s (`Retry-After`)")
                .replace('|', "\\|")
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_their_statuses() {
        assert_eq!(status_of(ErrorKind::BadRequest).0, StatusCode::BAD_REQUEST);
        assert_eq!(
            status_of(ErrorKind::TooManyRequests(7)),
            (StatusCode::TOO_MANY_REQUESTS, Some(7))
        );
        assert_eq!(
            status_of(ErrorKind::Unavailable(3)),
            (StatusCode::SERVICE_UNAVAILABLE, Some(3))
        );
        assert_eq!(
            status_of(ErrorKind::Internal).0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn internal_causes_are_hidden() {
        let rendered = ApiError::App(AppError::Internal("db password=hunter2".into())).render();
        assert_eq!(rendered.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!rendered.detail.contains("hunter2"));
        assert_eq!(rendered.code, "internal_error");
    }

    #[test]
    fn gitegg_codes_follow_the_table() {
        use miniauth_application::ports::{TicketError, WeChatError};
        use miniauth_domain::AccountError;
        assert_eq!(gitegg_code(&AppError::BadCredentials), 419);
        assert_eq!(gitegg_code(&AppError::NotBound), 601);
        assert_eq!(gitegg_code(&AccountError::NotBound.into()), 601);
        assert_eq!(gitegg_code(&AppError::UserAlreadyBoundInApp), 603);
        assert_eq!(gitegg_code(&AccountError::BoundToOtherUser.into()), 603);
        assert_eq!(gitegg_code(&TicketError::Expired.into()), 401);
        assert_eq!(gitegg_code(&AppError::RegistrationClosed), 403);
        assert_eq!(gitegg_code(&WeChatError::InvalidCode.into()), 410);
        assert_eq!(
            gitegg_code(
                &WeChatError::Unavailable {
                    retry_after_secs: 5
                }
                .into()
            ),
            500
        );
        assert_eq!(
            ApiError::Request(RequestError::AccessTokenMissing).gitegg_code(),
            401
        );
        assert_eq!(
            ApiError::Request(RequestError::UnsupportedGrantType).gitegg_code(),
            410
        );
    }

    #[test]
    fn the_catalog_has_one_row_per_code() {
        let rows = error_catalog();
        let mut codes: Vec<_> = rows.iter().map(|r| r.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), rows.len());
        assert!(codes.contains(&"body_too_large"));
        assert!(codes.contains(&"invalid_json"));
        assert!(codes.contains(&"unknown_app"));
    }
}
