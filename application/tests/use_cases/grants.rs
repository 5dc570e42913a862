//! Steps 12–13: the ticket, password and refresh-token grants, logout, `me`, and the
//! administration of password users.

use std::sync::Arc;

use miniauth_application::ports::{
    AccessToken, AccountCreation, Binding, MockRefreshTokenStore, MockTokenIssuer, Password,
    PortError, RefreshError, RefreshToken, SessionScope, TokenSubject,
};
use miniauth_application::AppError;
use miniauth_domain::{AccountError, TenantId};

use crate::harness::*;

fn subject(id: i64, tenant_name: &str) -> TokenSubject {
    TokenSubject {
        user_id: user_id(id),
        tenant: TenantId::parse(tenant_name).unwrap(),
        appid: Some(appid(APP)),
        session: session_id(1),
    }
}

// ------------------------------------------------------------ ticket grant

#[tokio::test]
async fn a_ticket_of_a_bound_identity_grants_tokens() {
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    world
        .users
        .expect_get()
        .withf(|u| u.get() == 7)
        .times(1)
        .returning(|_| Ok(Some(user(7))));
    let built = world.build();

    let tokens = built.auth.grant_ticket(&ticket(APP, 1)).await.unwrap();

    assert_eq!(tokens.user_id, user_id(7));
    assert_eq!(tokens.access.token, format!("access|7|{APP}"));
    assert_eq!(tokens.refresh.token, "refresh|7");
    assert_eq!(built.refresh_issued_for(), vec![user_id(7)]);
    assert!(
        built.new_events(&account(), 2).await.is_empty(),
        "grants write no event"
    );
}

#[tokio::test]
async fn a_ticket_of_an_unbound_identity_grants_nothing() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world.users.expect_get().never();
    let built = world.build();

    let error = built.auth.grant_ticket(&ticket(APP, 1)).await.unwrap_err();

    assert!(matches!(error, AppError::NotBound), "{error:?}");
    assert!(built.refresh_issued_for().is_empty());
}

#[tokio::test]
async fn a_superseded_ticket_grants_nothing_even_when_bound() {
    let mut world = World::new();
    world
        .given(
            &account(),
            vec![session(1, KEY1), bound(7), session(2, KEY2)],
        )
        .await;
    world.users.expect_get().never();
    let built = world.build();

    let error = built.auth.grant_ticket(&ticket(APP, 1)).await.unwrap_err();

    assert!(
        matches!(
            error,
            AppError::Account(AccountError::TicketSessionSuperseded)
        ),
        "{error:?}"
    );
    assert!(built.refresh_issued_for().is_empty());
}

#[tokio::test]
async fn a_ticket_of_a_disabled_user_grants_nothing() {
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    world
        .users
        .expect_get()
        .returning(|_| Ok(Some(disabled_user(7))));
    let built = world.build();

    let error = built.auth.grant_ticket(&ticket(APP, 1)).await.unwrap_err();

    assert!(matches!(error, AppError::UserDisabled), "{error:?}");
    assert!(built.refresh_issued_for().is_empty());
}

#[tokio::test]
async fn an_expired_ticket_or_one_of_an_app_no_longer_configured_grants_nothing() {
    let world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    let built = world.build();
    let expired = format!("ticket|{APP}|{OPENID}|1|{}", now().timestamp() - 1);
    let elsewhere = ticket("wx5555555555555555", 1);

    let error = built.auth.grant_ticket(&expired).await.unwrap_err();
    assert_eq!(code(&error), "ticket_expired");
    let error = built.auth.grant_ticket(&elsewhere).await.unwrap_err();
    assert!(matches!(error, AppError::UnknownApp), "{error:?}");
    let error = built.auth.grant_ticket("").await.unwrap_err();
    assert_eq!(code(&error), "ticket_missing");
    assert!(built.refresh_issued_for().is_empty());
}

// ------------------------------------------------------------ refresh grant

fn world_with_refresh(refresh: MockRefreshTokenStore, tokens: MockTokenIssuer) -> World {
    let mut world = World::new();
    world.refresh = Arc::new(refresh);
    world.tokens = Arc::new(tokens);
    world
}

#[tokio::test]
async fn a_refresh_token_rotates_and_the_access_token_names_the_same_session() {
    let mut refresh = MockRefreshTokenStore::new();
    refresh
        .expect_rotate()
        .withf(|token, at| token == "r-old" && *at == now())
        .times(1)
        .returning(|_, _| {
            Ok((
                subject(7, TENANT),
                RefreshToken {
                    token: "r-new".into(),
                    expires_in: 86_400,
                },
            ))
        });
    refresh.expect_issue().never();
    let mut tokens = MockTokenIssuer::new();
    tokens
        .expect_issue()
        .withf(|s, _| *s == subject(7, TENANT))
        .times(1)
        .returning(|_, _| {
            Ok(AccessToken {
                token: "a-new".into(),
                expires_in: 900,
            })
        });
    let mut world = world_with_refresh(refresh, tokens);
    world
        .users
        .expect_get()
        .withf(|u| u.get() == 7)
        .times(1)
        .returning(|_| Ok(Some(user(7))));
    let built = world.build();

    let granted = built.auth.grant_refresh(" r-old ").await.unwrap();

    assert_eq!(granted.user_id, user_id(7));
    assert_eq!(granted.access.token, "a-new");
    assert_eq!(granted.refresh.token, "r-new");
}

