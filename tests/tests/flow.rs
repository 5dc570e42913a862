//! The whole flow of DESIGN.md through the v1 API, on both engines.

use miniauth_domain::OpenId;
use miniauth_e2e::{
    app as app_id, enc, on_both_engines, random_phone, spawn_app, spawn_app_with, Engine, Tokens,
    APP, CLOSED_APP, EXISTING_ONLY_APP, SECOND_APP,
};
use serde_json::json;

on_both_engines!(
    new_user_by_phone_code_then_returning_in_one_round_trip,
    new_user_by_legacy_encrypted_phone_and_legacy_profile,
    existing_user_matched_by_phone,
    registration_policies_refuse_unknown_phones,
    phone_declined_then_password_bind,
    current_user_binds_another_app_and_unbinds_one,
    refresh_rotation_reuse_detection_and_logout,
    ticket_grant_for_a_bound_identity,
    payload_under_the_newest_session_key_is_accepted,
    rebind_after_unbind,
    stale_tickets_buy_no_tokens,
    logout_revokes_only_own_tokens,
    logout_without_a_refresh_token_ends_the_access_tokens_session,
);

async fn new_user_by_phone_code_then_returning_in_one_round_trip(engine: Engine) {
    let app = spawn_app(engine).await;
    let phone = random_phone();
    let wechat = app.wechat_user(Some(&phone)).await;
    let start = app.snapshot().await;

    // A new WeChat identity: a ticket, nothing bound, no tokens.
    let session = app.session(APP, wechat).await;
    assert_eq!(session["bound"], json!(false), "{session}");
    assert_eq!(session["has_profile"], json!(false));
    assert_eq!(session["has_phone"], json!(false));
    assert_eq!(session["tokens"], json!(null));
    assert_eq!(session["ticket_expires_in"], json!(3600));
    let ticket = session["ticket"].as_str().unwrap().to_owned();

    // The current profile flow: nickname and avatar as the user chose them.
    let profile = app
        .profile(
            APP,
            &json!({ "ticket": ticket, "nickname": "Alice", "avatar_url": "https://example.com/a.png" }),
        )
        .await;
    assert_eq!(
        profile.ok(200),
        &json!({ "nickname": "Alice", "avatar_url": "https://example.com/a.png" })
    );

    // The phone button's code registers a new user (policy auto) and logs her in.
    let code = app.phone_code(APP, wechat).await;
    let answer = app
        .phone(APP, &json!({ "ticket": ticket, "code": code }))
        .await;
    let body = answer.ok(200);
    assert_eq!(body["registered"], json!(true), "{body}");
    let user = body["user_id"].as_i64().unwrap();
    let tokens = Tokens::from_v1(&body["tokens"]);

    let after = app.snapshot().await;
    assert_eq!(after.users, start.users + 1);
    assert_eq!(after.bindings, start.bindings + 1);
    assert_eq!(
        app.event_types_after(start.last_event).await,
        [
            "SessionObtained",
            "ProfileDecrypted",
            "PhoneVerified",
            "UserBound"
        ]
    );

    // No secret and no personal datum in clear in the log or the state rows.
    let stored = app.stored_log_text().await;
    assert!(stored.contains("openid"), "{stored}");
    let session_key = app.session_key(APP, wechat);
    for (what, secret) in [
        ("the phone", phone.as_str()),
        ("the nickname", "Alice"),
        ("the avatar", "https://example.com/a.png"),
        ("the session key", session_key.expose_text()),
    ] {
        assert!(!stored.contains(secret), "{what} is stored in clear");
    }

    // Me: masked phone, the binding, the nickname.
    let me = app.me(&tokens.access).await;
    let me = me.ok(200);
    assert_eq!(me["user_id"], json!(user));
    assert_eq!(me["tenant"], json!("default"));
    assert_eq!(me["status"], json!("active"));
    assert_eq!(
        me["phone"],
        json!(format!("{}****{}", &phone[..3], &phone[7..]))
    );
    let bindings = me["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 1, "{me}");
    assert_eq!(bindings[0]["appid"], json!(APP));
    assert_eq!(
        app.bindings_of(user).await,
        [(
            APP.to_owned(),
            bindings[0]["openid"].as_str().unwrap().to_owned()
        )]
    );

    // She comes back: one round trip, tokens at once, and a new session recorded only.
    let before = app.snapshot().await;
    let again = app.session(APP, wechat).await;
    assert_eq!(again["bound"], json!(true), "{again}");
    assert_eq!(again["has_profile"], json!(true));
    assert_eq!(again["has_phone"], json!(true));
    let returning = Tokens::from_v1(&again["tokens"]);
    assert_eq!(
        app.me(&returning.access).await.ok(200)["user_id"],
        json!(user)
    );
    assert_eq!(
        app.event_types_after(before.last_event).await,
        ["SessionObtained"]
    );
    assert_eq!(app.snapshot().await.users, before.users);
}

async fn new_user_by_legacy_encrypted_phone_and_legacy_profile(engine: Engine) {
    let app = spawn_app(engine).await;
    let phone = random_phone();
    let wechat = app.wechat_user(Some(&phone)).await;
    let ticket = app.ticket(APP, wechat).await;

    // Legacy getUserInfo: signature over rawData, payload under the session key.
    let info = app.device.user_info(&app.appid, wechat).await.unwrap();
    let answer = app
        .profile(
            APP,
            &json!({
                "ticket": ticket,
                "raw_data": info.raw_data,
                "signature": info.signature,
                "encrypted_data": info.encrypted_data,
                "iv": info.iv,
            }),
        )
        .await;
    let profile = answer.ok(200);
    let raw: serde_json::Value = serde_json::from_str(&info.raw_data).unwrap();
    assert_eq!(profile["nickname"], raw["nickName"], "{profile}");
    assert_eq!(profile["avatar_url"], raw["avatarUrl"]);

    // The legacy phone button: encryptedData + iv.
    let bundle = app.device.phone(&app.appid, wechat).await.unwrap();
    let answer = app
        .phone(
            APP,
            &json!({ "ticket": ticket, "encrypted_data": bundle.encrypted_data, "iv": bundle.iv }),
        )
        .await;
    let body = answer.ok(200);
    assert_eq!(body["registered"], json!(true), "{body}");
    let tokens = Tokens::from_v1(&body["tokens"]);
    let me = app.me(&tokens.access).await;
    assert_eq!(me.ok(200)["nickname"], raw["nickName"]);
    assert!(me.body["phone"].as_str().unwrap().ends_with(&phone[7..]));
}

/// With linking by unionid off: the second app's login is not linked, so its phone step
/// is what matches the existing user (tests/tests/linking.rs covers the link).
fn without_linking(config: &mut miniauth::config::Config) {
    config.tenants.insert(
        miniauth_e2e::TENANT.to_owned(),
        miniauth::config::TenantSection {
            link_by_unionid: false,
        },
    );
}

async fn existing_user_matched_by_phone(engine: Engine) {
    let app = spawn_app_with(engine, without_linking).await;
    let phone = random_phone();
    let (existing, account, _) = app.password_user(Some(&phone)).await;
    let wechat = app.wechat_user(Some(&phone)).await;

    for appid in [APP, EXISTING_ONLY_APP] {
        let ticket = app.ticket(appid, wechat).await;
        let code = app.phone_code(appid, wechat).await;
        let before = app.snapshot().await;
        let answer = app
            .phone(appid, &json!({ "ticket": ticket, "code": code }))
            .await;
        let body = answer.ok(200);
        assert_eq!(body["registered"], json!(false), "{appid}: {body}");
        assert_eq!(body["user_id"], json!(existing), "{appid}: {body}");
        let after = app.snapshot().await;
        assert_eq!(after.users, before.users, "{appid} registered a user");
        assert_eq!(after.bindings, before.bindings + 1);
        let me = app
            .me(&Tokens::from_v1(&body["tokens"]).access)
            .await
            .ok(200)
            .clone();
        assert_eq!(me["account"], json!(account));
    }
    assert_eq!(app.bindings_of(existing).await.len(), 2);
}

async fn registration_policies_refuse_unknown_phones(engine: Engine) {
    let app = spawn_app(engine).await;
    // A known phone does not open a closed app either.
    let phone = random_phone();
    app.password_user(Some(&phone)).await;
    for (appid, phone, code) in [
        (EXISTING_ONLY_APP, random_phone(), "phone_not_registered"),
        (CLOSED_APP, random_phone(), "registration_closed"),
        (CLOSED_APP, phone.clone(), "registration_closed"),
    ] {
        let wechat = app.wechat_user(Some(&phone)).await;
        let ticket = app.ticket(appid, wechat).await;
        let phone_code = app.phone_code(appid, wechat).await;
        let bundle = app.device.phone(&app_id(appid), wechat).await.unwrap();
        app.unchanged(&format!("{appid} refusing a phone"), || async {
            app.phone(appid, &json!({ "ticket": ticket, "code": phone_code }))
                .await
                .problem(403, code);
            app.phone(
                appid,
                &json!({ "ticket": ticket, "encrypted_data": bundle.encrypted_data, "iv": bundle.iv }),
            )
            .await
            .problem(403, code);
            // GitEgg's envelope says 403 too.
            let query = format!(
                "socialKey={}&encryptedData={}&iv={}",
                enc(&ticket),
                enc(&bundle.encrypted_data),
                enc(&bundle.iv)
            );
            app.wx("", appid, "phone", &query, None)
                .await
                .envelope_err(403);
        })
        .await;
        let again = app.session(appid, wechat).await;
        assert_eq!(again["bound"], json!(false));
        assert_eq!(
            again["has_phone"],
            json!(false),
            "a refused phone was recorded"
        );
    }
}

async fn phone_declined_then_password_bind(engine: Engine) {
    let app = spawn_app(engine).await;
    let (user, account, password) = app.password_user(None).await;
    let wechat = app.wechat_user(None).await;
    let session = app.session(CLOSED_APP, wechat).await;
    assert_eq!(session["bound"], json!(false));
    let ticket = session["ticket"].as_str().unwrap();

    let tokens = app.password_tokens(&account, &password).await;
    let before = app.snapshot().await;
    let answer = app.bind(CLOSED_APP, ticket, &tokens.access).await;
    assert_eq!(answer.ok(200), &json!({ "user_id": user }));
    assert_eq!(
        app.event_types_after(before.last_event).await,
        ["UserBound"]
    );
    assert_eq!(app.snapshot().await.bindings, before.bindings + 1);

    let again = app.session(CLOSED_APP, wechat).await;
    assert_eq!(again["bound"], json!(true));
    let returning = Tokens::from_v1(&again["tokens"]);
    let me = app.me(&returning.access).await;
    assert_eq!(me.ok(200)["account"], json!(account));
    assert_eq!(me.body["phone"], json!(null));
}

async fn current_user_binds_another_app_and_unbinds_one(engine: Engine) {
    let app = spawn_app_with(engine, without_linking).await;
    let (user, tokens, _, wechat) = app.registered_user(APP).await;

    // Logged in, the same person opens the second mini program and binds it.
    let second = app.session(SECOND_APP, wechat).await;
    assert_eq!(second["bound"], json!(false), "{second}");
    let answer = app
        .bind(
            SECOND_APP,
            second["ticket"].as_str().unwrap(),
            &tokens.access,
        )
        .await;
    assert_eq!(answer.ok(200), &json!({ "user_id": user }));
    let bindings = app.bindings_of(user).await;
    assert_eq!(bindings.len(), 2, "{bindings:?}");
    assert_eq!(
        app.me(&tokens.access).await.ok(200)["bindings"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // One person, one unionid across the Open Platform apps (the read model keeps its
    // keyed hash); both accounts bound.
    let mut unionids = Vec::new();
    for (appid, openid) in &bindings {
        let view = app
            .store
            .account(&app_id(appid), &OpenId::parse(openid).unwrap())
            .await
            .unwrap()
            .expect("the account is in the read model");
        assert_eq!(view.bound_user.map(|u| u.get()), Some(user));
        unionids.push(
            view.unionid_hash
                .expect("unionid-bound apps give a unionid"),
        );
    }
    assert_eq!(unionids[0], unionids[1]);

    // Unbind the first app: only its binding goes.
    let before = app.snapshot().await;
    app.unbind(APP, &tokens.access).await.ok(204);
    assert_eq!(app.event_types_after(before.last_event).await, ["Unbound"]);
    assert_eq!(app.snapshot().await.bindings, before.bindings - 1);
    let left = app.bindings_of(user).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, SECOND_APP);
    // The session logged in through the first app ended with its binding (issue 17:
    // tokens die with what they stood for); the second app logs the user in.
    app.me(&tokens.access)
        .await
        .problem(401, "access_token_revoked");

    let first = app.session(APP, wechat).await;
    assert_eq!(first["bound"], json!(false), "{first}");
    assert_eq!(first["tokens"], json!(null));
    let second = app.session(SECOND_APP, wechat).await;
    assert_eq!(second["bound"], json!(true), "{second}");
    let through_second = Tokens::from_v1(&second["tokens"]);
    let me = app.me(&through_second.access).await;
    let views = me.ok(200)["bindings"].as_array().unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0]["appid"], json!(SECOND_APP));
}

