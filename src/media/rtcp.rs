//! RTCP compound packet reader (PURE, RFC 3550 §6.4): sender reports, receiver reports and
//! their report blocks, read in place without allocating.
//!
//! The relay hands it every RTCP compound it forwards (the phone's after SRTCP unprotect, the
//! PBX's as received). Anyone owning one valid phone can send any bytes here, so every length
//! is checked against the buffer: a packet whose header or `length` field does not fit ends
//! the walk ([`Compound`] yields [`Malformed`] once, then nothing), report blocks are read
//! only as far as the packet's own length covers them, and types other than SR/RR (SDES, BYE,
//! APP, XR, anything unknown) are skipped by their length without being read. Nothing here
//! panics on any input (property test below, fuzz target `media_packet`).

/// RTCP packet type of a sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// RTCP packet type of a receiver report (RFC 3550 §6.4.2).
pub const PT_RR: u8 = 201;

/// Bytes of a report block (RFC 3550 §6.4.1).
const BLOCK_LEN: usize = 24;
/// Bytes of the SR's sender info after the SSRC: NTP (8), RTP timestamp, packet and octet
/// counts (RFC 3550 §6.4.1).
const SENDER_INFO_LEN: usize = 20;

/// The compound (or one of its packets) does not follow RFC 3550 §6.4's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// One report block: what the report's sender says about one source it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// SSRC of the source this block is about (`SSRC_n`).
    pub ssrc: u32,
    /// Fraction of that source's packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed: duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from that source (0 =
    /// none yet).
    pub lsr: u32,
    /// Delay since that SR was received, in 1/65536 s.
    pub dlsr: u32,
}

impl ReportBlock {
    fn read(b: &[u8; BLOCK_LEN]) -> Self {
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        // 24-bit two's complement: shift the sign bit to the top and back.
        let cumulative_lost = (i32::from_be_bytes([b[5], b[6], b[7], 0])) >> 8;
        ReportBlock {
            ssrc: word(0),
            fraction_lost: b[4],
            cumulative_lost,
            extended_highest_seq: word(8),
            jitter: word(12),
            lsr: word(16),
            dlsr: word(20),
        }
    }
}

/// An SR's sender info (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SenderInfo {
    /// NTP timestamp, most significant word (seconds).
    pub ntp_msw: u32,
    /// NTP timestamp, least significant word (fraction).
    pub ntp_lsw: u32,
    /// RTP timestamp.
    pub rtp_timestamp: u32,
    /// Sender's packet count.
    pub packets: u32,
    /// Sender's octet count.
    pub octets: u32,
}

/// The report blocks of one SR or RR, read lazily.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a> {
    rest: &'a [u8],
    left: u8,
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        if self.left == 0 {
            return None;
        }
        let (block, rest) = self.rest.split_first_chunk::<BLOCK_LEN>()?;
        self.rest = rest;
        self.left -= 1;
        Some(ReportBlock::read(block))
    }
}

/// One packet of a compound.
#[derive(Debug, Clone)]
pub enum Packet<'a> {
    /// A sender report (RFC 3550 §6.4.1).
    SenderReport {
        /// The sender's SSRC.
        ssrc: u32,
        /// Middle 32 bits of its NTP timestamp: what a receiver echoes as LSR.
        ntp_middle: u32,
        /// The whole sender info.
        info: SenderInfo,
        /// Its report blocks.
        blocks: ReportBlocks<'a>,
    },
    /// A receiver report (RFC 3550 §6.4.2).
    ReceiverReport {
        /// The sender's SSRC.
        ssrc: u32,
        /// Its report blocks.
        blocks: ReportBlocks<'a>,
    },
    /// Any other type (SDES, BYE, APP, XR, unknown), skipped by its length.
    Other {
        /// Its packet type.
        packet_type: u8,
    },
}

