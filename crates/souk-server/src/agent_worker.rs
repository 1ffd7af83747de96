//! `souk agent`: a worker process that runs voice agents for a Souk server.
//!
//! It keeps a WebSocket open to the server's `/api/v1/agent/workers` (authenticated with
//! the API key), registers the shops it serves and its capacity, and runs each job it is
//! sent: joining the room with the job's token, like the agents inside `souk serve`. It
//! brings its own model and speech stages (its `[agent]` configuration), so the server
//! needs none. If the connection drops it reconnects, backing off up to 30 s. An
//! `https://` server is reached over TLS, trusting what `souk_client::tls` trusts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use souk_agent::shop::{OrderLookup, SaleOrders};
use souk_agent::voice::pool::{FromWorker, ToWorker};
use souk_agent::voice::room::{MintToken, RoomAgents};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::agents;
use crate::cli::AgentArgs;
use crate::config::{AgentConfig, FileConfig};

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    crate::serve::runtime()?.block_on(work(args))
}

async fn work(args: AgentArgs) -> anyhow::Result<()> {
    let file = FileConfig::load(&args.config)?;
    let config = AgentConfig::from_file(&file.agent, false)?;
    if config.shops.is_empty() {
        bail!("the configuration names no [[agent.shops]] for this worker to serve");
    }
    let Some(llm) = agents::model(&config) else {
        bail!("a worker needs a language model: add [agent.llm] to its configuration");
    };
    let server = args.server.trim_end_matches('/').to_owned();
    let sale_orders = Arc::new(ServerOrders {
        http: reqwest::Client::builder()
            .use_preconfigured_tls((*souk_client::tls::config()).clone())
            .timeout(Duration::from_secs(5))
            .build()
            .context("the HTTP client")?,
        orders_url: reqwest::Url::parse(&format!("{server}/api/v1/orders/"))
            .context("the server URL")?,
        api_key: args.api_key.clone(),
        api_secret: args.api_secret.clone(),
    });
    let shops = agents::load_shops(&config, sale_orders)?;
    let shop_ids: Vec<String> = shops.iter().map(|s| s.id.clone()).collect();
    // Jobs come with their token: a worker never signs one.
    let mint: MintToken =
        Box::new(|_, _| Err("agent workers are sent tokens with their jobs".into()));
    let cancel = CancellationToken::new();
    let rooms = agents::room_agents(&config, &shops, Some(llm), mint, cancel.clone())?;
    let mut backoff = Duration::from_secs(1);
    loop {
        match serve_jobs(&args, &server, &shop_ids, &rooms).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => warn!(
                "agent worker: {e:#}; reconnecting in {} s",
                backoff.as_secs()
            ),
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                cancel.cancel();
                return Ok(());
            }
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// One connection to the server: register, then run jobs until it closes.
async fn serve_jobs(
    args: &AgentArgs,
    server: &str,
    shops: &[String],
    rooms: &Arc<RoomAgents>,
) -> anyhow::Result<()> {
    let ws_url = format!("{}/api/v1/agent/workers", server.replacen("http", "ws", 1));
    let mut request = ws_url
        .as_str()
        .into_client_request()
        .context("the server URL")?;
    let credentials = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", args.api_key, args.api_secret));
    request.headers_mut().insert(
        "authorization",
        format!("Basic {credentials}")
            .parse()
            .context("the API key")?,
    );
    let tls = tokio_tungstenite::Connector::Rustls(souk_client::tls::config());
    let (socket, _) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(tls))
            .await
            .with_context(|| format!("connecting to {ws_url}"))?;
    let (mut tx, mut rx) = socket.split();
    let register = FromWorker::Register {
        shops: shops.to_vec(),
        capacity: args.capacity,
    };
    tx.send(Message::text(serde_json::to_string(&register)?))
        .await?;
    info!(%server, ?shops, capacity = args.capacity, "agent worker registered");
    let (done_tx, mut done) = mpsc::unbounded_channel::<String>();
    loop {
        tokio::select! {
            Some(room) = done.recv() => {
                let msg = FromWorker::JobDone { room };
                tx.send(Message::text(serde_json::to_string(&msg)?)).await?;
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ToWorker>(&text) {
                    Ok(ToWorker::Job { room, shop, token }) => {
                        info!(room, shop, "agent worker: job");
                        let (rooms, server, done_tx) = (rooms.clone(), server.to_owned(), done_tx.clone());
                        tokio::spawn(async move {
                            match rooms.run_here(&room, &shop, &server, &token).await {
                                Ok(agent) => { let _ = agent.await; }
                                Err(e) => warn!(room, "agent worker: the job failed: {}", e.message),
                            }
                            let _ = done_tx.send(room);
                        });
                    }
                    Ok(ToWorker::Stop { room }) => { rooms.stop(&room); }
                    Err(e) => warn!("agent worker: an unknown message from the server: {e}"),
                },
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            },
        }
    }
}

