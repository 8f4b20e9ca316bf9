//! Who may read `/api/*`: the registrations and calls views name devices (MACs), SIP users
//! and the phones' addresses, so off loopback they need a bearer token (RFC 6750 §2.1) read
//! from `admin.api_token_file`. `/metrics`, `/healthz` and `/readyz` stay open for scrapers
//! and probes. PURE: the token file is read by the caller.

pub use crate::config::api_token::{token_from_file_text, MIN_TOKEN_LEN};
use std::net::SocketAddr;
use std::path::PathBuf;
use subtle::ConstantTimeEq;

/// How `/api/*` is guarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAccess {
    /// Admin listener on loopback and no token configured: only local processes reach it.
    Open,
    /// Every request needs `Authorization: Bearer <token>`, the token read from this file on
    /// each request (so a rotated Kubernetes Secret applies without a restart).
    Token(PathBuf),
    /// Off loopback without a token file: `/api/*` answers 403.
    Disabled,
}

impl ApiAccess {
    /// The guard for an admin listener bound to `listen`. A configured token is always
    /// required, on loopback too.
    pub fn for_listener(listen: SocketAddr, token_file: Option<PathBuf>) -> ApiAccess {
        match token_file {
            Some(file) => ApiAccess::Token(file),
            None if listen.ip().is_loopback() => ApiAccess::Open,
            None => ApiAccess::Disabled,
        }
    }

    /// For the start-up log line.
    pub fn describe(&self) -> &'static str {
        match self {
            ApiAccess::Open => "open (admin listener on loopback, no admin.api_token_file)",
            ApiAccess::Token(_) => "bearer token from admin.api_token_file",
            ApiAccess::Disabled => {
                "disabled (admin listener off loopback and no admin.api_token_file)"
            }
        }
    }
}

/// Why an `/api/*` request was refused (metric label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiRefusal {
    #[error("/api/* is disabled: the admin listener is not on loopback and admin.api_token_file is not set")]
    Disabled,
    #[error("a bearer token is required (Authorization: Bearer ...)")]
    MissingToken,
    #[error("the bearer token is wrong")]
    WrongToken,
    #[error("the token file (admin.api_token_file) cannot be read or is too short")]
    TokenUnavailable,
}

impl ApiRefusal {
    pub const ALL: [ApiRefusal; 4] = [
        ApiRefusal::Disabled,
        ApiRefusal::MissingToken,
        ApiRefusal::WrongToken,
        ApiRefusal::TokenUnavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ApiRefusal::Disabled => "disabled",
            ApiRefusal::MissingToken => "missing_token",
            ApiRefusal::WrongToken => "wrong_token",
            ApiRefusal::TokenUnavailable => "token_unavailable",
        }
    }

    /// HTTP status: 401 asks for credentials (RFC 6750 §3), 403 when none would help, 503
    /// when the edge cannot check them.
    pub fn status(self) -> u16 {
        match self {
            ApiRefusal::MissingToken | ApiRefusal::WrongToken => 401,
            ApiRefusal::Disabled => 403,
            ApiRefusal::TokenUnavailable => 503,
        }
    }
}

/// Checks an `Authorization` header value against the expected token. The scheme is
/// case-insensitive (RFC 7235 §2.1); the token is compared in constant time.
pub fn check_bearer(expected: &str, authorization: Option<&[u8]>) -> Result<(), ApiRefusal> {
    let value = authorization.ok_or(ApiRefusal::MissingToken)?;
    let value = std::str::from_utf8(value).map_err(|_| ApiRefusal::WrongToken)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(ApiRefusal::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiRefusal::MissingToken);
    }
    let token = token.trim();
    if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiRefusal::WrongToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &str = "0123456789abcdef-secret";

    #[test]
    fn loopback_is_open_unless_a_token_is_set_and_elsewhere_a_token_is_needed() {
        let lo: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let lo6: SocketAddr = "[::1]:9090".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        let f = PathBuf::from("/run/secrets/token");
        assert_eq!(ApiAccess::for_listener(lo, None), ApiAccess::Open);
        assert_eq!(ApiAccess::for_listener(lo6, None), ApiAccess::Open);
        assert_eq!(ApiAccess::for_listener(any, None), ApiAccess::Disabled);
        assert_eq!(
            ApiAccess::for_listener(any, Some(f.clone())),
            ApiAccess::Token(f.clone())
        );
        assert_eq!(
            ApiAccess::for_listener(lo, Some(f.clone())),
            ApiAccess::Token(f)
        );
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(check_bearer(TOKEN, None), Err(ApiRefusal::MissingToken));
        assert_eq!(
            check_bearer(TOKEN, Some(b"Basic dXNlcjpwYXNz")),
            Err(ApiRefusal::MissingToken)
        );
        assert_eq!(
            check_bearer(TOKEN, Some(b"Bearer")),
            Err(ApiRefusal::MissingToken)
        );
        assert_eq!(
            check_bearer(TOKEN, Some(b"Bearer 0123456789abcdef-secreT")),
            Err(ApiRefusal::WrongToken)
        );
        assert_eq!(
            check_bearer(TOKEN, Some(b"Bearer 0123456789abcdef")),
            Err(ApiRefusal::WrongToken)
        );
        assert_eq!(
            check_bearer(TOKEN, Some(b"Bearer \xff\xfe")),
            Err(ApiRefusal::WrongToken)
        );
        assert_eq!(
            check_bearer(TOKEN, Some(format!("Bearer {TOKEN}").as_bytes())),
            Ok(())
        );
        assert_eq!(
            check_bearer(TOKEN, Some(format!("bearer  {TOKEN} ").as_bytes())),
            Ok(())
        );
    }

    #[test]
    fn token_files() {
        assert_eq!(token_from_file_text(&format!("{TOKEN}\n")), Some(TOKEN));
        assert_eq!(token_from_file_text("short\n"), None);
        assert_eq!(token_from_file_text("   \n"), None);
    }

    #[test]
    fn refusals_have_distinct_labels() {
        let labels: std::collections::HashSet<_> =
            ApiRefusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), ApiRefusal::ALL.len());
    }

    proptest! {
        /// Only the exact token opens the API.
        #[test]
        fn only_the_token_passes(header in proptest::collection::vec(any::<u8>(), 0..64)) {
            let ok = check_bearer(TOKEN, Some(&header)).is_ok();
            let exact = std::str::from_utf8(&header).ok().and_then(|h| {
                let (s, t) = h.trim().split_once(' ')?;
                Some(s.eq_ignore_ascii_case("bearer") && t.trim() == TOKEN)
            }) == Some(true);
            prop_assert_eq!(ok, exact);
        }
    }
}
