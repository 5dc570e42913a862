//! `miniauth demo`: plays a mini program against a running miniauth (or one it starts
//! on the embedded default) and walks the whole flow, printing each step.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use miniauth_domain::AppId;
use miniauth_wechat::sim::{DeviceClient, NewSimUser};
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::config::Config;
use crate::wiring;

/// Where the demo plays.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The miniauth to play against (default: the configured `server.listen`). When it
    /// does not answer, the demo starts its own on the embedded default.
    #[arg(long)]
    server: Option<String>,
    /// The simulator's device API (default: the configured `wechat.simulator_listen`).
    #[arg(long)]
    sim: Option<String>,
    /// The admin token (default: the embedded default's `data/admin.token`).
    #[arg(long, env = "MINIAUTH_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

struct Target {
    server: String,
    device: DeviceClient,
    admin_token: String,
    appid: AppId,
    /// Another app of the first app's tenant, if one is configured: the linking scene.
    second_appid: Option<AppId>,
    /// Keeps a self-started service alive for the demo's duration.
    _own: Option<OwnService>,
}

struct OwnService {
    _dir: tempfile::TempDir,
    _simulator: Option<miniauth_wechat::sim::RunningSimulator>,
    _server: tokio::task::JoinHandle<()>,
}

/// Runs the demo; fails at the first step that does not behave as documented.
pub async fn run(config: &Config, args: DemoArgs) -> anyhow::Result<()> {
    let target = target(config, args).await?;
    let http = reqwest::Client::new();
    let demo = Demo {
        http: &http,
        target: &target,
    };
    demo.walk().await?;
    println!("\ndemo complete: every step behaved as documented");
    Ok(())
}

async fn target(config: &Config, args: DemoArgs) -> anyhow::Result<Target> {
    let server = args
        .server
        .unwrap_or_else(|| format!("http://{}", config.server.listen));
    let healthy = reqwest::Client::new()
        .get(format!("{server}/healthz"))
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    let appid = config
        .apps
        .first()
        .map(|a| AppId::parse(&a.appid))
        .transpose()
        .map_err(|e| anyhow::anyhow!("apps[0].appid: {}", e.reason))?
        .context("no app configured")?;
    let second_appid = config
        .apps
        .iter()
        .skip(1)
        .find(|other| {
            config
                .apps
                .first()
                .is_some_and(|first| first.tenant == other.tenant)
        })
        .and_then(|other| AppId::parse(&other.appid).ok());
    if healthy {
        crate::logging::init(&config.log, true);
        let sim = args
            .sim
            .unwrap_or_else(|| format!("http://{}", config.wechat.simulator_listen));
        let admin_token = match args.admin_token {
            Some(token) => token,
            None => std::fs::read_to_string(config.store.data_dir.join("admin.token"))
                .map(|t| t.trim().to_owned())
                .context("no admin token: pass --admin-token (or MINIAUTH_ADMIN_TOKEN)")?,
        };
        println!("playing against {server} (simulator {sim})");
        return Ok(Target {
            server,
            device: DeviceClient::new(sim),
            admin_token,
            appid,
            second_appid,
            _own: None,
        });
    }
    println!("no miniauth answers at {server}: starting one on the embedded default");
    // Its log goes to a file, so that only the walkthrough is on the terminal.
    let log = std::env::temp_dir().join(format!("miniauth-demo-{}.log", std::process::id()));
    crate::logging::init_to_file(&config.log, &log)
        .with_context(|| format!("creating the demo server's log {}", log.display()))?;
    println!("its log: {}", log.display());
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let mut own = Config::load_with_env(None, &[])?;
    own.store.data_dir = dir.path().to_owned();
    own.store.url = format!("sqlite://{}", dir.path().join("miniauth.db").display());
    let ephemeral = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut built = wiring::build(&own, wiring::SimulatorStart::At(ephemeral)).await?;
    let listener = tokio::net::TcpListener::bind(ephemeral).await?;
    let server = format!("http://{}", listener.local_addr()?);
    let router = built.router.clone();
    let task = tokio::spawn(async move {
        let _ = miniauth_http::serve(listener, router, std::future::pending()).await;
    });
    let simulator = built
        .simulator
        .take()
        .context("the embedded default has a simulator")?;
    let admin_token = std::fs::read_to_string(dir.path().join("admin.token"))?
        .trim()
        .to_owned();
    println!("started {server} (simulator {})", simulator.base_url());
    Ok(Target {
        server,
        device: simulator.device(),
        admin_token,
        appid: AppId::parse(crate::config::DEMO_APPID).expect("valid demo appid"),
        second_appid: Some(
            AppId::parse(miniauth_wechat::sim::DEMO_SECOND_APPID).expect("valid demo appid"),
        ),
        _own: Some(OwnService {
            _dir: dir,
            _simulator: Some(simulator),
            _server: task,
        }),
    })
}

