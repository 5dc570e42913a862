//! The client against the simulator for the channels that are not mini programs: the
//! OAuth code exchange (`/sns/oauth2/access_token`), `/sns/userinfo`, the consent pages
//! and their errors.

mod common;

use std::collections::HashMap;

use common::*;
use miniauth_application::ports::{WeChatApi, WeChatError};
use miniauth_wechat::sim::{Endpoint, OAuthConsent};

fn consent(appid: &str, scope: Option<&str>) -> OAuthConsent {
    OAuthConsent {
        appid: appid.to_owned(),
        scope: scope.map(str::to_owned),
        snapshot: false,
    }
}

#[tokio::test]
async fn one_person_has_one_unionid_in_every_channel_and_an_openid_per_app() {
    let sim = start_sim().await;
    let device = sim.device();
    let client = client_for(&sim);
    let user = device.create_user(&alice()).await.unwrap();

    let login = device.login(&appid(BOUND), user).await.unwrap();
    let mini = client
        .code_to_session(&appid(BOUND), &code(&login))
        .await
        .unwrap();
    let mut openids = vec![mini.openid.clone()];
    for (app, scope) in [
        (OFFICIAL, "snsapi_userinfo"),
        (WEBSITE, "snsapi_login"),
        (MOBILE, "snsapi_userinfo"),
    ] {
        let oauth = device.oauth_code(user, &consent(app, None)).await.unwrap();
        let grant = client
            .oauth_access_token(&appid(app), &code(&oauth))
            .await
            .unwrap();
        assert_eq!(grant.unionid, mini.unionid, "{app}");
        assert_eq!(grant.scopes, vec![scope.to_owned()]);
        assert!(!grant.snapshot_user && grant.reads_userinfo());
        assert!(!format!("{grant:?}").contains(grant.access_token.expose()));
        let profile = client
            .sns_userinfo(&grant.access_token, &grant.openid)
            .await
            .unwrap();
        assert_eq!(profile.openid, grant.openid);
        assert_eq!(profile.nickname, "Alice");
        assert_eq!(profile.unionid, mini.unionid);
        assert!(!format!("{profile:?}").contains("Alice"));
        openids.push(grant.openid);
    }
    openids.sort();
    openids.dedup();
    assert_eq!(openids.len(), 4, "an openid per app");
}

#[tokio::test]
async fn snsapi_base_names_the_openid_only_and_a_snapshot_user_is_virtual() {
    let sim = start_sim().await;
    let device = sim.device();
    let client = client_for(&sim);
    let user = device.create_user(&alice()).await.unwrap();

    let base = device
        .oauth_code(user, &consent(OFFICIAL, Some("snsapi_base")))
        .await
        .unwrap();
    let grant = client
        .oauth_access_token(&appid(OFFICIAL), &code(&base))
        .await
        .unwrap();
    assert_eq!(grant.unionid, None);
    assert!(!grant.reads_userinfo());
    let refused = client
        .sns_userinfo(&grant.access_token, &grant.openid)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, WeChatError::Unknown { code: 48001, .. }),
        "{refused:?}"
    );

    let snapshot = device
        .oauth_code(
            user,
            &OAuthConsent {
                snapshot: true,
                ..consent(OFFICIAL, Some("snsapi_base"))
            },
        )
        .await
        .unwrap();
    let virtual_grant = client
        .oauth_access_token(&appid(OFFICIAL), &code(&snapshot))
        .await
        .unwrap();
    assert!(virtual_grant.snapshot_user);
    assert_ne!(virtual_grant.openid, grant.openid);
    // Only an Official Account's snsapi_base page is ever a snapshot.
    assert!(device
        .oauth_code(
            user,
            &OAuthConsent {
                snapshot: true,
                ..consent(WEBSITE, None)
            },
        )
        .await
        .is_err());
}

#[tokio::test]
async fn oauth_codes_are_one_time_per_app_and_expire() {
    let sim = start_sim().await;
    let device = sim.device();
    let client = client_for(&sim);
    let user = device.create_user(&alice()).await.unwrap();

    let oauth = device
        .oauth_code(user, &consent(WEBSITE, None))
        .await
        .unwrap();
    // Another app's code is unknown here.
    assert_eq!(
        client
            .oauth_access_token(&appid(MOBILE), &code(&oauth))
            .await
            .unwrap_err(),
        WeChatError::InvalidCode
    );
    client
        .oauth_access_token(&appid(WEBSITE), &code(&oauth))
        .await
        .unwrap();
    // The client remembers the answered code; WeChat itself says 40163.
    assert_eq!(
        client
            .oauth_access_token(&appid(WEBSITE), &code(&oauth))
            .await
            .unwrap_err(),
        WeChatError::CodeAlreadyAnswered
    );
    assert_eq!(
        client_for(&sim)
            .oauth_access_token(&appid(WEBSITE), &code(&oauth))
            .await
            .unwrap_err(),
        WeChatError::CodeUsed
    );
    let late = device
        .oauth_code(user, &consent(WEBSITE, None))
        .await
        .unwrap();
    device.advance_clock(301).await.unwrap();
    assert_eq!(
        client
            .oauth_access_token(&appid(WEBSITE), &code(&late))
            .await
            .unwrap_err(),
        WeChatError::InvalidCode
    );
    assert_eq!(calls(&sim, Endpoint::OAuthAccessToken), 4);
    // A mini program's wx.login and an OAuth consent are not interchangeable.
    assert!(device.login(&appid(WEBSITE), user).await.is_err());
    assert!(device
        .oauth_code(user, &consent(BOUND, None))
        .await
        .is_err());
}

#[tokio::test]
async fn the_consent_pages_send_the_browser_back_with_a_code_and_the_state() {
    let sim = start_sim().await;
    let device = sim.device();
    let client = client_for(&sim);
    let user = device.create_user(&alice()).await.unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (app, page, scope) in [
        (OFFICIAL, "/connect/oauth2/authorize", "snsapi_userinfo"),
        (WEBSITE, "/connect/qrconnect", "snsapi_login"),
    ] {
        let answer = http
            .get(format!("{}{page}", sim.base_url()))
            .query(&[
                ("appid", app),
                ("redirect_uri", "https://shop.example/done?x=1"),
                ("response_type", "code"),
                ("scope", scope),
                ("state", "s-123"),
                ("sim_user", &user.to_string()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 302);
        let location = url::Url::parse(answer.headers()["location"].to_str().unwrap()).unwrap();
        assert!(location
            .as_str()
            .starts_with("https://shop.example/done?x=1&code="));
        let query: HashMap<_, _> = location.query_pairs().into_owned().collect();
        assert_eq!(query["state"], "s-123");
        let grant = client
            .oauth_access_token(&appid(app), &code(&query["code"]))
            .await
            .unwrap();
        assert!(grant.unionid.is_some());
        // Without the simulated person, the page says what it needs.
        let refused = http
            .get(format!("{}{page}", sim.base_url()))
            .query(&[
                ("appid", app),
                ("redirect_uri", "https://x.example/"),
                ("response_type", "code"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
    }
    // The page of the other kind refuses the app.
    let wrong = http
        .get(format!("{}/connect/qrconnect", sim.base_url()))
        .query(&[
            ("appid", OFFICIAL),
            ("redirect_uri", "https://x.example/"),
            ("response_type", "code"),
            ("sim_user", &user.to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
}
