//! One namespace: its descriptor, index and data files, and the key map rebuilt from the index.
//!
//! Formats (all integers little-endian; the stand-in's own, not 0-db's):
//!
//! * File header at the start of every `iN` and `dN`: magic (`ZSIX` for index, `ZSDT` for
//!   data), format version `u8` = 1, mode `u8` (index: 0 user, 1 sequential; data: 0), file id
//!   `u32`, creation time `u64` (unix seconds), then zeros up to the length of 0-db 2.0.7's
//!   headers ([`qsfs::layout::INDEX_HEADER_LEN`] for index files,
//!   [`qsfs::layout::DATA_HEADER_LEN`] for data files), so that a file without entries has the
//!   same size as 0-db's.
//! * Data record (`dN`, append-only): flags `u8` (bit 0: deletion tombstone), key length `u8`,
//!   value length `u32`, crc32 (IEEE) of the value `u32`, timestamp `u64`, then key and value.
//! * Index record (`iN`): flags `u8` (bit 0: deleted or superseded), key length `u8`, data file
//!   id `u32`, offset of the data record in that file `u64`, value length `u32`, crc32 `u32`,
//!   timestamp `u64`, then the key (in sequential mode the 8-byte id).
//!   Records are appended to the active file; older records are changed in place: the flags byte
//!   when a user key is overwritten or deleted, the whole record when a sequential id is updated
//!   (see [`Namespace::set`]). Changing a record in an older file `iK` adds K to the dirty list.
//! * Descriptor `zdb-namespace`: magic `ZSNS`, version `u8` = 1, flags `u8` (bit 0 public,
//!   bit 1 worm), mode `u8`, maxsize `u64`, password length `u8` (0: no password), name length
//!   `u8`, then the name and the password. Lock and freeze are runtime state, as in 0-db.
//!
//! Loading replays `i0..iN` in order (N is the highest `iN` present): user mode keeps the last
//! record of each key not flagged, sequential mode maps id `p` to the p-th record. Data files
//! are only opened by reads, so they may be missing (offloaded) until a `GET` needs them.

use crate::hooks::{now, Hooks};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

const INDEX_MAGIC: &[u8; 4] = b"ZSIX";
const DATA_MAGIC: &[u8; 4] = b"ZSDT";
const DESCRIPTOR_MAGIC: &[u8; 4] = b"ZSNS";
const FORMAT_VERSION: u8 = 1;
/// The bytes of a header this stand-in reads (the rest, up to 0-db's length, is zeros).
const FILE_HEADER_LEN: usize = 18;
const INDEX_RECORD_LEN: usize = 30;
const DATA_RECORD_LEN: usize = 18;
const FLAG_DELETED: u8 = 1;
/// Longest key (0-db stores the key length in one byte).
pub const MAX_KEY_LENGTH: usize = 255;

/// Server-wide disk counters for `INFO`.
pub struct DiskStats {
    pub index_read_failed: AtomicU64,
    pub index_write_failed: AtomicU64,
    pub data_read_failed: AtomicU64,
    pub data_write_failed: AtomicU64,
    pub index_read_bytes: AtomicU64,
    pub index_write_bytes: AtomicU64,
    pub data_read_bytes: AtomicU64,
    pub data_write_bytes: AtomicU64,
}

pub static DISK: DiskStats = DiskStats {
    index_read_failed: AtomicU64::new(0),
    index_write_failed: AtomicU64::new(0),
    data_read_failed: AtomicU64::new(0),
    data_write_failed: AtomicU64::new(0),
    index_read_bytes: AtomicU64::new(0),
    index_write_bytes: AtomicU64::new(0),
    data_read_bytes: AtomicU64::new(0),
    data_write_bytes: AtomicU64::new(0),
};

fn count(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// What `namespace-closing` needs for each namespace, in server order: name, current index
/// file, current data file, dirty list. Kept up to date by the namespaces so that a signal
/// arriving while a blocking hook holds the server lock can still close (0-db's signal handler
/// runs at once, even in the middle of a hook's `waitpid`).
pub static CLOSING: Mutex<Vec<[String; 4]>> = Mutex::new(Vec::new());

/// Forgets a deleted namespace.
pub fn unpublish(name: &str) {
    CLOSING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|c| c[0] != name);
}

/// crc32 (IEEE), bitwise: values are small enough.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    User,
    Seq,
}

