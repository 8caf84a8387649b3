//! The `[health]` section of `qsfs.toml`: probe timeouts and thresholds, the `serve` interval,
//! metrics, and which remediations are on.
//!
//! Every key is optional; [`HealthSettings::default`] documents the defaults (and
//! `etc/qsfs.toml` repeats them). Unknown keys are refused. Each table is checked as a whole
//! when it is read (thresholds in the right order, backoff below its maximum), so an error names
//! the table, its line and the keys involved.

use crate::config::{absolute_path, positive_secs};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The probes, by the names used on the command line, in the config and in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeName {
    /// Every qsfs unit's state over D-Bus.
    Units,
    /// zdb: PING, INFO and NSINFO over its unix socket.
    Zdb,
    /// The zdbfs FUSE mount.
    Mount,
    /// The S3 endpoint (MinIO's health URLs).
    S3,
    /// The zstor daemon's unix socket accepts a connection.
    Zstor,
    /// The status zstor_monitor publishes: upload backlog, backends.
    Monitor,
    /// Free space of zdb's data and index directories.
    Disk,
}

impl ProbeName {
    /// Every probe, in report order.
    pub const ALL: [ProbeName; 7] = [
        ProbeName::Units,
        ProbeName::Zdb,
        ProbeName::Mount,
        ProbeName::S3,
        ProbeName::Zstor,
        ProbeName::Monitor,
        ProbeName::Disk,
    ];

    /// The name as written in configs, reports and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeName::Units => "units",
            ProbeName::Zdb => "zdb",
            ProbeName::Mount => "mount",
            ProbeName::S3 => "s3",
            ProbeName::Zstor => "zstor",
            ProbeName::Monitor => "monitor",
            ProbeName::Disk => "disk",
        }
    }

    /// The unit that `serve` restarts when this probe fails while the unit is active, for the
    /// probes that have one.
    pub fn unit(self) -> Option<&'static str> {
        match self {
            ProbeName::Zdb => Some("qsfs-zdb.service"),
            ProbeName::Mount => Some("qsfs-zdbfs.service"),
            ProbeName::S3 => Some("qsfs-minio.service"),
            ProbeName::Zstor => Some("qsfs-zstor.service"),
            _ => None,
        }
    }
}

impl std::fmt::Display for ProbeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProbeName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ProbeName::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown probe `{s}` (one of: {})",
                    ProbeName::ALL.map(ProbeName::as_str).join(", ")
                )
            })
    }
}

/// `[health]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSettings {
    /// The probes `check` and `serve` run. Default: all seven.
    pub probes: Vec<ProbeName>,
    /// `serve`: seconds between two rounds of probes. Default 10.
    #[serde(deserialize_with = "positive_secs")]
    pub interval_secs: u64,
    /// `serve` writes every round's report here (the JSON of `check --format json`), and
    /// `check` reads it for the since-timestamps. Default `/run/qsfs/health-status.json`.
    #[serde(deserialize_with = "absolute_path")]
    pub status_file: PathBuf,
    /// `serve`: where to answer `GET /metrics` (Prometheus text): `127.0.0.1:9101` or
    /// `unix:/run/qsfs/health-metrics.sock`. Empty (the default) turns metrics off.
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
            interval_secs: 10,
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
    /// The `serve` interval.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }

    /// The timeout of one probe.
    pub fn timeout(&self, probe: ProbeName) -> Duration {
        Duration::from_millis(match probe {
            ProbeName::Units => self.units.timeout_ms,
            ProbeName::Zdb => self.zdb.timeout_ms,
            ProbeName::Mount => self.mount.timeout_ms,
            ProbeName::S3 => self.s3.timeout_ms,
            ProbeName::Zstor => self.zstor.timeout_ms,
            ProbeName::Monitor => self.monitor.timeout_ms,
            ProbeName::Disk => self.disk.timeout_ms,
        })
    }

    /// Whether `probe` is enabled.
    pub fn enabled(&self, probe: ProbeName) -> bool {
        self.probes.contains(&probe)
    }
}

/// A probe timeout in milliseconds: between 1 ms and 10 minutes.
fn timeout_ms<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let ms = u64::deserialize(deserializer)?;
    if (1..=600_000).contains(&ms) {
        Ok(ms)
    } else {
        Err(serde::de::Error::custom(
            "must be between 1 and 600000 milliseconds",
        ))
    }
}

fn percent<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    crate::config::Percent::deserialize(deserializer).map(|p| p.0)
}

