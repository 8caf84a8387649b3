//! The daemon: one event loop that owns the upload queue, the spool jobs, the backend states
//! and the rebuild queue. Blocking work (zstor, hashing, NSINFO, HTTP) runs on tokio's
//! blocking pool and reports back as an [`Event`]; the durable state is shared behind a mutex
//! that is held only for short updates.

use super::backends::{self, Health, Observation};
use super::evict;
use super::files::{Kind, Roots};
use super::metrics;
use super::reconcile;
use super::state::{FileRecord, State};
use super::status::{
    BackendKind, BackendState, BackendStatus, CacheStatus, MonitorStatus, RebuildStatus,
    UploadStatus, ZdbfsStatus, SCHEMA_VERSION,
};
use super::upload::{self, Source, Stored, UploadError};
use super::vdc;
use crate::config::monitor::MonitorConfig;
use crate::config::ConfigError;
use crate::logging::message_id;
use crate::notify::Notifier;
use crate::spool::{Job, Spool};
use crate::zstor::config::{Backend, ZstorConfig};
use crate::zstor::Zstor;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// How often the spool is listed for new jobs.
const SPOOL_POLL: Duration = Duration::from_millis(500);
/// Leftovers of interrupted hooks older than this are removed from the spool.
const SPOOL_GARBAGE_AGE: Duration = Duration::from_secs(600);
/// Backend checks running at once.
const BACKEND_CHECKS_AT_ONCE: usize = 10;
/// A rebuild that failed this often is left for the next start.
const REBUILD_ATTEMPTS: u32 = 3;

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

enum Event {
    Stored {
        key: String,
        jobs: BTreeSet<String>,
        result: Result<Stored, UploadError>,
    },
    Uploaded {
        key: String,
        jobs: BTreeSet<String>,
        result: Result<Stored, UploadError>,
    },
    Reconciled(Result<reconcile::Outcome, String>),
    Evicted(Result<(u64, u64), String>),
    BackendsChecked(Vec<(String, Observation)>),
    Rebuilt {
        key: String,
        attempts: u32,
        result: Result<(), String>,
    },
    VdcAnswered {
        label: String,
        result: Result<(), String>,
    },
    Flushed(Result<crate::zdbfs::Stats, String>),
}

struct Pending {
    path: PathBuf,
    kind: Kind,
    source: Source,
    jobs: BTreeSet<String>,
    attempts: u32,
    /// When it may run next (and its tie-breaker); `None` while it runs.
    due: Option<(Instant, u64)>,
    queued_unix_ms: u64,
    /// A newer source arrived while it ran: upload again.
    superseded: bool,
}

struct BackendEntry {
    backend: Backend,
    kind: BackendKind,
    health: Health,
}

#[derive(Default)]
struct Counters {
    verified_total: u64,
    failed_total: u64,
    evicted_total: u64,
    last_error: Option<String>,
}

#[derive(Default)]
struct Rebuild {
    queue: VecDeque<(String, u32)>,
    in_flight: usize,
    done: u64,
    total: u64,
    failed: u64,
}

/// The running monitor.
pub struct Daemon {
    config_path: PathBuf,
    config: MonitorConfig,
    zstor_config: ZstorConfig,
    zstor_config_mtime: Option<SystemTime>,
    zstor: Zstor,
    roots: Roots,
    spool: Spool,
    state: Arc<Mutex<State>>,
    backend_set: u64,
    pending: HashMap<String, Pending>,
    ready: BTreeSet<(Instant, u64, String)>,
    sequence: u64,
    in_flight: usize,
    verifying: usize,
    jobs: HashMap<String, (BTreeSet<String>, u64)>,
    backends: Vec<BackendEntry>,
    vdc_in_flight: BTreeSet<String>,
    rebuild: Rebuild,
    counters: Counters,
    cache_used: u64,
    reconciling: bool,
    evicting: bool,
    checking_backends: bool,
    flushing: bool,
    zdbfs: ZdbfsStatus,
    zdbfs_lane: crate::lane::Lane,
    stopping: bool,
    started_unix_ms: u64,
    notifier: Notifier,
    metrics_text: crate::metrics::Shared,
    events: (mpsc::UnboundedSender<Event>, mpsc::UnboundedReceiver<Event>),
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A stable hash of the backend set (addresses and namespaces, never passwords).
fn backend_set_hash(config: &ZstorConfig) -> u64 {
    let mut labels: Vec<String> = config
        .data_backends()
        .chain(config.meta_backends())
        .map(Backend::label)
        .collect();
    labels.sort();
    let sum = crate::zstor::Checksum::of_bytes(labels.join("\n").as_bytes());
    u64::from_le_bytes(sum.0[..8].try_into().unwrap())
}

fn zstor_runner(config: &MonitorConfig) -> Zstor {
    Zstor::new(
        &config.zstor_bin_path,
        &config.zstor_config_path,
        Duration::from_secs(config.zstor_timeout_secs),
    )
    .with_log_file(&config.zstor_log_file)
}

fn backend_entries(config: &ZstorConfig, previous: &[BackendEntry]) -> Vec<BackendEntry> {
    let data = config.data_backends().map(|b| (b, BackendKind::Data));
    let meta = config
        .meta_backends()
        .iter()
        .map(|b| (b, BackendKind::Meta));
    data.chain(meta)
        .map(|(backend, kind)| {
            let health = previous
                .iter()
                .find(|e| e.backend.label() == backend.label() && e.kind == kind)
                .map_or_else(
                    || Health::unchecked(crate::clock::now_unix_ms()),
                    |e| e.health.clone(),
                );
            BackendEntry {
                backend: backend.clone(),
                kind,
                health,
            }
        })
        .collect()
}

impl Daemon {
    /// Loads the configs and the state; nothing runs yet.
    pub fn new(config_path: &Path) -> Result<Daemon, StartError> {
        let config = MonitorConfig::load(config_path)?;
        let zstor_config = ZstorConfig::load(&config.zstor_config_path)?;
        let state = State::open(&config.state_dir).map_err(|e| StartError::Io(e.to_string()))?;
        let spool = Spool::new(&config.spool_dir);
        spool.create().map_err(|e| {
            StartError::Io(format!(
                "cannot create the spool {}: {e}",
                config.spool_dir.display()
            ))
        })?;
        let _ = std::fs::remove_dir_all(scratch_dir(&config));
        Ok(Daemon {
            config_path: config_path.to_path_buf(),
            zstor: zstor_runner(&config),
            roots: Roots {
                index: config.zdb_index_dir_path.clone(),
                data: config.zdb_data_dir_path.clone(),
            },
            backend_set: backend_set_hash(&zstor_config),
            backends: backend_entries(&zstor_config, &[]),
            zstor_config_mtime: mtime(&config.zstor_config_path),
            zstor_config,
            spool,
            state: Arc::new(Mutex::new(state)),
            pending: HashMap::new(),
            ready: BTreeSet::new(),
            sequence: 0,
            in_flight: 0,
            verifying: 0,
            jobs: HashMap::new(),
            vdc_in_flight: BTreeSet::new(),
            rebuild: Rebuild::default(),
            counters: Counters::default(),
            cache_used: 0,
            reconciling: false,
            evicting: false,
            checking_backends: false,
            flushing: false,
            zdbfs: ZdbfsStatus::default(),
            zdbfs_lane: crate::lane::Lane::new(),
            stopping: false,
            started_unix_ms: crate::clock::now_unix_ms(),
            notifier: Notifier::from_env(),
            metrics_text: Arc::new(Mutex::new(String::new())),
            events: mpsc::unbounded_channel(),
            config,
        })
    }

