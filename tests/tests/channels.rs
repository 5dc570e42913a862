//! One person across the channels of a tenant (issue 12): an Official Account, a website
//! and a mobile App log in through `/sns/oauth2/access_token` and land on the user the
//! person's mini program binding names; a snapshot-page user is never bound; the
//! channels without a session key take no phone or profile. On both engines.

use miniauth_e2e::{on_both_engines, Engine, TestApp, Tokens, APP, SECOND_APP};
use miniauth_wechat::sim::{
    Endpoint, OAuthConsent, DEMO_MOBILE_APP_APPID, DEMO_OFFICIAL_ACCOUNT_APPID, DEMO_WEBSITE_APPID,
};
use serde_json::{json, Value};

/// Where the demo apps send browsers back (their `redirect_uris`).
const DONE: &str = "https://shop.example/wechat/done";

on_both_engines!(
    each_channel_logs_the_person_in_to_the_user_of_their_mini_program,
    a_snapshot_user_is_never_bound_or_registered,
    a_channel_without_a_session_key_takes_no_phone_or_profile_and_binds_by_password,
    a_late_unionid_from_a_profile_links_then,
    browser_logins_bind_state_to_the_browser_and_hand_over_a_one_time_result,
    a_unionid_first_revealed_by_a_profile_payload_links_at_once,
);

/// The person agrees to log in to `appid` (its default scope, or `scope`): the code
/// WeChat hands the app.
async fn oauth_code(app: &TestApp, appid: &str, person: u64, scope: Option<&str>) -> String {
    app.device
        .oauth_code(
            person,
            &OAuthConsent {
                appid: appid.to_owned(),
                scope: scope.map(str::to_owned),
                snapshot: false,
            },
        )
        .await
        .expect("an OAuth code from the simulator")
}

/// The history of the only account of `appid`.
async fn history_in(app: &TestApp, appid: &str) -> Vec<Value> {
    let openid = openid_in(app, appid).await;
    app.get(
        &format!("/v1/admin/apps/{appid}/accounts/{openid}/history"),
        Some(&app.admin_token),
    )
    .await
    .ok(200)["events"]
        .as_array()
        .unwrap()
        .clone()
}

fn calls(counts: &miniauth_wechat::sim::CallCounts, endpoint: Endpoint) -> u64 {
    counts.get(&endpoint).copied().unwrap_or(0)
}

