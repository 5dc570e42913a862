//! The v1 API: JSON in snake_case, errors as `application/problem+json`. The request
//! bodies' schemas are written in `openapi.rs`, beside the rules they restate.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use miniauth_application::ports::{Password, UserRecord, UserStatus};
use miniauth_application::{Actor, PhoneInput, ProfileInput, Tokens};
use miniauth_domain::{InvalidValue, PhoneNumber, TenantId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, Problem, RequestError};
use crate::extract::{Admin, AppPath, Bearer, GrantBody, JsonBody, Origin};
use crate::metrics::LoginOutcome;
use crate::state::ApiState;

/// `POST /v1/apps/{appid}/sessions`.
#[derive(Debug, Deserialize)]
pub struct SessionRequest {
    /// The `wx.login` code.
    #[serde(default)]
    pub code: String,
}

/// An access token and a refresh token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The opaque refresh token (rotated on every use).
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: u64,
}

impl From<Tokens> for TokenResponse {
    fn from(tokens: Tokens) -> Self {
        Self {
            access_token: tokens.access.token,
            token_type: "Bearer".to_owned(),
            expires_in: tokens.access.expires_in,
            refresh_token: tokens.refresh.token,
            refresh_expires_in: tokens.refresh.expires_in,
        }
    }
}

/// What a login answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionResponse {
    /// The ticket (bind key) for the next steps.
    pub ticket: String,
    /// Seconds the ticket stays valid.
    pub ticket_expires_in: u64,
    /// Whether this WeChat identity is bound to a user.
    pub bound: bool,
    /// Whether a profile is on record.
    pub has_profile: bool,
    /// Whether a verified phone is on record.
    pub has_phone: bool,
    /// Tokens when already bound (one round trip for returning users), else null.
    pub tokens: Option<TokenResponse>,
}

/// `POST /v1/apps/{appid}/profile`: either the legacy encrypted payload
/// (`raw_data`, `signature`, `encrypted_data`, `iv`) or the current plain fields
/// (`nickname`, `avatar_url`).
#[derive(Debug, Deserialize)]
pub struct ProfileRequest {
    /// The ticket from the login.
    #[serde(default)]
    pub ticket: String,
    /// Legacy: the signed non-sensitive JSON.
    pub raw_data: Option<String>,
    /// Legacy: hex(sha1(raw_data + session_key)).
    pub signature: Option<String>,
    /// Legacy: the encrypted payload, base64.
    pub encrypted_data: Option<String>,
    /// Legacy: the iv, base64.
    pub iv: Option<String>,
    /// Current: the nickname the user typed.
    pub nickname: Option<String>,
    /// Current: the avatar the user chose.
    pub avatar_url: Option<String>,
}

/// The profile as recorded.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProfileResponse {
    /// The nickname.
    pub nickname: String,
    /// The avatar URL.
    pub avatar_url: String,
}

/// `POST /v1/apps/{appid}/phone`: `code` (current) or `encrypted_data` + `iv` (legacy).
#[derive(Debug, Deserialize)]
pub struct PhoneRequest {
    /// The ticket from the login.
    #[serde(default)]
    pub ticket: String,
    /// The phone button's one-time code.
    pub code: Option<String>,
    /// Legacy: the encrypted payload, base64.
    pub encrypted_data: Option<String>,
    /// Legacy: the iv, base64.
    pub iv: Option<String>,
}

/// What verifying a phone led to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PhoneResponse {
    /// The user the identity is bound to now.
    pub user_id: i64,
    /// Whether this request registered that user.
    pub registered: bool,
    /// Tokens for that user.
    pub tokens: TokenResponse,
}

/// `POST /v1/apps/{appid}/binding`.
#[derive(Debug, Deserialize)]
pub struct BindingRequest {
    /// The ticket of the WeChat identity to bind to the logged-in user.
    #[serde(default)]
    pub ticket: String,
}

/// The user a binding names.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BindingResponse {
    /// The user.
    pub user_id: i64,
}

