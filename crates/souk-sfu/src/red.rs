//! RFC 2198 redundant audio, generated per subscriber.
//!
//! Each outgoing Opus packet also carries the previous two, so a packet is lost for good
//! only when it and both packets after it are lost: at 20% random loss that is 0.8% instead
//! of 20%. Publishers' own RED is unwrapped by str0m on the way in, so every subscriber gets
//! redundancy matched to its own connection, and one that did not negotiate RED gets plain
//! Opus.

use std::collections::VecDeque;
use std::sync::Arc;

/// How many earlier packets ride along with each packet.
pub const REDUNDANCY: usize = 2;
const MAX_TS_OFFSET: u32 = 0x3fff;
const MAX_BLOCK_LEN: usize = 0x3ff;

/// The primary (newest) block of a RED payload: what a publisher's RED carries for this
/// packet. `None` for a payload that is not well-formed RED.
pub fn primary(red: &[u8]) -> Option<&[u8]> {
    let mut offset = 0;
    let mut redundant = 0usize;
    while *red.get(offset)? & 0x80 != 0 {
        let header = red.get(offset..offset + 4)?;
        redundant += (u32::from_be_bytes(header.try_into().ok()?) & 0x3ff) as usize;
        offset += 4;
    }
    red.get(offset + 1 + redundant..)
}

#[derive(Debug, Default)]
pub struct RedEncoder {
    /// Recent primaries, oldest first: (RTP timestamp, payload).
    history: VecDeque<(u32, Arc<[u8]>)>,
}

impl RedEncoder {
    /// The RED payload for `primary` (payload type `pt`, timestamp `ts`).
    pub fn encode(&mut self, pt: u8, ts: u32, primary: &Arc<[u8]>) -> Vec<u8> {
        let usable: Vec<&(u32, Arc<[u8]>)> = self
            .history
            .iter()
            .filter(|(old_ts, data)| {
                let offset = ts.wrapping_sub(*old_ts);
                offset > 0 && offset <= MAX_TS_OFFSET && data.len() <= MAX_BLOCK_LEN
            })
            .collect();
        let size = usable.iter().map(|(_, d)| 4 + d.len()).sum::<usize>() + 1 + primary.len();
        let mut out = Vec::with_capacity(size);
        for (old_ts, data) in &usable {
            let offset = ts.wrapping_sub(*old_ts);
            let header =
                (1u32 << 31) | ((pt as u32 & 0x7f) << 24) | (offset << 10) | data.len() as u32;
            out.extend_from_slice(&header.to_be_bytes());
        }
        out.push(pt & 0x7f);
        for (_, data) in &usable {
            out.extend_from_slice(data);
        }
        out.extend_from_slice(primary);

        self.history.push_back((ts, primary.clone()));
        while self.history.len() > REDUNDANCY {
            self.history.pop_front();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(bytes: &[u8]) -> Arc<[u8]> {
        Arc::from(bytes)
    }

    /// Splits a RED payload into (pt, timestamp offset, data) blocks, primary last.
    fn decode(red: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
        let mut headers = Vec::new();
        let mut i = 0;
        while red[i] & 0x80 != 0 {
            let h = u32::from_be_bytes(red[i..i + 4].try_into().unwrap());
            headers.push((
                ((h >> 24) & 0x7f) as u8,
                (h >> 10) & 0x3fff,
                (h & 0x3ff) as usize,
            ));
            i += 4;
        }
        let primary_pt = red[i] & 0x7f;
        i += 1;
        let mut blocks = Vec::new();
        for (pt, offset, len) in headers {
            blocks.push((pt, offset, red[i..i + len].to_vec()));
            i += len;
        }
        blocks.push((primary_pt, 0, red[i..].to_vec()));
        blocks
    }

    #[test]
    fn carries_the_two_previous_packets() {
        let mut red = RedEncoder::default();
        assert_eq!(
            decode(&red.encode(111, 960, &payload(b"one"))),
            vec![(111, 0, b"one".to_vec())]
        );
        red.encode(111, 1920, &payload(b"two"));
        let third = decode(&red.encode(111, 2880, &payload(b"three")));
        assert_eq!(
            third,
            vec![
                (111, 1920, b"one".to_vec()),
                (111, 960, b"two".to_vec()),
                (111, 0, b"three".to_vec())
            ]
        );
    }

    #[test]
    fn primary_is_the_last_block() {
        let mut red = RedEncoder::default();
        red.encode(111, 960, &payload(b"one"));
        let wire = red.encode(111, 1920, &payload(b"two"));
        assert_eq!(primary(&wire), Some(&b"two"[..]));
        assert_eq!(primary(&[111, 1, 2]), Some(&[1u8, 2][..]), "no redundancy");
        assert_eq!(primary(&[0x80 | 111, 0, 0]), None, "truncated header");
        assert_eq!(
            primary(&[0x80 | 111, 0, 4, 9, 111]),
            None,
            "block longer than the payload"
        );
    }

    #[test]
    fn skips_blocks_that_cannot_be_expressed() {
        let mut red = RedEncoder::default();
        red.encode(111, 0, &payload(&[1; 2000]));
        // Too large for a 10-bit length, and too old for a 14-bit offset: primary only.
        assert_eq!(decode(&red.encode(111, 960, &payload(b"x"))).len(), 1);
        red.encode(111, 100_000, &payload(b"y"));
        assert_eq!(decode(&red.encode(111, 100_960, &payload(b"z"))).len(), 2);
    }
}
