//! Known-answer and behaviour tests of `SrtpContext` (unit level; property tests live in
//! `tests/srtp_props.rs`).

use super::cipher::{gcm_iv, Gcm};
use super::*;

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

fn key(suite: CryptoSuite, fill: u8) -> MasterKey {
    MasterKey::generate(suite, |b| {
        for (i, x) in b.iter_mut().enumerate() {
            *x = fill.wrapping_add(i as u8);
        }
    })
}

fn pair(suite: CryptoSuite, opts: &ContextOptions) -> (SrtpContext, SrtpContext) {
    let k = key(suite, 7);
    (
        SrtpContext::new(&k, opts).unwrap(),
        SrtpContext::new(&k, opts).unwrap(),
    )
}

fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload_len).map(|i| i as u8));
    p
}

fn rtcp(ssrc: u32) -> Vec<u8> {
    // A sender report without report blocks (RFC 3550 §6.4.1), 28 octets.
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..20).map(|i| i as u8));
    p
}

fn protect(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + ctx.rtp_overhead(), 0);
    let n = ctx.protect_rtp(&mut buf, plain.len()).unwrap();
    assert_eq!(n, buf.len());
    buf
}

fn unprotect(ctx: &mut SrtpContext, srtp: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = srtp.to_vec();
    let n = ctx.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn protect_rtcp(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + ctx.rtcp_overhead(), 0);
    let n = ctx.protect_rtcp(&mut buf, plain.len()).unwrap();
    assert_eq!(n, buf.len());
    buf
}

fn unprotect_rtcp(ctx: &mut SrtpContext, srtcp: &[u8]) -> Result<(Vec<u8>, bool), SrtpError> {
    let mut buf = srtcp.to_vec();
    let r = ctx.unprotect_rtcp(&mut buf)?;
    buf.truncate(r.len);
    Ok((buf, r.unannounced_unencrypted))
}

/// libsrtp's own known answers (test/srtp_driver.c, RFC 3711 B.3 master key; RFC 6188 key),
/// AES_CM_128_HMAC_SHA1_80 and AES_256_CM_HMAC_SHA1_80, a full packet.
#[test]
fn aes_cm_packet_known_answers() {
    let cases = [
        (
            CryptoSuite::AesCm128HmacSha1_80,
            "e1f97a0d3e018be0d64fa32c06de4139",
            "0ec675ad498afeebb6960b3aabe6",
            "4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb",
        ),
        (
            CryptoSuite::Aes256CmHmacSha1_80,
            "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6",
            "3b04803de51ee7c96423ab5b78d2",
            "f1d9de17ff251ff1aa007774b0b4b40da08d9d9a5b3a55d8873b",
        ),
    ];
    for (suite, k, s, expected_tail) in cases {
        let mk = MasterKey::new(suite, &hex(k), &hex(s)).unwrap();
        let mut tx = SrtpContext::new(&mk, &ContextOptions::default()).unwrap();
        let mut rx = SrtpContext::new(&mk, &ContextOptions::default()).unwrap();
        let mut plain = hex("800f1234decafbadcafebabe");
        plain.extend([0xab; 16]);
        let srtp = protect(&mut tx, &plain);
        let mut expected = hex("800f1234decafbadcafebabe");
        expected.extend(hex(expected_tail));
        assert_eq!(srtp, expected, "{suite}");
        assert_eq!(unprotect(&mut rx, &srtp).unwrap(), plain);
    }
}

const GCM_SALT: &str = "517569642070726f2071756f";
const GCM_RTP: &str = "8040f17b8041f8d35501a0b247616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573";

