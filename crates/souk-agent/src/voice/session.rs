//! One spoken conversation: the shopper's audio in, the agent's voice out.
//!
//! [`VoiceSession`] is the driver around [`TurnTaking`]: it turns Opus frames into
//! speech events and transcripts, carries out what the turn-taking asks (start or cancel
//! the model, speak a sentence, pause, resume or stop playout) and reports back what was
//! actually played, frame by frame, from the playout buffer. Every frame it queues is
//! tagged with its generation, sentence and position, so a cancelled reply's audio is
//! dropped, never played, and an interruption knows which words were heard.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use souk_client::audio::{AudioFeed, OutFrame, ReceivedAudio};
use souk_proto::live::{AgentStatus, Caption};
use souk_proto::signal::AgentEvent;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::audio::{level_dbov, OpusIn, OpusOut, FRAME, RATE};
use super::stt::{Stt, SttError, SttStream, Transcript};
use super::telemetry::{TurnTimes, VoiceStats};
use super::tts::{Tts, TtsError};
use super::turn_detector::{TurnDetector, TurnSoFar, TURN_AUDIO_SAMPLES};
use super::vad::{NewVad, Vad, VadEvent};
use crate::language::{self, Notice};
use crate::text::{Author, ChatLine, Handoff, ReplyError, TextAgent, TextReply};
use crate::turn::{Generation, Input, Message, Output, Role, State, TurnConfig, TurnTaking};

/// Audio kept from before speech was detected, so the recogniser hears the first word.
const PREROLL: usize = RATE as usize * 3 / 10;
/// How long what the agent said can come back as echo (speech plus a room's delay).
const ECHO_WINDOW: Duration = Duration::from_secs(8);
/// How often playout progress is read back.
const PROGRESS_EVERY: Duration = Duration::from_millis(20);

/// The stages a voice conversation runs through.
pub struct VoiceStages {
    pub stt: Arc<dyn Stt>,
    pub tts: Arc<dyn Tts>,
    /// The model with the shop's tools and policy.
    pub agent: Arc<TextAgent>,
    /// Always speak this language, whatever the shopper speaks.
    pub pinned_language: Option<String>,
    /// Holds the turn open when it is unfinished; without one, silence decides.
    pub turn_detector: Option<Arc<dyn TurnDetector>>,
    /// The speech detector for this conversation.
    pub new_vad: NewVad,
}

/// How the session meets the room.
pub struct VoiceIo {
    /// The shopper's audio frames.
    pub audio_in: mpsc::Receiver<ReceivedAudio>,
    /// The agent's playout buffer.
    pub feed: AudioFeed,
    /// Captions and status to announce in the room.
    pub announce: mpsc::UnboundedSender<AgentEvent>,
}

/// What a session leaves behind: the conversation as the model saw it (what the
/// shopper heard), and the times of each answered turn.
#[derive(Debug, Clone)]
pub struct VoiceRecord {
    pub context: Vec<Message>,
    pub turns: Vec<TurnTimes>,
}

/// What finished in the background.
enum Done {
    Transcript(Instant, Result<Transcript, SttError>),
    /// A listening turn detector's verdict, on the audio up to speech edge N.
    TurnVerdict(u64, bool),
    ReplyText(Generation, String),
    Reply(Generation, Result<TextReply, ReplyError>),
    Speech(Generation, usize, Result<Vec<i16>, TtsError>),
}

/// The sentences of the reply being spoken, in the order they must play.
#[derive(Default)]
struct Playout {
    generation: Option<Generation>,
    /// Synthesized sentences waiting for the ones before them.
    ready: BTreeMap<usize, Vec<i16>>,
    next_segment: usize,
    /// Frames per queued sentence, to turn a frame into a fraction heard.
    lengths: HashMap<usize, u32>,
    texts: HashMap<usize, String>,
    synthesis: Vec<JoinHandle<()>>,
}

impl Playout {
    fn reset(&mut self, generation: Option<Generation>) {
        for task in self.synthesis.drain(..) {
            task.abort();
        }
        *self = Playout {
            generation,
            ..Playout::default()
        };
    }
}

/// A frame's tag: which generation, sentence and frame it is.
fn tag(generation: Generation, segment: usize, frame: u32) -> u64 {
    (generation << 32) | ((segment as u64 & 0xffff) << 16) | (frame as u64 & 0xffff)
}

fn untag(tag: u64) -> (Generation, usize, u32) {
    (
        tag >> 32,
        ((tag >> 16) & 0xffff) as usize,
        (tag & 0xffff) as u32,
    )
}

/// The disclosure is generation 0, which the turn-taking never uses.
const DISCLOSURE: Generation = 0;

