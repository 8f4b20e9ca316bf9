#![cfg(feature = "interop")]
//! Interop: the test "phone" is libsrtp (Debian python3-pylibsrtp via `/usr/bin/python3`).
//! It protects RTP/RTCP with the phone's key and sends it to the relay, across a sequence
//! number wrap (ROC 0 → 1); the test "PBX" must receive the plain packets byte-identical.
//! Back the other way, libsrtp must unprotect what our engine protected with the edge's key.
//! A replayed and a tampered packet from libsrtp are dropped and counted.
//!
//! Run: `cargo test --features interop --test media_libsrtp`.

#[path = "support/rtp.rs"]
mod rtp;
use rtp::rtp;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pbx_edge::media::control::PeerSpec;
use pbx_edge::media::stats::DropReason;
use pbx_edge::media::{MediaControl, RelaySettings, SrtpParams, StreamSpec, TransformSpec};
use pbx_edge::srtp::key::MasterKey;
use pbx_edge::srtp::suite::CryptoSuite;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PACKETS: u16 = 40;
const FIRST_SEQ: u16 = 65_520;

/// The libsrtp phone. Protocol on stdin/stdout, one line each:
/// -> "PORT <its udp port>"; then it sends PACKETS SRTP packets + 1 SRTCP + a replay + a
/// tampered packet to the relay, and prints "SENT"; on "RECV" from the test it receives PACKETS
/// SRTP packets and 1 SRTCP from the relay, unprotects each with libsrtp and prints its hex.
const PHONE: &str = r#"
import socket, sys
from pylibsrtp import Policy, Session
phone_key, edge_key, relay_port, n, first = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
prof = Policy.SRTP_PROFILE_AES128_CM_SHA1_80
tx = Session(policy=Policy(key=phone_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=prof))
rx = Session(policy=Policy(key=edge_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=prof))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(5)
print("PORT", s.getsockname()[1], flush=True)
relay = ("127.0.0.1", relay_port)
def rtp(seq, ssrc, fill):
    return bytes([0x80, 0]) + seq.to_bytes(2, "big") + (seq * 160 % 2**32).to_bytes(4, "big") + ssrc.to_bytes(4, "big") + bytes([fill]) * 160
first_srtp = None
for i in range(n):
    seq = (first + i) % 65536
    p = tx.protect(rtp(seq, 0x5157A001, i % 256))
    first_srtp = first_srtp or p
    s.sendto(p, relay)
rr = bytes([0x81, 201, 0, 7]) + (0x5157A001).to_bytes(4, "big") + bytes([0x42]) * 24
s.sendto(tx.protect_rtcp(rr), relay)
s.sendto(first_srtp, relay)
bad = bytearray(tx.protect(rtp((first + n) % 65536, 0x5157A001, 1)))
bad[20] ^= 1
s.sendto(bytes(bad), relay)
print("SENT", flush=True)
sys.stdin.readline()
for i in range(n):
    data, _ = s.recvfrom(2048)
    print(rx.unprotect(data).hex(), flush=True)
data, _ = s.recvfrom(2048)
print(rx.unprotect_rtcp(data).hex(), flush=True)
"#;

fn key(seed: u8) -> MasterKey {
    let bytes: Vec<u8> = (0..30u8)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i))
        .collect();
    MasterKey::from_key_salt(CryptoSuite::AesCm128HmacSha1_80, &bytes).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_range() -> (u16, u16) {
    for base in (46000u16..48000).step_by(16) {
        if (0..8).all(|i| UdpSocket::bind((LOOPBACK, base + i)).is_ok()) {
            return (base, base + 7);
        }
    }
    panic!("no free port range");
}

