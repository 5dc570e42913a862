//! Steps 8–10: a verified phone, then a match with an existing user or a registration
//! under the app's policy — and every refusal, which writes nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use miniauth_application::ports::{Claim, ClaimError, Registration, VerifiedPhone, WeChatError};
use miniauth_application::{AppError, PhoneInput, RegistrationPolicy};
use miniauth_domain::crypto::Watermark;
use miniauth_domain::{AccountError, BindMethod, PhoneSource, SocialAccountEvent};

use crate::harness::*;

fn phone_code() -> PhoneInput {
    PhoneInput::Code("phone-code-1".into())
}

fn phone_encrypted(key_text: &str) -> PhoneInput {
    let (encrypted_data, iv) = phone_payload(key_text, APP);
    PhoneInput::Encrypted { encrypted_data, iv }
}

/// WeChat exchanges the phone code once, for this app and this user.
fn wechat_verifies_phone(world: &mut World, watermark_app: &'static str) {
    world
        .wechat
        .expect_phone_number()
        .withf(|app, code, open| {
            app.as_str() == APP && code.expose() == "phone-code-1" && open.as_str() == OPENID
        })
        .times(1)
        .returning(move |_, _, _| {
            Ok(VerifiedPhone {
                phone: phone(),
                watermark: Watermark {
                    appid: watermark_app.into(),
                    timestamp: now().timestamp(),
                },
            })
        });
}

fn phone_matches(world: &mut World, found: Option<i64>) {
    world
        .users
        .expect_find_by_phone()
        .withf(|t, p| *t == tenant() && *p == phone())
        .times(1)
        .returning(move |_, _| Ok(found.map(user)));
}

fn registry_claims(world: &mut World, id: i64, claim: Result<Claim, ClaimError>) {
    world
        .registry
        .expect_claim()
        .withf(move |app, open, u| app.as_str() == APP && open.as_str() == OPENID && u.get() == id)
        .times(1)
        .returning(move |_, _, _| claim.clone());
}

fn nothing_registered(world: &mut World) {
    world.users.expect_register().never();
    world.users.expect_discard_unbound().never();
}

fn nothing_claimed(world: &mut World) {
    world.registry.expect_claim().never();
    world.registry.expect_release().never();
}

async fn verify(
    built: &Built,
    input: PhoneInput,
) -> Result<miniauth_application::PhoneOutcome, AppError> {
    built
        .auth
        .verify_phone(&ctx(), APP, &ticket(APP, 1), input)
        .await
}

#[tokio::test]
async fn a_phone_code_of_an_existing_user_binds_by_phone_match() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    wechat_verifies_phone(&mut world, APP);
    phone_matches(&mut world, Some(9));
    nothing_registered(&mut world);
    registry_claims(&mut world, 9, Ok(Claim::New));
    world.registry.expect_release().never();
    let built = world.build();

    let outcome = verify(&built, phone_code()).await.unwrap();

    assert_eq!(outcome.user_id, user_id(9));
    assert!(!outcome.registered);
    assert_eq!(outcome.tokens.user_id, user_id(9));
    assert_eq!(outcome.tokens.access.token, format!("access|9|{APP}"));
    match &built.new_events(&account(), 1).await[..] {
        [SocialAccountEvent::PhoneVerified(p), SocialAccountEvent::UserBound(b)] => {
            assert_eq!(p.via, PhoneSource::PhoneCode);
            assert_eq!(p.phone, sealed_datum(PHONE));
            assert_eq!(p.country_code, "86");
            assert_eq!(b.user_id, user_id(9));
            assert_eq!(b.via, BindMethod::PhoneMatch);
        }
        other => panic!("expected PhoneVerified then UserBound, got {other:?}"),
    }
    assert!(!built.stored_json(&account()).await.contains(PHONE));
}

#[tokio::test]
async fn a_legacy_encrypted_phone_is_opened_under_the_session_key_and_matched() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world.wechat.expect_phone_number().never();
    phone_matches(&mut world, Some(9));
    nothing_registered(&mut world);
    registry_claims(&mut world, 9, Ok(Claim::New));
    let built = world.build();

    let outcome = verify(&built, phone_encrypted(KEY1)).await.unwrap();

    assert_eq!(outcome.user_id, user_id(9));
    match &built.new_events(&account(), 1).await[..] {
        [SocialAccountEvent::PhoneVerified(p), SocialAccountEvent::UserBound(b)] => {
            assert_eq!(p.via, PhoneSource::EncryptedPayload);
            assert_eq!(p.phone, sealed_datum(PHONE));
            assert_eq!(b.via, BindMethod::PhoneMatch);
        }
        other => panic!("expected PhoneVerified then UserBound, got {other:?}"),
    }
    let json = built.stored_json(&account()).await;
    assert!(!json.contains(PHONE) && !json.contains(KEY1));
}

