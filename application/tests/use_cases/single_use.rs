//! The defences of issue 17 that live in the use cases: a session key has a budget of
//! rejected legacy payloads, then WeChat retires it; a ticket buys tokens once.

use miniauth_application::ports::{UsageKey, WeChatError};
use miniauth_application::{AppError, PhoneInput, RegistrationPolicy};
use miniauth_domain::SocialAccountEvent;

use crate::harness::*;

/// A phone payload the attacker made up: it opens under no key.
fn forged() -> PhoneInput {
    let (encrypted_data, iv) = phone_payload(KEY3, APP);
    PhoneInput::Encrypted { encrypted_data, iv }
}

fn genuine(key_text: &str) -> PhoneInput {
    let (encrypted_data, iv) = phone_payload(key_text, APP);
    PhoneInput::Encrypted { encrypted_data, iv }
}

fn payload_tries(key: &UsageKey) -> bool {
    matches!(key, UsageKey::PayloadTries(_))
}

async fn send(built: &Built, seq: u64, input: PhoneInput) -> AppError {
    built
        .auth
        .verify_phone(&ctx(), APP, &ticket(APP, seq), input)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_session_key_rejects_three_payloads_then_wechat_retires_it() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world
        .wechat
        .expect_reset_session_key()
        .withf(|app, open, old| app.as_str() == APP && open.as_str() == OPENID && *old == key(KEY1))
        .times(1)
        .returning(|_, _, _| Ok(key(KEY2)));
    world.users.expect_find_by_phone().never();
    let built = world.build();

    for attempt in 1..=3 {
        let error = send(&built, 1, forged()).await;
        assert!(
            matches!(error, AppError::PayloadRejected),
            "{attempt}: {error:?}"
        );
    }
    // The third rejection spent the key: WeChat issued KEY2, recorded as session 2.
    let events = built.new_events(&account(), 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(&events[0], SocialAccountEvent::SessionObtained(s) if s.session_seq == 2));
    assert_eq!(built.counters.counts(payload_tries), vec![3]);

    // Even a genuine payload under the spent key is refused now: a fourth guess
    // would be one more answer of the oracle.
    let error = send(&built, 2, genuine(KEY1)).await;
    assert!(matches!(error, AppError::PayloadRejected), "{error:?}");
    assert_eq!(code(&error), "payload_rejected");
}

#[tokio::test]
async fn a_spent_key_refuses_even_a_genuine_payload_when_wechat_would_not_reset_it() {
    let mut world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    world
        .wechat
        .expect_reset_session_key()
        .times(1)
        .returning(|_, _, _| {
            Err(WeChatError::Unknown {
                code: 87009,
                message: "invalid signature".into(),
            })
        });
    world.users.expect_find_by_phone().never();
    let built = world.build();

    for _ in 0..3 {
        send(&built, 1, forged()).await;
    }
    let error = send(&built, 1, genuine(KEY1)).await;

    assert!(matches!(error, AppError::SessionKeySpent), "{error:?}");
    assert_eq!(code(&error), "session_key_spent");
    assert!(
        built.new_events(&account(), 1).await.is_empty(),
        "a failed reset records no session"
    );
}

#[tokio::test]
async fn a_genuine_payload_gives_its_try_back() {
    let mut world = World::new();
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    world.users.expect_get().returning(|_| Ok(Some(user(7))));
    let built = world.build();

    send(&built, 1, forged()).await;
    built
        .auth
        .verify_phone(&ctx(), APP, &ticket(APP, 1), genuine(KEY1))
        .await
        .unwrap();

    assert_eq!(
        built.counters.counts(payload_tries),
        vec![1],
        "only the rejection stays"
    );
}

#[tokio::test]
async fn an_app_without_legacy_payloads_decrypts_nothing() {
    let mut world = World::new();
    world.apps[0].legacy_payloads = false;
    world.given(&account(), vec![session(1, KEY1)]).await;
    world.users.expect_find_by_phone().never();
    let built = world.build();

    let error = send(&built, 1, genuine(KEY1)).await;

    assert!(
        matches!(error, AppError::LegacyPayloadsDisabled),
        "{error:?}"
    );
    assert!(
        built.vault.secrets_unsealed().is_empty(),
        "no key was unsealed"
    );
    assert!(built.counters.counts(payload_tries).is_empty());
}

#[tokio::test]
async fn a_ticket_buys_tokens_once() {
    let mut world = World::with_policy(RegistrationPolicy::Auto);
    world
        .given(&account(), vec![session(1, KEY1), bound(7)])
        .await;
    world.users.expect_get().returning(|_| Ok(Some(user(7))));
    let built = world.build();
    let ticket = ticket(APP, 1);

    built.auth.grant_ticket(&ticket).await.unwrap();
    let again = built.auth.grant_ticket(&ticket).await.unwrap_err();

    assert!(matches!(again, AppError::TicketAlreadyUsed), "{again:?}");
    assert_eq!(
        built.refresh_issued_for(),
        vec![user_id(7)],
        "one family, not two"
    );
}

#[tokio::test]
async fn a_refused_ticket_exchange_spends_nothing() {
    let world = World::new();
    world.given(&account(), vec![session(1, KEY1)]).await;
    let built = world.build();

    let error = built.auth.grant_ticket(&ticket(APP, 1)).await.unwrap_err();

    assert!(matches!(error, AppError::NotBound), "{error:?}");
    assert!(built.counters.is_empty());
}
