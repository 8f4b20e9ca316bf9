//! In front of a real Asterisk 22 (issue 12): phone → pbx-edge → Asterisk → pbx-edge → phone,
//! exactly as the README deploys it. Asterisk runs the shipped `deploy/asterisk/*.conf` as
//! written (written here only: `asterisk.conf`, which names this run's directories, the empty
//! files Asterisk's modules read at start, a `cdr.conf` for CDRs to read back, and the sounds
//! the build lacks; the session-timer test alone changes one line of its copy of `pjsip.conf`,
//! see [`Override`]); two baresip phones (the dev PKI's
//! Snom-style device as 101 and Yealink-style device as 102) connect over TLS with their device
//! certificates and SDES-SRTP.
//!
//! Built only with `--features asterisk`; `ASTERISK_PREFIX` names an install made by
//! `tests/asterisk/build.sh` (`.ci/run` runs these when it is set). Asterisk's SIP port
//! (5060) and RTP range (20000-20999) are fixed by the shipped files, so the tests here take
//! turns (one Asterisk at a time).

use super::baresip::{Baresip, CallMedia, Ctrl, PhoneSetup};
use super::capture::{Capture, Datagram};
use super::dns::FakeDns;
use super::process::{self, PeerProcess};
use super::{net, tone};
use crate::support::edge::{self, RunningEdge, TestPki};
use crate::support::http;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The shipped Asterisk configuration, used unchanged.
const SHIPPED: [&str; 7] = [
    "musiconhold.conf",
    "voicemail.conf",
    "pjsip.conf",
    "extensions.conf",
    "modules.conf",
    "rtp.conf",
    "logger.conf",
];

/// Asterisk's UDP transport (`deploy/asterisk/pjsip.conf`) and RTP range (`rtp.conf`).
const ASTERISK_SIP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5060);
const ASTERISK_RTP: (u16, u16) = (20000, 20999);

/// Length of the WAV both phones play (longer than any call here).
const WAV_SECS: u32 = 40;

/// One Asterisk at a time: the shipped files fix its ports.
static ONE_ASTERISK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running Asterisk with its own directories; stopped (`core stop now`, then by PID) on drop.
struct Asterisk {
    prefix: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    process: PeerProcess,
}

fn prefix() -> PathBuf {
    let p = std::env::var_os("ASTERISK_PREFIX").unwrap_or_else(|| {
        panic!(
            "ASTERISK_PREFIX is not set: build Asterisk 22 with `tests/asterisk/build.sh AST_SRC \
             PJ_SRC PREFIX` and export ASTERISK_PREFIX=PREFIX (see INTEROP.md)"
        )
    });
    let p = PathBuf::from(p);
    assert!(
        p.join("sbin/asterisk").is_file(),
        "ASTERISK_PREFIX={} has no sbin/asterisk",
        p.display()
    );
    p
}

/// A test-only change to one shipped file, made on the run's copy: `find` (which must be
/// in the shipped file, so a renamed setting cannot turn the override into a no-op) becomes
/// `replace`.
struct Override {
    file: &'static str,
    find: &'static str,
    replace: &'static str,
}

impl Asterisk {
    fn start(run: &Path) -> Self {
        Self::start_with(run, &[])
    }

