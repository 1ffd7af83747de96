//! What the media core needs to know about its surroundings.

use std::time::Duration;

/// Retransmission cache per outgoing video stream: enough for a second of 2 Mbps video.
/// Payloads are shared with every other subscriber's cache, but each entry keeps its own
/// packet header (~500 bytes), so the age is what the path needs once its round trip is
/// known ([`rtx_cache_age`]); until then, one second.
pub(crate) const RTX_CACHE_PACKETS: usize = 1024;
pub(crate) const RTX_CACHE_INITIAL_AGE: Duration = Duration::from_secs(1);
const RTX_CACHE_MIN_AGE: Duration = Duration::from_secs(1);
const RTX_CACHE_MAX_AGE: Duration = Duration::from_secs(2);
/// How often a receiver asks again for a packet it still misses: every round trip, but a
/// receive-only Chromium never learns the round trip and asks every 100 ms.
const RECEIVER_RETRY_FLOOR: Duration = Duration::from_millis(100);
/// Requests a lost packet must survive: at 20% loss each way a request and its answer
/// both get through 64% of the time, and ten rounds leave 0.004% of losses unrepaired.
const RETRY_ROUNDS: u32 = 10;

/// How long a subscriber's sent video stays retransmittable: ten of the receiver's retry
/// rounds, between 1 s and 2 s. A shorter cache froze lossy-20 video every few runs (a
/// packet whose fifth request failed could never be repaired, and the decoder waited for a
/// keyframe). Rounded up to quarter seconds, since resizing drops the cache and a
/// wobbling round trip must not do that each second.
pub(crate) fn rtx_cache_age(rtt: Duration) -> Duration {
    let age =
        (rtt.max(RECEIVER_RETRY_FLOOR) * RETRY_ROUNDS).clamp(RTX_CACHE_MIN_AGE, RTX_CACHE_MAX_AGE);
    Duration::from_millis((age.as_millis() as u64).div_ceil(250) * 250)
}

/// How often a subscriber's video streams send sender reports. A receiver report's round
/// trip is that of the last sender report it answers: with str0m's default of one a
/// second, a 0.6 s probe's queue can pass between two, unseen by the report that judges it.
const SUBSCRIBER_SENDER_REPORTS: Duration = Duration::from_millis(250);

/// Where a subscriber's bandwidth estimate starts: enough for a middle layer, low enough
/// not to flood a weak link before the estimator has learnt anything.
const INITIAL_ESTIMATE_KBPS: u64 = 1000;

use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, RtcConfig};

use crate::keyframe::VideoCodec;

/// Where a subscriber's downlink estimate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandwidthEstimation {
    /// None: every subscriber gets the layer its view asks for.
    Off,
    /// Receiver reports: the round trip shows a queue, probes with copies find room
    /// (`downlink`). Random loss does not lower it.
    Reports,
    /// str0m's GoogCC over transport-wide feedback, which paces at its estimate. Under
    /// random loss above 10% that estimate falls toward zero (bench/RESULTS.md).
    Twcc,
}

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Our ICE host candidates (the media port over UDP and TCP, on each advertised address).
    pub candidates: Vec<Candidate>,
    /// How long a participant whose signalling dropped stays in the room, resumable.
    pub resume_window: Duration,
    /// How long an empty room lives before it closes, unless the room says otherwise.
    pub empty_room_timeout: Duration,
    /// Least time between two keyframe requests to one publisher layer.
    pub keyframe_request_interval: Duration,
    /// How often active speakers are worked out and layers checked.
    pub tick_interval: Duration,
    /// A simulcast layer with no packets for this long counts as stopped.
    pub layer_idle_after: Duration,
    /// Seeds ids and secrets; tests fix it, servers take it from the OS.
    pub seed: u64,
    /// Rooms appear on first join when true; otherwise they must be created first.
    pub auto_create_rooms: bool,
    /// Loss resilience: audio redundancy (RED) per subscriber, uncapped retransmission,
    /// and Opus DTX asked of publishers.
    /// Off leaves str0m's defaults, for side-by-side measurement.
    pub resilience: bool,
    /// How each subscriber's downlink is estimated, to fit its videos into it.
    pub bandwidth: BandwidthEstimation,
    /// Room events wait at most this long to go out together (one frame per viewer per
    /// window; the window's frames are spread over it, slice by slice).
    pub live_batch: Duration,
}

