//! Chat benchmarks: live delivery at a steady rate, and catching up after being offline.
//!
//! Every message carries the time it was sent (microseconds since the run started, on
//! this process's clock), so the receiving bot in the same process measures the whole
//! path: WebSocket in, durable commit, fan-out, WebSocket out.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use souk_client::chat::ChatClient;
use souk_client::ClientError;
use souk_proto::chat::ChatServerMessage;

use souk_store::scratch::PgScratch;

use crate::proc_stat;
use crate::server::{dev_token, start_server, Server};

#[derive(Parser)]
pub struct ChatLive {
    #[arg(long, default_value = "target/release/souk")]
    souk: String,
    /// Connected users; each pair shares one direct conversation.
    #[arg(long, default_value_t = 2000)]
    users: usize,
    /// Messages per second, in total.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Length of the measured window (after a 3 s warm-up).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Run against a fresh database on this PostgreSQL (e.g. postgres://postgres@127.0.0.1:5432)
    /// instead of the embedded SQLite.
    #[arg(long)]
    postgres: Option<String>,
}

#[derive(Parser)]
pub struct ChatSyncBench {
    #[arg(long, default_value = "target/release/souk")]
    souk: String,
    /// Conversations the returning user is in.
    #[arg(long, default_value_t = 100)]
    conversations: usize,
    /// Messages missed in each.
    #[arg(long, default_value_t = 100)]
    per_conversation: usize,
    /// Times the catch-up is measured.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long)]
    postgres: Option<String>,
}

/// The database first: bindings drop in reverse, so the server stops before its database
/// is dropped.
fn start(souk: &str, postgres: Option<&str>) -> anyhow::Result<(Option<PgScratch>, Server)> {
    let db = postgres
        .map(|base| PgScratch::create(base, "souk_bench"))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let url = db.as_ref().map(PgScratch::url);
    let mut extra = Vec::new();
    if let Some(url) = &url {
        extra.extend(["--db", url.as_str()]);
    }
    let server = start_server(souk, &extra)?;
    Ok((db, server))
}

async fn chat_token(http: &reqwest::Client, url: &str, identity: &str) -> anyhow::Result<String> {
    dev_token(http, url, &[("chat", "1"), ("identity", identity)]).await
}

/// Connects users `names`, 20 per local address (the server limits new sockets per
/// address), 100 at a time.
async fn connect_all(
    url: &str,
    names: &[String],
    first_address: usize,
) -> anyhow::Result<Vec<Arc<ChatClient>>> {
    let http = reqwest::Client::new();
    let mut clients = Vec::with_capacity(names.len());
    for (batch_no, batch) in names.chunks(100).enumerate() {
        let mut tasks = Vec::new();
        for (j, name) in batch.iter().enumerate() {
            let i = batch_no * 100 + j + first_address * 20;
            let token = chat_token(&http, url, name).await?;
            let url = url.to_owned();
            let ip = IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                2 + (i / 5000) as u8,
                1 + ((i / 20) % 250) as u8,
            ));
            tasks.push(tokio::spawn(async move {
                ChatClient::connect_from(&url, &token, ip).await
            }));
        }
        for task in tasks {
            clients.push(Arc::new(task.await??));
        }
    }
    Ok(clients)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Sends one message, retrying while the server says to slow down.
