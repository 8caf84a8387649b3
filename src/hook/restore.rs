//! `namespaces-init`: decide whether this VM restores zdbfs's namespaces from the backends,
//! restore them, and record the outcome ([`crate::restore_marks`]) (qss#38).
//!
//! * **What is on this VM.** "Fresh" means both restored namespaces absent from both roots:
//!   then the restore runs. All four present: nothing to restore. Anything in between (an index
//!   without its data, one namespace without the other) is refused and left exactly as it is.
//! * **What the backends hold.** Only the published restore point ([`crate::cuts`]): its
//!   manifest names zdbfs-meta and zdbfs-data as they were at one instant, every index file
//!   and descriptor with the key and checksum of its copy, and each namespace's last data file
//!   (older data files come back on demand through `missing-data`). The files are retrieved in
//!   parallel into their keys (the cut's own names, never zdb's), each checked against the
//!   manifest's checksum, then renamed into place. Index files without a restore point (an
//!   older version's uploads) are refused: nothing says they belong together.
//! * **Nothing is damaged.** The `restoring` mark is written before the restore creates the
//!   namespace directories; while it exists, nothing is spooled, uploaded or evicted, and a
//!   restore that failed, or was killed, has its directories (its own) removed and is run again.
//!   `ready` starts zdb only after this hook completed for that very zdb.

use super::reads::Reads;
use super::{Handled, HookError};
use crate::config::appliance::{HookConfig, Paths};
use crate::cuts::{CutFile, Cuts, Manifest};
use crate::layout::{self, RESTORED_NAMESPACES};
use crate::logging::message_id;
use crate::restore_marks::{Marks, Process};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Runs `namespaces-init` for `zdb` (`None`: its identity could not be read) and records its
/// outcome. `roots` says whether zdb passed the configured index and data roots.
pub(super) fn run(
    config: &HookConfig,
    reads: &Reads,
    roots: Result<(), HookError>,
    zdb: Option<Process>,
) -> Result<Handled, HookError> {
    let marks = Marks::new(&config.paths.state_dir);
    let result = marks
        .clear_done()
        .map_err(mark_error(&marks))
        .and(roots)
        .and_then(|()| zdb.ok_or_else(|| HookError::Restore("cannot identify zdb".into())))
        .and_then(|zdb| Ok((init(config, reads, &marks)?, zdb)));
    match result {
        Ok((handled, zdb)) => {
            super::record_empty_at_load(&config.paths).map_err(super::io(
                "cannot record the namespaces that need a jump at the start",
            ))?;
            marks.record_done(&zdb).map_err(mark_error(&marks))?;
            Ok(handled)
        }
        Err(e) => {
            tracing::error!(
                message_id = message_id::RESTORE_REFUSED,
                qsfs_reason = %e,
                "zdb will not start: {e}"
            );
            marks
                .record_failure(&e.to_string())
                .map_err(mark_error(&marks))?;
            Err(e)
        }
    }
}

