//! Wiring of webhook deliveries: the delivery service over the store and the HTTP
//! sender, the background task `serve` runs, and `miniauth webhooks parked|retry`.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use miniauth_application::ports::{Chain, Clock};
use miniauth_application::webhooks::{
    DeliveryPolicy, Subscription, WebhookDelivery, WebhookEvent, WebhookPorts,
};
use miniauth_store::Store;
use miniauth_webhooks::HttpWebhookSender;

use crate::config::Config;

/// Events read from the log per round and subscription.
const BATCH: u32 = 100;

/// The delivery service of the configured `[[webhooks]]`; `None` when there are none.
pub fn delivery(
    config: &Config,
    store: &Store,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Option<Arc<WebhookDelivery>>> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let hooks = config.webhooks(&env)?;
    if hooks.is_empty() {
        return Ok(None);
    }
    let settings = &config.webhook_delivery;
    let millis = |ms: u64| chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX));
    let policy = DeliveryPolicy {
        max_attempts: settings.max_attempts,
        backoff_initial: millis(settings.backoff_initial_ms),
        backoff_max: millis(settings.backoff_max_ms),
        lease: millis(settings.lease_ms),
        batch: BATCH,
    };
    let sender = HttpWebhookSender::new(std::time::Duration::from_millis(settings.timeout_ms))
        .context("configuring the webhook HTTP client")?;
    let subscriptions = hooks
        .into_iter()
        .map(|hook| Subscription {
            id: hook.section.id,
            url: hook.section.url,
            secret: hook.secret,
            events: hook
                .section
                .events
                .iter()
                .filter_map(|name| WebhookEvent::parse(name))
                .collect(),
            personal_data: hook.section.personal_data,
            tenant: hook.tenant,
            apps: hook.apps,
        })
        .collect();
    // Unique per process: the lease names who delivers.
    let holder = format!(
        "{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 8]>())
    );
    Ok(Some(Arc::new(WebhookDelivery::new(
        subscriptions,
        policy,
        WebhookPorts {
            feed: Arc::new(store.event_store()),
            ledger: Arc::new(store.webhook_ledger()),
            sender: Arc::new(sender),
            vault: Arc::new(store.vault()),
            clock,
        },
        holder,
    ))))
}

/// Delivers in rounds every `[webhook_delivery] poll_interval_ms` until aborted. A
/// round that delivered something is followed by the next at once.
pub fn spawn_delivery(
    delivery: Arc<WebhookDelivery>,
    poll: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match delivery.round().await {
                Ok(report) if report.delivered > 0 && report.failed == 0 => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %Chain(&error), "webhook round failed; retrying later")
                }
            }
            tokio::time::sleep(poll).await;
        }
    })
}

/// `miniauth webhooks …`.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List the parked deliveries (out of attempts; their subscription waits).
    Parked,
    /// Retry a parked delivery now (by its webhook-id); its subscription goes on.
    Retry {
        /// The `webhook-id`, as `parked` lists it.
        id: String,
    },
}

/// Runs a `miniauth webhooks` subcommand against the configured store.
pub async fn run(config: &Config, command: WebhooksCommand) -> anyhow::Result<()> {
    let store = crate::wiring::open_store(config).await?;
    let clock: Arc<dyn Clock> = Arc::new(miniauth_security::SystemClock);
    let Some(delivery) = delivery(config, &store, clock)? else {
        anyhow::bail!("no [[webhooks]] subscription is configured");
    };
    match command {
        WebhooksCommand::Parked => {
            let parked = delivery
                .parked()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if parked.is_empty() {
                println!("no parked delivery");
            }
            for p in parked {
                println!(
                    "{}  subscription {}  {} of {} at position {}  {} attempts, parked {}: {}",
                    p.webhook_id,
                    p.subscription,
                    p.event_type,
                    p.account,
                    p.position,
                    p.attempts,
                    p.parked_at.to_rfc3339(),
                    p.last_error
                );
            }
        }
        WebhooksCommand::Retry { id } => {
            if !delivery
                .retry(&id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                anyhow::bail!("no parked delivery has the id {id}");
            }
            println!("{id} will be delivered again at the next round");
        }
    }
    store.close().await;
    Ok(())
}
