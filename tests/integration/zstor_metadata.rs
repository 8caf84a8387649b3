//! `qsfs::zstor::metadata` against the real zstor 0.5.0-rc.1 (ground truth): the real zstor
//! stores a file on real 0-db backends, and we decode its metadata from the metadata zdbs.
//! Then [`metadata::move_shards_off`] moves a shard off a backend removed from the config,
//! through the real zstor daemon. Skipped, saying so, when `QSFS_UPSTREAM_BIN` is unset (there
//! is no stand-in of zstor's metadata format: the real program is the only arbiter).

use crate::support::upstream::{Program, ZdbBackends, BACKEND_NAMESPACE, BACKEND_PASSWORD};
use qsfs::zstor::config::ZstorConfig;
use qsfs::zstor::metadata::{self, MetadataError, MoveError};
use qsfs::zstor::{Checksum, Zstor};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);
/// The data key and the metadata key differ, so decoding shows which one zstor uses.
const DATA_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const META_KEY: &str = "f0e0d0c0b0a090807060504030201000f0e0d0c0b0a090807060504030201000";

/// The real zstor, or `None` (with the reason printed) when it is not available.
fn real_zstor() -> Option<Program> {
    let zstor = Program::real("zstor");
    if zstor.is_none() {
        eprintln!(
            "skipped: {} is unset; zstor's metadata format is only checked against the real zstor",
            crate::support::upstream::UPSTREAM_BIN
        );
    }
    zstor
}

/// A zstor config in in-process mode (no socket): the four metadata backends and one group of
/// `data`, `minimal_shards` one less than them.
fn config_text(meta: &[SocketAddr], data: &[SocketAddr]) -> String {
    let mut text = format!(
        "minimal_shards = {}\nexpected_shards = {}\nredundant_groups = 0\nredundant_nodes = 0\n\n\
         [encryption]\nalgorithm = \"AES\"\nkey = \"{DATA_KEY}\"\n\n[compression]\nalgorithm = \"snappy\"\n\n\
         [meta]\ntype = \"zdb\"\n\n[meta.config]\nprefix = \"qsfs\"\n\n\
         [meta.config.encryption]\nalgorithm = \"AES\"\nkey = \"{META_KEY}\"\n",
        data.len() - 1,
        data.len()
    );
    let backend = |address: &SocketAddr| {
        format!(
            "address = \"{address}\"\nnamespace = \"{BACKEND_NAMESPACE}\"\npassword = \"{BACKEND_PASSWORD}\"\n"
        )
    };
    for address in meta {
        text.push_str(&format!("\n[[meta.config.backends]]\n{}", backend(address)));
    }
    text.push_str("\n[[groups]]\n");
    for address in data {
        text.push_str(&format!("\n[[groups.backends]]\n{}", backend(address)));
    }
    text
}

fn write_config(path: &Path, meta: &[SocketAddr], data: &[SocketAddr]) -> ZstorConfig {
    std::fs::write(path, config_text(meta, data)).unwrap();
    ZstorConfig::load(path).unwrap()
}

/// The addresses of the shards of `file`, in shard order, after checking its metadata against
/// `zstor check` and the config's shard counts.
fn shard_addresses(zstor: &Zstor, config: &ZstorConfig, file: &Path) -> Vec<SocketAddr> {
    let meta = metadata::shards_of(config, file, TIMEOUT)
        .unwrap()
        .expect("the stored file has metadata");
    assert_eq!(Some(meta.checksum), zstor.check(file).unwrap());
    assert_eq!(meta.checksum, Checksum::of_file(file).unwrap());
    assert_eq!(meta.data_shards, config.minimal_shards);
    assert_eq!(
        meta.data_shards + meta.disposable_shards,
        config.expected_shards
    );
    assert_eq!(meta.shards.len(), config.expected_shards);
    let indexes: Vec<usize> = meta.shards.iter().map(|s| s.index).collect();
    assert_eq!(indexes, (0..config.expected_shards).collect::<Vec<_>>());
    for shard in &meta.shards {
        assert_eq!(shard.namespace.as_deref(), Some(BACKEND_NAMESPACE));
        assert!(
            !format!("{shard:?}").contains(BACKEND_PASSWORD),
            "{shard:?}"
        );
    }
    meta.shards.iter().map(|s| s.address).collect()
}

