//! Connection quality: the E-model MOS estimate from what the subscriber's receiver reports
//! say about the path (round-trip time, jitter, loss), and the grade a user sees.
//!
//! Formula (as Twilio publishes it): EL = RTT + 2·jitter + 10 ms;
//! R = 94.768 − EL/40 below 160 ms, else 94.768 − (EL − 120)/10; R −= 2.5 · loss%;
//! MOS = 1 + 0.035·R + 7·10⁻⁶·R·(R − 60)·(100 − R).

use souk_proto::model::QualityGrade;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PathQuality {
    pub rtt_ms: f64,
    pub jitter_ms: f64,
    /// Fraction lost, 0.0 to 1.0.
    pub loss: f64,
    /// What the server sends the client, bits per second, between its last two stats
    /// reports (not part of the MOS: it shows whether the client gets video at all).
    pub send_bps: f64,
    /// Copies of each video packet sent to the client against random loss (1: none).
    pub video_copies: u8,
    /// What its downlink carries (bits per second), once it has shown a limit.
    pub downlink_estimate_bps: Option<u64>,
}

/// The video layer one subscriber gets of one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionLayer {
    pub room: String,
    pub subscriber_sid: String,
    pub track_id: String,
    /// Index of the simulcast layer sent (0 the smallest), `None` while paused.
    pub index: Option<usize>,
}

impl PathQuality {
    pub fn mos(&self) -> f64 {
        let effective_latency = self.rtt_ms + 2.0 * self.jitter_ms + 10.0;
        let mut r = if effective_latency < 160.0 {
            94.768 - effective_latency / 40.0
        } else {
            94.768 - (effective_latency - 120.0) / 10.0
        };
        r -= 2.5 * self.loss * 100.0;
        let r = r.clamp(0.0, 100.0);
        (1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5)
    }

    pub fn grade(&self) -> QualityGrade {
        match self.mos() {
            m if m >= 4.0 => QualityGrade::Excellent,
            m if m >= 3.5 => QualityGrade::Good,
            _ => QualityGrade::Poor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_path_is_excellent() {
        // EL = 20 + 4 + 10 = 34; R = 94.768 - 0.85 = 93.918; MOS = 4.4227.
        let q = PathQuality {
            rtt_ms: 20.0,
            jitter_ms: 2.0,
            loss: 0.0,
            ..Default::default()
        };
        assert!((q.mos() - 4.4227).abs() < 0.001, "{}", q.mos());
        assert_eq!(q.grade(), QualityGrade::Excellent);
    }

    #[test]
    fn latency_and_loss_lower_the_grade() {
        // EL = 250 + 20 + 10 = 280; R = 94.768 - 16 - 2.5 = 76.268; MOS = 3.875.
        let far = PathQuality {
            rtt_ms: 250.0,
            jitter_ms: 10.0,
            loss: 0.01,
            ..Default::default()
        };
        assert!((far.mos() - 3.875).abs() < 0.001, "{}", far.mos());
        assert_eq!(far.grade(), QualityGrade::Good);
        // 20% loss costs 50 points of R on its own.
        let lossy = PathQuality {
            rtt_ms: 50.0,
            jitter_ms: 5.0,
            loss: 0.2,
            ..Default::default()
        };
        assert_eq!(lossy.grade(), QualityGrade::Poor, "{}", lossy.mos());
        let hopeless = PathQuality {
            rtt_ms: 2000.0,
            jitter_ms: 500.0,
            loss: 0.5,
            ..Default::default()
        };
        assert_eq!(hopeless.mos(), 1.0);
    }
}
