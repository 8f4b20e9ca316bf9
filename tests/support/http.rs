//! Blocking HTTP GET against the admin port (ureq), run off the async runtime.

use std::net::SocketAddr;

/// (status, body) of `GET http://addr/path`.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, body, _) = get_authorized(addr, path, None).await;
    (status, body)
}

/// The value of a metric line `name{labels} value` (labels as written), or 0 if absent.
pub fn metric(body: &str, name_and_labels: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name_and_labels).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// (status, body, `WWW-Authenticate`) of `GET http://addr/path` with an optional
/// `Authorization` header.
pub async fn get_authorized(
    addr: SocketAddr,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String, Option<String>) {
    let url = format!("http://{addr}{path}");
    let authorization = authorization.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(5)))
            .build()
            .into();
        let mut req = agent.get(&url);
        if let Some(a) = &authorization {
            req = req.header("Authorization", a);
        }
        let mut resp = req.call().expect("admin port answers");
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.body_mut().read_to_string().expect("utf-8 body");
        (status, body, challenge)
    })
    .await
    .expect("http task")
}
