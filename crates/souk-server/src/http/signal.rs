//! The signalling WebSocket (`GET /rtc`): one task per socket.
//!
//! The first message must be `join` (or a resume) with a valid token. After that the task
//! relays: client messages to the media engine, engine messages to the client. If the
//! socket drops without `leave`, the engine keeps the session for the resume window.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use souk_proto::chat::{ChatClientMessage, ChatConnect};
use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::signal::{req_of, ClientMessage, Join, RefreshToken, ServerMessage};
use souk_proto::token::RoomClaims;
use souk_proto::{MAX_SIGNAL_MESSAGE_BYTES, PROTOCOL_VERSION};
use souk_sfu::{JoinRequest, ResumeRequest};

use super::{ApiError, ClientAddr, Member};
use crate::auth;
use crate::media::{
    session_channel, ConnId, Entry, SessionEvent, SessionReceiver, WeakSessionSender,
};
use crate::ratelimit::Bucket;

/// How long a new socket has to send `join`.
const JOIN_DEADLINE: Duration = Duration::from_secs(10);
/// A socket silent this long (no message, no pong) counts as dead.
pub(super) const IDLE_LIMIT: Duration = Duration::from_secs(20);
pub(super) const PING_EVERY: Duration = Duration::from_secs(5);
/// Frames above this are refused by the WebSocket layer itself (the socket closes);
/// frames between the signalling limit and this get a `message_too_large` error.
const MAX_FRAME_BYTES: usize = 4 * MAX_SIGNAL_MESSAGE_BYTES;
/// What the WebSocket layer reads at a time. It zeroes that much before every read
/// attempt, and a viewer's socket is polled for reading each time a room batch wakes
/// it, so the size costs per delivery; larger frames (an SDP offer) take several reads.
const READ_BUFFER_BYTES: usize = 1024;
/// How long a session the server ended may take to write what was queued for it.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);
/// Messages a client may send in a burst, and per second after it.
pub(super) const MESSAGE_BURST: u32 = 50;
pub(super) const MESSAGES_PER_SECOND: f64 = 20.0;
/// A client that keeps flooding after this many refusals is disconnected.
pub(super) const MAX_REFUSALS: u32 = 100;

pub async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<super::State>,
    addr: ClientAddr,
    headers: axum::http::HeaderMap,
) -> Response {
    let addr = addr.0;
    let client = super::client_ip(addr.ip(), &headers, &state.trusted_proxies);
    if !state.join_limiter.try_take(&client, Instant::now()) {
        return ApiError(ProtoError::new(
            ErrorCode::RateLimited,
            "too many signalling connections from your address; retry in a few seconds",
        ))
        .into_response();
    }
    // Signalling and chat frames are small, and a live room holds thousands of idle
    // sockets: the 128 KiB read buffer the WebSocket layer reserves by default would
    // dominate the memory of each one.
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| session(socket, state, addr))
}

async fn send(socket: &mut WebSocket, msg: &ServerMessage) -> bool {
    socket.send(Message::text(msg.to_json())).await.is_ok()
}

pub(super) async fn fail(mut socket: WebSocket, req: Option<u32>, err: ProtoError) {
    let _ = send(&mut socket, &ServerMessage::error(req, err.clone())).await;
    let reason = err.code.as_str().to_owned();
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 4000,
            reason: reason.into(),
        })))
        .await;
}

