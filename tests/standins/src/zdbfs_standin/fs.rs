//! The filesystem: every inode in memory, a per-file block cache, the dirty-inode cache that
//! zdbfs 0.1.11 does not flush on fsync, and the FUSE handlers (fuser 0.18).

use crate::backend::{Conn, Error as ZdbError};
use crate::inode::{
    check_header, encode_header, Inode, Kind, Time, BLOCK_SIZE, FIRST_COOKIE, NAME_MAX, ROOT,
};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the kernel may cache attributes and entries.
const TTL: Duration = Duration::from_secs(1);
const BLOCK: u64 = BLOCK_SIZE as u64;
/// Block and fragment sizes reported by statfs (zdbfs: `f_bsize` its block size, counts in
/// 1 KiB fragments).
const STATFS_BSIZE: u64 = BLOCK_SIZE as u64;
const STATFS_FRSIZE: u64 = 1024;
/// `f_files` of zdbfs's statfs; `f_ffree` is this minus the entries of `zdbfs-meta`.
const STATFS_FILES: u64 = 0xff_ffff_ffff;
/// `ZDBFS_INOROOT_BRANCHES`: the hash branches of zdbfs's inode cache, what `cache_branches`
/// always says.
const CACHE_BRANCHES: u64 = 1024;
/// zdbfs's 1 s loop writes the inodes idle for this long (`zdbfs_cache_sync`).
pub const IDLE_WRITE: Duration = Duration::from_secs(10);

/// `_IOR(type, nr, size)` on Linux.
const fn ior(kind: u8, nr: u8, size: usize) -> u32 {
    (2 << 30) | ((size as u32) << 16) | ((kind as u32) << 8) | nr as u32
}

/// Number of `size_t` fields in zdbfs's `stats_t` (version 2).
pub const STATS_FIELDS: usize = 30;
pub const STATS_VERSION: u64 = 2;
/// `ZDBFS_IOCTL_SNAPSHOT = _IOR('E', 0, uint64_t)`
pub const IOCTL_SNAPSHOT: u32 = ior(b'E', 0, 8);
/// `ZDBFS_IOCTL_STATISTICS = _IOR('E', 1, stats_t)`
pub const IOCTL_STATISTICS: u32 = ior(b'E', 1, STATS_FIELDS * 8);

/// The counters of `stats_t`; the cache gauges are computed when asked for.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub fuse_reqs: u64,
    pub cache_hit: u64,
    pub cache_miss: u64,
    pub cache_full: u64,
    pub cache_linear_flush: u64,
    pub cache_random_flush: u64,
    pub syscall_getattr: u64,
    pub syscall_setattr: u64,
    pub syscall_create: u64,
    pub syscall_readdir: u64,
    pub syscall_open: u64,
    pub syscall_read: u64,
    pub syscall_write: u64,
    pub syscall_mkdir: u64,
    pub syscall_unlink: u64,
    pub syscall_rmdir: u64,
    pub syscall_rename: u64,
    pub syscall_link: u64,
    pub syscall_symlink: u64,
    pub syscall_statsfs: u64,
    pub syscall_ioctl: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub errors: u64,
}

/// The request kinds, for the counters and the operation log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Releasedir,
    Fsyncdir,
    Statfs,
    Access,
    Create,
    Ioctl,
    Xattr,
}

/// One readdir entry: inode, offset of the next entry, type, name.
pub type DirEntry = (u64, u64, FileType, Vec<u8>);

/// Mount settings that matter to the filesystem.
pub struct Settings {
    /// `size=`: bytes reported by statfs.
    pub size: u64,
    /// `cachesize=`: blocks a file may hold in memory, and dirty inodes the cache may hold.
    pub cachesize: usize,
    /// `nocache`: write every change through at once.
    pub nocache: bool,
    /// `logfile=` (or `-d`): one line per request.
    pub log: Option<Box<dyn Write + Send>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockState {
    /// Same as in `zdbfs-data` (or a hole never written).
    Clean,
    /// Newer than `zdbfs-data`.
    Dirty,
    /// Newer than `zdbfs-data`, moved out of memory to this key of `zdbfs-temp`.
    Offloaded(u64),
}

struct Cached {
    data: Vec<u8>,
    state: BlockState,
    touched: Instant,
}

struct Node {
    inode: Inode,
    /// Block index → cached block.
    cache: std::collections::BTreeMap<u64, Cached>,
    /// Open file handles.
    open: u32,
    /// False once unlinked (kept while open).
    linked: bool,
    /// Directories: how many entries are directories (for nlink).
    subdirs: u32,
}

impl Node {
    fn new(inode: Inode) -> Node {
        Node {
            inode,
            cache: Default::default(),
            open: 0,
            linked: true,
            subdirs: 0,
        }
    }

