//! `souk-bench fanout`: one bot publisher fanned out to bot subscribers added in steps.
//!
//! The publisher sends synthetic VP8 (three simulcast layers by default) and Opus, each
//! payload stamped with its send time; every subscriber takes the top layer. At each
//! step, over one window: the server's CPU and memory from /proc, and from the bots the
//! packets they got against the sequence numbers sent (loss) and each payload's trip
//! time (latency). Subscribers receive RTP packets without reassembling frames, so the
//! load generator stays cheap; its own CPU is reported beside the server's.

use std::time::{Duration, Instant};

use clap::Parser;
use souk_client::{Client, ClientOptions, LatencyHistogram, Stats, SyntheticMedia};
use souk_proto::model::TrackKind;

use crate::proc_stat;
use crate::server::{bot_ip, room_token, start_server};

#[derive(Parser)]
pub struct Fanout {
    /// The souk binary to measure.
    #[arg(long, default_value = "target/release/souk")]
    souk: String,
    /// Subscriber counts to measure at, in increasing order.
    #[arg(long, value_delimiter = ',', default_value = "20,50,100")]
    subscribers: Vec<usize>,
    /// Publisher top-layer video bitrate (the other layers are 3/10 and 1/10 of it).
    #[arg(long, default_value_t = 1000)]
    video_kbps: u32,
    /// Publish one layer instead of three.
    #[arg(long)]
    no_simulcast: bool,
    /// Length of each measuring window.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Extra arguments for `souk serve`.
    #[arg(long, allow_hyphen_values = true, value_delimiter = ' ')]
    serve_args: Vec<String>,
}

/// A step is "held" below this loss and latency (issue 6's bar).
const MAX_LOSS: f64 = 0.005;
const MAX_P99_MS: f64 = 20.0;

pub async fn run(args: Fanout) -> anyhow::Result<()> {
    let extra: Vec<&str> = args.serve_args.iter().map(String::as_str).collect();
    let server = start_server(&args.souk, &extra)?;
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
            simulcast: !args.no_simulcast,
            ..Default::default()
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_rss = proc_stat::rss_kib(pid)?;

    println!("| subscribers | egress Mbps (payload) | packets/s out | server CPU (% of a core) | server CPU s per GB | loss % | latency p50 ms | latency p99 ms | server RSS MiB | memory per subscriber KiB | bots' CPU (% of a core) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut subscribers: Vec<Client> = Vec::new();
    let mut held = None;
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
            let bind_ip = bot_ip(0, i);
            subscribers.push(
                Client::connect(
                    &server.url,
                    &t,
                    ClientOptions {
                        bind_ip,
                        receive_packets: true,
                        ..Default::default()
                    },
                )
                .await?,
            );
        }
        for (i, s) in subscribers.iter().enumerate() {
            s.wait_for(
                &format!("subscriber {i} to receive video"),
                Duration::from_secs(60),
                |st| st.frames_of(TrackKind::Video) > 0,
            )
            .await?;
        }
        // Let new subscribers settle on the top layer before measuring.
        tokio::time::sleep(Duration::from_secs(3)).await;

        let before = Totals::of(&subscribers);
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
        let window = Totals::of(&subscribers).since(&before);
        let rss = proc_stat::rss_kib(pid)?;

        let ticks = proc_stat::ticks_per_second() as f64;
        let server_cpu_s = (server_cpu1 - server_cpu0) as f64 / ticks;
        let bots_pct = (bots_cpu1 - bots_cpu0) as f64 / ticks / elapsed * 100.0;
        let loss = window.loss();
        let p50 = window.latency.quantile_ms(0.5).unwrap_or(f64::NAN);
        let p99 = window.latency.quantile_ms(0.99).unwrap_or(f64::NAN);
        println!(
            "| {target} | {:.1} | {:.0} | {:.1} | {:.1} | {:.3} | {p50:.1} | {p99:.1} | {:.1} | {:.0} | {:.1} |",
            window.bytes as f64 * 8.0 / elapsed / 1e6,
            window.packets as f64 / elapsed,
            server_cpu_s / elapsed * 100.0,
            server_cpu_s / (window.bytes as f64 / 1e9),
            loss * 100.0,
            rss as f64 / 1024.0,
            (rss.saturating_sub(baseline_rss)) as f64 / target as f64,
            bots_pct,
        );
        if loss < MAX_LOSS && p99 <= MAX_P99_MS {
            held = Some(target);
        }
    }
    match held {
        Some(n) => println!(
            "\nMost subscribers held (loss < {}%, p99 <= {MAX_P99_MS} ms): {n}",
            MAX_LOSS * 100.0
        ),
        None => println!(
            "\nNo step held loss < {}% and p99 <= {MAX_P99_MS} ms",
            MAX_LOSS * 100.0
        ),
    }
    drop(server);
    Ok(())
}

/// What all subscribers received so far, summed.
#[derive(Default)]
struct Totals {
    bytes: u64,
    packets: u64,
    expected: u64,
    latency: LatencyHistogram,
}

impl Totals {
    fn of(subscribers: &[Client]) -> Totals {
        let mut totals = Totals::default();
        for s in subscribers {
            totals.add(&s.stats());
        }
        totals
    }

    fn add(&mut self, stats: &Stats) {
        for t in stats.tracks.values() {
            self.bytes += t.bytes;
            self.packets += t.packets;
            self.expected += t.packets_expected;
        }
        self.latency.merge(&stats.latency);
    }

    fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            bytes: self.bytes - earlier.bytes,
            packets: self.packets - earlier.packets,
            expected: self.expected - earlier.expected,
            latency: self.latency.since(&earlier.latency),
        }
    }

    fn loss(&self) -> f64 {
        if self.expected == 0 {
            return 1.0;
        }
        self.expected.saturating_sub(self.packets) as f64 / self.expected as f64
    }
}
