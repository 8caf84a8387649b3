//! Benchmark of `qsfs-health`, measured side by side in one run (run it through
//! `tests/bench/run`, which builds in release mode; needs root, /dev/fuse and bindfs):
//!
//! * `qsfs-health check` with every component healthy against `qsfs-health check --only P` for
//!   each probe P: target median ≤ 50 ms and ≤ 2× the slowest single probe. The components are
//!   the 0-db stand-in (three sequential namespaces), a real FUSE mount (bindfs), an HTTP
//!   server answering 200, a listening zstor socket, a fresh monitor status file and two
//!   directories. The units probe needs systemd as PID 1, which this host does not have, so it
//!   is left out here (the system tests run it).
//! * `qsfs-health serve` resident memory after 1 000 rounds (interval 1 ms): target ≤ 15 MiB.
//!
//! Runs are interleaved (all, then each single probe, repeated) so that machine noise hits
//! every side alike.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROBES: [&str; 6] = ["zdb", "mount", "s3", "zstor", "monitor", "disk"];

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Kills (and for bindfs, unmounts) what the benchmark started.
struct Guard {
    children: Vec<Child>,
    mountpoint: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .output();
    }
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().to_path_buf();
    let bin = profile_dir.join("qsfs-health");
    let standin = profile_dir.join("zdb-standin");
    for needed in [&bin, &standin] {
        assert!(
            needed.exists(),
            "{} is missing: cargo build --release --workspace --bins",
            needed.display()
        );
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = dir.path();
    for sub in ["index", "data", "source", "mnt"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let mut guard = Guard {
        children: Vec::new(),
        mountpoint: root.join("mnt"),
    };

    // zdb stand-in with the three zdbfs namespaces in sequential mode.
    let socket = root.join("zdb.sock");
    guard.children.push(
        Command::new(&standin)
            .arg("--index")
            .arg(root.join("index"))
            .arg("--data")
            .arg(root.join("data"))
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("zdb-standin"),
    );
    let endpoint = qsfs::zdb::Endpoint::Unix(socket.clone());
    let mut client = None;
    wait_until("zdb", || {
        client = qsfs::zdb::Client::connect(&endpoint, Duration::from_secs(2)).ok();
        client.as_mut().is_some_and(|c| c.ping().is_ok())
    });
    let mut client = client.unwrap();
    for ns in ["zdbfs-meta", "zdbfs-data", "zdbfs-temp"] {
        client.nsnew(ns).unwrap();
        client.nsset(ns, "mode", "seq").unwrap();
    }

    // A real FUSE mount.
    guard.children.push(
        Command::new("bindfs")
            .arg("-f")
            .arg(root.join("source"))
            .arg(root.join("mnt"))
            .spawn()
            .expect("bindfs (tests/setup-host installs it)"),
    );
    wait_until("the bindfs mount", || {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        qsfs::mountinfo::at(&info, &root.join("mnt")).is_some_and(|m| m.is_fuse())
    });

    // An HTTP server answering 200, and the zstor socket; both accept and answer forever.
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in http.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let zstor = UnixListener::bind(root.join("zstor.sock")).unwrap();
    std::thread::spawn(move || for _ in zstor.incoming() {});

    // A fresh monitor status.
    let status = qsfs::monitor::status::MonitorStatus {
        schema_version: qsfs::monitor::status::SCHEMA_VERSION,
        pid: 1,
        started_unix_ms: 0,
        updated_unix_ms: qsfs::clock::now_unix_ms(),
        uploads: Default::default(),
        cache: Default::default(),
        backends: Vec::new(),
        rebuild: None,
        zdbfs: None,
        errors: Default::default(),
    };
    std::fs::write(
        root.join("monitor.json"),
        serde_json::to_vec(&status).unwrap(),
    )
    .unwrap();

    let config = root.join("qsfs.toml");
    let metrics = root.join("metrics.sock");
    std::fs::write(
        &config,
        format!(
            "[paths]\nindex_dir = '{0}/index'\ndata_dir = '{0}/data'\nmountpoint = '{0}/mnt'\nzdb_socket = '{0}/zdb.sock'\n\
             [health]\nprobes = ['zdb', 'mount', 's3', 'zstor', 'monitor', 'disk']\nstatus_file = '{0}/health.json'\nmetrics = 'unix:{1}'\n\
             [health.s3]\nurls = ['http://{2}/minio/health/live', 'http://{2}/minio/health/ready']\n\
             [health.zstor]\nsocket = '{0}/zstor.sock'\n\
             [health.monitor]\nstatus_file = '{0}/monitor.json'\nstale_after_secs = 86400\n\
             [health.disk]\nfree_degraded_percent = 0\nfree_failed_percent = 0\n\
             [health.remediation]\nrestart = []\n",
            root.display(),
            metrics.display(),
            http_addr
        ),
    )
    .unwrap();

    let check = |only: Option<&str>| {
        let mut command = Command::new(&bin);
        command.arg("--config").arg(&config).arg("check");
        if let Some(probe) = only {
            command.args(["--only", probe]);
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let started = Instant::now();
        let status = command.status().unwrap();
        let took = started.elapsed();
        assert_eq!(status.code(), Some(0), "check {only:?} is not ok");
        took
    };
    // Show the healthy table once.
    let table = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&table.stdout));
    assert_eq!(
        table.status.code(),
        Some(0),
        "not every component is healthy"
    );

    const RUNS: usize = 100;
    for _ in 0..10 {
        check(None);
        for p in PROBES {
            check(Some(p));
        }
    }
    let mut all = Vec::new();
    let mut single: Vec<Vec<Duration>> = vec![Vec::new(); PROBES.len()];
    for _ in 0..RUNS {
        all.push(check(None));
        for (i, p) in PROBES.iter().enumerate() {
            single[i].push(check(Some(p)));
        }
    }
    let all = median(all);
    let singles: Vec<Duration> = single.into_iter().map(median).collect();
    let (slowest_index, slowest) = singles
        .iter()
        .enumerate()
        .max_by_key(|(_, d)| **d)
        .map(|(i, d)| (i, *d))
        .unwrap();
    println!();
    println!("{:<34} {:>10}", "check (process, median)", "ms");
    for (p, d) in PROBES.iter().zip(&singles) {
        println!("{:<34} {:>10.2}", format!("check --only {p}"), ms(*d));
    }
    println!("{:<34} {:>10.2}", "check (all six probes)", ms(all));
    let ratio = all.as_secs_f64() / slowest.as_secs_f64();
    let mut met = true;
    let ok_abs = ms(all) <= 50.0;
    let ok_ratio = ratio <= 2.0;
    met &= ok_abs && ok_ratio;
    println!(
        "check all: {:.2} ms (target ≤ 50 ms{}); ratio to the slowest single probe ({}) {:.2} (target ≤ 2{})",
        ms(all),
        if ok_abs { "" } else { ", missed" },
        PROBES[slowest_index],
        ratio,
        if ok_ratio { "" } else { ", missed" }
    );

    // serve: resident memory after 1 000 rounds.
    let mut serve = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--interval", "1ms"])
        .env("QSFS_LOG_TARGET", "stderr")
        .env("QSFS_LOG", "error")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let rounds = |at_least: u64| {
        let mut s = UnixStream::connect(&metrics).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let n: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("qsfs_health_rounds_total "))?
            .parse()
            .ok()?;
        (n >= at_least).then_some(n)
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        if let Some(n) = rounds(1000) {
            break n;
        }
        assert!(Instant::now() < deadline, "serve did not reach 1000 rounds");
        std::thread::sleep(Duration::from_millis(100));
    };
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", serve.id())).unwrap();
    let kib = |key: &str| -> u64 {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let (rss, hwm) = (kib("VmRSS:"), kib("VmHWM:"));
    let _ = serve.kill();
    let _ = serve.wait();
    let ok_rss = rss <= 15 * 1024;
    met &= ok_rss;
    println!(
        "serve after {done} rounds ({:.1} s): VmRSS {:.1} MiB (target ≤ 15 MiB{}), peak {:.1} MiB",
        started.elapsed().as_secs_f64(),
        rss as f64 / 1024.0,
        if ok_rss { "" } else { ", missed" },
        hwm as f64 / 1024.0
    );
    if !met {
        println!("some targets were missed on this machine");
    }
    drop(guard);
}
