//! The logs as an operator collects them: redirected, not on a terminal.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A log written to a file or a pipe must not carry ANSI colour escapes.
#[test]
fn logs_redirected_from_a_terminal_carry_no_colour() {
    // Given the simulator, whose start is logged at `info`, with standard error piped.
    let mut child = Command::new(env!("CARGO_BIN_EXE_miniauth"))
        .args(["sim", "--listen", "127.0.0.1:0"])
        .env_remove("MINIAUTH_CONFIG")
        .env("MINIAUTH_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting miniauth sim");
    let stderr = child.stderr.take().expect("piped standard error");

    // When it logs that it listens.
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut logged = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match received.recv_timeout(left) {
            Ok(line) if line.contains("WeChat simulator listening") => {
                logged = Some(line);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();

    // Then the line is plain text.
    let line = logged.expect("miniauth sim logged that it listens within 30 s");
    assert!(
        !line.contains('\u{1b}'),
        "an ANSI escape in a redirected log: {line:?}"
    );
}

/// The tools that do not serve print their answer and log only warnings and errors;
/// `--verbose` logs at the configured level.
#[test]
fn tools_that_do_not_serve_log_only_warnings_unless_verbose() {
    let run = |dir: &std::path::Path, verbose: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_miniauth"));
        if verbose {
            command.arg("--verbose");
        }
        let output = command
            .args(["audit", "verify"])
            .current_dir(dir)
            .env_remove("MINIAUTH_CONFIG")
            .env_remove("MINIAUTH_LOG")
            .output()
            .expect("running miniauth audit verify");
        assert!(output.status.success(), "{output:?}");
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // A new data directory: the server key is generated, which is logged at `info`.
    let quiet_dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = run(quiet_dir.path(), false);
    assert!(stdout.contains("OK: no event was edited"), "{stdout}");
    assert_eq!(stderr, "", "a quiet tool logged");

    let verbose_dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = run(verbose_dir.path(), true);
    assert!(stdout.contains("OK: no event was edited"), "{stdout}");
    assert!(stderr.contains("generated a new server key"), "{stderr}");
}
