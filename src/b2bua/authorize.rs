//! PURE: the one place that decides whether a request from a phone may reach the PBX, and as
//! whom. The SIP core asks [`authorize`] for every request a phone sends (after the framing
//! and required-header checks, before anything is forwarded) and only applies the
//! [`Verdict`]: forward, or reply with the [`Refusal`], count it and log it.
//!
//! The promise: a request reaches the PBX only as a SIP user the device holding the
//! certificate may be, and only while that device is allowed at all. The rules, in order:
//!
//! 1. **Single-valued headers appear once** ([`repeated_header`]). RFC 3261 §7.3.1 allows a
//!    header to repeat only when its grammar is a comma list; From, To, Call-ID, CSeq, ... are
//!    not (§20). Two From headers make the identity ambiguous (the edge would authorize one,
//!    the PBX might believe the other): 400, counted `malformed{reason="repeated_header"}`,
//!    never forwarded. The SIP core applies the same check to every message from the PBX.
//! 2. **The device is still in the inventory** (a reload may have removed it after it
//!    connected): otherwise 403, in-dialog requests included (BYE excepted: it only ends
//!    the device's own call). **Anonymous phones** only from `anonymous.networks`.
//! 3. **In-dialog requests** (a To tag, RFC 3261 §12.2; REGISTER never is, §10.2): allowed
//!    only when the edge knows that dialog (Call-ID and both tags: an INVITE dialog, or a
//!    subscription dialog created by a 2xx to SUBSCRIBE/REFER or by a NOTIFY, RFC 6665 §4.1)
//!    and it belongs to this device: the same connection, or the same device certificate
//!    after a reconnect. Otherwise 481 (§12.2.2), never a fallback to the To user: the To
//!    user of an in-dialog request is the remote party, whom anybody can name.
//! 4. **Out-of-dialog requests** are authorized by the From user (RFC 3261 §8.1.1.3: the
//!    initiator); REGISTER by the To user (the address-of-record, §10.2) **and** the From user
//!    (the one responsible for the registration, §10.2): third-party registration is refused
//!    unless the device may use both. A new request on the Call-ID of another device's call
//!    is refused 481 as well.
//! 5. **Replaces** (RFC 3891), in an INVITE or inside a Refer-To URI (RFC 3891 §7.1): one that
//!    names an *established* call of another device is refused 403 — at the PBX it would take
//!    that call over. Replaces naming the device's own calls (attended transfer), a ringing
//!    call (directed pickup, where the PBX's pickup groups decide) or a dialog the edge does
//!    not relay pass.
//!
//! What happens to the identity headers of an allowed request is [`rewrite_identity_headers`].

use std::borrow::Cow;

use crate::config::IdentityHeaders;
use crate::identity::{Authorization, Identity, Inventory};
use crate::sip::message::{Method, SipMessage};
use crate::sip::uri::{split_top_level, NameAddr, SipUri};
use crate::transport::flow::FlowId;

use super::refusal::Refusal;

/// Headers whose grammar allows one value (RFC 3261 §7.3.1, §20 and the extension RFCs
/// named), and whether a top-level comma in a line would start a second value. A message
/// carrying one of them twice is refused 400 (phones) or dropped (PBX).
pub const SINGLE_VALUED: &[(&str, bool)] = &[
    ("From", true),               // RFC 3261 §20.20
    ("To", true),                 // §20.39
    ("Call-ID", true),            // §20.8
    ("CSeq", true),               // §20.16
    ("Max-Forwards", true),       // §20.22
    ("Content-Length", true),     // §20.14
    ("Content-Type", true),       // §20.15
    ("Expires", true),            // §20.19
    ("Min-Expires", true),        // §20.23
    ("MIME-Version", true),       // §20.24
    ("Event", true),              // RFC 6665 §8.2.1
    ("Subscription-State", true), // RFC 6665 §8.2.3
    ("Refer-To", true),           // RFC 3515 §2.4.1: exactly one
    ("Referred-By", true),        // RFC 3892 §3
    ("Replaces", true),           // RFC 3891 §3: more than one is a 400
    ("RSeq", true),               // RFC 3262 §7.1
    ("RAck", true),               // RFC 3262 §7.2
    ("Session-Expires", true),    // RFC 4028 §4
    ("Min-SE", true),             // RFC 4028 §5
];