pub struct VoiceSession {
    /// The agent's identity in the room, and the shopper's.
    identity: String,
    shopper: String,
    stages: VoiceStages,
    io: VoiceIo,
    turn: TurnTaking,
    vad: Box<dyn Vad>,
    /// The turn's audio so far, for a turn detector that listens.
    turn_audio: Option<VecDeque<i16>>,
    /// Counts speech starts and ends, so a verdict on audio that the shopper has since
    /// added to is dropped.
    speech_edges: u64,
    /// A reply that hands over, held until it is spoken: a reply started before the turn
    /// ended is thrown away if the shopper goes on, and so is its handoff.
    pending_handoff: Option<(Generation, Handoff)>,
    handed_off: bool,
    /// The turn detector's last verdict on the turn going on.
    verdict: Option<bool>,
    opus_in: OpusIn,
    opus_out: OpusOut,
    recognising: Option<Box<dyn SttStream>>,
    preroll: VecDeque<i16>,
    /// How much of the shopper's audio has been heard, and when the last of it arrived.
    heard: Duration,
    lang: String,
    reply: Option<(Generation, JoinHandle<()>)>,
    playout: Playout,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    times: HashMap<Generation, TurnTimes>,
    /// When the shopper's last speech really ended (the detector notices a little later),
    /// and when its transcript came.
    speech_end: Option<Instant>,
    stt_final: Option<Instant>,
    /// Every finished turn's times, for the session's record.
    turns: Vec<TurnTimes>,
    /// Messages of the context already looked at for interruptions.
    context_seen: usize,
    /// Sentences the agent began saying lately, to recognise its own echo.
    spoken: VecDeque<(Instant, String)>,
    stats: Arc<VoiceStats>,
}

impl VoiceSession {
    pub fn new(
        identity: &str,
        shopper: &str,
        stages: VoiceStages,
        io: VoiceIo,
        turn: TurnConfig,
        stats: Arc<VoiceStats>,
    ) -> VoiceSession {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let vad = (stages.new_vad)();
        let lang = stages
            .pinned_language
            .clone()
            .unwrap_or_else(|| "en".into());
        VoiceSession {
            identity: identity.to_owned(),
            shopper: shopper.to_owned(),
            stages,
            io,
            turn: TurnTaking::new(turn),
            vad,
            turn_audio: None,
            speech_edges: 0,
            pending_handoff: None,
            handed_off: false,
            verdict: None,
            opus_in: OpusIn::new(),
            opus_out: OpusOut::new(),
            recognising: None,
            preroll: VecDeque::with_capacity(PREROLL),
            heard: Duration::ZERO,
            lang,
            reply: None,
            playout: Playout::default(),
            done_tx,
            done_rx,
            times: HashMap::new(),
            speech_end: None,
            stt_final: None,
            turns: Vec::new(),
            context_seen: 0,
            spoken: VecDeque::new(),
            stats,
        }
    }

