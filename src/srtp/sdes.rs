//! SDES `a=crypto` attribute values (RFC 4568 §9.1): parsing into typed, validated key
//! parameters and printing them back for SDP output.
//!
//! ```text
//! crypto-attribute = tag 1*WSP crypto-suite 1*WSP key-params *(1*WSP session-param)
//! key-params       = key-param *(";" key-param)
//! key-param        = "inline:" key-salt ["|" lifetime] ["|" mki]
//! lifetime         = ["2^"] 1*DIGIT
//! mki              = mki-value ":" mki-length
//! session-param    = "KDR=" n / "UNENCRYPTED_SRTP" / "UNENCRYPTED_SRTCP"
//!                  / "UNAUTHENTICATED_SRTP" / "FEC_ORDER=" .. / "FEC_KEY=" .. / "WSH=" n / ext
//! ```
//!
//! What the engine cannot honour is refused with a typed [`SdesError`], never ignored
//! (RFC 4568 §6.3: an unsupported session parameter makes the line unusable).

use std::fmt::Write as _;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use zeroize::Zeroizing;

use super::key::MasterKey;
use super::suite::{CryptoSuite, MAX_KEY_LEN, MAX_SALT_LEN};

/// Largest master-key lifetime accepted: 2^48 packets (RFC 3711 §9.2 SRTP index space).
pub const MAX_LIFETIME: u64 = 1 << 48;

/// Longest MKI accepted, in octets: RFC 4568 §9.1 (`mki-length = 1*3DIGIT ; range 1..128`).
/// The widely copied `|1:32` form (an MKI of 32 octets) comes from phones and stacks that
/// rtpengine and Asterisk interoperate with, so the whole range is honoured.
pub const MAX_MKI_LEN: u8 = 128;

/// Octets of the MKI value kept as a number: the value is printed and parsed in decimal
/// (RFC 4568 §9.1 `mki-value = 1*DIGIT`) and sits right-aligned in the `len` wire octets.
/// Values above 2^128 - 1 (40 digits or more) are refused as [`SdesError::BadMki`]; nothing
/// in the field numbers its keys that far.
const MKI_VALUE_LEN: usize = 16;

/// Base64 that decodes with or without `=` padding (some phones drop it) and prints it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// One parsed `a=crypto` attribute value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// The tag (1 to 9 digits) that the answer echoes (RFC 4568 §6.1).
    pub tag: u32,
    /// The crypto suite.
    pub suite: CryptoSuite,
    /// One or more master keys; when more than one, every key carries an MKI of the same
    /// length and distinct value (RFC 4568 §6.1).
    pub keys: Vec<KeyParams>,
    /// The session parameters the engine honours.
    pub session_params: SessionParams,
}

/// One `inline:` key parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyParams {
    /// Master key and salt.
    pub master_key: MasterKey,
    /// Master key lifetime in packets (`None`: the RFC 3711 default, 2^48 SRTP / 2^31 SRTCP).
    pub lifetime: Option<u64>,
    /// Master key identifier carried in every packet, if any.
    pub mki: Option<Mki>,
}

/// A master key identifier (RFC 3711 §3.1): its value and its length on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mki {
    value: u128,
    len: u8,
}

/// The session parameters of RFC 4568 §6.3 that the engine supports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionParams {
    /// `UNENCRYPTED_SRTP`: RTP payloads are authenticated but not encrypted (AES-CM suites
    /// only).
    pub unencrypted_srtp: bool,
    /// `UNENCRYPTED_SRTCP`: SRTCP packets are sent with E=0 (authenticated only).
    pub unencrypted_srtcp: bool,
    /// `WSH=n`: the peer's replay window size hint (≥ 64). A hint: the receiver's configured
    /// window is used, at least this large when the configuration allows.
    pub window_size_hint: Option<u32>,
}

