//! The simulated mini programs: the device (the in-process simulator), the API calls,
//! the scenarios and the long-history check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use miniauth_domain::AppId;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::database::WaitSampler;
use crate::procfs::CpuSnapshot;
use crate::report::{lock_share, HistoryResult, ScenarioResult};

/// Building the long history stops here even if it is not complete (reported).
const HISTORY_TIME_LIMIT: Duration = Duration::from_secs(300);
/// Concurrent logins that build the long history (one account: they take turns).
const HISTORY_CONCURRENCY: usize = 8;
/// A client gives up after this many failures in a row (the server is gone).
const MAX_CONSECUTIVE_ERRORS: u32 = 100;

/// The mini program's side of the simulator, called in-process (no socket), so that
/// the clients' own WeChat calls cost the machine as little as possible.
#[derive(Clone)]
pub(crate) struct Device {
    pub(crate) router: axum::Router,
    pub(crate) appid: AppId,
}

impl Device {
    async fn call(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let request = Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))?;
        let response = self.router.clone().oneshot(request).await?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        if !status.is_success() {
            bail!(
                "simulator {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    async fn create_user(&self, phone: &str) -> anyhow::Result<u64> {
        let answer = self
            .call(
                "/device/users",
                json!({ "nickname": "bench", "phone": phone, "country_code": "86" }),
            )
            .await?;
        answer["user_id"].as_u64().context("simulator: no user_id")
    }

    async fn login(&self, user: u64) -> anyhow::Result<String> {
        let answer = self
            .call(
                &format!("/device/users/{user}/login"),
                json!({ "appid": self.appid.as_str() }),
            )
            .await?;
        Ok(answer["code"]
            .as_str()
            .context("simulator: no code")?
            .to_owned())
    }

    async fn phone_code(&self, user: u64) -> anyhow::Result<String> {
        let answer = self
            .call(
                &format!("/device/users/{user}/phone"),
                json!({ "appid": self.appid.as_str() }),
            )
            .await?;
        Ok(answer["code"]
            .as_str()
            .context("simulator: no phone code")?
            .to_owned())
    }
}

/// miniauth's HTTP API, as the mini program front end calls it.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) appid: AppId,
}

impl Api {
    /// POSTs JSON; returns the answer and how long miniauth took.
    async fn post(
        &self,
        path: &str,
        body: Value,
        want: StatusCode,
    ) -> anyhow::Result<(Value, Duration)> {
        let started = Instant::now();
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let answer = response.json::<Value>().await.unwrap_or(Value::Null);
        let elapsed = started.elapsed();
        if status != want {
            let code = answer["code"].as_str().unwrap_or("?");
            bail!("POST {path}: {status} {code}");
        }
        Ok((answer, elapsed))
    }

    async fn login(&self, code: &str) -> anyhow::Result<(Value, Duration)> {
        self.post(
            &format!("/v1/apps/{}/sessions", self.appid),
            json!({ "code": code }),
            StatusCode::OK,
        )
        .await
    }
}

/// One account a client owns: its simulator user and its newest ticket and refresh token.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    sim_user: u64,
    pub(crate) ticket: Option<String>,
    refresh: Option<String>,
}

/// What a client carries from one operation (and scenario) to the next.
#[derive(Debug, Default)]
pub(crate) struct ClientState {
    pub(crate) members: Vec<Member>,
    pub(crate) next: usize,
}

pub(crate) fn text(value: &Value, what: &str) -> anyhow::Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the answer has no {what}"))
}

/// First login of a new WeChat user, then the phone button: a new business user.
/// Times the two miniauth calls (not the simulator's device calls between them).
pub(crate) async fn register(
    api: &Api,
    device: &Device,
    phones: &AtomicU64,
    state: &mut ClientState,
) -> anyhow::Result<Duration> {
    let phone = format!("139{:08}", phones.fetch_add(1, Ordering::Relaxed));
    let user = device.create_user(&phone).await?;
    let code = device.login(user).await?;
    let (session, first) = api.login(&code).await?;
    if session["bound"] != json!(false) {
        bail!("a new WeChat user came back bound");
    }
    let ticket = text(&session["ticket"], "ticket")?;
    let phone_code = device.phone_code(user).await?;
    let (registered, second) = api
        .post(
            &format!("/v1/apps/{}/phone", api.appid),
            json!({ "ticket": ticket, "code": phone_code }),
            StatusCode::OK,
        )
        .await?;
    if registered["registered"] != json!(true) {
        bail!("a new phone under policy auto did not register a user");
    }
    state.members.push(Member {
        sim_user: user,
        ticket: None,
        refresh: registered["tokens"]["refresh_token"]
            .as_str()
            .map(str::to_owned),
    });
    Ok(first + second)
}

