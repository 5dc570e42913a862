//! Pure functions auditors rely on: the tamper-evidence hash chain, the checks of the
//! log against it ([`tamper`]), and replaying an account's binding history to any
//! instant.

pub mod tamper;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::events::{BindMethod, SocialAccountEvent, UnbindReason};
use crate::ids::UserId;

pub use tamper::{
    check_stream, AuditCheckpoint, Evidence, Finding, FindingKind, LogCheck, StreamState,
    VerifyReport,
};

/// The metadata key holding an event's chain hash.
pub const HASH_KEY: &str = "hash";

/// Writes `value` as JSON with object keys sorted at every level, so the same event
/// hashes the same whatever order a database hands its keys back in.
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, &Value> = map.iter().collect();
                out.push('{');
                for (i, (key, value)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(value, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// What the chain hash of one event covers.
#[derive(Debug, Clone, Copy)]
pub struct ChainLink<'a> {
    /// The previous event's hash in the same stream ("" for the first event).
    pub previous: &'a str,
    /// `{appid}:{openid}`.
    pub aggregate_id: &'a str,
    /// The event's sequence in its stream.
    pub sequence: u64,
    /// The event's type name.
    pub event_type: &'a str,
    /// The event's version.
    pub event_version: &'a str,
    /// The payload as stored.
    pub payload: &'a Value,
    /// The metadata as stored, without the hash itself.
    pub metadata: &'a BTreeMap<String, String>,
}

impl ChainLink<'_> {
    /// hex(SHA-256) over the previous hash and every field, length-prefixed so that no
    /// two different links can serialise to the same bytes.
    pub fn hash(&self) -> String {
        let metadata: BTreeMap<&String, &String> = self
            .metadata
            .iter()
            .filter(|(k, _)| k.as_str() != HASH_KEY)
            .collect();
        let metadata = serde_json::to_value(metadata).expect("string maps serialise");
        let sequence = self.sequence.to_string();
        let payload = canonical_json(self.payload);
        let metadata = canonical_json(&metadata);
        let mut hasher = Sha256::new();
        for part in [
            self.previous,
            self.aggregate_id,
            &sequence,
            self.event_type,
            self.event_version,
            &payload,
            &metadata,
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

/// One event exactly as stored: what exports carry (an auditor can recompute its chain
/// hash from it) and what the tamper checks read.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(
        as = ExportedEvent,
        description = "One event exactly as stored (one line of an export)."
    )
)]
pub struct LoggedEvent {
    /// The global commit order.
    pub position: i64,
    /// `{appid}:{openid}`.
    pub aggregate_id: String,
    /// The number within the stream.
    pub sequence: i64,
    /// The event type.
    pub event_type: String,
    /// The schema version as stored.
    pub event_version: String,
    /// The payload as stored (personal data sealed).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Value,
    /// The metadata as stored, with the chain `hash`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Value,
}

impl LoggedEvent {
    /// The metadata as a map of strings; None when it is not one (it was edited).
    pub fn metadata_map(&self) -> Option<BTreeMap<String, String>> {
        serde_json::from_value(self.metadata.clone()).ok()
    }

    /// What this event's hash covers, were it event `sequence` after `previous`.
    pub fn link<'a>(
        &'a self,
        previous: &'a str,
        sequence: i64,
        metadata: &'a BTreeMap<String, String>,
    ) -> ChainLink<'a> {
        ChainLink {
            previous,
            aggregate_id: &self.aggregate_id,
            sequence: u64::try_from(sequence).unwrap_or_default(),
            event_type: &self.event_type,
            event_version: &self.event_version,
            payload: &self.payload,
            metadata,
        }
    }

    /// The hash this event contributes to the evidence over the whole log: its chain
    /// hash, or for a legacy event a digest of its content.
    pub fn evidence_hash(&self) -> String {
        let metadata = self.metadata_map().unwrap_or_default();
        match metadata.get(HASH_KEY) {
            Some(hash) => hash.clone(),
            None => self.link("", self.sequence, &metadata).hash(),
        }
    }
}

