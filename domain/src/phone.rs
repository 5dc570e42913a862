//! Phone numbers as WeChat verifies them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::InvalidValue;

/// A verified phone number: the national number without country code, and the
/// country calling code (`86` for mainland China).
///
/// `Debug` masks the middle digits: the number is personal data.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PhoneNumber {
    pure: String,
    country_code: String,
}

impl PhoneNumber {
    /// Builds a number from WeChat's `purePhoneNumber` and `countryCode` (a leading
    /// `+` on the country code is accepted).
    pub fn new(pure: &str, country_code: &str) -> Result<Self, InvalidValue> {
        let pure = pure.trim();
        let country_code = country_code.trim().trim_start_matches('+');
        if !(4..=20).contains(&pure.len()) || !pure.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidValue::new("phone", "must be 4 to 20 digits"));
        }
        if !(1..=4).contains(&country_code.len())
            || !country_code.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(InvalidValue::new("country_code", "must be 1 to 4 digits"));
        }
        Ok(Self {
            pure: pure.to_owned(),
            country_code: country_code.to_owned(),
        })
    }

    /// The national number, as the user directory stores it.
    pub fn pure(&self) -> &str {
        &self.pure
    }

    /// The country calling code, digits only.
    pub fn country_code(&self) -> &str {
        &self.country_code
    }

    /// The number with its middle hidden, for display: `138****8000`.
    pub fn masked(&self) -> String {
        mask_digits(&self.pure)
    }
}

/// Hides the middle of a number: an 11-digit number keeps 3 leading and 4 trailing
/// digits (`138****8000`); shorter numbers keep proportionally fewer.
pub fn mask_digits(digits: &str) -> String {
    let len = digits.chars().count();
    let keep_head = 3.min(len * 3 / 11);
    let keep_tail = 4.min(len * 4 / 11);
    let head: String = digits.chars().take(keep_head).collect();
    let tail: String = digits.chars().skip(len - keep_tail).collect();
    format!("{head}{}{tail}", "*".repeat(len - keep_head - keep_tail))
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber(+{} {})", self.country_code, self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_pure_number_and_country_code() {
        let phone = PhoneNumber::new("13800138000", "86").unwrap();
        assert_eq!(phone.pure(), "13800138000");
        assert_eq!(phone.country_code(), "86");
        assert_eq!(
            PhoneNumber::new("4155550100", "+1").unwrap().country_code(),
            "1"
        );
    }

    #[test]
    fn refuses_what_is_not_a_number() {
        assert!(PhoneNumber::new("138-0013", "86").is_err());
        assert!(PhoneNumber::new("123", "86").is_err());
        assert!(PhoneNumber::new("13800138000", "").is_err());
        assert!(PhoneNumber::new("13800138000", "86a").is_err());
    }

    #[test]
    fn debug_and_mask_hide_the_middle() {
        let phone = PhoneNumber::new("13800138000", "86").unwrap();
        assert_eq!(phone.masked(), "138****8000");
        assert!(!format!("{phone:?}").contains("13800138000"));
        assert_eq!(mask_digits("12345"), "1***5");
    }
}
