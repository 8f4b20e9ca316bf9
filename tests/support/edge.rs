//! An edge running in-process on ephemeral ports, stopped on drop.

use pbx_edge::app::Edge;
use pbx_edge::config::{self, Config};
use pbx_edge::devpki::{self, DevPki};
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A development PKI in a temporary directory (removed on drop).
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub pki: DevPki,
}

pub fn dev_pki() -> TestPki {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = devpki::generate(dir.path(), "sbc.test").expect("dev pki");
    TestPki { dir, pki }
}

/// The development config of `pki` with every listener on an ephemeral loopback port.
pub fn config_for(pki: &TestPki) -> Config {
    config_with(pki, &[])
}

/// Like [`config_for`], with more `PBX_EDGE_*` overrides.
pub fn config_with(pki: &TestPki, extra: &[(&str, &str)]) -> Config {
    let mut env = vec![
        ("PBX_EDGE_TLS__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        (
            "PBX_EDGE_ADMIN__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        ("PBX_EDGE_PBX__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        (
            "PBX_EDGE_SHUTDOWN__DRAIN_TIMEOUT_SECS".to_owned(),
            "2".to_owned(),
        ),
    ];
    env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let c = config::load(&pki.pki.config, env).expect("dev config loads");
    let report = config::validate(&c);
    assert!(report.is_ok(), "{:?}", report.problems);
    c
}

pub struct RunningEdge {
    pub tls_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The edge's PBX-side SIP socket.
    pub pbx_local: SocketAddr,
    /// The HTTPS provisioning gateway, when the config has `[provisioning]`.
    pub provisioning_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), pbx_edge::app::AppError>>>,
}

impl RunningEdge {
    /// An edge on `pki`'s dev config whose PBX is `pbx`, with more `PBX_EDGE_*` overrides.
    pub async fn start_with_pbx(pki: &TestPki, pbx: SocketAddr, extra: &[(&str, &str)]) -> Self {
        let addr = pbx.to_string();
        let mut env = vec![("PBX_EDGE_PBX__ADDRESS", addr.as_str())];
        env.extend_from_slice(extra);
        Self::start(config_with(pki, &env)).await
    }

    pub async fn start(config: Config) -> Self {
        let options = pbx_edge::app::EdgeOptions {
            vendor_ca_dir: std::path::PathBuf::from("/nonexistent/pbx-edge-test-ca"),
        };
        let edge = Edge::bind(config, options).await.expect("edge binds");
        let pbx_local = edge.pbx_local_addr().expect("pbx addr");
        let tls_addr = edge.tls_addr().expect("tls addr");
        let admin_addr = edge.admin_addr().expect("admin addr");
        let provisioning_addr = edge
            .provisioning_addr()
            .map(|a| a.expect("provisioning addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(edge.run(async move {
            let _ = rx.await;
        }));
        Self {
            tls_addr,
            admin_addr,
            pbx_local,
            provisioning_addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits (bounded) for `run` to return.
    pub async fn stop(mut self) -> Result<(), pbx_edge::app::AppError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("task present until stopped");
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("edge stops within 10 s")
            .expect("edge task did not panic")
    }
}

impl Drop for RunningEdge {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
