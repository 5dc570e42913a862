//! Sealed values: what the event log holds instead of secrets and personal data.
//!
//! The domain never opens them; the personal-data vault port seals and unseals.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret (a session key) sealed with the server key, as opaque text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedSecret(String);

/// A personal datum (phone, nickname, avatar, unionid, client IP) sealed with the
/// account's data key, as opaque text. Erasure destroys the key, after which it can no
/// longer be opened.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedDatum(String);

macro_rules! sealed {
    ($($ty:ident),*) => {$(
        impl $ty {
            /// Wraps text produced by the vault.
            pub fn from_sealed_text(text: String) -> Self {
                Self(text)
            }
            /// The sealed text, for the vault to open or for storage.
            pub fn as_sealed_text(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(<{} sealed bytes>)", stringify!($ty), self.0.len())
            }
        }
    )*};
}
sealed!(SealedSecret, SealedDatum);

/// Which personal datum a sealed value holds. The vault binds it into the sealing, so a
/// sealed phone does not open as a nickname (nor under another account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersonalField {
    /// The national phone number.
    Phone,
    /// The nickname.
    Nickname,
    /// The avatar URL.
    AvatarUrl,
    /// The Open Platform id.
    UnionId,
    /// The client IP recorded in an event's metadata.
    ClientIp,
}

impl PersonalField {
    /// The stable name, part of the sealed value's associated data.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Phone => "phone",
            Self::Nickname => "nickname",
            Self::AvatarUrl => "avatar_url",
            Self::UnionId => "unionid",
            Self::ClientIp => "client_ip",
        }
    }
}

/// A unionid as the log keeps it: a keyed hash (HMAC under a key derived from the
/// server key) for lookups across the apps of a tenant, and the value sealed with the
/// account's data key. Erasure destroys the key; the hash alone cannot be reversed
/// without the server key, and the read models drop it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedUnionId {
    /// hex(HMAC-SHA-256) of the unionid under the lookup key.
    pub hash: String,
    /// The unionid sealed with the account's data key; absent for unionids recorded in
    /// clear by event version 1 (read through the upcaster, which keeps only the hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedDatum>,
}

impl fmt::Debug for SealedUnionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedUnionId")
            .field("hash", &self.hash)
            .field("sealed", &self.sealed)
            .finish()
    }
}
