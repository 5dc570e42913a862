//! Upcasters: how events written by earlier releases are read today. Every read path
//! (loading an aggregate, exports, audits, the read models) passes stored events
//! through [`default_upcasters`] before decoding them, so an old row never needs
//! rewriting — rewriting would break its chain hash.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::Value;

/// The upcasters every store applies, oldest version first.
pub fn default_upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(SessionObtainedV0)]
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
        let new = upcast(&default_upcasters(), old);
        assert_eq!(new.event_version, "1");
        let body = &new.payload["SessionObtained"];
        assert_eq!(body["session_seq"], 3);
        assert!(body.get("seq").is_none());
        assert_eq!(body["unionid"], Value::Null);
        // Version "1" events pass untouched.
        let current = SerializedEvent {
            event_version: "1".into(),
            ..new.clone()
        };
        assert_eq!(
            upcast(&default_upcasters(), current.clone()).payload,
            current.payload
        );
    }
}
