//! Steps 2–4: a `wx.login` code becomes a session, a ticket and, for a returning user,
//! tokens at once.

use miniauth_application::ports::{
    ClientNet, MockAttemptLimiter, ThrottleError, ThrottleKey, WeChatError, WeChatSession,
};
use miniauth_application::AppError;
use miniauth_domain::{SocialAccountEvent, UnionId};

use crate::harness::*;

fn session_of(key_text: &str) -> WeChatSession {
    WeChatSession {
        openid: openid(OPENID),
        unionid: Some(UnionId::parse("ocMvos6NjeKLIBqg5Mr9QjxrP1FA").unwrap()),
        session_key: key(key_text),
    }
}

#[tokio::test]
async fn a_new_identity_gets_session_one_and_a_ticket_but_no_tokens() {
    let mut world = World::new();
    world
        .wechat
        .expect_code_to_session()
        .withf(|app, code| app.as_str() == APP && code.expose() == "code-1")
        .times(1)
        .returning(|_, _| Ok(session_of(KEY1)));
    // Nobody is bound yet: the user directory is not consulted.
    world.users.expect_get().never();
    let built = world.build();

    let outcome = built.auth.login(&ctx(), APP, "code-1").await.unwrap();

    assert_eq!(outcome.openid, openid(OPENID));
    assert_eq!(outcome.bound_user, None);
    assert!(outcome.tokens.is_none());
    assert!(!outcome.has_profile && !outcome.has_phone);
    assert_eq!(
        outcome.unionid.as_ref().map(UnionId::as_str),
        Some("ocMvos6NjeKLIBqg5Mr9QjxrP1FA")
    );
    let claims = read_ticket(&outcome.ticket.token);
    assert_eq!(
        (
            claims.appid.as_str(),
            claims.openid.as_str(),
            claims.session_seq
        ),
        (APP, OPENID, 1)
    );
    assert_eq!(outcome.ticket.expires_in, 3600);

    let events = built.events(&account()).await;
    match &events[..] {
        [SocialAccountEvent::SessionObtained(e)] => {
            assert_eq!(e.session_seq, 1);
            assert_eq!(e.session_key, Some(sealed_secret(KEY1)));
        }
        other => panic!("expected one SessionObtained, got {other:?}"),
    }
    assert!(!built.stored_json(&account()).await.contains(KEY1));
    assert!(built.refresh_issued_for().is_empty());
}

#[tokio::test]
async fn the_event_metadata_records_who_asked() {
    let mut world = World::new();
    world
        .wechat
        .expect_code_to_session()
        .returning(|_, _| Ok(session_of(KEY1)));
    let built = world.build();

    built.auth.login(&ctx(), APP, "code-1").await.unwrap();

    let envelopes = built.envelopes(&account()).await;
    let metadata = &envelopes[0].metadata;
    assert_eq!(metadata["request_id"], "req-1");
    assert_eq!(metadata["actor"], "wechat");
    // The client IP is the person's: sealed with the account's data key.
    assert_eq!(
        metadata["client_ip"],
        sealed_datum("203.0.113.9").as_sealed_text()
    );
    assert_eq!(metadata["recorded_at"], "2026-01-01T09:00:00.000Z");
}

#[tokio::test]
async fn a_returning_bound_user_gets_tokens_in_the_same_round_trip() {
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    world
        .wechat
        .expect_code_to_session()
        .times(1)
        .returning(|_, _| Ok(session_of(KEY2)));
    world
        .users
        .expect_get()
        .withf(|id| id.get() == 7)
        .times(1)
        .returning(|_| Ok(Some(user(7))));
    let built = world.build();

    let outcome = built.auth.login(&ctx(), APP, "code-2").await.unwrap();

    assert_eq!(outcome.bound_user, Some(user_id(7)));
    let tokens = outcome.tokens.expect("a bound user gets tokens at once");
    assert_eq!(tokens.user_id, user_id(7));
    assert_eq!(tokens.access.token, format!("access|7|{APP}"));
    assert_eq!(built.refresh_issued_for(), vec![user_id(7)]);
    assert_eq!(read_ticket(&outcome.ticket.token).session_seq, 2);
    match &built.new_events(&account(), 2).await[..] {
        [SocialAccountEvent::SessionObtained(e)] => assert_eq!(e.session_seq, 2),
        other => panic!("expected one new SessionObtained, got {other:?}"),
    }
}