/// RFC 7714 §16.1.1 / §16.2.1: SRTP AEAD_AES_128_GCM and AEAD_AES_256_GCM encryption, and
/// the matching decryption (§16.1.2 / §16.2.2), at the session-key level.
#[test]
fn rfc7714_rtp_vectors() {
    let salt: [u8; 12] = hex(GCM_SALT).try_into().unwrap();
    let cases = [
        (
            "000102030405060708090a0b0c0d0e0f",
            "f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce",
        ),
        (
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "32b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a0276ffae0f1ba63799b87b7aa3db36dfffd6b0f9bb7878d7a76c13",
        ),
    ];
    for (k, ct) in cases {
        let gcm = Gcm::new(&hex(k)).unwrap();
        let pkt = hex(GCM_RTP);
        let (aad, pt) = pkt.split_at(12);
        let iv = gcm_iv(&salt, 0x5501a0b2, 0xf17b);
        let mut data = pt.to_vec();
        let tag = gcm.seal(&iv, aad, &mut data).unwrap();
        data.extend(tag);
        assert_eq!(data, hex(ct));
        let mut data = hex(ct);
        let tag = data.split_off(data.len() - 16);
        assert!(gcm.open(&iv, aad, &mut data, &tag));
        assert_eq!(data, pt);
        let mut bad = tag.clone();
        bad[0] ^= 1;
        assert!(!gcm.open(&iv, aad, &mut hex(ct)[..pt.len()].to_vec(), &bad));
    }
}

/// RFC 7714 §17.1.1 (SRTCP AEAD_AES_128_GCM encryption) and §17.2.2 (AEAD_AES_256_GCM
/// decryption): SRTCP index 0x5d4, E=1.
#[test]
fn rfc7714_rtcp_vectors() {
    let salt: [u8; 12] = hex(GCM_SALT).try_into().unwrap();
    let rtcp = hex("81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef");
    let iv = gcm_iv(&salt, 0x4d617273, 0x5d4);
    let word = (0x8000_05d4u32).to_be_bytes();
    let mut aad = rtcp[..8].to_vec();
    aad.extend(word);

    let gcm128 = Gcm::new(&hex("000102030405060708090a0b0c0d0e0f")).unwrap();
    let mut out = rtcp.clone();
    let tag = gcm128.seal(&iv, &aad, &mut out[8..]).unwrap();
    out.extend(tag);
    out.extend(word);
    assert_eq!(out, hex("81c8000d4d61727363e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf87245d9eade800005d4"));

    let gcm256 = Gcm::new(&hex(
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    ))
    .unwrap();
    let srtcp = hex("81c8000d4d617273d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be8415f658c61de0476f1b6fad1d1eb30c4446839f57ff6f6cb26ac3be800005d4");
    let body_end = srtcp.len() - 20;
    let mut data = srtcp[8..body_end].to_vec();
    assert!(gcm256.open(&iv, &aad, &mut data, &srtcp[body_end..body_end + 16]));
    assert_eq!(data, rtcp[8..]);
}

#[test]
fn roundtrip_every_suite_rtp_and_rtcp_with_mki() {
    for suite in CryptoSuite::ALL {
        for mki in [None, Mki::new(0xabcdef, 3)] {
            let opts = ContextOptions {
                mki,
                ..ContextOptions::default()
            };
            let (mut tx, mut rx) = pair(suite, &opts);
            for seq in [65530u16, 65535, 0, 1, 2] {
                let p = rtp(seq, 0x1234, 160);
                let s = protect(&mut tx, &p);
                assert_eq!(
                    s.len(),
                    p.len() + suite.rtp_tag_len() + mki.map_or(0, |m| m.len())
                );
                assert_ne!(s[12..172], p[12..], "{suite} payload must be encrypted");
                assert_eq!(unprotect(&mut rx, &s).unwrap(), p, "{suite}");
            }
            for _ in 0..3 {
                let c = rtcp(0x1234);
                let s = protect_rtcp(&mut tx, &c);
                assert_ne!(s[8..28], c[8..]);
                assert_eq!(unprotect_rtcp(&mut rx, &s).unwrap(), (c, false), "{suite}");
            }
        }
    }
}

