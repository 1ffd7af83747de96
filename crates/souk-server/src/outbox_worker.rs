//! Delivers the durable outbox (see `souk_store::outbox`): each message is POSTed, signed
//! like webhooks, to the URLs configured for its topic, and retried with backoff until one
//! of them accepts it.

use std::sync::Arc;
use std::time::Duration;

use souk_store::outbox::Message;
use souk_store::Db;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::WebhookConfig;
use crate::webhook::post_signed;

/// Longest wait between attempts at one message. It is retried until delivered.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often the outbox is looked at when nothing wakes the worker.
const IDLE_POLL: Duration = Duration::from_secs(1);
const BATCH: u32 = 100;

fn backoff(attempts: u32) -> Duration {
    (Duration::from_millis(500) * 2u32.saturating_pow(attempts.min(16))).min(MAX_BACKOFF)
}

fn now_ms() -> u64 {
    crate::auth::unix_now() * 1000
}

/// Where each topic goes.
pub type Routes = Vec<(&'static str, WebhookConfig)>;

pub fn spawn(
    db: Db,
    routes: Routes,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a default HTTP client builds");
    tracker.spawn(async move {
        loop {
            let due = match db.outbox_due(now_ms(), BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    warn!("reading the outbox: {e}");
                    Vec::new()
                }
            };
            for message in &due {
                let saved = if deliver(&client, &routes, message).await {
                    db.outbox_delivered(&message.id).await
                } else {
                    let attempts = message.attempts + 1;
                    let at = now_ms() + backoff(attempts).as_millis() as u64;
                    db.outbox_retry_at(&message.id, attempts, at).await
                };
                if let Err(e) = saved {
                    warn!("updating the outbox: {e}");
                }
            }
            if due.len() == BATCH as usize {
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    });
}

/// True once any URL for the message's topic accepted it.
async fn deliver(client: &reqwest::Client, routes: &Routes, message: &Message) -> bool {
    let mut delivered = false;
    for (_, target) in routes.iter().filter(|(t, _)| *t == message.topic) {
        for url in &target.urls {
            match post_signed(
                client,
                url,
                &target.api_key,
                &target.secret,
                message.payload.as_bytes(),
            )
            .await
            {
                Ok(()) => delivered = true,
                Err(why) => debug!(%url, id = %message.id, "outbox message not delivered: {why}"),
            }
        }
    }
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