/// Checks a whole table after its keys were read.
trait Validate: Sized {
    fn validate(self) -> Result<Self, String>;
}

/// Deserializes `T` with its defaults, then runs [`Validate::validate`].
macro_rules! validated {
    ($name:ident, $raw:ident) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = $raw::deserialize(deserializer)?;
                $name::from(raw)
                    .validate()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

/// `[health.units]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnitsSettings {
    /// Longest the probe may take, in milliseconds. Default 2000.
    #[serde(deserialize_with = "timeout_ms")]
    pub timeout_ms: u64,
    /// The units to report. Default: the zstor, monitor, zdb, zdbfs and MinIO services.
    pub units: Vec<String>,
    /// A running unit that systemd restarted this many times (`NRestarts`) or more is
    /// degraded; 0 turns this off. Default 3.
    pub restarts_degraded: u32,
}

impl Default for UnitsSettings {
    fn default() -> Self {
        UnitsSettings {
            timeout_ms: 2000,
            units: [
                "qsfs-zstor.service",
                "qsfs-monitor.service",
                "qsfs-zdb.service",
                "qsfs-zdbfs.service",
                "qsfs-minio.service",
            ]
            .map(String::from)
            .to_vec(),
            restarts_degraded: 3,
        }
    }
}

/// `[health.zdb]`.
#[derive(Debug, Clone)]
pub struct ZdbSettings {
    /// Longest the probe may take, in milliseconds. Default 1000.
    pub timeout_ms: u64,
    /// The namespaces zdbfs uses; each must exist and be in `sequential` mode. Default
    /// `zdbfs-meta`, `zdbfs-data`, `zdbfs-temp` (zdbfs 0.1.11 ignores other names).
    pub namespaces: Vec<String>,
    /// A namespace with a size limit that is this full (percent) is degraded. Default 90.
    pub fill_degraded_percent: f64,
    /// ... and this full, failed. Default 98.
    pub fill_failed_percent: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawZdb {
    #[serde(deserialize_with = "timeout_ms")]
    timeout_ms: u64,
    namespaces: Vec<String>,
    #[serde(deserialize_with = "percent")]
    fill_degraded_percent: f64,
    #[serde(deserialize_with = "percent")]
    fill_failed_percent: f64,
}

impl Default for RawZdb {
    fn default() -> Self {
        let d = ZdbSettings::default();
        RawZdb {
            timeout_ms: d.timeout_ms,
            namespaces: d.namespaces,
            fill_degraded_percent: d.fill_degraded_percent,
            fill_failed_percent: d.fill_failed_percent,
        }
    }
}

impl From<RawZdb> for ZdbSettings {
    fn from(r: RawZdb) -> Self {
        ZdbSettings {
            timeout_ms: r.timeout_ms,
            namespaces: r.namespaces,
            fill_degraded_percent: r.fill_degraded_percent,
            fill_failed_percent: r.fill_failed_percent,
        }
    }
}

impl Default for ZdbSettings {
    fn default() -> Self {
        ZdbSettings {
            timeout_ms: 1000,
            namespaces: crate::layout::ZDBFS_NAMESPACES.map(String::from).to_vec(),
            fill_degraded_percent: 90.0,
            fill_failed_percent: 98.0,
        }
    }
}

impl Validate for ZdbSettings {
    fn validate(self) -> Result<Self, String> {
        if self.fill_degraded_percent > self.fill_failed_percent {
            return Err(format!(
                "fill_degraded_percent ({}) must not be above fill_failed_percent ({})",
                self.fill_degraded_percent, self.fill_failed_percent
            ));
        }
        if let Some(bad) = self
            .namespaces
            .iter()
            .find(|n| n.is_empty() || n.len() > 128 || n.contains(char::is_whitespace))
        {
            return Err(format!("namespace name `{bad}` is not valid"));
        }
        Ok(self)
    }
}
validated!(ZdbSettings, RawZdb);

/// `[health.mount]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountSettings {
    /// Longest a stat of the mountpoint may take before the mount counts as hung, in
    /// milliseconds. Default 2000.
    #[serde(deserialize_with = "timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for MountSettings {
    fn default() -> Self {
        MountSettings { timeout_ms: 2000 }
    }
}