/// A bound user comes back: one round trip gives tokens.
pub(crate) async fn returning(
    api: &Api,
    device: &Device,
    state: &mut ClientState,
) -> anyhow::Result<Duration> {
    let index = state.next % state.members.len().max(1);
    state.next = state.next.wrapping_add(1);
    let member = state
        .members
        .get_mut(index)
        .context("this client has no account")?;
    let code = device.login(member.sim_user).await?;
    let (answer, elapsed) = api.login(&code).await?;
    if answer["bound"] != json!(true) || !answer["tokens"].is_object() {
        bail!("a returning bound user got no tokens");
    }
    member.ticket = Some(text(&answer["ticket"], "ticket")?);
    member.refresh = Some(text(&answer["tokens"]["refresh_token"], "refresh_token")?);
    Ok(elapsed)
}

/// GitEgg's returning user: `/login` answers the bind key (a ticket no answer has
/// spent), then `/oauth/token`'s exchange of it, here as the v1 ticket grant. A ticket
/// buys tokens once, so each operation logs in first: two requests, one WeChat call.
async fn ticket_grant(
    api: &Api,
    device: &Device,
    state: &mut ClientState,
) -> anyhow::Result<Duration> {
    let index = state.next % state.members.len().max(1);
    state.next = state.next.wrapping_add(1);
    let member = state
        .members
        .get(index)
        .context("this client has no account")?;
    let code = device.login(member.sim_user).await?;
    let started = Instant::now();
    let login = api
        .http
        .get(format!("{}/wx/user/{}/login", api.base, api.appid))
        .query(&[("code", code.as_str())])
        .send()
        .await
        .context("GET /wx/user/{appid}/login")?
        .json::<Value>()
        .await
        .context("GitEgg login: not JSON")?;
    let ticket = text(&login["data"]["bindKey"], "bindKey")?;
    let (answer, _) = api
        .post(
            "/v1/token",
            json!({ "grant_type": "ticket", "ticket": ticket }),
            StatusCode::OK,
        )
        .await?;
    text(&answer["access_token"], "access_token")?;
    Ok(started.elapsed())
}

/// Rotates the client's refresh token (each answer carries the next one).
pub(crate) async fn refresh(api: &Api, state: &mut ClientState) -> anyhow::Result<Duration> {
    let index = state.next % state.members.len().max(1);
    state.next = state.next.wrapping_add(1);
    let member = state
        .members
        .get_mut(index)
        .context("this client has no account")?;
    let token = member.refresh.clone().context("no refresh token")?;
    let (answer, elapsed) = api
        .post(
            "/v1/token",
            json!({ "grant_type": "refresh_token", "refresh_token": token }),
            StatusCode::OK,
        )
        .await?;
    member.refresh = Some(text(&answer["refresh_token"], "refresh_token")?);
    Ok(elapsed)
}

/// How long, and how many operations, one scenario may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    duration: Duration,
    requests: Option<u64>,
}

impl Limit {
    pub(crate) fn new(duration_secs: u64, requests: Option<u64>) -> Self {
        Self {
            duration: Duration::from_secs(duration_secs),
            requests,
        }
    }
}

/// What the clients of one scenario do.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Register,
    Returning,
    Ticket,
    Refresh,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Register => "first login + phone registration",
            Op::Returning => "returning-user login (one round trip)",
            Op::Ticket => "GitEgg login + ticket → token",
            Op::Refresh => "refresh (rotation)",
        }
    }
}

/// What every client shares.
pub(crate) struct Ctx {
    /// The miniauth instances (their CPU is summed).
    pub(crate) server_pids: Vec<u32>,
    pub(crate) database_url: Option<String>,
    /// The instances' APIs: client `i` talks to `apis[i % apis.len()]`.
    pub(crate) apis: Vec<Api>,
    pub(crate) device: Device,
    pub(crate) phones: Arc<AtomicU64>,
}

impl Ctx {
    async fn perform(
        &self,
        op: Op,
        client: usize,
        state: &mut ClientState,
    ) -> anyhow::Result<Duration> {
        let api = &self.apis[client % self.apis.len()];
        match op {
            Op::Register => register(api, &self.device, &self.phones, state).await,
            Op::Returning => returning(api, &self.device, state).await,
            Op::Ticket => ticket_grant(api, &self.device, state).await,
            Op::Refresh => refresh(api, state).await,
        }
    }
}

