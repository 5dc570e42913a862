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
pub(crate) struct RequestError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub retry_after: Option<u64>,
}

impl RequestError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn access_token_missing() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "access_token_missing",
            "send the access token as `Authorization: Bearer <token>`",
        )
    }

    pub fn timeout(after_secs: u64) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                format!("the request took longer than {after_secs} s; try again"),
            )
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
                status: e.status,
                code: e.code,
                detail: e.detail.clone(),
                retry_after: e.retry_after,
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
            Self::Request(e) => gitegg_code_of_status(e.status),
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
    use miniauth_application::ports::{AccessTokenError, RefreshError, TicketError, WeChatError};
    use miniauth_domain::{AccountError, InvalidValue, PayloadError};

    let app_errors: Vec<AppError> = vec![
        InvalidValue::new("{field}", "{reason}").into(),
        AppError::UnknownApp,
        AppError::UnknownTenant,
        AppError::TenantMismatch,
        WeChatError::InvalidCode.into(),
        WeChatError::CodeUsed.into(),
        WeChatError::CodeAlreadyAnswered.into(),
        WeChatError::RateLimited.into(),
        WeChatError::BlockedUser.into(),
        WeChatError::Unavailable {
            retry_after_secs: 5,
        }
        .into(),
        WeChatError::BadAppCredentials.into(),
        WeChatError::IpNotWhitelisted.into(),
        WeChatError::QuotaExhausted.into(),
        WeChatError::Unknown {
            code: 0,
            message: "{errmsg}".into(),
        }
        .into(),
        TicketError::Missing.into(),
        TicketError::Malformed.into(),
        TicketError::Forged.into(),
        TicketError::Expired.into(),
        AppError::TicketAppMismatch,
        PayloadError::NotBase64 { field: "{field}" }.into(),
        PayloadError::WrongLength {
            field: "{field}",
            reason: "{reason}",
        }
        .into(),
        AppError::PayloadRejected,
        AppError::SessionKeySpent,
        AppError::LegacyPayloadsDisabled,
        AppError::TicketAlreadyUsed,
        AccountError::NoSession.into(),
        AccountError::TicketUnknownSession.into(),
        AccountError::TicketSessionSuperseded.into(),
        AccountError::SessionKeyNotHeld.into(),
        AccountError::AlreadyBoundToOtherUser.into(),
        AccountError::BoundToOtherUser.into(),
        AccountError::SessionForAnotherIdentity.into(),
        AppError::RegistrationClosed,
        AppError::PhoneNotRegistered,
        AppError::UserAlreadyBoundInApp,
        AppError::AccountTaken,
        AppError::PhoneTaken,
        AppError::NotBound,
        AppError::BadCredentials,
        AppError::TooManyAttempts(60),
        AppError::TooManyLogins(60),
        AppError::Busy(1),
        AppError::UserDisabled,
        AppError::UserNotFound,
        RefreshError::Unknown.into(),
        RefreshError::Expired.into(),
        RefreshError::Reused.into(),
        AccessTokenError::Invalid.into(),
        AccessTokenError::Expired.into(),
        AccessTokenError::Revoked.into(),
        AppError::Contention,
        AppError::Unavailable("{dependency}".into()),
        AppError::Internal("{cause, logged only}".into()),
    ];
    let mut errors: Vec<ApiError> = app_errors.into_iter().map(ApiError::App).collect();
    errors.extend(
        crate::extract::request_error_samples()
            .into_iter()
            .map(ApiError::Request),
    );
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
            row.meaning.replace('|', "\\|")
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
            ApiError::Request(RequestError::access_token_missing()).gitegg_code(),
            401
        );
        assert_eq!(
            ApiError::Request(crate::extract::unsupported_grant_type()).gitegg_code(),
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