async fn each_channel_logs_the_person_in_to_the_user_of_their_mini_program(engine: Engine) {
    let app = miniauth_e2e::spawn_app(engine).await;
    let (user, _, _, person) = app.registered_user(APP).await;
    app.device.reset_calls().await.unwrap();

    for (appid, channel) in [
        (DEMO_OFFICIAL_ACCOUNT_APPID, "official_account"),
        (DEMO_WEBSITE_APPID, "website"),
        (DEMO_MOBILE_APP_APPID, "mobile_app"),
    ] {
        let code = oauth_code(&app, appid, person, None).await;
        let body = app.login(appid, &code).await.ok(200).clone();
        assert_eq!(body["bound"], json!(true), "{appid}: {body}");
        assert_eq!(body["has_phone"], json!(false), "{appid}: {body}");
        assert_eq!(
            body["has_profile"],
            json!(true),
            "WeChat's userinfo: {body}"
        );
        let tokens = Tokens::from_v1(&body["tokens"]);
        assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(user));

        // The history says which channel, and how the binding was made.
        let events = history_in(&app, appid).await;
        let kinds: Vec<(&str, &str)> = events
            .iter()
            .map(|e| {
                (
                    e["event_type"].as_str().unwrap(),
                    e["via"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("SessionObtained", channel),
                ("ProfileDecrypted", "sns_userinfo"),
                ("UserBound", "unionid_match"),
            ],
            "{appid}"
        );
        // A second login is a returning user's: no second profile.
        let code = oauth_code(&app, appid, person, None).await;
        assert_eq!(app.login(appid, &code).await.ok(200)["bound"], json!(true));
        assert_eq!(history_in(&app, appid).await.len(), 4);
    }
    // No billed phone call, one OAuth exchange per login, one userinfo per first login.
    let counts = app.device.calls().await.unwrap();
    assert_eq!(calls(&counts, Endpoint::GetUserPhoneNumber), 0);
    assert_eq!(calls(&counts, Endpoint::Jscode2Session), 0);
    assert_eq!(calls(&counts, Endpoint::OAuthAccessToken), 6);
    assert_eq!(calls(&counts, Endpoint::UserInfo), 3);

    // `me` and GitEgg's user info list every binding with its app's kind.
    let code = oauth_code(&app, DEMO_WEBSITE_APPID, person, None).await;
    let tokens = Tokens::from_v1(&app.login(DEMO_WEBSITE_APPID, &code).await.ok(200)["tokens"]);
    let me = app.me(&tokens.access).await.ok(200).clone();
    let mut kinds: Vec<String> = me["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            format!(
                "{}:{}",
                b["appid"].as_str().unwrap(),
                b["kind"].as_str().unwrap()
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            format!("{APP}:mini_program"),
            format!("{DEMO_OFFICIAL_ACCOUNT_APPID}:official_account"),
            format!("{DEMO_WEBSITE_APPID}:website"),
            format!("{DEMO_MOBILE_APP_APPID}:mobile_app"),
        ]
    );
    let info = app.user_info(&tokens.access).await;
    assert_eq!(info.envelope_ok()["bindings"].as_array().unwrap().len(), 4);
    assert!(info.envelope_ok()["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["kind"] == "mobile_app"));
    // The sns access token is never kept: no row of the store holds it.
    assert!(!app.stored_log_text().await.contains("access_token\":\""));
}

async fn a_snapshot_user_is_never_bound_or_registered(engine: Engine) {
    let app = miniauth_e2e::spawn_app(engine).await;
    let (_, _, _, person) = app.registered_user(APP).await;
    let code = app
        .device
        .oauth_code(
            person,
            &OAuthConsent {
                appid: DEMO_OFFICIAL_ACCOUNT_APPID.to_owned(),
                scope: Some("snsapi_base".to_owned()),
                snapshot: true,
            },
        )
        .await
        .unwrap();
    let answer = app
        .unchanged("a snapshot user's login", || {
            app.login(DEMO_OFFICIAL_ACCOUNT_APPID, &code)
        })
        .await;
    answer.problem(403, "snapshot_user");
    // GitEgg's login refuses it the same way, in its envelope.
    let code = app
        .device
        .oauth_code(
            person,
            &OAuthConsent {
                appid: DEMO_OFFICIAL_ACCOUNT_APPID.to_owned(),
                scope: Some("snsapi_base".to_owned()),
                snapshot: true,
            },
        )
        .await
        .unwrap();
    let query = format!("code={}", miniauth_e2e::enc(&code));
    let gitegg = app
        .unchanged("a snapshot user's GitEgg login", || {
            app.wx("", DEMO_OFFICIAL_ACCOUNT_APPID, "login", &query, None)
        })
        .await;
    gitegg.envelope_err(403);
}

async fn a_channel_without_a_session_key_takes_no_phone_or_profile_and_binds_by_password(
    engine: Engine,
) {
    let app = miniauth_e2e::spawn_app(engine).await;
    // A person new to the tenant opens the website: unbound, a ticket.
    let person = app.wechat_user(Some(&miniauth_e2e::random_phone())).await;
    let code = oauth_code(&app, DEMO_WEBSITE_APPID, person, None).await;
    let login = app.login(DEMO_WEBSITE_APPID, &code).await.ok(200).clone();
    assert_eq!(login["bound"], json!(false), "{login}");
    let ticket = login["ticket"].as_str().unwrap().to_owned();

    // No phone and no profile from a channel without a session key.
    let phone_body = json!({ "ticket": ticket, "code": "any-phone-code" });
    let phone = app
        .unchanged("a phone for a website", || {
            app.phone(DEMO_WEBSITE_APPID, &phone_body)
        })
        .await;
    phone.problem(400, "channel_unsupported");
    let profile_body =
        json!({ "ticket": ticket, "nickname": "Zhao", "avatar_url": "https://a.example/z.png" });
    let profile = app
        .unchanged("a profile for a website", || {
            app.profile(DEMO_WEBSITE_APPID, &profile_body)
        })
        .await;
    profile.problem(400, "channel_unsupported");

    // The person logs in with account + password and binds the website's identity to
    // that user, as on a mini program ...
    let (user, account, password) = app.password_user(None).await;
    let tokens = app.password_tokens(&account, &password).await;
    let answer = app.bind(DEMO_WEBSITE_APPID, &ticket, &tokens.access).await;
    assert_eq!(answer.ok(200)["user_id"], json!(user), "{}", answer.text);
    // ... and the next login of the website is a returning user's.
    let code = oauth_code(&app, DEMO_WEBSITE_APPID, person, None).await;
    assert_eq!(
        app.login(DEMO_WEBSITE_APPID, &code).await.ok(200)["bound"],
        json!(true)
    );
    // The mini program of the same person now links to that user by unionid.
    let body = app.session(APP, person).await;
    assert_eq!(body["bound"], json!(true), "{body}");
    let tokens = Tokens::from_v1(&body["tokens"]);
    assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(user));
}

async fn a_late_unionid_from_a_profile_links_then(engine: Engine) {
    let app = miniauth_e2e::spawn_app(engine).await;
    // Bound on the website (its logins carry the unionid).
    let (user, _, _, person) = app.registered_user(APP).await;
    // The Official Account's snsapi_base login names no unionid: unbound.
    let code = oauth_code(
        &app,
        DEMO_OFFICIAL_ACCOUNT_APPID,
        person,
        Some("snsapi_base"),
    )
    .await;
    let body = app
        .login(DEMO_OFFICIAL_ACCOUNT_APPID, &code)
        .await
        .ok(200)
        .clone();
    assert_eq!(body["bound"], json!(false), "{body}");
    assert_eq!(body["unionid"], Value::Null, "{body}");
    // The person agrees to snsapi_userinfo later: WeChat names the unionid, and the
    // login links then.
    let code = oauth_code(&app, DEMO_OFFICIAL_ACCOUNT_APPID, person, None).await;
    let body = app
        .login(DEMO_OFFICIAL_ACCOUNT_APPID, &code)
        .await
        .ok(200)
        .clone();
    assert_eq!(body["bound"], json!(true), "{body}");
    let tokens = Tokens::from_v1(&body["tokens"]);
    assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(user));
}

