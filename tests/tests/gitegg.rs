//! Every route of the GitEgg-compatible API, under `/wx/…` and `/extension/wx/…`, with
//! GitEgg's envelope (always HTTP 200). On both engines.

use miniauth::config::{CompatClient, Secret};
use miniauth_e2e::{
    enc, on_both_engines, random_phone, spawn_app, spawn_app_with, Engine, Tokens, APP, SECOND_APP,
};
use serde_json::{json, Value};

on_both_engines!(
    gitegg_whole_flow_under_both_prefixes,
    gitegg_client_credentials,
    gitegg_logout_without_a_body_ends_the_tokens_session,
);

/// GitEgg's front end logs out with `fly.post('/oauth/logout')`: no data, which flyio's
/// WeChat build sends as an empty form body. The session of the access token ends,
/// and only that one.
async fn gitegg_logout_without_a_body_ends_the_tokens_session(engine: Engine) {
    let app = spawn_app(engine).await;
    let (_, account, password) = app.password_user(None).await;
    let login = || async {
        let answer = app
            .oauth_token(&[
                ("grant_type", "password"),
                ("username", &account),
                ("password", &password),
            ])
            .await;
        let data = answer.envelope_ok().clone();
        (
            data["token"].as_str().unwrap().to_owned(),
            data["refreshToken"].as_str().unwrap().to_owned(),
        )
    };
    let (phone_access, phone_refresh) = login().await;
    let (tablet_access, tablet_refresh) = login().await;

    let logout = app
        .post_form("/oauth/logout", &[], Some(&phone_access))
        .await;
    logout.envelope_ok();
    // That session is over: its access token on miniauth's routes, its refresh token.
    app.user_info(&phone_access).await.envelope_err(401);
    app.oauth_token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &phone_refresh),
    ])
    .await
    .envelope_err(401);
    // The user's other session lives on.
    app.user_info(&tablet_access).await.envelope_ok();
    app.oauth_token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &tablet_refresh),
    ])
    .await
    .envelope_ok();
    // No body and no content type at all, as another client may send: the same.
    let answer = app
        .post_raw_with_bearer("/oauth/logout", None, Vec::new(), &tablet_access)
        .await;
    answer.envelope_ok();
    app.user_info(&tablet_access).await.envelope_err(401);
}

/// The masked form of a mainland number.
fn masked(phone: &str) -> String {
    format!("{}****{}", &phone[..3], &phone[7..])
}

