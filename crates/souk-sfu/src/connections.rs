//! Which participants have WebRTC connections, and when each connection next wants
//! str0m's timeout.
//!
//! A live room's audience mostly has no connection, so the periodic scans go over
//! [`Connections::participants`], not ten thousand viewers. The driver asks for the next
//! deadline after every datagram; a scan over every connection made that
//! O(participants) per packet, the biggest single cost in the forwarding profile at a few
//! hundred subscribers, so deadlines sit in a min-heap. Entries are never updated in
//! place: a changed deadline is pushed again, and an entry that no longer matches its
//! connection's deadline is skipped when it comes due.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Instant;

use crate::demux::PeerKey;
use crate::peer::Side;
use crate::ParticipantId;

#[derive(Default)]
pub(crate) struct Connections {
    /// Participants with at least one connection.
    pub participants: BTreeSet<ParticipantId>,
    deadlines: BinaryHeap<Reverse<(Instant, PeerKey)>>,
}

impl Connections {
    /// A new connection, due for its first timeout now.
    pub fn open(&mut self, now: Instant, participant: ParticipantId, side: Side) {
        self.participants.insert(participant);
        self.schedule(now, PeerKey { participant, side });
    }

    /// The participant is gone; its deadlines lapse as they come due.
    pub fn close(&mut self, participant: ParticipantId) {
        self.participants.remove(&participant);
    }

    pub fn schedule(&mut self, at: Instant, key: PeerKey) {
        self.deadlines.push(Reverse((at, key)));
    }

    /// The earliest deadline, possibly a stale one (an early wake-up costs little).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns every connection with an entry due by `now`, each once. The
    /// caller checks each connection's own deadline: a stale entry's may not be due.
    pub fn pop_due(&mut self, now: Instant) -> Vec<PeerKey> {
        let mut due = Vec::new();
        while let Some(Reverse((at, key))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            due.push(key);
        }
        due.sort_unstable();
        due.dedup();
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
    fn earliest_first_and_each_due_connection_once() {
        let t0 = Instant::now();
        let mut connections = Connections::default();
        assert_eq!(connections.next_deadline(), None);
        connections.schedule(t0 + Duration::from_millis(30), key(1));
        connections.schedule(t0 + Duration::from_millis(10), key(2));
        connections.schedule(t0 + Duration::from_millis(20), key(2));
        assert_eq!(
            connections.next_deadline(),
            Some(t0 + Duration::from_millis(10))
        );
        assert_eq!(connections.pop_due(t0), vec![]);
        assert_eq!(
            connections.pop_due(t0 + Duration::from_millis(25)),
            vec![key(2)]
        );
        assert_eq!(
            connections.next_deadline(),
            Some(t0 + Duration::from_millis(30))
        );
        assert_eq!(
            connections.pop_due(t0 + Duration::from_millis(30)),
            vec![key(1)]
        );
        assert_eq!(connections.next_deadline(), None);
    }

    #[test]
    fn opening_lists_the_participant_and_is_due_at_once() {
        let t0 = Instant::now();
        let mut connections = Connections::default();
        connections.open(t0, ParticipantId(7), Side::Publisher);
        assert!(connections.participants.contains(&ParticipantId(7)));
        assert_eq!(connections.next_deadline(), Some(t0));
        connections.close(ParticipantId(7));
        assert!(connections.participants.is_empty());
    }
}
