//! Sealed values: what the event log holds instead of secrets and personal data.
//!
//! The domain never opens them; the personal-data vault port seals and unseals.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret (a session key) sealed with the server key, as opaque text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedSecret(String);

/// A personal datum (phone, nickname, avatar) sealed with the account's data key, as
/// opaque text. Erasure destroys the key, after which it can no longer be opened.
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
