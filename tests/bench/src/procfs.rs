//! /proc: the machine, and the CPU and memory of the server, of PostgreSQL and of this
//! process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::report::{CpuUse, Machine};

pub(crate) fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_else(|| "unknown".into()),
        memory_mib: status_kib(&meminfo, "MemTotal:").unwrap_or(0) / 1024,
    }
}

/// The postmaster of the benchmark's PostgreSQL server, once known.
pub(crate) static POSTMASTER: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// The parent of a process, from /proc/<pid>/stat.
pub(crate) fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_parent(&stat)
}

/// Field 4 (ppid) of a /proc/<pid>/stat line.
fn stat_parent(stat: &str) -> Option<u32> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU clock ticks per second of /proc's counters (USER_HZ, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

/// CPU counters at one moment, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuSnapshot {
    server: u64,
    postgres: u64,
    bench: u64,
    machine_busy: u64,
    machine_total: u64,
}

impl CpuSnapshot {
    /// The counters now; `servers` are the miniauth processes (one or more instances).
    pub(crate) fn take(servers: &[u32]) -> Self {
        let mut snapshot = Self {
            server: servers.iter().filter_map(|&pid| process_ticks(pid)).sum(),
            bench: std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|t| parse_stat_ticks(&t, true))
                .unwrap_or(0),
            ..Self::default()
        };
        if let Some((busy, total)) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_machine_ticks(&t))
        {
            snapshot.machine_busy = busy;
            snapshot.machine_total = total;
        }
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                // Unknown (SQLite, or a server in another PID namespace): not counted.
                let ours = POSTMASTER.get().is_some_and(|&postmaster| {
                    stat_command(&stat) == Some("postgres")
                        && (pid == postmaster || stat_parent(&stat) == Some(postmaster))
                });
                if ours {
                    // With children: backends that exited (pgbench's) are in the
                    // postmaster's cutime/cstime once reaped.
                    snapshot.postgres += parse_stat_ticks(&stat, true).unwrap_or(0);
                }
            }
        }
        snapshot
    }

    /// The CPU spent since `before`, per operation; `None` without /proc or operations.
    pub(crate) fn since(&self, before: &Self, ops: u64) -> Option<CpuUse> {
        let total = self.machine_total.checked_sub(before.machine_total)?;
        if ops == 0 || total == 0 {
            return None;
        }
        let per_op = |now: u64, then: u64| {
            now.saturating_sub(then) as f64 / CLOCK_TICKS * 1000.0 / ops as f64
        };
        Some(CpuUse {
            server_ms_per_op: per_op(self.server, before.server),
            postgres_ms_per_op: per_op(self.postgres, before.postgres),
            bench_ms_per_op: per_op(self.bench, before.bench),
            machine_busy_percent: self.machine_busy.saturating_sub(before.machine_busy) as f64
                * 100.0
                / total as f64,
            measured_percent: (self.server.saturating_sub(before.server)
                + self.postgres.saturating_sub(before.postgres)
                + self.bench.saturating_sub(before.bench)) as f64
                * 100.0
                / total as f64,
        })
    }
}

fn process_ticks(pid: u32) -> Option<u64> {
    parse_stat_ticks(
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
        false,
    )
}

/// The command name of a /proc/<pid>/stat line: `123 (postgres) S …`.
fn stat_command(stat: &str) -> Option<&str> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    stat.get(open + 1..close)
}

/// utime + stime (and, with `children`, cutime + cstime: waited-for children such as
/// pgbench) of a /proc/<pid>/stat line.
fn parse_stat_ticks(stat: &str, children: bool) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let own = field(14)? + field(15)?;
    Some(if children {
        own + field(16)? + field(17)?
    } else {
        own
    })
}

/// (busy, total) ticks of all CPUs from /proc/stat's `cpu` line; idle and iowait are
/// not busy.
fn parse_machine_ticks(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The fields of /proc/<pid>/status the report uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStatus {
    rss_kib: u64,
    pub(crate) hwm_kib: u64,
}

pub(crate) fn read_status(pid: u32) -> Option<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text)
}

fn parse_status(text: &str) -> Option<ProcStatus> {
    Some(ProcStatus {
        rss_kib: status_kib(text, "VmRSS:")?,
        hwm_kib: status_kib(text, "VmHWM:")?,
    })
}

/// `VmRSS:     12345 kB` → 12345.
fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Samples the server's VmRSS every 250 ms while the concurrent scenarios run.
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Option<u64>>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut max = None;
            while !flag.load(Ordering::Relaxed) {
                if let Some(status) = read_status(pid) {
                    max = Some(max.unwrap_or(0).max(status.rss_kib));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            max
        });
        Self { stop, task }
    }

    pub(crate) async fn stop(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_is_parsed() {
        let text =
            "Name:\tminiauth\nVmPeak:\t  300000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\n";
        assert_eq!(
            parse_status(text),
            Some(ProcStatus {
                rss_kib: 30720,
                hwm_kib: 40960
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_counters_are_parsed() {
        let stat = "4242 (post gres) S 1 2 3 4 5 6 7 8 9 10 250 50 7 3 20 0";
        assert_eq!(stat_command(stat), Some("post gres"));
        assert_eq!(stat_parent(stat), Some(1));
        assert_eq!(
            parent_pid(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
        assert_eq!(parse_stat_ticks(stat, false), Some(300));
        assert_eq!(parse_stat_ticks(stat, true), Some(310));
        let machine = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_machine_ticks(machine), Some((150, 1000)));
        let before = CpuSnapshot {
            server: 100,
            postgres: 1000,
            bench: 10,
            machine_busy: 0,
            machine_total: 1000,
        };
        let after = CpuSnapshot {
            server: 200,
            postgres: 1100,
            bench: 30,
            machine_busy: 500,
            machine_total: 2000,
        };
        let cpu = after.since(&before, 100).unwrap();
        assert!((cpu.server_ms_per_op - 10.0).abs() < 1e-9);
        assert!((cpu.bench_ms_per_op - 2.0).abs() < 1e-9);
        assert!((cpu.machine_busy_percent - 50.0).abs() < 1e-9);
        assert!((cpu.measured_percent - 22.0).abs() < 1e-9);
        assert!(after.since(&before, 0).is_none());
        let own = CpuSnapshot::take(&[std::process::id()]);
        assert!(own.machine_total > 0);
    }

    #[test]
    fn own_process_memory_is_readable() {
        let status = read_status(std::process::id()).expect("/proc/self/status");
        assert!(status.rss_kib > 0 && status.hwm_kib >= status.rss_kib);
    }
}