/// Counts a socket as open for as long as it lives.
pub(super) struct OpenSession(pub(super) super::State);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.open_sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn session(mut socket: WebSocket, state: super::State, addr: SocketAddr) {
    state.open_sessions.fetch_add(1, Ordering::Relaxed);
    let _open = OpenSession(state.clone());
    let conn: ConnId = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let join = match tokio::time::timeout(JOIN_DEADLINE, first_message(&mut socket)).await {
        Ok(Ok(First::Join(join))) => join,
        Ok(Ok(First::Chat(connect))) => {
            // Boxed, like the rare steps in `read`: a future awaited inline makes every
            // session's task as large as it, and this one would double a viewer's.
            return Box::pin(super::chat::session(socket, state, conn, connect)).await;
        }
        Ok(Err(Some((req, err)))) => return fail(socket, req, err).await,
        Ok(Err(None)) => return,
        Err(_) => {
            let err = ProtoError::new(ErrorCode::InvalidState, "no join message within 10 s");
            return fail(socket, None, err).await;
        }
    };
    let claims = match check_join(&state, &join) {
        Ok(claims) => claims,
        Err(err) => return fail(socket, join.req, err).await,
    };
    let (tx, rx) = session_channel();
    // The socket's reader queues its replies here; weakly, so the queue still ends
    // when the media engine lets go of the session.
    let queue = tx.downgrade();
    let engine = state.media.room(&claims.room);
    let joined = match &join.resume {
        Some(resume) => {
            let req = ResumeRequest {
                room: claims.room.clone(),
                identity: claims.sub.clone(),
                sid: resume.sid.clone(),
                resume_secret: resume.resume_secret.clone(),
                req: join.req,
                last_event: join.last_event.clone(),
            };
            engine.enter(Entry::Resume(req), conn, tx).await
        }
        None => {
            let req = JoinRequest {
                room: claims.room.clone(),
                identity: claims.sub.clone(),
                name: claims.name.clone().unwrap_or_else(|| claims.sub.clone()),
                role: claims.role,
                grants: claims.effective_grants(),
                metadata: claims.metadata.clone(),
                auto_subscribe: join.auto_subscribe,
                req: join.req,
                last_event: join.last_event.clone(),
            };
            engine.enter(Entry::Join(req), conn, tx).await
        }
    };
    let id = match joined {
        Ok(id) => id,
        Err(err) => return fail(socket, join.req, err).await,
    };
    if join.resume.is_none() && claims.role == souk_proto::token::Role::Shopper {
        let (state, room) = (state.clone(), claims.room.clone());
        tokio::spawn(async move { super::rooms::agent_on_join(&state, &room).await });
    }
    tracing::debug!(%addr, ?id, "signalling session started");
    let member = Member {
        id,
        claims: &claims,
        engine,
    };
    let ended_by_server = relay(socket, &state, member, rx, queue).await;
    if !ended_by_server {
        engine.signal_lost(id, conn).await;
    }
}

/// How a socket starts: joining a room, or connecting to chat.
enum First {
    Join(Join),
    Chat(ChatConnect),
}

/// Reads until the first text message and parses it as `join` or `chat_connect`.
/// `Err(None)` means the socket closed before saying anything.
async fn first_message(socket: &mut WebSocket) -> Result<First, Option<(Option<u32>, ProtoError)>> {
    loop {
        let msg = match socket.recv().await {
            Some(Ok(msg)) => msg,
            _ => return Err(None),
        };
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(_) => {
                let err = ProtoError::new(
                    ErrorCode::MalformedMessage,
                    "signalling messages are JSON text frames",
                );
                return Err(Some((None, err)));
            }
            Message::Close(_) => return Err(None),
            _ => continue,
        };
        if let Ok(ChatClientMessage::ChatConnect(connect)) = ChatClientMessage::parse(&text) {
            return Ok(First::Chat(connect));
        }
        return match ClientMessage::parse(&text) {
            Ok(ClientMessage::Join(join)) => Ok(First::Join(join)),
            Ok(other) => Err(Some((
                other.req(),
                ProtoError::new(
                    ErrorCode::InvalidState,
                    "the first message must be 'join' (a room) or 'chat_connect' (chat)",
                ),
            ))),
            Err(e) => Err(Some((None, e))),
        };
    }
}

fn check_join(state: &super::State, join: &Join) -> Result<RoomClaims, ProtoError> {
    if join.protocol != PROTOCOL_VERSION {
        return Err(ProtoError::new(
            ErrorCode::UnsupportedProtocol,
            format!(
                "this server speaks protocol {PROTOCOL_VERSION}; the client sent {}",
                join.protocol
            ),
        ));
    }
    let claims = auth::verify(&state.keys, &join.token)?;
    if claims.room.is_empty() {
        return Err(ProtoError::new(
            ErrorCode::PermissionDenied,
            "this token admits to no room (a chat token starts with 'chat_connect')",
        ));
    }
    if let Some(room) = &join.room {
        auth::check_room(&claims, room)?;
    }
    Ok(claims)
}

/// Relays until either side ends. True when the server ended the session.
///
/// The socket's two directions are two tasks. A room event then wakes only the writer:
/// in a live room that is one wake per viewer per batch, and each such wake of a single
/// task also polled the socket for reading and the session's timers (bench/RESULTS.md,
/// "Paced room fan-out").
async fn relay(
    socket: WebSocket,
    state: &super::State,
    member: Member<'_>,
    rx: SessionReceiver,
    queue: WeakSessionSender,
) -> bool {
    let (sink, stream) = socket.split();
    let mut writer = tokio::spawn(write(sink, rx));
    tokio::select! {
        written = &mut writer => written.unwrap_or(false),
        ended_by_server = read(stream, state, member, queue) => {
            if ended_by_server {
                // The media engine is stopping. What it queued for this client (its
                // leave notice, the close) is still written: the writer ends once the
                // engine lets go of the queue.
                let _ = tokio::time::timeout(FLUSH_LIMIT, &mut writer).await;
            }
            writer.abort();
            ended_by_server
        }
    }
}

