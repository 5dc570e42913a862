//! Identifiers that parse at the edge and cannot be invalid past it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::InvalidValue;

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A mini program's AppID: `wx` followed by 16 letters or digits (`wx4f4bc4dec97d474b`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(String);

impl AppId {
    /// Parses an AppID, refusing anything that is not `wx` + 16 alphanumerics.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let valid = raw.len() == 18
            && raw.starts_with("wx")
            && raw[2..].chars().all(|c| c.is_ascii_alphanumeric());
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue::new(
                "appid",
                "must be `wx` followed by 16 letters or digits",
            ))
        }
    }

    /// The AppID as WeChat spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A WeChat user's id within one mini program (openid is per appid).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OpenId(String);

impl OpenId {
    /// Parses an openid: 1 to 64 letters, digits, `_` or `-`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if (1..=64).contains(&raw.len()) && raw.chars().all(is_token_char) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue::new(
                "openid",
                "must be 1 to 64 letters, digits, `_` or `-`",
            ))
        }
    }

    /// The openid as WeChat spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A WeChat user's id shared by the apps of one Open Platform account.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnionId(String);

impl UnionId {
    /// Parses a unionid: 1 to 64 letters, digits, `_` or `-`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if (1..=64).contains(&raw.len()) && raw.chars().all(is_token_char) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue::new(
                "unionid",
                "must be 1 to 64 letters, digits, `_` or `-`",
            ))
        }
    }

    /// The unionid as WeChat spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of a user of the business system (the user directory's primary key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct UserId(i64);

impl UserId {
    /// Accepts only positive ids.
    pub fn new(raw: i64) -> Result<Self, InvalidValue> {
        if raw > 0 {
            Ok(Self(raw))
        } else {
            Err(InvalidValue::new("user_id", "must be a positive integer"))
        }
    }

    /// Parses a decimal user id.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        raw.parse::<i64>()
            .map_err(|_| InvalidValue::new("user_id", "must be a positive integer"))
            .and_then(Self::new)
    }

    /// The id as a number.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// The tenant of the business system an app's users belong to.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Parses a tenant name: 1 to 64 letters, digits, `_` or `-`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if (1..=64).contains(&raw.len()) && raw.chars().all(is_token_char) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue::new(
                "tenant",
                "must be 1 to 64 letters, digits, `_` or `-`",
            ))
        }
    }

    /// The tenant's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of one `SocialAccount` aggregate: `{appid}:{openid}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    /// The account of `openid` in `appid`.
    pub fn new(appid: &AppId, openid: &OpenId) -> Self {
        Self(format!("{}:{}", appid.as_str(), openid.as_str()))
    }

    /// Parses `{appid}:{openid}`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let (appid, openid) = raw
            .split_once(':')
            .ok_or_else(|| InvalidValue::new("account_id", "must be `{appid}:{openid}`"))?;
        Ok(Self::new(&AppId::parse(appid)?, &OpenId::parse(openid)?))
    }

    /// The app part.
    pub fn appid(&self) -> AppId {
        AppId(self.0[..18].to_owned())
    }

    /// The openid part.
    pub fn openid(&self) -> OpenId {
        OpenId(self.0[19..].to_owned())
    }

    /// The aggregate id as the event store keys it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A one-time code from the mini program: the login code of `wx.login` or the code of
/// the phone button. Short-lived and single-use, but still a credential: `Debug`
/// does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimeCode(String);

impl OneTimeCode {
    /// Parses a code sent as `field`: 1 to 128 letters, digits, `_` or `-`.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidValue> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(InvalidValue::new(field, "is missing or empty"));
        }
        if raw.len() > 128 || !raw.chars().all(is_token_char) {
            return Err(InvalidValue::new(
                field,
                "must be at most 128 letters, digits, `_` or `-`",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The code, to send to WeChat.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OneTimeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneTimeCode(<redacted>)")
    }
}

// `FromStr` is `parse` under the name the standard library and clap's `value_parser`
// look for, so a command-line flag is validated exactly like a request field.
macro_rules! string_conversions {
    ($($ty:ident),*) => {$(
        impl FromStr for $ty {
            type Err = InvalidValue;
            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                Self::parse(raw)
            }
        }
        impl TryFrom<String> for $ty {
            type Error = InvalidValue;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::parse(&raw)
            }
        }
        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($ty), self.0)
            }
        }
    )*};
}
string_conversions!(AppId, OpenId, UnionId, TenantId, AccountId);

