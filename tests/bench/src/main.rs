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
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("miniauth-bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("miniauth-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    // The simulator runs in this process: its logs read as the server's would.
    miniauth::logging::init(&config.log);
    bench::run(&config, cli.bench).await
}
