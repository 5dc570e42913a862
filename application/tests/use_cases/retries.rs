//! Optimistic concurrency: when another instance commits to the same account first,
//! the command is decided again on the fresh state, a bounded number of times.

use miniauth_application::ports::WeChatSession;
use miniauth_application::{AppError, MAX_COMMIT_ATTEMPTS};
use miniauth_domain::SocialAccountEvent;

use crate::harness::*;

fn wechat_answers(world: &mut World, key_text: &'static str) {
    world
        .wechat
        .expect_code_to_session()
        .times(1)
        .returning(move |_, _| {
            Ok(WeChatSession {
                openid: openid(OPENID),
                unionid: None,
                session_key: key(key_text),
            })
        });
}

#[tokio::test]
async fn a_login_that_loses_a_race_is_decided_again_on_the_winners_state() {
    let mut world = World::new();
    wechat_answers(&mut world, KEY2);
    // Another instance records session 1 (KEY1) between our load and our commit.
    let store = ScriptedStore::new(
        world.store.clone(),
        vec![Script::LoseRaceTo(vec![session(1, KEY1)])],
    );
    let built = world.build_over(store.clone());

    let outcome = built.auth.login(&ctx(), APP, "code-2").await.unwrap();

    assert_eq!(store.commit_attempts(), 2);
    assert_eq!(read_ticket(&outcome.ticket.token).session_seq, 2);
    let seqs: Vec<(u64, _)> = built
        .events(&account())
        .await
        .into_iter()
        .map(|event| match event {
            SocialAccountEvent::SessionObtained(e) => (e.session_seq, e.session_key),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        seqs,
        vec![
            (1, Some(sealed_secret(KEY1))),
            (2, Some(sealed_secret(KEY2)))
        ]
    );
}

#[tokio::test]
async fn a_conflict_once_is_retried_and_commits_once() {
    let mut world = World::new();
    wechat_answers(&mut world, KEY1);
    let store = ScriptedStore::new(world.store.clone(), vec![Script::Conflict]);
    let built = world.build_over(store.clone());

    built.auth.login(&ctx(), APP, "code-1").await.unwrap();

    assert_eq!(store.commit_attempts(), 2);
    assert_eq!(built.events(&account()).await.len(), 1);
}

#[tokio::test]
async fn endless_conflicts_end_in_contention_after_bounded_attempts() {
    let mut world = World::new();
    wechat_answers(&mut world, KEY1);
    let store = ScriptedStore::always_conflicting(world.store.clone());
    let built = world.build_over(store.clone());

    let error = built.auth.login(&ctx(), APP, "code-1").await.unwrap_err();

    assert!(matches!(error, AppError::Contention), "{error:?}");
    assert_eq!(code(&error), "concurrent_update");
    assert_eq!(store.commit_attempts(), MAX_COMMIT_ATTEMPTS);
    assert!(built.events(&account()).await.is_empty());
}
