//! Signalling requests from a joined participant, and the subscriber negotiation they
//! lead to.

use std::time::Instant;

use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::model::{LeaveReason, TrackInfo, TrackKind};
use souk_proto::rest::WebhookKind;
use souk_proto::signal::{
    Ack, ClientMessage, Mute, Ping, PublishAnswer, PublishOffer,
    PublishedTrack as WirePublishedTrack, SdpMessage, ServerMessage, Subscribe, SubscriberOffer,
    TrackMuted, TrackPublished, TrackSettings,
};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};

use super::Sfu;
use crate::demux::PeerKey;
use crate::dtx::request_dtx;
use crate::keyframe::VideoCodec;
use crate::layer::{choose_layer, Wanted};
use crate::participant::{Downtrack, DowntrackState, OfferOut};
use crate::peer::{preferred_video_codec, Peer, Side};
use crate::sdp_parse;
use crate::track::{PublishedTrack, TrackKey};
use crate::ParticipantId;

/// Label of the data channel every subscriber connection carries.
pub const SUBSCRIBER_CHANNEL: &str = "souk";

/// Most tracks one participant may publish at once.
pub const MAX_TRACKS_PER_PARTICIPANT: usize = 16;

impl Sfu {
    /// Handles one request from a joined participant. Failures become an `error`
    /// message to that participant; nothing else changes.
    pub fn handle_message(&mut self, now: Instant, id: ParticipantId, msg: ClientMessage) {
        if !self.participants.contains_key(&id) {
            return;
        }
        let req = msg.req();
        let result = match msg {
            ClientMessage::PublishOffer(offer) => self.publish(now, id, offer),
            ClientMessage::SubscriberAnswer(answer) => {
                self.accept_subscriber_answer(now, id, answer)
            }
            ClientMessage::Unpublish(t) => self.unpublish(now, id, &t.track_id),
            ClientMessage::Mute(m) => self.mute(now, id, m),
            ClientMessage::Subscribe(s) => self.subscribe(now, id, s),
            ClientMessage::TrackSettings(s) => self.track_settings(id, s),
            ClientMessage::IceRestart(_) => {
                if let Some(p) = self.participants.get_mut(&id) {
                    p.ice_restart_requested = true;
                }
                self.negotiate_subscriber(now, id);
                Ok(())
            }
            ClientMessage::Ping(Ping { ts }) => {
                self.signal(id, ServerMessage::Pong(Ping { ts }));
                Ok(())
            }
            ClientMessage::Leave(_) => {
                self.remove_participant(now, id, LeaveReason::ClientLeft);
                Ok(())
            }
            ClientMessage::Join(_) => Err(ProtoError::new(
                ErrorCode::InvalidState,
                "already joined on this socket; open a new socket to join another room",
            )),
            live @ (ClientMessage::RaiseHand(_)
            | ClientMessage::LowerHand(_)
            | ClientMessage::StageDecision(_)
            | ClientMessage::StageRemove(_)
            | ClientMessage::Moderate(_)
            | ClientMessage::Comment(_)
            | ClientMessage::Like(_)
            | ClientMessage::PinProduct(_)
            | ClientMessage::AgentEvent(_)) => match self.handle_live(now, id, live) {
                Ok(Some(result)) => {
                    let result = (!result.is_null()).then_some(result);
                    self.signal(id, ServerMessage::Ack(Ack { req, result }));
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            _ => Err(ProtoError::new(
                ErrorCode::UnknownMessageType,
                "message type not supported by this server",
            )),
        };
        if let Err(e) = result {
            self.signal(id, ServerMessage::error(req, e));
        }
    }

    fn publish(
        &mut self,
        now: Instant,
        id: ParticipantId,
        msg: PublishOffer,
    ) -> Result<(), ProtoError> {
        let p = self.participants.get(&id).expect("checked by caller");
        if !p.grants.publish {
            return Err(ProtoError::new(
                ErrorCode::PermissionDenied,
                "your token does not grant publishing in this room",
            ));
        }
        if p.tracks.len() + msg.tracks.len() > MAX_TRACKS_PER_PARTICIPANT {
            return Err(ProtoError::new(
                ErrorCode::InvalidRequest,
                format!("at most {MAX_TRACKS_PER_PARTICIPANT} tracks per participant"),
            ));
        }
        for (i, t) in msg.tracks.iter().enumerate() {
            if msg.tracks[..i].iter().any(|o| o.mid == t.mid)
                || p.tracks.iter().any(|o| o.mid.to_string() == t.mid)
            {
                return Err(ProtoError::new(
                    ErrorCode::InvalidRequest,
                    format!("track mid '{}' is announced twice", t.mid),
                ));
            }
        }
        let offer = SdpOffer::from_sdp_string(&msg.sdp).map_err(|e| {
            ProtoError::new(
                ErrorCode::InvalidSdp,
                format!(
                    "publish offer does not parse: {}",
                    sdp_parse::explain(&msg.sdp, e)
                ),
            )
        })?;

        let config = &self.config;
        let p = self.participants.get_mut(&id).expect("checked by caller");
        let video_first = preferred_video_codec(&msg.sdp);
        let peer = p
            .publisher
            .get_or_insert_with(|| Box::new(Peer::new(now, config, Side::Publisher, video_first)));
        self.connections.open(now, id, Side::Publisher);
        let old_ufrag = peer.ufrag.clone();
        let answer = peer.rtc.sdp_api().accept_offer(offer).map_err(|e| {
            ProtoError::new(
                ErrorCode::InvalidSdp,
                format!("publish offer was refused: {e}"),
            )
        })?;
        peer.ufrag = peer.current_ufrag();
        let ufrag = peer.ufrag.clone();

        // Every announced track must be an m-line we now receive on, of the same kind.
        let mut new_tracks = Vec::new();
        for t in &msg.tracks {
            let mid = Mid::from(t.mid.as_str());
            let kind_ok = peer.rtc.media(mid).is_some_and(|m| {
                let kind = match m.kind() {
                    MediaKind::Audio => TrackKind::Audio,
                    MediaKind::Video => TrackKind::Video,
                };
                kind == t.kind && m.direction().is_receiving()
            });
            if !kind_ok {
                return Err(ProtoError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "track mid '{}' is not a {:?} m-line the offer sends",
                        t.mid, t.kind
                    ),
                ));
            }
            new_tracks.push((mid, t.clone()));
        }

        let key = PeerKey {
            participant: id,
            side: Side::Publisher,
        };
        self.demux.set_ufrag(key, Some(&old_ufrag), &ufrag);

        let mut published = Vec::new();
        for (mid, t) in new_tracks {
            let track_key = TrackKey(self.next_internal_id());
            let info = TrackInfo {
                track_id: self.random_id("TR_", 12),
                kind: t.kind,
                source: t.source,
                name: t.name,
                muted: t.muted,
                width: t.width,
                height: t.height,
                layers: t.layers,
                codec: None,
            };
            let track = PublishedTrack::new(track_key, mid, info);
            published.push(track.info.clone());
            self.track_owner.insert(track_key, id);
            self.participants
                .get_mut(&id)
                .expect("checked")
                .tracks
                .push(track);
        }

        let p = &self.participants[&id];
        let tracks = p
            .tracks
            .iter()
            .map(|t| WirePublishedTrack {
                mid: t.mid.to_string(),
                track: t.info.clone(),
            })
            .collect();
        let (room, sid, identity) = (p.room.clone(), p.sid.clone(), p.identity.clone());
        let mut sdp = answer.to_sdp_string();
        if self.config.resilience {
            sdp = request_dtx(&sdp);
        }
        self.signal(
            id,
            ServerMessage::PublishAnswer(PublishAnswer {
                req: msg.req,
                sdp,
                tracks,
            }),
        );

        for info in published {
            self.broadcast(
                &room,
                Some(id),
                ServerMessage::TrackPublished(TrackPublished {
                    participant_sid: sid.clone(),
                    track: info.clone(),
                }),
            );
            self.webhook(WebhookKind::TrackPublished {
                room: room.clone(),
                participant_sid: sid.clone(),
                identity: identity.clone(),
                track: info.clone(),
            });
            let key = self.participants[&id]
                .track_by_id(&info.track_id)
                .map(|t| t.key)
                .expect("just added");
            let auto: Vec<_> = self.rooms[&room]
                .members
                .iter()
                .filter(|&&m| m != id)
                .filter(|m| {
                    let s = &self.participants[m];
                    s.auto_subscribe && s.grants.subscribe
                })
                .copied()
                .collect();
            for sub in auto {
                self.add_downtrack(sub, key);
                self.negotiate_subscriber(now, sub);
            }
        }
        Ok(())
    }

