//! Prometheus metrics of the monitor, rendered from its published status (served by
//! [`crate::metrics`], off unless `metrics_address` is set).

use super::status::{BackendState, MonitorStatus};
use crate::metrics::{family, single};
use std::fmt::Write;

/// The metrics text for a status.
pub fn render(status: &MonitorStatus) -> String {
    let mut out = String::new();
    let mut gauge =
        |name: &str, help: &str, value: u64| single(&mut out, name, "gauge", help, value);
    let u = &status.uploads;
    gauge(
        "qsfs_monitor_spool_jobs",
        "Spool jobs not finished yet.",
        u.spool_jobs,
    );
    gauge(
        "qsfs_monitor_upload_queue_files",
        "Files waiting for an upload.",
        u.queued_files,
    );
    gauge(
        "qsfs_monitor_uploads_in_flight",
        "Uploads running now.",
        u.in_flight,
    );
    gauge(
        "qsfs_monitor_oldest_unverified_seconds",
        "Age of the oldest file not yet verified remote (0 when none).",
        u.oldest_unverified_age_secs.unwrap_or(0),
    );
    gauge(
        "qsfs_monitor_tracked_files",
        "Sealed files known to the monitor.",
        u.tracked_files,
    );
    gauge(
        "qsfs_monitor_verified_files",
        "Files whose local content is verified remote.",
        u.verified_files,
    );
    gauge(
        "qsfs_monitor_cache_used_bytes",
        "Bytes used by evictable data files.",
        status.cache.used_bytes,
    );
    gauge(
        "qsfs_monitor_cache_limit_bytes",
        "max_zdb_data_dir_size in bytes (0: no eviction).",
        status.cache.limit_bytes.unwrap_or(0),
    );
    gauge(
        "qsfs_monitor_rebuild_remaining_files",
        "Files still to rebuild onto a changed backend set.",
        status.rebuild.as_ref().map_or(0, |r| r.total - r.done),
    );
    let mut counter =
        |name: &str, help: &str, value: u64| single(&mut out, name, "counter", help, value);
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
    if let Some(zdbfs) = &status.zdbfs {
        render_zdbfs(&mut out, zdbfs);
    }
    family(
        &mut out,
        "qsfs_monitor_backend_state",
        "gauge",
        "1 for the state each backend is in.",
    );
    for backend in &status.backends {
        for state in BackendState::ALL {
            let _ = writeln!(
                out,
                "qsfs_monitor_backend_state{{backend=\"{}\",kind=\"{}\",state=\"{state}\"}} {}",
                backend.label,
                backend.kind,
                u8::from(backend.state == state)
            );
        }
    }
    out
}

/// zdbfs's flush and statistics, with upstream zstor's `fs_*` names for the statistics.
fn render_zdbfs(out: &mut String, zdbfs: &super::status::ZdbfsStatus) {
    let mut metric =
        |name: &str, kind: &str, help: &str, value: u64| single(out, name, kind, help, value);
    metric(
        "qsfs_monitor_zdbfs_last_flush_timestamp_seconds",
        "gauge",
        "When zdbfs's cache was last written to zdb (0: never).",
        zdbfs.last_flush_unix_ms.unwrap_or(0) / 1000,
    );
    metric(
        "qsfs_monitor_zdbfs_flush_failures",
        "gauge",
        "Flushes of zdbfs's cache that failed in a row.",
        zdbfs.flush_failures_in_a_row,
    );
    let Some(stats) = &zdbfs.stats else { return };
    for (name, kind, help, value) in [
        (
            "fs_fuse_reqs",
            "counter",
            "FUSE requests served by zdbfs.",
            stats.fuse_reqs,
        ),
        (
            "fs_cache_hits",
            "counter",
            "zdbfs block cache hits.",
            stats.cache_hit,
        ),
        (
            "fs_cache_miss",
            "counter",
            "zdbfs block cache misses.",
            stats.cache_miss,
        ),
        (
            "fs_bytes_read",
            "counter",
            "Bytes read through zdbfs.",
            stats.read_bytes,
        ),
        (
            "fs_bytes_written",
            "counter",
            "Bytes written through zdbfs.",
            stats.write_bytes,
        ),
        (
            "fs_fuse_errors",
            "counter",
            "Errors answered by zdbfs.",
            stats.errors,
        ),
        (
            "fs_cache_full",
            "gauge",
            "Times zdbfs's cache was full.",
            stats.cache_full,
        ),
        (
            "fs_cache_linear_flush",
            "gauge",
            "Linear flushes of zdbfs's cache.",
            stats.cache_linear_flush,
        ),
        (
            "fs_cache_random_flush",
            "gauge",
            "Random flushes of zdbfs's cache.",
            stats.cache_random_flush,
        ),
        (
            "fs_cache_branches",
            "gauge",
            "zdbfs cache branches.",
            stats.cache_branches,
        ),
        (
            "fs_cache_branches_allocated",
            "gauge",
            "zdbfs cache branches allocated.",
            stats.cache_branches_allocated,
        ),
        (
            "fs_cache_entries",
            "gauge",
            "zdbfs cache entries.",
            stats.cache_entries,
        ),
        (
            "fs_cache_blocks",
            "gauge",
            "zdbfs cache blocks.",
            stats.cache_blocks,
        ),
        (
            "fs_cache_blocksize",
            "gauge",
            "zdbfs cache block size.",
            stats.cache_blocksize,
        ),
    ] {
        metric(name, kind, help, value);
    }
    family(
        out,
        "fs_syscalls",
        "counter",
        "zdbfs syscalls served, per syscall.",
    );
    for (syscall, count) in crate::zdbfs::SYSCALLS.iter().zip(stats.syscalls) {
        let _ = writeln!(out, "fs_syscalls{{syscall=\"{syscall}\"}} {count}");
    }
}
