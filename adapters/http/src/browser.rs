//! The browser logins of an Official Account or a website: `authorize` (302 to WeChat,
//! with the state's browser key in an httpOnly, SameSite=Lax cookie), `callback` (302 to
//! the app's allowed redirect URI with a one-time result handle) and `results` (the
//! handle and the PKCE verifier, once, for the login's answer). Tokens never travel in
//! a URL, and the handle that does buys nothing without the front end's verifier.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use miniauth_application::{Actor, AuthorizeRequest};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::extract::{AppPath, JsonBody, Origin, Params};
use crate::state::ApiState;
use crate::v1::{SessionResponse, TokenResponse};

/// The cookie binding a browser login's state to its browser.
pub(crate) const STATE_COOKIE: &str = "miniauth_state";

/// This service's callback URL for `appid`: under `[discovery] public_url` when set,
/// else the request's own `Host` (plain http: fine for development, set `public_url`
/// in production).
fn callback_url(state: &ApiState, headers: &HeaderMap, appid: &str) -> Result<String, ApiError> {
    let base = match &state.config.token_services.public_url {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
                .ok_or_else(|| {
                    ApiError::App(
                        miniauth_domain::InvalidValue::new("host", "the Host header is missing")
                            .into(),
                    )
                })?;
            format!("http://{host}")
        }
    };
    Ok(format!("{base}/v1/apps/{appid}/callback"))
}

fn cookie_path(appid: &str) -> String {
    format!("/v1/apps/{appid}/callback")
}

