//! WHEP playback: a viewer that offers its own receive-only connection, instead of
//! answering ours. Its m-lines are matched, in order, to the room's tracks of the same
//! kind, and the answer sends in the codec those tracks were published in (no
//! transcoding: an H.264 ingest plays as H.264).

use std::time::Instant;

use souk_proto::error::{ErrorCode, ProtoError};
use str0m::change::SdpOffer;
use str0m::media::{MediaKind, Mid};

use super::Sfu;
use crate::demux::PeerKey;
use crate::keyframe::VideoCodec;
use crate::participant::DowntrackState;
use crate::peer::{Peer, Side};
use crate::sdp_parse;
use crate::ParticipantId;

/// The `(kind, mid)` of each receiving audio or video section of an offer, in order.
fn offered_media(sdp: &str) -> Vec<(MediaKind, Mid)> {
    let mut out = Vec::new();
    let mut current: Option<MediaKind> = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            current = match m.split_whitespace().next() {
                Some("audio") => Some(MediaKind::Audio),
                Some("video") => Some(MediaKind::Video),
                _ => None,
            };
        } else if let (Some(kind), Some(mid)) = (current, line.strip_prefix("a=mid:")) {
            out.push((kind, Mid::from(mid)));
        }
    }
    out
}

impl Sfu {
    /// Marks a participant that has no signalling socket (WHIP, WHEP): when its
    /// connection is lost and not back within the resume window, it is removed, as a
    /// participant whose socket dropped would be.
    pub fn mark_headless(&mut self, now: Instant, id: ParticipantId) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.headless = true;
            // Time to connect counts as heard from.
            p.last_heard = Some(now);
        }
    }

    /// Answers a WHEP viewer's offer with the room's media. Returns the SDP answer.
    pub fn accept_viewer_offer(
        &mut self,
        now: Instant,
        id: ParticipantId,
        offer_sdp: &str,
    ) -> Result<String, ProtoError> {
        let invalid = |why: String| ProtoError::new(ErrorCode::InvalidSdp, why);
        let room = self.participants[&id].room.clone();
        if self.participants[&id].subscriber.is_some() {
            return Err(ProtoError::new(
                ErrorCode::InvalidState,
                "this viewer already has a connection",
            ));
        }
        let offer = SdpOffer::from_sdp_string(offer_sdp).map_err(|e| {
            invalid(format!(
                "offer does not parse: {}",
                sdp_parse::explain(offer_sdp, e)
            ))
        })?;
        let mut available = self.tracks_in_room(&room, Some(id));
        let video_first = available
            .iter()
            .filter_map(|k| self.participants[&self.track_owner[k]].track(*k))
            .find(|t| t.info.kind == souk_proto::model::TrackKind::Video)
            .and_then(|t| t.info.codec.clone())
            .map_or(VideoCodec::Vp8, |c| {
                if c == "h264" {
                    VideoCodec::H264
                } else {
                    VideoCodec::Vp8
                }
            });
        let mut peer = Peer::new(now, &self.config, Side::Subscriber, video_first);
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| invalid(format!("offer was refused: {e}")))?;
        peer.ufrag = peer.current_ufrag();
        let ufrag = peer.ufrag.clone();
        self.participants
            .get_mut(&id)
            .expect("checked above")
            .subscriber = Some(Box::new(peer));
        self.connections.open(now, id, Side::Subscriber);
        self.demux.set_ufrag(
            PeerKey {
                participant: id,
                side: Side::Subscriber,
            },
            None,
            &ufrag,
        );

        for (kind, mid) in offered_media(offer_sdp) {
            let Some(pos) = available.iter().position(|k| {
                self.participants[&self.track_owner[k]]
                    .track(*k)
                    .is_some_and(|t| {
                        (t.info.kind == souk_proto::model::TrackKind::Video)
                            == (kind == MediaKind::Video)
                    })
            }) else {
                continue;
            };
            let key = available.remove(pos);
            self.add_downtrack(id, key);
            if let Some(dt) = self
                .participants
                .get_mut(&id)
                .and_then(|p| p.downtracks.iter_mut().find(|d| d.track == key))
            {
                dt.state = DowntrackState::Open(mid);
            }
            self.select_layer(id, key);
        }
        self.request_keyframes_for_subscriber(now, id);
        Ok(answer.to_sdp_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_sections_in_order() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        assert_eq!(
            offered_media(sdp),
            vec![
                (MediaKind::Audio, Mid::from("0")),
                (MediaKind::Video, Mid::from("1"))
            ]
        );
    }
}
