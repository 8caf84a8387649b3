//! The daemon: the I/O actor around the monitor's pure parts. One event loop owns the upload
//! [`Queue`], the backend states and the [`Rebuild`]; blocking work (zstor, hashing, NSINFO,
//! HTTP, the zdbfs ioctl) runs as [`Tasks`] and ends in an [`Event`]. The durable state is
//! shared behind a mutex that is held only for short updates.

use super::backends::{self, Observation};
use super::damaged;
use super::files::Roots;
use super::flush;
use super::metrics;
use super::queue::{Queue, Upload};
use super::rebuild::{self, Rebuild};
use super::reconcile;
use super::state::{lock, State};
use super::status::{
    BackendStatus, CacheStatus, ErrorStatus, Failure, MonitorStatus, RebuildStatus, UploadStatus,
    ZdbfsStatus, SCHEMA_VERSION,
};
use super::tasks::Tasks;
use super::upload::{Stored, UploadError};
use crate::clock::now_unix_ms;
use crate::config::monitor::MonitorConfig;
use crate::config::ConfigError;
use crate::notify::Notifier;
use crate::retry::Backoff;
use crate::spool::Spool;
use crate::zstor::config::ZstorConfig;
use crate::zstor::Zstor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{interval, Interval, MissedTickBehavior};

mod repair;
mod upkeep;
mod uploads;

/// How often the restore points taken are looked for (and published).
const CUT_POLL: Duration = Duration::from_secs(2);
/// How often the spool is listed for new jobs.
const SPOOL_POLL: Duration = Duration::from_millis(500);
/// Leftovers of interrupted hooks older than this are removed from the spool.
const SPOOL_GARBAGE_AGE: Duration = Duration::from_secs(600);
/// Backend checks running at once.
const BACKEND_CHECKS_AT_ONCE: usize = 10;
/// How long the loop sleeps when no timer is due (it wakes on every event anyway).
const IDLE: Duration = Duration::from_secs(3600);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state database or the spool cannot be used.
    #[error("{0}")]
    Io(String),
}

impl StartError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(e) => e.exit_code(),
            StartError::Io(_) => crate::exit::IO_ERROR,
        }
    }
}

/// How a task ended.
enum Event {
    Stored(Upload, Result<Stored, UploadError>),
    Verified(Upload, Result<Stored, UploadError>),
    Reconciled(std::io::Result<reconcile::Outcome>),
    Evicted(Result<super::evict::Outcome, String>),
    BackendsChecked(Vec<(String, Observation)>),
    /// A rebuild onto the backend set given ended.
    Rebuilt(rebuild::Task, u64, Result<(), repair::RebuildError>),
    VdcAnswered(String, Result<(), super::vdc::VdcError>),
    Flushed(Result<crate::zdbfs::Stats, String>),
    CutsPublished(Result<super::cuts::Published, String>),
    CutForced(Result<(), String>),
}

#[derive(Default)]
struct Counters {
    verified_total: u64,
    failed_total: u64,
    evicted_total: u64,
    last_error: Option<String>,
    reconciliation: Option<Failure>,
    eviction: Option<Failure>,
}

/// The running monitor.
pub struct Daemon {
    config_path: PathBuf,
    config: MonitorConfig,
    zstor_config_mtime: Option<SystemTime>,
    /// The zstor config as last loaded.
    zstor_config: ZstorConfig,
    /// The backend set the zstor daemon was last asked to load (SIGUSR1), and from when it
    /// runs it for sure.
    zstor_daemon_set: Option<(u64, Instant)>,
    /// zstor for rebuilds (through the daemon, when the config names one).
    zstor: Zstor,
    /// zstor for uploads and their checks: in-process.
    uploads: InProcess,
    roots: Roots,
    spool: Spool,
    state: Arc<Mutex<State>>,
    backend_set: u64,
    queue: Queue,
    backends: Vec<backends::Entry>,
    rebuild: Rebuild,
    tasks: Tasks<Event>,
    counters: Counters,
    cache_used: u64,
    /// Why eviction is paused, while it is.
    eviction_held_back: Option<String>,
    /// Cleared to stop a running eviction between two batches.
    eviction_allowed: Arc<AtomicBool>,
    /// Spool job files that could not be read, and how many polls in a row.
    unreadable_jobs: HashMap<PathBuf, u32>,
    zdbfs: ZdbfsStatus,
    zdbfs_lane: crate::lane::Lane,
    /// Set by SIGTERM/SIGINT: the deadline for the uploads still queued.
    stopping: Option<Instant>,
    /// While stopping: the publishing pass started after the queue drained, and whether it ended.
    final_publish: Option<bool>,
    /// While the state database is behind: the reopen attempts so far and when the next is due.
    state_reopen: Option<(u32, Instant)>,
    started_unix_ms: u64,
    notifier: Notifier,
    metrics_text: crate::metrics::Shared,
}