impl SfuConfig {
    pub fn new(candidates: Vec<Candidate>, seed: u64) -> SfuConfig {
        SfuConfig {
            candidates,
            resume_window: Duration::from_secs(15),
            empty_room_timeout: Duration::from_secs(60),
            keyframe_request_interval: Duration::from_millis(300),
            tick_interval: Duration::from_millis(250),
            layer_idle_after: Duration::from_millis(1500),
            seed,
            auto_create_rooms: true,
            resilience: true,
            bandwidth: BandwidthEstimation::Reports,
            live_batch: Duration::from_millis(100),
        }
    }

    /// Every connection is ICE-lite (we have a public address and never initiate checks)
    /// and in RTP mode (we forward packets, never frames). A browser sends in the first
    /// codec of our answer, and str0m answers in its own codec order, so the order here
    /// follows what the publisher prefers.
    pub(crate) fn rtc_config(&self, video_first: VideoCodec, subscriber: bool) -> RtcConfig {
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, self.resilience);
        if subscriber {
            // Receiver reports become path quality (RTT, jitter, loss) once a second.
            config = config
                .set_stats_interval(Some(Duration::from_secs(1)))
                .set_rtcp_report_interval_video(SUBSCRIBER_SENDER_REPORTS);
        }
        if subscriber && self.bandwidth == BandwidthEstimation::Twcc {
            config = config.enable_bwe(Some(str0m::bwe::Bitrate::kbps(INITIAL_ESTIMATE_KBPS)));
        } else if subscriber {
            // Without estimation nothing reads the subscriber's transport-wide feedback:
            // not offering it spares the client that feedback and each connection str0m's
            // register of the last 1,000 packets sent (~90 KiB).
            config = config.set_extension_map(standard_extensions_without_twcc());
        }
        match video_first {
            VideoCodec::Vp8 => config.enable_vp8(true).enable_h264(true),
            VideoCodec::H264 => config.enable_h264(true).enable_vp8(true),
        }
    }
}

fn standard_extensions_without_twcc() -> ExtensionMap {
    let mut map = ExtensionMap::empty();
    for (id, extension) in ExtensionMap::standard().iter() {
        if *extension != Extension::TransportSequenceNumber {
            map.set(id, extension.clone());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use str0m::media::{Direction, MediaKind};

    use super::*;

    /// The SDP offer a subscriber connection built from `config` makes for one video.
    fn subscriber_offer(config: &SfuConfig) -> String {
        let mut rtc = config
            .rtc_config(VideoCodec::Vp8, true)
            .build(Instant::now());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, _) = api.apply().expect("an offer");
        offer.to_sdp_string()
    }

    #[test]
    fn the_retransmission_window_follows_the_round_trip() {
        let ms = Duration::from_millis;
        assert_eq!(
            rtx_cache_age(ms(1)),
            ms(1000),
            "loopback: ten 100 ms retries"
        );
        assert_eq!(rtx_cache_age(ms(130)), ms(1500), "1.3 s rounded up");
        assert_eq!(rtx_cache_age(ms(135)), ms(1500), "a wobble keeps the size");
        assert_eq!(rtx_cache_age(ms(900)), RTX_CACHE_MAX_AGE, "the cap");
    }

    #[test]
    fn subscribers_are_offered_transport_wide_feedback_only_when_it_is_used() {
        const TWCC: &str = "transport-wide-cc-extensions";
        let mut config = SfuConfig::new(Vec::new(), 1);
        let offer = subscriber_offer(&config);
        assert!(!offer.contains(TWCC), "{offer}");
        assert!(
            offer.contains("urn:ietf:params:rtp-hdrext:sdes:mid"),
            "{offer}"
        );
        config.bandwidth = BandwidthEstimation::Twcc;
        assert!(subscriber_offer(&config).contains(TWCC));
    }
}