/// `[health.s3]`.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Longest each request may take, in milliseconds. Default 2000.
    pub timeout_ms: u64,
    /// The URLs to GET; each must answer one of `accepted_statuses`. No credentials in URLs.
    /// Default (`None`): MinIO's `/minio/health/live` and `/minio/health/ready` at the
    /// `MINIO_ADDRESS` of the units' environment file ([`minio_health_urls`]).
    pub urls: Option<Vec<String>>,
    /// The HTTP statuses that count as healthy. Default `[200]`.
    pub accepted_statuses: Vec<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawS3 {
    #[serde(deserialize_with = "timeout_ms")]
    timeout_ms: u64,
    urls: Option<Vec<String>>,
    accepted_statuses: Vec<u16>,
}

impl Default for RawS3 {
    fn default() -> Self {
        let d = S3Settings::default();
        RawS3 {
            timeout_ms: d.timeout_ms,
            urls: d.urls,
            accepted_statuses: d.accepted_statuses,
        }
    }
}

impl From<RawS3> for S3Settings {
    fn from(r: RawS3) -> Self {
        S3Settings {
            timeout_ms: r.timeout_ms,
            urls: r.urls,
            accepted_statuses: r.accepted_statuses,
        }
    }
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            timeout_ms: 2000,
            urls: None,
            accepted_statuses: vec![200],
        }
    }
}

/// MinIO's health URLs for its `--address` (`MINIO_ADDRESS`: `:9000`, `IP:PORT`, `[IPv6]:PORT`,
/// `host:port`), as seen from this machine: a wildcard address is asked on loopback.
pub fn minio_health_urls(address: &str) -> Vec<String> {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "9000"));
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        host => host,
    };
    ["live", "ready"]
        .iter()
        .map(|what| format!("http://{host}:{port}/minio/health/{what}"))
        .collect()
}

/// `MINIO_ADDRESS` from a systemd environment file (`KEY=VALUE` lines); `:9000` when the file
/// or the key is missing.
pub fn minio_address(env_file: &std::path::Path) -> String {
    std::fs::read_to_string(env_file)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .find_map(|line| line.trim().strip_prefix("MINIO_ADDRESS="))
                .map(|value| value.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| ":9000".to_string())
}

impl Validate for S3Settings {
    fn validate(self) -> Result<Self, String> {
        if self.urls.as_ref().is_some_and(Vec::is_empty) {
            return Err("urls must name at least one URL".into());
        }
        for url in self.urls.iter().flatten() {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.contains('@') {
                // The value is not repeated: it holds a credential.
                return Err("a URL holds credentials (user@host); the health URLs need none and a secret must not sit in qsfs.toml".into());
            }
            if authority.is_empty() {
                return Err(format!("`{url}` has no host"));
            }
        }
        if self.accepted_statuses.is_empty() {
            return Err("accepted_statuses must name at least one status".into());
        }
        if let Some(bad) = self
            .accepted_statuses
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(format!("{bad} is not an HTTP status (100 to 599)"));
        }
        Ok(self)
    }
}
validated!(S3Settings, RawS3);

/// `[health.zstor]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZstorProbeSettings {
    /// Longest a connect may take, in milliseconds. Default 1000.
    #[serde(deserialize_with = "timeout_ms")]
    pub timeout_ms: u64,
    /// The zstor daemon's unix socket. Default `/run/qsfs/zstor.sock`.
    #[serde(deserialize_with = "absolute_path")]
    pub socket: PathBuf,
}

impl Default for ZstorProbeSettings {
    fn default() -> Self {
        ZstorProbeSettings {
            timeout_ms: 1000,
            socket: crate::layout::ZSTOR_SOCKET.into(),
        }
    }
}

