//! The voice pipeline's stages: audio coding, speech detection, recognition and
//! synthesis, each behind a trait so providers can be swapped.

pub mod audio;
#[cfg(test)]
mod conformance;
pub mod pool;
pub mod room;
pub mod session;
pub mod stt;
pub mod telemetry;
pub mod tts;
pub mod vad;
