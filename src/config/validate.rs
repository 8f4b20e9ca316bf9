//! Everything about a parsed [`Config`] that can be wrong: unreadable files, a key that does
//! not match its certificate, a wildcard server certificate (RFC 5922 §7.2), a bad port range,
//! listeners that overlap. Every problem is collected, each naming the key and the file, so
//! `check-config` can list them all at once.

use super::files::{self, FileError};
use super::pattern::PathPattern;
use super::server_cert;
use super::{ClientCertMode, Config, PbxTransport, ProvisioningConfig};
use rustls_pki_types::{TrustAnchor, UnixTime};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config key, e.g. `tls.certificates[0].key`.
    pub key: String,
    /// The file the key names, when the problem is with a file.
    pub file: Option<PathBuf>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The result of validation: problems (fatal) and warnings (relaxations in force, and what
/// phones will make of the server certificates).
#[derive(Debug, Default, Clone)]
pub struct ValidationReport {
    pub problems: Vec<Problem>,
    /// Explicit relaxations of a safe default, and server-certificate advice (expiring soon,
    /// a private CA the phones must be given); logged loudly at start-up.
    pub warnings: Vec<String>,
}

impl ValidationReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, key: impl Into<String>, file: Option<PathBuf>, msg: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            file,
            message: msg.into(),
        });
    }

    fn file_problem(&mut self, key: &str, e: FileError) {
        self.problem(key, Some(e.path().to_path_buf()), e.to_string());
    }
}

/// Organisation name of the public example server certificate shipped in `config/example/`.
const EXAMPLE_MARKER: &str = "pbx-edge EXAMPLE";

/// Validates everything that needs the file system or crosses sections.
pub fn validate(config: &Config) -> ValidationReport {
    validate_at(config, UnixTime::now())
}

/// [`validate`] at a given time (the server certificates' validity depends on it).
pub fn validate_at(config: &Config, now: UnixTime) -> ValidationReport {
    validate_with(config, now, webpki_roots::TLS_SERVER_ROOTS)
}

