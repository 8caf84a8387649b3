//! Prometheus metrics of the monitor, rendered from its published status (served by
//! [`crate::metrics`], off unless `metrics_address` is set).

use super::status::{BackendState, MonitorStatus};
use crate::metrics::{Exposition, Kind};

/// The metrics text for a status.
pub fn render(status: &MonitorStatus) -> String {
    let mut out = Exposition::new();
    let mut gauge = |name: &str, help: &str, value: u64| out.single(name, Kind::Gauge, help, value);
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
        "qsfs_monitor_damaged_files",
        "Damaged local copies set aside (their verified remote copies kept).",
        u.damaged_files,
    );
    gauge(
        "qsfs_monitor_bad_jobs",
        "Spool jobs set aside in the spool's bad/ (unusable, never deleted).",
        u.bad_jobs,
    );
    gauge(
        "qsfs_monitor_unverified_files",
        "Tracked files present locally whose content is not verified remote.",
        u.unverified_files,
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
        |name: &str, help: &str, value: u64| out.single(name, Kind::Counter, help, value);
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
    let e = &status.errors;
    let failing = [
        ("state_database", &e.state_database),
        ("reconciliation", &e.reconciliation),
        ("eviction", &e.eviction),
    ]
    .into_iter()
    .map(|(work, failure)| {
        let count = failure.as_ref().map_or(0, |f| f.failures_in_a_row);
        (vec![("work", work.to_string())], count.into())
    })
    .collect();
    out.family(
        "qsfs_monitor_failures_in_a_row",
        Kind::Gauge,
        "Failed attempts in a row of the monitor's own work (0 while it works).",
        failing,
    );
    let mut states = Vec::new();
    for backend in &status.backends {
        for state in BackendState::ALL {
            let labels = vec![
                ("backend", backend.label.clone()),
                ("kind", backend.kind.to_string()),
                ("state", state.to_string()),
            ];
            states.push((labels, u64::from(backend.state == state).into()));
        }
    }
    out.family(
        "qsfs_monitor_backend_state",
        Kind::Gauge,
        "1 for the state each backend is in.",
        states,
    );
    out.render()
}

/// zdbfs's flush and statistics, with upstream zstor's `fs_*` names for the statistics.
fn render_zdbfs(out: &mut Exposition, zdbfs: &super::status::ZdbfsStatus) {
    let mut metric =
        |name: &str, kind: Kind, help: &str, value: u64| out.single(name, kind, help, value);
    metric(
        "qsfs_monitor_zdbfs_last_flush_timestamp_seconds",
        Kind::Gauge,
        "When zdbfs's cache was last written to zdb (0: never).",
        zdbfs.last_flush_unix_ms.unwrap_or(0) / 1000,
    );
    metric(
        "qsfs_monitor_zdbfs_flush_failures",
        Kind::Gauge,
        "Flushes of zdbfs's cache that failed in a row.",
        zdbfs.flush_failures_in_a_row,
    );
    let Some(stats) = &zdbfs.stats else { return };
    for (name, kind, help, value) in [
        (
            "fs_fuse_reqs",
            Kind::Untyped,
            "FUSE requests served by zdbfs.",
            stats.fuse_reqs,
        ),
        (
            "fs_cache_hits",
            Kind::Untyped,
            "zdbfs block cache hits.",
            stats.cache_hit,
        ),
        (
            "fs_cache_miss",
            Kind::Untyped,
            "zdbfs block cache misses.",
            stats.cache_miss,
        ),
        (
            "fs_bytes_read",
            Kind::Untyped,
            "Bytes read through zdbfs.",
            stats.read_bytes,
        ),
        (
            "fs_bytes_written",
            Kind::Untyped,
            "Bytes written through zdbfs.",
            stats.write_bytes,
        ),
        (
            "fs_fuse_errors",
            Kind::Untyped,
            "Errors answered by zdbfs.",
            stats.errors,
        ),
        (
            "fs_cache_full",
            Kind::Gauge,
            "Times zdbfs's cache was full.",
            stats.cache_full,
        ),
        (
            "fs_cache_linear_flush",
            Kind::Gauge,
            "Linear flushes of zdbfs's cache.",
            stats.cache_linear_flush,
        ),
        (
            "fs_cache_random_flush",
            Kind::Gauge,
            "Random flushes of zdbfs's cache.",
            stats.cache_random_flush,
        ),
        (
            "fs_cache_branches",
            Kind::Gauge,
            "zdbfs cache branches.",
            stats.cache_branches,
        ),
        (
            "fs_cache_branches_allocated",
            Kind::Gauge,
            "zdbfs cache branches allocated.",
            stats.cache_branches_allocated,
        ),
        (
            "fs_cache_entries",
            Kind::Gauge,
            "zdbfs cache entries.",
            stats.cache_entries,
        ),
        (
            "fs_cache_blocks",
            Kind::Gauge,
            "zdbfs cache blocks.",
            stats.cache_blocks,
        ),
        (
            "fs_cache_blocksize",
            Kind::Gauge,
            "zdbfs cache block size.",
            stats.cache_blocksize,
        ),
    ] {
        metric(name, kind, help, value);
    }
    let syscalls = crate::zdbfs::SYSCALLS
        .iter()
        .zip(stats.syscalls)
        .map(|(syscall, count)| (vec![("syscall", syscall.to_string())], count.into()))
        .collect();
    out.family(
        "fs_syscalls",
        Kind::Untyped,
        "zdbfs syscalls served, per syscall.",
        syscalls,
    );
}
#[cfg(test)]
mod tests {
    #[test]
    fn renders_the_fixture_status() {
        let status = super::MonitorStatus::from_json(
            include_str!("../../tests/fixtures/monitor/status-v1.json").as_bytes(),
        )
        .unwrap();
        // The text of the hand-written renderer this replaced, but for `# TYPE untyped` (was
        // `counter`) on the `fs_*` counters without `_total`.
        assert_eq!(
            super::render(&status),
            include_str!("../../tests/fixtures/monitor/metrics-v1.txt")
        );
    }
}
