//! The zdbfs mount: is the mountpoint the expected FUSE mount (`/proc/self/mountinfo`), does a
//! stat answer within the timeout, or is it a stale "transport endpoint is not connected" mount
//! left by a FUSE process that died.
//!
//! * ok: a `fuse` or `fuse.*` mount whose stat and statvfs answer in time;
//! * failed, a restart may help: nothing mounted, a stale mount (ENOTCONN), a stat that does
//!   not answer in time (a hung FUSE process), or any other stat error;
//! * failed, no restart: something other than FUSE is mounted there;
//! * unknown: mountinfo cannot be read, or the probe thread could not run.
//!
//! The stat runs on a [`Lane`]: a hung FUSE mount blocks the calling thread in the kernel, so
//! the thread is abandoned after the timeout (the next round reports it as still blocked rather
//! than starting another).

use super::{human, Lane, LaneError};
use crate::health::{Outcome, State};
use crate::mountinfo;
use serde::Deserialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// `[health.mount]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountSettings {
    /// Longest a stat of the mountpoint may take before the mount counts as hung
    /// (`timeout_ms`, milliseconds). Default 2000.
    #[serde(rename = "timeout_ms", deserialize_with = "super::timeout_ms")]
    pub timeout: Duration,
}

impl Default for MountSettings {
    fn default() -> Self {
        MountSettings {
            timeout: Duration::from_millis(2000),
        }
    }
}

/// What a stat of the mountpoint showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatResult {
    /// It answered.
    Answered(Duration),
    /// ENOTCONN: the FUSE process is gone.
    Stale,
    /// Another error.
    Error(String),
    /// No answer in time (or an earlier stat is still blocked).
    Hung(String),
    /// The probe thread could not run.
    NotRun(String),
}

/// Stats (and statvfs's, which always reaches the FUSE process) `mountpoint` on `lane`.
pub async fn stat(lane: &Lane, mountpoint: &Path, timeout: Duration) -> StatResult {
    let path = mountpoint.to_path_buf();
    let started = Instant::now();
    let call = lane
        .run(timeout, move || -> std::io::Result<()> {
            std::fs::metadata(&path)?;
            nix::sys::statvfs::statvfs(&path)?;
            Ok(())
        })
        .await;
    match call {
        Ok(Ok(())) => StatResult::Answered(started.elapsed()),
        Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOTCONN) => StatResult::Stale,
        Ok(Err(e)) => StatResult::Error(e.to_string()),
        Err(e @ (LaneError::TimedOut(_) | LaneError::StillBlocked(_))) => {
            StatResult::Hung(e.to_string())
        }
        Err(e) => StatResult::NotRun(e.to_string()),
    }
}

/// The probe.
pub async fn probe(lane: &Lane, mountpoint: &Path, timeout: Duration) -> Outcome {
    let shown = mountpoint.display();
    let mountinfo = match mountinfo::read() {
        Ok(text) => text,
        Err(e) => {
            return Outcome::new(
                State::Unknown,
                format!("cannot read /proc/self/mountinfo: {e}"),
            )
        }
    };
    let Some(entry) = mountinfo::at(&mountinfo, mountpoint) else {
        return Outcome::unresponsive(format!("nothing is mounted at {shown}"));
    };
    if !entry.is_fuse() {
        return Outcome::new(
            State::Failed,
            format!("{shown} is a {} mount, not FUSE", entry.fstype),
        );
    }
    match stat(lane, mountpoint, timeout).await {
        StatResult::Answered(took) => {
            Outcome::ok(format!("{} mount answers ({})", entry.fstype, human(took)))
        }
        StatResult::Stale => Outcome::unresponsive(format!(
            "stale mount: transport endpoint is not connected (the {} process is gone)",
            entry.fstype
        )),
        StatResult::Error(e) => Outcome::unresponsive(format!("stat {shown}: {e}")),
        StatResult::Hung(e) => Outcome::unresponsive(format!("hung mount: stat {shown}: {e}")),
        StatResult::NotRun(e) => Outcome::new(State::Unknown, e),
    }
}

/// Lazily unmounts `mountpoint` (`umount2(MNT_DETACH)`): the mount disappears from the tree at
/// once, whatever state its FUSE connection is in. Bounded by `timeout` like every call here.
pub async fn lazy_unmount(mountpoint: &Path, timeout: Duration) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| "the mountpoint contains a NUL byte".to_string())?;
    let call = Lane::new()
        .run(timeout, move || {
            // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
            let rc = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
        .await;
    match call {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("umount2(MNT_DETACH) {}: {e}", mountpoint.display())),
        Err(e) => Err(format!("umount2(MNT_DETACH) {}: {e}", mountpoint.display())),
    }
}