#[test]
fn new_ssrc_just_works_and_streams_are_independent() {
    let (mut tx, mut rx) = pair(CryptoSuite::AesCm128HmacSha1_80, &ContextOptions::default());
    for ssrc in [1u32, 2, 3] {
        for seq in 100..110u16 {
            let p = rtp(seq, ssrc, 20);
            assert_eq!(unprotect(&mut rx, &protect(&mut tx, &p)).unwrap(), p);
        }
    }
}

#[test]
fn replayed_and_too_old_refused() {
    let (mut tx, mut rx) = pair(CryptoSuite::AeadAes128Gcm, &ContextOptions::default());
    let packets: Vec<_> = (0..300u16)
        .map(|s| protect(&mut tx, &rtp(s, 9, 10)))
        .collect();
    unprotect(&mut rx, &packets[0]).unwrap();
    assert_eq!(unprotect(&mut rx, &packets[0]), Err(SrtpError::Replayed));
    unprotect(&mut rx, &packets[299]).unwrap();
    // 299 - 171 = 128: just outside a 128-packet window; 172 is just inside.
    assert_eq!(unprotect(&mut rx, &packets[171]), Err(SrtpError::TooOld));
    unprotect(&mut rx, &packets[172]).unwrap();
    assert_eq!(unprotect(&mut rx, &packets[172]), Err(SrtpError::Replayed));

    let c = protect_rtcp(&mut tx, &rtcp(9));
    unprotect_rtcp(&mut rx, &c).unwrap();
    assert_eq!(unprotect_rtcp(&mut rx, &c), Err(SrtpError::Replayed));
}

#[test]
fn larger_window_is_configurable() {
    let opts = ContextOptions {
        replay_window: 1000,
        ..ContextOptions::default()
    };
    let (mut tx, mut rx) = pair(CryptoSuite::AesCm128HmacSha1_32, &opts);
    let packets: Vec<_> = (0..1100u16)
        .map(|s| protect(&mut tx, &rtp(s, 9, 10)))
        .collect();
    unprotect(&mut rx, &packets[1099]).unwrap();
    unprotect(&mut rx, &packets[100]).unwrap(); // 999 behind: inside a 1024 window
    assert_eq!(unprotect(&mut rx, &packets[50]), Err(SrtpError::TooOld));
    for bad in [0usize, 64, 2048] {
        let o = ContextOptions {
            replay_window: bad,
            ..ContextOptions::default()
        };
        assert_eq!(
            SrtpContext::new(&key(CryptoSuite::AesCm128HmacSha1_80, 1), &o).unwrap_err(),
            SrtpError::InvalidOptions
        );
    }
}

#[test]
fn wrap_with_loss_and_reordering() {
    let (mut tx, mut rx) = pair(CryptoSuite::AesCm128HmacSha1_80, &ContextOptions::default());
    let seqs: Vec<u16> = (0..200u32).map(|i| (65400 + i) as u16).collect();
    let packets: Vec<_> = seqs
        .iter()
        .map(|&s| protect(&mut tx, &rtp(s, 5, 30)))
        .collect();
    // Deliver with losses and swaps around the wrap.
    let mut order: Vec<usize> = (0..200).filter(|i| i % 7 != 3).collect();
    for i in (0..order.len() - 1).step_by(5) {
        order.swap(i, i + 1);
    }
    for i in order {
        assert_eq!(
            unprotect(&mut rx, &packets[i]).unwrap(),
            rtp(seqs[i], 5, 30),
            "seq {}",
            seqs[i]
        );
    }
}

#[test]
fn any_tamper_fails_auth() {
    for suite in [CryptoSuite::AesCm128HmacSha1_32, CryptoSuite::AeadAes256Gcm] {
        let (mut tx, mut rx) = pair(suite, &ContextOptions::default());
        let s = protect(&mut tx, &rtp(1, 1, 40));
        for byte in [1usize, 4, 12, 30, s.len() - 1] {
            let mut t = s.clone();
            t[byte] ^= 0x10;
            assert_eq!(
                unprotect(&mut rx, &t),
                Err(SrtpError::AuthFailed),
                "{suite} byte {byte}"
            );
        }
        // The untouched packet still passes afterwards: failures change no state.
        assert!(unprotect(&mut rx, &s).is_ok());
    }
}