async fn gitegg_whole_flow_under_both_prefixes(engine: Engine) {
    let app = spawn_app(engine).await;
    for prefix in ["", "/extension"] {
        // A new user: login, legacy info, phone code.
        let phone = random_phone();
        let wechat = app.wechat_user(Some(&phone)).await;
        let code = app.wx_login(APP, wechat).await;
        let login = app
            .wx(prefix, APP, "login", &format!("code={}", enc(&code)), None)
            .await;
        let data = login.envelope_ok().clone();
        assert_eq!(data["userInfoAlready"], json!(false), "{data}");
        assert_eq!(data["userBindAlready"], json!(false));
        assert!(data["openid"].as_str().is_some_and(|o| !o.is_empty()));
        assert!(
            data["unionid"].as_str().is_some_and(|u| !u.is_empty()),
            "the demo app is Open Platform bound: {data}"
        );
        let key = data["bindKey"].as_str().unwrap().to_owned();

        let info = app.device.user_info(&app.appid, wechat).await.unwrap();
        let query = format!(
            "socialKey={}&signature={}&rawData={}&encryptedData={}&iv={}",
            enc(&key),
            enc(&info.signature),
            enc(&info.raw_data),
            enc(&info.encrypted_data),
            enc(&info.iv)
        );
        let answer = app.wx(prefix, APP, "info", &query, None).await;
        let raw: Value = serde_json::from_str(&info.raw_data).unwrap();
        assert_eq!(
            answer.envelope_ok(),
            &json!({ "nickName": raw["nickName"], "avatarUrl": raw["avatarUrl"] })
        );
        // The current profile flow's fields are accepted too.
        let answer = app
            .wx(
                prefix,
                APP,
                "info",
                &format!(
                    "socialKey={}&nickName=Ali&avatarUrl={}",
                    enc(&key),
                    enc("https://e.com/a.png")
                ),
                None,
            )
            .await;
        assert_eq!(
            answer.envelope_ok(),
            &json!({ "nickName": "Ali", "avatarUrl": "https://e.com/a.png" })
        );

        let phone_code = app.phone_code(APP, wechat).await;
        let answer = app
            .wx(
                prefix,
                APP,
                "phone",
                &format!("socialKey={}&code={}", enc(&key), enc(&phone_code)),
                None,
            )
            .await;
        let data = answer.envelope_ok().clone();
        assert_eq!(data["registered"], json!(true), "{data}");
        let user = data["userId"].as_i64().unwrap();
        let tokens = Tokens::from_gitegg(&data);

        // user info: masked mobile, the binding.
        let answer = app.user_info(&tokens.access).await;
        let me = answer.envelope_ok();
        assert_eq!(me["id"], json!(user), "{me}");
        assert_eq!(me["tenantId"], json!("default"));
        assert_eq!(me["mobile"], json!(masked(&phone)));
        assert_eq!(me["nickname"], json!("Ali"));
        assert_eq!(me["status"], json!("active"));
        assert_eq!(me["bindings"].as_array().unwrap().len(), 1);
        assert_eq!(me["bindings"][0]["appid"], json!(APP));

        // Returning: login says bound, the bind key buys tokens at /oauth/token.
        let code = app.wx_login(APP, wechat).await;
        let login = app
            .wx(prefix, APP, "login", &format!("code={}", enc(&code)), None)
            .await;
        let data = login.envelope_ok().clone();
        assert_eq!(data["userBindAlready"], json!(true), "{data}");
        assert_eq!(data["userInfoAlready"], json!(true));
        // Unlike GitEgg's, the bind key is new on every login.
        assert_ne!(data["bindKey"], json!(key));
        // Unlike GitEgg, a user registered from a phone has no password (not the openid).
        app.unchanged("a password login as a phone-registered user", || async {
            app.oauth_token(&[
                ("grant_type", "password"),
                ("username", &phone),
                ("password", data["openid"].as_str().unwrap()),
            ])
            .await
            .envelope_err(419);
        })
        .await;
        let social = app
            .oauth_token(&[
                ("grant_type", "social"),
                ("social_key", data["bindKey"].as_str().unwrap()),
            ])
            .await;
        let social = Tokens::from_gitegg(social.envelope_ok());
        assert_eq!(
            app.user_info(&social.access).await.envelope_ok()["id"],
            json!(user)
        );

        // Refresh, then logout revokes.
        let refreshed = app
            .oauth_token(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &social.refresh),
            ])
            .await;
        let refreshed = Tokens::from_gitegg(refreshed.envelope_ok());
        assert_ne!(refreshed.refresh, social.refresh);
        let logout = app
            .oauth_logout(&refreshed.access, &refreshed.refresh)
            .await;
        assert_eq!(logout.envelope_ok(), &Value::Null);
        app.oauth_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refreshed.refresh),
        ])
        .await
        .envelope_err(401);

        // The legacy phone payload registers another new user.
        let wechat2 = app.wechat_user(Some(&random_phone())).await;
        let code = app.wx_login(APP, wechat2).await;
        let key2 = app
            .wx(prefix, APP, "login", &format!("code={}", enc(&code)), None)
            .await
            .envelope_ok()["bindKey"]
            .as_str()
            .unwrap()
            .to_owned();
        let bundle = app.device.phone(&app.appid, wechat2).await.unwrap();
        let answer = app
            .wx(
                prefix,
                APP,
                "phone",
                &format!(
                    "socialKey={}&encryptedData={}&iv={}",
                    enc(&key2),
                    enc(&bundle.encrypted_data),
                    enc(&bundle.iv)
                ),
                None,
            )
            .await;
        let data = answer.envelope_ok();
        assert_eq!(data["registered"], json!(true), "{data}");
        assert_ne!(data["userId"], json!(user));

        // The user declines the phone: password login, bind, unbind.
        let (bob, account, password) = app.password_user(None).await;
        let password_tokens = app
            .oauth_token(&[
                ("grant_type", "password"),
                ("username", &account),
                ("password", &password),
            ])
            .await;
        let bob_tokens = Tokens::from_gitegg(password_tokens.envelope_ok());
        let bob_wechat = app.wechat_user(None).await;
        let code = app.wx_login(APP, bob_wechat).await;
        let bob_key = app
            .wx(prefix, APP, "login", &format!("code={}", enc(&code)), None)
            .await
            .envelope_ok()["bindKey"]
            .as_str()
            .unwrap()
            .to_owned();
        // Without the bearer: GitEgg's 401.
        app.unchanged("GitEgg bind without a token", || async {
            app.wx(
                prefix,
                APP,
                "bind",
                &format!("socialKey={}", enc(&bob_key)),
                None,
            )
            .await
            .envelope_err(401);
        })
        .await;
        let answer = app
            .wx(
                prefix,
                APP,
                "bind",
                &format!("socialKey={}", enc(&bob_key)),
                Some(&bob_tokens.access),
            )
            .await;
        assert_eq!(answer.envelope_ok(), &json!({ "userId": bob }));
        // Binding the same identity again for another user: GitEgg's 603 (with a fresh
        // bind key: a used one is refused first, 401).
        let fresh_key = app.bind_key(APP, bob_wechat).await;
        app.unchanged("GitEgg bind of an identity bound elsewhere", || async {
            app.wx(
                prefix,
                APP,
                "bind",
                &format!("socialKey={}", enc(&bob_key)),
                Some(&tokens.access),
            )
            .await
            .envelope_err(401);
            app.wx(
                prefix,
                APP,
                "bind",
                &format!("socialKey={}", enc(&fresh_key)),
                Some(&tokens.access),
            )
            .await
            .envelope_err(603);
        })
        .await;
        // Bob binds the second app too; unbinding the first leaves it (unlike GitEgg).
        let code = app.wx_login(SECOND_APP, bob_wechat).await;
        let second_key = app
            .wx(
                prefix,
                SECOND_APP,
                "login",
                &format!("code={}", enc(&code)),
                None,
            )
            .await
            .envelope_ok()["bindKey"]
            .as_str()
            .unwrap()
            .to_owned();
        app.wx(
            prefix,
            SECOND_APP,
            "bind",
            &format!("socialKey={}", enc(&second_key)),
            Some(&bob_tokens.access),
        )
        .await
        .envelope_ok();
        assert_eq!(app.bindings_of(bob).await.len(), 2);
        let answer = app
            .wx(prefix, APP, "unbind", "", Some(&bob_tokens.access))
            .await;
        assert_eq!(answer.envelope_ok(), &Value::Null);
        let left = app.bindings_of(bob).await;
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].0, SECOND_APP);
        app.unchanged("GitEgg unbind with nothing bound", || async {
            app.wx(prefix, APP, "unbind", "", Some(&bob_tokens.access))
                .await
                .envelope_err(601);
        })
        .await;

        // Errors keep the envelope and HTTP 200.
        app.unchanged("GitEgg bad requests", || async {
            app.wx(prefix, APP, "login", "", None)
                .await
                .envelope_err(410);
            app.wx(prefix, "wxunknownapp000009", "login", "code=abc", None)
                .await
                .envelope_err(410);
            app.wx(prefix, APP, "info", "socialKey=garbage&nickName=x", None)
                .await
                .envelope_err(401);
            app.wx(prefix, APP, "phone", "code=abc", None)
                .await
                .envelope_err(410);
            let wrong_method = app
                .post_json(&format!("{prefix}/wx/user/{APP}/login"), &json!({}), None)
                .await;
            wrong_method.envelope_err(410);
        })
        .await;
    }

    app.unchanged("GitEgg OAuth errors", || async {
        app.oauth_token(&[("grant_type", "social"), ("social_key", "garbage")])
            .await
            .envelope_err(401);
        app.oauth_token(&[("grant_type", "implicit")])
            .await
            .envelope_err(410);
        app.oauth_token(&[
            ("grant_type", "password"),
            ("username", "nobody"),
            ("password", "x"),
        ])
        .await
        .envelope_err(419);
        app.get("/system/account/user/info", None)
            .await
            .envelope_err(401);
        app.post_json("/oauth/logout", &json!({ "refreshToken": "x" }), None)
            .await
            .envelope_err(401);
    })
    .await;
}

