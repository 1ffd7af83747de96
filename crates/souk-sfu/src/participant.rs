//! A participant: who they are, their two connections, what they publish and receive.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use souk_proto::model::{ParticipantInfo, QualityGrade, TrackKind};
use souk_proto::signal::{SubscribedTrack, SubscriberOffer};
use souk_proto::token::{Grants, Role};
use str0m::change::SdpPendingOffer;
use str0m::media::Pt;
use str0m::media::{MediaKind, Mid};
use str0m::rtp::Ssrc;

use crate::config::RTX_CACHE_PACKETS;
use crate::downlink::DownlinkEstimate;
use crate::forward::{Forwarder, Layer};
use crate::layer::Wanted;
use crate::peer::{Peer, Side};
use crate::quality::PathQuality;
use crate::red::RedEncoder;
use crate::redundancy::Redundancy;
use crate::speaker::LevelMeter;
use crate::track::{PublishedTrack, TrackKey};
use crate::ParticipantId;

pub(crate) struct Participant {
    pub id: ParticipantId,
    pub sid: String,
    pub room: String,
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub grants: Grants,
    pub metadata: Option<String>,
    pub joined_at_ms: u64,
    pub auto_subscribe: bool,
    pub resume_secret: String,
    /// Set while the signalling socket is gone; the participant is removed when the
    /// resume window has passed.
    pub signal_lost_at: Option<Instant>,
    /// Whether the room was told this participant joined. A live room's audience is not
    /// (ten thousand viewers would mean a hundred million join notices): viewers are
    /// counted in `viewers` events, and announced once they are given a seat.
    pub announced: bool,
    /// Joined without a signalling socket (WHIP, WHEP): its connection is its session,
    /// so losing the connection counts as losing the socket.
    pub headless: bool,
    /// When a datagram last arrived on one of its connections.
    pub last_heard: Option<Instant>,

    /// Boxed: a connection's state is ~10 KB, and most participants have one of the two
    /// (viewers only subscribe) or none (interaction-only viewers of a live room).
    pub publisher: Option<Box<Peer>>,
    pub subscriber: Option<Box<Peer>>,
    pub tracks: Vec<PublishedTrack>,
    /// Incoming SSRC to (track, layer), learnt from str0m on the first packet of each.
    pub ssrc_routes: HashMap<Ssrc, (TrackKey, Layer)>,

    pub downtracks: Vec<Downtrack>,
    /// Our subscriber offer awaiting the client's answer.
    pub offer_out: Option<OfferOut>,
    /// Something changed while an offer was out; offer again after the answer.
    pub renegotiate: bool,
    pub ice_restart_requested: bool,
    /// The subscriber's answer accepted redundant audio (RFC 2198).
    pub accepts_red: bool,
    /// The subscriber connection's bandwidth estimate (bits/s), once there is one.
    pub estimate_bps: Option<u64>,
    /// The estimate from receiver reports (with `BandwidthEstimation::Reports`).
    pub downlink: DownlinkEstimate,
    /// The path to the client as its receiver reports describe it, and the grade last
    /// told to the client.
    pub path: Option<PathQuality>,
    pub grade_told: Option<QualityGrade>,
    /// The counters at the subscriber connection's last stats report, for the rates.
    pub sent_at_last_stats: Option<SentAtStats>,
    /// Media forwarded to it (the first copy of each packet, no retransmissions), in
    /// bytes, and its rate between the last two stats reports.
    pub forwarded_bytes: u64,
    pub media_bps: f64,
    /// How long its video streams keep sent packets for retransmission (sized from the
    /// round trip once receiver reports measure it).
    pub rtx_age: Duration,
    /// Copies of each video packet its link needs (with resilience on).
    pub redundancy: Redundancy,

    pub level: LevelMeter,
}

/// A subscriber offer out with the client: str0m's side of it, and the message, which is
/// sent again if the client resumes before answering. Dropped with the answer, so a
/// subscriber does not keep its last offer's text for good.
pub(crate) struct OfferOut {
    pub pending: SdpPendingOffer,
    pub sent: SubscriberOffer,
}

#[derive(Debug, Clone, Copy)]
pub struct SentAtStats {
    /// Bytes str0m sent on the connection.
    pub sent: u64,
    /// [`Participant::forwarded_bytes`].
    pub forwarded: u64,
    pub at: Instant,
}

/// Most of a stream's bytes that may be retransmissions on a link with an estimate.
const RTX_SHARE_OF_LIMITED_LINK: f32 = 0.15;

/// Who a message or webhook is about, detached from the participant's state.
pub(crate) struct Origin {
    pub id: ParticipantId,
    pub room: String,
    pub sid: String,
    pub identity: String,
}

impl Participant {
    pub fn origin(&self) -> Origin {
        Origin {
            id: self.id,
            room: self.room.clone(),
            sid: self.sid.clone(),
            identity: self.identity.clone(),
        }
    }

