//! Operations: health, readiness, metrics, the JWKS and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::config::MetricsAccess;
use crate::error::{ApiError, Problem, RequestError};
use crate::extract::{require_admin, Origin};
use crate::metrics::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::openapi::{Jwks, Status};
use crate::state::ApiState;

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves: `{\"status\":\"ok\"}`", body = Status)),
)]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the readiness check passes (the store is reachable).
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready: `{\"status\":\"ready\"}`", body = Status),
        (status = 503, description = "The store cannot be reached yet (`not_ready`)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn readyz(State(state): State<ApiState>) -> Result<Response, ApiError> {
    match state.readiness.check().await {
        Ok(()) => Ok(Json(json!({ "status": "ready" })).into_response()),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            Err(RequestError::NotReady.into())
        }
    }
}

/// `GET /.well-known/jwks.json`: the public keys that verify access tokens.
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "The keys (cacheable 5 min)", body = Jwks)),
)]
pub(crate) async fn jwks(State(state): State<ApiState>) -> Response {
    let mut response = Json(state.jwks.as_ref().clone()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// `GET /metrics`: Prometheus text; with `metrics_require_admin`, only for the
/// bearer of the admin token.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    security((), ("admin" = [])),
    responses(
        (status = 200, description = "Prometheus text; OpenMetrics to a scraper whose `Accept` asks for it",
            content((String = "text/plain"), (String = "application/openmetrics-text"))),
        (status = 401, description = "With `metrics_require_admin`: missing or wrong admin token (`admin_token_invalid`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "With `metrics_require_admin` and no admin token configured (`admin_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "With `metrics_listen`: served on that address only (`route_not_found`)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
    origin: Origin,
) -> Result<Response, ApiError> {
    if state.config.metrics_access == MetricsAccess::AdminToken {
        require_admin(&state, &headers, &origin).await?;
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics_content_type(&headers)),
        )],
        state.metrics.render(),
    )
        .into_response())
}

/// OpenMetrics for a scraper that asks for it (Prometheus does), so it reads the
/// counters' `# TYPE` lines; the classic text type for everyone else (curl, older
/// scrapers), whose parsers read the same body.
fn metrics_content_type(headers: &HeaderMap) -> &'static str {
    let asks_for_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    if asks_for_openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        TEXT_CONTENT_TYPE
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)),
)]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi())
}
