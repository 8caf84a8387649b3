//! Cache eviction: keep the data files of the evictable namespaces under
//! `max_zdb_data_dir_size` by deleting sealed data files whose remote copy is verified.
//!
//! Never the active data file, never a file whose content is not the verified one (its size,
//! mtime and inode must still match the record that says so), never one whose remote copy was
//! written for another backend set than the current one, least recently used first: by
//! access time where the filesystem records it, else by modification time (zdb seals files in
//! number order; a file `missing-data` brought back was written when it came back). The size
//! counted is that of every data file (the active one included) of the evictable namespaces,
//! which with the default `["zdbfs-data"]` is the directory upstream's monitor measured.
//!
//! [`run`] never holds the state lock across file I/O or a sync of the database: the files are
//! chosen with one short lock per record, then deleted and recorded in batches of [`BATCH`].
//! Each batch is first marked `evicting` (durably), then deleted, then recorded `evicted` in
//! one transaction, so a file is never recorded evicted before it is gone, and one deleted by
//! a run that stopped before recording it is recognised as evicted by the next
//! reconciliation.
//!
//! No thrash: a data file that zdb's `missing-data` brought back is read, so it stays local for
//! at least [`Scope::keep_retrieved`] after it came back, and it is never evicted as the only
//! candidate (each read would block zdb for another retrieve, and it would free room for
//! nothing else).
//!
//! No eviction at all runs while [`held_back`] gives a reason: a backend that is not known to
//! answer, or a rebuild onto a changed backend set that has not finished. That is exactly when
//! the local copy may be the best one left.

use super::backends::Entry;
use super::files::{records_atime, Kind, LocalFile, Roots};
use super::reconcile::matches_stat;
use super::state::{lock, FileRecord, State};
use crate::logging::message_id;
use crate::monitor::status::BackendState;
use std::collections::BinaryHeap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most files deleted and recorded per state transaction: small enough that writing one
/// (without its sync, which runs unlocked) holds the state lock a few milliseconds.
const BATCH: usize = 64;

/// What an eviction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Files deleted and recorded as evicted.
    pub evicted: u64,
    /// Bytes still used (above the limit when too little was verified).
    pub used: u64,
}

/// The two file operations eviction does on the files it chose.
pub trait EvictFs {
    /// Size, mtime (nanoseconds) and inode of a file.
    fn stat(&self, path: &Path) -> std::io::Result<(u64, i64, u64)>;
    /// Deletes a file.
    fn remove(&self, path: &Path) -> std::io::Result<()>;
}

/// The real filesystem.
pub struct RealFs;

