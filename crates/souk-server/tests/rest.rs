//! The room-service REST API, webhooks and graceful shutdown, against the real server.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, TestServer, WAIT};
use reqwest::Method;
use souk_client::{Client, ClientOptions, SyntheticMedia};
use souk_proto::model::LeaveReason;
use souk_proto::signal::ServerMessage;

use common::{Api, KEY};

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
    let api = Api::new(&server);

    let (status, body) = api
        .send(api.http.get(format!("{}/rooms", api.base)), None)
        .await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = api
        .send(
            api.http
                .get(format!("{}/rooms", api.base))
                .basic_auth(KEY, Some("wrong")),
            None,
        )
        .await;
    assert_eq!(status, 401);

    let room = serde_json::json!({"name": "sale-42", "max_participants": 2, "metadata": "{\"sku\":\"A1\"}"});
    let (status, body) = api.call(Method::POST, "/rooms", Some(room.clone())).await;
    assert_eq!(status, 201);
    assert_eq!(body["name"], "sale-42");
    assert!(body["sid"].as_str().unwrap().starts_with("RM_"));
    let (status, body) = api.call(Method::POST, "/rooms", Some(room)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("room_exists")));
    let (status, body) = api
        .call(Method::POST, "/rooms", Some(serde_json::json!({"nme": 1})))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );

    let a = server.bot("sale-42", "alice", "host").await;
    let _b = server.bot("sale-42", "bob", "audience").await;
    let full = Client::connect(
        &server.url,
        &server.token("sale-42", "carol", "audience"),
        ClientOptions::default(),
    )
    .await;
    assert!(full.err().unwrap().to_string().contains("room_full"));

    let (_, list) = api.call(Method::GET, "/rooms", None).await;
    assert_eq!(list["rooms"][0]["num_participants"], 2);
    let (_, people) = api
        .call(Method::GET, "/rooms/sale-42/participants", None)
        .await;
    let identities: Vec<&str> = people["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(identities, ["alice", "bob"]);
    let (status, body) = api
        .call(Method::GET, "/rooms/nope/participants", None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("room_not_found"))
    );

    let (status, _) = api.call(Method::DELETE, "/rooms/sale-42", None).await;
    assert_eq!(status, 204);
    a.wait_for(
        "alice to be told the room closed",
        WAIT,
        left_with(LeaveReason::RoomDeleted),
    )
    .await
    .unwrap();
    let (_, list) = api.call(Method::GET, "/rooms", None).await;
    assert_eq!(list["rooms"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn moderators_remove_participants_and_mute_tracks() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let host = server.bot("mod", "host", "host").await;
    let tracks = host.publish(SyntheticMedia::default()).await.unwrap();
    let troll = server.bot("mod", "troll", "audience").await;

    let video = tracks
        .iter()
        .find(|t| t.kind == souk_proto::model::TrackKind::Video)
        .unwrap();
    let mute = Some(serde_json::json!({"muted": true}));
    let (status, _) = api
        .call(
            Method::POST,
            &format!(
                "/rooms/mod/participants/host/tracks/{}/mute",
                video.track_id
            ),
            mute.clone(),
        )
        .await;
    assert_eq!(status, 204);
    for (who, c) in [("host", &host), ("troll", &troll)] {
        c.wait_for(&format!("{who} to see the mute"), WAIT, |s| {
            s.messages
                .iter()
                .any(|m| matches!(m, ServerMessage::TrackMuted(t) if t.muted))
        })
        .await
        .unwrap();
    }
    let (_, body) = api
        .call(
            Method::POST,
            "/rooms/mod/participants/host/tracks/TR_x/mute",
            mute,
        )
        .await;
    assert_eq!(body["code"], "track_not_found");

    let (status, _) = api
        .call(Method::DELETE, "/rooms/mod/participants/troll", None)
        .await;
    assert_eq!(status, 204);
    troll
        .wait_for(
            "the troll to be removed",
            WAIT,
            left_with(LeaveReason::Removed),
        )
        .await
        .unwrap();
    let (_, body) = api
        .call(Method::DELETE, "/rooms/mod/participants/troll", None)
        .await;
    assert_eq!(body["code"], "participant_not_found");
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

#[tokio::test]
async fn webhooks_are_signed_retried_and_cover_the_lifecycle() {
    let (url, receiver) = start_receiver().await;
    let server = TestServer::start_with_config(&format!("[webhooks]\nurls = [\"{url}\"]\n"));

    let a = server.bot("hooks", "alice", "staff").await;
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
        assert!(
            common::verify_signature(sig, body),
            "signature verifies for {body}"
        );
        let event: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(event["id"].as_str().unwrap().starts_with("EV_"));
    }
    // The refused first delivery was retried: room_started arrived anyway.
    assert!(*receiver.refused_once.lock().unwrap());
}

#[tokio::test]
async fn ctrl_c_tells_participants_and_exits_cleanly() {
    let mut server = TestServer::start();
    let a = server.bot("bye", "alice", "staff").await;
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
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("souk-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let server = TestServer::start_with(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    assert!(server.url.starts_with("https://"), "{}", server.url);

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let body = trusting
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "ok");
    let page = trusting
        .get(format!("{}/demo/consult.html", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::get(format!(
        "http://{}/healthz",
        server.http.trim_start_matches("https://")
    ))
    .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let server = TestServer::start_with_config("cors_origins = [\"https://shop.example\"]\n");
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(Method::OPTIONS, format!("{}/api/v1/rooms", server.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "https://shop.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

/// WHIP and WHEP offers that are not SDP get `400 invalid_sdp`, with the line that is
/// wrong and nothing of the server's memory.
#[tokio::test]
async fn whip_and_whep_offers_that_do_not_parse_name_the_line() {
    let server = TestServer::start();
    let http = reqwest::Client::new();
    // The WHIP handler's own scan finds an audio section with a mid; the SDP parser then
    // stops at the `t=` line, which must come after `s=`.
    let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\nt=0 0\r\ns=-\r\n\
                 m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n";
    for (path, role) in [("whip", "host"), ("whep", "audience")] {
        let token = server.token("sdp-check", &format!("{path}-sender"), role);
        let resp = http
            .post(format!("{}/{path}/sdp-check", server.url))
            .bearer_auth(token)
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "invalid_sdp", "{path}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("line 3 (`t=0 0`)"), "{path}: {message}");
        assert!(!message.contains("0x"), "{path}: {message}");
    }
}