/// `[health.monitor]`.
#[derive(Debug, Clone)]
pub struct MonitorSettings {
    /// Longest reading the status may take, in milliseconds. Default 1000.
    pub timeout_ms: u64,
    /// The status file zstor_monitor publishes. Default `/run/qsfs/monitor-status.json`.
    pub status_file: PathBuf,
    /// A status older than this (seconds) means the monitor is not running. Default 10.
    pub stale_after_secs: u64,
    /// This many files waiting for upload or more is degraded. Default 1000.
    pub backlog_degraded_files: u64,
    /// A file unverified for this long (seconds) is degraded. Default 3600.
    pub unverified_degraded_secs: u64,
    /// ... and for this long, failed. Default 86400.
    pub unverified_failed_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMonitor {
    #[serde(deserialize_with = "timeout_ms")]
    timeout_ms: u64,
    #[serde(deserialize_with = "absolute_path")]
    status_file: PathBuf,
    #[serde(deserialize_with = "positive_secs")]
    stale_after_secs: u64,
    backlog_degraded_files: u64,
    #[serde(deserialize_with = "positive_secs")]
    unverified_degraded_secs: u64,
    #[serde(deserialize_with = "positive_secs")]
    unverified_failed_secs: u64,
}

impl Default for RawMonitor {
    fn default() -> Self {
        let d = MonitorSettings::default();
        RawMonitor {
            timeout_ms: d.timeout_ms,
            status_file: d.status_file,
            stale_after_secs: d.stale_after_secs,
            backlog_degraded_files: d.backlog_degraded_files,
            unverified_degraded_secs: d.unverified_degraded_secs,
            unverified_failed_secs: d.unverified_failed_secs,
        }
    }
}

impl From<RawMonitor> for MonitorSettings {
    fn from(r: RawMonitor) -> Self {
        MonitorSettings {
            timeout_ms: r.timeout_ms,
            status_file: r.status_file,
            stale_after_secs: r.stale_after_secs,
            backlog_degraded_files: r.backlog_degraded_files,
            unverified_degraded_secs: r.unverified_degraded_secs,
            unverified_failed_secs: r.unverified_failed_secs,
        }
    }
}

impl Default for MonitorSettings {
    fn default() -> Self {
        MonitorSettings {
            timeout_ms: 1000,
            status_file: crate::layout::MONITOR_STATUS.into(),
            stale_after_secs: 10,
            backlog_degraded_files: 1000,
            unverified_degraded_secs: 3600,
            unverified_failed_secs: 86400,
        }
    }
}

impl Validate for MonitorSettings {
    fn validate(self) -> Result<Self, String> {
        if self.unverified_degraded_secs > self.unverified_failed_secs {
            return Err(format!(
                "unverified_degraded_secs ({}) must not be above unverified_failed_secs ({})",
                self.unverified_degraded_secs, self.unverified_failed_secs
            ));
        }
        Ok(self)
    }
}
validated!(MonitorSettings, RawMonitor);

/// `[health.disk]`.
#[derive(Debug, Clone)]
pub struct DiskSettings {
    /// Longest a statvfs may take, in milliseconds. Default 1000.
    pub timeout_ms: u64,
    /// Less free space than this (percent) on the data or index filesystem is degraded.
    /// Default 10.
    pub free_degraded_percent: f64,
    /// ... and less than this, failed. Default 5.
    pub free_failed_percent: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDisk {
    #[serde(deserialize_with = "timeout_ms")]
    timeout_ms: u64,
    #[serde(deserialize_with = "percent")]
    free_degraded_percent: f64,
    #[serde(deserialize_with = "percent")]
    free_failed_percent: f64,
}

impl Default for RawDisk {
    fn default() -> Self {
        let d = DiskSettings::default();
        RawDisk {
            timeout_ms: d.timeout_ms,
            free_degraded_percent: d.free_degraded_percent,
            free_failed_percent: d.free_failed_percent,
        }
    }
}

impl From<RawDisk> for DiskSettings {
    fn from(r: RawDisk) -> Self {
        DiskSettings {
            timeout_ms: r.timeout_ms,
            free_degraded_percent: r.free_degraded_percent,
            free_failed_percent: r.free_failed_percent,
        }
    }
}

impl Default for DiskSettings {
    fn default() -> Self {
        DiskSettings {
            timeout_ms: 1000,
            free_degraded_percent: 10.0,
            free_failed_percent: 5.0,
        }
    }
}

impl Validate for DiskSettings {
    fn validate(self) -> Result<Self, String> {
        if self.free_failed_percent > self.free_degraded_percent {
            return Err(format!(
                "free_failed_percent ({}) must not be above free_degraded_percent ({})",
                self.free_failed_percent, self.free_degraded_percent
            ));
        }
        Ok(self)
    }
}
validated!(DiskSettings, RawDisk);

/// `[health.remediation]`: how `serve` restarts a unit that is active but fails its probe.
#[derive(Debug, Clone)]
pub struct RemediationSettings {
    /// The probes whose unit `serve` may restart: `zdb` (qsfs-zdb), `mount` (qsfs-zdbfs), `s3`
    /// (qsfs-minio), `zstor` (qsfs-zstor). Empty turns remediation off. Default: all four.
    pub restart: Vec<ProbeName>,
    /// Consecutive failed rounds (with the unit active) before a restart. Default 3.
    pub failures_before_restart: u32,
    /// Least time between two restarts of one unit; doubles after each restart that did not
    /// help, and goes back once the probe is ok. Seconds, default 30.
    pub backoff_initial_secs: u64,
    /// The most the backoff grows to, seconds. Default 600.
    pub backoff_max_secs: u64,
    /// At most this many restarts of one unit per `window_secs`; then `serve` gives up (and
    /// logs it) until the window has room again. Default 3.
    pub max_restarts: u32,
    /// The give-up window, seconds. Default 3600.
    pub window_secs: u64,
    /// Longest to wait for a restart job, seconds. Default 300.
    pub job_timeout_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRemediation {
    restart: Vec<ProbeName>,
    failures_before_restart: u32,
    #[serde(deserialize_with = "positive_secs")]
    backoff_initial_secs: u64,
    #[serde(deserialize_with = "positive_secs")]
    backoff_max_secs: u64,
    max_restarts: u32,
    #[serde(deserialize_with = "positive_secs")]
    window_secs: u64,
    #[serde(deserialize_with = "positive_secs")]
    job_timeout_secs: u64,
}

impl Default for RawRemediation {
    fn default() -> Self {
        let d = RemediationSettings::default();
        RawRemediation {
            restart: d.restart,
            failures_before_restart: d.failures_before_restart,
            backoff_initial_secs: d.backoff_initial_secs,
            backoff_max_secs: d.backoff_max_secs,
            max_restarts: d.max_restarts,
            window_secs: d.window_secs,
            job_timeout_secs: d.job_timeout_secs,
        }
    }
}

impl From<RawRemediation> for RemediationSettings {
    fn from(r: RawRemediation) -> Self {
        RemediationSettings {
            restart: r.restart,
            failures_before_restart: r.failures_before_restart,
            backoff_initial_secs: r.backoff_initial_secs,
            backoff_max_secs: r.backoff_max_secs,
            max_restarts: r.max_restarts,
            window_secs: r.window_secs,
            job_timeout_secs: r.job_timeout_secs,
        }
    }
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
            failures_before_restart: 3,
            backoff_initial_secs: 30,
            backoff_max_secs: 600,
            max_restarts: 3,
            window_secs: 3600,
            job_timeout_secs: 300,
        }
    }
}

impl Validate for RemediationSettings {
    fn validate(self) -> Result<Self, String> {
        if let Some(bad) = self.restart.iter().find(|p| p.unit().is_none()) {
            return Err(format!(
                "restart: probe `{bad}` has no unit to restart (only zdb, mount, s3, zstor)"
            ));
        }
        if self.failures_before_restart == 0 {
            return Err("failures_before_restart must be at least 1".into());
        }
        if self.max_restarts == 0 {
            return Err(
                "max_restarts must be at least 1 (to turn restarts off, set restart = [])".into(),
            );
        }
        if self.backoff_initial_secs > self.backoff_max_secs {
            return Err(format!(
                "backoff_initial_secs ({}) must not be above backoff_max_secs ({})",
                self.backoff_initial_secs, self.backoff_max_secs
            ));
        }
        Ok(self)
    }
}
validated!(RemediationSettings, RawRemediation);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::appliance::ApplianceConfig;
    use crate::config::{Problem, Source};
    use std::path::Path;

