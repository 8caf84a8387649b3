//! Files written whole or not at all: a temporary name next to the target, rename, and as much
//! fsync as the caller's [`Durability`] asks for. An error never leaves a partial file at the
//! target, and readers see the old content or the new one, never a mix.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How far [`write_atomic`] (or [`TempFile::persist`]) takes a write before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Renamed into place without fsync: readers see a whole file, but after a power cut the
    /// file may hold the old content or nothing. For status files rewritten every round (the
    /// health report).
    Visible,
    /// fsync of the file, rename, fsync of the directory: once it returns, the new content
    /// survives a power cut. For state, configuration and spool jobs.
    Durable,
}

/// A file being written under a temporary name next to its final path. It is removed when
/// dropped unless [`TempFile::persist`] renamed it into place.
pub struct TempFile {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
}

impl TempFile {
    /// Creates `.tmp-<name>-<pid>` next to `target` with exactly `mode`.
    pub fn create(target: &Path, mode: u32) -> std::io::Result<TempFile> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = parent(target).join(format!(".tmp-{name}-{}", std::process::id()));
        // A fresh file, created with `mode`: never one left (or planted) with a wider mode.
        match std::fs::remove_file(&temp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // From here on, an error drops (and so removes) the temporary file.
        let mut created = TempFile {
            file: Some(file),
            temp,
            target: target.to_path_buf(),
        };
        // The umask may have narrowed the mode; set it exactly.
        created
            .file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        Ok(created)
    }

    /// The open file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until persisted")
    }

    /// Renames the file onto the target, with the fsyncs `durability` asks for.
    pub fn persist(self, durability: Durability) -> std::io::Result<()> {
        let target = self.target.clone();
        self.persist_to(&target, durability)
    }

    /// Renames the file onto `target` (in the same directory), with the fsyncs `durability`
    /// asks for.
    pub fn persist_to(mut self, target: &Path, durability: Durability) -> std::io::Result<()> {
        let file = self.file.take().expect("open until persisted");
        if durability == Durability::Durable {
            file.sync_all()?;
        }
        drop(file);
        std::fs::rename(&self.temp, target)?;
        self.temp = PathBuf::new();
        match durability {
            Durability::Durable => sync_dir(parent(target)),
            Durability::Visible => Ok(()),
        }
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

/// Writes `bytes` to `target` atomically with `mode`, as durably as `durability` says.
pub fn write_atomic(
    target: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> std::io::Result<()> {
    let mut temp = TempFile::create(target, mode)?;
    temp.file().write_all(bytes)?;
    temp.persist(durability)
}

/// Writes `value` as pretty JSON to `target` atomically (mode 0644), creating its directory:
/// the status files under `/run/qsfs` that other programs read while they are rewritten.
pub fn write_json(
    target: &Path,
    value: &impl serde::Serialize,
    durability: Durability,
) -> std::io::Result<()> {
    std::fs::create_dir_all(parent(target))?;
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(target, &bytes, 0o644, durability)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_whole_files_with_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/status.json");
        write_json(&target, &serde_json::json!({"a": 1}), Durability::Visible).unwrap();
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
        assert_eq!(back["a"], 1);
        write_atomic(&target, b"secret", 0o600, Durability::Durable).unwrap();
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
