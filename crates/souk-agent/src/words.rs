//! What counts as words when deciding whether the shopper is taking the turn.

/// Short acknowledgements a listener makes while the other side talks, in the languages
/// shops sell in: they say "go on", not "stop".
const BACKCHANNELS: &[&str] = &[
    // English
    "mhm", "mm", "mmm", "hmm", "uh-huh", "uh", "um", "ok", "okay", "yeah", "yes", "yep", "right",
    "sure", "ah", "oh", "i see", // Spanish, Portuguese
    "sí", "si", "vale", "claro", "ajá", "aha", "sim", "tá", "certo", "entendo",
    // Indonesian
    "ya", "iya", "oke", "oh gitu", "betul", // Arabic
    "نعم", "اه", "آه", "ايوه", "أيوه", "طيب", "تمام", "اها", // Chinese
    "嗯", "嗯嗯", "对", "对对", "好", "好的", "是", "是的", "哦",
];

/// The start of `text`, at most `max_chars` characters, marked when cut: enough of a bad
/// input to recognise it in an error message.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The words of `text`, lower-cased, split at anything not a letter or digit.
pub fn lowercase_words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The words of `text` that are not backchannels, lower-cased without punctuation.
pub fn substantive_words(text: &str) -> Vec<String> {
    let normalised = text.to_lowercase();
    let tokens: Vec<String> = normalised
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| c.is_ascii_punctuation() || "،。！？，؟…".contains(c)))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    // Two-word backchannels ("i see", "oh gitu") are checked as pairs first.
    let mut words = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if let Some(pair) = tokens
            .get(i + 1)
            .map(|next| format!("{} {next}", tokens[i]))
        {
            if BACKCHANNELS.contains(&pair.as_str()) {
                i += 2;
                continue;
            }
        }
        if !BACKCHANNELS.contains(&tokens[i].as_str()) {
            words.push(tokens[i].clone());
        }
        i += 1;
    }
    words
}

/// Splits streamed reply text into sentences that can be spoken as they complete; the
/// unfinished tail is returned for the next call.
pub fn complete_sentences(text: &str) -> (Vec<String>, String) {
    let mut sentences = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if ".!?;。！？؟\n".contains(c) {
            let end = i + c.len_utf8();
            // "3.5" is not the end of a sentence: a boundary needs space or the end after it.
            let next = text[end..].chars().next();
            if c == '.' && next.is_some_and(|n| !n.is_whitespace()) {
                continue;
            }
            if next.is_none() && c == '.' {
                // A trailing period may still be followed by digits ("3." then "5").
                break;
            }
            let sentence = text[start..end].trim();
            if !sentence.is_empty() {
                sentences.push(sentence.to_string());
            }
            start = end;
        }
    }
    (sentences, text[start..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backchannels_are_not_substantive_in_any_language() {
        for text in [
            "mhm",
            "Okay.",
            "yeah yeah",
            "i see",
            "sí, claro",
            "iya",
            "نعم",
            "嗯嗯",
            "oh gitu",
        ] {
            assert!(substantive_words(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn requests_are_substantive() {
        assert_eq!(substantive_words("ok wait, stop"), ["wait", "stop"]);
        assert_eq!(substantive_words("لا انتظر"), ["لا", "انتظر"]);
        assert_eq!(substantive_words("Espera, ¿cuánto cuesta?").len(), 3);
    }

    #[test]
    fn sentences_complete_at_their_end_marks_only() {
        let (done, rest) = complete_sentences("The price is 3.5 dollars. It ships in two");
        assert_eq!(done, ["The price is 3.5 dollars."]);
        assert_eq!(rest, " It ships in two");
        let (done, rest) = complete_sentences("好的。马上发货！还有");
        assert_eq!(done, ["好的。", "马上发货！"]);
        assert_eq!(rest, "还有");
        let (done, rest) = complete_sentences("It costs 3.");
        assert!(done.is_empty(), "a trailing period may be a decimal point");
        assert_eq!(rest, "It costs 3.");
    }
}
