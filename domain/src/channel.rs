//! The kinds of WeChat app a person logs in through. They share the unionid (within one
//! Open Platform account) but not the login: a mini program exchanges a `wx.login` code
//! at code2session and holds a session key; the others exchange an OAuth code at
//! `/sns/oauth2/access_token` and hold no session key, so no encrypted payload (profile
//! or phone) ever comes from them.

use serde::{Deserialize, Serialize};

/// The kind of a WeChat app (`[[apps]] kind`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A mini program: `wx.login` → code2session, a session key, encrypted payloads.
    #[default]
    MiniProgram,
    /// An Official Account's web authorisation (`snsapi_base` / `snsapi_userinfo`).
    OfficialAccount,
    /// A website's QR login on the Open Platform (`snsapi_login`).
    Website,
    /// A mobile App's WeChat login through the Open Platform SDK.
    MobileApp,
}

impl Channel {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Channel; 4] = [
        Channel::MiniProgram,
        Channel::OfficialAccount,
        Channel::Website,
        Channel::MobileApp,
    ];

    /// The name it is configured, stored and reported under.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MiniProgram => "mini_program",
            Self::OfficialAccount => "official_account",
            Self::Website => "website",
            Self::MobileApp => "mobile_app",
        }
    }

    /// Whether its logins come with a session key (and so with encrypted payloads and
    /// the phone button): only a mini program's do.
    pub fn has_session_key(self) -> bool {
        self == Self::MiniProgram
    }

    /// Whether a browser starts its login at WeChat's authorize page (an Official
    /// Account's web authorisation, a website's QR login); a mobile App's starts in the
    /// WeChat SDK on the phone, a mini program's in `wx.login`.
    pub fn has_browser_flow(self) -> bool {
        matches!(self, Self::OfficialAccount | Self::Website)
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_stored_names() {
        for channel in Channel::ALL {
            assert_eq!(
                serde_json::to_value(channel).unwrap(),
                serde_json::json!(channel.as_str())
            );
        }
        assert_eq!(Channel::default(), Channel::MiniProgram);
        assert!(Channel::MiniProgram.has_session_key());
        assert!(!Channel::Website.has_session_key());
        assert!(
            Channel::OfficialAccount.has_browser_flow() && !Channel::MobileApp.has_browser_flow()
        );
    }
}
