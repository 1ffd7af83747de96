//! Agent workers: separate `souk agent` processes that take voice jobs from the server.
//!
//! A worker connects to `/api/v1/agent/workers` (a WebSocket, with the API key), says
//! which shops it serves and how many rooms it can take, and is sent jobs: a room, a shop
//! and a token to join with. The server hands each job to the least busy worker that
//! serves the shop and has room, and runs the agent itself when none does. That is how
//! agents scale: add workers, each with its own model and speech stages.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What a worker says to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The first message: the shops it serves and how many rooms at once.
    Register { shops: Vec<String>, capacity: usize },
    /// The agent in `room` has left (done, or failed).
    JobDone { room: String },
}

/// What the server says to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Join `room` with `token` and talk for `shop`.
    Job {
        room: String,
        shop: String,
        token: String,
    },
    /// Leave `room`.
    Stop { room: String },
}

/// A connected worker.
#[derive(Debug)]
struct Worker {
    shops: HashSet<String>,
    capacity: usize,
    rooms: HashSet<String>,
    send: mpsc::UnboundedSender<ToWorker>,
}

/// The connected workers and the rooms each has.
#[derive(Debug, Default)]
pub struct WorkerPool {
    next_id: u64,
    workers: HashMap<u64, Worker>,
}

impl WorkerPool {
    pub fn add(
        &mut self,
        shops: Vec<String>,
        capacity: usize,
        send: mpsc::UnboundedSender<ToWorker>,
    ) -> u64 {
        self.next_id += 1;
        let worker = Worker {
            shops: shops.into_iter().collect(),
            capacity,
            rooms: HashSet::new(),
            send,
        };
        self.workers.insert(self.next_id, worker);
        self.next_id
    }

    /// The worker went away; the rooms it had are returned (their agents are gone).
    pub fn remove(&mut self, id: u64) -> Vec<String> {
        self.workers
            .remove(&id)
            .map(|w| w.rooms.into_iter().collect())
            .unwrap_or_default()
    }

    /// Gives the job to the least busy worker serving `shop` with room to spare.
    pub fn assign(&mut self, room: &str, shop: &str, token: &str) -> Option<u64> {
        let (&id, worker) = self
            .workers
            .iter_mut()
            .filter(|(_, w)| w.shops.contains(shop) && w.rooms.len() < w.capacity)
            .min_by_key(|(id, w)| (w.rooms.len(), **id))?;
        let job = ToWorker::Job {
            room: room.to_owned(),
            shop: shop.to_owned(),
            token: token.to_owned(),
        };
        worker.send.send(job).ok()?;
        worker.rooms.insert(room.to_owned());
        Some(id)
    }

    pub fn done(&mut self, id: u64, room: &str) {
        if let Some(worker) = self.workers.get_mut(&id) {
            worker.rooms.remove(room);
        }
    }

    /// Whether a worker has an agent in `room`.
    pub fn has(&self, room: &str) -> bool {
        self.workers.values().any(|w| w.rooms.contains(room))
    }

    /// Tells the worker with an agent in `room` to leave it.
    pub fn stop(&mut self, room: &str) -> bool {
        for worker in self.workers.values_mut() {
            if worker.rooms.remove(room) {
                let _ = worker.send.send(ToWorker::Stop {
                    room: room.to_owned(),
                });
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_go_to_the_least_busy_worker_of_the_shop_within_capacity() {
        let mut pool = WorkerPool::default();
        let (a_tx, mut a) = mpsc::unbounded_channel();
        let (b_tx, mut b) = mpsc::unbounded_channel();
        let wa = pool.add(vec!["acme".into()], 2, a_tx);
        let wb = pool.add(vec!["acme".into(), "zara".into()], 1, b_tx);
        assert_eq!(pool.assign("r1", "acme", "t1"), Some(wa));
        assert_eq!(pool.assign("r2", "acme", "t2"), Some(wb), "the idle one");
        assert_eq!(
            pool.assign("r3", "zara", "t3"),
            None,
            "b is full; a does not serve zara"
        );
        assert_eq!(pool.assign("r4", "acme", "t4"), Some(wa));
        assert_eq!(pool.assign("r5", "acme", "t5"), None, "everyone is full");
        assert!(matches!(a.try_recv(), Ok(ToWorker::Job { room, .. }) if room == "r1"));
        assert!(
            matches!(b.try_recv(), Ok(ToWorker::Job { room, token, .. }) if room == "r2" && token == "t2")
        );
        // A room ends: capacity frees up; a stop reaches the worker that has the room.
        pool.done(wb, "r2");
        assert_eq!(pool.assign("r3", "zara", "t3"), Some(wb));
        assert!(pool.stop("r4") && !pool.has("r4"));
        assert!(matches!(a.try_recv(), Ok(ToWorker::Job { room, .. }) if room == "r4"));
        assert!(matches!(a.try_recv(), Ok(ToWorker::Stop { room }) if room == "r4"));
        // A worker that disconnects takes its rooms with it.
        assert_eq!(pool.remove(wa), vec!["r1".to_owned()]);
        assert!(!pool.has("r1"));
    }

    #[test]
    fn wire_format() {
        let register: FromWorker =
            serde_json::from_str(r#"{"type":"register","shops":["acme"],"capacity":4}"#).unwrap();
        assert_eq!(
            register,
            FromWorker::Register {
                shops: vec!["acme".into()],
                capacity: 4
            }
        );
        let job = serde_json::to_value(ToWorker::Job {
            room: "r".into(),
            shop: "s".into(),
            token: "t".into(),
        })
        .unwrap();
        assert_eq!(job["type"], "job");
    }
}
