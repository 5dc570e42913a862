//! What auditors ask of the log: the history of an account, the bindings that held at
//! an instant (replayed from the events, never read from today's tables), an export,
//! and the proof that nobody edited, deleted, inserted or reordered an event.
//!
//! Tamper evidence has two layers (see docs/audit.md):
//!
//! * per stream: each event's metadata `hash` is the [`ChainLink`] hash over the
//!   previous event's hash and every field of the event; the state row keeps the last
//!   hash and sequence, so a deleted tail shows;
//! * over the whole log: checkpoints, each the [`cumulative_hash`] of every event's
//!   hash in position order up to a position. They catch a stream rewritten
//!   consistently, or an event inserted with a valid chain, before the checkpoint.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use miniauth_application::ports::PersonalDataVault;
use miniauth_domain::audit::{binding_as_of, cumulative_hash, BindingSpan, ChainLink, HASH_KEY};
use miniauth_domain::phone::mask_digits;
use miniauth_domain::{
    AccountId, AppId, OpenId, PersonalField, SealedDatum, SealedUnionId, SocialAccount,
    SocialAccountEvent, UserId,
};
use serde::Serialize;
use sqlx::Row;

use crate::config::StoreError;
use crate::db::{millis, on_pool};
use crate::event_store::{read_row, RawEvent};
use crate::Store;

/// Rows read per query while walking the whole log.
const PAGE: i64 = 1000;
/// Beyond this many events in one stream, a broken link is not searched for the place
/// it came from (the search is quadratic); it is reported as an edit.
const REORDER_SEARCH_LIMIT: usize = 500;

/// What a tampered event looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Its hash does not match its content and its link to the previous event: the
    /// event was edited (or its predecessor was rewritten with a recomputed hash).
    Edited,
    /// Events are missing from the middle of a stream (a gap in the sequence), or a
    /// whole stream is gone.
    Deleted,
    /// The stream ends before the state row's last sequence: its tail was deleted.
    TailDeleted,
    /// An event no commit wrote: unchained after the chain started, beyond the state
    /// row, or in a stream without a state row.
    Inserted,
    /// Events are out of place: their hash fits another sequence, or the sequence
    /// order disagrees with the commit order.
    Reordered,
    /// The log up to a checkpoint no longer hashes to the value recorded then.
    CheckpointMismatch,
}

/// One piece of evidence of tampering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind.
    pub kind: FindingKind,
    /// The stream (`{appid}:{openid}`), when one is concerned.
    pub aggregate_id: Option<String>,
    /// The sequence concerned, when known.
    pub sequence: Option<i64>,
    /// The global position concerned, when known.
    pub position: Option<i64>,
    /// What was found, for a person.
    pub detail: String,
}

/// A recorded value of the evidence over the whole log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditCheckpoint {
    /// The last position it covers.
    pub position: i64,
    /// The cumulative hash of every event up to `position`.
    pub cumulative: String,
    /// How many events it covers.
    pub events: i64,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// What [`Store::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Events read.
    pub events: u64,
    /// Streams (accounts) read.
    pub streams: u64,
    /// Events carrying a chain hash.
    pub chained: u64,
    /// Events written before the chain existed (no hash): not evidence of tampering,
    /// but not protected by the chain either.
    pub legacy: u64,
    /// Checkpoints compared.
    pub checkpoints_checked: u64,
    /// Evidence of tampering; empty when the log is intact.
    pub findings: Vec<Finding>,
    /// The checkpoint recorded after a clean verification (None when there was
    /// nothing new to cover, or when tampering was found).
    pub checkpoint: Option<AuditCheckpoint>,
}

impl VerifyReport {
    /// Whether no tampering was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// One event of an account's history, as an auditor reads it: personal data masked or
/// marked erased, never in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The global commit order.
    pub position: i64,
    /// The number within the account's stream, from 1.
    pub sequence: i64,
    /// The event type.
    pub event_type: String,
    /// The schema version as stored (older versions are read through upcasters).
    pub event_version: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// How: the bind method, the phone or profile source.
    pub via: Option<String>,
    /// Why a binding ended.
    pub reason: Option<String>,
    /// The user bound or unbound.
    pub user_id: Option<i64>,
    /// The session number of a login.
    pub session_seq: Option<u64>,
    /// The Open Platform id learned.
    pub unionid: Option<String>,
    /// The phone, masked (`+86 138****8000`), or `erased`.
    pub phone: Option<String>,
    /// The nickname, masked, or `erased`.
    pub nickname: Option<String>,
    /// Who acted (`wechat`, `user:42`, `admin`, `cli`).
    pub actor: Option<String>,
    /// The request it came from.
    pub request_id: Option<String>,
    /// The client IP the transport saw.
    pub client_ip: Option<String>,
    /// When it was committed.
    pub recorded_at: Option<String>,
    /// The chain hash (None for legacy events).
    pub hash: Option<String>,
}

