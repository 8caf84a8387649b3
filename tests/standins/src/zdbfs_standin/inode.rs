//! Inodes, directory entries and the filesystem header, and their binary encoding in the
//! `zdbfs-meta` namespace (the stand-in's own format; all integers little-endian).
//!
//! * **Header**, key 0: `ZDBFSM`, format version `u32` (= [`FORMAT_VERSION`]), flags `u32`
//!   (always 0), filesystem size `u64` (the `size=` of the mount that created it), root inode
//!   `u64` (= 1).
//! * **Inode**, key = inode number: version `u8` (= 1), kind `u8` (1 directory, 2 regular file,
//!   3 symlink), permission bits `u16`, uid `u32`, gid `u32`, size `u64`, then atime, mtime and
//!   ctime, each as seconds `i64` and nanoseconds `u32`. Then by kind:
//!   * directory: parent inode `u64`, entry count `u32`, then per entry: inode `u64`, name
//!     length `u16`, name bytes;
//!   * regular file: block count `u32`, then per 128 KiB block its key in `zdbfs-data` as `u64`
//!     (`u64::MAX`: a hole, never written);
//!   * symlink: target length `u32`, target bytes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Size of a data block in `zdbfs-data` (as zdbfs).
pub const BLOCK_SIZE: usize = 128 * 1024;
/// Magic of the header in key 0 of `zdbfs-meta` (as zdbfs).
pub const MAGIC: &[u8; 6] = b"ZDBFSM";
/// Version of the stand-in's metadata format.
pub const FORMAT_VERSION: u32 = 1;
/// The root directory's inode number (and key in `zdbfs-meta`).
pub const ROOT: u64 = 1;
/// The longest file name.
pub const NAME_MAX: usize = 255;

const INODE_VERSION: u8 = 1;
const HOLE: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// A point in time as stored: seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    pub fn now() -> Time {
        Time::from_system(SystemTime::now())
    }

    pub fn from_system(time: SystemTime) -> Time {
        match time.duration_since(UNIX_EPOCH) {
            // zdbfs keeps whole seconds (u32 fields in its inode)
            Ok(d) => Time {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            },
            Err(e) => {
                // before 1970: floor to whole seconds
                let secs = i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX);
                Time {
                    secs: -secs,
                    nanos: 0,
                }
            }
        }
    }

    pub fn to_system(self) -> SystemTime {
        let nanos = Duration::from_nanos(u64::from(self.nanos.min(999_999_999)));
        if self.secs >= 0 {
            UNIX_EPOCH
                .checked_add(Duration::from_secs(self.secs as u64) + nanos)
                .unwrap_or(UNIX_EPOCH)
        } else {
            UNIX_EPOCH
                .checked_sub(Duration::from_secs(self.secs.unsigned_abs()))
                .unwrap_or(UNIX_EPOCH)
        }
    }
}

/// The entries of a directory. Each entry gets a cookie when it is added (not stored: cookies
/// are reassigned at every mount) that readdir uses as its offset, so entries added or
/// removed between two readdir calls never make it skip or repeat the others.
#[derive(Debug, Clone, Default)]
pub struct Entries {
    by_name: HashMap<Vec<u8>, (u64, u64)>,
    by_cookie: BTreeMap<u64, Vec<u8>>,
    next_cookie: u64,
}

/// Cookies 1 and 2 are `.` and `..`.
pub const FIRST_COOKIE: u64 = 3;

impl Entries {
    pub fn get(&self, name: &[u8]) -> Option<u64> {
        self.by_name.get(name).map(|(ino, _)| *ino)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Adds or replaces an entry.
    pub fn insert(&mut self, name: Vec<u8>, ino: u64) {
        self.remove(&name);
        let cookie = self.next_cookie.max(FIRST_COOKIE);
        self.next_cookie = cookie + 1;
        self.by_cookie.insert(cookie, name.clone());
        self.by_name.insert(name, (ino, cookie));
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<u64> {
        let (ino, cookie) = self.by_name.remove(name)?;
        self.by_cookie.remove(&cookie);
        Some(ino)
    }

    /// Entries with a cookie above `after`, in cookie order: (cookie, name, inode).
    pub fn after(&self, after: u64) -> impl Iterator<Item = (u64, &[u8], u64)> + '_ {
        self.by_cookie
            .range(after.saturating_add(1)..)
            .filter_map(|(cookie, name)| {
                let (ino, _) = self.by_name.get(name)?;
                Some((*cookie, name.as_slice(), *ino))
            })
    }

    /// Every entry in cookie order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        self.after(0).map(|(_, name, ino)| (name, ino))
    }
}

