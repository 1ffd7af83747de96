//! `GET /metrics`: Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use souk_metrics::{write_histogram, Histogram};

use super::ApiError;

pub async fn metrics(State(state): State<super::State>) -> Result<impl IntoResponse, ApiError> {
    let (mut rooms, mut participants, mut paths, mut layers) = (0, 0, Vec::new(), Vec::new());
    let engines = state
        .media
        .call_all(|sfu, _| {
            (
                sfu.room_count(),
                sfu.participant_count(),
                sfu.path_qualities(),
                sfu.subscription_layers(),
            )
        })
        .await?;
    for (r, p, path, layer) in engines {
        rooms += r;
        participants += p;
        paths.extend(path);
        layers.extend(layer);
    }
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
    write_histogram(
        &mut body,
        "souk_media_forward_delay_seconds",
        "Per datagram sent: from the kernel's receipt of the earliest datagram behind it to its send (for forwarded media, the delay this server adds).",
        &[("", &state.media.forward_delay())],
    );
    agent_metrics(&mut body, &state.agent.stats, &state.room_agents.stats);
    // Per participant: the path from this server to the client, from its receiver reports.
    let per_path: [(&str, &str, PathValue); 7] = [
        (
            "souk_participant_mos",
            "E-model MOS estimate of the path to the participant (1 to 4.5).",
            |q| Some(q.mos()),
        ),
        (
            "souk_participant_rtt_seconds",
            "Round-trip time to the participant.",
            |q| Some(q.rtt_ms / 1000.0),
        ),
        (
            "souk_participant_jitter_seconds",
            "Interarrival jitter the participant reports.",
            |q| Some(q.jitter_ms / 1000.0),
        ),
        (
            "souk_participant_loss_ratio",
            "Fraction of packets the participant reports lost.",
            |q| Some(q.loss),
        ),
        (
            "souk_participant_send_bitrate_bps",
            "Bits per second this server sends the participant.",
            |q| Some(q.send_bps),
        ),
        (
            "souk_participant_video_copies",
            "Copies of each video packet sent to the participant against random loss (1: none).",
            |q| Some(q.video_copies as f64),
        ),
        (
            "souk_participant_downlink_estimate_bps",
            "What the participant's downlink carries, once it has shown a limit (absent: none seen).",
            |q| q.downlink_estimate_bps.map(|bps| bps as f64),
        ),
    ];
    for (name, help, value) in per_path {
        let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (room, sid, path) in &paths {
            let Some(value) = value(path) else {
                continue;
            };
            let room = label(room);
            let _ = writeln!(
                body,
                "{name}{{room=\"{room}\",participant=\"{sid}\"}} {value}"
            );
        }
    }
    let name = "souk_subscription_layer";
    let _ = writeln!(
        body,
        "# HELP {name} Simulcast layer each subscriber gets of each video (0 the smallest, -1 paused).\n# TYPE {name} gauge"
    );
    for layer in &layers {
        let room = label(&layer.room);
        let track = label(&layer.track_id);
        let index = layer.index.map_or(-1, |i| i as i64);
        let sid = &layer.subscriber_sid;
        let _ = writeln!(
            body,
            "{name}{{room=\"{room}\",participant=\"{sid}\",track=\"{track}\"}} {index}"
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

/// The AI agent: chat answers (how many, how fast, why some failed) and where a spoken
/// turn's time goes, each stage measured from the end of the shopper's speech.
fn agent_metrics(
    body: &mut String,
    chat: &souk_agent::chat_agent::AgentStats,
    voice: &souk_agent::voice::telemetry::VoiceStats,
) {
    use souk_agent::voice::telemetry::STAGES;
    for (name, help, value) in [
        (
            "souk_agent_replies_total",
            "Answers the AI assistant posted in chat.",
            &chat.replies,
        ),
        (
            "souk_agent_handoffs_total",
            "Conversations the AI assistant handed to staff.",
            &chat.handoffs,
        ),
        (
            "souk_agent_voice_handoffs_total",
            "Spoken conversations handed to staff.",
            &voice.handoffs,
        ),
    ] {
        let _ = writeln!(
            body,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            value.load(Ordering::Relaxed)
        );
    }
    for (name, help, counts) in [
        (
            "souk_agent_failures_total",
            "AI assistant failures by error code.",
            &chat.failures,
        ),
        (
            "souk_agent_voice_failures_total",
            "Voice agent failures by error code.",
            &voice.failures,
        ),
    ] {
        let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} counter");
        for (code, count) in counts.snapshot() {
            let _ = writeln!(body, "{name}{{code=\"{code}\"}} {count}");
        }
    }
    let name = "souk_agent_voice_turn_verdicts_total";
    let _ = writeln!(
        body,
        "# HELP {name} The turn detector's verdicts: turns it let end, and turns it held open.\n# TYPE {name} counter"
    );
    for (verdict, count) in [
        ("complete", &voice.turns_complete),
        ("unfinished", &voice.turns_unfinished),
    ] {
        let _ = writeln!(
            body,
            "{name}{{verdict=\"{verdict}\"}} {}",
            count.load(Ordering::Relaxed)
        );
    }
    let reply = chat.reply_seconds.lock().expect("stats lock").clone();
    write_histogram(
        body,
        "souk_agent_reply_seconds",
        "From the shopper's message to the AI assistant's answer.",
        &[("", &reply)],
    );
    let stages = voice.stages.lock().expect("stats lock").clone();
    let labelled: Vec<(String, &Histogram)> = STAGES
        .iter()
        .zip(stages.iter())
        .map(|(stage, h)| (format!("stage=\"{stage}\""), h))
        .collect();
    let labelled: Vec<(&str, &Histogram)> =
        labelled.iter().map(|(l, h)| (l.as_str(), *h)).collect();
    write_histogram(
        body,
        "souk_agent_voice_stage_seconds",
        "From the end of the shopper's speech to each stage of the agent's answer.",
        &labelled,
    );
}

/// A per-path gauge's value.
type PathValue = fn(&souk_sfu::PathQuality) -> Option<f64>;

/// A label value with the characters the text format would need escaped replaced.
fn label(value: &str) -> String {
    value.replace(['"', '\\', '\n'], "_")
}
