//! Which language the shopper writes in, and the agent's fixed notices in it.
//!
//! The model is told the language to answer in rather than left to guess, and the
//! notices the shopper must see whatever the model does (that this is an AI, that a
//! person is coming, that the assistant is unavailable) do not depend on the model at all.

/// Guesses the BCP 47 language of `text`: by script where the script decides it, by
/// common short words for languages written in Latin letters. `None` when unsure.
pub fn detect(text: &str) -> Option<&'static str> {
    let mut letters = 0usize;
    let mut by_script = [0usize; 7];
    const SCRIPT_LANGS: [&str; 7] = ["ar", "zh", "ja", "ko", "th", "ru", "hi"];
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        letters += 1;
        let script = match c as u32 {
            0x0600..=0x06FF | 0x0750..=0x077F | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => Some(0),
            0x3040..=0x30FF => Some(2),
            0x3400..=0x9FFF => Some(1),
            0xAC00..=0xD7AF | 0x1100..=0x11FF => Some(3),
            0x0E00..=0x0E7F => Some(4),
            0x0400..=0x04FF => Some(5),
            0x0900..=0x097F => Some(6),
            _ => None,
        };
        if let Some(i) = script {
            by_script[i] += 1;
        }
    }
    if letters == 0 {
        return None;
    }
    // Japanese mixes kana with Chinese characters: any kana decides it.
    if by_script[2] > 0 {
        return Some("ja");
    }
    let (best, count) = by_script
        .iter()
        .enumerate()
        .max_by_key(|(_, n)| **n)
        .expect("seven scripts");
    if *count * 2 >= letters {
        return Some(SCRIPT_LANGS[best]);
    }
    latin_language(text)
}

/// Short words frequent in one language and rare in the others.
const LATIN_MARKERS: &[(&str, &[&str])] = &[
    (
        "en",
        &[
            "the", "is", "are", "my", "you", "what", "where", "how", "do", "does", "have", "this",
            "and", "can", "i", "it", "when", "hello", "hi",
        ],
    ),
    (
        "es",
        &[
            "el", "la", "los", "las", "es", "está", "mi", "tienen", "qué", "dónde", "cuándo",
            "hola", "pedido", "por", "gracias", "y", "tiene",
        ],
    ),
    (
        "pt",
        &[
            "o", "os", "as", "é", "está", "meu", "minha", "vocês", "têm", "onde", "quando", "olá",
            "oi", "pedido", "obrigado", "obrigada", "não", "você",
        ],
    ),
    (
        "id",
        &[
            "apa", "ini", "itu", "saya", "ada", "tidak", "yang", "di", "dan", "berapa", "kapan",
            "mana", "pesanan", "halo", "terima", "kasih", "bisa", "sudah",
        ],
    ),
    (
        "de",
        &[
            "der",
            "die",
            "das",
            "ist",
            "ich",
            "meine",
            "haben",
            "wo",
            "wann",
            "hallo",
            "bestellung",
            "und",
            "nicht",
            "sie",
        ],
    ),
    (
        "fr",
        &[
            "le", "les", "est", "je", "mon", "ma", "vous", "avez", "où", "quand", "bonjour",
            "commande", "et", "pas",
        ],
    ),
];

fn latin_language(text: &str) -> Option<&'static str> {
    let words = crate::words::lowercase_words(text);
    let mut scores: Vec<(usize, &'static str)> = LATIN_MARKERS
        .iter()
        .map(|(lang, markers)| {
            (
                words
                    .iter()
                    .filter(|w| markers.contains(&w.as_str()))
                    .count(),
                *lang,
            )
        })
        .collect();
    scores.sort_by_key(|s| std::cmp::Reverse(s.0));
    match scores.as_slice() {
        [(best, lang), (second, _), ..] if *best > 0 && best > second => Some(lang),
        _ => None,
    }
}

/// The English name of a language tag, for telling the model what to write in.
pub fn name(tag: &str) -> &str {
    match tag.split('-').next().unwrap_or(tag) {
        "ar" => "Arabic",
        "de" => "German",
        "en" => "English",
        "es" => "Spanish",
        "fr" => "French",
        "hi" => "Hindi",
        "id" => "Indonesian",
        "ja" => "Japanese",
        "ko" => "Korean",
        "pt" => "Portuguese",
        "ru" => "Russian",
        "th" => "Thai",
        "zh" => "Chinese",
        _ => tag,
    }
}

