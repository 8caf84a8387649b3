//! The monitor's runtime status: what `zstor_monitor status` prints and what `qsfs-health`
//! reads.
//!
//! The daemon rewrites this JSON file atomically (temp file, rename) at least once per
//! [`MonitorStatus::PUBLISH_INTERVAL`] while it runs, by default at [`crate::layout::MONITOR_STATUS`] on the
//! runtime tmpfs. A file older than a few intervals means the monitor is not running.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// The version of this format; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// The monitor's state as published for people and scripts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorStatus {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The daemon's pid.
    pub pid: u32,
    /// When the daemon started, unix milliseconds.
    pub started_unix_ms: u64,
    /// When this status was written, unix milliseconds.
    pub updated_unix_ms: u64,
    /// Uploads.
    pub uploads: UploadStatus,
    /// The local cache of data files.
    pub cache: CacheStatus,
    /// Every backend of the zstor config.
    pub backends: Vec<BackendStatus>,
    /// A rebuild onto a changed backend set, while one runs.
    pub rebuild: Option<RebuildStatus>,
    /// The zdbfs cache flushes and zdbfs's statistics.
    #[serde(default)]
    pub zdbfs: Option<ZdbfsStatus>,
    /// What fails now (absent in a status from before it was published: nothing known).
    #[serde(default)]
    pub errors: ErrorStatus,
}

/// The periodic flush of zdbfs's cache (its snapshot ioctl) and its statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZdbfsStatus {
    /// The mountpoint.
    pub mountpoint: std::path::PathBuf,
    /// Seconds between flushes; 0 when flushing is off.
    pub flush_interval_secs: u64,
    /// When the last flush succeeded, unix milliseconds.
    pub last_flush_unix_ms: Option<u64>,
    /// Flushes that failed in a row (0 after a success).
    pub flush_failures_in_a_row: u64,
    /// Why the last flush failed, while flushes fail.
    pub last_flush_error: Option<String>,
    /// zdbfs's statistics, read with the last successful flush.
    pub stats: Option<crate::zdbfs::Stats>,
}

/// The upload pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadStatus {
    /// Spool jobs not yet finished.
    pub spool_jobs: u64,
    /// Files waiting for an upload (including those in flight).
    pub queued_files: u64,
    /// Uploads running now.
    pub in_flight: u64,
    /// Age of the oldest file not yet verified remote, seconds; `None` when all are verified.
    pub oldest_unverified_age_secs: Option<u64>,
    /// Sealed files known to the monitor.
    pub tracked_files: u64,
    /// Of those, verified remote.
    pub verified_files: u64,
    /// Of those, present locally with a content not verified remote: each is queued, or will
    /// be by the next reconciliation (0 in a status from before it was published).
    #[serde(default)]
    pub unverified_files: u64,
    /// Uploads verified since the daemon started.
    pub verified_total: u64,
    /// Failed upload attempts since the daemon started.
    pub failed_total: u64,
    /// The last upload error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Damaged local copies set aside (in `<state_dir>/damaged`) until an operator removes them.
    #[serde(default)]
    pub damaged_files: u64,
    /// Spool jobs set aside in the spool's `bad/` (unusable, never deleted).
    #[serde(default)]
    pub bad_jobs: u64,
}

/// Work of the monitor that fails now, each `None` while it works.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorStatus {
    /// Writing the state database (the monitor reopens it and retries).
    pub state_database: Option<Failure>,
    /// The reconciliation of the files with the state.
    pub reconciliation: Option<Failure>,
    /// The cache eviction.
    pub eviction: Option<Failure>,
}

impl ErrorStatus {
    /// Each failing work with its name (`state database`, `reconciliation`, `eviction`).
    pub fn failing(&self) -> impl Iterator<Item = (&'static str, &Failure)> {
        [
            ("state database", &self.state_database),
            ("reconciliation", &self.reconciliation),
            ("eviction", &self.eviction),
        ]
        .into_iter()
        .filter_map(|(name, failure)| Some((name, failure.as_ref()?)))
    }
}

/// A failure that lasts until the work next succeeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The last error.
    pub error: String,
    /// When the first failure of this run happened, unix milliseconds.
    pub since_unix_ms: u64,
    /// Failed attempts in a row.
    pub failures_in_a_row: u64,
}

