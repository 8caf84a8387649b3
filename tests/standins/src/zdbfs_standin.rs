//! A contract stand-in for upstream 0-db-fs (`zdbfs`, v0.1.11), for tests only: it is never
//! shipped. No registry carries zdbfs, so the system tests mount this instead: a real FUSE
//! filesystem (fuser 0.18) that takes zdbfs's command line and keeps file contents in the 0-db
//! namespaces, so writes through the mount really make zdb rotate its files (and run its
//! hooks). It follows `upstream-contracts.md` §2.
//!
//! **Command line** (libfuse style): `zdbfs-standin [fuse options] -o <opt>[,<opt>...]
//! <mountpoint>`, `-o` as often as wanted (`-oopt` too). zdbfs options: `host=`, `port=`,
//! `unix=` (one zdb for all three namespaces; they are the defaults the per-namespace options
//! below override), `mh= mp= mu= mn= ms=`, `dh= dp= du= dn= ds=`, `th= tp= tu= tn= ts=`
//! (a unix socket is preferred over host/port), `size=` (bytes reported by statfs, default
//! 10 GiB), `cachesize=` (blocks, default 32), `nocache`, `autons`, `background`, `logfile=`.
//! FUSE options: `allow_other`, `allow_root`, `auto_unmount`, `default_permissions`, `ro`, `rw`,
//! `fsname=`, `subtype=`; flags `-f` (foreground: the default anyway), `-d` (log every request to
//! stderr), `-s`. `-h`/`--help` and `-V`/`--version` print and exit **1**, no mountpoint prints
//! the usage and exits 1, an unknown option exits 1 (as libfuse).
//!
//! **The v0.1.11 bug is reproduced**: `mn=`, `dn=`, `tn=` and `ts=` are parsed and ignored; the
//! namespaces are always `zdbfs-meta`, `zdbfs-data`, `zdbfs-temp` and the temp password always
//! `hello`. `ms=`/`ds=` are used for SELECT.
//!
//! **Startup** (§2.2): print `initializing zdbfs v0.1.11 (stand-in)`; connect the three
//! namespaces' zdbs; with `autons`: `NSNEW zdbfs-meta` + `NSSET mode seq`, `NSNEW zdbfs-data` +
//! mode seq, `NSNEW zdbfs-temp` + mode seq + `public 0` + `password hello`, stopping at the first
//! failing NSNEW and ignoring that failure; `SELECT` each namespace (temp with `hello`), a
//! failure exits 1 (so a restored machine without `zdbfs-temp` fails as upstream does,
//! qss#38); then `INFO` must say `sequential_key_size: 8`, else "incompatible version of 0-db:
//! v2 with 64 bits keys required" and exit 1; load the filesystem from `zdbfs-meta` (see
//! below); only then are unknown options refused (by FUSE in zdbfs); mount; with `background`,
//! fork after the mount.
//!
//! **Storage in zdb** (the stand-in's own layout, all three namespaces in sequential mode):
//! * `zdbfs-meta` key 0: a header starting with the magic `ZDBFSM` (format in `inode.rs`);
//!   key 1: the root directory; every other inode under the key zdb gave it when it was
//!   created, which is also its inode number. A directory inode holds its entries (name →
//!   inode), a file inode its size and the list of its data blocks' keys, a symlink its target.
//!   Changes to an existing inode are `SET <key> <value>` updates.
//! * `zdbfs-data`: file contents as 128 KiB blocks, one key each, updated in place with
//!   `SET <key>`; a block never written is a hole.
//! * `zdbfs-temp` (password `hello`): dirty blocks moved out of memory when a file's block
//!   cache is full of random writes (zdbfs's "random flush"), deleted once written to
//!   `zdbfs-data`.
//! * Keys that nothing references any more (removed inodes, blocks of truncated or removed
//!   files) are deleted only after the metadata that stopped referencing them is in zdb, so a
//!   crash never leaves a reference to a deleted key (only unreferenced leftovers).
//!
//! On mount the tree is read back from the root (everything reachable from key 1), so the
//! files survive an unmount/remount, a zdb restart, and a restore of zdb's files onto another
//! machine. An empty `zdbfs-meta` gets a fresh header and root.
//!
//! **Cache, as zdbfs 0.1.11** (the point of this stand-in; `upstream-contracts.md` §8.2, and
//! `tests/integration/zdbfs_standin.rs` checks each point against the real zdbfs): a file's
//! blocks stay in memory until its **release** (last close), which writes its inode and then
//! its blocks and
//! frees them; when a file holds `cachesize` blocks, a linear run of cached blocks is written
//! (all but the last: `cache_linear_flush`), else a clean block is dropped or the least
//! recently used one moved to `zdbfs-temp` (`cache_random_flush`). **`flush` and `fsync` do
//! nothing.** Inode and directory-entry changes stay in memory (only an inode's first version is
//! written when it is created, zdb gives it its number): they are written by the release (the
//! file's own inode, not its entry in the directory), by the **1 s loop** (every cached inode
//! not written yet and unused for 10 s: `zdbfs_cache_sync`; it runs only once a second passed
//! without any request, or after 8192 requests), by the snapshot ioctl and by a
//! graceful stop (SIGTERM, SIGINT, SIGHUP, or an unmount from outside). So a new file written
//! with `conv=fsync` and closed is gone after a SIGKILL within ~10 s (its directory entry, and a
//! new directory, were still in the cache); 12 s later, or after the snapshot ioctl, it
//! survives. `nocache` writes everything through at once. A release that cannot write the
//! blocks (a full `zdbfs-data`) leaves freed blocks referenced in zdbfs: the next request on
//! the file crashes it ("fatal: segmentation fault", exit 139, the mount left dead). Only whole
//! seconds of times are kept. rmdir, as upstream, looks only at the one of a directory's 128
//! entry lists the removed name falls in (sum of its bytes mod 128): a non-empty directory is
//! usually removed, its contents left unreachable.
//!
//! **ioctls** on an fd of the mountpoint (or of any file in it): `ZDBFS_IOCTL_SNAPSHOT =
//! _IOR('E', 0, uint64_t)` writes every cached inode and block to zdb and empties the cache
//! (inodes are read from zdb again on their next use), and returns the current unix time
//! whatever the writes did (even with zdb down); `ZDBFS_IOCTL_STATISTICS = _IOR('E', 1,
//! stats_t)` returns `stats_t` version 2 (30 `size_t`). Counters: `fuse_reqs` every request
//! handled; `cache_hit`/`cache_miss` inode-cache lookups; `cache_full` always 0 (as upstream);
//! `cache_linear_flush`, `cache_random_flush` as above; `cache_branches` always 1024 (the hash
//! branches), `cache_branches_allocated` inodes in the cache, `cache_entries` cached inodes not
//! yet written, `cache_blocks` and `cache_blocksize` blocks and bytes in the block cache (these
//! five 0 with `nocache`); `syscall_*` per request kind (`create` counts mknod too);
//! `read_bytes`/`write_bytes`; `errors` every error reply.
//! SIGUSR1 prints them to stdout.
//!
//! **Stopping**: SIGTERM/SIGINT/SIGHUP write the cache to zdb, print the statistics, unmount
//! lazily and exit 0. After SIGKILL the kernel leaves the mount as "Transport endpoint is not
//! connected". Errors: a zdb connection failure gives EIO and zdbfs then reconnects every
//! connection (and re-SELECTs); one whose reconnection failed fails its next request too, so
//! the first request after zdb came back still gets EIO; a request whose inode left the cache
//! (snapshot) and cannot be read from zdb gets ENOENT (EIO for a read); statfs is NSINFO of
//! meta then data (`f_frsize` 1 KiB, `f_files` 0xffffffffff, `f_ffree` that minus the meta
//! entries); `No space left on this namespace` / `Namespace definitely full` give
//! ENOSPC, other zdb errors EIO; "Namespace is temporarily locked" is retried every 100 ms
//! without end (as zdbfs). Not implemented: hard links (EPERM), xattrs (ENOSYS), special files
//! (EPERM), `O_APPEND`/`O_TMPFILE` semantics and permission checks (as upstream).