    /// Runs until SIGTERM or SIGINT, then lets in-flight uploads finish (up to
    /// `shutdown_timeout_secs`), saves the state and returns.
    pub async fn run(mut self) -> Result<(), StartError> {
        let mut hangup = signal(SignalKind::hangup()).map_err(|e| StartError::Io(e.to_string()))?;
        let mut terminate =
            signal(SignalKind::terminate()).map_err(|e| StartError::Io(e.to_string()))?;
        let mut interrupt =
            signal(SignalKind::interrupt()).map_err(|e| StartError::Io(e.to_string()))?;
        if let Some(address) = &self.config.metrics_address {
            crate::metrics::spawn(address, self.metrics_text.clone())
                .await
                .map_err(|e| StartError::Io(format!("cannot serve metrics on {address}: {e}")))?;
        }
        if let Ok(removed @ 1..) = self.spool.collect_garbage(SPOOL_GARBAGE_AGE) {
            tracing::info!("removed {removed} leftovers of interrupted hooks from the spool");
        }
        self.poll_spool();
        self.start_rebuild_if_needed();
        self.publish();
        self.notifier.ready(&self.status_line());
        tracing::info!(
            "zstor_monitor ready: {} tracked files, {} spool jobs, {} backends",
            lock(&self.state).len(),
            self.jobs.len(),
            self.backends.len()
        );

        let mut spool_tick = tokio::time::interval(SPOOL_POLL);
        let mut reconcile_tick =
            tokio::time::interval(Duration::from_secs(self.config.reconcile_interval_secs));
        let mut evict_tick =
            tokio::time::interval(Duration::from_secs(self.config.eviction_interval_secs));
        let mut backend_tick =
            tokio::time::interval(Duration::from_secs(self.config.backend_check_interval_secs));
        let mut publish_tick = tokio::time::interval(MonitorStatus::PUBLISH_INTERVAL);
        let mut garbage_tick = tokio::time::interval(SPOOL_GARBAGE_AGE);
        let mut flush_tick =
            tokio::time::interval(Duration::from_secs(self.config.flush_interval_secs.max(1)));
        let watchdog_every = self
            .notifier
            .watchdog_interval()
            .unwrap_or(Duration::from_secs(3600));
        let mut watchdog_tick = tokio::time::interval(watchdog_every);
        for tick in [
            &mut spool_tick,
            &mut reconcile_tick,
            &mut evict_tick,
            &mut backend_tick,
            &mut publish_tick,
            &mut garbage_tick,
            &mut flush_tick,
            &mut watchdog_tick,
        ] {
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut stopping: Option<Instant> = None;
        loop {
            self.dispatch();
            if let Some(deadline) = stopping {
                // Drain: everything queued (the `close` jobs of a zdb that just stopped among
                // them) is uploaded before exiting, unless the deadline comes first.
                if self.pending.is_empty()
                    && self.in_flight == 0
                    && self.verifying == 0
                    && self.rebuild.in_flight == 0
                {
                    break;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        "{} files still queued at the shutdown deadline; they stay in the spool for the next start",
                        self.pending.len()
                    );
                    break;
                }
            }
            let next_due = self.ready.first().map(|(due, _, _)| *due);
            let wake = tokio::time::Instant::from_std(
                next_due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            let deadline = tokio::time::Instant::from_std(
                stopping.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                Some(event) = self.events.1.recv() => self.handle(event),
                _ = tokio::time::sleep_until(wake), if next_due.is_some() => {}
                _ = tokio::time::sleep_until(deadline), if stopping.is_some() => {}
                _ = spool_tick.tick(), if stopping.is_none() => self.poll_spool(),
                _ = reconcile_tick.tick(), if stopping.is_none() => self.start_reconcile(),
                _ = evict_tick.tick(), if stopping.is_none() => self.start_eviction(),
                _ = backend_tick.tick(), if stopping.is_none() => {
                    self.reload_zstor_config_if_changed();
                    self.start_backend_checks();
                }
                _ = publish_tick.tick() => self.publish(),
                _ = garbage_tick.tick(), if stopping.is_none() => { let _ = self.spool.collect_garbage(SPOOL_GARBAGE_AGE); }
                _ = watchdog_tick.tick() => self.notifier.watchdog(),
                _ = flush_tick.tick(), if stopping.is_none() && self.config.flush_interval_secs > 0 => self.start_flush(),
                _ = hangup.recv() => self.reload(),
                _ = terminate.recv() => stopping = Some(self.begin_stop("SIGTERM")),
                _ = interrupt.recv() => stopping = Some(self.begin_stop("SIGINT")),
            }
        }
        if let Err(e) = lock(&self.state).commit() {
            tracing::error!("cannot save the state at exit: {e}");
        }
        self.publish();
        tracing::info!("zstor_monitor stopped");
        Ok(())
    }

    fn begin_stop(&mut self, signal: &str) -> Instant {
        self.notifier.stopping();
        self.stopping = true;
        self.poll_spool();
        tracing::info!(
            "{signal}: uploading the {} queued files before exiting (at most {} s)",
            self.pending.len(),
            self.config.shutdown_timeout_secs
        );
        Instant::now() + Duration::from_secs(self.config.shutdown_timeout_secs)
    }

    fn send(&self) -> mpsc::UnboundedSender<Event> {
        self.events.0.clone()
    }

    // ---- spool ------------------------------------------------------------------------

    /// Registers the jobs the hook wrote since the last poll.
    fn poll_spool(&mut self) {
        let jobs = match self.spool.jobs() {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!("cannot list the spool {}: {e}", self.spool.dir().display());
                return;
            }
        };
        for job in jobs {
            match job {
                Ok(job) if self.jobs.contains_key(&job.id) => {}
                Ok(job) => self.register_job(job),
                Err(bad) => match self.spool.quarantine(&bad.path) {
                    Ok(moved) => tracing::error!("{bad}; moved to {}", moved.display()),
                    Err(e) => tracing::error!("{bad}; cannot move it aside: {e}"),
                },
            }
        }
    }