impl Mode {
    fn byte(self) -> u8 {
        match self {
            Mode::User => 0,
            Mode::Seq => 1,
        }
    }

    fn from_byte(byte: u8) -> Mode {
        if byte == 1 {
            Mode::Seq
        } else {
            Mode::User
        }
    }

    /// The name `NSINFO` shows.
    pub fn name(self) -> &'static str {
        match self {
            Mode::User => "userkey",
            Mode::Seq => "sequential",
        }
    }
}

/// 0-db keeps lock and freeze in one field: setting either replaces the other.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lock {
    Unlocked,
    Locked,
    Frozen,
}

/// Write and sync settings shared by every namespace.
#[derive(Clone, Copy)]
pub struct Options {
    pub sync: bool,
    pub synctime: u64,
    pub secure: bool,
}

/// Where a live value is.
#[derive(Clone, Debug)]
pub struct Entry {
    pub data_id: u32,
    pub data_offset: u64,
    pub length: u32,
    pub crc: u32,
    pub timestamp: u64,
    index_id: u32,
    index_offset: u64,
}

/// A sequential id's index record; `entry` is `None` when it is flagged.
struct Slot {
    index_id: u32,
    index_offset: u64,
    entry: Option<Entry>,
}

/// Per-namespace I/O statistics for `NSINFO`.
#[derive(Default)]
pub struct IoStats {
    pub index_errors: u64,
    pub index_error_last: i64,
    pub data_errors: u64,
    pub data_error_last: i64,
}

/// Why a value could not be read.
pub enum ReadError {
    /// The data file is missing, even after the `missing-data` hook.
    Missing,
    /// Anything else.
    Io,
}

pub struct Namespace {
    pub name: String,
    pub password: Option<String>,
    pub public: bool,
    pub worm: bool,
    pub maxsize: u64,
    pub mode: Mode,
    pub lock: Lock,
    /// `<index root>/<name>`, spelled as the roots were given.
    pub index_dir: String,
    /// `<data root>/<name>`
    pub data_dir: String,
    /// The active `iN`/`dN` number.
    pub file_id: u32,
    index_file: File,
    data_file: File,
    index_active_len: u64,
    /// Size of the active data file: where the next record goes.
    pub data_offset: u64,
    /// Bytes of all index files.
    pub index_bytes: u64,
    keys: HashMap<Vec<u8>, Entry>,
    slots: Vec<Slot>,
    /// 0-db's `seqmap`: the first id of each index file, pushed as 0-db 2.0.7 pushes it (see
    /// [`seqmap_file`]).
    seqmap: Vec<(u64, u32)>,
    /// Index records ever written (0-db's `nextentry`; in sequential mode the next id).
    pub next_entry: u64,
    pub dirty: BTreeSet<u32>,
    pub entries: u64,
    pub datasize: u64,
    pub updated_since_jump: bool,
    pub last_jump: Instant,
    last_sync: Instant,
    options: Options,
    pub stats: IoStats,
}

/// The index file 0-db 2.0.7 looks in for sequential `id` (`index_seqmap_from_seq`, ported with
/// its quirks). A jump away from an index file without entries pushes the same first id twice,
/// and then the ids of the new file resolve to the empty one: GET answers nothing until a
/// restart (the loader skips files without entries). The real zdb does this; so does this
/// stand-in, so that the stand-in tier sees it too.
fn seqmap_file(seqmap: &[(u64, u32)], id: u64) -> u32 {
    let (mut lower, mut higher) = (0, seqmap.len());
    while lower < higher {
        let mid = (lower + higher) / 2;
        if id == seqmap[mid].0 {
            return seqmap[mid].1;
        }
        if id < seqmap[mid].0 {
            higher = mid;
            continue;
        }
        if lower + 1 >= seqmap.len()
            || (seqmap[lower].0 < id && seqmap[lower + 1].0 > id)
            || mid == lower
        {
            return seqmap[lower].1;
        }
        lower = mid;
    }
    seqmap[lower.min(seqmap.len() - 1)].1
}

fn file_header(magic: &[u8; 4], mode: u8, id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_HEADER_LEN);
    out.extend_from_slice(magic);
    out.push(FORMAT_VERSION);
    out.push(mode);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(now() as u64).to_le_bytes());
    let len = if magic == INDEX_MAGIC {
        qsfs::layout::INDEX_HEADER_LEN
    } else {
        qsfs::layout::DATA_HEADER_LEN
    };
    out.resize(len as usize, 0);
    out
}

