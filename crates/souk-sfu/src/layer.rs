//! Which simulcast layer a subscriber should get.
//!
//! The rule is the one users expect from adaptive stream: the smallest layer that covers
//! the size the video is shown at, unless the subscriber chose a quality by hand. A layer
//! the publisher stopped sending (CPU or bandwidth adaptation in the browser) is skipped
//! in favour of the nearest one still flowing, lower first.

use souk_proto::signal::Quality;

/// What a subscriber asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wanted {
    /// Rendered size in device pixels; 0 x 0 means "not told", which gets the best layer.
    pub width: u32,
    pub height: u32,
    pub quality: Option<Quality>,
    pub paused: bool,
}

/// Index into `sizes` (smallest layer first) of the layer to forward, or `None` to
/// forward nothing (paused, or no layers).
pub fn choose_layer(sizes: &[(u32, u32)], active: &[bool], wanted: &Wanted) -> Option<usize> {
    if wanted.paused || sizes.is_empty() {
        return None;
    }
    let top = sizes.len() - 1;
    let ideal = match wanted.quality {
        Some(Quality::Low) => 0,
        Some(Quality::Medium) => top.min(1),
        Some(Quality::High) => top,
        None if wanted.width == 0 && wanted.height == 0 => top,
        None => sizes
            .iter()
            .position(|&(w, h)| w >= wanted.width && h >= wanted.height)
            .unwrap_or(top),
    };
    let is_active = |i: usize| active.get(i).copied().unwrap_or(false);
    if is_active(ideal) {
        return Some(ideal);
    }
    let lower = (0..ideal).rev().find(|&i| is_active(i));
    let higher = (ideal + 1..sizes.len()).find(|&i| is_active(i));
    // With nothing flowing yet, aim at the ideal layer and wait for it.
    Some(lower.or(higher).unwrap_or(ideal))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [(u32, u32); 3] = [(320, 180), (640, 360), (1280, 720)];
    const ALL: [bool; 3] = [true, true, true];

    fn size(width: u32, height: u32) -> Wanted {
        Wanted {
            width,
            height,
            ..Wanted::default()
        }
    }

    #[test]
    fn smallest_covering_layer() {
        assert_eq!(choose_layer(&SIZES, &ALL, &size(300, 150)), Some(0));
        assert_eq!(choose_layer(&SIZES, &ALL, &size(321, 170)), Some(1));
        assert_eq!(choose_layer(&SIZES, &ALL, &size(1920, 1080)), Some(2));
        assert_eq!(choose_layer(&SIZES, &ALL, &Wanted::default()), Some(2));
    }

    #[test]
    fn manual_quality_overrides_size() {
        let mut w = size(1920, 1080);
        w.quality = Some(Quality::Low);
        assert_eq!(choose_layer(&SIZES, &ALL, &w), Some(0));
        w.quality = Some(Quality::Medium);
        assert_eq!(choose_layer(&SIZES, &ALL, &w), Some(1));
    }

    #[test]
    fn paused_gets_nothing() {
        let mut w = size(640, 360);
        w.paused = true;
        assert_eq!(choose_layer(&SIZES, &ALL, &w), None);
        assert_eq!(choose_layer(&[], &ALL, &size(1, 1)), None);
    }

    #[test]
    fn skips_layers_that_stopped_flowing() {
        let top_off = [true, true, false];
        assert_eq!(choose_layer(&SIZES, &top_off, &size(1280, 720)), Some(1));
        let only_top = [false, false, true];
        assert_eq!(choose_layer(&SIZES, &only_top, &size(100, 100)), Some(2));
        assert_eq!(choose_layer(&SIZES, &[false; 3], &size(100, 100)), Some(0));
    }
}
