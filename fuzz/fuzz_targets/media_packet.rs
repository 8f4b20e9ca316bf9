//! The relay's per-packet path on a stream of packets from either side (the media relay reads
//! them from UDP sockets anyone can send to): RFC 5761 demultiplexing, then the phone → PBX
//! transform (SRTP/SRTCP unprotect with its replay and ROC state, or the plain-RTP shape check
//! of a best-effort stream) and the PBX → phone transform (protect) with the buffer room the
//! relay gives it. Nothing panics, and what the PBX → phone side protected, a phone holding the
//! same key unprotects back to the same bytes whenever it accepts it (it may refuse a repeated
//! or far-behind sequence number as a replay, RFC 3711 §3.3.2). Every packet, and every plain
//! RTCP compound the phone → PBX transform accepts, also goes through the RTCP reader and the
//! per-stream report state ([`pbx_edge::media::report`]) the relay feeds it to.
//!
//! Input: a selector byte (suite, MKI, unencrypted options), then packets, each prefixed by
//! its length (one byte), through the same contexts in order.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pbx_edge::media::report::{ReceivedMedia, ReportCells, RtcpReports};
use pbx_edge::media::rtcp::{walk, Packet};
use pbx_edge::media::transform::{demux, Inbound, Outbound, SrtpParams, TransformSpec};
use pbx_edge::srtp::sdes::Mki;
use pbx_edge::srtp::MasterKey;
use pbx_edge::media::Side;

/// The RTCP reader on `packet`: blocks lie inside it, the walk ends.
fn rtcp(reports: &mut RtcpReports, cells: &ReportCells, side: Side, packet: &[u8], now_ns: u64) {
    for p in walk(packet) {
        if let Ok(Packet::SenderReport { blocks, .. } | Packet::ReceiverReport { blocks, .. }) = p {
            assert!(blocks.count() * 24 <= packet.len());
        }
    }
    reports.on_rtcp(side, packet, now_ns, ReceivedMedia::default(), cells);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let (suite, options) = common::srtp_selection(sel, Mki::new(7, 1));
    let spec = |fill: u8| {
        TransformSpec::Srtp(SrtpParams {
            master_key: MasterKey::generate(suite, |b| b.fill(fill)),
            options: options.clone(),
        })
    };
    let (Ok(mut from_phone), Ok(mut plain_in), Ok(mut to_phone), Ok(mut phone)) = (
        Inbound::from_spec(&spec(0x31)),
        Inbound::from_spec(&TransformSpec::Plain),
        Outbound::from_spec(&spec(0x32)),
        // The phone's receiving side: the key the edge protects with.
        Inbound::from_spec(&spec(0x32)),
    ) else {
        return;
    };
    let mut closed = Inbound::from_spec(&TransformSpec::Closed).expect("closed spec");
    let mut reports = RtcpReports::default();
    let cells = ReportCells::default();
    let mut now_ns = 0u64;

    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        let kind = demux(packet);
        let mut buf = packet.to_vec();
        buf.resize(len + Outbound::MAX_OVERHEAD, 0);

        now_ns += 1_000_000;
        rtcp(&mut reports, &cells, Side::Pbx, packet, now_ns);
        let mut unprotected = buf.clone();
        if let Ok(plain) = from_phone.apply(&mut unprotected, len, kind) {
            assert!(plain.len <= len);
            rtcp(&mut reports, &cells, Side::Phone, &unprotected[..plain.len], now_ns);
        }
        if let Ok(plain) = plain_in.apply(&mut buf.clone(), len, kind) {
            assert_eq!(plain.len, len);
        }
        assert!(closed.apply(&mut buf.clone(), len, kind).is_err());
        // Shorter than `len` (a truncated buffer) is refused, never read past.
        assert!(from_phone.apply(&mut buf[..len / 2], len, kind).is_err());

        if let Ok(n) = to_phone.apply(&mut buf, len, kind) {
            assert!(n >= len && n <= len + Outbound::MAX_OVERHEAD);
            if let Ok(got) = phone.apply(&mut buf, n, kind) {
                assert_eq!(&buf[..got.len], packet);
            }
        }
    }
});