/// [`validate_at`] with the roots phones are assumed to trust (tests use their own).
fn validate_with(config: &Config, now: UnixTime, roots: &[TrustAnchor<'_>]) -> ValidationReport {
    let mut r = ValidationReport::default();
    check_server_certificates(config, now, roots, &mut r);
    check_vendors(config, &mut r);
    check_other_files(config, &mut r);
    check_media(config, &mut r);
    check_listeners(config, &mut r);
    check_timeouts_and_log(config, &mut r);
    check_admin(config, &mut r);
    if let Some(p) = &config.provisioning {
        check_provisioning(config, p, &mut r);
    }
    check_hep(&config.hep, &mut r);
    if config.call_log.file.as_deref() == Some("") {
        r.problem(
            "call_log.file",
            None,
            "is empty: remove the key to switch the call log off, or name a file or \"-\"",
        );
    }
    r
}

/// `[hep]`: a `host:port` address, a usable queue, a non-empty password when set. Capture on
/// is a warning: the collector receives the phones' decrypted SIP.
fn check_hep(hep: &crate::config::HepConfig, r: &mut ValidationReport) {
    let Some(address) = hep.address.as_deref() else {
        return;
    };
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !port_ok {
        r.problem(
            "hep.address",
            None,
            format!("{address:?} is not host:port (e.g. \"10.0.0.20:9060\")"),
        );
    }
    if hep.queue == 0 || hep.queue > 1 << 20 {
        r.problem("hep.queue", None, "must be between 1 and 1048576 messages");
    }
    // One message of the largest SIP size must fit, or large INVITEs would never be captured.
    if hep.queue_bytes < 65_536 {
        r.problem(
            "hep.queue_bytes",
            None,
            "must be at least 65536 (one large SIP message)",
        );
    }
    if hep.password.as_deref().is_some_and(str::is_empty) {
        r.problem(
            "hep.password",
            None,
            "must not be empty (leave it out to send no key)",
        );
    }
    r.warnings.push(format!(
        "hep.address = {address:?}: every SIP message of both legs, the phones' decrypted \
         signalling and digest responses included, is copied in clear to that HEP collector \
         over {}",
        hep.transport.as_str()
    ));
}

fn check_server_certificates(
    config: &Config,
    now: UnixTime,
    roots: &[TrustAnchor<'_>],
    r: &mut ValidationReport,
) {
    let tls = &config.tls;
    // Which certificates carry the name phones use (index, covers it).
    let mut names: Vec<(usize, bool)> = Vec::new();
    if tls.certificates.is_empty() {
        r.problem(
            "tls.certificates",
            None,
            "no server certificate configured: add a [[tls.certificates]] entry with cert and key",
        );
    }
    if tls.allow_wildcard_server_cert {
        r.warnings.push(
            "tls.allow_wildcard_server_cert = true: wildcard server certificates are accepted \
             although RFC 5922 §7.2 forbids them and validating phones reject them"
                .into(),
        );
    }
    let provider = rustls::crypto::ring::default_provider();
    for (i, entry) in tls.certificates.iter().enumerate() {
        let cert_key = format!("tls.certificates[{i}].cert");
        let key_key = format!("tls.certificates[{i}].key");
        let chain = match files::read_certificates(&entry.cert) {
            Ok(c) => Some(c),
            Err(e) => {
                r.file_problem(&cert_key, e);
                None
            }
        };
        let key = match files::read_private_key(&entry.key) {
            Ok(k) => Some(k),
            Err(e) => {
                r.file_problem(&key_key, e);
                None
            }
        };
        let Some(chain) = chain else { continue };
        // An unparsable leaf is reported below, a sip.domain that is no host name by the sip
        // checks: neither is judged here.
        if let Ok(seen) = server_cert::inspect(&chain, &config.sip.domain, now, roots) {
            names.push((i, seen.covers_name));
            as_phones_see_it(&cert_key, &entry.cert, &seen, r);
        }
        let Some(leaf) = chain.first() else { continue };
        match x509_parser::parse_x509_certificate(leaf) {
            Err(e) => r.problem(
                &cert_key,
                Some(entry.cert.clone()),
                format!("first certificate does not parse: {e}"),
            ),
            Ok((_, parsed)) => {
                if parsed
                    .subject()
                    .iter_organization()
                    .any(|o| o.as_str().is_ok_and(|o| o.contains(EXAMPLE_MARKER)))
                {
                    r.warnings.push(format!(
                        "{cert_key} = {} is the public EXAMPLE certificate from the repository: \
                         its key is known to everyone; replace it before production",
                        entry.cert.display()
                    ));
                }
                let wildcards = wildcard_names(&parsed);
                if !wildcards.is_empty() && !tls.allow_wildcard_server_cert {
                    r.problem(
                        &cert_key,
                        Some(entry.cert.clone()),
                        format!(
                            "wildcard server certificate ({}) refused: RFC 5922 §7.2 forbids \
                             wildcards for SIP; set tls.allow_wildcard_server_cert = true to \
                             accept it anyway",
                            wildcards.join(", ")
                        ),
                    );
                }
            }
        }
        if let Some(key) = key {
            if let Err(e) = rustls::sign::CertifiedKey::from_der(chain, key, &provider) {
                r.problem(
                    &key_key,
                    Some(entry.key.clone()),
                    format!(
                        "key {} does not fit certificate {}: {e}",
                        entry.key.display(),
                        entry.cert.display()
                    ),
                );
            }
        }
    }
    check_names(config, &names, r);
}

/// The name check over all server certificates: phones connect to `sip.domain` and refuse a
/// certificate without it in its subjectAltName (EIDENTITY_NOT_MATCH, RFC 5922 §7.1). The
/// first certificate is the one phones get without SNI.
fn check_names(config: &Config, names: &[(usize, bool)], r: &mut ValidationReport) {
    let domain = &config.sip.domain;
    if names.is_empty() {
        return;
    }
    match names.iter().find(|(_, covers)| *covers) {
        None => r.problem(
            "sip.domain",
            None,
            format!(
                "no server certificate has {domain:?} in its subjectAltName, and that is the \
                 name phones connect to and check: every phone that validates the server \
                 certificate would refuse the edge; issue the certificate for {domain:?} or \
                 set sip.domain to a name it carries"
            ),
        ),
        Some((i, _)) if *i != 0 && names.first().is_some_and(|(first, _)| *first == 0) => {
            r.warnings.push(format!(
                "tls.certificates[0].cert does not carry sip.domain = {domain:?} (only \
                 tls.certificates[{i}] does): phones that send no SNI get certificates[0] and \
                 refuse it; put the certificate for {domain:?} first"
            ))
        }
        Some(_) => {}
    }
}

/// Validity and chain of one server certificate as a phone sees them: expired or not yet
/// valid is a problem (every phone refuses it), expiring within 30 days and a chain that does
/// not end at a public root are warnings (phones that were given the private CA accept it).
fn as_phones_see_it(
    cert_key: &str,
    file: &std::path::Path,
    seen: &server_cert::Inspection,
    r: &mut ValidationReport,
) {
    use server_cert::{Trust, Validity};
    let shown = file.display();
    match seen.validity {
        Validity::Expired { days_ago } => r.problem(
            cert_key,
            Some(file.to_path_buf()),
            format!(
                "server certificate {shown} expired {days_ago} day(s) ago ({}): phones refuse it",
                seen.not_after
            ),
        ),
        Validity::NotYetValid => r.problem(
            cert_key,
            Some(file.to_path_buf()),
            format!("server certificate {shown} is not valid yet: phones refuse it"),
        ),
        Validity::Valid { days_left } if days_left < server_cert::EXPIRY_WARNING_DAYS => {
            r.warnings.push(format!(
                "{cert_key} = {shown} expires in {days_left} day(s) ({}): renew it before \
                 phones start refusing the edge",
                seen.not_after
            ))
        }
        Validity::Valid { .. } => {}
    }
    const HOW: &str = "load that CA onto every phone as a trusted server CA (Snom, Yealink, \
                       Polycom, Cisco MPP, Grandstream, Fanvil: see deploy/phones/README.md)";
    match &seen.trust {
        Trust::PublicRoot => {}
        Trust::UnknownIssuer {
            self_signed_leaf: true,
            ..
        } => r.warnings.push(format!(
            "{cert_key} = {shown} is self-signed: no phone trusts it unless this very \
             certificate is loaded onto every phone as a trusted CA; better issue it from a \
             private CA and {HOW}"
        )),
        Trust::UnknownIssuer {
            issuer,
            ends_at_root: true,
            ..
        } => r.warnings.push(format!(
            "{cert_key} = {shown} chains to the private CA {issuer:?}, not to a public root \
             (Mozilla list): phones refuse it (EUNTRUSTED) unless you {HOW}"
        )),
        Trust::UnknownIssuer { issuer, .. } => r.warnings.push(format!(
            "{cert_key} = {shown} does not chain to a public root (Mozilla list): the file \
             stops at a certificate issued by {issuer:?}. If that is an intermediate, append it \
             to the file (phones do not fetch missing intermediates and refuse the chain); if \
             it is your private CA, {HOW}"
        )),
        Trust::Refused(why) => r.warnings.push(format!(
            "{cert_key} = {shown}: the chain is refused by a standard TLS client \
             verification ({why}); phones will likely refuse it too"
        )),
    }
}

/// DNS names (SAN, else CN) of a certificate that contain a wildcard label.
pub fn wildcard_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push((*d).to_owned());
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            names.push(s.to_owned());
        }
    }
    names.retain(|n| n.contains('*'));
    names.dedup();
    names
}