#[test]
fn mki_checked() {
    let k = key(CryptoSuite::AesCm128HmacSha1_80, 3);
    let mut tx = SrtpContext::new(
        &k,
        &ContextOptions {
            mki: Mki::new(1, 2),
            ..Default::default()
        },
    )
    .unwrap();
    let mut rx = SrtpContext::new(
        &k,
        &ContextOptions {
            mki: Mki::new(2, 2),
            ..Default::default()
        },
    )
    .unwrap();
    let s = protect(&mut tx, &rtp(1, 1, 40));
    assert_eq!(&s[52..54], &[0, 1]);
    assert_eq!(unprotect(&mut rx, &s), Err(SrtpError::UnknownMki));
    let c = protect_rtcp(&mut tx, &rtcp(1));
    assert_eq!(unprotect_rtcp(&mut rx, &c), Err(SrtpError::UnknownMki));
}

#[test]
fn lifetime_enforced() {
    let opts = ContextOptions {
        lifetime: Some(3),
        ..ContextOptions::default()
    };
    let (mut tx, mut rx) = pair(CryptoSuite::AeadAes128Gcm, &opts);
    let packets: Vec<_> = (0..3u16)
        .map(|s| protect(&mut tx, &rtp(s, 1, 10)))
        .collect();
    let mut buf = rtp(3, 1, 10);
    buf.resize(100, 0);
    assert_eq!(tx.protect_rtp(&mut buf, 22), Err(SrtpError::KeyExpired));
    for p in &packets {
        unprotect(&mut rx, p).unwrap();
    }
    assert_eq!(unprotect(&mut rx, &packets[0]), Err(SrtpError::KeyExpired));
    // SRTCP has its own budget under the same lifetime.
    for _ in 0..3 {
        let c = protect_rtcp(&mut tx, &rtcp(1));
        unprotect_rtcp(&mut rx, &c).unwrap();
    }
    let mut buf = rtcp(1);
    buf.resize(100, 0);
    assert_eq!(tx.protect_rtcp(&mut buf, 28), Err(SrtpError::KeyExpired));
}

#[test]
fn unencrypted_srtcp_and_cisco_quirk() {
    for suite in [CryptoSuite::AesCm128HmacSha1_80, CryptoSuite::AeadAes256Gcm] {
        let k = key(suite, 9);
        let plain_opts = ContextOptions {
            unencrypted_srtcp: true,
            ..Default::default()
        };
        let mut tx = SrtpContext::new(&k, &plain_opts).unwrap();
        let c = protect_rtcp(&mut tx, &rtcp(7));
        assert_eq!(
            c[..28],
            rtcp(7)[..],
            "{suite}: E=0 leaves the payload clear"
        );

        // Announced: accepted silently.
        let mut rx = SrtpContext::new(&k, &plain_opts).unwrap();
        assert_eq!(unprotect_rtcp(&mut rx, &c).unwrap(), (rtcp(7), false));

        // Not announced: refused by default...
        let mut rx = SrtpContext::new(&k, &ContextOptions::default()).unwrap();
        assert_eq!(
            unprotect_rtcp(&mut rx, &c),
            Err(SrtpError::UnencryptedSrtcpRefused)
        );
        // ...accepted and flagged with the quirk option, but only when the tag verifies.
        let quirk = ContextOptions {
            danger_accept_unannounced_unencrypted_srtcp: true,
            ..Default::default()
        };
        let mut rx = SrtpContext::new(&k, &quirk).unwrap();
        let mut bad = c.clone();
        bad[10] ^= 1;
        assert_eq!(unprotect_rtcp(&mut rx, &bad), Err(SrtpError::AuthFailed));
        assert_eq!(unprotect_rtcp(&mut rx, &c).unwrap(), (rtcp(7), true));
    }
}

