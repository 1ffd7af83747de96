//! The room-service REST API, webhooks and graceful shutdown, against the real server.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, TestServer, WAIT};
use souk_client::{Client, ClientOptions, SyntheticMedia};
use souk_proto::model::LeaveReason;
use souk_proto::signal::ServerMessage;

const KEY: &str = "devkey";
const SECRET: &str = "souk-dev-secret-0123456789abcdef";

fn api(server: &TestServer, path: &str) -> String {
    format!("{}/api/v1{path}", server.url)
}

fn left_with(reason: LeaveReason) -> impl Fn(&souk_client::Stats) -> bool {
    move |s| {
        s.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Leave(l) if l.reason == reason))
    }
}

#[tokio::test]
async fn rooms_can_be_created_listed_inspected_and_deleted() {
    let server = TestServer::start();
    let http = reqwest::Client::new();

    let resp = http.get(api(&server, "/rooms")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["code"],
        "unauthorized"
    );
    let resp = http
        .get(api(&server, "/rooms"))
        .basic_auth(KEY, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let body = serde_json::json!({"name": "sale-42", "max_participants": 2, "metadata": "{\"sku\":\"A1\"}"});
    let resp = http
        .post(api(&server, "/rooms"))
        .basic_auth(KEY, Some(SECRET))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let room: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(room["name"], "sale-42");
    assert!(room["sid"].as_str().unwrap().starts_with("RM_"));

    let resp = http
        .post(api(&server, "/rooms"))
        .basic_auth(KEY, Some(SECRET))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["code"],
        "room_exists"
    );
    let resp = http
        .post(api(&server, "/rooms"))
        .basic_auth(KEY, Some(SECRET))
        .body("{\"nme\":1}")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["code"],
        "invalid_request"
    );

    let a = Client::connect(
        &server.url,
        &server.token("sale-42", "alice", "host"),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    let _b = Client::connect(
        &server.url,
        &server.token("sale-42", "bob", "audience"),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    let full = Client::connect(
        &server.url,
        &server.token("sale-42", "carol", "audience"),
        ClientOptions::default(),
    )
    .await;
    assert!(full.err().unwrap().to_string().contains("room_full"));

    let list: serde_json::Value = http
        .get(api(&server, "/rooms"))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["rooms"][0]["num_participants"], 2);
    let people: serde_json::Value = http
        .get(api(&server, "/rooms/sale-42/participants"))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let identities: Vec<&str> = people["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(identities, ["alice", "bob"]);
    let resp = http
        .get(api(&server, "/rooms/nope/participants"))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["code"],
        "room_not_found"
    );

    let resp = http
        .delete(api(&server, "/rooms/sale-42"))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    a.wait_for(
        "alice to be told the room closed",
        WAIT,
        left_with(LeaveReason::RoomDeleted),
    )
    .await
    .unwrap();
    let list: serde_json::Value = http
        .get(api(&server, "/rooms"))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["rooms"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn moderators_remove_participants_and_mute_tracks() {
    let server = TestServer::start();
    let http = reqwest::Client::new();
    let host = Client::connect(
        &server.url,
        &server.token("mod", "host", "host"),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    let tracks = host.publish(SyntheticMedia::default()).await.unwrap();
    let troll = Client::connect(
        &server.url,
        &server.token("mod", "troll", "audience"),
        ClientOptions::default(),
    )
    .await
    .unwrap();

    let video = tracks
        .iter()
        .find(|t| t.kind == souk_proto::model::TrackKind::Video)
        .unwrap();
    let url = api(
        &server,
        &format!(
            "/rooms/mod/participants/host/tracks/{}/mute",
            video.track_id
        ),
    );
    let resp = http
        .post(&url)
        .basic_auth(KEY, Some(SECRET))
        .json(&serde_json::json!({"muted": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    for (who, c) in [("host", &host), ("troll", &troll)] {
        c.wait_for(&format!("{who} to see the mute"), WAIT, |s| {
            s.messages
                .iter()
                .any(|m| matches!(m, ServerMessage::TrackMuted(t) if t.muted))
        })
        .await
        .unwrap();
    }
    let resp = http
        .post(api(
            &server,
            "/rooms/mod/participants/host/tracks/TR_x/mute",
        ))
        .basic_auth(KEY, Some(SECRET))
        .json(&serde_json::json!({"muted": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["code"],
        "track_not_found"
    );

    let resp = http
        .delete(api(&server, "/rooms/mod/participants/troll"))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    troll
        .wait_for(
            "the troll to be removed",
            WAIT,
            left_with(LeaveReason::Removed),
        )
        .await
        .unwrap();
    let resp = http
        .delete(api(&server, "/rooms/mod/participants/troll"))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["code"],
        "participant_not_found"
    );
}

/// Records webhook deliveries; refuses the first one to exercise retries.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
    refused_once: Arc<Mutex<bool>>,
}

async fn start_receiver() -> (String, Receiver) {
    use axum::http::{HeaderMap, StatusCode};
    let receiver = Receiver::default();
    let r = receiver.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let r = r.clone();
            async move {
                let mut refused = r.refused_once.lock().unwrap();
                if !*refused {
                    *refused = true;
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let sig = headers
                    .get("souk-signature")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let key = headers
                    .get("souk-api-key")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                r.seen.lock().unwrap().push((sig, key, body));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), receiver)
}

fn verify(sig_header: &str, body: &str) -> bool {
    use hmac::Mac;
    let mut t = "";
    let mut v1 = "";
    for part in sig_header.split(',') {
        if let Some(x) = part.strip_prefix("t=") {
            t = x;
        } else if let Some(x) = part.strip_prefix("v1=") {
            v1 = x;
        }
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes()) == v1
}

#[tokio::test]
async fn webhooks_are_signed_retried_and_cover_the_lifecycle() {
    let (url, receiver) = start_receiver().await;
    let dir = std::env::temp_dir().join(format!("souk-webhook-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("souk.toml");
    std::fs::write(&config, format!("[webhooks]\nurls = [\"{url}\"]\n")).unwrap();
    let server = TestServer::start_with(&["--config", config.to_str().unwrap()]);

    let a = Client::connect(
        &server.url,
        &server.token("hooks", "alice", "staff"),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    a.publish(SyntheticMedia::default()).await.unwrap();
    a.leave().await;

    let wanted = [
        "room_started",
        "participant_joined",
        "track_published",
        "track_unpublished",
        "participant_left",
    ];
    eventually("every lifecycle webhook", || async {
        let seen = receiver.seen.lock().unwrap();
        wanted.iter().all(|w| {
            seen.iter()
                .any(|(_, _, body)| body.contains(&format!("\"event\":\"{w}\"")))
        })
    })
    .await;
    let seen = receiver.seen.lock().unwrap().clone();
    for (sig, key, body) in &seen {
        assert_eq!(key, KEY);
        assert!(verify(sig, body), "signature verifies for {body}");
        let event: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(event["id"].as_str().unwrap().starts_with("EV_"));
    }
    // The refused first delivery was retried: room_started arrived anyway.
    assert!(*receiver.refused_once.lock().unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn ctrl_c_tells_participants_and_exits_cleanly() {
    let mut server = TestServer::start();
    let a = Client::connect(
        &server.url,
        &server.token("bye", "alice", "staff"),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-INT", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    a.wait_for(
        "the shutdown notice",
        WAIT,
        left_with(LeaveReason::ServerShutdown),
    )
    .await
    .unwrap();
    let exit = server
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("souk exits");
    assert!(exit.success(), "clean exit, got {exit:?}");
}

#[tokio::test]
async fn tls_serves_https_with_the_given_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("souk-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let server = TestServer::start_with(&["--tls-cert", cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()]);
    assert!(server.url.starts_with("https://"), "{}", server.url);

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let body = trusting.get(format!("{}/healthz", server.url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "ok");
    let page = trusting.get(format!("{}/demo/consult.html", server.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::get(format!("http://{}/healthz", server.http.trim_start_matches("https://"))).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let _ = std::fs::remove_dir_all(dir);
}
