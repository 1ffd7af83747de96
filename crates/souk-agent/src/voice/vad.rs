//! Speech detection: when the shopper starts and stops talking.
//!
//! The default detector is earshot (pure Rust, any language, 16 ms windows at 16 kHz);
//! Silero (a small neural network on ONNX Runtime, 32 ms windows) is the optional one
//! that tells speech from noise better. Raw per-window verdicts flicker, so onset needs a
//! short run of voiced windows and the end a short run of unvoiced ones; the turn's
//! end-of-speech silence (300 ms by default) is the turn-taking's business, on top of this.

use std::sync::Arc;
use std::time::Duration;

use super::audio::RATE;
use super::onnx::Model;

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

/// Makes a detector for each new session (each keeps its own state).
pub type NewVad = Arc<dyn Fn() -> Box<dyn Vad> + Send + Sync>;

/// The default detector: earshot.
pub fn earshot() -> NewVad {
    Arc::new(|| Box::new(EarshotVad::new(VadConfig::default())))
}

/// Silero, sharing one loaded model.
pub fn silero(model: Arc<Model>) -> NewVad {
    Arc::new(move || Box::new(SileroVad::new(model.clone(), VadConfig::default())))
}

#[derive(Debug, Clone, Copy)]
pub struct VadConfig {
    /// Score at or above which a window is voiced.
    pub threshold: f32,
    /// Voiced audio in a row that starts speech.
    pub onset: Duration,
    /// Unvoiced audio in a row that ends it.
    pub offset: Duration,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            threshold: 0.5,
            onset: Duration::from_millis(48),
            offset: Duration::from_millis(64),
        }
    }
}

/// Cuts audio into a detector's windows and turns their scores into start and end
/// events.
struct Windows {
    config: VadConfig,
    size: usize,
    pending: Vec<i16>,
    samples: u64,
    speaking: bool,
    run: u32,
}

impl Windows {
    fn new(config: VadConfig, size: usize) -> Windows {
        Windows {
            config,
            size,
            pending: Vec::with_capacity(size),
            samples: 0,
            speaking: false,
            run: 0,
        }
    }

    /// Windows of at least `span`, in whole windows.
    fn count(&self, span: Duration) -> u32 {
        let window_us = self.size as u64 * 1_000_000 / RATE as u64;
        (span.as_micros() as u64).div_ceil(window_us).max(1) as u32
    }

    fn push(&mut self, pcm: &[i16], mut score: impl FnMut(&[i16]) -> f32) -> Vec<VadEvent> {
        let mut events = Vec::new();
        for &sample in pcm {
            self.pending.push(sample);
            if self.pending.len() < self.size {
                continue;
            }
            let voiced = score(&self.pending) >= self.config.threshold;
            self.pending.clear();
            self.samples += self.size as u64;
            // A run of windows that disagree with the current state flips it.
            if voiced != self.speaking {
                self.run += 1;
            } else {
                self.run = 0;
            }
            let needed = self.count(if self.speaking {
                self.config.offset
            } else {
                self.config.onset
            });
            if self.run >= needed {
                self.speaking = voiced;
                self.run = 0;
                // The change began where the run began.
                let at_sample = self.samples - needed as u64 * self.size as u64;
                let at = Duration::from_micros(at_sample * 1_000_000 / RATE as u64);
                events.push(if voiced {
                    VadEvent::SpeechStarted { at }
                } else {
                    VadEvent::SpeechEnded { at }
                });
            }
        }
        events
    }
}

pub struct EarshotVad {
    detector: Box<earshot::Detector>,
    windows: Windows,
}

impl EarshotVad {
    pub fn new(config: VadConfig) -> EarshotVad {
        EarshotVad {
            detector: earshot::Detector::default_boxed(),
            windows: Windows::new(config, 256),
        }
    }
}

impl Vad for EarshotVad {
    fn push(&mut self, pcm: &[i16]) -> Vec<VadEvent> {
        let detector = &mut self.detector;
        self.windows
            .push(pcm, |window| detector.predict_i16(window))
    }

    fn speaking(&self) -> bool {
        self.windows.speaking
    }
}

/// Silero VAD (v5 and later).
pub struct SileroVad {
    net: SileroNet,
    windows: Windows,
}