impl EvictFs for RealFs {
    fn stat(&self, path: &Path) -> std::io::Result<(u64, i64, u64)> {
        super::upload::stamp_of(path)
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// Why no file may be evicted now, if there is a reason: a backend neither healthy nor merely
/// low on space (unreachable, or not checked yet), or an unfinished rebuild.
pub fn held_back(backends: &[Entry], rebuild_unfinished: bool) -> Option<String> {
    if rebuild_unfinished {
        return Some("a rebuild onto the changed backend set has not finished".to_string());
    }
    let not_answering: Vec<String> = backends
        .iter()
        .filter(|e| {
            !matches!(
                e.health.state,
                BackendState::Healthy | BackendState::LowSpace
            )
        })
        .map(|e| format!("{} backend {}", e.kind, e.backend.label()))
        .collect();
    (!not_answering.is_empty()).then(|| {
        format!(
            "not every backend is known to answer ({})",
            not_answering.join(", ")
        )
    })
}

/// What one eviction may do.
pub struct Scope<'a> {
    /// The namespaces whose data files count and may be evicted.
    pub namespaces: &'a [String],
    /// The most bytes they may use.
    pub limit: u64,
    /// Only files whose remote copy is on this backend set are evicted.
    pub backend_set: u64,
    /// How long a file brought back by `missing-data` stays local at least.
    pub keep_retrieved: Duration,
    /// Checked before each batch: cleared when a backend stops answering or the backend set
    /// changes while the eviction runs, it stops there.
    pub allowed: &'a AtomicBool,
}

/// Evicts until the evictable namespaces use at most `scope.limit` bytes.
pub fn run(
    roots: &Roots,
    state: &Mutex<State>,
    scope: &Scope,
    fs: &(impl EvictFs + ?Sized),
) -> Result<Outcome, String> {
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let rules = Rules {
        backend_set: scope.backend_set,
        by_atime: records_atime(&roots.data),
        retrieved_kept_after_ns: now_ns.saturating_sub(scope.keep_retrieved.as_nanos()) as i64,
    };
    let (mut used, delete) = choose(
        |visit| roots.scan_each(visit),
        |key| lock(state).get(key).copied(),
        scope.namespaces,
        scope.limit,
        &rules,
    )
    .map_err(|e| e.to_string())?;
    let limit = scope.limit;
    let mut evicted = 0;
    for batch in delete.chunks(BATCH) {
        if !scope.allowed.load(Ordering::SeqCst) {
            tracing::warn!(
                "eviction stopped after {evicted} files: a backend stopped answering or the \
                 backend set changed"
            );
            break;
        }
        for file in evict_batch(batch, state, scope.backend_set, fs)? {
            used -= file.size;
            evicted += 1;
        }
    }
    if used > limit {
        tracing::warn!(
            "the cache uses {used} bytes, over its limit of {limit}: the other data files are \
             not verified remote yet, active, or brought back by a read recently"
        );
    }
    Ok(Outcome { evicted, used })
}

/// The bytes used and the files to delete to get under `limit`, least recently used first.
/// Two passes of `scan` (the size, then the choice) keep memory flat however many files there
/// are; `record` is asked only for the files that could be chosen.
fn choose(
    mut scan: impl FnMut(&mut dyn FnMut(LocalFile)) -> std::io::Result<()>,
    record: impl Fn(&str) -> Option<FileRecord>,
    namespaces: &[String],
    limit: u64,
    rules: &Rules,
) -> std::io::Result<(u64, Vec<LocalFile>)> {
    let mut used = 0;
    scan(&mut |file| {
        if in_scope(&file, namespaces) {
            used += file.size;
        }
    })?;
    if used <= limit {
        return Ok((used, Vec::new()));
    }
    let mut selection = Selection::new(namespaces, rules, used - limit);
    scan(&mut |file| {
        if selection.eligible(&file) {
            let record = record(&file.key);
            selection.offer(file, record.as_ref());
        }
    })?;
    Ok((used, selection.finish()))
}

/// Marks, deletes and records one batch; returns the files deleted.
fn evict_batch<'a>(
    batch: &'a [LocalFile],
    state: &Mutex<State>,
    backend_set: u64,
    fs: &(impl EvictFs + ?Sized),
) -> Result<Vec<&'a LocalFile>, String> {
    let marked = {
        let mut state = lock(state);
        for file in batch {
            if let Some(record) = state.get(&file.key).copied() {
                let evicting = FileRecord {
                    evicting: true,
                    ..record
                };
                state.set(&file.key, evicting);
            }
        }
        state.commit_deferred()
    };
    // Durable before anything is deleted; synced without the lock.
    if let Err(e) = marked.and_then(|deferred| deferred.sync(state)) {
        // Nothing is deleted: the marks go, so that a reopened database does not get them.
        let mut state = lock(state);
        for file in batch {
            if let Some(record) = state.get(&file.key).copied() {
                let kept = FileRecord {
                    evicting: false,
                    ..record
                };
                state.set(&file.key, kept);
            }
        }
        return Err(format!("cannot record the files about to be evicted: {e}"));
    }
    let mut deleted = vec![false; batch.len()];
    for (file, deleted) in batch.iter().zip(&mut deleted) {
        // Look again right before deleting: the file must still be the verified content.
        let Ok((size, mtime_ns, inode)) = fs.stat(&file.path) else {
            continue;
        };
        let current = LocalFile {
            size,
            mtime_ns,
            inode,
            ..file.clone()
        };
        let Some(record) = lock(state).get(&file.key).copied() else {
            continue;
        };
        if !verified_as_is(&record, &current, backend_set) {
            continue;
        }
        match fs.remove(&file.path) {
            Ok(()) => *deleted = true,
            Err(e) => tracing::error!("cannot evict {}: {e}", file.path.display()),
        }
    }
    let mut recorded = Vec::new();
    let mut guard = lock(state);
    for (file, &deleted) in batch.iter().zip(&deleted) {
        let Some(record) = guard.get(&file.key).copied() else {
            continue;
        };
        if deleted {
            // Unless a reconciliation found it gone first and recorded it.
            if !record.evicted {
                let evicted = FileRecord {
                    local: None,
                    evicted: true,
                    evicting: false,
                    retrieved: false,
                    ..record
                };
                guard.set(&file.key, evicted);
                recorded.push(file);
            }
        } else if record.evicting {
            let kept = FileRecord {
                evicting: false,
                ..record
            };
            guard.set(&file.key, kept);
        }
    }
    let gone: Vec<&LocalFile> = batch
        .iter()
        .zip(&deleted)
        .filter_map(|(file, &deleted)| deleted.then_some(file))
        .collect();
    let recorded_now = guard.commit_deferred();
    drop(guard);
    if let Err(e) = recorded_now.and_then(|deferred| deferred.sync(state)) {
        return Err(format!(
            "evicted {} files but cannot record it: {e}",
            gone.len()
        ));
    }
    for file in recorded {
        tracing::info!(
            message_id = message_id::FILE_EVICTED,
            qsfs_file = %file.path.display(),
            qsfs_namespace = file.namespace,
            qsfs_size = file.size,
            "evicted {} ({} bytes, verified remote)",
            file.path.display(),
            file.size
        );
    }
    Ok(gone)
}