#[tokio::test]
async fn a_disabled_bound_user_is_refused_before_anything_is_written() {
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    world
        .wechat
        .expect_code_to_session()
        .returning(|_, _| Ok(session_of(KEY2)));
    world
        .users
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(disabled_user(7))));
    let built = world.build();

    let error = built.auth.login(&ctx(), APP, "code-2").await.unwrap_err();

    assert!(matches!(error, AppError::UserDisabled), "{error:?}");
    assert_eq!(code(&error), "user_disabled");
    assert!(built.new_events(&account(), 2).await.is_empty());
    assert!(built.refresh_issued_for().is_empty());
}

#[tokio::test]
async fn a_bound_user_that_no_longer_exists_is_refused_without_writing() {
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    world
        .wechat
        .expect_code_to_session()
        .returning(|_, _| Ok(session_of(KEY2)));
    world.users.expect_get().times(1).returning(|_| Ok(None));
    let built = world.build();

    let error = built.auth.login(&ctx(), APP, "code-2").await.unwrap_err();

    assert_eq!(code(&error), "user_not_found");
    assert!(built.new_events(&account(), 2).await.is_empty());
}

#[tokio::test]
async fn an_unknown_app_is_refused_without_calling_wechat() {
    let mut world = World::new();
    world.wechat.expect_code_to_session().never();
    let built = world.build();

    for appid in ["wx1111111111111111", "not-an-appid", ""] {
        let error = built.auth.login(&ctx(), appid, "code-1").await.unwrap_err();
        assert!(matches!(error, AppError::UnknownApp), "{appid}: {error:?}");
        assert_eq!(code(&error), "unknown_app");
    }
}

#[tokio::test]
async fn an_empty_or_malformed_code_is_refused_without_calling_wechat() {
    let mut world = World::new();
    world.wechat.expect_code_to_session().never();
    let built = world.build();

    for bad in ["", "   ", "code with spaces", "code\u{0}"] {
        let error = built.auth.login(&ctx(), APP, bad).await.unwrap_err();
        match &error {
            AppError::Invalid(invalid) => assert_eq!(invalid.field, "code"),
            other => panic!("{bad:?}: expected an invalid code, got {other:?}"),
        }
        assert_eq!(code(&error), "invalid_field");
    }
    assert!(built.vault.secrets_sealed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn each_wechat_refusal_passes_through_and_nothing_is_written() {
    let refusals = [
        (WeChatError::InvalidCode, "code_invalid"),
        (WeChatError::CodeUsed, "code_used"),
        (WeChatError::RateLimited, "wechat_rate_limited"),
        (WeChatError::BlockedUser, "wechat_user_blocked"),
        (
            WeChatError::Unavailable {
                retry_after_secs: 7,
            },
            "wechat_unavailable",
        ),
        (WeChatError::BadAppCredentials, "wechat_app_credentials"),
        (WeChatError::IpNotWhitelisted, "wechat_ip_not_whitelisted"),
        (WeChatError::QuotaExhausted, "wechat_quota_exhausted"),
        (
            WeChatError::Unknown {
                code: 61_450,
                message: "system error".into(),
            },
            "wechat_error",
        ),
    ];
    for (refusal, expected_code) in refusals {
        let mut world = World::new();
        let answer = refusal.clone();
        world
            .wechat
            .expect_code_to_session()
            .times(1)
            .returning(move |_, _| Err(answer.clone()));
        let built = world.build();

        let error = built.auth.login(&ctx(), APP, "code-1").await.unwrap_err();

        match &error {
            AppError::WeChat(passed) => assert_eq!(passed, &refusal),
            other => panic!("{refusal:?}: expected it to pass through, got {other:?}"),
        }
        assert_eq!(code(&error), expected_code);
        assert!(built.events(&account()).await.is_empty());
        assert!(built.vault.secrets_sealed.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_client_over_its_login_rate_is_refused_before_wechat_is_called() {
    let mut world = World::new();
    world.limiter = MockAttemptLimiter::new();
    world
        .limiter
        .expect_hit()
        .withf(|key, at| {
            *key == ThrottleKey::Login(ClientNet::of("203.0.113.9".parse().unwrap()))
                && *at == now()
        })
        .times(1)
        .returning(|_, _| {
            Err(ThrottleError::Exceeded {
                retry_after_secs: 42,
            })
        });
    // The app's code2session quota is not spent on a refused login.
    world.wechat.expect_code_to_session().never();
    let built = world.build();

    let error = built.auth.login(&ctx(), APP, "code-1").await.unwrap_err();

    assert!(matches!(error, AppError::TooManyLogins(42)), "{error:?}");
    assert_eq!(code(&error), "too_many_logins");
    assert_eq!(
        error.kind(),
        miniauth_application::ErrorKind::TooManyRequests(42)
    );
    assert!(built.events(&account()).await.is_empty());
}
