//! Where the time goes in a spoken turn, per turn and as histograms for `/metrics`.
//!
//! Every stage is timed from the end of the shopper's speech (when it really ended, not
//! when the detector noticed), so the histograms add up to the voice-to-voice delay the
//! shopper feels, less the network.

use std::collections::HashMap;

use souk_metrics::Histogram;

use serde::Serialize;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The moments of one turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnTimes {
    pub speech_end: Option<Instant>,
    pub stt_final: Option<Instant>,
    pub llm_first_token: Option<Instant>,
    pub tts_first_audio: Option<Instant>,
    pub first_audio_sent: Option<Instant>,
    /// The turn detector's last verdict on the turn (`None` without one): `false` held
    /// the turn open, up to the cap.
    pub turn_complete: Option<bool>,
}

impl TurnTimes {
    /// Each stage's moment after the end of speech, in the order above (stt, llm, tts,
    /// sent); a stage that came before the end (preemptive work) counts as zero.
    pub fn after_speech(&self) -> [Option<Duration>; 4] {
        let since = |t: Option<Instant>| Some(t?.saturating_duration_since(self.speech_end?));
        [
            since(self.stt_final),
            since(self.llm_first_token),
            since(self.tts_first_audio),
            since(self.first_audio_sent),
        ]
    }
}

/// Events counted by their error code.
#[derive(Debug, Default)]
pub struct CountsByCode(Mutex<HashMap<&'static str, u64>>);

impl CountsByCode {
    pub fn add(&self, code: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    /// Every code seen and its count.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(code, n)| (*code, *n)).collect()
    }
}

/// Buckets for stage delays, in seconds.
pub const STAGE_BOUNDS: &[f64] = &[0.05, 0.1, 0.2, 0.3, 0.5, 0.65, 0.8, 1.0, 1.5, 2.5, 5.0];

/// The stages, as labelled in `/metrics`.
pub const STAGES: [&str; 4] = [
    "stt_final",
    "llm_first_token",
    "tts_first_audio",
    "first_audio_sent",
];

/// Voice turns of every session on this server.
#[derive(Debug)]
pub struct VoiceStats {
    pub stages: Mutex<[Histogram; 4]>,
    pub handoffs: AtomicU64,
    pub failures: CountsByCode,
    /// The turn detector's verdicts: turns it let end, and turns it held open.
    pub turns_complete: AtomicU64,
    pub turns_unfinished: AtomicU64,
}

impl Default for VoiceStats {
    fn default() -> Self {
        VoiceStats {
            stages: Mutex::new(std::array::from_fn(|_| Histogram::new(STAGE_BOUNDS))),
            handoffs: AtomicU64::new(0),
            failures: CountsByCode::default(),
            turns_complete: AtomicU64::new(0),
            turns_unfinished: AtomicU64::new(0),
        }
    }
}

impl VoiceStats {
    pub fn turn_verdict(&self, complete: bool) {
        let counter = if complete {
            &self.turns_complete
        } else {
            &self.turns_unfinished
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn turn(&self, times: &TurnTimes) {
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        for (histogram, delay) in stages.iter_mut().zip(times.after_speech()) {
            if let Some(delay) = delay {
                histogram.observe(delay.as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_timed_from_the_end_of_speech() {
        let end = Instant::now();
        let ms = |n| Some(end + Duration::from_millis(n));
        let times = TurnTimes {
            speech_end: Some(end),
            stt_final: ms(120),
            llm_first_token: ms(330),
            tts_first_audio: ms(340),
            first_audio_sent: ms(360),
            turn_complete: None,
        };
        let stats = VoiceStats::default();
        stats.turn(&times);
        let stages = stats.stages.lock().unwrap();
        assert_eq!(stages[3].count, 1);
        assert!((stages[3].sum - 0.36).abs() < 1e-9);
        // 0.36 s falls in the 0.5 bucket and above, not in 0.3.
        assert_eq!(stages[3].counts[3], 0);
        assert_eq!(stages[3].counts[4], 1);
    }
}

/// One finished voice session, as `GET /api/v1/rooms/{room}/agent` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    pub room: String,
    pub shopper: String,
    /// Why the agent left.
    pub ended: String,
    /// Each answered turn: milliseconds from the end of the shopper's speech to each stage.
    pub turns: Vec<TurnRecord>,
    /// The conversation as the shopper heard it.
    pub transcript: Vec<TranscriptLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TurnRecord {
    pub stt_final_ms: Option<u64>,
    pub llm_first_token_ms: Option<u64>,
    pub tts_first_audio_ms: Option<u64>,
    pub first_audio_sent_ms: Option<u64>,
    /// The turn detector's last verdict; `false`: it held the turn open.
    pub turn_complete: Option<bool>,
}

impl From<&TurnTimes> for TurnRecord {
    fn from(times: &TurnTimes) -> TurnRecord {
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
        let [stt, llm, tts, sent] = times.after_speech();
        TurnRecord {
            stt_final_ms: ms(stt),
            llm_first_token_ms: ms(llm),
            tts_first_audio_ms: ms(tts),
            first_audio_sent_ms: ms(sent),
            turn_complete: times.turn_complete,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TranscriptLine {
    /// `shopper` or `agent`.
    pub speaker: &'static str,
    pub text: String,
    pub interrupted: bool,
}