    fn parse(text: &str) -> Result<ApplianceConfig, crate::config::ConfigError> {
        Source::new(Path::new("/q.toml"), text).parse()
    }

    #[test]
    fn defaults() {
        let h = parse("").unwrap().health;
        assert_eq!(h.probes, ProbeName::ALL.to_vec());
        assert_eq!(h.interval_secs, 10);
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
        assert_eq!(h.s3.timeout_ms, 2000);
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
    }

    #[test]
    fn minio_health_urls_follow_its_address() {
        assert_eq!(
            minio_health_urls(":9000"),
            [
                "http://127.0.0.1:9000/minio/health/live",
                "http://127.0.0.1:9000/minio/health/ready"
            ]
        );
        assert_eq!(
            minio_health_urls("10.1.2.3:9100")[0],
            "http://10.1.2.3:9100/minio/health/live"
        );
        assert_eq!(
            minio_health_urls("[::]:9000")[1],
            "http://[::1]:9000/minio/health/ready"
        );
        assert_eq!(
            minio_health_urls("[2a02::1]:9000")[0],
            "http://[2a02::1]:9000/minio/health/live"
        );
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("qsfs.env");
        assert_eq!(minio_address(&env), ":9000");
        std::fs::write(
            &env,
            "ZDB_DATASIZE=67108864\nMINIO_ADDRESS=127.0.0.1:9100\n",
        )
        .unwrap();
        assert_eq!(minio_address(&env), "127.0.0.1:9100");
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
