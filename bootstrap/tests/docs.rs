//! The documentation, executed: every shell example of README.md and docs/*.md runs,
//! in order, against the embedded default (`miniauth` with no configuration), and each
//! answer is checked against what the doc shows.
//!
//! How a doc marks its examples (also in the README, "Tests"):
//! * every ```` ```sh ```` block runs, unless its info string says `illustrative`;
//! * `# => 200 {"bound":false}` after a command shows its answer: an optional HTTP
//!   status (of the last `curl` before it) or `exit N`, then JSON (the answer must hold
//!   every field shown; `"…"` stands for any value, `…` inside a string for any text) or
//!   text (every line must appear, `…` for any text). Lines right below it that start
//!   with `#  ` continue it;
//! * without a status, every `curl` must answer 2xx and every command exit 0.
//!
//! The service listens on port 0 and its simulator too: the documented
//! `127.0.0.1:8080` and `127.0.0.1:9100` are replaced by the real addresses, and the
//! webhook receiver's `127.0.0.1:8090` by a free port. The service runs with the
//! introspection client and the webhook subscription docs/integration.md shows
//! ([`INTEGRATION`], as environment overrides, for the CLI too). Each doc
//! runs in a fresh shell in the service's working directory (where `data/` is), with
//! the `miniauth` binary on `PATH`; the service's state carries over from doc to doc,
//! so the sample people of the docs must not collide.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::Value;

/// The docs in the order a newcomer reads them.
const DOCS: &[&str] = &[
    "README.md",
    "docs/api.md",
    "docs/tokens.md",
    "docs/integration.md",
    "docs/audit.md",
    "docs/console.md",
    "docs/simulator.md",
    "docs/channels.md",
    "docs/configuration.md",
    "docs/operations.md",
    "docs/security.md",
    "docs/miniprogram.md",
    "docs/architecture.md",
    "docs/benchmarks.md",
];

/// The introspection client and the webhook subscription of docs/integration.md; the
/// receiver's port (`8090`) is replaced. Retries every half second at most and never
/// parks: the receiver starts long after the first events.
const INTEGRATION: &[(&str, &str)] = &[
    ("MINIAUTH__INTROSPECTION_CLIENTS__0__ID", "gateway"),
    (
        "MINIAUTH__INTROSPECTION_CLIENTS__0__SECRET",
        "gateway-secret-0123456789",
    ),
    ("MINIAUTH__WEBHOOKS__0__ID", "crm"),
    (
        "MINIAUTH__WEBHOOKS__0__URL",
        "http://127.0.0.1:8090/hooks/miniauth",
    ),
    (
        "MINIAUTH__WEBHOOKS__0__SECRET",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ),
    (
        "MINIAUTH__WEBHOOKS__0__EVENTS",
        "user_bound,unbound,personal_data_erased",
    ),
    ("MINIAUTH__WEBHOOK_DELIVERY__MAX_ATTEMPTS", "1000000"),
    ("MINIAUTH__WEBHOOK_DELIVERY__BACKOFF_INITIAL_MS", "100"),
    ("MINIAUTH__WEBHOOK_DELIVERY__BACKOFF_MAX_MS", "500"),
];

/// [`INTEGRATION`] with the receiver's real port.
fn integration_env(receiver: &str) -> Vec<(String, String)> {
    INTEGRATION
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.replace("127.0.0.1:8090", receiver)))
        .collect()
}

#[test]
fn every_documented_example_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let service = Service::start(&root);
    let mut failures = Vec::new();
    let mut ran = 0;
    // `MINIAUTH_DOCS=docs/api.md,…` runs only those (while writing a doc).
    let only = std::env::var("MINIAUTH_DOCS").ok();
    for doc in DOCS {
        if only
            .as_deref()
            .is_some_and(|only| !only.split(',').any(|d| d == *doc))
        {
            continue;
        }
        let text = std::fs::read_to_string(root.join(doc)).expect("reading the doc");
        let steps = steps_of(doc, &text);
        ran += steps.len();
        failures.extend(service.run_doc(&steps));
    }
    assert!(
        ran > 20 || only.is_some(),
        "only {ran} documented steps found"
    );
    assert!(
        failures.is_empty(),
        "{} of {ran} documented examples do not run as written:\n\n{}\n\nservice log: {}",
        failures.len(),
        failures.join("\n\n"),
        service.log_tail(),
    );
}

/// One command (or several) and what the doc shows it answers.
#[derive(Debug, Clone)]
struct Step {
    doc: String,
    line: usize,
    script: String,
    expect: Expect,
}

#[derive(Debug, Clone, Default)]
struct Expect {
    status: Option<u16>,
    exit: Option<i32>,
    body: Option<String>,
}

