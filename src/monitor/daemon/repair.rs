//! The daemon's repair lane: backend checks, replacement requests, rebuilds.

use super::{Daemon, Event, BACKEND_CHECKS_AT_ONCE};
use crate::clock::now_unix_ms;
use crate::monitor::backends::{self, Observation};
use crate::monitor::evict;
use crate::monitor::rebuild::{self, Rebuild, Step};
use crate::monitor::state::{lock, FileRecord};
use crate::monitor::tasks::Activity;
use crate::monitor::vdc;
use crate::zstor::config::ZstorConfig;
use crate::zstor::daemon::ReloadError;
use crate::zstor::metadata::{self, MetadataError, MoveError};
use crate::zstor::{self, Zstor, ZstorError};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the zstor daemon is given to re-read its config after SIGUSR1 before rebuilds go
/// through it (it reloads in its config actor, apart from the command queue; it logs only
/// "Reloading config after receiving SIGUSR1"). Until then new copies are recorded on the set
/// of the last finished rebuild ([`Daemon::copies_set`]), and every file is checked by the
/// rebuild before the new set counts as current.
const DAEMON_RELOAD_SETTLE: Duration = Duration::from_secs(2);

/// Why a file is not known to be on the current backend set after its rebuild.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// `zstor rebuild` failed.
    #[error(transparent)]
    Zstor(#[from] ZstorError),
    /// Its metadata cannot be read back.
    #[error("cannot check where its shards are: {0}")]
    Metadata(#[from] MetadataError),
    /// The metadata backends hold no metadata for it (the key is not where zstor keeps it).
    #[error(
        "the metadata backends hold no metadata for it after the rebuild: where its shards are \
         cannot be checked"
    )]
    NoMetadata,
    /// Shards stayed on backends that left the config and could not be moved.
    #[error("shards left on backends no longer in the config: {0}")]
    Move(#[from] MoveError),
}

/// Rebuilds `path` onto the backends of `config` (zstor re-encodes the shards it cannot read),
/// then reads its metadata back: shards zstor kept on a backend that left the config but still
/// answers are moved off it through the daemon ([`metadata::move_shards_off`]). The file counts
/// as rebuilt only when its metadata shows no shard left outside the config.
pub fn rebuild_onto(
    zstor: &Zstor,
    config: &ZstorConfig,
    path: &Path,
    timeout: Duration,
) -> Result<(), RebuildError> {
    zstor.rebuild(path)?;
    let object = metadata::shards_of(config, path, timeout)?.ok_or(RebuildError::NoMetadata)?;
    let outside: Vec<String> = object.shards_outside(config).map(|s| s.label()).collect();
    if !outside.is_empty() {
        metadata::move_shards_off(config, path, timeout)?;
        tracing::info!(
            "moved the shards of {} off {} (no longer in the config)",
            path.display(),
            outside.join(", ")
        );
    }
    Ok(())
}

impl Daemon {
    // Backends, replacement, rebuild.

    pub(super) fn start_backend_checks(&mut self) {
        if self.tasks.busy(&Activity::CheckBackends) || self.backends.is_empty() {
            return;
        }
        let timeout = self.config.backend_timeout;
        let targets: Vec<_> = self
            .backends
            .iter()
            .map(|e| (e.backend.clone(), e.kind))
            .collect();
        self.tasks.spawn(Activity::CheckBackends, async move {
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
            Event::BackendsChecked(futures_util::future::join_all(checks).await)
        });
    }

    pub(super) fn backends_checked(&mut self, results: Vec<(String, Observation)>) {
        let grace = self.config.backend_grace_period;
        let threshold = self.config.zdb_namespace_fill_treshold.0;
        let lost = backends::apply(&mut self.backends, results, now_unix_ms(), grace, threshold);
        for label in lost {
            self.request_replacement(label);
        }
        self.hold_eviction_if_needed();
    }

    /// Stops a running eviction at its next batch when eviction may not run now.
    pub(super) fn hold_eviction_if_needed(&self) {
        if evict::held_back(&self.backends, self.rebuild_unfinished()).is_some() {
            self.eviction_allowed.store(false, Ordering::SeqCst);
        }
    }

    fn request_replacement(&mut self, label: String) {
        let Some(vdc) = self.config.vdc_config.clone() else {
            return;
        };
        let asked = matches!(lock(&self.state).meta(&vdc::state_key(&label)), Ok(Some(_)));
        if asked || self.tasks.busy(&Activity::AskVdc(label.clone())) {
            return;
        }
        self.tasks
            .spawn_blocking(Activity::AskVdc(label.clone()), move || {
                let result = vdc::request_replacement(&vdc, Duration::from_secs(30));
                Event::VdcAnswered(label, result)
            });
    }

    pub(super) fn vdc_answered(&mut self, label: String, result: Result<(), vdc::VdcError>) {
        match result {
            Ok(()) => {
                tracing::info!(
                    qsfs_backend = label,
                    "asked the eVDC controller for a replacement of backend {label}"
                );
                let asked_at = now_unix_ms().to_le_bytes();
                if let Err(e) = lock(&self.state).set_meta(&vdc::state_key(&label), &asked_at) {
                    tracing::error!("cannot remember the replacement request for {label}: {e}");
                }
            }
            Err(e) => tracing::error!(
                qsfs_backend = label,
                "replacement request for backend {label} failed (retried at the next check): {e}"
            ),
        }
    }

