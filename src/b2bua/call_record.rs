//! The call log's record of one ended call (`[call_log]`, see [`crate::call_log`]): what the
//! SIP core knows of the call when it ends, as one JSON object.

use super::call::StreamQuality;
use serde::Serialize;
use std::time::SystemTime;

/// One ended call.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub call_id: String,
    /// The device certificate's MAC (`null` for shared certificates and anonymous phones).
    pub device_mac: Option<String>,
    /// The vendor profile of the phone's certificate (`null` when anonymous).
    pub vendor: Option<String>,
    /// The identity as logged (`snom device 00:04:13:..`).
    pub identity: String,
    /// User part of the initial INVITE's From (the caller) and To (the callee).
    pub from_user: Option<String>,
    pub to_user: Option<String>,
    /// `phone_to_pbx` or `pbx_to_phone`.
    pub direction: &'static str,
    /// RFC 3339 UTC: the initial INVITE, its 2xx (`null` if never answered), the end.
    pub start_time: String,
    pub answer_time: Option<String>,
    pub end_time: String,
    /// `CallEnd::label()`: `bye`, `media_timeout`, `connection_lost`, `shutdown`,
    /// `dialog_gone`, or `ended` (not established).
    pub end_reason: &'static str,
    pub codecs: Vec<String>,
    pub srtp_suite: Option<String>,
    /// Per stream (m-line), each direction: packets, loss, jitter, MOS (relay's own view).
    pub streams: Vec<StreamQuality>,
}

/// `t` as RFC 3339 in UTC with millisecond precision (`2026-12-07T03:41:22.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The user part of a From/To header value, if it parses.
pub fn user_of(header: &str) -> Option<String> {
    let addr = crate::sip::uri::NameAddr::parse(header).ok()?;
    addr.uri.user().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn times_are_rfc3339_utc_and_users_are_read_from_name_addrs() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_614_882_123);
        assert_eq!(rfc3339(t), "2026-12-07T03:41:22.123Z");
        assert_eq!(
            user_of("\"Alice\" <sip:101@sbc.test>;tag=abc").as_deref(),
            Some("101")
        );
        assert_eq!(user_of("<sip:sbc.test>"), None);
        assert_eq!(user_of("garbage <"), None);
    }
}
