//! Device identity on the RUNNING edge: the rcgen vendor PKI (tests/support/pki.rs) presented by
//! a tokio-rustls phone to the in-process TLS listener over loopback. Accepted certificates
//! complete the handshake and get their keep-alive answered; refused ones are dropped, and
//! /metrics counts each refusal under its own `reason`. Hot reload: a MAC added to the deny-list
//! closes its live connection; a broken inventory keeps the old state.

use crate::support::edge::RunningEdge;
use crate::support::http;
use crate::support::pki::{self, Pki};
use crate::support::vendor_edge::{self, probe, probe_chain, replace_file};
use rcgen::date_time_ymd;
use std::net::SocketAddr;
use std::time::Duration;

/// `pbx_edge_tls_handshake_failures_total{reason=..,vendor=..}`.
fn failures(reason: &str, vendor: &str) -> String {
    format!("pbx_edge_tls_handshake_failures_total{{reason=\"{reason}\",vendor=\"{vendor}\"}}")
}

/// Polls /metrics until `name` reaches `at_least` (bounded: `limit`); returns the last body.
async fn metrics_when(admin: SocketAddr, name: &str, at_least: f64, limit: Duration) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let body = http::get(admin, "/metrics").await.1;
        if http::metric(&body, name) >= at_least || tokio::time::Instant::now() >= deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verdict_on_the_running_listener_has_its_reason_label() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let revoked = pki.snom("000413FFFF01");
    let (legacy_ca, legacy_chain, legacy_key) = pki::legacy_fixture();
    let config = vendor_edge::config(&pki, dir.path(), pki::INVENTORY, |c| {
        let snom = c.vendors.get_mut("snom").unwrap();
        // The CRL is issued by the "Snom Phone 1 SHA-256" intermediate: the bundle knows it.
        snom.ca.push(pki::write(
            dir.path(),
            "snom-phone.pem",
            &pki.snom_phone.pem,
        ));
        snom.crl = vec![pki::write(
            dir.path(),
            "snom.crl",
            pki.snom_phone.crl(std::slice::from_ref(&revoked.serial)),
        )];
        // Imitation of Snom's SHA-1 / RSA-1024 root; legacy_crypto stays off (the default).
        snom.ca
            .push(pki::write(dir.path(), "legacy-ca.pem", &legacy_ca));
    });
    let e = vendor_edge::start(config).await;
    let addr = e.tls_addr;

    // Accepted: one device of every vendor format, each keep-alive answered.
    let accepted = [
        ("snom", pki.snom(pki::SNOM_MAC)),
        ("yealink", pki.yealink(pki::YEALINK_MAC)),
        ("polycom", pki.polycom(pki::POLYCOM_MAC)),
        ("cisco", pki.cisco("001bd4a1b2c3")),
    ];
    let mut open = Vec::new();
    for (vendor, device) in &accepted {
        let mut conn = probe(&pki, addr, device)
            .await
            .unwrap_or_else(|e| panic!("{vendor} accepted: {e}"));
        assert!(conn.ping().await, "{vendor}: a second keep-alive answered");
        open.push(conn);
    }

    // Refused: each for its own reason, counted once under it.
    let refused = [
        (
            "expired",
            "snom",
            pki.snom_with(pki::SNOM_MAC, |p| {
                p.not_before = date_time_ymd(2001, 1, 1);
                p.not_after = date_time_ymd(2002, 1, 1);
            }),
        ),
        (
            "not_yet_valid",
            "snom",
            pki.snom_with(pki::SNOM_MAC, |p| {
                p.not_before = date_time_ymd(2090, 1, 1);
                p.not_after = date_time_ymd(2091, 1, 1);
            }),
        ),
        (
            "issuer_unknown",
            "unknown",
            pki.wrong_root
                .device(&[(rcgen::DnType::CommonName, pki::SNOM_MAC)], |_| {}, &[]),
        ),
        ("revoked", "snom", revoked),
        ("no_mac", "polycom", pki.polycom("Polycom VVX 450")),
        ("shared_cert_refused", "snom", pki.snom_shared()),
        ("mac_not_in_inventory", "snom", pki.snom("000413000001")),
        // Issue 11 point 9: a MAC CN beside a second, junk CN.
        (
            "ambiguous_subject",
            "snom",
            pki.snom_phone.device(
                &[
                    (rcgen::DnType::CommonName, pki::SNOM_MAC),
                    (rcgen::DnType::CustomDnType(vec![2, 5, 4, 3]), "junk"),
                ],
                |_| {},
                &[&pki.snom_phone],
            ),
        ),
        // Issue 11 point 6: ~100 junk intermediates named like the device's issuer.
        ("chain_too_large", "unknown", {
            let mut device = pki.snom(pki::SNOM_MAC);
            let genuine = device.chain.pop().unwrap();
            for _ in 0..100 {
                device.chain.push(
                    pki::Ca::root(&[
                        (rcgen::DnType::OrganizationName, "Test snom technology AG"),
                        (rcgen::DnType::CommonName, "Snom Phone 1 SHA-256"),
                    ])
                    .der,
                );
            }
            device.chain.push(genuine);
            device
        }),
    ];
    for (reason, vendor, device) in &refused {
        let verdict = probe(&pki, addr, device).await;
        assert!(verdict.is_err(), "{reason}: must be refused");
        let body = metrics_when(
            e.admin_addr,
            &failures(reason, vendor),
            1.0,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            http::metric(&body, &failures(reason, vendor)),
            1.0,
            "{reason}/{vendor}: {body}"
        );
    }
    // The SHA-1-signed device under the RSA-1024 root (the legacy fixture).
    let verdict = probe_chain(&pki, addr, legacy_chain, legacy_key).await;
    assert!(verdict.is_err(), "legacy crypto refused by default");
    let label = failures("legacy_crypto_refused", "snom");
    let body = metrics_when(e.admin_addr, &label, 1.0, Duration::from_secs(5)).await;
    assert_eq!(http::metric(&body, &label), 1.0, "{body}");

    // Nothing else was counted as a failure, and only the four accepted handshakes succeeded.
    let total_failures: f64 = body
        .lines()
        .filter(|l| l.starts_with("pbx_edge_tls_handshake_failures_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(total_failures, 10.0, "{body}");
    assert_eq!(
        http::metric(&body, "pbx_edge_tls_handshakes_total"),
        4.0,
        "{body}"
    );
    assert_eq!(
        http::metric(&body, "pbx_edge_tls_connections_active"),
        4.0,
        "{body}"
    );
    // The refusals did not disturb the accepted phones.
    for conn in &mut open {
        assert!(conn.ping().await);
    }
    drop(open);
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_device_is_accepted_when_its_vendor_allows_legacy_crypto() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (legacy_ca, chain, key) = pki::legacy_fixture();
    let config = vendor_edge::config(&pki, dir.path(), pki::INVENTORY, |c| {
        let snom = c.vendors.get_mut("snom").unwrap();
        snom.ca
            .push(pki::write(dir.path(), "legacy-ca.pem", &legacy_ca));
        snom.legacy_crypto = true;
    });
    let e = vendor_edge::start(config).await;
    let mut conn = probe_chain(&pki, e.tls_addr, chain, key)
        .await
        .expect("SHA-1 / RSA-1024 chain accepted under legacy_crypto");
    assert!(conn.ping().await);
    let body = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(
        http::metric(&body, "pbx_edge_tls_handshakes_total"),
        1.0,
        "{body}"
    );
    drop(conn);
    e.stop().await.expect("clean shutdown");
}

/// How long the edge may take to apply a file change (it polls every second).
const RELOAD_BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_list_reload_closes_the_live_connection_and_a_broken_inventory_keeps_the_old_state() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let deny = pki::write(dir.path(), "deny.txt", "# stolen phones\n");
    let deny_path = deny.clone();
    let config = vendor_edge::config(&pki, dir.path(), pki::INVENTORY, |c| {
        c.tls.mac_deny_list = Some(deny_path);
    });
    let inventory = config.inventory.file.clone().unwrap();
    let e: RunningEdge = vendor_edge::start(config).await;
    let ok = "pbx_edge_identity_reloads_total{result=\"ok\"}";
    let failed = "pbx_edge_identity_reloads_total{result=\"failed\"}";

    let snom = pki.snom(pki::SNOM_MAC);
    let yealink = pki.yealink(pki::YEALINK_MAC);
    let mut snom_conn = probe(&pki, e.tls_addr, &snom).await.expect("snom accepted");
    let mut yealink_conn = probe(&pki, e.tls_addr, &yealink)
        .await
        .expect("yealink accepted");
    let body = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(http::metric(&body, ok), 0.0, "{body}");

    // The Snom's MAC goes on the deny-list (another spelling than its certificate's).
    replace_file(&deny, "# stolen phones\n00-04-13-A1-B2-C3\n");
    assert!(
        snom_conn.closed_within(RELOAD_BOUND).await,
        "the edge closes the denied phone's connection"
    );
    let body = metrics_when(e.admin_addr, ok, 1.0, RELOAD_BOUND).await;
    assert_eq!(http::metric(&body, ok), 1.0, "{body}");
    let closed = "pbx_edge_tls_connections_revoked_total{reason=\"revoked\"}";
    let body = metrics_when(e.admin_addr, closed, 1.0, RELOAD_BOUND).await;
    assert_eq!(http::metric(&body, closed), 1.0, "{body}");
    assert!(yealink_conn.ping().await, "other phones stay connected");
    assert!(
        probe(&pki, e.tls_addr, &snom).await.is_err(),
        "the denied phone cannot come back"
    );
    let body = metrics_when(
        e.admin_addr,
        &failures("revoked", "snom"),
        1.0,
        RELOAD_BOUND,
    )
    .await;
    assert_eq!(
        http::metric(&body, &failures("revoked", "snom")),
        1.0,
        "{body}"
    );

    // A broken inventory: the reload fails, the previous state stays in force.
    replace_file(&inventory, "[[devices]\nmac = this is not TOML\n");
    let body = metrics_when(e.admin_addr, failed, 1.0, RELOAD_BOUND).await;
    assert_eq!(http::metric(&body, failed), 1.0, "{body}");
    assert_eq!(http::metric(&body, ok), 1.0, "{body}");
    assert!(yealink_conn.ping().await, "existing phones stay connected");
    let mut again = probe(&pki, e.tls_addr, &yealink)
        .await
        .expect("new phones of the old inventory are still accepted");
    assert!(again.ping().await);
    assert!(
        probe(&pki, e.tls_addr, &snom).await.is_err(),
        "the old deny-list stays in force"
    );
    drop((again, yealink_conn));
    e.stop().await.expect("clean shutdown");
}