#[test]
fn shards_of_a_file_stored_by_the_real_zstor() {
    let Some(program) = real_zstor() else { return };
    // Three data backends in the config and a fourth, running, to replace one of them.
    let backends = ZdbBackends::start(&program.partner("zdb"), 4, 4);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let config_path = dir.join("zstor-default.toml");
    let log = dir.join("zstor.log");
    let config = write_config(&config_path, &backends.meta, &backends.data[..3]);
    let zstor = Zstor::new(&program.path, &config_path, TIMEOUT).with_log_file(&log);

    let file = dir.join("data/zdbfs-data/d0");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();

    // Not stored yet: no metadata.
    assert!(metadata::shards_of(&config, &file, TIMEOUT)
        .unwrap()
        .is_none());

    zstor.store(&file, None).unwrap();
    let before = shard_addresses(&zstor, &config, &file);
    let mut sorted = before.clone();
    sorted.sort();
    let mut configured = backends.data[..3].to_vec();
    configured.sort();
    assert_eq!(sorted, configured, "one shard on every data backend");
    // `.` and `..` are folded as zstor's lookups fold them.
    let dotted = dir.join("data/./zdbfs-data/../zdbfs-data/d0");
    assert_eq!(
        metadata::shards_of(&config, &dotted, TIMEOUT)
            .unwrap()
            .map(|m| m.checksum),
        Some(Checksum::of_bytes(&content))
    );

    // Decommission: the first data backend leaves the config (it still runs), the spare
    // comes in, and the real zstor rebuilds the file.
    let removed = backends.data[0];
    let new_set = [backends.data[3], backends.data[1], backends.data[2]];
    let config = write_config(&config_path, &backends.meta, &new_set);
    zstor.rebuild(&file).unwrap();
    let after = shard_addresses(&zstor, &config, &file);
    // Upstream keeps every intact shard where it was: the removed backend still holds one.
    assert!(
        after.contains(&removed),
        "upstream's rebuild moved the shard off the removed backend {removed}: {after:?}"
    );
    let meta = metadata::shards_of(&config, &file, TIMEOUT)
        .unwrap()
        .unwrap();
    let outside: Vec<String> = meta
        .shards_outside(&config)
        .map(|shard| shard.label())
        .collect();
    assert_eq!(outside, [format!("{removed}/{BACKEND_NAMESPACE}")]);
}

