//! Unit and property tests of `authorize`: every verdict, refusal label and rewrite.

use super::*;
use crate::identity::MacAddress;
use proptest::prelude::*;
use std::collections::HashMap;

const INVENTORY: &str = r#"
[[devices]]
mac = "000413A1B2C3"
users = ["101"]

[[devices]]
mac = "000413D4E5F6"
users = ["102"]
"#;

fn inventory() -> Inventory {
    Inventory::from_toml_str(INVENTORY).unwrap()
}

fn device(mac: &str) -> Identity {
    Identity::Device {
        vendor: "snom".into(),
        mac: MacAddress::parse(mac).unwrap(),
    }
}

/// Dialogs keyed by (Call-ID, sorted tags), calls by Call-ID.
#[derive(Default)]
struct Table {
    dialogs: HashMap<(String, String, String), (FlowId, String, bool)>,
}

impl Table {
    fn with(mut self, call: &str, a: &str, b: &str, flow: u64, id: &Identity, up: bool) -> Self {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        self.dialogs.insert(
            (call.into(), x.into(), y.into()),
            (FlowId(flow), id.to_string(), up),
        );
        self
    }
}

impl KnownDialogs for Table {
    fn dialog(&self, call_id: &str, a: &str, b: &str) -> Option<DialogOwner<'_>> {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        self.dialogs
            .get(&(call_id.to_owned(), x.to_owned(), y.to_owned()))
            .map(|(flow, identity, established)| DialogOwner {
                flow: *flow,
                identity,
                established: *established,
            })
    }
    fn call(&self, call_id: &str) -> Option<DialogOwner<'_>> {
        self.dialogs.iter().find(|((c, _, _), _)| c == call_id).map(
            |(_, (flow, identity, established))| DialogOwner {
                flow: *flow,
                identity,
                established: *established,
            },
        )
    }
}

