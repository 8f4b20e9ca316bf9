//! Layering: built-in defaults ← TOML file ← `PBX_EDGE_*` environment, parsed once into
//! [`Config`]. The environment is an input (not read here) so tests inject their own.

use super::{Config, ENV_PREFIX};
use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use figment::Figment;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Environment variables as (name, value) pairs; production passes `std::env::vars()`.
pub type EnvVars = Vec<(String, String)>;

/// Where the TOML layer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file named on the command line.
    File(PathBuf),
    /// A TOML text built into the binary or handed in by the caller (e.g. the development
    /// default); `base_dir` resolves its relative paths.
    Text { name: String, base_dir: PathBuf },
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Text { name, .. } => f.write_str(name),
        }
    }
}

/// Why a configuration could not be parsed into [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The config file named on the command line cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML or an environment override does not fit the schema: unknown key, wrong type,
    /// bad value. figment's message names the key and where the value came from.
    #[error("invalid configuration ({source_name}): {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

impl LoadError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unreadable { .. } => "unreadable",
            Self::Invalid { .. } => "invalid",
        }
    }
}

/// Loads `file` over the built-in defaults, then the `PBX_EDGE_*` variables in `env`.
pub fn load(file: &Path, env: EnvVars) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(file).map_err(|source| LoadError::Unreadable {
        path: file.to_path_buf(),
        source,
    })?;
    let base_dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    load_layers(&text, &file.display().to_string(), &base_dir, env)
}

/// Like [`load`] for a TOML text that is not a file (the embedded development default).
pub fn load_str(source: &ConfigSource, text: &str, env: EnvVars) -> Result<Config, LoadError> {
    match source {
        ConfigSource::File(p) => load(p, env),
        ConfigSource::Text { name, base_dir } => load_layers(text, name, base_dir, env),
    }
}

