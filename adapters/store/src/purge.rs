//! Housekeeping: dead refresh tokens go in short transactions, however large the
//! backlog.

use chrono::{DateTime, Utc};

use crate::{RefreshPurge, Store, StoreError};

/// Rows deleted per statement of a purge: short transactions, even on a large backlog.
pub const REFRESH_PURGE_BATCH: u32 = 1000;
/// Statements per call at most; a larger backlog is cleared by the next calls.
const REFRESH_PURGE_MAX_BATCHES: u32 = 20;

impl Store {
    /// Deletes the refresh tokens that expired or were revoked before `before`, and the
    /// families left without tokens, [`REFRESH_PURGE_BATCH`] rows a statement and 20
    /// statements at most: a larger backlog is left to the next call. Several instances
    /// may purge at once (the deletes are idempotent).
    pub async fn purge_refresh_backlog(
        &self,
        before: DateTime<Utc>,
    ) -> Result<RefreshPurge, StoreError> {
        let mut total = RefreshPurge::default();
        let limit = u64::from(REFRESH_PURGE_BATCH);
        for _ in 0..REFRESH_PURGE_MAX_BATCHES {
            let purged = self
                .purge_refresh_tokens(before, REFRESH_PURGE_BATCH)
                .await?;
            total.tokens += purged.tokens;
            total.families += purged.families;
            if purged.tokens < limit && purged.families < limit {
                break;
            }
        }
        Ok(total)
    }
}
