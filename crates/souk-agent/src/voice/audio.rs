//! Audio as the voice pipeline handles it: 16 kHz mono PCM inside, Opus on the wire.
//!
//! 16 kHz is what speech detection and recognition want and is plenty for a voice; the
//! Opus decoder resamples from whatever the browser sent, and the encoder's 16 kHz
//! packets play at any rate on the other side. Opus here is pure Rust (no system library).

use opus_rs::{Application, OpusDecoder, OpusEncoder};

/// Samples per second inside the pipeline.
pub const RATE: u32 = 16_000;
/// Samples in one 20 ms frame, the unit of playout.
pub const FRAME: usize = 320;
/// The longest Opus frame (120 ms) at [`RATE`].
const MAX_DECODED: usize = 1920;

/// Decodes the shopper's Opus frames.
pub struct OpusIn {
    decoder: OpusDecoder,
    pcm: Vec<f32>,
}

impl OpusIn {
    pub fn new() -> OpusIn {
        OpusIn {
            decoder: OpusDecoder::new(RATE as i32, 1).expect("16 kHz mono is a valid Opus decoder"),
            pcm: vec![0.0; MAX_DECODED],
        }
    }

    /// The PCM in `packet`; a corrupt packet decodes as nothing.
    pub fn decode(&mut self, packet: &[u8]) -> Vec<i16> {
        match self.decoder.decode(packet, MAX_DECODED, &mut self.pcm) {
            Ok(n) => self.pcm[..n].iter().map(|s| to_i16(*s)).collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Default for OpusIn {
    fn default() -> Self {
        OpusIn::new()
    }
}

/// Encodes the agent's speech in 20 ms frames.
pub struct OpusOut {
    encoder: OpusEncoder,
    packet: Vec<u8>,
}

impl OpusOut {
    pub fn new() -> OpusOut {
        let mut encoder = OpusEncoder::new(RATE as i32, 1, Application::Voip)
            .expect("16 kHz mono is a valid Opus encoder");
        encoder.bitrate_bps = 24_000;
        OpusOut {
            encoder,
            packet: vec![0; 1500],
        }
    }

    /// One frame of exactly [`FRAME`] samples.
    pub fn encode(&mut self, frame: &[i16]) -> Vec<u8> {
        debug_assert_eq!(frame.len(), FRAME);
        match self.encoder.encode_i16(frame, FRAME, &mut self.packet) {
            Ok(n) => self.packet[..n].to_vec(),
            Err(e) => {
                tracing::warn!("Opus encoding failed: {e}");
                Vec::new()
            }
        }
    }
}

impl Default for OpusOut {
    fn default() -> Self {
        OpusOut::new()
    }
}

fn to_i16(sample: f32) -> i16 {
    (sample * 32768.0).clamp(-32768.0, 32767.0) as i16
}

/// `input` at `from` Hz as `to` Hz. Going down, a low-pass filter first removes what the
/// lower rate cannot carry (it would fold back as noise that recognisers mishear);
/// then linear interpolation, which is enough for speech.
pub fn resample(input: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let filtered;
    let input = if to < from {
        filtered = low_pass(input, 0.45 * to as f64 / from as f64);
        &filtered[..]
    } else {
        input
    };
    let out_len = (input.len() as u64 * to as u64 / from as u64) as usize;
    (0..out_len)
        .map(|i| {
            let pos = i as f64 * from as f64 / to as f64;
            let j = pos as usize;
            let frac = pos - j as f64;
            let a = input[j.min(input.len() - 1)] as f64;
            let b = input[(j + 1).min(input.len() - 1)] as f64;
            (a + (b - a) * frac).round() as i16
        })
        .collect()
}

/// A windowed-sinc FIR low-pass with `cutoff` as a fraction of the sample rate.
fn low_pass(input: &[i16], cutoff: f64) -> Vec<i16> {
    const TAPS: usize = 31;
    let mid = (TAPS / 2) as f64;
    let mut taps: Vec<f64> = (0..TAPS)
        .map(|n| {
            let x = n as f64 - mid;
            let sinc = if x == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * x).sin() / (std::f64::consts::PI * x)
            };
            let hamming =
                0.54 - 0.46 * (2.0 * std::f64::consts::PI * n as f64 / (TAPS - 1) as f64).cos();
            sinc * hamming
        })
        .collect();
    let gain: f64 = taps.iter().sum();
    taps.iter_mut().for_each(|t| *t /= gain);
    (0..input.len())
        .map(|i| {
            let acc: f64 = taps
                .iter()
                .enumerate()
                .map(|(k, t)| {
                    let j = i as i64 + k as i64 - mid as i64;
                    if j < 0 || j >= input.len() as i64 {
                        0.0
                    } else {
                        input[j as usize] as f64 * t
                    }
                })
                .sum();
            acc.round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// The level of `frame` in -dBov (0 the loudest, 127 silence), for the RTP audio-level
/// extension that drives the active-speaker indicator.
pub fn level_dbov(frame: &[i16]) -> i8 {
    if frame.is_empty() {
        return 127;
    }
    let mean_square = frame
        .iter()
        .map(|s| (*s as f64 / 32768.0).powi(2))
        .sum::<f64>()
        / frame.len() as f64;
    if mean_square <= 0.0 {
        return 127;
    }
    (-10.0 * mean_square.log10()).clamp(0.0, 127.0) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, samples: usize, amplitude: f64) -> Vec<i16> {
        (0..samples)
            .map(|i| {
                ((i as f64 * hz * std::f64::consts::TAU / RATE as f64).sin() * amplitude) as i16
            })
            .collect()
    }

    #[test]
    fn opus_round_trip_keeps_the_energy_of_a_voice_band_tone() {
        let pcm = tone(440.0, FRAME * 25, 8000.0);
        let mut out = OpusOut::new();
        let mut back = OpusIn::new();
        let mut decoded = Vec::new();
        for frame in pcm.chunks(FRAME) {
            let packet = out.encode(frame);
            assert!(!packet.is_empty() && packet.len() < 200);
            decoded.extend(back.decode(&packet));
        }
        assert_eq!(decoded.len(), pcm.len());
        // Past the codec's start-up, the level comes through within a few dB.
        let (sent, got) = (
            level_dbov(&pcm[FRAME * 10..]),
            level_dbov(&decoded[FRAME * 10..]),
        );
        assert!(
            (sent as i32 - got as i32).abs() <= 3,
            "sent -{sent} dBov, got -{got} dBov"
        );
        assert!(
            back.decode(&[0xff; 3]).len() <= MAX_DECODED,
            "garbage never panics"
        );
    }

    #[test]
    fn resampling_keeps_duration() {
        let second = tone(300.0, 22_050, 1000.0);
        assert_eq!(resample(&second, 22_050, 16_000).len(), 16_000);
        assert_eq!(resample(&second, 16_000, 16_000).len(), 22_050);
    }

    #[test]
    fn levels() {
        assert_eq!(level_dbov(&[0; FRAME]), 127);
        assert!(level_dbov(&tone(440.0, FRAME, 30000.0)) < 5);
    }
}
