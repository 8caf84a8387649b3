//! `namespaces-init`: decide whether this VM restores zdbfs's namespaces from the backends,
//! restore them, and record the outcome ([`crate::restore_marks`]) (qss#38).
//!
//! * **What is on this VM.** "Fresh" means both restored namespaces absent from both roots:
//!   then the restore runs. All four present: nothing to restore. Anything in between (an index
//!   without its data, one namespace without the other) is refused and left exactly as it is.
//! * **What the backends hold.** For each namespace: `zdb-namespace`, the index files
//!   `i0, i1, …` until one is not stored, and the data file of the last one (older data files
//!   come back on demand through `missing-data`). An index whose data file is not stored, or
//!   one namespace with index files while the other has none, is refused: zdb would append at
//!   offsets the index already points to, or hand out again ids the other namespace refers to.
//!   Everything is checked before anything is retrieved; every file is checked against its
//!   stored checksum.
//! * **Nothing is damaged.** The `restoring` mark is written before the restore creates the
//!   namespace directories; while it exists, nothing is spooled, uploaded or evicted, and a
//!   restore that failed, or was killed, has its directories (its own) removed and is run again.
//!   `ready` starts zdb only after this hook completed for that very zdb.

use super::reads::Reads;
use super::{Handled, HookError};
use crate::config::appliance::{HookConfig, Paths};
use crate::layout::{self, NAMESPACE_FILE, RESTORED_NAMESPACES};
use crate::logging::message_id;
use crate::restore_marks::{Marks, Process};
use crate::zstor::Checksum;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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
            })
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
    let mut plans = Vec::new();
    for namespace in RESTORED_NAMESPACES {
        plans.push(survey(config, reads, namespace, deadline)?);
    }
    judge(&plans).map_err(|reason| {
        HookError::Restore(format!(
            "{reason}. To start this VM empty instead (its uploads then replace the backends' \
             files), create {} and start qsfs.target again",
            marks.start_empty_path().display()
        ))
    })?;
    // Descriptors alone hold nothing to restore.
    if plans.iter().all(|plan| plan.index.is_empty()) {
        plans.clear();
    }
    let mut restored = Vec::new();
    for plan in &plans {
        for (path, checksum) in plan.files() {
            super::retrieve_verified(reads, path, *checksum, deadline)?;
            restored.push(path.clone());
        }
    }
    // Durable before the mark that says the restore is unfinished goes.
    for path in restored.iter().chain(dirs) {
        std::fs::File::open(path)
            .and_then(|file| file.sync_all())
            .map_err(super::io(format!("cannot sync {}", path.display())))?;
    }
    if restored.is_empty() {
        for dir in dirs {
            std::fs::remove_dir(dir)
                .map_err(super::io(format!("cannot remove {}", dir.display())))?;
        }
        return Ok(Handled {
            note: Some("the backends hold no namespace, starting empty"),
            ..Handled::default()
        });
    }
    Ok(Handled {
        files: restored,
        ..Handled::default()
    })
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

/// What the backends hold of one namespace, and what a restore brings back of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    namespace: &'static str,
    /// `zdb-namespace`, if stored.
    descriptor: Option<(PathBuf, Checksum)>,
    /// `i0, i1, …` up to the first one not stored.
    index: Vec<(PathBuf, Checksum)>,
    /// An index file stored after the first one that is not (a gap), if any.
    beyond_gap: Option<PathBuf>,
    /// The data file of the last index file, and its checksum if stored.
    last_data: Option<(PathBuf, Option<Checksum>)>,
}

impl Plan {
    fn files(&self) -> impl Iterator<Item = (&PathBuf, &Checksum)> {
        let data = self
            .last_data
            .iter()
            .filter_map(|(path, checksum)| Some((path, checksum.as_ref()?)));
        self.descriptor
            .iter()
            .chain(self.index.iter())
            .map(|(path, checksum)| (path, checksum))
            .chain(data)
    }
}

fn survey(
    config: &HookConfig,
    reads: &Reads,
    namespace: &'static str,
    deadline: Instant,
) -> Result<Plan, HookError> {
    let index_dir = config.paths.index_dir.join(namespace);
    let descriptor = index_dir.join(NAMESPACE_FILE);
    let mut plan = Plan {
        namespace,
        descriptor: reads
            .check(&descriptor, deadline)?
            .map(|sum| (descriptor, sum)),
        index: Vec::new(),
        beyond_gap: None,
        last_data: None,
    };
    let index_file = |n: usize| index_dir.join(layout::index_file(n as u32));
    while let Some(checksum) = reads.check(&index_file(plan.index.len()), deadline)? {
        plan.index.push((index_file(plan.index.len()), checksum));
    }
    let next = index_file(plan.index.len() + 1);
    if reads.check(&next, deadline)?.is_some() {
        plan.beyond_gap = Some(next);
    }
    if let Some(last) = plan.index.len().checked_sub(1) {
        let data = config
            .paths
            .data_dir
            .join(namespace)
            .join(layout::data_file(last as u32));
        let checksum = reads.check(&data, deadline)?;
        plan.last_data = Some((data, checksum));
    }
    Ok(plan)
}

