//! `qsfs-image try`: an image booted in a throwaway container on the operator's machine, its
//! target started, S3 PUTs and GETs, its sealed files verified remote and `qsfs-health check`
//! ok, then the container removed; a report of every step with its time.
//!
//! [`Report`] and the verdicts on what the container answers ([`units_verdict`],
//! [`sealed_verdict`], [`health_verdict`]) are pure; [`run`] does the I/O, with
//! [`container`] (systemd-nspawn) and [`s3`] (a SigV4 client).

pub mod container;
pub mod s3;

use super::layout;
use crate::monitor::status::UploadStatus;
use container::{wait_until, Container};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Booting the container, up to `systemctl is-system-running` saying running.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// From `systemctl start qsfs.target` to every unit active.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// From the last PUT to every sealed file verified remote.
const SEALED_TIMEOUT: Duration = Duration::from_secs(120);
/// Until `qsfs-health check` says ok.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(90);
/// The bucket of the trial objects.
pub const BUCKET: &str = "qsfs-try";
/// Where a `--site` file is copied inside the container, for `configure` (then removed).
const SITE_IN_CONTAINER: &str = "root/qsfs-try-site.toml";

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The rootfs to boot (given, cached, or built now with debootstrap).
    Rootfs,
    /// The image checked (refused if unsafe) and unpacked into a copy of the rootfs.
    Unpack,
    /// The container booted with systemd.
    Boot,
    /// `install-config` and `configure` (with `--site`) inside.
    Configure,
    /// `systemctl start qsfs.target`, every unit it wants active.
    Start,
    /// A bucket, objects PUT and GET back byte-identical.
    S3,
    /// Every sealed file verified remote.
    Sealed,
    /// `qsfs-health check` ok.
    Health,
    /// The container removed (or kept with `--keep`).
    Remove,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 9] = [
        Step::Rootfs,
        Step::Unpack,
        Step::Boot,
        Step::Configure,
        Step::Start,
        Step::S3,
        Step::Sealed,
        Step::Health,
        Step::Remove,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Step::Rootfs => "rootfs",
            Step::Unpack => "unpack",
            Step::Boot => "boot",
            Step::Configure => "configure",
            Step::Start => "start",
            Step::S3 => "s3",
            Step::Sealed => "sealed",
            Step::Health => "health",
            Step::Remove => "remove",
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It did what it should.
    Ok,
    /// It failed: the steps after it (but the removal) are skipped.
    Failed,
    /// Not run, because an earlier step failed.
    Skipped,
}

/// One step of the report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step.
    pub step: Step,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took, seconds.
    pub secs: f64,
    /// What it did, or why it failed.
    pub detail: String,
}

/// The report of a trial.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The image tried.
    pub image: String,
    /// Every step so far, in order.
    pub steps: Vec<StepReport>,
    /// The whole trial, seconds.
    pub total_secs: f64,
}

impl Report {
    /// An empty report for `image`.
    pub fn new(image: &Path) -> Report {
        Report {
            image: image.display().to_string(),
            steps: Vec::new(),
            total_secs: 0.0,
        }
    }

    /// The step that failed, if one did.
    pub fn failed_step(&self) -> Option<Step> {
        self.steps
            .iter()
            .find(|s| s.outcome == Outcome::Failed)
            .map(|s| s.step)
    }

    /// Whether `step` runs: every step while none failed, and the removal always.
    pub fn runs(&self, step: Step) -> bool {
        step == Step::Remove || self.failed_step().is_none()
    }

    /// Records how `step` ended after `took`.
    pub fn record(&mut self, step: Step, took: Duration, result: Result<String, String>) {
        let (outcome, detail) = match result {
            Ok(detail) => (Outcome::Ok, detail),
            Err(detail) => (Outcome::Failed, detail),
        };
        self.steps.push(StepReport {
            step,
            outcome,
            secs: took.as_secs_f64(),
            detail,
        });
    }

    /// Records `step` as skipped.
    pub fn skip(&mut self, step: Step) {
        self.steps.push(StepReport {
            step,
            outcome: Outcome::Skipped,
            secs: 0.0,
            detail: String::new(),
        });
    }

