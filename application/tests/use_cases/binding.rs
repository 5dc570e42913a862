//! Step 11 and 13: binding with account + password or as the logged-in user, and
//! unbinding this app's binding only.

use miniauth_application::ports::{
    Claim, ClaimError, ClientNet, Password, SessionScope, ThrottleError, ThrottleKey,
};
use miniauth_application::AppError;
use miniauth_domain::{AccountError, BindMethod, SocialAccountEvent, UnbindReason};

use crate::harness::*;

fn client() -> ClientNet {
    ClientNet::of("203.0.113.9".parse().unwrap())
}

/// user9 from the context's client: the tight limit.
fn pair_key() -> ThrottleKey {
    ThrottleKey::AccountFromClient {
        tenant: tenant(),
        account: "user9".into(),
        client: client(),
    }
}

/// user9 from anywhere: the ceiling.
fn account_key() -> ThrottleKey {
    ThrottleKey::Account {
        tenant: tenant(),
        account: "user9".into(),
    }
}

/// The context's client, whatever the account.
fn client_key() -> ThrottleKey {
    ThrottleKey::Client(client())
}

fn all_keys() -> [ThrottleKey; 3] {
    [pair_key(), client_key(), account_key()]
}

fn limiter_allows(world: &mut World) {
    world
        .limiter
        .expect_check()
        .withf(|key, at| all_keys().contains(key) && *at == now())
        .times(3)
        .returning(|_, _| Ok(()));
}

/// Every key but `refused` is allowed; `refused` is over its limit for `secs`.
fn limiter_refuses(world: &mut World, refused: ThrottleKey, secs: u64) {
    let other = refused.clone();
    world
        .limiter
        .expect_check()
        .withf(move |key, _| *key != other)
        .returning(|_, _| Ok(()));
    world
        .limiter
        .expect_check()
        .withf(move |key, _| *key == refused)
        .times(1)
        .returning(move |_, _| {
            Err(ThrottleError::Exceeded {
                retry_after_secs: secs,
            })
        });
}

/// The directory checks "user9" with `password` once and answers `answer`.
fn password_checks(world: &mut World, password: &'static str, answer: Option<UserRecordFn>) {
    world
        .users
        .expect_check_password()
        .withf(move |t, account, given| {
            *t == tenant() && account == "user9" && given.expose() == password
        })
        .times(1)
        .returning(move |_, _, _| Ok(answer.map(|make| make(9))));
}

type UserRecordFn = fn(i64) -> miniauth_application::ports::UserRecord;

async fn bind_with(
    built: &Built,
    ticket_seq: u64,
    account_name: &str,
    password: &str,
) -> Result<miniauth_application::Tokens, AppError> {
    built
        .auth
        .bind_with_password(
            &ctx(),
            APP,
            &ticket(APP, ticket_seq),
            account_name,
            &Password::new(password),
        )
        .await
}

#[tokio::test]
async fn the_right_password_binds_and_logs_the_user_in() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    limiter_allows(&mut world);
    password_checks(&mut world, "right password", Some(user));
    // The owner's success forgives their own address only, not the ceilings.
    world
        .limiter
        .expect_reset()
        .withf(|key| *key == pair_key())
        .times(1)
        .returning(|_| Ok(()));
    world.limiter.expect_record_failure().never();
    world
        .registry
        .expect_claim()
        .withf(|app, open, u| app.as_str() == APP && open.as_str() == OPENID && u.get() == 9)
        .times(1)
        .returning(|_, _, _| Ok(Claim::New));
    let built = world.build();

    let tokens = bind_with(&built, 1, " user9 ", "right password")
        .await
        .unwrap();

    assert_eq!(tokens.user_id, user_id(9));
    assert_eq!(tokens.access.token, format!("access|9|{APP}"));
    match &built.new_events(&account(), 1).await[..] {
        [SocialAccountEvent::UserBound(b)] => {
            assert_eq!((b.user_id, b.via), (user_id(9), BindMethod::PasswordLogin))
        }
        other => panic!("expected one UserBound, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_counted_against_pair_account_and_client() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    limiter_allows(&mut world);
    password_checks(&mut world, "wrong", None);
    for key in all_keys() {
        world
            .limiter
            .expect_record_failure()
            .withf(move |k, at| *k == key && *at == now())
            .times(1)
            .returning(|_, _| Ok(()));
    }
    world.limiter.expect_reset().never();
    world.registry.expect_claim().never();
    let built = world.build();

    let error = bind_with(&built, 1, "user9", "wrong").await.unwrap_err();

    assert!(matches!(error, AppError::BadCredentials), "{error:?}");
    assert_eq!(code(&error), "invalid_credentials");
    assert!(built.new_events(&account(), 1).await.is_empty());
    assert!(built.refresh_issued_for().is_empty());
}

#[tokio::test]
async fn a_throttled_account_is_refused_without_checking_the_password() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    limiter_refuses(&mut world, account_key(), 30);
    world.users.expect_check_password().never();
    world.limiter.expect_record_failure().never();
    world.registry.expect_claim().never();
    let built = world.build();

    let error = bind_with(&built, 1, "user9", "right password")
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::TooManyAttempts(30)), "{error:?}");
    assert_eq!(code(&error), "too_many_attempts");
    assert_eq!(
        error.kind(),
        miniauth_application::ErrorKind::TooManyRequests(30)
    );
    assert!(built.new_events(&account(), 1).await.is_empty());
}

