//! miniauth's HTTP API, over the use cases of [`MiniAuth`](miniauth_application::MiniAuth):
//!
//! * the v1 API: JSON in snake_case, errors as `application/problem+json` with a stable
//!   `code` (see docs/api.md), described at `/openapi.json` ([`openapi()`]);
//! * the GitEgg-compatible API: the routes existing GitEgg mini program front ends call,
//!   always HTTP 200 with GitEgg's envelope;
//! * operations: `/healthz`, `/readyz`, `/metrics`, `/.well-known/jwks.json`;
//! * token services: `/.well-known/openid-configuration`, revocation (RFC 7009) and
//!   introspection (RFC 7662);
//! * the operators' console at `/console` (HTML, with an admin token only);
//! * hardening: a body limit, a request timeout, a header-read timeout and a connection
//!   cap ([`serve_with`]), an `x-request-id` on every response and in the span of every
//!   log line, `Cache-Control: no-store` on every answer (tokens and tickets must not
//!   be cached) and `X-Content-Type-Options: nosniff`, the client address taken from
//!   trusted proxies only ([`TrustedProxies`]), structured logs without secrets or
//!   personal data.
//!
//! ```text
//! let state = ApiState::new(auth, jwks, Arc::new(readiness), HttpConfig::new(tenant));
//! serve_with(listener, router(state), ServerLimits::default(), shutdown_signal()).await?;
//! ```

pub mod admin;
mod browser;
mod client_ip;
mod config;
mod console;
mod error;
mod extract;
mod gitegg;
mod metrics;
mod openapi;
mod ops;
mod server;
mod state;
mod token_services;
pub mod v1;
mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tracing::Instrument;

pub use client_ip::{BadProxyEntry, TrustedProxies};
pub use config::{
    AdminToken, ConsoleSettings, HttpConfig, MetricsAccess, MetricsListener, Secret,
    DEFAULT_BODY_LIMIT_BYTES, DEFAULT_REQUEST_TIMEOUT,
};
pub use console::{
    DEFAULT_IDLE_TIMEOUT as DEFAULT_CONSOLE_IDLE_TIMEOUT, MAX_SESSION as MAX_CONSOLE_SESSION,
};
pub use error::{error_catalog, error_table_markdown, gitegg_code, status_of, ErrorRow, Problem};
pub use gitegg::Envelope;
pub use metrics::{LoginOutcome, Metrics, MinuteLogins, LOGIN_MINUTES};
pub use openapi::openapi;
pub use server::{serve_with, ServerLimits, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
pub use state::{AlwaysReady, ApiState, Readiness};
pub use token_services::TokenServices;

use error::{ApiError, RequestError};
use extract::Origin;

/// The header carrying the request id, in both directions.
pub const REQUEST_ID: &str = "x-request-id";

/// The GitEgg routes of one prefix (`""` or `/extension`).
fn gitegg_wx_routes() -> Router<ApiState> {
    Router::new()
        .route("/wx/user/{appid}/login", get(gitegg::login))
        .route("/wx/user/{appid}/info", get(gitegg::info))
        .route("/wx/user/{appid}/phone", get(gitegg::phone))
        .route("/wx/user/{appid}/bind", get(gitegg::bind))
        .route("/wx/user/{appid}/unbind", get(gitegg::unbind))
}

/// Every route of both APIs and operations, with the hardening layers (body limit,
/// timeout, request id, span, metrics, one log line per request).
pub fn router(state: ApiState) -> Router {
    let observed = Observed {
        config: Arc::clone(&state.config),
        metrics: Arc::clone(&state.metrics),
    };
    let body_limit = state.config.body_limit_bytes;
    let api = Router::new()
        .route("/v1/apps/{appid}/sessions", post(v1::create_session))
        .route("/v1/apps/{appid}/profile", post(v1::submit_profile))
        .route("/v1/apps/{appid}/phone", post(v1::verify_phone))
        .route("/v1/apps/{appid}/authorize", get(browser::authorize))
        .route("/v1/apps/{appid}/callback", get(browser::callback))
        .route("/v1/apps/{appid}/results", post(browser::results))
        .route(
            "/v1/apps/{appid}/binding",
            post(v1::bind).delete(v1::unbind),
        )
        .route("/v1/token", post(v1::token))
        .route(token_services::REVOKE_PATH, post(token_services::revoke))
        .route(
            token_services::INTROSPECT_PATH,
            post(token_services::introspect),
        )
        .route("/v1/logout", post(v1::logout))
        .route("/v1/me", get(v1::me))
        .route("/v1/admin/users", post(v1::add_user))
        .route("/v1/admin/users/{user_id}/disable", post(v1::disable_user))
        .route("/v1/admin/users/{user_id}/enable", post(v1::enable_user))
        .route(
            "/v1/admin/apps/{appid}/accounts/{openid}/history",
            get(admin::history),
        )
        .route(
            "/v1/admin/apps/{appid}/accounts/{openid}/erase",
            post(admin::erase),
        )
        .route(
            "/v1/admin/users/{user_id}/bindings",
            get(admin::user_bindings),
        )
        .route("/v1/admin/bindings", get(admin::app_bindings))
        .route("/v1/admin/events", get(admin::events))
        .route("/v1/admin/webhooks/parked", get(webhooks::parked))
        .merge(gitegg_wx_routes())
        .nest("/extension", gitegg_wx_routes())
        .route("/oauth/token", post(gitegg::token))
        .route("/oauth/logout", post(gitegg::logout))
        .route("/system/account/user/info", get(gitegg::user_info))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route(
            "/.well-known/openid-configuration",
            get(token_services::discovery),
        )
        .route("/openapi.json", get(ops::openapi))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    let api = if state.config.metrics_listener == MetricsListener::Api {
        api.route("/metrics", get(ops::metrics))
    } else {
        api
    };
    // The console exists only with an admin token (docs/console.md).
    let api = match console::routes(&state) {
        Some(console) => api.merge(console),
        None => api,
    };
    api.fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(observed, observe))
        .layer(middleware::map_response(harden_headers))
        .with_state(state)
}