    pub fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            role: self.role,
            metadata: self.metadata.clone(),
            grants: self.grants,
            tracks: self.tracks.iter().map(|t| t.info.clone()).collect(),
            joined_at_ms: self.joined_at_ms,
        }
    }

    /// The publisher or subscriber connection, if it exists yet.
    pub fn peer_mut(&mut self, side: Side) -> Option<&mut Peer> {
        match side {
            Side::Publisher => self.publisher.as_deref_mut(),
            Side::Subscriber => self.subscriber.as_deref_mut(),
        }
    }

    pub fn track(&self, key: TrackKey) -> Option<&PublishedTrack> {
        self.tracks.iter().find(|t| t.key == key)
    }

    pub fn track_mut(&mut self, key: TrackKey) -> Option<&mut PublishedTrack> {
        self.tracks.iter_mut().find(|t| t.key == key)
    }

    pub fn track_by_id(&self, track_id: &str) -> Option<&PublishedTrack> {
        self.tracks.iter().find(|t| t.info.track_id == track_id)
    }

    pub fn downtrack_mut(&mut self, key: TrackKey) -> Option<&mut Downtrack> {
        self.downtracks.iter_mut().find(|d| d.track == key)
    }

    /// Sizes the retransmission cache of the subscriber connection's video streams on
    /// `mids` (this drops what they cached). Retransmissions are uncapped while the link
    /// has shown no limit: at 20% random loss a cap leaves holes. A link that has shown
    /// one (an estimate) caps them, since there they compete with the media for a full
    /// link and feed the loss they repair.
    pub fn set_rtx_cache(&mut self, mids: &[Mid], age: Duration) {
        let cap = self.estimate_bps.map(|_| RTX_SHARE_OF_LIMITED_LINK);
        let Some(peer) = self.subscriber.as_mut() else {
            return;
        };
        let mut api = peer.rtc.direct_api();
        for mid in mids {
            if let Some(stream) = api.stream_tx_by_mid(*mid, None) {
                stream.set_rtx_cache(RTX_CACHE_PACKETS, age, cap);
            }
        }
    }

    /// The mids of the video it receives.
    pub fn open_video_mids(&self) -> Vec<Mid> {
        self.downtracks
            .iter()
            .filter(|d| d.kind.is_video())
            .filter_map(|d| match d.state {
                DowntrackState::Open(mid) => Some(mid),
                _ => None,
            })
            .collect()
    }

    /// Whether some video reaches it now (not paused, a layer being forwarded).
    pub fn receives_video(&self) -> bool {
        self.downtracks.iter().any(|d| {
            d.kind.is_video()
                && matches!(d.state, DowntrackState::Open(_))
                && d.forwarder.current().is_some()
        })
    }

    pub fn downtrack_by_mid(&self, mid: Mid) -> Option<&Downtrack> {
        self.downtracks.iter().find(|d| d.state.mid() == Some(mid))
    }

    /// The m-lines of the subscriber connection as the client should map them.
    pub fn subscribed_tracks(&self) -> Vec<SubscribedTrack> {
        self.downtracks
            .iter()
            .filter_map(|d| match d.state {
                DowntrackState::Negotiating(mid) | DowntrackState::Open(mid) => {
                    Some(SubscribedTrack {
                        mid: mid.to_string(),
                        track_id: d.track_id.clone(),
                        participant_sid: d.publisher_sid.clone(),
                    })
                }
                _ => None,
            })
            .collect()
    }
}

/// Where a subscription stands in the subscriber connection's negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DowntrackState {
    /// Wanted, not yet in an offer.
    ToOpen,
    /// In an offer awaiting the answer.
    Negotiating(Mid),
    /// Negotiated; media flows.
    Open(Mid),
    /// To be removed in the next offer.
    ToStop(Mid),
    /// Removal offered, awaiting the answer.
    NegotiatingStop(Mid),
}

impl DowntrackState {
    pub fn mid(self) -> Option<Mid> {
        match self {
            DowntrackState::ToOpen => None,
            DowntrackState::Negotiating(m)
            | DowntrackState::Open(m)
            | DowntrackState::ToStop(m)
            | DowntrackState::NegotiatingStop(m) => Some(m),
        }
    }
}

/// One subscription: a published track as one subscriber receives it.
pub(crate) struct Downtrack {
    pub track: TrackKey,
    pub track_id: String,
    pub publisher: ParticipantId,
    pub publisher_sid: String,
    pub kind: MediaKind,
    pub state: DowntrackState,
    pub wanted: Wanted,
    pub forwarder: Forwarder,
    /// Publisher payload type to ours (and our RED type, when this subscriber gets RED),
    /// worked out on the first packet.
    pub pt_map: Option<(Pt, Pt, Option<Pt>)>,
    /// Redundancy for audio, when the subscriber negotiated RED.
    pub red: RedEncoder,
    /// The highest layer the subscriber's bandwidth allows: unset until estimated, `None`
    /// when not even the lowest fits (video paused, the client told).
    pub bandwidth_cap: Option<Option<usize>>,
    /// The subscriber was told it cannot decode this track (told once).
    pub codec_refused: bool,
}

impl Downtrack {
    pub fn new(publisher: &Participant, track: &PublishedTrack) -> Downtrack {
        let (kind, forwarder) = match track.info.kind {
            TrackKind::Audio => (MediaKind::Audio, Forwarder::audio(48_000)),
            TrackKind::Video => (MediaKind::Video, Forwarder::video(90_000, None)),
        };
        Downtrack {
            track: track.key,
            track_id: track.info.track_id.clone(),
            publisher: publisher.id,
            publisher_sid: publisher.sid.clone(),
            kind,
            state: DowntrackState::ToOpen,
            wanted: Wanted::default(),
            forwarder,
            pt_map: None,
            red: RedEncoder::default(),
            bandwidth_cap: None,
            codec_refused: false,
        }
    }
}
