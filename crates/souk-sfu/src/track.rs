//! A published track: what it is, which layers flow, and who receives it.

use std::time::Instant;

use souk_proto::model::{TrackInfo, TrackKind};
use str0m::format::{Codec, PayloadParams};
use str0m::media::Pt;
use str0m::media::{Mid, Rid};

use crate::forward::Layer;
use crate::keyframe::VideoCodec;
use crate::ParticipantId;

/// Internal handle of a track; cheap to copy, unlike the wire id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey(pub u64);

pub(crate) struct PublishedTrack {
    pub key: TrackKey,
    pub mid: Mid,
    pub info: TrackInfo,
    /// Simulcast rids, smallest layer first (parallel to `info.layers`).
    pub rids: Vec<Rid>,
    /// When each layer last delivered a packet; index as `rids`, or one slot without simulcast.
    pub last_packet: Vec<Option<Instant>>,
    /// Which layers counted as flowing at the last check.
    pub active: Vec<bool>,
    /// Bytes per layer since the last rate update, and the smoothed rates (bits/s).
    pub layer_bytes: Vec<u64>,
    pub layer_bps: Vec<u64>,
    /// Participants that have this track in their subscriber connection.
    pub subscribers: Vec<ParticipantId>,
    /// The payload type last seen, what it means, and whether it is RED around that codec,
    /// to avoid a lookup per packet.
    pub last_pt: Option<(Pt, PayloadParams, bool)>,
    /// Last keyframe request per layer, for rate limiting.
    pub keyframe_requested: Vec<(Layer, Instant)>,
    /// Muted by the publisher or by a moderator: nothing is forwarded.
    pub muted: bool,
    /// The publisher's clock per layer, from its RTCP sender reports: wall-clock ms at
    /// an RTP timestamp (90 kHz for video).
    pub sender_clock: Vec<(Layer, u64, u32)>,
    /// The RTP timestamp of the newest packet, and its layer.
    pub last_rtp: Option<(Layer, u32)>,
}

impl PublishedTrack {
    /// Notes a sender report: the publisher's wall clock at an RTP timestamp.
    pub fn note_sender_report(&mut self, layer: Layer, ntp_ms: u64, rtp: u32) {
        self.sender_clock.retain(|(l, ..)| *l != layer);
        self.sender_clock.push((layer, ntp_ms, rtp));
    }

    /// When the newest frame was captured, on the publisher's wall clock (ms), once a
    /// sender report has tied its RTP clock to it.
    pub fn capture_ms(&self) -> Option<u64> {
        let (layer, rtp) = self.last_rtp?;
        let (_, ntp_ms, sr_rtp) = self.sender_clock.iter().find(|(l, ..)| *l == layer)?;
        let clock_khz = if self.info.kind == TrackKind::Video {
            90
        } else {
            48
        };
        let delta_ms = i64::from(rtp.wrapping_sub(*sr_rtp) as i32) / clock_khz;
        Some((*ntp_ms as i64 + delta_ms).max(0) as u64)
    }

    pub fn new(key: TrackKey, mid: Mid, mut info: TrackInfo) -> PublishedTrack {
        info.layers
            .sort_by_key(|l| (l.width as u64) * (l.height as u64));
        let rids: Vec<Rid> = info
            .layers
            .iter()
            .map(|l| Rid::from(l.rid.as_str()))
            .collect();
        let slots = rids.len().max(1);
        PublishedTrack {
            key,
            mid,
            muted: info.muted,
            sender_clock: Vec::new(),
            last_rtp: None,
            info,
            rids,
            last_packet: vec![None; slots],
            active: vec![false; slots],
            layer_bytes: vec![0; slots],
            layer_bps: vec![0; slots],
            subscribers: Vec::new(),
            last_pt: None,
            keyframe_requested: Vec::new(),
        }
    }

    pub fn is_video(&self) -> bool {
        self.info.kind == TrackKind::Video
    }

    pub fn layer_index(&self, layer: Layer) -> Option<usize> {
        match layer {
            None if self.rids.is_empty() => Some(0),
            None => None,
            Some(rid) => self.rids.iter().position(|r| *r == rid),
        }
    }

    pub fn layer_at(&self, index: usize) -> Layer {
        self.rids.get(index).copied()
    }

    /// Sizes of the layers, smallest first; one entry of the full size without simulcast.
    pub fn layer_sizes(&self) -> Vec<(u32, u32)> {
        if self.info.layers.is_empty() {
            vec![(self.info.width, self.info.height)]
        } else {
            self.info
                .layers
                .iter()
                .map(|l| (l.width, l.height))
                .collect()
        }
    }

    /// Notes a packet on `layer`. True when the layer just started flowing, which may
    /// change what subscribers should get.
    pub fn note_packet(&mut self, layer: Layer, bytes: usize, now: Instant) -> bool {
        let Some(i) = self.layer_index(layer) else {
            return false;
        };
        self.last_packet[i] = Some(now);
        self.layer_bytes[i] += bytes as u64;
        let started = !self.active[i];
        self.active[i] = true;
        started
    }