fn index_record(flags: u8, key: &[u8], entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_RECORD_LEN + key.len());
    out.push(flags);
    out.push(key.len() as u8);
    out.extend_from_slice(&entry.data_id.to_le_bytes());
    out.extend_from_slice(&entry.data_offset.to_le_bytes());
    out.extend_from_slice(&entry.length.to_le_bytes());
    out.extend_from_slice(&entry.crc.to_le_bytes());
    out.extend_from_slice(&entry.timestamp.to_le_bytes());
    out.extend_from_slice(key);
    out
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut buf = [0u8; 4];
    buf.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(buf)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(buf)
}

/// One record read back from an index file.
struct Record {
    flags: u8,
    key: Vec<u8>,
    entry: Entry,
}

/// Reads every record of an index file; `None` when the file does not exist.
fn read_index_file(path: &str, id: u32) -> io::Result<Option<Vec<Record>>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            DISK.index_read_failed.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
    };
    count(&DISK.index_read_bytes, bytes.len());
    if bytes.is_empty() {
        return Ok(Some(Vec::new()));
    }
    if bytes.len() < FILE_HEADER_LEN || &bytes[..4] != INDEX_MAGIC {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("{path}: not a stand-in index file"),
        ));
    }
    let mut records = Vec::new();
    let mut at = qsfs::layout::INDEX_HEADER_LEN as usize;
    while at + INDEX_RECORD_LEN <= bytes.len() {
        let head = &bytes[at..at + INDEX_RECORD_LEN];
        let key_len = usize::from(head[1]);
        if at + INDEX_RECORD_LEN + key_len > bytes.len() {
            eprintln!("[-] index: {path}: truncated record at {at}, ignoring the rest");
            break;
        }
        let key = bytes[at + INDEX_RECORD_LEN..at + INDEX_RECORD_LEN + key_len].to_vec();
        records.push(Record {
            flags: head[0],
            key,
            entry: Entry {
                data_id: le_u32(&head[2..]),
                data_offset: le_u64(&head[6..]),
                length: le_u32(&head[14..]),
                crc: le_u32(&head[18..]),
                timestamp: le_u64(&head[22..]),
                index_id: id,
                index_offset: at as u64,
            },
        });
        at += INDEX_RECORD_LEN + key_len;
    }
    Ok(Some(records))
}

/// Opens (creating it with a header if new or empty) an append-only file; returns its size.
fn open_append(path: &str, header: &[u8]) -> io::Result<(File, u64)> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut len = file.metadata()?.len();
    if len == 0 {
        file.write_all(header)?;
        len = header.len() as u64;
    }
    Ok((file, len))
}

/// The descriptor fields.
struct Descriptor {
    public: bool,
    worm: bool,
    mode: Mode,
    maxsize: u64,
    password: Option<String>,
}

fn parse_descriptor(bytes: &[u8]) -> Option<Descriptor> {
    if bytes.len() < 17 || &bytes[..4] != DESCRIPTOR_MAGIC || bytes[4] != FORMAT_VERSION {
        return None;
    }
    let pass_len = usize::from(bytes[15]);
    let name_len = usize::from(bytes[16]);
    let password = bytes.get(17 + name_len..17 + name_len + pass_len)?;
    Some(Descriptor {
        public: bytes[5] & 1 != 0,
        worm: bytes[5] & 2 != 0,
        mode: Mode::from_byte(bytes[6]),
        maxsize: le_u64(&bytes[7..]),
        password: (pass_len > 0).then(|| String::from_utf8_lossy(password).into_owned()),
    })
}

