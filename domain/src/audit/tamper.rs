//! The proof that nobody edited, deleted, inserted or reordered an event: each stream
//! checked against its chain and state row, and the whole log against its checkpoints.
//! Pure: the store reads the rows and records checkpoints; what they show is decided
//! here (see docs/audit.md).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{cumulative_hash, LoggedEvent, HASH_KEY};

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

impl FindingKind {
    /// The snake_case name reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edited => "edited",
            Self::Deleted => "deleted",
            Self::TailDeleted => "tail_deleted",
            Self::Inserted => "inserted",
            Self::Reordered => "reordered",
            Self::CheckpointMismatch => "checkpoint_mismatch",
        }
    }
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

/// What a verification of the log found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
    /// The positions of the checkpoints this run could not compare: they lie past the
    /// part of the log that was final when it read (on PostgreSQL, a transaction still
    /// in flight held the safe horizon below them). They are neither passed nor failed:
    /// a later run compares them.
    pub not_yet_verifiable: Vec<i64>,
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

    /// Whether every recorded checkpoint was compared (none is
    /// [`not_yet_verifiable`](Self::not_yet_verifiable)).
    pub fn is_complete(&self) -> bool {
        self.not_yet_verifiable.is_empty()
    }
}

/// What a stream's state row records, written by the same commit as its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// The sequence of the last event committed.
    pub last_sequence: i64,
    /// The chain hash of that event (None for a legacy one).
    pub last_hash: Option<String>,
}

/// Walks the log in (aggregate_id, sequence) order, one stream at a time, checking
/// each against its chain and state row.
pub struct LogCheck {
    states: HashMap<String, StreamState>,
    seen: HashSet<String>,
    stream: Vec<LoggedEvent>,
    report: VerifyReport,
}

impl LogCheck {
    /// A walk over a log whose streams' state rows are `states` (by aggregate id).
    pub fn new(states: HashMap<String, StreamState>) -> Self {
        Self {
            states,
            seen: HashSet::new(),
            stream: Vec::new(),
            report: VerifyReport::default(),
        }
    }

    /// Takes the next event in (aggregate_id, sequence) order.
    pub fn push(&mut self, event: LoggedEvent) {
        if self
            .stream
            .first()
            .is_some_and(|first| first.aggregate_id != event.aggregate_id)
        {
            self.check_stream();
        }
        self.stream.push(event);
    }

    fn check_stream(&mut self) {
        let Some(first) = self.stream.first() else {
            return;
        };
        let id = first.aggregate_id.clone();
        check_stream(&self.stream, self.states.get(&id), &mut self.report);
        self.seen.insert(id);
        self.stream.clear();
    }

    /// Ends the walk: checks the last stream, then reports the streams whose state row
    /// remains but whose every event is gone.
    pub fn finish(mut self) -> VerifyReport {
        self.check_stream();
        self.report.streams = self.seen.len() as u64;
        let mut vanished: Vec<(&String, &StreamState)> = self
            .states
            .iter()
            .filter(|(id, _)| !self.seen.contains(*id))
            .collect();
        vanished.sort_by(|a, b| a.0.cmp(b.0));
        for (id, state) in vanished {
            self.report.findings.push(Finding {
                kind: FindingKind::Deleted,
                aggregate_id: Some(id.clone()),
                sequence: Some(1),
                position: None,
                detail: format!(
                    "the whole stream is missing; its state row records {} events",
                    state.last_sequence
                ),
            });
        }
        self.report
    }
}

/// One stream's events, with their metadata read as maps and their stored hashes.
struct Stream<'a> {
    rows: &'a [LoggedEvent],
    metadatas: Vec<Option<BTreeMap<String, String>>>,
}

impl<'a> Stream<'a> {
    fn new(rows: &'a [LoggedEvent]) -> Self {
        Self {
            rows,
            metadatas: rows.iter().map(LoggedEvent::metadata_map).collect(),
        }
    }

    fn stored_hashes(&self) -> Vec<Option<&String>> {
        self.metadatas
            .iter()
            .map(|m| m.as_ref().and_then(|m| m.get(HASH_KEY)))
            .collect()
    }
}

