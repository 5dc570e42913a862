//! Introspection (RFC 7662) and revocation (RFC 7009) against the running service, on
//! both engines: what is active, what ends a session, what an introspection client
//! must present, and that guessing its secret is throttled (issue 14). PyJWT checks the
//! same routes from the discovery document in `tests/discovery/`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use miniauth::integration::IntrospectionClient;
use miniauth_application::RegistrationPolicy;
use miniauth_application::Secret;
use miniauth_e2e::{app_section, on_both_engines, spawn_app_with, Answer, Engine, TestApp, APP};
use serde_json::json;

on_both_engines!(
    introspection_describes_live_tokens_and_ends_with_their_session,
    revoking_an_access_token_ends_its_session_and_nothing_else,
    introspection_clients_authenticate_and_guessing_is_throttled,
    a_client_of_one_tenant_sees_no_other_tenants_tokens,
);

const CLIENT: &str = "gateway";
const SECRET: &str = "gateway-secret-0123456789";

async fn app(engine: Engine) -> TestApp {
    spawn_app_with(engine, |config| {
        config.introspection_clients = vec![IntrospectionClient {
            id: CLIENT.into(),
            secret: Some(Secret::new(SECRET)),
            secret_env: None,
            tenants: Vec::new(),
        }];
        config.throttle.introspection_tries_per_client = 3;
    })
    .await
}

async fn introspect_as(app: &TestApp, token: &str, client: &str, secret: &str) -> Answer {
    let basic = STANDARD.encode(format!("{client}:{secret}"));
    let request = app
        .client
        .post(format!("{}/v1/token/introspect", app.address))
        .header("authorization", format!("Basic {basic}"))
        .form(&[("token", token)]);
    Answer::read(request.send().await.expect("POST")).await
}

async fn introspect(app: &TestApp, token: &str) -> serde_json::Value {
    introspect_as(app, token, CLIENT, SECRET)
        .await
        .ok(200)
        .clone()
}

async fn revoke(app: &TestApp, token: &str, hint: &str) -> Answer {
    app.post_form(
        "/v1/token/revoke",
        &[("token", token), ("token_type_hint", hint)],
        None,
    )
    .await
}

async fn introspection_describes_live_tokens_and_ends_with_their_session(engine: Engine) {
    let app = app(engine).await;
    let (user, tokens, _, _) = app.registered_user(APP).await;

    let access = introspect(&app, &tokens.access).await;
    assert_eq!(access["active"], true);
    assert_eq!(access["token_type"], "access_token");
    assert_eq!(access["sub"], user.to_string());
    assert_eq!(access["client_id"], APP);
    assert_eq!(access["iss"], "miniauth");
    let refresh = introspect(&app, &tokens.refresh).await;
    assert_eq!(refresh["token_type"], "refresh_token");
    assert_eq!(refresh["sid"], access["sid"]);
    assert!(refresh["exp"].as_i64().unwrap() > access["exp"].as_i64().unwrap());

    // A rotated refresh token is no longer active; its successor is.
    let rotated = app.refresh(&tokens.refresh).await;
    let next = rotated.ok(200)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        introspect(&app, &tokens.refresh).await,
        json!({"active": false})
    );
    assert_eq!(introspect(&app, &next).await["active"], true);

    // Unbinding ends the session: its tokens are inactive although they verify.
    app.unbind(APP, &tokens.access).await.ok(204);
    assert_eq!(
        introspect(&app, &tokens.access).await,
        json!({"active": false})
    );
    assert_eq!(introspect(&app, &next).await, json!({"active": false}));

    // Expired: inactive too.
    let (_, account, password) = app.password_user(None).await;
    let fresh = app.password_tokens(&account, &password).await;
    app.clock.advance(chrono::Duration::hours(1));
    assert_eq!(
        introspect(&app, &fresh.access).await,
        json!({"active": false})
    );
}

async fn revoking_an_access_token_ends_its_session_and_nothing_else(engine: Engine) {
    let app = app(engine).await;
    let (_, account, password) = app.password_user(None).await;
    let first = app.password_tokens(&account, &password).await;
    let second = app.password_tokens(&account, &password).await;

    revoke(&app, &first.access, "access_token").await.ok(200);
    app.refresh(&first.refresh)
        .await
        .problem(401, "refresh_token_unknown");
    app.me(&first.access)
        .await
        .problem(401, "access_token_revoked");
    // The user's other session lives on.
    app.me(&second.access).await.ok(200);

    // A refresh token ends its family; unknown and repeated revocations are 200.
    revoke(&app, &second.refresh, "refresh_token").await.ok(200);
    app.me(&second.access)
        .await
        .problem(401, "access_token_revoked");
    revoke(&app, &second.refresh, "refresh_token").await.ok(200);
    revoke(&app, "never-issued", "").await.ok(200);
    app.post_form("/v1/token/revoke", &[("token", " ")], None)
        .await
        .problem(400, "invalid_field");
}

async fn introspection_clients_authenticate_and_guessing_is_throttled(engine: Engine) {
    let app = app(engine).await;
    let (_, account, password) = app.password_user(None).await;
    let tokens = app.password_tokens(&account, &password).await;

    let anonymous = app
        .post_form("/v1/token/introspect", &[("token", &tokens.access)], None)
        .await;
    anonymous.problem(401, "client_unauthorized");
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Basic realm=\"miniauth\"")
    );
    introspect_as(&app, &tokens.access, "other", SECRET)
        .await
        .problem(401, "client_unauthorized");
    introspect_as(&app, &tokens.access, CLIENT, "wrong")
        .await
        .problem(401, "client_unauthorized");
    // Three failures from this address: the fourth try is refused before any check,
    // even with the right secret.
    introspect_as(&app, &tokens.access, CLIENT, SECRET)
        .await
        .problem(429, "too_many_attempts");
    app.clock.advance(chrono::Duration::minutes(16));
    let fresh = app.password_tokens(&account, &password).await;
    assert_eq!(introspect(&app, &fresh.access).await["active"], true);
}

/// A gateway of tenant t2 asks about a token of the default tenant: it is described as
/// inactive, as any token the gateway may not know about, while the deployment's
/// all-tenant gateway sees it active. A service of one tenant cannot take another
/// tenant's users for its own by trusting `active` alone.
async fn a_client_of_one_tenant_sees_no_other_tenants_tokens(engine: Engine) {
    const T2_CLIENT: &str = "t2-gateway";
    const T2_SECRET: &str = "t2-gateway-secret-0123456789";
    let app = spawn_app_with(engine, |config| {
        let mut t2 = app_section("wxtenanttwoapp0005", RegistrationPolicy::Auto);
        t2.tenant = "t2".to_owned();
        config.apps.push(t2);
        config.introspection_clients = vec![
            IntrospectionClient {
                id: CLIENT.into(),
                secret: Some(Secret::new(SECRET)),
                secret_env: None,
                tenants: Vec::new(),
            },
            IntrospectionClient {
                id: T2_CLIENT.into(),
                secret: Some(Secret::new(T2_SECRET)),
                secret_env: None,
                tenants: vec!["t2".into()],
            },
        ];
    })
    .await;
    let (_, tokens, _, _) = app.registered_user(APP).await;
    for token in [&tokens.access, &tokens.refresh] {
        let answer = introspect_as(&app, token, T2_CLIENT, T2_SECRET).await;
        assert_eq!(answer.ok(200), &json!({ "active": false }));
        assert_eq!(introspect(&app, token).await["active"], true);
    }
}
