//! The open-file budget: a loaded edge holds one descriptor per phone connection and one per
//! leased media port, and a process that runs out (EMFILE) can accept no phone and lease no
//! port. At start-up the soft `RLIMIT_NOFILE` is raised toward what the configuration can use
//! (up to the hard limit, as Go's runtime and nginx's `worker_rlimit_nofile` do), and an
//! operator is warned when even that is not enough.

use super::Config;

/// Descriptors the edge needs besides phone connections and media sockets: listeners, the
/// PBX sockets, the admin port, its clients, log and config files, the runtime's own.
const FIXED_DESCRIPTORS: u64 = 256;

/// Descriptors the configuration can use at full load: phone connections, media ports, and
/// with the provisioning gateway its own connection slots plus one file or upstream socket
/// per request in flight.
pub fn budget(config: &Config) -> u64 {
    let media_ports =
        u64::from(config.media.port_max.saturating_sub(config.media.port_min)).saturating_add(1);
    let connections = config.tls.max_connections as u64;
    let provisioning = if config.provisioning.is_some() {
        connections.saturating_mul(2)
    } else {
        0
    };
    connections
        .saturating_add(provisioning)
        .saturating_add(media_ports)
        .saturating_add(FIXED_DESCRIPTORS)
}

/// What raising the limit achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit in force now.
    pub soft: u64,
    /// What the configuration can use.
    pub needed: u64,
}

impl OpenFiles {
    /// The operator warning when the limit is below the budget.
    pub fn warning(self) -> Option<String> {
        (self.soft < self.needed).then(|| {
            format!(
                "the open-file limit is {} but this configuration can use {} (tls.max_connections \
                 + one socket per media port + {FIXED_DESCRIPTORS}, and twice \
                 tls.max_connections more with [provisioning]); under full load phones \
                 would be refused with EMFILE: raise LimitNOFILE / `ulimit -n`, or lower \
                 tls.max_connections or the media port range",
                self.soft, self.needed
            )
        })
    }
}

/// Raises the soft open-file limit toward [`budget`] (never above the hard limit) and reports
/// where it ended up. `None` where the platform has no such limit or it cannot be read.
pub fn raise_open_file_limit(config: &Config) -> Option<OpenFiles> {
    let needed = budget(config);
    let soft = rlimit::increase_nofile_limit(needed).ok()?;
    Some(OpenFiles { soft, needed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_connections_ports_and_a_margin() {
        let mut c = Config::default();
        c.tls.max_connections = 1000;
        c.media.port_min = 30000;
        c.media.port_max = 30999;
        assert_eq!(budget(&c), 1000 + 1000 + FIXED_DESCRIPTORS);
        // The gateway's own slots, each with a file or an upstream socket.
        c.provisioning = Some(crate::config::ProvisioningConfig {
            listen: "127.0.0.1:8443".parse().unwrap(),
            upstream: None,
            root: Some("/srv/provisioning".into()),
            common: Vec::new(),
            upstream_timeout_secs: 10,
        });
        assert_eq!(budget(&c), 1000 + 2000 + 1000 + FIXED_DESCRIPTORS);
    }

    #[test]
    fn warning_only_when_short() {
        let short = OpenFiles {
            soft: 1024,
            needed: 20_256,
        };
        let w = short.warning().unwrap();
        assert!(w.contains("1024") && w.contains("20256"), "{w}");
        let enough = OpenFiles {
            soft: 65536,
            needed: 20_256,
        };
        assert_eq!(enough.warning(), None);
    }

    #[test]
    fn raising_reports_a_limit_at_most_the_budget_or_the_hard_limit() {
        let c = Config::default();
        let r = raise_open_file_limit(&c).expect("Linux has RLIMIT_NOFILE");
        assert_eq!(r.needed, budget(&c));
        let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert!(r.soft >= r.needed.min(hard), "{r:?} hard {hard}");
    }
}