/// Checks one stream (its events in sequence order) against its chain and its state
/// row, adding what it finds to `report`.
pub fn check_stream(rows: &[LoggedEvent], state: Option<&StreamState>, report: &mut VerifyReport) {
    let Some(first) = rows.first() else { return };
    let stream = Stream::new(rows);
    let stored = stream.stored_hashes();
    let mut check = StreamCheck {
        id: first.aggregate_id.clone(),
        report,
        chain_started: false,
    };
    let mut previous: Option<&String> = None;
    let mut expected = 1;
    let mut last_position = 0;
    for (i, raw) in rows.iter().enumerate() {
        check.report.events += 1;
        check.gap(expected, raw.sequence);
        expected = raw.sequence + 1;
        let out_of_order = raw.position < last_position;
        last_position = last_position.max(raw.position);
        previous = check.link(&stream, &stored, i, previous, out_of_order);
    }
    let last = rows.last().expect("not empty");
    check.state_row(last, stored.last().copied().flatten(), state);
}

/// The findings of one stream, as they are made.
struct StreamCheck<'r> {
    id: String,
    report: &'r mut VerifyReport,
    chain_started: bool,
}

impl StreamCheck<'_> {
    fn found(
        &mut self,
        kind: FindingKind,
        sequence: Option<i64>,
        position: Option<i64>,
        detail: impl Into<String>,
    ) {
        self.report.findings.push(Finding {
            kind,
            aggregate_id: Some(self.id.clone()),
            sequence,
            position,
            detail: detail.into(),
        });
    }

    /// A gap between the sequence expected and the one read: deleted events.
    fn gap(&mut self, expected: i64, sequence: i64) {
        if sequence <= expected {
            return;
        }
        let detail = if sequence == expected + 1 {
            format!("event {expected} is missing")
        } else {
            format!("events {expected} to {} are missing", sequence - 1)
        };
        self.found(FindingKind::Deleted, Some(expected), None, detail);
    }

    /// Checks event `i` against its link to `previous`; answers the hash the next
    /// event must link to.
    fn link<'a>(
        &mut self,
        stream: &Stream<'_>,
        stored: &[Option<&'a String>],
        i: usize,
        previous: Option<&'a String>,
        out_of_order: bool,
    ) -> Option<&'a String> {
        let raw = &stream.rows[i];
        let (sequence, position) = (Some(raw.sequence), Some(raw.position));
        let Some(metadata) = &stream.metadatas[i] else {
            self.found(
                FindingKind::Edited,
                sequence,
                position,
                "its metadata is not a map of strings",
            );
            return None;
        };
        let Some(hash) = stored[i] else {
            if self.chain_started {
                self.found(
                    FindingKind::Inserted,
                    sequence,
                    position,
                    "an unchained event after the chain started",
                );
            } else {
                self.report.legacy += 1;
            }
            return None;
        };
        self.chain_started = true;
        self.report.chained += 1;
        let prev = previous.map(String::as_str).unwrap_or_default();
        if raw.link(prev, raw.sequence, metadata).hash() != *hash {
            match place_of(stream.rows, stored, i, metadata, hash) {
                Some(belongs) => self.found(
                    FindingKind::Reordered,
                    sequence,
                    position,
                    format!("it was written as event {belongs} of its stream"),
                ),
                None => self.found(
                    FindingKind::Edited,
                    sequence,
                    position,
                    "its hash does not match its content and its link to the previous event \
                     (it, or the hash of its predecessor, was rewritten)",
                ),
            }
        } else if out_of_order {
            self.found(
                FindingKind::Reordered,
                sequence,
                position,
                "its sequence comes after an event committed later",
            );
        }
        Some(hash)
    }

    /// Compares the stream's end with its state row.
    fn state_row(
        &mut self,
        last: &LoggedEvent,
        last_hash: Option<&String>,
        state: Option<&StreamState>,
    ) {
        let Some(state) = state else {
            self.found(
                FindingKind::Inserted,
                None,
                None,
                "the stream has no state row: no commit of miniauth wrote it",
            );
            return;
        };
        let recorded = state.last_sequence;
        if recorded > last.sequence {
            self.found(
                FindingKind::TailDeleted,
                Some(last.sequence + 1),
                None,
                format!(
                    "the state row records {recorded} events, the log ends at {}",
                    last.sequence
                ),
            );
        } else if recorded < last.sequence {
            self.found(
                FindingKind::Inserted,
                Some(recorded + 1),
                None,
                format!(
                    "the log holds events past the state row's last sequence {recorded} (to {})",
                    last.sequence
                ),
            );
        } else if state.last_hash.is_some() && last_hash != state.last_hash.as_ref() {
            self.found(
                FindingKind::Edited,
                Some(last.sequence),
                Some(last.position),
                "the last event's hash differs from the one its commit recorded",
            );
        }
    }
}

/// The sequence an event's stored hash was computed for, when it is not its own: tried
/// with every other sequence of the stream and every hash the stream holds.
fn place_of(
    rows: &[LoggedEvent],
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
                .any(|p| raw.link(p, *s, metadata).hash() == hash)
        })
}

