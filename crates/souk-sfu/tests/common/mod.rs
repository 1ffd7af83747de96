//! A whole room in one thread: the [`Sfu`], str0m client peers, and a seeded simulated
//! network between them, all on simulated time. No sockets, no clock: a run is fast and
//! gives the same result every time.
#![allow(dead_code)] // each test file uses its own subset

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use souk_client::synthetic;
use souk_proto::model::{LayerInfo, TrackKind, TrackSource};
use souk_proto::signal::{
    ClientMessage, PublishOffer, PublishTrack, SdpMessage, ServerMessage, TrackSettings,
};
use souk_proto::token::Role;
use souk_sfu::{JoinRequest, Output, ParticipantId, Sfu, SfuConfig};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

pub const SERVER: &str = "10.0.0.1:7882";
const LAYERS: [(&str, u16, u16); 3] = [("q", 320, 180), ("h", 640, 360), ("f", 1280, 720)];

/// A deterministic pseudo-random source (xorshift), so a seed fixes a whole run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_f64() * n as f64) as usize
    }

    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Link conditions between clients and the server.
#[derive(Clone, Copy)]
pub struct Link {
    pub delay: Duration,
    pub loss: f64,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            delay: Duration::from_millis(10),
            loss: 0.0,
        }
    }
}

/// What a client received on one track.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub frames: u64,
    pub keyframes: u64,
    pub key_widths: Vec<u16>,
    pub first_is_key: Option<bool>,
}

/// A client's str0m peer and when it next wants the clock.
pub struct Peer {
    pub rtc: Rtc,
    addr: SocketAddr,
    timeout: Instant,
}

impl Peer {
    fn new(now: Instant, addr: SocketAddr) -> Peer {
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("valid candidate"));
        Peer {
            rtc,
            addr,
            timeout: now,
        }
    }
}

pub struct Client {
    pub id: ParticipantId,
    pub identity: String,
    pub publisher: Option<Peer>,
    pub subscriber: Option<Peer>,
    pub pub_addr: SocketAddr,
    pub sub_addr: SocketAddr,
    pending_publish: Option<SdpPendingOffer>,
    publishing: Option<(Mid, bool)>,
    frame: u64,
    next_frame: Instant,
    started: Instant,
    /// Subscriber mid -> track id.
    pub mids: HashMap<Mid, String>,
    pub received: BTreeMap<String, Received>,
    pub messages: Vec<ServerMessage>,
}

/// One datagram on the simulated wire.
pub struct Datagram {
    pub proto: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

pub struct Room {
    pub now: Instant,
    pub sfu: Sfu,
    pub clients: Vec<Client>,
    /// Signalling for participants that are not among `clients`.
    pub others: Vec<(ParticipantId, ServerMessage)>,
    net: Vec<(Instant, Protocol, SocketAddr, SocketAddr, Vec<u8>)>,
    pub link: Link,
    /// Size of each synthetic video frame (a benchmark picks one that fits a packet).
    pub frame_bytes: usize,
    rng: Rng,
    next_port: u16,
}

impl Room {
    pub fn new(seed: u64) -> Room {
        static CRYPTO: std::sync::Once = std::sync::Once::new();
        CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
        let now = Instant::now();
        let candidate = Candidate::host(SERVER.parse().unwrap(), "udp").unwrap();
        let config = SfuConfig::new(vec![candidate], seed);
        Room {
            now,
            sfu: Sfu::new(config, now, 1_700_000_000_000),
            clients: Vec::new(),
            others: Vec::new(),
            net: Vec::new(),
            link: Link::default(),
            frame_bytes: 1200,
            rng: Rng::new(seed),
            next_port: 10_000,
        }
    }

    /// Joins `identity` and returns its index in `clients`.
    pub fn join(&mut self, room: &str, identity: &str, role: Role) -> usize {
        let id = self
            .sfu
            .join(self.now, join_request(room, identity, role))
            .expect("join accepted");
        let n = self.clients.len() as u8 + 2;
        let pub_addr = SocketAddr::new([10, 0, 1, n].into(), self.next_port);
        let sub_addr = SocketAddr::new([10, 0, 2, n].into(), self.next_port + 1);
        self.next_port += 2;
        self.clients.push(Client {
            id,
            identity: identity.into(),
            publisher: None,
            subscriber: None,
            pub_addr,
            sub_addr,
            pending_publish: None,
            publishing: None,
            frame: 0,
            next_frame: self.now,
            started: self.now,
            mids: HashMap::new(),
            received: BTreeMap::new(),
            messages: Vec::new(),
        });
        self.pump_outputs();
        self.clients.len() - 1
    }

