//! Speech recognition: the shopper's speech to text, streamed while they talk.
//!
//! A [`Stt`] opens one stream per utterance; audio is pushed as it arrives and the
//! final text comes soon after the end, because the work was done along the way.
//! Offline, pocketsphinx 0.8 (Debian's `libpocketsphinx3` with `pocketsphinx-en-us`,
//! English only) is loaded at run time; any OpenAI-compatible
//! `/v1/audio/transcriptions` server (Whisper) covers other languages and reports which
//! one it heard.

use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use souk_chat::translate::OpenAiConfig;
use tokio::sync::oneshot;

use super::audio::RATE;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    pub text: String,
    /// BCP 47 tag of what was heard, when the recogniser knows.
    pub lang: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SttError {
    /// `stt_unavailable` (not installed or unreachable) or `stt_failed`.
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for SttError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

pub type SttFuture = Pin<Box<dyn Future<Output = Result<Transcript, SttError>> + Send>>;

pub trait Stt: Send + Sync {
    /// A stream for one utterance.
    fn open(&self) -> Box<dyn SttStream>;
}

pub trait SttStream: Send {
    /// 16 kHz mono PCM, as it arrives.
    fn push(&mut self, pcm: &[i16]);
    /// The text of everything pushed; dropping the stream instead cancels it.
    fn finish(self: Box<Self>) -> SttFuture;
    /// The newest interim text since the last call, for a recogniser that has words
    /// before the speech ends (they let talking over the agent count as words sooner).
    fn take_interim(&mut self) -> Option<String> {
        None
    }
}

/// How much new audio a streaming recogniser decodes between interim texts.
const INTERIM_EVERY: usize = RATE as usize * 3 / 10;

fn unavailable(message: String) -> SttError {
    SttError {
        code: "stt_unavailable",
        message,
    }
}

fn failed(message: String) -> SttError {
    SttError {
        code: "stt_failed",
        message,
    }
}

/// Text a person could have said: recognisers return noise markers and punctuation for
/// coughs and clicks, which must not count as words.
pub fn clean(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| !(w.starts_with('<') || w.starts_with('[') || w.starts_with('(')))
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where Debian's pocketsphinx-en-us puts the English model.
const MODEL_DIR: &str = "/usr/share/pocketsphinx/model/en-us";

type CmdLnInit = unsafe extern "C" fn(
    *mut std::ffi::c_void,
    *const std::ffi::c_void,
    i32,
    ...
) -> *mut std::ffi::c_void;

/// The pocketsphinx 0.8 entry points used here.
struct Sphinx {
    _base: libloading::Library,
    _lib: libloading::Library,
    cmd_ln_init: CmdLnInit,
    ps_args: unsafe extern "C" fn() -> *const std::ffi::c_void,
    ps_init: unsafe extern "C" fn(*mut std::ffi::c_void) -> *mut std::ffi::c_void,
    start_utt: unsafe extern "C" fn(*mut std::ffi::c_void) -> i32,
    process_raw: unsafe extern "C" fn(*mut std::ffi::c_void, *const i16, usize, i32, i32) -> i32,
    end_utt: unsafe extern "C" fn(*mut std::ffi::c_void) -> i32,
    get_hyp: unsafe extern "C" fn(*mut std::ffi::c_void, *mut i32) -> *const std::ffi::c_char,
}

/// A pocketsphinx decoder: used by one thread at a time, so it may move between them.
struct Decoder(*mut std::ffi::c_void);
// SAFETY: a decoder has no thread affinity; the pool hands each to one stream at a time.
unsafe impl Send for Decoder {}

/// pocketsphinx, English, offline. Decoders (a second or so to load each) are pooled.
pub struct PocketSphinx {
    sphinx: Arc<Sphinx>,
    pool: Arc<Mutex<Vec<Decoder>>>,
}

impl PocketSphinx {
    /// Loads the library and one decoder now, so a missing package is reported at start.
    pub fn load() -> Result<PocketSphinx, SttError> {
        let missing = |e: libloading::Error| {
            unavailable(format!(
                "pocketsphinx is not installed ({e}); install the Debian packages libpocketsphinx3 and pocketsphinx-en-us, or configure a transcription server"
            ))
        };
        // SAFETY: the libraries have no initialisers with preconditions; the symbols are
        // looked up with their C signatures from pocketsphinx.h and cmd_ln.h.
        let sphinx = unsafe {
            let base = libloading::Library::new("libsphinxbase.so.3").map_err(missing)?;
            let lib = libloading::Library::new("libpocketsphinx.so.3").map_err(missing)?;
            Sphinx {
                cmd_ln_init: *base.get(b"cmd_ln_init").map_err(missing)?,
                ps_args: *lib.get(b"ps_args").map_err(missing)?,
                ps_init: *lib.get(b"ps_init").map_err(missing)?,
                start_utt: *lib.get(b"ps_start_utt").map_err(missing)?,
                process_raw: *lib.get(b"ps_process_raw").map_err(missing)?,
                end_utt: *lib.get(b"ps_end_utt").map_err(missing)?,
                get_hyp: *lib.get(b"ps_get_hyp").map_err(missing)?,
                _base: base,
                _lib: lib,
            }
        };
        let engine = PocketSphinx {
            sphinx: Arc::new(sphinx),
            pool: Arc::default(),
        };
        let first = engine.new_decoder()?;
        engine.pool.lock().expect("pool lock").push(first);
        Ok(engine)
    }

    fn new_decoder(&self) -> Result<Decoder, SttError> {
        if !std::path::Path::new(MODEL_DIR).join("en-us").exists() {
            return Err(unavailable(format!(
                "the English model is missing from {MODEL_DIR}; install the Debian package pocketsphinx-en-us"
            )));
        }
        let arg = |s: &str| std::ffi::CString::new(s).expect("no NUL");
        let (hmm, lm, dict) = (
            arg(&format!("{MODEL_DIR}/en-us")),
            arg(&format!("{MODEL_DIR}/en-us.lm.bin")),
            arg(&format!("{MODEL_DIR}/cmudict-en-us.dict")),
        );
        let names = [
            arg("-hmm"),
            arg("-lm"),
            arg("-dict"),
            arg("-logfn"),
            arg("/dev/null"),
        ];
        // SAFETY: cmd_ln_init copies the NULL-terminated list of option/value strings,
        // which live until it returns; ps_init takes the configuration.
        unsafe {
            let s = &self.sphinx;
            let config = (s.cmd_ln_init)(
                std::ptr::null_mut(),
                (s.ps_args)(),
                1,
                names[0].as_ptr(),
                hmm.as_ptr(),
                names[1].as_ptr(),
                lm.as_ptr(),
                names[2].as_ptr(),
                dict.as_ptr(),
                names[3].as_ptr(),
                names[4].as_ptr(),
                std::ptr::null::<std::ffi::c_char>(),
            );
            if config.is_null() {
                return Err(failed("pocketsphinx refused its configuration".into()));
            }
            let decoder = (s.ps_init)(config);
            if decoder.is_null() {
                return Err(failed(format!(
                    "pocketsphinx could not load the model in {MODEL_DIR}"
                )));
            }
            Ok(Decoder(decoder))
        }
    }
}

enum Work {
    Audio(Vec<i16>),
    Finish(oneshot::Sender<Result<Transcript, SttError>>),
}

/// One utterance, decoded on its own thread as the audio arrives.
struct SphinxStream {
    work: std_mpsc::Sender<Work>,
    interims: std_mpsc::Receiver<String>,
}

impl Stt for PocketSphinx {
    fn open(&self) -> Box<dyn SttStream> {
        let (work, queue) = std_mpsc::channel();
        let (interim_tx, interims) = std_mpsc::channel();
        let sphinx = self.sphinx.clone();
        let pool = self.pool.clone();
        let reuse = pool.lock().expect("pool lock").pop();
        let decoder = reuse.map(Ok).unwrap_or_else(|| self.new_decoder());
        std::thread::spawn(move || {
            let decoder = match decoder {
                Ok(d) => d,
                Err(e) => {
                    // Answer the finish with the reason.
                    for item in queue {
                        if let Work::Finish(reply) = item {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                    return;
                }
            };
            // SAFETY: this thread has the decoder to itself until it goes back to the pool.
            unsafe { (sphinx.start_utt)(decoder.0) };
            let (mut since_interim, mut last_interim) = (0usize, String::new());
            for item in queue {
                match item {
                    Work::Audio(pcm) => {
                        // SAFETY: as above.
                        unsafe { (sphinx.process_raw)(decoder.0, pcm.as_ptr(), pcm.len(), 0, 0) };
                        since_interim += pcm.len();
                        if since_interim >= INTERIM_EVERY {
                            since_interim = 0;
                            // SAFETY: a partial hypothesis mid-utterance is allowed; the
                            // string is copied at once.
                            let text = clean(&unsafe { hypothesis(&sphinx, &decoder) });
                            if !text.is_empty() && text != last_interim {
                                let _ = interim_tx.send(text.clone());
                                last_interim = text;
                            }
                        }
                    }
                    Work::Finish(reply) => {
                        // SAFETY: as above; the hypothesis string is copied before the
                        // decoder is used again.
                        let text = unsafe {
                            (sphinx.end_utt)(decoder.0);
                            hypothesis(&sphinx, &decoder)
                        };
                        pool.lock().expect("pool lock").push(decoder);
                        let _ = reply.send(Ok(Transcript {
                            text: clean(&text),
                            lang: Some("en".into()),
                        }));
                        return;
                    }
                }
            }
            // Dropped without finishing: cancelled.
            unsafe { (sphinx.end_utt)(decoder.0) };
            pool.lock().expect("pool lock").push(decoder);
        });
        Box::new(SphinxStream { work, interims })
    }
}

/// The decoder's best hypothesis so far, copied out.
///
/// # Safety
/// The caller has the decoder to itself.
unsafe fn hypothesis(sphinx: &Sphinx, decoder: &Decoder) -> String {
    let mut score = 0i32;
    // SAFETY: per the contract above; the string is copied before the decoder is used again.
    unsafe {
        let hyp = (sphinx.get_hyp)(decoder.0, &mut score);
        if hyp.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(hyp).to_string_lossy().into_owned()
        }
    }
}

impl SttStream for SphinxStream {
    fn push(&mut self, pcm: &[i16]) {
        let _ = self.work.send(Work::Audio(pcm.to_vec()));
    }

    fn take_interim(&mut self) -> Option<String> {
        self.interims.try_iter().last()
    }

    fn finish(self: Box<Self>) -> SttFuture {
        let (reply, answer) = oneshot::channel();
        let _ = self.work.send(Work::Finish(reply));
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(failed("the recogniser thread stopped".into())))
        })
    }
}

