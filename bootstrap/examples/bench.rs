//! Runs `miniauth::bench` before the `miniauth bench` subcommand is wired: the same
//! arguments, e.g. `cargo run --release -p miniauth --example bench -- --clients 32`.
//! It starts `target/release/miniauth` (build it first) as the server under test.

use std::path::PathBuf;

use clap::Parser;
use miniauth::bench::{self, BenchArgs};
use miniauth::config::Config;

#[derive(Parser)]
#[command(name = "bench")]
struct Cli {
    /// The configuration file (default: the embedded default; only its pool size is used).
    #[arg(long, env = "MINIAUTH_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    bench: BenchArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench::run(&config, cli.bench))
}
