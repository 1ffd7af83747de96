//! The things signalling and REST talk about: participants, tracks, layers.

use serde::{Deserialize, Serialize};

use crate::token::{Grants, Role};

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

/// Where a track comes from, so pages can lay it out (camera in the grid, screen large).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    #[default]
    Camera,
    Microphone,
    ScreenShare,
    ScreenShareAudio,
    Unknown,
}

/// One simulcast encoding of a video track as the publisher announced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// The RTP stream id (`a=rid`) of this encoding.
    pub rid: String,
    pub width: u32,
    pub height: u32,
}

/// A published track as every participant sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Server-assigned id, stable for the life of the track.
    pub track_id: String,
    pub kind: TrackKind,
    #[serde(default)]
    pub source: TrackSource,
    /// Free text the publisher chose, e.g. "camera".
    #[serde(default)]
    pub name: String,
    pub muted: bool,
    /// Full-resolution size for video; 0 for audio or when unknown.
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    /// Simulcast layers, smallest first. Empty when the track is not simulcast.
    #[serde(default)]
    pub layers: Vec<LayerInfo>,
    /// Negotiated codec, lower case ("vp8", "h264", "opus"), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
}

/// A participant as others see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Server-assigned session id, new on every join (kept across a resume).
    pub sid: String,
    pub identity: String,
    #[serde(default)]
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    pub grants: Grants,
    #[serde(default)]
    pub tracks: Vec<TrackInfo>,
    /// Unix milliseconds of the join.
    pub joined_at_ms: u64,
}

/// A room as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    /// New for every incarnation of a room of this name.
    pub sid: String,
    pub created_at_ms: u64,
    pub num_participants: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// How loud a participant is, 0.0 (silent) to 1.0 (full scale).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerInfo {
    pub sid: String,
    pub level: f32,
}

/// How a participant's connection is doing, from its E-model MOS estimate
/// (excellent ≥ 4.0, good ≥ 3.5, poor below).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityGrade {
    Excellent,
    Good,
    Poor,
}

/// Why a participant left or was made to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The client said `leave`.
    ClientLeft,
    /// The connection dropped and was not resumed in time.
    ConnectionLost,
    /// Removed through the room service API.
    Removed,
    /// The room was deleted.
    RoomDeleted,
    /// The same identity joined again.
    DuplicateIdentity,
    /// The server is shutting down.
    ServerShutdown,
}
