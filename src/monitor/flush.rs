//! Asking zdbfs to write its cache to zdb (the snapshot ioctl) and reading its statistics, on
//! a lane of its own so that a hung zdbfs never blocks the monitor; and recording the result.
//!
//! zdbfs 0.1.11's ioctl frees its whole cache and answers success whatever its writes to zdb
//! did (seen with the real programs: zdb killed, the ioctl answered its time, zdbfs logged
//! "could not write inode in the backend", the file was gone). So a flush is attempted only
//! while zdb answers `PING` (a zdb busy with a blocking hook would hold the ioctl, and a dead
//! one would make it drop the cache), and counts as a success only if zdb still answers after
//! it.

use super::status::ZdbfsStatus;
use crate::cuts::Cuts;
use crate::lane::Lane;
use crate::logging::message_id;
use crate::zdb::{Client, Endpoint};
use crate::zdbfs::Stats;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The longest zdb may take to answer the `PING` before and after a flush.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Starts a flush of the zdbfs mounted at `mountpoint` over the zdb at `zdb_socket`; `None`
/// when nothing is mounted there (nothing is cached). The future gives up after `timeout`.
pub fn start(
    lane: &Lane,
    mountpoint: PathBuf,
    zdb_socket: PathBuf,
    cuts: Cuts,
    timeout: Duration,
) -> Option<impl Future<Output = Result<Stats, String>>> {
    let zdb = Endpoint::Unix(zdb_socket);
    let ping_timeout = PING_TIMEOUT.min(timeout / 3);
    let ping =
        move || Client::connect_within(&zdb, ping_timeout).and_then(|mut client| client.ping());
    let started = match crate::zdbfs::is_mounted(&mountpoint) {
        Ok(true) => lane
            .start(move || {
                ping().map_err(|e| {
                    format!(
                        "zdb does not answer ({e}): not flushed, zdbfs could not write its cache"
                    )
                })?;
                let flushing = cuts.flushing(timeout).map_err(|e| {
                    format!("cannot mark the flush in {}: {e}", cuts.dir().display())
                })?;
                crate::zdbfs::snapshot(&mountpoint)
                    .map_err(|e| format!("the snapshot ioctl failed: {e}"))?;
                drop(flushing);
                ping().map_err(|e| {
                    format!(
                        "zdb stopped answering during the flush ({e}): zdbfs may have dropped \
                         cached writes it could not make"
                    )
                })?;
                crate::zdbfs::statistics(&mountpoint)
                    .map_err(|e| format!("zdbfs's statistics: {e}"))
            })
            .map_err(|e| format!("the snapshot ioctl: {e}")),
        Ok(false) => return None,
        Err(e) => Err(e),
    };
    Some(async move {
        match started?.wait(Instant::now() + timeout, timeout).await {
            Ok(result) => result,
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
            dir.path().join("zdb.sock"),
            Cuts::new(dir.path()),
            Duration::from_secs(1)
        )
        .is_none());
    }
}