fn load_layers(
    toml_text: &str,
    source_name: &str,
    base_dir: &Path,
    env: EnvVars,
) -> Result<Config, LoadError> {
    let invalid = |e: figment::Error| LoadError::Invalid {
        source_name: source_name.to_owned(),
        message: e
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; "),
    };
    // Relative paths in the file are relative to the file's directory: resolve them on the
    // file layer alone, before the environment (whose paths are taken as given).
    let file_only: Config = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(toml_text))
        .extract()
        .map_err(invalid)?;
    let mut resolved = file_only;
    for (_, p) in resolved.paths_mut() {
        if p.is_relative() && !p.as_os_str().is_empty() {
            *p = base_dir.join(&*p);
        }
    }
    // The provisioning root is a directory served, not an identity file: it is resolved the
    // same way but kept out of `paths_mut` (whose files trigger identity reloads).
    if let Some(root) = resolved.provisioning.as_mut().and_then(|p| p.root.as_mut()) {
        if root.is_relative() && !root.as_os_str().is_empty() {
            *root = base_dir.join(&*root);
        }
    }

    // The call log is written, not watched: resolved the same way, outside `paths_mut` too.
    if let Some(file) = resolved.call_log.file.as_mut() {
        let path = std::path::Path::new(file.as_str());
        if file != "-" && !file.is_empty() && path.is_relative() {
            *file = base_dir.join(path).display().to_string();
        }
    }
    let mut figment = Figment::from(Serialized::defaults(resolved));
    let mut env = env;
    env.sort();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        // PBX_EDGE_TLS__CLIENT_CERT -> tls.client_cert (figment's Env convention).
        let key = rest.to_ascii_lowercase().replace("__", ".");
        let parsed = Value::from_str(&value).unwrap_or_else(|_| Value::from(value.clone()));
        figment = figment.merge(Serialized::default(&key, parsed));
    }
    figment.extract().map_err(|e| LoadError::Invalid {
        source_name: format!("{source_name} + {ENV_PREFIX}* environment"),
        message: e
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientCertMode, PbxTransport};

    fn text_source() -> ConfigSource {
        ConfigSource::Text {
            name: "test".into(),
            base_dir: PathBuf::from("/etc/pbx-edge"),
        }
    }

    #[test]
    fn empty_text_gives_defaults() {
        let c = load_str(&text_source(), "", vec![]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.tls.listen.port(), 5061);
        assert_eq!(c.pbx.address.port(), 5060);
        assert_eq!(c.admin.listen.port(), 9090);
    }

    #[test]
    fn file_overrides_default_and_env_overrides_file() {
        let toml = "[pbx]\naddress = \"127.0.0.2:5070\"\ntransport = \"tcp\"\n[media]\nport_min = 40000\nport_max = 40099\n";
        let c = load_str(&text_source(), toml, vec![]).unwrap();
        assert_eq!(c.pbx.address.to_string(), "127.0.0.2:5070");
        assert_eq!(c.pbx.transport, PbxTransport::Tcp);
        assert_eq!(c.media.port_min, 40000);

        let env = vec![
            ("PBX_EDGE_PBX__ADDRESS".into(), "127.0.0.3:5090".into()),
            ("PBX_EDGE_MEDIA__PORT_MIN".into(), "41000".into()),
            ("PBX_EDGE_TLS__CLIENT_CERT".into(), "optional".into()),
            ("UNRELATED".into(), "x".into()),
        ];
        let c = load_str(&text_source(), toml, env).unwrap();
        assert_eq!(c.pbx.address.to_string(), "127.0.0.3:5090");
        assert_eq!(c.pbx.transport, PbxTransport::Tcp, "file value kept");
        assert_eq!(c.media.port_min, 41000);
        assert_eq!(c.media.port_max, 40099, "file value kept");
        assert_eq!(c.tls.client_cert, ClientCertMode::Optional);
    }

    #[test]
    fn media_io_is_auto_by_default_and_takes_its_three_spellings_only() {
        use crate::config::MediaIo;
        assert_eq!(Config::default().media.io, MediaIo::Auto);
        for (text, io) in [
            ("auto", MediaIo::Auto),
            ("batched", MediaIo::Batched),
            ("per_packet", MediaIo::PerPacket),
        ] {
            let c = load_str(
                &text_source(),
                &format!("[media]\nio = \"{text}\"\n"),
                vec![],
            );
            assert_eq!(c.unwrap().media.io, io, "{text}");
            assert_eq!(io.label(), text);
        }
        let env = vec![("PBX_EDGE_MEDIA__IO".into(), "per_packet".into())];
        assert_eq!(
            load_str(&text_source(), "", env).unwrap().media.io,
            MediaIo::PerPacket
        );
        let err = load_str(&text_source(), "[media]\nio = \"uring\"\n", vec![]).unwrap_err();
        assert!(err.to_string().contains("uring"), "{err}");
    }

    #[test]
    fn unknown_key_in_file_is_an_error_naming_it() {
        let err = load_str(
            &text_source(),
            "[pbx]\nadress = \"127.0.0.1:5060\"\n",
            vec![],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("adress"), "{msg}");
    }

    #[test]
    fn unknown_section_is_an_error() {
        let err = load_str(&text_source(), "[pbxx]\naddress = \"x\"\n", vec![]).unwrap_err();
        assert!(err.to_string().contains("pbxx"), "{err}");
    }

    #[test]
    fn unknown_env_key_is_an_error() {
        let env = vec![("PBX_EDGE_PBX__ADRESS".into(), "127.0.0.1:1".into())];
        let err = load_str(&text_source(), "", env).unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
    }

    #[test]
    fn bad_value_is_an_error_naming_the_key() {
        let err = load_str(
            &text_source(),
            "[tls]\nclient_cert = \"sometimes\"\n",
            vec![],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("client_cert"), "{msg}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file_directory() {
        let toml = "[[tls.certificates]]\ncert = \"certs/a.crt\"\nkey = \"/abs/a.key\"\n[inventory]\nfile = \"inv.toml\"\n";
        let c = load_str(&text_source(), toml, vec![]).unwrap();
        assert_eq!(
            c.tls.certificates[0].cert,
            PathBuf::from("/etc/pbx-edge/certs/a.crt")
        );
        assert_eq!(c.tls.certificates[0].key, PathBuf::from("/abs/a.key"));
        assert_eq!(
            c.inventory.file.as_deref(),
            Some(Path::new("/etc/pbx-edge/inv.toml"))
        );
    }

    #[test]
    fn provisioning_is_off_unless_configured_and_env_overrides_it() {
        let c = load_str(&text_source(), "", vec![]).unwrap();
        assert_eq!(c.provisioning, None);
        let toml = "[provisioning]\nlisten = \"0.0.0.0:8443\"\nroot = \"prov\"\ncommon = [\"/y000000000044.cfg\"]\n";
        let c = load_str(&text_source(), toml, vec![]).unwrap();
        let p = c.provisioning.clone().unwrap();
        assert_eq!(p.root.as_deref(), Some(Path::new("/etc/pbx-edge/prov")));
        assert_eq!(p.upstream, None);
        assert_eq!(p.upstream_timeout_secs, 10);
        assert_eq!(p.common, ["/y000000000044.cfg"]);
        let env = vec![
            (
                "PBX_EDGE_PROVISIONING__LISTEN".into(),
                "127.0.0.1:9443".into(),
            ),
            (
                "PBX_EDGE_PROVISIONING__UPSTREAM_TIMEOUT_SECS".into(),
                "3".into(),
            ),
        ];
        let p = load_str(&text_source(), toml, env)
            .unwrap()
            .provisioning
            .unwrap();
        assert_eq!(p.listen.to_string(), "127.0.0.1:9443");
        assert_eq!(p.upstream_timeout_secs, 3);
        assert_eq!(p.root.as_deref(), Some(Path::new("/etc/pbx-edge/prov")));
        // The environment alone can switch it on.
        let env = vec![
            (
                "PBX_EDGE_PROVISIONING__LISTEN".into(),
                "127.0.0.1:9443".into(),
            ),
            (
                "PBX_EDGE_PROVISIONING__UPSTREAM".into(),
                "http://127.0.0.1:8080".into(),
            ),
            (
                "PBX_EDGE_PROVISIONING__COMMON".into(),
                "[\"/y000000000044.cfg\", \"/firmware/*\"]".into(),
            ),
        ];
        let p = load_str(&text_source(), "", env)
            .unwrap()
            .provisioning
            .unwrap();
        assert_eq!(p.upstream.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(p.common, ["/y000000000044.cfg", "/firmware/*"]);
        let err = load_str(&text_source(), "[provisioning]\nroot = \"/x\"\n", vec![]).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn unreadable_file_is_reported_with_its_path() {
        let err = load(Path::new("/nonexistent/pbx-edge.toml"), vec![]).unwrap_err();
        assert_eq!(err.label(), "unreadable");
        assert!(err.to_string().contains("/nonexistent/pbx-edge.toml"));
    }
}
