//! Cache eviction: keep the data files of the evictable namespaces under
//! `max_zdb_data_dir_size` by deleting sealed data files whose remote copy is verified.
//!
//! Never the active data file, never a file whose content is not the verified one (its size,
//! mtime and inode must still match the record that says so), least recently used first: by
//! access time where the filesystem records it, else the oldest file number first. The size
//! counted is that of every data file (the active one included) of the evictable namespaces,
//! which with the default `["zdbfs-data"]` is the directory upstream's monitor measured.

use super::files::{Kind, LocalFile};
use super::reconcile::matches_stat;
use super::state::{FileRecord, State};
use std::collections::BinaryHeap;

/// What to delete to get under the limit.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Bytes used before evicting.
    pub used: u64,
    /// The files to delete, in order.
    pub delete: Vec<LocalFile>,
    /// Bytes still used after deleting them (above the limit when too little was verified).
    pub remaining: u64,
}

/// Whether a file counts toward the cache size.
pub fn in_scope(file: &LocalFile, namespaces: &[String]) -> bool {
    matches!(file.kind, Kind::Data(_)) && namespaces.contains(&file.namespace)
}

/// Picks the least recently used evictable files that free at least `need` bytes, keeping only
/// those in memory however many files it is offered.
pub struct Selector<'a> {
    state: &'a State,
    namespaces: &'a [String],
    by_atime: bool,
    need: u64,
    chosen: BinaryHeap<Candidate>,
    chosen_bytes: u64,
}

/// An evictable file and its place in the eviction order.
struct Candidate {
    order: (i64, u32, String),
    file: LocalFile,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order.cmp(&other.order)
    }
}

impl<'a> Selector<'a> {
    /// A selector for `need` bytes.
    pub fn new(state: &'a State, namespaces: &'a [String], by_atime: bool, need: u64) -> Self {
        Selector {
            state,
            namespaces,
            by_atime,
            need,
            chosen: BinaryHeap::new(),
            chosen_bytes: 0,
        }
    }

    /// Considers one file: sealed, in scope and verified as it is, or it is ignored.
    pub fn offer(&mut self, file: LocalFile) {
        if !in_scope(&file, self.namespaces) || file.active {
            return;
        }
        if !self
            .state
            .get(&file.key)
            .is_some_and(|record| verified_as_is(record, &file))
        {
            return;
        }
        let number = match file.kind {
            Kind::Data(n) | Kind::Index(n) => n,
            Kind::Descriptor => 0,
        };
        let order = if self.by_atime {
            (file.atime_ns, number, file.namespace.clone())
        } else {
            (0, number, file.namespace.clone())
        };
        self.chosen_bytes += file.size;
        self.chosen.push(Candidate { order, file });
        // Drop the most recently used while the others still free enough.
        while let Some(last) = self.chosen.peek() {
            if self.chosen_bytes - last.file.size < self.need {
                break;
            }
            self.chosen_bytes -= last.file.size;
            self.chosen.pop();
        }
    }

    /// The files to delete, least recently used first.
    pub fn finish(self) -> Vec<LocalFile> {
        self.chosen
            .into_sorted_vec()
            .into_iter()
            .map(|c| c.file)
            .collect()
    }
}

/// Chooses the files to evict from a list of files (pure: no file is touched).
pub fn plan(
    files: &[LocalFile],
    state: &State,
    namespaces: &[String],
    limit: u64,
    by_atime: bool,
) -> Plan {
    let used: u64 = files
        .iter()
        .filter(|f| in_scope(f, namespaces))
        .map(|f| f.size)
        .sum();
    if used <= limit {
        return Plan {
            used,
            delete: Vec::new(),
            remaining: used,
        };
    }
    let mut selector = Selector::new(state, namespaces, by_atime, used - limit);
    files.iter().cloned().for_each(|f| selector.offer(f));
    let delete = selector.finish();
    let remaining = used - delete.iter().map(|f| f.size).sum::<u64>();
    Plan {
        used,
        delete,
        remaining,
    }
}

/// The record says this very file (same stat) is the content verified remote.
pub fn verified_as_is(record: &FileRecord, file: &LocalFile) -> bool {
    record.verified() && record.local.is_some_and(|local| matches_stat(&local, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::state::LocalStamp;
    use crate::zstor::Checksum;

    fn file(ns: &str, n: u32, size: u64, atime_ns: i64, active: bool) -> LocalFile {
        LocalFile {
            key: format!("data/{ns}/d{n}"),
            path: format!("/d/{ns}/d{n}").into(),
            namespace: ns.into(),
            kind: Kind::Data(n),
            active,
            size,
            mtime_ns: 1,
            atime_ns,
            inode: n as u64,
        }
    }

    fn verify(state: &mut State, f: &LocalFile) {
        let local = LocalStamp {
            size: f.size,
            mtime_ns: f.mtime_ns,
            inode: f.inode,
            checksum: Checksum([f.inode as u8; 16]),
        };
        state.set(
            &f.key,
            FileRecord {
                local: Some(local),
                remote: Some(local.checksum),
                evicted: false,
                backend_set: 0,
            },
        );
    }

    #[test]
    fn only_sealed_verified_files_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        let files = vec![
            file("zdbfs-data", 0, 100, 50, false),
            file("zdbfs-data", 1, 100, 10, false),
            file("zdbfs-data", 2, 100, 40, false), // not verified
            file("zdbfs-data", 3, 100, 5, true),   // active
            file("zdbfs-meta", 0, 100, 1, false),  // not an evictable namespace
        ];
        for f in [&files[0], &files[1], &files[3], &files[4]] {
            verify(&mut state, f);
        }
        let ns = vec!["zdbfs-data".to_string()];
        let keys = |plan: &Plan| {
            plan.delete
                .iter()
                .map(|f| f.key.clone())
                .collect::<Vec<_>>()
        };

        // 400 bytes used in zdbfs-data; under the limit nothing goes.
        assert_eq!(plan(&files, &state, &ns, 400, false).delete, vec![]);
        // By file number: d0 first.
        let p = plan(&files, &state, &ns, 300, false);
        assert_eq!(
            (p.used, keys(&p), p.remaining),
            (400, vec!["data/zdbfs-data/d0".to_string()], 300)
        );
        // By access time: d1 was read longer ago.
        assert_eq!(
            keys(&plan(&files, &state, &ns, 300, true)),
            ["data/zdbfs-data/d1"]
        );
        // Far over the limit: still never d2 (unverified) or d3 (active).
        let p = plan(&files, &state, &ns, 0, false);
        assert_eq!(keys(&p), ["data/zdbfs-data/d0", "data/zdbfs-data/d1"]);
        assert_eq!(p.remaining, 200);

        // A file changed since it was verified is not evicted.
        let mut touched = files.clone();
        touched[0].mtime_ns = 2;
        assert_eq!(
            keys(&plan(&touched, &state, &ns, 300, false)),
            ["data/zdbfs-data/d1"]
        );
    }
}
