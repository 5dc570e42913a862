//! The client against the simulator: every endpoint and every error path.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use futures::future::join_all;
use miniauth_application::ports::{WeChatApi, WeChatError};
use miniauth_domain::crypto::{
    open_phone, open_user_info, verify_raw_data_signature, EncryptedPayload, WatermarkPolicy,
};
use miniauth_domain::OpenId;
use miniauth_wechat::sim::{Endpoint, Fault, Faults};
use miniauth_wechat::{SessionStatus, WeChatClient};

fn only(endpoint: Endpoint, fault: Fault) -> Faults {
    Faults::none().with(endpoint, fault)
}

fn always_busy() -> Fault {
    Fault {
        busy: 1.0,
        ..Fault::default()
    }
}

fn always_5xx() -> Fault {
    Fault {
        server_error: 1.0,
        ..Fault::default()
    }
}

#[tokio::test]
async fn a_login_code_gives_openid_unionid_and_the_current_session_key() {
    let sim = start_sim().await;
    let device = sim.device();
    let client = client_for(&sim);
    let user = device.create_user(&alice()).await.unwrap();

    let login = device.login(&appid(BOUND), user).await.unwrap();
    let session = client
        .code_to_session(&appid(BOUND), &code(&login))
        .await
        .unwrap();

    assert_eq!(
        Some(session.openid.clone()),
        sim.simulator().openid(&appid(BOUND), user)
    );
    assert!(session.unionid.is_some());
    assert_eq!(
        Some(session.session_key),
        sim.simulator().session_key(&appid(BOUND), user)
    );
    assert_eq!(calls(&sim, Endpoint::Jscode2Session), 1);
}

#[tokio::test]
async fn unionid_is_shared_by_bound_apps_and_absent_elsewhere() {
    let sim = start_sim().await;
    let device = sim.device();
    let client = client_for(&sim);
    let user = device.create_user(&alice()).await.unwrap();

    let mut sessions = Vec::new();
    for app in [BOUND, BOUND_TOO, UNBOUND] {
        let login = device.login(&appid(app), user).await.unwrap();
        sessions.push(
            client
                .code_to_session(&appid(app), &code(&login))
                .await
                .unwrap(),
        );
    }

    assert_eq!(sessions[0].unionid, sessions[1].unionid);
    assert!(sessions[0].unionid.is_some());
    assert_eq!(sessions[2].unionid, None);
    // openid is per app.
    assert_ne!(sessions[0].openid, sessions[1].openid);
    assert_ne!(sessions[0].openid, sessions[2].openid);
}

#[tokio::test]
async fn each_login_rotates_the_session_key() {
    let sim = start_sim().await;
    let device = sim.device();
    let client = client_for(&sim);
    let user = device.create_user(&alice()).await.unwrap();

    let first = device.login(&appid(BOUND), user).await.unwrap();
    let first = client
        .code_to_session(&appid(BOUND), &code(&first))
        .await
        .unwrap();
    let second = device.login(&appid(BOUND), user).await.unwrap();
    let second = client
        .code_to_session(&appid(BOUND), &code(&second))
        .await
        .unwrap();

    assert_eq!(first.openid, second.openid);
    assert_ne!(first.session_key, second.session_key);
}

#[tokio::test]
async fn unknown_and_expired_codes_are_invalid() {
    let sim = start_sim().await;
    let device = sim.device();
    let client = client_for(&sim);
    let user = device.create_user(&alice()).await.unwrap();

    assert_eq!(
        client
            .code_to_session(&appid(BOUND), &code("nosuchcode"))
            .await,
        Err(WeChatError::InvalidCode)
    );

    let login = device.login(&appid(BOUND), user).await.unwrap();
    device.advance_clock(301).await.unwrap();
    assert_eq!(
        client.code_to_session(&appid(BOUND), &code(&login)).await,
        Err(WeChatError::InvalidCode)
    );

    // A code is valid in its own app only.
    let login = device.login(&appid(BOUND), user).await.unwrap();
    assert_eq!(
        client.code_to_session(&appid(UNBOUND), &code(&login)).await,
        Err(WeChatError::InvalidCode)
    );
}

