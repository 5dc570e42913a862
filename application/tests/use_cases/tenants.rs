//! Tenants never mix: a user is bound only to apps of their own tenant, an app issues
//! tokens only for users of its tenant, and a token of one tenant acts in no app of
//! another.

use miniauth_application::ports::{Binding, Password, TokenSubject, WeChatSession};
use miniauth_application::AppError;
use miniauth_domain::TenantId;

use miniauth_application::ports::AccountRepository;

use crate::harness::*;

fn t2() -> TenantId {
    TenantId::parse("t2").unwrap()
}

/// User `id` of tenant `t2`.
fn t2_user(id: i64) -> miniauth_application::ports::UserRecord {
    miniauth_application::ports::UserRecord {
        tenant: t2(),
        ..user(id)
    }
}

/// The subject of a password login of user `id` in tenant `t2`.
fn t2_subject(id: i64) -> TokenSubject {
    TokenSubject {
        tenant: t2(),
        appid: None,
        ..logged_in(id)
    }
}

#[tokio::test]
async fn a_user_of_another_tenant_cannot_bind_as_the_current_user() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world.users.expect_get().never();
    world.registry.expect_claim().never();
    let built = world.build();

    let error = built
        .auth
        .bind_current_user(&ctx(), APP, &ticket(APP, 1), &t2_subject(7))
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::TenantMismatch), "{error:?}");
    assert_eq!(code(&error), "tenant_mismatch");
    assert!(built.new_events(&account(), 1).await.is_empty());
}

#[tokio::test]
async fn a_token_claiming_the_apps_tenant_for_a_user_of_another_is_refused() {
    // Defence in depth: the token says the app's tenant, the directory says otherwise.
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world
        .users
        .expect_get()
        .times(1)
        .returning(|_| Ok(Some(t2_user(7))));
    world.registry.expect_claim().never();
    let built = world.build();

    let error = built
        .auth
        .bind_current_user(&ctx(), APP, &ticket(APP, 1), &logged_in(7))
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::TenantMismatch), "{error:?}");
    assert!(built.new_events(&account(), 1).await.is_empty());
}

#[tokio::test]
async fn a_token_of_another_tenant_cannot_unbind_and_the_registry_is_not_asked() {
    let mut world = World::new();
    world.registry.expect_identity_of().never();
    world.registry.expect_release().never();
    let built = world.build();

    let error = built
        .auth
        .unbind(&ctx(), APP, &t2_subject(7))
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::TenantMismatch), "{error:?}");
    assert!(built.refresh.revoked().is_empty());
}

#[tokio::test]
async fn an_app_logs_in_no_user_of_another_tenant_bound_before_the_check() {
    // A binding across tenants made before tenants were checked: the login writes
    // nothing and issues no token.
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    world.wechat.expect_code_to_session().returning(|_, _| {
        Ok(WeChatSession {
            openid: openid(OPENID),
            unionid: None,
            session_key: key(KEY2),
        })
    });
    world.users.expect_get().returning(|_| Ok(Some(t2_user(7))));
    let built = world.build();

    let error = built.auth.login(&ctx(), APP, "code-2").await.unwrap_err();
    assert!(matches!(error, AppError::TenantMismatch), "{error:?}");
    assert!(built.new_events(&account(), 2).await.is_empty());
    let error = built.auth.grant_ticket(&ticket(APP, 1)).await.unwrap_err();
    assert!(matches!(error, AppError::TenantMismatch), "{error:?}");
    assert!(built.refresh_issued_for().is_empty());
}

#[tokio::test]
async fn tokens_issued_through_an_app_carry_its_tenant_and_name_their_session() {
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    world.users.expect_get().returning(|_| Ok(Some(user(7))));
    let built = world.build();

    built.auth.grant_ticket(&ticket(APP, 1)).await.unwrap();
    // A ticket buys tokens once: the second login brings a ticket of its own.
    let context = built.store.load(&account()).await.unwrap();
    built
        .store
        .commit(context, vec![session(2, KEY2)], Default::default())
        .await
        .unwrap();
    built.auth.grant_ticket(&ticket(APP, 2)).await.unwrap();

    let issued = built.refresh.issued.lock().unwrap().clone();
    assert_eq!(issued.len(), 2);
    for subject in &issued {
        assert_eq!(subject.tenant, tenant());
        assert_eq!(subject.appid, Some(appid(APP)));
    }
    assert_ne!(
        issued[0].session, issued[1].session,
        "one session per login"
    );
}

#[tokio::test]
async fn the_password_grant_refuses_a_tenant_nobody_knows_before_any_password_check() {
    let mut world = World::new();
    world
        .users
        .expect_tenant_exists()
        .withf(|t| t.as_str() == "nowhere")
        .times(1)
        .returning(|_| Ok(false));
    world.users.expect_check_password().never();
    world.limiter.expect_check().never();
    world.limiter.expect_record_failure().never();
    let built = world.build();

    let error = built
        .auth
        .grant_password(
            &ctx(),
            &TenantId::parse("nowhere").unwrap(),
            "admin",
            &Password::new("whatever-123"),
        )
        .await
        .unwrap_err();

    assert!(matches!(error, AppError::UnknownTenant), "{error:?}");
    assert_eq!(code(&error), "unknown_tenant");
}

#[tokio::test]
async fn the_password_grant_serves_a_tenant_the_directory_knows_without_any_app() {
    let mut world = World::new();
    world
        .users
        .expect_tenant_exists()
        .times(1)
        .returning(|_| Ok(true));
    world.limiter.expect_check().returning(|_, _| Ok(()));
    world
        .users
        .expect_check_password()
        .withf(|t, a, _| t.as_str() == "t2" && a == "bob")
        .times(1)
        .returning(|_, _, _| Ok(Some(t2_user(9))));
    world.limiter.expect_reset().returning(|_| Ok(()));
    let built = world.build();

    let tokens = built
        .auth
        .grant_password(&ctx(), &t2(), "bob", &Password::new("right-password"))
        .await
        .unwrap();

    assert_eq!(tokens.user_id, user_id(9));
    let issued = built.refresh.issued.lock().unwrap().clone();
    assert_eq!(
        (issued[0].tenant.clone(), issued[0].appid.clone()),
        (t2(), None)
    );
}

#[tokio::test]
async fn me_lists_no_binding_in_an_app_of_another_tenant() {
    let mut world = World::new();
    world.apps[1].tenant = t2();
    world.users.expect_get().returning(|_| Ok(Some(user(7))));
    world.registry.expect_bindings_of().returning(|_| {
        Ok(vec![
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
        ])
    });
    let built = world.build();

    let me = built.auth.me(&logged_in(7)).await.unwrap();
    assert_eq!(
        me.bindings
            .iter()
            .map(|b| b.appid.as_str())
            .collect::<Vec<_>>(),
        [APP]
    );
    // A token of another tenant than its user's is refused outright.
    let error = built.auth.me(&t2_subject(7)).await.unwrap_err();
    assert!(matches!(error, AppError::TenantMismatch), "{error:?}");
}