/// The first header of [`SINGLE_VALUED`] that `msg` carries more than once (counting compact
/// forms and comma-joined values), as a refusal: 400, `malformed{reason="repeated_header"}`.
pub fn repeated_header(msg: &SipMessage) -> Result<(), Refusal> {
    match SINGLE_VALUED
        .iter()
        .find(|(name, commas)| msg.header_occurrences(name, *commas) > 1)
    {
        None => Ok(()),
        Some((name, _)) => Err(Refusal::malformed(
            "repeated_header",
            format!("{name} must appear once (RFC 3261 section 7.3.1)"),
        )),
    }
}

/// A request from a phone, with what the edge knows of its sender.
#[derive(Debug, Clone, Copy)]
pub struct PhoneRequest<'a> {
    /// The request as received (required headers already checked).
    pub message: &'a SipMessage,
    /// Its method.
    pub method: Method,
    /// The identity of its TLS connection.
    pub identity: &'a Identity,
    /// The phone's address (anonymous phones are admitted by network).
    pub peer: std::net::IpAddr,
    /// Its connection.
    pub flow: FlowId,
}

/// Who a dialog the edge relays belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialogOwner<'a> {
    /// The connection it was set up on.
    pub flow: FlowId,
    /// The identity of that connection, as displayed (`snom device 00:04:13:...`).
    pub identity: &'a str,
    /// An answered INVITE dialog (a call in progress, not ringing).
    pub established: bool,
}

impl DialogOwner<'_> {
    /// The existing ownership rule: the same connection, or — after a reconnect — the same
    /// device certificate. A shared certificate or an anonymous phone owns only what its own
    /// connection set up (another unit of the same model has the same "identity").
    pub fn belongs_to(&self, flow: FlowId, identity: &Identity) -> bool {
        self.flow == flow
            || (matches!(identity, Identity::Device { .. })
                && self.identity == identity.to_string())
    }
}

/// The dialogs the edge relays, as the authorization needs to see them.
pub trait KnownDialogs {
    /// The dialog with this Call-ID whose two tags are `tag_a` and `tag_b`, in either order
    /// (the phone's request carries its own tag in From; a Replaces header names them from
    /// either side).
    fn dialog(&self, call_id: &str, tag_a: &str, tag_b: &str) -> Option<DialogOwner<'_>>;
    /// A call (INVITE dialog, any tags) using this Call-ID.
    fn call(&self, call_id: &str) -> Option<DialogOwner<'_>>;
}

/// Whether a request whose tags are `tag_a`/`tag_b` (either order) is in the call whose
/// initial INVITE carried the caller tag `caller` and whose 2xx carried the callee tag
/// `callee`. Before the 2xx the callee's tag is not settled (forking gives each early dialog
/// its own, RFC 3261 §12.1): then the caller's tag must be one of the two. A caller tag that
/// is missing matches nothing.
pub fn call_tags_match(
    caller: Option<&str>,
    callee: Option<&str>,
    tag_a: &str,
    tag_b: &str,
) -> bool {
    match (caller, callee) {
        (Some(c), Some(e)) => (tag_a == c && tag_b == e) || (tag_a == e && tag_b == c),
        (Some(c), None) => tag_a == c || tag_b == c,
        (None, _) => false,
    }
}

/// The outcome of [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it, with these facts.
    Allow(Allowed),
    /// Answer (ACK: drop) with this, count it, forward nothing.
    Refuse(Refusal),
}

/// What the edge established about an allowed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The SIP user the request is sent as, when the device may use it: the From user
    /// (REGISTER: the To user). For an in-dialog request whose From user the device may not
    /// use (it is the callee of a call addressed to a group or queue number) `None`: the
    /// dialog authorizes it, and no identity is asserted.
    pub user: Option<String>,
    /// Whether it was authorized as part of a known dialog.
    pub in_dialog: bool,
    /// A Referred-By naming a user this device may not use (removed before forwarding).
    pub foreign_referred_by: bool,
}

/// Decides a phone request; see the module documentation for the rules.
pub fn authorize(
    req: &PhoneRequest<'_>,
    inventory: &Inventory,
    dialogs: &impl KnownDialogs,
) -> Verdict {
    match decide(req, inventory, dialogs) {
        Ok(allowed) => Verdict::Allow(allowed),
        Err(refusal) => Verdict::Refuse(refusal),
    }
}