async fn refresh_rotation_reuse_detection_and_logout(engine: Engine) {
    let app = spawn_app(engine).await;
    let (user, first, _, wechat) = app.registered_user(APP).await;

    // Rotation: a new pair, both working.
    let rotated = Tokens::from_v1(app.refresh(&first.refresh).await.ok(200));
    assert_ne!(rotated.refresh, first.refresh);
    assert_eq!(
        app.me(&rotated.access).await.ok(200)["user_id"],
        json!(user)
    );
    // As a form too.
    let form = app
        .post_form(
            "/v1/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rotated.refresh),
            ],
            None,
        )
        .await;
    let newest = Tokens::from_v1(form.ok(200));

    // Reuse of a rotated token revokes the whole family.
    app.refresh(&first.refresh)
        .await
        .problem(401, "refresh_token_reused");
    app.refresh(&newest.refresh)
        .await
        .problem(401, "refresh_token_unknown");

    // Logout revokes that login's refresh token; another login's stays good.
    let first = Tokens::from_v1(&app.session(APP, wechat).await["tokens"]);
    let second = Tokens::from_v1(&app.session(APP, wechat).await["tokens"]);
    app.post_json(
        "/v1/logout",
        &json!({ "refresh_token": first.refresh }),
        None,
    )
    .await
    .problem(401, "access_token_missing");
    app.logout(&first.access, &first.refresh).await.ok(204);
    app.refresh(&first.refresh)
        .await
        .problem(401, "refresh_token_unknown");
    app.refresh(&second.refresh).await.ok(200);
}

