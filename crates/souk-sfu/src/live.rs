//! A live room's interaction state: the numbered event log, the stage, likes, viewers,
//! and the comment rules. Plain data; the rules that need participants are in
//! `sfu::live`.

use std::collections::{HashMap, VecDeque};

use souk_proto::live::{
    EventCursor, LiveEvent, LiveSnapshot, PinnedProduct, RoomEvent, StageState, EVENT_WINDOW,
};

/// Stage seats in a live room unless configured otherwise.
pub const DEFAULT_SEATS: u32 = 4;
/// Recent joiners shown to viewers.
const RECENT_JOINERS: usize = 5;
/// Comments a viewer may post per second (after a short burst).
pub const COMMENTS_PER_SECOND: u64 = 1;
const COMMENT_BURST: u32 = 3;
/// Room-wide comments per second above which viewers' comments are shed; the host's,
/// moderators' and every money and system event never are.
pub const ROOM_COMMENTS_PER_SECOND: u32 = 100;
/// A large room's members are split into slices (by participant number), and each batch
/// window sends to one slice after another rather than to everyone at once: the machine
/// then writes a steady stream of frames, and a viewer waits for its slice's frames to go
/// before its own, not for the whole room's. Small rooms stay one slice: turns cost CPU
/// (4 points of a core at 1,000 viewers, bench/RESULTS.md) and buy them nothing.
const VIEWERS_PER_SLICE: usize = 1000;
const MAX_SLICES: usize = 10;

/// How many slices a room of `members` is sent to in turn.
pub fn slices_for(members: usize) -> usize {
    members.div_ceil(VIEWERS_PER_SLICE).clamp(1, MAX_SLICES)
}

pub(crate) struct LiveRoom {
    pub epoch: String,
    next_seq: u64,
    recent: VecDeque<RoomEvent>,
    pub stage: StageState,
    pub pinned: Option<PinnedProduct>,
    pub likes_total: u64,
    pub likes_pending: u64,
    pub likes_flushed_ms: u64,
    pub viewers_changed: bool,
    pub viewers_flushed_ms: u64,
    pub recent_joiners: VecDeque<String>,
    pub slow_mode_s: u64,
    /// Identity -> until (unix ms).
    pub muted_until: HashMap<String, u64>,
    pub banned_until: HashMap<String, u64>,
    /// Identity -> (tokens, last refill unix ms) for the per-viewer comment rate.
    comment_tokens: HashMap<String, (u32, u64)>,
    /// Identity -> last comment (unix ms), for slow mode.
    last_comment_ms: HashMap<String, u64>,
    /// (second, comments accepted in it) for the room-wide shedding rule.
    room_second: (u64, u32),
    pub next_comment_id: u64,
    /// Recorded and not yet sent to every slice, oldest first.
    unsent: VecDeque<RoomEvent>,
    /// Per slice, the last event sent to it; as many as the room has slices.
    sent_through: Vec<u64>,
    /// The slice whose turn is next.
    next_slice: usize,
    /// When the next slice's turn is, while some slice has events to receive.
    pub next_turn: Option<std::time::Instant>,
}

/// Why a comment was not broadcast.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CommentVerdict {
    Accept,
    /// Over the room's budget this second: dropped by the shedding rule.
    Shed,
    /// Too fast for this viewer (rate or slow mode); retry after this many ms.
    TooFast(u64),
}

impl LiveRoom {
    pub fn new(epoch: String) -> LiveRoom {
        LiveRoom {
            epoch,
            next_seq: 1,
            recent: VecDeque::new(),
            stage: StageState {
                max_seats: DEFAULT_SEATS,
                ..Default::default()
            },
            pinned: None,
            likes_total: 0,
            likes_pending: 0,
            likes_flushed_ms: 0,
            viewers_changed: false,
            viewers_flushed_ms: 0,
            recent_joiners: VecDeque::new(),
            slow_mode_s: 0,
            muted_until: HashMap::new(),
            banned_until: HashMap::new(),
            comment_tokens: HashMap::new(),
            last_comment_ms: HashMap::new(),
            room_second: (0, 0),
            next_comment_id: 1,
            unsent: VecDeque::new(),
            sent_through: vec![0],
            next_slice: 0,
            next_turn: None,
        }
    }