/// The body of both token endpoints, `POST /v1/token` and GitEgg's `POST /oauth/token`,
/// as JSON or as a form: the grant `grant_type` names. A missing or unknown
/// `grant_type` is answered `unsupported_grant_type`; a missing field is empty, so the
/// use case says which one is missing.
// No `Debug`: it carries passwords and tokens.
#[derive(Deserialize)]
#[serde(tag = "grant_type", rename_all = "snake_case")]
pub enum TokenGrant {
    /// v1: the ticket of a bound identity buys tokens.
    Ticket {
        /// The ticket.
        #[serde(default)]
        ticket: String,
    },
    /// GitEgg's ticket grant (v1 answers `unsupported_grant_type`).
    Social {
        /// The `bindKey` the GitEgg login answered.
        #[serde(default)]
        social_key: String,
    },
    /// Account and password.
    Password {
        /// v1: the account name.
        #[serde(default)]
        account: String,
        /// GitEgg: the account name.
        #[serde(default)]
        username: String,
        /// The password.
        #[serde(default)]
        password: String,
        /// v1: the tenant (default: the configured one).
        tenant: Option<String>,
    },
    /// A refresh token buys new tokens, and is rotated.
    RefreshToken {
        /// The refresh token.
        #[serde(default)]
        refresh_token: String,
    },
}

/// `POST /v1/logout`.
#[derive(Debug, Deserialize)]
pub struct LogoutRequest {
    /// The refresh token to revoke (with its family).
    #[serde(default)]
    pub refresh_token: String,
}

/// One binding of the user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BindingView {
    /// The app.
    pub appid: String,
    /// The app's kind: `mini_program`, `official_account`, `website` or `mobile_app`.
    pub kind: String,
    /// The WeChat identity in it.
    pub openid: String,
}

/// The logged-in user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MeResponse {
    /// The user id.
    pub user_id: i64,
    /// The tenant.
    pub tenant: String,
    /// The account name, for password users.
    pub account: Option<String>,
    /// The display name.
    pub nickname: Option<String>,
    /// The phone with its middle masked (`138****8000`).
    pub phone: Option<String>,
    /// `active` or `disabled`.
    pub status: String,
    /// Bindings in every app.
    pub bindings: Vec<BindingView>,
}

/// `POST /v1/admin/users`.
#[derive(Debug, Deserialize)]
pub struct AdminUserRequest {
    /// The login name, unique per tenant.
    #[serde(default)]
    pub account: String,
    /// The password (8 to 256 bytes); only its hash is stored.
    #[serde(default)]
    pub password: String,
    /// The mobile number (digits), unique per tenant.
    pub mobile: Option<String>,
    /// The country calling code of `mobile` (default `86`).
    pub country_code: Option<String>,
    /// The display name.
    pub nickname: Option<String>,
    /// The tenant (default: the configured one).
    pub tenant: Option<String>,
}

/// A user as the admin API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserResponse {
    /// The user id.
    pub user_id: i64,
    /// The tenant.
    pub tenant: String,
    /// The account name.
    pub account: Option<String>,
    /// The display name.
    pub nickname: Option<String>,
    /// The phone, masked.
    pub phone: Option<String>,
    /// `active` or `disabled`.
    pub status: String,
}

impl From<&UserRecord> for UserResponse {
    fn from(user: &UserRecord) -> Self {
        Self {
            user_id: user.id.get(),
            tenant: user.tenant.to_string(),
            account: user.account.clone(),
            nickname: user.nickname.clone(),
            phone: user.mobile.as_ref().map(PhoneNumber::masked),
            status: status_label(user.status).to_owned(),
        }
    }
}

pub(crate) fn status_label(status: UserStatus) -> &'static str {
    match status {
        UserStatus::Active => "active",
        UserStatus::Disabled => "disabled",
    }
}

