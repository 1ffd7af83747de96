//! Session behaviour: active speakers, selective subscription, token expiry versus live
//! sessions and resuming, and configuration errors at start.

mod common;

use std::process::Command;

use common::{eventually, metrics, RawSignal, TestServer, WAIT};
use souk_client::{Client, ClientOptions, SyntheticMedia};
use souk_proto::model::TrackKind;
use souk_proto::signal::{ClientMessage, ServerMessage, Subscribe};

#[tokio::test]
async fn the_loud_participant_is_the_active_speaker() {
    let server = TestServer::start();
    let loud = server.bot("talk", "loud", "staff").await;
    let quiet = server.bot("talk", "quiet", "staff").await;
    let listener = server.bot("talk", "listener", "staff").await;
    loud.publish(SyntheticMedia {
        video: false,
        audio_level: 10,
        ..Default::default()
    })
    .await
    .unwrap();
    quiet
        .publish(SyntheticMedia {
            video: false,
            audio_level: 127,
            ..Default::default()
        })
        .await
        .unwrap();
    let (loud_sid, quiet_sid) = (
        loud.participant().sid.clone(),
        quiet.participant().sid.clone(),
    );
    let stats = listener
        .wait_for("an active-speaker list naming the loud one", WAIT, |s| {
            s.messages.iter().any(|m| matches!(m, ServerMessage::ActiveSpeakers(a) if a.speakers.first().is_some_and(|sp| sp.sid == loud_sid)))
        })
        .await
        .unwrap();
    for m in &stats.messages {
        if let ServerMessage::ActiveSpeakers(a) = m {
            assert!(
                a.speakers.iter().all(|s| s.sid != quiet_sid),
                "silence never counts as speaking"
            );
        }
    }
}

#[tokio::test]
async fn without_auto_subscribe_only_requested_tracks_arrive() {
    let server = TestServer::start();
    let host = server.bot("pick", "host", "host").await;
    let tracks = host.publish(SyntheticMedia::default()).await.unwrap();
    let options = ClientOptions {
        auto_subscribe: false,
        ..Default::default()
    };
    let picky = Client::connect(
        &server.url,
        &server.token("pick", "picky", "audience"),
        options,
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(picky.stats().tracks.is_empty(), "nothing arrives unasked");

    let video = tracks.iter().find(|t| t.kind == TrackKind::Video).unwrap();
    picky
        .send(ClientMessage::Subscribe(Subscribe {
            req: None,
            track_ids: vec![video.track_id.clone()],
            subscribe: true,
        }))
        .await
        .unwrap();
    let stats = picky
        .wait_for("the chosen video", WAIT, |s| {
            s.frames_of(TrackKind::Video) >= 20
        })
        .await
        .unwrap();
    assert_eq!(
        stats.frames_of(TrackKind::Audio),
        0,
        "audio was not asked for"
    );
}

#[tokio::test]
async fn an_expired_token_does_not_end_a_live_session_and_the_refreshed_one_resumes() {
    let server = TestServer::start();
    let short = common::token(&[
        "--room",
        "long-sale",
        "--identity",
        "host",
        "--role",
        "host",
        "--ttl",
        "2s",
    ]);
    let mut ws = RawSignal::connect(&server).await;
    let joined = ws.join(&short).await;
    let refreshed = ws.next_of("refresh_token").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    ws.send_text(r#"{"type":"ping","ts":5}"#).await;
    assert_eq!(
        ws.next_of("pong").await["ts"],
        5,
        "the session outlives its token"
    );
    drop(ws);

    let resume = serde_json::json!({"sid": joined["participant"]["sid"], "resume_secret": joined["resume_secret"]});
    let mut ws = RawSignal::connect(&server).await;
    ws.send_text(
        serde_json::json!({"type":"join","protocol":1,"token": short, "resume": resume})
            .to_string(),
    )
    .await;
    assert_eq!(
        ws.next_error().await,
        "token_expired",
        "an expired token cannot resume"
    );
    let mut ws = RawSignal::connect(&server).await;
    ws.send_text(
        serde_json::json!({"type":"join","protocol":1,"token": refreshed, "resume": resume})
            .to_string(),
    )
    .await;
    let resumed = ws.next_of("resumed").await;
    assert_eq!(resumed["participant"]["sid"], joined["participant"]["sid"]);

    let mut ws = RawSignal::connect(&server).await;
    let wrong = serde_json::json!({"sid": joined["participant"]["sid"], "resume_secret": "guess"});
    ws.send_text(
        serde_json::json!({"type":"join","protocol":1,"token": refreshed, "resume": wrong})
            .to_string(),
    )
    .await;
    assert_eq!(
        ws.next_error().await,
        "session_not_found",
        "a wrong secret cannot take over a session"
    );
}

#[test]
fn serving_without_configuration_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_souk"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--config") && stderr.contains("--dev"),
        "{stderr}"
    );

    let dir = std::env::temp_dir().join(format!("souk-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (text, expect) in [
        ("[keys]\nshop = \"short\"\n", "shorter than 32"),
        ("bind = \"nonsense\"\n", "invalid configuration"),
        ("colour = 1\n", "unknown field"),
    ] {
        let path = dir.join("souk.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_souk"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "expected '{expect}' in: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn subscribers_are_told_their_connection_quality_and_it_is_exported() {
    let server = TestServer::start();
    let host = server.bot("q", "host", "host").await;
    host.publish(SyntheticMedia::default()).await.unwrap();
    let viewer = server.bot("q", "viewer", "audience").await;
    let stats = viewer
        .wait_for("a connection-quality grade", WAIT, |s| {
            s.messages
                .iter()
                .any(|m| matches!(m, ServerMessage::ConnectionQuality(_)))
        })
        .await
        .unwrap();
    let quality = stats
        .messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::ConnectionQuality(q) => Some(q.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        quality.quality,
        souk_proto::model::QualityGrade::Excellent,
        "loopback: {quality:?}"
    );
    assert!(quality.mos > 4.0 && quality.loss < 0.01, "{quality:?}");
    let sid = viewer.participant().sid.clone();
    let page = metrics(&server).await;
    assert!(
        page.lines()
            .any(|l| l.starts_with("souk_participant_mos{") && l.contains(&sid)),
        "{page}"
    );
    // What the viewer is sent: the video's bitrate (500 kbps synthetic, one layer) once
    // two stats reports are in, and the layer it gets.
    eventually("the viewer's bitrate and layer in /metrics", || async {
        let page = metrics(&server).await;
        let bitrate = metric_for(&page, "souk_participant_send_bitrate_bps", &sid);
        let layer = metric_for(&page, "souk_subscription_layer", &sid);
        bitrate.is_some_and(|b| b > 200_000.0) && layer == Some(0.0)
    })
    .await;
    // The delay the server added to what it forwarded, counted per datagram sent.
    let page = metrics(&server).await;
    let sent = page
        .lines()
        .find_map(|l| l.strip_prefix("souk_media_forward_delay_seconds_count "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(sent.is_some_and(|n| n > 100), "{page}");
}

/// The value of metric `name` on the line labelled with participant `sid`.
fn metric_for(metrics: &str, name: &str, sid: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!("{name}{{")) && l.contains(&format!("participant=\"{sid}\""))
        })?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}
