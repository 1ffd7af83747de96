//! Server configuration: command-line flags over a TOML file over defaults.
//!
//! Without `--dev` a configuration file with at least one API key is required: a server
//! that silently accepted tokens signed with a published secret would be open to anyone.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use souk_sfu::BandwidthEstimation;

use crate::cli::ServeArgs;

/// The development API key; published, so only for `--dev`.
pub const DEV_API_KEY: &str = "devkey";
/// The development API secret; published, so only for `--dev`.
pub const DEV_API_SECRET: &str = "souk-dev-secret-0123456789abcdef";
/// Shortest API secret accepted, so HS256 keys are not guessable.
pub const MIN_SECRET_LEN: usize = 32;

pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7880);
pub const DEFAULT_MEDIA_PORT: u16 = 7882;
/// More media engines than this would only add threads that wait for a core.
const MAX_MEDIA_THREADS: usize = 64;
pub const DEFAULT_RESUME_WINDOW: Duration = Duration::from_secs(15);
/// A browser sends its first ICE check as soon as the connection is up, and retries for
/// seconds on a lossy path; ten seconds is ample for it and short for a squatter.
pub const DEFAULT_ICE_TCP_CHECK_WITHIN: Duration = Duration::from_secs(10);

/// API keys and their secrets.
#[derive(Debug, Clone)]
pub struct Keys(BTreeMap<String, String>);

impl Keys {
    pub fn secret(&self, api_key: &str) -> Option<&str> {
        self.0.get(api_key).map(String::as_str)
    }

    /// The key to sign with: the named one, or the only one.
    pub fn pick(&self, name: Option<&str>) -> anyhow::Result<(&str, &str)> {
        match name {
            Some(name) => self
                .0
                .get_key_value(name)
                .map(|(k, s)| (k.as_str(), s.as_str()))
                .with_context(|| format!("no API key '{name}' in the configuration")),
            None if self.0.len() == 1 => {
                let (k, s) = self.0.iter().next().expect("one key");
                Ok((k, s))
            }
            None => bail!("the configuration has several API keys; choose one with --api-key"),
        }
    }
}

pub fn dev_keys() -> Keys {
    Keys(BTreeMap::from([(
        DEV_API_KEY.to_owned(),
        DEV_API_SECRET.to_owned(),
    )]))
}

/// The configuration file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<SocketAddr>,
    pub media_port: Option<u16>,
    /// Media engines, on consecutive ports from `media_port`.
    pub media_threads: Option<usize>,
    pub public_ip: Option<IpAddr>,
    /// Seconds a dropped participant stays resumable.
    pub resume_window_s: Option<u64>,
    /// Seconds an ICE-TCP connection may stay open without passing an ICE check.
    pub ice_tcp_check_within_s: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// API key -> secret.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Origins allowed to call the API from a browser; empty allows none.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (e.g. `["127.0.0.1"]` behind
    /// a proxy on the same host); without it every client would share the proxy's address.
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
    #[serde(default)]
    pub webhooks: Option<WebhookFileConfig>,
    /// Where the embedded database lives (default `./souk-data`).
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub store: StoreFileConfig,
    #[serde(default)]
    pub chat: ChatFileConfig,
    #[serde(default)]
    pub agent: AgentFileConfig,
}

