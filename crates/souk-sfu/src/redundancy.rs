//! How many copies of each video packet a subscriber gets.
//!
//! Retransmission repairs a lost packet one round trip later at best. A receive-only
//! Chromium never learns the round trip (the RTCP that would tell it is not negotiated),
//! so when a retransmission is lost too it asks again only after its default 100 ms. At
//! 20% random loss a third of the frames wait for that, and playback stutters even on a
//! link with capacity to spare. Copies sent at once trade bandwidth for that wait: `n`
//! copies leave `p^n` of a random loss `p`, and SRTP's replay check drops the copies
//! that arrive after the first, so the decoder sees each packet once.
//!
//! The receiver reports the loss left after the copies. Copies are added while it is
//! above what retransmission repairs in time at the path's round trip, and removed while
//! one copy fewer would still be below half of that. Copies are a bet that the loss is
//! random and the link has room; congestion loses the bet, since copies only add to the
//! queue. So the first copy must visibly cut the loss, and the round trip must not climb
//! while copies are sent; otherwise they stop, and stay off for a while (longer each
//! time). Where we estimate the link (TWCC, with `--bwe on`), the copies must also fit in
//! the estimate. The receiver's REMB is no guide: it never exceeds 1.5 times what
//! arrives, does not count the copies SRTP drops, and after a start on a small layer it
//! stayed at 155 kbps under a 750 kbps stream for a whole lab run.

use std::time::{Duration, Instant};

use str0m::media::Mid;

/// Never more than this many copies of a packet (3: 20% loss leaves 0.8%).
const MAX_COPIES: u8 = 3;

/// Loss that retransmission repairs in time on a short path.
const TOLERABLE_LOSS: f64 = 0.03;
/// Paths longer than this tolerate proportionally less: each repair costs a round trip.
const SHORT_PATH: Duration = Duration::from_millis(50);
/// Floor on the tolerable loss however long the path.
const MIN_TOLERABLE_LOSS: f64 = 0.005;
/// Weight of a new report in the smoothed loss.
const LOSS_SMOOTHING: f64 = 0.25;
/// Reports after a change before the next one (the first covers time before the change).
const REPORTS_BEFORE_ADDING: u32 = 3;
/// Reports after a change before a copy is removed: a clean second is common at 1% loss.
const REPORTS_BEFORE_REMOVING: u32 = 8;
/// The first copy must bring the loss below this share of what it was.
const HELPED: f64 = 0.75;
/// Share of our own estimate the copies may fill.
const SENDER_ESTIMATE_SHARE: f64 = 0.85;
/// A round trip above `before * QUEUE_FACTOR + QUEUE_MARGIN`, where `before` is the one
/// measured before the copies started, means they are building a queue.
const QUEUE_FACTOR: u32 = 2;
const QUEUE_MARGIN: Duration = Duration::from_millis(30);
/// How long copies stay off after they did not help; it doubles each time.
const BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(80);

/// One receiver report on the subscriber's link.
#[derive(Debug, Clone, Copy)]
pub struct LinkReport {
    /// Fraction of video packets lost, after the copies.
    pub loss: f64,
    pub rtt: Duration,
    /// What the server sends the subscriber now, copies included (bits per second).
    pub send_bps: f64,
    /// The stream the report is about, and the highest sequence number its receiver had
    /// when it wrote the report: what the report can speak for.
    pub received_through: Option<(Mid, u64)>,
}

#[derive(Debug, Clone)]
pub struct Redundancy {
    copies: u8,
    /// Smoothed loss the receiver reported since the last change (what the copies left).
    loss: Option<f64>,
    reports_since_change: u32,
    /// Our estimate of the subscriber's downlink (TWCC), where bandwidth is estimated.
    sender_estimate_bps: Option<u64>,
    /// The round trip before the copies started.
    rtt_before: Option<Duration>,
    /// The smoothed loss before the first copy, until that copy is judged.
    loss_before_increase: Option<f64>,
    /// No copies before this instant.
    backed_off_until: Option<Instant>,
    backoff: Duration,
}

impl Default for Redundancy {
    fn default() -> Self {
        Redundancy {
            copies: 1,
            loss: None,
            // As if long after a change: the first report counts in full.
            reports_since_change: REPORTS_BEFORE_REMOVING,
            sender_estimate_bps: None,
            rtt_before: None,
            loss_before_increase: None,
            backed_off_until: None,
            backoff: BACKOFF,
        }
    }
}

impl Redundancy {
    /// Copies of each video packet to send (1: no redundancy).
    pub fn copies(&self) -> u8 {
        self.copies
    }

    /// Our estimate of what the subscriber's link carries.
    pub fn on_sender_estimate(&mut self, bps: u64) {
        self.sender_estimate_bps = Some(bps);
    }

