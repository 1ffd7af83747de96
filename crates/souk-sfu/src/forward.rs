//! Deciding, packet by packet, what one subscriber gets of one track.
//!
//! This is the "decide" half of forwarding; writing the packet into the subscriber's
//! connection is the caller's job. Video may only change source layer at a keyframe, so a
//! switch is a two-step affair: the target changes at once, the current layer keeps
//! flowing until the target's next keyframe arrives, then the stream cuts over.

use std::time::{Duration, Instant};

use str0m::media::Rid;

use crate::rewrite::Rewriter;
use crate::vp8::{PictureIds, Vp8Ids};

/// What to do with one incoming packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    /// Send with these numbers (VP8's picture numbering too, where it has one).
    Forward {
        seq: u64,
        ts: u32,
        vp8: Vp8Ids,
    },
}

/// The layer a packet came from: its rid, or `None` for a track without simulcast.
pub type Layer = Option<Rid>;

#[derive(Debug)]
pub struct Forwarder {
    rewriter: Rewriter,
    pictures: PictureIds,
    /// Audio forwards everything; video waits for keyframes.
    is_video: bool,
    /// The layer we want; `None` while paused.
    target: Option<Layer>,
    /// The layer we are forwarding now; `None` until the first keyframe.
    current: Option<Layer>,
    /// No keyframe is asked for before this: the subscriber's buffer is draining.
    keyframe_held_until: Option<Instant>,
}

/// How long a buffer that overflowed gets to drain before a keyframe is sent into it: the
/// lab's links hold 150 ms.
const OVERFLOW_DRAIN: Duration = Duration::from_millis(250);

impl Forwarder {
    pub fn audio(clock_rate: u32) -> Self {
        Forwarder {
            rewriter: Rewriter::new(clock_rate),
            pictures: PictureIds::default(),
            is_video: false,
            target: Some(None),
            current: None,
            keyframe_held_until: None,
        }
    }

    pub fn video(clock_rate: u32, target: Option<Layer>) -> Self {
        Forwarder {
            rewriter: Rewriter::new(clock_rate),
            pictures: PictureIds::default(),
            is_video: true,
            target,
            current: None,
            keyframe_held_until: None,
        }
    }

    pub fn target(&self) -> Option<Layer> {
        self.target
    }

    pub fn current(&self) -> Option<Layer> {
        self.current
    }

    /// Aims at another layer (or pauses with `None`). Pausing forgets the current layer,
    /// so resuming starts cleanly at a keyframe.
    pub fn set_target(&mut self, target: Option<Layer>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }

    /// The layer whose keyframe this subscriber waits for, if any.
    pub fn awaiting_keyframe(&self) -> Option<Layer> {
        match self.target {
            Some(target) if self.is_video && self.current != Some(target) => Some(target),
            _ => None,
        }
    }

    /// Forget the current layer, e.g. after the subscriber reported a decoding failure
    /// (PLI): forwarding resumes at the next keyframe of the target.
    pub fn restart_at_keyframe(&mut self) {
        if self.is_video {
            self.current = None;
        }
    }

    /// Like [`Self::restart_at_keyframe`], but the keyframe is asked for only once the
    /// subscriber's overflowing buffer has had time to drain: a keyframe sent into it is
    /// dropped with the rest, and capped retransmission may not repair it before the
    /// decoder gives up and asks on its own, seconds later.
    pub fn restart_after_overflow(&mut self, now: Instant) {
        self.restart_at_keyframe();
        self.keyframe_held_until = Some(now + OVERFLOW_DRAIN);
    }

    /// The layer whose keyframe to ask for now, if any.
    pub fn wants_keyframe(&self, now: Instant) -> Option<Layer> {
        let held = self.keyframe_held_until.is_some_and(|until| now < until);
        self.awaiting_keyframe().filter(|_| !held)
    }

    pub fn on_packet(
        &mut self,
        layer: Layer,
        seq: u64,
        ts: u32,
        starts_keyframe: bool,
        vp8: Vp8Ids,
        now: Instant,
    ) -> Verdict {
        let Some(target) = self.target else {
            return Verdict::Drop;
        };
        if !self.is_video {
            if !self.rewriter.is_started() {
                self.rewriter.start_epoch(seq, ts, now);
            }
            return self.map(seq, ts, vp8, now);
        }
        if layer == target && self.current != Some(target) {
            if !starts_keyframe {
                // Keep the old layer flowing (below) until the target can take over.
                return if self.current == Some(layer) {
                    self.map(seq, ts, vp8, now)
                } else {
                    Verdict::Drop
                };
            }
            self.current = Some(target);
            self.rewriter.start_epoch(seq, ts, now);
            self.pictures.start(vp8);
        }
        if self.current == Some(layer) {
            self.map(seq, ts, vp8, now)
        } else {
            Verdict::Drop
        }
    }

