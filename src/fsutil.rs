//! Files written whole or not at all: a temporary name next to the target, fsync, rename,
//! fsync of the directory. A crash or an error never leaves a partial file at the target.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file being written under a temporary name next to its final path. It is removed when
/// dropped unless [`TempFile::persist`] renamed it into place.
pub struct TempFile {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
}

impl TempFile {
    /// Creates `.<name>.tmp-<pid>` next to `target` with exactly `mode`.
    pub fn create(target: &Path, mode: u32) -> std::io::Result<TempFile> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = parent(target).join(format!(".{name}.tmp-{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        Ok(TempFile {
            file: Some(file),
            temp,
            target: target.to_path_buf(),
        })
    }

    /// The open file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until persisted")
    }

    /// fsync, rename onto the target, fsync the directory.
    pub fn persist(self) -> std::io::Result<()> {
        let target = self.target.clone();
        self.persist_to(&target)
    }

    /// fsync, rename onto `target` (in the same directory), fsync the directory.
    pub fn persist_to(mut self, target: &Path) -> std::io::Result<()> {
        let file = self.file.take().expect("open until persisted");
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.temp, target)?;
        self.temp = PathBuf::new();
        sync_dir(parent(target))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// The directory of `path` (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs a directory, so that the names created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `target` atomically with `mode`.
pub fn write_atomic(target: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut temp = TempFile::create(target, mode)?;
    temp.file().write_all(bytes)?;
    temp.persist()
}

/// Writes `value` as JSON to `target` atomically (mode 0644), creating its directory: the
/// status files under `/run/qsfs` that other programs read while they are rewritten.
pub fn write_json(target: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    std::fs::create_dir_all(parent(target))?;
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(target, &bytes, 0o644)
}

/// Reads a file written by [`write_json`].
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<T> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_whole_files_with_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/status.json");
        write_json(&target, &serde_json::json!({"a": 1})).unwrap();
        let back: serde_json::Value = read_json(&target).unwrap();
        assert_eq!(back["a"], 1);
        write_atomic(&target, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"secret");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["status.json"], "no temporary file stays");

        // A temporary file that is not persisted leaves nothing behind.
        let temp = TempFile::create(&target, 0o644).unwrap();
        drop(temp);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }
}
