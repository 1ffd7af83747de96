//! Joining, resuming and leaving, and the room lifecycle that follows from them.

use std::time::Instant;

use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::model::LeaveReason;
use souk_proto::model::TrackInfo;
use souk_proto::rest::WebhookKind;
use souk_proto::signal::{
    Joined, LeaveNotice, ParticipantLeft, ParticipantRef, ServerMessage, TrackUnpublished,
};
use souk_proto::token::{validate_name, Role, MAX_IDENTITY_BYTES, MAX_ROOM_NAME_BYTES};
use souk_proto::PROTOCOL_VERSION;

use super::{JoinRequest, Output, ResumeRequest, Sfu};
use crate::config::RTX_CACHE_INITIAL_AGE;
use crate::participant::{DowntrackState, Origin, Participant};
use crate::room::Room;
use crate::ParticipantId;

impl Sfu {
    /// Adds a participant to a room (creating the room when allowed). The `joined`
    /// message is queued first, so it reaches the client before anything else.
    pub fn join(&mut self, now: Instant, req: JoinRequest) -> Result<ParticipantId, ProtoError> {
        let invalid = |e: String| ProtoError::new(ErrorCode::InvalidRequest, e);
        validate_name("room", &req.room, MAX_ROOM_NAME_BYTES).map_err(invalid)?;
        validate_name("identity", &req.identity, MAX_IDENTITY_BYTES).map_err(invalid)?;

        if !self.rooms.contains_key(&req.room) {
            if !self.config.auto_create_rooms {
                return Err(ProtoError::new(
                    ErrorCode::RoomNotFound,
                    format!("room '{}' does not exist; create it first", req.room),
                ));
            }
            self.open_room(now, &req.room, None, None, None);
        }

        // The same identity joining again replaces the old session (a second tab, or a
        // client that lost its socket and did not resume).
        let duplicate = self.rooms[&req.room]
            .members
            .iter()
            .copied()
            .find(|id| self.participants[id].identity == req.identity);
        if let Some(old) = duplicate {
            self.remove_participant(now, old, LeaveReason::DuplicateIdentity);
        }
        let room = &self.rooms[&req.room];
        let now_ms = self.unix_ms(now);
        if let Some(until) = room
            .live
            .banned_until
            .get(&req.identity)
            .filter(|u| **u > now_ms)
        {
            return Err(ProtoError::new(
                ErrorCode::Banned,
                if *until == u64::MAX {
                    "you are banned from this room".to_owned()
                } else {
                    format!(
                        "you are banned from this room for another {} s",
                        (until - now_ms).div_ceil(1000)
                    )
                },
            ));
        }
        if room.is_full() {
            return Err(ProtoError::new(
                ErrorCode::RoomFull,
                format!(
                    "room '{}' is full ({} participants)",
                    req.room,
                    room.members.len()
                ),
            ));
        }

        let id = ParticipantId(self.next_internal_id());
        let participant = Participant {
            id,
            sid: self.random_id("PA_", 12),
            room: req.room.clone(),
            identity: req.identity,
            name: req.name,
            role: req.role,
            grants: req.grants,
            metadata: req.metadata,
            joined_at_ms: self.unix_ms(now),
            auto_subscribe: req.auto_subscribe,
            resume_secret: self.random_id("", 32),
            signal_lost_at: None,
            announced: req.role != Role::Audience || req.grants.publish,
            headless: false,
            last_heard: None,
            publisher: None,
            subscriber: None,
            tracks: Vec::new(),
            ssrc_routes: Default::default(),
            downtracks: Vec::new(),
            offer_out: None,
            renegotiate: false,
            ice_restart_requested: false,
            accepts_red: false,
            estimate_bps: None,
            downlink: Default::default(),
            path: None,
            grade_told: None,
            sent_at_last_stats: None,
            forwarded_bytes: 0,
            media_bps: 0.0,
            rtx_age: RTX_CACHE_INITIAL_AGE,
            redundancy: Default::default(),
            level: Default::default(),
        };
        let info = participant.info();
        self.participants.insert(id, Box::new(participant));
        let room = self.rooms.get_mut(&req.room).expect("room opened above");
        room.members.push(id);
        room.empty_since = None;
        room.live.joined(&info.identity);

        let joined = self.joined_message(id, req.req, req.last_event.as_ref());
        self.signal(id, ServerMessage::Joined(joined));
        if self.participants[&id].announced {
            self.broadcast(
                &req.room,
                Some(id),
                ServerMessage::ParticipantJoined(ParticipantRef {
                    participant: info.clone(),
                }),
            );
        }
        self.webhook(WebhookKind::ParticipantJoined {
            room: req.room.clone(),
            participant: info,
        });

        if req.auto_subscribe && req.grants.subscribe {
            let tracks = self.tracks_in_room(&req.room, Some(id));
            for key in tracks {
                self.add_downtrack(id, key);
            }
            self.negotiate_subscriber(now, id);
        }
        Ok(id)
    }