fn zstor_runner(config: &MonitorConfig) -> Zstor {
    Zstor::new(
        &config.zstor_bin_path,
        &config.zstor_config_path,
        config.zstor_timeout,
    )
    .with_log_file(&config.zstor_log_file)
}

/// zstor for uploads, run in-process (the zstor config without its `socket`, in a private
/// 0600 file): the daemon runs one command at a time, so uploads through it neither ran in
/// parallel nor let zdb's `missing-data` retrieves (which must go through it: zdb has no
/// network) pass before them. Each store is a process of its own, killed at its timeout.
struct InProcess {
    zstor: Zstor,
    /// The config file the commands read; `None` when they read the zstor config itself.
    file: Option<tempfile::NamedTempFile>,
    /// The file before, kept until the next change, for a command started just before.
    _retired: Option<tempfile::NamedTempFile>,
}

impl InProcess {
    /// For `zstor_config` as just loaded; a copy that cannot be written falls back to the
    /// daemon (logged), as before.
    fn new(
        config: &MonitorConfig,
        zstor_config: &ZstorConfig,
        retired: Option<tempfile::NamedTempFile>,
    ) -> Self {
        let through_config = |retired| InProcess {
            zstor: zstor_runner(config),
            file: None,
            _retired: retired,
        };
        let Some(written) = zstor_config.in_process_file() else {
            return through_config(retired);
        };
        match written {
            Ok(file) => InProcess {
                zstor: Zstor::new(&config.zstor_bin_path, file.path(), config.zstor_timeout)
                    .with_log_file(&config.zstor_log_file),
                file: Some(file),
                _retired: retired,
            },
            Err(e) => {
                tracing::error!(
                    "cannot write the in-process zstor config ({e}): uploads go through the \
                     zstor daemon, one at a time"
                );
                through_config(retired)
            }
        }
    }

    /// Whether uploads go through the daemon (the config names one and no copy was written).
    fn through_daemon(&self, zstor_config: &ZstorConfig) -> bool {
        self.file.is_none() && zstor_config.socket.is_some()
    }
}

fn retry_of(config: &MonitorConfig) -> Backoff {
    Backoff::new(config.retry_initial, config.retry_max)
}

