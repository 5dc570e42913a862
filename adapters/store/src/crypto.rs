//! AES-256-GCM sealing in a versioned text format, keyed lookups and token hashes.
//!
//! Sealed text is `v1.<nonce>.<ciphertext>` (URL-safe base64 without padding), with
//! associated data naming what the text is for, so a sealed value cannot be moved to
//! another purpose or account and still open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::ServerKey;

const VERSION: &str = "v1";

/// Why sealed text did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpenError {
    /// Not `v1.<nonce>.<ciphertext>`.
    #[error("sealed text is malformed or of an unknown version")]
    Malformed,
    /// The key or the associated data is not the one it was sealed with.
    #[error("sealed text does not open with this key")]
    WrongKey,
}

/// Seals and opens with one 256-bit key.
#[derive(Clone)]
pub(crate) struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    pub(crate) fn seal(&self, purpose: &str, plaintext: &[u8]) -> String {
        let nonce: [u8; 12] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.as_bytes(),
                },
            )
            // Encryption fails only for messages beyond GCM's 64 GiB limit.
            .expect("AES-GCM encrypts any message under 64 GiB");
        format!(
            "{VERSION}.{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(ciphertext)
        )
    }

    pub(crate) fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let mut parts = sealed.split('.');
        let (Some(VERSION), Some(nonce), Some(ciphertext), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OpenError::Malformed);
        };
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| OpenError::Malformed)?;
        let ciphertext = URL_SAFE_NO_PAD
            .decode(ciphertext)
            .map_err(|_| OpenError::Malformed)?;
        if nonce.len() != 12 {
            return Err(OpenError::Malformed);
        }
        self.cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| OpenError::WrongKey)
    }
}

/// The server key's uses: sealing, and a separate key for lookup hashes.
#[derive(Clone)]
pub(crate) struct Keys {
    pub(crate) sealer: Sealer,
    lookup_key: [u8; 32],
}

impl Keys {
    pub(crate) fn new(server_key: &ServerKey) -> Self {
        // A distinct key for lookups, so the hash of a phone is not a function of the
        // sealing key's use elsewhere.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(server_key.bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"miniauth lookup key v1");
        Self {
            sealer: Sealer::new(server_key.bytes()),
            lookup_key: mac.finalize().into_bytes().into(),
        }
    }

    /// A keyed hash for equality lookups of personal data (mobile numbers): without the
    /// server key it cannot be reversed by trying every number.
    pub(crate) fn lookup_hash(&self, purpose: &str, value: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.lookup_key)
            .expect("HMAC takes keys of any length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The SHA-256 of an opaque token, as stored.
pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh opaque random token (256 bits).
pub(crate) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_text_opens_only_with_its_key_and_purpose() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer.seal("phone", b"13800138000");
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("13800138000"));
        assert_eq!(sealer.open("phone", &sealed).unwrap(), b"13800138000");
        assert_eq!(sealer.open("nickname", &sealed), Err(OpenError::WrongKey));
        assert_eq!(
            Sealer::new(&[8; 32]).open("phone", &sealed),
            Err(OpenError::WrongKey)
        );
        assert_eq!(sealer.open("phone", "v2.a.b"), Err(OpenError::Malformed));
        assert_eq!(sealer.open("phone", "garbage"), Err(OpenError::Malformed));
        assert_ne!(sealer.seal("phone", b"x"), sealer.seal("phone", b"x"));
    }

    #[test]
    fn lookup_hashes_are_stable_and_keyed() {
        let a = Keys::new(&ServerKey::new([1; 32]));
        let b = Keys::new(&ServerKey::new([2; 32]));
        assert_eq!(
            a.lookup_hash("mobile", "86 138"),
            a.lookup_hash("mobile", "86 138")
        );
        assert_ne!(
            a.lookup_hash("mobile", "86 138"),
            b.lookup_hash("mobile", "86 138")
        );
        assert_eq!(token_hash("t").len(), 64);
    }
}