    fn online(&self) -> usize {
        self.cache
            .values()
            .filter(|c| !matches!(c.state, BlockState::Offloaded(_)))
            .count()
    }
}

/// Everything the filesystem knows. One mutex around it: requests run one at a time, like
/// zdbfs's single-threaded loop.
pub struct State {
    meta: Conn,
    data: Conn,
    temp: Conn,
    nodes: HashMap<u64, Node>,
    /// Inodes changed in memory and not yet written to `zdbfs-meta`.
    dirty: BTreeSet<u64>,
    /// Inodes in zdbfs's inode cache (every inode is in memory here, but one zdbfs dropped from
    /// its cache, with the snapshot ioctl, must be read from zdb again on its next use).
    cached: HashSet<u64>,
    /// The last request on each inode (zdbfs's cache `atime`).
    used: HashMap<u64, Instant>,
    /// Files whose blocks could not be written at release: zdbfs crashes at their next use.
    poisoned: HashSet<u64>,
    /// When the last request came, and how many came since the 1 s loop last ran: zdbfs runs
    /// it when a second passes without a request (its epoll timeout), or after 8192 requests.
    last_request: Instant,
    last_sync: Instant,
    requests_since_sync: u64,
    /// Keys of `zdbfs-meta` and `zdbfs-data` to delete once the metadata that no longer
    /// references them is in zdb (so a crash never leaves a reference to a deleted key).
    doomed_meta: Vec<u64>,
    doomed_data: Vec<u64>,
    pub stats: Stats,
    settings: Settings,
}

fn zdb_errno(context: &str, e: ZdbError) -> Errno {
    eprintln!("[-] {context}: {e}");
    match e {
        ZdbError::NoSpace => Errno::ENOSPC,
        _ => Errno::EIO,
    }
}

fn check_name(name: &[u8]) -> Result<(), Errno> {
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl State {
    /// Loads the filesystem from `zdbfs-meta` (creating the header and the root directory in
    /// an empty namespace). `Err` is the message to print before exiting 1.
    pub fn load(conns: [Conn; 3], settings: Settings) -> Result<State, String> {
        let [meta, data, temp] = conns;
        let mut state = State {
            meta,
            data,
            temp,
            nodes: HashMap::new(),
            dirty: BTreeSet::new(),
            cached: HashSet::new(),
            used: HashMap::new(),
            poisoned: HashSet::new(),
            last_request: Instant::now(),
            last_sync: Instant::now(),
            requests_since_sync: 0,
            doomed_meta: Vec::new(),
            doomed_data: Vec::new(),
            stats: Stats::default(),
            settings,
        };
        let fail = |what: &str, e: ZdbError| format!("metadata: {what}: {e}");
        match state.meta.get(0).map_err(|e| fail("GET header", e))? {
            Some(header) => check_header(&header)?,
            None => {
                let entries = state.meta.dbsize().map_err(|e| fail("DBSIZE", e))?;
                if entries > 0 {
                    return Err(format!(
                        "metadata: zdbfs-meta holds {entries} keys but no header in key 0"
                    ));
                }
                let key = state
                    .meta
                    .set(None, &encode_header(state.settings.size))
                    .map_err(|e| fail("SET header", e))?;
                let root = Inode::new(Kind::Dir, 0o755, 0, 0, ROOT);
                let root_key = state
                    .meta
                    .set(None, &root.encode())
                    .map_err(|e| fail("SET root", e))?;
                if key != 0 || root_key != ROOT {
                    return Err(format!(
                        "metadata: zdbfs-meta gave keys {key} and {root_key} to the header and the root, expected 0 and 1"
                    ));
                }
                println!("[+] metadata: new filesystem initialized");
            }
        }
        // Walk the tree from the root: only what is reachable from it exists.
        let mut queue = vec![ROOT];
        let mut seen = HashSet::new();
        let mut missing = HashSet::new();
        while let Some(ino) = queue.pop() {
            if !seen.insert(ino) {
                continue;
            }
            let bytes = state
                .meta
                .get(ino)
                .map_err(|e| fail(&format!("GET inode {ino}"), e))?;
            let inode = match bytes.as_deref().map(Inode::decode) {
                Some(Some(inode)) => inode,
                found => {
                    if ino == ROOT {
                        return Err("metadata: the root directory (key 1) is missing or corrupt"
                            .to_string());
                    }
                    let why = if found.is_some() {
                        "corrupt"
                    } else {
                        "missing"
                    };
                    eprintln!("[-] metadata: inode {ino} is {why}, dropping its entry");
                    missing.insert(ino);
                    continue;
                }
            };
            if inode.kind == Kind::Dir {
                queue.extend(inode.entries.iter().map(|(_, child)| child));
            }
            state.nodes.insert(ino, Node::new(inode));
        }
        // Drop entries that point nowhere, and count subdirectories.
        let kinds: HashMap<u64, Kind> = state
            .nodes
            .iter()
            .map(|(ino, node)| (*ino, node.inode.kind))
            .collect();
        for (ino, node) in state.nodes.iter_mut() {
            if node.inode.kind != Kind::Dir {
                continue;
            }
            let dangling: Vec<Vec<u8>> = node
                .inode
                .entries
                .iter()
                .filter(|(_, child)| missing.contains(child))
                .map(|(name, _)| name.to_vec())
                .collect();
            for name in &dangling {
                node.inode.entries.remove(name);
            }
            if !dangling.is_empty() {
                state.dirty.insert(*ino);
            }
            node.subdirs = node
                .inode
                .entries
                .iter()
                .filter(|(_, child)| kinds.get(child) == Some(&Kind::Dir))
                .count() as u32;
        }
        println!("[+] metadata: {} inodes loaded", state.nodes.len());
        Ok(state)
    }

    fn count(&mut self, op: Op) {
        let s = &mut self.stats;
        s.fuse_reqs += 1;
        let counter = match op {
            Op::Getattr => &mut s.syscall_getattr,
            Op::Setattr => &mut s.syscall_setattr,
            Op::Create | Op::Mknod => &mut s.syscall_create,
            Op::Readdir => &mut s.syscall_readdir,
            Op::Open => &mut s.syscall_open,
            Op::Read => &mut s.syscall_read,
            Op::Write => &mut s.syscall_write,
            Op::Mkdir => &mut s.syscall_mkdir,
            Op::Unlink => &mut s.syscall_unlink,
            Op::Rmdir => &mut s.syscall_rmdir,
            Op::Rename => &mut s.syscall_rename,
            Op::Link => &mut s.syscall_link,
            Op::Symlink => &mut s.syscall_symlink,
            Op::Statfs => &mut s.syscall_statsfs,
            Op::Ioctl => &mut s.syscall_ioctl,
            _ => return,
        };
        *counter += 1;
    }

    fn log_op<T>(&mut self, op: Op, ino: u64, result: &Result<T, Errno>) {
        if let Some(log) = self.settings.log.as_mut() {
            let outcome = match result {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("{e:?}"),
            };
            let _ = writeln!(log, "{} {op:?} ino={ino} {outcome}", unix_now());
        }
    }

    /// `stats_t` version 2, field by field.
    pub fn stats_array(&self) -> [u64; STATS_FIELDS] {
        let s = &self.stats;
        let cached = self.nodes.values().flat_map(|n| n.cache.values());
        let (blocks, bytes) =
            cached.fold((0u64, 0u64), |(n, b), c| (n + 1, b + c.data.len() as u64));
        let caching = !self.settings.nocache;
        [
            STATS_VERSION,
            s.fuse_reqs,
            s.cache_hit,
            s.cache_miss,
            s.cache_full,
            s.cache_linear_flush,
            s.cache_random_flush,
            // computed only with the cache on: cache_branches (constant), cache_branches_allocated
            // (inodes in the inode cache), cache_entries (cached inodes not yet written),
            // cache_blocks and cache_blocksize (the block cache)
            if caching { CACHE_BRANCHES } else { 0 },
            if caching { self.cached.len() as u64 } else { 0 },
            if caching { self.dirty.len() as u64 } else { 0 },
            if caching { blocks } else { 0 },
            if caching { bytes } else { 0 },
            s.syscall_getattr,
            s.syscall_setattr,
            s.syscall_create,
            s.syscall_readdir,
            s.syscall_open,
            s.syscall_read,
            s.syscall_write,
            s.syscall_mkdir,
            s.syscall_unlink,
            s.syscall_rmdir,
            s.syscall_rename,
            s.syscall_link,
            s.syscall_symlink,
            s.syscall_statsfs,
            s.syscall_ioctl,
            s.read_bytes,
            s.write_bytes,
            s.errors,
        ]
    }

    /// The statistics as text (SIGUSR1, stop).
    pub fn stats_text(&self) -> String {
        const NAMES: [&str; STATS_FIELDS] = [
            "version",
            "fuse_reqs",
            "cache_hit",
            "cache_miss",
            "cache_full",
            "cache_linear_flush",
            "cache_random_flush",
            "cache_branches",
            "cache_branches_allocated",
            "cache_entries",
            "cache_blocks",
            "cache_blocksize",
            "syscall_getattr",
            "syscall_setattr",
            "syscall_create",
            "syscall_readdir",
            "syscall_open",
            "syscall_read",
            "syscall_write",
            "syscall_mkdir",
            "syscall_unlink",
            "syscall_rmdir",
            "syscall_rename",
            "syscall_link",
            "syscall_symlink",
            "syscall_statsfs",
            "syscall_ioctl",
            "read_bytes",
            "write_bytes",
            "errors",
        ];
        let mut out = String::from("[+] stats:\n");
        for (name, value) in NAMES.iter().zip(self.stats_array()) {
            out.push_str(&format!("[+]   {name:<26}: {value}\n"));
        }
        out
    }

    // ---- lookups -------------------------------------------------------------------------

    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&Node, Errno> {
        let node = self.node(ino)?;
        if node.inode.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(node)
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let i = &node.inode;
        let (kind, size, nlink) = match i.kind {
            Kind::Dir => (FileType::Directory, 4096, 2 + node.subdirs),
            Kind::File => (FileType::RegularFile, i.size, u32::from(node.linked)),
            Kind::Symlink => (FileType::Symlink, i.target.len() as u64, 1),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: i.atime.to_system(),
            mtime: i.mtime.to_system(),
            ctime: i.ctime.to_system(),
            crtime: i.ctime.to_system(),
            kind,
            perm: i.perm,
            nlink,
            uid: i.uid,
            gid: i.gid,
            rdev: 0,
            blksize: BLOCK_SIZE as u32,
            flags: 0,
        })
    }

    fn touch_dir(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            let now = Time::now();
            node.inode.mtime = now;
            node.inode.ctime = now;
            self.dirty.insert(ino);
        }
    }

