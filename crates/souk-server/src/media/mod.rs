//! The media driver: one task that owns the [`Sfu`] and feeds it sockets, signalling and
//! time. A server runs one or more of these engines, each owning whole rooms
//! ([`MediaShards`]).
//!
//! Everything that touches the core goes through this task's command channel, so the
//! core needs no locks: signalling sessions and REST handlers hold their room's
//! [`MediaHandle`] and send commands; the task answers through oneshot channels and
//! delivers signalling messages through each session's own channel.

mod egress;
mod session_queue;
mod shards;
mod tcp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use souk_client::arrival;
use souk_metrics::Histogram;
use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::rest::WebhookKind;
use souk_proto::signal::{ClientMessage, ServerMessage};
use souk_sfu::{JoinRequest, Output, ParticipantId, ResumeRequest, Sfu};
use str0m::net::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use self::egress::{Batch, Egress, ForwardDelay, FORWARD_DELAY_BOUNDS};

/// Messages a signalling session receives from the core.
#[derive(Debug)]
pub enum SessionEvent {
    /// Boxed: each session's queue reserves room for 32 events at a time, and a
    /// `ServerMessage` inline is ~650 bytes (20 KiB per connected client).
    Message(Box<ServerMessage>),
    /// A message already serialised, shared by many sockets (room events): cloning it
    /// shares the bytes, so a viewer's copy costs no allocation.
    Text(axum::extract::ws::Utf8Bytes),
    /// The session is over; close the socket after flushing.
    Close,
}

/// Datagrams taken from the socket in one go before the core's output is sent. Small
/// enough that the first packet of a burst is not held back for long.
const RECEIVE_BURST: usize = 16;

/// How many signalling messages may queue for one client before it counts as stuck.
const SESSION_QUEUE: usize = 512;

pub use session_queue::{SessionReceiver, SessionSender, WeakSessionSender};
pub use shards::MediaShards;

pub fn session_channel() -> (SessionSender, SessionReceiver) {
    session_queue::channel(SESSION_QUEUE)
}

/// A unique number per signalling socket, so a stale socket closing after its session was
/// resumed elsewhere does not mark the session lost.
pub type ConnId = u64;

type Call = Box<dyn FnOnce(&mut Sfu, Instant) + Send>;

/// How a signalling socket enters a session.
pub enum Entry {
    Join(JoinRequest),
    Resume(ResumeRequest),
}

enum Command {
    Enter {
        entry: Entry,
        conn: ConnId,
        session: SessionSender,
        reply: oneshot::Sender<Result<ParticipantId, ProtoError>>,
    },
    Message {
        id: ParticipantId,
        msg: ClientMessage,
    },
    SignalLost {
        id: ParticipantId,
        conn: ConnId,
    },
    Call(Call),
}

/// A cheap, cloneable way to talk to the media task.
#[derive(Clone)]
pub struct MediaHandle {
    commands: mpsc::Sender<Command>,
    forward_delay: ForwardDelay,
}

fn stopped() -> ProtoError {
    ProtoError::new(ErrorCode::Internal, "the media engine is shutting down")
}

