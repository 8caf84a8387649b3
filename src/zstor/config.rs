//! The zstor v0.5 config file (the credential `zstor.toml`), read for its backends and paths.
//!
//! The format follows upstream exactly: unknown keys are refused, backend addresses are IP
//! literals with a port, the metadata store is exactly four `zdb` backends in user-key mode,
//! and the data backends (in `[[groups]]`) must number at least `expected_shards`.
//!
//! The types also serialize (for `qsfs-image`, which renders this file from the operator's
//! site settings); secrets are written out explicitly, through [`Secret::expose`].

use crate::config::{ConfigError, Secret, Source, Validate};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The metadata store has exactly this many backends in zstor v0.5.
pub const META_BACKENDS: usize = 4;

/// A zstor v0.5 config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZstorConfig {
    /// Shards needed to decode an object.
    pub minimal_shards: usize,
    /// Shards written per object.
    pub expected_shards: usize,
    /// Groups that may be lost completely.
    pub redundant_groups: usize,
    /// Nodes that may be lost in every group.
    pub redundant_nodes: usize,
    /// Virtual root stripped from every path before it is hashed into a key.
    pub root: Option<PathBuf>,
    /// The daemon's unix socket; when set, CLI commands go through the daemon.
    pub socket: Option<PathBuf>,
    /// The daemon's pid file (upstream default `/var/run/zstor.pid`).
    pub pid_file: Option<PathBuf>,
    /// Directory whose size zstor's own dir monitor keeps under the limit.
    pub zdb_data_dir_path: Option<PathBuf>,
    /// That limit, in MiB.
    pub max_zdb_data_dir_size: Option<u64>,
    /// The zdbfs mountpoint whose statistics zstor polls.
    pub zdbfs_mountpoint: Option<PathBuf>,
    /// Port of zstor's Prometheus endpoint, which zstor serves unauthenticated on every
    /// interface (`[::]:<port>`, contracts §3.2): see [`ZstorConfig::metrics_warning`].
    pub prometheus_port: Option<u16>,
    /// Encryption of the data.
    pub encryption: Encryption,
    /// Compression of the data.
    pub compression: Compression,
    /// The metadata store.
    pub meta: Meta,
    /// The data backends, in groups.
    pub groups: Vec<Group>,
}

/// `[encryption]`: AES-256-GCM with a 32-byte key in hex.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// Always `AES`.
    pub algorithm: EncryptionAlgorithm,
    /// 64 hex digits.
    #[serde(deserialize_with = "hex_key", serialize_with = "expose")]
    pub key: Secret,
}

/// The only encryption zstor knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum EncryptionAlgorithm {
    /// AES-256-GCM.
    #[serde(rename = "AES")]
    Aes,
}

/// `[compression]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// Always `snappy`.
    pub algorithm: CompressionAlgorithm,
}

/// The only compression zstor knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionAlgorithm {
    /// Snappy.
    Snappy,
}

/// `[meta]`: where object metadata lives.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Always `zdb` since zstor v0.3.
    #[serde(rename = "type")]
    pub kind: MetaType,
    /// The metadata store's settings.
    pub config: MetaConfig,
}

/// The only metadata store of zstor v0.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetaType {
    /// User-key zdb namespaces.
    Zdb,
}

/// `[meta.config]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetaConfig {
    /// Key prefix of the metadata.
    pub prefix: String,
    /// Required by upstream, but zstor 0.5.0-rc.1 encrypts the metadata with the top-level
    /// `[encryption]` key, not this one (see `super::metadata`).
    pub encryption: Encryption,
    /// Exactly four user-key backends.
    pub backends: Vec<Backend>,
}

/// `[[groups]]`: data backends that are physically close.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The group's backends.
    pub backends: Vec<Backend>,
}

/// One remote 0-db namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// `[ip]:port`; zstor accepts no host names.
    #[serde(deserialize_with = "socket_address")]
    pub address: SocketAddr,
    /// The namespace.
    pub namespace: Option<String>,
    /// The namespace password.
    #[serde(serialize_with = "expose_option")]
    pub password: Option<Secret>,
}

impl Backend {
    /// `address/namespace`, for logs and health output (never the password).
    pub fn label(&self) -> String {
        backend_label(&self.address, self.namespace.as_deref())
    }
}

/// `address/namespace` (`default` without one): how a backend is named in logs and health output.
pub(crate) fn backend_label(address: &SocketAddr, namespace: Option<&str>) -> String {
    format!("{address}/{}", namespace.unwrap_or("default"))
}

