//! The admin API's views of the core ([`CoreViews`]): registrations, calls, the work a
//! graceful shutdown waits for, and the drain's "end every call". Built by the core task only
//! when asked, between two events, from the state the other files own.

use super::dialog::CallEnd;
use super::SipCore;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

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
    /// Per stream: loss, jitter and estimated MOS of each direction, from the relay's own
    /// view of the RTP sequence numbers and arrival times.
    pub quality: Vec<crate::b2bua::call::StreamQuality>,
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
    pub(super) requests: mpsc::Receiver<ViewRequest>,
}

#[derive(Debug)]
pub(super) enum ViewRequest {
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

impl SipCore {
    pub(super) async fn answer_view(&mut self, request: ViewRequest) {
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
    pub(super) fn in_flight(&self) -> InFlight {
        let transactions = self.txns.in_flight();
        InFlight {
            transactions,
            calls: self.dialogs.len(),
        }
    }

    pub(super) fn registration_views(&self) -> Vec<RegistrationView> {
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

    pub(super) fn call_views(&self) -> Vec<CallView> {
        let now = Instant::now();
        self.dialogs
            .iter()
            .map(|(id, d)| {
                let (up, down) = d.media.counters();
                CallView {
                    call_id: id.clone(),
                    direction: d.direction(),
                    identity: d.identity.clone(),
                    flow: d.flow.0,
                    established: d.established,
                    age_secs: now.saturating_duration_since(d.created).as_secs(),
                    srtp_suite: d.srtp_suite(),
                    streams: d.media.stream_ids().len(),
                    packets_phone_to_pbx: up,
                    packets_pbx_to_phone: down,
                    quality: d.media.quality(),
                    codecs: d.codecs.clone(),
                    phone_contact: d.phone_contact.as_ref().map(ToString::to_string),
                    pbx_contact: d.pbx_contact.as_ref().map(ToString::to_string),
                }
            })
            .collect()
    }
}
