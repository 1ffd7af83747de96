//! Building the AI agent from the configuration: the shops and their data, the model,
//! and the voice agents with their speech stages. `souk serve` and `souk agent` (a
//! worker) build it the same way.

use std::sync::Arc;

use souk_agent::chat_agent::ShopAgent;
use souk_agent::llm::{Llm, LlmTimeouts, OpenAiLlm};
use souk_agent::shop::Shop;
use souk_agent::voice::room::{LoadStt, LoadTts, MintToken, RoomAgents, VoiceShop};
use souk_agent::voice::stt::{OpenAiStt, PocketSphinx, Stt};
use souk_agent::voice::tts::{EspeakTts, OpenAiTts, Tts};
use souk_agent::voice::turn_detector::TrailingWords;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;

/// Each shop's data, loaded now so a bad file stops the start rather than the first
/// conversation.
pub fn load_shops(config: &AgentConfig) -> anyhow::Result<Vec<ShopAgent>> {
    config
        .shops
        .iter()
        .map(|shop| {
            let data = match &shop.data {
                Some(path) => Shop::load(path),
                None => Shop::parse(souk_agent::shop::DEMO_SHOP),
            }
            .map_err(anyhow::Error::msg)?;
            Ok(ShopAgent {
                id: shop.id.clone(),
                name: shop.name.clone(),
                shop: Arc::new(data),
                pinned_language: shop.language.clone(),
                answer: shop.answer,
            })
        })
        .collect()
}

/// The configured model, if any.
pub fn model(config: &AgentConfig) -> Option<Arc<dyn Llm>> {
    config.llm.clone().map(|endpoint| {
        let timeouts = LlmTimeouts {
            first_byte: config.llm_timeout,
            idle: config.llm_timeout,
        };
        Arc::new(OpenAiLlm::new(endpoint, timeouts)) as Arc<dyn Llm>
    })
}

/// The voice agents, with speech stages that load when first needed.
pub fn room_agents(
    config: &AgentConfig,
    shops: &[ShopAgent],
    llm: Option<Arc<dyn Llm>>,
    mint: MintToken,
    cancel: CancellationToken,
) -> Arc<RoomAgents> {
    let voice_shops = shops
        .iter()
        .map(|s| {
            let shop = VoiceShop {
                name: s.name.clone(),
                shop: s.shop.clone(),
                pinned_language: s.pinned_language.clone(),
            };
            (s.id.clone(), shop)
        })
        .collect();
    let load_stt: LoadStt = match config.stt.clone() {
        Some(endpoint) => {
            Box::new(move || Ok(Arc::new(OpenAiStt::new(endpoint.clone())) as Arc<dyn Stt>))
        }
        None => Box::new(|| {
            PocketSphinx::load()
                .map(|s| Arc::new(s) as Arc<dyn Stt>)
                .map_err(|e| e.message)
        }),
    };
    let load_tts: LoadTts = match config.tts.clone() {
        Some(endpoint) => {
            let voices = config.tts_voices.clone();
            Box::new(move || {
                Ok(Arc::new(OpenAiTts::new(endpoint.clone(), voices.clone())) as Arc<dyn Tts>)
            })
        }
        None => Box::new(|| {
            EspeakTts::check()
                .map(|t| Arc::new(t) as Arc<dyn Tts>)
                .map_err(|e| e.message)
        }),
    };
    let agents = Arc::new(RoomAgents::new(
        mint,
        llm,
        load_stt,
        load_tts,
        voice_shops,
        cancel,
    ));
    if config.trailing_words {
        agents.set_turn_detector(Arc::new(TrailingWords));
    }
    agents
}