fn check_vendors(config: &Config, r: &mut ValidationReport) {
    let mut any_ca = false;
    for (name, v) in &config.vendors {
        if v.enabled == Some(false) {
            continue;
        }
        for (i, p) in v.ca.iter().enumerate() {
            match files::read_certificates(p) {
                Ok(_) => any_ca = true,
                Err(e) => r.file_problem(&format!("vendors.{name}.ca[{i}]"), e),
            }
        }
        for (i, p) in v.crl.iter().enumerate() {
            if let Err(e) = files::read_crls(p) {
                r.file_problem(&format!("vendors.{name}.crl[{i}]"), e);
            }
        }
        if v.legacy_crypto {
            r.warnings.push(format!(
                "vendors.{name}.legacy_crypto = true: SHA-1 signatures and RSA-1024 keys are \
                 accepted for {name} device certificates"
            ));
        }
        if v.shared_certs == crate::config::SharedCertPolicy::Shared {
            let named = if v.shared_cert_names.is_empty() {
                String::new()
            } else {
                format!(
                    " (also certificates whose only CN is one of {:?})",
                    v.shared_cert_names
                )
            };
            r.warnings.push(format!(
                "vendors.{name}.shared_certs = \"shared\": {name}'s shared non-unique \
                 certificate is accepted as identity \"shared\"{named}"
            ));
        }
    }
    match config.tls.client_cert {
        ClientCertMode::Required if !any_ca => r.problem(
            "vendors",
            None,
            "tls.client_cert = \"required\" but no vendor profile has a readable CA file: \
             no phone could connect (add vendors.<name>.ca)",
        ),
        ClientCertMode::Required => {}
        mode => r.warnings.push(format!(
            "tls.client_cert = \"{}\": phones without a device certificate are accepted as \
             anonymous",
            mode.as_str()
        )),
    }
}

fn check_other_files(config: &Config, r: &mut ValidationReport) {
    if let Some(p) = &config.tls.mac_deny_list {
        if let Err(e) = files::check_readable(p) {
            r.file_problem("tls.mac_deny_list", e);
        }
    }
    match &config.inventory.file {
        Some(p) => {
            if let Err(e) = files::check_readable(p) {
                r.file_problem("inventory.file", e);
            }
        }
        None => r.problem(
            "inventory.file",
            None,
            "no device inventory configured: without one no device may use any SIP user",
        ),
    }
}

/// A DSCP is six bits (RFC 2474 §3): a larger value would spill into the ECN bits.
fn check_dscp(key: &str, dscp: u8, r: &mut ValidationReport) {
    if dscp > super::MAX_DSCP {
        r.problem(
            key,
            None,
            format!("DSCP {dscp} is outside 0..=63 (46 = EF, 24 = CS3, 0 = unmarked)"),
        );
    }
}

fn check_media(config: &Config, r: &mut ValidationReport) {
    let m = &config.media;
    check_dscp("media.dscp", m.dscp, r);
    for problem in super::port_range::problems(m.port_min, m.port_max) {
        r.problem(problem.key(), None, problem.to_string());
    }
    if m.phone_advertise.is_unspecified() {
        r.problem(
            "media.phone_advertise",
            None,
            "must be an address phones can reach, not 0.0.0.0 / ::",
        );
    }
    if m.pbx_bind.is_unspecified() {
        r.problem(
            "media.pbx_bind",
            None,
            "is written into the PBX's SDP: it must be a concrete address, not 0.0.0.0 / ::",
        );
    }
    if m.accept_unannounced_unencrypted_srtcp {
        r.warnings.push(
            "media.accept_unannounced_unencrypted_srtcp = true: SRTCP without encryption is \
             accepted from phones that did not announce UNENCRYPTED_SRTCP (authentication is \
             still checked)"
                .into(),
        );
    }
    if m.srtp == super::SrtpPolicy::Optional {
        r.warnings
            .push("media.srtp = \"optional\": phones may send plain RTP (best-effort SRTP)".into());
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

/// Port 0 asks the OS for a free port, so it never collides.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.ip().is_unspecified() && a.is_ipv4() == b.is_ipv4())
            || (b.ip().is_unspecified() && a.is_ipv4() == b.is_ipv4()))
}

