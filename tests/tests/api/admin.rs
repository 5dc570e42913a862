//! The audit routes of the admin API, over a recording fake of the `AuditLog` port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use miniauth_application::audit::BindingAt;
use miniauth_application::ports::{AuditLog, PersonalDataVault, PortError, StoredEvent};
use miniauth_domain::audit::{AuditCheckpoint, BindingSpan, LoggedEvent, VerifyReport};
use miniauth_domain::{
    AccountId, AppId, BindMethod, PersonalField, PhoneSource, PhoneVerified, SealedDatum,
    SocialAccountEvent, UserId,
};

use crate::support::{harness, harness_with_audit, ADMIN_TOKEN, APP, CLOSED_APP, UNKNOWN_APP};

/// Answers from fixed data and remembers what it was asked.
#[derive(Default)]
struct FakeAudit {
    asked: Mutex<Vec<String>>,
    /// Alice's phone, sealed by the harness's vault (set once the harness runs).
    sealed_phone: Mutex<Option<SealedDatum>>,
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn binding(user: i64) -> BindingAt {
    BindingAt {
        appid: AppId::parse(APP).unwrap(),
        openid: "o-alice".parse().unwrap(),
        span: BindingSpan {
            user_id: UserId::new(user).unwrap(),
            bound_at: at("2026-02-11T09:30:00Z"),
            via: BindMethod::PhoneMatch,
            unbound_at: None,
            reason: None,
        },
    }
}

#[async_trait]
impl AuditLog for FakeAudit {
    async fn account_events(&self, account: &AccountId) -> Result<Vec<StoredEvent>, PortError> {
        let (appid, openid) = (account.appid(), account.openid());
        self.asked
            .lock()
            .unwrap()
            .push(format!("history {appid} {openid}"));
        if openid.as_str() != "o-alice" {
            return Ok(Vec::new());
        }
        let phone = self.sealed_phone.lock().unwrap().clone();
        let phone = phone.expect("the phone is sealed by the harness's vault");
        Ok(vec![StoredEvent {
            position: 1,
            aggregate_id: account.to_string(),
            sequence: 1,
            event_type: "PhoneVerified".into(),
            event_version: "1".into(),
            event: SocialAccountEvent::PhoneVerified(PhoneVerified {
                phone,
                country_code: "86".into(),
                via: PhoneSource::PhoneCode,
                occurred_at: at("2026-02-11T09:29:00Z"),
            }),
            metadata: HashMap::from([
                ("actor".to_owned(), "wechat".to_owned()),
                ("request_id".to_owned(), "r1".to_owned()),
                ("hash".to_owned(), "ab".repeat(32)),
            ]),
        }])
    }