    /// Publishes a synthetic video track (simulcast or not) from client `i`.
    pub fn publish_video(&mut self, i: usize, simulcast: bool) {
        let now = self.now;
        let c = &mut self.clients[i];
        let addr = c.pub_addr;
        let peer = c.publisher.get_or_insert_with(|| Peer::new(now, addr));
        let mut api = peer.rtc.sdp_api();
        let sim = simulcast.then(|| {
            let mut s = Simulcast::new();
            for (rid, ..) in LAYERS {
                s.add_send_layer(SimulcastLayer::new(rid));
            }
            s
        });
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, sim);
        let (offer, pending) = api.apply().expect("an offer");
        c.pending_publish = Some(pending);
        c.publishing = Some((mid, simulcast));
        let layers = if simulcast {
            LAYERS
                .iter()
                .map(|&(rid, w, h)| LayerInfo {
                    rid: rid.into(),
                    width: w.into(),
                    height: h.into(),
                })
                .collect()
        } else {
            vec![]
        };
        let track = PublishTrack {
            mid: mid.to_string(),
            kind: TrackKind::Video,
            source: TrackSource::Camera,
            name: String::new(),
            muted: false,
            width: 1280,
            height: 720,
            layers,
        };
        let id = c.id;
        let msg = ClientMessage::PublishOffer(PublishOffer {
            req: None,
            sdp: offer.to_sdp_string(),
            tracks: vec![track],
        });
        self.sfu.handle_message(self.now, id, msg);
        self.pump_outputs();
    }

    pub fn send(&mut self, i: usize, msg: ClientMessage) {
        self.send_from(self.clients[i].id, msg);
    }

    /// Sends as any participant, also one that joined the core directly rather than as
    /// one of `clients` (its replies land in `others`).
    pub fn send_from(&mut self, id: ParticipantId, msg: ClientMessage) {
        self.sfu.handle_message(self.now, id, msg);
        self.pump_outputs();
    }

    /// Tells the server how client `i` shows `track_id`.
    pub fn show(&mut self, i: usize, track_id: &str, width: u32, height: u32) {
        let msg = ClientMessage::TrackSettings(TrackSettings {
            req: None,
            track_id: track_id.into(),
            width,
            height,
            quality: None,
            paused: false,
        });
        self.send(i, msg);
    }

