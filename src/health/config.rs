//! The `[health]` section of `qsfs.toml`: the `serve` interval, the status file, metrics, each
//! probe's table (its settings live next to the probe, in `super::probes`), and which
//! remediations are on.
//!
//! Every key is optional; [`HealthSettings::default`] documents the defaults (and
//! `etc/qsfs.toml` repeats them). Unknown keys are refused. Each table is checked as a whole
//! once the file is read ([`Validate`]: thresholds in the right order, backoff below its
//! maximum), so an error names the table, its line and the keys involved.

use super::probes::disk::DiskSettings;
use super::probes::monitor::MonitorSettings;
use super::probes::mount::MountSettings;
use super::probes::s3::S3Settings;
use super::probes::units::UnitsSettings;
use super::probes::zdb::ZdbSettings;
use super::probes::zstor::ZstorProbeSettings;
use super::probes::ProbeName;
use crate::config::appliance::ApplianceConfig;
use crate::config::{absolute_path, at_least_one, secs, ConfigError, Source, Validate};
use serde::Deserialize;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

/// `qsfs.toml` as `qsfs-health` reads it: every table, `[health]` included.
pub type HealthConfig = ApplianceConfig<HealthSettings>;

/// `[health]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSettings {
    /// The probes `check` and `serve` run. Default: all seven.
    pub probes: Vec<ProbeName>,
    /// `serve`: time between two rounds of probes (`interval_secs`). Default 10 s.
    #[serde(rename = "interval_secs", deserialize_with = "secs")]
    pub interval: Duration,
    /// `serve` writes every round's report here (the JSON of `check --format json`), and
    /// `check` reads it for the since-timestamps. Default [`crate::layout::HEALTH_STATUS`].
    #[serde(deserialize_with = "absolute_path")]
    pub status_file: PathBuf,
    /// `serve`: where to answer `GET /metrics` (Prometheus text): `127.0.0.1:9102` or
    /// `unix:/run/qsfs/health-metrics.sock`. Empty (the default) turns metrics off.
    /// Unauthenticated: another TCP address is served as written, with a warning at start
    /// ([`crate::metrics::exposure_warning`]).
    #[serde(deserialize_with = "crate::metrics::optional_address")]
    pub metrics: Option<crate::metrics::Address>,
    /// The units probe.
    pub units: UnitsSettings,
    /// The zdb probe.
    pub zdb: ZdbSettings,
    /// The mount probe.
    pub mount: MountSettings,
    /// The S3 probe.
    pub s3: S3Settings,
    /// The zstor daemon probe.
    pub zstor: ZstorProbeSettings,
    /// The monitor probe.
    pub monitor: MonitorSettings,
    /// The disk probe.
    pub disk: DiskSettings,
    /// What `serve` repairs on its own.
    pub remediation: RemediationSettings,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            probes: ProbeName::ALL.to_vec(),
            interval: Duration::from_secs(10),
            status_file: crate::layout::HEALTH_STATUS.into(),
            metrics: None,
            units: UnitsSettings::default(),
            zdb: ZdbSettings::default(),
            mount: MountSettings::default(),
            s3: S3Settings::default(),
            zstor: ZstorProbeSettings::default(),
            monitor: MonitorSettings::default(),
            disk: DiskSettings::default(),
            remediation: RemediationSettings::default(),
        }
    }
}

impl HealthSettings {
    /// The timeout of one probe.
    pub fn timeout(&self, probe: ProbeName) -> Duration {
        match probe {
            ProbeName::Units => self.units.timeout,
            ProbeName::Zdb => self.zdb.timeout,
            ProbeName::Mount => self.mount.timeout,
            ProbeName::S3 => self.s3.timeout,
            ProbeName::Zstor => self.zstor.timeout,
            ProbeName::Monitor => self.monitor.timeout,
            ProbeName::Disk => self.disk.timeout,
        }
    }

    /// Whether `probe` is enabled.
    pub fn enabled(&self, probe: ProbeName) -> bool {
        self.probes.contains(&probe)
    }
}

impl Validate for HealthSettings {
    fn validate(&self, source: &Source) -> Result<(), ConfigError> {
        let tables = [
            ("zdb", self.zdb.validate()),
            ("s3", self.s3.validate()),
            ("monitor", self.monitor.validate()),
            ("disk", self.disk.validate()),
            ("remediation", self.remediation.validate()),
        ];
        for (table, checked) in tables {
            checked.map_err(|message| source.invalid(&format!("health.{table}"), message))?;
        }
        Ok(())
    }
}

/// `[health.remediation]`: how `serve` restarts a unit that is active but fails its probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationSettings {
    /// The probes whose unit `serve` may restart: `zdb` (qsfs-zdb), `mount` (qsfs-zdbfs), `s3`
    /// (qsfs-minio), `zstor` (qsfs-zstor). Empty turns remediation off. Default: all four.
    pub restart: Vec<ProbeName>,
    /// Consecutive failed rounds (with the unit active) before a restart. Default 3.
    #[serde(deserialize_with = "at_least_one")]
    pub failures_before_restart: NonZeroU32,
    /// Least time between two restarts of one unit; doubles after each restart that did not
    /// help, and goes back once the probe is ok (`backoff_initial_secs`). Default 30 s.
    #[serde(rename = "backoff_initial_secs", deserialize_with = "secs")]
    pub backoff_initial: Duration,
    /// The most the backoff grows to (`backoff_max_secs`). Default 600 s.
    #[serde(rename = "backoff_max_secs", deserialize_with = "secs")]
    pub backoff_max: Duration,
    /// At most this many restarts of one unit per window; then `serve` gives up (and logs it)
    /// until the window has room again. Default 3.
    #[serde(deserialize_with = "max_restarts")]
    pub max_restarts: NonZeroU32,
    /// The give-up window (`window_secs`). Default 3600 s.
    #[serde(rename = "window_secs", deserialize_with = "secs")]
    pub window: Duration,
    /// Longest to wait for a restart job (`job_timeout_secs`). Default 300 s.
    #[serde(rename = "job_timeout_secs", deserialize_with = "secs")]
    pub job_timeout: Duration,
}

