//! Remediation: restart a unit that is active but fails its probe, through systemd.
//!
//! [`Remediator`] is a plain state machine with the time passed in, one target per probe that
//! has a unit (zdb → `qsfs-zdb`, mount → `qsfs-zdbfs`, s3 → `qsfs-minio`, zstor →
//! `qsfs-zstor`). Its rules, per target:
//!
//! 1. Only failures a restart may fix count (a component that does not answer; see
//!    [`Outcome::restart_may_help`](crate::health::Outcome)). A probe that is fine resets the
//!    count and the backoff.
//! 2. Only rounds in which systemd reports the unit `active` and not in transition count. While
//!    systemd is itself starting, stopping or auto-restarting the unit, nothing is done and the
//!    count starts again; a unit that is inactive or failed is systemd's (or the operator's)
//!    business.
//! 3. After `failures_before_restart` consecutive counted failures, the unit is restarted,
//!    unless fewer than the backoff has passed since its last restart (the backoff doubles
//!    after each restart up to its maximum), or `max_restarts` restarts already happened in the
//!    last `window`: then it gives up (logged once) until the window has room again.
//!
//! [`Remediation`] drives it: it asks a [`UnitControl`] for the unit's state, runs the
//! restart in a task of its own (so probes and the watchdog go on while a restart job runs),
//! and logs every action with a `MESSAGE_ID`. It restarts one unit at a time, upstream first
//! (zstor, zdb, mount, s3: a hung zdb also hangs the mount and S3, and restarting zdb is what
//! helps): while a restart job runs nothing else is decided, and a restart starts every count
//! afresh. Before zdbfs is restarted, [`before_zdbfs_restart`] runs.

use super::config::RemediationSettings;
use super::probes::mount::{self, StatResult};
use super::probes::{Finding, Lane, ProbeName};
use super::State;
use crate::logging::message_id;
use crate::retry::Backoff;
use crate::systemd::{ActiveState, JobResult, UnitControl, UnitStatus};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the state machine's time comes from.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The limits of remediation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive counted failures before a restart.
    pub failures_before_restart: u32,
    /// The wait between two restarts of one unit.
    pub backoff: Backoff,
    /// Most restarts of one unit per window.
    pub max_restarts: u32,
    /// The give-up window.
    pub window: Duration,
}

impl From<&RemediationSettings> for Policy {
    fn from(s: &RemediationSettings) -> Self {
        Policy {
            failures_before_restart: s.failures_before_restart.get(),
            backoff: Backoff::new(s.backoff_initial, s.backoff_max),
            max_restarts: s.max_restarts.get(),
            window: s.window,
        }
    }
}

/// What the state machine decided for one target in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The probe is fine (or its failure is not one a restart fixes).
    Healthy,
    /// Failing; this many consecutive failures so far, fewer than needed.
    Counting(u32),
    /// The unit is not active (inactive, failed): not ours to restart.
    UnitNotActive(String),
    /// systemd is already starting, stopping or restarting the unit.
    SystemdBusy(String),
    /// The unit's state could not be read, so nothing is done.
    UnitUnknown(String),
    /// Would restart, but the backoff has this much left.
    Backoff(Duration),
    /// Gave up: `max_restarts` restarts in the window. `first` is true in the round it gave up.
    GaveUp {
        /// Whether this round is the one that gave up (log it then).
        first: bool,
    },
    /// Restart the unit now; this is the n-th restart in the window.
    Restart(u32),
    /// A restart requested earlier is still running.
    InProgress,
}

#[derive(Debug, Clone)]
struct Target {
    failures: u32,
    restarts: VecDeque<Instant>,
    /// Restarts since the probe was last healthy: the backoff's attempt number.
    backoffs: u32,
    not_before: Option<Instant>,
    gave_up: bool,
}

/// The state machine (see the module documentation).
#[derive(Debug, Clone)]
pub struct Remediator {
    policy: Policy,
    targets: BTreeMap<ProbeName, Target>,
}

