//! Hostile input to the media core. Anyone can send UDP to the media port, a sender can
//! forge the source address of a connected peer, and any participant can send whatever
//! SDP it likes. Whatever arrives, the core must not panic, and a call in progress must
//! go on as if nothing came.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{join_request, Rng, Room, SERVER};
use souk_proto::model::{LayerInfo, TrackKind, TrackSource};
use souk_proto::signal::{ClientMessage, PublishOffer, PublishTrack, Req, ServerMessage};
use souk_proto::token::Role;
use str0m::media::{Direction, MediaKind, Simulcast, SimulcastLayer};
use str0m::net::Protocol;
use str0m::Rtc;

/// Hostile datagrams sent per 10 ms step: 200 a second, against ~60 real ones.
const PER_STEP: usize = 2;
const STEPS: usize = 500;
/// Frames the viewer must get in the 5 s of attack: the publisher sends 30 a second,
/// so this allows a third of a second of stall at most.
const FRAMES_WHILE_ATTACKED: u64 = 140;

#[test]
fn hostile_datagrams_neither_panic_nor_break_a_call() {
    for seed in 1..=4 {
        let mut call = Call::start(seed);
        let before = call.frames();
        assert!(before > 0, "seed {seed}: the call is up before the attack");

        let server: SocketAddr = SERVER.parse().unwrap();
        let forged = [
            call.room.clients[call.host].pub_addr,
            call.room.clients[call.viewer].sub_addr,
        ];
        let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9));
        for _ in 0..STEPS {
            let real = call.room.in_flight_to_server();
            for _ in 0..PER_STEP {
                let (from, data) = hostile(&mut rng, &forged, &real);
                call.room.enqueue(Protocol::Udp, from, server, data);
            }
            call.room.run_for(Duration::from_millis(10));
        }

        let during = call.frames() - before;
        assert!(
            during >= FRAMES_WHILE_ATTACKED,
            "seed {seed}: the viewer got {during} frames in 5 s of hostile traffic"
        );
        assert_eq!(
            call.room.sfu.participant_count(),
            2,
            "seed {seed}: nobody was dropped"
        );
    }
}

/// A host's video reaching a viewer, three seconds into the call.
struct Call {
    room: Room,
    host: usize,
    viewer: usize,
    track: String,
}

impl Call {
    fn start(seed: u64) -> Call {
        let mut room = Room::new(seed);
        let host = room.join("r", "host", Role::Staff);
        let viewer = room.join("r", "viewer", Role::Shopper);
        room.publish_video(host, false);
        room.run_for(Duration::from_secs(3));
        let track = room.published_tracks(host)[0].clone();
        Call {
            room,
            host,
            viewer,
            track,
        }
    }

    /// Video frames the viewer has received so far.
    fn frames(&self) -> u64 {
        self.room.clients[self.viewer]
            .received
            .get(&self.track)
            .map_or(0, |r| r.frames)
    }
}

/// Mangled offers, each from a participant of its own.
const OFFERS: usize = 120;