/// Writes what the session's queue holds, with keepalive pings, until the queue says
/// close (true) or the socket fails (false).
async fn write(mut sink: SplitSink<WebSocket, Message>, mut rx: SessionReceiver) -> bool {
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        let msg = tokio::select! {
            // The queue first: a wake for an event then polls nothing else.
            biased;
            event = rx.recv() => match event {
                Some(SessionEvent::Text(text)) => Message::Text(text),
                Some(SessionEvent::Message(msg)) => Message::text(msg.to_json()),
                Some(SessionEvent::Close) | None => {
                    let close = CloseFrame { code: 1000, reason: "session ended".into() };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    return true;
                }
            },
            _ = ping.tick() => Message::Ping(Vec::new().into()),
        };
        if sink.send(msg).await.is_err() {
            return false;
        }
    }
}

/// Queues a reply behind what the session already has to send. False when the queue
/// is full (the client is not reading) or gone (the session ended).
fn reply(queue: &WeakSessionSender, msg: ServerMessage) -> bool {
    queue
        .upgrade()
        .is_some_and(|tx| tx.try_send(SessionEvent::Message(Box::new(msg))).is_ok())
}

/// Reads the client's messages until the socket ends or falls silent (false), or the
/// media engine stops (true).
async fn read(
    mut stream: SplitStream<WebSocket>,
    state: &super::State,
    member: Member<'_>,
    queue: WeakSessionSender,
) -> bool {
    let Member { id, claims, engine } = member;
    let ttl = Duration::from_secs(claims.exp.saturating_sub(claims.iat).max(60));
    let mut refresh = tokio::time::interval((ttl / 2).min(Duration::from_secs(300)));
    // The writer's pings draw pongs, so a live client is never silent this long.
    let idle = tokio::time::sleep(IDLE_LIMIT);
    tokio::pin!(idle);
    let mut bucket = Bucket::new(MESSAGE_BURST, MESSAGES_PER_SECOND, Instant::now());
    let mut refusals = 0;
    loop {
        let incoming = tokio::select! {
            incoming = stream.next() => incoming,
            _ = &mut idle => return false,
            _ = refresh.tick() => {
                let now = auth::unix_now();
                let fresh = RoomClaims { iat: now, nbf: Some(now.saturating_sub(auth::LEEWAY_SECS)), exp: now + ttl.as_secs(), ..claims.clone() };
                if let Some(secret) = state.keys.secret(&claims.iss) {
                    if let Ok(token) = auth::sign_claims(secret, &fresh) {
                        if !reply(&queue, ServerMessage::RefreshToken(RefreshToken { token })) {
                            return false;
                        }
                    }
                }
                continue;
            }
        };
        idle.as_mut()
            .reset(tokio::time::Instant::now() + IDLE_LIMIT);
        let text = match incoming {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                let err = ProtoError::new(
                    ErrorCode::MalformedMessage,
                    "signalling messages are JSON text frames",
                );
                if !reply(&queue, ServerMessage::error(None, err)) {
                    return false;
                }
                continue;
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return false,
            Some(Ok(_)) => continue,
        };
        if !bucket.try_take(Instant::now()) {
            refusals += 1;
            if refusals > MAX_REFUSALS {
                return false;
            }
            let err = ProtoError::new(ErrorCode::RateLimited, "too many messages; slow down");
            if !reply(&queue, ServerMessage::error(req_of(&text), err)) {
                return false;
            }
            continue;
        }
        match ClientMessage::parse(&text) {
            Ok(msg) if super::live::is_server_side(&msg) => {
                // Boxed, as is the message below: a future awaited inline is part of
                // this task for its whole life. A viewer's session task was 10 KiB with
                // these inline and is 3 KiB without, for an allocation per message.
                if let Some(answer) = Box::pin(super::live::handle(state, member, msg)).await {
                    if !reply(&queue, answer) {
                        return false;
                    }
                }
            }
            Ok(msg) => {
                if Box::pin(engine.message(id, msg)).await.is_err() {
                    return true;
                }
            }
            Err(err) => {
                if !reply(&queue, ServerMessage::error(req_of(&text), err)) {
                    return false;
                }
            }
        }
    }
}