/// A session parameter the engine refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsupportedParam {
    /// `UNAUTHENTICATED_SRTP`: refused because media latching relies on authentication.
    UnauthenticatedSrtp,
    /// `KDR=n`: session key re-derivation is not implemented (keys are derived once).
    Kdr,
    /// `FEC_ORDER=`: forward error correction ordering is not implemented.
    FecOrder,
    /// `FEC_KEY=`: a separate FEC key is not implemented.
    FecKey,
    /// `UNENCRYPTED_SRTP` with an AEAD suite: RFC 7714 defines no such mode.
    UnencryptedSrtpWithAead,
    /// A session extension parameter this implementation does not know.
    Extension,
}

impl UnsupportedParam {
    /// Stable name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            UnsupportedParam::UnauthenticatedSrtp => "unauthenticated_srtp",
            UnsupportedParam::Kdr => "kdr",
            UnsupportedParam::FecOrder => "fec_order",
            UnsupportedParam::FecKey => "fec_key",
            UnsupportedParam::UnencryptedSrtpWithAead => "unencrypted_srtp_aead",
            UnsupportedParam::Extension => "extension",
        }
    }
}

/// Why an `a=crypto` value was refused. No variant carries key material.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdesError {
    /// The value has fewer than the three mandatory fields (tag, suite, key-params).
    #[error("crypto attribute is missing fields")]
    MissingField,
    /// The tag is not 1 to 9 decimal digits.
    #[error("crypto attribute tag is not 1-9 digits")]
    BadTag,
    /// The crypto suite is not one this implementation supports.
    #[error("unknown or unsupported crypto suite")]
    UnknownSuite,
    /// An `AEAD_AES_*_GCM_8` (8-octet tag) suite, refused on purpose.
    #[error("AES-GCM suites with an 8-octet tag are refused")]
    ShortGcmTag,
    /// A key method other than `inline:`.
    #[error("key method is not inline")]
    UnsupportedKeyMethod,
    /// The key||salt is not valid base64.
    #[error("key is not valid base64")]
    BadBase64,
    /// The decoded key||salt length does not match the suite.
    #[error("key length does not match the crypto suite")]
    KeyLength,
    /// The lifetime is not a decimal number or `2^n`, or is zero.
    #[error("malformed key lifetime")]
    BadLifetime,
    /// The lifetime exceeds 2^48 packets.
    #[error("key lifetime exceeds 2^48")]
    LifetimeTooLarge,
    /// The MKI is not `value:length` with decimal numbers, or the value does not fit.
    #[error("malformed MKI")]
    BadMki,
    /// The MKI length is outside 1..=128 octets (RFC 4568 §9.1).
    #[error("MKI length outside 1..=128 octets")]
    MkiLength,
    /// Several keys without an MKI each, with MKIs of different lengths, or a repeated MKI.
    #[error("several keys need distinct MKIs of one length")]
    MkiMismatch,
    /// A key-param field after the key is neither a lifetime nor an MKI, or repeats one.
    #[error("malformed key parameter")]
    BadKeyParam,
    /// A session parameter is malformed (e.g. `WSH=` below 64 or not a number).
    #[error("malformed session parameter")]
    BadSessionParam,
    /// A well-formed session parameter the engine does not support.
    #[error("unsupported session parameter {}", .0.label())]
    UnsupportedSessionParam(UnsupportedParam),
}

impl SdesError {
    /// Stable name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SdesError::MissingField => "missing_field",
            SdesError::BadTag => "bad_tag",
            SdesError::UnknownSuite => "unknown_suite",
            SdesError::ShortGcmTag => "short_gcm_tag",
            SdesError::UnsupportedKeyMethod => "unsupported_key_method",
            SdesError::BadBase64 => "bad_base64",
            SdesError::KeyLength => "key_length",
            SdesError::BadLifetime => "bad_lifetime",
            SdesError::LifetimeTooLarge => "lifetime_too_large",
            SdesError::BadMki => "bad_mki",
            SdesError::MkiLength => "mki_length",
            SdesError::MkiMismatch => "mki_mismatch",
            SdesError::BadKeyParam => "bad_key_param",
            SdesError::BadSessionParam => "bad_session_param",
            SdesError::UnsupportedSessionParam(_) => "unsupported_session_param",
        }
    }
}

