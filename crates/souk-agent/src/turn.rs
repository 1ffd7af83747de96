//! Who speaks when, as a sans-IO state machine.
//!
//! The drivers report what happened ([`Input`]: speech onset and offset from the VAD,
//! transcripts, the language model's text, playout progress) with the time, call
//! [`TurnTaking::handle_timeout`] when [`TurnTaking::poll_timeout`] says, and carry out
//! what [`TurnTaking::poll_output`] asks. It owns the conversation context, so the model
//! always sees what the shopper actually heard.
//!
//! The rules, as the best voice agents do it:
//! - The shopper's turn ends after a short silence, unless a turn model says the sentence
//!   is unfinished; then it waits longer, up to a cap.
//! - The model starts on the transcript at the first silence (preemptive generation); its
//!   reply is thrown away if the shopper goes on, and is not spoken before the turn ends.
//! - While the agent speaks, the shopper's speech onset pauses the agent's audio at once.
//!   The pause becomes an interruption after enough speech or enough words; backchannels
//!   ("mhm", "ok", "نعم") and short noises resume the agent instead.
//! - An interruption stops the audio, cancels the model and the synthesis, and commits to
//!   the context only what was played, marked as interrupted. If no words follow within a
//!   while, it was noise: the agent goes on where it stopped.
//! - Every reply has a generation; audio, text and progress of any other generation are
//!   ignored, so stale speech is never played.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::words::{complete_sentences, substantive_words};

/// Numbers one reply (one language-model request and its speech).
pub type Generation = u64;

#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// Silence that ends the shopper's turn.
    pub end_of_turn_silence: Duration,
    /// How long a turn model may hold the turn open after the shopper stops.
    pub max_end_of_turn_wait: Duration,
    /// Speech over the agent that interrupts it, whatever the words.
    pub interruption_speech: Duration,
    /// Words (not backchannels) over the agent that interrupt it at once.
    pub interruption_words: usize,
    /// After an interruption without words, how long to wait for words before resuming.
    pub false_interruption_timeout: Duration,
    /// How long after speech ends its transcript may take: an interruption is not taken
    /// for noise while the shopper still speaks, nor before their words could arrive.
    pub transcript_grace: Duration,
    /// A longer turn is committed in parts, so a monologue does not grow without bound.
    pub max_user_turn: Duration,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            end_of_turn_silence: Duration::from_millis(300),
            max_end_of_turn_wait: Duration::from_millis(2500),
            interruption_speech: Duration::from_millis(400),
            interruption_words: 2,
            false_interruption_timeout: Duration::from_secs(2),
            transcript_grace: Duration::from_secs(1),
            max_user_turn: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nobody speaks.
    Listening,
    /// The shopper speaks.
    UserSpeaking,
    /// The shopper stopped; the turn ends unless they go on.
    EndOfTurn,
    /// The turn ended; the reply is being generated.
    Thinking,
    /// The agent's audio plays.
    Speaking,
    /// The shopper started speaking over the agent; its audio is paused.
    Paused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Agent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub text: String,
    /// The agent was cut off: `text` is what the shopper heard.
    pub interrupted: bool,
}

