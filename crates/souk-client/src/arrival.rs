//! Datagrams with the time the kernel received them.
//!
//! A benchmark runs hundreds of bots on the cores the server uses. A bot that is not
//! scheduled for a few milliseconds would count that wait as the server's. The kernel
//! stamps each datagram as it reaches the socket (`SO_TIMESTAMPNS`), before any of it.
//! The server stamps its media socket the same way, so the time a packet waited in the
//! socket counts in the delay it reports.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::Interest;
use tokio::net::{TcpStream, UdpSocket};

/// One datagram read into the caller's buffer.
pub struct Arrival {
    pub len: usize,
    pub source: SocketAddr,
    /// When the kernel received it, in microseconds since the Unix epoch; `None` if the
    /// kernel gave no stamp.
    pub unix_micros: Option<u64>,
}

/// Asks the kernel to stamp what `socket` receives.
pub fn stamp_arrivals(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket, and the option value is a c_int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits for the next datagram on `socket`.
pub async fn receive(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Arrival> {
    socket
        .async_io(Interest::READABLE, || receive_now(socket.as_raw_fd(), buf))
        .await
}

/// The next datagram if one is already waiting; `WouldBlock` if none is.
pub fn try_receive(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Arrival> {
    socket.try_io(Interest::READABLE, || receive_now(socket.as_raw_fd(), buf))
}

fn receive_now(fd: RawFd, buf: &mut [u8]) -> io::Result<Arrival> {
    // SAFETY: `try_init` hands over address storage and its length, alive for the call.
    let ((len, unix_micros), source) = unsafe {
        socket2::SockAddr::try_init(|storage, storage_len| {
            recv_stamped(fd, buf, storage.cast(), &mut *storage_len)
        })?
    };
    let source = source
        .as_socket()
        .ok_or_else(|| io::Error::other("datagram from a non-IP address"))?;
    Ok(Arrival {
        len,
        source,
        unix_micros,
    })
}

/// Reads what is already waiting on a stream socket, with the kernel's stamp of the
/// latest segment read (ask for stamps with [`stamp_arrivals`] first); `WouldBlock` if
/// nothing is. `Ok((0, _))` is the end of the stream.
pub fn read_stamped(stream: &TcpStream, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    let mut no_name_len = 0;
    stream.try_io(Interest::READABLE, || {
        // SAFETY: no address is asked for; `buf` is alive for the call.
        unsafe {
            recv_stamped(
                stream.as_raw_fd(),
                buf,
                std::ptr::null_mut(),
                &mut no_name_len,
            )
        }
    })
}

/// One `recvmsg` into `buf` that also returns the kernel's receive stamp, in
/// microseconds since the Unix epoch. The source address goes to `name` if not null.
///
/// # Safety
/// `name`, when not null, points at `name_len` writable bytes.
unsafe fn recv_stamped(
    fd: RawFd,
    buf: &mut [u8],
    name: *mut libc::c_void,
    name_len: &mut libc::socklen_t,
) -> io::Result<(usize, Option<u64>)> {
    // Room for one timespec control message, aligned as control messages are.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut unix_micros = None;
    // SAFETY: the header points at `iov` (into `buf`), `control` and the caller's
    // address storage, all alive for the call; control messages are read only within
    // the length the kernel reported, through the libc macros.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = name;
        msg.msg_namelen = *name_len;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        *name_len = msg.msg_namelen;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let at: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                unix_micros = Some(at.tv_sec as u64 * 1_000_000 + at.tv_nsec as u64 / 1_000);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n as usize, unix_micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback connection whose reading end asks for the kernel's stamps.
    async fn stamped_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reader = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (writer, _) = listener.accept().await.unwrap();
        stamp_arrivals(&reader).unwrap();
        (reader, writer)
    }

    /// The kernel turns receive stamping on for the whole machine when the first socket
    /// asks, and does so a moment later (from a work queue): a TCP segment that arrives
    /// before then carries no stamp (a datagram is stamped at the read instead). This
    /// connection asks first and holds stamping on, once a segment sent over it arrives
    /// stamped, for as long as the test keeps it.
    async fn kernel_stamping_on() -> (TcpStream, TcpStream) {
        let (reader, mut writer) = stamped_pair().await;
        let mut buf = [0u8; 64];
        let stamped = async {
            loop {
                tokio::io::AsyncWriteExt::write_all(&mut writer, b"probe")
                    .await
                    .unwrap();
                reader.readable().await.unwrap();
                match read_stamped(&reader, &mut buf) {
                    Ok((_, Some(_))) => return,
                    Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), stamped)
            .await
            .expect("the kernel stamps segments within 10 s");
        (reader, writer)
    }

    #[tokio::test]
    async fn a_datagram_arrives_with_its_source_and_a_kernel_stamp() {
        let _stamping = kernel_stamping_on().await;
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        stamp_arrivals(&receiver).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let before = crate::synthetic::unix_micros();
        sender
            .send_to(b"hello", receiver.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let arrival = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            receive(&receiver, &mut buf),
        )
        .await
        .expect("the datagram in time")
        .unwrap();
        let after = crate::synthetic::unix_micros();
        assert_eq!(&buf[..arrival.len], b"hello");
        let none = try_receive(&receiver, &mut buf).err().map(|e| e.kind());
        assert_eq!(none, Some(io::ErrorKind::WouldBlock));
        assert_eq!(arrival.source, sender.local_addr().unwrap());
        let stamp = arrival.unix_micros.expect("a kernel stamp");
        // Same clock, so the stamp falls between the send and the read (with a little
        // slack for the clock's granularity).
        assert!(
            stamp + 1_000 >= before && stamp <= after + 1_000,
            "{before} {stamp} {after}"
        );
    }

    #[tokio::test]
    async fn a_stream_read_carries_the_kernel_stamp_of_its_segment() {
        let _stamping = kernel_stamping_on().await;
        let (reader, mut writer) = stamped_pair().await;
        let mut buf = [0u8; 64];
        let none = read_stamped(&reader, &mut buf).err().map(|e| e.kind());
        assert_eq!(none, Some(io::ErrorKind::WouldBlock));
        let before = crate::synthetic::unix_micros();
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"hi")
            .await
            .unwrap();
        let (n, stamp) = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                reader.readable().await.unwrap();
                match read_stamped(&reader, &mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other.unwrap(),
                }
            }
        })
        .await
        .expect("the bytes in time");
        let after = crate::synthetic::unix_micros();
        assert_eq!(&buf[..n], b"hi");
        let stamp = stamp.expect("a kernel stamp");
        assert!(
            stamp + 1_000 >= before && stamp <= after + 1_000,
            "{before} {stamp} {after}"
        );
    }
}