/// An OpenAI-compatible transcription server (Whisper and friends): the utterance is
/// sent whole when it ends, as a WAV file.
pub struct OpenAiStt {
    client: reqwest::Client,
    config: OpenAiConfig,
}

impl OpenAiStt {
    pub fn new(config: OpenAiConfig) -> OpenAiStt {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a default HTTP client builds");
        OpenAiStt { client, config }
    }
}

struct UploadStream {
    client: reqwest::Client,
    config: OpenAiConfig,
    pcm: Vec<i16>,
}

/// Longest utterance sent: a monologue is cut, not uploaded whole (10 minutes would be
/// 19 MB).
const MAX_UPLOAD: usize = RATE as usize * 60;

impl Stt for OpenAiStt {
    fn open(&self) -> Box<dyn SttStream> {
        Box::new(UploadStream {
            client: self.client.clone(),
            config: self.config.clone(),
            pcm: Vec::new(),
        })
    }
}

impl SttStream for UploadStream {
    fn push(&mut self, pcm: &[i16]) {
        let room = MAX_UPLOAD.saturating_sub(self.pcm.len());
        self.pcm.extend_from_slice(&pcm[..pcm.len().min(room)]);
    }

    fn finish(self: Box<Self>) -> SttFuture {
        Box::pin(async move {
            let form = reqwest::multipart::Form::new()
                .text("model", self.config.model.clone())
                .text("response_format", "verbose_json")
                .part(
                    "file",
                    reqwest::multipart::Part::bytes(wav(&self.pcm))
                        .file_name("speech.wav")
                        .mime_str("audio/wav")
                        .expect("a valid mime type"),
                );
            let mut call = self
                .client
                .post(format!(
                    "{}/audio/transcriptions",
                    self.config.base_url.trim_end_matches('/')
                ))
                .multipart(form);
            if let Some(key) = &self.config.api_key {
                call = call.bearer_auth(key);
            }
            let response = call.send().await.map_err(|e| {
                unavailable(format!("the transcription server is unreachable: {e}"))
            })?;
            let status = response.status();
            if !status.is_success() {
                return Err(failed(format!(
                    "the transcription server answered HTTP {status}"
                )));
            }
            let body: serde_json::Value = response
                .json()
                .await
                .map_err(|e| failed(format!("the transcription is not JSON: {e}")))?;
            let text = body["text"]
                .as_str()
                .ok_or_else(|| failed("the transcription has no 'text'".into()))?;
            Ok(Transcript {
                text: clean(text),
                lang: body["language"].as_str().and_then(language_tag),
            })
        })
    }
}

