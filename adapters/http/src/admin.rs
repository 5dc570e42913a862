//! The audit routes of the admin API: an account's history, bindings as they stood at
//! an instant, the log for export, and erasure. The application's [`Audit`] answers;
//! these handlers parse the request and render its answer as it is.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use miniauth_application::audit::{parse_instant, AccountHistory, AppBindings, UserBindings};
use miniauth_application::ports::PortError;
use miniauth_application::{Actor, AppError, Audit};
use miniauth_domain::audit::{json_lines, LoggedEvent};
use miniauth_domain::{AppId, InvalidValue, OpenId, UserId};

use crate::error::{ApiError, Problem, RequestError};
use crate::extract::{Admin, Origin, Params};
use crate::state::ApiState;

/// The media type of exports: one JSON object per line.
pub const NDJSON: &str = "application/x-ndjson";
/// The page size of `/v1/admin/events` when none is asked for.
pub const DEFAULT_EXPORT_LIMIT: u32 = 1000;
/// The largest page `/v1/admin/events` answers.
pub const MAX_EXPORT_LIMIT: u32 = 10_000;

fn invalid(error: InvalidValue) -> ApiError {
    ApiError::App(error.into())
}

fn port(error: PortError) -> ApiError {
    ApiError::App(AppError::from(error))
}

fn audit(state: &ApiState) -> Result<&Audit, ApiError> {
    state
        .audit
        .as_deref()
        .ok_or_else(|| RequestError::AuditUnavailable.into())
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
        (status = 200, description = "The history", body = AccountHistory),
        (status = 400, description = "Bad appid or openid", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No event for this account", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn history(
    State(state): State<ApiState>,
    _admin: Admin,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Json<AccountHistory>, ApiError> {
    let Path((appid, openid)) = path.map_err(|_| path_error())?;
    let (appid, openid) = account_path(&appid, &openid)?;
    let history = audit(&state)?.history(&appid, &openid).await?;
    Ok(Json(history))
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
        (status = 200, description = "The bindings then", body = UserBindings),
        (status = 400, description = "Bad user id or instant", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn user_bindings(
    State(state): State<ApiState>,
    _admin: Admin,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    params: Params,
) -> Result<Json<UserBindings>, ApiError> {
    let Path(user) = path.map_err(|_| path_error())?;
    let user = user
        .parse::<i64>()
        .ok()
        .and_then(|id| UserId::new(id).ok())
        .ok_or_else(|| invalid(InvalidValue::new("user_id", "must be a positive integer")))?;
    let as_of = as_of(&params)?;
    let bindings = audit(&state)?
        .user_bindings(user, as_of)
        .await
        .map_err(port)?;
    Ok(Json(bindings))
}

/// The instant asked about; `None` (now, by the application's clock) when absent.
fn as_of(params: &Params) -> Result<Option<DateTime<Utc>>, ApiError> {
    params
        .optional("as_of")
        .map(|text| parse_instant("as_of", text).map_err(invalid))
        .transpose()
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
        (status = 200, description = "The bindings then", body = AppBindings),
        (status = 400, description = "Bad appid or instant", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn app_bindings(
    State(state): State<ApiState>,
    _admin: Admin,
    params: Params,
) -> Result<Json<AppBindings>, ApiError> {
    let appid = AppId::parse(params.get("appid")).map_err(invalid)?;
    let as_of = as_of(&params)?;
    let bindings = audit(&state)?.app_bindings(&appid, as_of).await?;
    Ok(Json(bindings))
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
        (status = 200, description = "JSON lines, one ExportedEvent each", body = LoggedEvent, content_type = "application/x-ndjson"),
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
    let events = audit(&state)?.export(after, limit).await.map_err(port)?;
    let body = json_lines(&events);
    let mut response = (StatusCode::OK, Body::from(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(response)
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
