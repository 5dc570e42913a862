//! The simulator's own wire types: fault injection, call counters and the device API.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One of WeChat's endpoints the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Endpoint {
    /// `GET /sns/jscode2session`.
    #[serde(rename = "jscode2session")]
    Jscode2Session,
    /// `GET /cgi-bin/token`.
    #[serde(rename = "token")]
    Token,
    /// `POST /cgi-bin/stable_token`.
    #[serde(rename = "stable_token")]
    StableToken,
    /// `POST /wxa/business/getuserphonenumber`.
    #[serde(rename = "getuserphonenumber")]
    GetUserPhoneNumber,
    /// `GET /wxa/checksession`.
    #[serde(rename = "checksession")]
    CheckSession,
    /// `GET /wxa/resetusersessionkey`.
    #[serde(rename = "resetusersessionkey")]
    ResetUserSessionKey,
    /// `GET /sns/oauth2/access_token` (Official Account, website, mobile App logins).
    #[serde(rename = "oauth2_access_token")]
    OAuthAccessToken,
    /// `GET /sns/userinfo`.
    #[serde(rename = "userinfo")]
    UserInfo,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 8] = [
        Endpoint::Jscode2Session,
        Endpoint::Token,
        Endpoint::StableToken,
        Endpoint::GetUserPhoneNumber,
        Endpoint::CheckSession,
        Endpoint::ResetUserSessionKey,
        Endpoint::OAuthAccessToken,
        Endpoint::UserInfo,
    ];
}

/// The faults injected into one endpoint. Each request first waits `delay_ms`, then
/// draws one number: below `server_error` it gets an HTTP 502, then `busy` (`-1`),
/// then `rate_limited` (`45011`); otherwise it is served. A faulted request is not
/// processed (its code stays unused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    /// Probability (0 to 1) of `{"errcode": -1}`.
    pub busy: f64,
    /// Probability (0 to 1) of `{"errcode": 45011}`.
    pub rate_limited: f64,
    /// Probability (0 to 1) of HTTP 502.
    pub server_error: f64,
    /// Delay before answering, in milliseconds.
    pub delay_ms: u64,
}

impl Fault {
    fn check(&self) -> Result<(), &'static str> {
        let probabilities = [
            (self.busy, "busy"),
            (self.rate_limited, "rate_limited"),
            (self.server_error, "server_error"),
        ];
        for (p, name) in probabilities {
            if !(0.0..=1.0).contains(&p) {
                return Err(name);
            }
        }
        if self.busy + self.rate_limited + self.server_error > 1.0 + f64::EPSILON {
            return Err("sum of probabilities");
        }
        Ok(())
    }
}

/// The faults of every endpoint; an endpoint not named has none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Faults(pub BTreeMap<Endpoint, Fault>);

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// These faults plus `fault` on `endpoint`.
    pub fn with(mut self, endpoint: Endpoint, fault: Fault) -> Self {
        self.0.insert(endpoint, fault);
        self
    }

    /// The faults of `endpoint`.
    pub fn of(&self, endpoint: Endpoint) -> Fault {
        self.0.get(&endpoint).copied().unwrap_or_default()
    }

    /// Checks that probabilities are between 0 and 1 and add up to at most 1.
    pub fn validate(&self) -> Result<(), String> {
        for (endpoint, fault) in &self.0 {
            fault.check().map_err(|field| {
                let name = serde_json::to_string(endpoint).unwrap_or_default();
                format!(
                    "fault {field} of {name} must be between 0 and 1 (and all together at most 1)"
                )
            })?;
        }
        Ok(())
    }
}

/// Requests received per endpoint (faulted ones included) since start or reset.
pub type CallCounts = BTreeMap<Endpoint, u64>;

/// A WeChat user to create on the simulated device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSimUser {
    /// The WeChat nickname.
    pub nickname: String,
    /// The avatar URL; without one, the user has WeChat's grey default avatar (WeChat
    /// never hands out an empty `avatarUrl` for a user who set none).
    #[serde(default)]
    pub avatar_url: String,
    /// The national phone number bound to the WeChat account, if any.
    #[serde(default)]
    pub phone: Option<String>,
    /// The country calling code of `phone` (default `86`).
    #[serde(default = "default_country_code")]
    pub country_code: String,
}

