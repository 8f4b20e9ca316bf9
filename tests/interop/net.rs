//! Free loopback ports for peers that take a port number (chosen by binding first).

use std::net::{TcpListener, UdpSocket};

fn udp_free(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

fn tcp_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A UDP port the kernel just handed out (free at the time of the call).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind udp 0")
        .port()
}

/// A TCP port free for listening (ctrl_tcp).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind tcp 0")
        .port()
}

/// An even port `p` (from binding 0) with `p..p+span` free on UDP and TCP: for peers that
/// bind neighbours of the port they are given (baresip's TLS on sip+1, sipp's echo on mp+2).
pub fn free_block(span: u16) -> u16 {
    for _ in 0..200 {
        let p = free_udp_port();
        if p % 2 == 0
            && p.checked_add(span).is_some()
            && (p..p + span).all(|q| udp_free(q) && tcp_free(q))
        {
            return p;
        }
    }
    panic!("no free block of {span} loopback ports");
}

/// `len` consecutive free UDP ports starting at an even port in `from..to` (a range a test owns,
/// e.g. for the edge's media pool or baresip's rtp_ports, so a capture filter can name it).
pub fn free_range(from: u16, to: u16, len: u16) -> (u16, u16) {
    let mut base = from + from % 2;
    while base + len <= to {
        if (base..base + len).all(udp_free) {
            return (base, base + len - 1);
        }
        base += len;
    }
    panic!("no free UDP range of {len} ports in {from}..{to}");
}
