//! Extractors whose rejections use the API's own error format: JSON and form bodies,
//! strict query strings, the bearer token, the admin token and the request's origin.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use miniauth_application::ports::TokenSubject;
use miniauth_application::{Actor, RequestContext};
use serde::de::value::MapDeserializer;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{ApiError, RequestError};
use crate::state::ApiState;
use crate::v1::TokenGrant;

/// The request id and client address the middleware attached to the request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    pub request_id: String,
    /// Decided once, in the middleware ([`crate::TrustedProxies::client_ip`]).
    pub client_ip: Option<std::net::IpAddr>,
}

impl Origin {
    /// The context handed to the use cases.
    pub fn context(&self, actor: Actor) -> RequestContext {
        RequestContext {
            request_id: self.request_id.clone(),
            actor,
            client_ip: self.client_ip,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Origin>()
            .cloned()
            .unwrap_or_default())
    }
}

/// A path segment (the appid), with our error format when it does not decode.
pub(crate) struct AppPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for AppPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(appid)| Self(appid))
            .map_err(|_| RequestError::InvalidPath("appid").into())
    }
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
}

fn is_json(media_type: &str) -> bool {
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

const FORM: &str = "application/x-www-form-urlencoded";

/// Reads the whole body within the configured limit, as UTF-8.
async fn read_text(req: Request) -> Result<String, RequestError> {
    let bytes = Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            RequestError::BodyTooLarge
        } else {
            RequestError::UnreadableBody
        }
    })?;
    String::from_utf8(bytes.to_vec()).map_err(|_| RequestError::InvalidUtf8("body".to_owned()))
}

fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, RequestError> {
    serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => RequestError::InvalidBody(format!(
                "the JSON body does not have the expected shape: {e}"
            )),
            _ => RequestError::InvalidJson(e.to_string()),
        }
    })
}

/// A JSON body (`Content-Type: application/json`).
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        match media_type(req.headers()) {
            Some(media) if is_json(&media) => {}
            _ => {
                return Err(
                    RequestError::UnsupportedMediaType("application/json".to_owned()).into(),
                )
            }
        }
        let text = read_text(req).await?;
        Ok(Self(parse_json(&text)?))
    }
}

/// The fields of a body sent as JSON or as an HTML form, whichever the content type
/// says, read as strings (a JSON null is an absent field).
async fn string_fields(req: Request) -> Result<HashMap<String, String>, RequestError> {
    // The media type is judged before the body is read.
    let media = fields_media(req.headers())?;
    let text = read_text(req).await?;
    fields_of(media, &text)
}

/// The kind of a string-field body: a form, or JSON; anything else is refused.
fn fields_media(headers: &HeaderMap) -> Result<FieldsMedia, RequestError> {
    match media_type(headers).unwrap_or_default() {
        media if media == FORM => Ok(FieldsMedia::Form),
        media if is_json(&media) => Ok(FieldsMedia::Json),
        _ => Err(RequestError::UnsupportedMediaType(format!(
            "application/json or {FORM}"
        ))),
    }
}

#[derive(Clone, Copy)]
enum FieldsMedia {
    Form,
    Json,
}

fn fields_of(media: FieldsMedia, text: &str) -> Result<HashMap<String, String>, RequestError> {
    match media {
        FieldsMedia::Form => parse_pairs(text, "form body"),
        FieldsMedia::Json => json_string_fields(text),
    }
}

fn json_string_fields(text: &str) -> Result<HashMap<String, String>, RequestError> {
    let object: serde_json::Map<String, serde_json::Value> = parse_json(text)?;
    let mut fields = HashMap::new();
    for (name, value) in object {
        match value {
            serde_json::Value::String(text) => {
                fields.insert(name, text);
            }
            serde_json::Value::Null => {}
            _ => {
                return Err(RequestError::InvalidBody(format!(
                    "`{name}` must be a string"
                )))
            }
        }
    }
    Ok(fields)
}

/// A body of optional string fields, as JSON or as a form. An empty body is no field
/// at all, whatever its content type: flyio's WeChat build posts a call without data
/// as an empty `application/x-www-form-urlencoded` body (GitEgg's `logout()`).
pub(crate) struct OptionalFields(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for OptionalFields {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let media = fields_media(req.headers());
        let text = read_text(req).await?;
        if text.trim().is_empty() {
            return Ok(Self(HashMap::new()));
        }
        Ok(Self(fields_of(media?, &text)?))
    }
}

/// The token endpoints' body, as JSON or as a form.
pub(crate) struct GrantBody(pub TokenGrant);

impl<S: Send + Sync> FromRequest<S> for GrantBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let fields = string_fields(req).await?;
        // Every field of every grant is a string with a default: only a missing or
        // unknown `grant_type` fails here.
        let fields = MapDeserializer::<_, serde::de::value::Error>::new(fields.into_iter());
        TokenGrant::deserialize(fields)
            .map(Self)
            .map_err(|_| RequestError::UnsupportedGrantType.into())
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs strictly: `+` is a space (the
/// domain repairs base64 that suffered from it), percent escapes must be complete
/// and decode to UTF-8, and a parameter may appear once.
pub(crate) fn parse_pairs(text: &str, what: &str) -> Result<HashMap<String, String>, RequestError> {
    let mut pairs = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode_component(name, what)?;
        let value = decode_component(value, what)?;
        if pairs.contains_key(&name) {
            return Err(RequestError::InvalidQuery(format!(
                "the {what} names `{name}` more than once"
            )));
        }
        pairs.insert(name, value);
    }
    Ok(pairs)
}

