//! A typed client of the simulator's device and control APIs, for tests and demos.

use miniauth_domain::AppId;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::api::{
    AppRegistration, CallCounts, ClockAdvance, CreatedUser, Faults, InApp, LoginCode, NewSimUser,
    OAuthConsent, PhoneBundle, UserInfoBundle,
};

/// Why a device or control call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The simulator could not be reached or answered something unreadable.
    #[error("simulator unreachable or unreadable: {0}")]
    Transport(String),
    /// The simulator refused the call.
    #[error("simulator refused the call (HTTP {status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The simulator's explanation.
        message: String,
    },
}

/// Plays the mini program (and the test operator) against a running simulator.
#[derive(Debug, Clone)]
pub struct DeviceClient {
    http: reqwest::Client,
    base_url: String,
}

impl DeviceClient {
    /// A client of the simulator at `base_url` (`http://127.0.0.1:9100`).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Option<Value>, DeviceError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| DeviceError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| DeviceError::Transport(e.without_url().to_string()))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(DeviceError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DeviceError::Transport(format!("unreadable answer: {e}")))
    }

    async fn fetch<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, DeviceError> {
        let value = self
            .send(method, path, body)
            .await?
            .ok_or_else(|| DeviceError::Transport("empty answer".to_owned()))?;
        serde_json::from_value(value)
            .map_err(|e| DeviceError::Transport(format!("unexpected answer: {e}")))
    }

    fn in_app(appid: &AppId) -> InApp {
        InApp {
            appid: appid.as_str().to_owned(),
        }
    }

    /// Creates a WeChat user; returns its simulator id.
    pub async fn create_user(&self, user: &NewSimUser) -> Result<u64, DeviceError> {
        let created: CreatedUser = self
            .fetch(Method::POST, "/device/users", Some(user))
            .await?;
        Ok(created.user_id)
    }

    /// `wx.login` in `appid`: a one-time login code (and a new session key).
    pub async fn login(&self, appid: &AppId, user_id: u64) -> Result<String, DeviceError> {
        let code: LoginCode = self
            .fetch(
                Method::POST,
                &format!("/device/users/{user_id}/login"),
                Some(&Self::in_app(appid)),
            )
            .await?;
        Ok(code.code)
    }

    /// The person agrees to an OAuth login of an Official Account, a website or a
    /// mobile App: the code WeChat hands the app.
    pub async fn oauth_code(
        &self,
        user_id: u64,
        consent: &OAuthConsent,
    ) -> Result<String, DeviceError> {
        let code: LoginCode = self
            .fetch(
                Method::POST,
                &format!("/device/users/{user_id}/oauth-code"),
                Some(consent),
            )
            .await?;
        Ok(code.code)
    }

    /// Legacy `getUserInfo` in `appid`, under the user's current session key.
    pub async fn user_info(
        &self,
        appid: &AppId,
        user_id: u64,
    ) -> Result<UserInfoBundle, DeviceError> {
        self.fetch(
            Method::POST,
            &format!("/device/users/{user_id}/user-info"),
            Some(&Self::in_app(appid)),
        )
        .await
    }

    /// The phone button in `appid`: a phone code and the legacy encrypted payload.
    pub async fn phone(&self, appid: &AppId, user_id: u64) -> Result<PhoneBundle, DeviceError> {
        self.fetch(
            Method::POST,
            &format!("/device/users/{user_id}/phone"),
            Some(&Self::in_app(appid)),
        )
        .await
    }

    /// The injected faults.
    pub async fn faults(&self) -> Result<Faults, DeviceError> {
        self.fetch(Method::GET, "/sim/faults", None::<&()>).await
    }

    /// Replaces the injected faults.
    pub async fn set_faults(&self, faults: &Faults) -> Result<(), DeviceError> {
        self.send(Method::PUT, "/sim/faults", Some(faults))
            .await
            .map(drop)
    }

    /// Requests per WeChat endpoint since start or reset.
    pub async fn calls(&self) -> Result<CallCounts, DeviceError> {
        self.fetch(Method::GET, "/sim/calls", None::<&()>).await
    }

    /// Resets the call counters.
    pub async fn reset_calls(&self) -> Result<(), DeviceError> {
        self.send(Method::DELETE, "/sim/calls", None::<&()>)
            .await
            .map(drop)
    }

    /// Moves the simulator's clock forward.
    pub async fn advance_clock(&self, seconds: u64) -> Result<(), DeviceError> {
        self.send(
            Method::POST,
            "/sim/clock/advance",
            Some(&ClockAdvance { seconds }),
        )
        .await
        .map(drop)
    }

    /// Registers (or replaces) an app.
    pub async fn register_app(&self, app: &AppRegistration) -> Result<(), DeviceError> {
        self.send(Method::POST, "/sim/apps", Some(app))
            .await
            .map(drop)
    }

    /// Invalidates every access token of `appid` (as if another party had rotated it).
    pub async fn revoke_tokens(&self, appid: &AppId) -> Result<(), DeviceError> {
        self.send(
            Method::POST,
            "/sim/tokens/revoke",
            Some(&Self::in_app(appid)),
        )
        .await
        .map(drop)
    }
}