impl MediaHandle {
    /// Joins or resumes; from then on the session's messages arrive on `session`.
    pub async fn enter(
        &self,
        entry: Entry,
        conn: ConnId,
        session: SessionSender,
    ) -> Result<ParticipantId, ProtoError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Enter {
            entry,
            conn,
            session,
            reply,
        })
        .await?;
        rx.await.map_err(|_| stopped())?
    }

    pub async fn message(&self, id: ParticipantId, msg: ClientMessage) -> Result<(), ProtoError> {
        self.send(Command::Message { id, msg }).await
    }

    pub async fn signal_lost(&self, id: ParticipantId, conn: ConnId) {
        let _ = self.send(Command::SignalLost { id, conn }).await;
    }

    /// Runs `f` on the core and returns its result (room-service calls).
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Sfu, Instant) -> R + Send + 'static,
    ) -> Result<R, ProtoError> {
        let (reply, rx) = oneshot::channel();
        let call: Call = Box::new(move |sfu, now| {
            let _ = reply.send(f(sfu, now));
        });
        self.send(Command::Call(call)).await?;
        rx.await.map_err(|_| stopped())
    }

    async fn send(&self, cmd: Command) -> Result<(), ProtoError> {
        self.commands.send(cmd).await.map_err(|_| stopped())
    }

    /// How long datagrams have taken through the server so far (see [`ForwardDelay`]).
    pub fn forward_delay(&self) -> Histogram {
        let delay = self.forward_delay.lock();
        delay.unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The bound media sockets: UDP and ICE-TCP on one port number.
pub struct MediaSockets {
    pub udp: UdpSocket,
    pub tcp: tokio::net::TcpListener,
    pub local: SocketAddr,
}

impl MediaSockets {
    /// Binds UDP and TCP on the same port. With port 0 the OS picks a UDP port and TCP
    /// follows it; if that TCP port is taken, another pair is tried.
    pub async fn bind(ip: std::net::IpAddr, port: u16) -> anyhow::Result<MediaSockets> {
        use anyhow::Context;
        for _ in 0..20 {
            let udp = UdpSocket::bind(SocketAddr::new(ip, port))
                .await
                .with_context(|| format!("binding media UDP port {ip}:{port}"))?;
            let local = udp.local_addr()?;
            enlarge_buffers(&udp);
            if let Err(e) = arrival::stamp_arrivals(&udp) {
                warn!("no kernel receive stamps on the media socket, so no forwarding delay: {e}");
            }
            match tokio::net::TcpListener::bind(local).await {
                Ok(tcp) => return Ok(MediaSockets { udp, tcp, local }),
                Err(e) if port == 0 => {
                    debug!("TCP port {} taken ({e}), trying another", local.port())
                }
                Err(e) => return Err(e).with_context(|| format!("binding ICE-TCP port {local}")),
            }
        }
        anyhow::bail!("could not find a port free for both UDP and TCP")
    }
}

/// Socket buffer size asked for (the kernel caps it at `net.core.rmem_max`/`wmem_max`).
const UDP_BUFFER_BYTES: usize = 4 << 20;

/// Gives the media socket room for bursts. One socket takes every subscriber's RTCP, and
/// they all answer the same video frame at once: with the default ~200 KiB, a burst of
/// feedback at a few hundred subscribers overflowed it and took publisher packets with it.
fn enlarge_buffers(udp: &UdpSocket) {
    let socket = socket2::SockRef::from(udp);
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        warn!("could not enlarge the media receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        warn!("could not enlarge the media send buffer: {e}");
    }
    debug!(
        receive = ?socket.recv_buffer_size(),
        send = ?socket.send_buffer_size(),
        "media socket buffers"
    );
}

/// Starts the media task and its sending thread. The task runs until `cancel` fires,
/// then ends every session. An ICE-TCP connection that passes no ICE check within
/// `tcp_check_within` of opening is closed.
pub fn spawn(
    sfu: Sfu,
    sockets: MediaSockets,
    tcp_check_within: std::time::Duration,
    webhooks: Option<mpsc::Sender<WebhookKind>>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<MediaHandle> {
    let forward_delay =
        ForwardDelay::new(std::sync::Mutex::new(Histogram::new(FORWARD_DELAY_BOUNDS)));
    let egress = Egress::start(&sockets.udp, forward_delay.clone())?;
    let (commands, rx) = mpsc::channel(1024);
    let (tcp_tx, tcp_rx) = mpsc::channel(4096);
    tracker.spawn(tcp::accept_loop(
        sockets.tcp,
        tcp_tx,
        cancel.clone(),
        tracker.clone(),
    ));
    let driver = Driver {
        sfu,
        udp: sockets.udp,
        egress,
        local: sockets.local,
        sessions: HashMap::new(),
        tcp: tcp::TcpConnections::new(tcp_check_within),
        webhooks,
        arrived: None,
    };
    tracker.spawn(driver.run(rx, tcp_rx, cancel));
    Ok(MediaHandle {
        commands,
        forward_delay,
    })
}

struct Driver {
    sfu: Sfu,
    /// Receives; sending goes through `egress`.
    udp: UdpSocket,
    egress: Egress,
    local: SocketAddr,
    sessions: HashMap<ParticipantId, (ConnId, SessionSender)>,
    tcp: tcp::TcpConnections,
    webhooks: Option<mpsc::Sender<WebhookKind>>,
    /// The kernel's stamp of the earliest UDP datagram handed to the core since the last
    /// flush: what the flushed datagrams' delay is measured from.
    arrived: Option<u64>,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut tcp_rx: mpsc::Receiver<tcp::TcpEvent>,
        cancel: CancellationToken,
    ) {
        let mut buf = vec![0u8; 2048];
        loop {
            let deadline = tokio::time::Instant::from_std(self.sfu.poll_timeout());
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(cmd) = commands.recv() => self.handle_command(cmd),
                received = arrival::receive(&self.udp, &mut buf) => match received {
                    Ok(a) => {
                        self.handle_udp(&a, &buf[..a.len]);
                        self.receive_burst(&mut buf);
                    }
                    // ICMP errors (a peer went away) surface here; they are not ours to fix.
                    Err(e) => debug!("UDP receive error: {e}"),
                },
                Some(event) = tcp_rx.recv() => match event {
                    tcp::TcpEvent::Opened { remote, writer } => self.tcp.opened(Instant::now(), remote, writer),
                    tcp::TcpEvent::Frame { remote, data } => self.handle_tcp(remote, &data),
                    tcp::TcpEvent::Closed { remote } => self.tcp.closed(remote),
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let now = Instant::now();
            if now >= self.sfu.poll_timeout() {
                self.sfu.handle_timeout(now);
            }
            self.tcp.close_unchecked(now);
            self.flush();
        }
        info!("media engine stopping: ending every session");
        self.sfu.shutdown(Instant::now());
        self.flush();
    }

    /// Hands the core whatever else already waits on the socket before it is polled: a
    /// video frame arrives as a burst of packets, and the core then drains each
    /// subscriber once for the whole burst.
    fn receive_burst(&mut self, buf: &mut [u8]) {
        for _ in 0..RECEIVE_BURST {
            match arrival::try_receive(&self.udp, buf) {
                Ok(a) => self.handle_udp(&a, &buf[..a.len]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => debug!("UDP receive error: {e}"),
            }
        }
    }

    fn handle_udp(&mut self, arrival: &arrival::Arrival, data: &[u8]) {
        if let Some(at) = arrival.unix_micros {
            self.arrived = Some(self.arrived.map_or(at, |earliest| earliest.min(at)));
        }
        let now = Instant::now();
        self.sfu
            .handle_datagram(now, Protocol::Udp, arrival.source, self.local, data);
    }

    fn handle_tcp(&mut self, remote: SocketAddr, frame: &[u8]) {
        self.sfu
            .handle_datagram(Instant::now(), Protocol::Tcp, remote, self.local, frame);
        if self.tcp.is_unchecked(remote) && self.sfu.knows_address(Protocol::Tcp, remote) {
            self.tcp.checked(remote);
        }
    }

    fn handle_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Enter {
                entry,
                conn,
                session,
                reply,
            } => {
                let result = match entry {
                    Entry::Join(req) => self.sfu.join(now, req),
                    Entry::Resume(req) => self.sfu.resume(now, req),
                };
                if let Ok(id) = result {
                    // A socket still half-open from before a resume is told to close.
                    if let Some((_, old)) = self.sessions.insert(id, (conn, session)) {
                        let _ = old.try_send(SessionEvent::Close);
                    }
                }
                let _ = reply.send(result);
            }
            Command::Message { id, msg } => self.sfu.handle_message(now, id, msg),
            Command::SignalLost { id, conn } => {
                if self.sessions.get(&id).is_some_and(|(c, _)| *c == conn) {
                    self.sessions.remove(&id);
                    self.sfu.signal_lost(now, id);
                }
            }
            Command::Call(call) => call(&mut self.sfu, now),
        }
    }

    /// Carries out everything the core asked for. Its UDP datagrams go to the sending
    /// thread a `sendmmsg` at a time, so the first subscribers' packets leave while the
    /// core is still encrypting for the rest.
    fn flush(&mut self) {
        let arrived = self.arrived.take();
        let mut datagrams = Batch::new();
        while let Some(output) = self.sfu.poll_output() {
            match output {
                Output::Transmit(t) => match t.proto {
                    Protocol::Udp => {
                        datagrams.push((t.destination, t.contents));
                        if datagrams.len() == egress::MAX_PER_SYSCALL {
                            self.egress.send(std::mem::take(&mut datagrams), arrived);
                        }
                    }
                    _ => {
                        if let Some(writer) = self.tcp.writer(t.destination) {
                            let _ = writer.try_send(t.contents);
                        }
                    }
                },
                Output::Signal(id, msg) => {
                    if let Some((_, session)) = self.sessions.get(&id) {
                        if let Err(e) = session.try_send(SessionEvent::Message(msg)) {
                            match e {
                                session_queue::SendError::Full => {
                                    warn!(
                                        ?id,
                                        "client is not reading its signalling; dropping the socket"
                                    )
                                }
                                // The socket closed and its task has not told us yet.
                                session_queue::SendError::Closed => {
                                    debug!(?id, "signalling socket already closed")
                                }
                            }
                            if let Some((_, session)) = self.sessions.remove(&id) {
                                let _ = session.try_send(SessionEvent::Close);
                            }
                            self.sfu.signal_lost(Instant::now(), id);
                        }
                    }
                }
                Output::Broadcast(ids, text) => {
                    let text = axum::extract::ws::Utf8Bytes::from(text);
                    for id in ids {
                        let Some((_, session)) = self.sessions.get(&id) else {
                            continue;
                        };
                        // A viewer too far behind loses its socket and catches up on
                        // reconnecting (room events are numbered); the room goes on.
                        if session.try_send(SessionEvent::Text(text.clone())).is_err() {
                            if let Some((_, session)) = self.sessions.remove(&id) {
                                let _ = session.try_send(SessionEvent::Close);
                            }
                            self.sfu.signal_lost(Instant::now(), id);
                        }
                    }
                }
                Output::Disconnect(id) => {
                    if let Some((_, session)) = self.sessions.remove(&id) {
                        let _ = session.try_send(SessionEvent::Close);
                    }
                }
                Output::Webhook(event) => {
                    if let Some(tx) = &self.webhooks {
                        if tx.try_send(*event).is_err() {
                            warn!("webhook queue full; an event was not delivered");
                        }
                    }
                }
                _ => {}
            }
        }
        self.egress.send(datagrams, arrived);
    }
}
