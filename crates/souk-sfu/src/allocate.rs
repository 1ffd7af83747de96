//! Sharing one subscriber's downlink estimate among the videos it receives.
//!
//! The estimate comes from str0m's send-side bandwidth estimation (TWCC). Audio is cheap
//! and matters most, so its share is set aside first. Then, in priority order (active
//! speaker first), every video gets its lowest layer if that fits, or is paused; what is
//! left raises videos one layer at a time, never above the layer that fits how the video
//! is shown.

/// What the allocator needs to know about one subscribed video.
#[derive(Debug, Clone)]
pub struct VideoDemand {
    /// Measured bitrate of each layer, smallest first (bits per second).
    pub layer_bps: Vec<u64>,
    /// The highest layer worth sending (from the rendered size), or `None` if paused by
    /// the subscriber itself.
    pub ceiling: Option<usize>,
    /// Higher goes first.
    pub priority: u32,
    /// What it gets now: `None` when new, `Some(None)` when paused for bandwidth,
    /// `Some(Some(layer))` when flowing. Moving up needs headroom that staying put does
    /// not: a flowing video keeps its lowest layer until the budget falls below half its
    /// cost and a higher one until below [`KEEP_SHARE`] of it, and a layer above the
    /// current one needs [`RAISE_HEADROOM`] more than its cost.
    /// Without that gap an estimate hovering near a layer's cost would flap it.
    pub current: Option<Option<usize>>,
}

/// Extra share of a layer's cost needed before moving up to it.
pub const RAISE_HEADROOM: f64 = 0.25;
/// Share of a layer's cost that keeps a video on it: a layer's rate wanders by more
/// than a few percent, and each move down and up again costs two keyframes.
const KEEP_SHARE: f64 = 0.85;

/// Headroom kept below the estimate, so a small misjudgement does not cause loss.
pub const USABLE_SHARE: f64 = 0.85;
/// Set aside per audio track, with RED (bits per second).
pub const AUDIO_BPS: u64 = 70_000;

/// What the subscriber gets and what to probe for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The layer each video gets (`None`: paused for lack of bandwidth), in input order.
    pub layers: Vec<Option<usize>>,
    /// Bits per second the allocation sends.
    pub allocated_bps: u64,
    /// Bits per second that would allow the next step up (the allocated rate when there is
    /// none): the rate to keep the link busy at, with padding, so the estimate can grow.
    pub next_step_bps: u64,
    /// Bits per second for every video at its ceiling.
    pub wanted_bps: u64,
}

impl Allocation {
    /// The estimate that would allow the next step up (`None`: nothing more is wanted).
    pub fn estimate_for_next_step(&self) -> Option<u64> {
        (self.next_step_bps > self.allocated_bps).then(|| estimate_for(self.next_step_bps))
    }

    /// The estimate that would allow every video its ceiling.
    pub fn estimate_for_all(&self) -> u64 {
        estimate_for(self.wanted_bps)
    }
}

/// The estimate whose usable share covers `bps`, rounded up so that the budget taken
/// from it does.
fn estimate_for(bps: u64) -> u64 {
    (bps as f64 / USABLE_SHARE).ceil() as u64 + 1
}

