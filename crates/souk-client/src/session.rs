//! The client's task: one WebSocket, two str0m peers each on its own UDP socket, and a
//! synthetic media clock.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use souk_proto::error::ProtoError;
use souk_proto::model::{LayerInfo, TrackInfo, TrackKind, TrackSource};
use souk_proto::payload::vp8_frame_start;
use souk_proto::signal::{
    ClientMessage, Join, PublishOffer, PublishTrack, SdpMessage, ServerMessage,
};
use souk_proto::PROTOCOL_VERSION;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tracing::debug;

use crate::arrival::{self, Arrival};
use crate::audio::ReceivedAudio;
use crate::synthetic::{self, KEYFRAME_EVERY};
use crate::{
    Client, ClientError, ClientOptions, Command, SessionHandle, Stats, SyntheticMedia, TrackStats,
};

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn start(
    url: &str,
    token: &str,
    options: ClientOptions,
) -> Result<Client, ClientError> {
    let mut ws = open_signalling(url, options.bind_ip).await?;
    let join = ClientMessage::Join(Join {
        req: None,
        protocol: PROTOCOL_VERSION,
        token: token.to_owned(),
        room: None,
        auto_subscribe: options.auto_subscribe,
        resume: None,
        last_event: None,
    });
    send_ws(&mut ws, &join).await?;
    let joined = loop {
        match next_server_message(&mut ws).await? {
            ServerMessage::Joined(joined) => break joined,
            ServerMessage::Error(e) => {
                return Err(ClientError::Refused(ProtoError::new(e.code, e.message)))
            }
            _ => continue,
        }
    };
    Ok(Client {
        session: spawn(Some(ws), &options),
        joined,
    })
}

/// Starts a session task: with `ws` it speaks Souk signalling, without it the caller
/// carries the SDP ([`crate::ExternalPeers`]).
pub(crate) fn spawn(ws: Option<Ws>, options: &ClientOptions) -> SessionHandle {
    static CRYPTO: std::sync::Once = std::sync::Once::new();
    CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());

    let stats = Arc::new(Mutex::new(Stats::default()));
    let (changed_tx, changed) = watch::channel(0u64);
    let (commands, rx) = mpsc::channel(64);
    let session = Session {
        ws,
        bind_ip: options.bind_ip,
        publisher: None,
        subscriber: None,
        pending_publish: None,
        media: None,
        sub_mids: HashMap::new(),
        receive_packets: options.receive_packets,
        audio_in: options.audio_in.clone(),
        rx_streams: HashMap::new(),
        last_arrival: None,
        stats: stats.clone(),
        changed: changed_tx,
    };
    tokio::spawn(session.run(rx));
    SessionHandle {
        commands,
        stats,
        changed,
    }
}

/// Opens the signalling socket from `bind_ip`, so many bots on one machine can spread
/// over several local addresses (the server limits connections per address).
pub(crate) async fn open_signalling(url: &str, bind_ip: IpAddr) -> Result<Ws, ClientError> {
    let (scheme, rest, default_port) = [
        ("http://", "ws", 80),
        ("ws://", "ws", 80),
        ("https://", "wss", 443),
        ("wss://", "wss", 443),
    ]
    .into_iter()
    .find_map(|(prefix, scheme, port)| Some((scheme, url.strip_prefix(prefix)?, port)))
    .ok_or_else(|| {
        ClientError::Connect(format!(
            "'{url}' is not an http://, https://, ws:// or wss:// URL"
        ))
    })?;
    let host = rest.split('/').next().unwrap_or(rest);
    // A port is given after the last ':' that is not inside an IPv6 address's brackets.
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.ends_with(']'));
    let host = if has_port {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    };
    let server = tokio::net::lookup_host(host.as_str())
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ClientError::Connect(format!("cannot resolve '{host}'")))?;
    let socket = if server.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| ClientError::Connect(e.to_string()))?;
    socket
        .bind(SocketAddr::new(bind_ip, 0))
        .map_err(|e| ClientError::Connect(format!("binding {bind_ip}: {e}")))?;
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| ClientError::Connect(format!("{server}: {e}")))?;
    // tungstenite grows its read buffer to this size and zeroes it on every poll that
    // finds no data: with the 128 KiB default, a bot polling its socket once per media
    // packet spent most of its time in memset. Signalling messages are small.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio_tungstenite::client_async_tls_with_config(
        format!("{scheme}://{host}/rtc"),
        stream,
        Some(config),
        // Only a TLS connection needs (and loads) the certificates.
        (scheme == "wss").then(|| tokio_tungstenite::Connector::Rustls(crate::tls::config())),
    )
    .await
    .map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) if resp.status() == 429 => {
            ClientError::Refused(ProtoError::new(
                souk_proto::error::ErrorCode::RateLimited,
                "too many connections from this address; retry shortly",
            ))
        }
        e => ClientError::Connect(e.to_string()),
    })?;
    Ok(ws)
}

