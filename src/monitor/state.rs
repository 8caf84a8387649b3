//! The monitor's durable state: what is verified remote, what was evicted, and a few facts
//! that must survive restarts (the backend set the remote copies were written for, the
//! replacement backends already requested).
//!
//! It lives in a redb database, `<state_dir>/monitor.redb`. redb commits are copy-on-write
//! with checksummed roots, so a SIGKILL or a power cut at any instant leaves the database at
//! its last committed transaction, never corrupted; it is pure Rust and well kept. The
//! alternative, an atomically replaced file, would rewrite every record (100 000 of them on a
//! large cache) for each verified upload. The whole file table is also kept in memory, so a
//! reconciliation pass reads no database page; in memory a file is a 12-byte id (interned
//! namespace, kind, number) rather than its key string, so 100 000 records take about 13 MiB.
//!
//! After one failed write (ENOSPC, EIO) redb refuses every later one until the database is
//! closed and opened again. The in-memory table (and the named facts set since) stays the
//! truth meanwhile: [`State::failure`] says the database is behind, and [`State::reopen`]
//! opens it again and writes everything in which it differs from the table.

use super::files::{Kind, Roots};
use super::status::Failure;
use crate::zstor::Checksum;
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The format of a file record (its first byte); recorded in an image's `MANIFEST`.
pub const RECORD_VERSION: u8 = 1;
/// The meta entry of [`State::backend_set`] (8 bytes, little-endian).
const BACKEND_SET: &str = "backend_set";
const RECORD_LEN: usize = 66;

/// What the monitor knows of one file, keyed by `index/<ns>/<name>` or `data/<ns>/<name>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileRecord {
    /// The local file when it was last hashed: identity, size, mtime and checksum.
    pub local: Option<LocalStamp>,
    /// The checksum of the copy verified remote (`zstor check` returned it after an upload).
    pub remote: Option<Checksum>,
    /// Deleted locally on purpose by the cache eviction.
    pub evicted: bool,
    /// Chosen by an eviction that may have deleted it without recording it yet (written
    /// durably before the delete, so a crash in between is recognised as an eviction).
    pub evicting: bool,
    /// Brought back by zdb's `missing-data` after an eviction: read again since, so kept
    /// local for a while (see [`super::evict`]).
    pub retrieved: bool,
    /// The backend set the remote copy was written or rebuilt for.
    pub backend_set: u64,
}

/// Identity and content of a local file at one point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// blake2b-128 of the content.
    pub checksum: Checksum,
}

impl FileRecord {
    /// The local content is the one verified remote.
    pub fn verified(&self) -> bool {
        matches!((self.local, self.remote), (Some(local), Some(remote)) if local.checksum == remote)
    }

