//! Standard discovery and token services for the services that trust miniauth's tokens:
//! `/.well-known/openid-configuration`, token revocation (RFC 7009) and token
//! introspection (RFC 7662).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use miniauth_application::{
    ActiveToken, Actor, Introspection, IntrospectionClients, TokenKind, TokenTypeHint,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, Problem, RequestError};
use crate::extract::{basic_credentials, OptionalFields, Origin};
use crate::state::ApiState;

/// Where the token services live, relative to the public URL.
pub(crate) const JWKS_PATH: &str = "/.well-known/jwks.json";
pub(crate) const TOKEN_PATH: &str = "/v1/token";
pub(crate) const REVOKE_PATH: &str = "/v1/token/revoke";
pub(crate) const INTROSPECT_PATH: &str = "/v1/token/introspect";

/// What the discovery document says beyond the routes: the token issuer, the public
/// URL, and who may introspect.
#[derive(Debug, Clone, Default)]
pub struct TokenServices {
    /// The `iss` of the access tokens (`[tokens] issuer`); the document's `issuer`.
    pub issuer: String,
    /// The absolute URL clients reach miniauth at (`[discovery] public_url`), without
    /// a trailing slash. `None`: taken from each request's `Host` header, over `http`
    /// (a development default: behind a proxy, configure it).
    pub public_url: Option<String>,
    /// The clients allowed to introspect (HTTP Basic).
    pub introspection_clients: IntrospectionClients,
}

/// The body of both token services (RFC 7009 §2.1, RFC 7662 §2.1), as a form (or
/// JSON): `token`, and `token_type_hint` (`access_token` or `refresh_token`: which to
/// look for first; other values are ignored). Its schema is in `openapi.rs`.
pub(crate) struct TokenRequest;

/// An introspection answer (RFC 7662 §2.2): `{"active": false}` alone for any token
/// that cannot be used now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct IntrospectionResponse {
    /// Whether the token can be used now.
    pub active: bool,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// The user id, as in the token's `sub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The app the login came through (its appid), as OAuth's `client_id`; absent for
    /// password logins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The same appid, under miniauth's claim name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    /// The user's tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The login session (refresh-token family).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The audience (access tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The token id (access tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Issued at, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Expires at, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

impl IntrospectionResponse {
    fn inactive() -> Self {
        Self {
            active: false,
            token_type: None,
            sub: None,
            client_id: None,
            appid: None,
            tenant: None,
            sid: None,
            iss: None,
            aud: None,
            jti: None,
            iat: None,
            exp: None,
        }
    }

    fn active(token: ActiveToken, issuer: &str) -> Self {
        let appid = token.subject.appid.as_ref().map(|a| a.as_str().to_owned());
        Self {
            active: true,
            token_type: Some(
                match token.kind {
                    TokenKind::Access => "access_token",
                    TokenKind::Refresh => "refresh_token",
                }
                .to_owned(),
            ),
            sub: Some(token.subject.user_id.to_string()),
            client_id: appid.clone(),
            appid,
            tenant: Some(token.subject.tenant.as_str().to_owned()),
            sid: Some(token.subject.session.as_str().to_owned()),
            iss: Some(issuer.to_owned()),
            aud: token.audience,
            jti: token.token_id,
            iat: Some(token.issued_at.timestamp()),
            exp: Some(token.expires_at.timestamp()),
        }
    }
}

/// The discovery document (OpenID Connect Discovery 1.0 / RFC 8414 metadata).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct DiscoveryDocument {
    /// The `iss` of miniauth's tokens.
    pub issuer: String,
    /// The public keys that verify access tokens.
    pub jwks_uri: String,
    /// `POST /v1/token`: the ticket, password and refresh-token grants.
    pub token_endpoint: String,
    /// `POST /v1/token/revoke` (RFC 7009).
    pub revocation_endpoint: String,
    /// `POST /v1/token/introspect` (RFC 7662).
    pub introspection_endpoint: String,
    /// `ticket` (miniauth's own), `password`, `refresh_token`.
    pub grant_types_supported: Vec<String>,
    /// None: miniauth has no authorization endpoint.
    pub response_types_supported: Vec<String>,
    /// `public`: `sub` is the business user id.
    pub subject_types_supported: Vec<String>,
    /// The algorithm of the access tokens (`EdDSA` or `RS256`).
    pub access_token_signing_alg_values_supported: Vec<String>,
    /// The same algorithm, for OpenID clients that require the field; miniauth
    /// issues no ID tokens.
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// `none`: the token endpoint's grants carry their own credentials.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// `none`: a token is its own credential for revocation.
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    /// `client_secret_basic`: `[[introspection_clients]]`.
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// The claims of an access token.
    pub claims_supported: Vec<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The public URL: configured, or `http://` and the request's `Host` when it is a plain
