//! A room: a name, its members and how long it may stand empty.

use std::time::{Duration, Instant};

use souk_proto::model::RoomInfo;

use crate::ParticipantId;

pub(crate) struct Room {
    pub name: String,
    pub sid: String,
    pub created_at_ms: u64,
    pub max_participants: Option<u32>,
    pub metadata: Option<String>,
    pub empty_timeout: Duration,
    /// Members in join order.
    pub members: Vec<ParticipantId>,
    /// When the last member left (or the room was created empty).
    pub empty_since: Option<Instant>,
    /// Speakers last announced, to send `active_speakers` only on change.
    pub last_speakers: Vec<ParticipantId>,
    /// The live-room state and event log.
    pub live: crate::live::LiveRoom,
}

impl Room {
    pub fn info(&self) -> RoomInfo {
        RoomInfo {
            name: self.name.clone(),
            sid: self.sid.clone(),
            created_at_ms: self.created_at_ms,
            num_participants: self.members.len() as u32,
            max_participants: self.max_participants,
            metadata: self.metadata.clone(),
        }
    }

    pub fn is_full(&self) -> bool {
        self.max_participants
            .is_some_and(|max| self.members.len() as u32 >= max)
    }

    /// True when the room has stood empty past its timeout and should close.
    pub fn expired(&self, now: Instant) -> bool {
        self.members.is_empty()
            && self
                .empty_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.empty_timeout)
    }
}