    /// Runs until `stop` fires or the shopper's audio ends.
    pub async fn run(mut self, stop: CancellationToken) -> VoiceRecord {
        self.status("listening", None, None);
        self.disclose().await;
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let deadline = self
                .turn
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = stop.cancelled() => break,
                frame = self.io.audio_in.recv() => match frame {
                    Some(frame) => self.on_audio(&frame.opus),
                    None => break,
                },
                Some(done) = self.done_rx.recv() => self.on_done(done),
                _ = progress.tick() => self.on_progress(),
                _ = tokio::time::sleep_until(deadline) => self.turn.handle_timeout(Instant::now()),
            }
            self.act();
        }
        self.io.feed.clear();
        self.playout.reset(None);
        if let Some((_, task)) = self.reply.take() {
            task.abort();
        }
        VoiceRecord {
            context: self.turn.context().to_vec(),
            turns: self.turns,
        }
    }

    /// Says, and shows, that this is an AI, before anything else.
    async fn disclose(&mut self) {
        let text = Notice::Disclosure.text(&self.lang).to_owned();
        self.caption(&self.identity.clone(), &text, false);
        match self.stages.tts.synthesize(&text, &self.lang).await {
            Ok(pcm) => self.play(&pcm, |i| tag(DISCLOSURE, 0, i)),
            Err(e) => self.status("error", Some(e.code), Some(&e.message)),
        }
    }

    fn on_audio(&mut self, opus: &[u8]) {
        let pcm = self.opus_in.decode(opus);
        let arrived = Instant::now();
        self.heard += Duration::from_micros(pcm.len() as u64 * 1_000_000 / RATE as u64);
        for &s in &pcm {
            if self.preroll.len() == PREROLL {
                self.preroll.pop_front();
            }
            self.preroll.push_back(s);
        }
        if let Some(turn_audio) = self.turn_audio.as_mut() {
            turn_audio.extend(&pcm);
            let excess = turn_audio.len().saturating_sub(TURN_AUDIO_SAMPLES);
            turn_audio.drain(..excess);
        }
        if let Some(stream) = self.recognising.as_mut() {
            stream.push(&pcm);
            if let Some(text) = stream.take_interim() {
                if !self.is_echo(&text, arrived) {
                    self.turn.handle_input(
                        arrived,
                        Input::Transcript {
                            text,
                            is_final: false,
                        },
                    );
                }
            }
        }
        for event in self.vad.push(&pcm) {
            // The detector decides a little after the fact; the turn-taking gets the
            // moment it happened.
            let at = |t: Duration| {
                arrived
                    .checked_sub(self.heard.saturating_sub(t))
                    .unwrap_or(arrived)
            };
            match event {
                VadEvent::SpeechStarted { at: t } => {
                    self.speech_edges += 1;
                    let mut stream = self.stages.stt.open();
                    stream.push(&self.preroll.iter().copied().collect::<Vec<_>>());
                    self.recognising = Some(stream);
                    if self.listening_detector().is_some() && self.turn_audio.is_none() {
                        self.turn_audio = Some(self.preroll.clone());
                    }
                    self.turn.handle_input(at(t), Input::SpeechStarted);
                }
                VadEvent::SpeechEnded { at: t } => {
                    self.speech_edges += 1;
                    self.speech_end = Some(at(t));
                    self.turn.handle_input(at(t), Input::SpeechEnded);
                    self.ask_listening_detector(at(t));
                    if let Some(stream) = self.recognising.take() {
                        let done = self.done_tx.clone();
                        tokio::spawn(async move {
                            let result = stream.finish().await;
                            let _ = done.send(Done::Transcript(Instant::now(), result));
                        });
                    }
                }
            }
        }
    }

    fn listening_detector(&self) -> Option<Arc<dyn TurnDetector>> {
        self.stages.turn_detector.clone().filter(|d| d.listens())
    }

    /// Asks a detector that listens whether the turn sounds finished, while the words are
    /// still being transcribed. The turn stays open until it answers (or the cap).
    fn ask_listening_detector(&mut self, at: Instant) {
        let (Some(detector), Some(turn_audio)) = (self.listening_detector(), &self.turn_audio)
        else {
            return;
        };
        self.turn.handle_input(at, Input::TurnComplete(false));
        let audio: Vec<i16> = turn_audio.iter().copied().collect();
        let (edge, lang, done) = (self.speech_edges, self.lang.clone(), self.done_tx.clone());
        // A model runs for tens of milliseconds: not on the session's task.
        tokio::task::spawn_blocking(move || {
            let turn = TurnSoFar {
                words: "",
                lang: &lang,
                audio: &audio,
            };
            let _ = done.send(Done::TurnVerdict(edge, detector.complete(&turn)));
        });
    }

    /// A turn detector's verdict: to the turn-taking, the turn's record and `/metrics`.
    fn on_verdict(&mut self, now: Instant, complete: bool) {
        self.stats.turn_verdict(complete);
        self.verdict = Some(complete);
        if let Some(times) = self.reply.as_ref().and_then(|(g, _)| self.times.get_mut(g)) {
            times.turn_complete = Some(complete);
        }
        self.turn.handle_input(now, Input::TurnComplete(complete));
    }

    fn on_done(&mut self, done: Done) {
        let now = Instant::now();
        match done {
            Done::TurnVerdict(edge, complete) => {
                if edge == self.speech_edges {
                    self.on_verdict(now, complete);
                }
            }
            Done::Transcript(at, Ok(transcript)) => {
                if transcript.text.is_empty() {
                    return;
                }
                if self.is_echo(&transcript.text, now) {
                    // The agent heard itself through the shopper's microphone: that is
                    // not the shopper taking the turn, so the pause ends as for noise.
                    tracing::debug!(
                        heard = transcript.text,
                        "dropped a transcript of the agent's own voice"
                    );
                    return;
                }
                if self.stages.pinned_language.is_none() {
                    if let Some(lang) = transcript
                        .lang
                        .clone()
                        .or_else(|| language::detect(&transcript.text).map(str::to_owned))
                    {
                        self.lang = lang;
                    }
                }
                self.caption(&self.shopper.clone(), &transcript.text, false);
                self.stt_final = Some(at);
                if let Some(detector) = self.stages.turn_detector.as_ref().filter(|d| !d.listens())
                {
                    let turn = TurnSoFar {
                        words: &transcript.text,
                        lang: &self.lang,
                        audio: &[],
                    };
                    let complete = detector.complete(&turn);
                    self.on_verdict(now, complete);
                }
                self.turn.handle_input(
                    now,
                    Input::Transcript {
                        text: transcript.text,
                        is_final: true,
                    },
                );
            }
            Done::Transcript(_, Err(e)) => {
                tracing::warn!("speech recognition failed: {e}");
                self.status("error", Some(e.code), Some(&e.message));
            }
            Done::ReplyText(generation, text) => {
                if let Some(t) = self.times.get_mut(&generation) {
                    t.llm_first_token.get_or_insert(now);
                }
                self.turn
                    .handle_input(now, Input::ReplyText { generation, text });
            }
            Done::Reply(generation, result) => {
                match result {
                    Ok(reply) => {
                        if let Some(handoff) = reply.handoff {
                            if self.playout.generation == Some(generation) {
                                self.hand_off(handoff);
                            } else {
                                self.pending_handoff = Some((generation, handoff));
                            }
                        }
                    }
                    Err(e) => {
                        self.stats.failures.add(e.code);
                        self.status("error", Some(e.code), Some(&e.message));
                    }
                }
                self.turn.handle_input(now, Input::ReplyDone { generation });
            }
            Done::Speech(generation, segment, result) => {
                if self.playout.generation != Some(generation) {
                    return;
                }
                let pcm = match result {
                    Ok(pcm) => {
                        if let Some(t) = self.times.get_mut(&generation) {
                            t.tts_first_audio.get_or_insert(now);
                        }
                        pcm
                    }
                    Err(e) => {
                        self.status("error", Some(e.code), Some(&e.message));
                        Vec::new()
                    }
                };
                self.playout.ready.insert(segment, pcm);
                self.queue_ready_sentences(generation);
            }
        }
    }

    /// Whether `heard` is mostly words the agent itself said in the last few seconds: its
    /// own voice, picked up by a microphone without echo cancellation.
    fn is_echo(&mut self, heard: &str, now: Instant) -> bool {
        while self
            .spoken
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > ECHO_WINDOW)
        {
            self.spoken.pop_front();
        }
        let words = crate::words::lowercase_words;
        let said: std::collections::HashSet<String> = self
            .spoken
            .iter()
            .flat_map(|(_, text)| words(text))
            .collect();
        let heard = words(heard);
        let echoed = heard.iter().filter(|w| said.contains(*w)).count();
        heard.len() >= 2 && echoed * 10 >= heard.len() * 7
    }

    /// Hands the sentences that are next in line to the playout buffer.
    fn queue_ready_sentences(&mut self, generation: Generation) {
        while let Some(pcm) = self.playout.ready.remove(&self.playout.next_segment) {
            let segment = self.playout.next_segment;
            self.playout.next_segment += 1;
            if pcm.is_empty() {
                // Nothing to play (synthesis failed): the sentence counts as said.
                self.turn.handle_input(
                    Instant::now(),
                    Input::SegmentPlayed {
                        generation,
                        segment,
                    },
                );
                continue;
            }
            self.playout
                .lengths
                .insert(segment, pcm.len().div_ceil(FRAME) as u32);
            self.play(&pcm, |i| tag(generation, segment, i));
        }
    }

    /// Reads back which frames went out and tells the turn-taking how far it got.
    fn on_progress(&mut self) {
        for (sent, at) in self.io.feed.take_sent() {
            let (generation, segment, frame) = untag(sent);
            if generation == DISCLOSURE || self.playout.generation != Some(generation) {
                continue;
            }
            let Some(&length) = self.playout.lengths.get(&segment) else {
                continue;
            };
            if frame == 0 {
                if segment == 0 {
                    if let Some(mut t) = self.times.remove(&generation) {
                        t.first_audio_sent = Some(at);
                        self.stats.turn(&t);
                        self.turns.push(t);
                    }
                }
                if let Some(text) = self.playout.texts.get(&segment).cloned() {
                    self.caption(&self.identity.clone(), &text, false);
                    self.spoken.push_back((at, text));
                }
            }
            let input = if frame + 1 >= length {
                Input::SegmentPlayed {
                    generation,
                    segment,
                }
            } else {
                Input::Played {
                    generation,
                    segment,
                    fraction: (frame + 1) as f64 / length as f64,
                }
            };
            self.turn.handle_input(at, input);
        }
    }

    /// Carries out what the turn-taking asked for.
    fn act(&mut self) {
        while let Some(output) = self.turn.poll_output() {
            if self.handed_off && matches!(output, Output::Generate { .. } | Output::State(_)) {
                // Handed over: the agent finishes its notice, then only captions the
                // shopper until staff take the call; its status stays "handoff".
                continue;
            }
            match output {
                Output::Generate {
                    generation,
                    context,
                } => self.generate(generation, context),
                Output::Cancel { generation } => {
                    self.take_pending_handoff(generation);
                    if self.reply.as_ref().is_some_and(|(g, _)| *g == generation) {
                        let (_, task) = self.reply.take().expect("checked");
                        task.abort();
                    }
                    if self.playout.generation == Some(generation) {
                        // Its audio must never play, queued or not.
                        self.io.feed.clear();
                        self.playout.reset(None);
                    }
                    self.times.remove(&generation);
                }
                Output::Speak {
                    generation,
                    segment,
                    text,
                } => {
                    if let Some(handoff) = self.take_pending_handoff(generation) {
                        self.hand_off(handoff);
                    }
                    self.speak(generation, segment, text)
                }
                Output::PausePlayout => self.io.feed.set_paused(true),
                Output::ResumePlayout => self.io.feed.set_paused(false),
                Output::StopPlayout => {
                    self.io.feed.clear();
                    self.io.feed.set_paused(false);
                    self.playout.reset(None);
                }
                Output::State(state) => {
                    if matches!(state, State::Listening | State::Thinking | State::Speaking) {
                        // The turn is over (or was noise): the next one starts its own
                        // audio and verdict. Speech over the agent (paused) may be a turn.
                        self.turn_audio = None;
                        self.verdict = None;
                    }
                    let name = match state {
                        State::Listening | State::UserSpeaking | State::EndOfTurn => "listening",
                        State::Thinking => "thinking",
                        State::Speaking => "speaking",
                        State::Paused => "paused",
                    };
                    self.status(name, None, None);
                }
            }
        }
        // An interruption is settled (with words, at once; without, once words come):
        // the caption of that answer is corrected to what was heard.
        let context = self.turn.context();
        let cut: Vec<String> = context[self.context_seen.min(context.len())..]
            .iter()
            .filter(|m| m.role == Role::Agent && m.interrupted)
            .map(|m| m.text.clone())
            .collect();
        self.context_seen = context.len();
        for heard in cut {
            self.caption(&self.identity.clone(), &heard, true);
        }
    }

    fn generate(&mut self, generation: Generation, context: Vec<Message>) {
        if let Some((_, task)) = self.reply.take() {
            task.abort();
        }
        self.times.insert(
            generation,
            TurnTimes {
                speech_end: self.speech_end,
                stt_final: self.stt_final,
                turn_complete: self.verdict,
                ..TurnTimes::default()
            },
        );
        let history: Vec<ChatLine> = context
            .into_iter()
            .map(|m| ChatLine {
                author: if m.role == Role::User {
                    Author::Shopper
                } else {
                    Author::Agent
                },
                text: if m.interrupted {
                    format!("{} [the shopper interrupted here]", m.text)
                } else {
                    m.text
                },
                images: Vec::new(),
                looked_up: Vec::new(),
            })
            .collect();
        let (agent, shopper, lang, done) = (
            self.stages.agent.clone(),
            self.shopper.clone(),
            self.lang.clone(),
            self.done_tx.clone(),
        );
        let task = tokio::spawn(async move {
            let mut streamed = false;
            let result = {
                let mut on_text = |t: &str| {
                    streamed = true;
                    let _ = done.send(Done::ReplyText(generation, t.to_owned()));
                };
                agent
                    .answer(generation, &shopper, &history, &lang, &mut on_text)
                    .await
            };
            // A handoff or a failure has words of its own that were not streamed.
            let unstreamed = match &result {
                Ok(reply) if !streamed || reply.handoff.is_some() => Some(reply.text.clone()),
                Err(e) => Some(e.notice.clone()),
                Ok(_) => None,
            };
            if let Some(text) = unstreamed {
                let _ = done.send(Done::ReplyText(generation, format!(" {text}")));
            }
            let _ = done.send(Done::Reply(generation, result));
        });
        self.reply = Some((generation, task));
    }

    /// The handoff held for `generation`, if any (a cancelled reply drops its own).
    fn take_pending_handoff(&mut self, generation: Generation) -> Option<Handoff> {
        match self.pending_handoff.take() {
            Some((g, handoff)) if g == generation => Some(handoff),
            other => {
                self.pending_handoff = other;
                None
            }
        }
    }

    /// The reply that hands over is being spoken: staff are told now.
    fn hand_off(&mut self, handoff: Handoff) {
        self.handed_off = true;
        self.stats
            .handoffs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.status("handoff", Some("transfer_to_human"), Some(&handoff.summary));
    }

    fn speak(&mut self, generation: Generation, segment: usize, text: String) {
        if self.playout.generation != Some(generation) {
            self.io.feed.clear();
            self.playout.reset(Some(generation));
        }
        self.playout.texts.insert(segment, text.clone());
        let (tts, lang, done) = (
            self.stages.tts.clone(),
            self.lang.clone(),
            self.done_tx.clone(),
        );
        self.playout.synthesis.push(tokio::spawn(async move {
            let result = tts.synthesize(&text, &lang).await;
            let _ = done.send(Done::Speech(generation, segment, result));
        }));
    }

    /// Queues `pcm` for playout as 20 ms Opus frames (the last padded with silence),
    /// each as soon as it is encoded, so the first goes out while the rest encode.
    fn play(&mut self, pcm: &[i16], tag_of: impl Fn(u32) -> u64) {
        for (i, chunk) in pcm.chunks(FRAME).enumerate() {
            let mut frame = chunk.to_vec();
            frame.resize(FRAME, 0);
            self.io.feed.push(OutFrame {
                tag: tag_of(i as u32),
                level: level_dbov(&frame),
                opus: self.opus_out.encode(&frame),
            });
        }
    }

    fn caption(&self, speaker: &str, text: &str, interrupted: bool) {
        let _ = self.io.announce.send(AgentEvent::Caption(Caption {
            speaker: speaker.to_owned(),
            text: text.to_owned(),
            lang: self.lang.clone(),
            is_final: true,
            ai: speaker == self.identity,
            interrupted,
        }));
    }

    fn status(&self, state: &str, code: Option<&str>, message: Option<&str>) {
        let _ = self.io.announce.send(AgentEvent::Status(AgentStatus {
            identity: self.identity.clone(),
            state: state.to_owned(),
            code: code.map(str::to_owned),
            message: message.map(str::to_owned),
        }));
    }
}

