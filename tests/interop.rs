//! Interop tests against software nobody here wrote: openssl, baresip, SIPp, libsrtp (through
//! the srtp/media interop files), tshark. Built only with `--features interop`; `.ci/run` (via
//! `tests/run-all`) enables it after installing the peers, so a missing peer is a failure
//! there, never a silent skip.
#![cfg(feature = "interop")]

mod support;

mod interop {
    // Needs an Asterisk build (ASTERISK_PREFIX, see INTEROP.md).
    #[cfg(feature = "asterisk")]
    mod asterisk;
    mod baresip;
    mod baresip_call;
    mod baresip_failover;
    mod baresip_register;
    mod capture;
    mod curl_provisioning;
    mod dns;
    mod hep_sngrep;
    mod net;
    mod openssl_tls;
    mod openssl_verdicts;
    mod pbx_tcp_sipp;
    mod process;
    mod qos;
    mod sipp;
    mod tone;
}
