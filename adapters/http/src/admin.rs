//! The audit routes of the admin API: an account's history, bindings as they stood at
//! an instant, the log for export, and erasure. The log is read through the
//! [`AuditLog`] port, which the binary implements over its store.

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use miniauth_application::ports::PortError;
use miniauth_application::{Actor, AppError};
use miniauth_domain::{AppId, InvalidValue, OpenId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, Problem, RequestError};
use crate::extract::{Admin, Origin, Params};
use crate::state::ApiState;

/// The media type of exports: one JSON object per line.
pub const NDJSON: &str = "application/x-ndjson";
/// The page size of `/v1/admin/events` when none is asked for.
pub const DEFAULT_EXPORT_LIMIT: u32 = 1000;
/// The largest page `/v1/admin/events` answers.
pub const MAX_EXPORT_LIMIT: u32 = 10_000;

/// The event log as auditors read it.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Every event of (appid, openid) in order; empty when the account is unknown.
    async fn history(
        &self,
        appid: &AppId,
        openid: &OpenId,
    ) -> Result<Vec<HistoryEntryView>, PortError>;

    /// The user's bindings at `instant`, replayed from the events up to it.
    async fn bindings_as_of(
        &self,
        user: UserId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAtView>, PortError>;

    /// Every binding of the app at `instant`, replayed from the events up to it.
    async fn app_bindings_as_of(
        &self,
        appid: &AppId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAtView>, PortError>;

    /// The log after `position` in commit order, at most `limit` events, as stored.
    async fn events_after(
        &self,
        position: i64,
        limit: u32,
    ) -> Result<Vec<ExportedEvent>, PortError>;
}

/// One event of an account's history; personal data masked or `erased`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntryView {
    /// The global commit order.
    pub position: i64,
    /// The number within the account's stream, from 1.
    pub sequence: i64,
    /// The event type (`SessionObtained`, `ProfileDecrypted`, `PhoneVerified`,
    /// `UserBound`, `Unbound`, `PersonalDataErased`).
    pub event_type: String,
    /// The schema version as stored.
    pub event_version: String,
    /// When it happened (RFC 3339).
    pub occurred_at: DateTime<Utc>,
    /// How: bind method, phone source or profile source.
    pub via: Option<String>,
    /// Why a binding ended.
    pub reason: Option<String>,
    /// The user bound or unbound.
    pub user_id: Option<i64>,
    /// The session number of a login.
    pub session_seq: Option<u64>,
    /// The Open Platform id learned.
    pub unionid: Option<String>,
    /// The phone, masked, or `erased`.
    pub phone: Option<String>,
    /// The nickname, masked, or `erased`.
    pub nickname: Option<String>,
    /// Who acted.
    pub actor: Option<String>,
    /// The request it came from.
    pub request_id: Option<String>,
    /// The client IP.
    pub client_ip: Option<String>,
    /// When it was committed.
    pub recorded_at: Option<String>,
    /// The chain hash (null for events older than the chain).
    pub hash: Option<String>,
}

/// A binding as it stood at an instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BindingAtView {
    /// The app.
    pub appid: String,
    /// The WeChat identity.
    pub openid: String,
    /// The user.
    pub user_id: i64,
    /// Since when.
    pub bound_at: DateTime<Utc>,
    /// How it was made.
    pub via: String,
}

/// One event exactly as stored (one line of an export).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExportedEvent {
    /// The global commit order.
    pub position: i64,
    /// `{appid}:{openid}`.
    pub aggregate_id: String,
    /// The number within the stream.
    pub sequence: i64,
    /// The event type.
    pub event_type: String,
    /// The schema version as stored.
    pub event_version: String,
    /// The payload as stored (personal data sealed).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The metadata as stored, with the chain `hash`.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

/// `GET /v1/admin/apps/{appid}/accounts/{openid}/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryResponse {
    /// The app.
    pub appid: String,
    /// The WeChat identity.
    pub openid: String,
    /// Every event, in order.
    pub events: Vec<HistoryEntryView>,
}

