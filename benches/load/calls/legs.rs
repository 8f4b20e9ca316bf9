//! What a control path (pbx-edge over SIP/TLS, rtpengine over its ng protocol) hands the media
//! generator for one established call: the generator's own sockets, where to send, and the
//! SDES keys both directions use. The control path binds the sockets (their addresses went
//! into its SDP); the media generator only paces, protects, verifies and times packets.

use std::net::{SocketAddr, UdpSocket};

/// One SDES key as it appears in an `a=crypto` line (RFC 4568 §9.1): the suite name and the
/// key-params (`inline:<base64 key||salt>`, optionally `|2^31|1:4` lifetime and MKI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesKey {
    /// e.g. `AES_CM_128_HMAC_SHA1_80`
    pub suite: String,
    /// e.g. `inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj`
    pub key_params: String,
}

/// The media half of one call set up by a target's real control path.
#[derive(Debug)]
pub struct CallMedia {
    /// Label for reports (Call-ID or ng call-id).
    pub call_id: String,
    /// The phone's RTP socket (its address is the one the phone's SDP announced).
    pub phone_socket: UdpSocket,
    /// Where the phone sends SRTP: the target's phone-side RTP address from its SDP.
    pub phone_target: SocketAddr,
    /// The key the phone protects with (the phone's own `a=crypto`).
    pub phone_sends_with: SdesKey,
    /// The key the target protects toward the phone with (the target's `a=crypto`).
    pub phone_receives_with: SdesKey,
    /// The PBX's RTP socket (plain RTP, announced in the PBX-side SDP).
    pub pbx_socket: UdpSocket,
    /// Where the PBX sends plain RTP: the target's PBX-side RTP address from its SDP.
    pub pbx_target: SocketAddr,
}
