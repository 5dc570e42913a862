//! pgbench: the ceiling a durable write sets on this PostgreSQL, and two scripts that
//! isolate the store's commit pattern.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::procfs::CpuSnapshot;
use crate::report::PgbenchResult;

/// The pgbench advisory lock id: any constant stands for the store's global one.
const PGBENCH_LOCK: i64 = 7_007;

/// The pgbench scripts: the ceiling, then two that isolate the store's commit pattern.
pub(crate) fn pgbench_scripts() -> Vec<(&'static str, String)> {
    let insert = "INSERT INTO bench_one_row (payload) VALUES ('one durable row');";
    vec![
        ("one-row INSERT (the ceiling)", format!("{insert}\n")),
        (
            "one-row INSERT under one global advisory lock",
            format!("BEGIN;\nSELECT pg_advisory_xact_lock({PGBENCH_LOCK});\n{insert}\nCOMMIT;\n"),
        ),
        (
            "the store's append before issue 13: event row and state row under the global lock",
            // As adapters/store did per command until issue 13: one transaction under
            // the global advisory lock (event row, state row).
            format!(
                "BEGIN;\nSELECT pg_advisory_xact_lock({PGBENCH_LOCK});\n{insert}\n\
                 INSERT INTO bench_state VALUES (:client_id, 'state') ON CONFLICT (id) DO UPDATE SET payload = excluded.payload;\n\
                 COMMIT;\n"
            ),
        ),
        (
            "the store's append today: event row and state row in one statement, no lock",
            // As adapters/store does per command since issue 13 (event_store.rs,
            // `Rows::postgres`): one statement, its own transaction, no lock. The read
            // models follow in a background catch-up, outside the request.
            "WITH appended AS (INSERT INTO bench_one_row (payload) VALUES ('one durable row')) \
             INSERT INTO bench_state VALUES (:client_id, 'state') ON CONFLICT (id) DO UPDATE SET payload = excluded.payload;\n"
                .to_owned(),
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run_pgbench(
    pgbench: &Path,
    url: &str,
    dir: &Path,
    index: usize,
    name: &str,
    script: &str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<PgbenchResult> {
    let path = dir.join(format!("pgbench-{index}.sql"));
    std::fs::write(&path, script)?;
    let threads = clients.min(2);
    let cpu_before = CpuSnapshot::take(&[]);
    let output = Command::new(pgbench)
        .args(["-n", "-f"])
        .arg(&path)
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &threads.to_string(),
            "-T",
            &seconds.to_string(),
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "running {} (install PostgreSQL's client tools, or pass --no-pgbench)",
                pgbench.display()
            )
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            String::from_utf8_lossy(&output.stderr).trim(),
            stdout.trim()
        );
    }
    let (tps, latency_avg_ms) = parse_pgbench(&stdout)
        .with_context(|| format!("unexpected pgbench output: {}", stdout.trim()))?;
    let transactions = (tps * seconds as f64).round() as u64;
    let cpu = CpuSnapshot::take(&[]).since(&cpu_before, transactions);
    Ok(PgbenchResult {
        name: name.to_owned(),
        script: script.to_owned(),
        tps,
        latency_avg_ms,
        seconds,
        cpu,
        postgres_waits: Vec::new(),
    })
}

/// `tps = 1234.5 (without initial connection time)` and `latency average = 25.9 ms`.
fn parse_pgbench(output: &str) -> Option<(f64, f64)> {
    let mut tps = None;
    let mut latency = None;
    for line in output.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("tps = ") {
            if tps.is_none() || line.contains("without initial connection") {
                tps = rest.split_whitespace().next()?.parse::<f64>().ok();
            }
        } else if let Some(rest) = line.strip_prefix("latency average = ") {
            latency = rest.split_whitespace().next()?.parse::<f64>().ok();
        }
    }
    Some((tps?, latency.unwrap_or(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_output_is_parsed() {
        let output = "pgbench (15.20)\ntransaction type: insert.sql\nscaling factor: 1\n\
            number of clients: 32\nlatency average = 13.570 ms\n\
            initial connection time = 40.1 ms\n\
            tps = 2358.126 (without initial connection time)\n";
        assert_eq!(parse_pgbench(output), Some((2358.126, 13.57)));
        assert_eq!(parse_pgbench("no figures here"), None);
    }
}
