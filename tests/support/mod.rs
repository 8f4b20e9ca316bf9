//! Shared test harness: a development PKI, an in-process edge on port 0, HTTP and TLS
//! clients. Everything binds 127.0.0.1 only.
#![allow(dead_code)]

pub mod edge;
pub mod http;
pub mod media;
pub mod offer;
pub mod pbx;
pub mod pbx_tcp;
pub mod phone;
pub mod pki;
pub mod ports;
pub mod rtp;
pub mod scenario;
pub mod sip_stream;
pub mod tls_client;
pub mod vendor_edge;
