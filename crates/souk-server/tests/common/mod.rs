//! Starts the real `souk` binary on ephemeral ports for integration tests.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub url: String,
    pub http: String,
    child: Child,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// Starts with a configuration file holding `toml` (written to a temporary file, read
    /// at start, then removed), plus `--dev` for the published key.
    pub fn start_with_config(toml: &str) -> TestServer {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("souk-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, toml).expect("temporary config written");
        let server = Self::start_with(&["--config", path.to_str().expect("utf-8 temp path")]);
        let _ = std::fs::remove_file(path);
        server
    }

    pub fn start_with(extra: &[&str]) -> TestServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_souk"))
            .args([
                "serve",
                "--dev",
                "--bind",
                "127.0.0.1:0",
                "--media-port",
                "0",
            ])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("souk starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("souk printed its address")
                .expect("readable stdout");
            if let Some(rest) = line.strip_prefix("souk listening http=") {
                break rest
                    .split_whitespace()
                    .next()
                    .expect("an address")
                    .to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let http = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        TestServer { url, http, child }
    }

    /// A bot joined to `room` as `identity` with `role`, subscribing to everything.
    pub async fn bot(&self, room: &str, identity: &str, role: &str) -> souk_client::Client {
        let token = self.token(room, identity, role);
        souk_client::Client::connect(&self.url, &token, souk_client::ClientOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{identity} could not join {room}: {e}"))
    }

    pub fn token(&self, room: &str, identity: &str, role: &str) -> String {
        token(&["--room", room, "--identity", identity, "--role", role])
    }

    /// The child's pid, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw WebSocket upgrade of `/rtc`, for tests that count refusals without a session.
pub fn upgrade_request(client: &reqwest::Client, server: &TestServer) -> reqwest::RequestBuilder {
    client
        .get(format!("{}/rtc", server.url))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
}

/// `souk token --dev ARGS`.
pub fn token(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_souk"))
        .args(["token", "--dev"])
        .args(args)
        .output()
        .expect("souk token runs");
    assert!(
        out.status.success(),
        "souk token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A raw signalling socket, for sending exactly what a test wants.
pub struct RawSignal {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl RawSignal {
    pub async fn connect(server: &TestServer) -> RawSignal {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/rtc", server.http))
            .await
            .expect("signalling socket opens");
        RawSignal { ws }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        use futures_util::SinkExt;
        let _ = self
            .ws
            .send(tokio_tungstenite::tungstenite::Message::text(text.into()))
            .await;
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) {
        use futures_util::SinkExt;
        let _ = self
            .ws
            .send(tokio_tungstenite::tungstenite::Message::binary(data))
            .await;
    }

    pub async fn join(&mut self, token: &str) -> serde_json::Value {
        self.send_text(
            serde_json::json!({"type": "join", "protocol": 1, "token": token}).to_string(),
        )
        .await;
        self.next_of("joined").await
    }

    /// The next JSON message, or `None` once the socket closed.
    pub async fn next(&mut self) -> Option<serde_json::Value> {
        use futures_util::StreamExt;
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message or a close in time");
            match msg {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                    return Some(serde_json::from_str(&t).expect("server sends JSON"))
                }
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
                | None
                | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Skips messages until one of `kind` arrives.
    pub async fn next_of(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let msg = self
                .next()
                .await
                .unwrap_or_else(|| panic!("socket closed before a '{kind}'"));
            if msg["type"] == kind {
                return msg;
            }
        }
    }

    /// The error code of the next `error` message.
    pub async fn next_error(&mut self) -> String {
        self.next_of("error").await["code"]
            .as_str()
            .expect("a code")
            .to_owned()
    }

    /// True once the server closed the socket (skipping any remaining messages).
    pub async fn closed(&mut self) -> bool {
        while self.next().await.is_some() {}
        true
    }
}

/// Reads one gauge from `/metrics`.
pub async fn gauge(server: &TestServer, name: &str) -> u64 {
    let body = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no gauge {name} in:\n{body}"))
}

/// Polls `f` until true or the deadline, for conditions that settle asynchronously.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}
