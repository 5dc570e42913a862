//! The configuration of what business systems integrate with: `[discovery]`,
//! `[[introspection_clients]]`, `[[webhooks]]` and `[webhook_delivery]`.

use std::collections::BTreeSet;

use miniauth_application::webhooks::WebhookEvent;
use miniauth_domain::{AppId, TenantId};
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
    /// The tenants whose tokens it may see active (`[[apps]] tenant` names): a list,
    /// or one string of comma-separated names. Unset or empty: every tenant's.
    #[serde(default, deserialize_with = "crate::config::list_or_comma_separated")]
    pub tenants: Vec<String>,
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
    /// Whether payloads carry personal data (phone, nickname, avatar). Default false;
    /// true needs an https `url` (http only to localhost) and `personal_data_erased`
    /// among the `events`.
    #[serde(default)]
    pub personal_data: bool,
    /// The tenant whose events it receives (an `[[apps]] tenant`). Unset: the one
    /// tenant of the apps; it must be named when the apps have several.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Only the events of these apps of the tenant (AppIDs): a list, or one string of
    /// comma-separated AppIDs. Unset or empty: every app of the tenant.
    #[serde(default, deserialize_with = "crate::config::list_or_comma_separated")]
    pub apps: Vec<String>,
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

/// A subscription with its secret read and its tenant's apps resolved.
#[derive(Debug, Clone)]
pub struct ResolvedWebhook {
    /// `[[webhooks]]` as written.
    pub section: WebhookSection,
    /// The `whsec_…` secret.
    pub secret: Secret,
    /// The tenant whose events it receives (named, or the only one).
    pub tenant: TenantId,
    /// The apps whose events it receives: the tenant's, or those of `apps`.
    pub apps: BTreeSet<AppId>,
}

