//! An in-process attempt limiter: fixed windows per key, bounded memory.
//!
//! Per process: with several instances each one counts on its own and the limits
//! multiply. The binary uses the store's limiter (shared through the database); this
//! one is for single-process embeddings and tests.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use miniauth_application::ports::{
    AttemptLimiter, PortError, ThrottleError, ThrottleKey, ThrottleLimits,
};
use thiserror::Error;

/// How many keys are tracked at most unless told otherwise (a few MiB at worst).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Why limiter settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LimiterSettingsError {
    /// A limit allows nothing or its window is under one second.
    #[error("attempt limits: {0}")]
    BadLimit(String),
    /// `max_keys` is 0.
    #[error("the attempt limiter must track at least one key")]
    ZeroKeys,
}

#[derive(Clone, Copy)]
struct Window {
    started: DateTime<Utc>,
    hits: u32,
}

/// Counts hits per [`ThrottleKey`] in a window that starts at the key's first hit and
/// lasts the window of the key's kind ([`ThrottleLimits`]).
pub struct MemoryAttemptLimiter {
    limits: ThrottleLimits,
    max_keys: usize,
    windows: Mutex<HashMap<ThrottleKey, Window>>,
}

impl MemoryAttemptLimiter {
    /// A limiter tracking at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(limits: ThrottleLimits) -> Result<Self, LimiterSettingsError> {
        Self::with_max_keys(limits, DEFAULT_MAX_KEYS)
    }

    /// A limiter tracking at most `max_keys` keys: when full, stale keys go first, then
    /// the oldest window. Evicting a live window forgives that key early; memory stays
    /// bounded even when an attacker invents keys.
    pub fn with_max_keys(
        limits: ThrottleLimits,
        max_keys: usize,
    ) -> Result<Self, LimiterSettingsError> {
        limits.validate().map_err(LimiterSettingsError::BadLimit)?;
        if max_keys == 0 {
            return Err(LimiterSettingsError::ZeroKeys);
        }
        Ok(Self {
            limits,
            max_keys,
            windows: Mutex::new(HashMap::new()),
        })
    }

    /// How many keys are tracked now (for metrics and tests).
    pub fn tracked_keys(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ThrottleKey, Window>> {
        // Every update leaves the map consistent, so a panic elsewhere cannot have
        // left it half-written: keep using it.
        self.windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_live(&self, key: &ThrottleKey, window: &Window, now: DateTime<Utc>) -> bool {
        now < window.started + self.limits.of(key.kind()).window
    }

    /// Seconds until `window` of `key` ends, rounded up so that a client waiting
    /// exactly this long is let through.
    fn retry_after(&self, key: &ThrottleKey, window: &Window, now: DateTime<Utc>) -> u64 {
        let end = window.started + self.limits.of(key.kind()).window;
        let remaining = (end - now).num_milliseconds();
        u64::try_from(remaining).unwrap_or(0).div_ceil(1000).max(1)
    }

    fn make_room(&self, windows: &mut HashMap<ThrottleKey, Window>, now: DateTime<Utc>) {
        windows.retain(|key, window| self.is_live(key, window, now));
        if windows.len() >= self.max_keys {
            let oldest = windows
                .iter()
                .min_by_key(|(_, window)| window.started)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                windows.remove(&oldest);
            }
        }
    }

    /// Counts one hit and answers the window after it.
    fn count(&self, key: &ThrottleKey, now: DateTime<Utc>) -> Window {
        let mut windows = self.lock();
        if let Some(window) = windows.get(key).copied() {
            let updated = if self.is_live(key, &window, now) {
                Window {
                    hits: window.hits.saturating_add(1),
                    ..window
                }
            } else {
                Window {
                    started: now,
                    hits: 1,
                }
            };
            windows.insert(key.clone(), updated);
            return updated;
        }
        if windows.len() >= self.max_keys {
            self.make_room(&mut windows, now);
        }
        let window = Window {
            started: now,
            hits: 1,
        };
        windows.insert(key.clone(), window);
        window
    }
}

impl fmt::Debug for MemoryAttemptLimiter {
    /// Counts only: the keys are account names and client IPs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryAttemptLimiter")
            .field("limits", &self.limits)
            .field("max_keys", &self.max_keys)
            .field("tracked_keys", &self.tracked_keys())
            .finish()
    }
}

#[async_trait]
impl AttemptLimiter for MemoryAttemptLimiter {
    async fn check(&self, key: &ThrottleKey, now: DateTime<Utc>) -> Result<(), ThrottleError> {
        let windows = self.lock();
        match windows.get(key) {
            Some(window)
                if self.is_live(key, window, now)
                    && window.hits >= self.limits.of(key.kind()).max =>
            {
                Err(ThrottleError::Exceeded {
                    retry_after_secs: self.retry_after(key, window, now),
                })
            }
            _ => Ok(()),
        }
    }

    async fn record_failure(&self, key: &ThrottleKey, now: DateTime<Utc>) -> Result<(), PortError> {
        self.count(key, now);
        Ok(())
    }

    async fn hit(&self, key: &ThrottleKey, now: DateTime<Utc>) -> Result<(), ThrottleError> {
        let window = self.count(key, now);
        if window.hits > self.limits.of(key.kind()).max {
            return Err(ThrottleError::Exceeded {
                retry_after_secs: self.retry_after(key, &window, now),
            });
        }
        Ok(())
    }

