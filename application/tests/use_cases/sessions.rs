//! Login sessions: access tokens are checked against their session (`sid`), and
//! disabling a user ends all of their sessions.

use std::sync::Arc;

use miniauth_application::ports::{
    AccessTokenError, MockRefreshTokenStore, MockTokenIssuer, SessionScope, UserStatus,
};
use miniauth_application::AppError;

use crate::harness::*;

fn world_verifying(live: bool) -> World {
    let mut tokens = MockTokenIssuer::new();
    tokens
        .expect_verify()
        .withf(|token, _| token == "a-1")
        .returning(|_, _| Ok(logged_in(7)));
    let mut refresh = MockRefreshTokenStore::new();
    refresh
        .expect_session_live()
        .withf(|subject, at| *subject == logged_in(7) && *at == now())
        .times(1)
        .returning(move |_, _| Ok(live));
    let mut world = World::new();
    world.tokens = Arc::new(tokens);
    world.refresh = Arc::new(refresh);
    world
}

#[tokio::test]
async fn an_access_token_of_a_live_session_authenticates() {
    let built = world_verifying(true).build();
    assert_eq!(
        built.auth.authenticate(" a-1 ").await.unwrap(),
        logged_in(7)
    );
}

#[tokio::test]
async fn an_access_token_of_an_ended_session_is_revoked() {
    let built = world_verifying(false).build();

    let error = built.auth.authenticate("a-1").await.unwrap_err();

    assert!(
        matches!(error, AppError::AccessToken(AccessTokenError::Revoked)),
        "{error:?}"
    );
    assert_eq!(code(&error), "access_token_revoked");
}

#[tokio::test]
async fn an_invalid_access_token_costs_no_lookup() {
    let mut tokens = MockTokenIssuer::new();
    tokens
        .expect_verify()
        .returning(|_, _| Err(AccessTokenError::Invalid));
    let mut refresh = MockRefreshTokenStore::new();
    refresh.expect_session_live().never();
    let mut world = World::new();
    world.tokens = Arc::new(tokens);
    world.refresh = Arc::new(refresh);
    let built = world.build();

    let error = built.auth.authenticate("forged").await.unwrap_err();
    assert_eq!(code(&error), "access_token_invalid");
}

#[tokio::test]
async fn disabling_a_user_ends_every_session_they_hold() {
    let mut world = World::new();
    world
        .users
        .expect_set_status()
        .withf(|id, status| id.get() == 7 && *status == UserStatus::Disabled)
        .times(1)
        .returning(|_, _| Ok(Some(disabled_user(7))));
    let built = world.build();

    let user = built.auth.disable_user(user_id(7)).await.unwrap();

    assert_eq!(user.status, UserStatus::Disabled);
    assert_eq!(
        built.refresh.revoked(),
        vec![(user_id(7), SessionScope::All)]
    );
}

#[tokio::test]
async fn disabling_an_unknown_user_revokes_nothing() {
    let mut world = World::new();
    world.users.expect_set_status().returning(|_, _| Ok(None));
    let built = world.build();

    let error = built.auth.disable_user(user_id(404)).await.unwrap_err();

    assert!(matches!(error, AppError::UserNotFound), "{error:?}");
    assert!(built.refresh.revoked().is_empty());
}

#[tokio::test]
async fn enabling_a_user_brings_no_ended_session_back() {
    let mut world = World::new();
    world
        .users
        .expect_set_status()
        .withf(|_, status| *status == UserStatus::Active)
        .times(1)
        .returning(|_, _| Ok(Some(user(7))));
    let built = world.build();

    let user = built.auth.enable_user(user_id(7)).await.unwrap();

    assert_eq!(user.status, UserStatus::Active);
    assert!(built.refresh.revoked().is_empty());
}
