//! The one reader of certificate, key and CRL files (PEM or DER), with errors that name the
//! file. Config validation (`check-config`, start-up) and `identity` (every load and reload)
//! both read through it, so a file `check-config` accepts is a file the edge can load.
//!
//! The rule is the stricter of the two readers this replaces: every certificate of a file,
//! PEM or DER, must parse as one X.509 certificate with nothing after it, and every CRL as a
//! CRL; a file that holds no object of the expected kind is refused.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use x509_parser::prelude::FromDer;

/// What a file was expected to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// X.509 certificates (`CERTIFICATE` PEM blocks, or one DER certificate).
    Certificate,
    /// Certificate revocation lists (`X509 CRL` PEM blocks, or one DER CRL).
    Crl,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Certificate => "certificate",
            Self::Crl => "CRL",
        })
    }
}

/// A certificate, key or CRL file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but holds no usable private key.
    #[error("{path}: {what}")]
    Malformed { path: PathBuf, what: String },
    /// The file holds no certificate (or CRL) at all: empty, or PEM without such a block.
    #[error("{path}: no {expected} in the file (neither PEM blocks nor DER)")]
    Empty { path: PathBuf, expected: Expected },
    /// Object #`index` (0-based) of the file is not a valid certificate (or CRL): bad PEM
    /// encoding, or DER that does not parse.
    #[error("{path}: {expected} #{index} is not valid {expected} DER")]
    Invalid {
        path: PathBuf,
        expected: Expected,
        index: usize,
    },
}

impl FileError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unreadable { .. } => "unreadable",
            Self::Malformed { .. } | Self::Empty { .. } | Self::Invalid { .. } => "malformed",
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Unreadable { path, .. }
            | Self::Malformed { path, .. }
            | Self::Empty { path, .. }
            | Self::Invalid { path, .. } => path,
        }
    }
}

/// Why [`parse_certificates`] refused its input (the pure part of [`read_certificates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseFailure {
    /// No certificate in the input.
    Nothing,
    /// Certificate #n is not X.509 (or its PEM block is broken: n = 0).
    Bad(usize),
}

/// Reads a whole file.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|source| FileError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

fn malformed(path: &Path, what: impl Into<String>) -> FileError {
    FileError::Malformed {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// One X.509 certificate and nothing after it (the rule `identity::chain` parses by).
fn is_x509(der: &[u8]) -> bool {
    matches!(
        x509_parser::certificate::X509Certificate::from_der(der),
        Ok(([], _))
    )
}

/// Certificates from PEM (several blocks) or DER bytes, each checked to parse as X.509.
pub fn parse_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, ParseFailure> {
    let certs: Vec<CertificateDer<'static>> = if is_pem(bytes) {
        CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<_, _>>()
            .map_err(|_| ParseFailure::Bad(0))?
    } else if bytes.is_empty() {
        Vec::new()
    } else {
        vec![CertificateDer::from(bytes.to_vec())]
    };
    if certs.is_empty() {
        return Err(ParseFailure::Nothing);
    }
    if let Some(index) = certs.iter().position(|c| !is_x509(c)) {
        return Err(ParseFailure::Bad(index));
    }
    Ok(certs)
}

/// All certificates in a PEM file (several allowed) or the one in a DER file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let bytes = read_bytes(path)?;
    parse_certificates(&bytes).map_err(|failure| match failure {
        ParseFailure::Nothing => FileError::Empty {
            path: path.to_path_buf(),
            expected: Expected::Certificate,
        },
        ParseFailure::Bad(index) => FileError::Invalid {
            path: path.to_path_buf(),
            expected: Expected::Certificate,
            index,
        },
    })
}

/// The private key in a PEM (PKCS#8, PKCS#1 or SEC1) or DER (PKCS#8) file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, FileError> {
    let bytes = read_bytes(path)?;
    if !is_pem(&bytes) {
        return PrivateKeyDer::try_from(bytes)
            .map_err(|e| malformed(path, format!("not a DER private key: {e}")));
    }
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| malformed(path, format!("no usable PRIVATE KEY block: {e}")))
}

/// All CRLs in a PEM file or the one in a DER file, each checked to parse.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, FileError> {
    let bytes = read_bytes(path)?;
    let invalid = |index| FileError::Invalid {
        path: path.to_path_buf(),
        expected: Expected::Crl,
        index,
    };
    let crls: Vec<CertificateRevocationListDer<'static>> = if is_pem(&bytes) {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|_| invalid(0))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(FileError::Empty {
            path: path.to_path_buf(),
            expected: Expected::Crl,
        });
    }
    if let Some(index) = crls
        .iter()
        .position(|crl| x509_parser::parse_x509_crl(crl).is_err())
    {
        return Err(invalid(index));
    }
    Ok(crls)
}

/// Checks that a text file can be read (inventory, deny-list).
pub fn check_readable(path: &Path) -> Result<(), FileError> {
    read_bytes(path).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_the_path() {
        let e = read_certificates(Path::new("/nonexistent/x.crt")).unwrap_err();
        assert_eq!(e.label(), "unreadable");
        assert!(e.to_string().contains("/nonexistent/x.crt"));
    }

    #[test]
    fn garbage_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.crt");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_certificates(&p).unwrap_err().label(), "malformed");
        std::fs::write(&p, b"-----BEGIN NOTHING-----\n-----END NOTHING-----\n").unwrap();
        assert_eq!(read_certificates(&p).unwrap_err().label(), "malformed");
        assert_eq!(read_private_key(&p).unwrap_err().label(), "malformed");
    }

    /// The stricter rule of the one reader: a DER or PEM certificate must parse as X.509
    /// (the config side used to accept any DER starting with a SEQUENCE tag, 0x30).
    #[test]
    fn a_sequence_that_is_no_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let der = dir.path().join("x.der");
        std::fs::write(&der, [0x30, 0x03, 0x02, 0x01, 0x00]).unwrap();
        let e = read_certificates(&der).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::Invalid {
                    index: 0,
                    expected: Expected::Certificate,
                    ..
                }
            ),
            "{e:?}"
        );
        let pem = dir.path().join("x.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(
            read_certificates(&pem).unwrap_err(),
            FileError::Invalid { index: 0, .. }
        ));
        assert!(matches!(
            read_certificates(&dir.path().join("x.der").with_extension("none")).unwrap_err(),
            FileError::Unreadable { .. }
        ));
        std::fs::write(dir.path().join("empty.crt"), b"").unwrap();
        assert!(matches!(
            read_certificates(&dir.path().join("empty.crt")).unwrap_err(),
            FileError::Empty { .. }
        ));
    }

    #[test]
    fn reads_pem_chain_key_and_der() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = format!("{}{}", cert.pem(), cert.pem());
        std::fs::write(dir.path().join("c.pem"), pem).unwrap();
        std::fs::write(dir.path().join("c.der"), cert.der()).unwrap();
        std::fs::write(dir.path().join("k.pem"), key.serialize_pem()).unwrap();
        assert_eq!(
            read_certificates(&dir.path().join("c.pem")).unwrap().len(),
            2
        );
        assert_eq!(
            read_certificates(&dir.path().join("c.der")).unwrap().len(),
            1
        );
        read_private_key(&dir.path().join("k.pem")).unwrap();
    }
}
