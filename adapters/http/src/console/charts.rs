//! The console's pictures, drawn on the server as SVG (no script, no inline style:
//! colours come from the stylesheet by class). Each picture has a text twin on its
//! page (a summary or a table), for screen readers and for people who would rather
//! read.

use chrono::{DateTime, Utc};
use maud::{html, Markup};
use miniauth_application::audit::AccountHistory;

use crate::metrics::{LoginOutcome, MinuteLogins};

/// A time as the console writes it: UTC, to the second.
pub(crate) fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time as a `datetime-local` control and `as_of` take it (UTC, to the
/// millisecond: an event's own instant must show the state after it).
pub(crate) fn instant_param(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
}

/// Logins per minute over the last hour, stacked by outcome.
pub(crate) fn logins_chart(minutes: &[MinuteLogins]) -> Markup {
    const LEFT: f64 = 44.0;
    const TOP: f64 = 12.0;
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 180.0;
    let max = minutes
        .iter()
        .map(|m| m.counts.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = WIDTH / minutes.len().max(1) as f64;
    let y = |count: u64| TOP + HEIGHT - HEIGHT * count as f64 / max as f64;
    // (minute index, minute, outcome, count below it, its count), one per segment.
    let mut bars = Vec::new();
    for (i, minute) in minutes.iter().enumerate() {
        let mut below = 0;
        for (outcome, count) in LoginOutcome::ALL.into_iter().zip(minute.counts) {
            if count > 0 {
                bars.push((i, minute.minute, outcome, below, count));
                below += count;
            }
        }
    }
    let first = minutes.first().map(|m| m.minute);
    let last = minutes.last().map(|m| m.minute);
    html! {
        svg.chart viewBox={"0 0 " (LEFT + WIDTH + 10.0) " " (TOP + HEIGHT + 34.0)}
            role="img" aria-labelledby="logins-title" focusable="false" {
            title #logins-title { "Logins per minute over the last hour, by outcome" }
            line.axis x1=(LEFT) y1=(TOP + HEIGHT) x2=(LEFT + WIDTH) y2=(TOP + HEIGHT) {}
            line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + HEIGHT) {}
            @for tick in [0, max / 2, max] {
                text.tick x=(LEFT - 6.0) y=(y(tick) + 4.0) text-anchor="end" { (tick) }
                line.grid x1=(LEFT) y1=(y(tick)) x2=(LEFT + WIDTH) y2=(y(tick)) {}
            }
            @for (i, minute, outcome, below, count) in &bars {
                @let x = LEFT + *i as f64 * slot + 1.0;
                rect class={"bar o-" (outcome.label())} x=(x) y=(y(below + count))
                    width=(slot - 2.0) height=(y(*below) - y(below + count)) {
                    title { (minute.format("%H:%M")) " UTC: " (count) " " (outcome.label()) }
                }
            }
            @if let (Some(first), Some(last)) = (first, last) {
                text.tick x=(LEFT) y=(TOP + HEIGHT + 18.0) { (first.format("%H:%M")) " UTC" }
                text.tick x=(LEFT + WIDTH) y=(TOP + HEIGHT + 18.0) text-anchor="end" { (last.format("%H:%M")) " UTC" }
            }
        }
    }
}

/// What one mark on a timeline stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Bound,
    Linked,
    Unbound,
    Erased,
}

impl Mark {
    fn class(self) -> &'static str {
        match self {
            Self::Bound => "m-bound",
            Self::Linked => "m-linked",
            Self::Unbound => "m-unbound",
            Self::Erased => "m-erased",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Self::Bound => "bound",
            Self::Linked => "linked",
            Self::Unbound => "unbound",
            Self::Erased => "erased",
        }
    }
}

/// One binding period on a lane.
struct Span {
    user: i64,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
}

/// One event of a lane worth a mark.
pub(crate) struct TimelineEvent {
    pub at: DateTime<Utc>,
    pub account: String,
    pub what: &'static str,
    pub user: Option<i64>,
    pub via: Option<String>,
    pub actor: Option<String>,
    pub note: Option<String>,
}

/// A mark: what, when, and its words (tooltip and accessible name).
type Marked = (Mark, DateTime<Utc>, String);

