//! Attacks: tenants (see attacks.rs). A user is bound only to apps of their own
//! tenant; tokens issued for an app carry the app's tenant; no route lets a token of
//! one tenant act in an app of another. Crossing tenants answers 403
//! `tenant_mismatch` (GitEgg: 403), and writes nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use miniauth_application::RegistrationPolicy;
use miniauth_e2e::{
    app_section, enc, on_both_engines, random_phone, spawn_app_with, Engine, TestApp, Tokens, APP,
};
use serde_json::{json, Value};

/// An app of tenant `t2`, next to the default tenant's apps.
const T2_APP: &str = "wxtenanttwoapp0005";

on_both_engines!(
    cross_tenant_user_binds_to_another_tenants_app,
    cross_tenant_user_binds_through_gitegg,
    cross_tenant_token_unbinds_in_another_tenants_app,
    password_grant_into_an_unknown_tenant,
);

/// The service with a `t2` app besides the default tenant's.
async fn spawn(engine: Engine) -> TestApp {
    spawn_app_with(engine, |config| {
        let mut t2 = app_section(T2_APP, RegistrationPolicy::Auto);
        t2.tenant = "t2".to_owned();
        config.apps.push(t2);
    })
    .await
}

/// A password user of tenant `t2`, logged in with `tenant=t2`: (user id, tokens).
async fn t2_user(app: &TestApp) -> (i64, Tokens) {
    let account = format!("t2user{}", rand::random::<u32>());
    let password = "t2-password-123";
    let created = app
        .add_user(&json!({ "account": account, "password": password, "tenant": "t2" }))
        .await;
    let user = created.ok(201)["user_id"].as_i64().unwrap();
    let answer = app
        .post_form(
            "/v1/token",
            &[
                ("grant_type", "password"),
                ("account", &account),
                ("password", password),
                ("tenant", "t2"),
            ],
            None,
        )
        .await;
    let tokens = Tokens::from_v1(answer.ok(200));
    assert_eq!(claims(&tokens.access)["tenant"], json!("t2"));
    (user, tokens)
}

/// The JWT's claims, as any service reading the token sees them.
fn claims(access: &str) -> Value {
    let payload = access.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).unwrap()
}

async fn cross_tenant_user_binds_to_another_tenants_app(engine: Engine) {
    let app = spawn(engine).await;
    let (attacker, tokens) = t2_user(&app).await;
    // A WeChat identity in an app of tenant `default` (the attacker's own phone, or a
    // victim's ticket: either way the app is not of the attacker's tenant).
    let wechat = app.wechat_user(None).await;
    let ticket = app.ticket(APP, wechat).await;

    let answer = app
        .unchanged("binding a t2 user to a default-tenant app", || {
            app.bind(APP, &ticket, &tokens.access)
        })
        .await;
    answer.problem(403, "tenant_mismatch");

    // Later logins to the app log nobody in, and the t2 user holds no binding there.
    let session = app.session(APP, wechat).await;
    assert_eq!(session["bound"], json!(false), "{session}");
    assert_eq!(session["tokens"], Value::Null);
    assert!(app.bindings_of(attacker).await.is_empty());
    let me = app.me(&tokens.access).await;
    assert_eq!(me.ok(200)["bindings"], json!([]));

    // Within its own tenant the same user binds fine, and the app's tokens carry the
    // app's tenant.
    let ticket = app.ticket(T2_APP, wechat).await;
    app.bind(T2_APP, &ticket, &tokens.access).await.ok(200);
    let session = app.session(T2_APP, wechat).await;
    let t2_tokens = Tokens::from_v1(&session["tokens"]);
    let t2_claims = claims(&t2_tokens.access);
    assert_eq!(t2_claims["tenant"], json!("t2"));
    assert_eq!(t2_claims["appid"], json!(T2_APP));
    assert_eq!(t2_claims["sub"], json!(attacker.to_string()));
}

async fn cross_tenant_user_binds_through_gitegg(engine: Engine) {
    let app = spawn(engine).await;
    let (attacker, tokens) = t2_user(&app).await;
    let wechat = app.wechat_user(None).await;
    let ticket = app.ticket(APP, wechat).await;

    let query = format!("socialKey={}", enc(&ticket));
    let answer = app
        .unchanged("a GitEgg bind across tenants", || {
            app.wx("", APP, "bind", &query, Some(&tokens.access))
        })
        .await;
    answer.envelope_err(403);
    assert!(app.bindings_of(attacker).await.is_empty());
    // GitEgg's user info lists no binding of another tenant's app either.
    let info = app.user_info(&tokens.access).await;
    assert_eq!(info.envelope_ok()["bindings"], json!([]));
}

async fn cross_tenant_token_unbinds_in_another_tenants_app(engine: Engine) {
    let app = spawn(engine).await;
    // A victim of tenant `default`, bound in APP by phone.
    let phone = random_phone();
    let victim = app.wechat_user(Some(&phone)).await;
    let ticket = app.ticket(APP, victim).await;
    let code = app.phone_code(APP, victim).await;
    app.phone(APP, &json!({ "ticket": ticket, "code": code }))
        .await
        .ok(200);
    // The attacker of tenant `t2` tries to put themselves in APP, then to end bindings
    // there, through both APIs.
    let (_, tokens) = t2_user(&app).await;
    let intruder = app.wechat_user(None).await;
    let ticket = app.ticket(APP, intruder).await;
    app.bind(APP, &ticket, &tokens.access)
        .await
        .problem(403, "tenant_mismatch");

    let answer = app
        .unchanged("an unbind across tenants", || {
            app.unbind(APP, &tokens.access)
        })
        .await;
    answer.problem(403, "tenant_mismatch");
    let answer = app
        .unchanged("a GitEgg unbind across tenants", || {
            app.wx("", APP, "unbind", "", Some(&tokens.access))
        })
        .await;
    answer.envelope_err(403);

    // The victim is still bound and still logs in.
    let session = app.session(APP, victim).await;
    assert_eq!(session["bound"], json!(true), "{session}");
    assert!(session["tokens"].is_object());
}

async fn password_grant_into_an_unknown_tenant(engine: Engine) {
    let app = spawn(engine).await;
    let answer = app
        .unchanged("a password grant into a tenant nobody knows", || {
            app.post_form(
                "/v1/token",
                &[
                    ("grant_type", "password"),
                    ("account", "admin"),
                    ("password", "whatever-123"),
                    ("tenant", "no-such-tenant"),
                ],
                None,
            )
        })
        .await;
    answer.problem(400, "unknown_tenant");
    // A tenant known only from its app (no user yet) is a wrong password, as usual.
    let answer = app
        .post_form(
            "/v1/token",
            &[
                ("grant_type", "password"),
                ("account", "admin"),
                ("password", "whatever-123"),
                ("tenant", "t2"),
            ],
            None,
        )
        .await;
    answer.problem(401, "invalid_credentials");
}