    pub fn on_report(&mut self, now: Instant, report: LinkReport) {
        self.reports_since_change += 1;
        if self.reports_since_change > 1 {
            let loss = report.loss.clamp(0.0, 1.0);
            self.loss = Some(match self.loss {
                Some(old) => old + (loss - old) * LOSS_SMOOTHING,
                None => loss,
            });
        }
        let queue = self
            .rtt_before
            .is_some_and(|before| report.rtt > before * QUEUE_FACTOR + QUEUE_MARGIN);
        if queue {
            return self.back_off(now);
        }
        if self.backed_off_until.is_some_and(|until| now < until) {
            return;
        }
        let Some(smoothed) = self.loss else {
            return;
        };
        if self.reports_since_change < REPORTS_BEFORE_ADDING {
            return;
        }
        if let Some(before) = self.loss_before_increase.take() {
            if smoothed >= before * HELPED {
                return self.back_off(now);
            }
        }
        let tolerable = tolerable_loss(report.rtt);
        if smoothed > tolerable && self.copies < MAX_COPIES && self.room_for_one_more(report) {
            if self.copies == 1 {
                self.rtt_before = Some(report.rtt);
                // The first copy is judged: random loss falls from p to p², which a
                // second of reports shows plainly. Later copies cut a loss already near
                // 1%, below what one second of reports can tell from noise.
                // The smoothed figure lags a loss that has just risen: judge against
                // whichever is higher.
                self.loss_before_increase = Some(smoothed.max(report.loss));
            }
            self.change(self.copies + 1);
            self.loss = None;
        } else if self.copies > 1 && self.reports_since_change >= REPORTS_BEFORE_REMOVING {
            // Loss is random, so what one copy fewer would leave follows from what is left now.
            let raw = smoothed.powf(1.0 / self.copies as f64);
            let left = raw.powi(self.copies as i32 - 1);
            if left <= tolerable / 2.0 {
                self.change(self.copies - 1);
                // Keep the history, rescaled, so that one clean report does not remove
                // the next copy too.
                self.loss = Some(left);
            }
        }
    }

    /// Not beyond our own estimate, where there is one.
    fn room_for_one_more(&self, report: LinkReport) -> bool {
        let one_copy = report.send_bps / self.copies as f64;
        self.sender_estimate_bps.is_none_or(|estimate| {
            one_copy * (self.copies + 1) as f64 <= estimate as f64 * SENDER_ESTIMATE_SHARE
        })
    }

    fn change(&mut self, copies: u8) {
        self.copies = copies;
        self.reports_since_change = 0;
        if copies == 1 {
            self.rtt_before = None;
        }
    }

    /// The link showed a queue: its loss is congestion, which copies only add to.
    pub fn on_congestion(&mut self, now: Instant) {
        self.back_off(now);
    }

