//! `GET /metrics`: Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::ApiError;

pub async fn metrics(State(state): State<super::State>) -> Result<impl IntoResponse, ApiError> {
    let (rooms, participants, paths) = state
        .media
        .call(|sfu, _| {
            (
                sfu.room_count(),
                sfu.participant_count(),
                sfu.path_qualities(),
            )
        })
        .await?;
    let mut body = String::new();
    let mut gauge = |name: &str, help: &str, value: usize| {
        let _ = writeln!(
            body,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge("souk_rooms", "Rooms open on this node.", rooms);
    gauge(
        "souk_participants",
        "Participants in rooms on this node, resumable ones included.",
        participants,
    );
    gauge(
        "souk_signal_sessions",
        "Open signalling WebSockets.",
        state.open_sessions.load(Ordering::Relaxed),
    );
    gauge(
        "souk_chat_users_online",
        "Chat users with at least one open socket on this node.",
        state.chat.hub().online_users(),
    );
    let outbox = state
        .chat
        .store()
        .db()
        .outbox_len(souk_chat::store::PUSH_TOPIC)
        .await
        .map_err(|e| {
            ApiError(souk_proto::ProtoError::new(
                souk_proto::ErrorCode::Internal,
                format!("reading the push outbox: {e}"),
            ))
        })?;
    gauge(
        "souk_chat_push_outbox",
        "Offline notifications waiting for delivery (a growing number means the push URL is failing).",
        outbox as usize,
    );
    // Per participant: the path from this server to the client, from its receiver reports.
    let per_path: [(&str, &str, fn(&souk_sfu::PathQuality) -> f64); 4] = [
        (
            "souk_participant_mos",
            "E-model MOS estimate of the path to the participant (1 to 4.5).",
            |q| q.mos(),
        ),
        (
            "souk_participant_rtt_seconds",
            "Round-trip time to the participant.",
            |q| q.rtt_ms / 1000.0,
        ),
        (
            "souk_participant_jitter_seconds",
            "Interarrival jitter the participant reports.",
            |q| q.jitter_ms / 1000.0,
        ),
        (
            "souk_participant_loss_ratio",
            "Fraction of packets the participant reports lost.",
            |q| q.loss,
        ),
    ];
    for (name, help, value) in per_path {
        let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (room, sid, path) in &paths {
            let room = room.replace(['"', '\\', '\n'], "_");
            let _ = writeln!(
                body,
                "{name}{{room=\"{room}\",participant=\"{sid}\"}} {}",
                value(path)
            );
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}
