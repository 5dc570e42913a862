//! What auditors ask of the event log: an account's history with its personal data
//! masked, the bindings that held at an instant, an export, and the proof that the log
//! is untampered. The [`AuditLog`] port gives the facts as recorded; [`Audit`] answers
//! the questions, with the masking rules of [`masking`]. The HTTP API and the CLI
//! render these answers as they are, so both say the same thing.

pub mod masking;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use miniauth_domain::audit::{AuditCheckpoint, BindingSpan, LoggedEvent, VerifyReport};
use miniauth_domain::{AccountId, AppId, InvalidValue, OpenId, SocialAccountEvent, UserId};
use serde::Serialize;

use crate::context::EventMetadata;
use crate::error::AppError;
use crate::ports::{AuditLog, Clock, PersonalDataVault, PortError, StoredEvent};

/// One event of an account's history, as an auditor reads it: personal data masked or
/// marked erased, never in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = HistoryEntryView, description = "One event of an account's history; personal data masked or `erased`.")
)]
pub struct HistoryEntry {
    /// The global commit order.
    pub position: i64,
    /// The number within the account's stream, from 1.
    pub sequence: i64,
    /// The event type (`SessionObtained`, `ProfileDecrypted`, `PhoneVerified`,
    /// `UserBound`, `Unbound`, `PersonalDataErased`, `LinkDeclined`).
    pub event_type: String,
    /// The schema version as stored.
    pub event_version: String,
    /// When it happened (RFC 3339).
    pub occurred_at: DateTime<Utc>,
    /// How: a login's channel (`mini_program`, `official_account`, `website`,
    /// `mobile_app`), the bind method, the phone source or the profile source.
    pub via: Option<String>,
    /// Why a binding ended.
    pub reason: Option<String>,
    /// The user bound or unbound.
    pub user_id: Option<i64>,
    /// A `unionid_match` binding: the account (`{appid}:{openid}`) it follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linked_from: Option<String>,
    /// An imported event: the row of the other system it was read from
    /// (`{system}:{table}#{row}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
    /// A declined link: the users the unionid's bindings name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<i64>>,
    /// The session number of a login.
    pub session_seq: Option<u64>,
    /// The Open Platform id learned.
    pub unionid: Option<String>,
    /// The phone, masked, or `erased`.
    pub phone: Option<String>,
    /// The nickname, masked, or `erased`.
    pub nickname: Option<String>,
    /// Who acted.
    pub actor: Option<String>,
    /// Why an operator acted: a reason code (`note` metadata), when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The request it came from.
    pub request_id: Option<String>,
    /// The client IP.
    pub client_ip: Option<String>,
    /// When it was committed.
    pub recorded_at: Option<String>,
    /// The chain hash (null for events older than the chain).
    pub hash: Option<String>,
}

/// A binding as it stood at an instant. It serialises flat: `appid`, `openid`,
/// `user_id`, `bound_at`, `via` (its OpenAPI schema says so, in [`openapi`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindingAt {
    /// The app.
    pub appid: AppId,
    /// The WeChat identity.
    pub openid: OpenId,
    /// The user, since when, how.
    #[serde(flatten)]
    pub span: BindingSpan,
}

/// The OpenAPI schema of [`BindingAt`], flat as it serialises (a derived schema would
/// describe the flattened span as a separate object).
#[cfg(feature = "openapi")]
mod openapi {
    use std::borrow::Cow;

    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    use utoipa::openapi::{RefOr, Schema};

    use super::BindingAt;

    fn field(kind: Type, format: Option<KnownFormat>, description: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(kind)
            .format(format.map(SchemaFormat::KnownFormat))
            .description(Some(description))
    }

