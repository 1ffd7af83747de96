//! The speech providers' conformance suite: every recogniser and every synthesiser,
//! offline or behind an OpenAI-compatible server, is held to the same behaviour —
//! flushing gives the text, cancelling costs nothing and leaves the provider usable, a
//! server that was down works once it is back, and languages are told apart. The
//! servers are scripted on a local port (`test_http`).

use std::sync::Arc;

use souk_chat::translate::OpenAiConfig;
use tokio::net::TcpListener;

use super::audio::RATE;
use super::stt::{OpenAiStt, PocketSphinx, Stt};
use super::tts::{EspeakTts, OpenAiTts, Tts};
use crate::test_http::{closed_base, response, serve_one, serve_one_on};

fn endpoint(base: String) -> OpenAiConfig {
    OpenAiConfig {
        base_url: base,
        api_key: Some("sk-test".into()),
        model: "scripted".into(),
    }
}

async fn speech(text: &str, lang: &str) -> Vec<i16> {
    let mut audio = vec![0i16; RATE as usize / 2];
    audio.extend(
        EspeakTts { rate_wpm: 140 }
            .synthesize(text, lang)
            .await
            .expect("scripts/test installs libespeak-ng1"),
    );
    audio.extend(vec![0i16; RATE as usize / 2]);
    audio
}

/// Flush and cancel, for any recogniser: the text of what was pushed comes at the end;
/// a stream dropped half-way leaves the provider as good as new.
async fn flushes_and_cancels(stt: &dyn Stt, audio: &[i16]) -> String {
    let mut cancelled = stt.open();
    cancelled.push(&audio[..audio.len() / 2]);
    drop(cancelled);
    let mut stream = stt.open();
    for frame in audio.chunks(320) {
        stream.push(frame);
    }
    stream.finish().await.expect("a transcript").text
}

#[tokio::test]
async fn pocketsphinx_flushes_cancels_and_speaks_english_only() {
    let stt = PocketSphinx::load()
        .expect("scripts/test installs libpocketsphinx3 and pocketsphinx-en-us");
    let heard = flushes_and_cancels(&stt, &speech("where is my order", "en").await).await;
    assert!(!heard.is_empty());
    // Another language is heard as (wrong) English, and reported as English: this
    // recogniser cannot tell, which is why other languages need a transcription server.
    let mut stream = stt.open();
    stream.push(&speech("أين طلبي", "ar").await);
    assert_eq!(stream.finish().await.unwrap().lang.as_deref(), Some("en"));
}

#[tokio::test]
async fn a_transcription_server_is_sent_the_audio_and_its_language_is_kept() {
    let answer = response(
        "200 OK",
        "application/json",
        br#"{"text": "\u0623\u064a\u0646 \u0637\u0644\u0628\u064a", "language": "arabic"}"#,
    );
    let server = serve_one(Some(answer)).await;
    let stt = OpenAiStt::new(endpoint(server.base));
    let audio = speech("hello", "en").await;
    // The half-pushed, dropped stream sent nothing: the one request is the flush.
    let heard = flushes_and_cancels(&stt, &audio).await;
    assert_eq!(heard, "أين طلبي");
    let request = server.request.await.unwrap();
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
    assert!(head.starts_with("post /v1/audio/transcriptions"));
    assert!(head.contains("authorization: bearer sk-test"));
    let wav_at = request
        .windows(4)
        .position(|w| w == b"RIFF")
        .expect("a WAV file in the form");
    let data_len =
        u32::from_le_bytes(request[wav_at + 40..wav_at + 44].try_into().unwrap()) as usize;
    assert_eq!(data_len, audio.len() * 2, "all the audio, once");
    let mut stream = OpenAiStt::new(endpoint(
        serve_one(Some(response(
            "200 OK",
            "application/json",
            br#"{"text": "obrigado", "language": "portuguese"}"#,
        )))
        .await
        .base,
    ))
    .open();
    stream.push(&audio);
    assert_eq!(stream.finish().await.unwrap().lang.as_deref(), Some("pt"));
}

