//! The log lines name the request, never its secrets or personal data.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_carry_the_request_id_but_no_codes_tickets_tokens_or_phones() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = harness().await;
    let phone = h.register("tess", "13812345678").await;
    let access = phone["tokens"]["access_token"].as_str().unwrap();
    let refresh = phone["tokens"]["refresh_token"].as_str().unwrap();
    h.get("/v1/me", Some(access)).await;
    h.post_json(
        "/v1/apps/wx4f4bc4dec97d474b/sessions",
        json!({ "code": "badsecret" }),
        None,
    )
    .await;
    h.get(&format!("/wx/user/{APP}/login?code=c_tess"), None)
        .await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("\"request_id\""), "{logs}");
    assert!(logs.contains("\"route\":\"/v1/me\""), "{logs}");
    assert!(
        logs.contains("wechat_app_credentials"),
        "the hidden cause is logged: {logs}"
    );
    for secret in [
        "c_tess",
        "p_13812345678",
        "13812345678",
        // Tickets: `v1.` and base64url of `{"…`.
        "v1.eyJ",
        access,
        refresh,
        "badsecret",
    ] {
        assert!(
            !logs.contains(secret),
            "`{secret}` leaked into the logs: {logs}"
        );
    }
}