    /// Numbers an event and keeps it for catching up.
    pub fn record(&mut self, at_ms: u64, event: LiveEvent) -> RoomEvent {
        let numbered = RoomEvent {
            epoch: self.epoch.clone(),
            seq: self.next_seq,
            at_ms,
            event,
        };
        self.next_seq += 1;
        if self.recent.len() == EVENT_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(numbered.clone());
        self.unsent.push_back(numbered.clone());
        numbered
    }

    /// Whether some slice has events still to receive.
    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// The slice whose turn it is among `slices`, and the events it has not had yet (none
    /// when it is up to date). Events every slice has had are let go. When the room's
    /// slice count changes, every slice starts from the least any slice had: a viewer
    /// may then see an event twice (clients skip a `seq` they have), but never misses one.
    pub fn next_slice_events(&mut self, slices: usize) -> (usize, Vec<RoomEvent>) {
        if slices != self.sent_through.len() {
            let floor = self.sent_through.iter().copied().min().unwrap_or(0);
            self.sent_through = vec![floor; slices.max(1)];
            self.next_slice = 0;
        }
        let slice = self.next_slice;
        self.next_slice = (slice + 1) % self.sent_through.len();
        let after = self.sent_through[slice];
        let events: Vec<RoomEvent> = self
            .unsent
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect();
        self.sent_through[slice] = self.next_seq - 1;
        let everyone_has = self.sent_through.iter().copied().min().unwrap_or(0);
        while self.unsent.front().is_some_and(|e| e.seq <= everyone_has) {
            self.unsent.pop_front();
        }
        (slice, events)
    }

    pub fn joined(&mut self, identity: &str) {
        if self.recent_joiners.len() == RECENT_JOINERS {
            self.recent_joiners.pop_front();
        }
        self.recent_joiners.push_back(identity.to_owned());
        self.viewers_changed = true;
    }

    /// The state for `joined`, with the events after `cursor` when it can be honoured.
    pub fn snapshot(&self, viewers: u64, cursor: Option<&EventCursor>) -> LiveSnapshot {
        let last = self.next_seq - 1;
        let (missed, reload) = match cursor {
            None => (Vec::new(), false),
            Some(c) if c.epoch == self.epoch && c.seq <= last => {
                let oldest = self.recent.front().map_or(last + 1, |e| e.seq);
                if c.seq + 1 >= oldest {
                    let missed = self
                        .recent
                        .iter()
                        .filter(|e| e.seq > c.seq)
                        .cloned()
                        .collect();
                    (missed, false)
                } else {
                    (Vec::new(), true)
                }
            }
            Some(_) => (Vec::new(), true),
        };
        LiveSnapshot {
            epoch: self.epoch.clone(),
            seq: last,
            stage: self.stage.clone(),
            pinned: self.pinned.clone(),
            likes_total: self.likes_total,
            viewers,
            slow_mode_s: self.slow_mode_s,
            missed,
            reload,
        }
    }

