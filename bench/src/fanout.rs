//! `souk-bench fanout`: one bot publisher fanned out to N bot subscribers.

use std::time::{Duration, Instant};

use clap::Parser;
use souk_client::{Client, ClientOptions, SyntheticMedia};
use souk_proto::model::TrackKind;

use crate::proc_stat;
use crate::server::{room_token, start_server};

#[derive(Parser)]
pub struct Fanout {
    /// The souk binary to measure.
    #[arg(long, default_value = "target/release/souk")]
    souk: String,
    /// Subscriber counts to measure at, in increasing order.
    #[arg(long, value_delimiter = ',', default_value = "20,50,100")]
    subscribers: Vec<usize>,
    /// Publisher video bitrate.
    #[arg(long, default_value_t = 500)]
    video_kbps: u32,
    /// Length of each measuring window.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub async fn run(args: Fanout) -> anyhow::Result<()> {
    let server = start_server(&args.souk, &[])?;
    let pid = server.child.id();
    let http = reqwest::Client::new();

    let publisher = Client::connect(
        &server.url,
        &room_token(&http, &server.url, "bench", "publisher", "host").await?,
        ClientOptions::default(),
    )
    .await?;
    publisher
        .publish(SyntheticMedia {
            video_kbps: args.video_kbps,
            ..Default::default()
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_rss = proc_stat::rss_kib(pid)?;

    println!("| subscribers | forwarded streams | egress Mbps (payload) | video fps per subscriber | server CPU (% of a core) | server CPU per forwarded stream (% of a core) | server RSS MiB | memory per subscriber KiB | bots' CPU (% of a core) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut subscribers: Vec<Client> = Vec::new();
    for &target in &args.subscribers {
        while subscribers.len() < target {
            let i = subscribers.len();
            let t = room_token(
                &http,
                &server.url,
                "bench",
                &format!("viewer-{i}"),
                "audience",
            )
            .await?;
            // 20 bots per local address keeps each address under the join rate limit.
            let bind_ip = std::net::Ipv4Addr::new(127, 0, 1, 1 + (i / 20) as u8).into();
            subscribers.push(
                Client::connect(
                    &server.url,
                    &t,
                    ClientOptions {
                        bind_ip,
                        ..Default::default()
                    },
                )
                .await?,
            );
        }
        for (i, s) in subscribers.iter().enumerate() {
            s.wait_for(
                &format!("subscriber {i} to receive video"),
                Duration::from_secs(30),
                |st| st.frames_of(TrackKind::Video) > 0,
            )
            .await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        let before = snapshot(&subscribers);
        let (server_cpu0, bots_cpu0, t0) = (
            proc_stat::cpu_ticks(pid)?,
            proc_stat::cpu_ticks(std::process::id())?,
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        let (server_cpu1, bots_cpu1, elapsed) = (
            proc_stat::cpu_ticks(pid)?,
            proc_stat::cpu_ticks(std::process::id())?,
            t0.elapsed().as_secs_f64(),
        );
        let after = snapshot(&subscribers);
        let rss = proc_stat::rss_kib(pid)?;

        let ticks = proc_stat::ticks_per_second() as f64;
        let server_pct = (server_cpu1 - server_cpu0) as f64 / ticks / elapsed * 100.0;
        let bots_pct = (bots_cpu1 - bots_cpu0) as f64 / ticks / elapsed * 100.0;
        let bytes = after.0 - before.0;
        let video_frames = after.1 - before.1;
        let streams = target * 2;
        println!(
            "| {target} | {streams} | {:.1} | {:.1} | {:.1} | {:.3} | {:.1} | {:.0} | {:.1} |",
            bytes as f64 * 8.0 / elapsed / 1e6,
            video_frames as f64 / elapsed / target as f64,
            server_pct,
            server_pct / streams as f64,
            rss as f64 / 1024.0,
            (rss.saturating_sub(baseline_rss)) as f64 / target as f64,
            bots_pct,
        );
    }
    drop(server);
    Ok(())
}

/// Total bytes and video frames received by all subscribers so far.
fn snapshot(subscribers: &[Client]) -> (u64, u64) {
    subscribers.iter().fold((0, 0), |(bytes, frames), s| {
        let st = s.stats();
        (
            bytes + st.tracks.values().map(|t| t.bytes).sum::<u64>(),
            frames + st.frames_of(TrackKind::Video),
        )
    })
}