    /// [`Asterisk::start`] with `overrides` applied to the run's copies of the shipped files.
    fn start_with(run: &Path, overrides: &[Override]) -> Self {
        let prefix = prefix();
        // The shipped transport binds 127.0.0.1:5060; anything else there would take
        // Asterisk's place silently.
        assert!(
            std::net::UdpSocket::bind(ASTERISK_SIP).is_ok(),
            "UDP {ASTERISK_SIP} (deploy/asterisk/pjsip.conf's transport) is in use: stop what \
             listens there before running the Asterisk tests"
        );
        let etc = run.join("etc");
        // log/cdr-csv: cdr_csv writes there but does not create it (the install does).
        for d in [
            "etc",
            "lib",
            "spool",
            "log",
            "log/cdr-csv",
            "run",
            "agi-bin",
        ] {
            std::fs::create_dir_all(run.join(d)).expect("asterisk dir");
        }
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/asterisk");
        for f in SHIPPED {
            let mut text = std::fs::read_to_string(deploy.join(f))
                .unwrap_or_else(|e| panic!("deploy/asterisk/{f}: {e}"));
            for o in overrides.iter().filter(|o| o.file == f) {
                assert!(
                    text.contains(o.find),
                    "deploy/asterisk/{f} no longer has {:?}: update the test's override",
                    o.find
                );
                text = text.replacen(o.find, o.replace, 1);
            }
            std::fs::write(etc.join(f), text).expect("asterisk conf copy");
        }
        // The data directory: the install's, with sounds of our own (the build downloads
        // none): a music-on-hold file — the tone, so the held phone has something to hear —
        // and the only prompt `VoiceMail(…,s)` plays, the beep before recording (without it
        // app_voicemail logs a warning and records anyway).
        let data = run.join("data");
        std::fs::create_dir_all(data.join("moh")).expect("moh dir");
        std::fs::create_dir_all(data.join("sounds/en")).expect("sounds dir");
        for entry in std::fs::read_dir(prefix.join("var/lib/asterisk")).expect("astdatadir") {
            let entry = entry.expect("astdatadir entry");
            if entry.file_name() != "moh" && entry.file_name() != "sounds" {
                std::os::unix::fs::symlink(entry.path(), data.join(entry.file_name()))
                    .expect("astdatadir link");
            }
        }
        tone::write_wav(&data.join("moh/tone.wav"), 30);
        tone::write_wav(&data.join("sounds/en/beep.wav"), 1);
        // `[directories]` without `(!)`: with it, the section is a template and ignored.
        let conf = etc.join("asterisk.conf");
        let r = run.display();
        let p = prefix.display();
        std::fs::write(
            &conf,
            format!(
                "[directories]\n\
                 astetcdir => {r}/etc\n\
                 astmoddir => {p}/lib/asterisk/modules\n\
                 astvarlibdir => {r}/lib\n\
                 astdbdir => {r}/lib\n\
                 astkeydir => {r}/lib\n\
                 astdatadir => {r}/data\n\
                 astagidir => {r}/agi-bin\n\
                 astspooldir => {r}/spool\n\
                 astrundir => {r}/run\n\
                 astlogdir => {r}/log\n\
                 astsbindir => {p}/sbin\n\
                 [options]\n\
                 verbose = 3\n"
            ),
        )
        .expect("asterisk.conf");
        // Files some modules read at start; empty means their defaults.
        for f in ["cel.conf", "acl.conf", "udptl.conf", "statsd.conf"] {
            std::fs::write(etc.join(f), "").expect("empty conf");
        }
        std::fs::write(etc.join("features.conf"), "[general]\n").expect("features.conf");
        // CDRs (cdr_csv: <astlogdir>/cdr-csv/Master.csv) also for calls nobody answered: the
        // authorization test's calls end busy.
        // cdr_csv declines to load without a `[csv]` section in cdr.conf holding a setting.
        std::fs::write(
            etc.join("cdr.conf"),
            "[general]\nunanswered = yes\n[csv]\nusegmtime = no\n",
        )
        .expect("cdr.conf");

        let mut cmd = Command::new(prefix.join("sbin/asterisk"));
        cmd.env("LD_LIBRARY_PATH", prefix.join("pj/lib"))
            .arg("-f")
            .arg("-C")
            .arg(&conf);
        let process = PeerProcess::spawn("asterisk", cmd, run);
        let mut a = Self {
            log: run.join("log/messages.log"),
            prefix,
            conf,
            process,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = a.try_rx("core waitfullybooted");
            if out.as_deref().is_some_and(|o| o.contains("fully booted")) {
                break;
            }
            assert!(
                Instant::now() < deadline && a.process.wait_within(Duration::ZERO).is_none(),
                "asterisk did not boot: {out:?}\n{}",
                a.process.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let endpoints = a.rx("pjsip show endpoints");
        assert!(
            endpoints.contains("101") && endpoints.contains("102"),
            "the shipped pjsip.conf loaded both endpoints: {endpoints}\n{}",
            a.process.output()
        );
        a
    }

    fn try_rx(&self, command: &str) -> Option<String> {
        let mut cmd = Command::new(self.prefix.join("sbin/asterisk"));
        cmd.env("LD_LIBRARY_PATH", self.prefix.join("pj/lib"))
            .arg("-C")
            .arg(&self.conf)
            .arg("-rx")
            .arg(command);
        let out = process::run_bounded(cmd, Duration::from_secs(10));
        (!out.killed && !out.stdout.contains("Unable to connect")).then_some(out.stdout)
    }

    /// One CLI command (`asterisk -rx`), bounded.
    fn rx(&self, command: &str) -> String {
        self.try_rx(command)
            .unwrap_or_else(|| panic!("asterisk -rx {command:?} failed"))
    }

    /// Polls a CLI command (bounded) until `pred` holds; returns the last output.
    fn rx_until(&self, command: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.rx(command);
            if pred(&out) || Instant::now() >= deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Asterisk's `messages.log` so far.
    fn messages(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        let _ = self.try_rx("core stop now");
        if self.process.wait_within(Duration::from_secs(5)).is_none() {
            self.process.stop(Duration::from_secs(2));
        }
    }
}

/// The number in `core show channels`' "N active channel(s)" line.
fn active_channels(out: &str) -> Option<u32> {
    out.lines()
        .find(|l| l.contains("active channel"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct Phones {
    a: Baresip,
    b: Baresip,
    ctrl_a: Ctrl,
    ctrl_b: Ctrl,
    rtp_a: (u16, u16),
    rtp_b: (u16, u16),
    _dns: FakeDns,
}

/// Edge in front of Asterisk (its dev config already names 127.0.0.1:5060) with its media
/// pool in `media`.
async fn start_edge(pki: &TestPki, media: (u16, u16)) -> RunningEdge {
    let (min, max) = (media.0.to_string(), media.1.to_string());
    let env = [
        ("PBX_EDGE_MEDIA__PORT_MIN", min.as_str()),
        ("PBX_EDGE_MEDIA__PORT_MAX", max.as_str()),
    ];
    RunningEdge::start_with_pbx(pki, ASTERISK_SIP, &env).await
}

/// Both phones, registered through the edge to Asterisk (digest challenge answered), with
/// 102 answering in `answermode_b`.
fn start_phones(pki: &TestPki, e: &RunningEdge, wav: &Path, answermode_b: &str) -> Phones {
    let dns = FakeDns::start("sbc.test");
    let rtp_a = net::free_range(46000, 46499, 10);
    let rtp_b = net::free_range(46500, 46999, 10);
    let setup = |user, cert, pass, answermode, rtp_ports| PhoneSetup {
        edge: e.tls_addr,
        certificate: cert,
        ca: &pki.pki.server_ca,
        user,
        regint: 120,
        answermode,
        auth_pass: Some(pass),
        media: Some(CallMedia {
            audio: wav,
            rtp_ports,
        }),
        dns: dns.addr,
        verbose: false,
        backup_edge: None,
    };
    let mut a = Baresip::start(
        &setup("101", &pki.pki.snom_device, "change-me-101", "auto", rtp_a),
        Duration::from_secs(120),
    );
    let mut b = Baresip::start(
        &setup(
            "102",
            &pki.pki.yealink_device,
            "change-me-102",
            answermode_b,
            rtp_b,
        ),
        Duration::from_secs(120),
    );
    let ctrl_a = a.ctrl();
    let ctrl_b = b.ctrl();
    Phones {
        a,
        b,
        ctrl_a,
        ctrl_b,
        rtp_a,
        rtp_b,
        _dns: dns,
    }
}

/// Waits (bounded) until Asterisk lists both phones' contacts as reachable (`Avail`: its
/// qualify OPTIONS went through the edge to the phone and the 200 came back).
fn wait_registered(ast: &Asterisk, p: &mut Phones) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut contacts = String::new();
    while Instant::now() < deadline {
        contacts = ast.rx("pjsip show contacts");
        let avail = contacts
            .lines()
            .filter(|l| l.contains("Contact:") && l.contains("Avail"))
            .count();
        if avail >= 2 {
            break;
        }
        p.ctrl_a.pump(Duration::from_millis(150));
        p.ctrl_b.pump(Duration::from_millis(150));
    }
    for user in ["101", "102"] {
        assert!(
            contacts
                .lines()
                .any(|l| l.contains(&format!("Contact:  {user}/")) && l.contains("Avail")),
            "Asterisk lists {user} as reachable: {contacts}\n{}\n{}",
            p.a.log(),
            p.b.log()
        );
    }
    contacts
}

/// The SRTP suite of the call in `/api/calls` whose `direction` is `direction`
/// (`phone_to_pbx` for the caller's leg, `pbx_to_phone` for the callee's).
fn srtp_suite(calls: &str, direction: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(calls).ok()?;
    v["calls"]
        .as_array()?
        .iter()
        .find(|c| c["direction"].as_str() == Some(direction))?["srtp_suite"]
        .as_str()
        .map(str::to_owned)
}

/// Authentication tag length of an SDES suite (RFC 4568 §6.2, RFC 7714 §14.2).
fn tag_len(suite: &str) -> usize {
    match suite {
        "AES_CM_128_HMAC_SHA1_80" => 10,
        "AES_CM_128_HMAC_SHA1_32" => 4,
        "AEAD_AES_128_GCM" | "AEAD_AES_256_GCM" => 16,
        other => panic!("unexpected SRTP suite {other}"),
    }
}

fn is_pcmu_rtp(d: &Datagram) -> bool {
    d.payload.len() >= 12 + 160 && d.payload[0] >> 6 == 2 && d.payload[1] & 0x7f == 0
}

fn in_range(p: u16, r: (u16, u16)) -> bool {
    (r.0..=r.1).contains(&p)
}

/// Minimum packets per direction and leg: 6 s of 20 ms audio out of the ≥ 10 s talked (a
/// shared 2-core machine may start baresip's audio or tshark late).
const MIN_PACKETS: usize = 300;

/// On a capture of the edge's media pool: both phone legs carry SRTP of their leg's suite
/// (every PCMU packet is RTP + 160 + tag, none is the plain tone), both Asterisk legs carry
/// plain 160-byte PCMU that decodes as the tone, each in both directions. Each phone leg
/// negotiates its own suite: the caller's offer is answered by the edge, the callee answers
/// the edge's offer.
fn check_call_capture(packets: &[Datagram], phones: [((u16, u16), &str); 2], asterisk: (u16, u16)) {
    let wav_frames: std::collections::HashSet<Vec<u8>> = (0..WAV_SECS * 50)
        .map(|k| tone::tone_pcmu(k * 160, 160))
        .collect();
    let audio = |d: &Datagram| d.payload[12..172].to_vec();
    for (i, (range, suite)) in phones.iter().enumerate() {
        let tag = tag_len(suite);
        for from_phone in [true, false] {
            let leg: Vec<&Datagram> = packets
                .iter()
                .filter(|d| is_pcmu_rtp(d))
                .filter(|d| {
                    if from_phone {
                        in_range(d.src_port, *range)
                    } else {
                        in_range(d.dst_port, *range)
                    }
                })
                .collect();
            let what = format!(
                "phone leg {} {}",
                i + 1,
                if from_phone { "→ edge" } else { "edge →" }
            );
            assert!(leg.len() >= MIN_PACKETS, "{what}: {} packets", leg.len());
            let bad_len = leg
                .iter()
                .filter(|d| d.payload.len() != 12 + 160 + tag)
                .count();
            assert_eq!(
                bad_len, 0,
                "{what}: every packet is RTP 172 + {tag}-byte tag"
            );
            let plain = leg
                .iter()
                .filter(|d| wav_frames.contains(&audio(d)) || tone::tone_share(&audio(d)) > 0.5)
                .count();
            assert_eq!(plain, 0, "{what}: no payload is the plain tone");
        }
    }
    for to_asterisk in [true, false] {
        let leg: Vec<&Datagram> = packets
            .iter()
            .filter(|d| is_pcmu_rtp(d))
            .filter(|d| {
                if to_asterisk {
                    in_range(d.dst_port, asterisk)
                } else {
                    in_range(d.src_port, asterisk)
                }
            })
            .collect();
        let what = if to_asterisk {
            "edge → Asterisk"
        } else {
            "Asterisk → edge"
        };
        // Two Asterisk legs (one per phone): at least MIN_PACKETS each.
        assert!(
            leg.len() >= 2 * MIN_PACKETS,
            "{what}: {} packets",
            leg.len()
        );
        assert!(
            leg.iter().all(|d| d.payload.len() == 12 + 160),
            "{what}: plain 160-byte PCMU"
        );
        let toned = leg
            .iter()
            .filter(|d| tone::tone_share(&audio(d)) > 0.5)
            .count();
        assert!(
            toned * 10 >= leg.len() * 9,
            "{what}: the plain RTP carries the tone: {toned} of {}",
            leg.len()
        );
    }
}

/// Every audio packet a phone sent reached Asterisk and every one Asterisk sent reached a
/// phone: per direction, the PCMU RTP packets leaving the edge equal those that arrived, but
/// for at most [`IN_FLIGHT`] that a hangup may catch between arrival and relay. (The issue's
/// hand-run saw `not_keyed` and `malformed` drops; in these runs each was an RTCP APP "PING"
/// baresip sends as a stream starts — once plain, once protected — not audio: see INTEROP.md.)
fn check_every_audio_packet_relayed(
    packets: &[Datagram],
    phones: [(u16, u16); 2],
    asterisk: (u16, u16),
) {
    let count = |pred: &dyn Fn(&Datagram) -> bool| {
        packets.iter().filter(|d| is_pcmu_rtp(d) && pred(d)).count()
    };
    let from_phones = count(&|d| phones.iter().any(|r| in_range(d.src_port, *r)));
    let to_asterisk = count(&|d| in_range(d.dst_port, asterisk));
    let from_asterisk = count(&|d| in_range(d.src_port, asterisk));
    let to_phones = count(&|d| phones.iter().any(|r| in_range(d.dst_port, *r)));
    for (what, got, sent) in [
        ("phones → Asterisk", from_phones, to_asterisk),
        ("Asterisk → phones", from_asterisk, to_phones),
    ] {
        assert!(
            sent <= got && got - sent <= IN_FLIGHT,
            "{what}: {got} audio packets reached the edge, {sent} left it"
        );
    }
}

/// Audio packets a hangup may catch inside the relay, per direction.
const IN_FLIGHT: usize = 2;

/// Waits (bounded) until neither the edge nor Asterisk has a call left; asserts so.
async fn assert_nothing_left(e: &RunningEdge, ast: &Asterisk) {
    let mut m = String::new();
    for _ in 0..60 {
        m = http::get(e.admin_addr, "/metrics").await.1;
        if http::metric(&m, "pbx_edge_calls_active") == 0.0
            && http::metric(&m, "pbx_edge_media_active_streams") == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http::metric(&m, "pbx_edge_calls_active"), 0.0, "{m}");
    assert_eq!(
        http::metric(&m, "pbx_edge_media_active_streams"),
        0.0,
        "{m}"
    );
    assert_eq!(
        http::get(e.admin_addr, "/api/calls").await.1,
        "{\"calls\":[]}"
    );
    let channels = ast.rx_until("core show channels", Duration::from_secs(5), |o| {
        active_channels(o) == Some(0)
    });
    assert_eq!(active_channels(&channels), Some(0), "{channels}");
}

/// Registration, qualify, and a bridged call: both phones register through the edge (Asterisk's
/// digest challenge round-trips), Asterisk's qualify shows both reachable and a fresh qualify
/// reaches the phone; 101 calls 102, 102 answers, ≥ 10 s of audio flows both ways — SRTP on
/// both phone legs and plain RTP carrying the tone on both Asterisk legs, on the wire — while
/// the edge and Asterisk agree on the call; 102 hangs up (BYE from the callee's side) and
/// nothing is left on either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_bridges_two_phones_with_srtp_on_the_phone_legs_only() {
    let _turn = ONE_ASTERISK.lock().await;
    let pki = edge::dev_pki();
    let run = tempfile::tempdir().expect("tempdir");
    let ast = Asterisk::start(run.path());
    let media = net::free_range(45000, 45499, 20);
    let e = start_edge(&pki, media).await;
    let wav = run.path().join("tone.wav");
    tone::write_wav(&wav, WAV_SECS);
    let mut p = start_phones(&pki, &e, &wav, "auto");

    wait_registered(&ast, &mut p);
    for (ctrl, user) in [(&mut p.ctrl_a, "101"), (&mut p.ctrl_b, "102")] {
        let info = ctrl.reginfo_until(Duration::from_secs(5), |i| i.contains("OK"));
        assert!(info.contains("OK"), "{user} registered: {info}");
    }
    let regs = http::get(e.admin_addr, "/api/registrations").await.1;
    assert!(
        regs.contains("\"aor\":\"101\"") && regs.contains("\"aor\":\"102\""),
        "{regs}"
    );
    // Asterisk challenged (401) and the phones answered it: its log of the REGISTER
    // trail is not needed — a registration without a challenge cannot exist with `auth = 101`.
    assert!(
        p.a.log().contains("401 Unauthorized") && p.b.log().contains("401 Unauthorized"),
        "Asterisk's digest challenge reached both phones"
    );
    // A fresh qualify goes through the edge to the phone and back.
    let options_before = p.b.log().matches("OPTIONS sip:").count();
    let _ = ast.rx("pjsip qualify 102");
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.b.log().matches("OPTIONS sip:").count() <= options_before && Instant::now() < deadline {
        p.ctrl_b.pump(Duration::from_millis(200));
    }
    assert!(
        p.b.log().matches("OPTIONS sip:").count() > options_before,
        "Asterisk's qualify OPTIONS reached 102 through the edge\n{}",
        p.b.log()
    );

    let capture = Capture::start(
        run.path(),
        "tshark-edge-media",
        &format!("udp portrange {}-{}", media.0, media.1),
        Duration::from_secs(60),
    );
    assert!(p.ctrl_a.command("dial", Some("sip:102@sbc.test")).is_some());
    let up_b = p
        .ctrl_b
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(20));
    let up_a = p
        .ctrl_a
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    assert!(
        up_a.is_some() && up_b.is_some(),
        "call established: {:?} / {:?}\n{}\n{}\n{}",
        p.ctrl_a.events,
        p.ctrl_b.events,
        p.a.log(),
        p.b.log(),
        ast.messages()
    );
    let up_at = Instant::now();
    p.ctrl_a.pump(Duration::from_secs(1));
    // While the call is up: two calls on the edge (one per phone leg, each with its SRTP
    // suite), two media streams, two Asterisk channels.
    let calls = assert_edge_agrees_with_asterisk(&e, &ast, 2).await;
    let suite_a = srtp_suite(&calls, "phone_to_pbx").unwrap_or_else(|| panic!("{calls}"));
    let suite_b = srtp_suite(&calls, "pbx_to_phone").unwrap_or_else(|| panic!("{calls}"));
    let pjsip_channels = ast.rx("pjsip show channels");
    assert!(
        pjsip_channels.contains("PJSIP/101-") && pjsip_channels.contains("PJSIP/102-"),
        "{pjsip_channels}"
    );
    while up_at.elapsed() < Duration::from_secs(11) {
        p.ctrl_a.pump(Duration::from_millis(250));
        p.ctrl_b.pump(Duration::from_millis(250));
    }
    assert!(
        !p.ctrl_a
            .events
            .iter()
            .chain(&p.ctrl_b.events)
            .any(|(k, _)| k == "CALL_CLOSED"),
        "the call stayed up for 10 s: {:?} / {:?}",
        p.ctrl_a.events,
        p.ctrl_b.events
    );
    // Still in agreement after 10 s of audio, with the same legs.
    let calls_late = assert_edge_agrees_with_asterisk(&e, &ast, 2).await;
    assert_eq!(
        srtp_suite(&calls_late, "phone_to_pbx"),
        Some(suite_a.clone())
    );
    assert_eq!(
        srtp_suite(&calls_late, "pbx_to_phone"),
        Some(suite_b.clone())
    );
    // RTCP intervals are randomised (RFC 3550 §6.3.1: 0.5–1.5 × 5 s), so a leg's first SR/RR
    // round may take longer than the 10 s above: bounded wait for every leg's round trip.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reports = calls_late.clone();
    while !rtcp_reports_complete(&reports) && Instant::now() < deadline {
        p.ctrl_a.pump(Duration::from_millis(250));
        p.ctrl_b.pump(Duration::from_millis(250));
        reports = http::get(e.admin_addr, "/api/calls").await.1;
    }
    check_rtcp_reports(&reports);
    // BYE from the callee.
    assert!(p.ctrl_b.command("hangup", None).is_some());
    let closed = p.ctrl_a.wait_event("CALL_CLOSED", Duration::from_secs(10));
    assert!(closed.is_some(), "{:?}", p.ctrl_a.events);
    assert_nothing_left(&e, &ast).await;
    let m = http::get(e.admin_addr, "/metrics").await.1;
    let drops: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("pbx_edge_media_dropped_total{"))
        .collect();
    eprintln!("media drops after the call: {drops:?}");
    let packets = capture.finish();
    // ASTERISK_KEEP_CAPTURE=DIR keeps the media capture for a closer look (INTEROP.md).
    if let Some(dir) = std::env::var_os("ASTERISK_KEEP_CAPTURE") {
        eprintln!(
            "edge media {media:?}, phone 101 RTP {:?}, phone 102 RTP {:?}",
            p.rtp_a, p.rtp_b
        );
        let _ = std::fs::copy(
            run.path().join("tshark-edge-media.pcapng"),
            Path::new(&dir).join("asterisk-call.pcapng"),
        );
    }
    check_call_capture(
        &packets,
        [(p.rtp_a, &suite_a), (p.rtp_b, &suite_b)],
        ASTERISK_RTP,
    );
    check_every_audio_packet_relayed(&packets, [p.rtp_a, p.rtp_b], ASTERISK_RTP);
    p.a.quit(&mut p.ctrl_a);
    p.b.quit(&mut p.ctrl_b);
    e.stop().await.expect("clean shutdown");
}

/// Calls Asterisk answers or refuses itself: the echo extension answers and returns audio,
/// an always-busy extension answers 486, an unknown number 404, a call to 102 left ringing is
/// CANCELled by the caller (487), and the caller's BYE ends an answered call. Nothing is left
/// on the edge or in Asterisk after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_answers_rejects_and_cancels_through_the_edge() {
    let _turn = ONE_ASTERISK.lock().await;
    let pki = edge::dev_pki();
    let run = tempfile::tempdir().expect("tempdir");
    let ast = Asterisk::start(run.path());
    let media = net::free_range(45500, 45999, 20);
    let e = start_edge(&pki, media).await;
    let wav = run.path().join("tone.wav");
    tone::write_wav(&wav, WAV_SECS);
    let mut p = start_phones(&pki, &e, &wav, "manual");
    wait_registered(&ast, &mut p);

    // Echo: Asterisk answers, the caller's BYE ends it.
    assert!(p.ctrl_a.command("dial", Some("sip:600@sbc.test")).is_some());
    let up = p
        .ctrl_a
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(15));
    assert!(
        up.is_some(),
        "echo answered: {:?}\n{}",
        p.ctrl_a.events,
        ast.messages()
    );
    let before = http::get(e.admin_addr, "/metrics").await.1;
    p.ctrl_a.pump(Duration::from_secs(3));
    let during = http::get(e.admin_addr, "/metrics").await.1;
    for dir in ["phone_to_pbx", "pbx_to_phone"] {
        let name = format!("pbx_edge_media_packets_total{{direction=\"{dir}\"}}");
        assert!(
            http::metric(&during, &name) > http::metric(&before, &name) + 50.0,
            "echo: {dir} packets grew"
        );
    }
    assert!(p.ctrl_a.command("hangup", None).is_some());
    assert!(p
        .ctrl_a
        .wait_event("CALL_CLOSED", Duration::from_secs(10))
        .is_some());
    assert_nothing_left(&e, &ast).await;

