#![cfg(feature = "interop")]
//! Cross-check against libsrtp 2.5 (the reference implementation), driven from Debian's
//! `/usr/bin/python3`: through `python3-pylibsrtp` for the suites it has profiles for
//! (AES_CM_128_HMAC_SHA1_80/_32, AEAD_AES_128/256_GCM) and through `ctypes` on the same
//! `libsrtp2.so.1` for AES_192/256_CM_HMAC_SHA1_80/_32. For every suite, RTP and RTCP, both
//! directions:
//! sequence numbers start at 65500 so the ROC wraps, packets are delivered with loss and
//! reordering, and a replayed packet must be rejected by both implementations.
//!
//! The Python side runs one batch: it reads commands (`rtp_protect HEX`, `rtp_unprotect
//! HEX`, `rtcp_protect HEX`, `rtcp_unprotect HEX`) from a file and writes one answer line per
//! command (`ok HEX` / `err TEXT`, TEXT being libsrtp's own error string) to another file. The
//! child is bounded in time and killed by its PID if it overruns.
//!
//! A tampered packet is always one whose index was never delivered before: otherwise the
//! replay check (RFC 3711 §3.3.2) rejects it before the tag is ever looked at, and the test
//! would pass even with authentication switched off. Each side must report exactly an
//! authentication failure, and the genuine packet with that index must still be accepted
//! afterwards (a packet that failed authentication must not move the replay window).

#[path = "support/rtp.rs"]
mod rtp;
use rtp::voice;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pbx_edge::srtp::cipher::{aes_cm_iv, AesCm, HmacSha1};
use pbx_edge::srtp::kdf::{derive, label};
use pbx_edge::srtp::{ContextOptions, CryptoSuite, MasterKey, SrtpContext, SrtpError};

const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = r#"
import sys, binascii, ctypes
backend, key_hex, cmd_path, out_path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
key = binascii.unhexlify(key_hex)
if backend.startswith("pylibsrtp:"):
    import pylibsrtp
    prof = getattr(pylibsrtp.Policy, backend.split(":")[1])
    tx = pylibsrtp.Session(policy=pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=prof))
    rx = pylibsrtp.Session(policy=pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=prof))
    ops = {"rtp_protect": tx.protect, "rtcp_protect": tx.protect_rtcp,
           "rtp_unprotect": rx.unprotect, "rtcp_unprotect": rx.unprotect_rtcp}
