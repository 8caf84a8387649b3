//! Tests of the zdbfs contract stand-in (`tests/support/bin/zdbfs_standin.rs`, the example
//! `zdbfs-standin`), mounted over the 0-db stand-in: file operations byte for byte, statfs,
//! zdb rotations caused by writes, the cache semantics of zdbfs 0.1.11 (fsync does not write
//! metadata; SIGTERM and the snapshot ioctl do; SIGKILL loses what was not written), the
//! statistics ioctl, the startup contract (autons, qss#38, INFO check, v0.1.11's ignored
//! options) and zdb error mapping.
//!
//! They mount FUSE filesystems, so they need root, `/dev/fuse` and `fusermount3` (as CI has).
//! Every mount is lazily unmounted by a guard, even when a test fails.

mod support;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;
use support::{is_mounted, Appliance, Fs, Zdb, ZDBFS_SIZE as SIZE};

/// `ZDBFS_IOCTL_SNAPSHOT = _IOR('E', 0, uint64_t)`
const IOCTL_SNAPSHOT: u64 = 0x8008_4500;
/// `ZDBFS_IOCTL_STATISTICS = _IOR('E', 1, stats_t)`, 30 × `size_t`
const IOCTL_STATISTICS: u64 = 0x80F0_4501;

/// Indexes into `stats_t`.
mod stat {
    pub const VERSION: usize = 0;
    pub const FUSE_REQS: usize = 1;
    pub const CACHE_RANDOM_FLUSH: usize = 6;
    pub const CACHE_ENTRIES: usize = 9;
    pub const SYSCALL_CREATE: usize = 14;
    pub const SYSCALL_READ: usize = 17;
    pub const SYSCALL_WRITE: usize = 18;
    pub const SYSCALL_MKDIR: usize = 19;
    pub const SYSCALL_STATSFS: usize = 25;
    pub const SYSCALL_IOCTL: usize = 26;
    pub const READ_BYTES: usize = 27;
    pub const WRITE_BYTES: usize = 28;
}

/// Deterministic bytes that differ per `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An `_IOR` ioctl on the mountpoint directory, reading `N` bytes.
fn ioctl_read<const N: usize>(mountpoint: &Path, request: u64) -> std::io::Result<[u8; N]> {
    let dir = fs::File::open(mountpoint)?;
    let mut buf = [0u8; N];
    // SAFETY: the kernel writes at most N bytes (the size encoded in `request`) into buf.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), request as _, buf.as_mut_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(buf)
}

fn snapshot(mountpoint: &Path) -> u64 {
    u64::from_ne_bytes(ioctl_read::<8>(mountpoint, IOCTL_SNAPSHOT).expect("snapshot ioctl"))
}

