//! The `miniauth` binary: reads the configuration, wires the adapters, runs a subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use miniauth_application::ports::Password;
use miniauth_application::RequestContext;
use miniauth_domain::{AppId, OpenId, PhoneNumber, TenantId};

use miniauth::config::{self, Config};
use miniauth::{audit, bench, demo, wiring};

/// WeChat Mini Program login, registration and binding, with an auditable event log.
#[derive(Debug, Parser)]
#[command(name = "miniauth", version)]
struct Cli {
    /// The configuration file (TOML). Without one: the embedded demo default.
    #[arg(long, global = true, env = "MINIAUTH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Serve the WeChat simulator (WeChat's endpoints, device and control API).
    Sim {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: std::net::SocketAddr,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Erase a WeChat identity's personal data (crypto-shredding) and record it.
    Erase {
        /// The app.
        #[arg(long)]
        appid: String,
        /// The WeChat identity.
        #[arg(long)]
        openid: String,
    },
    /// Manage business users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Play a mini program against a running miniauth and walk the whole flow.
    Demo(demo::DemoArgs),
    /// Answer auditors' questions from the event log, and prove it untampered.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Maintain the read models.
    Projections {
        #[command(subcommand)]
        command: audit::ProjectionsCommand,
    },
    /// Load-test a miniauth against the ceiling PostgreSQL sets (docs/benchmarks.md).
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Add a user with account and password.
    Add {
        /// The login name.
        #[arg(long)]
        account: String,
        /// The password (or set MINIAUTH_USER_PASSWORD).
        #[arg(long, env = "MINIAUTH_USER_PASSWORD", hide_env_values = true)]
        password: String,
        /// A mobile number (national digits).
        #[arg(long)]
        mobile: Option<String>,
        /// Its country calling code.
        #[arg(long, default_value = "86")]
        country_code: String,
        /// A display name.
        #[arg(long)]
        nickname: Option<String>,
        /// The tenant (default: the first app's).
        #[arg(long)]
        tenant: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("miniauth: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("miniauth: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    init_logging(&config);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Sim { listen } => {
            let env: Vec<(String, String)> = std::env::vars().collect();
            let apps = config.resolve_apps(&env)?;
            println!(
                "WeChat simulator on http://{listen} serving {} app(s); see docs/simulator.md",
                apps.len()
            );
            miniauth_wechat::sim::serve(listen, wiring::simulator_config(&apps)).await?;
            Ok(())
        }
        Command::Migrate => {
            let store = wiring::open_store(&config).await?;
            println!(
                "migrations applied to {}",
                wiring::redact_url(&config.store.url)
            );
            store.close().await;
            Ok(())
        }
        Command::Erase { appid, openid } => {
            let appid =
                AppId::parse(&appid).map_err(|e| anyhow::anyhow!("--appid: {}", e.reason))?;
            let openid =
                OpenId::parse(&openid).map_err(|e| anyhow::anyhow!("--openid: {}", e.reason))?;
            let built = wiring::build(&config, Some(ephemeral())).await?;
            built
                .service
                .erase(&RequestContext::system("cli"), &appid, &openid)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("erased the personal data of {appid}:{openid}; the history stays replayable");
            Ok(())
        }
        Command::Users {
            command:
                UsersCommand::Add {
                    account,
                    password,
                    mobile,
                    country_code,
                    nickname,
                    tenant,
                },
        } => {
            let built = wiring::build(&config, Some(ephemeral())).await?;
            let tenant = match tenant {
                Some(t) => {
                    TenantId::parse(&t).map_err(|e| anyhow::anyhow!("--tenant: {}", e.reason))?
                }
                None => built
                    .service
                    .apps()
                    .iter()
                    .next()
                    .context("no app configured")?
                    .tenant
                    .clone(),
            };
            let mobile = mobile
                .map(|m| PhoneNumber::new(&m, &country_code))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--mobile: {}", e.reason))?;
            let user = built
                .service
                .add_user(
                    &tenant,
                    &account,
                    &Password::new(password),
                    mobile.as_ref(),
                    nickname.as_deref(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("added user {} ({account}) in tenant {tenant}", user.id);
            Ok(())
        }
        Command::Demo(args) => demo::run(&config, args).await,
        Command::Audit { command } => audit::run(&config, command).await,
        Command::Projections { command } => audit::projections(&config, command).await,
        Command::Bench(args) => bench::run(&config, args).await,
    }
}

/// A free port for an in-process simulator a subcommand does not serve.
fn ephemeral() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let built = wiring::build(&config, None).await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("server.listen: cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    println!("miniauth listening on http://{addr}");
    if config.demo {
        print_demo_banner(&config, &built);
    }
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
    };
    // One shutdown signal for every listener.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics = match (config.server.metrics_listen, built.metrics_router.clone()) {
        (Some(listen), Some(router)) => {
            let metrics_listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("server.metrics_listen: cannot listen on {listen}"))?;
            println!(
                "metrics on http://{}/metrics",
                metrics_listener.local_addr()?
            );
            let mut stopped = stopped.clone();
            Some(tokio::spawn(miniauth_http::serve_with(
                metrics_listener,
                router,
                built.server_limits,
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                },
            )))
        }
        _ => None,
    };
    let api = miniauth_http::serve_with(listener, built.router, built.server_limits, async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    api.await?;
    if let Some(metrics) = metrics {
        metrics.await??;
    }
    if let Some(simulator) = built.simulator {
        simulator.shutdown().await;
    }
    built.store.close().await;
    Ok(())
}

fn print_demo_banner(config: &Config, built: &wiring::Built) {
    println!("demo mode: no configuration file, so miniauth runs its embedded default:");
    println!(
        "  store      {} (under {})",
        config.store.url,
        config.store.data_dir.display()
    );
    if let Some(sim) = &built.simulator {
        println!(
            "  WeChat     the simulator at {} (device API: docs/simulator.md)",
            sim.base_url()
        );
    }
    println!("  demo app   {} (registration: auto)", config::DEMO_APPID);
    if let Some(path) = &built.admin_token_file {
        println!("  admin      bearer token in {}", path.display());
    }
    println!("walk the flow:     miniauth demo   (or: cargo run --release -- demo)");
    println!("configure an app:  miniauth serve --config miniauth.toml (see docs/operations.md)");
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MINIAUTH_LOG")
        .unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