    /// Version byte, flags (1 local, 2 remote, 4 evicted, 8 evicting, 16 retrieved: a reader
    /// that predates a flag ignores it), the local stamp, the remote checksum, the backend set.
    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0] = RECORD_VERSION;
        out[1] = u8::from(self.local.is_some())
            | u8::from(self.remote.is_some()) << 1
            | u8::from(self.evicted) << 2
            | u8::from(self.evicting) << 3
            | u8::from(self.retrieved) << 4;
        if let Some(local) = self.local {
            out[2..10].copy_from_slice(&local.size.to_le_bytes());
            out[10..18].copy_from_slice(&local.mtime_ns.to_le_bytes());
            out[18..26].copy_from_slice(&local.inode.to_le_bytes());
            out[26..42].copy_from_slice(&local.checksum.0);
        }
        if let Some(remote) = self.remote {
            out[42..58].copy_from_slice(&remote.0);
        }
        out[58..66].copy_from_slice(&self.backend_set.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<FileRecord> {
        if bytes.len() != RECORD_LEN || bytes[0] != RECORD_VERSION {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        let sum_at = |i: usize| Checksum(bytes[i..i + 16].try_into().unwrap());
        let flags = bytes[1];
        Some(FileRecord {
            local: (flags & 1 != 0).then(|| LocalStamp {
                size: u64_at(2),
                mtime_ns: u64_at(10) as i64,
                inode: u64_at(18),
                checksum: sum_at(26),
            }),
            remote: (flags & 2 != 0).then(|| sum_at(42)),
            evicted: flags & 4 != 0,
            evicting: flags & 8 != 0,
            retrieved: flags & 16 != 0,
            backend_set: u64_at(58),
        })
    }
}

/// A state database error.
#[derive(Debug, thiserror::Error)]
#[error("monitor state {path}: {message}")]
pub struct StateError {
    /// The database file.
    pub path: String,
    /// What failed.
    pub message: String,
}

/// The sync that makes a [`State::commit_deferred`] durable.
#[must_use = "the commit is not durable until it is synced"]
pub struct Deferred {
    db: Arc<Database>,
    path: String,
}

impl Deferred {
    /// Makes every commit so far durable (one empty durable transaction); a failure is
    /// recorded in `state` (locked only then).
    pub fn sync(self, state: &Mutex<State>) -> Result<(), StateError> {
        let error = |message: String| StateError {
            path: self.path.clone(),
            message,
        };
        let synced = self
            .db
            .begin_write()
            .map_err(|e| error(e.to_string()))
            .and_then(|txn| txn.commit().map_err(|e| error(e.to_string())));
        // The database is released before the lock is taken: a reopen waits for no sync.
        drop(self.db);
        synced.map_err(|e| lock(state).failed(e))
    }
}

/// A file key in memory: its namespace (an index into [`State`]'s namespaces) and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct FileId {
    namespace: u16,
    kind: Kind,
}

/// Opens the database (again).
type Opener = Box<dyn Fn() -> Result<Database, DatabaseError> + Send>;

/// The durable state, with every file record in memory. Changes are buffered by
/// [`State::set`] and written in one transaction by [`State::commit`].
pub struct State {
    /// `None` while closed after a reopen failed.
    db: Option<Arc<Database>>,
    open: Opener,
    path: String,
    namespaces: Vec<String>,
    files: HashMap<FileId, FileRecord>,
    unsaved: HashMap<FileId, Option<FileRecord>>,
    unsaved_meta: HashMap<String, Vec<u8>>,
    failure: Option<Failure>,
}

/// How long [`State::open`] waits for another process to release the database's lock: a
/// monitor that was just killed can leave a child between fork and exec holding it briefly.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn open_waiting_for_lock(path: &Path) -> Result<Database, redb::DatabaseError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match Database::builder().set_cache_size(1 << 20).create(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

impl State {
    /// Opens (or creates) `<dir>/monitor.redb` and loads every record.
    pub fn open(dir: &Path) -> Result<State, StateError> {
        let path = dir.join("monitor.redb");
        std::fs::create_dir_all(dir).map_err(|e| StateError {
            path: path.display().to_string(),
            message: format!("cannot create {}: {e}", dir.display()),
        })?;
        let name = path.display().to_string();
        State::open_with(name, Box::new(move || open_waiting_for_lock(&path)))
    }

    /// Opens the database `open` opens (named `path` in errors) and loads every record.
    fn open_with(path: String, open: Opener) -> Result<State, StateError> {
        let mut state = State {
            db: None,
            open,
            path,
            namespaces: Vec::new(),
            files: HashMap::new(),
            unsaved: HashMap::new(),
            unsaved_meta: HashMap::new(),
            failure: None,
        };
        let (db, files) = state.connect()?;
        state.db = Some(db);
        state.files = files;
        Ok(state)
    }

