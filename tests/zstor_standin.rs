//! The zstor contract stand-in (`tests/support/bin/zstor_standin.rs`) behaves like zstor
//! v0.5.0-rc.1 for everything our product observes, driven through `qsfs::zstor::Zstor`, the
//! runner the product uses.
//!
//! Every test has its own temporary directory holding the config, the log, the socket and the
//! store; the stand-in finds the store through the `zstor-standin-store` file next to the
//! config, so tests never share process-wide environment.

mod support;

use qsfs::zdb::resp::{self, Reply};
use qsfs::zstor::{Checksum, Zstor, ZstorError};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use wait_timeout::ChildExt;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The stand-in binary.
fn standin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| support::example("zstor-standin"))
}

/// A TCP port on which nothing listens (bound once, then released).
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
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
        let mut text = String::from(
            "minimal_shards = 1\nexpected_shards = 2\nredundant_groups = 0\nredundant_nodes = 0\n",
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
        for (i, address) in self.meta.iter().enumerate() {
            text.push_str(&format!(
                "\n[[meta.config.backends]]\naddress = \"{address}\"\nnamespace = \"meta{i}\"\npassword = \"metapass\"\n"
            ));
        }
        text.push_str("\n[[groups]]\n");
        for address in &self.data {
            text.push_str(&format!(
                "\n[[groups.backends]]\naddress = \"{address}\"\nnamespace = \"data\"\npassword = \"datapass\"\n"
            ));
        }
        text
    }
}

/// One test's directory: config, log, store, socket and pid file.
struct Setup {
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
    /// In-process mode: no socket; backends that do not answer.
    fn new() -> Setup {
        let setup = Setup::bare();
        setup.write_config(&setup.config, &setup.spec());
        setup
    }

    /// Daemon mode: `socket` and `pid_file` set.
    fn with_daemon() -> Setup {
        let setup = Setup::bare();
        let spec = ConfigSpec {
            socket: Some(setup.socket.clone()),
            pid_file: Some(setup.pid_file.clone()),
            ..setup.spec()
        };
        setup.write_config(&setup.config, &spec);
        setup
    }

