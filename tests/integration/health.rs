//! `qsfs-health` against the real things where they exist: a real FUSE filesystem (bindfs, a
//! Debian package) that answers, stops answering (SIGSTOP) or dies (SIGKILL, leaving a stale
//! mount); an HTTP server answering 200, 503 or nothing; the 0-db stand-in up, down, hung and
//! with a namespace in the wrong mode; unix sockets. Remediation runs with a fake clock and a
//! fake unit controller; the JSON schema is pinned; the binary's `check`, `wait` and `serve`
//! are run as processes.
//!
//! The FUSE tests need root and /dev/fuse (tests/setup-host installs bindfs).

use crate::support;

use qsfs::config::Source;
use qsfs::health::config::HealthConfig;
use qsfs::health::probes::mount;
use qsfs::health::probes::{Finding, Lane, ProbeName};
use qsfs::health::remediation::{Clock, Decision, Remediation};
use qsfs::health::report::Tracker;
use qsfs::health::runner::Probes;
use qsfs::health::{Outcome, Part, State};
use qsfs::mountinfo::at as find_mount;
use qsfs::systemd::{JobResult, SystemdError, UnitControl, UnitStatus};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_qsfs-health");

fn config(text: &str) -> HealthConfig {
    Source::new(Path::new("/test/qsfs.toml"), text)
        .parse()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Probes of `config` without systemd.
fn probes(config: &HealthConfig) -> Probes<FakeUnits> {
    Probes::new(config, Err("no systemd in this test".into()))
}

// ---------------------------------------------------------------------------------------------
// FUSE: bindfs

/// A bindfs mount served by a foreground bindfs process; unmounted when dropped.
struct Bindfs {
    child: Child,
    mountpoint: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bindfs {
    fn mount() -> Bindfs {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let source = dir.path().join("source");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::create_dir_all(&mountpoint).unwrap();
        std::fs::write(source.join("file"), b"hello").unwrap();
        let child = Command::new("bindfs")
            .arg("-f")
            .arg(&source)
            .arg(&mountpoint)
            .stdin(Stdio::null())
            .spawn()
            .expect("bindfs (run tests/setup-host)");
        let fuse = Bindfs {
            child,
            mountpoint,
            _dir: dir,
        };
        support::wait_for("the bindfs mount", || {
            find_mount(&mountinfo(), &fuse.mountpoint)
                .filter(|m| m.is_fuse())
                .map(|_| ())
        });
        fuse
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }
}

impl Drop for Bindfs {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .output();
    }
}

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// The probe timeout where a timeout is the point (a stopped FUSE process, a silent server).
const STAT_TIMEOUT: Duration = Duration::from_millis(300);
/// The probe timeout where the other side answers: generous, a loaded CI machine is slow.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn mount_probe_on_a_real_fuse_mount() {
    let fuse = Bindfs::mount();
    let lane = Lane::new();
    let o = mount::probe(&lane, &fuse.mountpoint, ANSWER_TIMEOUT).await;
    assert_eq!(o.state, State::Ok, "{o:?}");
    assert!(o.reason.contains("answers"), "{}", o.reason);
    // Through Probes, with the mountpoint from [paths].
    let c = config(&format!(
        "[paths]\nmountpoint = '{}'\n",
        fuse.mountpoint.display()
    ));
    let finding = probes(&c).run(ProbeName::Mount).await;
    assert_eq!(finding.outcome.state, State::Ok);
}

