//! Estimated MOS from the ITU-T G.107 E-model, simplified (PURE).
//!
//! The relay sees loss and jitter, and — when the endpoints send RTCP — each leg's round-trip
//! time, but not the handsets' acoustics, so the full E-model is reduced to the terms it can
//! feed, for G.711 with packet-loss
//! concealment (the codecs the edge's phones use; G.722/G.729 are scored alike, a known
//! optimism for G.729, whose Ie is 11):
//!
//! - `R = Ro − Is − Id − Ie_eff + A` with the G.107 defaults `Ro − Is = 93.2` and `A = 0`
//!   (G.107 §7.1: the default R is 93.2).
//! - `Id` (delay impairment): with `Ta` the effective one-way delay in ms, the common
//!   simplification of G.107 §7.4 (Cole & Rosenbluth, "Voice over IP performance monitoring",
//!   2001): `Id = 0.024·Ta + 0.11·(Ta − 177.3)·H(Ta − 177.3)`, where H is the step function.
//!   Jitter is folded in as delay: a jitter buffer sized for it adds about twice the jitter,
//!   plus 10 ms of codec/packetisation look-ahead: `Ta = one_way_delay + 2·jitter + 10`.
//!   `one_way_delay` is half the sum of the two legs' round-trip times the edge measured from
//!   RTCP (phone ↔ edge and edge ↔ PBX, [`super::report`]; RFC 3550 §6.4.1), i.e. the path
//!   phone → edge → PBX assumed symmetric; a leg without RTCP counts as 0, and with no RTT
//!   known at all the delay is 0 (the relay alone cannot see it).
//! - `Ie_eff` (equipment impairment with loss, G.107 §7.5):
//!   `Ie_eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl)` with `Ie = 0`, `Bpl = 25`
//!   (G.113 Appendix I, G.711 with PLC under random loss), `BurstR = 1` (random loss: the relay
//!   does not model burstiness), `Ppl` the loss in percent.
//! - MOS from R (G.107 Annex B): 1 for R < 0, 4.5 for R > 100, else
//!   `1 + 0.035·R + R·(R − 60)·(100 − R)·7·10⁻⁶`. That polynomial dips below 1 for small R
//!   (about 0 < R < 13); the result is clamped to at least 1 so the score is monotonic in R.
//!
//! With no loss, no jitter and no delay known this gives R ≈ 93 → MOS ≈ 4.4 (the ceiling for
//! narrowband); 5 % random loss gives R ≈ 77 → MOS ≈ 3.9.

/// What the relay measured for one direction of a stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairments {
    /// Lost packets / expected, 0..=1 (clamped).
    pub loss_ratio: f64,
    /// Interarrival jitter in ms (≥ 0).
    pub jitter_ms: f64,
    /// One-way network delay in ms: RTT/2 from RTCP (see the module doc), 0 when unknown.
    pub one_way_delay_ms: f64,
}

/// G.107 default `Ro − Is`.
const R_DEFAULT: f64 = 93.2;
/// Packet-loss robustness of G.711 with PLC, random loss (G.113 Appendix I).
const BPL: f64 = 25.0;
/// Equipment impairment of G.711.
const IE: f64 = 0.0;
/// Codec and packetisation look-ahead folded into the delay (ms).
const CODEC_DELAY_MS: f64 = 10.0;

/// Sanitises a measured figure: NaN and negatives become 0.
fn non_negative(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        0.0
    } else {
        x
    }
}

/// The transmission rating R (see the module doc).
pub fn r_factor(m: Impairments) -> f64 {
    let loss_percent = non_negative(m.loss_ratio).min(1.0) * 100.0;
    let ta = non_negative(m.one_way_delay_ms) + 2.0 * non_negative(m.jitter_ms) + CODEC_DELAY_MS;
    let id = 0.024 * ta + if ta > 177.3 { 0.11 * (ta - 177.3) } else { 0.0 };
    // BurstR = 1: Ppl / BurstR = Ppl.
    let ie_eff = IE + (95.0 - IE) * loss_percent / (loss_percent + BPL);
    R_DEFAULT - id - ie_eff
}

/// MOS (1..=4.5) from R, G.107 Annex B, clamped to ≥ 1 (see the module doc).
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).max(1.0)
    }
}

/// Estimated MOS for one direction of a stream.
pub fn estimate(m: Impairments) -> f64 {
    mos_from_r(r_factor(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mos(loss_ratio: f64, jitter_ms: f64) -> f64 {
        estimate(Impairments {
            loss_ratio,
            jitter_ms,
            one_way_delay_ms: 0.0,
        })
    }

    #[test]
    fn clean_g711_is_about_4_4() {
        let m = mos(0.0, 0.0);
        assert!((4.35..=4.45).contains(&m), "{m}");
    }

    #[test]
    fn five_percent_loss_is_noticeably_lower() {
        let m = mos(0.05, 0.0);
        assert!((3.7..=4.0).contains(&m), "{m}");
        assert!(mos(0.0, 0.0) - m > 0.4);
    }

    #[test]
    fn jitter_and_delay_lower_the_score() {
        assert!(mos(0.0, 50.0) < mos(0.0, 0.0));
        let delayed = estimate(Impairments {
            loss_ratio: 0.0,
            jitter_ms: 0.0,
            one_way_delay_ms: 300.0,
        });
        assert!(delayed < 4.0, "{delayed}");
    }

    #[test]
    fn extremes_stay_in_range() {
        assert_eq!(mos(1.0, 1000.0), 1.0);
        assert_eq!(mos(f64::NAN, f64::NAN), mos(0.0, 0.0));
        assert_eq!(mos_from_r(120.0), 4.5);
        assert_eq!(mos_from_r(-5.0), 1.0);
    }

    proptest! {
        #[test]
        fn monotonic_in_loss_and_jitter(l1 in 0.0f64..1.0, l2 in 0.0f64..1.0, j1 in 0.0f64..500.0, j2 in 0.0f64..500.0) {
            let (lo_l, hi_l) = if l1 <= l2 { (l1, l2) } else { (l2, l1) };
            let (lo_j, hi_j) = if j1 <= j2 { (j1, j2) } else { (j2, j1) };
            prop_assert!(mos(hi_l, lo_j) <= mos(lo_l, lo_j));
            prop_assert!(mos(lo_l, hi_j) <= mos(lo_l, lo_j));
            let m = mos(hi_l, hi_j);
            prop_assert!((1.0..=4.5).contains(&m));
        }

        #[test]
        fn mos_monotonic_in_r(a in -10.0f64..110.0, b in -10.0f64..110.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(mos_from_r(lo) <= mos_from_r(hi));
        }
    }
}
