//! PURE: provisioning path patterns, as written in `provisioning.common` and in an inventory
//! device's `provisioning = [...]`.
//!
//! A pattern is an absolute path (`/snom/{MAC}.xml`) in which
//! - `*` matches any run of characters, `/` included (`/firmware/*` covers sub-folders);
//! - `{mac}` is the requesting device's MAC as 12 lower-case hex digits (`000413a1b2c3`),
//!   `{MAC}` the same upper-case (`000413A1B2C3`); a pattern with either never matches a
//!   request without a device MAC (shared certificates);
//! - everything else matches itself, case-sensitively (file names on provisioning servers are
//!   case-sensitive: Yealink asks for `y000000000044.cfg`, Snom for `snomD785.htm`).
//!
//! Patterns are matched against the percent-decoded, already normalised request path, so a
//! pattern that could never match one (`..` or `.` segments, `//`, `\`, control characters,
//! `?`, `#`, stray braces) is refused when the file is loaded rather than silently dead.
//!
//! Lives in `config` (which imports nothing of ours) because both the config's `common` list
//! and the identity module's inventory parse it.

use std::fmt;

/// Longest pattern accepted (bytes); request paths have a bound too.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// Why a pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Does not start with `/`.
    #[error("must be an absolute path starting with '/'")]
    NotAbsolute,
    /// Longer than [`MAX_PATTERN_BYTES`].
    #[error("longer than {MAX_PATTERN_BYTES} bytes")]
    TooLong,
    /// A `..` or `.` segment, or an empty segment (`//`): request paths never contain them.
    #[error("contains a '.', '..' or empty ('//') segment, which no request path can contain")]
    BadSegment,
    /// A character a clean request path never contains.
    #[error("contains {0:?}: backslashes, control characters, '?' and '#' never match a path")]
    BadCharacter(char),
    /// `{` not followed by `mac}` or `MAC}`, or a lone `}`.
    #[error("unknown placeholder: only {{mac}} and {{MAC}} exist")]
    BadPlaceholder,
}

impl PatternError {
    /// Stable label for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotAbsolute => "not_absolute",
            Self::TooLong => "too_long",
            Self::BadSegment => "bad_segment",
            Self::BadCharacter(_) => "bad_character",
            Self::BadPlaceholder => "bad_placeholder",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Star,
    MacLower,
    MacUpper,
}

/// A parsed provisioning path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    pieces: Vec<Piece>,
}

