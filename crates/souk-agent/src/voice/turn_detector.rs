//! Whether the shopper's turn so far is finished.
//!
//! The silence after speech ends a turn; a turn detector can hold it open when the turn
//! is not over ("where is my..."), up to the turn-taking's cap (2.5 s by default).
//! Optional: without one, silence alone decides. [`TrailingWords`] reads the words;
//! [`SmartTurn`] listens to the audio (intonation, a trailing "um"), in any language, and
//! is asked the moment speech ends, while the words are still being transcribed.

use std::sync::Arc;

use super::audio::RATE;
use super::log_mel;
use super::onnx::Model;

/// The turn as a detector sees it.
pub struct TurnSoFar<'a> {
    /// The final words (empty for a detector that listens).
    pub words: &'a str,
    pub lang: &'a str,
    /// The turn's 16 kHz audio up to now, at most [`TURN_AUDIO_SAMPLES`] of it (empty
    /// for a detector that reads words).
    pub audio: &'a [i16],
}

/// How much of a turn's audio a listening detector gets: its last 8 seconds.
pub const TURN_AUDIO_SAMPLES: usize = 8 * RATE as usize;

pub trait TurnDetector: Send + Sync {
    /// `true` for a detector that judges the sound of the turn, `false` (the default)
    /// for one that judges its transcribed words.
    fn listens(&self) -> bool {
        false
    }
    /// `false` when the turn is not over yet.
    fn complete(&self, turn: &TurnSoFar<'_>) -> bool;
}

/// Words a sentence does not end on, per language: conjunctions, articles, possessives,
/// prepositions and fillers.
const UNFINISHED: &[(&str, &[&str])] = &[
    (
        "en",
        &[
            "and", "but", "or", "because", "so", "the", "a", "an", "my", "your", "to", "of",
            "with", "for", "in", "on", "at", "um", "uh", "is", "are", "if",
        ],
    ),
    (
        "es",
        &[
            "y", "pero", "o", "porque", "el", "la", "los", "las", "un", "una", "mi", "mis", "de",
            "con", "para", "en", "que", "si",
        ],
    ),
    (
        "pt",
        &[
            "e", "mas", "ou", "porque", "o", "a", "os", "as", "um", "uma", "meu", "minha", "de",
            "com", "para", "em", "que", "se",
        ],
    ),
    (
        "id",
        &[
            "dan", "tapi", "atau", "karena", "yang", "di", "ke", "dari", "untuk", "dengan", "saya",
            "itu",
        ],
    ),
    (
        "ar",
        &["و", "لكن", "أو", "لأن", "في", "من", "على", "إلى", "عن", "مع"],
    ),
    ("zh", &["和", "但是", "因为", "所以", "的", "在", "跟"]),
];

/// Holds the turn open when it ends on a word no sentence ends on.
#[derive(Debug, Default, Clone, Copy)]
pub struct TrailingWords;

impl TurnDetector for TrailingWords {
    fn complete(&self, turn: &TurnSoFar<'_>) -> bool {
        let (words, lang) = (turn.words, turn.lang);
        let base = lang.split('-').next().unwrap_or(lang);
        let list = UNFINISHED
            .iter()
            .find(|(l, _)| *l == base)
            .or_else(|| UNFINISHED.first())
            .map(|(_, words)| *words)
            .unwrap_or_default();
        let text = words.trim().to_lowercase();
        if text.ends_with(['?', '.', '!', '؟', '。', '？', '！']) {
            return true;
        }
        let last = text
            .split(|c: char| c.is_whitespace() || c == ',' || c == '،')
            .rfind(|w| !w.is_empty())
            .unwrap_or("");
        // Chinese is written without spaces: look at how the text ends.
        if base == "zh" {
            return !list.iter().any(|w| text.ends_with(w));
        }
        !list.contains(&last)
    }
}

/// The smart-turn model (v3): a Whisper-encoder classifier of whether the last 8 s of a
/// turn sound finished, trained on 23 languages.
pub struct SmartTurn {
    model: Arc<Model>,
}

impl SmartTurn {
    pub fn new(model: Arc<Model>) -> SmartTurn {
        SmartTurn { model }
    }

