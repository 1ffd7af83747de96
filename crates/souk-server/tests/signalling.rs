//! Bad input on the signalling socket: each gets a clear error or a clean close, the
//! server stays up, other rooms carry on, and nothing is left behind.

mod common;

use common::{eventually, gauge, upgrade_request, RawSignal, TestServer, WAIT};
use souk_client::{Client, ClientOptions, SyntheticMedia};
use souk_proto::model::TrackKind;

#[tokio::test]
async fn each_token_failure_has_its_own_code() {
    let server = TestServer::start();
    let valid = server.token("room-a", "alice", "shopper");
    let expired = forge_expired();
    let cases: Vec<(String, serde_json::Value, &str)> = vec![
        (
            "missing".into(),
            serde_json::json!({"type":"join","protocol":1,"token":""}),
            "token_missing",
        ),
        (
            "garbage".into(),
            serde_json::json!({"type":"join","protocol":1,"token":"not-a-jwt"}),
            "token_malformed",
        ),
        (
            "forged".into(),
            serde_json::json!({"type":"join","protocol":1,"token": forge_signature(&valid)}),
            "token_invalid_signature",
        ),
        (
            "expired".into(),
            serde_json::json!({"type":"join","protocol":1,"token": expired}),
            "token_expired",
        ),
        (
            "wrong room".into(),
            serde_json::json!({"type":"join","protocol":1,"token": valid, "room": "room-b"}),
            "token_wrong_room",
        ),
        (
            "old protocol".into(),
            serde_json::json!({"type":"join","protocol":99,"token": valid}),
            "unsupported_protocol",
        ),
    ];
    for (name, join, code) in cases {
        let mut ws = RawSignal::connect(&server).await;
        ws.send_text(join.to_string()).await;
        assert_eq!(ws.next_error().await, code, "{name}");
        assert!(
            ws.closed().await,
            "{name}: the socket closes after a refused join"
        );
    }
    assert_eq!(gauge(&server, "souk_participants").await, 0);
}

/// A token for the dev key whose exp lies an hour in the past.
fn forge_expired() -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = engine.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = engine.encode(serde_json::json!({"iss":"devkey","sub":"alice","iat":now-7200,"exp":now-3600,"room":"room-a","role":"shopper"}).to_string());
    let input = format!("{header}.{claims}");
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(b"souk-dev-secret-0123456789abcdef").unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", engine.encode(mac.finalize().into_bytes()))
}

/// The same claims with the signature of another secret.
fn forge_signature(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let sig = parts[2].clone();
    let flipped = if sig.starts_with('A') {
        sig.replacen('A', "B", 1)
    } else {
        format!("A{}", &sig[1..])
    };
    parts[2] = flipped;
    parts.join(".")
}

