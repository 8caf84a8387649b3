//! The one-shot commands: `check` (every probe once, a table or JSON) and `wait` (a readiness
//! gate that blocks until one probe is ok).

use super::config::HealthConfig;
use super::probes::{human, ProbeName};
use super::report::{Report, Tracker};
use super::runner::Probes;
use super::State;
use crate::clock::now_unix_ms;
use crate::systemd::Systemd;
use std::io::Write;
use std::time::{Duration, Instant};

/// How `check` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The human table.
    Table,
    /// JSON (see [`super::report`]).
    Json,
}

/// Connects to systemd on the system bus within `timeout`; the error is a short text.
pub async fn connect_systemd(timeout: Duration, job_timeout: Duration) -> Result<Systemd, String> {
    match tokio::time::timeout(timeout, Systemd::connect(job_timeout)).await {
        Ok(Ok(systemd)) => Ok(systemd),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer from the system bus within {}",
            human(timeout)
        )),
    }
}

/// The probes of `config` for `which`, connected to systemd when the units probe is among them.
pub async fn probes_for(config: &HealthConfig, which: &[ProbeName]) -> Probes<Systemd> {
    let health = &config.health;
    let systemd = if which.contains(&ProbeName::Units) {
        connect_systemd(
            health.timeout(ProbeName::Units),
            health.remediation.job_timeout,
        )
        .await
    } else {
        Err("not needed".into())
    };
    Probes::new(config, systemd)
}

/// Runs the probes in `which` (the configured ones when empty) once and returns the report.
/// The since-timestamps come from `serve`'s status file when it is fresh.
pub async fn check(config: &HealthConfig, which: &[ProbeName]) -> Report {
    let health = &config.health;
    let which: Vec<ProbeName> = if which.is_empty() {
        health.probes.clone()
    } else {
        which.to_vec()
    };
    let probes = probes_for(config, &which).await;
    let findings = probes.run_all(&which).await;
    let now = now_unix_ms();
    let fresh_for = 3 * health.interval.as_millis() as u64 + 5000;
    let mut tracker = Report::read(&health.status_file)
        .filter(|r| now.saturating_sub(r.checked_unix_ms) <= fresh_for)
        .map(|r| Tracker::from_report(&r))
        .unwrap_or_default();
    tracker.report(&findings, now)
}

/// Prints `report` in `format` to stdout and returns the exit code for its state.
pub fn print(report: &Report, format: Format, all_parts: bool) -> i32 {
    let text = match format {
        Format::Table => report.to_table(all_parts),
        Format::Json => report.to_json(),
    };
    // The caller exits with `std::process::exit`, which does not flush stdout.
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return crate::exit::IO_ERROR;
    }
    report.state.exit_code()
}

/// Polls `probe` every `interval` until it is ok (exit code 0) or `timeout` passes (the
/// state's exit code, with the last reason on stderr).
pub async fn wait(
    config: &HealthConfig,
    probe: ProbeName,
    timeout: Duration,
    interval: Duration,
) -> i32 {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut probes = probes_for(config, &[probe]).await;
    loop {
        let finding = probes.run(probe).await;
        if finding.outcome.state == State::Ok {
            eprintln!(
                "qsfs-health: {probe} ok after {}: {}",
                human(started.elapsed()),
                finding.outcome.reason
            );
            return 0;
        }
        if Instant::now() + interval >= deadline {
            eprintln!(
                "qsfs-health: {probe} is not ok after {}: {}: {}",
                human(started.elapsed()),
                finding.outcome.state,
                finding.outcome.reason
            );
            return finding.outcome.state.exit_code();
        }
        tokio::time::sleep(interval).await;
        if probe == ProbeName::Units && probes.unit_control().is_none() {
            probes = probes_for(config, &[probe]).await;
        }
    }
}

/// Parses `250ms`, `10s`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 500ms, 30s or 2m"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("`{text}`: {e}"))
}

/// `flush`: writes zdbfs's cache to zdb, bounded by `timeout`. Returns the exit code.
pub async fn flush(mountpoint: &std::path::Path, timeout: Duration) -> i32 {
    match crate::zdbfs::is_mounted(mountpoint) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!(
                "qsfs-health: no zdbfs mounted at {}, nothing to flush",
                mountpoint.display()
            );
            return crate::exit::OK;
        }
        Err(e) => {
            eprintln!("qsfs-health: {e}");
            return crate::exit::FAILURE;
        }
    }
    let path = mountpoint.to_path_buf();
    let started = std::time::Instant::now();
    match crate::lane::Lane::new()
        .run(timeout, move || crate::zdbfs::snapshot(&path))
        .await
    {
        Ok(Ok(_)) => {
            eprintln!(
                "qsfs-health: zdbfs's cache written to zdb in {}",
                crate::clock::human(started.elapsed())
            );
            crate::exit::OK
        }
        Ok(Err(e)) => {
            eprintln!(
                "qsfs-health: the snapshot ioctl on {} failed: {e}",
                mountpoint.display()
            );
            crate::exit::FAILURE
        }
        Err(e) => {
            eprintln!(
                "qsfs-health: the snapshot ioctl on {}: {e}",
                mountpoint.display()
            );
            crate::exit::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
    }
}
