//! Who asked, recorded with every event as metadata.

use std::collections::HashMap;
use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use miniauth_domain::SealedDatum;

/// The request a command comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The request id (also on the response and every log line).
    pub request_id: String,
    /// Who acted: `wechat:{openid}`, `user:{id}`, `admin`, `cli`.
    pub actor: String,
    /// The client's IP address: the transport's peer, or the client a trusted proxy
    /// names (the HTTP adapter decides, in one place).
    pub client_ip: Option<IpAddr>,
}

impl RequestContext {
    /// A context for work started outside any request (CLI, tests).
    pub fn system(actor: &str) -> Self {
        Self {
            request_id: String::new(),
            actor: actor.to_owned(),
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
        metadata.insert("actor".to_owned(), self.actor.clone());
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
