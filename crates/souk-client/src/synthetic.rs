//! Synthetic media: VP8 and Opus payloads that look right to an SFU without an encoder.
//!
//! A VP8 frame here has a real frame tag (key or inter), and for key frames the start code
//! and dimensions, so keyframe detection, layer switching and packetisation behave as
//! with a camera; the rest is filler a decoder would reject. Every payload carries its
//! send time (microseconds since the Unix epoch) at [`TIMESTAMP_OFFSET`], so a receiver
//! can measure how long the trip took.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where the send timestamp sits in every synthetic payload.
pub const TIMESTAMP_OFFSET: usize = 10;
/// A key frame every this many frames (2 s at 30 fps).
pub const KEYFRAME_EVERY: u64 = 60;

pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One VP8 frame of `size` bytes (at least 18), numbered `n`.
pub fn vp8_frame(n: u64, size: usize, width: u16, height: u16, keyframe: bool) -> Vec<u8> {
    let size = size.max(TIMESTAMP_OFFSET + 8);
    let mut frame = vec![0u8; size];
    // Frame tag (RFC 6386 9.1): bit 0 is 0 for key frames; show_frame set; version 0.
    let first_partition = ((size - 10) as u32) << 5;
    let tag = first_partition | 0x10 | u32::from(!keyframe);
    frame[..3].copy_from_slice(&tag.to_le_bytes()[..3]);
    if keyframe {
        frame[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        frame[6..8].copy_from_slice(&width.to_le_bytes());
        frame[8..10].copy_from_slice(&height.to_le_bytes());
    }
    stamp(&mut frame);
    for (i, b) in frame[TIMESTAMP_OFFSET + 8..].iter_mut().enumerate() {
        *b = (n as u8).wrapping_add(i as u8);
    }
    frame
}

/// One 20 ms Opus packet (CELT, full band, one frame).
pub fn opus_packet(size: usize) -> Vec<u8> {
    let mut packet = vec![0u8; size.max(TIMESTAMP_OFFSET + 8)];
    packet[0] = 0xfc; // TOC: config 31 (CELT FB 20 ms), mono, one frame
    stamp(&mut packet);
    packet
}

fn stamp(payload: &mut [u8]) {
    payload[TIMESTAMP_OFFSET..TIMESTAMP_OFFSET + 8].copy_from_slice(&unix_micros().to_be_bytes());
}

/// The send time carried by a synthetic payload, if it is long enough to hold one.
pub fn sent_at_micros(payload: &[u8]) -> Option<u64> {
    let bytes = payload.get(TIMESTAMP_OFFSET..TIMESTAMP_OFFSET + 8)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_bit_and_timestamp() {
        let key = vp8_frame(0, 1000, 640, 360, true);
        assert_eq!(key.len(), 1000);
        assert_eq!(key[0] & 1, 0);
        assert_eq!(&key[3..6], &[0x9d, 0x01, 0x2a]);
        let delta = vp8_frame(1, 500, 640, 360, false);
        assert_eq!(delta[0] & 1, 1);
        let t = sent_at_micros(&delta).unwrap();
        assert!(t.abs_diff(unix_micros()) < 5_000_000);
        assert_eq!(opus_packet(60)[0], 0xfc);
    }
}
