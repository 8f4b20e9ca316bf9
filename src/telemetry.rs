//! Logging (tracing) and the process-wide Prometheus registry.

use crate::config::{LogConfig, LogFormat};
use prometheus::{IntGaugeVec, Opts, Registry};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber: human lines (coloured on a terminal) or JSON.
/// `RUST_LOG`, when set, overrides `log.level`. Safe to call twice (the second is a no-op).
pub fn init_logging(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// A registry owned by the process (not the global default one, so tests can run several
/// edges side by side), with build info and, on Linux, process metrics.
pub fn new_registry() -> Registry {
    let registry = Registry::new();
    if let Ok(build) = IntGaugeVec::new(
        Opts::new("pbx_edge_build_info", "Build information; always 1."),
        &["version"],
    ) {
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let _ = registry.register(Box::new(build));
    }
    #[cfg(target_os = "linux")]
    {
        let pc = prometheus::process_collector::ProcessCollector::for_self();
        let _ = registry.register(Box::new(pc));
    }
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_exposes_build_info_and_process_metrics() {
        let r = new_registry();
        let names: Vec<String> = r.gather().iter().map(|m| m.name().to_owned()).collect();
        assert!(
            names.contains(&"pbx_edge_build_info".to_owned()),
            "{names:?}"
        );
        #[cfg(target_os = "linux")]
        assert!(names.iter().any(|n| n.starts_with("process_")), "{names:?}");
    }
}
