//! The real machine under a switch of versions ([`super::upgrade::Machine`]): the qsfs units
//! through `systemctl`, health through the live `qsfs-health check`, the journal through
//! journald.

use super::tree::Role;
use super::upgrade::{Health, Machine};
use super::versions::{Action, Event, Store};
use crate::logging::message_id;
use std::process::{Command, Stdio};
use std::time::Duration;
use wait_timeout::ChildExt;

/// How long `qsfs-health check` may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

/// The machine this program runs on (root `/`).
pub struct Systemd {
    store: Store,
    progress: Box<dyn FnMut(&str)>,
    started: std::time::Instant,
}

impl Systemd {
    /// The running machine; `progress` gets a line per step.
    pub fn new(progress: impl FnMut(&str) + 'static) -> Systemd {
        Systemd {
            store: Store::new(std::path::Path::new("/")),
            progress: Box::new(progress),
            started: std::time::Instant::now(),
        }
    }

    /// The qsfs services the live version ships (its units change with it); not templates
    /// (the DEMO image's backends): their instances are part of `qsfs.target`.
    fn services(&self) -> Vec<String> {
        let Ok((_, manifest)) = self.store.live() else {
            return Vec::new();
        };
        manifest
            .entries
            .iter()
            .filter(|e| {
                e.role == Role::Unit && e.path.ends_with(".service") && !e.path.contains("@.")
            })
            .filter_map(|e| e.path.rsplit('/').next().map(str::to_string))
            .collect()
    }
}

/// How long a clean stop of every qsfs unit may take (their stop timeouts add up).
const STOP_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long any other `systemctl` call may take.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `systemctl ARGS` for at most `timeout`; its stdout, or why it failed.
fn systemctl_within(args: &[&str], timeout: Duration) -> Result<String, String> {
    let what = format!("systemctl {}", args.join(" "));
    let mut child = Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let status = match child.wait_timeout(timeout) {
        Ok(Some(status)) => status,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what}: no answer within {} s", timeout.as_secs()));
        }
    };
    let read = |pipe: Option<&mut dyn std::io::Read>| {
        let mut text = String::new();
        if let Some(pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text.trim().to_string()
    };
    let stdout = read(child.stdout.as_mut().map(|p| p as &mut dyn std::io::Read));
    if status.success() {
        Ok(stdout)
    } else {
        let stderr = read(child.stderr.as_mut().map(|p| p as &mut dyn std::io::Read));
        Err(format!("{what}: {stderr}"))
    }
}

/// `systemctl ARGS` within [`SYSTEMCTL_TIMEOUT`].
fn systemctl(args: &[&str]) -> Result<String, String> {
    systemctl_within(args, SYSTEMCTL_TIMEOUT)
}

impl Machine for Systemd {
    fn stop(&mut self) -> Result<(), String> {
        let mut args = vec!["stop", "qsfs.target"];
        let services = self.services();
        args.extend(services.iter().map(String::as_str));
        systemctl_within(&args, STOP_TIMEOUT).map(drop)
    }

    fn start(&mut self) -> Result<(), String> {
        systemctl(&["daemon-reload"])?;
        // A unit that failed under the other version may have hit its start limit.
        let services = self.services();
        let mut reset = vec!["reset-failed"];
        reset.extend(services.iter().map(String::as_str));
        let _ = systemctl(&reset);
        systemctl(&["start", "--no-block", "qsfs.target"]).map(drop)
    }

