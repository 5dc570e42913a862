//! The load: a miniauth against the machine's ceiling, in one run.
//!
//! It starts a build of miniauth as a child process (so its resident memory
//! can be read from `/proc/<pid>/status`) on a fresh PostgreSQL database (created on the
//! server of `--pg-url` and dropped afterwards) or a fresh SQLite file, with the WeChat
//! simulator in this process (so the simulator's memory is not counted as miniauth's),
//! then plays `--clients` concurrent mini programs through four scenarios and measures,
//! on the same PostgreSQL, `pgbench` with a one-row INSERT at the same concurrency: the
//! durable write a durable login cannot beat. It also measures login latency on an
//! account with a long history against fresh accounts, the server's peak memory, and
//! `miniauth projections rebuild` when the build has it.
//!
//! Loopback only, bounded in count and time. See docs/benchmarks.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use miniauth_domain::AppId;
use miniauth_wechat::sim::{Faults, RunningSimulator, SimApp, SimConfig};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Connection;
use tower::ServiceExt;

use miniauth::config::Config;

/// Upper bounds, so that a typo cannot turn the tool into a denial of service.
const MAX_CLIENTS: usize = 256;
const MAX_DURATION_SECS: u64 = 300;
const MAX_REQUESTS: u64 = 1_000_000;
const MAX_HISTORY: u64 = 100_000;
/// Building the long history stops here even if it is not complete (reported).
const HISTORY_TIME_LIMIT: Duration = Duration::from_secs(300);
/// Concurrent logins that build the long history (one account: they take turns).
const HISTORY_CONCURRENCY: usize = 8;
/// How long the server gets to answer `/healthz` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A client gives up after this many failures in a row (the server is gone).
const MAX_CONSECUTIVE_ERRORS: u32 = 100;
/// The evidence runs of pgbench are shorter than the ceiling run.
const EVIDENCE_SECS: u64 = 10;
/// The bench app (`wx` + 16 letters or digits).
const BENCH_APPID: &str = "wxbench00000000001";
/// The pgbench advisory lock id: any constant stands for the store's global one.
const PGBENCH_LOCK: i64 = 7_007;

/// The store the server under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server of `--pg-url`.
    Postgres,
}

/// What to run and how hard.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The store of the server under test.
    #[arg(long, value_enum, default_value = "postgres")]
    pub store: StoreKind,
    /// Concurrent simulated mini program clients (and pgbench clients).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds per scenario (and for the pgbench ceiling).
    #[arg(long, default_value_t = 15)]
    pub duration_secs: u64,
    /// Stop a scenario after this many operations, if that comes before the duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// A PostgreSQL URL with the right to create databases; the bench creates a fresh
    /// database on its server and drops it afterwards.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub pg_url: String,
    /// The miniauth binary to start (default: `miniauth` next to this executable).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// The pgbench binary.
    #[arg(long, default_value = "/usr/bin/pgbench")]
    pub pgbench: PathBuf,
    /// Skip the pgbench ceiling.
    #[arg(long)]
    pub no_pgbench: bool,
    /// Logins that build the long history of one account (0 skips the history check).
    #[arg(long, default_value_t = 10_000)]
    pub history: u64,
    /// Sequential logins timed on each of the long-history and the fresh accounts.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// The server's connection pool (default: the configuration's `store.max_connections`).
    #[arg(long)]
    pub pool: Option<u32>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The whole report (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine the run was on.
    pub machine: Machine,
    /// The store under test.
    pub store: StoreKind,
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

/// Samples `pg_stat_activity` of one database every 20 ms: where its backends spend
/// their time (running, waiting on a lock, flushing WAL, or idle in a transaction while
/// the client works).
struct WaitSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(BTreeMap<String, u64>, u64)>,
}

