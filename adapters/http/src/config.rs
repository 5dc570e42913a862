//! What the HTTP layer is configured with. The binary builds it from its own
//! configuration file; secrets here never reach `Debug`.

use std::fmt;
use std::time::Duration;

use miniauth_domain::{InvalidValue, TenantId};
use subtle::ConstantTimeEq;

use crate::client_ip::TrustedProxies;
pub use crate::console::ConsoleSettings;

/// The default request body limit: 64 KiB.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 64 * 1024;

/// The default time a request may take before it is answered with `request_timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Shortest admin token accepted: anything shorter is guessable.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// Compares two byte strings in time independent of where they differ.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    // `ct_eq` on slices of different lengths returns false without looking at the
    // bytes; the length of a configured token is not the secret.
    a.ct_eq(b).into()
}

/// The bearer token of `/v1/admin`. `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// Accepts a token of at least 16 bytes without whitespace.
    pub fn new(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        let raw = raw.into();
        if raw.len() < MIN_ADMIN_TOKEN_BYTES || raw.chars().any(char::is_whitespace) {
            return Err(InvalidValue::new(
                "admin.token",
                "must be at least 16 bytes without whitespace",
            ));
        }
        Ok(Self(raw))
    }

    /// Whether `presented` is this token, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        equal_in_constant_time(self.0.as_bytes(), presented.as_bytes())
    }

    /// A key for `purpose` derived from the token (HMAC-SHA256 keyed by it): what the
    /// console signs its session cookies with, so that changing the token ends every
    /// console session.
    pub(crate) fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.0.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// A client secret (GitEgg's OAuth client credentials): the application's one secret
/// type.
pub use miniauth_application::Secret;

/// Who may read `/metrics` on the listener that serves it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Anyone who reaches the listener (the default, as before).
    #[default]
    Open,
    /// Only requests with the admin token (`Authorization: Bearer <token>`).
    AdminToken,
}

/// Where `/metrics` is served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricsListener {
    /// On the API's listener (the default).
    #[default]
    Api,
    /// Only on a listener of its own ([`crate::metrics_router`]); the API's answers 404.
    Separate,
}

/// The HTTP layer's settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The bearer token of `/v1/admin`; `None` disables the admin routes (403).
    pub admin_token: Option<AdminToken>,
    /// The tenant of password grants, which come without an app to name one.
    pub default_tenant: TenantId,
    /// Largest request body accepted (413 above it).
    pub body_limit_bytes: usize,
    /// Longest a request may take before it is answered with `request_timeout` (503).
    pub request_timeout: Duration,
    /// GitEgg's OAuth clients (`client_id`, secret) checked with HTTP Basic on
    /// `/oauth/token`. Empty: client credentials are not checked at all.
    pub compat_clients: Vec<(String, Secret)>,
    /// Proxies whose `X-Forwarded-For` / `X-Real-IP` are believed; empty: none.
    pub trusted_proxies: TrustedProxies,
    /// Who may read `/metrics`.
    pub metrics_access: MetricsAccess,
    /// Where `/metrics` is served.
    pub metrics_listener: MetricsListener,
    /// The discovery document's issuer and URL, and the introspection clients.
    pub token_services: crate::TokenServices,
    /// The console's sessions (`/console`, served only with an admin token).
    pub console: ConsoleSettings,
}

impl HttpConfig {
    /// Defaults: no admin routes, 64 KiB bodies, 15 s timeout, no client check, no
    /// trusted proxy, `/metrics` open on the API's listener.
    pub fn new(default_tenant: TenantId) -> Self {
        Self {
            admin_token: None,
            default_tenant,
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            compat_clients: Vec::new(),
            trusted_proxies: TrustedProxies::none(),
            metrics_access: MetricsAccess::Open,
            metrics_listener: MetricsListener::Api,
            token_services: crate::TokenServices {
                issuer: "miniauth".to_owned(),
                ..Default::default()
            },
            console: ConsoleSettings::default(),
        }
    }

    /// Whether HTTP Basic `client_id:secret` names a configured GitEgg client.
    /// Always true when none is configured.
    pub(crate) fn client_allowed(&self, credentials: Option<(&str, &str)>) -> bool {
        if self.compat_clients.is_empty() {
            return true;
        }
        let Some((id, secret)) = credentials else {
            return false;
        };
        // Check every entry so the time does not tell which client id exists.
        self.compat_clients
            .iter()
            .fold(false, |found, (client, expected)| {
                let matched = client == id && expected.matches(secret);
                found | matched
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_refuses_short_tokens_and_hides_itself() {
        assert!(AdminToken::new("short").is_err());
        assert!(AdminToken::new("has a space in it!!").is_err());
        let token = AdminToken::new("0123456789abcdef").unwrap();
        assert!(token.matches("0123456789abcdef"));
        assert!(!token.matches("0123456789abcdeF"));
        assert!(!token.matches("0123456789abcdef0"));
        assert!(!format!("{token:?}").contains("0123"));
    }

    #[test]
    fn clients_are_checked_only_when_configured() {
        let mut config = HttpConfig::new(TenantId::parse("default").unwrap());
        assert!(config.client_allowed(None));
        config.compat_clients = vec![("gitegg".into(), Secret::new("s3cret"))];
        assert!(config.client_allowed(Some(("gitegg", "s3cret"))));
        assert!(!config.client_allowed(Some(("gitegg", "wrong"))));
        assert!(!config.client_allowed(Some(("other", "s3cret"))));
        assert!(!config.client_allowed(None));
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
