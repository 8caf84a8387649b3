//! The flush of zdbfs's cache (its snapshot ioctl), with the zdbfs stand-in mounted over the
//! 0-db stand-in, then (when `QSFS_UPSTREAM_BIN` is set) the real zdbfs over the real zdb:
//! zstor_monitor's periodic flush makes an fsynced file survive a SIGKILL of zdbfs, and a zdbfs
//! that stops answering makes the flush time out while the monitor carries on (and
//! `qsfs-health flush` gives up in time).
//!
//! They mount FUSE filesystems, so they need root, `/dev/fuse` and `fusermount3` (as CI has).

use crate::support::upstream::{each, Program};
use crate::support::{wait_for, Appliance, Fs, Monitor, Zdb};
use nix::sys::signal::Signal;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

fn write_synced(path: &std::path::Path, data: &[u8]) {
    // The real zdbfs 0.1.11 was seen (twice, under load) answering ENOENT to the first create
    // in the root right after mounting; what this file tests starts once the file exists.
    let mut file = wait_for(
        "a create in the fresh mount",
        || match std::fs::File::create(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            other => Some(other.unwrap()),
        },
    );
    file.write_all(data).unwrap();
    file.sync_all().unwrap();
}

/// A layout with the zdb that goes with `zdbfs` running (512 KiB data files).
fn appliance(zdbfs: &Program) -> (Appliance, Zdb) {
    let app = Appliance::new(None, "");
    let mut zdb = app.start_zdb_with(&zdbfs.partner("zdb"), &["--datasize", "512k"], &[]);
    zdb.client();
    (app, zdb)
}

/// The monitor flushing every second and zdbfs mounted at `mountpoint`, once a first flush ran.
fn flushing(zdbfs: &Program, app: &Appliance, mountpoint: &std::path::Path) -> (Monitor, Fs) {
    let mut monitor = Monitor::start(app, &monitor_extra(app, 1), &[]);
    let fs = Fs::mount_with(zdbfs, app, mountpoint, "");
    monitor.wait_status("a first flush", |s| {
        s.zdbfs
            .as_ref()
            .is_some_and(|z| z.last_flush_unix_ms.is_some())
    });
    (monitor, fs)
}

fn monitor_extra(app: &Appliance, interval: u64) -> String {
    format!(
        "zdbfs_mountpoint = \"{}\"\nzdb_socket_path = \"{}\"\nflush_interval_secs = {interval}\nflush_timeout_secs = 1",
        app.dir.path().join("mnt").display(),
        app.socket.display()
    )
}

#[test]
fn the_periodic_flush_keeps_acknowledged_writes_across_a_zdbfs_crash() {
    each("zdbfs", flush_keeps_writes);
}

fn flush_keeps_writes(zdbfs: &Program) {
    let (app, _zdb) = appliance(zdbfs);
    let mountpoint = app.dir.path().join("mnt");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();

    // Without the flush (interval 0), an fsynced and closed file is gone after a crash of zdbfs
    // within ~10 s (its directory entry was still in zdbfs's cache): the loss this guards
    // against.
    let mut monitor = Monitor::start(&app, &monitor_extra(&app, 0), &[]);
    let mut fs = Fs::mount_with(zdbfs, &app, &mountpoint, "");
    write_synced(&fs.path("lost"), &data);
    std::thread::sleep(Duration::from_secs(2));
    fs.kill();
    let fs = Fs::mount_with(zdbfs, &app, &mountpoint, "");
    assert!(
        !fs.path("lost").exists(),
        "without a flush the file is lost (zdbfs 0.1.11's cache)"
    );
    drop(fs);
    monitor.signal(Signal::SIGTERM);
    monitor.wait();

    // With it, the file survives once one flush has run after the write.
    let mut monitor = Monitor::start(&app, &monitor_extra(&app, 1), &[]);
    let mut fs = Fs::mount_with(zdbfs, &app, &mountpoint, "");
    let written = qsfs::clock::now_unix_ms();
    write_synced(&fs.path("kept"), &data);
    let status = monitor.wait_status("a flush after the write", |s| {
        s.zdbfs
            .as_ref()
            .and_then(|z| z.last_flush_unix_ms)
            .is_some_and(|t| t > written + 100)
    });
    let stats = status.zdbfs.unwrap().stats.expect("zdbfs statistics");
    assert!(
        stats.write_bytes >= data.len() as u64 && stats.fuse_reqs > 0,
        "{stats:?}"
    );
    fs.kill();
    let fs = Fs::mount_with(zdbfs, &app, &mountpoint, "");
    assert_eq!(std::fs::read(fs.path("kept")).unwrap(), data);
}

