//! Whisper-style log-mel features: what speech models trained on Whisper's encoder
//! (smart-turn among them) take as input.
//!
//! 16 kHz audio, 25 ms Hann windows every 10 ms, power spectrum, 80 mel bands on the
//! Slaney scale, log10, floored 8 decades below the loudest band and scaled to about
//! [-1, 1]. The steps follow Whisper's reference feature extractor so a model sees the
//! numbers it was trained on.

use std::sync::{Arc, OnceLock};

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

const N_FFT: usize = 400;
const HOP: usize = 160;
pub const N_MELS: usize = 80;
const BINS: usize = N_FFT / 2 + 1;
const RATE: f64 = 16_000.0;

/// Features for `audio` (16 kHz, exactly `frames * 160` samples), as `N_MELS` rows of
/// `frames` values. The audio is first normalised to zero mean and unit variance.
pub fn features(audio: &[f32], frames: usize) -> Vec<f32> {
    assert_eq!(audio.len(), frames * HOP, "audio must be whole hops");
    let mean = audio.iter().map(|&x| x as f64).sum::<f64>() / audio.len() as f64;
    let var = audio
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / audio.len() as f64;
    let scale = 1.0 / (var + 1e-7).sqrt();
    let x: Vec<f64> = audio.iter().map(|&v| (v as f64 - mean) * scale).collect();

    // Centred frames: the signal mirrored by half a window at both ends (without
    // repeating the edge sample).
    let pad = N_FFT / 2;
    let n = x.len();
    let padded: Vec<f64> = (0..n + 2 * pad)
        .map(|i| {
            let j = i as isize - pad as isize;
            let j = if j < 0 {
                -j
            } else if j >= n as isize {
                2 * (n as isize - 1) - j
            } else {
                j
            };
            x[j as usize]
        })
        .collect();

    let (fft, window, filters) = tables();
    let mut log_spec = vec![0.0f64; N_MELS * frames];
    let mut buffer = vec![Complex::new(0.0, 0.0); N_FFT];
    let mut power = [0.0f64; BINS];
    // The reference computes one frame more and drops it.
    for frame in 0..frames {
        let start = frame * HOP;
        for (k, b) in buffer.iter_mut().enumerate() {
            *b = Complex::new(padded[start + k] * window[k], 0.0);
        }
        fft.process(&mut buffer);
        for (p, b) in power.iter_mut().zip(&buffer) {
            *p = b.norm_sqr();
        }
        for mel in 0..N_MELS {
            let energy: f64 = (0..BINS)
                .map(|bin| filters[bin * N_MELS + mel] * power[bin])
                .sum();
            log_spec[mel * frames + frame] = energy.max(1e-10).log10();
        }
    }
    let floor = log_spec.iter().cloned().fold(f64::MIN, f64::max) - 8.0;
    log_spec
        .into_iter()
        .map(|v| ((v.max(floor) + 4.0) / 4.0) as f32)
        .collect()
}

/// The FFT plan, the periodic Hann window and the mel filter bank (`BINS` rows of
/// `N_MELS`).
type Tables = (Arc<dyn Fft<f64>>, Vec<f64>, Vec<f64>);

/// The tables, computed once.
fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let fft = FftPlanner::new().plan_fft_forward(N_FFT);
        let window = (0..N_FFT)
            .map(|k| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / N_FFT as f64).cos())
            .collect();
        (fft, window, mel_filters())
    })
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= 1000.0 {
        15.0 + (hz / 1000.0).ln() * 27.0 / 6.4f64.ln()
    } else {
        3.0 * hz / 200.0
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= 15.0 {
        1000.0 * (6.4f64.ln() / 27.0 * (mel - 15.0)).exp()
    } else {
        200.0 * mel / 3.0
    }
}

/// Triangular filters between mel-spaced edges, each scaled to the same area.
fn mel_filters() -> Vec<f64> {
    let (low, high) = (hz_to_mel(0.0), hz_to_mel(RATE / 2.0));
    let edges: Vec<f64> = (0..N_MELS + 2)
        .map(|i| mel_to_hz(low + (high - low) * i as f64 / (N_MELS + 1) as f64))
        .collect();
    let mut filters = vec![0.0; BINS * N_MELS];
    for bin in 0..BINS {
        let hz = RATE / 2.0 * bin as f64 / (BINS - 1) as f64;
        for mel in 0..N_MELS {
            let rising = (hz - edges[mel]) / (edges[mel + 1] - edges[mel]);
            let falling = (edges[mel + 2] - hz) / (edges[mel + 2] - edges[mel + 1]);
            let area = 2.0 / (edges[mel + 2] - edges[mel]);
            filters[bin * N_MELS + mel] = rising.min(falling).max(0.0) * area;
        }
    }
    filters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_lights_the_band_that_holds_its_frequency() {
        let frames = 100;
        let tone: Vec<f32> = (0..frames * HOP)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let f = features(&tone, frames);
        assert_eq!(f.len(), N_MELS * frames);
        let band = |mel: usize| f[mel * frames + frames / 2];
        let loudest = (0..N_MELS)
            .max_by(|&a, &b| band(a).total_cmp(&band(b)))
            .unwrap();
        // 1 kHz is where the Slaney scale turns logarithmic: mel 15 of 45.2, band ~26.
        let edges_per_band = hz_to_mel(8000.0) / (N_MELS + 1) as f64;
        let expected = (hz_to_mel(1000.0) / edges_per_band).round() as usize - 1;
        assert!(
            loudest.abs_diff(expected) <= 1,
            "loudest band {loudest}, expected {expected}"
        );
        // Floored 8 decades (2 after scaling) below the loudest value.
        let top = f.iter().cloned().fold(f32::MIN, f32::max);
        assert!(f.iter().all(|&v| v >= top - 2.0 - 1e-5));
    }

    #[test]
    fn filters_cover_the_spectrum_without_gaps() {
        let filters = mel_filters();
        for bin in 1..BINS - 1 {
            assert!(
                (0..N_MELS).any(|m| filters[bin * N_MELS + m] > 0.0),
                "bin {bin} falls between filters"
            );
        }
    }
}
