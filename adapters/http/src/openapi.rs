//! The OpenAPI document of the v1 API and the operational routes, served at
//! `/openapi.json`, and what keeps it true to the handlers:
//!
//! * the request bodies' schemas (below) say what the handlers and use cases accept:
//!   required fields, lengths, patterns, and the alternatives as `oneOf`;
//! * [`Truth`] gives the parameters their rules by name (`appid`, `openid`, `user_id`,
//!   `as_of`, `after`, `limit`) and every operation the error answers it can give, with
//!   the `Problem` body.
//!
//! `tests/schemathesis/run.sh` checks the document against a running service.
//!
//! The patterns describe ASCII exactly: the fields the server trims may carry ASCII white
//! space around them (the server also trims Unicode white space, which the patterns do
//! not spell out), and byte limits are written as `maxLength`, which counts characters.

use std::borrow::Cow;

use utoipa::openapi::path::{Operation, Parameter, ParameterIn, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder,
    OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Header, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::admin::{self, DEFAULT_EXPORT_LIMIT, MAX_EXPORT_LIMIT};
use crate::error::{Problem, PROBLEM_JSON};
use crate::{ops, token_services, v1, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "miniauth",
        description = "WeChat Mini Program login, registration and binding. Errors are \
                       application/problem+json with a stable `code` (see docs/api.md)."
    ),
    paths(
        v1::create_session,
        v1::submit_profile,
        v1::verify_phone,
        crate::browser::authorize,
        crate::browser::callback,
        crate::browser::results,
        v1::bind,
        v1::unbind,
        v1::token,
        v1::logout,
        token_services::revoke,
        token_services::introspect,
        v1::me,
        v1::add_user,
        v1::disable_user,
        v1::enable_user,
        admin::history,
        admin::user_bindings,
        admin::app_bindings,
        admin::events,
        admin::erase,
        webhooks::parked,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::jwks,
        token_services::discovery,
        ops::openapi,
    ),
    components(schemas(
        v1::SessionRequest,
        v1::SessionResponse,
        crate::browser::ResultRequest,
        v1::TokenResponse,
        v1::ProfileRequest,
        v1::ProfileResponse,
        v1::PhoneRequest,
        v1::PhoneResponse,
        v1::BindingRequest,
        v1::BindingResponse,
        v1::TokenGrant,
        v1::LogoutRequest,
        v1::MeResponse,
        v1::BindingView,
        v1::AdminUserRequest,
        v1::UserResponse,
        miniauth_application::audit::AccountHistory,
        miniauth_application::audit::HistoryEntry,
        miniauth_application::audit::UserBindings,
        miniauth_application::audit::AppBindings,
        miniauth_application::audit::BindingAt,
        miniauth_domain::audit::LoggedEvent,
        miniauth_application::webhooks::ParkedDelivery,
        Problem,
        Status,
        Jwks,
        token_services::TokenRequest,
        token_services::IntrospectionResponse,
        token_services::DiscoveryDocument,
    )),
    modifiers(&BearerSchemes, &Truth),
    tags(
        (name = "v1", description = "The v1 API"),
        (name = "operations", description = "Health, readiness, metrics, keys and this document"),
    )
)]
struct ApiDoc;

/// The OpenAPI document of the v1 API and the operational routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, format) in [("bearer", "JWT"), ("admin", "opaque admin token")] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format(format)
                        .build(),
                ),
            );
        }
        components.add_security_scheme(
            "introspection_client",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Values: the rules of the domain and the use cases, as JSON Schema.

/// The ASCII white space `str::trim` removes.
const BLANK: &str = r"[\t\n\u000B\f\r ]";
/// Anything else.
const NOT_BLANK: &str = r"[^\t\n\u000B\f\r ]";
/// What `char::is_control` calls control characters.
const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F";
/// `AppId`: `wx` and 16 letters or digits.
const APPID: &str = r"^wx[0-9A-Za-z]{16}$";
/// `OpenId`, `TenantId`: 1 to 64 letters, digits, `_` or `-`.
const TOKEN_ID: &str = r"^[A-Za-z0-9_-]{1,64}$";

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

fn nullable_string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .description(Some(description))
}

fn pattern(builder: ObjectBuilder, pattern: impl Into<String>) -> Schema {
    builder.pattern(Some(pattern)).build().into()
}