#[tokio::test]
async fn a_code_used_by_another_instance_is_reported_as_used() {
    let sim = start_sim().await;
    let device = sim.device();
    let user = device.create_user(&alice()).await.unwrap();
    let login = device.login(&appid(BOUND), user).await.unwrap();

    // Two service instances: they share no memory, so WeChat sees the code twice.
    let one = client_for(&sim);
    let other = client_for(&sim);
    assert!(one
        .code_to_session(&appid(BOUND), &code(&login))
        .await
        .is_ok());
    assert_eq!(
        other.code_to_session(&appid(BOUND), &code(&login)).await,
        Err(WeChatError::CodeUsed)
    );
}

#[tokio::test]
async fn the_same_code_concurrently_makes_one_call_and_one_session() {
    let sim = start_sim().await;
    let device = sim.device();
    let client = client_for(&sim);
    let user = device.create_user(&alice()).await.unwrap();
    let login = device.login(&appid(BOUND), user).await.unwrap();
    // Slow enough that every caller arrives while the first call is in flight.
    sim.simulator()
        .set_faults(only(
            Endpoint::Jscode2Session,
            Fault {
                delay_ms: 200,
                ..Fault::default()
            },
        ))
        .unwrap();

    let results = join_all((0..10).map(|_| {
        let client = client.clone();
        let login = login.clone();
        async move { client.code_to_session(&appid(BOUND), &code(&login)).await }
    }))
    .await;

    let first = results[0].clone().unwrap();
    assert!(results.iter().all(|r| r.as_ref() == Ok(&first)));
    assert_eq!(calls(&sim, Endpoint::Jscode2Session), 1);
}

#[tokio::test]
async fn the_same_code_again_later_is_answered_once_only() {
    let sim = start_sim().await;
    let device = sim.device();
    let client = client_for(&sim);
    let user = device.create_user(&alice()).await.unwrap();
    let login = device.login(&appid(BOUND), user).await.unwrap();

    let first = client.code_to_session(&appid(BOUND), &code(&login)).await;
    let again = client.code_to_session(&appid(BOUND), &code(&login)).await;

    // A code yields credentials once: the replay is refused without asking WeChat.
    assert!(first.is_ok());
    assert_eq!(again, Err(WeChatError::CodeAlreadyAnswered));
    assert_eq!(calls(&sim, Endpoint::Jscode2Session), 1);
}

#[tokio::test]
async fn a_definitive_refusal_is_remembered_too() {
    let sim = start_sim().await;
    let client = client_for(&sim);

    for _ in 0..3 {
        assert_eq!(
            client
                .code_to_session(&appid(BOUND), &code("forgedcode"))
                .await,
            Err(WeChatError::InvalidCode)
        );
    }
    assert_eq!(calls(&sim, Endpoint::Jscode2Session), 1);
}

#[tokio::test]
async fn busy_is_retried_three_times_then_unavailable() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    sim.simulator()
        .set_faults(only(Endpoint::Jscode2Session, always_busy()))
        .unwrap();

    assert_eq!(
        client
            .code_to_session(&appid(BOUND), &code("anycode"))
            .await,
        Err(WeChatError::Unavailable {
            retry_after_secs: 3
        })
    );
    assert_eq!(calls(&sim, Endpoint::Jscode2Session), 3);
}

#[tokio::test]
async fn busy_is_not_remembered_so_the_code_still_works_afterwards() {
    let sim = start_sim().await;
    let device = sim.device();
    let client = client_for(&sim);
    let user = device.create_user(&alice()).await.unwrap();
    let login = device.login(&appid(BOUND), user).await.unwrap();
    sim.simulator()
        .set_faults(only(Endpoint::Jscode2Session, always_busy()))
        .unwrap();
    assert!(matches!(
        client.code_to_session(&appid(BOUND), &code(&login)).await,
        Err(WeChatError::Unavailable { .. })
    ));

    sim.simulator().set_faults(Faults::none()).unwrap();
    assert!(client
        .code_to_session(&appid(BOUND), &code(&login))
        .await
        .is_ok());
}