    /// The copies did not help: the loss is congestion.
    fn back_off(&mut self, now: Instant) {
        self.change(1);
        self.loss = None;
        self.loss_before_increase = None;
        self.backed_off_until = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// Loss retransmission repairs in time: 3% up to a 50 ms round trip, less beyond.
fn tolerable_loss(rtt: Duration) -> f64 {
    if rtt <= SHORT_PATH {
        return TOLERABLE_LOSS;
    }
    (TOLERABLE_LOSS * SHORT_PATH.as_secs_f64() / rtt.as_secs_f64()).max(MIN_TOLERABLE_LOSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds one report a second for `seconds`, with the loss a random link of `raw` loss
    /// leaves after the copies in use.
    fn run(r: &mut Redundancy, start: Instant, seconds: u64, raw: f64, rtt: Duration) -> Instant {
        let mut now = start;
        for _ in 0..seconds {
            now += Duration::from_secs(1);
            let report = LinkReport {
                loss: raw.powi(r.copies() as i32),
                rtt,
                send_bps: 800_000.0 * r.copies() as f64,
                received_through: None,
            };
            r.on_report(now, report);
        }
        now
    }

    #[test]
    fn a_clean_link_gets_one_copy() {
        let mut r = Redundancy::default();
        run(&mut r, Instant::now(), 30, 0.0, 2 * MS);
        assert_eq!(r.copies(), 1);
    }

    #[test]
    fn a_little_loss_on_a_short_path_is_left_to_retransmission() {
        let mut r = Redundancy::default();
        run(&mut r, Instant::now(), 30, 0.02, 2 * MS);
        assert_eq!(r.copies(), 1);
    }

    #[test]
    fn twenty_percent_loss_climbs_to_three_copies_and_stays() {
        let mut r = Redundancy::default();
        let now = run(&mut r, Instant::now(), 1, 0.2, 2 * MS);
        assert_eq!(r.copies(), 2, "one step at a time");
        let now = run(&mut r, now, 2, 0.2, 2 * MS);
        assert_eq!(r.copies(), 2, "and a pause after each");
        let now = run(&mut r, now, 10, 0.2, 2 * MS);
        assert_eq!(r.copies(), 3);
        run(&mut r, now, 30, 0.2, 2 * MS);
        assert_eq!(r.copies(), 3, "0.8% left, but two copies would leave 4%");
    }

    #[test]
    fn ten_percent_loss_settles_on_two_copies() {
        let mut r = Redundancy::default();
        run(&mut r, Instant::now(), 30, 0.1, 2 * MS);
        assert_eq!(r.copies(), 2, "1% left with two; three would be waste");
    }

    #[test]
    fn a_long_path_tolerates_less_loss() {
        let mut r = Redundancy::default();
        run(&mut r, Instant::now(), 30, 0.02, 180 * MS);
        assert_eq!(r.copies(), 2, "2% at 180 ms costs a freeze per repair");
    }

    #[test]
    fn copies_fit_in_our_own_estimate() {
        let mut r = Redundancy::default();
        r.on_sender_estimate(2_500_000);
        run(&mut r, Instant::now(), 30, 0.2, 2 * MS);
        assert_eq!(
            r.copies(),
            2,
            "a third 800 kbps copy is beyond 85% of 2.5 Mbps"
        );
        let mut r = Redundancy::default();
        r.on_sender_estimate(300_000);
        run(&mut r, Instant::now(), 30, 0.5, 2 * MS);
        assert_eq!(r.copies(), 1, "a capped link");
    }

    #[test]
    fn copies_are_removed_when_the_loss_goes_away() {
        let mut r = Redundancy::default();
        let now = run(&mut r, Instant::now(), 20, 0.2, 2 * MS);
        assert_eq!(r.copies(), 3);
        let now = run(&mut r, now, 1, 0.0, 2 * MS);
        assert_eq!(r.copies(), 3, "one clean second is noise at 0.8% loss");
        let now = run(&mut r, now, 10, 0.0, 2 * MS);
        assert_eq!(r.copies(), 2);
        run(&mut r, now, 20, 0.0, 2 * MS);
        assert_eq!(r.copies(), 1);
    }

    #[test]
    fn copies_that_build_a_queue_stop_for_a_while() {
        let mut r = Redundancy::default();
        let now = run(&mut r, Instant::now(), 20, 0.2, 20 * MS);
        assert_eq!(r.copies(), 3);
        // The link's capacity falls: the queue grows and the copies make it worse.
        let now = run(&mut r, now, 1, 0.2, 200 * MS);
        assert_eq!(r.copies(), 1, "congestion: no copies");
        // The queue drains but the loss stays: no copies until the hold ends.
        let now = run(&mut r, now, 5, 0.2, 20 * MS);
        assert_eq!(r.copies(), 1, "held");
        run(&mut r, now, 10, 0.2, 20 * MS);
        assert!(r.copies() > 1, "random loss again after the hold");
    }

    #[test]
    fn copies_that_do_not_cut_the_loss_stop_for_longer_each_time() {
        // A cap below the stream's rate: whatever is sent, half of it is dropped.
        let mut r = Redundancy::default();
        let mut now = Instant::now();
        let report = |r: &mut Redundancy, now: &mut Instant, seconds: u64| {
            for _ in 0..seconds {
                *now += Duration::from_secs(1);
                let report = LinkReport {
                    loss: 0.5,
                    rtt: 100 * MS,
                    send_bps: 300_000.0,
                    received_through: None,
                };
                r.on_report(*now, report);
            }
        };
        report(&mut r, &mut now, 1);
        assert_eq!(r.copies(), 2, "at first it looks like random loss");
        report(&mut r, &mut now, 3);
        assert_eq!(r.copies(), 1, "the copy did not cut the loss");
        report(&mut r, &mut now, 9);
        assert_eq!(r.copies(), 1, "held 10 s");
        report(&mut r, &mut now, 1);
        assert_eq!(r.copies(), 2, "tried again");
        report(&mut r, &mut now, 3);
        assert_eq!(r.copies(), 1);
        report(&mut r, &mut now, 19);
        assert_eq!(r.copies(), 1, "held 20 s the second time");
    }

    #[test]
    fn a_copy_added_as_the_loss_rises_is_judged_against_the_risen_loss() {
        // Seen in the lab: the smoothed loss was still 3.9% when 15% arrived, and the
        // copy brought it to 4%.
        let mut r = Redundancy::default();
        let mut now = Instant::now();
        for loss in [0.0, 0.0, 0.154, 0.112, 0.038, 0.046] {
            now += Duration::from_secs(1);
            let report = LinkReport {
                loss,
                rtt: MS,
                send_bps: 850_000.0 * r.copies() as f64,
                received_through: None,
            };
            r.on_report(now, report);
        }
        assert!(r.copies() > 1, "the copy helped");
    }

    #[test]
    fn reports_right_after_a_change_are_not_acted_on() {
        let mut r = Redundancy::default();
        let now = run(&mut r, Instant::now(), 1, 0.2, 2 * MS);
        assert_eq!(r.copies(), 2);
        // Still a one-copy loss: the report covers time before the change.
        let report = LinkReport {
            loss: 0.2,
            rtt: 2 * MS,
            send_bps: 1_600_000.0,
            received_through: None,
        };
        r.on_report(now + 1000 * MS, report);
        r.on_report(now + 2000 * MS, report);
        assert_eq!(r.copies(), 2);
    }

    #[test]
    fn the_tolerable_loss_shrinks_with_the_round_trip() {
        assert_eq!(tolerable_loss(10 * MS), 0.03);
        assert!((tolerable_loss(100 * MS) - 0.015).abs() < 1e-9);
        assert_eq!(tolerable_loss(Duration::from_secs(2)), MIN_TOLERABLE_LOSS);
    }
}