/// The packets of one RTCP compound, in order (see the module doc for what ends the walk).
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// Walks the compound `packet` (plain RTCP: after SRTCP unprotect, without index or tag).
pub fn walk(packet: &[u8]) -> Compound<'_> {
    Compound {
        rest: packet,
        failed: false,
    }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<Packet<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match split_packet(self.rest) {
            Ok((packet, rest)) => {
                self.rest = rest;
                Some(Ok(packet))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// The first packet of `buf` and what follows it.
fn split_packet(buf: &[u8]) -> Result<(Packet<'_>, &[u8]), Malformed> {
    let header: &[u8; 4] = buf.first_chunk().ok_or(Malformed)?;
    if header[0] >> 6 != 2 {
        return Err(Malformed);
    }
    let count = header[0] & 0x1f;
    let packet_type = header[1];
    // §6.4.1: the length is in 32-bit words minus one, including the header.
    let len = (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
    if len > buf.len() {
        return Err(Malformed);
    }
    let (this, rest) = buf.split_at(len);
    let body = this.get(4..).ok_or(Malformed)?;
    let word = |b: &[u8], i: usize| -> Result<u32, Malformed> {
        let w: &[u8; 4] = b
            .get(i..i + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or(Malformed)?;
        Ok(u32::from_be_bytes(*w))
    };
    let packet = match packet_type {
        PT_SR => {
            let ssrc = word(body, 0)?;
            let info = SenderInfo {
                ntp_msw: word(body, 4)?,
                ntp_lsw: word(body, 8)?,
                rtp_timestamp: word(body, 12)?,
                packets: word(body, 16)?,
                octets: word(body, 20)?,
            };
            let blocks = body.get(4 + SENDER_INFO_LEN..).ok_or(Malformed)?;
            Packet::SenderReport {
                ssrc,
                ntp_middle: (info.ntp_msw << 16) | (info.ntp_lsw >> 16),
                info,
                blocks: ReportBlocks {
                    rest: blocks,
                    left: count,
                },
            }
        }
        PT_RR => {
            let ssrc = word(body, 0)?;
            Packet::ReceiverReport {
                ssrc,
                blocks: ReportBlocks {
                    rest: body.get(4..).ok_or(Malformed)?,
                    left: count,
                },
            }
        }
        other => Packet::Other { packet_type: other },
    };
    Ok((packet, rest))
}

/// The compound as the JSON object Homer stores and charts for HEP protocol type 5 (RTCP):
/// the layout heplify (Homer's capture agent) sends — `ssrc`, `type`, `report_count`,
/// `sender_information` {`ntp_timestamp_sec`, `ntp_timestamp_usec`, `rtp_timestamp`,
/// `packets`, `octets`} (zeros for an RR), `report_blocks` [{`source_ssrc`, `fraction_lost`,
/// `packets_lost`, `highest_seq_no`, `ia_jitter`, `lsr`, `dlsr`}] and `sdes_ssrc` — built from
/// the compound's first SR or RR (RFC 3550 §6.1: every compound starts with one). `None` when
/// the compound has none or is malformed before it. heplify-server keeps the payload as text,
/// so raw RTCP bytes would not survive; hence JSON.
pub fn homer_json(packet: &[u8]) -> Option<String> {
    #[derive(serde::Serialize)]
    struct SenderInformation {
        ntp_timestamp_sec: u32,
        ntp_timestamp_usec: u32,
        rtp_timestamp: u32,
        packets: u32,
        octets: u32,
    }
    #[derive(serde::Serialize)]
    struct Block {
        source_ssrc: u32,
        fraction_lost: u8,
        packets_lost: i32,
        highest_seq_no: u32,
        ia_jitter: u32,
        lsr: u32,
        dlsr: u32,
    }
    #[derive(serde::Serialize)]
    struct Report {
        sender_information: SenderInformation,
        ssrc: u32,
        #[serde(rename = "type")]
        packet_type: u8,
        report_count: usize,
        report_blocks: Vec<Block>,
        sdes_ssrc: u32,
    }
    let (ssrc, packet_type, info, blocks) = walk(packet).find_map(|p| match p {
        Ok(Packet::SenderReport {
            ssrc, info, blocks, ..
        }) => Some((ssrc, PT_SR, info, blocks)),
        Ok(Packet::ReceiverReport { ssrc, blocks }) => {
            Some((ssrc, PT_RR, SenderInfo::default(), blocks))
        }
        _ => None,
    })?;
    let report_blocks: Vec<Block> = blocks
        .map(|b| Block {
            source_ssrc: b.ssrc,
            fraction_lost: b.fraction_lost,
            packets_lost: b.cumulative_lost,
            highest_seq_no: b.extended_highest_seq,
            ia_jitter: b.jitter,
            lsr: b.lsr,
            dlsr: b.dlsr,
        })
        .collect();
    serde_json::to_string(&Report {
        sender_information: SenderInformation {
            ntp_timestamp_sec: info.ntp_msw,
            ntp_timestamp_usec: info.ntp_lsw,
            rtp_timestamp: info.rtp_timestamp,
            packets: info.packets,
            octets: info.octets,
        },
        ssrc,
        packet_type,
        report_count: report_blocks.len(),
        report_blocks,
        sdes_ssrc: ssrc,
    })
    .ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A report block's 24 bytes.
    pub(crate) fn block(b: &ReportBlock) -> Vec<u8> {
        let mut v = b.ssrc.to_be_bytes().to_vec();
        v.push(b.fraction_lost);
        v.extend_from_slice(&b.cumulative_lost.to_be_bytes()[1..]);
        for w in [b.extended_highest_seq, b.jitter, b.lsr, b.dlsr] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v
    }

    /// An SR (NTP `msw.lsw`) or, when `ntp` is `None`, an RR, with `blocks`.
    pub(crate) fn report(ssrc: u32, ntp: Option<(u32, u32)>, blocks: &[ReportBlock]) -> Vec<u8> {
        let mut body = ssrc.to_be_bytes().to_vec();
        if let Some((msw, lsw)) = ntp {
            body.extend_from_slice(&msw.to_be_bytes());
            body.extend_from_slice(&lsw.to_be_bytes());
            body.extend_from_slice(&[0u8; 12]);
        }
        for b in blocks {
            body.extend(block(b));
        }
        let pt = if ntp.is_some() { PT_SR } else { PT_RR };
        let words = (body.len() / 4) as u16;
        let mut p = vec![0x80 | blocks.len() as u8, pt];
        p.extend_from_slice(&words.to_be_bytes());
        p.extend(body);
        p
    }

    /// An SDES packet with one CNAME chunk (skipped by the walk).
    fn sdes(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x81, 202, 0, 3];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[1, 2, b'a', b'b', 0, 0, 0, 0]);
        p
    }

    fn sample() -> ReportBlock {
        ReportBlock {
            ssrc: 0x2222,
            fraction_lost: 25,
            cumulative_lost: -3,
            extended_highest_seq: 0x0001_0010,
            jitter: 160,
            lsr: 0x1234_5678,
            dlsr: 0x0001_8000,
        }
    }

    #[test]
    fn sr_rr_and_sdes_compound_reads_every_field() {
        let b = sample();
        let mut c = report(0x1111, Some((0xAABB_CCDD, 0xEEFF_0011)), &[b]);
        c.extend(sdes(0x1111));
        c.extend(report(0x1111, None, &[b, b]));
        let packets: Vec<_> = walk(&c).collect();
        assert_eq!(packets.len(), 3);
        match &packets[0] {
            Ok(Packet::SenderReport {
                ssrc,
                ntp_middle,
                info,
                blocks,
            }) => {
                assert_eq!((*ssrc, *ntp_middle), (0x1111, 0xCCDD_EEFF));
                assert_eq!((info.ntp_msw, info.ntp_lsw), (0xAABB_CCDD, 0xEEFF_0011));
                assert_eq!(blocks.clone().collect::<Vec<_>>(), vec![b]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(packets[1], Ok(Packet::Other { packet_type: 202 })));
        match &packets[2] {
            Ok(Packet::ReceiverReport { ssrc, blocks }) => {
                assert_eq!(*ssrc, 0x1111);
                assert_eq!(blocks.clone().count(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn homer_json_has_heplifys_fields() {
        let b = sample();
        let mut c = report(0x1111, Some((0xAABB_CCDD, 0xEEFF_0011)), &[b]);
        c.extend(sdes(0x1111));
        let v: serde_json::Value = serde_json::from_str(&homer_json(&c).unwrap()).unwrap();
        assert_eq!(v["type"], 200);
        assert_eq!(v["ssrc"], 0x1111);
        assert_eq!(v["report_count"], 1);
        assert_eq!(v["sender_information"]["ntp_timestamp_sec"], 0xAABB_CCDDu32);
        assert_eq!(
            v["sender_information"]["ntp_timestamp_usec"],
            0xEEFF_0011u32
        );
        let block = &v["report_blocks"][0];
        assert_eq!(block["source_ssrc"], 0x2222);
        assert_eq!(block["fraction_lost"], 25);
        assert_eq!(block["packets_lost"], -3);
        assert_eq!(block["ia_jitter"], 160);
        assert_eq!(block["lsr"], 0x1234_5678);
        assert_eq!(block["dlsr"], 0x0001_8000);
        // An RR: zero sender information; no SR/RR at all: nothing.
        let v: serde_json::Value =
            serde_json::from_str(&homer_json(&report(5, None, &[])).unwrap()).unwrap();
        assert_eq!(
            (
                v["type"].as_u64(),
                v["sender_information"]["packets"].as_u64()
            ),
            (Some(201), Some(0))
        );
        assert_eq!(homer_json(&sdes(1)), None);
        assert_eq!(homer_json(&[0x80]), None);
    }

    #[test]
    fn a_length_past_the_buffer_ends_the_walk_after_the_good_packets() {
        let mut c = report(1, None, &[sample()]);
        let good = c.len();
        c.extend([0x80, 201, 0, 9, 0, 0, 0, 1]);
        let packets: Vec<_> = walk(&c).collect();
        assert_eq!(packets.len(), 2);
        assert!(packets[0].is_ok());
        assert_eq!(packets[1].as_ref().err(), Some(&Malformed));
        // Version 1 is not RTCP.
        assert_eq!(walk(&[0x40, 201, 0, 0]).next(), Some(Err(Malformed)));
        assert!(walk(&c[..good]).all(|p| p.is_ok()));
    }

    #[test]
    fn a_count_larger_than_the_packet_reads_only_the_blocks_inside_it() {
        let mut c = report(1, None, &[sample()]);
        c[0] = 0x80 | 31;
        // A second packet follows: its bytes must not be read as blocks of the first.
        c.extend(report(2, None, &[]));
        let Some(Ok(Packet::ReceiverReport { blocks, .. })) = walk(&c).next() else {
            panic!("an RR");
        };
        assert_eq!(blocks.count(), 1);
    }

    #[test]
    fn an_sr_too_short_for_its_sender_info_is_malformed() {
        // Length 1 word: SSRC only.
        assert_eq!(
            walk(&[0x80, 200, 0, 1, 0, 0, 0, 1]).next(),
            Some(Err(Malformed))
        );
    }

    impl PartialEq for Packet<'_> {
        fn eq(&self, other: &Self) -> bool {
            format!("{self:?}") == format!("{other:?}")
        }
    }

    proptest! {
        /// Arbitrary bytes: the walk ends, never panics, never yields more packets than
        /// 4-byte words, and every block it reads lies inside the input.
        #[test]
        fn hostile_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut packets = 0;
            for p in walk(&bytes) {
                packets += 1;
                match p {
                    Ok(Packet::SenderReport { blocks, .. } | Packet::ReceiverReport { blocks, .. }) => {
                        prop_assert!(blocks.count() * BLOCK_LEN <= bytes.len());
                    }
                    Ok(Packet::Other { .. }) | Err(_) => {}
                }
            }
            prop_assert!(packets <= bytes.len() / 4 + 1);
        }

        /// Whatever a block holds, it reads back as written (the 24-bit lost count too).
        #[test]
        fn blocks_round_trip(ssrc in any::<u32>(), fraction in any::<u8>(), lost in -(1i32 << 23)..(1i32 << 23),
                             seq in any::<u32>(), jitter in any::<u32>(), lsr in any::<u32>(), dlsr in any::<u32>()) {
            let b = ReportBlock { ssrc, fraction_lost: fraction, cumulative_lost: lost,
                extended_highest_seq: seq, jitter, lsr, dlsr };
            let c = report(9, None, &[b]);
            let Some(Ok(Packet::ReceiverReport { blocks, .. })) = walk(&c).next() else {
                panic!("an RR");
            };
            prop_assert_eq!(blocks.collect::<Vec<_>>(), vec![b]);
        }
    }
}
