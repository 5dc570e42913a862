//! Per-app policy and lifetimes the use cases follow.

use std::collections::HashMap;

use chrono::Duration;
use miniauth_domain::crypto::WatermarkPolicy;
use miniauth_domain::{AppId, TenantId};
use serde::{Deserialize, Serialize};

/// What happens when a verified phone matches no user of the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationPolicy {
    /// Register a new user from the phone.
    Auto,
    /// Bind only when the phone matches an existing user; refuse otherwise.
    ExistingPhoneOnly,
    /// No self-service at all by phone: neither registration nor phone matching.
    /// Users bind with account + password (or while logged in).
    Closed,
}

/// One mini program miniauth serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSettings {
    /// Its AppID.
    pub appid: AppId,
    /// The tenant whose users it logs in.
    pub tenant: TenantId,
    /// Registration by phone.
    pub registration: RegistrationPolicy,
    /// How strictly payload watermarks are checked.
    pub watermark: WatermarkPolicy,
    /// Whether the legacy encrypted payloads (`encryptedData` + `iv` for profile and
    /// phone) are accepted at all. The phone button's code and client-supplied profiles
    /// are always accepted.
    pub legacy_payloads: bool,
    /// How many legacy payloads one session key may have rejected before it is spent
    /// (see [`DEFAULT_PAYLOAD_REJECTIONS_PER_KEY`]).
    pub payload_rejections_per_key: u32,
}

/// The apps, by AppID.
#[derive(Debug, Clone, Default)]
pub struct AppCatalog {
    apps: HashMap<AppId, AppSettings>,
}

impl AppCatalog {
    /// A catalog of these apps.
    pub fn new(apps: impl IntoIterator<Item = AppSettings>) -> Self {
        Self {
            apps: apps.into_iter().map(|a| (a.appid.clone(), a)).collect(),
        }
    }

    /// The settings of `appid`, if it is configured.
    pub fn get(&self, appid: &AppId) -> Option<&AppSettings> {
        self.apps.get(appid)
    }

    /// Looks up an appid given as text (unknown and malformed are the same to callers).
    pub fn find(&self, raw: &str) -> Option<&AppSettings> {
        AppId::parse(raw)
            .ok()
            .and_then(|appid| self.apps.get(&appid))
    }

    /// Every app.
    pub fn iter(&self) -> impl Iterator<Item = &AppSettings> {
        self.apps.values()
    }
}

/// Lifetimes the use cases decide themselves. (An access token's lifetime belongs
/// to the token issuer, a refresh token's to its store.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// How long a ticket is accepted (default 1 h).
    pub ticket: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            ticket: Duration::hours(1),
        }
    }
}

/// How many legacy payloads one session key may have rejected before it is spent
/// (retired at WeChat, refused from then on): enough for a front end's honest retries,
/// far too few for a padding oracle, which needs thousands.
pub const DEFAULT_PAYLOAD_REJECTIONS_PER_KEY: u32 = 3;

/// Field limits for client-supplied profiles.
pub mod limits {
    /// Longest nickname accepted, in characters.
    pub const NICKNAME_CHARS: usize = 64;
    /// Longest avatar URL accepted, in bytes.
    pub const AVATAR_URL_BYTES: usize = 1024;
    /// Longest rawData accepted, in bytes (WeChat's is well under 1 KiB).
    pub const RAW_DATA_BYTES: usize = 8 * 1024;
    /// Longest account name accepted, in characters.
    pub const ACCOUNT_CHARS: usize = 64;
    /// Longest password accepted, in bytes (argon2 cost is bounded).
    pub const PASSWORD_BYTES: usize = 256;
}