    /// The probability that the turn is finished.
    pub fn probability(&self, audio: &[i16]) -> Result<f32, String> {
        use ort::value::Tensor;
        // The last 8 s, silence before a shorter turn, as the model was trained.
        let tail = &audio[audio.len().saturating_sub(TURN_AUDIO_SAMPLES)..];
        let mut samples = vec![0.0f32; TURN_AUDIO_SAMPLES - tail.len()];
        samples.extend(tail.iter().map(|&s| s as f32 / 32768.0));
        let frames = TURN_AUDIO_SAMPLES / 160;
        let features = log_mel::features(&samples, frames);
        let input = Tensor::from_array(([1usize, log_mel::N_MELS, frames], features))
            .map_err(|e| e.to_string())?;
        self.model
            .run(vec![("input_features", input.into_dyn())], |out| {
                let (_, p) = out["logits"].try_extract_tensor::<f32>()?;
                Ok(p.first().copied().unwrap_or(1.0))
            })
    }
}

impl TurnDetector for SmartTurn {
    fn listens(&self) -> bool {
        true
    }

    fn complete(&self, turn: &TurnSoFar<'_>) -> bool {
        match self.probability(turn.audio) {
            Ok(p) => p > 0.5,
            Err(e) => {
                // Silence decides, as without a detector.
                tracing::warn!("the smart-turn model failed: {e}");
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said<'a>(words: &'a str, lang: &'a str) -> TurnSoFar<'a> {
        TurnSoFar {
            words,
            lang,
            audio: &[],
        }
    }

    #[test]
    fn sentences_that_stop_on_a_linking_word_are_unfinished() {
        let d = TrailingWords;
        for (words, lang) in [
            ("where is my", "en"),
            ("I want the blue one and", "en"),
            ("¿dónde está mi", "es"),
            ("quero a", "pt-BR"),
            ("saya mau beli yang", "id"),
            ("أريد أن أسأل عن", "ar"),
            ("我想买那个和", "zh"),
        ] {
            assert!(!d.complete(&said(words, lang)), "{words}");
        }
        for (words, lang) in [
            ("where is my order", "en"),
            ("do you have it in blue?", "en"),
            ("¿dónde está mi pedido", "es"),
            ("quero a bolsa", "pt"),
            ("berapa harganya", "id"),
            ("أين طلبي", "ar"),
            ("我的订单在哪里", "zh"),
            ("", "en"),
        ] {
            assert!(d.complete(&said(words, lang)), "{words}");
        }
    }

    #[test]
    fn an_unknown_language_uses_english() {
        assert!(!TrailingWords.complete(&said("my order and", "sw")));
    }

    #[tokio::test]
    async fn smart_turn_hears_a_finished_question_and_two_unfinished_ones() {
        use crate::voice::tts::{EspeakTts, Tts};
        let model = Model::load(
            &crate::voice::onnx::test_file("libonnxruntime.so"),
            &crate::voice::onnx::test_file("smart-turn.onnx"),
        )
        .unwrap();
        let detector = SmartTurn::new(Arc::new(model));
        assert!(detector.listens());
        let tts = EspeakTts::check().expect("scripts/test installs libespeak-ng1");
        for (text, finished) in [
            (
                "Do you have these canvas sneakers in size thirty eight?",
                true,
            ),
            ("I would like to buy the", false),
            ("Where is my, um,", false),
        ] {
            let audio = tts.synthesize(text, "en").await.unwrap();
            let turn = TurnSoFar {
                words: "",
                lang: "en",
                audio: &audio,
            };
            let p = detector.probability(&audio).unwrap();
            assert_eq!(detector.complete(&turn), finished, "{text:?}: {p}");
        }
    }
}