impl Failure {
    /// Records one attempt in `slot`: an error starts or extends the failure, a success
    /// (`None`) ends it.
    pub fn track(slot: &mut Option<Failure>, error: Option<String>, now_unix_ms: u64) {
        *slot = error.map(|error| match slot.take() {
            Some(failure) => Failure {
                error,
                failures_in_a_row: failure.failures_in_a_row + 1,
                ..failure
            },
            None => Failure {
                error,
                since_unix_ms: now_unix_ms,
                failures_in_a_row: 1,
            },
        });
    }
}

/// The local cache of data files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheStatus {
    /// Bytes used by the data files of the evictable namespaces.
    pub used_bytes: u64,
    /// `max_zdb_data_dir_size` in bytes; `None` when eviction is off.
    pub limit_bytes: Option<u64>,
    /// Files evicted since the daemon started.
    pub evicted_total: u64,
    /// Why eviction is paused (a backend not answering, a rebuild unfinished), while it is.
    #[serde(default)]
    pub eviction_paused: Option<String>,
}

/// Whether a backend is a data or a metadata backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// A data backend (`[[groups.backends]]`).
    Data,
    /// A metadata backend (`[[meta.config.backends]]`).
    Meta,
}

impl BackendKind {
    /// The name used in JSON, metrics and logs: `data` or `meta`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Data => "data",
            BackendKind::Meta => "meta",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    /// Answers, and has room.
    Healthy,
    /// Answers, but its namespace is fuller than the threshold.
    LowSpace,
    /// Failing for less than the grace period (or not checked yet).
    Unknown,
    /// Failing for longer than the grace period.
    Unreachable,
}

impl BackendState {
    /// Every state, in the order of the metrics.
    pub const ALL: [BackendState; 4] = [
        BackendState::Healthy,
        BackendState::LowSpace,
        BackendState::Unknown,
        BackendState::Unreachable,
    ];

    /// The name used in JSON, metrics and logs: `healthy`, `low_space`, `unknown`,
    /// `unreachable`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Healthy => "healthy",
            BackendState::LowSpace => "low_space",
            BackendState::Unknown => "unknown",
            BackendState::Unreachable => "unreachable",
        }
    }
}

impl std::fmt::Display for BackendState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// `address/namespace`.
    pub label: String,
    /// Data or meta.
    pub kind: BackendKind,
    /// Its state.
    pub state: BackendState,
    /// Since when it is in this state, unix milliseconds.
    pub since_unix_ms: u64,
    /// How full its namespace is, when it has a limit.
    pub fill_percent: Option<f64>,
    /// Why it is not healthy.
    pub reason: Option<String>,
}

/// Progress of a rebuild.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebuildStatus {
    /// Files rebuilt.
    pub done: u64,
    /// Files to rebuild.
    pub total: u64,
}

impl MonitorStatus {
    /// One line for `systemctl status`: "uploads: 3 queued, oldest 12 s; backends 4/4 healthy;
    /// cache 1.2/4.0 GiB".
    pub fn summary_line(&self) -> String {
        let u = &self.uploads;
        let uploads = match u.oldest_unverified_age_secs {
            Some(age) if u.queued_files > 0 => {
                format!("uploads: {} queued, oldest {age} s", u.queued_files)
            }
            _ => "uploads: none queued".to_string(),
        };
        let healthy = self
            .backends
            .iter()
            .filter(|b| b.state == BackendState::Healthy)
            .count();
        let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
        let cache = match self.cache.limit_bytes {
            Some(limit) => format!(
                "cache {:.1}/{:.1} GiB",
                gib(self.cache.used_bytes),
                gib(limit)
            ),
            None => format!("cache {:.1} GiB (no limit)", gib(self.cache.used_bytes)),
        };
        let rebuild = self
            .rebuild
            .as_ref()
            .map(|r| format!("; rebuild {}/{}", r.done, r.total))
            .unwrap_or_default();
        let mut problems: Vec<String> = self
            .errors
            .failing()
            .map(|(name, f)| format!("{name} failing: {}", f.error))
            .collect();
        if u.damaged_files > 0 {
            problems.push(format!(
                "{} damaged local copies set aside",
                u.damaged_files
            ));
        }
        if u.bad_jobs > 0 {
            problems.push(format!("{} spool jobs in bad/", u.bad_jobs));
        }
        if let Some(why) = &self.cache.eviction_paused {
            problems.push(format!("eviction paused: {why}"));
        }
        let problems: String = problems.iter().map(|p| format!("; {p}")).collect();
        format!(
            "{uploads}; backends {healthy}/{} healthy; {cache}{rebuild}{problems}",
            self.backends.len()
        )
    }