/// `GET /v1/admin/users/{user_id}/bindings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserBindingsResponse {
    /// The user.
    pub user_id: i64,
    /// The instant asked about.
    pub as_of: DateTime<Utc>,
    /// The bindings that held then.
    pub bindings: Vec<BindingAtView>,
}

/// `GET /v1/admin/bindings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppBindingsResponse {
    /// The app.
    pub appid: String,
    /// The instant asked about.
    pub as_of: DateTime<Utc>,
    /// The bindings that held then.
    pub bindings: Vec<BindingAtView>,
}

fn invalid(error: InvalidValue) -> ApiError {
    ApiError::App(error.into())
}

fn port(error: PortError) -> ApiError {
    ApiError::App(AppError::from(error))
}

fn audit_log(state: &ApiState) -> Result<&dyn AuditLog, ApiError> {
    state
        .audit
        .as_deref()
        .ok_or_else(|| RequestError::AuditUnavailable.into())
}

/// Parses an RFC 3339 instant (`2026-03-01T00:00:00Z`, `2026-03-01T08:00:00+08:00`).
pub fn parse_instant(field: &'static str, text: &str) -> Result<DateTime<Utc>, InvalidValue> {
    if text.trim().is_empty() {
        return Err(InvalidValue::new(field, "is required (RFC 3339)"));
    }
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            InvalidValue::new(
                field,
                "must be an RFC 3339 instant such as 2026-03-01T00:00:00Z",
            )
        })
}

fn account_path(appid: &str, openid: &str) -> Result<(AppId, OpenId), ApiError> {
    Ok((
        AppId::parse(appid).map_err(invalid)?,
        OpenId::parse(openid).map_err(invalid)?,
    ))
}

fn path_error() -> ApiError {
    RequestError::InvalidPath("appid").into()
}

/// Every event of one WeChat identity, personal data masked (admin token).
#[utoipa::path(
    get, path = "/v1/admin/apps/{appid}/accounts/{openid}/history", tag = "v1",
    params(
        ("appid" = String, Path, description = "The mini program's AppID"),
        ("openid" = String, Path, description = "The WeChat identity"),
    ),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The history", body = HistoryResponse),
        (status = 400, description = "Bad appid or openid", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No event for this account", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn history(
    State(state): State<ApiState>,
    _admin: Admin,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let Path((appid, openid)) = path.map_err(|_| path_error())?;
    let (appid, openid) = account_path(&appid, &openid)?;
    let events = audit_log(&state)?
        .history(&appid, &openid)
        .await
        .map_err(port)?;
    if events.is_empty() {
        return Err(RequestError::AccountNotFound.into());
    }
    Ok(Json(HistoryResponse {
        appid: appid.to_string(),
        openid: openid.to_string(),
        events,
    }))
}

