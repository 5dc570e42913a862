//! Helpers shared by the integration tests: a simulator on a random port and a client
//! with short retry delays pointed at it.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use miniauth_domain::{AppId, Channel, OneTimeCode};
use miniauth_wechat::sim::{self, Endpoint, NewSimUser, RunningSimulator, SimApp, SimConfig};
use miniauth_wechat::{AppCredentials, ClientConfig, RetryPolicy, Secret, WeChatClient};

/// Bound to an Open Platform account.
pub const BOUND: &str = "wxa000000000000001";
/// Also bound to it.
pub const BOUND_TOO: &str = "wxa000000000000002";
/// Not bound: no unionid.
pub const UNBOUND: &str = "wxb000000000000001";
/// An Official Account bound to the same Open Platform account as [`BOUND`].
pub const OFFICIAL: &str = "wxc000000000000001";
/// A website (QR login), bound too.
pub const WEBSITE: &str = "wxc000000000000002";
/// A mobile App, bound too.
pub const MOBILE: &str = "wxc000000000000003";

pub fn appid(raw: &str) -> AppId {
    AppId::parse(raw).unwrap()
}

pub fn secret_of(appid: &str) -> String {
    format!("secret-of-{appid}")
}

pub fn code(raw: &str) -> OneTimeCode {
    OneTimeCode::parse("code", raw).unwrap()
}

pub fn sim_config() -> SimConfig {
    let app = |id: &str, unionid, kind| SimApp {
        appid: appid(id),
        secret: Secret::new(secret_of(id)),
        unionid,
        kind,
    };
    SimConfig {
        apps: vec![
            app(BOUND, true, Channel::MiniProgram),
            app(BOUND_TOO, true, Channel::MiniProgram),
            app(UNBOUND, false, Channel::MiniProgram),
            app(OFFICIAL, true, Channel::OfficialAccount),
            app(WEBSITE, true, Channel::Website),
            app(MOBILE, true, Channel::MobileApp),
        ],
        ..SimConfig::default()
    }
}

pub async fn start_sim() -> RunningSimulator {
    sim::start("127.0.0.1:0".parse().unwrap(), sim_config())
        .await
        .unwrap()
}

pub fn fast_config(api_base: String) -> ClientConfig {
    ClientConfig {
        api_base,
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            retry_after: Duration::from_secs(3),
        },
        apps: [BOUND, BOUND_TOO, UNBOUND, OFFICIAL, WEBSITE, MOBILE]
            .iter()
            .map(|id| AppCredentials {
                appid: appid(id),
                secret: Secret::new(secret_of(id)),
            })
            .collect(),
    }
}

pub fn client_for(sim: &RunningSimulator) -> WeChatClient {
    WeChatClient::new(fast_config(sim.base_url())).unwrap()
}

pub fn alice() -> NewSimUser {
    NewSimUser {
        nickname: "Alice".into(),
        avatar_url: "https://example.com/alice.png".into(),
        phone: Some("13800138000".into()),
        country_code: "86".into(),
    }
}

pub fn calls(sim: &RunningSimulator, endpoint: Endpoint) -> u64 {
    sim.simulator().calls()[&endpoint]
}
