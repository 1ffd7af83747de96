//! What a subscriber's downlink carries, learnt from its receiver reports.
//!
//! str0m's send-side estimator (GoogCC, over TWCC) reads loss above 10% as congestion.
//! On a 4G link that loses 20% at random it drives the estimate toward zero, and str0m's
//! pacer then holds the media to it: video stops on a link with room to spare. What a
//! full link does that a lossy one does not is queue: packets wait in a buffer, and the
//! round trip grows. So this estimate moves on the round trip, not on the loss:
//!
//! - **Congestion** is a smoothed round trip well above the lowest one seen lately. The
//!   estimate then falls to a share of what arrived (sent × (1 − loss)), by at most half.
//!   It falls again only once the queue grows, fails to drain, or loses far more than
//!   the report it fell on (which caught only the start of an overflow): one queue is
//!   not counted twice.
//! - **No estimate** until the first congestion: a link that never queued gets what the
//!   subscriber asks for, and random loss is left to retransmission and video copies.
//! - **Growth**: while the path shows no queue the estimate creeps up, never past half
//!   again what is sent, as GoogCC's does.
//! - **Probing** before a step up: while the allocator wants more than the estimate, every
//!   packet is sent several times for 0.6 s (SRTP's replay check drops the extra copies
//!   at the receiver), so the wire carries the next step's rate with nothing new to
//!   decode. The next report that has seen the copies judges it: no queue and no more
//!   loss, and the estimate rises to that rate; otherwise the estimate stays (the queue
//!   was the probe's), and the next probe waits longer. A paused video is probed for by
//!   resuming it on trial.
//!
//! A link that drops without queueing (a policer) is invisible to this; the lab's caps
//! and the mobile links we know queue.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use str0m::media::Mid;

use crate::allocate::Allocation;
use crate::redundancy::LinkReport;

/// Weight of a new round trip in the smoothed one.
const RTT_SMOOTHING: f64 = 0.5;
/// The lowest smoothed round trip is the floor over this long. Short enough that a path
/// that got longer (a handover, a new route) stops looking like a queue within seconds;
/// a queue that stands that long at a full link still loses packets, which fails the
/// probes that would step up into it.
const FLOOR_WINDOW: Duration = Duration::from_secs(10);
/// A queue is a smoothed round trip above the floor by more than this, or by half the
/// floor on a long path: enough that 20 ms of jitter each way does not look like one.
const QUEUE_MARGIN: Duration = Duration::from_millis(60);
/// Share of what arrived that the estimate falls to under congestion.
const DECREASE: f64 = 0.85;
/// One decrease keeps at least this share of what was sent.
const MAX_CUT: f64 = 0.5;
/// After a decrease the queue it reacted to takes time to drain, retransmissions of what
/// it dropped included: the next decrease waits for a queue that grows after this long,
/// or for one that has not drained after [`MAX_DRAIN`].
const DRAIN: Duration = Duration::from_millis(1500);
const MAX_DRAIN: Duration = Duration::from_secs(4);
/// A round trip this much above the one at the last decrease is a growing queue.
const QUEUE_GROWTH: Duration = Duration::from_millis(20);
/// A standing queue that loses this much more than the report a decrease was read from:
/// that report caught only the start of an overflow (a cap that began late in its
/// second), and the decrease was not enough. Without this, cap-300k held a 1 Mbps
/// subscriber at the 640 layer, losing half its packets, until the longest drain ended.
const OVERFLOW_RISE: f64 = 0.2;
/// Growth per clean report, and its bound as a multiple of the rate sent.
const GROWTH: f64 = 1.08;
const GROWTH_BOUND: f64 = 1.5;
/// Never below this: audio keeps flowing whatever happens to video.
const MIN_ESTIMATE_BPS: u64 = 50_000;
/// A probe sends copies this long (a longer overfill of a full link loses more media),
/// and is judged by a report from this long after, at the earliest: a receiver report
/// covers the second before it. Copies also hide loss (a packet is lost only if every
/// copy is), so the verdict rests mostly on the round trip.
const PROBE_SEND: Duration = Duration::from_millis(600);
const PROBE_SETTLE: Duration = Duration::from_millis(200);
/// A probe is judged only by a report whose receiver had the first video packet sent
/// after the copies: str0m hands over the last receiver report once a second, so a
/// report can be a second older than its event and describe the link before the copies
/// (a cap-300k probe passed on one, and the layer it allowed froze video for 4 s). If
/// that stream's reports stop (its video paused), any report judges after this long.
const PROBE_VERDICT_LIMIT: Duration = Duration::from_secs(3);
/// A probe fails on a queue, or on this much more loss than the reports before it.
const PROBE_LOSS_RISE: f64 = 0.03;
/// Weight of a new report in the smoothed loss.
const LOSS_SMOOTHING: f64 = 0.3;
/// A trial hears this many clean reports, from this long after it starts: the first
/// covers most of a second of the resumed video.
const TRIAL_LENGTH: Duration = Duration::from_millis(900);
const TRIAL_REPORTS: u32 = 2;
/// Copies of each packet a probe may send (the step from the lowest layer to the middle
/// one triples the rate).
const MAX_PROBE_COPIES: u8 = 5;
/// Wait before a probe after a congestion or a failed probe; it doubles per failure. A
/// failed probe overfills the link while its copies last, which costs the video some
/// repairs; the bound keeps a recovered link found within seconds.
const PROBE_BACKOFF: Duration = Duration::from_secs(2);
const MAX_PROBE_BACKOFF: Duration = Duration::from_secs(4);
/// Wait after a successful probe, so the step it allowed happens before the next.
const AFTER_PROBE: Duration = Duration::from_millis(250);

