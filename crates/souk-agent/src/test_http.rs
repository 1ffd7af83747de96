//! A scripted HTTP server for the providers' tests: one request on a local port, answered
//! with exactly the bytes a test gives (or not at all), so each provider is checked
//! against the wire format rather than a mock of itself.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct OneRequest {
    /// `http://127.0.0.1:PORT/v1`.
    pub base: String,
    /// The request as received, headers and body.
    pub request: oneshot::Receiver<Vec<u8>>,
    /// Whether the client hung up within 10 s of the answer (a cancelled request).
    pub hung_up: JoinHandle<bool>,
}

/// Serves one request on a new local port.
pub async fn serve_one(response: Option<Vec<u8>>) -> OneRequest {
    serve_one_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), response)
}

pub fn serve_one_on(listener: TcpListener, response: Option<Vec<u8>>) -> OneRequest {
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let (tx, request) = oneshot::channel();
    let hung_up = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        // One request only: the port is free again for a test that serves on it next.
        drop(listener);
        let mut received = Vec::new();
        let mut buf = [0u8; 16384];
        // Headers, then the body its Content-Length announces.
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
            let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&received[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                break;
            }
        }
        let _ = tx.send(received);
        if let Some(response) = response {
            socket.write_all(&response).await.unwrap();
        }
        matches!(
            tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    });
    OneRequest {
        base,
        request,
        hung_up,
    }
}

/// A whole HTTP response with a body.
pub fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A local address nothing listens on.
pub async fn closed_base() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    base
}