impl WaitSampler {
    async fn start(url: Option<&str>) -> Option<Self> {
        let mut conn = connect_pg(url?).await.ok()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            let mut samples = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let states: Result<Vec<String>, _> = sqlx::query_scalar(
                    "SELECT CASE WHEN state = 'idle' THEN 'idle' \
                     WHEN state LIKE 'idle in transaction%' THEN 'idle in transaction (waiting for the client)' \
                     WHEN wait_event IS NULL THEN 'running' \
                     ELSE wait_event_type || ':' || wait_event END \
                     FROM pg_stat_activity WHERE datname = current_database() \
                     AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                )
                .fetch_all(&mut conn)
                .await;
                if let Ok(states) = states {
                    samples += 1;
                    for state in states {
                        *counts.entry(state).or_default() += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            conn.close().await.ok();
            (counts, samples)
        });
        Some(Self { stop, task })
    }

    async fn stop(self) -> Vec<WaitShare> {
        self.stop.store(true, Ordering::Relaxed);
        let Ok((counts, samples)) = self.task.await else {
            return Vec::new();
        };
        let total: u64 = counts.values().sum();
        let mut shares: Vec<WaitShare> = counts
            .into_iter()
            .map(|(state, n)| WaitShare {
                state,
                percent: n as f64 * 100.0 / total.max(1) as f64,
                mean_backends: n as f64 / samples.max(1) as f64,
            })
            .collect();
        shares.sort_by(|a, b| b.percent.total_cmp(&a.percent));
        shares
    }
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

/// Runs the benchmark and prints the report (a table, or JSON with `--json`).
pub async fn run(config: &Config, args: BenchArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let pool = args.pool.unwrap_or(config.store.max_connections).max(1);
    let report = Bench::run(&args, pool).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}

fn validate(args: &BenchArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        bail!("--clients must be 1 to {MAX_CLIENTS}");
    }
    if args.duration_secs == 0 || args.duration_secs > MAX_DURATION_SECS {
        bail!("--duration-secs must be 1 to {MAX_DURATION_SECS}");
    }
    if args.requests.is_some_and(|r| r == 0 || r > MAX_REQUESTS) {
        bail!("--requests must be 1 to {MAX_REQUESTS}");
    }
    if args.history > MAX_HISTORY {
        bail!("--history must be at most {MAX_HISTORY}");
    }
    if args.history > 0 && args.latency_samples == 0 {
        bail!("--latency-samples must be at least 1");
    }
    if args.latency_samples > 10_000 {
        bail!("--latency-samples must be at most 10000");
    }
    if !args.pg_url.starts_with("postgres://") && !args.pg_url.starts_with("postgresql://") {
        bail!("--pg-url must be a postgres:// URL");
    }
    if !is_loopback_url(&args.pg_url) {
        bail!("--pg-url must point at this machine (127.0.0.1, ::1 or localhost): the bench is loopback only");
    }
    Ok(())
}

/// Whether a `postgres://user@host:port/db` URL names a loopback host.
fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    matches!(host, "127.0.0.1" | "localhost" | "::1")
}

/// `postgres://u@h:p/old?x` with the database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or_default();
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// Everything one run set up, torn down whatever happens.
struct Bench {
    args: BenchArgs,
    pool: u32,
    dir: tempfile::TempDir,
    database: Option<Database>,
    simulator: Option<RunningSimulator>,
    server: Option<Server>,
    binary: PathBuf,
    config_path: PathBuf,
}

impl Bench {
    async fn run(args: &BenchArgs, pool: u32) -> anyhow::Result<Report> {
        let binary = find_binary(args.binary.as_deref())?;
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let config_path = dir.path().join("miniauth.toml");
        let mut bench = Bench {
            args: args.clone(),
            pool,
            dir,
            database: None,
            simulator: None,
            server: None,
            binary,
            config_path,
        };
        let outcome = bench.measure().await;
        bench.teardown().await;
        outcome
    }

    async fn teardown(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        if let Some(simulator) = self.simulator.take() {
            simulator.shutdown().await;
        }
        if let Some(database) = self.database.take() {
            if let Err(error) = database.drop_database().await {
                eprintln!(
                    "bench: could not drop the database {}: {error:#}",
                    database.name
                );
            }
        }
    }

