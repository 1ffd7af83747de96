//! A signalling session's outgoing queue: the media engine pushes, the socket's writer
//! task pops.
//!
//! A live room pushes one event to every viewer's queue about ten times a second, so at
//! 10,000 viewers this is among the hottest code in the server, and each queue is cold in
//! the cache when it is touched. tokio's bounded channel spreads one queue over several
//! cache-padded structures, a semaphore and a block list (about a tenth of the server's
//! CPU in a profile at 10,000 viewers, bench/RESULTS.md); this one keeps the queue, its
//! waker and its counts behind one lock in one allocation.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use super::SessionEvent;

/// Why an event was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The client is not reading: as many events as the queue holds are waiting.
    Full,
    /// The writer is gone (the socket closed).
    Closed,
}

struct State {
    events: VecDeque<SessionEvent>,
    capacity: usize,
    /// The writer waiting for an event, if it is waiting.
    waker: Option<Waker>,
    /// Strong senders; the writer sees the end of the queue when the last one goes.
    senders: usize,
    receiver_alive: bool,
}

struct Shared(Mutex<State>);

impl Shared {
    /// A panic elsewhere while holding the lock leaves the queue itself intact, so a
    /// poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Pushes events; the queue ends for the writer when every sender is dropped.
pub struct SessionSender(Arc<Shared>);

/// A sender that does not keep the queue open (the socket's reader replies through one).
pub struct WeakSessionSender(Arc<Shared>);

pub struct SessionReceiver(Arc<Shared>);

/// A queue that holds at most `capacity` events.
pub fn channel(capacity: usize) -> (SessionSender, SessionReceiver) {
    let shared = Arc::new(Shared(Mutex::new(State {
        events: VecDeque::new(),
        capacity,
        waker: None,
        senders: 1,
        receiver_alive: true,
    })));
    (SessionSender(shared.clone()), SessionReceiver(shared))
}

impl SessionSender {
    pub fn try_send(&self, event: SessionEvent) -> Result<(), SendError> {
        let waker = {
            let mut state = self.0.lock();
            if !state.receiver_alive {
                return Err(SendError::Closed);
            }
            if state.events.len() >= state.capacity {
                return Err(SendError::Full);
            }
            state.events.push_back(event);
            state.waker.take()
        };
        // Woken outside the lock, so the writer does not wake into a held lock.
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    pub fn downgrade(&self) -> WeakSessionSender {
        WeakSessionSender(self.0.clone())
    }
}

impl Drop for SessionSender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.senders -= 1;
            if state.senders > 0 {
                return;
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl WeakSessionSender {
    /// A sender, while some strong sender still keeps the queue open.
    pub fn upgrade(&self) -> Option<SessionSender> {
        let mut state = self.0.lock();
        if state.senders == 0 {
            return None;
        }
        state.senders += 1;
        Some(SessionSender(self.0.clone()))
    }
}

impl SessionReceiver {
    /// The next event; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        poll_fn(|cx| {
            let mut state = self.0.lock();
            if let Some(event) = state.events.pop_front() {
                return Poll::Ready(Some(event));
            }
            if state.senders == 0 {
                return Poll::Ready(None);
            }
            match &mut state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for SessionReceiver {
    fn drop(&mut self) {
        let events = {
            let mut state = self.0.lock();
            state.receiver_alive = false;
            state.waker = None;
            std::mem::take(&mut state.events)
        };
        // Dropped outside the lock: an event may own a large message.
        drop(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> SessionEvent {
        SessionEvent::Text(s.into())
    }

    fn is_text(event: Option<SessionEvent>, expected: &str) -> bool {
        matches!(event, Some(SessionEvent::Text(t)) if t.as_str() == expected)
    }

    #[tokio::test]
    async fn events_arrive_in_order_and_the_queue_ends_with_its_last_sender() {
        let (tx, mut rx) = channel(4);
        let second = tx.downgrade().upgrade().expect("the first sender is alive");
        tx.try_send(text("a")).unwrap();
        second.try_send(text("b")).unwrap();
        drop(tx);
        assert!(is_text(rx.recv().await, "a"));
        assert!(is_text(rx.recv().await, "b"));
        drop(second);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_an_event_pushed_from_another_task() {
        let (tx, mut rx) = channel(4);
        let pusher = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.try_send(text("late")).unwrap();
            tx
        });
        assert!(is_text(rx.recv().await, "late"));
        drop(pusher.await.unwrap());
        assert!(rx.recv().await.is_none());
    }

    #[test]
    fn a_full_queue_refuses_and_a_gone_writer_closes() {
        let (tx, rx) = channel(2);
        tx.try_send(text("1")).unwrap();
        tx.try_send(text("2")).unwrap();
        assert_eq!(tx.try_send(text("3")), Err(SendError::Full));
        drop(rx);
        assert_eq!(tx.try_send(text("4")), Err(SendError::Closed));
    }

    #[tokio::test]
    async fn a_weak_sender_does_not_keep_the_queue_open() {
        let (tx, mut rx) = channel(4);
        let weak = tx.downgrade();
        let upgraded = weak.upgrade().expect("a strong sender is alive");
        upgraded.try_send(text("reply")).unwrap();
        drop(upgraded);
        drop(tx);
        assert!(weak.upgrade().is_none());
        assert!(is_text(rx.recv().await, "reply"));
        assert!(rx.recv().await.is_none());
    }
}
