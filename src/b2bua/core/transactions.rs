//! The core's transaction layer. It owns every relayed transaction: the table, the index that
//! matches messages to transactions, the timers (one `DelayQueue`), and the edge's own 2xx
//! repetition toward a UDP PBX (RFC 3261 §13.3.1.4).
//!
//! It runs the RFC 3261 §17 state machines of `transaction::fsm` and arms their timers
//! itself. Everything else they ask for comes back to the core as [`TxnEvent`]s: put a
//! message on a leg, relay a response, a leg ended. The layer never sends anything and
//! never calls back into the core (quinn's sans-IO shape, STYLE.md §2).

use super::Leg;
use crate::sip::message::{Method, SipMessage};
use crate::transaction::fsm::{
    Action, ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite, Termination, Timer,
    TimerConfig, Transaction,
};
use crate::transaction::key::TransactionKey;
use crate::transport::flow::FlowId;
use prometheus::IntGauge;
use std::collections::HashMap;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::time::{delay_queue, DelayQueue};

pub(super) type TxnId = u64;

/// Every timer a leg can arm (to drop them all when a transaction goes).
const ALL_TIMERS: [Timer; 12] = [
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
];

/// What a transaction asks the core to do.
#[derive(Debug)]
pub(super) enum TxnEvent {
    /// Put `msg` on `leg` (on the phone leg: the transaction's flow). A failed send goes back
    /// through [`Transactions::transport_error`].
    Send {
        id: TxnId,
        leg: Leg,
        msg: SipMessage,
    },
    /// The edge's own 2xx to the PBX, repeated until its ACK; a failed send is ignored (the
    /// next repetition tries again).
    Repeat2xx(SipMessage),
    /// A response arrived on `leg`'s client transaction: relay it to the other leg.
    Response {
        id: TxnId,
        leg: Leg,
        msg: SipMessage,
    },
    /// `leg`'s state machine is over.
    Terminated {
        id: TxnId,
        leg: Leg,
        why: Termination,
    },
}

#[derive(Debug)]
pub(super) struct RegisterCtx {
    pub(super) aor: String,
    /// Binding ids of the Contacts in the REGISTER.
    pub(super) bindings: Vec<u64>,
    pub(super) wildcard: bool,
}

/// Our 2xx to an INVITE from the PBX over UDP, repeated until its ACK (RFC 3261 §13.3.1.4).
#[derive(Debug)]
struct Retx2xx {
    msg: SipMessage,
    interval: Duration,
    deadline: Instant,
}

/// One relayed request: a state machine per leg.
#[derive(Debug)]
pub(super) struct Txn {
    /// The leg the request came from (`None`: the edge itself originated it).
    pub(super) from: Option<Leg>,
    pub(super) method: Method,
    pub(super) flow: FlowId,
    pub(super) call_id: String,
    /// The request as received (its Vias go back on responses).
    pub(super) received: SipMessage,
    /// The request as sent on the other leg (for CANCEL).
    pub(super) forwarded: Option<SipMessage>,
    pbx: Option<Transaction>,
    phone: Option<Transaction>,
    pub(super) register: Option<RegisterCtx>,
    /// The originating side has its final response.
    pub(super) answered: bool,
    keys: Vec<(Leg, TransactionKey)>,
    retx: Option<Retx2xx>,
}

impl Txn {
    fn leg_mut(&mut self, leg: Leg) -> Option<&mut Transaction> {
        match leg {
            Leg::Pbx => self.pbx.as_mut(),
            Leg::Phone => self.phone.as_mut(),
        }
    }

    /// Waits for a final response on some leg (a graceful shutdown waits for it).
    fn in_flight(&self) -> bool {
        !self.answered
            || [&self.pbx, &self.phone]
                .into_iter()
                .flatten()
                .any(Transaction::awaits_final_response)
    }
}

/// The transaction table and its timers.
pub(super) struct Transactions {
    timer_config: TimerConfig,
    /// Whether the PBX leg is TCP: no retransmission timers there (RFC 3261 §17.1.1.2).
    pbx_reliable: bool,
    txns: HashMap<TxnId, Txn>,
    index: HashMap<(Leg, TransactionKey), TxnId>,
    timers: DelayQueue<(TxnId, Leg, Timer)>,
    timer_keys: HashMap<(TxnId, Leg, Timer), delay_queue::Key>,
    next_txn: TxnId,
    /// `pbx_edge_sip_transactions_active`.
    gauge: IntGauge,
}

