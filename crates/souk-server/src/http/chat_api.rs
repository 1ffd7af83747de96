//! Chat over REST: history for apps that page without a socket, and notices from the
//! merchant's backend.
//!
//! Users authenticate with their chat token (`Authorization: Bearer ...`); the
//! merchant's backend with its API key (HTTP Basic), as for the room API.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use souk_chat::Caller;
use souk_proto::chat::{ChatHistory, ChatSync, ChatSynced, EventInfo, HistoryPage};
use souk_proto::error::{ErrorCode, ProtoError};

use super::ApiError;
use crate::auth;

fn bearer_caller(state: &super::State, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = super::bearer_token(headers).unwrap_or("");
    let claims = auth::verify(&state.keys, token)?;
    if !claims.chat {
        return Err(ProtoError::new(
            ErrorCode::PermissionDenied,
            "this token does not grant chat",
        )
        .into());
    }
    Ok(Caller::new(&claims.sub, &claims.shops, 0))
}

/// The user's conversations with unread counts and receipts, without events.
pub async fn conversations(
    State(state): State<super::State>,
    headers: HeaderMap,
) -> Result<Json<ChatSynced>, ApiError> {
    let caller = bearer_caller(&state, &headers)?;
    let sync = ChatSync {
        req: None,
        cursors: Default::default(),
        limit: Some(0),
    };
    Ok(Json(state.chat.sync(&caller, sync).await?))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    /// Events after this sequence number, oldest first.
    after: Option<u64>,
    /// Or: the events just before this one.
    before: Option<u64>,
    limit: Option<u32>,
}

/// One page of a conversation: `?after=N` to catch up, `?before=N` to page back.
pub async fn events(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let caller = bearer_caller(&state, &headers)?;
    match (q.after, q.before) {
        (Some(_), Some(_)) => Err(ProtoError::new(
            ErrorCode::InvalidCursor,
            "give 'after' or 'before', not both",
        )
        .into()),
        (Some(after), None) => {
            let mut cursors = std::collections::BTreeMap::new();
            cursors.insert(id.clone(), after);
            let sync = ChatSync {
                req: None,
                cursors,
                limit: q.limit,
            };
            let synced = state.chat.sync(&caller, sync).await?;
            let found = synced
                .conversations
                .into_iter()
                .find(|c| c.conversation.id == id)
                .map(|c| (c.events, c.has_more))
                .unwrap_or_default();
            Ok(Json(HistoryPage {
                req: None,
                conversation: id,
                events: found.0,
                has_more: found.1,
            }))
        }
        (None, before) => {
            let history = ChatHistory {
                req: None,
                conversation: id,
                before,
                limit: q.limit,
            };
            Ok(Json(state.chat.history(&caller, history).await?))
        }
    }
}

#[derive(Deserialize)]
pub struct Notice {
    text: String,
}

/// A system notice from the merchant's backend (an order shipped, a shop closed...).
pub async fn notice(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(notice): Json<Notice>,
) -> Result<Json<EventInfo>, ApiError> {
    super::rooms::authorize(&state, &headers)?;
    Ok(Json(state.chat.system_notice(&id, &notice.text).await?))
}

/// The merchant's backend asks for the AI assistant in a shop conversation; it answers
/// from now on, even while staff are online.
pub async fn agent_join(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    super::rooms::authorize(&state, &headers)?;
    state.agent.join(&id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The merchant's backend sends the AI assistant away from a conversation.
pub async fn agent_leave(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    super::rooms::authorize(&state, &headers)?;
    state.agent.leave(&id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
