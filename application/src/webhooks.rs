//! Webhooks to business systems: the event log, followed by its global position, turned
//! into signed HTTP deliveries, one subscription at a time.
//!
//! * **At least once, in order.** Each subscription has a cursor in the store: the
//!   position up to which everything was delivered (or is not wanted). A delivery
//!   moves the cursor only after the receiver answered 2xx, so a crash (kill -9) in
//!   between sends the event again after the restart. Events go out one at a time in
//!   log order, so a receiver sees each account's events in order.
//! * **Retries, then parking.** A failed delivery is tried again after a backoff that
//!   doubles up to a ceiling; after `max_attempts` it is *parked*: the subscription
//!   stops there (nothing later is sent, which keeps every account's order) until an
//!   operator retries it (`miniauth webhooks retry <id>`, or the admin API).
//! * **One deliverer per subscription.** Instances sharing a store take a lease on the
//!   subscription's cursor; only the holder sends, and every write of the cursor is
//!   conditional on still holding it.
//! * **Idempotency.** `webhook-id` is `msg_{subscription}_{position}`: the same for
//!   every attempt of one event to one subscription, so receivers drop duplicates.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use miniauth_domain::{AccountId, AppId, PersonalField, SealedDatum, SocialAccountEvent, TenantId};
use serde_json::{json, Map, Value};

use crate::error::AppError;
use crate::ports::{Clock, PersonalDataVault, PortError, StoredEvent};
use crate::secret::Secret;

/// The event types a subscription can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WebhookEvent {
    /// `logged_in`: a code2session login (SessionObtained).
    LoggedIn,
    /// `profile_submitted`: a nickname and avatar were accepted.
    ProfileSubmitted,
    /// `phone_verified`: WeChat verified a phone number.
    PhoneVerified,
    /// `user_bound`: the identity was bound to a user (any way, registration too).
    UserBound,
    /// `user_registered`: a new user was registered from the verified phone and bound.
    UserRegistered,
    /// `unbound`: the binding ended.
    Unbound,
    /// `personal_data_erased`: the account's personal data was crypto-shredded.
    PersonalDataErased,
    /// `link_declined`: the unionid named several users; nothing was linked.
    LinkDeclined,
    /// `account_imported`: the identity was carried over from another system
    /// (`miniauth import gitegg`); its imported binding follows as `user_bound`.
    AccountImported,
}

impl WebhookEvent {
    /// Every type's name, as configured and as sent in the payload's `type`.
    pub const NAMES: [&'static str; 9] = [
        "logged_in",
        "profile_submitted",
        "phone_verified",
        "user_bound",
        "user_registered",
        "unbound",
        "personal_data_erased",
        "link_declined",
        "account_imported",
    ];

    const ALL: [Self; 9] = [
        Self::LoggedIn,
        Self::ProfileSubmitted,
        Self::PhoneVerified,
        Self::UserBound,
        Self::UserRegistered,
        Self::Unbound,
        Self::PersonalDataErased,
        Self::LinkDeclined,
        Self::AccountImported,
    ];

    /// The type of this name, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|known| *known == name)
            .map(|i| Self::ALL[i])
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|e| *e == self).unwrap_or(0)]
    }

    /// The type of a logged event.
    pub fn of(event: &SocialAccountEvent) -> Self {
        match event {
            SocialAccountEvent::SessionObtained(_) => Self::LoggedIn,
            SocialAccountEvent::ProfileDecrypted(_) => Self::ProfileSubmitted,
            SocialAccountEvent::PhoneVerified(_) => Self::PhoneVerified,
            SocialAccountEvent::UserBound(bound)
                if bound.via == miniauth_domain::BindMethod::AutoRegistration =>
            {
                Self::UserRegistered
            }
            SocialAccountEvent::UserBound(_) => Self::UserBound,
            SocialAccountEvent::Unbound(_) => Self::Unbound,
            SocialAccountEvent::PersonalDataErased(_) => Self::PersonalDataErased,
            SocialAccountEvent::LinkDeclined(_) => Self::LinkDeclined,
            SocialAccountEvent::AccountImported(_) => Self::AccountImported,
        }
    }
}

