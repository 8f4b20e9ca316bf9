//! The test audio: an 8 kHz mono 16-bit sine WAV (baresip's `aufile` source), G.711 µ-law
//! (PCMU) decoding, and a Goertzel detector telling whether a payload carries the tone.

use std::path::Path;

pub const RATE: u32 = 8000;
pub const TONE_HZ: f64 = 440.0;

/// Sample `i` of the tone.
fn sample(i: u32) -> i16 {
    let t = f64::from(i) / f64::from(RATE);
    (12000.0 * (2.0 * std::f64::consts::PI * TONE_HZ * t).sin()) as i16
}

/// Writes `secs` seconds of a `TONE_HZ` sine, amplitude 12000, as a PCM WAV file.
pub fn write_wav(path: &Path, secs: u32) {
    let samples: Vec<i16> = (0..secs * RATE).map(sample).collect();
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out).expect("write wav");
}

/// G.711 µ-law byte to linear PCM (ITU-T G.711).
pub fn ulaw_to_linear(u: u8) -> i32 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if sign != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Linear PCM to G.711 µ-law (sign, segment, 4-bit mantissa; bias 0x84, clip 32635).
pub fn linear_to_ulaw(s: i16) -> u8 {
    let v = i32::from(s);
    let sign = if v < 0 { 0x80u8 } else { 0 };
    let v = v.abs().min(32635) + 0x84;
    let exp = (0..8).rev().find(|e| v & (0x80 << e) != 0).unwrap_or(0);
    let mant = (v >> (exp + 3)) & 0x0F;
    // exp < 8 and mant < 16: both fit the byte's fields.
    !(sign | ((exp as u8) << 4) | mant as u8)
}

/// `n` samples of the tone from sample `start`, µ-law encoded (what a PCMU payload carries).
pub fn tone_pcmu(start: u32, n: u32) -> Vec<u8> {
    (start..start + n)
        .map(|i| linear_to_ulaw(sample(i)))
        .collect()
}

/// Share of the payload's energy (decoded as PCMU) at `TONE_HZ` (Goertzel), in 0..=1: close to
/// 1 for the sine, close to 0 for ciphertext (white noise spreads over all frequencies).
pub fn tone_share(payload: &[u8]) -> f64 {
    let x: Vec<f64> = payload
        .iter()
        .map(|&b| f64::from(ulaw_to_linear(b)))
        .collect();
    let n = x.len() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * TONE_HZ / f64::from(RATE);
    let (mut s1, mut s2) = (0.0, 0.0);
    for v in &x {
        let s = v + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    let energy: f64 = x.iter().map(|v| v * v).sum();
    if energy == 0.0 {
        return 0.0;
    }
    // A pure sine of n samples at the bin frequency has Goertzel power n/2 · energy.
    (power / (n / 2.0 * energy)).min(1.0)
}

#[test]
fn tone_detector_tells_the_sine_from_noise() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("t.wav");
    write_wav(&wav, 1);
    let bytes = std::fs::read(&wav).unwrap();
    assert_eq!(bytes.len(), 44 + 16000);
    let pcmu: Vec<u8> = bytes[44..44 + 320]
        .chunks(2)
        .map(|c| linear_to_ulaw(i16::from_le_bytes([c[0], c[1]])))
        .collect();
    assert_eq!(pcmu, tone_pcmu(0, 160), "the WAV holds the tone");
    assert!(tone_share(&pcmu) > 0.8, "{}", tone_share(&pcmu));
    let noise: Vec<u8> = (0..160u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(tone_share(&noise) < 0.2, "{}", tone_share(&noise));
}
