//! The probes, one module per component, and [`Probes`], which runs them with their timeouts.
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

use super::config::{HealthSettings, ProbeName};
use super::{Outcome, State};
pub use crate::clock::human;
use crate::config::appliance::{ApplianceConfig, Paths};
pub use crate::lane::{Lane, LaneError};
use crate::systemd::UnitControl;
use std::time::{Duration, Instant};

/// Extra time the outer safety timeout grants a probe beyond its own timeout.
const GRACE: Duration = Duration::from_millis(500);

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

/// Every probe, set up once from the appliance config (`check` uses it for one round, `serve`
/// for every round).
pub struct Probes<U> {
    settings: HealthSettings,
    paths: Paths,
    units: Result<U, String>,
    zdb: Lane,
    mount: Lane,
    disk: Lane,
    s3: s3::S3Probe,
}

impl<U: UnitControl + Sync> Probes<U> {
    /// The probes of `config`. `units` is the service manager, or why it cannot be reached
    /// (the units probe then reports unknown).
    pub fn new(config: &ApplianceConfig, units: Result<U, String>) -> Self {
        Probes {
            settings: config.health.clone(),
            paths: config.paths.clone(),
            units,
            zdb: Lane::new(),
            mount: Lane::new(),
            disk: Lane::new(),
            s3: s3::S3Probe::new(
                &config.health.s3,
                &crate::health::config::minio_address(&config.paths.units_env),
            ),
        }
    }

    /// The settings these probes use.
    pub fn settings(&self) -> &HealthSettings {
        &self.settings
    }

    /// The service manager, when it could be reached.
    pub fn unit_control(&self) -> Option<&U> {
        self.units.as_ref().ok()
    }

    /// Runs one probe, bounded by its timeout (plus a little grace as a safety net).
    pub async fn run(&self, probe: ProbeName) -> Finding {
        let started = Instant::now();
        let timeout = self.settings.timeout(probe);
        let outcome = match tokio::time::timeout(timeout + GRACE, self.run_unbounded(probe)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::new(
                State::Unknown,
                format!("the probe did not finish within {}", human(timeout)),
            ),
        };
        Finding {
            probe,
            outcome,
            duration: started.elapsed(),
        }
    }

    async fn run_unbounded(&self, probe: ProbeName) -> Outcome {
        let s = &self.settings;
        let timeout = s.timeout(probe);
        match probe {
            ProbeName::Units => match &self.units {
                Ok(control) => units::probe(control, &s.units).await,
                Err(e) => Outcome::new(State::Unknown, format!("cannot reach systemd: {e}")),
            },
            ProbeName::Zdb => zdb::probe(&self.zdb, &self.paths.zdb_socket, &s.zdb, timeout).await,
            ProbeName::Mount => mount::probe(&self.mount, &self.paths.mountpoint, timeout).await,
            ProbeName::S3 => self.s3.probe().await,
            ProbeName::Zstor => zstor::probe(&s.zstor.socket, timeout).await,
            ProbeName::Monitor => monitor::probe(&s.monitor),
            ProbeName::Disk => {
                disk::probe(
                    &self.disk,
                    &self.paths.data_dir,
                    &self.paths.index_dir,
                    &s.disk,
                    timeout,
                )
                .await
            }
        }
    }

    /// Runs the probes in `which` (in report order, duplicates ignored) concurrently.
    pub async fn run_all(&self, which: &[ProbeName]) -> Vec<Finding> {
        let pick = |p: ProbeName| async move {
            if which.contains(&p) {
                Some(self.run(p).await)
            } else {
                None
            }
        };
        let (a, b, c, d, e, f, g) = tokio::join!(
            pick(ProbeName::Units),
            pick(ProbeName::Zdb),
            pick(ProbeName::Mount),
            pick(ProbeName::S3),
            pick(ProbeName::Zstor),
            pick(ProbeName::Monitor),
            pick(ProbeName::Disk),
        );
        [a, b, c, d, e, f, g].into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