    fn map(&mut self, seq: u64, ts: u32, vp8: Vp8Ids, now: Instant) -> Verdict {
        match self.rewriter.map(seq, ts, now) {
            Some((seq, ts)) => Verdict::Forward {
                seq,
                ts,
                vp8: self.pictures.map(vp8),
            },
            None => Verdict::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_IDS: Vp8Ids = Vp8Ids {
        picture_id: None,
        tl0_pic_idx: None,
    };

    fn rid(s: &str) -> Layer {
        Some(Rid::from(s))
    }

    #[test]
    fn video_waits_for_a_keyframe() {
        let now = Instant::now();
        let mut f = Forwarder::video(90_000, Some(rid("f")));
        assert_eq!(f.awaiting_keyframe(), Some(rid("f")));
        assert_eq!(
            f.on_packet(rid("f"), 1, 0, false, NO_IDS, now),
            Verdict::Drop
        );
        assert!(matches!(
            f.on_packet(rid("f"), 2, 0, true, NO_IDS, now),
            Verdict::Forward { .. }
        ));
        assert!(matches!(
            f.on_packet(rid("f"), 3, 0, false, NO_IDS, now),
            Verdict::Forward { .. }
        ));
        assert_eq!(f.awaiting_keyframe(), None);
        // Other layers never leak through.
        assert_eq!(
            f.on_packet(rid("q"), 9, 0, true, NO_IDS, now),
            Verdict::Drop
        );
    }

    #[test]
    fn after_an_overflow_nothing_flows_and_the_keyframe_waits_for_the_drain() {
        let now = Instant::now();
        let mut f = Forwarder::video(90_000, Some(rid("h")));
        f.on_packet(rid("h"), 1, 0, true, NO_IDS, now);
        f.set_target(Some(rid("q")));
        assert!(matches!(
            f.on_packet(rid("h"), 2, 0, false, NO_IDS, now),
            Verdict::Forward { .. }
        ));
        f.restart_after_overflow(now);
        assert_eq!(
            f.on_packet(rid("h"), 3, 0, false, NO_IDS, now),
            Verdict::Drop,
            "the old layer stops at once"
        );
        assert_eq!(f.wants_keyframe(now + OVERFLOW_DRAIN / 2), None);
        assert_eq!(f.wants_keyframe(now + OVERFLOW_DRAIN), Some(rid("q")));
        assert!(matches!(
            f.on_packet(rid("q"), 50, 0, true, NO_IDS, now + OVERFLOW_DRAIN),
            Verdict::Forward { .. }
        ));
    }

    #[test]
    fn layer_switch_happens_at_the_target_keyframe_without_gaps() {
        let now = Instant::now();
        let mut f = Forwarder::video(90_000, Some(rid("f")));
        let Verdict::Forward { seq: a, .. } = f.on_packet(rid("f"), 100, 0, true, NO_IDS, now)
        else {
            panic!()
        };
        f.set_target(Some(rid("q")));
        // Old layer keeps flowing while we wait.
        let Verdict::Forward { seq: b, .. } = f.on_packet(rid("f"), 101, 0, false, NO_IDS, now)
        else {
            panic!()
        };
        assert_eq!(
            f.on_packet(rid("q"), 7000, 0, false, NO_IDS, now),
            Verdict::Drop
        );
        let Verdict::Forward { seq: c, .. } = f.on_packet(rid("q"), 7001, 0, true, NO_IDS, now)
        else {
            panic!()
        };
        assert_eq!((b, c), (a + 1, a + 2));
        assert_eq!(f.current(), Some(rid("q")));
        // The old layer is now cut off.
        assert_eq!(
            f.on_packet(rid("f"), 102, 0, false, NO_IDS, now),
            Verdict::Drop
        );
    }

    #[test]
    fn pause_and_resume() {
        let now = Instant::now();
        let mut f = Forwarder::video(90_000, Some(None));
        assert!(matches!(
            f.on_packet(None, 1, 0, true, NO_IDS, now),
            Verdict::Forward { .. }
        ));
        f.set_target(None);
        assert_eq!(f.on_packet(None, 2, 0, true, NO_IDS, now), Verdict::Drop);
        assert_eq!(f.awaiting_keyframe(), None);
        f.set_target(Some(None));
        assert_eq!(f.on_packet(None, 3, 0, false, NO_IDS, now), Verdict::Drop);
        assert!(matches!(
            f.on_packet(None, 4, 0, true, NO_IDS, now),
            Verdict::Forward { .. }
        ));
    }

    #[test]
    fn a_layer_switch_continues_the_vp8_picture_numbering() {
        let now = Instant::now();
        let ids = |pic, tl0| Vp8Ids {
            picture_id: Some(pic),
            tl0_pic_idx: Some(tl0),
        };
        let mut f = Forwarder::video(90_000, Some(rid("f")));
        f.on_packet(rid("f"), 100, 0, true, ids(3000, 40), now);
        f.set_target(Some(rid("q")));
        let Verdict::Forward { vp8, .. } = f.on_packet(rid("q"), 7001, 0, true, ids(9, 200), now)
        else {
            panic!()
        };
        assert_eq!(vp8, ids(3001, 41));
    }

    #[test]
    fn audio_forwards_from_the_first_packet() {
        let now = Instant::now();
        let mut f = Forwarder::audio(48_000);
        assert!(matches!(
            f.on_packet(None, 5, 960, false, NO_IDS, now),
            Verdict::Forward { .. }
        ));
        assert_eq!(f.awaiting_keyframe(), None);
    }
}