#[cfg(test)]
mod tests {
    //! Scripted timelines through the whole driver: real speech audio (espeak-ng) and the
    //! real detector, with recognition, the model and synthesis scripted with delays.
    //! These fakes exist for these tests only.
    use super::*;
    use crate::llm::{Llm, LlmRequest, Reply};
    use crate::llm_stream::StreamEvent;
    use crate::shop::Shop;
    use crate::text::Policy;
    use crate::voice::stt::SttFuture;
    use crate::voice::tts::{EspeakTts, TtsFuture};
    use std::sync::Mutex;

    /// Hears each utterance as the next scripted text, 100 ms after it ends.
    struct ScriptedStt(Mutex<VecDeque<&'static str>>);
    struct ScriptedStream(Option<&'static str>);

    impl Stt for ScriptedStt {
        fn open(&self) -> Box<dyn SttStream> {
            Box::new(ScriptedStream(self.0.lock().unwrap().pop_front()))
        }
    }

    impl SttStream for ScriptedStream {
        fn push(&mut self, _: &[i16]) {}
        fn finish(self: Box<Self>) -> SttFuture {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(Transcript {
                    text: self.0.unwrap_or("").into(),
                    lang: Some("en".into()),
                })
            })
        }
    }

    /// Answers every request with `answer` after a 200 ms time to first token; with
    /// [`DOWN`], the model server is unreachable.
    struct ScriptedLlm(&'static str);

    const DOWN: &str = "";
    /// The model asks for a person.
    const HANDOFF: &str = "HANDOFF";

    impl Llm for ScriptedLlm {
        fn start(&self, request: LlmRequest) -> Reply {
            let answer = self.0;
            Reply::spawn(request.generation, move |tx| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if answer == DOWN {
                    let _ = tx
                        .send(Err(crate::llm::LlmError::Unreachable(
                            "connection refused".into(),
                        )))
                        .await;
                    return;
                }
                let mut tool_calls = Vec::new();
                if answer == HANDOFF {
                    tool_calls.push(crate::llm_stream::ToolCall {
                        id: "call-1".into(),
                        name: "transfer_to_human".into(),
                        arguments: r#"{"reason": "asked for a person"}"#.into(),
                    });
                } else {
                    for word in answer.split_inclusive(' ') {
                        let _ = tx.send(Ok(StreamEvent::Text(word.into()))).await;
                    }
                }
                let _ = tx
                    .send(Ok(StreamEvent::Finished {
                        reason: "stop".into(),
                        tool_calls,
                    }))
                    .await;
                let _ = tx.send(Ok(StreamEvent::Done)).await;
            })
        }
    }