impl Transactions {
    pub(super) fn new(timer_config: TimerConfig, pbx_reliable: bool, gauge: IntGauge) -> Self {
        Self {
            timer_config,
            pbx_reliable,
            txns: HashMap::new(),
            index: HashMap::new(),
            timers: DelayQueue::new(),
            timer_keys: HashMap::new(),
            next_txn: 1,
            gauge,
        }
    }

    fn reliable(&self, leg: Leg) -> bool {
        leg == Leg::Phone || self.pbx_reliable
    }

    pub(super) fn get(&self, id: TxnId) -> Option<&Txn> {
        self.txns.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: TxnId) -> Option<&mut Txn> {
        self.txns.get_mut(&id)
    }

    /// The transaction a message on `leg` with `key` belongs to.
    pub(super) fn matching(&self, leg: Leg, key: &TransactionKey) -> Option<TxnId> {
        self.index.get(&(leg, key.clone())).copied()
    }

    /// Transactions whose request has no final response yet, on either leg. Those that only
    /// absorb retransmissions (Timers D/I/J/K, RFC 6026 Timers L/M) are not counted.
    /// O(transactions): asked every 50 ms during a shutdown only.
    /// Whether `leg` of `id` is over (or `id` gone): a message for it matches nothing live.
    pub(super) fn leg_over(&self, id: TxnId, leg: Leg) -> bool {
        self.txns.get(&id).is_none_or(|t| match leg {
            Leg::Pbx => t.pbx.is_none(),
            Leg::Phone => t.phone.is_none(),
        })
    }

    pub(super) fn in_flight(&self) -> usize {
        self.txns.values().filter(|t| t.in_flight()).count()
    }