fn decide(
    req: &PhoneRequest<'_>,
    inventory: &Inventory,
    dialogs: &impl KnownDialogs,
) -> Result<Allowed, Refusal> {
    let msg = req.message;
    repeated_header(msg)?;
    if matches!(req.identity, Identity::Anonymous) && !inventory.admits_anonymous_from(req.peer) {
        return Err(Refusal::forbidden(
            "anonymous_source",
            format!("anonymous devices are not admitted from {}", req.peer),
        ));
    }
    // "Only while that device is allowed at all": a device removed from the inventory by a
    // reload loses its dialogs too, not only new requests — except BYE, which only ends its
    // own call and frees its media ports.
    if let (Identity::Device { vendor, mac }, false) = (req.identity, req.method == Method::Bye) {
        if inventory.device(mac).is_none() && inventory.vendor_users(vendor).is_none() {
            let reason = crate::identity::DenyReason::UnknownDevice { mac: *mac };
            return Err(Refusal::forbidden(reason.label(), reason.text()));
        }
    }
    let bad = |what: &'static str| Refusal::malformed("bad_header", format!("bad {what} header"));
    let call_id = msg.call_id().map_err(|_| bad("Call-ID"))?;
    let from = msg.from().map_err(|_| bad("From"))?;
    let to = msg.to().map_err(|_| bad("To"))?;
    let allowed = |user: &str| {
        inventory.authorize(req.identity, user, req.method.as_str()) == Authorization::Allow
    };
    let user_of = |a: &NameAddr| a.uri.user().map(str::to_owned);

    let mut verdict = match to.tag() {
        Some(to_tag) if req.method != Method::Register => {
            let from_tag = from.tag().unwrap_or("");
            match dialogs.dialog(call_id, from_tag, to_tag) {
                None => {
                    return Err(Refusal::no_dialog(
                        "unknown_dialog",
                        "no such dialog on this edge",
                    ))
                }
                Some(owner) if !owner.belongs_to(req.flow, req.identity) => {
                    return Err(foreign_dialog());
                }
                Some(_) => Allowed {
                    user: user_of(&from).filter(|u| allowed(u)),
                    in_dialog: true,
                    foreign_referred_by: false,
                },
            }
        }
        _ => out_of_dialog(req, inventory, dialogs, call_id, &from, &to)?,
    };

    for (call, tag_a, tag_b) in replaced_dialogs(msg)? {
        if let Some(owner) = dialogs.dialog(&call, &tag_a, &tag_b) {
            if owner.established && !owner.belongs_to(req.flow, req.identity) {
                return Err(Refusal::forbidden(
                    "replaces_foreign_call",
                    "Replaces names another device's call",
                ));
            }
        }
    }

    if let Some(referred_by) = msg.header("Referred-By") {
        verdict.foreign_referred_by = !NameAddr::parse(referred_by)
            .ok()
            .and_then(|a| user_of(&a))
            .is_some_and(|u| allowed(&u));
    }
    Ok(verdict)
}

/// The verdict for a request outside any dialog (or a REGISTER): the user it acts as must be
/// one the device may use for this method, and a call it names must be its own.
fn out_of_dialog(
    req: &PhoneRequest<'_>,
    inventory: &Inventory,
    dialogs: &impl KnownDialogs,
    call_id: &str,
    from: &NameAddr,
    to: &NameAddr,
) -> Result<Allowed, Refusal> {
    let allowed = |user: &str| {
        inventory.authorize(req.identity, user, req.method.as_str()) == Authorization::Allow
    };
    let user_of = |a: &NameAddr| a.uri.user().map(str::to_owned);
    if let Some(owner) = dialogs.call(call_id) {
        if !owner.belongs_to(req.flow, req.identity) {
            return Err(foreign_dialog());
        }
    }
    let from_user = user_of(from);
    let user = if req.method == Method::Register {
        user_of(to)
    } else {
        from_user.clone()
    };
    let Some(user) = user else {
        return Err(Refusal::forbidden(
            "no_user",
            "the request names no SIP user",
        ));
    };
    if let crate::identity::Authorization::Deny(reason) =
        inventory.authorize(req.identity, &user, req.method.as_str())
    {
        return Err(Refusal::forbidden(reason.label(), reason.text()));
    }
    if req.method == Method::Register {
        // RFC 3261 §10.2: From names who is responsible for the registration. A
        // device registering a user it may use "on behalf of" one it may not would
        // let the PBX record (and a log or CDR show) the wrong party.
        match from_user {
            Some(f) if f == user || allowed(&f) => {}
            _ => {
                return Err(Refusal::forbidden(
                    "third_party_register",
                    format!(
                        "{} may not register {user} on behalf of the From user",
                        req.identity
                    ),
                ))
            }
        }
    }
    Ok(Allowed {
        user: Some(user),
        in_dialog: false,
        foreign_referred_by: false,
    })
}