impl Default for RemediationSettings {
    fn default() -> Self {
        RemediationSettings {
            restart: vec![
                ProbeName::Zdb,
                ProbeName::Mount,
                ProbeName::S3,
                ProbeName::Zstor,
            ],
            failures_before_restart: NonZeroU32::new(3).unwrap(),
            backoff_initial: Duration::from_secs(30),
            backoff_max: Duration::from_secs(600),
            max_restarts: NonZeroU32::new(3).unwrap(),
            window: Duration::from_secs(3600),
            job_timeout: Duration::from_secs(300),
        }
    }
}

impl RemediationSettings {
    /// The checks that span several keys of the table.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(bad) = self.restart.iter().find(|p| p.unit().is_none()) {
            return Err(format!(
                "restart: probe `{bad}` has no unit to restart (only zdb, mount, s3, zstor)"
            ));
        }
        if self.backoff_initial > self.backoff_max {
            return Err(format!(
                "backoff_initial_secs ({}) must not be above backoff_max_secs ({})",
                self.backoff_initial.as_secs(),
                self.backoff_max.as_secs()
            ));
        }
        Ok(())
    }
}

/// `max_restarts`: at least 1; remediation is turned off by `restart = []` instead.
fn max_restarts<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<NonZeroU32, D::Error> {
    at_least_one(deserializer).map_err(|_: D::Error| {
        serde::de::Error::custom("must be at least 1 (to turn restarts off, set restart = [])")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Problem;
    use std::path::Path;

    fn parse(text: &str) -> Result<HealthConfig, ConfigError> {
        Source::new(Path::new("/q.toml"), text).parse_valid()
    }

    #[test]
    fn shipped_default_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/qsfs.toml");
        // Metrics are off unless the operator sets an address.
        assert_eq!(HealthConfig::load(&path).unwrap().health.metrics, None);
    }

    #[test]
    fn defaults() {
        let h = parse("").unwrap().health;
        assert_eq!(h.probes, ProbeName::ALL.to_vec());
        assert_eq!(h.interval, Duration::from_secs(10));
        assert_eq!(h.metrics, None);
        assert_eq!(h.s3.accepted_statuses, vec![200]);
        assert_eq!(h.remediation.restart.len(), 4);
        assert_eq!(h.timeout(ProbeName::Mount), Duration::from_secs(2));
    }

    #[test]
    fn overrides() {
        let h = parse(
            "[health]\nprobes = ['zdb', 'mount']\nmetrics = 'unix:/run/m.sock'\n\
             [health.s3]\nurls = ['http://[::1]:9000/']\naccepted_statuses = [200, 403]\n\
             [health.remediation]\nrestart = []\n",
        )
        .unwrap()
        .health;
        assert!(h.enabled(ProbeName::Zdb) && !h.enabled(ProbeName::S3));
        assert_eq!(
            h.metrics,
            Some(crate::metrics::Address::Unix("/run/m.sock".into()))
        );
        assert_eq!(h.s3.accepted_statuses, vec![200, 403]);
        assert!(h.remediation.restart.is_empty());
        // Untouched keys of a table keep their defaults.
        assert_eq!(h.s3.timeout, Duration::from_millis(2000));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let err = parse("[health]\nprobes = ['zdb', 'nfs']\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("health.probes[1]"));
        assert_eq!(err.position.map(|p| p.0), Some(2));

        let err = parse("[health.disk]\nfree_degraded_percent = 3\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("health.disk"));
        assert!(err.message.contains("free_failed_percent"), "{err}");

        let err = parse("[health.mount]\ntimeout_ms = 0\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("health.mount.timeout_ms"));
        assert_eq!(err.position, Some((2, 14)));

        let err = parse("[health.zdb]\ntimeout = 5\n").unwrap_err();
        assert_eq!(err.problem, Problem::UnknownKey);

        let err = parse("[health]\nmetrics = 'localhost:80'\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("health.metrics"));

        let err = parse("[health.remediation]\nrestart = ['disk']\n").unwrap_err();
        assert!(err.message.contains("no unit"), "{err}");

        let err =
            parse("[health.remediation]\nbackoff_initial_secs = 900\nbackoff_max_secs = 60\n")
                .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("health.remediation"));

        let err = parse("[health.remediation]\nfailures_before_restart = 0\n").unwrap_err();
        assert_eq!(
            err.key.as_deref(),
            Some("health.remediation.failures_before_restart")
        );
        assert_eq!(err.message, "must be at least 1");
        let err = parse("[health.remediation]\nmax_restarts = 0\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("health.remediation.max_restarts"));
        assert!(err.message.contains("restart = []"), "{err}");
    }

    #[test]
    fn urls_with_credentials_are_refused_without_echo() {
        let err =
            parse("[health.s3]\nurls = ['http://admin:hunter2@127.0.0.1:9000/']\n").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.message.contains("credentials"));
        let err = parse("[health.s3]\nurls = ['ftp://x/']\n").unwrap_err();
        assert!(err.message.contains("not an http"));
        let err = parse("[health.s3]\naccepted_statuses = [700]\n").unwrap_err();
        assert!(err.message.contains("700"));
    }
}
