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
        let http = url.trim_start_matches("http://").to_owned();
        TestServer { url, http, child }
    }

    pub fn token(&self, room: &str, identity: &str, role: &str) -> String {
        token(&["--room", room, "--identity", identity, "--role", role])
    }

    /// The child's pid, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
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
