//! The call log (`[call_log] file`): one JSON line per ended call, appended to a file (or
//! written to stdout with `"-"`), for billing, troubleshooting and quality reports.
//!
//! The SIP core never waits for it: [`CallLog::record`] hands the line to a bounded queue
//! with `try_send` ([`QUEUE`] lines); a full queue drops the line and counts it
//! (`pbx_edge_call_log_dropped_total{reason="queue_full"}`). One writer thread appends the
//! lines (blocking file I/O stays off the async runtime). A write or open failure drops the
//! line, counts it (`write_error`) and is logged; the next line tries to open the file again.
//!
//! Rotation: the operator's tool (logrotate) renames the file and sends SIGHUP; the edge
//! already reloads its identity files on SIGHUP, and the call log listens for the same signal
//! ([`CallLog::watch_sighup`]): the writer reopens the path before its next line, so new lines
//! go to a new file. The file is created with mode 0640: it names devices (MACs) and users.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use crate::config::CallLogConfig;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

/// Lines waiting for the writer; more are dropped and counted.
pub const QUEUE: usize = 1024;

/// Why the call log could not start.
#[derive(Debug, thiserror::Error)]
pub enum CallLogError {
    /// The file cannot be opened for appending (directory missing, permissions).
    #[error("cannot open the call log {path} for appending: {source}")]
    Open {
        /// `call_log.file`.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the call log writer: {0}")]
    Thread(#[source] std::io::Error),
}

/// `pbx_edge_call_log_*`.
#[derive(Clone)]
pub struct CallLogMetrics {
    written: IntCounter,
    dropped: IntCounterVec,
}

impl CallLogMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let written = IntCounter::with_opts(Opts::new(
            "pbx_edge_call_log_written_total",
            "Call log lines written ([call_log]).",
        ))?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "pbx_edge_call_log_dropped_total",
                "Call log lines not written, by reason (queue_full, write_error).",
            ),
            &["reason"],
        )?;
        for reason in ["queue_full", "write_error"] {
            dropped.with_label_values(&[reason]);
        }
        registry.register(Box::new(written.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        Ok(Self { written, dropped })
    }
}

/// Where lines go.
enum Sink {
    Stdout,
    File { path: PathBuf, file: Option<File> },
}

fn open(path: &PathBuf) -> Result<File, CallLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| CallLogError::Open {
            path: path.clone(),
            source,
        })
}

/// The handle the SIP core writes through; cheap to clone. Off when `[call_log] file` is unset.
#[derive(Clone, Default)]
pub struct CallLog {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::SyncSender<String>,
    reopen: Arc<AtomicBool>,
    metrics: CallLogMetrics,
}

impl CallLog {
    /// Opens the file (so a wrong path fails at start-up, not at the first call's end) and
    /// starts the writer; off (every [`CallLog::record`] a no-op) without `file`.
    pub fn start(config: &CallLogConfig, metrics: CallLogMetrics) -> Result<Self, CallLogError> {
        let Some(target) = config.file.as_deref() else {
            return Ok(Self::default());
        };
        let sink = if target == "-" {
            Sink::Stdout
        } else {
            let path = PathBuf::from(target);
            let file = open(&path)?;
            Sink::File {
                path,
                file: Some(file),
            }
        };
        let (tx, rx) = mpsc::sync_channel::<String>(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            sink,
            reopen: reopen.clone(),
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("call-log".into())
            .spawn(move || writer.run(rx))
            .map_err(CallLogError::Thread)?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                tx,
                reopen,
                metrics,
            })),
        })
    }

    /// Whether lines are written at all.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues one JSON line (without its newline); never waits.
    pub fn record(&self, line: String) {
        let Some(inner) = &self.inner else {
            return;
        };
        if let Err(mpsc::TrySendError::Full(_)) = inner.tx.try_send(line) {
            inner
                .metrics
                .dropped
                .with_label_values(&["queue_full"])
                .inc();
        }
    }

    /// The file is reopened (by path) before the next line: after logrotate moved it.
    pub fn reopen(&self) {
        if let Some(inner) = &self.inner {
            inner.reopen.store(true, Ordering::Relaxed);
        }
    }

    /// Reopens on every SIGHUP until `cancel` (the identity reload listens for the same
    /// signal; each listener is woken).
    pub async fn watch_sighup(self, cancel: tokio_util::sync::CancellationToken) {
        use tokio::signal::unix::{signal, SignalKind};
        if !self.is_on() {
            return;
        }
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the call log will not be reopened");
            return;
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: the call log is reopened before its next line");
                    self.reopen();
                }
            }
        }
    }
}