fn expose<S: Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose())
}

fn expose_option<S: Serializer>(secret: &Option<Secret>, serializer: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => serializer.serialize_some(secret.expose()),
        None => serializer.serialize_none(),
    }
}

/// Deserializes an `ip:port` backend address (zstor takes no host names).
pub(crate) fn socket_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an IP address with a port (such as 10.0.0.1:9900 or [2a02::1]:9900); zstor takes no host names"
        ))
    })
}

/// Deserializes a 32-byte key written as 64 hex digits.
pub(crate) fn hex_key<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
    let key = String::deserialize(deserializer)?;
    if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(Secret::new(key))
    } else {
        Err(serde::de::Error::custom(
            "must be 64 hex digits (a 32-byte key), e.g. from `openssl rand -hex 32`",
        ))
    }
}

impl ZstorConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        crate::config::load(path)
    }

    /// This config for commands that run in-process, without the daemon: the same file
    /// without `socket`. `None` when it names no socket (every command runs in-process).
    fn in_process(&self) -> Option<ZstorConfig> {
        self.socket.as_ref()?;
        Some(ZstorConfig {
            socket: None,
            ..self.clone()
        })
    }

    /// [`ZstorConfig::in_process`] in a private (0600) temporary file for `zstor -c`, removed
    /// when dropped; `None` when this config names no socket (use its own file).
    pub fn in_process_file(&self) -> Option<std::io::Result<tempfile::NamedTempFile>> {
        let in_process = self.in_process()?;
        Some(
            toml::to_string(&in_process)
                .map_err(std::io::Error::other)
                .and_then(|text| {
                    let mut file = tempfile::Builder::new()
                        .prefix("zstor-in-process.")
                        .suffix(".toml")
                        .tempfile()?;
                    std::io::Write::write_all(&mut file, text.as_bytes())?;
                    Ok(file)
                }),
        )
    }
}

impl Validate for ZstorConfig {
    fn validate(&self, source: &Source) -> Result<(), ConfigError> {
        if self.minimal_shards == 0 {
            return Err(source.invalid("minimal_shards", "must be at least 1"));
        }
        if self.expected_shards < self.minimal_shards {
            return Err(source.invalid(
                "expected_shards",
                format!("must be at least minimal_shards ({})", self.minimal_shards),
            ));
        }
        let data_backends = self.data_backends().count();
        if data_backends < self.expected_shards {
            return Err(source.invalid(
                "groups",
                format!(
                    "{data_backends} data backends, but expected_shards needs at least {}",
                    self.expected_shards
                ),
            ));
        }
        if self.meta.config.backends.len() != META_BACKENDS {
            return Err(source.invalid(
                "meta.config.backends",
                format!(
                    "zstor v0.5 needs exactly {META_BACKENDS} meta backends, found {}",
                    self.meta.config.backends.len()
                ),
            ));
        }
        if let Some(root) = self.root.as_ref().filter(|root| !root.is_absolute()) {
            return Err(source.invalid(
                "root",
                format!("`{}` is not an absolute path", root.display()),
            ));
        }
        Ok(())
    }
}

impl ZstorConfig {
    /// Every data backend, in config order.
    pub fn data_backends(&self) -> impl Iterator<Item = &Backend> {
        self.groups.iter().flat_map(|group| &group.backends)
    }

    /// The four metadata backends.
    pub fn meta_backends(&self) -> &[Backend] {
        &self.meta.config.backends
    }