/// A trimmed field that must not be blank (a ticket, a refresh token).
fn not_blank(description: &str) -> Schema {
    pattern(string(description), NOT_BLANK)
}

/// Trimmed, then 1 to `max` characters of any kind.
fn trimmed(builder: ObjectBuilder, max: usize) -> Schema {
    let inner = max - 2;
    pattern(
        builder,
        format!(r"^{BLANK}*{NOT_BLANK}(?:[\s\S]{{0,{inner}}}{NOT_BLANK})?{BLANK}*$"),
    )
}

/// A `wx.login` or phone-button code (`OneTimeCode`): trimmed, 1 to 128 letters, digits,
/// `_` or `-`. Whether WeChat knows it no schema can say: an unknown one is 400.
fn one_time_code(description: &str) -> Schema {
    pattern(
        string(description),
        format!(r"^{BLANK}*[A-Za-z0-9_-]{{1,128}}{BLANK}*$"),
    )
}

fn ticket() -> Schema {
    not_blank("The ticket from the login (blank: `ticket_missing`).")
}

/// A legacy encrypted payload's field: its content is checked by decrypting it.
fn base64(description: &str) -> Schema {
    string(description).min_length(Some(1)).build().into()
}

fn object(
    description: &str,
    required: Vec<(&str, Schema)>,
    optional: Vec<(&str, Schema)>,
) -> ObjectBuilder {
    let mut builder = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description));
    for (name, schema) in required {
        builder = builder.property(name, schema).required(name);
    }
    for (name, schema) in optional {
        builder = builder.property(name, schema);
    }
    builder
}

fn named<T: ToSchema>() -> Cow<'static, str> {
    <T as ToSchema>::name()
}

impl PartialSchema for v1::SessionRequest {
    fn schema() -> RefOr<Schema> {
        object(
            "`POST /v1/apps/{appid}/sessions`.",
            vec![("code", one_time_code("The `wx.login` code."))],
            vec![],
        )
        .build()
        .into()
    }
}

impl ToSchema for v1::SessionRequest {}

/// A field that must be absent or null.
fn absent(description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Null)
        .description(Some(description))
        .build()
        .into()
}

/// A body of two alternatives as the handler reads it: `ticket`, the fields of both
/// typed (a JSON null is an absent field), and exactly one alternative's rules.
fn alternatives(
    description: &str,
    fields: Vec<(&str, &str)>,
    current: ObjectBuilder,
    legacy: ObjectBuilder,
) -> RefOr<Schema> {
    let mut typed = vec![];
    for (name, about) in fields {
        typed.push((name, nullable_string(about).build().into()));
    }
    let fields = object(description, vec![("ticket", ticket())], typed);
    RefOr::T(Schema::AllOf(
        AllOfBuilder::new()
            .item(fields)
            .item(RefOr::T(Schema::OneOf(
                OneOfBuilder::new().item(current).item(legacy).build(),
            )))
            .build(),
    ))
}

const ENCRYPTED_DATA: &str = "Legacy: the encrypted payload, base64.";
const IV: &str = "Legacy: the iv, base64 (16 bytes).";

impl PartialSchema for v1::ProfileRequest {
    fn schema() -> RefOr<Schema> {
        let nickname = pattern(
            string("The nickname the user typed: 1 to 64 characters, no control characters."),
            format!(r"^{BLANK}*[^\s{CONTROL}](?:[^{CONTROL}]{{0,62}}[^\s{CONTROL}])?{BLANK}*$"),
        );
        // 1024 bytes with the scheme: ASCII, so characters.
        let avatar_url = pattern(
            string("The avatar the user chose: an http(s) or wxfile URL of at most 1024 bytes."),
            format!(
                r"^{BLANK}*(?:https://\S{{0,1016}}|http://\S{{0,1017}}|wxfile://\S{{0,1015}}){BLANK}*$"
            ),
        );
        let current = object(
            "Current: the plain fields of the nickname and avatar components \
             (no `encrypted_data`).",
            vec![("nickname", nickname), ("avatar_url", avatar_url)],
            vec![("encrypted_data", absent("Absent: the plain fields count."))],
        );
        let legacy = object(
            "Legacy: `wx.getUserProfile`'s signed and encrypted payload (the plain fields \
             are then ignored); its signature, decryption and watermark are checked \
             (`payload_rejected`).",
            vec![
                (
                    "raw_data",
                    string("The signed non-sensitive JSON (at most 8 KiB).")
                        .max_length(Some(8 * 1024))
                        .build()
                        .into(),
                ),
                (
                    "signature",
                    pattern(
                        string("hex(sha1(raw_data + session_key)): 40 hex digits."),
                        format!(r"^{BLANK}*[0-9A-Fa-f]{{40}}{BLANK}*$"),
                    ),
                ),
                ("encrypted_data", base64(ENCRYPTED_DATA)),
                ("iv", base64(IV)),
            ],
            vec![],
        );
        alternatives(
            "`POST /v1/apps/{appid}/profile`: the plain fields (current) or the legacy \
             payload.",
            vec![
                ("nickname", "Current: the nickname the user typed."),
                ("avatar_url", "Current: the avatar the user chose."),
                ("raw_data", "Legacy: the signed non-sensitive JSON."),
                ("signature", "Legacy: hex(sha1(raw_data + session_key))."),
                ("encrypted_data", ENCRYPTED_DATA),
                ("iv", IV),
            ],
            current,
            legacy,
        )
    }
}