struct Writer {
    sink: Sink,
    reopen: Arc<AtomicBool>,
    metrics: CallLogMetrics,
}

impl Writer {
    /// Until every [`CallLog`] handle is gone.
    fn run(mut self, rx: mpsc::Receiver<String>) {
        while let Ok(mut line) = rx.recv() {
            line.push('\n');
            match self.write(line.as_bytes()) {
                Ok(()) => self.metrics.written.inc(),
                Err(e) => {
                    self.metrics
                        .dropped
                        .with_label_values(&["write_error"])
                        .inc();
                    tracing::error!(error = %e, "call log line not written");
                }
            }
        }
    }

    fn write(&mut self, line: &[u8]) -> Result<(), std::io::Error> {
        match &mut self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line)?;
                out.flush()
            }
            Sink::File { path, file } => {
                if self.reopen.swap(false, Ordering::Relaxed) {
                    *file = None;
                }
                let f = match file {
                    Some(f) => f,
                    None => file.insert(open(path).map_err(|e| match e {
                        CallLogError::Open { source, .. } => source,
                        CallLogError::Thread(source) => source,
                    })?),
                };
                // One write per line (O_APPEND): a line is never interleaved or split.
                let result = f.write_all(line);
                if result.is_err() {
                    // Try a fresh open for the next line (the file may have been removed).
                    *file = None;
                }
                result
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wait_for(path: &std::path::Path, lines: usize) -> String {
        // Bounded: 200 × 10 ms.
        for _ in 0..200 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= lines {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn lines_are_appended_and_a_rotated_file_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.jsonl");
        let registry = Registry::new();
        let log = CallLog::start(
            &CallLogConfig {
                file: Some(path.display().to_string()),
            },
            CallLogMetrics::register(&registry).unwrap(),
        )
        .unwrap();
        log.record(r#"{"n":1}"#.into());
        assert_eq!(wait_for(&path, 1), "{\"n\":1}\n");

        // logrotate: rename, then SIGHUP (here the reopen it triggers).
        let rotated = dir.path().join("calls.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.record(r#"{"n":2}"#.into());
        assert_eq!(wait_for(&path, 1), "{\"n\":2}\n");
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "{\"n\":1}\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777 & !0o640, 0, "{mode:o}");
    }

    #[test]
    fn an_unwritable_path_fails_at_start_and_off_is_a_no_op() {
        let registry = Registry::new();
        let metrics = CallLogMetrics::register(&registry).unwrap();
        let err = CallLog::start(
            &CallLogConfig {
                file: Some("/nonexistent-dir/calls.jsonl".into()),
            },
            metrics.clone(),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("/nonexistent-dir/calls.jsonl"),
            "{err}"
        );
        let off = CallLog::start(&CallLogConfig { file: None }, metrics).unwrap();
        assert!(!off.is_on());
        off.record("x".into());
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let registry = Registry::new();
        let metrics = CallLogMetrics::register(&registry).unwrap();
        // A queue of one whose writer is stalled (nobody receives).
        let (tx, _stalled) = mpsc::sync_channel::<String>(1);
        let log = CallLog {
            inner: Some(Arc::new(Inner {
                tx,
                reopen: Arc::new(AtomicBool::new(false)),
                metrics: metrics.clone(),
            })),
        };
        log.record("a".into());
        log.record("b".into());
        log.record("c".into());
        let full = metrics.dropped.with_label_values(&["queue_full"]).get();
        assert_eq!(full, 2);
    }
}