/// What the allocator would like, in estimates.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    /// For its next step up (`None`: nothing more wanted).
    pub next_step_bps: Option<u64>,
    /// For every video at its ceiling.
    pub all_bps: u64,
    /// What it sends now.
    pub sending_bps: u64,
    /// The next step resumes a paused video: the step itself is the probe. Copies of
    /// audio alone prove little, since audio's receiver reports come seldom and speak
    /// of old sender reports; the video is resumed on trial and paused again if its
    /// reports show a queue.
    pub trial: bool,
}

impl Want {
    pub fn of(allocation: &Allocation, trial: bool) -> Want {
        Want {
            next_step_bps: allocation.estimate_for_next_step(),
            all_bps: allocation.estimate_for_all(),
            sending_bps: allocation.allocated_bps,
            trial,
        }
    }
}

#[derive(Debug, Clone)]
struct Probe {
    target_bps: u64,
    /// 1: a trial, where the media itself is the probe.
    copies: u8,
    started: Instant,
    clean_reports: u32,
    /// The stream and sequence number of the first video packet sent after the copies.
    after_copies: Option<(Mid, u64)>,
}

impl Probe {
    fn is_trial(&self) -> bool {
        self.copies == 1
    }

    /// Reports before this describe the time before the probe. Copies are sent only
    /// briefly, since they overfill a full link while they last; a trial runs on.
    fn verdict_at(&self) -> Instant {
        if self.is_trial() {
            self.started + TRIAL_LENGTH
        } else {
            self.started + PROBE_SEND + PROBE_SETTLE
        }
    }

    /// Whether `report` speaks for the probe (see [`PROBE_VERDICT_LIMIT`]).
    fn judged_by(&self, now: Instant, report: &LinkReport) -> bool {
        if now < self.verdict_at() {
            return false;
        }
        match self.after_copies {
            Some((mid, seq)) if now < self.started + PROBE_VERDICT_LIMIT => report
                .received_through
                .is_some_and(|(m, through)| m == mid && through >= seq),
            _ => true,
        }
    }

    fn reports_needed(&self) -> u32 {
        if self.is_trial() {
            TRIAL_REPORTS
        } else {
            1
        }
    }
}