impl ToSchema for v1::ProfileRequest {}

impl PartialSchema for v1::PhoneRequest {
    fn schema() -> RefOr<Schema> {
        const CODE: &str = "Current: the phone button's one-time code.";
        let current = object(CODE, vec![("code", one_time_code(CODE))], vec![]);
        let legacy = object(
            "Legacy: the encrypted phone payload (no `code`); its decryption and watermark \
             are checked (`payload_rejected`).",
            vec![
                ("encrypted_data", base64(ENCRYPTED_DATA)),
                ("iv", base64(IV)),
            ],
            vec![("code", absent("Absent: the payload counts."))],
        );
        alternatives(
            "`POST /v1/apps/{appid}/phone`: `code` (current) or `encrypted_data` + `iv` \
             (legacy).",
            vec![
                ("code", CODE),
                ("encrypted_data", ENCRYPTED_DATA),
                ("iv", IV),
            ],
            current,
            legacy,
        )
    }
}

impl ToSchema for v1::PhoneRequest {}

impl PartialSchema for v1::BindingRequest {
    fn schema() -> RefOr<Schema> {
        object(
            "`POST /v1/apps/{appid}/binding`: the ticket of the WeChat identity to bind to \
             the logged-in user.",
            vec![("ticket", ticket())],
            vec![],
        )
        .build()
        .into()
    }
}

impl ToSchema for v1::BindingRequest {}

impl PartialSchema for v1::LogoutRequest {
    fn schema() -> RefOr<Schema> {
        object(
            "`POST /v1/logout`.",
            vec![],
            vec![(
                "refresh_token",
                string(
                    "The refresh token to revoke (with its family); absent or blank: the \
                     access token's session ends.",
                )
                .build()
                .into(),
            )],
        )
        .build()
        .into()
    }
}

impl ToSchema for v1::LogoutRequest {}

/// One grant of `POST /v1/token`. Every field of the body is read as a string (JSON
/// null: absent), whichever grant it belongs to.
fn grant(name: &str, description: &str, fields: Vec<(&str, Schema)>) -> ObjectBuilder {
    let grant_type = string("The grant.").enum_values(Some([name])).build();
    let mut required = vec![("grant_type", grant_type.into())];
    let mut optional = Vec::new();
    for (field, schema) in fields {
        if field == "tenant" {
            optional.push((field, schema));
        } else {
            required.push((field, schema));
        }
    }
    object(description, required, optional).additional_properties(Some(
        AdditionalProperties::RefOr(RefOr::T(
            nullable_string("Other fields are ignored, but must be strings.")
                .build()
                .into(),
        )),
    ))
}

