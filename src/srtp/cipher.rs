//! The per-session crypto primitives, keyed once per session key and reused for every packet:
//! AES-CM keystreams (`aes` + `ctr`, RFC 3711 §4.1.1), HMAC-SHA1 with precomputed inner/outer
//! states (`hmac` + `sha1`, RFC 3711 §4.2.1) and AES-GCM (AWS-LC through `aws-lc-rs`, RFC
//! 7714); and the session keys of a direction, derived with [`super::kdf`].
//!
//! AES-NI / PCLMULQDQ / SHA-NI / VAES are picked at run time by the crates (`cpufeatures`,
//! AWS-LC's own CPU dispatch).
//!
//! Why AWS-LC and not RustCrypto `aes-gcm` for GCM: at SRTP packet sizes `aes-gcm` 0.11 is
//! 1.7–1.9× slower on the same machine (`benches/srtp.rs` keeps it as a column): on CPUs
//! with AVX-512 its AES backend batches 64 blocks, so a 10-block voice packet is encrypted one
//! block at a time, and GHASH runs as a second pass behind runtime-dispatch calls. AWS-LC
//! stitches AES-CTR and GHASH in one pass. Its key context is allocated with
//! `OPENSSL_malloc` and scrubbed with `OPENSSL_cleanse` when freed, which keeps the
//! "key material zeroized on drop" rule; `ring` (already in the tree for TLS) is as fast but
//! never scrubs its key schedules.

use aes::cipher::consts::U16;
use aes::cipher::{
    Array, BlockCipherEncrypt, BlockSizeUser, InnerIvInit, KeyInit, StreamCipher,
    StreamCipherCoreWrapper,
};
use aes::{Aes128Enc, Aes192Enc, Aes256Enc};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::kdf::{derive, label};
use super::suite::{CryptoSuite, HMAC_SHA1_KEY_LEN, MAX_KEY_LEN};

/// Length of an AES-GCM authentication tag (RFC 7714 §14.2: 16 octets).
pub const GCM_TAG_LEN: usize = 16;

/// An AES key schedule used in counter mode.
#[derive(Clone)]
pub enum AesCm {
    /// AES-128.
    Aes128(Aes128Enc),
    /// AES-192 (RFC 6188).
    Aes192(Aes192Enc),
    /// AES-256 (RFC 6188).
    Aes256(Aes256Enc),
}

impl AesCm {
    /// Keys AES with a 16, 24 or 32 octet key; `None` for other lengths.
    pub fn new(key: &[u8]) -> Option<AesCm> {
        Some(match key.len() {
            16 => AesCm::Aes128(Aes128Enc::new_from_slice(key).ok()?),
            24 => AesCm::Aes192(Aes192Enc::new_from_slice(key).ok()?),
            32 => AesCm::Aes256(Aes256Enc::new_from_slice(key).ok()?),
            _ => return None,
        })
    }

    /// XORs `data` with the AES-CM keystream starting at counter block `iv` (RFC 3711
    /// §4.1.1). The key schedule is borrowed, not copied.
    #[inline]
    pub fn apply_keystream(&self, iv: &[u8; 16], data: &mut [u8]) {
        let iv: &Array<u8, U16> = iv.into();
        match self {
            AesCm::Aes128(c) => keystream::<&Aes128Enc>(c, iv, data),
            AesCm::Aes192(c) => keystream::<&Aes192Enc>(c, iv, data),
            AesCm::Aes256(c) => keystream::<&Aes256Enc>(c, iv, data),
        }
    }
}

/// `ctr::Ctr128BE` over a borrowed key schedule: no per-packet key expansion or copy.
#[inline(always)]
fn keystream<C>(cipher: C, iv: &Array<u8, U16>, data: &mut [u8])
where
    C: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16>,
{
    let core = ctr::CtrCore::<C, ctr::flavors::Ctr128BE>::inner_iv_init(cipher, iv);
    StreamCipherCoreWrapper::from_core(core).apply_keystream(data);
}