    async fn bindings_as_of(
        &self,
        user: UserId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAt>, PortError> {
        self.asked
            .lock()
            .unwrap()
            .push(format!("user {user} {}", instant.to_rfc3339()));
        Ok(vec![binding(user.get())])
    }

    async fn app_bindings_as_of(
        &self,
        appid: &AppId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAt>, PortError> {
        self.asked
            .lock()
            .unwrap()
            .push(format!("app {appid} {}", instant.to_rfc3339()));
        if appid.as_str() != APP {
            return Ok(Vec::new());
        }
        Ok(vec![binding(42), binding(43)])
    }

    async fn export(&self, position: i64, limit: u32) -> Result<Vec<LoggedEvent>, PortError> {
        self.asked
            .lock()
            .unwrap()
            .push(format!("events {position} {limit}"));
        Ok((position + 1..=position + 2)
            .map(|p| LoggedEvent {
                position: p,
                aggregate_id: format!("{APP}:o-alice"),
                sequence: p,
                event_type: "SessionObtained".into(),
                event_version: "1".into(),
                payload: serde_json::json!({"SessionObtained": {"session_seq": p}}),
                metadata: serde_json::json!({"hash": "h"}),
            })
            .collect())
    }

    async fn verify(&self, _now: DateTime<Utc>) -> Result<VerifyReport, PortError> {
        Ok(VerifyReport::default())
    }

    async fn checkpoint(&self, _now: DateTime<Utc>) -> Result<Option<AuditCheckpoint>, PortError> {
        Ok(None)
    }

    async fn latest_checkpoint(&self) -> Result<Option<AuditCheckpoint>, PortError> {
        Ok(None)
    }

    async fn accounts_of_user(&self, user: UserId) -> Result<Vec<AccountId>, PortError> {
        self.asked
            .lock()
            .unwrap()
            .push(format!("accounts of {user}"));
        Ok(vec![AccountId::new(
            &AppId::parse(APP).unwrap(),
            &"o-alice".parse().unwrap(),
        )])
    }

    async fn projection_lag(&self) -> Result<i64, PortError> {
        Ok(0)
    }
}

async fn with_fake() -> (crate::support::Harness, Arc<FakeAudit>) {
    let fake = Arc::new(FakeAudit::default());
    let h = harness_with_audit(fake.clone()).await;
    let alice = AccountId::new(&AppId::parse(APP).unwrap(), &"o-alice".parse().unwrap());
    let phone = h
        .store
        .vault()
        .seal_personal(&alice, PersonalField::Phone, "13800138000")
        .await
        .unwrap();
    *fake.sealed_phone.lock().unwrap() = Some(phone);
    (h, fake)
}

#[tokio::test]
async fn audit_routes_need_the_admin_token() {
    let (h, fake) = with_fake().await;
    for uri in [
        format!("/v1/admin/apps/{APP}/accounts/o-alice/history"),
        "/v1/admin/users/42/bindings".to_owned(),
        format!("/v1/admin/bindings?appid={APP}"),
        "/v1/admin/events".to_owned(),
    ] {
        h.get(&uri, None)
            .await
            .assert_problem(401, "admin_token_invalid");
        h.get(&uri, Some("wrong-token-0123456789"))
            .await
            .assert_problem(401, "admin_token_invalid");
    }
    h.post_json(
        &format!("/v1/admin/apps/{APP}/accounts/o-alice/erase"),
        serde_json::json!({}),
        None,
    )
    .await
    .assert_problem(401, "admin_token_invalid");
    assert!(fake.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn without_an_audit_log_the_routes_say_so() {
    let h = harness().await;
    h.get("/v1/admin/users/42/bindings", Some(ADMIN_TOKEN))
        .await
        .assert_problem(501, "audit_unavailable");
}

#[tokio::test]
async fn history_answers_the_events_or_not_found() {
    let (h, fake) = with_fake().await;
    let answer = h
        .get(
            &format!("/v1/admin/apps/{APP}/accounts/o-alice/history"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json["appid"], APP);
    assert_eq!(answer.json["events"][0]["phone"], "+86 138****8000");
    assert_eq!(
        answer.json["events"][0]["occurred_at"],
        "2026-02-11T09:29:00Z"
    );
    h.get(
        &format!("/v1/admin/apps/{APP}/accounts/o-nobody/history"),
        Some(ADMIN_TOKEN),
    )
    .await
    .assert_problem(404, "account_not_found");
    h.get(
        "/v1/admin/apps/not-an-appid/accounts/o-alice/history",
        Some(ADMIN_TOKEN),
    )
    .await
    .assert_problem(400, "invalid_field");
    assert_eq!(fake.asked.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn bindings_as_of_parse_the_instant_in_any_offset() {
    let (h, fake) = with_fake().await;
    let answer = h
        .get(
            "/v1/admin/users/42/bindings?as_of=2026-03-01T08:00:00%2B08:00",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json["as_of"], "2026-03-01T00:00:00Z");
    assert_eq!(answer.json["bindings"][0]["user_id"], 42);
    assert_eq!(answer.json["bindings"][0]["via"], "phone_match");
    assert_eq!(
        fake.asked.lock().unwrap().last().unwrap(),
        "user 42 2026-03-01T00:00:00+00:00"
    );
    for bad in [
        "/v1/admin/users/42/bindings?as_of=yesterday",
        "/v1/admin/users/42/bindings?as_of=",
        "/v1/admin/users/0/bindings",
        "/v1/admin/users/abc/bindings",
    ] {
        h.get(bad, Some(ADMIN_TOKEN))
            .await
            .assert_problem(400, "invalid_field");
    }
    let app = h
        .get(
            &format!("/v1/admin/bindings?appid={APP}&as_of=2026-03-01T00:00:00Z"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(app.status, 200, "{}", app.text);
    assert_eq!(app.json["bindings"].as_array().unwrap().len(), 2);
    h.get(
        "/v1/admin/bindings?as_of=2026-03-01T00:00:00Z",
        Some(ADMIN_TOKEN),
    )
    .await
    .assert_problem(400, "invalid_field");
}

#[tokio::test]
async fn events_are_json_lines_paged_by_position() {
    let (h, fake) = with_fake().await;
    let answer = h
        .get("/v1/admin/events?after=5&limit=2", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.content_type(), "application/x-ndjson");
    let lines: Vec<serde_json::Value> = answer
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["position"], 6);
    assert_eq!(lines[1]["metadata"]["hash"], "h");
    h.get("/v1/admin/events", Some(ADMIN_TOKEN)).await;
    assert_eq!(
        fake.asked.lock().unwrap().as_slice(),
        ["events 5 2", "events 0 1000"]
    );
    for bad in [
        "/v1/admin/events?after=-1",
        "/v1/admin/events?limit=0",
        "/v1/admin/events?limit=10001",
        "/v1/admin/events?after=x",
    ] {
        h.get(bad, Some(ADMIN_TOKEN))
            .await
            .assert_problem(400, "invalid_field");
    }
}

#[tokio::test]
async fn erase_goes_through_the_use_case() {
    let (h, _) = with_fake().await;
    h.login(APP, "o-erase").await;
    let erase = |appid: &str| format!("/v1/admin/apps/{appid}/accounts/o-erase/erase");
    let answer = h
        .post_json(&erase(APP), serde_json::json!({}), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    // Again: harmless, and nothing more is recorded.
    let again = h
        .post_json(&erase(APP), serde_json::json!({}), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(again.status, 204, "{}", again.text);
    let account = AccountId::new(&AppId::parse(APP).unwrap(), &"o-erase".parse().unwrap());
    let erasures = AuditLog::account_events(&h.store, &account)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.event, SocialAccountEvent::PersonalDataErased(_)))
        .count();
    assert_eq!(erasures, 1, "a repeated erasure recorded another event");
    h.post_json(
        &erase(UNKNOWN_APP),
        serde_json::json!({}),
        Some(ADMIN_TOKEN),
    )
    .await
    .assert_problem(404, "unknown_app");
    // An identity that never logged in: nothing to erase, and no bearer challenge.
    let never = h
        .post_json(
            &format!("/v1/admin/apps/{APP}/accounts/o-never/erase"),
            serde_json::json!({}),
            Some(ADMIN_TOKEN),
        )
        .await;
    never.assert_problem(404, "account_not_found");
    assert_eq!(never.header("www-authenticate"), None);
}

#[tokio::test]
async fn app_bindings_of_an_app_neither_configured_nor_logged_are_not_found() {
    let (h, _) = with_fake().await;
    h.get(
        &format!("/v1/admin/bindings?appid={UNKNOWN_APP}"),
        Some(ADMIN_TOKEN),
    )
    .await
    .assert_problem(404, "unknown_app");
    // A configured app without a binding yet: an empty answer.
    let empty = h
        .get(
            &format!("/v1/admin/bindings?appid={CLOSED_APP}"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_eq!(empty.json["bindings"], serde_json::json!([]));
}

#[test]
fn the_openapi_document_lists_the_audit_routes() {
    let doc = serde_json::to_value(miniauth_http::openapi()).unwrap();
    for path in [
        "/v1/admin/apps/{appid}/accounts/{openid}/history",
        "/v1/admin/apps/{appid}/accounts/{openid}/erase",
        "/v1/admin/users/{user_id}/bindings",
        "/v1/admin/bindings",
        "/v1/admin/events",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}