#[path = "zdbfs_standin/backend.rs"]
mod backend;
#[path = "zdbfs_standin/fs.rs"]
mod fs;
#[path = "zdbfs_standin/inode.rs"]
mod inode;

use backend::Target;
use fuser::{Config, MountOption, SessionACL};
use nix::sys::signal::{SigSet, Signal};
use std::io::Write;
use std::path::PathBuf;
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const VERSION: &str = "0.1.11";

/// The parsed command line.
struct Options {
    mountpoint: PathBuf,
    targets: [Target; 3],
    size: u64,
    cachesize: usize,
    nocache: bool,
    autons: bool,
    background: bool,
    logfile: Option<String>,
    debug: bool,
    mount_options: Vec<MountOption>,
    allow_other: bool,
    allow_root: bool,
    auto_unmount: bool,
    /// Options neither zdbfs nor FUSE knows: refused by FUSE once zdbfs connected to zdb.
    unknown: Vec<String>,
}

fn usage(program: &str) {
    // zdbfs prints its own name whatever argv[0] says
    let _ = program;
    println!("usage: zdbfs [options] <mountpoint>\n");
    println!("zdbfs options (-o):");
    println!("    host=, port=, unix=     one 0-db for metadata, data and temp");
    println!(
        "    mh=, mp=, mu=, mn=, ms= metadata 0-db host, port, unix socket, namespace, password"
    );
    println!("    dh=, dp=, du=, dn=, ds= data 0-db");
    println!("    th=, tp=, tu=, tn=, ts= temporary 0-db");
    println!("    size=                   filesystem size in bytes (default 10 GiB)");
    println!("    cachesize=              cache size in blocks of 128 KiB (default 32)");
    println!("    nocache                 disable the cache");
    println!("    autons                  create the namespaces");
    println!("    background              fork after mounting");
    println!("    logfile=                log every request to this file\n");
    println!("FUSE options:");
    println!("    -h   --help            print help");
    println!("    -V   --version         print version");
    println!("    -d   -o debug          enable debug output (implies -f)");
    println!("    -f                     foreground operation");
    println!("    -s                     disable multi-threaded operation");
    println!("    -o allow_other         allow access by all users");
    println!("    -o allow_root          allow access by root");
    println!("    -o auto_unmount        auto unmount on process termination");
    println!("    -o default_permissions enable permission checking by the kernel");
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    exit(1)
}