/// The avatar of a simulated user who set none.
pub const DEFAULT_AVATAR_URL: &str = "https://thirdwx.qlogo.cn/mmopen/vi_32/default/132";

fn default_country_code() -> String {
    "86".to_owned()
}

/// The simulator's id of a created user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedUser {
    /// Use it in the device API paths.
    pub user_id: u64,
}

/// The body of every device call: which mini program the user is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InApp {
    /// The mini program's AppID.
    pub appid: String,
}

/// What `wx.login` gives the mini program.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginCode {
    /// The one-time login code (5 minutes).
    pub code: String,
}

impl fmt::Debug for LoginCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginCode(<redacted>)")
    }
}

/// What legacy `getUserInfo` gives the mini program (WeChat's field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfoBundle {
    /// The non-sensitive profile JSON.
    #[serde(rename = "rawData")]
    pub raw_data: String,
    /// hex(sha1(rawData + session_key)).
    pub signature: String,
    /// The full profile, AES-128-CBC under the session key, base64.
    #[serde(rename = "encryptedData")]
    pub encrypted_data: String,
    /// The IV, base64.
    pub iv: String,
}

/// What the phone button gives the mini program: the current `code` and the legacy
/// `encryptedData` + `iv`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneBundle {
    /// The one-time phone code for getuserphonenumber (5 minutes).
    pub code: String,
    /// The phone payload, AES-128-CBC under the session key, base64.
    #[serde(rename = "encryptedData")]
    pub encrypted_data: String,
    /// The IV, base64.
    pub iv: String,
}

impl fmt::Debug for PhoneBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoneBundle")
            .field("code", &"<redacted>")
            .field("iv", &self.iv)
            .finish_non_exhaustive()
    }
}

/// The body of `POST /device/users/{id}/oauth-code`: the person agrees to log in to an
/// Official Account's page (web authorisation), a website (scanning its QR code) or a
/// mobile App (the WeChat SDK), and WeChat hands that app a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthConsent {
    /// The app's AppID (an Official Account, a website or a mobile App).
    pub appid: String,
    /// The scope: `snsapi_base` or `snsapi_userinfo` (Official Account, default
    /// `snsapi_userinfo`), `snsapi_login` (website, the default there), `snsapi_userinfo`
    /// (mobile App, the default there).
    #[serde(default)]
    pub scope: Option<String>,
    /// The person views the page as a snapshot in Moments (Official Account,
    /// `snsapi_base` only): the code's exchange answers `is_snapshotuser: 1` and a
    /// virtual openid.
    #[serde(default)]
    pub snapshot: bool,
}

/// Moves the simulator's clock forward (to expire codes and tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockAdvance {
    /// Seconds to add.
    pub seconds: u64,
}

/// Registers (or updates) an app at run time.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRegistration {
    /// The AppID.
    pub appid: String,
    /// The AppSecret.
    pub secret: String,
    /// Whether the app is bound to an Open Platform account (answers carry unionid).
    #[serde(default)]
    pub unionid: bool,
    /// The kind of app (default `mini_program`).
    #[serde(default)]
    pub kind: miniauth_domain::Channel,
}

impl fmt::Debug for AppRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppRegistration")
            .field("appid", &self.appid)
            .field("unionid", &self.unionid)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_read_from_endpoint_names() {
        let faults: Faults = serde_json::from_str(
            r#"{"jscode2session": {"busy": 0.5}, "stable_token": {"delay_ms": 10}}"#,
        )
        .unwrap();
        assert_eq!(faults.of(Endpoint::Jscode2Session).busy, 0.5);
        assert_eq!(faults.of(Endpoint::StableToken).delay_ms, 10);
        assert_eq!(faults.of(Endpoint::Token), Fault::default());
        assert!(faults.validate().is_ok());
    }

    #[test]
    fn bad_probabilities_are_refused() {
        let over = Faults::none().with(
            Endpoint::Token,
            Fault {
                busy: 1.5,
                ..Fault::default()
            },
        );
        assert!(over.validate().unwrap_err().contains("busy of \"token\""));
        let sum = Faults::none().with(
            Endpoint::Token,
            Fault {
                busy: 0.6,
                rate_limited: 0.6,
                ..Fault::default()
            },
        );
        assert!(sum.validate().is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"token": {"bussy": 1}}"#).is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"nope": {}}"#).is_err());
    }
}
