//! Identity's view of the one certificate/key/CRL reader ([`crate::config::files`]): the same
//! functions and the same rule, with [`IdentityError`]s whose labels the start-up and reload
//! errors have always used (`read`, `no_certificate`, `bad_certificate`, `bad_crl`,
//! `no_private_key`).

use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::config::files::{self, FileError};
use crate::identity::error::IdentityError;

/// Certificates in a PEM (several allowed) or DER file, each checked to parse as X.509
/// (the one reader, [`crate::config::files`], with identity's error).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    files::read_certificates(path).map_err(|e| match e {
        FileError::Invalid { path, index, .. } => IdentityError::BadCertificate { path, index },
        other => file_error(other, |path| IdentityError::NoCertificate { path }),
    })
}

/// CRLs in a PEM or DER file, each checked to parse.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, IdentityError> {
    files::read_crls(path).map_err(|e| match e {
        FileError::Invalid { path, index, .. } => IdentityError::BadCrl { path, index },
        other => file_error(other, |path| IdentityError::BadCrl { path, index: 0 }),
    })
}

/// A private key from a PEM (PKCS#8, PKCS#1, SEC1) or DER file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    files::read_private_key(path)
        .map_err(|e| file_error(e, |path| IdentityError::NoPrivateKey { path }))
}

/// An unreadable file is [`IdentityError::Read`]; anything else is `unusable(path)`.
fn file_error(e: FileError, unusable: impl FnOnce(PathBuf) -> IdentityError) -> IdentityError {
    match e {
        FileError::Unreadable { path, source } => IdentityError::Read { path, source },
        FileError::Malformed { path, .. }
        | FileError::Empty { path, .. }
        | FileError::Invalid { path, .. } => unusable(path),
    }
}