impl FromStr for UserId {
    type Err = InvalidValue;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl TryFrom<i64> for UserId {
    type Error = InvalidValue;
    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        Self::new(raw)
    }
}

impl From<UserId> for i64 {
    fn from(value: UserId) -> i64 {
        value.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appid_must_be_wx_and_sixteen_alphanumerics() {
        assert!(AppId::parse("wx4f4bc4dec97d474b").is_ok());
        assert!(AppId::parse("wx4f4bc4dec97d474").is_err());
        assert!(AppId::parse("xx4f4bc4dec97d474b").is_err());
        assert!(AppId::parse("wx4f4bc4dec97d47-b").is_err());
        assert!(AppId::parse("").is_err());
    }

    #[test]
    fn str_parse_validates_like_parse() {
        assert_eq!(
            "wx4f4bc4dec97d474b".parse::<AppId>(),
            AppId::parse("wx4f4bc4dec97d474b")
        );
        assert_eq!("nope".parse::<AppId>().unwrap_err().field, "appid");
        assert_eq!("a b".parse::<OpenId>().unwrap_err().field, "openid");
        assert_eq!("a b".parse::<TenantId>().unwrap_err().field, "tenant");
        assert_eq!("42".parse::<UserId>().map(UserId::get), Ok(42));
        assert_eq!("0".parse::<UserId>().unwrap_err().field, "user_id");
        assert!("x".parse::<UserId>().is_err());
    }

    #[test]
    fn openid_refuses_empty_long_and_odd_characters() {
        assert!(OpenId::parse("oGZUI0egBJY1zhBYw2KhdUfwVJJE").is_ok());
        assert!(OpenId::parse("").is_err());
        assert!(OpenId::parse(&"a".repeat(65)).is_err());
        assert!(OpenId::parse("a b").is_err());
        assert!(OpenId::parse("a:b").is_err());
    }

    #[test]
    fn one_time_codes_refuse_empty_and_odd_input() {
        assert_eq!(
            OneTimeCode::parse("code", " 081abc ").unwrap().expose(),
            "081abc"
        );
        assert_eq!(
            OneTimeCode::parse("code", "").unwrap_err().reason,
            "is missing or empty"
        );
        assert!(OneTimeCode::parse("code", "a b").is_err());
        assert!(OneTimeCode::parse("code", &"a".repeat(129)).is_err());
        assert!(
            !format!("{:?}", OneTimeCode::parse("code", "secret1").unwrap()).contains("secret1")
        );
    }

    #[test]
    fn user_id_is_positive() {
        assert_eq!(UserId::parse("42").unwrap().get(), 42);
        assert!(UserId::parse("0").is_err());
        assert!(UserId::parse("-3").is_err());
        assert!(UserId::parse("x").is_err());
    }

    #[test]
    fn account_id_round_trips_its_parts() {
        let appid = AppId::parse("wx4f4bc4dec97d474b").unwrap();
        let openid = OpenId::parse("oGZUI0egBJY1zhBYw2KhdUfwVJJE").unwrap();
        let id = AccountId::new(&appid, &openid);
        assert_eq!(
            id.as_str(),
            "wx4f4bc4dec97d474b:oGZUI0egBJY1zhBYw2KhdUfwVJJE"
        );
        assert_eq!(id.appid(), appid);
        assert_eq!(id.openid(), openid);
        assert_eq!(AccountId::parse(id.as_str()).unwrap(), id);
        assert!(AccountId::parse("wx4f4bc4dec97d474b").is_err());
    }

    #[test]
    fn serde_refuses_invalid_values() {
        assert!(serde_json::from_str::<AppId>("\"nope\"").is_err());
        assert!(serde_json::from_str::<UserId>("0").is_err());
        let appid: AppId = serde_json::from_str("\"wx4f4bc4dec97d474b\"").unwrap();
        assert_eq!(
            serde_json::to_string(&appid).unwrap(),
            "\"wx4f4bc4dec97d474b\""
        );
    }
}
