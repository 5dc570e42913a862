//! The browser logins of an Official Account (web authorisation) and a website (QR
//! login): `authorize` sends the browser to WeChat with a `state` bound to it (a signed
//! state and an httpOnly cookie, RFC 9700's CSRF defence), `callback` checks the state
//! (signed, unexpired, this browser's, used once), logs the person in with the code and
//! sends the browser back to the app's allowed `redirect_uri` with a one-time result
//! handle, never a token; `results` exchanges the handle, once, for the login's answer.
//!
//! The handle travels in a URL (access logs, history, analytics see it), so it is bound
//! to the front end that started the login with PKCE (RFC 7636, S256 only): `authorize`
//! takes the front end's `code_challenge`, the signed state carries it into the handle,
//! and `results` wants the `code_verifier` it was made from. A handle is a type of its
//! own (never a ticket, nor the reverse) and its payload is sealed (the openid is not
//! readable in the URL).
//!
//! Stateless across instances: the state is signed with the ticket key and its single
//! use is a usage counter in the store; the handle's single use is another counter.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Duration;
use miniauth_domain::{AccountId, Channel, InvalidValue, OneTimeCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::context::RequestContext;
use crate::error::AppError;
use crate::login::LoginOutcome;
use crate::ports::{BrowserState, ResultClaims, UsageKey};
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

/// The characters of a PKCE code verifier (RFC 7636 §4.1: ALPHA / DIGIT / "-" / "." /
/// "_" / "~"), which base64url (a challenge) also stays within.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)
}

/// The S256 challenge of `authorize`: `code_challenge_method` must be `S256` (`plain`,
/// or none — which RFC 7636 reads as plain — is refused) and the challenge
/// base64url(SHA-256), 43 characters.
fn code_challenge(challenge: Option<&str>, method: Option<&str>) -> Result<String, AppError> {
    let challenge = challenge.map(str::trim).filter(|c| !c.is_empty());
    let Some(challenge) = challenge else {
        return Err(AppError::CodeChallengeRequired);
    };
    if method.map(str::trim) != Some("S256") {
        return Err(AppError::CodeChallengeMethodUnsupported);
    }
    let decoded = URL_SAFE_NO_PAD.decode(challenge).ok();
    if challenge.len() != 43 || decoded.is_none_or(|hash| hash.len() != 32) {
        return Err(InvalidValue::new(
            "code_challenge",
            "must be base64url(SHA-256(code_verifier)) without padding, 43 characters",
        )
        .into());
    }
    Ok(challenge.to_owned())
}

/// A code verifier as RFC 7636 §4.1 has it: 43 to 128 unreserved characters.
fn code_verifier(verifier: &str) -> Result<&str, AppError> {
    let verifier = verifier.trim();
    if verifier.is_empty() {
        return Err(InvalidValue::new("code_verifier", "is missing").into());
    }
    if !(43..=128).contains(&verifier.len()) || !verifier.bytes().all(is_unreserved) {
        return Err(InvalidValue::new(
            "code_verifier",
            "must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
        )
        .into());
    }
    Ok(verifier)
}

