//! A clock the tests move forward, so that waiting for a ticket or a token to expire
//! takes no wall-clock time.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use miniauth_application::ports::Clock;

/// The real time, plus however far a test moved it forward: time still passes (as the
/// store's own timestamps and WeChat's watermarks expect), and a test skips ahead
/// instead of sleeping.
#[derive(Debug, Default)]
pub struct SettableClock {
    ahead: Mutex<Duration>,
}

impl SettableClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.ahead.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for SettableClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.ahead.lock().unwrap_or_else(|e| e.into_inner())
    }
}
