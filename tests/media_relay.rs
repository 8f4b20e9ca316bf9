//! End-to-end tests of the media relay over 127.0.0.1: a test "phone" protecting with the
//! srtp engine, a test "PBX" speaking plain RTP, the relay in between.
//!
//! Every wait is bounded; nothing asserts on timing.

#[path = "support/rtp.rs"]
mod rtp;
use rtp::rtp;

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use pbx_edge::config::MediaIo;
use pbx_edge::media::stats::DropReason;
use pbx_edge::media::transform::Kind;
use pbx_edge::media::{
    control::{LocalPorts, PeerSpec},
    CounterSnapshot, MediaControl, MediaError, MediaEvent, RelaySettings, Side, SrtpParams,
    StreamCommand, StreamHandle, StreamSpec, TransformSpec,
};
use pbx_edge::srtp::key::MasterKey;
use pbx_edge::srtp::suite::CryptoSuite;
use pbx_edge::srtp::{ContextOptions, SrtpContext};
use prometheus::Registry;
use tokio::sync::mpsc;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(3);

/// Every test below runs once per I/O mode (`media.io`): `auto` (batched io_uring where it
/// works, as on the project's machines) and `per_packet`, so both stay tested on a machine
/// with io_uring. Each `#[tokio::test]` runs on its own thread, which sets the mode first.
macro_rules! in_both_io_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test]
            async fn auto() {
                IO.with(|m| m.set(MediaIo::Auto));
                super::$name().await
            }
            #[tokio::test]
            async fn per_packet() {
                IO.with(|m| m.set(MediaIo::PerPacket));
                super::$name().await
            }
        }
    )*};
}

thread_local! {
    static IO: Cell<MediaIo> = const { Cell::new(MediaIo::Auto) };
}

fn io_mode() -> MediaIo {
    IO.with(Cell::get)
}

/// A port range of `pairs` pairs free right now; ranges never overlap within this process.
fn free_range(pairs: u16) -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(21000);
    loop {
        let base = NEXT.fetch_add(pairs * 2 + 2, Ordering::Relaxed);
        assert!(base < 29000, "no free port range");
        if (0..pairs * 2).all(|i| UdpSocket::bind((LOOPBACK, base + i)).is_ok()) {
            return (base, base + pairs * 2 - 1);
        }
    }
}

struct Relay {
    control: MediaControl,
    events: mpsc::Receiver<MediaEvent>,
    registry: Registry,
}

fn relay_with(pairs: u16, timeout: Duration) -> Relay {
    let (port_min, port_max) = free_range(pairs);
    let settings = RelaySettings {
        phone_bind: LOOPBACK,
        pbx_bind: LOOPBACK,
        port_min,
        port_max,
        timeout,
        workers: 1,
        io: io_mode(),
        ..RelaySettings::default()
    };
    let registry = Registry::new();
    let (tx, events) = mpsc::channel(256);
    let control = MediaControl::new(settings, &registry, tx).unwrap();
    Relay {
        control,
        events,
        registry,
    }
}

fn relay() -> Relay {
    relay_with(16, Duration::from_secs(60))
}

fn key(byte: u8) -> MasterKey {
    let suite = CryptoSuite::AesCm128HmacSha1_80;
    let key: Vec<u8> = (0..16).map(|i| byte.wrapping_add(i)).collect();
    let salt: Vec<u8> = (0..14).map(|i| byte ^ (i * 7)).collect();
    MasterKey::new(suite, &key, &salt).unwrap()
}

fn ctx(k: &MasterKey) -> SrtpContext {
    SrtpContext::new(k, &ContextOptions::default()).unwrap()
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// RTCP receiver report with one report block (RFC 3550 §6.4.2).
fn rtcp_rr(ssrc: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(fill, 24));
    p
}

fn protect_rtp(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; plain.len() + 64];
    buf[..plain.len()].copy_from_slice(plain);
    let n = ctx.protect_rtp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    buf
}

fn protect_rtcp(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; plain.len() + 64];
    buf[..plain.len()].copy_from_slice(plain);
    let n = ctx.protect_rtcp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    buf
}

fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("packet within the bounded wait");
    (buf[..n].to_vec(), from)
}

/// Receives, skipping nothing: asserts the next packet on `sock` is `expected`.
fn expect_next(sock: &UdpSocket, expected: &[u8]) -> SocketAddr {
    let (got, from) = recv(sock);
    assert_eq!(got, expected, "next packet differs");
    from
}

fn unprotect_next_rtp(sock: &UdpSocket, ctx: &mut SrtpContext) -> Vec<u8> {
    let (mut got, _) = recv(sock);
    let n = ctx
        .unprotect_rtp(&mut got)
        .expect("relay output authenticates");
    got.truncate(n);
    got
}

