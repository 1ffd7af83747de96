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
use souk_client::LatencyHistogram;

use anyhow::bail;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::bots::BotRuntime;
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
    /// Threads the viewer bots run on. The server shares the machine with them; on a
    /// 2-core machine one thread keeps the bots to at most one core.
    #[arg(long, default_value_t = 1)]
    bot_threads: usize,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The slowest trip told apart: well past the goal (200 ms) and past the slowest seen.
const RANGE_MS: u64 = 5_000;

/// Each comment's trip: to the viewer's socket and to the viewer bot. Histograms, since
/// ten million trips a window kept one by one cost the bots memory and copies.
struct Samples {
    at_socket: LatencyHistogram,
    in_bot: LatencyHistogram,
}

impl Default for Samples {
    fn default() -> Self {
        Samples {
            at_socket: LatencyHistogram::with_range_ms(RANGE_MS),
            in_bot: LatencyHistogram::with_range_ms(RANGE_MS),
        }
    }
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
    static COMMENT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("\"text\":\"t="));
    COMMENT.find_iter(frame.as_bytes()).filter_map(|at| {
        let rest = &frame[at + COMMENT.needle().len()..];
        let end = rest.find('"')?;
        rest[..end].parse().ok()
    })
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
    let bots = BotRuntime::new(args.bot_threads)?;
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
                joins.push(bots.handle().spawn(async move {
                    let mut viewer = StampedViewer::join(addr, from, &t).await?;
                    tokio::spawn(async move {
                        while let Ok(Some((text, at_socket))) = viewer.next_text().await {
                            let now = unix_micros();
                            let from = measuring.load(Ordering::Relaxed);
                            let mut sent = stamps(&text).filter(|s| *s >= from).peekable();
                            if sent.peek().is_none() {
                                continue;
                            }
                            let mut samples = samples.lock().expect("samples");
                            for s in sent {
                                samples.in_bot.record_micros(now.saturating_sub(s));
                                if let Some(at) = at_socket {
                                    samples.at_socket.record_micros(at.saturating_sub(s));
                                }
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
            at_socket,
            in_bot: all,
        } = std::mem::take(&mut *samples.lock().expect("samples"));
        let percentile = |h: &LatencyHistogram, q| h.quantile_ms(q).unwrap_or(f64::NAN);
        let ticks = proc_stat::ticks_per_second() as f64;
        println!(
            "| {target} | {:.0} | {} | {} | {:.0} | {} of {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1} |",
            sent as f64 / elapsed,
            shed.load(Ordering::Relaxed) - shed0,
            refused.load(Ordering::Relaxed) - refused0,
            all.count() as f64 / elapsed,
            all.count(),
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
