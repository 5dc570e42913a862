//! WeChat misbehaving, through the simulator's fault injection: busy (`-1`), HTTP 5xx,
//! 45011 and answers slower than the client's timeout. The service answers 503 (busy,
//! down, slow) or 429 (45011) with `Retry-After` and a stable code, writes nothing, and
//! serves the same kind of request again as soon as WeChat does.

use std::time::{Duration, Instant};

use miniauth_e2e::{spawn_app_with, Answer, Engine, TestApp, APP};
use miniauth_wechat::sim::{Endpoint, Fault, Faults, Simulator};
use serde_json::json;

use crate::support::bounded;

/// Far below the default 5 s, so that a slow WeChat costs the suite little.
const WECHAT_TIMEOUT_MS: u64 = 300;
/// A delay well past the timeout.
const SLOW_MS: u64 = 900;
/// The longest a refused request may take: three attempts and two backoffs (at most
/// 200 + 400 ms) plus a generous margin for two busy cores.
const REFUSAL_BUDGET: Duration = Duration::from_secs(4);

async fn app() -> TestApp {
    spawn_app_with(Engine::Sqlite, |config| {
        config.wechat.timeout_ms = WECHAT_TIMEOUT_MS;
    })
    .await
}

fn sim(app: &TestApp) -> &Simulator {
    app.simulator
        .as_ref()
        .expect("the simulator runs")
        .simulator()
}

/// One injected fault and what the client must be told.
struct Case {
    what: &'static str,
    fault: Fault,
    status: u16,
    code: &'static str,
    /// Calls WeChat receives: `-1` is replayed (WeChat certainly did not process it),
    /// a 5xx or a timeout is not (WeChat may have spent the code).
    calls: u64,
    /// Whether WeChat processed nothing, so the same one-time code works afterwards.
    code_unspent: bool,
}

fn cases() -> [Case; 4] {
    [
        Case {
            what: "-1 (busy) on every attempt",
            fault: Fault {
                busy: 1.0,
                ..Fault::default()
            },
            status: 503,
            code: "wechat_unavailable",
            calls: 3,
            code_unspent: true,
        },
        Case {
            what: "HTTP 502",
            fault: Fault {
                server_error: 1.0,
                ..Fault::default()
            },
            status: 503,
            code: "wechat_unavailable",
            calls: 1,
            code_unspent: true,
        },
        Case {
            what: "45011 (rate limited)",
            fault: Fault {
                rate_limited: 1.0,
                ..Fault::default()
            },
            status: 429,
            code: "wechat_rate_limited",
            calls: 1,
            code_unspent: true,
        },
        Case {
            what: "an answer slower than the timeout",
            fault: Fault {
                delay_ms: SLOW_MS,
                ..Fault::default()
            },
            status: 503,
            code: "wechat_unavailable",
            calls: 1,
            code_unspent: false,
        },
    ]
}

/// Runs `request` with `fault` on `endpoint`: checks the refusal, that nothing was
/// written, and how often WeChat was called; clears the faults afterwards.
async fn refused<F, Fut>(app: &TestApp, endpoint: Endpoint, case: &Case, request: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let sim = sim(app);
    sim.set_faults(Faults::none().with(endpoint, case.fault))
        .expect("valid faults");
    sim.reset_calls();
    let started = Instant::now();
    let answer = app.unchanged(case.what, request).await;
    let elapsed = started.elapsed();
    let calls = sim.calls().get(&endpoint).copied().unwrap_or_default();
    sim.set_faults(Faults::none()).expect("no faults");
    answer.problem(case.status, case.code);
    assert!(
        answer.retry_after() >= 1,
        "{}: Retry-After {}",
        case.what,
        answer.retry_after()
    );
    assert_eq!(calls, case.calls, "{}: calls to {endpoint:?}", case.what);
    assert!(
        elapsed < REFUSAL_BUDGET,
        "{}: the refusal took {elapsed:?}",
        case.what
    );
}

