//! A faithful simulator of WeChat's servers and of the mini program, so that miniauth
//! runs, demos and is tested end to end with no network. See `docs/simulator.md`.
//!
//! * WeChat's endpoints (`/sns/jscode2session`, `/cgi-bin/token`, `/cgi-bin/stable_token`,
//!   `/wxa/business/getuserphonenumber`, `/wxa/checksession`, `/wxa/resetusersessionkey`)
//!   with WeChat's rules and errcodes;
//! * the OAuth endpoints of the other channels (`/sns/oauth2/access_token`,
//!   `/sns/userinfo`) and the consent pages a browser is sent to
//!   (`/connect/oauth2/authorize`, `/connect/qrconnect`);
//! * a device API (`/device/...`) that plays the mini program: users, `wx.login`,
//!   `getUserInfo`, the phone button; and the person agreeing to an Official Account,
//!   website or mobile App login (`oauth-code`);
//! * a control API (`/sim/...`): fault injection, call counters, the clock, apps, tokens.

mod api;
mod device_client;
mod routes;
mod state;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use miniauth_domain::{AppId, Channel, OpenId, SessionKey};
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use api::{
    AppRegistration, CallCounts, ClockAdvance, CreatedUser, Endpoint, Fault, Faults, InApp,
    LoginCode, NewSimUser, OAuthConsent, PhoneBundle, UserInfoBundle,
};
pub use device_client::{DeviceClient, DeviceError};

use crate::config::Secret;
use state::{AppState, State};

/// An app the simulator knows: a mini program, an Official Account, a website or a
/// mobile App.
#[derive(Debug, Clone, Deserialize)]
pub struct SimApp {
    /// Its AppID.
    pub appid: AppId,
    /// Its AppSecret (code2session and the token endpoints check it: 40125).
    pub secret: Secret,
    /// Whether it is bound to an Open Platform account: only then do answers and
    /// payloads carry the unionid (one per user, shared by all such apps).
    #[serde(default)]
    pub unionid: bool,
    /// Its kind (default `mini_program`): which login WeChat serves it.
    #[serde(default)]
    pub kind: Channel,
}

/// The simulator's configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// The mini programs (more can be added at run time: `POST /sim/apps`).
    pub apps: Vec<SimApp>,
    /// The faults injected from the start (changeable: `PUT /sim/faults`).
    pub faults: Faults,
}

/// The demo app of the simulator and of miniauth's embedded default: one demo world in
/// every doc and example.
pub const DEMO_APPID: &str = "wxdemo000000000001";
/// The demo app's secret (a simulator secret: never a real app's).
pub const DEMO_SECRET: &str = "demo-secret-not-for-production";
/// The second demo app: the same Open Platform account (unionid) and tenant as the first.
pub const DEMO_SECOND_APPID: &str = "wxdemo000000000002";
/// The second demo app's secret.
pub const DEMO_SECOND_SECRET: &str = "demo-secret-2-not-for-production";
/// The demo Official Account (web authorisation), same Open Platform account and tenant.
pub const DEMO_OFFICIAL_ACCOUNT_APPID: &str = "wxdemo000000000003";
/// The demo Official Account's secret.
pub const DEMO_OFFICIAL_ACCOUNT_SECRET: &str = "demo-secret-3-not-for-production";
/// The demo website (QR login), same Open Platform account and tenant.
pub const DEMO_WEBSITE_APPID: &str = "wxdemo000000000004";
/// The demo website's secret.
pub const DEMO_WEBSITE_SECRET: &str = "demo-secret-4-not-for-production";
/// The demo mobile App, same Open Platform account and tenant.
pub const DEMO_MOBILE_APP_APPID: &str = "wxdemo000000000005";
/// The demo mobile App's secret.
pub const DEMO_MOBILE_APP_SECRET: &str = "demo-secret-5-not-for-production";

