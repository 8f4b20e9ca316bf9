//! The one error type of the SRTP engine, with stable metric labels.

/// Why a packet (or a context) was refused. No variant carries packet or key bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// `SrtpContext::new`: an option is out of range or does not fit the suite (replay window
    /// outside 128..=1024 after rounding up to a power of two, `max_streams` zero, lifetime zero or above 2^48,
    /// `unencrypted_srtp` with an AEAD suite).
    #[error("invalid SRTP context options")]
    InvalidOptions,
    /// Protect: the buffer has no room for the trailer (tag, MKI, SRTCP index) after `len`,
    /// or `len` exceeds the buffer.
    #[error("buffer too small for the SRTP trailer")]
    BufferTooSmall,
    /// Not an RTP/RTCP version 2 packet, shorter than its fixed header plus trailer, or its
    /// CSRC list / header extension runs past the end.
    #[error("malformed RTP/RTCP packet")]
    Malformed,
    /// The packet's MKI is not the one this context's master key carries.
    #[error("unknown MKI")]
    UnknownMki,
    /// The authentication tag (HMAC-SHA1 or GCM) does not verify.
    #[error("authentication failed")]
    AuthFailed,
    /// Unprotect: the packet index was already accepted inside the replay window (RFC 3711
    /// §3.3.2). Protect: the index was already protected (keystream reuse, RFC 3711 §9.1).
    #[error("replayed packet")]
    Replayed,
    /// The packet index lies behind the replay window (RFC 3711 §3.3.2), or its ROC cannot be
    /// estimated (it would be negative); on protect, the same for the sender's own window.
    #[error("packet too old for the replay window")]
    TooOld,
    /// The master key's packet budget is used up (RFC 3711 §9.2: 2^48 SRTP, 2^31 SRTCP, or the
    /// SDES lifetime); the key must be renegotiated.
    #[error("master key lifetime exhausted")]
    KeyExpired,
    /// An SRTCP packet with E=0 although `UNENCRYPTED_SRTCP` was not negotiated and the
    /// Cisco-quirk option is off.
    #[error("unencrypted SRTCP not negotiated")]
    UnencryptedSrtcpRefused,
    /// A packet of a new SSRC while the context already tracks `max_streams` SSRCs in that
    /// direction. Streams are never evicted: a forgotten send stream would restart at ROC 0
    /// and reuse keystream (RFC 3711 §9.1), a forgotten receive stream its replay window.
    #[error("too many SSRCs in one SRTP context")]
    TooManyStreams,
}

impl SrtpError {
    /// Stable name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SrtpError::InvalidOptions => "invalid_options",
            SrtpError::BufferTooSmall => "buffer_too_small",
            SrtpError::Malformed => "malformed",
            SrtpError::UnknownMki => "unknown_mki",
            SrtpError::AuthFailed => "auth_failed",
            SrtpError::Replayed => "replayed",
            SrtpError::TooOld => "too_old",
            SrtpError::KeyExpired => "key_expired",
            SrtpError::UnencryptedSrtcpRefused => "unencrypted_srtcp_refused",
            SrtpError::TooManyStreams => "too_many_ssrcs",
        }
    }
}
