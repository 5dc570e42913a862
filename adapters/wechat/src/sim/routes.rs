//! The simulator's HTTP routes. WeChat's endpoints answer HTTP 200 with WeChat's JSON
//! (errors as `{"errcode", "errmsg"}`); the device and control APIs answer JSON with
//! proper HTTP statuses and `{"error": "..."}` on failure.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use miniauth_domain::Channel;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::api::{
    AppRegistration, ClockAdvance, CreatedUser, Endpoint, Faults, InApp, NewSimUser, OAuthConsent,
};
use super::state::{self, AppState, WxError};
use super::Simulator;
use crate::errcode;

type Query_ = Query<HashMap<String, String>>;

pub(crate) fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/sns/jscode2session", get(jscode2session))
        .route("/cgi-bin/token", get(token))
        .route("/cgi-bin/stable_token", post(stable_token))
        .route("/wxa/business/getuserphonenumber", post(getuserphonenumber))
        .route("/wxa/checksession", get(checksession))
        .route("/wxa/resetusersessionkey", get(resetusersessionkey))
        .route("/sns/oauth2/access_token", get(oauth_access_token))
        .route("/sns/userinfo", get(sns_userinfo))
        .route("/connect/oauth2/authorize", get(authorize_page))
        .route("/connect/qrconnect", get(qrconnect_page))
        .route("/device/users/{user_id}/oauth-code", post(oauth_code))
        .route("/device/users", post(create_user))
        .route("/device/users/{user_id}/login", post(login))
        .route("/device/users/{user_id}/user-info", post(user_info))
        .route("/device/users/{user_id}/phone", post(phone))
        .route("/sim/faults", get(get_faults).put(put_faults))
        .route("/sim/calls", get(get_calls).delete(reset_calls))
        .route("/sim/clock/advance", post(advance_clock))
        .route("/sim/apps", post(register_app))
        .route("/sim/tokens/revoke", post(revoke_tokens))
        .with_state(sim)
}

// ---- WeChat's endpoints ----

/// Counts the call, applies the endpoint's faults, then serves it, on a task of its
/// own: like WeChat, the simulator finishes a request (and spends its code) even when
/// the caller gave up waiting.
async fn wechat(
    sim: &Simulator,
    endpoint: Endpoint,
    serve: impl FnOnce(&mut state::State) -> Result<Value, WxError> + Send + 'static,
) -> Response {
    let sim = sim.clone();
    tokio::spawn(async move { faulty(&sim, endpoint, serve).await })
        .await
        .unwrap_or_else(|_| {
            (StatusCode::INTERNAL_SERVER_ERROR, "simulator failure").into_response()
        })
}

async fn faulty(
    sim: &Simulator,
    endpoint: Endpoint,
    serve: impl FnOnce(&mut state::State) -> Result<Value, WxError>,
) -> Response {
    let fault = {
        let mut state = sim.lock();
        *state.calls.entry(endpoint).or_default() += 1;
        state.faults.of(endpoint)
    };
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    let draw: f64 = rand::random();
    if draw < fault.server_error {
        return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response();
    }
    if draw < fault.server_error + fault.busy {
        return wechat_error((errcode::BUSY, "system error"));
    }
    if draw < fault.server_error + fault.busy + fault.rate_limited {
        return wechat_error((
            errcode::RATE_LIMITED,
            "api minute-quota reach limit mustslower retry next minute",
        ));
    }
    let served = serve(&mut sim.lock());
    match served {
        Ok(body) => Json(body).into_response(),
        Err(error) => wechat_error(error),
    }
}

fn wechat_error((code, message): WxError) -> Response {
    let rid: u32 = rand::random();
    Json(json!({ "errcode": code, "errmsg": format!("{message}, rid: {rid:08x}") })).into_response()
}

fn json_body(body: &Bytes) -> Result<Value, WxError> {
    serde_json::from_slice(body).map_err(|_| (47001, "data format error"))
}

async fn jscode2session(State(sim): State<Simulator>, Query(q): Query_) -> Response {
    wechat(&sim, Endpoint::Jscode2Session, move |s| {
        s.jscode2session(&q)
    })
    .await
}

async fn token(State(sim): State<Simulator>, Query(q): Query_) -> Response {
    wechat(&sim, Endpoint::Token, move |s| s.token(&q)).await
}

async fn stable_token(State(sim): State<Simulator>, body: Bytes) -> Response {
    wechat(&sim, Endpoint::StableToken, move |s| {
        s.stable_token(&json_body(&body)?)
    })
    .await
}

async fn getuserphonenumber(
    State(sim): State<Simulator>,
    Query(q): Query_,
    body: Bytes,
) -> Response {
    wechat(&sim, Endpoint::GetUserPhoneNumber, move |s| {
        s.getuserphonenumber(&q, &json_body(&body)?)
    })
    .await
}