/// `POST /v1/apps/{appid}/results` with the handle and a PKCE verifier.
async fn redeem(
    app: &TestApp,
    appid: &str,
    result: &Value,
    verifier: &str,
) -> miniauth_e2e::Answer {
    let body = json!({ "result": result, "code_verifier": verifier });
    app.post_json(&format!("/v1/apps/{appid}/results"), &body, None)
        .await
}

/// The openid of the only account of `appid`.
async fn openid_in(app: &TestApp, appid: &str) -> String {
    let accounts = app
        .query_texts(&format!(
            "SELECT DISTINCT aggregate_id FROM events WHERE aggregate_id LIKE '{appid}:%'"
        ))
        .await;
    assert_eq!(accounts.len(), 1, "one account in {appid}: {accounts:?}");
    accounts[0].clone().unwrap()[appid.len() + 1..].to_owned()
}

/// A browser: follows no redirect, keeps no cookie on its own.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(answer: &reqwest::Response) -> url::Url {
    assert_eq!(answer.status(), 302, "{answer:?}");
    url::Url::parse(answer.headers()["location"].to_str().unwrap()).unwrap()
}

fn query(url: &url::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{name} in {url}"))
}

/// A front end's PKCE pair (RFC 7636): a fresh verifier (32 random bytes, base64url:
/// 43 characters) and its S256 challenge.
fn pkce() -> (String, String) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use sha2::Digest;
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// `authorize` for `appid` with `query` besides the redirect URI.
async fn authorize(app: &TestApp, appid: &str, query: &[(&str, &str)]) -> reqwest::Response {
    browser()
        .get(format!("{}/v1/apps/{appid}/authorize", app.address))
        .query(&[("redirect_uri", DONE)])
        .query(query)
        .send()
        .await
        .unwrap()
}

