//! README: the server certificate, vendor CAs and CRLs reload when their file changes (no
//! restart, no SIGHUP); a revoked device is disconnected within about a second (the edge
//! looks at its files twice a second). The waits are bounded at 10 s; no assertion measures
//! time.

use std::time::Duration;

use crate::support::pki::{self, Pki};
use crate::support::vendor_edge::{self, probe, replace_file, Accepted};
use crate::support::{edge::RunningEdge, http};

/// Bound on a file change taking effect.
const RELOAD_BOUND: Duration = Duration::from_secs(10);

/// Retries `probe` of `device` (bounded: [`RELOAD_BOUND`]) until `want` holds for its result.
async fn probe_until(
    pki: &Pki,
    e: &RunningEdge,
    device: &pki::Device,
    want: impl Fn(&Result<Accepted, String>) -> bool,
) -> Result<Accepted, String> {
    let deadline = tokio::time::Instant::now() + RELOAD_BOUND;
    loop {
        let r = probe(pki, e.tls_addr, device).await;
        if want(&r) || tokio::time::Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leaf certificate the edge presented on `conn`.
fn server_leaf(conn: &Accepted) -> Vec<u8> {
    conn.0
        .get_ref()
        .1
        .peer_certificates()
        .expect("the edge presented a certificate")[0]
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_revoking_a_live_device_disconnects_it_and_keeps_it_out() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let crl = pki::write(dir.path(), "snom.crl", pki.snom_phone.crl(&[]));
    let crl_path = crl.clone();
    let config = vendor_edge::config(&pki, dir.path(), pki::INVENTORY, |c| {
        let snom = c.vendors.get_mut("snom").unwrap();
        // The CRL is issued by the "Snom Phone 1 SHA-256" intermediate: the bundle knows it.
        snom.ca.push(pki::write(
            dir.path(),
            "snom-phone.pem",
            &pki.snom_phone.pem,
        ));
        snom.crl = vec![crl_path];
    });
    let e = vendor_edge::start(config).await;
    let snom = pki.snom(pki::SNOM_MAC);
    let yealink = pki.yealink(pki::YEALINK_MAC);
    let mut snom_conn = probe(&pki, e.tls_addr, &snom)
        .await
        .expect("snom accepted under the empty CRL");
    let mut yealink_conn = probe(&pki, e.tls_addr, &yealink)
        .await
        .expect("yealink accepted");

    // The Snom's certificate is revoked: only the CRL file changes.
    replace_file(
        &crl,
        &pki.snom_phone.crl(std::slice::from_ref(&snom.serial)),
    );
    assert!(
        snom_conn.closed_within(RELOAD_BOUND).await,
        "the edge disconnects the revoked device's live connection"
    );
    assert!(yealink_conn.ping().await, "other devices stay connected");
    assert!(
        probe(&pki, e.tls_addr, &snom).await.is_err(),
        "the revoked device cannot come back"
    );
    let body = http::get(e.admin_addr, "/metrics").await.1;
    let revoked = "pbx_edge_tls_handshake_failures_total{reason=\"revoked\",vendor=\"snom\"}";
    assert!(http::metric(&body, revoked) >= 1.0, "{body}");
    assert!(
        http::metric(&body, "pbx_edge_identity_reloads_total{result=\"ok\"}") >= 1.0,
        "{body}"
    );
    drop(yealink_conn);
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_certificate_on_disk_is_presented_to_the_next_handshake() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let config = vendor_edge::config(&pki, dir.path(), pki::INVENTORY, |_| {});
    let server = config.tls.certificates[0].clone();
    let e = vendor_edge::start(config).await;
    let yealink = pki.yealink(pki::YEALINK_MAC);
    let mut before = probe(&pki, e.tls_addr, &yealink).await.expect("accepted");
    let old_leaf = server_leaf(&before);

    // A renewed certificate (new key) for the same name, written over the old files.
    let renewed = pki.server(&["sbc.test"]);
    let new_leaf = renewed.chain[0].to_vec();
    assert_ne!(old_leaf, new_leaf);
    replace_file(&server.key, &renewed.key_pem);
    replace_file(&server.cert, &renewed.chain_pem());
    let after = probe_until(&pki, &e, &yealink, |r| {
        r.as_ref().is_ok_and(|c| server_leaf(c) == new_leaf)
    })
    .await
    .expect("accepted after the renewal");
    assert_eq!(
        server_leaf(&after),
        new_leaf,
        "new handshakes get the certificate now on disk"
    );
    assert!(before.ping().await, "the open connection is not disturbed");
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_ca_file_change_applies_to_the_next_handshake() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let config = vendor_edge::config(&pki, dir.path(), pki::INVENTORY, |c| {
        // Yealink's CA file starts out holding an unrelated CA.
        c.vendors.get_mut("yealink").unwrap().ca = vec![pki::write(
            dir.path(),
            "yealink-ca.pem",
            &pki.wrong_root.pem,
        )];
    });
    let yealink_ca = config.vendors["yealink"].ca[0].clone();
    let e = vendor_edge::start(config).await;
    let yealink = pki.yealink(pki::YEALINK_MAC);
    assert!(
        probe(&pki, e.tls_addr, &yealink).await.is_err(),
        "refused while its CA is not configured"
    );

    replace_file(&yealink_ca, &pki.yealink_root.pem);
    let mut conn = probe_until(&pki, &e, &yealink, Result::is_ok)
        .await
        .expect("accepted once the right CA is on disk");
    assert!(conn.ping().await);

    // And back: the CA removed again, new handshakes are refused.
    replace_file(&yealink_ca, &pki.wrong_root.pem);
    let refused = probe_until(&pki, &e, &yealink, Result::is_err).await;
    assert!(refused.is_err(), "refused once its CA is gone again");
    e.stop().await.expect("clean shutdown");
}
