//! Benchmark (run by `tests/bench/run`, real zstor only, root): zstor's lanes on a WAN-shaped
//! link. The real zdb backends run in a network namespace behind a veth pair rate-limited with
//! `tc tbf` in each direction, each behind a [`Link`] that adds the one-way delay (no `netem`
//! here); 64 MiB files, zdb's default datasize.
//!
//! * uploads as `zstor_monitor` runs them (each store a zstor process of its own, in-process:
//!   no daemon socket), with the monitor's default `upload_concurrency` against one store after
//!   another;
//! * a `missing-data` read as zdb runs it (`zdb-hook missing-data` through the read lane)
//!   while two uploads are in flight, against the same read with nothing else running; and,
//!   for comparison, a retrieve through the zstor daemon while two uploads go through it too
//!   (the lanes before: one daemon, one command at a time).
//!
//! `QSFS_BENCH_WAN_MBIT` and `QSFS_BENCH_WAN_DELAY_MS` change the link (default 1000 Mbit/s
//! each way, 25 ms each way).

use crate::support::link::{Link, Shape};
use crate::support::upstream::{stacks, zstor_config_at, ZdbBackends};
use crate::support::wan::Wan;
use crate::support::{Appliance, ZstorDaemon};
use qsfs::zstor::Zstor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FILE_SIZE: usize = 64 << 20;
const FILES: usize = 8;
const HOOK: &str = env!("CARGO_BIN_EXE_zdb-hook");

fn write_file(path: &Path, seed: u64) {
    std::fs::write(path, crate::support::incompressible(FILE_SIZE, seed)).unwrap();
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

/// Runs `read` on `file` (removed first, as evicted), while `uploads` (if any) store two files
/// two at a time; the time `read` took.
fn timed_read(
    file: &Path,
    read: impl FnOnce(&Path),
    uploads: Option<(&Zstor, &[PathBuf])>,
) -> Duration {
    std::fs::remove_file(file).unwrap();
    std::thread::scope(|scope| {
        if let Some((zstor, files)) = uploads {
            scope.spawn(|| store_all(zstor, files, 2));
            // Both stores have started.
            std::thread::sleep(Duration::from_millis(500));
        }
        let started = Instant::now();
        read(file);
        started.elapsed()
    })
}

/// zdb's `missing-data` hook for `file`, as zdb runs it.
fn missing_data(app: &Appliance, file: &Path) {
    let out = std::process::Command::new(HOOK)
        .args(["missing-data", "unix:///zdb"])
        .arg(file)
        .env("QSFS_CONFIG", &app.qsfs_config)
        .env("QSFS_LOG_TARGET", "stderr")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        app.reads.log()
    );
}

fn line(what: &str, measured: Duration, floor_name: &str, floor: Duration) {
    println!(
        "{what}: {:.1} s, {floor_name} {:.1} s, ratio {:.2}",
        measured.as_secs_f64(),
        floor.as_secs_f64(),
        measured.as_secs_f64() / floor.as_secs_f64()
    );
}

fn from_env(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse().unwrap_or_else(|_| panic!("{name}={v}: a number"))
    })
}

#[test]
#[ignore = "a benchmark: tests/bench/run"]
fn bench_uploads_and_a_read_on_a_wan_link() {
    let Some(stack) = stacks().into_iter().find(|s| s.zstor.real) else {
        println!("skipped: the real zstor is not available (QSFS_UPSTREAM_BIN)");
        return;
    };
    let rate_mbit = from_env("QSFS_BENCH_WAN_MBIT", 1000) as u32;
    let delay = Duration::from_millis(from_env("QSFS_BENCH_WAN_DELAY_MS", 25));
    let wan = Wan::start(rate_mbit);
    let backends = ZdbBackends::start_behind(&stack.zdb, 4, 2, &wan);
    let shaped = |addresses: &[SocketAddr]| -> Vec<Link> {
        addresses
            .iter()
            .map(|a| {
                let link = Link::start(*a);
                link.shape(Shape { rate: None, delay });
                link
            })
            .collect()
    };
    let (meta_links, data_links) = (shaped(&backends.meta), shaped(&backends.data));
    let addresses =
        |links: &[Link]| -> Vec<SocketAddr> { links.iter().map(|l| l.address).collect() };
    let (meta, data) = (addresses(&meta_links), addresses(&data_links));
    let app = Appliance::with_backends(
        &stack,
        backends,
        "[hook]\nmissing_data_timeout_secs = 900\n",
    );
    let dir = app.dir.path();
    let socket = dir.join("zstor.sock");
    let with_daemon = dir.join("zstor-daemon.toml");
    std::fs::write(&app.zstor_config, zstor_config_at(&meta, &data, None)).unwrap();
    std::fs::write(&with_daemon, zstor_config_at(&meta, &data, Some(&socket))).unwrap();
    let log = dir.join("zstor.log");
    let _daemon = ZstorDaemon::start(&stack.zstor.path, &with_daemon, &socket, &log);
    let timeout = Duration::from_secs(900);
    let daemon = Zstor::new(&stack.zstor.path, &with_daemon, timeout).with_log_file(&log);
    let direct = Zstor::new(&stack.zstor.path, &app.zstor_config, timeout).with_log_file(&log);

    // Each run stores files of its own (zstor skips a file stored with the same checksum),
    // under zdb's data root (the read lane retrieves only there).
    let files = |run: &str, count: usize| -> Vec<PathBuf> {
        let run_dir = app.data.join(run);
        std::fs::create_dir_all(&run_dir).unwrap();
        (0..count)
            .map(|n| {
                let path = run_dir.join(format!("d{n}"));
                write_file(&path, ((n as u64 + 1) * 0x9e37_79b9) ^ run.len() as u64);
                path
            })
            .collect()
    };
    let concurrency = crate::support::monitor_defaults().upload_concurrency.get() as usize;
    let one_by_one = store_all(&direct, &files("serial", FILES), 1);
    let in_parallel = store_all(&direct, &files("parallel", FILES), concurrency);

    let read = files("read", 1).remove(0);
    direct.store(&read, None).unwrap();
    let bytes = std::fs::read(&read).unwrap();
    let hook = |file: &Path| missing_data(&app, file);
    let alone = timed_read(&read, hook, None);
    let beside_uploads = timed_read(&read, hook, Some((&direct, &files("beside", 2))));
    assert_eq!(
        std::fs::read(&read).unwrap(),
        bytes,
        "the read brought other bytes"
    );
    let through_daemon = |file: &Path| daemon.retrieve(file).unwrap();
    let daemon_alone = timed_read(&read, through_daemon, None);
    let daemon_beside = timed_read(
        &read,
        through_daemon,
        Some((&daemon, &files("beside-daemon", 2))),
    );

    println!(
        "{FILES} files of 64 MiB, real zstor, real 0-db backends behind a link of {rate_mbit} Mbit/s and {} ms each way:",
        delay.as_millis()
    );
    line(
        &format!("uploads in-process, {concurrency} at once (zstor_monitor's default)"),
        in_parallel,
        "one after another",
        one_by_one,
    );
    line(
        "a missing-data read (read lane) while 2 uploads run in-process",
        beside_uploads,
        "the read alone",
        alone,
    );
    line(
        "a retrieve through the daemon while 2 uploads go through it (before)",
        daemon_beside,
        "the retrieve alone",
        daemon_alone,
    );
}
