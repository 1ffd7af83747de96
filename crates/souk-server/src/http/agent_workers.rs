//! `GET /api/v1/agent/workers`: the WebSocket agent workers (`souk agent`) keep open to
//! take voice jobs. Authenticated with the API key; the first message registers the
//! worker's shops and capacity; jobs go out and `job_done` comes back
//! (souk_agent::voice::pool has the protocol).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use souk_agent::voice::pool::FromWorker;
use tokio::sync::mpsc;

/// A worker has this long to register after connecting.
const REGISTER_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn connect(
    ws: WebSocketUpgrade,
    State(state): State<super::State>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = super::rooms::authorize(&state, &headers) {
        return e.into_response();
    }
    ws.on_upgrade(move |socket| serve(socket, state))
}

async fn serve(mut socket: WebSocket, state: super::State) {
    let register = tokio::time::timeout(REGISTER_WITHIN, next(&mut socket)).await;
    let Ok(Some(FromWorker::Register { shops, capacity })) = register else {
        let _ = socket.send(Message::text(r#"{"type":"error","message":"the first message must be register {shops, capacity}, within 10 s"}"#)).await;
        return;
    };
    let (send, mut jobs) = mpsc::unbounded_channel();
    let id = state
        .room_agents
        .worker_joined(shops.clone(), capacity, send);
    tracing::info!(worker = id, ?shops, capacity, "agent worker connected");
    loop {
        tokio::select! {
            job = jobs.recv() => {
                let Some(job) = job else { break };
                let text = serde_json::to_string(&job).expect("jobs serialise");
                if socket.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
            msg = next(&mut socket) => match msg {
                Some(FromWorker::JobDone { room }) => state.room_agents.worker_done(id, &room),
                Some(FromWorker::Register { .. }) => {}
                None => break,
            },
        }
    }
    state.room_agents.worker_left(id);
    tracing::info!(worker = id, "agent worker disconnected");
}

/// The worker's next message; `None` when the socket closes. Frames that are not worker
/// messages are skipped.
async fn next(socket: &mut WebSocket) -> Option<FromWorker> {
    loop {
        match socket.recv().await? {
            Ok(Message::Text(text)) => match serde_json::from_str(&text) {
                Ok(msg) => return Some(msg),
                Err(e) => tracing::warn!("an agent worker sent an unknown message: {e}"),
            },
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}