async fn ticket_grant_for_a_bound_identity(engine: Engine) {
    let app = spawn_app(engine).await;
    let (user, _, _, wechat) = app.registered_user(APP).await;
    // JSON and form bodies alike; each exchange needs a ticket of its own (one use),
    // one that no answer with tokens spent already: GitEgg's login answers only that.
    let ticket = app.bind_key(APP, wechat).await;
    let json_answer = app
        .token(&json!({ "grant_type": "ticket", "ticket": ticket }))
        .await;
    let ticket = app.bind_key(APP, wechat).await;
    let form_answer = app
        .post_form(
            "/v1/token",
            &[("grant_type", "ticket"), ("ticket", &ticket)],
            None,
        )
        .await;
    for answer in [json_answer, form_answer] {
        let tokens = Tokens::from_v1(answer.ok(200));
        assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(user));
    }
}

/// The front end's `wx.login` raced ahead: the ticket is of the previous session, the
/// payload under the newest key. The account holds that key, so it is accepted; a key
/// miniauth never saw is not.
async fn payload_under_the_newest_session_key_is_accepted(engine: Engine) {
    let app = spawn_app(engine).await;
    let wechat = app.wechat_user(Some(&random_phone())).await;
    let old_ticket = app.ticket(APP, wechat).await;
    app.ticket(APP, wechat).await;
    let info = app.device.user_info(&app.appid, wechat).await.unwrap();
    let body = |ticket: &str, info: &miniauth_wechat::sim::UserInfoBundle| {
        json!({ "ticket": ticket, "raw_data": info.raw_data, "signature": info.signature,
                "encrypted_data": info.encrypted_data, "iv": info.iv })
    };
    app.profile(APP, &body(&old_ticket, &info)).await.ok(200);

    // wx.login again, but the code never reaches miniauth: a key it does not hold.
    let newest_ticket = app.ticket(APP, wechat).await;
    app.wx_login(APP, wechat).await;
    let unknown_key = app.device.user_info(&app.appid, wechat).await.unwrap();
    app.unchanged(
        "a payload under a key the account does not hold",
        || async {
            app.profile(APP, &body(&newest_ticket, &unknown_key))
                .await
                .problem(400, "payload_rejected");
        },
    )
    .await;
}