#[derive(Debug, Clone)]
pub struct Inode {
    pub kind: Kind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// Files: bytes; symlinks: target length; directories: 0 (reported as 4096).
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    /// Directories: the parent directory (the root is its own parent).
    pub parent: u64,
    /// Directories: the entries.
    pub entries: Entries,
    /// Regular files: the key of each block in `zdbfs-data`, `None` for a hole.
    pub blocks: Vec<Option<u64>>,
    /// Symlinks: the target.
    pub target: Vec<u8>,
}

impl Inode {
    pub fn new(kind: Kind, perm: u16, uid: u32, gid: u32, parent: u64) -> Inode {
        let now = Time::now();
        Inode {
            kind,
            perm: perm & 0o7777,
            uid,
            gid,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            parent,
            entries: Entries::default(),
            blocks: Vec::new(),
            target: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(INODE_VERSION);
        out.push(match self.kind {
            Kind::Dir => 1,
            Kind::File => 2,
            Kind::Symlink => 3,
        });
        out.extend_from_slice(&self.perm.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.gid.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        for time in [self.atime, self.mtime, self.ctime] {
            out.extend_from_slice(&time.secs.to_le_bytes());
            out.extend_from_slice(&time.nanos.to_le_bytes());
        }
        match self.kind {
            Kind::Dir => {
                out.extend_from_slice(&self.parent.to_le_bytes());
                out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
                for (name, ino) in self.entries.iter() {
                    out.extend_from_slice(&ino.to_le_bytes());
                    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                    out.extend_from_slice(name);
                }
            }
            Kind::File => {
                out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
                for block in &self.blocks {
                    out.extend_from_slice(&block.unwrap_or(HOLE).to_le_bytes());
                }
            }
            Kind::Symlink => {
                out.extend_from_slice(&(self.target.len() as u32).to_le_bytes());
                out.extend_from_slice(&self.target);
            }
        }
        out
    }

    /// Decodes a stored inode; `None` if the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<Inode> {
        let mut r = Reader(bytes);
        if r.u8()? != INODE_VERSION {
            return None;
        }
        let kind = match r.u8()? {
            1 => Kind::Dir,
            2 => Kind::File,
            3 => Kind::Symlink,
            _ => return None,
        };
        let perm = r.u16()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let size = r.u64()?;
        let mut times = [Time { secs: 0, nanos: 0 }; 3];
        for time in &mut times {
            *time = Time {
                secs: r.u64()? as i64,
                nanos: r.u32()?,
            };
        }
        let mut inode = Inode {
            kind,
            perm,
            uid,
            gid,
            size,
            atime: times[0],
            mtime: times[1],
            ctime: times[2],
            parent: ROOT,
            entries: Entries::default(),
            blocks: Vec::new(),
            target: Vec::new(),
        };
        match kind {
            Kind::Dir => {
                inode.parent = r.u64()?;
                let count = r.u32()?;
                for _ in 0..count {
                    let ino = r.u64()?;
                    let len = usize::from(r.u16()?);
                    let name = r.take(len)?.to_vec();
                    inode.entries.insert(name, ino);
                }
            }
            Kind::File => {
                let count = r.u32()? as usize;
                // a count larger than what follows is corrupt, not an allocation request
                if count > r.0.len() / 8 {
                    return None;
                }
                inode.blocks = (0..count)
                    .map(|_| r.u64().map(|id| (id != HOLE).then_some(id)))
                    .collect::<Option<Vec<_>>>()?;
            }
            Kind::Symlink => {
                let len = r.u32()? as usize;
                inode.target = r.take(len)?.to_vec();
            }
        }
        Some(inode)
    }
}

/// The header stored in key 0 of `zdbfs-meta`.
pub fn encode_header(size: u64) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&ROOT.to_le_bytes());
    out
}

/// Checks a header: `Err` says what is wrong with it.
pub fn check_header(bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(MAGIC) {
        return Err("key 0 of the metadata namespace has no ZDBFSM header".into());
    }
    let mut r = Reader(&bytes[MAGIC.len()..]);
    match r.u32() {
        Some(FORMAT_VERSION) => Ok(()),
        Some(other) => Err(format!(
            "metadata format version {other} is not supported (this stand-in reads {FORMAT_VERSION})"
        )),
        None => Err("truncated ZDBFSM header".into()),
    }
}

/// A bounds-checked little-endian reader.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
}
