//! Signalling messages on the WebSocket (`/rtc`), one JSON object per text frame.
//!
//! Each message has a `type`. A client request may carry `req`, a number the server
//! echoes in the matching answer or error so a client can pair them. The peer-connection
//! model is a pair per participant: the client offers on its *publisher* connection, the
//! server offers on the *subscriber* connection, so neither side ever has to resolve an
//! offer collision. See `docs/PROTOCOL.md` for the sequence diagrams.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ProtoError};
use crate::model::{
    LayerInfo, LeaveReason, ParticipantInfo, QualityGrade, RoomInfo, SpeakerInfo, TrackInfo,
    TrackKind, TrackSource,
};
use crate::MAX_SIGNAL_MESSAGE_BYTES;

/// A message from client to server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMessage {
    /// First message on a socket: join a room, or resume a session.
    Join(Join),
    /// An SDP offer for the publisher connection, with what its new tracks are.
    PublishOffer(PublishOffer),
    /// The answer to the server's latest subscriber offer.
    SubscriberAnswer(SdpMessage),
    /// Stop publishing a track (the client also removes it from its connection).
    Unpublish(TrackRef),
    /// Mute or unmute one of one's own tracks.
    Mute(Mute),
    /// Subscribe to or unsubscribe from tracks (selective subscription).
    Subscribe(Subscribe),
    /// Tell the server how a subscribed video is shown, so it can pick a layer.
    TrackSettings(TrackSettings),
    /// Ask for a fresh subscriber offer with new ICE credentials, after a network change.
    IceRestart(Req),
    /// Keep-alive; the server answers `pong`.
    Ping(Ping),
    /// Leave the room for good.
    Leave(Req),
    /// Live rooms: ask for a stage seat, or withdraw the request.
    RaiseHand(Req),
    LowerHand(Req),
    /// The host or a moderator answers a raised hand.
    StageDecision(StageDecision),
    /// The host or a moderator takes a seat back (the co-host's tracks are unpublished).
    StageRemove(IdentityRef),
    Moderate(ModerateRequest),
    /// A bullet comment.
    Comment(CommentRequest),
    /// Likes; batched by the server.
    Like(LikeRequest),
    /// Pin a product (or unpin, with none).
    PinProduct(PinRequest),
    /// Money: each carries an idempotency key and is acknowledged once committed.
    SendGift(SendGift),
    ClaimCoupon(ClaimCoupon),
    Buy(Buy),
    /// The host starts a flash sale in the room.
    StartSale(StartSale),
    /// The AI agent publishes a caption or its state (agent role only).
    AgentEvent(AgentEventRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEventRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub event: AgentEvent,
}

/// What an agent may announce in its room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentEvent {
    Caption(crate::live::Caption),
    Status(crate::live::AgentStatus),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartSale {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub sale_id: String,
    pub product_id: String,
    pub title: String,
    pub price_minor: i64,
    pub currency: String,
    pub stock: i64,
    pub per_buyer_limit: i64,
    /// Countdown to the start, in seconds.
    #[serde(default)]
    pub starts_in_s: u64,
    pub duration_s: u64,
}