/// When the estimate last fell, and what the report it fell on said.
#[derive(Debug, Clone, Copy)]
struct Decrease {
    at: Instant,
    rtt: Duration,
    /// `None` after a failed probe: the loss was the probe's own.
    loss: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct DownlinkEstimate {
    estimate_bps: Option<u64>,
    smoothed_rtt: Option<Duration>,
    /// Recent smoothed round trips, for the floor (the lowest of them: smoothed, so one
    /// lucky sample does not set it).
    rtts: VecDeque<(Instant, Duration)>,
    last_decrease: Option<Decrease>,
    probe: Option<Probe>,
    last_probe_failed: bool,
    /// Smoothed loss outside probes.
    loss: f64,
    /// When the last probe passed, and the estimate before it.
    probed: Option<(Instant, Option<u64>)>,
    next_probe_at: Option<Instant>,
    probe_backoff: Duration,
}

impl Default for DownlinkEstimate {
    fn default() -> Self {
        DownlinkEstimate {
            estimate_bps: None,
            smoothed_rtt: None,
            rtts: VecDeque::new(),
            last_decrease: None,
            probe: None,
            last_probe_failed: false,
            loss: 0.0,
            probed: None,
            next_probe_at: None,
            probe_backoff: PROBE_BACKOFF,
        }
    }
}

impl DownlinkEstimate {
    /// Bits per second the link carries; `None` until it has shown a limit. During a
    /// trial, the rate on trial.
    pub fn estimate_bps(&self) -> Option<u64> {
        match &self.probe {
            Some(probe) if probe.is_trial() => Some(probe.target_bps),
            _ => self.estimate_bps,
        }
    }

    /// Copies of every packet to send now (1 unless probing).
    pub fn probe_copies(&self, now: Instant) -> u8 {
        match &self.probe {
            Some(probe) if now < probe.started + PROBE_SEND => probe.copies,
            _ => 1,
        }
    }

    pub fn probing(&self) -> bool {
        self.probe.is_some()
    }

    /// Whether the last probe ended in a queue or in loss.
    pub fn last_probe_failed(&self) -> bool {
        self.last_probe_failed
    }

    /// One receiver report (any stream of the subscriber's connection), with `send_bps`
    /// the media forwarded: no retransmissions, no copies.
    pub fn on_report(&mut self, now: Instant, report: LinkReport) {
        let queued = self.note_rtt(now, report.rtt);
        if let Some(probe) = &mut self.probe {
            if probe.judged_by(now, &report) {
                // More loss than before means the copies overfilled a buffer too.
                let lossier = report.loss > self.loss + PROBE_LOSS_RISE;
                if queued || lossier {
                    return self.probe_failed(now, report.rtt);
                }
                probe.clean_reports += 1;
                if probe.clean_reports >= probe.reports_needed() {
                    self.probe_passed(now);
                }
                return;
            }
        }
        if queued {
            self.on_congestion(now, report);
            return;
        }
        if self.probe.is_some() {
            // A report from before the probe's copies: neither the loss before a probe
            // nor a reason to grow.
            return;
        }
        self.loss += (report.loss.clamp(0.0, 1.0) - self.loss) * LOSS_SMOOTHING;
        if let Some(estimate) = self.estimate_bps {
            let bound = (report.send_bps * GROWTH_BOUND) as u64;
            if estimate < bound {
                self.estimate_bps = Some(((estimate as f64 * GROWTH) as u64).min(bound));
            }
        }
    }

    fn probe_passed(&mut self, now: Instant) {
        let Some(probe) = self.probe.take() else {
            return;
        };
        self.probed = Some((now, self.estimate_bps));
        self.last_probe_failed = false;
        self.estimate_bps = Some(self.estimate_bps.unwrap_or(0).max(probe.target_bps));
        self.probe_backoff = PROBE_BACKOFF;
        self.next_probe_at = Some(now + AFTER_PROBE);
    }

    /// The probe's own copies made this queue (or loss); the rate before it built
    /// none. Its queue drains like one after a decrease.
    fn probe_failed(&mut self, now: Instant, rtt: Duration) {
        self.probe = None;
        self.last_probe_failed = true;
        self.probe_backoff = (self.probe_backoff * 2).min(MAX_PROBE_BACKOFF);
        self.next_probe_at = Some(now + self.probe_backoff);
        self.last_decrease = Some(Decrease {
            at: now,
            rtt,
            loss: None,
        });
    }

    /// A video packet forwarded to the subscriber: the first after a probe's copies marks
    /// which reports can judge the probe.
    pub fn on_video_sent(&mut self, now: Instant, mid: Mid, seq: u64) {
        if let Some(probe) = &mut self.probe {
            if probe.after_copies.is_none()
                && !probe.is_trial()
                && now >= probe.started + PROBE_SEND
            {
                probe.after_copies = Some((mid, seq));
            }
        }
    }