else:
    # ctypes straight into libsrtp2 for suites pylibsrtp has no profile for (AES-192/256-CM).
    # ctypes:RTP_SETTER:RTCP_SETTER[:RTP_SEC_SERV:RTCP_SEC_SERV] (sec_serv 2 = auth only)
    # ctypes-mki:RTP_SETTER:RTCP_SETTER:MKI_HEX (one master key carrying that MKI)
    parts = backend.split(":")
    rtp_setter, rtcp_setter = parts[1], parts[2]
    mki = binascii.unhexlify(parts[3]) if parts[0] == "ctypes-mki" else None
    serv = [] if mki is not None else [int(x) for x in parts[3:5]]
    lib = ctypes.CDLL("libsrtp2.so.1")
    class CP(ctypes.Structure):
        _fields_ = [("cipher_type", ctypes.c_uint32), ("cipher_key_len", ctypes.c_int),
                    ("auth_type", ctypes.c_uint32), ("auth_key_len", ctypes.c_int),
                    ("auth_tag_len", ctypes.c_int), ("sec_serv", ctypes.c_int)]
    class Policy(ctypes.Structure):
        _fields_ = [("ssrc_type", ctypes.c_int), ("ssrc_value", ctypes.c_uint), ("rtp", CP), ("rtcp", CP),
                    ("key", ctypes.c_char_p), ("keys", ctypes.c_void_p), ("num_master_keys", ctypes.c_ulong),
                    ("deprecated_ekt", ctypes.c_void_p), ("window_size", ctypes.c_ulong),
                    ("allow_repeat_tx", ctypes.c_int), ("enc_xtn_hdr", ctypes.c_void_p),
                    ("enc_xtn_hdr_count", ctypes.c_int), ("next", ctypes.c_void_p)]
    class MasterKey(ctypes.Structure):
        _fields_ = [("key", ctypes.c_char_p), ("mki_id", ctypes.c_char_p), ("mki_size", ctypes.c_uint)]
    assert lib.srtp_init() == 0
    keybuf = ctypes.create_string_buffer(key, 64)
    if mki is not None:
        mkibuf = ctypes.create_string_buffer(mki, len(mki))
        master = MasterKey(ctypes.cast(keybuf, ctypes.c_char_p), ctypes.cast(mkibuf, ctypes.c_char_p), len(mki))
        masters = (ctypes.POINTER(MasterKey) * 1)(ctypes.pointer(master))
    def session(ssrc_type):
        p = Policy()
        p.ssrc_type = ssrc_type
        getattr(lib, "srtp_crypto_policy_set_" + rtp_setter)(ctypes.byref(p.rtp))
        getattr(lib, "srtp_crypto_policy_set_" + rtcp_setter)(ctypes.byref(p.rtcp))
        if serv:
            p.rtp.sec_serv, p.rtcp.sec_serv = serv
        if mki is None:
            p.key = ctypes.cast(keybuf, ctypes.c_char_p)
        else:
            p.key = None
            p.keys = ctypes.cast(masters, ctypes.c_void_p)
            p.num_master_keys = 1
        p.window_size = 128
        s = ctypes.c_void_p()
        assert lib.srtp_create(ctypes.byref(s), ctypes.byref(p)) == 0
        return s
    tx, rx = session(3), session(2)  # ssrc_any_outbound, ssrc_any_inbound
    # srtp_err_status_t values (srtp.h), spelled as pylibsrtp spells them.
    errors = {7: "authentication failure", 9: "replay check failed (bad index)",
              10: "replay check failed (index too old)"}
    def op(fn, sess, *extra):
        def run(data):
            buf = ctypes.create_string_buffer(data, len(data) + 256)
            n = ctypes.c_int(len(data))
            rc = fn(sess, buf, ctypes.byref(n), *extra)
            if rc != 0:
                raise RuntimeError(errors.get(rc, "srtp_err_status %d" % rc))
            return buf.raw[:n.value]
        return run
    if mki is None:
        ops = {"rtp_protect": op(lib.srtp_protect, tx), "rtcp_protect": op(lib.srtp_protect_rtcp, tx),
               "rtp_unprotect": op(lib.srtp_unprotect, rx), "rtcp_unprotect": op(lib.srtp_unprotect_rtcp, rx)}
    else:
        # use_mki = 1, mki_index = 0
        ops = {"rtp_protect": op(lib.srtp_protect_mki, tx, 1, 0), "rtcp_protect": op(lib.srtp_protect_rtcp_mki, tx, 1, 0),
               "rtp_unprotect": op(lib.srtp_unprotect_mki, rx, 1), "rtcp_unprotect": op(lib.srtp_unprotect_rtcp_mki, rx, 1)}
with open(cmd_path) as cmds, open(out_path, "w") as out:
    for line in cmds:
        op_name, data = line.split()
        try:
            out.write("ok " + binascii.hexlify(ops[op_name](binascii.unhexlify(data))).decode() + "\n")
        except Exception as e:
            out.write("err " + type(e).__name__ + ": " + str(e) + "\n")
"#;