#[tokio::test]
async fn the_wx_login_race_also_holds_for_a_legacy_phone_payload() {
    // Ticket of session 1, payload under session 2's key: the watermark and the
    // newest key prove it, so it is accepted and the binding follows.
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), session(2, KEY2)])
        .await;
    phone_matches(&mut world, Some(9));
    nothing_registered(&mut world);
    registry_claims(&mut world, 9, Ok(Claim::New));
    let built = world.build();

    let outcome = verify(&built, phone_encrypted(KEY2)).await.unwrap();

    assert_eq!(outcome.user_id, user_id(9));
    assert_eq!(
        built.vault.secrets_unsealed(),
        vec![KEY1.to_owned(), KEY2.to_owned()]
    );
    assert_eq!(built.new_events(&account(), 2).await.len(), 2);
}

#[tokio::test]
async fn a_legacy_phone_payload_under_a_key_not_held_is_refused() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world.users.expect_find_by_phone().never();
    nothing_claimed(&mut world);
    let built = world.build();

    let error = verify(&built, phone_encrypted(KEY3)).await.unwrap_err();

    assert!(matches!(error, AppError::PayloadRejected), "{error:?}");
    assert!(built.new_events(&account(), 1).await.is_empty());
}

#[tokio::test]
async fn a_phone_code_with_a_superseded_ticket_is_refused_before_wechat_bills_it() {
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), session(2, KEY2)])
        .await;
    world.wechat.expect_phone_number().never();
    world.users.expect_find_by_phone().never();
    nothing_claimed(&mut world);
    let built = world.build();

    let error = verify(&built, phone_code()).await.unwrap_err();

    assert!(
        matches!(
            error,
            AppError::Account(AccountError::TicketSessionSuperseded)
        ),
        "{error:?}"
    );
    assert!(built.new_events(&account(), 2).await.is_empty());
    assert!(built.vault.personal_sealed().is_empty());
}

#[tokio::test]
async fn an_empty_phone_code_is_refused_without_calling_wechat() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world.wechat.expect_phone_number().never();
    let built = world.build();

    let error = verify(&built, PhoneInput::Code(" ".into()))
        .await
        .unwrap_err();

    assert_eq!(code(&error), "invalid_field");
    assert!(built.new_events(&account(), 1).await.is_empty());
}

#[tokio::test]
async fn a_phone_code_rejected_by_wechat_passes_through_and_writes_nothing() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world
        .wechat
        .expect_phone_number()
        .times(1)
        .returning(|_, _, _| Err(WeChatError::CodeUsed));
    world.users.expect_find_by_phone().never();
    let built = world.build();

    let error = verify(&built, phone_code()).await.unwrap_err();

    assert!(matches!(error, AppError::WeChat(WeChatError::CodeUsed)));
    assert_eq!(code(&error), "code_used");
    assert!(built.new_events(&account(), 1).await.is_empty());
}

#[tokio::test]
async fn a_phone_watermarked_for_another_app_is_refused() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    wechat_verifies_phone(&mut world, OTHER_APP);
    world.users.expect_find_by_phone().never();
    nothing_claimed(&mut world);
    let built = world.build();

    let error = verify(&built, phone_code()).await.unwrap_err();

    assert!(matches!(error, AppError::PayloadRejected), "{error:?}");
    assert!(built.new_events(&account(), 1).await.is_empty());
}

#[tokio::test]
async fn an_unknown_phone_registers_a_new_user_from_the_profile_when_policy_is_auto() {
    let mut world = World::new();
    world
        .given(
            &account(),
            vec![
                session(1, KEY1),
                profile("Ann", "https://a.example/ann.png"),
            ],
        )
        .await;
    wechat_verifies_phone(&mut world, APP);
    phone_matches(&mut world, None);
    world
        .users
        .expect_register()
        .withf(|new| {
            new.tenant == tenant()
                && new.mobile == phone()
                && new.nickname.as_deref() == Some("Ann")
                && new.avatar_url.as_deref() == Some("https://a.example/ann.png")
        })
        .times(1)
        .returning(|_| Ok(Registration::Created(user(21))));
    world.users.expect_discard_unbound().never();
    registry_claims(&mut world, 21, Ok(Claim::New));
    world.registry.expect_release().never();
    let built = world.build();

    let outcome = verify(&built, phone_code()).await.unwrap();

    assert_eq!(outcome.user_id, user_id(21));
    assert!(outcome.registered);
    assert_eq!(outcome.tokens.user_id, user_id(21));
    match &built.new_events(&account(), 2).await[..] {
        [SocialAccountEvent::PhoneVerified(_), SocialAccountEvent::UserBound(b)] => {
            assert_eq!(b.user_id, user_id(21));
            assert_eq!(b.via, BindMethod::AutoRegistration);
        }
        other => panic!("expected PhoneVerified then UserBound, got {other:?}"),
    }
}

