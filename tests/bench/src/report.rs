//! The report: what one run measured and each target met or missed, as a table or JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use miniauth_store::Engine;

/// The whole report (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine the run was on.
    pub machine: Machine,
    /// The store under test.
    pub store: Engine,
    /// Concurrent clients.
    pub clients: usize,
    /// The server's connection pool.
    pub pool: u32,
    /// Seconds per scenario.
    pub duration_secs: u64,
    /// PostgreSQL's version and the settings that matter for durable writes.
    pub postgres: Option<PostgresInfo>,
    /// pgbench runs: the ceiling first, then the evidence runs.
    pub pgbench: Vec<PgbenchResult>,
    /// The miniauth scenarios.
    pub scenarios: Vec<ScenarioResult>,
    /// Login latency with a long history against fresh accounts.
    pub history: Option<HistoryResult>,
    /// The server's memory.
    pub memory: MemoryResult,
    /// `miniauth projections rebuild`, when the build has it.
    pub rebuild: RebuildResult,
    /// Each target, met or missed.
    pub targets: Vec<TargetResult>,
}

/// The machine.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// The CPU model from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory in MiB.
    pub memory_mib: u64,
}

/// PostgreSQL's version and durability settings.
#[derive(Debug, Clone, Serialize)]
pub struct PostgresInfo {
    /// `SELECT version()`.
    pub version: String,
    /// name → setting (with unit).
    pub settings: BTreeMap<String, String>,
}

/// One pgbench run.
#[derive(Debug, Clone, Serialize)]
pub struct PgbenchResult {
    /// What the script does.
    pub name: String,
    /// The script.
    pub script: String,
    /// Transactions per second (without connection time).
    pub tps: f64,
    /// pgbench's average latency in milliseconds.
    pub latency_avg_ms: f64,
    /// Seconds it ran.
    pub seconds: u64,
    /// Where the CPU went while it ran.
    pub cpu: Option<CpuUse>,
    /// What the database's client backends were doing, sampled (PostgreSQL only).
    pub postgres_waits: Vec<WaitShare>,
}

/// One miniauth scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// What one operation is.
    pub name: String,
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// The first failure, for diagnosis.
    pub first_error: Option<String>,
    /// Wall-clock seconds of the scenario.
    pub seconds: f64,
    /// Successful operations per second.
    pub per_second: f64,
    /// Latency percentiles of the miniauth calls, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// `per_second` over pgbench's one-row INSERT TPS.
    pub ratio_to_pgbench: Option<f64>,
    /// Where the CPU went while it ran.
    pub cpu: Option<CpuUse>,
    /// What the database's client backends were doing, sampled (PostgreSQL only).
    pub postgres_waits: Vec<WaitShare>,
    /// The share of those samples waiting on a heavyweight lock (`Lock:*`), percent.
    pub lock_wait_percent: f64,
}

/// The share of `waits` that wait on a heavyweight lock (`Lock:*`: advisory, row,
/// transaction id…), in percent of all samples.
pub(crate) fn lock_share(waits: &[WaitShare]) -> f64 {
    waits
        .iter()
        .filter(|w| w.state.starts_with("Lock:"))
        .map(|w| w.percent)
        .sum()
}

/// One kind of PostgreSQL backend state and its share of all backend samples.
#[derive(Debug, Clone, Serialize)]
pub struct WaitShare {
    /// `running`, `idle`, `idle in transaction`, or `wait_event_type:wait_event`
    /// (`Lock:advisory` is the store's append lock, `Lock:transactionid` a row lock,
    /// `IO:WALSync` the commit's flush).
    pub state: String,
    /// Percent of the samples of every client backend of the database.
    pub percent: f64,
    /// Backends in that state on average.
    pub mean_backends: f64,
}

/// CPU spent during a run, from /proc: per operation (or pgbench transaction) for each
/// party, and how busy the whole machine was. When the machine is near 100 % busy the
/// figure is CPU-bound on this machine, whatever else limits it elsewhere.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    /// CPU milliseconds of the miniauth server per operation.
    pub server_ms_per_op: f64,
    /// CPU milliseconds of all PostgreSQL processes per operation.
    pub postgres_ms_per_op: f64,
    /// CPU milliseconds of this process (clients and simulator) and its children
    /// (pgbench) per operation.
    pub bench_ms_per_op: f64,
    /// The whole machine's busy share of all CPUs, in percent.
    pub machine_busy_percent: f64,
    /// The share of all CPUs that the measured parties (server, PostgreSQL, bench)
    /// used, in percent; the rest of `machine_busy_percent` was other work.
    pub measured_percent: f64,
}

