//! The forwarding hot path in the sans-IO core: one publisher's video packet in, fanned
//! out to 100 subscribers (SRTP decrypt once, rewrite and encrypt per subscriber).
//! Run with `cargo bench -p souk-sfu --bench forward`; `examples/forward_count.rs` is
//! the same work under callgrind, for an instruction count that machine noise does not
//! move.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SUBSCRIBERS: usize = 100;

fn fan_out(c: &mut Criterion) {
    let mut room = common::fanout_room(SUBSCRIBERS);
    let mut group = c.benchmark_group("forward");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one packet to 100 subscribers", |b| {
        // Producing the packet (the publisher's side) is left out of the timing.
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                // A frame is one RTP packet here, now and then with an RTCP or STUN
                // packet beside it.
                let frame = room.capture_frame(0);
                let started = Instant::now();
                let sent = common::forward(&mut room, &frame);
                spent += started.elapsed();
                assert!(sent >= SUBSCRIBERS, "forwarded to {sent} of {SUBSCRIBERS}");
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
