//! A chat client: requests answered in order of their `req` numbers, and everything the
//! server pushes (events, receipts, typing, presence) on a queue of its own.
//!
//! ```no_run
//! # async fn demo(token: String) -> Result<(), souk_client::ClientError> {
//! use souk_client::chat::ChatClient;
//! let chat = ChatClient::connect("http://127.0.0.1:7880", &token).await?;
//! let direct = chat.open_direct("shop:acme").await?;
//! chat.send_text(&direct.id, "m-1", "Do you have this in size 38?").await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use souk_proto::chat::{
    ChatAck, ChatConnected, ChatServerMessage, ChatSynced, ConversationInfo, EventKind,
};
use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::PROTOCOL_VERSION;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::session::open_signalling;
use crate::ClientError;

/// How long a request waits for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<ChatServerMessage>>>>;

pub struct ChatClient {
    out: mpsc::UnboundedSender<WsMessage>,
    pending: Pending,
    next_req: AtomicU32,
    pushed: tokio::sync::Mutex<mpsc::UnboundedReceiver<ChatServerMessage>>,
    /// What the server said on connecting.
    pub connected: ChatConnected,
}

impl ChatClient {
    pub async fn connect(url: &str, token: &str) -> Result<ChatClient, ClientError> {
        Self::connect_from(url, token, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// Connects from a chosen local address (load generators spread over 127.0.0.x).
    pub async fn connect_from(
        url: &str,
        token: &str,
        bind_ip: IpAddr,
    ) -> Result<ChatClient, ClientError> {
        let mut ws = open_signalling(url, bind_ip).await?;
        let hello = serde_json::json!({
            "type": "chat_connect", "protocol": PROTOCOL_VERSION, "token": token,
        });
        ws.send(WsMessage::text(hello.to_string()))
            .await
            .map_err(|_| ClientError::Closed)?;
        let connected = loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => {
                    match serde_json::from_str::<ChatServerMessage>(&text) {
                        Ok(ChatServerMessage::ChatConnected(c)) => break c,
                        Ok(ChatServerMessage::Error(e)) => {
                            return Err(ClientError::Refused(ProtoError::new(e.code, e.message)))
                        }
                        _ => return Err(ClientError::Closed),
                    }
                }
                Some(Ok(_)) => continue,
                _ => return Err(ClientError::Closed),
            }
        };
        let (out, mut out_rx) = mpsc::unbounded_channel::<WsMessage>();
        let (push_tx, pushed) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let routes = pending.clone();
        tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            loop {
                tokio::select! {
                    next = out_rx.recv() => match next {
                        Some(msg) => if sink.send(msg).await.is_err() { break },
                        None => { let _ = sink.close().await; break }
                    },
                    incoming = stream.next() => match incoming {
                        Some(Ok(WsMessage::Text(text))) => {
                            let Ok(msg) = serde_json::from_str::<ChatServerMessage>(&text) else { continue };
                            let req = serde_json::from_str::<serde_json::Value>(&text)
                                .ok()
                                .and_then(|v| v.get("req").and_then(|r| r.as_u64()));
                            let waiter = req.and_then(|r| routes.lock().expect("routes").remove(&(r as u32)));
                            match waiter {
                                Some(tx) => { let _ = tx.send(msg); }
                                None => { let _ = push_tx.send(msg); }
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            // Closing: every request still waiting learns the socket is gone.
            routes.lock().expect("routes").clear();
        });
        Ok(ChatClient {
            out,
            pending,
            next_req: AtomicU32::new(1),
            pushed: tokio::sync::Mutex::new(pushed),
            connected,
        })
    }

    /// Sends a request (a JSON object with its `type`) and waits for its answer.
    pub async fn request(
        &self,
        mut msg: serde_json::Value,
    ) -> Result<ChatServerMessage, ClientError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        msg["req"] = req.into();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(req, tx);
        self.out
            .send(WsMessage::text(msg.to_string()))
            .map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(ChatServerMessage::Error(e))) => {
                Err(ClientError::Refused(ProtoError::new(e.code, e.message)))
            }
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                self.pending.lock().expect("pending").remove(&req);
                Err(ClientError::Timeout(format!(
                    "an answer to '{}'",
                    msg["type"]
                )))
            }
        }
    }

    /// Sends without waiting (typing, presence).
    pub fn notify(&self, msg: serde_json::Value) -> Result<(), ClientError> {
        self.out
            .send(WsMessage::text(msg.to_string()))
            .map_err(|_| ClientError::Closed)
    }

    pub async fn send(
        &self,
        conversation: &str,
        client_msg_id: &str,
        kind: EventKind,
        body: serde_json::Value,
    ) -> Result<ChatAck, ClientError> {
        let reply = self
            .request(serde_json::json!({
                "type": "chat_send", "conversation": conversation,
                "client_msg_id": client_msg_id, "kind": kind, "body": body,
            }))
            .await?;
        match reply {
            ChatServerMessage::ChatAck(ack) => Ok(ack),
            other => Err(unexpected(other)),
        }
    }

    pub async fn send_text(
        &self,
        conversation: &str,
        client_msg_id: &str,
        text: &str,
    ) -> Result<ChatAck, ClientError> {
        self.send(
            conversation,
            client_msg_id,
            EventKind::Text,
            serde_json::json!({ "text": text }),
        )
        .await
    }

    pub async fn sync(
        &self,
        cursors: &HashMap<String, u64>,
        limit: Option<u32>,
    ) -> Result<ChatSynced, ClientError> {
        let mut msg = serde_json::json!({ "type": "chat_sync", "cursors": cursors });
        if let Some(limit) = limit {
            msg["limit"] = limit.into();
        }
        match self.request(msg).await? {
            ChatServerMessage::ChatSynced(synced) => Ok(synced),
            other => Err(unexpected(other)),
        }
    }

    pub async fn open_direct(&self, peer: &str) -> Result<ConversationInfo, ClientError> {
        self.conversation_request(serde_json::json!({ "type": "chat_open_direct", "peer": peer }))
            .await
    }

    pub async fn create_group(
        &self,
        title: &str,
        members: &[&str],
    ) -> Result<ConversationInfo, ClientError> {
        self.conversation_request(serde_json::json!({
            "type": "chat_create_group", "title": title, "members": members,
        }))
        .await
    }

    async fn conversation_request(
        &self,
        msg: serde_json::Value,
    ) -> Result<ConversationInfo, ClientError> {
        match self.request(msg).await? {
            ChatServerMessage::ChatConversation(reply) => Ok(reply.conversation),
            other => Err(unexpected(other)),
        }
    }

    /// The next message the server pushed, if one comes within `timeout`.
    pub async fn next_pushed(&self, timeout: Duration) -> Option<ChatServerMessage> {
        let mut pushed = self.pushed.lock().await;
        tokio::time::timeout(timeout, pushed.recv())
            .await
            .ok()
            .flatten()
    }

    /// Closes the socket, as a device going offline does.
    pub fn close(&self) {
        let _ = self.out.send(WsMessage::Close(None));
    }
}

fn unexpected(msg: ChatServerMessage) -> ClientError {
    ClientError::Refused(ProtoError::new(
        ErrorCode::Internal,
        format!("unexpected answer: {}", msg.to_json()),
    ))
}
