//! ICE-TCP (RFC 6544) on the media port: for networks that block UDP.
//!
//! Each packet on the stream is framed with a two-byte length (RFC 4571). Readers hand
//! frames to the media task; a writer per connection frames what the core sends back.

use std::net::SocketAddr;

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

pub async fn accept_loop(
    listener: TcpListener,
    events: mpsc::Sender<TcpEvent>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
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
        if open.load(std::sync::atomic::Ordering::Relaxed) >= MAX_CONNECTIONS {
            debug!(%remote, "too many ICE-TCP connections; refusing");
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (events, cancel, open) = (events.clone(), cancel.clone(), open.clone());
        tracker.spawn(async move {
            serve(stream, remote, events.clone(), cancel).await;
            let _ = events.send(TcpEvent::Closed { remote }).await;
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
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
