//! Call log rotation on a real SIGHUP (issue 14): the binary writes one line per ended call to
//! `[call_log] file`; after logrotate's move (a rename) and SIGHUP, the next call's line goes
//! to a new file at the configured path (mode 0640), and the line written before the signal
//! stays in the renamed file. The edge is stopped by its PID (`Running` kills it on drop).

use super::config_cli::Running;
use super::drain::{establish, hang_up, start, wait_for};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The call ids of the lines in `path`, once it holds `n` complete lines (bounded wait for
/// the writer thread).
fn call_ids(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if (text.lines().count() >= n && text.ends_with('\n')) || Instant::now() > deadline {
            return text
                .lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).expect("a JSON line");
                    v["call_id"].as_str().unwrap_or_default().to_owned()
                })
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until the edge logged a line containing `text`.
fn wait_log(running: &Running, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running.log().iter().any(|l| l.contains(text)) {
        assert!(
            Instant::now() < deadline,
            "no log line with {text:?}:\n{}",
            running.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_after_a_rename_sends_the_next_calls_line_to_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let rotated = dir.path().join("calls.jsonl.1");
    let log_path = log.display().to_string();
    let (pki, rt, pbx, running) = start(&[
        // A port block no other test uses (tests run in parallel).
        ("PBX_EDGE_MEDIA__PORT_MIN", "45100"),
        ("PBX_EDGE_MEDIA__PORT_MAX", "45199"),
        ("PBX_EDGE_CALL_LOG__FILE", log_path.as_str()),
    ]);
    let written = "pbx_edge_call_log_written_total";
    rt.block_on(async {
        let mut first = establish(&pki, &running, &pbx, "rotate-1").await;
        hang_up(&mut first, &pbx).await;
        wait_for(&running, written, |v| v >= 1.0).await;
    });
    assert_eq!(call_ids(&log, 1), ["rotate-1"]);

    // logrotate: move the file, then SIGHUP.
    std::fs::rename(&log, &rotated).unwrap();
    running.signal("HUP");
    wait_log(&running, "call log is reopened");

    rt.block_on(async {
        let mut second = establish(&pki, &running, &pbx, "rotate-2").await;
        hang_up(&mut second, &pbx).await;
        wait_for(&running, written, |v| v >= 2.0).await;
    });
    assert_eq!(
        call_ids(&rotated, 1),
        ["rotate-1"],
        "the renamed file keeps the old line only"
    );
    assert_eq!(
        call_ids(&log, 1),
        ["rotate-2"],
        "the new file has the next call's line"
    );
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o640,
        "the new file names devices and users: {mode:o}"
    );
    drop(running);
}
