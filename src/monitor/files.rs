//! The zdb files the monitor looks after, and how they are named.
//!
//! A file is keyed by its place under the zdb roots: `index/<ns>/zdb-namespace`,
//! `index/<ns>/i<N>`, `data/<ns>/d<N>`. zdbfs's scratch namespace `zdbfs-temp` is never
//! tracked. In each namespace the data file and the index file with the highest number are
//! the active ones: zdb appends to them, so they are never evicted, never count as sealed and
//! are never uploaded from here (a copy taken while zdb appends can be torn; the hooks spool
//! them at a jump or a stop, when zdb waits).

use crate::layout::{file_number, DATA_PREFIX, INDEX_PREFIX, NAMESPACE_FILE, TEMP_NAMESPACE};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// The two zdb roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// zdb's index root.
    pub index: PathBuf,
    /// zdb's data root.
    pub data: PathBuf,
}

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `zdb-namespace`, the namespace descriptor (rewritten in place by zdb).
    Descriptor,
    /// `i<N>`, an index file (mutable: zdb flags older entries in place).
    Index(u32),
    /// `d<N>`, a data file (append-only; immutable once sealed).
    Data(u32),
}

impl Kind {
    /// Index files and descriptors change in place, so they are uploaded from a snapshot.
    pub fn mutable(self) -> bool {
        !matches!(self, Kind::Data(_))
    }
}

/// A file under the zdb roots, as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// `index/<ns>/<name>` or `data/<ns>/<name>`.
    pub key: String,
    /// The real path.
    pub path: PathBuf,
    /// The namespace.
    pub namespace: String,
    /// What it is.
    pub kind: Kind,
    /// The active data or index file of its namespace (never sealed, never evicted).
    pub active: bool,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Access time, nanoseconds since the epoch.
    pub atime_ns: i64,
    /// Inode number.
    pub inode: u64,
}

fn kind_of(area: &str, name: &str) -> Option<Kind> {
    match area {
        "index" if name == NAMESPACE_FILE => Some(Kind::Descriptor),
        "index" => file_number(name, INDEX_PREFIX).map(Kind::Index),
        "data" => file_number(name, DATA_PREFIX).map(Kind::Data),
        _ => None,
    }
}

impl Roots {
    /// The key of a real path, if it is a file zdb keeps under one of the roots (and not in
    /// `zdbfs-temp`). Paths with `..` or in sub-directories are refused.
    pub fn key_of(&self, path: &Path) -> Option<String> {
        if path.components().any(|c| c == Component::ParentDir) {
            return None;
        }
        let (area, relative) = match (
            path.strip_prefix(&self.index),
            path.strip_prefix(&self.data),
        ) {
            (Ok(relative), _) => ("index", relative),
            (_, Ok(relative)) => ("data", relative),
            _ => return None,
        };
        let parts: Vec<&str> = relative
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect::<Option<_>>()?;
        match parts.as_slice() {
            [namespace, name] if *namespace != TEMP_NAMESPACE && !namespace.starts_with('.') => {
                kind_of(area, name)?;
                Some(format!("{area}/{namespace}/{name}"))
            }
            _ => None,
        }
    }

    /// The real path of a key.
    pub fn path_of(&self, key: &str) -> PathBuf {
        match key.split_once('/') {
            Some(("index", rest)) => self.index.join(rest),
            Some((_, rest)) => self.data.join(rest),
            None => self.data.join(key),
        }
    }

    /// The namespace and kind of a key.
    pub fn parse_key(key: &str) -> Option<(&str, Kind)> {
        let mut parts = key.split('/');
        let (area, namespace, name) = (parts.next()?, parts.next()?, parts.next()?);
        Some((namespace, kind_of(area, name)?))
    }

    /// Every file under both roots, except `zdbfs-temp`'s. Missing roots are empty.
    pub fn scan(&self) -> std::io::Result<Vec<LocalFile>> {
        let mut files = Vec::new();
        self.scan_each(|file| files.push(file))?;
        Ok(files)
    }

