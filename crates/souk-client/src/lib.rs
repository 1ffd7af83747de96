//! Souk's Rust client SDK.
//!
//! A [`Client`] joins a room over the signalling WebSocket and holds two real WebRTC
//! connections (str0m), exactly like the browser SDK: a publisher it offers on and a
//! subscriber the server offers on. It publishes synthetic VP8 and Opus
//! ([`synthetic`]) and counts the frames and bytes it receives, which is what bots,
//! integration tests and load generators need. The server URL is `http://` or
//! `https://`; the latter is TLS, trusting what [`tls`] trusts.
//!
//! ```no_run
//! # async fn demo(token: String) -> Result<(), souk_client::ClientError> {
//! use souk_client::{Client, ClientOptions, SyntheticMedia};
//! let client = Client::connect("http://127.0.0.1:7880", &token, ClientOptions::default()).await?;
//! client.publish(SyntheticMedia::default()).await?;
//! # Ok(()) }
//! ```

pub mod arrival;
pub mod audio;
pub mod chat;
mod latency;
mod session;
pub mod synthetic;
pub mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use souk_proto::error::ProtoError;
use souk_proto::model::{ParticipantInfo, TrackInfo, TrackKind};
use souk_proto::signal::{ClientMessage, Joined, ServerMessage};
use tokio::sync::{mpsc, oneshot, watch};

pub use latency::LatencyHistogram;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot reach the server: {0}")]
    Connect(String),
    #[error("the server refused: {0}")]
    Refused(#[from] ProtoError),
    #[error("the connection closed")]
    Closed,
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("WebRTC failure: {0}")]
    Rtc(String),
}

/// How to join.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Receive every track as it appears.
    pub auto_subscribe: bool,
    /// Local address to bind media sockets to. Many bots on one machine spread over
    /// several 127.0.0.x addresses to stay under per-address limits.
    pub bind_ip: IpAddr,
    /// Receive RTP packets as they are instead of reassembling frames: cheaper, and it
    /// counts packet loss exactly. Load generators use it so they are not the bottleneck.
    pub receive_packets: bool,
    /// Where to hand the Opus frames of received audio tracks (when receiving frames).
    /// A full channel drops frames rather than stall the connection.
    pub audio_in: Option<mpsc::Sender<audio::ReceivedAudio>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            auto_subscribe: true,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            receive_packets: false,
            audio_in: None,
        }
    }
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct SyntheticMedia {
    pub audio: bool,
    pub video: bool,
    /// Three layers (q, h, f) at 1/10, 3/10 and the full bitrate, or one.
    pub simulcast: bool,
    /// Top-layer video bitrate.
    pub video_kbps: u32,
    pub fps: u32,
    /// Audio level in -dBov sent with each audio packet (0 loud, 127 silent).
    pub audio_level: i8,
    /// Play the frames queued here instead of synthetic audio (nothing is sent while it
    /// is empty or paused).
    pub audio_feed: Option<audio::AudioFeed>,
}

impl Default for SyntheticMedia {
    fn default() -> Self {
        SyntheticMedia {
            audio: true,
            video: true,
            simulcast: false,
            video_kbps: 500,
            fps: 30,
            audio_level: 30,
            audio_feed: None,
        }
    }
}

/// What one received track delivered so far.
#[derive(Debug, Clone, Default)]
pub struct TrackStats {
    pub participant_sid: String,
    pub kind: Option<TrackKind>,
    /// Whole frames (video) or packets (audio) received. When receiving packets, a
    /// video frame counts at its last packet (RTP marker).
    pub frames: u64,
    pub keyframes: u64,
    pub bytes: u64,
    /// Frames that arrived with a gap before them.
    pub discontinuities: u64,
    /// Width of the last key frame (synthetic VP8 carries it).
    pub last_key_width: u16,
    /// RTP packets received and the number the sequence numbers say were sent (only
    /// when receiving packets): their difference is the loss.
    pub packets: u64,
    pub packets_expected: u64,
}

/// A snapshot of what the client saw.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Received tracks by track id.
    pub tracks: HashMap<String, TrackStats>,
    /// Whether each connection finished ICE and DTLS.
    pub publisher_connected: bool,
    pub subscriber_connected: bool,
    /// Every server message type seen, in order (for assertions on events).
    pub messages: Vec<ServerMessage>,
    /// The session ended (server said leave or the socket closed for good).
    pub ended: bool,
    /// From each synthetic payload's send stamp to its arrival here, after this client's
    /// own stack (same-host clocks).
    pub latency: LatencyHistogram,
    /// From the send stamp to the kernel's receipt of the datagram that completed it:
    /// what the path and the server added, without this client's scheduling.
    pub socket_latency: LatencyHistogram,
}

impl Stats {
    /// One payload sent at `sent`, handled at `handled` and received by the kernel at
    /// `at_socket` (all Unix microseconds).
    pub(crate) fn record_latency(&mut self, sent: u64, handled: u64, at_socket: Option<u64>) {
        self.latency.record_micros(handled.saturating_sub(sent));
        if let Some(at) = at_socket {
            self.socket_latency.record_micros(at.saturating_sub(sent));
        }
    }