fn steps_of(doc: &str, text: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut in_block = false;
    let mut runnable = false;
    let mut script = String::new();
    let mut first = 0;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let number = index + 1;
        if let Some(info) = line.trim_start().strip_prefix("```") {
            if in_block {
                if runnable && !script.trim().is_empty() {
                    steps.push(step(doc, first, &script, Expect::default()));
                }
                script.clear();
                in_block = false;
            } else {
                in_block = true;
                let mut words = info.split_whitespace();
                runnable = matches!(words.next(), Some("sh" | "bash"))
                    && !words.any(|w| w == "illustrative");
            }
            continue;
        }
        if !in_block || !runnable {
            continue;
        }
        if let Some(shown) = line.trim_start().strip_prefix("# =>") {
            let mut shown = shown.trim().to_owned();
            while let Some((_, next)) = lines.peek() {
                match next.trim_start().strip_prefix("#  ") {
                    Some(more) => {
                        shown.push('\n');
                        shown.push_str(more.trim());
                        lines.next();
                    }
                    None => break,
                }
            }
            steps.push(step(doc, first, &script, parse_expect(&shown)));
            script.clear();
            continue;
        }
        if script.trim().is_empty() {
            first = number;
        }
        script.push_str(line);
        script.push('\n');
    }
    steps
}

fn step(doc: &str, line: usize, script: &str, expect: Expect) -> Step {
    Step {
        doc: doc.to_owned(),
        line,
        script: script.to_owned(),
        expect,
    }
}

fn parse_expect(shown: &str) -> Expect {
    let mut expect = Expect::default();
    let mut rest = shown;
    if let Some(code) = rest.strip_prefix("exit ") {
        let (n, tail) = code.split_once(char::is_whitespace).unwrap_or((code, ""));
        expect.exit = Some(n.trim_end_matches(':').parse().expect("exit N"));
        rest = tail.trim_start_matches(':').trim();
    } else if rest.len() >= 3 && rest.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
        let (n, tail) = rest.split_at(3);
        if tail.is_empty() || tail.starts_with(char::is_whitespace) {
            expect.status = Some(n.parse().expect("three digits"));
            rest = tail.trim();
        }
    }
    if !rest.is_empty() {
        expect.body = Some(rest.to_owned());
    }
    expect
}