/// Login latency of a long-history account against fresh ones.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryResult {
    /// Events in the long-history account when measured.
    pub events: u64,
    /// Seconds it took to build the history through the API.
    pub build_seconds: f64,
    /// Login rate on that one account while building it.
    pub build_logins_per_second: f64,
    /// Median login latency of the long-history account (ms).
    pub history_p50_ms: f64,
    /// Median login latency of fresh accounts (ms).
    pub fresh_p50_ms: f64,
    /// Mean latencies (ms).
    pub history_mean_ms: f64,
    /// Mean latency of fresh accounts (ms).
    pub fresh_mean_ms: f64,
    /// history_p50 / fresh_p50.
    pub ratio: f64,
    /// Timed logins on each side.
    pub samples: usize,
}

/// The server's memory, from /proc/<pid>/status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryResult {
    /// Peak resident set (VmHWM) at the end of the concurrent scenarios, in KiB.
    pub hwm_under_load_kib: Option<u64>,
    /// The largest VmRSS sampled during the concurrent scenarios, in KiB.
    pub max_rss_sampled_kib: Option<u64>,
    /// VmHWM at the end of the whole run, in KiB.
    pub hwm_final_kib: Option<u64>,
}

/// `miniauth projections rebuild`.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildResult {
    /// Whether it was measured.
    pub measured: bool,
    /// Events in the log.
    pub events: u64,
    /// Wall-clock seconds of the subcommand (process start and migrations included).
    pub seconds: f64,
    /// events / seconds.
    pub events_per_second: f64,
    /// Why it was not measured, or what the figure includes.
    pub note: String,
}

/// A target from issue 7 and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// The target.
    pub target: String,
    /// What this run measured.
    pub measured: String,
    /// Met, missed, or not measured (`None`).
    pub met: Option<bool>,
}

/// Issue 7's targets against this run.
pub(crate) fn targets(report: &Report) -> Vec<TargetResult> {
    let mut out = Vec::new();
    let returning = report
        .scenarios
        .iter()
        .find(|s| s.name.starts_with("returning"));
    let ceiling = report.pgbench.first();
    out.push(match (returning, ceiling, report.store) {
        (Some(r), Some(c), Engine::Postgres) => TargetResult {
            target: "returning-user login ≥ 0.6 × pgbench one-row INSERT TPS".into(),
            measured: format!(
                "{:.0}/s vs {:.0} TPS = {:.2}×",
                r.per_second,
                c.tps,
                r.per_second / c.tps.max(1e-9)
            ),
            met: Some(r.per_second >= 0.6 * c.tps),
        },
        _ => TargetResult {
            target: "returning-user login ≥ 0.6 × pgbench one-row INSERT TPS".into(),
            measured: "not measured (needs --store postgres and pgbench)".into(),
            met: None,
        },
    });
    out.push(match &report.history {
        Some(h) => TargetResult {
            target: "login with 10,000 earlier events ≤ 1.5 × a fresh account's".into(),
            measured: format!(
                "{} events: p50 {:.2} ms vs {:.2} ms = {:.2}×",
                h.events, h.history_p50_ms, h.fresh_p50_ms, h.ratio
            ),
            met: Some(h.ratio <= 1.5 && h.events >= 10_000),
        },
        None => TargetResult {
            target: "login with 10,000 earlier events ≤ 1.5 × a fresh account's".into(),
            measured: "not measured (--history 0)".into(),
            met: None,
        },
    });
    out.push(TargetResult {
        target: "resident memory under the load ≤ 64 MiB (VmHWM)".into(),
        measured: match report.memory.hwm_under_load_kib {
            Some(kib) => format!("{:.1} MiB", kib as f64 / 1024.0),
            None => "not measured (no /proc)".into(),
        },
        met: report.memory.hwm_under_load_kib.map(|kib| kib <= 64 * 1024),
    });
    out.push(TargetResult {
        target: "projections rebuild ≥ 100,000 events/s".into(),
        measured: if report.rebuild.measured {
            format!(
                "{} events in {:.2} s = {:.0}/s",
                report.rebuild.events, report.rebuild.seconds, report.rebuild.events_per_second
            )
        } else {
            report.rebuild.note.clone()
        },
        met: report
            .rebuild
            .measured
            .then_some(report.rebuild.events_per_second >= 100_000.0),
    });
    out
}

