//! Benchmark (run by `tests/bench/run`, real zstor only): uploads through the zstor daemon,
//! which runs one command at a time, against uploads in-process (what `zstor_monitor` does),
//! and a read (`retrieve` through the daemon, as zdb's `missing-data` does) alone against the
//! same read while two uploads are in flight, each way. Real zdb backends on the loopback
//! (no WAN shaping here: the link is the machine's), 64 MiB files as zdb's default datasize.

use crate::support::upstream::{stacks, ZdbBackends};
use crate::support::ZstorDaemon;
use qsfs::zstor::Zstor;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FILE_SIZE: usize = 64 << 20;
const FILES: usize = 8;

/// Incompressible content (snappy gains nothing, as on encrypted or media data).
fn write_file(path: &Path, seed: u64) {
    let mut state = seed | 1;
    let mut data = vec![0u8; FILE_SIZE];
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(path, data).unwrap();
}

/// Stores `files` with `parallel` workers; the time it took.
fn store_all(zstor: &Zstor, files: &[PathBuf], parallel: usize) -> Duration {
    let queue = Mutex::new(files.iter());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| loop {
                let Some(file) = queue.lock().unwrap().next() else {
                    return;
                };
                zstor.store(file, None).unwrap();
            });
        }
    });
    started.elapsed()
}

/// A retrieve of `file` through the daemon, while `uploads` (if any) store two files.
fn timed_read(daemon: &Zstor, file: &Path, uploads: Option<(&Zstor, &[PathBuf])>) -> Duration {
    std::fs::remove_file(file).unwrap();
    std::thread::scope(|scope| {
        if let Some((zstor, files)) = uploads {
            scope.spawn(|| store_all(zstor, files, 2));
            // Both stores have started.
            std::thread::sleep(Duration::from_millis(500));
        }
        let started = Instant::now();
        daemon.retrieve(file).unwrap();
        started.elapsed()
    })
}

fn line(what: &str, measured: Duration, floor_name: &str, floor: Duration) {
    println!(
        "{what}: {:.1} s, {floor_name} {:.1} s, ratio {:.2}",
        measured.as_secs_f64(),
        floor.as_secs_f64(),
        measured.as_secs_f64() / floor.as_secs_f64()
    );
}

#[test]
#[ignore = "a benchmark: tests/bench/run"]
fn bench_uploads_and_a_read_through_the_daemon_and_in_process() {
    let Some(stack) = stacks().into_iter().find(|s| s.zstor.real) else {
        println!("skipped: the real zstor is not available (QSFS_UPSTREAM_BIN)");
        return;
    };
    let backends = ZdbBackends::start(&stack.zdb, 4, 2);
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let socket = dir.path().join("zstor.sock");
    let with_daemon = dir.path().join("zstor-daemon.toml");
    let in_process = dir.path().join("zstor-in-process.toml");
    std::fs::write(&with_daemon, backends.zstor_config(Some(&socket))).unwrap();
    std::fs::write(&in_process, backends.zstor_config(None)).unwrap();
    let log = dir.path().join("zstor.log");
    let _daemon = ZstorDaemon::start(&stack.zstor.path, &with_daemon, &socket, &log);
    let timeout = Duration::from_secs(900);
    let daemon = Zstor::new(&stack.zstor.path, &with_daemon, timeout).with_log_file(&log);
    let direct = Zstor::new(&stack.zstor.path, &in_process, timeout).with_log_file(&log);

    // Each run stores files of its own (zstor skips a file stored with the same checksum).
    let files = |run: &str, count: usize| -> Vec<PathBuf> {
        let run_dir = dir.path().join(run);
        std::fs::create_dir(&run_dir).unwrap();
        (0..count)
            .map(|n| {
                let path = run_dir.join(format!("d{n}"));
                write_file(&path, ((n as u64 + 1) * 0x9e37_79b9) ^ run.len() as u64);
                path
            })
            .collect()
    };
    let one_by_one = store_all(&direct, &files("serial", FILES), 1);
    let in_parallel = store_all(&direct, &files("parallel", FILES), 2);
    let through_daemon = store_all(&daemon, &files("daemon", FILES), 2);
    println!("{FILES} files of 64 MiB, real zstor, real 0-db backends on the loopback:");
    line(
        "uploads in-process, 2 at once (zstor_monitor now)",
        in_parallel,
        "one after another",
        one_by_one,
    );
    line(
        "uploads through the daemon, 2 clients (zstor_monitor before)",
        through_daemon,
        "one after another",
        one_by_one,
    );

    let read = files("read", 1).remove(0);
    direct.store(&read, None).unwrap();
    let alone = timed_read(&daemon, &read, None);
    let beside_direct = timed_read(&daemon, &read, Some((&direct, &files("beside-direct", 2))));
    let beside_daemon = timed_read(&daemon, &read, Some((&daemon, &files("beside-daemon", 2))));
    line(
        "a read while 2 uploads run in-process (now)",
        beside_direct,
        "the read alone",
        alone,
    );
    line(
        "a read while 2 uploads go through the daemon (before)",
        beside_daemon,
        "the read alone",
        alone,
    );
}
