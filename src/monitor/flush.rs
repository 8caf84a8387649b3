//! Asking zdbfs to write its cache to zdb (the snapshot ioctl) and reading its statistics, on
//! a lane of its own so that a hung zdbfs never blocks the monitor; and recording the result.

use super::status::ZdbfsStatus;
use crate::lane::Lane;
use crate::logging::message_id;
use crate::zdbfs::Stats;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Starts a flush of the zdbfs mounted at `mountpoint`; `None` when nothing is mounted there
/// (nothing is cached). The future gives up after `timeout`.
pub fn start(
    lane: &Lane,
    mountpoint: PathBuf,
    timeout: Duration,
) -> Option<impl Future<Output = Result<Stats, String>>> {
    let started = match crate::zdbfs::is_mounted(&mountpoint) {
        Ok(true) => lane
            .start(move || {
                crate::zdbfs::snapshot(&mountpoint)?;
                crate::zdbfs::statistics(&mountpoint)
            })
            .map_err(|e| format!("the snapshot ioctl: {e}")),
        Ok(false) => return None,
        Err(e) => Err(e),
    };
    Some(async move {
        match started?.wait(Instant::now() + timeout, timeout).await {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(e)) => Err(format!("the snapshot ioctl failed: {e}")),
            Err(e) => Err(format!("the snapshot ioctl: {e}")),
        }
    })
}

/// Records a flush's result in `status`, logging the first failure, every tenth after it and
/// the recovery.
pub fn record(status: &mut ZdbfsStatus, result: Result<Stats, String>, mountpoint: &str) {
    match result {
        Ok(stats) => {
            if status.flush_failures_in_a_row > 0 {
                tracing::info!(
                    qsfs_mountpoint = mountpoint,
                    "zdbfs's cache is written to zdb again"
                );
            }
            status.last_flush_unix_ms = Some(crate::clock::now_unix_ms());
            status.flush_failures_in_a_row = 0;
            status.last_flush_error = None;
            status.stats = Some(stats);
        }
        Err(error) => {
            status.flush_failures_in_a_row += 1;
            if status.flush_failures_in_a_row % 10 == 1 {
                tracing::warn!(
                    message_id = message_id::ZDBFS_FLUSH_FAILED,
                    qsfs_mountpoint = mountpoint,
                    "cannot write zdbfs's cache to zdb ({} times in a row): {error}",
                    status.flush_failures_in_a_row
                );
            }
            status.last_flush_error = Some(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_and_cleared_by_a_success() {
        let mut status = ZdbfsStatus::default();
        record(&mut status, Err("down".into()), "/mnt");
        record(&mut status, Err("down".into()), "/mnt");
        assert_eq!(status.flush_failures_in_a_row, 2);
        assert_eq!(status.last_flush_error.as_deref(), Some("down"));
        record(&mut status, Ok(Stats::default()), "/mnt");
        assert_eq!(status.flush_failures_in_a_row, 0);
        assert!(status.last_flush_error.is_none() && status.last_flush_unix_ms.is_some());
    }

    #[test]
    fn nothing_mounted_means_nothing_to_flush() {
        let dir = tempfile::tempdir().unwrap();
        assert!(start(
            &Lane::new(),
            dir.path().to_path_buf(),
            Duration::from_secs(1)
        )
        .is_none());
    }
}