/// An AES-GCM key (AEAD_AES_128_GCM or AEAD_AES_256_GCM): AWS-LC's expanded key and GHASH
/// table, zeroized by AWS-LC when dropped (see the module notes).
pub struct Gcm {
    key: LessSafeKey,
}

impl Gcm {
    /// Keys AES-GCM with a 16 or 32 octet key; `None` for other lengths.
    pub fn new(key: &[u8]) -> Option<Gcm> {
        let algorithm = match key.len() {
            16 => &AES_128_GCM,
            32 => &AES_256_GCM,
            _ => return None,
        };
        let key = UnboundKey::new(algorithm, key).ok()?;
        Some(Gcm {
            key: LessSafeKey::new(key),
        })
    }

    /// Encrypts `data` in place and returns the 16-octet tag over `aad` and the ciphertext.
    #[inline]
    pub fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> Option<[u8; GCM_TAG_LEN]> {
        // The nonce is unique per packet by construction: RFC 7714 §8.1 derives it from the
        // SSRC and the 48-bit packet index, which the caller never reuses under one key.
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), data)
            .ok()?;
        tag.as_ref().try_into().ok()
    }

    /// Verifies `tag` (constant time, inside AWS-LC) and decrypts `data` in place. On failure
    /// `data` may have been overwritten, so callers must drop the packet (they do).
    #[inline]
    pub fn open(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &[u8]) -> bool {
        if tag.len() != GCM_TAG_LEN {
            return false;
        }
        self.key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                tag,
                data,
            )
            .is_ok()
    }
}

/// HMAC-SHA1 keyed once: the inner and outer padded states are computed here and each packet
/// clones them (RFC 2104; RFC 3711 §4.2.1).
#[derive(Clone)]
pub struct HmacSha1 {
    keyed: Hmac<Sha1>,
}

impl HmacSha1 {
    pub fn new(key: &[u8]) -> Option<HmacSha1> {
        Some(HmacSha1 {
            keyed: <Hmac<Sha1> as KeyInit>::new_from_slice(key).ok()?,
        })
    }

    /// Reads the keyed state (a copy, as [`HmacSha1::compute`] makes for every packet), to
    /// bring it into the cache ahead of the packet (see `SrtpContext::warm`).
    #[inline]
    pub fn warm(&self) {
        std::hint::black_box(self.keyed.clone());
    }

