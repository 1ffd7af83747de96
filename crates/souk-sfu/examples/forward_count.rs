//! The forwarding benchmark's work, sized for an instruction count under callgrind:
//!
//! ```text
//! cargo build --release -p souk-sfu --example forward_count
//! valgrind --tool=callgrind --toggle-collect=forward_count::forward_packets \
//!     target/release/examples/forward_count
//! ```
//!
//! Only `forward_packets` is counted (not building the room or making the packets), so
//! the figure is the instructions for `PACKETS` packets, each fanned out to
//! `SUBSCRIBERS` subscribers.

#[path = "../tests/common/mod.rs"]
mod common;

const SUBSCRIBERS: usize = 100;
const PACKETS: usize = 100;

#[inline(never)]
fn forward_packets(room: &mut common::Room, frame: &[common::Datagram]) -> usize {
    common::forward(room, frame)
}

fn main() {
    let mut room = common::fanout_room(SUBSCRIBERS);
    let (mut datagrams, mut sent) = (0, 0);
    for _ in 0..PACKETS {
        // One frame is one RTP packet, sometimes with an RTCP or STUN packet beside it.
        let frame = room.capture_frame(0);
        datagrams += frame.len();
        sent += forward_packets(&mut room, &frame);
    }
    println!(
        "{PACKETS} packets ({datagrams} datagrams) in, {sent} out to {SUBSCRIBERS} subscribers"
    );
}