impl Mki {
    /// An MKI of `len` octets (1..=128) with the given value, which must fit in `len` octets.
    pub fn new(value: u128, len: u8) -> Option<Mki> {
        if !(1..=MAX_MKI_LEN).contains(&len) {
            return None;
        }
        if usize::from(len) < MKI_VALUE_LEN && value >= 1u128 << (8 * u32::from(len)) {
            return None;
        }
        Some(Mki { value, len })
    }

    /// The MKI value.
    pub fn value(&self) -> u128 {
        self.value
    }

    /// The MKI length on the wire, in octets.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false (an MKI has 1..=128 octets); present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the big-endian wire form into `out[..self.len()]`: the value right-aligned,
    /// zeros before it (RFC 3711 §3.1 leaves the MKI's inner structure to key management).
    pub fn write(&self, out: &mut [u8]) {
        let be = self.value.to_be_bytes();
        let n = self.len();
        let (pad, tail) = split_value(n);
        out[..pad].fill(0);
        out[pad..n].copy_from_slice(&be[MKI_VALUE_LEN - tail..]);
    }

    /// True when `wire` (exactly `self.len()` octets) carries this MKI.
    pub fn matches(&self, wire: &[u8]) -> bool {
        let be = self.value.to_be_bytes();
        let (pad, tail) = split_value(self.len());
        wire.len() == self.len()
            && wire[..pad].iter().all(|&b| b == 0)
            && wire[pad..] == be[MKI_VALUE_LEN - tail..]
    }
}

/// For an MKI of `len` octets: how many leading zero octets precede the value, and how many
/// low-order octets of the value are on the wire.
fn split_value(len: usize) -> (usize, usize) {
    let tail = len.min(MKI_VALUE_LEN);
    (len - tail, tail)
}

impl KeyParams {
    /// A key parameter with no lifetime and no MKI.
    pub fn new(master_key: MasterKey) -> KeyParams {
        KeyParams {
            master_key,
            lifetime: None,
            mki: None,
        }
    }
}

impl CryptoAttribute {
    /// Parses an `a=crypto` attribute value (the text after `a=crypto:`).
    pub fn parse(value: &str) -> Result<CryptoAttribute, SdesError> {
        let mut fields = value.split_ascii_whitespace();
        let tag_text = fields.next().ok_or(SdesError::MissingField)?;
        let suite_text = fields.next().ok_or(SdesError::MissingField)?;
        let keys_text = fields.next().ok_or(SdesError::MissingField)?;

        let tag = parse_tag(tag_text)?;
        let suite = match CryptoSuite::from_sdes_name(suite_text) {
            Some(s) => s,
            None if CryptoSuite::is_short_gcm_name(suite_text) => {
                return Err(SdesError::ShortGcmTag)
            }
            None => return Err(SdesError::UnknownSuite),
        };

        let mut keys = Vec::new();
        for key_param in keys_text.split(';') {
            keys.push(parse_key_param(suite, key_param)?);
        }
        check_mkis(&keys)?;

        let mut session_params = SessionParams::default();
        for param in fields {
            parse_session_param(suite, param, &mut session_params)?;
        }
        Ok(CryptoAttribute {
            tag,
            suite,
            keys,
            session_params,
        })
    }

