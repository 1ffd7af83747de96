//! The room service: what the REST API may do to rooms and participants.

use std::time::{Duration, Instant};

use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::model::{LeaveReason, ParticipantInfo, RoomInfo};
use souk_proto::rest::CreateRoom;
use souk_proto::token::{validate_name, MAX_ROOM_NAME_BYTES};

use super::Sfu;
use crate::ParticipantId;

impl Sfu {
    pub fn create_room(&mut self, now: Instant, req: CreateRoom) -> Result<RoomInfo, ProtoError> {
        validate_name("room", &req.name, MAX_ROOM_NAME_BYTES)
            .map_err(|e| ProtoError::new(ErrorCode::InvalidRequest, e))?;
        if self.rooms.contains_key(&req.name) {
            return Err(ProtoError::new(
                ErrorCode::RoomExists,
                format!("room '{}' already exists", req.name),
            ));
        }
        let timeout = req.empty_timeout_s.map(|s| Duration::from_secs(s as u64));
        self.open_room(now, &req.name, req.max_participants, timeout, req.metadata);
        Ok(self.rooms[&req.name].info())
    }

    pub fn list_rooms(&self) -> Vec<RoomInfo> {
        let mut rooms: Vec<_> = self.rooms.values().map(|r| r.info()).collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    pub fn delete_room(&mut self, now: Instant, name: &str) -> Result<(), ProtoError> {
        if !self.rooms.contains_key(name) {
            return Err(room_not_found(name));
        }
        self.close_room(now, name, LeaveReason::RoomDeleted);
        Ok(())
    }

    pub fn list_participants(&self, room: &str) -> Result<Vec<ParticipantInfo>, ProtoError> {
        let room = self.rooms.get(room).ok_or_else(|| room_not_found(room))?;
        Ok(room
            .members
            .iter()
            .map(|m| self.participants[m].info())
            .collect())
    }

    pub fn remove_participant_by_identity(
        &mut self,
        now: Instant,
        room: &str,
        identity: &str,
    ) -> Result<(), ProtoError> {
        let id = self.member_by_identity(room, identity)?;
        self.remove_participant(now, id, LeaveReason::Removed);
        Ok(())
    }

    /// A moderator's mute: the publisher is told, like everyone else.
    pub fn mute_track(
        &mut self,
        now: Instant,
        room: &str,
        identity: &str,
        track_id: &str,
        muted: bool,
    ) -> Result<(), ProtoError> {
        let id = self.member_by_identity(room, identity)?;
        let key = self.participants[&id]
            .track_by_id(track_id)
            .map(|t| t.key)
            .ok_or_else(|| {
                ProtoError::new(
                    ErrorCode::TrackNotFound,
                    format!("'{identity}' publishes no track '{track_id}'"),
                )
            })?;
        self.set_muted(now, id, key, muted);
        Ok(())
    }

    pub(super) fn member_by_identity(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<ParticipantId, ProtoError> {
        let r = self.rooms.get(room).ok_or_else(|| room_not_found(room))?;
        r.members
            .iter()
            .copied()
            .find(|m| self.participants[m].identity == identity)
            .ok_or_else(|| {
                ProtoError::new(
                    ErrorCode::ParticipantNotFound,
                    format!("no participant '{identity}' in room '{room}'"),
                )
            })
    }
}

fn room_not_found(name: &str) -> ProtoError {
    ProtoError::new(
        ErrorCode::RoomNotFound,
        format!("room '{name}' does not exist"),
    )
}
