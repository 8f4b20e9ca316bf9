//! RFC 3261 §17 transactions driven end to end with simulated time (a `Duration` clock): a PBX
//! on UDP that drops the first requests, one that retransmits its own requests, one that never
//! answers, and a phone on TLS (reliable: no retransmission timers).

use std::collections::BTreeMap;
use std::time::Duration;

use pbx_edge::sip::response::response_to;
use pbx_edge::sip::{Method, SipMessage};
use pbx_edge::transaction::fsm::{
    Action, ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite, Termination, Timer,
    TimerConfig,
};
use pbx_edge::transaction::key::TransactionKey;

fn request(method: &str, branch: &str) -> SipMessage {
    SipMessage::parse(
        format!(
            "{method} sip:101@198.51.100.2 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.1:5080;branch={branch};rport\r\n\
             From: <sip:101@pbx>;tag=f1\r\nTo: <sip:101@pbx>\r\nCall-ID: scen-1\r\n\
             CSeq: 3 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Timers armed by one transaction (re-arming replaces), and what it sent / delivered.
#[derive(Default)]
struct Harness {
    timers: BTreeMap<(Duration, u8), Timer>,
    sent: Vec<(Duration, SipMessage)>,
    delivered: Vec<SipMessage>,
    ended: Option<(Duration, Termination)>,
}

impl Harness {
    fn apply(&mut self, now: Duration, actions: Vec<Action<Duration>>) {
        for a in actions {
            match a {
                Action::Send(m) => self.sent.push((now, m)),
                Action::Deliver(m) => self.delivered.push(m),
                Action::Arm(t, at) => {
                    self.timers.retain(|_, v| *v != t);
                    self.timers.insert((at, t as u8), t);
                }
                Action::Terminated(why) => {
                    self.timers.clear();
                    self.ended = Some((now, why));
                }
            }
        }
    }

    /// Whether `timer` is armed to fire at `at`.
    fn armed(&self, timer: Timer, at: Duration) -> bool {
        self.timers.get(&(at, timer as u8)) == Some(&timer)
    }

    fn next_timer(&mut self) -> Option<(Duration, Timer)> {
        let (&(at, id), &t) = self.timers.iter().next()?;
        self.timers.remove(&(at, id));
        Some((at, t))
    }
}

#[test]
fn udp_pbx_dropping_first_two_requests_still_answers() {
    let config = TimerConfig::default();
    let mut h = Harness::default();
    let (mut client, actions) =
        ClientNonInvite::start(request("REGISTER", "z9hG4bKe1"), false, config, ms(0));
    h.apply(ms(0), actions);
    // The PBX sees the 3rd copy (first two dropped) and answers 401 20 ms later.
    let mut copies = 1;
    while copies < 3 {
        let (at, t) = h.next_timer().unwrap();
        assert_eq!(t, Timer::E);
        let actions = client.on_timer(t, at);
        h.apply(at, actions);
        copies += 1;
    }
    let (last_send, req) = h.sent.last().cloned().unwrap();
    assert_eq!(
        h.sent.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![ms(0), ms(500), ms(1500)]
    );
    let answer = response_to(&req, 401, Some("pbx1"), None).unwrap();
    assert_eq!(
        TransactionKey::client_for_response(&answer).unwrap(),
        TransactionKey::client_for_request(&req).unwrap()
    );
    let at = last_send + ms(20);
    let actions = client.on_response(answer.clone(), at);
    h.apply(at, actions);
    assert_eq!(h.delivered.len(), 1);
    assert_eq!(h.delivered[0].status(), Some(401));
    // A late retransmitted 401 is absorbed; K then ends the transaction after T4.
    let actions = client.on_response(answer, at + ms(5));
    h.apply(at + ms(5), actions);
    assert_eq!(h.delivered.len(), 1);
    let k_at = at + ms(5000);
    assert!(h.armed(Timer::K, k_at));
    // Fire everything still armed in time order: stale E/F timers must do nothing.
    let sent_before = h.sent.len();
    while let Some((t_at, t)) = h.next_timer() {
        let actions = client.on_timer(t, t_at);
        h.apply(t_at, actions);
    }
    assert_eq!(
        h.sent.len(),
        sent_before,
        "no retransmission after the final response"
    );
    assert_eq!(h.ended, Some((k_at, Termination::Completed)));
}

#[test]
fn lost_pbx_times_out_at_64_t1_so_the_phone_gets_408() {
    let config = TimerConfig::default();
    let mut h = Harness::default();
    let (mut client, actions) =
        ClientNonInvite::start(request("OPTIONS", "z9hG4bKe2"), false, config, ms(0));
    h.apply(ms(0), actions);
    while h.ended.is_none() {
        let (at, t) = h.next_timer().unwrap();
        let actions = client.on_timer(t, at);
        h.apply(at, actions);
    }
    let times: Vec<u64> = h.sent.iter().map(|(t, _)| t.as_millis() as u64).collect();
    assert_eq!(
        times,
        vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(h.ended, Some((ms(32_000), Termination::Timeout(Timer::F))));
}

#[test]
fn lost_pbx_invite_times_out_with_timer_b() {
    let config = TimerConfig {
        t1: ms(250),
        ..TimerConfig::default()
    };
    let mut h = Harness::default();
    let (mut client, actions) =
        ClientInvite::start(request("INVITE", "z9hG4bKe3"), false, config, ms(0));
    h.apply(ms(0), actions);
    while h.ended.is_none() {
        let (at, t) = h.next_timer().unwrap();
        let actions = client.on_timer(t, at);
        h.apply(at, actions);
    }
    let times: Vec<u64> = h.sent.iter().map(|(t, _)| t.as_millis() as u64).collect();
    // Timer A doubles with no T2 cap for INVITE (§17.1.1.2); B = 64 × T1 = 16 s.
    assert_eq!(times, vec![0, 250, 750, 1750, 3750, 7750, 15750]);
    assert_eq!(h.ended, Some((ms(16_000), Termination::Timeout(Timer::B))));
}

#[test]
fn pbx_retransmitting_its_request_is_absorbed_and_gets_last_response() {
    let config = TimerConfig::default();
    let mut h = Harness::default();
    let notify = request("NOTIFY", "z9hG4bKpbx1");
    let key = TransactionKey::server(&notify).unwrap();
    let (mut server, actions) = ServerNonInvite::start::<Duration>(notify.clone(), false, config);
    h.apply(ms(0), actions);
    assert_eq!(h.delivered.len(), 1, "delivered once to the B2BUA");
    // Retransmission before the phone answered: absorbed, nothing sent, nothing delivered.
    assert_eq!(TransactionKey::server(&notify).unwrap(), key);
    let actions = server.on_request(notify.clone(), ms(500));
    h.apply(ms(500), actions);
    assert!(h.sent.is_empty());
    // The phone's 200 goes out; later retransmissions get it again.
    let ok = response_to(&notify, 200, Some("ph1"), None).unwrap();
    let actions = server.send_response(ok, ms(700));
    h.apply(ms(700), actions);
    for at in [ms(1500), ms(3500)] {
        let actions = server.on_request(notify.clone(), at);
        h.apply(at, actions);
    }
    assert_eq!(h.sent.len(), 3);
    assert!(h.sent.iter().all(|(_, m)| m.status() == Some(200)));
    assert_eq!(h.delivered.len(), 1);
    assert!(h.armed(Timer::J, ms(700) + ms(32_000)));
}

#[test]
fn pbx_invite_rejected_by_phone_is_retransmitted_until_ack() {
    let config = TimerConfig::default();
    let mut h = Harness::default();
    let invite = request("INVITE", "z9hG4bKpbx2");
    let (mut server, actions) =
        ServerInvite::start::<Duration>(invite.clone(), false, config).unwrap();
    h.apply(ms(0), actions);
    assert_eq!(h.sent[0].1.status(), Some(100));
    let busy = response_to(&invite, 486, Some("ph2"), None).unwrap();
    let actions = server.send_response(busy, ms(100));
    h.apply(ms(100), actions);
    // G fires twice before the ACK arrives.
    for _ in 0..2 {
        let (at, t) = h.next_timer().unwrap();
        assert_eq!(t, Timer::G);
        let actions = server.on_timer(t, at);
        h.apply(at, actions);
    }
    let finals: Vec<u64> = h
        .sent
        .iter()
        .filter(|(_, m)| m.status() == Some(486))
        .map(|(t, _)| t.as_millis() as u64)
        .collect();
    assert_eq!(finals, vec![100, 600, 1600]);
    let ack = request("ACK", "z9hG4bKpbx2");
    assert_eq!(
        TransactionKey::server(&ack).unwrap(),
        TransactionKey::server(&invite).unwrap()
    );
    let actions = server.on_request(ack, ms(1700));
    h.apply(ms(1700), actions);
    assert!(h.armed(Timer::I, ms(6700)));
    let sent_before = h.sent.len();
    while let Some((at, t)) = h.next_timer() {
        let actions = server.on_timer(t, at);
        h.apply(at, actions);
    }
    assert_eq!(h.sent.len(), sent_before, "G stops once the ACK arrived");
    assert_eq!(h.ended, Some((ms(6700), Termination::Completed)));
}

#[test]
fn phone_leg_on_tls_has_no_retransmissions() {
    let config = TimerConfig::default();
    let mut h = Harness::default();
    let (mut client, actions) =
        ClientNonInvite::start(request("OPTIONS", "z9hG4bKtls1"), true, config, ms(0));
    h.apply(ms(0), actions);
    assert_eq!(
        h.timers.values().copied().collect::<Vec<_>>(),
        vec![Timer::F]
    );
    let req = h.sent[0].1.clone();
    let ok = response_to(&req, 200, Some("ph3"), None).unwrap();
    let actions = client.on_response(ok, ms(40));
    h.apply(ms(40), actions);
    assert_eq!(h.ended, Some((ms(40), Termination::Completed)));
    assert_eq!(h.sent.len(), 1);
    assert_eq!(h.delivered[0].cseq().unwrap().method, Method::Options);
}