    /// Takes over a session whose socket dropped: same participant, tracks and
    /// subscriptions. Any offer the client may have missed is sent again.
    pub fn resume(
        &mut self,
        now: Instant,
        req: ResumeRequest,
    ) -> Result<ParticipantId, ProtoError> {
        let not_found = || {
            ProtoError::new(
                ErrorCode::SessionNotFound,
                "that session is gone (it left or its resume window passed); join again",
            )
        };
        let id = self
            .participants
            .values()
            .find(|p| p.sid == req.sid)
            .map(|p| p.id)
            .ok_or_else(not_found)?;
        let p = &self.participants[&id];
        if p.room != req.room || p.identity != req.identity || p.resume_secret != req.resume_secret
        {
            return Err(not_found());
        }
        let p = self.participants.get_mut(&id).expect("found above");
        p.signal_lost_at = None;
        let last_offer = p.offer_out.as_ref().map(|out| out.sent.clone());
        let joined = self.joined_message(id, req.req, req.last_event.as_ref());
        self.signal(id, ServerMessage::Resumed(joined));
        if let Some(offer) = last_offer {
            self.signal(id, ServerMessage::SubscriberOffer(offer));
        }
        self.negotiate_subscriber(now, id);
        Ok(id)
    }

    /// The signalling socket of `id` closed without `leave`. The participant stays,
    /// resumable, for the resume window.
    pub fn signal_lost(&mut self, now: Instant, id: ParticipantId) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.signal_lost_at.get_or_insert(now);
        }
    }

    fn joined_message(
        &self,
        id: ParticipantId,
        req: Option<u32>,
        last_event: Option<&souk_proto::live::EventCursor>,
    ) -> Joined {
        let p = &self.participants[&id];
        let room = &self.rooms[&p.room];
        Joined {
            req,
            protocol: PROTOCOL_VERSION,
            room: room.info(),
            participant: p.info(),
            others: room
                .members
                .iter()
                .filter(|&&m| m != id && self.participants[&m].announced)
                .map(|m| self.participants[m].info())
                .collect(),
            resume_secret: p.resume_secret.clone(),
            resume_window_ms: self.config.resume_window.as_millis() as u64,
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            live: room.live.snapshot(room.members.len() as u64, last_event),
        }
    }

    pub(super) fn open_room(
        &mut self,
        now: Instant,
        name: &str,
        max_participants: Option<u32>,
        empty_timeout: Option<std::time::Duration>,
        metadata: Option<String>,
    ) {
        let sid = self.random_id("RM_", 12);
        let room = Room {
            name: name.to_owned(),
            live: crate::live::LiveRoom::new(sid.clone()),
            sid,
            created_at_ms: self.unix_ms(now),
            max_participants,
            metadata,
            empty_timeout: empty_timeout.unwrap_or(self.config.empty_room_timeout),
            members: Vec::new(),
            empty_since: Some(now),
            last_speakers: Vec::new(),
        };
        self.webhook(WebhookKind::RoomStarted { room: room.info() });
        self.rooms.insert(name.to_owned(), room);
    }

    pub(super) fn close_room(&mut self, now: Instant, name: &str, reason: LeaveReason) {
        let members = self
            .rooms
            .get(name)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for id in members {
            self.remove_participant(now, id, reason);
        }
        if let Some(room) = self.rooms.remove(name) {
            self.webhook(WebhookKind::RoomFinished { room: room.info() });
        }
    }

    /// Removes a participant for good: unpublishes their tracks, drops their
    /// subscriptions, tells the room, and closes their socket.
    pub(super) fn remove_participant(
        &mut self,
        now: Instant,
        id: ParticipantId,
        reason: LeaveReason,
    ) {
        let Some(mut p) = self.participants.remove(&id) else {
            return;
        };
        self.connections.close(id);
        self.demux.forget(id);

        // Their tracks leave every subscriber's connection.
        for track in std::mem::take(&mut p.tracks) {
            self.track_owner.remove(&track.key);
            for sub in &track.subscribers {
                self.drop_downtrack(*sub, track.key);
            }
            self.announce_unpublished(&p.origin(), track.info);
        }
        // Their subscriptions leave every publisher's fan-out list.
        for dt in &p.downtracks {
            if let Some(track) = self
                .participants
                .get_mut(&dt.publisher)
                .and_then(|publisher| publisher.track_mut(dt.track))
            {
                track.subscribers.retain(|s| *s != id);
            }
        }

        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.members.retain(|m| *m != id);
            room.last_speakers.retain(|m| *m != id);
            if room.members.is_empty() {
                room.empty_since = Some(now);
            }
        }
        self.leave_stage(now, &p.room, &p.identity);
        let info = p.info();
        if p.announced {
            self.broadcast(
                &p.room,
                None,
                ServerMessage::ParticipantLeft(ParticipantLeft {
                    sid: p.sid.clone(),
                    identity: p.identity.clone(),
                    reason,
                }),
            );
        }
        self.webhook(WebhookKind::ParticipantLeft {
            room: p.room.clone(),
            participant: info,
            reason,
        });
        let subscribers: Vec<_> = self
            .rooms
            .get(&p.room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for sub in subscribers {
            self.negotiate_subscriber(now, sub);
        }

        self.signal(
            id,
            ServerMessage::Leave(LeaveNotice {
                reason,
                message: leave_message(reason).to_owned(),
            }),
        );
        self.outputs.push_back(Output::Disconnect(id));
    }

    /// Tells the room and the webhook that `publisher` no longer publishes `track`.
    pub(super) fn announce_unpublished(&mut self, publisher: &Origin, track: TrackInfo) {
        self.broadcast(
            &publisher.room,
            Some(publisher.id),
            ServerMessage::TrackUnpublished(TrackUnpublished {
                participant_sid: publisher.sid.clone(),
                track_id: track.track_id.clone(),
            }),
        );
        self.webhook(WebhookKind::TrackUnpublished {
            room: publisher.room.clone(),
            participant_sid: publisher.sid.clone(),
            identity: publisher.identity.clone(),
            track,
        });
    }

    /// Removes the subscription of `subscriber` to `track`: at once if it was never
    /// offered, else through the next offer.
    pub(super) fn drop_downtrack(
        &mut self,
        subscriber: ParticipantId,
        track: crate::track::TrackKey,
    ) {
        let Some(sub) = self.participants.get_mut(&subscriber) else {
            return;
        };
        sub.downtracks.retain_mut(|dt| {
            if dt.track != track {
                return true;
            }
            match dt.state {
                DowntrackState::ToOpen => false,
                DowntrackState::Negotiating(mid) | DowntrackState::Open(mid) => {
                    dt.state = DowntrackState::ToStop(mid);
                    true
                }
                DowntrackState::ToStop(_) | DowntrackState::NegotiatingStop(_) => true,
            }
        });
    }

    /// Ends every session, telling each client why.
    pub fn shutdown(&mut self, now: Instant) {
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            self.close_room(now, &name, LeaveReason::ServerShutdown);
        }
    }

    /// Removes participants whose resume window passed and rooms empty for too long.
    pub(super) fn expire_sessions(&mut self, now: Instant) {
        let window = self.config.resume_window;
        let lost: Vec<_> = self
            .participants
            .values()
            .filter(|p| {
                p.signal_lost_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= window)
            })
            .map(|p| p.id)
            .collect();
        for id in lost {
            self.remove_participant(now, id, LeaveReason::ConnectionLost);
        }
        let expired: Vec<_> = self
            .rooms
            .values()
            .filter(|r| r.expired(now))
            .map(|r| r.name.clone())
            .collect();
        for name in expired {
            self.close_room(now, &name, LeaveReason::RoomDeleted);
        }
    }
}

fn leave_message(reason: LeaveReason) -> &'static str {
    match reason {
        LeaveReason::ClientLeft => "you left the room",
        LeaveReason::ConnectionLost => "your connection was lost and not resumed in time",
        LeaveReason::Removed => "you were removed from the room",
        LeaveReason::RoomDeleted => "the room was closed",
        LeaveReason::DuplicateIdentity => "you joined this room again from another connection",
        LeaveReason::ServerShutdown => "the server is shutting down",
    }
}
