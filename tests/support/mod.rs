//! Helpers shared by the integration and system tests. The contract stand-ins themselves are
//! the `qsfs-standins` crate (`tests/standins/`).

#![allow(dead_code)] // the integration and the system tests each use a different part

pub mod link;
pub mod upstream;
pub mod wan;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A scratch directory in /var/tmp, removed when dropped unless `QSFS_TEST_KEEP` is set (then
/// it stays for a post-mortem, like the containers of the system tests).
pub fn work_dir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir_in("/var/tmp").unwrap();
    dir.disable_cleanup(std::env::var_os("QSFS_TEST_KEEP").is_some());
    dir
}

/// The path of a binary of the `qsfs-standins` crate (a stand-in or a test driver) in this
/// profile's target dir. Under cargo they are (re)built once first, because `cargo test` does
/// not build another package's binaries.
pub fn bin(name: &str) -> PathBuf {
    static PROFILE_DIR: OnceLock<PathBuf> = OnceLock::new();
    let profile_dir = PROFILE_DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        if let Some(cargo) = std::env::var_os("CARGO") {
            let mut build = Command::new(cargo);
            // Inherited, the variables cargo sets for this test make build scripts that watch
            // them (ring's) rebuild on every switch between the outer and this nested build.
            for (name, _) in std::env::vars_os() {
                if name.to_str().is_some_and(|n| {
                    n.starts_with("CARGO_PKG_")
                        || n.starts_with("CARGO_MANIFEST_")
                        || n == "CARGO_CRATE_NAME"
                }) {
                    build.env_remove(name);
                }
            }
            // `--workspace --examples` (there are none) resolves features as
            // `cargo test --workspace` does, so the library it built is reused; `--bin`
            // names what the tests run, so no product binary is relinked under them.
            build.args(["build", "--quiet", "--workspace", "--examples"]);
            build.args([
                "--bin",
                "*-standin",
                "--bin",
                "unit-control",
                "--manifest-path",
            ]);
            build.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
            build
                .arg("--target-dir")
                .arg(profile_dir.parent().expect("target dir"));
            if profile_dir.ends_with("release") {
                build.arg("--release");
            }
            let status = build
                .status()
                .expect("cannot run cargo to build qsfs-standins");
            assert!(status.success(), "building qsfs-standins failed");
        }
        profile_dir
    });
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p qsfs-standins`",
        bin.display()
    );
    bin
}

/// How long tests wait for anything.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Polls `ready` every 20 ms until it gives a value; panics with `child`'s log (the `label`
/// writing to `log`) when the child exits first or [`TIMEOUT`] passes ("the zdb never
/// `what`").
fn wait_while_running<T>(
    child: &mut std::process::Child,
    label: &str,
    log: &Path,
    what: &str,
    mut ready: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + TIMEOUT;
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Some(value) = ready() {
            return value;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the {label} exited with {status}:\n{}", log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the {label} never {what}:\n{}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Polls `probe` every 20 ms until it returns something or [`TIMEOUT`] passes.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// One backend of a zstor config: address, namespace, password.
pub type ConfigBackend = (String, String, String);

/// The monitor's settings when its config names only the keys it requires.
pub fn monitor_defaults() -> qsfs::config::monitor::MonitorConfig {
    let text = "zdb_index_dir_path = \"/i\"\nzdb_data_dir_path = \"/d\"\nzstor_config_path = \"/z\"\nzstor_bin_path = \"/b\"\n";
    qsfs::config::Source::new(Path::new("/defaults/monitor.toml"), text)
        .parse()
        .unwrap()
}

/// `len` bytes of deterministic, incompressible content (snappy gains nothing, as on encrypted
/// or media data), different for each `seed`.
pub fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// A zstor v0.5 config over these metadata backends and one group of these data backends,
/// `minimal_shards` one less than the data backends (at least 1). `socket` turns the daemon on.
pub fn zstor_config_over(
    meta: &[ConfigBackend],
    data: &[ConfigBackend],
    socket: Option<&Path>,
) -> String {
    let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let expected = data.len();
    let minimal = expected.saturating_sub(1).max(1);
    let mut text = format!(
        "minimal_shards = {minimal}\nexpected_shards = {expected}\nredundant_groups = 0\nredundant_nodes = 0\n"
    );
    if let Some(socket) = socket {
        text.push_str(&format!(
            "socket = \"{}\"\npid_file = \"{}.pid\"\n",
            socket.display(),
            socket.display()
        ));
    }
    text.push_str(&format!(
        "\n[encryption]\nalgorithm = \"AES\"\nkey = \"{key}\"\n\n[compression]\nalgorithm = \"snappy\"\n\n\
         [meta]\ntype = \"zdb\"\n\n[meta.config]\nprefix = \"qsfs\"\n\n[meta.config.encryption]\nalgorithm = \"AES\"\nkey = \"{key}\"\n"
    ));
    for (address, namespace, password) in meta {
        text.push_str(&format!(
            "\n[[meta.config.backends]]\naddress = \"{address}\"\nnamespace = \"{namespace}\"\npassword = \"{password}\"\n"
        ));
    }
    text.push_str("\n[[groups]]\n");
    for (address, namespace, password) in data {
        text.push_str(&format!(
            "\n[[groups.backends]]\naddress = \"{address}\"\nnamespace = \"{namespace}\"\npassword = \"{password}\"\n"
        ));
    }
    text
}

/// A zstor v0.5 config with four meta and two data backends (nothing needs to listen there:
/// the stand-in keeps objects in its store directory).
pub fn zstor_config_text(socket: Option<&Path>) -> String {
    let backend = |address: String, namespace: String, password: &str| {
        (address, namespace, password.to_string())
    };
    let meta: Vec<_> = (1..=4)
        .map(|port| {
            backend(
                format!("[::1]:{port}"),
                format!("meta{port}"),
                "metapass-secret",
            )
        })
        .collect();
    let data: Vec<_> = (5..=6)
        .map(|port| {
            backend(
                format!("127.0.0.1:{port}"),
                "data".into(),
                "datapass-secret",
            )
        })
        .collect();
    zstor_config_over(&meta, &data, socket)
}

/// A temporary appliance layout: zdb roots, spool, state, `qsfs.toml`, a zstor config for the
/// zstor stand-in and the stand-in's store (the "remote backends").
pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub index: PathBuf,
    pub data: PathBuf,
    pub spool: PathBuf,
    pub state: PathBuf,
    pub store: PathBuf,
    pub socket: PathBuf,
    pub qsfs_config: PathBuf,
    /// The hook's read lane, served as `qsfs-zstor-reads.socket` does.
    pub reads: ReadLane,
    pub zstor_config: PathBuf,
    /// The zdb and zstor this layout runs.
    pub stack: upstream::Stack,
    /// The 0-db backends its zstor config names, when they listen ([`Appliance::on`]).
    pub backends: Option<upstream::ZdbBackends>,
}

impl Appliance {
    /// A fresh layout on the stand-ins whose zstor store is `store` (shared between
    /// appliances to play the same backends), or its own when `None`.
    pub fn new(store: Option<&Path>, extra_config: &str) -> Appliance {
        Appliance::build(&upstream::Stack::standins(), store, None, extra_config)
    }

    /// A fresh layout on `stack`, with 0-db backends of its own (the stack's zdb) that answer
    /// the monitor's backend checks; the real zstor stores on them, the stand-in in its store.
    pub fn on(stack: &upstream::Stack, extra_config: &str) -> Appliance {
        let backends = upstream::ZdbBackends::start(&stack.zdb, 4, 2);
        Appliance::with_backends(stack, backends, extra_config)
    }

    /// ... with these backends.
    pub fn with_backends(
        stack: &upstream::Stack,
        backends: upstream::ZdbBackends,
        extra_config: &str,
    ) -> Appliance {
        Appliance::build(stack, None, Some(backends), extra_config)
    }

    fn build(
        stack: &upstream::Stack,
        store: Option<&Path>,
        backends: Option<upstream::ZdbBackends>,
        extra_config: &str,
    ) -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = store
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.join("store"));
        std::fs::create_dir_all(&store).unwrap();
        let zstor_config = root.join("etc/zstor-default.toml");
        std::fs::create_dir_all(zstor_config.parent().unwrap()).unwrap();
        let zstor_text = match &backends {
            Some(backends) => backends.zstor_config(None),
            None => zstor_config_text(None),
        };
        std::fs::write(&zstor_config, zstor_text).unwrap();
        std::fs::write(
            root.join("etc/zstor-standin-store"),
            store.display().to_string(),
        )
        .unwrap();
        let qsfs_config = root.join("etc/qsfs.toml");
        let reads = ReadLane::start(root, &qsfs_config);
        let appliance = Appliance {
            reads,
            index: root.join("index"),
            data: root.join("data"),
            spool: root.join("spool"),
            state: root.join("state"),
            socket: root.join("zdb.sock"),
            store,
            qsfs_config,
            zstor_config,
            dir,
            stack: stack.clone(),
            backends,
        };
        appliance.write_qsfs_config(extra_config);
        appliance
    }

    /// Writes `qsfs.toml` with this layout's paths, followed by `extra` (more sections).
    pub fn write_qsfs_config(&self, extra: &str) {
        let text = format!(
            "[paths]\nindex_dir = \"{}\"\ndata_dir = \"{}\"\nspool_dir = \"{}\"\nstate_dir = \"{}\"\nzdb_socket = \"{}\"\nzstor_reads_socket = \"{}\"\nmountpoint = \"{}\"\n\n\
             [zstor]\nbin = \"{}\"\nconfig = \"{}\"\nlog_file = \"{}\"\ntimeout_secs = 20\n\n{extra}",
            self.index.display(),
            self.data.display(),
            self.spool.display(),
            self.state.display(),
            self.socket.display(),
            self.reads.socket.display(),
            self.dir.path().join("mnt").display(),
            self.stack.zstor.path.display(),
            self.zstor_config.display(),
            self.dir.path().join("zstor.log").display(),
        );
        std::fs::write(&self.qsfs_config, text).unwrap();
    }

    /// The zstor runner the product would use.
    pub fn zstor(&self) -> qsfs::zstor::Zstor {
        qsfs::zstor::Zstor::new(
            &self.stack.zstor.path,
            &self.zstor_config,
            std::time::Duration::from_secs(20),
        )
        .with_log_file(self.dir.path().join("zstor.log"))
    }

    /// The spool the hook writes.
    pub fn spool(&self) -> qsfs::spool::Spool {
        qsfs::spool::Spool::new(&self.spool)
    }

    /// Every spool job, oldest first (panics on a bad job).
    pub fn jobs(&self) -> Vec<qsfs::spool::Job> {
        self.spool()
            .jobs()
            .unwrap()
            .into_iter()
            .filter_map(|job| match job {
                Ok(job) => Some(job),
                // A running monitor removed it between the listing and the read.
                Err(bad) if !bad.path.exists() => None,
                Err(bad) => panic!("a whole job: {bad:?}"),
            })
            .collect()
    }

    /// Does what zstor_monitor does, minimally: uploads every spool job's files, removes the
    /// jobs, then publishes the newest restore point (once the `jump-data` job of its data
    /// file, which zdb does not wait for, is there too).
    pub fn drain_spool(&self) {
        wait_for("the newest restore point published", || {
            self.upload_jobs();
            (self.publish_restore_points().waiting == 0).then_some(())
        });
    }

    /// Uploads every spool job's files and removes the jobs (restore points stay unpublished).
    pub fn upload_jobs(&self) {
        let zstor = self.zstor();
        for job in self.jobs() {
            assert!(job.snapshots_usable(), "written in this boot");
            for file in &job.files {
                let (source, key_path) = file.upload_source();
                zstor.store(source, key_path).unwrap();
            }
            self.spool().remove(&job.id).unwrap();
        }
    }

    /// Uploads the restore points the hook took and publishes the newest, as the monitor does
    /// once every data file is uploaded.
    pub fn publish_restore_points(&self) -> qsfs::monitor::cuts::Published {
        let cuts = qsfs::cuts::Cuts::new(&self.state);
        let scratch = self.dir.path().join("publish-scratch");
        qsfs::monitor::cuts::publish(&cuts, &self.zstor(), &self.data, &scratch, |_, _| true)
            .unwrap()
    }

    /// Starts this layout's zdb with `zdb-hook` as its hook.
    pub fn start_zdb(&self, extra_args: &[&str], env: &[(&str, &str)]) -> Zdb {
        self.start_zdb_with(&self.stack.zdb, extra_args, env)
    }

    /// Starts `zdb` (the stand-in or the real 0-db) on this layout with `zdb-hook` as its hook.
    pub fn start_zdb_with(
        &self,
        zdb: &upstream::Program,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Zdb {
        let log = self.dir.path().join(format!(
            "zdb-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(&zdb.path);
        command
            .arg("--index")
            .arg(&self.index)
            .arg("--data")
            .arg(&self.data)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--hook")
            .arg(env!("CARGO_BIN_EXE_zdb-hook"))
            .args(extra_args)
            .env("QSFS_CONFIG", &self.qsfs_config)
            .env("QSFS_LOG_TARGET", "stderr")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        Zdb {
            child: command
                .spawn()
                .unwrap_or_else(|e| panic!("start the {}: {e}", zdb.label())),
            log,
            endpoint: qsfs::zdb::Endpoint::Unix(self.socket.clone()),
            program: zdb.clone(),
            lockfile: self.index.join(".lockfile"),
        }
    }
}

/// The hook's read lane as systemd serves it (`qsfs-zstor-reads.socket`, `Accept=yes`):
/// `systemd-socket-activate --accept` runs `zdb-hook serve-reads` for each connection. Stopped
/// when dropped.
pub struct ReadLane {
    child: std::process::Child,
    /// Its socket (`[paths] zstor_reads_socket`).
    pub socket: PathBuf,
    /// What it and its requests printed.
    pub log: PathBuf,
}

impl ReadLane {
    /// Listens in `dir` for the layout whose `qsfs.toml` is `qsfs_config`.
    fn start(dir: &Path, qsfs_config: &Path) -> ReadLane {
        let socket = dir.join("zstor-reads.sock");
        let log = dir.join("zstor-reads.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("systemd-socket-activate")
            .arg("--accept")
            .arg("--listen")
            .arg(&socket)
            .arg(format!("--setenv=QSFS_CONFIG={}", qsfs_config.display()))
            .arg("--setenv=QSFS_LOG_TARGET=stderr")
            .arg(env!("CARGO_BIN_EXE_zdb-hook"))
            .args(["serve-reads", "unix:///read-lane"])
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("systemd-socket-activate (the systemd package) runs the read lane");
        wait_for("the read lane's socket", || socket.exists().then_some(()));
        ReadLane { child, socket, log }
    }

    /// What it and its requests printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ReadLane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running 0-db (stand-in or real); killed when dropped.
pub struct Zdb {
    pub child: std::process::Child,
    pub log: PathBuf,
    pub endpoint: qsfs::zdb::Endpoint,
    /// Which implementation runs.
    pub program: upstream::Program,
    /// `<index>/.lockfile`, which zdb locks and its hook children inherit.
    pub lockfile: PathBuf,
}

impl Zdb {
    /// What the stand-in and its hooks printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client, once `PING` answers (which is after the `ready` hook returned).
    pub fn client(&mut self) -> qsfs::zdb::Client {
        let endpoint = self.endpoint.clone();
        let (label, log) = (self.program.label(), self.log.clone());
        wait_while_running(&mut self.child, &label, &log, "answered PING", || {
            let mut client =
                qsfs::zdb::Client::connect(&endpoint, std::time::Duration::from_secs(10)).ok()?;
            client.ping().is_ok().then_some(client)
        })
    }

    /// Waits for the process to exit, and for the hooks it left running (`namespace-closing`
    /// is not waited for), which hold its lock: the real zdb refuses to start until they end.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let child = &mut self.child;
        let status = wait_for("zdb to exit", || child.try_wait().unwrap());
        let lockfile = &self.lockfile;
        wait_for("zdb's hooks to release its lock", || {
            let Ok(file) = std::fs::File::open(lockfile) else {
                return Some(());
            };
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
                .ok()
                .map(drop)
        });
        status
    }

    /// SIGKILL, then waits for the exit.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit (zdb runs `close` and exits 143).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.wait()
    }
}

impl Drop for Zdb {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `monitor_config.toml` for an appliance layout, with short intervals for tests; `extra` adds
/// keys or replaces the defaults here (a key it sets is left out of the defaults).
pub fn monitor_config_text(app: &Appliance, extra: &str) -> String {
    let root = app.dir.path();
    let defaults = [
        ("spool_dir", format!("\"{}\"", app.spool.display())),
        ("state_dir", format!("\"{}\"", app.state.display())),
        (
            "status_file",
            format!("\"{}\"", root.join("run/monitor-status.json").display()),
        ),
        (
            "zstor_log_file",
            format!("\"{}\"", root.join("zstor.log").display()),
        ),
        ("zstor_timeout_secs", "20".to_string()),
        ("retry_initial_secs", "1".to_string()),
        ("retry_max_secs", "2".to_string()),
        ("reconcile_interval_secs", "2".to_string()),
        ("eviction_interval_secs", "1".to_string()),
        ("backend_check_interval_secs", "1".to_string()),
        ("backend_timeout_secs", "1".to_string()),
        ("shutdown_timeout_secs", "10".to_string()),
    ];
    let mut text = format!(
        "zdb_index_dir_path = \"{}\"\nzdb_data_dir_path = \"{}\"\nzstor_config_path = \"{}\"\nzstor_bin_path = \"{}\"\n",
        app.index.display(),
        app.data.display(),
        app.zstor_config.display(),
        app.stack.zstor.path.display()
    );
    for (key, value) in defaults {
        if !extra
            .lines()
            .any(|line| line.trim_start().starts_with(&format!("{key} ")))
        {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    // `extra` lists its top-level keys before any [table].
    text.push_str(extra);
    text.push('\n');
    text
}

/// A running `zstor_monitor`; killed when dropped.
pub struct Monitor {
    pub child: std::process::Child,
    pub log: PathBuf,
    pub config: PathBuf,
    pub status_file: PathBuf,
}

impl Monitor {
    /// Writes the config and starts the monitor with `env` added.
    pub fn start(app: &Appliance, extra_config: &str, env: &[(&str, &str)]) -> Monitor {
        let config = app.dir.path().join("etc/monitor_config.toml");
        std::fs::write(&config, monitor_config_text(app, extra_config)).unwrap();
        Monitor::start_with(app, &config, env)
    }

    /// Starts the monitor on an existing config file.
    pub fn start_with(app: &Appliance, config: &Path, env: &[(&str, &str)]) -> Monitor {
        let log = app.dir.path().join(format!(
            "monitor-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_zstor_monitor"))
            .arg("-c")
            .arg(config)
            .env("QSFS_LOG_TARGET", "stderr")
            .env("QSFS_LOG", "debug")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start zstor_monitor");
        Monitor {
            child,
            log,
            config: config.to_path_buf(),
            status_file: app.dir.path().join("run/monitor-status.json"),
        }
    }

    /// What the monitor logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The status it published last (once it published one).
    pub fn status(&self) -> qsfs::monitor::status::MonitorStatus {
        let path = self.status_file.clone();
        wait_for("the monitor's status", || {
            qsfs::monitor::status::MonitorStatus::read(&path).ok()
        })
    }

    /// Waits until `probe` holds for a status this process published (a status file left by
    /// an earlier run does not count).
    pub fn wait_status(
        &mut self,
        what: &str,
        mut probe: impl FnMut(&qsfs::monitor::status::MonitorStatus) -> bool,
    ) -> qsfs::monitor::status::MonitorStatus {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("zstor_monitor exited with {status}:\n{}", self.log());
            }
            let status = qsfs::monitor::status::MonitorStatus::read(&self.status_file).ok();
            let pid = self.child.id();
            if let Some(status) = status.clone().filter(|s| s.pid == pid && probe(s)) {
                return status;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last status: {status:#?}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Sends a signal.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Rewrites its config as [`monitor_config_text`] with `extra`, and sends SIGHUP.
    pub fn reconfigure(&self, app: &Appliance, extra: &str) {
        std::fs::write(&self.config, monitor_config_text(app, extra)).unwrap();
        self.signal(nix::sys::signal::Signal::SIGHUP);
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_for("zstor_monitor to exit", || child.try_wait().unwrap())
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `size=` of the zdbfs stand-in mounts.
pub const ZDBFS_SIZE: u64 = 1 << 30;

pub fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = mountpoint.to_string_lossy();
    info.lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_ref()))
}

/// `umount -l`, for every mount stacked on `mountpoint`.
pub fn lazy_unmount(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()).expect("path");
    for _ in 0..8 {
        if !is_mounted(mountpoint) {
            return;
        }
        // SAFETY: a valid NUL-terminated path.
        unsafe {
            libc::umount2(path.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// A zdbfs process (stand-in or real) and its mountpoint. Dropping it kills the process and
/// lazily unmounts whatever is left, so a failing test leaves no mount behind.
pub struct Fs {
    pub child: std::process::Child,
    pub mountpoint: PathBuf,
    pub log: PathBuf,
    /// Which implementation runs.
    pub program: upstream::Program,
}

impl Fs {
    /// Starts the stand-in with `-o <options> <mountpoint>` (without waiting for the mount).
    pub fn spawn(app: &Appliance, mountpoint: &Path, options: &str) -> Fs {
        Fs::spawn_with(
            &upstream::Program::standin("zdbfs"),
            app,
            mountpoint,
            options,
        )
    }

    /// Starts `zdbfs` (the stand-in or the real one, both stay in the foreground without `-f`)
    /// with `-o <options> <mountpoint>`, as the appliance's unit does (without waiting for the
    /// mount).
    pub fn spawn_with(
        zdbfs: &upstream::Program,
        app: &Appliance,
        mountpoint: &Path,
        options: &str,
    ) -> Fs {
        std::fs::create_dir_all(mountpoint).unwrap();
        let mountpoint = std::fs::canonicalize(mountpoint).unwrap();
        let log = app.dir.path().join(format!(
            "zdbfs-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&zdbfs.path)
            .arg("-o")
            .arg(options)
            .arg(&mountpoint)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start the {}: {e}", zdbfs.label()));
        Fs {
            child,
            mountpoint,
            log,
            program: zdbfs.clone(),
        }
    }

    /// Starts the stand-in on `<socket>` with `autons,size=SIZE` plus `extra`, and waits for the
    /// mount.
    pub fn mount(app: &Appliance, mountpoint: &Path, extra: &str) -> Fs {
        Fs::mount_with(&upstream::Program::standin("zdbfs"), app, mountpoint, extra)
    }

    /// [`Fs::mount`] with `zdbfs` (the stand-in or the real one).
    pub fn mount_with(
        zdbfs: &upstream::Program,
        app: &Appliance,
        mountpoint: &Path,
        extra: &str,
    ) -> Fs {
        let mut options = format!("unix={},autons,size={ZDBFS_SIZE}", app.socket.display());
        if !extra.is_empty() {
            options.push(',');
            options.push_str(extra);
        }
        let mut fs = Fs::spawn_with(zdbfs, app, mountpoint, &options);
        fs.wait_mounted();
        fs
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_mounted(&mut self) {
        let (label, log) = (self.program.label(), self.log.clone());
        let mountpoint = self.mountpoint.clone();
        wait_while_running(&mut self.child, &label, &log, "mounted", || {
            is_mounted(&mountpoint).then_some(())
        })
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the {} did not exit:\n{}",
                self.program.label(),
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGTERM: the stand-in writes its cache, unmounts and exits 0.
    pub fn stop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.wait_exit();
        assert_eq!(status.code(), Some(0), "{}", self.log());
        assert!(!is_mounted(&self.mountpoint), "still mounted after SIGTERM");
    }

    /// SIGKILL: the mount is left stale ("Transport endpoint is not connected"); then cleaned
    /// up with a lazy unmount.
    pub fn kill(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait_exit();
        let error = std::fs::metadata(&self.mountpoint).expect_err("the mount must be stale");
        assert_eq!(error.raw_os_error(), Some(libc::ENOTCONN), "{error}");
        lazy_unmount(&self.mountpoint);
        assert!(!is_mounted(&self.mountpoint));
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.mountpoint.join(name)
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        lazy_unmount(&self.mountpoint);
    }
}

/// A small tmpfs mounted on a directory for a test (the tests run as root), unmounted when
/// dropped (lazily: a process may still have a file open there).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`256k`, `1m`) on `dir`, creating it.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount a tmpfs on {}: {out:?}",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The zstor daemon (`zstor … monitor`) of a test; killed when dropped.
pub struct ZstorDaemon(std::process::Child);

impl ZstorDaemon {
    /// Starts `zstor` in daemon mode on `config` (whose `socket` is `socket`).
    pub fn start(zstor: &Path, config: &Path, socket: &Path, log: &Path) -> ZstorDaemon {
        let child = std::process::Command::new(zstor)
            .arg("--log_file")
            .arg(log)
            .arg("-c")
            .arg(config)
            .arg("monitor")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Until it answers a check (a bare connection would be logged as an error).
        wait_for("the zstor daemon's answer", || {
            use std::io::{Read, Write};
            let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
            let probe = Path::new(qsfs::health::probes::zstor::PROBE_PATH);
            stream
                .write_all(&qsfs::zstor::socket::check_request(probe))
                .ok()?;
            let mut length = [0; 2];
            stream.read_exact(&mut length).ok()?;
            let mut reply = vec![0; usize::from(u16::from_be_bytes(length))];
            stream.read_exact(&mut reply).ok()
        });
        ZstorDaemon(child)
    }
}

impl Drop for ZstorDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