fn init(config: &HookConfig, reads: &Reads, marks: &Marks) -> Result<Handled, HookError> {
    let dirs = namespace_dirs(&config.paths);
    if marks.restoring() {
        tracing::warn!("a previous restore did not finish: removing the namespaces it created");
        remove_restored(&marks.restored_dirs())?;
        marks.end_restore().map_err(mark_error(marks))?;
    }
    if marks.legacy_interrupted() {
        // It recorded no directories: only empty ones can be known to be the restore's.
        tracing::warn!("a restore of the previous version did not finish");
        if let Err(e) = remove_restored(&not_recorded(&dirs)) {
            marks
                .refuse_local(&e.to_string())
                .map_err(mark_error(marks))?;
            return Err(e);
        }
    }
    let local = local_state(&dirs);
    if let Some(reason) = marks.local_refusal() {
        if local != Local::Absent {
            return Err(HookError::Restore(format!(
                "{reason} (still refused: stop qsfs-zdb, then move all four aside to restore \
                 from the backends, or remove {} to start zdb on what is there; then \
                 `systemctl reset-failed qsfs-zdb` and start qsfs.target)",
                marks.local_refusal_path().display()
            )));
        }
        marks.clear_local_refusal().map_err(mark_error(marks))?;
    }
    match local {
        Local::Present => {
            return Ok(Handled {
                note: Some("the VM already has data, nothing to restore"),
                ..Handled::default()
            });
        }
        Local::Partial { present, absent } => {
            let reason = format!(
                "only part of zdbfs's namespaces is on this VM ({} present; {} absent or \
                 empty): refusing to restore over it or to start zdb on it",
                super::join_paths(&present, ", "),
                super::join_paths(&absent, ", ")
            );
            marks.refuse_local(&reason).map_err(mark_error(marks))?;
            return Err(HookError::Restore(reason));
        }
        Local::Absent => {}
    }
    if marks.take_start_empty().map_err(mark_error(marks))? {
        return Ok(Handled {
            note: Some("starting empty, as asked: this VM's uploads replace the backends' files"),
            ..Handled::default()
        });
    }
    marks
        .restoring_dirs(&not_recorded(&dirs))
        .map_err(mark_error(marks))?;
    // zstor resolves a missing file through its directory, so the directories come first.
    let mut created = Vec::new();
    for dir in &dirs {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::metadata(dir))
            .map(|meta| created.push((dir.clone(), meta.ino())))
            .map_err(super::io(format!("cannot create {}", dir.display())))?;
    }
    marks.restoring_dirs(&created).map_err(mark_error(marks))?;
    let result = restore(config, reads, &dirs, marks);
    if result.is_err() {
        remove_restored(&created)?;
    }
    marks.end_restore().map_err(mark_error(marks))?;
    result
}

fn restore(
    config: &HookConfig,
    reads: &Reads,
    dirs: &[PathBuf],
    marks: &Marks,
) -> Result<Handled, HookError> {
    let deadline = Instant::now() + config.hook.restore_timeout;
    let paths = &config.paths;
    let cuts = Cuts::new(&paths.state_dir);
    let refused = |reason: String| {
        HookError::Restore(format!(
            "{reason}. To start this VM empty instead (its uploads then replace the backends' \
             files), create {} and start qsfs.target again",
            marks.start_empty_path().display()
        ))
    };
    let latest = cuts.latest();
    let Some(checksum) = reads.check(&latest, deadline)? else {
        // Index files without a restore point are no consistent state (an older version
        // uploaded each namespace's files at its own times).
        for namespace in RESTORED_NAMESPACES {
            let first = paths.index_dir.join(namespace).join(layout::index_file(0));
            if reads.check(&first, deadline)?.is_some() {
                return Err(refused(format!(
                    "{} is stored on the backends but no restore point ({}): no consistent \
                     restore point",
                    first.display(),
                    latest.display()
                )));
            }
        }
        for dir in dirs {
            std::fs::remove_dir(dir)
                .map_err(super::io(format!("cannot remove {}", dir.display())))?;
        }
        return Ok(Handled {
            note: Some("the backends hold no restore point, starting empty"),
            ..Handled::default()
        });
    };
    set_aside_cuts(&cuts)?;
    std::fs::create_dir_all(cuts.dir())
        .map_err(super::io(format!("cannot create {}", cuts.dir().display())))?;
    super::retrieve_verified(reads, &latest, checksum, deadline)?;
    let manifest = std::fs::read(&latest)
        .map_err(super::io(format!("cannot read {}", latest.display())))
        .and_then(|bytes| {
            Manifest::parse(&bytes)
                .and_then(|m| m.check(cuts.dir(), &paths.data_dir).map(|()| m))
                .map_err(|e| refused(format!("{}: {e}", latest.display())))
        })?;
    let files: Vec<(&str, &CutFile)> = manifest.files().collect();
    for (_, file) in &files {
        let dir = crate::fsutil::parent(&file.key);
        std::fs::create_dir_all(dir)
            .map_err(super::io(format!("cannot create {}", dir.display())))?;
    }
    retrieve_all(reads, &files, deadline).map_err(|e| {
        refused(format!(
            "restore point {} (taken {}) cannot be restored: {e}",
            manifest.id,
            crate::clock::utc(manifest.taken_unix_ms)
        ))
    })?;
    // Into place. (Their times are not worth restoring: zdb rewrites every index file's header,
    // its open time, when it loads them, so the next cut copies them all again.)
    let mut restored = Vec::new();
    for (namespace, file) in &files {
        let root = if layout::file_number(&file.name, layout::DATA_PREFIX).is_some() {
            &paths.data_dir
        } else {
            &paths.index_dir
        };
        let target = root.join(namespace).join(&file.name);
        if file.key != target {
            std::fs::rename(&file.key, &target).map_err(super::io(format!(
                "cannot move {} into place",
                file.key.display()
            )))?;
        }
        restored.push(target);
    }
    // Durable before the mark that says the restore is unfinished goes.
    for path in restored.iter().chain(dirs) {
        std::fs::File::open(path)
            .and_then(|file| file.sync_all())
            .map_err(super::io(format!("cannot sync {}", path.display())))?;
    }
    cuts.record_published(&manifest)
        .and_then(|()| cuts.record_taken(&manifest))
        .and_then(|()| std::fs::remove_file(&latest))
        .and_then(|()| cuts.remove_up_to(&manifest.id))
        .map_err(super::io(format!(
            "cannot record the restore point in {}",
            cuts.dir().display()
        )))?;
    tracing::info!(
        qsfs_cut = manifest.id,
        "restored the restore point {} taken {}",
        manifest.id,
        crate::clock::utc(manifest.taken_unix_ms)
    );
    Ok(Handled {
        files: restored,
        ..Handled::default()
    })
}

