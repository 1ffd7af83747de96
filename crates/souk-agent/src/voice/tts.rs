//! Speech synthesis: text of one sentence to 16 kHz PCM, in the reply's language.
//!
//! Offline, espeak-ng speaks about a hundred languages, robotic but instant; it is
//! loaded at run time (`libespeak-ng.so.1`), so the default build needs no system
//! library and a machine without it gets a clear error naming the package. Any
//! OpenAI-compatible `/v1/audio/speech` server gives a natural voice instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use souk_chat::translate::OpenAiConfig;

use super::audio::{resample, RATE};

/// Why no speech came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtsError {
    /// `tts_unavailable` (not installed or unreachable) or `tts_failed`.
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for TtsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

pub type TtsFuture = Pin<Box<dyn Future<Output = Result<Vec<i16>, TtsError>> + Send>>;

pub trait Tts: Send + Sync {
    /// `text` spoken in the language `lang` (BCP 47), as 16 kHz mono PCM.
    fn synthesize(&self, text: &str, lang: &str) -> TtsFuture;
}

fn unavailable(message: String) -> TtsError {
    TtsError {
        code: "tts_unavailable",
        message,
    }
}

/// espeak-ng's voice for a language tag: its own name where it has one. American
/// English is the variant English recognisers are trained on.
fn espeak_voice(lang: &str) -> &str {
    match lang.split('-').next().unwrap_or(lang) {
        "zh" => "cmn",
        "en" => "en-us",
        "pt" if lang.eq_ignore_ascii_case("pt-BR") => "pt-br",
        base => base,
    }
}

/// The entry points of libespeak-ng used here (its C API, `speak_lib.h`).
struct Espeak {
    _lib: libloading::Library,
    set_voice: unsafe extern "C" fn(*const std::ffi::c_char) -> i32,
    set_parameter: unsafe extern "C" fn(i32, i32, i32) -> i32,
    synth: unsafe extern "C" fn(
        *const std::ffi::c_void,
        usize,
        u32,
        i32,
        u32,
        u32,
        *mut u32,
        *mut std::ffi::c_void,
    ) -> i32,
    /// Its output rate (22050 Hz for the standard voices).
    rate: u32,
}

const AUDIO_OUTPUT_SYNCHRONOUS: i32 = 2;
const POS_CHARACTER: i32 = 1;
const ESPEAK_CHARS_UTF8: u32 = 1;
const ESPEAK_RATE: i32 = 1;

/// Where the synthesis callback puts samples. espeak-ng has one global engine, so one
/// synthesis runs at a time (under [`ESPEAK`]'s lock) and this is its buffer.
static SAMPLES: Mutex<Vec<i16>> = Mutex::new(Vec::new());

unsafe extern "C" fn collect(wav: *mut i16, count: i32, _events: *mut std::ffi::c_void) -> i32 {
    if !wav.is_null() && count > 0 {
        // SAFETY: espeak-ng hands `count` samples at `wav` for the length of this call.
        let samples = unsafe { std::slice::from_raw_parts(wav, count as usize) };
        SAMPLES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(samples);
    }
    0
}

static ESPEAK: OnceLock<Result<Mutex<Espeak>, String>> = OnceLock::new();

