//! Out-of-dialog requests from phones other than REGISTER and INVITE: authorized by the From
//! user, then forwarded; in-dialog NOTIFYs for the subscription flow back to the phone.

use crate::support::edge::{self, RunningEdge};
use crate::support::pbx::{self, Pbx};
use crate::support::phone::{self, Phone};
use crate::support::tls_client;

fn request(method: &str, from_user: &str, n: u32, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:102@sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-ood{n}\r\nFrom: <sip:{from_user}@sbc.test>;tag=ood{n}\r\nTo: <sip:102@sbc.test>\r\nCall-ID: ood-{n}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContact: <sip:{from_user}@127.0.0.1:5099;transport=tls>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_message_publish_options_are_authorized_by_from_user() {
    let pki = edge::dev_pki();
    let pbx = Pbx::bind().await;
    let addr = pbx.addr().to_string();
    let e = RunningEdge::start(edge::config_with(
        &pki,
        &[("PBX_EDGE_PBX__ADDRESS", addr.as_str())],
    ))
    .await;
    let cfg = tls_client::client_config(&pki.pki.server_ca, Some(&pki.pki.snom_device));
    let mut ph = Phone::new(
        tls_client::connect(e.tls_addr, "sbc.test", cfg)
            .await
            .unwrap(),
    );

    // As a user the MAC may not use: 403, nothing forwarded.
    ph.send(&request(
        "MESSAGE",
        "102",
        1,
        "Content-Type: text/plain\r\n",
        "hi",
    ))
    .await;
    let r = ph.recv().await.unwrap();
    assert_eq!(r.status(), Some(403));

    // As its own user: forwarded, each with only the edge's Via and an edge Contact.
    for (n, method, extra, body) in [
        (
            2,
            "SUBSCRIBE",
            "Event: dialog\r\nExpires: 600\r\nAccept: application/dialog-info+xml\r\n",
            "",
        ),
        (3, "MESSAGE", "Content-Type: text/plain\r\n", "hello"),
        (
            4,
            "PUBLISH",
            "Event: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\n",
            "<presence/>",
        ),
        (5, "OPTIONS", "", ""),
    ] {
        ph.send(&request(method, "101", n, extra, body)).await;
        let (got, from) = pbx
            .recv()
            .await
            .unwrap_or_else(|| panic!("PBX gets the {method}"));
        assert_eq!(
            got.call_id().unwrap(),
            format!("ood-{n}"),
            "the 403 before forwarded nothing"
        );
        assert_eq!(got.method().map(|m| m.as_str()), Some(method));
        assert_eq!(got.vias().unwrap().len(), 1);
        assert_eq!(got.body(), body.as_bytes());
        assert!(got
            .header("Contact")
            .unwrap()
            .contains(&e.pbx_local.to_string()));
        let status = if method == "SUBSCRIBE" { 202 } else { 200 };
        pbx.send(from, &pbx::response(&got, status, "OK", "")).await;
        let resp = ph.recv().await.unwrap();
        assert_eq!(resp.status(), Some(status));
        assert_eq!(
            resp.top_via().unwrap().branch(),
            Some(format!("z9hG4bK-ood{n}").as_str())
        );
        if method == "SUBSCRIBE" {
            // The PBX's NOTIFY for the subscription reaches the phone through the edge Contact.
            let edge_contact = got
                .header("Contact")
                .unwrap()
                .split(['<', '>'])
                .nth(1)
                .unwrap()
                .to_owned();
            let to = resp.header("To").unwrap();
            let xml = "<dialog-info/>";
            let notify = format!("NOTIFY {edge_contact} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-blf1\r\nFrom: {to}\r\nTo: <sip:101@sbc.test>;tag=ood2\r\nCall-ID: ood-2\r\nCSeq: 1 NOTIFY\r\nMax-Forwards: 70\r\nEvent: dialog\r\nSubscription-State: active;expires=600\r\nContent-Type: application/dialog-info+xml\r\nContent-Length: {}\r\n\r\n{xml}", xml.len(), pbx = pbx.addr());
            pbx.send(e.pbx_local, &notify).await;
            let n = ph.recv().await.expect("NOTIFY reaches the phone");
            assert_eq!(n.method().map(|m| m.as_str()), Some("NOTIFY"));
            assert_eq!(
                n.request_uri().unwrap().to_string().to_ascii_lowercase(),
                "sip:101@127.0.0.1:5099;transport=tls"
            );
            ph.send(&phone::response(&n, 200).replace(
                "Content-Length: 0",
                "Contact: <sip:101@127.0.0.1:5099;transport=tls>\r\nContent-Length: 0",
            ))
            .await;
            let (ok, _) = pbx.recv().await.unwrap();
            assert_eq!(ok.status(), Some(200));
            assert!(
                !ok.header("Contact").unwrap_or("").contains("5099"),
                "the phone's address stays hidden"
            );
        }
    }
    e.stop().await.expect("clean shutdown");
}