/// One `[[webhooks]]` subscription.
#[derive(Clone)]
pub struct Subscription {
    /// Its stable name: the key of its cursor, part of every `webhook-id`.
    pub id: String,
    /// Where to POST.
    pub url: String,
    /// The `whsec_…` signing secret.
    pub secret: Secret,
    /// What it wants.
    pub events: BTreeSet<WebhookEvent>,
    /// Whether payloads carry phone numbers, nicknames and avatars.
    pub personal_data: bool,
    /// The tenant whose events it receives (tenants never mix).
    pub tenant: TenantId,
    /// The apps whose events it receives: apps of `tenant` only (all of them, or the
    /// ones its `apps` names).
    pub apps: BTreeSet<AppId>,
}

impl Subscription {
    /// Whether it receives `event`: of a type it asked for, of an identity of one of
    /// its apps. An event whose account names no app is of no tenant and goes to no
    /// subscription.
    pub fn wants(&self, event: &StoredEvent) -> bool {
        self.wants_type(WebhookEvent::of(&event.event))
            && AccountId::parse(&event.aggregate_id)
                .is_ok_and(|account| self.apps.contains(&account.appid()))
    }

    /// Whether it asked for events of type `event`. A registration is a binding too:
    /// `user_bound` subscribers receive `user_registered` (under that type).
    pub fn wants_type(&self, event: WebhookEvent) -> bool {
        self.events.contains(&event)
            || (event == WebhookEvent::UserRegistered
                && self.events.contains(&WebhookEvent::UserBound))
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("personal_data", &self.personal_data)
            .field("tenant", &self.tenant)
            .field("apps", &self.apps)
            .finish_non_exhaustive()
    }
}

/// How deliveries are retried and leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Attempts of one delivery before it is parked (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub backoff_initial: Duration,
    /// The longest wait between two attempts.
    pub backoff_max: Duration,
    /// How long a lease on a subscription lasts without renewal.
    pub lease: Duration,
    /// Events read from the log at a time.
    pub batch: u32,
}

impl DeliveryPolicy {
    /// The wait after the `failures`-th failure (1-based): initial × 2^(failures-1),
    /// at most the ceiling.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let wait = self
            .backoff_initial
            .checked_mul(1 << doublings)
            .unwrap_or(self.backoff_max);
        wait.min(self.backoff_max)
    }
}

/// A delivery ready to send: what the Standard Webhooks headers and the signature are
/// made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookMessage {
    /// `webhook-id`: `msg_{subscription}_{position}`, the same for every attempt.
    pub id: String,
    /// `webhook-timestamp`: when this attempt was made.
    pub timestamp: DateTime<Utc>,
    /// The JSON body, exactly as signed.
    pub body: String,
}

/// Why an attempt failed, for the operator (never a secret: a status, a timeout, a
/// connection error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFailure(pub String);

/// Sends one signed delivery: the HTTP client at the edge.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait WebhookSender: Send + Sync {
    /// POSTs `message` to the subscription's URL, signed with its secret; `Ok` only
    /// for a 2xx answer within the timeout.
    async fn send(
        &self,
        subscription: &Subscription,
        message: &WebhookMessage,
    ) -> Result<(), DeliveryFailure>;
}

/// The event log by global position: the same reader as the projections.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait EventFeed: Send + Sync {
    /// Events after `position` in commit order, at most `limit`.
    async fn events_after(&self, position: i64, limit: u32) -> Result<Vec<StoredEvent>, PortError>;
}

/// A subscription's cursor, as its lease holder reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Everything up to this position was delivered or is not wanted.
    pub position: i64,
    /// Failed attempts of the next wanted event.
    pub attempts: u32,
    /// Not before this time is the next attempt made.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Whether the next wanted event is parked (the subscription waits for a retry).
    pub parked: bool,
}