fn check_listeners(config: &Config, r: &mut ValidationReport) {
    let pbx_proto = match config.pbx.transport {
        PbxTransport::Udp => Proto::Udp,
        PbxTransport::Tcp => Proto::Tcp,
    };
    let mut listeners = vec![
        ("tls.listen", config.tls.listen, Proto::Tcp),
        ("admin.listen", config.admin.listen, Proto::Tcp),
        ("pbx.listen", config.pbx.listen, pbx_proto),
    ];
    if let Some(p) = &config.provisioning {
        listeners.push(("provisioning.listen", p.listen, Proto::Tcp));
    }
    // (port 0 is checked inside `overlaps`)
    for (i, (ka, a, pa)) in listeners.iter().enumerate() {
        for (kb, b, pb) in listeners.iter().skip(i + 1) {
            if pa == pb && overlaps(*a, *b) {
                r.problem(
                    *kb,
                    None,
                    format!("{b} overlaps {ka} = {a}: two listeners cannot share an address"),
                );
            }
        }
    }
    if config.pbx.listen == config.pbx.address {
        r.problem(
            "pbx.listen",
            None,
            format!(
                "{} is also pbx.address: the edge would send to itself",
                config.pbx.listen
            ),
        );
    }
    // UDP listeners inside the media range would collide with relay sockets.
    let m = &config.media;
    if pbx_proto == Proto::Udp {
        let p = config.pbx.listen.port();
        if p >= m.port_min && p <= m.port_max {
            r.problem(
                "pbx.listen",
                None,
                format!(
                    "port {p} lies inside the media port range {}-{}",
                    m.port_min, m.port_max
                ),
            );
        }
    }
}

/// `[admin]`: a token file that holds a usable token; a note when `/api/*` is off because
/// the listener is reachable from outside and no token guards it.
fn check_admin(config: &Config, r: &mut ValidationReport) {
    let admin = &config.admin;
    match &admin.api_token_file {
        Some(file) => match std::fs::read_to_string(file) {
            Ok(text) if super::api_token::token_from_file_text(&text).is_some() => {}
            Ok(_) => r.problem(
                "admin.api_token_file",
                Some(file.clone()),
                format!(
                    "{} holds no token of at least {} characters",
                    file.display(),
                    super::api_token::MIN_TOKEN_LEN
                ),
            ),
            Err(e) => r.problem(
                "admin.api_token_file",
                Some(file.clone()),
                format!("cannot read {}: {e}", file.display()),
            ),
        },
        None if !admin.listen.ip().is_loopback() => r.warnings.push(format!(
            "admin.listen = {} is not loopback and admin.api_token_file is not set: /api/* \
             (registrations and calls) answers 403; /metrics, /healthz and /readyz stay open",
            admin.listen
        )),
        None => {}
    }
}

/// `[provisioning]`: exactly one of `upstream` / `root`, an `http://` upstream with a host
/// and no path, an existing root directory, patterns that parse, vendor CAs to verify phones.
fn check_provisioning(config: &Config, p: &ProvisioningConfig, r: &mut ValidationReport) {
    match (&p.upstream, &p.root) {
        (Some(_), Some(_)) => r.problem(
            "provisioning.upstream",
            None,
            "set exactly one of provisioning.upstream and provisioning.root, not both",
        ),
        (None, None) => r.problem(
            "provisioning.root",
            None,
            "set exactly one of provisioning.upstream (an HTTP provisioning server) and \
             provisioning.root (a directory to serve)",
        ),
        _ => {}
    }
    if let Some(upstream) = &p.upstream {
        match check_upstream(upstream) {
            Ok(Some(warning)) => r.warnings.push(warning),
            Ok(None) => {}
            Err(message) => r.problem("provisioning.upstream", None, message),
        }
    }
    if let Some(root) = &p.root {
        match std::fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => r.problem(
                "provisioning.root",
                Some(root.clone()),
                format!("{} is not a directory", root.display()),
            ),
            Err(e) => r.problem(
                "provisioning.root",
                Some(root.clone()),
                format!("cannot use {}: {e}", root.display()),
            ),
        }
    }
    for (i, text) in p.common.iter().enumerate() {
        if let Err(e) = PathPattern::parse(text) {
            r.problem(
                format!("provisioning.common[{i}]"),
                None,
                format!("pattern {text:?}: {e}"),
            );
        }
    }
    if p.upstream_timeout_secs == 0 {
        r.problem(
            "provisioning.upstream_timeout_secs",
            None,
            "must be at least 1",
        );
    }
    let any_ca = config.vendors.values().any(|v| {
        v.enabled != Some(false) && v.ca.iter().any(|c| files::read_certificates(c).is_ok())
    });
    if !any_ca {
        r.problem(
            "provisioning",
            None,
            "the provisioning gateway always requires a device certificate, but no vendor \
             profile has a readable CA file (add vendors.<name>.ca)",
        );
    }
}

/// `Ok(Some(warning))` for an upstream outside loopback / private networks (provisioning
/// files carry SIP passwords and travel in clear over `http://`).
fn check_upstream(text: &str) -> Result<Option<String>, String> {
    let uri: hyper::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{text:?}: only an http:// upstream is supported (a provisioning server on \
             loopback or the LAN; the phones' side is HTTPS)"
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{text:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?}: credentials in the URL are not supported (they would travel in clear)"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{text:?}: give only scheme, host and port; the phone's request path is appended"
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let local = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => host == "localhost",
    };
    Ok((!local).then(|| {
        format!(
            "provisioning.upstream = {text:?} is not a loopback or private address: \
             provisioning files (with SIP passwords) cross the network in clear HTTP"
        )
    }))
}