/// A phone's TLS handshake driven by hand over loopback, so a test can hold it between the
/// edge's certificate verdict and the handshake's end.
struct PausedHandshake {
    tcp: tokio::net::TcpStream,
    tls: rustls::ClientConnection,
}

impl PausedHandshake {
    /// Sends the ClientHello and reads the edge's flight until the client's own last flight
    /// (Certificate, CertificateVerify, Finished) is ready, and stops there without sending
    /// it. The edge has accepted the TCP connection and taken its `ServerConfig` (with the
    /// verifier of the snapshot of that moment) by then: it answered the ClientHello.
    async fn start(pki: &Pki, addr: SocketAddr, device: &pki::Device) -> PausedHandshake {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let config = pki::client_config(pki, Some((device.chain.clone(), device.key())));
        let name = rustls::pki_types::ServerName::try_from("sbc.test").unwrap();
        let mut tls = rustls::ClientConnection::new(config, name).unwrap();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut out = Vec::new();
        tls.write_tls(&mut out).unwrap();
        tcp.write_all(&out).await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        for _ in 0..100 {
            if !tls.is_handshaking() {
                return PausedHandshake { tcp, tls };
            }
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
                .await
                .expect("the edge answers the ClientHello")
                .unwrap();
            assert!(n > 0, "the edge closed during the handshake");
            let mut slice = &buf[..n];
            while !slice.is_empty() {
                tls.read_tls(&mut slice).unwrap();
            }
            tls.process_new_packets().unwrap();
        }
        panic!("handshake did not reach the client's last flight");
    }