fn foreign_dialog() -> Refusal {
    Refusal::no_dialog("foreign_dialog", "no such call on this connection")
}

/// The dialogs a request asks to replace (RFC 3891): its own `Replaces` header, and a
/// `Replaces` embedded in its Refer-To URI (`?Replaces=call%40host%3Bto-tag%3D..`, §7.1),
/// as (Call-ID, to-tag, from-tag). A value that does not parse is a 400 (§6.1).
fn replaced_dialogs(msg: &SipMessage) -> Result<Vec<(String, String, String)>, Refusal> {
    let bad = || Refusal::malformed("bad_header", "bad Replaces header");
    let mut out = Vec::new();
    if let Some(v) = msg.header("Replaces") {
        out.push(parse_replaces(v).ok_or_else(bad)?);
    }
    if let Some(refer_to) = msg.header("Refer-To") {
        let uri = NameAddr::parse(refer_to)
            .map(|a| a.uri)
            .or_else(|_| SipUri::parse(refer_to));
        // A Refer-To that is not a SIP URI (tel:, http:) carries no Replaces.
        if let Ok(SipUri {
            headers: Some(headers),
            ..
        }) = uri
        {
            for h in headers.split('&') {
                let Some((name, value)) = h.split_once('=') else {
                    continue;
                };
                if name.eq_ignore_ascii_case("Replaces") {
                    let value: Cow<'_, str> =
                        percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                    out.push(parse_replaces(&value).ok_or_else(bad)?);
                }
            }
        }
    }
    Ok(out)
}

/// `Replaces: callid;to-tag=x;from-tag=y[;early-only]` (RFC 3891 §6.1).
fn parse_replaces(value: &str) -> Option<(String, String, String)> {
    let mut parts = split_top_level(value, b';').into_iter().map(str::trim);
    let call_id = parts.next().filter(|c| !c.is_empty())?;
    let (mut to_tag, mut from_tag) = (None, None);
    for p in parts {
        match p.split_once('=') {
            Some((n, v)) if n.trim().eq_ignore_ascii_case("to-tag") => to_tag = Some(v.trim()),
            Some((n, v)) if n.trim().eq_ignore_ascii_case("from-tag") => from_tag = Some(v.trim()),
            _ => {}
        }
    }
    Some((call_id.to_owned(), to_tag?.to_owned(), from_tag?.to_owned()))
}

/// Identity headers a phone might send to claim an identity (RFC 3325 §9.1
/// P-Asserted-Identity, §9.2 P-Preferred-Identity; draft-ietf-sip-privacy-04
/// Remote-Party-ID). A PBX trusting its edge (Asterisk `trust_id_inbound = yes`) takes the
/// caller from them, so from a phone they are never forwarded.
pub const IDENTITY_HEADERS: [&str; 3] = [
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Remote-Party-ID",
];

/// Headers that describe earlier redirections of a request (RFC 5806 Diversion, RFC 7044
/// History-Info). A phone originating a request has no redirection to report, and a PBX
/// uses them to pick whose voicemail or forwarding applies (Asterisk sets the redirecting
/// party from them): from a phone they are removed.
pub const REDIRECTION_HEADERS: [&str; 2] = ["Diversion", "History-Info"];

