//! The SIP core: one task that owns every transaction, dialog, the binding table and the
//! timers (no locks). Phone connections and the PBX socket hand it messages over channels; it
//! answers, forwards and retransmits through the RFC 3261 §17 state machines in
//! `transaction::fsm`, rewrites SDP through `sdp` and drives the media relay.
//!
//! Every relayed request is a [`Txn`] with one state machine per leg: the server transaction
//! on the side it came from, the client transaction on the side it goes to. Responses travel
//! back through them, so retransmissions on the UDP leg are absorbed or repeated per §17,
//! and the reliable TLS leg runs no retransmission timers.

use super::authorize::{self as authz, Allowed, PhoneRequest, Verdict};
use super::legs::{edge_contact_uri, forward_request, host_of, restore_vias};
use super::metrics::CoreMetrics;
use super::offer_answer::{is_reliable_provisional, Carrier};
use super::refusal::{Counter, Refusal};
use super::registrar::{Registrar, MAX_REGISTER_BINDINGS_PER_FLOW};
use super::subscriptions::{self, Subscriptions};
use crate::config::IdentityHeaders;
use crate::identity::IdentitySnapshot;
use crate::media::{MediaControl, MediaEvent};
use crate::sdp::{
    analyse_pbx_offer, analyse_phone_offer, rewrite_pbx_answer, rewrite_pbx_offer,
    rewrite_phone_answer, rewrite_phone_offer, EdgeAddresses, KeySource, RewriteContext,
    RewriteError, Security, Side, SrtpPolicy,
};
use crate::sip::flow_token::{FlowToken, FlowTokenKey};
use crate::sip::message::{ContactList, MessageError, Method, SipMessage};
use crate::sip::response::{cancel_for, response_to};
use crate::sip::uri::{NameAddr, Params, SipUri, UriScheme, Via};
use crate::transaction::fsm::{Termination, TimerConfig};
use crate::transaction::key::{new_branch, TransactionKey};
use crate::transport::connection::{PhoneEvent, PhoneMessage};
use crate::transport::flow::{FlowId, FlowTable};
use crate::transport::pbx::PbxLink;
use crate::transport::rate::{Admission, BudgetKey, RateBudget, RequestRateLimiter};
use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod dialog;
mod exchange;
mod transactions;

use dialog::{CallEnd, Dialog, KnownDialogView, NewCall};
use transactions::{RegisterCtx, Transactions, TxnEvent, TxnId};

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
}

/// A registration as shown on the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegistrationView {
    pub aor: String,
    pub identity: String,
    pub contact: String,
    pub flow: u64,
    pub expires_in_secs: u64,
}

/// A call as shown on the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallView {
    pub call_id: String,
    /// `phone_to_pbx` or `pbx_to_phone`.
    pub direction: &'static str,
    pub identity: String,
    pub flow: u64,
    pub established: bool,
    pub age_secs: u64,
    pub srtp_suite: Option<String>,
    pub streams: usize,
    pub packets_phone_to_pbx: u64,
    pub packets_pbx_to_phone: u64,
    /// Codecs of the answered session (`a=rtpmap` names, e.g. `PCMU/8000`).
    pub codecs: Vec<String>,
    /// The phone leg: its own Contact (remote target).
    pub phone_contact: Option<String>,
    /// The PBX leg: the PBX's Contact (remote target).
    pub pbx_contact: Option<String>,
}

/// Asks the core task for the admin API's views. They are built only when asked: rebuilding
/// them on every call event cost O(calls in progress) per event — 29 % of the edge's CPU with
/// ~225 calls in progress and 75 % with 1 000 (BENCHMARKS.md, signalling load). Answered
/// between two events, so a view reflects every event the core handled before the request.
#[derive(Debug, Clone)]
pub struct CoreViews {
    requests: mpsc::Sender<ViewRequest>,
}

/// The core task's end of [`CoreViews`].
#[derive(Debug)]
pub struct ViewRequests {
    requests: mpsc::Receiver<ViewRequest>,
}

#[derive(Debug)]
enum ViewRequest {
    Registrations(oneshot::Sender<Vec<RegistrationView>>),
    Calls(oneshot::Sender<Vec<CallView>>),
    InFlight(oneshot::Sender<InFlight>),
    EndCalls(oneshot::Sender<usize>),
}

/// The work a graceful shutdown waits for ([`CoreViews::in_flight`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InFlight {
    /// Transactions whose request has no final response yet, on either leg. Transactions
    /// that only absorb retransmissions (RFC 3261 Timers D/I/J/K, RFC 6026 Timers L/M) are
    /// not counted: nothing is lost when they stop.
    pub transactions: usize,
    /// Calls in progress (early or established dialogs).
    pub calls: usize,
}

impl InFlight {
    /// Nothing a phone or the PBX is waiting for.
    pub fn is_idle(&self) -> bool {
        self.transactions == 0 && self.calls == 0
    }
}

impl CoreViews {
    /// A handle for the admin side and the receiver for [`SipCore::run`].
    pub fn channel() -> (CoreViews, ViewRequests) {
        // A few admin requests at once; more wait for room (the admin port is not hot).
        let (tx, rx) = mpsc::channel(8);
        (CoreViews { requests: tx }, ViewRequests { requests: rx })
    }

    /// Registrations, or `None` when the core does not answer (stopped, or busier than
    /// [`VIEW_TIMEOUT`]).
    pub async fn registrations(&self) -> Option<Vec<RegistrationView>> {
        self.ask(ViewRequest::Registrations).await
    }

    /// Calls in progress, or `None` as for [`CoreViews::registrations`].
    pub async fn calls(&self) -> Option<Vec<CallView>> {
        self.ask(ViewRequest::Calls).await
    }

    /// What a graceful shutdown still waits for, or `None` as for
    /// [`CoreViews::registrations`].
    pub async fn in_flight(&self) -> Option<InFlight> {
        self.ask(ViewRequest::InFlight).await
    }

    /// Ends every call in progress with a BYE on both legs (the shutdown drain ran out of
    /// time); the number of calls ended, or `None` as for [`CoreViews::registrations`].
    pub async fn end_calls(&self) -> Option<usize> {
        self.ask(ViewRequest::EndCalls).await
    }

    /// The core task has stopped (it answers nothing any more).
    pub fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }

    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> ViewRequest) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.requests.send(request(tx)).await.ok()?;
            rx.await.ok()
        };
        tokio::time::timeout(VIEW_TIMEOUT, asked)
            .await
            .ok()
            .flatten()
    }
}

/// Longest wait for the core to build an admin view.
pub const VIEW_TIMEOUT: Duration = Duration::from_secs(2);

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

struct OsKeys<'a>(&'a SystemRandom);

