//! The console (`/console`) in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, started here on a free port), against miniauth on SQLite with the
//! WeChat simulator. Screenshots of each page go to `target/console-screenshots/`.
//!
//! Without chromedriver the browser test says loudly that it is skipped, unless `CI`
//! is set: then a missing browser fails it (`.ci/run` installs `chromium` and
//! `chromium-driver`). The forged-form and session tests need no browser.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use miniauth_application::ports::Clock;
use miniauth_e2e::{spawn_app, spawn_app_with, Engine, TestApp, APP};
use serde_json::json;

// ---- the demo data ---------------------------------------------------------------

/// What the scenario made: a person bound at T, unbound at T+10 min and bound again
/// at T+70 min (the rebinding), and another person at T+75 min ("now").
struct Demo {
    user: i64,
    phone: String,
    openid: String,
    other_openid: String,
}

async fn demo_users(app: &TestApp) -> Demo {
    let (user, tokens, phone, wechat) = app.registered_user(APP).await;
    let openid = app.bindings_of(user).await[0].1.clone();
    app.clock.advance(chrono::Duration::minutes(10));
    app.unbind(APP, &tokens.access).await.ok(204);
    app.clock.advance(chrono::Duration::minutes(60));
    // The same person logs in again and taps the phone button: bound again by phone.
    let ticket = app.ticket(APP, wechat).await;
    let code = app.phone_code(APP, wechat).await;
    let again = app
        .phone(APP, &json!({ "ticket": ticket, "code": code }))
        .await;
    assert_eq!(again.ok(200)["user_id"], json!(user));
    app.clock.advance(chrono::Duration::minutes(5));
    let (other, _, _, _) = app.registered_user(APP).await;
    let other_openid = app.bindings_of(other).await[0].1.clone();
    Demo {
        user,
        phone,
        openid,
        other_openid,
    }
}