/// Makes the identity headers of an allowed request true before it goes to the PBX:
///
/// - P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID: removed (both policies);
///   under [`IdentityHeaders::Assert`] a `P-Asserted-Identity: <sip:USER@DOMAIN>` naming
///   [`Allowed::user`] is added (keeping the From display name, which the phone chose and
///   the PBX saw anyway), `DOMAIN` being the PBX's host: the users are the PBX's.
/// - Diversion, History-Info: removed (see [`REDIRECTION_HEADERS`]).
/// - Referred-By (RFC 3892): kept when it names a user the device may use (the transferor
///   of a REFER is the phone itself), removed otherwise.
/// - Refer-To: identity and redirection headers embedded in its URI are removed
///   (`strip_refer_to_headers`).
/// - Replaces: checked by [`authorize`], kept.
/// - Privacy (RFC 3323): kept. It asks the PBX to withhold the caller's identity from the
///   far end; honouring that needs no trust in the phone, and the asserted identity is the
///   edge's own.
///
/// Returns the names of the headers removed (for `pbx_edge_sip_headers_removed_total`).
pub fn rewrite_identity_headers(
    req: &mut SipMessage,
    allowed: &Allowed,
    policy: IdentityHeaders,
    domain: &str,
) -> Vec<&'static str> {
    let display = req.from().ok().and_then(|f| f.display_name);
    let mut removed = Vec::new();
    for name in IDENTITY_HEADERS.into_iter().chain(REDIRECTION_HEADERS) {
        if req.remove_header(name) > 0 {
            removed.push(name);
        }
    }
    if allowed.foreign_referred_by && req.remove_header("Referred-By") > 0 {
        removed.push("Referred-By");
    }
    removed.extend(strip_refer_to_headers(req));
    if let (IdentityHeaders::Assert, Some(user)) = (policy, &allowed.user) {
        req.append_header(
            "P-Asserted-Identity",
            &asserted(display.as_deref(), user, domain),
        );
    }
    removed
}

/// A Refer-To URI may carry headers for the request it asks for (RFC 3515 §2.1: the
/// referee copies them into its INVITE), so a phone could hand the PBX, as referee, an
/// identity or redirection header inside a REFER: those are removed from the URI's header
/// part (`Replaces` and the rest stay). Returns the names removed.
fn strip_refer_to_headers(req: &mut SipMessage) -> Vec<&'static str> {
    let Some(mut refer_to) = req.header("Refer-To").and_then(|v| NameAddr::parse(v).ok()) else {
        return Vec::new();
    };
    let Some(headers) = refer_to.uri.headers.take() else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    let kept: Vec<&str> = headers
        .split('&')
        .filter(|h| {
            let name = h.split_once('=').map_or(*h, |(n, _)| n).trim();
            match IDENTITY_HEADERS
                .into_iter()
                .chain(REDIRECTION_HEADERS)
                .find(|banned| banned.eq_ignore_ascii_case(name))
            {
                Some(banned) => {
                    removed.push(banned);
                    false
                }
                None => true,
            }
        })
        .collect();
    if removed.is_empty() {
        return removed;
    }
    refer_to.uri.headers = (!kept.is_empty()).then(|| kept.join("&"));
    req.set_header("Refer-To", &refer_to.to_string());
    removed
}

/// The user a phone's response may assert (with [`rewrite_response_identity_headers`]): the
/// To user — the party the PBX addressed, which the answering phone is — when the device
/// may use it for the request's method; `None` otherwise.
pub fn response_user(
    resp: &SipMessage,
    identity: &Identity,
    inventory: &Inventory,
) -> Option<String> {
    let method = resp.cseq().ok()?.method;
    let user = resp.to_user().ok().flatten()?;
    (inventory.authorize(identity, &user, method.as_str()) == Authorization::Allow).then_some(user)
}

/// The identity rule for a phone's responses toward the PBX: a 2xx to an INVITE carrying
/// `P-Asserted-Identity` is the connected party a PBX trusting the edge shows and bills
/// (RFC 3325 §9.1 applies to responses too; Asterisk takes connected-line updates from it
/// with `trust_id_inbound`). P-Asserted-Identity, P-Preferred-Identity and Remote-Party-ID are
/// removed; under [`IdentityHeaders::Assert`] `<sip:USER@DOMAIN>` naming `user` (see
/// [`response_user`]) is added with the To display name. Returns the headers removed.
pub fn rewrite_response_identity_headers(
    resp: &mut SipMessage,
    user: Option<&str>,
    policy: IdentityHeaders,
    domain: &str,
) -> Vec<&'static str> {
    let display = resp.to().ok().and_then(|t| t.display_name);
    let removed = IDENTITY_HEADERS
        .into_iter()
        .filter(|name| resp.remove_header(name) > 0)
        .collect();
    if let (IdentityHeaders::Assert, Some(user)) = (policy, user) {
        resp.append_header(
            "P-Asserted-Identity",
            &asserted(display.as_deref(), user, domain),
        );
    }
    removed
}

fn asserted(display: Option<&str>, user: &str, domain: &str) -> String {
    match display {
        Some(d) => format!("{d} <sip:{user}@{domain}>"),
        None => format!("<sip:{user}@{domain}>"),
    }
}

#[cfg(test)]
mod tests;