#[tokio::test]
async fn a_5xx_on_code2session_is_not_replayed_the_code_may_be_spent() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    sim.simulator()
        .set_faults(only(Endpoint::Jscode2Session, always_5xx()))
        .unwrap();

    assert!(matches!(
        client
            .code_to_session(&appid(BOUND), &code("anycode"))
            .await,
        Err(WeChatError::Unavailable { .. })
    ));
    assert_eq!(calls(&sim, Endpoint::Jscode2Session), 1);
}

#[tokio::test]
async fn a_timeout_on_code2session_is_not_replayed() {
    let sim = start_sim().await;
    let device = sim.device();
    let mut config = fast_config(sim.base_url());
    config.timeout = Duration::from_millis(100);
    let client = WeChatClient::new(config).unwrap();
    let user = device.create_user(&alice()).await.unwrap();
    let login = device.login(&appid(BOUND), user).await.unwrap();
    sim.simulator()
        .set_faults(only(
            Endpoint::Jscode2Session,
            Fault {
                delay_ms: 300,
                ..Fault::default()
            },
        ))
        .unwrap();

    assert!(matches!(
        client.code_to_session(&appid(BOUND), &code(&login)).await,
        Err(WeChatError::Unavailable { .. })
    ));
    assert_eq!(calls(&sim, Endpoint::Jscode2Session), 1);
    // WeChat did process it after all: the code is spent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sim.simulator().set_faults(Faults::none()).unwrap();
    assert_eq!(
        client.code_to_session(&appid(BOUND), &code(&login)).await,
        Err(WeChatError::CodeUsed)
    );
}

#[tokio::test]
async fn rate_limit_is_typed_and_not_retried() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    sim.simulator()
        .set_faults(only(
            Endpoint::Jscode2Session,
            Fault {
                rate_limited: 1.0,
                ..Fault::default()
            },
        ))
        .unwrap();

    assert_eq!(
        client
            .code_to_session(&appid(BOUND), &code("anycode"))
            .await,
        Err(WeChatError::RateLimited)
    );
    assert_eq!(calls(&sim, Endpoint::Jscode2Session), 1);
}

#[tokio::test]
async fn a_wrong_secret_is_bad_app_credentials() {
    let sim = start_sim().await;
    let mut config = fast_config(sim.base_url());
    config.apps[0].secret = miniauth_wechat::Secret::new("wrong");
    let client = WeChatClient::new(config).unwrap();

    assert_eq!(
        client
            .code_to_session(&appid(BOUND), &code("anycode"))
            .await,
        Err(WeChatError::BadAppCredentials)
    );
    assert_eq!(
        client.access_token(&appid(BOUND)).await,
        Err(WeChatError::BadAppCredentials)
    );
}

#[tokio::test]
async fn an_app_without_credentials_is_refused_without_calling_wechat() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    let stranger = appid("wxc000000000000009");

    assert_eq!(
        client.code_to_session(&stranger, &code("anycode")).await,
        Err(WeChatError::BadAppCredentials)
    );
    assert_eq!(calls(&sim, Endpoint::Jscode2Session), 0);
}

#[tokio::test]
async fn a_hundred_concurrent_callers_make_one_token_call() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    sim.simulator()
        .set_faults(only(
            Endpoint::StableToken,
            Fault {
                delay_ms: 100,
                ..Fault::default()
            },
        ))
        .unwrap();

    let tokens = join_all((0..100).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.access_token(&appid(BOUND)).await })
    }))
    .await;

    let first = tokens[0].as_ref().unwrap().clone().unwrap();
    for token in &tokens {
        assert_eq!(token.as_ref().unwrap().as_ref(), Ok(&first));
    }
    assert_eq!(calls(&sim, Endpoint::StableToken), 1);
    // And it stays cached.
    assert_eq!(client.access_token(&appid(BOUND)).await, Ok(first));
    assert_eq!(calls(&sim, Endpoint::StableToken), 1);
}