/// host name or address with an optional port (anything else: `localhost`).
fn public_url(services: &TokenServices, headers: &HeaderMap) -> String {
    if let Some(url) = &services.public_url {
        return url.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `GET /.well-known/openid-configuration`: where the keys and the token services are.
#[utoipa::path(
    get, path = "/.well-known/openid-configuration", tag = "operations",
    responses((status = 200, description = "The discovery document: cacheable 5 min under `[discovery] public_url`; without it the URLs follow the request's `Host`, and it is `no-store` with `Vary: Host`", body = DiscoveryDocument)),
)]
pub(crate) async fn discovery(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let services = &state.config.token_services;
    let base = public_url(services, &headers);
    let algorithms: Vec<String> = state
        .jwks
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|key| key.get("alg").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let document = DiscoveryDocument {
        issuer: services.issuer.clone(),
        jwks_uri: format!("{base}{JWKS_PATH}"),
        token_endpoint: format!("{base}{TOKEN_PATH}"),
        revocation_endpoint: format!("{base}{REVOKE_PATH}"),
        introspection_endpoint: format!("{base}{INTROSPECT_PATH}"),
        grant_types_supported: strings(&["ticket", "password", "refresh_token"]),
        response_types_supported: Vec::new(),
        subject_types_supported: strings(&["public"]),
        access_token_signing_alg_values_supported: algorithms.clone(),
        id_token_signing_alg_values_supported: algorithms,
        token_endpoint_auth_methods_supported: strings(&["none"]),
        revocation_endpoint_auth_methods_supported: strings(&["none"]),
        introspection_endpoint_auth_methods_supported: strings(&["client_secret_basic"]),
        claims_supported: strings(&[
            "iss", "sub", "aud", "exp", "iat", "jti", "sid", "tenant", "appid",
        ]),
    };
    let mut response = Json(document).into_response();
    let headers = response.headers_mut();
    if services.public_url.is_some() {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
    } else {
        // The URLs follow the request's Host: a shared cache must not keep a document
        // whose jwks_uri names whatever host one request claimed.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::VARY, HeaderValue::from_static("Host"));
    }
    response
}

/// The `token` and `token_type_hint` of a token service's body.
fn token_of(fields: &OptionalFields) -> (String, TokenTypeHint) {
    let OptionalFields(fields) = fields;
    let token = fields.get("token").cloned().unwrap_or_default();
    let hint = TokenTypeHint::parse(fields.get("token_type_hint").map(String::as_str));
    (token, hint)
}

/// `POST /v1/token/revoke` (RFC 7009): ends the token's login session.
#[utoipa::path(
    post, path = "/v1/token/revoke", tag = "v1",
    request_body(content(
        (TokenRequest = "application/x-www-form-urlencoded"),
        (TokenRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke: an unknown, forged or dead token is answered the same (RFC 7009 §2.2)"),
        (status = 400, description = "`token` is missing or blank (`invalid_field`), or the body is malformed (`invalid_json`, `invalid_body`, `invalid_utf8`, `unreadable_body`)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn revoke(
    State(state): State<ApiState>,
    body: Result<OptionalFields, ApiError>,
) -> Result<Response, ApiError> {
    let (token, hint) = token_of(&body?);
    state.auth.revoke_token(&token, hint).await?;
    Ok(Json(json!({})).into_response())
}

/// `POST /v1/token/introspect` (RFC 7662): whether a token can be used now, and its
/// claims. For the clients of `[[introspection_clients]]`, with HTTP Basic.
#[utoipa::path(
    post, path = "/v1/token/introspect", tag = "v1",
    security(("introspection_client" = [])),
    request_body(content(
        (TokenRequest = "application/x-www-form-urlencoded"),
        (TokenRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "The token's state: `{\"active\":false}` for any token that cannot be used now (unknown, malformed, forged, expired, revoked, another issuer's)", body = IntrospectionResponse),
        (status = 400, description = "The body is malformed (`invalid_json`, `invalid_body`, `invalid_utf8`, `unreadable_body`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong client credentials (`client_unauthorized`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed client authentications from this address (`too_many_attempts`)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn introspect(
    State(state): State<ApiState>,
    origin: Origin,
    headers: HeaderMap,
    body: Result<OptionalFields, ApiError>,
) -> Result<Response, ApiError> {
    let services = &state.config.token_services;
    let credentials = basic_credentials(&headers);
    let presented = credentials
        .as_ref()
        .map(|(id, secret)| (id.as_str(), secret.as_str()));
    let ctx = origin.context(Actor::Anonymous);
    let scope = state
        .auth
        .authenticate_introspection_client(&ctx, &services.introspection_clients, presented)
        .await?;
    let Some(scope) = scope else {
        let mut response = ApiError::from(RequestError::ClientUnauthorized).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"miniauth\""),
        );
        return Ok(response);
    };
    let (token, hint) = token_of(&body?);
    let answer = match state.auth.introspect(&scope, &token, hint).await? {
        Introspection::Active(token) => IntrospectionResponse::active(*token, &services.issuer),
        Introspection::Inactive => IntrospectionResponse::inactive(),
    };
    Ok(Json(answer).into_response())
}
