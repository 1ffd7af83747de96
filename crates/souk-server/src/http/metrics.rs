//! `GET /metrics`: Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::ApiError;

pub async fn metrics(State(state): State<super::State>) -> Result<impl IntoResponse, ApiError> {
    let (rooms, participants) = state
        .media
        .call(|sfu, _| (sfu.room_count(), sfu.participant_count()))
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
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}
