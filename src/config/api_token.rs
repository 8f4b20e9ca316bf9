//! The admin API token file's format, shared by `check-config` and the admin port.

/// Shortest token accepted from `admin.api_token_file`: a guessable token is no guard.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token in a token file's text: surrounding whitespace (a trailing newline) removed;
/// `None` when shorter than [`MIN_TOKEN_LEN`].
pub fn token_from_file_text(text: &str) -> Option<&str> {
    let t = text.trim();
    (t.len() >= MIN_TOKEN_LEN).then_some(t)
}
