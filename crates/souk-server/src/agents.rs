//! Building the AI agent from the configuration: the shops and their data, the model,
//! and the voice agents with their speech stages. `souk serve` and `souk agent` (a
//! worker) build it the same way.

use std::sync::Arc;

use souk_agent::chat_agent::ShopAgent;
use souk_agent::llm::{Llm, LlmTimeouts, OpenAiLlm};
use souk_agent::shop::{OrderLookup, SaleOrders, Shop};
use souk_agent::voice::onnx::Model;
use souk_agent::voice::room::{LoadStt, LoadTts, MintToken, RoomAgents, VoiceShop};
use souk_agent::voice::stt::{OpenAiStt, PocketSphinx, Stt};
use souk_agent::voice::tts::{EspeakTts, OpenAiTts, Tts};
use souk_agent::voice::turn_detector::{SmartTurn, TrailingWords};
use souk_agent::voice::vad;
use souk_commerce::Ledger;
use souk_proto::error::ErrorCode;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, OnnxModel, TurnDetectorChoice};

/// Each shop's data, loaded now so a bad file stops the start rather than the first
/// conversation, with the live sales' orders to look up besides.
pub fn load_shops(
    config: &AgentConfig,
    sale_orders: Arc<dyn SaleOrders>,
) -> anyhow::Result<Vec<ShopAgent>> {
    config
        .shops
        .iter()
        .map(|shop| {
            let mut data = match &shop.data {
                Some(path) => Shop::load(path, shop.orders.as_deref()),
                None => Shop::parse(souk_agent::shop::DEMO_SHOP),
            }
            .map_err(anyhow::Error::msg)?;
            data.sale_orders = Some(sale_orders.clone());
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

/// Live-sale orders from this server's ledger.
pub struct LedgerOrders(pub Arc<Ledger>);

impl SaleOrders for LedgerOrders {
    fn find<'a>(&'a self, order_id: &'a str) -> OrderLookup<'a> {
        Box::pin(async move {
            match self.0.order(order_id).await {
                Ok(order) => Ok(Some(order.into())),
                Err(e) if e.code == ErrorCode::OrderNotFound => Ok(None),
                Err(e) => Err(e.message),
            }
        })
    }
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
) -> anyhow::Result<Arc<RoomAgents>> {
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
    match &config.turn_detector {
        TurnDetectorChoice::Silence => {}
        TurnDetectorChoice::TrailingWords => agents.set_turn_detector(Arc::new(TrailingWords)),
        TurnDetectorChoice::SmartTurn(files) => {
            agents.set_turn_detector(Arc::new(SmartTurn::new(load_model(files)?)))
        }
    }
    if let Some(files) = &config.silero {
        agents.set_vad(vad::silero(load_model(files)?));
    }
    Ok(agents)
}

/// Loads a model now, so a missing file stops the start rather than the first call.
fn load_model(files: &OnnxModel) -> anyhow::Result<Arc<Model>> {
    Model::load(&files.runtime, &files.model)
        .map(Arc::new)
        .map_err(anyhow::Error::msg)
}
