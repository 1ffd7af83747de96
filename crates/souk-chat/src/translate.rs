//! Translation on request, behind a trait so any provider fits.
//!
//! The bundled provider speaks the OpenAI chat-completions API, which OpenAI, vLLM,
//! Ollama, llama.cpp's server and most hosted models offer.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

pub type TranslateFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

pub trait Translator: Send + Sync {
    /// `text` in the language named by the BCP 47 tag `locale`, or why not.
    fn translate<'a>(&'a self, text: &'a str, locale: &'a str) -> TranslateFuture<'a>;
}

/// Where an OpenAI-compatible endpoint is and how to call it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Base URL up to and including `/v1`, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    pub model: String,
}

pub struct OpenAiTranslator {
    client: reqwest::Client,
    config: OpenAiConfig,
}

impl OpenAiTranslator {
    pub fn new(config: OpenAiConfig) -> OpenAiTranslator {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a default HTTP client builds");
        OpenAiTranslator { client, config }
    }
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

impl Translator for OpenAiTranslator {
    fn translate<'a>(&'a self, text: &'a str, locale: &'a str) -> TranslateFuture<'a> {
        Box::pin(async move {
            let url = format!(
                "{}/chat/completions",
                self.config.base_url.trim_end_matches('/')
            );
            let request = serde_json::json!({
                "model": self.config.model,
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": format!(
                        "You translate chat messages between shoppers and sellers. Translate the user's message into the language with BCP 47 tag '{locale}'. Reply with the translation only, no quotes or notes."
                    )},
                    {"role": "user", "content": text},
                ],
            });
            let mut call = self.client.post(&url).json(&request);
            if let Some(key) = &self.config.api_key {
                call = call.bearer_auth(key);
            }
            let response = call
                .send()
                .await
                .map_err(|e| format!("calling the translator failed: {e}"))?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("the translator answered HTTP {status}"));
            }
            let completion: Completion = response
                .json()
                .await
                .map_err(|e| format!("the translator's answer is not a chat completion: {e}"))?;
            completion
                .choices
                .into_iter()
                .next()
                .and_then(|c| c.message.content)
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| "the translator returned no text".to_owned())
        })
    }
}

/// Checks a BCP 47-looking tag: `ar`, `pt-BR`, `zh-Hans`.
pub fn valid_locale(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let lang_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    lang_ok
        && parts.all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_tags() {
        for ok in ["ar", "pt-BR", "zh-Hans", "id"] {
            assert!(valid_locale(ok), "{ok}");
        }
        for bad in ["", "a", "english", "pt_BR", "ar-", "x-<script>"] {
            assert!(!valid_locale(bad), "{bad}");
        }
    }
}