#[tokio::test]
async fn malformed_messages_get_errors_and_the_session_carries_on() {
    let server = TestServer::start();
    let mut ws = RawSignal::connect(&server).await;
    ws.join(&server.token("r", "alice", "staff")).await;

    ws.send_text("{not json").await;
    assert_eq!(ws.next_error().await, "malformed_message");
    ws.send_text(r#"{"type":"teleport"}"#).await;
    assert_eq!(ws.next_error().await, "unknown_message_type");
    ws.send_text(r#"{"type":"mute","track_id":42}"#).await;
    assert_eq!(ws.next_error().await, "malformed_message");
    ws.send_text(r#"{"type":"mute","track_id":"TR_nope","muted":true,"req":7}"#)
        .await;
    let err = ws.next_of("error").await;
    assert_eq!(
        (err["code"].as_str(), err["req"].as_u64()),
        (Some("track_not_found"), Some(7)),
        "errors echo req"
    );
    ws.send_binary(vec![1, 2, 3]).await;
    assert_eq!(ws.next_error().await, "malformed_message");
    ws.send_text(format!(
        r#"{{"type":"ping","ts":1,"pad":"{}"}}"#,
        "x".repeat(100_000)
    ))
    .await;
    assert_eq!(ws.next_error().await, "message_too_large");
    ws.send_text(r#"{"type":"publish_offer","sdp":"v=0 garbage","tracks":[]}"#)
        .await;
    assert_eq!(ws.next_error().await, "invalid_sdp");
    ws.send_text(r#"{"type":"subscriber_answer","sdp":"v=0"}"#)
        .await;
    assert_eq!(ws.next_error().await, "invalid_state");
    ws.send_text(r#"{"type":"join","protocol":1,"token":"x"}"#)
        .await;
    assert_eq!(ws.next_error().await, "invalid_state");

    // Still joined and answering.
    ws.send_text(r#"{"type":"ping","ts":99}"#).await;
    assert_eq!(ws.next_of("pong").await["ts"], 99);
}

#[tokio::test]
async fn a_frame_past_the_socket_limit_closes_only_that_socket() {
    let server = TestServer::start();
    let mut ws = RawSignal::connect(&server).await;
    ws.join(&server.token("r", "alice", "staff")).await;
    ws.send_text("x".repeat(1024 * 1024)).await;
    assert!(ws.closed().await);
    let mut other = RawSignal::connect(&server).await;
    other.join(&server.token("r", "bob", "staff")).await;
}

#[tokio::test]
async fn the_first_message_must_be_join() {
    let server = TestServer::start();
    let mut ws = RawSignal::connect(&server).await;
    ws.send_text(r#"{"type":"ping","ts":1}"#).await;
    assert_eq!(ws.next_error().await, "invalid_state");
    assert!(ws.closed().await);
}

#[tokio::test]
async fn a_message_flood_is_throttled_then_cut() {
    let server = TestServer::start();
    let mut ws = RawSignal::connect(&server).await;
    ws.join(&server.token("r", "flooder", "staff")).await;

    // A burst past the allowance (50) is throttled, message by message, and every
    // refusal names the request it refuses, so a client knows which one to retry.
    for i in 0..80 {
        ws.send_text(format!(r#"{{"type":"lower_hand","req":{i}}}"#))
            .await;
    }
    let mut answered = std::collections::BTreeMap::new();
    while answered.len() < 80 {
        let msg = ws
            .next()
            .await
            .expect("the socket stays open while throttled");
        if let Some(req) = msg["req"].as_u64() {
            let limited = msg["type"] == "error" && msg["code"] == "rate_limited";
            assert!(
                answered.insert(req, limited).is_none(),
                "req {req} answered twice"
            );
        }
    }
    let limited = answered.values().filter(|l| **l).count();
    assert!(
        answered.len() - limited >= 50 && limited > 0,
        "{answered:?}"
    );

    // Keeping it up gets the socket cut.
    for i in 0..1000 {
        ws.send_text(format!(r#"{{"type":"ping","ts":{i}}}"#)).await;
    }
    eventually("the flooder's session to be dropped", || async {
        gauge(&server, "souk_signal_sessions").await == 0
    })
    .await;
}

#[tokio::test]
async fn a_join_flood_from_one_address_is_refused_while_other_rooms_carry_on() {
    let server = TestServer::start();
    let host = server.bot("calm", "host", "host").await;
    host.publish(SyntheticMedia::default()).await.unwrap();
    let viewer = server.bot("calm", "viewer", "audience").await;
    viewer
        .wait_for("the viewer to receive video", WAIT, |s| {
            s.frames_of(TrackKind::Video) >= 10
        })
        .await
        .unwrap();

    let client = reqwest::Client::new();
    let mut refused = 0;
    for _ in 0..60 {
        let resp = upgrade_request(&client, &server).send().await.unwrap();
        if resp.status() == 429 {
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["code"], "rate_limited");
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "a burst of 60 joins from one address is partly refused"
    );

    let before = viewer.stats().frames_of(TrackKind::Video);
    viewer
        .wait_for("the other room's video to keep flowing", WAIT, |s| {
            s.frames_of(TrackKind::Video) >= before + 30
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_that_vanishes_mid_negotiation_is_cleaned_up() {
    let server = TestServer::start_with(&["--resume-window", "2s"]);
    let watcher = server.bot("r", "watcher", "staff").await;
    {
        let mut ws = RawSignal::connect(&server).await;
        ws.join(&server.token("r", "ghost", "staff")).await;
        // A real offer, then gone before the answer is read.
        let offer = include_str!("data/chrome-offer.sdp");
        ws.send_text(serde_json::json!({"type":"publish_offer","sdp": offer, "tracks":[{"mid":"0","kind":"audio"}]}).to_string()).await;
    }
    watcher
        .wait_for("the ghost to be announced gone", WAIT, |s| {
            s.messages.iter().any(|m| matches!(m, souk_proto::signal::ServerMessage::ParticipantLeft(l) if l.identity == "ghost"))
        })
        .await
        .unwrap();
    assert_eq!(gauge(&server, "souk_participants").await, 1);
}

#[tokio::test]
async fn many_joins_and_leaves_leave_nothing_behind() {
    let server = TestServer::start();
    let host = server.bot("churn", "host", "host").await;
    host.publish(SyntheticMedia::default()).await.unwrap();
    for round in 0..10 {
        let c = Client::connect(
            &server.url,
            &server.token("churn", &format!("guest-{round}"), "audience"),
            ClientOptions::default(),
        )
        .await
        .unwrap();
        c.wait_for("video", WAIT, |s| s.frames_of(TrackKind::Video) > 0)
            .await
            .unwrap();
        c.leave().await;
    }
    eventually("only the host to remain", || async {
        gauge(&server, "souk_participants").await == 1
            && gauge(&server, "souk_signal_sessions").await == 1
    })
    .await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_join_limit_applies_per_real_client() {
    let server = TestServer::start_with_config("trusted_proxies = [\"127.0.0.1\"]\n");
    let client = reqwest::Client::new();
    let upgrade = |forwarded_for: String| {
        upgrade_request(&client, &server)
            .header("x-forwarded-for", forwarded_for)
            .send()
    };
    // Sixty shoppers arriving through the proxy at once: none is throttled.
    for i in 0..60 {
        let resp = upgrade(format!("203.0.113.{i}")).await.unwrap();
        assert_eq!(resp.status(), 101, "shopper {i}");
    }
    // One of them flooding is still throttled.
    let mut refused = 0;
    for _ in 0..60 {
        if upgrade("198.51.100.7".into()).await.unwrap().status() == 429 {
            refused += 1;
        }
    }
    assert!(refused > 0);
}