    /// 0 when every step was ok, else [`super::exit::TRY_FAILED`].
    pub fn exit_code(&self) -> i32 {
        match self.failed_step() {
            None => super::exit::OK,
            Some(_) => super::exit::TRY_FAILED,
        }
    }

    /// The human-readable report: a line per step (details indented below), then the total.
    pub fn to_text(&self) -> String {
        let mut text = format!("try {}\n", self.image);
        for s in &self.steps {
            let label = match s.outcome {
                Outcome::Ok => "ok",
                Outcome::Failed => "FAILED",
                Outcome::Skipped => "skipped",
            };
            let mut lines = s.detail.lines();
            let first = lines.next().unwrap_or_default();
            if s.outcome == Outcome::Skipped {
                text.push_str(&format!("  {label:<8} {:<10}\n", s.step.name()));
                continue;
            }
            text.push_str(&format!(
                "  {label:<8} {:<10} {:>6.1} s  {first}\n",
                s.step.name(),
                s.secs
            ));
            for line in lines {
                text.push_str(&format!("{:>32}{line}\n", ""));
            }
        }
        match self.failed_step() {
            None => text.push_str(&format!("try: every step ok in {:.1} s\n", self.total_secs)),
            Some(step) => text.push_str(&format!(
                "try: FAILED at {} after {:.1} s\n",
                step.name(),
                self.total_secs
            )),
        }
        text
    }
}

/// What `qsfs-image try` is given.
pub struct TrialOptions {
    /// The image tarball.
    pub image: PathBuf,
    /// Site settings for `configure --site` inside.
    pub site: Option<PathBuf>,
    /// Leave the container running at the end.
    pub keep: bool,
    /// The rootfs to copy instead of the cached one.
    pub rootfs: Option<PathBuf>,
    /// Where the cached rootfs lives (see [`crate::layout::TRY_CACHE_DIR`]).
    pub cache_dir: PathBuf,
    /// Where containers are made (see [`crate::layout::TRY_WORK_DIR`]).
    pub work_dir: PathBuf,
}

/// One unit's state, from `systemctl show -p Id,ActiveState,NRestarts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// The unit.
    pub id: String,
    /// `active`, `activating`, `failed`…
    pub active_state: String,
    /// How often systemd restarted it.
    pub restarts: u32,
    /// How its main process ended, when it did (`ExecMainCode`: 1 exited, 2 killed, 3 dumped
    /// core), and its status (exit status or signal).
    pub main_exit: Option<(u32, i32)>,
}

impl UnitState {
    /// Why it will not become active, if it will not: failed, restarted again and again, or
    /// its main process ended with an error while it is not active (its start-post would
    /// only wait for its timeout).
    pub fn broken(&self) -> Option<String> {
        if self.active_state == "failed" {
            return Some("failed".into());
        }
        if self.restarts >= 2 {
            return Some(format!("restarted {} times", self.restarts));
        }
        match self.main_exit {
            Some((code, status)) if self.active_state != "active" && (code != 1 || status != 0) => {
                let how = match code {
                    1 => format!("exited with status {status}"),
                    _ => format!("was killed by signal {status}"),
                };
                Some(format!("{}: its main process {how}", self.active_state))
            }
            _ => None,
        }
    }
}

/// The properties [`parse_unit_states`] reads.
pub const UNIT_PROPERTIES: &str = "Id,ActiveState,NRestarts,ExecMainCode,ExecMainStatus";

/// Parses `systemctl show -p` [`UNIT_PROPERTIES`] `UNIT…` (blocks separated by blank lines).
pub fn parse_unit_states(text: &str) -> Vec<UnitState> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut state = UnitState {
                id: String::new(),
                active_state: String::new(),
                restarts: 0,
                main_exit: None,
            };
            let (mut code, mut status) = (0, 0);
            for line in block.lines() {
                match line.split_once('=') {
                    Some(("Id", v)) => state.id = v.to_string(),
                    Some(("ActiveState", v)) => state.active_state = v.to_string(),
                    Some(("NRestarts", v)) => state.restarts = v.parse().unwrap_or(0),
                    Some(("ExecMainCode", v)) => code = v.parse().unwrap_or(0),
                    Some(("ExecMainStatus", v)) => status = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            state.main_exit = (code != 0).then_some((code, status));
            (!state.id.is_empty()).then_some(state)
        })
        .collect()
}