    /// HMAC-SHA1 over `a || b`, the full 20 octets.
    #[inline]
    pub fn compute(&self, a: &[u8], b: &[u8]) -> [u8; 20] {
        let mut mac = self.keyed.clone();
        mac.update(a);
        mac.update(b);
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check that `tag` is the truncated HMAC-SHA1 over `a || b`.
    #[inline]
    pub fn verify(&self, a: &[u8], b: &[u8], tag: &[u8]) -> bool {
        let full = self.compute(a, b);
        match full.get(..tag.len()) {
            Some(expected) if !tag.is_empty() => bool::from(expected.ct_eq(tag)),
            _ => false,
        }
    }
}

/// The session keys of one direction for RTP or for RTCP.
// Few, long-lived values: keeping the AES-CM schedule inline saves a pointer chase per packet.
#[allow(clippy::large_enum_variant)]
pub enum SessionKeys {
    /// AES-CM encryption + HMAC-SHA1 authentication (RFC 3711, RFC 6188).
    AesCm {
        /// Session encryption key schedule.
        cipher: AesCm,
        /// Session authentication key, keyed.
        auth: HmacSha1,
        /// Session salt (112 bits).
        salt: [u8; 14],
    },
    /// AES-GCM (RFC 7714).
    Gcm {
        /// Session key.
        cipher: Gcm,
        /// Session salt (96 bits).
        salt: [u8; 12],
    },
}

impl SessionKeys {
    /// Derives the session keys for RTP (`rtcp == false`) or RTCP from a master key.
    pub fn derive(
        suite: CryptoSuite,
        master_key: &[u8],
        master_salt: &[u8],
        rtcp: bool,
    ) -> Option<SessionKeys> {
        let prf = AesCm::new(master_key)?;
        let (l_enc, l_auth, l_salt) = if rtcp {
            (label::RTCP_ENCRYPTION, label::RTCP_AUTH, label::RTCP_SALT)
        } else {
            (label::RTP_ENCRYPTION, label::RTP_AUTH, label::RTP_SALT)
        };
        let mut enc = Zeroizing::new([0u8; MAX_KEY_LEN]);
        let enc = &mut enc[..suite.key_len()];
        derive(&prf, master_salt, l_enc, enc);
        if suite.is_aead() {
            let mut salt = [0u8; 12];
            derive(&prf, master_salt, l_salt, &mut salt);
            Some(SessionKeys::Gcm {
                cipher: Gcm::new(enc)?,
                salt,
            })
        } else {
            let mut auth_key = Zeroizing::new([0u8; HMAC_SHA1_KEY_LEN]);
            derive(&prf, master_salt, l_auth, &mut auth_key[..]);
            let mut salt = [0u8; 14];
            derive(&prf, master_salt, l_salt, &mut salt);
            Some(SessionKeys::AesCm {
                cipher: AesCm::new(enc)?,
                auth: HmacSha1::new(&auth_key[..])?,
                salt,
            })
        }
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        match self {
            SessionKeys::AesCm { salt, .. } => salt.zeroize(),
            SessionKeys::Gcm { salt, .. } => salt.zeroize(),
        }
    }
}

/// The AES-CM IV of RFC 3711 §4.1.1: `(k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)`.
#[inline]
pub fn aes_cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..8]) {
        *d ^= s;
    }
    iv
}

/// The AES-GCM IV of RFC 7714 §8.1 (SRTP: `00 00 || SSRC || ROC || SEQ`, i.e. the 48-bit
/// index) and §9.1 (SRTCP: `00 00 || SSRC || 00 00 || 0 || index`), XORed with the salt.
#[inline]
pub fn gcm_iv(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; 12] {
    let mut iv = *salt;
    for (d, s) in iv[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[6..12].iter_mut().zip(&index.to_be_bytes()[2..8]) {
        *d ^= s;
    }
    iv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    /// RFC 3711 Appendix B.2: AES-CM keystream.
    #[test]
    fn rfc3711_b2_keystream() {
        let cm = AesCm::new(&hex("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap();
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let iv = aes_cm_iv(&salt, 0, 0);
        let mut ks = vec![0u8; 0xff02 * 16];
        cm.apply_keystream(&iv, &mut ks);
        assert_eq!(ks[..48], hex("E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB 41E95B3BB0A2E8DD477901E4FCA894C0")[..]);
        assert_eq!(ks[0xfeff * 16..0xff02 * 16], hex("EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE 6A2CC3787889374FBEB4C81B17BA6C44")[..]);
    }

    /// RFC 7714 §16 / §17: the IVs.
    #[test]
    fn rfc7714_ivs() {
        let salt: [u8; 12] = hex("517569642070726f2071756f").try_into().unwrap();
        assert_eq!(
            gcm_iv(&salt, 0x5501a0b2, 0xf17b)[..],
            hex("51753c6580c2726f20718414")[..]
        );
        assert_eq!(
            gcm_iv(&salt, 0x4d617273, 0x5d4)[..],
            hex("517524055203726f207170bb")[..]
        );
    }

    #[test]
    fn hmac_verify_rejects_wrong_and_empty() {
        let h = HmacSha1::new(&[1u8; 20]).unwrap();
        let t = h.compute(b"abc", b"d");
        assert!(h.verify(b"ab", b"cd", &t[..10]));
        assert!(!h.verify(b"ab", b"ce", &t[..10]));
        assert!(!h.verify(b"ab", b"cd", &[]));
    }
}