/// `/metrics` alone, for a listener of its own (`[server] metrics_listen`): the same
/// registry as the API's router over `state`, the same access rule.
pub fn metrics_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .fallback(fallback)
        .layer(middleware::map_response(harden_headers))
        .with_state(state)
}

/// Headers every answer carries: nothing may be cached unless the handler said so
/// (tokens, tickets and personal data are in the answers; RFC 6749 §5.1), and no
/// browser may sniff a JSON answer into something executable.
async fn harden_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// [`serve_with`] the default [`ServerLimits`] (10 s to send a request head, 1024
/// connections at once).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, ServerLimits::default(), shutdown).await
}

/// Whether `path` belongs to the GitEgg-compatible API (answered with the envelope).
fn is_gitegg(path: &str) -> bool {
    ["/wx/", "/extension/", "/oauth/", "/system/"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

/// An error in the flavour of the API the path belongs to.
fn error_response(path: &str, error: ApiError) -> Response {
    if is_gitegg(path) {
        Envelope::from(error).into_response()
    } else {
        error.into_response()
    }
}

async fn fallback(request: Request) -> Response {
    error_response(request.uri().path(), RequestError::RouteNotFound.into())
}

async fn method_not_allowed(request: Request) -> Response {
    error_response(request.uri().path(), RequestError::MethodNotAllowed.into())
}

#[derive(Clone)]
struct Observed {
    config: Arc<HttpConfig>,
    metrics: Arc<Metrics>,
}

/// A request id the client sent, if it is short printable ASCII; else a new UUID.
fn request_id_of(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Request id, span, timeout, metrics and the one log line per request. The log line
/// names the route template, never the query string: it carries codes and tickets.
async fn observe(State(observed): State<Observed>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id_of(&request);
    let client_ip =
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| {
                observed
                    .config
                    .trusted_proxies
                    .client_ip(peer.ip(), request.headers())
            });
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    request.extensions_mut().insert(Origin {
        request_id: request_id.clone(),
        client_ip,
    });
    let span = tracing::info_span!("request", %request_id, %method, %route);
    let limit = observed.config.request_timeout;
    let outcome = tokio::time::timeout(limit, next.run(request))
        .instrument(span.clone())
        .await;
    let mut response = outcome.unwrap_or_else(|_| {
        let error = RequestError::Timeout(limit.as_secs().max(1));
        error_response(&path, error.into())
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), value);
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    observed
        .metrics
        .record_request(&route, method.as_str(), status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "answered"
        );
    });
    response
}
