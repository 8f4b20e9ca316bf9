//! Why an SDP body could not be rewritten, and the SIP answer each reason maps to.

use crate::srtp::sdes::SdesError;

/// Why an `a=crypto` line of an offer or answer was not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoRefusal {
    /// The line does not parse or asks for something the SRTP engine cannot do
    /// (RFC 4568 §6.3: an unsupported session parameter makes the line unusable).
    Sdes(SdesError),
    /// The suite parses but the SRTP policy of this device does not allow it.
    SuiteNotAllowed,
    /// `UNENCRYPTED_SRTP`: refused on the phone leg, whose whole point is confidentiality.
    UnencryptedSrtp,
    /// Several `inline:` keys selected by MKI in one line: the SRTP engine's context holds one
    /// master key, so the line cannot be honoured.
    SeveralKeys,
}

impl CryptoRefusal {
    /// Stable name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CryptoRefusal::Sdes(e) => e.label(),
            CryptoRefusal::SuiteNotAllowed => "suite_not_allowed",
            CryptoRefusal::UnencryptedSrtp => "unencrypted_srtp",
            CryptoRefusal::SeveralKeys => "several_keys",
        }
    }

    /// True when the line was refused only for its suite (unknown, `_GCM_8`, or left out by
    /// the policy): a line the edge cannot speak, as opposed to a malformed line or one asking
    /// for what the engine cannot honour. Only suite refusals may fall back to plain RTP under
    /// `srtp = "optional"`.
    pub fn is_about_suite(&self) -> bool {
        matches!(
            self,
            CryptoRefusal::SuiteNotAllowed
                | CryptoRefusal::Sdes(SdesError::UnknownSuite | SdesError::ShortGcmTag)
        )
    }
}

/// An SDP offer or answer that cannot be rewritten. Line numbers are 1-based and count the
/// lines of the body as received; `mline` is the 0-based index of the media description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// The body is not UTF-8 (RFC 8866 §5: SDP text is UTF-8).
    #[error("SDP body is not UTF-8")]
    NotUtf8,
    /// The body is longer than [`super::MAX_SDP_LEN`] bytes or has more lines than the parser
    /// accepts; checked before anything is allocated for it.
    #[error("SDP body exceeds the size limit")]
    TooLarge,
    /// A line is not `<letter>=<value>`, a mandatory line (`v=`, `o=`) is missing or repeated,
    /// or a field the rewrite needs (`o=`, `c=`, `m=`, `t=`, `a=rtpmap`) does not parse.
    #[error("malformed SDP {what} at line {line}")]
    Malformed {
        /// 1-based line number in the received body (0 when the line is missing).
        line: usize,
        /// Which line or field.
        what: &'static str,
    },
    /// sdp-rs refused or did not consume the body even after normalisation (should not happen;
    /// the proptest in `tests/sdp_props.rs` looks for it).
    #[error("SDP body not accepted by the SDP parser")]
    Unparsable,
    /// More media descriptions than [`super::MAX_MEDIA`].
    #[error("too many media descriptions ({count})")]
    TooManyMedia {
        /// How many `m=` lines the body has.
        count: usize,
    },
    /// A `c=` line names a host instead of an address; the pure rewrite does not resolve names.
    #[error("connection address of media {mline} is a host name")]
    HostnameConnection {
        /// The media description (or 0 for the session-level `c=`).
        mline: usize,
    },
    /// A media description has no connection address at media or session level
    /// (RFC 8866 §5.7).
    #[error("media {mline} has no connection address")]
    MissingConnection {
        /// The media description.
        mline: usize,
    },
    /// `srtp = "mandatory"`: the phone offered a media stream without usable SRTP, and no other
    /// stream of the offer is acceptable.
    #[error("plain RTP refused by policy (media {mline})")]
    PlainRtpRefused {
        /// The first refused media description.
        mline: usize,
    },
    /// The phone offered `RTP/SAVP` but none of its `a=crypto` lines is usable, and no other
    /// stream of the offer is acceptable; or (`srtp = "optional"`) a stream's crypto lines are
    /// all unusable and not merely for their suite, so falling back to plain RTP would
    /// silently downgrade a phone that meant SRTP.
    #[error("no acceptable crypto line in media {mline} ({})", .reason.map_or("none", |r| r.label()))]
    NoAcceptableCrypto {
        /// The first refused media description.
        mline: usize,
        /// Why the last crypto line was refused (`None`: there was no crypto line).
        reason: Option<CryptoRefusal>,
    },
    /// Every media description of an offer uses a transport the edge cannot relay (DTLS-SRTP,
    /// T.38 over UDPTL, SRTP offered by the PBX...).
    #[error("no media description of the offer can be relayed")]
    NoAcceptableMedia,
    /// The phone answered an SRTP offer without any `a=crypto` line (RFC 4568 §7.1.2); the
    /// stream must not be relayed as plain RTP as if it were protected.
    #[error("answer for media {mline} has no crypto line")]
    AnswerWithoutCrypto {
        /// The media description.
        mline: usize,
    },
    /// No `a=crypto` line of the answer echoes a tag (with its suite) of the offer.
    #[error("answer crypto for media {mline} matches no offered line")]
    AnswerCryptoMismatch {
        /// The media description.
        mline: usize,
    },
    /// The answer does not have one media description per offered one (RFC 3264 §6).
    #[error("answer has {answered} media descriptions, offer had {offered}")]
    MediaCountMismatch {
        /// Media descriptions in the offer.
        offered: usize,
        /// Media descriptions in the answer.
        answered: usize,
    },
    /// The caller supplied fewer (or more) relay port sets than the offer analysis asked for,
    /// typically because the relay's port range is exhausted.
    #[error("relay ports missing: needed {needed}, given {given}")]
    PortsMissing {
        /// Port sets the analysis requested.
        needed: usize,
        /// Port sets supplied.
        given: usize,
    },
    /// An answer was rewritten against a plan that is not a pending offer from the other leg
    /// (a B2BUA bug, not bad input).
    #[error("answer does not belong to the pending offer")]
    PlanMismatch,
}