/// Kills the python phone by PID if the test fails midway.
struct Phone(Child);
impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn libsrtp_phone_through_relay_both_ways() {
    let (port_min, port_max) = free_range();
    let (tx, _events) = tokio::sync::mpsc::channel(64);
    let control = MediaControl::new(
        RelaySettings {
            phone_bind: LOOPBACK,
            pbx_bind: LOOPBACK,
            port_min,
            port_max,
            workers: 1,
            ..RelaySettings::default()
        },
        &prometheus::Registry::new(),
        tx,
    )
    .unwrap();
    let pbx = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    pbx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let phone_key = key(1);
    let edge_key = key(2);
    let handle = control
        .start(StreamSpec {
            // The phone's SDP address is unknown here: it is learned from its first
            // authenticated packet.
            // libsrtp's phone muxes RTCP on its RTP port (RFC 5761), so does the test PBX.
            phone: PeerSpec {
                rtcp_mux: true,
                ..PeerSpec::default()
            },
            pbx: PeerSpec {
                rtp: Some(pbx.local_addr().unwrap()),
                rtcp: None,
                rtcp_mux: true,
                ..PeerSpec::default()
            },
            pbx_host: LOOPBACK,
            phone_to_pbx: TransformSpec::Srtp(SrtpParams::new(phone_key.clone())),
            pbx_to_phone: TransformSpec::Srtp(SrtpParams::new(edge_key.clone())),
        })
        .await
        .unwrap();
    let relay_phone = handle.phone_local().rtp;
    let relay_pbx: SocketAddr = handle.pbx_local().rtp;

    let key_hex = |k: &MasterKey| hex(&[k.key(), k.salt()].concat());
    let child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            PHONE,
            &key_hex(&phone_key),
            &key_hex(&edge_key),
            &relay_phone.port().to_string(),
            &PACKETS.to_string(),
            &FIRST_SEQ.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 with pylibsrtp");
    let mut phone = Phone(child);
    let mut lines = BufReader::new(phone.0.stdout.take().unwrap()).lines();
    let mut next_line = || lines.next().expect("python output").expect("utf-8 line");
    assert!(next_line().starts_with("PORT "));
    assert_eq!(next_line(), "SENT");

    // Phone → PBX: libsrtp-protected, across the wrap, arrives plain and byte-identical.
    let mut buf = [0u8; 2048];
    for i in 0..PACKETS {
        let (n, _) = pbx.recv_from(&mut buf).expect("plain RTP at the PBX");
        let expected = rtp(FIRST_SEQ.wrapping_add(i), 0x5157_A001, [i as u8; 160]);
        assert_eq!(hex(&buf[..n]), hex(&expected), "packet {i}");
    }
    let (n, _) = pbx.recv_from(&mut buf).expect("plain RTCP at the PBX");
    let rr: Vec<u8> = [
        &[0x81u8, 201, 0, 7][..],
        &0x5157_A001u32.to_be_bytes(),
        &[0x42u8; 24],
    ]
    .concat();
    assert_eq!(hex(&buf[..n]), hex(&rr), "SRTCP from libsrtp unprotected");

    // Replay and tamper were dropped and counted (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = handle.counters();
        if c.dropped(DropReason::Replayed) == 1 && c.dropped(DropReason::AuthFailed) == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "drops not counted: {c:?}");
        std::thread::sleep(Duration::from_millis(5));
    }

    // PBX → phone: our engine protects with the edge key, libsrtp unprotects.
    let stdin = phone.0.stdin.as_mut().unwrap();
    stdin.write_all(b"RECV\n").unwrap();
    stdin.flush().unwrap();
    let mut sent = Vec::new();
    for i in 0..PACKETS {
        let p = rtp(FIRST_SEQ.wrapping_add(i), 0x0BB0_0001, [!(i as u8); 160]);
        pbx.send_to(&p, relay_pbx).unwrap();
        sent.push(p);
    }
    let rr: Vec<u8> = [
        &[0x81u8, 201, 0, 7][..],
        &0x0BB0_0001u32.to_be_bytes(),
        &[7u8; 24],
    ]
    .concat();
    // RTCP muxed on the RTP port, demultiplexed by the relay (RFC 5761 §4).
    pbx.send_to(&rr, relay_pbx).unwrap();
    for (i, p) in sent.iter().enumerate() {
        assert_eq!(next_line(), hex(p), "libsrtp unprotect of packet {i}");
    }
    assert_eq!(next_line(), hex(&rr), "libsrtp unprotect_rtcp");
    handle.stop().await.unwrap();
}
