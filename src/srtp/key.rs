//! Master key material (RFC 3711 §8.2): fixed-size, zeroized on drop, never printed.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::suite::{CryptoSuite, MAX_KEY_LEN, MAX_SALT_LEN};

/// A master key and master salt for one [`CryptoSuite`].
///
/// The bytes live in fixed arrays (no heap copy to forget), are wiped on drop, and `Debug`
/// prints only the suite. Equality is constant-time.
#[derive(Clone)]
pub struct MasterKey {
    suite: CryptoSuite,
    key: [u8; MAX_KEY_LEN],
    salt: [u8; MAX_SALT_LEN],
}

/// Why key bytes do not fit a suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("key material length {got} does not match the suite's {expected}")]
pub struct KeyLengthError {
    /// The length the suite needs.
    pub expected: usize,
    /// The length that was given.
    pub got: usize,
}

impl MasterKey {
    /// Builds a master key from separate key and salt bytes; their lengths must match the
    /// suite exactly.
    pub fn new(suite: CryptoSuite, key: &[u8], salt: &[u8]) -> Result<MasterKey, KeyLengthError> {
        if key.len() != suite.key_len() {
            return Err(KeyLengthError {
                expected: suite.key_len(),
                got: key.len(),
            });
        }
        if salt.len() != suite.salt_len() {
            return Err(KeyLengthError {
                expected: suite.salt_len(),
                got: salt.len(),
            });
        }
        Ok(MasterKey::filled(suite, key, salt))
    }

    /// Copies `key` and `salt` (lengths already checked against `suite`) into a master key.
    fn filled(suite: CryptoSuite, key: &[u8], salt: &[u8]) -> MasterKey {
        let mut mk = MasterKey {
            suite,
            key: [0; MAX_KEY_LEN],
            salt: [0; MAX_SALT_LEN],
        };
        mk.key[..key.len()].copy_from_slice(key);
        mk.salt[..salt.len()].copy_from_slice(salt);
        mk
    }

    /// Builds a master key from the concatenated key||salt of an SDES `inline:` parameter
    /// (RFC 4568 §6.1).
    pub fn from_key_salt(suite: CryptoSuite, key_salt: &[u8]) -> Result<MasterKey, KeyLengthError> {
        if key_salt.len() != suite.key_salt_len() {
            return Err(KeyLengthError {
                expected: suite.key_salt_len(),
                got: key_salt.len(),
            });
        }
        let (key, salt) = key_salt.split_at(suite.key_len());
        MasterKey::new(suite, key, salt)
    }

    /// Builds a fresh master key whose key||salt bytes are written by `fill` (randomness is
    /// an input: production passes the OS CSPRNG, tests a fixed pattern).
    pub fn generate(suite: CryptoSuite, fill: impl FnOnce(&mut [u8])) -> MasterKey {
        let mut buf = zeroize::Zeroizing::new([0u8; MAX_KEY_LEN + MAX_SALT_LEN]);
        let n = suite.key_salt_len();
        fill(&mut buf[..n]);
        let (key, salt) = buf[..n].split_at(suite.key_len());
        MasterKey::filled(suite, key, salt)
    }

    /// The suite this key is for.
    pub fn suite(&self) -> CryptoSuite {
        self.suite
    }

    /// The master key bytes (`suite().key_len()` octets).
    pub fn key(&self) -> &[u8] {
        &self.key[..self.suite.key_len()]
    }

    /// The master salt bytes (`suite().salt_len()` octets).
    pub fn salt(&self) -> &[u8] {
        &self.salt[..self.suite.salt_len()]
    }

    /// Writes key||salt into `out` (which must hold at least `suite().key_salt_len()` octets)
    /// and returns the written length; used for the SDES `inline:` encoding.
    pub fn write_key_salt(&self, out: &mut [u8; MAX_KEY_LEN + MAX_SALT_LEN]) -> usize {
        let k = self.suite.key_len();
        let s = self.suite.salt_len();
        out[..k].copy_from_slice(self.key());
        out[k..k + s].copy_from_slice(self.salt());
        k + s
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.key.zeroize();
        self.salt.zeroize();
    }
}

impl ZeroizeOnDrop for MasterKey {}

impl PartialEq for MasterKey {
    fn eq(&self, other: &Self) -> bool {
        self.suite == other.suite
            && bool::from(self.key.ct_eq(&other.key) & self.salt.ct_eq(&other.salt))
    }
}

impl Eq for MasterKey {}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_bytes() {
        let mk = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80, |b| b.fill(0xAB));
        let dbg = format!("{mk:?}");
        assert!(!dbg.to_ascii_lowercase().contains("ab"), "{dbg}");
        assert!(!dbg.contains("171"), "{dbg}");
        assert!(dbg.contains("AesCm128HmacSha1_80"));
    }

    #[test]
    fn lengths_checked() {
        let s = CryptoSuite::AeadAes128Gcm;
        assert!(MasterKey::new(s, &[0; 16], &[0; 12]).is_ok());
        assert_eq!(
            MasterKey::new(s, &[0; 16], &[0; 14]),
            Err(KeyLengthError {
                expected: 12,
                got: 14
            })
        );
        assert!(MasterKey::from_key_salt(s, &[0; 27]).is_err());
        let mk = MasterKey::from_key_salt(s, &(0u8..28).collect::<Vec<_>>()).unwrap();
        assert_eq!(mk.key(), &(0u8..16).collect::<Vec<_>>()[..]);
        assert_eq!(mk.salt(), &(16u8..28).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn equality() {
        let a = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80, |b| b.fill(1));
        let b = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80, |b| b.fill(1));
        let c = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80, |b| b.fill(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