/// Whether a file counts toward the cache size.
fn in_scope(file: &LocalFile, namespaces: &[String]) -> bool {
    matches!(file.kind, Kind::Data(_)) && namespaces.contains(&file.namespace)
}

/// Which verified files an eviction may choose, and in what order.
struct Rules {
    /// Only files whose remote copy is on this backend set.
    backend_set: u64,
    /// Least recently used by access time (else by modification time).
    by_atime: bool,
    /// A file `missing-data` brought back stays until its mtime is older than this
    /// (nanoseconds since the epoch).
    retrieved_kept_after_ns: i64,
}

/// Picks the least recently used evictable files that free at least `need` bytes, keeping only
/// those in memory however many files it is offered.
struct Selection<'a> {
    namespaces: &'a [String],
    rules: &'a Rules,
    need: u64,
    chosen: BinaryHeap<Candidate>,
    chosen_bytes: u64,
    /// Files that could be chosen; a retrieved file is never evicted as the only one.
    candidates: usize,
}

/// An evictable file and its place in the eviction order.
struct Candidate {
    order: (i64, u32, String),
    retrieved: bool,
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

impl<'a> Selection<'a> {
    /// A selection for `need` bytes.
    pub fn new(namespaces: &'a [String], rules: &'a Rules, need: u64) -> Self {
        Selection {
            namespaces,
            rules,
            need,
            chosen: BinaryHeap::new(),
            chosen_bytes: 0,
            candidates: 0,
        }
    }

    /// Whether the file could be chosen (sealed and in scope) before its record is looked up.
    pub fn eligible(&self, file: &LocalFile) -> bool {
        in_scope(file, self.namespaces) && !file.active
    }

    /// Considers one file with its record: eligible, verified as it is and not kept, or it is
    /// ignored.
    pub fn offer(&mut self, file: LocalFile, record: Option<&FileRecord>) {
        let Some(record) = record.filter(|r| verified_as_is(r, &file, self.rules.backend_set))
        else {
            return;
        };
        if !self.eligible(&file) {
            return;
        }
        if record.retrieved && file.mtime_ns > self.rules.retrieved_kept_after_ns {
            return;
        }
        self.candidates += 1;
        let number = match file.kind {
            Kind::Data(n) | Kind::Index(n) => n,
            Kind::Descriptor => 0,
        };
        let used = if self.rules.by_atime {
            file.atime_ns
        } else {
            file.mtime_ns
        };
        let order = (used, number, file.namespace.clone());
        self.chosen_bytes += file.size;
        self.chosen.push(Candidate {
            order,
            retrieved: record.retrieved,
            file,
        });
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
        if self.candidates == 1 && self.chosen.peek().is_some_and(|only| only.retrieved) {
            return Vec::new();
        }
        self.chosen
            .into_sorted_vec()
            .into_iter()
            .map(|c| c.file)
            .collect()
    }
}

/// The record says this very file (same stat) is the content verified remote, on
/// `backend_set`.
fn verified_as_is(record: &FileRecord, file: &LocalFile, backend_set: u64) -> bool {
    record.verified()
        && record.backend_set == backend_set
        && record.local.is_some_and(|local| matches_stat(&local, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::state::LocalStamp;
    use crate::zstor::Checksum;
    use std::time::{Duration, Instant};

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
                evicting: false,
                retrieved: false,
                backend_set: 0,
            },
        );
    }