#[tokio::test]
async fn a_fuse_mount_that_stops_answering_times_out_instead_of_hanging() {
    let fuse = Bindfs::mount();
    let lane = Lane::new();
    fuse.signal(nix::sys::signal::Signal::SIGSTOP);
    let started = Instant::now();
    let o = mount::probe(&lane, &fuse.mountpoint, STAT_TIMEOUT).await;
    let took = started.elapsed();
    assert!(took < STAT_TIMEOUT + Duration::from_secs(5), "{took:?}");
    assert_eq!(o.state, State::Failed, "{o:?}");
    assert!(o.reason.starts_with("hung mount"), "{}", o.reason);
    assert!(o.restart_may_help);
    // The abandoned stat is still blocked: the next round says so instead of piling up threads.
    let o = mount::probe(&lane, &fuse.mountpoint, STAT_TIMEOUT).await;
    assert!(o.reason.contains("still blocked"), "{}", o.reason);
    fuse.signal(nix::sys::signal::Signal::SIGCONT);
    let deadline = Instant::now() + support::TIMEOUT;
    loop {
        let o = mount::probe(&lane, &fuse.mountpoint, STAT_TIMEOUT).await;
        if o.state == State::Ok {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {o:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_sigkilled_fuse_process_leaves_a_stale_mount_that_is_cleared_before_restart() {
    let mut fuse = Bindfs::mount();
    fuse.child.kill().unwrap();
    fuse.child.wait().unwrap();
    let lane = Lane::new();
    let o = mount::probe(&lane, &fuse.mountpoint, STAT_TIMEOUT).await;
    assert_eq!(o.state, State::Failed, "{o:?}");
    assert!(
        o.reason
            .contains("stale mount: transport endpoint is not connected"),
        "{}",
        o.reason
    );
    assert!(o.restart_may_help);
    assert!(find_mount(&mountinfo(), &fuse.mountpoint).is_some());

    qsfs::health::remediation::before_zdbfs_restart(&fuse.mountpoint, STAT_TIMEOUT).await;
    assert_eq!(find_mount(&mountinfo(), &fuse.mountpoint), None);
    let o = mount::probe(&lane, &fuse.mountpoint, STAT_TIMEOUT).await;
    assert!(
        o.reason.starts_with("nothing is mounted at"),
        "{}",
        o.reason
    );
    assert!(o.restart_may_help);
}

#[tokio::test]
async fn a_mount_that_answers_is_left_alone_before_restart() {
    let fuse = Bindfs::mount();
    qsfs::health::remediation::before_zdbfs_restart(&fuse.mountpoint, ANSWER_TIMEOUT).await;
    assert!(find_mount(&mountinfo(), &fuse.mountpoint).is_some());
}

#[tokio::test]
async fn something_other_than_fuse_is_not_the_expected_mount() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    let lane = Lane::new();
    let o = mount::probe(&lane, &target, STAT_TIMEOUT).await;
    assert!(o.reason.starts_with("nothing is mounted"), "{}", o.reason);
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "qsfs-test", target.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let o = mount::probe(&lane, &target, STAT_TIMEOUT).await;
    let _ = Command::new("umount").arg(&target).status();
    assert_eq!(o.state, State::Failed);
    assert!(
        o.reason.ends_with("is a tmpfs mount, not FUSE"),
        "{}",
        o.reason
    );
    assert!(!o.restart_may_help, "a restart of zdbfs does not fix that");
}

// ---------------------------------------------------------------------------------------------
// S3: a tiny HTTP server

#[derive(Clone, Copy)]
enum Http {
    Status(u16),
    Silent,
}

/// Answers every request on 127.0.0.1 with `behaviour` (Silent: reads and never answers).
fn http_server(behaviour: Http) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                match behaviour {
                    Http::Status(code) => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                    Http::Silent => std::thread::sleep(Duration::from_secs(10)),
                }
            });
        }
    });
    addr
}

fn s3_config(urls: &[String], accepted: &str) -> HealthConfig {
    let urls: Vec<String> = urls.iter().map(|u| format!("'{u}'")).collect();
    config(&format!(
        "[health.s3]\ntimeout_ms = 2000\nurls = [{}]\naccepted_statuses = {accepted}\n",
        urls.join(", ")
    ))
}

#[tokio::test]
async fn s3_probe_against_200_503_silence_and_a_closed_port() {
    let ok = http_server(Http::Status(200));
    let unavailable = http_server(Http::Status(503));
    let silent = http_server(Http::Silent);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = |a: SocketAddr, path: &str| format!("http://{a}{path}");
    let run = |urls: Vec<String>, accepted: &'static str| async move {
        let c = s3_config(&urls, accepted);
        probes(&c).run(ProbeName::S3).await
    };

    let f = run(
        vec![
            url(ok, "/minio/health/live"),
            url(ok, "/minio/health/ready"),
        ],
        "[200]",
    )
    .await;
    assert_eq!(f.outcome.state, State::Ok, "{:?}", f.outcome);
    assert_eq!(f.outcome.reason, "2 URLs answer");

    let f = run(
        vec![
            url(ok, "/minio/health/live"),
            url(unavailable, "/minio/health/ready"),
        ],
        "[200]",
    )
    .await;
    assert_eq!(f.outcome.state, State::Failed);
    assert_eq!(
        f.outcome.reason,
        format!(
            "{}: answered 503 (accepted: 200)",
            url(unavailable, "/minio/health/ready")
        )
    );
    assert!(!f.outcome.restart_may_help, "MinIO answers: not hung");
    assert_eq!(f.outcome.parts[0].state, State::Ok);

    let started = Instant::now();
    let f = run(vec![url(silent, "/minio/health/live")], "[200]").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(f.outcome.state, State::Failed);
    assert!(
        f.outcome.reason.contains("no answer"),
        "{}",
        f.outcome.reason
    );
    assert!(f.outcome.restart_may_help);

    let f = run(vec![url(closed, "/")], "[200]").await;
    assert!(f.outcome.reason.contains("refused"), "{}", f.outcome.reason);
    assert!(f.outcome.restart_may_help);

    // s3s-fs answers unauthenticated requests with 403: accepted when configured so.
    let forbidden = http_server(Http::Status(403));
    let f = run(vec![url(forbidden, "/")], "[200, 403]").await;
    assert_eq!(f.outcome.state, State::Ok);
}

// ---------------------------------------------------------------------------------------------
// zdb: the 0-db stand-in and the real zdb

/// A probe config for `namespaces` with `timeout_ms`: short only where a timeout is the point,
/// generous where zdb must answer (a loaded CI machine can take more than 300 ms).
fn zdb_config(app: &support::Appliance, namespaces: &[&str], timeout_ms: u64) -> HealthConfig {
    let list: Vec<String> = namespaces.iter().map(|n| format!("'{n}'")).collect();
    let text = std::fs::read_to_string(&app.qsfs_config).unwrap();
    config(&format!(
        "{text}\n[health.zdb]\ntimeout_ms = {timeout_ms}\nnamespaces = [{}]\n",
        list.join(", ")
    ))
}

