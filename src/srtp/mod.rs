//! SRTP/SRTCP engine (RFC 3711, RFC 6188, RFC 7714) and the SDES key types (RFC 4568) shared
//! with `sdp`.
//!
//! PURE: no I/O, no clock, no randomness. The relay owns one [`SrtpContext`] per direction
//! and calls it per packet on its own buffers:
//!
//! ```text
//!  phone --SRTP--> unprotect_rtp / unprotect_rtcp --RTP--> PBX
//!  phone <--SRTP-- protect_rtp   / protect_rtcp   <--RTP-- PBX
//! ```
//!
//! One master key serves every SSRC of a context (Asterisk changes SSRC on transfers): session
//! keys are derived once (key derivation rate 0) and per-SSRC state (ROC, replay window,
//! SRTCP index) is created on demand — on the receive side only after a packet authenticated,
//! so unauthenticated traffic cannot fill the table. Packets are transformed in place; nothing
//! allocates per packet.
//!
//! Wire layouts (RFC 3711 §3.1 / §3.4, RFC 7714 §8 / §9; `*` = encrypted):
//!
//! ```text
//!  SRTP   AES-CM: | RTP header | payload* | MKI? | tag (10 or 4) |
//!         GCM:    | RTP header | payload* | tag (16)  | MKI? |
//!  SRTCP  AES-CM: | RTCP 8 octets | rest* | E|index (4) | MKI? | tag (10) |
//!         GCM:    | RTCP 8 octets | rest* | tag (16) | E|index (4) | MKI? |
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cipher;
pub mod error;
pub mod index;
pub mod kdf;
pub mod key;
pub mod replay;
pub mod sdes;
pub mod suite;

pub use error::SrtpError;
pub use key::MasterKey;
pub use sdes::{CryptoAttribute, KeyParams, Mki, SdesError, SessionParams};
pub use suite::CryptoSuite;

use cipher::{aes_cm_iv, gcm_iv, SessionKeys, GCM_TAG_LEN};
use replay::{ReplayCheck, ReplayWindow, MAX_WINDOW, MIN_WINDOW};

/// RFC 3711 §9.2: at most 2^48 SRTP packets per master key.
pub const SRTP_MAX_PACKETS: u64 = 1 << 48;
/// RFC 3711 §9.2: at most 2^31 SRTCP packets per master key.
pub const SRTCP_MAX_PACKETS: u64 = 1 << 31;

/// The most octets `protect_rtp` / `protect_rtcp` append to a packet: the SRTCP E|index, the
/// longest tag (AES-GCM, 16) and the longest MKI (RFC 4568 §9.1, 128). Relay buffers keep this
/// much room after the largest datagram they accept.
pub const MAX_TRAILER_LEN: usize = SRTCP_INDEX_LEN + GCM_TAG_LEN + sdes::MAX_MKI_LEN as usize;

const RTP_HEADER_LEN: usize = 12;
const RTCP_HEADER_LEN: usize = 8;
const SRTCP_INDEX_LEN: usize = 4;
const E_FLAG: u32 = 0x8000_0000;

/// How a context is set up, from the negotiated SDES line and local policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextOptions {
    /// MKI written into every protected packet and required on every received one.
    pub mki: Option<Mki>,
    /// Master key lifetime in packets (SDES `|lifetime`); `None` = 2^48 SRTP / 2^31 SRTCP.
    /// SRTCP uses `min(lifetime, 2^31)`.
    pub lifetime: Option<u64>,
    /// Replay window in packets: 128..=1024, rounded up to a power of two.
    pub replay_window: usize,
    /// `UNENCRYPTED_SRTP`: RTP payloads are authenticated only (AES-CM suites only).
    pub unencrypted_srtp: bool,
    /// `UNENCRYPTED_SRTCP`: SRTCP is sent with E=0, and E=0 is accepted.
    pub unencrypted_srtcp: bool,
    /// DANGER, peer quirk (Cisco SPA 5xx firmware sends authenticated-only SRTCP, E=0,
    /// without announcing `UNENCRYPTED_SRTCP`): accept such packets when their tag verifies.
    /// Each one is reported in [`RtcpUnprotected::unannounced_unencrypted`] so the caller
    /// counts and logs it.
    pub danger_accept_unannounced_unencrypted_srtcp: bool,
    /// SSRCs tracked per direction and packet kind. Never evicted: a packet of a new SSRC
    /// beyond this many is refused ([`SrtpError::TooManyStreams`]), because forgetting a send
    /// stream would restart its ROC at 0 and protect an index already used (keystream reuse
    /// for AES-CM, nonce reuse for GCM, RFC 3711 §9.1), and forgetting a receive stream would
    /// forget its replay window (RFC 3711 §3.3.2).
    pub max_streams: usize,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            mki: None,
            lifetime: None,
            replay_window: MIN_WINDOW,
            unencrypted_srtp: false,
            unencrypted_srtcp: false,
            danger_accept_unannounced_unencrypted_srtcp: false,
            max_streams: 32,
        }
    }
}