async fn send_ws(ws: &mut Ws, msg: &ClientMessage) -> Result<(), ClientError> {
    let text = serde_json::to_string(msg).expect("client messages serialise");
    ws.send(WsMessage::text(text))
        .await
        .map_err(|_| ClientError::Closed)
}

async fn next_server_message(ws: &mut Ws) -> Result<ServerMessage, ClientError> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(text))) => {
                if let Ok(msg) = serde_json::from_str(&text) {
                    return Ok(msg);
                }
            }
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return Err(ClientError::Closed),
            Some(Ok(_)) => {}
        }
    }
}

/// One str0m peer with its own socket (two peers talking to the same server address
/// through one socket could not be told apart).
struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    timeout: Instant,
}

impl Peer {
    async fn new(bind_ip: IpAddr, rtp_mode: bool) -> Result<Peer, ClientError> {
        let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0))
            .await
            .map_err(|e| ClientError::Connect(format!("binding a media socket: {e}")))?;
        let local = socket
            .local_addr()
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        // Hundreds of bots share two cores; a bot that is not scheduled for a moment
        // should not lose media to a full socket buffer.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(1 << 20);
        if let Err(e) = arrival::stamp_arrivals(&socket) {
            debug!("no kernel receive stamps: {e}");
        }
        let mut rtc = Rtc::builder()
            .set_rtp_mode(rtp_mode)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(Instant::now());
        let candidate =
            Candidate::host(local, "udp").map_err(|e| ClientError::Rtc(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        Ok(Peer {
            rtc,
            socket,
            local,
            timeout: Instant::now(),
        })
    }

    fn input(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        if let Err(e) = self.rtc.handle_input(input) {
            debug!("client peer rejected a datagram: {e}");
        }
    }

    /// Sends what str0m wants sent; returns its events.
    fn drain(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return events;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => events.push(e),
                Err(e) => {
                    debug!("client peer failed: {e}");
                    self.timeout = Instant::now() + Duration::from_secs(3600);
                    return events;
                }
            }
        }
    }
}

/// Our published synthetic tracks and their clock.
struct Publishing {
    media: SyntheticMedia,
    video_mid: Option<Mid>,
    audio_mid: Option<Mid>,
    started: Instant,
    frame: u64,
    next_video: Instant,
    next_audio: Instant,
}

const LAYERS: [(&str, u32, u16, u16); 3] = [
    ("q", 10, 320, 180),
    ("h", 30, 640, 360),
    ("f", 100, 1280, 720),
];

/// Who waits for the tracks a publish offer published.
type PublishReply = oneshot::Sender<Result<Vec<TrackInfo>, ClientError>>;

/// A publish offer sent and not yet answered.
struct PendingPublish {
    pending: SdpPendingOffer,
    media: SyntheticMedia,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    /// Who waits for the published tracks (Souk signalling only).
    reply: Option<PublishReply>,
}