/// Waits (bounded) until `check` holds for the stream's counters.
fn wait_counters(handle: &StreamHandle, check: impl Fn(&CounterSnapshot) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check(&handle.counters()) {
        assert!(
            Instant::now() < deadline,
            "counters never matched: {:?}",
            handle.counters()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

async fn next_event(events: &mut mpsc::Receiver<MediaEvent>) -> MediaEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("event within the bounded wait")
        .expect("channel open")
}

/// A phone at `phone_rtp`/`phone_rtcp` (SDP addresses) and a PBX at `pbx`.
struct Call {
    phone_rtp: UdpSocket,
    phone_rtcp: UdpSocket,
    pbx_rtp: UdpSocket,
    pbx_rtcp: UdpSocket,
    phone_key: MasterKey,
    edge_key: MasterKey,
}

impl Call {
    fn new() -> Self {
        Call {
            phone_rtp: socket(),
            phone_rtcp: socket(),
            pbx_rtp: socket(),
            pbx_rtcp: socket(),
            phone_key: key(0x11),
            edge_key: key(0x77),
        }
    }

    fn spec(&self) -> StreamSpec {
        let addr = |s: &UdpSocket| s.local_addr().unwrap();
        StreamSpec {
            phone: PeerSpec {
                rtp: Some(addr(&self.phone_rtp)),
                rtcp: Some(addr(&self.phone_rtcp)),
                rtcp_mux: false,
                ..PeerSpec::default()
            },
            pbx: PeerSpec {
                rtp: Some(addr(&self.pbx_rtp)),
                rtcp: Some(addr(&self.pbx_rtcp)),
                rtcp_mux: false,
                ..PeerSpec::default()
            },
            pbx_host: LOOPBACK,
            phone_to_pbx: TransformSpec::Srtp(SrtpParams::new(self.phone_key.clone())),
            pbx_to_phone: TransformSpec::Srtp(SrtpParams::new(self.edge_key.clone())),
        }
    }
}

fn send(sock: &UdpSocket, packet: &[u8], to: SocketAddr) {
    sock.send_to(packet, to).unwrap();
}

async fn srtp_to_rtp_and_back_byte_identical() {
    let mut relay = relay();
    let call = Call::new();
    let handle = relay.control.start(call.spec()).await.unwrap();
    let LocalPorts {
        rtp: relay_rtp,
        rtcp: relay_rtcp,
    } = handle.phone_local();
    let pbx_local = handle.pbx_local();
    assert_eq!(relay_rtp.port() % 2, 0);
    assert_eq!(relay_rtcp.port(), relay_rtp.port() + 1);

    let mut phone_tx = ctx(&call.phone_key);
    let mut phone_rx = ctx(&call.edge_key);
    for seq in 1000..1010u16 {
        // Phone → PBX: plain RTP at the PBX is exactly what the phone protected.
        let plain = rtp(seq, 0xAAAA_0001, [seq as u8; 160]);
        send(
            &call.phone_rtp,
            &protect_rtp(&mut phone_tx, &plain),
            relay_rtp,
        );
        let from = expect_next(&call.pbx_rtp, &plain);
        assert_eq!(
            from, pbx_local.rtp,
            "PBX sees the relay's PBX-side RTP socket"
        );

        // PBX → phone: SRTP at the phone that unprotects to what the PBX sent.
        let plain = rtp(seq, 0xBBBB_0002, [!(seq as u8); 160]);
        send(&call.pbx_rtp, &plain, pbx_local.rtp);
        assert_eq!(unprotect_next_rtp(&call.phone_rtp, &mut phone_rx), plain);
    }

    // RTCP both ways (separate RTCP ports).
    let rr = rtcp_rr(0xAAAA_0001, 0x42);
    send(
        &call.phone_rtcp,
        &protect_rtcp(&mut phone_tx, &rr),
        relay_rtcp,
    );
    let from = expect_next(&call.pbx_rtcp, &rr);
    assert_eq!(from, pbx_local.rtcp);
    let rr = rtcp_rr(0xBBBB_0002, 0x24);
    send(&call.pbx_rtcp, &rr, pbx_local.rtcp);
    let (mut got, from) = recv(&call.phone_rtcp);
    assert_eq!(from, relay_rtcp);
    let n = phone_rx.unprotect_rtcp(&mut got).unwrap().len;
    assert_eq!(&got[..n], &rr[..]);

    // Counters are bumped right after the send: wait (bounded) for the last one.
    wait_counters(&handle, |c| c.pbx_to_phone_packets == 11);
    let c = handle.counters();
    assert_eq!(c.phone_to_pbx_packets, 11);
    assert_eq!(c.dropped.iter().sum::<u64>(), 0);

    // The phone latched on its first authenticated RTP and RTCP packets.
    let mut latched = Vec::new();
    while let Ok(e) = relay.events.try_recv() {
        latched.push(e);
    }
    assert!(latched.contains(&MediaEvent::Latched {
        stream: handle.id(),
        side: Side::Phone,
        kind: Kind::Rtp,
        address: call.phone_rtp.local_addr().unwrap(),
    }));

    // Metrics render with the relayed totals.
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&relay.registry.gather())
        .unwrap();
    assert!(text.contains("pbx_edge_media_packets_total{direction=\"phone_to_pbx\"} 11"));
    assert!(text.contains("pbx_edge_media_active_streams 1"));
    assert!(text.contains("pbx_edge_media_port_pairs_in_use 2"));
    assert!(text.contains("pbx_edge_media_port_pairs_free 14"));
    assert!(text.contains("pbx_edge_media_latch_events_total 2"));
    handle.stop().await.unwrap();
}

async fn forged_replayed_and_spoofed_packets_are_dropped_and_counted() {
    let mut relay = relay();
    let call = Call::new();
    let handle = relay.control.start(call.spec()).await.unwrap();
    let phone_local = handle.phone_local();
    let pbx_local = handle.pbx_local();
    let mut phone_tx = ctx(&call.phone_key);

    let first = protect_rtp(&mut phone_tx, &rtp(1, 7, [1; 160]));
    send(&call.phone_rtp, &first, phone_local.rtp);
    expect_next(&call.pbx_rtp, &rtp(1, 7, [1; 160]));

    // Forged: payload bit flipped.
    let mut forged = protect_rtp(&mut phone_tx, &rtp(2, 7, [2; 160]));
    forged[20] ^= 0x01;
    send(&call.phone_rtp, &forged, phone_local.rtp);
    // Replayed: the first packet again.
    send(&call.phone_rtp, &first, phone_local.rtp);
    // Garbage and a plain (unprotected) RTP packet on the SRTP side.
    send(&call.phone_rtp, b"hello", phone_local.rtp);
    send(&call.phone_rtp, &rtp(3, 7, [3; 160]), phone_local.rtp);
    // Spoofed PBX: right IP, wrong port.
    let intruder = socket();
    send(&intruder, &rtp(50, 9, [9; 160]), pbx_local.rtp);
    send(&intruder, &rtcp_rr(9, 9), pbx_local.rtcp);

    wait_counters(&handle, |c| {
        c.dropped(DropReason::AuthFailed) + c.dropped(DropReason::Malformed) >= 3
            && c.dropped(DropReason::Replayed) >= 1
            && c.dropped(DropReason::SpoofedSource) >= 2
    });

    // Nothing of that reached either side: the next packets are the genuine ones.
    let good = rtp(4, 7, [4; 160]);
    send(
        &call.phone_rtp,
        &protect_rtp(&mut phone_tx, &good),
        phone_local.rtp,
    );
    expect_next(&call.pbx_rtp, &good);
    let down = rtp(60, 5, [6; 160]);
    send(&call.pbx_rtp, &down, pbx_local.rtp);
    let mut phone_rx = ctx(&call.edge_key);
    assert_eq!(unprotect_next_rtp(&call.phone_rtp, &mut phone_rx), down);

    wait_counters(&handle, |c| c.pbx_to_phone_packets == 1);
    let c = handle.counters();
    assert_eq!(c.phone_to_pbx_packets, 2);
    // "hello" is too short to authenticate; the plain RTP packet fails the tag check.
    assert_eq!(
        c.dropped(DropReason::AuthFailed) + c.dropped(DropReason::Malformed),
        3
    );
    assert_eq!(c.dropped(DropReason::Replayed), 1);
    assert_eq!(c.dropped(DropReason::SpoofedSource), 2);

    let totals = relay.control.totals();
    assert_eq!(totals.dropped(DropReason::Replayed), 1);

    // Signalling hears about the authentication failures (rate-limited, per housekeeping tick).
    let auth_failed = c.dropped(DropReason::AuthFailed);
    assert!(auth_failed >= 1);
    let mut reported = 0;
    while reported < auth_failed {
        match next_event(&mut relay.events).await {
            MediaEvent::AuthFailures { stream, new, total } => {
                assert_eq!(stream, handle.id());
                reported += new;
                assert_eq!(total, reported);
            }
            MediaEvent::Latched { .. } => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(reported, auth_failed);
    handle.stop().await.unwrap();
}

async fn ssrc_change_mid_stream_and_roc_wrap() {
    let relay = relay();
    let call = Call::new();
    let handle = relay.control.start(call.spec()).await.unwrap();
    let phone_local = handle.phone_local();
    let pbx_local = handle.pbx_local();
    let mut phone_tx = ctx(&call.phone_key);
    let mut phone_rx = ctx(&call.edge_key);

    // Sequence numbers cross 65535 → 0 (ROC 0 → 1, RFC 3711 §3.3.1) in both directions.
    let seqs: Vec<u16> = (65530..=65535).chain(0..6).collect();
    for &seq in &seqs {
        let up = rtp(seq, 0x0101_0101, [seq as u8; 160]);
        send(
            &call.phone_rtp,
            &protect_rtp(&mut phone_tx, &up),
            phone_local.rtp,
        );
        expect_next(&call.pbx_rtp, &up);
        let down = rtp(seq, 0x0202_0202, [seq as u8 ^ 0xff; 160]);
        send(&call.pbx_rtp, &down, pbx_local.rtp);
        assert_eq!(unprotect_next_rtp(&call.phone_rtp, &mut phone_rx), down);
    }

    // New SSRCs (Asterisk does this on transfers), same master keys, no signalling.
    for seq in 100..105u16 {
        let up = rtp(seq, 0x0303_0303, [3; 160]);
        send(
            &call.phone_rtp,
            &protect_rtp(&mut phone_tx, &up),
            phone_local.rtp,
        );
        expect_next(&call.pbx_rtp, &up);
        let down = rtp(seq.wrapping_mul(7), 0x0404_0404, [4; 160]);
        send(&call.pbx_rtp, &down, pbx_local.rtp);
        assert_eq!(unprotect_next_rtp(&call.phone_rtp, &mut phone_rx), down);
    }
    // The old SSRC continues after the wrap.
    let up = rtp(6, 0x0101_0101, [6; 160]);
    send(
        &call.phone_rtp,
        &protect_rtp(&mut phone_tx, &up),
        phone_local.rtp,
    );
    expect_next(&call.pbx_rtp, &up);
    assert_eq!(handle.counters().dropped.iter().sum::<u64>(), 0);
    handle.stop().await.unwrap();
}

async fn phone_address_is_learned_only_from_authenticated_packets() {
    let mut relay = relay();
    let call = Call::new();
    let handle = relay.control.start(call.spec()).await.unwrap();
    let phone_local = handle.phone_local();
    let pbx_local = handle.pbx_local();
    let mut phone_tx = ctx(&call.phone_key);
    let mut phone_rx = ctx(&call.edge_key);
    let behind_nat = socket();
    let attacker = socket();

    // Before any phone packet, media goes to the SDP address.
    let down = rtp(1, 5, [1; 160]);
    send(&call.pbx_rtp, &down, pbx_local.rtp);
    assert_eq!(unprotect_next_rtp(&call.phone_rtp, &mut phone_rx), down);

    // RTP bleed: the attacker sends unauthenticated packets (plain RTP, garbage, a forged
    // tag) to the relay's phone port; media must keep going to the SDP address.
    send(&attacker, &rtp(2, 66, [6; 160]), phone_local.rtp);
    send(&attacker, &[0x80u8; 200], phone_local.rtp);
    let mut forged = protect_rtp(&mut ctx(&key(0x99)), &rtp(3, 66, [6; 160]));
    forged[2] ^= 0xff;
    send(&attacker, &forged, phone_local.rtp);
    wait_counters(&handle, |c| {
        c.dropped(DropReason::AuthFailed) + c.dropped(DropReason::Malformed) >= 3
    });
    let down = rtp(2, 5, [2; 160]);
    send(&call.pbx_rtp, &down, pbx_local.rtp);
    assert_eq!(unprotect_next_rtp(&call.phone_rtp, &mut phone_rx), down);
    assert_eq!(handle.counters().latch_events, 0);

    // The real phone, behind NAT, sends an authenticated packet from another address: learned.
    let up = rtp(10, 7, [1; 160]);
    let genuine = protect_rtp(&mut phone_tx, &up);
    send(&behind_nat, &genuine, phone_local.rtp);
    expect_next(&call.pbx_rtp, &up);
    let event = next_event(&mut relay.events).await;
    assert_eq!(
        event,
        MediaEvent::Latched {
            stream: handle.id(),
            side: Side::Phone,
            kind: Kind::Rtp,
            address: behind_nat.local_addr().unwrap(),
        }
    );
    let down = rtp(3, 5, [3; 160]);
    send(&call.pbx_rtp, &down, pbx_local.rtp);
    assert_eq!(unprotect_next_rtp(&behind_nat, &mut phone_rx), down);

    // The attacker replays the genuine packet from its own address: refused, no redirect.
    send(&attacker, &genuine, phone_local.rtp);
    wait_counters(&handle, |c| c.dropped(DropReason::Replayed) >= 1);
    let down = rtp(4, 5, [4; 160]);
    send(&call.pbx_rtp, &down, pbx_local.rtp);
    assert_eq!(unprotect_next_rtp(&behind_nat, &mut phone_rx), down);
    assert_eq!(handle.counters().latch_events, 1);

    // NAT rebinding: a fresh authenticated packet from a new port re-latches.
    let rebound = socket();
    let up = rtp(11, 7, [2; 160]);
    send(&rebound, &protect_rtp(&mut phone_tx, &up), phone_local.rtp);
    expect_next(&call.pbx_rtp, &up);
    let down = rtp(5, 5, [5; 160]);
    send(&call.pbx_rtp, &down, pbx_local.rtp);
    assert_eq!(unprotect_next_rtp(&rebound, &mut phone_rx), down);
    assert_eq!(handle.counters().latch_events, 2);

    // Nothing ever reached the attacker.
    attacker
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(attacker.recv_from(&mut buf).is_err());
    handle.stop().await.unwrap();
}

async fn ports_return_to_the_pool_after_stop() {
    // Two pairs = exactly one stream (one pair per side).
    let relay = relay_with(2, Duration::from_secs(60));
    let call = Call::new();
    assert_eq!(relay.control.ports().pairs_free(), 2);
    let handle = relay.control.start(call.spec()).await.unwrap();
    assert_eq!(relay.control.ports().pairs_in_use(), 2);
    let err = relay.control.start(call.spec()).await.unwrap_err();
    assert!(matches!(err, MediaError::PortsExhausted), "{err:?}");
    assert_eq!(err.label(), "ports_exhausted");
    // The failed start gave back the pair it had taken.
    assert_eq!(relay.control.ports().pairs_in_use(), 2);
    let first_ports = (handle.phone_local(), handle.pbx_local());

    handle.stop().await.unwrap();
    assert_eq!(relay.control.ports().pairs_in_use(), 0);
    assert_eq!(relay.control.active_streams(), 0);

    // The ports are really closed: a new stream binds them again and relays.
    let handle = relay.control.start(call.spec()).await.unwrap();
    let mut again = [handle.phone_local().rtp, handle.pbx_local().rtp];
    let mut before = [first_ports.0.rtp, first_ports.1.rtp];
    again.sort();
    before.sort();
    assert_eq!(again, before);
    let up = rtp(1, 1, [1; 160]);
    send(
        &call.phone_rtp,
        &protect_rtp(&mut ctx(&call.phone_key), &up),
        handle.phone_local().rtp,
    );
    expect_next(&call.pbx_rtp, &up);

    // Dropping the handle stops the stream too (without waiting): bounded wait for it.
    drop(handle);
    let deadline = Instant::now() + WAIT;
    while relay.control.ports().pairs_in_use() != 0 {
        assert!(Instant::now() < deadline, "ports not returned after drop");
        std::thread::sleep(Duration::from_millis(2));
    }
}

async fn media_timeout_is_reported_unless_on_hold() {
    let mut relay = relay_with(8, Duration::from_millis(100));
    let call = Call::new();
    // A stalled machine may let 100 ms pass between starting the stream and the worker
    // applying Hold, and the stream then rightly times out before it is held. The worker
    // counts a timeout before it handles the next command, so after the Hold is acknowledged
    // the counter says whether that happened; if so, that stream is discarded (its events
    // ignored) and the setup is tried again, bounded.
    let mut discarded = Vec::new();
    let mut held = loop {
        let mut held = relay.control.start(call.spec()).await.unwrap();
        held.apply(StreamCommand::Hold).await.unwrap();
        if held.counters().timeouts == 0 {
            break held;
        }
        assert!(
            discarded.len() < 20,
            "the machine stalls > 100 ms every time"
        );
        discarded.push(held.id());
        held.stop().await.unwrap();
    };
    let silent = relay.control.start(call.spec()).await.unwrap();

    let mut sides = Vec::new();
    while sides.len() < 2 {
        match next_event(&mut relay.events).await {
            MediaEvent::Timeout { stream, .. } if discarded.contains(&stream) => {}
            MediaEvent::Timeout { stream, side } => {
                assert_eq!(stream, silent.id(), "a held stream never times out");
                sides.push(side);
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    sides.sort_by_key(|s| *s == Side::Pbx);
    assert_eq!(sides, vec![Side::Phone, Side::Pbx]);
    assert_eq!(silent.counters().timeouts, 2);
    assert_eq!(held.counters().timeouts, 0);

    // Resume: the held stream's silence clock restarts and it then times out as well.
    held.apply(StreamCommand::Resume).await.unwrap();
    let mut count = 0;
    while count < 2 {
        match next_event(&mut relay.events).await {
            MediaEvent::Timeout { stream, .. } if discarded.contains(&stream) => {}
            MediaEvent::Timeout { stream, .. } => {
                assert_eq!(stream, held.id());
                count += 1;
            }
            _ => {}
        }
    }
    held.stop().await.unwrap();
    silent.stop().await.unwrap();
}

async fn rtcp_mux_on_phone_side_is_demultiplexed() {
    let relay = relay();
    let call = Call::new();
    let mut spec = call.spec();
    spec.phone.rtcp_mux = true;
    let handle = relay.control.start(spec).await.unwrap();
    let phone_local = handle.phone_local();
    let pbx_local = handle.pbx_local();
    let mut phone_tx = ctx(&call.phone_key);
    let mut phone_rx = ctx(&call.edge_key);

    // SRTCP and SRTP on the one phone port; RTCP leaves on the PBX's RTCP port.
    let rr = rtcp_rr(1, 3);
    send(
        &call.phone_rtp,
        &protect_rtcp(&mut phone_tx, &rr),
        phone_local.rtp,
    );
    let from = expect_next(&call.pbx_rtcp, &rr);
    assert_eq!(from, pbx_local.rtcp);
    let up = rtp(1, 1, [1; 160]);
    send(
        &call.phone_rtp,
        &protect_rtp(&mut phone_tx, &up),
        phone_local.rtp,
    );
    expect_next(&call.pbx_rtp, &up);

    // PBX RTCP goes back muxed onto the phone's RTP address.
    let rr = rtcp_rr(2, 4);
    send(&call.pbx_rtcp, &rr, pbx_local.rtcp);
    let (mut got, from) = recv(&call.phone_rtp);
    assert_eq!(from, phone_local.rtp);
    let n = phone_rx.unprotect_rtcp(&mut got).unwrap().len;
    assert_eq!(&got[..n], &rr[..]);
    handle.stop().await.unwrap();
}

async fn best_effort_plain_stream_learns_first_source_only() {
    let relay = relay();
    let call = Call::new();
    let mut spec = call.spec();
    spec.phone_to_pbx = TransformSpec::Plain;
    spec.pbx_to_phone = TransformSpec::Plain;
    let handle = relay.control.start(spec).await.unwrap();
    let phone_local = handle.phone_local();
    let pbx_local = handle.pbx_local();

    let up = rtp(1, 1, [1; 160]);
    send(&call.phone_rtp, &up, phone_local.rtp);
    expect_next(&call.pbx_rtp, &up);
    let down = rtp(1, 2, [2; 160]);
    send(&call.pbx_rtp, &down, pbx_local.rtp);
    expect_next(&call.phone_rtp, &down);

    // Another source cannot take over a plain stream once it has latched.
    let attacker = socket();
    send(&attacker, &rtp(2, 1, [9; 160]), phone_local.rtp);
    wait_counters(&handle, |c| c.dropped(DropReason::SpoofedSource) >= 1);
    let down = rtp(2, 2, [3; 160]);
    send(&call.pbx_rtp, &down, pbx_local.rtp);
    expect_next(&call.phone_rtp, &down);
    handle.stop().await.unwrap();
}

async fn rekey_and_retarget() {
    let relay = relay();
    let call = Call::new();
    let mut spec = call.spec();
    // Incoming call: the phone's key is not known until its answer.
    spec.phone_to_pbx = TransformSpec::Closed;
    spec.pbx.rtp = None;
    spec.pbx.rtcp = None;
    let mut handle = relay.control.start(spec).await.unwrap();
    let phone_local = handle.phone_local();
    let pbx_local = handle.pbx_local();

    let mut phone_tx = ctx(&call.phone_key);
    send(
        &call.phone_rtp,
        &protect_rtp(&mut phone_tx, &rtp(1, 1, [1; 160])),
        phone_local.rtp,
    );
    wait_counters(&handle, |c| c.dropped(DropReason::NotKeyed) >= 1);

    // The answer arrives: phone key and PBX address known.
    handle
        .apply(StreamCommand::Rekey {
            phone_to_pbx: Some(TransformSpec::Srtp(SrtpParams::new(call.phone_key.clone()))),
            pbx_to_phone: None,
        })
        .await
        .unwrap();
    handle
        .apply(StreamCommand::Retarget {
            phone: None,
            pbx: Some(PeerSpec::new(call.pbx_rtp.local_addr().unwrap())),
        })
        .await
        .unwrap();
    let up = rtp(2, 1, [2; 160]);
    send(
        &call.phone_rtp,
        &protect_rtp(&mut phone_tx, &up),
        phone_local.rtp,
    );
    expect_next(&call.pbx_rtp, &up);

    // Re-INVITE with a new key: the old key no longer authenticates.
    let new_key = key(0x33);
    handle
        .apply(StreamCommand::Rekey {
            phone_to_pbx: Some(TransformSpec::Srtp(SrtpParams::new(new_key.clone()))),
            pbx_to_phone: None,
        })
        .await
        .unwrap();
    send(
        &call.phone_rtp,
        &protect_rtp(&mut phone_tx, &rtp(3, 1, [3; 160])),
        phone_local.rtp,
    );
    wait_counters(&handle, |c| c.dropped(DropReason::AuthFailed) >= 1);
    let up = rtp(4, 1, [4; 160]);
    send(
        &call.phone_rtp,
        &protect_rtp(&mut ctx(&new_key), &up),
        phone_local.rtp,
    );
    expect_next(&call.pbx_rtp, &up);

    // The PBX's old RTP port is refused after the retarget to a new one.
    let new_pbx = socket();
    handle
        .apply(StreamCommand::Retarget {
            phone: None,
            pbx: Some(PeerSpec::new(new_pbx.local_addr().unwrap())),
        })
        .await
        .unwrap();
    // Commands are handled in order, so once this packet arrives the retarget is in force.
    let up = rtp(5, 1, [5; 160]);
    send(
        &call.phone_rtp,
        &protect_rtp(&mut ctx(&new_key), &up),
        phone_local.rtp,
    );
    expect_next(&new_pbx, &up);
    send(&call.pbx_rtp, &rtp(9, 9, [9; 160]), pbx_local.rtp);
    wait_counters(&handle, |c| c.dropped(DropReason::SpoofedSource) >= 1);
    handle.stop().await.unwrap();
}

async fn stopped_stream_refuses_commands() {
    let relay = relay();
    let call = Call::new();
    let mut handle = relay.control.start(call.spec()).await.unwrap();
    handle.send(StreamCommand::Stop).unwrap();
    assert!(matches!(
        handle.send(StreamCommand::Hold),
        Err(MediaError::StreamGone)
    ));
}

async fn unannounced_unencrypted_srtcp_only_with_the_quirk_option() {
    let relay = relay();
    let call = Call::new();
    let plain_rtcp_sender = ContextOptions {
        unencrypted_srtcp: true,
        ..ContextOptions::default()
    };
    let rr = rtcp_rr(0x5A5A_0001, 0x11);

    // Default: an E=0 SRTCP packet without UNENCRYPTED_SRTCP negotiated is refused.
    let strict = relay.control.start(call.spec()).await.unwrap();
    let mut phone_tx = SrtpContext::new(&call.phone_key, &plain_rtcp_sender).unwrap();
    send(
        &call.phone_rtcp,
        &protect_rtcp(&mut phone_tx, &rr),
        strict.phone_local().rtcp,
    );
    wait_counters(&strict, |c| c.dropped(DropReason::UnencryptedSrtcp) == 1);
    strict.stop().await.unwrap();

    // With the Cisco SPA quirk option: accepted when the tag verifies, and counted.
    let mut spec = call.spec();
    spec.phone_to_pbx = TransformSpec::Srtp(SrtpParams {
        master_key: call.phone_key.clone(),
        options: ContextOptions {
            danger_accept_unannounced_unencrypted_srtcp: true,
            ..ContextOptions::default()
        },
    });
    let lenient = relay.control.start(spec).await.unwrap();
    let mut phone_tx = SrtpContext::new(&call.phone_key, &plain_rtcp_sender).unwrap();
    send(
        &call.phone_rtcp,
        &protect_rtcp(&mut phone_tx, &rr),
        lenient.phone_local().rtcp,
    );
    expect_next(&call.pbx_rtcp, &rr);
    wait_counters(&lenient, |c| c.unannounced_unencrypted_srtcp == 1);
    lenient.stop().await.unwrap();
}

async fn stray_rtcp_on_the_rtp_port_is_relayed_as_rtcp_without_moving_rtp() {
    let relay = relay();
    let call = Call::new();
    let handle = relay.control.start(call.spec()).await.unwrap();
    let phone_local = handle.phone_local();
    let pbx_local = handle.pbx_local();
    let mut phone_tx = ctx(&call.phone_key);
    let mut phone_rx = ctx(&call.edge_key);

    // The phone latches its RTP address.
    let up = rtp(1, 1, [1; 160]);
    send(
        &call.phone_rtp,
        &protect_rtp(&mut phone_tx, &up),
        phone_local.rtp,
    );
    expect_next(&call.pbx_rtp, &up);

    // Authenticated SRTCP from the phone's RTCP port, but sent to the relay's RTP port.
    let rr = rtcp_rr(1, 5);
    send(
        &call.phone_rtcp,
        &protect_rtcp(&mut phone_tx, &rr),
        phone_local.rtp,
    );
    expect_next(&call.pbx_rtcp, &rr);

    // PBX (Asterisk-style) sends RTCP from its RTCP port to the relay's RTP port.
    let rr = rtcp_rr(2, 6);
    send(&call.pbx_rtcp, &rr, pbx_local.rtp);
    let (mut got, _) = recv(&call.phone_rtcp);
    let n = phone_rx.unprotect_rtcp(&mut got).unwrap().len;
    assert_eq!(&got[..n], &rr[..]);

    // RTP toward the phone still goes to its RTP address.
    let down = rtp(3, 2, [7; 160]);
    send(&call.pbx_rtp, &down, pbx_local.rtp);
    assert_eq!(unprotect_next_rtp(&call.phone_rtp, &mut phone_rx), down);
    assert_eq!(handle.counters().dropped.iter().sum::<u64>(), 0);
    handle.stop().await.unwrap();
}

/// README: a relay of several workers (`workers: 2`, streams go to the least loaded), and
/// events signalling cannot take are counted in `pbx_edge_media_events_lost_total` rather
/// than blocking a worker. The signalling channel here has one slot and is read only at the
/// end, so of the events the streams produced (latches and timeouts, each also counted per
/// stream) all but what the slot holds are lost — exactly, not approximately.
async fn several_workers_relay_every_stream_and_count_the_events_signalling_could_not_take() {
    let (port_min, port_max) = free_range(8);
    let settings = RelaySettings {
        phone_bind: LOOPBACK,
        pbx_bind: LOOPBACK,
        port_min,
        port_max,
        timeout: Duration::from_millis(200),
        workers: 2,
        io: io_mode(),
        ..RelaySettings::default()
    };
    let registry = Registry::new();
    let (tx, mut events) = mpsc::channel(1);
    let control = MediaControl::new(settings, &registry, tx).unwrap();
    let calls: Vec<Call> = (0..4).map(|_| Call::new()).collect();
    let mut handles = Vec::new();
    for call in &calls {
        handles.push(control.start(call.spec()).await.unwrap());
    }

    // Every stream relays both ways, interleaved across the streams (and so the workers).
    let mut phone_tx: Vec<SrtpContext> = calls.iter().map(|c| ctx(&c.phone_key)).collect();
    let mut phone_rx: Vec<SrtpContext> = calls.iter().map(|c| ctx(&c.edge_key)).collect();
    for seq in 1..=5u16 {
        for (i, (call, handle)) in calls.iter().zip(&handles).enumerate() {
            let ssrc = 0x5000 + i as u32;
            let plain = rtp(seq, ssrc, [seq as u8 ^ i as u8; 160]);
            send(
                &call.phone_rtp,
                &protect_rtp(&mut phone_tx[i], &plain),
                handle.phone_local().rtp,
            );
            expect_next(&call.pbx_rtp, &plain);
            let plain = rtp(seq, ssrc | 0x10000, [!(seq as u8) ^ i as u8; 160]);
            send(&call.pbx_rtp, &plain, handle.pbx_local().rtp);
            assert_eq!(unprotect_next_rtp(&call.phone_rtp, &mut phone_rx[i]), plain);
        }
    }

    // Silence: every stream times out on both sides (each timeout is an event; a stall
    // during the exchange above may have added one, which the accounting includes).
    for handle in &handles {
        wait_counters(handle, |c| c.timeouts >= 2);
    }
    // A worker counts an event just before it offers it to the channel: read until the
    // books balance (bounded), then require that they do.
    let mut received = 0u64;
    let deadline = Instant::now() + WAIT;
    let (produced, lost, text) = loop {
        let produced: u64 = handles
            .iter()
            .map(|h| {
                let c = h.counters();
                c.latch_events + c.timeouts
            })
            .sum();
        while events.try_recv().is_ok() {
            received += 1;
        }
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        let lost: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("pbx_edge_media_events_lost_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no events_lost_total:\n{text}"));
        if received + lost == produced || Instant::now() >= deadline {
            break (produced, lost, text);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // At least: each stream latched the phone's RTP address and timed out on both sides.
    assert!(produced >= 4 + 4 * 2, "latches and timeouts: {produced}");
    assert_eq!(received, 1, "the one slot holds one event");
    assert_eq!(
        received + lost,
        produced,
        "every event is either delivered or counted lost:\n{text}"
    );
    for handle in handles {
        handle.stop().await.unwrap();
    }
}

/// Issue 11 point 10: a PBX that cycles through more SSRCs than an SRTP context tracks (32
/// per direction) must not make the edge forget a sender. Before, the least recently used
/// SSRC was evicted and, when it spoke again, restarted at ROC 0: the same keystream as its
/// first packets (RFC 3711 §9.1). Now the 33rd SSRC is dropped and counted, and the first
/// SSRC, past a sequence wrap (ROC 1), keeps its ROC: the phone, whose context tracks the ROC
/// itself, authenticates what follows (the ROC is part of the authenticated data).
async fn a_pbx_cycling_through_ssrcs_never_makes_the_edge_reuse_keystream() {
    let relay = relay();
    let call = Call::new();
    let handle = relay.control.start(call.spec()).await.unwrap();
    let pbx_local = handle.pbx_local();
    let mut phone_rx = ctx(&call.edge_key);

    // SSRC 0xA wraps its sequence: ROC 1 from here on.
    for seq in [65534u16, 65535, 0] {
        let plain = rtp(seq, 0xA, [1; 160]);
        send(&call.pbx_rtp, &plain, pbx_local.rtp);
        assert_eq!(unprotect_next_rtp(&call.phone_rtp, &mut phone_rx), plain);
    }
    // 31 more SSRCs fill the context (32 in all), each relayed.
    for ssrc in 1..=31u32 {
        let plain = rtp(7, 0x100 + ssrc, [2; 160]);
        send(&call.pbx_rtp, &plain, pbx_local.rtp);
        assert_eq!(unprotect_next_rtp(&call.phone_rtp, &mut phone_rx), plain);
    }
    // The 33rd is dropped and counted, not given 0xA's slot.
    send(&call.pbx_rtp, &rtp(7, 0x999, [3; 160]), pbx_local.rtp);
    wait_counters(&handle, |c| c.dropped(DropReason::TooManySsrcs) == 1);
    // 0xA speaks again: still ROC 1, so the phone authenticates it (under the old eviction
    // it was protected with ROC 0 and the phone refused it).
    for seq in 1..4u16 {
        let plain = rtp(seq, 0xA, [4; 160]);
        send(&call.pbx_rtp, &plain, pbx_local.rtp);
        assert_eq!(unprotect_next_rtp(&call.phone_rtp, &mut phone_rx), plain);
    }
    // Counters are bumped right after the send: wait (bounded) for the last one.
    wait_counters(&handle, |c| c.pbx_to_phone_packets == 3 + 31 + 3);
    assert_eq!(handle.counters().dropped(DropReason::TooManySsrcs), 1);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&relay.registry.gather())
        .unwrap();
    assert!(
        text.contains("pbx_edge_media_dropped_total{reason=\"too_many_ssrcs\"} 1"),
        "{text}"
    );
    handle.stop().await.unwrap();
}

in_both_io_modes!(
    srtp_to_rtp_and_back_byte_identical,
    forged_replayed_and_spoofed_packets_are_dropped_and_counted,
    ssrc_change_mid_stream_and_roc_wrap,
    phone_address_is_learned_only_from_authenticated_packets,
    ports_return_to_the_pool_after_stop,
    media_timeout_is_reported_unless_on_hold,
    rtcp_mux_on_phone_side_is_demultiplexed,
    best_effort_plain_stream_learns_first_source_only,
    rekey_and_retarget,
    stopped_stream_refuses_commands,
    unannounced_unencrypted_srtcp_only_with_the_quirk_option,
    stray_rtcp_on_the_rtp_port_is_relayed_as_rtcp_without_moving_rtp,
    several_workers_relay_every_stream_and_count_the_events_signalling_could_not_take,
    a_pbx_cycling_through_ssrcs_never_makes_the_edge_reuse_keystream,
);

/// `auto` picks batched I/O exactly where io_uring passes its self-test, and says which in
/// `pbx_edge_media_io_batched`; `per_packet` is per-packet whatever the machine.
#[tokio::test]
async fn the_io_mode_in_use_is_the_one_chosen_and_is_reported() {
    let works = pbx_edge::media::batch_io::probe().is_ok();
    for (mode, batched) in [(MediaIo::Auto, works), (MediaIo::PerPacket, false)] {
        IO.with(|m| m.set(mode));
        let relay = relay();
        assert_eq!(relay.control.io_batched(), batched, "{mode:?}");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&relay.registry.gather())
            .unwrap();
        let line = format!("pbx_edge_media_io_batched {}", u8::from(batched));
        assert!(
            text.lines().any(|l| l == line),
            "{mode:?}: no `{line}` in\n{text}"
        );
    }
}
