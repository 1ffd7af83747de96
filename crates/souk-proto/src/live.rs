//! Live-commerce rooms on the signalling socket: the stage, comments, likes, products,
//! and the money events, as one numbered stream per room.
//!
//! Every room event has a sequence number within the room's *epoch* (the room instance).
//! A client that reconnects says the last one it saw and gets what it missed from a
//! bounded window, or learns it must rebuild from the snapshot in `joined`.

use serde::{Deserialize, Serialize};

use crate::commerce::{Battle, Coupon, GiftSent, Sale};

/// Longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 200;
/// Room events kept for catching up.
pub const EVENT_WINDOW: usize = 512;

/// Where a client's view of a room's events stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCursor {
    pub epoch: String,
    pub seq: u64,
}

/// One numbered event of a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    pub epoch: String,
    pub seq: u64,
    pub at_ms: u64,
    pub event: LiveEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LiveEvent {
    /// A bullet comment. Comments may be shed under overload (see `docs/LIVE.md`).
    Comment(Comment),
    CommentDeleted {
        id: u64,
    },
    /// Likes since the last batch, and the room's total.
    Likes {
        added: u64,
        total: u64,
    },
    /// Viewers now, and who joined most recently.
    Viewers {
        count: u64,
        recent: Vec<String>,
    },
    /// The stage changed: seats, raised hands, moderators.
    Stage(StageState),
    ProductPinned(PinnedProduct),
    ProductUnpinned,
    SlowMode {
        seconds: u64,
    },
    UserMuted {
        identity: String,
        until_ms: u64,
    },
    /// Committed before it is announced: an announced gift is paid for.
    Gift(GiftSent),
    CouponIssued(Coupon),
    SaleStarted(Sale),
    OrderPlaced(OrderPlaced),
    Battle(Battle),
    /// Live captions of what someone said, from the AI agent.
    Caption(Caption),
    /// The AI agent's state in the room, and why it stopped if it did.
    Agent(AgentStatus),
}

/// A caption: a line of speech as text. Interim captions of an utterance are replaced by
/// its final one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caption {
    /// Who spoke.
    pub speaker: String,
    pub text: String,
    /// BCP 47 tag of the text.
    pub lang: String,
    pub is_final: bool,
    /// Spoken by the AI agent (captions are labelled so the listener always knows).
    pub ai: bool,
    /// The agent was cut off here: `text` is what was heard.
    #[serde(default)]
    pub interrupted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The agent's identity in the room.
    pub identity: String,
    /// `joined`, `listening`, `thinking`, `speaking`, `handoff`, `left` or `error`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub id: u64,
    pub identity: String,
    pub name: String,
    pub text: String,
}

/// Who is on stage and who asks to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StageState {
    /// Identities holding seats (the host is not counted).
    pub seats: Vec<String>,
    pub max_seats: u32,
    /// Raised hands, oldest first.
    pub hands: Vec<String>,
    pub moderators: Vec<String>,
}

/// A product card on screen. `capture_ms` is the publisher's capture time (wall clock)
/// of the video frame the host pinned it at, so viewers show it when that frame plays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedProduct {
    pub product_id: String,
    pub title: String,
    pub price_minor: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub sale_id: String,
    pub buyer: String,
    pub quantity: i64,
    pub sold: i64,
    pub stock: i64,
}

/// The room's live state, sent in `joined`, with what a returning client missed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LiveSnapshot {
    pub epoch: String,
    /// The last event's sequence number.
    pub seq: u64,
    pub stage: StageState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<PinnedProduct>,
    pub likes_total: u64,
    pub viewers: u64,
    pub slow_mode_s: u64,
    /// Events after the client's cursor, when it gave one that is still in the window.
    pub missed: Vec<RoomEvent>,
    /// The client's cursor could not be honoured (another epoch, or too old): rebuild
    /// from this snapshot.
    pub reload: bool,
}

/// What a moderator does to a viewer or a comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Moderation {
    /// No comments from `identity` for `seconds`.
    Mute {
        identity: String,
        seconds: u64,
    },
    /// Out of the room, and kept out for `seconds` (0: for this room's life).
    Ban {
        identity: String,
        seconds: u64,
    },
    DeleteComment {
        id: u64,
    },
    /// One comment per viewer per `seconds` (0 turns it off).
    SlowMode {
        seconds: u64,
    },
    /// Make `identity` a moderator, or stop.
    Moderator {
        identity: String,
        on: bool,
    },
}