struct Session {
    /// Souk signalling; `None` when the caller carries the SDP itself.
    ws: Option<Ws>,
    bind_ip: IpAddr,
    publisher: Option<Peer>,
    subscriber: Option<Peer>,
    pending_publish: Option<PendingPublish>,
    media: Option<Publishing>,
    sub_mids: HashMap<Mid, (String, String)>,
    /// Receive RTP packets instead of frames ([`ClientOptions::receive_packets`]).
    receive_packets: bool,
    /// Where received audio frames go ([`ClientOptions::audio_in`]).
    audio_in: Option<mpsc::Sender<ReceivedAudio>>,
    /// Streams received so far (when receiving packets), by SSRC.
    rx_streams: HashMap<Ssrc, ReceivedStream>,
    /// The kernel's receive stamp of the subscriber datagram being handled: the events
    /// of one tick come from the one datagram read before it.
    last_arrival: Option<u64>,
    stats: Arc<Mutex<Stats>>,
    changed: watch::Sender<u64>,
}

impl Session {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut pub_buf = vec![0u8; 2048];
        let mut sub_buf = vec![0u8; 2048];
        loop {
            let deadline = self.next_deadline();
            let publisher = self.publisher.as_ref().map(|p| &p.socket);
            let subscriber = self.subscriber.as_ref().map(|p| &p.socket);
            tokio::select! {
                msg = next_ws(self.ws.as_mut()) => match msg {
                    Some(Ok(WsMessage::Text(text))) => {
                        if let Ok(msg) = serde_json::from_str::<ServerMessage>(&text) {
                            if !self.on_server_message(msg).await {
                                break;
                            }
                        }
                    }
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Publish(media, reply)) => self.start_publish(media, reply).await,
                    Some(Command::Send(msg)) => { let _ = self.signal(&msg).await; }
                    Some(Command::Leave) => { let _ = self.signal(&ClientMessage::Leave(Default::default())).await; }
                    Some(Command::Offer(media, reply)) => { let _ = reply.send(self.external_offer(media).await); }
                    Some(Command::AcceptAnswer(sdp, reply)) => { let _ = reply.send(self.accept_publish_answer(&sdp).1); }
                    Some(Command::AnswerOffer(sdp, reply)) => { let _ = reply.send(self.answer_external_offer(&sdp).await); }
                    None => break,
                },
                Some(received) = recv(publisher, &mut pub_buf) => {
                    if let (Ok(a), Some(p)) = (received, self.publisher.as_mut()) {
                        p.input(Instant::now(), a.source, &pub_buf[..a.len]);
                    }
                },
                Some(received) = recv(subscriber, &mut sub_buf) => {
                    if let (Ok(a), Some(p)) = (received, self.subscriber.as_mut()) {
                        p.input(Instant::now(), a.source, &sub_buf[..a.len]);
                        self.last_arrival = a.unix_micros;
                    }
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
            self.tick(Instant::now());
        }
        self.update(|s| s.ended = true);
    }

    fn next_deadline(&self) -> Instant {
        let mut t = Instant::now() + Duration::from_secs(1);
        for peer in [&self.publisher, &self.subscriber].into_iter().flatten() {
            t = t.min(peer.timeout);
        }
        if let Some(m) = &self.media {
            if m.video_mid.is_some() {
                t = t.min(m.next_video);
            }
            if m.audio_mid.is_some() {
                t = t.min(m.next_audio);
            }
        }
        t
    }

