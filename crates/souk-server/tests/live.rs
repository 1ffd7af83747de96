//! Live commerce against the real server: gifts over the room socket are committed, then
//! announced; bad money requests get clear errors; and a server killed mid-storm keeps
//! every acknowledged gift and purchase exactly once.

mod common;

use std::time::Duration;

use common::{request, Api, TestServer, WAIT};
use reqwest::Method;
use serde_json::json;
use souk_client::{Client, ClientOptions};
use souk_proto::live::LiveEvent;
use souk_proto::signal::{ClientMessage, SendGift, ServerMessage};

/// The gifts announced to a client so far.
fn gift_events(stats: &souk_client::Stats) -> Vec<souk_proto::commerce::GiftSent> {
    stats
        .messages
        .iter()
        .flat_map(|m| match m {
            ServerMessage::RoomEvents(batch) => batch.events.clone(),
            _ => Vec::new(),
        })
        .filter_map(|e| match e.event {
            LiveEvent::Gift(g) => Some(g),
            _ => None,
        })
        .collect()
}

fn gift(req: u32, key: &str, to: &str, gift_id: &str, count: i64) -> ClientMessage {
    ClientMessage::SendGift(SendGift {
        req: Some(req),
        idempotency_key: key.into(),
        gift_id: gift_id.into(),
        to: to.into(),
        count,
    })
}

fn buy(req: u32, key: &str, sale_id: &str, quantity: i64) -> ClientMessage {
    ClientMessage::Buy(souk_proto::signal::Buy {
        req: Some(req),
        idempotency_key: key.into(),
        sale_id: sale_id.into(),
        quantity,
    })
}