    // Busy and unknown: Asterisk's response reaches the phone.
    for (number, status) in [("603", "486"), ("699", "404")] {
        p.ctrl_a.events.clear();
        assert!(p
            .ctrl_a
            .command("dial", Some(&format!("sip:{number}@sbc.test")))
            .is_some());
        let closed = p.ctrl_a.wait_event("CALL_CLOSED", Duration::from_secs(15));
        assert!(
            closed.as_deref().is_some_and(|c| c.contains(status)),
            "{number}: {status} reaches the phone: {closed:?}\n{}",
            p.a.log()
        );
        assert_nothing_left(&e, &ast).await;
    }

    // CANCEL while 102 rings.
    p.ctrl_a.events.clear();
    assert!(p.ctrl_a.command("dial", Some("sip:102@sbc.test")).is_some());
    let ringing = p
        .ctrl_b
        .wait_event("CALL_INCOMING", Duration::from_secs(15));
    assert!(ringing.is_some(), "102 rings: {:?}", p.ctrl_b.events);
    p.ctrl_a.pump(Duration::from_millis(500));
    assert!(p.ctrl_a.command("hangup", None).is_some());
    let closed_b = p.ctrl_b.wait_event("CALL_CLOSED", Duration::from_secs(10));
    assert!(
        closed_b.is_some(),
        "the CANCEL reached 102 through Asterisk and the edge: {:?}\n{}",
        p.ctrl_b.events,
        p.b.log()
    );
    assert!(p.b.log().contains("CANCEL sip:"), "{}", p.b.log());
    assert_nothing_left(&e, &ast).await;

    p.a.quit(&mut p.ctrl_a);
    p.b.quit(&mut p.ctrl_b);
    e.stop().await.expect("clean shutdown");
}

/// Waits (bounded) until Asterisk's `messages.log` contains `needle`.
fn wait_log(ast: &Asterisk, needle: &str, limit: Duration, p: &mut Phones) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ast.messages().contains(needle) {
            return true;
        }
        p.ctrl_a.pump(Duration::from_millis(150));
        p.ctrl_b.pump(Duration::from_millis(150));
    }
    ast.messages().contains(needle)
}

