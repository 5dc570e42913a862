//! One type for every secret the adapters hold (AppSecrets, client secrets, admin and
//! configuration secrets): its `Debug` never shows it, and comparisons are constant
//! time.

use std::fmt;

use serde::Deserialize;
use subtle::ConstantTimeEq;

/// A secret string. The only way to read it is [`Secret::expose`], at the point where
/// an adapter hands it to whoever needs it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Handle with care.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(&other.0)
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_it_and_comparison_is_exact() {
        let secret = Secret::new("s3cr3t");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert!(secret.matches("s3cr3t"));
        assert!(!secret.matches("s3cr3"));
        assert_eq!(secret, Secret::new("s3cr3t"));
        assert_ne!(secret, Secret::new("other"));
        let parsed: Secret = serde_json::from_str("\"s3cr3t\"").unwrap();
        assert_eq!(parsed.expose(), "s3cr3t");
    }
}
