//! Command-line interface (clap). Exit codes: 0 ok, 1 refused/failed at run time, 2 invalid
//! config or usage.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "pbx-edge",
    version,
    about = "SIP/TLS + SRTP edge proxy in front of a legacy PBX",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Arguments of `run` when no subcommand is given.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Run(RunArgs),
    /// Validate a configuration and exit: 0 and a summary, or 2 and every problem found.
    CheckConfig(ConfigArgs),
    /// Explain whether a device certificate (PEM or DER, certificate or chain) is accepted:
    /// exit 0 accepted, 1 refused, 2 unreadable or invalid config.
    InspectCert(InspectArgs),
    /// Write a development PKI (CAs, server and device certificates, inventory, config).
    DevPki(DevPkiArgs),
}

#[derive(Debug, Args, Default)]
pub struct ConfigArgs {
    /// Config file (TOML). Without it, the embedded development default is used.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the development default keeps its generated PKI.
    /// Default: $XDG_STATE_HOME/pbx-edge, else ~/.local/state/pbx-edge.
    #[arg(long, value_name = "DIR")]
    pub dev_state_dir: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The device certificate file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct DevPkiArgs {
    /// Output directory (created if missing; existing files are overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The server name the edge's certificate is issued for.
    #[arg(long, default_value = "sbc.test")]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_run() {
        let cli = Cli::try_parse_from(["pbx-edge", "--config", "x.toml"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.config.config, Some(PathBuf::from("x.toml")));
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from(["pbx-edge", "check-config", "-c", "a.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::CheckConfig(ref a)) if a.config.is_some()));
        let cli = Cli::try_parse_from(["pbx-edge", "dev-pki", "--out", "d"]).unwrap();
        assert!(matches!(cli.command, Some(Command::DevPki(ref a)) if a.name == "sbc.test"));
        assert!(Cli::try_parse_from(["pbx-edge", "dev-pki"]).is_err());
    }
}