impl SileroVad {
    pub fn new(model: Arc<Model>, config: VadConfig) -> SileroVad {
        SileroVad {
            net: SileroNet {
                model,
                state: vec![0.0; SILERO_STATE],
                context: vec![0.0; SILERO_CONTEXT],
                failed: false,
            },
            windows: Windows::new(config, SILERO_WINDOW),
        }
    }
}

impl Vad for SileroVad {
    fn push(&mut self, pcm: &[i16]) -> Vec<VadEvent> {
        let net = &mut self.net;
        self.windows.push(pcm, |window| net.score(window))
    }

    fn speaking(&self) -> bool {
        self.windows.speaking
    }
}

const SILERO_WINDOW: usize = 512;
const SILERO_CONTEXT: usize = 64;
const SILERO_STATE: usize = 2 * 128;

/// The network's side: 512 new samples a window, seen with the 64 before them, and a
/// recurrent state carried from window to window.
struct SileroNet {
    model: Arc<Model>,
    state: Vec<f32>,
    context: Vec<f32>,
    failed: bool,
}

impl SileroNet {
    /// The probability that `window` is speech; 0 once the model has failed, which is
    /// said once.
    fn score(&mut self, window: &[i16]) -> f32 {
        match self.run(window) {
            Ok(p) => p,
            Err(e) => {
                if !self.failed {
                    tracing::error!("Silero speech detection failed: {e}");
                    self.failed = true;
                }
                0.0
            }
        }
    }

    fn run(&mut self, window: &[i16]) -> Result<f32, String> {
        use ort::value::Tensor;
        let mut input = std::mem::take(&mut self.context);
        input.extend(window.iter().map(|&s| s as f32 / 32768.0));
        self.context = input[input.len() - SILERO_CONTEXT..].to_vec();
        let err = |e: ort::Error| e.to_string();
        let inputs = vec![
            (
                "input",
                Tensor::from_array(([1usize, input.len()], input))
                    .map_err(err)?
                    .into_dyn(),
            ),
            (
                "state",
                Tensor::from_array(([2usize, 1, 128], self.state.clone()))
                    .map_err(err)?
                    .into_dyn(),
            ),
            (
                "sr",
                Tensor::from_array(((), vec![RATE as i64]))
                    .map_err(err)?
                    .into_dyn(),
            ),
        ];
        let (probability, state) = self.model.run(inputs, |out| {
            let (_, p) = out["output"].try_extract_tensor::<f32>()?;
            let (_, state) = out["stateN"].try_extract_tensor::<f32>()?;
            Ok((p.first().copied().unwrap_or(0.0), state.to_vec()))
        })?;
        if state.len() == SILERO_STATE {
            self.state = state;
        }
        Ok(probability)
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

    fn silero() -> Box<dyn Vad> {
        let model = Model::load(
            &crate::voice::onnx::test_file("libonnxruntime.so"),
            &crate::voice::onnx::test_file("silero_vad.onnx"),
        )
        .unwrap();
        Box::new(SileroVad::new(Arc::new(model), VadConfig::default()))
    }

    fn earshot() -> Box<dyn Vad> {
        Box::new(EarshotVad::new(VadConfig::default()))
    }

    /// One question with a second of silence on each side, as it arrives from the network
    /// (20 ms frames): each detector hears it start and end once, near its edges.
    async fn hears_one_question(mut vad: Box<dyn Vad>) {
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

    fn hears_nothing_in_silence_and_noise(mut vad: Box<dyn Vad>) {
        let mut audio = silence(1000);
        audio.extend(noise(2000));
        let events: Vec<VadEvent> = audio.chunks(320).flat_map(|f| vad.push(f)).collect();
        assert_eq!(events, []);
    }

    #[tokio::test]
    async fn earshot_hears_speech_between_silences_once_near_its_edges() {
        hears_one_question(earshot()).await;
    }

    #[tokio::test]
    async fn silero_hears_speech_between_silences_once_near_its_edges() {
        hears_one_question(silero()).await;
    }

    #[test]
    fn silence_and_noise_are_not_speech() {
        hears_nothing_in_silence_and_noise(earshot());
        hears_nothing_in_silence_and_noise(silero());
    }

    #[test]
    fn missing_files_are_named() {
        let runtime = crate::voice::onnx::test_file("libonnxruntime.so");
        let err = Model::load(&runtime, std::path::Path::new("/nonexistent/silero.onnx"))
            .err()
            .unwrap();
        assert!(err.contains("/nonexistent/silero.onnx"), "{err}");
    }
}