#[test]
fn a_flush_while_zdb_does_not_answer_is_not_attempted_and_not_a_success() {
    each("zdbfs", zdb_gone);
}

/// The real zdbfs's ioctl answers success when zdb is gone, with its cache dropped: the
/// monitor must not attempt it then, and must say the flush failed.
fn zdb_gone(zdbfs: &Program) {
    let (app, mut zdb) = appliance(zdbfs);
    let mountpoint = app.dir.path().join("mnt");
    let (mut monitor, fs) = flushing(zdbfs, &app, &mountpoint);
    write_synced(&fs.path("cached"), &[7u8; 100_000]);
    zdb.kill();
    let failing = monitor.wait_status("the flush failing", |s| {
        s.zdbfs
            .as_ref()
            .is_some_and(|z| z.flush_failures_in_a_row >= 2)
    });
    let zdbfs_status = failing.zdbfs.unwrap();
    let error = zdbfs_status.last_flush_error.unwrap();
    assert!(
        error.starts_with("zdb does not answer") && error.contains("not flushed"),
        "{error}"
    );
    drop(fs);
}

#[test]
fn a_hung_zdbfs_makes_the_flush_time_out_and_everyone_carries_on() {
    each("zdbfs", hung_zdbfs);
}

fn hung_zdbfs(zdbfs: &Program) {
    let (app, _zdb) = appliance(zdbfs);
    let mountpoint = app.dir.path().join("mnt");
    let (mut monitor, fs) = flushing(zdbfs, &app, &mountpoint);

    fs.signal(Signal::SIGSTOP);
    // The monitor: its flush times out, it says so, and it keeps publishing its status.
    let failing = monitor.wait_status("the flush failing", |s| {
        s.zdbfs
            .as_ref()
            .is_some_and(|z| z.flush_failures_in_a_row >= 1)
    });
    let error = failing
        .zdbfs
        .as_ref()
        .unwrap()
        .last_flush_error
        .clone()
        .unwrap();
    assert!(
        error.contains("no answer within") || error.contains("still blocked"),
        "{error}"
    );
    let later = monitor.wait_status("a later status", |s| {
        s.updated_unix_ms > failing.updated_unix_ms + 1500
    });
    assert!(later.zdbfs.unwrap().flush_failures_in_a_row >= 1);
    assert!(
        monitor
            .log()
            .contains(qsfs::logging::message_id::ZDBFS_FLUSH_FAILED),
        "{}",
        monitor.log()
    );

    // qsfs-health flush (zdbfs's ExecStop=) gives up after its timeout.
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_qsfs-health"))
        .args(["--config"])
        .arg(&app.qsfs_config)
        .args(["flush", "--timeout", "1s"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer within 1.0 s"));

    // zdbfs answers again: so does the flush.
    fs.signal(Signal::SIGCONT);
    monitor.wait_status("the flush working again", |s| {
        s.zdbfs
            .as_ref()
            .is_some_and(|z| z.flush_failures_in_a_row == 0)
    });
    let out = Command::new(env!("CARGO_BIN_EXE_qsfs-health"))
        .args(["--config"])
        .arg(&app.qsfs_config)
        .args(["flush", "--timeout", "5s"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the log line of the recovery", || {
        monitor.log().contains("written to zdb again").then_some(())
    });
}

/// What one run of [`flush_costs`] saw.
struct FlushCosts {
    /// Reads of a warm 64 MiB file, MiB/s.
    warm_read: f64,
    /// zdb's data growth per byte appended slowly to a file kept open.
    growth: f64,
    /// Files of 1 MiB written and closed (what an S3 PUT does to the mount), MiB/s.
    writes: f64,
}

/// Sum of the sizes of the files under `dir`.
fn tree_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => tree_size(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The real zdbfs over the real zdb (64 MiB data files, the appliance's default), the monitor
/// flushing every `interval` seconds (0: never), each measurement for `PHASE`.
fn flush_costs(zdbfs: &Program, interval: u64) -> FlushCosts {
    const PHASE: Duration = Duration::from_secs(12);
    let app = Appliance::new(None, "");
    let mut zdb = app.start_zdb_with(&zdbfs.partner("zdb"), &["--datasize", "67108864"], &[]);
    zdb.client();
    let mountpoint = app.dir.path().join("mnt");
    let extra = format!(
        "zdbfs_mountpoint = \"{}\"\nzdb_socket_path = \"{}\"\nflush_interval_secs = {interval}\n",
        mountpoint.display(),
        app.socket.display()
    );
    let _monitor = Monitor::start(&app, &extra, &[]);
    let fs = Fs::mount_with(zdbfs, &app, &mountpoint, "");

    let warm = fs.path("warm");
    write_synced(&warm, &crate::support::incompressible(64 << 20, 3));
    std::fs::read(&warm).unwrap();
    let (started, mut read) = (Instant::now(), 0usize);
    while started.elapsed() < PHASE {
        read += std::fs::read(&warm).unwrap().len();
    }
    let warm_read = read as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();

    let before = tree_size(&app.data);
    let mut log = std::fs::File::create(fs.path("log")).unwrap();
    let (started, mut appended) = (Instant::now(), 0usize);
    let line = crate::support::incompressible(4096, 5);
    while started.elapsed() < PHASE {
        log.write_all(&line).unwrap();
        appended += line.len();
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(log);
    let growth = tree_size(&app.data).saturating_sub(before) as f64 / appended as f64;

    let object = crate::support::incompressible(1 << 20, 9);
    let (started, mut written) = (Instant::now(), 0usize);
    while started.elapsed() < PHASE {
        std::fs::write(fs.path(&format!("object{written}")), &object).unwrap();
        written += 1;
    }
    let writes = written as f64 / started.elapsed().as_secs_f64();
    FlushCosts {
        warm_read,
        growth,
        writes,
    }
}

/// Benchmark (tests/bench/run, real zdbfs only): the periodic flush at its default interval
/// against no flush, side by side.
#[test]
#[ignore = "a benchmark: tests/bench/run"]
fn bench_the_flush_against_no_flush() {
    let Some(zdbfs) = Program::real("zdbfs") else {
        println!("skipped: the real zdbfs is not available (QSFS_UPSTREAM_BIN)");
        return;
    };
    let default = crate::support::monitor_defaults()
        .flush_interval
        .expect("the flush is on by default")
        .as_secs();
    let flushing = flush_costs(&zdbfs, default);
    let never = flush_costs(&zdbfs, 0);
    println!("the real zdbfs over the real zdb, the flush every {default} s against no flush:");
    let row = |what: &str, with: f64, without: f64, unit: &str| {
        println!(
            "flush {what}: {with:.2} {unit}, no flush {without:.2} {unit}, ratio {:.2}",
            with / without
        )
    };
    row(
        "warm 64 MiB file read",
        flushing.warm_read,
        never.warm_read,
        "MiB/s",
    );
    // Not a ratio: without the flush nothing of the open file reaches zdb (it stays in zdbfs's
    // cache, lost if zdbfs dies).
    println!(
        "flush zdb data growth per byte appended slowly (4 KiB / 50 ms, file kept open): {:.2}, no flush {:.2}",
        flushing.growth, never.growth
    );
    row(
        "1 MiB files written (as S3 PUTs)",
        flushing.writes,
        never.writes,
        "MiB/s",
    );
}
