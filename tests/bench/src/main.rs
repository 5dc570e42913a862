//! `miniauth-bench`: the load tool, beside the product rather than inside the shipped
//! binary. It starts a built `miniauth` as the server under test (docs/benchmarks.md).

mod bench;
mod clients;
mod database;
mod pgbench;
mod procfs;
mod report;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use miniauth::config::Config;

/// Load-test a miniauth against the ceiling PostgreSQL sets (docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "miniauth-bench", version)]
struct Cli {
    /// The configuration file (TOML) the default `--pool` and the log level come from.
    /// Without one: the embedded default.
    #[arg(long, env = "MINIAUTH_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    bench: bench::BenchArgs,
}

fn main() -> ExitCode {
    miniauth::process::run_to_exit("miniauth-bench", run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    // The simulator runs in this process: its logs read as the server's would.
    miniauth::logging::init(&config.log, false);
    bench::run(&config, cli.bench).await
}
