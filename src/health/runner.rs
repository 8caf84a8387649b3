//! [`Probes`]: every probe set up once from the config, run with its timeout.

use super::config::{HealthConfig, HealthSettings};
use super::probes::{disk, human, monitor, mount, s3, units, zdb, zstor, Finding, Lane, ProbeName};
use super::{Outcome, State};
use crate::config::appliance::{HookSettings, Paths};
use crate::restore_marks::Marks;
use crate::systemd::UnitControl;
use crate::zdb_busy::{self, Busy};
use std::time::{Duration, Instant};

/// Extra time the outer safety timeout grants a probe beyond its own timeout.
const GRACE: Duration = Duration::from_millis(500);

/// How long a hook may overrun its own deadline (it stops zstor, cleans up and exits) before a
/// zdb that still waits for it counts as hung.
const HOOK_OVERRUN: Duration = Duration::from_secs(30);

/// zdb answers nobody while it waits for a blocking hook: a timeout of zdb, of the mount or of
/// S3 above it then says so and counts towards no restart (a restart would start the read
/// again), for as long as the hook may run by its own deadline.
fn while_zdb_waits(outcome: Outcome, busy: Option<&Busy>, hook: &HookSettings) -> Outcome {
    let Some(busy) = busy.filter(|_| outcome.restart_may_help) else {
        return outcome;
    };
    let deadline = match busy.event.as_str() {
        "namespaces-init" => hook.restore_timeout,
        _ => hook.missing_data_timeout,
    };
    if busy.running_for > deadline + HOOK_OVERRUN {
        return outcome;
    }
    Outcome::new(
        State::Degraded,
        format!(
            "busy: {} for {} s; {}",
            busy.event,
            busy.running_for.as_secs(),
            outcome.reason
        ),
    )
}

/// Every probe, set up once from the appliance config (`check` uses it for one round, `serve`
/// for every round).
pub struct Probes<U> {
    settings: HealthSettings,
    paths: Paths,
    hook: HookSettings,
    units: Result<U, String>,
    zdb: Lane,
    mount: Lane,
    disk: Lane,
    s3: s3::S3Probe,
}

impl<U: UnitControl + Sync> Probes<U> {
    /// The probes of `config`. `units` is the service manager, or why it cannot be reached
    /// (the units probe then reports unknown).
    pub fn new(config: &HealthConfig, units: Result<U, String>) -> Self {
        Probes {
            settings: config.health.clone(),
            paths: config.paths.clone(),
            hook: config.hook.clone(),
            units,
            zdb: Lane::new(),
            mount: Lane::new(),
            disk: Lane::new(),
            s3: s3::S3Probe::new(
                &config.health.s3,
                &s3::minio_address(&config.paths.units_env),
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
        let outcome = match probe {
            ProbeName::Zdb | ProbeName::Mount | ProbeName::S3 => {
                let busy = zdb_busy::current(&self.paths.state_dir);
                while_zdb_waits(outcome, busy.as_ref(), &self.hook)
            }
            _ => outcome,
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
            ProbeName::Zdb => {
                // Neither is a failure a restart fixes: a restart begins the restore again.
                let marks = Marks::new(&self.paths.state_dir);
                if marks.restoring() {
                    Outcome::new(
                        State::Degraded,
                        "zdb restores its namespaces from the backends and starts when done",
                    )
                } else if let Some(reason) = marks.failure() {
                    let reason = format!("zdb does not start: namespaces-init refused: {reason}");
                    Outcome::new(State::Failed, reason)
                } else {
                    zdb::probe(&self.zdb, &self.paths.zdb_socket, &s.zdb, timeout).await
                }
            }
            ProbeName::Mount => mount::probe(&self.mount, &self.paths.mountpoint, timeout).await,
            ProbeName::S3 => self.s3.probe().await,
            ProbeName::Zstor => {
                let rebuild = monitor::fresh_status(&s.monitor).and_then(|status| status.rebuild);
                zstor::probe(&s.zstor.socket, timeout, rebuild.as_ref()).await
            }
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

    #[test]
    fn a_timeout_while_zdb_waits_for_its_hook_is_busy_until_the_hook_overran() {
        let hook = HookSettings::default();
        let busy = |secs| Busy {
            event: "missing-data".into(),
            running_for: Duration::from_secs(secs),
        };
        let hung = || Outcome::unresponsive("PING: no answer within 300 ms");
        let outcome = while_zdb_waits(hung(), Some(&busy(45)), &hook);
        assert_eq!(outcome.state, State::Degraded);
        assert_eq!(
            outcome.reason,
            "busy: missing-data for 45 s; PING: no answer within 300 ms"
        );
        assert!(!outcome.restart_may_help);

        let overran = hook.missing_data_timeout + HOOK_OVERRUN + Duration::from_secs(1);
        let outcome = while_zdb_waits(hung(), Some(&busy(overran.as_secs())), &hook);
        assert!(
            outcome.restart_may_help,
            "a hook past its deadline: zdb is hung"
        );
        assert!(while_zdb_waits(hung(), None, &hook).restart_may_help);

        let restore = Busy {
            event: "namespaces-init".into(),
            running_for: overran,
        };
        assert!(!while_zdb_waits(hung(), Some(&restore), &hook).restart_may_help);

        // What is not a timeout is reported as it is.
        let wrong = Outcome::new(State::Failed, "mode userkey");
        assert_eq!(
            while_zdb_waits(wrong, Some(&busy(5)), &hook).reason,
            "mode userkey"
        );
    }
}
