//! Upcasters: how events written by earlier releases are read today. This is the one
//! list: every read path (loading an aggregate, exports, audits, the read models)
//! decodes through the one decoder (`decode.rs`), which passes an older event through
//! it, so an old row never needs rewriting — rewriting would break its chain hash. A
//! new event version adds its upcaster here.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::Value;

use crate::config::ServerKey;
use crate::crypto::Keys;
use crate::vault::UNIONID_LOOKUP;

/// The upcasters every store applies, oldest version first. The unionid upcaster
/// needs the lookup key derived from the server key.
pub fn default_upcasters(server_key: &ServerKey) -> Vec<Box<dyn EventUpcaster>> {
    upcasters(&Keys::new(server_key))
}

pub(crate) fn upcasters(keys: &Keys) -> Vec<Box<dyn EventUpcaster>> {
    vec![
        Box::new(SessionObtainedV0),
        Box::new(UnionIdInClearV1 { keys: keys.clone() }),
        Box::new(SessionObtainedV2),
        Box::new(AccountImportedV1),
    ]
}

/// `SessionObtained` version "0", as releases before the event schema was versioned
/// "1" wrote it: the session number was called `seq`, and there was no `unionid`
/// (Open Platform ids were not recorded yet). Version "1" renames `seq` to
/// `session_seq` and records the absent unionid as null.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionObtainedV0;

impl EventUpcaster for SessionObtainedV0 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "SessionObtained" && event_version == "0"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(body) = event
            .payload
            .get_mut("SessionObtained")
            .and_then(Value::as_object_mut)
        {
            if let Some(seq) = body.remove("seq") {
                body.entry("session_seq").or_insert(seq);
            }
            body.entry("unionid").or_insert(Value::Null);
        }
        event.event_version = "1".to_owned();
        event
    }
}

/// `SessionObtained` and `ProfileDecrypted` version "1" kept the unionid in clear.
/// Version "2" keeps `{"hash": …, "sealed": …}`: a keyed hash for lookups and the
/// unionid sealed with the account's data key. Version "1" is read with the hash only:
/// what it stored in clear is not carried further (it stays in the stored row, whose
/// chain hash forbids rewriting it; docs/audit.md says so).
pub struct UnionIdInClearV1 {
    keys: Keys,
}

impl EventUpcaster for UnionIdInClearV1 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        matches!(event_type, "SessionObtained" | "ProfileDecrypted") && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(body) = event
            .payload
            .get_mut(event.event_type.as_str())
            .and_then(Value::as_object_mut)
        {
            let hashed = match body.get("unionid") {
                Some(Value::String(unionid)) => serde_json::json!({
                    "hash": self.keys.lookup_hash(UNIONID_LOOKUP, unionid),
                }),
                _ => Value::Null,
            };
            body.insert("unionid".to_owned(), hashed);
        }
        event.event_version = miniauth_domain::SEALED_UNIONID_VERSION.to_owned();
        event
    }
}

/// `SessionObtained` version "2" was always a mini program's login, with its session
/// key. Version "3" names the channel and carries the key only when the channel has
/// one: version "2" is read as `"channel": "mini_program"` with its key.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionObtainedV2;

impl EventUpcaster for SessionObtainedV2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "SessionObtained" && event_version == "2"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(body) = event
            .payload
            .get_mut("SessionObtained")
            .and_then(Value::as_object_mut)
        {
            body.entry("channel").or_insert(Value::from("mini_program"));
        }
        event.event_version = miniauth_domain::CHANNEL_VERSION.to_owned();
        event
    }
}

/// `AccountImported` version "1" was always a mini program's identity (only GitEgg's
/// `WECHAT_MINI_APP` rows were imported then). Version "2" names the channel: version
/// "1" is read as `"channel": "mini_program"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountImportedV1;

impl EventUpcaster for AccountImportedV1 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "AccountImported" && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(body) = event
            .payload
            .get_mut("AccountImported")
            .and_then(Value::as_object_mut)
        {
            body.entry("channel").or_insert(Value::from("mini_program"));
        }
        event.event_version = miniauth_domain::IMPORTED_CHANNEL_VERSION.to_owned();
        event
    }
}

