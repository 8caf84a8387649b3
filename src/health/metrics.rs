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
use crate::metrics::{Exposition, Kind, Labels, Value};
use std::collections::BTreeMap;

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
    let mut out = Exposition::new();
    out.single(
        "qsfs_health_state",
        Kind::Gauge,
        "Overall state: 0 ok, 1 degraded, 2 failed, 3 unknown.",
        report.state.metric(),
    );
    out.single(
        "qsfs_health_rounds_total",
        Kind::Counter,
        "Rounds of probes run since start.",
        rounds,
    );
    let per_probe = |value: &dyn Fn(&super::report::ProbeReport) -> Value| {
        report
            .probes
            .iter()
            .map(|p| (vec![("probe", p.name.to_string())], value(p)))
            .collect::<Vec<_>>()
    };
    out.family(
        "qsfs_health_probe_state",
        Kind::Gauge,
        "Probe state: 0 ok, 1 degraded, 2 failed, 3 unknown.",
        per_probe(&|p| p.state.metric().into()),
    );
    out.family(
        "qsfs_health_probe_ok",
        Kind::Gauge,
        "1 when the probe is ok.",
        per_probe(&|p| u64::from(p.state == super::State::Ok).into()),
    );
    out.family(
        "qsfs_health_probe_duration_seconds",
        Kind::Gauge,
        "How long the probe took.",
        per_probe(&|p| (p.duration_ms / 1000.0).into()),
    );
    out.family(
        "qsfs_health_probe_since_timestamp_seconds",
        Kind::Gauge,
        "Since when the probe is in its state (unix seconds).",
        per_probe(&|p| (p.since_unix_ms as f64 / 1000.0).into()),
    );
    if let Some(view) = remediation {
        let labels = |probe: &ProbeName| -> Labels {
            vec![
                ("probe", probe.to_string()),
                ("unit", probe.unit().unwrap_or_default().to_string()),
            ]
        };
        out.family(
            "qsfs_health_remediation_consecutive_failures",
            Kind::Gauge,
            "Consecutive failed rounds counted towards a restart.",
            view.enabled
                .iter()
                .map(|p| (labels(p), u64::from(view.remediator.failures(*p)).into()))
                .collect(),
        );
        out.family(
            "qsfs_health_remediation_gave_up",
            Kind::Gauge,
            "1 while remediation has given up on the unit.",
            view.enabled
                .iter()
                .map(|p| (labels(p), u64::from(view.remediator.gave_up(*p)).into()))
                .collect(),
        );
        let mut restarts = Vec::new();
        for probe in view.enabled {
            let c = view.counters.get(probe).cloned().unwrap_or_default();
            for (result, n) in [
                ("requested", c.requested),
                ("done", c.done),
                ("failed", c.failed),
            ] {
                let mut labels = labels(probe);
                labels.push(("result", result.to_string()));
                restarts.push((labels, n.into()));
            }
        }
        out.family(
            "qsfs_health_restarts_total",
            Kind::Counter,
            "Restarts requested by qsfs-health, and how they ended.",
            restarts,
        );
    }
    out.render()
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
        // prometheus-client writes a whole float with `.0`.
        assert!(text.contains("qsfs_health_probe_since_timestamp_seconds{probe=\"zdb\"} 2.0\n"));
        assert!(text.contains("qsfs_health_rounds_total 7\n"));
    }

    #[test]
    fn renders_the_fixture_report_with_remediation() {
        let report = Report::from_json(
            include_str!("../../tests/fixtures/health/report-v1.json").as_bytes(),
        )
        .unwrap();
        let settings = crate::health::config::RemediationSettings::default();
        let remediator = Remediator::new((&settings).into());
        let counters = BTreeMap::from([(
            ProbeName::Zdb,
            TargetCounters {
                requested: 3,
                done: 2,
                failed: 1,
            },
        )]);
        let view = RemediationView {
            remediator: &remediator,
            enabled: &[ProbeName::Zdb, ProbeName::S3],
            counters: &counters,
        };
        // The text of the hand-written renderer this replaced, but for whole floats, which
        // prometheus-client writes with `.0` (`1767225000.0`, was `1767225000`).
        assert_eq!(
            render(&report, 42, Some(view)),
            include_str!("../../tests/fixtures/health/metrics-v1.txt")
        );
    }
}
