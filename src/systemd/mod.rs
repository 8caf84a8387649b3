//! Asking systemd about units and starting, stopping or restarting them, over its D-Bus API.
//!
//! [`UnitControl`] is the small interface the rest of qsfs uses (so remediation logic can be
//! tested with a fake); [`Systemd`] implements it with zbus against the real
//! `org.freedesktop.systemd1` on the system bus.

mod dbus;

pub use dbus::Systemd;

use serde::Serialize;
use std::future::Future;

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitStatus {
    /// The unit name, for example `qsfs-zdb.service`.
    pub name: String,
    /// `LoadState`: `loaded`, `not-found`, `masked`, …
    pub load_state: String,
    /// `ActiveState`.
    pub active_state: ActiveState,
    /// `SubState`: `running`, `start-post`, `auto-restart`, `dead`, …
    pub sub_state: String,
    /// `Result` of a service: `success`, `exit-code`, `signal`, `watchdog`, …
    pub result: Option<String>,
    /// `NRestarts` of a service: automatic restarts since it was last started by hand.
    pub n_restarts: Option<u32>,
}

impl UnitStatus {
    /// systemd is itself (re)starting or stopping the unit right now.
    pub fn in_transition(&self) -> bool {
        matches!(
            self.active_state,
            ActiveState::Activating | ActiveState::Deactivating | ActiveState::Reloading
        ) || self.sub_state == "auto-restart"
    }
}

/// A unit's `ActiveState`, serialized as systemd spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveState {
    /// `active`
    Active,
    /// `reloading`
    Reloading,
    /// `inactive`
    Inactive,
    /// `failed`
    Failed,
    /// `activating`
    Activating,
    /// `deactivating`
    Deactivating,
    /// A state this version does not know (`maintenance`, `refreshing`, …).
    Other(String),
}

impl ActiveState {
    /// systemd's word for the state.
    pub fn as_str(&self) -> &str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Reloading => "reloading",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
            ActiveState::Activating => "activating",
            ActiveState::Deactivating => "deactivating",
            ActiveState::Other(other) => other,
        }
    }
}

impl From<&str> for ActiveState {
    fn from(state: &str) -> Self {
        match state {
            "active" => ActiveState::Active,
            "reloading" => ActiveState::Reloading,
            "inactive" => ActiveState::Inactive,
            "failed" => ActiveState::Failed,
            "activating" => ActiveState::Activating,
            "deactivating" => ActiveState::Deactivating,
            other => ActiveState::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for ActiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ActiveState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// How a job ended (the `result` of the `JobRemoved` signal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobResult {
    /// `done`: the job succeeded.
    Done,
    /// `canceled`
    Canceled,
    /// `timeout`
    Timeout,
    /// `failed`
    Failed,
    /// `dependency`: a unit it depends on failed.
    Dependency,
    /// `skipped`
    Skipped,
    /// Anything else.
    Other(String),
}

impl From<&str> for JobResult {
    fn from(result: &str) -> Self {
        match result {
            "done" => JobResult::Done,
            "canceled" => JobResult::Canceled,
            "timeout" => JobResult::Timeout,
            "failed" => JobResult::Failed,
            "dependency" => JobResult::Dependency,
            "skipped" => JobResult::Skipped,
            other => JobResult::Other(other.to_string()),
        }
    }
}

/// A D-Bus failure, or a job that did not finish in time.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// The bus or systemd refused or failed the call.
    #[error("systemd D-Bus call failed: {0}")]
    Bus(#[from] zbus::Error),
    /// The job was queued but did not finish within the timeout.
    #[error("{verb} of {unit} did not finish within {seconds} s")]
    JobTimeout {
        /// start, stop or restart.
        verb: &'static str,
        /// The unit.
        unit: String,
        /// The timeout.
        seconds: u64,
    },
}

/// What qsfs needs from a service manager.
pub trait UnitControl {
    /// The unit's current state.
    fn status(&self, unit: &str) -> impl Future<Output = Result<UnitStatus, SystemdError>> + Send;
    /// Starts the unit and waits for the job to finish.
    fn start(&self, unit: &str) -> impl Future<Output = Result<JobResult, SystemdError>> + Send;
    /// Stops the unit and waits for the job to finish.
    fn stop(&self, unit: &str) -> impl Future<Output = Result<JobResult, SystemdError>> + Send;
    /// Restarts the unit and waits for the job to finish.
    fn restart(&self, unit: &str) -> impl Future<Output = Result<JobResult, SystemdError>> + Send;
}