/// A binding as it stood at an instant.
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

/// An event exactly as stored, for exports: an auditor can recompute its chain hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    pub payload: serde_json::Value,
    /// The metadata as stored, with its `hash`.
    pub metadata: serde_json::Value,
}

/// What a rebuild of the read models did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rebuild {
    /// Events replayed.
    pub events: u64,
    /// How long it took.
    pub elapsed: std::time::Duration,
}

impl Rebuild {
    /// Events replayed per second.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }
}

fn log_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::EventLog(error.to_string())
}

fn metadata_map(metadata: &serde_json::Value) -> Option<BTreeMap<String, String>> {
    serde_json::from_value(metadata.clone()).ok()
}

fn link<'a>(
    raw: &'a RawEvent,
    previous: &'a str,
    sequence: i64,
    metadata: &'a BTreeMap<String, String>,
) -> ChainLink<'a> {
    ChainLink {
        previous,
        aggregate_id: &raw.aggregate_id,
        sequence: u64::try_from(sequence).unwrap_or_default(),
        event_type: &raw.event_type,
        event_version: &raw.event_version,
        payload: &raw.payload,
        metadata,
    }
}

/// The hash an event contributes to the global evidence: its chain hash, or for a
/// legacy event a digest of its content.
fn evidence_hash(raw: &RawEvent) -> String {
    let metadata = metadata_map(&raw.metadata).unwrap_or_default();
    match metadata.get(HASH_KEY) {
        Some(hash) => hash.clone(),
        None => link(raw, "", raw.sequence, &metadata).hash(),
    }
}

/// The state row of a stream: its last sequence and hash.
type StateRow = (i64, Option<String>);

/// Checks one stream (its events in sequence order) against its chain and state row.
fn check_stream(rows: &[RawEvent], state: Option<&StateRow>, report: &mut VerifyReport) {
    let Some(first) = rows.first() else { return };
    let id = first.aggregate_id.clone();
    let finding = |kind, sequence: Option<i64>, position: Option<i64>, detail: String| Finding {
        kind,
        aggregate_id: Some(id.clone()),
        sequence,
        position,
        detail,
    };
    let metadatas: Vec<Option<BTreeMap<String, String>>> =
        rows.iter().map(|r| metadata_map(&r.metadata)).collect();
    let stored: Vec<Option<&String>> = metadatas
        .iter()
        .map(|m| m.as_ref().and_then(|m| m.get(HASH_KEY)))
        .collect();
    let mut previous: Option<&String> = None;
    let mut chain_started = false;
    let mut expected = 1;
    let mut last_position = 0;
    for (i, raw) in rows.iter().enumerate() {
        report.events += 1;
        if raw.sequence > expected {
            report.findings.push(finding(
                FindingKind::Deleted,
                Some(expected),
                None,
                if raw.sequence == expected + 1 {
                    format!("event {expected} is missing")
                } else {
                    format!("events {expected} to {} are missing", raw.sequence - 1)
                },
            ));
        }
        expected = raw.sequence + 1;
        let out_of_order = raw.position < last_position;
        last_position = last_position.max(raw.position);
        let Some(metadata) = &metadatas[i] else {
            report.findings.push(finding(
                FindingKind::Edited,
                Some(raw.sequence),
                Some(raw.position),
                "its metadata is not a map of strings".into(),
            ));
            previous = None;
            continue;
        };
        match stored[i] {
            Some(hash) => {
                chain_started = true;
                report.chained += 1;
                let prev = previous.map(String::as_str).unwrap_or_default();
                if link(raw, prev, raw.sequence, metadata).hash() != *hash {
                    report
                        .findings
                        .push(match place_of(rows, &stored, i, metadata, hash) {
                            Some(belongs) => finding(
                                FindingKind::Reordered,
                                Some(raw.sequence),
                                Some(raw.position),
                                format!("it was written as event {belongs} of its stream"),
                            ),
                            None => finding(
                                FindingKind::Edited,
                                Some(raw.sequence),
                                Some(raw.position),
                                "its hash does not match its content and its link to the \
                                 previous event (it, or the hash of its predecessor, was \
                                 rewritten)"
                                    .into(),
                            ),
                        });
                } else if out_of_order {
                    report.findings.push(finding(
                        FindingKind::Reordered,
                        Some(raw.sequence),
                        Some(raw.position),
                        "its sequence comes after an event committed later".into(),
                    ));
                }
                previous = Some(hash);
            }
            None if chain_started => {
                report.findings.push(finding(
                    FindingKind::Inserted,
                    Some(raw.sequence),
                    Some(raw.position),
                    "an unchained event after the chain started".into(),
                ));
                previous = None;
            }
            None => {
                report.legacy += 1;
                previous = None;
            }
        }
    }
    let last = rows.last().expect("not empty");
    match state {
        None => report.findings.push(finding(
            FindingKind::Inserted,
            None,
            None,
            "the stream has no state row: no commit of miniauth wrote it".into(),
        )),
        Some((sequence, _)) if *sequence > last.sequence => report.findings.push(finding(
            FindingKind::TailDeleted,
            Some(last.sequence + 1),
            None,
            format!(
                "the state row records {sequence} events, the log ends at {}",
                last.sequence
            ),
        )),
        Some((sequence, _)) if *sequence < last.sequence => report.findings.push(finding(
            FindingKind::Inserted,
            Some(sequence + 1),
            None,
            format!(
                "the log holds events past the state row's last sequence {sequence} (to {})",
                last.sequence
            ),
        )),
        Some((_, Some(hash))) if stored.last().copied().flatten() != Some(hash) => {
            report.findings.push(finding(
                FindingKind::Edited,
                Some(last.sequence),
                Some(last.position),
                "the last event's hash differs from the one its commit recorded".into(),
            ))
        }
        Some(_) => {}
    }
}