#[tokio::test]
async fn existing_phone_only_binds_a_known_phone() {
    let mut world = World::with_policy(RegistrationPolicy::ExistingPhoneOnly);
    world.given(&account(), vec![session(1, KEY1)]).await;
    wechat_verifies_phone(&mut world, APP);
    phone_matches(&mut world, Some(9));
    nothing_registered(&mut world);
    registry_claims(&mut world, 9, Ok(Claim::New));
    let built = world.build();

    let outcome = verify(&built, phone_code()).await.unwrap();

    assert_eq!((outcome.user_id, outcome.registered), (user_id(9), false));
    assert_eq!(built.new_events(&account(), 1).await.len(), 2);
}

#[tokio::test]
async fn existing_phone_only_refuses_an_unknown_phone_and_writes_nothing() {
    let mut world = World::with_policy(RegistrationPolicy::ExistingPhoneOnly);
    world.given(&account(), vec![session(1, KEY1)]).await;
    wechat_verifies_phone(&mut world, APP);
    phone_matches(&mut world, None);
    nothing_registered(&mut world);
    nothing_claimed(&mut world);
    let built = world.build();

    let error = verify(&built, phone_code()).await.unwrap_err();

    assert!(matches!(error, AppError::PhoneNotRegistered), "{error:?}");
    assert_eq!(code(&error), "phone_not_registered");
    assert!(built.new_events(&account(), 1).await.is_empty());
    assert!(built.refresh_issued_for().is_empty());
}

#[tokio::test]
async fn a_closed_app_refuses_phone_binding_and_writes_nothing() {
    let mut world = World::with_policy(RegistrationPolicy::Closed);
    world.given(&account(), vec![session(1, KEY1)]).await;
    // Closed refuses before spending a billed phone verification with WeChat.
    world.wechat.expect_phone_number().never();
    // Closed means no phone matching either: the directory is not even asked.
    world.users.expect_find_by_phone().never();
    nothing_registered(&mut world);
    nothing_claimed(&mut world);
    let built = world.build();

    let error = verify(&built, phone_code()).await.unwrap_err();

    assert!(matches!(error, AppError::RegistrationClosed), "{error:?}");
    assert_eq!(code(&error), "registration_closed");
    assert!(built.new_events(&account(), 1).await.is_empty());
}

#[tokio::test]
async fn a_disabled_user_matched_by_phone_is_refused_and_nothing_is_bound() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    wechat_verifies_phone(&mut world, APP);
    world
        .users
        .expect_find_by_phone()
        .times(1)
        .returning(|_, _| Ok(Some(disabled_user(9))));
    nothing_registered(&mut world);
    nothing_claimed(&mut world);
    let built = world.build();

    let error = verify(&built, phone_code()).await.unwrap_err();

    assert!(matches!(error, AppError::UserDisabled), "{error:?}");
    assert!(built.new_events(&account(), 1).await.is_empty());
}

#[tokio::test]
async fn a_concurrent_registration_of_the_same_phone_binds_to_the_winner() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    wechat_verifies_phone(&mut world, APP);
    // Nobody has the number at first; after the lost registration, the winner does.
    let lookups = Arc::new(AtomicUsize::new(0));
    let seen = lookups.clone();
    world
        .users
        .expect_find_by_phone()
        .times(2)
        .returning(move |_, _| Ok((seen.fetch_add(1, Ordering::SeqCst) > 0).then(|| user(22))));
    world
        .users
        .expect_register()
        .times(1)
        .returning(|_| Ok(Registration::PhoneTaken));
    world.users.expect_discard_unbound().never();
    registry_claims(&mut world, 22, Ok(Claim::New));
    let built = world.build();

    let outcome = verify(&built, phone_code()).await.unwrap();

    assert_eq!(outcome.user_id, user_id(22));
    assert!(
        !outcome.registered,
        "the winner registered it, not this request"
    );
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
    match &built.new_events(&account(), 1).await[..] {
        [SocialAccountEvent::PhoneVerified(_), SocialAccountEvent::UserBound(b)] => {
            assert_eq!((b.user_id, b.via), (user_id(22), BindMethod::PhoneMatch));
        }
        other => panic!("expected PhoneVerified then UserBound, got {other:?}"),
    }
}