/// A WeChat user of the simulator whom the phone flow registered.
struct Registered {
    wechat: u64,
    user_id: Value,
}

/// A password user who bound a WeChat identity.
struct PasswordUser {
    wechat: u64,
    access: String,
}

struct Demo<'a> {
    http: &'a reqwest::Client,
    target: &'a Target,
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn show(label: &str, value: impl std::fmt::Display) {
    println!("    {label}: {value}");
}

/// Shortens a credential for display: enough to tell two apart, not to use one.
fn short(secret: &str) -> String {
    format!("{}…", secret.chars().take(10).collect::<String>())
}

impl Demo<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.target.server)
    }

    async fn post(
        &self,
        path: &str,
        body: Value,
        bearer: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// `GET path` with a bearer token, expecting 200.
    async fn get(&self, path: &str, bearer: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.target.server))
            .bearer_auth(bearer)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        if status != StatusCode::OK {
            bail!("GET {path}: expected 200 OK, got {status}: {body}");
        }
        Ok(body)
    }

    async fn expect(
        &self,
        path: &str,
        body: Value,
        bearer: Option<&str>,
        want: StatusCode,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self.post(path, body, bearer).await?;
        if status != want {
            bail!("POST {path}: expected {want}, got {status}: {answer}");
        }
        Ok(answer)
    }

    async fn login(&self, sim_user: u64) -> anyhow::Result<Value> {
        let code = self
            .target
            .device
            .login(&self.target.appid, sim_user)
            .await?;
        self.expect(
            &format!("/v1/apps/{}/sessions", self.target.appid),
            json!({ "code": code }),
            None,
            StatusCode::OK,
        )
        .await
    }

    /// The flow, step by step: each scene checks what docs/api.md promises.
    async fn walk(&self) -> anyhow::Result<()> {
        let alice = self.new_user_registers_by_phone().await?;
        let refresh = self.returning_user_logs_in_at_once(alice.wechat).await?;
        let bob = self.password_user_binds().await?;
        self.user_unbinds(&bob).await?;
        self.refresh_rotates_and_reuse_revokes(&refresh).await?;
        self.logout_ends_the_refresh_token(alice.wechat).await?;
        self.second_app_knows_her_at_once(&alice).await?;
        show("alice", &alice.user_id);
        Ok(())
    }

    /// Step 11: the same person opens another mini program of the tenant (the same
    /// Open Platform account): her unionid links her there at once (docs/channels.md).
    async fn second_app_knows_her_at_once(&self, alice: &Registered) -> anyhow::Result<()> {
        let Some(second) = &self.target.second_appid else {
            println!("\n(one app of this tenant is configured: the linking step is skipped)");
            return Ok(());
        };
        step(
            11,
            "she opens the shop's second mini program: one round trip, the same user (linked by unionid)",
        );
        let code = self.target.device.login(second, alice.wechat).await?;
        let answer = self
            .expect(
                &format!("/v1/apps/{second}/sessions"),
                json!({ "code": code }),
                None,
                StatusCode::OK,
            )
            .await?;
        show("bound", &answer["bound"]);
        let access = answer["tokens"]["access_token"]
            .as_str()
            .unwrap_or_default();
        let me = self.get("/v1/me", access).await?;
        show("user_id", &me["user_id"]);
        if answer["bound"] != json!(true) || me["user_id"] != alice.user_id {
            bail!("a person bound in one app of the tenant must be linked in another at once");
        }
        Ok(())
    }

    /// Steps 1–3: login, profile, phone; policy `auto` registers her.
    async fn new_user_registers_by_phone(&self) -> anyhow::Result<Registered> {
        let appid = &self.target.appid;
        let device = &self.target.device;
        let phone = format!("139{:08}", rand::thread_rng().gen_range(0..100_000_000u32));

        step(
            1,
            "a new WeChat user opens the mini program: wx.login → POST /v1/apps/{appid}/sessions",
        );
        let alice = device
            .create_user(&NewSimUser {
                nickname: "Alice".into(),
                avatar_url: "https://example.com/alice.png".into(),
                phone: Some(phone.clone()),
                country_code: "86".into(),
            })
            .await?;
        let session = self.login(alice).await?;
        show("bound", &session["bound"]);
        show(
            "ticket",
            short(session["ticket"].as_str().unwrap_or_default()),
        );
        if session["bound"] != json!(false) {
            bail!("a new WeChat user must not be bound");
        }
        let ticket = session["ticket"].as_str().unwrap_or_default().to_owned();

        step(
            2,
            "the user picks avatar and nickname: POST /v1/apps/{appid}/profile",
        );
        let profile = self
            .expect(
                &format!("/v1/apps/{appid}/profile"),
                json!({ "ticket": ticket, "nickname": "Alice", "avatar_url": "https://example.com/alice.png" }),
                None,
                StatusCode::OK,
            )
            .await?;
        show("nickname", &profile["nickname"]);

        step(
            3,
            "the user taps the phone button: POST /v1/apps/{appid}/phone {ticket, code}",
        );
        let bundle = device.phone(appid, alice).await?;
        let registered = self
            .expect(
                &format!("/v1/apps/{appid}/phone"),
                json!({ "ticket": ticket, "code": bundle.code }),
                None,
                StatusCode::OK,
            )
            .await?;
        show("registered a new user", &registered["registered"]);
        show("user_id", &registered["user_id"]);
        if registered["registered"] != json!(true) {
            bail!("a new phone under policy auto must register a user");
        }
        Ok(Registered {
            wechat: alice,
            user_id: registered["user_id"].clone(),
        })
    }

    /// Step 4: a bound user's login answers tokens; returns the refresh token.
    async fn returning_user_logs_in_at_once(&self, alice: u64) -> anyhow::Result<String> {
        step(4, "she comes back later: one round trip logs her in");
        let again = self.login(alice).await?;
        show("bound", &again["bound"]);
        show("tokens at once", again["tokens"].is_object());
        if again["bound"] != json!(true) || !again["tokens"].is_object() {
            bail!("a returning bound user must get tokens in one round trip");
        }
        Ok(again["tokens"]["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Steps 5–6: an administrator adds Bob, who binds his WeChat identity with
    /// account + password.
    async fn password_user_binds(&self) -> anyhow::Result<PasswordUser> {
        let appid = &self.target.appid;
        step(
            5,
            "an administrator adds a password user: POST /v1/admin/users",
        );
        let account = format!("bob{}", rand::thread_rng().gen_range(0..1_000_000u32));
        let bob = self
            .expect(
                "/v1/admin/users",
                json!({ "account": account, "password": "correct horse battery", "nickname": "Bob" }),
                Some(&self.target.admin_token),
                StatusCode::CREATED,
            )
            .await?;
        show("user_id", &bob["user_id"]);

        step(
            6,
            "Bob declines the phone and binds with account + password",
        );
        let bob_wechat = self
            .target
            .device
            .create_user(&NewSimUser {
                nickname: "Bob".into(),
                avatar_url: String::new(),
                phone: None,
                country_code: "86".into(),
            })
            .await?;
        let bob_session = self.login(bob_wechat).await?;
        let bob_tokens = self
            .expect(
                "/v1/token",
                json!({ "grant_type": "password", "account": account, "password": "correct horse battery" }),
                None,
                StatusCode::OK,
            )
            .await?;
        let access = bob_tokens["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let bound = self
            .expect(
                &format!("/v1/apps/{appid}/binding"),
                json!({ "ticket": bob_session["ticket"] }),
                Some(&access),
                StatusCode::OK,
            )
            .await?;
        show("bound to user", &bound["user_id"]);
        if bound["user_id"] != bob["user_id"] {
            bail!("the binding must be Bob's");
        }
        Ok(PasswordUser {
            wechat: bob_wechat,
            access,
        })
    }

    /// Step 7: unbinding this app; his next login is not bound.
    async fn user_unbinds(&self, bob: &PasswordUser) -> anyhow::Result<()> {
        let appid = &self.target.appid;
        step(7, "Bob unbinds this app: DELETE /v1/apps/{appid}/binding");
        let response = self
            .http
            .delete(self.url(&format!("/v1/apps/{appid}/binding")))
            .bearer_auth(&bob.access)
            .send()
            .await?;
        show("status", response.status());
        if response.status() != StatusCode::NO_CONTENT {
            bail!("unbind answered {}", response.status());
        }
        let after = self.login(bob.wechat).await?;
        show("bound after unbind", &after["bound"]);
        Ok(())
    }

    /// Steps 8–9: a refresh rotates the token; replaying the old one revokes the family.
    async fn refresh_rotates_and_reuse_revokes(&self, refresh: &str) -> anyhow::Result<()> {
        step(
            8,
            "Alice refreshes: POST /v1/token grant_type=refresh_token (rotation)",
        );
        let rotated = self
            .expect(
                "/v1/token",
                json!({ "grant_type": "refresh_token", "refresh_token": refresh }),
                None,
                StatusCode::OK,
            )
            .await?;
        show(
            "new refresh token",
            short(rotated["refresh_token"].as_str().unwrap_or_default()),
        );

        step(
            9,
            "someone replays the old refresh token: reuse detected, the family revoked",
        );
        let (status, problem) = self.refresh(&json!(refresh)).await?;
        show("status", status);
        show("code", &problem["code"]);
        if status != StatusCode::UNAUTHORIZED || problem["code"] != json!("refresh_token_reused") {
            bail!("reuse must be refused with refresh_token_reused");
        }
        let (status, _) = self.refresh(&rotated["refresh_token"]).await?;
        show("the rotated token after reuse", status);
        if status != StatusCode::UNAUTHORIZED {
            bail!("reuse must revoke the whole family");
        }
        Ok(())
    }

    /// Step 10: logout revokes the refresh token.
    async fn logout_ends_the_refresh_token(&self, alice: u64) -> anyhow::Result<()> {
        step(10, "Alice logs in again and logs out: POST /v1/logout");
        let fresh = self.login(alice).await?;
        let access = fresh["tokens"]["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let refresh = fresh["tokens"]["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (status, _) = self
            .post(
                "/v1/logout",
                json!({ "refresh_token": refresh }),
                Some(&access),
            )
            .await?;
        show("logout", status);
        let (status, _) = self.refresh(&json!(refresh)).await?;
        show("refresh after logout", status);
        if status != StatusCode::UNAUTHORIZED {
            bail!("a logged-out refresh token must be refused");
        }
        Ok(())
    }

    /// `POST /v1/token grant_type=refresh_token`, whatever it answers.
    async fn refresh(&self, refresh_token: &Value) -> anyhow::Result<(StatusCode, Value)> {
        self.post(
            "/v1/token",
            json!({ "grant_type": "refresh_token", "refresh_token": refresh_token }),
            None,
        )
        .await
    }
}