#[test]
fn unencrypted_srtp_authenticates_only() {
    let opts = ContextOptions {
        unencrypted_srtp: true,
        ..Default::default()
    };
    let (mut tx, mut rx) = pair(CryptoSuite::AesCm128HmacSha1_80, &opts);
    let p = rtp(1, 1, 20);
    let s = protect(&mut tx, &p);
    assert_eq!(s[..32], p[..]);
    let mut t = s.clone();
    t[20] ^= 1;
    assert_eq!(unprotect(&mut rx, &t), Err(SrtpError::AuthFailed));
    assert_eq!(unprotect(&mut rx, &s).unwrap(), p);
    let aead = SrtpContext::new(&key(CryptoSuite::AeadAes128Gcm, 1), &opts);
    assert_eq!(aead.unwrap_err(), SrtpError::InvalidOptions);
}

#[test]
fn malformed_and_short_buffers() {
    let (mut tx, mut rx) = pair(CryptoSuite::AesCm128HmacSha1_80, &ContextOptions::default());
    let p = rtp(1, 1, 20);
    let mut buf = p.clone();
    buf.resize(p.len() + 9, 0);
    assert_eq!(
        tx.protect_rtp(&mut buf, p.len()),
        Err(SrtpError::BufferTooSmall)
    );
    assert_eq!(
        tx.protect_rtp(&mut buf, 1000),
        Err(SrtpError::BufferTooSmall)
    );
    let mut v1 = p.clone();
    v1[0] = 0x40;
    v1.resize(p.len() + 10, 0);
    assert_eq!(tx.protect_rtp(&mut v1, p.len()), Err(SrtpError::Malformed));
    // Header extension claiming more words than the packet has.
    let mut ext = vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 50];
    ext.resize(ext.len() + 10, 0);
    assert_eq!(tx.protect_rtp(&mut ext, 16), Err(SrtpError::Malformed));
    assert_eq!(rx.unprotect_rtp(&mut [0x80; 21]), Err(SrtpError::Malformed));
    assert_eq!(
        rx.unprotect_rtcp(&mut [0x80; 21]),
        Err(SrtpError::Malformed)
    );
    assert_eq!(rx.unprotect_rtp(&mut []), Err(SrtpError::Malformed));
}

#[test]
fn labels_are_distinct() {
    let all = [
        SrtpError::InvalidOptions,
        SrtpError::BufferTooSmall,
        SrtpError::Malformed,
        SrtpError::UnknownMki,
        SrtpError::AuthFailed,
        SrtpError::Replayed,
        SrtpError::TooOld,
        SrtpError::KeyExpired,
        SrtpError::UnencryptedSrtcpRefused,
        SrtpError::TooManyStreams,
    ];
    let labels: std::collections::HashSet<_> = all.iter().map(|e| e.label()).collect();
    assert_eq!(labels.len(), all.len());
}

#[test]
fn from_sdes_maps_params() {
    let attr = CryptoAttribute::parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4 UNENCRYPTED_SRTCP WSH=512",
    )
    .unwrap();
    let o = ContextOptions::from_sdes(&attr.keys[0], &attr.session_params);
    assert_eq!(o.mki, Mki::new(1, 4));
    assert_eq!(o.lifetime, Some(1 << 20));
    assert_eq!(o.replay_window, 512);
    assert!(o.unencrypted_srtcp && !o.unencrypted_srtp);
    assert!(SrtpContext::new(&attr.keys[0].master_key, &o).is_ok());
}

