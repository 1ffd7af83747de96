//! Datagrams in, RTP across, timers: the media half of the state machine.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::model::{LeaveReason, SpeakerInfo};
use souk_proto::signal::{ActiveSpeakers, ConnectionQuality, ServerMessage};
use str0m::bwe::BweKind;
use str0m::media::{KeyframeRequestKind, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor, Vp8Patch};
use str0m::stats::MediaEgressStats;
use str0m::{Event, IceConnectionState, Input};
use tracing::{debug, trace, warn};

use super::{Output, Sfu};
use crate::config::{rtx_cache_age, BandwidthEstimation};
use crate::demux::PeerKey;
use crate::forward::{Layer, Verdict};
use crate::keyframe::{starts_keyframe, VideoCodec};
use crate::participant::{DowntrackState, SentAtStats};
use crate::peer::{Peer, Side};
use crate::quality::{PathQuality, SubscriptionLayer};
use crate::red;
use crate::redundancy::LinkReport;
use crate::speaker;
use crate::track::{codec_name, video_codec, TrackKey};
use crate::vp8::Vp8Ids;
use crate::ParticipantId;

/// The descriptor bytes that give a subscriber its own VP8 picture numbers (`None` when
/// they would not fit the descriptor, which then goes out as received).
fn vp8_patch(descriptor: &Vp8Descriptor, ids: Vp8Ids) -> Option<Vp8Patch> {
    let mut patch = descriptor.patch();
    if let Some(pic) = ids.picture_id {
        patch = patch.picture_id(pic);
    }
    if let Some(tl0) = ids.tl0_pic_idx {
        patch = patch.tl0_pic_idx(tl0);
    }
    patch.build().ok()
}

/// Loss in the report that failed a probe above which the subscriber's videos restart at
/// a keyframe.
const KEYFRAME_AFTER_PROBE_LOSS: f64 = 0.02;

/// Loss in the report that lowered the estimate above which the link counts as
/// overflowing (see `downlink_report`).
const OVERFLOW_LOSS: f64 = 0.1;

/// An RTP header with the extensions we send, for counting forwarded media.
const RTP_HEADER_BYTES: usize = 24;

/// Silence after which a socket-less participant's connection counts as lost. Browsers
/// send consent checks every few seconds, and media or reports far more often.
const HEADLESS_SILENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Deferred connections drained per poll: few enough that the driver can send the
/// first datagrams while the rest are still being encrypted.
const DRAIN_GROUP: usize = 64;

impl Sfu {
    /// A datagram (or an ICE-TCP frame) arrived on the media port.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) {
        let Some(route) = self.demux.route(proto, source, datagram) else {
            debug!(%source, "datagram from an unknown address dropped");
            return;
        };
        let Ok(contents) = datagram.try_into() else {
            debug!(%source, "unrecognised datagram dropped");
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        let key = route.key;
        let Some(peer) = self.peer_mut(key) else {
            return;
        };
        if route.learn_address && !peer.rtc.accepts(&input) {
            debug!(%source, "STUN with a known ufrag but wrong credentials dropped");
            return;
        }
        if let Err(e) = peer.handle_input(input) {
            // One bad packet (e.g. failed SRTP authentication) must not end the call.
            debug!(%source, "datagram rejected: {e}");
        }
        if route.learn_address {
            self.demux.learn_address(proto, source, key);
        }
        if let Some(p) = self.participants.get_mut(&key.participant) {
            p.last_heard = Some(now);
        }
        self.drain_peer(now, key);
    }

