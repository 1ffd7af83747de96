//! Live rooms: the stage (hands, seats, runtime publish rights), comments, likes,
//! viewers, pinned products and moderation, all announced as numbered room events.

use std::time::{Duration, Instant};

use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::live::{Comment, LiveEvent, Moderation, PinnedProduct, MAX_COMMENT_CHARS};
use souk_proto::model::LeaveReason;
use souk_proto::signal::{AgentEvent, ClientMessage, ParticipantRef, RoomEvents, ServerMessage};
use souk_proto::token::Role;

use super::{Output, Sfu};
use crate::live::{slices_for, CommentVerdict};
use crate::ParticipantId;

/// Likes are announced in batches this often.
const LIKES_EVERY_MS: u64 = 500;
/// A caption is a line of speech, not a document.
const MAX_CAPTION_CHARS: usize = 2000;

fn denied(what: &str) -> ProtoError {
    ProtoError::new(
        ErrorCode::PermissionDenied,
        format!("only the host or a moderator can {what}"),
    )
}

/// How long each of a room's `slices` waits after the one before: every slice's turn
/// comes once per batch `window`.
fn turn(window: Duration, slices: usize) -> Duration {
    window / slices as u32
}

impl Sfu {
    /// Announces an event (a committed gift, a new sale...) to everyone in `room` within
    /// one batch window, and keeps it for clients catching up.
    pub fn publish_event(&mut self, now: Instant, room: &str, event: LiveEvent) {
        let at = self.unix_ms(now);
        let window = self.config.live_batch;
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.live.record(at, event);
        if r.live.next_turn.is_none() {
            let due = now + turn(window, slices_for(r.members.len()));
            r.live.next_turn = Some(due);
            self.next_live_flush = Some(self.next_live_flush.map_or(due, |t| t.min(due)));
        }
    }

    /// For each room whose turn has come: sends its next slice what that slice has not
    /// had, as one frame serialised once, and schedules the next slice's turn. A turn
    /// counts from the end of the one before: when the machine falls behind, rounds
    /// stretch and carry more events per frame, rather than adding frames.
    pub(super) fn flush_live(&mut self, now: Instant) {
        let window = self.config.live_batch;
        for room in self.rooms.values_mut() {
            if room.live.next_turn.is_none_or(|due| due > now) {
                continue;
            }
            let slices = slices_for(room.members.len());
            let (slice, events) = room.live.next_slice_events(slices);
            room.live.next_turn = room.live.has_unsent().then(|| now + turn(window, slices));
            let members: Vec<ParticipantId> = room
                .members
                .iter()
                .filter(|id| id.0 as usize % slices == slice)
                .copied()
                .collect();
            if events.is_empty() || members.is_empty() {
                continue;
            }
            let text = ServerMessage::RoomEvents(RoomEvents { events }).to_json();
            self.outputs.push_back(Output::Broadcast(members, text));
        }
        self.next_live_flush = self.rooms.values().filter_map(|r| r.live.next_turn).min();
    }

    /// The room a participant is in, for drivers that act on its behalf.
    pub fn room_of(&self, id: ParticipantId) -> Option<&str> {
        self.participants.get(&id).map(|p| p.room.as_str())
    }

    /// Whether `identity` is the host or holds a seat in `room`: who may receive gifts.
    pub fn on_stage(&self, room: &str, identity: &str) -> bool {
        let Some(r) = self.rooms.get(room) else {
            return false;
        };
        r.live.stage.seats.iter().any(|s| s == identity)
            || r.members.iter().any(|m| {
                let p = &self.participants[m];
                p.identity == identity && p.role == Role::Host
            })
    }

    /// The capture time of the host's newest video frame, from its sender reports.
    fn stage_capture_ms(&self, room: &str) -> Option<u64> {
        self.rooms[room]
            .members
            .iter()
            .map(|m| &self.participants[m])
            .filter(|p| p.role == Role::Host)
            .flat_map(|p| p.tracks.iter())
            .filter(|t| t.info.kind == souk_proto::model::TrackKind::Video)
            .find_map(|t| t.capture_ms())
    }

    fn can_moderate(&self, id: ParticipantId) -> bool {
        let p = &self.participants[&id];
        p.role == Role::Host
            || self.rooms[&p.room]
                .live
                .stage
                .moderators
                .contains(&p.identity)
    }