/// A profile input from the fields sent: the legacy payload when `encrypted_data`
/// is there, the plain fields otherwise.
pub(crate) fn profile_input(
    raw_data: Option<String>,
    signature: Option<String>,
    encrypted_data: Option<String>,
    iv: Option<String>,
    nickname: Option<String>,
    avatar_url: Option<String>,
) -> Result<ProfileInput, ApiError> {
    match (encrypted_data, nickname, avatar_url) {
        (Some(encrypted_data), _, _) => Ok(ProfileInput::Encrypted {
            raw_data: raw_data.unwrap_or_default(),
            signature: signature.unwrap_or_default(),
            encrypted_data,
            iv: iv.unwrap_or_default(),
        }),
        (None, None, None) => Err(ApiError::App(
            InvalidValue::new(
                "encrypted_data",
                "send raw_data, signature, encrypted_data and iv, or nickname and avatar_url",
            )
            .into(),
        )),
        (None, nickname, avatar_url) => Ok(ProfileInput::ClientSupplied {
            nickname: nickname.unwrap_or_default(),
            avatar_url: avatar_url.unwrap_or_default(),
        }),
    }
}

/// A phone input: the code when sent, else the legacy payload.
pub(crate) fn phone_input(
    code: Option<String>,
    encrypted_data: Option<String>,
    iv: Option<String>,
) -> Result<PhoneInput, ApiError> {
    match (code, encrypted_data) {
        (Some(code), _) => Ok(PhoneInput::Code(code)),
        (None, Some(encrypted_data)) => Ok(PhoneInput::Encrypted {
            encrypted_data,
            iv: iv.unwrap_or_default(),
        }),
        (None, None) => Err(ApiError::App(
            InvalidValue::new("code", "send the phone code, or encrypted_data and iv").into(),
        )),
    }
}

