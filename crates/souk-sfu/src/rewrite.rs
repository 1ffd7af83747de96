//! Sequence-number and timestamp rewriting for one outgoing stream.
//!
//! A subscriber must see one continuous RTP stream even though the SFU switches between
//! simulcast layers (each with its own sequence space and timestamp base) and starts
//! forwarding mid-stream. Within one *epoch* (a run of packets from one source stream)
//! the mapping is a constant offset, so reordered and retransmitted packets map exactly.
//! A new epoch starts right after the last packet sent, with the timestamp advanced by
//! the wall-clock gap, so the receiver's jitter buffer sees no jump.

use std::time::Instant;

#[derive(Debug)]
pub struct Rewriter {
    clock_rate: u32,
    epoch: Option<Epoch>,
    /// Highest sequence number and its timestamp sent so far, in output space.
    last_out: Option<(u64, u32, Instant)>,
}

#[derive(Debug, Clone, Copy)]
struct Epoch {
    /// First input sequence number of the epoch; anything older belongs to a former
    /// source and is dropped.
    first_in_seq: u64,
    seq_offset: i64,
    ts_offset: u32,
}

impl Rewriter {
    pub fn new(clock_rate: u32) -> Self {
        Rewriter {
            clock_rate,
            epoch: None,
            last_out: None,
        }
    }

    /// True once an epoch has started.
    pub fn is_started(&self) -> bool {
        self.epoch.is_some()
    }

    /// Starts a new epoch at input packet (`in_seq`, `in_ts`), received at `now`.
    pub fn start_epoch(&mut self, in_seq: u64, in_ts: u32, now: Instant) {
        let (out_seq, out_ts) = match self.last_out {
            Some((seq, ts, at)) => {
                let elapsed = now.saturating_duration_since(at);
                let ticks =
                    (elapsed.as_micros() as u64 * self.clock_rate as u64 / 1_000_000).max(1) as u32;
                (seq + 1, ts.wrapping_add(ticks))
            }
            // Start low so the rollover counter is zero (a receiver assumes it is, unless
            // told otherwise) yet not predictably at 0.
            None => ((in_seq & 0x3fff) + 1, in_ts),
        };
        self.epoch = Some(Epoch {
            first_in_seq: in_seq,
            seq_offset: out_seq as i64 - in_seq as i64,
            ts_offset: out_ts.wrapping_sub(in_ts),
        });
    }

    /// Maps an input packet into output space, or `None` for a packet from before the
    /// current epoch (or before any epoch).
    pub fn map(&mut self, in_seq: u64, in_ts: u32, now: Instant) -> Option<(u64, u32)> {
        let epoch = self.epoch?;
        if in_seq < epoch.first_in_seq {
            return None;
        }
        let out_seq = (in_seq as i64 + epoch.seq_offset) as u64;
        let out_ts = in_ts.wrapping_add(epoch.ts_offset);
        if self.last_out.is_none_or(|(seq, _, _)| out_seq > seq) {
            self.last_out = Some((out_seq, out_ts, now));
        }
        Some((out_seq, out_ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn constant_offset_within_epoch_handles_reordering() {
        let now = Instant::now();
        let mut rw = Rewriter::new(90_000);
        assert_eq!(
            rw.map(100, 5000, now),
            None,
            "nothing before the first epoch"
        );
        rw.start_epoch(100, 5000, now);
        let (s0, t0) = rw.map(100, 5000, now).unwrap();
        let (s2, _) = rw.map(102, 8000, now).unwrap();
        let (s1, t1) = rw.map(101, 5000, now).unwrap();
        assert_eq!((s1, s2), (s0 + 1, s0 + 2));
        assert_eq!(t1, t0);
        assert!(s0 < 65_536);
    }

    #[test]
    fn new_epoch_continues_sequence_and_advances_time() {
        let start = Instant::now();
        let mut rw = Rewriter::new(90_000);
        rw.start_epoch(10, 1_000, start);
        let (last_seq, last_ts) = rw.map(11, 4_000, start).unwrap();

        // Switch to another layer with an unrelated sequence and timestamp base, 100 ms on.
        let later = start + Duration::from_millis(100);
        rw.start_epoch(50_000, 4_000_000_000, later);
        let (seq, ts) = rw.map(50_000, 4_000_000_000, later).unwrap();
        assert_eq!(seq, last_seq + 1);
        assert_eq!(ts, last_ts.wrapping_add(9_000));
        // A late packet of the old layer is dropped, not mapped into the new epoch.
        assert_eq!(rw.map(12, 7_000, later), None);
    }

    #[test]
    fn timestamps_wrap() {
        let now = Instant::now();
        let mut rw = Rewriter::new(48_000);
        rw.start_epoch(1, u32::MAX - 10, now);
        rw.map(1, u32::MAX - 10, now).unwrap();
        let (_, ts) = rw.map(2, 950, now).unwrap();
        assert_eq!(ts, 950);
    }
}