    fn error(&self, message: impl ToString) -> StateError {
        StateError {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    /// Opens the database, creates its tables if new, and reads every record.
    fn connect(&mut self) -> Result<(Arc<Database>, HashMap<FileId, FileRecord>), StateError> {
        let db = (self.open)().map_err(|e| self.error(e))?;
        let txn = db.begin_write().map_err(|e| self.error(e))?;
        txn.open_table(FILES).map_err(|e| self.error(e))?;
        txn.open_table(META).map_err(|e| self.error(e))?;
        txn.commit().map_err(|e| self.error(e))?;
        let read = db.begin_read().map_err(|e| self.error(e))?;
        let table = read.open_table(FILES).map_err(|e| self.error(e))?;
        // Sized once: growing a table of 100 000 records would briefly need twice the memory.
        let mut files = HashMap::new();
        files.reserve(table.len().map_err(|e| self.error(e))? as usize);
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            match (self.intern(key.value()), FileRecord::decode(value.value())) {
                (Some(id), Some(record)) => {
                    files.insert(id, record);
                }
                _ => tracing::warn!("monitor state: dropping unreadable record {}", key.value()),
            }
        }
        drop(table);
        drop(read);
        Ok((Arc::new(db), files))
    }

    /// The database, unless a write failed: nothing is written then until [`State::reopen`]
    /// (redb would refuse it), and the refusals are not counted as failures.
    fn db(&self) -> Result<Arc<Database>, StateError> {
        match (&self.db, &self.failure) {
            (Some(db), None) => Ok(Arc::clone(db)),
            (_, failure) => Err(self.error(format!(
                "not written since an error ({}); it is reopened later",
                failure.as_ref().map_or("", |f| f.error.as_str())
            ))),
        }
    }

    /// Records a failed write (the database is then behind the table until
    /// [`State::reopen`]) and returns the error.
    fn failed(&mut self, error: StateError) -> StateError {
        let now = crate::clock::now_unix_ms();
        Failure::track(&mut self.failure, Some(error.message.clone()), now);
        error
    }

    /// The failure that left the database behind the table, until a [`State::reopen`] works.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Closes the database and opens it again (what redb asks for after an I/O error), then
    /// writes every record in which it differs from the table: what was buffered, and what a
    /// commit that was not made durable lost. The table is not changed. Fails, and is to be
    /// tried again later, while the database cannot be written (the disk still full) or a
    /// [`Deferred`] of the old one is not synced yet; clears [`State::failure`] once it works.
    pub fn reopen(&mut self) -> Result<(), StateError> {
        if let Some(db) = self.db.take() {
            match Arc::try_unwrap(db) {
                Ok(db) => drop(db),
                Err(db) => {
                    self.db = Some(db);
                    return Err(self.error("a sync of the database is still running"));
                }
            }
        }
        let (db, stored) = match self.connect() {
            Ok(connected) => connected,
            Err(e) => return Err(self.failed(e)),
        };
        self.db = Some(Arc::clone(&db));
        let mut unsaved: HashMap<FileId, Option<FileRecord>> = self
            .files
            .iter()
            .filter(|(id, record)| stored.get(id) != Some(record))
            .map(|(id, record)| (*id, Some(*record)))
            .collect();
        unsaved.extend(
            stored
                .keys()
                .filter(|id| !self.files.contains_key(id))
                .map(|id| (*id, None)),
        );
        self.unsaved = unsaved;
        let written = self.unsaved.len();
        let result = self.try_write(&db, Durability::Immediate);
        result.map_err(|e| self.failed(e))?;
        self.failure = None;
        tracing::info!(
            "monitor state {}: reopened, {written} records written that it lacked",
            self.path
        );
        Ok(())
    }

    /// The id of a key, interning its namespace.
    fn intern(&mut self, key: &str) -> Option<FileId> {
        let (namespace, kind) = Roots::parse_key(key)?;
        let index = match self.namespaces.iter().position(|ns| ns == namespace) {
            Some(index) => index,
            None => {
                self.namespaces.push(namespace.to_string());
                self.namespaces.len() - 1
            }
        };
        Some(FileId {
            namespace: u16::try_from(index).ok()?,
            kind,
        })
    }

    /// The id of a key whose namespace is known.
    fn id(&self, key: &str) -> Option<FileId> {
        let (namespace, kind) = Roots::parse_key(key)?;
        let index = self.namespaces.iter().position(|ns| ns == namespace)?;
        Some(FileId {
            namespace: index as u16,
            kind,
        })
    }

    fn key(&self, id: FileId) -> String {
        let namespace = &self.namespaces[id.namespace as usize];
        match id.kind {
            Kind::Descriptor => format!("index/{namespace}/{}", crate::layout::NAMESPACE_FILE),
            Kind::Index(n) => format!("index/{namespace}/{}", crate::layout::index_file(n)),
            Kind::Data(n) => format!("data/{namespace}/{}", crate::layout::data_file(n)),
        }
    }

    /// The record of `key`.
    pub fn get(&self, key: &str) -> Option<&FileRecord> {
        self.files.get(&self.id(key)?)
    }

    /// Every record with its key (the key is built for each; for whole-table passes).
    pub fn records(&self) -> impl Iterator<Item = (String, &FileRecord)> {
        self.files
            .iter()
            .map(|(id, record)| (self.key(*id), record))
    }

    /// Every record, without keys.
    pub fn values(&self) -> impl Iterator<Item = &FileRecord> {
        self.files.values()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Sets a record (written at the next commit). Keys that are not zdb file keys are
    /// ignored.
    pub fn set(&mut self, key: &str, record: FileRecord) {
        let Some(id) = self.intern(key) else {
            tracing::warn!(
                "monitor state: ignoring a record for `{key}`, which is not a zdb file key"
            );
            return;
        };
        if self.files.get(&id) != Some(&record) {
            self.files.insert(id, record);
            self.unsaved.insert(id, Some(record));
        }
    }

    /// Forgets a record (at the next commit).
    pub fn remove(&mut self, key: &str) {
        if let Some(id) = self.id(key) {
            if self.files.remove(&id).is_some() {
                self.unsaved.insert(id, None);
            }
        }
    }

    /// Writes every buffered change in one durable transaction.
    pub fn commit(&mut self) -> Result<(), StateError> {
        if self.unsaved.is_empty() && self.unsaved_meta.is_empty() {
            return Ok(());
        }
        self.write(Durability::Immediate)
    }

    /// Writes every buffered change in one transaction that is not durable yet, in order with
    /// every other commit, and returns what makes it durable: call [`Deferred::sync`] without
    /// holding the lock around the state, so readers do not wait for the disk. A commit by
    /// someone else in the meantime is durable too, and waits for the sync.
    pub fn commit_deferred(&mut self) -> Result<Deferred, StateError> {
        if !self.unsaved.is_empty() || !self.unsaved_meta.is_empty() {
            self.write(Durability::None)?;
        }
        Ok(Deferred {
            db: self.db()?,
            path: self.path.clone(),
        })
    }

    fn write(&mut self, durability: Durability) -> Result<(), StateError> {
        let db = self.db()?;
        let written = self.try_write(&db, durability);
        written.map_err(|e| self.failed(e))
    }

    fn try_write(&mut self, db: &Database, durability: Durability) -> Result<(), StateError> {
        let mut txn = db.begin_write().map_err(|e| self.error(e))?;
        txn.set_durability(durability).map_err(|e| self.error(e))?;
        {
            let mut table = txn.open_table(FILES).map_err(|e| self.error(e))?;
            for (id, record) in &self.unsaved {
                let key = self.key(*id);
                match record {
                    Some(record) => table
                        .insert(key.as_str(), record.encode().as_slice())
                        .map(drop),
                    None => table.remove(key.as_str()).map(drop),
                }
                .map_err(|e| self.error(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            for (name, value) in &self.unsaved_meta {
                meta.insert(name.as_str(), value.as_slice())
                    .map_err(|e| self.error(e))?;
            }
        }
        txn.commit().map_err(|e| self.error(e))?;
        self.unsaved.clear();
        self.unsaved_meta.clear();
        Ok(())
    }

    /// A named fact (for example `backend_set`).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(value) = self.unsaved_meta.get(name) {
            return Ok(Some(value.clone()));
        }
        // Read even while writes fail: what is committed is still there.
        let db = self.db.as_ref().ok_or_else(|| self.error("closed"))?;
        let read = db.begin_read().map_err(|e| self.error(e))?;
        let table = read.open_table(META).map_err(|e| self.error(e))?;
        let value = table.get(name).map_err(|e| self.error(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Stores a named fact durably, at once (with the buffered records). While writes fail it
    /// is kept like a record: [`State::meta`] returns it, and [`State::reopen`] writes it.
    pub fn set_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StateError> {
        self.unsaved_meta.insert(name.to_string(), value.to_vec());
        self.write(Durability::Immediate)
    }

    /// The backend set the verified copies were last all on (recorded at the first start and
    /// when a rebuild onto a new set finished).
    pub fn backend_set(&self) -> Option<u64> {
        let bytes = self.meta(BACKEND_SET).ok().flatten()?;
        Some(u64::from_le_bytes(bytes.as_slice().try_into().ok()?))
    }

    /// Records [`State::backend_set`].
    pub fn set_backend_set(&mut self, set: u64) -> Result<(), StateError> {
        self.set_meta(BACKEND_SET, &set.to_le_bytes())
    }
}

/// Locks the state shared by the daemon and its tasks. A task that panicked while holding it
/// left nothing half-done in the database (a transaction is committed whole or not at all), so
/// a poisoned lock is taken anyway.
pub fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> FileRecord {
        FileRecord {
            local: Some(LocalStamp {
                size: 100 + n as u64,
                mtime_ns: -5,
                inode: 7,
                checksum: Checksum([n; 16]),
            }),
            remote: Some(Checksum([n; 16])),
            evicted: n.is_multiple_of(2),
            evicting: n.is_multiple_of(3),
            retrieved: n == 1,
            backend_set: 0xdead_beef,
        }
    }

    #[test]
    fn records_round_trip_through_the_database() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut state = State::open(dir.path()).unwrap();
            state.set("data/zdbfs-data/d1", record(1));
            state.set("data/zdbfs-data/d2", record(2));
            state.set("index/zdbfs-data/i1", FileRecord::default());
            state.set("index/zdbfs-meta/zdb-namespace", record(3));
            state.set("not/a-key", record(4));
            state.commit().unwrap();
            state.remove("data/zdbfs-data/d2");
            state.commit().unwrap();
            state.set_meta("backend_set", b"42").unwrap();
            state.set("data/zdbfs-data/d9", record(9)); // never committed
        }
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.len(), 3);
        let mut keys: Vec<String> = state.records().map(|(key, _)| key).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "data/zdbfs-data/d1",
                "index/zdbfs-data/i1",
                "index/zdbfs-meta/zdb-namespace"
            ]
        );
        assert_eq!(state.get("data/zdbfs-data/d1"), Some(&record(1)));
        assert!(state.get("data/zdbfs-data/d1").unwrap().verified());
        assert!(!state.get("index/zdbfs-data/i1").unwrap().verified());
        assert_eq!(
            state.meta("backend_set").unwrap().as_deref(),
            Some(&b"42"[..])
        );
        assert_eq!(state.meta("absent").unwrap(), None);
    }

