//! The logs: a tracing subscriber on standard error, filtered by `MINIAUTH_LOG` or the
//! configuration's `log.level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSection};

/// Installs the subscriber once per process (a second call changes nothing).
///
/// `quiet` (the tools that do not serve, without `--verbose`) logs warnings and errors
/// only; `MINIAUTH_LOG`, when set, decides in every case.
///
/// Colour only when standard error is a terminal and `NO_COLOR` is unset: a log
/// redirected to a file or a collector must not carry ANSI escapes.
pub fn init(log: &LogSection, quiet: bool) {
    let level = if quiet { "warn" } else { log.level.as_str() };
    let filter = EnvFilter::try_from_env("MINIAUTH_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour());
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Whether the text logs are coloured. tracing-subscriber colours by default whatever
/// the writer is, and `with_ansi(true)` would override its `NO_COLOR` check.
fn colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

/// Installs the subscriber writing to the file at `path` (created or truncated), at the
/// configured level, without colour: for a server started by a tool whose own output is
/// for people (`miniauth demo`).
pub fn init_to_file(log: &LogSection, path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let filter =
        EnvFilter::try_from_env("MINIAUTH_LOG").unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false);
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Ok(())
}