    async fn measure(&mut self) -> anyhow::Result<Report> {
        let args = self.args.clone();
        let machine = machine();
        progress(&args, "setting up");
        let (store_url, postgres) = match args.store {
            StoreKind::Postgres => {
                let database = Database::create(&args.pg_url).await?;
                let info = database.info().await?;
                let url = database.url.clone();
                self.database = Some(database);
                (url, Some(info))
            }
            StoreKind::Sqlite => (
                format!("sqlite://{}", self.dir.path().join("miniauth.db").display()),
                None,
            ),
        };

        let appid = AppId::parse(BENCH_APPID).map_err(|e| anyhow::anyhow!("{}", e.reason))?;
        let secret = hex::encode(rand::random::<[u8; 16]>());
        let simulator = miniauth_wechat::sim::start(
            ([127, 0, 0, 1], 0).into(),
            SimConfig {
                apps: vec![SimApp {
                    appid: appid.clone(),
                    secret: miniauth_wechat::Secret::new(&secret),
                    unionid: false,
                }],
                faults: Faults::none(),
            },
        )
        .await
        .context("starting the WeChat simulator")?;
        let device = Device {
            router: simulator.simulator().router(),
            appid: appid.clone(),
        };
        let listen = free_port()?;
        std::fs::write(
            &self.config_path,
            server_config(
                &store_url,
                self.pool,
                self.dir.path(),
                &simulator.base_url(),
                &secret,
                listen,
            ),
        )
        .context("writing the server's configuration")?;
        self.simulator = Some(simulator);

        let mut pgbench = Vec::new();
        if let (Some(database), false) = (&self.database, args.no_pgbench) {
            progress(&args, "pgbench: one-row INSERT (the ceiling)");
            database.prepare_pgbench().await?;
            let scripts = pgbench_scripts();
            for (i, (name, script)) in scripts.iter().enumerate() {
                let seconds = if i == 0 {
                    args.duration_secs
                } else {
                    args.duration_secs.min(EVIDENCE_SECS)
                };
                if i > 0 {
                    progress(&args, &format!("pgbench: {name}"));
                }
                let waits = WaitSampler::start(Some(&database.url)).await;
                let (binary, url, dir) = (
                    args.pgbench.clone(),
                    database.url.clone(),
                    self.dir.path().to_owned(),
                );
                let (name, script, clients) = (name.to_string(), script.clone(), args.clients);
                let mut result = tokio::task::spawn_blocking(move || {
                    run_pgbench(&binary, &url, &dir, i, &name, &script, clients, seconds)
                })
                .await??;
                if let Some(sampler) = waits {
                    result.postgres_waits = sampler.stop().await;
                }
                pgbench.push(result);
            }
        }
        let ceiling = pgbench.first().map(|p| p.tps);

        progress(&args, "starting miniauth");
        let server = Server::start(&self.binary, &self.config_path, self.dir.path(), listen)?;
        let pid = server.pid();
        self.server = Some(server);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(args.clients * 2)
            .timeout(Duration::from_secs(30))
            .build()?;
        let base = format!("http://{listen}");
        wait_healthy(&http, &base, self.server.as_mut().expect("just set")).await?;
        let api = Api {
            http: http.clone(),
            base: base.clone(),
            appid: appid.clone(),
        };

        let sampler = RssSampler::start(pid);
        let mut clients: Vec<ClientState> =
            (0..args.clients).map(|_| ClientState::default()).collect();
        let phones = Arc::new(AtomicU64::new(0));
        let limit = Limit::new(args.duration_secs, args.requests);

        let ctx = Arc::new(Ctx {
            server_pid: pid,
            database_url: self.database.as_ref().map(|d| d.url.clone()),
            api: api.clone(),
            device: device.clone(),
            phones: phones.clone(),
        });
        progress(&args, "scenario: first login + phone registration");
        let (result, back) = scenario(&ctx, Op::Register, clients, limit).await;
        let mut scenarios = vec![result];
        clients = back;
        // Every client needs accounts of its own for the next scenarios.
        let mut members: Vec<Member> = clients
            .iter_mut()
            .flat_map(|c| c.members.drain(..))
            .collect();
        while members.len() < args.clients {
            let mut state = ClientState::default();
            register(&api, &device, &phones, &mut state).await?;
            members.append(&mut state.members);
        }
        for (i, member) in members.into_iter().enumerate() {
            clients[i % args.clients].members.push(member);
        }

        progress(&args, "scenario: returning-user login");
        let (result, back) = scenario(&ctx, Op::Returning, clients, limit).await;
        scenarios.push(result);
        clients = back;
        // The ticket grant needs the newest session's ticket: log in once if missing.
        for state in &mut clients {
            if state.members.first().is_some_and(|m| m.ticket.is_none()) {
                state.next = 0;
                returning(&api, &device, state).await?;
            }
        }

        progress(&args, "scenario: ticket → token");
        let (result, back) = scenario(&ctx, Op::Ticket, clients, limit).await;
        scenarios.push(result);
        clients = back;

        progress(&args, "scenario: refresh");
        let (result, _) = scenario(&ctx, Op::Refresh, clients, limit).await;
        scenarios.push(result);

        let max_rss_sampled_kib = sampler.stop().await;
        let hwm_under_load_kib = read_status(pid).map(|s| s.hwm_kib);
        for scenario in &mut scenarios {
            scenario.ratio_to_pgbench = ceiling
                .filter(|c| *c > 0.0)
                .map(|c| scenario.per_second / c);
        }

        let history = if args.history > 0 {
            progress(
                &args,
                &format!("history: {} logins of one account", args.history),
            );
            Some(history(&api, &device, &phones, args.history, args.latency_samples).await?)
        } else {
            None
        };
        let memory = MemoryResult {
            hwm_under_load_kib,
            max_rss_sampled_kib,
            hwm_final_kib: read_status(pid).map(|s| s.hwm_kib),
        };

        if let Some(server) = self.server.take() {
            server.stop();
        }
        let rebuild = self.rebuild(&store_url).await;
        let mut report = Report {
            machine,
            store: args.store,
            clients: args.clients,
            pool: self.pool,
            duration_secs: args.duration_secs,
            postgres,
            pgbench,
            scenarios,
            history,
            memory,
            rebuild,
            targets: Vec::new(),
        };
        report.targets = targets(&report);
        Ok(report)
    }