/// How many files a restore retrieves at once (each through its own zstor).
const RETRIEVES_AT_ONCE: usize = 8;

/// Retrieves every file of a restore point into its key, [`RETRIEVES_AT_ONCE`] at a time, each
/// checked against the checksum the restore point recorded. The first failure stops the rest.
fn retrieve_all(
    reads: &Reads,
    files: &[(&str, &CutFile)],
    deadline: Instant,
) -> Result<(), HookError> {
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<HookError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..RETRIEVES_AT_ONCE.min(files.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, file)) = files.get(i) else { break };
                if failure.lock().unwrap().is_some() {
                    break;
                }
                let checksum = file.checksum.expect("checked manifest");
                if let Err(e) = super::retrieve_verified(reads, &file.key, checksum, deadline) {
                    failure.lock().unwrap().get_or_insert(e);
                }
            });
        }
    });
    failure.into_inner().unwrap().map_or(Ok(()), Err)
}

/// A fresh VM's restore owns the cuts directory. What an earlier restore left there (retrieved
/// copies, no record of a cut taken) is removed; anything else belonged to namespaces that are
/// gone now and is moved aside, never deleted.
fn set_aside_cuts(cuts: &Cuts) -> Result<(), HookError> {
    let dir = cuts.dir();
    if !holds_something(dir) {
        return Ok(());
    }
    let result =
        if cuts.last_taken().is_none() && cuts.published().is_none() && cuts.pending().is_empty() {
            std::fs::remove_dir_all(dir)
        } else {
            let aside = dir.with_file_name(format!(
                "cuts-before-restore-{}",
                crate::clock::now_unix_ms()
            ));
            tracing::warn!(
                "{} holds the restore points of namespaces no longer on this VM: moved to {}",
                dir.display(),
                aside.display()
            );
            std::fs::rename(dir, aside)
        };
    result.map_err(super::io(format!("cannot clear {}", dir.display())))
}

/// The restored namespaces' directories in both roots.
fn namespace_dirs(paths: &Paths) -> Vec<PathBuf> {
    RESTORED_NAMESPACES
        .iter()
        .flat_map(|ns| [paths.index_dir.join(ns), paths.data_dir.join(ns)])
        .collect()
}