    fn health(&mut self) -> Health {
        let services = self.services();
        let mut args = vec!["show", "--property=ActiveState", "--value"];
        args.extend(services.iter().map(String::as_str));
        let states = match systemctl(&args) {
            Ok(states) => states,
            Err(why) => return Health::Unhealthy(why),
        };
        // One value per unit, in order, with an empty line between them.
        let states: Vec<&str> = states.lines().filter(|l| !l.is_empty()).collect();
        let down: Vec<String> = services
            .iter()
            .enumerate()
            .filter(|(i, _)| states.get(*i) != Some(&"active"))
            .map(|(i, s)| format!("{s} is {}", states.get(i).unwrap_or(&"unknown")))
            .collect();
        if !down.is_empty() {
            return Health::Unhealthy(down.join(", "));
        }
        health_check()
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn now_unix_ms(&self) -> u64 {
        crate::clock::now_unix_ms()
    }

    fn monotonic_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn journal(&mut self, event: &Event) {
        journal(event);
    }

    fn progress(&mut self, line: &str) {
        (self.progress)(line);
    }
}

/// `qsfs-health check --format json` of the live version: ok, or the probes that are not.
fn health_check() -> Health {
    let binary = format!("/{}/qsfs-health", super::layout::BIN);
    let child = Command::new(&binary)
        .args(["check", "--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return Health::Unhealthy(format!("{binary}: {e}")),
    };
    match child.wait_timeout(HEALTH_TIMEOUT) {
        Ok(Some(_)) => {}
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            return Health::Unhealthy(format!(
                "{binary} check did not answer within {} s",
                HEALTH_TIMEOUT.as_secs()
            ));
        }
    }
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = std::io::Read::read_to_end(&mut stdout, &mut out);
    }
    verdict(&out)
}

/// The verdict of a `qsfs-health check --format json` report (read loosely: the report of
/// another version may have other fields).
fn verdict(report: &[u8]) -> Health {
    let Ok(report) = serde_json::from_slice::<serde_json::Value>(report) else {
        return Health::Unhealthy("qsfs-health check printed no report".into());
    };
    if report["state"] == "ok" {
        return Health::Healthy;
    }
    let probes: Vec<String> = report["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["state"] != "ok")
        .map(|p| {
            format!(
                "{} {}: {}",
                p["name"].as_str().unwrap_or("?"),
                p["state"].as_str().unwrap_or("?"),
                p["reason"].as_str().unwrap_or_default()
            )
        })
        .collect();
    Health::Unhealthy(format!("qsfs-health: {}", probes.join("; ")))
}

/// Writes `event` to the journal (also when `qsfs-image` runs at a terminal), with the
/// `MESSAGE_ID` of its action.
fn journal(event: &Event) {
    let Some(dispatch) = crate::logging::journal_dispatch("qsfs-image") else {
        return;
    };
    let reason = event.reason.as_deref().unwrap_or_default();
    let (from, to) = (event.from.as_str(), event.to.as_str());
    tracing::dispatcher::with_default(&dispatch, || match event.action {
        Action::Upgraded => tracing::info!(
            message_id = message_id::UPGRADED,
            qsfs_from = from,
            qsfs_to = to,
            "upgraded from {from} to {to}: healthy"
        ),
        Action::UpgradeRolledBack => tracing::error!(
            message_id = message_id::UPGRADE_ROLLED_BACK,
            qsfs_from = from,
            qsfs_to = to,
            qsfs_reason = reason,
            "the upgrade to {to} did not become healthy, rolling back to {from}: {reason}"
        ),
        Action::UpgradeUnhealthy => tracing::error!(
            message_id = message_id::SWITCH_UNHEALTHY,
            qsfs_from = from,
            qsfs_to = to,
            qsfs_reason = reason,
            "the upgrade to {to} did not become healthy and cannot be rolled back: {reason}"
        ),
        Action::RolledBack => tracing::warn!(
            message_id = message_id::ROLLED_BACK,
            qsfs_from = from,
            qsfs_to = to,
            "rolled back from {from} to {to}: healthy"
        ),
        Action::RollbackUnhealthy => tracing::error!(
            message_id = message_id::SWITCH_UNHEALTHY,
            qsfs_from = from,
            qsfs_to = to,
            qsfs_reason = reason,
            "the rollback to {to} did not become healthy: {reason}"
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_names_the_probes_that_are_not_ok() {
        assert_eq!(
            verdict(br#"{"schema_version":1,"state":"ok","probes":[]}"#),
            Health::Healthy
        );
        let report = br#"{"state":"failed","probes":[
            {"name":"units","state":"ok","reason":""},
            {"name":"s3","state":"failed","reason":"connection refused"}]}"#;
        assert_eq!(
            verdict(report),
            Health::Unhealthy("qsfs-health: s3 failed: connection refused".into())
        );
        assert!(matches!(verdict(b"garbage"), Health::Unhealthy(r) if r.contains("no report")));
    }
}
