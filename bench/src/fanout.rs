//! `souk-bench fanout`: one bot publisher fanned out to bot subscribers added in steps.
//!
//! The publisher sends synthetic VP8 (three simulcast layers by default) and Opus, each
//! payload stamped with its send time; every subscriber takes the top layer. At each
//! step, over one window: the server's CPU and memory from /proc, and from the bots the
//! packets they got against the sequence numbers sent (loss) and each payload's trip
//! time (latency), twice: to the kernel's receipt at the bot's socket, which is what the
//! server and path add, and to the bot's handling, which adds the bots' own scheduling
//! on the shared cores. Subscribers receive RTP packets without reassembling frames, so
//! the load generator stays cheap; its own CPU is reported beside the server's. For Souk
//! the table also gives the delay the server itself reports adding ([`ServerDelay`]),
//! which leaves out the publisher bot and the hops.
//!
//! `--rooms N` (Souk only) runs N such rooms at once, each with its own publisher, and
//! shares the subscribers out between them: the load for a server with several media
//! engines (`--serve-args "--media-threads 2"`), which owns whole rooms per engine.
//!
//! `--servers souk,janus` measures Janus's VideoRoom with the same bots, the same
//! streams and the same steps, one server after the other in one run (run it through
//! `bench/netns.sh`: see [`crate::janus`]).

use std::ops::Deref;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use souk_client::{
    Client, ClientOptions, ExternalPeers, LatencyHistogram, SessionHandle, Stats, SyntheticMedia,
};
use souk_proto::model::TrackKind;

use crate::bots::BotRuntime;
use crate::forward_delay::ServerDelay;
use crate::janus::Janus;
use crate::proc_stat;
use crate::server::{bot_ip, room_token, start_server, Server};

#[derive(Parser, Clone)]
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
    /// Rooms, each with its own publisher; subscriber i joins room i mod N (Souk only).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Extra arguments for `souk serve`.
    #[arg(long, allow_hyphen_values = true, value_delimiter = ' ')]
    serve_args: Vec<String>,
    /// The servers to measure, one after the other.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "souk")]
    servers: Vec<Sfu>,
    /// The janus binary.
    #[arg(long, default_value = "janus")]
    janus: String,
    /// The interface Janus gathers ICE candidates on (bench/netns.sh creates `sb0`).
    #[arg(long, default_value = "sb0")]
    janus_iface: String,
    /// Threads the publisher and subscriber bots run on. The server shares the machine
    /// with them; on a 2-core machine one thread keeps the bots to at most one core.
    #[arg(long, default_value_t = 2)]
    bot_threads: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Sfu {
    Souk,
    Janus,
}

/// A bot's session, whichever signalling it joined with.
type Bot = Box<dyn Deref<Target = SessionHandle> + Send + Sync>;

/// The name of room `r` of `rooms` ("bench" when there is one, as before).
fn room_name(r: usize, rooms: usize) -> String {
    if rooms == 1 {
        "bench".to_owned()
    } else {
        format!("bench-{r}")
    }
}

/// The server under test and how bots join it.
enum UnderTest {
    Souk {
        server: Server,
        http: reqwest::Client,
        rooms: usize,
    },
    Janus {
        janus: Janus,
        feed: u64,
    },
}

impl UnderTest {
    /// Starts `sfu` and publishes the workload's stream into each room.
    async fn start(
        sfu: Sfu,
        args: &Fanout,
        media: SyntheticMedia,
    ) -> anyhow::Result<(UnderTest, Vec<Bot>)> {
        match sfu {
            Sfu::Souk => {
                let extra: Vec<&str> = args.serve_args.iter().map(String::as_str).collect();
                let server = start_server(&args.souk, &extra)?;
                let http = reqwest::Client::new();
                let mut publishers: Vec<Bot> = Vec::new();
                for r in 0..args.rooms {
                    let room = room_name(r, args.rooms);
                    let token = room_token(&http, &server.url, &room, "publisher", "host").await?;
                    let publisher =
                        Client::connect(&server.url, &token, ClientOptions::default()).await?;
                    publisher.publish(media.clone()).await?;
                    publishers.push(Box::new(publisher));
                }
                let rooms = args.rooms;
                Ok((
                    UnderTest::Souk {
                        server,
                        http,
                        rooms,
                    },
                    publishers,
                ))
            }
            Sfu::Janus if args.rooms != 1 => {
                anyhow::bail!("--rooms is for Souk only; Janus is measured with one room")
            }
            Sfu::Janus => {
                let janus = Janus::start(&args.janus, &args.janus_iface).await?;
                let publisher = ExternalPeers::new(ClientOptions {
                    bind_ip: janus.bot_address(),
                    ..Default::default()
                });
                let feed = janus.publish(&publisher, media).await?;
                // Janus lists a feed only once its connection is up.
                publisher
                    .wait_for(
                        "the publisher to connect to janus",
                        Duration::from_secs(20),
                        |s| s.publisher_connected,
                    )
                    .await?;
                Ok((UnderTest::Janus { janus, feed }, vec![Box::new(publisher)]))
            }
        }
    }

