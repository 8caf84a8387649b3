//! The daemon's periodic upkeep: reconciliation, eviction, zdbfs flushes, config reloads.

use super::{keep_start_only_settings, lock, mtime, retry_of, zstor_runner, Daemon, Event};
use crate::clock::now_unix_ms;
use crate::config::monitor::MonitorConfig;
use crate::logging::message_id;
use crate::monitor::backends;
use crate::monitor::evict;
use crate::monitor::files::Roots;
use crate::monitor::flush;
use crate::monitor::reconcile;
use crate::monitor::state::{FileRecord, State};
use crate::monitor::tasks::Activity;
use crate::monitor::upload;
use crate::zstor::config::ZstorConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};

impl Daemon {
    // Reconciliation and eviction.

    pub(super) fn start_reconcile(&mut self) {
        if self.tasks.busy(&Activity::Reconcile) {
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
            Err(e) => return tracing::error!("reconciliation failed: {e}"),
        };
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
        let Some(limit_mib) = self.config.max_zdb_data_dir_size else {
            return;
        };
        if self.tasks.busy(&Activity::Evict) {
            return;
        }
        let (roots, state) = (self.roots.clone(), self.state.clone());
        let namespaces = self.config.evict_namespaces.clone();
        self.tasks.spawn_blocking(Activity::Evict, move || {
            Event::Evicted(evict_now(
                &roots,
                &state,
                &namespaces,
                limit_mib * 1024 * 1024,
            ))
        });
    }

    // zdbfs.

    pub(super) fn start_flush(&mut self) {
        if self.tasks.busy(&Activity::Flush) {
            return;
        }
        let mountpoint = self.config.zdbfs_mountpoint.clone();
        let timeout = Duration::from_secs(self.config.flush_timeout_secs);
        if let Some(flush) = flush::start(&self.zdbfs_lane, mountpoint, timeout) {
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
                self.start_rebuild_if_needed();
                self.start_backend_checks();
            }
            Err(e) => tracing::error!("{e}; keeping the previous zstor configuration"),
        }
    }
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
    let by_atime = crate::monitor::files::records_atime(&roots.data);
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
        let current = crate::monitor::files::LocalFile {
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
