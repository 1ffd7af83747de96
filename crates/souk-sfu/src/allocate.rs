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
    /// Paused for bandwidth now. A flowing video keeps its lowest layer until the budget
    /// falls below half its cost; a paused one resumes only when it fits whole. Without
    /// this gap an estimate hovering near the lowest layer would flap it on and off.
    pub paused: bool,
}

/// Headroom kept below the estimate, so a small misjudgement does not cause loss.
pub const USABLE_SHARE: f64 = 0.85;
/// Set aside per audio track, with RED (bits per second).
pub const AUDIO_BPS: u64 = 70_000;

/// The layer each video gets (`None`: paused for lack of bandwidth), in input order, and
/// the bitrate the subscriber would need for every video at its ceiling.
pub fn allocate(
    estimate_bps: u64,
    audio_tracks: usize,
    videos: &[VideoDemand],
) -> (Vec<Option<usize>>, u64) {
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
        let needed = if v.paused { cost } else { cost / 2 };
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
            if extra <= budget {
                budget -= extra;
                chosen[i] = Some(current + 1);
                raised = true;
            }
        }
        if !raised {
            break;
        }
    }
    let wanted: u64 = audio_tracks as u64 * AUDIO_BPS
        + videos
            .iter()
            .filter_map(|v| {
                v.ceiling.map(|c| {
                    v.layer_bps
                        .get(c.min(v.layer_bps.len().saturating_sub(1)))
                        .copied()
                        .unwrap_or(0)
                })
            })
            .sum::<u64>();
    (chosen, wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(ceiling: Option<usize>, priority: u32) -> VideoDemand {
        VideoDemand {
            layer_bps: vec![150_000, 500_000, 1_500_000],
            ceiling,
            priority,
            paused: false,
        }
    }

    #[test]
    fn plenty_of_bandwidth_gives_every_video_its_ceiling() {
        let (layers, wanted) = allocate(10_000_000, 1, &[video(Some(2), 0), video(Some(1), 0)]);
        assert_eq!(layers, vec![Some(2), Some(1)]);
        assert_eq!(wanted, AUDIO_BPS + 1_500_000 + 500_000);
    }

    #[test]
    fn a_300k_link_gets_the_lowest_layer() {
        let (layers, _) = allocate(300_000, 1, &[video(Some(2), 0)]);
        assert_eq!(layers, vec![Some(0)]);
    }

    #[test]
    fn below_the_lowest_layer_video_pauses_and_audio_stays() {
        let (layers, wanted) = allocate(150_000, 1, &[video(Some(2), 0)]);
        assert_eq!(layers, vec![None]);
        assert!(
            wanted > 200_000,
            "the wanted rate keeps the estimator probing for more"
        );
    }

    #[test]
    fn a_flowing_video_is_not_paused_by_a_dip_but_a_paused_one_waits_for_room() {
        let estimate = ((AUDIO_BPS + 100_000) as f64 / USABLE_SHARE) as u64;
        assert_eq!(allocate(estimate, 1, &[video(Some(2), 0)]).0, vec![Some(0)]);
        let paused = VideoDemand {
            paused: true,
            ..video(Some(2), 0)
        };
        assert_eq!(allocate(estimate, 1, &[paused]).0, vec![None]);
    }

    #[test]
    fn the_active_speaker_goes_first() {
        // Room for one lowest layer only: the speaker's.
        let estimate = ((AUDIO_BPS * 2 + 250_000) as f64 / USABLE_SHARE) as u64;
        let both_paused = [
            VideoDemand {
                paused: true,
                ..video(Some(2), 0)
            },
            VideoDemand {
                paused: true,
                ..video(Some(2), 10)
            },
        ];
        let (layers, _) = allocate(estimate, 2, &both_paused);
        assert_eq!(layers, vec![None, Some(0)]);
    }

    #[test]
    fn a_video_the_subscriber_paused_costs_nothing() {
        let (layers, wanted) = allocate(1_000_000, 0, &[video(None, 0), video(Some(1), 0)]);
        assert_eq!(layers, vec![None, Some(1)]);
        assert_eq!(wanted, 500_000);
    }
}
