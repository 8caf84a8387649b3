//! Prometheus metrics of `serve` (served by [`crate::metrics`], off unless `[health] metrics`
//! is set).
//!
//! Metrics (per probe `probe="zdb"`, per remediated unit `unit="qsfs-zdb.service"`):
//! * `qsfs_health_state` — the overall state (0 ok, 1 degraded, 2 failed, 3 unknown);
//! * `qsfs_health_probe_state{probe}` — each probe's state, same encoding;
//! * `qsfs_health_probe_ok{probe}` — 1 when ok, else 0;
//! * `qsfs_health_probe_duration_seconds{probe}` — how long the probe took;
//! * `qsfs_health_probe_since_timestamp_seconds{probe}` — since when in this state;
//! * `qsfs_health_rounds_total` — rounds run since start;
//! * `qsfs_health_remediation_consecutive_failures{probe,unit}`,
//!   `qsfs_health_remediation_gave_up{probe,unit}`,
//!   `qsfs_health_restarts_total{probe,unit,result="requested|done|failed"}`.

use super::probes::ProbeName;
use super::remediation::{Remediator, TargetCounters};
use super::report::Report;
use crate::metrics::{family, single};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Remediation's part of the metrics.
pub struct RemediationView<'a> {
    /// The state machine.
    pub remediator: &'a Remediator,
    /// The probes remediation looks after.
    pub enabled: &'a [ProbeName],
    /// Restart counters.
    pub counters: &'a BTreeMap<ProbeName, TargetCounters>,
}

/// Renders the Prometheus text format.
pub fn render(report: &Report, rounds: u64, remediation: Option<RemediationView<'_>>) -> String {
    let mut out = String::new();
    single(
        &mut out,
        "qsfs_health_state",
        "gauge",
        "Overall state: 0 ok, 1 degraded, 2 failed, 3 unknown.",
        report.state.metric(),
    );
    single(
        &mut out,
        "qsfs_health_rounds_total",
        "counter",
        "Rounds of probes run since start.",
        rounds,
    );
    let per_probe: [(&str, &str, &str); 4] = [
        (
            "qsfs_health_probe_state",
            "gauge",
            "Probe state: 0 ok, 1 degraded, 2 failed, 3 unknown.",
        ),
        ("qsfs_health_probe_ok", "gauge", "1 when the probe is ok."),
        (
            "qsfs_health_probe_duration_seconds",
            "gauge",
            "How long the probe took.",
        ),
        (
            "qsfs_health_probe_since_timestamp_seconds",
            "gauge",
            "Since when the probe is in its state (unix seconds).",
        ),
    ];
    for (name, kind, help) in per_probe {
        family(&mut out, name, kind, help);
        for p in &report.probes {
            let value = match name {
                "qsfs_health_probe_state" => p.state.metric().to_string(),
                "qsfs_health_probe_ok" => u8::from(p.state == super::State::Ok).to_string(),
                "qsfs_health_probe_duration_seconds" => format!("{}", p.duration_ms / 1000.0),
                _ => format!("{}", p.since_unix_ms as f64 / 1000.0),
            };
            let _ = writeln!(out, "{name}{{probe=\"{}\"}} {value}", p.name);
        }
    }
    if let Some(view) = remediation {
        family(
            &mut out,
            "qsfs_health_remediation_consecutive_failures",
            "gauge",
            "Consecutive failed rounds counted towards a restart.",
        );
        for probe in view.enabled {
            let _ = writeln!(
                out,
                "qsfs_health_remediation_consecutive_failures{{probe=\"{probe}\",unit=\"{}\"}} {}",
                probe.unit().unwrap_or_default(),
                view.remediator.failures(*probe)
            );
        }
        family(
            &mut out,
            "qsfs_health_remediation_gave_up",
            "gauge",
            "1 while remediation has given up on the unit.",
        );
        for probe in view.enabled {
            let _ = writeln!(
                out,
                "qsfs_health_remediation_gave_up{{probe=\"{probe}\",unit=\"{}\"}} {}",
                probe.unit().unwrap_or_default(),
                u8::from(view.remediator.gave_up(*probe))
            );
        }
        family(
            &mut out,
            "qsfs_health_restarts_total",
            "counter",
            "Restarts requested by qsfs-health, and how they ended.",
        );
        for probe in view.enabled {
            let c = view.counters.get(probe).cloned().unwrap_or_default();
            for (result, n) in [
                ("requested", c.requested),
                ("done", c.done),
                ("failed", c.failed),
            ] {
                let _ = writeln!(
                    out,
                    "qsfs_health_restarts_total{{probe=\"{probe}\",unit=\"{}\",result=\"{result}\"}} {n}",
                    probe.unit().unwrap_or_default()
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::probes::Finding;
    use crate::health::report::Tracker;
    use crate::health::{Outcome, State};

    #[test]
    fn renders_every_probe() {
        let report = Tracker::default().report(
            &[Finding {
                probe: ProbeName::Zdb,
                outcome: Outcome::new(State::Degraded, "x"),
                duration: std::time::Duration::from_millis(3),
            }],
            2000,
        );
        let text = render(&report, 7, None);
        assert!(text.contains("qsfs_health_state 1\n"), "{text}");
        assert!(text.contains("qsfs_health_probe_state{probe=\"zdb\"} 1\n"));
        assert!(text.contains("qsfs_health_probe_ok{probe=\"zdb\"} 0\n"));
        assert!(text.contains("qsfs_health_probe_duration_seconds{probe=\"zdb\"} 0.003\n"));
        assert!(text.contains("qsfs_health_probe_since_timestamp_seconds{probe=\"zdb\"} 2\n"));
        assert!(text.contains("qsfs_health_rounds_total 7\n"));
    }
}
