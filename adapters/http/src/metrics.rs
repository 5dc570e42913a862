//! A small Prometheus registry: request counts by route and status class, a latency
//! histogram and login outcomes. Route labels are matched route templates, so the
//! number of series is bounded by the routes, never by client input.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// How a login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// A bound identity: tokens at once.
    Returning,
    /// Not bound yet: a ticket for the next steps.
    Unbound,
    /// Refused or failed.
    Failed,
}

impl LoginOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Returning => "returning",
            Self::Unbound => "unbound",
            Self::Failed => "failed",
        }
    }
}

/// The counters behind `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    logins: [AtomicU64; 3],
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

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts one answered request.
    pub fn record_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let method = match method {
            "GET" => "GET",
            "POST" => "POST",
            "DELETE" => "DELETE",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            "HEAD" => "HEAD",
            "OPTIONS" => "OPTIONS",
            _ => "other",
        };
        {
            let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            *requests
                .entry((route.to_owned(), method, status_class(status)))
                .or_default() += 1;
        }
        let secs = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts one login.
    pub fn record_login(&self, outcome: LoginOutcome) {
        let index = match outcome {
            LoginOutcome::Returning => 0,
            LoginOutcome::Unbound => 1,
            LoginOutcome::Failed => 2,
        };
        self.logins[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP miniauth_http_requests_total HTTP requests answered, by route, method and status class.\n");
        out.push_str("# TYPE miniauth_http_requests_total counter\n");
        {
            let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            for ((route, method, class), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "miniauth_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{class}\"}} {count}",
                    escape_label(route)
                );
            }
        }
        out.push_str("# HELP miniauth_http_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE miniauth_http_request_duration_seconds histogram\n");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "miniauth_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "miniauth_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "miniauth_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "miniauth_http_request_duration_seconds_count {count}");
        out.push_str("# HELP miniauth_logins_total WeChat logins, by outcome.\n");
        out.push_str("# TYPE miniauth_logins_total counter\n");
        for outcome in [
            LoginOutcome::Returning,
            LoginOutcome::Unbound,
            LoginOutcome::Failed,
        ] {
            let index = outcome as usize;
            let _ = writeln!(
                out,
                "miniauth_logins_total{{outcome=\"{}\"}} {}",
                outcome.label(),
                self.logins[index].load(Ordering::Relaxed)
            );
        }
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
        metrics.record_login(LoginOutcome::Unbound);
        let text = metrics.render();
        assert!(text.contains(
            "miniauth_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"2xx\"} 2"
        ));
        assert!(text.contains(
            "miniauth_http_requests_total{route=\"/v1/token\",method=\"POST\",status=\"4xx\"} 1"
        ));
        assert!(text.contains("miniauth_http_request_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("miniauth_http_request_duration_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("miniauth_http_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("miniauth_logins_total{outcome=\"unbound\"} 1"));
        assert!(text.contains("miniauth_logins_total{outcome=\"failed\"} 0"));
    }
}
