//! AES-256-GCM sealing in a versioned text format, keyed lookups and token hashes.
//!
//! Sealed text is `v2.<nonce>.<ciphertext>` (URL-safe base64 without padding). Its
//! associated data names what the value is (its purpose) and whose it is (its owner:
//! an account id, a user id, a key name), so a sealed value copied to another column or
//! another row does not open there.
//!
//! `v1.<nonce>.<ciphertext>`, the format of earlier releases, bound at most the purpose
//! (and for some values the owner). It still opens where the caller says which legacy
//! associated data it was sealed with ([`Legacy`]); values that can be re-sealed are
//! re-sealed as v2 when the store starts (docs/operations.md, "Sealed values").

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::ServerKey;

/// The format written today.
pub(crate) const V2: &str = "v2";
/// The format of earlier releases, opened only with the caller's legacy associated data.
pub(crate) const V1: &str = "v1";

/// Why sealed text did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpenError {
    /// Not `v2.<nonce>.<ciphertext>` (nor an accepted `v1.…`).
    #[error("sealed text is malformed or of an unknown version")]
    Malformed,
    /// The key, the purpose or the owner is not the one it was sealed with.
    #[error("sealed text does not open with this key for this purpose and owner")]
    WrongKey,
}

/// What a sealed value is for and whose it is: its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Binding<'a> {
    /// What the value is: `session_key`, `users.mobile`, `personal.phone`, …
    pub(crate) purpose: &'a str,
    /// Whose it is: `account:{appid}:{openid}`, `user:{id}`, `key_material:{name}`.
    pub(crate) owner: &'a str,
}

impl<'a> Binding<'a> {
    pub(crate) fn new(purpose: &'a str, owner: &'a str) -> Self {
        Self { purpose, owner }
    }

    /// Length-prefixed, so that no (purpose, owner) pair collides with another.
    fn associated_data(&self) -> Vec<u8> {
        let mut ad = Vec::with_capacity(16 + self.purpose.len() + self.owner.len());
        ad.extend_from_slice(b"miniauth-v2");
        for part in [self.purpose, self.owner] {
            ad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            ad.extend_from_slice(part.as_bytes());
        }
        ad
    }
}

/// Whether `v1` text opens, and with which associated data it was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Legacy<'a> {
    /// Only v2 opens.
    Refused,
    /// v1 text opens with this associated data (what the earlier release used).
    Opens(&'a str),
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

    /// `v2.<nonce>.<ciphertext>`, bound to `binding`.
    pub(crate) fn seal(&self, binding: Binding<'_>, plaintext: &[u8]) -> String {
        self.seal_with(V2, &binding.associated_data(), plaintext)
    }

    /// The v1 format, as earlier releases wrote it: for tests of the migration path.
    #[cfg(test)]
    pub(crate) fn seal_v1(&self, legacy_ad: &str, plaintext: &[u8]) -> String {
        self.seal_with(V1, legacy_ad.as_bytes(), plaintext)
    }

    fn seal_with(&self, version: &str, aad: &[u8], plaintext: &[u8]) -> String {
        let nonce: [u8; 12] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            // Encryption fails only for messages beyond GCM's 64 GiB limit.
            .expect("AES-GCM encrypts any message under 64 GiB");
        format!(
            "{version}.{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(ciphertext)
        )
    }

    /// Opens v2 text sealed for `binding`, or v1 text when `legacy` allows it.
    pub(crate) fn open(
        &self,
        binding: Binding<'_>,
        legacy: Legacy<'_>,
        sealed: &str,
    ) -> Result<Vec<u8>, OpenError> {
        let mut parts = sealed.split('.');
        let (Some(version), Some(nonce), Some(ciphertext), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OpenError::Malformed);
        };
        let aad = match (version, legacy) {
            (V2, _) => binding.associated_data(),
            (V1, Legacy::Opens(ad)) => ad.as_bytes().to_vec(),
            _ => return Err(OpenError::Malformed),
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
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::WrongKey)
    }
}

/// Whether sealed text is of the v1 format (to be re-sealed where it can be).
pub(crate) fn is_v1(sealed: &str) -> bool {
    sealed.starts_with("v1.")
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
    fn sealed_text_opens_only_with_its_key_purpose_and_owner() {
        let sealer = Sealer::new(&[7; 32]);
        let alice = Binding::new("users.mobile", "user:1");
        let sealed = sealer.seal(alice, b"13800138000");
        assert!(sealed.starts_with("v2."));
        assert!(!sealed.contains("13800138000"));
        assert_eq!(
            sealer.open(alice, Legacy::Refused, &sealed).unwrap(),
            b"13800138000"
        );
        for other in [
            Binding::new("users.nickname", "user:1"),
            Binding::new("users.mobile", "user:2"),
            // The length prefixes keep the boundary between purpose and owner.
            Binding::new("users.mobileuser:", "1"),
        ] {
            assert_eq!(
                sealer.open(other, Legacy::Refused, &sealed),
                Err(OpenError::WrongKey),
                "{other:?}"
            );
        }
        assert_eq!(
            Sealer::new(&[8; 32]).open(alice, Legacy::Refused, &sealed),
            Err(OpenError::WrongKey)
        );
        assert_eq!(
            sealer.open(alice, Legacy::Refused, "v3.a.b"),
            Err(OpenError::Malformed)
        );
        assert_eq!(
            sealer.open(alice, Legacy::Refused, "garbage"),
            Err(OpenError::Malformed)
        );
        assert_ne!(sealer.seal(alice, b"x"), sealer.seal(alice, b"x"));
    }

    #[test]
    fn v1_text_opens_only_where_its_legacy_associated_data_is_accepted() {
        let sealer = Sealer::new(&[7; 32]);
        let binding = Binding::new("users.mobile", "user:1");
        let old = sealer.seal_v1("mobile", b"86 13800138000");
        assert!(is_v1(&old));
        assert_eq!(
            sealer.open(binding, Legacy::Opens("mobile"), &old).unwrap(),
            b"86 13800138000"
        );
        assert_eq!(
            sealer.open(binding, Legacy::Refused, &old),
            Err(OpenError::Malformed)
        );
        assert_eq!(
            sealer.open(binding, Legacy::Opens("nickname"), &old),
            Err(OpenError::WrongKey)
        );
        // v2 text never opens with the legacy associated data.
        let new = sealer.seal(Binding::new("mobile", ""), b"x");
        assert!(sealer.open(binding, Legacy::Opens("mobile"), &new).is_err());
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
