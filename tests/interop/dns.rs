//! A tiny DNS server for the phone (baresip's `dns_server`): answers `A <name>` with
//! 127.0.0.1 and everything else with no records. The edge's Contact toward phones names it by
//! `sip.domain` (sbc.test), which a phone resolves like any proxy name (RFC 3263 §4.2); the
//! system resolver is never used by tests.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub struct FakeDns {
    pub addr: SocketAddr,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDns {
    pub fn start(name: &str) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("dns bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("dns addr");
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let name = name.to_ascii_lowercase();
        let (s, a) = (stop.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((reply, hit)) = answer(&buf[..n], &name) {
                    let _ = socket.send_to(&reply, from);
                    if hit {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self {
            addr,
            answered,
            stop,
            thread: Some(thread),
        }
    }
}

impl FakeDns {
    /// How many A queries for the name were answered with the address.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one query (RFC 1035 §4.1), and whether it carried the A record.
fn answer(q: &[u8], name: &str) -> Option<(Vec<u8>, bool)> {
    if q.len() < 12 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    // QNAME labels, then QTYPE and QCLASS.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = q.get(12..i + 4)?;
    let known = labels.join(".") == name;
    let hit = known && qtype == 1;
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&q[..2]); // id
    let rcode = if known { 0 } else { 3 }; // NXDOMAIN for other names
    r.extend_from_slice(&[0x81, 0x80 | rcode]); // QR, RD, RA
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&u16::from(hit).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(question);
    if hit {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]); // name → offset 12, A, IN
        r.extend_from_slice(&60u32.to_be_bytes());
        r.extend_from_slice(&[0, 4, 127, 0, 0, 1]);
    }
    Some((r, hit))
}
