//! A small language for call scenarios over loopback, so that a test reads as the call it
//! tells: [`Lab`] (a dev PKI, the UDP PBX of [`super::pbx`], an in-process edge), phones
//! ([`super::phone`]) and [`Dialog`]s that write each side's requests, and the verbs every
//! call test repeats — [`register`], [`dial`], [`answer`], [`ack`], check media both ways
//! ([`super::media::Media::both_ways`]), hang up from either side ([`phone_hangs_up`],
//! [`pbx_hangs_up`]), wait until the edge is idle ([`assert_idle`]) — each with the checks
//! the tests made inline before. The verbs take the PBX and the phone, not the edge, so they
//! serve the in-process edge and the binary (`e2e::config_cli::Running`) alike.

use super::edge::{self, RunningEdge, TestPki};
use super::http;
use super::media::{Media, Relay};
use super::offer::{crypto_line, media_addr, pbx_sdp, phone_key_line, phone_offer};
use super::pbx::{self, Pbx};
use super::phone::{self, Phone};
use pbx_edge::sip::message::SipMessage;
use std::net::SocketAddr;
use std::time::Duration;

/// A dev PKI, a UDP PBX and an edge in front of it.
pub struct Lab {
    pub pki: TestPki,
    pub pbx: Pbx,
    pub e: RunningEdge,
}

impl Lab {
    /// An edge on the dev config with `PBX_EDGE_*` overrides `env`, its PBX a fresh [`Pbx`].
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let pki = edge::dev_pki();
        let pbx = Pbx::bind().await;
        let e = RunningEdge::start_with_pbx(&pki, pbx.addr(), env).await;
        Self { pki, pbx, e }
    }

    /// A Snom phone connected over TLS with its device certificate.
    pub async fn phone(&self) -> Phone {
        phone::snom(&self.pki, &self.e).await
    }

    /// A phone → PBX dialog from phone 101 to 200 through this edge.
    pub fn dialog(&self, call_id: &str, tag: &str) -> Dialog {
        Dialog::phone(call_id, tag, self.e.tls_addr)
    }

    /// A PBX → phone dialog toward `edge_uri` (the Contact the edge registered).
    pub fn pbx_dialog(&self, call_id: &str, edge_uri: &str) -> Dialog {
        Dialog::pbx(call_id, self.pbx.addr(), edge_uri)
    }

    /// Phone 101 connects and calls 200 (`call_id`, `extra` headers), offering SRTP at its
    /// media socket, or no SDP at all (a delayed offer) when `offer` is false: [`dial`].
    pub async fn call(&self, call_id: &str, extra: &str, offer: bool) -> Call {
        let sdp = |port| {
            if offer {
                phone_offer(port)
            } else {
                String::new()
            }
        };
        self.call_offering(call_id, extra, sdp).await
    }

    /// [`Lab::call`] with the offer `sdp` makes for the phone's media port.
    pub async fn call_offering(
        &self,
        call_id: &str,
        extra: &str,
        sdp: impl FnOnce(u16) -> String,
    ) -> Call {
        let mut ph = self.phone().await;
        let media = Media::bind().await;
        let d = self.dialog(call_id, &format!("tag-{call_id}"));
        let sdp = sdp(media.phone_port());
        let invite = d.invite("sip:200@sbc.test", extra, &sdp);
        let (inv, from) = dial(&self.pbx, &mut ph, &invite).await;
        Call {
            ph,
            media,
            d,
            invite,
            inv,
            from,
        }
    }

    /// Phone 101 connects and registers; the PBX calls it (`call_id`, `extra` headers) with
    /// an offer of plain RTP at its media socket, or no SDP (a delayed offer) when `offer` is
    /// false. The PBX gets 100 Trying; the phone's next message is the INVITE.
    pub async fn incoming(&self, call_id: &str, extra: &str, offer: bool) -> Incoming {
        let mut ph = self.phone().await;
        let edge_uri = register(&self.pbx, &mut ph, &format!("reg-{call_id}"), 1, 120).await;
        let media = Media::bind().await;
        let d = self.pbx_dialog(call_id, &edge_uri);
        let sdp = if offer {
            pbx_sdp(media.pbx_port())
        } else {
            String::new()
        };
        self.pbx
            .send(self.e.pbx_local, &d.invite(&edge_uri, extra, &sdp))
            .await;
        let (trying, _) = self.pbx.recv().await.expect("100 Trying");
        assert_eq!(trying.status(), Some(100));
        let inv = ph.recv().await.expect("phone gets the INVITE");
        assert!(is_method(&inv, "INVITE"), "{inv}");
        Incoming {
            ph,
            media,
            d,
            inv,
            edge_uri,
        }
    }

    pub async fn stop(self) {
        self.e.stop().await.expect("clean shutdown");
    }
}

