//! The SIP core: one task that owns every transaction, dialog, the binding table and the
//! timers (no locks). Phone connections and the PBX socket hand it messages over channels; it
//! answers, forwards and retransmits through the RFC 3261 §17 state machines in
//! `transaction::fsm`, rewrites SDP through `sdp` and drives the media relay.
//!
//! This file owns [`SipCore`] itself: its settings, the run loop, the edge's addresses (Vias,
//! Contacts, flow tokens) and the one place each side's messages are sent and each
//! [`Refusal`] is answered and counted. The rest is split by the state it acts on:
//! - `transactions`: the transaction table and its timers; returns `TxnEvent`s that
//!   `SipCore::drive` carries out (it never calls back into the core);
//! - `dialog`: calls (`Dialog`), how they end (`CallEnd`), ACK, CANCEL and BYE;
//! - `exchange`: the offer/answer exchange and the device's call and port limits;
//! - `phone`, `pbx`: requests from each side; `responses`: relaying responses;
//! - `views`: the admin API's views.
//!
//! Every relayed request is a transaction with one state machine per leg: the server
//! transaction on the side it came from, the client transaction on the side it goes to.
//! Responses travel back through them, so retransmissions on the UDP leg are absorbed or
//! repeated per §17, and the reliable TLS leg runs no retransmission timers.

use super::legs::{edge_contact_uri, forward_request, host_of};
use super::metrics::CoreMetrics;
use super::refusal::{Counter, Refusal};
use super::registrar::Registrar;
use super::subscriptions::{self, Subscriptions};
use crate::call_log::CallLog;
use crate::config::IdentityHeaders;
use crate::identity::IdentitySnapshot;
use crate::media::{MediaControl, MediaEvent};
use crate::sdp::{EdgeAddresses, Side, SrtpPolicy};
use crate::sip::flow_token::{FlowToken, FlowTokenKey};
use crate::sip::message::{MessageError, Method, SipMessage};
use crate::sip::response::response_to;
use crate::sip::uri::{NameAddr, Params, SipUri, UriScheme, Via};
use crate::transaction::fsm::TimerConfig;
use crate::transaction::key::new_branch;
use crate::transport::connection::PhoneEvent;
use crate::transport::flow::{FlowId, FlowTable};
use crate::transport::pbx::PbxLink;
use crate::transport::rate::{BudgetKey, RateBudget, RequestRateLimiter};
use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod dialog;
mod exchange;
mod pbx;
mod phone;
mod responses;
mod transactions;
mod views;

use dialog::Dialog;
use transactions::{Transactions, TxnEvent};
pub use views::{CallView, CoreViews, InFlight, RegistrationView, ViewRequests, VIEW_TIMEOUT};

/// Relay ports one relayed m-line holds: RTP and RTCP toward the phone and toward the PBX.
pub const PORTS_PER_STREAM: usize = 4;
/// Contacts one request may carry (each becomes a binding).
pub const MAX_CONTACTS: usize = 16;

/// Addresses, names and policies the core writes into messages.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub timers: TimerConfig,
    /// Our host toward phones (Via sent-by, Contact, Warning agent).
    pub domain: String,
    /// Our SIP address toward the PBX (Via, edge Contacts).
    pub pbx_local: SocketAddr,
    /// Our TLS listener (Contact toward phones; recognising Routes that name the edge).
    pub tls_local: SocketAddr,
    /// Addresses written into SDP.
    pub sdp: EdgeAddresses,
    /// The phones' SRTP policy.
    pub srtp: SrtpPolicy,
    /// `media.accept_unannounced_unencrypted_srtcp`.
    pub accept_unannounced_unencrypted_srtcp: bool,
    /// `sip.phone_requests_per_second` / `sip.phone_request_burst`.
    pub phone_request_budget: RateBudget,
    /// `sip.max_calls_per_device`: calls one device (MAC; one connection for shared and
    /// anonymous identities) may have at once, both directions. A desk phone has a handful
    /// of lines; a hostile one must not lease the whole media port range.
    pub max_calls_per_device: usize,
    /// `media.max_ports_per_device`: relay ports one device may hold over all its calls.
    pub max_ports_per_device: usize,
    /// `sip.identity_headers`.
    pub identity_headers: IdentityHeaders,
    /// Seconds between the keep-alives the edge asks an RFC 5626 phone for (`Flow-Timer` in
    /// the 2xx to its REGISTER, §5.4): inside `sip.idle_timeout_secs`, so a quiet phone that
    /// keeps its flow alive is never closed as idle.
    pub flow_timer_secs: u64,
}

