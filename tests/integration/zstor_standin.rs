//! Contract tests for the zstor stand-in (`tests/standins/src/zstor_standin.rs`): it behaves like
//! zstor v0.5.0-rc.1 for everything our product observes, driven through `qsfs::zstor::Zstor`,
//! the runner the product uses.
//!
//! Every contract runs on the stand-in and, when `QSFS_UPSTREAM_BIN` names the directory of the
//! real programs, on the real zstor too (`support::upstream::each`), with the same assertions:
//! a stand-in that drifts from the real program fails. Both get the same backends: real 0-db
//! servers on the loopback (the real zdb when available, else the zdb stand-in). The stand-in
//! only talks to them for `test` and `status`; it keeps objects in the directory named by the
//! `zstor-standin-store` file next to the config (harmless for the real zstor). Tests that
//! exist for failure injection (`inject.json`), or that read the stand-in's `calls.log`, are
//! stand-in only where they say so.
//!
//! Every test has its own temporary directory holding the config, the log, the socket and the
//! store, so tests never share process-wide environment.

use crate::support::upstream::{self, Program, ZdbBackends, BACKEND_NAMESPACE, BACKEND_PASSWORD};
use qsfs::zstor::{Checksum, Zstor, ZstorError};
use std::net::SocketAddr;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use wait_timeout::ChildExt;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const TIMEOUT: Duration = Duration::from_secs(60);

/// The 0-db serving as the backends: the real one when available.
fn zdb() -> Program {
    Program::preferred("zdb")
}

/// What goes into a test's zstor config.
struct ConfigSpec {
    root: Option<PathBuf>,
    socket: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    meta: Vec<SocketAddr>,
    data: Vec<SocketAddr>,
}

impl ConfigSpec {
    fn text(&self) -> String {
        let expected = self.data.len();
        let minimal = expected.saturating_sub(1).max(1);
        let mut text = format!(
            "minimal_shards = {minimal}\nexpected_shards = {expected}\nredundant_groups = 0\nredundant_nodes = 0\n",
        );
        for (key, value) in [
            ("root", &self.root),
            ("socket", &self.socket),
            ("pid_file", &self.pid_file),
        ] {
            if let Some(value) = value {
                text.push_str(&format!("{key} = \"{}\"\n", value.display()));
            }
        }
        text.push_str(&format!(
            "\n[encryption]\nalgorithm = \"AES\"\nkey = \"{KEY}\"\n\n[compression]\nalgorithm = \"snappy\"\n\n\
             [meta]\ntype = \"zdb\"\n\n[meta.config]\nprefix = \"qsfs\"\n\n\
             [meta.config.encryption]\nalgorithm = \"AES\"\nkey = \"{KEY}\"\n"
        ));
        let backend = |address: &SocketAddr| {
            format!(
                "address = \"{address}\"\nnamespace = \"{BACKEND_NAMESPACE}\"\npassword = \"{BACKEND_PASSWORD}\"\n"
            )
        };
        for address in &self.meta {
            text.push_str(&format!("\n[[meta.config.backends]]\n{}", backend(address)));
        }
        text.push_str("\n[[groups]]\n");
        for address in &self.data {
            text.push_str(&format!("\n[[groups.backends]]\n{}", backend(address)));
        }
        text
    }
}

/// One test's directory (config, log, store, socket and pid file) and its backends.
struct Setup {
    program: Program,
    backends: ZdbBackends,
    _dir: tempfile::TempDir,
    /// The (canonical) temporary directory.
    dir: PathBuf,
    config: PathBuf,
    store: PathBuf,
    log: PathBuf,
    socket: PathBuf,
    pid_file: PathBuf,
}

impl Setup {
    /// In-process mode: no socket.
    fn new(program: &Program) -> Setup {
        let setup = Setup::bare(program, 4, 2);
        setup.write_config(&setup.config, &setup.spec());
        setup
    }

    /// Daemon mode: `socket` and `pid_file` set.
    fn with_daemon(program: &Program) -> Setup {
        let setup = Setup::bare(program, 4, 2);
        setup.write_config(&setup.config, &setup.daemon_spec());
        setup
    }

