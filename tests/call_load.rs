//! The call load tool's own checks (benches/load/calls): the packet checks of its media sinks
//! and its reading of rtpengine's ng replies. The tool is a bench target (harness = false), so
//! its unit tests run from here.
#![allow(dead_code)]

#[path = "../benches/load/common.rs"]
mod common;
#[path = "../benches/load/calls/legs.rs"]
mod legs;
#[path = "../benches/load/calls/media.rs"]
mod media;
#[path = "../benches/load/calls/rtpengine.rs"]
mod rtpengine;