    fn update(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Drives both peers' clocks and the synthetic sources, and acts on events.
    fn tick(&mut self, now: Instant) {
        for peer in [&mut self.publisher, &mut self.subscriber]
            .into_iter()
            .flatten()
        {
            if peer.timeout <= now {
                let _ = peer.rtc.handle_input(Input::Timeout(now));
            }
        }
        self.write_media(now);
        let pub_events = self
            .publisher
            .as_mut()
            .map(|p| p.drain())
            .unwrap_or_default();
        let sub_events = self
            .subscriber
            .as_mut()
            .map(|p| p.drain())
            .unwrap_or_default();
        for e in pub_events {
            if matches!(e, Event::Connected) {
                self.update(|s| s.publisher_connected = true);
            }
        }
        let at_socket = self.last_arrival.take();
        if !sub_events.is_empty() {
            self.on_subscriber_events(sub_events, at_socket);
        }
    }

    /// Accounts for what the subscriber connection delivered, under one lock.
    /// `at_socket` is the kernel's stamp of the datagram that brought them.
    fn on_subscriber_events(&mut self, events: Vec<Event>, at_socket: Option<u64>) {
        let arrived = synthetic::unix_micros();
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            match e {
                Event::Connected => stats.subscriber_connected = true,
                Event::MediaData(data) => {
                    let Some(t) = track_stats(&mut stats.tracks, &self.sub_mids, data.mid) else {
                        continue;
                    };
                    let kind = if data.params.spec().codec.is_audio() {
                        TrackKind::Audio
                    } else {
                        TrackKind::Video
                    };
                    t.kind = Some(kind);
                    t.frames += 1;
                    t.bytes += data.data.len() as u64;
                    if !data.contiguous {
                        t.discontinuities += 1;
                    }
                    if kind == TrackKind::Video && data.data.first().is_some_and(|b| b & 1 == 0) {
                        t.keyframes += 1;
                        if data.data.len() >= 8 {
                            t.last_key_width = u16::from_le_bytes([data.data[6], data.data[7]]);
                        }
                    }
                    if let Some(sent) = synthetic::sent_at_micros(&data.data) {
                        stats.record_latency(sent, arrived, at_socket);
                    }
                    if let (TrackKind::Audio, Some(tx), Some((sid, track))) = (
                        kind,
                        &self.audio_in,
                        self.sub_mids.get(&data.mid).map(|(t, p)| (p, t)),
                    ) {
                        let _ = tx.try_send(ReceivedAudio {
                            participant_sid: sid.clone(),
                            track_id: track.clone(),
                            opus: data.data.to_vec(),
                            after_gap: !data.contiguous,
                        });
                    }
                }
                Event::RtpPacket(packet) => {
                    let (ssrc, seq) = (packet.header.ssrc, *packet.seq_no);
                    let stream = match self.rx_streams.entry(ssrc) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(e) => {
                            let Some(peer) = self.subscriber.as_mut() else {
                                continue;
                            };
                            let Some(stream) = ReceivedStream::first(peer, ssrc, seq) else {
                                continue;
                            };
                            e.insert(stream)
                        }
                    };
                    stream.first_seq = stream.first_seq.min(seq);
                    stream.highest_seq = stream.highest_seq.max(seq);
                    let audio = stream.audio;
                    let Some(t) = track_stats(&mut stats.tracks, &self.sub_mids, stream.mid) else {
                        continue;
                    };
                    t.packets_expected = stream.highest_seq - stream.first_seq + 1;
                    t.packets += 1;
                    t.bytes += packet.payload.len() as u64;
                    // Audio is one frame a packet; a video frame ends at the marker.
                    t.kind = Some(if audio {
                        TrackKind::Audio
                    } else {
                        TrackKind::Video
                    });
                    if audio || packet.header.marker {
                        t.frames += 1;
                    }
                    let frame = if audio {
                        Some(&packet.payload[..])
                    } else {
                        vp8_frame_start(&packet.payload)
                    };
                    if let Some(sent) = frame.and_then(synthetic::sent_at_micros) {
                        stats.record_latency(sent, arrived, at_socket);
                    }
                }
                _ => {}
            }
        }
        drop(stats);
        self.changed.send_modify(|n| *n += 1);
    }

    fn write_media(&mut self, now: Instant) {
        let (Some(m), Some(peer)) = (self.media.as_mut(), self.publisher.as_mut()) else {
            return;
        };
        if !peer.rtc.is_connected() {
            return;
        }
        if let Some(mid) = m.video_mid {
            while m.next_video <= now {
                let elapsed = m.next_video.saturating_duration_since(m.started);
                let time = MediaTime::new(
                    elapsed.as_micros() as u64 * 90_000 / 1_000_000,
                    str0m::media::Frequency::NINETY_KHZ,
                );
                let keyframe = m.frame % KEYFRAME_EVERY == 0;
                let layers: Vec<(Option<Rid>, u32, u16, u16)> = if m.media.simulcast {
                    LAYERS
                        .iter()
                        .map(|&(rid, pct, w, h)| (Some(Rid::from(rid)), pct, w, h))
                        .collect()
                } else {
                    vec![(None, 100, 1280, 720)]
                };
                for (rid, pct, w, h) in layers {
                    let bytes_per_frame =
                        (m.media.video_kbps as u64 * 1000 / 8 / m.media.fps as u64 * pct as u64
                            / 100) as usize;
                    let size = if keyframe {
                        bytes_per_frame * 3
                    } else {
                        bytes_per_frame
                    };
                    let data = synthetic::vp8_frame(m.frame, size, w, h, keyframe);
                    let Some(writer) = peer.rtc.writer(mid) else {
                        break;
                    };
                    let Some(pt) = writer
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Vp8)
                        .map(|p| p.pt())
                    else {
                        break;
                    };
                    let writer = match rid {
                        Some(rid) => writer.rid(rid),
                        None => writer,
                    };
                    let _ = writer.write(pt, now, time, data);
                }
                m.frame += 1;
                m.next_video += Duration::from_micros(1_000_000 / m.media.fps as u64);
            }
        }
        if let Some(mid) = m.audio_mid {
            while m.next_audio <= now {
                let elapsed = m.next_audio.saturating_duration_since(m.started);
                let time = MediaTime::new(
                    elapsed.as_micros() as u64 * 48_000 / 1_000_000,
                    str0m::media::Frequency::FORTY_EIGHT_KHZ,
                );
                let Some(writer) = peer.rtc.writer(mid) else {
                    break;
                };
                let Some(pt) = writer
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Opus)
                    .map(|p| p.pt())
                else {
                    break;
                };
                let (level, payload) = match &m.media.audio_feed {
                    Some(feed) => match feed.next_frame(now) {
                        Some(frame) => (frame.level, frame.opus),
                        None => {
                            m.next_audio += Duration::from_millis(20);
                            continue;
                        }
                    },
                    None => (m.media.audio_level, synthetic::opus_packet(80)),
                };
                let _ = writer
                    .audio_level(-level.abs(), true)
                    .write(pt, now, time, payload);
                m.next_audio += Duration::from_millis(20);
            }
        }
    }

    /// Creates the publisher connection (the first time) and an offer adding `media`'s
    /// tracks, kept pending until its answer; `None` when there is nothing to add.
    async fn offer_publish(
        &mut self,
        media: SyntheticMedia,
    ) -> Result<Option<(SdpOffer, Vec<PublishTrack>)>, ClientError> {
        if self.publisher.is_none() {
            self.publisher = Some(Peer::new(self.bind_ip, false).await?);
        }
        let peer = self.publisher.as_mut().expect("created above");
        let mut api = peer.rtc.sdp_api();
        let audio_mid = media.audio.then(|| {
            api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                Some("bot".into()),
                None,
                None,
            )
        });
        let simulcast = media.simulcast.then(|| {
            let mut s = Simulcast::new();
            for (rid, ..) in LAYERS {
                s.add_send_layer(SimulcastLayer::new(rid));
            }
            s
        });
        let video_mid = media.video.then(|| {
            api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some("bot".into()),
                None,
                simulcast,
            )
        });
        let Some((offer, pending)) = api.apply() else {
            return Ok(None);
        };
        let mut tracks = Vec::new();
        if let Some(mid) = audio_mid {
            tracks.push(PublishTrack {
                mid: mid.to_string(),
                kind: TrackKind::Audio,
                source: TrackSource::Microphone,
                name: "synthetic audio".into(),
                muted: false,
                width: 0,
                height: 0,
                layers: vec![],
            });
        }
        if let Some(mid) = video_mid {
            let layers = if media.simulcast {
                LAYERS
                    .iter()
                    .map(|&(rid, _, w, h)| LayerInfo {
                        rid: rid.into(),
                        width: w as u32,
                        height: h as u32,
                    })
                    .collect()
            } else {
                vec![]
            };
            tracks.push(PublishTrack {
                mid: mid.to_string(),
                kind: TrackKind::Video,
                source: TrackSource::Camera,
                name: "synthetic video".into(),
                muted: false,
                width: 1280,
                height: 720,
                layers,
            });
        }
        self.pending_publish = Some(PendingPublish {
            pending,
            media,
            audio_mid,
            video_mid,
            reply: None,
        });
        Ok(Some((offer, tracks)))
    }

    /// Publishes over Souk signalling; `reply` gets the tracks once the server answered.
    async fn start_publish(&mut self, media: SyntheticMedia, reply: PublishReply) {
        let (offer, tracks) = match self.offer_publish(media).await {
            Ok(Some(offer)) => offer,
            Ok(None) => {
                let _ = reply.send(Ok(Vec::new()));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let msg = ClientMessage::PublishOffer(PublishOffer {
            req: Some(1),
            sdp: offer.to_sdp_string(),
            tracks,
        });
        if self.signal(&msg).await.is_err() {
            self.pending_publish = None;
            let _ = reply.send(Err(ClientError::Closed));
            return;
        }
        if let Some(pending) = self.pending_publish.as_mut() {
            pending.reply = Some(reply);
        }
    }

    /// Applies the answer to the pending publish offer and starts the synthetic media;
    /// returns who waits for the outcome, and the outcome.
    fn accept_publish_answer(
        &mut self,
        sdp: &str,
    ) -> (Option<PublishReply>, Result<(), ClientError>) {
        let Some(p) = self.pending_publish.take() else {
            return (
                None,
                Err(ClientError::Rtc("no publish offer is pending".into())),
            );
        };
        let peer = self
            .publisher
            .as_mut()
            .expect("publishing implies a publisher");
        let result = SdpAnswer::from_sdp_string(sdp)
            .map_err(|e| ClientError::Rtc(e.to_string()))
            .and_then(|a| {
                peer.rtc
                    .sdp_api()
                    .accept_answer(p.pending, a)
                    .map_err(|e| ClientError::Rtc(e.to_string()))
            });
        if result.is_ok() {
            let now = Instant::now();
            self.media = Some(Publishing {
                media: p.media,
                video_mid: p.video_mid,
                audio_mid: p.audio_mid,
                started: now,
                frame: 0,
                next_video: now,
                next_audio: now,
            });
        }
        (p.reply, result)
    }

    /// Answers an offer for the subscriber connection, creating it the first time.
    async fn answer_subscription(&mut self, sdp: &str) -> Result<String, ClientError> {
        if self.subscriber.is_none() {
            self.subscriber = Some(Peer::new(self.bind_ip, self.receive_packets).await?);
        }
        let peer = self.subscriber.as_mut().expect("created above");
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| ClientError::Rtc(e.to_string()))?;
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| ClientError::Rtc(e.to_string()))?;
        Ok(answer.to_sdp_string())
    }

    /// A publish offer for signalling the caller carries.
    async fn external_offer(&mut self, media: SyntheticMedia) -> Result<String, ClientError> {
        match self.offer_publish(media).await? {
            Some((offer, _)) => Ok(offer.to_sdp_string()),
            None => Err(ClientError::Rtc("nothing to publish".into())),
        }
    }

    /// Answers an offer the caller carried; with no track list beside it, each m-line
    /// counts as the track `mid-<mid>`.
    async fn answer_external_offer(&mut self, sdp: &str) -> Result<String, ClientError> {
        for mid in sdp.lines().filter_map(|l| l.trim().strip_prefix("a=mid:")) {
            self.sub_mids
                .entry(Mid::from(mid))
                .or_insert_with(|| (format!("mid-{mid}"), String::new()));
        }
        self.answer_subscription(sdp).await
    }

    /// Sends a Souk signalling message.
    async fn signal(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        match self.ws.as_mut() {
            Some(ws) => send_ws(ws, msg).await,
            None => Err(ClientError::Closed),
        }
    }

    /// Acts on one server message; false when the session is over.
    async fn on_server_message(&mut self, msg: ServerMessage) -> bool {
        self.update(|s| s.messages.push(msg.clone()));
        match msg {
            ServerMessage::PublishAnswer(answer) => {
                let (reply, result) = self.accept_publish_answer(&answer.sdp);
                if let Some(reply) = reply {
                    let tracks = answer.tracks.into_iter().map(|t| t.track).collect();
                    let _ = reply.send(result.map(|()| tracks));
                }
            }
            ServerMessage::SubscriberOffer(offer) => {
                for t in &offer.tracks {
                    self.sub_mids.insert(
                        Mid::from(t.mid.as_str()),
                        (t.track_id.clone(), t.participant_sid.clone()),
                    );
                }
                match self.answer_subscription(&offer.sdp).await {
                    Ok(sdp) => {
                        let msg = ClientMessage::SubscriberAnswer(SdpMessage { req: None, sdp });
                        let _ = self.signal(&msg).await;
                    }
                    Err(ClientError::Rtc(e)) => debug!("subscriber offer refused: {e}"),
                    Err(_) => return false,
                }
            }
            ServerMessage::Error(e) if e.req == Some(1) => {
                if let Some(reply) = self.pending_publish.take().and_then(|p| p.reply) {
                    let _ = reply.send(Err(ClientError::Refused(ProtoError::new(
                        e.code, e.message,
                    ))));
                }
            }
            ServerMessage::Leave(_) => return false,
            _ => {}
        }
        true
    }
}

