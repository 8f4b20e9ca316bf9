//! `openssl s_client` (a real TLS stack, like a phone's) against the phone listener's rustls
//! ServerConfig over loopback: verdicts per certificate, RSA-1024 / SHA-1 legacy devices over
//! TLS 1.2, and server-name verification on the client side.
#![cfg(feature = "interop")]

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use pbx_edge::config::Config;
use pbx_edge::identity::{HandshakeCounters, HandshakeRejection, IdentitySnapshot};
use rustls::ServerConfig;
use support::pki::{self, Pki};

const INVENTORY: &str = "[[devices]]\nmac = \"000413a1b2c3\"\nusers = [\"101\"]\n\
                         [[devices]]\nmac = \"000413a1b2d5\"\nusers = [\"102\"]\n";

/// Accepts one connection on 127.0.0.1, runs the handshake, reports the server's verdict.
fn serve_once(config: Arc<ServerConfig>) -> (u16, mpsc::Receiver<Result<(), rustls::Error>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        let mut verdict = Ok(());
        while conn.is_handshaking() {
            match conn.complete_io(&mut tcp) {
                Ok((0, 0)) => break,
                Ok(_) => {}
                Err(error) => {
                    verdict = match error.into_inner().map(|e| e.downcast::<rustls::Error>()) {
                        Some(Ok(tls)) => Err(*tls),
                        _ => Err(rustls::Error::General("i/o".into())),
                    };
                    break;
                }
            }
        }
        if verdict.is_ok() {
            let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
            let _ = stream.write_all(b"OK\n");
        }
        let _ = tx.send(verdict);
    });
    (port, rx)
}

fn s_client(port: u16, ca: &Path, cert: &Path, key: &Path, name: &str, extra: &[&str]) -> Output {
    let connect = format!("127.0.0.1:{port}");
    Command::new("timeout")
        .args([
            "10",
            "openssl",
            "s_client",
            "-connect",
            &connect,
            "-servername",
            name,
        ])
        .args(["-verify_hostname", name, "-verify_return_error", "-CAfile"])
        .arg(ca)
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

struct Env {
    pki: Pki,
    dir: tempfile::TempDir,
    server_ca: PathBuf,
}

impl Env {
    fn new() -> Env {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let server_ca = pki::write(dir.path(), "server-ca.pem", &pki.server_ca.pem);
        Env {
            pki,
            dir,
            server_ca,
        }
    }

    fn config(&self, legacy: bool) -> Config {
        let mut config = pki::config(&self.pki, self.dir.path(), INVENTORY);
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certs");
        let snom = config.vendors.get_mut("snom").unwrap();
        snom.ca.push(fixtures.join("legacy-ca.pem"));
        snom.legacy_crypto = legacy;
        config
    }

    fn verdict(
        &self,
        config: &Config,
        cert: &Path,
        key: &Path,
        name: &str,
        extra: &[&str],
    ) -> (Result<(), HandshakeRejection>, Output) {
        let counters = HandshakeCounters::new();
        let snapshot =
            IdentitySnapshot::load_with_ca_dir(config, &self.dir.path().join("none"), counters)
                .unwrap();
        let (port, verdict) = serve_once(snapshot.server_config());
        let output = s_client(port, &self.server_ca, cert, key, name, extra);
        let verdict = verdict
            .recv_timeout(Duration::from_secs(15))
            .expect("server verdict");
        (
            verdict.map_err(|e| HandshakeRejection::from_tls_error(&e)),
            output,
        )
    }
}

#[test]
fn openssl_client_verdicts() {
    let env = Env::new();
    let config = env.config(false);
    let device = env.pki.snom(pki::SNOM_MAC);
    let cert = pki::write(
        env.dir.path(),
        "snom.pem",
        pki::pem_block("CERTIFICATE", &device.chain[0]),
    );
    let key = pki::write(env.dir.path(), "snom.key", &device.key_pem);
    // Like the phone, send the "Snom Phone 1 SHA-256" intermediate (-cert sends one certificate).
    let intermediate = pki::write(env.dir.path(), "snom-phone.pem", &env.pki.snom_phone.pem);
    let chain = intermediate.to_str().unwrap();
    let (verdict, output) = env.verdict(&config, &cert, &key, "sbc.test", &["-cert_chain", chain]);
    assert_eq!(
        verdict,
        Ok(()),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Verify return code: 0"));

    let stranger =
        env.pki
            .wrong_root
            .device(&[(rcgen::DnType::CommonName, "000413A1B2C3")], |_| {}, &[]);
    let cert = pki::write(env.dir.path(), "stranger.pem", stranger.chain_pem());
    let key = pki::write(env.dir.path(), "stranger.key", &stranger.key_pem);
    let (verdict, output) = env.verdict(&config, &cert, &key, "sbc.test", &["-tls1_2"]);
    assert_eq!(verdict, Err(HandshakeRejection::UnknownIssuer));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown ca"), "{stderr}");
}

#[test]
fn openssl_client_checks_the_server_name() {
    let env = Env::new();
    let config = env.config(false);
    let device = env.pki.snom(pki::SNOM_MAC);
    let cert = pki::write(env.dir.path(), "snom.pem", device.chain_pem());
    let key = pki::write(env.dir.path(), "snom.key", &device.key_pem);
    let (_, output) = env.verdict(&config, &cert, &key, "evil.test", &[]);
    assert!(!output.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("hostname mismatch"), "{all}");
}

#[test]
fn rsa_1024_sha1_device_over_tls12() {
    let env = Env::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certs");
    let cert = fixtures.join("legacy-device-rsa1024.pem");
    let key = fixtures.join("legacy-device-rsa1024.key");
    // OpenSSL itself refuses RSA-1024 at its default security level.
    // ring verifies RSA-PSS from 2048 bits only: the device must sign with PKCS#1 v1.5.
    let relaxed = [
        "-tls1_2",
        "-cipher",
        "DEFAULT:@SECLEVEL=0",
        "-client_sigalgs",
        "RSA+SHA256",
    ];
    let (verdict, output) = env.verdict(&env.config(false), &cert, &key, "sbc.test", &relaxed);
    assert_eq!(
        verdict,
        Err(HandshakeRejection::LegacyCryptoRefused),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (verdict, output) = env.verdict(&env.config(true), &cert, &key, "sbc.test", &relaxed);
    assert_eq!(
        verdict,
        Ok(()),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