fn parse_args() -> Options {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let program = args
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .unwrap_or_else(|| "zdbfs".into());
    let mut o = Options {
        mountpoint: PathBuf::new(),
        targets: [
            (backend::META, None),
            (backend::DATA, None),
            (backend::TEMP, Some(backend::TEMP_PASSWORD.to_string())),
        ]
        .map(|(namespace, password)| Target {
            host: "localhost".into(),
            port: 9900,
            unix: None,
            namespace,
            password,
        }),
        size: 10 << 30,
        cachesize: 32,
        nocache: false,
        autons: false,
        background: false,
        logfile: None,
        debug: false,
        mount_options: Vec::new(),
        allow_other: false,
        allow_root: false,
        auto_unmount: false,
        unknown: Vec::new(),
    };
    // host=/port=/unix= are the defaults of all three; the per-namespace options win.
    let mut shared: Vec<(char, String)> = Vec::new();
    let mut specific: Vec<(usize, char, String)> = Vec::new();
    let mut mountpoint: Option<String> = None;
    let mut unknown: Vec<String> = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let mut i = 1;
    let mut only_positional = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if only_positional || !arg.starts_with('-') || arg == "-" {
            if mountpoint.is_some() {
                fail(&format!("fuse: invalid argument `{arg}'"));
            }
            mountpoint = Some(arg.clone());
            continue;
        }
        match arg.as_str() {
            "--" => only_positional = true,
            "-h" | "--help" => {
                usage(&program);
                exit(1)
            }
            "-V" | "--version" => {
                println!("FUSE library version 3 (zdbfs stand-in, fuser 0.18)");
                exit(1)
            }
            "-f" | "-s" => {}
            "-d" => o.debug = true,
            "-o" => match args.get(i) {
                Some(value) => {
                    opts.push(value.clone());
                    i += 1;
                }
                None => fail("fuse: missing argument after `-o'"),
            },
            other if other.starts_with("-o") => opts.push(other[2..].to_string()),
            other => fail(&format!("fuse: unknown option `{other}'")),
        }
    }
    for opt in opts
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|s| !s.is_empty())
    {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (opt, None),
        };
        let need = |value: Option<String>| {
            value.unwrap_or_else(|| fail(&format!("fuse: missing value for option `{key}'")))
        };
        let number = |value: Option<String>| -> u64 {
            let text = need(value);
            text.trim()
                .parse()
                .unwrap_or_else(|_| fail(&format!("invalid value for `{key}': {text}")))
        };
        match key {
            "host" => shared.push(('h', need(value))),
            "port" => shared.push(('p', need(value))),
            "unix" => shared.push(('u', need(value))),
            _ if matches!(
                key.as_bytes(),
                [b'm' | b'd' | b't', b'h' | b'p' | b'u' | b'n' | b's']
            ) =>
            {
                let [namespace, field] = key.as_bytes() else {
                    continue;
                };
                let target = match namespace {
                    b'm' => 0,
                    b'd' => 1,
                    _ => 2,
                };
                specific.push((target, char::from(*field), need(value)));
            }
            "size" => o.size = number(value),
            "cachesize" => o.cachesize = number(value).max(1) as usize,
            "nocache" => o.nocache = true,
            "autons" => o.autons = true,
            "background" => o.background = true,
            "logfile" => o.logfile = Some(need(value)),
            "debug" => o.debug = true,
            "allow_other" => o.allow_other = true,
            "allow_root" => o.allow_root = true,
            "auto_unmount" => o.auto_unmount = true,
            "default_permissions" => o.mount_options.push(MountOption::DefaultPermissions),
            "ro" => o.mount_options.push(MountOption::RO),
            "rw" => o.mount_options.push(MountOption::RW),
            "fsname" => o.mount_options.push(MountOption::FSName(need(value))),
            "subtype" => o.mount_options.push(MountOption::Subtype(need(value))),
            _ => unknown.push(opt.to_string()),
        }
    }
    o.unknown = unknown;
    let apply = |target: &mut Target, field: char, value: &str| match field {
        'h' => target.host = value.to_string(),
        'p' => {
            // atoi
            let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
            target.port = digits.parse().unwrap_or(0);
        }
        'u' => target.unix = Some(value.to_string()),
        // v0.1.11: `zdbfs_init_args` overwrites the namespace names and the temp password
        // with the defaults after parsing, so mn=/dn=/tn=/ts= do nothing.
        'n' => {}
        's' if target.namespace == backend::TEMP => {}
        's' => target.password = Some(value.to_string()),
        _ => {}
    };
    for (field, value) in &shared {
        for target in o.targets.iter_mut() {
            apply(target, *field, value);
        }
    }
    for (index, field, value) in &specific {
        apply(&mut o.targets[*index], *field, value);
    }
    let Some(mountpoint) = mountpoint else {
        usage(&program);
        exit(1)
    };
    o.mountpoint = std::fs::canonicalize(&mountpoint)
        .unwrap_or_else(|e| fail(&format!("fuse: bad mount point `{mountpoint}': {e}")));
    if !o.mountpoint.is_dir() {
        fail(&format!(
            "fuse: bad mount point `{mountpoint}': Not a directory"
        ));
    }
    if o.nocache {
        println!("[!] cache disabled: every change is written through");
    }
    o
}

