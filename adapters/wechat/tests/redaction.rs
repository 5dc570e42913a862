//! Secrets (app secret, session key, access token) never reach `Debug`, error messages
//! or logs, on the happy path or the failure paths.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use miniauth_application::ports::WeChatApi;
use miniauth_wechat::sim::{Endpoint, Fault, Faults, SimConfig};
use miniauth_wechat::WeChatClient;

/// Collects everything logged.
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

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn assert_hides(shown: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !shown.contains(secret.as_str()),
            "a secret leaked into: {shown}"
        );
    }
}

// current_thread runtime: the subscriber set for this thread sees every task.
#[tokio::test]
async fn no_secret_in_debug_errors_or_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = start_sim().await;
    let device = sim.device();
    let config = fast_config(sim.base_url());
    let client = WeChatClient::new(config.clone()).unwrap();
    let user = device.create_user(&alice()).await.unwrap();
    let login = device.login(&appid(BOUND), user).await.unwrap();
    let session = client
        .code_to_session(&appid(BOUND), &code(&login))
        .await
        .unwrap();
    let token = client.access_token(&appid(BOUND)).await.unwrap();
    let phone = device.phone(&appid(BOUND), user).await.unwrap();
    client
        .phone_number(&appid(BOUND), &code(&phone.code), &session.openid)
        .await
        .unwrap();

    // Failure paths: a refused token, retries, a bad secret.
    device.revoke_tokens(&appid(BOUND)).await.unwrap();
    client
        .check_session(&appid(BOUND), &session.openid, &session.session_key)
        .await
        .unwrap();
    sim.simulator()
        .set_faults(
            Faults::none()
                .with(
                    Endpoint::CheckSession,
                    Fault {
                        busy: 0.5,
                        server_error: 0.5,
                        ..Fault::default()
                    },
                )
                .with(
                    Endpoint::Jscode2Session,
                    Fault {
                        server_error: 1.0,
                        ..Fault::default()
                    },
                ),
        )
        .unwrap();
    let check_error = client
        .check_session(&appid(BOUND), &session.openid, &session.session_key)
        .await
        .unwrap_err();
    let login_error = client
        .code_to_session(&appid(BOUND), &code("anothercode"))
        .await
        .unwrap_err();
    let mut wrong = fast_config(sim.base_url());
    wrong.apps[0].secret = miniauth_wechat::Secret::new("the-wrong-secret");
    let wrong_client = WeChatClient::new(wrong).unwrap();
    let credential_error = wrong_client.access_token(&appid(BOUND)).await.unwrap_err();

    let secrets = vec![
        secret_of(BOUND),
        "the-wrong-secret".to_owned(),
        session.session_key.expose_text().to_owned(),
        token.expose().to_owned(),
    ];
    let shown = format!(
        "{config:?} {client:?} {wrong_client:?} {session:?} {token:?} {check_error:?} {check_error} \
         {login_error:?} {login_error} {credential_error:?} {credential_error} {sim:?} {phone:?} {:?}",
        SimConfig::demo()
    );
    assert_hides(&shown, &secrets);
    assert!(!shown.contains(miniauth_wechat::sim::DEMO_SECRET));
    let logs = captured.text();
    assert!(
        logs.contains("WeChat call failed"),
        "the retries were logged"
    );
    assert_hides(&logs, &secrets);
}
