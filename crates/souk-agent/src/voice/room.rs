//! The voice agent in a room: dispatch, and the WebRTC participant it runs as.
//!
//! [`RoomAgents`] starts one agent per room when asked (the REST API, a room's
//! configuration). Each joins through the server like any client, with the `agent` role
//! and `souk-client` (real WebRTC): it publishes one Opus track fed by its playout
//! buffer, listens to the first shopper who speaks, and announces captions and its
//! status as room events. It leaves when a member of staff joins (a person takes over),
//! when the shopper leaves, or when told to stop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use souk_client::audio::{AudioFeed, ReceivedAudio};
use souk_client::{Client, ClientOptions};
use souk_proto::live::AgentStatus;
use souk_proto::signal::{AgentEvent, AgentEventRequest, ClientMessage, ServerMessage};
use souk_proto::token::Role;
use souk_proto::{ErrorCode, ProtoError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::pool::{ToWorker, WorkerPool};
use super::session::{VoiceIo, VoiceSession, VoiceStages};
use super::stt::Stt;
use super::telemetry::{SessionRecord, TranscriptLine, TurnRecord, VoiceStats};
use super::tts::Tts;
use super::turn_detector::TurnDetector;
use super::vad::NewVad;
use crate::llm::Llm;
use crate::shop::Shop;
use crate::text::{Policy, TextAgent};
use crate::turn::TurnConfig;

/// Signs a room token for the agent: (room, identity) -> token.
pub type MintToken = Box<dyn Fn(&str, &str) -> Result<String, String> + Send + Sync>;

/// Loads a speech stage the first time an agent needs it (a recogniser takes a second
/// to load; a server that never runs a voice agent never pays it).
pub type LoadStt = Box<dyn Fn() -> Result<Arc<dyn Stt>, String> + Send + Sync>;
pub type LoadTts = Box<dyn Fn() -> Result<Arc<dyn Tts>, String> + Send + Sync>;

/// What staff must know when a spoken conversation is handed over to them.
#[derive(Debug, Clone)]
pub struct VoiceHandoff {
    pub room: String,
    pub shop: String,
    pub shopper: String,
    pub summary: String,
}

/// Delivers a handoff to the shop's staff (the server posts it to their chat inbox).
pub type OnHandoff = Arc<dyn Fn(VoiceHandoff) + Send + Sync>;

/// A shop the agent can speak for.
pub struct VoiceShop {
    pub name: String,
    pub shop: Arc<Shop>,
    pub pinned_language: Option<String>,
}

pub struct RoomAgents {
    /// The server's own address, known once it listens.
    url: OnceLock<String>,
    mint: MintToken,
    llm: Option<Arc<dyn Llm>>,
    /// The speech stages once loaded, or why they cannot run here.
    load_stt: LoadStt,
    load_tts: LoadTts,
    stt: OnceLock<Result<Arc<dyn Stt>, String>>,
    tts: OnceLock<Result<Arc<dyn Tts>, String>>,
    shops: HashMap<String, VoiceShop>,
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Rooms whose configuration asks for an agent: room -> (shop, even with staff in).
    configured: Mutex<HashMap<String, (String, bool)>>,
    shutdown: CancellationToken,
    on_handoff: OnceLock<OnHandoff>,
    turn_detector: OnceLock<Arc<dyn TurnDetector>>,
    new_vad: OnceLock<NewVad>,
    /// Separate worker processes; the agent runs here when none takes a job.
    pool: Mutex<WorkerPool>,
    /// The last sessions that ran here, for the REST API.
    records: Mutex<std::collections::VecDeque<SessionRecord>>,
    pub stats: Arc<VoiceStats>,
}

impl RoomAgents {
    pub fn new(
        mint: MintToken,
        llm: Option<Arc<dyn Llm>>,
        load_stt: LoadStt,
        load_tts: LoadTts,
        shops: HashMap<String, VoiceShop>,
        shutdown: CancellationToken,
    ) -> RoomAgents {
        RoomAgents {
            url: OnceLock::new(),
            mint,
            llm,
            load_stt,
            load_tts,
            stt: OnceLock::new(),
            tts: OnceLock::new(),
            shops,
            running: Mutex::default(),
            configured: Mutex::default(),
            shutdown,
            on_handoff: OnceLock::new(),
            turn_detector: OnceLock::new(),
            new_vad: OnceLock::new(),
            pool: Mutex::default(),
            records: Mutex::default(),
            stats: Arc::default(),
        }
    }

    /// Where agents connect: the server's own HTTP address.
    pub fn set_url(&self, url: String) {
        let _ = self.url.set(url);
    }

    /// Lets the words or the sound hold a turn open (see [`TurnDetector`]).
    pub fn set_turn_detector(&self, detector: Arc<dyn TurnDetector>) {
        let _ = self.turn_detector.set(detector);
    }

    /// Detects speech with another detector than earshot.
    pub fn set_vad(&self, new_vad: NewVad) {
        let _ = self.new_vad.set(new_vad);
    }

    /// Who hears of handoffs.
    pub fn set_on_handoff(&self, on_handoff: OnHandoff) {
        let _ = self.on_handoff.set(on_handoff);
    }

    /// Remembers that `room` wants the agent of `shop` when a shopper joins (`always`: even
    /// with staff in the room).
    pub fn configure(&self, room: &str, shop: &str, always: bool) -> Result<(), ProtoError> {
        if !self.shops.contains_key(shop) {
            return Err(ProtoError::new(
                ErrorCode::InvalidRequest,
                format!("no shop '{shop}' is configured for the AI agent ([[agent.shops]])"),
            ));
        }
        self.configured
            .lock()
            .expect("configured lock")
            .insert(room.to_owned(), (shop.to_owned(), always));
        Ok(())
    }

    /// The agent `room` asks for, if any: (shop, even with staff in).
    pub fn configured(&self, room: &str) -> Option<(String, bool)> {
        self.configured
            .lock()
            .expect("configured lock")
            .get(room)
            .cloned()
    }

    /// The room is gone: its agent leaves and its configuration is dropped.
    pub fn forget(&self, room: &str) {
        self.configured
            .lock()
            .expect("configured lock")
            .remove(room);
        self.stop(room);
    }

    /// Whether an agent is in `room`, here or on a worker.
    pub fn running(&self, room: &str) -> bool {
        self.running
            .lock()
            .expect("running lock")
            .contains_key(room)
            || self.pool.lock().expect("pool lock").has(room)
    }

    /// A worker connected: it serves `shops`, up to `capacity` rooms; jobs go to `send`.
    pub fn worker_joined(
        &self,
        shops: Vec<String>,
        capacity: usize,
        send: mpsc::UnboundedSender<ToWorker>,
    ) -> u64 {
        self.pool
            .lock()
            .expect("pool lock")
            .add(shops, capacity, send)
    }

    pub fn worker_done(&self, worker: u64, room: &str) {
        self.pool.lock().expect("pool lock").done(worker, room);
    }

    pub fn worker_left(&self, worker: u64) {
        let rooms = self.pool.lock().expect("pool lock").remove(worker);
        if !rooms.is_empty() {
            tracing::warn!(
                ?rooms,
                "an agent worker disconnected; its rooms lost their agent"
            );
        }
    }

    /// Sends an agent speaking for `shop` into `room`: to a worker when one takes it,
    /// else here. Fails with a reason a person can act on when something it needs is
    /// missing.
    pub async fn start(self: &Arc<Self>, room: &str, shop: &str) -> Result<(), ProtoError> {
        if !self.shops.contains_key(shop) {
            return Err(ProtoError::new(
                ErrorCode::InvalidRequest,
                format!("no shop '{shop}' is configured for the AI agent"),
            ));
        }
        if self.running(room) {
            return Ok(());
        }
        let url = self.url.get().cloned().ok_or_else(|| {
            ProtoError::new(
                ErrorCode::AgentUnavailable,
                "the server is still starting; retry in a moment",
            )
        })?;
        let identity = agent_identity(shop);
        let token =
            (self.mint)(room, &identity).map_err(|e| ProtoError::new(ErrorCode::Internal, e))?;
        if self
            .pool
            .lock()
            .expect("pool lock")
            .assign(room, shop, &token)
            .is_some()
        {
            return Ok(());
        }
        self.run_here(room, shop, &url, &token).await.map(|_| ())
    }

    /// Runs an agent for `shop` in `room` in this process, joining `url` with `token`;
    /// the returned handle ends when the agent has left.
    pub async fn run_here(
        self: &Arc<Self>,
        room: &str,
        shop: &str,
        url: &str,
        token: &str,
    ) -> Result<tokio::task::JoinHandle<()>, ProtoError> {
        let unavailable = |why: String| ProtoError::new(ErrorCode::AgentUnavailable, why);
        let llm = self.llm.clone().ok_or_else(|| {
            unavailable("the AI agent cannot start: no language model is configured on this server ([agent.llm] in its configuration)".into())
        })?;
        let loader = self.clone();
        let (stt, tts) = tokio::task::spawn_blocking(move || {
            (
                loader.stt.get_or_init(|| (loader.load_stt)()).clone(),
                loader.tts.get_or_init(|| (loader.load_tts)()).clone(),
            )
        })
        .await
        .map_err(|e| {
            ProtoError::new(
                ErrorCode::Internal,
                format!("loading the speech stages: {e}"),
            )
        })?;
        let stt = stt.map_err(|e| unavailable(format!("the AI agent cannot listen: {e}")))?;
        let tts = tts.map_err(|e| unavailable(format!("the AI agent cannot speak: {e}")))?;
        let voice_shop = self.shops.get(shop).ok_or_else(|| {
            ProtoError::new(
                ErrorCode::InvalidRequest,
                format!("no shop '{shop}' is configured for the AI agent"),
            )
        })?;
        let identity = agent_identity(shop);
        let stop = {
            let mut running = self.running.lock().expect("running lock");
            if let Some(existing) = running.get(room) {
                // Already here: a handle that ends with that agent.
                let existing = existing.clone();
                return Ok(tokio::spawn(async move { existing.cancelled().await }));
            }
            let stop = self.shutdown.child_token();
            running.insert(room.to_owned(), stop.clone());
            stop
        };
        let agent = TextAgent::new(
            llm,
            voice_shop.shop.clone(),
            Policy {
                shop_name: voice_shop.name.clone(),
                pinned_language: voice_shop.pinned_language.clone(),
                vision: false,
                spoken: true,
            },
        );
        let stages = VoiceStages {
            stt,
            tts,
            agent: Arc::new(agent),
            pinned_language: voice_shop.pinned_language.clone(),
            turn_detector: self.turn_detector.get().cloned(),
            new_vad: self
                .new_vad
                .get()
                .cloned()
                .unwrap_or_else(super::vad::earshot),
        };
        let (agents, room, shop, url, token) = (
            self.clone(),
            room.to_owned(),
            shop.to_owned(),
            url.to_owned(),
            token.to_owned(),
        );
        Ok(tokio::spawn(async move {
            let handoff = agents.on_handoff.get().cloned();
            let job = Job {
                url: &url,
                token: &token,
                identity: &identity,
                room: &room,
                shop: &shop,
            };
            match join_and_talk(job, stages, agents.stats.clone(), handoff, stop).await {
                Ok(Some(record)) => {
                    tracing::info!(
                        room,
                        turns = record.turns.len(),
                        ended = record.ended,
                        "AI agent session ended"
                    );
                    agents.remember(record);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(room, "the AI agent stopped: {e}"),
            }
            agents.running.lock().expect("running lock").remove(&room);
        }))
    }

    fn remember(&self, record: SessionRecord) {
        let mut records = self.records.lock().expect("records lock");
        if records.len() == KEPT_RECORDS {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// The finished sessions of `room` still remembered, oldest first.
    pub fn records(&self, room: &str) -> Vec<SessionRecord> {
        self.records
            .lock()
            .expect("records lock")
            .iter()
            .filter(|r| r.room == room)
            .cloned()
            .collect()
    }

    /// Tells the agent in `room` to leave; `false` if there was none.
    pub fn stop(&self, room: &str) -> bool {
        if self.pool.lock().expect("pool lock").stop(room) {
            return true;
        }
        match self.running.lock().expect("running lock").remove(room) {
            Some(stop) => {
                stop.cancel();
                true
            }
            None => false,
        }
    }
}

/// The room identity of the agent speaking for `shop`.
pub fn agent_identity(shop: &str) -> String {
    format!("agent-{shop}")
}

/// Finished sessions kept for the REST API (across all rooms).
const KEPT_RECORDS: usize = 200;

/// How long to wait for the room's answers while joining.
const JOIN_WAIT: Duration = Duration::from_secs(20);

/// Where an agent goes and for whom.
struct Job<'a> {
    url: &'a str,
    token: &'a str,
    identity: &'a str,
    room: &'a str,
    shop: &'a str,
}

async fn join_and_talk(
    job: Job<'_>,
    stages: VoiceStages,
    stats: Arc<VoiceStats>,
    on_handoff: Option<OnHandoff>,
    stop: CancellationToken,
) -> Result<Option<SessionRecord>, souk_client::ClientError> {
    let Job {
        url,
        token,
        identity,
        room,
        shop,
    } = job;
    let (audio_tx, mut audio_rx) = mpsc::channel::<ReceivedAudio>(256);
    let options = ClientOptions {
        audio_in: Some(audio_tx),
        ..ClientOptions::default()
    };
    let client = Arc::new(Client::connect(url, token, options).await?);
    let feed = AudioFeed::default();
    client.publish_audio(feed.clone()).await?;
    let (announce, mut announced) = mpsc::unbounded_channel::<AgentEvent>();
    let sender = client.clone();
    // The shopper is known once they speak; a handoff names them.
    let shopper_known: Arc<OnceLock<String>> = Arc::default();
    let handoff_to = (shopper_known.clone(), room.to_owned(), shop.to_owned());
    let forwarder = tokio::spawn(async move {
        while let Some(event) = announced.recv().await {
            if let (AgentEvent::Status(s), Some(on_handoff)) = (&event, &on_handoff) {
                if s.state == "handoff" {
                    on_handoff(VoiceHandoff {
                        room: handoff_to.1.clone(),
                        shop: handoff_to.2.clone(),
                        shopper: handoff_to.0.get().cloned().unwrap_or_default(),
                        summary: s.message.clone().unwrap_or_default(),
                    });
                }
            }
            let msg = ClientMessage::AgentEvent(AgentEventRequest { req: None, event });
            if sender.send(msg).await.is_err() {
                return;
            }
        }
    });
    let status = |state: &str, message: &str| {
        AgentEvent::Status(AgentStatus {
            identity: identity.to_owned(),
            state: state.to_owned(),
            code: None,
            message: Some(message.to_owned()),
        })
    };
    let _ = announce.send(status(
        "joined",
        "the AI agent joined and is waiting for the shopper to speak",
    ));

    // From now on, a member of staff joining (or the shopper leaving) ends the job.
    let watch = watch_room(client.clone(), shopper_known.clone());
    tokio::pin!(watch);
    // The shopper is whoever speaks first; the agent listens to them only.
    let first = tokio::select! {
        _ = stop.cancelled() => Err("the AI agent was stopped"),
        why = &mut watch => Err(why),
        frame = audio_rx.recv() => frame.ok_or("the connection to the room closed"),
    };
    let first = match first {
        Ok(first) => first,
        Err(why) => {
            let _ = announce.send(status("left", why));
            drop(announce);
            leave(client, forwarder).await;
            return Ok(None);
        }
    };
    let shopper_sid = first.participant_sid.clone();
    let shopper = identity_of(&client, &shopper_sid).unwrap_or_else(|| shopper_sid.clone());
    let _ = shopper_known.set(shopper.clone());
    let (shopper_tx, shopper_rx) = mpsc::channel(256);
    let _ = shopper_tx.try_send(first);
    tokio::spawn(async move {
        while let Some(frame) = audio_rx.recv().await {
            if frame.participant_sid == shopper_sid && shopper_tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    let io = VoiceIo {
        audio_in: shopper_rx,
        feed,
        announce: announce.clone(),
    };
    let session = VoiceSession::new(identity, &shopper, stages, io, TurnConfig::default(), stats);
    let session_stop = stop.child_token();
    let mut running = tokio::spawn(session.run(session_stop.clone()));
    let (ended, finished) = tokio::select! {
        record = &mut running => ("the shopper's audio ended", record.ok()),
        why = &mut watch => (why, None),
        _ = stop.cancelled() => ("the AI agent was stopped", None),
    };
    session_stop.cancel();
    // A session told to stop still hands back its record.
    let record = match finished {
        Some(record) => Some(record),
        None => running.await.ok(),
    };
    let _ = announce.send(status("left", ended));
    drop(announce);
    leave(client, forwarder).await;
    Ok(record.map(|record| SessionRecord {
        room: room.to_owned(),
        shopper,
        ended: ended.to_owned(),
        turns: record.turns.iter().map(TurnRecord::from).collect(),
        transcript: record
            .context
            .iter()
            .map(|m| TranscriptLine {
                speaker: if m.role == crate::turn::Role::User {
                    "shopper"
                } else {
                    "agent"
                },
                text: m.text.clone(),
                interrupted: m.interrupted,
            })
            .collect(),
    }))
}

/// Waits until a person takes over (a member of staff joins) or the shopper (once known)
/// leaves.
async fn watch_room(client: Arc<Client>, shopper: Arc<OnceLock<String>>) -> &'static str {
    let mut seen = 0;
    loop {
        let stats = match client
            .wait_for("a change in the room", Duration::from_secs(3600), |s| {
                s.messages.len() > seen || s.ended
            })
            .await
        {
            Ok(stats) => stats,
            Err(souk_client::ClientError::Timeout(_)) => continue,
            Err(_) => return "the connection to the room closed",
        };
        if stats.ended {
            return "the connection to the room closed";
        }
        for msg in &stats.messages[seen..] {
            match msg {
                ServerMessage::ParticipantJoined(p) if p.participant.role == Role::Staff => {
                    return "a member of staff joined; the AI agent hands over";
                }
                ServerMessage::ParticipantLeft(p) if shopper.get() == Some(&p.identity) => {
                    return "the shopper left";
                }
                _ => {}
            }
        }
        seen = stats.messages.len();
    }
}

/// The identity behind a participant session id, from what the room told the client.
fn identity_of(client: &Client, sid: &str) -> Option<String> {
    let joined = client
        .joined()
        .others
        .iter()
        .find(|p| p.sid == sid)
        .map(|p| p.identity.clone());
    joined.or_else(|| {
        client.stats().messages.iter().find_map(|m| match m {
            ServerMessage::ParticipantJoined(p) if p.participant.sid == sid => {
                Some(p.participant.identity.clone())
            }
            _ => None,
        })
    })
}

/// Leaves once the captions and status still queued have gone out (the forwarder ends
/// when the last announcer is dropped).
async fn leave(client: Arc<Client>, forwarder: tokio::task::JoinHandle<()>) {
    let _ = tokio::time::timeout(JOIN_WAIT, forwarder).await;
    match Arc::try_unwrap(client) {
        Ok(client) => tokio::time::timeout(JOIN_WAIT, client.leave())
            .await
            .unwrap_or(()),
        Err(client) => {
            let _ = client.send(ClientMessage::Leave(Default::default())).await;
        }
    }
}
