//! GitEgg's bind keys, accepted during a migration so that front ends holding one keep
//! working: `hex(DES-CBC-PKCS#7(key, iv, "WECHAT_MINI_APP_" + (unionid or openid)))`.
//!
//! DES with a fixed IV is weak and the key never changes between logins; miniauth only
//! *reads* these keys (for one ticket lifetime, decided by the caller) and issues its
//! own tickets from then on.

use std::fmt;

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use thiserror::Error;

type DesCbcEncryptor = cbc::Encryptor<des::Des>;
type DesCbcDecryptor = cbc::Decryptor<des::Des>;

/// What GitEgg puts before the WeChat identity in the plaintext.
pub const LEGACY_BIND_KEY_PREFIX: &str = "WECHAT_MINI_APP_";

/// DES block size.
const BLOCK: usize = 8;
/// A prefix, a 64-character identity and padding fit in 88 bytes (176 hex digits);
/// anything much longer is not a GitEgg key.
const MAX_HEX_LEN: usize = 512;

/// The WeChat identity inside a GitEgg bind key: the unionid when GitEgg's app had one,
/// else the openid (the key alone does not say which).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LegacyIdentity(String);

impl LegacyIdentity {
    /// The unionid or openid.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The unionid or openid, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for LegacyIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a GitEgg bind key was refused. Messages never echo the key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LegacyKeyError {
    /// Empty or blank.
    #[error("the legacy bind key is missing")]
    Missing,
    /// Not hexadecimal digits.
    #[error("the legacy bind key is not hexadecimal")]
    NotHex,
    /// Not a whole number of DES blocks, or implausibly long.
    #[error("the legacy bind key has the wrong length: {hex_digits} hex digits, expected a multiple of 16 up to 512")]
    WrongLength {
        /// How many hex digits were sent.
        hex_digits: usize,
    },
    /// The padding does not check out: another key or IV, or not a GitEgg key.
    #[error("the legacy bind key does not decrypt (bad padding): wrong DES key or IV, or not a GitEgg key")]
    BadPadding,
    /// It decrypts, but not to `WECHAT_MINI_APP_…`.
    #[error("the legacy bind key does not start with WECHAT_MINI_APP_")]
    MissingPrefix,
    /// The part after the prefix is empty or not a WeChat id (1 to 64 letters, digits,
    /// `_` or `-`).
    #[error("the legacy bind key does not hold a valid unionid or openid")]
    InvalidIdentity,
}

/// Decodes (and, for tests and tools, encodes) GitEgg bind keys with the DES key and
/// IV of the GitEgg deployment being migrated.
#[derive(Clone)]
pub struct LegacyBindKeyCodec {
    key: [u8; 8],
    iv: [u8; 8],
}

impl LegacyBindKeyCodec {
    /// A codec for GitEgg's DES `key` and `iv` (8 bytes each, as configured there).
    pub fn new(key: [u8; 8], iv: [u8; 8]) -> Self {
        Self { key, iv }
    }

    /// The identity inside a bind key (hex, either case).
    pub fn decode(&self, bind_key: &str) -> Result<LegacyIdentity, LegacyKeyError> {
        let bind_key = bind_key.trim();
        if bind_key.is_empty() {
            return Err(LegacyKeyError::Missing);
        }
        if !bind_key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LegacyKeyError::NotHex);
        }
        let hex_digits = bind_key.len();
        if hex_digits % (2 * BLOCK) != 0 || hex_digits > MAX_HEX_LEN {
            return Err(LegacyKeyError::WrongLength { hex_digits });
        }
        let ciphertext = hex::decode(bind_key).map_err(|_| LegacyKeyError::NotHex)?;
        let plaintext = DesCbcDecryptor::new(&self.key.into(), &self.iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext)
            .map_err(|_| LegacyKeyError::BadPadding)?;
        let identity = plaintext
            .strip_prefix(LEGACY_BIND_KEY_PREFIX.as_bytes())
            .ok_or(LegacyKeyError::MissingPrefix)?;
        let valid = (1..=64).contains(&identity.len())
            && identity
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(LegacyKeyError::InvalidIdentity);
        }
        // All ASCII, checked just above.
        let identity =
            String::from_utf8(identity.to_vec()).map_err(|_| LegacyKeyError::InvalidIdentity)?;
        Ok(LegacyIdentity(identity))
    }

    /// The bind key GitEgg would hand out for `identity` (lowercase hex).
    pub fn encode(&self, identity: &str) -> String {
        let plaintext = format!("{LEGACY_BIND_KEY_PREFIX}{identity}");
        let ciphertext = DesCbcEncryptor::new(&self.key.into(), &self.iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes());
        hex::encode(ciphertext)
    }
}

/// The application's port: every decoding failure is one `None`.
impl miniauth_application::legacy_key::LegacyBindKeys for LegacyBindKeyCodec {
    fn identity(&self, bind_key: &str) -> Option<String> {
        self.decode(bind_key).ok().map(LegacyIdentity::into_string)
    }
}