    /// Calls `visit` for every file under both roots (except `zdbfs-temp`'s), one namespace
    /// directory at a time, so memory does not grow with the number of files.
    pub fn scan_each(&self, mut visit: impl FnMut(LocalFile)) -> std::io::Result<()> {
        for (area, root) in [("index", &self.index), ("data", &self.data)] {
            for namespace in list_dir(root)? {
                if namespace == TEMP_NAMESPACE || namespace.starts_with('.') {
                    continue;
                }
                let dir = root.join(&namespace);
                if !dir.is_dir() {
                    continue;
                }
                let names = list_dir(&dir)?;
                // The active file is the highest-numbered one (the index and the data file).
                let active = names
                    .iter()
                    .filter_map(|n| kind_of(area, n).filter(|k| *k != Kind::Descriptor))
                    .max();
                for name in names {
                    let Some(kind) = kind_of(area, &name) else {
                        continue;
                    };
                    let path = dir.join(&name);
                    let Ok(meta) = std::fs::symlink_metadata(&path) else {
                        continue;
                    };
                    if !meta.is_file() {
                        continue;
                    }
                    visit(LocalFile {
                        key: format!("{area}/{namespace}/{name}"),
                        path,
                        namespace: namespace.clone(),
                        kind,
                        active: Some(kind) == active,
                        size: meta.size(),
                        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                        atime_ns: meta.atime() * 1_000_000_000 + meta.atime_nsec(),
                        inode: meta.ino(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn list_dir(dir: &Path) -> std::io::Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Whether the filesystem holding `path` records access times (it is not mounted `noatime`).
pub fn records_atime(path: &Path) -> bool {
    let (Ok(canonical), Ok(mountinfo)) = (path.canonicalize(), crate::mountinfo::read()) else {
        return false;
    };
    crate::mountinfo::containing(&mountinfo, &canonical).is_some_and(|mount| !mount.noatime())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_paths() {
        let roots = Roots {
            index: "/z/index".into(),
            data: "/z/data".into(),
        };
        assert_eq!(
            roots.key_of(Path::new("/z/index/zdbfs-data/i3")).as_deref(),
            Some("index/zdbfs-data/i3")
        );
        assert_eq!(
            roots
                .key_of(Path::new("/z/index/zdbfs-meta/zdb-namespace"))
                .as_deref(),
            Some("index/zdbfs-meta/zdb-namespace")
        );
        assert_eq!(
            roots.key_of(Path::new("/z/data/zdbfs-data/d0")).as_deref(),
            Some("data/zdbfs-data/d0")
        );
        for bad in [
            "/z/data/zdbfs-temp/d0",
            "/z/data/zdbfs-data/x",
            "/z/data/zdbfs-data/i1",
            "/etc/passwd",
            "/z/data/a/b/d1",
            "/z/data/../index/ns/i1",
        ] {
            assert_eq!(roots.key_of(Path::new(bad)), None, "{bad}");
        }
        assert_eq!(roots.path_of("index/ns/i3"), Path::new("/z/index/ns/i3"));
        assert_eq!(roots.path_of("data/ns/d3"), Path::new("/z/data/ns/d3"));
        assert_eq!(
            Roots::parse_key("data/ns/d12"),
            Some(("ns", Kind::Data(12)))
        );
    }

    #[test]
    fn scan_marks_the_active_data_and_index_files() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots {
            index: dir.path().join("index"),
            data: dir.path().join("data"),
        };
        for (path, content) in [
            ("index/ns/zdb-namespace", "x"),
            ("index/ns/i0", "x"),
            ("index/ns/i10", "x"),
            ("data/ns/d0", "x"),
            ("data/ns/d9", "x"),
            ("data/ns/d10", "x"),
            ("data/ns/notes", "x"),
            ("data/zdbfs-temp/d0", "x"),
        ] {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        let mut files = roots.scan().unwrap();
        files.sort_by(|a, b| a.key.cmp(&b.key));
        let summary: Vec<(&str, bool)> = files.iter().map(|f| (f.key.as_str(), f.active)).collect();
        assert_eq!(
            summary,
            [
                ("data/ns/d0", false),
                ("data/ns/d10", true),
                ("data/ns/d9", false),
                ("index/ns/i0", false),
                ("index/ns/i10", true),
                ("index/ns/zdb-namespace", false),
            ]
        );
        assert!(Roots {
            index: "/absent/i".into(),
            data: "/absent/d".into()
        }
        .scan()
        .unwrap()
        .is_empty());
    }
}