    /// `meta` user-mode and `data` sequential backends; no config written yet.
    fn bare(program: &Program, meta: usize, data: usize) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        Setup {
            program: program.clone(),
            backends: ZdbBackends::start(&zdb(), meta, data),
            config: dir.join("zstor-default.toml"),
            store: dir.join("store"),
            log: dir.join("zstor.log"),
            socket: dir.join("zstor.sock"),
            pid_file: dir.join("zstor.pid"),
            dir,
            _dir: tmp,
        }
    }

    /// The first four metadata backends and all data backends.
    fn spec(&self) -> ConfigSpec {
        ConfigSpec {
            root: None,
            socket: None,
            pid_file: None,
            meta: self.backends.meta[..4].to_vec(),
            data: self.backends.data.clone(),
        }
    }

    fn daemon_spec(&self) -> ConfigSpec {
        ConfigSpec {
            socket: Some(self.socket.clone()),
            pid_file: Some(self.pid_file.clone()),
            ..self.spec()
        }
    }

    /// Writes a config at `path` and, next to it, the file naming this test's store (for the
    /// stand-in; the real zstor does not look at it).
    fn write_config(&self, path: &Path, spec: &ConfigSpec) {
        std::fs::write(path, spec.text()).unwrap();
        std::fs::write(
            path.with_file_name("zstor-standin-store"),
            format!("{}\n", self.store.display()),
        )
        .unwrap();
    }

    fn zstor(&self) -> Zstor {
        self.zstor_with(&self.config)
    }

    fn zstor_with(&self, config: &Path) -> Zstor {
        Zstor::new(&self.program.path, config, TIMEOUT).with_log_file(&self.log)
    }

    fn command_in(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program.path);
        cmd.arg("--log_file")
            .arg(&self.log)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the program directly (for what the runner does not offer), in `cwd`.
    fn run_in(&self, cwd: &Path, args: &[&str]) -> Output {
        let mut child = self
            .command_in(cwd, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        match child.wait_timeout(TIMEOUT).unwrap() {
            Some(_) => child.wait_with_output().unwrap(),
            None => {
                let _ = child.kill();
                panic!(
                    "{} {args:?} did not finish within {TIMEOUT:?}",
                    self.program.label()
                );
            }
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_in(&self.dir, args)
    }

    fn file(&self, relative: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Stand-in only: writes its `inject.json`.
    fn inject(&self, json: &str) {
        assert!(!self.program.real, "inject.json is the stand-in's");
        std::fs::create_dir_all(&self.store).unwrap();
        std::fs::write(self.store.join("inject.json"), json).unwrap();
    }

    /// Stand-in only: the `calls.log` lines of one command.
    fn calls(&self, command: &str) -> Vec<String> {
        assert!(!self.program.real, "calls.log is the stand-in's");
        std::fs::read_to_string(self.store.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.split('\t').next() == Some(command))
            .map(str::to_string)
            .collect()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn failed_stderr(err: ZstorError) -> (String, String) {
    match err {
        ZstorError::Failed { status, stderr, .. } => (status, stderr),
        other => panic!("expected a failed command: {other:?}"),
    }
}

/// Polls `condition` every 5 ms for up to 30 s.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Test content that is not text and not tiny (compressible: a pattern).
fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Incompressible content (xorshift), so that the real zstor's snappy cannot shrink the work.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A file large enough that storing it takes about a second: on the real zstor by its size
/// (compression, encryption and erasure coding of 64 MiB), on the stand-in by its per-MiB
/// delay (`ms_per_mib` in `inject.json`, stand-in only).
fn slow_file(setup: &Setup, name: &str, seed: u64) -> PathBuf {
    let len = if setup.program.real {
        64 << 20
    } else {
        setup.inject(r#"{"ms_per_mib": 250}"#);
        4 << 20
    };
    setup.file(name, &noise(seed, len))
}

/// How many sockets process `pid` has open.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| {
                    std::fs::read_link(entry.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Runs `connect`, which starts a client of `daemon`, and waits until the daemon has accepted
/// one more client, then a little longer for the client's request (written right after its
/// connect) to arrive: it is then queued behind what the daemon runs.
fn queued<T>(daemon: &Daemon, connect: impl FnOnce() -> T) -> T {
    let before = sockets(daemon.pid());
    let client = connect();
    wait_for("the daemon to accept the client", || {
        sockets(daemon.pid()) > before
    });
    std::thread::sleep(Duration::from_millis(100));
    client
}

/// Waits until `daemon` reads `file` (see [`slow_file`]), so the command it serves still runs.
fn wait_until_reading(daemon: &Daemon, file: &Path) {
    wait_for("the daemon to read the big file", || {
        has_open(daemon.pid(), file)
    });
}

/// True when process `pid` has `path` open.
fn has_open(pid: u32, path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    entries
        .flatten()
        .any(|entry| std::fs::read_link(entry.path()).is_ok_and(|target| target == path))
}

#[test]
fn store_check_retrieve_round_trip() {
    upstream::each("zstor", check_round_trip);
}

fn check_round_trip(program: &Program) {
    let setup = Setup::new(program);
    let zstor = setup.zstor();
    let data = content(1, 3 << 20);
    let file = setup.file("data/zdbfs-data/d1", &data);
    let expected = Checksum::of_file(&file).unwrap();

    assert_eq!(zstor.check(&file).unwrap(), None, "not stored yet");
    zstor.store(&file, None).unwrap();
    assert_eq!(zstor.check(&file).unwrap(), Some(expected));

    // Retrieve writes in place, over whatever is there, creating missing directories.
    std::fs::write(&file, b"garbage that is longer than nothing").unwrap();
    zstor.retrieve(&file).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), data);
    std::fs::remove_dir_all(setup.dir.join("data")).unwrap();
    zstor.retrieve(&file).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), data);

    // The same content again is skipped; new content replaces the object.
    zstor.store(&file, None).unwrap();
    std::fs::write(&file, b"new content").unwrap();
    zstor.store(&file, None).unwrap();
    assert_eq!(
        zstor.check(&file).unwrap(),
        Some(Checksum::of_bytes(b"new content"))
    );
    std::fs::remove_file(&file).unwrap();
    zstor.retrieve(&file).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"new content");
    if !program.real {
        let results: Vec<String> = setup
            .calls("store")
            .iter()
            .map(|l| l.rsplit('\t').next().unwrap().to_string())
            .collect();
        assert_eq!(results, ["ok", "skipped", "ok"]);
        assert!(setup.calls("store")[0].contains(&format!("\t{}\t", file.display())));
    }

    // check prints only the hex checksum, or nothing, and exits 0 in both cases.
    let out = setup.run(&["check", "-f", file.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        format!("{}\n", Checksum::of_bytes(b"new content"))
    );
    let out = setup.run(&["check", "--file", "/nonexistent/dir/file"]);
    assert_eq!(
        (
            out.status.code(),
            stdout(&out).as_str(),
            stderr(&out).as_str()
        ),
        (Some(0), "", "")
    );
    assert_eq!(
        zstor.check(Path::new("/nonexistent/dir/file")).unwrap(),
        None
    );

    // Every command logs (upstream: its actors' start), with log4rs' timestamp.
    let log = setup.log_text();
    assert!(log.lines().count() >= 10, "{log}");
    assert!(log.contains(": INFO "), "{log}");
    let stamp = log.lines().next().unwrap().split(": ").next().unwrap();
    assert!(
        stamp.len() == "2026-01-01 00:00:00 +00:00".len() && stamp.as_bytes()[10] == b' ',
        "{stamp}"
    );
}

#[test]
fn retrieve_of_an_unknown_file_fails() {
    upstream::each("zstor", check_retrieve_unknown);
}

fn check_retrieve_unknown(program: &Program) {
    let setup = Setup::new(program);
    let missing = setup.dir.join("data/d9");
    let (status, stderr) = failed_stderr(setup.zstor().retrieve(&missing).unwrap_err());
    assert_eq!(status, "exit code 1");
    // In-process, upstream prints its error's Debug form.
    assert_eq!(
        stderr,
        r#"Error: ZstorError { kind: LocalIo("no metadata found for file"), internal: Other(Kind(NotFound)) }"#
    );
    assert!(!missing.exists());
    assert!(!setup.dir.join("data").exists(), "no directory created");
}

#[test]
fn key_path_stores_under_the_real_path() {
    upstream::each("zstor", check_key_path);
}

fn check_key_path(program: &Program) {
    let setup = Setup::new(program);
    let zstor = setup.zstor();
    let real_dir = setup.dir.join("index/zdbfs-data");
    let live = setup.file("index/zdbfs-data/i1", b"live index, still changing");
    let snapshot = setup.file("snapshots/tmp123/i1", b"consistent snapshot");

    zstor.store(&snapshot, Some(&real_dir)).unwrap();
    assert_eq!(
        zstor.check(&live).unwrap(),
        Some(Checksum::of_bytes(b"consistent snapshot"))
    );
    assert_eq!(
        zstor.check(&snapshot).unwrap(),
        None,
        "the key is the real path, not the snapshot's"
    );
    assert_eq!(
        std::fs::read(&live).unwrap(),
        b"live index, still changing",
        "an existing file at the key path is left alone"
    );

    // A key path through a symlink is canonicalized.
    std::os::unix::fs::symlink(&real_dir, setup.dir.join("link")).unwrap();
    std::fs::write(&snapshot, b"second snapshot").unwrap();
    zstor
        .store(&snapshot, Some(&setup.dir.join("link")))
        .unwrap();
    assert_eq!(
        zstor.check(&live).unwrap(),
        Some(Checksum::of_bytes(b"second snapshot"))
    );
    // ... but check does not resolve it.
    assert_eq!(zstor.check(&setup.dir.join("link/i1")).unwrap(), None);

    std::fs::remove_file(&live).unwrap();
    zstor.retrieve(&live).unwrap();
    assert_eq!(std::fs::read(&live).unwrap(), b"second snapshot");

    // Nothing at the key path yet: a dummy file is made there to canonicalize it, then removed.
    let other = setup.file("snapshots/tmp123/i2", b"index file 2");
    zstor.store(&other, Some(&setup.dir.join("link"))).unwrap();
    assert!(!real_dir.join("i2").exists(), "the dummy file is removed");
    assert_eq!(
        zstor.check(&real_dir.join("i2")).unwrap(),
        Some(Checksum::of_bytes(b"index file 2"))
    );

    // The key directory must exist; the file too.
    let (_, message) = failed_stderr(
        zstor
            .store(&snapshot, Some(&setup.dir.join("no/such/dir")))
            .unwrap_err(),
    );
    assert!(message.contains("could not create temp file"), "{message}");
    let (_, message) = failed_stderr(
        zstor
            .store(&setup.dir.join("snapshots/absent"), Some(&real_dir))
            .unwrap_err(),
    );
    assert!(
        message.contains("Could not load file metadata"),
        "{message}"
    );
    assert!(!real_dir.join("absent").exists());
}

#[test]
fn store_resolves_symlinks_the_lookups_do_not() {
    upstream::each("zstor", check_symlinked_paths);
}

/// `store` keys by the canonical path; `check`, `retrieve` and `rebuild` by a lexical clean
/// of the path as given: through a symlink (or relative) they find nothing.
fn check_symlinked_paths(program: &Program) {
    let setup = Setup::new(program);
    let zstor = setup.zstor();
    let real = setup.file("real/x", b"behind a symlink");
    let link = setup.dir.join("link");
    std::os::unix::fs::symlink(setup.dir.join("real"), &link).unwrap();
    let through_link = link.join("x");
    let sum = Checksum::of_bytes(b"behind a symlink");

    zstor.store(&through_link, None).unwrap();
    assert_eq!(zstor.check(&through_link).unwrap(), None);
    assert_eq!(zstor.check(&real).unwrap(), Some(sum));
    // `.` and `..` are folded lexically.
    let dotted = setup.dir.join("real/./../real/x");
    assert_eq!(zstor.check(&dotted).unwrap(), Some(sum));
    let (_, message) = failed_stderr(zstor.retrieve(&through_link).unwrap_err());
    assert!(message.contains("no metadata found for file"), "{message}");
    assert!(zstor.rebuild(&through_link).is_err());
    zstor.rebuild(&real).unwrap();

    // A relative path: store canonicalizes it in the working directory, check keys it as is.
    let out = setup.run(&["store", "-f", "real/x"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = setup.run(&["check", "-f", "real/x"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), ""));
    let out = setup.run(&["check", "-f", real.to_str().unwrap()]);
    assert_eq!(stdout(&out), format!("{sum}\n"));
}

#[test]
fn root_is_stripped_from_keys_and_enforced() {
    upstream::each("zstor", check_root);
}

fn check_root(program: &Program) {
    let setup = Setup::new(program);
    let root1 = setup.dir.join("machine1");
    let root2 = setup.dir.join("machine2");
    std::fs::create_dir_all(&root2).unwrap();
    let config1 = setup.dir.join("one/zstor.toml");
    let config2 = setup.dir.join("two/zstor.toml");
    std::fs::create_dir_all(config1.parent().unwrap()).unwrap();
    std::fs::create_dir_all(config2.parent().unwrap()).unwrap();
    setup.write_config(
        &config1,
        &ConfigSpec {
            root: Some(root1.clone()),
            ..setup.spec()
        },
    );
    setup.write_config(
        &config2,
        &ConfigSpec {
            root: Some(root2.clone()),
            ..setup.spec()
        },
    );
    let first = setup.zstor_with(&config1);
    let second = setup.zstor_with(&config2);

    let file = setup.file("machine1/data/zdbfs-data/d1", b"data file 1");
    first.store(&file, None).unwrap();

    // Same path relative to another root: same key, as when restoring on a new machine.
    let elsewhere = root2.join("data/zdbfs-data/d1");
    assert_eq!(
        second.check(&elsewhere).unwrap(),
        Some(Checksum::of_bytes(b"data file 1"))
    );
    second.retrieve(&elsewhere).unwrap();
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"data file 1");
    // Without a root the key is the full path: not found.
    assert_eq!(setup.zstor().check(&elsewhere).unwrap(), None);

    let outside = setup.file("outside/d1", b"outside the root");
    let (_, message) = failed_stderr(first.store(&outside, None).unwrap_err());
    assert!(
        message.contains("not in the file tree rooted at"),
        "{message}"
    );
    let (_, message) = failed_stderr(first.check(&outside).unwrap_err());
    assert!(message.contains("could not strip path prefix"), "{message}");
}

#[test]
fn delete_directory_and_rebuild() {
    upstream::each("zstor", check_delete_directory_rebuild);
}

fn check_delete_directory_rebuild(program: &Program) {
    let setup = Setup::new(program);
    let zstor = setup.zstor();

    let doomed = setup.file("doomed", b"delete me after upload");
    let out = setup.run(&["store", "--delete", "-f", doomed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        (stdout(&out).as_str(), stderr(&out).as_str()),
        ("", ""),
        "store is silent"
    );
    assert!(!doomed.exists());
    assert_eq!(
        zstor.check(&doomed).unwrap(),
        Some(Checksum::of_bytes(b"delete me after upload"))
    );

    // A directory: each regular file in it, not recursively, not symlinks.
    let a = setup.file("dir/a", b"a");
    let b = setup.file("dir/b", b"b");
    let nested = setup.file("dir/sub/c", b"c");
    let target = setup.file("target", b"symlink target");
    std::os::unix::fs::symlink(&target, setup.dir.join("dir/link")).unwrap();
    zstor.store(&setup.dir.join("dir"), None).unwrap();
    assert_eq!(zstor.check(&a).unwrap(), Some(Checksum::of_bytes(b"a")));
    assert_eq!(zstor.check(&b).unwrap(), Some(Checksum::of_bytes(b"b")));
    assert_eq!(zstor.check(&nested).unwrap(), None);
    assert_eq!(zstor.check(&target).unwrap(), None);
    assert_eq!(zstor.check(&setup.dir.join("dir/link")).unwrap(), None);
    if !program.real {
        assert_eq!(setup.calls("store").len(), 3);
    }

    // rebuild by file, and by upstream's raw metadata key; a bare hex key names nothing.
    zstor.rebuild(&a).unwrap();
    let key = Checksum::of_bytes(a.as_os_str().as_encoded_bytes()).to_string();
    let out = setup.run(&["rebuild", "-k", &format!("/qsfs/meta/{key}")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = setup.run(&["rebuild", "-k", &key]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no metadata found for file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(zstor.check(&a).unwrap(), Some(Checksum::of_bytes(b"a")));
    assert!(zstor.rebuild(&setup.dir.join("dir/never-stored")).is_err());
    for args in [
        &["rebuild"][..],
        &["rebuild", "-f", a.to_str().unwrap(), "-k", &key],
    ] {
        let out = setup.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("argument must be set"),
            "{}",
            stderr(&out)
        );
    }
}

/// A running `zstor monitor`.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(setup: &Setup) -> Daemon {
        let child = setup
            .command_in(&setup.dir, &["monitor"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut daemon = Daemon { child };
        wait_for("the daemon socket", || {
            assert!(
                daemon.child.try_wait().unwrap().is_none(),
                "the daemon exited"
            );
            UnixStream::connect(&setup.socket).is_ok()
        });
        daemon
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    fn wait(&mut self, what: &str) -> ExitStatus {
        self.child
            .wait_timeout(TIMEOUT)
            .unwrap()
            .unwrap_or_else(|| panic!("the daemon did not stop on {what}"))
    }

    fn stop(mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait("SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn daemon_mode() {
    upstream::each("zstor", check_daemon_mode);
}

fn check_daemon_mode(program: &Program) {
    let setup = Setup::with_daemon(program);
    let zstor = setup.zstor();
    let file = setup.file("data/d1", &content(7, 100_000));

    // socket set but nothing listening: an error, no fallback to in-process.
    let (status, stderr_line) = failed_stderr(zstor.store(&file, None).unwrap_err());
    assert_eq!(status, "exit code 1");
    assert!(
        stderr_line.starts_with("Error: ")
            && stderr_line.contains("Could not connect to daemon socket"),
        "{stderr_line}"
    );
    if !program.real {
        assert!(setup.calls("store").is_empty());
    }
    assert!(zstor.check(&file).is_err());

    // Stale socket and pid file from a killed daemon do not prevent a start.
    std::fs::write(&setup.socket, b"stale").unwrap();
    std::fs::write(&setup.pid_file, "999999999\n").unwrap();
    let daemon = Daemon::start(&setup);
    // The pid file may be written just after the socket answers.
    wait_for("the daemon's pid in its pid file", || {
        std::fs::read_to_string(&setup.pid_file)
            .unwrap_or_default()
            .trim()
            == daemon.pid().to_string()
    });

    zstor.store(&file, None).unwrap();
    assert_eq!(
        zstor.check(&file).unwrap(),
        Some(Checksum::of_file(&file).unwrap())
    );
    assert_eq!(zstor.check(&setup.dir.join("data/unknown")).unwrap(), None);
    let original = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    zstor.retrieve(&file).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), original);
    zstor.rebuild(&file).unwrap();
    if !program.real {
        // The daemon performed them (and logged them in the store).
        assert_eq!(setup.calls("store").len(), 1);
        assert_eq!(setup.calls("retrieve").len(), 1);
    }

    // Errors come back as `Zstor error: <Display>`.
    let (_, stderr_line) =
        failed_stderr(zstor.retrieve(&setup.dir.join("data/unknown")).unwrap_err());
    assert_eq!(
        stderr_line,
        "Zstor error: error during accessing local storage for no metadata found for file: entity not found"
    );

    // Paths are sent as given: store resolves them in the daemon's working directory; check
    // keys them as they are, so a relative path names nothing.
    let elsewhere = tempfile::tempdir().unwrap();
    let d2 = setup.file("data/d2", b"stored by a relative path");
    let out = setup.run_in(elsewhere.path(), &["store", "-f", "data/d2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        zstor.check(&d2).unwrap(),
        Some(Checksum::of_bytes(b"stored by a relative path"))
    );
    let out = setup.run_in(elsewhere.path(), &["check", "-f", "data/d1"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), ""),
        "{}",
        stderr(&out)
    );

    // test and status stay in-process.
    zstor.test().unwrap();
    let out = setup.run(&["status"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).matches("| Yes ").count(),
        6,
        "{}",
        stdout(&out)
    );

    // A second daemon with the same pid file is refused and leaves the first one alone.
    let second = setup.run(&["monitor"]);
    assert_eq!(second.status.code(), Some(1));
    assert_eq!(
        stderr(&second).trim_end(),
        r#"Error: ZstorError { kind: LocalIo("socket"), internal: Msg("another daemon instance is running") }"#
    );
    assert!(setup.socket.exists() && setup.pid_file.exists());
    assert!(zstor.check(&file).unwrap().is_some());

    // SIGUSR1 reloads the config.
    daemon.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_for("the reload", || {
        setup
            .log_text()
            .contains("INFO Reloading config after receiving SIGUSR1")
    });
    assert!(zstor.check(&file).unwrap().is_some());

    let status = daemon.stop();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!setup.socket.exists(), "socket left behind");
    assert!(!setup.pid_file.exists(), "pid file left behind");
    assert!(setup
        .log_text()
        .contains("INFO Shutting down zstor daemon after receiving SIGTERM"));
    assert!(zstor.check(&file).is_err(), "no daemon, no answer");
}

#[test]
fn daemon_runs_one_command_at_a_time_and_drains_on_signal() {
    upstream::each("zstor", check_daemon_queue);
}

/// One command at a time in arrival order: a check behind a long store waits for it. SIGINT
/// while a store runs lets the running and the queued commands finish, then exits 0.
fn check_daemon_queue(program: &Program) {
    let setup = Setup::with_daemon(program);
    let zstor = setup.zstor();
    let mut daemon = Daemon::start(&setup);
    let small = setup.file("small", b"small file");
    zstor.store(&small, None).unwrap();
    let big = slow_file(&setup, "big", 1);

    let (check_started, store_done, check_done, answer) = std::thread::scope(|scope| {
        let store = scope.spawn(|| {
            zstor.store(&big, None).unwrap();
            Instant::now()
        });
        wait_until_reading(&daemon, &big);
        let check_started = Instant::now();
        let answer = zstor.check(&small).unwrap();
        let check_done = Instant::now();
        (check_started, store.join().unwrap(), check_done, answer)
    });
    assert_eq!(answer, Some(Checksum::of_bytes(b"small file")));
    // The daemon answers the store, then runs the check: the two clients may see their answers
    // in either order, a few milliseconds apart, but never the check long before the store.
    let slack = Duration::from_millis(100);
    assert!(
        store_done - check_started > 3 * slack,
        "inconclusive: the store ended {:?} after the check began",
        store_done.saturating_duration_since(check_started)
    );
    assert!(
        check_done + slack >= store_done,
        "the check answered {:?} before the store ahead of it finished",
        store_done - check_done
    );
    assert_eq!(
        zstor.check(&big).unwrap(),
        Some(Checksum::of_file(&big).unwrap())
    );

    // SIGINT with a store running and a check queued: both finish, then the daemon exits 0.
    std::fs::write(
        &big,
        noise(2, std::fs::metadata(&big).unwrap().len() as usize),
    )
    .unwrap();
    let expected = Checksum::of_file(&big).unwrap();
    std::thread::scope(|scope| {
        let store = scope.spawn(|| zstor.store(&big, None));
        wait_until_reading(&daemon, &big);
        let check = queued(&daemon, || scope.spawn(|| zstor.check(&small)));
        daemon.signal(nix::sys::signal::Signal::SIGINT);
        store.join().unwrap().unwrap();
        assert_eq!(
            check.join().unwrap().unwrap(),
            Some(Checksum::of_bytes(b"small file"))
        );
    });
    let status = daemon.wait("SIGINT");
    assert_eq!(status.code(), Some(0));
    assert!(!setup.socket.exists() && !setup.pid_file.exists());
    drop(daemon);

    let daemon = Daemon::start(&setup);
    assert_eq!(zstor.check(&big).unwrap(), Some(expected));
    if !program.real {
        let stored = setup.calls("store");
        assert_eq!(stored.len(), 3);
        assert!(
            stored.iter().all(|line| line.ends_with("\tok")),
            "{stored:?}"
        );
    }
    assert_eq!(daemon.stop().code(), Some(0));
}

#[test]
fn a_killed_client_cancels_nothing() {
    upstream::each("zstor", check_killed_client);
}

/// A CLI killed while its retrieve waits in the daemon's queue: the daemon still performs it
/// and writes the file in place.
fn check_killed_client(program: &Program) {
    let setup = Setup::with_daemon(program);
    let zstor = setup.zstor();
    let daemon = Daemon::start(&setup);
    let wanted = content(3, 200_000);
    let file = setup.file("data/d1", &wanted);
    zstor.store(&file, None).unwrap();
    std::fs::write(&file, b"garbage").unwrap();
    let inode = std::fs::metadata(&file).unwrap().ino();
    let big = slow_file(&setup, "big", 3);

    std::thread::scope(|scope| {
        let store = scope.spawn(|| zstor.store(&big, None));
        wait_until_reading(&daemon, &big);
        let mut client = queued(&daemon, || {
            setup
                .command_in(&setup.dir, &["retrieve", "-f", file.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        });
        assert!(!store.is_finished(), "the store ended before the kill");
        client.kill().unwrap();
        assert_eq!(client.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(std::fs::read(&file).unwrap(), b"garbage", "still queued");
        store.join().unwrap().unwrap();
    });
    wait_for("the retrieve of the killed client", || {
        std::fs::read(&file).is_ok_and(|data| data == wanted)
    });
    assert_eq!(
        std::fs::metadata(&file).unwrap().ino(),
        inode,
        "written in place"
    );
    assert_eq!(daemon.stop().code(), Some(0));
}

#[test]
fn check_of_an_unknown_file_and_a_silent_client() {
    upstream::each("zstor", check_unknown_and_silent_client);
}

/// `check` of a file that is not stored: exit 0, no output, in-process and through the
/// daemon. A client that sends nothing is logged with upstream's spelling, and the daemon
/// goes on serving.
fn check_unknown_and_silent_client(program: &Program) {
    let setup = Setup::new(program);
    let unknown = setup.dir.join("not/stored");
    let check_unknown = || {
        let out = setup.run(&["check", "-f", unknown.to_str().unwrap()]);
        assert_eq!(
            (
                out.status.code(),
                stdout(&out).as_str(),
                stderr(&out).as_str()
            ),
            (Some(0), "", "")
        );
    };
    check_unknown();

    setup.write_config(&setup.config, &setup.daemon_spec());
    let daemon = Daemon::start(&setup);
    check_unknown();
    drop(UnixStream::connect(&setup.socket).unwrap());
    wait_for("the daemon to log the silent client", || {
        setup.log_text().contains(
            "ERROR Error while handeling client: error during accessing local storage for failed to read msg length prefix: unexpected end of file",
        )
    });
    let file = setup.file("after", b"after the silent client");
    setup.zstor().store(&file, None).unwrap();
    assert!(setup.zstor().check(&file).unwrap().is_some());
    assert_eq!(daemon.stop().code(), Some(0));
}

#[test]
fn store_reads_the_file_twice() {
    // Stand-in only: the window between the two reads is the stand-in's per-MiB delay, which
    // makes it deterministic. The real zstor does the same (upstream `pipeline.rs`
    // `process_file`: a checksum pass, then a second read to compress and encode) but gives no
    // hook to change the file between the two.
    let setup = Setup::new(&Program::standin("zstor"));
    let zstor = setup.zstor();
    setup.inject(r#"{"ms_per_mib": 1000}"#);
    let first = noise(4, 1 << 20);
    let second = noise(5, 1 << 20);
    let file = setup.file("d1", &first);
    std::thread::scope(|scope| {
        let store = scope.spawn(|| zstor.store(&file, None));
        wait_for("the checksum pass", || {
            setup.log_text().contains("checksum") && setup.log_text().contains("taken")
        });
        // In place, between the two reads.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .write_all_at(&second, 0)
            .unwrap();
        store.join().unwrap().unwrap();
    });
    setup.inject("{}");
    assert_eq!(
        zstor.check(&file).unwrap(),
        Some(Checksum::of_bytes(&first)),
        "the checksum of the first read"
    );
    std::fs::remove_file(&file).unwrap();
    zstor.retrieve(&file).unwrap();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        second,
        "the data of the second read"
    );
    // The stored checksum now matches no content: storing the second content again uploads.
    zstor.store(&file, None).unwrap();
    assert_eq!(
        zstor.check(&file).unwrap(),
        Some(Checksum::of_bytes(&second))
    );
}

#[test]
fn monitor_needs_a_socket() {
    upstream::each("zstor", |program| {
        let setup = Setup::new(program);
        let out = setup.run(&["monitor"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out).trim_end(),
            "Missing \"socket\" argument in config"
        );
    });
}

#[test]
fn config_and_usage_errors_exit_1() {
    upstream::each("zstor", check_config_and_usage_errors);
}

fn check_config_and_usage_errors(program: &Program) {
    let setup = Setup::new(program);
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("minimal_shards", "minimal_shardz"),
    )
    .unwrap();
    let file = setup.file("f", b"f");
    let (status, stderr_line) = failed_stderr(setup.zstor().store(&file, None).unwrap_err());
    assert_eq!(status, "exit code 1");
    assert!(
        stderr_line.starts_with("Error: ") && stderr_line.contains("minimal_shardz"),
        "{stderr_line}"
    );
    // zstor 0.5 prints the debug form of a config error, which holds the config's whole text:
    // the key and the passwords (so the product redacts what zstor prints: src/zstor/mod.rs).
    let out = setup.run(&["check", "--file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("password = \\\"{}\\\"", BACKEND_PASSWORD)),
        "{}",
        stderr(&out)
    );
    let missing = setup.zstor_with(&setup.dir.join("missing.toml"));
    let (_, stderr_line) = failed_stderr(missing.check(&file).unwrap_err());
    assert!(stderr_line.starts_with("Error: "), "{stderr_line}");

    let out = setup.run(&["store"]);
    assert_eq!(out.status.code(), Some(1), "a usage error");
    assert!(stderr(&out).contains("--file"), "{}", stderr(&out));
    assert!(setup.run(&["--help"]).status.success());
}

#[test]
fn test_and_status_talk_to_the_backends() {
    upstream::each("zstor", check_test_and_status);
}

/// The data rows of a status table: `[backend, reachable, objects, used, free, usage]`.
fn status_rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|line| line.starts_with("| ") && !line.starts_with("| backend "))
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

/// Splits `status` output into its two tables (each starts with a `+---` rule followed by the
/// header line).
fn status_tables(text: &str) -> Vec<String> {
    let mut tables: Vec<String> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if lines
            .get(i + 1)
            .is_some_and(|next| next.starts_with("| backend "))
        {
            tables.push(String::new());
        }
        if let Some(table) = tables.last_mut() {
            table.push_str(line);
            table.push('\n');
        }
    }
    tables
}

fn check_test_and_status(program: &Program) {
    // Five user-mode backends (the fifth to put among the data backends) and two sequential.
    let mut setup = Setup::bare(program, 5, 2);
    setup.write_config(&setup.config, &setup.spec());
    setup.zstor().test().unwrap();

    // Something in the first data backend (the stand-in writes nothing there), then a size
    // limit of four times what it holds.
    let data0 = setup.backends.data[0];
    let mut client =
        qsfs::zdb::Client::connect(&qsfs::zdb::Endpoint::Tcp(data0), Duration::from_secs(5))
            .unwrap();
    client
        .command(&[
            b"SELECT",
            BACKEND_NAMESPACE.as_bytes(),
            BACKEND_PASSWORD.as_bytes(),
        ])
        .unwrap();
    client.command(&[b"SET", b"", &content(9, 10_000)]).unwrap();
    let used = client.nsinfo(BACKEND_NAMESPACE).unwrap().data_size_bytes;
    let limit = used * 4;
    client
        .nsset(BACKEND_NAMESPACE, "maxsize", &limit.to_string())
        .unwrap();

    let out = setup.run(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let tables = status_tables(&text);
    assert_eq!(tables.len(), 2, "{text}");
    for table in &tables {
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("+---") && lines[2].starts_with("+==="),
            "{text}"
        );
        assert!(
            lines[1].contains("| backend ") && lines[1].ends_with("| usage percentage |"),
            "{text}"
        );
    }
    let meta = status_rows(&tables[0]);
    let data = status_rows(&tables[1]);
    assert_eq!(meta.len(), 4, "{text}");
    assert_eq!(data.len(), 2, "{text}");
    assert!(meta.iter().all(|row| row[1] == "Yes"), "{text}");
    assert_eq!(
        data[0][0],
        format!("{data0} - {BACKEND_NAMESPACE}"),
        "{text}"
    );
    assert_eq!(data[0][1], "Yes");
    assert_eq!(data[0][3], used.to_string(), "{text}");
    assert_eq!(
        data[0][4],
        limit.to_string(),
        "free space is the limit: {text}"
    );
    assert_eq!(data[0][5], "25", "{text}");
    assert_eq!(data[1][4], u64::MAX.to_string(), "no limit: {text}");
    assert_eq!(data[1][5], "0", "{text}");

    // A data namespace in user-key mode fails the test.
    let mixed = ConfigSpec {
        data: vec![setup.backends.data[0], setup.backends.meta[4]],
        ..setup.spec()
    };
    setup.write_config(&setup.config, &mixed);
    let (_, stderr_line) = failed_stderr(setup.zstor().test().unwrap_err());
    assert!(stderr_line.contains("sequential"), "{stderr_line}");

    // A backend that is down: `No` and dashes in status, and test fails.
    setup.write_config(&setup.config, &setup.spec());
    setup.backends.kill(6);
    let out = setup.run(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let data = status_rows(&status_tables(&text)[1]);
    assert_eq!(data[1][1..], ["No", "-", "-", "-", "-"], "{text}");
    assert!(setup.zstor().test().is_err());
}

#[test]
fn injected_failures_count_down() {
    // Stand-in only: failure injection through `inject.json`.
    let setup = Setup::new(&Program::standin("zstor"));
    let zstor = setup.zstor();
    setup.inject(r#"{"fail_next_stores": 2, "store_delay_ms": 1}"#);
    let files: Vec<PathBuf> = (0..3)
        .map(|i| setup.file(&format!("f{i}"), format!("file {i}").as_bytes()))
        .collect();
    for file in &files[..2] {
        let (_, stderr_line) = failed_stderr(zstor.store(file, None).unwrap_err());
        assert_eq!(stderr_line, "Error: injected failure");
        assert_eq!(
            zstor.check(file).unwrap(),
            None,
            "a failed store stores nothing"
        );
    }
    zstor.store(&files[2], None).unwrap();
    zstor.store(&files[0], None).unwrap();
    assert_eq!(
        zstor.check(&files[0]).unwrap(),
        Some(Checksum::of_bytes(b"file 0"))
    );
    let inject: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(setup.store.join("inject.json")).unwrap())
            .unwrap();
    assert_eq!(inject["fail_next_stores"], 0);
    assert_eq!(inject["store_delay_ms"], 1, "other settings are kept");
    let stores = setup.calls("store");
    assert_eq!(stores.len(), 4);
    assert_eq!(
        stores
            .iter()
            .filter(|l| l.ends_with("failed: injected failure"))
            .count(),
        2
    );

    // Concurrent stores consume the counter exactly.
    setup.inject(r#"{"fail_next_stores": 5}"#);
    let files: Vec<PathBuf> = (0..12)
        .map(|i| setup.file(&format!("c{i}"), format!("concurrent {i}").as_bytes()))
        .collect();
    let failures = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .iter()
            .map(|f| scope.spawn(|| zstor.store(f, None).is_err()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|failed| *failed)
            .count()
    });
    assert_eq!(failures, 5);

    setup.inject(r#"{"fail_store_percent": 100, "fail_retrieve": true}"#);
    assert!(zstor.store(&setup.file("g", b"g"), None).is_err());
    let (_, stderr_line) = failed_stderr(zstor.retrieve(&setup.dir.join("f0")).unwrap_err());
    assert_eq!(stderr_line, "Error: injected failure");
    setup.inject(r#"{"fail_store_percent": 0}"#);
    zstor.store(&setup.file("g", b"g"), None).unwrap();
}

#[test]
fn injected_hang_times_out() {
    // Stand-in only: failure injection through `inject.json`.
    let setup = Setup::new(&Program::standin("zstor"));
    setup.inject(r#"{"hang_store_percent": 100, "hang_secs": 3600}"#);
    let file = setup.file("f", b"f");
    let started = Instant::now();
    let err = setup
        .zstor()
        .with_timeout(Duration::from_millis(500))
        .store(&file, None)
        .unwrap_err();
    assert!(matches!(err, ZstorError::TimedOut { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        setup.calls("store").len(),
        1,
        "the hang is logged before it sleeps"
    );
    std::fs::remove_file(setup.store.join("inject.json")).unwrap();
    assert_eq!(setup.zstor().check(&file).unwrap(), None);
}

#[test]
fn unwritable_log_file_aborts() {
    // No core dumps from the aborting children.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    upstream::each("zstor", check_unwritable_log);
}

fn check_unwritable_log(program: &Program) {
    let setup = Setup::new(program);
    let file = setup.file("f", b"f");
    // A directory cannot be opened for append.
    let log_dir = setup.dir.join("logdir");
    std::fs::create_dir(&log_dir).unwrap();
    let zstor = Zstor::new(&program.path, &setup.config, TIMEOUT).with_log_file(&log_dir);
    let (status, _) = failed_stderr(zstor.store(&file, None).unwrap_err());
    assert_eq!(status, "killed by signal 6");
    let status = Command::new(&program.path)
        .arg("--log_file")
        .arg(&log_dir)
        .arg("-c")
        .arg(&setup.config)
        .args(["check", "-f"])
        .arg(&file)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGABRT));
    assert_eq!(setup.zstor().check(&file).unwrap(), None, "nothing stored");

    // The default log file is `zstor.log` in the working directory.
    let cwd = setup.dir.join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let out = Command::new(&program.path)
        .arg("-c")
        .arg(&setup.config)
        .args(["check", "-f"])
        .arg(&file)
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(cwd.join("zstor.log").exists());
}

/// Outputs captured from the real zstor 0.5.0-rc.1 (`tests/fixtures/zstor/README.md`).
fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/zstor")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_product_reads_what_the_real_zstor_printed() {
    // `check` of a stored file (`printf 'hello\n'`) and of one that is not: the runner's parser.
    let stored = qsfs::zstor::parse_check(
        Path::new("/tmp/zx/a/hello"),
        ExitStatus::from_raw(0),
        &fixture("check-stored.stdout"),
        "",
    )
    .unwrap();
    assert_eq!(stored, Some(Checksum::of_bytes(b"hello\n")));
    let absent = qsfs::zstor::parse_check(
        Path::new("/tmp/zx/a/never"),
        ExitStatus::from_raw(0),
        &fixture("check-not-stored.stdout"),
        "",
    )
    .unwrap();
    assert_eq!(absent, None);
    // A failed check (exit 1 with an error) is an error, never "not stored".
    let failed = qsfs::zstor::parse_check(
        Path::new("/tmp/zx/a/never"),
        ExitStatus::from_raw(1 << 8),
        "",
        &fixture("retrieve-unknown.stderr"),
    );
    assert!(failed.is_err());

    // The config the real zstor ran with is one our config parser accepts.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zstor.toml");
    std::fs::write(&config, fixture("zstor.toml")).unwrap();
    let parsed = qsfs::zstor::config::ZstorConfig::load(&config).unwrap();
    assert_eq!(parsed.meta_backends().len(), 4);
    assert_eq!(parsed.data_backends().count(), 2);

    // Errors: in-process the Debug form, through the daemon the Display form, one line each.
    let in_process = fixture("retrieve-unknown.stderr");
    let daemon = fixture("retrieve-unknown-daemon.stderr");
    assert_eq!(in_process.lines().count(), 1);
    assert!(in_process.starts_with("Error: ZstorError { kind: LocalIo("));
    assert!(daemon.starts_with("Zstor error: error during accessing local storage for"));

    // status: two tables, the first with a meta backend down, the second with a limit whose
    // percentage wrapped (upstream casts it to u8).
    let status = fixture("status.stdout");
    let tables = status_tables(&status);
    assert_eq!(tables.len(), 2);
    let meta = status_rows(&tables[0]);
    let data = status_rows(&tables[1]);
    assert_eq!(meta.len(), 4);
    assert_eq!(meta[3][1..], ["No", "-", "-", "-", "-"]);
    let used: u128 = data[0][3].parse().unwrap();
    let limit: u128 = data[0][4].parse().unwrap();
    assert_eq!(data[0][5], ((used * 100 / limit) as u8).to_string());

    // The daemon's log lines for a silent client and a SIGTERM.
    let log = fixture("daemon.log");
    assert!(log.contains(": ERROR Error while handeling client: "));
    assert!(log.contains(": INFO Shutting down zstor daemon after receiving SIGTERM"));
}