/// Events as JSON lines, one object per event as stored: the export format of the admin
/// API and of `miniauth audit export`.
pub fn json_lines(events: &[LoggedEvent]) -> String {
    let mut out = String::new();
    for event in events {
        out.push_str(&serde_json::to_string(event).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// One step of the evidence over the whole log: hex(SHA-256) over the cumulative hash
/// so far, the event's global position and its chain hash, length-prefixed. Folding
/// every event in position order from `""` gives the value a checkpoint records.
pub fn cumulative_hash(previous: &str, position: i64, event_hash: &str) -> String {
    let position = position.to_string();
    let mut hasher = Sha256::new();
    for part in [previous, position.as_str(), event_hash] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// One period during which the account was bound to a user. A binding that still
/// holds serialises without `unbound_at` and `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindingSpan {
    /// The user.
    pub user_id: UserId,
    /// When the binding started.
    pub bound_at: DateTime<Utc>,
    /// How it was made.
    pub via: BindMethod,
    /// When it ended, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unbound_at: Option<DateTime<Utc>>,
    /// Why it ended, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<UnbindReason>,
}

impl BindingSpan {
    /// Whether the binding held at `instant` (bound at or before it, not yet unbound).
    pub fn holds_at(&self, instant: DateTime<Utc>) -> bool {
        self.bound_at <= instant && self.unbound_at.is_none_or(|end| end > instant)
    }
}

/// Replays an account's events (in sequence order) into its binding periods.
pub fn binding_spans<'a>(
    events: impl IntoIterator<Item = &'a SocialAccountEvent>,
) -> Vec<BindingSpan> {
    let mut spans: Vec<BindingSpan> = Vec::new();
    for event in events {
        match event {
            SocialAccountEvent::UserBound(e) => spans.push(BindingSpan {
                user_id: e.user_id,
                bound_at: e.occurred_at,
                via: e.via,
                unbound_at: None,
                reason: None,
            }),
            SocialAccountEvent::Unbound(e) => {
                if let Some(open) = spans.iter_mut().rev().find(|s| s.unbound_at.is_none()) {
                    open.unbound_at = Some(e.occurred_at);
                    open.reason = Some(e.reason);
                }
            }
            _ => {}
        }
    }
    spans
}

/// The binding that held at `instant`, replaying only events up to it.
pub fn binding_as_of<'a>(
    events: impl IntoIterator<Item = &'a SocialAccountEvent>,
    instant: DateTime<Utc>,
) -> Option<BindingSpan> {
    let upto = events
        .into_iter()
        .take_while(|e| e.occurred_at() <= instant);
    binding_spans(upto)
        .into_iter()
        .find(|span| span.holds_at(instant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Unbound, UserBound};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn bound(user: i64, secs: i64) -> SocialAccountEvent {
        SocialAccountEvent::UserBound(UserBound {
            user_id: UserId::new(user).unwrap(),
            via: BindMethod::PhoneMatch,
            linked_from: None,
            imported_from: None,
            occurred_at: at(secs),
        })
    }

    fn unbound(user: i64, secs: i64) -> SocialAccountEvent {
        SocialAccountEvent::Unbound(Unbound {
            user_id: UserId::new(user).unwrap(),
            reason: UnbindReason::UserRequest,
            occurred_at: at(secs),
        })
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[1,{"z":1,"y":2}],"c":"x"}}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"x","d":[1,{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn chain_hash_changes_with_every_field_and_ignores_its_own_key() {
        let payload: Value = serde_json::json!({"UserBound": {"user_id": 42}});
        let mut metadata = BTreeMap::new();
        metadata.insert("actor".to_owned(), "admin".to_owned());
        let link = ChainLink {
            previous: "",
            aggregate_id: "wx4f4bc4dec97d474b:o1",
            sequence: 1,
            event_type: "UserBound",
            event_version: "1",
            payload: &payload,
            metadata: &metadata,
        };
        let base = link.hash();
        assert_eq!(base.len(), 64);
        let mut with_hash = metadata.clone();
        with_hash.insert(HASH_KEY.to_owned(), base.clone());
        assert_eq!(
            ChainLink {
                metadata: &with_hash,
                ..link
            }
            .hash(),
            base
        );
        assert_ne!(
            ChainLink {
                previous: "x",
                ..link
            }
            .hash(),
            base
        );
        assert_ne!(
            ChainLink {
                sequence: 2,
                ..link
            }
            .hash(),
            base
        );
        let edited = serde_json::json!({"UserBound": {"user_id": 43}});
        assert_ne!(
            ChainLink {
                payload: &edited,
                ..link
            }
            .hash(),
            base
        );
        let mut other_actor = metadata.clone();
        other_actor.insert("actor".to_owned(), "eve".to_owned());
        assert_ne!(
            ChainLink {
                metadata: &other_actor,
                ..link
            }
            .hash(),
            base
        );
    }

    #[test]
    fn cumulative_hash_depends_on_order_position_and_predecessor() {
        let one = cumulative_hash("", 1, "a");
        let two = cumulative_hash(&one, 2, "b");
        assert_ne!(two, cumulative_hash(&cumulative_hash("", 2, "b"), 1, "a"));
        assert_ne!(two, cumulative_hash(&one, 3, "b"));
        assert_ne!(one, cumulative_hash("", 1, "b"));
        assert_eq!(two, cumulative_hash(&cumulative_hash("", 1, "a"), 2, "b"));
    }

    #[test]
    fn bind_unbind_rebind_replays_to_each_instant() {
        let history = vec![bound(42, 10), unbound(42, 20), bound(7, 30)];
        assert_eq!(binding_as_of(&history, at(5)), None);
        assert_eq!(binding_as_of(&history, at(10)).unwrap().user_id.get(), 42);
        assert_eq!(binding_as_of(&history, at(15)).unwrap().user_id.get(), 42);
        assert_eq!(binding_as_of(&history, at(25)), None);
        assert_eq!(binding_as_of(&history, at(35)).unwrap().user_id.get(), 7);
        let spans = binding_spans(&history);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].unbound_at, Some(at(20)));
        assert_eq!(spans[0].reason, Some(UnbindReason::UserRequest));
        assert_eq!(spans[1].unbound_at, None);
    }
}
