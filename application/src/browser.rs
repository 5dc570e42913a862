//! The browser logins of an Official Account (web authorisation) and a website (QR
//! login): `authorize` sends the browser to WeChat with a `state` bound to it (a signed
//! state and an httpOnly cookie, RFC 9700's CSRF defence), `callback` checks the state
//! (signed, unexpired, this browser's, used once), logs the person in with the code and
//! sends the browser back to the app's allowed `redirect_uri` with a one-time result
//! handle, never a token; `results` exchanges the handle, once, for the login's answer.
//!
//! Stateless across instances: the state is signed with the ticket key and its single
//! use is a usage counter in the store; the result handle is a short-lived ticket whose
//! single use is the ticket-exchange counter.

use chrono::Duration;
use miniauth_domain::{AccountId, Channel, InvalidValue, OneTimeCode};

use crate::context::RequestContext;
use crate::error::AppError;
use crate::login::LoginOutcome;
use crate::ports::{BrowserState, TicketError, UsageKey};
use crate::service::MiniAuth;
use crate::settings::AppSettings;

/// How long a browser has from `authorize` to the callback (WeChat's consent page, or
/// scanning the QR code, included).
pub const STATE_LIFETIME: Duration = Duration::minutes(10);

/// How long the front end has to exchange a result handle.
pub const RESULT_LIFETIME: Duration = Duration::minutes(2);

/// Where `authorize` sends the browser, and what binds the flow to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserStart {
    /// WeChat's consent page (with our callback and the state).
    pub location: String,
    /// The secret of the browser's cookie (redacted in `Debug`).
    pub browser_key: BrowserKey,
    /// How long the cookie must live.
    pub max_age_secs: i64,
}

/// The cookie value binding a state to its browser. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct BrowserKey(pub String);

impl std::fmt::Debug for BrowserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrowserKey(<redacted>)")
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The scope of a browser login of `kind`: an Official Account's `snsapi_userinfo`
/// (default) or `snsapi_base`; a website's `snsapi_login`.
fn scope_of(kind: Channel, asked: Option<&str>) -> Result<&'static str, AppError> {
    let allowed: &[&'static str] = match kind {
        Channel::OfficialAccount => &["snsapi_userinfo", "snsapi_base"],
        Channel::Website => &["snsapi_login"],
        _ => return Err(AppError::ChannelUnsupported),
    };
    match asked.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(allowed[0]),
        Some(scope) => allowed
            .iter()
            .copied()
            .find(|a| *a == scope)
            .ok_or_else(|| {
                InvalidValue::new(
                "scope",
                "must be snsapi_userinfo or snsapi_base (Official Account), snsapi_login (website)",
            )
            .into()
            }),
    }
}

impl MiniAuth {
    fn browser_app(&self, appid: &str) -> Result<&AppSettings, AppError> {
        let app = self.app(appid)?;
        if !app.kind.has_browser_flow() {
            return Err(AppError::ChannelUnsupported);
        }
        Ok(app)
    }

    /// Starts a browser login: `redirect_uri` must be one of the app's `redirect_uris`
    /// exactly (else nothing is redirected: no open redirect). `callback_url` is this
    /// service's callback for the app, which WeChat sends the browser back to.
    pub fn authorize(
        &self,
        appid: &str,
        redirect_uri: &str,
        scope: Option<&str>,
        callback_url: &str,
    ) -> Result<BrowserStart, AppError> {
        let app = self.browser_app(appid)?;
        if !app
            .redirect_uris
            .iter()
            .any(|allowed| allowed == redirect_uri)
        {
            return Err(AppError::RedirectUriNotAllowed);
        }
        let scope = scope_of(app.kind, scope)?;
        let now = self.now();
        let issued = self.ports.tickets.issue_state(&BrowserState {
            appid: app.appid.clone(),
            redirect_uri: redirect_uri.to_owned(),
            issued_at: now,
            expires_at: now + STATE_LIFETIME,
        });
        let page = match app.kind {
            Channel::Website => "/connect/qrconnect",
            _ => "/connect/oauth2/authorize",
        };
        let mut location = format!(
            "{}{page}?appid={}&redirect_uri={}&response_type=code&scope={scope}&state={}",
            self.ports.wechat.open_base().trim_end_matches('/'),
            encode(app.appid.as_str()),
            encode(callback_url),
            encode(&issued.state),
        );
        if app.kind == Channel::OfficialAccount {
            location.push_str("#wechat_redirect");
        }
        Ok(BrowserStart {
            location,
            browser_key: BrowserKey(issued.browser_key),
            max_age_secs: STATE_LIFETIME.num_seconds(),
        })
    }

