//! Keyword blocklists per locale.
//!
//! A message's language is not known when it is sent, so every list applies to every
//! message. Words in scripts that separate words with spaces match only as whole words
//! ("golpe" must not block "golpeado"); words in scripts without spaces (Chinese) match
//! anywhere.

use std::collections::BTreeMap;

/// Samples per locale: phrases that take a buyer off-platform or name a fraud. A
/// merchant replaces or extends them in the configuration.
pub const SAMPLE_BLOCKLIST: &[(&str, &[&str])] = &[
    (
        "en",
        &["western union", "pay outside the app", "fake receipt"],
    ),
    ("es", &["estafa", "pago por fuera", "recibo falso"]),
    ("pt", &["golpe", "pagamento por fora", "recibo falso"]),
    ("id", &["penipuan", "transfer di luar aplikasi"]),
    ("ar", &["احتيال", "ادفع خارج التطبيق"]),
    ("zh", &["诈骗", "私下交易"]),
];

#[derive(Debug, Clone, Default)]
pub struct Blocklist {
    /// (locale, lower-cased keyword)
    words: Vec<(String, String)>,
}

impl Blocklist {
    pub fn samples() -> Blocklist {
        Blocklist::from_lists(
            SAMPLE_BLOCKLIST
                .iter()
                .map(|(l, ws)| (l.to_string(), ws.iter().map(|w| w.to_string()).collect())),
        )
    }

    pub fn from_lists(lists: impl IntoIterator<Item = (String, Vec<String>)>) -> Blocklist {
        let words = lists
            .into_iter()
            .flat_map(|(locale, words)| {
                words
                    .into_iter()
                    .filter(|w| !w.trim().is_empty())
                    .map(move |w| (locale.clone(), w.trim().to_lowercase()))
            })
            .collect();
        Blocklist { words }
    }

    pub fn from_config(lists: &BTreeMap<String, Vec<String>>) -> Blocklist {
        Blocklist::from_lists(lists.clone())
    }

    /// The locale of the first list that matches `text`, if any.
    pub fn check(&self, text: &str) -> Option<&str> {
        let lower = text.to_lowercase();
        self.words
            .iter()
            .find(|(_, word)| contains_word(&lower, word))
            .map(|(locale, _)| locale.as_str())
    }
}

fn spaced_script(c: char) -> bool {
    c.is_alphanumeric() && !is_cjk(c)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF)
}

fn contains_word(haystack: &str, word: &str) -> bool {
    let needs_start = word.chars().next().is_some_and(spaced_script);
    let needs_end = word.chars().last().is_some_and(spaced_script);
    haystack.match_indices(word).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + word.len()..].chars().next();
        (!needs_start || !before.is_some_and(spaced_script))
            && (!needs_end || !after.is_some_and(spaced_script))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_in_spaced_scripts_anywhere_in_chinese() {
        let list = Blocklist::samples();
        assert_eq!(list.check("Isso é um GOLPE!"), Some("pt"));
        assert_eq!(list.check("ele foi golpeado"), None);
        assert_eq!(list.check("这是诈骗吗"), Some("zh"));
        assert_eq!(list.check("هذا احتيال واضح"), Some("ar"));
        assert_eq!(list.check("ada penipuan di sini"), Some("id"));
        assert_eq!(list.check("Send it by Western Union please"), Some("en"));
        assert_eq!(list.check("What sizes do you have?"), None);
    }
}