    /// A file backend whose writes fail with ENOSPC while `full` is set.
    #[derive(Debug)]
    struct Fillable {
        file: redb::backends::FileBackend,
        full: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Fillable {
        fn check(&self) -> std::io::Result<()> {
            match self.full.load(std::sync::atomic::Ordering::SeqCst) {
                true => Err(std::io::Error::from_raw_os_error(nix::libc::ENOSPC)),
                false => Ok(()),
            }
        }
    }

    impl redb::StorageBackend for Fillable {
        fn len(&self) -> std::io::Result<u64> {
            self.file.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.file.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.file.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()?;
            self.file.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.file.write(offset, data)
        }
        fn close(&self) -> std::io::Result<()> {
            self.file.close()
        }
    }

    #[test]
    fn a_failed_write_is_reported_and_a_reopen_writes_what_the_database_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("monitor.redb");
        let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (file, flag) = (path.clone(), full.clone());
        let open: Opener = Box::new(move || {
            let handle = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&file)?;
            Database::builder().create_with_backend(Fillable {
                file: redb::backends::FileBackend::new(handle)?,
                full: flag.clone(),
            })
        });
        let shared = Mutex::new(State::open_with("test.redb".into(), open).unwrap());
        let mut state = lock(&shared);
        state.set("data/ns/d1", record(1));
        state.commit().unwrap();
        // Committed, not durable yet; the disk fills before the sync.
        state.set("data/ns/d2", record(2));
        let deferred = state.commit_deferred().unwrap();
        drop(state);
        full.store(true, std::sync::atomic::Ordering::SeqCst);
        let e = deferred.sync(&shared).unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        let mut state = lock(&shared);
        assert_eq!(state.failure().unwrap().failures_in_a_row, 1);
        // Later writes are refused without touching the database, and not counted.
        state.set("data/ns/d3", record(3));
        state.remove("data/ns/d1");
        assert!(state.commit().is_err());
        assert!(state.set_meta("backend_set", b"7").is_err());
        assert_eq!(
            state.meta("backend_set").unwrap().as_deref(),
            Some(&b"7"[..])
        );
        assert_eq!(state.failure().unwrap().failures_in_a_row, 1);
        // Still full: the reopen fails, and is counted.
        assert!(state.reopen().is_err());
        let failure = state.failure().unwrap();
        assert_eq!(failure.failures_in_a_row, 2);
        assert!(failure.error.contains("No space left"), "{failure:?}");
        // Space again: the reopen writes the table.
        full.store(false, std::sync::atomic::Ordering::SeqCst);
        state.reopen().unwrap();
        assert_eq!(state.failure(), None);
        let mut keys: Vec<String> = state.records().map(|(key, _)| key).collect();
        keys.sort();
        assert_eq!(keys, ["data/ns/d2", "data/ns/d3"]);
        drop(state);
        drop(shared);
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.len(), 2);
        assert_eq!(state.get("data/ns/d2"), Some(&record(2)));
        assert_eq!(state.get("data/ns/d3"), Some(&record(3)));
        assert_eq!(state.get("data/ns/d1"), None);
        assert_eq!(
            state.meta("backend_set").unwrap().as_deref(),
            Some(&b"7"[..])
        );
    }

    #[test]
    fn deferred_commits_are_ordered_and_durable_once_synced() {
        let dir = tempfile::tempdir().unwrap();
        {
            let shared = Mutex::new(State::open(dir.path()).unwrap());
            let mut state = lock(&shared);
            state.set("data/ns/d1", record(1));
            let deferred = state.commit_deferred().unwrap();
            state.set("data/ns/d1", record(2));
            state.set("data/ns/d3", record(3));
            state.commit().unwrap();
            drop(state);
            deferred.sync(&shared).unwrap();
            let mut state = lock(&shared);
            state.set("data/ns/d4", record(4));
            let deferred = state.commit_deferred().unwrap();
            drop(state);
            deferred.sync(&shared).unwrap();
        }
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.len(), 3);
        assert_eq!(state.get("data/ns/d1"), Some(&record(2)));
        assert_eq!(state.get("data/ns/d3"), Some(&record(3)));
        assert_eq!(state.get("data/ns/d4"), Some(&record(4)));
    }
}