/// A received RTP stream: what it carries, looked up once, and the sequence numbers
/// seen (their range is what was sent; the packets missing from it were lost).
struct ReceivedStream {
    mid: Mid,
    audio: bool,
    first_seq: u64,
    highest_seq: u64,
}

impl ReceivedStream {
    /// From the stream's first packet; `None` while str0m does not know the SSRC yet.
    fn first(peer: &mut Peer, ssrc: Ssrc, seq: u64) -> Option<ReceivedStream> {
        let mid = peer.rtc.direct_api().stream_rx(&ssrc)?.mid();
        let audio = peer
            .rtc
            .media(mid)
            .is_some_and(|m| m.kind() == MediaKind::Audio);
        Some(ReceivedStream {
            mid,
            audio,
            first_seq: seq,
            highest_seq: seq,
        })
    }
}

/// The stats of the received track on `mid`, created on its first media.
fn track_stats<'a>(
    tracks: &'a mut HashMap<String, TrackStats>,
    sub_mids: &HashMap<Mid, (String, String)>,
    mid: Mid,
) -> Option<&'a mut TrackStats> {
    let (track_id, participant_sid) = sub_mids.get(&mid)?;
    Some(
        tracks
            .entry(track_id.clone())
            .or_insert_with(|| TrackStats {
                participant_sid: participant_sid.clone(),
                ..Default::default()
            }),
    )
}

/// The next frame from the signalling socket; never resolves without one.
async fn next_ws(
    ws: Option<&mut Ws>,
) -> Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

/// Receives on a socket that may not exist yet (then never resolves).
async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> Option<std::io::Result<Arrival>> {
    match socket {
        Some(s) => Some(arrival::receive(s, buf).await),
        None => std::future::pending().await,
    }
}