    async fn reset(&self, key: &ThrottleKey) -> Result<(), PortError> {
        self.lock().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use chrono::{Duration, TimeZone};
    use miniauth_application::ports::{ClientNet, Limit};
    use miniauth_domain::TenantId;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn limits(max: u32) -> ThrottleLimits {
        let limit = Limit {
            max,
            window: Duration::minutes(15),
        };
        ThrottleLimits {
            account_from_client: limit,
            account: limit,
            client: limit,
            login: limit,
            operator_secret: limit,
            introspection_client: limit,
        }
    }

    fn limiter() -> MemoryAttemptLimiter {
        MemoryAttemptLimiter::new(limits(3)).unwrap()
    }

    fn account(name: &str) -> ThrottleKey {
        ThrottleKey::Account {
            tenant: TenantId::parse("default").unwrap(),
            account: name.to_owned(),
        }
    }

    fn client(ip: &str) -> ThrottleKey {
        ThrottleKey::Client(ClientNet::of(ip.parse::<IpAddr>().unwrap()))
    }

    fn exceeded(secs: u64) -> Result<(), ThrottleError> {
        Err(ThrottleError::Exceeded {
            retry_after_secs: secs,
        })
    }

    #[tokio::test]
    async fn refuses_after_max_failures_within_the_window() {
        let limiter = limiter();
        let alice = account("alice");
        for i in 0..3 {
            assert_eq!(limiter.check(&alice, t0()).await, Ok(()), "before {i}");
            limiter
                .record_failure(&alice, t0() + Duration::seconds(i))
                .await
                .unwrap();
        }
        // The window started at the first failure: 15 minutes from t0.
        assert_eq!(
            limiter.check(&alice, t0() + Duration::seconds(10)).await,
            exceeded(15 * 60 - 10)
        );
        assert_eq!(
            limiter
                .check(&alice, t0() + Duration::milliseconds(899_500))
                .await,
            exceeded(1)
        );
        // Other keys, and other kinds of the same name, are unaffected.
        assert_eq!(limiter.check(&account("bob"), t0()).await, Ok(()));
        assert_eq!(limiter.check(&client("203.0.113.9"), t0()).await, Ok(()));
    }

    #[tokio::test]
    async fn the_window_frees_the_key_and_a_reset_forgets_it() {
        let limiter = limiter();
        let alice = account("alice");
        for _ in 0..3 {
            limiter.record_failure(&alice, t0()).await.unwrap();
        }
        assert!(limiter
            .check(&alice, t0() + Duration::minutes(14))
            .await
            .is_err());
        assert_eq!(
            limiter.check(&alice, t0() + Duration::minutes(15)).await,
            Ok(())
        );
        for _ in 0..3 {
            limiter.record_failure(&alice, t0()).await.unwrap();
        }
        limiter.reset(&alice).await.unwrap();
        assert_eq!(limiter.check(&alice, t0()).await, Ok(()));
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[tokio::test]
    async fn hits_are_refused_beyond_the_limit() {
        let limiter = limiter();
        let login = ThrottleKey::Login(ClientNet::of("2001:db8::1".parse().unwrap()));
        for _ in 0..3 {
            assert_eq!(limiter.hit(&login, t0()).await, Ok(()));
        }
        assert!(limiter.hit(&login, t0()).await.is_err());
        // The same /64 is the same client.
        let neighbour = ThrottleKey::Login(ClientNet::of("2001:db8::ffff:1".parse().unwrap()));
        assert!(limiter.hit(&neighbour, t0()).await.is_err());
        let elsewhere = ThrottleKey::Login(ClientNet::of("2001:db8:0:1::1".parse().unwrap()));
        assert_eq!(limiter.hit(&elsewhere, t0()).await, Ok(()));
    }

    #[tokio::test]
    async fn memory_is_bounded() {
        let limiter = MemoryAttemptLimiter::with_max_keys(limits(1), 3).unwrap();
        for i in 0..1000 {
            limiter
                .record_failure(&account(&format!("flood{i}")), t0())
                .await
                .unwrap();
        }
        assert_eq!(limiter.tracked_keys(), 3);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(matches!(
            MemoryAttemptLimiter::new(limits(0)).unwrap_err(),
            LimiterSettingsError::BadLimit(_)
        ));
        let mut short = limits(1);
        short.login.window = Duration::milliseconds(999);
        assert!(matches!(
            MemoryAttemptLimiter::new(short).unwrap_err(),
            LimiterSettingsError::BadLimit(_)
        ));
        assert_eq!(
            MemoryAttemptLimiter::with_max_keys(limits(1), 0).unwrap_err(),
            LimiterSettingsError::ZeroKeys
        );
    }

    #[tokio::test]
    async fn debug_shows_no_keys() {
        let limiter = limiter();
        limiter
            .record_failure(&account("alice@example.com"), t0())
            .await
            .unwrap();
        limiter
            .record_failure(&client("203.0.113.9"), t0())
            .await
            .unwrap();
        let debug = format!("{limiter:?}");
        assert!(!debug.contains("alice"), "{debug}");
        assert!(!debug.contains("203.0.113.9"), "{debug}");
        assert!(debug.contains("tracked_keys: 2"), "{debug}");
    }
}
