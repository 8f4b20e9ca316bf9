//! Interop tests against software nobody here wrote (openssl, and with the SIP and media
//! issues baresip, sipp, libsrtp, tshark). Built only with `--features interop`; `.ci/run`
//! (via `tests/run-all`) enables it after installing the peers, so a missing peer is a
//! failure there, never a silent skip.
#![cfg(feature = "interop")]

mod support;

mod interop {
    mod baresip;
    mod baresip_call;
    mod capture;
    mod dns;
    mod net;
    mod openssl_tls;
    pub mod peer;
    mod process;
    mod sipp;
    mod tone;
}