impl KeySource for OsKeys<'_> {
    fn fill(&mut self, out: &mut [u8]) {
        // The OS CSPRNG does not fail once initialised; refuse to continue with a weak key
        // if it ever did.
        if self.0.fill(out).is_err() {
            tracing::error!("OS random generator failed while generating SRTP keys");
            std::process::abort();
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
        })
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

    async fn answer_view(&mut self, request: ViewRequest) {
        // The asker may have given up (timeout): nothing to do then.
        match request {
            ViewRequest::Registrations(tx) => {
                let _ = tx.send(self.registration_views());
            }
            ViewRequest::Calls(tx) => {
                let _ = tx.send(self.call_views());
            }
            ViewRequest::InFlight(tx) => {
                let _ = tx.send(self.in_flight());
            }
            ViewRequest::EndCalls(tx) => {
                let calls: Vec<String> = self.dialogs.keys().cloned().collect();
                for call_id in &calls {
                    self.hang_up(call_id, CallEnd::Drain).await;
                }
                let _ = tx.send(calls.len());
            }
        }
    }

    /// O(transactions): asked every 50 ms during a shutdown only.
    fn in_flight(&self) -> InFlight {
        let transactions = self.txns.in_flight();
        InFlight {
            transactions,
            calls: self.dialogs.len(),
        }
    }

    fn registration_views(&self) -> Vec<RegistrationView> {
        let now_std = Instant::now().into_std();
        self.registrar
            .registrations()
            .map(|b| RegistrationView {
                aor: b.aor.clone(),
                identity: b.identity.clone(),
                contact: b.contact.to_string(),
                flow: b.flow.0,
                expires_in_secs: b
                    .expires_at
                    .map(|t| t.saturating_duration_since(now_std).as_secs())
                    .unwrap_or(0),
            })
            .collect()
    }

    fn call_views(&self) -> Vec<CallView> {
        let now = Instant::now();
        self.dialogs
            .iter()
            .map(|(id, d)| {
                let (up, down) = d.media.counters();
                let suite = d.plan.as_ref().and_then(|p| {
                    p.relayed().find_map(|(_, r)| match &r.security {
                        Security::Srtp(k) => {
                            k.phone.as_ref().map(|c| c.suite.sdes_name().to_owned())
                        }
                        Security::Plain => None,
                    })
                });
                CallView {
                    call_id: id.clone(),
                    direction: if d.from_phone {
                        "phone_to_pbx"
                    } else {
                        "pbx_to_phone"
                    },
                    identity: d.identity.clone(),
                    flow: d.flow.0,
                    established: d.established,
                    age_secs: now.saturating_duration_since(d.created).as_secs(),
                    srtp_suite: suite,
                    streams: d.media.stream_ids().len(),
                    packets_phone_to_pbx: up,
                    packets_pbx_to_phone: down,
                    codecs: d.codecs.clone(),
                    phone_contact: d.phone_contact.as_ref().map(ToString::to_string),
                    pbx_contact: d.pbx_contact.as_ref().map(ToString::to_string),
                }
            })
            .collect()
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

    /// Answers a phone request outside any transaction (before one exists), within the
    /// device's budget ([`Self::send_reply_phone`]).
    fn reply_phone(&mut self, flow: FlowId, req: &SipMessage, status: u16, warning: Option<&str>) {
        if let Some(r) = self.response(req, status, warning) {
            self.send_reply_phone(flow, &r);
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

    async fn reply_pbx(&self, req: &SipMessage, status: u16, warning: Option<&str>) {
        if let Some(r) = self.response(req, status, warning) {
            self.send_pbx(&r).await;
        }
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

    async fn on_phone_event(&mut self, ev: PhoneEvent) {
        match ev {
            PhoneEvent::Opened(_) => {}
            PhoneEvent::Closed(flow) => self.on_flow_closed(flow).await,
            PhoneEvent::Unparseable {
                flow,
                identity,
                response,
            } => {
                let key = BudgetKey::of(&identity, flow);
                if self.charge_reply(key) {
                    self.metrics
                        .responses
                        .with_label_values(&["phone", "400"])
                        .inc();
                    if let Err(e) = self.flows.send(flow, response) {
                        tracing::debug!(%flow, error = %e, "400 to a phone not queued");
                    }
                }
            }
            PhoneEvent::Message(m) => {
                if m.message.is_request() {
                    self.on_phone_request(m).await
                } else {
                    self.on_response(Leg::Phone, m.message).await
                }
            }
        }
    }

    async fn on_flow_closed(&mut self, flow: FlowId) {
        self.registrar.remove_flow(flow);
        self.rate_limiter.forget_flow(flow);
        // Requests waiting for this phone: it will never answer.
        for id in self.txns.waiting_on_phone(flow) {
            self.answer_origin(id, 480, Some("the phone's connection closed"))
                .await;
        }
        // Calls on this flow end: BYE to the PBX for established ones (DESIGN.md).
        let calls: Vec<String> = self
            .dialogs
            .iter()
            .filter(|(_, d)| d.flow == flow)
            .map(|(c, _)| c.clone())
            .collect();
        for call_id in calls {
            self.hang_up(&call_id, CallEnd::ConnectionLost).await;
        }
        self.publish();
    }

    async fn on_phone_request(&mut self, m: PhoneMessage) {
        let method = m.message.method();
        self.metrics
            .requests
            .with_label_values(&["phone", method.map(|m| m.as_str()).unwrap_or("other")])
            .inc();
        if let Err(e) = check_request(&m.message) {
            self.metrics
                .malformed
                .with_label_values(&["phone", e.label()])
                .inc();
            if method != Some(Method::Ack) {
                self.reply_phone(
                    m.flow,
                    &m.message,
                    400,
                    Some(&format!("malformed request: {e}")),
                );
            }
            return;
        }
        // Two From (or To, Call-ID, CSeq...) headers: which one counts would be the reader's
        // accident (`authorize::repeated_header`). Before transaction matching, so no copy of
        // such a message goes anywhere.
        if let Err(r) = authz::repeated_header(&m.message) {
            self.refuse_phone(&m, method, &r);
            return;
        }
        let Some(method) = method else {
            self.reply_phone(
                m.flow,
                &m.message,
                501,
                Some("method not supported by the edge"),
            );
            return;
        };
        if let Ok(key) = TransactionKey::server(&m.message) {
            if let Some(id) = self.txns.matching(Leg::Phone, &key) {
                // A retransmission, or the ACK of a non-2xx final response (§17.2.1).
                let events = self.txns.on_request(id, Leg::Phone, m.message);
                self.drive(events).await;
                return;
            }
            if method == Method::Cancel {
                self.on_cancel(Leg::Phone, key, m.message, m.flow).await;
                return;
            }
        }
        // Only new transactions draw from the budget: retransmissions, CANCEL and ACK were
        // handled above or cost nothing, and a BYE of a live call is free too — refusing it
        // would keep the call and its media ports up. Refusals below are charged.
        let ends_a_call = method == Method::Bye
            && m.message
                .call_id()
                .is_ok_and(|c| self.dialogs.contains_key(c));
        if method != Method::Ack && !ends_a_call && !self.within_budget(&m) {
            return;
        }
        // Every phone request passes the one authorization (`authorize.rs`); the core only
        // applies its verdict.
        let allowed = match self.verdict(&m, method) {
            Verdict::Allow(a) => a,
            Verdict::Refuse(r) => {
                self.refuse_phone(&m, Some(method), &r);
                return;
            }
        };
        if method == Method::Ack {
            let mut ack = m.message;
            self.rewrite_identity(&mut ack, &allowed);
            self.forward_2xx_ack(Leg::Phone, ack).await;
            return;
        }
        self.forward_from_phone(m, method, allowed).await;
    }

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

    /// The authorization verdict for a phone request against the current inventory and the
    /// dialogs the edge relays.
    fn verdict(&self, m: &PhoneMessage, method: Method) -> Verdict {
        let snapshot = self.snapshot();
        let request = PhoneRequest {
            message: &m.message,
            method,
            identity: &m.identity,
            peer: m.peer.ip(),
            flow: m.flow,
        };
        let known = KnownDialogView {
            calls: &self.dialogs,
            subscriptions: &self.subscriptions,
            now: Instant::now().into_std(),
        };
        authz::authorize(&request, snapshot.inventory(), &known)
    }

    /// Applies a refusal of a phone request: counted, logged, answered (an ACK never is,
    /// RFC 3261 §17.1.1.3) within the device's budget like every response the edge composes
    /// ([`Self::send_reply_phone`]).
    fn refuse_phone(&mut self, m: &PhoneMessage, method: Option<Method>, r: &Refusal) {
        match r.counter {
            Counter::Malformed => self
                .metrics
                .malformed
                .with_label_values(&["phone", r.label]),
            Counter::Denied => self.metrics.denied.with_label_values(&[r.label]),
            Counter::Dropped => self.metrics.dropped.with_label_values(&["phone", r.label]),
        }
        .inc();
        // Malformed requests (the repeated-header check runs before the budget) and ACKs
        // (never budgeted) are logged at debug: a flood of them must not become a log flood.
        // They are counted all the same.
        if r.counter == Counter::Malformed || method == Some(Method::Ack) {
            tracing::debug!(identity = %m.identity, peer = %m.peer, flow = %m.flow, status = r.status, reason = r.label, "phone request refused");
        } else {
            tracing::info!(
                identity = %m.identity,
                peer = %m.peer,
                flow = %m.flow,
                method = method.map(|m| m.as_str()).unwrap_or("other"),
                status = r.status,
                reason = r.label,
                warning = %r.warning,
                "phone request refused"
            );
        }
        if method == Some(Method::Ack) {
            return;
        }
        if let Some(reply) = self.refusal(&m.message, r.status, &r.warning, r.retry_after) {
            self.send_reply_phone(m.flow, &reply);
        }
    }

    /// `sip.identity_headers` on an allowed request (`authorize::rewrite_identity_headers`),
    /// each removed header counted.
    fn rewrite_identity(&self, req: &mut SipMessage, allowed: &Allowed) {
        let domain = host_of(self.pbx.pbx_addr().ip());
        for name in
            authz::rewrite_identity_headers(req, allowed, self.settings.identity_headers, &domain)
        {
            self.metrics
                .headers_removed
                .with_label_values(&[name])
                .inc();
        }
    }

    /// `sip.identity_headers` on a phone's response toward the PBX
    /// (`authorize::rewrite_response_identity_headers`), each removed header counted.
    fn rewrite_response_identity(&self, resp: &mut SipMessage, flow: FlowId) {
        let user = self
            .flows
            .get(flow)
            .and_then(|f| authz::response_user(resp, &f.identity, self.snapshot().inventory()));
        let domain = host_of(self.pbx.pbx_addr().ip());
        for name in authz::rewrite_response_identity_headers(
            resp,
            user.as_deref(),
            self.settings.identity_headers,
            &domain,
        ) {
            self.metrics
                .headers_removed
                .with_label_values(&[name])
                .inc();
        }
    }

    /// Charges a new request to its device's budget; over budget it is answered 503 with
    /// Retry-After (RFC 3261 §21.5.4) while the budget can pay for that response too, and
    /// dropped (counted) once it cannot; either way it goes no further.
    fn within_budget(&mut self, m: &PhoneMessage) -> bool {
        let key = BudgetKey::of(&m.identity, m.flow);
        let now = Instant::now().into_std();
        let Admission::Refused { first, .. } = self.rate_limiter.admit(key, now) else {
            return true;
        };
        self.metrics.rate_limited.inc();
        if first {
            // Once per episode, not per request: a flood must not become a log flood.
            tracing::warn!(
                identity = %m.identity,
                peer = %m.peer,
                flow = %m.flow,
                "phone exceeds sip.phone_requests_per_second; answering 503 until it slows down"
            );
        }
        // The 503 is charged like every response the edge composes (it may take the budget
        // into debt); Retry-After says when a request is admitted again, that charge included.
        if !self.charge_reply(key) {
            return false;
        }
        if let Some(mut r) = self.response(
            &m.message,
            503,
            Some("too many requests from this device (sip.phone_requests_per_second)"),
        ) {
            let retry_after = self.rate_limiter.retry_after_secs(key, now);
            r.set_header("Retry-After", &retry_after.to_string());
            self.send_phone(m.flow, &r);
        }
        false
    }

    async fn forward_from_phone(&mut self, m: PhoneMessage, method: Method, allowed: Allowed) {
        let flow = m.flow;
        let mut req = m.message.clone();
        let names_edge = |u: &SipUri| self.names_edge(u);
        match forward_request(&mut req, &self.pbx_via(), names_edge) {
            Ok(()) => {}
            Err(MessageError::TooManyHops) => {
                self.reply_phone(flow, &m.message, 483, None);
                return;
            }
            Err(e) => {
                self.reply_phone(flow, &m.message, 400, Some(&format!("cannot forward: {e}")));
                return;
            }
        }
        self.rewrite_identity(&mut req, &allowed);
        let call_id = m.message.call_id().unwrap_or_default().to_owned();
        let cseq = m.message.cseq().map(|c| c.seq).unwrap_or(0);
        let in_dialog = m.message.to_tag().ok().flatten().is_some();
        // In-dialog requests sent to the edge's Contact go to the PBX's target.
        if let Some(d) = self.dialogs.get_mut(&call_id) {
            d.phone_cseq = d.phone_cseq.max(cseq);
            if in_dialog {
                if let (Some(target), Ok(ruri)) = (d.pbx_contact.clone(), req.request_uri()) {
                    if self.names_edge(&ruri) {
                        let _ = req.set_request_uri(&target);
                    }
                }
            }
        }
        // A Request-URI naming the edge (`sip:200@sbc.test;transport=tls`) names the PBX on
        // the PBX leg: same user, the PBX's address, no phone-side transport.
        if let Ok(mut ruri) = req.request_uri() {
            if self.names_edge(&ruri) {
                let pbx = self.pbx.pbx_addr();
                ruri.host = host_of(pbx.ip());
                ruri.port = Some(pbx.port());
                ruri.params.remove("transport");
                let _ = req.set_request_uri(&ruri);
            }
        }
        let identity = m.identity.to_string();
        let mut register = None;
        match req.contacts() {
            Ok(ContactList::Wildcard) if method == Method::Register => {
                register = Some(RegisterCtx {
                    aor: req.to_user().ok().flatten().unwrap_or_default(),
                    bindings: Vec::new(),
                    wildcard: true,
                });
            }
            Ok(ContactList::Wildcard) => {
                self.reply_phone(
                    flow,
                    &m.message,
                    400,
                    Some("Contact * is only allowed in REGISTER"),
                );
                return;
            }
            Ok(ContactList::Addrs(addrs)) if addrs.len() > MAX_CONTACTS => {
                self.reply_phone(
                    flow,
                    &m.message,
                    400,
                    Some(&format!("more than {MAX_CONTACTS} Contacts")),
                );
                return;
            }
            Ok(ContactList::Addrs(addrs))
                if method == Method::Register
                    && self.registrar.register_bindings_after(
                        flow,
                        &addrs.iter().map(|a| &a.uri).collect::<Vec<_>>(),
                    ) > MAX_REGISTER_BINDINGS_PER_FLOW =>
            {
                tracing::info!(
                    identity = %identity,
                    peer = %m.peer,
                    "REGISTER refused: more than {MAX_REGISTER_BINDINGS_PER_FLOW} registered Contacts on one connection"
                );
                self.metrics
                    .denied
                    .with_label_values(&["too_many_bindings"])
                    .inc();
                self.reply_phone(
                    flow,
                    &m.message,
                    403,
                    Some(&format!(
                        "more than {MAX_REGISTER_BINDINGS_PER_FLOW} registered Contacts on this connection"
                    )),
                );
                return;
            }
            Ok(ContactList::Addrs(addrs)) if !addrs.is_empty() => {
                let aor = if method == Method::Register {
                    req.to_user().ok().flatten()
                } else {
                    req.from_user().ok().flatten()
                }
                .unwrap_or_default();
                let mut mapped = Vec::with_capacity(addrs.len());
                let mut bindings = Vec::new();
                for a in addrs {
                    let id = self.registrar.binding_for(
                        flow,
                        &a.uri,
                        &aor,
                        &identity,
                        method != Method::Register,
                    );
                    bindings.push(id);
                    if method == Method::Invite {
                        if let Some(d) = self.dialogs.get_mut(&call_id) {
                            d.phone_contact = Some(a.uri.clone());
                        }
                    }
                    // Header params (expires, q, +sip.instance, reg-id) stay; the phone's
                    // URI (address, transport=tls, ob) hides behind the token.
                    mapped.push(NameAddr {
                        display_name: a.display_name,
                        uri: self.edge_contact(flow, id),
                        params: a.params,
                    });
                }
                req.set_contacts(&mapped);
                if method == Method::Register {
                    register = Some(RegisterCtx {
                        aor,
                        bindings,
                        wildcard: false,
                    });
                }
            }
            Ok(ContactList::Addrs(_)) => {}
            Err(e) => {
                self.reply_phone(flow, &m.message, 400, Some(&format!("bad Contact: {e}")));
                return;
            }
        }
        // Offers: INVITE, and UPDATE with a body (RFC 3311) inside a known call.
        let offer = method == Method::Invite
            || (method == Method::Update
                && !m.message.body().is_empty()
                && self.dialogs.contains_key(&call_id));
        if offer {
            match self.phone_offer(&m, &mut req, in_dialog).await {
                Ok(()) => {}
                Err((status, why)) => {
                    self.reply_phone(flow, &m.message, status, Some(&why));
                    return;
                }
            }
        }
        if method == Method::Prack && !m.message.body().is_empty() {
            if let Err((status, why, retry)) =
                self.prack_sdp(Leg::Phone, &m.message, &mut req).await
            {
                if let Some(r) = self.refusal(&m.message, status, &why, retry) {
                    self.send_reply_phone(flow, &r);
                }
                return;
            }
        }
        if method == Method::Bye {
            self.hang_up(&call_id, CallEnd::Bye(Leg::Phone)).await;
        }
        self.start_txn(Leg::Phone, m.message, req, flow, register)
            .await;
    }

    /// The SDP of an INVITE from a phone: leases relay ports, rewrites RTP/SAVP → RTP/AVP.
    async fn phone_offer(
        &mut self,
        m: &PhoneMessage,
        req: &mut SipMessage,
        in_dialog: bool,
    ) -> Result<(), (u16, String)> {
        let call_id = m.message.call_id().unwrap_or_default().to_owned();
        if !self.dialogs.contains_key(&call_id) {
            if in_dialog {
                return Err((481, "no such call".into()));
            }
            let owner = BudgetKey::of(&m.identity, m.flow);
            if let Err(e) = self.call_allowed(owner) {
                tracing::info!(flow = %m.flow, identity = %m.identity, "call refused: the device has sip.max_calls_per_device calls");
                return Err(e);
            }
            let call = NewCall {
                flow: m.flow,
                owner,
                identity: m.identity.to_string(),
                session_ids: (self.session_id(), self.session_id()),
                accept_unannounced_unencrypted_srtcp: self
                    .settings
                    .accept_unannounced_unencrypted_srtcp,
            };
            let d = Dialog::new(&m.message, Leg::Phone, call);
            self.dialogs.insert(call_id.clone(), d);
            self.publish_calls();
            self.metrics
                .calls_started
                .with_label_values(&["phone"])
                .inc();
        }
        self.offer_sdp(&call_id, Leg::Phone, m.message.body(), req, in_dialog)
            .await
    }

    /// The SDP offer in a request from `from` (INVITE, re-INVITE, UPDATE): leases relay ports
    /// for its m-lines, rewrites it for the other leg (RTP/SAVP → RTP/AVP from a phone, the
    /// reverse with the edge's keys from the PBX), and puts the result into `req`. A refused
    /// initial offer ends the call.
    async fn offer_sdp(
        &mut self,
        call_id: &str,
        from: Leg,
        body: &[u8],
        req: &mut SipMessage,
        in_dialog: bool,
    ) -> Result<(), (u16, String)> {
        if body.is_empty() {
            // Delayed offer (RFC 3261 §13.2.1): the 2xx will carry the offer, the ACK the
            // answer; no media until then.
            return Ok(());
        }
        let pbx_host = self.pbx.pbx_addr().ip();
        let settings = self.settings.clone();
        let Some(owner) = self.dialogs.get(call_id).map(|d| d.owner) else {
            return Err((500, "dialog vanished".into()));
        };
        let held_elsewhere = self.ports_held_elsewhere(owner, call_id);
        let denied = self.metrics.denied.clone();
        let mut keys = OsKeys(&self.rng);
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return Err((500, "dialog vanished".into()));
        };
        let result = async {
            // The rewritten SDP goes to the other leg: that leg's origin versions it. (Each
            // context is dropped before the next await: it holds the non-Send key source.)
            let analysed = {
                let ctx = rewrite_context(&settings, d, from, &mut keys);
                match from {
                    Leg::Phone => {
                        Analysed::Phone(analyse_phone_offer(body, &ctx).map_err(sdp_error)?)
                    }
                    Leg::Pbx => Analysed::Pbx(analyse_pbx_offer(body, &ctx).map_err(sdp_error)?),
                }
            };
            let requests = match &analysed {
                Analysed::Phone(o) => o.port_requests().to_vec(),
                Analysed::Pbx(o) => o.port_requests().to_vec(),
            };
            // `media.max_ports_per_device`, checked before anything is leased: the ports
            // this call would hold after the offer, plus those of the device's other calls.
            let max = settings.max_ports_per_device;
            let held = held_elsewhere
                + d.media.streams_after(&requests) * PORTS_PER_STREAM;
            if held > max {
                denied.with_label_values(&["device_port_limit"]).inc();
                tracing::info!(?owner, held, max, "offer refused: the device would hold more than media.max_ports_per_device relay ports");
                return Err((
                    503,
                    format!("the device would hold {held} of {max} media ports (media.max_ports_per_device)"),
                ));
            }
            let ports = d
                .media
                .ports_for(&self.media, &requests, pbx_host)
                .await
                .map_err(|e| (503, format!("no media ports: {e}")))?;
            let rewritten = {
                let mut ctx = rewrite_context(&settings, d, from, &mut keys);
                match analysed {
                    Analysed::Phone(o) => rewrite_phone_offer(o, &ports, &mut ctx),
                    Analysed::Pbx(o) => rewrite_pbx_offer(o, &ports, &mut ctx),
                }
                .map_err(sdp_error)?
            };
            d.media
                .apply(&rewritten.plan)
                .await
                .map_err(|e| (500, format!("media relay: {e}")))?;
            d.offer = Some(rewritten.plan);
            Ok::<Vec<u8>, (u16, String)>(rewritten.sdp)
        }
        .await;
        match result {
            Ok(sdp) => {
                if let Some(d) = self.dialogs.get_mut(call_id) {
                    d.oa.sent(from.other().side(), &sdp);
                }
                req.set_body(sdp, Some("application/sdp"));
                Ok(())
            }
            Err(e) => {
                if !in_dialog {
                    self.hang_up(call_id, CallEnd::OfferRefused).await;
                    self.metrics
                        .calls_ended
                        .with_label_values(&["refused"])
                        .inc();
                }
                Err(e)
            }
        }
    }

    /// The SDP answer in a message from `from` (a 1xx/2xx, or the ACK after a delayed offer):
    /// rewritten against the pending offer for the other leg; the media relay follows it.
    /// `final_answer` makes it the dialog's session (RFC 3264 §5).
    async fn answer_sdp(
        &mut self,
        call_id: &str,
        from: Leg,
        body: &[u8],
        final_answer: bool,
    ) -> Result<Vec<u8>, (u16, String)> {
        let settings = self.settings.clone();
        let mut keys = OsKeys(&self.rng);
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return Err((481, "no such call".into()));
        };
        let Some(offer) = d.offer.clone() else {
            return Err((488, "an SDP answer without an offer".into()));
        };
        let rewritten = {
            let mut ctx = rewrite_context(&settings, d, from, &mut keys);
            match from {
                Leg::Pbx => rewrite_pbx_answer(body, &offer, &mut ctx),
                Leg::Phone => rewrite_phone_answer(body, &offer, &mut ctx),
            }
            .map_err(sdp_error)?
        };
        d.media
            .apply(&rewritten.plan)
            .await
            .map_err(|e| (500, format!("media relay: {e}")))?;
        if final_answer {
            d.plan = Some(rewritten.plan);
            d.offer = None;
        }
        d.oa.sent(from.other().side(), &rewritten.sdp);
        Ok(rewritten.sdp)
    }

    /// Whether `owner` may start another call (`sip.max_calls_per_device`, counted over
    /// all its connections, both directions); otherwise 486 Busy Here (RFC 3261 §21.4.24:
    /// the callee cannot take another call now).
    fn call_allowed(&self, owner: BudgetKey) -> Result<(), (u16, String)> {
        let max = self.settings.max_calls_per_device;
        let calls = self.dialogs.values().filter(|d| d.owner == owner).count();
        if calls < max {
            return Ok(());
        }
        self.metrics
            .denied
            .with_label_values(&["device_call_limit"])
            .inc();
        Err((
            486,
            format!("the device has {max} calls already (sip.max_calls_per_device)"),
        ))
    }

    /// Relay ports the calls of `owner` other than `call_id` hold.
    fn ports_held_elsewhere(&self, owner: BudgetKey, call_id: &str) -> usize {
        self.dialogs
            .iter()
            .filter(|(c, d)| d.owner == owner && c.as_str() != call_id)
            .map(|(_, d)| d.media.stream_count() * PORTS_PER_STREAM)
            .sum()
    }

    fn session_id(&self) -> u64 {
        let mut b = [0u8; 8];
        let _ = self.rng.fill(&mut b);
        u64::from_be_bytes(b) >> 2
    }

    // ---------------------------------------------------------------- PBX side

    async fn on_pbx_message(&mut self, m: SipMessage) {
        if m.is_request() {
            self.on_pbx_request(m).await
        } else {
            self.on_response(Leg::Pbx, m).await
        }
    }

    async fn on_pbx_request(&mut self, m: SipMessage) {
        let method = m.method();
        self.metrics
            .requests
            .with_label_values(&["pbx", method.map(|m| m.as_str()).unwrap_or("other")])
            .inc();
        if let Err(e) = check_request(&m) {
            self.metrics
                .malformed
                .with_label_values(&["pbx", e.label()])
                .inc();
            if method != Some(Method::Ack) {
                self.reply_pbx(&m, 400, Some(&format!("malformed request: {e}")))
                    .await;
            }
            return;
        }
        // The PBX gets the same single-header rule as phones: a PBX bug must not hand a
        // phone an ambiguous identity either.
        if let Err(r) = authz::repeated_header(&m) {
            self.metrics
                .malformed
                .with_label_values(&["pbx", r.label])
                .inc();
            if method != Some(Method::Ack) {
                if let Some(reply) = self.refusal(&m, r.status, &r.warning, r.retry_after) {
                    self.send_pbx(&reply).await;
                }
            }
            return;
        }
        let Some(method) = method else {
            self.reply_pbx(&m, 501, Some("method not supported by the edge"))
                .await;
            return;
        };
        if let Ok(key) = TransactionKey::server(&m) {
            if let Some(id) = self.txns.matching(Leg::Pbx, &key) {
                let events = self.txns.on_request(id, Leg::Pbx, m);
                self.drive(events).await;
                return;
            }
            if method == Method::Cancel {
                self.on_cancel(Leg::Pbx, key, m, FlowId(0)).await;
                return;
            }
        }
        if method == Method::Ack {
            self.forward_2xx_ack(Leg::Pbx, m).await;
            return;
        }
        // Which phone? The edge Contact's flow token, else the AOR user (static setups).
        let (flow, contact) = match self.target_of(&m) {
            Ok(t) => t,
            Err((status, why)) => {
                self.reply_pbx(&m, status, Some(why)).await;
                return;
            }
        };
        let mut req = m.clone();
        let names_edge = |u: &SipUri| self.names_edge(u);
        match forward_request(&mut req, &self.phone_via(), names_edge) {
            Ok(()) => {}
            Err(MessageError::TooManyHops) => {
                self.reply_pbx(&m, 483, None).await;
                return;
            }
            Err(e) => {
                self.reply_pbx(&m, 400, Some(&format!("cannot forward: {e}")))
                    .await;
                return;
            }
        }
        if let Err(e) = req.set_request_uri(&contact) {
            self.reply_pbx(
                &m,
                500,
                Some(&format!("cannot restore the Request-URI: {e}")),
            )
            .await;
            return;
        }
        let call_id = m.call_id().unwrap_or_default().to_owned();
        let cseq = m.cseq().map(|c| c.seq).unwrap_or(0);
        if let Some(d) = self.dialogs.get_mut(&call_id) {
            d.pbx_cseq = d.pbx_cseq.max(cseq);
        }
        if method == Method::Notify && m.to_tag().ok().flatten().is_some() {
            let state = m.header("Subscription-State");
            if subscriptions::terminated(state) {
                if let (Ok(Some(a)), Ok(Some(b))) = (m.from_tag(), m.to_tag()) {
                    self.subscriptions.forget(&call_id, &a, &b);
                }
            } else {
                self.learn_subscription(&m, flow);
            }
        }
        if method == Method::Invite {
            // Toward the phone the edge is the remote target; the PBX's stays in the dialog.
            let pbx_contact = match m.contacts() {
                Ok(ContactList::Addrs(a)) => a.into_iter().next().map(|a| a.uri),
                _ => None,
            };
            req.set_contacts(&[self.phone_side_contact()]);
            if let Err((status, why)) = self.pbx_offer(&m, &mut req, flow, pbx_contact).await {
                self.reply_pbx(&m, status, Some(&why)).await;
                return;
            }
        } else {
            if req.header("Contact").is_some() {
                req.set_contacts(&[self.phone_side_contact()]);
            }
            if method == Method::Update
                && !m.body().is_empty()
                && self.dialogs.contains_key(&call_id)
            {
                if let Err((status, why)) = self.pbx_offer(&m, &mut req, flow, None).await {
                    self.reply_pbx(&m, status, Some(&why)).await;
                    return;
                }
            }
            if method == Method::Prack && !m.body().is_empty() {
                if let Err((status, why, retry)) = self.prack_sdp(Leg::Pbx, &m, &mut req).await {
                    if let Some(r) = self.refusal(&m, status, &why, retry) {
                        self.send_pbx(&r).await;
                    }
                    return;
                }
            }
        }
        if method == Method::Bye {
            self.hang_up(&call_id, CallEnd::Bye(Leg::Pbx)).await;
        }
        self.start_txn(Leg::Pbx, m, req, flow, None).await;
    }

    /// The SDP of an INVITE from the PBX: leases relay ports, rewrites RTP/AVP → RTP/SAVP
    /// with the edge's keys.
    async fn pbx_offer(
        &mut self,
        m: &SipMessage,
        req: &mut SipMessage,
        flow: FlowId,
        pbx_contact: Option<SipUri>,
    ) -> Result<(), (u16, String)> {
        let call_id = m.call_id().unwrap_or_default().to_owned();
        let in_dialog = m.to_tag().ok().flatten().is_some();
        if !self.dialogs.contains_key(&call_id) {
            if in_dialog {
                return Err((481, "no such call".into()));
            }
            let Some(phone) = self.flows.get(flow).map(|f| f.identity) else {
                return Err((480, "the phone's connection closed".into()));
            };
            let owner = BudgetKey::of(&phone, flow);
            if let Err(e) = self.call_allowed(owner) {
                tracing::info!(%flow, identity = %phone, "call from the PBX refused: the device has sip.max_calls_per_device calls");
                return Err(e);
            }
            let call = NewCall {
                flow,
                owner,
                identity: phone.to_string(),
                session_ids: (self.session_id(), self.session_id()),
                accept_unannounced_unencrypted_srtcp: self
                    .settings
                    .accept_unannounced_unencrypted_srtcp,
            };
            let d = Dialog::new(m, Leg::Pbx, call);
            self.dialogs.insert(call_id.clone(), d);
            self.publish_calls();
            self.metrics.calls_started.with_label_values(&["pbx"]).inc();
        } else if let (Some(d), Some(c)) = (self.dialogs.get_mut(&call_id), pbx_contact) {
            d.pbx_contact = Some(c);
        }
        self.offer_sdp(&call_id, Leg::Pbx, m.body(), req, in_dialog)
            .await
    }

    /// The phone flow and Contact a PBX request is for.
    fn target_of(&self, m: &SipMessage) -> Result<(FlowId, SipUri), (u16, &'static str)> {
        let uri = m.request_uri().map_err(|_| (400, "bad Request-URI"))?;
        let user = uri.user().unwrap_or_default().to_owned();
        match FlowToken::decode(&user, &self.token_key) {
            Ok(token) => {
                let flow = FlowId(token.flow);
                let Some(binding) = self.registrar.get(token.binding) else {
                    // RFC 5626 §5.3: the flow this Contact named has failed.
                    return Err((430, "the phone's flow is gone"));
                };
                if binding.flow != flow || self.flows.get(flow).is_none() {
                    return Err((430, "the phone's flow is gone"));
                }
                Ok((flow, binding.contact.clone()))
            }
            Err(_) if user.is_empty() => Err((404, "no user in the Request-URI")),
            Err(_) => {
                let now = Instant::now().into_std();
                match self.registrar.lookup_aor(&user, now) {
                    Some(b) if self.flows.get(b.flow).is_some() => Ok((b.flow, b.contact.clone())),
                    _ => Err((480, "no phone is registered for this user")),
                }
            }
        }
    }

    // ---------------------------------------------------------------- ACK, CANCEL, BYE

    /// An ACK for a 2xx is its own transaction (RFC 3261 §17.1.1.3): forward it statelessly.
    async fn forward_2xx_ack(&mut self, from: Leg, ack: SipMessage) {
        let call_id = ack.call_id().unwrap_or_default().to_owned();
        let cseq = ack.cseq().map(|c| c.seq).unwrap_or(0);
        // Our 2xx to the PBX is acknowledged: stop repeating it.
        if from == Leg::Pbx {
            self.txns.acked_2xx(&call_id, cseq);
        }
        let Some(d) = self.dialogs.get(&call_id) else {
            return; // an ACK for a call we do not know: nothing to forward to
        };
        let mut fwd = ack.clone();
        fwd.set_body(Vec::new(), None);
        if d.offer.is_some() && !ack.body().is_empty() {
            // The answer to a delayed offer made in our 2xx.
            match self.answer_sdp(&call_id, from, ack.body(), true).await {
                Ok(sdp) => {
                    if let Some(d) = self.dialogs.get_mut(&call_id) {
                        d.oa.completed(cseq);
                    }
                    fwd.set_body(sdp, Some("application/sdp"))
                }
                Err((_, why)) => {
                    // An ACK cannot be refused (RFC 3261 §13.2.2.4): end the call instead.
                    tracing::warn!(%call_id, why = %why, "SDP answer in the ACK refused; ending the call");
                    self.hang_up(&call_id, CallEnd::AckAnswerRefused).await;
                    return;
                }
            }
        }
        let Some(d) = self.dialogs.get(&call_id) else {
            return;
        };
        match from {
            Leg::Phone => {
                let names_edge = |u: &SipUri| self.names_edge(u);
                if forward_request(&mut fwd, &self.pbx_via(), names_edge).is_err() {
                    return;
                }
                if let Some(target) = d.pbx_contact.clone() {
                    let _ = fwd.set_request_uri(&target);
                }
                self.send_pbx(&fwd).await;
            }
            Leg::Pbx => {
                let flow = d.flow;
                let names_edge = |u: &SipUri| self.names_edge(u);
                if forward_request(&mut fwd, &self.phone_via(), names_edge).is_err() {
                    return;
                }
                if let Some(target) = d.phone_contact.clone() {
                    let _ = fwd.set_request_uri(&target);
                }
                self.send_phone(flow, &fwd);
            }
        }
    }

    /// CANCEL (RFC 3261 §9.2): answered 200 at once; the INVITE on the other leg is
    /// cancelled in turn and its 487 travels back as the INVITE's answer.
    async fn on_cancel(
        &mut self,
        from: Leg,
        key: TransactionKey,
        cancel: SipMessage,
        flow: FlowId,
    ) {
        let invite = key
            .cancelled_invite()
            .and_then(|k| self.txns.matching(from, &k));
        // A phone may only cancel its own INVITE (same connection).
        let invite = invite
            .filter(|id| from == Leg::Pbx || self.txns.get(*id).is_some_and(|t| t.flow == flow));
        let Some(id) = invite else {
            match from {
                Leg::Phone => self.reply_phone(flow, &cancel, 481, None),
                Leg::Pbx => self.reply_pbx(&cancel, 481, None).await,
            }
            return;
        };
        let ok = response_to(&cancel, 200, None, None).ok();
        if let Some(ok) = ok {
            match from {
                Leg::Phone => {
                    let f = self.txns.get(id).map(|t| t.flow).unwrap_or(flow);
                    self.send_phone(f, &ok);
                }
                Leg::Pbx => {
                    self.send_pbx(&ok).await;
                }
            }
        }
        let (answered, forwarded, txn_flow) = match self.txns.get(id) {
            Some(t) => (t.answered, t.forwarded.clone(), t.flow),
            None => return,
        };
        if answered {
            return;
        }
        let Some(Ok(cancel_out)) = forwarded.as_ref().map(cancel_for) else {
            return;
        };
        // Counted as "cancelled" when the 487 comes back.
        self.start_edge_request(from.other(), cancel_out, txn_flow)
            .await;
    }

    // ---------------------------------------------------------------- transactions

    /// Starts a relayed transaction: the server side on `from`, the client side on the other
    /// leg with `forwarded`.
    async fn start_txn(
        &mut self,
        from: Leg,
        received: SipMessage,
        forwarded: SipMessage,
        flow: FlowId,
        register: Option<RegisterCtx>,
    ) {
        let events = self.txns.start(from, received, forwarded, flow, register);
        self.drive(events).await;
    }

    /// A request the edge itself sends (CANCEL, BYE): a client transaction on `leg` whose
    /// responses end there.
    async fn start_edge_request(&mut self, leg: Leg, req: SipMessage, flow: FlowId) {
        let events = self.txns.start_edge_request(leg, req, flow);
        self.drive(events).await;
    }

    async fn on_response(&mut self, leg: Leg, resp: SipMessage) {
        if let Err(e) = check_response(&resp) {
            self.metrics
                .malformed
                .with_label_values(&[leg.label(), e.label()])
                .inc();
            return;
        }
        // A response is never answered (RFC 3261 §8.1.3.3): one with a repeated single-valued
        // header is dropped and counted, on either leg.
        if let Err(r) = authz::repeated_header(&resp) {
            self.metrics
                .malformed
                .with_label_values(&[leg.label(), r.label])
                .inc();
            return;
        }
        let Ok(key) = TransactionKey::client_for_response(&resp) else {
            return;
        };
        let Some(id) = self.txns.matching(leg, &key) else {
            // An edge is not a stateless proxy: stray responses are never forwarded.
            self.metrics
                .dropped
                .with_label_values(&[leg.label(), "no_transaction"])
                .inc();
            return;
        };
        let events = self.txns.on_response(id, leg, resp);
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

    /// A response arrived on the client leg `leg`: map it and send it to the other leg.
    async fn relay_response(&mut self, id: TxnId, leg: Leg, mut resp: SipMessage) {
        let Some(status) = resp.status() else { return };
        // 100 Trying is hop-by-hop (each server transaction sent its own).
        if status == 100 {
            return;
        }
        let (from, method, flow, call_id, vias) = match self.txns.get(id) {
            Some(t) => (
                t.from,
                t.method,
                t.flow,
                t.call_id.clone(),
                t.received.vias().unwrap_or_default(),
            ),
            None => return,
        };
        let Some(back) = from else { return }; // an edge-originated request: ends here
        if method == Method::Register && leg == Leg::Pbx {
            self.register_response(id, &mut resp, status);
        }
        // A 2xx to INVITE for a call the edge no longer has (its 2xx was refused, or it
        // crossed the call's end): it is never relayed — the other side would get a dialog
        // the edge cannot serve, with unrewritten SDP and Contact — but ACKed (and hung up).
        if method == Method::Invite
            && (200..300).contains(&status)
            && !self.dialogs.contains_key(&call_id)
        {
            self.metrics
                .dropped
                .with_label_values(&[leg.label(), "2xx_without_call"])
                .inc();
            tracing::info!(%call_id, leg = leg.label(), "2xx for a call the edge no longer has: ACKed and hung up, not relayed");
            self.ack_and_bye(&resp, leg, flow).await;
            return;
        }
        let sdp = match method {
            Method::Invite | Method::Update => {
                self.invite_response(&call_id, method, leg, &mut resp, status, flow)
                    .await
            }
            Method::Prack => {
                self.prack_response(id, &call_id, leg, &mut resp, status)
                    .await
            }
            _ => Ok(()),
        };
        if let Err((code, why)) = sdp {
            tracing::warn!(%call_id, code, why = %why, "answer SDP refused");
            let Some(t) = self.txns.get(id) else { return };
            let req = t.received.clone();
            let forwarded = t.forwarded.clone();
            if let Some(r) = self.response(&req, code, Some(&why)) {
                let refused = std::mem::replace(&mut resp, r);
                // A refused 1xx (e.g. an unusable offer in a 1xx-rel) ends the INVITE on the
                // origin's leg: cancel it on the other leg too (its 487 ends the call).
                if method == Method::Invite && status < 200 {
                    if let Some(Ok(cancel)) = forwarded.as_ref().map(cancel_for) {
                        self.start_edge_request(leg, cancel, flow).await;
                    }
                }
                // A refused 2xx to an initial INVITE: that leg's dialog exists all the same,
                // so the edge ACKs it and hangs up at once (RFC 3261 §13.2.2.4); the call
                // is over on both legs.
                if method == Method::Invite
                    && (200..300).contains(&status)
                    && self.dialogs.get(&call_id).is_some_and(|d| !d.established)
                {
                    self.metrics
                        .calls_ended
                        .with_label_values(&["failed"])
                        .inc();
                    self.hang_up(&call_id, CallEnd::AnswerRefused).await;
                    self.ack_and_bye(&refused, leg, flow).await;
                }
            }
        }
        // What is sent from here on (the refusal replaces the response).
        let status = resp.status().unwrap_or(status);
        // 481 to a request inside an established call: that side no longer has the dialog (a
        // PBX that restarted and lost its state). The requester gets the 481 and ends the
        // dialog itself (RFC 3261 §12.2.1.2; RFC 5057 §5.6: 481 ends the INVITE usage), so
        // the edge releases the call and its media now instead of at the media timeout.
        if status == 481
            && matches!(
                method,
                Method::Invite | Method::Update | Method::Info | Method::Prack
            )
            && self.dialogs.get(&call_id).is_some_and(|d| d.established)
        {
            tracing::info!(%call_id, leg = leg.label(), %method, "481 inside the call: the other side lost the dialog");
            self.hang_up(&call_id, CallEnd::DialogGone).await;
        }
        if matches!(method, Method::Subscribe | Method::Refer) && (200..300).contains(&status) {
            self.learn_subscription(&resp, flow);
        }
        if leg == Leg::Phone && method != Method::Invite && method != Method::Update {
            self.hide_phone_contacts(&mut resp, flow);
        }
        if leg == Leg::Phone {
            self.rewrite_response_identity(&mut resp, flow);
        }
        resp.remove_header("Record-Route");
        restore_vias(&mut resp, &vias);
        let final_response = status >= 200;
        if final_response {
            if let Some(t) = self.txns.get_mut(id) {
                t.answered = true;
            }
        }
        // Our 2xx to an INVITE from the PBX is repeated over UDP until the ACK.
        if method == Method::Invite
            && back == Leg::Pbx
            && !self.pbx.is_reliable()
            && (200..300).contains(&status)
        {
            self.txns.repeat_2xx(id, resp.clone());
        }
        let Some(events) = self.txns.send_response(id, back, resp.clone()) else {
            return;
        };
        if events.is_empty() && (200..300).contains(&status) && method == Method::Invite {
            // A repeated 2xx after the server transaction accepted the first: send it as is
            // (the other side re-ACKs, RFC 6026 §8.4).
            match back {
                Leg::Phone => {
                    self.send_phone(flow, &resp);
                }
                Leg::Pbx => {
                    self.send_pbx(&resp).await;
                }
            }
        }
        self.drive(events).await;
    }

    /// Media and dialog work for a response to an INVITE (`leg` = where it came from).
    async fn invite_response(
        &mut self,
        call_id: &str,
        method: Method,
        leg: Leg,
        resp: &mut SipMessage,
        status: u16,
        flow: FlowId,
    ) -> Result<(), (u16, String)> {
        let cseq = resp.cseq().map(|c| c.seq).unwrap_or(0);
        let phone_side_contact = self.phone_side_contact();
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return Ok(());
        };
        let invite = method == Method::Invite;
        if invite && (200..300).contains(&status) && leg == Leg::Pbx {
            if let Some((seq, cached)) = &d.last_2xx_to_phone {
                if *seq == cseq {
                    *resp = cached.clone();
                    return Ok(());
                }
            }
        }
        if status >= 300 {
            if invite && !d.established {
                let call_id = call_id.to_owned();
                self.metrics
                    .calls_ended
                    .with_label_values(&[match status {
                        487 => "cancelled",
                        // Digest challenges are normal: the phone retries with credentials.
                        401 | 407 => "challenged",
                        _ => "failed",
                    }])
                    .inc();
                self.hang_up(&call_id, CallEnd::InviteFailed).await;
            } else {
                // A failed re-INVITE or UPDATE keeps the previous session (RFC 3261 §14.1,
                // RFC 3311 §5.2).
                d.offer = None;
            }
            return Ok(());
        }
        if !resp.body().is_empty() {
            let call_id = call_id.to_owned();
            let (carrier, completes) = if invite {
                let require = resp.header_values("Require");
                let reliable = is_reliable_provisional(status, &require, resp.header("RSeq"));
                (Carrier::InviteResponse { status, reliable }, Some(cseq))
            } else {
                (Carrier::UpdateOrPrackResponse, None)
            };
            self.response_sdp(&call_id, leg, carrier, completes, resp)
                .await?;
        }
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return Ok(());
        };
        // Remote targets: toward the phone the edge is the target; the PBX's stays here.
        let contact = match resp.contacts() {
            Ok(ContactList::Addrs(a)) => a.into_iter().next(),
            _ => None,
        };
        match leg {
            Leg::Pbx => {
                if let Some(c) = contact {
                    d.pbx_contact = Some(c.uri);
                    resp.set_contacts(&[phone_side_contact]);
                }
            }
            Leg::Phone => {
                if let Some(c) = contact {
                    d.phone_contact = Some(c.uri.clone());
                    let aor = resp.to_user().ok().flatten().unwrap_or_default();
                    let identity = d.identity.clone();
                    let binding = self
                        .registrar
                        .binding_for(flow, &c.uri, &aor, &identity, true);
                    let edge = self.edge_contact(flow, binding);
                    resp.set_contacts(&[NameAddr {
                        display_name: c.display_name,
                        uri: edge,
                        params: c.params,
                    }]);
                }
            }
        }
        if invite && (200..300).contains(&status) {
            let Some(d) = self.dialogs.get_mut(call_id) else {
                return Ok(());
            };
            if !d.established {
                d.established = true;
                // The callee's To (with its tag) comes from the 2xx to the initial INVITE; the
                // 2xx to a re-INVITE from the callee carries the caller's tag in To.
                d.callee_to = resp.header("To").map(str::to_owned);
                let setup = Instant::now().saturating_duration_since(d.created);
                self.metrics.setup_seconds.observe(setup.as_secs_f64());
                self.metrics
                    .calls_ended
                    .with_label_values(&["answered"])
                    .inc();
            }
            let codecs = rtpmap_names(resp.body());
            if !codecs.is_empty() {
                d.codecs = codecs;
            }
            if leg == Leg::Pbx {
                d.last_2xx_to_phone = Some((cseq, resp.clone()));
            }
        }
        Ok(())
    }

    /// A phone's response to a PBX request: its own Contacts (a dialog's remote target, e.g. a
    /// 200 to SUBSCRIBE) become edge Contacts carrying a flow token, so the PBX never sees the
    /// phone's address and in-dialog requests come back through its flow.
    fn hide_phone_contacts(&mut self, resp: &mut SipMessage, flow: FlowId) {
        let Ok(ContactList::Addrs(addrs)) = resp.contacts() else {
            return;
        };
        if addrs.is_empty() {
            return;
        }
        let aor = resp.to_user().ok().flatten().unwrap_or_default();
        let identity = self
            .flows
            .get(flow)
            .map(|f| f.identity.to_string())
            .unwrap_or_default();
        let mapped: Vec<NameAddr> = addrs
            .into_iter()
            .map(|a| {
                let binding = self
                    .registrar
                    .binding_for(flow, &a.uri, &aor, &identity, true);
                NameAddr {
                    display_name: a.display_name,
                    uri: self.edge_contact(flow, binding),
                    params: a.params,
                }
            })
            .collect();
        resp.set_contacts(&mapped);
    }

    /// A response to a relayed REGISTER from the PBX: bindings and Contacts.
    fn register_response(&mut self, id: TxnId, resp: &mut SipMessage, status: u16) {
        let Some(reg) = self.txns.get(id).and_then(|t| t.register.as_ref()) else {
            return;
        };
        let ids = reg.bindings.clone();
        let wildcard = reg.wildcard;
        let aor = reg.aor.clone();
        if (200..300).contains(&status) {
            let now = Instant::now().into_std();
            let default_expires = resp.expires().ok().flatten().unwrap_or(3600);
            let listed = match resp.contacts() {
                Ok(ContactList::Addrs(a)) => a,
                _ => Vec::new(),
            };
            if wildcard {
                self.registrar.remove_aor(&aor);
            }
            let mut out = Vec::with_capacity(listed.len());
            let mut confirmed = Vec::new();
            for mut c in listed {
                let user = c.uri.user().unwrap_or_default().to_owned();
                match FlowToken::decode(&user, &self.token_key) {
                    Ok(token) => {
                        let Some(original) =
                            self.registrar.get(token.binding).map(|b| b.contact.clone())
                        else {
                            continue; // a binding of a flow that is gone: the PBX expires it
                        };
                        if ids.contains(&token.binding) {
                            let expires = c.expires().unwrap_or(default_expires);
                            self.registrar.confirm(token.binding, expires, now);
                            confirmed.push(token.binding);
                        }
                        c.uri = original;
                        out.push(c);
                    }
                    Err(_) => out.push(c),
                }
            }
            for b in &ids {
                if !confirmed.contains(b) {
                    self.registrar.release(*b);
                }
            }
            if !out.is_empty() {
                resp.set_contacts(&out);
            }
            self.publish();
        } else if status == 401 || status == 407 {
            // Keep the bindings so the authenticated retry presents the same edge Contact.
            let until = Instant::now().into_std() + Duration::from_secs(60);
            self.registrar.hold_pending(&ids, until);
        } else if status >= 300 {
            self.registrar.drop_pending(&ids);
        }
    }

    /// Answers the originating side of `id` itself (the other side cannot).
    async fn answer_origin(&mut self, id: TxnId, status: u16, warning: Option<&str>) {
        let (from, req) = match self.txns.get(id) {
            Some(t) if !t.answered => match t.from {
                Some(f) => (f, t.received.clone()),
                None => return,
            },
            _ => return,
        };
        let Some(resp) = self.response(&req, status, warning) else {
            return;
        };
        if let Some(t) = self.txns.get_mut(id) {
            t.answered = true;
        }
        if req.method() == Some(Method::Invite) {
            let call_id = req.call_id().unwrap_or_default().to_owned();
            if self.dialogs.get(&call_id).is_some_and(|d| !d.established) {
                self.metrics
                    .calls_ended
                    .with_label_values(&["failed"])
                    .inc();
                self.hang_up(&call_id, CallEnd::NoAnswer).await;
            }
        }
        if let Some(events) = self.txns.send_response(id, from, resp) {
            self.drive(events).await;
        }
    }

    async fn terminated(&mut self, id: TxnId, leg: Leg, why: Termination) {
        let origin = self.txns.get(id).and_then(|t| t.from);
        self.txns.end_leg(id, leg);
        // The client leg gave up before any final answer: answer the origin ourselves.
        if Some(leg) != origin && why != Termination::Completed {
            self.metrics
                .timeouts
                .with_label_values(&[leg.label()])
                .inc();
            let (status, text) = match (leg, why) {
                (Leg::Pbx, Termination::TransportError) => (503, "the PBX cannot be reached"),
                (Leg::Pbx, _) => (408, "the PBX did not answer"),
                (Leg::Phone, Termination::TransportError) => (480, "the phone cannot be reached"),
                (Leg::Phone, _) => (408, "the phone did not answer"),
            };
            self.answer_origin(id, status, Some(text)).await;
        }
        self.txns.remove_if_finished(id);
    }
}