    fn register_job(&mut self, job: Job) {
        let mut keys = BTreeSet::new();
        for file in &job.files {
            match self.roots.key_of(&file.path) {
                Some(key) => {
                    let kind = Roots::parse_key(&key)
                        .map(|(_, kind)| kind)
                        .unwrap_or(Kind::Data(0));
                    let source = match &file.snapshot {
                        Some(snapshot) if kind.mutable() && job.snapshots_usable() => {
                            Source::Snapshot(snapshot.clone())
                        }
                        _ => Source::Live,
                    };
                    self.enqueue(&key, &file.path, kind, source, Some(&job.id));
                    keys.insert(key);
                }
                None if file
                    .path
                    .components()
                    .any(|c| c.as_os_str() == crate::hook::TEMP_NAMESPACE) => {}
                None => tracing::error!(
                    qsfs_job = job.id,
                    "spool job {}: {} is not a zdb file under {} or {}; ignoring it",
                    job.id,
                    file.path.display(),
                    self.roots.index.display(),
                    self.roots.data.display()
                ),
            }
        }
        if keys.is_empty() {
            self.finish_job(&job.id);
        } else {
            self.jobs.insert(job.id, (keys, job.written_unix_ms));
        }
    }

    fn finish_job(&mut self, id: &str) {
        self.jobs.remove(id);
        if let Err(e) = self.spool.remove(id) {
            tracing::error!("cannot remove finished spool job {id}: {e}");
        }
    }

    // ---- uploads ----------------------------------------------------------------------

    fn schedule(&mut self, key: &str, at: Instant) {
        let pending = self
            .pending
            .get_mut(key)
            .expect("scheduled file is pending");
        if let Some((due, seq)) = pending.due.take() {
            self.ready.remove(&(due, seq, key.to_string()));
        }
        self.sequence += 1;
        pending.due = Some((at, self.sequence));
        self.ready.insert((at, self.sequence, key.to_string()));
    }

    fn enqueue(&mut self, key: &str, path: &Path, kind: Kind, source: Source, job: Option<&str>) {
        match self.pending.get_mut(key) {
            Some(pending) => {
                if let Some(job) = job {
                    pending.jobs.insert(job.to_string());
                    pending.source = source;
                    if pending.due.is_none() {
                        pending.superseded = true;
                        return;
                    }
                    // New content to upload: no reason to wait for a previous failure's backoff.
                    pending.attempts = 0;
                    self.schedule(key, Instant::now());
                }
            }
            None => {
                self.pending.insert(
                    key.to_string(),
                    Pending {
                        path: path.to_path_buf(),
                        kind,
                        source,
                        jobs: job
                            .map(|j| BTreeSet::from([j.to_string()]))
                            .unwrap_or_default(),
                        attempts: 0,
                        due: None,
                        queued_unix_ms: crate::clock::now_unix_ms(),
                        superseded: false,
                    },
                );
                self.schedule(key, Instant::now());
            }
        }
    }