async fn send_until_acked(
    client: &ChatClient,
    conversation: &str,
    id: &str,
    text: &str,
) -> anyhow::Result<()> {
    loop {
        match client.send_text(conversation, id, text).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Refused(e)) if e.code.as_str() == "rate_limited" => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub async fn live(args: ChatLive) -> anyhow::Result<()> {
    if !args.users.is_multiple_of(2) || args.users < 2 {
        bail!("--users must be an even number of at least 2");
    }
    if open_files_limit() < (args.users as u64) * 2 + 256 {
        bail!(
            "the open-files limit ({}) is too low for {} sockets on each side; run under `ulimit -n 65536`",
            open_files_limit(),
            args.users
        );
    }
    let (_db, server) = start(&args.souk, args.postgres.as_deref())?;
    let names: Vec<String> = (0..args.users).map(|i| format!("user-{i}")).collect();
    let t_connect = Instant::now();
    let clients = connect_all(&server.url, &names, 0).await?;
    let connect_secs = t_connect.elapsed().as_secs_f64();
    let mut conversations = Vec::new();
    for pair in clients.chunks(2) {
        conversations.push(
            pair[0]
                .open_direct(&names[conversations.len() * 2 + 1])
                .await?
                .id,
        );
    }

    let epoch = Instant::now();
    // Samples count messages sent inside the window (microseconds since `epoch`).
    let window_from = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let delivery: Arc<Mutex<Vec<u64>>> = Arc::default();
    let acks: Arc<Mutex<Vec<u64>>> = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = Vec::new();
    for (client, me) in clients.iter().zip(&names) {
        let (client, me, delivery, window_from) = (
            client.clone(),
            me.clone(),
            delivery.clone(),
            window_from.clone(),
        );
        readers.push(tokio::spawn(async move {
            while let Some(msg) = client.next_pushed(Duration::from_secs(3600)).await {
                let ChatServerMessage::ChatEvent(e) = msg else {
                    continue;
                };
                if e.sender == me {
                    continue;
                }
                let sent = e.body["text"]
                    .as_str()
                    .and_then(|t| t.strip_prefix("t="))
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(sent) =
                    sent.filter(|s| *s >= window_from.load(std::sync::atomic::Ordering::Relaxed))
                {
                    let now = epoch.elapsed().as_micros() as u64;
                    delivery
                        .lock()
                        .expect("samples")
                        .push(now.saturating_sub(sent));
                }
            }
        }));
    }

    let pid = server.child.id();
    let per_tick = (args.rate / 100).max(1) as usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let warmup = Duration::from_secs(3);
    let total = warmup + Duration::from_secs(args.seconds);
    let mut k: usize = 0;
    let mut sent_in_window = 0u64;
    let mut window: Option<(u64, u64, Instant)> = None;
    let started = Instant::now();
    while started.elapsed() < total {
        ticker.tick().await;
        if window.is_none() && started.elapsed() >= warmup {
            window_from.store(
                epoch.elapsed().as_micros() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            window = Some((
                proc_stat::cpu_ticks(pid)?,
                proc_stat::cpu_ticks(std::process::id())?,
                Instant::now(),
            ));
        }
        for _ in 0..per_tick {
            let conv = k % conversations.len();
            let side = (k / conversations.len()) % 2;
            let client = clients[conv * 2 + side].clone();
            let conversation = conversations[conv].clone();
            let (acks, failures, in_window) = (acks.clone(), failures.clone(), window.is_some());
            let id = format!("m{k}");
            k += 1;
            if in_window {
                sent_in_window += 1;
            }
            tokio::spawn(async move {
                let sent = epoch.elapsed().as_micros() as u64;
                match client
                    .send_text(&conversation, &id, &format!("t={sent}"))
                    .await
                {
                    Ok(_) if in_window => acks
                        .lock()
                        .expect("samples")
                        .push(epoch.elapsed().as_micros() as u64 - sent),
                    Ok(_) => {}
                    Err(_) => {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    }
    let (server_cpu0, bench_cpu0, t0) = window.context("the window started")?;
    let elapsed = t0.elapsed().as_secs_f64();
    let server_cpu = (proc_stat::cpu_ticks(pid)? - server_cpu0) as f64;
    let bench_cpu = (proc_stat::cpu_ticks(std::process::id())? - bench_cpu0) as f64;
    // Let the last messages land before reading the samples.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = proc_stat::rss_kib(pid)?;
    let ticks = proc_stat::ticks_per_second() as f64;

    let mut delivery = delivery.lock().expect("samples").clone();
    let mut acks = acks.lock().expect("samples").clone();
    delivery.sort_unstable();
    acks.sort_unstable();
    let backend = if args.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("connected {} users in {connect_secs:.1} s", args.users);
    println!("| store | users | conversations | offered msg/s | sent in window | delivered | delivery p50 ms | delivery p99 ms | delivery max ms | ack p50 ms | ack p99 ms | failed sends | server CPU (% of a core) | bench CPU (% of a core) | server RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {backend} | {} | {} | {} | {sent_in_window} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.0} | {:.0} |",
        args.users,
        conversations.len(),
        args.rate,
        delivery.len(),
        percentile(&delivery, 0.5),
        percentile(&delivery, 0.99),
        percentile(&delivery, 1.0),
        percentile(&acks, 0.5),
        percentile(&acks, 0.99),
        failures.load(std::sync::atomic::Ordering::Relaxed),
        server_cpu / ticks / elapsed * 100.0,
        bench_cpu / ticks / elapsed * 100.0,
        rss as f64 / 1024.0,
    );
    for r in readers {
        r.abort();
    }
    Ok(())
}

pub async fn sync(args: ChatSyncBench) -> anyhow::Result<()> {
    let (_db, server) = start(&args.souk, args.postgres.as_deref())?;
    let peers: Vec<String> = (0..args.conversations)
        .map(|i| format!("peer-{i}"))
        .collect();
    let clients = connect_all(&server.url, &peers, 0).await?;
    let mut fill = Vec::new();
    for client in &clients {
        let client = client.clone();
        let n = args.per_conversation;
        fill.push(tokio::spawn(async move {
            let conv = client.open_direct("returning-user").await?.id;
            for i in 0..n {
                send_until_acked(
                    &client,
                    &conv,
                    &format!("m{i}"),
                    &format!("Message {i}: is the order on its way?"),
                )
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    let t_fill = Instant::now();
    for f in fill {
        f.await??;
    }
    let expected = args.conversations * args.per_conversation;
    println!(
        "wrote {expected} messages in {:.1} s",
        t_fill.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::new();
    let token = chat_token(&http, &server.url, "returning-user").await?;
    println!("| store | conversations | missed messages | round | connect + sync s | events received | unread reported |");
    println!("|---|---|---|---|---|---|---|");
    let backend = if args.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    for round in 1..=args.rounds {
        let t = Instant::now();
        let reader = ChatClient::connect_from(
            &server.url,
            &token,
            IpAddr::V4(Ipv4Addr::new(127, 0, 3, round as u8)),
        )
        .await?;
        let mut cursors: HashMap<String, u64> = HashMap::new();
        let mut received = 0usize;
        let mut unread = 0u64;
        loop {
            let synced = reader.sync(&cursors, Some(500)).await?;
            let mut more = false;
            for view in synced.conversations {
                received += view.events.len();
                if let Some(last) = view.events.last() {
                    cursors.insert(view.conversation.id.clone(), last.seq);
                }
                if !view.has_more {
                    unread += view.unread;
                }
                more |= view.has_more;
            }
            if !more {
                break;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        reader.close();
        if received != expected {
            bail!("round {round}: received {received} events, expected {expected}");
        }
        println!(
            "| {backend} | {} | {expected} | {round} | {secs:.2} | {received} | {unread} |",
            args.conversations
        );
    }
    Ok(())
}