impl Namespace {
    /// Loads the namespace from disk, creating whatever is missing (0-db's `namespace_load`).
    /// `forced_mode` is the global `--mode`.
    pub fn load(
        index_root: &str,
        data_root: &str,
        name: &str,
        forced_mode: Option<Mode>,
        options: Options,
    ) -> io::Result<Namespace> {
        let index_dir = format!("{index_root}/{name}");
        let data_dir = format!("{data_root}/{name}");
        fs::create_dir_all(&index_dir)?;
        fs::create_dir_all(&data_dir)?;

        // New namespaces are public, without password, limit or worm, in user-key mode.
        let fresh = || Descriptor {
            public: true,
            worm: false,
            mode: Mode::User,
            maxsize: 0,
            password: None,
        };
        let descriptor_path = format!("{index_dir}/zdb-namespace");
        let descriptor = match fs::read(&descriptor_path) {
            Ok(bytes) if !bytes.is_empty() => parse_descriptor(&bytes).ok_or_else(|| {
                io::Error::new(
                    ErrorKind::InvalidData,
                    format!("{descriptor_path}: unsupported descriptor"),
                )
            })?,
            Ok(_) => fresh(),
            Err(e) if e.kind() == ErrorKind::NotFound => fresh(),
            Err(e) => return Err(e),
        };
        let mode = forced_mode.unwrap_or(descriptor.mode);

        let mut last = 0u32;
        for dirent in fs::read_dir(&index_dir)? {
            let file_name = dirent?.file_name();
            let file_name = file_name.to_string_lossy();
            if let Some(digits) = file_name.strip_prefix('i') {
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    if let Ok(id) = digits.parse::<u32>() {
                        last = last.max(id);
                    }
                }
            }
        }

        let mut keys: HashMap<Vec<u8>, Entry> = HashMap::new();
        let mut slots = Vec::new();
        let mut seqmap = Vec::new();
        let mut next_entry = 0u64;
        let mut index_bytes = 0u64;
        for id in 0..=last {
            let path = format!("{index_dir}/i{id}");
            let Some(records) = read_index_file(&path, id)? else {
                if id != last {
                    eprintln!("[-] index: {path} is missing, its keys are lost");
                }
                continue;
            };
            if id != last {
                index_bytes += fs::metadata(&path)?.len();
            }
            // As 0-db's loader: a file is mapped at its first entry, one without none is not.
            if !records.is_empty() {
                seqmap.push((next_entry, id));
            }
            for record in records {
                next_entry += 1;
                let live = record.flags & FLAG_DELETED == 0;
                match mode {
                    Mode::User if live => {
                        keys.insert(record.key, record.entry);
                    }
                    Mode::User => {}
                    Mode::Seq => slots.push(Slot {
                        index_id: id,
                        index_offset: record.entry.index_offset,
                        entry: live.then_some(record.entry),
                    }),
                }
            }
        }

        if seqmap.is_empty() {
            seqmap.push((0, 0));
        }
        let index_path = format!("{index_dir}/i{last}");
        let (index_file, index_active_len) =
            open_append(&index_path, &file_header(INDEX_MAGIC, mode.byte(), last))?;
        index_bytes += index_active_len;
        let (data_file, data_offset) = open_append(
            &format!("{data_dir}/d{last}"),
            &file_header(DATA_MAGIC, 0, last),
        )?;

        let live: Vec<&Entry> = match mode {
            Mode::User => keys.values().collect(),
            Mode::Seq => slots.iter().filter_map(|s| s.entry.as_ref()).collect(),
        };
        let entries = live.len() as u64;
        let datasize = live.iter().map(|e| u64::from(e.length)).sum();

