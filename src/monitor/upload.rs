//! One upload: store a file through zstor ([`store`]), then verify it ([`verify`]).
//!
//! A file counts as uploaded only once `zstor check` on its real path returns the checksum of
//! exactly the bytes that were stored. Mutable files (index files, namespace descriptors) are
//! stored from a snapshot, with `--key-path` so the key stays the real path: the hook's
//! snapshot when it was taken in this boot, else one the monitor takes now. Sealed data files
//! are stored as they are; if one changes while it is stored, the upload does not count. The
//! active data file (a stop's job names it, and a restarted zdb appends to it) is stored from a
//! copy: zstor hashes a file and then reads it again to encode it, so a file that grows in
//! between would be stored with one content's checksum and another's bytes, over the good
//! remote copy. A data file that may not replace its verified remote copy
//! ([`super::replace`]) is never stored.

use super::files::Kind;
use super::replace::{self, Verdict};
use super::state::LocalStamp;
use crate::layout::{highest_file_number, DATA_PREFIX};
use crate::zstor::{Checksum, Zstor, ZstorError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the bytes to store come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The file itself (a snapshot is taken first for mutable files).
    Live,
    /// A snapshot the hook took while zdb waited.
    Snapshot(PathBuf),
}

/// Everything one upload needs.
#[derive(Debug, Clone)]
pub struct Request {
    /// The file's real path, its zstor key.
    pub path: PathBuf,
    /// What the file is.
    pub kind: Kind,
    /// Where its bytes come from.
    pub source: Source,
    /// The checksum already verified remote for this file, if any.
    pub known_remote: Option<Checksum>,
    /// The local content last accepted for it (its recorded stamp), if any.
    pub accepted: Option<LocalStamp>,
    /// The backend set zstor writes to now (recorded with the copy).
    pub backend_set: u64,
    /// Where the monitor may put its own snapshots.
    pub scratch_dir: PathBuf,
}

/// A store zstor accepted (to be verified with [`verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The checksum of what was stored.
    pub checksum: Checksum,
    /// The live file as it was stored, for data files (snapshots say nothing of the live file).
    pub local: Option<LocalStamp>,
    /// zstor was not called: the content was verified remote before.
    pub already_remote: bool,
    /// The backend set the copy was written to (the request's).
    pub backend_set: u64,
}

/// Why an upload did not count.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The file to upload is gone (nothing to do).
    #[error("{0} no longer exists")]
    Gone(PathBuf),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// zstor failed or timed out.
    #[error(transparent)]
    Zstor(#[from] ZstorError),
    /// `zstor check` did not return what was stored.
    #[error("verification failed for {path}: stored {stored}, zstor check returned {remote}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What we stored.
        stored: Checksum,
        /// What check said (`nothing` when not stored).
        remote: String,
    },
    /// The file changed while it was being stored.
    #[error("{0} changed while it was uploaded")]
    Changed(PathBuf),
    /// A data file differs from its verified remote copy in a way it never legitimately does.
    #[error("{path} is damaged: {how}; its verified remote copy is kept")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// How it differs.
        how: String,
    },
}