#[tokio::test]
async fn zdb_probe_up_wrong_mode_missing_hung_and_down() {
    for stack in support::upstream::stacks() {
        eprintln!("---- on {}", stack.label());
        zdb_probe_on(&stack).await;
    }
}

async fn zdb_probe_on(stack: &support::upstream::Stack) {
    let app = support::Appliance::on(stack, "");
    let mut zdb = app.start_zdb(&[], &[]);
    let mut client = zdb.client();
    for ns in ["zdbfs-meta", "zdbfs-data", "zdbfs-temp"] {
        client.nsnew(ns).unwrap();
        client.nsset(ns, "mode", "seq").unwrap();
    }
    client.nsnew("zdbfs-wrong").unwrap();
    client.nsset("zdbfs-wrong", "mode", "user").unwrap();

    let all = ["zdbfs-meta", "zdbfs-data", "zdbfs-temp"];
    let good = zdb_config(&app, &all, 10_000);
    let f = probes(&good).run(ProbeName::Zdb).await;
    assert_eq!(f.outcome.state, State::Ok, "{:?}", f.outcome);
    assert!(
        f.outcome.reason.starts_with("PING ok"),
        "{}",
        f.outcome.reason
    );
    assert_eq!(f.outcome.parts.len(), 3);

    let wrong = zdb_config(&app, &["zdbfs-data", "zdbfs-wrong", "zdbfs-gone"], 10_000);
    let f = probes(&wrong).run(ProbeName::Zdb).await;
    assert_eq!(f.outcome.state, State::Failed);
    assert_eq!(
        f.outcome.reason,
        "zdbfs-wrong: mode userkey (zdbfs needs sequential); zdbfs-gone: namespace not found"
    );
    assert!(!f.outcome.restart_may_help, "a restart does not fix a mode");

    // Hung (SIGSTOP): PING times out within the probe's timeout.
    let pid = nix::unistd::Pid::from_raw(zdb.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let started = Instant::now();
    let f = probes(&zdb_config(&app, &all, 300))
        .run(ProbeName::Zdb)
        .await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(started.elapsed() < Duration::from_millis(5000));
    assert_eq!(f.outcome.state, State::Failed);
    assert!(
        f.outcome.reason.contains("no answer within 300 ms"),
        "{}",
        f.outcome.reason
    );
    assert!(f.outcome.restart_may_help);

    // Down.
    zdb.stop();
    let f = probes(&good).run(ProbeName::Zdb).await;
    assert_eq!(f.outcome.state, State::Failed);
    // Refused, or reset when a hook child that inherited the listening socket still runs.
    assert!(
        f.outcome.reason.starts_with("cannot connect to zdb")
            || f.outcome.reason.starts_with("I/O error with zdb"),
        "{}",
        f.outcome.reason
    );
    assert!(f.outcome.restart_may_help);
}

/// zdb answers nobody while it waits for a long `missing-data`: its probe says it is busy and
/// asks for no restart, the read succeeds, and once the hook is done the probe is ok again.
#[tokio::test]
async fn a_zdb_waiting_for_a_slow_missing_data_is_busy_not_failed() {
    for stack in support::upstream::stacks() {
        eprintln!("---- on {}", stack.label());
        busy_on(&stack).await;
    }
}

async fn busy_on(stack: &support::upstream::Stack) {
    let app = support::Appliance::on(stack, "[hook]\nmissing_data_timeout_secs = 30\n");
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    let mut c = zdb.client();
    crate::hook::create_seq_namespace(&mut c, "zdbfs-data");
    let mut seed = 0;
    let written = crate::hook::write_until_rotated(&app, &mut c, "zdbfs-data", 1, &mut seed);
    support::wait_for("the jump-data job", || {
        app.jobs()
            .iter()
            .any(|j| j.event == qsfs::spool::Trigger::JumpData)
            .then_some(())
    });
    app.drain_spool();

    // Every retrieve takes 4 s, many times the probe's timeout.
    let slow = app.dir.path().join("slow-zstor");
    let zstor = stack.zstor.path.display().to_string();
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" retrieve \"*) sleep 4;; esac\nexec {zstor} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = std::fs::read_to_string(&app.qsfs_config).unwrap();
    std::fs::write(
        &app.qsfs_config,
        config.replace(&zstor, &slow.display().to_string()),
    )
    .unwrap();
    std::fs::remove_file(app.data.join("zdbfs-data/d0")).unwrap();
    let evicted = written.into_iter().find(|w| w.file == 0).unwrap();
    let mut reader = zdb.client();
    reader.select("zdbfs-data", None).unwrap();
    let key = evicted.key.clone();
    let read = std::thread::spawn(move || crate::hook::get(&mut reader, &key));

    support::wait_for("zdb marked busy", || qsfs::zdb_busy::current(&app.state));
    let config = zdb_config(&app, &["zdbfs-data"], 300);
    let f = probes(&config).run(ProbeName::Zdb).await;
    assert_eq!(f.outcome.state, State::Degraded, "{:?}", f.outcome);
    assert!(
        f.outcome.reason.starts_with("busy: missing-data for "),
        "{}",
        f.outcome.reason
    );
    assert!(
        !f.outcome.restart_may_help,
        "a restart would start the read again"
    );

    assert_eq!(
        read.join().unwrap().unwrap(),
        evicted.value,
        "the read succeeds"
    );
    assert_eq!(qsfs::zdb_busy::current(&app.state), None);
    assert!(
        !app.state.join("zdb-busy").exists(),
        "the hook removed its mark"
    );
    let f = probes(&config).run(ProbeName::Zdb).await;
    assert_eq!(f.outcome.state, State::Ok, "{:?}", f.outcome);
}

/// A restore that refused (or has not finished) is what the zdb probe reports, and not as a
/// failure a restart fixes: a restart would only run the restore again.
#[tokio::test]
async fn zdb_probe_says_why_a_restore_holds_zdb_back() {
    let app = support::Appliance::new(None, "");
    let good = zdb_config(&app, &["zdbfs-meta"], 1000);
    std::fs::create_dir_all(&app.state).unwrap();
    std::fs::write(app.state.join("restoring"), "").unwrap();
    let f = probes(&good).run(ProbeName::Zdb).await;
    assert_eq!(
        (
            f.outcome.state,
            f.outcome.reason.as_str(),
            f.outcome.restart_may_help
        ),
        (
            State::Degraded,
            "zdb restores its namespaces from the backends and starts when done",
            false
        )
    );
    std::fs::remove_file(app.state.join("restoring")).unwrap();
    std::fs::write(
        app.state.join("restore-failed"),
        "zdbfs-data: i3 is stored on the backends but its data file d3 is not\n",
    )
    .unwrap();
    let f = probes(&good).run(ProbeName::Zdb).await;
    assert_eq!(
        f.outcome.reason,
        "zdb does not start: namespaces-init refused: zdbfs-data: i3 is stored on the \
         backends but its data file d3 is not"
    );
    assert!(!f.outcome.restart_may_help);
}

// ---------------------------------------------------------------------------------------------
// zstor socket, monitor status, units (with a fake controller)

/// The zstor stand-in's daemon on `dir/zstor.sock` (its config and store under `dir`).
fn zstor_daemon(dir: &Path) -> support::ZstorDaemon {
    let socket = dir.join("zstor.sock");
    let config = dir.join("zstor-etc/zstor.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, support::zstor_config_text(Some(&socket))).unwrap();
    support::ZstorDaemon::start(
        &support::upstream::Program::standin("zstor").path,
        &config,
        &socket,
        &dir.join("zstor-daemon.log"),
    )
}

#[tokio::test]
async fn zstor_probe_needs_an_answer_not_only_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("zstor.sock");
    let c = config(&format!(
        "[health.zstor]\nsocket = '{}'\ntimeout_ms = 300\n",
        socket.display()
    ));
    let f = probes(&c).run(ProbeName::Zstor).await;
    assert_eq!(f.outcome.state, State::Failed);
    assert!(f.outcome.restart_may_help);
    // A socket that accepts and never answers: what the old probe called ok.
    let listener = UnixListener::bind(&socket).unwrap();
    let f = probes(&c).run(ProbeName::Zstor).await;
    assert_eq!(f.outcome.state, State::Failed, "{:?}", f.outcome);
    assert!(
        f.outcome.reason.contains("answers none within"),
        "{:?}",
        f.outcome
    );
    drop(listener);
    std::fs::remove_file(&socket).unwrap();
    let _daemon = zstor_daemon(dir.path());
    let f = probes(&c).run(ProbeName::Zstor).await;
    assert_eq!(f.outcome.state, State::Ok, "{:?}", f.outcome);
}

/// Contract: the probe's check is a command the daemon (real and stand-in) answers without
/// logging an error, and a daemon busy with one long store does not answer it. The real
/// zstor's data backends are behind a link of 256 KiB/s; the stand-in's store takes
/// `ms_per_mib`.
#[tokio::test(flavor = "multi_thread")]
async fn the_zstor_probe_speaks_the_daemons_protocol_and_sees_it_busy() {
    for stack in support::upstream::stacks() {
        eprintln!("---- on {}", stack.label());
        let app = support::Appliance::on(&stack, "");
        let backends = app.backends.as_ref().unwrap();
        let links: Vec<support::link::Link> = backends
            .data
            .iter()
            .map(|a| support::link::Link::start(*a))
            .collect();
        let socket = app.dir.path().join("zstor.sock");
        let data: Vec<SocketAddr> = links.iter().map(|l| l.address).collect();
        std::fs::write(
            &app.zstor_config,
            support::upstream::zstor_config_at(&backends.meta, &data, Some(&socket)),
        )
        .unwrap();
        let log = app.dir.path().join("zstor-daemon.log");
        let _daemon =
            support::ZstorDaemon::start(&stack.zstor.path, &app.zstor_config, &socket, &log);
        let c = config(&format!(
            "[health.zstor]\nsocket = '{}'\n",
            socket.display()
        ));
        let f = probes(&c).run(ProbeName::Zstor).await;
        assert_eq!(f.outcome.state, State::Ok, "{:?}", f.outcome);
        std::thread::sleep(Duration::from_millis(200));
        let log_text = std::fs::read_to_string(&log).unwrap();
        assert!(
            !log_text.contains("Error while handeling client"),
            "{log_text}"
        );

        // A store of 4 MiB that takes 16 s or more.
        let file = app.dir.path().join("big");
        std::fs::write(&file, support::incompressible(4 << 20, 7)).unwrap();
        if stack.zstor.real {
            for link in &links {
                link.shape(support::link::Shape {
                    rate: Some(256 * 1024),
                    delay: Duration::ZERO,
                });
            }
        } else {
            std::fs::write(app.store.join("inject.json"), r#"{"ms_per_mib": 4000}"#).unwrap();
        }
        let zstor = app.zstor();
        let store = std::thread::spawn(move || zstor.store(&file, None));
        std::thread::sleep(Duration::from_secs(1));
        let f = probes(&c).run(ProbeName::Zstor).await;
        assert_eq!(f.outcome.state, State::Failed, "{:?}", f.outcome);
        assert!(f.outcome.restart_may_help);
        assert!(
            f.outcome.reason.contains("answers none within 2"),
            "{:?}",
            f.outcome
        );
        drop(_daemon);
        let _ = store.join();
    }
}

#[tokio::test]
async fn monitor_probe_reads_the_published_status() {
    use qsfs::monitor::status::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monitor-status.json");
    let c = config(&format!(
        "[health.monitor]\nstatus_file = '{}'\n",
        path.display()
    ));
    let f = probes(&c).run(ProbeName::Monitor).await;
    assert_eq!(f.outcome.state, State::Failed);
    assert!(f.outcome.reason.contains("is qsfs-monitor running?"));

    let mut status = MonitorStatus {
        schema_version: SCHEMA_VERSION,
        pid: 1,
        started_unix_ms: 0,
        updated_unix_ms: qsfs::clock::now_unix_ms(),
        uploads: UploadStatus {
            queued_files: 4,
            oldest_unverified_age_secs: Some(7200),
            ..UploadStatus::default()
        },
        cache: CacheStatus::default(),
        backends: vec![BackendStatus {
            label: "[2a02::1]:9900/data1".into(),
            kind: BackendKind::Data,
            state: BackendState::LowSpace,
            since_unix_ms: 0,
            fill_percent: Some(96.0),
            reason: None,
        }],
        rebuild: None,
        zdbfs: None,
        errors: Default::default(),
    };
    std::fs::write(&path, serde_json::to_vec(&status).unwrap()).unwrap();
    let f = probes(&c).run(ProbeName::Monitor).await;
    assert_eq!(f.outcome.state, State::Degraded, "{:?}", f.outcome);
    assert_eq!(
        f.outcome.reason,
        "4 files waiting for upload, oldest unverified 7200.0 s; 1 of 1 data backends not healthy"
    );
    assert_eq!(
        f.outcome.parts[1],
        Part::new(
            "data [2a02::1]:9900/data1",
            State::Degraded,
            "low space, 96.0% full"
        )
    );
    status.updated_unix_ms -= 60_000;
    std::fs::write(&path, serde_json::to_vec(&status).unwrap()).unwrap();
    let f = probes(&c).run(ProbeName::Monitor).await;
    assert_eq!(f.outcome.state, State::Failed);
    std::fs::write(&path, b"{ not json").unwrap();
    let f = probes(&c).run(ProbeName::Monitor).await;
    assert_eq!(f.outcome.state, State::Unknown);
}

/// A fake service manager: unit states set by the test, restarts recorded.
#[derive(Clone, Default)]
struct FakeUnits {
    inner: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    units: BTreeMap<String, UnitStatus>,
    restarts: Vec<String>,
    restart_result: Option<JobResult>,
}

impl FakeUnits {
    fn set(&self, unit: &str, active: &str, sub: &str) {
        self.inner.lock().unwrap().units.insert(
            unit.to_string(),
            UnitStatus {
                name: unit.to_string(),
                load_state: "loaded".into(),
                active_state: active.into(),
                sub_state: sub.into(),
                result: Some("success".into()),
                n_restarts: Some(0),
            },
        );
    }

    fn restarts(&self) -> Vec<String> {
        self.inner.lock().unwrap().restarts.clone()
    }
}

impl UnitControl for FakeUnits {
    async fn status(&self, unit: &str) -> Result<UnitStatus, SystemdError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.units.get(unit).cloned().unwrap_or(UnitStatus {
            name: unit.to_string(),
            load_state: "not-found".into(),
            active_state: "inactive".into(),
            sub_state: "dead".into(),
            result: None,
            n_restarts: None,
        }))
    }
    async fn start(&self, _unit: &str) -> Result<JobResult, SystemdError> {
        Ok(JobResult::Done)
    }
    async fn stop(&self, _unit: &str) -> Result<JobResult, SystemdError> {
        Ok(JobResult::Done)
    }
    async fn restart(&self, unit: &str) -> Result<JobResult, SystemdError> {
        let mut inner = self.inner.lock().unwrap();
        inner.restarts.push(unit.to_string());
        Ok(inner.restart_result.clone().unwrap_or(JobResult::Done))
    }
}