/// Mid-call features from a phone, as Asterisk sees them: RFC 4733 digits from 101 reach the
/// dialplan's Read() in extension 601, which also logs the caller number Asterisk took from the
/// call — only the authorized user (101); hold (re-INVITE `a=sendonly`) and resume
/// (`a=sendrecv`) pass the edge both ways and Asterisk answers each (`recvonly`, then
/// `sendrecv`), with audio flowing again after the resume; a blind transfer (REFER) of a call
/// 101 → 102 to the echo extension leaves 102 talking to Asterisk's Echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_gets_dtmf_hold_resume_and_blind_transfer_from_phones() {
    let _turn = ONE_ASTERISK.lock().await;
    let pki = edge::dev_pki();
    let run = tempfile::tempdir().expect("tempdir");
    let ast = Asterisk::start(run.path());
    let media = net::free_range(45000, 45499, 20);
    let e = start_edge(&pki, media).await;
    let wav = run.path().join("tone.wav");
    tone::write_wav(&wav, WAV_SECS);
    let mut p = start_phones(&pki, &e, &wav, "auto");
    wait_registered(&ast, &mut p);

    // DTMF (RFC 4733 telephone-event, negotiated through the edge).
    assert!(p.ctrl_a.command("dial", Some("sip:601@sbc.test")).is_some());
    assert!(
        p.ctrl_a
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(15))
            .is_some(),
        "601 answered: {:?}",
        p.ctrl_a.events
    );
    p.ctrl_a.pump(Duration::from_secs(1));
    assert!(p.ctrl_a.command("sndcode", Some("1234")).is_some());
    assert!(
        wait_log(
            &ast,
            "DTMF-RESULT caller=101 digits=1234",
            Duration::from_secs(20),
            &mut p
        ),
        "Asterisk read the digits from 101: {}",
        ast.messages()
    );
    assert!(p
        .ctrl_a
        .wait_event("CALL_CLOSED", Duration::from_secs(10))
        .is_some());
    assert_nothing_left(&e, &ast).await;

    // Hold and resume against the echo extension.
    p.ctrl_a.events.clear();
    assert!(p.ctrl_a.command("dial", Some("sip:600@sbc.test")).is_some());
    assert!(p
        .ctrl_a
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(15))
        .is_some());
    p.ctrl_a.pump(Duration::from_secs(1));
    let recvonly_before = p.a.log().matches("a=recvonly").count();
    assert!(p.ctrl_a.command("hold", None).is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.a.log().matches("a=recvonly").count() <= recvonly_before && Instant::now() < deadline {
        p.ctrl_a.pump(Duration::from_millis(200));
    }
    assert!(
        p.a.log().matches("a=recvonly").count() > recvonly_before,
        "Asterisk answered the hold re-INVITE with recvonly through the edge\n{}",
        p.a.log()
    );
    let sendrecv_before = p.a.log().matches("a=sendrecv").count();
    assert!(p.ctrl_a.command("resume", None).is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.a.log().matches("a=sendrecv").count() < sendrecv_before + 2 && Instant::now() < deadline
    {
        p.ctrl_a.pump(Duration::from_millis(200));
    }
    assert!(
        p.a.log().matches("a=sendrecv").count() >= sendrecv_before + 2,
        "the resume re-INVITE and Asterisk's answer both say sendrecv\n{}",
        p.a.log()
    );
    let name = |dir: &str| format!("pbx_edge_media_packets_total{{direction=\"{dir}\"}}");
    let before = http::get(e.admin_addr, "/metrics").await.1;
    p.ctrl_a.pump(Duration::from_secs(3));
    let after = http::get(e.admin_addr, "/metrics").await.1;
    for dir in ["phone_to_pbx", "pbx_to_phone"] {
        assert!(
            http::metric(&after, &name(dir)) > http::metric(&before, &name(dir)) + 50.0,
            "audio flows {dir} again after the resume"
        );
    }
    assert!(p.ctrl_a.command("hangup", None).is_some());
    assert!(p
        .ctrl_a
        .wait_event("CALL_CLOSED", Duration::from_secs(10))
        .is_some());
    assert_nothing_left(&e, &ast).await;

    // Blind transfer: 101 calls 102, then REFERs the call to 600.
    p.ctrl_a.events.clear();
    p.ctrl_b.events.clear();
    assert!(p.ctrl_a.command("dial", Some("sip:102@sbc.test")).is_some());
    assert!(p
        .ctrl_b
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(15))
        .is_some());
    assert!(p
        .ctrl_a
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
        .is_some());
    p.ctrl_a.pump(Duration::from_secs(1));
    assert!(p
        .ctrl_a
        .command("transfer", Some("sip:600@sbc.test"))
        .is_some());
    let channels = ast.rx_until("core show channels", Duration::from_secs(15), |o| {
        o.lines()
            .any(|l| l.starts_with("PJSIP/102-") && l.contains("Echo"))
    });
    assert!(
        channels
            .lines()
            .any(|l| l.starts_with("PJSIP/102-") && l.contains("Echo")),
        "after the REFER, 102 talks to Asterisk's Echo: {channels}\n{}\n{}",
        p.a.log(),
        ast.messages()
    );
    assert!(
        p.a.log().contains("REFER sip:"),
        "101 sent the REFER through the edge"
    );
    assert!(p
        .ctrl_a
        .wait_event("CALL_CLOSED", Duration::from_secs(10))
        .is_some());
    assert!(p.ctrl_b.events.iter().all(|(k, _)| k != "CALL_CLOSED"));
    // 102's leg keeps its keys and ports across the transfer: Echo's audio reaches it.
    let before = pbx_to_phone_packets(
        &http::get(e.admin_addr, "/api/calls").await.1,
        "pbx_to_phone",
    );
    p.ctrl_b.pump(Duration::from_secs(2));
    let calls = http::get(e.admin_addr, "/api/calls").await.1;
    assert!(
        pbx_to_phone_packets(&calls, "pbx_to_phone") >= before + 50,
        "Asterisk's Echo reaches 102 after the transfer: {before} → {calls}"
    );
    assert!(p.ctrl_b.command("hangup", None).is_some());
    assert!(p
        .ctrl_b
        .wait_event("CALL_CLOSED", Duration::from_secs(10))
        .is_some());
    assert_nothing_left(&e, &ast).await;

    p.a.quit(&mut p.ctrl_a);
    p.b.quit(&mut p.ctrl_b);
    e.stop().await.expect("clean shutdown");
}

/// An RTP packet (v2, PCMU) from `src` to `dst` with `payload` after the header.
fn datagram(src: u16, dst: u16, seq: u16, payload: &[u8]) -> Datagram {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(payload);
    Datagram {
        src_port: src,
        dst_port: dst,
        payload: p,
    }
}

/// A synthetic bridged call: phone 1 (46000) ⇄ edge 45000/45002 ⇄ Asterisk 20000, phone 2
/// (46500) ⇄ edge 45004/45006 ⇄ Asterisk 20002; `phone_payload` on the phone legs, the tone
/// (or `pbx_payload`) on the Asterisk legs; 400 packets per direction and leg.
fn synthetic(
    phone_payload: impl Fn(u16) -> Vec<u8>,
    pbx_payload: impl Fn(u16) -> Vec<u8>,
) -> Vec<Datagram> {
    let mut v = Vec::new();
    for seq in 0..400u16 {
        for (phone, edge_phone, edge_pbx, ast) in
            [(46000, 45000, 45002, 20000), (46500, 45004, 45006, 20002)]
        {
            v.push(datagram(phone, edge_phone, seq, &phone_payload(seq)));
            v.push(datagram(edge_phone, phone, seq, &phone_payload(seq)));
            v.push(datagram(edge_pbx, ast, seq, &pbx_payload(seq)));
            v.push(datagram(ast, edge_pbx, seq, &pbx_payload(seq)));
        }
    }
    v
}