/// The AI assistant: its model and the shops it answers for.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFileConfig {
    /// An OpenAI-compatible chat-completions endpoint with tools. Without it the assistant
    /// does not start, and says so where it was asked for.
    pub llm: Option<souk_chat::translate::OpenAiConfig>,
    /// Whether the model accepts images (photos shoppers send).
    #[serde(default)]
    pub vision: bool,
    /// Seconds to wait for the model's first and each further piece of an answer.
    pub llm_timeout_s: Option<u64>,
    /// An OpenAI-compatible transcription server; default: pocketsphinx (English) on
    /// this machine.
    pub stt: Option<souk_chat::translate::OpenAiConfig>,
    /// An OpenAI-compatible speech server; default: espeak-ng on this machine.
    pub tts: Option<souk_chat::translate::OpenAiConfig>,
    /// The speech server's voice per language (`default` for the rest).
    #[serde(default)]
    pub tts_voices: BTreeMap<String, String>,
    /// `trailing_words` holds a spoken turn open while it ends on a word no sentence ends
    /// on ("where is my..."); `smart_turn` while it sounds unfinished (a model, needs
    /// `onnxruntime` and `smart_turn_model`); default: silence alone ends a turn.
    pub turn_detector: Option<String>,
    /// Speech detection: `earshot` (default) or `silero` (a model, needs `onnxruntime`
    /// and `silero_model`).
    pub vad: Option<String>,
    /// ONNX Runtime's shared library (`libonnxruntime.so`), for the models.
    pub onnxruntime: Option<PathBuf>,
    /// The Silero VAD model (`silero_vad.onnx`, v5 or later).
    pub silero_model: Option<PathBuf>,
    /// The smart-turn v3 model (`smart-turn-v3.*.onnx`).
    pub smart_turn_model: Option<PathBuf>,
    #[serde(default)]
    pub shops: Vec<AgentShopFileConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentShopFileConfig {
    /// The shop id; its inbox is `shop:<id>`.
    pub id: String,
    /// The shop's name, as the assistant introduces it (default: the id).
    pub name: Option<String>,
    /// The catalogue and orders as JSON, or the catalogue alone as CSV.
    pub data: PathBuf,
    /// Orders as CSV, one order line a row.
    pub orders: Option<PathBuf>,
    /// Answer in this language whatever the shopper writes (BCP 47).
    pub language: Option<String>,
    /// `always`, `staff_offline` (default) or `on_request`.
    pub answer: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFileConfig {
    /// `postgres://...` to use PostgreSQL; default: SQLite in the data directory.
    pub url: Option<String>,
    /// `normal` (survives a crash) or `full` (also survives power loss; slower).
    pub sqlite_sync: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatFileConfig {
    /// Seconds after sending that a message can be edited or recalled (default 120).
    pub edit_window_s: Option<u64>,
    /// Keyword lists per locale; replaces the built-in samples when given.
    pub blocklist: Option<BTreeMap<String, Vec<String>>>,
    /// Where to POST offline notifications, so the merchant's app can send a push.
    #[serde(default)]
    pub push_urls: Vec<String>,
    /// Whose secret signs them (default: the only key).
    pub push_api_key: Option<String>,
    /// An OpenAI-compatible endpoint for translation on request.
    pub translator: Option<souk_chat::translate::OpenAiConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFileConfig {
    pub urls: Vec<String>,
    /// Whose secret signs the deliveries (default: the only key).
    pub api_key: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration file {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("invalid configuration in {}", path.display()))
    }

    pub fn keys(&self) -> anyhow::Result<Keys> {
        if self.keys.is_empty() {
            bail!("the configuration has no [keys]; add `my-key = \"<secret of {MIN_SECRET_LEN}+ characters>\"`");
        }
        for (key, secret) in &self.keys {
            if secret.len() < MIN_SECRET_LEN {
                bail!("the secret of API key '{key}' is shorter than {MIN_SECRET_LEN} characters");
            }
        }
        Ok(Keys(self.keys.clone()))
    }
}

/// Where webhooks go and who signs them.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    pub api_key: String,
    pub secret: String,
}

/// Everything `souk serve` runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub dev: bool,
    pub bind: SocketAddr,
    pub media_port: u16,
    /// Media engines sharing the rooms (each a core, a task, sockets on its own port).
    pub media_threads: usize,
    pub public_ip: Option<IpAddr>,
    pub resume_window: Duration,
    /// How long an ICE-TCP connection may stay open without passing an ICE check.
    pub ice_tcp_check_within: Duration,
    pub resilience: bool,
    pub bandwidth: BandwidthEstimation,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub keys: Keys,
    /// `None` allows any origin (development only).
    pub cors_origins: Option<Vec<String>>,
    pub trusted_proxies: Vec<IpAddr>,
    pub webhooks: Option<WebhookConfig>,
    pub data_dir: PathBuf,
    /// A database URL; `None` uses SQLite in `data_dir`.
    pub db_url: Option<String>,
    pub sqlite_sync: souk_store::SqliteSync,
    pub chat: ChatConfig,
    pub agent: AgentConfig,
}