    /// Sends the held flight and a CRLFCRLF keep-alive; true when the edge answers it with a
    /// CRLF (the connection carries traffic), false when it closes instead (bounded: 5 s).
    async fn finish_and_ping(mut self) -> bool {
        use std::io::{Read, Write};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.tls.writer().write_all(b"\r\n\r\n").unwrap();
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut out).unwrap();
        }
        if self.tcp.write_all(&out).await.is_err() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 16 * 1024];
        let mut plain = Vec::new();
        loop {
            let n = match tokio::time::timeout_at(deadline, self.tcp.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return false,
            };
            let mut slice = &buf[..n];
            while !slice.is_empty() {
                if self.tls.read_tls(&mut slice).unwrap_or(0) == 0 {
                    break;
                }
            }
            if self.tls.process_new_packets().is_err() {
                return false;
            }
            let mut chunk = [0u8; 64];
            while let Ok(n) = self.tls.reader().read(&mut chunk) {
                if n == 0 {
                    break;
                }
                plain.extend_from_slice(&chunk[..n]);
            }
            if plain.windows(2).any(|w| w == b"\r\n") {
                return true;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_while_its_handshake_is_in_flight_is_refused_before_any_sip() {
    // Issue 11 point 4: the verifier decides with the snapshot of the moment of accept; the
    // deny-list changes before the handshake ends; the connection must not carry a byte.
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let deny = pki::write(dir.path(), "deny.txt", "# none yet\n");
    let deny_path = deny.clone();
    let config = vendor_edge::config(&pki, dir.path(), pki::INVENTORY, |c| {
        c.tls.mac_deny_list = Some(deny_path);
    });
    let e = vendor_edge::start(config).await;
    let snom = pki.snom(pki::SNOM_MAC);
    let yealink = pki.yealink(pki::YEALINK_MAC);
    let held_snom = PausedHandshake::start(&pki, e.tls_addr, &snom).await;
    // Positive control: another phone held the same way across the same reload.
    let held_yealink = PausedHandshake::start(&pki, e.tls_addr, &yealink).await;

    replace_file(&deny, "# none yet\n000413a1b2c3\n");
    let ok = "pbx_edge_identity_reloads_total{result=\"ok\"}";
    let body = metrics_when(e.admin_addr, ok, 1.0, RELOAD_BOUND).await;
    assert_eq!(http::metric(&body, ok), 1.0, "{body}");

    assert!(
        !held_snom.finish_and_ping().await,
        "the device denied during its handshake gets no answer"
    );
    assert!(
        held_yealink.finish_and_ping().await,
        "a device still allowed completes the same kind of handshake and is served"
    );
    let label = failures("revoked", "snom");
    let body = metrics_when(e.admin_addr, &label, 1.0, Duration::from_secs(5)).await;
    assert_eq!(http::metric(&body, &label), 1.0, "{body}");
    assert_eq!(
        http::metric(&body, "pbx_edge_tls_handshakes_total"),
        1.0,
        "only the allowed phone counts as an established connection: {body}"
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_when_its_certificate_expires() {
    // Issue 11 point 4: notAfter a few seconds ahead; the open connection is closed when it
    // passes, counted under expired. A phone with a long-valid certificate stays.
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let config = vendor_edge::config(&pki, dir.path(), pki::INVENTORY, |_| {});
    let e = vendor_edge::start(config).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let short = pki.snom_with(pki::SNOM_MAC, |p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(1970, 1, 1) + (now + Duration::from_secs(6));
    });
    let mut expiring = probe(&pki, e.tls_addr, &short)
        .await
        .expect("accepted while valid");
    let mut staying = probe(&pki, e.tls_addr, &pki.yealink(pki::YEALINK_MAC))
        .await
        .expect("yealink accepted");
    assert!(
        expiring.closed_within(Duration::from_secs(30)).await,
        "the edge closes the connection once the certificate has expired"
    );
    let label = "pbx_edge_tls_connections_revoked_total{reason=\"expired\"}";
    let body = metrics_when(e.admin_addr, label, 1.0, Duration::from_secs(5)).await;
    assert_eq!(http::metric(&body, label), 1.0, "{body}");
    assert!(staying.ping().await, "the other phone stays connected");
    assert!(
        probe(&pki, e.tls_addr, &short).await.is_err(),
        "the expired certificate cannot come back"
    );
    drop(staying);
    e.stop().await.expect("clean shutdown");
}

/// Reads the CRLF answer to the keep-alive `tls_client::connect` sent (bounded: 5 s).
async fn answered(stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> bool {
    use tokio::io::AsyncReadExt;
    let mut pong = [0u8; 2];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut pong)).await,
        Ok(Ok(_)) if &pong == b"\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_cannot_come_back_by_resuming_its_tls_session() {
    // A resumed TLS session skips the client-certificate verifier (RFC 8446 §2.2: the PSK
    // stands for the earlier authentication); the verdict after the handshake still sees the
    // session's certificate and its notAfter.
    use crate::support::tls_client;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let config = vendor_edge::config(&pki, dir.path(), pki::INVENTORY, |_| {});
    let e = vendor_edge::start(config).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let not_after = now + Duration::from_secs(6);
    let short = pki.snom_with(pki::SNOM_MAC, |p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(1970, 1, 1) + not_after;
    });
    // One client config for every connection: it keeps the session tickets.
    let client = pki::client_config(&pki, Some((short.chain.clone(), short.key())));
    let mut first = tls_client::connect(e.tls_addr, "sbc.test", client.clone())
        .await
        .expect("first handshake");
    assert!(answered(&mut first).await, "accepted while valid");
    drop(first);
    let mut second = tls_client::connect(e.tls_addr, "sbc.test", client.clone())
        .await
        .expect("second handshake");
    assert!(answered(&mut second).await, "still valid");
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed),
        "the control: this client resumes its session"
    );
    drop(second);

    // Past notAfter (+1 s: the validity period includes notAfter itself).
    let wait = (not_after + Duration::from_secs(2)).saturating_sub(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap(),
    );
    tokio::time::sleep(wait).await;
    match tls_client::connect(e.tls_addr, "sbc.test", client.clone()).await {
        Err(_) => {}
        Ok(mut third) => {
            assert_eq!(
                third.get_ref().1.handshake_kind(),
                Some(rustls::HandshakeKind::Resumed)
            );
            assert!(
                !answered(&mut third).await,
                "the resumed session of an expired certificate is refused"
            );
        }
    }
    let label = failures("expired", "snom");
    let body = metrics_when(e.admin_addr, &label, 1.0, Duration::from_secs(5)).await;
    assert_eq!(http::metric(&body, &label), 1.0, "{body}");
    e.stop().await.expect("clean shutdown");
}