impl PartialSchema for v1::TokenGrant {
    fn schema() -> RefOr<Schema> {
        let ticket_grant = grant(
            "ticket",
            "The ticket of a bound identity buys tokens, once.",
            vec![("ticket", ticket())],
        );
        let password_grant = grant(
            "password",
            "Account and password.",
            vec![
                (
                    "account",
                    trimmed(string("The account name: 1 to 64 characters."), 64),
                ),
                (
                    "password",
                    string("The password: 1 to 256 bytes.")
                        .min_length(Some(1))
                        .max_length(Some(256))
                        .build()
                        .into(),
                ),
                (
                    "tenant",
                    pattern(
                        nullable_string(
                            "The tenant (default: the configured one); one no app and no \
                             user belongs to is `unknown_tenant` (400).",
                        ),
                        TOKEN_ID,
                    ),
                ),
            ],
        );
        let refresh_grant = grant(
            "refresh_token",
            "A refresh token buys new tokens, and is rotated.",
            vec![("refresh_token", not_blank("The refresh token."))],
        );
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .description(Some(
                    "The body of `POST /v1/token`, as JSON or as a form: the grant `grant_type` \
                 names (another one is `unsupported_grant_type`).",
                ))
                .item(ticket_grant)
                .item(password_grant)
                .item(refresh_grant)
                .build(),
        ))
    }
}

impl ToSchema for v1::TokenGrant {}

impl PartialSchema for v1::AdminUserRequest {
    fn schema() -> RefOr<Schema> {
        let account = pattern(
            string(
                "The login name, unique per tenant: 1 to 64 characters, no white space or \
                 control characters.",
            ),
            format!(r"^{BLANK}*[^\s{CONTROL}]{{1,64}}{BLANK}*$"),
        );
        let password = string("The password (8 to 256 bytes); only its hash is stored.")
            .min_length(Some(8))
            .max_length(Some(256))
            .build()
            .into();
        let mobile = pattern(
            nullable_string("The mobile number (4 to 20 digits), unique per tenant; blank: none."),
            format!(r"^{BLANK}*(?:[0-9]{{4,20}})?{BLANK}*$"),
        );
        let country_code = nullable_string(
            "The country calling code of `mobile` (1 to 4 digits, `+` allowed; default `86`); \
             read only with a mobile number.",
        )
        .build()
        .into();
        let nickname = pattern(
            nullable_string("The display name: at most 64 characters; blank: none."),
            format!(r"^{BLANK}*(?:{NOT_BLANK}(?:[\s\S]{{0,62}}{NOT_BLANK})?)?{BLANK}*$"),
        );
        let tenant = pattern(
            nullable_string("The tenant (default: the configured one)."),
            TOKEN_ID,
        );
        let fields = object(
            "`POST /v1/admin/users`.",
            vec![("account", account), ("password", password)],
            vec![
                ("mobile", mobile),
                ("country_code", country_code),
                ("nickname", nickname),
                ("tenant", tenant),
            ],
        );
        // `country_code` counts only beside a mobile number.
        let without_mobile = ObjectBuilder::new().property(
            "mobile",
            pattern(nullable_string("No mobile number."), format!(r"^{BLANK}*$")),
        );
        let with_country_code = ObjectBuilder::new().property(
            "country_code",
            pattern(
                nullable_string("A country calling code."),
                format!(r"^{BLANK}*\+*[0-9]{{1,4}}{BLANK}*$"),
            ),
        );
        RefOr::T(Schema::AllOf(
            AllOfBuilder::new()
                .item(fields)
                .item(
                    AnyOfBuilder::new()
                        .item(without_mobile)
                        .item(with_country_code),
                )
                .build(),
        ))
    }
}

impl ToSchema for v1::AdminUserRequest {}

impl PartialSchema for token_services::TokenRequest {
    fn schema() -> RefOr<Schema> {
        object(
            "The body of `/v1/token/revoke` (RFC 7009) and `/v1/token/introspect` (RFC 7662).",
            vec![(
                "token",
                not_blank("The access or refresh token (blank: `invalid_field`)."),
            )],
            vec![(
                "token_type_hint",
                nullable_string(
                    "`access_token` or `refresh_token`: which kind to look for first; \
                     other values are ignored.",
                )
                .build()
                .into(),
            )],
        )
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(
            nullable_string("Other fields are ignored, but must be strings.")
                .build()
                .into(),
        ))))
        .build()
        .into()
    }
}

impl ToSchema for token_services::TokenRequest {}

/// The body of `/healthz` and `/readyz`.
pub(crate) struct Status;

impl PartialSchema for Status {
    fn schema() -> RefOr<Schema> {
        object(
            "`ok` (`/healthz`) or `ready` (`/readyz`).",
            vec![(
                "status",
                string("The state.")
                    .enum_values(Some(["ok", "ready"]))
                    .build()
                    .into(),
            )],
            vec![],
        )
        .build()
        .into()
    }
}

impl ToSchema for Status {}