    pub(super) fn unpublish(
        &mut self,
        now: Instant,
        id: ParticipantId,
        track_id: &str,
    ) -> Result<(), ProtoError> {
        let p = self.participants.get_mut(&id).expect("checked by caller");
        let Some(index) = p.tracks.iter().position(|t| t.info.track_id == track_id) else {
            return Err(track_not_found(track_id));
        };
        let track = p.tracks.remove(index);
        p.ssrc_routes.retain(|_, (key, _)| *key != track.key);
        self.track_owner.remove(&track.key);
        for sub in &track.subscribers {
            self.drop_downtrack(*sub, track.key);
            self.negotiate_subscriber(now, *sub);
        }
        let publisher = self.participants[&id].origin();
        self.announce_unpublished(&publisher, track.info);
        Ok(())
    }

    fn mute(&mut self, now: Instant, id: ParticipantId, m: Mute) -> Result<(), ProtoError> {
        let key = self.participants[&id]
            .track_by_id(&m.track_id)
            .map(|t| t.key)
            .ok_or_else(|| track_not_found(&m.track_id))?;
        self.set_muted(now, id, key, m.muted);
        Ok(())
    }

    /// Mutes or unmutes a track and tells everyone, the publisher included (a moderator
    /// may be the one muting). Unmuted video restarts at a keyframe.
    pub(super) fn set_muted(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        key: TrackKey,
        muted: bool,
    ) {
        let p = self
            .participants
            .get_mut(&publisher)
            .expect("caller checked");
        let sid = p.sid.clone();
        let track = p.track_mut(key).expect("caller checked");
        if track.muted == muted {
            return;
        }
        track.muted = muted;
        track.info.muted = muted;
        let msg = ServerMessage::TrackMuted(TrackMuted {
            participant_sid: sid,
            track_id: track.info.track_id.clone(),
            muted,
        });
        let room = p.room.clone();
        self.broadcast(&room, None, msg);
        if !muted {
            let subs = self.participants[&publisher]
                .track(key)
                .map(|t| t.subscribers.clone())
                .unwrap_or_default();
            for sub in subs {
                if let Some(dt) = self
                    .participants
                    .get_mut(&sub)
                    .and_then(|s| s.downtrack_mut(key))
                {
                    dt.forwarder.restart_at_keyframe();
                }
            }
            self.request_keyframes_for(now, key);
        }
    }

