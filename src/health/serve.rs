//! `qsfs-health serve`: the daemon (`Type=notify`). Every interval it runs the probes, writes
//! the report to the status file, logs state changes, remediates (see [`super::remediation`]),
//! updates the metrics, tells systemd a STATUS summary and pings the watchdog once the round
//! has completed. READY=1 follows the first round.

use super::check::connect_systemd;
use super::config::HealthConfig;
use super::metrics::{self, RemediationView};
use super::probes::ProbeName;
use super::remediation::{Remediation, SystemClock};
use super::report::{Report, Tracker};
use super::runner::Probes;
use crate::clock::now_unix_ms;
use crate::logging::message_id;
use crate::metrics::Shared;
use crate::notify::Notifier;
use crate::systemd::Systemd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

/// Options of `serve` that override the config (for tests and benchmarks).
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Time between rounds, instead of `interval_secs`.
    pub interval: Option<Duration>,
    /// Stop after this many rounds.
    pub rounds: Option<u64>,
}

struct Parts {
    probes: Probes<Systemd>,
    remediation: Option<Remediation<Systemd, SystemClock>>,
}

/// Connects to systemd and sets up the probes and remediation. Only the first failure to reach
/// systemd is logged as a warning (`serve` tries again every round).
async fn connect(config: &HealthConfig, first: bool) -> Parts {
    let health = &config.health;
    let systemd = connect_systemd(
        health.timeout(ProbeName::Units),
        health.remediation.job_timeout,
    )
    .await;
    match &systemd {
        Err(e) if first => {
            tracing::warn!("cannot reach systemd, so no unit states and no restarts for now: {e}")
        }
        Err(e) => tracing::debug!("still cannot reach systemd: {e}"),
        Ok(_) if !first => tracing::info!("reached systemd"),
        Ok(_) => {}
    }
    let remediation = match &systemd {
        Ok(systemd) if !health.remediation.restart.is_empty() => Some(Remediation::new(
            &health.remediation,
            systemd.clone(),
            SystemClock,
            &config.paths.mountpoint,
            health.timeout(ProbeName::Mount),
        )),
        _ => None,
    };
    Parts {
        probes: Probes::new(config, systemd),
        remediation,
    }
}

/// Runs until SIGTERM or SIGINT (or `options.rounds`); returns the exit code.
pub async fn serve(config: HealthConfig, options: ServeOptions) -> i32 {
    let health = config.health.clone();
    let interval = options.interval.unwrap_or(health.interval);
    let notifier = Notifier::from_env();
    let (mut sigterm, mut sigint) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers");
            return crate::exit::SOFTWARE;
        }
    };
    let metrics_text: Shared = Arc::new(Mutex::new(String::new()));
    let metrics_task = match &health.metrics {
        Some(address) => match crate::metrics::spawn(address, metrics_text.clone()).await {
            Ok(task) => {
                tracing::info!("metrics at {address}/metrics");
                Some(task)
            }
            Err(e) => {
                tracing::error!("cannot listen for metrics on {address}: {e}");
                return crate::exit::UNAVAILABLE;
            }
        },
        None => None,
    };
    let mut parts = connect(&config, true).await;
    let mut tracker = Report::read(&health.status_file)
        .filter(|r| {
            now_unix_ms().saturating_sub(r.checked_unix_ms) <= 3 * interval.as_millis() as u64
        })
        .map(|r| Tracker::from_report(&r))
        .unwrap_or_default();
    let mut previous: Option<Report> = None;
    let mut rounds: u64 = 0;
    let mut status_file_error = false;
    let mut last_round = Instant::now();
    let watchdog_every = notifier.watchdog_interval();
    loop {
        let wants_systemd =
            health.enabled(ProbeName::Units) || !health.remediation.restart.is_empty();
        if rounds > 0 && wants_systemd && parts.probes.unit_control().is_none() {
            parts = connect(&config, false).await;
        }
        let findings = parts.probes.run_all(&health.probes).await;
        let report = tracker.report(&findings, now_unix_ms());
        log_changes(previous.as_ref(), &report);
        match report.write(&health.status_file) {
            Ok(()) => status_file_error = false,
            Err(e) if !status_file_error => {
                status_file_error = true;
                tracing::warn!(
                    "cannot write the status file {}: {e}",
                    health.status_file.display()
                );
            }
            Err(_) => {}
        }
        if let Some(remediation) = parts.remediation.as_mut() {
            remediation.round(&findings).await;
        }
        rounds += 1;
        let counters = parts
            .remediation
            .as_ref()
            .map(|r| r.counters())
            .unwrap_or_default();
        let view = parts.remediation.as_ref().map(|r| RemediationView {
            remediator: r.remediator(),
            enabled: r.enabled(),
            counters: &counters,
        });
        let text = metrics::render(&report, rounds, view);
        *metrics_text.lock().unwrap_or_else(|e| e.into_inner()) = text;
        if rounds == 1 {
            notifier.ready(&report.summary());
        } else {
            notifier.status(&report.summary());
        }
        notifier.watchdog();
        last_round = Instant::now().max(last_round);
        previous = Some(report);
        if options.rounds.is_some_and(|n| rounds >= n) {
            break;
        }
        // Between rounds, keep the watchdog fed while the loop is demonstrably alive (the last
        // round finished less than one interval ago); a stuck round stops the pings.
        let next = last_round + interval;
        let stop = loop {
            let wake = match watchdog_every {
                Some(every) => next.min(Instant::now() + every),
                None => next,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = sigterm.recv() => break true,
                _ = sigint.recv() => break true,
            }
            if Instant::now() >= next {
                break false;
            }
            notifier.watchdog();
        };
        if stop {
            break;
        }
    }
    notifier.stopping();
    if let Some(remediation) = parts.remediation.as_mut() {
        // A restart job that is running goes on in systemd; we only stop waiting for it.
        let _ = tokio::time::timeout(Duration::from_secs(1), remediation.wait_idle()).await;
    }
    if let Some(task) = metrics_task {
        task.abort();
        if let Some(crate::metrics::Address::Unix(path)) = &health.metrics {
            let _ = std::fs::remove_file(path);
        }
    }
    crate::exit::OK
}

/// Logs every probe whose state changed since the previous round (every probe that is not ok in
/// the first round).
fn log_changes(previous: Option<&Report>, report: &Report) {
    for probe in &report.probes {
        let before = previous.and_then(|p| p.probes.iter().find(|q| q.name == probe.name));
        let changed = match before {
            Some(before) => before.state != probe.state,
            None => probe.state != super::State::Ok,
        };
        if !changed {
            continue;
        }
        let from = before.map_or("start", |b| b.state.as_str());
        if probe.state > before.map_or(super::State::Ok, |b| b.state) {
            tracing::warn!(
                message_id = message_id::HEALTH_STATE_CHANGED,
                qsfs_probe = probe.name.as_str(),
                qsfs_state = probe.state.as_str(),
                "{} {from} -> {}: {}",
                probe.name,
                probe.state,
                probe.reason
            );
        } else {
            tracing::info!(
                message_id = message_id::HEALTH_STATE_CHANGED,
                qsfs_probe = probe.name.as_str(),
                qsfs_state = probe.state.as_str(),
                "{} {from} -> {}: {}",
                probe.name,
                probe.state,
                probe.reason
            );
        }
    }
}