    /// Times `miniauth projections rebuild` when this build has the subcommand.
    async fn rebuild(&self, store_url: &str) -> RebuildResult {
        let not_measured = |note: String| RebuildResult {
            measured: false,
            events: 0,
            seconds: 0.0,
            events_per_second: 0.0,
            note,
        };
        let help = Command::new(&self.binary)
            .arg("--help")
            .stdin(Stdio::null())
            .output();
        let has_it = help
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("projections"))
            .unwrap_or(false);
        if !has_it {
            return not_measured(
                "not measured: this build has no `miniauth projections rebuild`".into(),
            );
        }
        progress(&self.args, "projections rebuild");
        let events = match count_events(store_url).await {
            Ok(n) => n,
            Err(error) => return not_measured(format!("not measured: {error:#}")),
        };
        let started = Instant::now();
        let output = Command::new(&self.binary)
            .args(["projections", "rebuild", "--config"])
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .output();
        let wall = started.elapsed().as_secs_f64();
        match output {
            Ok(o) if o.status.success() => {
                let stdout = String::from_utf8_lossy(&o.stdout);
                match parse_rebuild(&stdout) {
                    Some((events, seconds)) => RebuildResult {
                        measured: true,
                        events,
                        seconds,
                        events_per_second: events as f64 / seconds.max(1e-9),
                        note: format!(
                            "timed by the subcommand (the rebuild itself); {wall:.2} s wall clock with process start and migrations"
                        ),
                    },
                    None => RebuildResult {
                        measured: true,
                        events,
                        seconds: wall,
                        events_per_second: events as f64 / wall.max(1e-9),
                        note: "wall clock of the subcommand: process start and migrations included".into(),
                    },
                }
            }
            Ok(o) => not_measured(format!(
                "not measured: `projections rebuild` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(error) => not_measured(format!("not measured: {error}")),
        }
    }
}

fn progress(args: &BenchArgs, text: &str) {
    if !args.json {
        eprintln!("bench: {text}…");
    }
}

/// The miniauth binary to start: `--binary`, or the `miniauth` that cargo builds into
/// the same `target/<profile>` directory as this executable.
fn find_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_owned());
        }
        bail!("--binary {}: no such file", path.display());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe.parent().context("this executable has no directory")?;
    let candidate = dir.join(format!("miniauth{}", std::env::consts::EXE_SUFFIX));
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "no miniauth binary next to {}: build it (cargo build --release -p miniauth) or pass --binary",
        exe.display()
    )
}

fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// The server's configuration: the given store, the simulator as WeChat, one app with
/// automatic registration, a random server key and admin token.
fn server_config(
    store_url: &str,
    pool: u32,
    data_dir: &Path,
    simulator: &str,
    secret: &str,
    listen: std::net::SocketAddr,
) -> String {
    let server_key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let admin = hex::encode(rand::random::<[u8; 16]>());
    let toml_str = |s: &str| toml::Value::String(s.to_owned()).to_string();
    format!(
        r#"[server]
listen = "{listen}"

[store]
url = {url}
max_connections = {pool}
data_dir = {dir}
server_key = "{server_key}"

[wechat]
api_base = {simulator}

[[apps]]
appid = "{BENCH_APPID}"
secret = "{secret}"
registration = "auto"

[admin]
token = "{admin}"

[log]
level = "warn"
"#,
        url = toml_str(store_url),
        dir = toml_str(&data_dir.display().to_string()),
        simulator = toml_str(simulator),
    )
}

/// A fresh PostgreSQL database, dropped at the end.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!(
            "miniauth_bench_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut conn = connect_pg(admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating the database {name}"))?;
        // The server's postmaster is our backend's parent: count only its processes as
        // PostgreSQL's CPU (other clusters on the machine are not this benchmark's).
        if let Ok(backend) = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
        {
            if let Some(parent) = u32::try_from(backend).ok().and_then(parent_pid) {
                let _ = POSTMASTER.set(parent);
            }
        }
        conn.close().await.ok();
        Ok(Self {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        })
    }

    async fn info(&self) -> anyhow::Result<PostgresInfo> {
        let mut conn = connect_pg(&self.url).await?;
        let version: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(&mut conn)
            .await?;
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT name, setting, unit FROM pg_settings WHERE name IN \
             ('synchronous_commit', 'fsync', 'wal_sync_method', 'full_page_writes', \
              'commit_delay', 'commit_siblings', 'shared_buffers', 'max_connections', \
              'wal_level', 'wal_buffers', 'max_wal_size', 'checkpoint_timeout') ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await?;
        conn.close().await.ok();
        Ok(PostgresInfo {
            version,
            settings: rows
                .into_iter()
                .map(|(name, setting, unit)| {
                    let value = match unit {
                        Some(unit) => format!("{setting} × {unit}"),
                        None => setting,
                    };
                    (name, value)
                })
                .collect(),
        })
    }

    async fn prepare_pgbench(&self) -> anyhow::Result<()> {
        let mut conn = connect_pg(&self.url).await?;
        for statement in [
            "CREATE TABLE bench_one_row (id bigserial PRIMARY KEY, payload text NOT NULL, \
             created_at timestamptz NOT NULL DEFAULT now())",
            "CREATE TABLE bench_state (id bigint PRIMARY KEY, payload text NOT NULL)",
        ] {
            sqlx::query(statement)
                .execute(&mut conn)
                .await
                .context("creating the pgbench tables")?;
        }
        conn.close().await.ok();
        Ok(())
    }

    async fn drop_database(&self) -> anyhow::Result<()> {
        let mut conn = connect_pg(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        conn.close().await.ok();
        Ok(())
    }
}

async fn connect_pg(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url))
        .await
        .map_err(|_| anyhow::anyhow!("PostgreSQL did not answer within 10 s"))?
        .with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {} (is it running? pass --pg-url, or --store sqlite)",
                miniauth::wiring::redact_url(url)
            )
        })
}

async fn count_events(store_url: &str) -> anyhow::Result<u64> {
    let query = "SELECT COUNT(*) FROM events";
    let n: i64 = if store_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(store_url).await?;
        sqlx::query_scalar(query).fetch_one(&mut conn).await?
    } else {
        let mut conn = connect_pg(store_url).await?;
        sqlx::query_scalar(query).fetch_one(&mut conn).await?
    };
    Ok(u64::try_from(n).unwrap_or_default())
}

