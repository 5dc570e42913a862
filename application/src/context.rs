//! Who asked, recorded with every event as metadata.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use miniauth_domain::{SealedDatum, UserId};

/// Who acted, as the events' `actor` metadata records it (docs/audit.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The mini program, for a person not yet known to be anyone (login, profile,
    /// phone, GitEgg's flows): `wechat`. Not `wechat:{openid}`: the event's account
    /// names the WeChat identity already, and the actor says only which door the
    /// request came through.
    MiniProgram,
    /// The bearer of an access token: `user:{id}`.
    User(UserId),
    /// The admin API: `admin`.
    Admin,
    /// The command line (`miniauth erase`): `cli`.
    Cli,
    /// A client not yet authenticated, in a request that records no event (the
    /// password grant): `anonymous`.
    Anonymous,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MiniProgram => f.write_str("wechat"),
            Self::User(id) => write!(f, "user:{id}"),
            Self::Admin => f.write_str("admin"),
            Self::Cli => f.write_str("cli"),
            Self::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// The request a command comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The request id (also on the response and every log line).
    pub request_id: String,
    /// Who acted.
    pub actor: Actor,
    /// The client's IP address: the transport's peer, or the client a trusted proxy
    /// names (the HTTP adapter decides, in one place).
    pub client_ip: Option<IpAddr>,
}

impl RequestContext {
    /// A context for work started outside any request (CLI, tests).
    pub fn system(actor: Actor) -> Self {
        Self {
            request_id: String::new(),
            actor,
            client_ip: None,
        }
    }

    /// The event metadata: request id, actor, client IP and the time of the commit.
    /// The client IP is written as given: pass it sealed ([`Self::metadata_sealed`])
    /// wherever it is personal data of the account the events belong to.
    pub fn metadata(&self, now: DateTime<Utc>) -> HashMap<String, String> {
        self.metadata_with_ip(now, self.client_ip.map(|ip| ip.to_string()))
    }

    /// The event metadata with the client IP replaced by its sealed form (the account's
    /// data key seals it, so that erasure makes it unreadable).
    pub fn metadata_sealed(
        &self,
        now: DateTime<Utc>,
        client_ip: Option<&SealedDatum>,
    ) -> HashMap<String, String> {
        self.metadata_with_ip(now, client_ip.map(|ip| ip.as_sealed_text().to_owned()))
    }

    fn metadata_with_ip(&self, now: DateTime<Utc>, ip: Option<String>) -> HashMap<String, String> {
        let mut metadata = HashMap::new();
        metadata.insert("request_id".to_owned(), self.request_id.clone());
        metadata.insert("actor".to_owned(), self.actor.to_string());
        if let Some(ip) = ip {
            metadata.insert("client_ip".to_owned(), ip);
        }
        metadata.insert(
            "recorded_at".to_owned(),
            now.to_rfc3339_opts(SecondsFormat::Millis, true),
        );
        metadata
    }

    /// The client as throttling keys it (IPv6 by /64), when the transport knows it.
    pub fn client_net(&self) -> Option<crate::ports::ClientNet> {
        self.client_ip.map(crate::ports::ClientNet::of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_are_recorded_as_docs_audit_md_lists_them() {
        let recorded = |actor| RequestContext::system(actor).metadata(Utc::now())["actor"].clone();
        assert_eq!(recorded(Actor::MiniProgram), "wechat");
        assert_eq!(recorded(Actor::User(UserId::new(42).unwrap())), "user:42");
        assert_eq!(recorded(Actor::Admin), "admin");
        assert_eq!(recorded(Actor::Cli), "cli");
    }
}