fn noise(seq: u16, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| ((i + u32::from(seq) * 977).wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

fn toned(seq: u16) -> Vec<u8> {
    tone::tone_pcmu(u32::from(seq) * 160, 160)
}

const SYNTH_PHONES: [(u16, u16); 2] = [(46000, 46009), (46500, 46509)];

fn check_synthetic(packets: &[Datagram]) {
    check_call_capture(
        packets,
        [
            (SYNTH_PHONES[0], "AES_CM_128_HMAC_SHA1_80"),
            (SYNTH_PHONES[1], "AES_CM_128_HMAC_SHA1_80"),
        ],
        (20000, 20999),
    );
}

#[test]
fn call_capture_check_accepts_srtp_on_phone_legs_and_the_tone_on_asterisk_legs() {
    let packets = synthetic(|seq| noise(seq, 170), toned);
    check_synthetic(&packets);
    check_every_audio_packet_relayed(&packets, SYNTH_PHONES, (20000, 20999));
}

#[test]
#[should_panic(expected = "no payload is the plain tone")]
fn call_capture_check_rejects_the_plain_tone_on_a_phone_leg() {
    check_synthetic(&synthetic(
        |seq| {
            let mut p = toned(seq);
            p.extend_from_slice(&[0; 10]);
            p
        },
        toned,
    ));
}

#[test]
#[should_panic(expected = "the plain RTP carries the tone")]
fn call_capture_check_rejects_an_asterisk_leg_without_the_tone() {
    check_synthetic(&synthetic(|seq| noise(seq, 170), |seq| noise(seq, 160)));
}

#[test]
#[should_panic(expected = "audio packets reached the edge")]
fn relay_check_rejects_audio_lost_in_the_edge() {
    let mut packets = synthetic(|seq| noise(seq, 170), toned);
    // The edge lost three packets toward Asterisk.
    let mut lost = 0;
    packets.retain(|d| {
        let drop = d.dst_port == 20000 && lost < 3;
        lost += usize::from(drop);
        !drop
    });
    check_every_audio_packet_relayed(&packets, SYNTH_PHONES, (20000, 20999));
}

/// An SDES key (RFC 4568 §8.1's example): the raw phone's offer only has to be well formed.
const KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

/// A SIP connection of the raw attacker: the device's TLS connection to the edge, or (the
/// control) plain UDP straight to Asterisk.
enum Raw {
    Tls(Box<crate::support::phone::Phone>, u16),
    Udp(tokio::net::UdpSocket),
}

impl Raw {
    fn via(&self) -> String {
        match self {
            Raw::Tls(_, port) => format!("SIP/2.0/TLS 127.0.0.1:{port}"),
            Raw::Udp(s) => format!("SIP/2.0/UDP {}", s.local_addr().expect("udp local address")),
        }
    }

    /// The SDP a phone offers: SRTP toward the edge, plain RTP straight to Asterisk.
    fn sdp(&self) -> String {
        let media = match self {
            Raw::Tls(..) => {
                format!("m=audio 46900 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n")
            }
            Raw::Udp(_) => "m=audio 46900 RTP/AVP 0\r\n".to_owned(),
        };
        format!("v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{media}a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
    }

    async fn send(&mut self, text: &str) {
        match self {
            Raw::Tls(s, _) => s.send(text).await,
            Raw::Udp(s) => {
                s.send_to(text.as_bytes(), ASTERISK_SIP)
                    .await
                    .expect("udp send");
            }
        }
    }

    /// The next final response within 10 s (provisional ones skipped).
    async fn final_response(&mut self) -> Option<pbx_edge::sip::message::SipMessage> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = match self {
                Raw::Tls(s, _) => s.recv_within(left).await?,
                Raw::Udp(s) => {
                    let mut buf = vec![0u8; 65535];
                    let (n, _) = tokio::time::timeout(left, s.recv_from(&mut buf))
                        .await
                        .ok()?
                        .ok()?;
                    pbx_edge::sip::message::SipMessage::parse(&buf[..n]).ok()?
                }
            };
            if msg.status().is_some_and(|s| s >= 200) {
                return Some(msg);
            }
        }
    }
}

/// The MD5 `Authorization` answering `challenge` (RFC 2617 §3.2.2, qop=auth when offered).
fn digest_authorization(
    challenge: &str,
    method: &str,
    uri: &str,
    user: &str,
    pass: &str,
) -> String {
    use md5::{Digest, Md5};
    let param = |name: &str| {
        challenge.split(',').find_map(|p| {
            let (k, v) = p.trim().trim_start_matches("Digest ").split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_owned())
        })
    };
    let hex = |s: String| hex::encode(Md5::digest(s.as_bytes()));
    let realm = param("realm").expect("challenge realm");
    let nonce = param("nonce").expect("challenge nonce");
    let ha1 = hex(format!("{user}:{realm}:{pass}"));
    let ha2 = hex(format!("{method}:{uri}"));
    let opaque = param("opaque")
        .map(|o| format!(", opaque=\"{o}\""))
        .unwrap_or_default();
    match param("qop") {
        Some(q) if q.split(',').any(|q| q.trim() == "auth") => {
            let cnonce = "0a4f113b";
            let response = hex(format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
            format!("Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"{cnonce}\"{opaque}")
        }
        _ => {
            let response = hex(format!("{ha1}:{nonce}:{ha2}"));
            format!("Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5{opaque}")
        }
    }
}

/// An INVITE to extension 602 (which logs Asterisk's `CALLERID(num)` and answers busy) as
/// 101 with `extra` headers (the forged identity), answering Asterisk's digest challenge with
/// 101's password; returns the final status (ACKed).
async fn call_602(raw: &mut Raw, call_id: &str, from: &str, extra: &str) -> u16 {
    let uri = "sip:602@sbc.test";
    let mut authorization = String::new();
    for cseq in 1..=2u32 {
        let branch = format!("z9hG4bK-{call_id}-{cseq}");
        let via = raw.via();
        let sdp = raw.sdp();
        let invite = format!(
            "INVITE {uri} SIP/2.0\r\n\
             Via: {via};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             {from}\
             To: <{uri}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} INVITE\r\n\
             Contact: <sip:101@127.0.0.1:46901;transport=tls>\r\n\
             {extra}{authorization}\
             Content-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        raw.send(&invite).await;
        let Some(resp) = raw.final_response().await else {
            panic!("no final response to the INVITE {call_id}");
        };
        let status = resp.status().unwrap_or_default();
        // ACK for a non-2xx final response: same branch, the response's To (RFC 3261 §17.1.1.3).
        let ack = format!(
            "ACK {uri} SIP/2.0\r\nVia: {via};branch={branch};rport\r\nMax-Forwards: 70\r\n{from}To: {}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
            resp.header("To").unwrap_or_default()
        );
        raw.send(&ack).await;
        if status != 401 {
            return status;
        }
        let challenge = resp
            .header_values("WWW-Authenticate")
            .into_iter()
            .find(|c| !c.contains("SHA-256"))
            .unwrap_or_else(|| panic!("401 without an MD5 challenge"))
            .to_owned();
        authorization = format!(
            "Authorization: {}\r\n",
            digest_authorization(&challenge, "INVITE", uri, "101", "change-me-101")
        );
    }
    panic!("Asterisk challenged the authenticated INVITE {call_id} again");
}

/// The caller numbers Asterisk logged in extension 602 so far.
fn callers_602(ast: &Asterisk) -> Vec<String> {
    ast.messages()
        .lines()
        .filter(|l| l.contains("NOTICE[") && l.contains("CALLER-ID caller="))
        .filter_map(|l| {
            l.split("CALLER-ID caller=")
                .nth(1)?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// [`callers_602`] once it has `n` entries (bounded): Asterisk's logger writes
/// asynchronously, so the 486 can reach the caller before the line reaches the file.
fn callers_602_after(ast: &Asterisk, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let callers = callers_602(ast);
        if callers.len() >= n || Instant::now() >= deadline {
            return callers;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The fields of one CSV line: comma-separated, optionally quoted, `""` inside quotes for `"`.
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The (src, dst) of each record in Asterisk's `cdr-csv/Master.csv` (cdr_csv's columns:
/// accountcode, src, dst, ...).
fn cdr_records(ast: &Asterisk) -> Vec<(String, String)> {
    let path = ast.log.with_file_name("cdr-csv").join("Master.csv");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f = csv_fields(l);
            Some((f.get(1)?.clone(), f.get(2)?.clone()))
        })
        .collect()
}

#[test]
fn csv_fields_reads_cdr_csv_lines() {
    assert_eq!(
        csv_fields(r#""","101","602","phones","""101"" <101>",0,"BUSY""#),
        ["", "101", "602", "phones", "\"101\" <101>", "0", "BUSY"]
    );
}

/// The authorization attacks of issue 11, against the real Asterisk's view of the caller.
/// Control first: the same INVITE sent straight to Asterisk (bypassing the edge) with
/// `P-Asserted-Identity: 102` makes Asterisk (`trust_id_inbound = yes`) take 102 as the
/// caller — so the attack is real. Through the edge, the device of 101: a forged PAI,
/// P-Preferred-Identity and Remote-Party-ID naming 102 leave Asterisk's `CALLERID(num)` at
/// 101; a second From naming 102 and a To tag on a fresh Call-ID are refused by the edge and
/// never reach Asterisk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_sees_only_the_authorized_caller() {
    let _turn = ONE_ASTERISK.lock().await;
    let pki = edge::dev_pki();
    let run = tempfile::tempdir().expect("tempdir");
    let ast = Asterisk::start(run.path());
    let media = net::free_range(45500, 45999, 20);
    let e = start_edge(&pki, media).await;
    let forged = "P-Asserted-Identity: <sip:102@sbc.test>\r\n\
                  P-Preferred-Identity: <sip:102@sbc.test>\r\n\
                  Remote-Party-ID: <sip:102@sbc.test>;party=calling;screen=yes;privacy=off\r\n";
    let from_101 = "From: <sip:101@sbc.test>;tag=f101\r\n";

    // Control: straight to Asterisk, the forged PAI wins.
    let mut direct = Raw::Udp(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    let status = call_602(&mut direct, "direct-pai", from_101, forged).await;
    assert_eq!(status, 486, "{}", ast.messages());
    assert_eq!(
        callers_602_after(&ast, 1),
        ["102"],
        "control: without the edge, Asterisk believes the forged PAI"
    );

    // Through the edge: the forged identity headers are replaced.
    let port = net::free_tcp_port();
    let mut phone = Raw::Tls(Box::new(crate::support::phone::snom(&pki, &e).await), port);
    let status = call_602(&mut phone, "edge-pai", from_101, forged).await;
    assert_eq!(status, 486, "{}", ast.messages());
    assert_eq!(
        callers_602_after(&ast, 2),
        ["102", "101"],
        "through the edge Asterisk sees the authorized caller"
    );

    // A second From naming 102, and a To tag on a fresh Call-ID: refused by the edge.
    for (call_id, from, extra) in [
        (
            "edge-two-froms",
            "From: <sip:101@sbc.test>;tag=f101\r\nFrom: <sip:102@sbc.test>;tag=f102\r\n",
            "",
        ),
        ("edge-to-tag", from_101, ""),
    ] {
        let status = if call_id == "edge-to-tag" {
            // The To tag goes into the To header: build that INVITE by hand.
            let sdp = phone.sdp();
            let via = phone.via();
            phone
                .send(&format!(
                    "INVITE sip:602@sbc.test SIP/2.0\r\nVia: {via};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\n{from}To: <sip:602@sbc.test>;tag=guessed\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:101@127.0.0.1:46901;transport=tls>\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    sdp.len()
                ))
                .await;
            phone
                .final_response()
                .await
                .and_then(|r| r.status())
                .unwrap_or_default()
        } else {
            call_602(&mut phone, call_id, from, extra).await
        };
        // Asterisk would have challenged (401) or answered busy (486): another 4xx is the
        // edge's refusal.
        eprintln!("{call_id}: {status}");
        assert!(
            (400..500).contains(&status) && status != 401 && status != 486,
            "{call_id}: refused by the edge, not Asterisk: {status}"
        );
    }
    let channels = ast.rx("core show channels");
    assert_eq!(active_channels(&channels), Some(0), "{channels}");
    assert_eq!(
        callers_602(&ast),
        ["102", "101"],
        "neither attack reached Asterisk's dialplan"
    );
    let sip_history = ast.messages();
    assert!(
        !sip_history.contains("edge-two-froms") && !sip_history.contains("edge-to-tag"),
        "{sip_history}"
    );
    // Asterisk's billing records agree: the control call billed to 102 (the forgery works
    // without the edge), the call through the edge to 101, the refused ones not at all.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut cdrs = cdr_records(&ast);
    while cdrs.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        cdrs = cdr_records(&ast);
    }
    assert_eq!(
        cdrs,
        [
            ("102".to_owned(), "602".to_owned()),
            ("101".to_owned(), "602".to_owned())
        ],
        "CDRs (cdr_csv) bill only the authorized caller through the edge"
    );
    assert_nothing_left(&e, &ast).await;
    e.stop().await.expect("clean shutdown");
}

/// MWI: a message put into 102's voicemail INBOX (as app_voicemail stores one: a `.txt`
/// description beside the recording) makes Asterisk (voicemail.conf polls the spool; the
/// endpoint has `mailboxes = 102@default`) send an unsolicited NOTIFY `message-summary` with
/// `Messages-Waiting: yes` that reaches 102 through the edge over its TLS connection; 101,
/// whose mailbox is empty, gets no such NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_message_waiting_notify_reaches_the_phone() {
    let _turn = ONE_ASTERISK.lock().await;
    let pki = edge::dev_pki();
    let run = tempfile::tempdir().expect("tempdir");
    let ast = Asterisk::start(run.path());
    let media = net::free_range(45000, 45499, 20);
    let e = start_edge(&pki, media).await;
    let wav = run.path().join("tone.wav");
    tone::write_wav(&wav, 3);
    let mut p = start_phones(&pki, &e, &wav, "auto");
    wait_registered(&ast, &mut p);
    assert!(
        !p.b.log().contains("Messages-Waiting: yes"),
        "no message yet\n{}",
        p.b.log()
    );

    let inbox = run.path().join("spool/voicemail/default/102/INBOX");
    std::fs::create_dir_all(&inbox).expect("inbox");
    std::fs::copy(&wav, inbox.join("msg0000.wav")).expect("recording");
    std::fs::write(
        inbox.join("msg0000.txt"),
        ";\n; Message Information file\n;\n[message]\norigmailbox=102\ncontext=phones\n\
         macrocontext=\nexten=102\nrdnis=unknown\npriority=2\ncallerchan=PJSIP/101-00000000\n\
         callerid=\"101\" <101>\norigdate=Mon Dec  7 00:00:00 AM UTC 2026\n\
         origtime=1796601600\ncategory=\nmsg_id=1796601600-00000000\nflag=\nduration=3\n",
    )
    .expect("message description");

    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.b.log().contains("Messages-Waiting: yes") && Instant::now() < deadline {
        p.ctrl_b.pump(Duration::from_millis(250));
    }
    let log_b = p.b.log();
    assert!(
        log_b.contains("NOTIFY sip:")
            && log_b.contains("message-summary")
            && log_b.contains("Messages-Waiting: yes"),
        "Asterisk's message-summary NOTIFY reached 102 through the edge\n{log_b}\n{}\n{}\n{}",
        ast.messages(),
        ast.rx("voicemail show users"),
        http::get(e.admin_addr, "/metrics")
            .await
            .1
            .lines()
            .filter(|l| !l.starts_with('#')
                && (l.contains("refused") || l.contains("dropped"))
                && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let users = ast.rx("voicemail show users");
    assert!(
        users
            .lines()
            .any(|l| l.contains("102") && l.split_whitespace().last() == Some("1")),
        "Asterisk counts one new message for 102: {users}"
    );
    assert!(
        !p.a.log().contains("Messages-Waiting: yes"),
        "101's mailbox is empty\n{}",
        p.a.log()
    );
    p.a.quit(&mut p.ctrl_a);
    p.b.quit(&mut p.ctrl_b);
    e.stop().await.expect("clean shutdown");
}

/// The `<state>` values of a dialog-info NOTIFY body (RFC 4235 §4.1), in order.
fn dialog_states(body: &str) -> Vec<String> {
    body.split("<state")
        .skip(1)
        .filter_map(|s| Some(s.split_once('>')?.1.split('<').next()?.trim().to_owned()))
        .collect()
}

/// BLF: 101's device SUBSCRIBEs (Event: dialog, RFC 4235) to 102 through the edge, answering
/// Asterisk's digest challenge; Asterisk's NOTIFYs come back over the same TLS connection: the
/// initial one, then `early` while 102 rings and `confirmed` once 102 answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_dialog_notifies_reach_a_blf_subscriber() {
    let _turn = ONE_ASTERISK.lock().await;
    let pki = edge::dev_pki();
    let run = tempfile::tempdir().expect("tempdir");
    let ast = Asterisk::start(run.path());
    let media = net::free_range(45500, 45999, 20);
    let e = start_edge(&pki, media).await;
    let wav = run.path().join("tone.wav");
    tone::write_wav(&wav, WAV_SECS);
    let mut p = start_phones(&pki, &e, &wav, "manual");
    wait_registered(&ast, &mut p);

    let port = net::free_tcp_port();
    let mut blf = crate::support::phone::snom(&pki, &e).await;
    let uri = "sip:102@sbc.test";
    let mut authorization = String::new();
    let mut states: Vec<String> = Vec::new();
    for cseq in 1..=2u32 {
        blf.send(&format!(
            "SUBSCRIBE {uri} SIP/2.0\r\n\
             Via: SIP/2.0/TLS 127.0.0.1:{port};branch=z9hG4bK-blf-{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:101@sbc.test>;tag=blf101\r\n\
             To: <{uri}>\r\n\
             Call-ID: blf-101-102\r\n\
             CSeq: {cseq} SUBSCRIBE\r\n\
             Contact: <sip:101@127.0.0.1:{port};transport=tls>\r\n\
             Event: dialog\r\n\
             Accept: application/dialog-info+xml\r\n\
             Expires: 300\r\n\
             {authorization}Content-Length: 0\r\n\r\n"
        ))
        .await;
        let resp = loop {
            let m = blf
                .recv_within(Duration::from_secs(10))
                .await
                .expect("an answer to the SUBSCRIBE");
            if m.is_request() {
                // An early NOTIFY (RFC 6665 §4.1.2.4): answer and keep it.
                states.extend(dialog_states(&String::from_utf8_lossy(m.body())));
                blf.send(&crate::support::phone::response(&m, 200)).await;
            } else if m.status().is_some_and(|s| s >= 200) {
                break m;
            }
        };
        match resp.status() {
            Some(401) => {
                let challenge = resp
                    .header_values("WWW-Authenticate")
                    .into_iter()
                    .find(|c| !c.contains("SHA-256"))
                    .expect("MD5 challenge")
                    .to_owned();
                authorization = format!(
                    "Authorization: {}\r\n",
                    digest_authorization(&challenge, "SUBSCRIBE", uri, "101", "change-me-101")
                );
            }
            Some(s) if (200..300).contains(&s) => break,
            other => panic!("SUBSCRIBE answered {other:?}\n{}", ast.messages()),
        }
    }

    // Every NOTIFY within `limit`: answered 200, its states recorded.
    async fn notifies(
        blf: &mut crate::support::phone::Phone,
        states: &mut Vec<String>,
        limit: Duration,
        until: &str,
    ) {
        let deadline = tokio::time::Instant::now() + limit;
        while !states.iter().any(|s| s == until) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(m) = blf.recv_within(left).await else {
                return;
            };
            if m.method().map(|m| m.as_str()) == Some("NOTIFY") {
                assert_eq!(m.header("Event"), Some("dialog"), "RFC 4235 event package");
                states.extend(dialog_states(&String::from_utf8_lossy(m.body())));
                blf.send(&crate::support::phone::response(&m, 200)).await;
            }
        }
    }
    notifies(&mut blf, &mut states, Duration::from_secs(5), "terminated").await;
    assert!(
        !states.is_empty(),
        "the initial NOTIFY reached the subscriber"
    );

    assert!(p.ctrl_a.command("dial", Some("sip:102@sbc.test")).is_some());
    assert!(p
        .ctrl_b
        .wait_event("CALL_INCOMING", Duration::from_secs(15))
        .is_some());
    notifies(&mut blf, &mut states, Duration::from_secs(10), "early").await;
    assert!(
        states.iter().any(|s| s == "early"),
        "102 ringing reached the BLF subscriber: {states:?}"
    );
    assert!(p.ctrl_b.command("accept", None).is_some());
    assert!(p
        .ctrl_b
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
        .is_some());
    notifies(&mut blf, &mut states, Duration::from_secs(10), "confirmed").await;
    assert!(
        states.iter().any(|s| s == "confirmed"),
        "102 answering reached the BLF subscriber: {states:?}"
    );
    eprintln!("BLF states seen by 101: {states:?}");
    assert!(p.ctrl_a.command("hangup", None).is_some());
    assert!(p
        .ctrl_b
        .wait_event("CALL_CLOSED", Duration::from_secs(10))
        .is_some());
    assert_nothing_left(&e, &ast).await;
    p.a.quit(&mut p.ctrl_a);
    p.b.quit(&mut p.ctrl_b);
    e.stop().await.expect("clean shutdown");
}

/// Packets the edge relayed PBX → phone on the call in `/api/calls` whose direction is
/// `direction`.
fn pbx_to_phone_packets(calls: &str, direction: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(calls).unwrap_or_default();
    v["calls"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|c| c["direction"].as_str() == Some(direction))
        })
        .and_then(|c| c["packets_pbx_to_phone"].as_u64())
        .unwrap_or(0)
}

/// Hold from a phone in a call between two phones: 101 holds (re-INVITE `a=sendonly` through
/// the edge), Asterisk starts music on hold (`musiconhold.conf`) toward 102, and the edge
/// keeps relaying packets to 102 (SRTP on its leg) while 101 holds; 101 resumes, Asterisk stops
/// the music; the call ends cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_music_on_hold_reaches_the_held_phone() {
    let _turn = ONE_ASTERISK.lock().await;
    let pki = edge::dev_pki();
    let run = tempfile::tempdir().expect("tempdir");
    let ast = Asterisk::start(run.path());
    let media = net::free_range(45000, 45499, 20);
    let e = start_edge(&pki, media).await;
    let wav = run.path().join("tone.wav");
    tone::write_wav(&wav, WAV_SECS);
    let mut p = start_phones(&pki, &e, &wav, "auto");
    wait_registered(&ast, &mut p);

    assert!(p.ctrl_a.command("dial", Some("sip:102@sbc.test")).is_some());
    assert!(p
        .ctrl_b
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(15))
        .is_some());
    assert!(p
        .ctrl_a
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
        .is_some());
    p.ctrl_a.pump(Duration::from_secs(1));
    assert!(p.ctrl_a.command("hold", None).is_some());
    assert!(
        wait_log(
            &ast,
            "Started music on hold",
            Duration::from_secs(10),
            &mut p
        ),
        "Asterisk started music on hold for 102: {}",
        ast.messages()
    );
    let started = ast
        .messages()
        .lines()
        .find(|l| l.contains("Started music on hold"))
        .unwrap_or_default()
        .to_owned();
    assert!(started.contains("PJSIP/102-"), "{started}");
    let before = pbx_to_phone_packets(
        &http::get(e.admin_addr, "/api/calls").await.1,
        "pbx_to_phone",
    );
    p.ctrl_a.pump(Duration::from_secs(3));
    let calls = http::get(e.admin_addr, "/api/calls").await.1;
    let during = pbx_to_phone_packets(&calls, "pbx_to_phone");
    assert!(
        during >= before + 100,
        "the music reached 102 through the edge while 101 held: {before} → {during}\n{calls}"
    );
    assert!(
        srtp_suite(&calls, "pbx_to_phone").is_some(),
        "102's leg is SRTP: {calls}"
    );
    assert!(p.ctrl_a.command("resume", None).is_some());
    assert!(
        wait_log(
            &ast,
            "Stopped music on hold",
            Duration::from_secs(10),
            &mut p
        ),
        "Asterisk stopped the music on resume: {}",
        ast.messages()
    );
    assert!(p.ctrl_a.command("hangup", None).is_some());
    assert!(p
        .ctrl_b
        .wait_event("CALL_CLOSED", Duration::from_secs(10))
        .is_some());
    assert_nothing_left(&e, &ast).await;
    p.a.quit(&mut p.ctrl_a);
    p.b.quit(&mut p.ctrl_b);
    e.stop().await.expect("clean shutdown");
}

