//! Session key derivation (RFC 3711 §4.3): the AES-CM PRF with key derivation rate 0, for the
//! AES-128/192/256 master keys of RFC 3711 / RFC 6188 §3 and the 96-bit GCM master salt of
//! RFC 7714 §11.

use super::cipher::AesCm;

/// The AES-CM PRF of RFC 3711 §4.3.3 with key derivation rate 0: fills `out` with the
/// session key for `label`. `master_salt` is 14 octets, or 12 for AES-GCM (RFC 7714 §11:
/// right-padded with zeros to 112 bits, as libsrtp does).
pub fn derive(prf: &AesCm, master_salt: &[u8], label: u8, out: &mut [u8]) {
    // x = (label || r) XOR master_salt, with key_id = label || r right-aligned in 112 bits
    // (r = index DIV kdr = 0), then IV = x * 2^16.
    let mut iv = [0u8; 16];
    let n = master_salt.len().min(14);
    iv[..n].copy_from_slice(&master_salt[..n]);
    iv[7] ^= label;
    out.fill(0);
    prf.apply_keystream(&iv, out);
}

/// KDF labels, RFC 3711 §4.3.2.
pub mod label {
    /// SRTP encryption key.
    pub const RTP_ENCRYPTION: u8 = 0x00;
    /// SRTP authentication key.
    pub const RTP_AUTH: u8 = 0x01;
    /// SRTP salt.
    pub const RTP_SALT: u8 = 0x02;
    /// SRTCP encryption key.
    pub const RTCP_ENCRYPTION: u8 = 0x03;
    /// SRTCP authentication key.
    pub const RTCP_AUTH: u8 = 0x04;
    /// SRTCP salt.
    pub const RTCP_SALT: u8 = 0x05;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    fn check_kdf(mk: &str, ms: &str, enc: &str, salt: &str, auth: &str) {
        let prf = AesCm::new(&hex(mk)).unwrap();
        let ms = hex(ms);
        let e = hex(enc);
        let mut out = vec![0u8; e.len()];
        derive(&prf, &ms, label::RTP_ENCRYPTION, &mut out);
        assert_eq!(out, e);
        let mut out = [0u8; 14];
        derive(&prf, &ms, label::RTP_SALT, &mut out);
        assert_eq!(out[..], hex(salt)[..]);
        let a = hex(auth);
        let mut out = vec![0u8; a.len()];
        derive(&prf, &ms, label::RTP_AUTH, &mut out);
        assert_eq!(out, a);
    }

    /// RFC 3711 Appendix B.3: key derivation (the full 94-octet auth key output too).
    #[test]
    fn rfc3711_b3_kdf() {
        check_kdf(
            "E1F97A0D3E018BE0D64FA32C06DE4139",
            "0EC675AD498AFEEBB6960B3AABE6",
            "C61E7A93744F39EE10734AFE3FF7A087",
            "30CBBC08863D8C85D49DB34A9AE1",
            "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2",
        );
    }

    /// RFC 6188 §7.2 (AES-256 PRF) and §7.4 (AES-192 PRF).
    #[test]
    fn rfc6188_kdf() {
        check_kdf(
            "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6",
            "3b04803de51ee7c96423ab5b78d2",
            "5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4",
            "fa31791685ca444a9e07c6c64e93",
            "fd9c32d39ed5fbb5a9dc96b30818454d1313dc05",
        );
        check_kdf(
            "73edc66c4fa15776fb57f9505c17136550ffda71f3e8e5f1",
            "c8522f3acd4ce86d5add78edbb11",
            "31874736a8f1143870c26e4857d8a5b2c4a354407faadabb",
            "2372b82d639b6d8503a47adc0a6c",
            "355b10973cd95b9eacf4061c7e1a7151e7cfbfcb",
        );
    }
}