    /// After a metadata change: `nocache` writes everything through; otherwise it stays in the
    /// cache (zdbfs 0.1.11 has no limit on cached inodes: its 1 s loop writes the idle ones).
    fn after_meta_change(&mut self) -> Result<(), Errno> {
        if self.settings.nocache {
            return self.flush_all();
        }
        Ok(())
    }

    // ---- namespace operations ------------------------------------------------------------

    pub fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<FileAttr, Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let child = self
            .dir(parent)?
            .inode
            .entries
            .get(name)
            .ok_or(Errno::ENOENT)?;
        self.attr(child)
    }

    /// Creates an inode (its key is allocated in `zdbfs-meta` at once) and links it into
    /// `parent`; the parent's change stays in the cache.
    fn create_node(&mut self, parent: u64, name: &[u8], inode: Inode) -> Result<u64, Errno> {
        check_name(name)?;
        if self.dir(parent)?.inode.entries.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        let is_dir = inode.kind == Kind::Dir;
        let ino = self
            .meta
            .set(None, &inode.encode())
            .map_err(|e| zdb_errno("create: SET inode", e))?;
        self.nodes.insert(ino, Node::new(inode));
        let parent_node = self.node_mut(parent)?;
        parent_node.inode.entries.insert(name.to_vec(), ino);
        if is_dir {
            parent_node.subdirs += 1;
        }
        self.touch_dir(parent);
        self.after_meta_change()?;
        Ok(ino)
    }

    pub fn mkdir(
        &mut self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, Errno> {
        let inode = Inode::new(Kind::Dir, mode as u16, uid, gid, parent);
        let ino = self.create_node(parent, name, inode)?;
        self.attr(ino)
    }

    /// `create` (opened) and `mknod` (regular files only).
    pub fn create(
        &mut self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        open: bool,
    ) -> Result<FileAttr, Errno> {
        let format = mode & libc::S_IFMT;
        if format != 0 && format != libc::S_IFREG {
            return Err(Errno::EPERM);
        }
        let inode = Inode::new(Kind::File, mode as u16, uid, gid, parent);
        let ino = self.create_node(parent, name, inode)?;
        if open {
            self.node_mut(ino)?.open += 1;
        }
        self.attr(ino)
    }

    pub fn symlink(
        &mut self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, Errno> {
        let mut inode = Inode::new(Kind::Symlink, 0o777, uid, gid, parent);
        inode.target = target.to_vec();
        inode.size = target.len() as u64;
        let ino = self.create_node(parent, name, inode)?;
        self.attr(ino)
    }

    pub fn readlink(&mut self, ino: u64) -> Result<Vec<u8>, Errno> {
        let node = self.node(ino)?;
        if node.inode.kind != Kind::Symlink {
            return Err(Errno::EINVAL);
        }
        Ok(node.inode.target.clone())
    }

    /// Forgets an inode: removed from memory, its keys deleted after the next metadata flush.
    fn destroy(&mut self, ino: u64) {
        let Some(node) = self.nodes.remove(&ino) else {
            return;
        };
        self.dirty.remove(&ino);
        self.doomed_meta.push(ino);
        self.doomed_data
            .extend(node.inode.blocks.iter().flatten().copied());
        for cached in node.cache.values() {
            if let BlockState::Offloaded(key) = cached.state {
                if let Err(e) = self.temp.del(key) {
                    eprintln!("[-] cache: DEL temporary block {key}: {e}");
                }
            }
        }
    }

    /// The inode lost its name: destroyed now, or at its last release when still open.
    fn drop_link(&mut self, ino: u64) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.linked = false;
        if node.open == 0 || node.inode.kind == Kind::Dir {
            self.destroy(ino);
        } else {
            self.dirty.remove(&ino);
        }
    }

    pub fn unlink(&mut self, parent: u64, name: &[u8]) -> Result<(), Errno> {
        let child = self
            .dir(parent)?
            .inode
            .entries
            .get(name)
            .ok_or(Errno::ENOENT)?;
        if self.node(child)?.inode.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        self.node_mut(parent)?.inode.entries.remove(name);
        self.touch_dir(parent);
        self.drop_link(child);
        self.after_meta_change()
    }

    pub fn rmdir(&mut self, parent: u64, name: &[u8]) -> Result<(), Errno> {
        let child = self
            .dir(parent)?
            .inode
            .entries
            .get(name)
            .ok_or(Errno::ENOENT)?;
        let node = self.node(child)?;
        if node.inode.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        // zdbfs 0.1.11 keeps a directory's entries in 128 lists (by the sum of a name's bytes
        // mod 128; `.` and `..` are entries too) and rmdir looks only at the list the removed
        // *name* falls in, in the removed directory: more than 2 entries there is ENOTEMPTY,
        // otherwise the directory goes, entries and all.
        let list = dirlist_id(name);
        let in_list = node
            .inode
            .entries
            .iter()
            .filter(|(entry, _)| dirlist_id(entry) == list)
            .count()
            + usize::from(list == dirlist_id(b"."))
            + usize::from(list == dirlist_id(b".."));
        if in_list > 2 {
            return Err(Errno::ENOTEMPTY);
        }
        let orphans: Vec<u64> = node.inode.entries.iter().map(|(_, ino)| ino).collect();
        let parent_node = self.node_mut(parent)?;
        parent_node.inode.entries.remove(name);
        parent_node.subdirs = parent_node.subdirs.saturating_sub(1);
        self.touch_dir(parent);
        self.drop_link(child);
        // what was in it is unreachable now (zdbfs leaves it in zdb)
        let mut queue = orphans;
        while let Some(ino) = queue.pop() {
            if let Some(node) = self.nodes.remove(&ino) {
                if node.inode.kind == Kind::Dir {
                    queue.extend(node.inode.entries.iter().map(|(_, child)| child));
                }
                self.dirty.remove(&ino);
            }
        }
        self.after_meta_change()
    }

    /// Is `ancestor` `ino` or one of its ancestors?
    fn is_ancestor(&self, ancestor: u64, mut ino: u64) -> bool {
        for _ in 0..4096 {
            if ino == ancestor {
                return true;
            }
            match self.nodes.get(&ino) {
                Some(node) if ino != ROOT => ino = node.inode.parent,
                _ => return false,
            }
        }
        false
    }

    pub fn rename(
        &mut self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        check_name(newname)?;
        let source = self
            .dir(parent)?
            .inode
            .entries
            .get(name)
            .ok_or(Errno::ENOENT)?;
        let target = self.dir(newparent)?.inode.entries.get(newname);
        if parent == newparent && name == newname {
            return Ok(());
        }
        let source_is_dir = self.node(source)?.inode.kind == Kind::Dir;
        if source_is_dir && self.is_ancestor(source, newparent) {
            return Err(Errno::EINVAL);
        }
        if let Some(target) = target {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if target == source {
                return Ok(());
            }
            let target_node = self.node(target)?;
            match (source_is_dir, target_node.inode.kind == Kind::Dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !target_node.inode.entries.is_empty() => {
                    return Err(Errno::ENOTEMPTY)
                }
                _ => {}
            }
            let newparent_node = self.node_mut(newparent)?;
            newparent_node.inode.entries.remove(newname);
            if source_is_dir {
                newparent_node.subdirs = newparent_node.subdirs.saturating_sub(1);
            }
            self.drop_link(target);
        }
        let parent_node = self.node_mut(parent)?;
        parent_node.inode.entries.remove(name);
        if source_is_dir {
            parent_node.subdirs = parent_node.subdirs.saturating_sub(1);
        }
        let newparent_node = self.node_mut(newparent)?;
        newparent_node
            .inode
            .entries
            .insert(newname.to_vec(), source);
        if source_is_dir {
            newparent_node.subdirs += 1;
        }
        let moved = self.node_mut(source)?;
        moved.inode.ctime = Time::now();
        if source_is_dir {
            moved.inode.parent = newparent;
        }
        self.dirty.insert(source);
        self.touch_dir(parent);
        self.touch_dir(newparent);
        self.after_meta_change()
    }

    pub fn getattr(&mut self, ino: u64) -> Result<FileAttr, Errno> {
        self.attr(ino)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr, Errno> {
        let kind = self.node(ino)?.inode.kind;
        if let Some(size) = size {
            match kind {
                Kind::File => self.truncate(ino, size)?,
                Kind::Dir => return Err(Errno::EISDIR),
                Kind::Symlink => return Err(Errno::EINVAL),
            }
        }
        let resolve = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => Time::from_system(t),
            TimeOrNow::Now => Time::now(),
        };
        let node = self.node_mut(ino)?;
        let i = &mut node.inode;
        if let Some(mode) = mode {
            i.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = uid {
            i.uid = uid;
        }
        if let Some(gid) = gid {
            i.gid = gid;
        }
        if let Some(atime) = atime {
            i.atime = resolve(atime);
        }
        if let Some(mtime) = mtime {
            i.mtime = resolve(mtime);
        }
        i.ctime = Time::now();
        self.dirty.insert(ino);
        self.after_meta_change()?;
        self.attr(ino)
    }

    pub fn readdir(&mut self, ino: u64, offset: u64) -> Result<Vec<DirEntry>, Errno> {
        let dir = self.dir(ino)?;
        let mut out = Vec::new();
        if offset < 1 {
            out.push((ino, 1, FileType::Directory, b".".to_vec()));
        }
        if offset < 2 {
            out.push((dir.inode.parent, 2, FileType::Directory, b"..".to_vec()));
        }
        for (cookie, name, child) in dir
            .inode
            .entries
            .after(offset.max(FIRST_COOKIE - 1))
            .take(512)
        {
            let kind = match self.nodes.get(&child).map(|n| n.inode.kind) {
                Some(Kind::Dir) => FileType::Directory,
                Some(Kind::File) => FileType::RegularFile,
                Some(Kind::Symlink) => FileType::Symlink,
                None => continue,
            };
            out.push((child, cookie, kind, name.to_vec()));
        }
        Ok(out)
    }

    /// zdbfs: NSINFO of `zdbfs-meta` then of `zdbfs-data`; free = size - data bytes.
    pub fn statfs(&mut self) -> Result<[u64; 5], Errno> {
        let meta = self
            .meta
            .nsinfo()
            .map_err(|e| zdb_errno("statfs: NSINFO", e))?;
        let info = self
            .data
            .nsinfo()
            .map_err(|e| zdb_errno("statfs: NSINFO", e))?;
        let size = self.settings.size;
        let free = size.saturating_sub(info.data_size_bytes) / STATFS_FRSIZE;
        Ok([
            size / STATFS_FRSIZE,
            free,
            free,
            STATFS_FILES,
            STATFS_FILES.saturating_sub(meta.entries),
        ])
    }

    // ---- the block cache -----------------------------------------------------------------

    fn file(&self, ino: u64) -> Result<&Node, Errno> {
        let node = self.node(ino)?;
        match node.inode.kind {
            Kind::File => Ok(node),
            Kind::Dir => Err(Errno::EISDIR),
            Kind::Symlink => Err(Errno::EINVAL),
        }
    }

    /// Makes room for one more block of `ino` in memory, as zdbfs's `zdbfs_cache_block_delegate`
    /// when a file holds `cachesize` blocks: if the cached blocks are a linear run (no gap,
    /// none moved to `zdbfs-temp`), all but the last are written to `zdbfs-data` and leave
    /// memory (`cache_linear_flush`); otherwise a clean block is dropped, or the least recently
    /// used one is moved to `zdbfs-temp` (`cache_random_flush`).
    fn make_room(&mut self, ino: u64) -> Result<(), Errno> {
        let limit = self.settings.cachesize.max(1);
        loop {
            let (linear, clean, dirty, last) = {
                let node = self.node(ino)?;
                if node.online() < limit {
                    return Ok(());
                }
                let first = node.cache.keys().next().copied().unwrap_or(0);
                let linear = node
                    .cache
                    .keys()
                    .copied()
                    .eq(first..first + node.cache.len() as u64)
                    && node
                        .cache
                        .values()
                        .all(|c| !matches!(c.state, BlockState::Offloaded(_)));
                (
                    linear,
                    oldest(node, BlockState::Clean),
                    oldest(node, BlockState::Dirty),
                    node.cache.keys().next_back().copied(),
                )
            };
            if linear && limit > 1 {
                let run: Vec<u64> = self
                    .node(ino)?
                    .cache
                    .keys()
                    .copied()
                    .filter(|idx| Some(*idx) != last)
                    .collect();
                for idx in &run {
                    self.flush_block(ino, *idx)?;
                }
                let node = self.node_mut(ino)?;
                for idx in &run {
                    node.cache.remove(idx);
                }
                self.stats.cache_linear_flush += 1;
                continue;
            }
            if let Some(idx) = clean {
                self.node_mut(ino)?.cache.remove(&idx);
                continue;
            }
            let Some(idx) = dirty else {
                return Ok(());
            };
            let State { nodes, temp, .. } = self;
            let cached = nodes
                .get_mut(&ino)
                .and_then(|n| n.cache.get_mut(&idx))
                .ok_or(Errno::EIO)?;
            let key = temp
                .set(None, &cached.data)
                .map_err(|e| zdb_errno("cache: offload block to zdbfs-temp", e))?;
            cached.state = BlockState::Offloaded(key);
            cached.data = Vec::new();
            self.stats.cache_random_flush += 1;
        }
    }

    /// Brings an offloaded block back from `zdbfs-temp`.
    fn restore(&mut self, ino: u64, idx: u64) -> Result<(), Errno> {
        let Some(BlockState::Offloaded(key)) = self
            .nodes
            .get(&ino)
            .and_then(|n| n.cache.get(&idx))
            .map(|c| c.state)
        else {
            return Ok(());
        };
        self.make_room(ino)?;
        let value = self
            .temp
            .get(key)
            .map_err(|e| zdb_errno("cache: GET temporary block", e))?
            .ok_or_else(|| {
                eprintln!("[-] cache: temporary block {key} is gone from zdbfs-temp");
                Errno::EIO
            })?;
        if let Err(e) = self.temp.del(key) {
            eprintln!("[-] cache: DEL temporary block {key}: {e}");
        }
        let cached = self
            .nodes
            .get_mut(&ino)
            .and_then(|n| n.cache.get_mut(&idx))
            .ok_or(Errno::EIO)?;
        cached.data = value;
        cached.state = BlockState::Dirty;
        cached.touched = Instant::now();
        Ok(())
    }

    /// Makes block `idx` of `ino` present in memory: from the cache (hit), or read from
    /// `zdbfs-data` (miss), or empty for a hole or when `overwrite` (the caller replaces it
    /// all). Returns false for a hole when `for_write` is false (nothing cached then).
    fn load_block(
        &mut self,
        ino: u64,
        idx: u64,
        for_write: bool,
        overwrite: bool,
    ) -> Result<bool, Errno> {
        let node = self.file(ino)?;
        let key = node.inode.blocks.get(idx as usize).copied().flatten();
        if node.cache.contains_key(&idx) {
            self.restore(ino, idx)?;
            if let Some(cached) = self.nodes.get_mut(&ino).and_then(|n| n.cache.get_mut(&idx)) {
                cached.touched = Instant::now();
            }
            return Ok(true);
        }
        if key.is_none() && !for_write {
            return Ok(false);
        }
        let data = match key {
            Some(key) if !overwrite => self
                .data
                .get(key)
                .map_err(|e| zdb_errno("read: GET block", e))?
                .ok_or_else(|| {
                    eprintln!("[-] read: block {key} of inode {ino} is missing in zdbfs-data");
                    Errno::EIO
                })?,
            _ => Vec::new(),
        };
        self.make_room(ino)?;
        self.node_mut(ino)?.cache.insert(
            idx,
            Cached {
                data,
                state: BlockState::Clean,
                touched: Instant::now(),
            },
        );
        Ok(true)
    }

    /// Writes one dirty (or offloaded) block to `zdbfs-data`: an update of its key, or a new
    /// key recorded in the inode (which makes the inode dirty).
    fn flush_block(&mut self, ino: u64, idx: u64) -> Result<(), Errno> {
        let state = match self.nodes.get(&ino).and_then(|n| n.cache.get(&idx)) {
            Some(cached) => cached.state,
            None => return Ok(()),
        };
        match state {
            BlockState::Clean => return Ok(()),
            BlockState::Offloaded(_) => self.restore(ino, idx)?,
            BlockState::Dirty => {}
        }
        let State {
            nodes, data, dirty, ..
        } = self;
        let node = nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let Some(cached) = node.cache.get_mut(&idx) else {
            return Ok(());
        };
        let slot = idx as usize;
        if node.inode.blocks.len() <= slot {
            node.inode.blocks.resize(slot + 1, None);
        }
        let existing = node.inode.blocks[slot];
        let key = data
            .set(existing, &cached.data)
            .map_err(|e| zdb_errno("flush: SET block", e))?;
        cached.state = BlockState::Clean;
        if existing != Some(key) {
            node.inode.blocks[slot] = Some(key);
            dirty.insert(ino);
        }
        Ok(())
    }

    /// Writes every dirty block of `ino` to `zdbfs-data` (not its inode).
    fn flush_blocks(&mut self, ino: u64) -> Result<(), Errno> {
        let pending: Vec<u64> = match self.nodes.get(&ino) {
            Some(node) => node
                .cache
                .iter()
                .filter(|(_, c)| c.state != BlockState::Clean)
                .map(|(idx, _)| *idx)
                .collect(),
            None => return Ok(()),
        };
        for idx in pending {
            self.flush_block(ino, idx)?;
        }
        Ok(())
    }

    /// Writes everything to zdb: dirty blocks, then dirty inodes, then deletes the keys
    /// nothing references any more. Snapshot ioctl, stop, cache full, `nocache`.
    pub fn flush_all(&mut self) -> Result<(), Errno> {
        let with_blocks: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.cache.values().any(|c| c.state != BlockState::Clean))
            .map(|(ino, _)| *ino)
            .collect();
        for ino in with_blocks {
            self.flush_blocks(ino)?;
        }
        let dirty: Vec<u64> = self.dirty.iter().copied().collect();
        for ino in dirty {
            if let Some(node) = self.nodes.get(&ino).filter(|n| n.linked) {
                let value = node.inode.encode();
                self.meta
                    .set(Some(ino), &value)
                    .map_err(|e| zdb_errno(&format!("flush: SET inode {ino}"), e))?;
            }
            self.dirty.remove(&ino);
        }
        while let Some(key) = self.doomed_meta.pop() {
            if let Err(e) = self.meta.del(key) {
                self.doomed_meta.push(key);
                return Err(zdb_errno(&format!("flush: DEL inode {key}"), e));
            }
        }
        while let Some(key) = self.doomed_data.pop() {
            if let Err(e) = self.data.del(key) {
                self.doomed_data.push(key);
                return Err(zdb_errno(&format!("flush: DEL block {key}"), e));
            }
        }
        Ok(())
    }

    // ---- file I/O ------------------------------------------------------------------------

    pub fn open(&mut self, ino: u64) -> Result<(), Errno> {
        self.node_mut(ino)?.open += 1;
        Ok(())
    }

    pub fn read(&mut self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let file_size = self.file(ino)?.inode.size;
        let end = offset.saturating_add(u64::from(size)).min(file_size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            let idx = pos / BLOCK;
            let off = (pos % BLOCK) as usize;
            let n = (BLOCK - pos % BLOCK).min(end - pos) as usize;
            let start = out.len();
            if self.load_block(ino, idx, false, false)? {
                if let Some(cached) = self.nodes.get(&ino).and_then(|n| n.cache.get(&idx)) {
                    let data = &cached.data;
                    if off < data.len() {
                        out.extend_from_slice(&data[off..data.len().min(off + n)]);
                    }
                }
            }
            out.resize(start + n, 0);
            pos += n as u64;
        }
        self.stats.read_bytes += out.len() as u64;
        Ok(out)
    }

    pub fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<u32, Errno> {
        self.file(ino)?;
        let end = offset
            .checked_add(bytes.len() as u64)
            .filter(|end| *end <= i64::MAX as u64)
            .ok_or(Errno::EFBIG)?;
        let mut pos = offset;
        while pos < end {
            let idx = pos / BLOCK;
            let off = (pos % BLOCK) as usize;
            let n = (BLOCK - pos % BLOCK).min(end - pos) as usize;
            let src = &bytes[(pos - offset) as usize..(pos - offset) as usize + n];
            self.load_block(ino, idx, true, off == 0 && n == BLOCK_SIZE)?;
            let node = self.node_mut(ino)?;
            if node.inode.blocks.len() <= idx as usize {
                node.inode.blocks.resize(idx as usize + 1, None);
            }
            let cached = node.cache.get_mut(&idx).ok_or(Errno::EIO)?;
            if cached.data.len() < off + n {
                cached.data.resize(off + n, 0);
            }
            cached.data[off..off + n].copy_from_slice(src);
            cached.state = BlockState::Dirty;
            cached.touched = Instant::now();
            pos += n as u64;
        }
        let node = self.node_mut(ino)?;
        node.inode.size = node.inode.size.max(end);
        let now = Time::now();
        node.inode.mtime = now;
        node.inode.ctime = now;
        self.dirty.insert(ino);
        self.stats.write_bytes += bytes.len() as u64;
        self.after_meta_change()?;
        Ok(bytes.len() as u32)
    }

    fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let old = self.file(ino)?.inode.size;
        if size < old {
            let keep = size.div_ceil(BLOCK);
            let node = self.node_mut(ino)?;
            let from = (keep as usize).min(node.inode.blocks.len());
            let dropped: Vec<u64> = node.inode.blocks.drain(from..).flatten().collect();
            let gone = node.cache.split_off(&keep);
            self.doomed_data.extend(dropped);
            for cached in gone.values() {
                if let BlockState::Offloaded(key) = cached.state {
                    if let Err(e) = self.temp.del(key) {
                        eprintln!("[-] cache: DEL temporary block {key}: {e}");
                    }
                }
            }
            if !size.is_multiple_of(BLOCK) {
                let idx = size / BLOCK;
                if self.load_block(ino, idx, false, false)? {
                    let cached = self.node_mut(ino)?.cache.get_mut(&idx).ok_or(Errno::EIO)?;
                    cached.data.truncate((size % BLOCK) as usize);
                    cached.state = BlockState::Dirty;
                }
            }
        }
        let node = self.node_mut(ino)?;
        node.inode.size = size;
        let now = Time::now();
        node.inode.mtime = now;
        node.inode.ctime = now;
        self.dirty.insert(ino);
        if self.settings.nocache {
            self.flush_blocks(ino)?;
        }
        Ok(())
    }

    /// release (the last close, zdbfs 0.1.11's `zdbfs_cache_release`): the file's inode and
    /// then its blocks go to zdb, and the blocks leave memory. `flush` and `fsync` do nothing.
    /// The new entry in the parent directory stays in the cache.
    pub fn release(&mut self, ino: u64) -> Result<(), Errno> {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return Ok(());
        };
        node.open = node.open.saturating_sub(1);
        if !node.linked && node.open == 0 {
            self.destroy(ino);
            return self.after_meta_change();
        }
        if self.settings.nocache {
            return Ok(());
        }
        // (zdbfs writes the inode first, but its block keys exist since the write; here a new
        // block gets its key when written, so the blocks go first)
        if let Err(e) = self.flush_blocks(ino) {
            // zdbfs 0.1.11 ("cache flush: blockid mismatch", e.g. a full zdbfs-data) keeps freed
            // blocks referenced: the next request on the file crashes it (use_inode)
            eprintln!("[-] cache flush: blockid mismatch");
            self.poisoned.insert(ino);
            return Err(e);
        }
        self.write_inode(ino)?;
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.cache.retain(|_, c| c.state != BlockState::Clean);
        }
        Ok(())
    }

    /// Writes one dirty inode to `zdbfs-meta` (not its blocks).
    fn write_inode(&mut self, ino: u64) -> Result<(), Errno> {
        if !self.dirty.contains(&ino) {
            return Ok(());
        }
        if let Some(node) = self.nodes.get(&ino).filter(|n| n.linked) {
            let value = node.inode.encode();
            self.meta
                .set(Some(ino), &value)
                .map_err(|e| zdb_errno(&format!("cache: SET inode {ino}"), e))?;
        }
        self.dirty.remove(&ino);
        Ok(())
    }

    /// Marks a request on `ino`; `Err` when the inode left the cache and zdb cannot give it
    /// back (zdbfs answers ENOENT then, EIO for a read).
    fn use_inode(&mut self, ino: u64, op: Op) -> Result<(), Errno> {
        if self.poisoned.contains(&ino) {
            // what zdbfs's SIGSEGV handler prints before it exits 139; the mount is left dead
            eprintln!("[-] fatal: segmentation fault");
            std::process::exit(139);
        }
        let fetches = !matches!(
            op,
            Op::Statfs
                | Op::Ioctl
                | Op::Release
                | Op::Releasedir
                | Op::Flush
                | Op::Fsync
                | Op::Fsyncdir
                | Op::Opendir
                | Op::Forget
                | Op::Access
                | Op::Xattr
        );
        if fetches && !self.settings.nocache {
            // zdbfs's inode cache lookups
            if self.cached.contains(&ino) {
                self.stats.cache_hit += 1;
            } else {
                self.stats.cache_miss += 1;
            }
        }
        if fetches && !self.settings.nocache && !self.cached.contains(&ino) {
            if let Err(e) = self.meta.get(ino) {
                zdb_errno(&format!("fetch inode {ino}"), e);
                return Err(if op == Op::Read {
                    Errno::EIO
                } else {
                    Errno::ENOENT
                });
            }
        }
        if fetches {
            self.cached.insert(ino);
        }
        self.used.insert(ino, Instant::now());
        Ok(())
    }

    /// Runs the 1 s loop when zdbfs would: a second without requests since the last request
    /// and since the last run (so requests at least every second starve it).
    pub fn tick(&mut self) {
        let second = Duration::from_secs(1);
        if self.last_request.elapsed() >= second && self.last_sync.elapsed() >= second {
            self.write_idle_inodes();
        }
    }

    /// zdbfs's 1 s loop (`zdbfs_cache_sync`): writes every cached inode not written yet whose
    /// last use is at least [`IDLE_WRITE`] ago (only the inode: blocks go at release).
    pub fn write_idle_inodes(&mut self) {
        self.last_sync = Instant::now();
        self.requests_since_sync = 0;
        let now = Instant::now();
        let idle: Vec<u64> = self
            .dirty
            .iter()
            .copied()
            .filter(|ino| {
                let used = *self.used.entry(*ino).or_insert(now);
                now.duration_since(used) >= IDLE_WRITE
            })
            .collect();
        for ino in idle {
            if let Err(e) = self.write_inode(ino) {
                eprintln!("[-] cache: could not write inode {ino} in the backend: {e:?}");
            }
        }
    }

    /// The snapshot ioctl (`zdbfs_cache_clean`): writes every cached inode and block to zdb
    /// and empties the cache; replies with the current unix time whatever the writes did.
    pub fn snapshot(&mut self) -> Result<u64, Errno> {
        if let Err(e) = self.flush_all() {
            eprintln!("[-] cache: snapshot: could not write the cache: {e:?}");
        }
        for node in self.nodes.values_mut() {
            node.cache.retain(|_, c| c.state != BlockState::Clean);
        }
        self.cached.clear();
        Ok(unix_now())
    }
}