#[tokio::test]
async fn token_5xx_is_retried_then_unavailable() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    sim.simulator()
        .set_faults(only(Endpoint::StableToken, always_5xx()))
        .unwrap();

    assert!(matches!(
        client.access_token(&appid(BOUND)).await,
        Err(WeChatError::Unavailable { .. })
    ));
    // The token call is idempotent: replayed after 5xx.
    assert_eq!(calls(&sim, Endpoint::StableToken), 3);
}

#[tokio::test]
async fn waiters_share_a_failed_token_fetch_instead_of_each_retrying() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    sim.simulator()
        .set_faults(only(
            Endpoint::StableToken,
            Fault {
                busy: 1.0,
                delay_ms: 50,
                ..Fault::default()
            },
        ))
        .unwrap();

    let results = join_all((0..20).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.access_token(&appid(BOUND)).await })
    }))
    .await;

    assert!(results
        .iter()
        .all(|r| matches!(r.as_ref().unwrap(), Err(WeChatError::Unavailable { .. }))));
    assert_eq!(calls(&sim, Endpoint::StableToken), 3);
}

async fn logged_in_user(
    sim: &miniauth_wechat::sim::RunningSimulator,
    client: &WeChatClient,
    app: &str,
) -> (u64, miniauth_application::ports::WeChatSession) {
    let device = sim.device();
    let user = device.create_user(&alice()).await.unwrap();
    let login = device.login(&appid(app), user).await.unwrap();
    let session = client
        .code_to_session(&appid(app), &code(&login))
        .await
        .unwrap();
    (user, session)
}

#[tokio::test]
async fn a_phone_code_gives_the_verified_number_once() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    let (user, session) = logged_in_user(&sim, &client, BOUND).await;
    let bundle = sim.device().phone(&appid(BOUND), user).await.unwrap();

    let phone = client
        .phone_number(&appid(BOUND), &code(&bundle.code), &session.openid)
        .await
        .unwrap();
    assert_eq!(phone.phone.pure(), "13800138000");
    assert_eq!(phone.phone.country_code(), "86");
    assert_eq!(phone.watermark.appid, BOUND);

    assert_eq!(
        client
            .phone_number(&appid(BOUND), &code(&bundle.code), &session.openid)
            .await,
        Err(WeChatError::InvalidCode)
    );
}

#[tokio::test]
async fn a_phone_code_of_another_user_is_invalid() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    let (user, _) = logged_in_user(&sim, &client, BOUND).await;
    let (_, other) = logged_in_user(&sim, &client, BOUND).await;
    let bundle = sim.device().phone(&appid(BOUND), user).await.unwrap();

    assert_eq!(
        client
            .phone_number(&appid(BOUND), &code(&bundle.code), &other.openid)
            .await,
        Err(WeChatError::InvalidCode)
    );
}

#[tokio::test]
async fn a_foreign_number_keeps_its_country_code() {
    let sim = start_sim().await;
    let device = sim.device();
    let client = client_for(&sim);
    let mut bob = alice();
    bob.phone = Some("4155550100".into());
    bob.country_code = "1".into();
    let user = device.create_user(&bob).await.unwrap();
    let login = device.login(&appid(UNBOUND), user).await.unwrap();
    let session = client
        .code_to_session(&appid(UNBOUND), &code(&login))
        .await
        .unwrap();
    let bundle = device.phone(&appid(UNBOUND), user).await.unwrap();

    let phone = client
        .phone_number(&appid(UNBOUND), &code(&bundle.code), &session.openid)
        .await
        .unwrap();
    assert_eq!(phone.phone.pure(), "4155550100");
    assert_eq!(phone.phone.country_code(), "1");
}