#[tokio::test]
async fn a_throttled_client_ip_is_refused_without_checking_the_password() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    limiter_refuses(&mut world, client_key(), 120);
    world.users.expect_check_password().never();
    let built = world.build();

    let error = bind_with(&built, 1, "user9", "right password")
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::TooManyAttempts(120)), "{error:?}");
}

#[tokio::test]
async fn a_disabled_user_with_the_right_password_is_refused_and_nothing_is_bound() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    limiter_allows(&mut world);
    password_checks(&mut world, "right password", Some(disabled_user));
    world.limiter.expect_reset().returning(|_| Ok(()));
    world.registry.expect_claim().never();
    let built = world.build();

    let error = bind_with(&built, 1, "user9", "right password")
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::UserDisabled), "{error:?}");
    assert!(built.new_events(&account(), 1).await.is_empty());
    assert!(built.refresh_issued_for().is_empty());
}

#[tokio::test]
async fn password_bind_with_a_stale_ticket_is_refused_before_the_password_is_tried() {
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), session(2, KEY2)])
        .await;
    world.limiter.expect_check().never();
    world.users.expect_check_password().never();
    let built = world.build();

    let error = bind_with(&built, 1, "user9", "right password")
        .await
        .unwrap_err();

    assert_eq!(code(&error), "ticket_session_superseded");
    assert!(built.new_events(&account(), 2).await.is_empty());
}

#[tokio::test]
async fn malformed_credentials_are_refused_before_the_limiter_or_directory() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world.limiter.expect_check().never();
    world.users.expect_check_password().never();
    let built = world.build();
    let long_password = "p".repeat(257);

    for (account_name, password, field) in [
        ("", "right password", "account"),
        ("   ", "right password", "account"),
        ("user9", "", "password"),
        ("user9", long_password.as_str(), "password"),
    ] {
        let error = bind_with(&built, 1, account_name, password)
            .await
            .unwrap_err();
        match error {
            AppError::Invalid(invalid) => assert_eq!(invalid.field, field),
            other => panic!("{account_name:?}: got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_logged_in_user_binds_the_tickets_identity() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world
        .users
        .expect_get()
        .withf(|u| u.get() == 7)
        .times(1)
        .returning(|_| Ok(Some(user(7))));
    world
        .registry
        .expect_claim()
        .withf(|app, open, u| app.as_str() == APP && open.as_str() == OPENID && u.get() == 7)
        .times(1)
        .returning(|_, _, _| Ok(Claim::New));
    let built = world.build();

    let bound_to = built
        .auth
        .bind_current_user(&ctx(), APP, &ticket(APP, 1), &logged_in(7))
        .await
        .unwrap();

    assert_eq!(bound_to, user_id(7));
    match &built.new_events(&account(), 1).await[..] {
        [SocialAccountEvent::UserBound(b)] => {
            assert_eq!((b.user_id, b.via), (user_id(7), BindMethod::CurrentUser))
        }
        other => panic!("expected one UserBound, got {other:?}"),
    }
}

#[tokio::test]
async fn a_disabled_logged_in_user_cannot_bind() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world
        .users
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(disabled_user(7))));
    world.registry.expect_claim().never();
    let built = world.build();

    let error = built
        .auth
        .bind_current_user(&ctx(), APP, &ticket(APP, 1), &logged_in(7))
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::UserDisabled), "{error:?}");
    assert!(built.new_events(&account(), 1).await.is_empty());
}

#[tokio::test]
async fn binding_an_identity_the_registry_holds_for_another_user_is_refused() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world.users.expect_get().returning(|_| Ok(Some(user(7))));
    world
        .registry
        .expect_claim()
        .times(1)
        .returning(|_, _, _| Err(ClaimError::IdentityTaken(user_id(8))));
    world.registry.expect_release().never();
    let built = world.build();

    let error = built
        .auth
        .bind_current_user(&ctx(), APP, &ticket(APP, 1), &logged_in(7))
        .await
        .unwrap_err();

    assert_eq!(code(&error), "already_bound_to_other_user");
    // The other user's id is not leaked to the client.
    assert!(!error.to_string().contains('8'), "{error}");
    assert!(built.new_events(&account(), 1).await.is_empty());
}

