//! The SIP core: one task that owns every transaction, the binding table and the timers (no
//! locks). Phone connections and the PBX socket hand it messages over channels; it answers,
//! forwards and retransmits through the RFC 3261 §17 state machines in `transaction::fsm`.
//!
//! Non-INVITE requests are relayed both ways here: REGISTER (with Contact ↔ flow mapping),
//! OPTIONS, SUBSCRIBE/NOTIFY, MESSAGE, PUBLISH, INFO, REFER... INVITE dialogs are the calls
//! issue's; until they land an INVITE is answered 501 on either leg.

use super::legs::{edge_contact_uri, forward_request, host_of, restore_vias};
use super::metrics::CoreMetrics;
use super::registrar::Registrar;
use crate::identity::{Authorization, Identity, IdentitySnapshot};
use crate::sip::flow_token::{FlowToken, FlowTokenKey};
use crate::sip::message::{ContactList, MessageError, Method, SipMessage};
use crate::sip::response::response_to;
use crate::sip::uri::{NameAddr, SipUri, Via};
use crate::transaction::fsm::{
    Action, ClientNonInvite, ServerNonInvite, Termination, Timer, TimerConfig,
};
use crate::transaction::key::{new_branch, TransactionKey};
use crate::transport::connection::{PhoneEvent, PhoneMessage};
use crate::transport::flow::{FlowId, FlowTable};
use crate::transport::pbx::PbxLink;
use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{delay_queue, DelayQueue};

/// Addresses and names the core writes into messages.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub timers: TimerConfig,
    /// Our host toward phones (Via sent-by, Warning agent).
    pub domain: String,
    /// Our SIP address toward the PBX (Via, edge Contacts).
    pub pbx_local: SocketAddr,
    /// Our TLS listener, to recognise Routes that name the edge.
    pub tls_local: SocketAddr,
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

/// What the core publishes for the admin API (rebuilt on change, read without touching the
/// core task).
#[derive(Debug, Default)]
pub struct CoreState {
    pub registrations: RwLock<Vec<RegistrationView>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Leg {
    Pbx,
    Phone,
}

type TxnId = u64;

#[derive(Debug)]
struct RegisterCtx {
    aor: String,
    /// (binding id, edge Contact URI as sent) of each Contact in the REGISTER.
    bindings: Vec<(u64, String)>,
    wildcard: bool,
}

// Both variants hold whole messages; boxing one would only move the size elsewhere.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Txn {
    /// A phone request forwarded to the PBX.
    Outbound {
        client: ClientNonInvite,
        flow: FlowId,
        phone_request: SipMessage,
        register: Option<RegisterCtx>,
        done: bool,
    },
    /// A PBX request forwarded to a phone.
    Inbound {
        server: ServerNonInvite,
        flow: FlowId,
        pbx_request: SipMessage,
        phone_key: Option<TransactionKey>,
        phone_client: Option<ClientNonInvite>,
        server_done: bool,
    },
}

pub struct SipCore {
    settings: CoreSettings,
    flows: Arc<FlowTable>,
    identity: watch::Receiver<Arc<IdentitySnapshot>>,
    pbx: PbxLink,
    registrar: Registrar,
    txns: HashMap<TxnId, Txn>,
    pbx_clients: HashMap<TransactionKey, TxnId>,
    pbx_servers: HashMap<TransactionKey, TxnId>,
    phone_clients: HashMap<TransactionKey, TxnId>,
    timers: DelayQueue<(TxnId, Leg, Timer)>,
    timer_keys: HashMap<(TxnId, Leg, Timer), delay_queue::Key>,
    next_txn: TxnId,
    rng: SystemRandom,
    token_key: FlowTokenKey,
    metrics: CoreMetrics,
    state: Arc<CoreState>,
}

