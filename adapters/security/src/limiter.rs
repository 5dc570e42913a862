//! An in-process attempt limiter: fixed windows per key, bounded memory.
//!
//! Per process: with several instances an attacker gets `max_failures` per instance,
//! which is still a hard ceiling on guessing speed.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};
use miniauth_application::ports::AttemptLimiter;
use thiserror::Error;

/// How many keys are tracked at most unless told otherwise (a few MiB at worst).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Why limiter settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LimiterSettingsError {
    /// `max_failures` is 0, which would lock everyone out.
    #[error("the attempt limiter's max_failures must be at least 1")]
    ZeroFailures,
    /// The window is zero, negative, or under one second.
    #[error("the attempt limiter's window must be at least one second")]
    WindowTooShort,
    /// `max_keys` is 0.
    #[error("the attempt limiter must track at least one key")]
    ZeroKeys,
}

#[derive(Clone, Copy)]
struct Window {
    started: DateTime<Utc>,
    failures: u32,
}

/// Refuses a key (an account name, a client IP) once it has failed `max_failures`
/// times within a window that starts at its first failure; the window then frees the
/// key `window` after that first failure.
pub struct MemoryAttemptLimiter {
    max_failures: u32,
    window: Duration,
    max_keys: usize,
    windows: Mutex<HashMap<String, Window>>,
}