    /// Applies the comment rules to a comment from `identity` at `now_ms`.
    /// `privileged` (host, moderators) skips the viewer limits and is never shed.
    pub fn admit_comment(
        &mut self,
        identity: &str,
        now_ms: u64,
        privileged: bool,
    ) -> CommentVerdict {
        if privileged {
            return CommentVerdict::Accept;
        }
        if self.slow_mode_s > 0 {
            if let Some(last) = self.last_comment_ms.get(identity) {
                let next = last + self.slow_mode_s * 1000;
                if now_ms < next {
                    return CommentVerdict::TooFast(next - now_ms);
                }
            }
        }
        let (tokens, refilled) = self
            .comment_tokens
            .entry(identity.to_owned())
            .or_insert((COMMENT_BURST, now_ms));
        let gained = (now_ms.saturating_sub(*refilled) * COMMENTS_PER_SECOND / 1000) as u32;
        if gained > 0 {
            *tokens = (*tokens + gained).min(COMMENT_BURST);
            *refilled = now_ms;
        }
        if *tokens == 0 {
            return CommentVerdict::TooFast(1000 / COMMENTS_PER_SECOND);
        }
        *tokens -= 1;
        self.last_comment_ms.insert(identity.to_owned(), now_ms);
        let second = now_ms / 1000;
        if self.room_second.0 != second {
            self.room_second = (second, 0);
        }
        if self.room_second.1 >= ROOM_COMMENTS_PER_SECOND {
            return CommentVerdict::Shed;
        }
        self.room_second.1 += 1;
        CommentVerdict::Accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_up_within_the_window_and_reload_outside_it() {
        let mut live = LiveRoom::new("E1".into());
        for i in 0..(EVENT_WINDOW as u64 + 10) {
            live.record(i, LiveEvent::Likes { added: 1, total: i });
        }
        let last = EVENT_WINDOW as u64 + 10;
        let recent = EventCursor {
            epoch: "E1".into(),
            seq: last - 3,
        };
        let snap = live.snapshot(0, Some(&recent));
        assert_eq!(
            snap.missed.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![last - 2, last - 1, last]
        );
        assert!(!snap.reload);
        assert!(
            live.snapshot(
                0,
                Some(&EventCursor {
                    epoch: "E1".into(),
                    seq: 1
                })
            )
            .reload,
            "too old"
        );
        assert!(
            live.snapshot(
                0,
                Some(&EventCursor {
                    epoch: "E0".into(),
                    seq: last
                })
            )
            .reload,
            "another epoch"
        );
        assert!(
            live.snapshot(
                0,
                Some(&EventCursor {
                    epoch: "E1".into(),
                    seq: last + 5
                })
            )
            .reload,
            "from the future"
        );
    }

    #[test]
    fn rooms_get_a_slice_per_thousand_viewers_up_to_ten() {
        assert_eq!(slices_for(0), 1);
        assert_eq!(slices_for(1000), 1);
        assert_eq!(slices_for(1001), 2);
        assert_eq!(slices_for(10_000), 10);
        assert_eq!(slices_for(50_000), 10);
    }

    #[test]
    fn each_slice_gets_every_event_once_in_turn() {
        const SLICES: usize = 4;
        let mut live = LiveRoom::new("E".into());
        assert!(!live.has_unsent());
        live.record(0, LiveEvent::Likes { added: 1, total: 1 });
        let mut got = vec![Vec::new(); SLICES];
        // Halfway round, a second event: the slices not yet served get both at once,
        // the others get it on the next round.
        for turn in 0..2 * SLICES {
            if turn == SLICES / 2 {
                live.record(1, LiveEvent::Likes { added: 1, total: 2 });
            }
            let (slice, events) = live.next_slice_events(SLICES);
            assert_eq!(slice, turn % SLICES);
            got[slice].extend(events.iter().map(|e| e.seq));
        }
        for (slice, seqs) in got.iter().enumerate() {
            assert_eq!(seqs, &[1, 2], "slice {slice}");
        }
        assert!(!live.has_unsent(), "what everyone has is let go");
        assert_eq!(live.next_slice_events(SLICES).1, Vec::new());
    }

    #[test]
    fn a_new_slice_count_repeats_events_but_skips_none() {
        let mut live = LiveRoom::new("E".into());
        live.record(0, LiveEvent::Likes { added: 1, total: 1 });
        // Slice 0 of two has event 1; slice 1 has nothing yet.
        assert_eq!(live.next_slice_events(2).1.len(), 1);
        live.record(1, LiveEvent::Likes { added: 1, total: 2 });
        // Three slices now: every one of them starts from what slice 1 had (nothing).
        for expected_slice in 0..3 {
            let (slice, events) = live.next_slice_events(3);
            assert_eq!(slice, expected_slice);
            assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        }
        assert!(!live.has_unsent());
    }

    #[test]
    fn viewers_are_rate_limited_and_the_room_sheds_above_its_budget() {
        let mut live = LiveRoom::new("E".into());
        for _ in 0..COMMENT_BURST {
            assert_eq!(live.admit_comment("v", 0, false), CommentVerdict::Accept);
        }
        assert!(matches!(
            live.admit_comment("v", 0, false),
            CommentVerdict::TooFast(_)
        ));
        assert_eq!(live.admit_comment("v", 1000, false), CommentVerdict::Accept);
        live.slow_mode_s = 10;
        assert!(matches!(
            live.admit_comment("v", 3000, false),
            CommentVerdict::TooFast(8000)
        ));

        let mut busy = LiveRoom::new("E".into());
        let t = 5_000;
        for i in 0..ROOM_COMMENTS_PER_SECOND {
            assert_eq!(
                busy.admit_comment(&format!("v{i}"), t, false),
                CommentVerdict::Accept
            );
        }
        assert_eq!(busy.admit_comment("late", t, false), CommentVerdict::Shed);
        assert_eq!(
            busy.admit_comment("host", t, true),
            CommentVerdict::Accept,
            "never shed"
        );
        assert_eq!(
            busy.admit_comment("late", t + 1000, false),
            CommentVerdict::Accept,
            "next second"
        );
    }
}
