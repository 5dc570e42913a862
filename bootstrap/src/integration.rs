//! The configuration of what business systems integrate with: `[discovery]`,
//! `[[introspection_clients]]`, `[[webhooks]]` and `[webhook_delivery]`.

use serde::Deserialize;

use crate::config::{secret_from, Config, ConfigError, Secret};

/// `[discovery]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySection {
    /// The absolute URL clients reach miniauth at, e.g. `https://auth.example.com`: the
    /// base of the URLs in `/.well-known/openid-configuration`. Unset: `http://` and
    /// the request's `Host`.
    pub public_url: Option<String>,
}

/// One `[[introspection_clients]]` entry: who may call `/v1/token/introspect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionClient {
    /// The client id (HTTP Basic user name).
    pub id: String,
    /// The secret (HTTP Basic password).
    pub secret: Option<Secret>,
    /// The environment variable holding it instead.
    pub secret_env: Option<String>,
}

/// One `[[webhooks]]` subscription.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// A stable name (1 to 64 of `[A-Za-z0-9_-]`): the key of its checkpoint and part
    /// of every `webhook-id`. Renaming it starts the subscription over.
    pub id: String,
    /// Where to POST (http or https).
    pub url: String,
    /// The signing secret, `whsec_` and base64 (Standard Webhooks).
    pub secret: Option<Secret>,
    /// The environment variable holding it instead.
    pub secret_env: Option<String>,
    /// The event types to deliver (see docs/integration.md): a list, or one string of
    /// comma-separated names (an environment override).
    #[serde(deserialize_with = "crate::config::list_or_comma_separated")]
    pub events: Vec<String>,
    /// Whether payloads carry personal data (phone, nickname, avatar). Default false.
    #[serde(default)]
    pub personal_data: bool,
}

/// `[webhook_delivery]`: how every subscription is delivered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookDeliverySection {
    /// Attempts of one delivery before it is parked.
    pub max_attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub backoff_initial_ms: u64,
    /// The longest wait between two attempts.
    pub backoff_max_ms: u64,
    /// How long one attempt may take (connect, send, answer).
    pub timeout_ms: u64,
    /// How often the log is polled for new events.
    pub poll_interval_ms: u64,
    /// How long an instance holds a subscription without renewing its lease.
    pub lease_ms: u64,
}

impl Default for WebhookDeliverySection {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            timeout_ms: 5_000,
            poll_interval_ms: 1_000,
            lease_ms: 30_000,
        }
    }
}

/// A subscription with its secret read.
#[derive(Debug, Clone)]
pub struct ResolvedWebhook {
    /// `[[webhooks]]` as written.
    pub section: WebhookSection,
    /// The `whsec_…` secret.
    pub secret: Secret,
}

impl Config {
    /// The introspection clients with their secrets read.
    pub fn introspection_clients(
        &self,
        env: &[(String, String)],
    ) -> Result<Vec<(String, Secret)>, ConfigError> {
        self.introspection_clients
            .iter()
            .enumerate()
            .map(|(i, client)| {
                let key = |field: &str| format!("introspection_clients[{i}].{field}");
                if client.id.trim().is_empty() || client.id.contains(':') {
                    return Err(ConfigError::new(
                        key("id"),
                        "must be non-empty, without `:`",
                    ));
                }
                let secret = secret_from(client.secret.as_ref(), client.secret_env.as_deref(), env)
                    .map_err(|reason| ConfigError::new(key("secret"), reason))?
                    .ok_or_else(|| ConfigError::new(key("secret"), "set secret or secret_env"))?;
                if secret.expose().len() < 16 {
                    return Err(ConfigError::new(
                        key("secret"),
                        "must be at least 16 characters",
                    ));
                }
                Ok((client.id.clone(), secret))
            })
            .collect()
    }

    /// The `[discovery] public_url`, checked and without a trailing slash.
    pub fn public_url(&self) -> Result<Option<String>, ConfigError> {
        let Some(url) = &self.discovery.public_url else {
            return Ok(None);
        };
        let trimmed = url.trim().trim_end_matches('/');
        let valid = (trimmed.starts_with("https://") || trimmed.starts_with("http://"))
            && trimmed
                .split("://")
                .nth(1)
                .is_some_and(|rest| !rest.is_empty())
            && !trimmed.chars().any(char::is_whitespace);
        if !valid {
            return Err(ConfigError::new(
                "discovery.public_url",
                "must be an absolute http(s) URL",
            ));
        }
        Ok(Some(trimmed.to_owned()))
    }