/// What this VM holds of the restored namespaces.
#[derive(Debug, PartialEq, Eq)]
enum Local {
    /// Nothing: a fresh VM.
    Absent,
    /// Every directory.
    Present,
    /// Some.
    Partial {
        present: Vec<PathBuf>,
        absent: Vec<PathBuf>,
    },
}

/// A directory that is absent or empty holds nothing to lose.
fn holds_something(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
        || (dir.exists() && !dir.is_dir())
}

fn local_state(dirs: &[PathBuf]) -> Local {
    let (present, absent): (Vec<PathBuf>, Vec<PathBuf>) =
        dirs.iter().cloned().partition(|dir| holds_something(dir));
    match (present.is_empty(), absent.is_empty()) {
        (true, _) => Local::Absent,
        (false, true) => Local::Present,
        (false, false) => Local::Partial { present, absent },
    }
}

fn mark_error(marks: &Marks) -> impl Fn(std::io::Error) -> HookError + '_ {
    move |source| HookError::Io {
        context: format!(
            "cannot write the restore marks next to {}",
            marks.done_path().display()
        ),
        source,
    }
}

/// `dirs` with no inode recorded: [`remove_restored`] then removes only the empty ones.
fn not_recorded(dirs: &[PathBuf]) -> Vec<(PathBuf, u64)> {
    dirs.iter().map(|dir| (dir.clone(), 0)).collect()
}

/// Removes the directories a restore created (`dirs`, by inode) with everything in them, and
/// an empty one whose inode it had not recorded yet. Anything else is not the restore's:
/// refused, left as it is.
fn remove_restored(dirs: &[(PathBuf, u64)]) -> Result<(), HookError> {
    for (dir, inode) in dirs {
        let result = match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Ok(meta) if meta.is_dir() && meta.ino() == *inode => std::fs::remove_dir_all(dir),
            Ok(_) if !holds_something(dir) => std::fs::remove_dir(dir),
            Ok(_) => {
                return Err(HookError::Restore(format!(
                    "{} may not be the unfinished restore's and holds files: refusing to \
                     remove it, to restore over it or to start zdb on it",
                    dir.display()
                )))
            }
            Err(e) => Err(e),
        };
        result.map_err(super::io(format!("cannot remove {}", dir.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_vm_has_none_of_the_four_directories() {
        let dir = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| dir.path().join(n))
            .collect();
        assert_eq!(local_state(&dirs), Local::Absent);
        std::fs::create_dir(&dirs[0]).unwrap();
        assert_eq!(
            local_state(&dirs),
            Local::Absent,
            "an empty one holds nothing"
        );
        std::fs::remove_dir(&dirs[0]).unwrap();
        std::fs::create_dir(&dirs[1]).unwrap();
        std::fs::write(dirs[1].join("d0"), "x").unwrap();
        assert_eq!(
            local_state(&dirs),
            Local::Partial {
                present: vec![dirs[1].clone()],
                absent: vec![dirs[0].clone(), dirs[2].clone(), dirs[3].clone()]
            }
        );
        for d in [&dirs[0], &dirs[2], &dirs[3]] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("i0"), "x").unwrap();
        }
        assert_eq!(local_state(&dirs), Local::Present);
    }

    #[test]
    fn an_unfinished_restore_removes_only_its_own_directories() {
        let dir = tempfile::tempdir().unwrap();
        let [ours, empty, theirs] = ["ours", "empty", "theirs"].map(|n| dir.path().join(n));
        for d in [&ours, &empty, &theirs] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(ours.join("i0"), "half").unwrap();
        std::fs::write(theirs.join("i0"), "an operator's").unwrap();
        let inode = std::fs::metadata(&ours).unwrap().ino();
        let gone = dir.path().join("never-made");
        remove_restored(&[(ours.clone(), inode), (empty.clone(), 0), (gone, 0)]).unwrap();
        assert!(!ours.exists() && !empty.exists());

        let refused = remove_restored(&[(theirs.clone(), 0)]).unwrap_err();
        assert!(refused
            .to_string()
            .contains("may not be the unfinished restore's"));
        assert!(theirs.join("i0").exists());
    }
}
