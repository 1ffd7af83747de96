//! The chat service: the rules of conversations, applied on top of the store and the hub.
//!
//! Every method checks first and writes last, so a refused request leaves nothing
//! behind. A write is durable before anyone hears of it: the store commits, then the hub
//! fans the event out, then the caller gets its answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use sha2::{Digest, Sha256};
use souk_proto::chat::{
    self, ChatAck, ChatConnected, ChatHistory, ChatSend, ChatServerMessage, ChatSync, ChatSynced,
    ConversationInfo, ConversationKind, ConversationReply, ConversationSync, Edit, EventInfo,
    EventKind, EventRef, HistoryPage, MemberInfo, MemberRole, MessageState, PresenceInfo,
    PresenceStatus, Receipt, ReceiptInfo, Translate, Translation, TypingInfo,
};
use souk_proto::token::{validate_name, MAX_IDENTITY_BYTES};
use souk_proto::{ErrorCode, ProtoError};
use souk_store::StoreError;
use tokio::sync::{broadcast, mpsc, Notify};

use crate::hub::{ConnId, Hub, Outbound};
use crate::moderation::Blocklist;
use crate::store::{Change, ChatStore, ConversationRow, Membership, NewEvent};
use crate::translate::{valid_locale, Translator};

/// Receipts of other members are sent with a sync only in conversations this small.
const RECEIPTS_UP_TO_MEMBERS: usize = 50;
const DEFAULT_PAGE: u32 = 200;
const MAX_TITLE_CHARS: usize = 100;

/// How the service behaves.
pub struct ChatSettings {
    /// How long after sending a message its sender may edit or recall it.
    pub edit_window: Duration,
    pub blocklist: Blocklist,
    /// Whether to queue push notifications for members without a live connection.
    pub push: bool,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            edit_window: Duration::from_secs(120),
            blocklist: Blocklist::samples(),
            push: false,
        }
    }
}

/// Who is calling: a connected user, and the inboxes they read.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: String,
    /// The identity first, then `shop:<id>` for each shop the token names.
    pub principals: Vec<String>,
    pub conn: ConnId,
}

impl Caller {
    pub fn new(identity: &str, shops: &[String], conn: ConnId) -> Caller {
        let mut principals = vec![identity.to_owned()];
        principals.extend(shops.iter().map(|s| format!("shop:{s}")));
        Caller {
            identity: identity.to_owned(),
            principals,
            conn,
        }
    }
}

pub struct Chat {
    store: ChatStore,
    hub: Hub,
    settings: ChatSettings,
    translator: Option<Arc<dyn Translator>>,
    /// Woken when a push notification is queued.
    outbox_wake: Arc<Notify>,
    /// Every committed event, for in-process listeners such as the AI agent.
    committed: broadcast::Sender<EventInfo>,
}

/// The body field that marks a message written by the shop's AI assistant. Only the
/// server sets it, so a person cannot pass for the AI or the AI for a person.
pub const AI_MARK: &str = "ai";
/// Who the AI assistant's messages are stored as written by.
pub const AGENT_AUTHOR: &str = "agent";

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn internal(e: StoreError) -> ProtoError {
    tracing::error!("chat store: {e}");
    ProtoError::new(
        ErrorCode::Internal,
        "the message store failed; nothing was changed, retry shortly",
    )
}

fn invalid(why: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrorCode::InvalidRequest, why)
}

fn serialise(msg: &ChatServerMessage) -> Outbound {
    Outbound::new(msg.to_json())
}

fn check_principal(what: &str, name: &str) -> Result<(), ProtoError> {
    validate_name(what, name, MAX_IDENTITY_BYTES).map_err(invalid)
}

/// The direct conversation of two parties has one id, whoever opens it.
pub fn direct_id(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut hash = Sha256::new();
    // Length-prefixed, so no two pairs of names hash the same input.
    hash.update((lo.len() as u64).to_be_bytes());
    hash.update(lo.as_bytes());
    hash.update(hi.as_bytes());
    format!("dm_{}", &hex::encode(hash.finalize())[..32])
}

fn request_digest(kind: EventKind, body: &serde_json::Value) -> String {
    let mut hash = Sha256::new();
    hash.update(kind.as_str().as_bytes());
    hash.update([0]);
    hash.update(body.to_string().as_bytes());
    hex::encode(hash.finalize())
}

