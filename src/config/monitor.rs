//! `monitor_config.toml`: the settings of `zstor_monitor`.
//!
//! Every key of the upstream v0.2.0 monitor config is accepted with the same meaning and units,
//! so an operator's existing file keeps working. Unknown keys are refused, as upstream does.

use super::{absolute_path, at_least_one, secs, ConfigError, Percent, Secret, Source, Validate};
use crate::layout;
use serde::Deserialize;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest `max_zdb_data_dir_size` accepted, in MiB (1 PiB): anything above is a value in
/// bytes typed into the MiB key, or a typo.
pub const MAX_CACHE_MIB: u64 = 1 << 30;

/// Default of `zdb_namespace_fill_treshold`, as upstream.
pub const DEFAULT_FILL_THRESHOLD: Percent = Percent(95.0);

/// The monitor's configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// zdb index root (upstream key).
    pub zdb_index_dir_path: PathBuf,
    /// zdb data root (upstream key).
    pub zdb_data_dir_path: PathBuf,
    /// zstor config passed to every zstor call (upstream key); under systemd the credential
    /// `zstor.toml` instead ([`crate::layout::zstor_config`]).
    pub zstor_config_path: PathBuf,
    /// The zstor binary (upstream key).
    pub zstor_bin_path: PathBuf,
    /// Local cache limit of the data dir, in MiB; no eviction when absent (upstream key).
    pub max_zdb_data_dir_size: Option<u64>,
    /// A backend fuller than this percentage counts as low on space (upstream key, spelling
    /// kept).
    #[serde(default = "default_fill_threshold")]
    pub zdb_namespace_fill_treshold: Percent,
    /// Where to ask for replacement backends (upstream key).
    pub vdc_config: Option<VdcConfig>,

    // Our keys; every one is optional.
    /// Upload jobs written by `zdb-hook`.
    #[serde(default = "default_spool_dir", deserialize_with = "absolute_path")]
    pub spool_dir: PathBuf,
    /// The monitor's durable state.
    #[serde(default = "default_state_dir", deserialize_with = "absolute_path")]
    pub state_dir: PathBuf,
    /// Where the running monitor publishes its status (read by `status` and `qsfs-health`).
    #[serde(default = "default_status_file", deserialize_with = "absolute_path")]
    pub status_file: PathBuf,
    /// zstor's own log file (`--log_file`).
    #[serde(default = "default_zstor_log_file", deserialize_with = "absolute_path")]
    pub zstor_log_file: PathBuf,
    /// Longest one zstor command may run.
    #[serde(
        rename = "zstor_timeout_secs",
        default = "default_zstor_timeout",
        deserialize_with = "secs"
    )]
    pub zstor_timeout: Duration,
    /// Uploads running at once.
    #[serde(
        default = "default_upload_concurrency",
        deserialize_with = "at_least_one"
    )]
    pub upload_concurrency: NonZeroU32,
    /// First delay before retrying a failed upload; it doubles up to `retry_max_secs`.
    #[serde(
        rename = "retry_initial_secs",
        default = "default_retry_initial",
        deserialize_with = "secs"
    )]
    pub retry_initial: Duration,
    /// Longest delay between retries of a failed upload.
    #[serde(
        rename = "retry_max_secs",
        default = "default_retry_max",
        deserialize_with = "secs"
    )]
    pub retry_max: Duration,
    /// How often every sealed file is checked to be verified remote or queued.
    #[serde(
        rename = "reconcile_interval_secs",
        default = "default_reconcile_interval",
        deserialize_with = "secs"
    )]
    pub reconcile_interval: Duration,
    /// How often the cache size is checked against `max_zdb_data_dir_size`.
    #[serde(
        rename = "eviction_interval_secs",
        default = "default_eviction_interval",
        deserialize_with = "secs"
    )]
    pub eviction_interval: Duration,
    /// Namespaces whose sealed, verified data files may be evicted.
    #[serde(default = "default_evict_namespaces")]
    pub evict_namespaces: Vec<String>,
    /// How long a data file that a read brought back (`missing-data`) stays local at least.
    #[serde(
        rename = "evict_keep_retrieved_secs",
        default = "default_keep_retrieved",
        deserialize_with = "secs"
    )]
    pub evict_keep_retrieved: Duration,
    /// How often every backend is checked with NSINFO.
    #[serde(
        rename = "backend_check_interval_secs",
        default = "default_backend_interval",
        deserialize_with = "secs"
    )]
    pub backend_check_interval: Duration,
    /// How long a backend may fail before it counts as unreachable.
    #[serde(
        rename = "backend_grace_period_secs",
        default = "default_grace_period",
        deserialize_with = "secs"
    )]
    pub backend_grace_period: Duration,
    /// The most one backend check (connect, `SELECT`, `NSINFO`) may take as a whole.
    #[serde(
        rename = "backend_timeout_secs",
        default = "default_backend_timeout",
        deserialize_with = "secs"
    )]
    pub backend_timeout: Duration,
    /// Rebuilds running at once after the backend set changed.
    #[serde(
        default = "default_rebuild_concurrency",
        deserialize_with = "at_least_one"
    )]
    pub rebuild_concurrency: NonZeroU32,
    /// On SIGTERM, how long the queued uploads may still run before the monitor exits.
    #[serde(
        rename = "shutdown_timeout_secs",
        default = "default_shutdown_timeout",
        deserialize_with = "secs"
    )]
    pub shutdown_timeout: Duration,
    /// Prometheus metrics: `127.0.0.1:9101`, `[::1]:9101` or `unix:/run/qsfs/monitor-metrics.sock`;
    /// off when absent. Unauthenticated: another TCP address is served as written, with a
    /// warning at start ([`crate::metrics::exposure_warning`]).
    #[serde(default, deserialize_with = "crate::metrics::optional_address")]
    pub metrics_address: Option<crate::metrics::Address>,
    /// The zdbfs mountpoint whose cache is flushed.
    #[serde(
        default = "default_zdbfs_mountpoint",
        deserialize_with = "absolute_path"
    )]
    pub zdbfs_mountpoint: PathBuf,
    /// zdb's unix socket: a flush runs only while zdb answers, and succeeds only if zdb still
    /// answers after it (zdbfs's ioctl says success even when its writes to zdb failed).
    #[serde(default = "default_zdb_socket", deserialize_with = "absolute_path")]
    pub zdb_socket_path: PathBuf,
    /// Time between two flushes of zdbfs's cache to zdb (its snapshot ioctl); `None` (0 in the
    /// file) turns the flush off.
    #[serde(
        rename = "flush_interval_secs",
        default = "default_flush_interval",
        deserialize_with = "secs_or_off"
    )]
    pub flush_interval: Option<Duration>,
    /// Longest a flush may take before it counts as failed (a hung zdbfs).
    #[serde(
        rename = "flush_timeout_secs",
        default = "default_flush_timeout",
        deserialize_with = "secs"
    )]
    pub flush_timeout: Duration,
    /// Time between two restore points forced while zdbfs is written to (zdb jumps
    /// zdbfs-meta, then zdbfs-data, whose jump takes the cut; see [`crate::cuts`]); `None` (0
    /// in the file) leaves them to zdb's own rotations and stops. With the flush interval and
    /// the upload time it bounds what a lost VM loses (README, "What a lost VM loses").
    #[serde(
        rename = "restore_point_interval_secs",
        default = "default_restore_point_interval",
        deserialize_with = "secs_or_off"
    )]
    pub restore_point_interval: Option<Duration>,
}

