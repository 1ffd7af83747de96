//! Two and more bots exchanging real WebRTC media through the real server.

mod common;

use common::{TestServer, WAIT};
use souk_client::{Client, ClientOptions, SyntheticMedia};
use souk_proto::model::TrackKind;
use souk_proto::signal::ServerMessage;

#[tokio::test]
async fn two_bots_exchange_audio_and_video() {
    let server = TestServer::start();
    let a = server.bot("duo", "alice", "staff").await;
    let b = server.bot("duo", "bob", "shopper").await;
    a.publish(SyntheticMedia::default()).await.unwrap();
    b.publish(SyntheticMedia::default()).await.unwrap();

    for (name, bot, other) in [("alice", &a, &b), ("bob", &b, &a)] {
        let other_sid = other.participant().sid.clone();
        let stats = bot
            .wait_for(&format!("{name} to receive video and audio"), WAIT, |s| {
                s.frames_of(TrackKind::Video) >= 30 && s.frames_of(TrackKind::Audio) >= 25
            })
            .await
            .unwrap();
        assert!(
            stats
                .tracks
                .values()
                .all(|t| t.participant_sid == other_sid),
            "{name} only gets the other's tracks"
        );
        let video = stats
            .tracks
            .values()
            .find(|t| t.kind == Some(TrackKind::Video))
            .unwrap();
        assert!(video.keyframes >= 1, "{name}'s video started at a keyframe");
        assert!(video.bytes > 30 * 1000, "{name} got real payloads");
    }
}

