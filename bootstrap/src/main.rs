//! The `miniauth` binary: reads the configuration, wires the adapters, runs a subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use miniauth_application::ports::Password;
use miniauth_application::{Actor, RequestContext};
use miniauth_domain::{AppId, OpenId, PhoneNumber, TenantId, UserId};

use miniauth::config::{self, Config};
use miniauth::wiring::SimulatorStart;
use miniauth::{audit, demo, import, logging, wiring};

/// WeChat Mini Program login, registration and binding, with an auditable event log.
#[derive(Debug, Parser)]
#[command(name = "miniauth", version)]
struct Cli {
    /// The configuration file (TOML). Without one: the embedded demo default.
    #[arg(long, global = true, env = "MINIAUTH_CONFIG")]
    config: Option<PathBuf>,
    /// Log at the configured level (`log.level`) also in the tools that do not serve
    /// (`users`, `erase`, `audit`, `migrate`, `projections`), which otherwise log only
    /// warnings and errors.
    #[arg(long, short, global = true)]
    verbose: bool,
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
        appid: AppId,
        /// The WeChat identity.
        #[arg(long)]
        openid: OpenId,
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
    /// Import another system's bindings and users (docs/migrating-from-gitegg.md).
    Import {
        #[command(subcommand)]
        command: import::ImportCommand,
    },
    /// Maintain the read models.
    Projections {
        #[command(subcommand)]
        command: audit::ProjectionsCommand,
    },
    /// Inspect and retry webhook deliveries.
    Webhooks {
        #[command(subcommand)]
        command: miniauth::webhooks::WebhooksCommand,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Add a user with account and password.
    Add {
        /// The login name.
        #[arg(long)]
        account: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Deprecated: the password on the command line is visible to every user of
        /// the machine (process list, shell history). Use --password-stdin or
        /// MINIAUTH_USER_PASSWORD.
        #[arg(long, hide = true)]
        password: Option<String>,
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
        tenant: Option<TenantId>,
    },
    /// Disable a user: no more logins, and every session they hold ends.
    Disable {
        /// The user's id.
        #[arg(long)]
        user_id: UserId,
    },
    /// Enable a disabled user again (their ended sessions stay ended).
    Enable {
        /// The user's id.
        #[arg(long)]
        user_id: UserId,
    },
}

/// The environment variable `users add` reads the password from.
const PASSWORD_ENV: &str = "MINIAUTH_USER_PASSWORD";

/// Where `users add` takes the password from: never from the command line if it can
/// help it (every user of the machine can read a process's arguments).
#[derive(Debug, PartialEq, Eq)]
enum PasswordSource {
    Stdin,
    Environment(String),
    Argument(String),
}

impl PasswordSource {
    fn choose(
        stdin: bool,
        environment: Option<String>,
        argument: Option<String>,
    ) -> anyhow::Result<Self> {
        match (stdin, environment, argument) {
            (true, None, None) => Ok(Self::Stdin),
            (false, Some(env), None) => Ok(Self::Environment(env)),
            (false, None, Some(arg)) => Ok(Self::Argument(arg)),
            (false, None, None) => anyhow::bail!(
                "the password is missing: pipe it with --password-stdin, or set {PASSWORD_ENV}"
            ),
            _ => anyhow::bail!(
                "give the password one way only: --password-stdin, {PASSWORD_ENV} or --password"
            ),
        }
    }

