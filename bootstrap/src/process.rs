//! What both binaries (`miniauth`, `miniauth-bench`) do around their work: a runtime,
//! the work, and an exit code with the error's whole chain on stderr.

use std::future::Future;
use std::process::ExitCode;

/// Runs `work` on a multi-threaded runtime; `name` prefixes the error, if any.
pub fn run_to_exit(name: &str, work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}