    /// What the allocator would like; starts a probe when it is time for one.
    pub fn want(&mut self, now: Instant, want: Want) {
        let Want {
            next_step_bps,
            all_bps,
            sending_bps,
            trial,
        } = want;
        let (Some(estimate), Some(next_step)) = (self.estimate_bps, next_step_bps) else {
            return;
        };
        // Straight to what everything wants, where the copies can reach it, unless the
        // last probe failed: then only as far as the next step, which overfills less.
        let reach = sending_bps * MAX_PROBE_COPIES as u64;
        let target = if !trial && !self.last_probe_failed && all_bps <= reach {
            all_bps.max(next_step)
        } else {
            next_step
        };
        if self.probe.is_some()
            || target <= estimate
            || sending_bps == 0
            || self.next_probe_at.is_some_and(|at| now < at)
        {
            return;
        }
        if trial {
            // While video was paused the round trips came from audio's reports, which
            // answer sender reports seconds old and can still show the queue that paused
            // it: the trial is judged on the resumed video's own reports.
            self.smoothed_rtt = None;
        }
        let copies = if trial {
            1
        } else {
            target
                .div_ceil(sending_bps)
                .clamp(2, MAX_PROBE_COPIES as u64) as u8
        };
        self.probe = Some(Probe {
            target_bps: target,
            copies,
            started: now,
            clean_reports: 0,
            after_copies: None,
        });
    }

    /// Records a round trip; whether the path is queueing.
    fn note_rtt(&mut self, now: Instant, rtt: Duration) -> bool {
        while self
            .rtts
            .front()
            .is_some_and(|&(at, _)| at + FLOOR_WINDOW < now)
        {
            self.rtts.pop_front();
        }
        let smoothed = match self.smoothed_rtt {
            Some(old) => old.mul_f64(1.0 - RTT_SMOOTHING) + rtt.mul_f64(RTT_SMOOTHING),
            None => rtt,
        };
        self.smoothed_rtt = Some(smoothed);
        self.rtts.push_back((now, smoothed));
        let floor = self.rtts.iter().map(|&(_, r)| r).min().unwrap_or(smoothed);
        smoothed > floor + QUEUE_MARGIN.max(floor / 2)
    }