/// The sequence an event's stored hash was computed for, when it is not its own: tried
/// with every other sequence of the stream and every hash the stream holds.
fn place_of(
    rows: &[RawEvent],
    stored: &[Option<&String>],
    index: usize,
    metadata: &BTreeMap<String, String>,
    hash: &str,
) -> Option<i64> {
    if rows.len() > REORDER_SEARCH_LIMIT {
        return None;
    }
    let raw = &rows[index];
    let mut previous: Vec<&str> = vec![""];
    previous.extend(
        stored
            .iter()
            .flatten()
            .map(|h| h.as_str())
            .filter(|h| *h != hash),
    );
    rows.iter()
        .map(|r| r.sequence)
        .filter(|s| *s != raw.sequence)
        .find(|s| {
            previous
                .iter()
                .any(|p| link(raw, p, *s, metadata).hash() == hash)
        })
}

/// Folds the global evidence and compares it with the checkpoints as it passes them.
struct Evidence<'a> {
    cumulative: String,
    events: i64,
    last_position: i64,
    checkpoints: std::iter::Peekable<std::slice::Iter<'a, AuditCheckpoint>>,
    checked: u64,
    findings: Vec<Finding>,
}

impl<'a> Evidence<'a> {
    fn new(checkpoints: &'a [AuditCheckpoint]) -> Self {
        Self {
            cumulative: String::new(),
            events: 0,
            last_position: 0,
            checkpoints: checkpoints.iter().peekable(),
            checked: 0,
            findings: Vec::new(),
        }
    }

    fn compare_through(&mut self, position: i64, inclusive: bool) {
        while let Some(cp) = self
            .checkpoints
            .next_if(|cp| cp.position < position || (inclusive && cp.position == position))
        {
            self.checked += 1;
            if cp.cumulative != self.cumulative || cp.events != self.events {
                self.findings.push(Finding {
                    kind: FindingKind::CheckpointMismatch,
                    aggregate_id: None,
                    sequence: None,
                    position: Some(cp.position),
                    detail: format!(
                        "the log up to position {} no longer hashes to the checkpoint of {} \
                         ({} events then, {} now): an event at or before it was edited, \
                         deleted or inserted",
                        cp.position,
                        cp.created_at.to_rfc3339(),
                        cp.events,
                        self.events
                    ),
                });
            }
        }
    }