/// Runs one operation in a loop on every client until the limit; returns the figures
/// and the clients' state.
pub(crate) async fn scenario(
    ctx: &Arc<Ctx>,
    op: Op,
    clients: Vec<ClientState>,
    limit: Limit,
) -> (ScenarioResult, Vec<ClientState>) {
    let name = match ctx.apis.len() {
        1 => op.name().to_owned(),
        n => format!("{}, {n} instances", op.name()),
    };
    let issued = Arc::new(AtomicU64::new(0));
    let waits = WaitSampler::start(ctx.database_url.as_deref()).await;
    let cpu_before = CpuSnapshot::take(&ctx.server_pids);
    let started = Instant::now();
    let deadline = started + limit.duration;
    let mut tasks = Vec::with_capacity(clients.len());
    for (client, mut state) in clients.into_iter().enumerate() {
        let (ctx, issued) = (ctx.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut in_a_row = 0;
            while Instant::now() < deadline
                && limit
                    .requests
                    .is_none_or(|max| issued.fetch_add(1, Ordering::Relaxed) < max)
            {
                match ctx.perform(op, client, &mut state).await {
                    Ok(elapsed) => {
                        latencies.push(elapsed.as_micros() as u64);
                        in_a_row = 0;
                    }
                    Err(error) => {
                        errors += 1;
                        in_a_row += 1;
                        first_error.get_or_insert_with(|| format!("{error:#}"));
                        if in_a_row >= MAX_CONSECUTIVE_ERRORS {
                            break;
                        }
                    }
                }
            }
            (latencies, errors, first_error, state)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut states = Vec::new();
    for task in tasks {
        match task.await {
            Ok((l, e, f, s)) => {
                latencies.extend(l);
                errors += e;
                if first_error.is_none() {
                    first_error = f;
                }
                states.push(s);
            }
            Err(error) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("a client task failed: {error}"));
                states.push(ClientState::default());
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuSnapshot::take(&ctx.server_pids).since(&cpu_before, latencies.len() as u64);
    let postgres_waits = match waits {
        Some(sampler) => sampler.stop().await,
        None => Vec::new(),
    };
    latencies.sort_unstable();
    let ms = |p: f64| percentile(&latencies, p) as f64 / 1000.0;
    (
        ScenarioResult {
            name,
            ops: latencies.len() as u64,
            errors,
            first_error,
            seconds,
            per_second: latencies.len() as f64 / seconds.max(1e-9),
            p50_ms: ms(50.0),
            p95_ms: ms(95.0),
            p99_ms: ms(99.0),
            ratio_to_pgbench: None,
            cpu,
            lock_wait_percent: lock_share(&postgres_waits),
            postgres_waits,
        },
        states,
    )
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mean_ms(values: &[u64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<u64>() as f64 / values.len() as f64 / 1000.0
}

/// Builds a long history on one account through the API (real logins), then times
/// logins of that account and of fresh accounts, interleaved so drift hits both alike.
pub(crate) async fn history(
    api: &Api,
    device: &Device,
    phones: &AtomicU64,
    logins: u64,
    samples: usize,
) -> anyhow::Result<HistoryResult> {
    let mut owner = ClientState::default();
    register(api, device, phones, &mut owner).await?;
    let member = owner.members.remove(0);
    // First login, phone verification, binding.
    const REGISTRATION_EVENTS: u64 = 3;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..HISTORY_CONCURRENCY {
        let (api, device, done) = (api.clone(), device.clone(), done.clone());
        let user = member.sim_user;
        tasks.push(tokio::spawn(async move {
            let mut failures = 0u32;
            while done.load(Ordering::Relaxed) < logins && started.elapsed() < HISTORY_TIME_LIMIT {
                let outcome = async {
                    let code = device.login(user).await?;
                    api.login(&code).await
                }
                .await;
                match outcome {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        failures = 0;
                    }
                    Err(error) => {
                        failures += 1;
                        if failures >= MAX_CONSECUTIVE_ERRORS {
                            return Err(error);
                        }
                    }
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let build_seconds = started.elapsed().as_secs_f64();
    let built = done.load(Ordering::Relaxed);

    let mut fresh = Vec::with_capacity(samples);
    let mut long = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut state = ClientState::default();
        register(api, device, phones, &mut state).await?;
        fresh.push(returning(api, device, &mut state).await?.as_micros() as u64);
        let code = device.login(member.sim_user).await?;
        long.push(api.login(&code).await?.1.as_micros() as u64);
    }
    let events = REGISTRATION_EVENTS + built;
    fresh.sort_unstable();
    long.sort_unstable();
    let history_p50_ms = percentile(&long, 50.0) as f64 / 1000.0;
    let fresh_p50_ms = percentile(&fresh, 50.0) as f64 / 1000.0;
    Ok(HistoryResult {
        events,
        build_seconds,
        build_logins_per_second: built as f64 / build_seconds.max(1e-9),
        history_p50_ms,
        fresh_p50_ms,
        history_mean_ms: mean_ms(&long),
        fresh_mean_ms: mean_ms(&fresh),
        ratio: history_p50_ms / fresh_p50_ms.max(1e-9),
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 95.0), 95);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&values, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), 2);
    }
}