/// Where the units are: `Ok` when all are active; `Err(Some((unit, why)))` when one will not
/// become active ([`UnitState::broken`]), `Err(None)` while some are still starting.
pub fn units_verdict(states: &[UnitState]) -> Result<(), Option<(&UnitState, String)>> {
    if let Some(bad) = states.iter().find_map(|s| s.broken().map(|why| (s, why))) {
        return Err(Some(bad));
    }
    if states.is_empty() || states.iter().any(|s| s.active_state != "active") {
        return Err(None);
    }
    Ok(())
}

/// Whether the monitor has verified every sealed file remote: `Ok(what)` once at least one is
/// verified and none is unverified, queued, in flight or waiting in the spool; else what is
/// pending.
pub fn sealed_verdict(uploads: &UploadStatus) -> Result<String, String> {
    let pending = uploads.unverified_files + uploads.queued_files + uploads.in_flight;
    if uploads.verified_files == 0 || pending + uploads.spool_jobs > 0 {
        return Err(format!(
            "{} sealed files verified remote; {} not verified, {} queued, {} in flight, {} spool \
             jobs{}",
            uploads.verified_files,
            uploads.unverified_files,
            uploads.queued_files,
            uploads.in_flight,
            uploads.spool_jobs,
            uploads
                .last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ));
    }
    Ok(format!(
        "{} sealed files verified remote, none pending ({} uploads verified)",
        uploads.verified_files, uploads.verified_total
    ))
}

/// `qsfs-health check --format json`: `Ok` when its state is ok, else every probe not ok
/// with its reason.
pub fn health_verdict(health: &serde_json::Value) -> Result<String, String> {
    let state = health["state"].as_str().unwrap_or("unknown");
    let probes = health["probes"].as_array().cloned().unwrap_or_default();
    if state == "ok" {
        return Ok(format!("state ok ({} probes)", probes.len()));
    }
    let mut why = format!("state {state}");
    for probe in probes.iter().filter(|p| p["state"] != "ok") {
        why.push_str(&format!(
            "\n{}: {} ({})",
            probe["name"].as_str().unwrap_or("?"),
            probe["state"].as_str().unwrap_or("?"),
            probe["reason"].as_str().unwrap_or_default()
        ));
    }
    Err(why)
}

/// The `HOST:PORT` to reach MinIO's `--address` from the host (the container shares its
/// network): the wildcard addresses are reached on the loopback.
pub fn s3_host(address: &str) -> Result<String, String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("MINIO_ADDRESS `{address}` has no port"))?;
    port.parse::<u16>()
        .map_err(|_| format!("MINIO_ADDRESS `{address}`: `{port}` is not a port"))?;
    let host = match host {
        "" | "0.0.0.0" | "[::]" | "::" => "127.0.0.1",
        other => other,
    };
    Ok(format!("{host}:{port}"))
}

/// `KEY=value` of an environment file.
fn env_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

/// The trial objects: (key, content); the last one is larger than `datasize`, so that zdb
/// seals a data file.
pub fn objects(datasize: u64) -> Vec<(String, Vec<u8>)> {
    [4 * 1024, 300 * 1024, datasize + (1 << 20)]
        .iter()
        .enumerate()
        .map(|(n, &size)| {
            let content = (0..size)
                .map(|i| (i.wrapping_mul(n as u64 + 13) % 251) as u8)
                .collect();
            (format!("object-{n}"), content)
        })
        .collect()
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

/// The state of a trial between its steps.
struct Trial<'a> {
    options: &'a TrialOptions,
    rootfs: Option<PathBuf>,
    container: Option<Container>,
}

