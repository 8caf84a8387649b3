//! `monitor_config.toml`: the settings of `zstor_monitor`.
//!
//! Every key of the upstream v0.2.0 monitor config is accepted with the same meaning and units,
//! so an operator's existing file keeps working. Unknown keys are refused, as upstream does.

use super::{ConfigError, Percent, Secret, Source};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Default of `zdb_namespace_fill_treshold`, as upstream.
pub const DEFAULT_FILL_THRESHOLD: Percent = Percent(95.0);

/// The monitor's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// zdb index root (upstream key).
    pub zdb_index_dir_path: PathBuf,
    /// zdb data root (upstream key).
    pub zdb_data_dir_path: PathBuf,
    /// zstor config passed to every zstor call (upstream key).
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
}

/// The eVDC controller that provisions replacement backends.
#[derive(Debug, Clone, Deserialize)]
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
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = super::read(path)?;
        let source = Source::new(path, &text);
        let config: MonitorConfig = source.parse()?;
        if let Some(vdc) = &config.vdc_config {
            if !(vdc.url.starts_with("http://") || vdc.url.starts_with("https://")) {
                return Err(source.invalid("vdc_config.url", "must start with http:// or https://"));
            }
        }
        if config.max_zdb_data_dir_size == Some(0) {
            return Err(source.invalid(
                "max_zdb_data_dir_size",
                "must be at least 1 (MiB); leave it out to disable eviction",
            ));
        }
        Ok(config)
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
zstor_config_path = "/var/zdbfs/etc/zstor-default.toml"
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

    #[test]
    fn shipped_default_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/monitor_config.toml");
        MonitorConfig::load(&path).unwrap();
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