/// Whether the backends hold a state zdb and zdbfs can start on (see the module doc).
fn judge(plans: &[Plan]) -> Result<(), String> {
    for plan in plans {
        if let Some(beyond) = &plan.beyond_gap {
            return Err(format!(
                "{}: {} is stored on the backends but an index file before it is not",
                plan.namespace,
                beyond.display()
            ));
        }
        if plan.descriptor.is_none() && !plan.index.is_empty() {
            return Err(format!(
                "{}: index files are stored on the backends but not its {NAMESPACE_FILE}",
                plan.namespace
            ));
        }
        if let Some((data, None)) = &plan.last_data {
            let index = &plan.index[plan.index.len() - 1].0;
            return Err(format!(
                "{}: {} is stored on the backends but its data file {} is not: no consistent \
                 restore point",
                plan.namespace,
                index.display(),
                data.display()
            ));
        }
    }
    let (with, without): (Vec<&Plan>, Vec<&Plan>) =
        plans.iter().partition(|plan| !plan.index.is_empty());
    match (with.first(), without.first()) {
        (Some(with), Some(without)) => Err(format!(
            "{} has index files on the backends but {} has none: no consistent restore point",
            with.namespace, without.namespace
        )),
        _ => Ok(()),
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

    fn sum(n: u8) -> Checksum {
        format!("{n:032x}").parse().unwrap()
    }

    fn plan(namespace: &'static str, index: usize, data_stored: bool) -> Plan {
        let dir = PathBuf::from("/i").join(namespace);
        Plan {
            namespace,
            beyond_gap: None,
            descriptor: Some((dir.join(NAMESPACE_FILE), sum(0))),
            index: (0..index)
                .map(|n| (dir.join(format!("i{n}")), sum(n as u8 + 1)))
                .collect(),
            last_data: index.checked_sub(1).map(|last| {
                (
                    PathBuf::from(format!("/d/{namespace}/d{last}")),
                    data_stored.then(|| sum(99)),
                )
            }),
        }
    }

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
    fn an_index_is_restored_only_with_its_data_and_both_namespaces_together() {
        let meta = "zdbfs-meta";
        let data = "zdbfs-data";
        assert_eq!(judge(&[plan(meta, 2, true), plan(data, 5, true)]), Ok(()));
        assert_eq!(judge(&[plan(meta, 0, false), plan(data, 0, false)]), Ok(()));
        let nothing = Plan {
            descriptor: None,
            ..plan(data, 0, false)
        };
        assert_eq!(judge(&[nothing.clone(), nothing.clone()]), Ok(()));
        // Descriptors alone hold nothing to restore: the restore starts empty.
        assert_eq!(judge(&[plan(meta, 0, false), nothing.clone()]), Ok(()));
        let headless = Plan {
            descriptor: None,
            ..plan(data, 2, true)
        };
        let headless = judge(&[plan(meta, 1, true), headless]).unwrap_err();
        assert!(headless.contains("but not its zdb-namespace"), "{headless}");
        let gap = Plan {
            beyond_gap: Some("/i/zdbfs-data/i3".into()),
            ..plan(data, 2, true)
        };
        let gap = judge(&[plan(meta, 1, true), gap]).unwrap_err();
        assert!(
            gap.contains("/i/zdbfs-data/i3 is stored on the backends but an index file before"),
            "{gap}"
        );

        let missing = judge(&[plan(meta, 1, false), plan(data, 5, true)]).unwrap_err();
        assert!(
            missing.contains("zdbfs-meta: /i/zdbfs-meta/i0 is stored")
                && missing.contains("/d/zdbfs-meta/d0 is not"),
            "{missing}"
        );
        let one_sided = judge(&[plan(meta, 3, true), plan(data, 0, false)]).unwrap_err();
        assert!(
            one_sided.contains("zdbfs-meta has index files on the backends but zdbfs-data"),
            "{one_sided}"
        );
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

    #[test]
    fn a_plan_retrieves_the_descriptor_the_index_files_and_the_last_data_file() {
        let files: Vec<String> = plan("zdbfs-data", 2, true)
            .files()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(
            files,
            [
                "/i/zdbfs-data/zdb-namespace",
                "/i/zdbfs-data/i0",
                "/i/zdbfs-data/i1",
                "/d/zdbfs-data/d1"
            ]
        );
    }
}