/// A failed attempt, as the cursor records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    /// The event's position.
    pub position: i64,
    /// Its `webhook-id`.
    pub webhook_id: String,
    /// Its type.
    pub event_type: WebhookEvent,
    /// Its account (`{appid}:{openid}`).
    pub account: String,
    /// Failed attempts so far, this one included.
    pub attempts: u32,
    /// When to try again.
    pub next_attempt_at: DateTime<Utc>,
    /// Why it failed.
    pub error: String,
    /// Whether this was the last attempt: the delivery is parked.
    pub parked: bool,
    /// Now.
    pub at: DateTime<Utc>,
}

/// A parked delivery, for operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParkedDelivery {
    /// The `webhook-id`: what `retry` takes.
    pub webhook_id: String,
    /// The subscription.
    pub subscription: String,
    /// The event's position in the log.
    pub position: i64,
    /// The event type.
    pub event_type: String,
    /// The account (`{appid}:{openid}`).
    pub account: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last one failed.
    pub last_error: String,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
}

/// The cursors of the subscriptions, with their leases, in the store.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait WebhookLedger: Send + Sync {
    /// Takes or renews the lease on `subscription`'s cursor for `holder` until
    /// `until` (a new subscription starts at the beginning of the log). `None` while
    /// another holder's lease runs.
    async fn lease(
        &self,
        subscription: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Cursor>, PortError>;

    /// Moves the cursor to `position` and forgets the failures, if `holder` still
    /// holds the lease; answers whether it did.
    async fn advance(
        &self,
        subscription: &str,
        holder: &str,
        position: i64,
    ) -> Result<bool, PortError>;

    /// Records a failed attempt (parking it when it was the last), if `holder` still
    /// holds the lease; answers whether it did.
    async fn record_failure(
        &self,
        subscription: &str,
        holder: &str,
        failure: &FailedAttempt,
    ) -> Result<bool, PortError>;

    /// The parked deliveries.
    async fn parked(&self) -> Result<Vec<ParkedDelivery>, PortError>;

    /// Unparks the delivery `webhook_id`: it is tried again at once, with a fresh
    /// count of attempts. Answers whether such a delivery was parked.
    async fn retry(&self, webhook_id: &str, now: DateTime<Utc>) -> Result<bool, PortError>;
}

/// What one round over a subscription did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Deliveries the receiver accepted.
    pub delivered: u32,
    /// Attempts that failed.
    pub failed: u32,
    /// Deliveries parked in this round.
    pub parked: u32,
}

/// The error recorded when an event's payload could not be built (its personal data
/// could not be opened): no detail, which could carry personal data.
pub const PAYLOAD_FAILED: &str =
    "the payload could not be built (personal data could not be opened)";

/// `msg_{subscription}_{position}`: the same for every attempt of one delivery.
fn webhook_id(subscription: &Subscription, event: &StoredEvent) -> String {
    format!("msg_{}_{}", subscription.id, event.position)
}

/// The delivery service: reads the log after each subscription's cursor and sends.
pub struct WebhookDelivery {
    subscriptions: Vec<Subscription>,
    policy: DeliveryPolicy,
    feed: Arc<dyn EventFeed>,
    ledger: Arc<dyn WebhookLedger>,
    sender: Arc<dyn WebhookSender>,
    vault: Arc<dyn PersonalDataVault>,
    clock: Arc<dyn Clock>,
    holder: String,
}

/// The adapters the delivery service drives.
pub struct WebhookPorts {
    /// The log.
    pub feed: Arc<dyn EventFeed>,
    /// The cursors.
    pub ledger: Arc<dyn WebhookLedger>,
    /// The HTTP client.
    pub sender: Arc<dyn WebhookSender>,
    /// Opens personal data for the subscriptions that opted in.
    pub vault: Arc<dyn PersonalDataVault>,
    /// The time.
    pub clock: Arc<dyn Clock>,
}

impl WebhookDelivery {
    /// The service for `subscriptions`, leasing as `holder` (unique per process).
    pub fn new(
        subscriptions: Vec<Subscription>,
        policy: DeliveryPolicy,
        ports: WebhookPorts,
        holder: impl Into<String>,
    ) -> Self {
        Self {
            subscriptions,
            policy,
            feed: ports.feed,
            ledger: ports.ledger,
            sender: ports.sender,
            vault: ports.vault,
            clock: ports.clock,
            holder: holder.into(),
        }
    }

