//! `qsfs-health`: probes of every part of the appliance, readiness gates, and remediation.
//!
//! * [`probes`]: one module per component (units, zdb, mount, s3, zstor, monitor, disk), each
//!   with its settings. Each probe has a timeout and returns an [`Outcome`]: a [`State`], a
//!   short reason, and parts (one per unit, namespace, backend or directory).
//! * [`runner`]: every probe set up once from the config and run with its timeout.
//! * [`report`]: a round of probes as a human table or JSON (with a schema version), and the
//!   since-timestamps of each probe's state.
//! * [`remediation`]: the state machine that restarts a unit that is active but fails its probe,
//!   with backoff and a give-up limit, through systemd.
//! * [`metrics`]: Prometheus text over a minimal HTTP responder.
//! * [`check`]: the one-shot commands, `check` and `wait`.
//! * [`serve`]: the daemon loop (`Type=notify`, watchdog, STATUS).
//! * [`config`]: the `[health]` section of `qsfs.toml`.

pub mod check;
pub mod config;
pub mod metrics;
pub mod probes;
pub mod remediation;
pub mod report;
pub mod runner;
pub mod serve;

use serde::{Deserialize, Serialize};

/// How a probe (or one part of it) is doing. The order is "how bad": ok < degraded < unknown <
/// failed, so the worst of several states is their maximum.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Works.
    #[default]
    Ok,
    /// Works, but needs attention (filling up, restarting, a backlog).
    Degraded,
    /// Could not be determined (the probe itself could not run).
    Unknown,
    /// Does not work.
    Failed,
}

impl State {
    /// The exit code of `qsfs-health check` for this overall state: 0 ok, 1 degraded, 2 failed,
    /// 3 unknown (the Nagios convention).
    pub fn exit_code(self) -> i32 {
        match self {
            State::Ok => 0,
            State::Degraded => 1,
            State::Failed => 2,
            State::Unknown => 3,
        }
    }

    /// `ok`, `degraded`, `unknown`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Degraded => "degraded",
            State::Unknown => "unknown",
            State::Failed => "failed",
        }
    }

    /// The number the metrics export: 0 ok, 1 degraded, 2 failed, 3 unknown (as the exit code).
    pub fn metric(self) -> i32 {
        self.exit_code()
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One part of a probe's result: a unit, a namespace, a backend, a URL, a directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// What it is (`qsfs-zdb.service`, `zdbfs-data`, `/var/zdbfs/data`).
    pub name: String,
    /// Its state.
    pub state: State,
    /// Why, in a few words.
    pub reason: String,
}

impl Part {
    /// A part.
    pub fn new(name: impl Into<String>, state: State, reason: impl Into<String>) -> Self {
        Part {
            name: name.into(),
            state,
            reason: reason.into(),
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The probe's state.
    pub state: State,
    /// Why, in a few words (never a secret).
    pub reason: String,
    /// Per-part results, when the probe looks at several things.
    pub parts: Vec<Part>,
    /// Whether restarting the component's unit may fix this failure: it is up but does not
    /// answer (a hung or stale mount, a zdb that does not answer PING, a closed socket). A
    /// wrong namespace mode or a full disk is not fixed by a restart.
    pub restart_may_help: bool,
}

impl Outcome {
    /// An ok outcome.
    pub fn ok(reason: impl Into<String>) -> Self {
        Outcome::new(State::Ok, reason)
    }

    /// An outcome in `state` that a restart would not fix.
    pub fn new(state: State, reason: impl Into<String>) -> Self {
        Outcome {
            state,
            reason: reason.into(),
            parts: Vec::new(),
            restart_may_help: false,
        }
    }

    /// A failure that a restart of the component may fix (it does not answer).
    pub fn unresponsive(reason: impl Into<String>) -> Self {
        Outcome {
            restart_may_help: true,
            ..Outcome::new(State::Failed, reason)
        }
    }

    /// With these parts.
    pub fn with_parts(mut self, parts: Vec<Part>) -> Self {
        self.parts = parts;
        self
    }

    /// The worst state of `parts`; the reason is `ok_reason` when all are ok, otherwise the
    /// parts that are not, as `name: reason` joined by `; `.
    pub fn from_parts(parts: Vec<Part>, ok_reason: impl FnOnce(&[Part]) -> String) -> Self {
        let state = worst(parts.iter().map(|p| p.state));
        let reason = if state == State::Ok {
            ok_reason(&parts)
        } else {
            parts
                .iter()
                .filter(|p| p.state != State::Ok)
                .map(|p| format!("{}: {}", p.name, p.reason))
                .collect::<Vec<_>>()
                .join("; ")
        };
        Outcome::new(state, reason).with_parts(parts)
    }
}

/// The worst of some states (ok when there are none).
pub fn worst(states: impl IntoIterator<Item = State>) -> State {
    states.into_iter().max().unwrap_or(State::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_and_exit_codes() {
        assert_eq!(worst([]), State::Ok);
        assert_eq!(worst([State::Ok, State::Degraded]), State::Degraded);
        assert_eq!(worst([State::Unknown, State::Degraded]), State::Unknown);
        assert_eq!(worst([State::Unknown, State::Failed]), State::Failed);
        assert_eq!(
            [State::Ok, State::Degraded, State::Failed, State::Unknown].map(State::exit_code),
            [0, 1, 2, 3]
        );
    }
}
