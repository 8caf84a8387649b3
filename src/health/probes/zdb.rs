//! zdb: `PING` and `INFO` over its unix socket, and `NSINFO` of the zdbfs namespaces.
//!
//! * ok: PING answers, `sequential_key_size` is 8, every namespace exists, is `sequential`,
//!   unlocked, without I/O errors and below the fill thresholds (when it has a size limit);
//! * degraded: a namespace above `fill_degraded_percent`, or I/O errors counted by zdb;
//! * failed: no connection or no answer within the timeout (a restart may help), or a
//!   namespace that is missing, in the wrong mode, locked or above `fill_failed_percent`;
//! * unknown: the probe thread could not run.

use super::{Lane, LaneError};
use crate::health::{worst, Outcome, Part, State};
use crate::zdb::{Client, Endpoint, Mode, NsInfo, ServerError, ZdbError};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// `[health.zdb]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZdbSettings {
    /// Longest the probe may take (`timeout_ms`, milliseconds). Default 1000.
    #[serde(rename = "timeout_ms", deserialize_with = "super::timeout_ms")]
    pub timeout: Duration,
    /// The namespaces zdbfs uses; each must exist and be in `sequential` mode. Default
    /// [`crate::layout::ZDBFS_NAMESPACES`].
    pub namespaces: Vec<String>,
    /// A namespace with a size limit that is this full (percent) is degraded. Default 90.
    #[serde(deserialize_with = "super::percent")]
    pub fill_degraded_percent: f64,
    /// ... and this full, failed. Default 98.
    #[serde(deserialize_with = "super::percent")]
    pub fill_failed_percent: f64,
}

impl Default for ZdbSettings {
    fn default() -> Self {
        ZdbSettings {
            timeout: Duration::from_millis(1000),
            namespaces: crate::layout::ZDBFS_NAMESPACES.map(String::from).to_vec(),
            fill_degraded_percent: 90.0,
            fill_failed_percent: 98.0,
        }
    }
}

impl ZdbSettings {
    /// The checks that span several keys of the table.
    pub fn validate(&self) -> Result<(), String> {
        if self.fill_degraded_percent > self.fill_failed_percent {
            return Err(format!(
                "fill_degraded_percent ({}) must not be above fill_failed_percent ({})",
                self.fill_degraded_percent, self.fill_failed_percent
            ));
        }
        if let Some(bad) = self
            .namespaces
            .iter()
            .find(|n| n.is_empty() || n.len() > 128 || n.contains(char::is_whitespace))
        {
            return Err(format!("namespace name `{bad}` is not valid"));
        }
        Ok(())
    }
}

/// Probes the zdb at `socket` on `lane`.
pub async fn probe(
    lane: &Lane,
    socket: &Path,
    settings: &ZdbSettings,
    timeout: Duration,
) -> Outcome {
    let endpoint = Endpoint::Unix(socket.to_path_buf());
    let settings = settings.clone();
    match lane
        .run(timeout, move || check(&endpoint, &settings, timeout))
        .await
    {
        Ok(outcome) => outcome,
        Err(e @ LaneError::Thread(_)) => Outcome::new(State::Unknown, e.to_string()),
        Err(e) => Outcome::unresponsive(format!("zdb: {e}")),
    }
}

/// The whole check, synchronously (each call bounded by `timeout`).
pub fn check(endpoint: &Endpoint, settings: &ZdbSettings, timeout: Duration) -> Outcome {
    let mut client = match Client::connect(endpoint, timeout) {
        Ok(client) => client,
        Err(e) => return failure(e),
    };
    if let Err(e) = client.ping() {
        return failure(e);
    }
    let info = match client.info() {
        Ok(info) => info,
        Err(e) => return failure(e),
    };
    let mut parts = Vec::new();
    match info.sequential_key_size {
        Some(8) | None => {}
        Some(other) => parts.push(Part::new(
            "server",
            State::Failed,
            format!("sequential_key_size {other} (zdbfs needs 8)"),
        )),
    }
    let disk_failures = info.disk_failures();
    if disk_failures > 0 {
        parts.push(Part::new(
            "server",
            State::Degraded,
            format!("{disk_failures} disk read/write failures since start"),
        ));
    }
    for namespace in &settings.namespaces {
        match client.nsinfo(namespace) {
            Ok(ns) => parts.push(evaluate_namespace(&ns, settings)),
            Err(ZdbError::Server(ServerError::NamespaceNotFound)) => {
                parts.push(Part::new(namespace, State::Failed, "namespace not found"))
            }
            Err(e) => return failure(e),
        }
    }
    Outcome::from_parts(parts, |_| {
        let uptime = info
            .uptime
            .map(|u| format!(", up {}", crate::clock::ago(u * 1000)))
            .unwrap_or_default();
        format!(
            "PING ok{uptime}, {} namespaces sequential",
            settings.namespaces.len()
        )
    })
}

