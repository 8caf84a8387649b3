//! A round of probes as a report: the human table, the JSON (with a schema version), the
//! since-timestamps, and the status file `serve` writes every round.
//!
//! The JSON (`check --format json`, and the status file):
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "checked_unix_ms": 1767225600000,
//!   "state": "degraded",
//!   "probes": [
//!     {
//!       "name": "zdb",
//!       "state": "degraded",
//!       "reason": "zdbfs-data: 91.0% of its limit used",
//!       "since_unix_ms": 1767225000000,
//!       "duration_ms": 1.2,
//!       "parts": [ { "name": "zdbfs-data", "state": "degraded", "reason": "91.0% of its limit used" } ]
//!     }
//!   ]
//! }
//! ```
//!
//! `state` is one of `ok`, `degraded`, `unknown`, `failed`; the overall state is the worst of
//! the probes'. `since_unix_ms` is when the probe entered its current state, as far as this
//! program knows: `serve` tracks it across rounds, and `check` takes it from `serve`'s status
//! file when that is fresh and agrees, else it is the time of the check.

use super::probes::{Finding, ProbeName};
use super::{worst, Part, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The version of the JSON format; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// One round of probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When the round finished, unix milliseconds.
    pub checked_unix_ms: u64,
    /// The worst state of the probes (ok when there are none).
    pub state: State,
    /// Each probe, in report order.
    pub probes: Vec<ProbeReport>,
}

/// One probe in a [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeReport {
    /// The probe.
    pub name: ProbeName,
    /// Its state.
    pub state: State,
    /// Why, in a few words.
    pub reason: String,
    /// Since when it is in this state, unix milliseconds.
    pub since_unix_ms: u64,
    /// How long the probe took, milliseconds.
    pub duration_ms: f64,
    /// Per-part results (units, namespaces, URLs, backends, directories).
    pub parts: Vec<Part>,
}

/// Remembers since when each probe is in its state.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    since: BTreeMap<ProbeName, (State, u64)>,
}

impl Tracker {
    /// A tracker that starts from an earlier report (the status file of `serve`).
    pub fn from_report(report: &Report) -> Self {
        Tracker {
            since: report
                .probes
                .iter()
                .map(|p| (p.name, (p.state, p.since_unix_ms)))
                .collect(),
        }
    }

    /// The report of `findings` at `now_unix_ms`, updating the since-timestamps.
    pub fn report(&mut self, findings: &[Finding], now_unix_ms: u64) -> Report {
        let probes: Vec<ProbeReport> = findings
            .iter()
            .map(|f| {
                let state = f.outcome.state;
                let since = match self.since.get(&f.probe) {
                    Some((previous, since)) if *previous == state => *since,
                    _ => now_unix_ms,
                };
                self.since.insert(f.probe, (state, since));
                ProbeReport {
                    name: f.probe,
                    state,
                    reason: f.outcome.reason.clone(),
                    since_unix_ms: since,
                    duration_ms: (f.duration.as_secs_f64() * 1e4).round() / 10.0,
                    parts: f.outcome.parts.clone(),
                }
            })
            .collect();
        Report {
            schema_version: SCHEMA_VERSION,
            checked_unix_ms: now_unix_ms,
            state: worst(probes.iter().map(|p| p.state)),
            probes,
        }
    }
}