/// A phone → PBX call up to the PBX holding the INVITE (the phone saw 100 Trying).
pub struct Call {
    pub ph: Phone,
    pub media: Media,
    /// The phone's side of the dialog ([`Dialog::confirmed_by`] the 2xx once answered).
    pub d: Dialog,
    /// The INVITE as the phone sent it.
    pub invite: String,
    /// The INVITE as the PBX received it.
    pub inv: SipMessage,
    /// Where the edge sent it from (its PBX-side SIP socket).
    pub from: SocketAddr,
}

impl Call {
    /// The PBX answers 200 with plain RTP at its media socket and the phone ACKs: the call
    /// is up on both legs. Returns the phone's 200 and the relay between the two sockets.
    pub async fn answer_and_ack(&mut self, pbx: &Pbx) -> (SipMessage, Relay) {
        let sdp = pbx_sdp(self.media.pbx_port());
        self.answer_and_ack_with(pbx, &sdp).await
    }

    /// [`Call::answer_and_ack`] with the PBX's answer `sdp`.
    pub async fn answer_and_ack_with(&mut self, pbx: &Pbx, sdp: &str) -> (SipMessage, Relay) {
        let ok = answer(pbx, &mut self.ph, &self.inv, self.from, sdp).await;
        self.d.confirmed_by(&ok);
        ack(pbx, &mut self.ph, &self.d, 1).await;
        let relay = Relay::new(
            media_addr(ok.body()),
            media_addr(self.inv.body()),
            &phone_key_line(1),
            &crypto_line(ok.body()),
        );
        (ok, relay)
    }
}

/// A PBX → phone call up to the phone holding the INVITE.
pub struct Incoming {
    pub ph: Phone,
    pub media: Media,
    /// The PBX's side of the dialog.
    pub d: Dialog,
    /// The INVITE as the phone received it.
    pub inv: SipMessage,
    /// The edge Contact the phone registered (where the PBX calls it).
    pub edge_uri: String,
}

/// The requests one side of a dialog writes: its From (with tag), the remote To (with the
/// remote tag once a response carried one), Via and Contact, and the in-dialog target.
#[derive(Clone, Debug)]
pub struct Dialog {
    pub call_id: String,
    pub from: String,
    pub to: String,
    /// The Request-URI of in-dialog requests (the remote target).
    pub target: String,
    /// `SIP/2.0/<transport> <sent-by>`.
    via: String,
    contact: String,
}

impl Dialog {
    /// Phone 101 (over TLS) calling 200 through the edge at `edge_tls`.
    pub fn phone(call_id: &str, tag: &str, edge_tls: SocketAddr) -> Self {
        Self {
            call_id: call_id.to_owned(),
            from: format!("<sip:101@sbc.test>;tag={tag}"),
            to: "<sip:200@sbc.test>".to_owned(),
            target: format!("sip:127.0.0.1:{}", edge_tls.port()),
            via: "SIP/2.0/TLS 127.0.0.1:5099".to_owned(),
            contact: "<sip:101@127.0.0.1:5099;transport=tls>".to_owned(),
        }
    }

    /// The PBX ("Reception", 200) calling phone 101 at the edge Contact `edge_uri`.
    pub fn pbx(call_id: &str, pbx: SocketAddr, edge_uri: &str) -> Self {
        Self {
            call_id: call_id.to_owned(),
            from: format!("\"Reception\" <sip:200@{pbx}>;tag=pbxtag"),
            to: format!("<sip:101@{pbx}>"),
            target: edge_uri.to_owned(),
            via: format!("SIP/2.0/UDP {pbx}"),
            contact: format!("<sip:200@{pbx}>"),
        }
    }

