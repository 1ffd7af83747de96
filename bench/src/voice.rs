//! `souk-bench voice`: how fast the AI agent answers by voice, and how fast it falls
//! silent when talked over, measured at a shopper bot through the real server.
//!
//! The bot publishes real speech (espeak-ng, Opus) through `souk-client` and receives the
//! agent's audio the same way. The agent runs inside `souk serve` with its offline
//! stages (pocketsphinx, espeak-ng) and a scripted model server started here, which
//! answers after a fixed time to first token, so the figures are the pipeline's and not
//! a model's.
//!
//! - Voice to voice: the bot's last voiced frame leaves -> the agent's first audio frame
//!   arrives.
//! - Barge-in: the bot's first voiced frame over the agent's answer leaves -> the last
//!   agent frame arrives (the agent is silent after it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use souk_agent::voice::audio::{level_dbov, OpusOut, FRAME};
use souk_agent::voice::tts::{EspeakTts, Tts};
use souk_client::audio::{AudioFeed, OutFrame, ReceivedAudio};
use souk_client::{Client, ClientOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::server::{room_token, start_server};

#[derive(clap::Args)]
pub struct VoiceBench {
    /// The souk binary to measure.
    #[arg(long, default_value = "target/release/souk")]
    souk: String,
    /// Spoken question-and-answer turns.
    #[arg(long, default_value_t = 20)]
    turns: usize,
    /// Times the bot talks over an answer.
    #[arg(long, default_value_t = 20)]
    barge_ins: usize,
    /// The scripted model's time to first token.
    #[arg(long, default_value_t = 200)]
    ttft_ms: u64,
    /// A folder with ONNX Runtime and the models (libonnxruntime.so, silero_vad.onnx,
    /// smart-turn.onnx, as scripts/test unpacks them in .cache/onnx): the agent then
    /// detects speech with Silero and ends turns with smart-turn.
    #[arg(long)]
    neural: Option<std::path::PathBuf>,
    /// Which neural stages `--neural` turns on: `silero`, `smart-turn` or both.
    #[arg(long, value_delimiter = ',', default_value = "silero,smart-turn")]
    neural_stages: Vec<String>,
}

/// Frames with any sound at all (above -90 dBov) count as speech: the earliest onset and
/// the latest end, so the figures err on the slow side.
const VOICED_BELOW_DBOV: i8 = 90;
/// No agent frame for this long: the agent has stopped speaking.
const AGENT_DONE: Duration = Duration::from_millis(600);
/// Silence kept queued at the bot so its microphone never goes quiet on the wire.
const SILENCE_QUEUED: usize = 5;

/// Short answers for the voice-to-voice turns; long ones to talk over.
const SHORT: &str = "Yes, we have them in white.";
const LONG: &str = "Our canvas sneakers come in white, black, navy and olive. Every pair has a rubber sole and a cotton lining. Sizes run from thirty six to forty four. They ship from Shenzhen in two days, and returns are free for thirty days.";

/// An OpenAI-compatible model on a local port: after `ttft`, it streams the short or the
/// long answer, word by word.
async fn scripted_model(ttft: Duration, long: Arc<AtomicBool>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1", listener.local_addr()?);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let long = long.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .and_then(|v| v.trim().parse().ok())
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                tokio::time::sleep(ttft).await;
                let answer = if long.load(Ordering::Relaxed) {
                    LONG
                } else {
                    SHORT
                };
                let mut body = String::from("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n");
                for word in answer.split_inclusive(' ') {
                    let chunk =
                        serde_json::json!({"choices": [{"index": 0, "delta": {"content": word}}]});
                    body.push_str(&format!("data: {chunk}\n\n"));
                }
                body.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
                let _ = socket.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(url)
}

/// The shopper bot's microphone: speech when asked, silence otherwise.
struct Microphone {
    feed: AudioFeed,
    encoder: OpusOut,
    next_tag: u64,
}

impl Microphone {
    /// Queues `pcm`; returns the tags of its first and last voiced frames.
    fn say(&mut self, pcm: &[i16]) -> (u64, u64) {
        self.feed.clear();
        let (mut first, mut last) = (None, 0);
        for chunk in pcm.chunks(FRAME) {
            let mut frame = chunk.to_vec();
            frame.resize(FRAME, 0);
            let level = level_dbov(&frame);
            let tag = self.push(&frame, level);
            if level < VOICED_BELOW_DBOV {
                first.get_or_insert(tag);
                last = tag;
            }
        }
        (first.unwrap_or(last), last)
    }

    fn push(&mut self, frame: &[i16], level: i8) -> u64 {
        self.next_tag += 1;
        self.feed.push(OutFrame {
            tag: self.next_tag,
            opus: self.encoder.encode(frame),
            level,
        });
        self.next_tag
    }

    /// Keeps a little silence queued, so frames keep flowing between questions.
    fn keep_talking(&mut self) {
        while self.feed.queued() < SILENCE_QUEUED {
            self.push(&[0; FRAME], 127);
        }
    }
}

/// What the bot has seen go out and come in.
struct Ears {
    agent_audio: mpsc::Receiver<ReceivedAudio>,
    sent: Vec<(u64, Instant)>,
}

impl Ears {
    /// Runs the microphone's pacing and collects the agent's frames until `until` says
    /// stop; returns the arrival times of agent frames seen meanwhile.
    async fn listen(
        &mut self,
        mic: &mut Microphone,
        deadline: Duration,
        mut until: impl FnMut(&[Instant], &[(u64, Instant)], Instant) -> bool,
    ) -> anyhow::Result<Vec<Instant>> {
        let started = Instant::now();
        let mut arrivals = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tokio::select! {
                frame = self.agent_audio.recv() => {
                    frame.context("the connection closed")?;
                    arrivals.push(Instant::now());
                }
                _ = tick.tick() => {
                    mic.keep_talking();
                    self.sent.extend(mic.feed.take_sent());
                }
            }
            if until(&arrivals, &self.sent, Instant::now()) {
                return Ok(arrivals);
            }
            if started.elapsed() > deadline {
                bail!("no answer from the agent within {deadline:?}");
            }
        }
    }

    fn sent_at(&self, tag: u64) -> Option<Instant> {
        self.sent.iter().find(|(t, _)| *t == tag).map(|(_, at)| *at)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, mut values: Vec<f64>) {
    values.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name}: n={} p50={:.0} ms p90={:.0} ms min={:.0} ms max={:.0} ms",
        values.len(),
        percentile(&values, 0.5),
        percentile(&values, 0.9),
        values.first().copied().unwrap_or(f64::NAN),
        values.last().copied().unwrap_or(f64::NAN)
    );
}

