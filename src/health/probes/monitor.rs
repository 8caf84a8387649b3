//! zstor_monitor: the status it publishes (`/run/qsfs/monitor-status.json`): upload backlog,
//! age of the oldest unverified file, backend states.
//!
//! * ok: a fresh status, a small backlog, every backend healthy;
//! * degraded: a backlog of `backlog_degraded_files` or more, a file unverified for
//!   `unverified_degraded_secs`, spool jobs set aside in the spool's `bad/`, a backend that
//!   is not healthy (low space, unknown, unreachable while others of its kind remain), or
//!   work of the monitor that fails now (writing its state database, reconciliation,
//!   eviction: named, with the error);
//! * failed: no status, a status older than `stale_after_secs` (the monitor is not running),
//!   a file unverified for `unverified_failed_secs`, or every data (or meta) backend unreachable;
//! * unknown: the status cannot be read or has another schema version.
//!
//! The monitor's own upload `last_error` text (zstor's output) is not repeated here; the
//! errors of its state database, reconciliation and eviction (paths and OS errors) are.

use crate::config::{absolute_path, secs};
use crate::health::probes::human;
use crate::health::{worst, Outcome, Part, State};
use crate::monitor::status::{BackendKind, BackendState, MonitorStatus, SCHEMA_VERSION};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[health.monitor]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorSettings {
    /// Longest reading the status may take (`timeout_ms`, milliseconds). Default 1000.
    #[serde(rename = "timeout_ms", deserialize_with = "super::timeout_ms")]
    pub timeout: Duration,
    /// The status file zstor_monitor publishes. Default [`crate::layout::MONITOR_STATUS`].
    #[serde(deserialize_with = "absolute_path")]
    pub status_file: PathBuf,
    /// A status older than this (`stale_after_secs`) means the monitor is not running.
    /// Default 10 s.
    #[serde(rename = "stale_after_secs", deserialize_with = "secs")]
    pub stale_after: Duration,
    /// This many files waiting for upload or more is degraded. Default 1000.
    pub backlog_degraded_files: u64,
    /// A file unverified for this long (`unverified_degraded_secs`) is degraded. Default 1 h.
    #[serde(rename = "unverified_degraded_secs", deserialize_with = "secs")]
    pub unverified_degraded: Duration,
    /// ... and for this long (`unverified_failed_secs`), failed. Default 1 day.
    #[serde(rename = "unverified_failed_secs", deserialize_with = "secs")]
    pub unverified_failed: Duration,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        MonitorSettings {
            timeout: Duration::from_millis(1000),
            status_file: crate::layout::MONITOR_STATUS.into(),
            stale_after: Duration::from_secs(10),
            backlog_degraded_files: 1000,
            unverified_degraded: Duration::from_secs(3600),
            unverified_failed: Duration::from_secs(86400),
        }
    }
}

impl MonitorSettings {
    /// The checks that span several keys of the table.
    pub fn validate(&self) -> Result<(), String> {
        if self.unverified_degraded > self.unverified_failed {
            return Err(format!(
                "unverified_degraded_secs ({}) must not be above unverified_failed_secs ({})",
                self.unverified_degraded.as_secs(),
                self.unverified_failed.as_secs()
            ));
        }
        Ok(())
    }
}

/// Reads and judges the published status.
pub fn probe(settings: &MonitorSettings) -> Outcome {
    let path = &settings.status_file;
    let status = match MonitorStatus::read(path) {
        Ok(status) => status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Outcome::new(
                State::Failed,
                format!("no status at {} (is qsfs-monitor running?)", path.display()),
            )
        }
        Err(e) => {
            return Outcome::new(
                State::Unknown,
                format!("cannot read {}: {e}", path.display()),
            )
        }
    };
    evaluate(&status, crate::clock::now_unix_ms(), settings)
}