fn check_timeouts_and_log(config: &Config, r: &mut ValidationReport) {
    if config.tls.max_connections == 0 {
        r.problem("tls.max_connections", None, "must be at least 1");
    }
    if config.tls.max_connections_per_ip == 0 {
        r.problem("tls.max_connections_per_ip", None, "must be at least 1");
    }
    if config.tls.handshake_timeout_secs == 0 {
        r.problem("tls.handshake_timeout_secs", None, "must be at least 1");
    }
    if config.tls.max_client_chain_certs == 0 {
        r.problem("tls.max_client_chain_certs", None, "must be at least 1");
    }
    // One real device certificate is 0.5-2 KB: less than 1 KiB would refuse every phone.
    if config.tls.max_client_chain_bytes < 1024 {
        r.problem("tls.max_client_chain_bytes", None, "must be at least 1024");
    }
    let sip = &config.sip;
    if sip.t1_ms == 0 || sip.t2_ms < sip.t1_ms {
        r.problem(
            "sip.t1_ms",
            None,
            format!(
                "need 0 < t1_ms <= t2_ms (have {} and {})",
                sip.t1_ms, sip.t2_ms
            ),
        );
    }
    if sip.t4_ms == 0 {
        r.problem("sip.t4_ms", None, "must be at least 1");
    }
    check_dscp("sip.dscp", sip.dscp, r);
    if sip.max_message_bytes < 1024 {
        r.problem("sip.max_message_bytes", None, "must be at least 1024");
    }
    if sip.max_headers < 8 {
        r.problem("sip.max_headers", None, "must be at least 8");
    }
    if sip.max_line_bytes < 256 {
        r.problem("sip.max_line_bytes", None, "must be at least 256");
    }
    if sip.phone_requests_per_second == 0 {
        r.warnings.push(
            "sip.phone_requests_per_second = 0: phones may send requests as fast as they like \
             (no per-device request limit)"
                .into(),
        );
    } else if sip.phone_request_burst == 0 {
        r.problem(
            "sip.phone_request_burst",
            None,
            "must be at least 1 while sip.phone_requests_per_second is set",
        );
    }
    if sip.idle_timeout_secs == 0 {
        r.problem("sip.idle_timeout_secs", None, "must be at least 1");
    }
    if sip.write_timeout_secs == 0 {
        r.problem("sip.write_timeout_secs", None, "must be at least 1");
    }
    // A message toward a phone may be larger than the one it was made from (Via, Contact,
    // SDP crypto lines): room for two of the largest keeps a working phone from tripping it.
    if sip.write_queue_bytes < sip.max_message_bytes.saturating_mul(2) {
        r.problem(
            "sip.write_queue_bytes",
            None,
            format!(
                "must be at least 2 × sip.max_message_bytes ({})",
                sip.max_message_bytes.saturating_mul(2)
            ),
        );
    }
    if sip.max_calls_per_device == 0 {
        r.problem("sip.max_calls_per_device", None, "must be at least 1");
    }
    if sip.domain.is_empty()
        || sip
            .domain
            .contains(|c: char| c.is_whitespace() || c == '@' || c == '>')
    {
        r.problem(
            "sip.domain",
            None,
            format!("{:?} is not a host name", sip.domain),
        );
    }
    if config.media.timeout_secs == 0 {
        r.problem("media.timeout_secs", None, "must be at least 1");
    }
    if config.media.max_ports_per_device < 4 {
        r.problem(
            "media.max_ports_per_device",
            None,
            "must be at least 4 (one relayed m-line)",
        );
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
        r.problem(
            "log.level",
            None,
            format!("not a valid tracing filter: {e}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServerCertConfig, VendorConfig};
    use std::path::Path;

    struct Fixture {
        dir: tempfile::TempDir,
        config: Config,
    }

    /// The root every test certificate chains to; `check` trusts it as phones trust a public
    /// root, so only what a test changes shows up.
    fn test_root() -> &'static (rcgen::CertificateParams, rcgen::KeyPair, Vec<u8>) {
        static ROOT: std::sync::OnceLock<(rcgen::CertificateParams, rcgen::KeyPair, Vec<u8>)> =
            std::sync::OnceLock::new();
        ROOT.get_or_init(|| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "pbx-edge test root");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let der = params.self_signed(&key).unwrap().der().to_vec();
            (params, key, der)
        })
    }

    fn check(f: &Fixture) -> ValidationReport {
        let root = rustls_pki_types::CertificateDer::from(test_root().2.clone());
        let anchor = webpki::anchor_from_trusted_cert(&root).unwrap();
        validate_with(&f.config, UnixTime::now(), &[anchor])
    }

    fn write_cert(dir: &Path, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        write_cert_until(dir, name, sans, (4000, 1, 1))
    }

    /// A certificate under the test root, valid from 2020-01-01 until `until` (y, m, d).
    fn write_cert_until(
        dir: &Path,
        name: &str,
        sans: &[&str],
        until: (i32, u8, u8),
    ) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let (root_params, root_key, _) = test_root();
        let cert = params
            .signed_by(&key, &rcgen::Issuer::from_params(root_params, root_key))
            .unwrap();
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn good() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_cert(dir.path(), "server", &["sbc.test"]);
        let (ca, _) = write_cert(dir.path(), "vendor-ca", &["ca.test"]);
        let inv = dir.path().join("inventory.toml");
        std::fs::write(&inv, "").unwrap();
        let mut config = Config::default();
        config.tls.certificates.push(ServerCertConfig { cert, key });
        config.vendors.insert(
            "snom".into(),
            VendorConfig {
                ca: vec![ca],
                ..Default::default()
            },
        );
        config.inventory.file = Some(inv);
        Fixture { dir, config }
    }

    fn keys(r: &ValidationReport) -> Vec<&str> {
        r.problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn a_complete_config_is_valid() {
        let f = good();
        let r = check(&f);
        assert!(r.is_ok(), "{:?}", r.problems);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn shared_certificates_and_their_names_are_a_warning() {
        let mut f = good();
        let snom = f.config.vendors.get_mut("snom").unwrap();
        snom.shared_certs = crate::config::SharedCertPolicy::Shared;
        snom.shared_cert_names = vec!["snom 3xx".into()];
        let r = check(&f);
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("vendors.snom.shared_certs"));
        assert!(r.warnings[0].contains("snom 3xx"));
        f.config.tls.max_client_chain_certs = 0;
        f.config.tls.max_client_chain_bytes = 1023;
        assert_eq!(
            keys(&check(&f)),
            ["tls.max_client_chain_certs", "tls.max_client_chain_bytes"]
        );
    }

    #[test]
    fn dscp_must_fit_six_bits_and_zero_is_off() {
        let mut f = good();
        f.config.sip.dscp = 63;
        f.config.media.dscp = 0;
        assert!(check(&f).is_ok());
        f.config.sip.dscp = 64;
        f.config.media.dscp = 255;
        assert_eq!(keys(&check(&f)), ["media.dscp", "sip.dscp"]);
    }

    #[test]
    fn request_limit_off_is_a_warning_and_an_empty_burst_a_problem() {
        let mut f = good();
        f.config.sip.phone_request_burst = 0;
        assert_eq!(keys(&check(&f)), ["sip.phone_request_burst"]);
        f.config.sip.phone_requests_per_second = 0;
        let r = check(&f);
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("sip.phone_requests_per_second = 0"));
    }

    #[test]
    fn stuck_writer_and_per_device_limits_are_checked() {
        let mut f = good();
        f.config.sip.write_timeout_secs = 0;
        f.config.sip.write_queue_bytes = f.config.sip.max_message_bytes;
        f.config.sip.max_calls_per_device = 0;
        f.config.media.max_ports_per_device = 3;
        assert_eq!(
            keys(&validate(&f.config)),
            [
                "sip.write_timeout_secs",
                "sip.write_queue_bytes",
                "sip.max_calls_per_device",
                "media.max_ports_per_device"
            ]
        );
    }

    #[test]
    fn missing_cert_file_is_named() {
        let mut f = good();
        f.config.tls.certificates[0].cert = f.dir.path().join("missing.crt");
        let r = check(&f);
        assert_eq!(keys(&r), ["tls.certificates[0].cert"]);
        assert!(r.problems[0].message.contains("missing.crt"));
        assert_eq!(
            r.problems[0].file.as_deref(),
            Some(f.dir.path().join("missing.crt").as_path())
        );
    }

    #[test]
    fn key_that_does_not_match_is_refused() {
        let mut f = good();
        let (_, other_key) = write_cert(f.dir.path(), "other", &["x.test"]);
        f.config.tls.certificates[0].key = other_key;
        let r = check(&f);
        assert_eq!(keys(&r), ["tls.certificates[0].key"]);
        assert!(r.problems[0].message.contains("does not fit"), "{r:?}");
    }

    #[test]
    fn wildcard_cert_is_refused_unless_allowed() {
        let mut f = good();
        let (c, k) = write_cert(f.dir.path(), "wild", &["*.sbc.test"]);
        f.config.tls.certificates[0] = ServerCertConfig { cert: c, key: k };
        let r = check(&f);
        // "*.sbc.test" does not cover "sbc.test" either (a wildcard never matches the bare
        // domain), which is a problem of its own.
        assert_eq!(keys(&r), ["tls.certificates[0].cert", "sip.domain"]);
        assert!(r.problems[0].message.contains("RFC 5922"));
        f.config.sip.domain = "edge.sbc.test".into();
        let r = check(&f);
        assert_eq!(keys(&r), ["tls.certificates[0].cert"]);
        f.config.tls.allow_wildcard_server_cert = true;
        let r = check(&f);
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(r.warnings.len(), 1);
    }

    #[test]
    fn admin_api_token_file_is_checked_and_an_unguarded_public_api_noted() {
        let mut f = good();
        f.config.admin.listen = "0.0.0.0:9090".parse().unwrap();
        let r = validate(&f.config);
        assert!(r.is_ok(), "{:?}", r.problems);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("/api/*") && w.contains("403")),
            "{:?}",
            r.warnings
        );
        let file = f.dir.path().join("token");
        f.config.admin.api_token_file = Some(file.clone());
        assert_eq!(keys(&validate(&f.config)), ["admin.api_token_file"]);
        std::fs::write(&file, "short\n").unwrap();
        let r = validate(&f.config);
        assert_eq!(keys(&r), ["admin.api_token_file"]);
        assert!(r.problems[0].message.contains("at least 16"), "{r:?}");
        std::fs::write(&file, "0123456789abcdef\n").unwrap();
        let r = validate(&f.config);
        assert!(r.is_ok(), "{r:?}");
        assert!(!r.warnings.iter().any(|w| w.contains("/api/*")), "{r:?}");
    }

    #[test]
    fn hep_capture_is_checked_and_warned_about() {
        let mut f = good();
        assert!(check(&f).warnings.iter().all(|w| !w.contains("hep")));
        f.config.hep.address = Some("10.0.0.20:9060".into());
        let r = check(&f);
        assert!(r.is_ok(), "{:?}", r.problems);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("hep.address") && w.contains("in clear")),
            "{:?}",
            r.warnings
        );
        f.config.hep.address = Some("homer.example".into());
        f.config.hep.queue = 0;
        f.config.hep.queue_bytes = 1000;
        f.config.hep.password = Some(String::new());
        let r = check(&f);
        assert_eq!(
            keys(&r),
            vec![
                "hep.address",
                "hep.queue",
                "hep.queue_bytes",
                "hep.password"
            ],
            "{:?}",
            r.problems
        );
        f.config.hep.address = Some("homer.example:9060".into());
        f.config.hep.queue = 10;
        f.config.hep.queue_bytes = 65_536;
        f.config.hep.password = None;
        assert!(check(&f).is_ok());
    }

    #[test]
    fn port_range_errors() {
        let mut f = good();
        f.config.media.port_min = 40000;
        f.config.media.port_max = 30000;
        assert_eq!(keys(&check(&f)), ["media.port_min"]);
        f.config.media.port_min = 30000;
        f.config.media.port_max = 30000;
        assert_eq!(keys(&check(&f)), ["media.port_max"]);
        f.config.media.port_max = 30002;
        let r = check(&f);
        assert_eq!(keys(&r), ["media.port_max"]);
        assert!(r.problems[0].message.contains("odd number"));
        f.config.media.port_min = 30001;
        f.config.media.port_max = 30002;
        assert_eq!(keys(&check(&f)), ["media.port_min"]);
    }

    #[test]
    fn overlapping_listeners_are_refused() {
        let mut f = good();
        f.config.admin.listen = "0.0.0.0:5061".parse().unwrap();
        let r = check(&f);
        assert_eq!(keys(&r), ["admin.listen"]);
        // TCP admin and UDP PBX listener on the same port do not collide.
        let mut f = good();
        f.config.admin.listen = f.config.pbx.listen;
        assert!(check(&f).is_ok());
        f.config.pbx.transport = PbxTransport::Tcp;
        assert_eq!(keys(&check(&f)), ["pbx.listen"]);
    }

    #[test]
    fn pbx_listen_inside_media_range_is_refused() {
        let mut f = good();
        f.config.pbx.listen = "127.0.0.1:30010".parse().unwrap();
        assert_eq!(keys(&check(&f)), ["pbx.listen"]);
    }

    #[test]
    fn required_client_certs_need_a_vendor_ca() {
        let mut f = good();
        f.config.vendors.clear();
        assert_eq!(keys(&check(&f)), ["vendors"]);
        f.config.tls.client_cert = ClientCertMode::Optional;
        let r = check(&f);
        assert!(r.is_ok());
        assert_eq!(r.warnings.len(), 1);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut f = good();
        f.config.tls.certificates[0].cert = f.dir.path().join("missing.crt");
        f.config.media.port_min = 40000;
        f.config.media.port_max = 30000;
        f.config.inventory.file = Some(f.dir.path().join("missing-inventory.toml"));
        f.config.log.level = "pbx_edge=loud[".into();
        let r = check(&f);
        assert_eq!(
            keys(&r),
            [
                "tls.certificates[0].cert",
                "inventory.file",
                "media.port_min",
                "log.level"
            ]
        );
    }

    fn with_provisioning(f: &mut Fixture) -> &mut ProvisioningConfig {
        let root = f.dir.path().join("prov");
        std::fs::create_dir_all(&root).unwrap();
        f.config.provisioning = Some(ProvisioningConfig {
            listen: "127.0.0.1:8443".parse().unwrap(),
            upstream: None,
            root: Some(root),
            common: vec!["/y000000000044.cfg".into(), "/firmware/*".into()],
            upstream_timeout_secs: 10,
        });
        f.config.provisioning.as_mut().unwrap()
    }

    #[test]
    fn provisioning_root_mode_is_valid() {
        let mut f = good();
        with_provisioning(&mut f);
        let r = check(&f);
        assert!(r.is_ok(), "{:?}", r.problems);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn provisioning_problems_name_the_key() {
        let mut f = good();
        let file = f.dir.path().join("inventory.toml");
        let p = with_provisioning(&mut f);
        p.upstream = Some("http://127.0.0.1:8080".into());
        assert_eq!(keys(&check(&f)), ["provisioning.upstream"]);

        let p = f.config.provisioning.as_mut().unwrap();
        p.root = None;
        p.upstream = None;
        assert_eq!(keys(&check(&f)), ["provisioning.root"]);

        let p = f.config.provisioning.as_mut().unwrap();
        p.root = Some(file);
        let r = check(&f);
        assert_eq!(keys(&r), ["provisioning.root"]);
        assert!(r.problems[0].message.contains("not a directory"), "{r:?}");

        let p = f.config.provisioning.as_mut().unwrap();
        p.root = Some(f.dir.path().join("missing"));
        assert_eq!(keys(&check(&f)), ["provisioning.root"]);

        for bad in [
            "https://127.0.0.1:8443",
            "ftp://127.0.0.1",
            "not a url",
            "http://127.0.0.1:8080/base",
            "127.0.0.1:8080",
            "http://user:secret@127.0.0.1:8080",
        ] {
            let p = f.config.provisioning.as_mut().unwrap();
            p.root = None;
            p.upstream = Some(bad.into());
            assert_eq!(keys(&check(&f)), ["provisioning.upstream"], "{bad}");
        }
        for ok in [
            "http://127.0.0.1:8080",
            "http://10.1.2.3",
            "http://[::1]:80/",
            "http://localhost:8080",
        ] {
            f.config.provisioning.as_mut().unwrap().upstream = Some(ok.into());
            let r = check(&f);
            assert!(r.is_ok() && r.warnings.is_empty(), "{ok}: {r:?}");
        }
        f.config.provisioning.as_mut().unwrap().upstream = Some("http://203.0.113.7:8080".into());
        let r = check(&f);
        assert!(r.is_ok());
        assert_eq!(r.warnings.len(), 1, "{r:?}");

        let p = f.config.provisioning.as_mut().unwrap();
        p.upstream = Some("http://127.0.0.1:8080".into());
        p.common = vec!["/ok.cfg".into(), "relative.cfg".into(), "/a/../b".into()];
        p.upstream_timeout_secs = 0;
        assert_eq!(
            keys(&check(&f)),
            [
                "provisioning.common[1]",
                "provisioning.common[2]",
                "provisioning.upstream_timeout_secs"
            ]
        );
    }

    #[test]
    fn provisioning_needs_vendor_cas_and_its_own_port() {
        let mut f = good();
        with_provisioning(&mut f).listen = "127.0.0.1:5061".parse().unwrap();
        assert_eq!(keys(&check(&f)), ["provisioning.listen"]);
        f.config.provisioning.as_mut().unwrap().listen = "127.0.0.1:8443".parse().unwrap();
        f.config.vendors.clear();
        f.config.tls.client_cert = ClientCertMode::Off;
        assert_eq!(keys(&check(&f)), ["provisioning"]);
    }

    #[test]
    fn unspecified_advertise_address_is_refused() {
        let mut f = good();
        f.config.media.phone_advertise = "0.0.0.0".parse().unwrap();
        assert_eq!(keys(&check(&f)), ["media.phone_advertise"]);
    }

    /// 2027-01-15 08:00 UTC.
    fn jan_15_2027() -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000))
    }

    fn check_at(f: &Fixture, now: UnixTime) -> ValidationReport {
        let root = rustls_pki_types::CertificateDer::from(test_root().2.clone());
        let anchor = webpki::anchor_from_trusted_cert(&root).unwrap();
        validate_with(&f.config, now, &[anchor])
    }

    #[test]
    fn server_certificate_must_carry_the_name_phones_use() {
        let mut f = good();
        f.config.sip.domain = "edge.example.com".into();
        let r = check(&f);
        assert_eq!(keys(&r), ["sip.domain"]);
        assert!(
            r.problems[0]
                .message
                .contains("\"edge.example.com\" in its subjectAltName"),
            "{r:?}"
        );
        // A second certificate with the name: fine for SNI, a warning for certificates[0].
        let (cert, key) = write_cert(f.dir.path(), "edge", &["edge.example.com"]);
        f.config
            .tls
            .certificates
            .push(ServerCertConfig { cert, key });
        let r = check(&f);
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(r.warnings.len(), 1, "{r:?}");
        assert!(r.warnings[0].contains("tls.certificates[0].cert does not carry"));
        // A sip.domain that is no name at all is one problem, whatever the certificates.
        f.config.sip.domain = "not a name".into();
        let r = check(&f);
        assert_eq!(keys(&r), ["sip.domain"], "{r:?}");
        // An IP address as sip.domain is matched against the SAN's IP entries.
        let mut f = good();
        let (cert, key) = write_cert(f.dir.path(), "ip", &["192.0.2.10"]);
        f.config.tls.certificates[0] = ServerCertConfig { cert, key };
        f.config.sip.domain = "192.0.2.10".into();
        assert!(check(&f).is_ok());
    }

    #[test]
    fn server_certificate_validity_is_judged_at_the_given_time() {
        let mut f = good();
        let (cert, key) = write_cert_until(f.dir.path(), "soon", &["sbc.test"], (2027, 1, 25));
        f.config.tls.certificates[0] = ServerCertConfig { cert, key };
        let r = check_at(&f, jan_15_2027());
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(r.warnings.len(), 1, "{r:?}");
        assert!(r.warnings[0].contains("expires in 9 day(s)"), "{r:?}");
        // Ten days later it has expired: a problem.
        let later =
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000 + 20 * 86_400));
        let r = check_at(&f, later);
        assert_eq!(keys(&r), ["tls.certificates[0].cert"]);
        assert!(r.problems[0].message.contains("expired"), "{r:?}");
        // Before its notBefore: a problem too.
        let early = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_500_000_000));
        let r = check_at(&f, early);
        assert_eq!(keys(&r), ["tls.certificates[0].cert"]);
        assert!(r.problems[0].message.contains("not valid yet"), "{r:?}");
    }

    #[test]
    fn private_chains_are_warned_about_with_the_way_out() {
        // The real Mozilla roots: the test root is nobody's, and the file stops at the leaf.
        let f = good();
        let r = validate_at(&f.config, UnixTime::now());
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(r.warnings.len(), 1, "{r:?}");
        let w = &r.warnings[0];
        assert!(w.contains("does not chain to a public root"), "{w}");
        assert!(w.contains("append it"), "{w}");
        assert!(w.contains("deploy/phones/README.md"), "{w}");
        // With the private root in the file: no intermediate can be missing.
        let mut f = good();
        let chain = f.dir.path().join("chain.crt");
        let leaf = std::fs::read_to_string(&f.config.tls.certificates[0].cert).unwrap();
        let root = rustls_pki_types::CertificateDer::from(test_root().2.clone());
        let root_pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &*root)
        );
        std::fs::write(&chain, format!("{leaf}{root_pem}")).unwrap();
        f.config.tls.certificates[0].cert = chain;
        let r = validate_at(&f.config, UnixTime::now());
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(r.warnings.len(), 1, "{r:?}");
        assert!(r.warnings[0].contains("chains to the private CA"), "{r:?}");
        assert!(!r.warnings[0].contains("append it"), "{r:?}");
    }
}
