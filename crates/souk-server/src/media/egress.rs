//! UDP sends on a thread of their own.
//!
//! The kernel does much of a datagram's delivery inside the sending syscall, and with a
//! few hundred subscribers those syscalls took a third of the media task's time (perf,
//! `udp_sendmsg`). The media task hands datagrams over in batches of up to
//! [`MAX_PER_SYSCALL`] and goes on forwarding while this thread sends each batch with
//! one `sendmmsg` on the other core.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use souk_agent::voice::telemetry::Histogram;
use tracing::debug;

/// Datagrams for the network, in the order the core produced them.
pub type Batch = Vec<(SocketAddr, Vec<u8>)>;

/// How long datagrams took through the server: from the kernel's receive stamp of the
/// earliest datagram the core was handed before producing a batch, to the batch's send.
/// For a forwarded packet that is the delay the SFU adds, queueing in its socket
/// included (`souk_media_forward_delay_seconds`).
pub type ForwardDelay = Arc<Mutex<Histogram>>;

/// Fine below 5 ms, where a forwarding delay should sit.
pub const FORWARD_DELAY_BOUNDS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
    0.05, 0.1, 0.25,
];

/// Batches that may wait for the thread; beyond this the thread is far behind and new
/// batches are dropped, as a full socket buffer would drop them.
const QUEUED_BATCHES: usize = 4096;
/// Datagrams per `sendmmsg` call.
pub const MAX_PER_SYSCALL: usize = 64;

/// The media task's end of the sending thread. Dropping it ends the thread once the
/// queued batches are sent.
pub struct Egress {
    batches: mpsc::SyncSender<(Batch, Option<u64>)>,
}

impl Egress {
    /// Starts the thread on a duplicate of `udp`. The duplicate shares the socket's
    /// non-blocking mode, so a full send buffer drops a datagram instead of stalling.
    pub fn start(udp: &tokio::net::UdpSocket, delay: ForwardDelay) -> std::io::Result<Egress> {
        let socket: OwnedFd = socket2::SockRef::from(udp).try_clone()?.into();
        let (batches, queued) = mpsc::sync_channel::<(Batch, Option<u64>)>(QUEUED_BATCHES);
        std::thread::Builder::new()
            .name("souk-egress".into())
            .spawn(move || {
                for (batch, arrived) in queued {
                    send_batch(&socket, &batch);
                    if let Some(arrived) = arrived {
                        let took = unix_micros().saturating_sub(arrived) as f64 / 1e6;
                        let mut delay = delay.lock().unwrap_or_else(|e| e.into_inner());
                        delay.observe_many(took, batch.len() as u64);
                    }
                }
            })?;
        Ok(Egress { batches })
    }

    /// Queues `batch`; `arrived` is the kernel's stamp (µs since the Unix epoch) of the
    /// earliest datagram behind it, if a received datagram was.
    pub fn send(&self, batch: Batch, arrived: Option<u64>) {
        if batch.is_empty() {
            return;
        }
        if let Err(mpsc::TrySendError::Full((batch, _))) = self.batches.try_send((batch, arrived)) {
            debug!(
                datagrams = batch.len(),
                "egress queue full; datagrams dropped"
            );
        }
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn send_batch(socket: &OwnedFd, batch: &Batch) {
    for chunk in batch.chunks(MAX_PER_SYSCALL) {
        let addresses: Vec<socket2::SockAddr> = chunk.iter().map(|(to, _)| (*to).into()).collect();
        let mut buffers: Vec<libc::iovec> = chunk
            .iter()
            .map(|(_, data)| libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = addresses
            .iter()
            .zip(buffers.iter_mut())
            .map(|(to, buffer)| {
                // SAFETY: mmsghdr is a plain C struct for which all zeroes is valid.
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
                header.msg_hdr.msg_namelen = to.len();
                header.msg_hdr.msg_iov = buffer;
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        let mut next = 0;
        while next < headers.len() {
            let pending = &mut headers[next..];
            // SAFETY: each header points into `addresses`, `buffers` and `chunk`, which
            // outlive the call; the count matches the slice.
            let sent = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    pending.as_mut_ptr(),
                    pending.len() as libc::c_uint,
                    0,
                )
            };
            if sent > 0 {
                next += sent as usize;
                continue;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // The first pending datagram could not go (a full buffer, an unreachable or
            // firewalled peer): it is dropped, as the network would drop it.
            debug!(destination = %chunk[next].0, "UDP send failed: {err}");
            next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_arrive_in_order_and_a_bad_destination_does_not_stop_the_rest() {
        let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = receiver.local_addr().unwrap();
        let delay = ForwardDelay::new(Mutex::new(Histogram::new(FORWARD_DELAY_BOUNDS)));
        let egress = Egress::start(&sender, delay.clone()).unwrap();
        // Port 0 cannot be sent to: that datagram fails and is skipped.
        let unreachable: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut batch: Batch = (0u8..100).map(|i| (to, vec![i; 3])).collect();
        batch.insert(50, (unreachable, vec![0xff]));
        // As if the datagram behind the batch had arrived 2 ms ago.
        egress.send(batch, Some(unix_micros() - 2_000));
        let mut buf = [0u8; 16];
        for i in 0u8..100 {
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(10), receiver.recv(&mut buf))
                    .await
                    .expect("a datagram in time")
                    .unwrap();
            assert_eq!(&buf[..n], &[i; 3]);
        }
        // The delay is recorded once the batch is sent, once per datagram.
        let recorded = || delay.lock().unwrap().clone();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while recorded().count < 101 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let h = recorded();
        assert_eq!(h.count, 101);
        let under_1_5ms = h.counts[FORWARD_DELAY_BOUNDS
            .iter()
            .position(|&b| b == 0.0015)
            .unwrap()];
        assert_eq!(under_1_5ms, 0, "2 ms is not under 1.5 ms");
        assert!(h.sum / h.count as f64 >= 0.002);
    }
}
