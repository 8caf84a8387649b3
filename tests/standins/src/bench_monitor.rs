//! Benchmarks of `zstor_monitor`, each measured side by side with its floor in one run (run
//! through `tests/bench/run`, release build):
//!
//! * 100 000 tracked sealed files: the daemon's resident memory once its first reconciliation
//!   is done (target ≤ 30 MiB), and a reconciliation pass with nothing to do against
//!   `find -printf '%s %T@'` over the same tree (target ratio ≤ 2).
//! * The spool poll with 10 000 pending jobs, all known (a long backend outage): one poll
//!   against listing the directory (`read_dir`), target ratio ≤ 2; and, for comparison, reading
//!   and parsing every job as the poll did before. `bench-monitor spool` runs only this case.
//! * The upload pipeline with a zstor stand-in that takes 100 ms per store: 200 files at
//!   concurrency 4, against the same 200 stores run by `xargs -P 4` (and the ideal 5 s);
//!   target ≤ 1.2 × the ideal.

use qsfs::monitor::files::Roots;
use qsfs::monitor::state::{FileRecord, LocalStamp, State};
use qsfs::spool::{JobFile, Spool};
use qsfs::zstor::Checksum;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn zstor_config(dir: &Path, store: &Path) -> PathBuf {
    let mut text = format!(
        "minimal_shards = 1\nexpected_shards = 1\nredundant_groups = 0\nredundant_nodes = 0\n\n[encryption]\nalgorithm = \"AES\"\nkey = \"{KEY}\"\n\n[compression]\nalgorithm = \"snappy\"\n\n[meta]\ntype = \"zdb\"\n\n[meta.config]\nprefix = \"bench\"\n\n[meta.config.encryption]\nalgorithm = \"AES\"\nkey = \"{KEY}\"\n"
    );
    for port in 1..=4 {
        text.push_str(&format!(
            "\n[[meta.config.backends]]\naddress = \"[::1]:{port}\"\nnamespace = \"m\"\n"
        ));
    }
    text.push_str(
        "\n[[groups]]\n\n[[groups.backends]]\naddress = \"127.0.0.1:5\"\nnamespace = \"d\"\n",
    );
    let path = dir.join("zstor.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::write(dir.join("zstor-standin-store"), store.display().to_string()).unwrap();
    path
}

fn monitor_config(dir: &Path, zstor_bin: &Path, zstor_config: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "zdb_index_dir_path = \"{0}/index\"\nzdb_data_dir_path = \"{0}/data\"\nzstor_config_path = \"{1}\"\nzstor_bin_path = \"{2}\"\n\
         spool_dir = \"{0}/spool\"\nstate_dir = \"{0}/state\"\nstatus_file = \"{0}/run/status.json\"\nzstor_log_file = \"{0}/zstor.log\"\n\
         backend_check_interval_secs = 3600\n{extra}\n",
        dir.display(),
        zstor_config.display(),
        zstor_bin.display()
    );
    let path = dir.join("monitor_config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut lines = Vec::new();

    // ---- spool poll ---------------------------------------------------------------------
    {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let spool = Spool::new(dir.path());
        spool.create().unwrap();
        let mut known = HashSet::new();
        for n in 0..10_000 {
            let mut job = spool.new_job(qsfs::spool::Trigger::JumpIndex, "zdbfs-data");
            job.files.push(JobFile {
                path: format!("/var/zdbfs/index/zdbfs-data/i{n}").into(),
                snapshot: Some(dir.path().join(format!("snapshots/{}/i{n}", job.id))),
            });
            // Written directly: Spool::write's two fsyncs per job only slow the setup.
            std::fs::write(
                dir.path().join(format!("{}.job", job.id)),
                serde_json::to_vec(&job).unwrap(),
            )
            .unwrap();
            known.insert(job.id);
        }
        let (mut ours, mut floor, mut old) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..21 {
            let started = Instant::now();
            let new = spool.new_jobs(|id| known.contains(id)).unwrap();
            ours.push(started.elapsed());
            assert!(new.is_empty());
            let started = Instant::now();
            let entries = std::fs::read_dir(dir.path()).unwrap().count();
            floor.push(started.elapsed());
            assert_eq!(entries, 10_001, "the jobs and snapshots/");
            if round % 4 == 0 {
                let started = Instant::now();
                let all = spool.jobs().unwrap();
                old.push(started.elapsed());
                assert_eq!(all.len(), 10_000);
            }
        }
        let (ours, floor, old) = (median(ours), median(floor), median(old));
        lines.push(format!(
            "{:<44} {:>9.2} ms  {:<22} {:>9.2} ms  ratio {:>5.2}  target ≤ 2",
            "spool poll, 10 000 pending jobs, all known",
            ours.as_secs_f64() * 1e3,
            "read_dir",
            floor.as_secs_f64() * 1e3,
            ours.as_secs_f64() / floor.as_secs_f64()
        ));
        lines.push(format!(
            "{:<44} {:>9.2} ms  ({:.0}× one poll now)",
            "  before: reading and parsing every job",
            old.as_secs_f64() * 1e3,
            old.as_secs_f64() / ours.as_secs_f64()
        ));
    }
    if std::env::args().nth(1).as_deref() == Some("spool") {
        for line in lines {
            println!("{line}");
        }
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().to_path_buf();
    let monitor_bin = profile.join("zstor_monitor");
    let standin = profile.join("zstor-standin");
    assert!(
        monitor_bin.exists() && standin.exists(),
        "cargo build --release --workspace --bins first"
    );

    // ---- 100 000 tracked files ----------------------------------------------------------
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = dir.path();
    let store = root.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let zstor = zstor_config(root, &store);
    let roots = Roots {
        index: root.join("index"),
        data: root.join("data"),
    };
    let files_per_ns: u32 = 50_000;
    std::fs::create_dir_all(&roots.index).unwrap();
    {
        let mut state = State::open(&root.join("state")).unwrap();
        for ns in ["zdbfs-data", "zdbfs-meta"] {
            let ns_dir = roots.data.join(ns);
            std::fs::create_dir_all(&ns_dir).unwrap();
            for n in 0..=files_per_ns {
                std::fs::write(ns_dir.join(format!("d{n}")), n.to_le_bytes()).unwrap();
            }
        }
        // Every sealed file is recorded as verified, as after a long life of the appliance.
        for file in roots.scan().unwrap().into_iter().filter(|f| !f.active) {
            let checksum = Checksum::of_file(&file.path).unwrap();
            let local = LocalStamp {
                size: file.size,
                mtime_ns: file.mtime_ns,
                inode: file.inode,
                checksum,
            };
            state.set(
                &file.key,
                FileRecord {
                    local: Some(local),
                    remote: Some(checksum),
                    evicted: false,
                    evicting: false,
                    retrieved: false,
                    backend_set: 0,
                },
            );
        }
        state.commit().unwrap();
        let state = Mutex::new(state);
        let mut ours = Vec::new();
        let mut find = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let outcome = qsfs::monitor::reconcile::run(&roots, &state, 0).unwrap();
            ours.push(started.elapsed());
            assert_eq!(
                (outcome.hashed, outcome.to_upload.len()),
                (0, 0),
                "nothing to do"
            );
            let started = Instant::now();
            let status = Command::new("find")
                .arg(&roots.index)
                .arg(&roots.data)
                .args(["-printf", "%s %T@\n"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            find.push(started.elapsed());
            assert!(status.success());
        }
        let (ours, find) = (median(ours), median(find));
        lines.push(format!(
            "{:<44} {:>9.1} ms  {:<22} {:>9.1} ms  ratio {:>5.2}  target ≤ 2",
            "reconcile, 100 000 files, nothing to do",
            ours.as_secs_f64() * 1e3,
            "find -printf '%s %T@'",
            find.as_secs_f64() * 1e3,
            ours.as_secs_f64() / find.as_secs_f64()
        ));
    }
    let config = monitor_config(root, &standin, &zstor, "reconcile_interval_secs = 3600");
    let mut daemon = Command::new(&monitor_bin)
        .arg("-c")
        .arg(&config)
        .env("QSFS_LOG_TARGET", "stderr")
        .env("QSFS_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = daemon.stderr.take().unwrap();
    let pid = daemon.id();
    let reconciled = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut at_ready = 0;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("zstor_monitor ready") {
                at_ready = rss_kib(pid);
            }
            if line.contains("reconciliation:") {
                return (line, at_ready);
            }
        }
        (String::new(), at_ready)
    });
    let (line, at_ready) = reconciled.join().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_kib(daemon.id());
    println!(
        "zstor_monitor RSS when ready (state loaded): {:.1} MiB",
        at_ready as f64 / 1024.0
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        line.contains("100002 files scanned, 0 hashed, 0 queued"),
        "{line}"
    );
    lines.push(format!(
        "{:<44} {:>9.1} MiB target ≤ 30 MiB",
        "zstor_monitor RSS, 100 000 tracked files",
        rss as f64 / 1024.0
    ));

    // ---- upload pipeline ----------------------------------------------------------------
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = dir.path();
    let store = root.join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("inject.json"), r#"{"store_delay_ms": 100}"#).unwrap();
    let zstor = zstor_config(root, &store);
    let ns_dir = root.join("data/zdbfs-data");
    std::fs::create_dir_all(&ns_dir).unwrap();
    std::fs::create_dir_all(root.join("index")).unwrap();
    let files: Vec<PathBuf> = (0..=200).map(|n| ns_dir.join(format!("d{n}"))).collect();
    for (n, file) in files.iter().enumerate() {
        std::fs::write(file, format!("content of file {n}").repeat(100)).unwrap();
    }
    // The floor: the same 200 stores, four at a time, by xargs.
    let list: String = files[..200]
        .iter()
        .map(|f| format!("{}\n", f.display()))
        .collect();
    let started = Instant::now();
    let mut xargs = Command::new("xargs")
        .args(["-P", "4", "-I", "{}"])
        .arg(&standin)
        .arg("-c")
        .arg(&zstor)
        .arg("--log_file")
        .arg(root.join("xargs.log"))
        .args(["store", "--file", "{}"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut xargs.stdin.take().unwrap(), list.as_bytes()).unwrap();
    assert!(xargs.wait().unwrap().success());
    let floor = started.elapsed();
    // Start over with an empty store, and let the monitor find and upload the 200 files.
    std::fs::remove_dir_all(store.join("objects")).unwrap();
    let config = monitor_config(root, &standin, &zstor, "upload_concurrency = 4");
    let started = Instant::now();
    let mut daemon = Command::new(&monitor_bin)
        .arg("-c")
        .arg(&config)
        .env("QSFS_LOG_TARGET", "stderr")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let verified = std::io::BufRead::lines(std::io::BufReader::new(daemon.stderr.take().unwrap()))
        .map_while(Result::ok)
        .filter(|line| line.contains("upload verified"))
        .take(200)
        .count();
    let ours = started.elapsed();
    assert_eq!(verified, 200);
    let _ = daemon.kill();
    let _ = daemon.wait();
    lines.push(format!(
        "{:<44} {:>9.2} s   {:<22} {:>9.2} s   ratio {:>5.2}  ideal 5.00 s: {:.2}× (target ≤ 1.2)",
        "upload 200 files, 100 ms each, concurrency 4",
        ours.as_secs_f64(),
        "xargs -P 4 zstor store",
        floor.as_secs_f64(),
        ours.as_secs_f64() / floor.as_secs_f64(),
        ours.as_secs_f64() / 5.0
    ));
    println!("(the monitor's time includes its start, finding the files, and verifying each store with zstor check)");
    for line in lines {
        println!("{line}");
    }
}
