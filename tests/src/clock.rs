//! A clock the tests move, so that waiting for a ticket or a token to expire takes no
//! wall-clock time.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use miniauth_application::ports::Clock;

/// Stands still where it was set (at creation: the real time) until a test moves it.
#[derive(Debug)]
pub struct SettableClock(Mutex<DateTime<Utc>>);

impl Default for SettableClock {
    fn default() -> Self {
        Self(Mutex::new(Utc::now()))
    }
}

impl SettableClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        *self.time() += by;
    }

    fn time(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for SettableClock {
    fn now(&self) -> DateTime<Utc> {
        *self.time()
    }
}
