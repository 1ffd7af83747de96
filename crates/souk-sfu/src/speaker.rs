//! Audio levels and the active-speaker list.
//!
//! Browsers put each audio packet's level in the RFC 6464 header extension (in -dBov,
//! 0 = loudest, 127 = silence), so the SFU learns who speaks without decoding audio.

/// Levels below this (about -45 dBov) count as silence.
pub const SPEAKING_THRESHOLD: f32 = 0.005;

/// Averages the levels seen since the last read.
#[derive(Debug, Default, Clone)]
pub struct LevelMeter {
    sum: f32,
    count: u32,
}

impl LevelMeter {
    /// Records one packet's level, given in -dBov as carried on the wire.
    pub fn observe(&mut self, minus_dbov: i8) {
        let dbov = -(minus_dbov.unsigned_abs().min(127) as f32);
        self.sum += 10f32.powf(dbov / 20.0);
        self.count += 1;
    }

    /// The mean linear level (0.0 to 1.0) since the last call, and resets.
    pub fn take(&mut self) -> f32 {
        let mean = if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f32
        };
        *self = LevelMeter::default();
        mean
    }
}

/// Ranks speakers loudest first, leaving out those below the threshold.
pub fn rank<K: Clone>(levels: impl IntoIterator<Item = (K, f32)>) -> Vec<(K, f32)> {
    let mut speaking: Vec<_> = levels
        .into_iter()
        .filter(|(_, level)| *level >= SPEAKING_THRESHOLD)
        .collect();
    speaking.sort_by(|a, b| b.1.total_cmp(&a.1));
    speaking
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_dbov_to_linear() {
        let mut m = LevelMeter::default();
        m.observe(0);
        assert!((m.take() - 1.0).abs() < 1e-6);
        m.observe(20);
        assert!((m.take() - 0.1).abs() < 1e-6);
        assert_eq!(m.take(), 0.0, "reset after take");
        m.observe(127);
        assert!(m.take() < SPEAKING_THRESHOLD);
    }

    #[test]
    fn ranks_loudest_first_and_drops_silence() {
        let ranked = rank([("a", 0.1), ("b", 0.5), ("c", 0.0001)]);
        assert_eq!(ranked, vec![("b", 0.5), ("a", 0.1)]);
    }
}
