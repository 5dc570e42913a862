//! One person across the mini programs of a tenant: a login whose unionid is bound, in
//! another app of the same tenant, to one user is bound to that user at once (issue
//! 12, seed step 6). On both engines.

use miniauth::config::TenantSection;
use miniauth_application::RegistrationPolicy;
use miniauth_e2e::{
    app_section, enc, on_both_engines, random_phone, spawn_app, spawn_app_with, Engine, Tokens,
    APP, CLOSED_APP, SECOND_APP, TENANT,
};
use miniauth_wechat::sim::{AppRegistration, Endpoint};
use serde_json::{json, Value};

on_both_engines!(
    a_person_bound_in_one_app_is_logged_in_at_once_in_another,
    bindings_naming_two_users_link_nothing_and_say_so,
    no_link_across_tenants,
    no_link_when_the_tenant_turns_it_off,
    a_unionid_learned_later_links_then,
    fifty_concurrent_first_logins_of_one_person_in_two_apps_end_with_one_user,
);

/// The admin history of (appid, openid).
async fn history(app: &miniauth_e2e::TestApp, appid: &str, openid: &str) -> Value {
    app.get(
        &format!("/v1/admin/apps/{appid}/accounts/{openid}/history"),
        Some(&app.admin_token),
    )
    .await
    .ok(200)
    .clone()
}

async fn a_person_bound_in_one_app_is_logged_in_at_once_in_another(engine: Engine) {
    let app = spawn_app(engine).await;
    // Registered by phone in the first app.
    let (user, _, _, wechat) = app.registered_user(APP).await;
    app.device.reset_calls().await.unwrap();

    // The same person opens the second mini program: one round trip, tokens for the
    // same user, and no billed phone call to WeChat.
    let code = app.wx_login(SECOND_APP, wechat).await;
    let answer = app.login(SECOND_APP, &code).await;
    let body = answer.ok(200).clone();
    assert_eq!(body["bound"], json!(true), "{body}");
    let tokens = Tokens::from_v1(&body["tokens"]);
    assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(user));
    let calls = app.device.calls().await.unwrap();
    assert_eq!(
        calls
            .get(&Endpoint::GetUserPhoneNumber)
            .copied()
            .unwrap_or(0),
        0,
        "{calls:?}"
    );

    // The audit shows how: unionid_match, and the account it follows.
    let second_openid = app
        .query_texts(&format!(
            "SELECT aggregate_id FROM events WHERE aggregate_id LIKE '{SECOND_APP}:%'"
        ))
        .await[0]
        .clone()
        .expect("the second app's account")[SECOND_APP.len() + 1..]
        .to_owned();
    let events = history(&app, SECOND_APP, &second_openid).await;
    let bound = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "UserBound")
        .expect("a UserBound")
        .clone();
    assert_eq!(bound["via"], "unionid_match", "{bound}");
    assert_eq!(bound["user_id"], json!(user));
    let first_account = app
        .query_texts(&format!(
            "SELECT aggregate_id FROM events WHERE aggregate_id LIKE '{APP}:%'"
        ))
        .await[0]
        .clone()
        .expect("the first app's account");
    assert_eq!(bound["linked_from"], json!(first_account));

    // GitEgg's login says bound too, in a third app of the tenant.
    let code = app.wx_login(CLOSED_APP, wechat).await;
    let gitegg = app
        .wx(
            "",
            CLOSED_APP,
            "login",
            &format!("code={}", enc(&code)),
            None,
        )
        .await;
    assert_eq!(gitegg.envelope_ok()["userBindAlready"], json!(true));
    let user_bindings = app
        .get(
            &format!("/v1/admin/users/{user}/bindings"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(
        user_bindings.ok(200)["bindings"].as_array().unwrap().len(),
        3,
        "{}",
        user_bindings.text
    );
}

async fn bindings_naming_two_users_link_nothing_and_say_so(engine: Engine) {
    let app = spawn_app(engine).await;
    let wechat = app.wechat_user(None).await;
    // Unbound in two apps, then each bound by password to a different user: explicit
    // binds are the user's own choice.
    let ticket_first = app.ticket(APP, wechat).await;
    let ticket_second = app.ticket(SECOND_APP, wechat).await;
    let (one, account_one, password_one) = app.password_user(None).await;
    let (two, account_two, password_two) = app.password_user(None).await;
    let access_one = app
        .password_tokens(&account_one, &password_one)
        .await
        .access;
    let access_two = app
        .password_tokens(&account_two, &password_two)
        .await
        .access;
    app.bind(APP, &ticket_first, &access_one).await.ok(200);
    app.bind(SECOND_APP, &ticket_second, &access_two)
        .await
        .ok(200);

    // A third app: its bindings name two users, so the login stays unbound …
    let code = app.wx_login(CLOSED_APP, wechat).await;
    let body = app.login(CLOSED_APP, &code).await.ok(200).clone();
    assert_eq!(body["bound"], json!(false), "{body}");
    assert_eq!(body["tokens"], Value::Null);
    // … and its history says why.
    let account = app
        .query_texts(&format!(
            "SELECT aggregate_id FROM events WHERE aggregate_id LIKE '{CLOSED_APP}:%'"
        ))
        .await[0]
        .clone()
        .unwrap();
    let events = history(&app, CLOSED_APP, &account[CLOSED_APP.len() + 1..]).await;
    let declined = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "LinkDeclined")
        .expect("a LinkDeclined")
        .clone();
    assert_eq!(declined["reason"], "unionid_bound_to_several_users");
    let mut users = vec![one, two];
    users.sort();
    assert_eq!(declined["users"], json!(users));

    // Logging in again declines the same: the history says it once.
    let code = app.wx_login(CLOSED_APP, wechat).await;
    assert_eq!(
        app.login(CLOSED_APP, &code).await.ok(200)["bound"],
        json!(false)
    );
    let events = history(&app, CLOSED_APP, &account[CLOSED_APP.len() + 1..]).await;
    let declines = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "LinkDeclined")
        .count();
    assert_eq!(declines, 1, "{events}");
}