    /// The subscriptions.
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// The parked deliveries.
    pub async fn parked(&self) -> Result<Vec<ParkedDelivery>, AppError> {
        Ok(self.ledger.parked().await?)
    }

    /// Retries a parked delivery now; `false` when none has this id.
    pub async fn retry(&self, webhook_id: &str) -> Result<bool, AppError> {
        Ok(self.ledger.retry(webhook_id, self.clock.now()).await?)
    }

    /// One round over every subscription: each delivers what is due, in order, until
    /// the log's end, a failure, or half its lease is used.
    pub async fn round(&self) -> Result<RoundReport, AppError> {
        let mut total = RoundReport::default();
        for subscription in &self.subscriptions {
            let report = self.deliver(subscription).await?;
            total.delivered += report.delivered;
            total.failed += report.failed;
            total.parked += report.parked;
        }
        Ok(total)
    }

    async fn deliver(&self, subscription: &Subscription) -> Result<RoundReport, AppError> {
        let mut report = RoundReport::default();
        let started = self.clock.now();
        let Some(cursor) = self
            .ledger
            .lease(
                &subscription.id,
                &self.holder,
                started,
                started + self.policy.lease,
            )
            .await?
        else {
            return Ok(report);
        };
        if cursor.parked || cursor.next_attempt_at.is_some_and(|at| at > started) {
            return Ok(report);
        }
        let mut position = cursor.position;
        let mut attempts = cursor.attempts;
        loop {
            let events = self
                .feed
                .events_after(position, self.policy.batch.max(1))
                .await?;
            let Some(last) = events.last().map(|e| e.position) else {
                return Ok(report);
            };
            for event in events {
                if !subscription.wants(&event) {
                    continue;
                }
                let kind = WebhookEvent::of(&event.event);
                let webhook_id = webhook_id(subscription, &event);
                // A payload that cannot be built is a failed attempt like any other
                // (backoff, then parking); why stays out of the cursor and the log, which
                // must not carry personal data.
                let sent = match self.message(subscription, &event, kind).await {
                    Ok(message) => self.sender.send(subscription, &message).await,
                    Err(_) => Err(DeliveryFailure(PAYLOAD_FAILED.into())),
                };
                // Skipped events up to here are passed in the same write as this one.
                match sent {
                    Ok(()) => {
                        report.delivered += 1;
                        attempts = 0;
                        position = event.position;
                        if !self
                            .ledger
                            .advance(&subscription.id, &self.holder, position)
                            .await?
                        {
                            return Ok(report);
                        }
                    }
                    Err(DeliveryFailure(error)) => {
                        if position < event.position - 1 {
                            // Nothing wanted before it: the cursor moves up to it.
                            self.ledger
                                .advance(&subscription.id, &self.holder, event.position - 1)
                                .await?;
                        }
                        attempts += 1;
                        let parked = attempts >= self.policy.max_attempts;
                        let now = self.clock.now();
                        report.failed += 1;
                        report.parked += u32::from(parked);
                        tracing::warn!(
                            subscription = %subscription.id,
                            webhook_id = %webhook_id,
                            attempts,
                            parked,
                            %error,
                            "webhook delivery failed"
                        );
                        self.ledger
                            .record_failure(
                                &subscription.id,
                                &self.holder,
                                &FailedAttempt {
                                    position: event.position,
                                    webhook_id,
                                    event_type: kind,
                                    account: event.aggregate_id.clone(),
                                    attempts,
                                    next_attempt_at: now + self.policy.backoff(attempts),
                                    error,
                                    parked,
                                    at: now,
                                },
                            )
                            .await?;
                        return Ok(report);
                    }
                }
                if self.clock.now() - started > self.policy.lease / 2 {
                    // The next round renews the lease before going on.
                    return Ok(report);
                }
            }
            if last > position {
                position = last;
                if !self
                    .ledger
                    .advance(&subscription.id, &self.holder, position)
                    .await?
                {
                    return Ok(report);
                }
            }
        }
    }