#[tokio::test]
async fn units_probe_reports_every_unit() {
    let fake = FakeUnits::default();
    fake.set("qsfs-zdb.service", "active", "running");
    fake.set("qsfs-zdbfs.service", "activating", "start-post");
    let c = config("[health.units]\nunits = ['qsfs-zdb.service', 'qsfs-zdbfs.service', 'qsfs-minio.service']\n");
    let probes = Probes::new(&c, Ok(fake));
    let f = probes.run(ProbeName::Units).await;
    assert_eq!(f.outcome.state, State::Failed);
    assert_eq!(
        f.outcome.reason,
        "qsfs-zdbfs.service: activating (start-post); qsfs-minio.service: not loadable (LoadState=not-found)"
    );
    assert_eq!(
        f.outcome.parts.iter().map(|p| p.state).collect::<Vec<_>>(),
        [State::Ok, State::Degraded, State::Failed]
    );
}

// ---------------------------------------------------------------------------------------------
// Remediation: fake clock, fake controller

/// A remediation over `units` with a fake clock (returned to advance it) and a state
/// directory kept as long as the returned guard.
fn remediation(
    c: &HealthConfig,
    units: &FakeUnits,
) -> (
    Remediation<FakeUnits, FakeClock>,
    FakeClock,
    tempfile::TempDir,
) {
    let clock = FakeClock(Arc::new(Mutex::new(Instant::now())));
    let dir = tempfile::tempdir().unwrap();
    let r = Remediation::new(
        &c.health.remediation,
        units.clone(),
        clock.clone(),
        dir.path(),
        Duration::from_secs(1),
    );
    (r, clock, dir)
}