impl fmt::Debug for LegacyBindKeyCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LegacyBindKeyCodec { key: <redacted>, iv: <redacted> }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 8] = *b"GitEgg!!";
    const IV: [u8; 8] = *b"12345678";

    fn codec() -> LegacyBindKeyCodec {
        LegacyBindKeyCodec::new(KEY, IV)
    }

    /// Raw DES-CBC without padding, to craft keys with bad contents.
    fn encrypt_raw(plaintext: &[u8]) -> String {
        use cbc::cipher::block_padding::NoPadding;
        hex::encode(
            DesCbcEncryptor::new(&KEY.into(), &IV.into())
                .encrypt_padded_vec_mut::<NoPadding>(plaintext),
        )
    }

    #[test]
    fn a_gitegg_key_decodes_to_its_identity() {
        let key = codec().encode("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(
            codec().decode(&key).unwrap().as_str(),
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
        );
        assert_eq!(
            codec().decode(&key.to_uppercase()).unwrap().into_string(),
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
        );
    }

    #[test]
    fn it_matches_a_reference_des_cbc_vector() {
        // Computed independently with
        // `printf WECHAT_MINI_APP_o1 | openssl enc -des-cbc -K 4769744567672121
        //  -iv 3132333435363738 -provider legacy -provider default | xxd -p`.
        let reference = REFERENCE_VECTOR;
        assert_eq!(codec().encode("o1"), reference);
        assert_eq!(codec().decode(reference).unwrap().as_str(), "o1");
    }

    const REFERENCE_VECTOR: &str = include_str!("../testdata/legacy-o1.hex").trim_ascii();

    #[test]
    fn the_same_identity_always_gives_the_same_key() {
        // GitEgg's flaw, reproduced on purpose: this is how its keys look.
        assert_eq!(codec().encode("o1"), codec().encode("o1"));
    }

    #[test]
    fn empty_is_missing() {
        assert_eq!(codec().decode(""), Err(LegacyKeyError::Missing));
        assert_eq!(codec().decode("   "), Err(LegacyKeyError::Missing));
    }

    #[test]
    fn non_hex_is_refused() {
        assert_eq!(
            codec().decode("zz00112233445566"),
            Err(LegacyKeyError::NotHex)
        );
        assert_eq!(
            codec().decode("v1.eyJhIjoid3gifQ.c2ln"),
            Err(LegacyKeyError::NotHex)
        );
    }

    #[test]
    fn partial_blocks_and_huge_keys_are_the_wrong_length() {
        let key = codec().encode("o1");
        assert_eq!(
            codec().decode(&key[..key.len() - 2]),
            Err(LegacyKeyError::WrongLength {
                hex_digits: key.len() - 2
            })
        );
        assert_eq!(
            codec().decode("abc"),
            Err(LegacyKeyError::WrongLength { hex_digits: 3 })
        );
        let huge = "00".repeat(260);
        assert_eq!(
            codec().decode(&huge),
            Err(LegacyKeyError::WrongLength { hex_digits: 520 })
        );
    }

    #[test]
    fn another_des_key_gives_bad_padding_or_no_prefix() {
        let key = codec().encode("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
        let other = LegacyBindKeyCodec::new(*b"another!", IV);
        // With the wrong key the padding is almost always wrong; when it happens to
        // look right, the prefix is not there.
        assert!(matches!(
            other.decode(&key),
            Err(LegacyKeyError::BadPadding | LegacyKeyError::MissingPrefix)
        ));
        // A block of zeros decrypts to garbage whose last byte is no valid padding
        // with these key and IV (checked deterministically).
        assert_eq!(
            codec().decode("0000000000000000"),
            Err(LegacyKeyError::BadPadding)
        );
    }

    #[test]
    fn a_valid_encryption_of_something_else_has_no_prefix() {
        let other = DesCbcEncryptor::new(&KEY.into(), &IV.into())
            .encrypt_padded_vec_mut::<Pkcs7>(b"WECHAT_APP_o1");
        assert_eq!(
            codec().decode(&hex::encode(other)),
            Err(LegacyKeyError::MissingPrefix)
        );
    }

    #[test]
    fn bad_identities_are_refused() {
        assert_eq!(
            codec().decode(&codec().encode("")),
            Err(LegacyKeyError::InvalidIdentity)
        );
        assert_eq!(
            codec().decode(&codec().encode("o1 OR 1=1")),
            Err(LegacyKeyError::InvalidIdentity)
        );
        assert_eq!(
            codec().decode(&codec().encode(&"o".repeat(65))),
            Err(LegacyKeyError::InvalidIdentity)
        );
        // Valid padding around bytes that are not UTF-8.
        let mut plaintext = LEGACY_BIND_KEY_PREFIX.as_bytes().to_vec();
        plaintext.extend_from_slice(&[0xff, 0xfe]);
        plaintext.extend_from_slice(&[6; 6]);
        assert_eq!(
            codec().decode(&encrypt_raw(&plaintext)),
            Err(LegacyKeyError::InvalidIdentity)
        );
    }

    #[test]
    fn debug_shows_neither_key_nor_iv() {
        let debug = format!("{:?}", codec());
        assert_eq!(
            debug,
            "LegacyBindKeyCodec { key: <redacted>, iv: <redacted> }"
        );
        let error = codec().decode("zz").unwrap_err();
        assert!(!error.to_string().contains("zz"));
    }
}