/// How the AI assistant runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub llm: Option<souk_chat::translate::OpenAiConfig>,
    pub stt: Option<souk_chat::translate::OpenAiConfig>,
    pub tts: Option<souk_chat::translate::OpenAiConfig>,
    pub tts_voices: BTreeMap<String, String>,
    pub turn_detector: TurnDetectorChoice,
    /// The Silero model, with ONNX Runtime; `None`: earshot.
    pub silero: Option<OnnxModel>,
    pub vision: bool,
    pub llm_timeout: Duration,
    pub shops: Vec<AgentShopConfig>,
}

#[derive(Debug, Clone)]
pub struct AgentShopConfig {
    pub id: String,
    pub name: String,
    /// The catalogue and orders; `None` is the bundled demo shop (`--dev` only).
    pub data: Option<PathBuf>,
    pub orders: Option<PathBuf>,
    pub language: Option<String>,
    pub answer: souk_agent::chat_agent::AnswerWhen,
}

impl AgentConfig {
    pub fn from_file(file: &AgentFileConfig, dev: bool) -> anyhow::Result<AgentConfig> {
        use souk_agent::chat_agent::AnswerWhen;
        for (what, endpoint) in [
            ("agent.llm", &file.llm),
            ("agent.stt", &file.stt),
            ("agent.tts", &file.tts),
        ] {
            if let Some(endpoint) = endpoint {
                check_urls(what, std::slice::from_ref(&endpoint.base_url))?;
            }
        }
        let mut shops = Vec::new();
        for shop in &file.shops {
            souk_proto::token::validate_name("agent shop id", &shop.id, 64)
                .map_err(|e| anyhow::anyhow!(e))?;
            if let Some(lang) = &shop.language {
                if !souk_chat::translate::valid_locale(lang) {
                    bail!("agent shop '{}': language '{lang}' is not a BCP 47 tag like 'ar' or 'pt-BR'", shop.id);
                }
            }
            let answer = match shop.answer.as_deref() {
                None | Some("staff_offline") => AnswerWhen::StaffOffline,
                Some("always") => AnswerWhen::Always,
                Some("on_request") => AnswerWhen::OnRequest,
                Some(other) => bail!(
                    "agent shop '{}': answer is 'always', 'staff_offline' or 'on_request', not '{other}'",
                    shop.id
                ),
            };
            shops.push(AgentShopConfig {
                id: shop.id.clone(),
                name: shop.name.clone().unwrap_or_else(|| shop.id.clone()),
                data: Some(shop.data.clone()),
                orders: shop.orders.clone(),
                language: shop.language.clone(),
                answer,
            });
        }
        // The demo pages talk to shop "demo", which development gets out of the box.
        if dev && shops.is_empty() {
            shops.push(AgentShopConfig {
                id: "demo".into(),
                name: "Souk Demo Shop".into(),
                data: None,
                orders: None,
                language: None,
                answer: AnswerWhen::StaffOffline,
            });
        }
        Ok(AgentConfig {
            llm: file.llm.clone(),
            stt: file.stt.clone(),
            tts: file.tts.clone(),
            tts_voices: file.tts_voices.clone(),
            turn_detector: match file.turn_detector.as_deref() {
                None | Some("none") => TurnDetectorChoice::Silence,
                Some("trailing_words") => TurnDetectorChoice::TrailingWords,
                Some("smart_turn") => TurnDetectorChoice::SmartTurn(onnx_model(
                    file,
                    "turn_detector = \"smart_turn\"",
                    "smart_turn_model",
                    &file.smart_turn_model,
                )?),
                Some(other) => bail!(
                    "agent.turn_detector is 'trailing_words', 'smart_turn' or 'none', not '{other}'"
                ),
            },
            silero: match file.vad.as_deref() {
                None | Some("earshot") => None,
                Some("silero") => Some(onnx_model(
                    file,
                    "vad = \"silero\"",
                    "silero_model",
                    &file.silero_model,
                )?),
                Some(other) => bail!("agent.vad is 'earshot' or 'silero', not '{other}'"),
            },
            vision: file.vision,
            llm_timeout: Duration::from_secs(file.llm_timeout_s.unwrap_or(20).max(1)),
            shops,
        })
    }
}

