//! Running an external peer program: bounded in time, stopped by its PID.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a peer printed and how it ended.
pub struct PeerOutput {
    pub stdout: String,
    pub stderr: String,
    pub killed: bool,
}

impl PeerOutput {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Panics with a clear message when `program` is not installed.
pub fn require(program: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "interop peer `{program}` is not installed: run `bash tests/run-all`, which installs it"
    );
}

/// Runs `cmd` with stdin held open (so tools like `openssl s_client` wait for the server),
/// kills it by PID after `limit`, and returns its output.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> PeerOutput {
    let mut child: Child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("peer starts");
    let deadline = Instant::now() + limit;
    let mut killed = false;
    loop {
        if child.try_wait().expect("wait on peer").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            killed = true;
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    PeerOutput {
        stdout,
        stderr,
        killed,
    }
}