/// Live-sale orders, read from the server's ledger over its REST API.
struct ServerOrders {
    http: reqwest::Client,
    /// `.../api/v1/orders/`, to which the order id is added as one path segment.
    orders_url: reqwest::Url,
    api_key: String,
    api_secret: String,
}

impl SaleOrders for ServerOrders {
    fn find<'a>(&'a self, order_id: &'a str) -> OrderLookup<'a> {
        Box::pin(async move {
            let mut url = self.orders_url.clone();
            url.path_segments_mut()
                .map_err(|()| "the server URL cannot have a path".to_owned())?
                .pop_if_empty()
                .push(order_id);
            let response = self
                .http
                .get(url)
                .basic_auth(&self.api_key, Some(&self.api_secret))
                .send()
                .await
                .map_err(|e| format!("asking the server for the order: {e}"))?;
            match response.status() {
                reqwest::StatusCode::NOT_FOUND => Ok(None),
                status if status.is_success() => response
                    .json::<souk_proto::commerce::Order>()
                    .await
                    .map(|order| Some(order.into()))
                    .map_err(|e| format!("reading the server's order: {e}")),
                status => Err(format!("the server answered {status} for the order")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's order route as the worker meets it: `OR_1` is Layla's, the rest is
    /// missing, and `OR_boom` fails.
    async fn orders_route() -> String {
        async fn order(
            axum::extract::Path(id): axum::extract::Path<String>,
            headers: axum::http::HeaderMap,
        ) -> axum::response::Response {
            use axum::response::IntoResponse;
            assert!(headers.contains_key("authorization"), "the API key is sent");
            match id.as_str() {
                "OR_1" => axum::Json(serde_json::json!({
                    "order_id": "OR_1", "sale_id": "fs", "room": "live", "buyer": "layla",
                    "product_id": "tote", "title": "Tote", "quantity": 2,
                    "amount_minor": 5000, "currency": "USD", "created_at_ms": 1
                }))
                .into_response(),
                "OR_boom" => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                _ => axum::http::StatusCode::NOT_FOUND.into_response(),
            }
        }
        let app = axum::Router::new().route("/api/v1/orders/{id}", axum::routing::get(order));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn live_sale_orders_come_from_the_server() {
        let server = orders_route().await;
        let orders = ServerOrders {
            http: reqwest::Client::new(),
            orders_url: reqwest::Url::parse(&format!("{server}/api/v1/orders/")).unwrap(),
            api_key: "k".into(),
            api_secret: "s".into(),
        };
        let found = orders.find("OR_1").await.unwrap().unwrap();
        assert_eq!(
            (found.buyer.as_str(), found.status.as_str()),
            ("layla", "paid")
        );
        assert_eq!(found.items[0].title, "Tote");
        assert!(orders.find("OR_2").await.unwrap().is_none());
        // An id the model made up stays one path segment.
        assert!(orders.find("../../rooms").await.unwrap().is_none());
        let failed = orders.find("OR_boom").await.unwrap_err();
        assert!(failed.contains("500"), "{failed}");
    }
}
