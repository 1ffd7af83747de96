//! Whether the shopper's words so far make a finished turn.
//!
//! The silence after speech ends a turn; a turn detector can hold it open when the words
//! say the sentence is not over ("where is my..."), up to the turn-taking's cap (2.5 s by
//! default). Optional: without one, silence alone decides.

/// A verdict on the words of a turn so far.
pub trait TurnDetector: Send + Sync {
    /// `false` when `words` (in the language `lang`) stop mid-sentence.
    fn complete(&self, words: &str, lang: &str) -> bool;
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
    fn complete(&self, words: &str, lang: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(!d.complete(words, lang), "{words}");
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
            assert!(d.complete(words, lang), "{words}");
        }
    }

    #[test]
    fn an_unknown_language_uses_english() {
        assert!(!TrailingWords.complete("my order and", "sw"));
    }
}
