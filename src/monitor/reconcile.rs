//! Reconciliation: every sealed file (`d0..dN-1`, every `i*`, `zdb-namespace`) is verified
//! remote or queued for upload, whatever the spool says. Run at start and on an interval.
//!
//! A file whose size, mtime and inode match its record keeps its recorded checksum; only new
//! or changed files are read. A file that was evicted on purpose is not fetched back (only zdb
//! does that, through `missing-data`); when zdb brings it back, it is tracked again. A verified
//! file that vanished after an eviction chose it (and recorded so) was evicted by a run that
//! stopped before recording the delete: it is recorded as evicted, not reported as lost.
//! A changed file that may not replace its verified remote copy ([`super::replace`]) is
//! reported as damaged, not queued.

use super::files::{Kind, LocalFile, Roots};
use super::replace::{self, Verdict};
use super::state::{lock, FileRecord, LocalStamp, State};
use crate::logging::message_id;
use crate::zstor::Checksum;
use std::collections::HashSet;
use std::sync::Mutex;

/// What a pass found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Files to upload.
    pub to_upload: Vec<LocalFile>,
    /// Files read to compute their checksum (new or changed since their record).
    pub hashed: usize,
    /// Tracked files that vanished without being evicted.
    pub vanished: Vec<String>,
    /// Files an interrupted eviction deleted without recording it: recorded as evicted now.
    pub evicted: Vec<String>,
    /// Sealed data files that differ from their verified remote copy, and how.
    pub damaged: Vec<(LocalFile, String)>,
    /// Files scanned.
    pub scanned: usize,
    /// Bytes of data files per namespace (for the cache size).
    pub data_bytes: Vec<(String, u64)>,
}

/// One pass. `state` is locked only for short moments, never while a file is read or the
/// database synced; files are visited one namespace directory at a time.
pub fn run(roots: &Roots, state: &Mutex<State>, backend_set: u64) -> std::io::Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut seen = HashSet::new();
    roots.scan_each(|file| {
        outcome.scanned += 1;
        if let Kind::Data(_) = file.kind {
            match outcome
                .data_bytes
                .iter_mut()
                .find(|(ns, _)| *ns == file.namespace)
            {
                Some((_, bytes)) => *bytes += file.size,
                None => outcome.data_bytes.push((file.namespace.clone(), file.size)),
            }
        }
        seen.insert(key_hash(&file.key));
        if file.active {
            return;
        }
        let record = lock(state).get(&file.key).copied().unwrap_or(FileRecord {
            backend_set,
            ..FileRecord::default()
        });
        let local = match record.local {
            Some(local) if matches_stat(&local, &file) => local,
            _ => {
                let Ok(checksum) = Checksum::of_file(&file.path) else {
                    return;
                };
                outcome.hashed += 1;
                let prefix = |len| Checksum::of_prefix(&file.path, len);
                match replace::judge(
                    file.kind,
                    record.remote,
                    record.local,
                    file.size,
                    checksum,
                    prefix,
                ) {
                    Ok(Verdict::Store) => {}
                    Ok(Verdict::Damaged(how)) => return outcome.damaged.push((file, how)),
                    Err(_) => return,
                }
                let local = LocalStamp {
                    size: file.size,
                    mtime_ns: file.mtime_ns,
                    inode: file.inode,
                    checksum,
                };
                // A file zdb brought back is tracked again, as retrieved.
                lock(state).set(
                    &file.key,
                    FileRecord {
                        local: Some(local),
                        evicted: false,
                        evicting: false,
                        retrieved: record.retrieved || record.evicted,
                        ..record
                    },
                );
                local
            }
        };
        if record.remote != Some(local.checksum) {
            outcome.to_upload.push(file);
        }
    })?;
    let mut guard = lock(state);
    let gone: Vec<(String, FileRecord)> = guard
        .records()
        .filter(|(key, record)| {
            record.local.is_some() && !record.evicted && !seen.contains(&key_hash(key))
        })
        .map(|(key, record)| (key, *record))
        .collect();
    let mut sizes = Vec::new();
    for (key, record) in gone {
        let evicted = record.evicting && record.verified();
        guard.set(
            &key,
            FileRecord {
                local: None,
                evicted,
                evicting: false,
                ..record
            },
        );
        if evicted {
            sizes.push(record.local.map_or(0, |local| local.size));
            outcome.evicted.push(key);
        } else {
            outcome.vanished.push(key);
        }
    }
    let committed = guard.commit_deferred();
    drop(guard);
    committed
        .and_then(|deferred| deferred.sync(state))
        .map_err(std::io::Error::other)?;
    for (key, size) in outcome.evicted.iter().zip(sizes) {
        let path = roots.path_of(key);
        tracing::info!(
            message_id = message_id::FILE_EVICTED,
            qsfs_file = %path.display(),
            qsfs_namespace = Roots::parse_key(key).map_or("", |(ns, _)| ns),
            qsfs_size = size,
            "evicted {} ({size} bytes, verified remote; the eviction that deleted it had not recorded it yet)",
            path.display()
        );
    }
    Ok(outcome)
}

/// Keys seen in a pass are remembered by a 64-bit hash (8 bytes instead of a string each).
fn key_hash(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The file is still the one the stamp describes.
pub fn matches_stat(stamp: &LocalStamp, file: &LocalFile) -> bool {
    stamp.size == file.size && stamp.mtime_ns == file.mtime_ns && stamp.inode == file.inode
}
