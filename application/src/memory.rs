//! An in-memory [`AccountRepository`], for tests of the use cases and of the adapters
//! that drive them (`test-support` feature).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use miniauth_domain::{AccountId, SocialAccount, SocialAccountEvent};

use crate::ports::{
    AccountRepository, CommitError, LoadedAccount, PortError, RefreshToken, RefreshTokenStore,
    SessionOwner, TokenSubject,
};

/// One committed event, as a test reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// The event's number within its account, from 1.
    pub sequence: u64,
    /// The event.
    pub event: SocialAccountEvent,
    /// The metadata it was committed with.
    pub metadata: HashMap<String, String>,
}

/// Accounts as event streams in memory, with the optimistic concurrency of a real
/// store: a commit after a version that is no longer the latest is a conflict.
/// Login sessions started with a commit go to the refresh-token store given by
/// [`start_sessions_with`](Self::start_sessions_with) (memory holds nothing durable
/// to share a commit with).
#[derive(Default)]
pub struct InMemoryAccounts {
    streams: Mutex<HashMap<AccountId, Vec<RecordedEvent>>>,
    sessions: Mutex<Option<Arc<dyn RefreshTokenStore>>>,
}

impl std::fmt::Debug for InMemoryAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryAccounts")
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl InMemoryAccounts {
    /// Every event committed to `id`, oldest first.
    pub fn events(&self, id: &AccountId) -> Vec<RecordedEvent> {
        self.streams().get(id).cloned().unwrap_or_default()
    }

    /// Where the login sessions of [`AccountRepository::commit_with_session`] start.
    pub fn start_sessions_with(&self, refresh: Arc<dyn RefreshTokenStore>) {
        *self.sessions.lock().unwrap_or_else(|e| e.into_inner()) = Some(refresh);
    }

    /// Starts a login session in the store given to
    /// [`start_sessions_with`](Self::start_sessions_with).
    pub async fn start_session(
        &self,
        owner: &SessionOwner,
        now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), PortError> {
        let refresh = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| PortError::Internal("in-memory accounts: no session store".into()))?;
        refresh.issue(owner, now).await
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, Vec<RecordedEvent>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl AccountRepository for InMemoryAccounts {
    async fn load(&self, id: &AccountId) -> Result<LoadedAccount, PortError> {
        let mut state = SocialAccount::default();
        let events = self.events(id);
        for recorded in &events {
            state.apply(recorded.event.clone());
        }
        Ok(LoadedAccount::new(id.clone(), state, events.len() as u64))
    }

    async fn commit(
        &self,
        account: LoadedAccount,
        events: Vec<SocialAccountEvent>,
        metadata: HashMap<String, String>,
    ) -> Result<(), CommitError> {
        let mut streams = self.streams();
        let stream = streams.entry(account.id().clone()).or_default();
        if stream.len() as u64 != account.version() {
            return Err(CommitError::Conflict);
        }
        for event in events {
            stream.push(RecordedEvent {
                sequence: stream.len() as u64 + 1,
                event,
                metadata: metadata.clone(),
            });
        }
        Ok(())
    }

    async fn commit_with_session(
        &self,
        account: LoadedAccount,
        events: Vec<SocialAccountEvent>,
        metadata: HashMap<String, String>,
        owner: &SessionOwner,
        now: DateTime<Utc>,
    ) -> Result<(TokenSubject, RefreshToken), CommitError> {
        self.commit(account, events, metadata).await?;
        Ok(self.start_session(owner, now).await?)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use miniauth_domain::{AppId, OpenId, UnbindReason, Unbound, UserId};

    use super::*;

    fn id() -> AccountId {
        let appid = AppId::parse("wx4f4bc4dec97d474b").unwrap();
        AccountId::new(&appid, &OpenId::parse("o-memory").unwrap())
    }

    fn unbound() -> SocialAccountEvent {
        SocialAccountEvent::Unbound(Unbound {
            user_id: UserId::new(7).unwrap(),
            reason: UnbindReason::UserRequest,
            occurred_at: Utc::now(),
        })
    }

    #[tokio::test]
    async fn a_commit_after_a_stale_version_conflicts_and_writes_nothing() {
        let accounts = InMemoryAccounts::default();
        let first = accounts.load(&id()).await.unwrap();
        let second = accounts.load(&id()).await.unwrap();
        assert_eq!(second.version(), 0);

        accounts
            .commit(first, vec![unbound(), unbound()], HashMap::new())
            .await
            .unwrap();
        let lost = accounts
            .commit(second, vec![unbound()], HashMap::new())
            .await;

        assert_eq!(lost, Err(CommitError::Conflict));
        let sequences: Vec<u64> = accounts.events(&id()).iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, vec![1, 2]);
        assert_eq!(accounts.load(&id()).await.unwrap().version(), 2);
    }
}

/// [`UsageCounters`](crate::ports::UsageCounters) in memory: one process, which is all a
/// test of the use cases or of the HTTP adapter needs.
#[derive(Debug, Default)]
pub struct InMemoryUsageCounters {
    uses: Mutex<HashMap<crate::ports::UsageKey, u32>>,
}

impl InMemoryUsageCounters {
    /// The counts of the keys `kind` selects, in no particular order.
    pub fn counts(&self, kind: fn(&crate::ports::UsageKey) -> bool) -> Vec<u32> {
        let uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        uses.iter()
            .filter(|(k, _)| kind(k))
            .map(|(_, n)| *n)
            .collect()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.uses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

#[async_trait]
impl crate::ports::UsageCounters for InMemoryUsageCounters {
    async fn count(
        &self,
        key: &crate::ports::UsageKey,
        _keep_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<u32, PortError> {
        let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        let count = uses.entry(key.clone()).or_default();
        *count += 1;
        Ok(*count)
    }

    async fn uncount(&self, key: &crate::ports::UsageKey) -> Result<(), PortError> {
        let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = uses.get_mut(key) {
            *count = count.saturating_sub(1);
        }
        Ok(())
    }

    async fn uses(&self, key: &crate::ports::UsageKey) -> Result<u32, PortError> {
        let uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        Ok(uses.get(key).copied().unwrap_or(0))
    }

    async fn purge(&self, _now: chrono::DateTime<chrono::Utc>) -> Result<u64, PortError> {
        Ok(0)
    }
}