async fn checksession(State(sim): State<Simulator>, Query(q): Query_) -> Response {
    wechat(&sim, Endpoint::CheckSession, move |s| s.checksession(&q)).await
}

async fn resetusersessionkey(State(sim): State<Simulator>, Query(q): Query_) -> Response {
    wechat(&sim, Endpoint::ResetUserSessionKey, move |s| {
        s.resetusersessionkey(&q)
    })
    .await
}

async fn oauth_access_token(State(sim): State<Simulator>, Query(q): Query_) -> Response {
    wechat(&sim, Endpoint::OAuthAccessToken, move |s| {
        s.oauth_access_token(&q)
    })
    .await
}

async fn sns_userinfo(State(sim): State<Simulator>, Query(q): Query_) -> Response {
    wechat(&sim, Endpoint::UserInfo, move |s| s.sns_userinfo(&q)).await
}

/// WeChat's pages a browser is sent to: the simulated person (`sim_user`) agrees at
/// once and the browser goes back to the app's `redirect_uri` with a code and the state.
async fn consent_page(sim: &Simulator, kind: Channel, q: &HashMap<String, String>) -> Response {
    match sim.lock().consent(kind, q) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(refusal) => Refusal::from(refusal).into_response(),
    }
}

async fn authorize_page(State(sim): State<Simulator>, Query(q): Query_) -> Response {
    consent_page(&sim, Channel::OfficialAccount, &q).await
}

async fn qrconnect_page(State(sim): State<Simulator>, Query(q): Query_) -> Response {
    consent_page(&sim, Channel::Website, &q).await
}

// ---- device and control APIs ----

/// A device or control API refusal.
struct Refusal(u16, String);

impl From<(u16, String)> for Refusal {
    fn from((status, message): (u16, String)) -> Self {
        Self(status, message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal(400, format!("bad request body: {e}")))
}

async fn create_user(
    State(sim): State<Simulator>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedUser>), Refusal> {
    let new: NewSimUser = parse(&body)?;
    let user_id = sim.lock().create_user(new)?;
    Ok((StatusCode::CREATED, Json(CreatedUser { user_id })))
}

async fn login(
    State(sim): State<Simulator>,
    Path(user_id): Path<u64>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let InApp { appid } = parse(&body)?;
    Ok(Json(sim.lock().login(user_id, &appid)?).into_response())
}

async fn user_info(
    State(sim): State<Simulator>,
    Path(user_id): Path<u64>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let InApp { appid } = parse(&body)?;
    Ok(Json(sim.lock().user_info(user_id, &appid)?).into_response())
}

async fn phone(
    State(sim): State<Simulator>,
    Path(user_id): Path<u64>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let InApp { appid } = parse(&body)?;
    Ok(Json(sim.lock().phone(user_id, &appid)?).into_response())
}

async fn oauth_code(
    State(sim): State<Simulator>,
    Path(user_id): Path<u64>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let consent: OAuthConsent = parse(&body)?;
    Ok(Json(sim.lock().oauth_code(user_id, &consent)?).into_response())
}

async fn get_faults(State(sim): State<Simulator>) -> Json<Faults> {
    Json(sim.lock().faults.clone())
}

async fn put_faults(State(sim): State<Simulator>, body: Bytes) -> Result<Json<Faults>, Refusal> {
    let faults: Faults = parse(&body)?;
    faults.validate().map_err(|e| Refusal(400, e))?;
    sim.lock().faults = faults.clone();
    Ok(Json(faults))
}

async fn get_calls(State(sim): State<Simulator>) -> Response {
    Json(sim.calls()).into_response()
}

async fn reset_calls(State(sim): State<Simulator>) -> StatusCode {
    sim.reset_calls();
    StatusCode::NO_CONTENT
}

async fn advance_clock(State(sim): State<Simulator>, body: Bytes) -> Result<StatusCode, Refusal> {
    let ClockAdvance { seconds } = parse(&body)?;
    sim.lock().advance_clock(seconds);
    Ok(StatusCode::NO_CONTENT)
}

async fn register_app(State(sim): State<Simulator>, body: Bytes) -> Result<StatusCode, Refusal> {
    let app: AppRegistration = parse(&body)?;
    miniauth_domain::AppId::parse(&app.appid).map_err(|e| Refusal(400, e.to_string()))?;
    if app.secret.is_empty() {
        return Err(Refusal(400, "secret must not be empty".to_owned()));
    }
    sim.lock()
        .apps
        .insert(app.appid, AppState::new(app.secret, app.unionid, app.kind));
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_tokens(State(sim): State<Simulator>, body: Bytes) -> Result<StatusCode, Refusal> {
    let InApp { appid } = parse(&body)?;
    sim.lock().revoke_tokens(&appid)?;
    Ok(StatusCode::NO_CONTENT)
}
