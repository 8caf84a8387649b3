//! `namespaces-init` on a fresh VM: restore zdbfs's namespaces from the backends (qss#38).
//!
//! When the index root holds neither `zdbfs-meta` nor `zdbfs-data`, each of them that the
//! backends hold is brought back: `zdb-namespace`, the index files `i0, i1, …` until one is not
//! stored, and the data file of the last index (older data files come back on demand through
//! `missing-data`). Every file is checked against its stored checksum.
//!
//! A restore that fails or is interrupted must not let zdb start with empty namespaces: zdbfs
//! would then create new ones and their uploads would overwrite the old instance's files. So a
//! marker file in the state directory is written before the restore and removed only when it
//! succeeds; while it exists, the `ready` hook refuses to start zdb (systemd restarts the unit
//! and the restore is tried again), and the next `namespaces-init` first removes the partial
//! namespaces.

use super::{Handled, HookError, RESTORE_FAILED_MARKER};
use crate::config::appliance::HookConfig;
use crate::layout::{self, highest_file_number, INDEX_PREFIX, NAMESPACE_FILE, RESTORED_NAMESPACES};
use crate::zstor::{Checksum, Zstor};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub(super) fn run(config: &HookConfig, zstor: &Zstor) -> Result<Handled, HookError> {
    let paths = &config.paths;
    let marker = paths.state_dir.join(RESTORE_FAILED_MARKER);
    if marker.exists() {
        tracing::warn!("a previous restore did not finish: removing its partial namespaces");
        remove_namespaces(config)?;
    }
    if RESTORED_NAMESPACES
        .iter()
        .any(|ns| paths.index_dir.join(ns).exists())
    {
        return Ok(Handled {
            note: Some("the VM already has data, nothing to restore"),
            ..Handled::default()
        });
    }
    write_marker(&marker, "the restore was interrupted")?;
    let deadline = Instant::now() + config.hook.restore_timeout;
    let mut restored = Vec::new();
    let result = RESTORED_NAMESPACES
        .iter()
        .try_for_each(|ns| restore_namespace(config, zstor, ns, deadline, &mut restored));
    match result {
        Ok(()) => {
            std::fs::remove_file(&marker)
                .map_err(super::io(format!("cannot remove {}", marker.display())))?;
            let note = if restored.is_empty() {
                Some("the backends hold no namespace, starting empty")
            } else {
                None
            };
            Ok(Handled {
                files: restored,
                note,
                ..Handled::default()
            })
        }
        Err(e) => {
            remove_namespaces(config)?;
            write_marker(&marker, &e.to_string())?;
            Err(e)
        }
    }
}

fn restore_namespace(
    config: &HookConfig,
    zstor: &Zstor,
    namespace: &str,
    deadline: Instant,
    restored: &mut Vec<PathBuf>,
) -> Result<(), HookError> {
    let index_dir = config.paths.index_dir.join(namespace);
    let data_dir = config.paths.data_dir.join(namespace);
    // zstor resolves a missing file through its directory, so the directories come first.
    for dir in [&index_dir, &data_dir] {
        std::fs::create_dir_all(dir)
            .map_err(super::io(format!("cannot create {}", dir.display())))?;
    }
    let namespace_file = index_dir.join(NAMESPACE_FILE);
    let Some(checksum) = check(zstor, &namespace_file, deadline)? else {
        for dir in [&index_dir, &data_dir] {
            let _ = std::fs::remove_dir(dir);
        }
        return Ok(());
    };
    super::retrieve_verified(zstor, &namespace_file, checksum, deadline)?;
    restored.push(namespace_file);
    let mut next = 0;
    loop {
        let index = index_dir.join(layout::index_file(next));
        let Some(checksum) = check(zstor, &index, deadline)? else {
            break;
        };
        super::retrieve_verified(zstor, &index, checksum, deadline)?;
        restored.push(index);
        next += 1;
    }
    if let Some(last) = highest_file_number(&index_dir, INDEX_PREFIX) {
        let data = data_dir.join(layout::data_file(last));
        match check(zstor, &data, deadline)? {
            Some(checksum) => {
                super::retrieve_verified(zstor, &data, checksum, deadline)?;
                restored.push(data);
            }
            None => tracing::warn!(
                "{} is not stored on the backends: its data is lost",
                data.display()
            ),
        }
    }
    Ok(())
}

fn check(zstor: &Zstor, path: &Path, deadline: Instant) -> Result<Option<Checksum>, HookError> {
    Ok(zstor
        .with_timeout(super::remaining(deadline)?)
        .check(path)?)
}

fn write_marker(marker: &Path, reason: &str) -> Result<(), HookError> {
    if let Some(dir) = marker.parent() {
        std::fs::create_dir_all(dir)
            .map_err(super::io(format!("cannot create {}", dir.display())))?;
    }
    std::fs::write(marker, format!("{reason}\n"))
        .map_err(super::io(format!("cannot write {}", marker.display())))
}

fn remove_namespaces(config: &HookConfig) -> Result<(), HookError> {
    for ns in RESTORED_NAMESPACES {
        for dir in [
            config.paths.index_dir.join(ns),
            config.paths.data_dir.join(ns),
        ] {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(HookError::Io {
                        context: format!("cannot remove {}", dir.display()),
                        source: e,
                    })
                }
                _ => {}
            }
        }
    }
    Ok(())
}
