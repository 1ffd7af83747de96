//! The impairment model, apart from the queue so it can be tested without a kernel.

use std::time::{Duration, Instant};

/// xorshift64*: small, seedable, good enough for loss and jitter.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Gilbert-Elliott loss (two states, each with its own loss rate) plus delay and jitter.
/// With `enter_bad = 0` it is plain random loss at `loss_good`.
pub struct Impairment {
    pub delay: Duration,
    pub jitter: Duration,
    pub loss_good: f64,
    pub loss_bad: f64,
    pub enter_bad: f64,
    pub leave_bad: f64,
    pub bad: bool,
    /// Release time of the previous packet: a packet never overtakes it, as on one link.
    pub last_release: Option<Instant>,
}

impl Impairment {
    /// When to release a packet that arrived at `now`, or `None` to drop it.
    pub fn decide(&mut self, now: Instant, rng: &mut Rng) -> Option<Instant> {
        self.bad = if self.bad {
            rng.unit() >= self.leave_bad
        } else {
            rng.unit() < self.enter_bad
        };
        let loss = if self.bad {
            self.loss_bad
        } else {
            self.loss_good
        };
        if rng.unit() < loss {
            return None;
        }
        let spread = self.jitter.as_secs_f64() * (2.0 * rng.unit() - 1.0);
        let delay = (self.delay.as_secs_f64() + spread).max(0.0);
        let at = (now + Duration::from_secs_f64(delay)).max(self.last_release.unwrap_or(now));
        self.last_release = Some(at);
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn impairment() -> Impairment {
        Impairment {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss_good: 0.0,
            loss_bad: 0.0,
            enter_bad: 0.0,
            leave_bad: 1.0,
            bad: false,
            last_release: None,
        }
    }

    #[test]
    fn random_loss_rate_is_close_to_the_setting() {
        let mut m = Impairment {
            loss_good: 0.2,
            ..impairment()
        };
        let mut rng = Rng::new(7);
        let now = Instant::now();
        let dropped = (0..100_000)
            .filter(|_| m.decide(now, &mut rng).is_none())
            .count();
        assert!((19_000..21_000).contains(&dropped), "{dropped}");
    }

    #[test]
    fn bursts_cluster_losses() {
        // Same average loss (~10%), once random and once in bursts.
        let now = Instant::now();
        let longest_run = |m: &mut Impairment| {
            let mut rng = Rng::new(3);
            let (mut run, mut longest, mut lost) = (0, 0, 0);
            for _ in 0..100_000 {
                if m.decide(now, &mut rng).is_none() {
                    run += 1;
                    lost += 1;
                    longest = longest.max(run);
                } else {
                    run = 0;
                }
            }
            (longest, lost)
        };
        let (random_run, random_lost) = longest_run(&mut Impairment {
            loss_good: 0.1,
            ..impairment()
        });
        let (burst_run, burst_lost) = longest_run(&mut Impairment {
            loss_bad: 0.5,
            enter_bad: 0.025,
            leave_bad: 0.1,
            ..impairment()
        });
        assert!((8_000..12_000).contains(&random_lost) && (5_000..15_000).contains(&burst_lost));
        assert!(
            burst_run > random_run,
            "bursts {burst_run} vs random {random_run}"
        );
    }

    #[test]
    fn jitter_stays_in_bounds_and_never_reorders() {
        let mut m = Impairment {
            delay: Duration::from_millis(90),
            jitter: Duration::from_millis(20),
            ..impairment()
        };
        let mut rng = Rng::new(11);
        let start = Instant::now();
        let mut last = start;
        for i in 0..1000 {
            let now = start + Duration::from_millis(i);
            let at = m.decide(now, &mut rng).unwrap();
            assert!(at >= last, "order kept");
            let delay = at - now;
            assert!(delay <= Duration::from_millis(111), "{delay:?}");
            last = at;
        }
    }
}
