//! The operators' and auditors' console at `/console`: server-rendered HTML over the
//! same use cases as the admin API ([`MiniAuth`](miniauth_application::MiniAuth) and
//! its [`Audit`](miniauth_application::Audit)), with its stylesheet and script
//! embedded in the binary. It exists only when an admin token is configured; signing
//! in takes that token (docs/console.md).
//!
//! Security: sessions are signed cookies ([`session`]), httpOnly, `SameSite=Strict`,
//! `Secure` behind TLS, with an idle timeout; every form that changes something
//! carries a synchronizer token; every page is sent with a Content-Security-Policy
//! that allows only this origin's script and stylesheet and no framing.

mod charts;
mod pages;
mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{html, Markup};
use miniauth_application::audit::{parse_instant, AccountHistory, BindingAt};
use miniauth_application::ports::{UserRecord, UserStatus};
use miniauth_application::webhooks::{ParkedDelivery, WebhookDelivery};
use miniauth_application::{Actor, AppError, Audit, OperatorReason, UserQuery};
use miniauth_domain::audit::VerifyReport;
use miniauth_domain::{AppId, InvalidValue, OpenId, PhoneNumber, UserId};

use crate::error::ApiError;
use crate::extract::Origin;
use crate::state::ApiState;
use charts::{instant_param, when};
use pages::{alert, csrf_field, notice, page, respond};
use session::{set_cookie, Session, SessionKey, COOKIE};

pub use session::{ConsoleSettings, DEFAULT_IDLE_TIMEOUT, MAX_SESSION};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The policy every console answer carries: this origin's script and stylesheet only,
/// nothing inline, no plugin, no framing, forms only back here.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The pre-session cookie that the sign-in form's token is bound to.
const SIGN_IN_COOKIE: &str = "miniauth_console_signin";

/// What the console keeps besides the API's state.
struct Console {
    key: SessionKey,
    last_verify: Mutex<Option<(DateTime<Utc>, VerifyReport)>>,
}

/// The console's routes, over `state`; `None` when no admin token is configured (the
/// console does not exist then: its paths answer 404 like any unknown path).
pub(crate) fn routes(state: &ApiState) -> Option<Router<ApiState>> {
    let token = state.config.admin_token.as_ref()?;
    let console = Arc::new(Console {
        key: SessionKey::new(token.derive_key("miniauth/console-session/v1")),
        last_verify: Mutex::new(None),
    });
    let router = Router::new()
        .route("/console", get(overview))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/sign-in", get(sign_in_form).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/search", get(search).post(search_posted))
        .route("/console/users/{user_id}", get(user_page))
        .route("/console/users/{user_id}/disable", post(disable))
        .route("/console/users/{user_id}/enable", post(enable))
        .route("/console/accounts/{appid}/{openid}", get(account_page))
        .route("/console/accounts/{appid}/{openid}/unbind", post(unbind))
        .route("/console/accounts/{appid}/{openid}/erase", post(erase))
        .route("/console/verify", get(verify_page).post(verify))
        .route("/console/webhooks", get(webhooks_page))
        .route("/console/webhooks/retry", post(webhook_retry))
        .layer(middleware::from_fn_with_state(state.clone(), sessions))
        .layer(Extension(console));
    Some(router)
}

/// Whether the cookie should be `Secure`: always when configured, else when the
/// request came over HTTPS by the proxy's word (a client who lies only makes its own
/// cookie unusable over plain HTTP).
#[derive(Clone, Copy)]
struct Secure(bool);

/// Reads the session cookie, refuses a signed-out one, and refreshes a live one on
/// the way out (its idle timer restarts with each request); adds the console's
/// security headers to every answer.
async fn sessions(
    State(state): State<ApiState>,
    Extension(console): Extension<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    let settings = state.config.console;
    let now = state.auth.now();
    let secure = settings.secure_cookie
        || request
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let mut session = cookie(request.headers(), COOKIE)
        .and_then(|value| console.key.open(value, now, settings.idle_timeout).ok());
    if let Some(open) = &session {
        let ended = state
            .auth
            .operator_session_ended(&console.key.fingerprint(open))
            .await;
        // A store that cannot say signs nobody in: fail closed.
        if !matches!(ended, Ok(false)) {
            session = None;
        }
    }
    if let Some(open) = &session {
        request.extensions_mut().insert(open.clone());
    }
    request.extensions_mut().insert(Secure(secure));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Some(open) = &session {
        if !headers.contains_key(header::SET_COOKIE) {
            let value = console.key.cookie_value(open, now);
            if let Ok(cookie) =
                HeaderValue::from_str(&set_cookie(Some(&value), settings.idle_timeout, secure))
            {
                headers.insert(header::SET_COOKIE, cookie);
            }
        }
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// The value of cookie `name`, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A signed-in operator: the session and its form token.
struct Operator {
    session: Session,
    csrf: String,
}

/// Why a console request is refused before its handler runs.
enum Refusal {
    /// Not signed in (or the session ended): to the sign-in page.
    SignIn,
    /// A form without this session's token.
    Forged,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn => Redirect::to("/console/sign-in").into_response(),
            Self::Forged => respond(
                StatusCode::FORBIDDEN,
                page(
                    "Form refused",
                    None,
                    alert(
                        "This form did not come from your console session (its form token is \
                         missing or wrong). Nothing was changed. Open the page again and retry.",
                    ),
                ),
            ),
        }
    }
}