impl SipCore {
    pub fn new(
        settings: CoreSettings,
        flows: Arc<FlowTable>,
        identity: watch::Receiver<Arc<IdentitySnapshot>>,
        pbx: PbxLink,
        metrics: CoreMetrics,
        state: Arc<CoreState>,
    ) -> Result<Self, ring::error::Unspecified> {
        let rng = SystemRandom::new();
        let mut key = [0u8; 32];
        rng.fill(&mut key)?;
        Ok(Self {
            settings,
            flows,
            identity,
            pbx,
            registrar: Registrar::new(),
            txns: HashMap::new(),
            pbx_clients: HashMap::new(),
            pbx_servers: HashMap::new(),
            phone_clients: HashMap::new(),
            timers: DelayQueue::new(),
            timer_keys: HashMap::new(),
            next_txn: 1,
            rng,
            token_key: FlowTokenKey::new(key),
            metrics,
            state,
        })
    }

    /// Runs until `cancel`, or until both inbound channels are closed.
    pub async fn run(
        mut self,
        mut phone_rx: mpsc::Receiver<PhoneEvent>,
        mut pbx_rx: mpsc::Receiver<SipMessage>,
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
                Some(expired) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)), if !self.timers.is_empty() => {
                    let (id, leg, timer) = expired.into_inner();
                    self.timer_keys.remove(&(id, leg, timer));
                    self.on_timer(id, leg, timer).await;
                }
                _ = sweep.tick() => self.sweep(),
            }
        }
    }

    fn branch(&self) -> String {
        let mut r = [0u8; 16];
        // The OS CSPRNG does not fail on Linux once initialised; a zero branch would still
        // be unique enough for one transaction if it ever did.
        let _ = self.rng.fill(&mut r);
        new_branch(&r)
    }

    fn snapshot(&self) -> Arc<IdentitySnapshot> {
        self.identity.borrow().clone()
    }

    fn publish_registrations(&self) {
        let now = Instant::now().into_std();
        let views: Vec<RegistrationView> = self
            .registrar
            .registrations()
            .map(|b| RegistrationView {
                aor: b.aor.clone(),
                identity: b.identity.clone(),
                contact: b.contact.to_string(),
                flow: b.flow.0,
                expires_in_secs: b
                    .expires_at
                    .map(|t| t.saturating_duration_since(now).as_secs())
                    .unwrap_or(0),
            })
            .collect();
        self.metrics.registrations.set(views.len() as i64);
        if let Ok(mut w) = self.state.registrations.write() {
            *w = views;
        }
    }

    fn sweep(&mut self) {
        if self.registrar.sweep(Instant::now().into_std()) > 0 {
            self.publish_registrations();
        }
    }

    // ---------------------------------------------------------------- phone side

    async fn on_phone_event(&mut self, ev: PhoneEvent) {
        match ev {
            PhoneEvent::Opened(_) => {}
            PhoneEvent::Closed(flow) => self.on_flow_closed(flow).await,
            PhoneEvent::Message(m) => {
                if m.message.is_request() {
                    self.on_phone_request(m).await
                } else {
                    self.on_phone_response(m).await
                }
            }
        }
    }

    async fn on_flow_closed(&mut self, flow: FlowId) {
        if self.registrar.remove_flow(flow) > 0 {
            self.publish_registrations();
        }
        // PBX requests waiting for this phone: it will never answer.
        let waiting: Vec<TxnId> = self
            .txns
            .iter()
            .filter_map(|(id, t)| match t {
                Txn::Inbound {
                    flow: f,
                    phone_client: Some(_),
                    ..
                } if *f == flow => Some(*id),
                _ => None,
            })
            .collect();
        for id in waiting {
            self.answer_pbx(id, 480, Some("the phone's connection closed"))
                .await;
        }
    }

    /// Answers a phone request directly on its flow.
    fn reply_phone(&self, m: &PhoneMessage, status: u16, warning: Option<&str>) {
        let resp = match response_to(
            &m.message,
            status,
            Some(&self.to_tag()),
            warning.map(|w| (self.settings.domain.as_str(), w)),
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "cannot build a response to a phone request");
                return;
            }
        };
        self.send_phone(m.flow, &resp);
    }

    fn to_tag(&self) -> String {
        let mut r = [0u8; 8];
        let _ = self.rng.fill(&mut r);
        r.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn send_phone(&self, flow: FlowId, msg: &SipMessage) {
        if let Some(code) = msg.status() {
            self.metrics
                .responses
                .with_label_values(&["phone", &code.to_string()])
                .inc();
        }
        if let Err(e) = self.flows.send(flow, Bytes::from(msg.to_bytes())) {
            tracing::debug!(%flow, error = %e, "message to a phone not queued");
        }
    }

    async fn send_pbx(&self, msg: &SipMessage) -> std::io::Result<()> {
        if let Some(code) = msg.status() {
            self.metrics
                .responses
                .with_label_values(&["pbx", &code.to_string()])
                .inc();
        }
        self.pbx.send(&msg.to_bytes()).await
    }

    fn names_edge(&self, uri: &SipUri) -> bool {
        let host = uri.host.trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case(&self.settings.domain) {
            return true;
        }
        let port_matches = |p: u16| uri.port.is_none_or(|u| u == p);
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                (ip == self.settings.tls_local.ip() && port_matches(self.settings.tls_local.port()))
                    || (ip == self.settings.pbx_local.ip()
                        && port_matches(self.settings.pbx_local.port()))
            }
            Err(_) => false,
        }
    }

    async fn on_phone_request(&mut self, m: PhoneMessage) {
        let method = m.message.method();
        let label = method.map(|m| m.as_str()).unwrap_or("other");
        self.metrics
            .requests
            .with_label_values(&["phone", label])
            .inc();
        if let Err(e) = check_request(&m.message) {
            self.metrics
                .malformed
                .with_label_values(&["phone", e.label()])
                .inc();
            if method != Some(Method::Ack) {
                self.reply_phone(&m, 400, Some(&format!("malformed request: {e}")));
            }
            return;
        }
        let Some(method) = method else {
            self.reply_phone(&m, 501, Some("method not supported by the edge"));
            return;
        };
        match method {
            Method::Ack => return, // ACKs for our non-2xx final responses: absorbed
            Method::Cancel => {
                // Only INVITE can be cancelled and INVITE is not relayed yet (§9.2: 481).
                self.reply_phone(&m, 481, None);
                return;
            }
            Method::Invite => {
                self.reply_phone(&m, 501, Some("calls are not supported by this edge yet"));
                return;
            }
            _ => {}
        }
        if let Err(reason) = self.authorize(&m, method) {
            self.reply_phone(&m, 403, Some(&reason));
            return;
        }
        self.forward_phone_request(m, method).await;
    }

    /// MAC authorization (DESIGN.md): REGISTER by its To user, everything else by its From
    /// user; an in-dialog request may also come from the dialog's other party, so its To user
    /// counts too.
    fn authorize(&self, m: &PhoneMessage, method: Method) -> Result<(), String> {
        let snapshot = self.snapshot();
        let inventory = snapshot.inventory();
        let msg = &m.message;
        let user = if method == Method::Register {
            msg.to_user().ok().flatten()
        } else {
            msg.from_user().ok().flatten()
        };
        let Some(user) = user else {
            self.metrics.denied.with_label_values(&["no_user"]).inc();
            return Err("the request names no SIP user".into());
        };
        if let Identity::Anonymous = *m.identity {
            if !inventory.admits_anonymous_from(m.peer.ip()) {
                self.metrics
                    .denied
                    .with_label_values(&["anonymous_source"])
                    .inc();
                return Err(format!(
                    "anonymous devices are not admitted from {}",
                    m.peer.ip()
                ));
            }
        }
        match inventory.authorize(&m.identity, &user, method.as_str()) {
            Authorization::Allow => Ok(()),
            Authorization::Deny(reason) => {
                let in_dialog = method != Method::Register && msg.to_tag().ok().flatten().is_some();
                if in_dialog {
                    if let Some(to) = msg.to_user().ok().flatten() {
                        if inventory.authorize(&m.identity, &to, method.as_str())
                            == Authorization::Allow
                        {
                            return Ok(());
                        }
                    }
                }
                self.metrics
                    .denied
                    .with_label_values(&[reason.label()])
                    .inc();
                tracing::info!(
                    identity = %m.identity,
                    peer = %m.peer,
                    user = %user,
                    method = method.as_str(),
                    reason = reason.label(),
                    "request refused by MAC authorization"
                );
                Err(reason.text())
            }
        }
    }

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
            "udp",
        )
    }

    async fn forward_phone_request(&mut self, m: PhoneMessage, method: Method) {
        let mut req = m.message.clone();
        let ours = Via::new(
            "UDP",
            &host_of(self.settings.pbx_local.ip()),
            Some(self.settings.pbx_local.port()),
            &self.branch(),
            true,
        );
        let names_edge = |u: &SipUri| self.names_edge(u);
        match forward_request(&mut req, &ours, names_edge) {
            Ok(()) => {}
            Err(MessageError::TooManyHops) => {
                self.reply_phone(&m, 483, None);
                return;
            }
            Err(e) => {
                self.reply_phone(&m, 400, Some(&format!("cannot forward: {e}")));
                return;
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
                self.reply_phone(&m, 400, Some("Contact * is only allowed in REGISTER"));
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
                        m.flow,
                        &a.uri,
                        &aor,
                        &identity,
                        method != Method::Register,
                    );
                    let uri = self.edge_contact(m.flow, id);
                    bindings.push((id, uri.to_string()));
                    // Header params (expires, q, +sip.instance, reg-id) stay; the phone's URI
                    // (address, transport=tls, ob) is hidden behind the token.
                    mapped.push(NameAddr {
                        display_name: a.display_name,
                        uri,
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
            Ok(ContactList::Addrs(_)) => {} // REGISTER without Contact = fetch bindings
            Err(e) => {
                self.reply_phone(&m, 400, Some(&format!("bad Contact: {e}")));
                return;
            }
        }
        let key = match TransactionKey::client_for_request(&req) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "forwarded request has no usable branch (a bug)");
                self.reply_phone(&m, 500, None);
                return;
            }
        };
        let id = self.next_txn;
        self.next_txn += 1;
        let (client, actions) =
            ClientNonInvite::start(req, false, self.settings.timers, Instant::now());
        self.txns.insert(
            id,
            Txn::Outbound {
                client,
                flow: m.flow,
                phone_request: m.message,
                register,
                done: false,
            },
        );
        self.pbx_clients.insert(key, id);
        self.metrics.transactions.set(self.txns.len() as i64);
        self.run_actions(id, Leg::Pbx, actions).await;
    }

    async fn on_phone_response(&mut self, m: PhoneMessage) {
        if let Err(e) = check_response(&m.message) {
            self.metrics
                .malformed
                .with_label_values(&["phone", e.label()])
                .inc();
            return;
        }
        let Ok(key) = TransactionKey::client_for_response(&m.message) else {
            return;
        };
        let Some(&id) = self.phone_clients.get(&key) else {
            tracing::debug!(flow = %m.flow, "phone response matches no transaction: dropped");
            return;
        };
        let actions = match self.txns.get_mut(&id) {
            Some(Txn::Inbound {
                phone_client: Some(c),
                ..
            }) => c.on_response(m.message, Instant::now()),
            _ => return,
        };
        self.run_actions(id, Leg::Phone, actions).await;
    }

    // ---------------------------------------------------------------- PBX side

    async fn on_pbx_message(&mut self, m: SipMessage) {
        if m.is_request() {
            self.on_pbx_request(m).await
        } else {
            self.on_pbx_response(m).await
        }
    }

    async fn on_pbx_response(&mut self, m: SipMessage) {
        if let Err(e) = check_response(&m) {
            self.metrics
                .malformed
                .with_label_values(&["pbx", e.label()])
                .inc();
            return;
        }
        let Ok(key) = TransactionKey::client_for_response(&m) else {
            return;
        };
        let Some(&id) = self.pbx_clients.get(&key) else {
            // An edge is not a stateless proxy: stray responses are never forwarded.
            tracing::debug!("PBX response matches no transaction: dropped");
            return;
        };
        let actions = match self.txns.get_mut(&id) {
            Some(Txn::Outbound { client, .. }) => client.on_response(m, Instant::now()),
            _ => return,
        };
        self.run_actions(id, Leg::Pbx, actions).await;
    }

    async fn reply_pbx_stateless(&self, req: &SipMessage, status: u16, warning: Option<&str>) {
        if let Ok(resp) = response_to(
            req,
            status,
            Some(&self.to_tag()),
            warning.map(|w| (self.settings.domain.as_str(), w)),
        ) {
            let _ = self.send_pbx(&resp).await;
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
                self.reply_pbx_stateless(&m, 400, Some(&format!("malformed request: {e}")))
                    .await;
            }
            return;
        }
        let Ok(key) = TransactionKey::server(&m) else {
            return;
        };
        if let Some(&id) = self.pbx_servers.get(&key) {
            // A retransmission: the server transaction resends its last response (§17.2.2).
            let actions = match self.txns.get_mut(&id) {
                Some(Txn::Inbound { server, .. }) => server.on_request(m, Instant::now()),
                _ => return,
            };
            self.run_actions(id, Leg::Pbx, actions).await;
            return;
        }
        let Some(method) = method else {
            self.reply_pbx_stateless(&m, 501, Some("method not supported by the edge"))
                .await;
            return;
        };
        match method {
            Method::Ack => return,
            Method::Cancel => {
                self.reply_pbx_stateless(&m, 481, None).await;
                return;
            }
            Method::Invite => {
                self.reply_pbx_stateless(&m, 501, Some("calls are not supported by this edge yet"))
                    .await;
                return;
            }
            _ => {}
        }
        // Which phone? The edge Contact's flow token, else the AOR user (static setups).
        let target = match self.target_of(&m) {
            Ok(t) => t,
            Err((status, why)) => {
                self.reply_pbx_stateless(&m, status, Some(why)).await;
                return;
            }
        };
        let (flow, contact) = target;
        let mut req = m.clone();
        let ours = Via::new("TLS", &self.settings.domain, None, &self.branch(), false);
        let names_edge = |u: &SipUri| self.names_edge(u);
        match forward_request(&mut req, &ours, names_edge) {
            Ok(()) => {}
            Err(MessageError::TooManyHops) => {
                self.reply_pbx_stateless(&m, 483, None).await;
                return;
            }
            Err(e) => {
                self.reply_pbx_stateless(&m, 400, Some(&format!("cannot forward: {e}")))
                    .await;
                return;
            }
        }
        if let Err(e) = req.set_request_uri(&contact) {
            self.reply_pbx_stateless(
                &m,
                500,
                Some(&format!("cannot restore the Request-URI: {e}")),
            )
            .await;
            return;
        }
        let Ok(phone_key) = TransactionKey::client_for_request(&req) else {
            return;
        };
        let id = self.next_txn;
        self.next_txn += 1;
        let now = Instant::now();
        let (server, server_actions) =
            ServerNonInvite::start::<Instant>(m.clone(), false, self.settings.timers);
        let (client, client_actions) = ClientNonInvite::start(req, true, self.settings.timers, now);
        self.txns.insert(
            id,
            Txn::Inbound {
                server,
                flow,
                pbx_request: m,
                phone_key: Some(phone_key.clone()),
                phone_client: Some(client),
                server_done: false,
            },
        );
        self.pbx_servers.insert(key, id);
        self.phone_clients.insert(phone_key, id);
        self.metrics.transactions.set(self.txns.len() as i64);
        // The server transaction's only start action is Deliver (to us): nothing to do.
        drop(server_actions);
        self.run_actions(id, Leg::Phone, client_actions).await;
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

    // ---------------------------------------------------------------- actions & timers

    async fn on_timer(&mut self, id: TxnId, leg: Leg, timer: Timer) {
        let now = Instant::now();
        let actions = match (self.txns.get_mut(&id), leg) {
            (Some(Txn::Outbound { client, .. }), Leg::Pbx) => client.on_timer(timer, now),
            (Some(Txn::Inbound { server, .. }), Leg::Pbx) => server.on_timer(timer, now),
            (
                Some(Txn::Inbound {
                    phone_client: Some(c),
                    ..
                }),
                Leg::Phone,
            ) => c.on_timer(timer, now),
            _ => return,
        };
        self.run_actions(id, leg, actions).await;
    }

    fn arm(&mut self, id: TxnId, leg: Leg, timer: Timer, at: Instant) {
        if let Some(k) = self.timer_keys.remove(&(id, leg, timer)) {
            self.timers.try_remove(&k);
        }
        let k = self.timers.insert_at((id, leg, timer), at);
        self.timer_keys.insert((id, leg, timer), k);
    }

    /// Executes state-machine actions. Boxed: delivering a response can answer the other leg,
    /// which runs that leg's actions in turn.
    fn run_actions(
        &mut self,
        id: TxnId,
        leg: Leg,
        actions: Vec<Action<Instant>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            for action in actions {
                match action {
                    Action::Arm(timer, at) => self.arm(id, leg, timer, at),
                    Action::Send(msg) => match leg {
                        Leg::Pbx => {
                            if let Err(e) = self.send_pbx(&msg).await {
                                tracing::warn!(error = %e, "sending to the PBX failed");
                                let more = match self.txns.get_mut(&id) {
                                    Some(Txn::Outbound { client, .. }) => {
                                        client.on_transport_error()
                                    }
                                    Some(Txn::Inbound { server, .. }) => {
                                        server.on_transport_error()
                                    }
                                    None => Vec::new(),
                                };
                                self.run_actions(id, leg, more).await;
                            }
                        }
                        Leg::Phone => {
                            let flow = match self.txns.get(&id) {
                                Some(Txn::Inbound { flow, .. }) => *flow,
                                _ => continue,
                            };
                            if self.flows.send(flow, Bytes::from(msg.to_bytes())).is_err() {
                                let more = match self.txns.get_mut(&id) {
                                    Some(Txn::Inbound {
                                        phone_client: Some(c),
                                        ..
                                    }) => c.on_transport_error(),
                                    _ => Vec::new(),
                                };
                                self.run_actions(id, leg, more).await;
                            }
                        }
                    },
                    Action::Deliver(msg) => self.deliver(id, leg, msg).await,
                    Action::Terminated(why) => self.terminated(id, leg, why).await,
                }
            }
        })
    }

    /// A response arrived on a client transaction (a server transaction's Deliver is the
    /// request itself, handled when it was created).
    async fn deliver(&mut self, id: TxnId, leg: Leg, msg: SipMessage) {
        if msg.is_request() {
            return;
        }
        match leg {
            Leg::Pbx => self.pbx_response_to_phone(id, msg).await,
            Leg::Phone => self.phone_response_to_pbx(id, msg).await,
        }
    }

    async fn pbx_response_to_phone(&mut self, id: TxnId, mut resp: SipMessage) {
        let Some(Txn::Outbound {
            flow,
            phone_request,
            register,
            ..
        }) = self.txns.get(&id)
        else {
            return;
        };
        let Some(status) = resp.status() else { return };
        // 100 Trying is hop-by-hop (RFC 3261 §16.7 step 5 keeps it on its leg).
        if status == 100 {
            return;
        }
        let flow = *flow;
        let vias = phone_request.vias().unwrap_or_default();
        if let Some(reg) = register {
            if (200..300).contains(&status) {
                self.apply_register_ok(&mut resp, id);
            } else if status == 401 || status == 407 {
                let ids: Vec<u64> = reg.bindings.iter().map(|(b, _)| *b).collect();
                let until = Instant::now().into_std() + Duration::from_secs(60);
                self.registrar.hold_pending(&ids, until);
            } else if status >= 300 {
                let ids: Vec<u64> = reg.bindings.iter().map(|(b, _)| *b).collect();
                self.registrar.drop_pending(&ids);
            }
        }
        restore_vias(&mut resp, &vias);
        self.send_phone(flow, &resp);
    }

    /// A 2xx to a relayed REGISTER: confirm our bindings with the expiry the PBX granted and
    /// show the phone its own Contacts again (RFC 3261 §10.3 step 8).
    fn apply_register_ok(&mut self, resp: &mut SipMessage, id: TxnId) {
        let Some(Txn::Outbound {
            register: Some(reg),
            ..
        }) = self.txns.get(&id)
        else {
            return;
        };
        let now = Instant::now().into_std();
        let default_expires = resp.expires().ok().flatten().unwrap_or(3600);
        let listed = match resp.contacts() {
            Ok(ContactList::Addrs(a)) => a,
            _ => Vec::new(),
        };
        let ours: Vec<(u64, String)> = reg.bindings.clone();
        if reg.wildcard {
            let aor = reg.aor.clone();
            self.registrar.remove_aor(&aor);
        }
        let mut out = Vec::with_capacity(listed.len());
        let mut confirmed = Vec::new();
        for mut c in listed {
            let user = c.uri.user().unwrap_or_default().to_owned();
            if let Ok(token) = FlowToken::decode(&user, &self.token_key) {
                match self.registrar.get(token.binding).map(|b| b.contact.clone()) {
                    Some(original) => {
                        if ours.iter().any(|(b, _)| *b == token.binding) {
                            let expires = c.expires().unwrap_or(default_expires);
                            self.registrar.confirm(token.binding, expires, now);
                            confirmed.push(token.binding);
                        }
                        c.uri = original;
                        out.push(c);
                    }
                    // A binding of a flow that is gone: the PBX will expire it.
                    None => continue,
                }
            } else {
                out.push(c);
            }
        }
        for (b, _) in &ours {
            if !confirmed.contains(b) {
                self.registrar.release(*b);
            }
        }
        if !out.is_empty() {
            resp.set_contacts(&out);
        }
        self.publish_registrations();
    }

    async fn phone_response_to_pbx(&mut self, id: TxnId, mut resp: SipMessage) {
        let Some(status) = resp.status() else { return };
        if status == 100 {
            return;
        }
        let vias = match self.txns.get(&id) {
            Some(Txn::Inbound { pbx_request, .. }) => pbx_request.vias().unwrap_or_default(),
            _ => return,
        };
        restore_vias(&mut resp, &vias);
        let actions = match self.txns.get_mut(&id) {
            Some(Txn::Inbound { server, .. }) => server.send_response(resp, Instant::now()),
            _ => return,
        };
        self.run_actions(id, Leg::Pbx, actions).await;
    }

    /// Answers the PBX on an inbound transaction (the phone cannot).
    async fn answer_pbx(&mut self, id: TxnId, status: u16, warning: Option<&str>) {
        let resp = match self.txns.get_mut(&id) {
            Some(Txn::Inbound {
                pbx_request,
                phone_client,
                phone_key,
                ..
            }) => {
                *phone_client = None;
                if let Some(k) = phone_key.take() {
                    self.phone_clients.remove(&k);
                }
                response_to(
                    pbx_request,
                    status,
                    None,
                    warning.map(|w| (self.settings.domain.as_str(), w)),
                )
            }
            _ => return,
        };
        let Ok(mut resp) = resp else { return };
        let tag = self.to_tag();
        let _ = resp.set_to_tag(&tag);
        let actions = match self.txns.get_mut(&id) {
            Some(Txn::Inbound { server, .. }) => server.send_response(resp, Instant::now()),
            _ => return,
        };
        self.run_actions(id, Leg::Pbx, actions).await;
        self.maybe_remove(id);
    }

    async fn terminated(&mut self, id: TxnId, leg: Leg, why: Termination) {
        match (leg, self.txns.get_mut(&id)) {
            (
                Leg::Pbx,
                Some(Txn::Outbound {
                    done,
                    flow,
                    phone_request,
                    register,
                    ..
                }),
            ) => {
                let was_done = *done;
                *done = true;
                let flow = *flow;
                let request = phone_request.clone();
                if why != Termination::Completed {
                    if let Some(reg) = register.as_ref() {
                        let ids: Vec<u64> = reg.bindings.iter().map(|(b, _)| *b).collect();
                        self.registrar.drop_pending(&ids);
                    }
                }
                if !was_done {
                    if let Termination::Timeout(_) | Termination::TransportError = why {
                        self.metrics.timeouts.with_label_values(&["pbx"]).inc();
                        let status = if why == Termination::TransportError {
                            503
                        } else {
                            408
                        };
                        let m = PhoneMessage {
                            flow,
                            identity: Arc::new(Identity::Anonymous),
                            peer: self.settings.tls_local,
                            message: request,
                        };
                        self.reply_phone(&m, status, Some("the PBX did not answer"));
                    }
                }
            }
            (Leg::Pbx, Some(Txn::Inbound { server_done, .. })) => {
                *server_done = true;
            }
            (Leg::Phone, Some(Txn::Inbound { phone_client, .. })) => {
                let unanswered = phone_client.take().is_some();
                if unanswered && why != Termination::Completed {
                    self.metrics.timeouts.with_label_values(&["phone"]).inc();
                    let status = if why == Termination::TransportError {
                        480
                    } else {
                        408
                    };
                    self.answer_pbx(id, status, Some("the phone did not answer"))
                        .await;
                }
            }
            _ => {}
        }
        self.maybe_remove(id);
    }

    fn maybe_remove(&mut self, id: TxnId) {
        let finished = match self.txns.get(&id) {
            Some(Txn::Outbound { client, done, .. }) => {
                *done && client.state() == crate::transaction::fsm::ClientNonInviteState::Terminated
            }
            Some(Txn::Inbound {
                server_done,
                phone_client,
                ..
            }) => *server_done && phone_client.is_none(),
            None => false,
        };
        if !finished {
            return;
        }
        if let Some(t) = self.txns.remove(&id) {
            match t {
                Txn::Outbound { .. } => self.pbx_clients.retain(|_, v| *v != id),
                Txn::Inbound { phone_key, .. } => {
                    self.pbx_servers.retain(|_, v| *v != id);
                    if let Some(k) = phone_key {
                        self.phone_clients.remove(&k);
                    }
                }
            }
        }
        for leg in [Leg::Pbx, Leg::Phone] {
            for timer in [
                Timer::A,
                Timer::B,
                Timer::D,
                Timer::E,
                Timer::F,
                Timer::G,
                Timer::H,
                Timer::I,
                Timer::J,
                Timer::K,
                Timer::L,
                Timer::M,
            ] {
                if let Some(k) = self.timer_keys.remove(&(id, leg, timer)) {
                    self.timers.try_remove(&k);
                }
            }
        }
        self.metrics.transactions.set(self.txns.len() as i64);
    }
}

/// The headers every request must carry, parsed (RFC 3261 §8.1.1): Via, From, To, Call-ID and
/// a CSeq whose method is the request's. A request failing this is answered 400, never
/// forwarded.
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