/// The body of `/.well-known/jwks.json` (RFC 7517).
pub(crate) struct Jwks;

impl PartialSchema for Jwks {
    fn schema() -> RefOr<Schema> {
        let key = object(
            "A public key (RFC 8037: Ed25519).",
            vec![
                ("kty", string("Key type: `OKP`.").build().into()),
                ("crv", string("Curve: `Ed25519`.").build().into()),
                ("x", string("The public key, base64url.").build().into()),
                (
                    "kid",
                    string("The key id, as in the tokens' header.")
                        .build()
                        .into(),
                ),
            ],
            vec![
                ("alg", string("`EdDSA`.").build().into()),
                ("use", string("`sig`.").build().into()),
            ],
        );
        object(
            "The keys that verify access tokens.",
            vec![("keys", ArrayBuilder::new().items(key).build().into())],
            vec![],
        )
        .build()
        .into()
    }
}

impl ToSchema for Jwks {}

// ---------------------------------------------------------------------------------------
// Parameters and answers.

/// Gives parameters their rules and every operation the errors it can answer.
struct Truth;

impl Modify for Truth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, operation) in operations(item) {
                for parameter in operation.parameters.iter_mut().flatten() {
                    constrain(parameter);
                }
                answer_errors(path, method, operation);
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("post", item.post.as_mut()),
        ("put", item.put.as_mut()),
        ("patch", item.patch.as_mut()),
        ("delete", item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.map(|o| (method, o)))
}

fn integer(format: KnownFormat, minimum: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(format)))
        .minimum(Some(minimum))
}

/// A parameter's schema and whether it is required, by its name: the same name means
/// the same rule in every route.
fn constrain(parameter: &mut Parameter) {
    let (schema, required): (Schema, bool) = match parameter.name.as_str() {
        "appid" => (
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(APPID))
                .build()
                .into(),
            true,
        ),
        "openid" => (
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(TOKEN_ID))
                .build()
                .into(),
            true,
        ),
        "user_id" => (integer(KnownFormat::Int64, 1).build().into(), true),
        "as_of" => (
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .build()
                .into(),
            false,
        ),
        "after" => (
            integer(KnownFormat::Int64, 0)
                .default(Some(0.into()))
                .build()
                .into(),
            false,
        ),
        "limit" => (
            integer(KnownFormat::Int32, 1)
                .maximum(Some(MAX_EXPORT_LIMIT))
                .default(Some(DEFAULT_EXPORT_LIMIT.into()))
                .build()
                .into(),
            false,
        ),
        _ => return,
    };
    parameter.schema = Some(schema.into());
    parameter.required = if required || parameter.parameter_in == ParameterIn::Path {
        Required::True
    } else {
        Required::False
    };
}

