//! Property tests of the SRTP engine: protect/unprotect roundtrip for arbitrary packets
//! (CSRCs, header extensions, payloads), any single flipped bit fails authentication, and
//! unprotect never panics on arbitrary bytes.

use pbx_edge::srtp::{ContextOptions, CryptoSuite, MasterKey, Mki, SrtpContext, SrtpError};
use proptest::prelude::*;

fn suite_strategy() -> impl Strategy<Value = CryptoSuite> {
    (0usize..CryptoSuite::ALL.len()).prop_map(|i| CryptoSuite::ALL[i])
}

fn contexts(suite: CryptoSuite, key_byte: u8, mki: Option<Mki>) -> (SrtpContext, SrtpContext) {
    let key = MasterKey::generate(suite, |b| b.fill(key_byte));
    let opts = ContextOptions {
        mki,
        ..ContextOptions::default()
    };
    (
        SrtpContext::new(&key, &opts).unwrap(),
        SrtpContext::new(&key, &opts).unwrap(),
    )
}

/// An RTP packet with `csrcs` CSRCs, an optional header extension of `ext_words` words, and
/// the payload.
fn rtp_packet(seq: u16, ssrc: u32, csrcs: &[u32], ext: Option<&[u32]>, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x80 | csrcs.len() as u8 | if ext.is_some() { 0x10 } else { 0 },
        0x60,
    ];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in csrcs {
        p.extend_from_slice(&c.to_be_bytes());
    }
    if let Some(words) = ext {
        p.extend_from_slice(&[0xbe, 0xde]);
        p.extend_from_slice(&(words.len() as u16).to_be_bytes());
        for w in words {
            p.extend_from_slice(&w.to_be_bytes());
        }
    }
    p.extend_from_slice(payload);
    p
}

prop_compose! {
    fn arb_rtp()(seq in any::<u16>(), ssrc in any::<u32>(),
                 csrcs in proptest::collection::vec(any::<u32>(), 0..=15),
                 ext in proptest::option::of(proptest::collection::vec(any::<u32>(), 0..8)),
                 payload in proptest::collection::vec(any::<u8>(), 0..300)) -> Vec<u8> {
        rtp_packet(seq, ssrc, &csrcs, ext.as_deref(), &payload)
    }
}