    fn bare() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        Setup {
            config: dir.join("zstor-default.toml"),
            store: dir.join("store"),
            log: dir.join("zstor.log"),
            socket: dir.join("zstor.sock"),
            pid_file: dir.join("zstor.pid"),
            dir,
            _dir: tmp,
        }
    }

    fn spec(&self) -> ConfigSpec {
        ConfigSpec {
            root: None,
            socket: None,
            pid_file: None,
            meta: (0..4).map(|_| closed_port()).collect(),
            data: (0..2).map(|_| closed_port()).collect(),
        }
    }

    /// Writes a config at `path` and, next to it, the file naming this test's store.
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
        Zstor::new(standin(), config, TIMEOUT).with_log_file(&self.log)
    }

    /// Runs the stand-in directly (for what the runner does not offer), in `cwd`.
    fn run_in(&self, cwd: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(standin());
        cmd.arg("--log_file")
            .arg(&self.log)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .current_dir(cwd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        match child.wait_timeout(TIMEOUT).unwrap() {
            Some(_) => child.wait_with_output().unwrap(),
            None => {
                let _ = child.kill();
                panic!("zstor-standin {args:?} did not finish within {TIMEOUT:?}");
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

    fn inject(&self, json: &str) {
        std::fs::create_dir_all(&self.store).unwrap();
        std::fs::write(self.store.join("inject.json"), json).unwrap();
    }

    /// The `calls.log` lines of one command.
    fn calls(&self, command: &str) -> Vec<String> {
        std::fs::read_to_string(self.store.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.split('\t').next() == Some(command))
            .map(str::to_string)
            .collect()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `condition` every 10 ms for up to 10 s.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Test content that is not text and not tiny.
fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

#[test]
fn store_check_retrieve_round_trip() {
    let setup = Setup::new();
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
    let results: Vec<String> = setup
        .calls("store")
        .iter()
        .map(|l| l.rsplit('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(results, ["ok", "skipped", "ok"]);
    assert!(setup.calls("store")[0].contains(&format!("\t{}\t", file.display())));

    // check prints only the hex checksum, or nothing, and exits 0 in both cases.
    let out = setup.run(&["check", "-f", file.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        format!("{}\n", Checksum::of_bytes(b"new content"))
    );
    let out = setup.run(&["check", "--file", "/nonexistent/dir/file"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), ""));
    assert_eq!(
        setup
            .zstor()
            .check(Path::new("/nonexistent/dir/file"))
            .unwrap(),
        None
    );

    // One log line per command at least.
    let log = std::fs::read_to_string(&setup.log).unwrap();
    assert!(log.lines().count() >= 10, "{log}");
    assert!(log.contains(" UTC: INFO "), "{log}");
}

#[test]
fn retrieve_of_an_unknown_file_fails_with_entity_not_found() {
    let setup = Setup::new();
    let missing = setup.dir.join("data/d9");
    let err = setup.zstor().retrieve(&missing).unwrap_err();
    match &err {
        ZstorError::Failed { status, stderr, .. } => {
            assert_eq!(status, "exit code 1");
            assert!(
                stderr.starts_with("Error: ") && stderr.contains("entity not found"),
                "{stderr}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!missing.exists());
}

#[test]
fn key_path_stores_under_the_real_path() {
    let setup = Setup::new();
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

    std::fs::remove_file(&live).unwrap();
    zstor.retrieve(&live).unwrap();
    assert_eq!(std::fs::read(&live).unwrap(), b"second snapshot");

    // The key directory must exist.
    let err = zstor
        .store(&snapshot, Some(&setup.dir.join("no/such/dir")))
        .unwrap_err();
    assert!(matches!(err, ZstorError::Failed { .. }), "{err}");
}

#[test]
fn root_is_stripped_from_keys_and_enforced() {
    let setup = Setup::new();
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
    match first.store(&outside, None).unwrap_err() {
        ZstorError::Failed { stderr, .. } => assert!(
            stderr.contains("not in the file tree rooted at"),
            "{stderr}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(first.check(&outside).is_err());
}

#[test]
fn delete_directory_and_rebuild() {
    let setup = Setup::new();
    let zstor = setup.zstor();

    let doomed = setup.file("doomed", b"delete me after upload");
    let out = setup.run(&["store", "--delete", "-f", doomed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!doomed.exists());
    assert_eq!(
        zstor.check(&doomed).unwrap(),
        Some(Checksum::of_bytes(b"delete me after upload"))
    );

    // A directory: each regular file in it, not recursively, not symlinks.
    let a = setup.file("dir/a", b"a");
    let b = setup.file("dir/b", b"b");
    let nested = setup.file("dir/sub/c", b"c");
    std::os::unix::fs::symlink(&doomed, setup.dir.join("dir/link")).unwrap();
    zstor.store(&setup.dir.join("dir"), None).unwrap();
    assert_eq!(zstor.check(&a).unwrap(), Some(Checksum::of_bytes(b"a")));
    assert_eq!(zstor.check(&b).unwrap(), Some(Checksum::of_bytes(b"b")));
    assert_eq!(zstor.check(&nested).unwrap(), None);
    assert_eq!(setup.calls("store").len(), 3);

    // rebuild by file and by key (bare or upstream's raw metadata key).
    zstor.rebuild(&a).unwrap();
    let key = Checksum::of_bytes(a.as_os_str().as_encoded_bytes()).to_string();
    for key in [key.clone(), format!("/qsfs/meta/{key}")] {
        let out = setup.run(&["rebuild", "-k", &key]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
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
        let child = Command::new(standin())
            .arg("--log_file")
            .arg(&setup.log)
            .arg("-c")
            .arg(&setup.config)
            .arg("monitor")
            .current_dir(&setup.dir)
            .stdin(Stdio::null())
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

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn stop(mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.child
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("the daemon did not stop on SIGTERM")
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
    let setup = Setup::with_daemon();
    let zstor = setup.zstor();
    let file = setup.file("data/d1", &content(7, 100_000));

    // socket set but nothing listening: an error, no fallback to in-process.
    match zstor.store(&file, None).unwrap_err() {
        ZstorError::Failed { stderr, status, .. } => {
            assert_eq!(status, "exit code 1");
            assert!(
                stderr.contains("Could not connect to daemon socket"),
                "{stderr}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(setup.calls("store").is_empty());
    assert!(zstor.check(&file).is_err());

    // Stale socket and pid file from a killed daemon do not prevent a start.
    std::fs::write(&setup.socket, b"stale").unwrap();
    std::fs::write(&setup.pid_file, "999999999\n").unwrap();
    let daemon = Daemon::start(&setup);
    assert_eq!(
        std::fs::read_to_string(&setup.pid_file).unwrap().trim(),
        daemon.child.id().to_string()
    );

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
    // The daemon performed them (and logged them in the store).
    assert_eq!(setup.calls("store").len(), 1);
    assert_eq!(setup.calls("retrieve").len(), 1);

    // Errors come back as `Zstor error: …`.
    match zstor.retrieve(&setup.dir.join("data/unknown")).unwrap_err() {
        ZstorError::Failed { stderr, .. } => {
            assert!(
                stderr.starts_with("Zstor error: ") && stderr.contains("entity not found"),
                "{stderr}"
            )
        }
        other => panic!("{other:?}"),
    }

    // Paths are sent as given and resolved in the daemon's working directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = setup.run_in(elsewhere.path(), &["check", "-f", "data/d1"]);
    assert_eq!(
        stdout(&out),
        format!("{}\n", Checksum::of_file(&file).unwrap()),
        "{}",
        stderr(&out)
    );

    // test and status stay in-process.
    assert!(zstor.test().is_err());
    assert!(stdout(&setup.run(&["status"])).contains("| No "));

    // A second daemon with the same pid file is refused and leaves the first one alone.
    let second = setup.run(&["monitor"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("already running"),
        "{}",
        stderr(&second)
    );
    assert!(setup.socket.exists() && setup.pid_file.exists());
    assert!(zstor.check(&file).unwrap().is_some());

    // SIGUSR1 reloads the config.
    daemon.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_for("the reload", || {
        std::fs::read_to_string(&setup.log)
            .unwrap()
            .contains("reloaded")
    });
    assert!(zstor.check(&file).unwrap().is_some());

    let status = daemon.stop();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!setup.socket.exists(), "socket left behind");
    assert!(!setup.pid_file.exists(), "pid file left behind");
    assert!(zstor.check(&file).is_err(), "no daemon, no answer");
}

#[test]
fn daemon_serializes_requests_and_finishes_the_running_one_on_signal() {
    let setup = Setup::with_daemon();
    let zstor = setup.zstor();
    let daemon = Daemon::start(&setup);

    // One worker: three stores of 300 ms each take at least 900 ms together.
    setup.inject(r#"{"store_delay_ms": 300}"#);
    let files: Vec<PathBuf> = (0..3)
        .map(|i| setup.file(&format!("s{i}"), format!("serial {i}").as_bytes()))
        .collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .iter()
            .map(|f| scope.spawn(|| zstor.store(f, None)))
            .collect();
        for handle in handles {
            handle.join().unwrap().unwrap();
        }
    });
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // SIGINT while a store runs: the store completes, then the daemon exits 0.
    setup.inject(r#"{"store_delay_ms": 1000}"#);
    let lock = setup.store.join("inject.lock");
    let _ = std::fs::remove_file(&lock);
    let file = setup.file("last", b"stored during shutdown");
    std::thread::scope(|scope| {
        let store = scope.spawn(|| zstor.store(&file, None));
        // The lock file appears when the daemon starts the store, before its delay.
        wait_for("the store to start", || lock.exists());
        daemon.signal(nix::sys::signal::Signal::SIGINT);
        store.join().unwrap().unwrap();
    });
    let mut daemon = daemon;
    let status = daemon
        .child
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("the daemon did not stop on SIGINT");
    assert_eq!(status.code(), Some(0));
    assert!(!setup.socket.exists() && !setup.pid_file.exists());
    std::fs::remove_file(setup.store.join("inject.json")).unwrap();
    let stored = setup.calls("store");
    assert_eq!(stored.len(), 4);
    assert!(
        stored.iter().all(|line| line.ends_with("\tok")),
        "{stored:?}"
    );
}

#[test]
fn monitor_needs_a_socket() {
    let setup = Setup::new();
    let out = setup.run(&["monitor"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Missing \"socket\" argument in config"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_and_usage_errors_exit_1() {
    let setup = Setup::new();
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("minimal_shards", "minimal_shardz"),
    )
    .unwrap();
    let file = setup.file("f", b"f");
    match setup.zstor().store(&file, None).unwrap_err() {
        ZstorError::Failed { stderr, status, .. } => {
            assert_eq!(status, "exit code 1");
            assert!(stderr.starts_with("Error: "), "{stderr}");
        }
        other => panic!("{other:?}"),
    }
    let missing =
        Zstor::new(standin(), setup.dir.join("missing.toml"), TIMEOUT).with_log_file(&setup.log);
    assert!(missing.check(&file).is_err());

    let out = setup.run(&["store"]);
    assert_eq!(out.status.code(), Some(1), "a usage error");
    assert!(setup.run(&["--help"]).status.success());
}

/// A minimal 0-db answering PING, SELECT and NSINFO with the given namespace mode.
fn fake_zdb(mode: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_zdb(stream, mode));
        }
    });
    address
}

fn serve_zdb(mut stream: TcpStream, mode: &str) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Ok(Some((request, used))) = resp::parse(&buf) {
            buf.drain(..used);
            let Reply::Array(args) = request else { return };
            let name = match args.first() {
                Some(Reply::Bulk(name)) => String::from_utf8_lossy(name).to_uppercase(),
                _ => return,
            };
            let reply = match name.as_str() {
                "PING" => Reply::Status("PONG".into()),
                "SELECT" => Reply::Status("OK".into()),
                "NSINFO" => Reply::Bulk(
                    format!(
                        "# namespace\nname: data\nentries: 3\npublic: no\nworm: no\nlocked: no\npassword: yes\n\
                         data_size_bytes: 250\ndata_limits_bytes: 1000\nindex_size_bytes: 10\n\
                         next_internal_id: 0x00000003\nmode: {mode}\nstats_index_io_errors: 0\n\
                         stats_index_faults: 0\nstats_data_io_errors: 0\nstats_data_faults: 0\n"
                    )
                    .into_bytes(),
                ),
                _ => Reply::Error("Command not supported".into()),
            };
            let mut out = Vec::new();
            reply.encode(&mut out);
            if stream.write_all(&out).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn test_and_status_talk_to_the_backends() {
    let setup = Setup::new();
    // Backends that do not answer.
    assert!(matches!(
        setup.zstor().test(),
        Err(ZstorError::Failed { .. })
    ));

    let sequential = ConfigSpec {
        data: vec![fake_zdb("sequential"), fake_zdb("sequential")],
        ..setup.spec()
    };
    setup.write_config(&setup.config, &sequential);
    setup.zstor().test().unwrap();
    let out = setup.run(&["status"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let tables: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(tables.len(), 2, "{text}");
    assert!(
        tables[0].contains("| backend") && tables[0].contains("usage percentage"),
        "{text}"
    );
    assert_eq!(
        tables[0].matches("| No ").count(),
        4,
        "meta backends are down: {text}"
    );
    assert_eq!(tables[1].matches("| Yes ").count(), 2, "{text}");
    assert!(
        tables[1].contains(&format!("| {} - data ", sequential.data[0])),
        "{text}"
    );
    assert!(tables[1].contains("| 25%"), "{text}");

    // A data namespace in user-key mode fails the test.
    let mixed = ConfigSpec {
        data: vec![fake_zdb("sequential"), fake_zdb("userkey")],
        ..setup.spec()
    };
    setup.write_config(&setup.config, &mixed);
    match setup.zstor().test().unwrap_err() {
        ZstorError::Failed { stderr, .. } => assert!(stderr.contains("sequential"), "{stderr}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn injected_failures_count_down() {
    let setup = Setup::new();
    let zstor = setup.zstor();
    setup.inject(r#"{"fail_next_stores": 2, "store_delay_ms": 1}"#);
    let files: Vec<PathBuf> = (0..3)
        .map(|i| setup.file(&format!("f{i}"), format!("file {i}").as_bytes()))
        .collect();
    for file in &files[..2] {
        match zstor.store(file, None).unwrap_err() {
            ZstorError::Failed { stderr, .. } => assert_eq!(stderr, "Error: injected failure"),
            other => panic!("{other:?}"),
        }
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
    match zstor.retrieve(&setup.dir.join("f0")).unwrap_err() {
        ZstorError::Failed { stderr, .. } => assert_eq!(stderr, "Error: injected failure"),
        other => panic!("{other:?}"),
    }
    setup.inject(r#"{"fail_store_percent": 0}"#);
    zstor.store(&setup.file("g", b"g"), None).unwrap();
}

#[test]
fn injected_hang_times_out() {
    let setup = Setup::new();
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

    let setup = Setup::new();
    let file = setup.file("f", b"f");
    // A directory cannot be opened for append.
    let log_dir = setup.dir.join("logdir");
    std::fs::create_dir(&log_dir).unwrap();
    let zstor = Zstor::new(standin(), &setup.config, TIMEOUT).with_log_file(&log_dir);
    match zstor.store(&file, None).unwrap_err() {
        ZstorError::Failed { status, .. } => assert_eq!(status, "killed by signal 6"),
        other => panic!("{other:?}"),
    }
    let status = Command::new(standin())
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
    assert!(setup.calls("store").is_empty());

    // The default log file is `zstor.log` in the working directory.
    let cwd = setup.dir.join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let out = Command::new(standin())
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