    /// The phone's side of a dialog the PBX placed (`self`, confirmed by the phone's answer):
    /// the phone's requests go to the edge at `edge_tls`.
    pub fn phone_side(&self, edge_tls: SocketAddr) -> Self {
        Self {
            call_id: self.call_id.clone(),
            from: self.to.clone(),
            to: self.from.clone(),
            ..Self::phone(&self.call_id, "", edge_tls)
        }
    }

    /// The PBX's side of a dialog the phone placed (`self`, confirmed): the PBX's requests
    /// go to the edge Contact `edge_contact` it was given.
    pub fn reversed(&self, pbx: SocketAddr, edge_contact: &str) -> Self {
        Self {
            call_id: self.call_id.clone(),
            from: self.to.clone(),
            to: self.from.clone(),
            ..Self::pbx(&self.call_id, pbx, edge_contact)
        }
    }

    /// The branch of the initial INVITE (a CANCEL or the ACK of a non-2xx reuse it).
    pub fn invite_branch(&self) -> String {
        format!("z9hG4bK-{}", self.call_id)
    }

    /// The To of `response` (tagged) becomes this dialog's remote side.
    pub fn confirmed_by(&mut self, response: &SipMessage) {
        self.to = response.header("To").expect("To").to_owned();
    }

    /// The initial INVITE (CSeq 1 from the phone, 10 from the PBX) to `uri`, with `extra`
    /// headers and an SDP offer (`sdp` empty: a delayed offer, no body).
    pub fn invite(&self, uri: &str, extra: &str, sdp: &str) -> String {
        let cseq = if self.via.contains("TLS") { 1 } else { 10 };
        let branch = self.invite_branch();
        let extra = format!("{extra}Contact: {}\r\n", self.contact);
        self.request_on(uri, &branch, "INVITE", cseq, &extra, sdp)
    }

    /// An in-dialog request to the remote target, its branch from method and CSeq; a
    /// non-empty `body` is SDP unless `extra` names another Content-Type.
    pub fn request(&self, method: &str, cseq: u32, extra: &str, body: &str) -> String {
        let branch = format!("z9hG4bK-{}-{method}{cseq}", self.call_id);
        self.request_on(&self.target, &branch, method, cseq, extra, body)
    }

    /// A re-INVITE (or UPDATE) carrying `sdp` and this side's Contact.
    pub fn reoffer(&self, method: &str, cseq: u32, sdp: &str) -> String {
        let extra = format!("Contact: {}\r\n", self.contact);
        self.request(method, cseq, &extra, sdp)
    }

    /// A request with an explicit Request-URI and branch (a CANCEL or the ACK of a non-2xx
    /// share the INVITE's, RFC 3261 §9.1 and §17.1.1.3).
    pub fn request_on(
        &self,
        uri: &str,
        branch: &str,
        method: &str,
        cseq: u32,
        extra: &str,
        body: &str,
    ) -> String {
        let content_type = if body.is_empty() || extra.contains("Content-Type") {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: {};branch={branch}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}{content_type}Content-Length: {}\r\n\r\n{body}",
            self.via,
            self.from,
            self.to,
            self.call_id,
            body.len()
        )
    }
}

/// The PBX's 200 to `req` with its Contact (`sip:200@127.0.0.1:5060`) and `sdp`.
pub fn pbx_200_with_sdp(req: &SipMessage, sdp: &str) -> String {
    pbx_answer(req, 200, "OK", "", sdp)
}

/// The PBX's `status` to `req` with its Contact, `extra` headers and `sdp` (empty: none).
pub fn pbx_answer(req: &SipMessage, status: u16, reason: &str, extra: &str, sdp: &str) -> String {
    let extra = format!("Contact: <sip:200@127.0.0.1:5060>\r\n{extra}");
    let r = pbx::response(req, status, reason, &extra);
    if sdp.is_empty() {
        r
    } else {
        super::offer::with_body(&r, sdp)
    }
}