fn marks(history: &AccountHistory) -> (Vec<Marked>, Vec<Span>) {
    let mut marks = Vec::new();
    let mut spans: Vec<Span> = Vec::new();
    for event in &history.events {
        let mark = match event.event_type.as_str() {
            "UserBound" if event.via.as_deref() == Some("unionid_match") => Mark::Linked,
            "UserBound" => Mark::Bound,
            "Unbound" => Mark::Unbound,
            "PersonalDataErased" => Mark::Erased,
            _ => continue,
        };
        match mark {
            Mark::Bound | Mark::Linked => spans.push(Span {
                user: event.user_id.unwrap_or_default(),
                from: event.occurred_at,
                to: None,
            }),
            Mark::Unbound => {
                if let Some(open) = spans.iter_mut().rev().find(|s| s.to.is_none()) {
                    open.to = Some(event.occurred_at);
                }
            }
            Mark::Erased => {}
        }
        let mut label = format!("{} {}", mark.word(), when(event.occurred_at));
        if let Some(user) = event.user_id {
            label.push_str(&format!(", user {user}"));
        }
        for (name, value) in [
            ("via", &event.via),
            ("reason", &event.reason),
            ("note", &event.note),
            ("by", &event.actor),
        ] {
            if let Some(value) = value {
                label.push_str(&format!(", {name} {value}"));
            }
        }
        marks.push((mark, event.occurred_at, label));
    }
    (marks, spans)
}

/// The binding events of `histories`, in time order: the timeline's text twin.
pub(crate) fn timeline_events(histories: &[AccountHistory]) -> Vec<TimelineEvent> {
    let mut events: Vec<TimelineEvent> = histories
        .iter()
        .flat_map(|history| {
            let account = format!("{}:{}", history.appid, history.openid);
            history.events.iter().filter_map(move |e| {
                let what = match e.event_type.as_str() {
                    "UserBound" if e.via.as_deref() == Some("unionid_match") => "linked",
                    "UserBound" => "bound",
                    "Unbound" => "unbound",
                    "PersonalDataErased" => "erased",
                    _ => return None,
                };
                Some(TimelineEvent {
                    at: e.occurred_at,
                    account: account.clone(),
                    what,
                    user: e.user_id,
                    via: e.via.clone().or_else(|| e.reason.clone()),
                    actor: e.actor.clone(),
                    note: e.note.clone(),
                })
            })
        })
        .collect();
    events.sort_by_key(|e| e.at);
    events
}