#[tokio::test]
async fn a_session_of_another_tenant_than_the_users_refreshes_nothing() {
    // Sessions carry their app's tenant; a user is never in another one. A session
    // that says otherwise (data from before tenants were checked) issues nothing.
    let mut refresh = MockRefreshTokenStore::new();
    refresh.expect_rotate().times(1).returning(|_, _| {
        Ok((
            subject(7, "other-tenant"),
            RefreshToken {
                token: "r-new".into(),
                expires_in: 86_400,
            },
        ))
    });
    let mut tokens = MockTokenIssuer::new();
    tokens.expect_issue().never();
    let mut world = world_with_refresh(refresh, tokens);
    world
        .users
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(user(7))));
    let built = world.build();

    let error = built.auth.grant_refresh("r-old").await.unwrap_err();

    assert!(matches!(error, AppError::TenantMismatch), "{error:?}");
    assert_eq!(code(&error), "tenant_mismatch");
}

#[tokio::test]
async fn a_refused_refresh_token_issues_nothing() {
    for (refusal, expected) in [
        (RefreshError::Unknown, "refresh_token_unknown"),
        (RefreshError::Expired, "refresh_token_expired"),
        (RefreshError::Reused, "refresh_token_reused"),
        (
            RefreshError::Port(PortError::Unavailable("the token store".into())),
            "service_unavailable",
        ),
    ] {
        let mut refresh = MockRefreshTokenStore::new();
        let answer = refusal.clone();
        refresh
            .expect_rotate()
            .times(1)
            .returning(move |_, _| Err(answer.clone()));
        let mut tokens = MockTokenIssuer::new();
        tokens.expect_issue().never();
        let mut world = world_with_refresh(refresh, tokens);
        world.users.expect_get().never();
        let built = world.build();

        let error = built.auth.grant_refresh("r-old").await.unwrap_err();

        assert_eq!(code(&error), expected, "{refusal:?}");
    }
}

#[tokio::test]
async fn a_refresh_token_of_a_disabled_user_issues_no_access_token() {
    let mut refresh = MockRefreshTokenStore::new();
    refresh.expect_rotate().times(1).returning(|_, _| {
        Ok((
            subject(7, TENANT),
            RefreshToken {
                token: "r-new".into(),
                expires_in: 86_400,
            },
        ))
    });
    let mut tokens = MockTokenIssuer::new();
    tokens.expect_issue().never();
    let mut world = world_with_refresh(refresh, tokens);
    world
        .users
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(disabled_user(7))));
    let built = world.build();

    let error = built.auth.grant_refresh("r-old").await.unwrap_err();

    assert!(matches!(error, AppError::UserDisabled), "{error:?}");
}

#[tokio::test]
async fn an_empty_refresh_token_is_refused_without_touching_the_store() {
    let mut refresh = MockRefreshTokenStore::new();
    refresh.expect_rotate().never();
    let built = world_with_refresh(refresh, MockTokenIssuer::new()).build();

    let error = built.auth.grant_refresh("  ").await.unwrap_err();

    match error {
        AppError::Invalid(invalid) => assert_eq!(invalid.field, "refresh_token"),
        other => panic!("got {other:?}"),
    }
}

// ------------------------------------------------------------ logout, me, password grant

#[tokio::test]
async fn logout_revokes_the_callers_own_refresh_token() {
    let mut refresh = MockRefreshTokenStore::new();
    refresh
        .expect_revoke()
        .withf(|token, u, at| token == "r-1" && u.get() == 7 && *at == now())
        .times(1)
        .returning(|_, _, _| Ok(()));
    let built = world_with_refresh(refresh, MockTokenIssuer::new()).build();

    built
        .auth
        .logout(&subject(7, TENANT), " r-1 ")
        .await
        .unwrap();
}

#[tokio::test]
async fn logout_with_an_unknown_token_is_refused() {
    let mut refresh = MockRefreshTokenStore::new();
    refresh
        .expect_revoke()
        .times(1)
        .returning(|_, _, _| Err(RefreshError::Unknown));
    let built = world_with_refresh(refresh, MockTokenIssuer::new()).build();

    let error = built
        .auth
        .logout(&subject(7, TENANT), "r-someone-elses")
        .await
        .unwrap_err();
    assert_eq!(code(&error), "refresh_token_unknown");
}