impl Remediator {
    /// A state machine with no history.
    pub fn new(policy: Policy) -> Self {
        Remediator {
            policy,
            targets: BTreeMap::new(),
        }
    }

    fn target(&mut self, probe: ProbeName) -> &mut Target {
        self.targets.entry(probe).or_insert_with(|| Target {
            failures: 0,
            restarts: VecDeque::new(),
            backoffs: 0,
            not_before: None,
            gave_up: false,
        })
    }

    /// The probe is fine: reset the count and the backoff.
    pub fn healthy(&mut self, probe: ProbeName) -> Decision {
        let target = self.target(probe);
        target.failures = 0;
        target.backoffs = 0;
        target.not_before = None;
        Decision::Healthy
    }

    /// The probe failed in a way a restart may fix; `unit` is the unit's state from systemd
    /// (or why it could not be read).
    pub fn failing(
        &mut self,
        probe: ProbeName,
        unit: Result<&UnitStatus, &str>,
        now: Instant,
    ) -> Decision {
        let policy = self.policy.clone();
        let target = self.target(probe);
        let status = match unit {
            Ok(status) => status,
            Err(e) => return Decision::UnitUnknown(e.to_string()),
        };
        let states = format!("{} ({})", status.active_state, status.sub_state);
        if status.in_transition() {
            target.failures = 0;
            return Decision::SystemdBusy(states);
        }
        if status.active_state != ActiveState::Active {
            target.failures = 0;
            return Decision::UnitNotActive(states);
        }
        target.failures += 1;
        if target.failures < policy.failures_before_restart {
            return Decision::Counting(target.failures);
        }
        while target
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= policy.window)
        {
            target.restarts.pop_front();
        }
        if target.restarts.len() >= policy.max_restarts as usize {
            let first = !target.gave_up;
            target.gave_up = true;
            return Decision::GaveUp { first };
        }
        if let Some(not_before) = target.not_before {
            if now < not_before {
                return Decision::Backoff(not_before - now);
            }
        }
        target.restarts.push_back(now);
        target.backoffs = target.backoffs.saturating_add(1);
        target.not_before = Some(now + policy.backoff.delay(target.backoffs));
        target.failures = 0;
        target.gave_up = false;
        Decision::Restart(target.restarts.len() as u32)
    }

    /// Consecutive counted failures of `probe`.
    pub fn failures(&self, probe: ProbeName) -> u32 {
        self.targets.get(&probe).map_or(0, |t| t.failures)
    }

    /// Starts every count afresh (after a restart of any unit).
    pub fn reset_counts(&mut self) {
        for target in self.targets.values_mut() {
            target.failures = 0;
        }
    }

    /// Whether remediation of `probe` has given up (until the window has room again).
    pub fn gave_up(&self, probe: ProbeName) -> bool {
        self.targets.get(&probe).is_some_and(|t| t.gave_up)
    }
}

/// The order in which targets are considered: a component before those that depend on it.
const UPSTREAM_FIRST: [ProbeName; 4] = [
    ProbeName::Zstor,
    ProbeName::Zdb,
    ProbeName::Mount,
    ProbeName::S3,
];

/// Counters of one target, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetCounters {
    /// Restarts requested.
    pub requested: u64,
    /// Restarts whose job finished with `done`.
    pub done: u64,
    /// Restarts that failed or did not finish in time.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requested: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
}

/// Drives the [`Remediator`] with a [`UnitControl`] and a [`Clock`] (see the module
/// documentation).
pub struct Remediation<U, C> {
    remediator: Remediator,
    control: U,
    clock: C,
    enabled: Vec<ProbeName>,
    mountpoint: PathBuf,
    call_timeout: Duration,
    job_timeout: Duration,
    in_flight: BTreeMap<ProbeName, tokio::task::JoinHandle<()>>,
    counters: BTreeMap<ProbeName, Arc<Counters>>,
}