#[tokio::test]
async fn a_transcription_server_that_is_down_fails_or_answers_garbage_is_a_clear_error() {
    let down = OpenAiStt::new(endpoint(closed_base().await))
        .open()
        .finish()
        .await
        .unwrap_err();
    assert_eq!(down.code, "stt_unavailable");
    for (status, body, code) in [
        ("500 Internal Server Error", &b"oops"[..], "stt_failed"),
        ("200 OK", &b"<html>not json</html>"[..], "stt_failed"),
        ("200 OK", &br#"{"words": []}"#[..], "stt_failed"),
    ] {
        let server = serve_one(Some(response(status, "application/json", body))).await;
        let e = OpenAiStt::new(endpoint(server.base))
            .open()
            .finish()
            .await
            .unwrap_err();
        assert_eq!(e.code, code, "{status} {}", String::from_utf8_lossy(body));
    }
    // Noise markers and punctuation are not words.
    let server = serve_one(Some(response(
        "200 OK",
        "application/json",
        br#"{"text": "[noise] ... <unk>"}"#,
    )))
    .await;
    assert_eq!(
        OpenAiStt::new(endpoint(server.base))
            .open()
            .finish()
            .await
            .unwrap()
            .text,
        ""
    );
}

#[tokio::test]
async fn providers_recover_when_their_server_comes_back() {
    // The same address, first with nothing listening, then with a server.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let base = format!("http://{addr}/v1");
    let stt = OpenAiStt::new(endpoint(base.clone()));
    let tts = OpenAiTts::new(endpoint(base), Default::default());
    assert_eq!(
        stt.open().finish().await.unwrap_err().code,
        "stt_unavailable"
    );
    assert_eq!(
        tts.synthesize("hi", "en").await.unwrap_err().code,
        "tts_unavailable"
    );
    let back = serve_one_on(
        TcpListener::bind(addr).await.unwrap(),
        Some(response("200 OK", "application/json", br#"{"text": "hi"}"#)),
    );
    assert_eq!(stt.open().finish().await.unwrap().text, "hi");
    drop(back);
    let pcm: Vec<u8> = (0..2400i16).flat_map(|s| s.to_le_bytes()).collect();
    let _back = serve_one_on(
        TcpListener::bind(addr).await.unwrap(),
        Some(response("200 OK", "application/octet-stream", &pcm)),
    );
    assert_eq!(
        tts.synthesize("hi", "en").await.unwrap().len(),
        1600,
        "100 ms at 24 kHz becomes 100 ms at 16 kHz"
    );
}

#[tokio::test]
async fn espeak_speaks_each_shop_language_and_cancels() {
    let tts: Arc<dyn Tts> =
        Arc::new(EspeakTts::check().expect("scripts/test installs libespeak-ng1"));
    for (lang, text) in [
        ("en", "Your order has shipped."),
        ("ar", "تم شحن طلبك."),
        ("es", "Tu pedido ha sido enviado."),
        ("pt-BR", "Seu pedido foi enviado."),
        ("id", "Pesanan Anda sudah dikirim."),
        ("zh", "您的订单已发货。"),
    ] {
        let pcm = tts
            .synthesize(text, lang)
            .await
            .unwrap_or_else(|e| panic!("{lang}: {e}"));
        let seconds = pcm.len() as f64 / RATE as f64;
        assert!((0.5..6.0).contains(&seconds), "{lang}: {seconds} s");
    }
    // A synthesis dropped half-way (an interruption) does not wedge the engine.
    drop(tts.synthesize("A long sentence that nobody will hear to the end.", "en"));
    assert!(!tts
        .synthesize("Still here.", "en")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        tts.synthesize("x", "xx-nonexistent")
            .await
            .unwrap_err()
            .code,
        "tts_failed"
    );
}

#[tokio::test]
async fn a_speech_server_is_asked_for_pcm_in_the_languages_voice() {
    let pcm: Vec<u8> = (0..4800i16).flat_map(|s| s.to_le_bytes()).collect();
    let server = serve_one(Some(response("200 OK", "application/octet-stream", &pcm))).await;
    let voices = [
        ("ar".to_owned(), "amira".to_owned()),
        ("default".to_owned(), "alloy".to_owned()),
    ]
    .into();
    let tts = OpenAiTts::new(endpoint(server.base), voices);
    assert_eq!(tts.synthesize("مرحبا", "ar-SA").await.unwrap().len(), 3200);
    let request = String::from_utf8(server.request.await.unwrap()).unwrap();
    assert!(request.starts_with("POST /v1/audio/speech"));
    assert!(
        request.contains(r#""voice":"amira""#) && request.contains(r#""response_format":"pcm""#),
        "{request}"
    );
    let failing = serve_one(Some(response(
        "429 Too Many Requests",
        "application/json",
        b"{}",
    )))
    .await;
    let e = OpenAiTts::new(endpoint(failing.base), Default::default())
        .synthesize("hi", "en")
        .await
        .unwrap_err();
    assert_eq!(e.code, "tts_failed");
}