impl MemoryAttemptLimiter {
    /// A limiter tracking at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(max_failures: u32, window: Duration) -> Result<Self, LimiterSettingsError> {
        Self::with_max_keys(max_failures, window, DEFAULT_MAX_KEYS)
    }

    /// A limiter tracking at most `max_keys` keys: when full, stale keys go first, then
    /// the oldest window. Evicting a live window forgives that key early; memory stays
    /// bounded even when an attacker invents keys, and the per-IP limit still holds
    /// while the per-account windows churn.
    pub fn with_max_keys(
        max_failures: u32,
        window: Duration,
        max_keys: usize,
    ) -> Result<Self, LimiterSettingsError> {
        if max_failures == 0 {
            return Err(LimiterSettingsError::ZeroFailures);
        }
        if window < Duration::seconds(1) {
            return Err(LimiterSettingsError::WindowTooShort);
        }
        if max_keys == 0 {
            return Err(LimiterSettingsError::ZeroKeys);
        }
        Ok(Self {
            max_failures,
            window,
            max_keys,
            windows: Mutex::new(HashMap::new()),
        })
    }

    /// How many keys are tracked now (for metrics and tests).
    pub fn tracked_keys(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Window>> {
        // Every update leaves the map consistent, so a panic elsewhere cannot have
        // left it half-written: keep using it.
        self.windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_live(&self, window: &Window, now: DateTime<Utc>) -> bool {
        now < window.started + self.window
    }

    fn make_room(&self, windows: &mut HashMap<String, Window>, now: DateTime<Utc>) {
        windows.retain(|_, window| self.is_live(window, now));
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
}

impl fmt::Debug for MemoryAttemptLimiter {
    /// Counts only: the keys are account names and client IPs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryAttemptLimiter")
            .field("max_failures", &self.max_failures)
            .field("window_secs", &self.window.num_seconds())
            .field("max_keys", &self.max_keys)
            .field("tracked_keys", &self.tracked_keys())
            .finish()
    }
}

impl AttemptLimiter for MemoryAttemptLimiter {
    fn check(&self, key: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let windows = self.lock();
        match windows.get(key) {
            Some(window) if self.is_live(window, now) && window.failures >= self.max_failures => {
                let remaining = (window.started + self.window - now).num_milliseconds();
                // Round up so that a client waiting exactly this long is let through.
                let secs = u64::try_from(remaining).unwrap_or(0).div_ceil(1000);
                Err(secs.max(1))
            }
            _ => Ok(()),
        }
    }

    fn record_failure(&self, key: &str, now: DateTime<Utc>) {
        let mut windows = self.lock();
        if let Some(window) = windows.get_mut(key) {
            if self.is_live(window, now) {
                window.failures = window.failures.saturating_add(1);
            } else {
                *window = Window {
                    started: now,
                    failures: 1,
                };
            }
            return;
        }
        if windows.len() >= self.max_keys {
            self.make_room(&mut windows, now);
        }
        windows.insert(
            key.to_owned(),
            Window {
                started: now,
                failures: 1,
            },
        );
    }

    fn reset(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn limiter() -> MemoryAttemptLimiter {
        MemoryAttemptLimiter::new(3, Duration::minutes(15)).unwrap()
    }

    #[test]
    fn refuses_after_max_failures_within_the_window() {
        let limiter = limiter();
        for i in 0..3 {
            assert_eq!(limiter.check("alice", t0()), Ok(()), "before failure {i}");
            limiter.record_failure("alice", t0() + Duration::seconds(i));
        }
        // The window started at the first failure: 15 minutes from t0.
        assert_eq!(
            limiter.check("alice", t0() + Duration::seconds(10)),
            Err(15 * 60 - 10)
        );
        assert_eq!(
            limiter.check("alice", t0() + Duration::milliseconds(899_500)),
            Err(1)
        );
        // Other keys are unaffected.
        assert_eq!(limiter.check("bob", t0()), Ok(()));
    }

    #[test]
    fn the_window_frees_the_key() {
        let limiter = limiter();
        for _ in 0..3 {
            limiter.record_failure("alice", t0());
        }
        assert!(limiter
            .check("alice", t0() + Duration::minutes(14))
            .is_err());
        assert_eq!(limiter.check("alice", t0() + Duration::minutes(15)), Ok(()));
        // A failure after the window starts a new one, with one failure.
        limiter.record_failure("alice", t0() + Duration::minutes(16));
        limiter.record_failure("alice", t0() + Duration::minutes(16));
        assert_eq!(limiter.check("alice", t0() + Duration::minutes(16)), Ok(()));
        limiter.record_failure("alice", t0() + Duration::minutes(16));
        assert!(limiter
            .check("alice", t0() + Duration::minutes(16))
            .is_err());
    }

    #[test]
    fn a_success_resets_the_key() {
        let limiter = limiter();
        for _ in 0..3 {
            limiter.record_failure("alice", t0());
        }
        limiter.reset("alice");
        assert_eq!(limiter.check("alice", t0()), Ok(()));
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn memory_is_bounded() {
        let limiter = MemoryAttemptLimiter::with_max_keys(1, Duration::minutes(1), 3).unwrap();
        limiter.record_failure("old", t0());
        limiter.record_failure("a", t0() + Duration::seconds(70));
        limiter.record_failure("b", t0() + Duration::seconds(70));
        // Full: the stale "old" goes first, live keys stay.
        limiter.record_failure("c", t0() + Duration::seconds(71));
        assert_eq!(limiter.tracked_keys(), 3);
        let later = t0() + Duration::seconds(72);
        assert!(limiter.check("a", later).is_err());
        assert!(limiter.check("b", later).is_err());
        assert!(limiter.check("c", later).is_err());
        // Full of live keys: the oldest window ("a" or "b") is dropped for the newcomer.
        limiter.record_failure("d", later);
        assert_eq!(limiter.tracked_keys(), 3);
        assert!(limiter.check("c", later).is_err());
        assert!(limiter.check("d", later).is_err());
        for i in 0..1000 {
            limiter.record_failure(&format!("flood{i}"), later);
        }
        assert_eq!(limiter.tracked_keys(), 3);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert_eq!(
            MemoryAttemptLimiter::new(0, Duration::minutes(1)).unwrap_err(),
            LimiterSettingsError::ZeroFailures
        );
        assert_eq!(
            MemoryAttemptLimiter::new(1, Duration::milliseconds(999)).unwrap_err(),
            LimiterSettingsError::WindowTooShort
        );
        assert_eq!(
            MemoryAttemptLimiter::new(1, Duration::seconds(-5)).unwrap_err(),
            LimiterSettingsError::WindowTooShort
        );
        assert_eq!(
            MemoryAttemptLimiter::with_max_keys(1, Duration::minutes(1), 0).unwrap_err(),
            LimiterSettingsError::ZeroKeys
        );
    }

    #[test]
    fn concurrent_failures_are_all_counted() {
        let limiter = Arc::new(MemoryAttemptLimiter::new(400, Duration::minutes(1)).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        limiter.record_failure("alice", t0());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(limiter.check("alice", t0()).is_err());
        limiter.reset("alice");
        for _ in 0..399 {
            limiter.record_failure("alice", t0());
        }
        assert_eq!(limiter.check("alice", t0()), Ok(()));
    }

    #[test]
    fn debug_shows_no_keys() {
        let limiter = limiter();
        limiter.record_failure("alice@example.com", t0());
        limiter.record_failure("203.0.113.9", t0());
        let debug = format!("{limiter:?}");
        assert!(!debug.contains("alice"), "{debug}");
        assert!(!debug.contains("203.0.113.9"), "{debug}");
        assert!(debug.contains("tracked_keys: 2"), "{debug}");
    }
}