        let mut namespace = Namespace {
            name: name.to_string(),
            password: descriptor.password,
            public: descriptor.public,
            worm: descriptor.worm,
            maxsize: descriptor.maxsize,
            mode,
            lock: Lock::Unlocked,
            index_dir,
            data_dir,
            file_id: last,
            index_file,
            data_file,
            index_active_len,
            data_offset,
            index_bytes,
            keys,
            slots,
            seqmap,
            next_entry,
            dirty: BTreeSet::new(),
            entries,
            datasize,
            updated_since_jump: false,
            last_jump: Instant::now(),
            last_sync: Instant::now(),
            options,
            stats: IoStats::default(),
        };
        if fs::metadata(&descriptor_path).map_or(true, |m| m.len() == 0) {
            namespace.commit()?;
        }
        namespace.publish();
        println!(
            "[+] namespace: [{name}] loaded: {entries} entries, active files i{last}/d{last}, mode {}",
            mode.name()
        );
        Ok(namespace)
    }

    /// Updates this namespace's entry in [`CLOSING`].
    pub fn publish(&self) {
        let info = [
            self.name.clone(),
            self.index_path(self.file_id),
            self.data_path(self.file_id),
            self.dirty_list(),
        ];
        let mut closing = CLOSING.lock().unwrap_or_else(PoisonError::into_inner);
        match closing.iter_mut().find(|c| c[0] == self.name) {
            Some(entry) => *entry = info,
            None => closing.push(info),
        }
    }

    pub fn index_path(&self, id: u32) -> String {
        format!("{}/i{id}", self.index_dir)
    }

    pub fn data_path(&self, id: u32) -> String {
        format!("{}/d{id}", self.data_dir)
    }

    /// Writes the descriptor.
    pub fn commit(&mut self) -> io::Result<()> {
        let password = self.password.as_deref().unwrap_or("").as_bytes();
        let name = self.name.as_bytes();
        let mut out = Vec::new();
        out.extend_from_slice(DESCRIPTOR_MAGIC);
        out.push(FORMAT_VERSION);
        out.push(u8::from(self.public) | (u8::from(self.worm) << 1));
        out.push(self.mode.byte());
        out.extend_from_slice(&self.maxsize.to_le_bytes());
        out.push(password.len().min(255) as u8);
        out.push(name.len().min(255) as u8);
        out.extend_from_slice(&name[..name.len().min(255)]);
        out.extend_from_slice(&password[..password.len().min(255)]);
        let mut file = File::create(format!("{}/zdb-namespace", self.index_dir))?;
        file.write_all(&out)?;
        file.sync_all()
    }

    /// No key was ever written (the mode may still change).
    pub fn is_fresh(&self) -> bool {
        self.next_entry == 0 && self.file_id == 0
    }

    /// Switches the mode of a fresh namespace (its active index holds only the header).
    pub fn set_mode(&mut self, mode: Mode) -> io::Result<()> {
        self.mode = mode;
        self.index_file.set_len(0)?;
        let header = file_header(INDEX_MAGIC, mode.byte(), self.file_id);
        self.index_file.write_all(&header)?;
        self.index_bytes = self.index_bytes - self.index_active_len + header.len() as u64;
        self.index_active_len = header.len() as u64;
        Ok(())
    }

    /// The live entry of a key: any key in user mode, an 8-byte little-endian id in sequential mode.
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        match self.mode {
            Mode::User => self.keys.get(key).cloned(),
            Mode::Seq => {
                let id: [u8; 8] = key.try_into().ok()?;
                let id = u64::from_le_bytes(id);
                let slot = self.slots.get(usize::try_from(id).ok()?)?;
                // 0-db finds the record in the file its seqmap names; another file holds
                // something else there, or nothing.
                if seqmap_file(&self.seqmap, id) != slot.index_id {
                    eprintln!("[-] index: seqmap: id {id} resolves to another index file");
                    return None;
                }
                slot.entry.clone()
            }
        }
    }

    fn note_index_error(&mut self) {
        self.stats.index_errors += 1;
        self.stats.index_error_last = now();
        DISK.index_write_failed.fetch_add(1, Ordering::Relaxed);
    }

    fn note_data_error(&mut self, write: bool) {
        self.stats.data_errors += 1;
        self.stats.data_error_last = now();
        let counter = if write {
            &DISK.data_write_failed
        } else {
            &DISK.data_read_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `--sync` syncs every write; `--synctime N` syncs a write made more than N seconds after
    /// the last sync (0-db: `time(NULL) - lastsync > synctime`).
    fn sync_check(&mut self) {
        let due =
            self.options.synctime > 0 && self.last_sync.elapsed().as_secs() > self.options.synctime;
        if self.options.sync || due {
            self.flush();
        }
    }

    /// fsyncs the active files.
    pub fn flush(&mut self) {
        let _ = self.index_file.sync_all();
        let _ = self.data_file.sync_all();
        self.last_sync = Instant::now();
    }

    fn append_data(
        &mut self,
        flags: u8,
        key: &[u8],
        value: &[u8],
        crc: u32,
        timestamp: u64,
    ) -> io::Result<u64> {
        let mut out = Vec::with_capacity(DATA_RECORD_LEN + key.len() + value.len());
        out.push(flags);
        out.push(key.len() as u8);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        if let Err(e) = self.data_file.write_all(&out) {
            self.note_data_error(true);
            return Err(e);
        }
        count(&DISK.data_write_bytes, out.len());
        let offset = self.data_offset;
        self.data_offset += out.len() as u64;
        self.sync_check();
        Ok(offset)
    }

    fn append_index(&mut self, flags: u8, key: &[u8], entry: &Entry) -> io::Result<u64> {
        let record = index_record(flags, key, entry);
        if let Err(e) = self.index_file.write_all(&record) {
            self.note_index_error();
            return Err(e);
        }
        count(&DISK.index_write_bytes, record.len());
        let offset = self.index_active_len;
        self.index_active_len += record.len() as u64;
        self.index_bytes += record.len() as u64;
        self.updated_since_jump = true;
        self.sync_check();
        Ok(offset)
    }

    /// Overwrites bytes of an index record in place (any file) and marks older files dirty.
    fn rewrite_index(&mut self, id: u32, offset: u64, bytes: &[u8]) -> io::Result<()> {
        // A separate handle: positioned writes on an O_APPEND fd would append on Linux.
        let result = OpenOptions::new()
            .write(true)
            .open(self.index_path(id))
            .and_then(|f| {
                f.write_all_at(bytes, offset)?;
                if self.options.sync {
                    f.sync_all()?;
                }
                Ok(())
            });
        if let Err(e) = result {
            self.note_index_error();
            return Err(e);
        }
        count(&DISK.index_write_bytes, bytes.len());
        if id != self.file_id && self.dirty.insert(id) {
            self.publish();
        }
        self.updated_since_jump = true;
        Ok(())
    }

    /// Stores a value. User mode: `key` is the key; an existing entry is flagged in its index
    /// file and a new record appended. Sequential mode: `existing` is the entry of `key` (an
    /// update) or `None` (a new id); as 0-db does, an update appends a flagged copy of the
    /// previous record (which uses up an id) and rewrites the id's own record in place.
    /// Returns the key to answer.
    pub fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        timestamp: u64,
        existing: Option<Entry>,
    ) -> io::Result<Vec<u8>> {
        let crc = crc32(value);
        let length = value.len() as u32;
        match self.mode {
            Mode::User => {
                let data_offset = self.append_data(0, key, value, crc, timestamp)?;
                if let Some(old) = &existing {
                    self.rewrite_index(old.index_id, old.index_offset, &[FLAG_DELETED])?;
                    self.entries -= 1;
                    self.datasize -= u64::from(old.length);
                    self.keys.remove(key);
                }
                let mut entry = Entry {
                    data_id: self.file_id,
                    data_offset,
                    length,
                    crc,
                    timestamp,
                    index_id: self.file_id,
                    index_offset: 0,
                };
                entry.index_offset = self.append_index(0, key, &entry)?;
                self.next_entry += 1;
                self.entries += 1;
                self.datasize += u64::from(length);
                self.keys.insert(key.to_vec(), entry);
                Ok(key.to_vec())
            }
            Mode::Seq => {
                let id = match &existing {
                    Some(_) => le_u64(key),
                    None => self.slots.len() as u64,
                };
                let key = id.to_le_bytes();
                let data_offset = self.append_data(0, &key, value, crc, timestamp)?;
                let mut entry = Entry {
                    data_id: self.file_id,
                    data_offset,
                    length,
                    crc,
                    timestamp,
                    index_id: self.file_id,
                    index_offset: 0,
                };
                match existing {
                    None => {
                        entry.index_offset = self.append_index(0, &key, &entry)?;
                        self.slots.push(Slot {
                            index_id: entry.index_id,
                            index_offset: entry.index_offset,
                            entry: Some(entry),
                        });
                        self.entries += 1;
                    }
                    Some(old) => {
                        let copy_offset = self.append_index(FLAG_DELETED, &key, &old)?;
                        self.slots.push(Slot {
                            index_id: self.file_id,
                            index_offset: copy_offset,
                            entry: None,
                        });
                        entry.index_id = old.index_id;
                        entry.index_offset = old.index_offset;
                        self.rewrite_index(
                            old.index_id,
                            old.index_offset,
                            &index_record(0, &key, &entry),
                        )?;
                        self.datasize -= u64::from(old.length);
                        if let Some(slot) = self.slots.get_mut(id as usize) {
                            slot.entry = Some(entry);
                        }
                    }
                }
                self.next_entry += 1;
                self.datasize += u64::from(length);
                Ok(key.to_vec())
            }
        }
    }

    /// Deletes a live key: a tombstone in the data file, the index record flagged in place.
    pub fn delete(&mut self, key: &[u8], entry: &Entry, timestamp: u64) -> io::Result<()> {
        self.append_data(FLAG_DELETED, key, &[], 0, timestamp)?;
        self.rewrite_index(entry.index_id, entry.index_offset, &[FLAG_DELETED])?;
        match self.mode {
            Mode::User => {
                self.keys.remove(key);
            }
            Mode::Seq => {
                if let Some(slot) = self
                    .slots
                    .iter_mut()
                    .find(|s| s.index_id == entry.index_id && s.index_offset == entry.index_offset)
                {
                    slot.entry = None;
                }
            }
        }
        self.entries -= 1;
        self.datasize -= u64::from(entry.length);
        Ok(())
    }

    /// Reads a value. A data file that is not on disk runs the blocking `missing-data` hook
    /// with its full path; exit 0 means "restored" and the open is retried once.
    pub fn read(&mut self, hooks: &mut Hooks, entry: &Entry) -> Result<Vec<u8>, ReadError> {
        let path = self.data_path(entry.data_id);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                eprintln!("[-] data: {path}: missing");
                if hooks.run_wait("missing-data", std::slice::from_ref(&path)) != Some(0) {
                    return Err(ReadError::Missing);
                }
                File::open(&path).map_err(|_| ReadError::Missing)?
            }
            Err(_) => {
                self.note_data_error(false);
                return Err(ReadError::Io);
            }
        };
        let mut head = [0u8; DATA_RECORD_LEN];
        let result = file
            .read_exact_at(&mut head, entry.data_offset)
            .and_then(|()| {
                let key_len = u64::from(head[1]);
                if le_u32(&head[2..]) != entry.length {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        "data record does not match the index",
                    ));
                }
                let mut value = vec![0u8; entry.length as usize];
                file.read_exact_at(
                    &mut value,
                    entry.data_offset + DATA_RECORD_LEN as u64 + key_len,
                )?;
                Ok(value)
            });
        match result {
            Ok(value) => {
                count(&DISK.data_read_bytes, value.len() + DATA_RECORD_LEN);
                Ok(value)
            }
            Err(e) => {
                eprintln!("[-] data: {path}: read at {}: {e}", entry.data_offset);
                self.note_data_error(false);
                Err(ReadError::Io)
            }
        }
    }

    /// Moves to `i(N+1)`/`d(N+1)`: `jump-index <old> <new> <dirty>` (blocking; exit 0 clears
    /// the dirty list), then `jump-data <old> <new>` (not waited for).
    pub fn jump(&mut self, hooks: &mut Hooks) -> io::Result<()> {
        let old_index = self.index_path(self.file_id);
        let old_data = self.data_path(self.file_id);
        if self.options.secure {
            self.flush();
        }
        let next = self.file_id + 1;
        let new_index = self.index_path(next);
        let (index_file, index_len) = open_append(
            &new_index,
            &file_header(INDEX_MAGIC, self.mode.byte(), next),
        )?;
        self.file_id = next;
        self.seqmap.push((self.next_entry, next));
        self.index_file = index_file;
        self.index_active_len = index_len;
        self.index_bytes += index_len;
        println!("[+] index: jumping to {new_index}");
        // As in 0-db, the index already points to the new file while jump-index runs.
        self.publish();

        let dirty = self.dirty_list();
        if hooks.run_wait("jump-index", &[old_index, new_index, dirty]) == Some(0) {
            self.dirty.clear();
        }

        let new_data = self.data_path(next);
        let (data_file, data_len) = open_append(&new_data, &file_header(DATA_MAGIC, 0, next))?;
        self.data_file = data_file;
        self.data_offset = data_len;
        self.publish();
        hooks.run_async("jump-data", &[old_data, new_data]);

        self.updated_since_jump = false;
        self.last_jump = Instant::now();
        Ok(())
    }

    /// The dirty index ids as hooks get them: separated by single spaces, no trailing space
    /// (`"0 3 7"`, what the real zdb 2.0.7 passes; empty when nothing is dirty).
    pub fn dirty_list(&self) -> String {
        self.dirty
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Removes the namespace's directories (`NSDEL`).
    pub fn remove_files(&self) -> io::Result<()> {
        fs::remove_dir_all(&self.index_dir)?;
        fs::remove_dir_all(&self.data_dir)
    }
}
