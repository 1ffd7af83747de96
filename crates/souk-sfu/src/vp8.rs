//! VP8 picture ids and TL0PICIDX kept continuous across simulcast layer switches.
//!
//! Each simulcast layer numbers its pictures (15 bits) and its base-layer pictures
//! (TL0PICIDX, 8 bits) from its own random start. A receiver works out which frames a
//! frame depends on from these numbers, and keeps what it learnt of the old layer's
//! numbers after a switch: when the new layer's numbers happen to fall among the old
//! layer's, it takes new frames for stale ones and drops them until it asks for a
//! keyframe, seconds later. So each subscriber's stream continues its own numbering:
//! at a switch (always at a keyframe) the new layer's numbers are offset to follow the
//! last ones sent, as the rewriter does for sequence numbers and timestamps.

const PICTURE_ID_MODULUS: u16 = 1 << 15;

/// The VP8 numbers of one packet's payload descriptor, where present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Ids {
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
}

#[derive(Debug, Default)]
pub struct PictureIds {
    /// Added to the current layer's numbers (modulo their ranges).
    offsets: (u16, u8),
    /// The newest numbers sent.
    last_out: Option<(u16, u8)>,
}

impl PictureIds {
    /// A new layer starts at this keyframe: its numbers continue right after the last
    /// ones sent (the first layer keeps its own).
    pub fn start(&mut self, first: Vp8Ids) {
        let Some((last_pic, last_tl0)) = self.last_out else {
            self.offsets = (0, 0);
            return;
        };
        let pic_offset = first.picture_id.map_or(0, |pic| {
            (last_pic + 1).wrapping_sub(pic) % PICTURE_ID_MODULUS
        });
        let tl0_offset = first
            .tl0_pic_idx
            .map_or(0, |tl0| last_tl0.wrapping_add(1).wrapping_sub(tl0));
        self.offsets = (pic_offset, tl0_offset);
    }

    /// The numbers to send for a packet of the current layer.
    pub fn map(&mut self, ids: Vp8Ids) -> Vp8Ids {
        let out = Vp8Ids {
            picture_id: ids
                .picture_id
                .map(|pic| pic.wrapping_add(self.offsets.0) % PICTURE_ID_MODULUS),
            tl0_pic_idx: ids.tl0_pic_idx.map(|tl0| tl0.wrapping_add(self.offsets.1)),
        };
        if let Some(pic) = out.picture_id {
            let newer = self.last_out.is_none_or(|(last, _)| {
                let ahead = pic.wrapping_sub(last) % PICTURE_ID_MODULUS;
                ahead != 0 && ahead < PICTURE_ID_MODULUS / 2
            });
            if newer {
                let tl0 = out
                    .tl0_pic_idx
                    .or(self.last_out.map(|(_, tl0)| tl0))
                    .unwrap_or(0);
                self.last_out = Some((pic, tl0));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(pic: u16, tl0: u8) -> Vp8Ids {
        Vp8Ids {
            picture_id: Some(pic),
            tl0_pic_idx: Some(tl0),
        }
    }

    #[test]
    fn the_first_layer_keeps_its_numbers() {
        let mut p = PictureIds::default();
        p.start(ids(5000, 17));
        assert_eq!(p.map(ids(5000, 17)), ids(5000, 17));
        assert_eq!(p.map(ids(5001, 17)), ids(5001, 17));
    }

    #[test]
    fn a_switch_continues_after_the_last_numbers_sent() {
        let mut p = PictureIds::default();
        p.start(ids(5000, 17));
        p.map(ids(5000, 17));
        p.map(ids(5001, 18));
        // The new layer's keyframe is numbered behind the old layer.
        p.start(ids(120, 3));
        assert_eq!(p.map(ids(120, 3)), ids(5002, 19));
        assert_eq!(p.map(ids(121, 3)), ids(5003, 19));
        assert_eq!(p.map(ids(122, 4)), ids(5004, 20));
    }

    #[test]
    fn numbers_wrap_in_their_own_ranges() {
        let mut p = PictureIds::default();
        p.start(ids(0x7ffe, 255));
        p.map(ids(0x7ffe, 255));
        p.start(ids(10, 10));
        assert_eq!(p.map(ids(10, 10)), ids(0x7fff, 0));
        assert_eq!(p.map(ids(11, 11)), ids(0, 1));
    }

    #[test]
    fn a_late_packet_does_not_pull_the_numbering_back() {
        let mut p = PictureIds::default();
        p.start(ids(100, 1));
        p.map(ids(100, 1));
        p.map(ids(102, 2));
        p.map(ids(101, 1));
        p.start(ids(900, 50));
        assert_eq!(p.map(ids(900, 50)), ids(103, 3));
    }

    #[test]
    fn a_descriptor_without_numbers_passes_through() {
        let mut p = PictureIds::default();
        p.start(Vp8Ids::default());
        assert_eq!(p.map(Vp8Ids::default()), Vp8Ids::default());
    }
}