#[test]
fn protect_refuses_keystream_reuse() {
    let (mut tx, mut rx) = pair(CryptoSuite::AesCm128HmacSha1_80, &ContextOptions::default());
    let first = protect(&mut tx, &rtp(10, 1, 20));
    protect(&mut tx, &rtp(12, 1, 20));
    // A late, never-sent index is fine; a repeated one is not, whatever the payload.
    protect(&mut tx, &rtp(11, 1, 20));
    let mut again = rtp(10, 1, 30);
    again.resize(60, 0);
    assert_eq!(tx.protect_rtp(&mut again, 42), Err(SrtpError::Replayed));
    assert_eq!(unprotect(&mut rx, &first).unwrap(), rtp(10, 1, 20));
}

#[test]
fn context_is_send() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<SrtpContext>();
}

#[test]
fn failed_packets_never_create_streams() {
    let opts = ContextOptions {
        max_streams: 2,
        ..ContextOptions::default()
    };
    let (mut tx, mut rx) = pair(CryptoSuite::AesCm128HmacSha1_80, &opts);
    let p1 = protect(&mut tx, &rtp(500, 1, 20));
    unprotect(&mut rx, &p1).unwrap();
    // Forged packets from other SSRCs fail authentication...
    for seq in 0..50u16 {
        let mut forged = rtp(seq, 2 + u32::from(seq), 30);
        forged.resize(42, 0xee);
        assert_eq!(unprotect(&mut rx, &forged), Err(SrtpError::AuthFailed));
    }
    // ...and took no slot: a genuine second SSRC still fits, SSRC 1 kept its replay state.
    let p3 = protect(&mut tx, &rtp(7, 3, 20));
    assert!(unprotect(&mut rx, &p3).is_ok());
    assert_eq!(unprotect(&mut rx, &p1), Err(SrtpError::Replayed));
}

#[test]
fn a_sender_beyond_its_ssrc_cap_refuses_new_ssrcs_and_never_restarts_a_roc() {
    let opts = ContextOptions {
        max_streams: 2,
        ..ContextOptions::default()
    };
    for suite in [CryptoSuite::AesCm128HmacSha1_80, CryptoSuite::AeadAes128Gcm] {
        let (mut tx, _) = pair(suite, &opts);
        // SSRC 0xa runs past a sequence wrap: its ROC is 1.
        for seq in [65534u16, 65535, 0, 1] {
            protect(&mut tx, &rtp(seq, 0xa, 10));
        }
        protect(&mut tx, &rtp(1, 0xb, 10));
        let plain = rtp(1, 0xc, 10);
        let mut buf = plain.clone();
        buf.resize(plain.len() + tx.rtp_overhead(), 0);
        assert_eq!(
            tx.protect_rtp(&mut buf, plain.len()),
            Err(SrtpError::TooManyStreams),
            "{suite:?}: a third SSRC is refused, not given an evicted slot"
        );
        // 0xa was not forgotten: its index (ROC 1, seq 1) stays used, so protecting it again
        // is refused instead of encrypting under the keystream of index 65537 a second time.
        let plain = rtp(1, 0xa, 10);
        let mut again = plain.clone();
        again.resize(plain.len() + tx.rtp_overhead(), 0);
        assert_eq!(
            tx.protect_rtp(&mut again, plain.len()),
            Err(SrtpError::Replayed),
            "{suite:?}"
        );
        // SRTCP senders likewise: the third SSRC is refused.
        protect_rtcp(&mut tx, &rtcp(0xa));
        protect_rtcp(&mut tx, &rtcp(0xb));
        let plain = rtcp(0xc);
        let mut buf = plain.clone();
        buf.resize(plain.len() + tx.rtcp_overhead(), 0);
        assert_eq!(
            tx.protect_rtcp(&mut buf, plain.len()),
            Err(SrtpError::TooManyStreams),
            "{suite:?}"
        );
    }
}

