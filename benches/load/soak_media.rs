//! Writes the two media streams `benches/load/soak.sh` plays with SIPp's `play_pcap_audio`
//! (one per call and side): a PCMU RTP stream for the PBX side and the same stream SRTP-protected
//! with the key of the phones' SDES offer, so that the edge authenticates and relays the phone's
//! packets instead of dropping them. SIPp (Debian's 3.6) has no SRTP of its own.
//!
//! ```text
//! cargo run --example soak_media -- OUT_DIR SECONDS 'AES_CM_128_HMAC_SHA1_80 inline:...'
//! ```
//!
//! Writes OUT_DIR/pbx-rtp.pcap and OUT_DIR/phone-srtp.pcap: 50 packets/s (20 ms of PCMU
//! silence each, RFC 3551 §4.5.14) for SECONDS (1..=600). The packets are in pcap files
//! (Ethernet/IPv4/UDP, the framing SIPp reads); SIPp replaces the addresses and ports with the
//! call's media addresses.

use pbx_edge::srtp::sdes::CryptoAttribute;
use pbx_edge::srtp::{ContextOptions, SrtpContext};

const PACKETS_PER_SECOND: u32 = 50;
const SAMPLES_PER_PACKET: u32 = 160;
/// PCMU silence (µ-law of 0).
const SILENCE: u8 = 0xff;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, secs, crypto] = args.as_slice() else {
        eprintln!("usage: soak_media OUT_DIR SECONDS 'SUITE inline:KEY' (the a=crypto value without its tag)");
        std::process::exit(2);
    };
    let secs: u32 = match secs.parse() {
        Ok(s) if (1..=600).contains(&s) => s,
        _ => {
            eprintln!("SECONDS must be 1..=600");
            std::process::exit(2);
        }
    };
    // The phone's a=crypto line carries a tag; the value here is what follows it.
    let attribute = match CryptoAttribute::parse(&format!("1 {crypto}")) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bad crypto value {crypto:?}: {e}");
            std::process::exit(2);
        }
    };
    let Some(key) = attribute.keys.first() else {
        eprintln!("no key in {crypto:?}");
        std::process::exit(2);
    };
    let options = ContextOptions::from_sdes(key, &attribute.session_params);
    let mut srtp = match SrtpContext::new(&key.master_key, &options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SRTP context: {e}");
            std::process::exit(2);
        }
    };

    let count = secs * PACKETS_PER_SECOND;
    let mut plain_packets = Vec::new();
    let mut srtp_packets = Vec::new();
    for i in 0..count {
        let rtp = rtp_packet(i, 0x50a7_0001);
        plain_packets.push(rtp.clone());
        let len = rtp.len();
        let mut buf = rtp;
        buf.resize(len + srtp.rtp_overhead(), 0);
        match srtp.protect_rtp(&mut buf, len) {
            Ok(n) => buf.truncate(n),
            Err(e) => {
                eprintln!("protect: {e}");
                std::process::exit(1);
            }
        }
        srtp_packets.push(buf);
    }
    let dir = std::path::Path::new(dir);
    for (name, packets) in [
        ("pbx-rtp.pcap", &plain_packets),
        ("phone-srtp.pcap", &srtp_packets),
    ] {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, pcap(packets)) {
            eprintln!("{}: {e}", path.display());
            std::process::exit(1);
        }
    }
    println!(
        "{count} packets ({secs} s) each in {}/pbx-rtp.pcap and phone-srtp.pcap",
        dir.display()
    );
}

/// RTP (RFC 3550 §5.1): V=2, PT 0 (PCMU), sequence and timestamp from the packet number.
fn rtp_packet(i: u32, ssrc: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + SAMPLES_PER_PACKET as usize);
    p.extend_from_slice(&[0x80, 0x00]);
    p.extend_from_slice(&((1000 + i) as u16).to_be_bytes());
    p.extend_from_slice(&(i * SAMPLES_PER_PACKET).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.resize(12 + SAMPLES_PER_PACKET as usize, SILENCE);
    p
}

/// A classic pcap file (microsecond timestamps, link type 1 = Ethernet) with one
/// Ethernet/IPv4/UDP frame per payload, 20 ms apart. Addresses and ports are placeholders.
fn pcap(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, thiszone, sigfigs, snaplen, network.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let interval_us = 1_000_000 / PACKETS_PER_SECOND;
    for (i, payload) in payloads.iter().enumerate() {
        let frame = frame(payload);
        let t_us = i as u64 * u64::from(interval_us);
        for v in [
            (t_us / 1_000_000) as u32,
            (t_us % 1_000_000) as u32,
            frame.len() as u32,
            frame.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&frame);
    }
    out
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    // Ethernet: destination, source, EtherType IPv4.
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    // IPv4: version/IHL, DSCP, total length, id, flags/fragment, TTL, protocol UDP,
    // checksum (below), 127.0.0.1 -> 127.0.0.1.
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(ip_len as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let checksum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    f.extend_from_slice(&ip);
    // UDP: ports 6000 -> 6000, length, checksum 0 (none, RFC 768).
    f.extend_from_slice(&6000u16.to_be_bytes());
    f.extend_from_slice(&6000u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}
