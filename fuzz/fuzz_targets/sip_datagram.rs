//! SIP over UDP (the PBX leg): arbitrary datagrams through the datagram check and the
//! message parser never panic, and the checked message never exceeds the datagram.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pbx_edge::sip::framing::{check_datagram, DatagramFrame, FramingLimits};
use pbx_edge::sip::message::SipMessage;

fuzz_target!(|data: &[u8]| {
    let limits = FramingLimits::default();
    if let Ok(DatagramFrame::Message(m)) = check_datagram(data, &limits) {
        assert!(m.len() <= data.len());
        if let Ok(msg) = SipMessage::parse(m) {
            common::read_headers(&msg);
            let _ = msg.header_values("Via");
        }
    }
});
