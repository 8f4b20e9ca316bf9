//! Flow tokens: the user part of the edge Contact that names one phone flow and one of its
//! bindings (RFC 5626 §5.2 style, where the edge is the "edge proxy" and the token is opaque
//! to the PBX).
//!
//! Wire form (base64url without padding, 44 characters, all `unreserved` in a SIP user part,
//! RFC 3261 §25.1):
//!
//! ```text
//!  0        1               9               17                               33
//! +--------+---------------+---------------+--------------------------------+
//! | ver=1  | flow id (BE)  | binding (BE)  | HMAC-SHA256(key, bytes 0..17)  |
//! |        |    8 bytes    |   8 bytes     |   first 16 bytes               |
//! +--------+---------------+---------------+--------------------------------+
//! ```
//!
//! The key is a per-process secret given by the caller (from the OS CSPRNG at start-up), so a
//! token from before a restart is refused, and nobody outside can forge one that routes a
//! request to another phone's TLS connection. Verification compares in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 17;
const TAG_LEN: usize = 16;
const RAW_LEN: usize = PAYLOAD_LEN + TAG_LEN;
/// Length of an encoded token in characters.
pub const ENCODED_LEN: usize = 44;

/// Why a Contact user part is not a valid flow token of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowTokenError {
    /// Not 44 characters (truncated, padded or not a token at all).
    #[error("flow token has the wrong length")]
    BadLength,
    /// Not base64url.
    #[error("flow token is not base64url")]
    BadEncoding,
    /// Unknown format version.
    #[error("unknown flow token version")]
    BadVersion,
    /// The HMAC does not match: forged, altered, or minted by another process.
    #[error("flow token authentication failed")]
    BadTag,
}

impl FlowTokenError {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadLength => "bad_length",
            Self::BadEncoding => "bad_encoding",
            Self::BadVersion => "bad_version",
            Self::BadTag => "bad_tag",
        }
    }
}

/// The per-process HMAC key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct FlowTokenKey([u8; 32]);

impl FlowTokenKey {
    /// Wraps 32 secret bytes (take them from the OS CSPRNG).
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn mac(&self, payload: &[u8]) -> [u8; TAG_LEN] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes any key length"),
        };
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }
}

impl std::fmt::Debug for FlowTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlowTokenKey(..)")
    }
}

/// What a flow token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowToken {
    /// The phone flow (TLS connection) id.
    pub flow: u64,
    /// The binding (original Contact) id within the binding table.
    pub binding: u64,
}

impl FlowToken {
    /// Encodes and signs the token: the edge Contact user part.
    pub fn encode(&self, key: &FlowTokenKey) -> String {
        let mut raw = [0u8; RAW_LEN];
        raw[0] = VERSION;
        raw[1..9].copy_from_slice(&self.flow.to_be_bytes());
        raw[9..PAYLOAD_LEN].copy_from_slice(&self.binding.to_be_bytes());
        let tag = key.mac(&raw[..PAYLOAD_LEN]);
        raw[PAYLOAD_LEN..].copy_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Verifies and decodes a Contact user part.
    pub fn decode(text: &str, key: &FlowTokenKey) -> Result<Self, FlowTokenError> {
        if text.len() != ENCODED_LEN {
            return Err(FlowTokenError::BadLength);
        }
        let mut raw = [0u8; RAW_LEN + 2];
        let n = URL_SAFE_NO_PAD
            .decode_slice(text, &mut raw)
            .map_err(|_| FlowTokenError::BadEncoding)?;
        let raw = raw.get(..n).ok_or(FlowTokenError::BadEncoding)?;
        if raw.len() != RAW_LEN {
            return Err(FlowTokenError::BadLength);
        }
        let (payload, tag) = raw.split_at(PAYLOAD_LEN);
        // Check the tag before looking at any field, version included.
        let expected = key.mac(payload);
        if !bool::from(expected.ct_eq(tag)) {
            return Err(FlowTokenError::BadTag);
        }
        let (version, ids) = payload.split_at(1);
        if version != [VERSION] {
            return Err(FlowTokenError::BadVersion);
        }
        let (flow, binding) = ids.split_at(8);
        let to_u64 = |b: &[u8]| -> Result<u64, FlowTokenError> {
            let arr: [u8; 8] = b.try_into().map_err(|_| FlowTokenError::BadLength)?;
            Ok(u64::from_be_bytes(arr))
        };
        Ok(Self {
            flow: to_u64(flow)?,
            binding: to_u64(binding)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> FlowTokenKey {
        FlowTokenKey::new([b; 32])
    }

    #[test]
    fn roundtrip_and_shape() {
        let t = FlowToken {
            flow: 7,
            binding: 42,
        };
        let s = t.encode(&key(1));
        assert_eq!(s.len(), ENCODED_LEN);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(FlowToken::decode(&s, &key(1)), Ok(t));
    }

    #[test]
    fn other_key_rejected() {
        let s = FlowToken {
            flow: 1,
            binding: 2,
        }
        .encode(&key(1));
        assert_eq!(FlowToken::decode(&s, &key(2)), Err(FlowTokenError::BadTag));
    }

    #[test]
    fn truncated_and_garbage_rejected() {
        let s = FlowToken {
            flow: 1,
            binding: 2,
        }
        .encode(&key(1));
        assert_eq!(
            FlowToken::decode(&s[..43], &key(1)),
            Err(FlowTokenError::BadLength)
        );
        assert_eq!(
            FlowToken::decode("", &key(1)),
            Err(FlowTokenError::BadLength)
        );
        let bad: String = "!".repeat(ENCODED_LEN);
        assert_eq!(
            FlowToken::decode(&bad, &key(1)),
            Err(FlowTokenError::BadEncoding)
        );
        assert_eq!(FlowTokenError::BadTag.label(), "bad_tag");
    }

    #[test]
    fn debug_hides_key() {
        assert_eq!(format!("{:?}", key(9)), "FlowTokenKey(..)");
    }

    proptest! {
        #[test]
        fn prop_roundtrip(flow in any::<u64>(), binding in any::<u64>(), k in any::<[u8; 32]>()) {
            let key = FlowTokenKey::new(k);
            let t = FlowToken { flow, binding };
            prop_assert_eq!(FlowToken::decode(&t.encode(&key), &key), Ok(t));
        }

        #[test]
        fn prop_any_flipped_bit_rejected(flow in any::<u64>(), binding in any::<u64>(),
                                         bit in 0usize..(RAW_LEN * 8)) {
            let key = key(3);
            let s = FlowToken { flow, binding }.encode(&key);
            let mut raw = URL_SAFE_NO_PAD.decode(&s).unwrap();
            raw[bit / 8] ^= 1 << (bit % 8);
            let forged = URL_SAFE_NO_PAD.encode(&raw);
            prop_assert!(FlowToken::decode(&forged, &key).is_err());
        }

        #[test]
        fn prop_decode_never_panics(s in "\\PC{0,60}") {
            let _ = FlowToken::decode(&s, &key(4));
        }
    }
}