/// Exchanges a `wx.login` code for a ticket, and tokens when the identity is bound.
#[utoipa::path(
    post, path = "/v1/apps/{appid}/sessions", tag = "v1",
    params(("appid" = String, Path, description = "The mini program's AppID")),
    request_body = SessionRequest,
    responses(
        (status = 200, description = "Logged in", body = SessionResponse),
        (status = 400, description = "Malformed body or code (`invalid_field`), or WeChat refused the code (`code_invalid`, `code_used`, `code_already_used`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "WeChat blocked this user (`wechat_user_blocked`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No app with this appid (`unknown_app`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A concurrent change to the account (`concurrent_update`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "WeChat's rate limit (`wechat_rate_limited`), or too many logins from this address (`too_many_logins`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create_session(
    State(state): State<ApiState>,
    origin: Origin,
    AppPath(appid): AppPath,
    JsonBody(body): JsonBody<SessionRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let ctx = origin.context(Actor::MiniProgram);
    let outcome = state.auth.login(&ctx, &appid, &body.code).await;
    state.metrics.record_login_at(
        state.auth.now(),
        match &outcome {
            Ok(o) if o.tokens.is_some() => LoginOutcome::Returning,
            Ok(_) => LoginOutcome::Unbound,
            Err(_) => LoginOutcome::Failed,
        },
    );
    let outcome = outcome?;
    Ok(Json(SessionResponse {
        ticket: outcome.ticket.token,
        ticket_expires_in: outcome.ticket.expires_in,
        bound: outcome.bound_user.is_some(),
        has_profile: outcome.has_profile,
        has_phone: outcome.has_phone,
        tokens: outcome.tokens.map(TokenResponse::from),
    }))
}

/// Records the profile: the legacy encrypted payload or the plain fields.
#[utoipa::path(
    post, path = "/v1/apps/{appid}/profile", tag = "v1",
    params(("appid" = String, Path, description = "The mini program's AppID")),
    request_body = ProfileRequest,
    responses(
        (status = 200, description = "Recorded", body = ProfileResponse),
        (status = 400, description = "Malformed body or field (`invalid_field`, `ticket_missing`), or a payload rejected (`payload_not_base64`, `payload_wrong_length`, `payload_rejected`, `session_key_spent`, `session_key_not_held`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Bad, expired or superseded ticket (`ticket_*`, `no_session`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "This app accepts no encrypted payloads (`legacy_payloads_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No app with this appid (`unknown_app`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A concurrent change to the account (`concurrent_update`, `session_for_another_identity`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn submit_profile(
    State(state): State<ApiState>,
    origin: Origin,
    AppPath(appid): AppPath,
    JsonBody(body): JsonBody<ProfileRequest>,
) -> Result<Json<ProfileResponse>, ApiError> {
    let input = profile_input(
        body.raw_data,
        body.signature,
        body.encrypted_data,
        body.iv,
        body.nickname,
        body.avatar_url,
    )?;
    let ctx = origin.context(Actor::MiniProgram);
    let outcome = state
        .auth
        .submit_profile(&ctx, &appid, &body.ticket, input)
        .await?;
    Ok(Json(ProfileResponse {
        nickname: outcome.nickname,
        avatar_url: outcome.avatar_url,
    }))
}

/// Verifies the phone, then binds to the user with it or registers one (per policy).
#[utoipa::path(
    post, path = "/v1/apps/{appid}/phone", tag = "v1",
    params(("appid" = String, Path, description = "The mini program's AppID")),
    request_body = PhoneRequest,
    responses(
        (status = 200, description = "Bound; tokens issued", body = PhoneResponse),
        (status = 400, description = "Malformed body, code or field (`invalid_field`, `ticket_missing`), WeChat refused the code (`code_invalid`, `code_used`), or a payload rejected (`payload_*`, `session_key_spent`, `session_key_not_held`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Bad, expired or superseded ticket (`ticket_*`, `no_session`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Refused by the app's registration policy (`registration_closed`, `phone_not_registered`), `legacy_payloads_disabled`, `user_disabled`, `tenant_mismatch` or `wechat_user_blocked`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No app with this appid (`unknown_app`), or the user is gone (`user_not_found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already bound elsewhere (`already_bound_to_other_user`, `user_already_bound_in_app`), `phone_taken` or `concurrent_update`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn verify_phone(
    State(state): State<ApiState>,
    origin: Origin,
    AppPath(appid): AppPath,
    JsonBody(body): JsonBody<PhoneRequest>,
) -> Result<Json<PhoneResponse>, ApiError> {
    let input = phone_input(body.code, body.encrypted_data, body.iv)?;
    let ctx = origin.context(Actor::MiniProgram);
    let outcome = state
        .auth
        .verify_phone(&ctx, &appid, &body.ticket, input)
        .await?;
    Ok(Json(PhoneResponse {
        user_id: outcome.user_id.get(),
        registered: outcome.registered,
        tokens: outcome.tokens.into(),
    }))
}

/// Binds the ticket's WeChat identity to the logged-in user.
#[utoipa::path(
    post, path = "/v1/apps/{appid}/binding", tag = "v1",
    params(("appid" = String, Path, description = "The mini program's AppID")),
    request_body = BindingRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Bound", body = BindingResponse),
        (status = 400, description = "Malformed body (`invalid_json`, `invalid_body`, `invalid_utf8`, `unreadable_body`) or blank ticket (`ticket_missing`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Bad access token (`access_token_*`) or ticket (`ticket_*`, `no_session`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The user is disabled (`user_disabled`) or of another tenant (`tenant_mismatch`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No app with this appid (`unknown_app`), or the user is gone (`user_not_found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already bound elsewhere (`already_bound_to_other_user`, `user_already_bound_in_app`) or `concurrent_update`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn bind(
    State(state): State<ApiState>,
    origin: Origin,
    bearer: Bearer,
    AppPath(appid): AppPath,
    JsonBody(body): JsonBody<BindingRequest>,
) -> Result<Json<BindingResponse>, ApiError> {
    let ctx = origin.context(bearer.actor());
    let user = state
        .auth
        .bind_current_user(&ctx, &appid, &body.ticket, &bearer.0)
        .await?;
    Ok(Json(BindingResponse {
        user_id: user.get(),
    }))
}

/// Ends the logged-in user's binding in this app (only this app's).
#[utoipa::path(
    delete, path = "/v1/apps/{appid}/binding", tag = "v1",
    params(("appid" = String, Path, description = "The mini program's AppID")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Unbound"),
        (status = 401, description = "Bad access token (`access_token_*`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The user is of another tenant (`tenant_mismatch`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Nothing bound in this app (`not_bound`), or no app with this appid (`unknown_app`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A concurrent change to the account (`concurrent_update`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn unbind(
    State(state): State<ApiState>,
    origin: Origin,
    bearer: Bearer,
    AppPath(appid): AppPath,
) -> Result<StatusCode, ApiError> {
    let ctx = origin.context(bearer.actor());
    state.auth.unbind(&ctx, &appid, &bearer.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Grants tokens: `ticket`, `password` or `refresh_token` (JSON or form).
#[utoipa::path(
    post, path = "/v1/token", tag = "v1",
    request_body(content(
        (TokenGrant = "application/json"),
        (TokenGrant = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Tokens", body = TokenResponse),
        (status = 400, description = "Missing or unknown grant (`unsupported_grant_type`), malformed body or field (`invalid_json`, `invalid_body`, `invalid_utf8`, `unreadable_body`, `invalid_field`, `ticket_missing`), or a tenant no app and no user belongs to (`unknown_tenant`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Bad credentials (`invalid_credentials`), ticket (`ticket_*`, `ticket_already_used`) or refresh token (`refresh_token_*`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The user is disabled (`user_disabled`) or of another tenant (`tenant_mismatch`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The ticket's identity is not bound (`not_bound`), its app is gone (`unknown_app`), or the user is (`user_not_found`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed password attempts (`too_many_attempts`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Busy checking other passwords (`server_busy`), the store unavailable (`service_unavailable`) or `request_timeout`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn token(
    State(state): State<ApiState>,
    origin: Origin,
    GrantBody(grant): GrantBody,
) -> Result<Json<TokenResponse>, ApiError> {
    let tokens = match grant {
        TokenGrant::Ticket { ticket } => state.auth.grant_ticket(&ticket).await?,
        TokenGrant::Password {
            account,
            password,
            tenant,
            ..
        } => {
            let tenant = match tenant {
                Some(raw) => TenantId::parse(&raw).map_err(|e| ApiError::App(e.into()))?,
                None => state.config.default_tenant.clone(),
            };
            let ctx = origin.context(Actor::Anonymous);
            state
                .auth
                .grant_password(&ctx, &tenant, &account, &Password::new(password))
                .await?
        }
        TokenGrant::RefreshToken { refresh_token } => {
            state.auth.grant_refresh(&refresh_token).await?
        }
        TokenGrant::Social { .. } => return Err(RequestError::UnsupportedGrantType.into()),
    };
    Ok(Json(tokens.into()))
}

/// Revokes the refresh token (and its family); without one, the access token's session.
#[utoipa::path(
    post, path = "/v1/logout", tag = "v1",
    request_body = LogoutRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 400, description = "Malformed body (`invalid_json`, `invalid_body`, `invalid_utf8`, `unreadable_body`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Bad access token (`access_token_*`) or refresh token (`refresh_token_*`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn logout(
    State(state): State<ApiState>,
    bearer: Bearer,
    JsonBody(body): JsonBody<LogoutRequest>,
) -> Result<StatusCode, ApiError> {
    state.auth.logout(&bearer.0, &body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The logged-in user, phone masked, with every binding.
#[utoipa::path(
    get, path = "/v1/me", tag = "v1",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = MeResponse),
        (status = 401, description = "Bad access token (`access_token_*`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The user is disabled (`user_disabled`) or of another tenant (`tenant_mismatch`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The user is gone (`user_not_found`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn me(
    State(state): State<ApiState>,
    bearer: Bearer,
) -> Result<Json<MeResponse>, ApiError> {
    let me = state.auth.me(&bearer.0).await?;
    Ok(Json(MeResponse {
        user_id: me.user.id.get(),
        tenant: me.user.tenant.to_string(),
        account: me.user.account.clone(),
        nickname: me.user.nickname.clone(),
        phone: me.user.mobile.as_ref().map(PhoneNumber::masked),
        status: status_label(me.user.status).to_owned(),
        bindings: me
            .bindings
            .iter()
            .map(|b| BindingView {
                appid: b.appid.to_string(),
                kind: app_kind(&state, &b.appid).to_owned(),
                openid: b.openid.to_string(),
            })
            .collect(),
    }))
}

/// The kind of a configured app, by name (`me` lists only configured apps).
pub(crate) fn app_kind(state: &ApiState, appid: &miniauth_domain::AppId) -> &'static str {
    state
        .auth
        .apps()
        .get(appid)
        .map_or("unknown", |app| app.kind.as_str())
}

/// Creates an account + password user (admin token).
#[utoipa::path(
    post, path = "/v1/admin/users", tag = "v1",
    request_body = AdminUserRequest,
    security(("admin" = [])),
    responses(
        (status = 201, description = "Created", body = UserResponse),
        (status = 400, description = "Malformed body (`invalid_json`, `invalid_body`, `invalid_utf8`, `unreadable_body`) or field (`invalid_field`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token (`admin_token_invalid`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The admin API is disabled (`admin_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Account or mobile taken (`account_taken`, `phone_taken`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn add_user(
    State(state): State<ApiState>,
    _admin: Admin,
    JsonBody(body): JsonBody<AdminUserRequest>,
) -> Result<Response, ApiError> {
    let invalid = |e: InvalidValue| ApiError::App(e.into());
    let tenant = match body.tenant.as_deref() {
        Some(raw) => TenantId::parse(raw).map_err(invalid)?,
        None => state.config.default_tenant.clone(),
    };
    let mobile = match body
        .mobile
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        Some(mobile) => Some(
            PhoneNumber::new(mobile, body.country_code.as_deref().unwrap_or("86"))
                .map_err(invalid)?,
        ),
        None => None,
    };
    let user = state
        .auth
        .add_user(
            &tenant,
            &body.account,
            &Password::new(body.password),
            mobile.as_ref(),
            body.nickname.as_deref(),
        )
        .await?;
    tracing::info!(user = %user.id, %tenant, "admin created a user");
    Ok((StatusCode::CREATED, Json(UserResponse::from(&user))).into_response())
}

/// The user id of an admin path, with our error format.
fn user_path(
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<UserId, ApiError> {
    let Path(raw) = path.map_err(|_| ApiError::from(RequestError::InvalidPath("user id")))?;
    raw.parse::<i64>()
        .ok()
        .and_then(|id| UserId::new(id).ok())
        .ok_or_else(|| {
            ApiError::App(InvalidValue::new("user_id", "must be a positive integer").into())
        })
}

/// Disables a user and ends every session they hold: their refresh tokens stop
/// refreshing and their access tokens stop working on miniauth (admin token).
#[utoipa::path(
    post, path = "/v1/admin/users/{user_id}/disable", tag = "v1",
    params(("user_id" = i64, Path, description = "The business user")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "Disabled (again: harmless)", body = UserResponse),
        (status = 400, description = "The user id is not a positive integer (`invalid_field`, `invalid_path`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token (`admin_token_invalid`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user (`user_not_found`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn disable_user(
    State(state): State<ApiState>,
    _admin: Admin,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<UserResponse>, ApiError> {
    let id = user_path(path)?;
    let user = state.auth.disable_user(id).await?;
    tracing::info!(user = %user.id, "admin disabled a user");
    Ok(Json(UserResponse::from(&user)))
}

/// Enables a user again; the sessions ended by disabling stay ended (admin token).
#[utoipa::path(
    post, path = "/v1/admin/users/{user_id}/enable", tag = "v1",
    params(("user_id" = i64, Path, description = "The business user")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "Enabled (again: harmless)", body = UserResponse),
        (status = 400, description = "The user id is not a positive integer (`invalid_field`, `invalid_path`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong admin token (`admin_token_invalid`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user (`user_not_found`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn enable_user(
    State(state): State<ApiState>,
    _admin: Admin,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<UserResponse>, ApiError> {
    let id = user_path(path)?;
    let user = state.auth.enable_user(id).await?;
    tracing::info!(user = %user.id, "admin enabled a user");
    Ok(Json(UserResponse::from(&user)))
}