impl PathPattern {
    /// Parses a pattern (see the module docs).
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.len() > MAX_PATTERN_BYTES {
            return Err(PatternError::TooLong);
        }
        if !text.starts_with('/') {
            return Err(PatternError::NotAbsolute);
        }
        if let Some(c) = text
            .chars()
            .find(|c| c.is_control() || matches!(c, '\\' | '?' | '#'))
        {
            return Err(PatternError::BadCharacter(c));
        }
        // Segments after the leading '/'; a trailing '/' (a directory) is not a file path.
        if text[1..]
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(PatternError::BadSegment);
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            let placeholder = if rest.starts_with("{mac}") {
                Some(Piece::MacLower)
            } else if rest.starts_with("{MAC}") {
                Some(Piece::MacUpper)
            } else {
                None
            };
            if let Some(p) = placeholder {
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(p);
                rest = &rest["{mac}".len()..];
                continue;
            }
            match c {
                '{' | '}' => return Err(PatternError::BadPlaceholder),
                '*' => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    // `**` is the same as `*`.
                    if pieces.last() != Some(&Piece::Star) {
                        pieces.push(Piece::Star);
                    }
                }
                c => literal.push(c),
            }
            rest = &rest[c.len_utf8()..];
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Self {
            text: text.to_owned(),
            pieces,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern names the device's MAC (`{mac}` / `{MAC}`).
    pub fn uses_mac(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::MacLower | Piece::MacUpper))
    }

    /// Whether `path` (a normalised request path) matches, for a device whose MAC is
    /// `mac_hex` (12 hex digits, any case; `None` for shared certificates).
    pub fn matches(&self, path: &str, mac_hex: Option<&str>) -> bool {
        // Expand the placeholders into literals, then a plain `*` glob match.
        let mut expanded: Vec<Option<String>> = Vec::with_capacity(self.pieces.len());
        for piece in &self.pieces {
            expanded.push(match piece {
                Piece::Literal(l) => Some(l.clone()),
                Piece::Star => None,
                Piece::MacLower => match mac_hex {
                    Some(m) => Some(m.to_ascii_lowercase()),
                    None => return false,
                },
                Piece::MacUpper => match mac_hex {
                    Some(m) => Some(m.to_ascii_uppercase()),
                    None => return false,
                },
            });
        }
        glob(&expanded, path)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `pieces` (Some = literal, None = `*`) against `text`: greedy with backtracking to the last
/// star, O(len(text) × pieces) in the worst case, no recursion.
fn glob(pieces: &[Option<String>], text: &str) -> bool {
    let text = text.as_bytes();
    let mut p = 0; // next piece
    let mut t = 0; // next byte of text
    let mut backtrack: Option<(usize, usize)> = None; // (piece after the star, text position)
    loop {
        match pieces.get(p) {
            Some(None) => {
                backtrack = Some((p + 1, t));
                p += 1;
            }
            Some(Some(lit)) if text[t..].starts_with(lit.as_bytes()) => {
                p += 1;
                t += lit.len();
            }
            None if t == text.len() => return true,
            // A literal that does not fit here, or text left over after the last piece: let
            // the last star swallow one more byte and retry.
            _ => match backtrack {
                Some((bp, bt)) if bt < text.len() => {
                    backtrack = Some((bp, bt + 1));
                    p = bp;
                    t = bt + 1;
                }
                _ => return false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Option<&str> = Some("000413A1B2C3");

    fn m(pattern: &str, path: &str, mac: Option<&str>) -> bool {
        PathPattern::parse(pattern).unwrap().matches(path, mac)
    }

    #[test]
    fn literals_stars_and_placeholders() {
        let cases: &[(&str, &str, Option<&str>, bool)] = &[
            ("/y000000000044.cfg", "/y000000000044.cfg", MAC, true),
            ("/y000000000044.cfg", "/y000000000044.cfgx", MAC, false),
            ("/y000000000044.cfg", "/Y000000000044.cfg", MAC, false),
            ("/firmware/*", "/firmware/d785.bin", None, true),
            ("/firmware/*", "/firmware/10.1/d785.bin", None, true),
            ("/firmware/*", "/firmware", None, false),
            ("/firmware/*", "/firmwarex/a", None, false),
            ("/{mac}.cfg", "/000413a1b2c3.cfg", MAC, true),
            ("/{mac}.cfg", "/000413A1B2C3.cfg", MAC, false),
            ("/{MAC}.cfg", "/000413A1B2C3.cfg", MAC, true),
            ("/{MAC}.cfg", "/000413a1b2c3.cfg", MAC, false),
            ("/{mac}.cfg", "/000413a1b2c3.cfg", None, false),
            ("/snom/{MAC}.xml", "/snom/000413A1B2C3.xml", MAC, true),
            ("/snom/{MAC}.xml", "/snom/805EC0D4E5F6.xml", MAC, false),
            ("/*/{mac}-*.cfg", "/a/b/000413a1b2c3-x.cfg", MAC, true),
            ("/*.cfg", "/a.cfg.cfg", None, true),
            ("/*a*b", "/xaxxb", None, true),
            ("/*a*b", "/xaxxbc", None, false),
            ("/**", "/anything/at/all", None, true),
            ("/phonebook/*", "/phonebook/", None, true),
        ];
        for (pattern, path, mac, want) in cases {
            assert_eq!(m(pattern, path, *mac), *want, "{pattern} vs {path}");
        }
        assert!(PathPattern::parse("/{mac}.cfg").unwrap().uses_mac());
        assert!(!PathPattern::parse("/a.cfg").unwrap().uses_mac());
    }

    #[test]
    fn bad_patterns_are_refused() {
        let cases: &[(&str, &str)] = &[
            ("a.cfg", "not_absolute"),
            ("", "not_absolute"),
            ("/a/../b", "bad_segment"),
            ("/a/./b", "bad_segment"),
            ("//a", "bad_segment"),
            ("/a/", "bad_segment"),
            ("/a\\b", "bad_character"),
            ("/a?x=1", "bad_character"),
            ("/a\0", "bad_character"),
            ("/{Mac}.cfg", "bad_placeholder"),
            ("/{mac.cfg", "bad_placeholder"),
            ("/mac}.cfg", "bad_placeholder"),
        ];
        for (pattern, label) in cases {
            let error = PathPattern::parse(pattern).unwrap_err();
            assert_eq!(error.label(), *label, "{pattern}: {error}");
        }
        assert_eq!(
            PathPattern::parse(&format!("/{}", "a".repeat(MAX_PATTERN_BYTES)))
                .unwrap_err()
                .label(),
            "too_long"
        );
    }

    /// Absolute patterns from the pieces that matter: `*`, both placeholders, stray braces,
    /// `.` and `/` (dot and empty segments), the refused characters, and file-name
    /// characters. `"\\PC{0,40}"` almost never started with `/`, so nearly every case was
    /// refused as not absolute and matching was hardly ever exercised.
    fn pattern_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy as _;
        proptest::collection::vec(
            proptest::prop_oneof![
                6 => proptest::sample::select(vec!["a", "b", "x", "0", "-", "_", "\u{e9}", "%"]),
                3 => proptest::sample::select(vec!["*", "{mac}", "{MAC}"]),
                2 => proptest::sample::select(vec!["/", "."]),
                1 => proptest::sample::select(vec!["{", "}", "{Mac}", "\\", "?", "#", "\u{1}"]),
            ],
            0..12,
        )
        .prop_map(|parts| format!("/{}", parts.concat()))
    }

    /// What a `*` swallows when a path is built from a pattern.
    fn star_fill() -> impl proptest::strategy::Strategy<Value = String> {
        "[ab/.x]{0,4}"
    }

    /// The obvious recursive matcher: the oracle `glob` is compared with.
    fn reference_match(pieces: &[Option<String>], text: &str) -> bool {
        match pieces.split_first() {
            None => text.is_empty(),
            Some((Some(lit), rest)) => text
                .strip_prefix(lit.as_str())
                .is_some_and(|t| reference_match(rest, t)),
            Some((None, rest)) => (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .any(|i| reference_match(rest, &text[i..])),
        }
    }

    /// A path the pattern must match: each `*` replaced by a fill, placeholders by the MAC.
    fn instantiate(p: &PathPattern, fills: &[String], mac: &str) -> String {
        let mut out = String::new();
        let mut fills = fills.iter().cycle();
        for piece in &p.pieces {
            match piece {
                Piece::Literal(l) => out.push_str(l),
                Piece::Star => out.push_str(fills.next().map_or("", String::as_str)),
                Piece::MacLower => out.push_str(&mac.to_ascii_lowercase()),
                Piece::MacUpper => out.push_str(&mac.to_ascii_uppercase()),
            }
        }
        out
    }

    /// Accepted patterns satisfy the documented rules, paths built from them match (and only
    /// with a MAC when they name it), and `glob` agrees with the reference matcher on paths
    /// one edit away. Floors: a fifth of the patterns must parse and a fifth of the edited
    /// paths must still match, or the generator has stopped testing anything.
    #[test]
    fn accepted_patterns_match_what_they_describe() {
        use proptest::test_runner::{Config, TestRunner};
        use std::sync::atomic::{AtomicUsize, Ordering};
        const CASES: u32 = 1024;
        const MAC_HEX: &str = "000413a1B2c3";
        let (parsed, edited_matches) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let strategy = (
            pattern_text(),
            proptest::collection::vec(star_fill(), 1..4),
            0usize..64,
            proptest::sample::select(vec!["", "", "", "", "a", "/", ".", "0", "B"]),
        );
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&strategy, |(text, fills, at, insert)| {
                let Ok(p) = PathPattern::parse(&text) else {
                    return Ok(());
                };
                parsed.fetch_add(1, Ordering::Relaxed);
                let body = &text[1..];
                proptest::prop_assert!(!body
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == ".."));
                proptest::prop_assert!(!text
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '\\' | '?' | '#')));
                let path = instantiate(&p, &fills, MAC_HEX);
                proptest::prop_assert!(p.matches(&path, Some(MAC_HEX)), "{} vs {}", text, path);
                proptest::prop_assert_eq!(p.matches(&path, None), !p.uses_mac());
                // One edit: insert a character (or nothing) somewhere in the path.
                let mut edited = path.clone();
                let at = (0..=edited.len())
                    .filter(|&i| edited.is_char_boundary(i))
                    .nth(at % (edited.chars().count() + 1))
                    .unwrap_or(edited.len());
                edited.insert_str(at, insert);
                let expanded: Vec<Option<String>> = p
                    .pieces
                    .iter()
                    .map(|piece| match piece {
                        Piece::Literal(l) => Some(l.clone()),
                        Piece::Star => None,
                        Piece::MacLower => Some(MAC_HEX.to_ascii_lowercase()),
                        Piece::MacUpper => Some(MAC_HEX.to_ascii_uppercase()),
                    })
                    .collect();
                let want = reference_match(&expanded, &edited);
                proptest::prop_assert_eq!(
                    p.matches(&edited, Some(MAC_HEX)),
                    want,
                    "{} vs {}",
                    text,
                    edited
                );
                if want {
                    edited_matches.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
            .unwrap();
        let (parsed, edited_matches) = (parsed.into_inner(), edited_matches.into_inner());
        assert!(
            parsed >= CASES as usize / 5,
            "only {parsed} of {CASES} generated patterns parsed"
        );
        assert!(
            edited_matches >= parsed / 5,
            "only {edited_matches} of {parsed} edited paths matched"
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_and_match_never_panic(pattern in pattern_text(), path in "\\PC{0,60}") {
            if let Ok(p) = PathPattern::parse(&pattern) {
                let _ = p.matches(&path, Some("000413a1b2c3"));
                let _ = p.matches(&path, None);
            }
        }

        #[test]
        fn a_literal_pattern_matches_exactly_itself(path in "(/[a-zA-Z0-9_.-]{1,8}){1,4}", other in "\\PC{0,30}") {
            proptest::prop_assume!(!path.split('/').any(|s| s == "." || s == ".."));
            let p = PathPattern::parse(&path).unwrap();
            proptest::prop_assert!(p.matches(&path, None));
            proptest::prop_assert_eq!(p.matches(&other, None), other == path);
        }
    }
}