#[tokio::test]
async fn binding_an_identity_the_account_holds_for_another_user_releases_the_claim() {
    // The registry lags behind the log (it is repaired by reconciliation); the
    // aggregate still refuses, and the claim this request made is given back.
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(8)])
        .await;
    world.users.expect_get().returning(|_| Ok(Some(user(7))));
    world
        .registry
        .expect_claim()
        .times(1)
        .returning(|_, _, _| Ok(Claim::New));
    world
        .registry
        .expect_release()
        .withf(|app, open, u| app.as_str() == APP && open.as_str() == OPENID && u.get() == 7)
        .times(1)
        .returning(|_, _, _| Ok(()));
    let built = world.build();

    let error = built
        .auth
        .bind_current_user(&ctx(), APP, &ticket(APP, 1), &logged_in(7))
        .await
        .unwrap_err();

    assert!(
        matches!(
            error,
            AppError::Account(AccountError::AlreadyBoundToOtherUser)
        ),
        "{error:?}"
    );
    assert!(built.new_events(&account(), 2).await.is_empty());
}

#[tokio::test]
async fn binding_the_same_user_again_changes_nothing_and_keeps_the_claim() {
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    world.users.expect_get().returning(|_| Ok(Some(user(7))));
    world
        .registry
        .expect_claim()
        .times(1)
        .returning(|_, _, _| Ok(Claim::Existing));
    world.registry.expect_release().never();
    let built = world.build();

    let bound_to = built
        .auth
        .bind_current_user(&ctx(), APP, &ticket(APP, 1), &logged_in(7))
        .await
        .unwrap();

    assert_eq!(bound_to, user_id(7));
    assert!(built.new_events(&account(), 2).await.is_empty());
}

#[tokio::test]
async fn unbind_ends_this_apps_binding_only() {
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    world
        .given(
            &account_in(OTHER_APP),
            vec![session_in(OTHER_APP, 1, KEY2), bound(7)],
        )
        .await;
    world
        .registry
        .expect_identity_of()
        .withf(|app, u| app.as_str() == APP && u.get() == 7)
        .times(1)
        .returning(|_, _| Ok(Some(openid(OPENID))));
    world
        .registry
        .expect_release()
        .withf(|app, open, u| app.as_str() == APP && open.as_str() == OPENID && u.get() == 7)
        .times(1)
        .returning(|_, _, _| Ok(()));
    world
        .registry
        .expect_release()
        .withf(|app, _, _| app.as_str() == OTHER_APP)
        .never();
    let built = world.build();

    built.auth.unbind(&ctx(), APP, &logged_in(7)).await.unwrap();

    match &built.new_events(&account(), 2).await[..] {
        [SocialAccountEvent::Unbound(u)] => {
            assert_eq!(
                (u.user_id, u.reason),
                (user_id(7), UnbindReason::UserRequest)
            )
        }
        other => panic!("expected one Unbound, got {other:?}"),
    }
    assert!(built.new_events(&account_in(OTHER_APP), 2).await.is_empty());
    // The sessions issued through this app end with the binding; no other.
    assert_eq!(
        built.refresh.revoked(),
        vec![(user_id(7), SessionScope::App(appid(APP)))]
    );
}

#[tokio::test]
async fn unbind_with_nothing_bound_in_this_app_is_refused() {
    let mut world = World::new();
    world
        .registry
        .expect_identity_of()
        .times(1)
        .returning(|_, _| Ok(None));
    world.registry.expect_release().never();
    let built = world.build();

    let error = built
        .auth
        .unbind(&ctx(), APP, &logged_in(7))
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::NotBound), "{error:?}");
    assert_eq!(code(&error), "not_bound");
    assert!(built.events(&account()).await.is_empty());
    assert!(built.refresh.revoked().is_empty());
}

#[tokio::test]
async fn unbind_repairs_a_claim_the_log_already_ended() {
    // An earlier unbind committed `Unbound` but its registry release failed.
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7), unbound(7)])
        .await;
    world
        .registry
        .expect_identity_of()
        .times(1)
        .returning(|_, _| Ok(Some(openid(OPENID))));
    world
        .registry
        .expect_release()
        .withf(|app, open, u| app.as_str() == APP && open.as_str() == OPENID && u.get() == 7)
        .times(1)
        .returning(|_, _, _| Ok(()));
    let built = world.build();

    let error = built
        .auth
        .unbind(&ctx(), APP, &logged_in(7))
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::NotBound), "{error:?}");
    assert!(built.new_events(&account(), 3).await.is_empty());
    // A retry after a failure: the sessions must not outlive the binding either.
    assert_eq!(
        built.refresh.revoked(),
        vec![(user_id(7), SessionScope::App(appid(APP)))]
    );
}

#[tokio::test]
async fn unbind_in_an_unknown_app_is_refused_without_asking_the_registry() {
    let mut world = World::new();
    world.registry.expect_identity_of().never();
    let built = world.build();

    let error = built
        .auth
        .unbind(&ctx(), "wx9999999999999999", &logged_in(7))
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::UnknownApp), "{error:?}");
}
