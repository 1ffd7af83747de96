//! `souk-bench live-fanout`: one live room, thousands of interaction-only viewers (a
//! WebSocket each, no media), and a host commenting at a steady rate. Each comment
//! carries its send time; every viewer bot measures when it arrives, twice: at the
//! kernel's receipt on its socket ([`StampedViewer`]), which is what the server and the
//! path add, and when the bot handles it, which adds the bots' own wait for a core.
//!
//! The bots are deliberately cheap: they do not parse the JSON, they scan each frame for
//! the timestamps, so the load generator is not what is measured.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use souk_client::synthetic::unix_micros;

use anyhow::bail;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::proc_stat;
use crate::server::{bot_ip, room_token, start_server};
use crate::stamped_viewer::StampedViewer;

#[derive(Parser)]
pub struct LiveFanout {
    #[arg(long, default_value = "target/release/souk")]
    souk: String,
    /// Viewer counts to measure at, in increasing order.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    viewers: Vec<usize>,
    /// Comments per second from the host.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Length of each measured window.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Each comment's trip, in µs: to the viewer's socket and to the viewer bot.
#[derive(Default)]
struct Samples {
    at_socket: Vec<u64>,
    in_bot: Vec<u64>,
}

async fn open(addr: SocketAddr, from: IpAddr, token: &str) -> anyhow::Result<Ws> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(addr).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/rtc"), stream).await?;
    let join =
        serde_json::json!({"type": "join", "protocol": 1, "token": token, "auto_subscribe": false});
    ws.send(Message::text(join.to_string())).await?;
    // Wait for `joined` so the measured window starts with everyone in.
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg? {
            if t.contains("\"type\":\"joined\"") {
                return Ok(ws);
            }
            if t.contains("\"type\":\"error\"") {
                bail!("join refused: {t}");
            }
        }
    }
    bail!("socket closed before joined")
}

/// Microsecond timestamps `t=NNN` in a frame.
fn stamps(frame: &str) -> impl Iterator<Item = u64> + '_ {
    frame.split("\"text\":\"t=").skip(1).filter_map(|rest| {
        let end = rest.find('"')?;
        rest[..end].parse().ok()
    })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

pub async fn live_fanout(args: LiveFanout) -> anyhow::Result<()> {
    let server = start_server(&args.souk, &[])?;
    let pid = server.child.id();
    let addr: SocketAddr = server.url.trim_start_matches("http://").parse()?;
    let http = reqwest::Client::new();
    let samples: Arc<Mutex<Samples>> = Arc::default();
    let measuring = Arc::new(AtomicU64::new(u64::MAX));
    let baseline_rss = proc_stat::rss_kib(pid)?;

    let host_token = room_token(&http, &server.url, "fanout", "host", "host").await?;
    let _host = open(addr, IpAddr::V4(Ipv4Addr::LOCALHOST), &host_token).await?;
    // Viewers comment, each once a second (their own limit), so `rate` of them make up
    // the load; their frames are drained and not measured.
    let mut commenters = Vec::new();
    let shed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    for i in 0..args.rate as usize {
        let t = room_token(
            &http,
            &server.url,
            "fanout",
            &format!("commenter-{i}"),
            "audience",
        )
        .await?;
        let from = bot_ip(9, i);
        let (sink, mut stream) = open(addr, from, &t).await?.split();
        let (shed, refused) = (shed.clone(), refused.clone());
        // Count what the room's rules did to each comment: shed under overload, or
        // refused (a rate limit).
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Text(t) = msg {
                    if t.contains("\"shed\":true") {
                        shed.fetch_add(1, Ordering::Relaxed);
                    } else if t.contains("\"type\":\"error\"") {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        commenters.push(sink);
    }

    println!("| viewers | comments/s | shed | refused | deliveries/s | delivered in window | latency at socket p50 ms | latency at socket p99 ms | latency in bot p50 ms | latency in bot p99 ms | latency in bot max ms | server CPU (% of a core) | bots' CPU (% of a core) | server RSS MiB | server memory per viewer KiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut connected = 0usize;
    for &target in &args.viewers {
        // Join in parallel batches, spread over local addresses (the per-address limit).
        while connected < target {
            let batch: Vec<usize> = (connected..target.min(connected + 500)).collect();
            let mut joins = Vec::new();
            for i in batch {
                let t = room_token(
                    &http,
                    &server.url,
                    "fanout",
                    &format!("viewer-{i}"),
                    "audience",
                )
                .await?;
                let from = bot_ip(1, i);
                let (samples, measuring) = (samples.clone(), measuring.clone());
                joins.push(tokio::spawn(async move {
                    let mut viewer = StampedViewer::join(addr, from, &t).await?;
                    tokio::spawn(async move {
                        while let Ok(Some((text, at_socket))) = viewer.next_text().await {
                            let now = unix_micros();
                            let from = measuring.load(Ordering::Relaxed);
                            let sent: Vec<u64> = stamps(&text).filter(|s| *s >= from).collect();
                            if sent.is_empty() {
                                continue;
                            }
                            let mut samples = samples.lock().expect("samples");
                            let trips = |to: u64| sent.iter().map(move |s| to.saturating_sub(*s));
                            samples.in_bot.extend(trips(now));
                            if let Some(at) = at_socket {
                                samples.at_socket.extend(trips(at));
                            }
                        }
                    });
                    anyhow::Ok(())
                }));
            }
            for j in joins {
                j.await??;
            }
            connected = target.min(connected + 500);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        *samples.lock().expect("samples") = Samples::default();
        let (shed0, refused0) = (
            shed.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed),
        );

        let (server0, bots0, t0) = (
            proc_stat::cpu_ticks(pid)?,
            proc_stat::cpu_ticks(std::process::id())?,
            Instant::now(),
        );
        measuring.store(unix_micros(), Ordering::Relaxed);
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / args.rate);
        let mut sent = 0u64;
        while t0.elapsed() < Duration::from_secs(args.seconds) {
            ticker.tick().await;
            let text = format!("t={}", unix_micros());
            let who = sent as usize % commenters.len();
            commenters[who]
                .send(Message::text(
                    serde_json::json!({"type": "comment", "text": text}).to_string(),
                ))
                .await?;
            sent += 1;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let (server1, bots1) = (
            proc_stat::cpu_ticks(pid)?,
            proc_stat::cpu_ticks(std::process::id())?,
        );
        measuring.store(u64::MAX, Ordering::Relaxed);
        // Let the last batches land.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = proc_stat::rss_kib(pid)?;
        let Samples {
            mut at_socket,
            in_bot: mut all,
        } = std::mem::take(&mut *samples.lock().expect("samples"));
        all.sort_unstable();
        at_socket.sort_unstable();
        let ticks = proc_stat::ticks_per_second() as f64;
        println!(
            "| {target} | {:.0} | {} | {} | {:.0} | {} of {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1} |",
            sent as f64 / elapsed,
            shed.load(Ordering::Relaxed) - shed0,
            refused.load(Ordering::Relaxed) - refused0,
            all.len() as f64 / elapsed,
            all.len(),
            sent as usize * target,
            percentile(&at_socket, 0.5),
            percentile(&at_socket, 0.99),
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            percentile(&all, 1.0),
            (server1 - server0) as f64 / ticks / elapsed * 100.0,
            (bots1 - bots0) as f64 / ticks / elapsed * 100.0,
            rss as f64 / 1024.0,
            rss.saturating_sub(baseline_rss) as f64 / target as f64,
        );
    }
    Ok(())
}