impl Espeak {
    fn load() -> Result<Espeak, String> {
        let missing = |e: libloading::Error| {
            format!("espeak-ng is not installed ({e}); install the Debian package libespeak-ng1, or configure a speech server")
        };
        // SAFETY: loading libespeak-ng runs no initialisers with preconditions; the
        // symbols are looked up with their C signatures from speak_lib.h.
        unsafe {
            let lib = libloading::Library::new("libespeak-ng.so.1").map_err(missing)?;
            let initialize: libloading::Symbol<
                unsafe extern "C" fn(i32, i32, *const std::ffi::c_char, i32) -> i32,
            > = lib.get(b"espeak_Initialize").map_err(missing)?;
            let set_callback: libloading::Symbol<
                unsafe extern "C" fn(
                    unsafe extern "C" fn(*mut i16, i32, *mut std::ffi::c_void) -> i32,
                ),
            > = lib.get(b"espeak_SetSynthCallback").map_err(missing)?;
            let rate = initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, std::ptr::null(), 0);
            if rate <= 0 {
                return Err(
                    "espeak-ng could not start: its voice data is missing (package espeak-ng-data)"
                        .into(),
                );
            }
            set_callback(collect);
            Ok(Espeak {
                set_voice: *lib.get(b"espeak_SetVoiceByName").map_err(missing)?,
                set_parameter: *lib.get(b"espeak_SetParameter").map_err(missing)?,
                synth: *lib.get(b"espeak_Synth").map_err(missing)?,
                rate: rate as u32,
                _lib: lib,
            })
        }
    }

    fn speak(&self, text: &str, lang: &str, rate_wpm: u32) -> Result<Vec<i16>, TtsError> {
        let voice = std::ffi::CString::new(espeak_voice(lang))
            .map_err(|_| unavailable("bad language tag".into()))?;
        let text = std::ffi::CString::new(text.replace('\0', " ")).expect("no NUL left");
        SAMPLES.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // SAFETY: the engine was initialised in `load`; the strings outlive the calls,
        // and synthesis is synchronous, so the callback is done when `synth` returns.
        let status = unsafe {
            if (self.set_voice)(voice.as_ptr()) != 0 {
                return Err(TtsError {
                    code: "tts_failed",
                    message: format!("espeak-ng has no voice for '{lang}'"),
                });
            }
            (self.set_parameter)(ESPEAK_RATE, rate_wpm as i32, 0);
            (self.synth)(
                text.as_ptr().cast(),
                text.as_bytes_with_nul().len(),
                0,
                POS_CHARACTER,
                0,
                ESPEAK_CHARS_UTF8,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if status != 0 {
            return Err(TtsError {
                code: "tts_failed",
                message: format!("espeak-ng failed to speak (error {status})"),
            });
        }
        let samples = std::mem::take(&mut *SAMPLES.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(resample(&samples, self.rate, RATE))
    }
}

/// espeak-ng, loaded at first use.
#[derive(Debug, Clone, Copy)]
pub struct EspeakTts {
    /// Speaking rate in words per minute (espeak-ng's normal is 175).
    pub rate_wpm: u32,
}

impl Default for EspeakTts {
    fn default() -> Self {
        EspeakTts { rate_wpm: 175 }
    }
}

impl EspeakTts {
    /// Loads the library now, so a missing one is reported at start.
    pub fn check() -> Result<EspeakTts, TtsError> {
        ESPEAK
            .get_or_init(|| Espeak::load().map(Mutex::new))
            .as_ref()
            .map(|_| EspeakTts::default())
            .map_err(|e| unavailable(e.clone()))
    }
}

impl Tts for EspeakTts {
    fn synthesize(&self, text: &str, lang: &str) -> TtsFuture {
        let (text, lang, rate) = (
            text.to_owned(),
            lang.to_owned(),
            self.rate_wpm.clamp(80, 450),
        );
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let engine = ESPEAK
                    .get_or_init(|| Espeak::load().map(Mutex::new))
                    .as_ref()
                    .map_err(|e| unavailable(e.clone()))?;
                engine
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .speak(&text, &lang, rate)
            })
            .await
            .unwrap_or_else(|e| Err(unavailable(format!("the synthesis thread failed: {e}"))))
        })
    }
}

/// An OpenAI-compatible `/v1/audio/speech` server, asked for 16-bit PCM.
pub struct OpenAiTts {
    client: reqwest::Client,
    config: OpenAiConfig,
    /// Voice name per language (`default` for the rest).
    voices: std::collections::BTreeMap<String, String>,
}

impl OpenAiTts {
    pub fn new(
        config: OpenAiConfig,
        voices: std::collections::BTreeMap<String, String>,
    ) -> OpenAiTts {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("a default HTTP client builds");
        OpenAiTts {
            client,
            config,
            voices,
        }
    }
}

/// The rate OpenAI's `pcm` format uses.
const OPENAI_PCM_RATE: u32 = 24_000;

impl Tts for OpenAiTts {
    fn synthesize(&self, text: &str, lang: &str) -> TtsFuture {
        let voice = self
            .voices
            .get(lang.split('-').next().unwrap_or(lang))
            .or_else(|| self.voices.get("default"))
            .cloned()
            .unwrap_or_else(|| "alloy".into());
        let mut call = self
            .client
            .post(format!(
                "{}/audio/speech",
                self.config.base_url.trim_end_matches('/')
            ))
            .json(&serde_json::json!({
                "model": self.config.model, "input": text, "voice": voice, "response_format": "pcm",
            }));
        if let Some(key) = &self.config.api_key {
            call = call.bearer_auth(key);
        }
        Box::pin(async move {
            let response = call
                .send()
                .await
                .map_err(|e| unavailable(format!("the speech server is unreachable: {e}")))?;
            let status = response.status();
            if !status.is_success() {
                return Err(TtsError {
                    code: "tts_failed",
                    message: format!("the speech server answered HTTP {status}"),
                });
            }
            let bytes = response.bytes().await.map_err(|e| TtsError {
                code: "tts_failed",
                message: format!("the speech broke off: {e}"),
            })?;
            let pcm: Vec<i16> = bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            Ok(resample(&pcm, OPENAI_PCM_RATE, RATE))
        })
    }
}