    /// The signed message of `event` for `subscription`: the Standard Webhooks
    /// payload shape (`type`, `timestamp`, `data`).
    async fn message(
        &self,
        subscription: &Subscription,
        event: &StoredEvent,
        kind: WebhookEvent,
    ) -> Result<WebhookMessage, AppError> {
        let mut data = Map::new();
        data.insert("account".into(), json!(event.aggregate_id));
        if let Ok(account) = AccountId::parse(&event.aggregate_id) {
            data.insert("appid".into(), json!(account.appid().as_str()));
            data.insert("openid".into(), json!(account.openid().as_str()));
        }
        data.insert("position".into(), json!(event.position));
        data.insert("sequence".into(), json!(event.sequence));
        match &event.event {
            SocialAccountEvent::SessionObtained(e) => {
                data.insert("session_seq".into(), json!(e.session_seq));
            }
            SocialAccountEvent::ProfileDecrypted(e) => {
                data.insert("via".into(), json!(e.via.as_str()));
                if subscription.personal_data {
                    let nickname = self.open(event, PersonalField::Nickname, &e.nickname);
                    data.insert("nickname".into(), json!(nickname.await?));
                    let avatar = self.open(event, PersonalField::AvatarUrl, &e.avatar_url);
                    data.insert("avatar_url".into(), json!(avatar.await?));
                }
            }
            SocialAccountEvent::PhoneVerified(e) => {
                data.insert("via".into(), json!(e.via.as_str()));
                data.insert("country_code".into(), json!(e.country_code));
                if subscription.personal_data {
                    let phone = self.open(event, PersonalField::Phone, &e.phone).await?;
                    data.insert("phone".into(), json!(phone));
                }
            }
            SocialAccountEvent::UserBound(e) => {
                data.insert("user_id".into(), json!(e.user_id.get()));
                data.insert("via".into(), json!(e.via.as_str()));
                if let Some(from) = &e.linked_from {
                    data.insert("linked_from".into(), json!(from.as_str()));
                }
            }
            SocialAccountEvent::Unbound(e) => {
                data.insert("user_id".into(), json!(e.user_id.get()));
                data.insert("reason".into(), json!(e.reason.as_str()));
            }
            SocialAccountEvent::PersonalDataErased(_) => {}
            SocialAccountEvent::LinkDeclined(e) => {
                let users: Vec<i64> = e.users.iter().map(|u| u.get()).collect();
                data.insert("users".into(), json!(users));
            }
            SocialAccountEvent::AccountImported(e) => {
                data.insert("system".into(), json!(e.source.system));
                data.insert("row_id".into(), json!(e.source.row_id));
            }
        }
        let body = json!({
            "type": kind.as_str(),
            "timestamp": event.event.occurred_at().to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": Value::Object(data),
        });
        Ok(WebhookMessage {
            id: webhook_id(subscription, event),
            timestamp: self.clock.now(),
            body: body.to_string(),
        })
    }