pub async fn run(args: VoiceBench) -> anyhow::Result<()> {
    let long = Arc::new(AtomicBool::new(false));
    let model = scripted_model(Duration::from_millis(args.ttft_ms), long.clone()).await?;
    let config = std::env::temp_dir().join(format!("souk-bench-voice-{}.toml", std::process::id()));
    let neural = match &args.neural {
        Some(dir) => {
            let file = |name: &str| dir.join(name).display().to_string();
            let on = |stage: &str| args.neural_stages.iter().any(|s| s == stage);
            let mut config = format!("[agent]\nonnxruntime = \"{}\"\n", file("libonnxruntime.so"));
            if on("silero") {
                config += &format!(
                    "vad = \"silero\"\nsilero_model = \"{}\"\n",
                    file("silero_vad.onnx")
                );
            }
            if on("smart-turn") {
                config += &format!(
                    "turn_detector = \"smart_turn\"\nsmart_turn_model = \"{}\"\n",
                    file("smart-turn.onnx")
                );
            }
            config
        }
        None => String::new(),
    };
    std::fs::write(
        &config,
        format!("{neural}[agent.llm]\nbase_url = \"{model}\"\nmodel = \"scripted\"\n"),
    )?;
    let server = start_server(
        &args.souk,
        &["--config", config.to_str().context("utf-8 path")?],
    )?;
    let http = reqwest::Client::new();
    let room = "bench-voice";
    let token = room_token(&http, &server.url, room, "shopper-bot", "shopper").await?;
    let (tx, agent_audio) = mpsc::channel(1024);
    let options = ClientOptions {
        audio_in: Some(tx),
        ..ClientOptions::default()
    };
    let client = Client::connect(&server.url, &token, options).await?;
    let feed = AudioFeed::default();
    client.publish_audio(feed.clone()).await?;
    let mut mic = Microphone {
        feed,
        encoder: OpusOut::new(),
        next_tag: 0,
    };
    let mut ears = Ears {
        agent_audio,
        sent: Vec::new(),
    };
    let started = http
        .post(format!("{}/dev/agent", server.url))
        .query(&[("room", room), ("shop", "demo")])
        .send()
        .await?;
    if !started.status().is_success() {
        bail!("the agent did not start: {}", started.text().await?);
    }
    let voice = EspeakTts { rate_wpm: 160 };
    let question = voice
        .synthesize("where is my order", "en")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let interruption = voice
        .synthesize("wait, I have another question please", "en")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let quiet = |arrivals: &[Instant], now: Instant| {
        arrivals
            .last()
            .is_some_and(|t| now.duration_since(*t) > AGENT_DONE)
    };
    // The agent speaks its disclosure once the bot's audio reaches it.
    ears.listen(&mut mic, Duration::from_secs(60), |a, _, now| quiet(a, now))
        .await?;
    println!(
        "voice bench: {} turns, {} barge-ins, scripted model time to first token {} ms, {}",
        args.turns,
        args.barge_ins,
        args.ttft_ms,
        match &args.neural {
            Some(_) => args.neural_stages.join(" + "),
            None => "earshot, no turn model".into(),
        }
    );

    let mut voice_to_voice = Vec::new();
    for _ in 0..args.turns {
        let (_, last_voiced) = mic.say(&question);
        let arrivals = ears
            .listen(&mut mic, Duration::from_secs(30), |a, sent, now| {
                sent.iter().any(|(t, _)| *t == last_voiced) && quiet(a, now)
            })
            .await?;
        let spoken_end = ears.sent_at(last_voiced).context("the question went out")?;
        let first = arrivals
            .iter()
            .find(|t| **t > spoken_end)
            .context("the agent answered")?;
        voice_to_voice.push(first.duration_since(spoken_end).as_secs_f64() * 1000.0);
    }

    long.store(true, Ordering::Relaxed);
    let mut barge_in = Vec::new();
    mic.say(&question);
    for _ in 0..args.barge_ins {
        // Wait until the agent has been speaking for a second, then talk over it.
        let arrivals = ears
            .listen(&mut mic, Duration::from_secs(30), |a, _, now| {
                a.first()
                    .is_some_and(|first| now.duration_since(*first) > Duration::from_secs(1))
                    && !quiet(a, now)
            })
            .await?;
        drop(arrivals);
        let (onset, _) = mic.say(&interruption);
        let arrivals = ears
            .listen(&mut mic, Duration::from_secs(30), |a, sent, now| {
                sent.iter().any(|(t, _)| *t == onset)
                    && a.last()
                        .is_none_or(|t| now.duration_since(*t) > Duration::from_millis(400))
            })
            .await?;
        let onset_at = ears.sent_at(onset).context("the interruption went out")?;
        let last = arrivals
            .iter()
            .rfind(|t| **t <= Instant::now())
            .copied()
            .unwrap_or(onset_at);
        barge_in.push(last.saturating_duration_since(onset_at).as_secs_f64() * 1000.0);
    }

    summary(
        "voice to voice (last voiced frame sent -> first agent frame received)",
        voice_to_voice,
    );
    summary(
        "barge-in (first voiced frame sent over the agent -> last agent frame received)",
        barge_in,
    );
    let metrics = http
        .get(format!("{}/metrics", server.url))
        .send()
        .await?
        .text()
        .await?;
    for stage in souk_agent::voice::telemetry::STAGES {
        let value = |what: &str| {
            metrics
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!(
                        "souk_agent_voice_stage_seconds_{what}{{stage=\"{stage}\"}} "
                    ))
                })
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        if let (Some(sum), Some(count)) = (value("sum"), value("count")) {
            println!(
                "server stage {stage}: mean {:.0} ms after the end of speech (n={count})",
                sum / count.max(1.0) * 1000.0
            );
        }
    }
    let verdicts: Vec<String> = ["complete", "unfinished"]
        .iter()
        .filter_map(|verdict| {
            let prefix = format!("souk_agent_voice_turn_verdicts_total{{verdict=\"{verdict}\"}} ");
            let count = metrics.lines().find_map(|l| l.strip_prefix(&prefix))?;
            Some(format!("{} {verdict}", count.trim()))
        })
        .collect();
    println!("turn detector verdicts: {}", verdicts.join(", "));
    let _ = std::fs::remove_file(config);
    drop(server);
    Ok(())
}
