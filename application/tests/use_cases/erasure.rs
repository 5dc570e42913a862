//! Erasure: the binding ends (reason: erasure), the erasure is recorded, the data key
//! is destroyed and the registry lets the identity go.

use miniauth_application::ports::SessionScope;
use miniauth_application::{Actor, AppError, RequestContext};
use miniauth_domain::{BindMethod, PersonalField, SocialAccountEvent, UnbindReason, UserBound};

use crate::harness::*;

/// The context of an administrator's request.
fn admin() -> RequestContext {
    RequestContext::system(Actor::Admin)
}

#[tokio::test]
async fn erasing_a_bound_account_unbinds_records_the_erasure_and_shreds_the_data() {
    let mut world = World::new();
    world
        .given(
            &account(),
            vec![
                session(1, KEY1),
                profile("Ann", "https://a.example/ann.png"),
                phone_verified(),
                bound(7),
            ],
        )
        .await;
    world
        .registry
        .expect_release()
        .withf(|app, open, u| app.as_str() == APP && open.as_str() == OPENID && u.get() == 7)
        .times(1)
        .returning(|_, _, _| Ok(()));
    let built = world.build();

    built
        .auth
        .erase(&admin(), &appid(APP), &openid(OPENID))
        .await
        .unwrap();

    match &built.new_events(&account(), 4).await[..] {
        [SocialAccountEvent::Unbound(u), SocialAccountEvent::PersonalDataErased(_)] => {
            assert_eq!((u.user_id, u.reason), (user_id(7), UnbindReason::Erasure));
        }
        other => panic!("expected Unbound then PersonalDataErased, got {other:?}"),
    }
    assert_eq!(built.vault.forgotten(), vec![account()]);
    assert_eq!(
        built.envelopes(&account()).await[4].metadata["actor"],
        "admin"
    );
    // The sessions the account's user logged in to through this app end too.
    assert_eq!(
        built.refresh.revoked(),
        vec![(user_id(7), SessionScope::App(appid(APP)))]
    );
}

#[tokio::test]
async fn erasing_an_unbound_account_records_the_erasure_without_touching_the_registry() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world.registry.expect_release().never();
    let built = world.build();

    built
        .auth
        .erase(&admin(), &appid(APP), &openid(OPENID))
        .await
        .unwrap();

    match &built.new_events(&account(), 1).await[..] {
        [SocialAccountEvent::PersonalDataErased(_)] => {}
        other => panic!("expected only PersonalDataErased, got {other:?}"),
    }
    assert_eq!(built.vault.forgotten(), vec![account()]);
}

#[tokio::test]
async fn erasing_an_identity_that_never_logged_in_is_refused_and_forgets_nothing() {
    let mut world = World::new();
    world.registry.expect_release().never();
    let built = world.build();

    let error = built
        .auth
        .erase(&admin(), &appid(APP), &openid(OPENID))
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::AccountNotFound), "{error:?}");
    assert!(built.vault.forgotten().is_empty());
    assert!(built.events(&account()).await.is_empty());
}

#[tokio::test]
async fn erasing_the_identity_that_registered_its_user_erases_that_users_copies() {
    let mut world = World::new();
    world
        .given(
            &account(),
            vec![
                session(1, KEY1),
                phone_verified(),
                SocialAccountEvent::UserBound(UserBound {
                    user_id: user_id(7),
                    via: BindMethod::AutoRegistration,
                    linked_from: None,
                    imported_from: None,
                    occurred_at: now(),
                }),
            ],
        )
        .await;
    world
        .registry
        .expect_release()
        .times(1)
        .returning(|_, _, _| Ok(()));
    // After the registry let it go: the directory decides whether user 7 lives on.
    world
        .users
        .expect_erase_registered()
        .withf(|u, _| u.get() == 7)
        .times(1)
        .returning(|_, _| Ok(true));
    let built = world.build();

    built
        .auth
        .erase(&admin(), &appid(APP), &openid(OPENID))
        .await
        .unwrap();

    assert_eq!(built.vault.forgotten(), vec![account()]);
}

#[tokio::test]
async fn erasing_an_identity_bound_to_an_existing_user_leaves_that_user_alone() {
    let mut world = World::new();
    world
        .given(
            &account(),
            vec![session(1, KEY1), phone_verified(), bound(7)],
        )
        .await;
    world
        .registry
        .expect_release()
        .times(1)
        .returning(|_, _, _| Ok(()));
    world.users.expect_erase_registered().never();
    let built = world.build();

    built
        .auth
        .erase(&admin(), &appid(APP), &openid(OPENID))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_commit_seals_the_client_ip_with_the_accounts_data_key() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world.registry.expect_release().never();
    let built = world.build();

    built
        .auth
        .erase(&crate::harness::ctx(), &appid(APP), &openid(OPENID))
        .await
        .unwrap();

    assert_eq!(
        built.vault.sealed_fields(),
        vec![(PersonalField::ClientIp, "203.0.113.9".to_owned())]
    );
    let envelopes = built.envelopes(&account()).await;
    let ip = &envelopes.last().unwrap().metadata["client_ip"];
    assert_eq!(ip, sealed_datum("203.0.113.9").as_sealed_text());
}
