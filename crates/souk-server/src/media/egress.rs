//! UDP sends on a thread of their own.
//!
//! The kernel does much of a datagram's delivery inside the sending syscall, and with a
//! few hundred subscribers those syscalls took a third of the media task's time (perf,
//! `udp_sendmsg`). The media task hands datagrams over in batches of up to
//! [`MAX_PER_SYSCALL`] and goes on forwarding while this thread sends each batch with
//! one `sendmmsg` on the other core. Where a batch holds several datagrams in a row for
//! one peer (the packets of a video frame), they go as one segmented message (UDP GSO),
//! so the kernel's send path runs once for them.

use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};

use souk_client::synthetic::unix_micros;
use souk_metrics::Histogram;
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
                let mut segmentation = Segmentation { enabled: true };
                for (batch, arrived) in queued {
                    send_batch(&socket, &batch, &mut segmentation);
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

/// Segments one message may carry (the kernel's `UDP_MAX_SEGMENTS` on older kernels).
const MAX_SEGMENTS: usize = 64;
/// A segmented message's payload stays under the largest UDP datagram.
const MAX_SEGMENTED_BYTES: usize = 60_000;

/// Whether the kernel splits our messages into datagrams for us (UDP GSO). It is tried
/// first and turned off for good if a segmented message fails where its datagrams sent
/// one by one succeed.
struct Segmentation {
    enabled: bool,
}

/// The runs of `chunk` one segmented message can carry: consecutive datagrams for one
/// destination, each as long as the first except the last, which may be shorter (the
/// kernel cuts the message every first-length bytes). A subscriber's share of a video
/// frame is such a run.
fn runs(chunk: &[(SocketAddr, Vec<u8>)]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (i, (to, data)) in chunk.iter().enumerate() {
        if let Some(run) = runs.last_mut() {
            let (first_to, first) = &chunk[run.start];
            let (_, last) = &chunk[run.end - 1];
            let fits = to == first_to
                && data.len() <= first.len()
                && last.len() == first.len()
                && run.len() < MAX_SEGMENTS
                && (run.len() + 1) * first.len() <= MAX_SEGMENTED_BYTES;
            if fits {
                run.end = i + 1;
                continue;
            }
        }
        runs.push(i..i + 1);
    }
    runs
}

fn send_batch(socket: &OwnedFd, batch: &Batch, segmentation: &mut Segmentation) {
    for chunk in batch.chunks(MAX_PER_SYSCALL) {
        let runs = if segmentation.enabled {
            runs(chunk)
        } else {
            (0..chunk.len()).map(|i| i..i + 1).collect()
        };
        let addresses: Vec<socket2::SockAddr> =
            runs.iter().map(|run| chunk[run.start].0.into()).collect();
        let mut buffers: Vec<libc::iovec> = chunk
            .iter()
            .map(|(_, data)| libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            })
            .collect();
        // One control message per run: the segment size, for runs of more than one.
        let mut controls = vec![[0u64; 4]; runs.len()];
        let mut headers: Vec<libc::mmsghdr> = runs
            .iter()
            .zip(&addresses)
            .zip(controls.iter_mut())
            .map(|((run, to), control)| {
                // SAFETY: mmsghdr is a plain C struct for which all zeroes is valid.
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                let msg = &mut header.msg_hdr;
                msg.msg_name = to.as_ptr() as *mut libc::c_void;
                msg.msg_namelen = to.len();
                msg.msg_iov = buffers[run.clone()].as_mut_ptr();
                msg.msg_iovlen = run.len() as _;
                if run.len() > 1 {
                    let segment = chunk[run.start].1.len() as u16;
                    // SAFETY: `control` is 32 aligned bytes, room for one CMSG_SPACE(2);
                    // the header is written through the libc macros within that room.
                    unsafe {
                        msg.msg_control = control.as_mut_ptr().cast();
                        msg.msg_controllen = libc::CMSG_SPACE(2) as _;
                        let cmsg = libc::CMSG_FIRSTHDR(msg);
                        (*cmsg).cmsg_level = libc::SOL_UDP;
                        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                        (*cmsg).cmsg_len = libc::CMSG_LEN(2) as _;
                        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), segment);
                    }
                }
                header
            })
            .collect();
        let mut next = 0;
        while next < headers.len() {
            let pending = &mut headers[next..];
            // SAFETY: each header points into `addresses`, `buffers`, `controls` and
            // `chunk`, which outlive the call; the count matches the slice.
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
            match err.kind() {
                std::io::ErrorKind::Interrupted => continue,
                // A full buffer: what is pending is dropped, as the network would drop it.
                std::io::ErrorKind::WouldBlock => {}
                _ if runs[next].len() > 1 => {
                    let run = &chunk[runs[next].clone()];
                    if run.iter().all(|(to, data)| send_one(socket, *to, data)) {
                        debug!(
                            "UDP segmentation offload failed ({err}); sending datagrams one by one"
                        );
                        segmentation.enabled = false;
                    }
                }
                // An unreachable or firewalled peer.
                _ => debug!(destination = %chunk[runs[next].start].0, "UDP send failed: {err}"),
            }
            next += 1;
        }
    }
}

/// Sends one datagram; says whether it went.
fn send_one(socket: &OwnedFd, to: SocketAddr, data: &[u8]) -> bool {
    let to = socket2::SockAddr::from(to);
    // SAFETY: the buffer and address outlive the call.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            0,
            to.as_ptr().cast(),
            to.len(),
        )
    };
    sent >= 0
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
        // Runs of equal sizes with a shorter one now and then, as a frame's packets are.
        let size = |i: u8| if i % 7 == 6 { 2 } else { 3 };
        let mut batch: Batch = (0u8..100).map(|i| (to, vec![i; size(i)])).collect();
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
            assert_eq!(&buf[..n], &vec![i; size(i)][..]);
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

    #[test]
    fn a_frame_s_packets_go_as_one_segmented_message_and_arrive_as_they_were() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let to = receiver.local_addr().unwrap();
        let sender: OwnedFd = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().into();
        let frame: Batch = [1200, 1200, 1200, 700]
            .into_iter()
            .enumerate()
            .map(|(i, len)| (to, vec![i as u8; len]))
            .collect();
        let mut segmentation = Segmentation { enabled: true };
        send_batch(&sender, &frame, &mut segmentation);
        assert!(segmentation.enabled, "this kernel segments UDP");
        let mut buf = [0u8; 2048];
        for (_, sent) in &frame {
            let n = receiver.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &sent[..]);
        }
    }

    #[test]
    fn runs_are_one_peer_s_datagrams_as_long_as_the_first_but_the_last() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let chunk: Batch = [
            (a, 5),
            (a, 5),
            (a, 2),
            (a, 5),
            (a, 6),
            (b, 6),
            (b, 6),
            (a, 6),
        ]
        .into_iter()
        .map(|(to, len)| (to, vec![0; len]))
        .collect();
        // A shorter datagram ends a run; a longer one or another peer starts one.
        assert_eq!(runs(&chunk), vec![0..3, 3..4, 4..5, 5..7, 7..8]);
        let many: Batch = (0..MAX_SEGMENTS + 1).map(|_| (a, vec![0; 100])).collect();
        assert_eq!(
            runs(&many),
            vec![0..MAX_SEGMENTS, MAX_SEGMENTS..MAX_SEGMENTS + 1]
        );
        let large: Batch = (0..60).map(|_| (a, vec![0; 1_200])).collect();
        assert_eq!(
            runs(&large),
            vec![0..50, 50..60],
            "60,000 bytes a message at most"
        );
    }
}