#[test]
fn a_receiver_beyond_its_ssrc_cap_refuses_new_ssrcs_and_keeps_every_replay_window() {
    let opts = ContextOptions {
        max_streams: 2,
        ..ContextOptions::default()
    };
    let big = ContextOptions {
        max_streams: 8,
        ..ContextOptions::default()
    };
    let suite = CryptoSuite::AeadAes128Gcm;
    let (mut tx, _) = pair(suite, &big);
    let (_, mut rx) = pair(suite, &opts);
    let a = protect(&mut tx, &rtp(1, 0xa, 10));
    let b = protect(&mut tx, &rtp(1, 0xb, 10));
    let c = protect(&mut tx, &rtp(1, 0xc, 10));
    unprotect(&mut rx, &a).unwrap();
    unprotect(&mut rx, &b).unwrap();
    assert_eq!(unprotect(&mut rx, &c), Err(SrtpError::TooManyStreams));
    // Nothing was evicted: a replay of 0xa's packet is still caught.
    assert_eq!(unprotect(&mut rx, &a), Err(SrtpError::Replayed));
    assert_eq!(unprotect(&mut rx, &b), Err(SrtpError::Replayed));
    // SRTCP receivers likewise.
    let ra = protect_rtcp(&mut tx, &rtcp(0xa));
    let rb = protect_rtcp(&mut tx, &rtcp(0xb));
    let rc = protect_rtcp(&mut tx, &rtcp(0xc));
    unprotect_rtcp(&mut rx, &ra).unwrap();
    unprotect_rtcp(&mut rx, &rb).unwrap();
    assert_eq!(unprotect_rtcp(&mut rx, &rc), Err(SrtpError::TooManyStreams));
    assert_eq!(unprotect_rtcp(&mut rx, &ra), Err(SrtpError::Replayed));
}

fn key_params(suite: CryptoSuite, fill: u8, mki: Option<Mki>, lifetime: Option<u64>) -> KeyParams {
    KeyParams {
        master_key: key(suite, fill),
        lifetime,
        mki,
    }
}

#[test]
fn several_keys_selected_by_mki_and_used_in_order() {
    let suite = CryptoSuite::AesCm128HmacSha1_80;
    let keys = [
        key_params(suite, 1, Mki::new(1, 1), Some(2)),
        key_params(suite, 2, Mki::new(2, 1), None),
    ];
    let opts = ContextOptions::default();
    let mut tx = SrtpContext::with_keys(&keys, &opts).unwrap();
    let mut rx = SrtpContext::with_keys(&keys, &opts).unwrap();
    // Key 1 has a lifetime of 2 packets; the third packet goes out under key 2.
    let packets: Vec<_> = (0..4u16)
        .map(|s| protect(&mut tx, &rtp(s, 3, 20)))
        .collect();
    let mki_at = 32;
    assert_eq!(
        [
            packets[0][mki_at],
            packets[1][mki_at],
            packets[2][mki_at],
            packets[3][mki_at]
        ],
        [1, 1, 2, 2]
    );
    // The receiver picks each packet's key by its MKI, in any order.
    for i in [3usize, 0, 2, 1] {
        assert_eq!(
            unprotect(&mut rx, &packets[i]).unwrap(),
            rtp(i as u16, 3, 20)
        );
    }
    // A single-key receiver holding only key 2 knows nothing of MKI 1.
    let mut only2 = SrtpContext::with_keys(&keys[1..], &opts).unwrap();
    assert_eq!(
        unprotect(&mut only2, &packets[0]),
        Err(SrtpError::UnknownMki)
    );
    assert_eq!(unprotect(&mut only2, &packets[2]).unwrap(), rtp(2, 3, 20));
    // RTCP follows its own budget (also 2 under key 1) and MKI.
    let c: Vec<_> = (0..3).map(|_| protect_rtcp(&mut tx, &rtcp(3))).collect();
    assert_eq!(c[2][28 + 4], 2);
    for p in &c {
        assert_eq!(unprotect_rtcp(&mut rx, p).unwrap().0, rtcp(3));
    }
}