    /// A rebuild onto the current backend set is running, failed, or not done yet.
    pub(super) fn rebuild_unfinished(&self) -> bool {
        let recorded = lock(&self.state).backend_set();
        self.rebuild.active() || recorded.is_some_and(|set| set != self.backend_set)
    }

    /// When the backend set differs from the one the remote copies were written for, queues a
    /// rebuild of every verified file (after the zstor daemon was asked to load the new set).
    pub(super) fn start_rebuild_if_needed(&mut self) {
        let mut state = lock(&self.state);
        match state.backend_set() {
            None => {
                let _ = state.set_backend_set(self.backend_set);
            }
            Some(recorded) if recorded == self.backend_set => {}
            Some(_) => {
                let keys: Vec<String> = state
                    .records()
                    .filter(|(_, r)| r.remote.is_some() && r.backend_set != self.backend_set)
                    .map(|(key, _)| key)
                    .collect();
                drop(state);
                let reloaded = match self.reload_zstor_daemon() {
                    Ok(reloaded) => reloaded,
                    Err(e) => {
                        tracing::error!(
                            "the backend set changed, but {e}: the rebuild waits until the zstor \
                             daemon can be asked to re-read its config (tried again at the next \
                             backend check)"
                        );
                        // Seen as a change again at the next backend check.
                        self.zstor_config_mtime = None;
                        return;
                    }
                };
                self.rebuild.add(keys);
                if reloaded {
                    self.rebuild
                        .hold_until(Instant::now() + DAEMON_RELOAD_SETTLE);
                }
                let total = self.rebuild.total;
                tracing::info!("the backend set changed: rebuilding {total} files onto it");
                self.finish_rebuild_if_done();
            }
        }
    }

    /// When commands go through a zstor daemon that has not been asked to load the current
    /// backend set, asks it (SIGUSR1); `Ok(true)` when it was asked now.
    fn reload_zstor_daemon(&mut self) -> Result<bool, ReloadError> {
        let bin = &self.config.zstor_bin_path;
        let Some(daemon) = zstor::daemon::Daemon::of(&self.zstor_config, bin) else {
            return Ok(false);
        };
        if self
            .zstor_daemon_set
            .is_some_and(|(set, _)| set == self.backend_set)
        {
            return Ok(false);
        }
        let pid = daemon.reload(&self.config.zstor_config_path)?;
        tracing::info!(
            "asked the zstor daemon (pid {pid}) to re-read {} before rebuilding onto the new \
             backend set",
            self.config.zstor_config_path.display()
        );
        let settled = Instant::now() + DAEMON_RELOAD_SETTLE;
        self.zstor_daemon_set = Some((self.backend_set, settled));
        Ok(true)
    }

    /// The backend set an upload started now writes to ([`backends::set_of_new_copies`]).
    pub(super) fn copies_set(&self) -> u64 {
        backends::set_of_new_copies(
            self.backend_set,
            lock(&self.state).backend_set(),
            self.uploads.through_daemon(&self.zstor_config),
            self.zstor_daemon_set,
            Instant::now(),
        )
    }

    /// A rebuild onto `set` ended; the file is recorded on that set (if the set changed again
    /// meanwhile, the end of the rebuild finds it and rebuilds it once more).
    pub(super) fn rebuilt(
        &mut self,
        task: rebuild::Task,
        set: u64,
        result: Result<(), RebuildError>,
    ) {
        let key = task.key.clone();
        let attempt = task.attempts + 1;
        match (self.rebuild.finish(task, result.is_ok()), result) {
            (Step::Done, _) => {
                let mut state = lock(&self.state);
                if let Some(record) = state.get(&key).copied() {
                    state.set(
                        &key,
                        FileRecord {
                            backend_set: set,
                            ..record
                        },
                    );
                    if let Err(e) = state.commit() {
                        tracing::error!("cannot record the rebuild of {key}: {e}");
                    }
                }
                let (done, total) = (self.rebuild.done, self.rebuild.total.max(1));
                if self.rebuild.report_progress() {
                    tracing::info!("rebuild: {done}/{total} files ({}%)", done * 100 / total);
                }
            }
            (Step::Retry, Err(e)) => {
                tracing::warn!("rebuild of {key} failed (attempt {attempt}): {e}")
            }
            (_, Err(e)) => tracing::error!(
                "rebuild of {key} failed {} times, left for the next start: {e}",
                rebuild::ATTEMPTS
            ),
            (_, Ok(())) => unreachable!("a successful rebuild is done"),
        }
        self.finish_rebuild_if_done();
    }

    /// Records the backend set as current once every verified copy is on it: files stored
    /// or rebuilt onto another set meanwhile join the rebuild first.
    fn finish_rebuild_if_done(&mut self) {
        if !self.rebuild.succeeded() {
            return;
        }
        let mut state = lock(&self.state);
        let behind: Vec<String> = state
            .records()
            .filter(|(_, r)| r.remote.is_some() && r.backend_set != self.backend_set)
            .map(|(key, _)| key)
            .collect();
        if !behind.is_empty() {
            drop(state);
            tracing::info!(
                "{} files were stored or rebuilt onto another backend set meanwhile: rebuilding \
                 them too",
                behind.len()
            );
            return self.rebuild.add(behind);
        }
        if let Err(e) = state.set_backend_set(self.backend_set) {
            tracing::error!("cannot record the new backend set: {e}");
        }
        drop(state);
        if !self.rebuild.active() {
            return;
        }
        let done = self.rebuild.done;
        tracing::info!(
            "rebuild finished: {done} files on the new backend set (every shard checked on a \
             backend of the config)"
        );
        self.rebuild = Rebuild::default();
    }
}