#[derive(Clone)]
struct FakeClock(Arc<Mutex<Instant>>);

impl FakeClock {
    fn advance(&self, secs: u64) {
        *self.0.lock().unwrap() += Duration::from_secs(secs);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

fn finding(probe: ProbeName, outcome: Outcome) -> Finding {
    Finding {
        probe,
        outcome,
        duration: Duration::from_millis(1),
    }
}

async fn step(
    r: &mut Remediation<FakeUnits, FakeClock>,
    clock: &FakeClock,
    secs: u64,
) -> Vec<(ProbeName, Decision)> {
    clock.advance(secs);
    let findings = vec![
        finding(ProbeName::Zdb, Outcome::unresponsive("PING: no answer")),
        // Failures a restart cannot fix, and probes without a unit, are never acted on.
        finding(ProbeName::S3, Outcome::new(State::Failed, "answered 503")),
        finding(ProbeName::Disk, Outcome::new(State::Failed, "full")),
    ];
    let decisions = r.round(&findings).await;
    r.wait_idle().await;
    decisions
}

#[tokio::test]
async fn remediation_counts_backs_off_gives_up_and_skips_while_systemd_acts() {
    let c = config(
        "[health.remediation]\nfailures_before_restart = 2\nbackoff_initial_secs = 30\nbackoff_max_secs = 60\nmax_restarts = 2\nwindow_secs = 600\n",
    );
    let units = FakeUnits::default();
    units.set("qsfs-zdb.service", "active", "running");
    let (mut r, clock, _dir) = remediation(&c, &units);
    let zdb = |d: Vec<(ProbeName, Decision)>| {
        d.into_iter().find(|(p, _)| *p == ProbeName::Zdb).unwrap().1
    };
    assert_eq!(zdb(step(&mut r, &clock, 0).await), Decision::Counting(1));
    assert_eq!(zdb(step(&mut r, &clock, 10).await), Decision::Restart(1));
    assert_eq!(units.restarts(), ["qsfs-zdb.service"]);
    assert_eq!(zdb(step(&mut r, &clock, 10).await), Decision::Counting(1));
    assert_eq!(
        zdb(step(&mut r, &clock, 10).await),
        Decision::Backoff(Duration::from_secs(10))
    );
    assert_eq!(zdb(step(&mut r, &clock, 10).await), Decision::Restart(2));
    assert_eq!(units.restarts().len(), 2);
    // Two restarts in the window: give up.
    step(&mut r, &clock, 10).await;
    assert_eq!(
        zdb(step(&mut r, &clock, 10).await),
        Decision::GaveUp { first: true }
    );
    assert_eq!(
        zdb(step(&mut r, &clock, 10).await),
        Decision::GaveUp { first: false }
    );
    assert_eq!(units.restarts().len(), 2);

    // systemd restarting the unit itself: never restart on top of it.
    units.set("qsfs-zdb.service", "activating", "auto-restart");
    for _ in 0..5 {
        assert_eq!(
            zdb(step(&mut r, &clock, 1000).await),
            Decision::SystemdBusy("activating (auto-restart)".into())
        );
    }
    // An inactive unit is not ours to start.
    units.set("qsfs-zdb.service", "failed", "failed");
    assert!(matches!(
        zdb(step(&mut r, &clock, 10).await),
        Decision::UnitNotActive(_)
    ));
    assert_eq!(units.restarts().len(), 2);

    // The window slid: active and failing again restarts; a failed job is counted as such.
    units.set("qsfs-zdb.service", "active", "running");
    units.inner.lock().unwrap().restart_result = Some(JobResult::Failed);
    step(&mut r, &clock, 10).await;
    assert_eq!(zdb(step(&mut r, &clock, 10).await), Decision::Restart(1));
    let counters = r.counters()[&ProbeName::Zdb].clone();
    assert_eq!(
        (counters.requested, counters.done, counters.failed),
        (3, 2, 1)
    );
    assert!(r
        .round(&[finding(ProbeName::S3, Outcome::unresponsive("x"))])
        .await
        .iter()
        .all(|(p, _)| *p == ProbeName::S3));
}

#[tokio::test]
async fn remediation_restarts_only_enabled_probes() {
    let c = config("[health.remediation]\nrestart = ['mount']\nfailures_before_restart = 1\n");
    let units = FakeUnits::default();
    units.set("qsfs-zdb.service", "active", "running");
    units.set("qsfs-zdbfs.service", "active", "running");
    let (mut r, _, _dir) = remediation(&c, &units);
    let decisions = r
        .round(&[
            finding(ProbeName::Zdb, Outcome::unresponsive("down")),
            finding(ProbeName::Mount, Outcome::unresponsive("hung")),
        ])
        .await;
    r.wait_idle().await;
    assert_eq!(decisions, [(ProbeName::Mount, Decision::Restart(1))]);
    assert_eq!(units.restarts(), ["qsfs-zdbfs.service"]);
}

#[tokio::test]
async fn remediation_restarts_one_unit_at_a_time_upstream_first() {
    let c = config("[health.remediation]\nfailures_before_restart = 1\n");
    let units = FakeUnits::default();
    for unit in [
        "qsfs-zdb.service",
        "qsfs-zdbfs.service",
        "qsfs-minio.service",
    ] {
        units.set(unit, "active", "running");
    }
    let (mut r, _, _dir) = remediation(&c, &units);
    // A hung zdb hangs the mount and S3 too: only zdb is restarted.
    let decisions = r
        .round(&[
            finding(ProbeName::S3, Outcome::unresponsive("no answer")),
            finding(ProbeName::Mount, Outcome::unresponsive("hung")),
            finding(ProbeName::Zdb, Outcome::unresponsive("PING: no answer")),
        ])
        .await;
    r.wait_idle().await;
    assert_eq!(
        decisions,
        [
            (ProbeName::Zdb, Decision::Restart(1)),
            (ProbeName::Mount, Decision::InProgress),
            (ProbeName::S3, Decision::InProgress),
        ]
    );
    assert_eq!(units.restarts(), ["qsfs-zdb.service"]);
}

// ---------------------------------------------------------------------------------------------
// Report: the JSON schema

#[test]
fn json_schema_is_pinned() {
    let mut zdb = Outcome::new(State::Degraded, "zdbfs-data: 91.0% of its limit used");
    zdb.parts = vec![Part::new(
        "zdbfs-data",
        State::Degraded,
        "91.0% of its limit used",
    )];
    let report = Tracker::default().report(
        &[
            Finding {
                probe: ProbeName::Zdb,
                outcome: zdb,
                duration: Duration::from_micros(1250),
            },
            Finding {
                probe: ProbeName::Zstor,
                outcome: Outcome::ok("accepts"),
                duration: Duration::from_millis(2),
            },
        ],
        1_767_225_600_000,
    );
    assert_eq!(
        report.to_json(),
        r#"{
  "schema_version": 1,
  "checked_unix_ms": 1767225600000,
  "state": "degraded",
  "probes": [
    {
      "name": "zdb",
      "state": "degraded",
      "reason": "zdbfs-data: 91.0% of its limit used",
      "since_unix_ms": 1767225600000,
      "duration_ms": 1.3,
      "parts": [
        {
          "name": "zdbfs-data",
          "state": "degraded",
          "reason": "91.0% of its limit used"
        }
      ]
    },
    {
      "name": "zstor",
      "state": "ok",
      "reason": "accepts",
      "since_unix_ms": 1767225600000,
      "duration_ms": 2.0,
      "parts": []
    }
  ]
}
"#
    );
}

// ---------------------------------------------------------------------------------------------
// The binary

/// A qsfs.toml in a temp dir whose zstor socket is `dir/zstor.sock`, data and index dirs exist.
fn binary_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("qsfs.toml");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("index")).unwrap();
    std::fs::write(
        &path,
        format!(
            "[paths]\ndata_dir = '{0}/data'\nindex_dir = '{0}/index'\nmountpoint = '{0}/mnt'\nzdb_socket = '{0}/zdb.sock'\n\
             [health]\nprobes = ['zstor', 'disk']\nstatus_file = '{0}/health-status.json'\n\
             [health.zstor]\nsocket = '{0}/zstor.sock'\n{extra}",
            dir.display()
        ),
    )
    .unwrap();
    path
}

