//! The tools that do not serve: they start no WeChat simulator.

use std::net::TcpListener;
use std::process::{Command, Stdio};

/// `users add` on the embedded default: the simulator's configured address is taken by
/// someone else, and the tool neither needs nor tries it.
#[test]
fn users_add_and_erase_start_no_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let miniauth = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_miniauth"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("MINIAUTH_CONFIG")
            .env_remove("MINIAUTH_LOG")
            .env("MINIAUTH__WECHAT__SIMULATOR_LISTEN", &taken)
            .env("MINIAUTH_USER_PASSWORD", "correct horse battery")
            .stdin(Stdio::null())
            .output()
            .expect("running miniauth")
    };
    // Verbose, so that a simulator's start would be logged.
    let added = miniauth(&["--verbose", "users", "add", "--account", "tool.user"]);
    assert!(added.status.success(), "{added:?}");
    assert!(
        String::from_utf8_lossy(&added.stdout).contains("added user"),
        "{added:?}"
    );
    let log = String::from_utf8_lossy(&added.stderr);
    assert!(log.contains("generated a new server key"), "{log}");
    assert!(
        !log.contains("simulator"),
        "a tool started a simulator: {log}"
    );

    // An identity that never logged in: a clear refusal, not a WeChat call.
    let erased = miniauth(&[
        "erase",
        "--appid",
        "wxdemo000000000001",
        "--openid",
        "oNeverLoggedIn",
    ]);
    assert_eq!(erased.status.code(), Some(1), "{erased:?}");
    assert!(
        String::from_utf8_lossy(&erased.stderr)
            .contains("no event was ever recorded for this appid and openid"),
        "{erased:?}"
    );
}

/// A stand-alone `demo` prints only its walkthrough; the server it starts logs to the
/// file it names.
#[test]
fn a_stand_alone_demo_prints_its_walkthrough_and_names_its_servers_log() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the demo starts its own server.
    let nobody = TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = nobody.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_miniauth"))
        .arg("demo")
        .current_dir(dir.path())
        .env_remove("MINIAUTH_CONFIG")
        .env_remove("MINIAUTH_LOG")
        .env("MINIAUTH__SERVER__LISTEN", &nobody)
        .stdin(Stdio::null())
        .output()
        .expect("running miniauth demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("demo complete"), "{stdout}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "log lines on the terminal"
    );
    let log = stdout
        .lines()
        .find_map(|line| line.strip_prefix("its log: "))
        .expect("the demo names its server's log");
    let logged = std::fs::read_to_string(log).expect("the named log exists");
    assert!(logged.contains("answered status=200"), "{logged}");
    assert!(!stdout.contains(" INFO "), "{stdout}");
    let _ = std::fs::remove_file(log);
}