fn decode_component(raw: &str, what: &str) -> Result<String, RequestError> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        RequestError::InvalidQuery(format!(
                            "the {what} has an incomplete percent escape"
                        ))
                    })?;
                decoded.push(hex);
                i += 2;
            }
            other => decoded.push(other),
        }
        i += 1;
    }
    String::from_utf8(decoded).map_err(|_| RequestError::InvalidUtf8(what.to_owned()))
}

/// The query string's parameters, decoded strictly (see [`parse_pairs`]).
pub(crate) struct Params(pub HashMap<String, String>);

impl Params {
    /// A parameter, or "" when absent (the use cases say which one is missing).
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or_default()
    }

    /// A parameter if present.
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(Self(parse_pairs(query, "query string")?))
    }
}

fn authorization<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<Result<&'a str, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(Err(()));
    };
    let (given, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    if given.eq_ignore_ascii_case(scheme) && !rest.trim().is_empty() {
        Some(Ok(rest.trim()))
    } else {
        Some(Err(()))
    }
}

/// The bearer of a valid access token.
pub(crate) struct Bearer(pub TokenSubject);

impl Bearer {
    /// The actor recorded with the events this user's requests cause.
    pub fn actor(&self) -> Actor {
        Actor::User(self.0.user_id)
    }
}

impl FromRequestParts<ApiState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        match authorization(&parts.headers, "Bearer") {
            None => Err(RequestError::AccessTokenMissing.into()),
            Some(Err(())) => Err(ApiError::App(
                miniauth_application::ports::AccessTokenError::Invalid.into(),
            )),
            Some(Ok(token)) => Ok(Self(state.auth.authenticate(token).await?)),
        }
    }
}

/// A request carrying the configured admin token.
pub(crate) struct Admin;

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let origin = Origin::from_request_parts(parts, state).await?;
        require_admin(state, &parts.headers, &origin).await?;
        Ok(Self)
    }
}

/// Checks the request's admin token. A token sent is one try of the operator's
/// secret, counted per client before it is compared (`429 too_many_attempts` past
/// the limit, even for the right token); a request that sends none guesses nothing
/// and is not counted.
pub(crate) async fn require_admin(
    state: &ApiState,
    headers: &HeaderMap,
    origin: &Origin,
) -> Result<(), ApiError> {
    let Some(expected) = &state.config.admin_token else {
        return Err(RequestError::AdminDisabled.into());
    };
    let Some(Ok(token)) = authorization(headers, "Bearer") else {
        return Err(RequestError::AdminTokenInvalid.into());
    };
    match state
        .auth
        .check_operator_secret(&origin.context(Actor::Admin), || expected.matches(token))
        .await
    {
        Ok(()) => Ok(()),
        Err(miniauth_application::AppError::BadCredentials) => {
            Err(RequestError::AdminTokenInvalid.into())
        }
        Err(refused) => Err(refused.into()),
    }
}

/// HTTP Basic credentials, if sent and well formed.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = authorization(headers, "Basic")?.ok()?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_decode_plus_percent_and_keep_everything_else() {
        let pairs = parse_pairs(
            "iv=ab+c%2Bd%3D%3D&rawData=%7B%22a%22%3A1%7D&empty=&flag",
            "q",
        )
        .unwrap();
        assert_eq!(pairs["iv"], "ab c+d==");
        assert_eq!(pairs["rawData"], "{\"a\":1}");
        assert_eq!(pairs["empty"], "");
        assert_eq!(pairs["flag"], "");
        let chinese = parse_pairs("n=%E5%BE%AE%E4%BF%A1", "q").unwrap();
        assert_eq!(chinese["n"], "微信");
    }

    #[test]
    fn pairs_refuse_broken_escapes_bad_utf8_and_duplicates() {
        assert_eq!(
            parse_pairs("a=%4", "q").unwrap_err().code(),
            "invalid_query"
        );
        assert_eq!(
            parse_pairs("a=%zz", "q").unwrap_err().code(),
            "invalid_query"
        );
        assert_eq!(
            parse_pairs("a=%FF", "q").unwrap_err().code(),
            "invalid_utf8"
        );
        assert_eq!(
            parse_pairs("a=1&a=2", "q").unwrap_err().code(),
            "invalid_query"
        );
    }

    #[test]
    fn basic_credentials_are_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {}", STANDARD.encode("client:se:cret"))
                .parse()
                .unwrap(),
        );
        assert_eq!(
            basic_credentials(&headers),
            Some(("client".to_owned(), "se:cret".to_owned()))
        );
        headers.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(basic_credentials(&headers), None);
    }
}
