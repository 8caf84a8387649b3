//! The daemon's upload lane: spool jobs in, uploads and verifications out.

use super::{scratch_dir, Daemon, Event};
use crate::clock::now_unix_ms;
use crate::logging::message_id;
use crate::monitor::damaged;
use crate::monitor::files::{Kind, Roots};
use crate::monitor::queue::{Outcome, Upload};
use crate::monitor::state::{lock, FileRecord};
use crate::monitor::tasks::Activity;
use crate::monitor::upload::{self, Source, Stored, UploadError};
use crate::spool::{BadJob, Job, Problem};
use std::path::Path;
use std::time::Instant;

/// Polls a spool job may fail to be read (EMFILE, EIO) before it is set aside in `bad/`.
const UNREADABLE_POLLS: u32 = 30;

impl Daemon {
    // Spool jobs.

    /// Registers the jobs the hook wrote since the last poll.
    pub(super) fn poll_spool(&mut self) {
        let queue = &self.queue;
        let jobs = match self.spool.new_jobs(|id| queue.has_job(id)) {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!("cannot list the spool {}: {e}", self.spool.dir().display());
                return;
            }
        };
        for job in jobs {
            match job {
                Ok(job) => {
                    let id = Some(std::ffi::OsStr::new(&job.id));
                    self.unreadable_jobs
                        .retain(|path, _| path.file_stem() != id);
                    self.register_job(job)
                }
                // Removed meanwhile, or not readable this time (EMFILE, EIO): the next poll
                // reads it again, up to UNREADABLE_POLLS times before it is set aside.
                Err(BadJob {
                    problem: Problem::Unreadable(e),
                    path,
                }) if e.kind() != std::io::ErrorKind::NotFound => {
                    let polls = self.unreadable_jobs.entry(path.clone()).or_default();
                    *polls += 1;
                    if *polls < UNREADABLE_POLLS {
                        tracing::warn!(
                            "cannot read spool job {} (attempt {polls} of {UNREADABLE_POLLS}): \
                             {e}; trying again",
                            path.display()
                        );
                    } else {
                        self.unreadable_jobs.remove(&path);
                        let reason = format!("unreadable {UNREADABLE_POLLS} times: {e}");
                        self.quarantine(&path, &reason);
                    }
                }
                Err(BadJob {
                    problem: Problem::Unreadable(_),
                    ..
                }) => {}
                Err(bad) => self.quarantine(&bad.path, &bad.problem.to_string()),
            }
        }
    }

    /// Moves a job that cannot be used to the spool's `bad/`, never deleting it.
    fn quarantine(&self, job_file: &Path, reason: &str) {
        let file = job_file.display().to_string();
        match self.spool.quarantine(job_file, reason) {
            Ok(moved) => tracing::error!(
                message_id = message_id::SPOOL_JOB_QUARANTINED,
                qsfs_job_file = file,
                "spool job {file}: {reason}; moved to {}",
                moved.display()
            ),
            Err(e) => tracing::error!(
                message_id = message_id::SPOOL_JOB_QUARANTINED,
                qsfs_job_file = file,
                "spool job {file}: {reason}; cannot move it aside: {e}"
            ),
        }
    }

    /// Queues the files of a job; a job naming a file outside the roots is quarantined whole.
    fn register_job(&mut self, job: Job) {
        let mut files = Vec::new();
        for file in &job.files {
            match self.roots.key_of(&file.path) {
                Some(_) if symlinked(&file.path) => {
                    let reason = format!(
                        "{} or its namespace directory is a symlink: zdb writes neither",
                        file.path.display()
                    );
                    return self.quarantine(&self.spool.job_path(&job.id), &reason);
                }
                Some(key) => {
                    let kind = Roots::parse_key(&key).map_or(Kind::Data(0), |(_, kind)| kind);
                    let source = match &file.snapshot {
                        Some(snapshot) if kind.mutable() && job.snapshots_usable() => {
                            Source::Snapshot(snapshot.clone())
                        }
                        _ => Source::Live,
                    };
                    files.push((key, file.path.clone(), kind, source));
                }
                None if file
                    .path
                    .components()
                    .any(|c| c.as_os_str() == crate::layout::TEMP_NAMESPACE) => {}
                None => {
                    let reason = format!(
                        "{} is not a zdb file under {} or {} (the zdb roots of the monitor config)",
                        file.path.display(),
                        self.roots.index.display(),
                        self.roots.data.display()
                    );
                    return self.quarantine(&self.spool.job_path(&job.id), &reason);
                }
            }
        }
        if self
            .queue
            .add_job(&job.id, files, Instant::now(), now_unix_ms())
        {
            self.remove_job(&job.id);
        }
    }

    fn remove_job(&mut self, id: &str) {
        if let Err(e) = self.spool.remove(id) {
            tracing::error!("cannot remove finished spool job {id}: {e}");
        }
    }

    // Uploads.

    /// Starts due uploads and rebuilds up to their concurrency limits.
    pub(super) fn dispatch(&mut self) {
        let now = Instant::now();
        while self.tasks.count(&Activity::Upload) < self.config.upload_concurrency.get() as usize {
            let Some(upload) = self.queue.start_next(now) else {
                break;
            };
            let record = lock(&self.state).get(&upload.key).copied();
            let request = upload::Request {
                path: upload.path.clone(),
                kind: upload.kind,
                source: upload.source.clone(),
                known_remote: record.and_then(|r| r.remote),
                accepted: record.and_then(|r| r.local),
                backend_set: self.copies_set(),
                scratch_dir: scratch_dir(&self.config),
            };
            let zstor = self.uploads.zstor.clone();
            self.tasks.spawn_blocking(Activity::Upload, move || {
                Event::Stored(upload, upload::store(&zstor, &request))
            });
        }
        let concurrency = self.config.rebuild_concurrency.get() as usize;
        while self.stopping.is_none() {
            let Some(task) = self.rebuild.start_next(concurrency, now) else {
                break;
            };
            let (path, zstor) = (self.roots.path_of(&task.key), self.zstor.clone());
            let (config, timeout) = (self.zstor_config.clone(), self.config.zstor_timeout);
            let set = self.backend_set;
            self.tasks.spawn_blocking(Activity::Rebuild, move || {
                let result = super::repair::rebuild_onto(&zstor, &config, &path, timeout);
                Event::Rebuilt(task, set, result)
            });
        }
    }

    /// A store finished: verify it. Verifications do not count against the upload
    /// concurrency (they are short, and at most one follows each store).
    pub(super) fn stored(&mut self, upload: Upload, result: Result<Stored, UploadError>) {
        match result {
            Ok(stored) if !stored.already_remote => {
                let zstor = self.uploads.zstor.clone();
                self.tasks.spawn_blocking(Activity::Verify, move || {
                    let result = upload::verify(&zstor, &upload.path, &stored).map(|()| stored);
                    Event::Verified(upload, result)
                });
            }
            result => self.verified(upload, result),
        }
    }

    pub(super) fn verified(&mut self, upload: Upload, result: Result<Stored, UploadError>) {
        let path = upload.path.display().to_string();
        let result = match result {
            Ok(verified) => self
                .record_verified(&upload.key, &verified)
                .map(|()| verified),
            Err(UploadError::Gone(gone)) => {
                let gone = gone.display();
                tracing::warn!(
                    qsfs_file = path,
                    "{gone} is gone before it could be uploaded; nothing to upload"
                );
                return self.finish_upload(&upload, Outcome::Done);
            }
            Err(UploadError::Damaged { how, .. }) => {
                let handled = self.set_aside_damaged(&upload.key, &upload.path, &how);
                let outcome = if handled {
                    Outcome::Done
                } else {
                    Outcome::Failed
                };
                return self.finish_upload(&upload, outcome);
            }
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(verified) if verified.already_remote => {
                tracing::debug!(qsfs_file = path, "already verified remote");
                self.finish_upload(&upload, Outcome::Done);
            }
            Ok(verified) => {
                self.counters.verified_total += 1;
                self.counters.last_error = None;
                tracing::info!(
                    message_id = message_id::UPLOAD_VERIFIED,
                    qsfs_file = path,
                    qsfs_checksum = %verified.checksum,
                    "upload verified: {path}"
                );
                self.finish_upload(&upload, Outcome::Done);
            }
            Err(error) => {
                self.counters.failed_total += 1;
                let finished =
                    self.queue
                        .finish(&upload.key, &upload.jobs, Outcome::Failed, Instant::now());
                if let Some((attempt, delay)) = finished.retry {
                    tracing::warn!(
                        message_id = message_id::UPLOAD_FAILED,
                        qsfs_file = path,
                        qsfs_attempt = attempt,
                        "upload of {path} failed (attempt {attempt}, retry in {} s): {error}",
                        delay.as_secs()
                    );
                }
                self.counters.last_error = Some(error);
            }
        }
    }

    /// Moves a damaged local copy aside (see [`crate::monitor::damaged`]) and records the
    /// file as evicted, so zdb's next read brings the verified remote copy back. zdb's active
    /// data file is never moved (zdb appends to it): it is only reported. False when the copy
    /// could not be moved (tried again later).
    pub(super) fn set_aside_damaged(&mut self, key: &str, path: &Path, how: &str) -> bool {
        let file = path.display();
        let number = Roots::parse_key(key).and_then(|(_, kind)| match kind {
            Kind::Data(n) => Some(n),
            _ => None,
        });
        let active = path
            .parent()
            .and_then(|dir| crate::layout::highest_file_number(dir, 'd'));
        if number.is_some() && number == active {
            tracing::error!(
                message_id = message_id::LOCAL_COPY_DAMAGED,
                qsfs_file = %file,
                "{file} differs from its verified remote copy ({how}) but is zdb's active data \
                 file: it is not stored and left in place"
            );
            return true;
        }
        // Recorded in memory first: a failed commit is written back when the state reopens.
        let before = lock(&self.state).get(key).copied();
        if let Some(record) = before {
            let evicted = FileRecord {
                local: None,
                evicted: true,
                evicting: false,
                retrieved: false,
                ..record
            };
            lock(&self.state).set(key, evicted);
        }
        let aside = match damaged::set_aside(&self.config.state_dir, key, path) {
            Ok(aside) => aside,
            Err(e) => {
                if let Some(record) = before {
                    lock(&self.state).set(key, record);
                }
                tracing::error!(
                    message_id = message_id::LOCAL_COPY_DAMAGED,
                    qsfs_file = %file,
                    "{file} is damaged ({how}); its verified remote copy is kept, but the \
                     local copy cannot be moved aside (tried again later): {e}"
                );
                return false;
            }
        };
        if let Err(e) = lock(&self.state).commit() {
            tracing::error!("cannot record that {file} was set aside: {e}");
        }
        tracing::error!(
            message_id = message_id::LOCAL_COPY_DAMAGED,
            qsfs_file = %file,
            qsfs_set_aside = %aside.display(),
            "{file} is damaged ({how}): its verified remote copy is kept and the local copy \
             was moved to {}; zdb's next read brings the good copy back. Remove the damaged \
             copy once you have looked at it",
            aside.display()
        );
        true
    }

    /// Records `key` as verified remote with the checksum it was stored with.
    fn record_verified(&self, key: &str, verified: &Stored) -> Result<(), String> {
        let mut state = lock(&self.state);
        let mut record = state.get(key).copied().unwrap_or_default();
        record.remote = Some(verified.checksum);
        // A copy found already remote stays on the set it was written or rebuilt for.
        if !verified.already_remote {
            record.backend_set = verified.backend_set;
        }
        if let Some(local) = verified.local {
            record.local = Some(local);
            record.evicted = false;
        }
        state.set(key, record);
        state.commit().map_err(|e| e.to_string())
    }

    fn finish_upload(&mut self, upload: &Upload, outcome: Outcome) {
        let finished = self
            .queue
            .finish(&upload.key, &upload.jobs, outcome, Instant::now());
        for id in &finished.jobs {
            self.remove_job(id);
        }
    }
}

/// Whether the file or its namespace directory is a symlink, which could lead outside the roots.
fn symlinked(path: &Path) -> bool {
    let is_link = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    is_link(path) || path.parent().is_some_and(is_link)
}