fn run(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap()
}

#[test]
fn check_exit_codes_and_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = binary_config(dir.path(), "");
    // zstor socket missing: failed (2).
    let out = run(&cfg, &["check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("qsfs: failed\nCOMPONENT"), "{table}");
    assert!(table.contains("\nzstor "), "{table}");

    let _daemon = zstor_daemon(dir.path());
    let out = run(&cfg, &["check", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&json),
        ["checked_unix_ms", "probes", "schema_version", "state"]
    );
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["state"], "ok");
    let names: Vec<&str> = json["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["zstor", "disk"]);
    assert_eq!(
        keys(&json["probes"][1]),
        [
            "duration_ms",
            "name",
            "parts",
            "reason",
            "since_unix_ms",
            "state"
        ]
    );
    assert_eq!(
        keys(&json["probes"][1]["parts"][0]),
        ["name", "reason", "state"]
    );

    // Degraded (1): every filesystem has less than 100% free.
    let cfg = binary_config(
        dir.path(),
        "[health.disk]\nfree_degraded_percent = 100\nfree_failed_percent = 0\n",
    );
    assert_eq!(run(&cfg, &["check"]).status.code(), Some(1));
    // Unknown (3): a monitor status that is not JSON.
    std::fs::write(dir.path().join("monitor.json"), "garbage").unwrap();
    let cfg = binary_config(
        dir.path(),
        &format!(
            "[health.monitor]\nstatus_file = '{}/monitor.json'\n",
            dir.path().display()
        ),
    );
    let out = run(&cfg, &["check", "--only", "monitor"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    // A config error: exit 78, with file, line and key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[health]\ninterval_secs = 0\n").unwrap();
    let out = run(&bad, &["check"]);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:2:17: key `health.interval_secs`"),
        "{stderr}"
    );
}

#[test]
fn since_comes_from_the_status_file_of_serve() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = binary_config(dir.path(), "");
    let _daemon = zstor_daemon(dir.path());
    let first: serde_json::Value =
        serde_json::from_slice(&run(&cfg, &["check", "--format", "json"]).stdout).unwrap();
    // Pretend serve wrote it a while ago with the same states.
    let mut earlier = first.clone();
    for p in earlier["probes"].as_array_mut().unwrap() {
        p["since_unix_ms"] = serde_json::json!(first["checked_unix_ms"].as_u64().unwrap() - 60_000);
    }
    std::fs::write(
        dir.path().join("health-status.json"),
        serde_json::to_vec(&earlier).unwrap(),
    )
    .unwrap();
    let second: serde_json::Value =
        serde_json::from_slice(&run(&cfg, &["check", "--format", "json"]).stdout).unwrap();
    assert_eq!(
        second["probes"][0]["since_unix_ms"],
        earlier["probes"][0]["since_unix_ms"]
    );
}

#[test]
fn wait_blocks_until_ok_or_times_out_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = binary_config(dir.path(), "");
    let started = Instant::now();
    let out = run(
        &cfg,
        &["wait", "zstor", "--timeout", "400ms", "--interval", "50ms"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(started.elapsed() < Duration::from_secs(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("zstor is not ok after"), "{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");

    let path = dir.path().to_path_buf();
    let binder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        zstor_daemon(&path)
    });
    let out = run(
        &cfg,
        &["wait", "zstor", "--timeout", "10s", "--interval", "50ms"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    drop(binder.join());
}

#[test]
fn serve_notifies_systemd_writes_status_and_serves_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.sock");
    let cfg = binary_config(dir.path(), "[health.remediation]\nrestart = []\n");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replace(
        "[health]\n",
        &format!("[health]\nmetrics = 'unix:{}'\n", metrics.display()),
    );
    std::fs::write(&cfg, text).unwrap();
    let _daemon = zstor_daemon(dir.path());
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(support::TIMEOUT)).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["serve", "--interval", "100ms"])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "2000000")
        .env("QSFS_LOG_TARGET", "stderr")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut next = || {
        let n = notify.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1\nSTATUS=ok: 2 probes ok\n");
    assert_eq!(next(), "WATCHDOG=1\n");
    let report = qsfs::health::report::Report::read(&dir.path().join("health-status.json"))
        .expect("the status file");
    assert_eq!(report.state, State::Ok);

    let body = support::wait_for("two rounds in the metrics", || {
        let mut s = UnixStream::connect(&metrics).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let rounds: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("qsfs_health_rounds_total "))?
            .parse()
            .ok()?;
        (rounds >= 2).then_some(out)
    });
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains("qsfs_health_probe_ok{probe=\"zstor\"} 1\n"),
        "{body}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = support::wait_for("serve to stop", || child.try_wait().unwrap());
    assert!(status.success(), "{status}");
    let mut rest = Vec::new();
    notify.set_nonblocking(true).unwrap();
    while let Ok(n) = notify.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(
        rest.last().map(String::as_str),
        Some("STOPPING=1\n"),
        "{rest:?}"
    );
    assert!(!metrics.exists(), "the metrics socket is removed on stop");
}
