//! The agent by voice.
//!
//! The stages — [`audio`] (Opus, 16 kHz PCM), [`vad`] (speech detection), [`stt`]
//! (recognition) and [`tts`] (synthesis) — each sit behind a trait so providers can be
//! swapped, as is the optional [`turn_detector`]. The optional neural stages (Silero
//! speech detection, the smart-turn model on [`log_mel`] features) run on [`onnx`].
//! [`session`] drives the stages around the turn-taking for one conversation and
//! [`telemetry`] times each turn; [`room`] joins the agent to a room as a participant,
//! and [`pool`] hands room jobs to separate worker processes.

pub mod audio;
#[cfg(test)]
mod conformance;
pub mod log_mel;
pub mod onnx;
pub mod pool;
pub mod room;
pub mod session;
pub mod stt;
pub mod telemetry;
pub mod tts;
pub mod turn_detector;
pub mod vad;