impl Config {
    /// The introspection clients with their secrets read.
    pub fn introspection_clients(
        &self,
        env: &[(String, String)],
    ) -> Result<Vec<miniauth_application::IntrospectionClient>, ConfigError> {
        let configured: BTreeSet<&str> = self.apps.iter().map(|app| app.tenant.as_str()).collect();
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
                let tenants = client
                    .tenants
                    .iter()
                    .map(|name| {
                        TenantId::parse(name)
                            .ok()
                            .filter(|tenant| configured.contains(tenant.as_str()))
                            .ok_or_else(|| {
                                ConfigError::new(
                                    key("tenants"),
                                    format!("no [[apps]] entry has the tenant `{name}`"),
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(miniauth_application::IntrospectionClient {
                    id: client.id.clone(),
                    secret,
                    tenants,
                })
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
                    if WebhookEvent::parse(event).is_none() {
                        return Err(ConfigError::new(
                            key("events"),
                            format!(
                                "unknown event type `{event}`; known: {}",
                                WebhookEvent::NAMES.join(", ")
                            ),
                        ));
                    }
                }
                if hook.personal_data {
                    let secure = url::Url::parse(&hook.url)
                        .is_ok_and(|url| crate::config::https_or_local(&url));
                    if !secure {
                        return Err(ConfigError::new(
                            key("url"),
                            "must be https with personal_data = true (http only to \
                             localhost, 127.0.0.1 or [::1])",
                        ));
                    }
                    let erased = WebhookEvent::PersonalDataErased.as_str();
                    if !hook.events.iter().any(|e| e == erased) {
                        return Err(ConfigError::new(
                            key("events"),
                            format!(
                                "must include `{erased}` with personal_data = true: the \
                                 receiver has to learn which personal data to erase"
                            ),
                        ));
                    }
                }
                let (tenant, apps) = self
                    .webhook_scope(hook)
                    .map_err(|(field, reason)| ConfigError::new(key(field), reason))?;
                let secret = secret_from(hook.secret.as_ref(), hook.secret_env.as_deref(), env)
                    .map_err(|reason| ConfigError::new(key("secret"), reason))?
                    .ok_or_else(|| ConfigError::new(key("secret"), "set secret or secret_env"))?;
                miniauth_webhooks::SigningSecret::parse(secret.expose())
                    .map_err(|reason| ConfigError::new(key("secret"), reason))?;
                Ok(ResolvedWebhook {
                    section: hook.clone(),
                    secret,
                    tenant,
                    apps,
                })
            })
            .collect()
    }

    /// The tenant and the apps whose events `hook` receives; else the field at fault
    /// and why.
    fn webhook_scope(
        &self,
        hook: &WebhookSection,
    ) -> Result<(TenantId, BTreeSet<AppId>), (&'static str, String)> {
        // The apps were validated before the webhooks.
        let catalog: Vec<(AppId, TenantId)> = self
            .apps
            .iter()
            .filter_map(|app| {
                Some((
                    AppId::parse(&app.appid).ok()?,
                    TenantId::parse(&app.tenant).ok()?,
                ))
            })
            .collect();
        let tenants: BTreeSet<&TenantId> = catalog.iter().map(|(_, tenant)| tenant).collect();
        let known = || {
            tenants
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let tenant = match &hook.tenant {
            Some(name) => TenantId::parse(name)
                .ok()
                .filter(|tenant| tenants.contains(tenant))
                .ok_or_else(|| {
                    (
                        "tenant",
                        format!(
                            "no [[apps]] entry has the tenant `{name}`; configured: {}",
                            known()
                        ),
                    )
                })?,
            None => match tenants.iter().next() {
                Some(only) if tenants.len() == 1 => (*only).clone(),
                _ => {
                    return Err((
                        "tenant",
                        format!("must be set: the apps have several tenants ({})", known()),
                    ))
                }
            },
        };
        let of_tenant = || {
            catalog
                .iter()
                .filter(|(_, t)| *t == tenant)
                .map(|(appid, _)| appid.clone())
        };
        if hook.apps.is_empty() {
            return Ok((tenant.clone(), of_tenant().collect()));
        }
        let mut apps = BTreeSet::new();
        for raw in &hook.apps {
            let appid = AppId::parse(raw)
                .ok()
                .filter(|appid| of_tenant().any(|a| a == *appid))
                .ok_or_else(|| {
                    ("apps", format!("`{raw}` is not an app of the tenant `{tenant}` ([[apps]] with tenant = \"{tenant}\")"))
                })?;
            apps.insert(appid);
        }
        Ok((tenant, apps))
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
        // One tenant: it needs no naming, and every app of it is covered.
        assert_eq!(hooks[0].tenant.as_str(), "default");
        assert_eq!(hooks[0].apps.len(), config.apps.len());
    }

    /// The second demo app moved to the tenant `other`.
    const OTHER_TENANT: (&str, &str) = ("MINIAUTH__APPS__1__TENANT", "other");
    const OTHER_APP: &str = "wxdemo000000000002";

    #[test]
    fn a_subscription_receives_one_tenants_apps_only() {
        let env = [("CRM_SECRET".into(), SECRET.into())];
        let config = load(&[OTHER_TENANT, ("MINIAUTH__WEBHOOKS__0__TENANT", "other")]).unwrap();
        let hooks = config.webhooks(&env).unwrap();
        assert_eq!(hooks[0].tenant.as_str(), "other");
        let apps: Vec<&str> = hooks[0].apps.iter().map(|a| a.as_str()).collect();
        assert_eq!(apps, [OTHER_APP]);

        let config = load(&[
            ("MINIAUTH__WEBHOOKS__0__TENANT", "default"),
            (
                "MINIAUTH__WEBHOOKS__0__APPS",
                "wxdemo000000000001, wxdemo000000000003",
            ),
        ])
        .unwrap();
        let hooks = config.webhooks(&env).unwrap();
        let apps: Vec<&str> = hooks[0].apps.iter().map(|a| a.as_str()).collect();
        assert_eq!(apps, ["wxdemo000000000001", "wxdemo000000000003"]);
    }

    #[test]
    fn personal_data_goes_over_https_to_a_subscriber_of_erasures() {
        let personal = ("MINIAUTH__WEBHOOKS__0__PERSONAL_DATA", "true");
        let with_erasures = (
            "MINIAUTH__WEBHOOKS__0__EVENTS",
            "phone_verified, personal_data_erased",
        );
        let config = load(&[personal, with_erasures]).unwrap();
        assert!(
            config
                .webhooks(&[("CRM_SECRET".into(), SECRET.into())])
                .unwrap()[0]
                .section
                .personal_data
        );
        for local in [
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://[::1]:9/",
        ] {
            load(&[
                personal,
                with_erasures,
                ("MINIAUTH__WEBHOOKS__0__URL", local),
            ])
            .unwrap();
        }
        // Without personal data, plain http anywhere is still accepted.
        load(&[("MINIAUTH__WEBHOOKS__0__URL", "http://crm.internal/hook")]).unwrap();
    }

    #[test]
    fn bad_subscriptions_name_the_key_and_the_reason() {
        let personal = ("MINIAUTH__WEBHOOKS__0__PERSONAL_DATA", "true");
        let with_erasures = (
            "MINIAUTH__WEBHOOKS__0__EVENTS",
            "phone_verified, personal_data_erased",
        );
        for (pairs, expected) in [
            (
                vec![personal, with_erasures, ("MINIAUTH__WEBHOOKS__0__URL", "http://crm.example.com/hooks")],
                "webhooks[0].url: must be https with personal_data = true",
            ),
            (
                vec![personal, with_erasures, ("MINIAUTH__WEBHOOKS__0__URL", "http://127.0.0.1.example.com/")],
                "webhooks[0].url: must be https with personal_data = true",
            ),
            (
                vec![personal, ("MINIAUTH__WEBHOOKS__0__EVENTS", "phone_verified")],
                "webhooks[0].events: must include `personal_data_erased` with personal_data = true",
            ),
            (
                vec![OTHER_TENANT],
                "webhooks[0].tenant: must be set: the apps have several tenants (`default`, `other`)",
            ),
            (
                vec![("MINIAUTH__WEBHOOKS__0__TENANT", "acme")],
                "webhooks[0].tenant: no [[apps]] entry has the tenant `acme`; configured: `default`",
            ),
            (
                vec![
                    OTHER_TENANT,
                    ("MINIAUTH__WEBHOOKS__0__TENANT", "default"),
                    ("MINIAUTH__WEBHOOKS__0__APPS", OTHER_APP),
                ],
                "webhooks[0].apps: `wxdemo000000000002` is not an app of the tenant `default`",
            ),
            (
                vec![("MINIAUTH__WEBHOOKS__0__APPS", "wxunknown000000009")],
                "webhooks[0].apps: `wxunknown000000009` is not an app of the tenant `default`",
            ),

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
                vec![
                    ("MINIAUTH__INTROSPECTION_CLIENTS__0__ID", "gateway"),
                    (
                        "MINIAUTH__INTROSPECTION_CLIENTS__0__SECRET",
                        "gateway-secret-0123456789",
                    ),
                    ("MINIAUTH__INTROSPECTION_CLIENTS__0__TENANTS", "nowhere"),
                ],
                "introspection_clients[0].tenants: no [[apps]] entry has the tenant `nowhere`",
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
