//! SRTP crypto suites: the one table of names and key/salt/tag lengths shared by the engine and
//! the SDP rewrite (RFC 4568 §6.2, RFC 6188 §7.1, RFC 7714 §14.2).
//!
//! Like rtpengine's `crypto.c`, every property of a suite lives in one `match` per property,
//! so adding a suite is a compile error everywhere it matters.

use std::fmt;

/// An SRTP protection profile as named in the SDES `a=crypto` attribute.
///
/// `Ord` follows [`CryptoSuite::strength`]: the strongest suite compares greatest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CryptoSuite {
    /// `AES_CM_128_HMAC_SHA1_80` — RFC 4568 §6.2.1.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32` — RFC 4568 §6.2.2 (SRTCP still uses an 80-bit tag).
    AesCm128HmacSha1_32,
    /// `AES_192_CM_HMAC_SHA1_80` — RFC 6188 §7.1.
    Aes192CmHmacSha1_80,
    /// `AES_192_CM_HMAC_SHA1_32` — RFC 6188 §7.1 (SRTCP still uses an 80-bit tag).
    Aes192CmHmacSha1_32,
    /// `AES_256_CM_HMAC_SHA1_80` — RFC 6188 §7.1.
    Aes256CmHmacSha1_80,
    /// `AES_256_CM_HMAC_SHA1_32` — RFC 6188 §7.1 (SRTCP still uses an 80-bit tag).
    Aes256CmHmacSha1_32,
    /// `AEAD_AES_128_GCM` — RFC 7714 §14.2, 16-octet tag.
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM` — RFC 7714 §14.2, 16-octet tag.
    AeadAes256Gcm,
}

/// Length in octets of the HMAC-SHA1 session authentication key (RFC 3711 §8.2: n_a = 160).
pub const HMAC_SHA1_KEY_LEN: usize = 20;

/// Longest master key of any suite (AES-256).
pub const MAX_KEY_LEN: usize = 32;

/// Longest master salt of any suite (the AES-CM 112-bit salt).
pub const MAX_SALT_LEN: usize = 14;

impl CryptoSuite {
    /// Every suite, strongest first (the order [`CryptoSuite::strength`] defines).
    pub const ALL: [CryptoSuite; 8] = [
        CryptoSuite::AeadAes256Gcm,
        CryptoSuite::Aes256CmHmacSha1_80,
        CryptoSuite::AeadAes128Gcm,
        CryptoSuite::Aes192CmHmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_80,
        CryptoSuite::Aes256CmHmacSha1_32,
        CryptoSuite::Aes192CmHmacSha1_32,
        CryptoSuite::AesCm128HmacSha1_32,
    ];

    /// The registered SDES name (RFC 4568 §6.2, RFC 6188 §7.1, RFC 7714 §14.2).
    pub fn sdes_name(&self) -> &'static str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            CryptoSuite::Aes192CmHmacSha1_80 => "AES_192_CM_HMAC_SHA1_80",
            CryptoSuite::Aes192CmHmacSha1_32 => "AES_192_CM_HMAC_SHA1_32",
            CryptoSuite::Aes256CmHmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            CryptoSuite::Aes256CmHmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            CryptoSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            CryptoSuite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// Parses a suite name liberally: any letter case, and the non-standard spellings seen in
    /// the field (`AES_CM_256_HMAC_SHA1_80` from older Cisco/Polycom firmware and
    /// pjsip, `AES_CM_192_...`, `AES_128_CM_...`). Returns `None` for unknown suites, including
    /// the 8-octet-tag `AEAD_AES_*_GCM_8` variants (see [`CryptoSuite::is_short_gcm_name`]).
    pub fn from_sdes_name(name: &str) -> Option<CryptoSuite> {
        let mut buf = [0u8; 32];
        let bytes = name.trim().as_bytes();
        let upper = buf.get_mut(..bytes.len())?;
        for (dst, src) in upper.iter_mut().zip(bytes) {
            *dst = src.to_ascii_uppercase();
        }
        let suite = match &*upper {
            b"AES_CM_128_HMAC_SHA1_80" | b"AES_128_CM_HMAC_SHA1_80" => {
                CryptoSuite::AesCm128HmacSha1_80
            }
            b"AES_CM_128_HMAC_SHA1_32" | b"AES_128_CM_HMAC_SHA1_32" => {
                CryptoSuite::AesCm128HmacSha1_32
            }
            b"AES_192_CM_HMAC_SHA1_80" | b"AES_CM_192_HMAC_SHA1_80" => {
                CryptoSuite::Aes192CmHmacSha1_80
            }
            b"AES_192_CM_HMAC_SHA1_32" | b"AES_CM_192_HMAC_SHA1_32" => {
                CryptoSuite::Aes192CmHmacSha1_32
            }
            b"AES_256_CM_HMAC_SHA1_80" | b"AES_CM_256_HMAC_SHA1_80" => {
                CryptoSuite::Aes256CmHmacSha1_80
            }
            b"AES_256_CM_HMAC_SHA1_32" | b"AES_CM_256_HMAC_SHA1_32" => {
                CryptoSuite::Aes256CmHmacSha1_32
            }
            b"AEAD_AES_128_GCM" | b"AEAD_AES_128_GCM_16" => CryptoSuite::AeadAes128Gcm,
            b"AEAD_AES_256_GCM" | b"AEAD_AES_256_GCM_16" => CryptoSuite::AeadAes256Gcm,
            _ => return None,
        };
        Some(suite)
    }

    /// True for the `AEAD_AES_128_GCM_8` / `AEAD_AES_256_GCM_8` names (8-octet GCM tag, used
    /// by some libsrtp-based stacks). They are refused: RFC 7714 §14.2 registers only the
    /// 16-octet-tag suites for SDES.
    pub fn is_short_gcm_name(name: &str) -> bool {
        let n = name.trim();
        n.eq_ignore_ascii_case("AEAD_AES_128_GCM_8") || n.eq_ignore_ascii_case("AEAD_AES_256_GCM_8")
    }

    /// True for the AES-GCM AEAD suites of RFC 7714.
    pub fn is_aead(&self) -> bool {
        matches!(
            self,
            CryptoSuite::AeadAes128Gcm | CryptoSuite::AeadAes256Gcm
        )
    }

    /// Master (and session) encryption key length in octets.
    pub fn key_len(&self) -> usize {
        match self {
            CryptoSuite::AesCm128HmacSha1_80
            | CryptoSuite::AesCm128HmacSha1_32
            | CryptoSuite::AeadAes128Gcm => 16,
            CryptoSuite::Aes192CmHmacSha1_80 | CryptoSuite::Aes192CmHmacSha1_32 => 24,
            CryptoSuite::Aes256CmHmacSha1_80
            | CryptoSuite::Aes256CmHmacSha1_32
            | CryptoSuite::AeadAes256Gcm => 32,
        }
    }

    /// Master (and session) salt length in octets: 112 bits for AES-CM (RFC 3711 §8.2),
    /// 96 bits for AES-GCM (RFC 7714 §8.1).
    pub fn salt_len(&self) -> usize {
        if self.is_aead() {
            12
        } else {
            14
        }
    }

    /// Length of the base64-decoded `inline:` key||salt (RFC 4568 §6.1).
    pub fn key_salt_len(&self) -> usize {
        self.key_len() + self.salt_len()
    }

    /// SRTP authentication tag length in octets.
    pub fn rtp_tag_len(&self) -> usize {
        match self {
            CryptoSuite::AesCm128HmacSha1_80
            | CryptoSuite::Aes192CmHmacSha1_80
            | CryptoSuite::Aes256CmHmacSha1_80 => 10,
            CryptoSuite::AesCm128HmacSha1_32
            | CryptoSuite::Aes192CmHmacSha1_32
            | CryptoSuite::Aes256CmHmacSha1_32 => 4,
            CryptoSuite::AeadAes128Gcm | CryptoSuite::AeadAes256Gcm => 16,
        }
    }

    /// SRTCP authentication tag length in octets: the `_32` suites still use 80 bits for
    /// SRTCP (RFC 4568 §6.2.2, RFC 6188 §7.1).
    pub fn rtcp_tag_len(&self) -> usize {
        if self.is_aead() {
            16
        } else {
            10
        }
    }

    /// Preference rank, higher is stronger. The order: key size first, AEAD before AES-CM at
    /// equal key size, and every 80-bit tag before any 32-bit tag (a 32-bit tag is the weakest
    /// link whatever the key size).
    pub fn strength(&self) -> u8 {
        match self {
            CryptoSuite::AeadAes256Gcm => 8,
            CryptoSuite::Aes256CmHmacSha1_80 => 7,
            CryptoSuite::AeadAes128Gcm => 6,
            CryptoSuite::Aes192CmHmacSha1_80 => 5,
            CryptoSuite::AesCm128HmacSha1_80 => 4,
            CryptoSuite::Aes256CmHmacSha1_32 => 3,
            CryptoSuite::Aes192CmHmacSha1_32 => 2,
            CryptoSuite::AesCm128HmacSha1_32 => 1,
        }
    }
}

impl PartialOrd for CryptoSuite {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CryptoSuite {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.strength().cmp(&other.strength())
    }
}

impl fmt::Display for CryptoSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdes_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        for s in CryptoSuite::ALL {
            assert_eq!(CryptoSuite::from_sdes_name(s.sdes_name()), Some(s));
            assert_eq!(
                CryptoSuite::from_sdes_name(&s.sdes_name().to_ascii_lowercase()),
                Some(s)
            );
        }
    }

    #[test]
    fn non_standard_spellings() {
        assert_eq!(
            CryptoSuite::from_sdes_name("AES_CM_256_HMAC_SHA1_80"),
            Some(CryptoSuite::Aes256CmHmacSha1_80)
        );
        assert_eq!(
            CryptoSuite::from_sdes_name("aes_cm_192_hmac_sha1_32"),
            Some(CryptoSuite::Aes192CmHmacSha1_32)
        );
        assert_eq!(CryptoSuite::from_sdes_name("F8_128_HMAC_SHA1_80"), None);
        assert_eq!(CryptoSuite::from_sdes_name("AEAD_AES_128_GCM_8"), None);
        assert!(CryptoSuite::is_short_gcm_name("aead_aes_256_gcm_8"));
        assert_eq!(CryptoSuite::from_sdes_name(&"A".repeat(100)), None);
    }

    #[test]
    fn lengths() {
        let s = CryptoSuite::AesCm128HmacSha1_32;
        assert_eq!(
            (s.key_len(), s.salt_len(), s.rtp_tag_len(), s.rtcp_tag_len()),
            (16, 14, 4, 10)
        );
        let s = CryptoSuite::AeadAes256Gcm;
        assert_eq!(
            (s.key_len(), s.salt_len(), s.rtp_tag_len(), s.rtcp_tag_len()),
            (32, 12, 16, 16)
        );
        assert_eq!(CryptoSuite::Aes192CmHmacSha1_80.key_salt_len(), 38);
    }

    #[test]
    fn all_is_sorted_strongest_first() {
        let mut sorted = CryptoSuite::ALL;
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(sorted, CryptoSuite::ALL);
        assert!(CryptoSuite::AesCm128HmacSha1_80 > CryptoSuite::Aes256CmHmacSha1_32);
    }
}