async fn gitegg_client_credentials(engine: Engine) {
    let app = spawn_app_with(engine, |config| {
        config.compat.clients.push(CompatClient {
            id: "gitegg-client".into(),
            secret: Secret::new("client-secret"),
        });
    })
    .await;
    let (_, account, password) = app.password_user(None).await;
    let form = [
        ("grant_type", "password"),
        ("username", account.as_str()),
        ("password", password.as_str()),
    ];
    let url = format!("{}/oauth/token", app.address);
    for (what, credentials) in [
        ("no client credentials", None),
        ("a wrong client secret", Some(("gitegg-client", "nope"))),
        ("an unknown client", Some(("other", "client-secret"))),
    ] {
        let answer = app
            .unchanged(what, || async {
                let mut request = app.client.post(&url).form(&form);
                if let Some((id, secret)) = credentials {
                    request = request.basic_auth(id, Some(secret));
                }
                request.send().await.unwrap().json::<Value>().await.unwrap()
            })
            .await;
        assert_eq!(
            (&answer["success"], &answer["code"]),
            (&json!(false), &json!(401)),
            "{what}: {answer}"
        );
    }
    let answer: Value = app
        .client
        .post(&url)
        .basic_auth("gitegg-client", Some("client-secret"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["code"], json!(200), "{answer}");
    Tokens::from_gitegg(&answer["data"]);
}