    impl utoipa::PartialSchema for BindingAt {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .description(Some("A binding as it stood at an instant."))
                .property("appid", field(Type::String, None, "The app."))
                .required("appid")
                .property("openid", field(Type::String, None, "The WeChat identity."))
                .required("openid")
                .property(
                    "user_id",
                    field(Type::Integer, Some(KnownFormat::Int64), "The user."),
                )
                .required("user_id")
                .property(
                    "bound_at",
                    field(Type::String, Some(KnownFormat::DateTime), "Since when."),
                )
                .required("bound_at")
                .property("via", field(Type::String, None, "How it was made."))
                .required("via")
                .into()
        }
    }

    impl utoipa::ToSchema for BindingAt {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("BindingAtView")
        }
    }
}

/// Every event of one WeChat identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = HistoryResponse, description = "`GET /v1/admin/apps/{appid}/accounts/{openid}/history`.")
)]
pub struct AccountHistory {
    /// The app.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub appid: AppId,
    /// The WeChat identity.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub openid: OpenId,
    /// Every event, in order.
    pub events: Vec<HistoryEntry>,
}

/// A user's bindings at an instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = UserBindingsResponse, description = "`GET /v1/admin/users/{user_id}/bindings`.")
)]
pub struct UserBindings {
    /// The user.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub user_id: UserId,
    /// The instant asked about.
    pub as_of: DateTime<Utc>,
    /// The bindings that held then.
    pub bindings: Vec<BindingAt>,
}

/// An app's bindings at an instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = AppBindingsResponse, description = "`GET /v1/admin/bindings`.")
)]
pub struct AppBindings {
    /// The app.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub appid: AppId,
    /// The instant asked about.
    pub as_of: DateTime<Utc>,
    /// The bindings that held then.
    pub bindings: Vec<BindingAt>,
}

/// Parses an RFC 3339 instant (`2026-03-01T00:00:00Z`, `2026-03-01T08:00:00+08:00`).
pub fn parse_instant(field: &'static str, text: &str) -> Result<DateTime<Utc>, InvalidValue> {
    if text.trim().is_empty() {
        return Err(InvalidValue::new(field, "is required (RFC 3339)"));
    }
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            InvalidValue::new(
                field,
                "must be an RFC 3339 instant such as 2026-03-01T00:00:00Z",
            )
        })
}

/// The auditors' questions, answered from the [`AuditLog`].
pub struct Audit {
    log: Arc<dyn AuditLog>,
    vault: Arc<dyn PersonalDataVault>,
    clock: Arc<dyn Clock>,
    apps: HashSet<AppId>,
}

