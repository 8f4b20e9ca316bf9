//! A long-running peer process (baresip, sipp, tshark): output to files in a directory the
//! test owns, every wait bounded, stopped by its PID (TERM, then KILL) when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct PeerProcess {
    name: &'static str,
    child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl PeerProcess {
    /// Starts `cmd` with stdin closed and stdout/stderr written to `<dir>/<name>.out|.err`.
    pub fn spawn(name: &'static str, mut cmd: Command, dir: &Path) -> Self {
        super::peer::require(cmd.get_program().to_str().expect("program names are ASCII"));
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = cmd
            .stdin(Stdio::null())
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