/// The texts in a body that moderation reads.
fn readable_text(body: &serde_json::Value) -> String {
    ["text", "title", "alt"]
        .iter()
        .filter_map(|k| body.get(k).and_then(|v| v.as_str()))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Chat {
    pub fn new(
        store: ChatStore,
        settings: ChatSettings,
        translator: Option<Arc<dyn Translator>>,
        outbox_wake: Arc<Notify>,
    ) -> Chat {
        Chat {
            store,
            hub: Hub::default(),
            settings,
            translator,
            outbox_wake,
            committed: broadcast::channel(1024).0,
        }
    }

    /// Committed events from now on, in commit order. A listener that falls more than
    /// 1024 events behind is told how many it missed.
    pub fn watch(&self) -> broadcast::Receiver<EventInfo> {
        self.committed.subscribe()
    }

    pub fn store(&self) -> &ChatStore {
        &self.store
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Registers a socket; tells the user's contacts when this is their first.
    pub async fn connected(
        &self,
        caller: &Caller,
        tx: mpsc::Sender<Outbound>,
    ) -> Result<ChatConnected, ProtoError> {
        let first = self
            .hub
            .connect(caller.conn, &caller.identity, &caller.principals, tx);
        let contacts = self
            .store
            .contacts(&caller.identity)
            .await
            .map_err(internal)?;
        if first {
            self.tell_presence(&caller.identity, PresenceStatus::Online, &contacts);
        }
        let presence = contacts
            .iter()
            .filter(|c| !c.starts_with("shop:"))
            .map(|c| PresenceInfo {
                user: c.clone(),
                status: self.hub.status(c),
            })
            .filter(|p| p.status != PresenceStatus::Offline)
            .collect();
        Ok(ChatConnected {
            identity: caller.identity.clone(),
            principals: caller.principals.clone(),
            presence,
        })
    }

    pub async fn disconnected(&self, caller: &Caller) {
        if self
            .hub
            .disconnect(caller.conn, &caller.identity, &caller.principals)
        {
            if let Ok(contacts) = self.store.contacts(&caller.identity).await {
                self.tell_presence(&caller.identity, PresenceStatus::Offline, &contacts);
            }
        }
    }

    pub async fn set_presence(
        &self,
        caller: &Caller,
        status: PresenceStatus,
    ) -> Result<(), ProtoError> {
        let away = match status {
            PresenceStatus::Online => false,
            PresenceStatus::Away => true,
            PresenceStatus::Offline => {
                return Err(invalid(
                    "presence is 'online' or 'away'; offline is what closing the socket says",
                ))
            }
        };
        if self.hub.set_away(&caller.identity, away) {
            let contacts = self
                .store
                .contacts(&caller.identity)
                .await
                .map_err(internal)?;
            self.tell_presence(&caller.identity, status, &contacts);
        }
        Ok(())
    }

    fn tell_presence(&self, user: &str, status: PresenceStatus, contacts: &[String]) {
        let msg = serialise(&ChatServerMessage::ChatPresence(PresenceInfo {
            user: user.to_owned(),
            status,
        }));
        self.hub
            .deliver(contacts.iter().map(String::as_str), &msg, None);
    }

    /// The conversation `conversation`, or `conversation_not_found`.
    pub async fn existing(&self, conversation: &str) -> Result<ConversationRow, ProtoError> {
        self.store
            .conversation(conversation)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                ProtoError::new(
                    ErrorCode::ConversationNotFound,
                    format!("no conversation '{conversation}'"),
                )
            })
    }

    /// The conversation and the caller's membership in it, or why not.
    async fn member_of(
        &self,
        caller: &Caller,
        conversation: &str,
    ) -> Result<(ConversationRow, Membership), ProtoError> {
        let conv = self.existing(conversation).await?;
        let membership = self
            .store
            .membership(conversation, &caller.principals)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                ProtoError::new(
                    ErrorCode::NotAMember,
                    format!("you are not a member of conversation '{conversation}'"),
                )
            })?;
        Ok((conv, membership))
    }

    async fn info(&self, conv: &ConversationRow) -> Result<ConversationInfo, ProtoError> {
        let members = self.store.members(&conv.id).await.map_err(internal)?;
        Ok(ConversationInfo {
            id: conv.id.clone(),
            kind: conv.kind.clone(),
            title: conv.title.clone(),
            members,
            last_seq: conv.last_seq,
        })
    }

    /// Commits an event and fans it out to `audience` (the members, plus anyone the
    /// event concerns who is no longer one).
    async fn commit(
        &self,
        event: NewEvent,
        change: Change,
        pushes: &[serde_json::Value],
        audience: &[MemberInfo],
        also: Option<&str>,
    ) -> Result<EventInfo, StoreError> {
        let stored = self.store.append(event, change, pushes).await?;
        if !pushes.is_empty() {
            self.outbox_wake.notify_one();
        }
        let msg = serialise(&ChatServerMessage::ChatEvent(stored.clone()));
        self.hub.deliver(
            audience.iter().map(|m| m.member.as_str()).chain(also),
            &msg,
            None,
        );
        let _ = self.committed.send(stored.clone());
        Ok(stored)
    }

    /// Push notifications for the members who would otherwise not hear of a message.
    fn pushes_for(&self, members: &[MemberInfo], event: &NewEvent) -> Vec<serde_json::Value> {
        if !self.settings.push {
            return Vec::new();
        }
        let preview: String = event
            .body
            .get("text")
            .or_else(|| event.body.get("title"))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .chars()
            .take(100)
            .collect();
        members
            .iter()
            .filter(|m| m.member != event.sender && !self.hub.is_online(&m.member))
            .map(|m| {
                serde_json::json!({
                    "recipient": m.member,
                    "conversation": event.conversation,
                    "sender": event.sender,
                    "kind": event.kind,
                    "preview": preview,
                })
            })
            .collect()
    }

    pub async fn send(&self, caller: &Caller, msg: ChatSend) -> Result<ChatAck, ProtoError> {
        chat::validate_client_msg_id(&msg.client_msg_id)?;
        if msg.kind == EventKind::System {
            return Err(ProtoError::new(
                ErrorCode::PermissionDenied,
                "system notices come from the merchant's backend (REST), not from users",
            ));
        }
        chat::validate_body(msg.kind, &msg.body)?;
        if msg.body.get(AI_MARK).is_some() {
            return Err(ProtoError::new(
                ErrorCode::PermissionDenied,
                format!("the '{AI_MARK}' field marks the shop's AI assistant and is set by the server only"),
            ));
        }
        let (conv, me) = self.member_of(caller, &msg.conversation).await?;
        let now = now_ms();
        if me.muted_until_ms > now {
            return Err(ProtoError::new(
                ErrorCode::Muted,
                format!(
                    "you are muted in this group for another {} s",
                    (me.muted_until_ms - now).div_ceil(1000)
                ),
            ));
        }
        let digest = request_digest(msg.kind, &msg.body);
        let ack = |seq: u64, created_at_ms: u64, duplicate: bool| ChatAck {
            req: msg.req,
            conversation: msg.conversation.clone(),
            client_msg_id: msg.client_msg_id.clone(),
            seq,
            created_at_ms,
            duplicate,
        };
        let earlier = |found: crate::store::SentBefore| {
            if found.request_digest.as_deref() == Some(digest.as_str()) {
                Ok(ack(found.seq, found.created_at_ms, true))
            } else {
                Err(ProtoError::new(
                    ErrorCode::IdempotencyConflict,
                    format!(
                        "client_msg_id '{}' was already used for a different message; use a new id",
                        msg.client_msg_id
                    ),
                ))
            }
        };
        if let Some(found) = self
            .store
            .sent_before(&msg.conversation, &me.principal, &msg.client_msg_id)
            .await
            .map_err(internal)?
        {
            return earlier(found);
        }
        if let Some(locale) = self.settings.blocklist.check(&readable_text(&msg.body)) {
            return Err(ProtoError::new(
                ErrorCode::ContentBlocked,
                format!("the message contains a blocked phrase (list '{locale}'); rephrase it"),
            ));
        }
        let members = self.store.members(&conv.id).await.map_err(internal)?;
        if conv.kind == ConversationKind::Direct {
            let others: Vec<String> = members
                .iter()
                .filter(|m| m.member != me.principal)
                .map(|m| m.member.clone())
                .collect();
            if self
                .store
                .is_blocked_by_any(&others, &me.principal)
                .await
                .map_err(internal)?
            {
                return Err(ProtoError::new(
                    ErrorCode::Blocked,
                    "the recipient does not accept your messages",
                ));
            }
        }
        let event = NewEvent {
            conversation: conv.id.clone(),
            kind: msg.kind,
            sender: me.principal.clone(),
            author: caller.identity.clone(),
            body: msg.body.clone(),
            target_seq: None,
            client_msg_id: Some(msg.client_msg_id.clone()),
            request_digest: Some(digest.clone()),
            created_at_ms: now,
        };
        let pushes = self.pushes_for(&members, &event);
        match self
            .commit(event, Change::None, &pushes, &members, None)
            .await
        {
            Ok(stored) => Ok(ack(stored.seq, stored.created_at_ms, false)),
            // The same id raced in from another socket: the first one won.
            Err(e) if e.is_unique_violation() => {
                let found = self
                    .store
                    .sent_before(&msg.conversation, &me.principal, &msg.client_msg_id)
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| internal(e))?;
                earlier(found)
            }
            Err(e) => Err(internal(e)),
        }
    }

    /// A notice from the merchant's backend, shown to every member.
    pub async fn system_notice(
        &self,
        conversation: &str,
        text: &str,
    ) -> Result<EventInfo, ProtoError> {
        self.post_from(
            conversation,
            "system",
            "system",
            EventKind::System,
            serde_json::json!({ "text": text }),
        )
        .await
    }

    /// A message from the shop's AI assistant, sent as the shop `principal` (a member of
    /// the conversation) and marked as the AI's. `extra` fields join the body.
    pub async fn post_as_agent(
        &self,
        conversation: &str,
        principal: &str,
        kind: EventKind,
        mut body: serde_json::Value,
    ) -> Result<EventInfo, ProtoError> {
        body[AI_MARK] = serde_json::Value::Bool(true);
        let sender = if kind == EventKind::System {
            "system"
        } else {
            principal
        };
        self.post_from(conversation, sender, AGENT_AUTHOR, kind, body)
            .await
    }

    async fn post_from(
        &self,
        conversation: &str,
        sender: &str,
        author: &str,
        kind: EventKind,
        body: serde_json::Value,
    ) -> Result<EventInfo, ProtoError> {
        chat::validate_body(kind, &body)?;
        let conv = self.existing(conversation).await?;
        let members = self.store.members(&conv.id).await.map_err(internal)?;
        let event = NewEvent {
            conversation: conv.id.clone(),
            kind,
            sender: sender.into(),
            author: author.into(),
            body,
            target_seq: None,
            client_msg_id: None,
            request_digest: None,
            created_at_ms: now_ms(),
        };
        let pushes = self.pushes_for(&members, &event);
        self.commit(event, Change::None, &pushes, &members, None)
            .await
            .map_err(internal)
    }

    /// Shows `principal` typing in `conversation` to the other members, for a writer
    /// without a connection of its own (the AI assistant).
    pub async fn show_typing(&self, conversation: &str, principal: &str) -> Result<(), ProtoError> {
        self.deliver_typing(conversation, principal, None).await
    }

    async fn deliver_typing(
        &self,
        conversation: &str,
        principal: &str,
        except: Option<ConnId>,
    ) -> Result<(), ProtoError> {
        let members = self.store.members(conversation).await.map_err(internal)?;
        let notice = serialise(&ChatServerMessage::ChatTyping(TypingInfo {
            conversation: conversation.to_owned(),
            member: principal.to_owned(),
        }));
        self.hub.deliver(
            members
                .iter()
                .map(|m| m.member.as_str())
                .filter(|m| *m != principal),
            &notice,
            except,
        );
        Ok(())
    }

    pub async fn sync(&self, caller: &Caller, msg: ChatSync) -> Result<ChatSynced, ProtoError> {
        // `limit: 0` asks for the summaries alone (the inbox view).
        let limit = msg.limit.unwrap_or(DEFAULT_PAGE).min(chat::MAX_PAGE);
        let mine = self
            .store
            .conversations_of(&caller.principals)
            .await
            .map_err(internal)?;
        for (id, cursor) in &msg.cursors {
            match mine.iter().find(|(c, _)| c.id == *id) {
                Some((conv, _)) if *cursor > conv.last_seq => {
                    return Err(ProtoError::new(
                        ErrorCode::InvalidCursor,
                        format!(
                            "cursor {cursor} for '{id}' is past its last event ({}); resync from 0",
                            conv.last_seq
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    // Tell apart a conversation left (or never joined) from a wrong id.
                    self.member_of(caller, id).await?;
                }
            }
        }
        let mut conversations = Vec::with_capacity(mine.len());
        for (conv, me) in mine {
            let cursor = msg.cursors.get(&conv.id).copied().unwrap_or(0);
            let mut events = if cursor < conv.last_seq && limit > 0 {
                self.store
                    .events_after(&conv.id, cursor, limit + 1)
                    .await
                    .map_err(internal)?
            } else {
                Vec::new()
            };
            let has_more = events.len() > limit as usize;
            events.truncate(limit as usize);
            let unread = self
                .store
                .unread(&conv.id, &me.principal, me.read_seq)
                .await
                .map_err(internal)?;
            let mut receipts = self.store.receipts(&conv.id).await.map_err(internal)?;
            if receipts.len() > RECEIPTS_UP_TO_MEMBERS {
                receipts.clear();
            }
            receipts.retain(|r| r.member != me.principal);
            conversations.push(ConversationSync {
                conversation: self.info(&conv).await?,
                events,
                has_more,
                unread,
                read_seq: me.read_seq,
                delivered_seq: me.delivered_seq,
                receipts,
            });
        }
        Ok(ChatSynced {
            req: msg.req,
            conversations,
        })
    }

    pub async fn history(
        &self,
        caller: &Caller,
        msg: ChatHistory,
    ) -> Result<HistoryPage, ProtoError> {
        let (conv, _) = self.member_of(caller, &msg.conversation).await?;
        let before = msg.before.unwrap_or(conv.last_seq + 1);
        if before == 0 || before > conv.last_seq + 1 {
            return Err(ProtoError::new(
                ErrorCode::InvalidCursor,
                format!(
                    "'before' must be between 1 and {} for this conversation",
                    conv.last_seq + 1
                ),
            ));
        }
        let limit = msg.limit.unwrap_or(50).clamp(1, chat::MAX_PAGE);
        let events = self
            .store
            .events_before(&conv.id, before, limit)
            .await
            .map_err(internal)?;
        let has_more = events.first().is_some_and(|e| e.seq > 1);
        Ok(HistoryPage {
            req: msg.req,
            conversation: conv.id,
            events,
            has_more,
        })
    }

    /// Opens the direct conversation with `peer` (a user or `shop:<id>`), creating it
    /// the first time.
    pub async fn open_direct(
        &self,
        caller: &Caller,
        peer: &str,
        req: Option<u32>,
    ) -> Result<ConversationReply, ProtoError> {
        check_principal("peer", peer)?;
        if caller.principals.iter().any(|p| p == peer) {
            return Err(invalid("a direct conversation needs someone else"));
        }
        let id = direct_id(&caller.identity, peer);
        let row = ConversationRow {
            id: id.clone(),
            kind: ConversationKind::Direct,
            title: None,
            last_seq: 0,
        };
        let members = [
            (caller.identity.clone(), MemberRole::Member),
            (peer.to_owned(), MemberRole::Member),
        ];
        let created = self
            .store
            .create_conversation(&row, &members, now_ms())
            .await
            .map_err(internal)?;
        let (conv, _) = self.member_of(caller, &id).await?;
        let reply = ConversationReply {
            req,
            conversation: self.info(&conv).await?,
        };
        if created {
            let notice = serialise(&ChatServerMessage::ChatConversation(ConversationReply {
                req: None,
                ..reply.clone()
            }));
            self.hub.deliver([peer], &notice, None);
        }
        Ok(reply)
    }

    pub async fn create_group(
        &self,
        caller: &Caller,
        title: &str,
        members: &[String],
        req: Option<u32>,
    ) -> Result<ConversationReply, ProtoError> {
        let title = title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
            return Err(invalid(format!(
                "a group title has 1 to {MAX_TITLE_CHARS} characters"
            )));
        }
        let mut all = vec![(caller.identity.clone(), MemberRole::Owner)];
        for m in members {
            check_principal("member", m)?;
            if !all.iter().any(|(x, _)| x == m) {
                all.push((m.clone(), MemberRole::Member));
            }
        }
        if all.len() > chat::MAX_GROUP_MEMBERS {
            return Err(ProtoError::new(
                ErrorCode::GroupFull,
                format!("a group has at most {} members", chat::MAX_GROUP_MEMBERS),
            ));
        }
        let id = format!("grp_{:032x}", rand::thread_rng().gen::<u128>());
        let row = ConversationRow {
            id: id.clone(),
            kind: ConversationKind::Group,
            title: Some(title.to_owned()),
            last_seq: 0,
        };
        self.store
            .create_conversation(&row, &all, now_ms())
            .await
            .map_err(internal)?;
        let member_infos: Vec<MemberInfo> = all
            .iter()
            .map(|(member, role)| MemberInfo {
                member: member.clone(),
                role: *role,
            })
            .collect();
        let body = serde_json::json!({ "title": title });
        self.membership_event(
            caller,
            &id,
            EventKind::GroupCreated,
            body,
            Change::None,
            &member_infos,
        )
        .await?;
        let (conv, _) = self.member_of(caller, &id).await?;
        let reply = ConversationReply {
            req,
            conversation: self.info(&conv).await?,
        };
        let notice = serialise(&ChatServerMessage::ChatConversation(ConversationReply {
            req: None,
            ..reply.clone()
        }));
        self.hub.deliver(
            member_infos.iter().map(|m| m.member.as_str()),
            &notice,
            Some(caller.conn),
        );
        Ok(reply)
    }

    fn server_event(
        &self,
        caller: &Caller,
        conversation: &str,
        kind: EventKind,
        body: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            conversation: conversation.to_owned(),
            kind,
            sender: caller.identity.clone(),
            author: caller.identity.clone(),
            body,
            target_seq: None,
            client_msg_id: None,
            request_digest: None,
            created_at_ms: now_ms(),
        }
    }

    /// The caller's membership, if they moderate this group.
    async fn moderator_of(
        &self,
        caller: &Caller,
        conversation: &str,
    ) -> Result<(ConversationRow, Membership, Vec<MemberInfo>), ProtoError> {
        let (conv, me) = self.member_of(caller, conversation).await?;
        if conv.kind != ConversationKind::Group {
            return Err(invalid(
                "direct conversations have no moderators; block the user instead",
            ));
        }
        if !me.role.moderates() {
            return Err(ProtoError::new(
                ErrorCode::PermissionDenied,
                "only the group's owner and admins can do that",
            ));
        }
        let members = self.store.members(&conv.id).await.map_err(internal)?;
        Ok((conv, me, members))
    }

    pub async fn add_members(
        &self,
        caller: &Caller,
        conversation: &str,
        add: &[String],
        req: Option<u32>,
    ) -> Result<ConversationReply, ProtoError> {
        let (conv, _, members) = self.moderator_of(caller, conversation).await?;
        let mut new: Vec<(String, MemberRole)> = Vec::new();
        for m in add {
            check_principal("member", m)?;
            if members.iter().any(|x| x.member == *m) || new.iter().any(|(x, _)| x == m) {
                continue;
            }
            if self
                .store
                .banned_until(&conv.id, m, now_ms())
                .await
                .map_err(internal)?
                .is_some()
            {
                return Err(ProtoError::new(
                    ErrorCode::Banned,
                    format!("'{m}' is banned from this group; unban them first"),
                ));
            }
            new.push((m.clone(), MemberRole::Member));
        }
        if members.len() + new.len() > chat::MAX_GROUP_MEMBERS {
            return Err(ProtoError::new(
                ErrorCode::GroupFull,
                format!("a group has at most {} members", chat::MAX_GROUP_MEMBERS),
            ));
        }
        if !new.is_empty() {
            let names: Vec<&str> = new.iter().map(|(m, _)| m.as_str()).collect();
            let body = serde_json::json!({ "members": names });
            let mut audience = members.clone();
            audience.extend(new.iter().map(|(member, role)| MemberInfo {
                member: member.clone(),
                role: *role,
            }));
            let change = Change::AddMembers(new);
            self.membership_event(
                caller,
                &conv.id,
                EventKind::MemberAdded,
                body,
                change,
                &audience,
            )
            .await?;
        }
        let (conv, _) = self.member_of(caller, conversation).await?;
        Ok(ConversationReply {
            req,
            conversation: self.info(&conv).await?,
        })
    }

    /// Removes a member (a moderator's act), or the caller leaves; a ban also keeps
    /// them out for `ban_seconds` (0 = until unbanned).
    pub async fn remove_member(
        &self,
        caller: &Caller,
        conversation: &str,
        member: &str,
        ban_seconds: Option<u64>,
    ) -> Result<(), ProtoError> {
        let leaving = caller.principals.iter().any(|p| p == member) && ban_seconds.is_none();
        let (conv, members) = if leaving {
            let (conv, _) = self.member_of(caller, conversation).await?;
            if conv.kind != ConversationKind::Group {
                return Err(invalid(
                    "a direct conversation cannot be left; block the user instead",
                ));
            }
            let members = self.store.members(&conv.id).await.map_err(internal)?;
            (conv, members)
        } else {
            let (conv, me, members) = self.moderator_of(caller, conversation).await?;
            let target = members.iter().find(|m| m.member == member).ok_or_else(|| {
                ProtoError::new(
                    ErrorCode::NotAMember,
                    format!("'{member}' is not a member of this group"),
                )
            })?;
            if target.role == MemberRole::Owner
                || (target.role == MemberRole::Admin && me.role != MemberRole::Owner)
            {
                return Err(ProtoError::new(
                    ErrorCode::PermissionDenied,
                    "only the owner can remove an admin, and nobody the owner",
                ));
            }
            (conv, members)
        };
        let ban_until_ms = ban_seconds.map(|s| {
            if s == 0 {
                u64::MAX
            } else {
                now_ms().saturating_add(s.saturating_mul(1000))
            }
        });
        let body = serde_json::json!({ "member": member, "banned": ban_until_ms.is_some() });
        let change = Change::RemoveMember {
            member: member.to_owned(),
            ban_until_ms,
        };
        self.membership_event(
            caller,
            &conv.id,
            EventKind::MemberRemoved,
            body,
            change,
            &members,
        )
        .await
    }

    /// Records a change of membership or roles as an event, and tells `audience`.
    async fn membership_event(
        &self,
        caller: &Caller,
        conversation: &str,
        kind: EventKind,
        body: serde_json::Value,
        change: Change,
        audience: &[MemberInfo],
    ) -> Result<(), ProtoError> {
        let event = self.server_event(caller, conversation, kind, body);
        self.commit(event, change, &[], audience, None)
            .await
            .map_err(internal)?;
        Ok(())
    }

    pub async fn unban(
        &self,
        caller: &Caller,
        conversation: &str,
        member: &str,
    ) -> Result<(), ProtoError> {
        self.moderator_of(caller, conversation).await?;
        self.store
            .unban(conversation, member)
            .await
            .map_err(internal)
    }

    pub async fn set_role(
        &self,
        caller: &Caller,
        conversation: &str,
        member: &str,
        role: MemberRole,
    ) -> Result<(), ProtoError> {
        let (conv, me, members) = self.moderator_of(caller, conversation).await?;
        if me.role != MemberRole::Owner || role == MemberRole::Owner {
            return Err(ProtoError::new(
                ErrorCode::PermissionDenied,
                "only the owner appoints or dismisses admins (ownership cannot be handed over here)",
            ));
        }
        if !members
            .iter()
            .any(|m| m.member == member && m.role != MemberRole::Owner)
        {
            return Err(ProtoError::new(
                ErrorCode::NotAMember,
                format!("'{member}' is not a member of this group"),
            ));
        }
        let body = serde_json::json!({ "member": member, "role": role });
        let change = Change::SetRole {
            member: member.to_owned(),
            role,
        };
        self.membership_event(
            caller,
            &conv.id,
            EventKind::RoleChanged,
            body,
            change,
            &members,
        )
        .await
    }

    pub async fn mute(
        &self,
        caller: &Caller,
        conversation: &str,
        member: &str,
        seconds: u64,
    ) -> Result<(), ProtoError> {
        let (conv, _, members) = self.moderator_of(caller, conversation).await?;
        if !members
            .iter()
            .any(|m| m.member == member && m.role == MemberRole::Member)
        {
            return Err(ProtoError::new(
                ErrorCode::PermissionDenied,
                format!("'{member}' is not a plain member of this group, so cannot be muted"),
            ));
        }
        let until = now_ms().saturating_add(seconds.saturating_mul(1000));
        self.store
            .set_muted_until(&conv.id, member, until)
            .await
            .map_err(internal)?;
        Ok(())
    }

    pub async fn set_blocked(
        &self,
        caller: &Caller,
        user: &str,
        blocked: bool,
    ) -> Result<(), ProtoError> {
        check_principal("user", user)?;
        self.store
            .set_blocked(&caller.identity, user, blocked)
            .await
            .map_err(internal)
    }

    /// A message the caller may change: it exists, is a message, and still shows.
    async fn changeable(
        &self,
        caller: &Caller,
        conversation: &str,
        seq: u64,
    ) -> Result<(ConversationRow, Membership, EventInfo, String), ProtoError> {
        let (conv, me) = self.member_of(caller, conversation).await?;
        let not_found = || {
            ProtoError::new(
                ErrorCode::MessageNotFound,
                format!("no message {seq} that can still be changed in '{conversation}'"),
            )
        };
        let (event, author) = self
            .store
            .event(conversation, seq)
            .await
            .map_err(internal)?
            .ok_or_else(not_found)?;
        if !event.kind.is_message()
            || event.kind == EventKind::System
            || matches!(event.state, MessageState::Recalled | MessageState::Deleted)
        {
            return Err(not_found());
        }
        Ok((conv, me, event, author))
    }

    fn check_own_and_fresh(
        &self,
        caller: &Caller,
        event: &EventInfo,
        author: &str,
        what: &str,
    ) -> Result<(), ProtoError> {
        if author != caller.identity {
            return Err(ProtoError::new(
                ErrorCode::PermissionDenied,
                format!("only its sender can {what} a message"),
            ));
        }
        let window = self.settings.edit_window.as_millis() as u64;
        if now_ms() > event.created_at_ms.saturating_add(window) {
            return Err(ProtoError::new(
                ErrorCode::EditWindowClosed,
                format!(
                    "messages can be changed for {} s after sending; this one is older",
                    window / 1000
                ),
            ));
        }
        Ok(())
    }

    pub async fn edit(&self, caller: &Caller, msg: Edit) -> Result<(), ProtoError> {
        let (conv, me, event, author) = self.changeable(caller, &msg.conversation, msg.seq).await?;
        self.check_own_and_fresh(caller, &event, &author, "edit")?;
        chat::validate_body(event.kind, &msg.body)?;
        if let Some(locale) = self.settings.blocklist.check(&readable_text(&msg.body)) {
            return Err(ProtoError::new(
                ErrorCode::ContentBlocked,
                format!("the new text contains a blocked phrase (list '{locale}')"),
            ));
        }
        self.change_target(
            caller,
            &conv,
            &me,
            EventKind::Edit,
            event.seq,
            MessageState::Edited,
            msg.body,
        )
        .await
    }

    pub async fn recall(&self, caller: &Caller, msg: EventRef) -> Result<(), ProtoError> {
        let (conv, me, event, author) = self.changeable(caller, &msg.conversation, msg.seq).await?;
        self.check_own_and_fresh(caller, &event, &author, "recall")?;
        self.change_target(
            caller,
            &conv,
            &me,
            EventKind::Recall,
            event.seq,
            MessageState::Recalled,
            serde_json::json!({}),
        )
        .await
    }

    pub async fn delete(&self, caller: &Caller, msg: EventRef) -> Result<(), ProtoError> {
        let (conv, me, event, _) = self.changeable(caller, &msg.conversation, msg.seq).await?;
        if conv.kind != ConversationKind::Group || !me.role.moderates() {
            return Err(ProtoError::new(
                ErrorCode::PermissionDenied,
                "only a group's owner and admins delete others' messages; senders recall their own",
            ));
        }
        self.change_target(
            caller,
            &conv,
            &me,
            EventKind::Delete,
            event.seq,
            MessageState::Deleted,
            serde_json::json!({}),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn change_target(
        &self,
        caller: &Caller,
        conv: &ConversationRow,
        me: &Membership,
        kind: EventKind,
        target: u64,
        state: MessageState,
        body: serde_json::Value,
    ) -> Result<(), ProtoError> {
        let members = self.store.members(&conv.id).await.map_err(internal)?;
        let mut event = self.server_event(caller, &conv.id, kind, body.clone());
        event.sender = me.principal.clone();
        event.target_seq = Some(target);
        let change = Change::Target {
            seq: target,
            state,
            body,
        };
        self.commit(event, change, &[], &members, None)
            .await
            .map_err(internal)?;
        self.store
            .forget_translations(&conv.id, target)
            .await
            .map_err(internal)
    }

    pub async fn receipt(&self, caller: &Caller, msg: Receipt) -> Result<(), ProtoError> {
        let (conv, me) = self.member_of(caller, &msg.conversation).await?;
        let delivered = msg.delivered.unwrap_or(0);
        let read = msg.read.unwrap_or(0);
        if delivered.max(read) > conv.last_seq {
            return Err(ProtoError::new(
                ErrorCode::InvalidCursor,
                format!(
                    "receipts cannot pass the conversation's last event ({})",
                    conv.last_seq
                ),
            ));
        }
        let (delivered_seq, read_seq) = self
            .store
            .advance_receipts(&conv.id, &me.principal, delivered, read)
            .await
            .map_err(internal)?;
        if (delivered_seq, read_seq) != (me.delivered_seq, me.read_seq) {
            let members = self.store.members(&conv.id).await.map_err(internal)?;
            let notice = serialise(&ChatServerMessage::ChatReceipt(ReceiptInfo {
                conversation: conv.id.clone(),
                member: me.principal.clone(),
                delivered_seq,
                read_seq,
            }));
            self.hub
                .deliver(members.iter().map(|m| m.member.as_str()), &notice, None);
        }
        Ok(())
    }

    pub async fn typing(&self, caller: &Caller, conversation: &str) -> Result<(), ProtoError> {
        let (conv, me) = self.member_of(caller, conversation).await?;
        self.deliver_typing(&conv.id, &me.principal, Some(caller.conn))
            .await
    }

    pub async fn translate(
        &self,
        caller: &Caller,
        msg: Translate,
    ) -> Result<Translation, ProtoError> {
        if !valid_locale(&msg.locale) {
            return Err(invalid(format!(
                "'{}' is not a language tag like 'ar' or 'pt-BR'",
                msg.locale
            )));
        }
        self.member_of(caller, &msg.conversation).await?;
        let (event, _) = self
            .store
            .event(&msg.conversation, msg.seq)
            .await
            .map_err(internal)?
            .filter(|(e, _)| matches!(e.state, MessageState::Normal | MessageState::Edited))
            .ok_or_else(|| {
                ProtoError::new(
                    ErrorCode::MessageNotFound,
                    format!("no message {} in '{}'", msg.seq, msg.conversation),
                )
            })?;
        let Some(text) = event.body.get("text").and_then(|t| t.as_str()) else {
            return Err(invalid("only text messages can be translated"));
        };
        let reply = |text: String, cached: bool| Translation {
            req: msg.req,
            conversation: msg.conversation.clone(),
            seq: msg.seq,
            locale: msg.locale.clone(),
            text,
            cached,
        };
        if let Some(done) = self
            .store
            .translation(&msg.conversation, msg.seq, &msg.locale)
            .await
            .map_err(internal)?
        {
            return Ok(reply(done, true));
        }
        let Some(translator) = &self.translator else {
            return Err(ProtoError::new(
                ErrorCode::TranslatorUnavailable,
                "this server has no translator configured ([chat.translator] in the configuration)",
            ));
        };
        let translated = translator
            .translate(text, &msg.locale)
            .await
            .map_err(|why| ProtoError::new(ErrorCode::TranslationFailed, why))?;
        self.store
            .save_translation(&msg.conversation, msg.seq, &msg.locale, &translated)
            .await
            .map_err(internal)?;
        Ok(reply(translated, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_ids_do_not_depend_on_who_opens() {
        assert_eq!(direct_id("ana", "shop:acme"), direct_id("shop:acme", "ana"));
        assert_ne!(direct_id("ana", "bo"), direct_id("ana", "bob"));
        assert_ne!(direct_id("a", "b\0c"), direct_id("a\0b", "c"));
    }

    #[test]
    fn retries_are_told_from_reuse_by_digest() {
        let a = request_digest(EventKind::Text, &serde_json::json!({"text": "hi"}));
        assert_eq!(
            a,
            request_digest(EventKind::Text, &serde_json::json!({"text": "hi"}))
        );
        assert_ne!(
            a,
            request_digest(EventKind::Text, &serde_json::json!({"text": "hi!"}))
        );
    }
}
