//! The one way a stored event becomes a typed [`SocialAccountEvent`], for every reader
//! of the log: loading an account, exports, audits and the read models. Today's version
//! is decoded straight from the stored JSON; an older one goes through the one list of
//! upcasters ([`crate::upcast`]) first. An event that does not decode even then is an
//! error that names its place in the log — never skipped, or a bug would silently
//! become lost data.

use std::sync::Arc;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::Aggregate;
use miniauth_domain::{current_version, SocialAccount, SocialAccountEvent};
use sqlx::Row;

use crate::crypto::Keys;

/// The columns [`read_encoded`] reads, for a `SELECT` of the `events` table. The
/// payload is read as the text it is stored as (on PostgreSQL a `json` column, whose
/// text cast is its text), so that it is parsed once, straight into the event.
pub(crate) const ENCODED_COLUMNS: &str = "position, aggregate_id, sequence, event_type, \
     event_version, CAST(payload AS TEXT) AS payload";

/// A stored event whose payload is still the JSON text it was stored as.
pub(crate) struct EncodedEvent {
    pub(crate) position: i64,
    pub(crate) aggregate_id: String,
    pub(crate) sequence: i64,
    pub(crate) event_type: String,
    pub(crate) event_version: String,
    pub(crate) payload: String,
}

/// An event of the log that no upcaster makes readable as a [`SocialAccountEvent`].
/// Its source is serde's reason; payloads hold personal data only sealed, so the reason
/// can be logged.
#[derive(Debug, thiserror::Error)]
#[error(
    "the event at log position {position} ({event_type} version {event_version}) cannot be decoded"
)]
pub struct UndecodableEvent {
    /// Its global commit position.
    pub position: i64,
    /// Its stored type.
    pub event_type: String,
    /// Its stored version.
    pub event_version: String,
    #[source]
    source: serde_json::Error,
}

/// Decodes stored events through the one list of upcasters. Cheap to clone; the event
/// store and the read models share one.
#[derive(Clone)]
pub(crate) struct EventDecoder {
    upcasters: Arc<Vec<Box<dyn EventUpcaster>>>,
}

impl EventDecoder {
    pub(crate) fn new(keys: &Keys) -> Self {
        Self {
            upcasters: Arc::new(crate::upcast::upcasters(keys)),
        }
    }

    /// The typed event of `stored`, with the version it was read as (today's, once
    /// upcast), or why not.
    pub(crate) fn decode(
        &self,
        stored: &EncodedEvent,
    ) -> Result<(SocialAccountEvent, String), UndecodableEvent> {
        let EncodedEvent {
            position,
            aggregate_id,
            sequence,
            event_type,
            event_version,
            payload,
        } = stored;
        let undecodable = |source| UndecodableEvent {
            position: *position,
            event_type: event_type.clone(),
            event_version: event_version.clone(),
            source,
        };
        if *event_version == current_version(event_type) {
            // Today's events decode straight into the typed event.
            let event = serde_json::from_str(payload).map_err(undecodable)?;
            Ok((event, event_version.clone()))
        } else {
            let payload = serde_json::from_str(payload).map_err(undecodable)?;
            // Upcasters rewrite the payload and its version; the metadata is read as
            // stored, so they are not given it.
            let upcast = crate::upcast::upcast(
                &self.upcasters,
                SerializedEvent::new(
                    aggregate_id.clone(),
                    usize::try_from(*sequence).unwrap_or_default(),
                    SocialAccount::TYPE.to_owned(),
                    event_type.clone(),
                    event_version.clone(),
                    payload,
                    serde_json::Value::Null,
                ),
            );
            let event = serde_json::from_value(upcast.payload).map_err(undecodable)?;
            Ok((event, upcast.event_version))
        }
    }
}

/// Reads the [`ENCODED_COLUMNS`] of an `events` row.
pub(crate) fn read_encoded<R>(row: &R) -> Result<EncodedEvent, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(EncodedEvent {
        position: row.try_get("position")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
    })
}
