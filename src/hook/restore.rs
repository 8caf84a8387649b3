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

use super::{Handled, HookError};
use crate::config::appliance::{HookConfig, Paths};
use crate::layout::{self, NAMESPACE_FILE, RESTORED_NAMESPACES};
use crate::logging::message_id;
use crate::restore_marks::{Marks, Process};
use crate::zstor::{Checksum, Zstor};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs `namespaces-init` for `zdb` and records its outcome.
pub(super) fn run(
    config: &HookConfig,
    zstor: &Zstor,
    zdb: Option<Process>,
) -> Result<Handled, HookError> {
    let marks = Marks::new(&config.paths.state_dir);
    let zdb = zdb.ok_or_else(|| HookError::Restore("cannot identify the zdb process".into()))?;
    let mark_io = |e: std::io::Error| HookError::Io {
        context: format!(
            "cannot record the outcome in {}",
            config.paths.state_dir.display()
        ),
        source: e,
    };
    match init(config, zstor, &marks) {
        Ok(handled) => {
            marks.record_done(&zdb).map_err(mark_io)?;
            Ok(handled)
        }
        Err(e) => {
            tracing::error!(
                message_id = message_id::RESTORE_REFUSED,
                qsfs_reason = %e,
                "zdb will not start: {e}"
            );
            marks.record_failure(&e.to_string()).map_err(mark_io)?;
            Err(e)
        }
    }
}

fn init(config: &HookConfig, zstor: &Zstor, marks: &Marks) -> Result<Handled, HookError> {
    let dirs = namespace_dirs(&config.paths);
    if marks.restoring() {
        tracing::warn!("a previous restore did not finish: removing the namespaces it restored");
        remove_dirs(&dirs)?;
        marks.end_restore().map_err(mark_error(marks))?;
    }
    match local_state(&dirs) {
        Local::Present => {
            return Ok(Handled {
                note: Some("the VM already has data, nothing to restore"),
                ..Handled::default()
            })
        }
        Local::Partial { present, absent } => {
            return Err(HookError::Restore(format!(
                "only part of zdbfs's namespaces is on this VM ({} present; {} absent): \
                 refusing to restore over it or to start zdb on it. To restore from the \
                 backends, move every one of them aside",
                join(&present),
                join(&absent)
            )))
        }
        Local::Absent => {}
    }
    marks.begin_restore().map_err(mark_error(marks))?;
    let result = restore(config, zstor, &dirs);
    if result.is_err() {
        remove_dirs(&dirs)?;
    }
    marks.end_restore().map_err(mark_error(marks))?;
    result
}

fn restore(config: &HookConfig, zstor: &Zstor, dirs: &[PathBuf]) -> Result<Handled, HookError> {
    // zstor resolves a missing file through its directory, so the directories come first.
    for dir in dirs {
        std::fs::create_dir_all(dir)
            .map_err(super::io(format!("cannot create {}", dir.display())))?;
    }
    let deadline = Instant::now() + config.hook.restore_timeout;
    let mut plans = Vec::new();
    for namespace in RESTORED_NAMESPACES {
        plans.push(survey(config, zstor, namespace, deadline)?);
    }
    judge(&plans).map_err(HookError::Restore)?;
    let mut restored = Vec::new();
    for plan in &plans {
        for (path, checksum) in plan.files() {
            super::retrieve_verified(zstor, path, *checksum, deadline)?;
            restored.push(path.clone());
        }
    }
    if restored.is_empty() {
        for dir in dirs {
            let _ = std::fs::remove_dir(dir);
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

fn local_state(dirs: &[PathBuf]) -> Local {
    let (present, absent): (Vec<PathBuf>, Vec<PathBuf>) =
        dirs.iter().cloned().partition(|dir| dir.exists());
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
    zstor: &Zstor,
    namespace: &'static str,
    deadline: Instant,
) -> Result<Plan, HookError> {
    let index_dir = config.paths.index_dir.join(namespace);
    let mut plan = Plan {
        namespace,
        descriptor: None,
        index: Vec::new(),
        last_data: None,
    };
    let descriptor = index_dir.join(NAMESPACE_FILE);
    let Some(checksum) = check(zstor, &descriptor, deadline)? else {
        return Ok(plan);
    };
    plan.descriptor = Some((descriptor, checksum));
    loop {
        let index = index_dir.join(layout::index_file(plan.index.len() as u32));
        let Some(checksum) = check(zstor, &index, deadline)? else {
            break;
        };
        plan.index.push((index, checksum));
    }
    if let Some(last) = plan.index.len().checked_sub(1) {
        let data = config
            .paths
            .data_dir
            .join(namespace)
            .join(layout::data_file(last as u32));
        let checksum = check(zstor, &data, deadline)?;
        plan.last_data = Some((data, checksum));
    }
    Ok(plan)
}

/// Whether the backends hold a state zdb and zdbfs can start on (see the module doc).
fn judge(plans: &[Plan]) -> Result<(), String> {
    for plan in plans {
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
    if let (Some(with), Some(without)) = (with.first(), without.first()) {
        return Err(format!(
            "{} has index files on the backends but {} has none: no consistent restore point",
            with.namespace, without.namespace
        ));
    }
    Ok(())
}

fn check(zstor: &Zstor, path: &Path, deadline: Instant) -> Result<Option<Checksum>, HookError> {
    Ok(zstor
        .with_timeout(super::remaining(deadline)?)
        .check(path)?)
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

/// Removes directories the restore created (and everything in them).
fn remove_dirs(dirs: &[PathBuf]) -> Result<(), HookError> {
    for dir in dirs {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(HookError::Io {
                    context: format!("cannot remove {}", dir.display()),
                    source: e,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
        std::fs::create_dir(&dirs[1]).unwrap();
        assert_eq!(
            local_state(&dirs),
            Local::Partial {
                present: vec![dirs[1].clone()],
                absent: vec![dirs[0].clone(), dirs[2].clone(), dirs[3].clone()]
            }
        );
        for d in [&dirs[0], &dirs[2], &dirs[3]] {
            std::fs::create_dir(d).unwrap();
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
        assert_eq!(judge(&[plan(meta, 0, false), nothing]), Ok(()));

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