/// The human report: one table and the checks under it.
pub fn render_table(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nminiauth-bench: {} clients, {} s per scenario, store {:?} (pool {}), {} CPUs ({}), {} MiB",
        report.clients,
        report.duration_secs,
        report.store,
        report.pool,
        report.machine.cpus,
        report.machine.cpu_model,
        report.machine.memory_mib
    );
    if let Some(pg) = &report.postgres {
        let get = |k: &str| pg.settings.get(k).map_or("?", String::as_str);
        let _ = writeln!(
            out,
            "PostgreSQL: {} | synchronous_commit={} fsync={} wal_sync_method={} commit_delay={}",
            pg.version.split(" on ").next().unwrap_or(&pg.version),
            get("synchronous_commit"),
            get("fsync"),
            get("wal_sync_method"),
            get("commit_delay")
        );
    }
    let _ = writeln!(
        out,
        "\n| {:<72} | {:>7} | {:>9} | {:>7} | {:>7} | {:>7} | {:>6} | {:>9} |",
        "operation", "ops", "per s", "p50 ms", "p95 ms", "p99 ms", "errors", "× pgbench"
    );
    let _ = writeln!(
        out,
        "|{}|{}|{}|{}|{}|{}|{}|{}|",
        "-".repeat(74),
        "-".repeat(9),
        "-".repeat(11),
        "-".repeat(9),
        "-".repeat(9),
        "-".repeat(9),
        "-".repeat(8),
        "-".repeat(11)
    );
    for s in &report.scenarios {
        let _ = writeln!(
            out,
            "| {:<72} | {:>7} | {:>9.1} | {:>7.2} | {:>7.2} | {:>7.2} | {:>6} | {:>9} |",
            format!("miniauth: {}", s.name),
            s.ops,
            s.per_second,
            s.p50_ms,
            s.p95_ms,
            s.p99_ms,
            s.errors,
            s.ratio_to_pgbench
                .map_or("-".to_owned(), |r| format!("{r:.2}×"))
        );
    }
    let ceiling = report.pgbench.first().map(|p| p.tps);
    for p in &report.pgbench {
        let _ = writeln!(
            out,
            "| {:<72} | {:>7} | {:>9.1} | {:>7.2} | {:>7} | {:>7} | {:>6} | {:>9} |",
            format!("pgbench: {}", p.name),
            format!("{}s", p.seconds),
            p.tps,
            p.latency_avg_ms,
            "-",
            "-",
            "-",
            ceiling.map_or("-".to_owned(), |c| format!("{:.2}×", p.tps / c.max(1e-9)))
        );
    }
    let _ = writeln!(
        out,
        "\nCPU per operation (ms; bench = clients + simulator, or pgbench) and machine busy share:"
    );
    let rows = report
        .scenarios
        .iter()
        .map(|s| (format!("miniauth: {}", s.name), s.cpu.as_ref()))
        .chain(
            report
                .pgbench
                .iter()
                .map(|p| (format!("pgbench: {}", p.name), p.cpu.as_ref())),
        );
    for (name, cpu) in rows {
        match cpu {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  {:<74} server {:>6.3}  postgres {:>6.3}  bench {:>6.3}  busy {:>5.1} % (measured parties {:>5.1} %)",
                    name,
                    c.server_ms_per_op,
                    c.postgres_ms_per_op,
                    c.bench_ms_per_op,
                    c.machine_busy_percent,
                    c.measured_percent
                );
            }
            None => {
                let _ = writeln!(out, "  {name:<74} not measured");
            }
        }
    }
    let waits = report
        .scenarios
        .iter()
        .map(|s| (format!("miniauth: {}", s.name), &s.postgres_waits))
        .chain(
            report
                .pgbench
                .iter()
                .map(|p| (format!("pgbench: {}", p.name), &p.postgres_waits)),
        )
        .filter(|(_, w)| !w.is_empty())
        .collect::<Vec<_>>();
    if !waits.is_empty() {
        let _ = writeln!(
            out,
            "\nPostgreSQL client backends, sampled every 20 ms (share of samples, mean backends):"
        );
        for (name, shares) in waits {
            let top = shares
                .iter()
                .take(5)
                .map(|w| format!("{} {:.0} % ({:.1})", w.state, w.percent, w.mean_backends))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(out, "  {name}: {top}; Lock:* {:.1} %", lock_share(shares));
        }
    }
    if let Some(h) = &report.history {
        let _ = writeln!(
            out,
            "\nhistory: {} events on one account (built in {:.1} s, {:.0} logins/s on that account); \
             login p50 {:.2} ms (mean {:.2}) vs fresh accounts p50 {:.2} ms (mean {:.2}): {:.2}× ({} samples each)",
            h.events,
            h.build_seconds,
            h.build_logins_per_second,
            h.history_p50_ms,
            h.history_mean_ms,
            h.fresh_p50_ms,
            h.fresh_mean_ms,
            h.ratio,
            h.samples
        );
    }
    let mib =
        |k: Option<u64>| k.map_or("?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let _ = writeln!(
        out,
        "memory: VmHWM {} after the concurrent scenarios (largest VmRSS sampled {}), VmHWM {} at the end",
        mib(report.memory.hwm_under_load_kib),
        mib(report.memory.max_rss_sampled_kib),
        mib(report.memory.hwm_final_kib)
    );
    let _ = writeln!(
        out,
        "projections rebuild: {}",
        if report.rebuild.measured {
            format!(
                "{} events in {:.2} s = {:.0} events/s ({})",
                report.rebuild.events,
                report.rebuild.seconds,
                report.rebuild.events_per_second,
                report.rebuild.note
            )
        } else {
            report.rebuild.note.clone()
        }
    );
    for s in report.scenarios.iter().filter(|s| s.errors > 0) {
        let _ = writeln!(
            out,
            "errors in {}: {} (first: {})",
            s.name,
            s.errors,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
    let _ = writeln!(out, "\ntargets:");
    for t in &report.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let _ = writeln!(out, "  [{verdict}] {}: {}", t.target, t.measured);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::machine;

    #[test]
    fn targets_are_judged_from_the_figures() {
        let scenario = |name: &str, per_second: f64| ScenarioResult {
            name: name.into(),
            ops: 1,
            errors: 0,
            first_error: None,
            seconds: 1.0,
            per_second,
            p50_ms: 1.0,
            p95_ms: 1.0,
            p99_ms: 1.0,
            ratio_to_pgbench: None,
            cpu: None,
            postgres_waits: Vec::new(),
            lock_wait_percent: 0.0,
        };
        let mut report = Report {
            machine: machine(),
            store: Engine::Postgres,
            clients: 32,
            pool: 10,
            duration_secs: 1,
            postgres: None,
            pgbench: vec![PgbenchResult {
                name: "x".into(),
                script: String::new(),
                tps: 1000.0,
                latency_avg_ms: 1.0,
                seconds: 1,
                cpu: None,
                postgres_waits: Vec::new(),
            }],
            scenarios: vec![scenario("returning-user login", 700.0)],
            history: None,
            memory: MemoryResult {
                hwm_under_load_kib: Some(70 * 1024),
                ..Default::default()
            },
            rebuild: RebuildResult {
                measured: false,
                events: 0,
                seconds: 0.0,
                events_per_second: 0.0,
                note: "not measured".into(),
            },
            targets: Vec::new(),
        };
        let t = targets(&report);
        assert_eq!(t[0].met, Some(true));
        assert_eq!(t[1].met, None);
        assert_eq!(t[2].met, Some(false));
        assert_eq!(t[3].met, None);
        report.scenarios = vec![ScenarioResult {
            ratio_to_pgbench: Some(0.5),
            ..scenario("returning-user login", 500.0)
        }];
        report.targets = targets(&report);
        assert_eq!(report.targets[0].met, Some(false));
        let table = render_table(&report);
        assert!(
            table.contains("MISSED") && table.contains("0.50×"),
            "{table}"
        );
    }
}
