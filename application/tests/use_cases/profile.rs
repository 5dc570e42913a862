//! Steps 6–7: the profile, from the legacy encrypted payload or client-supplied, and
//! every way a ticket or a payload is refused.

use std::sync::Arc;

use miniauth_application::ports::{MockTicketCodec, TicketError};
use miniauth_application::{AppError, ProfileInput};
use miniauth_domain::{AccountError, PayloadError, ProfileSource, SocialAccountEvent};

use crate::harness::*;

fn encrypted(info: UserInfo) -> ProfileInput {
    ProfileInput::Encrypted {
        raw_data: info.raw_data,
        signature: info.signature,
        encrypted_data: info.encrypted_data,
        iv: info.iv,
    }
}

fn client_supplied(nickname: &str, avatar_url: &str) -> ProfileInput {
    ProfileInput::ClientSupplied {
        nickname: nickname.into(),
        avatar_url: avatar_url.into(),
    }
}

/// Submits `input` with a ticket of `ticket_seq` to an account holding `given`;
/// expects a refusal and checks that nothing was written or sealed.
async fn refused(given: Vec<SocialAccountEvent>, ticket_seq: u64, input: ProfileInput) -> AppError {
    let world = World::new();
    let given_count = given.len();
    world.given(&account(), given).await;
    let built = world.build();

    let error = built
        .auth
        .submit_profile(&ctx(), APP, &ticket(APP, ticket_seq), input)
        .await
        .unwrap_err();

    assert!(built.new_events(&account(), given_count).await.is_empty());
    assert!(built.vault.personal_sealed().is_empty());
    error
}

#[tokio::test]
async fn an_official_style_encrypted_profile_is_recorded_sealed() {
    let world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    let built = world.build();

    let outcome = built
        .auth
        .submit_profile(
            &ctx(),
            APP,
            &ticket(APP, 1),
            encrypted(user_info(KEY1, APP, OPENID)),
        )
        .await
        .unwrap();

    assert_eq!(outcome.nickname, "Band");
    assert_eq!(outcome.avatar_url, "https://wx.qlogo.cn/mmopen/band/0");
    match &built.new_events(&account(), 1).await[..] {
        [SocialAccountEvent::ProfileDecrypted(e)] => {
            assert_eq!(e.via, ProfileSource::EncryptedPayload);
            assert_eq!(e.nickname, sealed_datum("Band"));
            assert_eq!(
                e.avatar_url,
                sealed_datum("https://wx.qlogo.cn/mmopen/band/0")
            );
            // The unionid is sealed beside its lookup hash, never in clear.
            let unionid = e.unionid.as_ref().expect("the payload's unionid");
            assert_eq!(
                unionid.sealed,
                Some(sealed_datum("ocMvos6NjeKLIBqg5Mr9QjxrP1FA"))
            );
            assert!(!unionid.hash.contains("ocMvos6NjeKLIBqg5Mr9QjxrP1FA"));
        }
        other => panic!("expected one ProfileDecrypted, got {other:?}"),
    }
    assert_eq!(
        built.vault.personal_sealed(),
        vec![
            "ocMvos6NjeKLIBqg5Mr9QjxrP1FA".to_owned(),
            "Band".to_owned(),
            "https://wx.qlogo.cn/mmopen/band/0".to_owned()
        ]
    );
    let json = built.stored_json(&account()).await;
    assert!(!json.contains("Band") && !json.contains("qlogo") && !json.contains(KEY1));
    assert!(!json.contains("ocMvos6NjeKLIBqg5Mr9QjxrP1FA"));
}

