//! Starts the real `souk` binary on ephemeral ports for integration tests.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub url: String,
    pub http: String,
    /// The first media engine's port (UDP and ICE-TCP).
    pub media_port: u16,
    child: Child,
    args: Vec<String>,
    data_dir: std::path::PathBuf,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// Starts with a configuration file holding `toml` (written to a temporary file, read
    /// at start, then removed), plus `--dev` for the published key.
    pub fn start_with_config(toml: &str) -> TestServer {
        Self::start_with_config_and(toml, &[])
    }

    pub fn start_with_config_and(toml: &str, extra: &[&str]) -> TestServer {
        let path = std::env::temp_dir().join(format!("{}.toml", unique("souk-test")));
        std::fs::write(&path, toml).expect("temporary config written");
        let mut args = vec!["--config", path.to_str().expect("utf-8 temp path")];
        args.extend_from_slice(extra);
        let server = Self::start_with(&args);
        let _ = std::fs::remove_file(path);
        server
    }

    /// Starts `souk serve --dev` on ephemeral ports with its own data directory.
    pub fn start_with(extra: &[&str]) -> TestServer {
        let data_dir = std::env::temp_dir().join(unique("souk-test-data"));
        let mut args: Vec<String> = [
            "serve",
            "--dev",
            "--bind",
            "127.0.0.1:0",
            "--media-port",
            "0",
            "--data-dir",
            data_dir.to_str().expect("utf-8 temp path"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let (child, url, media_port) = spawn(&args);
        let http = host_of(&url);
        TestServer {
            url,
            http,
            media_port,
            child,
            args,
            data_dir,
        }
    }

    /// Kills the server with SIGKILL (no shutdown at all) and starts it again on the
    /// same data, as after a crash. The HTTP port changes.
    pub fn crash_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL delivered");
        let _ = self.child.wait();
        // A config file given at start is gone by now; restarts keep to flag-only servers.
        let (child, url, media_port) = spawn(&self.args);
        self.child = child;
        self.media_port = media_port;
        self.http = host_of(&url);
        self.url = url;
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
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned()
}

/// Starts `souk ARGS` and reads the address and first media port it printed.
fn spawn(args: &[String]) -> (Child, String, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_souk"))
        .args(args)
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
    let (url, media_port) = loop {
        let line = lines
            .next()
            .expect("souk printed its address")
            .expect("readable stdout");
        if let Some(rest) = line.strip_prefix("souk listening http=") {
            let mut fields = rest.split_whitespace();
            let url = fields.next().expect("an address").to_owned();
            let media_port = fields
                .find_map(|f| f.strip_prefix("media="))
                .and_then(|ports| ports.split(',').next()?.parse().ok())
                .expect("a media port");
            break (url, media_port);
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url, media_port)
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

/// The server's `/metrics` page.
pub async fn metrics(server: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Reads one gauge from `/metrics`.
pub async fn gauge(server: &TestServer, name: &str) -> u64 {
    let body = metrics(server).await;
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

/// Where a test's server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default, in the server's own data directory.
    Sqlite,
    /// A fresh database on the PostgreSQL at `SOUK_TEST_POSTGRES`
    /// (default `postgres://postgres@127.0.0.1:5432`).
    Postgres,
}

/// A database created for one test and dropped after it.
pub type PgDatabase = souk_store::scratch::PgScratch;

/// A server on `backend`; configuration `toml` may be empty. The database comes first:
/// bindings drop in reverse, so the server stops before its database is dropped.
pub fn server_on(backend: Backend, toml: &str) -> (Option<PgDatabase>, TestServer) {
    let db = (backend == Backend::Postgres).then(|| {
        PgDatabase::create(&souk_store::scratch::postgres_base(), "souk_test")
            .unwrap_or_else(|e| panic!("{e} (scripts/test starts PostgreSQL)"))
    });
    let url = db.as_ref().map(PgDatabase::url);
    let mut extra: Vec<&str> = Vec::new();
    if let Some(url) = &url {
        extra.extend(["--db", url.as_str()]);
    }
    let server = if toml.is_empty() {
        TestServer::start_with(&extra)
    } else {
        TestServer::start_with_config_and(toml, &extra)
    };
    (db, server)
}

/// A chat token for `identity`, answering for `shops`.
pub fn chat_token(identity: &str, shops: &[&str]) -> String {
    let mut args = vec!["--chat", "--identity", identity];
    for shop in shops {
        args.extend(["--shop", shop]);
    }
    token(&args)
}

/// The development API secret, which signs webhooks from `--dev` servers.
pub const DEV_SECRET: &str = "souk-dev-secret-0123456789abcdef";

/// Checks a `Souk-Signature: t=...,v1=...` header against the body.
pub fn verify_signature(sig_header: &str, body: &str) -> bool {
    use hmac::Mac;
    let mut t = "";
    let mut v1 = "";
    for part in sig_header.split(',') {
        if let Some(x) = part.strip_prefix("t=") {
            t = x;
        } else if let Some(x) = part.strip_prefix("v1=") {
            v1 = x;
        }
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(DEV_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes()) == v1
}

/// A merchant's push endpoint that refuses its first `refuse` deliveries (to exercise
/// the outbox's retries), then passes on each signed body it accepts.
pub async fn push_receiver(
    refuse: u32,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    std::sync::Arc<std::sync::atomic::AtomicU32>,
) {
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::atomic::Ordering;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = refused.clone();
    let app = axum::Router::new().route(
        "/push",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (tx, counter) = (tx.clone(), counter.clone());
            async move {
                if counter.load(Ordering::Relaxed) < refuse {
                    counter.fetch_add(1, Ordering::Relaxed);
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let sig = headers
                    .get("souk-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if !verify_signature(sig, &body) {
                    return StatusCode::UNAUTHORIZED;
                }
                let _ = tx.send(serde_json::from_str(&body).expect("JSON push"));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/push"), rx, refused)
}

/// An OpenAI-compatible chat-completions endpoint that answers every request with
/// `reply`, counting the calls. It checks the request has the shape a real provider
/// requires.
pub async fn scripted_completions(
    reply: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use axum::http::StatusCode;
    use std::sync::atomic::Ordering;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(req): axum::Json<serde_json::Value>| {
            let counter = counter.clone();
            async move {
                let well_formed = req["model"].is_string()
                    && req["messages"].as_array().is_some_and(|m| {
                        m.iter()
                            .all(|x| x["role"].is_string() && x["content"].is_string())
                    });
                if !well_formed {
                    return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({})));
                }
                counter.fetch_add(1, Ordering::Relaxed);
                (
                    StatusCode::OK,
                    axum::Json(serde_json::json!({
                        "id": "cmpl-1", "object": "chat.completion", "model": req["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": reply}}],
                    })),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), calls)
}

/// The development API key and secret, for REST calls.
pub const KEY: &str = "devkey";
pub const SECRET: &str = DEV_SECRET;

/// The room-service API as a merchant's backend calls it.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(server: &TestServer) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("{}/api/v1", server.url),
        }
    }

    /// Sends an authenticated request; returns the status and the JSON body (null if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.send(
            self.http
                .request(method, format!("{}{path}", self.base))
                .basic_auth(KEY, Some(SECRET)),
            body,
        )
        .await
    }

    pub async fn send(
        &self,
        mut req: reqwest::RequestBuilder,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// Sends `msg` (carrying `req`) and waits for its answer: the ack's result, or the code.
pub async fn request(
    client: &souk_client::Client,
    msg: souk_proto::signal::ClientMessage,
    req: u32,
) -> Result<serde_json::Value, String> {
    use souk_proto::signal::ServerMessage;
    client.send(msg).await.map_err(|e| e.to_string())?;
    let stats = client
        .wait_for("an answer", WAIT, |s| {
            s.messages.iter().any(|m| match m {
                ServerMessage::Ack(a) => a.req == Some(req),
                ServerMessage::Error(e) => e.req == Some(req),
                _ => false,
            }) || s.ended
        })
        .await
        .map_err(|e| e.to_string())?;
    stats
        .messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Ack(a) if a.req == Some(req) => {
                Some(Ok(a.result.clone().unwrap_or_default()))
            }
            ServerMessage::Error(e) if e.req == Some(req) => Some(Err(e.code.as_str().to_owned())),
            _ => None,
        })
        .unwrap_or_else(|| Err("closed".into()))
}