fn msg(method: &str, from: &str, to: &str, extra: &str) -> SipMessage {
    let text = format!(
        "{method} sip:200@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-1\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    SipMessage::parse(text.as_bytes()).unwrap()
}

fn verdict(m: &SipMessage, id: &Identity, flow: u64, dialogs: &Table) -> Verdict {
    let req = PhoneRequest {
        message: m,
        method: m.method().unwrap(),
        identity: id,
        peer: "192.0.2.10".parse().unwrap(),
        flow: FlowId(flow),
    };
    authorize(&req, &inventory(), dialogs)
}

fn refused(v: Verdict) -> (u16, &'static str) {
    match v {
        Verdict::Refuse(r) => (r.status, r.label),
        Verdict::Allow(a) => panic!("allowed: {a:?}"),
    }
}

fn allowed(v: Verdict) -> Allowed {
    match v {
        Verdict::Allow(a) => a,
        Verdict::Refuse(r) => panic!("refused: {r:?}"),
    }
}

const D101: &str = "000413A1B2C3";
const D102: &str = "000413D4E5F6";

#[test]
fn out_of_dialog_by_from_user() {
    let me = device(D101);
    let t = Table::default();
    let ok = msg(
        "MESSAGE",
        "<sip:101@sbc.test>;tag=a",
        "<sip:200@sbc.test>",
        "",
    );
    assert_eq!(
        allowed(verdict(&ok, &me, 1, &t)).user.as_deref(),
        Some("101")
    );
    let spoof = msg(
        "MESSAGE",
        "<sip:102@sbc.test>;tag=a",
        "<sip:101@sbc.test>",
        "",
    );
    assert_eq!(
        refused(verdict(&spoof, &me, 1, &t)),
        (403, "user_not_allowed")
    );
    let nouser = msg("OPTIONS", "<sip:sbc.test>;tag=a", "<sip:101@sbc.test>", "");
    assert_eq!(refused(verdict(&nouser, &me, 1, &t)), (403, "no_user"));
}

#[test]
fn two_from_headers_are_a_400_whichever_comes_first() {
    let me = device(D101);
    let t = Table::default();
    for from in [
        "<sip:101@sbc.test>;tag=a\r\nFrom: <sip:102@sbc.test>;tag=b",
        "<sip:101@sbc.test>;tag=a\r\nf: <sip:102@sbc.test>;tag=b",
        "<sip:101@sbc.test>;tag=a, <sip:102@sbc.test>;tag=b",
        "<sip:102@sbc.test>;tag=b\r\nFrom: <sip:101@sbc.test>;tag=a",
    ] {
        let m = msg("INVITE", from, "<sip:200@sbc.test>", "");
        assert_eq!(
            refused(verdict(&m, &me, 1, &t)),
            (400, "repeated_header"),
            "{from}"
        );
    }
}

#[test]
fn register_needs_to_and_from_user() {
    let me = device(D101);
    let t = Table::default();
    let own = msg(
        "REGISTER",
        "<sip:101@sbc.test>;tag=a",
        "<sip:101@sbc.test>",
        "",
    );
    assert_eq!(
        allowed(verdict(&own, &me, 1, &t)).user.as_deref(),
        Some("101")
    );
    let third = msg(
        "REGISTER",
        "<sip:102@sbc.test>;tag=a",
        "<sip:101@sbc.test>",
        "",
    );
    assert_eq!(
        refused(verdict(&third, &me, 1, &t)),
        (403, "third_party_register")
    );
    let other = msg(
        "REGISTER",
        "<sip:101@sbc.test>;tag=a",
        "<sip:102@sbc.test>",
        "",
    );
    assert_eq!(
        refused(verdict(&other, &me, 1, &t)),
        (403, "user_not_allowed")
    );
    let two_to = msg(
        "REGISTER",
        "<sip:101@sbc.test>;tag=a",
        "<sip:101@sbc.test>\r\nTo: <sip:102@sbc.test>",
        "",
    );
    assert_eq!(
        refused(verdict(&two_to, &me, 1, &t)),
        (400, "repeated_header")
    );
}

#[test]
fn a_to_tag_needs_a_known_dialog_of_this_device() {
    let me = device(D101);
    let other = device(D102);
    let m = msg(
        "MESSAGE",
        "<sip:102@sbc.test>;tag=a",
        "<sip:101@sbc.test>;tag=x",
        "",
    );
    // No such dialog: 481, never the To user (101, which this device may use).
    assert_eq!(
        refused(verdict(&m, &me, 1, &Table::default())),
        (481, "unknown_dialog")
    );
    // Another device's dialog.
    let theirs = Table::default().with("c1", "a", "x", 2, &other, true);
    assert_eq!(
        refused(verdict(&m, &me, 1, &theirs)),
        (481, "foreign_dialog")
    );
    // Tags of another dialog on the same Call-ID.
    let mine_other_tags = Table::default().with("c1", "a", "y", 1, &me, true);
    assert_eq!(
        refused(verdict(&m, &me, 1, &mine_other_tags)),
        (481, "unknown_dialog")
    );
    // Its own dialog (the callee of a call from 102): allowed, 102 not asserted.
    let mine = Table::default().with("c1", "x", "a", 1, &me, true);
    let a = allowed(verdict(&m, &me, 1, &mine));
    assert_eq!((a.user, a.in_dialog), (None, true));
    // After a reconnect (another flow), the same device certificate still owns it.
    assert!(matches!(verdict(&m, &me, 7, &mine), Verdict::Allow(_)));
    // A shared certificate owns only its own connection's dialogs.
    let shared = Identity::Shared {
        vendor: "snom".into(),
    };
    let on_shared = Table::default().with("c1", "x", "a", 1, &shared, true);
    assert_eq!(
        refused(verdict(&m, &shared, 7, &on_shared)),
        (481, "foreign_dialog")
    );
}

#[test]
fn a_device_gone_from_the_inventory_loses_its_dialogs_too() {
    let gone = device("000413FFFFFF");
    let mine = Table::default().with("c1", "x", "a", 1, &gone, true);
    let m = msg(
        "INFO",
        "<sip:101@sbc.test>;tag=a",
        "<sip:200@sbc.test>;tag=x",
        "",
    );
    assert_eq!(
        refused(verdict(&m, &gone, 1, &mine)),
        (403, "unknown_device")
    );
    // Its BYE still ends the call.
    let bye = msg(
        "BYE",
        "<sip:101@sbc.test>;tag=a",
        "<sip:200@sbc.test>;tag=x",
        "",
    );
    assert!(matches!(verdict(&bye, &gone, 1, &mine), Verdict::Allow(_)));
}

#[test]
fn a_new_request_on_another_devices_call_id_is_481() {
    let me = device(D101);
    let theirs = Table::default().with("c1", "p", "q", 2, &device(D102), true);
    let m = msg(
        "INVITE",
        "<sip:101@sbc.test>;tag=a",
        "<sip:200@sbc.test>",
        "",
    );
    assert_eq!(
        refused(verdict(&m, &me, 1, &theirs)),
        (481, "foreign_dialog")
    );
}

#[test]
fn replaces_may_not_take_over_another_devices_call() {
    let me = device(D101);
    let t = Table::default()
        .with("theirs@h", "t1", "f1", 2, &device(D102), true)
        .with("ringing@h", "t2", "f2", 2, &device(D102), false)
        .with("mine@h", "t3", "f3", 1, &me, true);
    let inv = |replaces: &str| {
        msg(
            "INVITE",
            "<sip:101@sbc.test>;tag=a",
            "<sip:200@sbc.test>",
            &format!("Replaces: {replaces}\r\n"),
        )
    };
    assert_eq!(
        refused(verdict(&inv("theirs@h;to-tag=t1;from-tag=f1"), &me, 1, &t)),
        (403, "replaces_foreign_call")
    );
    assert_eq!(
        refused(verdict(&inv("theirs@h;from-tag=t1;to-tag=f1"), &me, 1, &t)),
        (403, "replaces_foreign_call")
    );
    assert!(matches!(
        verdict(&inv("ringing@h;to-tag=t2;from-tag=f2"), &me, 1, &t),
        Verdict::Allow(_)
    ));
    assert!(matches!(
        verdict(&inv("mine@h;to-tag=t3;from-tag=f3"), &me, 1, &t),
        Verdict::Allow(_)
    ));
    assert!(matches!(
        verdict(&inv("elsewhere@h;to-tag=1;from-tag=2"), &me, 1, &t),
        Verdict::Allow(_)
    ));
    assert_eq!(
        refused(verdict(&inv("x;to-tag=1"), &me, 1, &t)),
        (400, "bad_header")
    );
    // The same inside a Refer-To URI (RFC 3891 §7.1), percent-encoded.
    let refer = msg(
        "REFER",
        "<sip:101@sbc.test>;tag=a",
        "<sip:200@sbc.test>",
        "Refer-To: <sip:300@sbc.test?Replaces=theirs%40h%3Bto-tag%3Dt1%3Bfrom-tag%3Df1>\r\n",
    );
    assert_eq!(
        refused(verdict(&refer, &me, 1, &t)),
        (403, "replaces_foreign_call")
    );
}

#[test]
fn anonymous_needs_an_admitted_network() {
    let m = msg(
        "OPTIONS",
        "<sip:900@sbc.test>;tag=a",
        "<sip:200@sbc.test>",
        "",
    );
    assert_eq!(
        refused(verdict(&m, &Identity::Anonymous, 1, &Table::default())),
        (403, "anonymous_source")
    );
}

fn rewritten(
    extra: &str,
    policy: IdentityHeaders,
    user: Option<&str>,
) -> (SipMessage, Vec<&'static str>) {
    let me = device(D101);
    let mut m = msg(
        "INVITE",
        "\"Desk\" <sip:101@sbc.test>;tag=a",
        "<sip:200@sbc.test>",
        extra,
    );
    let mut a = allowed(verdict(&m, &me, 1, &Table::default()));
    a.user = user.map(str::to_owned);
    let removed = rewrite_identity_headers(&mut m, &a, policy, "192.0.2.1");
    (m, removed)
}

#[test]
fn identity_headers_are_replaced_by_the_authorized_user() {
    let spoof = "P-Asserted-Identity: <sip:102@sbc.test>\r\nP-Preferred-Identity: <sip:102@sbc.test>\r\nRemote-Party-ID: <sip:102@sbc.test>;party=calling\r\n";
    let (m, removed) = rewritten(spoof, IdentityHeaders::Assert, Some("101"));
    assert_eq!(
        m.header_values("P-Asserted-Identity"),
        ["\"Desk\" <sip:101@192.0.2.1>"]
    );
    assert_eq!(m.header("P-Preferred-Identity"), None);
    assert_eq!(m.header("Remote-Party-ID"), None);
    assert_eq!(removed, IDENTITY_HEADERS);
    let (m, _) = rewritten(spoof, IdentityHeaders::Strip, Some("101"));
    assert_eq!(m.header("P-Asserted-Identity"), None);
    // Nothing to assert (in-dialog, From user not the device's): none added.
    let (m, _) = rewritten(spoof, IdentityHeaders::Assert, None);
    assert_eq!(m.header("P-Asserted-Identity"), None);
}

#[test]
fn diversion_history_info_removed_privacy_kept() {
    let extra = "Diversion: <sip:102@sbc.test>;reason=unconditional\r\nHistory-Info: <sip:102@sbc.test>;index=1\r\nPrivacy: id\r\n";
    let (m, removed) = rewritten(extra, IdentityHeaders::Assert, Some("101"));
    assert_eq!(m.header("Diversion"), None);
    assert_eq!(m.header("History-Info"), None);
    assert_eq!(m.header("Privacy"), Some("id"));
    assert_eq!(removed, ["Diversion", "History-Info"]);
}

#[test]
fn referred_by_kept_only_for_the_devices_users() {
    let me = device(D101);
    for (by, kept) in [
        ("<sip:101@sbc.test>", true),
        ("<sip:102@sbc.test>", false),
        ("garbage", false),
    ] {
        let mut m = msg(
            "REFER",
            "<sip:101@sbc.test>;tag=a",
            "<sip:200@sbc.test>",
            &format!("Refer-To: <sip:300@sbc.test>\r\nReferred-By: {by}\r\n"),
        );
        let a = allowed(verdict(&m, &me, 1, &Table::default()));
        rewrite_identity_headers(&mut m, &a, IdentityHeaders::Assert, "pbx");
        assert_eq!(m.header("Referred-By").is_some(), kept, "{by}");
    }
}

#[test]
fn a_phones_response_asserts_only_its_own_user() {
    let me = device(D101);
    let ok = |to: &str| {
        SipMessage::parse(format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1\r\nFrom: <sip:200@pbx>;tag=p\r\nTo: {to};tag=q\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nP-Asserted-Identity: <sip:102@sbc.test>\r\nRemote-Party-ID: <sip:102@sbc.test>;party=called\r\nContent-Length: 0\r\n\r\n").as_bytes()).unwrap()
    };
    let mut own = ok("\"Desk\" <sip:101@sbc.test>");
    let user = response_user(&own, &me, &inventory());
    assert_eq!(user.as_deref(), Some("101"));
    let removed = rewrite_response_identity_headers(
        &mut own,
        user.as_deref(),
        IdentityHeaders::Assert,
        "pbx",
    );
    assert_eq!(removed, ["P-Asserted-Identity", "Remote-Party-ID"]);
    assert_eq!(
        own.header_values("P-Asserted-Identity"),
        ["\"Desk\" <sip:101@pbx>"]
    );
    assert_eq!(own.header("Remote-Party-ID"), None);
    // Answering a call addressed to a user it may not use: nothing asserted.
    let mut other = ok("<sip:600@sbc.test>");
    let user = response_user(&other, &me, &inventory());
    assert_eq!(user, None);
    rewrite_response_identity_headers(&mut other, None, IdentityHeaders::Assert, "pbx");
    assert_eq!(other.header("P-Asserted-Identity"), None);
}

#[test]
fn refer_to_cannot_smuggle_identity_headers() {
    let me = device(D101);
    let mut m = msg(
        "REFER",
        "<sip:101@sbc.test>;tag=a",
        "<sip:200@sbc.test>",
        "Refer-To: <sip:300@sbc.test?P-Asserted-Identity=%3Csip%3A102%40sbc.test%3E&Replaces=x%3Bto-tag%3D1%3Bfrom-tag%3D2&diversion=%3Csip%3A102%40pbx%3E>\r\n",
    );
    let a = allowed(verdict(&m, &me, 1, &Table::default()));
    let removed = rewrite_identity_headers(&mut m, &a, IdentityHeaders::Assert, "pbx");
    assert_eq!(removed, ["P-Asserted-Identity", "Diversion"]);
    assert_eq!(
        m.header("Refer-To"),
        Some("<sip:300@sbc.test?Replaces=x%3Bto-tag%3D1%3Bfrom-tag%3D2>")
    );
    let mut plain = msg(
        "REFER",
        "<sip:101@sbc.test>;tag=a",
        "<sip:200@sbc.test>",
        "Refer-To: <sip:300@sbc.test>\r\n",
    );
    rewrite_identity_headers(&mut plain, &a, IdentityHeaders::Assert, "pbx");
    assert_eq!(plain.header("Refer-To"), Some("<sip:300@sbc.test>"));
}

#[test]
fn call_tags() {
    assert!(call_tags_match(Some("c"), Some("e"), "c", "e"));
    assert!(call_tags_match(Some("c"), Some("e"), "e", "c"));
    assert!(!call_tags_match(Some("c"), Some("e"), "c", "x"));
    assert!(!call_tags_match(Some("c"), Some("e"), "c", "c"));
    assert!(call_tags_match(Some("c"), None, "c", "any-early-tag"));
    assert!(call_tags_match(Some("c"), None, "any-early-tag", "c"));
    assert!(!call_tags_match(Some("c"), None, "x", "y"));
    assert!(!call_tags_match(None, Some("e"), "", "e"));
}

proptest! {
    /// The single-header check never panics, whatever a header line holds.
    #[test]
    fn repeated_header_never_panics(name in prop::sample::select(vec!["From", "To", "Call-ID", "Content-Type", "Refer-To", "Replaces", "Date", "X-Any"]), value in "[ -~]{0,80}") {
        let text = format!("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK-1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n{name}: {value}\r\nContent-Length: 0\r\n\r\n");
        if let Ok(m) = SipMessage::parse(text.as_bytes()) {
            let _ = repeated_header(&m);
            let _ = replaced_dialogs(&m);
        }
    }

    /// Whatever users a phone puts in From and To, an out-of-dialog request is allowed
    /// only as a user of its own device, and never asserts anything else.
    #[test]
    fn allowed_only_as_own_user(from in "10[0-9]", to in "10[0-9]", register in any::<bool>(), tag in any::<bool>()) {
        let me = device(D101);
        let method = if register { "REGISTER" } else { "MESSAGE" };
        let to_tag = if tag { ";tag=x" } else { "" };
        let m = msg(method, &format!("<sip:{from}@sbc.test>;tag=a"), &format!("<sip:{to}@sbc.test>{to_tag}"), "");
        match verdict(&m, &me, 1, &Table::default()) {
            Verdict::Allow(a) => {
                prop_assert_eq!(a.user.as_deref(), Some("101"));
                prop_assert!(!a.in_dialog);
                prop_assert_eq!(from.as_str(), "101");
                if register { prop_assert_eq!(to.as_str(), "101"); }
            }
            Verdict::Refuse(r) => prop_assert!(r.status == 403 || r.status == 481),
        }
    }

    /// Any number of extra From/To lines or comma values is refused before anything else.
    #[test]
    fn repeats_always_refused(n in 1usize..4, name in prop::sample::select(vec!["From", "f", "To", "t", "Call-ID", "i", "CSeq", "Content-Type", "c"])) {
        // The base message has no Content-Type: one more of those.
        let lines = if matches!(name, "Content-Type" | "c") { n + 1 } else { n };
        let extra: String = (0..lines).map(|i| match name {
            "CSeq" => format!("{name}: {} MESSAGE\r\n", i + 2),
            "Content-Type" | "c" => format!("{name}: text/plain\r\n"),
            "Call-ID" | "i" => format!("{name}: other{i}\r\n"),
            _ => format!("{name}: <sip:10{i}@sbc.test>;tag=z{i}\r\n"),
        }).collect();
        let m = msg("MESSAGE", "<sip:101@sbc.test>;tag=a", "<sip:200@sbc.test>", &extra);
        prop_assert!(repeated_header(&m).is_err());
        prop_assert_eq!(refused(verdict(&m, &device(D101), 1, &Table::default())), (400, "repeated_header"));
    }
}
