//! The metrics behind `/metrics`, kept by the `prometheus-client` crate: request counts
//! by route and status class, a latency histogram and login outcomes. Route labels are
//! matched route templates, so the number of series is bounded by the routes, never by
//! client input.

use std::collections::VecDeque;
use std::fmt::{self, Write};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use prometheus_client::encoding::{text, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The content type of the OpenMetrics text that [`Metrics::render`] writes.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of Prometheus' classic text format, which reads the same body: the
/// OpenMetrics-only lines (`# UNIT`, `# EOF`) are comments to its parsers.
pub(crate) const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How a login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginOutcome {
    /// A bound identity: tokens at once.
    Returning,
    /// Not bound yet: a ticket for the next steps.
    Unbound,
    /// Refused or failed.
    Failed,
}

impl LoginOutcome {
    /// Every outcome, in the order charts stack them.
    pub const ALL: [Self; 3] = [Self::Returning, Self::Unbound, Self::Failed];

    /// The label `/metrics` and the console name it by.
    pub fn label(self) -> &'static str {
        match self {
            Self::Returning => "returning",
            Self::Unbound => "unbound",
            Self::Failed => "failed",
        }
    }
}

impl EncodeLabelValue for LoginOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        encoder.write_str(self.label())
    }
}

/// A matched route template. The crate writes label values as they are, so the
/// escaping the text format asks for is done here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Route(String);

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LoginLabels {
    outcome: LoginOutcome,
}

/// How many minutes of login outcomes [`Metrics::logins_per_minute`] remembers.
pub const LOGIN_MINUTES: usize = 60;

/// The logins of one minute, by outcome (indexed as [`LoginOutcome::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteLogins {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Logins that ended each way, in the order of [`LoginOutcome::ALL`].
    pub counts: [u64; 3],
}

/// A ring of per-minute login counts over the last [`LOGIN_MINUTES`] minutes: what the
/// console's chart draws. The Prometheus counters only grow; a rate needs the past.
#[derive(Debug, Default)]
struct LoginRing {
    minutes: Mutex<VecDeque<(i64, [u64; 3])>>,
}

impl LoginRing {
    fn record(&self, minute: i64, outcome: LoginOutcome) {
        let slot = LoginOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        match minutes.iter_mut().rev().find(|(m, _)| *m == minute) {
            Some((_, counts)) => counts[slot] += 1,
            None => {
                let mut counts = [0; 3];
                counts[slot] = 1;
                // Minutes arrive in order but for a request that straddled one.
                let at = minutes.partition_point(|(m, _)| *m < minute);
                minutes.insert(at, (minute, counts));
            }
        }
        let oldest = minute - LOGIN_MINUTES as i64;
        while minutes.front().is_some_and(|(m, _)| *m <= oldest) {
            minutes.pop_front();
        }
    }

