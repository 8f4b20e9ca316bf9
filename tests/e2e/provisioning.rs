//! The HTTPS provisioning gateway of an in-process edge, with the dev PKI's Snom-style and
//! Yealink-style device certificates as the phones: per-MAC authorization, traversal attempts,
//! `root` and `upstream` modes, reloads applying to the next request, metrics.
//!
//! The phone side writes raw HTTP/1.1 over tokio-rustls on purpose: a hostile phone's request
//! target (`/../x`, `//etc/passwd`, `%00`) must reach the edge exactly as written, which a
//! normalising client library would not guarantee.

use crate::support::{edge, http, tls_client, vendor_edge};
use pbx_edge::config::{Config, ProvisioningConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

const SNOM_FILE: &str = "/000413a1b2c3.cfg";
const YEALINK_FILE: &str = "/805ec0d4e5f6.cfg";
const COMMON_FILE: &str = "/y000000000044.cfg";
const SECRET: &[u8] = b"root-password=outside-the-provisioning-root";

/// One parsed response.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A phone on one keep-alive HTTPS connection.
struct Phone {
    stream: TlsStream<TcpStream>,
    buffer: Vec<u8>,
}

impl Phone {
    /// The status of `GET path` on this connection.
    async fn get_status(&mut self, path: &str) -> u16 {
        self.request("GET", path, &[]).await.expect("answer").status
    }

    async fn connect(
        addr: SocketAddr,
        pki: &edge::TestPki,
        device: Option<&Path>,
    ) -> std::io::Result<Self> {
        let config = tls_client::client_config(&pki.pki.server_ca, device);
        let name = rustls::pki_types::ServerName::try_from("sbc.test").expect("name");
        let handshake = async {
            let tcp = TcpStream::connect(addr).await?;
            tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
        };
        let stream = tokio::time::timeout(tls_client::HANDSHAKE_BOUND, handshake)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no handshake"))??;
        Ok(Self {
            stream,
            buffer: Vec::new(),
        })
    }

    /// Sends `method target` with `headers` and reads one response (bounded: 10 s).
    async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Answer> {
        let mut text = format!("{method} {target} HTTP/1.1\r\nHost: sbc.test\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        self.stream.write_all(text.as_bytes()).await?;
        self.stream.flush().await?;
        tokio::time::timeout(Duration::from_secs(10), self.read_answer(method == "HEAD"))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 10 s"))?
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn read_answer(&mut self, head: bool) -> std::io::Result<Answer> {
        let end = loop {
            if let Some(i) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            self.fill().await?;
        };
        let head_text = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
        self.buffer.drain(..end + 4);
        let mut lines = head_text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        assert!(
            !headers.contains_key("transfer-encoding"),
            "the test phone reads Content-Length bodies only: {headers:?}"
        );
        let length: usize = if head {
            0
        } else {
            headers
                .get("content-length")
                .map(|l| l.parse().expect("content-length"))
                .unwrap_or(0)
        };
        while self.buffer.len() < length {
            self.fill().await?;
        }
        let body = self.buffer.drain(..length).collect();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// One request on a fresh connection.
async fn fetch(
    addr: SocketAddr,
    pki: &edge::TestPki,
    device: &Path,
    method: &str,
    target: &str,
) -> Answer {
    let mut phone = Phone::connect(addr, pki, Some(device))
        .await
        .expect("handshake with a device certificate");
    phone
        .request(method, target, &[("Connection", "close")])
        .await
        .expect("an answer")
}

fn write(path: &Path, contents: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, contents).expect("write");
}

/// A provisioning root beside a directory the phones must never see, with symlinks out of the
/// root whose names the phones are otherwise allowed.
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    snom_bytes: Vec<u8>,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    // Binary-safe content: every byte value, so "byte-exact" means something.
    let mut snom_bytes = b"# snom settings\n".to_vec();
    snom_bytes.extend(0u8..=255);
    write(&root.join(&SNOM_FILE[1..]), &snom_bytes);
    write(
        &root.join(&YEALINK_FILE[1..]),
        b"#!version:1.0.0.1\naccount.1.password=yealink-secret\n",
    );
    write(
        &root.join(&COMMON_FILE[1..]),
        b"#!version:1.0.0.1\nauto_provision.enable=1\n",
    );
    write(&root.join("firmware/d785.bin"), &[0xAA; 10_000]);
    write(&outside.join("000413a1b2c3-secret.cfg"), SECRET);
    write(&dir.path().join("x"), SECRET);
    write(&dir.path().join("passwd"), SECRET);
    std::os::unix::fs::symlink(
        outside.join("000413a1b2c3-secret.cfg"),
        root.join("000413a1b2c3-link.cfg"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(&outside, root.join("firmware/escape")).expect("symlink");
    Tree {
        _dir: dir,
        root,
        snom_bytes,
    }
}

fn provisioning(config: &mut Config, root: Option<PathBuf>, upstream: Option<String>) {
    config.provisioning = Some(ProvisioningConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        upstream,
        root,
        common: vec![COMMON_FILE.into(), "/firmware/*".into()],
        upstream_timeout_secs: 1,
    });
}

fn outcome(body: &str, outcome: &str) -> f64 {
    http::metric(
        body,
        &format!("pbx_edge_provisioning_requests_total{{outcome=\"{outcome}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_mode_serves_each_device_its_own_files_and_nothing_else() {
    let pki = edge::dev_pki();
    let tree = tree();
    let mut config = edge::config_for(&pki);
    provisioning(&mut config, Some(tree.root.clone()), None);
    let e = edge::RunningEdge::start(config).await;
    let addr = e.provisioning_addr.expect("gateway bound");
    let snom = pki.pki.snom_device.clone();
    let yealink = pki.pki.yealink_device.clone();

    // Its own file, byte-exact; HEAD gives the length without the body.
    let a = fetch(addr, &pki, &snom, "GET", SNOM_FILE).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body, tree.snom_bytes);
    assert_eq!(
        a.headers["content-length"],
        tree.snom_bytes.len().to_string()
    );
    let a = fetch(addr, &pki, &snom, "HEAD", SNOM_FILE).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.headers["content-length"],
        tree.snom_bytes.len().to_string()
    );
    // A phone polling for changes: 304 while the file is unchanged (RFC 9110 §13.1.3).
    let last_modified = a.headers["last-modified"].clone();
    let mut poller = Phone::connect(addr, &pki, Some(&snom))
        .await
        .expect("handshake");
    let a = poller
        .request("GET", SNOM_FILE, &[("If-Modified-Since", &last_modified)])
        .await
        .expect("answer");
    assert_eq!(a.status, 304, "{a:?}");
    assert!(a.body.is_empty());
    let a = poller
        .request(
            "GET",
            SNOM_FILE,
            &[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")],
        )
        .await
        .expect("answer");
    assert_eq!((a.status, a.body.len()), (200, tree.snom_bytes.len()));
    // A date later than the file's is not "unchanged" either: an older file restored from a
    // backup must be fetched, so only the exact Last-Modified earns a 304.
    let a = poller
        .request(
            "GET",
            SNOM_FILE,
            &[("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")],
        )
        .await
        .expect("answer");
    assert_eq!((a.status, a.body.len()), (200, tree.snom_bytes.len()));
    drop(poller);
    // Common files, for both devices.
    for device in [&snom, &yealink] {
        let a = fetch(addr, &pki, device, "GET", COMMON_FILE).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.body.starts_with(b"#!version"));
    }
    let a = fetch(addr, &pki, &snom, "GET", "/firmware/d785.bin").await;
    assert_eq!((a.status, a.body.len()), (200, 10_000));
    // Each device's own file only.
    let a = fetch(addr, &pki, &snom, "GET", YEALINK_FILE).await;
    assert_eq!(a.status, 403);
    assert!(!String::from_utf8_lossy(&a.body).contains("yealink-secret"));
    let a = fetch(addr, &pki, &yealink, "GET", YEALINK_FILE).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        fetch(addr, &pki, &yealink, "GET", SNOM_FILE).await.status,
        403
    );
    // Allowed but missing; a directory is not a file.
    assert_eq!(
        fetch(addr, &pki, &snom, "GET", "/firmware/missing.bin")
            .await
            .status,
        404
    );
    assert_eq!(
        fetch(addr, &pki, &snom, "GET", "/firmware/").await.status,
        404
    );
    // Only GET and HEAD (RFC 9110 §15.5.6: 405 names them in Allow).
    let a = fetch(addr, &pki, &snom, "POST", SNOM_FILE).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.headers["allow"], "GET, HEAD");
    assert_eq!(fetch(addr, &pki, &snom, "PUT", SNOM_FILE).await.status, 405);

    // Traversal: refused as a bad path (400) or, where the path is clean but a symlink leads
    // out of the root, refused (403); the secret never comes back.
    let bad_paths = [
        "/../x",
        "/%2e%2e/x",
        "/%2E%2E/%2e%2e/passwd",
        "//etc/passwd",
        "/000413a1b2c3.cfg%00",
        "/000413a1b2c3.cfg%00.png",
        "/firmware/..%2f..%2fx",
        "/firmware/%2e%2e%2f%2e%2e%2fx",
        "/firmware/..%5c..%5cx",
        "/./000413a1b2c3.cfg",
        "/%zz",
        "/%ff.cfg",
    ];
    for path in bad_paths {
        let a = fetch(addr, &pki, &snom, "GET", path).await;
        assert_eq!(a.status, 400, "{path}: {a:?}");
        assert!(!a.body.windows(SECRET.len()).any(|w| w == SECRET), "{path}");
    }
    for path in [
        "/000413a1b2c3-link.cfg",
        "/firmware/escape/000413a1b2c3-secret.cfg",
    ] {
        let a = fetch(addr, &pki, &snom, "GET", path).await;
        assert_eq!(a.status, 403, "{path}: {a:?}");
        assert!(!a.body.windows(SECRET.len()).any(|w| w == SECRET), "{path}");
    }

    let body = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(outcome(&body, "served"), 8.0, "{body}");
    assert_eq!(outcome(&body, "not_modified"), 1.0, "{body}");
    assert_eq!(outcome(&body, "not_found"), 2.0, "{body}");
    assert_eq!(outcome(&body, "denied"), 4.0, "{body}");
    assert_eq!(outcome(&body, "method_not_allowed"), 2.0, "{body}");
    assert_eq!(
        outcome(&body, "bad_request"),
        bad_paths.len() as f64,
        "{body}"
    );
    assert_eq!(outcome(&body, "upstream_error"), 0.0, "{body}");
    // One connection per request above (the poller's two share one): 7 + 2 + 2 + 2 + 2 + the
    // bad paths.
    assert_eq!(
        http::metric(&body, "pbx_edge_provisioning_handshakes_total"),
        15.0 + bad_paths.len() as f64,
        "{body}"
    );
    // The SIP listener's own counter did not see the gateway's handshakes.
    assert_eq!(
        http::metric(&body, "pbx_edge_tls_handshakes_total"),
        0.0,
        "{body}"
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_no_handshake() {
    let pki = edge::dev_pki();
    let tree = tree();
    let mut config = edge::config_for(&pki);
    // Even where the SIP listener lets anonymous phones in, the gateway does not.
    config.tls.client_cert = pbx_edge::config::ClientCertMode::Optional;
    provisioning(&mut config, Some(tree.root.clone()), None);
    let e = edge::RunningEdge::start(config).await;
    let addr = e.provisioning_addr.expect("gateway bound");
    let refused = match Phone::connect(addr, &pki, None).await {
        Err(_) => true,
        // TLS 1.3: the server's verdict on the (absent) certificate arrives after the client
        // finished; the request then fails instead of being answered.
        Ok(mut phone) => phone.request("GET", COMMON_FILE, &[]).await.is_err(),
    };
    assert!(
        refused,
        "a phone without a certificate must not get an answer"
    );
    let label = "pbx_edge_tls_handshake_failures_total{reason=\"no_certificate\",vendor=\"none\"}";
    let mut body = String::new();
    for _ in 0..50 {
        body = http::get(e.admin_addr, "/metrics").await.1;
        if http::metric(&body, label) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http::metric(&body, label), 1.0, "{body}");
    assert_eq!(
        http::metric(&body, "pbx_edge_provisioning_handshakes_total"),
        0.0
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_reload_applies_to_the_next_request_on_the_same_connection() {
    let pki = edge::dev_pki();
    let tree = tree();
    write(&tree.root.join("snom/000413A1B2C3.xml"), b"<settings/>");
    let mut config = edge::config_for(&pki);
    provisioning(&mut config, Some(tree.root.clone()), None);
    let e = edge::RunningEdge::start(config).await;
    let addr = e.provisioning_addr.expect("gateway bound");
    let mut phone = Phone::connect(addr, &pki, Some(&pki.pki.snom_device))
        .await
        .expect("handshake");
    assert_eq!(phone.get_status(SNOM_FILE).await, 200);
    assert_eq!(
        phone.get_status("/snom/000413A1B2C3.xml").await,
        200,
        "the default rule: the file name carries the MAC"
    );

    // The Snom now gets an explicit list: only its XML file (upper-case MAC).
    let inventory = std::fs::read_to_string(&pki.pki.inventory).expect("inventory");
    let restricted = inventory.replace(
        "users = [\"101\"]",
        "users = [\"101\"]\nprovisioning = [\"/snom/{MAC}.xml\"]",
    );
    assert_ne!(inventory, restricted);
    vendor_edge::replace_file(&pki.pki.inventory, &restricted);
    let ok = "pbx_edge_identity_reloads_total{result=\"ok\"}";
    let mut reloaded = false;
    for _ in 0..50 {
        if http::metric(&http::get(e.admin_addr, "/metrics").await.1, ok) >= 1.0 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "the inventory change was reloaded");
    assert_eq!(phone.get_status(SNOM_FILE).await, 403);
    let a = phone
        .request("GET", "/snom/000413A1B2C3.xml", &[])
        .await
        .expect("answer");
    assert_eq!(
        (a.status, a.body.as_slice()),
        (200, b"<settings/>".as_slice())
    );
    assert_eq!(phone.get_status(COMMON_FILE).await, 200);

    // The device leaves the inventory: nothing at all, not even common files.
    vendor_edge::replace_file(
        &pki.pki.inventory,
        &inventory.replace("000413A1B2C3", "000413A1B2FF"),
    );
    let mut refused = false;
    for _ in 0..50 {
        match phone.request("GET", COMMON_FILE, &[]).await {
            Ok(a) if a.status == 200 => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(a) => {
                assert_eq!(a.status, 403);
                refused = true;
                break;
            }
            Err(e) => panic!("connection failed: {e}"),
        }
    }
    assert!(refused, "a device removed from the inventory is refused");
    // Graceful shutdown with the keep-alive connection still open.
    e.stop().await.expect("clean shutdown");
}

/// What the test upstream saw: request target and headers (lower-case names, every value).
type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// A tiny HTTP/1.1 provisioning server (hyper) on 127.0.0.1: `/..-slow..` never answers in
/// time, `/..-missing..` is 404, anything else 200 with `upstream <target>`.
async fn upstream() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move {
                            let target = request.uri().to_string();
                            let headers = request
                                .headers()
                                .iter()
                                .map(|(n, v)| {
                                    (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned())
                                })
                                .collect();
                            record.lock().expect("lock").push((target.clone(), headers));
                            if target.contains("-slow") {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                            }
                            let status = if target.contains("-missing") {
                                404
                            } else {
                                200
                            };
                            let body = format!("upstream {target}");
                            let response = hyper::Response::builder()
                                .status(status)
                                .header("content-type", "text/plain")
                                .header("content-length", body.len())
                                .header("etag", "\"v1\"")
                                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                .expect("response");
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mode_forwards_with_the_certificate_mac_and_strips_forged_headers() {
    let pki = edge::dev_pki();
    let (upstream_addr, seen) = upstream().await;
    let mut config = edge::config_for(&pki);
    provisioning(&mut config, None, Some(format!("http://{upstream_addr}")));
    let e = edge::RunningEdge::start(config).await;
    let addr = e.provisioning_addr.expect("gateway bound");

    let mut phone = Phone::connect(addr, &pki, Some(&pki.pki.snom_device))
        .await
        .expect("handshake");
    let a = phone
        .request(
            "GET",
            "/000413a1b2c3.cfg?model=D785",
            &[
                ("User-Agent", "snomD785/10.1.184.15"),
                ("If-None-Match", "\"v0\""),
                ("X-Pbx-Edge-Mac", "805ec0d4e5f6"),
                ("x-pbx-edge-vendor", "yealink"),
                ("Authorization", "Basic c2VjcmV0"),
                ("Cookie", "session=1"),
            ],
        )
        .await
        .expect("answer");
    assert_eq!(a.status, 200, "{a:?}");
    // The query stays at the edge (only the authorized path is forwarded).
    assert_eq!(a.body, b"upstream /000413a1b2c3.cfg");
    assert_eq!(a.headers["etag"], "\"v1\"");
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1);
        let (target, headers) = &seen[0];
        assert_eq!(target, "/000413a1b2c3.cfg");
        assert_eq!(
            values(headers, "x-pbx-edge-mac"),
            ["000413a1b2c3"],
            "{headers:?}"
        );
        assert_eq!(
            values(headers, "x-pbx-edge-vendor"),
            ["snom"],
            "{headers:?}"
        );
        assert_eq!(values(headers, "user-agent"), ["snomD785/10.1.184.15"]);
        assert_eq!(values(headers, "if-none-match"), ["\"v0\""]);
        assert_eq!(
            values(headers, "host"),
            [upstream_addr.to_string().as_str()]
        );
        assert!(values(headers, "authorization").is_empty(), "{headers:?}");
        assert!(values(headers, "cookie").is_empty(), "{headers:?}");
    }
    // Denied and malformed requests never reach the upstream.
    assert_eq!(phone.get_status(YEALINK_FILE).await, 403);
    assert_eq!(phone.get_status("/%2e%2e/etc/passwd").await, 400);
    assert_eq!(seen.lock().expect("lock").len(), 1);
    // The path is decoded once and re-encoded: the upstream sees what was authorised.
    let a = phone
        .request("GET", "/firmware/a%20b%252e.bin", &[])
        .await
        .expect("answer");
    assert_eq!(a.status, 200);
    assert_eq!(seen.lock().expect("lock")[1].0, "/firmware/a%20b%252e.bin");
    // The upstream's 404 passes through.
    let a = phone
        .request("GET", "/000413a1b2c3-missing.cfg", &[])
        .await
        .expect("answer");
    assert_eq!(a.status, 404);
    // The Yealink is told apart by its certificate.
    let a = fetch(addr, &pki, &pki.pki.yealink_device, "GET", YEALINK_FILE).await;
    assert_eq!(a.status, 200);
    let last = seen.lock().expect("lock").last().cloned().expect("seen");
    assert_eq!(values(&last.1, "x-pbx-edge-mac"), ["805ec0d4e5f6"]);
    assert_eq!(values(&last.1, "x-pbx-edge-vendor"), ["yealink"]);
    // An upstream that does not answer within upstream_timeout_secs (1 s; it sleeps 30 s).
    let a = phone
        .request("GET", "/000413a1b2c3-slow.cfg", &[])
        .await
        .expect("answer");
    assert_eq!(a.status, 504);

    let body = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(outcome(&body, "served"), 3.0, "{body}");
    assert_eq!(outcome(&body, "not_found"), 1.0, "{body}");
    assert_eq!(outcome(&body, "denied"), 1.0, "{body}");
    assert_eq!(outcome(&body, "bad_request"), 1.0, "{body}");
    assert_eq!(outcome(&body, "upstream_timeout"), 1.0, "{body}");
    assert_eq!(outcome(&body, "upstream_error"), 0.0, "{body}");
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502() {
    let pki = edge::dev_pki();
    // A port that was free a moment ago: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let mut config = edge::config_for(&pki);
    provisioning(&mut config, None, Some(format!("http://{closed_addr}")));
    let e = edge::RunningEdge::start(config).await;
    let addr = e.provisioning_addr.expect("gateway bound");
    let a = fetch(addr, &pki, &pki.pki.snom_device, "GET", SNOM_FILE).await;
    assert_eq!(a.status, 502, "{a:?}");
    let body = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(outcome(&body, "upstream_error"), 1.0, "{body}");
    assert_eq!(outcome(&body, "served"), 0.0, "{body}");
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_put_on_the_deny_list_is_refused_on_its_open_connection() {
    let pki = edge::dev_pki();
    let tree = tree();
    let deny = tree.root.parent().expect("parent").join("deny.txt");
    write(&deny, b"# stolen phones\n");
    let mut config = edge::config_for(&pki);
    config.tls.mac_deny_list = Some(deny.clone());
    provisioning(&mut config, Some(tree.root.clone()), None);
    let e = edge::RunningEdge::start(config).await;
    let addr = e.provisioning_addr.expect("gateway bound");
    let mut yealink = Phone::connect(addr, &pki, Some(&pki.pki.yealink_device))
        .await
        .expect("handshake");
    let mut snom = Phone::connect(addr, &pki, Some(&pki.pki.snom_device))
        .await
        .expect("handshake");
    assert_eq!(yealink.get_status(YEALINK_FILE).await, 200);

    vendor_edge::replace_file(&deny, "# stolen phones\n80-5E-C0-D4-E5-F6\n");
    let mut refused = false;
    for _ in 0..50 {
        let a = yealink
            .request("GET", COMMON_FILE, &[])
            .await
            .expect("answer");
        if a.status == 403 {
            refused = true;
            break;
        }
        assert_eq!(a.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "the denied MAC is refused on its kept-alive connection"
    );
    assert_eq!(yealink.get_status(YEALINK_FILE).await, 403);
    // The other device is not affected.
    assert_eq!(
        snom.request("GET", SNOM_FILE, &[])
            .await
            .expect("answer")
            .status,
        200
    );
    e.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_over_its_request_budget_gets_429_with_retry_after() {
    let pki = edge::dev_pki();
    let tree = tree();
    let mut config = edge::config_for(&pki);
    provisioning(&mut config, Some(tree.root.clone()), None);
    config.sip.phone_requests_per_second = 1;
    config.sip.phone_request_burst = 2;
    let e = edge::RunningEdge::start(config).await;
    let addr = e.provisioning_addr.expect("gateway bound");

    let mut snom = Phone::connect(addr, &pki, Some(&pki.pki.snom_device))
        .await
        .expect("handshake");
    for _ in 0..2 {
        let a = snom.request("GET", SNOM_FILE, &[]).await.expect("answer");
        assert_eq!(a.status, 200, "{a:?}");
    }
    let a = snom.request("GET", SNOM_FILE, &[]).await.expect("answer");
    assert_eq!(a.status, 429, "{a:?}");
    let retry: u32 = a.headers["retry-after"].parse().expect("seconds");
    assert!(retry >= 1);
    // A new connection from the same device draws from the same, spent budget: a fresh
    // bucket would serve 2 requests before a 429, the shared one at most what refilled
    // meanwhile (1/s; this runs in well under 2 s).
    let mut again = Phone::connect(addr, &pki, Some(&pki.pki.snom_device))
        .await
        .expect("handshake");
    let mut served_first = 0;
    loop {
        let a = again.request("GET", SNOM_FILE, &[]).await.expect("answer");
        if a.status == 429 {
            break;
        }
        assert_eq!(a.status, 200, "{a:?}");
        served_first += 1;
        assert!(served_first < 2, "the new connection got a fresh budget");
    }
    // Another device is not affected.
    let a = fetch(addr, &pki, &pki.pki.yealink_device, "GET", YEALINK_FILE).await;
    assert_eq!(a.status, 200, "{a:?}");

    let body = http::get(e.admin_addr, "/metrics").await.1;
    assert_eq!(outcome(&body, "rate_limited"), 2.0, "{body}");
    assert_eq!(
        outcome(&body, "served"),
        3.0 + f64::from(served_first),
        "{body}"
    );
    e.stop().await.expect("clean shutdown");
}