/// The embedded default, running in a directory of its own.
struct Service {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:port` of docs/integration.md's webhook receiver.
    receiver: String,
    base: String,
    sim: String,
}

impl Service {
    fn start(root: &Path) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // The docs run from the repository's root: its files are where they say.
        for shared in ["docs", "miniprogram"] {
            std::os::unix::fs::symlink(root.join(shared), dir.path().join(shared))
                .expect("linking the repository's files");
        }
        let log = std::fs::File::create(dir.path().join("service.log")).expect("log file");
        let receiver = format!(
            "127.0.0.1:{}",
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_miniauth"))
            .current_dir(dir.path())
            .envs(integration_env(&receiver))
            .env_remove("MINIAUTH_CONFIG")
            .env("MINIAUTH__SERVER__LISTEN", "127.0.0.1:0")
            .env("MINIAUTH__WECHAT__SIMULATOR_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting miniauth");
        let stdout = child.stdout.take().expect("piped standard output");
        let (lines, received) = std::sync::mpsc::channel();
        // Drain the service's standard output for its whole life: a pipe closed after the
        // banner was read would make its next `println!` fail (EPIPE) and end it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let (mut base, mut sim) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while base.is_none() || sim.is_none() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("miniauth printed its addresses within 60 s");
            let line = received.recv_timeout(left).expect("miniauth's banner");
            if let Some(url) = line.strip_prefix("miniauth listening on ") {
                base = Some(url.trim().to_owned());
            }
            if let Some((_, rest)) = line.split_once("the simulator at ") {
                sim = rest.split_whitespace().next().map(str::to_owned);
            }
        }
        Self {
            child,
            dir,
            receiver,
            base: base.expect("the address"),
            sim: sim.expect("the simulator's address"),
        }
    }

    /// A panic's message (if the service died) and the log's last lines.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let panics = lines.iter().filter(|l| l.contains("panicked")).copied();
        let tail = lines[lines.len().saturating_sub(20)..].iter().copied();
        panics.chain(tail).collect::<Vec<_>>().join("\n")
    }

    /// Runs one doc's steps in one shell state; answers the failures.
    fn run_doc(&self, steps: &[Step]) -> Vec<String> {
        let state = self.dir.path().join("shell.state");
        let _ = std::fs::remove_file(&state);
        std::fs::write(&state, "").expect("shell state");
        let mut failures = Vec::new();
        for step in steps {
            if let Err(why) = self.run_step(&state, step) {
                failures.push(format!(
                    "{}:{}:\n{}  -> {why}",
                    step.doc, step.line, step.script
                ));
            }
        }
        failures
    }

    fn run_step(&self, state: &Path, step: &Step) -> Result<(), String> {
        let statuses = self.dir.path().join("curl.status");
        std::fs::write(&statuses, "").expect("status file");
        let script = step
            .script
            .replace("http://127.0.0.1:8080", &self.base)
            .replace("http://127.0.0.1:9100", &self.sim)
            .replace("127.0.0.1:8090", &self.receiver);
        let wrapped = format!(
            r#"set -a
. "{state}"
curl() {{ command curl -w '%{{stderr}}%{{http_code}}\n' "$@" 2>>"{statuses}"; }}
set -o pipefail
{script}
__rc=$?
export -p | grep -v -e '^declare -[a-z]*r' > "{state}"
exit $__rc
"#,
            state = state.display(),
            statuses = statuses.display(),
        );
        let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_miniauth"))
            .parent()
            .expect("the binary's directory")
            .to_owned();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let output = Command::new("bash")
            .arg("-c")
            .arg(&wrapped)
            .current_dir(self.dir.path())
            .env("PATH", path)
            .envs(integration_env(&self.receiver))
            // The CLI reads the same configuration as the service it talks to.
            .env(
                "MINIAUTH__SERVER__LISTEN",
                self.base.trim_start_matches("http://"),
            )
            .env(
                "MINIAUTH__WECHAT__SIMULATOR_LISTEN",
                self.sim.trim_start_matches("http://"),
            )
            .env_remove("MINIAUTH_CONFIG")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("bash: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let exit = output.status.code().unwrap_or(-1);
        let codes: Vec<u16> = std::fs::read_to_string(&statuses)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let said = || format!("exit {exit}, HTTP {codes:?}\nstdout: {stdout}\nstderr: {stderr}");
        if exit != step.expect.exit.unwrap_or(0) {
            return Err(format!(
                "expected exit {}; {}",
                step.expect.exit.unwrap_or(0),
                said()
            ));
        }
        match step.expect.status {
            Some(status) if codes.last() != Some(&status) => {
                return Err(format!("expected HTTP {status}; {}", said()));
            }
            Some(_) => {}
            None => {
                if let Some(bad) = codes.iter().find(|c| !(200..400).contains(*c)) {
                    return Err(format!(
                        "HTTP {bad} where the doc shows success; {}",
                        said()
                    ));
                }
            }
        }
        if let Some(body) = &step.expect.body {
            let shown = if body.starts_with('{') || body.starts_with('[') {
                check_json(body, &stdout)
            } else {
                check_text(body, &format!("{stdout}{stderr}"))
            };
            shown.map_err(|why| format!("{why}; {}", said()))?;
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_json(shown: &str, stdout: &str) -> Result<(), String> {
    let expected: Value =
        serde_json::from_str(shown).map_err(|e| format!("the doc's JSON does not parse: {e}"))?;
    // The answer is the last JSON value printed (earlier commands may print theirs).
    let actual = serde_json::Deserializer::from_str(stdout.trim())
        .into_iter::<Value>()
        .map_while(Result::ok)
        .last()
        .ok_or_else(|| "the answer is not JSON".to_owned())?;
    if matches(&expected, &actual) {
        Ok(())
    } else {
        Err(format!("the answer differs from the doc's {shown}"))
    }
}

/// Every line shown appears in the output, in order (`…`: any text within a line).
fn check_text(shown: &str, output: &str) -> Result<(), String> {
    let mut lines = output.lines();
    for expected in shown.lines() {
        let regex = Regex::new(&glob(expected)).expect("a pattern");
        if !lines.any(|line| regex.is_match(line)) {
            return Err(format!("the output does not show {expected:?} (in order)"));
        }
    }
    Ok(())
}

/// A line shown in a doc as a pattern: `…` stands for any text.
fn glob(shown: &str) -> String {
    shown
        .split('…')
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(".*")
}

/// Whether `actual` holds everything `expected` shows.
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(e), _) if e == "…" => true,
        (Value::String(e), Value::String(a)) if e.contains('…') => {
            Regex::new(&format!("^{}$", glob(e)))
                .expect("a pattern")
                .is_match(a)
        }
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(ev, av)| matches(ev, av))
        }
        _ => expected == actual,
    }
}

#[test]
fn the_runner_reads_what_the_docs_show() {
    let doc = "```sh\nA=1\ncurl -s x\n# => 404 {\"code\":\"…\"}\necho hi\n# => exit 2: no\n#  more\n```\n```sh illustrative\nrm -rf /\n```\n```sh\nls\n```\n";
    let steps = steps_of("d.md", doc);
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0].script, "A=1\ncurl -s x\n");
    assert_eq!(steps[0].expect.status, Some(404));
    assert_eq!(steps[1].expect.exit, Some(2));
    assert_eq!(steps[1].expect.body.as_deref(), Some("no\nmore"));
    assert!(check_text("a…\nc", "xay\nb\nc").is_ok());
    assert!(check_text("c\na", "a\nc").is_err());
    assert_eq!(steps[2].script, "ls\n");
    assert!(matches(
        &serde_json::json!({"a": "o…", "b": "…", "c": [1]}),
        &serde_json::json!({"a": "oX1", "b": null, "c": [1], "d": 2})
    ));
    assert!(!matches(
        &serde_json::json!({"a": "o…"}),
        &serde_json::json!({"a": "xo"})
    ));
    assert!(!matches(
        &serde_json::json!({"c": [1]}),
        &serde_json::json!({"c": [1, 2]})
    ));
}