impl<U, C> Remediation<U, C>
where
    U: UnitControl + Clone + Send + Sync + 'static,
    C: Clock,
{
    /// Remediation of the probes in `settings.restart`. `call_timeout` bounds each question to
    /// systemd about a unit's state and the stat of `mountpoint` before a restart of zdbfs.
    pub fn new(
        settings: &RemediationSettings,
        control: U,
        clock: C,
        mountpoint: &Path,
        call_timeout: Duration,
    ) -> Self {
        Remediation {
            remediator: Remediator::new(Policy::from(settings)),
            control,
            clock,
            enabled: settings.restart.clone(),
            mountpoint: mountpoint.to_path_buf(),
            call_timeout,
            job_timeout: settings.job_timeout,
            in_flight: BTreeMap::new(),
            counters: BTreeMap::new(),
        }
    }

    /// The state machine.
    pub fn remediator(&self) -> &Remediator {
        &self.remediator
    }

    /// Counters per probe.
    pub fn counters(&self) -> BTreeMap<ProbeName, TargetCounters> {
        self.counters
            .iter()
            .map(|(probe, c)| {
                (
                    *probe,
                    TargetCounters {
                        requested: c.requested.load(Ordering::Relaxed),
                        done: c.done.load(Ordering::Relaxed),
                        failed: c.failed.load(Ordering::Relaxed),
                    },
                )
            })
            .collect()
    }

    /// The probes remediation looks after.
    pub fn enabled(&self) -> &[ProbeName] {
        &self.enabled
    }

    /// One round: decides for every enabled probe in `findings`, upstream first, and starts
    /// at most one restart.
    pub async fn round(&mut self, findings: &[Finding]) -> Vec<(ProbeName, Decision)> {
        self.in_flight.retain(|_, task| !task.is_finished());
        let mut busy = !self.in_flight.is_empty();
        let mut decisions = Vec::new();
        for probe in UPSTREAM_FIRST {
            let Some(unit) = probe.unit() else { continue };
            let Some(finding) = findings.iter().find(|f| f.probe == probe) else {
                continue;
            };
            if !self.enabled.contains(&probe) {
                continue;
            }
            if busy {
                decisions.push((probe, Decision::InProgress));
                continue;
            }
            let outcome = &finding.outcome;
            let decision =
                if outcome.state == State::Failed && outcome.restart_may_help {
                    let status =
                        match tokio::time::timeout(self.call_timeout, self.control.status(unit))
                            .await
                        {
                            Ok(Ok(status)) => Ok(status),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err("systemd did not answer in time".to_string()),
                        };
                    self.remediator.failing(
                        probe,
                        status.as_ref().map_err(String::as_str),
                        self.clock.now(),
                    )
                } else {
                    self.remediator.healthy(probe)
                };
            match &decision {
                Decision::Restart(attempt) => {
                    tracing::warn!(
                        message_id = message_id::HEALTH_RESTART_REQUESTED,
                        qsfs_probe = probe.as_str(),
                        qsfs_unit = unit,
                        qsfs_attempt = attempt,
                        "restarting {unit}: it is active but its {probe} probe failed {} times in a row: {}",
                        self.remediator.policy.failures_before_restart,
                        outcome.reason
                    );
                    self.remediator.reset_counts();
                    self.start_restart(probe, unit);
                    busy = true;
                }
                Decision::GaveUp { first: true } => tracing::error!(
                    message_id = message_id::HEALTH_GAVE_UP,
                    qsfs_probe = probe.as_str(),
                    qsfs_unit = unit,
                    "giving up on {unit}: restarted {} times within {} s and its {probe} probe still fails: {}",
                    self.remediator.policy.max_restarts,
                    self.remediator.policy.window.as_secs(),
                    outcome.reason
                ),
                Decision::SystemdBusy(states) => tracing::debug!(
                    qsfs_probe = probe.as_str(),
                    "not restarting {unit}: systemd is already acting on it ({states})"
                ),
                Decision::UnitUnknown(e) => tracing::warn!(
                    qsfs_probe = probe.as_str(),
                    "not restarting {unit}: its state is unknown: {e}"
                ),
                _ => {}
            }
            decisions.push((probe, decision));
        }
        decisions
    }

    fn start_restart(&mut self, probe: ProbeName, unit: &'static str) {
        let counters = self.counters.entry(probe).or_default().clone();
        counters.requested.fetch_add(1, Ordering::Relaxed);
        let control = self.control.clone();
        let (mountpoint, stat_timeout, job_timeout) =
            (self.mountpoint.clone(), self.call_timeout, self.job_timeout);
        let task = tokio::spawn(async move {
            if probe == ProbeName::Mount {
                before_zdbfs_restart(&mountpoint, stat_timeout).await;
            }
            let result = tokio::time::timeout(job_timeout, control.restart(unit)).await;
            match result {
                Ok(Ok(JobResult::Done)) => {
                    counters.done.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        message_id = message_id::HEALTH_RESTART_DONE,
                        qsfs_unit = unit,
                        qsfs_job_result = "done",
                        "restarted {unit}"
                    );
                }
                Ok(Ok(other)) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    let result = serde_json::to_value(&other)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_else(|| format!("{other:?}"));
                    tracing::error!(
                        message_id = message_id::HEALTH_RESTART_FAILED,
                        qsfs_unit = unit,
                        qsfs_job_result = result.as_str(),
                        "restart of {unit} ended with `{result}`"
                    );
                }
                Ok(Err(e)) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        message_id = message_id::HEALTH_RESTART_FAILED,
                        qsfs_unit = unit,
                        "restart of {unit} failed: {e}"
                    );
                }
                Err(_) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        message_id = message_id::HEALTH_RESTART_FAILED,
                        qsfs_unit = unit,
                        "restart of {unit} did not finish within {} s",
                        job_timeout.as_secs()
                    );
                }
            }
        });
        self.in_flight.insert(probe, task);
    }

    /// Waits for every restart started so far to finish.
    pub async fn wait_idle(&mut self) {
        for (_, task) in std::mem::take(&mut self.in_flight) {
            let _ = task.await;
        }
    }
}

