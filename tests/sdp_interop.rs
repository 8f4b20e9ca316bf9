//! Interop with a real SDES phone (baresip 1.0, Debian `baresip-core`): its offer goes through
//! the rewriter, and it accepts the edge's answer; the edge's offer is answered by it and that
//! answer goes through the rewriter. Signalling is a minimal SIP UAS/UAC over UDP on
//! 127.0.0.1 in this test; baresip is started with its own config dir and stopped by PID.
//!
//! Run: `cargo test --features interop --test sdp_interop`
#![cfg(feature = "interop")]

mod sdp_support;
// The interop suite's free-port helpers (this file only needs some of them).
#[allow(dead_code)]
#[path = "interop/net.rs"]
mod net;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pbx_edge::sdp::{Security, SrtpMode};
use sdp_support::*;

/// A baresip process with its own config dir; killed (by PID) and reaped on drop.
struct Baresip {
    child: Child,
    dir: PathBuf,
}

impl Baresip {
    /// What baresip printed so far (its stdout log, in its config dir).
    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    /// Waits (bounded: 10 s) until baresip has printed every one of `lines`; returns its output.
    fn wait_printed(&self, lines: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.output();
            if lines.iter().all(|l| out.contains(l)) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "baresip never printed {lines:?}:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Baresip {
    /// Starts baresip with RTP ports from `rtp_range` (each test owns its own range, so the
    /// two tests running in parallel never share ports).
    fn start(
        name: &str,
        extra_args: &[&str],
        answer_auto: bool,
        rtp_range: (u16, u16),
    ) -> (Baresip, u16) {
        let dir = std::env::temp_dir().join(format!(
            "pbx-edge-sdp-interop-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sip_port = net::free_udp_port();
        let (rtp, _) = net::free_range(rtp_range.0, rtp_range.1, 10);
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nsip_transports udp\n\
             net_interface 127.0.0.1\ndns_server 127.0.0.1:53\nrtp_ports {rtp}-{}\n\
             audio_player aubridge,null\naudio_source aubridge,null\n\
             module_path /usr/lib/baresip/modules\nmodule stdio.so\nmodule g711.so\nmodule g722.so\n\
             module opus.so\nmodule srtp.so\nmodule account.so\nmodule menu.so\nmodule aubridge.so\n",
            rtp + 9
        );
        std::fs::write(dir.join("config"), config).unwrap();
        let answer = if answer_auto { ";answermode=auto" } else { "" };
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:phone@127.0.0.1>;regint=0;mediaenc=srtp-mand{answer}\n"),
        )
        .unwrap();
        let mut args = vec!["-f", dir.to_str().unwrap(), "-t", "60"];
        args.extend_from_slice(extra_args);
        let child = Command::new("baresip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("baresip (Debian baresip-core) must be installed for --features interop");
        (Baresip { child, dir }, sip_port)
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a UDP socket is bound on 127.0.0.1:`port` (read from /proc/net/udp: a probe
/// bind could take the port from under baresip).
fn udp_bound(port: u16) -> bool {
    let needle = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(needle.as_str()))
}

/// Waits (bounded: 30 s, baresip starts slowly on a busy machine) until baresip has bound its
/// SIP port.
fn wait_bound(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !udp_bound(port) {
        assert!(
            Instant::now() < deadline,
            "baresip did not bind udp {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Receives SIP messages until one starts with `start`, for at most 30 s (a bound, not a
/// timing check: baresip starts slowly on a busy 2-core CI machine).
fn receive(sock: &UdpSocket, start: &str) -> (String, std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 65535];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.starts_with(start) {
                return (msg, from);
            }
        }
    }
    panic!("no SIP message starting with {start:?} within 30 s");
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.split("\r\n")
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// The test's loopback addresses replace the RFC 5737 ones written by the rewriter.
fn loopback(sdp: &[u8]) -> String {
    String::from_utf8(sdp.to_vec())
        .unwrap()
        .replace("203.0.113.10", "127.0.0.1")
}

#[test]
fn baresip_offer_through_the_edge_and_back() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let dial = format!("/dial sip:pbx@127.0.0.1:{port}");
    let (phone, _) = Baresip::start("offer", &["-e", &dial], false, (20000, 24999));
    let (invite, from) = receive(&sock, "INVITE ");

    let mut call = Call::new(SrtpMode::Mandatory);
    let offer = call
        .phone_offer(body(&invite))
        .expect("baresip's offer is accepted");
    let relay = offer.plan.streams[0].relayed().expect("audio relayed");
    assert!(matches!(relay.security, Security::Srtp(_)));
    let answer = call.pbx_answer(&offer.plan, &pbx_audio_answer()).unwrap();
    let sdp = loopback(&answer.sdp);

    let response = format!(
        "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{};tag=edge1\r\n{}\r\n{}\r\nContact: <sip:pbx@127.0.0.1:{port}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        header(&invite, "Via"),
        header(&invite, "From"),
        header(&invite, "To"),
        header(&invite, "Call-ID"),
        header(&invite, "CSeq"),
        sdp.len()
    );
    sock.send_to(response.as_bytes(), from).unwrap();
    // baresip ACKs our 200: same dialog, same CSeq number (RFC 3261 §17.1.1.3).
    let (ack, _) = receive(&sock, "ACK ");
    assert_eq!(header(&ack, "Call-ID"), header(&invite, "Call-ID"));
    assert!(header(&ack, "To").contains("tag=edge1"), "{ack}");
    let cseq = |m: &str| {
        header(m, "CSeq")
            .split_whitespace()
            .nth(1)
            .map(str::to_owned)
    };
    assert_eq!(cseq(&ack), cseq(&invite), "{ack}");
    // baresip's own account of the call: established, with SRTP on the suite the edge chose
    // (baresip 1.0 keeps a `srtp-mand` call up even when the answer has no a=crypto, so the
    // ACK alone proves nothing about the answer's key).
    let suite = match &relay.security {
        Security::Srtp(keys) => keys.phone.as_ref().expect("phone key").suite.sdes_name(),
        other => panic!("not SRTP: {other:?}"),
    };
    phone.wait_printed(&[
        &format!("SRTP is Enabled (cryptosuite={suite})"),
        "Call established",
    ]);
    // Whether baresip kept the call (it accepted the edge's answer) is its state, not a
    // silence: a phone that refused the answer has already sent BYE and ended the dialog, so
    // our BYE gets 481 (RFC 3261 §15.1.2); a phone in the call answers it 200.
    let bye = format!(
        "BYE {} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-edge-bye;rport\r\n\
         Max-Forwards: 70\r\n{};tag=edge1\r\n{}\r\n{}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        contact_uri(&invite),
        header(&invite, "To").replacen("To:", "From:", 1),
        header(&invite, "From").replacen("From:", "To:", 1),
        header(&invite, "Call-ID"),
    );
    let answer = transact(&sock, &bye, from, "BYE");
    assert!(
        answer.starts_with("SIP/2.0 200"),
        "baresip must still be in the call (it accepted the edge's answer): {answer}"
    );
}

/// The URI in the Contact header of `msg` (`<...>` form).
fn contact_uri(msg: &str) -> &str {
    let contact = header(msg, "Contact");
    let start = contact.find('<').expect("Contact in <>") + 1;
    let end = contact[start..].find('>').expect("Contact in <>") + start;
    &contact[start..end]
}

/// Sends `request` to `to` and retransmits it every 500 ms (RFC 3261 §17.1.2.2 timer E with
/// T1 = 500 ms, not doubling: loopback) until a final response for `method` arrives; returns
/// it. Bounded: 30 s. A BYE from baresip on the way is answered 200 and reported.
fn transact(sock: &UdpSocket, request: &str, to: std::net::SocketAddr, method: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 65535];
    while Instant::now() < deadline {
        sock.send_to(request.as_bytes(), to).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let final_for_method = msg.starts_with("SIP/2.0 ")
                && !msg.starts_with("SIP/2.0 1")
                && header(&msg, "CSeq").ends_with(method);
            if final_for_method {
                return msg;
            }
        }
    }
    panic!("no final response to {method} within 30 s");
}

#[test]
fn edge_offer_answered_by_baresip() {
    let (_phone, phone_port) = Baresip::start("answer", &[], true, (25000, 29999));
    wait_bound(phone_port);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();

    let mut call = Call::new(SrtpMode::Mandatory);
    let pbx = pbx_sdp(
        "m=audio 17300 RTP/AVP 0 8 101\na=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\n\
         a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16\na=rtcp-mux\na=ptime:20\na=sendrecv\n",
    );
    let offer = call.pbx_offer(&pbx).unwrap();
    let sdp = loopback(&offer.sdp);
    let invite = format!(
        "INVITE sip:phone@127.0.0.1:{phone_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-edge-1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:pbx@127.0.0.1>;tag=edge1\r\nTo: <sip:phone@127.0.0.1>\r\n\
         Call-ID: sdp-interop-{port}@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@127.0.0.1:{port}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    // Retransmitted until answered: a datagram sent while baresip is still starting is lost.
    let ok = transact(
        &sock,
        &invite,
        std::net::SocketAddr::from(([127, 0, 0, 1], phone_port)),
        "INVITE",
    );
    assert!(ok.starts_with("SIP/2.0 200"), "baresip answers 200: {ok}");
    let answer = call
        .phone_answer(&offer.plan, body(&ok))
        .expect("baresip's answer to the edge's offer is accepted");
    let relay = answer.plan.streams[0].relayed().expect("audio relayed");
    let Security::Srtp(keys) = &relay.security else {
        panic!("not SRTP")
    };
    let chosen = keys.phone.as_ref().unwrap();
    assert_eq!(keys.edge.as_ref().unwrap().tag, chosen.tag);
    // baresip 1.0 does not do rtcp-mux unless configured: the edge still answers the PBX's
    // rtcp-mux on the PBX leg and demultiplexes nothing on the phone leg.
    assert!(!relay.phone.as_ref().unwrap().rtcp_mux);
    assert!(relay.pbx.as_ref().unwrap().rtcp_mux);
    assert!(String::from_utf8_lossy(&answer.sdp).contains("a=rtcp-mux\r\n"));
    eprintln!("baresip answered:\n{}", body(&ok));
}