/// A message from server to client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    Joined(Joined),
    /// A resumed session: the same participant, tracks and subscriptions.
    Resumed(Joined),
    PublishAnswer(PublishAnswer),
    SubscriberOffer(SubscriberOffer),
    ParticipantJoined(ParticipantRef),
    ParticipantUpdated(ParticipantRef),
    ParticipantLeft(ParticipantLeft),
    TrackPublished(TrackPublished),
    TrackUnpublished(TrackUnpublished),
    TrackMuted(TrackMuted),
    ActiveSpeakers(ActiveSpeakers),
    /// A subscribed video stopped or resumed because of the subscriber's bandwidth.
    StreamState(StreamState),
    /// This participant's connection quality changed grade.
    ConnectionQuality(ConnectionQuality),
    /// A fresh token with the same grants, to resume with after the original expired.
    RefreshToken(RefreshToken),
    Pong(Ping),
    Error(ErrorMessage),
    /// The server ends this session; the socket closes after it.
    Leave(LeaveNotice),
    /// Numbered live-room events, oldest first, batched over a short window so a busy
    /// room costs one frame per viewer per window rather than one per event.
    RoomEvents(RoomEvents),
    /// A request without another answer succeeded; `result` carries what it made.
    Ack(Ack),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvents {
    pub events: Vec<crate::live::RoomEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageDecision {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub identity: String,
    pub approve: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub identity: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModerateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    #[serde(flatten)]
    pub action: crate::live::Moderation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LikeRequest {
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<crate::live::PinnedProduct>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendGift {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub idempotency_key: String,
    pub gift_id: String,
    /// The host (or co-host) receiving it.
    pub to: String,
    #[serde(default = "one_i64")]
    pub count: i64,
}

fn one_i64() -> i64 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimCoupon {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub coupon_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub idempotency_key: String,
    pub sale_id: String,
    #[serde(default = "one_i64")]
    pub quantity: i64,
}

/// Echoed request number; absent when the client did not set one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Req {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    /// Protocol version the client speaks (see [`crate::PROTOCOL_VERSION`]).
    pub protocol: u32,
    pub token: String,
    /// The room the client means to enter; must match the token when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Subscribe to every track as it appears (default), or only on request.
    #[serde(default = "default_true")]
    pub auto_subscribe: bool,
    /// Resume this session instead of joining anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// The last room event this client saw, to catch up from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event: Option<crate::live::EventCursor>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The participant sid from `joined`.
    pub sid: String,
    /// The secret from `joined`; proves this socket belongs to that session.
    pub resume_secret: String,
}

/// Announces one track in a publish offer, keyed by the transceiver's mid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishTrack {
    pub mid: String,
    pub kind: TrackKind,
    #[serde(default)]
    pub source: TrackSource,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub muted: bool,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    /// Simulcast layers as sent (`sendEncodings`), any order.
    #[serde(default)]
    pub layers: Vec<LayerInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOffer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub sdp: String,
    /// Tracks new in this offer. Tracks already published need not be repeated.
    #[serde(default)]
    pub tracks: Vec<PublishTrack>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub sdp: String,
    /// The tracks this participant now publishes, with their server ids and mids.
    pub tracks: Vec<PublishedTrack>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedTrack {
    pub mid: String,
    pub track: TrackInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SdpMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub sdp: String,
}

/// The server's offer on the subscriber connection, with what each m-line carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberOffer {
    pub sdp: String,
    /// Every live m-line and the track it carries.
    pub tracks: Vec<SubscribedTrack>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribedTrack {
    pub mid: String,
    pub track_id: String,
    pub participant_sid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub track_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub track_id: String,
    pub muted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub track_ids: Vec<String>,
    /// `true` to subscribe, `false` to unsubscribe.
    pub subscribe: bool,
}

/// How a subscribed video is displayed. The server forwards the smallest simulcast layer
/// that covers `width` x `height` (adaptive stream), or the layer `quality` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub track_id: String,
    /// Rendered size in device pixels; 0 means unknown.
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    /// A manual choice that overrides the rendered size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// Stop forwarding this video while it is not shown (e.g. scrolled away).
    #[serde(default)]
    pub paused: bool,
}

/// A manual simulcast choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Any number; echoed in `pong` so the client can measure round-trip time.
    pub ts: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub protocol: u32,
    pub room: RoomInfo,
    /// This participant.
    pub participant: ParticipantInfo,
    /// Everyone else in the room, with their tracks.
    pub others: Vec<ParticipantInfo>,
    /// Secret to resume this session with after the socket drops.
    pub resume_secret: String,
    /// How long the server keeps a dropped session for resuming, in milliseconds.
    pub resume_window_ms: u64,
    pub server_version: String,
    /// The live room's state, and what a returning client missed.
    #[serde(default)]
    pub live: crate::live::LiveSnapshot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantRef {
    pub participant: ParticipantInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantLeft {
    pub sid: String,
    pub identity: String,
    pub reason: LeaveReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackPublished {
    pub participant_sid: String,
    pub track: TrackInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackUnpublished {
    pub participant_sid: String,
    pub track_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackMuted {
    pub participant_sid: String,
    pub track_id: String,
    pub muted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveSpeakers {
    /// Loudest first; empty when nobody speaks.
    pub speakers: Vec<SpeakerInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionQuality {
    pub quality: QualityGrade,
    /// E-model mean opinion score, 1.0 to 4.5.
    pub mos: f64,
    pub rtt_ms: f64,
    pub jitter_ms: f64,
    /// Fraction of our packets the client reports lost, 0.0 to 1.0.
    pub loss: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    pub track_id: String,
    /// True while the server holds this video back: the connection cannot carry even its
    /// lowest layer. Audio keeps flowing.
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveNotice {
    pub reason: LeaveReason,
    #[serde(default)]
    pub message: String,
}

impl ClientMessage {
    /// The request number the client attached, if any.
    pub fn req(&self) -> Option<u32> {
        match self {
            ClientMessage::Join(m) => m.req,
            ClientMessage::PublishOffer(m) => m.req,
            ClientMessage::SubscriberAnswer(m) => m.req,
            ClientMessage::Unpublish(m) => m.req,
            ClientMessage::Mute(m) => m.req,
            ClientMessage::Subscribe(m) => m.req,
            ClientMessage::TrackSettings(m) => m.req,
            ClientMessage::IceRestart(m)
            | ClientMessage::Leave(m)
            | ClientMessage::RaiseHand(m)
            | ClientMessage::LowerHand(m) => m.req,
            ClientMessage::StageDecision(m) => m.req,
            ClientMessage::StageRemove(m) => m.req,
            ClientMessage::Moderate(m) => m.req,
            ClientMessage::Comment(m) => m.req,
            ClientMessage::PinProduct(m) => m.req,
            ClientMessage::SendGift(m) => m.req,
            ClientMessage::ClaimCoupon(m) => m.req,
            ClientMessage::Buy(m) => m.req,
            ClientMessage::StartSale(m) => m.req,
            ClientMessage::AgentEvent(m) => m.req,
            ClientMessage::Ping(_) | ClientMessage::Like(_) => None,
        }
    }

    /// Parses one text frame, telling apart the three ways it can be wrong: too large,
    /// not the shape of any message, or a `type` this version does not know.
    pub fn parse(text: &str) -> Result<ClientMessage, ProtoError> {
        parse_tagged(text, CLIENT_MESSAGE_TYPES)
    }
}

/// The `req` of a frame that was refused before it was parsed (rate limit) or that did
/// not parse, so its sender can still pair the error with its request.
pub fn req_of(text: &str) -> Option<u32> {
    #[derive(Deserialize)]
    struct RequestId {
        req: Option<u32>,
    }
    serde_json::from_str::<RequestId>(text).ok()?.req
}

/// Parses a `type`-tagged JSON message, telling an oversized, malformed or unknown one
/// apart so the client learns which mistake it made.
pub(crate) fn parse_tagged<T: serde::de::DeserializeOwned>(
    text: &str,
    known_types: &[&str],
) -> Result<T, ProtoError> {
    if text.len() > MAX_SIGNAL_MESSAGE_BYTES {
        return Err(ProtoError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "message is {} bytes; the limit is {MAX_SIGNAL_MESSAGE_BYTES}",
                text.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        ProtoError::new(ErrorCode::MalformedMessage, format!("not valid JSON: {e}"))
    })?;
    let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
        return Err(ProtoError::new(
            ErrorCode::MalformedMessage,
            "message has no string field 'type'",
        ));
    };
    if !known_types.contains(&kind) {
        return Err(ProtoError::new(
            ErrorCode::UnknownMessageType,
            format!("unknown message type '{kind}'"),
        ));
    }
    let kind = kind.to_owned();
    serde_json::from_value(value).map_err(|e| {
        ProtoError::new(
            ErrorCode::MalformedMessage,
            format!("invalid '{kind}' message: {e}"),
        )
    })
}

/// The `type` values of [`ClientMessage`], for telling unknown types from malformed ones.
pub const CLIENT_MESSAGE_TYPES: &[&str] = &[
    "join",
    "publish_offer",
    "subscriber_answer",
    "unpublish",
    "mute",
    "subscribe",
    "track_settings",
    "ice_restart",
    "ping",
    "leave",
    "raise_hand",
    "lower_hand",
    "stage_decision",
    "stage_remove",
    "moderate",
    "comment",
    "like",
    "pin_product",
    "send_gift",
    "claim_coupon",
    "buy",
    "start_sale",
    "agent_event",
];

impl ServerMessage {
    pub fn error(req: Option<u32>, err: ProtoError) -> ServerMessage {
        ServerMessage::Error(ErrorMessage {
            req,
            code: err.code,
            message: err.message,
        })
    }

    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail: no maps with non-string keys.
        serde_json::to_string(self).expect("server messages serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_join_with_defaults() {
        let msg = ClientMessage::parse(r#"{"type":"join","protocol":1,"token":"t"}"#).unwrap();
        let ClientMessage::Join(join) = msg else {
            panic!("expected join")
        };
        assert!(join.auto_subscribe);
        assert_eq!(join.resume, None);
    }

    #[test]
    fn tells_malformed_from_unknown() {
        let err = ClientMessage::parse("{not json").unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedMessage);
        let err = ClientMessage::parse(r#"{"type":"teleport"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownMessageType);
        let err = ClientMessage::parse(r#"{"type":"mute","track_id":5}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedMessage);
        assert!(err.message.contains("mute"));
        let err = ClientMessage::parse(r#"[1,2]"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedMessage);
    }

    #[test]
    fn finds_the_req_of_a_frame_it_does_not_parse() {
        assert_eq!(
            req_of(r#"{"type":"send_gift","req":7,"junk":[1]}"#),
            Some(7)
        );
        assert_eq!(req_of(r#"{"type":"teleport","req":8}"#), Some(8));
        assert_eq!(req_of(r#"{"type":"ping"}"#), None);
        assert_eq!(req_of(r#"{"req":-1}"#), None);
        assert_eq!(req_of("{not json"), None);
    }

    #[test]
    fn rejects_oversized() {
        let big = format!(
            r#"{{"type":"ping","ts":1,"pad":"{}"}}"#,
            "x".repeat(MAX_SIGNAL_MESSAGE_BYTES)
        );
        assert_eq!(
            ClientMessage::parse(&big).unwrap_err().code,
            ErrorCode::MessageTooLarge
        );
    }

    #[test]
    fn every_listed_type_parses_or_names_fields() {
        // A listed type with no fields must fail as malformed (missing fields), never as
        // unknown: the list and the enum agree.
        for kind in CLIENT_MESSAGE_TYPES {
            let res = ClientMessage::parse(&format!(r#"{{"type":"{kind}"}}"#));
            if let Err(e) = res {
                assert_eq!(e.code, ErrorCode::MalformedMessage, "{kind}");
            }
        }
    }

    #[test]
    fn server_messages_carry_snake_case_type() {
        let msg = ServerMessage::Pong(Ping { ts: 7 });
        assert_eq!(msg.to_json(), r#"{"type":"pong","ts":7}"#);
    }
}