    /// Delivers the server's signalling and datagrams; acts on signalling like a client SDK.
    fn pump_outputs(&mut self) {
        while let Some(out) = self.sfu.poll_output() {
            match out {
                Output::Transmit(t) => self.enqueue(t.proto, t.source, t.destination, t.contents),
                Output::Signal(id, msg) => match self.clients.iter().position(|c| c.id == id) {
                    Some(i) => self.on_signal(i, *msg),
                    None => self.others.push((id, *msg)),
                },
                Output::Broadcast(ids, text) => {
                    let msg: ServerMessage =
                        serde_json::from_str(&text).expect("broadcasts are server messages");
                    for id in ids {
                        if let Some(i) = self.clients.iter().position(|c| c.id == id) {
                            self.on_signal(i, msg.clone());
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn on_signal(&mut self, i: usize, msg: ServerMessage) {
        let now = self.now;
        self.clients[i].messages.push(msg.clone());
        match msg {
            ServerMessage::PublishAnswer(a) => {
                let c = &mut self.clients[i];
                let pending = c.pending_publish.take().expect("an offer was out");
                let answer = SdpAnswer::from_sdp_string(&a.sdp).unwrap();
                c.publisher
                    .as_mut()
                    .unwrap()
                    .rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .unwrap();
            }
            ServerMessage::SubscriberOffer(o) => {
                let c = &mut self.clients[i];
                for t in &o.tracks {
                    c.mids.insert(Mid::from(t.mid.as_str()), t.track_id.clone());
                }
                let addr = c.sub_addr;
                let peer = c.subscriber.get_or_insert_with(|| Peer::new(now, addr));
                let answer = peer
                    .rtc
                    .sdp_api()
                    .accept_offer(SdpOffer::from_sdp_string(&o.sdp).unwrap())
                    .unwrap();
                let id = c.id;
                let msg = ClientMessage::SubscriberAnswer(SdpMessage {
                    req: None,
                    sdp: answer.to_sdp_string(),
                });
                self.sfu.handle_message(now, id, msg);
            }
            _ => {}
        }
    }

    pub fn enqueue(&mut self, proto: Protocol, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if self.rng.next_f64() < self.link.loss {
            return;
        }
        self.net
            .push((self.now + self.link.delay, proto, from, to, data));
    }

    /// Copies of what is on the wire to the server now, with where each came from.
    pub fn in_flight_to_server(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.net
            .iter()
            .filter(|p| p.3.to_string() == SERVER)
            .map(|p| (p.2, p.4.clone()))
            .collect()
    }

    /// The datagrams of one video frame from client `i`'s publisher (with any RTCP or
    /// STUN it sends alongside), taken off the wire instead of delivered: benchmarks hand
    /// them to the core themselves. What the server sent the publisher meanwhile is
    /// delivered first, so its connection stays up; everything else on the wire is
    /// dropped. Advances the clock by one frame interval.
    pub fn capture_frame(&mut self, i: usize) -> Vec<Datagram> {
        self.now += Duration::from_millis(33);
        let now = self.now;
        let from = self.clients[i].pub_addr;
        for (_, proto, source, destination, data) in std::mem::take(&mut self.net) {
            if destination != from {
                continue;
            }
            if let Some(peer) = self.clients[i].publisher.as_mut() {
                let _ = peer
                    .rtc
                    .handle_input(received(now, proto, source, destination, &data));
            }
        }
        self.clients[i].next_frame = now;
        self.write_frames(now);
        // str0m sends what was written on its next timeout: make that now.
        if let Some(peer) = self.clients[i].publisher.as_mut() {
            peer.timeout = now;
        }
        self.drain_client(i);
        std::mem::take(&mut self.net)
            .into_iter()
            .filter(|p| p.2 == from)
            .map(|(_, proto, source, destination, contents)| Datagram {
                proto,
                source,
                destination,
                contents,
            })
            .collect()
    }

    /// Runs the room for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(end);
        }
    }

    /// Advances to the next thing that happens (bounded by `limit`) and does it.
    fn step(&mut self, limit: Instant) {
        let mut next = limit.min(self.sfu.poll_timeout());
        for c in &mut self.clients {
            for peer in [&c.publisher, &c.subscriber].into_iter().flatten() {
                next = next.min(peer.timeout);
            }
            if c.publishing.is_some() {
                next = next.min(c.next_frame);
            }
        }
        if let Some(t) = self.net.iter().map(|p| p.0).min() {
            next = next.min(t);
        }
        self.now = next.max(self.now);
        let now = self.now;

        // Network deliveries due now.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|p| p.0 <= now);
        self.net = later;
        for (_, proto, from, to, data) in due {
            if to.to_string() == SERVER {
                self.sfu.handle_datagram(now, proto, from, to, &data);
                self.pump_outputs();
            } else if let Some(peer) = self.peer_at(to) {
                let _ = peer.rtc.handle_input(received(now, proto, from, to, &data));
            }
        }

        // Clocks.
        if self.sfu.poll_timeout() <= now {
            self.sfu.handle_timeout(now);
            self.pump_outputs();
        }
        self.write_frames(now);
        for i in 0..self.clients.len() {
            self.drain_client(i);
        }
    }

    fn peer_at(&mut self, addr: SocketAddr) -> Option<&mut Peer> {
        self.clients
            .iter_mut()
            .flat_map(|c| [c.publisher.as_mut(), c.subscriber.as_mut()])
            .flatten()
            .find(|p| p.addr == addr)
    }

    fn write_frames(&mut self, now: Instant) {
        let frame_bytes = self.frame_bytes;
        for c in &mut self.clients {
            let (Some((mid, simulcast)), Some(Peer { rtc, .. })) =
                (c.publishing, c.publisher.as_mut())
            else {
                continue;
            };
            if !rtc.is_connected() {
                c.next_frame = now + Duration::from_millis(33);
                continue;
            }
            while c.next_frame <= now {
                let key = c.frame % 30 == 0;
                let ticks = c
                    .next_frame
                    .saturating_duration_since(c.started)
                    .as_micros() as u64
                    * 90
                    / 1000;
                let time = MediaTime::new(ticks, Frequency::NINETY_KHZ);
                let layers: Vec<(Option<Rid>, u16, u16)> = if simulcast {
                    LAYERS
                        .iter()
                        .map(|&(r, w, h)| (Some(Rid::from(r)), w, h))
                        .collect()
                } else {
                    vec![(None, 1280, 720)]
                };
                for (rid, w, h) in layers {
                    let writer = rtc.writer(mid).expect("published media");
                    let pt = writer
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Vp8)
                        .unwrap()
                        .pt();
                    let writer = match rid {
                        Some(r) => writer.rid(r),
                        None => writer,
                    };
                    writer
                        .write(
                            pt,
                            now,
                            time,
                            synthetic::vp8_frame(c.frame, frame_bytes, w, h, key),
                        )
                        .unwrap();
                }
                c.frame += 1;
                c.next_frame += Duration::from_millis(33);
            }
        }
    }

    fn drain_client(&mut self, i: usize) {
        let now = self.now;
        let mut sends = Vec::new();
        let c = &mut self.clients[i];
        for peer in [c.publisher.as_mut(), c.subscriber.as_mut()]
            .into_iter()
            .flatten()
        {
            if peer.timeout <= now {
                let _ = peer.rtc.handle_input(Input::Timeout(now));
            }
            loop {
                match peer.rtc.poll_output() {
                    Ok(RtcOutput::Timeout(t)) => {
                        peer.timeout = t;
                        break;
                    }
                    Err(_) => {
                        peer.timeout = now + Duration::from_secs(3600);
                        break;
                    }
                    Ok(RtcOutput::Transmit(t)) => {
                        sends.push((t.proto, peer.addr, t.destination, t.contents.to_vec()))
                    }
                    Ok(RtcOutput::Event(Event::MediaData(data))) => {
                        if let Some(track) = c.mids.get(&data.mid) {
                            let r = c.received.entry(track.clone()).or_default();
                            let key = data.data.first().is_some_and(|b| b & 1 == 0);
                            r.first_is_key.get_or_insert(key);
                            r.frames += 1;
                            if key {
                                r.keyframes += 1;
                                r.key_widths
                                    .push(u16::from_le_bytes([data.data[6], data.data[7]]));
                            }
                        }
                    }
                    Ok(_) => {}
                }
            }
        }
        for (proto, from, to, data) in sends {
            self.enqueue(proto, from, to, data);
        }
    }

    /// Track ids client `i` publishes, as the server named them.
    pub fn published_tracks(&self, i: usize) -> Vec<String> {
        self.clients[i]
            .messages
            .iter()
            .filter_map(|m| match m {
                ServerMessage::PublishAnswer(a) => Some(
                    a.tracks
                        .iter()
                        .map(|t| t.track.track_id.clone())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .next_back()
            .unwrap_or_default()
    }
}

/// What a client subscribing to everything in `room` joins with.
pub fn join_request(room: &str, identity: &str, role: Role) -> JoinRequest {
    JoinRequest {
        room: room.into(),
        identity: identity.into(),
        name: identity.into(),
        role,
        grants: role.default_grants(),
        metadata: None,
        auto_subscribe: true,
        req: None,
        last_event: None,
    }
}

/// A datagram arriving at a client peer.
fn received<'a>(
    now: Instant,
    proto: Protocol,
    source: SocketAddr,
    destination: SocketAddr,
    data: &'a [u8],
) -> Input<'a> {
    Input::Receive(
        now,
        Receive {
            proto,
            source,
            destination,
            contents: data
                .try_into()
                .expect("the simulated wire carries whole datagrams"),
        },
    )
}

/// A room where client 0 publishes one-packet video frames to `subscribers` connected
/// viewers, for benchmarks of the forwarding path.
pub fn fanout_room(subscribers: usize) -> Room {
    let mut room = Room::new(7);
    room.frame_bytes = 1000;
    let host = room.join("bench", "host", Role::Staff);
    room.publish_video(host, false);
    for i in 0..subscribers {
        room.join("bench", &format!("viewer-{i}"), Role::Shopper);
    }
    room.run_for(Duration::from_secs(3));
    let track = room.published_tracks(host)[0].clone();
    let watching = room.clients[1..]
        .iter()
        .filter(|c| c.received.get(&track).is_some_and(|r| r.frames > 0))
        .count();
    assert_eq!(watching, subscribers, "every viewer receives the video");
    room
}

/// Hands a publisher's datagrams to the core and runs it as a driver would until
/// nothing more is due (str0m releases queued packets on its next timeout). Returns how
/// many datagrams went to subscribers: those are dropped, not delivered, so this
/// measures the core alone. Datagrams for the publisher go back on the wire.
pub fn forward(room: &mut Room, datagrams: &[Datagram]) -> usize {
    let now = room.now;
    let publisher = datagrams.first().map(|d| d.source);
    for d in datagrams {
        room.sfu
            .handle_datagram(now, d.proto, d.source, d.destination, &d.contents);
    }
    let mut sent = 0;
    loop {
        while let Some(out) = room.sfu.poll_output() {
            if let Output::Transmit(t) = out {
                if Some(t.destination) == publisher {
                    room.enqueue(t.proto, t.source, t.destination, t.contents);
                } else {
                    sent += 1;
                }
            }
        }
        if room.sfu.poll_timeout() > now {
            return sent;
        }
        room.sfu.handle_timeout(now);
    }
}