#[tokio::test]
async fn a_refused_access_token_is_refreshed_once_and_the_call_succeeds() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    let (user, session) = logged_in_user(&sim, &client, BOUND).await;
    client.access_token(&appid(BOUND)).await.unwrap();
    // Another party invalidates every token: ours now gets 40001.
    sim.device().revoke_tokens(&appid(BOUND)).await.unwrap();
    let bundle = sim.device().phone(&appid(BOUND), user).await.unwrap();

    let phone = client
        .phone_number(&appid(BOUND), &code(&bundle.code), &session.openid)
        .await
        .unwrap();
    assert_eq!(phone.phone.pure(), "13800138000");
    assert_eq!(calls(&sim, Endpoint::StableToken), 2);
    assert_eq!(calls(&sim, Endpoint::GetUserPhoneNumber), 2);
}

#[tokio::test]
async fn checksession_says_valid_then_invalid_after_a_new_login() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    let (user, session) = logged_in_user(&sim, &client, BOUND).await;

    assert_eq!(
        client
            .check_session(&appid(BOUND), &session.openid, &session.session_key)
            .await,
        Ok(SessionStatus::Valid)
    );
    sim.device().login(&appid(BOUND), user).await.unwrap();
    assert_eq!(
        client
            .check_session(&appid(BOUND), &session.openid, &session.session_key)
            .await,
        Ok(SessionStatus::Invalid)
    );
}

#[tokio::test]
async fn checksession_of_an_unknown_openid_is_an_error() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    let (_, session) = logged_in_user(&sim, &client, BOUND).await;

    assert!(matches!(
        client
            .check_session(
                &appid(BOUND),
                &OpenId::parse("onobody").unwrap(),
                &session.session_key
            )
            .await,
        Err(WeChatError::Unknown { code: 40003, .. })
    ));
}

#[tokio::test]
async fn reset_gives_a_new_key_and_kills_the_old_one() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    let (user, session) = logged_in_user(&sim, &client, BOUND).await;

    let fresh = client
        .reset_session_key(&appid(BOUND), &session.openid, &session.session_key)
        .await
        .unwrap();

    assert_ne!(fresh, session.session_key);
    assert_eq!(
        Some(fresh.clone()),
        sim.simulator().session_key(&appid(BOUND), user)
    );
    assert_eq!(
        client
            .check_session(&appid(BOUND), &session.openid, &session.session_key)
            .await,
        Ok(SessionStatus::Invalid)
    );
    assert_eq!(
        client
            .check_session(&appid(BOUND), &session.openid, &fresh)
            .await,
        Ok(SessionStatus::Valid)
    );
    // The old key no longer signs a reset.
    assert!(matches!(
        client
            .reset_session_key(&appid(BOUND), &session.openid, &session.session_key)
            .await,
        Err(WeChatError::Unknown { code: 87009, .. })
    ));
}

#[tokio::test]
async fn device_payloads_open_under_the_session_key_from_code2session() {
    let sim = start_sim().await;
    let client = client_for(&sim);
    let (user, session) = logged_in_user(&sim, &client, BOUND).await;
    let device = sim.device();

    let info = device.user_info(&appid(BOUND), user).await.unwrap();
    verify_raw_data_signature(&info.raw_data, &info.signature, &session.session_key).unwrap();
    let opened = open_user_info(
        &session.session_key,
        &EncryptedPayload::parse(&info.encrypted_data, &info.iv).unwrap(),
        &appid(BOUND),
        WatermarkPolicy::default(),
        Utc::now(),
    )
    .unwrap();
    assert_eq!(opened.nick_name, "Alice");
    assert_eq!(opened.open_id.as_deref(), Some(session.openid.as_str()));
    assert_eq!(
        opened.union_id.as_deref(),
        session.unionid.as_ref().map(|u| u.as_str())
    );

    let phone = device.phone(&appid(BOUND), user).await.unwrap();
    let opened = open_phone(
        &session.session_key,
        &EncryptedPayload::parse(&phone.encrypted_data, &phone.iv).unwrap(),
        &appid(BOUND),
        WatermarkPolicy::default(),
        Utc::now(),
    )
    .unwrap();
    assert_eq!(opened.pure_phone_number, "13800138000");
    assert_eq!(opened.country_code, "86");
}