impl Report {
    /// The JSON text (pretty, with a final newline).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The human table: one line per probe, and one indented line per part that is not ok and
    /// not already named in the probe's reason (`all_parts` shows every part).
    pub fn to_table(&self, all_parts: bool) -> String {
        let mut rows: Vec<[String; 4]> = vec![[
            "COMPONENT".into(),
            "STATE".into(),
            "SINCE".into(),
            "REASON".into(),
        ]];
        for probe in &self.probes {
            rows.push([
                probe.name.to_string(),
                probe.state.to_string(),
                format!(
                    "{} ({} ago)",
                    crate::clock::utc(probe.since_unix_ms),
                    crate::clock::ago(self.checked_unix_ms.saturating_sub(probe.since_unix_ms))
                ),
                probe.reason.clone(),
            ]);
            for part in &probe.parts {
                // A part the reason already names is not repeated.
                let named = probe.reason.contains(&part.name);
                if all_parts || (part.state != State::Ok && !named) {
                    rows.push([
                        format!("  {}", part.name),
                        part.state.to_string(),
                        String::new(),
                        part.reason.clone(),
                    ]);
                }
            }
        }
        let widths: Vec<usize> = (0..3)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!("qsfs: {}\n", self.state);
        for row in rows {
            let line = format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// A one-line summary for systemd's STATUS=: `ok: 7 probes ok`, or the probes that are not.
    pub fn summary(&self) -> String {
        let bad: Vec<String> = self
            .probes
            .iter()
            .filter(|p| p.state != State::Ok)
            .map(|p| format!("{} {}", p.name, p.state))
            .collect();
        if bad.is_empty() {
            format!("ok: {} probes ok", self.probes.len())
        } else {
            format!("{}: {}", self.state, bad.join(", "))
        }
    }

    /// Parses a report of a version this build reads ([`SCHEMA_VERSION`]; there was no
    /// earlier one).
    pub fn from_json(bytes: &[u8]) -> Result<Report, crate::wire::Error> {
        crate::wire::parse(bytes, "health report", 1..=SCHEMA_VERSION)
    }

    /// Reads a report written by [`Report::write`]; `None` when there is none or it is not one.
    pub fn read(path: &Path) -> Option<Report> {
        Report::from_json(&std::fs::read(path).ok()?).ok()
    }

    /// Writes the report atomically, creating the directory if needed.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::fsutil::write_json(path, self, crate::fsutil::Durability::Visible)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Outcome;
    use std::time::Duration;

    fn finding(probe: ProbeName, state: State) -> Finding {
        Finding {
            probe,
            outcome: Outcome::new(state, "why"),
            duration: Duration::from_micros(1234),
        }
    }

    #[test]
    fn since_is_kept_while_the_state_stays() {
        let mut tracker = Tracker::default();
        let r = tracker.report(&[finding(ProbeName::Zdb, State::Ok)], 1000);
        assert_eq!(r.probes[0].since_unix_ms, 1000);
        assert_eq!(r.probes[0].duration_ms, 1.2);
        let r = tracker.report(&[finding(ProbeName::Zdb, State::Ok)], 2000);
        assert_eq!(r.probes[0].since_unix_ms, 1000);
        let r = tracker.report(&[finding(ProbeName::Zdb, State::Failed)], 3000);
        assert_eq!(r.probes[0].since_unix_ms, 3000);
        assert_eq!(r.state, State::Failed);
        let mut seeded = Tracker::from_report(&r);
        let r = seeded.report(&[finding(ProbeName::Zdb, State::Failed)], 9000);
        assert_eq!(r.probes[0].since_unix_ms, 3000);
    }

    #[test]
    fn table_and_summary() {
        let mut tracker = Tracker::default();
        let mut bad = finding(ProbeName::Mount, State::Failed);
        bad.outcome.parts = vec![
            Part::new("a", State::Ok, "fine"),
            Part::new("b", State::Failed, "broken"),
        ];
        let r = tracker.report(
            &[finding(ProbeName::Zdb, State::Ok), bad],
            1_767_225_600_000,
        );
        let table = r.to_table(false);
        assert_eq!(
            table,
            "qsfs: failed\n\
             COMPONENT  STATE   SINCE                          REASON\n\
             zdb        ok      2026-01-01T00:00:00Z (0s ago)  why\n\
             mount      failed  2026-01-01T00:00:00Z (0s ago)  why\n\
             \x20 b        failed                                 broken\n"
        );
        assert!(r.to_table(true).contains("  a "));
        assert_eq!(r.summary(), "failed: mount failed");
    }

    #[test]
    fn status_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/health.json");
        let r = Tracker::default().report(&[finding(ProbeName::Disk, State::Degraded)], 5);
        r.write(&path).unwrap();
        assert_eq!(Report::read(&path), Some(r));
        assert_eq!(Report::read(&dir.path().join("none")), None);
    }

    const V1: &str = include_str!("../../tests/fixtures/health/report-v1.json");

    #[test]
    fn reads_the_v1_fixture() {
        let r = Report::from_json(V1.as_bytes()).unwrap();
        assert_eq!(r.schema_version, 1);
        assert_eq!(r.state, State::Degraded);
        assert_eq!(r.probes.len(), 4);
        assert_eq!(r.probes[1].name, ProbeName::Zdb);
        assert_eq!(r.probes[1].parts[0].state, State::Degraded);
        assert_eq!(r.probes[3].duration_ms, 250.0);
        // Today's writer writes the fixture's form, byte for byte.
        assert_eq!(r.to_json(), V1);
    }

    #[test]
    fn refuses_a_future_version() {
        let future = crate::wire::with_version(V1, SCHEMA_VERSION + 1);
        let e = Report::from_json(future.as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "health report schema_version 2 is not one this build reads (1..=1); \
             was it written by a newer qsfs?"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("health.json");
        std::fs::write(&path, future).unwrap();
        assert_eq!(Report::read(&path), None);
    }
}
