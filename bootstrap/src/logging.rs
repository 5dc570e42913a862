//! The logs: a tracing subscriber on standard error, filtered by `MINIAUTH_LOG` or the
//! configuration's `log.level`.

use tracing_subscriber::EnvFilter;

use crate::config::LogSection;

/// Installs the subscriber once per process (a second call changes nothing).
pub fn init(log: &LogSection) {
    let filter =
        EnvFilter::try_from_env("MINIAUTH_LOG").unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
