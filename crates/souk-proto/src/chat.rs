//! Chat messages on the WebSocket (`/rtc`, the same socket as signalling).
//!
//! A socket becomes a chat session when its first message is `chat_connect` with a
//! user-scoped token (one with the `chat` grant); a room session starts with `join`.
//! Everything a conversation holds is an *event* with a per-conversation sequence
//! number: messages, edits, recalls, deletions and membership changes alike. A device
//! that remembers the last sequence number it saw per conversation can always catch up
//! by asking for what came after, and applying edits and recalls as they arrive makes
//! every device converge on the same state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ProtoError};
use crate::signal::{ErrorMessage, Ping};
use crate::MAX_SIGNAL_MESSAGE_BYTES;

/// Largest message body, as serialised JSON.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Longest text, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Most members a group may have.
pub const MAX_GROUP_MEMBERS: usize = 2000;
/// Most events one sync or history page returns per conversation.
pub const MAX_PAGE: u32 = 500;
/// Longest client message id, in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 64;

/// A message from a chat client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChatClientMessage {
    /// First message on a chat socket.
    ChatConnect(ChatConnect),
    /// Send a message; acknowledged with `chat_ack` once durable.
    ChatSend(ChatSend),
    /// Catch up: what each conversation holds after the given cursors.
    ChatSync(ChatSync),
    /// Page back through one conversation's history.
    ChatHistory(ChatHistory),
    /// Open (or find) the direct conversation with another user or shop.
    ChatOpenDirect(OpenDirect),
    ChatCreateGroup(CreateGroup),
    ChatAddMembers(AddMembers),
    /// Remove a member (an admin), or leave (oneself).
    ChatRemoveMember(MemberAction),
    ChatSetRole(SetRole),
    /// Silence a group member for `seconds`.
    ChatMute(Moderate),
    /// Remove a group member and keep them out for `seconds` (0 = until unbanned).
    ChatBan(Moderate),
    ChatUnban(MemberAction),
    /// Refuse direct messages from a user.
    ChatBlock(UserAction),
    ChatUnblock(UserAction),
    /// Replace a message's body (the sender, within the edit window).
    ChatEdit(Edit),
    /// Withdraw a message (the sender, within the edit window).
    ChatRecall(EventRef),
    /// Delete any message (a group owner or admin).
    ChatDelete(EventRef),
    /// Delivered-up-to and read-up-to receipts.
    ChatReceipt(Receipt),
    /// "I am typing" (ephemeral; sent at most about once a second).
    ChatTyping(ConversationRef),
    ChatPresence(SetPresence),
    /// A message in the reader's locale.
    ChatTranslate(Translate),
    Ping(Ping),
}

/// The `type` values of [`ChatClientMessage`], for telling unknown types from malformed.
pub const CHAT_CLIENT_MESSAGE_TYPES: &[&str] = &[
    "chat_connect",
    "chat_send",
    "chat_sync",
    "chat_history",
    "chat_open_direct",
    "chat_create_group",
    "chat_add_members",
    "chat_remove_member",
    "chat_set_role",
    "chat_mute",
    "chat_ban",
    "chat_unban",
    "chat_block",
    "chat_unblock",
    "chat_edit",
    "chat_recall",
    "chat_delete",
    "chat_receipt",
    "chat_typing",
    "chat_presence",
    "chat_translate",
    "ping",
];

/// A message from the server to a chat client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChatServerMessage {
    ChatConnected(ChatConnected),
    /// A message is durable: it has its sequence number.
    ChatAck(ChatAck),
    /// A new event in one of the user's conversations, live.
    ChatEvent(EventInfo),
    ChatSynced(ChatSynced),
    ChatHistoryPage(HistoryPage),
    /// A conversation's current shape, after it was opened, created or changed.
    ChatConversation(ConversationReply),
    ChatReceipt(ReceiptInfo),
    ChatTyping(TypingInfo),
    ChatPresence(PresenceInfo),
    ChatTranslation(Translation),
    /// A request without other answer succeeded.
    ChatDone(Done),
    Pong(Ping),
    Error(ErrorMessage),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatConnect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub protocol: u32,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatConnected {
    /// The connected user.
    pub identity: String,
    /// Whose inboxes this session reads: the user, and `shop:<id>` for each shop the
    /// token lets them answer for.
    pub principals: Vec<String>,
    /// Contacts that are online or away now.
    pub presence: Vec<PresenceInfo>,
}

/// What a message is. Bodies per kind are documented in `docs/CHAT.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Text,
    /// A product card: id, title, price, currency, image and link.
    Product,
    /// An order card: id, status, total, currency.
    Order,
    /// An image by URL.
    Image,
    /// A notice from the merchant's backend or the system.
    System,
    /// Replaces the body of `target_seq`.
    Edit,
    /// Withdraws `target_seq` (its sender did).
    Recall,
    /// Removes `target_seq` (a moderator did).
    Delete,
    MemberAdded,
    MemberRemoved,
    RoleChanged,
    GroupCreated,
}