/// The phone's response to the PBX's INVITE, with its To tag, Contact and `extra` headers.
pub fn phone_answer_to(inv: &SipMessage, status: u16, extra: &str) -> String {
    let to = inv.header("To").unwrap();
    phone::response(inv, status)
        .replace(&format!("To: {to}"), &format!("To: {to};tag=phonetag"))
        .replace(
            "Content-Length: 0\r\n",
            &format!(
                "Contact: <sip:101@127.0.0.1:5099;transport=tls>\r\n{extra}Content-Length: 0\r\n"
            ),
        )
}

pub fn is_method(m: &SipMessage, method: &str) -> bool {
    m.method().map(|x| x.as_str()) == Some(method)
}

pub fn is_response(m: &SipMessage, status: u16, method: &str) -> bool {
    m.status() == Some(status) && m.cseq().is_ok_and(|c| c.method.as_str() == method)
}

/// The next message on the PBX socket that `want` accepts (100 Trying, repeated 2xx and the
/// like are skipped, as are retransmissions a silent PBX ignored), bounded (50 messages,
/// 10 s each).
pub async fn pbx_recv_where(
    pbx: &Pbx,
    what: &str,
    want: impl Fn(&SipMessage) -> bool,
) -> (SipMessage, SocketAddr) {
    for _ in 0..50 {
        let (m, from) = pbx
            .recv_within(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("PBX: no {what}"));
        if want(&m) {
            return (m, from);
        }
    }
    panic!("PBX: no {what} among 50 messages");
}

/// The next message the phone receives that `want` accepts, bounded.
pub async fn phone_recv_where(
    ph: &mut Phone,
    what: &str,
    want: impl Fn(&SipMessage) -> bool,
) -> SipMessage {
    for _ in 0..20 {
        let m = ph
            .recv()
            .await
            .unwrap_or_else(|| panic!("phone: no {what}"));
        if want(&m) {
            return m;
        }
    }
    panic!("phone: no {what} among 20 messages");
}

/// Phone 101 registers (no challenge, CSeq `cseq` of `call_id`); the PBX binds the edge's
/// Contact for `expires` s; the phone gets the 200. Returns the edge Contact the PBX calls.
pub async fn register(pbx: &Pbx, ph: &mut Phone, call_id: &str, cseq: u32, expires: u32) -> String {
    ph.send(&phone::register("101", 5099, cseq, call_id, ""))
        .await;
    let (reg, from) = pbx_recv_where(pbx, "REGISTER", |m| {
        is_method(m, "REGISTER") && m.cseq().is_ok_and(|c| c.seq >= cseq)
    })
    .await;
    let edge_uri = pbx::contact_uri(&reg).expect("edge Contact");
    pbx.send(from, &pbx::register_ok(&reg, &edge_uri, expires))
        .await;
    assert_eq!(
        ph.recv().await.expect("200 to REGISTER").status(),
        Some(200)
    );
    edge_uri
}

/// The phone sends `invite` and gets 100 Trying at once; the PBX gets the INVITE. Returns
/// it and where the edge sent it from.
pub async fn dial(pbx: &Pbx, ph: &mut Phone, invite: &str) -> (SipMessage, SocketAddr) {
    ph.send(invite).await;
    let trying = ph.recv().await.expect("100 Trying at once");
    assert_eq!(trying.status(), Some(100));
    pbx.recv().await.expect("PBX gets the INVITE")
}

/// The PBX answers `inv` (from the edge at `from`) 200 with `sdp`; the phone gets the 200.
pub async fn answer(
    pbx: &Pbx,
    ph: &mut Phone,
    inv: &SipMessage,
    from: SocketAddr,
    sdp: &str,
) -> SipMessage {
    pbx.send(from, &pbx_200_with_sdp(inv, sdp)).await;
    let ok = ph.recv().await.expect("phone gets 200");
    assert_eq!(ok.status(), Some(200));
    ok
}

