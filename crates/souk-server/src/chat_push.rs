//! Offline notifications for chat: drains the durable outbox to the merchant's push URL.
//!
//! A notification is written in the same transaction as the message it announces, so a
//! crash can delay it but never lose it. Delivery is at least once: a receiver may see a
//! retry of a notification it already handled, and tells by its `id`.

use std::sync::Arc;
use std::time::Duration;

use souk_chat::service::now_ms;
use souk_chat::Chat;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::WebhookConfig;
use crate::webhook::post_signed;

/// Longest wait between attempts at one notification. It is retried until delivered.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often the outbox is looked at when nothing wakes the worker.
const IDLE_POLL: Duration = Duration::from_secs(1);

fn backoff(attempts: u32) -> Duration {
    (Duration::from_millis(500) * 2u32.saturating_pow(attempts.min(16))).min(MAX_BACKOFF)
}

pub fn spawn(
    chat: Arc<Chat>,
    target: WebhookConfig,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a default HTTP client builds");
    tracker.spawn(async move {
        loop {
            let due = match chat.store().outbox_due(now_ms(), 100).await {
                Ok(due) => due,
                Err(e) => {
                    warn!("reading the push outbox: {e}");
                    Vec::new()
                }
            };
            for item in &due {
                let mut body: serde_json::Value =
                    serde_json::from_str(&item.payload).unwrap_or_default();
                body["id"] = item.id.clone().into();
                body["type"] = "chat.unread_message".into();
                body["seq"] = item.seq.into();
                let body = body.to_string();
                let mut delivered = false;
                for url in &target.urls {
                    match post_signed(
                        &client,
                        url,
                        &target.api_key,
                        &target.secret,
                        body.as_bytes(),
                    )
                    .await
                    {
                        Ok(()) => delivered = true,
                        Err(why) => debug!(%url, id = %item.id, "push not delivered: {why}"),
                    }
                }
                let saved = if delivered {
                    chat.store().outbox_delivered(&item.id).await
                } else {
                    let attempts = item.attempts + 1;
                    let at = now_ms() + backoff(attempts).as_millis() as u64;
                    chat.store().outbox_retry_at(&item.id, attempts, at).await
                };
                if let Err(e) = saved {
                    warn!("updating the push outbox: {e}");
                }
            }
            if due.len() == 100 {
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = chat.push_queued().notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    });
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
