//! Speech detection: when the shopper starts and stops talking.
//!
//! The default detector is earshot (pure Rust, any language, 16 ms frames at 16 kHz).
//! Raw per-frame scores flicker, so onset needs a few voiced frames in a row and the end
//! a short run of unvoiced ones; the turn's end-of-speech silence (300 ms by default) is
//! the turn-taking's business, on top of this.

use std::time::Duration;

/// What the detector noticed, with how far into the audio it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    SpeechStarted { at: Duration },
    SpeechEnded { at: Duration },
}

pub trait Vad: Send {
    /// Feeds 16 kHz mono PCM of any length.
    fn push(&mut self, pcm: &[i16]) -> Vec<VadEvent>;
    /// Whether speech is going on now.
    fn speaking(&self) -> bool;
}

/// Samples earshot scores at once.
const WINDOW: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct VadConfig {
    /// Score at or above which a window is voiced.
    pub threshold: f32,
    /// Voiced windows in a row that start speech.
    pub onset_windows: u32,
    /// Unvoiced windows in a row that end it.
    pub offset_windows: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            threshold: 0.5,
            onset_windows: 3,  // 48 ms
            offset_windows: 4, // 64 ms
        }
    }
}

pub struct EarshotVad {
    detector: Box<earshot::Detector>,
    config: VadConfig,
    pending: Vec<i16>,
    samples: u64,
    speaking: bool,
    run: u32,
}

impl EarshotVad {
    pub fn new(config: VadConfig) -> EarshotVad {
        EarshotVad {
            detector: earshot::Detector::default_boxed(),
            config,
            pending: Vec::with_capacity(WINDOW),
            samples: 0,
            speaking: false,
            run: 0,
        }
    }
}

impl Vad for EarshotVad {
    fn push(&mut self, pcm: &[i16]) -> Vec<VadEvent> {
        let mut events = Vec::new();
        for &sample in pcm {
            self.pending.push(sample);
            if self.pending.len() < WINDOW {
                continue;
            }
            let voiced = self.detector.predict_i16(&self.pending) >= self.config.threshold;
            self.pending.clear();
            self.samples += WINDOW as u64;
            // A run of windows that disagree with the current state flips it.
            if voiced != self.speaking {
                self.run += 1;
            } else {
                self.run = 0;
            }
            let needed = if self.speaking {
                self.config.offset_windows
            } else {
                self.config.onset_windows
            };
            if self.run >= needed {
                self.speaking = voiced;
                self.run = 0;
                // The change began where the run began.
                let at_sample = self.samples - needed as u64 * WINDOW as u64;
                let at = Duration::from_micros(at_sample * 1_000_000 / super::audio::RATE as u64);
                events.push(if voiced {
                    VadEvent::SpeechStarted { at }
                } else {
                    VadEvent::SpeechEnded { at }
                });
            }
        }
        events
    }

    fn speaking(&self) -> bool {
        self.speaking
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::audio::RATE;
    use crate::voice::tts::{EspeakTts, Tts};

    fn silence(ms: u64) -> Vec<i16> {
        vec![0; (RATE as u64 * ms / 1000) as usize]
    }

    /// Deterministic white noise at about -20 dBov.
    fn noise(ms: u64) -> Vec<i16> {
        let mut x: u32 = 12345;
        (0..RATE as u64 * ms / 1000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((x >> 16) as i16) / 10
            })
            .collect()
    }

    #[tokio::test]
    async fn speech_between_silences_starts_and_ends_once_near_its_edges() {
        let speech = EspeakTts::check()
            .expect("scripts/test installs libespeak-ng1")
            .synthesize(
                "Do you have these canvas sneakers in size thirty eight?",
                "en",
            )
            .await
            .unwrap();
        let spoken = Duration::from_micros(speech.len() as u64 * 1_000_000 / RATE as u64);
        let mut audio = silence(1000);
        audio.extend(&speech);
        audio.extend(silence(1000));
        let mut vad = EarshotVad::new(VadConfig::default());
        // Fed in 20 ms frames, as they arrive from the network.
        let events: Vec<VadEvent> = audio.chunks(320).flat_map(|f| vad.push(f)).collect();
        let (first, last) = (events.first().copied(), events.last().copied());
        let Some(VadEvent::SpeechStarted { at: start }) = first else {
            panic!("{events:?}")
        };
        let Some(VadEvent::SpeechEnded { at: end }) = last else {
            panic!("{events:?}")
        };
        let ms = |d: Duration| d.as_millis() as i64;
        assert!(
            (ms(start) - 1000).abs() < 300,
            "speech started at {start:?}"
        );
        assert!(
            (ms(end) - 1000 - ms(spoken)).abs() < 400,
            "speech of {spoken:?} ended at {end:?}"
        );
        assert!(!vad.speaking());
    }

    #[test]
    fn silence_and_noise_are_not_speech() {
        let mut vad = EarshotVad::new(VadConfig::default());
        let mut audio = silence(1000);
        audio.extend(noise(2000));
        assert_eq!(audio.chunks(320).flat_map(|f| vad.push(f)).count(), 0);
    }
}