/// What ends a spoken turn besides silence.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnDetectorChoice {
    Silence,
    TrailingWords,
    SmartTurn(OnnxModel),
}

/// A model file and the ONNX Runtime library that runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxModel {
    pub runtime: PathBuf,
    pub model: PathBuf,
}

fn onnx_model(
    file: &AgentFileConfig,
    choice: &str,
    key: &str,
    model: &Option<PathBuf>,
) -> anyhow::Result<OnnxModel> {
    match (&file.onnxruntime, model) {
        (Some(runtime), Some(model)) => Ok(OnnxModel {
            runtime: runtime.clone(),
            model: model.clone(),
        }),
        _ => bail!(
            "agent.{choice} runs a model: set agent.onnxruntime (libonnxruntime.so) and agent.{key} (the .onnx file)"
        ),
    }
}

/// How chat runs.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub edit_window: Duration,
    pub blocklist: Option<BTreeMap<String, Vec<String>>>,
    pub push: Option<WebhookConfig>,
    pub translator: Option<souk_chat::translate::OpenAiConfig>,
}

fn check_urls(what: &str, urls: &[String]) -> anyhow::Result<()> {
    for url in urls {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("{what} URL '{url}' must start with http:// or https://");
        }
    }
    Ok(())
}

impl ServerConfig {
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None if args.dev => FileConfig::default(),
            None => bail!(
                "no configuration: pass --config FILE (with API keys), or --dev for local development"
            ),
        };
        let keys = if args.dev && file.keys.is_empty() {
            dev_keys()
        } else {
            file.keys()?
        };
        let webhooks = match &file.webhooks {
            Some(w) if !w.urls.is_empty() => {
                check_urls("webhook", &w.urls)?;
                let (api_key, secret) = keys.pick(w.api_key.as_deref())?;
                Some(WebhookConfig {
                    urls: w.urls.clone(),
                    api_key: api_key.to_owned(),
                    secret: secret.to_owned(),
                })
            }
            _ => None,
        };
        let push = if file.chat.push_urls.is_empty() {
            None
        } else {
            check_urls("push", &file.chat.push_urls)?;
            let (api_key, secret) = keys.pick(file.chat.push_api_key.as_deref())?;
            Some(WebhookConfig {
                urls: file.chat.push_urls.clone(),
                api_key: api_key.to_owned(),
                secret: secret.to_owned(),
            })
        };
        if let Some(t) = &file.chat.translator {
            check_urls("translator", std::slice::from_ref(&t.base_url))?;
        }
        let sqlite_sync = match file.store.sqlite_sync.as_deref() {
            None | Some("normal") => souk_store::SqliteSync::Normal,
            Some("full") => souk_store::SqliteSync::Full,
            Some(other) => bail!("store.sqlite_sync is 'normal' or 'full', not '{other}'"),
        };
        let media_threads = args.media_threads.or(file.media_threads).unwrap_or(1);
        if !(1..=MAX_MEDIA_THREADS).contains(&media_threads) {
            bail!("media_threads must be 1 to {MAX_MEDIA_THREADS}; got {media_threads}");
        }
        let tls = match (
            args.tls_cert.clone().or(file.tls_cert.clone()),
            args.tls_key.clone().or(file.tls_key.clone()),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("TLS needs both a certificate and a key"),
        };
        Ok(ServerConfig {
            dev: args.dev,
            bind: args.bind.or(file.bind).unwrap_or(DEFAULT_BIND),
            media_port: args
                .media_port
                .or(file.media_port)
                .unwrap_or(DEFAULT_MEDIA_PORT),
            media_threads,
            public_ip: args.public_ip.or(file.public_ip),
            resume_window: args
                .resume_window
                .or(file.resume_window_s.map(Duration::from_secs))
                .unwrap_or(DEFAULT_RESUME_WINDOW),
            ice_tcp_check_within: args
                .ice_tcp_check_within
                .or(file.ice_tcp_check_within_s.map(Duration::from_secs))
                .unwrap_or(DEFAULT_ICE_TCP_CHECK_WITHIN),
            resilience: args.resilience == "on",
            bandwidth: match args.bwe.as_str() {
                "twcc" => BandwidthEstimation::Twcc,
                "off" => BandwidthEstimation::Off,
                _ => BandwidthEstimation::Reports,
            },
            tls,
            keys,
            trusted_proxies: file.trusted_proxies.clone(),
            cors_origins: if args.dev && file.cors_origins.is_empty() {
                None
            } else {
                Some(file.cors_origins)
            },
            webhooks,
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from("souk-data")),
            db_url: args.db.clone().or(file.store.url.clone()),
            sqlite_sync,
            chat: ChatConfig {
                edit_window: Duration::from_secs(file.chat.edit_window_s.unwrap_or(120)),
                blocklist: file.chat.blocklist.clone(),
                push,
                translator: file.chat.translator.clone(),
            },
            agent: AgentConfig::from_file(&file.agent, args.dev)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_config_rejects_short_secrets_and_unknown_fields() {
        let cfg: FileConfig = toml::from_str("[keys]\nk = \"short\"\n").unwrap();
        assert!(cfg.keys().unwrap_err().to_string().contains("shorter"));
        assert!(toml::from_str::<FileConfig>("bnid = \"x\"").is_err());
        let cfg: FileConfig = toml::from_str("").unwrap();
        assert!(cfg.keys().is_err());
    }

    #[test]
    fn agent_options_are_checked() {
        let parse = |toml: &str| {
            AgentConfig::from_file(&toml::from_str::<AgentFileConfig>(toml).unwrap(), false)
        };
        assert_eq!(
            parse("turn_detector = \"trailing_words\"")
                .unwrap()
                .turn_detector,
            TurnDetectorChoice::TrailingWords
        );
        let defaults = parse("").unwrap();
        assert_eq!(defaults.turn_detector, TurnDetectorChoice::Silence);
        assert_eq!(defaults.silero, None);
        let models = parse(
            "vad = \"silero\"\nturn_detector = \"smart_turn\"\nonnxruntime = \"/o.so\"\nsilero_model = \"/v.onnx\"\nsmart_turn_model = \"/t.onnx\"",
        )
        .unwrap();
        assert_eq!(models.silero.unwrap().model, PathBuf::from("/v.onnx"));
        assert!(
            matches!(models.turn_detector, TurnDetectorChoice::SmartTurn(m) if m.runtime.as_os_str() == "/o.so")
        );
        let e = parse("vad = \"silero\"\nsilero_model = \"/v.onnx\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.onnxruntime"), "{e}");
        let e = parse("turn_detector = \"smart_turn\"\nonnxruntime = \"/o.so\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.smart_turn_model"), "{e}");
        let e = parse("vad = \"webrtc\"").unwrap_err().to_string();
        assert!(e.contains("silero"), "{e}");
        let e = parse("turn_detector = \"sometimes\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("trailing_words"), "{e}");
        let e = parse("[[shops]]\nid = \"acme\"\ndata = \"x.json\"\nanswer = \"never\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("staff_offline"), "{e}");
        let e = parse("[llm]\nbase_url = \"ftp://x\"\nmodel = \"m\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http"), "{e}");
    }

    #[test]
    fn picking_keys() {
        let keys = dev_keys();
        assert_eq!(keys.pick(None).unwrap().0, DEV_API_KEY);
        assert!(keys.pick(Some("nope")).is_err());
    }
}