/// After unbinding, the same WeChat identity binds back to its user by phone.
async fn rebind_after_unbind(engine: Engine) {
    let app = spawn_app(engine).await;
    let (user, tokens, _, wechat) = app.registered_user(APP).await;
    app.unbind(APP, &tokens.access).await.ok(204);
    assert!(app.bindings_of(user).await.is_empty());
    let ticket = app.ticket(APP, wechat).await;
    let code = app.phone_code(APP, wechat).await;
    let answer = app
        .phone(APP, &json!({ "ticket": ticket, "code": code }))
        .await;
    let body = answer.ok(200);
    assert_eq!(body["registered"], json!(false), "{body}");
    assert_eq!(body["user_id"], json!(user));
    assert_eq!(app.bindings_of(user).await.len(), 1);
}

/// A ticket buys tokens only while its identity is bound, and only from the newest
/// login.
async fn stale_tickets_buy_no_tokens(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, tokens, _, wechat) = app.registered_user(APP).await;
    let old = app.bind_key(APP, wechat).await;
    let newest = app.bind_key(APP, wechat).await;
    app.unchanged("a ticket grant with a superseded ticket", || async {
        app.token(&json!({ "grant_type": "ticket", "ticket": old }))
            .await
            .problem(401, "ticket_session_superseded");
    })
    .await;
    app.token(&json!({ "grant_type": "ticket", "ticket": newest }))
        .await
        .ok(200);

    app.unbind(APP, &tokens.access).await.ok(204);
    app.unchanged("a ticket grant after unbinding", || async {
        app.token(&json!({ "grant_type": "ticket", "ticket": newest }))
            .await
            .problem(404, "not_bound");
        app.oauth_token(&[("grant_type", "social"), ("social_key", &newest)])
            .await
            .envelope_err(601);
    })
    .await;
}

