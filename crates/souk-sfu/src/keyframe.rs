//! Finding the first packet of a keyframe in an RTP payload.
//!
//! A subscriber can only start decoding (or switch simulcast layer) at a keyframe, so the
//! forwarder must recognise one without decoding anything. Only the *first* packet of a
//! keyframe is recognisable, which is exactly the packet a switch must start at.

use souk_proto::payload::vp8_frame_start;

/// The video codecs the forwarder understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

/// True when `payload` starts a keyframe of `codec`.
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_starts_keyframe(payload),
        VideoCodec::H264 => h264_starts_keyframe(payload),
    }
}

/// RFC 7741: a payload descriptor, then (at the start of partition 0) the VP8 frame
/// header whose lowest bit is 0 for a key frame.
fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    vp8_frame_start(payload)
        .and_then(|frame| frame.first())
        .is_some_and(|header| header & 0x01 == 0)
}

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// RFC 6184: an IDR slice or an SPS, alone, aggregated (STAP-A) or at the start of a
/// fragmented unit (FU-A). Encoders send SPS/PPS right before each IDR.
fn h264_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        NAL_IDR | NAL_SPS => true,
        NAL_STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let Some(nal) = rest.get(2..2 + size) else {
                    return false;
                };
                if matches!(nal.first().map(|h| h & 0x1f), Some(NAL_IDR | NAL_SPS)) {
                    return true;
                }
                rest = &rest[2 + size..];
            }
            false
        }
        NAL_FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == NAL_IDR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_with_extended_descriptor() {
        // X=1 S=1 PID=0; I=1 L=1 T=1; 15-bit picture id; tl0picidx; tid; frame header P=0.
        let key = [
            0x90, 0xe0, 0x81, 0x23, 0x05, 0x20, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a,
        ];
        assert!(starts_keyframe(VideoCodec::Vp8, &key));
        let mut delta = key;
        delta[6] = 0x11; // P=1: inter frame
        assert!(!starts_keyframe(VideoCodec::Vp8, &delta));
    }

    #[test]
    fn vp8_continuation_packets_are_not_keyframe_starts() {
        // S=0: a later packet of a frame says nothing about the frame type.
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x80, 0x80, 0x05, 0x00]));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[]));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x90, 0x80]));
    }

    #[test]
    fn vp8_minimal_descriptor() {
        assert!(starts_keyframe(VideoCodec::Vp8, &[0x10, 0x00]));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x10, 0x01]));
    }

    #[test]
    fn h264_variants() {
        assert!(starts_keyframe(VideoCodec::H264, &[0x65, 0x88]));
        assert!(starts_keyframe(VideoCodec::H264, &[0x67, 0x42]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
        // STAP-A holding SPS then PPS.
        let stap = [0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce];
        assert!(starts_keyframe(VideoCodec::H264, &stap));
        // FU-A start of an IDR, then its continuation.
        assert!(starts_keyframe(VideoCodec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x00]));
        // A truncated STAP-A must not read past the end.
        assert!(!starts_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x09, 0x67]
        ));
    }
}