#[test]
fn several_keys_validated() {
    let s = CryptoSuite::AesCm128HmacSha1_80;
    let opts = ContextOptions::default();
    let bad: [&[KeyParams]; 4] = [
        &[],
        &[key_params(s, 1, None, None), key_params(s, 2, None, None)],
        &[
            key_params(s, 1, Mki::new(1, 1), None),
            key_params(s, 2, Mki::new(1, 1), None),
        ],
        &[
            key_params(s, 1, Mki::new(1, 1), None),
            key_params(s, 2, Mki::new(2, 2), None),
        ],
    ];
    for keys in bad {
        assert_eq!(
            SrtpContext::with_keys(keys, &opts).unwrap_err(),
            SrtpError::InvalidOptions
        );
    }
    let mixed = [
        key_params(s, 1, Mki::new(1, 1), None),
        key_params(CryptoSuite::AesCm128HmacSha1_32, 2, Mki::new(2, 1), None),
    ];
    assert_eq!(
        SrtpContext::with_keys(&mixed, &opts).unwrap_err(),
        SrtpError::InvalidOptions
    );
    // All keys exhausted: KeyExpired.
    let keys = [
        key_params(s, 1, Mki::new(1, 1), Some(1)),
        key_params(s, 2, Mki::new(2, 1), Some(1)),
    ];
    let mut tx = SrtpContext::with_keys(&keys, &opts).unwrap();
    protect(&mut tx, &rtp(1, 1, 10));
    protect(&mut tx, &rtp(2, 1, 10));
    let mut buf = rtp(3, 1, 10);
    buf.resize(60, 0);
    assert_eq!(tx.protect_rtp(&mut buf, 22), Err(SrtpError::KeyExpired));
}

/// RFC 4568 §9.1 allows MKIs of up to 128 octets (`|1:32` is common): every suite protects and
/// unprotects RTP and RTCP with them, the MKI sits where RFC 3711 §3.1 / RFC 7714 §8 put it,
/// a packet naming another MKI is refused, and the trailer fits `MAX_TRAILER_LEN`.
#[test]
fn long_mkis_roundtrip_every_suite() {
    for suite in CryptoSuite::ALL {
        for len in [5u8, 16, 17, 32, 128] {
            let mki = Mki::new(1, len).unwrap();
            let opts = ContextOptions {
                mki: Some(mki),
                ..ContextOptions::default()
            };
            let (mut tx, mut rx) = pair(suite, &opts);
            assert!(tx.rtp_overhead() <= MAX_TRAILER_LEN);
            assert!(tx.rtcp_overhead() <= MAX_TRAILER_LEN);
            let p = rtp(100, 0x55, 160);
            let s = protect(&mut tx, &p);
            let n = usize::from(len);
            assert_eq!(s.len(), p.len() + suite.rtp_tag_len() + n);
            let mki_at = if suite.is_aead() {
                p.len() + suite.rtp_tag_len()
            } else {
                p.len()
            };
            let wire = &s[mki_at..mki_at + n];
            assert!(wire[..n - 1].iter().all(|&b| b == 0), "{suite} {len}");
            assert_eq!(wire[n - 1], 1, "{suite} {len}");
            assert_eq!(unprotect(&mut rx, &s).unwrap(), p, "{suite} {len}");

            // The same packet under MKI 2 is not this key's (and the MKI is not covered by
            // the tag, so only the MKI check can refuse it).
            let (mut tx2, _) = pair(suite, &opts);
            let mut other = protect(&mut tx2, &rtp(101, 0x55, 160));
            other[mki_at + n - 1] = 2;
            assert_eq!(unprotect(&mut rx, &other), Err(SrtpError::UnknownMki));

            let c = rtcp(0x55);
            let sc = protect_rtcp(&mut tx, &c);
            assert_eq!(sc.len(), c.len() + tx.rtcp_overhead());
            assert_eq!(unprotect_rtcp(&mut rx, &sc).unwrap().0, c, "{suite} {len}");
        }
    }
}
