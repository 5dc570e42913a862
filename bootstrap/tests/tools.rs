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

/// A server whose standard output is closed as it starts (a supervisor that stopped
/// reading) keeps serving: its banner is not worth dying for.
#[test]
fn serve_keeps_serving_when_its_standard_output_is_closed() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_miniauth"))
        .current_dir(dir.path())
        .env_remove("MINIAUTH_CONFIG")
        .env("MINIAUTH_LOG", "warn")
        .env("MINIAUTH__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("MINIAUTH__WECHAT__SIMULATOR_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting miniauth");
    drop(child.stdout.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut answered = String::new();
    while std::time::Instant::now() < deadline {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ =
                stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let _ = stream.read_to_string(&mut answered);
            if answered.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Still alive a moment later (the banner was written by then).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        answered.starts_with("HTTP/1.1 200"),
        "no answer: {answered:?}"
    );
    assert!(alive, "the server ended");
}