impl Trial<'_> {
    fn container(&self) -> Result<&Container, String> {
        self.container
            .as_ref()
            .ok_or_else(|| "no container".to_string())
    }

    fn step(&mut self, step: Step) -> Result<String, String> {
        match step {
            Step::Rootfs => self.rootfs(),
            Step::Unpack => self.unpack(),
            Step::Boot => {
                let container = self.container.as_mut().ok_or("no container")?;
                container.boot(BOOT_TIMEOUT)?;
                Ok(format!(
                    "systemd running in {} (PID 1 is {} on the host)",
                    container.dir().display(),
                    container.leader()
                ))
            }
            Step::Configure => self.configure(),
            Step::Start => self.start(),
            Step::S3 => self.s3(),
            Step::Sealed => self.sealed(),
            Step::Health => self.health(),
            Step::Remove => self.remove(),
        }
    }

    fn rootfs(&mut self) -> Result<String, String> {
        container::check_host()?;
        let (dir, built) =
            container::rootfs(self.options.rootfs.as_deref(), &self.options.cache_dir)?;
        let how = match (&self.options.rootfs, built) {
            (Some(_), _) => "given",
            (None, true) => "built now with debootstrap",
            (None, false) => "cached",
        };
        let detail = format!("{} ({how})", dir.display());
        self.rootfs = Some(dir);
        Ok(detail)
    }

    fn unpack(&mut self) -> Result<String, String> {
        let image = &self.options.image;
        let report = super::verify::verify_tarball(image, None).map_err(|e| e.to_string())?;
        if report.failures() > 0 {
            return Err(report.to_text());
        }
        let rootfs = self.rootfs.as_deref().ok_or("no rootfs")?;
        let name = format!("qsfs-try-{}", std::process::id());
        let container =
            self.container
                .insert(Container::create(&name, rootfs, &self.options.work_dir)?);
        let entries =
            super::tarball::unpack(image, &container.root()).map_err(|e| e.to_string())?;
        if let Some(site) = &self.options.site {
            let target = container.root().join(SITE_IN_CONTAINER);
            std::fs::copy(site, &target)
                .and_then(|_| {
                    std::fs::set_permissions(
                        &target,
                        std::os::unix::fs::PermissionsExt::from_mode(0o600),
                    )
                })
                .map_err(|e| format!("cannot copy {}: {e}", site.display()))?;
        }
        Ok(format!(
            "{} verified, {entries} entries unpacked into a copy of the rootfs",
            report.image
        ))
    }

    fn configure(&mut self) -> Result<String, String> {
        let container = self.container()?;
        let bin = format!("/{}", layout::BIN);
        let configure = match self.options.site {
            Some(_) => format!("{bin}/qsfs-image configure --force --site /{SITE_IN_CONTAINER}"),
            None => format!("{bin}/qsfs-image configure"),
        };
        let result = container.ok(&format!(
            "{bin}/qsfs-image install-config --root / && {configure}"
        ));
        let _ = std::fs::remove_file(container.root().join(SITE_IN_CONTAINER));
        let out = result?;
        Ok(out.lines().last().unwrap_or("configured").to_string())
    }

    fn start(&mut self) -> Result<String, String> {
        let container = self.container()?;
        let started = Instant::now();
        container.ok("systemctl start --no-block qsfs.target")?;
        let wants = container.ok("systemctl show -P Wants qsfs.target")?;
        let units: Vec<&str> = wants.split_whitespace().collect();
        if units.is_empty() {
            return Err("qsfs.target wants no unit".into());
        }
        let query = format!("systemctl show -p {UNIT_PROPERTIES} {}", units.join(" "));
        let mut last = Vec::new();
        let verdict = wait_until(Instant::now() + START_TIMEOUT, || {
            last = parse_unit_states(&container.ok(&query).ok()?);
            match units_verdict(&last) {
                Ok(()) => Some(Ok(())),
                Err(Some((bad, why))) => Some(Err((bad.id.clone(), why))),
                Err(None) => None,
            }
        })?;
        let (unit, why) = match verdict {
            Some(Ok(())) => {
                return Ok(format!(
                    "{} units active in {:.1} s: {}",
                    units.len(),
                    started.elapsed().as_secs_f64(),
                    units.join(" ")
                ))
            }
            Some(Err(bad)) => bad,
            None => last
                .iter()
                .find(|s| s.active_state != "active")
                .map(|s| (s.id.clone(), format!("still {}", s.active_state)))
                .unwrap_or_else(|| ("qsfs.target".into(), "not started".into())),
        };
        Err(format!(
            "{unit} is {why} (after {:.0} s); its last journal lines:\n{}",
            started.elapsed().as_secs_f64(),
            container.journal(Some(&unit), 12).trim_end()
        ))
    }

    fn s3(&mut self) -> Result<String, String> {
        let container = self.container()?;
        let env_file = container.root().join(layout::ETC).join(layout::QSFS_ENV);
        let env = std::fs::read_to_string(&env_file)
            .map_err(|e| format!("cannot read {}: {e}", env_file.display()))?;
        let host = s3_host(&env_value(&env, "MINIO_ADDRESS").unwrap_or_default())?;
        let datasize = env_value(&env, "ZDB_DATASIZE")
            .and_then(|v| super::site::parse_size(&v))
            .ok_or_else(|| format!("{}: no ZDB_DATASIZE", env_file.display()))?;
        let client = s3::Client::new(
            &host,
            s3::Credentials {
                access_key: self.credential(layout::MINIO_USER)?,
                secret_key: crate::config::Secret::new(self.credential(layout::MINIO_PASSWORD)?),
            },
        );
        client.create_bucket(BUCKET)?;
        let objects = objects(datasize);
        for (key, content) in &objects {
            client.put(BUCKET, key, content)?;
        }
        for (key, content) in &objects {
            let got = client.get(BUCKET, key)?;
            if got != *content {
                return Err(format!(
                    "GET {BUCKET}/{key}: {} bytes differ from the {} PUT",
                    got.len(),
                    content.len()
                ));
            }
        }
        let sizes: Vec<String> = objects
            .iter()
            .map(|(_, c)| human_size(c.len() as u64))
            .collect();
        Ok(format!(
            "http://{host}: bucket {BUCKET}, {} objects ({}) PUT and GET back identical",
            objects.len(),
            sizes.join(", ")
        ))
    }

    /// A credential of the store (decrypted inside the container when `configure` encrypted
    /// it). Its value is never part of an error.
    fn credential(&self, file: &str) -> Result<String, String> {
        let container = self.container()?;
        let path = format!("/{}/{file}", layout::ETC);
        let name = layout::credential_name(file);
        let script = if super::install::credentials_encrypted(&container.root()) {
            format!("systemd-creds decrypt --name={name} {path} -")
        } else {
            format!("cat {path}")
        };
        let out = container.sh(&script)?;
        if !out.status.success() {
            return Err(format!(
                "cannot read the credential {path} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn sealed(&mut self) -> Result<String, String> {
        let container = self.container()?;
        let status = format!(
            "/{}/zstor_monitor -c /{}/{} status --format json",
            layout::BIN,
            layout::ETC,
            layout::MONITOR_CONFIG
        );
        let mut last = "no status from the monitor".to_string();
        let done = wait_until(Instant::now() + SEALED_TIMEOUT, || {
            let out = container.ok(&status).map_err(|e| last = e).ok()?;
            let status: crate::monitor::status::MonitorStatus = serde_json::from_str(&out)
                .map_err(|e| last = format!("the monitor's status: {e}"))
                .ok()?;
            sealed_verdict(&status.uploads).map_err(|e| last = e).ok()
        })?;
        done.ok_or_else(|| format!("after {} s: {last}", SEALED_TIMEOUT.as_secs()))
    }

    fn health(&mut self) -> Result<String, String> {
        let container = self.container()?;
        let check = format!("/{}/qsfs-health check --format json", layout::BIN);
        let mut last = "no answer from qsfs-health".to_string();
        let done = wait_until(Instant::now() + HEALTH_TIMEOUT, || {
            let out = container.sh(&check).map_err(|e| last = e).ok()?;
            let health: serde_json::Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| last = format!("qsfs-health check: {e}"))
                .ok()?;
            health_verdict(&health).map_err(|e| last = e).ok()
        })?;
        done.ok_or_else(|| format!("after {} s: {last}", HEALTH_TIMEOUT.as_secs()))
    }

    fn remove(&mut self) -> Result<String, String> {
        let Some(container) = self.container.as_mut() else {
            return Ok("no container was made".into());
        };
        if self.options.keep && !container::interrupted() {
            container.keep();
            let dir = container.dir().display().to_string();
            return Ok(match container.nspawn_pid() {
                Some(_) => format!(
                    "kept in {dir}\nenter it:  nsenter -t {} -a /bin/bash\nremove it: kill -KILL {} && rm -rf {dir}",
                    container.leader(),
                    container.leader()
                ),
                None => format!("kept in {dir} (not running)\nremove it: rm -rf {dir}"),
            });
        }
        let dir = container.dir().display().to_string();
        container.remove()?;
        Ok(format!("{dir} removed"))
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    container::INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Runs every step (after a failure only the removal) and returns the report. SIGINT and
/// SIGTERM stop the waits; the container is removed then too.
pub fn run(options: &TrialOptions) -> Report {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(signal, &action) };
    }
    let started = Instant::now();
    let mut report = Report::new(&options.image);
    let mut trial = Trial {
        options,
        rootfs: None,
        container: None,
    };
    for step in Step::ALL {
        if !report.runs(step) {
            report.skip(step);
            continue;
        }
        let began = Instant::now();
        let result = if container::interrupted() && step != Step::Remove {
            Err("interrupted (SIGINT or SIGTERM)".to_string())
        } else {
            trial.step(step)
        };
        report.record(step, began.elapsed(), result);
    }
    report.total_secs = started.elapsed().as_secs_f64();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_skips_the_rest_but_the_removal() {
        let mut report = Report::new(Path::new("qsfs.tar.gz"));
        for step in Step::ALL {
            if !report.runs(step) {
                report.skip(step);
                continue;
            }
            let result = match step {
                Step::Start => Err("qsfs-minio.service is failed".to_string()),
                _ => Ok(format!("{} done", step.name())),
            };
            report.record(step, Duration::from_millis(1500), result);
        }
        report.total_secs = 12.25;
        assert_eq!(report.failed_step(), Some(Step::Start));
        assert_eq!(report.exit_code(), super::super::exit::TRY_FAILED);
        let outcomes: Vec<Outcome> = report.steps.iter().map(|s| s.outcome).collect();
        use Outcome::{Failed as F, Ok as O, Skipped as S};
        assert_eq!(outcomes, [O, O, O, O, F, S, S, S, O]);
        let text = report.to_text();
        assert!(
            text.contains("  FAILED   start         1.5 s  qsfs-minio.service is failed\n"),
            "{text}"
        );
        assert!(text.contains("  skipped  s3"), "{text}");
        assert!(
            text.ends_with("try: FAILED at start after 12.2 s\n"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["steps"][4]["step"], "start");
        assert_eq!(json["steps"][4]["outcome"], "failed");
        assert_eq!(json["steps"][8]["outcome"], "ok");
    }

    #[test]
    fn every_step_ok_exits_0_with_the_total() {
        let mut report = Report::new(Path::new("demo.tar.gz"));
        for step in Step::ALL {
            report.record(
                step,
                Duration::from_secs(1),
                Ok("line one\nline two".into()),
            );
        }
        report.total_secs = 9.0;
        assert_eq!(report.exit_code(), 0);
        let text = report.to_text();
        assert!(text.contains("line one\n"), "{text}");
        assert!(text.contains("      line two\n"), "{text}");
        assert!(text.ends_with("try: every step ok in 9.0 s\n"), "{text}");
    }

    #[test]
    fn unit_states_and_their_verdict() {
        let states = parse_unit_states(
            "Id=qsfs-zdb.service\nActiveState=active\nNRestarts=0\nExecMainCode=0\nExecMainStatus=0\n\n\
             Id=qsfs-minio.service\nActiveState=activating\nNRestarts=1\nExecMainCode=0\nExecMainStatus=0\n",
        );
        assert_eq!(states.len(), 2);
        assert_eq!(states[1].main_exit, None);
        assert_eq!(units_verdict(&states), Err(None));
        let why = |states: &[UnitState]| {
            let (unit, why) = units_verdict(states).unwrap_err().unwrap();
            format!("{} {why}", unit.id)
        };
        let mut failing = states.clone();
        failing[1].restarts = 2;
        assert_eq!(why(&failing), "qsfs-minio.service restarted 2 times");
        let mut exited = states.clone();
        exited[1].main_exit = Some((1, 1));
        assert_eq!(
            why(&exited),
            "qsfs-minio.service activating: its main process exited with status 1"
        );
        exited[1].main_exit = Some((2, 9));
        assert_eq!(
            why(&exited),
            "qsfs-minio.service activating: its main process was killed by signal 9"
        );
        let mut active = states.clone();
        active[1].active_state = "active".into();
        assert_eq!(units_verdict(&active), Ok(()));
        // A oneshot's main process that exited 0 is no failure.
        active[1].main_exit = Some((1, 0));
        assert_eq!(units_verdict(&active), Ok(()));
        active[0].active_state = "failed".into();
        assert_eq!(why(&active), "qsfs-zdb.service failed");
        assert_eq!(units_verdict(&[]), Err(None));
    }

    #[test]
    fn sealed_files_verified_once_nothing_is_pending() {
        let mut uploads = UploadStatus {
            tracked_files: 3,
            verified_files: 2,
            queued_files: 1,
            ..UploadStatus::default()
        };
        assert!(sealed_verdict(&uploads)
            .unwrap_err()
            .starts_with("2 sealed files verified remote; 0 not verified, 1 queued"));
        uploads.queued_files = 0;
        uploads.unverified_files = 1;
        assert!(
            sealed_verdict(&uploads).is_err(),
            "the next reconciliation queues it"
        );
        uploads.unverified_files = 0;
        assert_eq!(
            sealed_verdict(&uploads).unwrap(),
            "2 sealed files verified remote, none pending (0 uploads verified)"
        );
        uploads.verified_files = 0;
        assert!(sealed_verdict(&uploads).is_err(), "none sealed yet");
    }

    #[test]
    fn health_verdict_names_each_probe_not_ok() {
        let health = serde_json::json!({"state": "degraded", "probes": [
            {"name": "zdb", "state": "ok", "reason": ""},
            {"name": "backends", "state": "degraded", "reason": "2 of 6 unreachable"}]});
        assert_eq!(
            health_verdict(&health).unwrap_err(),
            "state degraded\nbackends: degraded (2 of 6 unreachable)"
        );
        let ok = serde_json::json!({"state": "ok", "probes": [{"name": "zdb", "state": "ok"}]});
        assert_eq!(health_verdict(&ok).unwrap(), "state ok (1 probes)");
    }

    #[test]
    fn s3_hosts_and_objects() {
        assert_eq!(s3_host(":9000").unwrap(), "127.0.0.1:9000");
        assert_eq!(s3_host("[::]:9000").unwrap(), "127.0.0.1:9000");
        assert_eq!(s3_host("10.0.0.2:9100").unwrap(), "10.0.0.2:9100");
        assert!(s3_host("9000").is_err());
        assert!(s3_host(":http").is_err());
        let objects = objects(1 << 20);
        assert_eq!(objects.len(), 3);
        assert!(objects[2].1.len() as u64 > 1 << 20);
        assert_ne!(objects[0].1[..100], objects[1].1[..100]);
        assert_eq!(
            env_value("A=1\nMINIO_ADDRESS=:9000\n", "MINIO_ADDRESS").as_deref(),
            Some(":9000")
        );
    }
}
