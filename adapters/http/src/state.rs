//! What every handler shares.

use std::sync::Arc;

use crate::config::HttpConfig;
use crate::metrics::Metrics;
use async_trait::async_trait;
use miniauth_application::ports::AuditLog;
use miniauth_application::webhooks::WebhookDelivery;
use miniauth_application::{Audit, MiniAuth};

pub use miniauth_application::ports::Readiness;

/// A readiness check that always passes, for deployments without a store to ping.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysReady;

#[async_trait]
impl Readiness for AlwaysReady {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The router's state: the use cases and what the HTTP layer adds around them.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) auth: Arc<MiniAuth>,
    pub(crate) jwks: Arc<serde_json::Value>,
    pub(crate) readiness: Arc<dyn Readiness>,
    pub(crate) config: Arc<HttpConfig>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) audit: Option<Arc<Audit>>,
    pub(crate) webhooks: Option<Arc<WebhookDelivery>>,
}

impl ApiState {
    /// The state of a router over `auth`, publishing `jwks` at
    /// `/.well-known/jwks.json`, with a fresh metrics registry.
    pub fn new(
        auth: Arc<MiniAuth>,
        jwks: Arc<serde_json::Value>,
        readiness: Arc<dyn Readiness>,
        config: HttpConfig,
    ) -> Self {
        Self {
            auth,
            jwks,
            readiness,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            audit: None,
            webhooks: None,
        }
    }

    /// The same state serving the audit routes of the admin API from the event log
    /// `log`, through the application's [`Audit`] (without it they answer 501
    /// `audit_unavailable`).
    pub fn with_audit(mut self, log: Arc<dyn AuditLog>) -> Self {
        self.audit = Some(Arc::new(self.auth.audit(log)));
        self
    }

    /// The same state showing `delivery`'s parked webhooks on the admin API.
    pub fn with_webhooks(mut self, delivery: Arc<WebhookDelivery>) -> Self {
        self.webhooks = Some(delivery);
        self
    }

    /// The metrics registry `/metrics` renders.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The settings.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }
}
