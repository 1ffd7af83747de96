//! Reading RTP payload formats, for the parts both ends need: the server's forwarder
//! looks for keyframes and the Rust client reads synthetic frames, each behind the same
//! VP8 payload descriptor.

/// The VP8 frame inside an RTP payload when the packet starts one (RFC 7741 4.2: the S
/// bit with partition index 0), with the payload descriptor skipped. `None` for a packet
/// that continues a frame or is too short to say.
pub fn vp8_frame_start(payload: &[u8]) -> Option<&[u8]> {
    let first = *payload.first()?;
    let start_of_partition = first & 0x10 != 0;
    let partition_index = first & 0x07;
    if !start_of_partition || partition_index != 0 {
        return None;
    }
    let mut offset = 1;
    let extended = first & 0x80 != 0;
    if extended {
        let ext = *payload.get(offset)?;
        offset += 1;
        let has_picture_id = ext & 0x80 != 0;
        let has_tl0_pic_idx = ext & 0x40 != 0;
        let has_tid_or_keyidx = ext & 0x30 != 0;
        if has_picture_id {
            // The M bit says the picture id takes 15 bits (two octets).
            offset += if payload.get(offset)? & 0x80 != 0 {
                2
            } else {
                1
            };
        }
        if has_tl0_pic_idx {
            offset += 1;
        }
        if has_tid_or_keyidx {
            offset += 1;
        }
    }
    payload.get(offset..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_every_descriptor_field() {
        // X, S; I, L and T; a 15-bit picture id; TL0PICIDX; TID; then the frame.
        let payload = [0x90, 0xe0, 0x81, 0x23, 0x05, 0x20, 0xaa, 0xbb];
        assert_eq!(vp8_frame_start(&payload), Some(&[0xaa, 0xbb][..]));
        // A 7-bit picture id only.
        assert_eq!(
            vp8_frame_start(&[0x90, 0x80, 0x05, 0xaa]),
            Some(&[0xaa][..])
        );
        // No extension at all.
        assert_eq!(vp8_frame_start(&[0x10, 0xaa]), Some(&[0xaa][..]));
    }

    #[test]
    fn continuations_and_truncated_payloads_start_nothing() {
        assert_eq!(vp8_frame_start(&[0x80, 0x80, 0x05, 0x00]), None);
        assert_eq!(vp8_frame_start(&[0x11, 0x00]), None); // partition 1
        assert_eq!(vp8_frame_start(&[]), None);
        assert_eq!(vp8_frame_start(&[0x90]), None);
        assert_eq!(vp8_frame_start(&[0x90, 0x80]), None);
    }
}
