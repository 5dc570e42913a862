//! The GitEgg-compatible API, so existing GitEgg mini program front ends work
//! unchanged: GET routes with query parameters, and every answer HTTP 200 with the
//! envelope `{success, code, msg, data}`. The same use cases run underneath.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use miniauth_application::ports::Password;
use miniauth_application::{Actor, Tokens};
use miniauth_domain::PhoneNumber;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, RequestError};
use crate::extract::{
    basic_credentials, AppPath, Bearer, GrantBody, OptionalFields, Origin, Params,
};
use crate::metrics::LoginOutcome;
use crate::state::ApiState;
use crate::v1::{phone_input, profile_input, status_label, TokenGrant};

/// GitEgg's answer to everything.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// `code == 200`.
    pub success: bool,
    /// 200 or one of GitEgg's result codes (see docs/api.md).
    pub code: u16,
    /// A message for people.
    pub msg: String,
    /// The payload, or null.
    pub data: Value,
}

impl Envelope {
    fn ok(data: Value) -> Self {
        Self {
            success: true,
            code: 200,
            msg: "success".to_owned(),
            data,
        }
    }
}

impl From<ApiError> for Envelope {
    fn from(error: ApiError) -> Self {
        let code = error.gitegg_code();
        let rendered = error.render();
        Self {
            success: false,
            code,
            msg: rendered.detail,
            data: Value::Null,
        }
    }
}