impl axum::extract::FromRequestParts<ApiState> for Operator {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(Refusal::SignIn)?;
        let console = parts
            .extensions
            .get::<Arc<Console>>()
            .cloned()
            .ok_or(Refusal::SignIn)?;
        let csrf = console.key.csrf_token(&session);
        Ok(Self { session, csrf })
    }
}

impl Operator {
    /// Refuses a form whose token is not this session's.
    fn check(&self, form: &HashMap<String, String>) -> Result<(), Refusal> {
        let presented = form.get("csrf").map(String::as_str).unwrap_or_default();
        if subtle::ConstantTimeEq::ct_eq(self.csrf.as_bytes(), presented.as_bytes()).into() {
            Ok(())
        } else {
            Err(Refusal::Forged)
        }
    }
}

/// An error of a use case, as a page: the status and the message the API would give.
fn failure(title: &str, csrf: &str, error: AppError) -> Response {
    let rendered = ApiError::App(error).render();
    respond(
        rendered.status,
        page(title, Some(csrf), alert(&rendered.detail)),
    )
}

fn invalid(title: &str, csrf: &str, error: InvalidValue) -> Response {
    failure(title, csrf, AppError::from(error))
}

fn audit(state: &ApiState) -> Result<&Audit, AppError> {
    state
        .audit
        .as_deref()
        .ok_or_else(|| AppError::Unavailable("the audit log".into()))
}

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, media: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, media),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
        .into_response()
}

// ---- sign-in -------------------------------------------------------------------

