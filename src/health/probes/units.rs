//! Units: every qsfs unit's `ActiveState`, `SubState`, `Result` and `NRestarts` over D-Bus.
//!
//! * ok: active (and restarted fewer than `restarts_degraded` times);
//! * degraded: systemd is starting, stopping or auto-restarting it, or it restarted often;
//! * failed: inactive, failed, not installed or masked;
//! * unknown: systemd did not answer.

use crate::health::{Outcome, Part, State};
use crate::systemd::{ActiveState, UnitControl, UnitStatus};
use serde::Deserialize;
use std::time::Duration;

/// `[health.units]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnitsSettings {
    /// Longest the probe may take (`timeout_ms`, milliseconds). Default 2000.
    #[serde(rename = "timeout_ms", deserialize_with = "super::timeout_ms")]
    pub timeout: Duration,
    /// The units to report. Default: the zstor, monitor, zdb, zdbfs and MinIO services.
    pub units: Vec<String>,
    /// A running unit that systemd restarted this many times (`NRestarts`) or more is
    /// degraded; 0 turns this off. Default 3.
    pub restarts_degraded: u32,
}

impl Default for UnitsSettings {
    fn default() -> Self {
        UnitsSettings {
            timeout: Duration::from_millis(2000),
            units: [
                "qsfs-zstor.service",
                "qsfs-monitor.service",
                "qsfs-zdb.service",
                "qsfs-zdbfs.service",
                "qsfs-minio.service",
            ]
            .map(String::from)
            .to_vec(),
            restarts_degraded: 3,
        }
    }
}

/// Asks systemd about every configured unit.
pub async fn probe<U: UnitControl>(control: &U, settings: &UnitsSettings) -> Outcome {
    let mut parts = Vec::new();
    for unit in &settings.units {
        parts.push(match control.status(unit).await {
            Ok(status) => evaluate(&status, settings.restarts_degraded),
            Err(e) => Part::new(unit, State::Unknown, e.to_string()),
        });
    }
    summarize(parts)
}

/// The probe's outcome from its parts: the worst state, and the units that are not ok.
pub fn summarize(parts: Vec<Part>) -> Outcome {
    Outcome::from_parts(parts, |parts| format!("{} units active", parts.len()))
}

/// One unit's part.
pub fn evaluate(status: &UnitStatus, restarts_degraded: u32) -> Part {
    let name = status.name.as_str();
    let states = format!("{} ({})", status.active_state, status.sub_state);
    let result = status
        .result
        .as_deref()
        .filter(|r| *r != "success")
        .map(|r| format!(", result {r}"))
        .unwrap_or_default();
    let restarts = status.n_restarts.unwrap_or(0);
    if status.load_state != "loaded" {
        return Part::new(
            name,
            State::Failed,
            format!("not loadable (LoadState={})", status.load_state),
        );
    }
    if status.in_transition() {
        return Part::new(name, State::Degraded, format!("{states}{result}"));
    }
    match status.active_state {
        ActiveState::Active if restarts_degraded > 0 && restarts >= restarts_degraded => Part::new(
            name,
            State::Degraded,
            format!("{states}, restarted {restarts} times"),
        ),
        ActiveState::Active => Part::new(name, State::Ok, states),
        ActiveState::Inactive | ActiveState::Failed => {
            Part::new(name, State::Failed, format!("{states}{result}"))
        }
        _ => Part::new(name, State::Unknown, format!("{states}{result}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(active: &str, sub: &str, result: &str, restarts: u32) -> UnitStatus {
        UnitStatus {
            name: "qsfs-zdb.service".into(),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: sub.into(),
            result: Some(result.into()),
            n_restarts: Some(restarts),
        }
    }

    #[test]
    fn unit_states_map_to_probe_states() {
        let e = |s: UnitStatus| evaluate(&s, 3);
        assert_eq!(
            e(status("active", "running", "success", 0)).state,
            State::Ok
        );
        let p = e(status("active", "running", "success", 4));
        assert_eq!(
            (p.state, p.reason.as_str()),
            (State::Degraded, "active (running), restarted 4 times")
        );
        assert_eq!(
            evaluate(&status("active", "running", "success", 9), 0).state,
            State::Ok
        );
        assert_eq!(
            e(status("activating", "start-post", "success", 0)).state,
            State::Degraded
        );
        let p = e(status("activating", "auto-restart", "exit-code", 1));
        assert_eq!(p.reason, "activating (auto-restart), result exit-code");
        let p = e(status("failed", "failed", "exit-code", 0));
        assert_eq!(
            (p.state, p.reason.as_str()),
            (State::Failed, "failed (failed), result exit-code")
        );
        assert_eq!(
            e(status("inactive", "dead", "success", 0)).state,
            State::Failed
        );
        let mut missing = status("inactive", "dead", "success", 0);
        missing.load_state = "not-found".into();
        assert_eq!(e(missing).reason, "not loadable (LoadState=not-found)");
    }

    #[test]
    fn summary_names_the_bad_units() {
        let parts = vec![
            Part::new("a.service", State::Ok, "active (running)"),
            Part::new("b.service", State::Failed, "failed (failed)"),
        ];
        let o = summarize(parts);
        assert_eq!(o.state, State::Failed);
        assert_eq!(o.reason, "b.service: failed (failed)");
        assert!(!o.restart_may_help);
        assert_eq!(summarize(vec![]).reason, "0 units active");
    }
}
