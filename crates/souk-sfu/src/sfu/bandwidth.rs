//! Fitting each subscriber's videos into its bandwidth estimate, every tick, and asking
//! the estimator to probe for the next step up.

use std::time::Instant;

use souk_proto::signal::{ServerMessage, StreamState};
use str0m::bwe::Bitrate;
use tracing::debug;

use super::Sfu;
use crate::allocate::{allocate, VideoDemand};
use crate::config::BandwidthEstimation;
use crate::downlink::Want;
use crate::layer::choose_layer;
use crate::participant::DowntrackState;
use crate::track::PublishedTrack;
use crate::ParticipantId;

/// Priority of the active speaker's video over the others.
const SPEAKER_PRIORITY: u32 = 10;

/// A layer's bitrate: as measured, or before any packet a guess from its size
/// (about 1.5 bits per pixel per second, what browsers send at 30 fps).
fn layer_rates(track: &PublishedTrack) -> Vec<u64> {
    track
        .layer_sizes()
        .iter()
        .zip(&track.layer_bps)
        .map(|(&(w, h), &bps)| {
            if bps > 0 {
                bps
            } else {
                (w as u64 * h as u64 * 3 / 2).max(100_000)
            }
        })
        .collect()
}

impl Sfu {
    /// Re-divides `id`'s estimate among its videos, pauses what does not fit (telling the
    /// client), and asks the estimator to probe for what would fit more.
    pub(super) fn allocate_bandwidth(&mut self, now: Instant, id: ParticipantId) {
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        let estimate = match self.config.bandwidth {
            // A trial's rate counts at once, not from the next receiver report.
            BandwidthEstimation::Reports => p.downlink.estimate_bps(),
            _ => p.estimate_bps,
        };
        let Some(estimate) = estimate else {
            return;
        };
        let speaker = self
            .rooms
            .get(&p.room)
            .and_then(|r| r.last_speakers.first().copied());
        let mut videos = Vec::new();
        let mut demands = Vec::new();
        let mut audio_tracks = 0;
        for dt in p
            .downtracks
            .iter()
            .filter(|d| matches!(d.state, DowntrackState::Open(_)))
        {
            let Some(&owner) = self.track_owner.get(&dt.track) else {
                continue;
            };
            let Some(track) = self
                .participants
                .get(&owner)
                .and_then(|o| o.track(dt.track))
            else {
                continue;
            };
            if !track.is_video() {
                audio_tracks += 1;
                continue;
            }
            let ceiling = choose_layer(&track.layer_sizes(), &track.active, &dt.wanted);
            let priority = if speaker == Some(owner) {
                SPEAKER_PRIORITY
            } else {
                0
            };
            videos.push((dt.track, dt.track_id.clone(), ceiling.is_some()));
            // Before its first allocation a video that already flows counts as flowing,
            // so a first estimate just short of its layer does not pause it.
            let flowing = dt.forwarder.current().and_then(|l| track.layer_index(l));
            demands.push(VideoDemand {
                layer_bps: layer_rates(track),
                ceiling,
                priority,
                current: dt.bandwidth_cap.or(flowing.map(Some)),
            });
        }
        if videos.is_empty() {
            return;
        }
        // Every copy of a video packet spends the estimate as the packet itself does.
        let copies = p.redundancy.copies() as u64;
        let allocation = allocate(estimate / copies, audio_tracks, &demands);
        let sub = self.participants.get_mut(&id).expect("looked up above");
        let mut notices = Vec::new();
        for ((key, track_id, shown), cap) in videos.iter().zip(&allocation.layers) {
            let Some(dt) = sub.downtrack_mut(*key) else {
                continue;
            };
            let was_paused = dt.bandwidth_cap == Some(None);
            dt.bandwidth_cap = Some(*cap);
            let paused = cap.is_none() && *shown;
            if paused != was_paused {
                notices.push(StreamState {
                    track_id: track_id.clone(),
                    paused,
                });
            }
        }
        match self.config.bandwidth {
            BandwidthEstimation::Twcc => {
                if let Some(peer) = sub.subscriber.as_mut() {
                    // Pad up to what the next step needs, so the estimate can grow to it.
                    peer.rtc.bwe().set_bitrate(
                        Bitrate::bps(allocation.next_step_bps),
                        Bitrate::bps(allocation.wanted_bps.max(allocation.next_step_bps)),
                    );
                }
            }
            BandwidthEstimation::Reports => {
                let was_probing = sub.downlink.probing();
                let resuming = !sub.receives_video();
                sub.downlink.want(now, Want::of(&allocation, resuming));
                if sub.downlink.probing() && !was_probing {
                    debug!(subscriber = ?id, copies = sub.downlink.probe_copies(now), target_bps = ?allocation.estimate_for_next_step(), "probing the downlink");
                }
            }
            BandwidthEstimation::Off => {}
        }
        for (key, ..) in &videos {
            self.select_layer(id, *key);
        }
        for notice in notices {
            self.signal(id, ServerMessage::StreamState(notice));
        }
    }
}