/// Whether `verifier` answers `challenge` (S256), compared in constant time.
fn verifier_answers(verifier: &str, challenge: &str) -> bool {
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
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
    /// exactly (else nothing is redirected: no open redirect), and the front end sends
    /// its PKCE challenge (`code_challenge`, method `S256`), which the result handle
    /// will carry. `callback_url` is this service's callback for the app, which WeChat
    /// sends the browser back to.
    pub fn authorize(&self, request: &AuthorizeRequest<'_>) -> Result<BrowserStart, AppError> {
        let AuthorizeRequest {
            appid,
            redirect_uri,
            scope,
            code_challenge: challenge,
            code_challenge_method,
            callback_url,
        } = *request;
        let app = self.browser_app(appid)?;
        if !app
            .redirect_uris
            .iter()
            .any(|allowed| allowed == redirect_uri)
        {
            return Err(AppError::RedirectUriNotAllowed);
        }
        let scope = scope_of(app.kind, scope)?;
        let code_challenge = code_challenge(challenge, code_challenge_method)?;
        let now = self.now();
        let issued = self.ports.tickets.issue_state(&BrowserState {
            appid: app.appid.clone(),
            redirect_uri: redirect_uri.to_owned(),
            issued_at: now,
            expires_at: now + STATE_LIFETIME,
            code_challenge,
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
    /// `result` handle, bound to the state's PKCE challenge. A refused state writes
    /// nothing and redirects nowhere.
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
        let now = self.now();
        let result = self.ports.tickets.issue_result(&ResultClaims {
            appid: app.appid.clone(),
            openid: outcome.openid,
            issued_at: now,
            expires_at: now + RESULT_LIFETIME,
            code_challenge: claims.code_challenge,
        });
        let separator = if claims.redirect_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!(
            "{}{separator}result={}",
            claims.redirect_uri,
            encode(&result)
        ))
    }

    /// Exchanges a browser login's result handle, once, for the login's answer: tokens
    /// when the identity is bound (the person is logged in), else a ticket to bind with
    /// (account + password, or the current user). `code_verifier` must be the one the
    /// `authorize` request's `code_challenge` was made from.
    ///
    /// A missing or malformed verifier is a client bug: `400 invalid_field`, nothing
    /// spent. A well-formed wrong one spends the handle (`401 code_verifier_mismatch`):
    /// whoever holds a stolen handle gets one guess, not two minutes of them; the price
    /// is that such a holder can also spoil the login, which then starts again.
    pub async fn exchange_result(
        &self,
        appid: &str,
        result: &str,
        verifier: &str,
    ) -> Result<LoginOutcome, AppError> {
        let app = self.browser_app(appid)?;
        let result = result.trim();
        if result.is_empty() {
            return Err(InvalidValue::new("result", "is missing").into());
        }
        let verifier = code_verifier(verifier)?;
        let claims = self
            .ports
            .tickets
            .verify_result(result, self.now())
            .map_err(|error| {
                tracing::info!(%appid, %error, "browser login result refused");
                AppError::ResultInvalid
            })?;
        if claims.appid != app.appid {
            return Err(AppError::ResultInvalid);
        }
        let uses = UsageKey::ResultExchanges(miniauth_domain::crypto::fingerprint(
            "miniauth/browser-result/v1",
            &[result.as_bytes()],
        ));
        if self.ports.counters.count(&uses, claims.expires_at).await? != 1 {
            return Err(AppError::ResultInvalid);
        }
        if !verifier_answers(verifier, &claims.code_challenge) {
            return Err(AppError::CodeVerifierMismatch);
        }
        let account = AccountId::new(&claims.appid, &claims.openid);
        let state = self.load(&account).await?.into_state();
        self.answer(app, &account, &state, None, None, None, true)
            .await
    }
}

/// What `authorize` is asked: the app, where to return, the scope, the front end's PKCE
/// challenge, and this service's callback URL for the app.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizeRequest<'a> {
    /// The Official Account's or website's appid.
    pub appid: &'a str,
    /// One of the app's `redirect_uris`, exactly.
    pub redirect_uri: &'a str,
    /// The scope, or the kind's default.
    pub scope: Option<&'a str>,
    /// base64url(SHA-256(code_verifier)), 43 characters.
    pub code_challenge: Option<&'a str>,
    /// Must be `S256`.
    pub code_challenge_method: Option<&'a str>,
    /// This service's callback URL for the app.
    pub callback_url: &'a str,
}

#[cfg(test)]
mod tests {
    use miniauth_domain::ErrorCode;

    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode("https://a.example/cb?x=1&y=2"),
            "https%3A%2F%2Fa.example%2Fcb%3Fx%3D1%26y%3D2"
        );
        assert_eq!(encode("s1.abc-_~"), "s1.abc-_~");
    }

    /// RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn only_an_s256_challenge_is_taken() {
        assert_eq!(
            code_challenge(Some(CHALLENGE), Some("S256")).unwrap(),
            CHALLENGE
        );
        for (challenge, method, code) in [
            (None, Some("S256"), "code_challenge_required"),
            (Some("  "), Some("S256"), "code_challenge_required"),
            (Some(CHALLENGE), None, "code_challenge_method_unsupported"),
            (
                Some(CHALLENGE),
                Some("plain"),
                "code_challenge_method_unsupported",
            ),
            (
                Some(CHALLENGE),
                Some("s256"),
                "code_challenge_method_unsupported",
            ),
            (
                Some(&format!("{CHALLENGE}A")),
                Some("S256"),
                "invalid_field",
            ),
            (Some(&CHALLENGE[1..]), Some("S256"), "invalid_field"),
            (
                Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"),
                Some("S256"),
                "invalid_field",
            ),
        ] {
            let error = code_challenge(challenge, method).unwrap_err();
            assert_eq!(error.code(), code, "{challenge:?} {method:?}");
        }
    }

    #[test]
    fn a_verifier_is_checked_for_form_then_against_the_challenge() {
        assert_eq!(code_verifier(VERIFIER).unwrap(), VERIFIER);
        assert!(code_verifier(&"a".repeat(128)).is_ok());
        for bad in [
            "",
            &"a".repeat(42),
            &"a".repeat(129),
            &format!("{}+", &VERIFIER[1..]),
        ] {
            assert_eq!(
                code_verifier(bad).unwrap_err().code(),
                "invalid_field",
                "{bad}"
            );
        }
        assert!(verifier_answers(VERIFIER, CHALLENGE));
        let other = format!("{}A", &VERIFIER[..VERIFIER.len() - 1]);
        assert!(!verifier_answers(&other, CHALLENGE));
        // The challenge itself is no verifier (plain is not accepted).
        assert!(!verifier_answers(CHALLENGE, CHALLENGE));
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
