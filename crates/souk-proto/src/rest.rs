//! Bodies of the room-service REST API (`/api/v1`) and of webhooks.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::model::{LeaveReason, ParticipantInfo, RoomInfo, TrackInfo};

/// Every REST error has this body, with a matching HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRoom {
    pub name: String,
    /// Most participants at once; unlimited when absent.
    #[serde(default)]
    pub max_participants: Option<u32>,
    /// Seconds an empty room lives before it closes (default 300).
    #[serde(default)]
    pub empty_timeout_s: Option<u32>,
    #[serde(default)]
    pub metadata: Option<String>,
    /// The AI agent this room asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<RoomAgent>,
}

/// A room's AI agent: which shop it speaks for, and when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomAgent {
    pub shop: String,
    /// `always`: when the first shopper joins; `no_staff` (default): when a shopper joins
    /// and no member of staff is in the room.
    #[serde(default = "no_staff")]
    pub when: String,
}

fn no_staff() -> String {
    "no_staff".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomList {
    pub rooms: Vec<RoomInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantList {
    pub participants: Vec<ParticipantInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MuteTrack {
    pub muted: bool,
}

/// A webhook delivery. The body is signed: `Souk-Signature: t=<unix>,v1=<hex hmac-sha256
/// of "<t>.<body>" with the API secret>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Unique per event; a receiver deduplicates retries by it.
    pub id: String,
    /// Unix milliseconds when the event happened.
    pub created_at_ms: u64,
    #[serde(flatten)]
    pub kind: WebhookKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WebhookKind {
    RoomStarted {
        room: RoomInfo,
    },
    RoomFinished {
        room: RoomInfo,
    },
    ParticipantJoined {
        room: String,
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        room: String,
        participant: ParticipantInfo,
        reason: LeaveReason,
    },
    TrackPublished {
        room: String,
        participant_sid: String,
        identity: String,
        track: TrackInfo,
    },
    TrackUnpublished {
        room: String,
        participant_sid: String,
        identity: String,
        track: TrackInfo,
    },
}