/// The local identity of a file right now.
pub fn stamp_of(path: &Path) -> std::io::Result<(u64, i64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((
        meta.size(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.ino(),
    ))
}

/// Stores one file through zstor (blocking). The upload counts only once [`verify`] agrees.
pub fn store(zstor: &Zstor, request: &Request) -> Result<Stored, UploadError> {
    let io = |context: String| move |source| UploadError::Io { context, source };
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    // The bytes to store, what they stand for, and the directory zstor must key them by.
    let mut own_snapshot = None;
    let active_data = is_active_data(request.kind, &request.path);
    let (file, bytes, key_path) = match &request.source {
        Source::Snapshot(snapshot) if snapshot.exists() => {
            (snapshot.clone(), Bytes::Snapshot, request.path.parent())
        }
        _ if request.kind.mutable() || active_data => {
            let live = match stamp_of(&request.path) {
                Ok(stamp) => stamp,
                Err(e) if gone(&e) => return Err(UploadError::Gone(request.path.clone())),
                Err(e) => {
                    return Err(UploadError::Io {
                        context: format!("cannot stat {}", request.path.display()),
                        source: e,
                    })
                }
            };
            // zstor keys the copy by `--key-path` and the copy's own file name, so the copy
            // keeps the real file's name, in a directory of its own.
            let dir = request.scratch_dir.join(unique().to_string());
            std::fs::create_dir_all(&dir)
                .map_err(io(format!("cannot create {}", dir.display())))?;
            let snapshot = dir.join(request.path.file_name().unwrap_or_default());
            own_snapshot = Some(dir);
            match crate::spool::copy_file(&request.path, &snapshot) {
                Ok(()) => Ok(()),
                Err(e) if gone(&e) => Err(UploadError::Gone(request.path.clone())),
                Err(e) => Err(UploadError::Io {
                    context: format!("cannot snapshot {}", request.path.display()),
                    source: e,
                }),
            }
            .inspect_err(|_| {
                let _ = std::fs::remove_dir_all(own_snapshot.as_ref().unwrap());
            })?;
            let bytes = if active_data {
                Bytes::CopyOfLive { live }
            } else {
                Bytes::Snapshot
            };
            (snapshot, bytes, request.path.parent())
        }
        _ => (request.path.clone(), Bytes::Live, None),
    };
    let result = store_file(zstor, request, &file, bytes, key_path);
    if let Some(dir) = own_snapshot {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// What the bytes handed to zstor stand for.
#[derive(Debug, Clone, Copy)]
enum Bytes {
    /// The live file itself (a sealed data file): it must not change while it is stored.
    Live,
    /// A copy of the live data file, taken when the live file had this stamp: a prefix of what
    /// the file holds by the time it is stored.
    CopyOfLive {
        /// The live file's (size, mtime, inode) just before the copy.
        live: (u64, i64, u64),
    },
    /// A snapshot of an index file or descriptor: says nothing of the live file.
    Snapshot,
}

/// Whether `path` is the active data file of its namespace (none numbered higher beside it).
fn is_active_data(kind: Kind, path: &Path) -> bool {
    let Kind::Data(number) = kind else {
        return false;
    };
    path.parent()
        .and_then(|dir| highest_file_number(dir, DATA_PREFIX))
        .is_none_or(|highest| highest <= number)
}

fn store_file(
    zstor: &Zstor,
    request: &Request,
    file: &Path,
    bytes: Bytes,
    key_path: Option<&Path>,
) -> Result<Stored, UploadError> {
    let before = match stamp_of(file) {
        Ok(stamp) => stamp,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UploadError::Gone(file.to_path_buf()))
        }
        Err(e) => {
            return Err(UploadError::Io {
                context: format!("cannot stat {}", file.display()),
                source: e,
            })
        }
    };
    let checksum = Checksum::of_file(file).map_err(|source| UploadError::Io {
        context: format!("cannot read {}", file.display()),
        source,
    })?;
    let local = match bytes {
        Bytes::Live => Some((before.1, before.2)),
        Bytes::CopyOfLive { live } => Some((live.1, live.2)),
        Bytes::Snapshot => None,
    }
    .map(|(mtime_ns, inode)| LocalStamp {
        size: before.0,
        mtime_ns,
        inode,
        checksum,
    });
    if request.known_remote == Some(checksum) {
        return Ok(Stored {
            checksum,
            local,
            already_remote: true,
            backend_set: request.backend_set,
        });
    }
    if local.is_some() {
        let prefix = |len| Checksum::of_prefix(file, len);
        let verdict = replace::judge(
            request.kind,
            request.known_remote,
            request.accepted,
            before.0,
            checksum,
            prefix,
        )
        .map_err(|source| UploadError::Io {
            context: format!("cannot read {}", file.display()),
            source,
        })?;
        if let Verdict::Damaged(how) = verdict {
            return Err(UploadError::Damaged {
                path: file.to_path_buf(),
                how,
            });
        }
    }
    zstor.store(file, key_path)?;
    if matches!(bytes, Bytes::Live) && stamp_of(file).ok() != Some(before) {
        return Err(UploadError::Changed(file.to_path_buf()));
    }
    Ok(Stored {
        checksum,
        local,
        already_remote: false,
        backend_set: request.backend_set,
    })
}

/// Verifies a store (blocking): `zstor check` on the real path must return what was stored.
pub fn verify(zstor: &Zstor, path: &Path, stored: &Stored) -> Result<(), UploadError> {
    let remote = zstor.check(path)?;
    if remote != Some(stored.checksum) {
        return Err(UploadError::Mismatch {
            path: path.to_path_buf(),
            stored: stored.checksum,
            remote: remote.map_or("nothing".to_string(), |c| c.to_string()),
        });
    }
    Ok(())
}

fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_active_data_file_is_the_highest_numbered_one() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["d0", "d1", "i1"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let active = |kind| is_active_data(kind, &dir.path().join("d1"));
        assert!(active(Kind::Data(1)));
        assert!(!is_active_data(Kind::Data(0), &dir.path().join("d0")));
        assert!(
            !active(Kind::Index(1)),
            "index files are snapshotted anyway"
        );
        assert!(is_active_data(Kind::Data(0), Path::new("/gone/d0")));
    }
}