impl Audit {
    /// Answers from `log`, opening personal data with `vault` to mask it; `clock` is
    /// "now" for questions asked without an instant, and dates checkpoints.
    pub fn new(
        log: Arc<dyn AuditLog>,
        vault: Arc<dyn PersonalDataVault>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            log,
            vault,
            clock,
            apps: HashSet::new(),
        }
    }

    /// The apps configured here: an app that is neither configured nor in the log is
    /// answered `UnknownApp` (a misspelt appid must not read as "no binding").
    pub fn with_apps(mut self, apps: impl IntoIterator<Item = AppId>) -> Self {
        self.apps = apps.into_iter().collect();
        self
    }

    /// Every event of (appid, openid) in order, personal data masked or marked erased;
    /// `AccountNotFound` when the account has none.
    pub async fn history(
        &self,
        appid: &AppId,
        openid: &OpenId,
    ) -> Result<AccountHistory, AppError> {
        let account = AccountId::new(appid, openid);
        let events = self.log.account_events(&account).await?;
        if events.is_empty() {
            return Err(AppError::AccountNotFound);
        }
        Ok(AccountHistory {
            appid: appid.clone(),
            openid: openid.clone(),
            events: history(self.vault.as_ref(), &account, events).await,
        })
    }

    /// The bindings of `user` as they stood at `as_of` (default: now).
    pub async fn user_bindings(
        &self,
        user: UserId,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<UserBindings, PortError> {
        let as_of = as_of.unwrap_or_else(|| self.clock.now());
        Ok(UserBindings {
            user_id: user,
            as_of,
            bindings: self.log.bindings_as_of(user, as_of).await?,
        })
    }

    /// Every binding of `appid` as it stood at `as_of` (default: now); `UnknownApp` for
    /// an app that is not configured and has no binding in the log.
    pub async fn app_bindings(
        &self,
        appid: &AppId,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<AppBindings, AppError> {
        let as_of = as_of.unwrap_or_else(|| self.clock.now());
        let bindings = self.log.app_bindings_as_of(appid, as_of).await?;
        if bindings.is_empty() && !self.apps.contains(appid) {
            return Err(AppError::UnknownApp);
        }
        Ok(AppBindings {
            appid: appid.clone(),
            as_of,
            bindings,
        })
    }

    /// The log after `position` in commit order, at most `limit` events, as stored.
    pub async fn export(&self, position: i64, limit: u32) -> Result<Vec<LoggedEvent>, PortError> {
        self.log.export(position, limit).await
    }

    /// Proves the log untampered, or names what was tampered with; records a
    /// checkpoint when it is clean.
    pub async fn verify(&self) -> Result<VerifyReport, PortError> {
        self.log.verify(self.clock.now()).await
    }

    /// The history of every account the log ever bound to `user`, each with its
    /// personal data masked: what a timeline of the user's bindings is drawn from.
    pub async fn user_histories(&self, user: UserId) -> Result<Vec<AccountHistory>, AppError> {
        let mut accounts = self.log.accounts_of_user(user).await?;
        accounts.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let mut histories = Vec::with_capacity(accounts.len());
        for account in accounts {
            let events = self.log.account_events(&account).await?;
            histories.push(AccountHistory {
                appid: account.appid(),
                openid: account.openid(),
                events: history(self.vault.as_ref(), &account, events).await,
            });
        }
        Ok(histories)
    }

    /// How many events of the log the read models have not projected yet.
    pub async fn projection_lag(&self) -> Result<i64, PortError> {
        self.log.projection_lag().await
    }

    /// The newest checkpoint recorded (by a clean `verify` or by `checkpoint`).
    pub async fn latest_checkpoint(&self) -> Result<Option<AuditCheckpoint>, PortError> {
        self.log.latest_checkpoint().await
    }

    /// Records a checkpoint over the events committed since the last one; answers it,
    /// or the newest one when nothing new was committed (so that what is shipped off
    /// the box always says where the log stands).
    pub async fn checkpoint(&self) -> Result<CheckpointAnswer, PortError> {
        if let Some(new) = self.log.checkpoint(self.clock.now()).await? {
            return Ok(CheckpointAnswer {
                recorded: true,
                checkpoint: Some(new),
            });
        }
        Ok(CheckpointAnswer {
            recorded: false,
            checkpoint: self.log.latest_checkpoint().await?,
        })
    }
}

/// What `miniauth audit checkpoint` answers: the checkpoint that covers the log now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointAnswer {
    /// Whether this call recorded it (false: nothing was committed since the newest).
    pub recorded: bool,
    /// The checkpoint (`position`, `cumulative`, `events`, `created_at`); none before
    /// the first event.
    #[serde(flatten)]
    pub checkpoint: Option<AuditCheckpoint>,
}

/// The history of `account` from its events: each one's facts, its personal data
/// opened and masked. Data of events up to the last erasure reads as erased, whatever
/// its format (events of earlier releases kept the unionid and the client IP in clear).
pub async fn history(
    vault: &dyn PersonalDataVault,
    account: &AccountId,
    events: Vec<StoredEvent>,
) -> Vec<HistoryEntry> {
    let erased_until = events
        .iter()
        .filter(|e| matches!(e.event, SocialAccountEvent::PersonalDataErased(_)))
        .map(|e| e.sequence)
        .max()
        .unwrap_or(0);
    let reveal = masking::Reveal { vault, account };
    let mut history = Vec::with_capacity(events.len());
    for stored in events {
        let erased = stored.sequence <= erased_until;
        history.push(entry(&reveal, stored, erased).await);
    }
    history
}