/// The pgbench scripts: the ceiling, then two that isolate the store's commit pattern.
fn pgbench_scripts() -> Vec<(&'static str, String)> {
    let insert = "INSERT INTO bench_one_row (payload) VALUES ('one durable row');";
    vec![
        ("one-row INSERT (the ceiling)", format!("{insert}\n")),
        (
            "one-row INSERT under one global advisory lock",
            format!("BEGIN;\nSELECT pg_advisory_xact_lock({PGBENCH_LOCK});\n{insert}\nCOMMIT;\n"),
        ),
        (
            "the store's append: event row and state row under the global lock",
            // As adapters/store does per command: one transaction under the global
            // advisory lock (event row, state row). The read models follow in a
            // background catch-up, outside the request.
            format!(
                "BEGIN;\nSELECT pg_advisory_xact_lock({PGBENCH_LOCK});\n{insert}\n\
                 INSERT INTO bench_state VALUES (:client_id, 'state') ON CONFLICT (id) DO UPDATE SET payload = excluded.payload;\n\
                 COMMIT;\n"
            ),
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
fn run_pgbench(
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
    let cpu_before = CpuSnapshot::take(None);
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
    let cpu = CpuSnapshot::take(None).since(&cpu_before, transactions);
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

/// `rebuilt the read models from 18650 events in 0.19 s (98000 events/s)` → (events, s).
fn parse_rebuild(output: &str) -> Option<(u64, f64)> {
    let rest = output.split("from ").nth(1)?;
    let mut words = rest.split_whitespace();
    let events = words.next()?.parse().ok()?;
    if words.next()? != "events" || words.next()? != "in" {
        return None;
    }
    let seconds = words.next()?.parse().ok()?;
    Some((events, seconds))
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

fn machine() -> Machine {
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

/// The server under test, a child process; killed if dropped while running.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(
        binary: &Path,
        config: &Path,
        dir: &Path,
        listen: std::net::SocketAddr,
    ) -> anyhow::Result<Self> {
        let log = dir.join("server.log");
        let file = std::fs::File::create(&log)?;
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("MINIAUTH_CONFIG")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {} on {listen}", binary.display()))?;
        Ok(Self { child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "miniauth exited ({status}): {}",
                std::fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .trim()
            )),
            _ => None,
        }
    }

    /// SIGTERM (graceful), then SIGKILL after 10 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn wait_healthy(
    http: &reqwest::Client,
    base: &str,
    server: &mut Server,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(why) = server.exited() {
            bail!("{why}");
        }
        let ok = http
            .get(format!("{base}/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("miniauth did not answer /healthz at {base} within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The postmaster of the benchmark's PostgreSQL server, once known.
static POSTMASTER: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// The parent of a process, from /proc/<pid>/stat.
fn parent_pid(pid: u32) -> Option<u32> {
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
struct CpuSnapshot {
    server: u64,
    postgres: u64,
    bench: u64,
    machine_busy: u64,
    machine_total: u64,
}

impl CpuSnapshot {
    fn take(server_pid: Option<u32>) -> Self {
        let mut snapshot = Self {
            server: server_pid.and_then(process_ticks).unwrap_or(0),
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
    fn since(&self, before: &Self, ops: u64) -> Option<CpuUse> {
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
struct ProcStatus {
    rss_kib: u64,
    hwm_kib: u64,
}

fn read_status(pid: u32) -> Option<ProcStatus> {
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
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Option<u64>>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
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

    async fn stop(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.ok().flatten()
    }
}

/// The mini program's side of the simulator, called in-process (no socket), so that
/// the clients' own WeChat calls cost the machine as little as possible.
#[derive(Clone)]
struct Device {
    router: axum::Router,
    appid: AppId,
}

impl Device {
    async fn call(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let request = Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))?;
        let response = self.router.clone().oneshot(request).await?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        if !status.is_success() {
            bail!(
                "simulator {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    async fn create_user(&self, phone: &str) -> anyhow::Result<u64> {
        let answer = self
            .call(
                "/device/users",
                json!({ "nickname": "bench", "phone": phone, "country_code": "86" }),
            )
            .await?;
        answer["user_id"].as_u64().context("simulator: no user_id")
    }

    async fn login(&self, user: u64) -> anyhow::Result<String> {
        let answer = self
            .call(
                &format!("/device/users/{user}/login"),
                json!({ "appid": self.appid.as_str() }),
            )
            .await?;
        Ok(answer["code"]
            .as_str()
            .context("simulator: no code")?
            .to_owned())
    }

    async fn phone_code(&self, user: u64) -> anyhow::Result<String> {
        let answer = self
            .call(
                &format!("/device/users/{user}/phone"),
                json!({ "appid": self.appid.as_str() }),
            )
            .await?;
        Ok(answer["code"]
            .as_str()
            .context("simulator: no phone code")?
            .to_owned())
    }
}

/// miniauth's HTTP API, as the mini program front end calls it.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    appid: AppId,
}

impl Api {
    /// POSTs JSON; returns the answer and how long miniauth took.
    async fn post(
        &self,
        path: &str,
        body: Value,
        want: StatusCode,
    ) -> anyhow::Result<(Value, Duration)> {
        let started = Instant::now();
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let answer = response.json::<Value>().await.unwrap_or(Value::Null);
        let elapsed = started.elapsed();
        if status != want {
            let code = answer["code"].as_str().unwrap_or("?");
            bail!("POST {path}: {status} {code}");
        }
        Ok((answer, elapsed))
    }

    async fn login(&self, code: &str) -> anyhow::Result<(Value, Duration)> {
        self.post(
            &format!("/v1/apps/{}/sessions", self.appid),
            json!({ "code": code }),
            StatusCode::OK,
        )
        .await
    }
}

/// One account a client owns: its simulator user and its newest ticket and refresh token.
#[derive(Debug, Clone)]
struct Member {
    sim_user: u64,
    ticket: Option<String>,
    refresh: Option<String>,
}

/// What a client carries from one operation (and scenario) to the next.
#[derive(Debug, Default)]
struct ClientState {
    members: Vec<Member>,
    next: usize,
}

fn text(value: &Value, what: &str) -> anyhow::Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the answer has no {what}"))
}

/// First login of a new WeChat user, then the phone button: a new business user.
/// Times the two miniauth calls (not the simulator's device calls between them).
async fn register(
    api: &Api,
    device: &Device,
    phones: &AtomicU64,
    state: &mut ClientState,
) -> anyhow::Result<Duration> {
    let phone = format!("139{:08}", phones.fetch_add(1, Ordering::Relaxed));
    let user = device.create_user(&phone).await?;
    let code = device.login(user).await?;
    let (session, first) = api.login(&code).await?;
    if session["bound"] != json!(false) {
        bail!("a new WeChat user came back bound");
    }
    let ticket = text(&session["ticket"], "ticket")?;
    let phone_code = device.phone_code(user).await?;
    let (registered, second) = api
        .post(
            &format!("/v1/apps/{}/phone", api.appid),
            json!({ "ticket": ticket, "code": phone_code }),
            StatusCode::OK,
        )
        .await?;
    if registered["registered"] != json!(true) {
        bail!("a new phone under policy auto did not register a user");
    }
    state.members.push(Member {
        sim_user: user,
        ticket: None,
        refresh: registered["tokens"]["refresh_token"]
            .as_str()
            .map(str::to_owned),
    });
    Ok(first + second)
}

/// A bound user comes back: one round trip gives tokens.
async fn returning(
    api: &Api,
    device: &Device,
    state: &mut ClientState,
) -> anyhow::Result<Duration> {
    let index = state.next % state.members.len().max(1);
    state.next = state.next.wrapping_add(1);
    let member = state
        .members
        .get_mut(index)
        .context("this client has no account")?;
    let code = device.login(member.sim_user).await?;
    let (answer, elapsed) = api.login(&code).await?;
    if answer["bound"] != json!(true) || !answer["tokens"].is_object() {
        bail!("a returning bound user got no tokens");
    }
    member.ticket = Some(text(&answer["ticket"], "ticket")?);
    member.refresh = Some(text(&answer["tokens"]["refresh_token"], "refresh_token")?);
    Ok(elapsed)
}

/// The newest session's ticket for tokens (the ticket stays valid; no WeChat call).
async fn ticket_grant(api: &Api, state: &mut ClientState) -> anyhow::Result<Duration> {
    let ticket = state
        .members
        .first()
        .and_then(|m| m.ticket.clone())
        .context("this client has no ticket")?;
    let (answer, elapsed) = api
        .post(
            "/v1/token",
            json!({ "grant_type": "ticket", "ticket": ticket }),
            StatusCode::OK,
        )
        .await?;
    text(&answer["access_token"], "access_token")?;
    Ok(elapsed)
}

/// Rotates the client's refresh token (each answer carries the next one).
async fn refresh(api: &Api, state: &mut ClientState) -> anyhow::Result<Duration> {
    let index = state.next % state.members.len().max(1);
    state.next = state.next.wrapping_add(1);
    let member = state
        .members
        .get_mut(index)
        .context("this client has no account")?;
    let token = member.refresh.clone().context("no refresh token")?;
    let (answer, elapsed) = api
        .post(
            "/v1/token",
            json!({ "grant_type": "refresh_token", "refresh_token": token }),
            StatusCode::OK,
        )
        .await?;
    member.refresh = Some(text(&answer["refresh_token"], "refresh_token")?);
    Ok(elapsed)
}

/// How long, and how many operations, one scenario may take.
#[derive(Debug, Clone, Copy)]
struct Limit {
    duration: Duration,
    requests: Option<u64>,
}

impl Limit {
    fn new(duration_secs: u64, requests: Option<u64>) -> Self {
        Self {
            duration: Duration::from_secs(duration_secs),
            requests,
        }
    }
}

/// What the clients of one scenario do.
#[derive(Debug, Clone, Copy)]
enum Op {
    Register,
    Returning,
    Ticket,
    Refresh,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Register => "first login + phone registration",
            Op::Returning => "returning-user login (one round trip)",
            Op::Ticket => "ticket → token",
            Op::Refresh => "refresh (rotation)",
        }
    }
}

/// What every client shares.
struct Ctx {
    server_pid: u32,
    database_url: Option<String>,
    api: Api,
    device: Device,
    phones: Arc<AtomicU64>,
}

impl Ctx {
    async fn perform(&self, op: Op, state: &mut ClientState) -> anyhow::Result<Duration> {
        match op {
            Op::Register => register(&self.api, &self.device, &self.phones, state).await,
            Op::Returning => returning(&self.api, &self.device, state).await,
            Op::Ticket => ticket_grant(&self.api, state).await,
            Op::Refresh => refresh(&self.api, state).await,
        }
    }
}

/// Runs one operation in a loop on every client until the limit; returns the figures
/// and the clients' state.
async fn scenario(
    ctx: &Arc<Ctx>,
    op: Op,
    clients: Vec<ClientState>,
    limit: Limit,
) -> (ScenarioResult, Vec<ClientState>) {
    let name = op.name();
    let issued = Arc::new(AtomicU64::new(0));
    let waits = WaitSampler::start(ctx.database_url.as_deref()).await;
    let cpu_before = CpuSnapshot::take(Some(ctx.server_pid));
    let started = Instant::now();
    let deadline = started + limit.duration;
    let mut tasks = Vec::with_capacity(clients.len());
    for mut state in clients {
        let (ctx, issued) = (ctx.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut in_a_row = 0;
            while Instant::now() < deadline
                && limit
                    .requests
                    .is_none_or(|max| issued.fetch_add(1, Ordering::Relaxed) < max)
            {
                match ctx.perform(op, &mut state).await {
                    Ok(elapsed) => {
                        latencies.push(elapsed.as_micros() as u64);
                        in_a_row = 0;
                    }
                    Err(error) => {
                        errors += 1;
                        in_a_row += 1;
                        first_error.get_or_insert_with(|| format!("{error:#}"));
                        if in_a_row >= MAX_CONSECUTIVE_ERRORS {
                            break;
                        }
                    }
                }
            }
            (latencies, errors, first_error, state)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut states = Vec::new();
    for task in tasks {
        match task.await {
            Ok((l, e, f, s)) => {
                latencies.extend(l);
                errors += e;
                if first_error.is_none() {
                    first_error = f;
                }
                states.push(s);
            }
            Err(error) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("a client task failed: {error}"));
                states.push(ClientState::default());
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuSnapshot::take(Some(ctx.server_pid)).since(&cpu_before, latencies.len() as u64);
    let postgres_waits = match waits {
        Some(sampler) => sampler.stop().await,
        None => Vec::new(),
    };
    latencies.sort_unstable();
    let ms = |p: f64| percentile(&latencies, p) as f64 / 1000.0;
    (
        ScenarioResult {
            name: name.to_owned(),
            ops: latencies.len() as u64,
            errors,
            first_error,
            seconds,
            per_second: latencies.len() as f64 / seconds.max(1e-9),
            p50_ms: ms(50.0),
            p95_ms: ms(95.0),
            p99_ms: ms(99.0),
            ratio_to_pgbench: None,
            cpu,
            postgres_waits,
        },
        states,
    )
}

/// Nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mean_ms(values: &[u64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<u64>() as f64 / values.len() as f64 / 1000.0
}

/// Builds a long history on one account through the API (real logins), then times
/// logins of that account and of fresh accounts, interleaved so drift hits both alike.
async fn history(
    api: &Api,
    device: &Device,
    phones: &AtomicU64,
    logins: u64,
    samples: usize,
) -> anyhow::Result<HistoryResult> {
    let mut owner = ClientState::default();
    register(api, device, phones, &mut owner).await?;
    let member = owner.members.remove(0);
    // First login, phone verification, binding.
    const REGISTRATION_EVENTS: u64 = 3;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..HISTORY_CONCURRENCY {
        let (api, device, done) = (api.clone(), device.clone(), done.clone());
        let user = member.sim_user;
        tasks.push(tokio::spawn(async move {
            let mut failures = 0u32;
            while done.load(Ordering::Relaxed) < logins && started.elapsed() < HISTORY_TIME_LIMIT {
                let outcome = async {
                    let code = device.login(user).await?;
                    api.login(&code).await
                }
                .await;
                match outcome {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        failures = 0;
                    }
                    Err(error) => {
                        failures += 1;
                        if failures >= MAX_CONSECUTIVE_ERRORS {
                            return Err(error);
                        }
                    }
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let build_seconds = started.elapsed().as_secs_f64();
    let built = done.load(Ordering::Relaxed);

    let mut fresh = Vec::with_capacity(samples);
    let mut long = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut state = ClientState::default();
        register(api, device, phones, &mut state).await?;
        fresh.push(returning(api, device, &mut state).await?.as_micros() as u64);
        let code = device.login(member.sim_user).await?;
        long.push(api.login(&code).await?.1.as_micros() as u64);
    }
    let events = REGISTRATION_EVENTS + built;
    fresh.sort_unstable();
    long.sort_unstable();
    let history_p50_ms = percentile(&long, 50.0) as f64 / 1000.0;
    let fresh_p50_ms = percentile(&fresh, 50.0) as f64 / 1000.0;
    Ok(HistoryResult {
        events,
        build_seconds,
        build_logins_per_second: built as f64 / build_seconds.max(1e-9),
        history_p50_ms,
        fresh_p50_ms,
        history_mean_ms: mean_ms(&long),
        fresh_mean_ms: mean_ms(&fresh),
        ratio: history_p50_ms / fresh_p50_ms.max(1e-9),
        samples,
    })
}

/// Issue 7's targets against this run.
fn targets(report: &Report) -> Vec<TargetResult> {
    let mut out = Vec::new();
    let returning = report
        .scenarios
        .iter()
        .find(|s| s.name.starts_with("returning"));
    let ceiling = report.pgbench.first();
    out.push(match (returning, ceiling, report.store) {
        (Some(r), Some(c), StoreKind::Postgres) => TargetResult {
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
            let _ = writeln!(out, "  {name}: {top}");
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

    #[test]
    fn the_bench_appid_is_a_valid_appid() {
        assert!(AppId::parse(BENCH_APPID).is_ok());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 95.0), 95);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&values, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), 2);
    }

    #[test]
    fn pgbench_output_is_parsed() {
        let output = "pgbench (15.20)\ntransaction type: insert.sql\nscaling factor: 1\n\
            number of clients: 32\nlatency average = 13.570 ms\n\
            initial connection time = 40.1 ms\n\
            tps = 2358.126 (without initial connection time)\n";
        assert_eq!(parse_pgbench(output), Some((2358.126, 13.57)));
        assert_eq!(parse_pgbench("no figures here"), None);
    }

    #[test]
    fn rebuild_output_is_parsed() {
        assert_eq!(
            parse_rebuild("rebuilt the read models from 18650 events in 0.19 s (98000 events/s)\n"),
            Some((18650, 0.19))
        );
        assert_eq!(parse_rebuild("rebuilt nothing"), None);
    }

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
        let own = CpuSnapshot::take(Some(std::process::id()));
        assert!(own.machine_total > 0);
    }

    #[test]
    fn own_process_memory_is_readable() {
        let status = read_status(std::process::id()).expect("/proc/self/status");
        assert!(status.rss_kib > 0 && status.hwm_kib >= status.rss_kib);
    }

    #[test]
    fn database_urls_are_rewritten_and_checked_for_loopback() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b1"),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_database("postgres://u:p@localhost/x?sslmode=disable", "b2"),
            "postgres://u:p@localhost/b2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "b3"), "postgres://h/b3");
        assert!(is_loopback_url(
            "postgres://postgres@127.0.0.1:5432/postgres"
        ));
        assert!(is_loopback_url("postgresql://localhost/x"));
        assert!(is_loopback_url("postgres://u:p@[::1]:5432/x"));
        assert!(!is_loopback_url(
            "postgres://postgres@db.example.com:5432/x"
        ));
        assert!(!is_loopback_url("postgres://127.0.0.1.evil.com/x"));
    }

    fn args() -> BenchArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        Cli::parse_from(["bench"]).bench
    }

    #[test]
    fn defaults_are_the_issue_s_load_and_bounds_are_enforced() {
        let a = args();
        assert_eq!(a.clients, 32);
        assert_eq!(a.store, StoreKind::Postgres);
        assert!(validate(&a).is_ok());
        let bad = [
            BenchArgs {
                clients: 0,
                ..a.clone()
            },
            BenchArgs {
                clients: MAX_CLIENTS + 1,
                ..a.clone()
            },
            BenchArgs {
                duration_secs: 0,
                ..a.clone()
            },
            BenchArgs {
                requests: Some(0),
                ..a.clone()
            },
            BenchArgs {
                history: MAX_HISTORY + 1,
                ..a.clone()
            },
            BenchArgs {
                pg_url: "postgres://10.0.0.5/x".into(),
                ..a.clone()
            },
            BenchArgs {
                pg_url: "mysql://127.0.0.1/x".into(),
                ..a.clone()
            },
        ];
        for args in bad {
            assert!(validate(&args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn the_server_configuration_loads() {
        let dir = tempfile::tempdir().unwrap();
        let text = server_config(
            "sqlite:///tmp/x \"quoted\".db",
            7,
            dir.path(),
            "http://127.0.0.1:9",
            "s3cret",
            "127.0.0.1:1234".parse().unwrap(),
        );
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load_with_env(Some(&path), &[]).unwrap();
        assert_eq!(config.store.url, "sqlite:///tmp/x \"quoted\".db");
        assert_eq!(config.store.max_connections, 7);
        assert_eq!(config.apps[0].appid, BENCH_APPID);
        assert_eq!(config.wechat.api_base, "http://127.0.0.1:9");
        assert!(config.server_key(&[]).unwrap().is_some());
        assert!(config.admin_token(&[]).unwrap().is_some());
    }

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
        };
        let mut report = Report {
            machine: machine(),
            store: StoreKind::Postgres,
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
