//! The probes, one module per component, each with its `[health.<probe>]` settings next to
//! it, and the names that select them ([`ProbeName`]).
//!
//! A probe that needs a blocking call (a stat of a FUSE mount, a statvfs, the sync zdb client,
//! an HTTP request) runs it on a [`Lane`]: a thread of its own whose result is awaited with a
//! timeout and abandoned when the timeout passes, so a hung FUSE mount can never hang the
//! checker. A lane runs one call at a time: while an abandoned call is still blocked, the next
//! round reports that instead of piling up more blocked threads.

pub mod disk;
pub mod monitor;
pub mod mount;
pub mod s3;
pub mod units;
pub mod zdb;
pub mod zstor;

use super::Outcome;
pub use crate::clock::human;
pub use crate::lane::{Lane, LaneError};
use serde::{Deserialize, Deserializer, Serialize};
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
    /// The zstor daemon answers a check on its unix socket.
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

/// One probe's result with its duration.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The probe.
    pub probe: ProbeName,
    /// What it found.
    pub outcome: Outcome,
    /// How long it took.
    pub duration: Duration,
}

/// A probe's `timeout_ms`: between 1 ms and 10 minutes.
fn timeout_ms<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let ms = u64::deserialize(deserializer)?;
    if (1..=600_000).contains(&ms) {
        Ok(Duration::from_millis(ms))
    } else {
        Err(serde::de::Error::custom(
            "must be between 1 and 600000 milliseconds",
        ))
    }
}

/// A threshold in percent (0 to 100).
fn percent<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    crate::config::Percent::deserialize(deserializer).map(|p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_lane_times_out_and_then_reports_the_blocked_call() {
        let lane = Lane::new();
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let err = lane
            .run(Duration::from_millis(50), move || {
                let _ = blocked.recv();
            })
            .await
            .unwrap_err();
        assert_eq!(err, LaneError::TimedOut(Duration::from_millis(50)));
        match lane.run(Duration::from_millis(50), || ()).await {
            Err(LaneError::StillBlocked(_)) => {}
            other => panic!("{other:?}"),
        }
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while lane.run(Duration::from_secs(1), || 7).await != Ok(7) {
            assert!(Instant::now() < deadline, "the lane never became free");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_panicking_call_frees_the_lane() {
        let lane = Lane::new();
        let err = lane
            .run(Duration::from_secs(5), || panic!("probe bug"))
            .await
            .unwrap_err();
        assert!(matches!(err, LaneError::Thread(_)), "{err:?}");
        assert_eq!(lane.run(Duration::from_secs(5), || 1).await, Ok(1));
    }
}
