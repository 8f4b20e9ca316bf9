//! An in-process edge serving the rcgen vendor PKI of [`super::pki`] on ephemeral loopback
//! ports, and a phone-side probe: connect with a device certificate, send an RFC 5626 CRLFCRLF
//! keep-alive, and see whether the edge answers it (accepted) or drops the connection (refused).

use super::edge::RunningEdge;
use super::pki::{self, Device, Pki};
use pbx_edge::config::Config;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// [`pki::config`] with every listener on 127.0.0.1:0, adjusted by `customize`.
pub fn config(
    pki: &Pki,
    dir: &Path,
    inventory: &str,
    customize: impl FnOnce(&mut Config),
) -> Config {
    let mut config = pki::config(pki, dir, inventory);
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin.listen = any;
    config.pbx.listen = any;
    config.shutdown.drain_timeout_secs = 2;
    customize(&mut config);
    config
}

/// Starts the edge with `config`.
pub async fn start(config: Config) -> RunningEdge {
    RunningEdge::start(config).await
}

/// Replaces `path` atomically (write beside, then rename), so the edge's reload loop never
/// reads a half-written file.
pub fn replace_file(path: &Path, contents: &str) {
    let tmp: PathBuf = path.with_extension("tmp-new");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the old file");
}

/// A connection the edge accepted: it answered the keep-alive.
pub struct Accepted(pub TlsStream<TcpStream>);

impl Accepted {
    /// Sends CRLFCRLF and expects the CRLF pong (RFC 5626 §3.5.1), bounded: 5 s.
    pub async fn ping(&mut self) -> bool {
        if self.0.write_all(b"\r\n\r\n").await.is_err() || self.0.flush().await.is_err() {
            return false;
        }
        pong(&mut self.0).await
    }

    /// Waits up to `limit` for the edge to close the connection (EOF or error).
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut b = [0u8; 256];
        loop {
            match tokio::time::timeout_at(deadline, self.0.read(&mut b)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
}

async fn pong(s: &mut TlsStream<TcpStream>) -> bool {
    let mut b = [0u8; 2];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b)).await,
        Ok(Ok(_)) if &b == b"\r\n"
    )
}

/// Presents `device` to the running listener (trusting the test server CA, name sbc.test).
/// `Ok` when the handshake completes and the keep-alive is answered; `Err` says how it failed.
pub async fn probe(pki: &Pki, addr: SocketAddr, device: &Device) -> Result<Accepted, String> {
    probe_chain(pki, addr, device.chain.clone(), device.key()).await
}

/// Like [`probe`] with an explicit chain and key.
pub async fn probe_chain(
    pki: &Pki,
    addr: SocketAddr,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Accepted, String> {
    let config = pki::client_config(pki, Some((chain, key)));
    // `connect` completes the client's side of the handshake and sends CRLFCRLF; in TLS 1.3 the
    // server's verdict on the certificate arrives after that, on the first read.
    let mut stream = super::tls_client::connect(addr, "sbc.test", config)
        .await
        .map_err(|e| format!("handshake failed: {e}"))?;
    if pong(&mut stream).await {
        Ok(Accepted(stream))
    } else {
        Err("no keep-alive answer: the edge closed the connection".to_owned())
    }
}