    /// WeChat sent the browser back: the state must be ours, unexpired, this browser's
    /// (`browser_key`, its cookie) and unused; then the code logs the person in, and the
    /// answer is where to send the browser: the state's `redirect_uri` with a one-time
    /// `result` handle. A refused state writes nothing and redirects nowhere.
    pub async fn callback(
        &self,
        ctx: &RequestContext,
        appid: &str,
        code: &str,
        state: &str,
        browser_key: &str,
    ) -> Result<String, AppError> {
        let app = self.browser_app(appid)?;
        let now = self.now();
        let claims = self
            .ports
            .tickets
            .verify_state(state, browser_key, now)
            .map_err(|error| {
                tracing::info!(%appid, %error, "browser login state refused");
                AppError::StateInvalid
            })?;
        if claims.appid != app.appid || !app.redirect_uris.contains(&claims.redirect_uri) {
            return Err(AppError::StateInvalid);
        }
        OneTimeCode::parse("code", code)?;
        let uses = UsageKey::BrowserStates(miniauth_domain::crypto::fingerprint(
            "miniauth/browser-state/v1",
            &[state.trim().as_bytes()],
        ));
        if self.ports.counters.count(&uses, claims.expires_at).await? != 1 {
            return Err(AppError::StateUsed);
        }
        let outcome = self.login_for_ticket(ctx, appid, code).await?;
        let id = AccountId::new(&app.appid, &outcome.openid);
        let state = self.load(&id).await?.into_state();
        let (result, _) = self.issue_ticket_for(&app.appid, &state, RESULT_LIFETIME, false)?;
        let separator = if claims.redirect_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!(
            "{}{separator}result={}",
            claims.redirect_uri,
            encode(&result.token)
        ))
    }

    /// Exchanges a browser login's result handle, once, for the login's answer: tokens
    /// when the identity is bound (the person is logged in), else a ticket to bind with
    /// (account + password, or the current user).
    pub async fn exchange_result(
        &self,
        appid: &str,
        result: &str,
    ) -> Result<LoginOutcome, AppError> {
        let opened = self
            .open_ticket(appid, result)
            .map_err(|error| match error {
                AppError::Ticket(TicketError::Missing) => {
                    InvalidValue::new("result", "is missing").into()
                }
                AppError::Ticket(_) | AppError::TicketAppMismatch => AppError::ResultInvalid,
                other => other,
            })?;
        // Only a result handle (short-lived) is one; a ticket is not.
        if opened.claims.expires_at - opened.claims.issued_at > RESULT_LIFETIME {
            return Err(AppError::ResultInvalid);
        }
        self.spend_ticket(&opened.claims)
            .await
            .map_err(|error| match error {
                AppError::TicketAlreadyUsed => AppError::ResultInvalid,
                other => other,
            })?;
        let app = opened.app;
        let state = self.load(&opened.account).await?.into_state();
        self.answer(app, &opened.account, &state, None, None, None, true)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode("https://a.example/cb?x=1&y=2"),
            "https%3A%2F%2Fa.example%2Fcb%3Fx%3D1%26y%3D2"
        );
        assert_eq!(encode("s1.abc-_~"), "s1.abc-_~");
    }

    #[test]
    fn scopes_follow_the_kind() {
        assert_eq!(
            scope_of(Channel::OfficialAccount, None).unwrap(),
            "snsapi_userinfo"
        );
        assert_eq!(
            scope_of(Channel::OfficialAccount, Some("snsapi_base")).unwrap(),
            "snsapi_base"
        );
        assert_eq!(scope_of(Channel::Website, None).unwrap(), "snsapi_login");
        assert!(scope_of(Channel::Website, Some("snsapi_base")).is_err());
        assert!(scope_of(Channel::MobileApp, None).is_err());
    }
}