/// Shares `estimate_bps` as described in the module documentation.
pub fn allocate(estimate_bps: u64, audio_tracks: usize, videos: &[VideoDemand]) -> Allocation {
    let mut budget =
        (estimate_bps as f64 * USABLE_SHARE) as i64 - (audio_tracks as u64 * AUDIO_BPS) as i64;
    let mut order: Vec<usize> = (0..videos.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(videos[i].priority));
    let mut chosen: Vec<Option<usize>> = vec![None; videos.len()];

    for &i in &order {
        let v = &videos[i];
        if v.ceiling.is_none() || v.layer_bps.is_empty() {
            continue;
        }
        let cost = v.layer_bps[0] as i64;
        let flowing = matches!(v.current, Some(Some(_)));
        let needed = if flowing { cost / 2 } else { cost };
        if needed <= budget {
            budget -= cost;
            chosen[i] = Some(0);
        }
    }
    // Raise one layer at a time, round-robin in priority order, while the budget allows.
    loop {
        let mut raised = false;
        for &i in &order {
            let v = &videos[i];
            let (Some(current), Some(ceiling)) = (chosen[i], v.ceiling) else {
                continue;
            };
            if current >= ceiling.min(v.layer_bps.len() - 1) {
                continue;
            }
            let extra = v.layer_bps[current + 1] as i64 - v.layer_bps[current] as i64;
            let already_there = matches!(v.current, Some(Some(l)) if l > current);
            let needed = if already_there {
                (extra as f64 * KEEP_SHARE) as i64
            } else {
                (extra as f64 * (1.0 + RAISE_HEADROOM)) as i64
            };
            if needed <= budget {
                budget -= extra;
                chosen[i] = Some(current + 1);
                raised = true;
            }
        }
        if !raised {
            break;
        }
    }
    let audio_bps = audio_tracks as u64 * AUDIO_BPS;
    let top_of = |v: &VideoDemand| Some(v.ceiling?.min(v.layer_bps.len().checked_sub(1)?));
    let allocated_bps = audio_bps
        + chosen
            .iter()
            .zip(videos)
            .filter_map(|(c, v)| c.map(|i| v.layer_bps[i]))
            .sum::<u64>();
    // The cheapest next step: a paused video's lowest layer, or one layer up, each with
    // the headroom of a raise. (Without it, a video resumed on trial at an estimate that
    // just covers its layer stayed paused while the layer's rate wobbled above.)
    let next_step = order
        .iter()
        .filter_map(|&i| {
            let v = &videos[i];
            let top = top_of(v)?;
            match chosen[i] {
                None => Some((v.layer_bps[0] as f64 * (1.0 + RAISE_HEADROOM)) as u64),
                Some(c) if c < top => Some(
                    ((v.layer_bps[c + 1] - v.layer_bps[c]) as f64 * (1.0 + RAISE_HEADROOM)) as u64,
                ),
                Some(_) => None,
            }
        })
        .min()
        .unwrap_or(0);
    let wanted_bps = audio_bps
        + videos
            .iter()
            .filter_map(|v| top_of(v).map(|t| v.layer_bps[t]))
            .sum::<u64>();
    Allocation {
        layers: chosen,
        allocated_bps,
        next_step_bps: allocated_bps + next_step,
        wanted_bps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(ceiling: Option<usize>, priority: u32) -> VideoDemand {
        VideoDemand {
            layer_bps: vec![150_000, 500_000, 1_500_000],
            ceiling,
            priority,
            current: Some(Some(2)),
        }
    }

    #[test]
    fn a_trial_at_the_next_step_resumes_a_video_whose_rate_wobbles_up() {
        let mut paused = video(Some(2), 0);
        paused.current = Some(None);
        let a = allocate(100_000, 1, std::slice::from_ref(&paused));
        assert_eq!(a.layers, vec![None]);
        let trial = a.estimate_for_next_step().expect("a step to ask for");
        paused.layer_bps[0] = 165_000;
        assert_eq!(allocate(trial, 1, &[paused]).layers, vec![Some(0)]);
    }

    #[test]
    fn plenty_of_bandwidth_gives_every_video_its_ceiling() {
        let Allocation {
            layers,
            wanted_bps: wanted,
            ..
        } = allocate(10_000_000, 1, &[video(Some(2), 0), video(Some(1), 0)]);
        assert_eq!(layers, vec![Some(2), Some(1)]);
        assert_eq!(wanted, AUDIO_BPS + 1_500_000 + 500_000);
    }

    #[test]
    fn a_300k_link_gets_the_lowest_layer() {
        let Allocation { layers, .. } = allocate(300_000, 1, &[video(Some(2), 0)]);
        assert_eq!(layers, vec![Some(0)]);
    }

    #[test]
    fn below_the_lowest_layer_video_pauses_and_audio_stays() {
        let Allocation {
            layers,
            wanted_bps: wanted,
            ..
        } = allocate(150_000, 1, &[video(Some(2), 0)]);
        assert_eq!(layers, vec![None]);
        assert!(
            wanted > 200_000,
            "the wanted rate keeps the estimator probing for more"
        );
    }

    #[test]
    fn a_flowing_video_is_not_paused_by_a_dip_but_a_paused_one_waits_for_room() {
        let estimate = ((AUDIO_BPS + 100_000) as f64 / USABLE_SHARE) as u64;
        assert_eq!(
            allocate(estimate, 1, &[video(Some(2), 0)]).layers,
            vec![Some(0)]
        );
        let paused = VideoDemand {
            current: Some(None),
            ..video(Some(2), 0)
        };
        assert_eq!(allocate(estimate, 1, &[paused]).layers, vec![None]);
    }

    #[test]
    fn a_layer_is_kept_while_the_budget_covers_most_of_it() {
        // The top layer's rate grew 10% past what the estimate allows.
        let estimate = ((AUDIO_BPS + 1_500_000) as f64 / 1.1 / USABLE_SHARE) as u64;
        assert_eq!(
            allocate(estimate, 1, &[video(Some(2), 0)]).layers,
            vec![Some(2)]
        );
        let from_below = VideoDemand {
            current: Some(Some(1)),
            ..video(Some(2), 0)
        };
        assert_eq!(allocate(estimate, 1, &[from_below]).layers, vec![Some(1)]);
    }

    #[test]
    fn moving_up_needs_headroom_that_staying_does_not() {
        // Exactly enough for the top layer: kept if already there, not entered from below.
        let estimate = ((AUDIO_BPS + 1_500_000) as f64 / USABLE_SHARE) as u64 + 1;
        assert_eq!(
            allocate(estimate, 1, &[video(Some(2), 0)]).layers,
            vec![Some(2)]
        );
        let from_middle = VideoDemand {
            current: Some(Some(1)),
            ..video(Some(2), 0)
        };
        assert_eq!(
            allocate(estimate, 1, std::slice::from_ref(&from_middle)).layers,
            vec![Some(1)]
        );
        let roomy = ((AUDIO_BPS + 1_800_000) as f64 / USABLE_SHARE) as u64;
        assert_eq!(allocate(roomy, 1, &[from_middle]).layers, vec![Some(2)]);
    }

    #[test]
    fn the_next_step_is_what_one_more_layer_would_need() {
        let a = allocate(
            ((AUDIO_BPS + 500_000) as f64 / USABLE_SHARE) as u64 + 1,
            1,
            &[video(Some(2), 0)],
        );
        assert_eq!(a.layers, vec![Some(1)]);
        assert_eq!(a.allocated_bps, AUDIO_BPS + 500_000);
        assert_eq!(a.next_step_bps, a.allocated_bps + 1_250_000);
        let top = allocate(10_000_000, 1, &[video(Some(2), 0)]);
        assert_eq!(
            top.next_step_bps, top.allocated_bps,
            "nothing left to probe for"
        );
    }

    #[test]
    fn the_active_speaker_goes_first() {
        // Room for one lowest layer only: the speaker's.
        let estimate = ((AUDIO_BPS * 2 + 250_000) as f64 / USABLE_SHARE) as u64;
        let both_paused = [
            VideoDemand {
                current: Some(None),
                ..video(Some(2), 0)
            },
            VideoDemand {
                current: Some(None),
                ..video(Some(2), 10)
            },
        ];
        let Allocation { layers, .. } = allocate(estimate, 2, &both_paused);
        assert_eq!(layers, vec![None, Some(0)]);
    }

    #[test]
    fn a_video_the_subscriber_paused_costs_nothing() {
        let Allocation {
            layers,
            wanted_bps: wanted,
            ..
        } = allocate(1_000_000, 0, &[video(None, 0), video(Some(1), 0)]);
        assert_eq!(layers, vec![None, Some(1)]);
        assert_eq!(wanted, 500_000);
    }
}
