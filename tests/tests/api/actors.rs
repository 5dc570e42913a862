//! Every event records who acted, in the words docs/audit.md uses: `wechat` for the
//! mini program, `user:{id}` for the bearer of an access token, `admin` for the admin
//! API — what the routes write, read back from the store.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn events_record_the_actor_of_the_route_that_caused_them() {
    let h = harness().await;
    // The mini program logs in and registers by phone.
    h.register("alice", "13800138000").await;
    // A password user binds a WeChat identity, then unbinds it.
    let erin = h.add_user("erin", "password-1", None).await;
    let access = h.password_access("erin", "password-1").await;
    let ticket = h.login(APP, "erin_wx").await["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let binding = format!("/v1/apps/{APP}/binding");
    h.post_json(&binding, json!({ "ticket": ticket }), Some(&access))
        .await;
    h.delete(&binding, &access).await;
    // An administrator erases the first account.
    let erased = h
        .post_json(
            &format!("/v1/admin/apps/{APP}/accounts/alice/erase"),
            json!({}),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(erased.status.as_u16(), 204, "{}", erased.text);

    let recorded: Vec<(String, String, String)> = h
        .store
        .events_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.aggregate_id, e.event_type, e.metadata["actor"].clone()))
        .collect();
    let alice = format!("{APP}:alice");
    let erin_wx = format!("{APP}:erin_wx");
    let user = format!("user:{erin}");
    let expected = [
        (&alice, "SessionObtained", "wechat"),
        (&alice, "PhoneVerified", "wechat"),
        (&alice, "UserBound", "wechat"),
        (&erin_wx, "SessionObtained", "wechat"),
        (&erin_wx, "UserBound", &user),
        (&erin_wx, "Unbound", &user),
        (&alice, "Unbound", "admin"),
        (&alice, "PersonalDataErased", "admin"),
    ]
    .map(|(id, event, actor)| (id.clone(), event.to_owned(), actor.to_owned()));
    assert_eq!(recorded, expected);
}
