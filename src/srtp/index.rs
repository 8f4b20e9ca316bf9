//! Packet index estimation (RFC 3711 §3.3.1): the 48-bit SRTP index `i = 2^16 * ROC + SEQ`
//! reconstructed from a 16-bit sequence number and the highest index seen so far.

/// Estimates the index of a packet with sequence number `seq`, given `highest`, the highest
/// index accepted on the stream (RFC 3711 §3.3.1 and Appendix A).
///
/// Returns `None` when the guess would need ROC − 1 with ROC = 0 (a packet from "before" the
/// stream began).
pub fn estimate(highest: u64, seq: u16) -> Option<u64> {
    let roc = highest >> 16;
    let s_l = (highest & 0xffff) as u16;
    let v = if s_l < 0x8000 {
        if u32::from(seq) > u32::from(s_l) + 0x8000 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if u32::from(seq) + 0x8000 < u32::from(s_l) {
        roc + 1
    } else {
        roc
    };
    Some((v << 16) | u64::from(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_wrap() {
        assert_eq!(estimate(65535, 0), Some(65536));
        assert_eq!(estimate(65500, 65501), Some(65501));
        assert_eq!(estimate(65536 + 5, 65530), Some(65530)); // late packet from before the wrap
        assert_eq!(estimate(65536 + 5, 7), Some(65536 + 7));
        assert_eq!(estimate(10, 65000), None); // would need ROC -1
        assert_eq!(estimate(3 << 16 | 100, 65000), Some((2 << 16) | 65000));
        assert_eq!(estimate(40000, 7000), Some((1 << 16) | 7000));
    }
}
