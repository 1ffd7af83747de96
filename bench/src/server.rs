//! Starting the server under test.

use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// A `souk serve --dev` on ephemeral ports, with its own data directory; killed on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
    data_dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub fn start_server(bin: &str, extra: &[&str]) -> anyhow::Result<Server> {
    use std::io::{BufRead, BufReader};
    let data_dir = std::env::temp_dir().join(format!("souk-bench-{}", std::process::id()));
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--dev",
            "--bind",
            "127.0.0.1:0",
            "--media-port",
            "0",
            "--data-dir",
        ])
        .arg(&data_dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let url = loop {
        let Some(line) = lines.next() else {
            bail!("souk exited before listening")
        };
        if let Some(rest) = line?.strip_prefix("souk listening http=") {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Server {
        child,
        url,
        data_dir,
    })
}

/// How many bots share one local address: the server limits joins per address.
const BOTS_PER_ADDRESS: usize = 20;

/// The local address bot number `i` connects from, in `127.{block}.0.0/16`; each block
/// keeps one kind of bot apart from the others.
pub fn bot_ip(block: u8, i: usize) -> std::net::IpAddr {
    let n = i / BOTS_PER_ADDRESS;
    std::net::Ipv4Addr::new(127, block, 1 + (n / 250) as u8, 1 + (n % 250) as u8).into()
}

/// A token from the `--dev` server's token endpoint, for these query parameters.
pub async fn dev_token(
    http: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
) -> anyhow::Result<String> {
    let body: serde_json::Value = http
        .get(format!("{url}/dev/token"))
        .query(query)
        .send()
        .await?
        .json()
        .await?;
    Ok(body["token"]
        .as_str()
        .context("a token in the reply")?
        .to_owned())
}

/// A room token for `identity` with `role` in `room`, from the `--dev` server.
pub async fn room_token(
    http: &reqwest::Client,
    url: &str,
    room: &str,
    identity: &str,
    role: &str,
) -> anyhow::Result<String> {
    dev_token(
        http,
        url,
        &[("room", room), ("identity", identity), ("role", role)],
    )
    .await
}
