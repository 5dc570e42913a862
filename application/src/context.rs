//! Who asked, recorded with every event as metadata.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use miniauth_domain::audit::HASH_KEY;
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
    /// An operator signed in to the console (`/console`) with the admin token:
    /// `console`.
    Console,
    /// A client not yet authenticated, in a request that records no event (the
    /// password grant): `anonymous`.
    Anonymous,
    /// A migration from another system (`miniauth import gitegg`): `import`.
    Import,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MiniProgram => f.write_str("wechat"),
            Self::User(id) => write!(f, "user:{id}"),
            Self::Admin => f.write_str("admin"),
            Self::Cli => f.write_str("cli"),
            Self::Console => f.write_str("console"),
            Self::Anonymous => f.write_str("anonymous"),
            Self::Import => f.write_str("import"),
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
        self.event_metadata(now, self.client_ip.map(|ip| ip.to_string()))
            .to_map()
    }

    /// The event metadata with the client IP replaced by its sealed form (the account's
    /// data key seals it, so that erasure makes it unreadable).
    pub fn metadata_sealed(
        &self,
        now: DateTime<Utc>,
        client_ip: Option<&SealedDatum>,
    ) -> HashMap<String, String> {
        self.event_metadata(now, client_ip.map(|ip| ip.as_sealed_text().to_owned()))
            .to_map()
    }

    fn event_metadata(&self, now: DateTime<Utc>, client_ip: Option<String>) -> EventMetadata {
        EventMetadata {
            request_id: Some(self.request_id.clone()),
            actor: Some(self.actor.to_string()),
            client_ip,
            recorded_at: Some(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
            note: None,
            hash: None,
        }
    }

    /// The client as throttling keys it (IPv6 by /64), when the transport knows it.
    pub fn client_net(&self) -> Option<crate::ports::ClientNet> {
        self.client_ip.map(crate::ports::ClientNet::of)
    }
}

/// What is recorded with every event, beside its payload: who asked and when (written
/// by the use cases), and the chain hash (written by the event store). Stored as a
/// JSON object of strings under the keys named here; a key that is absent reads as
/// `None`, and `None` is not written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventMetadata {
    /// The request the event came from (`request_id`).
    pub request_id: Option<String>,
    /// Who acted (`actor`): see [`RequestContext::actor`].
    pub actor: Option<String>,
    /// The client IP (`client_ip`): sealed with the account's data key since event
    /// version 2, in clear before.
    pub client_ip: Option<String>,
    /// When the event was committed (`recorded_at`, RFC 3339 with milliseconds).
    pub recorded_at: Option<String>,
    /// Why an operator acted (`note`): a reason code from a fixed list, never free
    /// text (the log keeps it forever, so it must not carry personal data).
    pub note: Option<String>,
    /// The chain hash (`hash`, [`HASH_KEY`]), added by the event store.
    pub hash: Option<String>,
}

impl EventMetadata {
    /// The key of [`Self::request_id`].
    pub const REQUEST_ID: &'static str = "request_id";
    /// The key of [`Self::actor`].
    pub const ACTOR: &'static str = "actor";
    /// The key of [`Self::client_ip`].
    pub const CLIENT_IP: &'static str = "client_ip";
    /// The key of [`Self::recorded_at`].
    pub const RECORDED_AT: &'static str = "recorded_at";
    /// The key of [`Self::note`].
    pub const NOTE: &'static str = "note";
    /// The key of [`Self::hash`].
    pub const HASH: &'static str = HASH_KEY;

    fn entries(&self) -> [(&'static str, &Option<String>); 6] {
        [
            (Self::REQUEST_ID, &self.request_id),
            (Self::ACTOR, &self.actor),
            (Self::CLIENT_IP, &self.client_ip),
            (Self::RECORDED_AT, &self.recorded_at),
            (Self::NOTE, &self.note),
            (Self::HASH, &self.hash),
        ]
    }

    /// The metadata as stored: one entry per value present.
    pub fn to_map(&self) -> HashMap<String, String> {
        self.entries()
            .into_iter()
            .filter_map(|(key, value)| value.clone().map(|value| (key.to_owned(), value)))
            .collect()
    }

    /// The metadata as stored, read back (other keys are ignored).
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let get = |key: &str| map.get(key).cloned();
        Self {
            request_id: get(Self::REQUEST_ID),
            actor: get(Self::ACTOR),
            client_ip: get(Self::CLIENT_IP),
            recorded_at: get(Self::RECORDED_AT),
            note: get(Self::NOTE),
            hash: get(Self::HASH),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn metadata_is_stored_under_its_documented_keys_and_reads_back() {
        let ctx = RequestContext {
            request_id: "req-1".into(),
            actor: Actor::Admin,
            client_ip: Some(Ipv4Addr::LOCALHOST.into()),
        };
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
        let map = ctx.metadata(now);
        let expected: HashMap<String, String> = [
            ("request_id", "req-1"),
            ("actor", "admin"),
            ("client_ip", "127.0.0.1"),
            ("recorded_at", "2026-01-01T09:00:00.000Z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(map, expected);
        let read = EventMetadata::from_map(&map);
        assert_eq!(read.actor.as_deref(), Some("admin"));
        assert_eq!(read.hash, None);
        assert_eq!(read.to_map(), map);
        let without_ip = RequestContext::system(Actor::Cli).metadata(now);
        assert!(!without_ip.contains_key(EventMetadata::CLIENT_IP));
        assert_eq!(without_ip[EventMetadata::REQUEST_ID], "");
    }

    #[test]
    fn actors_are_recorded_as_docs_audit_md_lists_them() {
        let recorded = |actor| RequestContext::system(actor).metadata(Utc::now())["actor"].clone();
        assert_eq!(recorded(Actor::MiniProgram), "wechat");
        assert_eq!(recorded(Actor::User(UserId::new(42).unwrap())), "user:42");
        assert_eq!(recorded(Actor::Admin), "admin");
        assert_eq!(recorded(Actor::Cli), "cli");
        assert_eq!(recorded(Actor::Console), "console");
    }
}