    /// What `run` would choose among `files`: bytes used, keys to delete, bytes remaining.
    fn plan(
        files: &[LocalFile],
        state: &State,
        ns: &[String],
        limit: u64,
        by_atime: bool,
    ) -> (u64, Vec<String>, u64) {
        let rules = Rules {
            backend_set: 0,
            by_atime,
            retrieved_kept_after_ns: i64::MAX,
        };
        plan_by(files, state, ns, limit, &rules)
    }

    fn plan_by(
        files: &[LocalFile],
        state: &State,
        ns: &[String],
        limit: u64,
        rules: &Rules,
    ) -> (u64, Vec<String>, u64) {
        let (used, delete) = choose(
            |visit| {
                files.iter().cloned().for_each(visit);
                Ok(())
            },
            |key| state.get(key).copied(),
            ns,
            limit,
            rules,
        )
        .unwrap();
        let freed: u64 = delete.iter().map(|f| f.size).sum();
        let keys = delete.into_iter().map(|f| f.key).collect();
        (used, keys, used - freed)
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
        let keys = |plan: (u64, Vec<String>, u64)| plan.1;

        // 400 bytes used in zdbfs-data; under the limit nothing goes.
        assert_eq!(
            keys(plan(&files, &state, &ns, 400, false)),
            Vec::<String>::new()
        );
        // By file number: d0 first.
        assert_eq!(
            plan(&files, &state, &ns, 300, false),
            (400, vec!["data/zdbfs-data/d0".to_string()], 300)
        );
        // By access time: d1 was read longer ago.
        assert_eq!(
            keys(plan(&files, &state, &ns, 300, true)),
            ["data/zdbfs-data/d1"]
        );
        // Far over the limit: still never d2 (unverified) or d3 (active).
        let (_, delete, remaining) = plan(&files, &state, &ns, 0, false);
        assert_eq!(delete, ["data/zdbfs-data/d0", "data/zdbfs-data/d1"]);
        assert_eq!(remaining, 200);

        // A file changed since it was verified is not evicted.
        let mut touched = files.clone();
        touched[0].mtime_ns = 2;
        assert_eq!(
            keys(plan(&touched, &state, &ns, 300, false)),
            ["data/zdbfs-data/d1"]
        );

        // A file whose remote copy is on another backend set (not rebuilt yet) is not evicted.
        let mut on_old_set = state.get(&files[0].key).copied().unwrap();
        on_old_set.backend_set = 7;
        state.set(&files[0].key, on_old_set);
        assert_eq!(
            keys(plan(&files, &state, &ns, 0, false)),
            ["data/zdbfs-data/d1"]
        );
    }

    #[test]
    fn a_file_brought_back_by_a_read_is_kept_for_a_while_and_never_evicted_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        let ns = vec!["zdbfs-data".to_string()];
        // d0 was evicted, then read back at time 1000; d1 was sealed at time 500.
        let mut d0 = file("zdbfs-data", 0, 100, 0, false);
        d0.mtime_ns = 1000;
        let mut d1 = file("zdbfs-data", 1, 100, 0, false);
        d1.mtime_ns = 500;
        let active = file("zdbfs-data", 2, 100, 0, true);
        for f in [&d0, &d1] {
            verify(&mut state, f);
        }
        let mut retrieved = *state.get(&d0.key).unwrap();
        retrieved.retrieved = true;
        state.set(&d0.key, retrieved);
        let rules = |kept_after: i64| Rules {
            backend_set: 0,
            by_atime: false,
            retrieved_kept_after_ns: kept_after,
        };
        let keys =
            |files: &[LocalFile], limit, rules: &Rules| plan_by(files, &state, &ns, limit, rules).1;
        let files = [d0.clone(), d1.clone(), active.clone()];

