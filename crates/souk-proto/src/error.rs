//! Stable error codes.
//!
//! A code is a short snake_case string that never changes meaning once released; clients
//! branch on it. The message beside it is for people and may be reworded at any time.

use serde::{Deserialize, Serialize};

/// Every error a client can be told about, on the WebSocket or in a REST body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// No token was presented where one is required.
    TokenMissing,
    /// The token is not a well-formed JWT or its claims do not parse.
    TokenMalformed,
    /// The signature does not match any configured API secret.
    TokenInvalidSignature,
    /// The token's `exp` lies in the past.
    TokenExpired,
    /// The token's `nbf` lies in the future.
    TokenNotYetValid,
    /// The token was issued for another room than the one asked for.
    TokenWrongRoom,
    /// The token names an API key the server does not know.
    TokenUnknownKey,
    /// The token is valid but lacks the grant the action needs.
    PermissionDenied,
    /// The message is not valid JSON or misses required fields.
    MalformedMessage,
    /// The message `type` is not one this protocol version knows.
    UnknownMessageType,
    /// The message is larger than the server accepts.
    MessageTooLarge,
    /// The client speaks a protocol version the server does not.
    UnsupportedProtocol,
    /// A message arrived that needs a joined session first (or `join` came twice).
    InvalidState,
    /// The SDP could not be parsed or negotiated.
    InvalidSdp,
    /// A subscriber cannot decode the codec a publisher sends (no transcoding).
    CodecUnsupported,
    /// The named room does not exist.
    RoomNotFound,
    /// A room with that name already exists.
    RoomExists,
    /// The room is at its participant limit.
    RoomFull,
    /// The named participant is not in the room.
    ParticipantNotFound,
    /// The named track does not exist.
    TrackNotFound,
    /// A resume was asked for a session that no longer exists.
    SessionNotFound,
    /// Too many requests from one source; slow down.
    RateLimited,
    /// REST credentials are missing or wrong.
    Unauthorized,
    /// A request body or parameter is invalid.
    InvalidRequest,
    /// The named conversation does not exist.
    ConversationNotFound,
    /// The user is not a member of the conversation.
    NotAMember,
    /// The named message does not exist in the conversation.
    MessageNotFound,
    /// A sync or history cursor lies beyond the conversation's last event.
    InvalidCursor,
    /// The edit or recall window for the message has passed.
    EditWindowClosed,
    /// The text contains a blocked keyword.
    ContentBlocked,
    /// The user is muted in this group.
    Muted,
    /// The user is banned from this group.
    Banned,
    /// The recipient has blocked the sender.
    Blocked,
    /// The group is at its member limit.
    GroupFull,
    /// The same idempotency key came with a different request.
    IdempotencyConflict,
    /// No translator is configured on this server.
    TranslatorUnavailable,
    /// The translator failed or answered nonsense; retry later.
    TranslationFailed,
    /// The AI assistant cannot run here (no language model is configured).
    AgentUnavailable,
    /// The wallet holds less than the payment.
    InsufficientFunds,
    /// The named gift is not in the catalogue.
    GiftNotFound,
    CouponNotFound,
    /// Every coupon of this issue has been claimed.
    CouponExhausted,
    /// This user already claimed this coupon.
    CouponAlreadyClaimed,
    SaleNotFound,
    /// No order has this id (or it is not the caller's).
    OrderNotFound,
    /// The flash sale has not started or has ended.
    SaleNotActive,
    /// Not enough stock left for this purchase.
    SoldOut,
    /// The purchase would pass the per-buyer limit.
    PurchaseLimit,
    /// Something went wrong inside the server; the message says what.
    Internal,
}

impl ErrorCode {
    /// The wire spelling, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::TokenMissing => "token_missing",
            ErrorCode::TokenMalformed => "token_malformed",
            ErrorCode::TokenInvalidSignature => "token_invalid_signature",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenNotYetValid => "token_not_yet_valid",
            ErrorCode::TokenWrongRoom => "token_wrong_room",
            ErrorCode::TokenUnknownKey => "token_unknown_key",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::UnknownMessageType => "unknown_message_type",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::UnsupportedProtocol => "unsupported_protocol",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::CodecUnsupported => "codec_unsupported",
            ErrorCode::RoomNotFound => "room_not_found",
            ErrorCode::RoomExists => "room_exists",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::ParticipantNotFound => "participant_not_found",
            ErrorCode::TrackNotFound => "track_not_found",
            ErrorCode::SessionNotFound => "session_not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::ConversationNotFound => "conversation_not_found",
            ErrorCode::NotAMember => "not_a_member",
            ErrorCode::MessageNotFound => "message_not_found",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::EditWindowClosed => "edit_window_closed",
            ErrorCode::ContentBlocked => "content_blocked",
            ErrorCode::Muted => "muted",
            ErrorCode::Banned => "banned",
            ErrorCode::Blocked => "blocked",
            ErrorCode::GroupFull => "group_full",
            ErrorCode::IdempotencyConflict => "idempotency_conflict",
            ErrorCode::TranslatorUnavailable => "translator_unavailable",
            ErrorCode::TranslationFailed => "translation_failed",
            ErrorCode::AgentUnavailable => "agent_unavailable",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::GiftNotFound => "gift_not_found",
            ErrorCode::CouponNotFound => "coupon_not_found",
            ErrorCode::CouponExhausted => "coupon_exhausted",
            ErrorCode::CouponAlreadyClaimed => "coupon_already_claimed",
            ErrorCode::SaleNotFound => "sale_not_found",
            ErrorCode::OrderNotFound => "order_not_found",
            ErrorCode::SaleNotActive => "sale_not_active",
            ErrorCode::SoldOut => "sold_out",
            ErrorCode::PurchaseLimit => "purchase_limit",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it travels: a stable code and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtoError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtoError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtoError {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spelling_matches_serde() {
        for code in [
            ErrorCode::TokenExpired,
            ErrorCode::TokenWrongRoom,
            ErrorCode::MalformedMessage,
            ErrorCode::InvalidSdp,
            ErrorCode::NotAMember,
            ErrorCode::TranslatorUnavailable,
            ErrorCode::AgentUnavailable,
            ErrorCode::CouponAlreadyClaimed,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