/// Applies `upcasters`, in order, to one serialized event.
pub(crate) fn upcast(
    upcasters: &[Box<dyn EventUpcaster>],
    mut event: SerializedEvent,
) -> SerializedEvent {
    for upcaster in upcasters {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_zero_session_gets_the_current_shape() {
        let old = SerializedEvent::new(
            "wx4f4bc4dec97d474b:o1".into(),
            1,
            "SocialAccount".into(),
            "SessionObtained".into(),
            "0".into(),
            serde_json::json!({"SessionObtained": {"appid": "wx4f4bc4dec97d474b", "openid": "o1",
                "session_key": "v1.a.b", "seq": 3, "occurred_at": "2023-11-14T22:13:20Z"}}),
            serde_json::json!({}),
        );
        let new = upcast(&upcasters(&keys()), old);
        assert_eq!(new.event_version, "3");
        let body = &new.payload["SessionObtained"];
        assert_eq!(body["session_seq"], 3);
        assert_eq!(body["channel"], "mini_program");
        assert!(body.get("seq").is_none());
        assert_eq!(body["unionid"], Value::Null);
        // Current events pass untouched.
        assert_eq!(
            upcast(&upcasters(&keys()), new.clone()).payload,
            new.payload
        );
    }

    fn keys() -> Keys {
        Keys::new(&ServerKey::new([3; 32]))
    }

    #[test]
    fn version_one_unionid_in_clear_is_read_as_its_keyed_hash_only() {
        for event_type in ["SessionObtained", "ProfileDecrypted"] {
            let old = SerializedEvent::new(
                "wx4f4bc4dec97d474b:o1".into(),
                1,
                "SocialAccount".into(),
                event_type.into(),
                "1".into(),
                serde_json::json!({event_type: {"unionid": "oUnion-1", "other": 1}}),
                serde_json::json!({}),
            );
            let new = upcast(&upcasters(&keys()), old);
            let current = miniauth_domain::current_version(event_type);
            assert_eq!(new.event_version, current);
            let body = &new.payload[event_type];
            assert_eq!(
                body["unionid"],
                serde_json::json!({"hash": keys().lookup_hash("unionid", "oUnion-1")})
            );
            assert!(!new.payload.to_string().contains("oUnion-1"));
            assert_eq!(body["other"], 1);
        }
        // Other event types of version "1" are current.
        let bound = SerializedEvent::new(
            "a:b".into(),
            1,
            "SocialAccount".into(),
            "UserBound".into(),
            "1".into(),
            serde_json::json!({"UserBound": {"unionid": "x"}}),
            serde_json::json!({}),
        );
        assert_eq!(upcast(&upcasters(&keys()), bound.clone()), bound);
    }

    #[test]
    fn version_two_session_is_a_mini_programs_with_its_key() {
        let old = SerializedEvent::new(
            "wx4f4bc4dec97d474b:o1".into(),
            1,
            "SocialAccount".into(),
            "SessionObtained".into(),
            "2".into(),
            serde_json::json!({"SessionObtained": {"appid": "wx4f4bc4dec97d474b", "openid": "o1",
                "unionid": null, "session_key": "v1.a.b", "session_seq": 1,
                "occurred_at": "2023-11-14T22:13:20Z"}}),
            serde_json::json!({}),
        );
        let new = upcast(&upcasters(&keys()), old);
        assert_eq!(new.event_version, "3");
        let event: miniauth_domain::SocialAccountEvent =
            serde_json::from_value(new.payload).unwrap();
        match event {
            miniauth_domain::SocialAccountEvent::SessionObtained(e) => {
                assert_eq!(e.channel, miniauth_domain::Channel::MiniProgram);
                assert_eq!(e.session_key.unwrap().as_sealed_text(), "v1.a.b");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn version_one_import_is_a_mini_programs() {
        let old = SerializedEvent::new(
            "wx4f4bc4dec97d474b:o1".into(),
            1,
            "SocialAccount".into(),
            "AccountImported".into(),
            "1".into(),
            serde_json::json!({"AccountImported": {"appid": "wx4f4bc4dec97d474b", "openid": "o1",
                "unionid": null, "nickname": null, "avatar_url": null,
                "source": {"system": "gitegg", "table": "t_just_auth_social", "row_id": 7},
                "imported_at": "2024-01-01T00:00:00Z", "occurred_at": "2021-03-01T00:00:00Z"}}),
            serde_json::json!({}),
        );
        let new = upcast(&upcasters(&keys()), old);
        assert_eq!(new.event_version, "2");
        assert_eq!(
            new.event_version,
            miniauth_domain::current_version("AccountImported")
        );
        let event: miniauth_domain::SocialAccountEvent =
            serde_json::from_value(new.payload.clone()).unwrap();
        match event {
            miniauth_domain::SocialAccountEvent::AccountImported(e) => {
                assert_eq!(e.channel, miniauth_domain::Channel::MiniProgram);
            }
            other => panic!("{other:?}"),
        }
        // A current one passes untouched.
        assert_eq!(upcast(&upcasters(&keys()), new.clone()), new);
    }
}
