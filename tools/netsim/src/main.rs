//! `netsim-queue`: holds packets from an NFQUEUE for a delay (with jitter) and drops some
//! by a Gilbert-Elliott model, then lets the rest through. This kernel has no netem, so
//! the lab routes impaired traffic through this program instead:
//!
//! ```sh
//! iptables -t mangle -A FORWARD -o rt-sub -j NFQUEUE --queue-num 1
//! netsim-queue --queue 1 --delay-ms 90 --jitter-ms 20 --loss-bad 0.5 --enter-bad 0.02
//! ```

mod model;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nfq::{Queue, Verdict};

use model::{Impairment, Rng};

#[derive(Parser)]
#[command(about = "Delay, jitter and burst loss for packets on an NFQUEUE")]
struct Args {
    /// NFQUEUE number to bind.
    #[arg(long, default_value_t = 0)]
    queue: u16,
    /// One-way delay added to every packet.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Jitter: each packet's delay varies uniformly by up to this much either way.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Loss probability in the good state.
    #[arg(long, default_value_t = 0.0)]
    loss_good: f64,
    /// Loss probability in the bad (burst) state.
    #[arg(long, default_value_t = 0.0)]
    loss_bad: f64,
    /// Probability per packet of moving from good to bad.
    #[arg(long, default_value_t = 0.0)]
    enter_bad: f64,
    /// Probability per packet of moving from bad back to good.
    #[arg(long, default_value_t = 1.0)]
    leave_bad: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut impairment = Impairment {
        delay: Duration::from_millis(args.delay_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        loss_good: args.loss_good,
        loss_bad: args.loss_bad,
        enter_bad: args.enter_bad,
        leave_bad: args.leave_bad,
        bad: false,
        last_release: None,
    };
    let mut rng = Rng::new(args.seed);
    let mut queue =
        Queue::open().context("opening NFQUEUE (needs root and the nfnetlink_queue module)")?;
    queue
        .bind(args.queue)
        .with_context(|| format!("binding queue {}", args.queue))?;
    queue.set_fail_open(args.queue, true)?;
    queue.set_nonblocking(true);
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    loop {
        let now = Instant::now();
        // Release what is due; release times never decrease, so order is kept.
        while held.front().is_some_and(|(at, _)| *at <= now) {
            let (_, mut msg) = held.pop_front().expect("checked");
            msg.set_verdict(Verdict::Accept);
            queue.verdict(msg)?;
        }
        match queue.recv() {
            Ok(mut msg) => match impairment.decide(now, &mut rng) {
                None => {
                    msg.set_verdict(Verdict::Drop);
                    queue.verdict(msg)?;
                }
                Some(at) if at <= now => {
                    msg.set_verdict(Verdict::Accept);
                    queue.verdict(msg)?;
                }
                Some(at) => held.push_back((at, msg)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let wait = held
                    .front()
                    .map(|(at, _)| at.saturating_duration_since(now))
                    .unwrap_or(Duration::from_millis(1))
                    .min(Duration::from_millis(1));
                std::thread::sleep(wait);
            }
            Err(e) => return Err(e).context("reading the queue"),
        }
    }
}