fn default_zdbfs_mountpoint() -> PathBuf {
    layout::MOUNTPOINT.into()
}
fn default_zdb_socket() -> PathBuf {
    layout::ZDB_SOCKET.into()
}
fn default_flush_interval() -> Option<Duration> {
    Some(Duration::from_secs(5))
}
fn default_restore_point_interval() -> Option<Duration> {
    Some(Duration::from_secs(30))
}
fn default_flush_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_spool_dir() -> PathBuf {
    layout::SPOOL_DIR.into()
}
fn default_state_dir() -> PathBuf {
    layout::STATE_DIR.into()
}
fn default_status_file() -> PathBuf {
    layout::MONITOR_STATUS.into()
}
fn default_zstor_log_file() -> PathBuf {
    layout::ZSTOR_LOG.into()
}
fn default_zstor_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_upload_concurrency() -> NonZeroU32 {
    NonZeroU32::new(2).expect("not zero")
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(5)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(600)
}
fn default_reconcile_interval() -> Duration {
    Duration::from_secs(600)
}
fn default_eviction_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_keep_retrieved() -> Duration {
    Duration::from_secs(600)
}
fn default_evict_namespaces() -> Vec<String> {
    vec![layout::DATA_NAMESPACE.to_string()]
}
fn default_backend_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_grace_period() -> Duration {
    Duration::from_secs(900)
}
fn default_backend_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_rebuild_concurrency() -> NonZeroU32 {
    NonZeroU32::new(1).expect("not zero")
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Deserializes seconds where 0 means "off".
fn secs_or_off<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let secs = u64::deserialize(deserializer)?;
    Ok((secs > 0).then(|| Duration::from_secs(secs)))
}