#[tokio::test]
async fn logout_without_a_refresh_token_ends_the_access_tokens_own_session() {
    let mut refresh = MockRefreshTokenStore::new();
    // No refresh token is looked up: the session named by the access token ends.
    refresh.expect_revoke().never();
    refresh
        .expect_revoke_sessions()
        .withf(|u, scope, at| {
            u.get() == 7 && *scope == SessionScope::Session(session_id(1)) && *at == now()
        })
        .times(2)
        .returning(|_, _, _| Ok(1));
    let built = world_with_refresh(refresh, MockTokenIssuer::new()).build();

    for blank in ["", "  "] {
        built.auth.logout(&subject(7, TENANT), blank).await.unwrap();
    }
}

#[tokio::test]
async fn me_lists_the_bindings_of_every_app() {
    let mut world = World::new();
    world
        .users
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(user(7))));
    let bindings = vec![
        Binding {
            appid: appid(APP),
            openid: openid(OPENID),
            user_id: user_id(7),
        },
        Binding {
            appid: appid(OTHER_APP),
            openid: openid("o-other"),
            user_id: user_id(7),
        },
    ];
    let listed = bindings.clone();
    world
        .registry
        .expect_bindings_of()
        .withf(|u| u.get() == 7)
        .times(1)
        .returning(move |_| Ok(listed.clone()));
    let built = world.build();

    let me = built.auth.me(&subject(7, TENANT)).await.unwrap();

    assert_eq!(me.user, user(7));
    assert_eq!(me.bindings, bindings);
}

#[tokio::test]
async fn the_password_grant_logs_in_without_any_app() {
    let mut world = World::new();
    world
        .limiter
        .expect_check()
        .times(3)
        .returning(|_, _| Ok(()));
    world
        .users
        .expect_check_password()
        .times(1)
        .returning(|_, _, _| Ok(Some(user(9))));
    world.limiter.expect_reset().times(1).returning(|_| Ok(()));
    let built = world.build();

    let tokens = built
        .auth
        .grant_password(&ctx(), &tenant(), "user9", &Password::new("right password"))
        .await
        .unwrap();

    assert_eq!(tokens.access.token, "access|9|-");
}

// ------------------------------------------------------------ administration

#[tokio::test]
async fn add_user_creates_a_password_user_with_trimmed_fields() {
    let mut world = World::new();
    world
        .users
        .expect_create_account()
        .withf(|new| {
            new.tenant == tenant()
                && new.account == "alice"
                && new.password.expose() == "correct horse"
                && new.mobile == Some(phone())
                && new.nickname.as_deref() == Some("Alice")
        })
        .times(1)
        .returning(|_| Ok(AccountCreation::Created(user(30))));
    let built = world.build();

    let created = built
        .auth
        .add_user(
            &tenant(),
            " alice ",
            &Password::new("correct horse"),
            Some(&phone()),
            Some(" Alice "),
        )
        .await
        .unwrap();

    assert_eq!(created.id, user_id(30));
}

#[tokio::test]
async fn add_user_reports_taken_account_names_and_phones() {
    for (answer, expected) in [
        (AccountCreation::AccountTaken, "account_taken"),
        (AccountCreation::PhoneTaken, "phone_taken"),
    ] {
        let mut world = World::new();
        world
            .users
            .expect_create_account()
            .times(1)
            .returning(move |_| Ok(answer.clone()));
        let built = world.build();

        let error = built
            .auth
            .add_user(
                &tenant(),
                "alice",
                &Password::new("correct horse"),
                None,
                None,
            )
            .await
            .unwrap_err();

        assert_eq!(code(&error), expected);
    }
}

#[tokio::test]
async fn add_user_refuses_bad_fields_without_touching_the_directory() {
    let mut world = World::new();
    world.users.expect_create_account().never();
    let built = world.build();
    let long = "x".repeat(65);
    let long_password = "p".repeat(257);

    for (account_name, password, nickname, field) in [
        ("", "correct horse", None, "account"),
        ("al ice", "correct horse", None, "account"),
        (long.as_str(), "correct horse", None, "account"),
        ("alice", "short", None, "password"),
        ("alice", long_password.as_str(), None, "password"),
        ("alice", "correct horse", Some(long.as_str()), "nickname"),
    ] {
        let error = built
            .auth
            .add_user(
                &tenant(),
                account_name,
                &Password::new(password),
                None,
                nickname,
            )
            .await
            .unwrap_err();
        match error {
            AppError::Invalid(invalid) => assert_eq!(invalid.field, field, "{account_name:?}"),
            other => panic!("{account_name:?}: got {other:?}"),
        }
    }
}