    /// The password; from `input`'s first line (without its line ending) for stdin.
    fn read(self, mut input: impl std::io::BufRead) -> anyhow::Result<String> {
        match self {
            Self::Environment(p) | Self::Argument(p) => Ok(p),
            Self::Stdin => {
                let mut line = String::new();
                input
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                let password = line.trim_end_matches(['\n', '\r']).to_owned();
                anyhow::ensure!(!password.is_empty(), "standard input held no password");
                Ok(password)
            }
        }
    }
}

fn main() -> ExitCode {
    miniauth::process::run_to_exit("miniauth", run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    let command = cli.command.unwrap_or(Command::Serve);
    // A tool run from a shell prints its answer; its log is for when something is off.
    let quiet = !cli.verbose && !matches!(command, Command::Serve | Command::Sim { .. });
    // The demo decides where its log goes: a server it starts logs to a file.
    if !matches!(command, Command::Demo(_)) {
        logging::init(&config.log, quiet);
    }
    match command {
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
            let built = wiring::build(&config, SimulatorStart::NotStarted).await?;
            built
                .service
                .erase(&RequestContext::system(Actor::Cli), &appid, &openid)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("erased the personal data of {appid}:{openid}; the history stays replayable");
            Ok(())
        }
        Command::Users { command } => users(&config, command).await,
        Command::Demo(args) => demo::run(&config, args).await,
        Command::Audit { command } => audit::run(&config, command).await,
        Command::Projections { command } => audit::projections(&config, command).await,
        Command::Import { command } => import::run(&config, command).await,
        Command::Webhooks { command } => miniauth::webhooks::run(&config, command).await,
    }
}

/// `miniauth users …`: the admin API's user management, on the command line.
async fn users(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add {
            account,
            password_stdin,
            password,
            mobile,
            country_code,
            nickname,
            tenant,
        } => {
            let source =
                PasswordSource::choose(password_stdin, std::env::var(PASSWORD_ENV).ok(), password)?;
            if matches!(source, PasswordSource::Argument(_)) {
                eprintln!(
                    "warning: --password is visible in the process list and shell history; \
                     use --password-stdin or {PASSWORD_ENV}"
                );
            }
            let password = source.read(std::io::stdin().lock())?;
            let built = wiring::build(config, SimulatorStart::NotStarted).await?;
            let tenant = match tenant {
                Some(tenant) => tenant,
                None => built
                    .service
                    .apps()
                    .default_tenant()
                    .context("no app configured")?
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
        }
        UsersCommand::Disable { user_id } => {
            let built = wiring::build(config, SimulatorStart::NotStarted).await?;
            let user = built
                .service
                .disable_user(user_id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("disabled user {}; their sessions are revoked", user.id);
        }
        UsersCommand::Enable { user_id } => {
            let built = wiring::build(config, SimulatorStart::NotStarted).await?;
            let user = built
                .service
                .enable_user(user_id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("enabled user {}", user.id);
        }
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let built = wiring::build(&config, SimulatorStart::Configured).await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("server.listen: cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    say(&format!("miniauth listening on http://{addr}"));
    if config.demo {
        say(&demo_banner(&config, &built));
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
    let purge = wiring::spawn_refresh_purge(built.store.clone(), built.clock.clone());
    let deliveries = built.webhooks.clone().map(|delivery| {
        miniauth::webhooks::spawn_delivery(
            delivery,
            std::time::Duration::from_millis(config.webhook_delivery.poll_interval_ms),
        )
    });
    // One shutdown signal for every listener.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics = match (config.server.metrics_listen, built.metrics_router.clone()) {
        (Some(listen), Some(router)) => {
            let metrics_listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("server.metrics_listen: cannot listen on {listen}"))?;
            say(&format!(
                "metrics on http://{}/metrics",
                metrics_listener.local_addr()?
            ));
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
    purge.abort();
    if let Some(deliveries) = deliveries {
        deliveries.abort();
    }
    if let Some(simulator) = built.simulator {
        simulator.shutdown().await;
    }
    built.store.close().await;
    Ok(())
}

/// Tells the operator something on standard output. A server must not end because
/// whoever started it closed that pipe (`println!` would panic on EPIPE).
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn demo_banner(config: &Config, built: &wiring::Built) -> String {
    let mut lines = vec![
        "demo mode: no configuration file, so miniauth runs its embedded default:".to_owned(),
        format!(
            "  store      {} (under {})",
            config.store.url,
            config.store.data_dir.display()
        ),
    ];
    if let Some(sim) = &built.simulator {
        lines.push(format!(
            "  WeChat     the simulator at {} (device API: docs/simulator.md)",
            sim.base_url()
        ));
    }
    lines.push(format!(
        "  demo apps  {} and {} (registration: auto; one Open Platform account)",
        config::DEMO_APPID,
        miniauth_wechat::sim::DEMO_SECOND_APPID
    ));
    if let Some(path) = &built.admin_token_file {
        lines.push(format!("  admin      bearer token in {}", path.display()));
    }
    lines.push("walk the flow:     miniauth demo   (or: cargo run --release -- demo)".to_owned());
    lines.push(
        "configure an app:  miniauth serve --config miniauth.toml (see docs/configuration.md)"
            .to_owned(),
    );
    lines.join("\n")
}

#[cfg(test)]
mod password_source_tests {
    use super::PasswordSource;

    #[test]
    fn the_password_comes_from_exactly_one_place() {
        assert_eq!(
            PasswordSource::choose(true, None, None).unwrap(),
            PasswordSource::Stdin
        );
        assert_eq!(
            PasswordSource::choose(false, Some("e".into()), None).unwrap(),
            PasswordSource::Environment("e".into())
        );
        assert_eq!(
            PasswordSource::choose(false, None, Some("a".into())).unwrap(),
            PasswordSource::Argument("a".into())
        );
        assert!(PasswordSource::choose(false, None, None).is_err());
        assert!(PasswordSource::choose(true, Some("e".into()), None).is_err());
        assert!(PasswordSource::choose(false, Some("e".into()), Some("a".into())).is_err());
    }

    #[test]
    fn stdin_gives_its_first_line_without_the_line_ending() {
        let read = |input: &str| PasswordSource::Stdin.read(input.as_bytes());
        assert_eq!(read("s3cret pass\r\nnext\n").unwrap(), "s3cret pass");
        assert_eq!(read("s3cret").unwrap(), "s3cret");
        assert!(read("\n").is_err());
        assert!(read("").is_err());
    }
}