/// The published status, when it can be read and is not stale.
pub fn fresh_status(settings: &MonitorSettings) -> Option<MonitorStatus> {
    let status = MonitorStatus::read(&settings.status_file).ok()?;
    stale(&status, crate::clock::now_unix_ms(), settings)
        .is_none()
        .then_some(status)
}

/// How old `status` is at `now_unix_ms`, when that is older than `stale_after_secs`.
fn stale(status: &MonitorStatus, now_unix_ms: u64, settings: &MonitorSettings) -> Option<Duration> {
    let age = Duration::from_millis(now_unix_ms.saturating_sub(status.updated_unix_ms));
    (age > settings.stale_after).then_some(age)
}

/// Judges `status` at `now_unix_ms`.
pub fn evaluate(status: &MonitorStatus, now_unix_ms: u64, settings: &MonitorSettings) -> Outcome {
    if status.schema_version != SCHEMA_VERSION {
        return Outcome::new(
            State::Unknown,
            format!(
                "status schema version {} (this qsfs-health reads {SCHEMA_VERSION})",
                status.schema_version
            ),
        );
    }
    if let Some(age) = stale(status, now_unix_ms, settings) {
        return Outcome::new(
            State::Failed,
            format!(
                "status is {} old (qsfs-monitor is not publishing)",
                human(age)
            ),
        );
    }
    let mut parts = vec![uploads(status, settings)];
    if let Some(flush) = zdbfs_flush(status, now_unix_ms) {
        parts.push(flush);
    }
    let failing: Vec<Part> = status
        .errors
        .failing()
        .map(|(name, failure)| {
            let since = Duration::from_millis(now_unix_ms.saturating_sub(failure.since_unix_ms));
            Part::new(
                name,
                State::Degraded,
                format!(
                    "failing for {} ({} in a row): {}",
                    human(since),
                    failure.failures_in_a_row,
                    failure.error
                ),
            )
        })
        .collect();
    let mut backend_problems = Vec::new();
    for kind in [BackendKind::Data, BackendKind::Meta] {
        let of_kind: Vec<_> = status.backends.iter().filter(|b| b.kind == kind).collect();
        let unreachable = of_kind
            .iter()
            .filter(|b| b.state == BackendState::Unreachable)
            .count();
        let unhealthy = of_kind
            .iter()
            .filter(|b| b.state != BackendState::Healthy)
            .count();
        let name = kind.as_str();
        if !of_kind.is_empty() && unreachable == of_kind.len() {
            backend_problems.push((
                State::Failed,
                format!("every {name} backend is unreachable"),
            ));
        } else if unhealthy > 0 {
            backend_problems.push((
                State::Degraded,
                format!(
                    "{unhealthy} of {} {name} backends not healthy",
                    of_kind.len()
                ),
            ));
        }
    }
    for backend in &status.backends {
        let (state, word) = match backend.state {
            BackendState::Healthy => (State::Ok, "healthy"),
            BackendState::LowSpace => (State::Degraded, "low space"),
            BackendState::Unknown => (State::Unknown, "unknown"),
            BackendState::Unreachable => (State::Failed, "unreachable"),
        };
        let fill = backend
            .fill_percent
            .map(|f| format!(", {f:.1}% full"))
            .unwrap_or_default();
        let why = backend
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        parts.push(Part::new(
            format!("{} {}", backend.kind, backend.label),
            state,
            format!("{word}{fill}{why}"),
        ));
    }
    let flush_state = parts
        .iter()
        .find(|p| p.name == "zdbfs flush")
        .map(|p| p.state);
    let state = worst(
        std::iter::once(parts[0].state)
            .chain(flush_state)
            .chain(failing.iter().map(|p| p.state))
            .chain(backend_problems.iter().map(|(s, _)| *s)),
    );
    let mut reasons = vec![parts[0].reason.clone()];
    if status.backends.is_empty() {
        reasons.push("no backends reported".to_string());
    } else if backend_problems.is_empty() {
        reasons.push(format!("{} backends healthy", status.backends.len()));
    } else {
        reasons.extend(backend_problems.into_iter().map(|(_, r)| r));
    }
    if let Some(rebuild) = &status.rebuild {
        reasons.push(format!("rebuilding {}/{}", rebuild.done, rebuild.total));
    }
    if let Some(flush) = parts
        .iter()
        .find(|p| p.name == "zdbfs flush" && p.state != State::Ok)
    {
        reasons.push(format!("zdbfs flush {}", flush.reason));
    }
    reasons.extend(failing.iter().map(|p| format!("{} {}", p.name, p.reason)));
    parts.extend(failing);
    Outcome::new(state, reasons.join("; ")).with_parts(parts)
}