    /// The webhook subscriptions with their secrets read, checked.
    pub fn webhooks(&self, env: &[(String, String)]) -> Result<Vec<ResolvedWebhook>, ConfigError> {
        let mut seen = std::collections::HashSet::new();
        let delivery = &self.webhook_delivery;
        for (key, value) in [
            (
                "webhook_delivery.max_attempts",
                u64::from(delivery.max_attempts),
            ),
            (
                "webhook_delivery.backoff_initial_ms",
                delivery.backoff_initial_ms,
            ),
            ("webhook_delivery.timeout_ms", delivery.timeout_ms),
            (
                "webhook_delivery.poll_interval_ms",
                delivery.poll_interval_ms,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be positive"));
            }
        }
        if delivery.backoff_max_ms < delivery.backoff_initial_ms {
            return Err(ConfigError::new(
                "webhook_delivery.backoff_max_ms",
                "must be at least backoff_initial_ms",
            ));
        }
        if delivery.lease_ms < 2 * delivery.timeout_ms + delivery.poll_interval_ms {
            return Err(ConfigError::new(
                "webhook_delivery.lease_ms",
                "must be at least 2 × timeout_ms + poll_interval_ms",
            ));
        }
        self.webhooks
            .iter()
            .enumerate()
            .map(|(i, hook)| {
                let key = |field: &str| format!("webhooks[{i}].{field}");
                let id_ok = !hook.id.is_empty()
                    && hook.id.len() <= 64
                    && hook
                        .id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !id_ok {
                    return Err(ConfigError::new(
                        key("id"),
                        "must be 1 to 64 of [A-Za-z0-9_-]",
                    ));
                }
                if !seen.insert(hook.id.clone()) {
                    return Err(ConfigError::new(key("id"), "is configured twice"));
                }
                if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                    return Err(ConfigError::new(key("url"), "must be an http(s) URL"));
                }
                if hook.events.is_empty() {
                    return Err(ConfigError::new(
                        key("events"),
                        "name at least one event type",
                    ));
                }
                for event in &hook.events {
                    if miniauth_application::webhooks::WebhookEvent::parse(event).is_none() {
                        return Err(ConfigError::new(
                            key("events"),
                            format!(
                                "unknown event type `{event}`; known: {}",
                                miniauth_application::webhooks::WebhookEvent::NAMES.join(", ")
                            ),
                        ));
                    }
                }
                let secret = secret_from(hook.secret.as_ref(), hook.secret_env.as_deref(), env)
                    .map_err(|reason| ConfigError::new(key("secret"), reason))?
                    .ok_or_else(|| ConfigError::new(key("secret"), "set secret or secret_env"))?;
                miniauth_webhooks::SigningSecret::parse(secret.expose())
                    .map_err(|reason| ConfigError::new(key("secret"), reason))?;
                Ok(ResolvedWebhook {
                    section: hook.clone(),
                    secret,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn load(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let mut env: Vec<(String, String)> = vec![
            ("MINIAUTH__WEBHOOKS__0__ID".into(), "crm".into()),
            (
                "MINIAUTH__WEBHOOKS__0__URL".into(),
                "https://crm.example.com/hooks".into(),
            ),
            (
                "MINIAUTH__WEBHOOKS__0__SECRET_ENV".into(),
                "CRM_SECRET".into(),
            ),
            ("CRM_SECRET".into(), SECRET.into()),
            (
                "MINIAUTH__WEBHOOKS__0__EVENTS".into(),
                "user_bound, unbound".into(),
            ),
        ];
        for (key, value) in pairs {
            env.retain(|(k, _)| k != key);
            env.push(((*key).into(), (*value).into()));
        }
        Config::load_with_env(None, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn a_subscription_loads_with_its_secret_from_the_environment() {
        let config = load(&[]).unwrap();
        let hooks = config
            .webhooks(&[("CRM_SECRET".into(), SECRET.into())])
            .unwrap();
        assert_eq!(hooks[0].section.events, ["user_bound", "unbound"]);
        assert!(!hooks[0].section.personal_data);
        assert!(!format!("{hooks:?}").contains("MfKQ"));
    }

    #[test]
    fn bad_subscriptions_name_the_key_and_the_reason() {
        for (pairs, expected) in [
            (
                vec![("MINIAUTH__WEBHOOKS__0__EVENTS", "user_deleted")],
                "webhooks[0].events: unknown event type `user_deleted`",
            ),
            (
                vec![("CRM_SECRET", "not-a-whsec-secret")],
                "webhooks[0].secret: must start with `whsec_`",
            ),
            (
                vec![("MINIAUTH__WEBHOOKS__0__URL", "ftp://crm")],
                "webhooks[0].url: must be an http(s) URL",
            ),
            (
                vec![("MINIAUTH__WEBHOOKS__0__ID", "crm hooks")],
                "webhooks[0].id: must be 1 to 64",
            ),
            (
                vec![("MINIAUTH__WEBHOOK_DELIVERY__LEASE_MS", "100")],
                "webhook_delivery.lease_ms: must be at least",
            ),
            (
                vec![
                    ("MINIAUTH__INTROSPECTION_CLIENTS__0__ID", "gateway"),
                    ("MINIAUTH__INTROSPECTION_CLIENTS__0__SECRET", "short"),
                ],
                "introspection_clients[0].secret: must be at least 16 characters",
            ),
            (
                vec![("MINIAUTH__DISCOVERY__PUBLIC_URL", "auth.example.com")],
                "discovery.public_url: must be an absolute http(s) URL",
            ),
        ] {
            let error = load(&pairs).unwrap_err();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("not-a-whsec"), "{error}");
        }
    }
}