impl ContextOptions {
    /// Options matching one negotiated SDES key and the line's session parameters (MKI,
    /// lifetime, `UNENCRYPTED_*`, `WSH` as a lower bound for the window, capped at 1024).
    pub fn from_sdes(key: &KeyParams, params: &SessionParams) -> ContextOptions {
        let wsh = params.window_size_hint.map_or(MIN_WINDOW, |w| w as usize);
        ContextOptions {
            mki: key.mki,
            lifetime: key.lifetime,
            replay_window: wsh.clamp(MIN_WINDOW, MAX_WINDOW),
            unencrypted_srtp: params.unencrypted_srtp,
            unencrypted_srtcp: params.unencrypted_srtcp,
            ..ContextOptions::default()
        }
    }
}

/// Result of [`SrtpContext::unprotect_rtcp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcpUnprotected {
    /// Length of the plain RTCP packet now in `buf[..len]`.
    pub len: usize,
    /// True when the packet was E=0 although `UNENCRYPTED_SRTCP` was not negotiated, and it
    /// was accepted only because of
    /// [`ContextOptions::danger_accept_unannounced_unencrypted_srtcp`]. Count it.
    pub unannounced_unencrypted: bool,
}

/// Per-SSRC state with a replay window: SRTP send and receive, SRTCP receive.
#[derive(Clone, Debug)]
struct RecvStream {
    ssrc: u32,
    window: ReplayWindow,
}

/// Per-SSRC SRTCP send state.
#[derive(Clone, Copy, Debug)]
struct SendStream {
    ssrc: u32,
    /// The next SRTCP index to send.
    index: u64,
}

trait Stream {
    fn ssrc(&self) -> u32;
}

impl Stream for RecvStream {
    fn ssrc(&self) -> u32 {
        self.ssrc
    }
}

impl Stream for SendStream {
    fn ssrc(&self) -> u32 {
        self.ssrc
    }
}

fn find<T: Stream>(streams: &[T], ssrc: u32) -> Option<usize> {
    streams.iter().position(|s| s.ssrc() == ssrc)
}

/// Adds a stream for a new SSRC without growing past `max` (the Vec was preallocated to
/// `max`, so this never allocates). Full is an error, never an eviction (see
/// [`ContextOptions::max_streams`]).
fn insert<T: Stream>(streams: &mut Vec<T>, max: usize, stream: T) -> Result<(), SrtpError> {
    if streams.len() >= max {
        return Err(SrtpError::TooManyStreams);
    }
    streams.push(stream);
    Ok(())
}

/// One master key of a context: its MKI, session keys and packet budgets.
struct KeySlot {
    mki: Option<Mki>,
    rtp_keys: SessionKeys,
    rtcp_keys: SessionKeys,
    rtp_limit: u64,
    rtcp_limit: u64,
    rtp_used: u64,
    rtcp_used: u64,
}

/// SRTP + SRTCP state for one direction of one media stream: one master key (or several,
/// selected by MKI, RFC 3711 §3.1 / RFC 4568 §6.1) shared by every SSRC.
pub struct SrtpContext {
    suite: CryptoSuite,
    keys: Vec<KeySlot>,
    mki_len: usize,
    active_rtp: usize,
    active_rtcp: usize,
    encrypt_rtp: bool,
    encrypt_rtcp: bool,
    accept_unannounced_unencrypted_srtcp: bool,
    window: usize,
    max_streams: usize,
    rtp_send: Vec<RecvStream>,
    rtp_recv: Vec<RecvStream>,
    rtcp_send: Vec<SendStream>,
    rtcp_recv: Vec<RecvStream>,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("keys", &self.keys.len())
            .field("active_rtp", &self.active_rtp)
            .field("active_rtcp", &self.active_rtcp)
            .finish_non_exhaustive()
    }
}

