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

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use miniauth_domain::AppId;
use miniauth_store::Engine;
use miniauth_wechat::sim::{Faults, RunningSimulator, SimApp, SimConfig};

use miniauth::config::Config;

use crate::clients::{
    history, register, scenario, Api, ClientState, Ctx, Device, Limit, Member, Op,
};
use crate::database::{count_events, is_loopback_url, Database, WaitSampler};
use crate::pgbench::{pgbench_scripts, run_pgbench};
use crate::procfs::{machine, read_status, RssSampler};
use crate::report::{render_table, targets, MemoryResult, RebuildResult, Report};
use crate::server::{find_binary, free_port, server_config, wait_healthy, Server};

/// Upper bounds, so that a typo cannot turn the tool into a denial of service.
const MAX_CLIENTS: usize = 256;
const MAX_DURATION_SECS: u64 = 300;
const MAX_REQUESTS: u64 = 1_000_000;
const MAX_HISTORY: u64 = 100_000;
/// The evidence runs of pgbench are shorter than the ceiling run.
const EVIDENCE_SECS: u64 = 10;
/// The bench app (`wx` + 16 letters or digits).
pub(crate) const BENCH_APPID: &str = "wxbench00000000001";

/// `--store`: the store's engines, each with what the bench runs it on.
fn store_parser() -> impl clap::builder::TypedValueParser<Value = Engine> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(Engine::ALL.map(|engine| {
        PossibleValue::new(engine.name()).help(match engine {
            Engine::Sqlite => "A fresh SQLite file in a temporary directory",
            Engine::Postgres => "A fresh database on the PostgreSQL server of `--pg-url`",
        })
    }))
    .try_map(|name| name.parse::<Engine>())
}

/// What to run and how hard.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The store of the server under test.
    #[arg(long, value_parser = store_parser(), default_value = "postgres")]
    pub store: Engine,
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
            Engine::Postgres => {
                let database = Database::create(&args.pg_url).await?;
                let info = database.info().await?;
                let url = database.url.clone();
                self.database = Some(database);
                (url, Some(info))
            }
            Engine::Sqlite => (
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
                    kind: Default::default(),
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
            server_pids: vec![pid],
            database_url: self.database.as_ref().map(|d| d.url.clone()),
            apis: vec![api.clone()],
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
        progress(&args, "scenario: GitEgg login + ticket → token");
        let (result, back) = scenario(&ctx, Op::Ticket, clients, limit).await;
        scenarios.push(result);
        clients = back;

        progress(&args, "scenario: refresh");
        let (result, back) = scenario(&ctx, Op::Refresh, clients, limit).await;
        scenarios.push(result);
        clients = back;

        // Scale-out: a second instance on the same database, the clients split
        // between the two (PostgreSQL only: SQLite has one writer).
        if self.database.is_some() {
            progress(&args, "scenario: returning-user login, two instances");
            let listen2 = free_port()?;
            let config = std::fs::read_to_string(&self.config_path)?.replace(
                &format!("listen = \"{listen}\""),
                &format!("listen = \"{listen2}\""),
            );
            let second_dir = self.dir.path().join("second");
            std::fs::create_dir_all(&second_dir)?;
            let config2 = second_dir.join("miniauth.toml");
            std::fs::write(&config2, config)?;
            let mut second = Server::start(&self.binary, &config2, &second_dir, listen2)?;
            let base2 = format!("http://{listen2}");
            let ready = wait_healthy(&http, &base2, &mut second).await;
            if let Err(error) = ready {
                second.stop();
                return Err(error);
            }
            let two = Arc::new(Ctx {
                server_pids: vec![pid, second.pid()],
                database_url: ctx.database_url.clone(),
                apis: vec![
                    api.clone(),
                    Api {
                        base: base2,
                        ..api.clone()
                    },
                ],
                device: device.clone(),
                phones: phones.clone(),
            });
            let (result, _) = scenario(&two, Op::Returning, clients, limit).await;
            second.stop();
            scenarios.push(result);
        }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_appid_is_a_valid_appid() {
        assert!(AppId::parse(BENCH_APPID).is_ok());
    }

    #[test]
    fn rebuild_output_is_parsed() {
        assert_eq!(
            parse_rebuild("rebuilt the read models from 18650 events in 0.19 s (98000 events/s)\n"),
            Some((18650, 0.19))
        );
        assert_eq!(parse_rebuild("rebuilt nothing"), None);
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
        assert_eq!(a.store, Engine::Postgres);
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
}
