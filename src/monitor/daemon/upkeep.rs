//! The daemon's periodic upkeep: reconciliation, eviction, restore points, zdbfs flushes,
//! config reloads.

use super::{keep_start_only_settings, mtime, retry_of, scratch_dir, zstor_runner, Daemon, Event};
use crate::clock::now_unix_ms;
use crate::config::monitor::MonitorConfig;
use crate::cuts::Cuts;
use crate::logging::message_id;
use crate::monitor::backends;
use crate::monitor::cuts;
use crate::monitor::evict;
use crate::monitor::flush;
use crate::monitor::reconcile;
use crate::monitor::state::lock;
use crate::monitor::status::Failure;
use crate::monitor::tasks::Activity;
use crate::restore_marks::Marks;
use crate::zstor::config::ZstorConfig;
use std::time::{Duration, Instant};

impl Daemon {
    // Reconciliation and eviction.

    /// While a restore is unfinished or refused, the namespaces on disk are not the VM's:
    /// reconciliation would upload half-restored files over the good remote ones.
    fn namespaces_held(&self) -> bool {
        let Some(reason) = Marks::new(&self.config.state_dir).hold() else {
            return false;
        };
        tracing::info!("reconciliation and eviction wait: {reason}");
        true
    }

    pub(super) fn start_reconcile(&mut self) {
        if self.tasks.busy(&Activity::Reconcile) || self.namespaces_held() {
            return;
        }
        let (roots, state, set) = (self.roots.clone(), self.state.clone(), self.backend_set);
        self.tasks.spawn_blocking(Activity::Reconcile, move || {
            Event::Reconciled(reconcile::run(&roots, &state, set))
        });
    }