    /// How often the daemon rewrites the file.
    pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(2);

    /// Parses a status of a version this build reads ([`SCHEMA_VERSION`]; there was no
    /// earlier one).
    pub fn from_json(bytes: &[u8]) -> Result<Self, crate::wire::Error> {
        crate::wire::parse(bytes, "monitor status", 1..=SCHEMA_VERSION)
    }

    /// Reads a published status.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        Ok(MonitorStatus::from_json(&std::fs::read(path)?)?)
    }

    /// How old this status is.
    pub fn age(&self) -> Duration {
        Duration::from_millis(crate::clock::now_unix_ms().saturating_sub(self.updated_unix_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = include_str!("../../tests/fixtures/monitor/status-v1.json");

    #[test]
    fn reads_the_v1_fixture() {
        let s = MonitorStatus::from_json(V1.as_bytes()).unwrap();
        assert_eq!(s.schema_version, 1);
        assert_eq!(s.uploads.queued_files, 5);
        assert_eq!(s.uploads.bad_jobs, 2);
        assert_eq!(s.backends[1].kind, BackendKind::Meta);
        assert_eq!(s.backends[1].state, BackendState::Unreachable);
        assert_eq!(s.rebuild, Some(RebuildStatus { done: 7, total: 10 }));
        let zdbfs = s.zdbfs.as_ref().unwrap();
        assert_eq!(zdbfs.stats.as_ref().unwrap().syscalls[14], 15);
        let failing: Vec<_> = s
            .errors
            .failing()
            .map(|(name, f)| (name, f.failures_in_a_row))
            .collect();
        assert_eq!(failing, [("state database", 3)]);
        let line = s.summary_line();
        assert!(line.contains("; state database failing: "), "{line}");
        assert!(line.ends_with("; 2 spool jobs in bad/"), "{line}");
        // Today's writer writes the fixture's form, byte for byte.
        assert_eq!(serde_json::to_string_pretty(&s).unwrap() + "\n", V1);
        // A status of a monitor from before zdbfs was watched has no `zdbfs`.
        let mut older: serde_json::Value = serde_json::from_str(V1).unwrap();
        older.as_object_mut().unwrap().remove("zdbfs");
        // ... nor, from before they were published, `errors`, `unverified_files`,
        // `damaged_files`, `bad_jobs` and `eviction_paused`.
        older.as_object_mut().unwrap().remove("errors");
        let uploads = older["uploads"].as_object_mut().unwrap();
        uploads.remove("unverified_files");
        uploads.remove("damaged_files");
        uploads.remove("bad_jobs");
        older["cache"]
            .as_object_mut()
            .unwrap()
            .remove("eviction_paused");
        let s = MonitorStatus::from_json(older.to_string().as_bytes()).unwrap();
        assert_eq!(s.zdbfs, None);
        assert_eq!(s.errors, ErrorStatus::default());
        assert_eq!(s.uploads.unverified_files, 0);
        assert_eq!(s.uploads.damaged_files, 0);
        assert_eq!(s.uploads.bad_jobs, 0);
        assert_eq!(s.cache.eviction_paused, None);
    }

    #[test]
    fn a_failure_lasts_until_a_success() {
        let mut slot = None;
        Failure::track(&mut slot, Some("full".into()), 10);
        Failure::track(&mut slot, Some("still full".into()), 20);
        assert_eq!(
            slot,
            Some(Failure {
                error: "still full".into(),
                since_unix_ms: 10,
                failures_in_a_row: 2
            })
        );
        Failure::track(&mut slot, None, 30);
        assert_eq!(slot, None);
    }

    #[test]
    fn refuses_a_future_version() {
        let future = crate::wire::with_version(V1, SCHEMA_VERSION + 1);
        let e = MonitorStatus::from_json(future.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "monitor status schema_version 2 is not one this build reads (1..=1); \
             was it written by a newer qsfs?"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        std::fs::write(&path, future).unwrap();
        let e = MonitorStatus::read(&path).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("newer qsfs"), "{e}");
    }
}
