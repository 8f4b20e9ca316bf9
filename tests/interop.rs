//! Interop tests against software nobody here wrote (openssl, baresip, sipp, and with the media
//! issues libsrtp, tshark). Built only with `--features interop`; `.ci/run` (via
//! `tests/run-all`) enables it after installing the peers, so a missing peer is a failure
//! there, never a silent skip.
#![cfg(feature = "interop")]

mod support;

mod interop {
    mod baresip;
    mod baresip_register;
    mod openssl_tls;
    mod openssl_verdicts;
    mod pbx_tcp_sipp;
    pub mod peer;
    mod sipp;
}
