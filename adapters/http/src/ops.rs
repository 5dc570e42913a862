//! Operations: health, readiness, metrics, the JWKS and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::config::MetricsAccess;
use crate::error::{ApiError, RequestError};
use crate::extract::Admin;
use crate::state::ApiState;

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the readiness check passes (the store is reachable).
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
pub(crate) async fn metrics(
    State(state): State<ApiState>,
    admin: Result<Admin, ApiError>,
) -> Result<Response, ApiError> {
    if state.config.metrics_access == MetricsAccess::AdminToken {
        admin?;
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response())
}

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi())
}