    fn on_congestion(&mut self, now: Instant, report: LinkReport) {
        if self.probe.is_some() {
            return self.probe_failed(now, report.rtt);
        }
        // A queue just after a probe passed: a report from before its copies reached the
        // link passed it. Back to the estimate before it.
        if let Some((_, before)) = self.probed.take().filter(|&(at, _)| now < at + DRAIN) {
            self.estimate_bps = before;
            return self.probe_failed(now, report.rtt);
        }
        self.next_probe_at = Some(now + self.probe_backoff);
        let mut second_look = false;
        if let Some(last) = self.last_decrease {
            let growing = now >= last.at + DRAIN && report.rtt > last.rtt + QUEUE_GROWTH;
            second_look = last
                .loss
                .is_some_and(|loss| report.loss > loss + OVERFLOW_RISE);
            if !growing && !second_look && now < last.at + MAX_DRAIN {
                return;
            }
        }
        if report.send_bps <= 0.0 {
            // No rate measured yet: nothing to scale down from.
            return;
        }
        let sent = self
            .estimate_bps
            .map_or(report.send_bps, |e| report.send_bps.min(e as f64));
        // The loss of one report interval is noisy (a keyframe into a full buffer loses
        // 90% for a moment), so one decrease takes at most half.
        let arrived = (report.send_bps * (1.0 - report.loss.clamp(0.0, 1.0))).max(sent * MAX_CUT);
        let mut lowered = (arrived * DECREASE) as u64;
        if let Some(estimate) = self.estimate_bps {
            lowered = lowered.min(estimate);
            if second_look {
                // The report's media rate still mixes in the layer before the last
                // decrease, while its loss is the overflow's: read alone, it paused a video
                // the link could carry at its lowest layer.
                lowered = lowered.max((estimate as f64 * MAX_CUT) as u64);
            }
        }
        self.estimate_bps = Some(lowered.max(MIN_ESTIMATE_BPS));
        self.last_decrease = Some(Decrease {
            at: now,
            rtt: report.rtt,
            loss: Some(report.loss),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocate::{allocate, VideoDemand};

    const SECOND: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    /// A 1 Mbps stream that ran into a 300 kbps cap a second after `start`.
    fn capped(start: Instant) -> DownlinkEstimate {
        let mut d = DownlinkEstimate::default();
        d.on_report(start, report(0.0, 1, 1_000_000.0));
        d.on_report(start + SECOND, report(0.7, 150, 1_000_000.0));
        d
    }

    /// A 300 kbps stream whose link queued (and lost 80%) a second after `start`.
    fn queued_at_300k(start: Instant) -> DownlinkEstimate {
        let mut d = DownlinkEstimate::default();
        d.on_report(start, report(0.0, 1, 300_000.0));
        d.on_report(start + SECOND, report(0.8, 200, 300_000.0));
        d
    }

    /// [`capped`], then a probe for 435 kbps while sending 170, once the backoff allows:
    /// the estimate before the probe, and when it started.
    fn probing_after_the_cap(start: Instant) -> (DownlinkEstimate, Option<u64>, Instant) {
        let mut d = capped(start);
        let before = d.estimate_bps();
        let now = start + SECOND + PROBE_BACKOFF;
        d.want(now, want(Some(435_000), 170_000, false));
        (d, before, now)
    }

    /// A wish for one step up, nothing beyond it.
    fn want(next_step_bps: Option<u64>, sending_bps: u64, trial: bool) -> Want {
        Want {
            next_step_bps,
            all_bps: next_step_bps.unwrap_or(0),
            sending_bps,
            trial,
        }
    }

    fn report(loss: f64, rtt_ms: u64, send_bps: f64) -> LinkReport {
        LinkReport {
            loss,
            rtt: Duration::from_millis(rtt_ms),
            send_bps,
            received_through: None,
        }
    }

    /// A link of `capacity` bits per second with a 150 ms buffer and a `base_ms` round
    /// trip, fed what `sending` sends (probe copies included), one report a second.
    struct Link {
        capacity: f64,
        base_ms: u64,
        queue_ms: f64,
    }

    impl Link {
        fn report(&mut self, sending: f64) -> LinkReport {
            let excess = (sending - self.capacity) / self.capacity;
            self.queue_ms = (self.queue_ms + excess * 1000.0).clamp(0.0, 150.0);
            let loss = if self.queue_ms >= 150.0 && sending > self.capacity {
                1.0 - self.capacity / sending
            } else {
                0.0
            };
            report(loss, self.base_ms + self.queue_ms as u64, sending)
        }
    }

    #[test]
    fn random_loss_without_a_queue_sets_no_limit() {
        let mut d = DownlinkEstimate::default();
        let start = Instant::now();
        for i in 0..60 {
            // 20-30% loss, a flat round trip with some jitter.
            d.on_report(
                start + i * SECOND,
                report(0.2 + (i % 3) as f64 * 0.05, 1 + (i % 2) as u64, 800_000.0),
            );
        }
        assert_eq!(d.estimate_bps(), None);
    }

    #[test]
    fn jitter_of_twenty_ms_each_way_is_not_a_queue() {
        let mut d = DownlinkEstimate::default();
        let start = Instant::now();
        // The lab's 4g-congested path: 30 ms ± 20 ms each way, uniformly.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut each_way = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            10 + seed % 41
        };
        for i in 0..2000u32 {
            let rtt = each_way() + each_way();
            d.on_report(start + i * SECOND, report(0.05, rtt, 800_000.0));
        }
        assert_eq!(d.estimate_bps(), None);
    }

    #[test]
    fn a_cap_is_found_within_seconds_of_its_first_queue() {
        let mut d = DownlinkEstimate::default();
        let mut link = Link {
            capacity: 3_000_000.0,
            base_ms: 1,
            queue_ms: 0.0,
        };
        let start = Instant::now();
        for i in 0..5 {
            d.on_report(start + i * SECOND, link.report(1_000_000.0));
        }
        assert_eq!(d.estimate_bps(), None);
        // A 300 kbps cap: most of a 1 Mbps stream is dropped, the rest waits.
        link.capacity = 300_000.0;
        d.on_report(start + 5 * SECOND, link.report(1_000_000.0));
        let first = d.estimate_bps().expect("a limit at the first queue");
        assert!(
            (400_000..=500_000).contains(&first),
            "at most halved: {first}"
        );
        // Had the layer not switched, the buffer stays full: the next decrease, once
        // that queue has had time to drain, finds the cap.
        d.on_report(start + 7 * SECOND, link.report(1_000_000.0));
        assert_eq!(d.estimate_bps(), Some(first));
        d.on_report(start + 9 * SECOND, link.report(1_000_000.0));
        let estimate = d.estimate_bps().unwrap();
        assert!((200_000..=300_000).contains(&estimate), "{estimate}");
    }

    #[test]
    fn one_queue_is_not_counted_twice() {
        let start = Instant::now();
        let mut d = capped(start);
        let first = d.estimate_bps().unwrap();
        // The queue is still there: the layer has not switched yet, then retransmissions
        // of what it dropped keep it full while it drains.
        d.on_report(start + 2 * SECOND, report(0.7, 150, 1_000_000.0));
        d.on_report(start + 3 * SECOND, report(0.4, 140, 250_000.0));
        d.on_report(start + 4 * SECOND, report(0.2, 150, 250_000.0));
        assert_eq!(d.estimate_bps(), Some(first));
        // A queue still there after the longest drain is a new one.
        d.on_report(start + 5 * SECOND, report(0.2, 150, 250_000.0));
        assert!(d.estimate_bps().unwrap() < first);
    }

    #[test]
    fn a_decrease_read_from_the_start_of_an_overflow_is_followed_by_another() {
        let start = Instant::now();
        let mut d = DownlinkEstimate::default();
        d.on_report(start, report(0.0, 1, 850_000.0));
        // The cap began late in the second this report covers.
        d.on_report(start + SECOND, report(0.15, 240, 850_000.0));
        let first = d.estimate_bps().unwrap();
        assert!(first > 600_000, "{first}");
        d.on_report(start + 2 * SECOND, report(0.85, 210, 400_000.0));
        let second = d.estimate_bps().unwrap();
        assert_eq!(second, first / 2, "lower, but by half at most");
    }

    #[test]
    fn a_growing_queue_is_a_new_one() {
        let mut d = DownlinkEstimate::default();
        let start = Instant::now();
        d.on_report(start, report(0.0, 1, 1_000_000.0));
        d.on_report(start + SECOND, report(0.1, 150, 1_000_000.0));
        let first = d.estimate_bps().unwrap();
        d.on_report(start + 3 * SECOND, report(0.1, 230, 500_000.0));
        assert!(d.estimate_bps().unwrap() < first);
    }

    #[test]
    fn never_below_what_audio_needs() {
        let mut d = DownlinkEstimate::default();
        let start = Instant::now();
        d.on_report(start, report(0.0, 1, 100_000.0));
        d.on_report(start + 2 * SECOND, report(0.9, 300, 60_000.0));
        assert_eq!(d.estimate_bps(), Some(MIN_ESTIMATE_BPS));
    }

    #[test]
    fn no_probe_without_a_limit_or_a_wish() {
        let mut d = DownlinkEstimate::default();
        let now = Instant::now();
        d.want(now, want(Some(1_000_000), 200_000, false));
        assert!(!d.probing(), "no limit known: nothing to probe");
        d.on_report(now, report(0.0, 1, 1_000_000.0));
        d.on_report(now + SECOND, report(0.7, 150, 1_000_000.0));
        d.want(now + 10 * SECOND, want(None, 200_000, false));
        assert!(!d.probing(), "nothing more wanted");
    }

    #[test]
    fn a_probe_that_builds_no_queue_raises_the_estimate_to_its_target() {
        let start = Instant::now();
        let mut d = capped(start);
        let low = d.estimate_bps().unwrap();
        // The link recovered; the allocator wants 435 kbps for its next step, sends 170.
        let mut now = start + SECOND;
        d.want(now + SECOND, want(Some(435_000), 170_000, false));
        assert!(!d.probing(), "not straight after a congestion");
        now += PROBE_BACKOFF;
        d.want(now, want(Some(435_000), 170_000, false));
        assert_eq!(
            d.probe_copies(now),
            3,
            "170 kbps three times over covers 435"
        );
        assert_eq!(d.probe_copies(now + PROBE_SEND), 1, "copies only briefly");
        d.on_report(now + 300 * MS, report(0.0, 2, 170_000.0));
        assert!(d.probing(), "a report from before the copies tells nothing");
        now += SECOND;
        d.on_report(now, report(0.0, 2, 170_000.0));
        assert!(!d.probing());
        assert_eq!(d.estimate_bps(), Some(435_000.max(low)));
    }

    #[test]
    fn only_a_report_that_received_the_packets_after_the_copies_judges_a_probe() {
        let start = Instant::now();
        let (mut d, low, mut now) = probing_after_the_cap(start);
        let mid = Mid::from("1");
        d.on_video_sent(now + 100 * MS, mid, 500);
        d.on_video_sent(now + PROBE_SEND, mid, 520);
        d.on_video_sent(now + PROBE_SEND + 40 * MS, mid, 521);
        now += SECOND;
        let before_the_end = LinkReport {
            received_through: Some((mid, 519)),
            ..report(0.0, 2, 170_000.0)
        };
        d.on_report(now, before_the_end);
        assert!(d.probing(), "the report was written during the copies");
        let another_stream = LinkReport {
            received_through: Some((Mid::from("2"), 900)),
            ..report(0.0, 2, 170_000.0)
        };
        d.on_report(now + 10 * MS, another_stream);
        assert!(
            d.probing(),
            "the mark is on the first packet after the copies"
        );
        now += SECOND;
        let after_the_end = LinkReport {
            received_through: Some((mid, 520)),
            ..report(0.0, 2, 170_000.0)
        };
        d.on_report(now, after_the_end);
        assert!(!d.probing() && !d.last_probe_failed());
        assert_eq!(d.estimate_bps(), Some(435_000.max(low.unwrap())));
    }

    #[test]
    fn a_probe_whose_stream_stops_reporting_is_judged_by_any_report_in_the_end() {
        let start = Instant::now();
        let (mut d, _, now) = probing_after_the_cap(start);
        d.on_video_sent(now + PROBE_SEND, Mid::from("1"), 520);
        d.on_report(now + 2 * SECOND, report(0.0, 2, 170_000.0));
        assert!(d.probing());
        d.on_report(now + PROBE_VERDICT_LIMIT, report(0.0, 2, 170_000.0));
        assert!(!d.probing());
    }

    #[test]
    fn a_probe_that_loses_more_fails() {
        let mut d = DownlinkEstimate::default();
        let start = Instant::now();
        d.on_report(start, report(0.01, 1, 1_000_000.0));
        d.on_report(start + SECOND, report(0.7, 150, 1_000_000.0));
        let before = d.estimate_bps();
        let now = start + SECOND + PROBE_BACKOFF;
        d.want(now, want(Some(435_000), 170_000, false));
        // A short buffer: no queue to speak of, but the copies' overflow was dropped.
        d.on_report(now + SECOND, report(0.08, 2, 170_000.0));
        assert!(!d.probing());
        assert_eq!(d.estimate_bps(), before);
    }

    #[test]
    fn a_probe_into_a_queue_stops_and_the_next_waits_longer() {
        let start = Instant::now();
        let (mut d, before, mut now) = probing_after_the_cap(start);
        assert!(d.probing());
        now += SECOND;
        d.on_report(now, report(0.3, 120, 170_000.0));
        assert!(!d.probing(), "a queue ends the probe");
        assert_eq!(d.estimate_bps(), before, "the queue was the probe's");
        d.on_report(now + SECOND, report(0.1, 110, 170_000.0));
        assert_eq!(d.estimate_bps(), before, "and it drains");
        d.want(now + PROBE_BACKOFF, want(Some(435_000), 170_000, false));
        assert!(!d.probing(), "the wait doubled");
        // The drain report still showed the queue: the wait counts from it.
        d.want(
            now + SECOND + MAX_PROBE_BACKOFF,
            want(Some(435_000), 170_000, false),
        );
        assert!(d.probing());
    }

    #[test]
    fn a_queue_just_after_a_probe_passed_takes_its_gain_back() {
        let start = Instant::now();
        let mut d = capped(start);
        let before = d.estimate_bps();
        let mut now = start + SECOND + PROBE_BACKOFF;
        d.want(now, want(Some(900_000), 300_000, false));
        for _ in 0..2 {
            now += SECOND;
            d.on_report(now, report(0.0, 1, 300_000.0));
        }
        assert_eq!(d.estimate_bps(), Some(900_000), "passed");
        // Another stream's report, at the same moment, shows the probe's queue.
        d.on_report(now, report(0.6, 250, 300_000.0));
        assert_eq!(d.estimate_bps(), before);
        d.want(now + PROBE_BACKOFF, want(Some(900_000), 300_000, false));
        assert!(!d.probing(), "the next probe waits longer");
    }

    #[test]
    fn a_paused_video_is_resumed_on_trial() {
        let start = Instant::now();
        let mut d = queued_at_300k(start);
        let paused = d.estimate_bps();
        let mut now = start + SECOND + PROBE_BACKOFF;
        d.want(now, want(Some(300_000), 80_000, true));
        assert_eq!(d.probe_copies(now), 1, "no copies: the video is the probe");
        assert_eq!(
            d.estimate_bps(),
            Some(300_000),
            "the allocator sees the rate on trial"
        );
        now += SECOND;
        d.on_report(now, report(0.4, 200, 230_000.0));
        assert_eq!(d.estimate_bps(), paused, "a queue ends the trial");
    }

    #[test]
    fn a_trial_is_judged_on_its_own_round_trips_not_the_paused_audio_s() {
        let start = Instant::now();
        let mut d = queued_at_300k(start);
        // While paused, audio's reports still show the queue of an old sender report.
        d.on_report(start + 2 * SECOND, report(0.0, 200, 80_000.0));
        let mut now = start + 2 * SECOND + MAX_PROBE_BACKOFF;
        d.want(now, want(Some(300_000), 80_000, true));
        for _ in 0..TRIAL_REPORTS {
            now += SECOND;
            d.on_report(now, report(0.0, 1, 300_000.0));
        }
        assert!(!d.probing() && !d.last_probe_failed(), "the trial passed");
        assert_eq!(d.estimate_bps(), Some(300_000));
    }

    #[test]
    fn growth_is_bounded_by_what_is_sent() {
        let mut d = DownlinkEstimate::default();
        let start = Instant::now();
        d.on_report(start, report(0.0, 1, 200_000.0));
        d.on_report(start + SECOND, report(0.5, 150, 200_000.0));
        assert_eq!(d.estimate_bps(), Some(85_000));
        for i in 2..60 {
            d.on_report(start + i * SECOND, report(0.0, 1, 200_000.0));
        }
        assert_eq!(d.estimate_bps(), Some(300_000));
    }

    /// The lab's wifi-flap, in the model: 3 Mbps, 250 kbps for 10 s, 3 Mbps again, with
    /// three layers of 100, 300 and 800 kbps and one audio track, shared by the allocator.
    #[test]
    fn a_flap_is_followed_down_and_back_up() {
        let mut video = VideoDemand {
            layer_bps: vec![100_000, 300_000, 800_000],
            ceiling: Some(2),
            priority: 0,
            current: None,
        };
        let mut link = Link {
            capacity: 3_000_000.0,
            base_ms: 2,
            queue_ms: 0.0,
        };
        let mut d = DownlinkEstimate::default();
        let start = Instant::now();
        let mut sending = 870_000;
        let mut top_again = None;
        for second in 0..40u32 {
            let now = start + second * SECOND;
            link.capacity = if (5..15).contains(&second) {
                250_000.0
            } else {
                3_000_000.0
            };
            // The copies cover part of the second before the report.
            let copies = d.probe_copies(now.checked_sub(500 * MS).unwrap_or(now));
            d.on_report(now, link.report((sending * copies as u64) as f64));
            let layer = match d.estimate_bps() {
                Some(estimate) => {
                    let allocation = allocate(estimate, 1, std::slice::from_ref(&video));
                    d.want(now, Want::of(&allocation, allocation.layers[0].is_none()));
                    sending = allocation.allocated_bps;
                    video.current = Some(allocation.layers[0]);
                    allocation.layers[0]
                }
                None => Some(2),
            };
            if second == 7 {
                assert_eq!(
                    layer,
                    Some(0),
                    "down to the lowest layer within 2 s of the cap"
                );
            }
            if second >= 15 && layer == Some(2) && top_again.is_none() {
                top_again = Some(second - 15);
            }
        }
        let took = top_again.expect("back to the top layer");
        assert!(took <= 10, "back on top {took} s after the cap lifted");
    }
}
