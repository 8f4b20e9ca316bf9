//! Running an external peer program, bounded in time and stopped by its PID: a long-running
//! peer (baresip, sipp, tshark) with its output in files in a directory the test owns, and
//! [`run_bounded`] for a short one whose output is wanted at the end (openssl).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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

/// Runs `cmd` with stdin held open (so tools like `openssl s_client` wait for the server),
/// stops it by PID after `limit`, and returns its output.
pub fn run_bounded(cmd: Command, limit: Duration) -> PeerOutput {
    let dir = tempfile::tempdir().expect("peer tempdir");
    let mut peer = PeerProcess::start("peer", cmd, dir.path(), Stdio::piped());
    let killed = peer.wait_within(limit).is_none();
    if killed {
        peer.stop(Duration::ZERO);
    }
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    PeerOutput {
        stdout: read(&peer.stdout),
        stderr: read(&peer.stderr),
        killed,
    }
}

/// Runs `cmd` with stdin held open until its output satisfies `ready` (bounded by `limit`),
/// off the async runtime's threads; returns the still running peer (the caller checks the
/// other side's state, then stops it by PID) and whether `ready` held. For peers that stay up
/// once they succeeded (`openssl s_client -ign_eof` on an accepted connection).
pub async fn run_until_output(
    cmd: Command,
    limit: Duration,
    ready: impl Fn(&str) -> bool + Send + 'static,
) -> (PeerProcess, tempfile::TempDir, bool) {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("peer tempdir");
        let mut peer = PeerProcess::start("peer", cmd, dir.path(), Stdio::piped());
        let ready = peer.wait_output(limit, ready);
        (peer, dir, ready)
    })
    .await
    .expect("peer task")
}

pub struct PeerProcess {
    name: &'static str,
    child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl PeerProcess {
    /// Starts `cmd` with stdin closed and stdout/stderr written to `<dir>/<name>.out|.err`.
    pub fn spawn(name: &'static str, cmd: Command, dir: &Path) -> Self {
        Self::start(name, cmd, dir, Stdio::null())
    }

    /// Like [`PeerProcess::spawn`], with `stdin` for the process's standard input (a pipe is
    /// held open as long as this value lives).
    fn start(name: &'static str, mut cmd: Command, dir: &Path, stdin: Stdio) -> Self {
        require(cmd.get_program().to_str().expect("program names are ASCII"));
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = cmd
            .stdin(stdin)
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        Self {
            name,
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    /// The exit status if the process ended within `limit`.
    pub fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if self.status.is_none() {
                self.status = self.child.try_wait().expect("wait on peer");
            }
            if self.status.is_some() || Instant::now() >= deadline {
                return self.status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends `signal` (a `kill` name: `TERM`, `USR1` ...) to this PID if it still runs.
    pub fn signal(&mut self, signal: &str) {
        if self.wait_within(Duration::ZERO).is_none() {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &self.child.id().to_string()])
                .status();
        }
    }

    /// SIGTERM to this PID, up to `grace` to exit, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.wait_within(Duration::ZERO).is_none() {
            self.signal("TERM");
            if self.wait_within(grace).is_none() {
                let _ = self.child.kill();
                self.status = self.child.wait().ok();
            }
        }
        self.status
    }

    /// Everything the process printed so far (stdout, then stderr).
    pub fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- {} stdout\n{}\n--- {} stderr\n{}",
            self.name,
            read(&self.stdout),
            self.name,
            read(&self.stderr)
        )
    }

    /// Polls (bounded) until `pred` holds on the process's output; false on timeout or exit.
    pub fn wait_output(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if pred(&self.output()) {
                return true;
            }
            if self.wait_within(Duration::ZERO).is_some() {
                return pred(&self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}