/// The error answers of an operation beyond those its annotation names: what every v1
/// route of its kind can answer. Descriptions name the codes (docs/api.md).
fn error_answers(path: &str, method: &str, operation: &Operation) -> Vec<(u16, String)> {
    let mut answers = Vec::new();
    if !path.starts_with("/v1/") {
        return answers;
    }
    let schemes: Vec<String> = operation
        .security
        .iter()
        .flatten()
        .filter_map(|requirement| serde_json::to_value(requirement).ok())
        .filter_map(|value| value.as_object().cloned())
        .flat_map(|object| object.into_iter().map(|(name, _)| name))
        .collect();
    let located = |place: ParameterIn| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == place)
    };
    let mut malformed = Vec::new();
    if operation.request_body.is_some() {
        malformed.extend(["`invalid_json`", "`invalid_body`", "`unreadable_body`"]);
    }
    if operation.request_body.is_some() || located(ParameterIn::Query) {
        malformed.push("`invalid_utf8`");
    }
    if located(ParameterIn::Query) {
        malformed.push("`invalid_query`");
    }
    if located(ParameterIn::Path) {
        malformed.push("`invalid_path`");
    }
    if !malformed.is_empty() {
        answers.push((400, format!("Malformed request: {}", malformed.join(", "))));
    }
    if schemes.iter().any(|s| s == "admin") {
        answers.push((
            401,
            "Missing or wrong admin token (`admin_token_invalid`)".into(),
        ));
        answers.push((
            403,
            "The admin API is disabled: no admin token is configured (`admin_disabled`)".into(),
        ));
    } else if schemes.iter().any(|s| s == "bearer") {
        answers.push((
            401,
            "Missing, invalid, expired or revoked access token (`access_token_missing`, \
             `access_token_invalid`, `access_token_expired`, `access_token_revoked`)"
                .into(),
        ));
    }
    if operation.request_body.is_some() {
        answers.push((
            413,
            "The body is larger than the limit (`body_too_large`)".into(),
        ));
        answers.push((
            415,
            "The body is not of the media type the route reads (`unsupported_media_type`)".into(),
        ));
    }
    if is_audit_route(path, method) {
        answers.push((
            501,
            "This deployment serves no audit log (`audit_unavailable`)".into(),
        ));
    }
    if path.ends_with("/sessions") || path.ends_with("/phone") {
        // These ask WeChat (jscode2session, getuserphonenumber).
        answers.push((429, "WeChat's rate limit (`wechat_rate_limited`)".into()));
        answers.push((
            500,
            "WeChat refused this app or server (`wechat_app_credentials`, \
             `wechat_ip_not_whitelisted`, `wechat_error`), or an internal error \
             (`internal_error`)"
                .into(),
        ));
        answers.push((
            503,
            "WeChat is unavailable or its quota used up (`wechat_unavailable`, \
             `wechat_quota_exhausted`), the store is (`service_unavailable`, `server_busy`), \
             or the request took too long (`request_timeout`); `Retry-After` says when to \
             try again"
                .into(),
        ));
    }
    answers.push((
        500,
        "An internal error (`internal_error`); the `x-request-id` header identifies it in \
         the logs"
            .into(),
    ));
    answers.push((
        503,
        "The request took too long (`request_timeout`), or the store is unavailable \
         (`service_unavailable`, `server_busy`); `Retry-After` says when to try again"
            .into(),
    ));
    answers
}

/// The routes served over the audit log (answering 501 where there is none).
fn is_audit_route(path: &str, method: &str) -> bool {
    method == "get"
        && (path.ends_with("/history") || path.ends_with("/bindings") || path == "/v1/admin/events")
}

/// What particular admin routes answer beyond their kind, replacing a description their
/// annotation (admin.rs) gives.
fn route_answers(path: &str, method: &str) -> Vec<(u16, &'static str)> {
    match (method, path) {
        ("get", "/v1/admin/apps/{appid}/accounts/{openid}/history") => vec![(
            404,
            "Nothing was ever recorded for this identity (`account_not_found`)",
        )],
        ("get", "/v1/admin/bindings") => vec![(
            404,
            "An app neither configured nor in the log (`unknown_app`)",
        )],
        ("post", "/v1/admin/apps/{appid}/accounts/{openid}/erase") => vec![
            (
                404,
                "No app with this appid (`unknown_app`), or this identity never logged in \
                 (`account_not_found`)",
            ),
            (
                409,
                "A concurrent change to the account (`concurrent_update`)",
            ),
        ],
        _ => Vec::new(),
    }
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            Content::new(Some(Ref::from_schema_name(named::<Problem>()))),
        )
        .build()
}

fn header(description: &str, schema: Schema) -> Header {
    let mut header = Header::new(schema);
    header.description = Some(description.to_owned());
    header
}

fn answer_errors(path: &str, method: &str, operation: &mut Operation) {
    let generic = error_answers(path, method, operation);
    let responses = &mut operation.responses.responses;
    for (status, description) in generic {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(problem(&description)));
    }
    for (status, description) in route_answers(path, method) {
        match responses.get_mut(&status.to_string()) {
            Some(RefOr::T(response)) => response.description = description.to_owned(),
            _ => {
                responses.insert(status.to_string(), RefOr::T(problem(description)));
            }
        }
    }
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        match status.as_str() {
            "429" | "503" => {
                response
                    .headers
                    .entry("Retry-After".to_owned())
                    .or_insert_with(|| {
                        header(
                            "Seconds to wait before trying again.",
                            integer(KnownFormat::Int64, 0).build().into(),
                        )
                    });
            }
            "401" => {
                response
                    .headers
                    .entry("WWW-Authenticate".to_owned())
                    .or_insert_with(|| {
                        header(
                            "`Bearer`.",
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .build()
                                .into(),
                        )
                    });
            }
            _ => {}
        }
    }
    // Every route that reads a body requires one.
    if let Some(body) = operation.request_body.as_mut() {
        body.required = Some(Required::True);
    }
}
