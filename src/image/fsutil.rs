//! File helpers: every output is written to a temporary name, fsynced and renamed into place,
//! so a crash or an error never leaves a partial file behind.

use super::Error;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file being written under a temporary name next to its final path. It is removed when
/// dropped unless [`TempFile::persist`] renamed it into place.
pub struct TempFile {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
}

impl TempFile {
    /// Creates `.<name>.tmp-<pid>` next to `target` with `mode`.
    pub fn create(target: &Path, mode: u32) -> Result<TempFile, Error> {
        let dir = parent(target);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)
            .map_err(|e| Error::io(&temp, e))?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(&temp, e))?;
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
    pub fn persist(self) -> Result<(), Error> {
        let target = self.target.clone();
        self.persist_to(&target)
    }

    /// fsync, rename onto `target` (in the same directory), fsync the directory.
    pub fn persist_to(mut self, target: &Path) -> Result<(), Error> {
        let file = self.file.take().expect("open until persisted");
        file.sync_all().map_err(|e| Error::io(&self.temp, e))?;
        drop(file);
        std::fs::rename(&self.temp, target).map_err(|e| Error::io(target, e))?;
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

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs a directory so that a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `target` atomically with `mode`.
pub fn write_atomic(target: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let mut temp = TempFile::create(target, mode)?;
    temp.file()
        .write_all(bytes)
        .map_err(|e| Error::io(target, e))?;
    temp.persist()
}

/// A private (0700) temporary directory, removed with its content when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<parent>/.<prefix>-<pid>-<nanos>`.
    pub fn new(parent: &Path, prefix: &str) -> Result<TempDir, Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = parent.join(format!(".{prefix}-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(TempDir(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The sha256 of everything `reader` yields, and its length.
pub fn sha256_reader(mut reader: impl Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((super::hex(&hasher.finalize()), size))
}

/// The sha256 and size of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<(String, u64), Error> {
    File::open(path)
        .and_then(sha256_reader)
        .map_err(|e| Error::io(path, e))
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The hex sha256 of everything read so far.
    pub fn finish(self) -> String {
        super::hex(&self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// `Ok` if `path` is a regular file with an execute bit, otherwise why not.
pub fn check_executable(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("does not exist".into()),
        Err(e) => Err(format!("cannot be read: {e}")),
        Ok(meta) if !meta.is_file() => Err("is not a regular file".into()),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Err(format!(
            "is not executable (mode {:04o}); chmod +x it",
            meta.permissions().mode() & 0o7777
        )),
        Ok(_) => File::open(path)
            .map(drop)
            .map_err(|e| format!("cannot be read: {e}")),
    }
}
