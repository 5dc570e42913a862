//! The client's configuration: where WeChat is, how long to wait, how to retry, and
//! the credentials of each mini program.

use std::time::Duration;

use miniauth_domain::AppId;
use serde::Deserialize;

/// WeChat's production API.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";

/// An app secret (or any credential): the application's one secret type.
pub use miniauth_application::Secret;

/// One mini program's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AppCredentials {
    /// The AppID.
    pub appid: AppId,
    /// The AppSecret.
    pub secret: Secret,
}

/// How failed calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first one included (at least 1).
    pub max_attempts: u32,
    /// The backoff before the second attempt; it doubles after each failure and a
    /// random jitter of up to half of it is taken off.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
    /// What `WeChatError::Unavailable` tells clients to wait before retrying.
    pub retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            retry_after: Duration::from_secs(5),
        }
    }
}

/// Everything [`WeChatClient`](crate::WeChatClient) needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// WeChat's API base URL, without a trailing slash (`https://api.weixin.qq.com`).
    pub api_base: String,
    /// The whole-request timeout.
    pub timeout: Duration,
    /// The TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Retries of busy answers, 5xx and transport errors.
    pub retry: RetryPolicy,
    /// The mini programs this server speaks for.
    pub apps: Vec<AppCredentials>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            api_base: DEFAULT_API_BASE.to_owned(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            apps: Vec::new(),
        }
    }
}

/// Why a [`ClientConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `api_base` is not an http(s) URL.
    #[error("wechat api_base must be an http or https URL")]
    BadApiBase,
    /// A timeout or the retry policy is zero.
    #[error("wechat {0} must be positive")]
    NotPositive(&'static str),
    /// The same appid is configured twice.
    #[error("app {0} is configured twice")]
    DuplicateApp(AppId),
    /// The HTTP client could not be built (TLS setup).
    #[error("the HTTP client could not be built: {0}")]
    Http(String),
}

impl ClientConfig {
    /// Checks the configuration, naming the first thing wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(&self.api_base).map_err(|_| ConfigError::BadApiBase)?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ConfigError::BadApiBase);
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::NotPositive("timeout"));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::NotPositive("connect_timeout"));
        }
        if self.retry.max_attempts == 0 {
            return Err(ConfigError::NotPositive("retry.max_attempts"));
        }
        for (i, app) in self.apps.iter().enumerate() {
            if self.apps[..i].iter().any(|other| other.appid == app.appid) {
                return Err(ConfigError::DuplicateApp(app.appid.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(secret: &str) -> AppCredentials {
        AppCredentials {
            appid: AppId::parse("wx0123456789abcdef").unwrap(),
            secret: Secret::new(secret),
        }
    }

    #[test]
    fn defaults_are_valid_and_point_at_wechat() {
        let config = ClientConfig::default();
        assert_eq!(config.api_base, "https://api.weixin.qq.com");
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(config.retry.max_attempts, 3);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn bad_values_are_named() {
        let mut config = ClientConfig {
            api_base: "ftp://x".into(),
            ..ClientConfig::default()
        };
        assert_eq!(config.validate(), Err(ConfigError::BadApiBase));
        config.api_base = "http://127.0.0.1:1".into();
        config.timeout = Duration::ZERO;
        assert_eq!(config.validate(), Err(ConfigError::NotPositive("timeout")));
        config.timeout = Duration::from_secs(1);
        config.apps = vec![app("a"), app("b")];
        assert!(matches!(
            config.validate(),
            Err(ConfigError::DuplicateApp(_))
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let config = ClientConfig {
            apps: vec![app("s3cr3t-value")],
            ..ClientConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t-value"));
        assert!(shown.contains("wx0123456789abcdef"));
    }
}