fn sign_in_page(status: StatusCode, token: &str, message: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            @if let Some(message) = message { (alert(message)) }
            p { "Sign in with the service's admin token (the embedded default writes it to "
                code { "data/admin.token" } ")." }
            form.stack method="post" action="/console/sign-in" {
                input type="hidden" name="csrf" value=(token);
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password"
                    required autofocus aria-describedby="token-help"
                    aria-invalid=(if status.is_success() { "false" } else { "true" });
                p #token-help.help { "The session ends after a period without use, or when you sign out." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

async fn sign_in_form(
    Extension(console): Extension<Arc<Console>>,
    Extension(Secure(secure)): Extension<Secure>,
    session: Option<Extension<Session>>,
) -> Response {
    if session.is_some() {
        return Redirect::to("/console").into_response();
    }
    // Bind the form to this browser: a page of another site cannot post it.
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let token = console.key.csrf_token(&sign_in_session(&nonce));
    let mut response = respond(StatusCode::OK, sign_in_page(StatusCode::OK, &token, None));
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{SIGN_IN_COOKIE}={nonce}; Path=/console/sign-in; Max-Age=1800; HttpOnly; SameSite=Strict{secure}"
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The sign-in form's token is that of a pseudo-session named by the nonce.
fn sign_in_session(nonce: &str) -> Session {
    Session::named(&format!("sign-in:{nonce}"))
}

async fn sign_in(
    State(state): State<ApiState>,
    Extension(console): Extension<Arc<Console>>,
    Extension(Secure(secure)): Extension<Secure>,
    origin: Origin,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let nonce = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    let presented = form.get("csrf").map(String::as_str).unwrap_or_default();
    let retry_token = console.key.csrf_token(&sign_in_session(nonce));
    if nonce.is_empty() || !console.key.csrf_matches(&sign_in_session(nonce), presented) {
        return Refusal::Forged.into_response();
    }
    let Some(expected) = state.config.admin_token.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let token = form.get("token").map(String::as_str).unwrap_or_default();
    let ctx = origin.context(Actor::Console);
    match state
        .auth
        .check_operator_secret(&ctx, || expected.matches(token))
        .await
    {
        Ok(()) => {
            let now = state.auth.now();
            let session = console.key.start(now);
            let value = console.key.cookie_value(&session, now);
            tracing::info!("console: an operator signed in");
            let mut response = Redirect::to("/console").into_response();
            let idle = state.config.console.idle_timeout;
            if let Ok(cookie) = HeaderValue::from_str(&set_cookie(Some(&value), idle, secure)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(error) => {
            let rendered = ApiError::App(error).render();
            let message = match rendered.status {
                StatusCode::UNAUTHORIZED => {
                    "That is not the admin token. Failed attempts are limited per address."
                        .to_owned()
                }
                _ => rendered.detail,
            };
            respond(
                rendered.status,
                sign_in_page(rendered.status, &retry_token, Some(&message)),
            )
        }
    }
}

async fn sign_out(
    State(state): State<ApiState>,
    Extension(console): Extension<Arc<Console>>,
    Extension(Secure(secure)): Extension<Secure>,
    operator: Operator,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = operator.check(&form) {
        return refusal.into_response();
    }
    let session = &operator.session;
    if let Err(error) = state
        .auth
        .end_operator_session(&console.key.fingerprint(session), session.hard_end())
        .await
    {
        return failure("Sign out", &operator.csrf, error);
    }
    tracing::info!("console: an operator signed out");
    let mut response = Redirect::to("/console/sign-in").into_response();
    let idle = state.config.console.idle_timeout;
    if let Ok(cookie) = HeaderValue::from_str(&set_cookie(None, idle, secure)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

// ---- overview ------------------------------------------------------------------

async fn overview(
    State(state): State<ApiState>,
    Extension(console): Extension<Arc<Console>>,
    operator: Operator,
) -> Response {
    let now = state.auth.now();
    let minutes = state.metrics.logins_per_minute(now);
    let totals = minutes.iter().fold([0u64; 3], |mut sum, m| {
        for (s, c) in sum.iter_mut().zip(m.counts) {
            *s += c;
        }
        sum
    });
    let health = state.readiness.check().await;
    let (lag, checkpoint) = match audit(&state) {
        Ok(audit) => (
            audit.projection_lag().await.ok(),
            audit.latest_checkpoint().await.ok().flatten(),
        ),
        Err(_) => (None, None),
    };
    let last = console
        .last_verify
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let body = html! {
        section aria-labelledby="logins-heading" {
            h2 #logins-heading { "Logins per minute, last hour" }
            (charts::logins_chart(&minutes))
            ul.legend aria-label="Legend and totals" {
                @for (outcome, total) in crate::LoginOutcome::ALL.iter().zip(totals) {
                    li { span class={"swatch o-" (outcome.label())} aria-hidden="true" {} (outcome.label()) ": " (total) }
                }
            }
            p.help { "Counted by this instance since it started (each instance counts its own), in UTC." }
        }
        section aria-labelledby="health-heading" {
            h2 #health-heading { "Health" }
            dl.facts {
                dt { "Store" }
                dd { @match &health { Ok(()) => span.ok { "answering" }, Err(why) => span.bad { "not answering: " (why) } } }
                dt { "Projection lag" }
                dd { @match lag { Some(0) => span.ok { "0 events (read models are current)" },
                                  Some(n) => span.bad { (n) " events not yet projected" },
                                  None => span.bad { "unknown (the log could not be read)" } } }
                dt { "Last verify from this console" }
                dd { @match &last {
                    Some((at, report)) if report.is_clean() => span.ok { "clean, " (report.events) " events, at " (when(*at)) },
                    Some((at, report)) => span.bad { (report.findings.len()) " finding(s) at " (when(*at)) },
                    None => "not run since this instance started",
                } " · " a href="/console/verify" { "Run verify" } }
                dt { "Newest checkpoint" }
                dd { @match &checkpoint {
                    Some(cp) => { "position " (cp.position) ", " (cp.events) " events, recorded " (when(cp.created_at)) " (by a clean verify or " code { "audit checkpoint" } ")" },
                    None => "none yet",
                } }
            }
        }
    };
    respond(StatusCode::OK, page("Overview", Some(&operator.csrf), body))
}

// ---- search --------------------------------------------------------------------

/// A phone number as typed: digits (mainland China, +86), or `+CC` then the number.
fn parse_phone(text: &str) -> Result<PhoneNumber, InvalidValue> {
    let compact: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    match text.trim().strip_prefix('+') {
        Some(rest) => {
            let (cc, number) = rest
                .trim()
                .split_once([' ', '-'])
                .ok_or_else(|| InvalidValue::new("phone", "write +CC, a space, then the number"))?;
            let number: String = number
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
                .collect();
            PhoneNumber::new(&number, cc)
        }
        None => PhoneNumber::new(&compact, "86"),
    }
}

fn user_query(kind: &str, q: &str) -> Result<UserQuery, InvalidValue> {
    match kind {
        "account" => {
            let account = q.trim();
            if account.is_empty() || account.chars().count() > 64 {
                return Err(InvalidValue::new("account", "must be 1 to 64 characters"));
            }
            Ok(UserQuery::Account(account.to_owned()))
        }
        "phone" => parse_phone(q).map(UserQuery::Phone),
        _ => UserId::parse(q.trim()).map(UserQuery::Id),
    }
}

fn status_word(status: UserStatus) -> &'static str {
    match status {
        UserStatus::Active => "active",
        UserStatus::Disabled => "disabled",
    }
}

fn search_forms(state: &ApiState, csrf: &str, params: &HashMap<String, String>) -> Markup {
    let kind = params.get("kind").map(String::as_str).unwrap_or("user_id");
    let mut appids: Vec<&AppId> = state.auth.apps().iter().map(|app| &app.appid).collect();
    appids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    // A phone number typed is not written back into the page: the page shows it masked.
    let q = match kind {
        "phone" => "",
        _ => params.get("q").map(String::as_str).unwrap_or_default(),
    };
    html! {
        section aria-labelledby="find-user" {
            h2 #find-user { "Find a user" }
            // Posted, with the form token: a phone number in a URL would stay in the
            // browser's history and the proxies' logs.
            form.row method="post" action="/console/search" {
                (csrf_field(csrf))
                label for="kind" { "Search by" }
                select #kind name="kind" {
                    @for (value, label) in [("user_id", "User id"), ("account", "Account name"), ("phone", "Full phone number")] {
                        option value=(value) selected[kind == value] { (label) }
                    }
                }
                label for="q" { "Value" }
                input #q type="search" name="q" value=(q) required aria-describedby="q-help";
                button type="submit" { "Find" }
            }
            p #q-help.help { "Exact match. A phone number is all its digits (+86 assumed), or +CC, a space and the number; it is shown masked." }
        }
        section aria-labelledby="find-identity" {
            h2 #find-identity { "Find a WeChat identity" }
            form.row method="get" action="/console/search" {
                input type="hidden" name="kind" value="identity";
                label for="appid" { "App" }
                select #appid name="appid" {
                    @for appid in &appids {
                        option value=(appid) selected[params.get("appid").map(String::as_str) == Some(appid.as_str())] { (appid) }
                    }
                }
                label for="openid" { "OpenID" }
                input #openid type="text" name="openid" required value=(params.get("openid").map(String::as_str).unwrap_or_default());
                button type="submit" { "Open" }
            }
        }
    }
}

/// The search page, and a search by link: an identity, a user id or an account name.
/// A phone number is searched only by the posted form: one in a URL is refused, and
/// not looked up.
async fn search(
    State(state): State<ApiState>,
    operator: Operator,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let phone_in_url = params.get("kind").map(String::as_str) == Some("phone")
        && params.get("q").is_some_and(|q| !q.trim().is_empty());
    if phone_in_url {
        let forms = search_forms(&state, &operator.csrf, &HashMap::new());
        let body = html! {
            (alert("A phone number is searched with the form (it is posted, so that it stays out of the address bar, the history and the logs). Type it again below."))
            (forms)
        };
        return respond(
            StatusCode::BAD_REQUEST,
            page("Search", Some(&operator.csrf), body),
        );
    }
    search_page(&state, &operator, &params).await
}

/// The user search form, posted with the session's form token.
async fn search_posted(
    State(state): State<ApiState>,
    operator: Operator,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = operator.check(&form) {
        return refusal.into_response();
    }
    search_page(&state, &operator, &form).await
}

async fn search_page(
    state: &ApiState,
    operator: &Operator,
    params: &HashMap<String, String>,
) -> Response {
    let title = "Search";
    let forms = search_forms(state, &operator.csrf, params);
    let kind = params.get("kind").map(String::as_str).unwrap_or_default();
    if kind == "identity" {
        let appid = params.get("appid").map(String::as_str).unwrap_or_default();
        let openid = params.get("openid").map(String::as_str).unwrap_or_default();
        return match (AppId::parse(appid), OpenId::parse(openid.trim())) {
            (Ok(appid), Ok(openid)) => {
                Redirect::to(&format!("/console/accounts/{appid}/{openid}")).into_response()
            }
            (Err(e), _) | (_, Err(e)) => {
                let body = html! { (alert(&format!("{}: {}", e.field, e.reason))) (forms) };
                respond(
                    StatusCode::BAD_REQUEST,
                    page(title, Some(&operator.csrf), body),
                )
            }
        };
    }
    let Some(q) = params.get("q").filter(|q| !q.trim().is_empty()) else {
        return respond(StatusCode::OK, page(title, Some(&operator.csrf), forms));
    };
    let query = match user_query(kind, q) {
        Ok(query) => query,
        Err(e) => {
            let body = html! { (alert(&format!("{}: {}", e.field, e.reason))) (forms) };
            return respond(
                StatusCode::BAD_REQUEST,
                page(title, Some(&operator.csrf), body),
            );
        }
    };
    let users = match state.auth.find_users(&query).await {
        Ok(users) => users,
        Err(error) => return failure(title, &operator.csrf, error),
    };
    let body = html! {
        (forms)
        section aria-labelledby="results" aria-live="polite" {
            h2 #results { "Users found: " (users.len()) }
            @if users.is_empty() {
                p { "No user matches exactly." }
            } @else {
                table {
                    caption.visually-hidden { "Users matching the search" }
                    thead { tr { th scope="col" { "User" } th scope="col" { "Tenant" } th scope="col" { "Account" } th scope="col" { "Phone" } th scope="col" { "Status" } } }
                    tbody {
                        @for user in &users {
                            tr {
                                td { a href={"/console/users/" (user.id)} { "User " (user.id) } }
                                td { (user.tenant) }
                                td { (user.account.as_deref().unwrap_or("—")) }
                                td { (user.mobile.as_ref().map(|m| m.masked()).unwrap_or_else(|| "—".into())) }
                                td { (status_word(user.status)) }
                            }
                        }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, page(title, Some(&operator.csrf), body))
}

// ---- a user's page -------------------------------------------------------------

/// An instant typed in the `as of` control (`2026-03-01T08:00[:00]`, UTC) or written
/// as RFC 3339.
fn parse_as_of(text: &str) -> Result<DateTime<Utc>, InvalidValue> {
    let text = text.trim();
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(naive.and_utc());
        }
    }
    parse_instant("as_of", text)
}

fn done_notice(params: &HashMap<String, String>) -> Option<Markup> {
    let text = match params.get("done").map(String::as_str)? {
        "disabled" => "The user is disabled and every session they held has ended.",
        "enabled" => "The user is enabled. Their old sessions stay ended.",
        "unbound" => "The binding has ended; the log records it with your reason.",
        "erased" => "The identity's personal data is erased.",
        _ => return None,
    };
    Some(notice(text))
}

fn bindings_table(caption: &str, bindings: &[BindingAt]) -> Markup {
    html! {
        @if bindings.is_empty() {
            p { "No binding." }
        } @else {
            table {
                caption.visually-hidden { (caption) }
                thead { tr { th scope="col" { "App" } th scope="col" { "OpenID" } th scope="col" { "Since" } th scope="col" { "Via" } } }
                tbody {
                    @for b in bindings {
                        tr {
                            td { (b.appid) }
                            td { a href={"/console/accounts/" (b.appid) "/" (b.openid)} { (b.openid) } }
                            td { (when(b.span.bound_at)) }
                            td { (serde_json::to_value(b.span.via).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

fn user_facts(user: Option<&UserRecord>) -> Markup {
    html! {
        @match user {
            Some(user) => dl.facts {
                dt { "Tenant" } dd { (user.tenant) }
                dt { "Account" } dd { (user.account.as_deref().unwrap_or("—")) }
                dt { "Phone" } dd { (user.mobile.as_ref().map(|m| m.masked()).unwrap_or_else(|| "—".into())) }
                dt { "Status" } dd { (status_word(user.status)) }
            },
            None => p { "The user directory has no user with this id (the log still tells its bindings)." },
        }
    }
}

async fn user_page(
    State(state): State<ApiState>,
    operator: Operator,
    Path(user_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let csrf = &operator.csrf;
    let title = format!("User {user_id}");
    let user = match UserId::parse(&user_id) {
        Ok(user) => user,
        Err(e) => return invalid(&title, csrf, e),
    };
    let now = state.auth.now();
    let as_of = match params.get("as_of").filter(|t| !t.trim().is_empty()) {
        None => None,
        Some(text) => match parse_as_of(text) {
            Ok(at) => Some(at),
            Err(e) => return invalid(&title, csrf, e),
        },
    };
    let audit = match audit(&state) {
        Ok(audit) => audit,
        Err(e) => return failure(&title, csrf, e),
    };
    let record = match state.auth.find_users(&UserQuery::Id(user)).await {
        Ok(found) => found.into_iter().next(),
        Err(e) => return failure(&title, csrf, e),
    };
    let current = audit.user_bindings(user, Some(now)).await;
    let then = audit.user_bindings(user, Some(as_of.unwrap_or(now))).await;
    let histories = audit.user_histories(user).await;
    let (current, then, histories) = match (current, then, histories) {
        (Ok(c), Ok(t), Ok(h)) => (c, t, h),
        (Err(e), _, _) | (_, Err(e), _) => return failure(&title, csrf, e.into()),
        (_, _, Err(e)) => return failure(&title, csrf, e),
    };
    if record.is_none() && histories.is_empty() {
        return failure(&title, csrf, AppError::UserNotFound);
    }
    let as_of_value = as_of.unwrap_or(now);
    let events = charts::timeline_events(&histories);
    let body = html! {
        @if let Some(done) = done_notice(&params) { (done) }
        (user_facts(record.as_ref()))
        @if let Some(record) = &record {
            @let (action, label) = match record.status {
                UserStatus::Active => ("disable", "Disable user (ends every session)"),
                UserStatus::Disabled => ("enable", "Enable user"),
            };
            form.inline method="post" action={"/console/users/" (user) "/" (action)} {
                (csrf_field(csrf))
                button type="submit" { (label) }
            }
        }
        section aria-labelledby="current-heading" {
            h2 #current-heading { "Current bindings" }
            (bindings_table("Bindings now", &current.bindings))
        }
        section aria-labelledby="timeline-heading" {
            h2 #timeline-heading { "Binding history" }
            form.row method="get" action={"/console/users/" (user)} {
                label for="as_of" { "As of (UTC)" }
                input #as_of type="datetime-local" step="0.001" name="as_of" value=(instant_param(as_of_value)) aria-describedby="as-of-help";
                button type="submit" { "Show" }
                a href={"/console/users/" (user)} { "Now" }
            }
            p #as-of-help.help { "The bindings as they stood at that instant, replayed from the log as the audit API does. Each mark on the timeline is also a link to its instant." }
            (charts::timeline(user.get(), &histories, as_of_value, now))
            ul.legend aria-label="Timeline legend" {
                li { span.swatch.span-this aria-hidden="true" {} "bound to this user" }
                li { span.swatch.span-other aria-hidden="true" {} "bound to another user" }
                li { "● bound, ◆ linked by unionid, ■ unbound, ✕ erased" }
            }
            h3 #asof-heading { "Bindings as of " (when(as_of_value)) }
            (bindings_table(&format!("Bindings as of {}", when(as_of_value)), &then.bindings))
            h3 { "Events" }
            @if events.is_empty() {
                p { "The log never bound this user." }
            } @else {
                table.events {
                    caption.visually-hidden { "Binding events of this user's identities, oldest first" }
                    thead { tr { th scope="col" { "When" } th scope="col" { "What" } th scope="col" { "Identity" } th scope="col" { "User" } th scope="col" { "Via / reason" } th scope="col" { "Note" } th scope="col" { "By" } } }
                    tbody {
                        @for e in &events {
                            tr {
                                td { a href={"?as_of=" (instant_param(e.at))} { (when(e.at)) } }
                                td { (e.what) }
                                td { (e.account) }
                                td { (e.user.map(|u| u.to_string()).unwrap_or_default()) }
                                td { (e.via.as_deref().unwrap_or("")) }
                                td { (e.note.as_deref().unwrap_or("")) }
                                td { (e.actor.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    };
    respond(StatusCode::OK, page(&title, Some(csrf), body))
}

async fn set_status(
    state: ApiState,
    operator: Operator,
    user_id: String,
    form: HashMap<String, String>,
    disable: bool,
) -> Response {
    if let Err(refusal) = operator.check(&form) {
        return refusal.into_response();
    }
    let title = format!("User {user_id}");
    let user = match UserId::parse(&user_id) {
        Ok(user) => user,
        Err(e) => return invalid(&title, &operator.csrf, e),
    };
    let done = if disable {
        state.auth.disable_user(user).await.map(|_| "disabled")
    } else {
        state.auth.enable_user(user).await.map(|_| "enabled")
    };
    match done {
        Ok(done) => {
            tracing::info!(%user, done, "console: user status changed");
            Redirect::to(&format!("/console/users/{user}?done={done}")).into_response()
        }
        Err(e) => failure(&title, &operator.csrf, e),
    }
}

async fn disable(
    State(state): State<ApiState>,
    operator: Operator,
    Path(user_id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    set_status(state, operator, user_id, form, true).await
}

async fn enable(
    State(state): State<ApiState>,
    operator: Operator,
    Path(user_id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    set_status(state, operator, user_id, form, false).await
}

// ---- an account's page ---------------------------------------------------------

fn account_ids(appid: &str, openid: &str) -> Result<(AppId, OpenId), InvalidValue> {
    Ok((AppId::parse(appid)?, OpenId::parse(openid)?))
}

/// The user an account's history leaves it bound to.
fn bound_user(history: &AccountHistory) -> Option<i64> {
    let mut bound = None;
    for event in &history.events {
        match event.event_type.as_str() {
            "UserBound" => bound = event.user_id,
            "Unbound" => bound = None,
            _ => {}
        }
    }
    bound
}

async fn account_page(
    State(state): State<ApiState>,
    operator: Operator,
    Path((appid, openid)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let csrf = &operator.csrf;
    let title = "WeChat identity";
    let (appid, openid) = match account_ids(&appid, &openid) {
        Ok(ids) => ids,
        Err(e) => return invalid(title, csrf, e),
    };
    let history = match audit(&state) {
        Ok(audit) => audit.history(&appid, &openid).await,
        Err(e) => Err(e),
    };
    let history = match history {
        Ok(history) => history,
        Err(e) => return failure(title, csrf, e),
    };
    let bound = bound_user(&history);
    let erased = history
        .events
        .iter()
        .any(|e| e.event_type == "PersonalDataErased");
    let base = format!("/console/accounts/{appid}/{openid}");
    let body = html! {
        @if let Some(done) = done_notice(&params) { (done) }
        dl.facts {
            dt { "App" } dd { (appid) }
            dt { "OpenID" } dd { (openid) }
            dt { "Bound to" } dd { @match bound { Some(user) => a href={"/console/users/" (user)} { "User " (user) }, None => "nobody" } }
            dt { "Personal data" } dd { (if erased { "erased" } else { "kept (shown masked)" }) }
        }
        section aria-labelledby="history-heading" {
            h2 #history-heading { "Event history" }
            table.events {
                caption.visually-hidden { "Every event of this identity, oldest first; personal data masked" }
                thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "Details" } th scope="col" { "By" } } }
                tbody {
                    @for e in &history.events {
                        tr {
                            td { (e.sequence) }
                            td { (when(e.occurred_at)) }
                            td { (e.event_type) }
                            td {
                                @for (name, value) in [("user", e.user_id.map(|u| u.to_string())), ("via", e.via.clone()), ("reason", e.reason.clone()), ("note", e.note.clone()),
                                                       ("linked from", e.linked_from.clone()), ("session", e.session_seq.map(|s| s.to_string())), ("unionid", e.unionid.clone()),
                                                       ("phone", e.phone.clone()), ("nickname", e.nickname.clone()), ("client", e.client_ip.clone())] {
                                    @if let Some(value) = value { span.kv { (name) " " strong { (value) } } " " }
                                }
                            }
                            td { (e.actor.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        @if bound.is_some() {
            section aria-labelledby="unbind-heading" {
                h2 #unbind-heading { "Unbind" }
                form.stack method="post" action={(base) "/unbind"} {
                    (csrf_field(csrf))
                    label for="reason" { "Reason (recorded in the log)" }
                    select #reason name="reason" required {
                        option value="" { "Choose a reason…" }
                        @for reason in OperatorReason::ALL {
                            option value=(reason.as_str()) { (reason.label()) }
                        }
                    }
                    button type="submit" { "Unbind and end this app's sessions" }
                }
            }
        }
        @if !erased {
            section aria-labelledby="erase-heading" {
                h2 #erase-heading { "Erase personal data" }
                p { "Destroys this identity's data key: its phone, nickname, unionid and addresses become unreadable for good. The history stays, and still verifies." }
                form.stack.danger method="post" action={(base) "/erase"} {
                    (csrf_field(csrf))
                    label for="confirm" { "Type the OpenID " code { (openid) } " to confirm" }
                    input #confirm type="text" name="confirm" required autocomplete="off" data-must-equal=(openid) aria-describedby="confirm-help";
                    p #confirm-help.help { "This cannot be undone." }
                    button type="submit" { "Erase" }
                }
            }
        }
    };
    respond(StatusCode::OK, page(title, Some(csrf), body))
}

async fn unbind(
    State(state): State<ApiState>,
    operator: Operator,
    origin: Origin,
    Path((appid, openid)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = operator.check(&form) {
        return refusal.into_response();
    }
    let title = "Unbind";
    let (appid, openid) = match account_ids(&appid, &openid) {
        Ok(ids) => ids,
        Err(e) => return invalid(title, &operator.csrf, e),
    };
    let reason = match form
        .get("reason")
        .map(String::as_str)
        .unwrap_or_default()
        .parse::<OperatorReason>()
    {
        Ok(reason) => reason,
        Err(e) => return invalid(title, &operator.csrf, e),
    };
    let ctx = origin.context(Actor::Console);
    match state
        .auth
        .unbind_identity(&ctx, &appid, &openid, reason)
        .await
    {
        Ok(user) => {
            tracing::info!(%appid, %user, %reason, "console: identity unbound");
            Redirect::to(&format!("/console/accounts/{appid}/{openid}?done=unbound"))
                .into_response()
        }
        Err(e) => failure(title, &operator.csrf, e),
    }
}

async fn erase(
    State(state): State<ApiState>,
    operator: Operator,
    origin: Origin,
    Path((appid, openid)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = operator.check(&form) {
        return refusal.into_response();
    }
    let title = "Erase";
    let (appid, openid) = match account_ids(&appid, &openid) {
        Ok(ids) => ids,
        Err(e) => return invalid(title, &operator.csrf, e),
    };
    let confirm = form.get("confirm").map(|c| c.trim()).unwrap_or_default();
    if confirm != openid.as_str() {
        let error = InvalidValue::new("confirm", "must be the OpenID, typed exactly");
        return invalid(title, &operator.csrf, error);
    }
    if state.auth.apps().get(&appid).is_none() {
        return failure(title, &operator.csrf, AppError::UnknownApp);
    }
    let ctx = origin.context(Actor::Console);
    match state.auth.erase(&ctx, &appid, &openid).await {
        Ok(()) => {
            tracing::info!(%appid, "console: an account's personal data erased");
            Redirect::to(&format!("/console/accounts/{appid}/{openid}?done=erased")).into_response()
        }
        Err(e) => failure(title, &operator.csrf, e),
    }
}

// ---- verify --------------------------------------------------------------------

fn verify_body(csrf: &str, last: Option<&(DateTime<Utc>, VerifyReport)>) -> Markup {
    html! {
        p { "Checks every event against its account's hash chain and the checkpoints: whether any event was edited, deleted, inserted or reordered since it was written. A clean run records a checkpoint." }
        form.inline method="post" action="/console/verify" {
            (csrf_field(csrf))
            button type="submit" { "Run verify now" }
        }
        @if let Some((at, report)) = last {
            section #report aria-labelledby="report-heading" aria-live="polite" {
                h2 #report-heading { "Result at " (when(*at)) }
                p { (report.events) " events in " (report.streams) " streams: " (report.chained) " chained, "
                    (report.legacy) " legacy (written before the chain); " (report.checkpoints_checked) " checkpoint(s) compared." }
                @if report.is_clean() && !report.is_complete() {
                    p.verdict role="status" { "NOT YET VERIFIABLE: nothing was found in the log read, but " (report.not_yet_verifiable.len()) " checkpoint(s) lie past what was final (a transaction in flight holds the log's safe horizon back). Run verify again." }
                } @else if report.is_clean() {
                    p.ok.verdict role="status" { "OK: no event was edited, deleted, inserted or reordered." }
                    @if let Some(cp) = &report.checkpoint {
                        p { "New checkpoint at position " (cp.position) "." }
                    }
                } @else {
                    p.bad.verdict role="alert" { "TAMPERING FOUND: " (report.findings.len()) " finding(s)." }
                    table {
                        caption { "What failed, and why" }
                        thead { tr { th scope="col" { "What" } th scope="col" { "Identity" } th scope="col" { "Sequence" } th scope="col" { "Position" } th scope="col" { "Why" } } }
                        tbody {
                            @for f in &report.findings {
                                tr.finding {
                                    td { (f.kind.as_str()) }
                                    td { @match &f.aggregate_id {
                                        Some(id) => @match id.split_once(':') {
                                            Some((appid, openid)) => a href={"/console/accounts/" (appid) "/" (openid)} { (id) },
                                            None => (id),
                                        },
                                        None => "—",
                                    } }
                                    td { (f.sequence.map(|s| s.to_string()).unwrap_or_else(|| "—".into())) }
                                    td { (f.position.map(|p| p.to_string()).unwrap_or_else(|| "—".into())) }
                                    td { (f.detail) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn verify_page(Extension(console): Extension<Arc<Console>>, operator: Operator) -> Response {
    let last = console
        .last_verify
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    respond(
        StatusCode::OK,
        page(
            "Verify the log",
            Some(&operator.csrf),
            verify_body(&operator.csrf, last.as_ref()),
        ),
    )
}

async fn verify(
    State(state): State<ApiState>,
    Extension(console): Extension<Arc<Console>>,
    operator: Operator,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = operator.check(&form) {
        return refusal.into_response();
    }
    let title = "Verify the log";
    let report = match audit(&state) {
        Ok(audit) => audit.verify().await.map_err(AppError::from),
        Err(e) => Err(e),
    };
    let report = match report {
        Ok(report) => report,
        Err(e) => return failure(title, &operator.csrf, e),
    };
    tracing::info!(
        clean = report.is_clean(),
        findings = report.findings.len(),
        "console: verify ran"
    );
    let run = (state.auth.now(), report);
    *console
        .last_verify
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(run.clone());
    let status = if run.1.is_clean() {
        StatusCode::OK
    } else {
        // The page is the answer either way; the status tells scripts.
        StatusCode::CONFLICT
    };
    respond(
        status,
        page(
            title,
            Some(&operator.csrf),
            verify_body(&operator.csrf, Some(&run)),
        ),
    )
}

/// The subscriptions (each of one tenant), then the parked webhook deliveries (out of
/// attempts; each holds its subscription back) with a retry button each, as
/// `miniauth webhooks parked|retry` gives them.
fn webhooks_body(
    csrf: &str,
    delivery: Option<&WebhookDelivery>,
    parked: &[ParkedDelivery],
) -> Markup {
    html! {
        @if let Some(delivery) = delivery {
            table.subscriptions {
                caption { "Subscriptions: each receives the events of its tenant's apps only" }
                thead { tr {
                    th scope="col" { "Subscription" } th scope="col" { "Tenant" }
                    th scope="col" { "Apps" } th scope="col" { "Events" }
                    th scope="col" { "Personal data" }
                } }
                tbody {
                    @for s in delivery.subscriptions() {
                        tr {
                            td { (s.id) }
                            td.tenant { (s.tenant.as_str()) }
                            td { @for (i, appid) in s.apps.iter().enumerate() {
                                @if i > 0 { ", " } code { (appid.as_str()) }
                            } }
                            td { @for (i, event) in s.events.iter().enumerate() {
                                @if i > 0 { ", " } (event.as_str())
                            } }
                            td { @if s.personal_data { "yes" } @else { "no" } }
                        }
                    }
                }
            }
        }
        @if delivery.is_none() {
            p { "No webhook subscriptions are configured (" code { "[[webhooks]]" } ")." }
        } @else if parked.is_empty() {
            p.ok role="status" { "No delivery is parked: every subscription follows the log." }
        } @else {
            p { "A delivery that ran out of attempts is parked, and its subscription waits for it (so that no account's events arrive out of order). Retry it once the receiver is back." }
            table {
                caption { "Parked deliveries, oldest first" }
                thead { tr {
                    th scope="col" { "Webhook id" } th scope="col" { "Subscription" }
                    th scope="col" { "Event" } th scope="col" { "Identity" }
                    th scope="col" { "Attempts" } th scope="col" { "Last error" }
                    th scope="col" { "Parked at" } th scope="col" { "Action" }
                } }
                tbody {
                    @for d in parked {
                        tr.parked {
                            td { code { (d.webhook_id) } }
                            td { (d.subscription) }
                            td { (d.event_type) " (position " (d.position) ")" }
                            td { @match d.account.split_once(':') {
                                Some((appid, openid)) => a href={"/console/accounts/" (appid) "/" (openid)} { (d.account) },
                                None => (d.account),
                            } }
                            td { (d.attempts) }
                            td { (d.last_error) }
                            td { (when(d.parked_at)) }
                            td {
                                form.inline method="post" action="/console/webhooks/retry" {
                                    (csrf_field(csrf))
                                    input type="hidden" name="webhook_id" value=(d.webhook_id);
                                    button type="submit" aria-label={"Retry " (d.webhook_id)} { "Retry now" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn webhooks_page(State(state): State<ApiState>, operator: Operator) -> Response {
    webhooks_answer(&state, &operator.csrf, None).await
}

/// The webhooks page, after `message` if any.
async fn webhooks_answer(state: &ApiState, csrf: &str, message: Option<Markup>) -> Response {
    let title = "Webhooks";
    let delivery = state.webhooks.as_deref();
    let parked = match delivery {
        Some(delivery) => match delivery.parked().await {
            Ok(parked) => parked,
            Err(e) => return failure(title, csrf, e),
        },
        None => Vec::new(),
    };
    let body = html! {
        @if let Some(message) = message { (message) }
        (webhooks_body(csrf, delivery, &parked))
    };
    respond(StatusCode::OK, page(title, Some(csrf), body))
}

async fn webhook_retry(
    State(state): State<ApiState>,
    operator: Operator,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refusal) = operator.check(&form) {
        return refusal.into_response();
    }
    let Some(delivery) = state.webhooks.as_deref() else {
        return webhooks_answer(&state, &operator.csrf, None).await;
    };
    let id = form.get("webhook_id").map(String::as_str).unwrap_or("");
    let message = match delivery.retry(id).await {
        Ok(true) => {
            tracing::info!(webhook_id = id, "console: parked webhook delivery retried");
            notice("Retried: the delivery is due again, and its subscription goes on from it.")
        }
        Ok(false) => alert("No parked delivery has this id (it may have been retried already)."),
        Err(e) => return failure("Webhooks", &operator.csrf, e),
    };
    webhooks_answer(&state, &operator.csrf, Some(message)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_parse_as_typed() {
        let cn = parse_phone("138 0000 0001").unwrap();
        assert_eq!((cn.pure(), cn.country_code()), ("13800000001", "86"));
        let us = parse_phone("+1 415-555-0100").unwrap();
        assert_eq!((us.pure(), us.country_code()), ("4155550100", "1"));
        assert!(parse_phone("+8613800000001").is_err());
        assert!(parse_phone("abc").is_err());
    }

    #[test]
    fn as_of_takes_the_control_s_format_and_rfc_3339() {
        let a = parse_as_of("2026-03-01T08:00").unwrap();
        let b = parse_as_of("2026-03-01T08:00:00").unwrap();
        let ms = parse_as_of("2026-03-01T08:00:00.250").unwrap();
        assert_eq!((ms - b).num_milliseconds(), 250);
        let c = parse_as_of("2026-03-01T16:00:00+08:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert!(parse_as_of("yesterday").is_err());
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("miniauth_console_signin=n; miniauth_console=s"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("s"));
        assert_eq!(cookie(&headers, SIGN_IN_COOKIE), Some("n"));
        assert_eq!(cookie(&headers, "other"), None);
    }
}