/// The periodic flush of zdbfs's cache: degraded while it fails (acknowledged writes are then
/// only in zdbfs's memory).
fn zdbfs_flush(status: &MonitorStatus, now_unix_ms: u64) -> Option<Part> {
    let zdbfs = status
        .zdbfs
        .as_ref()
        .filter(|z| z.flush_interval_secs > 0)?;
    Some(match (&zdbfs.last_flush_error, zdbfs.last_flush_unix_ms) {
        (Some(error), _) => Part::new(
            "zdbfs flush",
            State::Degraded,
            format!(
                "failing ({} in a row): {error}",
                zdbfs.flush_failures_in_a_row
            ),
        ),
        (None, Some(at)) => Part::new(
            "zdbfs flush",
            State::Ok,
            format!(
                "last {} ago",
                human(Duration::from_millis(now_unix_ms.saturating_sub(at)))
            ),
        ),
        (None, None) => Part::new("zdbfs flush", State::Ok, "no zdbfs mount to flush yet"),
    })
}

fn uploads(status: &MonitorStatus, settings: &MonitorSettings) -> Part {
    let u = &status.uploads;
    let mut state = State::Ok;
    let mut reason = format!("{} files waiting for upload", u.queued_files);
    if u.queued_files >= settings.backlog_degraded_files {
        state = State::Degraded;
    }
    match u.oldest_unverified_age_secs {
        Some(age) => {
            reason.push_str(&format!(
                ", oldest unverified {}",
                human(Duration::from_secs(age))
            ));
            if age >= settings.unverified_failed.as_secs() {
                state = State::Failed;
            } else if age >= settings.unverified_degraded.as_secs() {
                state = state.max(State::Degraded);
            }
        }
        None => reason.push_str(", all verified"),
    }
    if u.unverified_files > 0 {
        reason.push_str(&format!(
            ", {} of {} tracked files unverified",
            u.unverified_files, u.tracked_files
        ));
    }
    if u.failed_total > 0 {
        reason.push_str(&format!(", {} failed attempts", u.failed_total));
    }
    if u.damaged_files > 0 {
        state = state.max(State::Degraded);
        reason.push_str(&format!(
            ", {} damaged local copies set aside (their remote copies kept; see the journal)",
            u.damaged_files
        ));
    }
    if u.bad_jobs > 0 {
        state = state.max(State::Degraded);
        reason.push_str(&format!(", {} spool jobs set aside in bad/", u.bad_jobs));
    }
    Part::new("uploads", state, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::status::{BackendStatus, CacheStatus, UploadStatus};

    fn backend(kind: BackendKind, state: BackendState) -> BackendStatus {
        BackendStatus {
            label: "[::1]:9900/ns".into(),
            kind,
            state,
            since_unix_ms: 0,
            fill_percent: None,
            reason: None,
        }
    }

    fn status(queued: u64, oldest: Option<u64>, backends: Vec<BackendStatus>) -> MonitorStatus {
        MonitorStatus {
            schema_version: SCHEMA_VERSION,
            pid: 1,
            started_unix_ms: 0,
            updated_unix_ms: 1_000_000,
            uploads: UploadStatus {
                queued_files: queued,
                oldest_unverified_age_secs: oldest,
                last_error: Some("secret-looking text".into()),
                ..UploadStatus::default()
            },
            cache: CacheStatus::default(),
            backends,
            rebuild: None,
            zdbfs: None,
            errors: Default::default(),
        }
    }

    #[test]
    fn judges_backlog_age_and_backends() {
        let s = MonitorSettings::default();
        let healthy = || {
            vec![
                backend(BackendKind::Data, BackendState::Healthy),
                backend(BackendKind::Meta, BackendState::Healthy),
            ]
        };
        let o = evaluate(&status(2, Some(30), healthy()), 1_001_000, &s);
        assert_eq!(o.state, State::Ok, "{o:?}");
        assert_eq!(
            o.reason,
            "2 files waiting for upload, oldest unverified 30.0 s; 2 backends healthy"
        );
        assert!(!format!("{o:?}").contains("secret-looking"));
        // A damaged local copy set aside.
        let mut damaged = status(0, None, healthy());
        damaged.uploads.damaged_files = 1;
        let o = evaluate(&damaged, 1_000_000, &s);
        assert_eq!(o.state, State::Degraded);
        assert!(
            o.reason.contains("1 damaged local copies set aside"),
            "{}",
            o.reason
        );
        // Stale.
        let o = evaluate(&status(0, None, healthy()), 1_000_000 + 11_000, &s);
        assert_eq!(o.state, State::Failed);
        assert!(o.reason.contains("not publishing"), "{}", o.reason);
        // Backlog and age.
        assert_eq!(
            evaluate(&status(1000, None, healthy()), 1_000_000, &s).state,
            State::Degraded
        );
        assert_eq!(
            evaluate(&status(1, Some(3600), healthy()), 1_000_000, &s).state,
            State::Degraded
        );
        assert_eq!(
            evaluate(&status(1, Some(86400), healthy()), 1_000_000, &s).state,
            State::Failed
        );
        // Backends.
        let one_down = vec![
            backend(BackendKind::Data, BackendState::Healthy),
            backend(BackendKind::Data, BackendState::Unreachable),
        ];
        let o = evaluate(&status(0, None, one_down), 1_000_000, &s);
        assert_eq!(o.state, State::Degraded);
        assert!(o.reason.contains("1 of 2 data backends not healthy"));
        assert_eq!(o.parts[2].state, State::Failed);
        let all_down = vec![backend(BackendKind::Meta, BackendState::Unreachable)];
        let o = evaluate(&status(0, None, all_down), 1_000_000, &s);
        assert_eq!(o.state, State::Failed);
        // Work of the monitor that fails: degraded, named, with its error.
        let mut failing = status(3, Some(30), healthy());
        failing.uploads.tracked_files = 10;
        failing.uploads.unverified_files = 3;
        failing.errors.state_database = Some(crate::monitor::status::Failure {
            error: "No space left on device (os error 28)".into(),
            since_unix_ms: 940_000,
            failures_in_a_row: 4,
        });
        let o = evaluate(&failing, 1_000_000, &s);
        assert_eq!(o.state, State::Degraded, "{o:?}");
        assert_eq!(
            o.reason,
            "3 files waiting for upload, oldest unverified 30.0 s, 3 of 10 tracked files \
             unverified; 2 backends healthy; state database failing for 60.0 s (4 in a row): \
             No space left on device (os error 28)"
        );
        let part = o.parts.iter().find(|p| p.name == "state database").unwrap();
        assert_eq!(part.state, State::Degraded);
        // Spool jobs set aside.
        let mut bad = status(0, None, healthy());
        bad.uploads.bad_jobs = 2;
        let o = evaluate(&bad, 1_000_000, &s);
        assert_eq!(o.state, State::Degraded);
        assert!(
            o.reason.contains("2 spool jobs set aside in bad/"),
            "{}",
            o.reason
        );
        let mut other = status(0, None, vec![]);
        other.schema_version = 99;
        assert_eq!(evaluate(&other, 1_000_000, &s).state, State::Unknown);
    }
}
