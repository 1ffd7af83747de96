//! ICE-TCP (RFC 6544) on the media port: for networks that block UDP.
//!
//! Each packet on the stream is framed with a two-byte length (RFC 4571). Readers hand
//! frames to the media task; a writer per connection frames what the core sends back.
//!
//! Anyone can open connections to the media port, and there is room for only so many.
//! So a connection that has not passed an ICE check of some session soon after opening
//! is closed ([`TcpConnections::close_unchecked`]), and one address may hold only a
//! share of the places ([`Places`]): idle or garbage-sending connections cannot hold
//! the places of browsers that need them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

pub enum TcpEvent {
    Opened {
        remote: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    Frame {
        remote: SocketAddr,
        data: Vec<u8>,
    },
    Closed {
        remote: SocketAddr,
    },
}

/// Frames larger than this are not media; the connection is dropped.
const MAX_FRAME: usize = 1600;
/// Most ICE-TCP connections at once; each is a browser that could not use UDP.
const MAX_CONNECTIONS: usize = 1024;
/// Most at once from one IP address: room for an office behind one NAT, not for one
/// host to take every place by opening connections faster than the check closes them.
const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;

/// The connection places in use, in all and per address.
struct Places {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A connection's place, given back when it is dropped.
struct Place {
    places: Arc<Mutex<Places>>,
    address: IpAddr,
}

impl Places {
    fn shared() -> Arc<Mutex<Places>> {
        Arc::new(Mutex::new(Places {
            total: 0,
            by_address: HashMap::new(),
        }))
    }