impl IntoResponse for Envelope {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

/// Turns a handler's outcome into the envelope; extractor rejections included.
fn answer(result: Result<Value, ApiError>) -> Envelope {
    match result {
        Ok(data) => Envelope::ok(data),
        Err(error) => error.into(),
    }
}

/// GitEgg's token `data`; `exp` and `refreshExp` count from `now`.
fn token_data(tokens: Tokens, now: DateTime<Utc>) -> Value {
    let now = now.timestamp();
    let access_in = tokens.access.expires_in;
    let refresh_in = tokens.refresh.expires_in;
    json!({
        "token": tokens.access.token,
        "refreshToken": tokens.refresh.token,
        "tokenHead": "Bearer ",
        "expiresIn": access_in,
        "exp": now.saturating_add_unsigned(access_in),
        "refreshExpiresIn": refresh_in,
        "refreshExp": now.saturating_add_unsigned(refresh_in),
    })
}

/// `GET /wx/user/{appid}/login?code=…`.
pub(crate) async fn login(
    State(state): State<ApiState>,
    origin: Origin,
    appid: Result<AppPath, ApiError>,
    params: Result<Params, ApiError>,
) -> Envelope {
    answer(
        async {
            let (AppPath(appid), params) = (appid?, params?);
            let ctx = origin.context(Actor::MiniProgram);
            // GitEgg's front end buys tokens with the bind key in a second call.
            let outcome = state
                .auth
                .login_for_ticket(&ctx, &appid, params.get("code"))
                .await;
            state.metrics.record_login_at(
                state.auth.now(),
                match &outcome {
                    Ok(o) if o.bound_user.is_some() => LoginOutcome::Returning,
                    Ok(_) => LoginOutcome::Unbound,
                    Err(_) => LoginOutcome::Failed,
                },
            );
            let outcome = outcome?;
            Ok(json!({
                "openid": outcome.openid.as_str(),
                "unionid": outcome.unionid.as_ref().map(|u| u.as_str()),
                "userInfoAlready": outcome.has_profile,
                "userBindAlready": outcome.bound_user.is_some(),
                "bindKey": outcome.ticket.token,
            }))
        }
        .await,
    )
}

/// `GET /wx/user/{appid}/info?socialKey&signature&rawData&encryptedData&iv`; the
/// current flow's `nickName` + `avatarUrl` are accepted too.
pub(crate) async fn info(
    State(state): State<ApiState>,
    origin: Origin,
    appid: Result<AppPath, ApiError>,
    params: Result<Params, ApiError>,
) -> Envelope {
    answer(
        async {
            let (AppPath(appid), params) = (appid?, params?);
            let owned = |name: &str| params.optional(name).map(str::to_owned);
            let input = profile_input(
                owned("rawData"),
                owned("signature"),
                owned("encryptedData"),
                owned("iv"),
                owned("nickName"),
                owned("avatarUrl"),
            )?;
            let ctx = origin.context(Actor::MiniProgram);
            let outcome = state
                .auth
                .submit_profile(&ctx, &appid, params.get("socialKey"), input)
                .await?;
            Ok(json!({ "nickName": outcome.nickname, "avatarUrl": outcome.avatar_url }))
        }
        .await,
    )
}

/// `GET /wx/user/{appid}/phone?socialKey&encryptedData&iv` (or `&code` for the
/// current phone flow). Binds (or registers, per policy) and answers tokens.
pub(crate) async fn phone(
    State(state): State<ApiState>,
    origin: Origin,
    appid: Result<AppPath, ApiError>,
    params: Result<Params, ApiError>,
) -> Envelope {
    answer(
        async {
            let (AppPath(appid), params) = (appid?, params?);
            let owned = |name: &str| params.optional(name).map(str::to_owned);
            let input = phone_input(owned("code"), owned("encryptedData"), owned("iv"))?;
            let ctx = origin.context(Actor::MiniProgram);
            let outcome = state
                .auth
                .verify_phone(&ctx, &appid, params.get("socialKey"), input)
                .await?;
            let mut data = token_data(outcome.tokens, state.auth.now());
            data["userId"] = json!(outcome.user_id.get());
            data["registered"] = json!(outcome.registered);
            Ok(data)
        }
        .await,
    )
}

/// `GET /wx/user/{appid}/bind?socialKey` (Bearer): binds to the logged-in user.
pub(crate) async fn bind(
    State(state): State<ApiState>,
    origin: Origin,
    bearer: Result<Bearer, ApiError>,
    appid: Result<AppPath, ApiError>,
    params: Result<Params, ApiError>,
) -> Envelope {
    answer(
        async {
            let (bearer, AppPath(appid), params) = (bearer?, appid?, params?);
            let ctx = origin.context(bearer.actor());
            let user = state
                .auth
                .bind_current_user(&ctx, &appid, params.get("socialKey"), &bearer.0)
                .await?;
            Ok(json!({ "userId": user.get() }))
        }
        .await,
    )
}

/// `GET /wx/user/{appid}/unbind` (Bearer): ends this app's binding only.
pub(crate) async fn unbind(
    State(state): State<ApiState>,
    origin: Origin,
    bearer: Result<Bearer, ApiError>,
    appid: Result<AppPath, ApiError>,
) -> Envelope {
    answer(
        async {
            let (bearer, AppPath(appid)) = (bearer?, appid?);
            let ctx = origin.context(bearer.actor());
            state.auth.unbind(&ctx, &appid, &bearer.0).await?;
            Ok(Value::Null)
        }
        .await,
    )
}

/// `POST /oauth/token` (form): `social`, `password` or `refresh_token` grants.
pub(crate) async fn token(
    State(state): State<ApiState>,
    origin: Origin,
    headers: HeaderMap,
    grant: Result<GrantBody, ApiError>,
) -> Envelope {
    answer(
        async {
            let credentials = basic_credentials(&headers);
            let presented = credentials
                .as_ref()
                .map(|(id, secret)| (id.as_str(), secret.as_str()));
            if !state.config.client_allowed(presented) {
                return Err(RequestError::ClientUnauthorized.into());
            }
            let GrantBody(grant) = grant?;
            let tokens = match grant {
                // A miniauth ticket, or (the migration's bridge) a GitEgg bind key.
                TokenGrant::Social { social_key } => {
                    state.auth.grant_social_key(&social_key).await?
                }
                TokenGrant::Password {
                    username, password, ..
                } => {
                    let ctx = origin.context(Actor::Anonymous);
                    state
                        .auth
                        .grant_password(
                            &ctx,
                            &state.config.default_tenant,
                            &username,
                            &Password::new(password),
                        )
                        .await?
                }
                TokenGrant::RefreshToken { refresh_token } => {
                    state.auth.grant_refresh(&refresh_token).await?
                }
                // v1's ticket grant.
                TokenGrant::Ticket { .. } => return Err(RequestError::UnsupportedGrantType.into()),
            };
            Ok(token_data(tokens, state.auth.now()))
        }
        .await,
    )
}

/// `POST /oauth/logout` (Bearer). A `refreshToken` in the body (JSON or form) revokes
/// that token's session; without one (flyio posts no body), the session the access
/// token belongs to ends.
pub(crate) async fn logout(
    State(state): State<ApiState>,
    bearer: Result<Bearer, ApiError>,
    body: Result<OptionalFields, ApiError>,
) -> Envelope {
    answer(
        async {
            let (bearer, OptionalFields(fields)) = (bearer?, body?);
            let refresh_token = fields.get("refreshToken").map(String::as_str);
            state
                .auth
                .logout(&bearer.0, refresh_token.unwrap_or_default())
                .await?;
            Ok(Value::Null)
        }
        .await,
    )
}

/// `GET /system/account/user/info` (Bearer).
pub(crate) async fn user_info(
    State(state): State<ApiState>,
    bearer: Result<Bearer, ApiError>,
) -> Envelope {
    answer(
        async {
            let me = state.auth.me(&bearer?.0).await?;
            Ok(json!({
                "id": me.user.id.get(),
                "tenantId": me.user.tenant.as_str(),
                "account": me.user.account,
                "nickname": me.user.nickname,
                "mobile": me.user.mobile.as_ref().map(PhoneNumber::masked),
                "status": status_label(me.user.status),
                "bindings": me.bindings.iter().map(|b| json!({
                    "appid": b.appid.as_str(),
                    "kind": crate::v1::app_kind(&state, &b.appid),
                    "openid": b.openid.as_str(),
                })).collect::<Vec<_>>(),
            }))
        }
        .await,
    )
}
