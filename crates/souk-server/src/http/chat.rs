//! A chat session on the WebSocket: one task per socket, started by `chat_connect`.
//!
//! The task answers each request in order, and in between writes whatever the hub
//! queued for this socket (events, receipts, typing, presence). Translation waits on a
//! remote model, so it runs beside the loop and answers through the same queue.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use souk_chat::hub::{ConnId, Outbound, SOCKET_QUEUE};
use souk_chat::{Caller, Chat};
use souk_proto::chat::{
    ChatClientMessage, ChatConnect, ChatServerMessage, ConversationReply, Done,
};
use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::signal::req_of;
use souk_proto::PROTOCOL_VERSION;
use tokio::sync::mpsc;

use super::signal::{
    fail, OpenSession, IDLE_LIMIT, MAX_REFUSALS, MESSAGES_PER_SECOND, MESSAGE_BURST, PING_EVERY,
};
use crate::auth;
use crate::ratelimit::Bucket;

/// Typing notices from one socket, per conversation, at most this often.
const TYPING_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn session(
    mut socket: WebSocket,
    state: super::State,
    conn: ConnId,
    connect: ChatConnect,
) {
    state.open_sessions.fetch_add(1, Ordering::Relaxed);
    let _open = OpenSession(state.clone());
    if connect.protocol != PROTOCOL_VERSION {
        let err = ProtoError::new(
            ErrorCode::UnsupportedProtocol,
            format!(
                "this server speaks protocol {PROTOCOL_VERSION}; the client sent {}",
                connect.protocol
            ),
        );
        return fail(socket, connect.req, err).await;
    }
    let claims = match auth::verify(&state.keys, &connect.token) {
        Ok(claims) => claims,
        Err(err) => return fail(socket, connect.req, err).await,
    };
    if !claims.chat {
        let err = ProtoError::new(
            ErrorCode::PermissionDenied,
            "this token does not grant chat; issue one with the chat grant (souk token --chat)",
        );
        return fail(socket, connect.req, err).await;
    }
    let caller = Caller::new(&claims.sub, &claims.shops, conn);
    let (tx, rx) = mpsc::channel::<Outbound>(SOCKET_QUEUE);
    let chat = state.chat.clone();
    let connected = match chat.connected(&caller, tx.clone()).await {
        Ok(connected) => connected,
        Err(err) => return fail(socket, connect.req, err).await,
    };
    // The hub holds the only long-lived sender: if it cuts this socket as too slow,
    // `rx` ends and so does the session.
    let own = tx.downgrade();
    drop(tx);
    let hello = ChatServerMessage::ChatConnected(connected).to_json();
    if socket.send(Message::text(hello)).await.is_ok() {
        relay(&mut socket, &state, &chat, &caller, rx, own).await;
    }
    chat.disconnected(&caller).await;
}

