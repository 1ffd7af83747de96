//! One str0m `Rtc`: a participant's publisher or subscriber connection.

use std::collections::VecDeque;
use std::time::Instant;

use str0m::{Event, Input, Output as RtcOutput, Rtc, RtcError};

use crate::config::SfuConfig;
use crate::keyframe::VideoCodec;
use crate::{Output, Transmit};

/// The video codec an offer lists first among those we forward (VP8 when it lists none).
pub(crate) fn preferred_video_codec(sdp: &str) -> VideoCodec {
    let Some(m_line) = sdp.lines().find(|l| l.starts_with("m=video ")) else {
        return VideoCodec::Vp8;
    };
    let codec_of = |pt: &str| {
        let prefix = format!("a=rtpmap:{pt} ");
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(prefix.as_str()).map(str::to_owned))
            .map(|rest| {
                rest.split('/')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase()
            })
    };
    // Payload types follow the port and protocol, in the offerer's order of preference.
    m_line
        .split_whitespace()
        .skip(3)
        .filter_map(codec_of)
        .find_map(|name| match name.as_str() {
            "VP8" => Some(VideoCodec::Vp8),
            "H264" => Some(VideoCodec::H264),
            _ => None,
        })
        .unwrap_or(VideoCodec::Vp8)
}

/// Which of a participant's two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The browser offers and sends media here.
    Publisher,
    /// The server offers and sends media here.
    Subscriber,
}

pub(crate) struct Peer {
    pub rtc: Rtc,
    /// When str0m next wants `handle_input(Timeout)`.
    pub timeout: Instant,
    /// Our ICE username fragment, which routes new addresses to this peer.
    pub ufrag: String,
    pub connected: bool,
    /// ICE gave up (disconnected) at least once. Until the first connection or this, an
    /// ICE restart would cut short a DTLS handshake under way, and the connection would
    /// never come up: a client that resumes right after answering asks for one.
    pub ice_lost: bool,
}

impl Peer {
    pub fn new(now: Instant, config: &SfuConfig, side: Side, video_first: VideoCodec) -> Peer {
        // Only what we send needs estimating: the subscriber connection.
        let mut rtc = config
            .rtc_config(video_first, side == Side::Subscriber)
            .build(now);
        for candidate in &config.candidates {
            // A candidate str0m itself built cannot be refused; if it were, the peer would
            // simply not be reachable on that address, which ICE reports.
            let _ = rtc.add_local_candidate(candidate.clone());
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        Peer {
            rtc,
            timeout: now,
            ufrag,
            connected: false,
            ice_lost: false,
        }
    }

    /// The local ufrag as it is now; it changes after an ICE restart.
    pub fn current_ufrag(&mut self) -> String {
        self.rtc.direct_api().local_ice_credentials().ufrag
    }

    pub fn handle_input(&mut self, input: Input) -> Result<(), RtcError> {
        self.rtc.handle_input(input)
    }

    /// Polls str0m until it has nothing more to say: datagrams go straight to `out`,
    /// events are returned for the caller to act on (they may touch other peers).
    pub fn drain(&mut self, out: &mut VecDeque<Output>) -> Result<Vec<Event>, RtcError> {
        let mut events = Vec::new();
        loop {
            match self.rtc.poll_output()? {
                RtcOutput::Timeout(t) => {
                    self.timeout = t;
                    return Ok(events);
                }
                RtcOutput::Transmit(t) => out.push_back(Output::Transmit(Transmit {
                    proto: t.proto,
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                })),
                RtcOutput::Event(e) => events.push(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_forwardable_video_codec() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 45 102 96\r\na=rtpmap:45 AV1/90000\r\n\
                   a=rtpmap:102 H264/90000\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(preferred_video_codec(sdp), VideoCodec::H264);
        assert_eq!(
            preferred_video_codec(&sdp.replace("45 102 96", "96 102")),
            VideoCodec::Vp8
        );
        assert_eq!(preferred_video_codec("v=0\r\n"), VideoCodec::Vp8);
    }
}