/// Opens a flash sale in the room `live`, started a second ago, for a minute.
async fn open_sale(api: &Api, sale_id: &str, price_minor: i64, stock: i64, per_buyer_limit: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (status, body) = api
        .call(
            Method::POST,
            "/rooms/live/sales",
            Some(
                json!({"sale_id": sale_id, "room": "", "product_id": "tote", "title": "Tote",
                        "price_minor": price_minor, "currency": "USD", "stock": stock,
                        "per_buyer_limit": per_buyer_limit,
                        "starts_at_ms": now - 1000, "ends_at_ms": now + 60_000}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn join(server: &TestServer, identity: &str, role: &str) -> Client {
    let token = server.token("live", identity, role);
    Client::connect(&server.url, &token, ClientOptions::default())
        .await
        .expect("joins")
}

async fn set_up_money(api: &Api, viewers: &[&str]) {
    let (status, _) = api
        .call(
            Method::PUT,
            "/gifts",
            Some(
                json!([{"gift_id": "rose", "name": "Rose", "price_minor": 100, "currency": "USD"}]),
            ),
        )
        .await;
    assert_eq!(status, 200);
    for v in viewers {
        let (status, body) = api
            .call(Method::POST, &format!("/wallets/{v}/top_up"),
                Some(json!({"idempotency_key": format!("load-{v}"), "amount_minor": 1_000_000, "currency": "USD"})))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn balance(api: &Api, user: &str) -> i64 {
    let (_, body) = api
        .call(Method::GET, &format!("/wallets/{user}?currency=USD"), None)
        .await;
    body["balance_minor"].as_i64().expect("a balance")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gifts_are_paid_then_announced_and_bad_requests_are_refused() {
    let server = TestServer::start();
    let api = Api::new(&server);
    set_up_money(&api, &["fan"]).await;
    let host = join(&server, "host", "host").await;
    let fan = join(&server, "fan", "audience").await;
    let other = join(&server, "other", "audience").await;

    let sent = request(&fan, gift(1, "g-1", "host", "rose", 3), 1)
        .await
        .expect("gift accepted");
    assert_eq!(sent["amount_minor"], 300);
    for watcher in [&host, &other] {
        watcher
            .wait_for("the gift to be announced", WAIT, |s| {
                gift_events(s).iter().any(|g| g.amount_minor == 300)
            })
            .await
            .unwrap();
    }
    // A retry returns the first answer and is not announced again.
    let again = request(&fan, gift(2, "g-1", "host", "rose", 3), 2)
        .await
        .unwrap();
    assert_eq!(again["txn_id"], sent["txn_id"]);
    assert_eq!(
        request(&fan, gift(3, "g-1", "host", "rose", 4), 3).await,
        Err("idempotency_conflict".into())
    );
    assert_eq!(
        request(&fan, gift(4, "g-2", "host", "tank", 1), 4).await,
        Err("gift_not_found".into())
    );
    assert_eq!(
        request(&fan, gift(5, "g-3", "host", "rose", 100_000), 5).await,
        Err("invalid_request".into())
    );
    assert_eq!(
        request(&fan, gift(6, "g-4", "other", "rose", 1), 6).await,
        Err("participant_not_found".into()),
        "not on stage"
    );
    assert_eq!(
        request(&other, gift(7, "g-5", "host", "rose", 1), 7).await,
        Err("insufficient_funds".into())
    );
    let gifts_seen = gift_events(&other.stats()).len();
    assert_eq!(gifts_seen, 1, "one gift paid, one announced");

    let (_, board) = api.call(Method::GET, "/rooms/live/leaderboard", None).await;
    assert_eq!(board[0]["host"], "host");
    assert_eq!(board[0]["total_minor"], 300);
    assert_eq!(balance(&api, "host").await, 300);
    let (status, body) = api
        .call(
            Method::POST,
            "/wallets/fan/top_up",
            Some(json!({"idempotency_key": "x", "amount_minor": -5, "currency": "USD"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (_, audit) = api.call(Method::GET, "/ledger/audit", None).await;
    assert_eq!(audit["balanced"], true);
}

/// Price of one unit in the storm's flash sale.
const STORM_PRICE: i64 = 300;

/// A viewer's `k`th request of the storm: gifts and flash-sale purchases in turn.
fn storm_request(req: u32, viewer: &str, k: u32) -> ClientMessage {
    let key = format!("{viewer}-{k}");
    if k % 2 == 1 {
        gift(req, &key, "host", "rose", 1)
    } else {
        buy(req, &key, "storm", 1)
    }
}

/// The money movement an answer acknowledges: a gift's transaction or an order.
fn movement(answer: &serde_json::Value) -> String {
    answer["txn_id"]
        .as_str()
        .or(answer["order_id"].as_str())
        .expect("a transaction or an order")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_money_storm_survives_kill_9_exactly_once() {
    let mut server = TestServer::start();
    let viewers = ["v0", "v1", "v2"];
    let api = Api::new(&server);
    set_up_money(&api, &viewers).await;
    open_sale(&api, "storm", STORM_PRICE, 1_000_000, 1_000_000).await;
    let _host = join(&server, "host", "host").await;

    // Each viewer sends gifts and buys one after another, recording what was acknowledged.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<(String, u32, String)>();
    let mut storms = Vec::new();
    for v in viewers {
        let client = join(&server, v, "audience").await;
        let acked_tx = acked_tx.clone();
        storms.push(tokio::spawn(async move {
            for k in 1u32.. {
                match request(&client, storm_request(k, v, k), k).await {
                    Ok(answer) => {
                        let _ = acked_tx.send((v.to_owned(), k, movement(&answer)));
                    }
                    Err(_) => return k,
                }
            }
            unreachable!()
        }));
    }
    drop(acked_tx);
    let mut acked = Vec::new();
    while acked.len() < 60 {
        acked.push(acked_rx.recv().await.expect("acks arrive"));
    }
    server.crash_and_restart();
    let mut first_unanswered = Vec::new();
    for storm in storms {
        first_unanswered.push(storm.await.unwrap());
    }
    while let Ok(more) = acked_rx.try_recv() {
        acked.push(more);
    }

    // After the restart every viewer retries its whole sequence, including the request
    // that was in flight when the server died.
    let api = Api::new(&server);
    let _host = join(&server, "host", "host").await;
    for (i, v) in viewers.iter().enumerate() {
        let client = join(&server, v, "audience").await;
        let last = first_unanswered[i];
        let mut req = 1000;
        for k in 1..=last {
            // Retried as a client would: slowing down when the socket's rate limit says so.
            let sent = loop {
                req += 1;
                match request(&client, storm_request(req, v, k), req).await {
                    Err(code) if code == "rate_limited" => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    other => break other.unwrap_or_else(|e| panic!("retry of {v}-{k}: {e}")),
                }
            };
            if let Some((_, _, acked)) = acked.iter().find(|(who, kk, _)| who == v && *kk == k) {
                assert_eq!(
                    &movement(&sent),
                    acked,
                    "{v}-{k}: an acknowledged request keeps its transaction or order"
                );
            }
        }
    }
    // Each key moved money once: the host holds exactly one rose per gift key, and each
    // viewer paid once for each of its gifts and units bought.
    let gifts = |last: u32| i64::from(last.div_ceil(2));
    let purchases = |last: u32| i64::from(last / 2);
    let host_roses: i64 = first_unanswered.iter().map(|&last| gifts(last)).sum();
    assert_eq!(balance(&api, "host").await, host_roses * 100);
    for (i, v) in viewers.iter().enumerate() {
        let last = first_unanswered[i];
        assert_eq!(
            balance(&api, v).await,
            1_000_000 - gifts(last) * 100 - purchases(last) * STORM_PRICE,
            "{v}"
        );
    }
    let (_, audit) = api.call(Method::GET, "/ledger/audit", None).await;
    assert_eq!(audit["balanced"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_sale_purchase_sends_a_signed_retried_order_webhook() {
    let (hook_url, mut hooks, refused) = common::push_receiver(1).await;
    let server = TestServer::start_with_config(&format!("[webhooks]\nurls = [\"{hook_url}\"]\n"));
    let api = Api::new(&server);
    set_up_money(&api, &["buyer"]).await;
    let _host = join(&server, "host", "host").await;
    let buyer = join(&server, "buyer", "audience").await;
    open_sale(&api, "fs-1", 2500, 5, 2).await;
    let order = request(&buyer, buy(1, "b-1", "fs-1", 2), 1)
        .await
        .expect("bought");
    assert_eq!(order["amount_minor"], 5000);
    assert_eq!(
        request(&buyer, buy(2, "b-2", "fs-1", 1), 2).await,
        Err("purchase_limit".into())
    );

    // The merchant's webhook refuses the first delivery; the outbox retries. (Room
    // lifecycle webhooks share the URL.)
    let hook = loop {
        let hook = tokio::time::timeout(Duration::from_secs(30), hooks.recv())
            .await
            .expect("the order webhook arrives")
            .expect("receiver open");
        if hook["type"] == "order.created" {
            break hook;
        }
    };
    assert_eq!(hook["order_id"], order["order_id"]);
    assert_eq!(hook["quantity"], 2);
    assert_eq!(hook["title"], "Tote");

    // The merchant's backend and the buyer can read the order back; anyone else finds
    // nothing there.
    let id = order["order_id"].as_str().unwrap();
    let (status, read) = api.call(Method::GET, &format!("/orders/{id}"), None).await;
    assert_eq!((status, &read), (200, &order));
    let as_user = |who: &str| {
        api.http
            .get(format!("{}/orders/{id}", api.base))
            .bearer_auth(server.token("live", who, "audience"))
    };
    let (status, read) = api.send(as_user("buyer"), None).await;
    assert_eq!((status, &read["order_id"]), (200, &order["order_id"]));
    let (status, read) = api.send(as_user("someone"), None).await;
    assert_eq!(
        (status, read["code"].as_str()),
        (404, Some("order_not_found"))
    );
    let (status, read) = api.call(Method::GET, "/orders/OR_nothing", None).await;
    assert_eq!(
        (status, read["code"].as_str()),
        (404, Some("order_not_found"))
    );
    assert!(refused.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(balance(&api, "buyer").await, 1_000_000 - 5000);
}