    pub(super) fn reconciled(&mut self, result: std::io::Result<reconcile::Outcome>) {
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!("reconciliation failed: {e}");
                let error = Some(e.to_string());
                return Failure::track(&mut self.counters.reconciliation, error, now_unix_ms());
            }
        };
        Failure::track(&mut self.counters.reconciliation, None, now_unix_ms());
        // A restore that began while the pass ran: what it read may be half-written.
        if self.namespaces_held() {
            return;
        }
        let (now, now_ms) = (Instant::now(), now_unix_ms());
        let mut queued = 0;
        for file in outcome.to_upload {
            queued += self
                .queue
                .add_file(&file.key, file.path, file.kind, now, now_ms)
                as usize;
        }
        let namespaces = &self.config.evict_namespaces;
        self.cache_used = outcome
            .data_bytes
            .iter()
            .filter(|(ns, _)| namespaces.contains(ns))
            .map(|(_, bytes)| bytes)
            .sum();
        for (file, how) in &outcome.damaged {
            // Not moved: the next reconciliation finds it again.
            let _ = self.set_aside_damaged(&file.key, &file.path, how);
        }
        for key in &outcome.vanished {
            tracing::warn!(qsfs_file = key, "{key} disappeared without being evicted; it is not fetched back unless zdb asks for it");
        }
        let message = format!(
            "reconciliation: {} files scanned, {} hashed, {queued} queued for upload",
            outcome.scanned, outcome.hashed
        );
        if queued > 0 || outcome.hashed > 0 {
            tracing::info!("{message}");
        } else {
            tracing::debug!("{message}");
        }
        self.start_eviction();
    }

    pub(super) fn start_eviction(&mut self) {
        let Some(limit) = self.config.cache_limit_bytes() else {
            return;
        };
        if self.tasks.busy(&Activity::Evict) || self.namespaces_held() {
            return;
        }
        let held_back = evict::held_back(&self.backends, self.rebuild_unfinished());
        if held_back != self.eviction_held_back {
            match &held_back {
                Some(why) => tracing::warn!("cache eviction paused: {why}"),
                None if self.eviction_held_back.is_some() => {
                    tracing::info!("cache eviction resumed")
                }
                None => {}
            }
            self.eviction_held_back = held_back;
        }
        if self.eviction_held_back.is_some() {
            return;
        }
        let (roots, state, set) = (self.roots.clone(), self.state.clone(), self.backend_set);
        let namespaces = self.config.evict_namespaces.clone();
        let keep_retrieved = self.config.evict_keep_retrieved;
        let allowed = self.eviction_allowed.clone();
        allowed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.tasks.spawn_blocking(Activity::Evict, move || {
            let scope = evict::Scope {
                namespaces: &namespaces,
                limit,
                backend_set: set,
                keep_retrieved,
                allowed: &allowed,
            };
            Event::Evicted(evict::run(&roots, &state, &scope, &evict::RealFs))
        });
    }

    // Restore points.

    /// Uploads the restore points the hook took and publishes the newest one that is whole.
    pub(super) fn start_publishing_cuts(&mut self) {
        let held = Marks::new(&self.config.state_dir).hold().is_some();
        if self.tasks.busy(&Activity::PublishCuts) || held {
            return;
        }
        let cuts = Cuts::new(&self.config.state_dir);
        if !cuts.any_pending() {
            return;
        }
        let (zstor, state, roots) = (
            self.uploads.zstor.clone(),
            self.state.clone(),
            self.roots.clone(),
        );
        let scratch = scratch_dir(&self.config);
        if self.stopping.is_some() {
            self.final_publish = Some(false);
        }
        self.tasks.spawn_blocking(Activity::PublishCuts, move || {
            // A sealed data file is remote when verified, or when it is not here (evicted after
            // it was verified, or restored from a restore point that named it).
            let sealed_remote = |namespace: &str, n: u32| {
                let key = format!("data/{namespace}/{}", crate::layout::data_file(n));
                let record = lock(&state).get(&key).copied();
                record.is_some_and(|r| r.verified() || (r.evicted && r.remote.is_some()))
                    || !roots.path_of(&key).exists()
            };
            let result = cuts::publish(&cuts, &zstor, &roots.data, &scratch, sealed_remote);
            Event::CutsPublished(result)
        });
    }

    pub(super) fn cuts_published(&mut self, result: Result<cuts::Published, String>) {
        if self.final_publish == Some(false) {
            self.final_publish = Some(true);
        }
        match result {
            Ok(published) => tracing::debug!(
                "{} restore points wait for their data files",
                published.waiting
            ),
            Err(e) => tracing::warn!(
                message_id = message_id::CUT_NOT_PUBLISHED,
                "restore points not published yet: {e}"
            ),
        }
    }

    /// Has zdb take a restore point when zdbfs was written to since the last one.
    pub(super) fn start_forcing_cut(&mut self) {
        let held = Marks::new(&self.config.state_dir).hold().is_some();
        if self.tasks.busy(&Activity::ForceCut) || held {
            return;
        }
        let cuts = Cuts::new(&self.config.state_dir);
        if !cuts::written_since_last_cut(&cuts, &self.roots.index, &self.roots.data) {
            return;
        }
        let socket = self.config.zdb_socket_path.clone();
        let index_root = self.roots.index.clone();
        let timeout = self.config.flush_timeout.max(Duration::from_secs(30));
        self.tasks.spawn_blocking(Activity::ForceCut, move || {
            Event::CutForced(cuts::force(&socket, &cuts, &index_root, timeout).map(drop))
        });
    }

    // zdbfs.

    pub(super) fn start_flush(&mut self) {
        if self.tasks.busy(&Activity::Flush) {
            return;
        }
        let mountpoint = self.config.zdbfs_mountpoint.clone();
        let zdb_socket = self.config.zdb_socket_path.clone();
        let timeout = self.config.flush_timeout;
        let cuts = Cuts::new(&self.config.state_dir);
        if let Some(flush) = flush::start(&self.zdbfs_lane, mountpoint, zdb_socket, cuts, timeout) {
            self.tasks
                .spawn(Activity::Flush, async move { Event::Flushed(flush.await) });
        }
    }

    // Configuration.

    pub(super) fn reload(&mut self) {
        self.notifier.reloading();
        match MonitorConfig::load(&self.config_path) {
            Ok(mut config) => {
                keep_start_only_settings(&self.config, &mut config);
                self.config = config;
                self.zstor = zstor_runner(&self.config);
                self.queue.set_retry(retry_of(&self.config));
                tracing::info!("configuration reloaded from {}", self.config_path.display());
                // Also for new zstor settings (binary, timeout, log file) of the uploads.
                self.reload_zstor_config();
            }
            Err(e) => tracing::error!("{e}; keeping the previous configuration"),
        }
        self.notifier.ready(&self.status().summary_line());
    }

    pub(super) fn reload_zstor_config_if_changed(&mut self) {
        if mtime(&self.config.zstor_config_path) != self.zstor_config_mtime {
            tracing::info!("{} changed", self.config.zstor_config_path.display());
            self.reload_zstor_config();
        }
    }

    fn reload_zstor_config(&mut self) {
        self.zstor_config_mtime = mtime(&self.config.zstor_config_path);
        match ZstorConfig::load(&self.config.zstor_config_path) {
            Ok(zstor_config) => {
                self.backends = backends::entries(&zstor_config, &self.backends, now_unix_ms());
                self.backend_set = backends::set_hash(&zstor_config);
                let retired = self.uploads.file.take();
                self.uploads = super::InProcess::new(&self.config, &zstor_config, retired);
                self.zstor_config = zstor_config;
                self.start_rebuild_if_needed();
                self.hold_eviction_if_needed();
                self.start_backend_checks();
            }
            Err(e) => tracing::error!("{e}; keeping the previous zstor configuration"),
        }
    }
}