#[test]
fn mangled_offers_get_an_answer_or_an_error_and_the_room_goes_on() {
    let mut call = Call::start(5);

    // Each offer comes from a new participant, the first offer of its connection, who
    // joins the core directly (what it is told lands in `room.others`) and then leaves.
    let (offer, mids) = real_offer(call.room.now);
    let mut rng = Rng::new(17);
    let before = call.frames();
    let mut answered = 0;
    for n in 0..OFFERS {
        let mallory = call
            .room
            .sfu
            .join(
                call.room.now,
                join_request("r", &format!("mallory-{n}"), Role::Staff),
            )
            .expect("join accepted");
        let req = n as u32 + 1;
        let sdp = mangled_sdp(&mut rng, &offer);
        call.room.send_from(mallory, publish_offer(req, sdp, &mids));
        let reply = call.room.others.iter().find_map(|(id, msg)| match msg {
            ServerMessage::PublishAnswer(a) if *id == mallory && a.req == Some(req) => Some(None),
            ServerMessage::Error(e) if *id == mallory && e.req == Some(req) => Some(Some(e)),
            _ => None,
        });
        match reply {
            None => panic!("offer {n} got neither an answer nor an error"),
            Some(Some(error)) => assert!(
                !error.message.contains("0x") && !error.message.contains("Pointer"),
                "offer {n}: an error a person can act on, without server memory addresses: {}",
                error.message
            ),
            Some(None) => answered += 1,
        }
        call.room.run_for(Duration::from_millis(25));
        call.room
            .send_from(mallory, ClientMessage::Leave(Req { req: None }));
    }
    let during = call.frames() - before;
    // 3 s of the room's time at 30 frames a second; a third of a second of stall at most.
    assert!(
        during >= 80,
        "the viewer got {during} frames while the offers came"
    );
    assert_eq!(call.room.sfu.participant_count(), 2, "each sender left");
    // Some mangling leaves an offer str0m takes: those get answers and connections.
    assert!(
        (1..OFFERS).contains(&answered),
        "{answered} of {OFFERS} answered"
    );
}

/// A real offer, as a browser's SDK would send it: audio and three-layer video.
fn real_offer(now: Instant) -> (String, Vec<String>) {
    let mut rtc = Rtc::builder()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true)
        .build(now);
    let mut api = rtc.sdp_api();
    let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let mut simulcast = Simulcast::new();
    for rid in ["q", "h", "f"] {
        simulcast.add_send_layer(SimulcastLayer::new(rid));
    }
    let video = api.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        None,
        None,
        Some(simulcast),
    );
    let (offer, _) = api.apply().expect("an offer");
    (
        offer.to_sdp_string(),
        vec![audio.to_string(), video.to_string()],
    )
}

fn publish_offer(req: u32, sdp: String, mids: &[String]) -> ClientMessage {
    let track = |mid: &String, kind| PublishTrack {
        mid: mid.clone(),
        kind,
        source: TrackSource::Camera,
        name: String::new(),
        muted: false,
        width: 1280,
        height: 720,
        layers: ["q", "h", "f"]
            .iter()
            .map(|rid| LayerInfo {
                rid: (*rid).into(),
                width: 320,
                height: 180,
            })
            .collect(),
    };
    ClientMessage::PublishOffer(PublishOffer {
        req: Some(req),
        sdp,
        tracks: vec![
            track(&mids[0], TrackKind::Audio),
            track(&mids[1], TrackKind::Video),
        ],
    })
}

/// An offer with one to three of: a line dropped, doubled or swapped with another, a
/// number made absurd, the text cut short, or stray characters put in.
fn mangled_sdp(rng: &mut Rng, offer: &str) -> String {
    let mut lines: Vec<String> = offer.lines().map(str::to_owned).collect();
    for _ in 0..1 + rng.below(3) {
        if lines.is_empty() {
            break;
        }
        let i = rng.below(lines.len());
        match rng.below(6) {
            0 => {
                lines.remove(i);
            }
            1 => lines.insert(i, lines[i].clone()),
            2 => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
            }
            3 => {
                const ABSURD: [&str; 5] =
                    ["0", "-1", "65536", "4294967296", "99999999999999999999"];
                let absurd = ABSURD[rng.below(ABSURD.len())];
                let line = &lines[i];
                if let Some(start) = line.find(|c: char| c.is_ascii_digit()) {
                    let end = line[start..]
                        .find(|c: char| !c.is_ascii_digit())
                        .map_or(line.len(), |e| start + e);
                    lines[i] = format!("{}{absurd}{}", &line[..start], &line[end..]);
                }
            }
            4 => {
                let line = &mut lines[i];
                let cut = rng.below(line.len() + 1);
                line.truncate(line.floor_char_boundary(cut));
            }
            _ => {
                const STRAY: [&str; 6] = [":", " ", "=", "\0", "é", "\u{202e}"];
                let line = &mut lines[i];
                let at = line.floor_char_boundary(rng.below(line.len() + 1));
                line.insert_str(at, STRAY[rng.below(STRAY.len())]);
            }
        }
    }
    lines.join("\r\n") + "\r\n"
}