fn protect(tx: &mut SrtpContext, p: &[u8]) -> Vec<u8> {
    let mut buf = p.to_vec();
    buf.resize(p.len() + tx.rtp_overhead(), 0);
    let n = tx.protect_rtp(&mut buf, p.len()).unwrap();
    buf.truncate(n);
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rtp_roundtrip(suite in suite_strategy(), p in arb_rtp(), mki in proptest::option::of(1u8..=4)) {
        let (mut tx, mut rx) = contexts(suite, 0x42, mki.and_then(|l| Mki::new(1, l)));
        let mut buf = protect(&mut tx, &p);
        let n = rx.unprotect_rtp(&mut buf).unwrap();
        prop_assert_eq!(&buf[..n], &p[..]);
    }

    #[test]
    fn rtcp_roundtrip(suite in suite_strategy(), body in proptest::collection::vec(any::<u8>(), 4..400),
                      unencrypted in any::<bool>()) {
        let key = MasterKey::generate(suite, |b| b.fill(3));
        let opts = ContextOptions { unencrypted_srtcp: unencrypted, ..ContextOptions::default() };
        let mut tx = SrtpContext::new(&key, &opts).unwrap();
        let mut rx = SrtpContext::new(&key, &opts).unwrap();
        let mut p = vec![0x81, 201, 0, 0];
        p.extend_from_slice(&body);
        let mut buf = p.clone();
        buf.resize(p.len() + tx.rtcp_overhead(), 0);
        let n = tx.protect_rtcp(&mut buf, p.len()).unwrap();
        buf.truncate(n);
        let r = rx.unprotect_rtcp(&mut buf).unwrap();
        prop_assert_eq!(&buf[..r.len], &p[..]);
        prop_assert!(!r.unannounced_unencrypted);
    }

    /// Flipping any single bit of a protected packet makes unprotect fail (never silently
    /// deliver altered data). Most flips fail authentication; a flip in the version bits or the
    /// CSRC count/extension flag may already fail parsing (Malformed), and a flip in the MKI
    /// fails the MKI check.
    #[test]
    fn any_flipped_bit_fails(suite in suite_strategy(), p in arb_rtp(), bit in any::<proptest::sample::Index>(),
                             with_mki in any::<bool>()) {
        let (mut tx, mut rx) = contexts(suite, 0x17, if with_mki { Mki::new(7, 2) } else { None });
        let mut buf = protect(&mut tx, &p);
        let bit = bit.index(buf.len() * 8);
        buf[bit / 8] ^= 1 << (bit % 8);
        let err = rx.unprotect_rtp(&mut buf).unwrap_err();
        prop_assert!(matches!(err, SrtpError::AuthFailed | SrtpError::Malformed | SrtpError::UnknownMki | SrtpError::TooOld),
            "{:?}", err);
    }

    #[test]
    fn rtcp_any_flipped_bit_fails(suite in suite_strategy(), body in proptest::collection::vec(any::<u8>(), 4..100),
                                  bit in any::<proptest::sample::Index>()) {
        let (mut tx, mut rx) = contexts(suite, 0x33, None);
        let mut p = vec![0x80, 200, 0, 0];
        p.extend_from_slice(&body);
        let mut buf = p.clone();
        buf.resize(p.len() + tx.rtcp_overhead(), 0);
        let n = tx.protect_rtcp(&mut buf, p.len()).unwrap();
        buf.truncate(n);
        let bit = bit.index(buf.len() * 8);
        buf[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(rx.unprotect_rtcp(&mut buf).is_err());
    }

    #[test]
    fn unprotect_never_panics(suite in suite_strategy(), mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
                              mki in any::<bool>()) {
        let (_, mut rx) = contexts(suite, 1, if mki { Mki::new(1, 4) } else { None });
        // Bias towards version 2 so parsing gets past the first check.
        if let Some(b) = bytes.first_mut() {
            *b = (*b & 0x3f) | 0x80;
        }
        let mut copy = bytes.clone();
        prop_assert!(rx.unprotect_rtp(&mut bytes).is_err());
        prop_assert!(rx.unprotect_rtcp(&mut copy).is_err());
    }

    /// A replay of any accepted packet is refused, whatever the delivery order. (`start` stays
    /// below the wrap: a brand-new stream whose first packet is post-wrap cannot accept a
    /// pre-wrap packet, ROC would be -1 — RFC 3711 §3.3.1, libsrtp behaves the same.)
    #[test]
    fn replays_refused(order in Just((0u16..64).collect::<Vec<_>>()).prop_shuffle(), start in 0u16..(65535 - 64)) {
        let (mut tx, mut rx) = contexts(CryptoSuite::AesCm128HmacSha1_80, 5, None);
        let packets: Vec<_> = (0..64u16).map(|i| protect(&mut tx, &rtp_packet(start.wrapping_add(i), 1, &[], None, &[0; 20]))).collect();
        for &i in &order {
            let mut b = packets[i as usize].clone();
            prop_assert!(rx.unprotect_rtp(&mut b).is_ok(), "first delivery of {} failed", i);
            let mut again = packets[i as usize].clone();
            prop_assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replayed));
        }
    }
}

proptest! {
    /// Our AES-GCM (AWS-LC) against an independent implementation, RustCrypto `aes-gcm`:
    /// the same ciphertext and tag for any key, nonce, AAD and payload, and each opens the
    /// other's output.
    #[test]
    fn gcm_matches_rustcrypto_aes_gcm(
        key in proptest::collection::vec(any::<u8>(), 32),
        wide in any::<bool>(),
        nonce in any::<[u8; 12]>(),
        aad in proptest::collection::vec(any::<u8>(), 0..80),
        payload in proptest::collection::vec(any::<u8>(), 0..1500),
    ) {
        use aes_gcm::aead::AeadInOut;
        use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit};
        use pbx_edge::srtp::cipher::Gcm;

        let key = if wide { &key[..] } else { &key[..16] };
        let ours = Gcm::new(key).unwrap();
        let mut mine = payload.clone();
        let my_tag = ours.seal(&nonce, &aad, &mut mine).unwrap();

        let mut theirs = payload.clone();
        let their_tag: [u8; 16] = if wide {
            Aes256Gcm::new_from_slice(key).unwrap()
                .encrypt_inout_detached((&nonce).into(), &aad, theirs.as_mut_slice().into())
                .unwrap().into()
        } else {
            Aes128Gcm::new_from_slice(key).unwrap()
                .encrypt_inout_detached((&nonce).into(), &aad, theirs.as_mut_slice().into())
                .unwrap().into()
        };
        prop_assert_eq!(&mine, &theirs);
        prop_assert_eq!(my_tag, their_tag);

        prop_assert!(ours.open(&nonce, &aad, &mut theirs, &their_tag));
        prop_assert_eq!(&theirs, &payload);
        if !payload.is_empty() {
            mine[0] ^= 1;
            prop_assert!(!ours.open(&nonce, &aad, &mut mine, &my_tag));
        }
    }
}
