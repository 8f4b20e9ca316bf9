//! tshark on `lo`, always with a capture filter naming the test's own ports; bounded by
//! `-a duration:N` and stopped by PID. Read back as (src port, dst port, UDP payload) rows.

use super::process::PeerProcess;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct Capture {
    pub file: PathBuf,
    process: PeerProcess,
}

/// One captured UDP datagram.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

impl Capture {
    /// Starts `tshark -i lo -f <filter> -w <dir>/<name>.pcapng -a duration:<limit>` and waits
    /// (bounded) until it reports capturing.
    pub fn start(dir: &Path, name: &'static str, filter: &str, limit: Duration) -> Self {
        let file = dir.join(format!("{name}.pcapng"));
        let mut cmd = Command::new("tshark");
        cmd.args(["-i", "lo", "-f", filter, "-q", "-w"])
            .arg(&file)
            .args(["-a", &format!("duration:{}", limit.as_secs().max(1))]);
        let mut process = PeerProcess::spawn(name, cmd, dir);
        assert!(
            process.wait_output(Duration::from_secs(15), |o| o.contains("Capturing on")),
            "tshark did not start capturing on lo (capturing needs root or dumpcap with \
             cap_net_raw,cap_net_admin)\n{}",
            process.output()
        );
        Self { file, process }
    }

    /// Stops the capture (SIGTERM by PID: tshark flushes the file) and reads it back.
    pub fn finish(mut self) -> Vec<Datagram> {
        self.process.stop(Duration::from_secs(5));
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&self.file)
            .args(["-T", "fields", "-e", "udp.srcport", "-e", "udp.dstport"])
            .args(["-e", "data", "-d", "udp.port==1-65535,data"])
            .output()
            .expect("tshark -r runs");
        assert!(
            out.status.success(),
            "tshark -r failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.process.output()
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let src_port = f.next()?.parse().ok()?;
                let dst_port = f.next()?.parse().ok()?;
                let payload = hex::decode(f.next()?.replace(':', "")).ok()?;
                Some(Datagram {
                    src_port,
                    dst_port,
                    payload,
                })
            })
            .collect()
    }
}
