//! The WeChat session key: a secret that never shows in `Debug` or `Display`.

use std::fmt;

use crate::crypto::decode_base64;
use crate::error::PayloadError;
use crate::ids::AccountId;

/// The `session_key` code2session returns: 24 base64 characters, 16 bytes of AES key.
///
/// It keeps the text as WeChat gave it, because checksession's HMAC is keyed with the
/// text, not the bytes. It implements neither `Display` nor `Serialize`: the only way
/// it leaves the process is sealed by the personal-data vault.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey {
    text: String,
    bytes: [u8; 16],
}

impl SessionKey {
    /// Parses the base64 text, repairing `+` that URL decoding turned into spaces.
    pub fn parse(text: &str) -> Result<Self, PayloadError> {
        // Every space is a `+` that URL decoding damaged, even a leading or trailing one:
        // repair before trimming, or the trim would eat it.
        let repaired = text.replace(' ', "+").trim().to_owned();
        if repaired.len() != 24 {
            return Err(PayloadError::WrongLength {
                field: "session_key",
                reason: "expected 24 base64 characters",
            });
        }
        let decoded = decode_base64("session_key", &repaired)?;
        let bytes: [u8; 16] = decoded.try_into().map_err(|_| PayloadError::WrongLength {
            field: "session_key",
            reason: "expected 16 bytes",
        })?;
        Ok(Self {
            text: repaired,
            bytes,
        })
    }

    /// The key as WeChat spelled it (base64). Handle with care: it is the secret.
    pub fn expose_text(&self) -> &str {
        &self.text
    }

    /// The 16 AES key bytes. Handle with care: they are the secret.
    pub fn expose_bytes(&self) -> &[u8; 16] {
        &self.bytes
    }

    /// A name for this key of `account` that reveals nothing of it: hex(sha256) over a
    /// purpose label, the account and the key. WeChat may hand the same key to several
    /// `wx.login`s, so what is counted per key (rejected payloads) is counted under this
    /// name, not per session or ticket. The key is 128 random bits: the digest cannot
    /// be searched back to it.
    pub fn fingerprint(&self, account: &AccountId) -> String {
        crate::crypto::fingerprint(
            "miniauth/session-key-fingerprint/v1",
            &[account.as_str().as_bytes(), &self.bytes],
        )
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_names_one_key_of_one_account() {
        let key = SessionKey::parse("tiihtNczf5v6AKRyjwEUhQ==").unwrap();
        let other = SessionKey::parse("o0q0otL8aEzpcZL/FT9WsQ==").unwrap();
        let appid = crate::AppId::parse("wx4f4bc4dec97d474b").unwrap();
        let a = AccountId::new(
            &appid,
            &crate::OpenId::parse("oGZUI0egBJY1zhBYw2KhdUfwVJJE").unwrap(),
        );
        let b = AccountId::new(
            &appid,
            &crate::OpenId::parse("oGZUI0egBJY1zhBYw2KhdUfwVJJF").unwrap(),
        );
        assert_eq!(key.fingerprint(&a), key.clone().fingerprint(&a));
        assert_ne!(key.fingerprint(&a), other.fingerprint(&a));
        assert_ne!(key.fingerprint(&a), key.fingerprint(&b));
        assert_eq!(key.fingerprint(&a).len(), 64);
        assert!(!key.fingerprint(&a).contains(key.expose_text()));
    }

    #[test]
    fn parses_the_official_sample_key() {
        let key = SessionKey::parse("tiihtNczf5v6AKRyjwEUhQ==").unwrap();
        assert_eq!(key.expose_text(), "tiihtNczf5v6AKRyjwEUhQ==");
        assert_eq!(key.expose_bytes().len(), 16);
    }

    #[test]
    fn repairs_a_plus_that_url_decoding_turned_into_a_space() {
        let with_plus = SessionKey::parse("ab+defghijklmnopqrstuA==").unwrap();
        let damaged = SessionKey::parse("ab defghijklmnopqrstuA==").unwrap();
        assert_eq!(damaged, with_plus);
        assert_eq!(damaged.expose_text(), "ab+defghijklmnopqrstuA==");
    }

    #[test]
    fn refuses_wrong_lengths_and_bad_base64() {
        assert!(matches!(
            SessionKey::parse("short"),
            Err(PayloadError::WrongLength { .. })
        ));
        assert!(matches!(
            SessionKey::parse("!!!!!!!!!!!!!!!!!!!!!!=="),
            Err(PayloadError::NotBase64 { .. })
        ));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = SessionKey::parse("tiihtNczf5v6AKRyjwEUhQ==").unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("tiihtN"));
        assert!(shown.contains("redacted"));
    }
}
