//! File helpers of the image builder: hashing while reading, executable checks, scratch
//! directories. Outputs are written with [`crate::fsutil`].

use super::Error;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// [`crate::fsutil::write_atomic`], durably (every output of the image builder is state or
/// configuration), with the image builder's error naming `target`.
pub fn write_atomic(target: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    crate::fsutil::write_atomic(target, bytes, mode, crate::fsutil::Durability::Durable)
        .map_err(|e| Error::io(target, e))
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