/// The eVDC controller that provisions replacement backends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VdcConfig {
    /// Base URL of the controller.
    pub url: String,
    /// Password for the replacement backends.
    pub password: Secret,
    /// Size of a replacement backend, in GB.
    pub new_size: u64,
}

fn default_fill_threshold() -> Percent {
    DEFAULT_FILL_THRESHOLD
}

impl MonitorConfig {
    /// Reads and validates the file at `path`. `zstor_config_path` is where the monitor reads
    /// zstor's config ([`crate::layout::zstor_config`]: the credential under systemd).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: MonitorConfig = super::load(path)?;
        config.zstor_config_path = crate::layout::zstor_config(&config.zstor_config_path);
        Ok(config)
    }

    /// `max_zdb_data_dir_size` in bytes (at most [`MAX_CACHE_MIB`] MiB once validated).
    pub fn cache_limit_bytes(&self) -> Option<u64> {
        self.max_zdb_data_dir_size
            .map(|mib| mib.saturating_mul(1024 * 1024))
    }
}

impl Validate for MonitorConfig {
    fn validate(&self, source: &Source) -> Result<(), ConfigError> {
        if let Some(vdc) = &self.vdc_config {
            if !(vdc.url.starts_with("http://") || vdc.url.starts_with("https://")) {
                return Err(source.invalid("vdc_config.url", "must start with http:// or https://"));
            }
        }
        if self.retry_max < self.retry_initial {
            return Err(source.invalid("retry_max_secs", "must be at least retry_initial_secs"));
        }
        if self.max_zdb_data_dir_size == Some(0) {
            return Err(source.invalid(
                "max_zdb_data_dir_size",
                "must be at least 1 (MiB); leave it out to disable eviction",
            ));
        }
        if let Some(mib) = self
            .max_zdb_data_dir_size
            .filter(|&mib| mib > MAX_CACHE_MIB)
        {
            return Err(source.invalid(
                "max_zdb_data_dir_size",
                format!(
                    "{mib} is more than {MAX_CACHE_MIB} (1 PiB): the value is in MiB, not bytes \
                     (4096 is 4 GiB)"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Problem;

    /// The seed operator's file: only the upstream v0.2.0 keys.
    const SEED: &str = r#"
zdb_index_dir_path = "/var/zdbfs/index"
zdb_data_dir_path = "/var/zdbfs/data"
zstor_config_path = "/var/zdbfs/etc/credstore/zstor.toml"
zstor_bin_path = "/var/zdbfs/bin/zstor"
max_zdb_data_dir_size = 4096
zdb_namespace_fill_treshold = 90

[vdc_config]
url = "https://vdc.example.org"
password = "s3cr3t-vdc"
new_size = 100
"#;

    fn load(text: &str) -> Result<MonitorConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("monitor_config.toml");
        std::fs::write(&path, text).unwrap();
        MonitorConfig::load(&path)
    }

    #[test]
    fn seed_file_loads_unchanged() {
        let config = load(SEED).unwrap();
        assert_eq!(config.max_zdb_data_dir_size, Some(4096));
        assert_eq!(config.zdb_namespace_fill_treshold, Percent(90.0));
        let vdc = config.vdc_config.unwrap();
        assert_eq!(vdc.password.expose(), "s3cr3t-vdc");
        assert_eq!(vdc.new_size, 100);
        assert!(!format!("{vdc:?}").contains("s3cr3t"));
    }

    #[test]
    fn optional_keys_take_upstream_defaults() {
        let config = load(
            "zdb_index_dir_path = '/i'\nzdb_data_dir_path = '/d'\nzstor_config_path = '/z'\nzstor_bin_path = '/b'\n",
        )
        .unwrap();
        assert_eq!(config.zdb_namespace_fill_treshold, DEFAULT_FILL_THRESHOLD);
        assert!(config.max_zdb_data_dir_size.is_none());
        assert!(config.vdc_config.is_none());
    }

    /// Every commented key of the shipped file, uncommented, is accepted and equals the default.
    #[test]
    fn documented_defaults_are_the_defaults() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/monitor_config.toml"),
        )
        .unwrap();
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest
                            .split(" = ")
                            .next()
                            .is_some_and(|k| !k.contains(' ') && rest.contains(" = ")) =>
                {
                    rest
                }
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        // The file describes the eVDC password without a value (it is a secret).
        let uncommented = format!("{uncommented}password = \"p\"\n");
        let all = load(&uncommented).unwrap();
        let defaults = load(&text).unwrap();
        assert!(all.vdc_config.is_some());
        // Off by default, so the file shows an example: max_zdb_data_dir_size, [vdc_config]
        // and metrics_address.
        assert!(all.metrics_address.is_some() && defaults.metrics_address.is_none());
        assert_eq!(
            crate::metrics::exposure_warning(all.metrics_address.as_ref().unwrap()),
            None
        );
        let expected = MonitorConfig {
            max_zdb_data_dir_size: Some(4096),
            vdc_config: all.vdc_config.clone(),
            metrics_address: all.metrics_address.clone(),
            ..defaults
        };
        assert_eq!(all, expected);
    }

    /// The monitor config may hold the eVDC password, so the shipped file describes the key
    /// and gives no value for it to copy (this file is mode 0600, like the other secrets).
    #[test]
    fn the_shipped_file_shows_no_password_value() {
        let text = include_str!("../../etc/monitor_config.toml");
        for line in text.lines() {
            let line = line.trim_start_matches(['#', ' ']);
            assert!(!line.starts_with("password"), "{line}");
        }
        assert!(text.contains("`password`"), "the key is described");
    }

    #[test]
    fn shipped_default_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/monitor_config.toml");
        MonitorConfig::load(&path).unwrap();
    }

    /// A value in bytes typed into the MiB key once overflowed the byte count (a debug panic;
    /// in release a limit of 0 that evicted every verified file): refused at its key and line.
    #[test]
    fn an_implausible_cache_limit_is_refused() {
        for value in ["17592186044416", "4294967296", "18446744073709551615"] {
            let err = load(&SEED.replace("= 4096", &format!("= {value}"))).unwrap_err();
            let shown = err.to_string();
            assert_eq!(err.problem, Problem::InvalidValue, "{shown}");
            assert_eq!(err.key.as_deref(), Some("max_zdb_data_dir_size"), "{shown}");
            assert_eq!(err.position.map(|p| p.0), Some(6), "{shown}");
            assert!(
                shown.contains("monitor_config.toml") && shown.contains("in MiB"),
                "{shown}"
            );
        }
        let largest = load(&SEED.replace("= 4096", &format!("= {MAX_CACHE_MIB}"))).unwrap();
        assert_eq!(largest.cache_limit_bytes(), Some(1 << 50));
        assert_eq!(load(SEED).unwrap().cache_limit_bytes(), Some(4096 << 20));
    }

    #[test]
    fn each_kind_of_error_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.toml");
        let err = MonitorConfig::load(&missing).unwrap_err();
        assert_eq!(err.problem, Problem::Missing);
        assert!(err.to_string().contains("absent.toml"), "{err}");

        let cases = [
            (
                SEED.replace("new_size = 100", "new_size = = 100"),
                Problem::Syntax,
                None,
                12,
            ),
            (
                SEED.replace("new_size = 100", "new_size = 100\nsize = 1"),
                Problem::UnknownKey,
                Some("vdc_config.size"),
                13,
            ),
            (
                SEED.replace(
                    "max_zdb_data_dir_size = 4096",
                    "max_zdb_data_dir_size = '4G'",
                ),
                Problem::WrongType,
                Some("max_zdb_data_dir_size"),
                6,
            ),
            (
                SEED.replace("zstor_bin_path = \"/var/zdbfs/bin/zstor\"\n", ""),
                Problem::MissingKey,
                Some("zstor_bin_path"),
                0,
            ),
            (
                SEED.replace("treshold = 90", "treshold = 190"),
                Problem::InvalidValue,
                Some("zdb_namespace_fill_treshold"),
                7,
            ),
            (
                SEED.replace("https://vdc", "ftp://vdc"),
                Problem::InvalidValue,
                Some("vdc_config.url"),
                10,
            ),
        ];
        for (text, problem, key, line) in cases {
            let err = load(&text).unwrap_err();
            let shown = err.to_string();
            assert_eq!(err.problem, problem, "{shown}");
            assert_eq!(err.key.as_deref(), key, "{shown}");
            assert!(shown.contains("monitor_config.toml"), "{shown}");
            if let Some(key) = key {
                assert!(shown.contains(&format!("key `{key}`")), "{shown}");
            }
            if line > 0 {
                assert_eq!(err.position.map(|p| p.0), Some(line), "{shown}");
            }
            assert_eq!(err.exit_code(), 78);
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
    }
}
