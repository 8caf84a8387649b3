//! Prometheus metrics of the monitor, rendered from its published status (served by
//! [`crate::metrics`], off unless `metrics_address` is set).

use super::status::{BackendState, MonitorStatus};
use std::fmt::Write;

/// The metrics text for a status.
pub fn render(status: &MonitorStatus) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    let u = &status.uploads;
    gauge(
        "qsfs_monitor_spool_jobs",
        "Spool jobs not finished yet.",
        u.spool_jobs as f64,
    );
    gauge(
        "qsfs_monitor_upload_queue_files",
        "Files waiting for an upload.",
        u.queued_files as f64,
    );
    gauge(
        "qsfs_monitor_uploads_in_flight",
        "Uploads running now.",
        u.in_flight as f64,
    );
    gauge(
        "qsfs_monitor_oldest_unverified_seconds",
        "Age of the oldest file not yet verified remote (0 when none).",
        u.oldest_unverified_age_secs.unwrap_or(0) as f64,
    );
    gauge(
        "qsfs_monitor_tracked_files",
        "Sealed files known to the monitor.",
        u.tracked_files as f64,
    );
    gauge(
        "qsfs_monitor_verified_files",
        "Files whose local content is verified remote.",
        u.verified_files as f64,
    );
    gauge(
        "qsfs_monitor_cache_used_bytes",
        "Bytes used by evictable data files.",
        status.cache.used_bytes as f64,
    );
    gauge(
        "qsfs_monitor_cache_limit_bytes",
        "max_zdb_data_dir_size in bytes (0: no eviction).",
        status.cache.limit_bytes.unwrap_or(0) as f64,
    );
    gauge(
        "qsfs_monitor_rebuild_remaining_files",
        "Files still to rebuild onto a changed backend set.",
        status.rebuild.as_ref().map_or(0, |r| r.total - r.done) as f64,
    );
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    counter(
        "qsfs_monitor_uploads_verified_total",
        "Uploads verified since the start.",
        u.verified_total,
    );
    counter(
        "qsfs_monitor_upload_failures_total",
        "Failed upload attempts since the start.",
        u.failed_total,
    );
    counter(
        "qsfs_monitor_evictions_total",
        "Files evicted since the start.",
        status.cache.evicted_total,
    );
    let _ = writeln!(out, "# HELP qsfs_monitor_backend_state 1 for the state each backend is in.\n# TYPE qsfs_monitor_backend_state gauge");
    for backend in &status.backends {
        for (state, name) in [
            (BackendState::Healthy, "healthy"),
            (BackendState::LowSpace, "low_space"),
            (BackendState::Unknown, "unknown"),
            (BackendState::Unreachable, "unreachable"),
        ] {
            let kind = match backend.kind {
                super::status::BackendKind::Data => "data",
                super::status::BackendKind::Meta => "meta",
            };
            let _ = writeln!(
                out,
                "qsfs_monitor_backend_state{{backend=\"{}\",kind=\"{kind}\",state=\"{name}\"}} {}",
                backend.label,
                u8::from(backend.state == state)
            );
        }
    }
    out
}
