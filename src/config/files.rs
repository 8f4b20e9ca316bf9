//! Reading the certificate, key and CRL files a config names (PEM or DER), with errors that
//! name the file. Shared by validation, the TLS listener and `identity`.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

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
    /// The file was read but holds no usable object of the expected kind.
    #[error("{path}: {what}")]
    Malformed { path: PathBuf, what: String },
}

impl FileError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unreadable { .. } => "unreadable",
            Self::Malformed { .. } => "malformed",
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
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

/// All certificates in a PEM file (several allowed) or the one in a DER file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let bytes = read(path)?;
    if !is_pem(&bytes) {
        // DER: one certificate; its structure is checked by whoever parses it.
        if bytes.first() != Some(&0x30) {
            return Err(malformed(path, "neither PEM nor a DER certificate"));
        }
        return Ok(vec![CertificateDer::from(bytes)]);
    }
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(path, format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(malformed(path, "no CERTIFICATE block in the PEM file"));
    }
    Ok(certs)
}

/// The private key in a PEM (PKCS#8, PKCS#1 or SEC1) or DER (PKCS#8) file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, FileError> {
    let bytes = read(path)?;
    if !is_pem(&bytes) {
        return PrivateKeyDer::try_from(bytes)
            .map_err(|e| malformed(path, format!("not a DER private key: {e}")));
    }
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| malformed(path, format!("no usable PRIVATE KEY block: {e}")))
}

/// All CRLs in a PEM file or the one in a DER file.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, FileError> {
    let bytes = read(path)?;
    if !is_pem(&bytes) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(path, format!("bad PEM CRL: {e}")))?;
    if crls.is_empty() {
        return Err(malformed(path, "no X509 CRL block in the PEM file"));
    }
    Ok(crls)
}

/// Checks that a text file can be read (inventory, deny-list).
pub fn check_readable(path: &Path) -> Result<(), FileError> {
    read(path).map(|_| ())
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
