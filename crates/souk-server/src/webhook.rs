//! Webhook delivery: signed POSTs, retried with backoff.
//!
//! Each event gets an id, so a receiver that sees a retry of something it already
//! processed can tell. The signature covers a timestamp and the body, so a captured
//! delivery cannot be replayed later or altered.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use souk_proto::rest::{WebhookEvent, WebhookKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::WebhookConfig;

/// Header carrying `t=<unix seconds>,v1=<hex hmac>`.
pub const SIGNATURE_HEADER: &str = "Souk-Signature";
/// Header naming the API key whose secret signed the delivery.
pub const API_KEY_HEADER: &str = "Souk-Api-Key";
/// Attempts per delivery before it is given up (logged).
pub const MAX_ATTEMPTS: u32 = 6;

/// HMAC-SHA256 over `"<t>.<body>"` with the API secret, as hex.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Starts the delivery task; the returned sender takes events from the media engine.
pub fn spawn(
    config: WebhookConfig,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> mpsc::Sender<WebhookKind> {
    let (tx, mut rx) = mpsc::channel::<WebhookKind>(10_000);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a default HTTP client builds");
    let inner = tracker.clone();
    tracker.spawn(async move {
        loop {
            let kind = tokio::select! {
                _ = cancel.cancelled() => return,
                next = rx.recv() => match next {
                    Some(kind) => kind,
                    None => return,
                },
            };
            let event = WebhookEvent {
                id: format!("EV_{:016x}", rand::thread_rng().gen::<u64>()),
                created_at_ms: crate::auth::unix_now() * 1000,
                kind,
            };
            let body = serde_json::to_vec(&event).expect("webhook events serialise");
            for url in &config.urls {
                inner.spawn(deliver(
                    client.clone(),
                    url.clone(),
                    config.clone(),
                    body.clone(),
                    cancel.clone(),
                ));
            }
        }
    });
    tx
}

async fn deliver(
    client: reqwest::Client,
    url: String,
    config: WebhookConfig,
    body: Vec<u8>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=MAX_ATTEMPTS {
        match post_signed(&client, &url, &config.api_key, &config.secret, &body).await {
            Ok(()) => return,
            Err(why) => debug!(%url, attempt, "webhook not delivered: {why}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    warn!(%url, "webhook given up after {MAX_ATTEMPTS} attempts");
}

/// One signed POST; `Err` says why it was not accepted.
pub async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    api_key: &str,
    secret: &str,
    body: &[u8],
) -> Result<(), String> {
    let t = crate::auth::unix_now();
    let result = client
        .post(url)
        .header("content-type", "application/json")
        .header(API_KEY_HEADER, api_key)
        .header(
            SIGNATURE_HEADER,
            format!("t={t},v1={}", signature(secret, t, body)),
        )
        .body(body.to_vec())
        .send()
        .await;
    match result {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("HTTP {}", resp.status())),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_stable_and_covers_time_and_body() {
        let a = signature("secret", 1, b"{}");
        assert_eq!(a, signature("secret", 1, b"{}"));
        assert_ne!(a, signature("secret", 2, b"{}"));
        assert_ne!(a, signature("secret", 1, b"{ }"));
        assert_eq!(a.len(), 64);
    }
}