/// A user's bindings as they stood at `as_of`, replayed from the log (admin token).
#[utoipa::path(
    get, path = "/v1/admin/users/{user_id}/bindings", tag = "v1",
    params(
        ("user_id" = i64, Path, description = "The business user"),
        ("as_of" = String, Query, description = "RFC 3339 instant; default: now"),
    ),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The bindings then", body = UserBindingsResponse),
        (status = 400, description = "Bad user id or instant", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn user_bindings(
    State(state): State<ApiState>,
    _admin: Admin,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    params: Params,
) -> Result<Json<UserBindingsResponse>, ApiError> {
    let Path(user) = path.map_err(|_| path_error())?;
    let user = user
        .parse::<i64>()
        .ok()
        .and_then(|id| UserId::new(id).ok())
        .ok_or_else(|| invalid(InvalidValue::new("user_id", "must be a positive integer")))?;
    let as_of = as_of(&params)?;
    let bindings = audit_log(&state)?
        .bindings_as_of(user, as_of)
        .await
        .map_err(port)?;
    Ok(Json(UserBindingsResponse {
        user_id: user.get(),
        as_of,
        bindings,
    }))
}

fn as_of(params: &Params) -> Result<DateTime<Utc>, ApiError> {
    match params.optional("as_of") {
        None => Ok(Utc::now()),
        Some(text) => parse_instant("as_of", text).map_err(invalid),
    }
}

/// Every binding of an app as it stood at `as_of` (admin token).
#[utoipa::path(
    get, path = "/v1/admin/bindings", tag = "v1",
    params(
        ("appid" = String, Query, description = "The mini program's AppID"),
        ("as_of" = String, Query, description = "RFC 3339 instant; default: now"),
    ),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The bindings then", body = AppBindingsResponse),
        (status = 400, description = "Bad appid or instant", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn app_bindings(
    State(state): State<ApiState>,
    _admin: Admin,
    params: Params,
) -> Result<Json<AppBindingsResponse>, ApiError> {
    let appid = AppId::parse(params.get("appid")).map_err(invalid)?;
    let as_of = as_of(&params)?;
    let bindings = audit_log(&state)?
        .app_bindings_as_of(&appid, as_of)
        .await
        .map_err(port)?;
    Ok(Json(AppBindingsResponse {
        appid: appid.to_string(),
        as_of,
        bindings,
    }))
}

/// The log in commit order, one JSON object per line, exactly as stored (admin token).
/// Page with `after` = the last `position` received.
#[utoipa::path(
    get, path = "/v1/admin/events", tag = "v1",
    params(
        ("after" = i64, Query, description = "Answer events after this position (default 0)"),
        ("limit" = u32, Query, description = "At most this many (default 1000, at most 10000)"),
    ),
    security(("admin" = [])),
    responses(
        (status = 200, description = "JSON lines, one ExportedEvent each", body = ExportedEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "Bad after or limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn events(
    State(state): State<ApiState>,
    _admin: Admin,
    params: Params,
) -> Result<Response, ApiError> {
    let after = match params.optional("after") {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(|| invalid(InvalidValue::new("after", "must be a position (0 or more)")))?,
    };
    let limit = match params.optional("limit") {
        None => DEFAULT_EXPORT_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_EXPORT_LIMIT).contains(n))
            .ok_or_else(|| invalid(InvalidValue::new("limit", "must be 1 to 10000")))?,
    };
    let events = audit_log(&state)?
        .events_after(after, limit)
        .await
        .map_err(port)?;
    let body = json_lines(&events);
    let mut response = (StatusCode::OK, Body::from(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(response)
}

/// Events as JSON lines: the export format of the API and of `miniauth audit export`.
pub fn json_lines(events: &[ExportedEvent]) -> String {
    let mut out = String::new();
    for event in events {
        out.push_str(&serde_json::to_string(event).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Erases a WeChat identity's personal data (crypto-shredding); the history stays
/// replayable, its personal data reads as erased (admin token).
#[utoipa::path(
    post, path = "/v1/admin/apps/{appid}/accounts/{openid}/erase", tag = "v1",
    params(
        ("appid" = String, Path, description = "The mini program's AppID"),
        ("openid" = String, Path, description = "The WeChat identity"),
    ),
    security(("admin" = [])),
    responses(
        (status = 204, description = "Erased (again: harmless)"),
        (status = 400, description = "Bad appid or openid", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown appid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn erase(
    State(state): State<ApiState>,
    origin: Origin,
    _admin: Admin,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((appid, openid)) = path.map_err(|_| path_error())?;
    let (appid, openid) = account_path(&appid, &openid)?;
    if state.auth.apps().get(&appid).is_none() {
        return Err(AppError::UnknownApp.into());
    }
    let ctx = origin.context(Actor::Admin);
    state.auth.erase(&ctx, &appid, &openid).await?;
    tracing::info!(%appid, "admin erased an account's personal data");
    Ok(StatusCode::NO_CONTENT)
}