    /// Re-evaluates which layers flow. True when any changed.
    pub fn refresh_active(&mut self, now: Instant, idle_after: std::time::Duration) -> bool {
        let mut changed = false;
        for (active, last) in self.active.iter_mut().zip(&self.last_packet) {
            let flowing = last.is_some_and(|t| now.saturating_duration_since(t) < idle_after);
            changed |= *active != flowing;
            *active = flowing;
        }
        changed
    }

    /// Folds the bytes counted over `elapsed` into each layer's smoothed bitrate. A layer
    /// that stopped keeps its last rate: it is what resuming it would cost.
    pub fn update_rates(&mut self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64().max(1e-3);
        for (bytes, bps) in self.layer_bytes.iter_mut().zip(&mut self.layer_bps) {
            if *bytes > 0 {
                let now = (*bytes * 8) as f64 / secs;
                *bps = if *bps == 0 {
                    now as u64
                } else {
                    (*bps as f64 * 0.8 + now * 0.2) as u64
                };
            }
            *bytes = 0;
        }
    }

    /// True when a keyframe request for `layer` is allowed now (and records it).
    pub fn allow_keyframe_request(
        &mut self,
        layer: Layer,
        now: Instant,
        interval: std::time::Duration,
    ) -> bool {
        match self
            .keyframe_requested
            .iter_mut()
            .find(|(l, _)| *l == layer)
        {
            Some((_, at)) if now.saturating_duration_since(*at) < interval => false,
            Some((_, at)) => {
                *at = now;
                true
            }
            None => {
                self.keyframe_requested.push((layer, now));
                true
            }
        }
    }
}

/// The forwarder's view of a codec: a video codec it can find keyframes in, or audio.
pub(crate) fn video_codec(params: &PayloadParams) -> Option<VideoCodec> {
    match params.spec().codec {
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::H264 => Some(VideoCodec::H264),
        _ => None,
    }
}

pub(crate) fn codec_name(params: &PayloadParams) -> String {
    params.spec().codec.to_string().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_time_follows_the_sender_report_clock() {
        let mut track = PublishedTrack::new(TrackKey(1), Mid::from("0"), info(vec![]));
        assert_eq!(track.capture_ms(), None, "no report yet");
        track.note_sender_report(None, 1_000_000, 90_000);
        track.last_rtp = Some((None, 90_000 + 9_000));
        assert_eq!(
            track.capture_ms(),
            Some(1_000_100),
            "100 ms of 90 kHz after the report"
        );
        // RTP timestamps wrap; the difference is taken modulo 2^32.
        track.note_sender_report(None, 2_000_000, u32::MAX - 899);
        track.last_rtp = Some((None, 8_100));
        assert_eq!(track.capture_ms(), Some(2_000_100));
    }
    use souk_proto::model::{LayerInfo, TrackSource};
    use std::time::Duration;

    fn info(layers: Vec<LayerInfo>) -> TrackInfo {
        TrackInfo {
            track_id: "TR_1".into(),
            kind: TrackKind::Video,
            source: TrackSource::Camera,
            name: String::new(),
            muted: false,
            width: 1280,
            height: 720,
            layers,
            codec: None,
        }
    }

    fn layer(rid: &str, width: u32, height: u32) -> LayerInfo {
        LayerInfo {
            rid: rid.into(),
            width,
            height,
        }
    }

    #[test]
    fn layers_are_sorted_smallest_first() {
        let t = PublishedTrack::new(
            TrackKey(1),
            Mid::from("0"),
            info(vec![
                layer("f", 1280, 720),
                layer("q", 320, 180),
                layer("h", 640, 360),
            ]),
        );
        assert_eq!(t.rids, vec![Rid::from("q"), Rid::from("h"), Rid::from("f")]);
        assert_eq!(t.layer_index(Some(Rid::from("f"))), Some(2));
        assert_eq!(t.layer_index(None), None);
    }

    #[test]
    fn activity_follows_packets() {
        let now = Instant::now();
        let mut t = PublishedTrack::new(TrackKey(1), Mid::from("0"), info(vec![]));
        assert!(t.note_packet(None, 100, now));
        assert!(!t.note_packet(None, 100, now));
        t.update_rates(Duration::from_secs(1));
        assert_eq!(t.layer_bps, vec![1600]);
        assert!(!t.refresh_active(now + Duration::from_millis(100), Duration::from_secs(1)));
        assert!(t.refresh_active(now + Duration::from_secs(2), Duration::from_secs(1)));
        assert_eq!(t.active, vec![false]);
    }

    #[test]
    fn keyframe_requests_are_rate_limited_per_layer() {
        let now = Instant::now();
        let gap = Duration::from_millis(300);
        let mut t = PublishedTrack::new(TrackKey(1), Mid::from("0"), info(vec![]));
        assert!(t.allow_keyframe_request(None, now, gap));
        assert!(!t.allow_keyframe_request(None, now + Duration::from_millis(100), gap));
        assert!(t.allow_keyframe_request(Some(Rid::from("q")), now, gap));
        assert!(t.allow_keyframe_request(None, now + gap, gap));
    }
}