/// One hostile datagram and the address it claims to come from: a stranger's, or a
/// connected peer's (forged).
fn hostile(
    rng: &mut Rng,
    forged: &[SocketAddr],
    real: &[(SocketAddr, Vec<u8>)],
) -> (SocketAddr, Vec<u8>) {
    let stranger = SocketAddr::new(
        [10, 9, rng.below(256) as u8, rng.below(256) as u8].into(),
        1024 + rng.below(60_000) as u16,
    );
    let from = match rng.below(3) {
        0 => stranger,
        n => forged[n - 1],
    };
    let kind = rng.below(7);
    let data = match kind {
        0 => bytes(rng, 0, 1500),
        1 => stun_like(rng),
        2 => dtls_like(rng),
        3 => {
            let payload_type = 96 + rng.below(16) as u8;
            rtp_like(rng, payload_type)
        }
        4 => {
            let payload_type = 200 + rng.below(7) as u8;
            rtp_like(rng, payload_type)
        }
        5 => bytes(rng, 1500, 64_000),
        _ => match real.get(rng.below(real.len())) {
            // A real datagram from a peer, replayed as it is, cut short or bit-flipped,
            // from the address it came from.
            Some((source, data)) => return (*source, mangled(rng, data)),
            None => Vec::new(),
        },
    };
    (from, data)
}

/// `min` random bytes and up to `spread` more.
fn bytes(rng: &mut Rng, min: usize, spread: usize) -> Vec<u8> {
    let len = min + rng.below(spread);
    (0..len).map(|_| rng.below(256) as u8).collect()
}

/// A STUN header (binding request or response, the magic cookie), a length that may
/// lie, and random attributes.
fn stun_like(rng: &mut Rng) -> Vec<u8> {
    let body = bytes(rng, 0, 200);
    let claimed = if rng.below(2) == 0 {
        body.len()
    } else {
        rng.below(65_536)
    };
    let kind: [u8; 2] = [[0x00, 0x01], [0x01, 0x01], [0x01, 0x11]][rng.below(3)];
    let mut d = vec![kind[0], kind[1], (claimed >> 8) as u8, claimed as u8];
    d.extend([0x21, 0x12, 0xa4, 0x42]);
    d.extend(bytes(rng, 12, 1));
    d.extend(body);
    d
}

/// A DTLS 1.2 record header (handshake, alert, application data...) with a random body.
fn dtls_like(rng: &mut Rng) -> Vec<u8> {
    let body = bytes(rng, 0, 300);
    let content_type = 20 + rng.below(5) as u8;
    let mut d = vec![content_type, 0xfe, 0xfd];
    d.extend(bytes(rng, 8, 1)); // epoch and sequence number
    d.extend([(body.len() >> 8) as u8, body.len() as u8]);
    d.extend(body);
    d
}

/// An RTP (payload type below 128) or RTCP (200-206) header with a random rest.
fn rtp_like(rng: &mut Rng, payload_type: u8) -> Vec<u8> {
    let first = 0x80 | rng.below(64) as u8;
    let mut d = vec![first, payload_type];
    d.extend(bytes(rng, 10, 1200));
    d
}

fn mangled(rng: &mut Rng, real: &[u8]) -> Vec<u8> {
    let mut d = real.to_vec();
    match rng.below(3) {
        0 => {}
        1 => d.truncate(rng.below(d.len())),
        _ => {
            for _ in 0..1 + rng.below(4) {
                if !d.is_empty() {
                    let i = rng.below(d.len());
                    d[i] ^= 1 << rng.below(8);
                }
            }
        }
    }
    d
}
