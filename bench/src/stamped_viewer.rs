//! A viewer bot that speaks just enough WebSocket by hand to know when each message
//! reached its socket.
//!
//! Ten thousand viewer bots share the cores with the server, so a bot may handle a
//! message well after the kernel received it. Reading the socket with `recvmsg`
//! gives the kernel's receive stamp (`SO_TIMESTAMPNS`) of the read that completed each
//! message, as `fanout` does for media: what the server and the path add, apart from
//! the bots' own wait.

use std::io;
use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context};
use souk_client::arrival;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 8192]);
}

pub struct StampedViewer {
    stream: TcpStream,
    /// Bytes read and not yet taken as whole frames.
    pending: Vec<u8>,
    /// The kernel's stamp of the latest read, in µs since the Unix epoch.
    stamp: Option<u64>,
}

impl StampedViewer {
    /// Connects from `from`, upgrades to a WebSocket on `/rtc` and joins with `token`
    /// as an interaction-only viewer; returns once the server says `joined`.
    pub async fn join(addr: SocketAddr, from: IpAddr, token: &str) -> anyhow::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = socket.connect(addr).await?;
        arrival::stamp_arrivals(&stream)?;
        let mut viewer = StampedViewer {
            stream,
            pending: Vec::new(),
            stamp: None,
        };
        // The key is fixed: this client checks nothing of the answer but its status.
        let upgrade = format!(
            "GET /rtc HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        viewer.stream.write_all(upgrade.as_bytes()).await?;
        let head_end = loop {
            if let Some(at) = viewer.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if !viewer.read_more().await? {
                bail!("the server closed the socket during the upgrade");
            }
        };
        let head = String::from_utf8_lossy(&viewer.pending[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            bail!(
                "upgrade refused: {}",
                head.lines().next().unwrap_or_default()
            );
        }
        viewer.pending.drain(..head_end);
        let join = serde_json::json!({"type": "join", "protocol": 1, "token": token, "auto_subscribe": false});
        viewer.send(TEXT, join.to_string().as_bytes()).await?;
        while let Some((text, _)) = viewer.next_text().await? {
            if text.contains("\"type\":\"joined\"") {
                return Ok(viewer);
            }
        }
        bail!("socket closed before joined")
    }

    /// The next text message and the kernel's stamp of the read that completed it;
    /// `None` once the server closes. Pings are answered on the way.
    pub async fn next_text(&mut self) -> anyhow::Result<Option<(String, Option<u64>)>> {
        loop {
            while let Some((opcode, payload)) = take_frame(&mut self.pending)? {
                match opcode {
                    TEXT => {
                        let text = String::from_utf8(payload).context("a text frame")?;
                        return Ok(Some((text, self.stamp)));
                    }
                    PING => self.send(PONG, &payload).await?,
                    CLOSE => return Ok(None),
                    _ => {}
                }
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    /// Appends what the socket has; false at its end.
    async fn read_more(&mut self) -> io::Result<bool> {
        loop {
            self.stream.readable().await?;
            // Read through the thread's scratch buffer: a fresh one per read was zeroed
            // each time, the bots' largest single cost at 10,000 viewers.
            let read = SCRATCH.with_borrow_mut(|buf| {
                let (n, stamp) = arrival::read_stamped(&self.stream, buf)?;
                self.pending.extend_from_slice(&buf[..n]);
                Ok::<_, io::Error>((n, stamp))
            });
            match read {
                Ok((0, _)) => return Ok(false),
                Ok((_, stamp)) => {
                    self.stamp = stamp;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends one frame, masked as a client's must be (RFC 6455 5.3).
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        const MASK: [u8; 4] = [0x5a, 0x3c, 0x96, 0xe1];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
        self.stream.write_all(&frame).await
    }
}

/// Takes one whole frame from the front of `pending`: its opcode and payload. `None`
/// until all of it has arrived. Server frames are unmasked and, from this server, whole
/// messages (no fragments).
fn take_frame(pending: &mut Vec<u8>) -> anyhow::Result<Option<(u8, Vec<u8>)>> {
    let [first, second, ..] = pending[..] else {
        return Ok(None);
    };
    if second & 0x80 != 0 {
        bail!("the server masked a frame");
    }
    if first & 0x80 == 0 {
        bail!("the server fragmented a message");
    }
    let (len, header) = match second & 0x7f {
        126 if pending.len() >= 4 => (u16::from_be_bytes([pending[2], pending[3]]) as usize, 4),
        127 if pending.len() >= 10 => {
            let bytes: [u8; 8] = pending[2..10].try_into().expect("8 bytes");
            (u64::from_be_bytes(bytes) as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if pending.len() < header + len {
        return Ok(None);
    }
    let payload = pending[header..header + len].to_vec();
    pending.drain(..header + len);
    Ok(Some((first & 0x0f, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_whole_and_only_once_complete() {
        let long = vec![b'x'; 300];
        let mut wire = vec![0x81, 5];
        wire.extend_from_slice(b"hello");
        wire.extend_from_slice(&[0x81, 126, 1, 44]);
        wire.extend_from_slice(&long);
        wire.extend_from_slice(&[0x89, 0]);
        let mut pending = wire[..10].to_vec();
        assert_eq!(
            take_frame(&mut pending).unwrap(),
            Some((TEXT, b"hello".to_vec()))
        );
        assert_eq!(
            take_frame(&mut pending).unwrap(),
            None,
            "300 bytes not yet in"
        );
        pending.extend_from_slice(&wire[10..]);
        assert_eq!(take_frame(&mut pending).unwrap(), Some((TEXT, long)));
        assert_eq!(take_frame(&mut pending).unwrap(), Some((PING, Vec::new())));
        assert!(pending.is_empty());
    }

    #[test]
    fn a_masked_or_fragmented_server_frame_is_an_error() {
        assert!(take_frame(&mut vec![0x81, 0x80 | 1, 0, 0, 0, 0, b'a']).is_err());
        assert!(take_frame(&mut vec![0x01, 1, b'a']).is_err());
    }
}