/// During a call: the edge's `/api/calls` (every call established), its calls and
/// media-stream gauges, and Asterisk's `core show channels` all count `n` — one edge call,
/// one audio stream and one Asterisk channel per phone leg. Returns the `/api/calls` body.
fn listed_calls(calls: &str) -> Vec<serde_json::Value> {
    let parsed: serde_json::Value = serde_json::from_str(calls).unwrap_or_default();
    parsed["calls"].as_array().cloned().unwrap_or_default()
}

/// Every direction of every call on `/api/calls` has a round-trip time from RTCP.
fn rtcp_reports_complete(calls: &str) -> bool {
    listed_calls(calls).iter().all(|call| {
        ["phone_to_pbx", "pbx_to_phone"]
            .iter()
            .all(|d| call["quality"][0][*d]["reported"]["rtt_ms"].is_number())
    })
}

/// What the real endpoints said in RTCP after 10 s of a clean call on loopback, per call
/// and direction on `/api/calls`: Asterisk and baresip both sent reports (every 5 s), the
/// edge read them (the phones' through SRTCP), no loss over the whole stream, and a
/// round-trip time measured on each leg from their SR/RR exchange.
fn check_rtcp_reports(calls: &str) {
    let listed = listed_calls(calls);
    assert!(!listed.is_empty(), "{calls}");
    for call in &listed {
        let stream = &call["quality"][0];
        for direction in ["phone_to_pbx", "pbx_to_phone"] {
            let r = &stream[direction]["reported"];
            assert!(r.is_object(), "{direction} has a report: {calls}");
            assert_eq!(
                r["stream_loss"].as_f64(),
                Some(0.0),
                "{direction}: no loss over the whole stream on loopback: {calls}"
            );
            let rtt = r["rtt_ms"].as_f64();
            assert!(
                rtt.is_some_and(|ms| (0.0..1000.0).contains(&ms)),
                "{direction}: a round-trip time from the SR/RR exchange: {calls}"
            );
        }
    }
}

async fn assert_edge_agrees_with_asterisk(e: &RunningEdge, ast: &Asterisk, n: usize) -> String {
    let calls = http::get(e.admin_addr, "/api/calls").await.1;
    let m = http::get(e.admin_addr, "/metrics").await.1;
    let channels = ast.rx("core show channels");
    let listed: Vec<serde_json::Value> = serde_json::from_str::<serde_json::Value>(&calls)
        .ok()
        .and_then(|v| v["calls"].as_array().cloned())
        .unwrap_or_default();
    assert_eq!(listed.len(), n, "/api/calls lists {n} calls: {calls}");
    assert!(
        listed
            .iter()
            .all(|c| c["established"].as_bool() == Some(true)),
        "every call on the edge is established: {calls}"
    );
    assert_eq!(
        active_channels(&channels),
        Some(n as u32),
        "Asterisk has as many channels as the edge has calls: {channels}\n{calls}"
    );
    for gauge in ["pbx_edge_calls_active", "pbx_edge_media_active_streams"] {
        assert_eq!(
            http::metric(&m, gauge),
            n as f64,
            "{gauge} agrees with Asterisk's {n} channels"
        );
    }
    calls
}

