//! Janus, the comparison SFU: its configuration written here, the process started and
//! stopped here, and its VideoRoom plugin spoken to over Janus's HTTP API, so the same
//! bots ([`ExternalPeers`]) publish to and receive from it.
//!
//! Janus gathers no ICE candidates on `lo`, so it runs where a veth interface exists
//! (`bench/netns.sh` makes one) and is told to use only that interface. Its packets
//! then leave through that interface, so the bots use the interface's own address:
//! sent to a second local address, they would go out on the wire, and the other end
//! of the pair drops packets that come from one of its own addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use souk_client::{ExternalPeers, SyntheticMedia};
use tokio::sync::mpsc;

/// The room the configuration creates; one publisher, bitrate cap above the workload.
const ROOM: u64 = 1;
const ROOM_BITRATE: u64 = 8_000_000;
/// How long one request may wait for its asynchronous event.
const EVENT_WAIT: Duration = Duration::from_secs(20);

/// Janus's events for each plugin handle, delivered by the long-poll task.
type Mailboxes = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>>;

/// A running Janus with one API session; stopped on drop.
pub struct Janus {
    child: Child,
    config_dir: PathBuf,
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/janus/SESSION`
    session_url: String,
    mailboxes: Mailboxes,
    poller: tokio::task::JoinHandle<()>,
    transactions: AtomicU64,
    /// The address of the interface Janus uses, for the bots.
    address: IpAddr,
}

impl Drop for Janus {
    fn drop(&mut self) {
        self.poller.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.config_dir);
    }
}

impl Janus {
    /// Starts `janus` with ICE limited to `iface` and a VideoRoom room for the workload.
    pub async fn start(bin: &str, iface: &str) -> anyhow::Result<Janus> {
        if !std::path::Path::new("/sys/class/net").join(iface).exists() {
            bail!(
                "no network interface '{iface}': Janus gathers no candidates on lo; \
                 run the benchmark through bench/netns.sh, which creates one"
            );
        }
        let address = interface_address(iface)?;
        let port = free_tcp_port()?;
        let config_dir =
            std::env::temp_dir().join(format!("souk-bench-janus-{}", std::process::id()));
        write_config(&config_dir, iface, port)?;
        let log = std::fs::File::create(config_dir.join("janus.log"))?;
        let child = Command::new(bin)
            .arg("-F")
            .arg(&config_dir)
            .arg("-C")
            .arg(config_dir.join("janus.jcfg"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {bin} (apt-get install janus)"))?;
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}/janus");
        let deadline = Instant::now() + Duration::from_secs(30);
        let created = loop {
            let attempt = http
                .post(&base)
                .json(&json!({"janus": "create", "transaction": "create"}))
                .send()
                .await;
            if let Ok(reply) = attempt {
                break reply.json::<Value>().await?;
            }
            if Instant::now() > deadline {
                bail!(
                    "janus did not answer on {base}; see {}",
                    config_dir.join("janus.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let session = created["data"]["id"].as_u64().context("a session id")?;
        let session_url = format!("{base}/{session}");
        let mailboxes = Mailboxes::default();
        let poller = tokio::spawn(long_poll(
            http.clone(),
            session_url.clone(),
            mailboxes.clone(),
        ));
        Ok(Janus {
            child,
            config_dir,
            http,
            session_url,
            mailboxes,
            poller,
            transactions: AtomicU64::new(0),
            address,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where bots bind their media sockets.
    pub fn bot_address(&self) -> IpAddr {
        self.address
    }

    /// Publishes `media` from `peers` into the room; returns the publisher's feed id.
    pub async fn publish(
        &self,
        peers: &ExternalPeers,
        media: SyntheticMedia,
    ) -> anyhow::Result<u64> {
        let mut handle = self.attach().await?;
        let offer = peers.offer_to_publish(media).await?;
        let event = handle
            .request(
                self,
                json!({"request": "joinandconfigure", "room": ROOM, "ptype": "publisher",
                       "display": "bench publisher", "audio": true, "video": true}),
                // Our rids run from the lowest layer to the highest; Janus's default
                // order is the reverse.
                Some(json!({"type": "offer", "sdp": offer, "rid_order": "lmh"})),
            )
            .await?;
        let feed = event["plugindata"]["data"]["id"]
            .as_u64()
            .with_context(|| format!("no publisher id in {event}"))?;
        let answer = event["jsep"]["sdp"]
            .as_str()
            .with_context(|| format!("no answer in {event}"))?;
        peers.accept_publish_answer(answer.to_owned()).await?;
        Ok(feed)
    }

    /// Subscribes `peers` to `feed`'s top simulcast layer.
    pub async fn subscribe(&self, peers: &ExternalPeers, feed: u64) -> anyhow::Result<()> {
        let mut handle = self.attach().await?;
        let event = handle
            .request(
                self,
                json!({"request": "join", "room": ROOM, "ptype": "subscriber",
                       "streams": [{"feed": feed, "substream": 2}]}),
                None,
            )
            .await?;
        let offer = event["jsep"]["sdp"]
            .as_str()
            .with_context(|| format!("no offer in {event}"))?;
        let answer = peers.answer_offer(offer.to_owned()).await?;
        handle
            .request(
                self,
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": answer})),
            )
            .await?;
        Ok(())
    }

    async fn attach(&self) -> anyhow::Result<PluginHandle> {
        let reply = self
            .post(json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}))
            .await?;
        let id = reply["data"]["id"]
            .as_u64()
            .with_context(|| format!("attach failed: {reply}"))?;
        let (tx, events) = mpsc::unbounded_channel();
        self.mailboxes.lock().unwrap().insert(id, tx);
        Ok(PluginHandle { id, events })
    }

    /// Posts one request to the session with a fresh transaction id.
    async fn post(&self, mut body: Value) -> anyhow::Result<Value> {
        let transaction = self.transactions.fetch_add(1, Ordering::Relaxed);
        body["transaction"] = json!(transaction.to_string());
        let reply: Value = self
            .http
            .post(&self.session_url)
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        if reply["janus"] == "error" {
            bail!("janus refused {body}: {reply}");
        }
        Ok(reply)
    }
}

/// One attached VideoRoom handle and the events Janus sends it.
struct PluginHandle {
    id: u64,
    events: mpsc::UnboundedReceiver<Value>,
}

impl PluginHandle {
    /// Sends a plugin message and waits for its event (Janus acks at once and answers
    /// through the long poll).
    async fn request(
        &mut self,
        janus: &Janus,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut message = json!({"janus": "message", "handle_id": self.id, "body": body});
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        janus.post(message.clone()).await?;
        let deadline = tokio::time::Instant::now() + EVENT_WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .with_context(|| format!("no answer from janus to {}", message["body"]))?
                .context("janus session ended")?;
            let data = &event["plugindata"]["data"];
            if let Some(error) = data.get("error") {
                bail!("janus refused {}: {error}", message["body"]);
            }
            if event["janus"] == "event" {
                return Ok(event);
            }
        }
    }
}

/// Receives the session's events (which also keeps the session alive) and hands each
/// to the mailbox of the handle it is for.
async fn long_poll(http: reqwest::Client, session_url: String, mailboxes: Mailboxes) {
    loop {
        let body = match http.get(format!("{session_url}?maxev=100")).send().await {
            Ok(reply) => reply.json::<Value>().await.ok(),
            Err(_) => None,
        };
        let Some(body) = body else {
            // Janus restarting or answering oddly: try again shortly, not in a spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let events = match body {
            Value::Array(events) => events,
            event => vec![event],
        };
        let mailboxes = mailboxes.lock().unwrap();
        for event in events {
            if let Some(mailbox) = event["sender"].as_u64().and_then(|h| mailboxes.get(&h)) {
                let _ = mailbox.send(event);
            }
        }
    }
}

/// The first IPv4 address of `iface`.
fn interface_address(iface: &str) -> anyhow::Result<IpAddr> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", iface])
        .output()
        .context("running ip (iproute2)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("no IPv4 address on {iface}"))
}

/// A TCP port free right now on 127.0.0.1, for Janus's HTTP API.
fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Janus's configuration: only the VideoRoom plugin and the HTTP transport are loaded,
/// ICE uses only `iface`, and the room's bitrate cap sits above the benchmark's.
fn write_config(dir: &std::path::Path, iface: &str, port: u16) -> anyhow::Result<()> {
    const LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";
    std::fs::create_dir_all(dir)?;
    let dir_str = dir.display();
    for (folder, library) in [
        ("plugins", Some("plugins/libjanus_videoroom.so")),
        ("transports", Some("transports/libjanus_http.so")),
        ("none", None),
    ] {
        let folder = dir.join(folder);
        std::fs::create_dir_all(&folder)?;
        if let Some(library) = library {
            let source = std::path::Path::new(LIB).join(library);
            let link = folder.join(source.file_name().expect("a file name"));
            if !link.exists() {
                std::os::unix::fs::symlink(&source, &link)
                    .with_context(|| format!("linking {}", source.display()))?;
            }
        }
    }
    let files = [
        (
            "janus.jcfg",
            format!(
                r#"general: {{
  configs_folder = "{dir_str}"
  plugins_folder = "{dir_str}/plugins"
  transports_folder = "{dir_str}/transports"
  events_folder = "{dir_str}/none"
  loggers_folder = "{dir_str}/none"
  debug_level = 2
}}
media: {{
  rtp_port_range = "40000-60000"
}}
nat: {{
  ice_enforce_list = "{iface}"
}}
"#
            ),
        ),
        (
            "janus.plugin.videoroom.jcfg",
            format!(
                r#"general: {{
}}
room-{ROOM}: {{
  description = "souk-bench"
  publishers = 1
  bitrate = {ROOM_BITRATE}
  videocodec = "vp8"
  audiocodec = "opus"
}}
"#
            ),
        ),
        (
            "janus.transport.http.jcfg",
            format!(
                r#"general: {{
  json = "compact"
  base_path = "/janus"
  http = true
  port = {port}
  https = false
}}
admin: {{
  admin_http = false
}}
"#
            ),
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}