fn stats(mountpoint: &Path) -> [u64; 30] {
    let raw = ioctl_read::<240>(mountpoint, IOCTL_STATISTICS).expect("statistics ioctl");
    let mut out = [0u64; 30];
    for (i, chunk) in raw.chunks_exact(8).enumerate() {
        out[i] = u64::from_ne_bytes(chunk.try_into().unwrap());
    }
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn write_synced(path: &Path, data: &[u8]) {
    let mut file = fs::File::create(path).unwrap();
    file.write_all(data).unwrap();
    file.sync_all().unwrap();
}

/// A fresh appliance layout with the 0-db stand-in running (hook: our `zdb-hook`) with
/// 512 KiB data files.
fn appliance() -> (Appliance, Zdb) {
    let app = Appliance::new(None, "");
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    zdb.client();
    (app, zdb)
}

fn mountpoint(app: &Appliance) -> PathBuf {
    app.dir.path().join("mnt")
}

#[test]
fn files_are_byte_identical_and_survive_sigterm_and_remount() {
    let (app, mut zdb) = appliance();
    let mnt = mountpoint(&app);
    let mut zdbfs = Fs::mount(&app, &mnt, "");
    assert!(
        zdbfs
            .log()
            .contains("initializing zdbfs v0.1.11 (stand-in)"),
        "{}",
        zdbfs.log()
    );

    let a = pattern(3 * 1024 * 1024 + 17, 1);
    let b = pattern(5 * 1024 * 1024 + 4321, 2);
    let c = pattern(70_000, 3);
    fs::write(zdbfs.path("a"), &a).unwrap();
    fs::write(zdbfs.path("b"), &b).unwrap();
    fs::write(zdbfs.path("c"), &c).unwrap();
    fs::create_dir(zdbfs.path("dir")).unwrap();
    fs::create_dir(zdbfs.path("dir/sub")).unwrap();
    fs::create_dir(zdbfs.path("gone")).unwrap();
    assert_eq!(fs::read(zdbfs.path("a")).unwrap(), a);
    assert_eq!(fs::read(zdbfs.path("b")).unwrap(), b);

    // rename across directories, rename over an existing file, unlink, rmdir
    fs::rename(zdbfs.path("a"), zdbfs.path("dir/sub/a2")).unwrap();
    fs::rename(zdbfs.path("b"), zdbfs.path("c")).unwrap();
    fs::remove_dir(zdbfs.path("gone")).unwrap();
    fs::write(zdbfs.path("dir/tmp"), b"x").unwrap();
    fs::remove_file(zdbfs.path("dir/tmp")).unwrap();
    let err = fs::remove_dir(zdbfs.path("dir")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));

    // writes at any offset, past the end (a hole), and truncation
    let mut d = pattern(1_000_000, 4);
    {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(zdbfs.path("dir/d"))
            .unwrap();
        file.write_all(&d).unwrap();
        file.seek(SeekFrom::Start(200_000)).unwrap();
        file.write_all(&[7u8; 5000]).unwrap();
        d[200_000..205_000].fill(7);
        file.seek(SeekFrom::Start(1_500_000)).unwrap();
        file.write_all(b"tail").unwrap();
        d.resize(1_500_000, 0);
        d.extend_from_slice(b"tail");
        file.set_len(1_400_000).unwrap();
        d.truncate(1_400_000);
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert!(back == d, "read back through the same fd differs");
    }

    // symlink, chmod, utimes
    std::os::unix::fs::symlink("dir/sub/a2", zdbfs.path("link")).unwrap();
    fs::set_permissions(zdbfs.path("c"), fs::Permissions::from_mode(0o600)).unwrap();
    let mtime = std::time::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    fs::File::options()
        .write(true)
        .open(zdbfs.path("dir/d"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();

    let check = |root: &Path| {
        assert_eq!(names(root), ["c", "dir", "link"]);
        assert_eq!(
            fs::read_link(root.join("link")).unwrap(),
            Path::new("dir/sub/a2")
        );
        assert!(
            fs::read(root.join("link")).unwrap() == a,
            "link target differs"
        );
        let mode = fs::metadata(root.join("c")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
        assert_eq!(
            fs::metadata(root.join("dir/d"))
                .unwrap()
                .modified()
                .unwrap(),
            mtime
        );
        assert_eq!(names(&root.join("dir")), ["d", "sub"]);
        assert_eq!(names(&root.join("dir/sub")), ["a2"]);
        assert!(
            fs::read(root.join("dir/sub/a2")).unwrap() == a,
            "a2 differs"
        );
        assert!(fs::read(root.join("c")).unwrap() == b, "c differs");
        assert!(fs::read(root.join("dir/d")).unwrap() == d, "d differs");
        assert!(fs::metadata(root.join("dir")).unwrap().is_dir());
        assert_eq!(fs::metadata(root.join("c")).unwrap().len(), b.len() as u64);
    };
    check(&zdbfs.mountpoint);

    // more than --datasize went into zdbfs-data: zdb rotated its files
    assert!(app.data.join("zdbfs-data/d1").exists(), "no rotation");

    // statfs: size= blocks, free = size - data_size_bytes of zdbfs-data
    let used = zdb.client().nsinfo("zdbfs-data").unwrap().data_size_bytes;
    let vfs = nix::sys::statvfs::statvfs(&zdbfs.mountpoint).unwrap();
    let frsize = vfs.fragment_size() as u64;
    assert_eq!(vfs.blocks() as u64 * frsize, SIZE);
    assert_eq!(vfs.blocks_free() as u64, (SIZE - used) / frsize);
    assert_eq!(vfs.blocks_available() as u64, (SIZE - used) / frsize);
    // zdbfs-data holds every block written once (`d` has a hole: blocks 8 to 10 were never
    // written, only its first 1,000,000 bytes are stored), plus the blocks of the replaced `c`
    // and the removed `tmp`: keys are deleted only once the metadata that dropped them is in
    // zdb, so a crash never leaves an entry pointing to a deleted block.
    let stored = (a.len() + b.len() + 1_000_000) as u64;
    assert_eq!(used, stored + 70_000 + 1);

    zdbfs.stop();
    assert!(zdbfs.log().contains("[+] stats:"), "{}", zdbfs.log());
    let used_after_stop = zdb.client().nsinfo("zdbfs-data").unwrap().data_size_bytes;
    assert_eq!(used_after_stop, stored);

    let mut zdbfs = Fs::mount(&app, &mnt, "");
    check(&zdbfs.mountpoint);
    zdbfs.stop();

    // and after a restart of zdb too
    zdb.stop();
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    zdb.client();
    let zdbfs = Fs::mount(&app, &mnt, "");
    check(&zdbfs.mountpoint);
}

#[test]
fn sigkill_loses_a_file_that_was_only_fsynced() {
    let (app, _zdb) = appliance();
    let mnt = mountpoint(&app);
    let mut zdbfs = Fs::mount(&app, &mnt, "");
    let old = pattern(300_000, 5);
    write_synced(&zdbfs.path("old"), &old);
    snapshot(&zdbfs.mountpoint);

    let new = pattern(2 * 1024 * 1024, 6);
    write_synced(&zdbfs.path("new"), &new);
    assert!(stats(&zdbfs.mountpoint)[stat::CACHE_ENTRIES] > 0);
    // left idle: nothing writes the inode or the directory entry
    sleep(Duration::from_millis(1500));
    zdbfs.kill();

    let zdbfs = Fs::mount(&app, &mnt, "");
    assert_eq!(names(&zdbfs.mountpoint), ["old"]);
    assert!(fs::read(zdbfs.path("old")).unwrap() == old);
}

#[test]
fn the_snapshot_ioctl_makes_a_file_survive_sigkill() {
    let (app, _zdb) = appliance();
    let mnt = mountpoint(&app);
    let mut zdbfs = Fs::mount(&app, &mnt, "");
    let data = pattern(2 * 1024 * 1024 + 99, 7);
    fs::create_dir(zdbfs.path("bucket")).unwrap();
    write_synced(&zdbfs.path("bucket/object"), &data);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let time = snapshot(&zdbfs.mountpoint);
    assert!(time >= before && time <= before + 5, "{time} vs {before}");
    assert_eq!(stats(&zdbfs.mountpoint)[stat::CACHE_ENTRIES], 0);
    zdbfs.kill();

    let zdbfs = Fs::mount(&app, &mnt, "");
    assert_eq!(names(&zdbfs.path("bucket")), ["object"]);
    assert!(fs::read(zdbfs.path("bucket/object")).unwrap() == data);
}

#[test]
fn the_statistics_ioctl_counts() {
    let (app, _zdb) = appliance();
    let mnt = mountpoint(&app);
    let zdbfs = Fs::mount(&app, &mnt, "");
    let first = stats(&zdbfs.mountpoint);
    assert_eq!(first[stat::VERSION], 2);

    let data = pattern(600_000, 8);
    fs::create_dir(zdbfs.path("d")).unwrap();
    fs::write(zdbfs.path("d/f"), &data).unwrap();
    // a new open file, so the kernel cannot answer from its page cache
    let mut back = Vec::new();
    fs::File::open(zdbfs.path("d/f"))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    nix::sys::statvfs::statvfs(&zdbfs.mountpoint).unwrap();
    let second = stats(&zdbfs.mountpoint);

    assert_eq!(second[stat::VERSION], 2);
    assert!(second[stat::FUSE_REQS] > first[stat::FUSE_REQS]);
    assert_eq!(second[stat::SYSCALL_MKDIR], first[stat::SYSCALL_MKDIR] + 1);
    assert_eq!(
        second[stat::SYSCALL_CREATE],
        first[stat::SYSCALL_CREATE] + 1
    );
    assert!(second[stat::SYSCALL_WRITE] > first[stat::SYSCALL_WRITE]);
    assert_eq!(
        second[stat::WRITE_BYTES] - first[stat::WRITE_BYTES],
        data.len() as u64
    );
    assert_eq!(second[stat::SYSCALL_IOCTL], first[stat::SYSCALL_IOCTL] + 1);
    assert!(second[stat::SYSCALL_STATSFS] > first[stat::SYSCALL_STATSFS]);
    // without FOPEN_KEEP_CACHE the kernel drops its pages on open, so the read came here
    assert!(second[stat::SYSCALL_READ] > first[stat::SYSCALL_READ]);
    assert_eq!(
        second[stat::READ_BYTES] - first[stat::READ_BYTES],
        data.len() as u64
    );
}

#[test]
fn random_writes_beyond_cachesize_go_through_zdbfs_temp() {
    let (app, _zdb) = appliance();
    let mnt = mountpoint(&app);
    let mut zdbfs = Fs::mount(&app, &mnt, "cachesize=2");
    let mut expected = vec![0u8; 8 * 128 * 1024];
    let mut len = 0;
    {
        let mut file = fs::File::create(zdbfs.path("random")).unwrap();
        // partial writes scattered over 8 blocks, never reaching a block's end
        for (i, block) in [5u64, 1, 7, 3, 0, 6, 2, 4, 1, 5].iter().enumerate() {
            let offset = block * 128 * 1024 + 1000 + i as u64 * 10;
            let piece = pattern(4096, 100 + i as u64);
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.write_all(&piece).unwrap();
            expected[offset as usize..offset as usize + piece.len()].copy_from_slice(&piece);
            len = len.max(offset as usize + piece.len());
        }
        expected.truncate(len);
    }
    assert!(stats(&zdbfs.mountpoint)[stat::CACHE_RANDOM_FLUSH] > 0);
    assert!(fs::read(zdbfs.path("random")).unwrap() == expected);
    zdbfs.stop();
    let zdbfs = Fs::mount(&app, &mnt, "cachesize=2");
    assert!(fs::read(zdbfs.path("random")).unwrap() == expected);
}

#[test]
fn without_autons_an_empty_zdb_fails() {
    let (app, _zdb) = appliance();
    let mnt = mountpoint(&app);
    let mut zdbfs = Fs::spawn(
        &app,
        &mnt,
        &format!("unix={},size={SIZE}", app.socket.display()),
    );
    assert_eq!(zdbfs.wait_exit().code(), Some(1), "{}", zdbfs.log());
    assert!(zdbfs.log().contains("zdbfs-meta"), "{}", zdbfs.log());
    assert!(!is_mounted(&zdbfs.mountpoint));
}

#[test]
fn a_restart_without_zdbfs_temp_fails_like_qss38() {
    let (app, mut zdb) = appliance();
    let mnt = mountpoint(&app);
    let mut zdbfs = Fs::mount(&app, &mnt, "");
    let data = pattern(400_000, 9);
    fs::write(zdbfs.path("kept"), &data).unwrap();
    zdbfs.stop();

    // a restore that brought back meta and data but not temp
    let mut client = zdb.client();
    client.command(&[b"NSDEL", b"zdbfs-temp"]).unwrap();
    let mut zdbfs = Fs::spawn(
        &app,
        &mnt,
        &format!("unix={},autons,size={SIZE}", app.socket.display()),
    );
    assert_eq!(zdbfs.wait_exit().code(), Some(1), "{}", zdbfs.log());
    assert!(zdbfs.log().contains("zdbfs-temp"), "{}", zdbfs.log());
    assert!(!is_mounted(&zdbfs.mountpoint));
    assert!(!client.nslist().unwrap().contains(&"zdbfs-temp".to_string()));

    // what quantumd's restore does by hand
    for args in [
        &[&b"NSNEW"[..], b"zdbfs-temp"][..],
        &[b"NSSET", b"zdbfs-temp", b"password", b"hello"],
        &[b"NSSET", b"zdbfs-temp", b"public", b"0"],
        &[b"NSSET", b"zdbfs-temp", b"mode", b"seq"],
    ] {
        client.command(args).unwrap();
    }
    let zdbfs = Fs::mount(&app, &mnt, "");
    assert!(fs::read(zdbfs.path("kept")).unwrap() == data);
}

#[test]
fn names_and_temp_password_options_are_ignored_like_v0_1_11() {
    let (app, mut zdb) = appliance();
    let mnt = mountpoint(&app);
    let zdbfs = Fs::mount(&app, &mnt, "mn=mine,dn=mydata,tn=mytemp,ts=secret");
    fs::write(zdbfs.path("f"), b"hello").unwrap();
    let namespaces = zdb.client().nslist().unwrap();
    for name in ["zdbfs-meta", "zdbfs-data", "zdbfs-temp"] {
        assert!(namespaces.contains(&name.to_string()), "{namespaces:?}");
    }
    for name in ["mine", "mydata", "mytemp"] {
        assert!(!namespaces.contains(&name.to_string()), "{namespaces:?}");
    }
    // the temp namespace is private with the password "hello"
    let temp = zdb.client().nsinfo("zdbfs-temp").unwrap();
    assert!(temp.password && !temp.public);
    let mut client = zdb.client();
    client
        .select("zdbfs-temp", Some(&qsfs::config::Secret::new("hello")))
        .unwrap();
}

#[test]
fn command_line_exits_like_zdbfs() {
    let bin = support::example("zdbfs-standin");
    for args in [&["--help"][..], &["--version"], &["-o", "autons"]] {
        let out = Command::new(&bin).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.starts_with("initializing zdbfs v0.1.11 (stand-in)"),
            "{stdout}"
        );
    }
    let out = Command::new(&bin).args(["-o", "autons"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("usage:"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&bin)
        .args(["-o", "nosuchoption"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option"));
}

/// A fake server that answers every command with an `INFO` lacking `sequential_key_size`
/// (a 0-db v1).
#[test]
fn an_old_zdb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("old.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let body = "# server\nserver_name: 0-db (zdb)\nserver_revision: v1.1.0\n";
                    let reply = format!("${}\r\n{body}\r\n", body.len());
                    if stream.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = Command::new(support::example("zdbfs-standin"))
        .arg("-o")
        .arg(format!("unix={},autons", socket.display()))
        .arg(&mnt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("incompatible version of 0-db"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_full_data_namespace_gives_enospc() {
    let (app, mut zdb) = appliance();
    let mnt = mountpoint(&app);
    let zdbfs = Fs::mount(&app, &mnt, "");
    zdb.client()
        .nsset("zdbfs-data", "maxsize", "300000")
        .unwrap();
    let mut file = fs::File::create(zdbfs.path("big")).unwrap();
    let result = file
        .write_all(&pattern(1024 * 1024, 10))
        .and_then(|()| file.sync_all());
    let error = result.expect_err("the namespace is full");
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
    // still usable
    fs::create_dir(zdbfs.path("after")).unwrap();
}

#[test]
fn a_zdb_restart_gives_eio_then_reconnects() {
    let (app, mut zdb) = appliance();
    let mnt = mountpoint(&app);
    let mut zdbfs = Fs::mount(&app, &mnt, "");
    let first = pattern(500_000, 11);
    fs::write(zdbfs.path("first"), &first).unwrap();
    snapshot(&zdbfs.mountpoint);

    zdb.stop();
    // the data connection (statfs) and the metadata connection (mkdir) fail: EIO
    let error = nix::sys::statvfs::statvfs(&zdbfs.mountpoint).expect_err("zdb is down");
    assert_eq!(error, nix::errno::Errno::EIO);
    let error = fs::create_dir(zdbfs.path("dir")).expect_err("zdb is down");
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    // and go on failing while zdb is down (each call tries to reconnect)
    let error = nix::sys::statvfs::statvfs(&zdbfs.mountpoint).expect_err("zdb is down");
    assert_eq!(error, nix::errno::Errno::EIO);

    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    zdb.client();
    // the next requests reconnect
    nix::sys::statvfs::statvfs(&zdbfs.mountpoint).expect("reconnected");
    fs::create_dir(zdbfs.path("dir")).expect("reconnected");
    let second = pattern(700_000, 12);
    fs::write(zdbfs.path("second"), &second).unwrap();
    zdbfs.stop();

    let zdbfs = Fs::mount(&app, &mnt, "");
    assert_eq!(names(&zdbfs.mountpoint), ["dir", "first", "second"]);
    assert!(fs::read(zdbfs.path("first")).unwrap() == first);
    assert!(fs::read(zdbfs.path("second")).unwrap() == second);
}

#[test]
fn nocache_writes_everything_through() {
    let (app, _zdb) = appliance();
    let mnt = mountpoint(&app);
    let mut zdbfs = Fs::mount(&app, &mnt, "nocache");
    let data = pattern(300_000, 13);
    fs::create_dir(zdbfs.path("d")).unwrap();
    write_synced(&zdbfs.path("d/f"), &data);
    assert_eq!(stats(&zdbfs.mountpoint)[stat::CACHE_ENTRIES], 0);
    zdbfs.kill();

    let zdbfs = Fs::mount(&app, &mnt, "");
    assert!(fs::read(zdbfs.path("d/f")).unwrap() == data);
}