/// The encoding names of an SDP body's `a=rtpmap` lines (admin API only; the SDP itself is
/// handled by `sdp`).
fn rtpmap_names(body: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=rtpmap:"))
        .filter_map(|v| v.split_once(' ').map(|(_, name)| name.trim().to_owned()))
        .take(32)
        .collect()
}

/// The rewrite context for SDP that came from `from`: the result goes to the other leg, so
/// that leg's origin versions it (RFC 3264 §8); the dialog's last answered plan is the
/// reference for re-offers.
fn rewrite_context<'a>(
    settings: &'a CoreSettings,
    d: &'a mut Dialog,
    from: Leg,
    keys: &'a mut dyn KeySource,
) -> RewriteContext<'a> {
    RewriteContext {
        edge: settings.sdp,
        policy: &settings.srtp,
        origin: match from {
            Leg::Phone => &mut d.pbx_origin,
            Leg::Pbx => &mut d.phone_origin,
        },
        previous: d.plan.as_ref(),
        keys,
    }
}

/// An analysed offer from either side.
enum Analysed {
    Phone(crate::sdp::PhoneOffer),
    Pbx(crate::sdp::PbxOffer),
}

fn sdp_error(e: RewriteError) -> (u16, String) {
    (e.sip_status(), format!("SDP: {e}"))
}

/// The headers every request must carry, parsed (RFC 3261 §8.1.1): Via, From, To, Call-ID, a
/// CSeq whose method is the request's, and a Request-URI. A request failing this is answered
/// 400, never forwarded.
fn check_request(m: &SipMessage) -> Result<(), MessageError> {
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
fn check_response(m: &SipMessage) -> Result<(), MessageError> {
    m.top_via()?;
    m.from()?;
    m.to()?;
    m.call_id()?;
    m.cseq()?;
    Ok(())
}
