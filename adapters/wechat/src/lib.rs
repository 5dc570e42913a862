//! WeChat, for miniauth: the server API client ([`WeChatClient`], implementing the
//! application's [`WeChatApi`](miniauth_application::ports::WeChatApi) port) and a
//! faithful simulator of WeChat's servers and of the mini program ([`sim`]).

pub mod client;
pub mod config;
pub mod errcode;
pub mod sim;

pub use client::{
    SessionStatus, WeChatAccessToken, WeChatClient, LOGIN_CODE_LIFETIME, TOKEN_REFRESH_MARGIN,
};
pub use config::{
    AppCredentials, ClientConfig, ConfigError, RetryPolicy, Secret, DEFAULT_API_BASE,
};