#[tokio::test]
async fn many_subscribers_receive_one_publisher() {
    let server = TestServer::start();
    let host = server.bot("live", "host", "host").await;
    host.publish(SyntheticMedia {
        audio: true,
        video: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut viewers = Vec::new();
    for i in 0..4 {
        let token = server.token("live", &format!("viewer-{i}"), "audience");
        viewers.push(
            Client::connect(&server.url, &token, ClientOptions::default())
                .await
                .unwrap(),
        );
    }
    for (i, v) in viewers.iter().enumerate() {
        v.wait_for(&format!("viewer {i} to receive video"), WAIT, |s| {
            s.frames_of(TrackKind::Video) >= 30
        })
        .await
        .unwrap();
    }
    // The audience may not publish.
    let err = viewers[0]
        .publish(SyntheticMedia::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission_denied"), "{err}");
}

#[tokio::test]
async fn leaving_is_announced_and_cleans_up() {
    let server = TestServer::start();
    let a = server.bot("bye", "alice", "staff").await;
    let b = server.bot("bye", "bob", "staff").await;
    a.publish(SyntheticMedia::default()).await.unwrap();
    b.wait_for("bob to receive video", WAIT, |s| {
        s.frames_of(TrackKind::Video) >= 10
    })
    .await
    .unwrap();
    let alice_sid = a.participant().sid.clone();
    a.leave().await;
    b.wait_for("alice's departure", WAIT, |s| {
        s.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::ParticipantLeft(l) if l.sid == alice_sid))
            && s.messages
                .iter()
                .any(|m| matches!(m, ServerMessage::TrackUnpublished(_)))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_publisher_mutes_and_unpublishes_its_own_tracks() {
    use souk_proto::signal::{ClientMessage, Mute, TrackRef};
    let server = TestServer::start();
    let host = server.bot("own", "host", "host").await;
    let tracks = host.publish(SyntheticMedia::default()).await.unwrap();
    let viewer = server.bot("own", "viewer", "audience").await;
    viewer
        .wait_for("video", WAIT, |s| s.frames_of(TrackKind::Video) >= 10)
        .await
        .unwrap();
    let audio = tracks
        .iter()
        .find(|t| t.kind == TrackKind::Audio)
        .unwrap()
        .track_id
        .clone();
    let video = tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video)
        .unwrap()
        .track_id
        .clone();

    host.send(ClientMessage::Mute(Mute {
        req: None,
        track_id: audio.clone(),
        muted: true,
    }))
    .await
    .unwrap();
    viewer
        .wait_for("the mute", WAIT, |s| {
            s.messages.iter().any(
                |m| matches!(m, ServerMessage::TrackMuted(t) if t.track_id == audio && t.muted),
            )
        })
        .await
        .unwrap();
    // A muted track is not forwarded.
    let muted_at = viewer.stats().frames_of(TrackKind::Audio);
    let later = viewer
        .wait_for("more video", WAIT, |s| s.frames_of(TrackKind::Video) >= 60)
        .await
        .unwrap();
    assert!(
        later.frames_of(TrackKind::Audio) <= muted_at + 2,
        "muted audio stopped flowing"
    );

    host.send(ClientMessage::Unpublish(TrackRef {
        req: None,
        track_id: video.clone(),
    }))
    .await
    .unwrap();
    viewer
        .wait_for("the unpublish", WAIT, |s| {
            s.messages
                .iter()
                .any(|m| matches!(m, ServerMessage::TrackUnpublished(t) if t.track_id == video))
        })
        .await
        .unwrap();
    // The subscriber connection was renegotiated without the track.
    viewer
        .wait_for("an offer without the video", WAIT, |s| {
            s.messages.iter().rev().find_map(|m| match m {
                ServerMessage::SubscriberOffer(o) => {
                    Some(o.tracks.iter().all(|t| t.track_id != video))
                }
                _ => None,
            }) == Some(true)
        })
        .await
        .unwrap();
}

/// The cheap receiver load generators use: packets counted against their sequence
/// numbers, and each synthetic payload's trip time recorded.
#[tokio::test]
async fn a_packet_receiver_counts_loss_and_latency() {
    let server = TestServer::start();
    let host = server.bot("counted", "host", "host").await;
    host.publish(SyntheticMedia {
        simulcast: true,
        video_kbps: 1000,
        ..Default::default()
    })
    .await
    .unwrap();
    let token = server.token("counted", "viewer", "audience");
    let viewer = Client::connect(
        &server.url,
        &token,
        ClientOptions {
            receive_packets: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Loopback loses nothing for good: a gap is a retransmission still on its way, so
    // wait for one moment with every packet in the sequence range counted.
    let stats = viewer
        .wait_for(
            "60 video frames and 50 audio packets, none missing",
            WAIT,
            |s| {
                s.frames_of(TrackKind::Video) >= 60
                    && s.frames_of(TrackKind::Audio) >= 50
                    && s.tracks.values().all(|t| t.packets >= t.packets_expected)
            },
        )
        .await
        .unwrap();
    for t in stats.tracks.values() {
        // Every frame is at least one packet of the sequence range.
        assert!(
            t.packets_expected >= t.frames && t.frames > 0,
            "{:?}: {} packets expected for {} frames",
            t.kind,
            t.packets_expected,
            t.frames
        );
    }
    // Every audio packet and the first packet of every video frame carry a stamp.
    assert!(
        stats.latency.count() >= 110,
        "{} stamps",
        stats.latency.count()
    );
    let p50 = stats.latency.quantile_ms(0.5).unwrap();
    assert!(p50 < 1000.0, "median trip {p50} ms on loopback");
}

/// The UDP port of the server's first host candidate in the subscriber offers `client`
/// received: which media engine serves its room.
fn media_port_of(client: &Client) -> Option<u16> {
    client.stats().messages.iter().find_map(|m| match m {
        ServerMessage::SubscriberOffer(offer) => offer.sdp.lines().find_map(|line| {
            let fields: Vec<&str> = line.strip_prefix("a=candidate:")?.split(' ').collect();
            (fields.get(2)?.eq_ignore_ascii_case("udp"))
                .then(|| fields.get(5)?.parse().ok())
                .flatten()
        }),
        _ => None,
    })
}

#[tokio::test]
async fn rooms_spread_over_media_engines_and_media_flows_in_each() {
    let server = TestServer::start_with(&["--media-threads", "2"]);
    let rooms = ["north", "south", "east", "west"];
    let mut calls = Vec::new();
    for room in rooms {
        let host = server.bot(room, "host", "host").await;
        host.publish(SyntheticMedia::default()).await.unwrap();
        let viewer = server.bot(room, "viewer", "audience").await;
        calls.push((room, host, viewer));
    }
    let mut ports = std::collections::BTreeSet::new();
    for (room, _host, viewer) in &calls {
        viewer
            .wait_for(
                &format!("the viewer in {room} to receive video"),
                WAIT,
                |s| s.frames_of(TrackKind::Video) >= 30,
            )
            .await
            .unwrap();
        ports.insert(media_port_of(viewer).expect("a candidate in the offer"));
    }
    assert_eq!(ports.len(), 2, "both engines serve rooms: {ports:?}");

    // The room list and the metrics count every engine's rooms.
    let (status, list) = common::Api::new(&server)
        .call(reqwest::Method::GET, "/rooms", None)
        .await;
    assert_eq!(status, 200);
    let mut listed: Vec<&str> = list["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, ["east", "north", "south", "west"]);
    assert_eq!(common::gauge(&server, "souk_rooms").await, 4);
    assert_eq!(common::gauge(&server, "souk_participants").await, 8);
}

/// Anyone can open connections to the media port, and there are only so many places.
/// A connection that passes no session's ICE check (idle, or sending STUN for a ufrag no
/// session has) is closed once the allowed time is up. (A browser's connection, which
/// passes its check, stays: the ICE-TCP browser test runs with the same short limit.)
#[tokio::test]
async fn ice_tcp_connections_that_pass_no_ice_check_are_closed() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(&["--ice-tcp-check-within", "1s"]);
    let media = format!("127.0.0.1:{}", server.media_port);
    let idle = tokio::net::TcpStream::connect(&media).await.unwrap();
    let talker = tokio::net::TcpStream::connect(&media).await.unwrap();
    let (mut talker_reads, mut talker_writes) = talker.into_split();
    let frame = framed_stun_binding_request("nosuchufrag:someone");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tick.tick().await;
            if talker_writes.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let (mut idle_reads, _idle_writes) = idle.into_split();
    for (name, reads) in [("idle", &mut idle_reads), ("talking", &mut talker_reads)] {
        assert!(
            closed_by_server(reads).await,
            "the {name} connection is closed by the server"
        );
    }
}

/// Whether the server closes the connection within [`WAIT`] (what it sends meanwhile is
/// read and dropped).
async fn closed_by_server(reads: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    let closed = async {
        while let Ok(n) = reads.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, closed).await.is_ok()
}

/// A STUN binding request carrying only a USERNAME, with the RFC 4571 length in front.
fn framed_stun_binding_request(username: &str) -> Vec<u8> {
    let padded = username.len().div_ceil(4) * 4;
    let mut stun = vec![0x00, 0x01];
    stun.extend(((4 + padded) as u16).to_be_bytes());
    stun.extend([0x21, 0x12, 0xa4, 0x42]);
    stun.extend([7u8; 12]); // transaction id
    stun.extend([0x00, 0x06]);
    stun.extend((username.len() as u16).to_be_bytes());
    stun.extend(username.as_bytes());
    stun.resize(20 + 4 + padded, 0);
    let mut framed = (stun.len() as u16).to_be_bytes().to_vec();
    framed.extend(stun);
    framed
}

/// One address may hold only its share of the ICE-TCP places: past 64 connections, the
/// next is closed at once, and the 64 stay open.
#[tokio::test]
async fn one_address_cannot_take_every_ice_tcp_place() {
    let server = TestServer::start_with(&["--ice-tcp-check-within", "1h"]);
    let media = format!("127.0.0.1:{}", server.media_port);
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(tokio::net::TcpStream::connect(&media).await.unwrap());
    }
    let mut one_more = tokio::net::TcpStream::connect(&media).await.unwrap();
    assert!(
        closed_by_server(&mut one_more).await,
        "the 65th connection is closed"
    );
    // The server accepts in order, so it had taken the 64 before refusing the 65th.
    for (i, stream) in held.iter().enumerate() {
        let mut buf = [0u8; 16];
        let still_open = matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(still_open, "connection {i} is still open");
    }
}