    /// The delay the server reports adding so far; Janus reports none.
    async fn forward_delay(&self) -> anyhow::Result<Option<ServerDelay>> {
        match self {
            UnderTest::Souk { server, http, .. } => {
                Ok(Some(ServerDelay::scrape(http, &server.url).await?))
            }
            UnderTest::Janus { .. } => Ok(None),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            UnderTest::Souk { server, .. } => server.child.id(),
            UnderTest::Janus { janus, .. } => janus.pid(),
        }
    }

    /// Joins subscriber bot number `i`, receiving packets from its own local address.
    async fn subscriber(&self, i: usize) -> anyhow::Result<Bot> {
        let options = ClientOptions {
            bind_ip: bot_ip(0, i),
            receive_packets: true,
            ..Default::default()
        };
        Ok(match self {
            UnderTest::Souk {
                server,
                http,
                rooms,
            } => {
                let identity = format!("viewer-{i}");
                let room = room_name(i % rooms, *rooms);
                let token = room_token(http, &server.url, &room, &identity, "audience").await?;
                Box::new(Client::connect(&server.url, &token, options).await?)
            }
            UnderTest::Janus { janus, feed } => {
                let peers = ExternalPeers::new(ClientOptions {
                    bind_ip: janus.bot_address(),
                    ..options
                });
                janus.subscribe(&peers, *feed).await?;
                Box::new(peers)
            }
        })
    }
}

/// A step is "held" below this loss and latency (issue 6's bar).
const MAX_LOSS: f64 = 0.005;
const MAX_P99_MS: f64 = 20.0;

pub async fn run(args: Fanout) -> anyhow::Result<()> {
    let bots = BotRuntime::new(args.bot_threads)?;
    for &sfu in &args.servers {
        let args = args.clone();
        bots.handle()
            .spawn(async move { measure(sfu, &args).await })
            .await??;
    }
    Ok(())
}