    pub fn frames_of(&self, kind: TrackKind) -> u64 {
        self.tracks
            .values()
            .filter(|t| t.kind == Some(kind))
            .map(|t| t.frames)
            .sum()
    }
}

pub(crate) enum Command {
    Publish(
        SyntheticMedia,
        oneshot::Sender<Result<Vec<TrackInfo>, ClientError>>,
    ),
    Send(ClientMessage),
    Leave,
    /// Offer to publish, for signalling carried by the caller.
    Offer(SyntheticMedia, oneshot::Sender<Result<String, ClientError>>),
    AcceptAnswer(String, oneshot::Sender<Result<(), ClientError>>),
    AnswerOffer(String, oneshot::Sender<Result<String, ClientError>>),
}

/// The running session task: what it saw so far, and a way to wait for it.
pub struct SessionHandle {
    commands: mpsc::Sender<Command>,
    stats: Arc<Mutex<Stats>>,
    changed: watch::Receiver<u64>,
}

impl SessionHandle {
    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until `pred` holds for the stats, or fails after `timeout` naming `what`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Stats) -> bool,
    ) -> Result<Stats, ClientError> {
        let mut changed = self.changed.clone();
        let wait = async {
            loop {
                let stats = self.stats();
                if pred(&stats) {
                    return Ok(stats);
                }
                if changed.changed().await.is_err() {
                    let stats = self.stats();
                    return if pred(&stats) {
                        Ok(stats)
                    } else {
                        Err(ClientError::Closed)
                    };
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout(what.to_owned()))?
    }

    /// Asks the session task for something and waits for its reply.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }
}

/// A joined participant. Dropping it closes the connection without `leave` (as a crash
/// would); call [`Client::leave`] to leave properly. Its stats are on the
/// [`SessionHandle`] it dereferences to.
pub struct Client {
    session: SessionHandle,
    joined: Joined,
}

impl std::ops::Deref for Client {
    type Target = SessionHandle;

    fn deref(&self) -> &SessionHandle {
        &self.session
    }
}

impl Client {
    /// Joins the room the token admits to. Resolves once `joined` arrived.
    pub async fn connect(
        url: &str,
        token: &str,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        session::start(url, token, options).await
    }

    pub fn participant(&self) -> &ParticipantInfo {
        &self.joined.participant
    }

    pub fn joined(&self) -> &Joined {
        &self.joined
    }

    /// Publishes synthetic media; resolves with the published tracks once the server
    /// answered.
    pub async fn publish(&self, media: SyntheticMedia) -> Result<Vec<TrackInfo>, ClientError> {
        self.ask(|reply| Command::Publish(media, reply)).await
    }

    /// Publishes one audio track that plays what is queued in `feed` (an agent's voice,
    /// a bot's recorded speech); returns the feed's track.
    pub async fn publish_audio(
        &self,
        feed: audio::AudioFeed,
    ) -> Result<Vec<TrackInfo>, ClientError> {
        self.publish(SyntheticMedia {
            audio: true,
            video: false,
            audio_feed: Some(feed),
            ..SyntheticMedia::default()
        })
        .await
    }

    /// Sends any signalling message as it is (tests use this for bad input).
    pub async fn send(&self, msg: ClientMessage) -> Result<(), ClientError> {
        self.commands
            .send(Command::Send(msg))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Leaves the room and waits for the server to close the session.
    pub async fn leave(self) {
        let _ = self.commands.send(Command::Leave).await;
        let _ = self
            .wait_for("the session to end", Duration::from_secs(5), |s| s.ended)
            .await;
    }
}

/// The same WebRTC peers, synthetic media and accounting as a [`Client`], for a server
/// that speaks another signalling protocol: the caller carries the SDP. The benchmark
/// drives Janus with it, so both servers get identical bots.
pub struct ExternalPeers {
    session: SessionHandle,
}

impl std::ops::Deref for ExternalPeers {
    type Target = SessionHandle;

    fn deref(&self) -> &SessionHandle {
        &self.session
    }
}

impl ExternalPeers {
    pub fn new(options: ClientOptions) -> ExternalPeers {
        ExternalPeers {
            session: session::spawn(None, &options),
        }
    }

    /// An SDP offer publishing `media`; the synthetic media starts once its answer is
    /// accepted.
    pub async fn offer_to_publish(&self, media: SyntheticMedia) -> Result<String, ClientError> {
        self.ask(|reply| Command::Offer(media, reply)).await
    }

    pub async fn accept_publish_answer(&self, sdp: String) -> Result<(), ClientError> {
        self.ask(|reply| Command::AcceptAnswer(sdp, reply)).await
    }

    /// Answers the server's offer to send media; each received m-line counts as a track
    /// named `mid-<mid>`.
    pub async fn answer_offer(&self, sdp: String) -> Result<String, ClientError> {
        self.ask(|reply| Command::AnswerOffer(sdp, reply)).await
    }
}