    fn fold(&mut self, raw: &RawEvent) {
        self.compare_through(raw.position, false);
        self.cumulative = cumulative_hash(&self.cumulative, raw.position, &evidence_hash(raw));
        self.events += 1;
        self.last_position = raw.position;
        self.compare_through(raw.position, true);
    }

    fn finish(&mut self) {
        self.compare_through(i64::MAX, true);
    }
}

const EVENT_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, payload, metadata";

impl Store {
    /// Checks every event against its stream's chain and state row, and the whole log
    /// against the checkpoints; records a new checkpoint when all is well. Reads one
    /// consistent snapshot of the database.
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let postgres = self.db.is_postgres();
        let mut report = VerifyReport {
            events: 0,
            streams: 0,
            chained: 0,
            legacy: 0,
            checkpoints_checked: 0,
            findings: Vec::new(),
            checkpoint: None,
        };
        let checkpoints = self.checkpoints().await?;
        let mut evidence = Evidence::new(&checkpoints);
        on_pool!(&self.db.pool, p => {
            let mut tx = p.begin().await?;
            if postgres {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .execute(&mut *tx)
                    .await?;
            }
            let mut states: HashMap<String, StateRow> = HashMap::new();
            for row in sqlx::query(
                "SELECT aggregate_id, last_sequence, last_hash FROM snapshots WHERE aggregate_type = $1",
            )
            .bind(SocialAccount::TYPE)
            .fetch_all(&mut *tx)
            .await?
            {
                states.insert(
                    row.try_get("aggregate_id")?,
                    (row.try_get("last_sequence")?, row.try_get("last_hash")?),
                );
            }
            // Streams, in (aggregate_id, sequence) order, one stream at a time.
            let mut seen: HashSet<String> = HashSet::new();
            let mut stream: Vec<RawEvent> = Vec::new();
            let (mut after_id, mut after_seq) = (String::new(), 0_i64);
            loop {
                let rows = sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 \
                     AND (aggregate_id > $2 OR (aggregate_id = $3 AND sequence > $4)) \
                     ORDER BY aggregate_id, sequence LIMIT $5"
                ))
                .bind(SocialAccount::TYPE)
                .bind(&after_id)
                .bind(&after_id)
                .bind(after_seq)
                .bind(PAGE)
                .fetch_all(&mut *tx)
                .await?;
                let count = rows.len();
                for row in &rows {
                    let raw = read_row(row)?;
                    after_id.clone_from(&raw.aggregate_id);
                    after_seq = raw.sequence;
                    if stream.first().is_some_and(|f| f.aggregate_id != raw.aggregate_id) {
                        let id = stream[0].aggregate_id.clone();
                        check_stream(&stream, states.get(&id), &mut report);
                        seen.insert(id);
                        stream.clear();
                    }
                    stream.push(raw);
                }
                if count < PAGE as usize {
                    break;
                }
            }
            if let Some(first) = stream.first() {
                let id = first.aggregate_id.clone();
                check_stream(&stream, states.get(&id), &mut report);
                seen.insert(id);
            }
            report.streams = seen.len() as u64;
            let mut vanished: Vec<(&String, &StateRow)> =
                states.iter().filter(|(id, _)| !seen.contains(*id)).collect();
            vanished.sort();
            for (id, (sequence, _)) in vanished {
                report.findings.push(Finding {
                    kind: FindingKind::Deleted,
                    aggregate_id: Some(id.clone()),
                    sequence: Some(1),
                    position: None,
                    detail: format!("the whole stream is missing; its state row records {sequence} events"),
                });
            }
            // The whole log, in commit order, against the checkpoints.
            let mut after = 0_i64;
            loop {
                let rows = sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 AND position > $2 \
                     ORDER BY position LIMIT $3"
                ))
                .bind(SocialAccount::TYPE)
                .bind(after)
                .bind(PAGE)
                .fetch_all(&mut *tx)
                .await?;
                let count = rows.len();
                for row in &rows {
                    let raw = read_row(row)?;
                    after = raw.position;
                    evidence.fold(&raw);
                }
                if count < PAGE as usize {
                    break;
                }
            }
            tx.commit().await?;
        });
        evidence.finish();
        report.checkpoints_checked = evidence.checked;
        report.findings.append(&mut evidence.findings);
        if report.is_clean()
            && evidence.events > 0
            && checkpoints
                .last()
                .is_none_or(|cp| cp.position < evidence.last_position)
        {
            let checkpoint = AuditCheckpoint {
                position: evidence.last_position,
                cumulative: evidence.cumulative.clone(),
                events: evidence.events,
                created_at: Utc::now(),
            };
            self.record_checkpoint(&checkpoint).await?;
            report.checkpoint = Some(checkpoint);
        }
        if !report.is_clean() {
            tracing::warn!(
                findings = report.findings.len(),
                "the event log shows tampering"
            );
        }
        Ok(report)
    }

    /// Records a checkpoint over the events committed since the last one (continuing
    /// its cumulative hash without re-reading older events; [`verify`](Self::verify)
    /// checks those). None when nothing new was committed.
    pub async fn checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        let latest = self.checkpoints().await?.pop();
        let (mut position, mut cumulative, mut events) = latest
            .map(|cp| (cp.position, cp.cumulative, cp.events))
            .unwrap_or_default();
        let start = position;
        loop {
            let rows = self.raw_events_after(position, PAGE).await?;
            for raw in &rows {
                cumulative = cumulative_hash(&cumulative, raw.position, &evidence_hash(raw));
                events += 1;
                position = raw.position;
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        if position == start {
            return Ok(None);
        }
        let checkpoint = AuditCheckpoint {
            position,
            cumulative,
            events,
            created_at: Utc::now(),
        };
        self.record_checkpoint(&checkpoint).await?;
        Ok(Some(checkpoint))
    }

    /// Every checkpoint, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, StoreError> {
        Ok(on_pool!(&self.db.pool, p => {
            sqlx::query(
                "SELECT position, cumulative, events, created_at FROM audit_checkpoints ORDER BY position",
            )
            .fetch_all(p)
            .await?
            .iter()
            .map(|row| -> Result<AuditCheckpoint, sqlx::Error> {
                Ok(AuditCheckpoint {
                    position: row.try_get("position")?,
                    cumulative: row.try_get("cumulative")?,
                    events: row.try_get("events")?,
                    created_at: DateTime::from_timestamp_millis(row.try_get("created_at")?)
                        .unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?
        }))
    }

    async fn record_checkpoint(&self, checkpoint: &AuditCheckpoint) -> Result<(), StoreError> {
        let _turn = self.db.write_turn().await;
        on_pool!(&self.db.pool, p => {
            sqlx::query(
                "INSERT INTO audit_checkpoints (position, cumulative, events, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (position) DO NOTHING",
            )
            .bind(checkpoint.position)
            .bind(&checkpoint.cumulative)
            .bind(checkpoint.events)
            .bind(millis(checkpoint.created_at))
            .execute(p)
            .await?;
        });
        tracing::info!(
            position = checkpoint.position,
            "recorded an audit checkpoint"
        );
        Ok(())
    }

    async fn raw_events_after(
        &self,
        position: i64,
        limit: i64,
    ) -> Result<Vec<RawEvent>, StoreError> {
        Ok(on_pool!(&self.db.pool, p => {
            sqlx::query(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 AND position > $2 \
                 ORDER BY position LIMIT $3"
            ))
            .bind(SocialAccount::TYPE)
            .bind(position)
            .bind(limit)
            .fetch_all(p)
            .await?
            .iter()
            .map(read_row)
            .collect::<Result<Vec<_>, _>>()?
        }))
    }

    /// The log after `position` in commit order, at most `limit` events, exactly as
    /// stored (exports: the chain can be recomputed from them).
    pub async fn export(&self, position: i64, limit: u32) -> Result<Vec<LoggedEvent>, StoreError> {
        Ok(self
            .raw_events_after(position, i64::from(limit))
            .await?
            .into_iter()
            .map(|raw| LoggedEvent {
                position: raw.position,
                aggregate_id: raw.aggregate_id,
                sequence: raw.sequence,
                event_type: raw.event_type,
                event_version: raw.event_version,
                payload: raw.payload,
                metadata: raw.metadata,
            })
            .collect())
    }

    /// Every event of (appid, openid) in order, personal data masked or marked
    /// erased. Empty when the account has no event.
    pub async fn history(
        &self,
        appid: &AppId,
        openid: &OpenId,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let account = AccountId::new(appid, openid);
        let events = self
            .events
            .stored_events(account.as_str(), 0)
            .await
            .map_err(log_error)?;
        let vault = self.vault();
        // Data of events before the last erasure is erased, whatever its format (events
        // of earlier releases kept the unionid and the client IP in clear).
        let erased_until = events
            .iter()
            .filter(|e| matches!(e.event, SocialAccountEvent::PersonalDataErased(_)))
            .map(|e| e.sequence)
            .max()
            .unwrap_or(0);
        let mut history = Vec::with_capacity(events.len());
        for stored in events {
            let erased = stored.sequence <= erased_until;
            let client_ip = match stored.metadata.get("client_ip") {
                Some(ip) => Some(reveal_client_ip(&vault, &account, ip, erased).await),
                None => None,
            };
            let mut entry = HistoryEntry {
                position: stored.position,
                sequence: stored.sequence,
                event_type: stored.event_type.clone(),
                event_version: stored.event_version.clone(),
                occurred_at: stored.event.occurred_at(),
                via: None,
                reason: None,
                user_id: None,
                session_seq: None,
                unionid: None,
                phone: None,
                nickname: None,
                actor: stored.metadata.get("actor").cloned(),
                request_id: stored.metadata.get("request_id").cloned(),
                client_ip,
                recorded_at: stored.metadata.get("recorded_at").cloned(),
                hash: stored.metadata.get(HASH_KEY).cloned(),
            };
            match &stored.event {
                SocialAccountEvent::SessionObtained(e) => {
                    entry.session_seq = Some(e.session_seq);
                    if let Some(unionid) = &e.unionid {
                        entry.unionid =
                            Some(reveal_unionid(&vault, &account, unionid, erased).await);
                    }
                }
                SocialAccountEvent::ProfileDecrypted(e) => {
                    entry.via = label(&e.via);
                    if let Some(unionid) = &e.unionid {
                        entry.unionid =
                            Some(reveal_unionid(&vault, &account, unionid, erased).await);
                    }
                    entry.nickname = Some(
                        reveal(
                            &vault,
                            &account,
                            PersonalField::Nickname,
                            &e.nickname,
                            mask_nickname,
                        )
                        .await,
                    );
                }
                SocialAccountEvent::PhoneVerified(e) => {
                    entry.via = label(&e.via);
                    let country = e.country_code.clone();
                    entry.phone = Some(
                        reveal(&vault, &account, PersonalField::Phone, &e.phone, |digits| {
                            format!("+{country} {}", mask_digits(digits))
                        })
                        .await,
                    );
                }
                SocialAccountEvent::UserBound(e) => {
                    entry.via = label(&e.via);
                    entry.user_id = Some(e.user_id.get());
                }
                SocialAccountEvent::Unbound(e) => {
                    entry.reason = label(&e.reason);
                    entry.user_id = Some(e.user_id.get());
                }
                SocialAccountEvent::PersonalDataErased(_) => {}
            }
            history.push(entry);
        }
        Ok(history)
    }

    /// The bindings of `user` as they stood at `instant`, replayed from the events up
    /// to it. The accounts considered are those the log ever bound to the user.
    pub async fn bindings_as_of(
        &self,
        user: UserId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAt>, StoreError> {
        let candidates = if self.db.is_postgres() {
            self.bound_accounts(
                "payload->'UserBound'->>'user_id' = $2",
                Filter::Text(user.get().to_string()),
            )
            .await?
        } else {
            self.bound_accounts(
                "json_extract(payload, '$.UserBound.user_id') = $2",
                Filter::Int(user.get()),
            )
            .await?
        };
        Ok(self
            .replay_bindings(candidates, instant)
            .await?
            .into_iter()
            .filter(|b| b.span.user_id == user)
            .collect())
    }

    /// Every binding of `appid` as it stood at `instant`, replayed from the events.
    pub async fn app_bindings_as_of(
        &self,
        appid: &AppId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAt>, StoreError> {
        let prefix = format!("{appid}:");
        let candidates = self
            .bound_accounts(
                &format!("substr(aggregate_id, 1, {}) = $2", prefix.len()),
                Filter::Text(prefix),
            )
            .await?;
        self.replay_bindings(candidates, instant).await
    }

    /// The accounts with a `UserBound` event matching `filter`.
    async fn bound_accounts(&self, filter: &str, value: Filter) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_type = $1 \
             AND event_type = 'UserBound' AND {filter} ORDER BY aggregate_id"
        );
        Ok(on_pool!(&self.db.pool, p => {
            let query = sqlx::query(&sql).bind(SocialAccount::TYPE);
            let query = match value {
                Filter::Text(text) => query.bind(text),
                Filter::Int(number) => query.bind(number),
            };
            query
                .fetch_all(p)
                .await?
                .iter()
                .map(|row| row.try_get::<String, _>("aggregate_id"))
                .collect::<Result<Vec<_>, _>>()?
        }))
    }

    async fn replay_bindings(
        &self,
        accounts: Vec<String>,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAt>, StoreError> {
        let mut bindings = Vec::new();
        for id in accounts {
            let account = AccountId::parse(&id).map_err(|_| {
                StoreError::Corrupt(format!("an event names an invalid account {id}"))
            })?;
            let events = self.events.stored_events(&id, 0).await.map_err(log_error)?;
            if let Some(span) = binding_as_of(events.iter().map(|e| &e.event), instant) {
                bindings.push(BindingAt {
                    appid: account.appid(),
                    openid: account.openid(),
                    span,
                });
            }
        }
        Ok(bindings)
    }

    /// Rebuilds every read model from the log: empties them and replays every event,
    /// calling `progress(done, total)` after each batch.
    pub async fn rebuild_read_models(
        &self,
        progress: impl FnMut(u64, u64),
    ) -> Result<Rebuild, StoreError> {
        let started = std::time::Instant::now();
        let events = self
            .read_models
            .rebuild(progress)
            .await
            .map_err(|e| StoreError::EventLog(e.to_string()))?;
        Ok(Rebuild {
            events,
            elapsed: started.elapsed(),
        })
    }
}

enum Filter {
    Text(String),
    Int(i64),
}

/// Opens a sealed datum for display: masked, `erased` once the data key is gone, or
/// `unreadable` (never the cause: it could echo the datum).
async fn reveal(
    vault: &crate::SqlVault,
    account: &AccountId,
    field: PersonalField,
    sealed: &SealedDatum,
    mask: impl FnOnce(&str) -> String,
) -> String {
    match vault.unseal_personal(account, field, sealed).await {
        Ok(Some(plain)) => mask(&plain),
        Ok(None) => ERASED.to_owned(),
        Err(_) => "unreadable".to_owned(),
    }
}

const ERASED: &str = "erased";

/// A unionid for display: masked, `erased`, or `recorded` for one that event version 1
/// kept in clear (read as its hash only).
async fn reveal_unionid(
    vault: &crate::SqlVault,
    account: &AccountId,
    unionid: &SealedUnionId,
    erased: bool,
) -> String {
    match (&unionid.sealed, erased) {
        (_, true) => ERASED.to_owned(),
        (Some(sealed), false) => {
            reveal(vault, account, PersonalField::UnionId, sealed, mask_id).await
        }
        (None, false) => "recorded".to_owned(),
    }
}

/// A client IP for display: in full while the account's data key opens it (auditors
/// ask "from where"), `erased` after. Events of earlier releases kept it in clear:
/// shown until the account is erased.
async fn reveal_client_ip(
    vault: &crate::SqlVault,
    account: &AccountId,
    stored: &str,
    erased: bool,
) -> String {
    if erased {
        return ERASED.to_owned();
    }
    if stored.parse::<std::net::IpAddr>().is_ok() {
        return stored.to_owned();
    }
    let sealed = SealedDatum::from_sealed_text(stored.to_owned());
    reveal(
        vault,
        account,
        PersonalField::ClientIp,
        &sealed,
        str::to_owned,
    )
    .await
}

/// Keeps the first three and last two characters of an id.
fn mask_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len().max(1));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}****{tail}")
}

/// Keeps the first character of a nickname and hides the rest.
fn mask_nickname(nickname: &str) -> String {
    let count = nickname.chars().count();
    match nickname.chars().next() {
        Some(first) if count > 1 => format!("{first}{}", "*".repeat(count - 1)),
        _ => "*".to_owned(),
    }
}

/// The snake_case name an enum serialises to.
fn label<T: Serialize>(value: &T) -> Option<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Some(s),
        Ok(other) => Some(other.to_string()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_only_their_ends() {
        assert_eq!(mask_id("oUnion1234567"), "oUn****67");
        assert_eq!(mask_id("abc"), "***");
    }

    #[test]
    fn nicknames_keep_only_their_first_character() {
        assert_eq!(mask_nickname("张三丰"), "张**");
        assert_eq!(mask_nickname("Bob"), "B**");
        assert_eq!(mask_nickname("x"), "*");
        assert_eq!(mask_nickname(""), "*");
    }
}