/// One server's table.
async fn measure(sfu: Sfu, args: &Fanout) -> anyhow::Result<()> {
    let media = SyntheticMedia {
        video_kbps: args.video_kbps,
        simulcast: !args.no_simulcast,
        ..Default::default()
    };
    let (under_test, _publishers) = UnderTest::start(sfu, args, media).await?;
    let pid = under_test.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_rss = proc_stat::rss_kib(pid)?;

    println!("\n{sfu:?}\n");
    println!("| subscribers | egress Mbps (payload) | packets/s out | server CPU (% of a core) | server CPU s per GB | loss % | latency at socket p50 ms | latency at socket p99 ms | latency in bot p50 ms | latency in bot p99 ms | delay in server p50 ms | delay in server p99 ms | server RSS MiB | memory per subscriber KiB | bots' CPU (% of a core) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut subscribers: Vec<Bot> = Vec::new();
    let (mut held, mut held_in_bot) = (None, None);
    for &target in &args.subscribers {
        // A server that cannot take more subscribers ends its table; the next server
        // still gets measured.
        if let Err(e) = add_subscribers(&under_test, &mut subscribers, target).await {
            println!("| {target} | could not join every subscriber: {e} |");
            break;
        }
        // Let new subscribers settle on the top layer before measuring.
        tokio::time::sleep(Duration::from_secs(3)).await;

        let before = Totals::of(&subscribers);
        let delay_before = under_test.forward_delay().await?;
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
        let delay = match (under_test.forward_delay().await?, delay_before) {
            (Some(after), Some(before)) => Some(after.since(&before)),
            _ => None,
        };
        let delay_cell = |q| match &delay {
            Some(d) => d
                .quantile_ms(q)
                .map_or("—".into(), |ms| capped_cell(ms, d.last_bound_ms(), 2)),
            None => "—".to_string(),
        };
        let rss = proc_stat::rss_kib(pid)?;

        let ticks = proc_stat::ticks_per_second() as f64;
        let server_cpu_s = (server_cpu1 - server_cpu0) as f64 / ticks;
        let bots_pct = (bots_cpu1 - bots_cpu0) as f64 / ticks / elapsed * 100.0;
        let loss = window.loss();
        let quantile = |h: &LatencyHistogram, q| h.quantile_ms(q).unwrap_or(f64::NAN);
        let latency_cell = |ms| capped_cell(ms, window.latency.range_ms(), 1);
        let p99_at_socket = quantile(&window.socket_latency, 0.99);
        let p99_in_bot = quantile(&window.latency, 0.99);
        println!(
            "| {target} | {:.1} | {:.0} | {:.1} | {:.1} | {:.3} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0} | {:.1} |",
            window.bytes as f64 * 8.0 / elapsed / 1e6,
            window.packets as f64 / elapsed,
            server_cpu_s / elapsed * 100.0,
            server_cpu_s / (window.bytes as f64 / 1e9),
            loss * 100.0,
            latency_cell(quantile(&window.socket_latency, 0.5)),
            latency_cell(p99_at_socket),
            latency_cell(quantile(&window.latency, 0.5)),
            latency_cell(p99_in_bot),
            delay_cell(0.5),
            delay_cell(0.99),
            rss as f64 / 1024.0,
            (rss.saturating_sub(baseline_rss)) as f64 / target as f64,
            bots_pct,
        );
        if loss < MAX_LOSS && p99_at_socket <= MAX_P99_MS {
            held = Some(target);
        }
        if loss < MAX_LOSS && p99_in_bot <= MAX_P99_MS {
            held_in_bot = Some(target);
        }
    }
    let most = |n: Option<usize>| n.map_or("none".to_string(), |n| n.to_string());
    println!(
        "\nMost subscribers held (loss < {}%, p99 <= {MAX_P99_MS} ms): {} by latency at the socket, {} by latency in the bot",
        MAX_LOSS * 100.0,
        most(held),
        most(held_in_bot),
    );
    Ok(())
}

/// A quantile for the table, with `decimals`; at its histogram's last bound it is only a
/// lower bound, and says so.
fn capped_cell(ms: f64, last_bound_ms: f64, decimals: usize) -> String {
    if ms >= last_bound_ms {
        format!("≥ {last_bound_ms}")
    } else {
        format!("{ms:.decimals$}")
    }
}

/// Joins subscribers up to `target` and waits until each receives video.
async fn add_subscribers(
    under_test: &UnderTest,
    subscribers: &mut Vec<Bot>,
    target: usize,
) -> anyhow::Result<()> {
    while subscribers.len() < target {
        subscribers.push(under_test.subscriber(subscribers.len()).await?);
    }
    for (i, s) in subscribers.iter().enumerate() {
        s.wait_for(
            &format!("subscriber {i} to receive video"),
            Duration::from_secs(60),
            |st| st.frames_of(TrackKind::Video) > 0,
        )
        .await?;
    }
    Ok(())
}

/// What all subscribers received so far, summed.
#[derive(Default)]
struct Totals {
    bytes: u64,
    packets: u64,
    expected: u64,
    latency: LatencyHistogram,
    socket_latency: LatencyHistogram,
}

impl Totals {
    fn of(subscribers: &[Bot]) -> Totals {
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
        self.socket_latency.merge(&stats.socket_latency);
    }

    fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            bytes: self.bytes - earlier.bytes,
            packets: self.packets - earlier.packets,
            expected: self.expected - earlier.expected,
            latency: self.latency.since(&earlier.latency),
            socket_latency: self.socket_latency.since(&earlier.socket_latency),
        }
    }

    fn loss(&self) -> f64 {
        if self.expected == 0 {
            return 1.0;
        }
        self.expected.saturating_sub(self.packets) as f64 / self.expected as f64
    }
}