/// A timer whose missed ticks are delayed, not bunched.
fn every(period: Duration) -> Interval {
    let mut timer = interval(period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

impl Daemon {
    /// Loads the configs and the state; nothing runs yet.
    pub fn new(config_path: &Path) -> Result<Daemon, StartError> {
        let config = MonitorConfig::load(config_path)?;
        let zstor_config = ZstorConfig::load(&config.zstor_config_path)?;
        let state = State::open(&config.state_dir).map_err(|e| StartError::Io(e.to_string()))?;
        let spool = Spool::new(&config.spool_dir);
        spool.create().map_err(|e| {
            let dir = config.spool_dir.display();
            StartError::Io(format!("cannot create the spool {dir}: {e}"))
        })?;
        let _ = std::fs::remove_dir_all(scratch_dir(&config));
        Ok(Daemon {
            config_path: config_path.to_path_buf(),
            zstor: zstor_runner(&config),
            uploads: InProcess::new(&config, &zstor_config, None),
            roots: Roots {
                index: config.zdb_index_dir_path.clone(),
                data: config.zdb_data_dir_path.clone(),
            },
            backend_set: backends::set_hash(&zstor_config),
            backends: backends::entries(&zstor_config, &[], now_unix_ms()),
            zstor_config_mtime: mtime(&config.zstor_config_path),
            zstor_config,
            zstor_daemon_set: None,
            spool,
            state: Arc::new(Mutex::new(state)),
            queue: Queue::new(retry_of(&config)),
            rebuild: Rebuild::default(),
            tasks: Tasks::new(),
            counters: Counters::default(),
            cache_used: 0,
            eviction_held_back: None,
            eviction_allowed: Arc::new(AtomicBool::new(false)),
            unreadable_jobs: HashMap::new(),
            zdbfs: ZdbfsStatus::default(),
            zdbfs_lane: crate::lane::Lane::new(),
            stopping: None,
            final_publish: None,
            state_reopen: None,
            started_unix_ms: now_unix_ms(),
            notifier: Notifier::from_env(),
            metrics_text: Arc::new(Mutex::new(String::new())),
            config,
        })
    }

    /// Runs until SIGTERM or SIGINT, then lets in-flight uploads finish (up to
    /// `shutdown_timeout_secs`), saves the state and returns.
    pub async fn run(mut self) -> Result<(), StartError> {
        let io = |e: std::io::Error| StartError::Io(e.to_string());
        let mut hangup = signal(SignalKind::hangup()).map_err(io)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(io)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(io)?;
        if let Some(address) = &self.config.metrics_address {
            crate::metrics::spawn(address, self.metrics_text.clone())
                .await
                .map_err(|e| StartError::Io(format!("cannot serve metrics on {address}: {e}")))?;
        }
        if let Some(warning) = self.zstor_config.metrics_warning() {
            tracing::warn!("{warning}");
        }
        if let Ok(removed @ 1..) = self.spool.collect_garbage(SPOOL_GARBAGE_AGE) {
            tracing::info!("removed {removed} leftovers of interrupted hooks from the spool");
        }
        self.poll_spool();
        self.start_rebuild_if_needed();
        self.publish();
        self.notifier.ready(&self.status().summary_line());
        tracing::info!(
            "zstor_monitor ready: {} tracked files, {} spool jobs, {} backends",
            lock(&self.state).len(),
            self.queue.jobs(),
            self.backends.len()
        );
        let mut spool_tick = every(SPOOL_POLL);
        let mut reconcile_tick = every(self.config.reconcile_interval);
        let mut evict_tick = every(self.config.eviction_interval);
        let mut backend_tick = every(self.config.backend_check_interval);
        let mut publish_tick = every(MonitorStatus::PUBLISH_INTERVAL);
        let mut garbage_tick = every(SPOOL_GARBAGE_AGE);
        let mut flush_tick = every(self.config.flush_interval.unwrap_or(IDLE));
        let mut cut_tick = every(CUT_POLL);
        let force_cut = self.config.restore_point_interval;
        let mut force_cut_tick = every(force_cut.unwrap_or(IDLE));
        let mut watchdog_tick = every(self.notifier.watchdog_interval().unwrap_or(IDLE));
        loop {
            self.reopen_state_if_due();
            self.dispatch();
            if let Some(deadline) = self.stopping {
                // Drain: everything queued (the `close` jobs of a zdb that just stopped among
                // them) is uploaded before exiting, unless the deadline comes first.
                // Then the restore point `close` took is published: a VM retired with a stop
                // leaves nothing behind.
                if self.queue.is_empty() && self.rebuild.running() == 0 {
                    let busy = self.tasks.busy(&super::tasks::Activity::PublishCuts);
                    if self.final_publish.is_none() && !busy {
                        self.start_publishing_cuts();
                        if self.final_publish.is_none() {
                            break; // nothing to publish
                        }
                    }
                    if self.final_publish == Some(true) {
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        "{} files still queued at the shutdown deadline; they stay in the spool for the next start",
                        self.queue.len()
                    );
                    break;
                }
            }
            let reopen = self.state_reopen.map(|(_, due)| due);
            let wake = (self.queue.next_due().into_iter())
                .chain(self.stopping)
                .chain(reopen)
                .min();
            let wake_at = tokio::time::Instant::from_std(wake.unwrap_or(Instant::now() + IDLE));
            let running = self.stopping.is_none();
            tokio::select! {
                event = self.tasks.next() => self.handle(event),
                _ = tokio::time::sleep_until(wake_at), if wake.is_some() => {}
                _ = spool_tick.tick(), if running => self.poll_spool(),
                _ = reconcile_tick.tick(), if running => self.start_reconcile(),
                _ = evict_tick.tick(), if running => self.start_eviction(),
                _ = backend_tick.tick(), if running => {
                    self.reload_zstor_config_if_changed();
                    self.start_backend_checks();
                }
                _ = publish_tick.tick() => self.publish(),
                _ = garbage_tick.tick(), if running => { let _ = self.spool.collect_garbage(SPOOL_GARBAGE_AGE); }
                _ = watchdog_tick.tick() => self.notifier.watchdog(),
                _ = flush_tick.tick(), if running && self.config.flush_interval.is_some() => self.start_flush(),
                _ = cut_tick.tick(), if running => self.start_publishing_cuts(),
                _ = force_cut_tick.tick(), if running && force_cut.is_some() => self.start_forcing_cut(),
                _ = hangup.recv() => self.reload(),
                _ = terminate.recv() => self.begin_stop("SIGTERM"),
                _ = interrupt.recv() => self.begin_stop("SIGINT"),
            }
        }
        let mut state = lock(&self.state);
        let saved = match state.failure() {
            Some(_) => state.reopen(),
            None => state.commit(),
        };
        drop(state);
        if let Err(e) = saved {
            tracing::error!("cannot save the state at exit: {e}");
        }
        self.publish();
        tracing::info!("zstor_monitor stopped");
        Ok(())
    }

    fn begin_stop(&mut self, signal: &str) {
        self.notifier.stopping();
        self.poll_spool();
        let timeout = self.config.shutdown_timeout;
        tracing::info!(
            "{signal}: uploading the {} queued files before exiting (at most {} s)",
            self.queue.len(),
            timeout.as_secs()
        );
        self.stopping = Some(Instant::now() + timeout);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Stored(upload, result) => self.stored(upload, result),
            Event::Verified(upload, result) => self.verified(upload, result),
            Event::Reconciled(result) => self.reconciled(result),
            Event::Evicted(Ok(super::evict::Outcome { evicted, used })) => {
                self.counters.evicted_total += evicted;
                self.cache_used = used;
                Failure::track(&mut self.counters.eviction, None, now_unix_ms());
            }
            Event::Evicted(Err(e)) => {
                tracing::error!("eviction failed: {e}");
                Failure::track(&mut self.counters.eviction, Some(e), now_unix_ms());
            }
            Event::BackendsChecked(results) => self.backends_checked(results),
            Event::Rebuilt(task, set, result) => self.rebuilt(task, set, result),
            Event::VdcAnswered(label, result) => self.vdc_answered(label, result),
            Event::CutsPublished(result) => self.cuts_published(result),
            Event::CutForced(Err(e)) => tracing::warn!("cannot have zdb take a restore point: {e}"),
            Event::CutForced(Ok(())) => {}
            Event::Flushed(result) => {
                let mountpoint = self.config.zdbfs_mountpoint.display().to_string();
                flush::record(&mut self.zdbfs, result, &mountpoint);
            }
        }
    }

    // State database.

    /// After a failed write, reopens the state database, first after `retry_initial_secs`,
    /// then at doubling delays up to `retry_max_secs` while reopening fails (the uploads'
    /// backoff). The monitor does not exit instead for systemd to restart it: a restart on a
    /// disk that is still full would fail to open the database and leave no monitor at all
    /// (uploads stopped, the status stale), and the in-memory table that a reopen writes back
    /// would be lost, to be re-derived by re-hashing and re-uploading. Meanwhile uploads go on
    /// (their records wait in memory), eviction deletes nothing (its marks cannot be made
    /// durable), and the status, metrics and health name the failure.
    fn reopen_state_if_due(&mut self) {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let Some(failure) = state.failure() else {
            self.state_reopen = None;
            return;
        };
        let retry = retry_of(&self.config);
        match self.state_reopen {
            None => {
                tracing::error!(
                    "the state database cannot be written ({}); reopening it in {} s",
                    failure.error,
                    retry.delay(1).as_secs()
                );
                self.state_reopen = Some((1, now + retry.delay(1)));
            }
            Some((_, due)) if now < due => {}
            Some((attempt, _)) => match state.reopen() {
                Ok(()) => self.state_reopen = None,
                Err(e) => {
                    let delay = retry.delay(attempt + 1);
                    tracing::warn!(
                        "cannot reopen the state database (attempt {attempt}, again in {} s): {e}",
                        delay.as_secs()
                    );
                    self.state_reopen = Some((attempt + 1, now + delay));
                }
            },
        }
    }

    // Status.

    /// The status as published.
    fn status(&self) -> MonitorStatus {
        let state = lock(&self.state);
        let verified_files = state
            .values()
            .filter(|r| r.verified() || (r.evicted && r.remote.is_some()))
            .count() as u64;
        let unverified_files = state
            .values()
            .filter(|r| r.local.is_some() && !r.verified())
            .count() as u64;
        let tracked_files = state.len() as u64;
        let state_database = state.failure().cloned();
        drop(state);
        let now = now_unix_ms();
        let oldest = self.queue.oldest_queued_unix_ms();
        MonitorStatus {
            schema_version: SCHEMA_VERSION,
            pid: std::process::id(),
            started_unix_ms: self.started_unix_ms,
            updated_unix_ms: now,
            uploads: UploadStatus {
                spool_jobs: self.queue.jobs() as u64,
                queued_files: self.queue.len() as u64,
                in_flight: self.queue.running() as u64,
                oldest_unverified_age_secs: oldest.map(|t| now.saturating_sub(t) / 1000),
                tracked_files,
                verified_files,
                unverified_files,
                verified_total: self.counters.verified_total,
                failed_total: self.counters.failed_total,
                last_error: self.counters.last_error.clone(),
                damaged_files: damaged::count(&self.config.state_dir),
                bad_jobs: self.spool.quarantined().unwrap_or_default() as u64,
            },
            cache: CacheStatus {
                used_bytes: self.cache_used,
                limit_bytes: self.config.cache_limit_bytes(),
                evicted_total: self.counters.evicted_total,
                eviction_paused: self.eviction_held_back.clone(),
            },
            backends: self
                .backends
                .iter()
                .map(|e| BackendStatus {
                    label: e.backend.label(),
                    kind: e.kind,
                    state: e.health.state,
                    since_unix_ms: e.health.since_unix_ms,
                    fill_percent: e.health.fill_percent,
                    reason: e.health.reason.clone(),
                })
                .collect(),
            rebuild: self.rebuild.active().then_some(RebuildStatus {
                done: self.rebuild.done,
                total: self.rebuild.total,
            }),
            zdbfs: Some(ZdbfsStatus {
                mountpoint: self.config.zdbfs_mountpoint.clone(),
                flush_interval_secs: self.config.flush_interval.map_or(0, |d| d.as_secs()),
                ..self.zdbfs.clone()
            }),
            errors: ErrorStatus {
                state_database,
                reconciliation: self.counters.reconciliation.clone(),
                eviction: self.counters.eviction.clone(),
            },
        }
    }

    /// Writes the status file, refreshes the metrics text and systemd's STATUS.
    fn publish(&mut self) {
        let status = self.status();
        if let Ok(mut text) = self.metrics_text.lock() {
            *text = metrics::render(&status);
        }
        let durability = crate::fsutil::Durability::Durable;
        if let Err(e) = crate::fsutil::write_json(&self.config.status_file, &status, durability) {
            let file = self.config.status_file.display();
            tracing::warn!("cannot publish the status to {file}: {e}");
        }
        self.notifier.status(&status.summary_line());
    }
}

/// Settings read only at start: a reload keeps their running values and says so.
fn keep_start_only_settings(running: &MonitorConfig, reloaded: &mut MonitorConfig) {
    macro_rules! keep {
        ($($field:ident),*) => {$(
            if reloaded.$field != running.$field {
                tracing::warn!("{} changed: it takes effect at the next restart", stringify!($field));
                reloaded.$field = running.$field.clone();
            }
        )*};
    }
    keep!(
        spool_dir,
        state_dir,
        status_file,
        metrics_address,
        zdb_index_dir_path,
        zdb_data_dir_path
    );
}

fn scratch_dir(config: &MonitorConfig) -> PathBuf {
    config.state_dir.join("upload-scratch")
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