/// A connection-level failure: zdb does not answer (a restart may help); anything else (a
/// reply zdb should not send) is a plain failure.
fn failure(e: ZdbError) -> Outcome {
    match e {
        ZdbError::Connect { .. } | ZdbError::Timeout { .. } | ZdbError::Io { .. } => {
            Outcome::unresponsive(e.to_string())
        }
        other => Outcome::new(State::Failed, other.to_string()),
    }
}

/// One namespace against the thresholds.
pub fn evaluate_namespace(ns: &NsInfo, settings: &ZdbSettings) -> Part {
    let mut problems: Vec<(State, String)> = Vec::new();
    if ns.mode != Mode::Sequential {
        problems.push((
            State::Failed,
            "mode userkey (zdbfs needs sequential)".to_string(),
        ));
    }
    if ns.locked {
        problems.push((State::Failed, "locked (zdbfs writes hang)".to_string()));
    }
    if let Some(fill) = ns.fill_percent() {
        if fill >= settings.fill_failed_percent {
            problems.push((State::Failed, format!("{fill:.1}% of its limit used")));
        } else if fill >= settings.fill_degraded_percent {
            problems.push((State::Degraded, format!("{fill:.1}% of its limit used")));
        }
    }
    if ns.io_errors() > 0 {
        problems.push((State::Degraded, format!("{} I/O errors", ns.io_errors())));
    }
    if problems.is_empty() {
        let fill = ns
            .fill_percent()
            .map(|f| format!(", {f:.1}% of limit"))
            .unwrap_or_default();
        return Part::new(
            &ns.name,
            State::Ok,
            format!("sequential, {} entries{fill}", ns.entries),
        );
    }
    Part::new(
        &ns.name,
        worst(problems.iter().map(|(s, _)| *s)),
        problems
            .into_iter()
            .map(|(_, r)| r)
            .collect::<Vec<_>>()
            .join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(mode: &str, size: u64, limit: u64, io_errors: u64, locked: bool) -> NsInfo {
        NsInfo::parse(&format!(
            "# namespace\nname: zdbfs-data\nentries: 3\npublic: yes\nworm: no\nlocked: {}\npassword: no\n\
             data_size_bytes: {size}\ndata_limits_bytes: {limit}\nindex_size_bytes: 1\nnext_internal_id: 0x0\n\
             mode: {mode}\nstats_index_io_errors: 0\nstats_index_faults: 0\nstats_data_io_errors: {io_errors}\nstats_data_faults: 0\n",
            if locked { "yes" } else { "no" }
        ))
        .unwrap()
    }

    #[test]
    fn namespaces_against_thresholds() {
        let s = ZdbSettings::default();
        let e = |n: NsInfo| evaluate_namespace(&n, &s);
        let p = e(ns("sequential", 10, 0, 0, false));
        assert_eq!(
            (p.state, p.reason.as_str()),
            (State::Ok, "sequential, 3 entries")
        );
        assert_eq!(
            e(ns("sequential", 50, 100, 0, false)).reason,
            "sequential, 3 entries, 50.0% of limit"
        );
        let p = e(ns("userkey", 10, 0, 0, false));
        assert_eq!(
            (p.state, p.reason.as_str()),
            (State::Failed, "mode userkey (zdbfs needs sequential)")
        );
        assert_eq!(
            e(ns("sequential", 91, 100, 0, false)).state,
            State::Degraded
        );
        assert_eq!(e(ns("sequential", 99, 100, 0, false)).state, State::Failed);
        let p = e(ns("sequential", 10, 0, 2, true));
        assert_eq!(
            (p.state, p.reason.as_str()),
            (State::Failed, "locked (zdbfs writes hang), 2 I/O errors")
        );
        assert_eq!(e(ns("sequential", 10, 0, 2, false)).state, State::Degraded);
    }
}