/// The SIP messages of a baresip `-s` trace, each from its start line (a request line or a
/// `SIP/2.0 NNN` status line) up to the next start line, lines trimmed.
fn sip_messages(log: &str) -> Vec<Vec<String>> {
    let is_start = |l: &str| {
        l.starts_with("SIP/2.0 ")
            || l.split_whitespace().collect::<Vec<_>>().as_slice().last() == Some(&"SIP/2.0")
                && l.split_whitespace().count() == 3
                && l.chars().next().is_some_and(|c| c.is_ascii_uppercase())
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    for line in log.lines().map(str::trim) {
        if is_start(line) {
            out.push(vec![line.to_owned()]);
        } else if let Some(m) = out.last_mut() {
            m.push(line.to_owned());
        }
    }
    out
}

/// The value of header `name` (case-insensitive) in a message from [`sip_messages`].
fn sip_header<'a>(msg: &'a [String], name: &str) -> Option<&'a str> {
    msg.iter().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The SDP lines of a message starting with `prefix` (e.g. `a=crypto:`, `m=audio`).
fn sdp_lines(msg: &[String], prefix: &str) -> Vec<String> {
    msg.iter()
        .filter(|l| l.starts_with(prefix))
        .cloned()
        .collect()
}

/// Every media drop counter of the edge (`pbx_edge_media_dropped_total` by reason, the SRTP
/// authentication-failure and replay counters) as its exposition lines; asserts the
/// authentication-failure counters are among them, so a renamed metric cannot make the
/// comparison vacuous.
fn media_failures(m: &str) -> Vec<String> {
    let lines: Vec<String> = m
        .lines()
        .filter(|l| {
            l.starts_with("pbx_edge_media_dropped_total{")
                || l.starts_with("pbx_edge_media_srtp_auth_failures_total")
                || l.starts_with("pbx_edge_media_srtp_replays_total")
        })
        .map(str::to_owned)
        .collect();
    for name in [
        "pbx_edge_media_dropped_total{reason=\"auth_failed\"}",
        "pbx_edge_media_dropped_total{reason=\"not_keyed\"}",
        "pbx_edge_media_srtp_auth_failures_total",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{name} "))),
            "{name} is exposed: {lines:?}"
        );
    }
    lines
}

/// Packets the edge relayed on the call in `/api/calls` whose direction is `direction`:
/// (phone → PBX, PBX → phone).
fn call_packets(calls: &str, direction: &str) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_str(calls).unwrap_or_default();
    let call = v["calls"].as_array().and_then(|a| {
        a.iter()
            .find(|c| c["direction"].as_str() == Some(direction))
            .cloned()
    });
    let get = |k: &str| call.as_ref().and_then(|c| c[k].as_u64()).unwrap_or(0);
    (get("packets_phone_to_pbx"), get("packets_pbx_to_phone"))
}

/// Test-only: session timers even with a phone that does not take part in them (baresip
/// answers without Session-Expires; with the shipped `timers = yes` pjproject then runs no
/// timer at all), at the shortest interval (RFC 4028 §4 and pjproject's floor: 90 s), so
/// Asterisk refreshes each leg of a call at 45 s.
const SESSION_TIMERS_90: Override = Override {
    file: "pjsip.conf",
    find: "timers = yes\n",
    replace: "timers = always\ntimers_sess_expires = 90\ntimers_min_se = 90\n",
};

/// `a=crypto` lines without their tags (`SUITE inline:KEY…`): tags are renumbered per offer.
fn crypto_keys(msg: &[String]) -> Vec<String> {
    sdp_lines(msg, "a=crypto:")
        .iter()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_owned()))
        .collect()
}

/// Port and profile of each `m=audio` line (the formats may shrink to what was negotiated:
/// Asterisk re-offers only PCMU and telephone-event).
fn audio_port_proto(msg: &[String]) -> Vec<String> {
    sdp_lines(msg, "m=audio")
        .iter()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect()
}

/// The first message of `msgs` whose start line begins with `start` and whose CSeq is `cseq`.
fn message_with<'a>(msgs: &'a [Vec<String>], start: &str, cseq: &str) -> Option<&'a Vec<String>> {
    msgs.iter()
        .find(|m| m[0].starts_with(start) && sip_header(m, "CSeq") == Some(cseq))
}

/// Session timers (RFC 4028) with Asterisk refreshing: 101 calls 102 with a 90 s session
/// interval on both endpoints (test-only override); baresip takes no part in session timers,
/// so Asterisk refreshes each leg itself at half the interval (§10) with a re-INVITE of its
/// own (baresip allows no UPDATE): toward 102 as the UAC, toward 101 as the UAS. Both reach
/// the phones through the edge with Asterisk's Session-Expires; each edge re-offer keeps the
/// stream as it is — same relay port and address, and the SRTP suite and key already running
/// first (RFC 4568 §7.1.4 lets an unchanged stream keep its key) — the phones answer with
/// their keys unchanged, the 200s reach Asterisk, the call stays up, both legs keep relaying
/// audio both ways with no drop of any reason counted after the call was up (no `not_keyed`,
/// no SRTP authentication failure), the wire shows SRTP only on the phone legs and the plain
/// tone on the Asterisk legs for the whole call, and nothing is left after the BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_refreshes_the_session_through_the_edge_keeping_srtp() {
    let _turn = ONE_ASTERISK.lock().await;
    let pki = edge::dev_pki();
    let run = tempfile::tempdir().expect("tempdir");
    let ast = Asterisk::start_with(run.path(), &[SESSION_TIMERS_90]);
    let media = net::free_range(45000, 45499, 20);
    let e = start_edge(&pki, media).await;
    // Longer than the call (refresh at 45 s, then audio after it).
    let wav = run.path().join("tone.wav");
    tone::write_wav(&wav, 80);
    let mut p = start_phones(&pki, &e, &wav, "auto");
    wait_registered(&ast, &mut p);
    let _ = ast.rx("pjsip set logger on");

    let capture = Capture::start(
        run.path(),
        "tshark-edge-media",
        &format!("udp portrange {}-{}", media.0, media.1),
        Duration::from_secs(100),
    );
    assert!(p.ctrl_a.command("dial", Some("sip:102@sbc.test")).is_some());
    let up_b = p
        .ctrl_b
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(20));
    let up_a = p
        .ctrl_a
        .wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    assert!(
        up_a.is_some() && up_b.is_some(),
        "call established: {:?} / {:?}\n{}",
        p.ctrl_a.events,
        p.ctrl_b.events,
        ast.messages()
    );
    let up_at = Instant::now();
    p.ctrl_a.pump(Duration::from_secs(2));
    let calls_before = assert_edge_agrees_with_asterisk(&e, &ast, 2).await;
    let suite_a =
        srtp_suite(&calls_before, "phone_to_pbx").unwrap_or_else(|| panic!("{calls_before}"));
    let suite_b =
        srtp_suite(&calls_before, "pbx_to_phone").unwrap_or_else(|| panic!("{calls_before}"));
    let failures_before = media_failures(&http::get(e.admin_addr, "/metrics").await.1);

    // The session as set up. 102's leg: Asterisk's INVITE (edge offer) and 102's 200.
    let msgs_b = sip_messages(&p.b.log());
    let invite_b = msgs_b
        .iter()
        .find(|m| m[0].starts_with("INVITE sip:102"))
        .unwrap_or_else(|| panic!("102 got the INVITE\n{}", p.b.log()))
        .clone();
    let cseq_b = sip_header(&invite_b, "CSeq").unwrap_or_default().to_owned();
    let ok_b = message_with(&msgs_b, "SIP/2.0 200", &cseq_b)
        .unwrap_or_else(|| panic!("102's 200\n{}", p.b.log()))
        .clone();
    assert_eq!(
        sip_header(&invite_b, "Session-Expires").map(|v| v
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()),
        Some("90"),
        "Asterisk's INVITE asks 102 for a 90 s session through the edge\n{invite_b:?}"
    );
    // 101's leg: 101's INVITE (the one answered 200) and the edge's 200.
    let msgs_a = sip_messages(&p.a.log());
    let ok_a = msgs_a
        .iter()
        .filter(|m| m[0].starts_with("SIP/2.0 200"))
        .find(|m| sip_header(m, "CSeq").is_some_and(|c| c.ends_with(" INVITE")))
        .unwrap_or_else(|| panic!("the 200 to 101's INVITE\n{}", p.a.log()))
        .clone();
    let cseq_a = sip_header(&ok_a, "CSeq").unwrap_or_default().to_owned();
    let invite_a = message_with(&msgs_a, "INVITE sip:102@", &cseq_a)
        .unwrap_or_else(|| panic!("101's INVITE {cseq_a}\n{}", p.a.log()))
        .clone();

    // The refreshes: due 45 s after the session started; allow 75 s on a busy machine.
    let deadline = up_at + Duration::from_secs(75);
    let (refresh_a, refresh_b) = loop {
        let a = sip_messages(&p.a.log())
            .into_iter()
            .find(|m| m[0].starts_with("INVITE sip:101") || m[0].starts_with("UPDATE sip:101"));
        let b = sip_messages(&p.b.log()).into_iter().find(|m| {
            (m[0].starts_with("INVITE sip:102") || m[0].starts_with("UPDATE sip:102"))
                && sip_header(m, "CSeq") != Some(cseq_b.as_str())
        });
        if let (Some(a), Some(b)) = (a, b) {
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "Asterisk refreshed both legs within 75 s\n{}\n{}\n{}",
            p.a.log(),
            p.b.log(),
            ast.messages()
        );
        p.ctrl_a.pump(Duration::from_millis(250));
        p.ctrl_b.pump(Duration::from_millis(250));
    };
    eprintln!(
        "refreshes after {:?}: {} / {}",
        up_at.elapsed(),
        refresh_a[0],
        refresh_b[0]
    );
    let at_refresh = http::get(e.admin_addr, "/api/calls").await.1;
    // Audio for a while after the refresh.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        p.ctrl_a.pump(Duration::from_millis(250));
        p.ctrl_b.pump(Duration::from_millis(250));
    }
    let (msgs_a, msgs_b) = (sip_messages(&p.a.log()), sip_messages(&p.b.log()));
    let ast_log = ast.messages();
    for (who, refresh, msgs, edge_sdp, phone_sdp) in [
        ("101", &refresh_a, &msgs_a, &ok_a, &invite_a),
        ("102", &refresh_b, &msgs_b, &invite_b, &ok_b),
    ] {
        let method = refresh[0].split_whitespace().next().unwrap_or_default();
        let cseq = sip_header(refresh, "CSeq").unwrap_or_default();
        assert_eq!(method, "INVITE", "baresip allows no UPDATE: {refresh:?}");
        assert!(
            sip_header(refresh, "Session-Expires").is_some_and(|v| v.starts_with("90")),
            "{who}: the refresh carries Asterisk's Session-Expires through the edge: \
             {refresh:?}"
        );
        let answer = message_with(msgs, "SIP/2.0 200", cseq)
            .unwrap_or_else(|| panic!("{who} answered the refresh ({cseq}) with 200"));
        // The edge's re-offer: the same relay address and port, the suite and key in use
        // first (for 102 the whole offer is the same; for 101, whose first offer the edge
        // answered, the running line leads the edge's full offer).
        assert_eq!(
            sdp_lines(refresh, "c=IN"),
            sdp_lines(edge_sdp, "c=IN"),
            "{who}: the edge's re-offer keeps its address"
        );
        assert_eq!(
            audio_port_proto(refresh),
            audio_port_proto(edge_sdp),
            "{who}: the edge's re-offer keeps its port"
        );
        let (offered, running) = (crypto_keys(refresh), crypto_keys(edge_sdp));
        assert!(
            !running.is_empty() && offered.first() == running.first(),
            "{who}: the edge's re-offer leads with its running suite and key: \
             {offered:?} / {running:?}"
        );
        if who == "102" {
            assert_eq!(offered, running, "102: the edge's re-offer is unchanged");
        }
        // The phone answers with the suite and key it already uses: no re-key on either side.
        let answered = crypto_keys(answer);
        assert!(
            answered.len() == 1 && crypto_keys(phone_sdp).contains(&answered[0]),
            "{who}: the phone keeps its suite and key: {answered:?} / {:?}",
            crypto_keys(phone_sdp)
        );
        assert_eq!(audio_port_proto(answer), audio_port_proto(phone_sdp));
        // Asterisk sent the refresh and got the 200 back through the edge (its SIP log).
        let ok_back = ast_log
            .split("<--- Received SIP response")
            .skip(1)
            .any(|m| m.contains("SIP/2.0 200") && m.contains(&format!("CSeq: {cseq}")));
        assert!(
            ok_back,
            "{who}: Asterisk received the 200 for {cseq}\n{ast_log}"
        );
    }

    // The call is still up, on both sides, with the same legs and suites.
    assert!(
        !p.ctrl_a
            .events
            .iter()
            .chain(&p.ctrl_b.events)
            .any(|(k, _)| k == "CALL_CLOSED"),
        "the call survived the refresh: {:?} / {:?}",
        p.ctrl_a.events,
        p.ctrl_b.events
    );
    let calls_after = assert_edge_agrees_with_asterisk(&e, &ast, 2).await;
    assert_eq!(
        srtp_suite(&calls_after, "phone_to_pbx").as_deref(),
        Some(suite_a.as_str())
    );
    assert_eq!(
        srtp_suite(&calls_after, "pbx_to_phone").as_deref(),
        Some(suite_b.as_str())
    );
    for direction in ["phone_to_pbx", "pbx_to_phone"] {
        let (up0, down0) = call_packets(&at_refresh, direction);
        let (up1, down1) = call_packets(&calls_after, direction);
        assert!(
            up1 >= up0 + 200 && down1 >= down0 + 200,
            "the {direction} call keeps relaying both ways after the refresh: \
             {up0}/{down0} → {up1}/{down1}"
        );
    }
    assert_eq!(
        media_failures(&http::get(e.admin_addr, "/metrics").await.1),
        failures_before,
        "no media packet dropped (of any reason) once the call was up"
    );

    // BYE from the caller.
    assert!(p.ctrl_a.command("hangup", None).is_some());
    assert!(
        p.ctrl_b
            .wait_event("CALL_CLOSED", Duration::from_secs(10))
            .is_some(),
        "{:?}",
        p.ctrl_b.events
    );
    assert_nothing_left(&e, &ast).await;
    let packets = capture.finish();
    check_call_capture(
        &packets,
        [(p.rtp_a, &suite_a), (p.rtp_b, &suite_b)],
        ASTERISK_RTP,
    );
    check_every_audio_packet_relayed(&packets, [p.rtp_a, p.rtp_b], ASTERISK_RTP);
    p.a.quit(&mut p.ctrl_a);
    p.b.quit(&mut p.ctrl_b);
    e.stop().await.expect("clean shutdown");
}

