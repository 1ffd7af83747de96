//! Rooms spread over media engines. Each engine (a core, its task, its sockets and its
//! sending thread) owns whole rooms: many rooms use every core, nothing on the packet
//! path is shared between engines, and one room stays on one engine.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use souk_metrics::Histogram;
use souk_proto::error::ProtoError;
use souk_sfu::Sfu;

use super::MediaHandle;

/// Every media engine, and which one owns a room.
#[derive(Clone)]
pub struct MediaShards {
    engines: Arc<[MediaHandle]>,
}

impl MediaShards {
    /// `engines` must not be empty (the configuration asks for at least one).
    pub fn new(engines: Vec<MediaHandle>) -> MediaShards {
        assert!(!engines.is_empty(), "at least one media engine");
        MediaShards {
            engines: engines.into(),
        }
    }

    /// The engine that owns `room`: the same one for the whole life of the process.
    pub fn room(&self, room: &str) -> &MediaHandle {
        &self.engines[shard_of(room, self.engines.len())]
    }

    /// Runs `f` on every engine's core; the results in engine order.
    pub async fn call_all<R, F>(&self, f: F) -> Result<Vec<R>, ProtoError>
    where
        R: Send + 'static,
        F: Fn(&mut Sfu, Instant) -> R + Clone + Send + 'static,
    {
        let mut out = Vec::with_capacity(self.engines.len());
        for engine in self.engines.iter() {
            out.push(engine.call(f.clone()).await?);
        }
        Ok(out)
    }

    /// How long datagrams have taken through the server, over every engine.
    pub fn forward_delay(&self) -> Histogram {
        let mut all = self.engines[0].forward_delay();
        for engine in &self.engines[1..] {
            all.merge(&engine.forward_delay());
        }
        all
    }
}

fn shard_of(room: &str, engines: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    room.hash(&mut hasher);
    (hasher.finish() % engines as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_spread_over_engines_and_each_stays_on_one() {
        let rooms: Vec<String> = (0..100).map(|i| format!("room-{i}")).collect();
        let first: Vec<usize> = rooms.iter().map(|r| shard_of(r, 2)).collect();
        let again: Vec<usize> = rooms.iter().map(|r| shard_of(r, 2)).collect();
        assert_eq!(first, again);
        let on_second = first.iter().filter(|&&s| s == 1).count();
        assert!(
            (30..=70).contains(&on_second),
            "{on_second} of 100 on the second"
        );
        assert!(rooms.iter().all(|r| shard_of(r, 1) == 0));
    }
}