impl EventKind {
    /// Kinds a member sends; the others the server writes.
    pub fn is_message(self) -> bool {
        matches!(
            self,
            EventKind::Text | EventKind::Product | EventKind::Order | EventKind::Image
        ) || self == EventKind::System
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Text => "text",
            EventKind::Product => "product",
            EventKind::Order => "order",
            EventKind::Image => "image",
            EventKind::System => "system",
            EventKind::Edit => "edit",
            EventKind::Recall => "recall",
            EventKind::Delete => "delete",
            EventKind::MemberAdded => "member_added",
            EventKind::MemberRemoved => "member_removed",
            EventKind::RoleChanged => "role_changed",
            EventKind::GroupCreated => "group_created",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// What became of a message after it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    Normal,
    Edited,
    Recalled,
    Deleted,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Normal => "normal",
            MessageState::Edited => "edited",
            MessageState::Recalled => "recalled",
            MessageState::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> MessageState {
        match s {
            "edited" => MessageState::Edited,
            "recalled" => MessageState::Recalled,
            "deleted" => MessageState::Deleted,
            _ => MessageState::Normal,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatSend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    /// Chosen by the client, unique per sender and conversation: a retry with the same
    /// id returns the first acknowledgement instead of sending twice.
    pub client_msg_id: String,
    pub kind: EventKind,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatAck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    pub client_msg_id: String,
    pub seq: u64,
    pub created_at_ms: u64,
    /// True when this id had been sent before and this is the original acknowledgement.
    pub duplicate: bool,
}

/// One event of a conversation, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventInfo {
    pub conversation: String,
    pub seq: u64,
    pub kind: EventKind,
    pub sender: String,
    pub body: serde_json::Value,
    /// The message an edit, recall or deletion applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_seq: Option<u64>,
    /// For messages: whether they were edited, recalled or deleted since.
    pub state: MessageState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatSync {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    /// Conversation id -> the last sequence number this device has. Conversations left
    /// out are sent from their start (a new device).
    #[serde(default)]
    pub cursors: BTreeMap<String, u64>,
    /// Most events per conversation in this answer (default 200, at most 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatSynced {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversations: Vec<ConversationSync>,
}

/// What one conversation holds past a device's cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationSync {
    pub conversation: ConversationInfo,
    /// Events after the cursor, oldest first.
    pub events: Vec<EventInfo>,
    /// More events follow the last one here: sync again from it.
    pub has_more: bool,
    /// Messages from others after the user's read receipt.
    pub unread: u64,
    /// The user's own receipts.
    pub read_seq: u64,
    pub delivered_seq: u64,
    /// Other members' receipts (for read ticks), in conversations of up to 50 members.
    pub receipts: Vec<ReceiptInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Owner,
    Admin,
    Member,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Owner => "owner",
            MemberRole::Admin => "admin",
            MemberRole::Member => "member",
        }
    }

    pub fn parse(s: &str) -> MemberRole {
        match s {
            "owner" => MemberRole::Owner,
            "admin" => MemberRole::Admin,
            _ => MemberRole::Member,
        }
    }