async fn no_link_across_tenants(engine: Engine) {
    const OTHER_APP: &str = "wxothertenant00005";
    let app = spawn_app_with(engine, |config| {
        let mut other = app_section(OTHER_APP, RegistrationPolicy::Closed);
        other.tenant = "other".to_owned();
        config.apps.push(other);
    })
    .await;
    let (_, _, _, wechat) = app.registered_user(APP).await;
    let code = app.wx_login(OTHER_APP, wechat).await;
    let body = app.login(OTHER_APP, &code).await.ok(200).clone();
    assert_eq!(body["bound"], json!(false), "another tenant: {body}");
}

async fn no_link_when_the_tenant_turns_it_off(engine: Engine) {
    let app = spawn_app_with(engine, |config| {
        config.tenants.insert(
            TENANT.to_owned(),
            TenantSection {
                link_by_unionid: false,
            },
        );
    })
    .await;
    let (_, _, _, wechat) = app.registered_user(APP).await;
    let code = app.wx_login(SECOND_APP, wechat).await;
    let body = app.login(SECOND_APP, &code).await.ok(200).clone();
    assert_eq!(body["bound"], json!(false), "{body}");
}

/// The second app joins the Open Platform account only later: its first login carries
/// no unionid (nothing to link), a later one does, and links then. (A unionid that
/// contradicts the one on record is refused: domain/tests/account_rules.rs.)
async fn a_unionid_learned_later_links_then(engine: Engine) {
    let app = spawn_app_with(engine, |config| {
        for section in &mut config.apps {
            if section.appid == SECOND_APP {
                section.unionid = false;
            }
        }
    })
    .await;
    let (user, _, _, wechat) = app.registered_user(APP).await;
    let code = app.wx_login(SECOND_APP, wechat).await;
    let first = app.login(SECOND_APP, &code).await.ok(200).clone();
    assert_eq!(first["bound"], json!(false), "no unionid yet: {first}");

    // WeChat now sends the unionid with the second app's logins.
    app.device
        .register_app(&AppRegistration {
            appid: SECOND_APP.to_owned(),
            secret: format!("secret-of-{SECOND_APP}"),
            unionid: true,
            kind: Default::default(),
        })
        .await
        .unwrap();
    let code = app.wx_login(SECOND_APP, wechat).await;
    let later = app.login(SECOND_APP, &code).await.ok(200).clone();
    assert_eq!(
        later["bound"],
        json!(true),
        "learned now, linked now: {later}"
    );
    let tokens = Tokens::from_v1(&later["tokens"]);
    assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(user));
}

/// One person opens both mini programs over and over at once (25 flows each: login,
/// phone button): logins race, tickets are superseded, phone steps race, links race.
/// Whatever each answer says, the person ends as exactly one user, bound in both apps.
async fn fifty_concurrent_first_logins_of_one_person_in_two_apps_end_with_one_user(engine: Engine) {
    let app = spawn_app(engine).await;
    let phone = random_phone();
    let wechat = app.wechat_user(Some(&phone)).await;
    let before = app.snapshot().await;
    let flows = (0..50).map(|n| {
        let app = &app;
        let appid = if n % 2 == 0 { APP } else { SECOND_APP };
        async move {
            let code = app.wx_login(appid, wechat).await;
            let login = app.login(appid, &code).await;
            if login.status.as_u16() != 200 {
                return None;
            }
            if login.body["bound"] == json!(true) {
                let tokens = Tokens::from_v1(&login.body["tokens"]);
                return Some(app.me(&tokens.access).await.body["user_id"].clone());
            }
            let ticket = login.body["ticket"].as_str()?.to_owned();
            let code = app.phone_code(appid, wechat).await;
            let answer = app
                .phone(appid, &json!({ "ticket": ticket, "code": code }))
                .await;
            (answer.status.as_u16() == 200).then(|| answer.body["user_id"].clone())
        }
    });
    let users: Vec<Value> = futures::future::join_all(flows)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(!users.is_empty(), "no flow succeeded");
    assert!(users.iter().all(|u| *u == users[0]), "{users:?}");
    let after = app.snapshot().await;
    assert_eq!(after.users, before.users + 1, "one person, one user");
    // Bound in both apps: a last login in each answers tokens for that user.
    for appid in [APP, SECOND_APP] {
        let code = app.wx_login(appid, wechat).await;
        let body = app.login(appid, &code).await.ok(200).clone();
        assert_eq!(body["bound"], json!(true), "{appid}: {body}");
        let tokens = Tokens::from_v1(&body["tokens"]);
        assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], users[0]);
    }
}
