//! The console's sessions: stateless, signed cookies.
//!
//! A session is a random id with the time it began and the time it was last used,
//! signed with HMAC-SHA256 under a key derived from the admin token. Any instance with
//! the same admin token accepts it (nothing is stored per session), it dies after
//! [`ConsoleSettings::idle_timeout`] without use and after [`MAX_SESSION`] in any case,
//! and changing the admin token ends every session at once. Signing out records the
//! session's fingerprint in the shared usage counters, so the cookie is refused from
//! then on by every instance, even if someone kept a copy of it.
//!
//! Forms carry a synchronizer token derived from the session id (HMAC under the same
//! key): a page of another site can neither read it nor compute it, and the cookie is
//! `SameSite=Strict` besides.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "miniauth_console";
/// The path the cookie is sent to.
pub const COOKIE_PATH: &str = "/console";
/// The default idle timeout: 15 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The longest a session lives however busy it is: 12 hours.
pub const MAX_SESSION: Duration = Duration::from_secs(12 * 3600);

/// How the console's sessions behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// A session unused this long is over.
    pub idle_timeout: Duration,
    /// Mark the cookie `Secure` always (behind TLS). Without it, it is marked so when
    /// the request says it came over HTTPS (`X-Forwarded-Proto: https`).
    pub secure_cookie: bool,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            secure_cookie: false,
        }
    }
}

/// The cookie key, derived from the admin token.
#[derive(Clone)]
pub(crate) struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

/// A valid session.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Session {
    id: String,
    started: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

/// Why a cookie is not a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not ours, or altered.
    Invalid,
    /// Unused for longer than the idle timeout, or older than [`MAX_SESSION`].
    Expired,
}

impl SessionKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn mac(&self, parts: &[&str]) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// A new session beginning `now`.
    pub fn start(&self, now: DateTime<Utc>) -> Session {
        let id = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
        Session {
            id,
            started: now.timestamp(),
        }
    }

    /// The cookie value of `session`, last used `now`.
    pub fn cookie_value(&self, session: &Session, now: DateTime<Utc>) -> String {
        let started = session.started.to_string();
        let used = now.timestamp().to_string();
        let mac = self.mac(&["session", &session.id, &started, &used]);
        format!(
            "{}.{started}.{used}.{}",
            session.id,
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The session a cookie value carries, if it is ours, unaltered and alive `now`.
    pub fn open(
        &self,
        value: &str,
        now: DateTime<Utc>,
        idle: Duration,
    ) -> Result<Session, Refused> {
        let mut parts = value.split('.');
        let (Some(id), Some(started), Some(used), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Refused::Invalid);
        };
        let expected = self.mac(&["session", id, started, used]);
        let given = URL_SAFE_NO_PAD.decode(mac).map_err(|_| Refused::Invalid)?;
        if !bool::from(expected.as_slice().ct_eq(&given)) {
            return Err(Refused::Invalid);
        }
        let started: i64 = started.parse().map_err(|_| Refused::Invalid)?;
        let used: i64 = used.parse().map_err(|_| Refused::Invalid)?;
        let now = now.timestamp();
        let idle = i64::try_from(idle.as_secs()).unwrap_or(i64::MAX);
        let max = MAX_SESSION.as_secs() as i64;
        if now.saturating_sub(used) > idle || now.saturating_sub(started) > max || used > now + 60 {
            return Err(Refused::Expired);
        }
        Ok(Session {
            id: id.to_owned(),
            started,
        })
    }

    /// The form token of `session`.
    pub fn csrf_token(&self, session: &Session) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(&["csrf", &session.id]))
    }

    /// Whether `presented` is the form token of `session` (constant time).
    pub fn csrf_matches(&self, session: &Session, presented: &str) -> bool {
        let expected = self.csrf_token(session);
        bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// The name a signed-out session is recorded under: a keyed hash of its id, so
    /// the store never holds anything that could be replayed as a cookie.
    pub fn fingerprint(&self, session: &Session) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(&["ended", &session.id]))
    }
}

impl Session {
    /// A session that exists only to name a form token (the sign-in form's, bound to
    /// a nonce in its own cookie).
    pub fn named(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            started: 0,
        }
    }

    /// When the session ends at the latest.
    pub fn hard_end(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.started + MAX_SESSION.as_secs() as i64, 0).unwrap_or_default()
    }
}

/// The `Set-Cookie` value carrying `value` (`None`: removing the cookie).
pub(crate) fn set_cookie(value: Option<&str>, idle: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(value) => format!(
            "{COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            idle.as_secs()
        ),
        None => {
            format!("{COOKIE}=; Path={COOKIE_PATH}; Max-Age=0; HttpOnly; SameSite=Strict{secure}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    const IDLE: Duration = Duration::from_secs(900);

    #[test]
    fn a_session_lives_while_used_and_dies_when_idle_or_old() {
        let key = SessionKey::new([7; 32]);
        let session = key.start(at(0));
        let cookie = key.cookie_value(&session, at(0));
        assert_eq!(key.open(&cookie, at(899), IDLE), Ok(session.clone()));
        assert_eq!(key.open(&cookie, at(901), IDLE), Err(Refused::Expired));
        // Used every 10 minutes it lives on, up to MAX_SESSION.
        let mut now = 0;
        let mut cookie = cookie;
        while now + 600 <= MAX_SESSION.as_secs() as i64 {
            now += 600;
            let open = key.open(&cookie, at(now), IDLE).unwrap();
            cookie = key.cookie_value(&open, at(now));
        }
        assert_eq!(
            key.open(&cookie, at(now + 601), IDLE),
            Err(Refused::Expired)
        );
    }

    #[test]
    fn an_altered_or_foreign_cookie_is_refused() {
        let key = SessionKey::new([7; 32]);
        let session = key.start(at(0));
        let cookie = key.cookie_value(&session, at(0));
        let other = SessionKey::new([8; 32]);
        assert_eq!(other.open(&cookie, at(1), IDLE), Err(Refused::Invalid));
        // Moving "last used" forward breaks the signature.
        let parts: Vec<&str> = cookie.split('.').collect();
        let forged = format!("{}.{}.{}.{}", parts[0], parts[1], "1800000500", parts[3]);
        assert_eq!(key.open(&forged, at(1000), IDLE), Err(Refused::Invalid));
        for junk in ["", "a.b.c", "a.b.c.d.e", &format!("{cookie}x")] {
            assert_eq!(key.open(junk, at(1), IDLE), Err(Refused::Invalid), "{junk}");
        }
    }

    #[test]
    fn form_tokens_belong_to_one_session() {
        let key = SessionKey::new([7; 32]);
        let one = key.start(at(0));
        let two = key.start(at(0));
        assert!(key.csrf_matches(&one, &key.csrf_token(&one)));
        assert!(!key.csrf_matches(&one, &key.csrf_token(&two)));
        assert!(!key.csrf_matches(&one, ""));
        assert_ne!(key.fingerprint(&one), key.fingerprint(&two));
        assert!(!format!("{one:?}").contains(&one.id));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_when_asked() {
        let set = set_cookie(Some("v"), IDLE, true);
        assert_eq!(
            set,
            "miniauth_console=v; Path=/console; Max-Age=900; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!set_cookie(Some("v"), IDLE, false).contains("Secure"));
        assert!(set_cookie(None, IDLE, false).contains("Max-Age=0"));
    }
}
