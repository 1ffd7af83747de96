//! Token buckets: a burst allowance that refills at a steady rate.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Bucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    pub fn new(capacity: u32, per_second: f64, now: Instant) -> Bucket {
        Bucket {
            capacity: capacity as f64,
            per_second,
            tokens: capacity as f64,
            updated: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * self.per_second >= self.capacity
    }
}

/// One bucket per key (e.g. per client address), forgotten once full again.
pub struct KeyedLimiter<K> {
    capacity: u32,
    per_second: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(capacity: u32, per: Duration) -> Self {
        KeyedLimiter {
            capacity,
            per_second: capacity as f64 / per.as_secs_f64(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn try_take(&self, key: &K, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 10_000 {
            // Keys whose bucket refilled carry no information; dropping them bounds memory
            // under a spray of addresses.
            buckets.retain(|_, b| !b.is_full(now));
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(self.capacity, self.per_second, now))
            .try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let start = Instant::now();
        let mut b = Bucket::new(2, 1.0, start);
        assert!(b.try_take(start));
        assert!(b.try_take(start));
        assert!(!b.try_take(start));
        assert!(b.try_take(start + Duration::from_secs(1)));
    }

    #[test]
    fn keys_are_independent() {
        let now = Instant::now();
        let limiter = KeyedLimiter::new(1, Duration::from_secs(10));
        assert!(limiter.try_take(&"a", now));
        assert!(!limiter.try_take(&"a", now));
        assert!(limiter.try_take(&"b", now));
    }
}