/// The least recently used cached block of `node` in `state`.
fn oldest(node: &Node, state: BlockState) -> Option<u64> {
    node.cache
        .iter()
        .filter(|(_, c)| c.state == state)
        .min_by_key(|(_, c)| c.touched)
        .map(|(idx, _)| *idx)
}

/// Locks the state; a panic in a request (a bug) must not take the filesystem down.
pub fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The fuser filesystem: a handle on the shared state.
pub struct Zdbfs {
    pub state: Arc<Mutex<State>>,
}

impl Zdbfs {
    /// Runs one request under the lock: counts it, turns a panic into EIO, counts errors,
    /// logs it.
    fn run<T>(
        &self,
        op: Op,
        ino: INodeNo,
        f: impl FnOnce(&mut State) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let mut state = lock(&self.state);
        state.count(op);
        state.last_request = Instant::now();
        state.requests_since_sync += 1;
        if state.requests_since_sync > 8192 {
            state.write_idle_inodes();
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            state.use_inode(ino.0, op)?;
            f(&mut state)
        }))
        .unwrap_or_else(|_| {
            eprintln!("[-] internal error (panic) in {op:?}");
            Err(Errno::EIO)
        });
        if result.is_err() {
            state.stats.errors += 1;
        }
        state.log_op(op, ino.0, &result);
        result
    }
}