/// The `Flow-Timer` the edge gives phones for a connection idle timeout of `idle_secs`: half
/// of it, at most 120 s (RFC 5626 §4.4.1's default TCP keep-alive is 95–120 s; asking for
/// more would let NAT bindings lapse) and at least 1 s.
pub fn flow_timer_secs(idle_secs: u64) -> u64 {
    (idle_secs / 2).clamp(1, 120)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Leg {
    Pbx,
    Phone,
}

impl Leg {
    fn other(self) -> Leg {
        match self {
            Leg::Pbx => Leg::Phone,
            Leg::Phone => Leg::Pbx,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Leg::Pbx => "pbx",
            Leg::Phone => "phone",
        }
    }
    fn side(self) -> Side {
        match self {
            Leg::Pbx => Side::Pbx,
            Leg::Phone => Side::Phone,
        }
    }
}

pub struct SipCore {
    settings: CoreSettings,
    flows: Arc<FlowTable>,
    identity: watch::Receiver<Arc<IdentitySnapshot>>,
    pbx: PbxLink,
    media: MediaControl,
    registrar: Registrar,
    rate_limiter: RequestRateLimiter,
    /// Dialogs the edge hung up after refusing their 2xx, by (Call-ID, To): their 2xx
    /// retransmissions are ACKed again but not BYEd again. Kept for the 2xx retransmission
    /// window (64·T1).
    hung_up: HashMap<(String, String), Instant>,
    /// The transaction layer: every relayed transaction and its timers.
    txns: Transactions,
    dialogs: HashMap<String, Dialog>,
    /// Subscription dialogs (SUBSCRIBE/REFER/NOTIFY), for authorizing in-dialog requests.
    subscriptions: Subscriptions,
    rng: SystemRandom,
    token_key: FlowTokenKey,
    metrics: CoreMetrics,
    /// `[call_log]`: one line per ended call (off by default).
    call_log: CallLog,
}

impl SipCore {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: CoreSettings,
        flows: Arc<FlowTable>,
        identity: watch::Receiver<Arc<IdentitySnapshot>>,
        pbx: PbxLink,
        media: MediaControl,
        metrics: CoreMetrics,
    ) -> Result<Self, ring::error::Unspecified> {
        let rng = SystemRandom::new();
        let mut key = [0u8; 32];
        rng.fill(&mut key)?;
        Ok(Self {
            txns: Transactions::new(
                settings.timers,
                pbx.is_reliable(),
                metrics.transactions.clone(),
            ),
            rate_limiter: RequestRateLimiter::new(settings.phone_request_budget),
            hung_up: HashMap::new(),
            settings,
            flows,
            identity,
            pbx,
            media,
            registrar: Registrar::new(),
            dialogs: HashMap::new(),
            subscriptions: Subscriptions::new(),
            rng,
            token_key: FlowTokenKey::new(key),
            metrics,
            call_log: CallLog::default(),
        })
    }

    /// Writes one line per ended call to `call_log`.
    pub fn with_call_log(mut self, call_log: CallLog) -> Self {
        self.call_log = call_log;
        self
    }

    /// Runs until `cancel`, or until the inbound channels are closed.
    pub async fn run(
        mut self,
        mut phone_rx: mpsc::Receiver<PhoneEvent>,
        mut pbx_rx: mpsc::Receiver<SipMessage>,
        mut media_rx: mpsc::Receiver<MediaEvent>,
        mut views: ViewRequests,
        cancel: CancellationToken,
    ) {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                ev = phone_rx.recv() => match ev {
                    Some(ev) => self.on_phone_event(ev).await,
                    None => break,
                },
                m = pbx_rx.recv() => match m {
                    Some(m) => self.on_pbx_message(m).await,
                    None => break,
                },
                Some(ev) = media_rx.recv() => self.on_media_event(ev).await,
                Some(request) = views.requests.recv() => self.answer_view(request).await,
                (id, leg, timer) = std::future::poll_fn(|cx| self.txns.poll_expired(cx)) => {
                    let events = self.txns.on_timer(id, leg, timer);
                    self.drive(events).await;
                }
                _ = sweep.tick() => self.sweep(),
            }
        }
        // Shutdown: release every call's media.
        for (_, mut d) in self.dialogs.drain() {
            d.media.stop().await;
        }
    }

    fn random_hex(&self, n: usize) -> String {
        let mut r = vec![0u8; n];
        if self.rng.fill(&mut r).is_err() {
            tracing::error!("OS random generator failed");
        }
        r.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn branch(&self) -> String {
        let mut r = [0u8; 16];
        if self.rng.fill(&mut r).is_err() {
            tracing::error!("OS random generator failed");
        }
        new_branch(&r)
    }

    fn snapshot(&self) -> Arc<IdentitySnapshot> {
        self.identity.borrow().clone()
    }

    /// Keeps the gauges exact after a change; the admin views are built on request
    /// ([`CoreViews`]).
    fn publish(&self) {
        self.metrics
            .registrations
            .set(self.registrar.registered_count() as i64);
        self.publish_calls();
    }

    /// [`Self::publish`] for call events, which leave registrations as they are (counting
    /// them walks every binding).
    fn publish_calls(&self) {
        self.metrics.calls_active.set(self.dialogs.len() as i64);
    }

    fn sweep(&mut self) {
        let tokio_now = Instant::now();
        self.hung_up.retain(|_, until| *until > tokio_now);
        let now = tokio_now.into_std();
        self.registrar.sweep(now);
        self.rate_limiter.sweep(now);
        self.subscriptions.sweep(now);
        self.publish();
    }

    // ---------------------------------------------------------------- sending

    fn send_phone(&self, flow: FlowId, msg: &SipMessage) -> bool {
        if let Some(code) = msg.status() {
            self.metrics
                .responses
                .with_label_values(&["phone", &code.to_string()])
                .inc();
        }
        match self.flows.send(flow, Bytes::from(msg.to_bytes())) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(%flow, error = %e, "message to a phone not queued");
                false
            }
        }
    }

    async fn send_pbx(&self, msg: &SipMessage) -> bool {
        if let Some(code) = msg.status() {
            self.metrics
                .responses
                .with_label_values(&["pbx", &code.to_string()])
                .inc();
        }
        match self.pbx.send(&msg.to_bytes()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "sending to the PBX failed");
                false
            }
        }
    }

    /// Sends `msg` on `leg` (toward the phone: on `flow`); false when it was not sent.
    async fn send_on(&self, leg: Leg, flow: FlowId, msg: &SipMessage) -> bool {
        match leg {
            Leg::Pbx => self.send_pbx(msg).await,
            Leg::Phone => self.send_phone(flow, msg),
        }
    }

    fn response(&self, req: &SipMessage, status: u16, warning: Option<&str>) -> Option<SipMessage> {
        let tag = self.random_hex(8);
        response_to(
            req,
            status,
            Some(&tag),
            warning.map(|w| (self.settings.domain.as_str(), w)),
        )
        .ok()
    }

    /// The response answering `req` with `r`: its status, its Warning if it has one, its
    /// Retry-After.
    fn refusal_response(&self, req: &SipMessage, r: &Refusal) -> Option<SipMessage> {
        let mut resp = self.response(req, r.status, r.warning())?;
        if let Some(secs) = r.retry_after {
            resp.set_header("Retry-After", &secs.to_string());
        }
        Some(resp)
    }

    /// Counts a refusal of a message from `side` in its counter.
    fn count_refusal(&self, side: Leg, r: &Refusal) {
        match r.counter {
            Counter::Malformed => self
                .metrics
                .malformed
                .with_label_values(&[side.label(), r.label]),
            Counter::Denied => self.metrics.denied.with_label_values(&[r.label]),
            Counter::Dropped => self
                .metrics
                .dropped
                .with_label_values(&[side.label(), r.label]),
            Counter::Response => return,
        }
        .inc();
    }

    /// Answers a phone request with `r` outside any transaction (before one exists), within
    /// the device's budget ([`Self::send_reply_phone`]).
    fn reply_phone(&mut self, flow: FlowId, req: &SipMessage, r: &Refusal) {
        if let Some(resp) = self.refusal_response(req, r) {
            self.send_reply_phone(flow, &resp);
        }
    }

    /// Sends a response the edge composed itself for a phone (not one relayed from the PBX)
    /// if the device's request budget can pay for it: a device flooding junk must not get
    /// one response per junk message (transport::rate). Responses on a transaction's behalf
    /// (408/480/503 when the PBX fails) are not charged: their request was paid for, and the
    /// failure is not the device's.
    fn send_reply_phone(&mut self, flow: FlowId, r: &SipMessage) {
        let Some(identity) = self.flows.get(flow).map(|f| f.identity) else {
            return;
        };
        if self.charge_reply(BudgetKey::of(&identity, flow)) {
            self.send_phone(flow, r);
        }
    }

    /// Charges an edge-composed response to `key`; false (dropped, counted) over budget.
    fn charge_reply(&mut self, key: BudgetKey) -> bool {
        if self
            .rate_limiter
            .charge_reply(key, Instant::now().into_std())
        {
            return true;
        }
        self.metrics
            .dropped
            .with_label_values(&["phone", "reply_over_budget"])
            .inc();
        false
    }

    /// Applies a refusal of a PBX request: counted, logged at debug, answered (an ACK never
    /// is, RFC 3261 §17.1.1.3).
    async fn refuse_pbx(&self, req: &SipMessage, r: &Refusal) {
        self.count_refusal(Leg::Pbx, r);
        if req.method() == Some(Method::Ack) {
            return;
        }
        tracing::debug!(status = r.status, reason = r.label, warning = %r.warning, "PBX request refused");
        if let Some(resp) = self.refusal_response(req, r) {
            self.send_pbx(&resp).await;
        }
    }

    /// `req` (a copy of a request from the other leg) made ready for `to`: the edge's Via on
    /// top, Max-Forwards decremented, Routes naming the edge removed (`legs::forward_request`).
    fn forward_to(&self, to: Leg, req: &mut SipMessage) -> Result<(), Refusal> {
        let names_edge = |u: &SipUri| self.names_edge(u);
        forward_request(req, &self.via(to), names_edge).map_err(|e| match e {
            MessageError::TooManyHops => Refusal::answer(483, "too_many_hops", ""),
            e => Refusal::answer(400, "cannot_forward", format!("cannot forward: {e}")),
        })
    }

    fn names_edge(&self, uri: &SipUri) -> bool {
        let host = uri.host.trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case(&self.settings.domain) {
            return true;
        }
        let port_matches = |p: u16| uri.port.is_none_or(|u| u == p);
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                ((ip == self.settings.tls_local.ip() || ip == self.settings.sdp.phone_advertised)
                    && port_matches(self.settings.tls_local.port()))
                    || (ip == self.settings.pbx_local.ip()
                        && port_matches(self.settings.pbx_local.port()))
            }
            Err(_) => false,
        }
    }

    fn pbx_via(&self) -> Via {
        Via::new(
            self.pbx.transport_token().0,
            &host_of(self.settings.pbx_local.ip()),
            Some(self.settings.pbx_local.port()),
            &self.branch(),
            true,
        )
    }

    fn phone_via(&self) -> Via {
        Via::new("TLS", &self.settings.domain, None, &self.branch(), false)
    }

    /// A fresh Via (new branch) for a request the edge sends on `leg`.
    fn via(&self, leg: Leg) -> Via {
        match leg {
            Leg::Pbx => self.pbx_via(),
            Leg::Phone => self.phone_via(),
        }
    }

    /// The edge Contact toward the PBX: a flow token naming the phone's flow and Contact.
    fn edge_contact(&self, flow: FlowId, binding: u64) -> SipUri {
        let token = FlowToken {
            flow: flow.0,
            binding,
        }
        .encode(&self.token_key);
        edge_contact_uri(
            &token,
            &host_of(self.settings.pbx_local.ip()),
            self.settings.pbx_local.port(),
            self.pbx.transport_token().1,
        )
    }

    /// The edge Contact toward phones (in-dialog requests come back to the edge, which
    /// restores the PBX's target from the dialog).
    fn phone_side_contact(&self) -> NameAddr {
        let mut params = Params::default();
        params.set("transport", Some("tls"));
        // An address, not `sip.domain`: phones that cannot resolve the edge's name must
        // still reach it with in-dialog requests (ACK, BYE).
        NameAddr::from_uri(SipUri {
            scheme: UriScheme::Sip,
            user_info: None,
            host: host_of(self.settings.sdp.phone_advertised),
            port: Some(self.settings.tls_local.port()),
            params,
            headers: None,
        })
    }

    // ---------------------------------------------------------------- phone side

    /// Records the subscription dialog a 2xx to SUBSCRIBE/REFER or a NOTIFY (RFC 6665 §4.1)
    /// sets up or refreshes for the phone on `flow`.
    fn learn_subscription(&mut self, msg: &SipMessage, flow: FlowId) {
        let (Ok(call_id), Ok(Some(a)), Ok(Some(b))) = (msg.call_id(), msg.from_tag(), msg.to_tag())
        else {
            return;
        };
        let Some(identity) = self.flows.get(flow).map(|f| f.identity.to_string()) else {
            return;
        };
        let lifetime = subscriptions::lifetime(
            msg.header("Subscription-State"),
            msg.expires().ok().flatten(),
            self.settings.timers.timeout(),
        );
        let now = Instant::now().into_std();
        if !self
            .subscriptions
            .learn(call_id, (&a, &b), flow, &identity, now, lifetime)
        {
            tracing::info!(%flow, %identity, "subscription dialog not recorded: the connection holds {} already", subscriptions::MAX_SUBSCRIPTIONS_PER_FLOW);
        }
    }

    fn session_id(&self) -> u64 {
        let mut b = [0u8; 8];
        let _ = self.rng.fill(&mut b);
        u64::from_be_bytes(b) >> 2
    }

    // ---------------------------------------------------------------- PBX side

    // ---------------------------------------------------------------- ACK, CANCEL, BYE

    // ---------------------------------------------------------------- transactions

    /// A request the edge itself sends (CANCEL, BYE): a client transaction on `leg` whose
    /// responses end there.
    async fn start_edge_request(&mut self, leg: Leg, req: SipMessage, flow: FlowId) {
        let events = self.txns.start_edge_request(leg, req, flow);
        self.drive(events).await;
    }

    /// Carries out what the transaction layer asks for. Boxed: relaying a response answers
    /// the other leg, whose events are driven in turn, before the next event (the order the
    /// state machines asked for).
    fn drive(
        &mut self,
        events: Vec<TxnEvent>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            for event in events {
                match event {
                    TxnEvent::Send { id, leg, msg } => {
                        let sent = match leg {
                            Leg::Pbx => self.send_pbx(&msg).await,
                            Leg::Phone => match self.txns.get(id) {
                                Some(t) => self.send_phone(t.flow, &msg),
                                None => false,
                            },
                        };
                        if !sent {
                            let more = self.txns.transport_error(id, leg);
                            self.drive(more).await;
                        }
                    }
                    TxnEvent::Repeat2xx(msg) => {
                        self.send_pbx(&msg).await;
                    }
                    TxnEvent::Response { id, leg, msg } => self.relay_response(id, leg, msg).await,
                    TxnEvent::Terminated { id, leg, why } => self.terminated(id, leg, why).await,
                }
            }
        })
    }
}

/// The headers every request must carry, parsed (RFC 3261 §8.1.1): Via, From, To, Call-ID, a
/// CSeq whose method is the request's, and a Request-URI. A request failing this is answered
/// 400, never forwarded.
pub(super) fn check_request(m: &SipMessage) -> Result<(), MessageError> {
    m.top_via()?;
    m.from()?;
    m.to()?;
    m.call_id()?;
    let cseq = m.cseq()?;
    if Some(cseq.method) != m.method() {
        return Err(MessageError::BadHeader("CSeq"));
    }
    m.request_uri()?;
    Ok(())
}

/// The same for responses; a failing response is dropped (never answered, §8.1.3.3).
pub(super) fn check_response(m: &SipMessage) -> Result<(), MessageError> {
    m.top_via()?;
    m.from()?;
    m.to()?;
    m.call_id()?;
    m.cseq()?;
    Ok(())
}