/// `POST /v1/apps/{appid}/sessions` while code2session fails each way, then once it
/// works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refused_cleanly_while_wechat_fails_and_served_once_it_recovers() {
    bounded("the login fault cases", Duration::from_secs(30), async {
        let app = app().await;
        let user = app.wechat_user(None).await;
        for case in cases() {
            let code = app.wx_login(APP, user).await;
            refused(&app, Endpoint::Jscode2Session, &case, || {
                app.login(APP, &code)
            })
            .await;

            // WeChat recovered: the same kind of request succeeds, with the same code
            // when WeChat never processed it.
            let code = if case.code_unspent {
                code
            } else {
                app.wx_login(APP, user).await
            };
            let before = app.snapshot().await;
            let session = app.login(APP, &code).await;
            let session = session.ok(200);
            assert_eq!(session["bound"], json!(false), "{}: {session}", case.what);
            assert!(session["ticket"].is_string(), "{session}");
            assert_eq!(
                app.event_types_after(before.last_event).await,
                ["SessionObtained"],
                "{}: the recovered login",
                case.what
            );
        }
    })
    .await
}

/// A burst of `-1` shorter than the client's retries is absorbed: the client sees a
/// plain 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_busy_burst_is_absorbed_by_the_retries() {
    bounded("the busy burst", Duration::from_secs(20), async {
        let app = app().await;
        let user = app.wechat_user(None).await;
        let code = app.wx_login(APP, user).await;
        let sim = sim(&app);
        sim.set_faults(Faults::none().with(
            Endpoint::Jscode2Session,
            Fault {
                busy: 1.0,
                ..Fault::default()
            },
        ))
        .expect("valid faults");
        sim.reset_calls();
        let (answer, ()) = tokio::join!(app.login(APP, &code), async {
            // The burst ends as soon as the first attempt was refused; the retries
            // (the next one 100 to 200 ms later) find WeChat serving again.
            let deadline = Instant::now() + Duration::from_secs(5);
            while sim
                .calls()
                .get(&Endpoint::Jscode2Session)
                .copied()
                .unwrap_or_default()
                == 0
            {
                assert!(Instant::now() < deadline, "the login never reached WeChat");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sim.set_faults(Faults::none()).expect("no faults");
        });
        assert_eq!(answer.ok(200)["bound"], json!(false), "{}", answer.text);
        let calls = sim
            .calls()
            .get(&Endpoint::Jscode2Session)
            .copied()
            .unwrap_or_default();
        assert!(
            calls >= 2,
            "the busy answer was not retried ({calls} calls)"
        );
    })
    .await
}

/// `POST /v1/apps/{appid}/phone` while the access token or getuserphonenumber fails
/// each way: no user, no binding, no event; then the same ticket registers the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_registration_refused_cleanly_while_wechat_fails_and_served_once_it_recovers() {
    bounded("the phone fault cases", Duration::from_secs(40), async {
        let app = app().await;
        let phone = miniauth_e2e::random_phone();
        let user = app.wechat_user(Some(&phone)).await;
        let ticket = app.ticket(APP, user).await;

        // The access token is fetched on the first phone call: WeChat refusing it is
        // WeChat being unavailable too. Fetching a token spends no code, so every
        // failure is replayed.
        let code = app.phone_code(APP, user).await;
        let body = json!({ "ticket": ticket, "code": code });
        for case in cases().into_iter().filter(|c| c.status == 503) {
            let case = Case { calls: 3, ..case };
            refused(&app, Endpoint::StableToken, &case, || app.phone(APP, &body)).await;
        }

        // A phone code WeChat refused without processing stays good: the recovery
        // below uses one, from before the faults ended.
        let mut unspent = None;
        for case in cases() {
            let code = app.phone_code(APP, user).await;
            let body = json!({ "ticket": ticket, "code": code });
            refused(&app, Endpoint::GetUserPhoneNumber, &case, || {
                app.phone(APP, &body)
            })
            .await;
            if case.code_unspent {
                unspent = Some(code);
            }
        }

        // WeChat recovered: the ticket of before the faults registers the user.
        let code = unspent.expect("a case leaves its code unspent");
        let before = app.snapshot().await;
        let answer = app
            .phone(APP, &json!({ "ticket": ticket, "code": code }))
            .await;
        let body = answer.ok(200);
        assert_eq!(body["registered"], json!(true), "{body}");
        assert_eq!(
            app.event_types_after(before.last_event).await,
            ["PhoneVerified", "UserBound"]
        );
        let after = app.snapshot().await;
        assert_eq!(after.users, before.users + 1);
        assert_eq!(after.bindings, before.bindings + 1);
    })
    .await
}