fn bytes(name: &OsStr) -> &[u8] {
    name.as_bytes()
}

impl Filesystem for Zdbfs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // ioctl on directories (the kernel sends them from 7.18 on anyway)
        let _ = config.add_capabilities(InitFlags::FUSE_HAS_IOCTL_DIR);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.run(Op::Lookup, parent, |s| s.lookup(parent.0, bytes(name))) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, _nlookup: u64) {
        let _ = self.run(Op::Forget, ino, |_| Ok(()));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.run(Op::Getattr, ino, |s| s.getattr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.run(Op::Setattr, ino, |s| {
            s.setattr(ino.0, mode, uid, gid, size, atime, mtime)
        }) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.run(Op::Readlink, ino, |s| s.readlink(ino.0)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let (uid, gid) = (req.uid(), req.gid());
        match self.run(Op::Mknod, parent, |s| {
            s.create(parent.0, bytes(name), mode, uid, gid, false)
        }) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let (uid, gid) = (req.uid(), req.gid());
        match self.run(Op::Mkdir, parent, |s| {
            s.mkdir(parent.0, bytes(name), mode, uid, gid)
        }) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.run(Op::Unlink, parent, |s| s.unlink(parent.0, bytes(name))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.run(Op::Rmdir, parent, |s| s.rmdir(parent.0, bytes(name))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (uid, gid) = (req.uid(), req.gid());
        match self.run(Op::Symlink, parent, |s| {
            s.symlink(
                parent.0,
                bytes(link_name),
                target.as_os_str().as_bytes(),
                uid,
                gid,
            )
        }) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.run(Op::Rename, parent, |s| {
            s.rename(parent.0, bytes(name), newparent.0, bytes(newname), flags)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // Hard links are not implemented by the stand-in.
        let result: Result<(), Errno> = self.run(Op::Link, ino, |_| Err(Errno::EPERM));
        if let Err(e) = result {
            reply.error(e);
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.run(Op::Open, ino, |s| s.open(ino.0)) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.run(Op::Read, ino, |s| s.read(ino.0, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.run(Op::Write, ino, |s| s.write(ino.0, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // zdbfs 0.1.11: nothing
        match self.run(Op::Flush, ino, |_| Ok(())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.run(Op::Release, ino, |s| s.release(ino.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // zdbfs 0.1.11: nothing
        match self.run(Op::Fsync, ino, |_| Ok(())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.run(Op::Opendir, ino, |s| s.dir(ino.0).map(|_| ())) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.run(Op::Readdir, ino, |s| s.readdir(ino.0, offset)) {
            Ok(entries) => {
                for (child, next, kind, name) in entries {
                    if reply.add(INodeNo(child), next, kind, OsStr::from_bytes(&name)) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _ = self.run(Op::Releasedir, ino, |_| Ok(()));
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // like fsync: the directory's entries stay in the cache
        let _ = self.run(Op::Fsyncdir, ino, |_| Ok(()));
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.run(Op::Statfs, ino, |s| s.statfs()) {
            Ok([blocks, free, avail, files, ffree]) => reply.statfs(
                blocks,
                free,
                avail,
                files,
                ffree,
                STATFS_BSIZE as u32,
                NAME_MAX as u32,
                STATFS_FRSIZE as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // no permission checks (as zdbfs; mount with default_permissions for them)
        match self.run(Op::Access, ino, |s| s.node(ino.0).map(|_| ())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let (uid, gid) = (req.uid(), req.gid());
        match self.run(Op::Create, parent, |s| {
            s.create(parent.0, bytes(name), mode, uid, gid, true)
        }) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let result = self.run(Op::Ioctl, ino, |s| match cmd {
            IOCTL_SNAPSHOT => {
                println!("[+] ioctl: snapshot requested, flushing the cache");
                Ok(s.snapshot()?.to_ne_bytes().to_vec())
            }
            IOCTL_STATISTICS => Ok(s
                .stats_array()
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect()),
            _ => Err(Errno::ENOTTY),
        });
        match result {
            Ok(mut data) => {
                data.truncate(out_size as usize);
                reply.ioctl(0, &data);
            }
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        let result: Result<(), Errno> = self.run(Op::Xattr, ino, |_| Err(Errno::ENOSYS));
        if let Err(e) = result {
            reply.error(e);
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, _size: u32, reply: ReplyXattr) {
        let result: Result<(), Errno> = self.run(Op::Xattr, ino, |_| Err(Errno::ENOSYS));
        if let Err(e) = result {
            reply.error(e);
        }
    }
}

/// zdbfs's directory list of a name: the sum of its bytes mod 128 (`zdbfs_inode_dirlist_id`).
fn dirlist_id(name: &[u8]) -> u8 {
    (name.iter().map(|b| u64::from(*b)).sum::<u64>() % 128) as u8
}