    /// Starts due uploads and rebuilds up to their concurrency limits.
    fn dispatch(&mut self) {
        let now = Instant::now();
        while self.in_flight < self.config.upload_concurrency as usize {
            let Some(first) = self.ready.first().cloned() else {
                break;
            };
            if first.0 > now {
                break;
            }
            self.ready.remove(&first);
            let key = first.2;
            let pending = self.pending.get_mut(&key).expect("ready file is pending");
            pending.due = None;
            pending.superseded = false;
            let request = upload::Request {
                path: pending.path.clone(),
                kind: pending.kind,
                source: pending.source.clone(),
                known_remote: lock(&self.state).get(&key).and_then(|r| r.remote),
                scratch_dir: scratch_dir(&self.config),
            };
            let jobs = pending.jobs.clone();
            let zstor = self.zstor.clone();
            let events = self.send();
            self.in_flight += 1;
            tokio::task::spawn_blocking(move || {
                let result = upload::store(&zstor, &request);
                let _ = events.send(Event::Stored { key, jobs, result });
            });
        }
        while !self.stopping && self.rebuild.in_flight < self.config.rebuild_concurrency as usize {
            let Some((key, attempts)) = self.rebuild.queue.pop_front() else {
                break;
            };
            let path = self.roots.path_of(&key);
            let zstor = self.zstor.clone();
            let events = self.send();
            self.rebuild.in_flight += 1;
            tokio::task::spawn_blocking(move || {
                let result = zstor.rebuild(&path).map_err(|e| e.to_string());
                let _ = events.send(Event::Rebuilt {
                    key,
                    attempts,
                    result,
                });
            });
        }
    }

    /// A store finished: verify it. Verifications do not count against the upload
    /// concurrency (they are short, and at most one follows each store).
    fn stored(&mut self, key: String, jobs: BTreeSet<String>, result: Result<Stored, UploadError>) {
        self.in_flight -= 1;
        match result {
            Ok(stored) if !stored.already_remote => {
                let Some(pending) = self.pending.get(&key) else {
                    return;
                };
                let (zstor, path, events) = (self.zstor.clone(), pending.path.clone(), self.send());
                self.verifying += 1;
                tokio::task::spawn_blocking(move || {
                    let result = upload::verify(&zstor, &path, &stored).map(|()| stored);
                    let _ = events.send(Event::Uploaded { key, jobs, result });
                });
            }
            result => {
                self.verifying += 1;
                self.uploaded(key, jobs, result);
            }
        }
    }

    fn uploaded(
        &mut self,
        key: String,
        jobs: BTreeSet<String>,
        result: Result<Stored, UploadError>,
    ) {
        self.verifying -= 1;
        let Some(pending) = self.pending.get(&key) else {
            return;
        };
        let path = pending.path.clone();
        let outcome = match result {
            Ok(verified) => {
                let mut state = lock(&self.state);
                let mut record = state.get(&key).copied().unwrap_or_default();
                record.remote = Some(verified.checksum);
                record.backend_set = self.backend_set;
                if let Some(local) = verified.local {
                    record.local = Some(local);
                    record.evicted = false;
                }
                state.set(&key, record);
                match state.commit() {
                    Ok(()) => Ok(verified),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(UploadError::Gone(gone)) => {
                tracing::warn!(qsfs_file = %path.display(), "{} is gone before it could be uploaded; nothing to upload", gone.display());
                self.satisfy(&key, &jobs);
                return;
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(verified) => {
                if verified.already_remote {
                    tracing::debug!(qsfs_file = %path.display(), "already verified remote");
                } else {
                    self.counters.verified_total += 1;
                    self.counters.last_error = None;
                    tracing::info!(
                        message_id = message_id::UPLOAD_VERIFIED,
                        qsfs_file = %path.display(),
                        qsfs_checksum = %verified.checksum,
                        "upload verified: {}",
                        path.display()
                    );
                }
                self.satisfy(&key, &jobs);
            }
            Err(error) => {
                let pending = self.pending.get_mut(&key).expect("pending");
                pending.attempts += 1;
                let attempts = pending.attempts;
                let delay = crate::retry::Backoff::new(
                    Duration::from_secs(self.config.retry_initial_secs),
                    Duration::from_secs(self.config.retry_max_secs),
                )
                .delay(attempts);
                self.counters.failed_total += 1;
                self.counters.last_error = Some(error.clone());
                tracing::warn!(
                    message_id = message_id::UPLOAD_FAILED,
                    qsfs_file = %path.display(),
                    qsfs_attempt = attempts,
                    "upload of {} failed (attempt {attempts}, retry in {} s): {error}",
                    path.display(),
                    delay.as_secs()
                );
                self.schedule(&key, Instant::now() + delay);
            }
        }
    }

    /// The upload of `key` that carried `jobs` is done: those jobs no longer wait for it.
    fn satisfy(&mut self, key: &str, jobs: &BTreeSet<String>) {
        let mut finished = Vec::new();
        for id in jobs {
            if let Some((keys, _)) = self.jobs.get_mut(id) {
                keys.remove(key);
                if keys.is_empty() {
                    finished.push(id.clone());
                }
            }
        }
        for id in finished {
            self.finish_job(&id);
        }
        let pending = self.pending.get_mut(key).expect("pending");
        pending.jobs.retain(|id| !jobs.contains(id));
        if pending.superseded {
            pending.attempts = 0;
            self.schedule(key, Instant::now());
        } else {
            self.pending.remove(key);
        }
    }

    // ---- reconciliation and eviction --------------------------------------------------

    fn start_reconcile(&mut self) {
        if self.reconciling {
            return;
        }
        self.reconciling = true;
        let (roots, state, backend_set, events) = (
            self.roots.clone(),
            self.state.clone(),
            self.backend_set,
            self.send(),
        );
        tokio::task::spawn_blocking(move || {
            let result = reconcile::run(&roots, &state, backend_set).map_err(|e| e.to_string());
            let _ = events.send(Event::Reconciled(result));
        });
    }

    fn reconciled(&mut self, result: Result<reconcile::Outcome, String>) {
        self.reconciling = false;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!("reconciliation failed: {e}");
                return;
            }
        };
        let mut queued = 0;
        for file in &outcome.to_upload {
            if !self.pending.contains_key(&file.key) {
                self.enqueue(&file.key, &file.path, file.kind, Source::Live, None);
                queued += 1;
            }
        }
        self.cache_used = self.evictable_bytes(&outcome.data_bytes);
        for key in &outcome.vanished {
            tracing::warn!(qsfs_file = key, "{key} disappeared without being evicted; it is not fetched back unless zdb asks for it");
        }
        let level_info = queued > 0 || outcome.hashed > 0;
        let message = format!(
            "reconciliation: {} files scanned, {} hashed, {queued} queued for upload",
            outcome.scanned, outcome.hashed
        );
        if level_info {
            tracing::info!("{message}");
        } else {
            tracing::debug!("{message}");
        }
        self.start_eviction();
    }

    fn evictable_bytes(&self, data_bytes: &[(String, u64)]) -> u64 {
        data_bytes
            .iter()
            .filter(|(ns, _)| self.config.evict_namespaces.contains(ns))
            .map(|(_, bytes)| bytes)
            .sum()
    }

    fn start_eviction(&mut self) {
        let Some(limit_mib) = self.config.max_zdb_data_dir_size else {
            return;
        };
        if self.evicting {
            return;
        }
        self.evicting = true;
        let limit = limit_mib * 1024 * 1024;
        let (roots, state, events, namespaces) = (
            self.roots.clone(),
            self.state.clone(),
            self.send(),
            self.config.evict_namespaces.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let _ = events.send(Event::Evicted(evict_now(
                &roots,
                &state,
                &namespaces,
                limit,
            )));
        });
    }