impl Message {
    pub fn new(role: Role, text: String, interrupted: bool) -> Message {
        Message {
            role,
            text,
            interrupted,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The VAD heard speech start.
    SpeechStarted,
    /// The VAD heard speech stop.
    SpeechEnded,
    /// Speech-to-text for the current speech: interim text replaces the previous interim;
    /// final text is kept.
    Transcript { text: String, is_final: bool },
    /// A turn model's verdict on the words so far.
    TurnComplete(bool),
    /// Streamed text of a reply.
    ReplyText {
        generation: Generation,
        text: String,
    },
    /// The reply's text is complete.
    ReplyDone { generation: Generation },
    /// Playout progress: `fraction` of sentence `segment` has been heard.
    Played {
        generation: Generation,
        segment: usize,
        fraction: f64,
    },
    /// Sentence `segment` has been heard in full.
    SegmentPlayed {
        generation: Generation,
        segment: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Start the language model on `context`.
    Generate {
        generation: Generation,
        context: Vec<Message>,
    },
    /// Stop the language model and the synthesis of `generation`.
    Cancel {
        generation: Generation,
    },
    /// Synthesize and play sentence `segment` of `generation`, after the ones before it.
    Speak {
        generation: Generation,
        segment: usize,
        text: String,
    },
    PausePlayout,
    ResumePlayout,
    /// Drop everything queued for playout.
    StopPlayout,
    State(State),
}

/// The reply being generated or spoken.
#[derive(Debug)]
struct Reply {
    generation: Generation,
    /// What was already heard before this generation (a reply resumed after noise).
    heard_before: String,
    sentences: Vec<String>,
    /// Streamed text not yet a whole sentence.
    tail: String,
    done: bool,
    /// Sentences handed to synthesis; only once the turn has ended.
    spoken: usize,
    may_speak: bool,
    /// The shopper's words it answers, while generated preemptively.
    answers: String,
    /// Playout position: whole sentences heard, and the share of the next one.
    heard: usize,
    heard_fraction: f64,
}

impl Reply {
    fn new(generation: Generation, answers: String) -> Reply {
        Reply {
            generation,
            heard_before: String::new(),
            sentences: Vec::new(),
            tail: String::new(),
            done: false,
            spoken: 0,
            may_speak: false,
            answers,
            heard: 0,
            heard_fraction: 0.0,
        }
    }

    /// The current sentence split where playout stopped, cut back to a word boundary:
    /// (heard, unheard).
    fn current_sentence_split(&self) -> (String, String) {
        let Some(current) = self.sentences.get(self.heard) else {
            return (String::new(), String::new());
        };
        let words: Vec<&str> = current.split_whitespace().collect();
        let n = (words.len() as f64 * self.heard_fraction).floor() as usize;
        (words[..n].join(" "), words[n..].join(" "))
    }

    /// What the shopper heard: whole sentences, then the heard share of the current one.
    fn heard_text(&self) -> String {
        let mut parts = vec![self.heard_before.clone()];
        parts.extend(self.sentences.iter().take(self.heard).cloned());
        parts.push(self.current_sentence_split().0);
        join_nonempty(parts)
    }

    /// What is left to say after what was heard.
    fn unheard_text(&self) -> String {
        let mut parts = vec![self.current_sentence_split().1];
        parts.extend(self.sentences.iter().skip(self.heard + 1).cloned());
        parts.push(self.tail.trim().to_string());
        join_nonempty(parts)
    }

    fn full_text(&self) -> String {
        let mut parts = vec![self.heard_before.clone()];
        parts.extend(self.sentences.iter().cloned());
        join_nonempty(parts)
    }

    fn finished(&self) -> bool {
        self.done && self.heard >= self.sentences.len()
    }
}

/// An interruption without words yet: the agent resumes unless words come.
#[derive(Debug)]
struct Tentative {
    heard: String,
    unheard: String,
    deadline: Instant,
}

#[derive(Debug)]
pub struct TurnTaking {
    config: TurnConfig,
    state: State,
    context: Vec<Message>,
    next_generation: Generation,
    reply: Option<Reply>,
    /// The shopper's words in the current speech: kept finals, then the latest interim.
    finals: String,
    interim: String,
    turn_started: Option<Instant>,
    speech_started: Option<Instant>,
    silence_since: Option<Instant>,
    turn_model_waits: bool,
    tentative: Option<Tentative>,
    outputs: VecDeque<Output>,
}

impl TurnTaking {
    pub fn new(config: TurnConfig) -> TurnTaking {
        TurnTaking {
            config,
            state: State::Listening,
            context: Vec::new(),
            next_generation: 1,
            reply: None,
            finals: String::new(),
            interim: String::new(),
            turn_started: None,
            speech_started: None,
            silence_since: None,
            turn_model_waits: false,
            tentative: None,
            outputs: VecDeque::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The conversation as the model will see it next.
    pub fn context(&self) -> &[Message] {
        &self.context
    }

    /// The only generation whose audio may play now; playout drops any other.
    pub fn playable_generation(&self) -> Option<Generation> {
        match self.state {
            State::Speaking | State::Thinking => self.reply.as_ref().map(|r| r.generation),
            _ => None,
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`TurnTaking::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut deadlines = Vec::new();
        if let Some(t) = self.tentative.as_ref().filter(|_| !self.shopper_speaking()) {
            deadlines.push(t.deadline);
        }
        match self.state {
            State::Paused if !self.only_backchannels() => {
                if let Some(start) = self.speech_started {
                    deadlines.push(start + self.config.interruption_speech);
                }
            }
            State::EndOfTurn => {
                if let Some(since) = self.silence_since {
                    deadlines.push(if self.turn_model_waits {
                        since + self.config.max_end_of_turn_wait
                    } else {
                        since + self.config.end_of_turn_silence
                    });
                }
            }
            State::UserSpeaking => {
                if let Some(start) = self.turn_started {
                    deadlines.push(start + self.config.max_user_turn);
                }
            }
            _ => {}
        }
        deadlines.into_iter().min()
    }

    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::SpeechStarted => self.on_speech_started(now),
            Input::SpeechEnded => self.on_speech_ended(now),
            Input::Transcript { text, is_final } => self.on_transcript(now, text, is_final),
            Input::TurnComplete(complete) => self.turn_model_waits = !complete,
            Input::ReplyText { generation, text } => {
                if let Some(reply) = self.current_reply(generation) {
                    reply.tail.push_str(&text);
                    let (sentences, tail) = complete_sentences(&reply.tail);
                    reply.sentences.extend(sentences);
                    reply.tail = tail;
                    self.speak_ready_sentences();
                }
            }
            Input::ReplyDone { generation } => {
                if let Some(reply) = self.current_reply(generation) {
                    let tail = std::mem::take(&mut reply.tail);
                    if !tail.trim().is_empty() {
                        reply.sentences.push(tail.trim().to_string());
                    }
                    reply.done = true;
                    self.speak_ready_sentences();
                    self.finish_reply_if_heard();
                }
            }
            Input::Played {
                generation,
                segment,
                fraction,
            } => {
                if let Some(reply) = self.current_reply(generation) {
                    reply.heard = segment;
                    reply.heard_fraction = fraction.clamp(0.0, 1.0);
                    if self.state == State::Thinking {
                        self.set_state(State::Speaking);
                    }
                }
            }
            Input::SegmentPlayed {
                generation,
                segment,
            } => {
                if let Some(reply) = self.current_reply(generation) {
                    reply.heard = segment + 1;
                    reply.heard_fraction = 0.0;
                    self.finish_reply_if_heard();
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(t) = &self.tentative {
            if now >= t.deadline && !self.shopper_speaking() {
                self.resume_after_noise();
            }
        }
        match self.state {
            State::Paused => {
                let long_enough = self
                    .speech_started
                    .is_some_and(|start| now >= start + self.config.interruption_speech);
                if long_enough && !self.only_backchannels() {
                    self.interrupt(now);
                }
            }
            State::EndOfTurn => {
                let Some(since) = self.silence_since else {
                    return;
                };
                let quiet = now >= since + self.config.end_of_turn_silence;
                let capped = now >= since + self.config.max_end_of_turn_wait;
                if quiet && (!self.turn_model_waits || capped) {
                    self.end_turn();
                }
            }
            State::UserSpeaking
                if self
                    .turn_started
                    .is_some_and(|start| now >= start + self.config.max_user_turn) =>
            {
                // A monologue: keep what was said so far, and listen on.
                let text = self.take_words();
                if !text.is_empty() {
                    self.push_message(Role::User, text, false);
                }
                self.turn_started = Some(now);
            }
            _ => {}
        }
    }

    fn on_speech_started(&mut self, now: Instant) {
        self.speech_started = Some(now);
        self.silence_since = None;
        match self.state {
            State::Listening => {
                self.turn_started = Some(now);
                self.set_state(State::UserSpeaking);
            }
            State::EndOfTurn => {
                // The shopper goes on: a preemptive reply no longer answers them.
                self.cancel_reply();
                self.set_state(State::UserSpeaking);
            }
            State::Thinking => {
                // Nothing of the reply was heard yet: the shopper takes the turn back, and
                // what they said before joins what they say now. A reply resumed after
                // noise keeps what was heard of it.
                let reply = self.reply.take();
                if let Some(reply) = &reply {
                    self.outputs.push_back(Output::Cancel {
                        generation: reply.generation,
                    });
                }
                match reply.filter(|r| !r.heard_before.is_empty()) {
                    Some(resumed) => self.push_message(Role::Agent, resumed.heard_before, true),
                    None => {
                        if self.context.last().is_some_and(|m| m.role == Role::User) {
                            self.finals = self.context.pop().expect("checked").text;
                        }
                    }
                }
                self.turn_started = Some(now);
                self.set_state(State::UserSpeaking);
            }
            State::Speaking => {
                self.forget_words();
                self.outputs.push_back(Output::PausePlayout);
                self.set_state(State::Paused);
            }
            State::UserSpeaking | State::Paused => {}
        }
    }

    fn on_speech_ended(&mut self, now: Instant) {
        self.silence_since = Some(now);
        let grace = self.config.transcript_grace;
        if let Some(t) = self.tentative.as_mut() {
            t.deadline = t.deadline.max(now + grace);
        }
        match self.state {
            State::UserSpeaking => {
                self.set_state(State::EndOfTurn);
                self.start_preemptive_reply();
            }
            State::Paused => {
                // Short, or only backchannels: the agent goes on.
                self.forget_words();
                self.outputs.push_back(Output::ResumePlayout);
                self.set_state(State::Speaking);
            }
            _ => {}
        }
    }

    fn on_transcript(&mut self, now: Instant, text: String, is_final: bool) {
        if is_final {
            if !self.finals.is_empty() {
                self.finals.push(' ');
            }
            self.finals.push_str(text.trim());
            self.interim.clear();
        } else {
            self.interim = text.trim().to_string();
        }
        let substantive = substantive_words(&self.heard_words()).len();
        if substantive > 0 {
            if let Some(t) = self.tentative.take() {
                // Words after all: the interruption stands.
                self.push_message(Role::Agent, t.heard, true);
            }
        }
        if self.state == State::Paused && substantive >= self.config.interruption_words {
            self.interrupt(now);
        }
        // The final words of a turn that has gone quiet: the preemptive reply starts on
        // them now, or starts again if it was answering earlier, interim words.
        if self.state == State::EndOfTurn && is_final {
            if self
                .reply
                .as_ref()
                .is_some_and(|r| r.answers != self.heard_words())
            {
                self.cancel_reply();
            }
            self.start_preemptive_reply();
        }
    }

    /// Stops the agent for the shopper. With words, for good; without, tentatively.
    fn interrupt(&mut self, now: Instant) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        self.outputs.push_back(Output::StopPlayout);
        self.outputs.push_back(Output::Cancel {
            generation: reply.generation,
        });
        let heard = reply.heard_text();
        if substantive_words(&self.heard_words()).is_empty() {
            self.tentative = Some(Tentative {
                heard,
                unheard: reply.unheard_text(),
                deadline: now + self.config.false_interruption_timeout,
            });
        } else {
            self.push_message(Role::Agent, heard, true);
        }
        self.turn_started = Some(now);
        self.set_state(State::UserSpeaking);
    }

    /// No words came after an interruption: it was noise, and the agent says the rest.
    fn resume_after_noise(&mut self) {
        let Some(t) = self.tentative.take() else {
            return;
        };
        if t.unheard.is_empty() {
            self.push_message(Role::Agent, t.heard, false);
            return;
        }
        let mut reply = Reply::new(self.take_generation(), String::new());
        reply.heard_before = t.heard;
        reply.sentences = vec![t.unheard];
        reply.done = true;
        reply.may_speak = true;
        self.reply = Some(reply);
        self.forget_words();
        self.speak_ready_sentences();
        self.set_state(State::Thinking);
    }

    fn start_preemptive_reply(&mut self) {
        let words = self.heard_words();
        if words.is_empty() || self.reply.is_some() {
            return;
        }
        let generation = self.take_generation();
        let mut context = self.context.clone();
        context.push(Message::new(Role::User, words.clone(), false));
        self.outputs.push_back(Output::Generate {
            generation,
            context,
        });
        self.reply = Some(Reply::new(generation, words));
    }

    fn end_turn(&mut self) {
        // The turn model's verdict was on this turn's words only.
        self.turn_model_waits = false;
        let words = self.take_words();
        if words.is_empty() {
            // Silence or noise only: nothing to answer.
            self.cancel_reply();
            self.set_state(State::Listening);
            return;
        }
        if self.reply.as_ref().is_some_and(|r| r.answers != words) {
            self.cancel_reply();
        }
        self.push_message(Role::User, words.clone(), false);
        if self.reply.is_none() {
            let generation = self.take_generation();
            self.outputs.push_back(Output::Generate {
                generation,
                context: self.context.clone(),
            });
            self.reply = Some(Reply::new(generation, words));
        }
        if let Some(reply) = self.reply.as_mut() {
            reply.may_speak = true;
        }
        self.speak_ready_sentences();
        self.set_state(State::Thinking);
        self.finish_reply_if_heard();
    }

    fn speak_ready_sentences(&mut self) {
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        if !reply.may_speak {
            return;
        }
        while reply.spoken < reply.sentences.len() {
            self.outputs.push_back(Output::Speak {
                generation: reply.generation,
                segment: reply.spoken,
                text: reply.sentences[reply.spoken].clone(),
            });
            reply.spoken += 1;
        }
    }

    fn finish_reply_if_heard(&mut self) {
        if !self
            .reply
            .as_ref()
            .is_some_and(|r| r.may_speak && r.finished())
        {
            return;
        }
        let reply = self.reply.take().expect("checked above");
        let text = reply.full_text();
        if !text.is_empty() {
            self.push_message(Role::Agent, text, false);
        }
        self.set_state(State::Listening);
    }

    fn cancel_reply(&mut self) {
        if let Some(reply) = self.reply.take() {
            self.outputs.push_back(Output::Cancel {
                generation: reply.generation,
            });
        }
    }

    fn current_reply(&mut self, generation: Generation) -> Option<&mut Reply> {
        self.reply.as_mut().filter(|r| r.generation == generation)
    }

    /// Whether the shopper is speaking now (speech started and has not ended).
    fn shopper_speaking(&self) -> bool {
        self.speech_started.is_some() && self.silence_since.is_none()
    }

    /// Speech that is so far only backchannels is not taking the turn, however long.
    fn only_backchannels(&self) -> bool {
        let words = self.heard_words();
        !words.is_empty() && substantive_words(&words).is_empty()
    }

    fn heard_words(&self) -> String {
        match (self.finals.is_empty(), self.interim.is_empty()) {
            (_, true) => self.finals.clone(),
            (true, false) => self.interim.clone(),
            (false, false) => format!("{} {}", self.finals, self.interim),
        }
    }

    fn take_words(&mut self) -> String {
        let words = self.heard_words();
        self.forget_words();
        words
    }

    fn forget_words(&mut self) {
        self.finals.clear();
        self.interim.clear();
    }

    fn take_generation(&mut self) -> Generation {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }

    fn push_message(&mut self, role: Role, text: String, interrupted: bool) {
        self.context.push(Message::new(role, text, interrupted));
    }

    fn set_state(&mut self, state: State) {
        if self.state != state {
            self.state = state;
            self.outputs.push_back(Output::State(state));
        }
    }
}

fn join_nonempty(parts: Vec<String>) -> String {
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A scripted timeline: inputs at given times, timeouts handled as they fall due, and
    /// every output recorded with its time.
    struct Script {
        turns: TurnTaking,
        start: Instant,
        now: Instant,
        log: Vec<(Duration, Output)>,
    }

    impl Script {
        fn new() -> Script {
            let now = Instant::now();
            Script {
                turns: TurnTaking::new(TurnConfig::default()),
                start: now,
                now,
                log: Vec::new(),
            }
        }

        /// Moves the clock to `at` (ms since the start), firing timeouts on the way.
        fn at(&mut self, at: u64) -> &mut Script {
            let target = self.start + Duration::from_millis(at);
            while let Some(deadline) = self.turns.poll_timeout().filter(|d| *d <= target) {
                self.now = deadline.max(self.now);
                self.turns.handle_timeout(self.now);
                self.drain();
            }
            self.now = target;
            self
        }

        fn input(&mut self, input: Input) -> &mut Script {
            self.turns.handle_input(self.now, input);
            self.drain();
            self
        }

        fn says(&mut self, text: &str, is_final: bool) -> &mut Script {
            self.input(Input::Transcript {
                text: text.into(),
                is_final,
            })
        }

        fn drain(&mut self) {
            while let Some(out) = self.turns.poll_output() {
                self.log.push((self.now - self.start, out));
            }
        }

        /// The last generation asked for.
        fn generation(&self) -> Generation {
            self.log
                .iter()
                .rev()
                .find_map(|(_, o)| match o {
                    Output::Generate { generation, .. } => Some(*generation),
                    _ => None,
                })
                .expect("a generation was started")
        }

        fn when(&self, wanted: &Output) -> Option<Duration> {
            self.log.iter().find(|(_, o)| o == wanted).map(|(t, _)| *t)
        }

        fn spoken(&self, generation: Generation) -> Vec<String> {
            self.log
                .iter()
                .filter_map(|(_, o)| match o {
                    Output::Speak {
                        generation: g,
                        text,
                        ..
                    } if *g == generation => Some(text.clone()),
                    _ => None,
                })
                .collect()
        }

        /// The shopper asks something and the agent starts answering with `reply`, its
        /// first sentence half heard at `playing_at`.
        fn agent_answering(&mut self, reply: &str, playing_at: u64) -> Generation {
            self.at(0).input(Input::SpeechStarted);
            self.at(600).says("where is my order", true);
            self.at(700).input(Input::SpeechEnded);
            let g = self.generation();
            self.at(900).input(Input::ReplyText {
                generation: g,
                text: reply.into(),
            });
            self.input(Input::ReplyDone { generation: g });
            self.at(playing_at).input(Input::Played {
                generation: g,
                segment: 0,
                fraction: 0.5,
            });
            assert_eq!(self.turns.state(), State::Speaking);
            g
        }

        /// The agent answering `text` from 1.5 s, half of it heard so far.
        fn agent_halfway(&mut self, text: &str) -> Generation {
            let g = self.agent_answering(text, 1500);
            self.input(Input::Played {
                generation: g,
                segment: 0,
                fraction: 0.5,
            });
            g
        }
    }

    fn agent_messages(turns: &TurnTaking) -> Vec<&Message> {
        turns
            .context()
            .iter()
            .filter(|m| m.role == Role::Agent)
            .collect()
    }

    #[test]
    fn a_transcript_after_the_speech_ended_starts_the_reply_at_once() {
        let mut s = Script::new();
        s.at(0).input(Input::SpeechStarted);
        s.at(800).input(Input::SpeechEnded);
        s.at(950).says("where is my order", true);
        let g = s.generation();
        assert_eq!(
            s.when(&Output::Generate {
                generation: g,
                context: vec![Message::new(Role::User, "where is my order".into(), false)]
            }),
            Some(950 * MS),
            "the model starts when the words arrive, not when the turn ends"
        );
        s.at(1200);
        assert_eq!(s.when(&Output::State(State::Thinking)), Some(1100 * MS));
        assert_eq!(s.generation(), g, "the turn's end keeps that reply");
    }

    #[test]
    fn final_words_that_differ_from_the_interim_restart_the_reply_at_once() {
        let mut s = Script::new();
        s.at(0).input(Input::SpeechStarted);
        s.at(600).says("where is my", false);
        s.at(800).input(Input::SpeechEnded);
        let first = s.generation();
        s.at(950).says("where is my order", true);
        let second = s.generation();
        assert_ne!(first, second);
        assert_eq!(
            s.when(&Output::Cancel { generation: first }),
            Some(950 * MS)
        );
        assert_eq!(
            s.when(&Output::Generate {
                generation: second,
                context: vec![Message::new(Role::User, "where is my order".into(), false)]
            }),
            Some(950 * MS),
            "restarted on the final words without waiting for the turn to end"
        );
        s.at(1200);
        assert_eq!(s.generation(), second, "the end of the turn keeps it");
    }

    #[test]
    fn a_turn_ends_after_the_silence_and_the_preemptive_reply_is_spoken() {
        let mut s = Script::new();
        s.at(0).input(Input::SpeechStarted);
        s.at(500).says("do you ship to Jakarta", true);
        s.at(800).input(Input::SpeechEnded);
        let g = s.generation();
        assert_eq!(
            s.when(&Output::Generate {
                generation: g,
                context: vec![Message::new(
                    Role::User,
                    "do you ship to Jakarta".into(),
                    false
                )]
            }),
            Some(800 * MS),
            "the model starts at the first silence"
        );
        s.input(Input::ReplyText {
            generation: g,
            text: "Yes. We ship".into(),
        });
        assert!(
            s.spoken(g).is_empty(),
            "nothing is spoken before the turn ends"
        );
        s.at(1200);
        assert_eq!(
            s.when(&Output::State(State::Thinking)),
            Some(1100 * MS),
            "300 ms of silence end the turn"
        );
        assert_eq!(s.spoken(g), ["Yes."]);
        s.input(Input::ReplyText {
            generation: g,
            text: " in two days.".into(),
        });
        s.input(Input::ReplyDone { generation: g });
        assert_eq!(s.spoken(g), ["Yes.", "We ship in two days."]);
        s.input(Input::Played {
            generation: g,
            segment: 0,
            fraction: 0.1,
        });
        assert_eq!(s.turns.state(), State::Speaking);
        s.input(Input::SegmentPlayed {
            generation: g,
            segment: 0,
        });
        s.input(Input::SegmentPlayed {
            generation: g,
            segment: 1,
        });
        assert_eq!(s.turns.state(), State::Listening);
        assert_eq!(
            agent_messages(&s.turns)[0].text,
            "Yes. We ship in two days."
        );
        assert!(!agent_messages(&s.turns)[0].interrupted);
    }

    #[test]
    fn going_on_after_a_pause_throws_the_preemptive_reply_away() {
        let mut s = Script::new();
        s.at(0).input(Input::SpeechStarted);
        s.at(400).says("I want the red one", true);
        s.at(500).input(Input::SpeechEnded);
        let first = s.generation();
        s.at(700).input(Input::SpeechStarted);
        assert!(s.when(&Output::Cancel { generation: first }).is_some());
        s.at(1200).says("in size M", true);
        s.at(1300).input(Input::SpeechEnded);
        s.at(1700);
        let second = s.generation();
        assert_ne!(first, second);
        assert_eq!(s.turns.context()[0].text, "I want the red one in size M");
        // Text that still arrives for the first generation is stale.
        s.input(Input::ReplyText {
            generation: first,
            text: "Sure.".into(),
        });
        assert!(s.spoken(first).is_empty());
    }

    #[test]
    fn a_turn_model_holds_the_turn_open_up_to_the_cap() {
        let mut s = Script::new();
        s.at(0).input(Input::SpeechStarted);
        s.at(400).says("I ordered it on", true);
        s.input(Input::TurnComplete(false));
        s.at(500).input(Input::SpeechEnded);
        s.at(2000);
        assert_eq!(
            s.turns.state(),
            State::EndOfTurn,
            "an unfinished sentence keeps the turn"
        );
        s.at(3100);
        assert_eq!(
            s.when(&Output::State(State::Thinking)),
            Some(3000 * MS),
            "capped at 2.5 s"
        );
        // The verdict held for that turn only: the next one ends after the usual silence.
        let g = s.generation();
        s.input(Input::ReplyDone { generation: g });
        s.at(4000).input(Input::SpeechStarted);
        s.at(4400).says("the fifth of May", true);
        s.at(4500).input(Input::SpeechEnded);
        s.at(4900);
        assert_eq!(s.turns.state(), State::Thinking);
    }

    #[test]
    fn silence_or_noise_alone_gets_no_reply() {
        let mut s = Script::new();
        s.at(0).input(Input::SpeechStarted);
        s.at(300).input(Input::SpeechEnded);
        s.at(1000);
        assert_eq!(s.turns.state(), State::Listening);
        assert!(!s
            .log
            .iter()
            .any(|(_, o)| matches!(o, Output::Generate { .. })));
        assert!(s.turns.context().is_empty());
    }

    #[test]
    fn speech_over_the_agent_pauses_it_at_once_and_interrupts_after_400_ms() {
        let mut s = Script::new();
        let g = s.agent_answering(
            "Your order left Shenzhen yesterday. It arrives Friday.",
            1500,
        );
        s.at(2000).input(Input::SpeechStarted);
        assert_eq!(
            s.when(&Output::PausePlayout),
            Some(2000 * MS),
            "paused at the onset"
        );
        s.at(2399);
        assert_eq!(s.turns.state(), State::Paused);
        s.at(2500);
        assert_eq!(
            s.when(&Output::StopPlayout),
            Some(2400 * MS),
            "interrupted after 400 ms of speech"
        );
        assert_eq!(
            s.when(&Output::Cancel { generation: g }),
            Some(2400 * MS),
            "model and synthesis cancelled"
        );
        assert_eq!(
            s.turns.playable_generation(),
            None,
            "no audio of that reply may play"
        );
    }

    #[test]
    fn two_words_over_the_agent_interrupt_before_400_ms() {
        let mut s = Script::new();
        let g = s.agent_answering("Your order left Shenzhen yesterday.", 1500);
        s.at(2000).input(Input::SpeechStarted);
        s.at(2250).says("wait stop", false);
        assert_eq!(s.when(&Output::Cancel { generation: g }), Some(2250 * MS));
    }

    #[test]
    fn backchannels_do_not_interrupt_however_long() {
        let mut s = Script::new();
        s.agent_answering(
            "Your order left Shenzhen yesterday. It arrives Friday.",
            1500,
        );
        for (onset, words) in [
            (2000, "mhm"),
            (3000, "okay okay"),
            (4000, "نعم"),
            (5000, "嗯嗯"),
        ] {
            s.at(onset).input(Input::SpeechStarted);
            s.at(onset + 150).says(words, true);
            s.at(onset + 600).input(Input::SpeechEnded);
            assert_eq!(s.turns.state(), State::Speaking, "{words}: resumed");
        }
        assert!(s.when(&Output::StopPlayout).is_none());
        assert_eq!(
            s.log
                .iter()
                .filter(|(_, o)| *o == Output::ResumePlayout)
                .count(),
            4
        );
    }

    #[test]
    fn a_short_noise_resumes_the_agent() {
        let mut s = Script::new();
        s.agent_answering("Your order left Shenzhen yesterday.", 1500);
        s.at(2000).input(Input::SpeechStarted);
        s.at(2200).input(Input::SpeechEnded);
        assert_eq!(s.when(&Output::ResumePlayout), Some(2200 * MS));
        assert_eq!(s.turns.state(), State::Speaking);
    }

    #[test]
    fn an_interruption_commits_only_what_was_heard() {
        let mut s = Script::new();
        let g = s.agent_answering(
            "Your order left Shenzhen yesterday. It arrives on Friday.",
            1500,
        );
        s.input(Input::SegmentPlayed {
            generation: g,
            segment: 0,
        });
        s.input(Input::Played {
            generation: g,
            segment: 1,
            fraction: 0.5,
        });
        s.at(2000).input(Input::SpeechStarted);
        s.at(2200).says("no I mean the other order", false);
        let agent = agent_messages(&s.turns);
        assert_eq!(agent.len(), 1);
        assert_eq!(
            agent[0].text,
            "Your order left Shenzhen yesterday. It arrives"
        );
        assert!(agent[0].interrupted);
        // The shopper's turn goes on, and the next reply sees the truncated context.
        s.says("no I mean the other order", true);
        s.at(2800).input(Input::SpeechEnded);
        s.at(3200);
        let context = s
            .log
            .iter()
            .rev()
            .find_map(|(_, o)| match o {
                Output::Generate { context, .. } => Some(context.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(context.len(), 3);
        assert_eq!(
            context[1].text,
            "Your order left Shenzhen yesterday. It arrives"
        );
        assert_eq!(context[2].text, "no I mean the other order");
    }

    #[test]
    fn an_interruption_without_words_resumes_where_it_stopped_after_2_s() {
        let mut s = Script::new();
        let g = s.agent_halfway("Your order left Shenzhen yesterday morning.");
        // A door slams and a cough follows: 600 ms of "speech", no words.
        s.at(2000).input(Input::SpeechStarted);
        s.at(2600).input(Input::SpeechEnded);
        assert_eq!(s.when(&Output::StopPlayout), Some(2400 * MS));
        s.at(4399);
        assert!(
            s.turns.playable_generation().is_none(),
            "still waiting for words"
        );
        s.at(4500);
        let resumed = s.generation_spoken_after(g);
        assert_eq!(
            s.spoken(resumed),
            ["Shenzhen yesterday morning."],
            "the rest, from where it stopped"
        );
        s.input(Input::Played {
            generation: resumed,
            segment: 0,
            fraction: 0.2,
        });
        s.input(Input::SegmentPlayed {
            generation: resumed,
            segment: 0,
        });
        let agent = agent_messages(&s.turns);
        assert_eq!(agent.len(), 1);
        assert_eq!(agent[0].text, "Your order left Shenzhen yesterday morning.");
        assert!(!agent[0].interrupted);
    }

    #[test]
    fn a_long_interruption_whose_words_come_at_its_end_stands() {
        // A recogniser that gives words only when the speech ends: 2.5 s of speech over
        // the agent, the words 300 ms later. It is not taken for noise meanwhile.
        let mut s = Script::new();
        let g = s.agent_halfway("Your order left Shenzhen yesterday morning.");
        s.at(2000).input(Input::SpeechStarted);
        s.at(4500).input(Input::SpeechEnded);
        assert_eq!(s.when(&Output::StopPlayout), Some(2400 * MS));
        s.at(4800).says("wait I changed my mind", true);
        s.at(8000);
        let agent = agent_messages(&s.turns);
        assert_eq!(agent.len(), 1);
        assert!(agent[0].interrupted, "the interruption stands");
        assert_eq!(agent[0].text, "Your order left");
        assert!(
            s.log.iter().all(|(_, o)| !matches!(o, Output::Speak { generation, .. } if *generation != g && *generation != s.generation())),
            "nothing of the old answer was resumed"
        );
    }

    #[test]
    fn audio_of_a_stale_generation_is_never_played() {
        let mut s = Script::new();
        let g = s.agent_answering("Your order left Shenzhen yesterday.", 1500);
        assert_eq!(s.turns.playable_generation(), Some(g));
        s.at(2000).input(Input::SpeechStarted);
        s.at(2200).says("cancel it please", true);
        assert_eq!(s.turns.playable_generation(), None);
        // Late progress of the old reply changes nothing.
        s.input(Input::SegmentPlayed {
            generation: g,
            segment: 0,
        });
        assert_eq!(s.turns.state(), State::UserSpeaking);
        assert_eq!(
            agent_messages(&s.turns)[0].text,
            "Your order",
            "half of five words"
        );
    }

    #[test]
    fn talking_over_the_agent_non_stop_keeps_the_turn_with_the_shopper() {
        let mut s = Script::new();
        s.agent_answering("Your order left Shenzhen yesterday.", 1500);
        s.at(2000).input(Input::SpeechStarted);
        s.at(2300).says("no no listen", false);
        for t in (3000..20_000).step_by(1000) {
            s.at(t).says("and another thing about the order", true);
        }
        assert_eq!(s.turns.state(), State::UserSpeaking);
        assert_eq!(s.turns.playable_generation(), None);
    }

    #[test]
    fn a_monologue_is_committed_in_parts() {
        let mut s = Script::new();
        s.at(0).input(Input::SpeechStarted);
        for t in (1000..130_000).step_by(1000) {
            s.at(t).says("and then", true);
        }
        let user_messages = s
            .turns
            .context()
            .iter()
            .filter(|m| m.role == Role::User)
            .count();
        assert_eq!(user_messages, 2, "one part per minute");
        assert_eq!(
            s.turns.state(),
            State::UserSpeaking,
            "still the shopper's turn"
        );
    }

    impl Script {
        /// The generation of the first `Speak` after generation `after`.
        fn generation_spoken_after(&self, after: Generation) -> Generation {
            self.log
                .iter()
                .find_map(|(_, o)| match o {
                    Output::Speak { generation, .. } if *generation > after => Some(*generation),
                    _ => None,
                })
                .expect("a resumed reply")
        }
    }
}
