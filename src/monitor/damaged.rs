//! Damaged local copies: a sealed data file that differs from its verified remote copy (see
//! [`super::replace`]) is moved to `<state_dir>/damaged/`, never deleted and never stored.
//! Its record becomes "evicted", so zdb's next read of it finds it missing and `missing-data`
//! brings the good copy back while zdb waits (a retrieve by the monitor would write the file
//! in place while zdb may read it). The copies stay there, and health stays degraded, until an
//! operator has looked at them and removed them.

use std::path::{Path, PathBuf};

/// Where damaged copies are kept.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("damaged")
}

/// Moves `path` (keyed `key`) into [`dir`] under a name that says what it was and when;
/// returns where it went. Across filesystems it is copied, synced, then removed.
pub fn set_aside(state_dir: &Path, key: &str, path: &Path) -> std::io::Result<PathBuf> {
    let dir = dir(state_dir);
    std::fs::create_dir_all(&dir)?;
    let name = format!("{}.{}", key.replace('/', "-"), crate::clock::now_unix_ms());
    let target = dir.join(&name);
    match std::fs::rename(path, &target) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
            // Copied under a temporary name, so a copy cut short (ENOSPC) is never counted.
            let partial = dir.join(format!(".partial-{name}"));
            let copied = crate::spool::copy_file(path, &partial)
                .and_then(|()| std::fs::File::open(&partial)?.sync_all())
                .and_then(|()| std::fs::rename(&partial, &target));
            if let Err(e) = copied {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
            std::fs::remove_file(path)?;
        }
        result => result?,
    }
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(target)
}

/// How many damaged copies wait for an operator (0 when the directory does not exist; a
/// directory that cannot be read counts as one, so it is not taken for none).
pub fn count(state_dir: &Path) -> u64 {
    match std::fs::read_dir(dir(state_dir)) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with(".partial-"))
            .count() as u64,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_aside_moves_and_counts() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("d0");
        std::fs::write(&file, "damaged").unwrap();
        assert_eq!(count(root.path()), 0);
        let target = set_aside(root.path(), "data/zdbfs-data/d0", &file).unwrap();
        assert!(!file.exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"damaged");
        assert!(target
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("data-zdbfs-data-d0."));
        assert_eq!(count(root.path()), 1);
    }
}