    /// Requests from the PBX still waiting for the phone on `flow`.
    pub(super) fn waiting_on_phone(&self, flow: FlowId) -> Vec<TxnId> {
        self.txns
            .iter()
            .filter(|(_, t)| t.flow == flow && t.from == Some(Leg::Pbx) && !t.answered)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Starts a relayed transaction: the server side on `from`, the client side on the other
    /// leg with `forwarded`. Nothing happens for a request without a method or keys.
    pub(super) fn start(
        &mut self,
        from: Leg,
        received: SipMessage,
        forwarded: SipMessage,
        flow: FlowId,
        register: Option<RegisterCtx>,
    ) -> Vec<TxnEvent> {
        let now = Instant::now();
        let timers = self.timer_config;
        let Some(method) = received.method() else {
            return Vec::new();
        };
        let (Ok(server_key), Ok(client_key)) = (
            TransactionKey::server(&received),
            TransactionKey::client_for_request(&forwarded),
        ) else {
            return Vec::new();
        };
        let invite = method == Method::Invite;
        let to = from.other();
        let (server, server_actions) = if invite {
            match ServerInvite::start::<Instant>(received.clone(), self.reliable(from), timers) {
                Ok((t, a)) => (Transaction::ServerInvite(Box::new(t)), a),
                Err(_) => return Vec::new(),
            }
        } else {
            let (t, a) =
                ServerNonInvite::start::<Instant>(received.clone(), self.reliable(from), timers);
            (Transaction::ServerNonInvite(Box::new(t)), a)
        };
        let (client, client_actions) = if invite {
            let (t, a) = ClientInvite::start(forwarded.clone(), self.reliable(to), timers, now);
            (Transaction::ClientInvite(Box::new(t)), a)
        } else {
            let (t, a) = ClientNonInvite::start(forwarded.clone(), self.reliable(to), timers, now);
            (Transaction::ClientNonInvite(Box::new(t)), a)
        };
        let (pbx, phone) = match from {
            Leg::Phone => (client, server),
            Leg::Pbx => (server, client),
        };
        let id = self.insert(Txn {
            from: Some(from),
            method,
            flow,
            call_id: received.call_id().unwrap_or_default().to_owned(),
            received,
            forwarded: Some(forwarded),
            pbx: Some(pbx),
            phone: Some(phone),
            register,
            answered: false,
            keys: vec![(from, server_key), (to, client_key)],
            retx: None,
        });
        // Relayed transactions update the gauge when they start; the edge's own requests
        // show from the next removal on.
        self.gauge.set(self.txns.len() as i64);
        // The server's Deliver is the request itself (the core has it); its 100 Trying goes
        // out.
        let server_actions: Vec<_> = server_actions
            .into_iter()
            .filter(|a| !matches!(a, Action::Deliver(_)))
            .collect();
        let mut events = self.events(id, from, server_actions);
        events.extend(self.events(id, to, client_actions));
        events
    }

    /// A request the edge itself sends (CANCEL, BYE): a client transaction on `leg` whose
    /// responses end there.
    pub(super) fn start_edge_request(
        &mut self,
        leg: Leg,
        req: SipMessage,
        flow: FlowId,
    ) -> Vec<TxnEvent> {
        let Ok(key) = TransactionKey::client_for_request(&req) else {
            return Vec::new();
        };
        let Some(method) = req.method() else {
            return Vec::new();
        };
        let (t, actions) = ClientNonInvite::start(
            req.clone(),
            self.reliable(leg),
            self.timer_config,
            Instant::now(),
        );
        let client = Some(Transaction::ClientNonInvite(Box::new(t)));
        let (pbx, phone) = match leg {
            Leg::Pbx => (client, None),
            Leg::Phone => (None, client),
        };
        let id = self.insert(Txn {
            from: None,
            method,
            flow,
            call_id: req.call_id().unwrap_or_default().to_owned(),
            received: req,
            forwarded: None,
            pbx,
            phone,
            register: None,
            answered: true,
            keys: vec![(leg, key)],
            retx: None,
        });
        self.events(id, leg, actions)
    }

    fn insert(&mut self, txn: Txn) -> TxnId {
        let id = self.next_txn;
        self.next_txn += 1;
        for k in &txn.keys {
            self.index.insert(k.clone(), id);
        }
        self.txns.insert(id, txn);
        id
    }

    /// A message matched to `id` on `leg`: a retransmitted request (or the ACK of a non-2xx
    /// final response, §17.2.1) for the server transaction, a response for the client one.
    pub(super) fn on_message(&mut self, id: TxnId, leg: Leg, msg: SipMessage) -> Vec<TxnEvent> {
        let now = Instant::now();
        let actions = match self.txns.get_mut(&id).and_then(|t| t.leg_mut(leg)) {
            Some(t) if msg.is_request() => t.on_request(msg, now),
            Some(t) => t.on_response(msg, now),
            None => return Vec::new(),
        };
        self.events(id, leg, actions)
    }

    /// Sends `resp` through `leg`'s server transaction; `None` when that leg is over.
    pub(super) fn send_response(
        &mut self,
        id: TxnId,
        leg: Leg,
        resp: SipMessage,
    ) -> Option<Vec<TxnEvent>> {
        let now = Instant::now();
        let actions = self
            .txns
            .get_mut(&id)
            .and_then(|t| t.leg_mut(leg))?
            .send_response(resp, now);
        Some(self.events(id, leg, actions))
    }

    /// A message of `leg` could not be sent (RFC 3261 §17.1.4, §17.2.4).
    pub(super) fn transport_error(&mut self, id: TxnId, leg: Leg) -> Vec<TxnEvent> {
        let actions = match self.txns.get_mut(&id).and_then(|t| t.leg_mut(leg)) {
            Some(t) => t.on_transport_error(),
            None => Vec::new(),
        };
        self.events(id, leg, actions)
    }

    /// The next expired timer; pending while none is armed.
    pub(super) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<(TxnId, Leg, Timer)> {
        if self.timers.is_empty() {
            return Poll::Pending;
        }
        match self.timers.poll_expired(cx) {
            Poll::Ready(Some(expired)) => {
                let key = expired.into_inner();
                self.timer_keys.remove(&key);
                Poll::Ready(key)
            }
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    /// A timer fired. Timer G of the PBX leg also paces the edge's own 2xx repetition.
    pub(super) fn on_timer(&mut self, id: TxnId, leg: Leg, timer: Timer) -> Vec<TxnEvent> {
        let now = Instant::now();
        if leg == Leg::Pbx && timer == Timer::G {
            let t2 = self.timer_config.t2;
            let resend = match self.txns.get_mut(&id).and_then(|t| t.retx.as_mut()) {
                Some(r) if now < r.deadline => {
                    r.interval = (r.interval * 2).min(t2);
                    Some((r.msg.clone(), now + r.interval))
                }
                Some(_) => {
                    if let Some(t) = self.txns.get_mut(&id) {
                        t.retx = None;
                    }
                    None
                }
                None => None,
            };
            if let Some((msg, next)) = resend {
                self.arm(id, leg, Timer::G, next);
                return vec![TxnEvent::Repeat2xx(msg)];
            }
        }
        let actions = match self.txns.get_mut(&id).and_then(|t| t.leg_mut(leg)) {
            Some(t) => t.on_timer(timer, now),
            None => return Vec::new(),
        };
        self.events(id, leg, actions)
    }

    /// Repeats `ok`, the 2xx the edge relayed to the PBX's INVITE `id` over UDP, until its ACK
    /// or 64·T1 (RFC 3261 §13.3.1.4).
    pub(super) fn repeat_2xx(&mut self, id: TxnId, ok: SipMessage) {
        let t1 = self.timer_config.t1;
        let now = Instant::now();
        let deadline = now + self.timer_config.timeout();
        if let Some(t) = self.txns.get_mut(&id) {
            t.retx = Some(Retx2xx {
                msg: ok,
                interval: t1,
                deadline,
            });
        }
        self.arm(id, Leg::Pbx, Timer::G, now + t1);
    }

    /// The PBX ACKed the 2xx of the INVITE with `cseq` in `call_id`: stop repeating it.
    pub(super) fn acked_2xx(&mut self, call_id: &str, cseq: u32) {
        for t in self.txns.values_mut() {
            if t.call_id == call_id
                && t.method == Method::Invite
                && t.received.cseq().map(|c| c.seq).unwrap_or(0) == cseq
            {
                t.retx = None;
            }
        }
    }

    /// `leg`'s state machine is over: drop it.
    pub(super) fn end_leg(&mut self, id: TxnId, leg: Leg) {
        if let Some(t) = self.txns.get_mut(&id) {
            match leg {
                Leg::Pbx => t.pbx = None,
                Leg::Phone => t.phone = None,
            }
        }
    }

    /// Removes `id` with its keys and timers once both legs and the 2xx repetition are over.
    pub(super) fn remove_if_finished(&mut self, id: TxnId) {
        let finished = self
            .txns
            .get(&id)
            .is_some_and(|t| t.pbx.is_none() && t.phone.is_none() && t.retx.is_none());
        if !finished {
            return;
        }
        if let Some(t) = self.txns.remove(&id) {
            for k in t.keys {
                self.index.remove(&k);
            }
        }
        for leg in [Leg::Pbx, Leg::Phone] {
            for timer in ALL_TIMERS {
                if let Some(k) = self.timer_keys.remove(&(id, leg, timer)) {
                    self.timers.try_remove(&k);
                }
            }
        }
        self.gauge.set(self.txns.len() as i64);
    }

    fn arm(&mut self, id: TxnId, leg: Leg, timer: Timer, at: Instant) {
        if let Some(k) = self.timer_keys.remove(&(id, leg, timer)) {
            self.timers.try_remove(&k);
        }
        let k = self.timers.insert_at((id, leg, timer), at);
        self.timer_keys.insert((id, leg, timer), k);
    }

    /// Arms the timers the actions ask for; the rest becomes events, in order. A request
    /// delivered by a server transaction is not an event: the core started it with that
    /// request.
    fn events(&mut self, id: TxnId, leg: Leg, actions: Vec<Action<Instant>>) -> Vec<TxnEvent> {
        let mut events = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                Action::Arm(timer, at) => self.arm(id, leg, timer, at),
                Action::Send(msg) => events.push(TxnEvent::Send { id, leg, msg }),
                Action::Deliver(msg) if !msg.is_request() => {
                    events.push(TxnEvent::Response { id, leg, msg })
                }
                Action::Deliver(_) => {}
                Action::Terminated(why) => events.push(TxnEvent::Terminated { id, leg, why }),
            }
        }
        events
    }
}