    // ---- backends, replacement, rebuild ------------------------------------------------

    fn start_backend_checks(&mut self) {
        if self.checking_backends || self.backends.is_empty() {
            return;
        }
        self.checking_backends = true;
        let timeout = Duration::from_secs(self.config.backend_timeout_secs);
        let targets: Vec<(Backend, BackendKind)> = self
            .backends
            .iter()
            .map(|e| (e.backend.clone(), e.kind))
            .collect();
        let events = self.send();
        tokio::spawn(async move {
            let limit = Arc::new(tokio::sync::Semaphore::new(BACKEND_CHECKS_AT_ONCE));
            let checks = targets.into_iter().map(|(backend, kind)| {
                let limit = limit.clone();
                async move {
                    let _permit = limit.acquire_owned().await;
                    let label = backend.label();
                    let observation = tokio::task::spawn_blocking(move || {
                        backends::check(&backend, kind, timeout)
                    })
                    .await
                    .unwrap_or_else(|e| Observation::Failed(e.to_string()));
                    (label, observation)
                }
            });
            let results = futures_util::future::join_all(checks).await;
            let _ = events.send(Event::BackendsChecked(results));
        });
    }

    fn backends_checked(&mut self, results: Vec<(String, Observation)>) {
        self.checking_backends = false;
        let now = crate::clock::now_unix_ms();
        let grace = Duration::from_secs(self.config.backend_grace_period_secs);
        let threshold = self.config.zdb_namespace_fill_treshold.0;
        let mut replace = Vec::new();
        for (label, observation) in results {
            let Some(entry) = self
                .backends
                .iter_mut()
                .find(|e| e.backend.label() == label)
            else {
                continue;
            };
            let next = backends::next(&entry.health, &observation, now, grace, threshold);
            if next.state != entry.health.state {
                let message = format!(
                    "{} backend {label}: {} → {}{}",
                    entry.kind,
                    entry.health.state,
                    next.state,
                    next.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
                if matches!(next.state, BackendState::Healthy) {
                    tracing::info!(message_id = message_id::BACKEND_STATE_CHANGED, qsfs_backend = label, qsfs_backend_state = ?next.state, "{message}");
                } else {
                    tracing::warn!(message_id = message_id::BACKEND_STATE_CHANGED, qsfs_backend = label, qsfs_backend_state = ?next.state, "{message}");
                }
                if matches!(
                    next.state,
                    BackendState::Unreachable | BackendState::LowSpace
                ) {
                    replace.push(label.clone());
                }
            }
            entry.health = next;
        }
        for label in replace {
            self.request_replacement(label);
        }
    }

    fn request_replacement(&mut self, label: String) {
        let Some(vdc) = self.config.vdc_config.clone() else {
            return;
        };
        let key = vdc::state_key(&label);
        if self.vdc_in_flight.contains(&label)
            || matches!(lock(&self.state).meta(&key), Ok(Some(_)))
        {
            return;
        }
        self.vdc_in_flight.insert(label.clone());
        let events = self.send();
        tokio::task::spawn_blocking(move || {
            let result = vdc::request_replacement(&vdc, Duration::from_secs(30));
            let _ = events.send(Event::VdcAnswered { label, result });
        });
    }

    fn vdc_answered(&mut self, label: String, result: Result<(), String>) {
        self.vdc_in_flight.remove(&label);
        match result {
            Ok(()) => {
                tracing::info!(
                    qsfs_backend = label,
                    "asked the eVDC controller for a replacement of backend {label}"
                );
                if let Err(e) = lock(&self.state).set_meta(
                    &vdc::state_key(&label),
                    &crate::clock::now_unix_ms().to_le_bytes(),
                ) {
                    tracing::error!("cannot remember the replacement request for {label}: {e}");
                }
            }
            Err(e) => tracing::error!(
                qsfs_backend = label,
                "replacement request for backend {label} failed (retried at the next check): {e}"
            ),
        }
    }

    /// When the backend set differs from the one the remote copies were written for, queues a
    /// rebuild of every verified file.
    fn start_rebuild_if_needed(&mut self) {
        let stored = lock(&self.state).meta("backend_set").ok().flatten();
        let current = self.backend_set.to_le_bytes().to_vec();
        match stored {
            None => {
                let _ = lock(&self.state).set_meta("backend_set", &current);
            }
            Some(stored) if stored == current => {}
            Some(_) => {
                let keys: Vec<String> = lock(&self.state)
                    .records()
                    .filter(|(_, r)| r.remote.is_some() && r.backend_set != self.backend_set)
                    .map(|(key, _)| key)
                    .collect();
                if self.rebuild.in_flight == 0 {
                    self.rebuild = Rebuild::default();
                }
                self.rebuild.total += keys.len() as u64;
                self.rebuild.queue.extend(keys.into_iter().map(|k| (k, 0)));
                tracing::info!(
                    "the backend set changed: rebuilding {} files onto it",
                    self.rebuild.total
                );
                self.finish_rebuild_if_done();
            }
        }
    }

    fn rebuilt(&mut self, key: String, attempts: u32, result: Result<(), String>) {
        self.rebuild.in_flight -= 1;
        match result {
            Ok(()) => {
                let mut state = lock(&self.state);
                if let Some(mut record) = state.get(&key).copied() {
                    record.backend_set = self.backend_set;
                    state.set(&key, record);
                    if let Err(e) = state.commit() {
                        tracing::error!("cannot record the rebuild of {key}: {e}");
                    }
                }
                drop(state);
                self.rebuild.done += 1;
                let (done, total) = (self.rebuild.done, self.rebuild.total.max(1));
                if done == total || done % (total / 10).max(1) == 0 {
                    tracing::info!("rebuild: {done}/{total} files ({}%)", done * 100 / total);
                }
            }
            Err(e) if attempts + 1 < REBUILD_ATTEMPTS => {
                tracing::warn!("rebuild of {key} failed (attempt {}): {e}", attempts + 1);
                self.rebuild.queue.push_back((key, attempts + 1));
            }
            Err(e) => {
                tracing::error!("rebuild of {key} failed {REBUILD_ATTEMPTS} times, left for the next start: {e}");
                self.rebuild.failed += 1;
                self.rebuild.done += 1;
            }
        }
        self.finish_rebuild_if_done();
    }

    fn finish_rebuild_if_done(&mut self) {
        if self.rebuild.queue.is_empty()
            && self.rebuild.in_flight == 0
            && self.rebuild.total > 0
            && self.rebuild.failed == 0
        {
            if let Err(e) =
                lock(&self.state).set_meta("backend_set", &self.backend_set.to_le_bytes())
            {
                tracing::error!("cannot record the new backend set: {e}");
            }
            tracing::info!(
                "rebuild finished: {} files on the new backend set",
                self.rebuild.done
            );
            self.rebuild = Rebuild::default();
        }
    }

    // ---- zdbfs ------------------------------------------------------------------------

    /// Asks zdbfs to write its cache to zdb (and reads its statistics), on a lane of its own
    /// so that a hung zdbfs never blocks the monitor.
    fn start_flush(&mut self) {
        if self.flushing {
            return;
        }
        let mountpoint = self.config.zdbfs_mountpoint.clone();
        match crate::zdbfs::is_mounted(&mountpoint) {
            Ok(true) => {}
            // zdbfs is not running: nothing is cached.
            Ok(false) => return,
            Err(e) => return self.flushed(Err(e)),
        }
        let pending = match self.zdbfs_lane.start(move || {
            crate::zdbfs::snapshot(&mountpoint)?;
            crate::zdbfs::statistics(&mountpoint)
        }) {
            Ok(pending) => pending,
            Err(e) => return self.flushed(Err(format!("the snapshot ioctl: {e}"))),
        };
        self.flushing = true;
        let timeout = Duration::from_secs(self.config.flush_timeout_secs);
        let events = self.send();
        tokio::spawn(async move {
            let result = match pending.wait(Instant::now() + timeout, timeout).await {
                Ok(Ok(stats)) => Ok(stats),
                Ok(Err(e)) => Err(format!("the snapshot ioctl failed: {e}")),
                Err(e) => Err(format!("the snapshot ioctl: {e}")),
            };
            let _ = events.send(Event::Flushed(result));
        });
    }

    fn flushed(&mut self, result: Result<crate::zdbfs::Stats, String>) {
        self.flushing = false;
        let mountpoint = self.config.zdbfs_mountpoint.display().to_string();
        match result {
            Ok(stats) => {
                if self.zdbfs.flush_failures_in_a_row > 0 {
                    tracing::info!(
                        qsfs_mountpoint = mountpoint,
                        "zdbfs's cache is written to zdb again"
                    );
                }
                self.zdbfs.last_flush_unix_ms = Some(crate::clock::now_unix_ms());
                self.zdbfs.flush_failures_in_a_row = 0;
                self.zdbfs.last_flush_error = None;
                self.zdbfs.stats = Some(stats);
            }
            Err(error) => {
                self.zdbfs.flush_failures_in_a_row += 1;
                // The first failure and then every tenth, not one line every few seconds.
                if self.zdbfs.flush_failures_in_a_row % 10 == 1 {
                    tracing::warn!(
                        message_id = message_id::ZDBFS_FLUSH_FAILED,
                        qsfs_mountpoint = mountpoint,
                        "cannot write zdbfs's cache to zdb ({} times in a row): {error}",
                        self.zdbfs.flush_failures_in_a_row
                    );
                }
                self.zdbfs.last_flush_error = Some(error);
            }
        }
    }

    // ---- configuration ----------------------------------------------------------------

    fn reload(&mut self) {
        self.notifier.reloading();
        match MonitorConfig::load(&self.config_path) {
            Ok(config) => {
                for (name, changed) in [
                    ("spool_dir", config.spool_dir != self.config.spool_dir),
                    ("state_dir", config.state_dir != self.config.state_dir),
                    ("status_file", config.status_file != self.config.status_file),
                    (
                        "metrics_address",
                        config.metrics_address != self.config.metrics_address,
                    ),
                    (
                        "zdb_index_dir_path",
                        config.zdb_index_dir_path != self.config.zdb_index_dir_path,
                    ),
                    (
                        "zdb_data_dir_path",
                        config.zdb_data_dir_path != self.config.zdb_data_dir_path,
                    ),
                ] {
                    if changed {
                        tracing::warn!("{name} changed: it takes effect at the next restart");
                    }
                }
                let keep = (
                    self.config.spool_dir.clone(),
                    self.config.state_dir.clone(),
                    self.config.status_file.clone(),
                    self.config.metrics_address.clone(),
                    self.config.zdb_index_dir_path.clone(),
                    self.config.zdb_data_dir_path.clone(),
                );
                self.config = config;
                (
                    self.config.spool_dir,
                    self.config.state_dir,
                    self.config.status_file,
                    self.config.metrics_address,
                    self.config.zdb_index_dir_path,
                    self.config.zdb_data_dir_path,
                ) = keep;
                self.zstor = zstor_runner(&self.config);
                tracing::info!("configuration reloaded from {}", self.config_path.display());
                self.reload_zstor_config();
            }
            Err(e) => tracing::error!("{e}; keeping the previous configuration"),
        }
        self.notifier.ready(&self.status_line());
    }

    fn reload_zstor_config_if_changed(&mut self) {
        if mtime(&self.config.zstor_config_path) != self.zstor_config_mtime {
            tracing::info!("{} changed", self.config.zstor_config_path.display());
            self.reload_zstor_config();
        }
    }

    fn reload_zstor_config(&mut self) {
        self.zstor_config_mtime = mtime(&self.config.zstor_config_path);
        match ZstorConfig::load(&self.config.zstor_config_path) {
            Ok(zstor_config) => {
                self.backends = backend_entries(&zstor_config, &self.backends);
                self.backend_set = backend_set_hash(&zstor_config);
                self.zstor_config = zstor_config;
                self.start_rebuild_if_needed();
                self.start_backend_checks();
            }
            Err(e) => tracing::error!("{e}; keeping the previous zstor configuration"),
        }
    }

    // ---- events and status ------------------------------------------------------------

    fn handle(&mut self, event: Event) {
        match event {
            Event::Stored { key, jobs, result } => self.stored(key, jobs, result),
            Event::Uploaded { key, jobs, result } => self.uploaded(key, jobs, result),
            Event::Reconciled(result) => self.reconciled(result),
            Event::Evicted(result) => {
                self.evicting = false;
                match result {
                    Ok((evicted, used)) => {
                        self.counters.evicted_total += evicted;
                        self.cache_used = used;
                    }
                    Err(e) => tracing::error!("eviction failed: {e}"),
                }
            }
            Event::BackendsChecked(results) => self.backends_checked(results),
            Event::Rebuilt {
                key,
                attempts,
                result,
            } => self.rebuilt(key, attempts, result),
            Event::VdcAnswered { label, result } => self.vdc_answered(label, result),
            Event::Flushed(result) => self.flushed(result),
        }
    }

    /// The status as published.
    fn status(&self) -> MonitorStatus {
        let state = lock(&self.state);
        let verified_files = state
            .values()
            .filter(|r| r.verified() || (r.evicted && r.remote.is_some()))
            .count() as u64;
        let tracked_files = state.len() as u64;
        drop(state);
        let now = crate::clock::now_unix_ms();
        let oldest = self.pending.values().map(|p| p.queued_unix_ms).min();
        MonitorStatus {
            schema_version: SCHEMA_VERSION,
            pid: std::process::id(),
            started_unix_ms: self.started_unix_ms,
            updated_unix_ms: now,
            uploads: UploadStatus {
                spool_jobs: self.jobs.len() as u64,
                queued_files: self.pending.len() as u64,
                in_flight: (self.in_flight + self.verifying) as u64,
                oldest_unverified_age_secs: oldest.map(|t| now.saturating_sub(t) / 1000),
                tracked_files,
                verified_files,
                verified_total: self.counters.verified_total,
                failed_total: self.counters.failed_total,
                last_error: self.counters.last_error.clone(),
            },
            cache: CacheStatus {
                used_bytes: self.cache_used,
                limit_bytes: self
                    .config
                    .max_zdb_data_dir_size
                    .map(|mib| mib * 1024 * 1024),
                evicted_total: self.counters.evicted_total,
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
            rebuild: (self.rebuild.total > 0).then_some(RebuildStatus {
                done: self.rebuild.done,
                total: self.rebuild.total,
            }),
            zdbfs: Some(ZdbfsStatus {
                mountpoint: self.config.zdbfs_mountpoint.clone(),
                flush_interval_secs: self.config.flush_interval_secs,
                ..self.zdbfs.clone()
            }),
        }
    }

    fn status_line(&self) -> String {
        summary_line(&self.status())
    }

    /// Writes the status file, refreshes the metrics text and systemd's STATUS.
    fn publish(&mut self) {
        let status = self.status();
        if let Ok(mut text) = self.metrics_text.lock() {
            *text = metrics::render(&status);
        }
        if let Err(e) = crate::fsutil::write_json(
            &self.config.status_file,
            &status,
            crate::fsutil::Durability::Durable,
        ) {
            tracing::warn!(
                "cannot publish the status to {}: {e}",
                self.config.status_file.display()
            );
        }
        self.notifier.status(&summary_line(&status));
    }
}

/// One line for `systemctl status`: "uploads: 3 queued, oldest 12 s; backends 4/4 healthy;
/// cache 1.2/4.0 GiB".
pub fn summary_line(status: &MonitorStatus) -> String {
    let u = &status.uploads;
    let uploads = match u.oldest_unverified_age_secs {
        Some(age) if u.queued_files > 0 => {
            format!("uploads: {} queued, oldest {age} s", u.queued_files)
        }
        _ => "uploads: none queued".to_string(),
    };
    let healthy = status
        .backends
        .iter()
        .filter(|b| b.state == BackendState::Healthy)
        .count();
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    let cache = match status.cache.limit_bytes {
        Some(limit) => format!(
            "cache {:.1}/{:.1} GiB",
            gib(status.cache.used_bytes),
            gib(limit)
        ),
        None => format!("cache {:.1} GiB (no limit)", gib(status.cache.used_bytes)),
    };
    let rebuild = status
        .rebuild
        .as_ref()
        .map(|r| format!("; rebuild {}/{}", r.done, r.total))
        .unwrap_or_default();
    format!(
        "{uploads}; backends {healthy}/{} healthy; {cache}{rebuild}",
        status.backends.len()
    )
}

fn scratch_dir(config: &MonitorConfig) -> PathBuf {
    config.state_dir.join("upload-scratch")
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Evicts until the evictable namespaces use at most `limit` bytes; returns how many files
/// went and the bytes still used. Two passes over the directories (the size, then the files to
/// delete) keep memory flat however many files there are.
fn evict_now(
    roots: &Roots,
    state: &Mutex<State>,
    namespaces: &[String],
    limit: u64,
) -> Result<(u64, u64), String> {
    let mut used = 0;
    roots
        .scan_each(|file| {
            if evict::in_scope(&file, namespaces) {
                used += file.size;
            }
        })
        .map_err(|e| e.to_string())?;
    if used <= limit {
        return Ok((0, used));
    }
    let by_atime = super::files::records_atime(&roots.data);
    let mut state = lock(state);
    let mut selector = evict::Selector::new(&state, namespaces, by_atime, used - limit);
    roots
        .scan_each(|file| selector.offer(file))
        .map_err(|e| e.to_string())?;
    let delete = selector.finish();
    let mut evicted = 0;
    for file in &delete {
        // Look again right before deleting: the file must still be the verified content.
        let Ok((size, mtime_ns, inode)) = upload::stamp_of(&file.path) else {
            continue;
        };
        let current = super::files::LocalFile {
            size,
            mtime_ns,
            inode,
            ..file.clone()
        };
        let Some(record) = state.get(&file.key).copied() else {
            continue;
        };
        if !evict::verified_as_is(&record, &current) {
            continue;
        }
        if let Err(e) = std::fs::remove_file(&file.path) {
            tracing::error!("cannot evict {}: {e}", file.path.display());
            continue;
        }
        state.set(
            &file.key,
            FileRecord {
                local: None,
                evicted: true,
                ..record
            },
        );
        if let Err(e) = state.commit() {
            return Err(format!(
                "evicted {} but cannot record it: {e}",
                file.path.display()
            ));
        }
        used -= file.size;
        evicted += 1;
        tracing::info!(
            message_id = message_id::FILE_EVICTED,
            qsfs_file = %file.path.display(),
            qsfs_namespace = file.namespace,
            qsfs_size = file.size,
            "evicted {} ({} bytes, verified remote)",
            file.path.display(),
            file.size
        );
    }
    if used > limit {
        tracing::warn!(
            "the cache uses {used} bytes, over its limit of {limit}: the other data files are not verified remote yet or are active"
        );
    }
    Ok((evicted, used))
}
