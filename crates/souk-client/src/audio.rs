//! Real audio in and out of a client, for the AI agent: Opus frames it encoded itself
//! go out on the published audio track at the media clock, and the Opus frames of the
//! tracks it receives come back to it.
//!
//! The feed is the playout buffer. What the agent queues plays 20 ms a frame; pausing
//! holds the queue (barge-in), clearing drops it (an interruption), and each frame's tag
//! comes back once it was sent, so the agent knows exactly what the listener heard.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One 20 ms Opus frame to play.
#[derive(Debug, Clone)]
pub struct OutFrame {
    /// The caller's label for the frame (which reply and how far into it).
    pub tag: u64,
    pub opus: Vec<u8>,
    /// Audio level in -dBov for the RTP header extension (0 loud, 127 silent).
    pub level: i8,
}

#[derive(Debug, Default)]
struct FeedState {
    queue: VecDeque<OutFrame>,
    paused: bool,
    /// Tags of frames sent since the caller last asked, with when.
    sent: Vec<(u64, Instant)>,
}

/// The playout buffer of a published audio track. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct AudioFeed(Arc<Mutex<FeedState>>);

impl AudioFeed {
    fn state(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, frame: OutFrame) {
        self.state().queue.push_back(frame);
    }

    /// Holds playout where it is (`true`) or lets it go on (`false`).
    pub fn set_paused(&self, paused: bool) {
        self.state().paused = paused;
    }

    /// Drops every queued frame; returns how many.
    pub fn clear(&self) -> usize {
        let mut state = self.state();
        let n = state.queue.len();
        state.queue.clear();
        n
    }

    pub fn queued(&self) -> usize {
        self.state().queue.len()
    }

    /// The tags of the frames sent since the last call, in order, with when each went out.
    pub fn take_sent(&self) -> Vec<(u64, Instant)> {
        std::mem::take(&mut self.state().sent)
    }

    /// The next frame to send, unless paused or empty: what the sender calls every 20 ms.
    pub fn next_frame(&self, now: Instant) -> Option<OutFrame> {
        let mut state = self.state();
        if state.paused {
            return None;
        }
        let frame = state.queue.pop_front()?;
        state.sent.push((frame.tag, now));
        Some(frame)
    }
}

/// One Opus frame received on an audio track.
#[derive(Debug, Clone)]
pub struct ReceivedAudio {
    pub participant_sid: String,
    pub track_id: String,
    pub opus: Vec<u8>,
    /// The frame came after a gap (lost packets before it).
    pub after_gap: bool,
}