    /// Prints the attribute value (without `a=crypto:`), e.g.
    /// `1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4`.
    ///
    /// This is an explicit method rather than `Display` so key material is never printed by a
    /// stray `{}` in a log line.
    pub fn to_sdp_value(&self) -> String {
        let mut out = String::with_capacity(96);
        // Writing to a String cannot fail.
        let _ = write!(out, "{} {} ", self.tag, self.suite.sdes_name());
        for (i, kp) in self.keys.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            out.push_str("inline:");
            let mut raw = Zeroizing::new([0u8; MAX_KEY_LEN + MAX_SALT_LEN]);
            let n = kp.master_key.write_key_salt(&mut raw);
            BASE64.encode_string(&raw[..n], &mut out);
            if let Some(lt) = kp.lifetime {
                if lt.is_power_of_two() {
                    let _ = write!(out, "|2^{}", lt.trailing_zeros());
                } else {
                    let _ = write!(out, "|{lt}");
                }
            }
            if let Some(mki) = kp.mki {
                let _ = write!(out, "|{}:{}", mki.value, mki.len);
            }
        }
        let p = &self.session_params;
        if p.unencrypted_srtp {
            out.push_str(" UNENCRYPTED_SRTP");
        }
        if p.unencrypted_srtcp {
            out.push_str(" UNENCRYPTED_SRTCP");
        }
        if let Some(w) = p.window_size_hint {
            let _ = write!(out, " WSH={w}");
        }
        out
    }
}

fn parse_tag(text: &str) -> Result<u32, SdesError> {
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SdesError::BadTag);
    }
    text.parse().map_err(|_| SdesError::BadTag)
}

fn parse_key_param(suite: CryptoSuite, text: &str) -> Result<KeyParams, SdesError> {
    let (method, info) = text
        .split_once(':')
        .ok_or(SdesError::UnsupportedKeyMethod)?;
    if !method.eq_ignore_ascii_case("inline") {
        return Err(SdesError::UnsupportedKeyMethod);
    }
    let mut parts = info.split('|');
    // `split` always yields at least one item.
    let key_text = parts.next().unwrap_or_default();
    let master_key = decode_key(suite, key_text)?;

    let mut lifetime = None;
    let mut mki = None;
    for part in parts {
        if part.contains(':') {
            if mki.is_some() {
                return Err(SdesError::BadKeyParam);
            }
            mki = Some(parse_mki(part)?);
        } else {
            // RFC 4568 §9.1 orders lifetime before MKI.
            if lifetime.is_some() || mki.is_some() {
                return Err(SdesError::BadKeyParam);
            }
            lifetime = Some(parse_lifetime(part)?);
        }
    }
    Ok(KeyParams {
        master_key,
        lifetime,
        mki,
    })
}

fn decode_key(suite: CryptoSuite, text: &str) -> Result<MasterKey, SdesError> {
    // 64 base64 characters hold 48 octets, more than the longest key||salt (46).
    if text.is_empty() || text.len() > 64 {
        return Err(if text.is_empty() {
            SdesError::BadBase64
        } else {
            SdesError::KeyLength
        });
    }
    let mut buf = Zeroizing::new([0u8; 48]);
    let n = BASE64
        .decode_slice(text.as_bytes(), &mut buf[..])
        .map_err(|_| SdesError::BadBase64)?;
    MasterKey::from_key_salt(suite, &buf[..n]).map_err(|_| SdesError::KeyLength)
}

fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_lifetime(text: &str) -> Result<u64, SdesError> {
    let value = if let Some(exp) = text.strip_prefix("2^") {
        let exp = parse_decimal(exp).ok_or(SdesError::BadLifetime)?;
        if exp > 48 {
            return Err(SdesError::LifetimeTooLarge);
        }
        1u64 << exp
    } else {
        parse_decimal(text).ok_or(SdesError::BadLifetime)?
    };
    if value == 0 {
        return Err(SdesError::BadLifetime);
    }
    if value > MAX_LIFETIME {
        return Err(SdesError::LifetimeTooLarge);
    }
    Ok(value)
}

fn parse_mki(text: &str) -> Result<Mki, SdesError> {
    let (value, len) = text.split_once(':').ok_or(SdesError::BadMki)?;
    // 39 digits hold every u128; longer is refused before parsing.
    if value.is_empty() || value.len() > 39 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SdesError::BadMki);
    }
    let value: u128 = value.parse().map_err(|_| SdesError::BadMki)?;
    let len = parse_decimal(len).ok_or(SdesError::BadMki)?;
    if !(1..=u64::from(MAX_MKI_LEN)).contains(&len) {
        return Err(SdesError::MkiLength);
    }
    let len = u8::try_from(len).map_err(|_| SdesError::MkiLength)?;
    Mki::new(value, len).ok_or(SdesError::BadMki)
}