impl SimConfig {
    /// The demo apps of one Open Platform account (one unionid per person in all):
    /// two mini programs, [`DEMO_APPID`] (secret [`DEMO_SECRET`]) and
    /// [`DEMO_SECOND_APPID`] (secret [`DEMO_SECOND_SECRET`]), an Official Account
    /// ([`DEMO_OFFICIAL_ACCOUNT_APPID`]), a website ([`DEMO_WEBSITE_APPID`]) and a mobile
    /// App ([`DEMO_MOBILE_APP_APPID`]).
    pub fn demo() -> Self {
        let app = |appid: &str, secret: &str, kind| SimApp {
            appid: AppId::parse(appid).expect("valid demo appid"),
            secret: Secret::new(secret),
            unionid: true,
            kind,
        };
        Self {
            apps: vec![
                app(DEMO_APPID, DEMO_SECRET, Channel::MiniProgram),
                app(DEMO_SECOND_APPID, DEMO_SECOND_SECRET, Channel::MiniProgram),
                app(
                    DEMO_OFFICIAL_ACCOUNT_APPID,
                    DEMO_OFFICIAL_ACCOUNT_SECRET,
                    Channel::OfficialAccount,
                ),
                app(DEMO_WEBSITE_APPID, DEMO_WEBSITE_SECRET, Channel::Website),
                app(
                    DEMO_MOBILE_APP_APPID,
                    DEMO_MOBILE_APP_SECRET,
                    Channel::MobileApp,
                ),
            ],
            faults: Faults::none(),
        }
    }
}

/// Why the simulator cannot start or refused a setting.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A bad configuration or fault setting.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    /// The socket could not be bound or served.
    #[error("simulator I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The simulator: its state and its router. Clones share the state.
#[derive(Clone)]
pub struct Simulator {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator").finish_non_exhaustive()
    }
}

impl Simulator {
    /// A simulator with these apps and faults, no users yet.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.faults.validate().map_err(SimError::Config)?;
        let mut apps = HashMap::new();
        for app in config.apps {
            let appid = app.appid.as_str().to_owned();
            if apps.contains_key(&appid) {
                return Err(SimError::Config(format!("app {appid} is configured twice")));
            }
            apps.insert(
                appid,
                AppState::new(app.secret.expose().to_owned(), app.unionid, app.kind),
            );
        }
        Ok(Self {
            state: Arc::new(Mutex::new(State::new(apps, config.faults))),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside a handler cannot leave the maps half-updated in a way that
        // matters for a simulator: keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The axum app serving WeChat's endpoints, the device API and the control API.
    pub fn router(&self) -> axum::Router {
        routes::router(self.clone())
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) -> Result<(), SimError> {
        faults.validate().map_err(SimError::Config)?;
        self.lock().faults = faults;
        Ok(())
    }

    /// Requests received per endpoint since start or the last reset.
    pub fn calls(&self) -> CallCounts {
        self.lock().calls.clone()
    }

    /// Sets every call counter to zero.
    pub fn reset_calls(&self) {
        self.lock().reset_calls();
    }

    /// The user's current session key in `appid` (to check what a client obtained).
    pub fn session_key(&self, appid: &AppId, user_id: u64) -> Option<SessionKey> {
        self.lock().session_key(user_id, appid.as_str())
    }

    /// The user's openid in `appid`, once they logged in there.
    pub fn openid(&self, appid: &AppId, user_id: u64) -> Option<OpenId> {
        let openid = self.lock().openid(user_id, appid.as_str())?;
        OpenId::parse(&openid).ok()
    }

    /// Serves the simulator on `listen` (port 0 picks a free port) on a tokio task of
    /// this process, until [`RunningSimulator::shutdown`] or drop.
    pub async fn start(self, listen: SocketAddr) -> Result<RunningSimulator, SimError> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self.router();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the WeChat simulator stopped");
            }
        });
        tracing::info!(%addr, "WeChat simulator listening");
        Ok(RunningSimulator {
            addr,
            simulator: self,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A simulator serving on a socket of this process.
pub struct RunningSimulator {
    /// Where it listens.
    pub addr: SocketAddr,
    simulator: Simulator,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for RunningSimulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningSimulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningSimulator {
    /// `http://{addr}`: the `api_base` for the client, and the base of the device API.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulator behind it (faults, counters, session keys).
    pub fn simulator(&self) -> &Simulator {
        &self.simulator
    }

    /// A client of its device and control API.
    pub fn device(&self) -> DeviceClient {
        DeviceClient::new(self.base_url())
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a simulator with `config` in this process (see [`Simulator::start`]).
pub async fn start(listen: SocketAddr, config: SimConfig) -> Result<RunningSimulator, SimError> {
    Simulator::new(config)?.start(listen).await
}

/// Serves a simulator with `config` on `listen` until Ctrl-C: `miniauth sim --listen`.
pub async fn serve(listen: SocketAddr, config: SimConfig) -> Result<(), SimError> {
    let simulator = Simulator::new(config)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "WeChat simulator listening");
    axum::serve(listener, simulator.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