    /// The warning to log once at start when `prometheus_port` is set: zstor cannot be told an
    /// address and listens on `[::]`, reachable from the network.
    pub fn metrics_warning(&self) -> Option<String> {
        let port = self.prometheus_port?;
        let everywhere = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        crate::metrics::exposure_warning(&crate::metrics::Address::Tcp(everywhere))
            .map(|warning| format!("zstor's prometheus_port: {warning}"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Problem;

    /// A valid config with two data backends and the four meta backends.
    pub(crate) fn sample(data_backends: &[&str]) -> String {
        let mut text = String::from(
            "minimal_shards = 1\nexpected_shards = 2\nredundant_groups = 0\nredundant_nodes = 0\n\
             socket = \"/run/qsfs/zstor.sock\"\n\n\
             [encryption]\nalgorithm = \"AES\"\nkey = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n\n\
             [compression]\nalgorithm = \"snappy\"\n\n\
             [meta]\ntype = \"zdb\"\n\n[meta.config]\nprefix = \"qsfs\"\n\n\
             [meta.config.encryption]\nalgorithm = \"AES\"\nkey = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n",
        );
        for port in 9901..9905 {
            text.push_str(&format!(
                "\n[[meta.config.backends]]\naddress = \"[::1]:{port}\"\nnamespace = \"meta{port}\"\npassword = \"metapass\"\n"
            ));
        }
        text.push_str("\n[[groups]]\n");
        for address in data_backends {
            text.push_str(&format!("\n[[groups.backends]]\naddress = \"{address}\"\nnamespace = \"data\"\npassword = \"datapass\"\n"));
        }
        text
    }

    fn load(text: &str) -> Result<ZstorConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zstor-default.toml");
        std::fs::write(&path, text).unwrap();
        ZstorConfig::load(&path)
    }

    /// zstor serves `prometheus_port` on every interface: the monitor warns once at start.
    #[test]
    fn a_prometheus_port_warns_that_zstor_listens_on_every_interface() {
        let mut config = load(&sample(&["10.0.0.1:9900", "10.0.0.2:9900"])).unwrap();
        assert_eq!(config.metrics_warning(), None);
        config.prometheus_port = Some(9200);
        let warning = config.metrics_warning().unwrap();
        assert!(
            warning.contains("prometheus_port")
                && warning.contains("[::]:9200")
                && warning.contains("unauthenticated"),
            "{warning}"
        );
    }

    #[test]
    fn sample_config_loads() {
        let config = load(&sample(&["10.0.0.1:9900", "[2a02::1]:9900"])).unwrap();
        assert_eq!(config.data_backends().count(), 2);
        assert_eq!(config.meta_backends().len(), 4);
        assert_eq!(
            config.socket.as_deref(),
            Some(Path::new("/run/qsfs/zstor.sock"))
        );
        let labels: Vec<_> = config.data_backends().map(Backend::label).collect();
        assert_eq!(labels, ["10.0.0.1:9900/data", "[2a02::1]:9900/data"]);
        assert!(!format!("{config:?}").contains("datapass"));
    }

    /// The in-process copy: written out, it loads as the same config without the
    /// socket (keys and passwords included).
    #[test]
    fn the_in_process_copy_is_the_config_without_its_socket() {
        let config = load(&sample(&["10.0.0.1:9900", "10.0.0.2:9900"])).unwrap();
        let file = config.in_process_file().unwrap().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = file.as_file().metadata().unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "private: it holds the key and passwords"
        );
        let again = load(&std::fs::read_to_string(file.path()).unwrap()).unwrap();
        assert_eq!(again.socket, None);
        assert_eq!(
            again.encryption.key.expose(),
            config.encryption.key.expose()
        );
        let passwords = |c: &ZstorConfig| -> Vec<String> {
            c.data_backends()
                .chain(c.meta_backends())
                .map(|b| {
                    format!(
                        "{} {:?}",
                        b.label(),
                        b.password.as_ref().map(|p| p.expose())
                    )
                })
                .collect()
        };
        assert_eq!(passwords(&again), passwords(&config));
        assert!(
            again.in_process_file().is_none(),
            "no socket: nothing to take out"
        );
    }

    #[test]
    fn invalid_configs_name_the_key() {
        let good = sample(&["10.0.0.1:9900", "10.0.0.2:9900"]);
        let cases = [
            (
                good.replace("expected_shards = 2", "expected_shards = 3"),
                "groups",
            ),
            (
                good.replace("minimal_shards = 1", "minimal_shards = 3"),
                "expected_shards",
            ),
            (
                good.replace("10.0.0.2:9900", "backend.example.org:9900"),
                "groups[0].backends[1].address",
            ),
            (
                good.replacen("\"[::1]:9904\"", "\"[::1]:9904\"\nextra = 1", 1),
                "meta.config.backends[3].extra",
            ),
            (
                good.replacen("key = \"0001", "key = \"zz01", 1),
                "encryption.key",
            ),
            (
                good.replace("algorithm = \"snappy\"", "algorithm = \"zstd\""),
                "compression.algorithm",
            ),
        ];
        for (text, key) in cases {
            let err = load(&text).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
            assert!(err.position.is_some(), "{err}");
        }
        let three_meta = good.replacen("[[meta.config.backends]]\naddress = \"[::1]:9901\"\nnamespace = \"meta9901\"\npassword = \"metapass\"\n", "", 1);
        let err = load(&three_meta).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("meta.config.backends"));
        assert_eq!(err.problem, Problem::InvalidValue);
        let err = load(&good.replace("socket =", "sockett =")).unwrap_err();
        assert_eq!(err.problem, Problem::UnknownKey);
    }
}
