//! A phone-like TLS client (tokio-rustls) that verifies the edge's server certificate and
//! optionally presents a device certificate.

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub fn client_config(server_ca: &Path, device_pem: Option<&Path>) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pbx_edge::config::files::read_certificates(server_ca).expect("server CA") {
        roots.add(c).expect("CA added");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let c = match device_pem {
        Some(p) => {
            let chain = pbx_edge::config::files::read_certificates(p).expect("device cert");
            let key = pbx_edge::config::files::read_private_key(p).expect("device key");
            b.with_client_auth_cert(chain, key).expect("client auth")
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(c)
}

/// Bound on connecting and handshaking: an edge that never answers fails the test with
/// `TimedOut` instead of hanging it.
pub const HANDSHAKE_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects and completes the handshake (or returns the error), bounded by
/// [`HANDSHAKE_BOUND`].
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    tokio::time::timeout(
        HANDSHAKE_BOUND,
        connect_unbounded(addr, server_name, config),
    )
    .await
    .map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no TLS handshake with {addr} within {HANDSHAKE_BOUND:?}"),
        )
    })?
}

async fn connect_unbounded(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut s = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    // In TLS 1.3 the server's verdict on the client certificate arrives after the client's
    // handshake completes: a read surfaces a refusal as an error (or EOF).
    use tokio::io::AsyncWriteExt;
    s.write_all(b"\r\n\r\n").await?;
    s.flush().await?;
    Ok(s)
}