    fn last_hour(&self, now_minute: i64) -> Vec<MinuteLogins> {
        let minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        (0..LOGIN_MINUTES as i64)
            .rev()
            .map(|ago| now_minute - ago)
            .map(|minute| MinuteLogins {
                minute: DateTime::from_timestamp(minute * 60, 0).unwrap_or_default(),
                counts: minutes
                    .iter()
                    .find(|(m, _)| *m == minute)
                    .map(|(_, c)| *c)
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// The registry behind `/metrics` and the handles the middleware and the login routes
/// count with.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    logins: Family<LoginLabels, Counter>,
    login_ring: LoginRing,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        // Counters are named without `_total`: the encoder appends it to the samples.
        registry.register(
            "miniauth_http_requests",
            "HTTP requests answered, by route, method and status class",
            requests.clone(),
        );
        let latency = Histogram::new(BUCKETS);
        registry.register_with_unit(
            "miniauth_http_request_duration",
            "Time to answer a request",
            Unit::Seconds,
            latency.clone(),
        );
        let logins = Family::<LoginLabels, Counter>::default();
        // Every outcome is exposed from the start, so a rate over `failed` has a series
        // before the first failure.
        for outcome in LoginOutcome::ALL {
            let _ = logins.get_or_create(&LoginLabels { outcome });
        }
        registry.register(
            "miniauth_logins",
            "WeChat logins, by outcome",
            logins.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            logins,
            login_ring: LoginRing::default(),
        }
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A known method, or `other`: a client's invented method must not add series.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn record_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: Route(route.to_owned()),
                method: method_label(method),
                status: status_class(status),
            })
            .inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Counts one login, ending now by the system clock.
    pub fn record_login(&self, outcome: LoginOutcome) {
        self.record_login_at(Utc::now(), outcome);
    }

    /// Counts one login that ended at `at` (the service's clock: the console's chart
    /// reads the minutes by the same clock).
    pub fn record_login_at(&self, at: DateTime<Utc>, outcome: LoginOutcome) {
        self.logins.get_or_create(&LoginLabels { outcome }).inc();
        self.login_ring
            .record(at.timestamp().div_euclid(60), outcome);
    }

    /// The logins of each of the last [`LOGIN_MINUTES`] minutes up to `now`'s, oldest
    /// first, by outcome (this instance's only: each instance counts its own).
    pub fn logins_per_minute(&self, now: DateTime<Utc>) -> Vec<MinuteLogins> {
        self.login_ring.last_hour(now.timestamp().div_euclid(60))
    }

    /// The OpenMetrics text exposition, ending with `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and every label value above encodes.
        text::encode(&mut out, &self.registry).expect("metrics encode into a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_histogram_and_logins() {
        let metrics = Metrics::default();
        metrics.record_request("/healthz", "GET", 200, Duration::from_millis(3));
        metrics.record_request("/healthz", "GET", 204, Duration::from_millis(30));
        metrics.record_request("/v1/token", "POST", 401, Duration::from_secs(20));
        metrics.record_request("/v1/token", "BREW", 500, Duration::from_millis(1));
        metrics.record_login(LoginOutcome::Unbound);
        let text = metrics.render();
        assert!(text.contains(
            "miniauth_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"2xx\"} 2"
        ));
        assert!(text.contains(
            "miniauth_http_requests_total{route=\"/v1/token\",method=\"POST\",status=\"4xx\"} 1"
        ));
        assert!(text.contains(
            "miniauth_http_requests_total{route=\"/v1/token\",method=\"other\",status=\"5xx\"} 1"
        ));
        assert!(text.contains("miniauth_http_request_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("miniauth_http_request_duration_seconds_bucket{le=\"0.05\"} 3"));
        assert!(text.contains("miniauth_http_request_duration_seconds_bucket{le=\"+Inf\"} 4"));
        assert!(text.contains("miniauth_http_request_duration_seconds_count 4"));
        assert!(text.contains("miniauth_logins_total{outcome=\"unbound\"} 1"));
        assert!(text.contains("miniauth_logins_total{outcome=\"failed\"} 0"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn logins_per_minute_keep_the_last_hour_by_outcome() {
        let metrics = Metrics::default();
        let start = DateTime::parse_from_rfc3339("2026-03-01T08:00:10Z")
            .unwrap()
            .to_utc();
        let minutes = |m: i64| start + chrono::Duration::minutes(m);
        metrics.record_login_at(minutes(0), LoginOutcome::Returning);
        metrics.record_login_at(minutes(0), LoginOutcome::Returning);
        metrics.record_login_at(minutes(1), LoginOutcome::Failed);
        metrics.record_login_at(minutes(59), LoginOutcome::Unbound);
        let hour = metrics.logins_per_minute(minutes(59));
        assert_eq!(hour.len(), LOGIN_MINUTES);
        assert_eq!(hour[0].counts, [2, 0, 0]);
        assert_eq!(hour[0].minute.to_rfc3339(), "2026-03-01T08:00:00+00:00");
        assert_eq!(hour[1].counts, [0, 0, 1]);
        assert_eq!(hour[59].counts, [0, 1, 0]);
        // An hour on, the first minute has left the ring (and the chart).
        metrics.record_login_at(minutes(60), LoginOutcome::Failed);
        let later = metrics.logins_per_minute(minutes(60));
        assert_eq!(later[0].counts, [0, 0, 1]);
        assert_eq!(
            later
                .iter()
                .map(|m| m.counts.iter().sum::<u64>())
                .sum::<u64>(),
            3
        );
        assert!(metrics
            .render()
            .contains("miniauth_logins_total{outcome=\"returning\"} 2"));
    }

    #[test]
    fn route_labels_are_escaped() {
        let metrics = Metrics::default();
        metrics.record_request("/a\"b\\c\nd", "GET", 200, Duration::ZERO);
        assert!(
            metrics.render().contains(
                r#"miniauth_http_requests_total{route="/a\"b\\c\nd",method="GET",status="2xx"} 1"#
            ),
            "{}",
            metrics.render()
        );
    }
}