fn found(location: &str, cookie: String) -> Result<Response, ApiError> {
    let location = HeaderValue::from_str(location).map_err(|_| {
        ApiError::App(miniauth_application::AppError::Internal(
            "a redirect URL that is no header".into(),
        ))
    })?;
    let cookie = HeaderValue::from_str(&cookie).map_err(|_| {
        ApiError::App(miniauth_application::AppError::Internal(
            "a cookie that is no header".into(),
        ))
    })?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

/// The value of cookie `name` in the request, if sent.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// Starts a browser login: 302 to WeChat's consent page (an Official Account's
/// authorize page, a website's QR page).
#[utoipa::path(
    get, path = "/v1/apps/{appid}/authorize", tag = "v1",
    params(
        ("appid" = String, Path, description = "The Official Account's or website's AppID"),
        ("redirect_uri" = String, Query, description = "Where to send the browser back: one of the app's `redirect_uris`, exactly"),
        ("scope" = Option<String>, Query, description = "Official Account: `snsapi_userinfo` (default) or `snsapi_base`; website: `snsapi_login`"),
        ("code_challenge" = String, Query, description = "PKCE (RFC 7636): base64url(SHA-256(code_verifier)) without padding, 43 characters; the front end keeps the verifier for `results`"),
        ("code_challenge_method" = String, Query, description = "Must be `S256` (`plain` is refused)"),
    ),
    responses(
        (status = 302, description = "To WeChat's consent page; sets the httpOnly `miniauth_state` cookie"),
        (status = 400, description = "`redirect_uri` not allowed (`redirect_uri_not_allowed`), the app has no browser login (`channel_unsupported`), no PKCE challenge (`code_challenge_required`), a method other than S256 (`code_challenge_method_unsupported`), or a bad `scope` or `code_challenge` (`invalid_field`); no redirect, no cookie", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No app with this appid (`unknown_app`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn authorize(
    State(state): State<ApiState>,
    headers: HeaderMap,
    AppPath(appid): AppPath,
    Params(params): Params,
) -> Result<Response, ApiError> {
    let redirect_uri = params.get("redirect_uri").map(String::as_str).unwrap_or("");
    let callback = callback_url(&state, &headers, &appid)?;
    let param = |name: &str| params.get(name).map(String::as_str);
    let start = state.auth.authorize(&AuthorizeRequest {
        appid: &appid,
        redirect_uri,
        scope: param("scope"),
        code_challenge: param("code_challenge"),
        code_challenge_method: param("code_challenge_method"),
        callback_url: &callback,
    })?;
    let secure = if callback.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{STATE_COOKIE}={}; Path={}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        start.browser_key.0,
        cookie_path(&appid),
        start.max_age_secs
    );
    found(&start.location, cookie)
}

/// WeChat sends the browser back here: the state is checked, the code logs the person
/// in, and the browser goes to the redirect URI with a one-time `result` handle.
#[utoipa::path(
    get, path = "/v1/apps/{appid}/callback", tag = "v1",
    params(
        ("appid" = String, Path, description = "The Official Account's or website's AppID"),
        ("code" = String, Query, description = "WeChat's one-time code"),
        ("state" = String, Query, description = "The state `authorize` issued, unchanged"),
    ),
    responses(
        (status = 302, description = "To the redirect URI with `result`; clears the cookie"),
        (status = 400, description = "Missing code (`invalid_field`), WeChat refused the code (`code_invalid`, `code_used`, `code_already_used`), or the app has no browser login (`channel_unsupported`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The state is forged, expired or another browser's (`state_invalid`), or used (`state_used`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A snapshot-page user (`snapshot_user`), or WeChat blocked the user (`wechat_user_blocked`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No app with this appid (`unknown_app`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn callback(
    State(state): State<ApiState>,
    origin: Origin,
    headers: HeaderMap,
    AppPath(appid): AppPath,
    Params(params): Params,
) -> Result<Response, ApiError> {
    let ctx = origin.context(Actor::MiniProgram);
    let browser_key = cookie(&headers, STATE_COOKIE).unwrap_or_default();
    let location = state
        .auth
        .callback(
            &ctx,
            &appid,
            params.get("code").map(String::as_str).unwrap_or(""),
            params.get("state").map(String::as_str).unwrap_or(""),
            &browser_key,
        )
        .await?;
    let cleared = format!(
        "{STATE_COOKIE}=; Path={}; Max-Age=0; HttpOnly; SameSite=Lax",
        cookie_path(&appid)
    );
    found(&location, cleared)
}

/// `POST /v1/apps/{appid}/results`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResultRequest {
    /// The `result` handle the callback put on the redirect URI.
    #[serde(default)]
    pub result: String,
    /// The PKCE verifier (RFC 7636: 43 to 128 characters of `A-Z a-z 0-9 - . _ ~`)
    /// whose S256 challenge the front end sent to `authorize`.
    #[serde(default)]
    pub code_verifier: String,
}

/// Exchanges a browser login's result handle and its PKCE verifier, once, for the
/// login's answer (as `POST /v1/apps/{appid}/sessions` answers). A wrong verifier spends
/// the handle.
#[utoipa::path(
    post, path = "/v1/apps/{appid}/results", tag = "v1",
    params(("appid" = String, Path, description = "The Official Account's or website's AppID")),
    request_body = ResultRequest,
    responses(
        (status = 200, description = "The login's answer", body = SessionResponse),
        (status = 400, description = "Malformed body, missing result, missing or malformed `code_verifier` (`invalid_field`; nothing spent), or the app has no browser login (`channel_unsupported`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The result is invalid, expired, used or a ticket (`result_invalid`), or the verifier does not match the challenge (`code_verifier_mismatch`; the handle is spent)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The user is disabled (`user_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No app with this appid (`unknown_app`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn results(
    State(state): State<ApiState>,
    AppPath(appid): AppPath,
    JsonBody(body): JsonBody<ResultRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let outcome = state
        .auth
        .exchange_result(&appid, &body.result, &body.code_verifier)
        .await?;
    Ok(Json(SessionResponse {
        ticket: outcome.ticket.token,
        ticket_expires_in: outcome.ticket.expires_in,
        bound: outcome.bound_user.is_some(),
        has_profile: outcome.has_profile,
        has_phone: outcome.has_phone,
        tokens: outcome.tokens.map(TokenResponse::from),
    }))
}
