//! When each connection next wants str0m's timeout.
//!
//! The driver asks for the next deadline after every datagram, and a scan over every
//! peer made that O(participants) per packet: at a few hundred subscribers it was the
//! biggest single cost in the forwarding profile. A min-heap answers in O(1). Entries
//! are never updated in place: a changed deadline is pushed again, and an entry that no
//! longer matches its peer's deadline is skipped when it comes due.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Instant;

use crate::demux::PeerKey;
use crate::peer::Side;
use crate::ParticipantId;

#[derive(Default)]
pub(crate) struct PeerTimers {
    heap: BinaryHeap<Reverse<(Instant, PeerKey)>>,
}

impl PeerTimers {
    /// A new connection: listed among those with peers (the periodic scans) and due for
    /// its first timeout now.
    pub fn start(
        &mut self,
        with_peers: &mut BTreeSet<ParticipantId>,
        now: Instant,
        participant: ParticipantId,
        side: Side,
    ) {
        with_peers.insert(participant);
        self.schedule(now, PeerKey { participant, side });
    }

    pub fn schedule(&mut self, at: Instant, key: PeerKey) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest deadline, possibly a stale one (an early wake-up costs little).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns every peer with an entry due by `now`, each once. The caller
    /// checks each peer's own deadline: a stale entry's peer may not be due at all.
    pub fn pop_due(&mut self, now: Instant) -> Vec<PeerKey> {
        let mut due = Vec::new();
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if !due.contains(&key) {
                due.push(key);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(n: u64) -> PeerKey {
        PeerKey {
            participant: ParticipantId(n),
            side: Side::Subscriber,
        }
    }

    #[test]
    fn earliest_first_and_each_due_peer_once() {
        let t0 = Instant::now();
        let mut timers = PeerTimers::default();
        assert_eq!(timers.next(), None);
        timers.schedule(t0 + Duration::from_millis(30), key(1));
        timers.schedule(t0 + Duration::from_millis(10), key(2));
        timers.schedule(t0 + Duration::from_millis(20), key(2));
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(timers.pop_due(t0), vec![]);
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(25)), vec![key(2)]);
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(30)));
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(30)), vec![key(1)]);
        assert_eq!(timers.next(), None);
    }
}