#[tokio::test]
async fn an_identity_taken_in_the_registry_refuses_clearly_and_discards_the_new_user() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    wechat_verifies_phone(&mut world, APP);
    phone_matches(&mut world, None);
    world
        .users
        .expect_register()
        .times(1)
        .returning(|_| Ok(Registration::Created(user(21))));
    world
        .users
        .expect_discard_unbound()
        .withf(|u| u.get() == 21)
        .times(1)
        .returning(|_| Ok(()));
    registry_claims(&mut world, 21, Err(ClaimError::IdentityTaken(user_id(5))));
    world.registry.expect_release().never();
    let built = world.build();

    let error = verify(&built, phone_code()).await.unwrap_err();

    assert!(
        matches!(
            error,
            AppError::Account(AccountError::AlreadyBoundToOtherUser)
        ),
        "{error:?}"
    );
    assert_eq!(code(&error), "already_bound_to_other_user");
    assert!(built.new_events(&account(), 1).await.is_empty());
    assert!(built.refresh_issued_for().is_empty());
}

#[tokio::test]
async fn a_user_already_holding_an_identity_in_this_app_is_refused_clearly() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    wechat_verifies_phone(&mut world, APP);
    phone_matches(&mut world, Some(9));
    // The matched user was not registered by this request: it must not be discarded.
    nothing_registered(&mut world);
    registry_claims(&mut world, 9, Err(ClaimError::UserHasIdentity));
    world.registry.expect_release().never();
    let built = world.build();

    let error = verify(&built, phone_code()).await.unwrap_err();

    assert!(
        matches!(error, AppError::UserAlreadyBoundInApp),
        "{error:?}"
    );
    assert_eq!(code(&error), "user_already_bound_in_app");
    assert!(built.new_events(&account(), 1).await.is_empty());
}

#[tokio::test]
async fn a_failed_commit_releases_the_claim_and_discards_the_registered_user() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    wechat_verifies_phone(&mut world, APP);
    phone_matches(&mut world, None);
    world
        .users
        .expect_register()
        .times(1)
        .returning(|_| Ok(Registration::Created(user(21))));
    world
        .users
        .expect_discard_unbound()
        .withf(|u| u.get() == 21)
        .times(1)
        .returning(|_| Ok(()));
    registry_claims(&mut world, 21, Ok(Claim::New));
    world
        .registry
        .expect_release()
        .withf(|app, open, u| app.as_str() == APP && open.as_str() == OPENID && u.get() == 21)
        .times(1)
        .returning(|_, _, _| Ok(()));
    let store = ScriptedStore::new(world.store.clone(), vec![Script::Fail]);
    let built = world.build_over(store);

    let error = built
        .auth
        .verify_phone(&ctx(), APP, &ticket(APP, 1), phone_code())
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::Unavailable(_)), "{error:?}");
    assert_eq!(code(&error), "service_unavailable");
    assert!(built.new_events(&account(), 1).await.is_empty());
    assert!(built.refresh_issued_for().is_empty());
}

#[tokio::test]
async fn an_already_bound_identity_verifying_a_phone_keeps_its_binding() {
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    wechat_verifies_phone(&mut world, APP);
    world
        .users
        .expect_get()
        .withf(|u| u.get() == 7)
        .times(1)
        .returning(|_| Ok(Some(user(7))));
    // The phone does not re-decide who this identity belongs to.
    world.users.expect_find_by_phone().never();
    nothing_registered(&mut world);
    nothing_claimed(&mut world);
    let built = world.build();

    let outcome = verify(&built, phone_code()).await.unwrap();

    assert_eq!((outcome.user_id, outcome.registered), (user_id(7), false));
    assert_eq!(outcome.tokens.user_id, user_id(7));
    match &built.new_events(&account(), 2).await[..] {
        [SocialAccountEvent::PhoneVerified(p)] => assert_eq!(p.via, PhoneSource::PhoneCode),
        other => panic!("expected only PhoneVerified, got {other:?}"),
    }
}