    /// Owners and admins moderate.
    pub fn moderates(self) -> bool {
        self != MemberRole::Member
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub member: String,
    pub role: MemberRole,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationInfo {
    pub id: String,
    pub kind: ConversationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub members: Vec<MemberInfo>,
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: ConversationInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatHistory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    /// Events before this sequence number (default: the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    /// Oldest first.
    pub events: Vec<EventInfo>,
    /// Older events exist before the first one here.
    pub has_more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    /// A user identity, or `shop:<id>` for a shop's shared inbox.
    pub peer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub title: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMembers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    pub member: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRole {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    pub member: String,
    pub role: MemberRole,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moderate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    pub member: String,
    pub seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    pub seq: u64,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptInfo {
    pub conversation: String,
    pub member: String,
    pub delivered_seq: u64,
    pub read_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationRef {
    pub conversation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingInfo {
    pub conversation: String,
    pub member: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Away,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPresence {
    pub status: PresenceStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceInfo {
    pub user: String,
    pub status: PresenceStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Translate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    pub seq: u64,
    /// BCP 47 tag of the reader's language, e.g. `ar`, `pt-BR`.
    pub locale: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Translation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
    pub conversation: String,
    pub seq: u64,
    pub locale: String,
    pub text: String,
    /// Served from the cache rather than the translator.
    pub cached: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u32>,
}

impl ChatClientMessage {
    /// Parses one text frame, telling oversized, malformed and unknown messages apart.
    pub fn parse(text: &str) -> Result<ChatClientMessage, ProtoError> {
        crate::signal::parse_tagged(text, CHAT_CLIENT_MESSAGE_TYPES)
    }

    /// The request number to echo in an error.
    pub fn req(&self) -> Option<u32> {
        use ChatClientMessage::*;
        match self {
            ChatConnect(m) => m.req,
            ChatSend(m) => m.req,
            ChatSync(m) => m.req,
            ChatHistory(m) => m.req,
            ChatOpenDirect(m) => m.req,
            ChatCreateGroup(m) => m.req,
            ChatAddMembers(m) => m.req,
            ChatRemoveMember(m) | ChatUnban(m) => m.req,
            ChatSetRole(m) => m.req,
            ChatMute(m) | ChatBan(m) => m.req,
            ChatBlock(m) | ChatUnblock(m) => m.req,
            ChatEdit(m) => m.req,
            ChatRecall(m) | ChatDelete(m) => m.req,
            ChatReceipt(m) => m.req,
            ChatTranslate(m) => m.req,
            ChatTyping(_) | ChatPresence(_) | Ping(_) => None,
        }
    }
}

impl ChatServerMessage {
    pub fn error(req: Option<u32>, err: ProtoError) -> ChatServerMessage {
        ChatServerMessage::Error(ErrorMessage {
            req,
            code: err.code,
            message: err.message,
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("chat messages serialise")
    }
}

/// Checks a message body for its kind: size, required fields and URL schemes.
pub fn validate_body(kind: EventKind, body: &serde_json::Value) -> Result<(), ProtoError> {
    let invalid = |why: String| ProtoError::new(ErrorCode::InvalidRequest, why);
    let size = body.to_string().len();
    if size > MAX_BODY_BYTES {
        return Err(ProtoError::new(
            ErrorCode::MessageTooLarge,
            format!("the message body is {size} bytes; the limit is {MAX_BODY_BYTES}"),
        ));
    }
    let field = |name: &str| body.get(name).and_then(|v| v.as_str());
    let require = |name: &str| {
        field(name).filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            invalid(format!(
                "a {} message needs a string '{name}'",
                kind.as_str()
            ))
        })
    };
    let url = |name: &str, required: bool| -> Result<(), ProtoError> {
        match field(name) {
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => Ok(()),
            Some(_) => Err(invalid(format!("'{name}' must be an http(s) URL"))),
            None if required => Err(invalid(format!(
                "a {} message needs a URL in '{name}'",
                kind.as_str()
            ))),
            None => Ok(()),
        }
    };
    let amount = |name: &str| {
        body.get(name)
            .and_then(|v| v.as_i64())
            .filter(|v| *v >= 0)
            .map(|_| ())
            .ok_or_else(|| {
                invalid(format!(
                    "'{name}' must be a non-negative integer in minor units"
                ))
            })
    };
    match kind {
        EventKind::Text | EventKind::System => {
            let text = require("text")?;
            let chars = text.chars().count();
            if chars > MAX_TEXT_CHARS {
                return Err(ProtoError::new(
                    ErrorCode::MessageTooLarge,
                    format!("the text has {chars} characters; the limit is {MAX_TEXT_CHARS}"),
                ));
            }
        }
        EventKind::Product => {
            require("product_id")?;
            require("title")?;
            amount("price_minor")?;
            require("currency")?;
            url("image_url", false)?;
            url("url", false)?;
        }
        EventKind::Order => {
            require("order_id")?;
            require("status")?;
            amount("total_minor")?;
            require("currency")?;
        }
        EventKind::Image => url("url", true)?,
        _ => {
            return Err(invalid(format!(
                "'{}' events are written by the server, not sent",
                kind.as_str()
            )))
        }
    }
    Ok(())
}

/// Checks a client message id: non-empty, short, printable.
pub fn validate_client_msg_id(id: &str) -> Result<(), ProtoError> {
    crate::token::validate_name("client_msg_id", id, MAX_CLIENT_MSG_ID_BYTES)
        .map_err(|why| ProtoError::new(ErrorCode::InvalidRequest, why))
}

const _: () = assert!(MAX_BODY_BYTES < MAX_SIGNAL_MESSAGE_BYTES);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_send_and_tells_unknown_from_malformed() {
        let msg = ChatClientMessage::parse(
            r#"{"type":"chat_send","req":3,"conversation":"c","client_msg_id":"m1","kind":"text","body":{"text":"hi"}}"#,
        )
        .unwrap();
        assert_eq!(msg.req(), Some(3));
        let err = ChatClientMessage::parse(r#"{"type":"chat_teleport"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownMessageType);
        let err =
            ChatClientMessage::parse(r#"{"type":"chat_send","conversation":"c"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedMessage);
    }

    #[test]
    fn bodies_are_checked_per_kind() {
        assert!(validate_body(EventKind::Text, &json!({"text": "hola"})).is_ok());
        assert!(validate_body(EventKind::Text, &json!({"text": ""})).is_err());
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        assert_eq!(
            validate_body(EventKind::Text, &json!({ "text": long }))
                .unwrap_err()
                .code,
            ErrorCode::MessageTooLarge
        );
        let product = json!({"product_id":"p1","title":"Scarf","price_minor":1999,"currency":"EUR","image_url":"https://x/y.png"});
        assert!(validate_body(EventKind::Product, &product).is_ok());
        let bad = json!({"product_id":"p1","title":"Scarf","price_minor":-1,"currency":"EUR"});
        assert!(validate_body(EventKind::Product, &bad).is_err());
        assert!(validate_body(EventKind::Image, &json!({"url":"javascript:alert(1)"})).is_err());
        assert!(validate_body(EventKind::Edit, &json!({})).is_err());
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in [EventKind::Text, EventKind::MemberAdded, EventKind::Recall] {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
    }
}