async fn relay(
    socket: &mut WebSocket,
    state: &super::State,
    chat: &Arc<Chat>,
    caller: &Caller,
    mut rx: mpsc::Receiver<Outbound>,
    own: mpsc::WeakSender<Outbound>,
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut last_heard = Instant::now();
    let mut bucket = Bucket::new(MESSAGE_BURST, MESSAGES_PER_SECOND, Instant::now());
    let mut refusals = 0;
    let mut last_typing: HashMap<String, Instant> = HashMap::new();
    loop {
        let reply = tokio::select! {
            queued = rx.recv() => match queued {
                Some(queued) => {
                    // Serialised from a `String`, so always UTF-8; the check is a scan,
                    // not a copy.
                    let Ok(text) = Utf8Bytes::try_from(queued.into_bytes()) else {
                        continue;
                    };
                    if socket.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                    continue;
                }
                None => {
                    let _ = socket.send(Message::Close(Some(CloseFrame {
                        code: 4008,
                        reason: "too slow: reconnect and sync".into(),
                    }))).await;
                    return;
                }
            },
            incoming = socket.recv() => {
                last_heard = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        if bucket.try_take(Instant::now()) {
                            match ChatClientMessage::parse(&text) {
                                // Boxed: inline, the request's future would be part of
                                // every chat socket's task for its whole life.
                                Ok(msg) => Box::pin(handle(state, chat, caller, msg, &mut last_typing, &own)).await,
                                Err(err) => Some(ChatServerMessage::error(req_of(&text), err)),
                            }
                        } else {
                            refusals += 1;
                            if refusals > MAX_REFUSALS {
                                return;
                            }
                            let err = ProtoError::new(ErrorCode::RateLimited, "too many messages; slow down");
                            Some(ChatServerMessage::error(req_of(&text), err))
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let err = ProtoError::new(ErrorCode::MalformedMessage, "chat messages are JSON text frames");
                        Some(ChatServerMessage::error(None, err))
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > IDLE_LIMIT {
                    return;
                }
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if let Some(reply) = reply {
            if socket.send(Message::text(reply.to_json())).await.is_err() {
                return;
            }
        }
    }
}

/// Answers one request; `None` when it needs no answer (or answers later).
async fn handle(
    state: &super::State,
    chat: &Arc<Chat>,
    caller: &Caller,
    msg: ChatClientMessage,
    last_typing: &mut HashMap<String, Instant>,
    own: &mpsc::WeakSender<Outbound>,
) -> Option<ChatServerMessage> {
    use ChatClientMessage as C;
    use ChatServerMessage as S;
    let req = msg.req();
    let done = |r: Result<(), ProtoError>| r.map(|()| S::ChatDone(Done { req }));
    let conversation = |r: Result<ConversationReply, ProtoError>| r.map(S::ChatConversation);
    let result = match msg {
        C::ChatConnect(_) => Err(ProtoError::new(
            ErrorCode::InvalidState,
            "this socket is already connected to chat",
        )),
        C::ChatSend(send) => {
            if state
                .chat_send_limiter
                .try_take(&caller.identity, Instant::now())
            {
                chat.send(caller, send).await.map(S::ChatAck)
            } else {
                Err(ProtoError::new(
                    ErrorCode::RateLimited,
                    "you are sending too fast; nothing was sent, retry in a few seconds",
                ))
            }
        }
        C::ChatSync(sync) => chat.sync(caller, sync).await.map(S::ChatSynced),
        C::ChatHistory(history) => chat.history(caller, history).await.map(S::ChatHistoryPage),
        C::ChatOpenDirect(open) => conversation(chat.open_direct(caller, &open.peer, req).await),
        C::ChatCreateGroup(group) => conversation(
            chat.create_group(caller, &group.title, &group.members, req)
                .await,
        ),
        C::ChatAddMembers(add) => conversation(
            chat.add_members(caller, &add.conversation, &add.members, req)
                .await,
        ),
        C::ChatRemoveMember(m) => done(
            chat.remove_member(caller, &m.conversation, &m.member, None)
                .await,
        ),
        C::ChatSetRole(m) => done(
            chat.set_role(caller, &m.conversation, &m.member, m.role)
                .await,
        ),
        C::ChatMute(m) => done(
            chat.mute(caller, &m.conversation, &m.member, m.seconds)
                .await,
        ),
        C::ChatBan(m) => done(
            chat.remove_member(caller, &m.conversation, &m.member, Some(m.seconds))
                .await,
        ),
        C::ChatUnban(m) => done(chat.unban(caller, &m.conversation, &m.member).await),
        C::ChatBlock(u) => done(chat.set_blocked(caller, &u.user, true).await),
        C::ChatUnblock(u) => done(chat.set_blocked(caller, &u.user, false).await),
        C::ChatEdit(edit) => done(chat.edit(caller, edit).await),
        C::ChatRecall(r) => done(chat.recall(caller, r).await),
        C::ChatDelete(r) => done(chat.delete(caller, r).await),
        C::ChatReceipt(r) => done(chat.receipt(caller, r).await),
        C::ChatTyping(t) => {
            let now = Instant::now();
            let due = last_typing
                .get(&t.conversation)
                .is_none_or(|at| now.duration_since(*at) >= TYPING_EVERY);
            if !due {
                return None;
            }
            last_typing.insert(t.conversation.clone(), now);
            match chat.typing(caller, &t.conversation).await {
                Ok(()) => return None,
                Err(e) => Err(e),
            }
        }
        C::ChatPresence(p) => match chat.set_presence(caller, p.status).await {
            Ok(()) => return None,
            Err(e) => Err(e),
        },
        C::ChatTranslate(t) => {
            let (chat, caller, own) = (chat.clone(), caller.clone(), own.clone());
            tokio::spawn(async move {
                let reply = match chat.translate(&caller, t).await {
                    Ok(done) => S::ChatTranslation(done),
                    Err(e) => S::error(req, e),
                };
                if let Some(tx) = own.upgrade() {
                    let _ = tx.send(Outbound::new(reply.to_json())).await;
                }
            });
            return None;
        }
        C::Ping(ping) => Ok(S::Pong(ping)),
        _ => Err(ProtoError::new(
            ErrorCode::UnknownMessageType,
            "this message type is not handled on chat sockets",
        )),
    };
    Some(result.unwrap_or_else(|e| S::error(req, e)))
}