    fn subscribe(
        &mut self,
        now: Instant,
        id: ParticipantId,
        s: Subscribe,
    ) -> Result<(), ProtoError> {
        if s.subscribe && !self.participants[&id].grants.subscribe {
            return Err(ProtoError::new(
                ErrorCode::PermissionDenied,
                "your token does not grant subscribing in this room",
            ));
        }
        let mut keys = Vec::new();
        for track_id in &s.track_ids {
            let key = self
                .find_track(&self.participants[&id].room, track_id)
                .filter(|k| self.track_owner.get(k) != Some(&id))
                .ok_or_else(|| track_not_found(track_id))?;
            keys.push(key);
        }
        for key in keys {
            if s.subscribe {
                self.add_downtrack(id, key);
            } else {
                if let Some(owner) = self.track_owner.get(&key).copied() {
                    if let Some(t) = self
                        .participants
                        .get_mut(&owner)
                        .and_then(|o| o.track_mut(key))
                    {
                        t.subscribers.retain(|x| *x != id);
                    }
                }
                self.drop_downtrack(id, key);
            }
        }
        self.negotiate_subscriber(now, id);
        Ok(())
    }

    fn track_settings(&mut self, id: ParticipantId, s: TrackSettings) -> Result<(), ProtoError> {
        let key = self
            .find_track(&self.participants[&id].room, &s.track_id)
            .ok_or_else(|| track_not_found(&s.track_id))?;
        let sub = self.participants.get_mut(&id).expect("checked by caller");
        let Some(dt) = sub.downtrack_mut(key) else {
            return Err(ProtoError::new(
                ErrorCode::InvalidState,
                format!("not subscribed to track '{}'", s.track_id),
            ));
        };
        dt.wanted = Wanted {
            width: s.width,
            height: s.height,
            quality: s.quality,
            paused: s.paused,
        };
        self.select_layer(id, key);
        Ok(())
    }