#[test]
fn unreachable_metadata_backends_are_named_without_passwords() {
    let Some(program) = real_zstor() else { return };
    let mut backends = ZdbBackends::start(&program.partner("zdb"), 4, 2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let config_path = dir.join("zstor-default.toml");
    let config = write_config(&config_path, &backends.meta, &backends.data);
    let zstor = Zstor::new(&program.path, &config_path, TIMEOUT).with_log_file(dir.join("log"));
    let file = dir.join("f");
    std::fs::write(&file, b"two of four metadata shards are enough").unwrap();
    zstor.store(&file, None).unwrap();

    // Two metadata backends down: the other two still decode.
    backends.kill(0);
    backends.kill(1);
    let meta = metadata::shards_of(&config, &file, TIMEOUT)
        .unwrap()
        .unwrap();
    assert_eq!(
        meta.checksum,
        Checksum::of_bytes(b"two of four metadata shards are enough")
    );

    // A third: too few shards, and the error names the backends that failed.
    backends.kill(2);
    let err = metadata::shards_of(&config, &file, TIMEOUT).unwrap_err();
    assert!(matches!(err, MetadataError::Unreadable { .. }), "{err}");
    let text = err.to_string();
    for address in &backends.meta[..3] {
        assert!(text.contains(&address.to_string()), "{text}");
    }
    assert!(!text.contains(BACKEND_PASSWORD), "{text}");
}

/// A running `zstor monitor` (the real daemon); killed when dropped.
struct Daemon {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Daemon {
    /// Starts the daemon on `config` (which names its socket) and waits for the socket.
    fn start(zstor: &Program, config: &Path, socket: &Path, log: &Path) -> Daemon {
        let child = std::process::Command::new(&zstor.path)
            .arg("-c")
            .arg(config)
            .arg("--log_file")
            .arg(log)
            .arg("monitor")
            .current_dir(config.parent().unwrap())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log.with_extension("stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child,
            log: log.to_path_buf(),
        };
        crate::support::wait_for("the zstor daemon's socket", || {
            assert!(
                daemon.child.try_wait().unwrap().is_none(),
                "the zstor daemon exited:\n{}",
                daemon.log()
            );
            std::os::unix::net::UnixStream::connect(socket).ok()
        });
        daemon
    }

    /// Its log file and its standard error.
    fn log(&self) -> String {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        read(&self.log) + &read(&self.log.with_extension("stderr"))
    }

    /// SIGUSR1, and waits until the daemon says it reloads, and 2 s more: at info level it
    /// does not say when it has finished.
    fn reload(&self) {
        let line = "Reloading config after receiving SIGUSR1";
        let before = self.log().matches(line).count();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.log().matches(line).count() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the zstor daemon did not log `{line}` after SIGUSR1:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`write_config`] with the daemon's socket (and its pid file next to it).
fn write_daemon_config(
    path: &Path,
    socket: &Path,
    meta: &[SocketAddr],
    data: &[SocketAddr],
) -> ZstorConfig {
    let text = format!(
        "socket = \"{}\"\npid_file = \"{}.pid\"\n{}",
        socket.display(),
        socket.display(),
        config_text(meta, data)
    );
    std::fs::write(path, text).unwrap();
    ZstorConfig::load(path).unwrap()
}

#[test]
fn shards_are_moved_off_a_backend_removed_from_the_config_while_it_runs() {
    let Some(program) = real_zstor() else { return };
    // Two data backends in the config, a third, running, to replace one of them.
    let mut backends = ZdbBackends::start(&program.partner("zdb"), 4, 3);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let config_path = dir.join("zstor-default.toml");
    let socket = dir.join("zstor.sock");
    let log = dir.join("zstor.log");
    let config = write_daemon_config(&config_path, &socket, &backends.meta, &backends.data[..2]);
    let daemon = Daemon::start(&program, &config_path, &socket, &log);
    let zstor = Zstor::new(&program.path, &config_path, TIMEOUT).with_log_file(dir.join("cli.log"));

    let file = dir.join("data/zdbfs-data/d3");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 241) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    zstor.store(&file, None).unwrap();
    let mut before = shard_addresses(&zstor, &config, &file);
    before.sort();
    let mut configured = backends.data[..2].to_vec();
    configured.sort();
    assert_eq!(before, configured, "one shard on every data backend");

    // The first data backend leaves the config (it keeps running), the spare comes in, the
    // daemon reloads; upstream's rebuild leaves the shard where it was.
    let removed = backends.data[0];
    let config = write_daemon_config(
        &config_path,
        &socket,
        &backends.meta,
        &[backends.data[2], backends.data[1]],
    );
    daemon.reload();
    zstor.rebuild(&file).unwrap();
    let outside = |config: &ZstorConfig| -> Vec<String> {
        metadata::shards_of(config, &file, TIMEOUT)
            .unwrap()
            .unwrap()
            .shards_outside(config)
            .map(|shard| shard.label())
            .collect()
    };
    let removed_label = format!("{removed}/{BACKEND_NAMESPACE}");
    assert_eq!(outside(&config), [removed_label.as_str()]);

    // No daemon on the socket: the error names the file and the backend, no secret.
    let mut elsewhere = config.clone();
    elsewhere.socket = Some(dir.join("nothing.sock"));
    let err = metadata::move_shards_off(&elsewhere, &file, TIMEOUT).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MoveError::Rebuild { .. }), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains(&removed_label), "{text}");
    assert!(
        !text.contains(BACKEND_PASSWORD) && !text.contains(DATA_KEY),
        "{text}"
    );
    assert_eq!(outside(&config), [removed_label.as_str()]);

    // Through the daemon: the shard moves to the spare, the other stays.
    let now = metadata::move_shards_off(&config, &file, TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\nzstor daemon log:\n{}", daemon.log()));
    assert!(outside(&config).is_empty());
    let mut after = shard_addresses(&zstor, &config, &file);
    after.sort();
    let mut configured = backends.data[1..].to_vec();
    configured.sort();
    assert_eq!(after, configured);
    assert_eq!(now.shards.len(), 2);
    assert!(!format!("{now:?}").contains(BACKEND_PASSWORD));
    // Nothing left to move: a second call changes nothing.
    assert_eq!(
        metadata::move_shards_off(&config, &file, TIMEOUT).unwrap(),
        now
    );

    // The removed backend is gone for good: the file comes back, byte for byte.
    backends.kill(4);
    std::fs::remove_file(&file).unwrap();
    zstor.retrieve(&file).unwrap();
    assert!(
        std::fs::read(&file).unwrap() == content,
        "retrieved bytes differ"
    );
}