/// Detaches the mount (as libfuse's `fuse_session_unmount`: `umount2(MNT_DETACH)` as root,
/// `fusermount3 -u -z` otherwise).
fn unmount(mountpoint: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; umount2 does not keep it.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return;
    }
    let _ = std::process::Command::new("fusermount3")
        .args(["-u", "-q", "-z", "--"])
        .arg(mountpoint)
        .status();
}

/// Set by the first thread that stops the filesystem.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Graceful stop: everything to zdb, statistics, unmount, exit 0. Once: a second caller (the
/// session ending because of the unmount) waits for the first to exit the process.
fn stop(state: &Mutex<fs::State>, mountpoint: &std::path::Path, why: &str) -> ! {
    if STOPPING.swap(true, Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
    println!("[+] {why}: flushing the cache and unmounting");
    let mut state = fs::lock(state);
    if let Err(e) = state.flush_all() {
        eprintln!("[-] cache: flush on stop failed: {e:?}, changes are lost");
    }
    print!("{}", state.stats_text());
    unmount(mountpoint);
    let _ = std::io::stdout().flush();
    exit(0)
}

fn main() {
    println!("initializing zdbfs v{VERSION} (stand-in)");
    let options = parse_args();

    let conns = backend::init(options.targets.clone(), options.autons)
        .unwrap_or_else(|message| fail(&format!("[-] {message}")));
    let log: Option<Box<dyn Write + Send>> = match (&options.logfile, options.debug) {
        (Some(path), _) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|e| fail(&format!("[-] logfile: {path}: {e}"))),
        )),
        (None, true) => Some(Box::new(std::io::stderr())),
        (None, false) => None,
    };
    let settings = fs::Settings {
        size: options.size,
        cachesize: options.cachesize,
        nocache: options.nocache,
        log,
    };
    let state = fs::State::load(conns, settings).unwrap_or_else(|e| fail(&format!("[-] {e}")));
    // zdbfs hands the options it does not know to fuse_session_new, after connecting to zdb
    // (and creating the namespaces, with autons) and initializing the filesystem
    if !options.unknown.is_empty() {
        fail(&format!(
            "fuse: unknown option(s): `-o {}'",
            options.unknown.join(",")
        ));
    }
    let state = Arc::new(Mutex::new(state));

    // Until here SIGTERM simply kills the process (libfuse installs its handlers with the
    // session). From here every thread inherits this mask (fuser's worker thread is spawned
    // later, in run()) and one thread takes the signals with sigwait.
    let mut signals = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        signals.add(signal);
    }
    if let Err(e) = signals.thread_block() {
        fail(&format!("sigprocmask: {e}"));
    }

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("zdbfs".into()),
        MountOption::Subtype("zdbfs".into()),
    ];
    config
        .mount_options
        .extend(options.mount_options.iter().cloned());
    config.acl = if options.allow_other {
        SessionACL::All
    } else if options.allow_root || options.auto_unmount {
        // fuser wants allow_other-like access for auto_unmount; root and the owner are the
        // same user here
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    if options.auto_unmount {
        config.mount_options.push(MountOption::AutoUnmount);
    }
    config.n_threads = Some(1);
    let filesystem = fs::Zdbfs {
        state: state.clone(),
    };
    let session =
        fuser::Session::new(filesystem, &options.mountpoint, &config).unwrap_or_else(|e| {
            fail(&format!(
                "[-] fuse: mount {}: {e}",
                options.mountpoint.display()
            ))
        });
    println!("[+] fuse: mounted on {}", options.mountpoint.display());

    if options.background {
        // SAFETY: no other thread exists yet (fuser spawns its threads in run()).
        match unsafe { libc::fork() } {
            -1 => fail(&format!("[-] fork: {}", std::io::Error::last_os_error())),
            0 => {
                // SAFETY: plain syscalls on fds we own.
                unsafe {
                    libc::setsid();
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                    if null >= 0 {
                        libc::dup2(null, 0);
                        libc::dup2(null, 1);
                        libc::dup2(null, 2);
                        if null > 2 {
                            libc::close(null);
                        }
                    }
                }
            }
            _ => exit(0),
        }
    }

    {
        // zdbfs's loop wakes up after 1 s without requests and writes the idle inodes
        let state = state.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            fs::lock(&state).tick();
        });
    }
    {
        let state = state.clone();
        let mountpoint = options.mountpoint.clone();
        std::thread::spawn(move || loop {
            match signals.wait() {
                Ok(Signal::SIGUSR1) => {
                    let text = fs::lock(&state).stats_text();
                    print!("{text}");
                    let _ = std::io::stdout().flush();
                }
                Ok(signal) => stop(&state, &mountpoint, &format!("signal {signal}")),
                Err(e) => eprintln!("[-] sigwait: {e}"),
            }
        });
    }

    // The session ends when the filesystem is unmounted from outside (or /dev/fuse fails).
    let result = session.run();
    if let Err(e) = &result {
        eprintln!("[-] fuse: session: {e}");
    }
    stop(&state, &options.mountpoint, "session ended")
}