impl RewriteError {
    /// Stable name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RewriteError::NotUtf8 => "sdp_not_utf8",
            RewriteError::TooLarge => "sdp_too_large",
            RewriteError::Malformed { .. } => "sdp_malformed",
            RewriteError::Unparsable => "sdp_unparsable",
            RewriteError::TooManyMedia { .. } => "sdp_too_many_media",
            RewriteError::HostnameConnection { .. } => "sdp_hostname_connection",
            RewriteError::MissingConnection { .. } => "sdp_missing_connection",
            RewriteError::PlainRtpRefused { .. } => "plain_rtp_refused",
            RewriteError::NoAcceptableCrypto { .. } => "no_acceptable_crypto",
            RewriteError::NoAcceptableMedia => "no_acceptable_media",
            RewriteError::AnswerWithoutCrypto { .. } => "answer_without_crypto",
            RewriteError::AnswerCryptoMismatch { .. } => "answer_crypto_mismatch",
            RewriteError::MediaCountMismatch { .. } => "media_count_mismatch",
            RewriteError::PortsMissing { .. } => "relay_ports_missing",
            RewriteError::PlanMismatch => "sdp_plan_mismatch",
        }
    }

    /// The SIP status the B2BUA answers with: 400 for a body that is not valid SDP, 488 (Not
    /// Acceptable Here, RFC 3261 §21.4.26) for SDP we understand but cannot accept, 503 when
    /// the relay has no ports, 500 for an internal mismatch.
    pub fn sip_status(&self) -> u16 {
        match self {
            RewriteError::NotUtf8
            | RewriteError::TooLarge
            | RewriteError::Malformed { .. }
            | RewriteError::Unparsable
            | RewriteError::MissingConnection { .. } => 400,
            RewriteError::TooManyMedia { .. }
            | RewriteError::HostnameConnection { .. }
            | RewriteError::PlainRtpRefused { .. }
            | RewriteError::NoAcceptableCrypto { .. }
            | RewriteError::NoAcceptableMedia
            | RewriteError::AnswerWithoutCrypto { .. }
            | RewriteError::AnswerCryptoMismatch { .. }
            | RewriteError::MediaCountMismatch { .. } => 488,
            RewriteError::PortsMissing { .. } => 503,
            RewriteError::PlanMismatch => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_classes() {
        assert_eq!(RewriteError::NotUtf8.sip_status(), 400);
        assert_eq!(
            RewriteError::Malformed {
                line: 3,
                what: "m="
            }
            .sip_status(),
            400
        );
        assert_eq!(RewriteError::PlainRtpRefused { mline: 0 }.sip_status(), 488);
        assert_eq!(
            RewriteError::NoAcceptableCrypto {
                mline: 0,
                reason: None
            }
            .sip_status(),
            488
        );
        assert_eq!(
            RewriteError::AnswerWithoutCrypto { mline: 1 }.sip_status(),
            488
        );
        assert_eq!(
            RewriteError::PortsMissing {
                needed: 2,
                given: 1
            }
            .sip_status(),
            503
        );
        assert_eq!(RewriteError::PlanMismatch.sip_status(), 500);
    }

    #[test]
    fn labels_are_distinct() {
        let all = [
            RewriteError::NotUtf8,
            RewriteError::TooLarge,
            RewriteError::Malformed { line: 1, what: "x" },
            RewriteError::Unparsable,
            RewriteError::TooManyMedia { count: 99 },
            RewriteError::HostnameConnection { mline: 0 },
            RewriteError::MissingConnection { mline: 0 },
            RewriteError::PlainRtpRefused { mline: 0 },
            RewriteError::NoAcceptableCrypto {
                mline: 0,
                reason: None,
            },
            RewriteError::NoAcceptableMedia,
            RewriteError::AnswerWithoutCrypto { mline: 0 },
            RewriteError::AnswerCryptoMismatch { mline: 0 },
            RewriteError::MediaCountMismatch {
                offered: 1,
                answered: 2,
            },
            RewriteError::PortsMissing {
                needed: 1,
                given: 0,
            },
            RewriteError::PlanMismatch,
        ];
        let mut labels: Vec<_> = all.iter().map(|e| e.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn refusal_label_forwards_sdes_label() {
        assert_eq!(
            CryptoRefusal::Sdes(SdesError::ShortGcmTag).label(),
            SdesError::ShortGcmTag.label()
        );
        assert_eq!(CryptoRefusal::SuiteNotAllowed.label(), "suite_not_allowed");
    }
}