    /// A personal datum in the clear; `None` once the account was erased.
    async fn open(
        &self,
        event: &StoredEvent,
        field: PersonalField,
        sealed: &SealedDatum,
    ) -> Result<Option<String>, AppError> {
        let account = AccountId::parse(&event.aggregate_id)
            .map_err(|e| AppError::Internal(format!("a logged account id: {e}")))?;
        Ok(self.vault.unseal_personal(&account, field, sealed).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MockClock, MockPersonalDataVault};
    use miniauth_domain::{LinkDeclined, PersonalDataErased, PhoneSource, PhoneVerified};

    fn at(position: i64, event: SocialAccountEvent) -> StoredEvent {
        StoredEvent {
            position,
            aggregate_id: "wxdemo000000000001:o-crash".into(),
            sequence: position,
            event_type: event.type_name().into(),
            event_version: "1".into(),
            event,
            metadata: Default::default(),
        }
    }

    fn erased(position: i64) -> StoredEvent {
        let occurred_at = Utc::now();
        at(
            position,
            SocialAccountEvent::PersonalDataErased(PersonalDataErased { occurred_at }),
        )
    }

    fn declined(position: i64) -> StoredEvent {
        let occurred_at = Utc::now();
        let users = Vec::new();
        at(
            position,
            SocialAccountEvent::LinkDeclined(LinkDeclined { users, occurred_at }),
        )
    }

    fn cursor(position: i64, attempts: u32) -> Cursor {
        Cursor {
            position,
            attempts,
            next_attempt_at: None,
            parked: false,
        }
    }

    /// The identities of the subscription's tenant; `at` makes events of the first.
    const OURS: [&str; 2] = ["wxdemo000000000001:o-crash", "wxdemo000000000002:o-other"];
    /// An identity of another tenant's app.
    const THEIRS: &str = "wxtheirs0000000001:o-theirs";

    fn of(account: &str, event: StoredEvent) -> StoredEvent {
        StoredEvent {
            aggregate_id: account.into(),
            ..event
        }
    }

    /// A subscription of tenant `ours` to `events`, for the apps of `OURS`.
    fn subscription(
        events: impl IntoIterator<Item = WebhookEvent>,
        personal_data: bool,
    ) -> Subscription {
        Subscription {
            id: "crm".into(),
            url: "https://crm.example.com/hook".into(),
            secret: Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            events: events.into_iter().collect(),
            personal_data,
            tenant: TenantId::parse("ours").unwrap(),
            apps: OURS
                .iter()
                .map(|a| AccountId::parse(a).unwrap().appid())
                .collect(),
        }
    }

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            max_attempts: 3,
            backoff_initial: Duration::seconds(1),
            backoff_max: Duration::seconds(10),
            lease: Duration::seconds(30),
            batch: 10,
        }
    }

    /// The service over the mocks, for a subscription to `personal_data_erased`.
    fn service(
        feed: MockEventFeed,
        ledger: MockWebhookLedger,
        sender: MockWebhookSender,
    ) -> WebhookDelivery {
        let subscription = subscription([WebhookEvent::PersonalDataErased], false);
        let ports = (feed, ledger, sender, MockPersonalDataVault::new());
        service_for(subscription, ports)
    }

    /// The service over the mocks for `subscription`.
    fn service_for(
        subscription: Subscription,
        (feed, ledger, sender, vault): (
            MockEventFeed,
            MockWebhookLedger,
            MockWebhookSender,
            MockPersonalDataVault,
        ),
    ) -> WebhookDelivery {
        let mut clock = MockClock::new();
        clock.expect_now().returning(Utc::now);
        WebhookDelivery::new(
            vec![subscription],
            policy(),
            WebhookPorts {
                feed: Arc::new(feed),
                ledger: Arc::new(ledger),
                sender: Arc::new(sender),
                vault: Arc::new(vault),
                clock: Arc::new(clock),
            },
            "holder-1",
        )
    }

    fn phone_verified(position: i64) -> StoredEvent {
        at(
            position,
            SocialAccountEvent::PhoneVerified(PhoneVerified {
                phone: SealedDatum::from_sealed_text("v1.sealed-phone".into()),
                country_code: "86".into(),
                via: PhoneSource::PhoneCode,
                occurred_at: Utc::now(),
            }),
        )
    }

    #[tokio::test]
    async fn another_tenants_events_are_passed_never_sent() {
        // With personal data on, tenant B's phone and erasure are never opened nor sent;
        // the cursor moves past them all the same.
        let mut feed = MockEventFeed::new();
        feed.expect_events_after()
            .withf(|after, _| *after == 0)
            .returning(|_, _| {
                Ok(vec![
                    of(THEIRS, phone_verified(1)),
                    of(THEIRS, erased(2)),
                    of(OURS[1], erased(3)),
                    of("not-an-account", erased(4)),
                    of(THEIRS, erased(5)),
                ])
            });
        feed.expect_events_after()
            .withf(|after, _| *after == 5)
            .returning(|_, _| Ok(vec![]));
        let mut ledger = MockWebhookLedger::new();
        ledger
            .expect_lease()
            .returning(|_, _, _, _| Ok(Some(cursor(0, 0))));
        let mut advanced = mockall::Sequence::new();
        for to in [3, 5] {
            ledger
                .expect_advance()
                .withf(move |_, _, p| *p == to)
                .times(1)
                .in_sequence(&mut advanced)
                .returning(|_, _, _| Ok(true));
        }
        let mut sender = MockWebhookSender::new();
        sender
            .expect_send()
            .withf(|_, m| m.id == "msg_crm_3" && m.body.contains(OURS[1]))
            .times(1)
            .returning(|_, _| Ok(()));
        let mut vault = MockPersonalDataVault::new();
        vault.expect_unseal_personal().never();
        let subscription = subscription(
            [
                WebhookEvent::PhoneVerified,
                WebhookEvent::PersonalDataErased,
            ],
            true,
        );
        let report = service_for(subscription, (feed, ledger, sender, vault))
            .round()
            .await
            .unwrap();
        assert_eq!(report.delivered, 1);
    }

    #[tokio::test]
    async fn a_payload_that_cannot_be_built_is_a_failed_attempt_then_parked() {
        for (attempts, parked) in [(0, false), (2, true)] {
            let mut feed = MockEventFeed::new();
            feed.expect_events_after()
                .returning(|_, _| Ok(vec![declined(3), phone_verified(4), erased(5)]));
            let mut ledger = MockWebhookLedger::new();
            ledger
                .expect_lease()
                .returning(move |_, _, _, _| Ok(Some(cursor(2, attempts))));
            ledger
                .expect_advance()
                .withf(|_, _, p| *p == 3)
                .times(1)
                .returning(|_, _, _| Ok(true));
            ledger
                .expect_record_failure()
                .withf(move |_, _, f| {
                    f.position == 4
                        && f.webhook_id == "msg_crm_4"
                        && f.attempts == attempts + 1
                        && f.parked == parked
                        && f.error == PAYLOAD_FAILED
                        && f.next_attempt_at > f.at
                })
                .times(1)
                .returning(|_, _, _| Ok(true));
            let mut sender = MockWebhookSender::new();
            sender.expect_send().never();
            let mut vault = MockPersonalDataVault::new();
            vault.expect_unseal_personal().returning(|_, _, _| {
                Err(PortError::Internal(
                    "sealed personal datum: malformed".into(),
                ))
            });
            let subscription = subscription(
                [
                    WebhookEvent::PhoneVerified,
                    WebhookEvent::PersonalDataErased,
                ],
                true,
            );
            let report = service_for(subscription, (feed, ledger, sender, vault))
                .round()
                .await
                .unwrap();
            assert_eq!((report.failed, report.parked), (1, u32::from(parked)));
        }
    }

    #[tokio::test]
    async fn wanted_events_are_sent_in_order_and_the_rest_passed() {
        let mut feed = MockEventFeed::new();
        feed.expect_events_after()
            .withf(|after, _| *after == 0)
            .returning(|_, _| Ok(vec![declined(1), erased(2), declined(3)]));
        feed.expect_events_after()
            .withf(|after, _| *after == 3)
            .returning(|_, _| Ok(vec![]));
        let mut ledger = MockWebhookLedger::new();
        ledger
            .expect_lease()
            .returning(|_, _, _, _| Ok(Some(cursor(0, 0))));
        let mut advanced = mockall::Sequence::new();
        for to in [2, 3] {
            ledger
                .expect_advance()
                .withf(move |s, h, p| s == "crm" && h == "holder-1" && *p == to)
                .times(1)
                .in_sequence(&mut advanced)
                .returning(|_, _, _| Ok(true));
        }
        let mut sender = MockWebhookSender::new();
        sender
            .expect_send()
            .withf(|_, m| m.id == "msg_crm_2" && m.body.contains("personal_data_erased"))
            .times(1)
            .returning(|_, _| Ok(()));
        let report = service(feed, ledger, sender).round().await.unwrap();
        assert_eq!(report.delivered, 1);
    }

    #[tokio::test]
    async fn a_lost_lease_stops_the_round() {
        let mut feed = MockEventFeed::new();
        feed.expect_events_after()
            .returning(|_, _| Ok(vec![erased(1), erased(2)]));
        let mut ledger = MockWebhookLedger::new();
        ledger
            .expect_lease()
            .returning(|_, _, _, _| Ok(Some(cursor(0, 0))));
        ledger
            .expect_advance()
            .times(1)
            .returning(|_, _, _| Ok(false));
        let mut sender = MockWebhookSender::new();
        sender.expect_send().times(1).returning(|_, _| Ok(()));
        service(feed, ledger, sender).round().await.unwrap();
    }

    #[tokio::test]
    async fn the_last_failed_attempt_parks_the_delivery_and_moves_up_to_it() {
        let mut feed = MockEventFeed::new();
        feed.expect_events_after()
            .returning(|_, _| Ok(vec![declined(5), erased(6), erased(7)]));
        let mut ledger = MockWebhookLedger::new();
        ledger
            .expect_lease()
            .returning(|_, _, _, _| Ok(Some(cursor(4, 2))));
        ledger
            .expect_advance()
            .withf(|_, _, p| *p == 5)
            .times(1)
            .returning(|_, _, _| Ok(true));
        ledger
            .expect_record_failure()
            .withf(|_, _, f| f.position == 6 && f.attempts == 3 && f.parked)
            .times(1)
            .returning(|_, _, _| Ok(true));
        let mut sender = MockWebhookSender::new();
        sender
            .expect_send()
            .times(1)
            .returning(|_, _| Err(DeliveryFailure("answered HTTP 503".into())));
        let report = service(feed, ledger, sender).round().await.unwrap();
        assert_eq!((report.failed, report.parked), (1, 1));
    }

    #[tokio::test]
    async fn a_parked_or_waiting_subscription_sends_nothing() {
        for cursor in [
            Cursor {
                parked: true,
                ..cursor(0, 3)
            },
            Cursor {
                next_attempt_at: Some(Utc::now() + Duration::minutes(1)),
                ..cursor(0, 1)
            },
        ] {
            let mut ledger = MockWebhookLedger::new();
            ledger
                .expect_lease()
                .returning(move |_, _, _, _| Ok(Some(cursor.clone())));
            let mut feed = MockEventFeed::new();
            feed.expect_events_after().never();
            let mut sender = MockWebhookSender::new();
            sender.expect_send().never();
            service(feed, ledger, sender).round().await.unwrap();
        }
    }

    #[test]
    fn event_names_round_trip() {
        for name in WebhookEvent::NAMES {
            assert_eq!(WebhookEvent::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(WebhookEvent::parse("user_deleted"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let policy = DeliveryPolicy {
            max_attempts: 5,
            backoff_initial: Duration::seconds(1),
            backoff_max: Duration::seconds(10),
            lease: Duration::seconds(30),
            batch: 10,
        };
        let waits: Vec<i64> = (1..=6).map(|n| policy.backoff(n).num_seconds()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn user_bound_subscribers_receive_registrations() {
        let subscription = subscription([WebhookEvent::UserBound], false);
        assert!(subscription.wants_type(WebhookEvent::UserRegistered));
        assert!(subscription.wants_type(WebhookEvent::UserBound));
        assert!(!subscription.wants_type(WebhookEvent::Unbound));
        assert!(!format!("{subscription:?}").contains("whsec_"));
    }

    #[test]
    fn only_events_of_its_apps_are_wanted() {
        let subscription = subscription([WebhookEvent::PersonalDataErased], true);
        assert!(subscription.wants(&of(OURS[0], erased(1))));
        assert!(subscription.wants(&of(OURS[1], erased(1))));
        assert!(!subscription.wants(&of(THEIRS, erased(1))));
        assert!(!subscription.wants(&of("no account", erased(1))));
        assert!(!subscription.wants(&of(OURS[0], declined(1))));
    }
}