/// `authorize` for `appid` with the S256 `challenge`: WeChat's consent page and the
/// state cookie.
async fn start_browser_login(app: &TestApp, appid: &str, challenge: &str) -> (url::Url, String) {
    let answer = authorize(
        app,
        appid,
        &[
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let consent = location(&answer);
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    (consent, cookie)
}

/// The person agrees on WeChat's page: where WeChat sends the browser back.
async fn consent(mut page: url::Url, person: u64) -> url::Url {
    page.set_fragment(None);
    page.query_pairs_mut()
        .append_pair("sim_user", &person.to_string());
    location(&browser().get(page).send().await.unwrap())
}

async fn callback(callback: &url::Url, cookie: &str) -> reqwest::Response {
    browser()
        .get(callback.clone())
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

async fn browser_logins_bind_state_to_the_browser_and_hand_over_a_one_time_result(engine: Engine) {
    let app = miniauth_e2e::spawn_app(engine).await;
    let (user, _, _, person) = app.registered_user(APP).await;
    for (appid, page) in [
        (DEMO_OFFICIAL_ACCOUNT_APPID, "/connect/oauth2/authorize"),
        (DEMO_WEBSITE_APPID, "/connect/qrconnect"),
    ] {
        let (verifier, challenge) = pkce();
        let (consent_page, cookie) = start_browser_login(&app, appid, &challenge).await;
        assert_eq!(consent_page.path(), page);
        assert_eq!(query(&consent_page, "appid"), appid);
        assert_eq!(
            consent_page.fragment(),
            (appid == DEMO_OFFICIAL_ACCOUNT_APPID).then_some("wechat_redirect")
        );
        let back = consent(consent_page.clone(), person).await;
        assert_eq!(back.path(), format!("/v1/apps/{appid}/callback"));

        // Another browser (another state cookie) cannot finish this login.
        let (_, other_cookie) = start_browser_login(&app, appid, &challenge).await;
        let stolen = app
            .unchanged("a state from another browser", || {
                callback(&back, &other_cookie)
            })
            .await;
        assert!(stolen.headers().get("location").is_none());
        miniauth_e2e::Answer::read(stolen)
            .await
            .problem(401, "state_invalid");
        // Nor without the cookie, nor with a forged state.
        let mut forged = back.clone();
        let state = query(&back, "state");
        let tampered = format!("{}x", &state[..state.len() - 1]);
        forged
            .query_pairs_mut()
            .clear()
            .append_pair("code", &query(&back, "code"))
            .append_pair("state", &tampered);
        for (what, url, cookie) in [
            ("no cookie", &back, ""),
            ("a forged state", &forged, cookie.as_str()),
        ] {
            let answer = app.unchanged(what, || callback(url, cookie)).await;
            miniauth_e2e::Answer::read(answer)
                .await
                .problem(401, "state_invalid");
        }

        // This browser finishes it: back to the allowed URI with a result, no token.
        let answer = callback(&back, &cookie).await;
        let done = location(&answer);
        assert!(
            done.as_str().starts_with(&format!("{DONE}?result=")),
            "{done}"
        );
        assert!(!done.as_str().contains("token"), "{done}");
        // The state is used once.
        let replay = app
            .unchanged("a replayed state", || callback(&back, &cookie))
            .await;
        miniauth_e2e::Answer::read(replay)
            .await
            .problem(401, "state_used");

        // The handle in the URL is sealed: the openid of the login does not show.
        let result = query(&done, "result");
        assert!(result.starts_with("r1."), "{result}");
        let openid = openid_in(&app, appid).await;
        assert!(!done.as_str().contains(&openid), "{done}");
        let handle = json!(result);
        // Whoever read the URL but not the front end's verifier: no verifier, a
        // malformed one (the challenge itself, plain-style), redeem nothing, write
        // nothing and spend nothing.
        for (what, bad) in [
            ("no verifier", String::new()),
            ("a short verifier", "a".repeat(42)),
            (
                "a verifier of forbidden characters",
                format!("{}+/", &verifier[2..]),
            ),
        ] {
            app.unchanged(what, || redeem(&app, appid, &handle, &bad))
                .await
                .problem(400, "invalid_field");
        }
        // The front end's own verifier: the answer of the login, the person's user.
        let body = redeem(&app, appid, &handle, &verifier)
            .await
            .ok(200)
            .clone();
        assert_eq!(body["bound"], json!(true), "{body}");
        let tokens = Tokens::from_v1(&body["tokens"]);
        assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(user));
        // Once.
        redeem(&app, appid, &handle, &verifier)
            .await
            .problem(401, "result_invalid");
        // A ticket is not a result, even with the verifier.
        app.unchanged("a ticket as a result", || {
            redeem(&app, appid, &body["ticket"], &verifier)
        })
        .await
        .problem(401, "result_invalid");
        // A handle is not a ticket: not for tokens, binding or the phone.
        let grant = [("grant_type", "ticket"), ("ticket", result.as_str())];
        app.unchanged("a result handle as a ticket", || {
            app.post_form("/v1/token", &grant, None)
        })
        .await
        .problem(401, "ticket_malformed");
        let (binding, bind) = (
            format!("/v1/apps/{appid}/binding"),
            json!({ "ticket": result }),
        );
        app.unchanged("a result handle to bind with", || {
            app.post_json(&binding, &bind, Some(&tokens.access))
        })
        .await
        .problem(401, "ticket_malformed");
        let (phone, code) = (
            format!("/v1/apps/{APP}/phone"),
            json!({ "ticket": result, "code": "0123456789abcdef" }),
        );
        app.unchanged("a result handle for a phone", || {
            app.post_json(&phone, &code, None)
        })
        .await
        .problem(401, "ticket_malformed");

        // A stolen handle with a wrong (well-formed) verifier: nothing written, and the
        // handle is spent, so the thief has had their one guess.
        let (verifier, challenge) = pkce();
        let (page, cookie) = start_browser_login(&app, appid, &challenge).await;
        let back = consent(page, person).await;
        let done = location(&callback(&back, &cookie).await);
        let stolen = json!(query(&done, "result"));
        let (guess, _) = pkce();
        app.unchanged("a stolen result and a guessed verifier", || {
            redeem(&app, appid, &stolen, &guess)
        })
        .await
        .problem(401, "code_verifier_mismatch");
        app.unchanged("the front end after the thief", || {
            redeem(&app, appid, &stolen, &verifier)
        })
        .await
        .problem(401, "result_invalid");
    }

    // PKCE is required, S256 only: a missing challenge, `plain` or no method are refused
    // with no redirect and no cookie.
    let (_, challenge) = pkce();
    for (query, code) in [
        (vec![], "code_challenge_required"),
        (
            vec![("code_challenge_method", "S256")],
            "code_challenge_required",
        ),
        (
            vec![("code_challenge", challenge.as_str())],
            "code_challenge_method_unsupported",
        ),
        (
            vec![
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "plain"),
            ],
            "code_challenge_method_unsupported",
        ),
        (
            vec![
                ("code_challenge", "short"),
                ("code_challenge_method", "S256"),
            ],
            "invalid_field",
        ),
    ] {
        let answer = authorize(&app, DEMO_WEBSITE_APPID, &query).await;
        assert!(answer.headers().get("location").is_none());
        assert!(answer.headers().get("set-cookie").is_none());
        miniauth_e2e::Answer::read(answer).await.problem(400, code);
    }

    // A redirect URI not on the app's list: a clear error and no redirect at all.
    for bad in [
        "https://evil.example/steal",
        "https://shop.example/wechat/done/",
        "https://shop.example/wechat/done?x=1",
    ] {
        let answer = browser()
            .get(format!(
                "{}/v1/apps/{DEMO_OFFICIAL_ACCOUNT_APPID}/authorize",
                app.address
            ))
            .query(&[("redirect_uri", bad)])
            .send()
            .await
            .unwrap();
        assert!(answer.headers().get("location").is_none());
        assert!(answer.headers().get("set-cookie").is_none());
        miniauth_e2e::Answer::read(answer)
            .await
            .problem(400, "redirect_uri_not_allowed");
    }
    // A mobile App and a mini program have no browser login.
    for appid in [DEMO_MOBILE_APP_APPID, APP] {
        app.get(
            &format!(
                "/v1/apps/{appid}/authorize?redirect_uri={}",
                miniauth_e2e::enc(DONE)
            ),
            None,
        )
        .await
        .problem(400, "channel_unsupported");
    }
}

/// The app as the simulator knows it, bound to the Open Platform or not.
async fn open_platform(app: &TestApp, appid: &str, bound: bool) {
    app.device
        .register_app(&miniauth_wechat::sim::AppRegistration {
            appid: appid.to_owned(),
            secret: format!("secret-of-{appid}"),
            unionid: bound,
            kind: Default::default(),
        })
        .await
        .unwrap();
}

async fn a_unionid_first_revealed_by_a_profile_payload_links_at_once(engine: Engine) {
    let app = miniauth_e2e::spawn_app(engine).await;
    let (user, _, _, person) = app.registered_user(APP).await;
    // The second mini program's code2session names no unionid yet: unbound.
    open_platform(&app, SECOND_APP, false).await;
    let login = app.session(SECOND_APP, person).await;
    assert_eq!(login["bound"], json!(false), "{login}");
    let ticket = login["ticket"].as_str().unwrap().to_owned();
    // The legacy profile payload reveals it (the app joined the Open Platform since).
    open_platform(&app, SECOND_APP, true).await;
    let bundle = app
        .device
        .user_info(&miniauth_e2e::app(SECOND_APP), person)
        .await
        .unwrap();
    let profile = app
        .profile(
            SECOND_APP,
            &json!({
                "ticket": ticket, "raw_data": bundle.raw_data, "signature": bundle.signature,
                "encrypted_data": bundle.encrypted_data, "iv": bundle.iv,
            }),
        )
        .await;
    profile.ok(200);
    // Linked when the profile was accepted: the history says so, and the next login
    // is a returning user's.
    let events = history_in(&app, SECOND_APP).await;
    let bound = events
        .iter()
        .find(|e| e["event_type"] == "UserBound")
        .expect("linked at the profile");
    assert_eq!(bound["via"], "unionid_match", "{bound}");
    assert_eq!(bound["user_id"], json!(user));
    let again = app.session(SECOND_APP, person).await;
    assert_eq!(again["bound"], json!(true), "{again}");
}
