//! The server under test: `miniauth serve` as a child process on a generated
//! configuration.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;

use crate::bench::BENCH_APPID;

/// How long the server gets to answer `/healthz` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The miniauth binary to start: `--binary`, or the `miniauth` that cargo builds into
/// the same `target/<profile>` directory as this executable.
pub(crate) fn find_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_owned());
        }
        bail!("--binary {}: no such file", path.display());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe.parent().context("this executable has no directory")?;
    let candidate = dir.join(format!("miniauth{}", std::env::consts::EXE_SUFFIX));
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "no miniauth binary next to {}: build it (cargo build --release -p miniauth) or pass --binary",
        exe.display()
    )
}

pub(crate) fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// The server's configuration: the given store, the simulator as WeChat, one app with
/// automatic registration, a random server key and admin token.
pub(crate) fn server_config(
    store_url: &str,
    pool: u32,
    data_dir: &Path,
    simulator: &str,
    secret: &str,
    listen: std::net::SocketAddr,
) -> String {
    let server_key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let admin = hex::encode(rand::random::<[u8; 16]>());
    let toml_str = |s: &str| toml::Value::String(s.to_owned()).to_string();
    format!(
        r#"[server]
listen = "{listen}"

[store]
url = {url}
max_connections = {pool}
data_dir = {dir}
server_key = "{server_key}"

[wechat]
api_base = {simulator}

[[apps]]
appid = "{BENCH_APPID}"
secret = "{secret}"
registration = "auto"

[admin]
token = "{admin}"

# A load generator is one client address: its throttles would measure themselves.
[throttle]
logins_per_client = 1000000000
password_failures_per_account_and_client = 1000000000
password_failures_per_account = 1000000000
password_failures_per_client = 1000000000

[log]
level = "warn"
"#,
        url = toml_str(store_url),
        dir = toml_str(&data_dir.display().to_string()),
        simulator = toml_str(simulator),
    )
}

/// The server under test, a child process; killed if dropped while running.
pub(crate) struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    pub(crate) fn start(
        binary: &Path,
        config: &Path,
        dir: &Path,
        listen: std::net::SocketAddr,
    ) -> anyhow::Result<Self> {
        let log = dir.join("server.log");
        let file = std::fs::File::create(&log)?;
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("MINIAUTH_CONFIG")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {} on {listen}", binary.display()))?;
        Ok(Self { child, log })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "miniauth exited ({status}): {}",
                std::fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .trim()
            )),
            _ => None,
        }
    }

    /// SIGTERM (graceful), then SIGKILL after 10 s.
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) async fn wait_healthy(
    http: &reqwest::Client,
    base: &str,
    server: &mut Server,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(why) = server.exited() {
            bail!("{why}");
        }
        let ok = http
            .get(format!("{base}/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("miniauth did not answer /healthz at {base} within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniauth::config::{Config, WeChatTarget};

    #[test]
    fn the_server_configuration_loads() {
        let dir = tempfile::tempdir().unwrap();
        let text = server_config(
            "sqlite:///tmp/x \"quoted\".db",
            7,
            dir.path(),
            "http://127.0.0.1:9",
            "s3cret",
            "127.0.0.1:1234".parse().unwrap(),
        );
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load_with_env(Some(&path), &[]).unwrap();
        assert_eq!(config.store.url, "sqlite:///tmp/x \"quoted\".db");
        assert_eq!(config.store.max_connections, 7);
        assert_eq!(config.apps[0].appid, BENCH_APPID);
        assert_eq!(
            config.wechat.api_base,
            WeChatTarget::Api("http://127.0.0.1:9".into())
        );
        assert!(config.server_key(&[]).unwrap().is_some());
        assert!(config.admin_token(&[]).unwrap().is_some());
    }
}