/// Folds the evidence over the whole log (in position order) and compares it with the
/// checkpoints as it passes them.
pub struct Evidence<'a> {
    cumulative: String,
    events: i64,
    last_position: i64,
    checkpoints: std::iter::Peekable<std::slice::Iter<'a, AuditCheckpoint>>,
    checked: u64,
    findings: Vec<Finding>,
}

impl<'a> Evidence<'a> {
    /// Evidence from the start of the log, to compare with `checkpoints` (oldest first).
    pub fn new(checkpoints: &'a [AuditCheckpoint]) -> Self {
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

    /// Takes the next event in position order.
    pub fn fold(&mut self, event: &LoggedEvent) {
        self.compare_through(event.position, false);
        self.cumulative = cumulative_hash(&self.cumulative, event.position, &event.evidence_hash());
        self.events += 1;
        self.last_position = event.position;
        self.compare_through(event.position, true);
    }

    /// Ends the fold of the whole log: compares the checkpoints past the last event,
    /// and adds what the comparison found to `report`.
    pub fn finish(&mut self, report: &mut VerifyReport) {
        self.finish_below(report, i64::MAX);
    }

    /// Ends a fold that read the log only below position `limit` (everything below it
    /// is final, and was read): compares the checkpoints below it, even those past the
    /// last event (a deleted tail), and lists those at or past it as
    /// [`not_yet_verifiable`](VerifyReport::not_yet_verifiable) — the fold cannot tell
    /// whether the events they cover are there.
    pub fn finish_below(&mut self, report: &mut VerifyReport, limit: i64) {
        self.compare_through(limit, false);
        report
            .not_yet_verifiable
            .extend(self.checkpoints.by_ref().map(|cp| cp.position));
        report.checkpoints_checked = self.checked;
        report.findings.append(&mut self.findings);
    }

    /// The checkpoint to record at `at`, when the evidence covers events the last of
    /// `checkpoints` does not.
    pub fn new_checkpoint(
        &self,
        checkpoints: &[AuditCheckpoint],
        at: DateTime<Utc>,
    ) -> Option<AuditCheckpoint> {
        let covers_more = self.events > 0
            && checkpoints
                .last()
                .is_none_or(|cp| cp.position < self.last_position);
        covers_more.then(|| AuditCheckpoint {
            position: self.last_position,
            cumulative: self.cumulative.clone(),
            events: self.events,
            created_at: at,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ID: &str = "wx4f4bc4dec97d474b:o1";

    /// A stream of `n` events chained as the event store chains them.
    fn chained(n: i64) -> Vec<LoggedEvent> {
        let mut previous = String::new();
        (1..=n)
            .map(|sequence| {
                let mut event = LoggedEvent {
                    position: sequence * 10,
                    aggregate_id: ID.into(),
                    sequence,
                    event_type: "UserBound".into(),
                    event_version: "1".into(),
                    payload: json!({"UserBound": {"user_id": sequence}}),
                    metadata: json!({"actor": "admin"}),
                };
                let metadata = event.metadata_map().unwrap();
                let hash = event.link(&previous, sequence, &metadata).hash();
                event.metadata[HASH_KEY] = json!(hash);
                previous = hash;
                event
            })
            .collect()
    }

    fn state_of(events: &[LoggedEvent]) -> StreamState {
        let last = events.last().unwrap();
        StreamState {
            last_sequence: last.sequence,
            last_hash: last.metadata_map().unwrap().get(HASH_KEY).cloned(),
        }
    }

    fn kinds(report: &VerifyReport) -> Vec<(FindingKind, Option<i64>)> {
        report
            .findings
            .iter()
            .map(|f| (f.kind, f.sequence))
            .collect()
    }

    #[test]
    fn an_intact_stream_shows_nothing() {
        let events = chained(3);
        let mut report = VerifyReport::default();
        check_stream(&events, Some(&state_of(&events)), &mut report);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!((report.events, report.chained, report.legacy), (3, 3, 0));
    }

    #[test]
    fn edits_gaps_swaps_and_a_lost_tail_are_named() {
        let events = chained(4);
        let state = state_of(&events);

        let mut edited = events.clone();
        edited[1].payload = json!({"UserBound": {"user_id": 99}});
        let mut report = VerifyReport::default();
        check_stream(&edited, Some(&state), &mut report);
        assert_eq!(kinds(&report), [(FindingKind::Edited, Some(2))]);

        let gap: Vec<LoggedEvent> = [&events[0], &events[2], &events[3]]
            .into_iter()
            .cloned()
            .collect();
        let mut report = VerifyReport::default();
        check_stream(&gap, Some(&state), &mut report);
        assert_eq!(kinds(&report)[0], (FindingKind::Deleted, Some(2)));

        let mut swapped = events.clone();
        swapped.swap(1, 2);
        (swapped[1].sequence, swapped[2].sequence) = (2, 3);
        let mut report = VerifyReport::default();
        check_stream(&swapped, Some(&state), &mut report);
        assert!(kinds(&report).contains(&(FindingKind::Reordered, Some(2))));

        let mut report = VerifyReport::default();
        check_stream(&events[..3], Some(&state), &mut report);
        assert_eq!(kinds(&report), [(FindingKind::TailDeleted, Some(4))]);
    }

    #[test]
    fn a_stream_without_events_or_without_a_state_row_is_found() {
        let events = chained(2);
        let mut check = LogCheck::new(HashMap::from([
            (ID.to_owned(), state_of(&events)),
            ("wx4f4bc4dec97d474b:gone".to_owned(), state_of(&events)),
        ]));
        for event in events.clone() {
            check.push(event);
        }
        let report = check.finish();
        assert_eq!(report.streams, 1);
        assert_eq!(kinds(&report), [(FindingKind::Deleted, Some(1))]);
        assert_eq!(
            report.findings[0].aggregate_id.as_deref(),
            Some("wx4f4bc4dec97d474b:gone")
        );

        let mut report = VerifyReport::default();
        check_stream(&events, None, &mut report);
        assert_eq!(kinds(&report), [(FindingKind::Inserted, None)]);
    }

    #[test]
    fn evidence_matches_its_own_checkpoint_and_not_a_changed_log() {
        let events = chained(3);
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let mut evidence = Evidence::new(&[]);
        events.iter().for_each(|e| evidence.fold(e));
        let checkpoint = evidence.new_checkpoint(&[], at).unwrap();
        assert_eq!((checkpoint.position, checkpoint.events), (30, 3));
        let checkpoints = [checkpoint];
        assert_eq!(evidence.new_checkpoint(&checkpoints, at), None);

        let mut again = Evidence::new(&checkpoints);
        events.iter().for_each(|e| again.fold(e));
        let mut report = VerifyReport::default();
        again.finish(&mut report);
        assert!(report.is_clean());
        assert_eq!(report.checkpoints_checked, 1);

        let mut changed = Evidence::new(&checkpoints);
        events[..2].iter().for_each(|e| changed.fold(e));
        let mut report = VerifyReport::default();
        changed.finish(&mut report);
        assert_eq!(kinds(&report), [(FindingKind::CheckpointMismatch, None)]);
    }

    #[test]
    fn a_checkpoint_past_what_was_final_is_neither_passed_nor_failed() {
        let events = chained(3);
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let mut first = Evidence::new(&[]);
        events[..1].iter().for_each(|e| first.fold(e));
        let mut all = Evidence::new(&[]);
        events.iter().for_each(|e| all.fold(e));
        let checkpoints = [
            first.new_checkpoint(&[], at).unwrap(),
            all.new_checkpoint(&[], at).unwrap(),
        ];

        // Only the first two events (positions 10, 20) were final: the checkpoint at
        // 30 cannot be compared, and is not reported as a mismatch.
        let mut held_back = Evidence::new(&checkpoints);
        events[..2].iter().for_each(|e| held_back.fold(e));
        let mut report = VerifyReport::default();
        held_back.finish_below(&mut report, 30);
        assert!(report.is_clean(), "{report:?}");
        assert!(!report.is_complete());
        assert_eq!(report.not_yet_verifiable, [30]);
        assert_eq!(report.checkpoints_checked, 1);

        // Below the limit, a checkpoint past the last event read is compared: the tail
        // it covers is gone.
        let mut truncated = Evidence::new(&checkpoints);
        events[..2].iter().for_each(|e| truncated.fold(e));
        let mut report = VerifyReport::default();
        truncated.finish_below(&mut report, 31);
        assert_eq!(kinds(&report), [(FindingKind::CheckpointMismatch, None)]);
        assert!(report.is_complete());
    }

    #[test]
    fn finding_kinds_are_reported_under_their_serialised_names() {
        for kind in [
            FindingKind::Edited,
            FindingKind::Deleted,
            FindingKind::TailDeleted,
            FindingKind::Inserted,
            FindingKind::Reordered,
            FindingKind::CheckpointMismatch,
        ] {
            assert_eq!(json!(kind), json!(kind.as_str()));
        }
    }
}