/// One entry: the event's facts, the metadata it was recorded with, its personal data
/// masked.
async fn entry(reveal: &masking::Reveal<'_>, stored: StoredEvent, erased: bool) -> HistoryEntry {
    let metadata = EventMetadata::from_map(&stored.metadata);
    let client_ip = match &metadata.client_ip {
        Some(ip) => Some(reveal.client_ip(ip, erased).await),
        None => None,
    };
    let mut entry = HistoryEntry {
        position: stored.position,
        sequence: stored.sequence,
        event_type: stored.event_type,
        event_version: stored.event_version,
        occurred_at: stored.event.occurred_at(),
        via: None,
        reason: None,
        user_id: None,
        linked_from: None,
        imported_from: None,
        users: None,
        session_seq: None,
        unionid: None,
        phone: None,
        nickname: None,
        actor: metadata.actor,
        note: metadata.note,
        request_id: metadata.request_id,
        client_ip,
        recorded_at: metadata.recorded_at,
        hash: metadata.hash,
    };
    details(reveal, &stored.event, erased, &mut entry).await;
    entry
}

/// What the event itself says, personal data masked.
async fn details(
    reveal: &masking::Reveal<'_>,
    event: &SocialAccountEvent,
    erased: bool,
    entry: &mut HistoryEntry,
) {
    match event {
        SocialAccountEvent::SessionObtained(e) => {
            entry.via = Some(e.channel.as_str().to_owned());
            entry.session_seq = Some(e.session_seq);
            if let Some(unionid) = &e.unionid {
                entry.unionid = Some(reveal.unionid(unionid, erased).await);
            }
        }
        SocialAccountEvent::ProfileDecrypted(e) => {
            entry.via = Some(e.via.as_str().to_owned());
            if let Some(unionid) = &e.unionid {
                entry.unionid = Some(reveal.unionid(unionid, erased).await);
            }
            entry.nickname = Some(reveal.nickname(&e.nickname).await);
        }
        SocialAccountEvent::PhoneVerified(e) => {
            entry.via = Some(e.via.as_str().to_owned());
            entry.phone = Some(reveal.phone(&e.country_code, &e.phone).await);
        }
        SocialAccountEvent::UserBound(e) => {
            entry.via = Some(e.via.as_str().to_owned());
            entry.user_id = Some(e.user_id.get());
            entry.linked_from = e.linked_from.as_ref().map(|a| a.as_str().to_owned());
            entry.imported_from = e.imported_from.as_ref().map(provenance);
        }
        SocialAccountEvent::Unbound(e) => {
            entry.reason = Some(e.reason.as_str().to_owned());
            entry.user_id = Some(e.user_id.get());
        }
        SocialAccountEvent::PersonalDataErased(_) => {}
        SocialAccountEvent::LinkDeclined(e) => {
            entry.reason = Some("unionid_bound_to_several_users".to_owned());
            entry.users = Some(e.users.iter().map(|u| u.get()).collect());
        }
        SocialAccountEvent::AccountImported(e) => {
            entry.via = Some(e.source.system.clone());
            entry.imported_from = Some(provenance(&e.source));
            if let Some(unionid) = &e.unionid {
                entry.unionid = Some(reveal.unionid(unionid, erased).await);
            }
            if let Some(nickname) = &e.nickname {
                entry.nickname = Some(reveal.nickname(nickname).await);
            }
        }
    }
}

/// Where an imported event's facts were read, as the history shows it:
/// `{system}:{table}#{row}`.
fn provenance(source: &miniauth_domain::Provenance) -> String {
    format!("{}:{}#{}", source.system, source.table, source.row_id)
}
