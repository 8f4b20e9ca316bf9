//! The `pbx-edge` binary: parses the command line and hands over to the library.

use clap::Parser;
use pbx_edge::cli::{Cli, Command, ConfigArgs};
use pbx_edge::config::{self, Config};
use pbx_edge::devdefault::{self, Resolved};
use pbx_edge::{app, devpki, telemetry};
use std::process::ExitCode;

/// `println!` that does not panic when stdout is a closed pipe (`pbx-edge ... | head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

const EXIT_FAILED: u8 = 1;
const EXIT_INVALID: u8 = 2;

fn env_vars() -> config::EnvVars {
    std::env::vars().collect()
}

fn resolve(args: &ConfigArgs, may_generate: bool) -> Result<Resolved, ExitCode> {
    devdefault::resolve(
        args.config.as_deref(),
        args.dev_state_dir.as_deref(),
        may_generate,
        env_vars(),
    )
    .map_err(|e| {
        eprintln!("pbx-edge: {e}");
        match e {
            devdefault::ResolveError::DevPki(_) => ExitCode::from(EXIT_FAILED),
            _ => ExitCode::from(EXIT_INVALID),
        }
    })
}

fn print_dev_banner(r: &Resolved) {
    if let Some(dir) = &r.dev_pki {
        let what = if r.generated { "GENERATED" } else { "USING" };
        eprintln!(
            "\n\
             ************************************************************************\n\
             *  DEVELOPMENT MODE: no --config given, running the embedded default.   *\n\
             *  {what} a throw-away development PKI in:\n\
             *    {}\n\
             *  Its CA keys sit on disk. NEVER use this for real phones.             *\n\
             *  Phone CA to trust: {}\n\
             *  Device certificates: snom-*.pem / yealink-*.pem in the same folder.  *\n\
             ************************************************************************\n",
            dir.display(),
            dir.join("server-ca.crt").display()
        );
    }
}

fn check_config(args: &ConfigArgs) -> ExitCode {
    let resolved = match resolve(args, false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = resolved.validate();
    for w in &report.warnings {
        outln!("warning: {w}");
    }
    // As this shell would start it (a service manager may set another LimitNOFILE).
    if let Some(w) =
        config::fdlimit::raise_open_file_limit(&resolved.config).and_then(|o| o.warning())
    {
        outln!("warning: {w}");
    }
    if !report.is_ok() {
        eprintln!("{}: {} problem(s):", resolved.source, report.problems.len());
        for p in &report.problems {
            eprintln!("  {}: {p}", resolved.source);
        }
        return ExitCode::from(EXIT_INVALID);
    }
    print_summary(&resolved.source, &resolved.config);
    ExitCode::SUCCESS
}

fn print_summary(source: &config::ConfigSource, c: &Config) {
    outln!("{source}: configuration OK");
    outln!(
        "  phones:  tls://{}  client certificates {}  {} server certificate(s)",
        c.tls.listen,
        c.tls.client_cert.as_str(),
        c.tls.certificates.len()
    );
    let vendors: Vec<&str> = c
        .vendors
        .iter()
        .filter(|(_, v)| v.enabled != Some(false))
        .map(|(n, _)| n.as_str())
        .collect();
    outln!("  vendors: {}", vendors.join(", "));
    outln!(
        "  pbx:     {}://{} from {}",
        c.pbx.transport.as_str(),
        c.pbx.address,
        c.pbx.listen
    );
    outln!(
        "  media:   ports {}-{}  phones see {}  srtp {:?}",
        c.media.port_min,
        c.media.port_max,
        c.media.phone_advertise,
        c.media.srtp
    );
    outln!("  admin:   http://{}", c.admin.listen);
    if let Some(p) = &c.provisioning {
        let from = match (&p.root, &p.upstream) {
            (Some(root), _) => format!("files in {}", root.display()),
            (None, Some(upstream)) => format!("upstream {upstream}"),
            (None, None) => "nothing".to_owned(),
        };
        outln!(
            "  provisioning: https://{}  {from}  {} common pattern(s)",
            p.listen,
            p.common.len()
        );
    }
}

fn run(args: &ConfigArgs) -> ExitCode {
    let resolved = match resolve(args, true) {
        Ok(r) => r,
        Err(code) => return code,
    };
    print_dev_banner(&resolved);
    let report = resolved.validate();
    if !report.is_ok() {
        eprintln!("{}: invalid configuration:", resolved.source);
        for p in &report.problems {
            eprintln!("  {p}");
        }
        return ExitCode::from(EXIT_INVALID);
    }
    telemetry::init_logging(&resolved.config.log);
    for w in &report.warnings {
        tracing::warn!(warning = %w, "configuration warning: a safe default relaxed, or a server certificate phones may refuse");
    }
    // Before any socket exists: raise the open-file limit toward what the config can use.
    match config::fdlimit::raise_open_file_limit(&resolved.config) {
        Some(open_files) => match open_files.warning() {
            Some(w) => tracing::warn!("{w}"),
            None => tracing::info!(
                limit = open_files.soft,
                needed = open_files.needed,
                "open-file limit"
            ),
        },
        None => tracing::warn!("cannot read or raise the open-file limit (RLIMIT_NOFILE)"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pbx-edge: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = app::shutdown_signal();
        let options = resolved.edge_options();
        let edge = app::Edge::bind(resolved.config, options).await?;
        edge.run(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "pbx-edge failed");
            eprintln!("pbx-edge: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn dev_pki(args: &pbx_edge::cli::DevPkiArgs) -> ExitCode {
    match devpki::generate(&args.out, &args.name) {
        Ok(p) => {
            outln!(
                "development PKI written to {} (NOT for production)",
                p.dir.display()
            );
            outln!(
                "  server chain + key:  {} {}",
                p.server_chain.display(),
                p.server_key.display()
            );
            outln!("  server CA (phones):  {}", p.server_ca.display());
            outln!("  device CAs:          {}", p.vendor_cas.display());
            outln!("  Snom-style device:   {}", p.snom_device.display());
            outln!("  Yealink-style device:{}", p.yealink_device.display());
            outln!(
                "  inventory / config:  {} {}",
                p.inventory.display(),
                p.config.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pbx-edge dev-pki: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn inspect_cert(args: &pbx_edge::cli::InspectArgs) -> ExitCode {
    let resolved = match resolve(&args.config, false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let snapshot = match resolved.load_identity() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", resolved.source);
            return ExitCode::from(EXIT_INVALID);
        }
    };
    match pbx_edge::identity::inspect::inspect_file(
        &args.file,
        &snapshot,
        rustls::pki_types::UnixTime::now(),
    ) {
        Ok(report) => {
            outln!("{report}");
            if report.accepted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
        Err(e) => {
            eprintln!("pbx-edge inspect-cert: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        None => run(&cli.run.config),
        Some(Command::Run(a)) => run(&a.config),
        Some(Command::CheckConfig(a)) => check_config(a),
        Some(Command::DevPki(a)) => dev_pki(a),
        Some(Command::InspectCert(a)) => inspect_cert(a),
    }
}