/// Everything that must happen before systemd restarts zdbfs. A stale mount (its FUSE process
/// is gone: stat fails with ENOTCONN) is lazily unmounted, so the new zdbfs can mount again.
/// A mount that answers, or hangs, is left alone: systemd stops zdbfs with SIGTERM, and zdbfs
/// flushes its cache and unmounts itself; nothing here ever kills a process.
///
/// The flush of zdbfs's cache (its snapshot ioctl) belongs here, before anything else.
pub async fn before_zdbfs_restart(mountpoint: &Path, timeout: Duration) {
    if stat_is_stale(mountpoint, timeout).await {
        match mount::lazy_unmount(mountpoint, timeout).await {
            Ok(()) => tracing::warn!(
                message_id = message_id::HEALTH_STALE_MOUNT_CLEARED,
                qsfs_mountpoint = %mountpoint.display(),
                "lazily unmounted the stale FUSE mount at {} before restarting zdbfs",
                mountpoint.display()
            ),
            Err(e) => tracing::error!(
                message_id = message_id::HEALTH_STALE_MOUNT_CLEARED,
                qsfs_mountpoint = %mountpoint.display(),
                "cannot unmount the stale FUSE mount: {e}"
            ),
        }
    }
}

async fn stat_is_stale(mountpoint: &Path, timeout: Duration) -> bool {
    mount::stat(&Lane::new(), mountpoint, timeout).await == StatResult::Stale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            failures_before_restart: 3,
            backoff: Backoff::new(Duration::from_secs(30), Duration::from_secs(100)),
            max_restarts: 3,
            window: Duration::from_secs(1000),
        }
    }

    fn active() -> UnitStatus {
        UnitStatus {
            name: "qsfs-zdb.service".into(),
            load_state: "loaded".into(),
            active_state: ActiveState::Active,
            sub_state: "running".into(),
            result: Some("success".into()),
            n_restarts: Some(0),
        }
    }

    #[test]
    fn counts_then_restarts_with_growing_backoff_then_gives_up() {
        let mut r = Remediator::new(policy());
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let unit = active();
        let zdb = ProbeName::Zdb;
        assert_eq!(r.failing(zdb, Ok(&unit), at(0)), Decision::Counting(1));
        assert_eq!(r.failing(zdb, Ok(&unit), at(10)), Decision::Counting(2));
        assert_eq!(r.failing(zdb, Ok(&unit), at(20)), Decision::Restart(1));
        // Still failing after the restart: count again, then wait out the 30 s backoff.
        assert_eq!(r.failing(zdb, Ok(&unit), at(30)), Decision::Counting(1));
        assert_eq!(r.failing(zdb, Ok(&unit), at(35)), Decision::Counting(2));
        assert_eq!(
            r.failing(zdb, Ok(&unit), at(40)),
            Decision::Backoff(Duration::from_secs(10))
        );
        assert_eq!(r.failing(zdb, Ok(&unit), at(50)), Decision::Restart(2));
        // The backoff doubled to 60 s.
        assert_eq!(r.failing(zdb, Ok(&unit), at(60)), Decision::Counting(1));
        assert_eq!(r.failing(zdb, Ok(&unit), at(70)), Decision::Counting(2));
        assert_eq!(
            r.failing(zdb, Ok(&unit), at(80)),
            Decision::Backoff(Duration::from_secs(30))
        );
        assert_eq!(r.failing(zdb, Ok(&unit), at(110)), Decision::Restart(3));
        // Three restarts in the window: give up, and say so once.
        for s in [120, 130] {
            r.failing(zdb, Ok(&unit), at(s));
        }
        assert_eq!(
            r.failing(zdb, Ok(&unit), at(140)),
            Decision::GaveUp { first: true }
        );
        assert!(r.gave_up(zdb));
        assert_eq!(
            r.failing(zdb, Ok(&unit), at(500)),
            Decision::GaveUp { first: false }
        );
        // Once the first restart leaves the window, one more restart is allowed.
        assert_eq!(r.failing(zdb, Ok(&unit), at(1020)), Decision::Restart(3));
        assert!(!r.gave_up(zdb));
    }

    #[test]
    fn systemd_transitions_and_inactive_units_are_left_alone() {
        let mut r = Remediator::new(policy());
        let now = Instant::now();
        let unit = active();
        let mut busy = active();
        busy.active_state = ActiveState::Activating;
        busy.sub_state = "auto-restart".into();
        let mut dead = active();
        dead.active_state = ActiveState::Failed;
        dead.sub_state = "failed".into();
        let m = ProbeName::Mount;
        assert_eq!(r.failing(m, Ok(&unit), now), Decision::Counting(1));
        assert_eq!(r.failing(m, Ok(&unit), now), Decision::Counting(2));
        assert_eq!(
            r.failing(m, Ok(&busy), now),
            Decision::SystemdBusy("activating (auto-restart)".into())
        );
        assert_eq!(r.failures(m), 0, "systemd acting resets the count");
        assert_eq!(r.failing(m, Ok(&unit), now), Decision::Counting(1));
        assert_eq!(
            r.failing(m, Ok(&dead), now),
            Decision::UnitNotActive("failed (failed)".into())
        );
        assert_eq!(
            r.failing(m, Err("no bus"), now),
            Decision::UnitUnknown("no bus".into())
        );
        assert_eq!(r.failing(m, Ok(&unit), now), Decision::Counting(1));
        assert_eq!(r.healthy(m), Decision::Healthy);
        assert_eq!(r.failures(m), 0);
    }

    #[test]
    fn a_healthy_round_resets_the_backoff() {
        let mut r = Remediator::new(Policy {
            failures_before_restart: 1,
            ..policy()
        });
        let t0 = Instant::now();
        let unit = active();
        let s3 = ProbeName::S3;
        assert_eq!(r.failing(s3, Ok(&unit), t0), Decision::Restart(1));
        assert!(matches!(
            r.failing(s3, Ok(&unit), t0 + Duration::from_secs(1)),
            Decision::Backoff(_)
        ));
        r.healthy(s3);
        assert_eq!(
            r.failing(s3, Ok(&unit), t0 + Duration::from_secs(2)),
            Decision::Restart(2)
        );
    }
}