/// (our suite, how the Python side sets libsrtp up: a pylibsrtp profile, or the libsrtp
/// crypto-policy setters for RTP and RTCP called through ctypes).
///
/// AES_192_CM_* is not in this list: libsrtp up to 2.7 derives AES-192 session keys with the
/// AES-256 PRF over misaligned key bytes (cisco/libsrtp#763, fixed upstream in 2025 by
/// #765/#770); Debian's 2.5.0 has the bug, so it cannot interoperate with an RFC 6188 §7.4
/// implementation. `aes_192_divergence_is_libsrtp_763` below proves the difference is
/// exactly that bug, and `kdf::tests::rfc6188_kdf` pins our AES-192 PRF to the RFC.
const SUITES: [(CryptoSuite, &str); 6] = [
    (
        CryptoSuite::AesCm128HmacSha1_80,
        "pylibsrtp:SRTP_PROFILE_AES128_CM_SHA1_80",
    ),
    (
        CryptoSuite::AesCm128HmacSha1_32,
        "pylibsrtp:SRTP_PROFILE_AES128_CM_SHA1_32",
    ),
    (
        CryptoSuite::AeadAes128Gcm,
        "pylibsrtp:SRTP_PROFILE_AEAD_AES_128_GCM",
    ),
    (
        CryptoSuite::AeadAes256Gcm,
        "pylibsrtp:SRTP_PROFILE_AEAD_AES_256_GCM",
    ),
    (
        CryptoSuite::Aes256CmHmacSha1_80,
        "ctypes:aes_cm_256_hmac_sha1_80:aes_cm_256_hmac_sha1_80",
    ),
    (
        CryptoSuite::Aes256CmHmacSha1_32,
        "ctypes:aes_cm_256_hmac_sha1_32:aes_cm_256_hmac_sha1_80",
    ),
];

