//! Per-app policy and lifetimes the use cases follow.

use std::collections::HashMap;

use chrono::Duration;
use miniauth_domain::crypto::WatermarkPolicy;
use miniauth_domain::{AppId, Channel, TenantId};
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

/// One WeChat app miniauth serves: a mini program, an Official Account, a website or a
/// mobile App.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSettings {
    /// Its AppID.
    pub appid: AppId,
    /// Its kind: which WeChat login it uses.
    pub kind: Channel,
    /// Where its browser flow may send the browser back (exact URLs; an Official
    /// Account's or a website's `[[apps]] redirect_uris`).
    pub redirect_uris: Vec<String>,
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
    /// Whether its tenant links a login to the user its unionid is bound to in another
    /// app of the tenant (`[tenants.<name>] link_by_unionid`).
    pub link_by_unionid: bool,
}

/// The apps, by AppID.
#[derive(Debug, Clone, Default)]
pub struct AppCatalog {
    apps: HashMap<AppId, AppSettings>,
    default_tenant: Option<TenantId>,
}

impl AppCatalog {
    /// A catalog of these apps, the first one's tenant the default.
    pub fn new(apps: impl IntoIterator<Item = AppSettings>) -> Self {
        let mut default_tenant = None;
        let apps = apps
            .into_iter()
            .inspect(|a| {
                default_tenant.get_or_insert_with(|| a.tenant.clone());
            })
            .map(|a| (a.appid.clone(), a))
            .collect();
        Self {
            apps,
            default_tenant,
        }
    }

    /// The first configured app's tenant: where a password user is looked for, or
    /// added, when no tenant is named. `None` without apps.
    pub fn default_tenant(&self) -> Option<&TenantId> {
        self.default_tenant.as_ref()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn app(appid: &str, tenant: &str) -> AppSettings {
        AppSettings {
            appid: AppId::parse(appid).unwrap(),
            kind: Channel::MiniProgram,
            redirect_uris: Vec::new(),
            tenant: TenantId::parse(tenant).unwrap(),
            registration: RegistrationPolicy::Auto,
            watermark: WatermarkPolicy::default(),
            legacy_payloads: true,
            payload_rejections_per_key: DEFAULT_PAYLOAD_REJECTIONS_PER_KEY,
            link_by_unionid: true,
        }
    }

    #[test]
    fn the_default_tenant_is_the_first_apps_whatever_the_lookup_order() {
        let apps: Vec<AppSettings> = (0..16)
            .map(|i| app(&format!("wx{i:016}"), &format!("tenant{i}")))
            .collect();
        let catalog = AppCatalog::new(apps);
        assert_eq!(catalog.default_tenant().unwrap().as_str(), "tenant0");
        assert_eq!(AppCatalog::default().default_tenant(), None);
    }
}
