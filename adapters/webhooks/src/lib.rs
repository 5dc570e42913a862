//! The HTTP edge of webhook deliveries: [`HttpWebhookSender`] POSTs each message with
//! the Standard Webhooks headers (<https://www.standardwebhooks.com/>):
//!
//! * `webhook-id`: the message id, the same for every attempt (idempotency);
//! * `webhook-timestamp`: Unix seconds of this attempt;
//! * `webhook-signature`: `v1,` and the base64 HMAC-SHA256, under the secret's key, of
//!   `{id}.{timestamp}.{body}`.
//!
//! The secret is written `whsec_` followed by the base64 of the key bytes.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use miniauth_application::webhooks::{
    DeliveryFailure, Subscription, WebhookMessage, WebhookSender,
};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A signing key, read from its `whsec_<base64>` form. `Debug` never shows it.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// Reads `whsec_` + base64 (24 to 64 bytes of key, as the spec recommends).
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("must start with `{SECRET_PREFIX}` (Standard Webhooks)"))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| format!("must be `{SECRET_PREFIX}` followed by base64"))?;
        if !(24..=64).contains(&key.len()) {
            return Err("the key must be 24 to 64 bytes (openssl rand -base64 32)".into());
        }
        Ok(Self(key))
    }

    /// The `webhook-signature` header value of a message: `v1,<base64 HMAC-SHA256>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        // HMAC accepts keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// POSTs signed deliveries with reqwest, within a timeout per attempt.
#[derive(Debug, Clone)]
pub struct HttpWebhookSender {
    client: reqwest::Client,
}

impl HttpWebhookSender {
    /// A sender whose attempts each take at most `timeout` (connecting included).
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect would send the signed body somewhere the operator did not name.
            .redirect(reqwest::redirect::Policy::none())
            // A connection per delivery: deliveries are few, and a receiver that was
            // redeployed (or moved in DNS) is reached at once, not through a kept-alive
            // connection to its old process.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("miniauth-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }
}

#[async_trait]
impl WebhookSender for HttpWebhookSender {
    async fn send(
        &self,
        subscription: &Subscription,
        message: &WebhookMessage,
    ) -> Result<(), DeliveryFailure> {
        let secret = SigningSecret::parse(subscription.secret.expose())
            .map_err(|_| DeliveryFailure("the subscription's secret is not valid".into()))?;
        let timestamp = message.timestamp.timestamp();
        let signature = secret.sign(&message.id, timestamp, &message.body);
        let answer = self
            .client
            .post(&subscription.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.clone())
            .send()
            .await
            .map_err(|error| {
                DeliveryFailure(if error.is_timeout() {
                    "timed out".to_owned()
                } else if error.is_connect() {
                    "could not connect".to_owned()
                } else {
                    "the request failed".to_owned()
                })
            })?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryFailure(format!(
                "answered HTTP {}",
                status.as_u16()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' tests.
    #[test]
    fn signs_as_the_reference_implementation() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(!format!("{secret:?}").contains("MfKQ"));
    }

    #[test]
    fn secrets_must_be_in_the_whsec_form() {
        assert!(SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(SigningSecret::parse("whsec_not base64!").is_err());
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_err());
    }
}
