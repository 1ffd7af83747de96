//! The state machine: inputs in, outputs out.
//!
//! Inputs: [`Sfu::join`] / [`Sfu::resume`] / [`Sfu::handle_message`] /
//! [`Sfu::signal_lost`] from signalling, [`Sfu::handle_datagram`] from the media port,
//! [`Sfu::handle_timeout`] from the clock, and the room-service calls in `service`.
//! After any input, drain [`Sfu::poll_output`] and sleep until [`Sfu::poll_timeout`].

mod bandwidth;
mod live;
mod media;
mod membership;
mod service;
mod signal;
mod whep;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use souk_proto::rest::WebhookKind;
use souk_proto::signal::ServerMessage;
use souk_proto::token::{Grants, Role};
use str0m::net::Protocol;

use crate::config::SfuConfig;
use crate::connections::Connections;
use crate::demux::Demux;
use crate::participant::Participant;
use crate::room::Room;
use crate::track::TrackKey;
use crate::ParticipantId;

/// What the driver must do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Send a datagram (UDP) or frame (ICE-TCP).
    Transmit(Transmit),
    /// Deliver a signalling message to a participant's socket. Boxed, like the webhook:
    /// every forwarded datagram passes through the output queue as an `Output`, and
    /// unboxed these made each one 656 bytes instead of about 100.
    Signal(ParticipantId, Box<ServerMessage>),
    /// Deliver the same serialised message (room events) to many sockets. How the
    /// sockets share it is the driver's business: it takes the text as it is.
    Broadcast(Vec<ParticipantId>, String),
    /// Close a participant's signalling socket: the session is over.
    Disconnect(ParticipantId),
    /// Post a webhook.
    Webhook(Box<WebhookKind>),
}

#[derive(Debug)]
pub struct Transmit {
    pub proto: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// A verified join: the driver checked the token, these are its claims.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub grants: Grants,
    pub metadata: Option<String>,
    pub auto_subscribe: bool,
    pub req: Option<u32>,
    /// The last room event the client saw, to catch up from.
    pub last_event: Option<souk_proto::live::EventCursor>,
}

/// A verified resume: the token's claims plus the session to take over.
#[derive(Debug, Clone)]
pub struct ResumeRequest {
    pub room: String,
    pub identity: String,
    pub sid: String,
    pub resume_secret: String,
    pub req: Option<u32>,
    pub last_event: Option<souk_proto::live::EventCursor>,
}

pub struct Sfu {
    config: SfuConfig,
    rng: StdRng,
    /// Wall-clock anchor: `unix_ms` at `started`, so the core can stamp events without
    /// reading the clock.
    started: Instant,
    started_unix_ms: u64,
    next_id: u64,
    rooms: HashMap<String, Room>,
    /// Boxed: a participant holds two str0m connections inline (tens of KiB), and the
    /// map keeps spare slots as it grows.
    participants: HashMap<ParticipantId, Box<Participant>>,
    /// Who has a WebRTC connection, and each connection's next str0m deadline.
    connections: Connections,
    /// Which participant publishes each track.
    track_owner: HashMap<TrackKey, ParticipantId>,
    demux: Demux,
    /// Connections written to and not yet drained.
    deferred: Deferred,
    outputs: VecDeque<Output>,
    next_tick: Instant,
    /// When the batched room events go out, if any are waiting.
    next_live_flush: Option<Instant>,
}

/// Connections to drain as the driver polls, and the time of the input that dirtied them.
struct Deferred {
    /// Written to since `ready` was filled, possibly more than once each.
    dirty: Vec<crate::demux::PeerKey>,
    /// Each once, the next at the end.
    ready: Vec<crate::demux::PeerKey>,
    now: Instant,
}

impl Sfu {
    pub fn new(config: SfuConfig, now: Instant, unix_ms: u64) -> Sfu {
        Sfu {
            rng: StdRng::seed_from_u64(config.seed),
            next_tick: now + config.tick_interval,
            config,
            started: now,
            started_unix_ms: unix_ms,
            next_id: 1,
            rooms: HashMap::new(),
            participants: HashMap::new(),
            connections: Connections::default(),
            track_owner: HashMap::new(),
            demux: Demux::default(),
            deferred: Deferred {
                dirty: Vec::new(),
                ready: Vec::new(),
                now,
            },
            outputs: VecDeque::new(),
            next_live_flush: None,
        }
    }

    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// The next thing for the driver to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        while self.outputs.is_empty() && self.drain_next_deferred() {}
        self.outputs.pop_front()
    }

    /// When [`Sfu::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Instant {
        let next = self
            .next_live_flush
            .map_or(self.next_tick, |f| f.min(self.next_tick));
        self.connections
            .next_deadline()
            .map_or(next, |t| t.min(next))
    }

    /// Whether a connection's ICE check passed from `source`, so datagrams from it reach
    /// that connection.
    pub fn knows_address(&self, proto: Protocol, source: SocketAddr) -> bool {
        self.demux.knows(proto, source)
    }

    /// Number of participants across all rooms (for metrics and leak checks).
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        self.started_unix_ms + now.saturating_duration_since(self.started).as_millis() as u64
    }

    fn next_internal_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A random id with a readable prefix, like `PA_x3k9...`.
    fn random_id(&mut self, prefix: &str, len: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let body: String = (0..len)
            .map(|_| ALPHABET[self.rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        format!("{prefix}{body}")
    }

    fn signal(&mut self, to: ParticipantId, msg: ServerMessage) {
        self.outputs.push_back(Output::Signal(to, Box::new(msg)));
    }

    /// Sends a message to every member of `room` except `except`.
    fn broadcast(&mut self, room: &str, except: Option<ParticipantId>, msg: ServerMessage) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        for &member in &room.members {
            if Some(member) != except {
                self.outputs
                    .push_back(Output::Signal(member, Box::new(msg.clone())));
            }
        }
    }

    fn webhook(&mut self, event: WebhookKind) {
        self.outputs.push_back(Output::Webhook(Box::new(event)));
    }
}