/// A user's binding history: one lane per WeChat identity the log ever bound to them,
/// a bar per binding period (theirs, or another user's on the same identity), a mark
/// per bound, linked, unbound and erased event (each a link that moves `as of` to
/// it), and a line at `as_of`.
pub(crate) fn timeline(
    user: i64,
    histories: &[AccountHistory],
    as_of: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Markup {
    const LEFT: f64 = 230.0;
    const WIDTH: f64 = 560.0;
    const LANE: f64 = 46.0;
    const TOP: f64 = 24.0;
    let lanes: Vec<_> = histories.iter().map(marks).collect();
    let start = lanes
        .iter()
        .flat_map(|(marks, _)| marks.iter().map(|(_, at, _)| *at))
        .min()
        .unwrap_or(now)
        .min(as_of);
    let end = now.max(as_of);
    let span = (end - start).num_milliseconds().max(1) as f64;
    // A margin either side so the first and last marks are not on the edge.
    let x = |at: DateTime<Utc>| {
        LEFT + 12.0 + (WIDTH - 24.0) * (at - start).num_milliseconds() as f64 / span
    };
    let height = TOP + LANE * lanes.len().max(1) as f64 + 30.0;
    html! {
        svg.timeline viewBox={"0 0 " (LEFT + WIDTH + 10.0) " " (height)}
            role="group" aria-labelledby="timeline-title" {
            title #timeline-title { "Binding history of user " (user) ": one lane per WeChat identity" }
            @for (i, (history, (marks, spans))) in histories.iter().zip(&lanes).enumerate() {
                @let mid = TOP + LANE * i as f64 + LANE / 2.0;
                text.lane x="4" y=(mid - 4.0) { (history.appid) }
                text.lane.small x="4" y=(mid + 12.0) { (history.openid) }
                line.track x1=(LEFT) y1=(mid) x2=(LEFT + WIDTH) y2=(mid) {}
                @for span in spans {
                    @let from = x(span.from);
                    @let to = x(span.to.unwrap_or(end));
                    rect class={"span " (if span.user == user { "span-this" } else { "span-other" })}
                        x=(from) y=(mid - 9.0) width=((to - from).max(2.0)) height="18" {
                        title { "bound to user " (span.user) " from " (when(span.from))
                            @if let Some(to) = span.to { " to " (when(to)) } @else { ", still bound" } }
                    }
                }
                @for (mark, at, label) in marks {
                    a href={"?as_of=" (instant_param(*at))} aria-label={(label) "; show the state as of then"} {
                        @let cx = x(*at);
                        @match mark {
                            Mark::Bound => circle class={"mark " (mark.class())} cx=(cx) cy=(mid) r="7" {}
                            Mark::Linked => path class={"mark " (mark.class())}
                                d={"M" (cx) " " (mid - 9.0) " L" (cx + 9.0) " " (mid) " L" (cx) " " (mid + 9.0) " L" (cx - 9.0) " " (mid) " Z"} {}
                            Mark::Unbound => rect class={"mark " (mark.class())} x=(cx - 6.0) y=(mid - 6.0) width="12" height="12" {}
                            Mark::Erased => path class={"mark " (mark.class())}
                                d={"M" (cx - 7.0) " " (mid - 7.0) " L" (cx + 7.0) " " (mid + 7.0) " M" (cx + 7.0) " " (mid - 7.0) " L" (cx - 7.0) " " (mid + 7.0)} {}
                        }
                        title { (label) }
                    }
                }
            }
            @let ax = x(as_of);
            line.asof x1=(ax) y1=(TOP - 14.0) x2=(ax) y2=(height - 24.0) {}
            @let anchor = if ax > LEFT + WIDTH * 0.8 { "end" } else if ax < LEFT + WIDTH * 0.2 { "start" } else { "middle" };
            text.asof-label x=(ax) y=(TOP - 16.0) text-anchor=(anchor) { "as of " (as_of.format("%H:%M:%S")) }
            text.tick x=(LEFT) y=(height - 6.0) { (when(start)) }
            text.tick x=(LEFT + WIDTH) y=(height - 6.0) text-anchor="end" { (when(end)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniauth_application::audit::HistoryEntry;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn event(kind: &str, secs: i64, user: Option<i64>, via: Option<&str>) -> HistoryEntry {
        HistoryEntry {
            position: secs,
            sequence: secs,
            event_type: kind.into(),
            event_version: "1".into(),
            occurred_at: at(secs),
            via: via.map(Into::into),
            reason: None,
            user_id: user,
            linked_from: None,
            imported_from: None,
            users: None,
            session_seq: None,
            unionid: None,
            phone: None,
            nickname: None,
            actor: Some("console".into()),
            note: None,
            request_id: None,
            client_ip: None,
            recorded_at: None,
            hash: None,
        }
    }

    #[test]
    fn the_timeline_draws_a_bar_per_binding_and_a_linked_mark_per_event() {
        let history = AccountHistory {
            appid: miniauth_domain::AppId::parse("wxdemo000000000001").unwrap(),
            openid: "o-1".parse().unwrap(),
            events: vec![
                event("SessionObtained", 0, None, None),
                event("UserBound", 10, Some(42), Some("phone_match")),
                event("Unbound", 20, Some(42), None),
                event("UserBound", 30, Some(7), Some("unionid_match")),
                event("PersonalDataErased", 40, None, None),
            ],
        };
        let svg = timeline(42, std::slice::from_ref(&history), at(15), at(50)).into_string();
        assert_eq!(svg.matches("<rect class=\"span span-this\"").count(), 1);
        assert_eq!(svg.matches("<rect class=\"span span-other\"").count(), 1);
        assert_eq!(svg.matches("<a href=\"?as_of=").count(), 4);
        assert!(svg.contains("m-linked") && svg.contains("m-erased"));
        assert!(svg.contains("by console"));
        let events = timeline_events(&[history]);
        let words: Vec<_> = events.iter().map(|e| e.what).collect();
        assert_eq!(words, ["bound", "unbound", "linked", "erased"]);
    }

    #[test]
    fn the_chart_stacks_outcomes_and_scales_to_the_busiest_minute() {
        let minutes: Vec<MinuteLogins> = (0..60)
            .map(|i| MinuteLogins {
                minute: at(i * 60),
                counts: if i == 59 { [3, 1, 2] } else { [0, 0, 0] },
            })
            .collect();
        let svg = logins_chart(&minutes).into_string();
        assert_eq!(svg.matches("<rect class=\"bar").count(), 3);
        assert!(
            svg.contains(">6</text>"),
            "the top tick is the busiest minute"
        );
    }
}
