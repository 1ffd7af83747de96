//! WHIP (RFC 9725): publishing from OBS, GStreamer or any WHIP client with one HTTP
//! request. `POST /whip/{room}` with the SDP offer and `Authorization: Bearer <token>`
//! joins the room as the token's participant, publishes what the offer sends, and answers
//! `201 Created` with the SDP answer and a `Location` to `DELETE` when done.
//!
//! WHEP is the mirror image: `POST /whep/{room}` with a receive-only offer plays the
//! room's media.
//!
//! The session has no signalling socket: a task drains what the core would tell it, and
//! the session ends on `DELETE`, when the room closes, or when the participant is removed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::model::{TrackKind, TrackSource};
use souk_proto::signal::{ClientMessage, PublishOffer, PublishTrack, Req, ServerMessage};
use souk_sfu::JoinRequest;

use super::ApiError;
use crate::auth;
use crate::media::{session_channel, Entry, SessionEvent};

/// How long the core may take to answer the offer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The tracks an offer sends, one per `m=` section with a mid and a sending direction.
pub(crate) fn tracks_from_sdp(sdp: &str) -> Result<Vec<PublishTrack>, ProtoError> {
    let mut tracks = Vec::new();
    let mut section: Option<(TrackKind, Option<String>, bool)> = None;
    let finish = |s: Option<(TrackKind, Option<String>, bool)>, tracks: &mut Vec<PublishTrack>| {
        if let Some((kind, Some(mid), true)) = s {
            tracks.push(PublishTrack {
                mid,
                kind,
                source: match kind {
                    TrackKind::Audio => TrackSource::Microphone,
                    TrackKind::Video => TrackSource::Camera,
                },
                name: "whip".into(),
                muted: false,
                width: 0,
                height: 0,
                layers: Vec::new(),
            });
        }
    };
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            finish(section.take(), &mut tracks);
            let kind = match m.split_whitespace().next() {
                Some("audio") => Some(TrackKind::Audio),
                Some("video") => Some(TrackKind::Video),
                _ => None,
            };
            // Sections default to sendrecv, which sends.
            section = kind.map(|k| (k, None, true));
        } else if let Some((_, mid, sends)) = section.as_mut() {
            if let Some(m) = line.strip_prefix("a=mid:") {
                *mid = Some(m.to_owned());
            } else if line == "a=recvonly" || line == "a=inactive" {
                *sends = false;
            }
        }
    }
    finish(section.take(), &mut tracks);
    if tracks.is_empty() {
        return Err(ProtoError::new(
            ErrorCode::InvalidSdp,
            "the offer sends no audio or video with a mid",
        ));
    }
    Ok(tracks)
}

/// Checks the bearer token for `room` and joins its participant without a socket.
async fn join_headless(
    state: &super::State,
    room: &str,
    headers: &HeaderMap,
    body_len: usize,
) -> Result<
    (
        souk_sfu::ParticipantId,
        crate::media::SessionReceiver,
        souk_proto::token::Grants,
    ),
    ApiError,
> {
    let claims = auth::verify(&state.keys, super::bearer_token(headers).unwrap_or(""))?;
    auth::check_room(&claims, room)?;
    if body_len > souk_proto::MAX_SIGNAL_MESSAGE_BYTES {
        return Err(
            ProtoError::new(ErrorCode::MessageTooLarge, "the SDP offer is too large").into(),
        );
    }
    let grants = claims.effective_grants();
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = session_channel();
    let join = JoinRequest {
        room: room.to_owned(),
        identity: claims.sub.clone(),
        name: claims.name.clone().unwrap_or_else(|| claims.sub.clone()),
        role: claims.role,
        grants,
        metadata: claims.metadata.clone(),
        auto_subscribe: false,
        req: None,
        last_event: None,
    };
    let engine = state.media.room(room);
    let id = engine.enter(Entry::Join(join), conn, tx).await?;
    engine
        .call(move |sfu, now| sfu.mark_headless(now, id))
        .await?;
    Ok((id, rx, grants))
}