/// What the agent says on its own, never through the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// At the start: the shopper is talking to an AI, and can ask for a person.
    Disclosure,
    /// A person has been asked to take over.
    Handoff,
    /// The model could not answer.
    Unavailable,
}

impl Notice {
    /// The notice in `lang`, or in English where there is no translation.
    pub fn text(self, lang: &str) -> &'static str {
        use Notice::*;
        match (self, lang.split('-').next().unwrap_or(lang)) {
            (Disclosure, "ar") => "مرحبًا، أنا المساعد الآلي للمتجر (ذكاء اصطناعي). اسألني عن المنتجات أو الطلبات، أو اطلب التحدث إلى موظف في أي وقت.",
            (Disclosure, "es") => "Hola, soy el asistente de IA de la tienda. Pregúntame por productos o pedidos, o pide hablar con una persona cuando quieras.",
            (Disclosure, "pt") => "Olá, sou o assistente de IA da loja. Pergunte sobre produtos ou pedidos, ou peça para falar com uma pessoa quando quiser.",
            (Disclosure, "id") => "Halo, saya asisten AI toko ini. Tanyakan produk atau pesanan, atau minta bicara dengan staf kapan saja.",
            (Disclosure, "zh") => "您好，我是本店的AI助手。可以问我商品或订单的问题，也可以随时要求转人工。",
            (Disclosure, _) => "Hi, I'm the shop's AI assistant. Ask me about products or orders, or ask for a person at any time.",
            (Handoff, "ar") => "سأحوّلك إلى أحد موظفينا، وسيرد عليك قريبًا.",
            (Handoff, "es") => "Te paso con una persona del equipo; te responderá pronto.",
            (Handoff, "pt") => "Vou passar você para uma pessoa da equipe; ela responderá em breve.",
            (Handoff, "id") => "Saya sambungkan ke staf kami; mereka akan segera membalas.",
            (Handoff, "zh") => "正在为您转接人工客服，请稍候。",
            (Handoff, _) => "I'm passing you to a member of our team; they will reply soon.",
            (Unavailable, "ar") => "عذرًا، المساعد الآلي غير متاح الآن. سيرد عليك أحد موظفينا.",
            (Unavailable, "es") => "Lo siento, el asistente no está disponible ahora. Una persona del equipo te responderá.",
            (Unavailable, "pt") => "Desculpe, o assistente não está disponível agora. Uma pessoa da equipe responderá.",
            (Unavailable, "id") => "Maaf, asisten sedang tidak tersedia. Staf kami akan membalas.",
            (Unavailable, "zh") => "抱歉，AI助手暂时不可用，工作人员会尽快回复您。",
            (Unavailable, _) => "Sorry, the assistant is unavailable right now. A member of our team will reply.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_script() {
        assert_eq!(detect("هل المقاس 38 متوفر؟"), Some("ar"));
        assert_eq!(detect("这双鞋有38码吗"), Some("zh"));
        assert_eq!(detect("この靴はありますか"), Some("ja"));
        assert_eq!(detect("Где мой заказ?"), Some("ru"));
    }

    #[test]
    fn detects_latin_languages_by_their_small_words() {
        assert_eq!(detect("Where is my order A1001?"), Some("en"));
        assert_eq!(detect("¿Dónde está mi pedido?"), Some("es"));
        assert_eq!(detect("Onde está o meu pedido?"), Some("pt"));
        assert_eq!(detect("Apakah sepatu ini ada ukuran 38?"), Some("id"));
        assert_eq!(detect("Wo ist meine Bestellung?"), Some("de"));
    }

    #[test]
    fn unsure_is_none() {
        assert_eq!(detect("A1001"), None);
        assert_eq!(detect("👍"), None);
        assert_eq!(detect(""), None);
    }

    #[test]
    fn notices_fall_back_to_english() {
        assert!(Notice::Disclosure.text("ar").contains("ذكاء اصطناعي"));
        assert!(Notice::Disclosure.text("pt-BR").starts_with("Olá"));
        assert!(Notice::Handoff.text("sw").starts_with("I'm passing"));
    }
}
