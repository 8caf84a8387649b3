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
    let target = dir.join(name);
    match std::fs::rename(path, &target) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
            crate::spool::copy_file(path, &target)?;
            std::fs::File::open(&target)?.sync_all()?;
            std::fs::remove_file(path)?;
        }
        result => result?,
    }
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(target)
}

/// How many damaged copies wait for an operator (0 when the directory does not exist).
pub fn count(state_dir: &Path) -> u64 {
    std::fs::read_dir(dir(state_dir)).map_or(0, |entries| entries.count() as u64)
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