    /// A 300 Hz tone of 80 ms per word, after 30 ms.
    struct ToneTts;

    impl Tts for ToneTts {
        fn synthesize(&self, text: &str, _: &str) -> TtsFuture {
            let samples = text.split_whitespace().count() * RATE as usize * 80 / 1000;
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok((0..samples)
                    .map(|i| {
                        ((i as f64 * 300.0 * std::f64::consts::TAU / RATE as f64).sin() * 8000.0)
                            as i16
                    })
                    .collect())
            })
        }
    }

    struct Rig {
        audio: mpsc::Sender<ReceivedAudio>,
        feed: AudioFeed,
        announced: mpsc::UnboundedReceiver<AgentEvent>,
        stop: CancellationToken,
        session: JoinHandle<VoiceRecord>,
        encoder: OpusOut,
    }

    impl Rig {
        fn start(heard: Vec<&'static str>, answer: &'static str) -> Rig {
            Rig::start_with(heard, answer, None)
        }

        fn start_with(
            heard: Vec<&'static str>,
            answer: &'static str,
            turn_detector: Option<Arc<dyn TurnDetector>>,
        ) -> Rig {
            let (audio, audio_in) = mpsc::channel(500);
            let (announce, announced) = mpsc::unbounded_channel();
            let feed = AudioFeed::default();
            let agent = TextAgent::new(
                Arc::new(ScriptedLlm(answer)),
                Arc::new(Shop::default()),
                Policy {
                    shop_name: "Demo".into(),
                    pinned_language: None,
                    vision: false,
                    spoken: true,
                },
            );
            let stages = VoiceStages {
                stt: Arc::new(ScriptedStt(Mutex::new(heard.into()))),
                tts: Arc::new(ToneTts),
                agent: Arc::new(agent),
                pinned_language: None,
                turn_detector,
                new_vad: crate::voice::vad::earshot(),
            };
            let io = VoiceIo {
                audio_in,
                feed: feed.clone(),
                announce,
            };
            let session = VoiceSession::new(
                "agent",
                "layla",
                stages,
                io,
                TurnConfig::default(),
                Arc::default(),
            );
            let stop = CancellationToken::new();
            let session = tokio::spawn(session.run(stop.clone()));
            // The sender side of the playout buffer, at the media clock.
            let player = feed.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                loop {
                    tick.tick().await;
                    player.next_frame(Instant::now());
                }
            });
            Rig {
                audio,
                feed,
                announced,
                stop,
                session,
                encoder: OpusOut::new(),
            }
        }

        /// Sends `pcm` as the shopper's microphone would: a 20 ms frame every 20 ms.
        async fn say(&mut self, pcm: &[i16]) {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for chunk in pcm.chunks(FRAME) {
                tick.tick().await;
                let mut frame = chunk.to_vec();
                frame.resize(FRAME, 0);
                let opus = self.encoder.encode(&frame);
                let _ = self
                    .audio
                    .send(ReceivedAudio {
                        participant_sid: "PA_layla".into(),
                        track_id: "TR_mic".into(),
                        opus,
                        after_gap: false,
                    })
                    .await;
            }
        }

        async fn wait_for(&mut self, what: &str, pick: impl Fn(&AgentEvent) -> bool) -> AgentEvent {
            tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    let event = self.announced.recv().await.expect("the session runs");
                    if pick(&event) {
                        return event;
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no {what} in time"))
        }

        /// Waits for the session's status to become `state`.
        async fn wait_for_status(&mut self, state: &str) -> AgentStatus {
            let event = self
                .wait_for(
                    &format!("the {state} status"),
                    |e| matches!(e, AgentEvent::Status(s) if s.state == state),
                )
                .await;
            let AgentEvent::Status(status) = event else {
                unreachable!("picked a status")
            };
            status
        }

        /// Asks `question`, then keeps quiet for 1.5 s.
        async fn ask(&mut self, question: &str) {
            let audio = [silence(500), speech(question).await, silence(1500)].concat();
            self.say(&audio).await;
        }

        /// Asks `question`, between silences, and waits until the agent answers aloud.
        async fn ask_until_answering(&mut self, question: &str) {
            let audio = [silence(500), speech(question).await, silence(600)].concat();
            self.say(&audio).await;
            self.wait_for_status("speaking").await;
        }

        async fn finish(self) -> VoiceRecord {
            self.stop.cancel();
            self.session.await.unwrap()
        }
    }

    /// An answer long enough to talk over.
    const LONG: &str = "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen.";

    fn silence(ms: usize) -> Vec<i16> {
        vec![0; RATE as usize * ms / 1000]
    }

    async fn speech(text: &str) -> Vec<i16> {
        EspeakTts { rate_wpm: 160 }
            .synthesize(text, "en")
            .await
            .expect("scripts/test installs libespeak-ng1")
    }

    fn caption_by<'a>(event: &'a AgentEvent, speaker: &str) -> Option<&'a Caption> {
        match event {
            AgentEvent::Caption(c) if c.speaker == speaker => Some(c),
            _ => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spoken_question_gets_a_spoken_answer_with_captions_and_stage_times() {
        let mut rig = Rig::start(
            vec!["where is my order"],
            "It shipped today. It arrives on Monday.",
        );
        let disclosure = rig
            .wait_for("the disclosure", |e| caption_by(e, "agent").is_some())
            .await;
        assert!(caption_by(&disclosure, "agent")
            .unwrap()
            .text
            .contains("AI assistant"));
        rig.ask("where is my order").await;
        let heard = rig
            .wait_for("the shopper's caption", |e| {
                caption_by(e, "layla").is_some()
            })
            .await;
        assert_eq!(
            caption_by(&heard, "layla").unwrap().text,
            "where is my order"
        );
        let first = rig
            .wait_for("the answer's caption", |e| caption_by(e, "agent").is_some())
            .await;
        assert_eq!(
            caption_by(&first, "agent").unwrap().text,
            "It shipped today."
        );
        rig.wait_for("the second sentence", |e| {
            caption_by(e, "agent").is_some_and(|c| c.text == "It arrives on Monday.")
        })
        .await;
        rig.wait_for_status("listening").await;
        let record = rig.finish().await;
        assert_eq!(
            record
                .context
                .last()
                .map(|m| (m.text.as_str(), m.interrupted)),
            Some(("It shipped today. It arrives on Monday.", false))
        );
        let [stt, llm, tts, sent] = record.turns[0].after_speech();
        let (stt, llm, tts, sent) = (stt.unwrap(), llm.unwrap(), tts.unwrap(), sent.unwrap());
        assert!(
            stt <= llm && llm <= tts && tts <= sent,
            "{stt:?} {llm:?} {tts:?} {sent:?}"
        );
        // The end of the turn (300 ms) bounds it from below; the scripted stages add
        // 100 + 200 + 30 ms, started preemptively.
        assert!(sent >= Duration::from_millis(300), "{sent:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn talking_over_the_agent_stops_it_and_only_what_was_heard_is_kept() {
        let long = LONG;
        let mut rig = Rig::start(vec!["tell me about the sneakers", "stop please wait"], long);
        rig.ask_until_answering("tell me about the sneakers").await;
        // Half a second into the answer, the shopper talks over it.
        rig.say(&silence(500)).await;
        let queued_before = rig.feed.queued();
        rig.say(&speech("stop please wait, I have a question").await)
            .await;
        rig.wait_for_status("paused").await;
        let cut = rig
            .wait_for("the interrupted caption", |e| {
                caption_by(e, "agent").is_some_and(|c| c.interrupted)
            })
            .await;
        assert_eq!(rig.feed.queued(), 0, "the rest of the answer was dropped");
        assert!(queued_before > 0);
        rig.say(&silence(1000)).await;
        let record = rig.finish().await;
        let agent = record
            .context
            .iter()
            .find(|m| m.role == Role::Agent)
            .expect("the cut-off answer is in the context");
        assert!(agent.interrupted);
        assert_eq!(agent.text, caption_by(&cut, "agent").unwrap().text);
        assert!(
            long.starts_with(&agent.text) && agent.text.len() < long.len(),
            "kept '{}'",
            agent.text
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_model_that_is_down_is_apologised_for_aloud_and_reported() {
        let mut rig = Rig::start(vec!["where is my order"], DOWN);
        rig.ask("where is my order").await;
        let status = rig.wait_for_status("error").await;
        assert_eq!(status.code.as_deref(), Some("llm_unreachable"));
        let sorry = rig
            .wait_for("the spoken apology", |e| {
                caption_by(e, "agent").is_some_and(|c| c.text.contains("unavailable"))
            })
            .await;
        assert!(Notice::Unavailable
            .text("en")
            .starts_with(&caption_by(&sorry, "agent").unwrap().text));
        rig.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_agents_own_voice_coming_back_does_not_interrupt_it() {
        let long = LONG;
        // The second "utterance" is the agent's own words, heard through the microphone.
        let mut rig = Rig::start(
            vec!["tell me about the sneakers", "seven eight nine ten"],
            long,
        );
        rig.ask_until_answering("tell me about the sneakers").await;
        rig.say(&silence(300)).await;
        rig.say(&[speech("seven eight nine ten").await, silence(3500)].concat())
            .await;
        // Paused by the sound, it goes on where it stopped, to the end.
        let state = |name: &'static str| move |e: &AgentEvent| matches!(e, AgentEvent::Status(s) if s.state == name);
        rig.wait_for("the pause", state("paused")).await;
        rig.wait_for("speaking again", state("speaking")).await;
        rig.wait_for("the end of the answer", state("listening"))
            .await;
        let record = rig.finish().await;
        let agent: Vec<&Message> = record
            .context
            .iter()
            .filter(|m| m.role == Role::Agent)
            .collect();
        assert_eq!(agent.len(), 1, "{:?}", record.context);
        assert!(
            !agent[0].interrupted,
            "the echo did not count as an interruption"
        );
        assert_eq!(agent[0].text, long, "the whole answer was said");
        assert!(
            record
                .context
                .iter()
                .all(|m| m.text != "seven eight nine ten"),
            "the echo is not the shopper's turn"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unfinished_words_hold_the_turn_open_up_to_the_cap() {
        use crate::voice::turn_detector::TrailingWords;
        let mut rig = Rig::start_with(
            vec!["where is my"],
            "It shipped today.",
            Some(Arc::new(TrailingWords)),
        );
        rig.ask("where is my order").await;
        rig.wait_for("the answer", |e| {
            caption_by(e, "agent").is_some_and(|c| c.text == "It shipped today.")
        })
        .await;
        let record = rig.finish().await;
        let [_, _, _, sent] = record.turns[0].after_speech();
        // "where is my" is unfinished: the turn waits for more words, up to 2.5 s.
        assert!(sent.unwrap() >= Duration::from_millis(2400), "{sent:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_turn_that_sounds_unfinished_is_held_open_and_a_finished_one_is_not() {
        use crate::voice::onnx::{test_file, Model};
        use crate::voice::turn_detector::SmartTurn;
        let model = Model::load(
            &test_file("libonnxruntime.so"),
            &test_file("smart-turn.onnx"),
        );
        let detector: Arc<dyn TurnDetector> = Arc::new(SmartTurn::new(Arc::new(model.unwrap())));
        let (mut sent_after, mut verdicts) = (Vec::new(), Vec::new());
        for question in [
            "I would like to buy the",
            "Do you have these canvas sneakers in size thirty eight?",
        ] {
            // The recogniser's words say nothing either way: only the sound decides.
            let mut rig = Rig::start_with(vec!["something"], "Yes.", Some(detector.clone()));
            rig.ask(question).await;
            rig.wait_for("the answer", |e| {
                caption_by(e, "agent").is_some_and(|c| c.text == "Yes.")
            })
            .await;
            let record = rig.finish().await;
            sent_after.push(record.turns[0].after_speech()[3].unwrap());
            verdicts.push(record.turns[0].turn_complete);
        }
        // Unfinished: the turn waits up to its 2.5 s cap. Finished: once the model has
        // answered, well before.
        assert!(
            sent_after[0] >= Duration::from_millis(2400),
            "{sent_after:?}"
        );
        assert!(
            sent_after[1] < Duration::from_millis(2000),
            "{sent_after:?}"
        );
        // Each turn's record says what the model judged.
        assert_eq!(verdicts, [Some(false), Some(true)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handoff_is_announced_when_its_notice_is_spoken() {
        let mut rig = Rig::start(vec!["a person please", "hello are you there"], HANDOFF);
        rig.ask("can I talk to a person please").await;
        let status = rig.wait_for_status("handoff").await;
        assert_eq!(status.code.as_deref(), Some("transfer_to_human"));
        rig.wait_for("the handoff notice spoken", |e| {
            caption_by(e, "agent").is_some_and(|c| c.text.contains("member of our team"))
        })
        .await;
        // Handed over, it answers no more: asked again, it only captions the shopper.
        rig.ask("hello are you there").await;
        rig.wait_for("the shopper's caption", |e| {
            caption_by(e, "layla").is_some()
        })
        .await;
        let record = rig.finish().await;
        let answers = record
            .context
            .iter()
            .filter(|m| m.role == Role::Agent)
            .count();
        assert_eq!(answers, 1, "{:?}", record.context);
    }
}
