//! zdbfs's ioctls on an open fd of its mountpoint (contracts §2.3): the snapshot, which writes
//! its whole cache (inodes, directory entries, blocks) to zdb and returns the current unix time,
//! and the statistics (`stats_t`, version 2).
//!
//! zdbfs 0.1.11 keeps new inodes and directory entries in its cache even across fsync, so
//! without a snapshot an acknowledged write can vanish when zdbfs is killed. The calls are
//! blocking and a hung zdbfs blocks them in the kernel: run them on a [`crate::lane::Lane`].

use serde::Serialize;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `ZDBFS_IOCTL_SNAPSHOT = _IOR('E', 0, uint64_t)`.
const IOCTL_SNAPSHOT: libc::c_ulong =
    nix::request_code_read!(b'E', 0, std::mem::size_of::<u64>()) as libc::c_ulong;
/// `ZDBFS_IOCTL_STATISTICS = _IOR('E', 1, stats_t)`: 30 `size_t` fields.
const IOCTL_STATISTICS: libc::c_ulong =
    nix::request_code_read!(b'E', 1, std::mem::size_of::<[u64; 30]>()) as libc::c_ulong;
/// The `stats_t` version this reads.
pub const STATS_VERSION: u64 = 2;

/// zdbfs's statistics, with the field names of `stats_t`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Stats {
    /// FUSE requests served.
    pub fuse_reqs: u64,
    /// Block cache hits.
    pub cache_hit: u64,
    /// Block cache misses.
    pub cache_miss: u64,
    /// Times the cache was full.
    pub cache_full: u64,
    /// Linear flushes of the cache.
    pub cache_linear_flush: u64,
    /// Random flushes of the cache.
    pub cache_random_flush: u64,
    /// Cache branches.
    pub cache_branches: u64,
    /// Cache branches allocated.
    pub cache_branches_allocated: u64,
    /// Cache entries.
    pub cache_entries: u64,
    /// Cache blocks.
    pub cache_blocks: u64,
    /// Cache block size.
    pub cache_blocksize: u64,
    /// Calls per syscall, in `stats_t` order: getattr, setattr, create, readdir, open, read,
    /// write, mkdir, unlink, rmdir, rename, link, symlink, statsfs, ioctl.
    pub syscalls: [u64; 15],
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Errors.
    pub errors: u64,
}

/// The syscall names of [`Stats::syscalls`], in order.
pub const SYSCALLS: [&str; 15] = [
    "getattr", "setattr", "create", "readdir", "open", "read", "write", "mkdir", "unlink", "rmdir",
    "rename", "link", "symlink", "statsfs", "ioctl",
];

/// Whether `mountpoint` is a zdbfs mount right now (a FUSE mount named zdbfs).
pub fn is_mounted(mountpoint: &Path) -> Result<bool, String> {
    let mountinfo =
        crate::mountinfo::read().map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    Ok(crate::mountinfo::at(&mountinfo, mountpoint)
        .is_some_and(|m| m.is_fuse() && (m.fstype == "fuse.zdbfs" || m.source == "zdbfs")))
}

fn open(mountpoint: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(mountpoint)
}

/// Asks zdbfs to write its whole cache to zdb; returns the unix time zdbfs answered with.
pub fn snapshot(mountpoint: &Path) -> std::io::Result<u64> {
    let dir = open(mountpoint)?;
    let mut now: u64 = 0;
    // SAFETY: the request writes one u64 into `now`, which lives across the call.
    if unsafe { libc::ioctl(dir.as_raw_fd(), IOCTL_SNAPSHOT, &mut now as *mut u64) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(now)
}

/// Reads zdbfs's statistics.
pub fn statistics(mountpoint: &Path) -> std::io::Result<Stats> {
    let dir = open(mountpoint)?;
    let mut raw = [0u8; STATS_SIZE];
    // SAFETY: the request writes `stats_t` (30 `size_t` on x86_64, STATS_SIZE bytes) into `raw`.
    if unsafe { libc::ioctl(dir.as_raw_fd(), IOCTL_STATISTICS, raw.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Stats::parse(&raw)
}

/// The size of `stats_t` version 2: 30 `size_t`.
pub const STATS_SIZE: usize = 30 * 8;

impl Stats {
    /// A `stats_t` as the statistics ioctl returns it (native byte order, 30 `size_t`);
    /// another version or size is refused.
    pub fn parse(bytes: &[u8]) -> std::io::Result<Stats> {
        if bytes.len() != STATS_SIZE {
            return Err(std::io::Error::other(format!(
                "zdbfs statistics of {} bytes (stats_t version {STATS_VERSION} has {STATS_SIZE})",
                bytes.len()
            )));
        }
        let mut raw = [0u64; 30];
        for (field, chunk) in raw.iter_mut().zip(bytes.chunks_exact(8)) {
            *field = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
        }
        if raw[0] != STATS_VERSION {
            return Err(std::io::Error::other(format!(
                "zdbfs statistics version {} (this reads {STATS_VERSION})",
                raw[0]
            )));
        }
        let mut syscalls = [0u64; 15];
        syscalls.copy_from_slice(&raw[12..27]);
        Ok(Stats {
            fuse_reqs: raw[1],
            cache_hit: raw[2],
            cache_miss: raw[3],
            cache_full: raw[4],
            cache_linear_flush: raw[5],
            cache_random_flush: raw[6],
            cache_branches: raw[7],
            cache_branches_allocated: raw[8],
            cache_entries: raw[9],
            cache_blocks: raw[10],
            cache_blocksize: raw[11],
            syscalls,
            read_bytes: raw[27],
            write_bytes: raw[28],
            errors: raw[29],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_zdbfs() {
        // _IOR('E', 0, uint64_t) and _IOR('E', 1, stats_t) with 30 size_t on x86_64.
        assert_eq!(IOCTL_SNAPSHOT, 0x8008_4500);
        assert_eq!(IOCTL_STATISTICS, 0x80f0_4501);
    }
}