/// Whisper names languages in English words; the pipeline uses tags.
fn language_tag(name: &str) -> Option<String> {
    let name = name.to_lowercase();
    let tag = match name.as_str() {
        "arabic" => "ar",
        "chinese" | "mandarin" => "zh",
        "english" => "en",
        "french" => "fr",
        "german" => "de",
        "indonesian" => "id",
        "portuguese" => "pt",
        "spanish" => "es",
        "japanese" => "ja",
        "korean" => "ko",
        "russian" => "ru",
        "thai" => "th",
        "hindi" => "hi",
        other if other.len() == 2 && other.chars().all(|c| c.is_ascii_lowercase()) => other,
        _ => return None,
    };
    Some(tag.to_owned())
}

/// 16 kHz mono 16-bit PCM as a WAV file.
fn wav(pcm: &[i16]) -> Vec<u8> {
    let data_len = (pcm.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in pcm {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::tts::{EspeakTts, Tts};

    #[test]
    fn noise_markers_are_not_words() {
        assert_eq!(clean("<sil> [noise] hello ++ (um) there ."), "hello there");
        assert_eq!(clean("@@ ## ..."), "");
    }

    #[test]
    fn whisper_language_names_become_tags() {
        assert_eq!(language_tag("Arabic").as_deref(), Some("ar"));
        assert_eq!(language_tag("pt").as_deref(), Some("pt"));
        assert_eq!(language_tag("klingon"), None);
    }

    #[tokio::test]
    async fn pocketsphinx_hears_english_speech_streamed_in_frames() {
        let stt = PocketSphinx::load()
            .expect("scripts/test installs libpocketsphinx3 and pocketsphinx-en-us");
        // A shopper speaking calmly, with the half second of room noise before and after
        // that a microphone gives (the recogniser adapts to the channel on it).
        let voice = EspeakTts { rate_wpm: 140 };
        let mut audio = vec![0i16; 8000];
        audio.extend(
            voice
                .synthesize("do you have canvas sneakers", "en")
                .await
                .unwrap(),
        );
        audio.extend(vec![0i16; 8000]);
        // Two utterances in a row reuse the pooled decoder.
        for _ in 0..2 {
            let mut stream = stt.open();
            for frame in audio.chunks(320) {
                stream.push(frame);
            }
            let heard = stream.finish().await.unwrap();
            assert_eq!(heard.lang.as_deref(), Some("en"));
            // pocketsphinx hears robotic speech roughly: at least three of the five words.
            let said = ["do", "you", "have", "canvas", "sneakers"];
            let recalled = said
                .iter()
                .filter(|w| heard.text.split_whitespace().any(|h| h == **w))
                .count();
            assert!(recalled >= 3, "heard '{}'", heard.text);
        }
        // Words come before the end, as the shopper speaks.
        let mut stream = stt.open();
        let mut interim = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for frame in audio.chunks(320) {
            stream.push(frame);
        }
        while interim.is_none() && std::time::Instant::now() < deadline {
            interim = stream.take_interim();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let interim = interim.expect("an interim text while the utterance is open");
        assert!(!interim.is_empty());
        assert!(!stream.finish().await.unwrap().text.is_empty());
        // A cancelled stream gives its decoder back.
        let mut cancelled = stt.open();
        cancelled.push(&audio[..3200]);
        drop(cancelled);
        let silence = stt.open();
        assert_eq!(silence.finish().await.unwrap().text, "");
    }

    #[test]
    fn wav_header() {
        let w = wav(&[0, 1, -1]);
        assert_eq!(&w[..4], b"RIFF");
        assert_eq!(w.len(), 44 + 6);
        assert_eq!(u32::from_le_bytes([w[24], w[25], w[26], w[27]]), 16_000);
    }
}