fn check_mkis(keys: &[KeyParams]) -> Result<(), SdesError> {
    if keys.len() < 2 {
        return Ok(());
    }
    let first_len = keys.first().and_then(|k| k.mki).map(|m| m.len);
    for (i, k) in keys.iter().enumerate() {
        let mki = k.mki.ok_or(SdesError::MkiMismatch)?;
        if Some(mki.len) != first_len {
            return Err(SdesError::MkiMismatch);
        }
        if keys[..i]
            .iter()
            .any(|o| o.mki.map(|m| m.value) == Some(mki.value))
        {
            return Err(SdesError::MkiMismatch);
        }
    }
    Ok(())
}

fn parse_session_param(
    suite: CryptoSuite,
    text: &str,
    params: &mut SessionParams,
) -> Result<(), SdesError> {
    let (name, value) = match text.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (text, None),
    };
    let unsupported = |p| Err(SdesError::UnsupportedSessionParam(p));
    match (name.to_ascii_uppercase().as_str(), value) {
        ("UNENCRYPTED_SRTP", None) => {
            if suite.is_aead() {
                return unsupported(UnsupportedParam::UnencryptedSrtpWithAead);
            }
            params.unencrypted_srtp = true;
        }
        ("UNENCRYPTED_SRTCP", None) => params.unencrypted_srtcp = true,
        ("UNAUTHENTICATED_SRTP", None) => {
            return unsupported(UnsupportedParam::UnauthenticatedSrtp)
        }
        ("KDR", Some(v)) => {
            // RFC 4568 §6.3.1: an exponent 0..=24.
            match parse_decimal(v) {
                Some(n) if n <= 24 => return unsupported(UnsupportedParam::Kdr),
                _ => return Err(SdesError::BadSessionParam),
            }
        }
        ("WSH", Some(v)) => match parse_decimal(v) {
            // RFC 4568 §6.3.6: minimum 64.
            Some(n) if n >= 64 => {
                params.window_size_hint = Some(u32::try_from(n).unwrap_or(u32::MAX))
            }
            _ => return Err(SdesError::BadSessionParam),
        },
        ("FEC_ORDER", Some(_)) => return unsupported(UnsupportedParam::FecOrder),
        ("FEC_KEY", Some(_)) => return unsupported(UnsupportedParam::FecKey),
        ("UNENCRYPTED_SRTP" | "UNENCRYPTED_SRTCP" | "UNAUTHENTICATED_SRTP", Some(_))
        | ("KDR" | "WSH" | "FEC_ORDER" | "FEC_KEY", None) => {
            return Err(SdesError::BadSessionParam)
        }
        _ => return unsupported(UnsupportedParam::Extension),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // RFC 4568 §4 example key.
    const RFC_KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

    #[test]
    fn rfc4568_example() {
        let a = CryptoAttribute::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4"
        ))
        .unwrap();
        assert_eq!(a.tag, 1);
        assert_eq!(a.suite, CryptoSuite::AesCm128HmacSha1_80);
        assert_eq!(a.keys.len(), 1);
        assert_eq!(a.keys[0].lifetime, Some(1 << 20));
        assert_eq!(a.keys[0].mki, Mki::new(1, 4));
        assert_eq!(&a.keys[0].master_key.key()[..3], b"=-n");
        assert_eq!(
            a.to_sdp_value(),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4")
        );
    }

    #[test]
    fn missing_padding_and_decimal_lifetime() {
        // 38 octets for AES-192: 52 base64 chars, the last being '=' when padded.
        let key = BASE64.encode([7u8; 38]);
        assert!(key.ends_with('='));
        let unpadded = key.trim_end_matches('=');
        let a = CryptoAttribute::parse(&format!(
            "12 AES_CM_192_HMAC_SHA1_32 inline:{unpadded}|1000 UNENCRYPTED_SRTCP WSH=128"
        ))
        .unwrap();
        assert_eq!(a.suite, CryptoSuite::Aes192CmHmacSha1_32);
        assert_eq!(a.keys[0].lifetime, Some(1000));
        assert!(a.session_params.unencrypted_srtcp);
        assert_eq!(a.session_params.window_size_hint, Some(128));
        let printed = a.to_sdp_value();
        assert_eq!(CryptoAttribute::parse(&printed).unwrap(), a);
        assert!(printed.contains(&key));
    }

    #[test]
    fn several_keys_need_mkis() {
        let k = BASE64.encode([1u8; 30]);
        let ok = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|1:2;inline:{k}|2^31|2:2");
        let a = CryptoAttribute::parse(&ok).unwrap();
        assert_eq!(a.keys.len(), 2);
        assert_eq!(a.keys[1].lifetime, Some(1 << 31));
        let bad = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|1:2;inline:{k}");
        assert_eq!(CryptoAttribute::parse(&bad), Err(SdesError::MkiMismatch));
        let bad = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|1:2;inline:{k}|1:2");
        assert_eq!(CryptoAttribute::parse(&bad), Err(SdesError::MkiMismatch));
        let bad = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|1:2;inline:{k}|2:3");
        assert_eq!(CryptoAttribute::parse(&bad), Err(SdesError::MkiMismatch));
    }

    #[test]
    fn refusals_are_typed() {
        let k = BASE64.encode([1u8; 30]);
        let k44 = BASE64.encode([1u8; 44]);
        let cases: Vec<(String, SdesError)> = vec![
            ("".into(), SdesError::MissingField),
            ("1 AES_CM_128_HMAC_SHA1_80".into(), SdesError::MissingField),
            (
                format!("x1 AES_CM_128_HMAC_SHA1_80 inline:{k}"),
                SdesError::BadTag,
            ),
            (
                format!("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{k}"),
                SdesError::BadTag,
            ),
            (
                format!("1 F8_128_HMAC_SHA1_80 inline:{k}"),
                SdesError::UnknownSuite,
            ),
            (
                format!("1 AEAD_AES_128_GCM_8 inline:{k44}"),
                SdesError::ShortGcmTag,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 uri:{k}"),
                SdesError::UnsupportedKeyMethod,
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:@@@@".into(),
                SdesError::BadBase64,
            ),
            (
                format!("1 AES_CM_256_HMAC_SHA1_80 inline:{k}"),
                SdesError::KeyLength,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|2^49"),
                SdesError::LifetimeTooLarge,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|281474976710657"),
                SdesError::LifetimeTooLarge,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|0"),
                SdesError::BadLifetime,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|2^x"),
                SdesError::BadLifetime,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|1:129"),
                SdesError::MkiLength,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|1:1000"),
                SdesError::MkiLength,
            ),
            (
                format!(
                    "1 AES_CM_128_HMAC_SHA1_80 inline:{k}|340282366920938463463374607431768211456:128"
                ),
                SdesError::BadMki,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|65536:2"),
                SdesError::BadMki,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|1:0"),
                SdesError::MkiLength,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|256:1"),
                SdesError::BadMki,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|1:1|2^20"),
                SdesError::BadKeyParam,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k} UNAUTHENTICATED_SRTP"),
                SdesError::UnsupportedSessionParam(UnsupportedParam::UnauthenticatedSrtp),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k} KDR=10"),
                SdesError::UnsupportedSessionParam(UnsupportedParam::Kdr),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k} KDR=25"),
                SdesError::BadSessionParam,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k} WSH=32"),
                SdesError::BadSessionParam,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k} FEC_ORDER=FEC_SRTP"),
                SdesError::UnsupportedSessionParam(UnsupportedParam::FecOrder),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k} -FOO"),
                SdesError::UnsupportedSessionParam(UnsupportedParam::Extension),
            ),
            (
                format!("1 AEAD_AES_256_GCM inline:{k44} UNENCRYPTED_SRTP"),
                SdesError::UnsupportedSessionParam(UnsupportedParam::UnencryptedSrtpWithAead),
            ),
        ];
        for (line, err) in cases {
            assert_eq!(CryptoAttribute::parse(&line), Err(err), "{line}");
            assert!(!err.label().is_empty());
        }
    }

    #[test]
    fn debug_does_not_leak_key() {
        let a =
            CryptoAttribute::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}")).unwrap();
        let dbg = format!("{a:?}");
        assert!(!dbg.contains(RFC_KEY));
        assert!(!dbg.contains("61, 45")); // the first key bytes '=' '-' as decimals
    }

    #[test]
    fn mki_wire_form() {
        let m = Mki::new(0x0102, 3).unwrap();
        let mut out = [0u8; 3];
        m.write(&mut out);
        assert_eq!(out, [0, 1, 2]);
        assert!(m.matches(&[0, 1, 2]));
        assert!(!m.matches(&[0, 1, 3]));
        assert!(Mki::new(u128::from(u32::MAX), 4).is_some());
        assert!(Mki::new(1 << 32, 4).is_none());
        assert!(Mki::new(0, 129).is_none());
        assert!(Mki::new(0, 0).is_none());
    }

    /// RFC 4568 §6.1's `|1:32`: value 1 in 32 octets, i.e. 31 zero octets then 0x01.
    #[test]
    fn long_mki_is_accepted_and_right_aligned() {
        let a = CryptoAttribute::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:32"
        ))
        .unwrap();
        let m = a.keys[0].mki.unwrap();
        assert_eq!((m.value(), m.len()), (1, 32));
        let mut wire = [0xffu8; 32];
        m.write(&mut wire);
        assert_eq!(wire[..31], [0u8; 31]);
        assert_eq!(wire[31], 1);
        assert!(m.matches(&wire));
        wire[0] = 1;
        assert!(!m.matches(&wire), "a non-zero pad octet is another MKI");
        assert!(a.to_sdp_value().ends_with("|2^20|1:32"));

        let max = Mki::new(u128::MAX, MAX_MKI_LEN).unwrap();
        let mut wire = [0xaau8; 128];
        max.write(&mut wire);
        assert_eq!(wire[..112], [0u8; 112]);
        assert_eq!(wire[112..], [0xffu8; 16]);
        assert!(max.matches(&wire));
        assert!(!max.matches(&wire[..127]));
        let line = format!(
            "7 AEAD_AES_256_GCM inline:{}|{}:128",
            BASE64.encode([3u8; 44]),
            u128::MAX
        );
        let parsed = CryptoAttribute::parse(&line).unwrap();
        assert_eq!(parsed.keys[0].mki, Some(max));
        assert_eq!(parsed.to_sdp_value(), line);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = CryptoAttribute::parse(&s);
        }

        #[test]
        fn print_parse_roundtrip(
            tag in 0u32..=999_999_999,
            suite_idx in 0usize..8,
            bytes in proptest::collection::vec(any::<u8>(), 46),
            lifetime in proptest::option::of(1u64..=MAX_LIFETIME),
            mki in proptest::option::of((any::<u128>(), 1u8..=MAX_MKI_LEN)),
            unenc_rtcp in any::<bool>(),
            unenc_rtp in any::<bool>(),
        ) {
            let suite = CryptoSuite::ALL[suite_idx];
            let master_key = MasterKey::from_key_salt(suite, &bytes[..suite.key_salt_len()]).unwrap();
            let mki = mki.and_then(|(v, l)| {
                let shift = 8 * (MKI_VALUE_LEN as u32).saturating_sub(u32::from(l));
                Mki::new(v.checked_shr(shift).unwrap_or(0), l)
            });
            let attr = CryptoAttribute {
                tag,
                suite,
                keys: vec![KeyParams { master_key, lifetime, mki }],
                session_params: SessionParams {
                    unencrypted_srtp: unenc_rtp && !suite.is_aead(),
                    unencrypted_srtcp: unenc_rtcp,
                    window_size_hint: None,
                },
            };
            let printed = attr.to_sdp_value();
            prop_assert_eq!(CryptoAttribute::parse(&printed), Ok(attr));
        }
    }
}