    fn accept_subscriber_answer(
        &mut self,
        now: Instant,
        id: ParticipantId,
        msg: SdpMessage,
    ) -> Result<(), ProtoError> {
        let p = self.participants.get_mut(&id).expect("checked by caller");
        let Some(OfferOut { pending, .. }) = p.offer_out.take() else {
            return Err(ProtoError::new(
                ErrorCode::InvalidState,
                "no subscriber offer is waiting for an answer",
            ));
        };
        let peer = p
            .subscriber
            .as_mut()
            .expect("an offer implies a subscriber peer");
        let result = SdpAnswer::from_sdp_string(&msg.sdp)
            .map_err(|e| format!("answer does not parse: {}", sdp_parse::explain(&msg.sdp, e)))
            .and_then(|answer| {
                peer.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| format!("answer was refused: {e}"))
            });
        let accepted = result.is_ok();
        if accepted {
            // str0m folds RED into its primary codec, so the answer text is where to see it.
            p.accepts_red = msg
                .sdp
                .lines()
                .any(|l| l.starts_with("a=rtpmap:") && l.contains(" red/48000"));
        }
        let mut opened_video = Vec::new();
        for dt in &mut p.downtracks {
            dt.state = match (dt.state, accepted) {
                (DowntrackState::Negotiating(mid), true) => {
                    if dt.kind.is_video() {
                        opened_video.push(mid);
                    }
                    DowntrackState::Open(mid)
                }
                (DowntrackState::Negotiating(_), false) => DowntrackState::ToOpen,
                (DowntrackState::NegotiatingStop(mid), false) => DowntrackState::ToStop(mid),
                (state, _) => state,
            };
        }
        p.downtracks
            .retain(|dt| !matches!(dt.state, DowntrackState::NegotiatingStop(_)));
        if let Err(e) = result {
            return Err(ProtoError::new(ErrorCode::InvalidSdp, e));
        }
        if self.config.resilience {
            // Sized to the path, and uncapped unless the link has shown a limit.
            p.set_rtx_cache(&opened_video, p.rtx_age);
        }
        let opened: Vec<TrackKey> = p.downtracks.iter().map(|d| d.track).collect();
        for key in opened {
            self.select_layer(id, key);
        }
        if self.participants[&id].renegotiate {
            self.negotiate_subscriber(now, id);
        }
        self.request_keyframes_for_subscriber(now, id);
        Ok(())
    }

    /// Subscribes `sub` to `track` unless already subscribed.
    pub(super) fn add_downtrack(&mut self, sub: ParticipantId, key: TrackKey) {
        let Some(&owner) = self.track_owner.get(&key) else {
            return;
        };
        if owner == sub
            || self.participants[&sub]
                .downtracks
                .iter()
                .any(|d| d.track == key)
        {
            return;
        }
        let publisher = &self.participants[&owner];
        let track = publisher.track(key).expect("owner has the track");
        let dt = Downtrack::new(publisher, track);
        self.participants
            .get_mut(&sub)
            .expect("caller checked")
            .downtracks
            .push(dt);
        if let Some(t) = self
            .participants
            .get_mut(&owner)
            .and_then(|o| o.track_mut(key))
        {
            t.subscribers.push(sub);
        }
    }

    /// Sends a new subscriber offer if subscriptions changed, unless one is already out
    /// (then it happens once the answer is in).
    pub(super) fn negotiate_subscriber(&mut self, now: Instant, id: ParticipantId) {
        let config = &self.config;
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let needs_change = p.ice_restart_requested
            || p.downtracks
                .iter()
                .any(|d| matches!(d.state, DowntrackState::ToOpen | DowntrackState::ToStop(_)));
        if !needs_change {
            return;
        }
        if p.offer_out.is_some() || p.signal_lost_at.is_some() {
            p.renegotiate = true;
            return;
        }
        p.renegotiate = false;
        let fresh = p.subscriber.is_none();
        let peer = p.subscriber.get_or_insert_with(|| {
            Box::new(Peer::new(now, config, Side::Subscriber, VideoCodec::Vp8))
        });
        self.connections.open(now, id, Side::Subscriber);
        let old_ufrag = peer.ufrag.clone();
        let restartable = peer.connected || peer.ice_lost;
        let mut api = peer.rtc.sdp_api();
        if std::mem::take(&mut p.ice_restart_requested) && restartable {
            api.ice_restart(true);
        }
        if fresh {
            // A data channel keeps one m-line alive in the BUNDLE group, so an offer that
            // stops every media line is still one a max-bundle browser accepts.
            api.add_channel(SUBSCRIBER_CHANNEL.to_owned());
        }
        for dt in &mut p.downtracks {
            match dt.state {
                DowntrackState::ToOpen => {
                    let mid = api.add_media(
                        dt.kind,
                        Direction::SendOnly,
                        Some(dt.publisher_sid.clone()),
                        Some(dt.track_id.clone()),
                        None,
                    );
                    dt.state = DowntrackState::Negotiating(mid);
                }
                DowntrackState::ToStop(mid) => {
                    api.stop_media(mid);
                    dt.state = DowntrackState::NegotiatingStop(mid);
                }
                _ => {}
            }
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        peer.ufrag = peer.current_ufrag();
        let ufrag = peer.ufrag.clone();
        let msg = SubscriberOffer {
            sdp: offer.to_sdp_string(),
            tracks: p.subscribed_tracks(),
        };
        p.offer_out = Some(OfferOut {
            pending,
            sent: msg.clone(),
        });
        let key = PeerKey {
            participant: id,
            side: Side::Subscriber,
        };
        self.demux
            .set_ufrag(key, (!fresh).then_some(old_ufrag.as_str()), &ufrag);
        self.signal(id, ServerMessage::SubscriberOffer(msg));
    }

    /// Recomputes which layer `sub` should get of `track`.
    pub(super) fn select_layer(&mut self, sub: ParticipantId, key: TrackKey) {
        let Some(&owner) = self.track_owner.get(&key) else {
            return;
        };
        let Some(track) = self.participants.get(&owner).and_then(|o| o.track(key)) else {
            return;
        };
        if !track.is_video() {
            return;
        }
        let sizes = track.layer_sizes();
        let active = track.active.clone();
        let layers: Vec<_> = (0..sizes.len()).map(|i| track.layer_at(i)).collect();
        let Some(dt) = self
            .participants
            .get_mut(&sub)
            .and_then(|s| s.downtrack_mut(key))
        else {
            return;
        };
        let ideal = choose_layer(&sizes, &active, &dt.wanted);
        let index = match dt.bandwidth_cap {
            None => ideal,
            Some(cap) => ideal.zip(cap).map(|(i, cap)| i.min(cap)),
        };
        let target = index.map(|i| layers[i]);
        if dt.forwarder.target() != target {
            tracing::debug!(subscriber = ?sub, track = ?key, ?target, wanted = ?dt.wanted, ?active, "layer target");
            dt.forwarder.set_target(target);
        }
    }

    pub(super) fn find_track(&self, room: &str, track_id: &str) -> Option<TrackKey> {
        self.rooms
            .get(room)?
            .members
            .iter()
            .find_map(|m| self.participants[m].track_by_id(track_id).map(|t| t.key))
    }

    pub(super) fn tracks_in_room(
        &self,
        room: &str,
        except: Option<ParticipantId>,
    ) -> Vec<TrackKey> {
        let Some(room) = self.rooms.get(room) else {
            return Vec::new();
        };
        room.members
            .iter()
            .filter(|&&m| Some(m) != except)
            .flat_map(|m| self.participants[m].tracks.iter().map(|t| t.key))
            .collect()
    }
}

fn track_not_found(track_id: &str) -> ProtoError {
    ProtoError::new(
        ErrorCode::TrackNotFound,
        format!("no track '{track_id}' in this room"),
    )
}