// ---- chromedriver --------------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// chromedriver, ended when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver; `None` (after saying so loudly) when it is not installed and
/// this is not CI.
async fn chromedriver() -> Option<Driver> {
    let Some(binary) = on_path("chromedriver") else {
        if std::env::var_os("CI").is_some() {
            panic!("chromedriver is not installed but CI is set: .ci/run must install chromium and chromium-driver");
        }
        eprintln!(
            "\n*** SKIPPED: the console's browser test needs chromedriver \
             (apt-get install chromium chromium-driver). Under CI=true this fails. ***\n"
        );
        return None;
    };
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    for _ in 0..100 {
        if let Ok(answer) = reqwest::get(&status).await {
            if answer.status().is_success() {
                return Some(driver);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {}", driver.url);
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1400", "--force-device-scale-factor=1", "--lang=en-US"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session over WebDriver")
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/console-screenshots");
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).expect("write it");
}

async fn text(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("its text")
}

async fn page_text(browser: &Client) -> String {
    text(browser, "main").await
}

/// Sets the `as of` control (a `datetime-local`: its typing differs by locale, so the
/// value is set as the control stores it) and submits its form by keyboard (Enter).
async fn show_as_of(browser: &Client, at: chrono::DateTime<chrono::Utc>) {
    let value = at.format("%Y-%m-%dT%H:%M:%S").to_string();
    browser
        .execute(
            "document.getElementById('as_of').value = arguments[0];",
            vec![json!(value)],
        )
        .await
        .expect("set as of");
    browser
        .find(Locator::Id("as_of"))
        .await
        .expect("the as-of control")
        .send_keys("\u{E007}")
        .await
        .expect("press Enter");
    let wanted = format!("as_of={}", value.replace(':', "%3A"));
    for _ in 0..100 {
        let url = browser.current_url().await.expect("the current URL");
        if url.query().is_some_and(|q| q.contains(&wanted)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the page as of {value} did not load");
}

// ---- the browser test ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_console_in_a_real_browser() {
    let Some(driver) = chromedriver().await else {
        return;
    };
    let app = spawn_app(Engine::Sqlite).await;
    let demo = demo_users(&app).await;
    let now = app.clock.now();
    let browser = browser(&driver).await;
    let base = &app.address;

    // Sign in, by keyboard: the token field has the focus; Enter submits.
    browser
        .goto(&format!("{base}/console"))
        .await
        .expect("open the console");
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/sign-in"));
    screenshot(&browser, "01-sign-in").await;
    let token = browser.active_element().await.expect("the focused field");
    assert_eq!(token.attr("id").await.unwrap().as_deref(), Some("token"));
    token
        .send_keys(&format!("{}\u{E007}", app.admin_token))
        .await
        .expect("type the token and press Enter");
    browser
        .wait()
        .for_element(Locator::Css("svg.chart"))
        .await
        .expect("the overview");
    let overview = page_text(&browser).await;
    assert!(overview.contains("Logins per minute"), "{overview}");
    assert!(overview.contains("answering"), "{overview}");
    assert!(
        overview.contains("0 events (read models are current)"),
        "{overview}"
    );
    // Three logins ended with tokens or a ticket in the last hour of the service clock.
    assert!(
        browser
            .find_all(Locator::Css("svg.chart rect.bar"))
            .await
            .unwrap()
            .len()
            >= 2,
        "the chart draws the demo's logins"
    );
    screenshot(&browser, "02-overview").await;

    // Find the user by their full phone number: shown masked.
    browser
        .find(Locator::LinkText("Search"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Id("kind"))
        .await
        .unwrap()
        .select_by_value("phone")
        .await
        .unwrap();
    browser
        .find(Locator::Id("q"))
        .await
        .unwrap()
        .send_keys(&format!("{}\u{E007}", demo.phone))
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Id("results"))
        .await
        .unwrap();
    let results = page_text(&browser).await;
    assert!(results.contains("Users found: 1"), "{results}");
    let address = browser.current_url().await.unwrap();
    assert!(
        !address.as_str().contains(&demo.phone[7..]),
        "the phone is posted, not in the address: {address}"
    );
    assert!(!results.contains(&demo.phone), "the phone is shown masked");
    assert!(results.contains(&demo.phone[7..]), "{results}");
    screenshot(&browser, "03-search").await;
    browser
        .find(Locator::LinkText(&format!("User {}", demo.user)))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The user's page: bound now; the timeline has bound, unbound and bound again.
    browser
        .wait()
        .for_element(Locator::Css("svg.timeline"))
        .await
        .unwrap();
    let user_page = page_text(&browser).await;
    assert!(user_page.contains(&demo.openid), "{user_page}");
    let marks = browser
        .find_all(Locator::Css("svg.timeline a"))
        .await
        .unwrap();
    assert_eq!(marks.len(), 3, "bound, unbound, bound again");
    screenshot(&browser, "04-user-timeline").await;
    let as_of_section = || text(&browser, "#asof-heading + table, #asof-heading + p");
    assert!(as_of_section().await.contains(&demo.openid));
    // As of between the unbind and the rebinding: nothing held.
    show_as_of(&browser, now - chrono::Duration::minutes(35)).await;
    assert_eq!(as_of_section().await, "No binding.");
    screenshot(&browser, "05-user-as-of-before-rebinding").await;
    // Before the unbind: the first binding, made by auto-registration.
    show_as_of(&browser, now - chrono::Duration::minutes(70)).await;
    let first = as_of_section().await;
    assert!(
        first.contains(&demo.openid) && first.contains("auto_registration"),
        "{first}"
    );

    // Unbind with a reason from the identity's page; the history says who and why.
    browser
        .goto(&format!("{base}/console/accounts/{APP}/{}", demo.openid))
        .await
        .unwrap();
    browser
        .find(Locator::Id("reason"))
        .await
        .unwrap()
        .select_by_value("device_lost")
        .await
        .unwrap();
    browser
        .find(Locator::Css("form[action$='/unbind'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css(".notice"))
        .await
        .unwrap();
    let account = page_text(&browser).await;
    assert!(
        account.contains("Bound to\nnobody") || account.contains("Bound to nobody"),
        "{account}"
    );
    assert!(account.contains("note device_lost"), "{account}");
    screenshot(&browser, "06-account-unbound").await;
    assert!(app.bindings_of(demo.user).await.is_empty());
    browser
        .goto(&format!("{base}/console/users/{}", demo.user))
        .await
        .unwrap();
    let events = text(&browser, "table.events").await;
    let last = events.lines().last().unwrap_or_default().to_owned();
    assert!(
        last.contains("unbound") && last.contains("device_lost") && last.contains("console"),
        "{events}"
    );

    // Verify a clean log.
    browser
        .find(Locator::LinkText("Verify the log"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Css("form[action='/console/verify'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css(".verdict"))
        .await
        .unwrap();
    assert!(text(&browser, ".verdict")
        .await
        .starts_with("OK: no event was edited"));
    screenshot(&browser, "07-verify-clean").await;

    // Erase, confirmed by typing the OpenID (the button waits for it).
    browser
        .goto(&format!("{base}/console/accounts/{APP}/{}", demo.openid))
        .await
        .unwrap();
    let erase = browser
        .find(Locator::Css("form[action$='/erase'] button"))
        .await
        .unwrap();
    assert!(
        !erase.is_enabled().await.unwrap(),
        "disabled until confirmed"
    );
    let confirm = browser.find(Locator::Id("confirm")).await.unwrap();
    confirm.send_keys("not-it").await.unwrap();
    assert!(!erase.is_enabled().await.unwrap());
    confirm.clear().await.unwrap();
    confirm.send_keys(&demo.openid).await.unwrap();
    assert!(erase.is_enabled().await.unwrap());
    screenshot(&browser, "08-erase-confirm").await;
    erase.click().await.unwrap();
    browser
        .wait()
        .for_element(Locator::Css(".notice"))
        .await
        .unwrap();
    let erased = page_text(&browser).await;
    assert!(erased.contains("PersonalDataErased"), "{erased}");
    assert!(erased.contains("phone erased"), "{erased}");
    assert!(!erased.contains(&demo.phone[7..]), "{erased}");
    screenshot(&browser, "09-account-erased").await;

    // Tamper with the other person's binding by SQL; verify names the event and why.
    let changed = app
        .execute_sql(&format!(
            "UPDATE events SET payload = replace(payload, 'auto_registration', 'phone_match') \
             WHERE aggregate_id = '{APP}:{}' AND event_type = 'UserBound'",
            demo.other_openid
        ))
        .await;
    assert_eq!(changed, 1);
    browser
        .goto(&format!("{base}/console/verify"))
        .await
        .unwrap();
    browser
        .find(Locator::Css("form[action='/console/verify'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css("tr.finding"))
        .await
        .unwrap();
    assert!(text(&browser, ".verdict")
        .await
        .starts_with("TAMPERING FOUND"));
    let finding = text(&browser, "tr.finding").await;
    assert!(
        finding.contains("edited") && finding.contains(&demo.other_openid),
        "{finding}"
    );
    screenshot(&browser, "10-verify-tampered").await;
    browser.goto(&format!("{base}/console")).await.unwrap();
    let overview = page_text(&browser).await;
    assert!(overview.contains("finding(s) at"), "{overview}");

    // Sign out: back to the sign-in page, and the console is closed.
    browser
        .find(Locator::Css("form.signout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Id("token"))
        .await
        .unwrap();
    browser.goto(&format!("{base}/console")).await.unwrap();
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/sign-in"));
    browser.close().await.unwrap();
}

// ---- without a browser: forged forms and sessions ------------------------------

/// A console session over plain HTTP, cookies handled by hand.
struct Operator {
    base: String,
    client: reqwest::Client,
    cookie: String,
}

fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

fn form_token(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a form token") + 19;
    html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

impl Operator {
    async fn sign_in(app: &TestApp) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = app.address.clone();
        let form = client
            .get(format!("{base}/console/sign-in"))
            .send()
            .await
            .unwrap();
        let pre = set_cookie(&form, "miniauth_console_signin").expect("the sign-in cookie");
        let token = form_token(&form.text().await.unwrap());
        let signed_in = client
            .post(format!("{base}/console/sign-in"))
            .header("cookie", pre)
            .form(&[
                ("csrf", token.as_str()),
                ("token", app.admin_token.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), 303);
        let header = signed_in
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            header.contains("HttpOnly") && header.contains("SameSite=Strict"),
            "{header}"
        );
        let cookie = set_cookie(&signed_in, "miniauth_console").expect("the session cookie");
        Self {
            base,
            client,
            cookie,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn csrf(&self) -> String {
        form_token(&self.get("/console").await.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_form_post_changes_nothing() {
    let app = spawn_app(Engine::Sqlite).await;
    let (user, _, _, _) = app.registered_user(APP).await;
    let openid = app.bindings_of(user).await[0].1.clone();
    let operator = Operator::sign_in(&app).await;
    let page = operator.get("/console").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let status = |user: i64| {
        let app = &app;
        async move {
            app.query_texts(&format!("SELECT status FROM users WHERE id = {user}"))
                .await
        }
    };
    let unbind = format!("/console/accounts/{APP}/{openid}/unbind");
    let disable = format!("/console/users/{user}/disable");
    for (what, form) in [
        ("no token", vec![("reason", "device_lost")]),
        (
            "a wrong token",
            vec![("reason", "device_lost"), ("csrf", "forged")],
        ),
    ] {
        let answer = app.unchanged(what, || operator.post(&unbind, &form)).await;
        assert_eq!(answer.status(), 403, "{what}");
        assert!(answer.text().await.unwrap().contains("Nothing was changed"));
        let answer = app.unchanged(what, || operator.post(&disable, &form)).await;
        assert_eq!(answer.status(), 403, "{what}");
        assert_eq!(status(user).await, vec![Some("active".to_owned())]);
    }
    // Without the session cookie a form goes to the sign-in page, with nothing done.
    let csrf = operator.csrf().await;
    let anonymous = app
        .unchanged("no session", || {
            operator
                .client
                .post(format!("{}{disable}", app.address))
                .form(&[("csrf", csrf.as_str())])
                .send()
        })
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(anonymous.headers()["location"], "/console/sign-in");
    // The real form does it.
    let done = operator.post(&disable, &[("csrf", &csrf)]).await;
    assert_eq!(done.status(), 303);
    assert_eq!(status(user).await, vec![Some("disabled".to_owned())]);
    // A sign-in form posted without its own token is refused too, and a wrong token
    // is refused without saying more.
    let forged = operator
        .client
        .post(format!("{}/console/sign-in", app.address))
        .form(&[("token", app.admin_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}

/// Sessions are signed cookies: another instance on the same store accepts them, and
/// signing out on one ends the session on every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_spans_instances_and_signing_out_ends_it_everywhere() {
    let one = spawn_app(Engine::Postgres).await;
    let two = one.another_instance().await;
    let operator = Operator::sign_in(&one).await;
    let on_two = Operator {
        base: two.address.clone(),
        client: operator.client.clone(),
        cookie: operator.cookie.clone(),
    };
    assert_eq!(on_two.get("/console").await.status(), 200);
    let csrf = operator.csrf().await;
    let out = operator.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), 303);
    assert!(set_cookie(&out, "miniauth_console").is_some_and(|c| c == "miniauth_console="));
    for (name, instance) in [("one", &operator), ("two", &on_two)] {
        let answer = instance.get("/console").await;
        assert_eq!(
            answer.status(),
            303,
            "instance {name} still accepts a signed-out session"
        );
    }
    // Idle past the timeout: the next request goes to the sign-in page.
    let again = Operator::sign_in(&one).await;
    assert_eq!(again.get("/console").await.status(), 200);
    one.clock.advance(chrono::Duration::minutes(16));
    assert_eq!(again.get("/console").await.status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_does_not_exist_without_an_admin_token() {
    let app = spawn_app_with(Engine::Postgres, |config| {
        config.admin.token = None;
        // The embedded default generates a token; a configured deployment does not.
        config.demo = false;
    })
    .await;
    for path in [
        "/console",
        "/console/sign-in",
        "/console/assets/console.css",
    ] {
        let answer = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 404, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_refused_and_throttled() {
    let app = spawn_app_with(Engine::Sqlite, |config| {
        config.throttle.admin_token_tries_per_client = 3;
    })
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let attempt = |token: String| {
        let client = client.clone();
        let base = app.address.clone();
        async move {
            let form = client
                .get(format!("{base}/console/sign-in"))
                .send()
                .await
                .unwrap();
            let pre = set_cookie(&form, "miniauth_console_signin").unwrap();
            let csrf = form_token(&form.text().await.unwrap());
            client
                .post(format!("{base}/console/sign-in"))
                .header("cookie", pre)
                .form(&[("csrf", csrf.as_str()), ("token", token.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            attempt("not-the-admin-token".into())
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [401, 401, 401, 429]);
    // Throttled, even the right token waits: the limiter answers before the compare.
    assert_eq!(attempt(app.admin_token.clone()).await.status(), 429);
}

miniauth_e2e::on_both_engines!(an_unbind_from_the_console_is_recorded_and_ends_the_app_sessions);

/// Search by account name and phone; an unbind from the console records the console as
/// actor with the reason code, ends the user's sessions through the app, and refuses
/// a reason that is not on the list without writing anything.
async fn an_unbind_from_the_console_is_recorded_and_ends_the_app_sessions(engine: Engine) {
    let app = spawn_app(engine).await;
    let (user, tokens, phone, _) = app.registered_user(APP).await;
    let openid = app.bindings_of(user).await[0].1.clone();
    let (bob, account, _) = app.password_user(None).await;
    let operator = Operator::sign_in(&app).await;
    let csrf = operator.csrf().await;
    // An account name by link (GET) …
    let by_account = operator
        .get(&format!("/console/search?kind=account&q={account}"))
        .await;
    assert_eq!(by_account.status(), 200);
    let by_account = by_account.text().await.unwrap();
    assert!(
        by_account.contains(&format!("/console/users/{bob}\"")),
        "{by_account}"
    );
    // … a phone number only by the posted form, with the session's form token: never
    // in a URL (history, proxy logs).
    let found = |phone: String| {
        let (operator, csrf) = (&operator, &csrf);
        async move {
            let form = [("csrf", csrf.as_str()), ("kind", "phone"), ("q", &phone)];
            let answer = operator.post("/console/search", &form).await;
            assert_eq!(answer.status(), 200);
            answer.text().await.unwrap()
        }
    };
    let page = operator.get("/console/search").await.text().await.unwrap();
    assert!(
        page.contains(r#"method="post" action="/console/search""#),
        "{page}"
    );
    let by_phone = found(phone.clone()).await;
    assert!(by_phone.contains(&format!("/console/users/{user}\"")));
    assert!(!by_phone.contains(&phone), "the phone is shown masked");
    assert!(found(phone[..10].to_owned())
        .await
        .contains("Users found: 0"));
    let in_url = operator
        .get(&format!("/console/search?kind=phone&q={phone}"))
        .await;
    assert_eq!(in_url.status(), 400);
    let in_url = in_url.text().await.unwrap();
    assert!(!in_url.contains("Users found"), "not looked up: {in_url}");
    assert!(!in_url.contains(&phone), "not written back: {in_url}");
    let forged = operator
        .post("/console/search", &[("kind", "phone"), ("q", &phone)])
        .await;
    assert_eq!(forged.status(), 403);

    let unbind = format!("/console/accounts/{APP}/{openid}/unbind");
    let off_list = [("csrf", csrf.as_str()), ("reason", "Mr Wang called")];
    let refused = app
        .unchanged("a reason off the list", || {
            operator.post(&unbind, &off_list)
        })
        .await;
    assert_eq!(refused.status(), 400);
    let done = operator
        .post(&unbind, &[("csrf", &csrf), ("reason", "wrong_user")])
        .await;
    assert_eq!(done.status(), 303);
    let history = app
        .get(
            &format!("/v1/admin/apps/{APP}/accounts/{openid}/history"),
            Some(&app.admin_token),
        )
        .await;
    let events = history.ok(200)["events"].as_array().unwrap().clone();
    let last = events.last().unwrap();
    assert_eq!(last["event_type"], "Unbound");
    assert_eq!(last["reason"], "administrator");
    assert_eq!(last["note"], "wrong_user");
    assert_eq!(last["actor"], "console");
    assert!(app.bindings_of(user).await.is_empty());
    // The sessions the user logged in to through the app ended with the binding.
    app.me(&tokens.access)
        .await
        .problem(401, "access_token_revoked");
    assert_eq!(app.refresh(&tokens.refresh).await.status, 401);
    // Nothing bound any more: said so, nothing written.
    let form = [("csrf", csrf.as_str()), ("reason", "wrong_user")];
    let again = app
        .unchanged("a second unbind", || operator.post(&unbind, &form))
        .await;
    assert_eq!(again.status(), 404);
}

/// A delivery that ran out of attempts shows on the console's webhooks page and is
/// retried from there (with the form's token; a forged post retries nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_webhook_is_shown_and_retried_from_the_console() {
    // A receiver that is not there: every attempt fails to connect.
    let closed = format!("http://127.0.0.1:{}/hook", free_port());
    let app = spawn_app_with(Engine::Sqlite, move |config| {
        config.webhooks = vec![miniauth::integration::WebhookSection {
            id: "crm".into(),
            url: closed,
            secret: Some(miniauth_application::Secret::new(format!(
                "whsec_{}",
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            ))),
            secret_env: None,
            events: vec!["user_bound".into()],
            personal_data: false,
            tenant: None,
            apps: Vec::new(),
        }];
        config.webhook_delivery.max_attempts = 1;
        config.webhook_delivery.timeout_ms = 300;
    })
    .await;
    let delivery = app.webhooks.clone().expect("webhooks are configured");
    let operator = Operator::sign_in(&app).await;
    let empty = operator
        .get("/console/webhooks")
        .await
        .text()
        .await
        .unwrap();
    assert!(empty.contains("No delivery is parked"), "{empty}");
    // The subscription is listed with its tenant (the only one: left out in the file).
    assert!(
        empty.contains(r#"<td class="tenant">default</td>"#),
        "{empty}"
    );

    app.registered_user(APP).await;
    for _ in 0..50 {
        delivery.round().await.expect("a delivery round");
        if !delivery.parked().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let parked = delivery.parked().await.unwrap();
    assert_eq!(parked.len(), 1, "one delivery parked");
    let id = parked[0].webhook_id.clone();
    let page = operator
        .get("/console/webhooks")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&id) && page.contains("Retry now"), "{page}");

    let forged = operator
        .post(
            "/console/webhooks/retry",
            &[("webhook_id", id.as_str()), ("csrf", "forged")],
        )
        .await;
    assert_eq!(forged.status(), 403);
    assert_eq!(delivery.parked().await.unwrap().len(), 1, "still parked");

    let csrf = operator.csrf().await;
    let retried = operator
        .post(
            "/console/webhooks/retry",
            &[("webhook_id", id.as_str()), ("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(retried.status(), 200);
    let page = retried.text().await.unwrap();
    assert!(page.contains("Retried"), "{page}");
    assert!(delivery.parked().await.unwrap().is_empty(), "due again");
    let again = operator
        .post(
            "/console/webhooks/retry",
            &[("webhook_id", id.as_str()), ("csrf", csrf.as_str())],
        )
        .await;
    assert!(again
        .text()
        .await
        .unwrap()
        .contains("No parked delivery has this id"));
}
