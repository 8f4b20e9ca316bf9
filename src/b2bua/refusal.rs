//! PURE: [`Refusal`], the one answer type of the edge for a request it will not forward or
//! cannot carry out: the SIP status (its reason phrase follows from it), the Warning text
//! (RFC 3261 §20.43, code 399), an optional Retry-After (§20.33) and the metric it is counted
//! in. Authorization, the device limits, SDP errors and the core's own checks all return it;
//! the core applies it in one place per side (reply, count, log), so every edge-generated
//! error looks and counts the same.

use crate::sip::response::reason_phrase;
use std::borrow::Cow;

/// Which Prometheus counter a refusal is counted in. Each carries the refusal's `label` as
/// its `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// `pbx_edge_sip_malformed_total{side, reason}`: the message breaks SIP's grammar.
    Malformed,
    /// `pbx_edge_sip_denied_total{reason}`: well-formed, but this device may not do it.
    Denied,
    /// `pbx_edge_sip_dropped_total{side, reason}`: it names state the edge does not have for
    /// this device (a dialog it does not know, or another device's).
    Dropped,
    /// Only `pbx_edge_sip_responses_total{side, code}`, like every response: the request was
    /// acceptable but cannot be carried out (no media ports, an SDP the edge cannot rewrite,
    /// no phone to deliver it to, the other leg failed). The label names it in the log.
    Response,
}

/// The edge's own answer to a request it will not forward.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {label}: {warning}")]
pub struct Refusal {
    /// SIP status code of the response.
    pub status: u16,
    /// Warning text for the operator and the phone's log: printable ASCII, no double quotes
    /// (it sits inside the quoted warn-text as is; `response::warning_399` also neutralises
    /// line breaks). Empty: the response carries no Warning.
    pub warning: Cow<'static, str>,
    /// Retry-After seconds, for 503 and 486 that may succeed later.
    pub retry_after: Option<u32>,
    /// Stable metric label (`reason`).
    pub label: &'static str,
    /// The counter it goes to.
    pub counter: Counter,
}

impl Refusal {
    /// 400 Bad Request, counted as malformed (RFC 3261 §21.4.1).
    pub fn malformed(label: &'static str, warning: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, Counter::Malformed, label, warning)
    }

    /// 403 Forbidden, counted as denied (RFC 3261 §21.4.4).
    pub fn forbidden(label: &'static str, warning: impl Into<Cow<'static, str>>) -> Self {
        Self::new(403, Counter::Denied, label, warning)
    }

    /// 481 Call/Transaction Does Not Exist, counted as dropped (RFC 3261 §12.2.2, §21.4.19).
    pub fn no_dialog(label: &'static str, warning: impl Into<Cow<'static, str>>) -> Self {
        Self::new(481, Counter::Dropped, label, warning)
    }

    /// Any status, counted only as a response ([`Counter::Response`]).
    pub fn answer(status: u16, label: &'static str, warning: impl Into<Cow<'static, str>>) -> Self {
        Self::new(status, Counter::Response, label, warning)
    }

    /// Any status.
    pub fn new(
        status: u16,
        counter: Counter,
        label: &'static str,
        warning: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            warning: sanitize(warning.into()),
            retry_after: None,
            label,
            counter,
        }
    }

    /// The same refusal with a Retry-After.
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The Warning text, if the response carries one.
    pub fn warning(&self) -> Option<&str> {
        Some(self.warning.as_ref()).filter(|w| !w.is_empty())
    }

    /// The reason phrase of the status line (RFC 3261 §21).
    pub fn reason_phrase(&self) -> &'static str {
        reason_phrase(self.status)
    }
}

/// Warning text is copied from requests (user names, header names): keep it printable ASCII
/// without `"` or `\`, which would end or escape the quoted warn-text (RFC 3261 §25.1
/// quoted-string).
fn sanitize(text: Cow<'static, str>) -> Cow<'static, str> {
    let clean = |c: char| c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ';
    if text.chars().all(clean) {
        return text;
    }
    Cow::Owned(
        text.chars()
            .map(|c| if clean(c) { c } else { ' ' })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constructors_pick_status_and_counter() {
        let r = Refusal::malformed("repeated_header", "From appears twice");
        assert_eq!((r.status, r.counter), (400, Counter::Malformed));
        let r = Refusal::forbidden("user_not_allowed", "no");
        assert_eq!((r.status, r.counter), (403, Counter::Denied));
        let r = Refusal::no_dialog("unknown_dialog", "no").with_retry_after(5);
        assert_eq!(
            (r.status, r.counter, r.retry_after),
            (481, Counter::Dropped, Some(5))
        );
        let r = Refusal::answer(503, "no_media_ports", "");
        assert_eq!((r.status, r.counter), (503, Counter::Response));
        assert_eq!(r.reason_phrase(), "Service Unavailable");
    }

    #[test]
    fn an_empty_warning_means_no_warning_header() {
        assert_eq!(Refusal::answer(483, "too_many_hops", "").warning(), None);
        assert_eq!(
            Refusal::answer(480, "x", "the phone is gone").warning(),
            Some("the phone is gone")
        );
    }

    #[test]
    fn warning_cannot_close_the_quoted_string() {
        let r = Refusal::forbidden("x", "user \"1\\02\"\r\nX: y");
        assert_eq!(r.warning, "user  1 02   X: y");
    }

    proptest! {
        #[test]
        fn warning_is_always_printable_without_quotes(text in ".*") {
            let r = Refusal::forbidden("x", text);
            prop_assert!(r.warning.chars().all(|c| c == ' ' || (c.is_ascii_graphic() && c != '"' && c != '\\')));
        }
    }
}