    fn announce_stage(&mut self, now: Instant, room: &str) {
        let stage = self.rooms[room].live.stage.clone();
        self.publish_event(now, room, LiveEvent::Stage(stage));
    }

    /// Grants or withdraws publish rights at runtime: no new token, no reconnect.
    /// Withdrawing also unpublishes what they publish.
    fn set_publish(&mut self, now: Instant, id: ParticipantId, allowed: bool) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.grants.publish = allowed;
        let room = p.room.clone();
        if !allowed {
            let tracks: Vec<String> = p.tracks.iter().map(|t| t.info.track_id.clone()).collect();
            for track in tracks {
                let _ = self.unpublish(now, id, &track);
            }
        }
        let p = self.participants.get_mut(&id).expect("checked above");
        let first_time = !p.announced;
        p.announced = true;
        let info = p.info();
        let participant = ParticipantRef { participant: info };
        if first_time {
            // A viewer given a seat becomes someone the room sees.
            self.broadcast(
                &room,
                Some(id),
                ServerMessage::ParticipantJoined(participant.clone()),
            );
            self.signal(id, ServerMessage::ParticipantUpdated(participant));
        } else {
            self.broadcast(&room, None, ServerMessage::ParticipantUpdated(participant));
        }
    }

    /// Handles the live-room messages; `Ok(Some(result))` is acknowledged with it.
    pub(super) fn handle_live(
        &mut self,
        now: Instant,
        id: ParticipantId,
        msg: ClientMessage,
    ) -> Result<Option<serde_json::Value>, ProtoError> {
        let room = self.participants[&id].room.clone();
        let identity = self.participants[&id].identity.clone();
        match msg {
            ClientMessage::RaiseHand(_) => {
                let p = &self.participants[&id];
                if p.grants.publish {
                    return Err(ProtoError::new(
                        ErrorCode::InvalidState,
                        "you can publish already",
                    ));
                }
                let stage = &mut self.rooms.get_mut(&room).expect("member's room").live.stage;
                if !stage.hands.contains(&identity) {
                    stage.hands.push(identity);
                    self.announce_stage(now, &room);
                }
            }
            ClientMessage::LowerHand(_) => {
                let stage = &mut self.rooms.get_mut(&room).expect("member's room").live.stage;
                let before = stage.hands.len();
                stage.hands.retain(|h| *h != identity);
                if stage.hands.len() != before {
                    self.announce_stage(now, &room);
                }
            }
            ClientMessage::StageDecision(d) => {
                if !self.can_moderate(id) {
                    return Err(denied("answer a raised hand"));
                }
                let stage = &mut self.rooms.get_mut(&room).expect("member's room").live.stage;
                if !stage.hands.contains(&d.identity) {
                    return Err(ProtoError::new(
                        ErrorCode::ParticipantNotFound,
                        format!("'{}' has no raised hand", d.identity),
                    ));
                }
                if d.approve && stage.seats.len() as u32 >= stage.max_seats {
                    return Err(ProtoError::new(
                        ErrorCode::RoomFull,
                        format!(
                            "all {} stage seats are taken; free one first",
                            stage.max_seats
                        ),
                    ));
                }
                stage.hands.retain(|h| *h != d.identity);
                if d.approve {
                    stage.seats.push(d.identity.clone());
                }
                if let (true, Some(guest)) =
                    (d.approve, self.member_by_identity(&room, &d.identity).ok())
                {
                    self.set_publish(now, guest, true);
                }
                self.announce_stage(now, &room);
            }
            ClientMessage::StageRemove(r) => {
                let leaving = r.identity == identity;
                if !leaving && !self.can_moderate(id) {
                    return Err(denied("take a seat back"));
                }
                let stage = &mut self.rooms.get_mut(&room).expect("member's room").live.stage;
                if !stage.seats.contains(&r.identity) {
                    return Err(ProtoError::new(
                        ErrorCode::ParticipantNotFound,
                        format!("'{}' holds no seat", r.identity),
                    ));
                }
                stage.seats.retain(|s| *s != r.identity);
                if let Ok(cohost) = self.member_by_identity(&room, &r.identity) {
                    self.set_publish(now, cohost, false);
                }
                self.announce_stage(now, &room);
            }
            ClientMessage::Moderate(m) => {
                if !self.can_moderate(id) {
                    return Err(denied("moderate"));
                }
                self.moderate(now, &room, id, m.action)?;
            }
            ClientMessage::Comment(c) => return self.comment(now, id, &room, c.text).map(Some),
            ClientMessage::Like(like) => {
                let live = &mut self.rooms.get_mut(&room).expect("member's room").live;
                // A client cannot claim a thousand likes a message.
                live.likes_pending += u64::from(like.count.clamp(1, 10));
                return Ok(None);
            }
            ClientMessage::PinProduct(pin) => {
                if self.participants[&id].role != Role::Host && !self.can_moderate(id) {
                    return Err(denied("pin products"));
                }
                let product = match pin.product {
                    Some(mut product) => {
                        // Stamp the frame on screen now, so each viewer shows the card
                        // when that frame plays rather than when the event arrives.
                        if product.capture_ms.is_none() {
                            product.capture_ms = self.stage_capture_ms(&room);
                        }
                        Some(check_product(product)?)
                    }
                    None => None,
                };
                let live = &mut self.rooms.get_mut(&room).expect("member's room").live;
                live.pinned = product.clone();
                let event = match product {
                    Some(product) => LiveEvent::ProductPinned(product),
                    None => LiveEvent::ProductUnpinned,
                };
                self.publish_event(now, &room, event);
            }
            ClientMessage::AgentEvent(request) => {
                let p = &self.participants[&id];
                if p.role != Role::Agent {
                    return Err(denied("publish captions or agent status (agent role only)"));
                }
                let event = match request.event {
                    AgentEvent::Caption(mut caption) => {
                        let chars = caption.text.chars().count();
                        if chars > MAX_CAPTION_CHARS {
                            return Err(ProtoError::new(
                                ErrorCode::MessageTooLarge,
                                format!("a caption has at most {MAX_CAPTION_CHARS} characters, not {chars}"),
                            ));
                        }
                        // The agent's own lines are always labelled as the AI's.
                        caption.ai = caption.speaker == identity;
                        LiveEvent::Caption(caption)
                    }
                    AgentEvent::Status(mut status) => {
                        status.identity = identity.clone();
                        LiveEvent::Agent(status)
                    }
                };
                self.publish_event(now, &room, event);
            }
            _ => unreachable!("only live messages are routed here"),
        }
        Ok(Some(serde_json::Value::Null))
    }

    fn comment(
        &mut self,
        now: Instant,
        id: ParticipantId,
        room: &str,
        text: String,
    ) -> Result<serde_json::Value, ProtoError> {
        let p = &self.participants[&id];
        if !p.grants.data {
            return Err(ProtoError::new(
                ErrorCode::PermissionDenied,
                "your token does not allow comments",
            ));
        }
        let text = text.trim().to_owned();
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_COMMENT_CHARS {
            return Err(ProtoError::new(
                if chars == 0 {
                    ErrorCode::InvalidRequest
                } else {
                    ErrorCode::MessageTooLarge
                },
                format!("a comment has 1 to {MAX_COMMENT_CHARS} characters"),
            ));
        }
        let (identity, name) = (p.identity.clone(), p.name.clone());
        let privileged = self.can_moderate(id);
        let now_ms = self.unix_ms(now);
        let live = &mut self.rooms.get_mut(room).expect("member's room").live;
        if let Some(until) = live.muted_until.get(&identity).filter(|u| **u > now_ms) {
            return Err(ProtoError::new(
                ErrorCode::Muted,
                format!(
                    "you are muted for another {} s",
                    (until - now_ms).div_ceil(1000)
                ),
            ));
        }
        match live.admit_comment(&identity, now_ms, privileged) {
            CommentVerdict::TooFast(wait) => Err(ProtoError::new(
                ErrorCode::RateLimited,
                format!("too many comments; wait {} s", wait.div_ceil(1000)),
            )),
            // The sender shows its own comment; others are spared the overload.
            CommentVerdict::Shed => Ok(serde_json::json!({ "shed": true })),
            CommentVerdict::Accept => {
                let comment_id = live.next_comment_id;
                live.next_comment_id += 1;
                let comment = Comment {
                    id: comment_id,
                    identity,
                    name,
                    text,
                };
                self.publish_event(now, room, LiveEvent::Comment(comment));
                Ok(serde_json::json!({ "id": comment_id }))
            }
        }
    }

    fn moderate(
        &mut self,
        now: Instant,
        room: &str,
        by: ParticipantId,
        action: Moderation,
    ) -> Result<(), ProtoError> {
        let now_ms = self.unix_ms(now);
        let live = &mut self.rooms.get_mut(room).expect("member's room").live;
        match action {
            Moderation::Mute { identity, seconds } => {
                let until = now_ms + seconds.min(86_400 * 30) * 1000;
                live.muted_until.insert(identity.clone(), until);
                self.publish_event(
                    now,
                    room,
                    LiveEvent::UserMuted {
                        identity,
                        until_ms: until,
                    },
                );
            }
            Moderation::Ban { identity, seconds } => {
                let until = if seconds == 0 {
                    u64::MAX
                } else {
                    now_ms + seconds * 1000
                };
                live.banned_until.insert(identity.clone(), until);
                live.stage.seats.retain(|s| *s != identity);
                live.stage.hands.retain(|h| *h != identity);
                if let Ok(target) = self.member_by_identity(room, &identity) {
                    if self.participants[&target].role == Role::Host {
                        return Err(ProtoError::new(
                            ErrorCode::PermissionDenied,
                            "the host cannot be banned",
                        ));
                    }
                    self.remove_participant(now, target, LeaveReason::Removed);
                }
                self.announce_stage(now, room);
            }
            Moderation::DeleteComment { id } => {
                self.publish_event(now, room, LiveEvent::CommentDeleted { id });
            }
            Moderation::SlowMode { seconds } => {
                live.slow_mode_s = seconds.min(3600);
                let seconds = live.slow_mode_s;
                self.publish_event(now, room, LiveEvent::SlowMode { seconds });
            }
            Moderation::Moderator { identity, on } => {
                if self.participants[&by].role != Role::Host {
                    return Err(ProtoError::new(
                        ErrorCode::PermissionDenied,
                        "only the host appoints moderators",
                    ));
                }
                let stage = &mut self.rooms.get_mut(room).expect("member's room").live.stage;
                stage.moderators.retain(|m| *m != identity);
                if on {
                    stage.moderators.push(identity);
                }
                self.announce_stage(now, room);
            }
        }
        Ok(())
    }

    /// Batches likes and viewer counts into events (called on every tick).
    pub(super) fn tick_live(&mut self, now: Instant) {
        let now_ms = self.unix_ms(now);
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            let room = self.rooms.get_mut(&name).expect("listed");
            let viewers = room.members.len() as u64;
            let live = &mut room.live;
            let mut events = Vec::new();
            if live.likes_pending > 0 && now_ms >= live.likes_flushed_ms + LIKES_EVERY_MS {
                live.likes_total += live.likes_pending;
                events.push(LiveEvent::Likes {
                    added: live.likes_pending,
                    total: live.likes_total,
                });
                live.likes_pending = 0;
                live.likes_flushed_ms = now_ms;
            }
            if live.viewers_changed && now_ms >= live.viewers_flushed_ms + 1000 {
                live.viewers_changed = false;
                live.viewers_flushed_ms = now_ms;
                events.push(LiveEvent::Viewers {
                    count: viewers,
                    recent: live.recent_joiners.iter().cloned().collect(),
                });
            }
            for event in events {
                self.publish_event(now, &name, event);
            }
        }
    }

    /// A participant left: their hand and seat go with them.
    pub(super) fn leave_stage(&mut self, now: Instant, room: &str, identity: &str) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.live.viewers_changed = true;
        let stage = &mut r.live.stage;
        let before = (stage.hands.len(), stage.seats.len());
        stage.hands.retain(|h| h != identity);
        stage.seats.retain(|s| s != identity);
        if before != (stage.hands.len(), stage.seats.len()) {
            self.announce_stage(now, room);
        }
    }
}

fn check_product(product: PinnedProduct) -> Result<PinnedProduct, ProtoError> {
    let invalid = |why: &str| ProtoError::new(ErrorCode::InvalidRequest, why.to_owned());
    if product.product_id.is_empty()
        || product.title.is_empty()
        || product.title.chars().count() > 200
    {
        return Err(invalid(
            "a product needs an id and a title of up to 200 characters",
        ));
    }
    if product.price_minor < 0 || product.currency.len() != 3 {
        return Err(invalid(
            "a product needs a non-negative price in minor units and a currency code",
        ));
    }
    for url in [&product.image_url, &product.url].into_iter().flatten() {
        if !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with('/')) {
            return Err(invalid("product links must be http(s) URLs"));
        }
    }
    Ok(product)
}