        // Within its keep time d0 stays, even far over the limit.
        assert_eq!(keys(&files, 0, &rules(999)), ["data/zdbfs-data/d1"]);
        // After it, least recently used first: by mtime d1 (sealed before d0 came back), not
        // d0 for its lower number.
        assert_eq!(keys(&files, 200, &rules(1000)), ["data/zdbfs-data/d1"]);
        assert_eq!(
            keys(&files, 0, &rules(1000)),
            ["data/zdbfs-data/d1", "data/zdbfs-data/d0"]
        );
        // The only candidate left: kept, whatever its age.
        let alone = [d0.clone(), active.clone()];
        assert_eq!(keys(&alone, 0, &rules(i64::MAX)), Vec::<String>::new());
        // A sealed file that was never evicted goes as the only candidate.
        let never_evicted = [d1.clone(), active];
        assert_eq!(keys(&never_evicted, 0, &rules(0)), ["data/zdbfs-data/d1"]);
    }

    #[test]
    fn reconciliation_records_a_file_read_back_after_its_eviction_as_retrieved() {
        let dir = tempfile::tempdir().unwrap();
        let (roots, state) = cache(dir.path(), 4);
        let path = |n: u32| roots.data.join(format!("zdbfs-data/d{n}"));
        let (namespaces, allowed) = (namespaces(), AtomicBool::new(true));
        let scope = |limit, keep_secs| Scope {
            namespaces: &namespaces,
            limit,
            backend_set: 0,
            keep_retrieved: Duration::from_secs(keep_secs),
            allowed: &allowed,
        };
        let evicted = |scope: Scope| run(&roots, &state, &scope, &RealFs).unwrap().evicted;
        assert_eq!(evicted(scope(300, 0)), 1);
        assert!(!path(0).exists());
        // missing-data brings it back (the remote copy's checksum is the real one here).
        std::fs::write(path(0), [0u8; 100]).unwrap();
        {
            let mut state = lock(&state);
            let record = *state.get("data/zdbfs-data/d0").unwrap();
            let remote = Some(Checksum::of_file(&path(0)).unwrap());
            state.set("data/zdbfs-data/d0", FileRecord { remote, ..record });
        }
        super::super::reconcile::run(&roots, &state, 0).unwrap();
        let record = *lock(&state).get("data/zdbfs-data/d0").unwrap();
        assert!(record.verified() && record.retrieved, "{record:?}");

        // Kept for an hour: the eviction takes d1 instead.
        assert_eq!(evicted(scope(300, 3600)), 1);
        assert!(path(0).exists() && !path(1).exists());
        // Past its keep time it is the most recently used: d2 goes first.
        assert_eq!(evicted(scope(200, 0)), 1);
        assert!(path(0).exists() && !path(2).exists());
        // The only candidate left (d3 is active): kept.
        assert_eq!(evicted(scope(0, 0)), 0);
        assert!(path(0).exists());
    }

    #[test]
    fn held_back_while_a_backend_is_not_known_to_answer_or_a_rebuild_is_unfinished() {
        let entry = |port: u16, state: BackendState| Entry {
            backend: crate::zstor::config::Backend {
                address: ([127, 0, 0, 1], port).into(),
                namespace: Some("ns".into()),
                password: None,
            },
            kind: crate::monitor::status::BackendKind::Data,
            health: crate::monitor::backends::Health {
                state,
                ..crate::monitor::backends::Health::unchecked(0)
            },
        };
        let answering = [
            entry(1, BackendState::Healthy),
            entry(2, BackendState::LowSpace),
        ];
        assert_eq!(held_back(&answering, false), None);
        assert_eq!(
            held_back(&answering, true).as_deref(),
            Some("a rebuild onto the changed backend set has not finished")
        );
        for state in [BackendState::Unreachable, BackendState::Unknown] {
            let one_down = [entry(1, BackendState::Healthy), entry(2, state)];
            assert_eq!(
                held_back(&one_down, false).as_deref(),
                Some("not every backend is known to answer (data backend 127.0.0.1:2/ns)")
            );
        }
    }

    /// `count` data files of 100 bytes in `zdbfs-data` (the last one active), every sealed one
    /// recorded as verified.
    fn cache(dir: &Path, count: u32) -> (Roots, Mutex<State>) {
        let roots = Roots {
            index: dir.join("index"),
            data: dir.join("data"),
        };
        let ns = roots.data.join("zdbfs-data");
        std::fs::create_dir_all(&ns).unwrap();
        for n in 0..count {
            std::fs::write(ns.join(format!("d{n}")), [n as u8; 100]).unwrap();
        }
        let mut state = State::open(&dir.join("state")).unwrap();
        for f in roots.scan().unwrap().iter().filter(|f| !f.active) {
            verify(&mut state, f);
        }
        state.commit().unwrap();
        (roots, Mutex::new(state))
    }

    /// [`run`] with the default namespaces, the backend set 0, allowed throughout.
    fn evict(
        roots: &Roots,
        state: &Mutex<State>,
        limit: u64,
        fs: &(impl EvictFs + ?Sized),
    ) -> Result<Outcome, String> {
        let (namespaces, allowed) = (namespaces(), AtomicBool::new(true));
        let scope = Scope {
            namespaces: &namespaces,
            limit,
            backend_set: 0,
            keep_retrieved: Duration::ZERO,
            allowed: &allowed,
        };
        run(roots, state, &scope, fs)
    }

    fn namespaces() -> Vec<String> {
        vec!["zdbfs-data".to_string()]
    }

    /// The real filesystem, with a hook run before each stat and a delay per operation.
    struct Fake<F: Fn(&Path)> {
        before_stat: F,
        delay: Duration,
    }

    impl<F: Fn(&Path)> EvictFs for Fake<F> {
        fn stat(&self, path: &Path) -> std::io::Result<(u64, i64, u64)> {
            (self.before_stat)(path);
            std::thread::sleep(self.delay);
            RealFs.stat(path)
        }

        fn remove(&self, path: &Path) -> std::io::Result<()> {
            std::thread::sleep(self.delay);
            RealFs.remove(path)
        }
    }

    #[test]
    fn an_eviction_stops_at_the_next_batch_once_no_longer_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let (roots, state) = cache(dir.path(), 200);
        let (namespaces, allowed) = (namespaces(), AtomicBool::new(true));
        // A backend stops answering during the first batch.
        let fs = Fake {
            before_stat: |_: &Path| allowed.store(false, Ordering::SeqCst),
            delay: Duration::ZERO,
        };
        let scope = Scope {
            namespaces: &namespaces,
            limit: 0,
            backend_set: 0,
            keep_retrieved: Duration::ZERO,
            allowed: &allowed,
        };
        let outcome = run(&roots, &state, &scope, &fs).unwrap();
        assert_eq!(outcome.evicted, BATCH as u64, "only the batch under way");
    }

    #[test]
    fn evicts_and_records_only_what_is_still_the_verified_content() {
        let dir = tempfile::tempdir().unwrap();
        let (roots, state) = cache(dir.path(), 600);
        let ns = roots.data.join("zdbfs-data");
        // zdb rewrites d3 between the choice and the delete: d3 stays.
        let fs = Fake {
            before_stat: |path: &Path| {
                if path.ends_with("d3") {
                    std::fs::write(path, b"rewritten").unwrap();
                }
            },
            delay: Duration::ZERO,
        };
        // 60 000 bytes, 10 000 allowed: 500 files must go (d0..d499 have the same atime or
        // older ones first), d3 fails its last check.
        let outcome = evict(&roots, &state, 10_000, &fs).unwrap();
        assert_eq!(outcome.evicted, 499);
        // d3 counts at the size it had when the cache was measured.
        assert_eq!(outcome.used, 60_000 - 499 * 100);
        let state = state.into_inner().unwrap();
        let mut evicted = 0;
        for n in 0..599 {
            let record = state.get(&format!("data/zdbfs-data/d{n}")).unwrap();
            assert!(!record.evicting, "d{n}: no mark is left behind");
            assert_eq!(record.evicted, !ns.join(format!("d{n}")).exists(), "d{n}");
            if record.evicted {
                assert_eq!(record.local, None);
                assert!(record.remote.is_some());
                evicted += 1;
            }
        }
        assert_eq!(evicted, 499);
        assert!(ns.join("d3").exists() && ns.join("d599").exists());
        // Under the limit, nothing more goes.
        let state = Mutex::new(state);
        let fs = Fake {
            before_stat: |_: &Path| {},
            delay: Duration::ZERO,
        };
        let again = evict(&roots, &state, 60_000, &fs).unwrap();
        assert_eq!(
            again,
            Outcome {
                evicted: 0,
                used: outcome.used - 100 + 9
            }
        );
    }

    #[test]
    fn a_file_deleted_by_an_eviction_that_stopped_before_recording_it_is_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let (roots, state) = cache(dir.path(), 10);
        let ns = roots.data.join("zdbfs-data");
        // A verified file removed behind the monitor's back: lost, not evicted.
        std::fs::remove_file(ns.join("d8")).unwrap();
        // The eviction dies right after its third delete.
        struct Dies(std::sync::atomic::AtomicU32);
        impl EvictFs for Dies {
            fn stat(&self, path: &Path) -> std::io::Result<(u64, i64, u64)> {
                RealFs.stat(path)
            }
            fn remove(&self, path: &Path) -> std::io::Result<()> {
                RealFs.remove(path)?;
                if self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 2 {
                    panic!("killed");
                }
                Ok(())
            }
        }
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            evict(&roots, &state, 0, &Dies(0.into()))
        }));
        assert!(died.is_err());
        // What was not committed is lost with the process.
        drop(state);
        let state = Mutex::new(State::open(&dir.path().join("state")).unwrap());
        {
            let state = state.lock().unwrap();
            let deleted: Vec<bool> = (0..3).map(|n| ns.join(format!("d{n}")).exists()).collect();
            assert_eq!(deleted, [false, false, false]);
            for n in 0..3 {
                let record = state.get(&format!("data/zdbfs-data/d{n}")).unwrap();
                assert!(
                    !record.evicted,
                    "never recorded evicted before it is deleted"
                );
            }
        }

        let outcome = super::super::reconcile::run(&roots, &state, 0).unwrap();
        let mut adopted = outcome.evicted.clone();
        adopted.sort();
        assert_eq!(
            adopted,
            [
                "data/zdbfs-data/d0",
                "data/zdbfs-data/d1",
                "data/zdbfs-data/d2"
            ]
        );
        assert_eq!(outcome.vanished, ["data/zdbfs-data/d8"]);
        {
            let state = state.lock().unwrap();
            let record = |n: u32| *state.get(&format!("data/zdbfs-data/d{n}")).unwrap();
            for n in 0..3 {
                assert!(record(n).evicted && !record(n).evicting && record(n).local.is_none());
            }
            assert!(!record(8).evicted && record(8).local.is_none());
            // Marked but not deleted when the eviction died: still there, still verified.
            assert!(ns.join("d3").exists() && record(3).verified());
        }
        // The next eviction takes the rest.
        let outcome = evict(&roots, &state, 0, &RealFs).unwrap();
        assert_eq!(
            outcome,
            Outcome {
                evicted: 5,
                used: 100
            }
        );
    }

    /// The status and watchdog ticks take the state lock every 5 ms while an eviction of 9 000
    /// of 10 000 verified files runs on a slow filesystem; returns the longest wait.
    fn longest_wait(
        evict: impl FnOnce(&Roots, &Mutex<State>, &dyn EvictFs) -> u64 + Send,
    ) -> Duration {
        let dir = tempfile::tempdir().unwrap();
        let (roots, state) = cache(dir.path(), 10_001);
        let fs = Fake {
            before_stat: |_: &Path| {},
            delay: SLOW,
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let ticks = scope.spawn(|| {
                let mut longest = Duration::ZERO;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                    let asked = Instant::now();
                    drop(lock(&state));
                    longest = longest.max(asked.elapsed());
                }
                longest
            });
            let evicted = evict(&roots, &state, &fs);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(evicted, 9_000);
            ticks.join().unwrap()
        })
    }

    /// The delay of each stat and remove of the slow filesystem.
    const SLOW: Duration = Duration::from_micros(250);

    #[test]
    fn an_eviction_of_ten_thousand_files_never_stalls_the_ticks() {
        let longest =
            longest_wait(|roots, state, fs| evict(roots, state, 100_100, fs).unwrap().evicted);
        println!("longest wait for the state lock: {longest:?}");
        assert!(longest < Duration::from_millis(100), "{longest:?}");
    }
}