/// Keeps a socket-less session: drains what the core tells it until it ends, and
/// answers `201 Created` with the SDP and the session's `Location`.
fn start_session(
    state: &super::State,
    kind: &str,
    room: &str,
    id: souk_sfu::ParticipantId,
    mut rx: crate::media::SessionReceiver,
    answer: String,
) -> Response {
    let session = format!("WS_{:016x}", rand::random::<u64>());
    state
        .whip_sessions
        .lock()
        .expect("whip sessions")
        .insert(session.clone(), (room.to_owned(), id));
    let sessions = state.clone();
    let key = session.clone();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if matches!(event, SessionEvent::Close) {
                break;
            }
        }
        sessions
            .whip_sessions
            .lock()
            .expect("whip sessions")
            .remove(&key);
    });
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, format!("/{kind}/{room}/{session}")),
        ],
        answer,
    )
        .into_response()
}

async fn leave(state: &super::State, room: &str, id: souk_sfu::ParticipantId) {
    let _ = state
        .media
        .room(room)
        .message(id, ClientMessage::Leave(Req::default()))
        .await;
}

pub async fn publish(
    State(state): State<super::State>,
    Path(room): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Result<Response, ApiError> {
    let tracks = tracks_from_sdp(&offer)?;
    let (id, mut rx, grants) = join_headless(&state, &room, &headers, offer.len()).await?;
    if !grants.publish {
        leave(&state, &room, id).await;
        return Err(
            ProtoError::new(ErrorCode::PermissionDenied, "this token may not publish").into(),
        );
    }
    let msg = ClientMessage::PublishOffer(PublishOffer {
        req: Some(1),
        sdp: offer,
        tracks,
    });
    state.media.room(&room).message(id, msg).await?;
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
        while let Some(event) = rx.recv().await {
            match event {
                SessionEvent::Message(msg) => match *msg {
                    ServerMessage::PublishAnswer(a) => return Ok(a.sdp),
                    ServerMessage::Error(e) if e.req == Some(1) => {
                        return Err(ProtoError::new(e.code, e.message))
                    }
                    _ => {}
                },
                SessionEvent::Text(_) => {}
                SessionEvent::Close => break,
            }
        }
        Err(ProtoError::new(
            ErrorCode::Internal,
            "the session ended before the answer",
        ))
    })
    .await
    .unwrap_or_else(|_| {
        Err(ProtoError::new(
            ErrorCode::Internal,
            "no answer to the offer in time",
        ))
    });
    match answer {
        Ok(sdp) => Ok(start_session(&state, "whip", &room, id, rx, sdp)),
        Err(e) => {
            leave(&state, &room, id).await;
            Err(e.into())
        }
    }
}

/// WHEP: `POST /whep/{room}` with a receive-only offer plays the room's media.
pub async fn play(
    State(state): State<super::State>,
    Path(room): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Result<Response, ApiError> {
    let (id, rx, grants) = join_headless(&state, &room, &headers, offer.len()).await?;
    if !grants.subscribe {
        leave(&state, &room, id).await;
        return Err(
            ProtoError::new(ErrorCode::PermissionDenied, "this token may not watch").into(),
        );
    }
    let answer = state
        .media
        .room(&room)
        .call(move |sfu, now| sfu.accept_viewer_offer(now, id, &offer))
        .await
        .and_then(|r| r);
    match answer {
        Ok(sdp) => Ok(start_session(&state, "whep", &room, id, rx, sdp)),
        Err(e) => {
            leave(&state, &room, id).await;
            Err(e.into())
        }
    }
}

/// Ends a WHIP or WHEP session.
pub async fn stop(
    State(state): State<super::State>,
    Path((room, session)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let found = state
        .whip_sessions
        .lock()
        .expect("whip sessions")
        .remove(&session);
    match found {
        Some((r, id)) if r == room => {
            leave(&state, &room, id).await;
            Ok(StatusCode::OK)
        }
        _ => Err(ProtoError::new(
            ErrorCode::SessionNotFound,
            format!("no WHIP session '{session}'"),
        )
        .into()),
    }
}

/// Trickled candidates are not needed: the server learns the client's address from its
/// connectivity checks. Accepted and ignored, so trickling clients carry on.
pub async fn trickle() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_come_from_sending_sections_with_a_mid() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=mid:2\r\na=recvonly\r\n";
        let tracks = tracks_from_sdp(sdp).unwrap();
        assert_eq!(
            tracks
                .iter()
                .map(|t| (t.mid.as_str(), t.kind))
                .collect::<Vec<_>>(),
            vec![("0", TrackKind::Audio), ("1", TrackKind::Video)]
        );
        assert_eq!(
            tracks_from_sdp("v=0\r\n").unwrap_err().code,
            ErrorCode::InvalidSdp
        );
    }
}