const PACKETS: usize = 120;
/// RTCP packets each side protects; the last one is delivered only tampered, then genuine.
const RTCP_PACKETS: u32 = 21;
const START_SEQ: u16 = 65500;
const SSRC: u32 = 0x5eed_0001;

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pbx-edge-srtp-interop-{}-{tag}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the Python batch and returns one `Result<bytes, error name>` per command.
fn libsrtp_batch(
    tag: &str,
    backend: &str,
    key: &MasterKey,
    cmds: &[(&str, Vec<u8>)],
) -> Vec<Result<Vec<u8>, String>> {
    let dir = scratch_dir(tag);
    let script = dir.join("drive.py");
    let cmd_path = dir.join("cmds.txt");
    let out_path = dir.join("out.txt");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut text = String::new();
    for (op, data) in cmds {
        writeln!(text, "{op} {}", hex::encode(data)).unwrap();
    }
    std::fs::write(&cmd_path, text).unwrap();
    let key_hex = format!("{}{}", hex::encode(key.key()), hex::encode(key.salt()));

    let mut child = Command::new(PYTHON)
        .arg(&script)
        .arg(backend)
        .arg(&key_hex)
        .arg(&cmd_path)
        .arg(&out_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn /usr/bin/python3 (python3-pylibsrtp installed?)");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap(); // this child only, by its handle (PID)
            let _ = child.wait();
            panic!("pylibsrtp batch timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "python failed: {stderr}");
    let out = std::fs::read_to_string(&out_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let answers: Vec<_> = out
        .lines()
        .map(|l| match l.split_once(' ') {
            Some(("ok", h)) => Ok(hex::decode(h).unwrap()),
            Some(("err", e)) => Err(e.to_string()),
            _ => panic!("bad answer line {l}"),
        })
        .collect();
    assert_eq!(answers.len(), cmds.len());
    answers
}

fn rtcp(n: u32) -> Vec<u8> {
    // Sender report, no report blocks (RFC 3550 §6.4.1).
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend_from_slice(&n.to_be_bytes());
    p.extend((0..16).map(|i| i as u8 ^ n as u8));
    p
}

/// An index `delivery_order` loses: its packet was never delivered, so a tampered copy reaches
/// the authentication check instead of being refused as a replay.
const LOST: usize = 112;

/// libsrtp's answer must be an authentication failure (`srtp_err_status_auth_fail`), not a
/// replay or any other refusal.
fn assert_auth_failure(answer: &Result<Vec<u8>, String>, what: &str) {
    match answer {
        Err(e) if e.ends_with(": authentication failure") => {}
        other => panic!("{what}: libsrtp must fail authentication, got {other:?}"),
    }
}

/// Delivery order: ~1 in 9 lost, neighbours swapped every 4th step, one late packet.
fn delivery_order(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).filter(|i| i % 9 != 4).collect();
    for i in (0..order.len() - 1).step_by(4) {
        order.swap(i, i + 1);
    }
    let late = order.remove(10);
    order.insert(30, late);
    order
}

fn key_for(suite: CryptoSuite) -> MasterKey {
    MasterKey::generate(suite, |b| {
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(29) ^ 0xa5;
        }
    })
}

#[test]
fn cross_check_with_libsrtp() {
    for (suite, backend) in SUITES {
        let key = key_for(suite);
        let mut ours_tx = SrtpContext::new(&key, &ContextOptions::default()).unwrap();
        let mut ours_rx = SrtpContext::new(&key, &ContextOptions::default()).unwrap();
        let seqs: Vec<u16> = (0..PACKETS)
            .map(|i| START_SEQ.wrapping_add(i as u16))
            .collect();
        let order = delivery_order(PACKETS);
        assert!(!order.contains(&LOST), "LOST must be a lost index");

        // ours -> libsrtp (RTP): protect in sequence, deliver lossy/reordered, then a replay.
        let protected: Vec<Vec<u8>> = seqs
            .iter()
            .map(|&s| {
                let mut b = voice(s, SSRC);
                let n = b.len();
                b.resize(n + ours_tx.rtp_overhead(), 0);
                let len = ours_tx.protect_rtp(&mut b, n).unwrap();
                b.truncate(len);
                b
            })
            .collect();
        let rtcp_protected: Vec<Vec<u8>> = (0..RTCP_PACKETS)
            .map(|i| {
                let mut b = rtcp(i);
                let n = b.len();
                b.resize(n + ours_tx.rtcp_overhead(), 0);
                let len = ours_tx.protect_rtcp(&mut b, n).unwrap();
                b.truncate(len);
                b
            })
            .collect();

        let mut cmds: Vec<(&str, Vec<u8>)> = Vec::new();
        for &i in &order {
            cmds.push(("rtp_unprotect", protected[i].clone()));
        }
        cmds.push(("rtp_unprotect", protected[order[5]].clone())); // replay
        let mut tampered = protected[LOST].clone();
        tampered[20] ^= 0x01; // one payload bit
        cmds.push(("rtp_unprotect", tampered));
        cmds.push(("rtp_unprotect", protected[LOST].clone())); // the genuine one, still fresh
        let last_rtcp = rtcp_protected.len() - 1;
        for p in rtcp_protected[..last_rtcp].iter().rev() {
            cmds.push(("rtcp_unprotect", p.clone())); // reversed order: all inside the window
        }
        cmds.push(("rtcp_unprotect", rtcp_protected[3].clone())); // replay
        let mut tampered = rtcp_protected[last_rtcp].clone();
        tampered[10] ^= 0x01; // inside the (encrypted) sender info
        cmds.push(("rtcp_unprotect", tampered));
        cmds.push(("rtcp_unprotect", rtcp_protected[last_rtcp].clone()));
        // libsrtp -> ours: plain packets for libsrtp to protect, in sequence.
        let first_protect = cmds.len();
        for &s in &seqs {
            cmds.push(("rtp_protect", voice(s, SSRC)));
        }
        let first_rtcp_protect = cmds.len();
        for i in 0..RTCP_PACKETS {
            cmds.push(("rtcp_protect", rtcp(i)));
        }

        let answers = libsrtp_batch(
            &suite.sdes_name().to_ascii_lowercase(),
            backend,
            &key,
            &cmds,
        );

        // libsrtp unprotected ours.
        for (k, &i) in order.iter().enumerate() {
            assert_eq!(
                answers[k].as_deref(),
                Ok(&voice(seqs[i], SSRC)[..]),
                "{suite}: libsrtp on our seq {}",
                seqs[i]
            );
        }
        let k = order.len();
        assert!(
            matches!(&answers[k], Err(e) if e.contains("replay check failed")),
            "{suite}: libsrtp on a replayed packet: {:?}",
            answers[k]
        );
        assert_auth_failure(&answers[k + 1], &format!("{suite}: tampered SRTP"));
        assert_eq!(
            answers[k + 2].as_deref(),
            Ok(&voice(seqs[LOST], SSRC)[..]),
            "{suite}: libsrtp on the genuine packet after its tampered copy"
        );
        let k = k + 3;
        let n = RTCP_PACKETS as usize - 1;
        for (j, a) in answers[k..k + n].iter().enumerate() {
            assert_eq!(
                a.as_deref(),
                Ok(&rtcp((n - 1 - j) as u32)[..]),
                "{suite}: libsrtp on our RTCP"
            );
        }
        assert!(
            matches!(&answers[k + n], Err(e) if e.contains("replay check failed")),
            "{suite}: libsrtp on a replayed SRTCP packet: {:?}",
            answers[k + n]
        );
        assert_auth_failure(&answers[k + n + 1], &format!("{suite}: tampered SRTCP"));
        assert_eq!(
            answers[k + n + 2].as_deref(),
            Ok(&rtcp(n as u32)[..]),
            "{suite}: libsrtp on the genuine SRTCP after its tampered copy"
        );

        // Ours unprotects libsrtp's.
        let theirs: Vec<Vec<u8>> = answers[first_protect..first_rtcp_protect]
            .iter()
            .map(|a| a.clone().expect("libsrtp protect"))
            .collect();
        for &i in &order {
            let mut b = theirs[i].clone();
            let n = ours_rx
                .unprotect_rtp(&mut b)
                .unwrap_or_else(|e| panic!("{suite}: ours on libsrtp seq {}: {e}", seqs[i]));
            assert_eq!(&b[..n], &voice(seqs[i], SSRC)[..]);
        }
        let mut again = theirs[order[5]].clone();
        assert_eq!(
            ours_rx.unprotect_rtp(&mut again),
            Err(SrtpError::Replayed),
            "{suite}"
        );
        let mut tampered = theirs[LOST].clone();
        tampered[20] ^= 0x01; // one payload bit of a never-delivered index
        assert_eq!(
            ours_rx.unprotect_rtp(&mut tampered),
            Err(SrtpError::AuthFailed),
            "{suite}: ours on tampered libsrtp SRTP"
        );
        let mut genuine = theirs[LOST].clone();
        let n = ours_rx
            .unprotect_rtp(&mut genuine)
            .unwrap_or_else(|e| panic!("{suite}: ours on the genuine packet after tampering: {e}"));
        assert_eq!(&genuine[..n], &voice(seqs[LOST], SSRC)[..]);

        let theirs_rtcp: Vec<Vec<u8>> = answers[first_rtcp_protect..]
            .iter()
            .map(|a| a.clone().expect("libsrtp protect_rtcp"))
            .collect();
        let (last_rtcp, theirs_rtcp) = theirs_rtcp.split_last().expect("RTCP answers");
        for (i, p) in theirs_rtcp.iter().enumerate().rev() {
            let mut b = p.clone();
            let r = ours_rx
                .unprotect_rtcp(&mut b)
                .unwrap_or_else(|e| panic!("{suite}: ours on libsrtp RTCP {i}: {e}"));
            assert_eq!(&b[..r.len], &rtcp(i as u32)[..]);
            assert!(!r.unannounced_unencrypted);
        }
        let mut again = theirs_rtcp[7].clone();
        assert_eq!(
            ours_rx.unprotect_rtcp(&mut again).map(|r| r.len),
            Err(SrtpError::Replayed),
            "{suite}"
        );
        let mut tampered = last_rtcp.clone();
        tampered[10] ^= 0x01;
        assert_eq!(
            ours_rx.unprotect_rtcp(&mut tampered).map(|r| r.len),
            Err(SrtpError::AuthFailed),
            "{suite}: ours on tampered libsrtp SRTCP"
        );
        let mut genuine = last_rtcp.clone();
        let r = ours_rx
            .unprotect_rtcp(&mut genuine)
            .unwrap_or_else(|e| panic!("{suite}: ours on genuine SRTCP after tampering: {e}"));
        assert_eq!(&genuine[..r.len], &rtcp(RTCP_PACKETS - 1)[..]);
    }
}

/// Debian's libsrtp 2.5 protects AES_192_CM_HMAC_SHA1_80 differently from us; this shows the
/// difference is exactly cisco/libsrtp#763: libsrtp keys its KDF as AES-256 with
/// `master_key(24) || master_salt[..8]` and uses `master_salt[8..] || 0^8` as the PRF salt.
/// Emulating that derivation with our primitives reproduces libsrtp's packet byte for byte,
/// while our context (RFC 6188 §7.4) does not.
#[test]
fn aes_192_divergence_is_libsrtp_763() {
    let suite = CryptoSuite::Aes192CmHmacSha1_80;
    let key = key_for(suite);
    let plain = voice(4711, SSRC);
    let answers = libsrtp_batch(
        "aes192-bug",
        "ctypes:aes_cm_192_hmac_sha1_80:aes_cm_192_hmac_sha1_80",
        &key,
        &[("rtp_protect", plain.clone())],
    );
    let theirs = answers[0].clone().expect("libsrtp protect");

    // libsrtp's (buggy) derivation, emulated.
    let mut kdf_key = key.key().to_vec();
    kdf_key.extend_from_slice(&key.salt()[..8]);
    let mut kdf_salt = key.salt()[8..].to_vec();
    kdf_salt.resize(14, 0);
    let prf = AesCm::new(&kdf_key).unwrap();
    let (mut enc, mut auth, mut salt) = ([0u8; 24], [0u8; 20], [0u8; 14]);
    derive(&prf, &kdf_salt, label::RTP_ENCRYPTION, &mut enc);
    derive(&prf, &kdf_salt, label::RTP_AUTH, &mut auth);
    derive(&prf, &kdf_salt, label::RTP_SALT, &mut salt);
    let mut emulated = plain.clone();
    AesCm::new(&enc)
        .unwrap()
        .apply_keystream(&aes_cm_iv(&salt, SSRC, 4711), &mut emulated[12..]);
    let tag = HmacSha1::new(&auth)
        .unwrap()
        .compute(&emulated, &0u32.to_be_bytes());
    emulated.extend_from_slice(&tag[..10]);
    assert_eq!(
        theirs, emulated,
        "libsrtp's AES-192 output is the #763 derivation"
    );

    let mut ours = SrtpContext::new(&key, &ContextOptions::default()).unwrap();
    let mut buf = plain.clone();
    buf.resize(plain.len() + 10, 0);
    let n = ours.protect_rtp(&mut buf, plain.len()).unwrap();
    assert_ne!(
        &buf[..n],
        &theirs[..],
        "ours follows RFC 6188, not libsrtp#763"
    );
}

/// `UNENCRYPTED_SRTCP` (E=0, authenticated only) and `UNENCRYPTED_SRTP` against libsrtp with
/// `sec_serv_auth`, for AES-CM and AES-GCM (RFC 7714: the whole packet becomes AAD), both
/// directions; plus the Cisco-SPA quirk path: libsrtp's E=0 SRTCP reaches a context that did
/// not negotiate it, which refuses by default and accepts-and-flags with the danger option.
#[test]
fn unencrypted_srtcp_and_srtp_with_libsrtp() {
    let cases = [
        (
            CryptoSuite::AesCm128HmacSha1_80,
            "ctypes:rtp_default:rtcp_default:2:2",
            true,
        ),
        (
            CryptoSuite::AeadAes128Gcm,
            "ctypes:aes_gcm_128_16_auth:aes_gcm_128_16_auth:3:2",
            false,
        ),
    ];
    for (suite, backend, unencrypted_rtp) in cases {
        let key = key_for(suite);
        let negotiated = ContextOptions {
            unencrypted_srtcp: true,
            unencrypted_srtp: unencrypted_rtp,
            ..ContextOptions::default()
        };
        let mut ours_tx = SrtpContext::new(&key, &negotiated).unwrap();
        let mut ours_rx = SrtpContext::new(&key, &negotiated).unwrap();

        let mut cmds: Vec<(&str, Vec<u8>)> = Vec::new();
        for i in 0..5u32 {
            cmds.push(("rtcp_protect", rtcp(i)));
        }
        cmds.push(("rtp_protect", voice(65535, SSRC)));
        let mut ours_rtcp = rtcp(9);
        let n = ours_rtcp.len();
        ours_rtcp.resize(n + ours_tx.rtcp_overhead(), 0);
        let len = ours_tx.protect_rtcp(&mut ours_rtcp, n).unwrap();
        ours_rtcp.truncate(len);
        assert_eq!(
            ours_rtcp[..n],
            rtcp(9)[..],
            "{suite}: E=0 leaves RTCP in clear"
        );
        cmds.push(("rtcp_unprotect", ours_rtcp));
        let mut ours_rtp = voice(100, SSRC);
        let n = ours_rtp.len();
        ours_rtp.resize(n + ours_tx.rtp_overhead(), 0);
        let len = ours_tx.protect_rtp(&mut ours_rtp, n).unwrap();
        ours_rtp.truncate(len);
        cmds.push(("rtp_unprotect", ours_rtp));

        let answers = libsrtp_batch(
            &format!("unenc-{}", suite.sdes_name()),
            backend,
            &key,
            &cmds,
        );
        assert_eq!(
            answers[6].as_deref(),
            Ok(&rtcp(9)[..]),
            "{suite}: libsrtp on our E=0 SRTCP"
        );
        assert_eq!(
            answers[7].as_deref(),
            Ok(&voice(100, SSRC)[..]),
            "{suite}: libsrtp on our SRTP"
        );

        let theirs: Vec<Vec<u8>> = answers[..5].iter().map(|a| a.clone().unwrap()).collect();
        for (i, p) in theirs.iter().enumerate() {
            assert_eq!(p[..28], rtcp(i as u32)[..], "{suite}: libsrtp sent E=0");
            // E|index sits last for GCM, before the 10-octet tag for AES-CM (RFC 3711 §3.4).
            let e_at = p.len()
                - 4
                - if suite.is_aead() {
                    0
                } else {
                    suite.rtcp_tag_len()
                };
            assert_eq!(p[e_at] & 0x80, 0, "{suite}: E flag clear");
            let mut b = p.clone();
            let r = ours_rx.unprotect_rtcp(&mut b).unwrap();
            assert_eq!(
                (&b[..r.len], r.unannounced_unencrypted),
                (&rtcp(i as u32)[..], false)
            );
        }
        let mut b = answers[5].clone().unwrap();
        if unencrypted_rtp {
            assert_eq!(
                b[..172],
                voice(65535, SSRC)[..],
                "{suite}: libsrtp sent clear SRTP"
            );
        }
        let n = ours_rx.unprotect_rtp(&mut b).unwrap();
        assert_eq!(&b[..n], &voice(65535, SSRC)[..]);

        // Cisco SPA quirk: E=0 although not negotiated.
        let mut strict = SrtpContext::new(&key, &ContextOptions::default()).unwrap();
        let mut b = theirs[0].clone();
        assert_eq!(
            strict.unprotect_rtcp(&mut b).map(|r| r.len),
            Err(SrtpError::UnencryptedSrtcpRefused)
        );
        let quirk = ContextOptions {
            danger_accept_unannounced_unencrypted_srtcp: true,
            ..ContextOptions::default()
        };
        let mut lenient = SrtpContext::new(&key, &quirk).unwrap();
        let mut b = theirs[1].clone();
        let r = lenient.unprotect_rtcp(&mut b).unwrap();
        assert!(r.unannounced_unencrypted, "{suite}: quirk must be reported");
        assert_eq!(&b[..r.len], &rtcp(1)[..]);
    }
}

/// RFC 4568 §9.1 MKIs up to 128 octets (libsrtp's `SRTP_MAX_MKI_LEN`): for MKIs of 4, 32 and
/// 128 octets (value 1, right-aligned), our protected RTP is byte for byte libsrtp's, and each
/// side unprotects the other's RTP and RTCP; a packet naming another MKI is refused by both.
#[test]
fn long_mkis_match_libsrtp() {
    use pbx_edge::srtp::Mki;
    let suites = [
        (CryptoSuite::AesCm128HmacSha1_80, "rtp_default:rtcp_default"),
        (
            CryptoSuite::AeadAes128Gcm,
            "aes_gcm_128_16_auth:aes_gcm_128_16_auth",
        ),
    ];
    for (suite, setters) in suites {
        for len in [4u8, 32, 128] {
            let mki = Mki::new(1, len).unwrap();
            let mut wire = vec![0u8; usize::from(len)];
            mki.write(&mut wire);
            let backend = format!("ctypes-mki:{setters}:{}", hex::encode(&wire));
            let key = key_for(suite);
            let opts = ContextOptions {
                mki: Some(mki),
                ..ContextOptions::default()
            };
            let mut ours_tx = SrtpContext::new(&key, &opts).unwrap();
            let mut ours_rx = SrtpContext::new(&key, &opts).unwrap();
            let protect = |ctx: &mut SrtpContext, plain: Vec<u8>, rtcp: bool| {
                let n = plain.len();
                let mut b = plain;
                b.resize(n + pbx_edge::srtp::MAX_TRAILER_LEN, 0);
                let len = if rtcp {
                    ctx.protect_rtcp(&mut b, n)
                } else {
                    ctx.protect_rtp(&mut b, n)
                }
                .unwrap();
                b.truncate(len);
                b
            };
            let ours: Vec<Vec<u8>> = (0..5u16)
                .map(|s| protect(&mut ours_tx, voice(1000 + s, SSRC), false))
                .collect();
            let ours_rtcp = protect(&mut ours_tx, rtcp(1), true);
            let mut other_mki = ours[4].clone();
            let at = other_mki.len()
                - if suite.is_aead() {
                    1
                } else {
                    1 + suite.rtp_tag_len()
                };
            other_mki[at] = 2;

            let mut cmds: Vec<(&str, Vec<u8>)> = Vec::new();
            for p in &ours[..4] {
                cmds.push(("rtp_unprotect", p.clone()));
            }
            cmds.push(("rtp_unprotect", other_mki));
            cmds.push(("rtcp_unprotect", ours_rtcp));
            for s in 0..5u16 {
                cmds.push(("rtp_protect", voice(1000 + s, SSRC)));
            }
            cmds.push(("rtcp_protect", rtcp(2)));
            let tag = format!("mki-{}-{len}", suite.sdes_name().to_ascii_lowercase());
            let answers = libsrtp_batch(&tag, &backend, &key, &cmds);

            for (s, a) in answers[..4].iter().enumerate() {
                assert_eq!(
                    a.as_deref(),
                    Ok(&voice(1000 + s as u16, SSRC)[..]),
                    "{suite} MKI {len}: libsrtp on ours"
                );
            }
            assert!(
                answers[4].is_err(),
                "{suite} MKI {len}: libsrtp took another MKI"
            );
            assert_eq!(answers[5].as_deref(), Ok(&rtcp(1)[..]), "{suite} MKI {len}");
            for s in 0..5usize {
                let theirs = answers[6 + s].clone().expect("libsrtp protect_mki");
                assert_eq!(theirs, ours[s], "{suite} MKI {len}: same bytes as libsrtp");
            }
            for s in [1usize, 0, 3] {
                let mut b = answers[6 + s].clone().unwrap();
                let n = ours_rx.unprotect_rtp(&mut b).unwrap();
                assert_eq!(&b[..n], &voice(1000 + s as u16, SSRC)[..]);
            }
            let mut b = answers[11].clone().expect("libsrtp protect_rtcp_mki");
            let r = ours_rx.unprotect_rtcp(&mut b).unwrap();
            assert_eq!(&b[..r.len], &rtcp(2)[..]);
        }
    }
}