/// Logout revokes only the caller's own refresh tokens.
async fn logout_revokes_only_own_tokens(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, alice, _, _) = app.registered_user(APP).await;
    let (_, bob, _, _) = app.registered_user(APP).await;
    let answer = app
        .unchanged("logging out someone else's refresh token", || {
            app.logout(&alice.access, &bob.refresh)
        })
        .await;
    assert_eq!(answer.status.as_u16(), 401, "{}", answer.text);
    answer.problem(401, "refresh_token_unknown");
    app.refresh(&bob.refresh).await.ok(200);
    app.me(&bob.refresh)
        .await
        .problem(401, "access_token_invalid");
}

/// `POST /v1/logout` with `{}`: the session the access token names ends, and only it.
async fn logout_without_a_refresh_token_ends_the_access_tokens_session(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, phone, _, wechat) = app.registered_user(APP).await;
    // A second session of the same user: the returning login answers tokens at once.
    let code = app.wx_login(APP, wechat).await;
    let again = app.login(APP, &code).await;
    let tablet = Tokens::from_v1(&again.ok(200)["tokens"]);

    let answer = app
        .post_json("/v1/logout", &json!({}), Some(&phone.access))
        .await;
    assert_eq!(answer.status.as_u16(), 204, "{}", answer.text);
    app.me(&phone.access)
        .await
        .problem(401, "access_token_revoked");
    app.refresh(&phone.refresh)
        .await
        .problem(401, "refresh_token_unknown");
    app.me(&tablet.access).await.ok(200);
    app.refresh(&tablet.refresh).await.ok(200);
}
