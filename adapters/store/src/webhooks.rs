//! Webhook cursors (`webhook_cursors`): where each subscription's deliveries are in the
//! log, its failures and parked delivery, and the lease that lets one instance at a
//! time deliver it. The log itself is read with the event store's position reader
//! ([`AccountEventStore::events_after`]), the one the exports use.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use miniauth_application::ports::{PortError, StoredEvent};
use miniauth_application::webhooks::{
    Cursor, EventFeed, FailedAttempt, ParkedDelivery, WebhookLedger,
};
use sqlx::Row;

use crate::db::{from_millis, millis, on_pool, port_error, Db};
use crate::event_store::AccountEventStore;

/// `WebhookLedger` on the `webhook_cursors` table. Cheap to clone.
#[derive(Clone)]
pub struct SqlWebhookLedger {
    db: Db,
}

impl SqlWebhookLedger {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

fn at(ms: i64) -> Result<DateTime<Utc>, PortError> {
    from_millis("webhook_cursors", ms)
}

#[async_trait]
impl WebhookLedger for SqlWebhookLedger {
    async fn lease(
        &self,
        subscription: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Cursor>, PortError> {
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            sqlx::query(
                "INSERT INTO webhook_cursors (subscription, position) VALUES ($1, 0) \
                 ON CONFLICT (subscription) DO NOTHING",
            )
            .bind(subscription)
            .execute(p)
            .await
            .map_err(port_error)?;
            // The conditional update is the referee: a lease is taken only when it is
            // this holder's already or has run out.
            let row = sqlx::query(
                "UPDATE webhook_cursors SET lease_holder = $1, lease_until = $2 \
                 WHERE subscription = $3 AND (lease_holder = $1 OR lease_until <= $4) \
                 RETURNING position, attempts, next_attempt_at, parked_at",
            )
            .bind(holder)
            .bind(millis(until))
            .bind(subscription)
            .bind(millis(now))
            .fetch_optional(p)
            .await
            .map_err(port_error)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let next: Option<i64> = row.try_get("next_attempt_at").map_err(port_error)?;
            let parked: Option<i64> = row.try_get("parked_at").map_err(port_error)?;
            let attempts: i64 = row.try_get("attempts").map_err(port_error)?;
            Ok(Some(Cursor {
                position: row.try_get("position").map_err(port_error)?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                next_attempt_at: next.map(at).transpose()?,
                parked: parked.is_some(),
            }))
        })
    }

    async fn advance(
        &self,
        subscription: &str,
        holder: &str,
        position: i64,
    ) -> Result<bool, PortError> {
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            Ok(sqlx::query(
                "UPDATE webhook_cursors SET position = $1, attempts = 0, next_attempt_at = NULL, \
                 last_error = NULL, pending_position = NULL, pending_id = NULL, \
                 pending_type = NULL, pending_account = NULL, parked_at = NULL \
                 WHERE subscription = $2 AND lease_holder = $3 AND position <= $1",
            )
            .bind(position)
            .bind(subscription)
            .bind(holder)
            .execute(p)
            .await
            .map_err(port_error)?
            .rows_affected()
                == 1)
        })
    }

    async fn record_failure(
        &self,
        subscription: &str,
        holder: &str,
        failure: &FailedAttempt,
    ) -> Result<bool, PortError> {
        let parked_at = failure.parked.then(|| millis(failure.at));
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            Ok(sqlx::query(
                "UPDATE webhook_cursors SET attempts = $1, next_attempt_at = $2, last_error = $3, \
                 pending_position = $4, pending_id = $5, pending_type = $6, pending_account = $7, \
                 parked_at = $8 WHERE subscription = $9 AND lease_holder = $10",
            )
            .bind(i64::from(failure.attempts))
            .bind(millis(failure.next_attempt_at))
            .bind(&failure.error)
            .bind(failure.position)
            .bind(&failure.webhook_id)
            .bind(failure.event_type.as_str())
            .bind(&failure.account)
            .bind(parked_at)
            .bind(subscription)
            .bind(holder)
            .execute(p)
            .await
            .map_err(port_error)?
            .rows_affected()
                == 1)
        })
    }

    async fn parked(&self) -> Result<Vec<ParkedDelivery>, PortError> {
        on_pool!(&self.db.pool, p => {
            sqlx::query(
                "SELECT subscription, attempts, last_error, pending_position, pending_id, \
                 pending_type, pending_account, parked_at FROM webhook_cursors \
                 WHERE parked_at IS NOT NULL ORDER BY parked_at, subscription",
            )
            .fetch_all(p)
            .await
            .map_err(port_error)?
            .iter()
            .map(|row| -> Result<ParkedDelivery, PortError> {
                let get = |e: sqlx::Error| port_error(e);
                let attempts: i64 = row.try_get("attempts").map_err(get)?;
                let text = |column: &str| -> Result<String, PortError> {
                    Ok(row
                        .try_get::<Option<String>, _>(column)
                        .map_err(port_error)?
                        .unwrap_or_default())
                };
                Ok(ParkedDelivery {
                    webhook_id: text("pending_id")?,
                    subscription: text("subscription")?,
                    position: row
                        .try_get::<Option<i64>, _>("pending_position")
                        .map_err(get)?
                        .unwrap_or_default(),
                    event_type: text("pending_type")?,
                    account: text("pending_account")?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    last_error: text("last_error")?,
                    parked_at: at(row.try_get::<i64, _>("parked_at").map_err(get)?)?,
                })
            })
            .collect()
        })
    }

    async fn retry(&self, webhook_id: &str, now: DateTime<Utc>) -> Result<bool, PortError> {
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            Ok(sqlx::query(
                "UPDATE webhook_cursors SET parked_at = NULL, attempts = 0, next_attempt_at = $1 \
                 WHERE pending_id = $2 AND parked_at IS NOT NULL",
            )
            .bind(millis(now))
            .bind(webhook_id)
            .execute(p)
            .await
            .map_err(port_error)?
            .rows_affected()
                > 0)
        })
    }
}

#[async_trait]
impl EventFeed for AccountEventStore {
    async fn events_after(&self, position: i64, limit: u32) -> Result<Vec<StoredEvent>, PortError> {
        AccountEventStore::events_after(self, position, limit)
            .await
            .map_err(|e| PortError::Internal(format!("reading the event log: {e}").into()))
    }
}
