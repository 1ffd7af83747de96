//! Room-service REST API, authenticated with HTTP Basic `api_key:api_secret`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine;
use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::model::RoomInfo;
use souk_proto::rest::{CreateRoom, MuteTrack, ParticipantList, RoomList};

use super::ApiError;

/// Checks `Authorization: Basic base64(key:secret)` against the configured keys, in
/// constant time per comparison so the secret cannot be learnt by timing.
pub(super) fn authorize(state: &super::State, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized = |why: &str| {
        ApiError(ProtoError::new(
            ErrorCode::Unauthorized,
            format!("{why}; use HTTP Basic auth with your API key and secret"),
        ))
    };
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("no Authorization header"))?;
    let encoded = value
        .strip_prefix("Basic ")
        .ok_or_else(|| unauthorized("not Basic authorization"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| unauthorized("credentials are not base64"))?;
    let (key, secret) = decoded
        .split_once(':')
        .ok_or_else(|| unauthorized("credentials lack ':'"))?;
    match state.keys.secret(key) {
        Some(expected) if constant_time_eq(expected.as_bytes(), secret.as_bytes()) => Ok(()),
        _ => Err(unauthorized("unknown API key or wrong secret")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn list(
    State(state): State<super::State>,
    headers: HeaderMap,
) -> Result<Json<RoomList>, ApiError> {
    authorize(&state, &headers)?;
    let mut rooms: Vec<_> = (state.media.call_all(|sfu, _| sfu.list_rooms()).await?)
        .into_iter()
        .flatten()
        .collect();
    rooms.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(RoomList { rooms }))
}

pub async fn create(
    State(state): State<super::State>,
    headers: HeaderMap,
    body: Result<Json<CreateRoom>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<RoomInfo>), ApiError> {
    authorize(&state, &headers)?;
    let Json(req) = body.map_err(|e| ProtoError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    let agent = req.agent.clone();
    let always = match agent.as_ref().map(|a| a.when.as_str()) {
        None | Some("no_staff") => false,
        Some("always") => true,
        Some(other) => {
            return Err(ProtoError::new(
                ErrorCode::InvalidRequest,
                format!("agent.when is 'always' or 'no_staff', not '{other}'"),
            )
            .into())
        }
    };
    let room = state
        .media
        .room(&req.name)
        .call(move |sfu, now| sfu.create_room(now, req))
        .await??;
    if let Some(agent) = agent {
        state
            .room_agents
            .configure(&room.name, &agent.shop, always)?;
    }
    Ok((StatusCode::CREATED, Json(room)))
}

pub async fn delete(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    state.room_agents.forget(&room);
    state
        .media
        .room(&room)
        .call(move |sfu, now| sfu.delete_room(now, &room))
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn participants(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<ParticipantList>, ApiError> {
    authorize(&state, &headers)?;
    let participants = state
        .media
        .room(&room)
        .call(move |sfu, _| sfu.list_participants(&room))
        .await??;
    Ok(Json(ParticipantList { participants }))
}

pub async fn remove_participant(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path((room, identity)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    state
        .media
        .room(&room)
        .call(move |sfu, now| sfu.remove_participant_by_identity(now, &room, &identity))
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn mute_track(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path((room, identity, track_id)): Path<(String, String, String)>,
    body: Result<Json<MuteTrack>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    let Json(req) = body.map_err(|e| ProtoError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    state
        .media
        .room(&room)
        .call(move |sfu, now| sfu.mute_track(now, &room, &identity, &track_id, req.muted))
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
pub struct AgentRequest {
    /// The shop the agent speaks for (one of `[[agent.shops]]`).
    pub shop: String,
}

/// Sends the AI agent into a room to talk with the shopper. When it cannot start, the
/// room hears why (an `agent` room event with the error), as does the caller.
pub async fn agent_join(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(room): Path<String>,
    axum::Json(request): axum::Json<AgentRequest>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    start_agent(&state, &room, &request.shop).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn start_agent(
    state: &super::State,
    room: &str,
    shop: &str,
) -> Result<(), ProtoError> {
    let result = state.room_agents.start(room, shop).await;
    if let Err(e) = &result {
        let event = souk_proto::live::LiveEvent::Agent(souk_proto::live::AgentStatus {
            identity: souk_agent::voice::room::agent_identity(shop),
            state: "error".into(),
            code: Some(e.code.as_str().to_owned()),
            message: Some(e.message.clone()),
        });
        super::announce(state, room, event).await;
    }
    result
}

/// Sends the AI agent away from a room.
pub async fn agent_leave(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    if state.room_agents.stop(&room) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ProtoError::new(
            ErrorCode::ParticipantNotFound,
            format!("no AI agent is in room '{room}'"),
        )
        .into())
    }
}

/// A shopper joined: a room whose configuration asks for the agent gets it, unless it
/// waits for staff-free rooms and a member of staff is in.
pub(super) async fn agent_on_join(state: &super::State, room: &str) {
    let Some((shop, always)) = state.room_agents.configured(room) else {
        return;
    };
    if state.room_agents.running(room) {
        return;
    }
    if !always {
        let name = room.to_owned();
        let staff_in = state
            .media
            .room(room)
            .call(move |sfu, _| sfu.list_participants(&name))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|people| {
                people
                    .iter()
                    .any(|p| p.role == souk_proto::token::Role::Staff)
            });
        if staff_in {
            return;
        }
    }
    if let Err(e) = start_agent(state, room, &shop).await {
        tracing::warn!(room, "the room's AI agent could not start: {}", e.message);
    }
}

/// The AI agent in a room: whether one is there, and the sessions it finished here
/// (per-turn stage times and the conversation as heard).
pub async fn agent_status(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(serde_json::json!({
        "running": state.room_agents.running(&room),
        "sessions": state.room_agents.records(&room),
    })))
}
