//! The lock file (`image/manifest.lock`, like `Cargo.lock`): the sha256 of every downloaded
//! component whose manifest entry has no `sha256`.
//!
//! The first successful download records the hash; every later build, online or offline,
//! verifies the file against it, so an upstream release that changes under the same URL is
//! a hard error rather than a silently different image. An entry applies to one component
//! name *and* URL: changing a component's URL in the manifest ignores the old entry, and the
//! next download records the new one. The file is rewritten atomically, sorted by name.

use super::fsutil::write_atomic;
use super::Error;
use crate::config::Source;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The lock file format version.
const VERSION: u32 = 1;

const HEADER: &str = "\
# qsfs-image lock file. Generated: the sha256 of each downloaded component whose entry in the
# manifest has no `sha256`, recorded by its first successful download. Every later build
# verifies the download (or the cached file) against it. Commit this file. To accept a new
# upstream file on purpose, delete its entry here (or pin `sha256` in the manifest).
";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockFileText {
    version: u32,
    #[serde(default)]
    component: Vec<Locked>,
}

/// One recorded download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locked {
    /// The component.
    pub name: String,
    /// Its version when the hash was recorded (informational).
    pub version: String,
    /// The URL it was downloaded from.
    pub url: String,
    /// The sha256 of the downloaded file.
    pub sha256: String,
}

/// The lock file, loaded.
#[derive(Debug, Clone)]
pub struct LockFile {
    path: PathBuf,
    entries: Vec<Locked>,
}

impl LockFile {
    /// Reads the lock file at `path`; a missing file is an empty lock.
    pub fn load(path: &Path) -> Result<LockFile, Error> {
        if !path.exists() {
            return Ok(LockFile {
                path: path.to_path_buf(),
                entries: Vec::new(),
            });
        }
        let text = crate::config::read(path)?;
        let source = Source::new(path, &text);
        let file: LockFileText = source.parse()?;
        if file.version != VERSION {
            return Err(source
                .invalid(
                    "version",
                    format!("unsupported lock file version (this qsfs-image writes {VERSION})"),
                )
                .into());
        }
        for (i, entry) in file.component.iter().enumerate() {
            if !super::is_sha256(&entry.sha256) {
                return Err(source
                    .invalid(
                        &format!("component[{i}].sha256"),
                        "not a sha256 (64 hex digits)",
                    )
                    .into());
            }
        }
        Ok(LockFile {
            path: path.to_path_buf(),
            entries: file.component,
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded sha256 for component `name` downloaded from `url`.
    pub fn get(&self, name: &str, url: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.name == name && e.url == url)
            .map(|e| e.sha256.as_str())
    }

    /// Records (or replaces) the entry for `entry.name` and writes the file atomically.
    pub fn record(&mut self, entry: Locked) -> Result<(), Error> {
        self.entries.retain(|e| e.name != entry.name);
        self.entries.push(entry);
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
        self.write()
    }

    fn write(&self) -> Result<(), Error> {
        let body = toml::to_string(&LockFileText {
            version: VERSION,
            component: self.entries.clone(),
        })
        .map_err(|e| Error::io(&self.path, std::io::Error::other(e)))?;
        write_atomic(&self.path, format!("{HEADER}\n{body}").as_bytes(), 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn records_and_reads_back_by_name_and_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.lock");
        let mut lock = LockFile::load(&path).unwrap();
        assert_eq!(lock.get("zdb", "https://a"), None);
        for name in ["zstor", "zdb"] {
            lock.record(Locked {
                name: name.into(),
                version: "1".into(),
                url: format!("https://{name}"),
                sha256: SHA.into(),
            })
            .unwrap();
        }
        let lock = LockFile::load(&path).unwrap();
        assert_eq!(lock.get("zdb", "https://zdb"), Some(SHA));
        assert_eq!(lock.get("zdb", "https://other"), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# qsfs-image lock file."), "{text}");
        assert!(
            text.find("zdb").unwrap() < text.find("zstor").unwrap(),
            "{text}"
        );
    }

    #[test]
    fn the_shipped_lock_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("image/manifest.lock");
        LockFile::load(&path).unwrap();
    }

    #[test]
    fn a_bad_entry_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.lock");
        std::fs::write(
            &path,
            "version = 1\n[[component]]\nname = 'zdb'\nversion = '1'\nurl = 'https://x'\nsha256 = 'nope'\n",
        )
        .unwrap();
        let err = LockFile::load(&path).unwrap_err();
        assert!(
            err.to_string().contains("key `component[0].sha256`"),
            "{err}"
        );
        assert_eq!(err.exit_code(), crate::image::exit::CONFIG);
    }
}