/// The phone ACKs the 2xx of its dialog `d` (INVITE CSeq `cseq`); the ACK reaches the PBX.
pub async fn ack(pbx: &Pbx, ph: &mut Phone, d: &Dialog, cseq: u32) -> SipMessage {
    ph.send(&d.request("ACK", cseq, "", "")).await;
    let (got, _) = pbx.recv().await.expect("PBX gets the ACK");
    assert!(is_method(&got, "ACK"), "{got}");
    got
}

/// The phone hangs up its dialog `d` (BYE with `cseq`); the next request the PBX gets is
/// that BYE (repeated responses skipped), from `edge` when given; the PBX answers 200 and
/// the phone's next message is that 200.
pub async fn phone_hangs_up(
    pbx: &Pbx,
    ph: &mut Phone,
    d: &Dialog,
    cseq: u32,
    edge: Option<SocketAddr>,
) -> SipMessage {
    ph.send(&d.request("BYE", cseq, "", "")).await;
    let (bye, from) = pbx_recv_where(pbx, "request", |m| m.status().is_none()).await;
    assert!(is_method(&bye, "BYE"), "{bye}");
    assert_eq!(bye.call_id().unwrap(), d.call_id);
    if let Some(edge) = edge {
        assert_eq!(from, edge, "the BYE comes from the edge's PBX-side socket");
    }
    pbx.send(from, &pbx::response(&bye, 200, "OK", "")).await;
    let ok = ph.recv().await.expect("the phone gets the 200");
    assert!(is_response(&ok, 200, "BYE"), "{ok}");
    assert_eq!(ok.cseq().unwrap().seq, cseq);
    bye
}

/// The PBX hangs up its dialog `d` (BYE with `cseq` to the edge at `edge_pbx`); the phone
/// gets the BYE and answers 200; the PBX gets that 200.
pub async fn pbx_hangs_up(pbx: &Pbx, ph: &mut Phone, d: &Dialog, cseq: u32, edge_pbx: SocketAddr) {
    pbx.send(edge_pbx, &d.request("BYE", cseq, "", "")).await;
    let bye = phone_recv_where(ph, "BYE", |m| is_method(m, "BYE")).await;
    assert_eq!(bye.call_id().unwrap(), d.call_id);
    ph.send(&phone::response(&bye, 200)).await;
    pbx_recv_where(pbx, "200 to the BYE", |m| is_response(m, 200, "BYE")).await;
}

/// The admin port's `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    http::get(admin, "/metrics").await.1
}

/// Polls `/metrics` (bounded: 100 × 100 ms) until `done` holds for `name`; the last text.
pub async fn wait_metric(admin: SocketAddr, name: &str, done: impl Fn(f64) -> bool) -> String {
    let mut m = String::new();
    for _ in 0..100 {
        m = metrics(admin).await;
        if done(http::metric(&m, name)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    m
}

/// Polls (bounded) until no call and no media stream is active; the last `/metrics` text.
pub async fn wait_idle(admin: SocketAddr) -> String {
    let mut m = String::new();
    for _ in 0..50 {
        m = metrics(admin).await;
        if http::metric(&m, "pbx_edge_calls_active") == 0.0
            && http::metric(&m, "pbx_edge_media_active_streams") == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    m
}

/// Each metric of `expected` (name with labels as written) has its value in `/metrics` text
/// `m`.
pub fn assert_metrics(m: &str, expected: &[(&str, f64)]) {
    for (name, value) in expected {
        assert_eq!(http::metric(m, name), *value, "{name}: {m}");
    }
}

/// No call and no media stream is left (bounded wait); the last `/metrics` text.
pub async fn assert_no_calls(admin: SocketAddr) -> String {
    let m = wait_idle(admin).await;
    assert_metrics(
        &m,
        &[
            ("pbx_edge_calls_active", 0.0),
            ("pbx_edge_media_active_streams", 0.0),
        ],
    );
    m
}

/// Calls, streams and port pairs are all back to 0 (bounded wait).
pub async fn assert_idle(admin: SocketAddr) -> String {
    let m = assert_no_calls(admin).await;
    assert_metrics(&m, &[("pbx_edge_media_port_pairs_in_use", 0.0)]);
    m
}