#[tokio::test]
async fn a_client_supplied_profile_is_validated_and_recorded() {
    let world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    let built = world.build();

    let outcome = built
        .auth
        .submit_profile(
            &ctx(),
            APP,
            &ticket(APP, 1),
            client_supplied("  小明 ", "wxfile://tmp/avatar.png"),
        )
        .await
        .unwrap();

    assert_eq!(outcome.nickname, "小明");
    match &built.new_events(&account(), 1).await[..] {
        [SocialAccountEvent::ProfileDecrypted(e)] => {
            assert_eq!(e.via, ProfileSource::ClientSupplied);
            assert_eq!(e.nickname, sealed_datum("小明"));
            assert_eq!(e.avatar_url, sealed_datum("wxfile://tmp/avatar.png"));
            assert_eq!(e.unionid, None);
        }
        other => panic!("expected one ProfileDecrypted, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_supplied_profile_with_bad_fields_is_refused() {
    let long_name = "x".repeat(65);
    for (nickname, avatar, field) in [
        ("", "https://a.example/1.png", "nickname"),
        (long_name.as_str(), "https://a.example/1.png", "nickname"),
        ("bell\u{7}", "https://a.example/1.png", "nickname"),
        ("Ann", "javascript:alert(1)", "avatar_url"),
        ("Ann", "https://a.example/with space.png", "avatar_url"),
    ] {
        let error = refused(vec![session(1, KEY1)], 1, client_supplied(nickname, avatar)).await;
        match error {
            AppError::Invalid(invalid) => assert_eq!(invalid.field, field, "{nickname:?}"),
            other => panic!("{nickname:?} {avatar:?}: got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_signature_that_does_not_match_raw_data_is_refused() {
    let mut info = user_info(KEY1, APP, OPENID);
    info.raw_data = r#"{"nickName":"Eve"}"#.into();

    let error = refused(vec![session(1, KEY1)], 1, encrypted(info)).await;

    assert!(matches!(error, AppError::PayloadRejected), "{error:?}");
    assert_eq!(code(&error), "payload_rejected");
}

#[tokio::test]
async fn a_payload_watermarked_for_another_app_is_refused() {
    let error = refused(
        vec![session(1, KEY1)],
        1,
        encrypted(user_info(KEY1, OTHER_APP, OPENID)),
    )
    .await;

    assert!(matches!(error, AppError::PayloadRejected), "{error:?}");
    assert_eq!(code(&error), "payload_rejected");
}

#[tokio::test]
async fn a_payload_about_another_wechat_user_is_refused() {
    let error = refused(
        vec![session(1, KEY1)],
        1,
        encrypted(user_info(KEY1, APP, "someone-else")),
    )
    .await;

    assert!(matches!(error, AppError::PayloadRejected), "{error:?}");
    assert_eq!(code(&error), "payload_rejected");
}

#[tokio::test]
async fn encrypted_data_that_is_not_base64_is_refused_by_name() {
    let mut info = user_info(KEY1, APP, OPENID);
    info.encrypted_data = "%%% not base64 %%%".into();

    let error = refused(vec![session(1, KEY1)], 1, encrypted(info)).await;

    assert!(
        matches!(
            error,
            AppError::Payload(PayloadError::NotBase64 {
                field: "encrypted_data"
            })
        ),
        "{error:?}"
    );
    assert_eq!(code(&error), "payload_not_base64");
}

#[tokio::test]
async fn an_iv_of_the_wrong_length_is_refused_by_name() {
    let mut info = user_info(KEY1, APP, OPENID);
    info.iv = "AAAAAAAA".into();

    let error = refused(vec![session(1, KEY1)], 1, encrypted(info)).await;

    assert!(
        matches!(
            error,
            AppError::Payload(PayloadError::WrongLength { field: "iv", .. })
        ),
        "{error:?}"
    );
    assert_eq!(code(&error), "payload_wrong_length");
}

#[tokio::test]
async fn base64_damaged_by_url_decoding_is_repaired() {
    let world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    let built = world.build();
    let mut info = user_info(KEY1, APP, OPENID);
    assert!(
        info.encrypted_data.contains('+'),
        "the vector must exercise the repair"
    );
    info.encrypted_data = info.encrypted_data.replace('+', " ");

    let outcome = built
        .auth
        .submit_profile(&ctx(), APP, &ticket(APP, 1), encrypted(info))
        .await
        .unwrap();

    assert_eq!(outcome.nickname, "Band");
}

#[tokio::test]
async fn a_payload_under_a_key_the_account_never_held_is_rejected() {
    let error = refused(
        vec![session(1, KEY1)],
        1,
        encrypted(user_info(KEY3, APP, OPENID)),
    )
    .await;

    assert!(matches!(error, AppError::PayloadRejected), "{error:?}");
    assert_eq!(code(&error), "payload_rejected");
}

#[tokio::test]
async fn the_wx_login_race_payload_under_the_newer_session_is_accepted() {
    // The front end's wx.login ran again after the ticket of session 1 was issued:
    // WeChat rotated the key, and the payload comes under session 2's key.
    let world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), session(2, KEY2)])
        .await;
    let built = world.build();

    let outcome = built
        .auth
        .submit_profile(
            &ctx(),
            APP,
            &ticket(APP, 1),
            encrypted(user_info(KEY2, APP, OPENID)),
        )
        .await
        .unwrap();

    assert_eq!(outcome.nickname, "Band");
    // The ticket's own key was tried first, then the newest one opened the payload.
    assert_eq!(
        built.vault.secrets_unsealed(),
        vec![KEY1.to_owned(), KEY2.to_owned()]
    );
    match &built.new_events(&account(), 2).await[..] {
        [SocialAccountEvent::ProfileDecrypted(e)] => {
            assert_eq!(e.via, ProfileSource::EncryptedPayload)
        }
        other => panic!("expected one ProfileDecrypted, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stale_ticket_without_a_payload_is_refused_as_superseded() {
    let error = refused(
        vec![session(1, KEY1), session(2, KEY2)],
        1,
        client_supplied("Ann", "https://a.example/1.png"),
    )
    .await;

    assert!(
        matches!(
            error,
            AppError::Account(AccountError::TicketSessionSuperseded)
        ),
        "{error:?}"
    );
    assert_eq!(code(&error), "ticket_session_superseded");
}

#[tokio::test]
async fn a_stale_ticket_with_a_payload_under_no_held_key_is_superseded_not_a_decryption_error() {
    let error = refused(
        vec![session(1, KEY1), session(2, KEY2)],
        1,
        encrypted(user_info(KEY3, APP, OPENID)),
    )
    .await;

    assert!(
        matches!(
            error,
            AppError::Account(AccountError::TicketSessionSuperseded)
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_ticket_older_than_the_retained_sessions_is_superseded_even_with_its_own_key() {
    let given = vec![
        session(1, KEY1),
        session(2, KEY2),
        session(3, KEY3),
        session(4, KEY2),
        session(5, KEY3),
    ];

    let error = refused(given, 1, encrypted(user_info(KEY1, APP, OPENID))).await;

    assert!(
        matches!(
            error,
            AppError::Account(AccountError::TicketSessionSuperseded)
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_ticket_for_a_session_the_account_never_had_is_refused() {
    let error = refused(
        vec![session(1, KEY1)],
        2,
        client_supplied("Ann", "https://a.example/1.png"),
    )
    .await;

    assert_eq!(code(&error), "ticket_unknown_session");
}

#[tokio::test]
async fn a_ticket_for_an_identity_that_never_logged_in_is_refused() {
    let error = refused(vec![], 1, client_supplied("Ann", "https://a.example/1.png")).await;

    assert_eq!(code(&error), "no_session");
}

#[tokio::test]
async fn a_ticket_issued_for_another_app_is_refused() {
    // The same WeChat user logged in to both apps; the other app's ticket is genuine
    // and current, but it does not speak for this app.
    let world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world
        .given(&account_in(OTHER_APP), vec![session_in(OTHER_APP, 1, KEY2)])
        .await;
    let built = world.build();

    let error = built
        .auth
        .submit_profile(
            &ctx(),
            APP,
            &ticket(OTHER_APP, 1),
            client_supplied("Ann", "https://a.example/1.png"),
        )
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::TicketAppMismatch), "{error:?}");
    assert_eq!(code(&error), "ticket_app_mismatch");
    assert!(built.new_events(&account(), 1).await.is_empty());
    assert!(built.new_events(&account_in(OTHER_APP), 1).await.is_empty());
    assert!(built.vault.personal_sealed().is_empty());
}

/// The codec's verdicts on a ticket reach the client as ticket errors, and nothing
/// else happens: no account is loaded, nothing sealed, nothing written.
#[tokio::test]
async fn expired_forged_and_malformed_tickets_are_refused_with_their_own_codes() {
    for (verdict, expected) in [
        (TicketError::Expired, "ticket_expired"),
        (TicketError::Forged, "ticket_forged"),
        (TicketError::Malformed, "ticket_malformed"),
    ] {
        let mut world = World::new();
        world.given(&account(), vec![session(1, KEY1)]).await;
        let mut codec = MockTicketCodec::new();
        let answer = verdict.clone();
        codec
            .expect_verify()
            .withf(|ticket, at| ticket == "opaque-ticket" && *at == now())
            .times(1)
            .returning(move |_, _| Err(answer.clone()));
        codec.expect_issue().never();
        world.tickets = Arc::new(codec);
        let built = world.build();

        let error = built
            .auth
            .submit_profile(
                &ctx(),
                APP,
                " opaque-ticket ",
                client_supplied("Ann", "https://a.example/1.png"),
            )
            .await
            .unwrap_err();

        match &error {
            AppError::Ticket(refused) => assert_eq!(refused, &verdict),
            other => panic!("{verdict:?}: got {other:?}"),
        }
        assert_eq!(code(&error), expected);
        assert!(built.new_events(&account(), 1).await.is_empty());
        assert!(built.vault.personal_sealed().is_empty());
    }
}

#[tokio::test]
async fn a_missing_ticket_is_refused_without_asking_the_codec() {
    let mut world = World::new();
    let mut codec = MockTicketCodec::new();
    codec.expect_verify().never();
    world.tickets = Arc::new(codec);
    let built = world.build();

    for missing in ["", "   "] {
        let error = built
            .auth
            .submit_profile(
                &ctx(),
                APP,
                missing,
                client_supplied("Ann", "https://a.example/1.png"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, AppError::Ticket(TicketError::Missing)),
            "{error:?}"
        );
        assert_eq!(code(&error), "ticket_missing");
    }
}