/// Connects from `source` (a loopback address) without a client certificate; `Ok` when the
/// edge answers the keep-alive.
async fn anonymous_probe(
    pki: &Pki,
    addr: SocketAddr,
    source: std::net::IpAddr,
) -> Result<vendor_edge::Accepted, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let tcp = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("sbc.test").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(pki::client_config(pki, None))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake failed: {e}"))?;
    stream
        .write_all(b"\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut pong = [0u8; 2];
    match tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut pong)).await {
        Ok(Ok(_)) if &pong == b"\r\n" => Ok(vendor_edge::Accepted(stream)),
        _ => Err("no keep-alive answer: the edge closed the connection".to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_connections_from_outside_the_anonymous_networks_are_closed_at_accept() {
    // Issue 11 point 8: client_cert = optional, [anonymous] allowed from 127.0.0.2 only.
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let inventory = format!(
        "{}\n[anonymous]\nusers = [\"199\"]\nnetworks = [\"127.0.0.2/32\"]\n",
        pki::INVENTORY
    );
    let config = vendor_edge::config(&pki, dir.path(), &inventory, |c| {
        c.tls.client_cert = pbx_edge::config::ClientCertMode::Optional;
    });
    let e = vendor_edge::start(config).await;
    let outside = anonymous_probe(&pki, e.tls_addr, [127, 0, 0, 1].into()).await;
    assert!(outside.is_err(), "anonymous from 127.0.0.1 must be closed");
    let label = failures("anonymous_not_allowed", "unknown");
    let body = metrics_when(e.admin_addr, &label, 1.0, Duration::from_secs(5)).await;
    assert_eq!(http::metric(&body, &label), 1.0, "{body}");
    let mut inside = anonymous_probe(&pki, e.tls_addr, [127, 0, 0, 2].into())
        .await
        .expect("anonymous from an allowed network is served");
    assert!(inside.ping().await);
    // A device certificate from the same source as the refused anonymous phone is fine.
    let mut device = probe(&pki, e.tls_addr, &pki.snom(pki::SNOM_MAC))
        .await
        .expect("device accepted");
    assert!(device.ping().await);
    drop((inside, device));
    e.stop().await.expect("clean shutdown");
}
