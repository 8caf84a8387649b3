//! `qsfs.toml`: the appliance's own settings shared by `zdb-hook` and `qsfs-health`.
//!
//! The file is found through the `QSFS_CONFIG` environment variable (the zdb unit sets it with
//! `Environment=`), or at [`layout::QSFS_CONFIG`]. Every key is optional; the defaults describe
//! the standard layout under `/var/zdbfs`.
//!
//! Each reader parses only what it needs: [`ApplianceConfig`] is generic over its `[health]`
//! part, which `qsfs-health` reads as its settings (`crate::health::config::HealthConfig`) and
//! the hook skips unread ([`HookConfig`]), so a mistake in a `[health.*]` table never stops a
//! zdb event.

use super::{absolute_path, secs, ConfigError, Source, Validate};
use crate::layout;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable naming the appliance config file.
pub const CONFIG_ENV: &str = "QSFS_CONFIG";

/// `qsfs.toml` as the hook reads it: `[health]` is skipped unread.
pub type HookConfig = ApplianceConfig<serde::de::IgnoredAny>;

/// The appliance's settings, with `H` the reader's view of `[health]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig<H> {
    /// Directories and sockets.
    #[serde(default)]
    pub paths: Paths,
    /// How to run zstor.
    #[serde(default)]
    pub zstor: ZstorSettings,
    /// Limits of the blocking hook events.
    #[serde(default)]
    pub hook: HookSettings,
    /// `qsfs-health`: probes, thresholds, remediation.
    #[serde(default)]
    pub health: H,
}

/// Directories and sockets of the appliance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// zdb's index root (`--index`).
    #[serde(deserialize_with = "absolute_path")]
    pub index_dir: PathBuf,
    /// zdb's data root (`--data`).
    #[serde(deserialize_with = "absolute_path")]
    pub data_dir: PathBuf,
    /// Upload jobs written by `zdb-hook` and consumed by `zstor_monitor`.
    #[serde(deserialize_with = "absolute_path")]
    pub spool_dir: PathBuf,
    /// `zstor_monitor`'s durable state.
    #[serde(deserialize_with = "absolute_path")]
    pub state_dir: PathBuf,
    /// The zdbfs mountpoint served by MinIO.
    #[serde(deserialize_with = "absolute_path")]
    pub mountpoint: PathBuf,
    /// zdb's unix socket (`--socket`).
    #[serde(deserialize_with = "absolute_path")]
    pub zdb_socket: PathBuf,
    /// The socket of the hook's read lane, where it runs its zstor `check` and `retrieve`
    /// (`qsfs-zstor-reads.socket`: zdb and its hook have no network).
    #[serde(deserialize_with = "absolute_path")]
    pub zstor_reads_socket: PathBuf,
    /// The units' environment file (`qsfs.env`: sizes, MinIO's address).
    #[serde(deserialize_with = "absolute_path")]
    pub units_env: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            index_dir: layout::INDEX_DIR.into(),
            data_dir: layout::DATA_DIR.into(),
            spool_dir: layout::SPOOL_DIR.into(),
            state_dir: layout::STATE_DIR.into(),
            mountpoint: layout::MOUNTPOINT.into(),
            zdb_socket: layout::ZDB_SOCKET.into(),
            zstor_reads_socket: layout::ZSTOR_READS_SOCKET.into(),
            units_env: layout::UNITS_ENV.into(),
        }
    }
}

/// How to run the zstor command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZstorSettings {
    /// The zstor binary.
    #[serde(deserialize_with = "absolute_path")]
    pub bin: PathBuf,
    /// The zstor config file (`-c`); under systemd the credential `zstor.toml` instead
    /// ([`layout::zstor_config`]).
    #[serde(deserialize_with = "absolute_path")]
    pub config: PathBuf,
    /// zstor's own log file (`--log_file`; without it zstor writes `zstor.log` into its
    /// working directory).
    #[serde(deserialize_with = "absolute_path")]
    pub log_file: PathBuf,
    /// Longest a single zstor command may run before it is killed (`timeout_secs`).
    #[serde(rename = "timeout_secs", deserialize_with = "secs")]
    pub timeout: Duration,
}

impl Default for ZstorSettings {
    fn default() -> Self {
        ZstorSettings {
            bin: layout::ZSTOR_BIN.into(),
            config: layout::ZSTOR_CONFIG.into(),
            log_file: layout::ZSTOR_LOG.into(),
            timeout: Duration::from_secs(600),
        }
    }
}

/// Limits of the blocking hook events, during which zdb serves nobody.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookSettings {
    /// Longest a `missing-data` retrieval may take (`missing_data_timeout_secs`).
    #[serde(rename = "missing_data_timeout_secs", deserialize_with = "secs")]
    pub missing_data_timeout: Duration,
    /// Longest the whole `namespaces-init` restore may take (`restore_timeout_secs`).
    #[serde(rename = "restore_timeout_secs", deserialize_with = "secs")]
    pub restore_timeout: Duration,
}

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings {
            missing_data_timeout: Duration::from_secs(120),
            restore_timeout: Duration::from_secs(1800),
        }
    }
}

/// The config file to read: `$QSFS_CONFIG`, or [`layout::QSFS_CONFIG`].
pub fn path_from_env() -> PathBuf {
    std::env::var_os(CONFIG_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(layout::QSFS_CONFIG))
}

impl<H: serde::de::DeserializeOwned + Validate + Default> ApplianceConfig<H> {
    /// Reads and validates the file at `path`. `[zstor] config` is where zstor's config is
    /// read ([`layout::zstor_config`]: the credential under systemd).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = super::load(path)?;
        config.zstor.config = layout::zstor_config(&config.zstor.config);
        Ok(config)
    }
}

impl<H: Validate> Validate for ApplianceConfig<H> {
    fn validate(&self, source: &Source) -> Result<(), ConfigError> {
        self.health.validate(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Problem, Source};

    #[test]
    fn empty_file_gives_the_standard_layout() {
        let config: HookConfig = Source::new(Path::new("/q.toml"), "").parse().unwrap();
        assert_eq!(config.paths.spool_dir, Path::new("/var/zdbfs/spool"));
        assert_eq!(config.zstor.timeout, Duration::from_secs(600));
        assert_eq!(config.hook.missing_data_timeout, Duration::from_secs(120));
    }

    #[test]
    fn overrides_and_errors() {
        let config: HookConfig =
            Source::new(Path::new("/q.toml"), "[paths]\nspool_dir = '/tmp/s'\n")
                .parse()
                .unwrap();
        assert_eq!(config.paths.spool_dir, Path::new("/tmp/s"));
        assert_eq!(config.paths.index_dir, Path::new("/var/zdbfs/index"));

        let err = Source::new(
            Path::new("/q.toml"),
            "[hook]\nmissing_data_timeout_secs = 0\n",
        )
        .parse::<HookConfig>()
        .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("hook.missing_data_timeout_secs"));
        assert_eq!(err.problem, Problem::InvalidValue);
    }

    #[test]
    fn shipped_default_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/qsfs.toml");
        HookConfig::load(&path).unwrap();
    }
}
