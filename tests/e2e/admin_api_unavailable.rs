//! README "Metrics and admin API": `/api/registrations` and `/api/calls` are built by the SIP
//! core when asked, and answer 503 when the core does not answer within 2 s. The admin server
//! here is the real one (`admin::serve`) over the core's real view handle (`CoreViews`),
//! wired as the edge wires them; the core end of the handle is held but never served (a core
//! stuck in work), or dropped (a core that has stopped).

use std::net::SocketAddr;
use std::time::Duration;

use pbx_edge::admin::{self, Readiness};
use pbx_edge::b2bua::core::{CoreViews, VIEW_TIMEOUT};
use tokio_util::sync::CancellationToken;

use crate::support::http;

/// The admin server on an ephemeral port, its API built from `views` by the edge's own
/// `app::api_routes`.
async fn admin_over(views: CoreViews) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let api = pbx_edge::app::api_routes(views);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(admin::serve(
        listener,
        prometheus::Registry::new(),
        Readiness::new(),
        api,
        admin::ApiAccess::Open,
        async move { stop.cancelled().await },
    ));
    (addr, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_503_when_the_core_does_not_answer() {
    // A core that is alive but never gets to the request.
    let (views, _stuck_core) = CoreViews::channel();
    let (addr, cancel) = admin_over(views).await;
    // The admin side waits VIEW_TIMEOUT for the core, well inside the client's own 5 s.
    assert!(VIEW_TIMEOUT < Duration::from_secs(5));
    for path in ["/api/registrations", "/api/calls"] {
        let (status, body) = http::get(addr, path).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.contains("did not answer"), "{path}: {body}");
    }
    // /metrics and /healthz do not depend on the core.
    assert_eq!(http::get(addr, "/healthz").await.0, 200);
    assert_eq!(http::get(addr, "/metrics").await.0, 200);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_503_when_the_core_has_stopped() {
    let (views, core_end) = CoreViews::channel();
    drop(core_end);
    let (addr, cancel) = admin_over(views).await;
    for path in ["/api/registrations", "/api/calls"] {
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), http::get(addr, path))
            .await
            .expect("answered within the bound");
        assert_eq!(status, 503, "{path}: {body}");
    }
    cancel.cancel();
}