/// The 16-bit samples of a PCM WAV file (after its `data` chunk header).
fn wav_samples(bytes: &[u8]) -> Vec<i16> {
    let at = bytes
        .windows(4)
        .position(|w| w == b"data")
        .map(|p| p + 8)
        .unwrap_or(bytes.len());
    bytes[at.min(bytes.len())..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Voicemail left by a caller: 101 dials 604 (`VoiceMail(102@default,s)` in the shipped
/// dialplan), Asterisk answers and records while the edge and Asterisk agree on the one call;
/// 101 talks 4 s and hangs up. Asterisk keeps the message (its description names the
/// authorized caller 101, its recording is ≥ 2 s of the tone 101 sent over SRTP), counts one
/// new message for 102, and its unsolicited NOTIFY `message-summary` (`Messages-Waiting:
/// yes`) reaches 102 through the edge; 101, whose mailbox is empty, gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_voicemail_left_by_a_caller_lights_the_mailbox() {
    let _turn = ONE_ASTERISK.lock().await;
    let pki = edge::dev_pki();
    let run = tempfile::tempdir().expect("tempdir");
    let ast = Asterisk::start(run.path());
    let media = net::free_range(45500, 45999, 20);
    let e = start_edge(&pki, media).await;
    let wav = run.path().join("tone.wav");
    tone::write_wav(&wav, WAV_SECS);
    let mut p = start_phones(&pki, &e, &wav, "auto");
    wait_registered(&ast, &mut p);
    assert!(
        !p.b.log().contains("Messages-Waiting: yes"),
        "no message yet\n{}",
        p.b.log()
    );

    assert!(p.ctrl_a.command("dial", Some("sip:604@sbc.test")).is_some());
    assert!(
        p.ctrl_a
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(15))
            .is_some(),
        "VoiceMail() answered: {:?}\n{}",
        p.ctrl_a.events,
        ast.messages()
    );
    p.ctrl_a.pump(Duration::from_secs(1));
    assert_edge_agrees_with_asterisk(&e, &ast, 1).await;
    let channels = ast.rx("core show channels");
    assert!(
        channels
            .lines()
            .any(|l| l.starts_with("PJSIP/101-") && l.contains("VoiceMail")),
        "101 is in VoiceMail(): {channels}"
    );
    // Talk (the beep is 1 s; the recording starts after it).
    p.ctrl_a.pump(Duration::from_secs(4));
    assert!(p.ctrl_a.command("hangup", None).is_some());
    assert!(p
        .ctrl_a
        .wait_event("CALL_CLOSED", Duration::from_secs(10))
        .is_some());

    let deadline = Instant::now() + Duration::from_secs(20);
    while !p.b.log().contains("Messages-Waiting: yes") && Instant::now() < deadline {
        p.ctrl_b.pump(Duration::from_millis(250));
    }
    let log_b = p.b.log();
    assert!(
        log_b.contains("NOTIFY sip:")
            && log_b.contains("message-summary")
            && log_b.contains("Messages-Waiting: yes"),
        "Asterisk's message-summary NOTIFY reached 102 through the edge\n{log_b}\n{}\n{}",
        ast.messages(),
        ast.rx("voicemail show users"),
    );
    let users = ast.rx("voicemail show users");
    assert!(
        users
            .lines()
            .any(|l| l.contains("102") && l.split_whitespace().last() == Some("1")),
        "Asterisk counts one new message for 102: {users}"
    );
    let inbox = run.path().join("spool/voicemail/default/102/INBOX");
    let txt = std::fs::read_to_string(inbox.join("msg0000.txt")).unwrap_or_else(|e| {
        panic!(
            "the message's description in {}: {e}\n{}",
            inbox.display(),
            ast.messages()
        )
    });
    // `callerid=101` or `callerid="Name" <101>` (ast_callerid_merge).
    let caller = txt
        .lines()
        .find_map(|l| l.strip_prefix("callerid="))
        .map(|c| match c.split_once('<') {
            Some((_, n)) => n.trim_end_matches('>').to_owned(),
            None => c.trim().to_owned(),
        });
    assert_eq!(
        caller.as_deref(),
        Some("101"),
        "the message is from the authorized caller: {txt}"
    );
    let duration: u32 = txt
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .and_then(|d| d.trim().parse().ok())
        .unwrap_or(0);
    assert!(duration >= 2, "a message of ≥ 2 s: {txt}");
    // The recording is what 101 sent: the tone, decrypted by the edge.
    let samples = wav_samples(&std::fs::read(inbox.join("msg0000.wav")).expect("recording"));
    let frames: Vec<Vec<u8>> = samples
        .chunks_exact(160)
        .map(|f| f.iter().map(|&s| tone::linear_to_ulaw(s)).collect())
        .collect();
    let toned = frames.iter().filter(|f| tone::tone_share(f) > 0.5).count();
    assert!(
        toned >= 100,
        "the recording holds ≥ 2 s of 101's tone: {toned} of {} frames",
        frames.len()
    );
    assert!(
        !p.a.log().contains("Messages-Waiting: yes"),
        "101's mailbox is empty\n{}",
        p.a.log()
    );
    assert_nothing_left(&e, &ast).await;
    p.a.quit(&mut p.ctrl_a);
    p.b.quit(&mut p.ctrl_b);
    e.stop().await.expect("clean shutdown");
}

#[test]
fn sip_messages_split_a_baresip_trace_at_start_lines() {
    let trace = "call: connecting\n\
                 INVITE sip:102-0x1@127.0.0.1:5061;transport=tls SIP/2.0\r\n\
                 CSeq: 7 INVITE\r\n\
                 Session-Expires: 90;refresher=uac\r\n\
                 \r\n\
                 m=audio 45008 RTP/SAVP 0 101\r\n\
                 a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:KEY\r\n\
                 call: got re-INVITE (SDP Offer)\n\
                 SIP/2.0 200 OK\r\n\
                 CSeq: 7 INVITE\r\n";
    let msgs = sip_messages(trace);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(
        sip_header(&msgs[0], "session-expires"),
        Some("90;refresher=uac")
    );
    assert_eq!(
        crypto_keys(&msgs[0]),
        ["AES_CM_128_HMAC_SHA1_80 inline:KEY"]
    );
    assert_eq!(audio_port_proto(&msgs[0]), ["m=audio 45008 RTP/SAVP"]);
    assert!(message_with(&msgs, "SIP/2.0 200", "7 INVITE").is_some());
    assert!(message_with(&msgs, "SIP/2.0 200", "8 INVITE").is_none());
}