/// Length of the RTP header including CSRCs and the header extension (RFC 3550 §5.1, §5.3.1).
fn rtp_header_len(pkt: &[u8]) -> Result<usize, SrtpError> {
    let b0 = *pkt.first().ok_or(SrtpError::Malformed)?;
    if b0 >> 6 != 2 || pkt.len() < RTP_HEADER_LEN {
        return Err(SrtpError::Malformed);
    }
    let mut len = RTP_HEADER_LEN + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        let ext = pkt.get(len + 2..len + 4).ok_or(SrtpError::Malformed)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    if len > pkt.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(len)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl SrtpContext {
    /// Reads (and so brings into the cache) the state the next RTP packet of this context
    /// will use: the active key's budget, salt and HMAC state and the first SSRC's replay
    /// state. Returns a value only so the reads are not optimised away. The relay's batched
    /// pass calls this for every stream of a batch before relaying any, so the cache misses
    /// of different streams overlap (BENCHMARKS.md, "Media at scale").
    #[inline]
    pub fn warm(&self) -> u64 {
        let mut acc = 0u64;
        if let Some(key) = self.keys.get(self.active_rtp) {
            acc ^= key.rtp_used;
            if let SessionKeys::AesCm { salt, auth, .. } = &key.rtp_keys {
                auth.warm();
                acc ^= u64::from(salt[0]);
            }
        }
        for s in self
            .rtp_send
            .first()
            .into_iter()
            .chain(self.rtp_recv.first())
        {
            acc ^= u64::from(s.ssrc) ^ s.window.warm();
        }
        acc
    }

    /// Derives the SRTP and SRTCP session keys (RFC 3711 §4.3, key derivation rate 0) from a
    /// master key and validates the options against its suite.
    pub fn new(master_key: &MasterKey, options: &ContextOptions) -> Result<SrtpContext, SrtpError> {
        SrtpContext::build(&[(master_key, options.mki, options.lifetime)], options)
    }

    /// A context with several master keys from one SDES line (RFC 4568 §6.1), each with its
    /// own MKI and lifetime (`options.mki` and `options.lifetime` are ignored). Received
    /// packets pick their key by MKI; protect uses the keys in order, moving to the next one
    /// when a key's lifetime is used up. Several keys need distinct MKIs of one length.
    pub fn with_keys(
        keys: &[KeyParams],
        options: &ContextOptions,
    ) -> Result<SrtpContext, SrtpError> {
        let list: Vec<_> = keys
            .iter()
            .map(|k| (&k.master_key, k.mki, k.lifetime))
            .collect();
        SrtpContext::build(&list, options)
    }

    fn build(
        keys: &[(&MasterKey, Option<Mki>, Option<u64>)],
        options: &ContextOptions,
    ) -> Result<SrtpContext, SrtpError> {
        let (suite, mki_len) = match keys.first() {
            Some((k, m, _)) => (k.suite(), m.map_or(0, |m| m.len())),
            None => return Err(SrtpError::InvalidOptions),
        };
        let window = options.replay_window.next_power_of_two();
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&window)
            || options.max_streams == 0
            || (options.unencrypted_srtp && suite.is_aead())
        {
            return Err(SrtpError::InvalidOptions);
        }
        let mut slots = Vec::with_capacity(keys.len());
        for (i, (key, mki, lifetime)) in keys.iter().enumerate() {
            // Several keys: each needs an MKI, all of one length, no two alike (RFC 4568 §6.1).
            let mki_ok = mki.map_or(0, |m| m.len()) == mki_len
                && (keys.len() == 1 || mki.is_some())
                && !keys[..i]
                    .iter()
                    .any(|(_, other, _)| other.is_some() && other == mki);
            if key.suite() != suite
                || !mki_ok
                || lifetime.is_some_and(|l| l == 0 || l > SRTP_MAX_PACKETS)
            {
                return Err(SrtpError::InvalidOptions);
            }
            let derive = |rtcp| {
                SessionKeys::derive(suite, key.key(), key.salt(), rtcp)
                    .ok_or(SrtpError::InvalidOptions)
            };
            slots.push(KeySlot {
                mki: *mki,
                rtp_keys: derive(false)?,
                rtcp_keys: derive(true)?,
                rtp_limit: lifetime.unwrap_or(SRTP_MAX_PACKETS),
                rtcp_limit: lifetime.unwrap_or(SRTCP_MAX_PACKETS).min(SRTCP_MAX_PACKETS),
                rtp_used: 0,
                rtcp_used: 0,
            });
        }
        let max = options.max_streams;
        Ok(SrtpContext {
            suite,
            keys: slots,
            mki_len,
            active_rtp: 0,
            active_rtcp: 0,
            encrypt_rtp: !options.unencrypted_srtp,
            encrypt_rtcp: !options.unencrypted_srtcp,
            accept_unannounced_unencrypted_srtcp: options
                .danger_accept_unannounced_unencrypted_srtcp,
            window,
            max_streams: max,
            rtp_send: Vec::with_capacity(max),
            rtp_recv: Vec::with_capacity(max),
            rtcp_send: Vec::with_capacity(max),
            rtcp_recv: Vec::with_capacity(max),
        })
    }

    /// The key protect uses: the active one, or the next with budget left (RFC 4568 §6.1:
    /// keys are used in order as their lifetimes run out).
    fn send_slot(&mut self, rtcp: bool) -> Result<usize, SrtpError> {
        let active = if rtcp {
            &mut self.active_rtcp
        } else {
            &mut self.active_rtp
        };
        while let Some(k) = self.keys.get(*active) {
            let (used, limit) = if rtcp {
                (k.rtcp_used, k.rtcp_limit)
            } else {
                (k.rtp_used, k.rtp_limit)
            };
            if used < limit {
                return Ok(*active);
            }
            *active += 1;
        }
        Err(SrtpError::KeyExpired)
    }

    /// The key a received packet names by its MKI (the only key when there is no MKI), if its
    /// lifetime is not used up.
    fn recv_slot(&self, wire_mki: &[u8], rtcp: bool) -> Result<usize, SrtpError> {
        let slot = if self.mki_len == 0 {
            0
        } else {
            self.keys
                .iter()
                .position(|k| k.mki.is_some_and(|m| m.matches(wire_mki)))
                .ok_or(SrtpError::UnknownMki)?
        };
        let k = self.keys.get(slot).ok_or(SrtpError::UnknownMki)?;
        let (used, limit) = if rtcp {
            (k.rtcp_used, k.rtcp_limit)
        } else {
            (k.rtp_used, k.rtp_limit)
        };
        if used >= limit {
            return Err(SrtpError::KeyExpired);
        }
        Ok(slot)
    }

    /// The crypto suite of this context.
    pub fn suite(&self) -> CryptoSuite {
        self.suite
    }

    fn mki_len(&self) -> usize {
        self.mki_len
    }

    /// Octets `protect_rtp` appends: tag + MKI.
    pub fn rtp_overhead(&self) -> usize {
        self.suite.rtp_tag_len() + self.mki_len()
    }

    /// Octets `protect_rtcp` appends: E|SRTCP index (4) + tag + MKI.
    pub fn rtcp_overhead(&self) -> usize {
        SRTCP_INDEX_LEN + self.suite.rtcp_tag_len() + self.mki_len()
    }

    /// Protects the RTP packet in `buf[..len]` in place (RFC 3711 §3.3, RFC 7714 §8) and
    /// returns the SRTP length `len + rtp_overhead()`. `buf.len()` must be at least that.
    ///
    /// A packet whose index (SSRC, ROC, SEQ) was already protected is refused with
    /// `Replayed` (or `TooOld` behind the window): encrypting it again would reuse keystream.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let total = len
            .checked_add(self.rtp_overhead())
            .ok_or(SrtpError::BufferTooSmall)?;
        if total > buf.len() {
            return Err(SrtpError::BufferTooSmall);
        }
        let hdr = rtp_header_len(&buf[..len])?;
        let slot = self.send_slot(false)?;
        let seq = be16(buf, 2);
        let ssrc = be32(buf, 8);

        // RFC 3711 §3.3.1: the sender keeps its own ROC, estimated from its sequence numbers.
        // An index already protected is refused (RFC 3711 §9.1: the same index with another
        // payload would reuse keystream) — libsrtp's default (`allow_repeat_tx = 0`) too.
        let index = match find(&self.rtp_send, ssrc) {
            Some(i) => {
                let s = &mut self.rtp_send[i];
                let index = index::estimate(s.window.highest(), seq).ok_or(SrtpError::TooOld)?;
                match s.window.check(index) {
                    ReplayCheck::Fresh => {}
                    ReplayCheck::Replayed => return Err(SrtpError::Replayed),
                    ReplayCheck::TooOld => return Err(SrtpError::TooOld),
                }
                s.window.accept(index);
                index
            }
            None => {
                let index = u64::from(seq);
                let window = ReplayWindow::new(self.window, index);
                insert(
                    &mut self.rtp_send,
                    self.max_streams,
                    RecvStream { ssrc, window },
                )?;
                index
            }
        };
        if index >= SRTP_MAX_PACKETS {
            return Err(SrtpError::KeyExpired);
        }

        let mki_len = self.mki_len();
        let key = &self.keys[slot];
        match &key.rtp_keys {
            SessionKeys::AesCm { cipher, auth, salt } => {
                if self.encrypt_rtp {
                    cipher.apply_keystream(&aes_cm_iv(salt, ssrc, index), &mut buf[hdr..len]);
                }
                if let Some(mki) = key.mki {
                    mki.write(&mut buf[len..len + mki_len]);
                }
                // RFC 3711 §4.2: the tag covers header + payload || ROC, not the MKI.
                let roc = ((index >> 16) as u32).to_be_bytes();
                let tag = auth.compute(&buf[..len], &roc);
                let tag_len = self.suite.rtp_tag_len();
                buf[len + mki_len..total].copy_from_slice(&tag[..tag_len]);
            }
            SessionKeys::Gcm { cipher, salt } => {
                // RFC 7714 §8.2: AAD = the RTP header including CSRCs and extension.
                let (head, rest) = buf.split_at_mut(hdr);
                let tag = cipher
                    .seal(&gcm_iv(salt, ssrc, index), head, &mut rest[..len - hdr])
                    .ok_or(SrtpError::Malformed)?;
                buf[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
                if let Some(mki) = key.mki {
                    mki.write(&mut buf[len + GCM_TAG_LEN..total]);
                }
            }
        }
        self.keys[slot].rtp_used += 1;
        Ok(total)
    }

    /// Authenticates, replay-checks and decrypts the SRTP packet that fills `buf`, in place.
    /// Returns the length of the RTP packet now in `buf[..n]`. On error the buffer contents
    /// are unspecified and no state changed.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let n = buf.len();
        let tag_len = self.suite.rtp_tag_len();
        let mki_len = self.mki_len();
        let trailer = tag_len + mki_len;
        if n < RTP_HEADER_LEN + trailer {
            return Err(SrtpError::Malformed);
        }
        let body_end = n - trailer;
        let hdr = rtp_header_len(&buf[..body_end])?;
        let (mki_at, tag_at) = if self.suite.is_aead() {
            (body_end + tag_len, body_end)
        } else {
            (body_end, body_end + mki_len)
        };
        let key_slot = self.recv_slot(&buf[mki_at..mki_at + mki_len], false)?;
        let seq = be16(buf, 2);
        let ssrc = be32(buf, 8);

        let slot = find(&self.rtp_recv, ssrc);
        let index = match slot {
            Some(i) => {
                let window = &self.rtp_recv[i].window;
                let index = index::estimate(window.highest(), seq).ok_or(SrtpError::TooOld)?;
                match window.check(index) {
                    ReplayCheck::Fresh => index,
                    ReplayCheck::Replayed => return Err(SrtpError::Replayed),
                    ReplayCheck::TooOld => return Err(SrtpError::TooOld),
                }
            }
            // A new SSRC starts with ROC 0 (RFC 3711 §3.3.1). Refused before any crypto when
            // the context tracks as many SSRCs as it may (streams are never evicted).
            None if self.rtp_recv.len() >= self.max_streams => {
                return Err(SrtpError::TooManyStreams)
            }
            None => u64::from(seq),
        };

        let (body, trailer_bytes) = buf.split_at_mut(body_end);
        let tag = &trailer_bytes[tag_at - body_end..tag_at - body_end + tag_len];
        match &self.keys[key_slot].rtp_keys {
            SessionKeys::AesCm { cipher, auth, salt } => {
                let roc = ((index >> 16) as u32).to_be_bytes();
                if !auth.verify(body, &roc, tag) {
                    return Err(SrtpError::AuthFailed);
                }
                if self.encrypt_rtp {
                    cipher.apply_keystream(&aes_cm_iv(salt, ssrc, index), &mut body[hdr..]);
                }
            }
            SessionKeys::Gcm { cipher, salt } => {
                let (head, payload) = body.split_at_mut(hdr);
                if !cipher.open(&gcm_iv(salt, ssrc, index), head, payload, tag) {
                    return Err(SrtpError::AuthFailed);
                }
            }
        }

        match slot {
            Some(i) => {
                let s = &mut self.rtp_recv[i];
                s.window.accept(index);
            }
            None => {
                let window = ReplayWindow::new(self.window, index);
                insert(
                    &mut self.rtp_recv,
                    self.max_streams,
                    RecvStream { ssrc, window },
                )?;
            }
        }
        self.keys[key_slot].rtp_used += 1;
        Ok(body_end)
    }

    /// Protects the RTCP (compound) packet in `buf[..len]` in place (RFC 3711 §3.4, RFC 7714
    /// §9) and returns the SRTCP length `len + rtcp_overhead()`.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let total = len
            .checked_add(self.rtcp_overhead())
            .ok_or(SrtpError::BufferTooSmall)?;
        if total > buf.len() {
            return Err(SrtpError::BufferTooSmall);
        }
        if len < RTCP_HEADER_LEN || buf[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let slot = self.send_slot(true)?;
        let ssrc = be32(buf, 4);
        // RFC 3711 §3.4: a 31-bit SRTCP index per SSRC, starting at 0.
        let index = match find(&self.rtcp_send, ssrc) {
            Some(i) => {
                let s = &mut self.rtcp_send[i];
                let index = s.index;
                if index >= SRTCP_MAX_PACKETS {
                    return Err(SrtpError::KeyExpired);
                }
                s.index += 1;
                index
            }
            None => {
                insert(
                    &mut self.rtcp_send,
                    self.max_streams,
                    SendStream { ssrc, index: 1 },
                )?;
                0
            }
        };
        let word = (index as u32) | if self.encrypt_rtcp { E_FLAG } else { 0 };
        let word = word.to_be_bytes();

        let mki_len = self.mki_len();
        let key = &self.keys[slot];
        match &key.rtcp_keys {
            SessionKeys::AesCm { cipher, auth, salt } => {
                if self.encrypt_rtcp {
                    cipher.apply_keystream(
                        &aes_cm_iv(salt, ssrc, index),
                        &mut buf[RTCP_HEADER_LEN..len],
                    );
                }
                buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&word);
                let authed = len + SRTCP_INDEX_LEN;
                if let Some(mki) = key.mki {
                    mki.write(&mut buf[authed..authed + mki_len]);
                }
                // RFC 3711 §3.4: the tag covers header, payload and E|index, not the MKI.
                let tag = auth.compute(&buf[..authed], &[]);
                let tag_len = self.suite.rtcp_tag_len();
                buf[authed + mki_len..total].copy_from_slice(&tag[..tag_len]);
            }
            SessionKeys::Gcm { cipher, salt } => {
                let iv = gcm_iv(salt, ssrc, index);
                let tag = if self.encrypt_rtcp {
                    // RFC 7714 §9.2: AAD = first 8 octets || E|index.
                    let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                    aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                    aad[RTCP_HEADER_LEN..].copy_from_slice(&word);
                    cipher.seal(&iv, &aad, &mut buf[RTCP_HEADER_LEN..len])
                } else {
                    // RFC 7714 §9.3 (E=0): the whole packet || E|index is AAD, nothing is
                    // encrypted. Put E|index right after the packet to make the AAD contiguous.
                    buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&word);
                    cipher.seal(&iv, &buf[..len + SRTCP_INDEX_LEN], &mut [])
                }
                .ok_or(SrtpError::Malformed)?;
                buf[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
                let at = len + GCM_TAG_LEN;
                buf[at..at + SRTCP_INDEX_LEN].copy_from_slice(&word);
                if let Some(mki) = key.mki {
                    mki.write(&mut buf[at + SRTCP_INDEX_LEN..total]);
                }
            }
        }
        self.keys[slot].rtcp_used += 1;
        Ok(total)
    }

    /// Authenticates, replay-checks and (when E=1) decrypts the SRTCP packet that fills
    /// `buf`, in place. On error the buffer contents are unspecified and no state changed.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<RtcpUnprotected, SrtpError> {
        let n = buf.len();
        let tag_len = self.suite.rtcp_tag_len();
        let mki_len = self.mki_len();
        let trailer = SRTCP_INDEX_LEN + tag_len + mki_len;
        if n < RTCP_HEADER_LEN + trailer || buf[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let body_end = n - trailer;
        let aead = self.suite.is_aead();
        let (word_at, mki_at, tag_at) = if aead {
            (
                body_end + tag_len,
                body_end + tag_len + SRTCP_INDEX_LEN,
                body_end,
            )
        } else {
            (
                body_end,
                body_end + SRTCP_INDEX_LEN,
                body_end + SRTCP_INDEX_LEN + mki_len,
            )
        };
        let key_slot = self.recv_slot(&buf[mki_at..mki_at + mki_len], true)?;
        let word = be32(buf, word_at);
        let encrypted = word & E_FLAG != 0;
        let index = u64::from(word & !E_FLAG);
        let unannounced = !encrypted && self.encrypt_rtcp;
        if unannounced && !self.accept_unannounced_unencrypted_srtcp {
            return Err(SrtpError::UnencryptedSrtcpRefused);
        }
        let ssrc = be32(buf, 4);
        let slot = find(&self.rtcp_recv, ssrc);
        match slot {
            Some(i) => match self.rtcp_recv[i].window.check(index) {
                ReplayCheck::Fresh => {}
                ReplayCheck::Replayed => return Err(SrtpError::Replayed),
                ReplayCheck::TooOld => return Err(SrtpError::TooOld),
            },
            None if self.rtcp_recv.len() >= self.max_streams => {
                return Err(SrtpError::TooManyStreams)
            }
            None => {}
        }

        match &self.keys[key_slot].rtcp_keys {
            SessionKeys::AesCm { cipher, auth, salt } => {
                let (authed, rest) = buf.split_at_mut(body_end + SRTCP_INDEX_LEN);
                let tag = &rest[tag_at - authed.len()..tag_at - authed.len() + tag_len];
                if !auth.verify(authed, &[], tag) {
                    return Err(SrtpError::AuthFailed);
                }
                if encrypted {
                    cipher.apply_keystream(
                        &aes_cm_iv(salt, ssrc, index),
                        &mut authed[RTCP_HEADER_LEN..body_end],
                    );
                }
            }
            SessionKeys::Gcm { cipher, salt } => {
                let iv = gcm_iv(salt, ssrc, index);
                let mut tag = [0u8; GCM_TAG_LEN];
                tag.copy_from_slice(&buf[tag_at..tag_at + GCM_TAG_LEN]);
                let ok = if encrypted {
                    let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                    aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                    aad[RTCP_HEADER_LEN..].copy_from_slice(&word.to_be_bytes());
                    cipher.open(&iv, &aad, &mut buf[RTCP_HEADER_LEN..body_end], &tag)
                } else {
                    // Make packet || E|index contiguous where the tag was (copied above).
                    buf[body_end..body_end + SRTCP_INDEX_LEN].copy_from_slice(&word.to_be_bytes());
                    cipher.open(&iv, &buf[..body_end + SRTCP_INDEX_LEN], &mut [], &tag)
                };
                if !ok {
                    return Err(SrtpError::AuthFailed);
                }
            }
        }

        match slot {
            Some(i) => {
                let s = &mut self.rtcp_recv[i];
                s.window.accept(index);
            }
            None => {
                let window = ReplayWindow::new(self.window, index);
                insert(
                    &mut self.rtcp_recv,
                    self.max_streams,
                    RecvStream { ssrc, window },
                )?;
            }
        }
        self.keys[key_slot].rtcp_used += 1;
        Ok(RtcpUnprotected {
            len: body_end,
            unannounced_unencrypted: unannounced,
        })
    }
}

#[cfg(test)]
mod tests;
