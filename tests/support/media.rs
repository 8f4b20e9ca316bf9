//! The media ends of a call test: the phone's and the PBX's UDP sockets, bounded receives,
//! and the SRTP ⇄ RTP check both ways through the edge's relay (packets compared byte for
//! byte; the phone side protected and checked with the edge's own SRTP engine).

use super::offer::{context, media_addr, phone_key_line};
use super::rtp::voice;
use pbx_edge::srtp::{CryptoAttribute, SrtpContext};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

/// The next datagram on `sock`, or `None` after 5 s.
pub async fn recv(sock: &UdpSocket) -> Option<Vec<u8>> {
    let mut b = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut b))
        .await
        .ok()?
        .ok()?;
    b.truncate(n);
    Some(b)
}

pub async fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("udp bind")
}

/// Two UDP sockets on consecutive ports (RTP, RTCP = RTP + 1), the RTP port even.
pub async fn udp_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..200 {
        let rtp = udp().await;
        let port = rtp.local_addr().unwrap().port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)).await {
            return (rtp, rtcp);
        }
    }
    panic!("no free RTP/RTCP port pair");
}

/// The RTP sockets of the phone and of the PBX.
pub struct Media {
    pub phone: UdpSocket,
    pub pbx: UdpSocket,
}

/// The edge's relay addresses of one call, and the phone's SRTP contexts for it.
pub struct Relay {
    /// Where the phone sends (the address in the SDP the phone received).
    pub phone_side: SocketAddr,
    /// Where the PBX sends (the address in the SDP the PBX received).
    pub pbx_side: SocketAddr,
    /// The phone's sending context (its own key).
    pub tx: SrtpContext,
    /// The phone's receiving context (the edge's key).
    pub rx: SrtpContext,
}

impl Relay {
    /// The relay at `phone_side` / `pbx_side`; the phone sends with `phone_line` and
    /// receives with the edge's `edge_line`.
    pub fn new(
        phone_side: SocketAddr,
        pbx_side: SocketAddr,
        phone_line: &CryptoAttribute,
        edge_line: &CryptoAttribute,
    ) -> Self {
        Self {
            phone_side,
            pbx_side,
            tx: context(phone_line),
            rx: context(edge_line),
        }
    }
}

impl Media {
    pub async fn bind() -> Self {
        Self {
            phone: udp().await,
            pbx: udp().await,
        }
    }

    pub fn phone_port(&self) -> u16 {
        self.phone.local_addr().unwrap().port()
    }

    pub fn pbx_port(&self) -> u16 {
        self.pbx.local_addr().unwrap().port()
    }

    /// The relay the SDP each side received names (`to_phone` the edge sent the phone,
    /// `to_pbx` the edge sent the PBX) carries 20 packets both ways ([`Self::both_ways`]),
    /// the phone sending with its own key and receiving with the edge's `edge_line`.
    pub async fn check(
        &self,
        to_phone: &[u8],
        to_pbx: &[u8],
        edge_line: &CryptoAttribute,
    ) -> Relay {
        let mut relay = Relay::new(
            media_addr(to_phone),
            media_addr(to_pbx),
            &phone_key_line(1),
            edge_line,
        );
        self.both_ways(&mut relay, 1..=20).await;
        relay
    }

    /// Packets `seqs` both ways: the phone's SRTP reaches the PBX as byte-identical plain
    /// RTP; the PBX's RTP reaches the phone encrypted and authenticated by the edge, and
    /// decrypts to the PBX's packet.
    pub async fn both_ways(&self, relay: &mut Relay, seqs: std::ops::RangeInclusive<u16>) {
        for seq in seqs {
            let plain = voice(seq, 0x1111);
            let mut buf = plain.clone();
            buf.resize(plain.len() + 32, 0);
            let n = relay.tx.protect_rtp(&mut buf, plain.len()).unwrap();
            self.phone
                .send_to(&buf[..n], relay.phone_side)
                .await
                .unwrap();
            let got = recv(&self.pbx).await.expect("PBX receives plain RTP");
            assert_eq!(got, plain, "phone → PBX: byte-identical plain RTP");

            let plain = voice(seq, 0x2222);
            self.pbx.send_to(&plain, relay.pbx_side).await.unwrap();
            let mut got = recv(&self.phone).await.expect("phone receives SRTP");
            assert_ne!(
                &got[12..],
                &plain[12..],
                "payload is encrypted toward the phone"
            );
            let n = relay
                .rx
                .unprotect_rtp(&mut got)
                .expect("edge's SRTP authenticates");
            assert_eq!(
                &got[..n],
                &plain[..],
                "PBX → phone: decrypts to the PBX's packet"
            );
        }
    }
}