    /// Time passed: drive every connection and the core's own timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for key in self.connections.pop_due(now) {
            let Some(peer) = self.peer_mut(key).filter(|peer| peer.timeout <= now) else {
                continue;
            };
            let due_at = peer.timeout;
            if let Err(e) = peer.handle_input(Input::Timeout(now)) {
                debug!("timeout handling failed: {e}");
            }
            self.drain_peer(now, key);
            // `drain_peer` schedules a deadline that changed; one that str0m named again
            // just lost its entry here, so it needs a new one.
            if self
                .peer_mut(key)
                .is_some_and(|peer| peer.timeout == due_at)
            {
                self.connections.schedule(due_at, key);
            }
        }
        if now >= self.next_tick {
            self.next_tick = now + self.config.tick_interval;
            self.tick(now);
        }
        if self.next_live_flush.is_some_and(|at| now >= at) {
            self.flush_live(now);
        }
    }

    fn peer_mut(&mut self, key: PeerKey) -> Option<&mut Peer> {
        self.participants
            .get_mut(&key.participant)?
            .peer_mut(key.side)
    }

    /// Collects what a connection has to say and acts on it. Forwarding makes other
    /// (subscriber) connections dirty; those are drained later, once, when the driver
    /// polls for output ([`Sfu::drain_next_deferred`]).
    fn drain_peer(&mut self, now: Instant, key: PeerKey) {
        self.drain_peer_after(now, key, |_| Ok(()));
    }

    /// Lets a subscriber connection send what forwarding wrote to it, and drains it.
    /// str0m queues a written packet and sends it on the connection's next timeout, not
    /// on the next poll: without the timeout here, this drain found nothing to send and
    /// the next timeout pass polled every subscriber a second time to send it.
    fn release_and_drain(&mut self, now: Instant, key: PeerKey) {
        self.drain_peer_after(now, key, |peer| peer.handle_input(Input::Timeout(now)));
    }

    fn drain_peer_after(
        &mut self,
        now: Instant,
        key: PeerKey,
        first: impl FnOnce(&mut Peer) -> Result<(), str0m::RtcError>,
    ) {
        let Some((peer, outputs)) = self.peer_mut_split(key) else {
            return;
        };
        let deadline = peer.timeout;
        let drained = first(peer).and_then(|()| peer.drain(outputs));
        if peer.timeout != deadline {
            let at = peer.timeout;
            self.connections.schedule(at, key);
        }
        let events = match drained {
            Ok(events) => events,
            Err(e) => {
                warn!(participant = ?key.participant, side = ?key.side, "connection failed: {e}");
                self.remove_participant(now, key.participant, LeaveReason::ConnectionLost);
                return;
            }
        };
        let mut dirty = Vec::new();
        for event in events {
            self.handle_event(now, key, event, &mut dirty);
        }
        if !dirty.is_empty() {
            self.deferred.dirty.extend(dirty);
            self.deferred.now = now;
        }
    }

    /// Releases and drains the next few connections that forwarding wrote to (see
    /// [`Sfu::release_and_drain`]); `false` when none is left. A driver that hands over
    /// a burst of datagrams before polling (a video frame is several packets) pays
    /// str0m's per-poll work (DTLS, SCTP, pacer, timers) once per subscriber per burst
    /// instead of once per packet. A few at a time, so the driver can send the first
    /// subscribers' datagrams while the rest are encrypted.
    pub(super) fn drain_next_deferred(&mut self) -> bool {
        if self.deferred.ready.is_empty() {
            let mut keys = std::mem::take(&mut self.deferred.dirty);
            if keys.is_empty() {
                return false;
            }
            // Descending, so the next ones are at the end.
            keys.sort_unstable_by(|a, b| b.cmp(a));
            keys.dedup();
            self.deferred.ready = keys;
        }
        let now = self.deferred.now;
        for _ in 0..DRAIN_GROUP {
            let Some(key) = self.deferred.ready.pop() else {
                break;
            };
            match key.side {
                Side::Subscriber => self.release_and_drain(now, key),
                Side::Publisher => self.drain_peer(now, key),
            }
        }
        true
    }

    /// Splits the borrow so a peer can push straight into the output queue.
    fn peer_mut_split(&mut self, key: PeerKey) -> Option<(&mut Peer, &mut VecDeque<Output>)> {
        let peer = self
            .participants
            .get_mut(&key.participant)?
            .peer_mut(key.side)?;
        Some((peer, &mut self.outputs))
    }

    fn handle_event(&mut self, now: Instant, key: PeerKey, event: Event, dirty: &mut Vec<PeerKey>) {
        match event {
            Event::RtpPacket(packet) if key.side == Side::Publisher => {
                self.forward(now, key.participant, packet, dirty);
            }
            Event::SenderFeedback(fb) if key.side == Side::Publisher => {
                let ntp_ms = fb
                    .sender_info
                    .ntp_time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let rtp = fb.sender_info.rtp_time.numer() as u32;
                if let Some(track) = self
                    .participants
                    .get_mut(&key.participant)
                    .and_then(|p| p.tracks.iter_mut().find(|t| t.mid == fb.mid))
                {
                    track.note_sender_report(fb.rid, ntp_ms, rtp);
                }
            }
            Event::Connected => {
                if let Some(peer) = self.peer_mut(key) {
                    peer.connected = true;
                }
                if key.side == Side::Subscriber {
                    self.request_keyframes_for_subscriber(now, key.participant);
                }
            }
            Event::KeyframeRequest(req) if key.side == Side::Subscriber => {
                // The subscriber lost decoding context; ask the source layer it gets.
                let Some(sub) = self.participants.get(&key.participant) else {
                    return;
                };
                let Some(dt) = sub.downtrack_by_mid(req.mid) else {
                    return;
                };
                let (track, layer) = (dt.track, dt.forwarder.current().or(dt.forwarder.target()));
                if let Some(layer) = layer {
                    self.request_keyframe(now, track, layer);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })
                if key.side == Side::Subscriber =>
            {
                if let Some(p) = self.participants.get_mut(&key.participant) {
                    p.estimate_bps = Some(estimate.as_u64());
                    p.redundancy.on_sender_estimate(estimate.as_u64());
                }
            }
            Event::PeerStats(stats) if key.side == Side::Subscriber => {
                if let Some(p) = self.participants.get_mut(&key.participant) {
                    let path = p.path.get_or_insert_with(Default::default);
                    if let Some(loss) = stats.egress_loss_fraction {
                        path.loss = loss as f64;
                    }
                    if let Some(last) = p.sent_at_last_stats {
                        let seconds = stats
                            .timestamp
                            .saturating_duration_since(last.at)
                            .as_secs_f64();
                        if seconds > 0.0 {
                            let bps = |now: u64, then: u64| {
                                now.saturating_sub(then) as f64 * 8.0 / seconds
                            };
                            path.send_bps = bps(stats.bytes_tx, last.sent);
                            p.media_bps = bps(p.forwarded_bytes, last.forwarded);
                        }
                    }
                    p.sent_at_last_stats = Some(SentAtStats {
                        sent: stats.bytes_tx,
                        forwarded: p.forwarded_bytes,
                        at: stats.timestamp,
                    });
                }
            }
            Event::MediaEgressStats(stats) if key.side == Side::Subscriber => {
                self.subscriber_stream_report(now, key.participant, stats);
            }
            Event::IceConnectionStateChange(state) => {
                debug!(participant = ?key.participant, side = ?key.side, ?state, "ICE state");
                if state == IceConnectionState::Disconnected {
                    if let Some(peer) = self.peer_mut(key) {
                        peer.ice_lost = true;
                    }
                }
            }
            _ => {}
        }
    }

    /// A subscriber's receiver report on one stream: the path's round trip, jitter and
    /// loss, which size the retransmission cache, feed the downlink estimate and decide
    /// the video copies.
    fn subscriber_stream_report(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        stats: MediaEgressStats,
    ) {
        let Some(p) = self.participants.get_mut(&participant) else {
            return;
        };
        let Some(kind) = p.downtrack_by_mid(stats.mid).map(|d| d.kind) else {
            return;
        };
        let clock = if kind.is_audio() { 48_000.0 } else { 90_000.0 };
        // The round trip from receiver reports: the path's only measure when
        // transport-wide feedback is not negotiated.
        if let Some(rtt) = stats.rtt {
            p.path.get_or_insert_with(Default::default).rtt_ms = rtt.as_secs_f64() * 1000.0;
            // Only ever grown: resizing drops what the cache holds, and a round trip
            // that swings with a queue would drop it just when its packets are asked for.
            let age = rtx_cache_age(rtt);
            if self.config.resilience && age > p.rtx_age {
                p.rtx_age = age;
                debug!(subscriber = ?participant, ?age, "retransmission cache resized");
                let mids = p.open_video_mids();
                p.set_rtx_cache(&mids, age);
            }
        }
        if let Some(remote) = &stats.remote {
            let path = p.path.get_or_insert_with(Default::default);
            path.jitter_ms = remote.jitter as f64 / clock * 1000.0;
        }
        let (Some(loss), Some(rtt)) = (stats.loss, stats.rtt) else {
            return;
        };
        let report = LinkReport {
            loss: loss as f64,
            rtt,
            send_bps: p.path.map_or(0.0, |path| path.send_bps),
            received_through: stats
                .remote
                .as_ref()
                .map(|r| (stats.mid, *r.maximum_sequence_number)),
        };
        if self.config.bandwidth == BandwidthEstimation::Reports {
            self.downlink_report(now, participant, kind, report);
        }
        let Some(p) = self.participants.get_mut(&participant) else {
            return;
        };
        // A probe's copies hide the loss the video copies are judged on.
        if kind.is_video() && self.config.resilience && !p.downlink.probing() {
            trace!(subscriber = ?participant, loss, ?rtt, "video loss report");
            let before = p.redundancy.copies();
            p.redundancy.on_report(now, report);
            if p.redundancy.copies() != before {
                debug!(subscriber = ?participant, copies = p.redundancy.copies(), loss, ?rtt, "video copies changed");
            }
        }
    }

    /// A receiver report for the subscriber's downlink estimate, and what follows from a
    /// change of that estimate.
    fn downlink_report(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        kind: MediaKind,
        report: LinkReport,
    ) {
        let Some(p) = self.participants.get_mut(&participant) else {
            return;
        };
        // Video reports come every second; audio ones less often, about older sender
        // reports: they speak for the link only while no video flows.
        if !kind.is_video() && p.receives_video() {
            return;
        }
        let (loss, rtt) = (report.loss, report.rtt);
        let was_probing = p.downlink.probing();
        // What arrived is judged on the media alone: under heavy loss, retransmissions
        // can double what is sent without adding a byte of new media.
        p.downlink.on_report(
            now,
            LinkReport {
                send_bps: p.media_bps,
                ..report
            },
        );
        trace!(subscriber = ?participant, loss, ?rtt, media_bps = p.media_bps, "downlink report");
        if was_probing && !p.downlink.probing() {
            debug!(subscriber = ?participant, estimate_bps = ?p.downlink.estimate_bps(), "probe ended");
            if p.downlink.last_probe_failed() && loss > KEYFRAME_AFTER_PROBE_LOSS {
                // The probe overfilled the link and cost media that capped retransmission
                // may not repair: start each video afresh at a keyframe rather than leave
                // the decoder to ask for one after its own wait of seconds.
                for dt in p.downtracks.iter_mut().filter(|d| d.kind.is_video()) {
                    dt.forwarder.restart_after_overflow(now);
                }
            }
        }
        let Some(p) = self.participants.get_mut(&participant) else {
            return;
        };
        if p.estimate_bps == p.downlink.estimate_bps() {
            return;
        }
        let first = p.estimate_bps.is_none();
        let lowered = first || p.downlink.estimate_bps() < p.estimate_bps;
        p.estimate_bps = p.downlink.estimate_bps();
        debug!(subscriber = ?participant, estimate_bps = ?p.estimate_bps, loss, ?rtt, "downlink estimate changed");
        if lowered {
            // Congestion: the loss it brings is no case for video copies.
            p.redundancy.on_congestion(now);
        }
        if let Some(bps) = p.estimate_bps {
            p.redundancy.on_sender_estimate(bps);
        }
        if first && self.config.resilience {
            // A limited link: retransmissions get capped.
            let mids = p.open_video_mids();
            p.set_rtx_cache(&mids, p.rtx_age);
        }
        if lowered && loss > OVERFLOW_LOSS {
            // The link's buffer is full and dropping. A lower layer's keyframe sent behind
            // the old layer's packets is dropped with them (capped retransmission may not
            // repair it), and the decoder then waits seconds for its own request. So the
            // old layer stops now, and the buffer drains while the keyframe is fetched.
            self.allocate_bandwidth(now, participant);
            if let Some(p) = self.participants.get_mut(&participant) {
                for dt in &mut p.downtracks {
                    if dt.forwarder.awaiting_keyframe().is_some() {
                        dt.forwarder.restart_after_overflow(now);
                    }
                }
            }
        }
    }

    /// One RTP packet from a publisher, fanned out to its subscribers.
    fn forward(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        packet: RtpPacket,
        dirty: &mut Vec<PeerKey>,
    ) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let route = match p.ssrc_routes.get(&ssrc) {
            Some(route) => Some(*route),
            None => {
                // First packet of this SSRC: ask str0m which m-line and rid it is.
                let stream = p.publisher.as_mut().and_then(|peer| {
                    peer.rtc
                        .direct_api()
                        .stream_rx(&ssrc)
                        .map(|s| (s.mid(), s.rid()))
                });
                let found = stream.and_then(|(mid, rid)| {
                    p.tracks.iter().find(|t| t.mid == mid).map(|t| (t.key, rid))
                });
                if let Some(route) = found {
                    p.ssrc_routes.insert(ssrc, route);
                }
                found
            }
        };
        let Some((track_key, layer)) = route else {
            return;
        };

        // Audio level feeds active-speaker detection.
        if let Some(level) = packet.header.ext_vals.audio_level {
            p.level.observe(level);
        }

        let pt = packet.header.payload_type;
        let lookup = {
            let peer = p
                .publisher
                .as_ref()
                .expect("RTP arrives on the publisher peer");
            // A route cached before the track was unpublished is stale: forget it.
            let Some(track) = p.tracks.iter().find(|t| t.key == track_key) else {
                p.ssrc_routes.retain(|_, (key, _)| *key != track_key);
                return;
            };
            match track.last_pt {
                Some((last, params, is_red)) if last == pt => Some((params, is_red)),
                _ => {
                    let config = peer.rtc.codec_config();
                    // str0m leaves RED whole in RTP mode: note it, and unwrap below.
                    let plain = config.find(|c| c.pt() == pt).map(|c| (*c, false));
                    plain.or_else(|| config.find(|c| c.red() == Some(pt)).map(|c| (*c, true)))
                }
            }
        };
        let Some((params, is_red)) = lookup else {
            return;
        };
        let payload: std::sync::Arc<[u8]> = if is_red {
            match red::primary(&packet.payload) {
                Some(primary) => primary.into(),
                None => return,
            }
        } else {
            packet.payload.clone()
        };
        let track = p.track_mut(track_key).expect("route is current");
        if track.last_pt.is_none() {
            track.info.codec = Some(codec_name(&params));
        }
        track.last_pt = Some((pt, params, is_red));
        track.last_rtp = Some((layer, packet.header.timestamp));
        let layer_started = track.note_packet(layer, packet.payload.len(), now);
        if track.muted {
            return;
        }
        let codec = video_codec(&params);
        let keyframe = codec.is_some_and(|codec| starts_keyframe(codec, &payload));
        // VP8's picture numbering, read once for every subscriber.
        let vp8_descriptor = (codec == Some(VideoCodec::Vp8))
            .then(|| Vp8Descriptor::parse(&payload).ok())
            .flatten();
        let vp8_ids = vp8_descriptor.map_or(Vp8Ids::default(), |d| Vp8Ids {
            picture_id: d.picture_id(),
            tl0_pic_idx: d.tl0_pic_idx(),
        });
        // Take the list to fan out over other participants without cloning it per packet.
        let subscribers = std::mem::take(&mut track.subscribers);

        if layer_started {
            for &sub in &subscribers {
                self.select_layer(sub, track_key);
            }
        }

        let mut want_keyframe = Vec::new();
        let mut refused = Vec::new();
        for &sub_id in &subscribers {
            let Some(sub) = self.participants.get_mut(&sub_id) else {
                continue;
            };
            let Some(peer) = sub.subscriber.as_mut() else {
                continue;
            };
            let Some(dt) = sub.downtracks.iter_mut().find(|d| d.track == track_key) else {
                continue;
            };
            let DowntrackState::Open(mid) = dt.state else {
                continue;
            };
            let before = dt.forwarder.current();
            let verdict = dt.forwarder.on_packet(
                layer,
                *packet.seq_no,
                packet.header.timestamp,
                keyframe,
                vp8_ids,
                now,
            );
            if dt.forwarder.current() != before {
                debug!(subscriber = ?sub_id, track = ?track_key, layer = ?dt.forwarder.current(), "layer switched");
            }
            if let Some(awaited) = dt.forwarder.wants_keyframe(now) {
                if !want_keyframe.contains(&awaited) {
                    want_keyframe.push(awaited);
                }
            }
            let Verdict::Forward { seq, ts, vp8 } = verdict else {
                continue;
            };
            // Only a subscriber that switched layers gets its own picture numbers.
            let vp8_patch = vp8_descriptor
                .filter(|_| vp8 != vp8_ids)
                .and_then(|d| vp8_patch(&d, vp8));
            let (out_pt, red_pt) = match dt.pt_map {
                Some((from, to, red)) if from == pt => (to, red),
                _ => {
                    let Some(ours) = peer.rtc.codec_config().match_params(params) else {
                        if !std::mem::replace(&mut dt.codec_refused, true) {
                            refused.push((sub_id, dt.track_id.clone()));
                        }
                        continue;
                    };
                    // RED only where this subscriber's answer accepted it.
                    let red = ours.red().filter(|_| sub.accepts_red);
                    dt.pt_map = Some((pt, ours.pt(), red));
                    (ours.pt(), red)
                }
            };
            let (write_pt, payload) = match red_pt {
                Some(red) => (red, dt.red.encode(*out_pt, ts, &payload).into()),
                None => (out_pt, payload.clone()),
            };
            let mut api = peer.rtc.direct_api();
            let Some(stream) = api.stream_tx_by_mid(mid, None) else {
                continue;
            };
            let ext_vals = ExtensionValues {
                audio_level: packet.header.ext_vals.audio_level,
                voice_activity: packet.header.ext_vals.voice_activity,
                video_orientation: packet.header.ext_vals.video_orientation,
                ..Default::default()
            };
            let write = |payload| {
                let write = RtpWrite::new(write_pt, seq.into(), ts, packet.timestamp, payload)
                    .marker(packet.header.marker)
                    .ext_vals(ext_vals.clone())
                    .nackable(dt.kind.is_video());
                match vp8_patch {
                    Some(patch) => write.vp8_patch(patch),
                    None => write,
                }
            };
            // Copies share the sequence number: the receiver's SRTP drops all but the first.
            let against_loss = if dt.kind.is_video() {
                sub.redundancy.copies()
            } else {
                1
            };
            let copies = against_loss.max(sub.downlink.probe_copies(now));
            for _ in 1..copies {
                stream.write_rtp(write(payload.clone()));
            }
            sub.forwarded_bytes += (payload.len() + RTP_HEADER_BYTES) as u64;
            stream.write_rtp(write(payload));
            if dt.kind.is_video() {
                sub.downlink.on_video_sent(now, mid, seq);
            }
            dirty.push(PeerKey {
                participant: sub_id,
                side: Side::Subscriber,
            });
        }

        if let Some(track) = self
            .participants
            .get_mut(&publisher)
            .and_then(|p| p.track_mut(track_key))
        {
            track.subscribers = subscribers;
        }
        for (sub_id, track_id) in refused {
            let codec = codec_name(&params);
            let err = ProtoError::new(
                ErrorCode::CodecUnsupported,
                format!("track '{track_id}' is {codec}, which your connection did not accept; publish it in a codec every viewer decodes (VP8 or H.264)"),
            );
            warn!(subscriber = ?sub_id, %track_id, %codec, "subscriber cannot decode this codec");
            self.signal(sub_id, ServerMessage::error(None, err));
        }
        for layer in want_keyframe {
            if self.request_keyframe(now, track_key, layer) {
                dirty.push(PeerKey {
                    participant: publisher,
                    side: Side::Publisher,
                });
            }
        }
    }

    /// Asks the publisher of `track` for a keyframe on `layer`, at most once per
    /// interval. True when a request went out.
    pub(super) fn request_keyframe(&mut self, now: Instant, key: TrackKey, layer: Layer) -> bool {
        let interval = self.config.keyframe_request_interval;
        let Some(&owner) = self.track_owner.get(&key) else {
            return false;
        };
        let Some(p) = self.participants.get_mut(&owner) else {
            return false;
        };
        let Some(track) = p.tracks.iter_mut().find(|t| t.key == key) else {
            return false;
        };
        if !track.is_video() || !track.allow_keyframe_request(layer, now, interval) {
            return false;
        }
        let mid = track.mid;
        let Some(peer) = p.publisher.as_mut() else {
            return false;
        };
        let mut api = peer.rtc.direct_api();
        let Some(stream) = api.stream_rx_by_mid(mid, layer) else {
            return false;
        };
        stream.request_keyframe(KeyframeRequestKind::Pli);
        debug!(track = ?key, ?layer, "keyframe requested");
        true
    }

    /// Requests keyframes for every video a subscriber is waiting on.
    pub(super) fn request_keyframes_for_subscriber(&mut self, now: Instant, id: ParticipantId) {
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        if !p.subscriber.as_ref().is_some_and(|peer| peer.connected) {
            return;
        }
        let waiting: Vec<(TrackKey, Layer)> = p
            .downtracks
            .iter()
            .filter(|d| matches!(d.state, DowntrackState::Open(_)))
            .filter_map(|d| d.forwarder.wants_keyframe(now).map(|l| (d.track, l)))
            .collect();
        let mut publishers = Vec::new();
        for (track, layer) in waiting {
            if self.request_keyframe(now, track, layer) {
                publishers.extend(self.track_owner.get(&track).copied());
            }
        }
        publishers.dedup();
        for publisher in publishers {
            self.drain_peer(
                now,
                PeerKey {
                    participant: publisher,
                    side: Side::Publisher,
                },
            );
        }
    }

    /// Requests a keyframe of `track` for each layer some subscriber waits on.
    pub(super) fn request_keyframes_for(&mut self, now: Instant, key: TrackKey) {
        let Some(&owner) = self.track_owner.get(&key) else {
            return;
        };
        let subs = self.participants[&owner]
            .track(key)
            .map(|t| t.subscribers.clone())
            .unwrap_or_default();
        let layers: Vec<Layer> = subs
            .iter()
            .filter_map(|s| {
                self.participants
                    .get(s)?
                    .downtracks
                    .iter()
                    .find(|d| d.track == key)
            })
            .filter_map(|d| d.forwarder.awaiting_keyframe())
            .collect();
        let mut sent = false;
        for layer in layers {
            sent |= self.request_keyframe(now, key, layer);
        }
        if sent {
            self.drain_peer(
                now,
                PeerKey {
                    participant: owner,
                    side: Side::Publisher,
                },
            );
        }
    }

    /// Periodic work: expiry, layer activity, keyframe retries, active speakers.
    fn tick(&mut self, now: Instant) {
        self.notice_silent_headless(now);
        self.expire_sessions(now);
        self.tick_live(now);

        // Layers that stopped or started flowing change what subscribers should get.
        let idle = self.config.layer_idle_after;
        let mut reselect = Vec::new();
        for id in &self.connections.participants {
            let Some(p) = self.participants.get_mut(id) else {
                continue;
            };
            for t in &mut p.tracks {
                t.update_rates(self.config.tick_interval);
                if t.refresh_active(now, idle) {
                    reselect.extend(t.subscribers.iter().map(|s| (*s, t.key)));
                }
            }
        }
        for (sub, key) in reselect {
            self.select_layer(sub, key);
        }

        let ids: Vec<ParticipantId> = self.connections.participants.iter().copied().collect();
        if self.config.bandwidth != BandwidthEstimation::Off {
            for &id in &ids {
                self.allocate_bandwidth(now, id);
            }
        }

        // Nobody should wait for a keyframe on the browser's own (slow) timer.
        for id in ids {
            self.request_keyframes_for_subscriber(now, id);
        }

        self.announce_speakers();
        self.announce_quality();
    }

    /// A socket-less participant (WHIP, WHEP) whose connection fell silent is treated as
    /// one whose socket dropped: removed unless heard from again within the resume
    /// window. (ICE-lite never reports the loss itself: it does no checks of its own.)
    fn notice_silent_headless(&mut self, now: Instant) {
        for id in &self.connections.participants {
            let Some(p) = self.participants.get_mut(id) else {
                continue;
            };
            if !p.headless {
                continue;
            }
            let silent = p
                .last_heard
                .is_none_or(|t| now.saturating_duration_since(t) >= HEADLESS_SILENCE);
            if silent {
                p.signal_lost_at.get_or_insert(now);
            } else {
                p.signal_lost_at = None;
            }
        }
    }

    /// Tells each participant when its connection's grade changes.
    fn announce_quality(&mut self) {
        let mut changed = Vec::new();
        for p in self.participants.values_mut() {
            let Some(path) = p.path else { continue };
            let grade = path.grade();
            if p.grade_told != Some(grade) {
                p.grade_told = Some(grade);
                changed.push((
                    p.id,
                    ConnectionQuality {
                        quality: grade,
                        mos: (path.mos() * 100.0).round() / 100.0,
                        rtt_ms: path.rtt_ms.round(),
                        jitter_ms: (path.jitter_ms * 10.0).round() / 10.0,
                        loss: (path.loss * 1000.0).round() / 1000.0,
                    },
                ));
            }
        }
        for (id, quality) in changed {
            self.signal(id, ServerMessage::ConnectionQuality(quality));
        }
    }

    /// Every subscription's forwarded layer, for metrics: the index of the simulcast
    /// layer being sent (0 the smallest; 0 without simulcast), `None` while paused or
    /// before the first keyframe.
    pub fn subscription_layers(&self) -> Vec<SubscriptionLayer> {
        let mut layers = Vec::new();
        for p in self.participants.values() {
            for dt in p.downtracks.iter().filter(|d| d.kind == MediaKind::Video) {
                let index = self.participants.get(&dt.publisher).and_then(|publisher| {
                    let track = publisher.track(dt.track)?;
                    track.layer_index(dt.forwarder.current()?)
                });
                layers.push(SubscriptionLayer {
                    room: p.room.clone(),
                    subscriber_sid: p.sid.clone(),
                    track_id: dt.track_id.clone(),
                    index,
                });
            }
        }
        layers
    }

    /// Every participant's path quality, for metrics: (room, sid, path).
    pub fn path_qualities(&self) -> Vec<(String, String, PathQuality)> {
        self.participants
            .values()
            .filter_map(|p| {
                let path = PathQuality {
                    video_copies: p.redundancy.copies(),
                    downlink_estimate_bps: p.estimate_bps,
                    ..p.path?
                };
                Some((p.room.clone(), p.sid.clone(), path))
            })
            .collect()
    }

    fn announce_speakers(&mut self) {
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            let members = self.rooms[&name].members.clone();
            let levels: Vec<(ParticipantId, f32)> = members
                .iter()
                .filter_map(|m| self.participants.get_mut(m).map(|p| (*m, p.level.take())))
                .collect();
            let ranked = speaker::rank(levels);
            let order: Vec<ParticipantId> = ranked.iter().map(|(id, _)| *id).collect();
            let room = self.rooms.get_mut(&name).expect("listed above");
            if order == room.last_speakers {
                continue;
            }
            room.last_speakers = order;
            let speakers = ranked
                .into_iter()
                .map(|(id, level)| SpeakerInfo {
                    sid: self.participants[&id].sid.clone(),
                    level,
                })
                .collect();
            self.broadcast(
                &name,
                None,
                ServerMessage::ActiveSpeakers(ActiveSpeakers { speakers }),
            );
        }
    }
}