    /// A place for a connection from `address`, if there is one.
    fn take(places: &Arc<Mutex<Places>>, address: IpAddr) -> Option<Place> {
        let mut guard = places.lock().unwrap_or_else(|e| e.into_inner());
        let held = guard.by_address.get(&address).copied().unwrap_or(0);
        if guard.total >= MAX_CONNECTIONS || held >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        guard.total += 1;
        guard.by_address.insert(address, held + 1);
        Some(Place {
            places: places.clone(),
            address,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut guard = self.places.lock().unwrap_or_else(|e| e.into_inner());
        guard.total -= 1;
        if let Some(held) = guard.by_address.get_mut(&self.address) {
            *held -= 1;
            if *held == 0 {
                guard.by_address.remove(&self.address);
            }
        }
    }
}

/// The media task's view of the open ICE-TCP connections.
pub struct TcpConnections {
    open: HashMap<SocketAddr, Connection>,
    check_within: Duration,
    next_sweep: Option<Instant>,
}

struct Connection {
    /// Dropping it closes the connection.
    writer: mpsc::Sender<Vec<u8>>,
    /// When it opened, until a session's ICE check passes on it.
    unchecked_since: Option<Instant>,
}

impl TcpConnections {
    /// `check_within`: how long a connection may stay open without passing an ICE check.
    pub fn new(check_within: Duration) -> TcpConnections {
        TcpConnections {
            open: HashMap::new(),
            check_within,
            next_sweep: None,
        }
    }

    pub fn opened(&mut self, now: Instant, remote: SocketAddr, writer: mpsc::Sender<Vec<u8>>) {
        let connection = Connection {
            writer,
            unchecked_since: Some(now),
        };
        self.open.insert(remote, connection);
        self.next_sweep.get_or_insert(now + self.check_within);
    }

    pub fn closed(&mut self, remote: SocketAddr) {
        self.open.remove(&remote);
    }

    pub fn writer(&self, remote: SocketAddr) -> Option<&mpsc::Sender<Vec<u8>>> {
        self.open.get(&remote).map(|c| &c.writer)
    }

    /// Whether `remote` still has to pass its first ICE check.
    pub fn is_unchecked(&self, remote: SocketAddr) -> bool {
        self.open
            .get(&remote)
            .is_some_and(|c| c.unchecked_since.is_some())
    }

    /// A session's ICE check passed on the connection from `remote`: it may stay.
    pub fn checked(&mut self, remote: SocketAddr) {
        if let Some(c) = self.open.get_mut(&remote) {
            c.unchecked_since = None;
        }
    }

    /// Closes the connections that passed no ICE check within the allowed time. Cheap
    /// to call on every turn of the media task: it looks only when one may be due.
    pub fn close_unchecked(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|at| now < at) {
            return;
        }
        let within = self.check_within;
        self.open.retain(|remote, c| {
            let expired = c
                .unchecked_since
                .is_some_and(|since| now.saturating_duration_since(since) >= within);
            if expired {
                debug!(%remote, "ICE-TCP connection passed no ICE check in {within:?}; closing");
            }
            !expired
        });
        self.next_sweep = self
            .open
            .values()
            .filter_map(|c| c.unchecked_since)
            .min()
            .map(|since| since + within);
    }
}

pub async fn accept_loop(
    listener: TcpListener,
    events: mpsc::Sender<TcpEvent>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let places = Places::shared();
    loop {
        let (stream, remote) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!("ICE-TCP accept failed: {e}");
                    continue;
                }
            },
        };
        let Some(place) = Places::take(&places, remote.ip()) else {
            debug!(%remote, "no ICE-TCP place left for this address or at all; refusing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (events, cancel) = (events.clone(), cancel.clone());
        tracker.spawn(async move {
            serve(stream, remote, events.clone(), cancel).await;
            let _ = events.send(TcpEvent::Closed { remote }).await;
            drop(place);
        });
    }
}

async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    events: mpsc::Sender<TcpEvent>,
    cancel: CancellationToken,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
    if events
        .send(TcpEvent::Opened { remote, writer: tx })
        .await
        .is_err()
    {
        return;
    }
    let write = async move {
        while let Some(packet) = rx.recv().await {
            let mut frame = Vec::with_capacity(packet.len() + 2);
            frame.extend_from_slice(&(packet.len() as u16).to_be_bytes());
            frame.extend_from_slice(&packet);
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    let read = async move {
        let mut len = [0u8; 2];
        loop {
            if reader.read_exact(&mut len).await.is_err() {
                return;
            }
            let n = u16::from_be_bytes(len) as usize;
            if n == 0 || n > MAX_FRAME {
                debug!(%remote, n, "ICE-TCP frame of impossible size; closing");
                return;
            }
            let mut data = vec![0u8; n];
            if reader.read_exact(&mut data).await.is_err() {
                return;
            }
            if events.send(TcpEvent::Frame { remote, data }).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = read => {}
        _ = write => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> (mpsc::Sender<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
        mpsc::channel(1)
    }

    #[test]
    fn a_connection_without_an_ice_check_is_closed_after_the_allowed_time() {
        let t0 = Instant::now();
        let within = Duration::from_secs(10);
        let mut conns = TcpConnections::new(within);
        let (idle, mut idle_rx) = connection();
        let (checked, mut checked_rx) = connection();
        let (idle_addr, checked_addr) =
            ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
        conns.opened(t0, idle_addr, idle);
        conns.opened(t0, checked_addr, checked);
        conns.checked(checked_addr);
        assert!(conns.is_unchecked(idle_addr) && !conns.is_unchecked(checked_addr));

        conns.close_unchecked(t0 + within - Duration::from_millis(1));
        assert!(conns.writer(idle_addr).is_some(), "still within its time");

        conns.close_unchecked(t0 + within);
        assert!(conns.writer(idle_addr).is_none());
        assert!(
            idle_rx.try_recv() == Err(mpsc::error::TryRecvError::Disconnected),
            "its writer is dropped, which ends the connection's task"
        );
        assert!(
            conns.writer(checked_addr).is_some(),
            "a checked connection stays"
        );
        assert_eq!(checked_rx.try_recv(), Err(mpsc::error::TryRecvError::Empty));
    }

    #[test]
    fn one_address_holds_only_its_share_of_the_places() {
        let places = Places::shared();
        let (one, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held: Vec<Place> = (0..MAX_CONNECTIONS_PER_ADDRESS)
            .map(|_| Places::take(&places, one).expect("a place"))
            .collect();
        assert!(Places::take(&places, one).is_none(), "its share is used up");
        let elsewhere = Places::take(&places, other);
        assert!(elsewhere.is_some(), "another address still gets one");
        drop(held);
        assert!(
            Places::take(&places, one).is_some(),
            "dropped places come back"
        );
        drop(elsewhere);
        let guard = places.lock().unwrap();
        assert_eq!((guard.total, guard.by_address.len()), (0, 0));
    }

    #[test]
    fn each_connection_gets_its_own_time() {
        let t0 = Instant::now();
        let within = Duration::from_secs(10);
        let mut conns = TcpConnections::new(within);
        let (first, _first_rx) = connection();
        let (later, _later_rx) = connection();
        let (a, b) = ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
        conns.opened(t0, a, first);
        conns.opened(t0 + Duration::from_secs(6), b, later);

        conns.close_unchecked(t0 + within);
        assert!(conns.writer(a).is_none());
        assert!(
            conns.writer(b).is_some(),
            "opened 6 s later, it has 6 s more"
        );
        conns.close_unchecked(t0 + Duration::from_secs(16));
        assert!(conns.writer(b).is_none());
    }
}
