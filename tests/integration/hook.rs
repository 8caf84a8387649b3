//! `zdb-hook` end to end: zdb runs it as its `--hook`, zstor stores on the backends. Covers the
//! spool jobs of a scripted workload, `missing-data`, `ready`, crash safety of the spool, the
//! `namespaces-init` restore and bad input. The tests that involve zdb or zstor run on the
//! stand-ins and, when `QSFS_UPSTREAM_BIN` has them, on the real zdb and zstor (over real 0-db
//! backends).

use crate::support;

use crate::support::link::{Link, Shape};
use crate::support::upstream::Stack;
use crate::support::{wait_for, Appliance};
use qsfs::spool::{Job, Trigger};
use qsfs::zdb::resp::Reply;
use qsfs::zdb::Client;
use qsfs::zstor::Checksum;
use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const HOOK: &str = env!("CARGO_BIN_EXE_zdb-hook");
const VALUE_SIZE: usize = 100 * 1024;

fn value(seed: u8) -> Vec<u8> {
    (0..VALUE_SIZE)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub(crate) fn create_seq_namespace(client: &mut Client, namespace: &str) {
    client.nsnew(namespace).unwrap();
    client.nsset(namespace, "mode", "seq").unwrap();
}

fn select(client: &mut Client, namespace: &str) {
    client.select(namespace, None).unwrap();
}

/// SET with a new sequential key; returns the key.
fn append(client: &mut Client, data: &[u8]) -> Vec<u8> {
    match client.command(&[b"SET", b"", data]).unwrap() {
        Reply::Bulk(key) => key,
        other => panic!("SET answered {other:?}"),
    }
}

pub(crate) fn get(client: &mut Client, key: &[u8]) -> Result<Vec<u8>, qsfs::zdb::ZdbError> {
    match client.command(&[b"GET", key])? {
        Reply::Bulk(data) => Ok(data),
        other => panic!("GET answered {other:?}"),
    }
}

/// A job reduced to what the test asserts: event, namespace, and each file with whether it
/// was snapshotted.
type JobSummary = (String, String, Vec<(PathBuf, bool)>);

fn summary(job: &Job) -> JobSummary {
    let files = job
        .files
        .iter()
        .map(|f| (f.path.clone(), f.snapshot.is_some()))
        .collect();
    let event = serde_json::to_value(job.event).unwrap();
    (
        event.as_str().unwrap().to_string(),
        job.namespace.clone(),
        files,
    )
}

fn summaries(jobs: &[Job]) -> Vec<JobSummary> {
    let mut all: Vec<_> = jobs.iter().map(summary).collect();
    all.sort();
    all
}

/// A value written by the test, and the data file it went into.
#[derive(Clone)]
pub(crate) struct Written {
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) file: u32,
}

/// Writes to `namespace` until its data file has rotated `rotations` more times.
pub(crate) fn write_until_rotated(
    app: &Appliance,
    client: &mut Client,
    namespace: &str,
    rotations: u32,
    seed: &mut u8,
) -> Vec<Written> {
    select(client, namespace);
    let dir = app.data.join(namespace);
    let active = || qsfs::layout::highest_file_number(&dir, 'd').unwrap_or(0);
    let start = active();
    let mut written = Vec::new();
    while active() < start + rotations {
        *seed = seed.wrapping_add(1);
        let value = value(*seed);
        // zdb rotates before a write that would not fit, so the value lands in the file that
        // is active once SET has answered.
        let key = append(client, &value);
        written.push(Written {
            key,
            value,
            file: active(),
        });
    }
    written
}

#[test]
fn a_workload_spools_exactly_the_expected_jobs() {
    support::upstream::each_stack(check_a_workload_spools_exactly_the_expected_jobs);
}

fn check_a_workload_spools_exactly_the_expected_jobs(stack: &Stack) {
    let app = Appliance::on(stack, "");
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    let mut c = zdb.client();
    for ns in ["zdbfs-meta", "zdbfs-data", "zdbfs-temp"] {
        create_seq_namespace(&mut c, ns);
    }
    let mut seed = 0;
    // Two rotations of zdbfs-data, with an overwrite of a key of i0 in between so that i0 is
    // dirty at the second jump; a rotation of zdbfs-temp, which is never uploaded.
    let first = write_until_rotated(&app, &mut c, "zdbfs-data", 1, &mut seed);
    let i0_before = std::fs::read(app.index.join("zdbfs-data/i0")).unwrap();
    c.command(&[b"SET", &first[0].key, &value(200)]).unwrap();
    write_until_rotated(&app, &mut c, "zdbfs-data", 1, &mut seed);
    write_until_rotated(&app, &mut c, "zdbfs-temp", 1, &mut seed);
    select(&mut c, "zdbfs-meta");
    append(&mut c, b"inode");

    let ix = |ns: &str, n: u32| app.index.join(format!("{ns}/i{n}"));
    let dx = |ns: &str, n: u32| app.data.join(format!("{ns}/d{n}"));
    let ns_file = |ns: &str| app.index.join(format!("{ns}/zdb-namespace"));
    let s = |event: &str, ns: &str, files: Vec<(PathBuf, bool)>| {
        (event.to_string(), ns.to_string(), files)
    };
    let mut expected = vec![
        s(
            "namespace-created",
            "zdbfs-meta",
            vec![(ns_file("zdbfs-meta"), false)],
        ),
        s(
            "namespace-updated",
            "zdbfs-meta",
            vec![(ns_file("zdbfs-meta"), false)],
        ),
        s(
            "namespace-created",
            "zdbfs-data",
            vec![(ns_file("zdbfs-data"), false)],
        ),
        s(
            "namespace-updated",
            "zdbfs-data",
            vec![(ns_file("zdbfs-data"), false)],
        ),
        s(
            "jump-index",
            "zdbfs-data",
            vec![(ix("zdbfs-data", 0), true)],
        ),
        s(
            "jump-data",
            "zdbfs-data",
            vec![(dx("zdbfs-data", 0), false)],
        ),
        s(
            "jump-index",
            "zdbfs-data",
            vec![(ix("zdbfs-data", 1), true), (ix("zdbfs-data", 0), true)],
        ),
        s(
            "jump-data",
            "zdbfs-data",
            vec![(dx("zdbfs-data", 1), false)],
        ),
    ];
    expected.sort();
    let jobs = wait_for("the jobs of the running workload", || {
        let jobs = app.jobs();
        (jobs.len() >= expected.len()).then_some(jobs)
    });
    assert_eq!(summaries(&jobs), expected);

    // Snapshots keep the index files as they were at the jump.
    let jump_index: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.event == Trigger::JumpIndex)
        .collect();
    let snapshot_of = |job: &Job, path: &Path| {
        std::fs::read(
            job.files
                .iter()
                .find(|f| f.path == path)
                .unwrap()
                .snapshot
                .as_ref()
                .unwrap(),
        )
        .unwrap()
    };
    let (early, late) = if jump_index[0].files.len() == 1 {
        (jump_index[0], jump_index[1])
    } else {
        (jump_index[1], jump_index[0])
    };
    assert_eq!(snapshot_of(early, &ix("zdbfs-data", 0)), i0_before);
    let i0_now = std::fs::read(ix("zdbfs-data", 0)).unwrap();
    assert_ne!(i0_now, i0_before, "the overwrite changed i0 in place");
    assert_eq!(snapshot_of(late, &ix("zdbfs-data", 0)), i0_now);

    // A clean stop spools the active files of every namespace but zdbfs-temp.
    assert_eq!(zdb.stop().code(), Some(143));
    for ns in ["default", "zdbfs-meta", "zdbfs-data"] {
        let active = if ns == "zdbfs-data" { 2 } else { 0 };
        expected.push(s(
            "close",
            ns,
            vec![(ix(ns, active), true), (dx(ns, active), false)],
        ));
        expected.push(s(
            "namespace-closing",
            ns,
            vec![(ix(ns, active), true), (dx(ns, active), false)],
        ));
    }
    expected.sort();
    let jobs = wait_for("the jobs of the stop", || {
        let jobs = app.jobs();
        (jobs.len() >= expected.len()).then_some(jobs)
    });
    // `close` also snapshots the older index files changed since a second before the last
    // jump: at this pace i0 and i1, at a slower one not (the test of the stop checks it).
    let mut got = summaries(&jobs);
    for (event, ns, files) in &mut got {
        if event == "close" && ns == "zdbfs-data" {
            files.retain(|(path, _)| ![ix(ns, 0), ix(ns, 1)].contains(path));
        }
    }
    assert_eq!(got, expected);

    // Nobody consumes the spool while the monitor is absent: the jobs wait.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(app.jobs(), jobs);
    let log = zdb.log();
    assert!(log.contains("jump-index zdbfs-data handled in"), "{log}");
    assert!(log.contains("zdbfs-temp is never uploaded"), "{log}");
}

#[test]
fn missing_data_comes_back_through_zstor_and_never_half() {
    support::upstream::each_stack(check_missing_data_comes_back_through_zstor_and_never_half);
}

fn check_missing_data_comes_back_through_zstor_and_never_half(stack: &Stack) {
    let app = Appliance::on(stack, "[hook]\nmissing_data_timeout_secs = 2\n");
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    let mut c = zdb.client();
    create_seq_namespace(&mut c, "zdbfs-data");
    let mut seed = 0;
    let mut written = write_until_rotated(&app, &mut c, "zdbfs-data", 2, &mut seed);
    wait_for("the jump-data jobs", || {
        (app.jobs()
            .iter()
            .filter(|j| j.event == Trigger::JumpData)
            .count()
            == 2)
            .then_some(())
    });
    app.drain_spool();
    let in_file =
        |written: &[Written], n: u32| written.iter().find(|w| w.file == n).cloned().unwrap();
    let data_file = |n: u32| app.data.join(format!("zdbfs-data/d{n}"));

    // d0 was evicted from the cache: a read brings it back, whole.
    let checksum = Checksum::of_file(&data_file(0)).unwrap();
    std::fs::remove_file(data_file(0)).unwrap();
    let w = in_file(&written, 0);
    assert_eq!(get(&mut c, &w.key).unwrap(), w.value);
    assert_eq!(Checksum::of_file(&data_file(0)).unwrap(), checksum);

    // zstor writes half the file and hangs: the hook gives up after its timeout and removes
    // the partial file, and zdb answers the read with an error.
    let stuck = app.dir.path().join("stuck-zstor");
    let zstor = stack.zstor.path.display().to_string();
    std::fs::write(
        &stuck,
        format!("#!/bin/sh\nfor last; do :; done\ncase \" $* \" in *\" retrieve \"*) printf partial > \"$last\"; exec sleep 60;; esac\nexec {zstor} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&stuck, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = std::fs::read_to_string(&app.qsfs_config).unwrap();
    std::fs::write(
        &app.qsfs_config,
        config.replace(&zstor, &stuck.display().to_string()),
    )
    .unwrap();
    std::fs::remove_file(data_file(1)).unwrap();
    let w = in_file(&written, 1);
    let started = Instant::now();
    assert!(get(&mut c, &w.key).is_err(), "the read fails");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by missing_data_timeout_secs"
    );
    assert!(!data_file(1).exists(), "no partial file is left in place");
    assert!(
        zdb.log().contains("missing-data failed: gave up after 2 s"),
        "{}",
        zdb.log()
    );

    // With zstor back, the same read works.
    std::fs::write(&app.qsfs_config, &config).unwrap();
    assert_eq!(get(&mut c, &w.key).unwrap(), w.value);

    // A sealed file that was never uploaded cannot come back: the read fails, nothing is left.
    written.extend(write_until_rotated(
        &app,
        &mut c,
        "zdbfs-data",
        1,
        &mut seed,
    ));
    std::fs::remove_file(data_file(2)).unwrap();
    assert!(get(&mut c, &in_file(&written, 2).key).is_err());
    assert!(!data_file(2).exists());
    assert!(
        zdb.log().contains("is not stored on the backends"),
        "{}",
        zdb.log()
    );
}

/// A `missing-data` retrieve that runs past its timeout is stopped before the hook answers zdb:
/// no retrieve the hook gave up on writes the data file later, where zdb would open it. Before
/// the read lane the hook's zstor went through the daemon, which went on with the retrieve
/// after the hook had killed its command line and wrote the file in place. Real zstor only:
/// the late write is the real daemon's behaviour (the backends are behind a slow link).
#[test]
fn a_retrieve_past_its_timeout_never_writes_the_file_later() {
    let Some(zstor) = support::upstream::Program::real("zstor") else {
        eprintln!(
            "skipped: needs the real zstor ({})",
            support::upstream::UPSTREAM_BIN
        );
        return;
    };
    let stack = Stack {
        zdb: zstor.partner("zdb"),
        zstor,
    };
    let app = Appliance::on(&stack, "[hook]\nmissing_data_timeout_secs = 2\n");
    let backends = app.backends.as_ref().unwrap();
    let links: Vec<Link> = backends.data.iter().map(|a| Link::start(*a)).collect();
    // As in the appliance: the zstor config names the daemon's socket.
    let socket = app.dir.path().join("zstor.sock");
    let data: Vec<std::net::SocketAddr> = links.iter().map(|l| l.address).collect();
    std::fs::write(
        &app.zstor_config,
        support::upstream::zstor_config_at(&backends.meta, &data, Some(&socket)),
    )
    .unwrap();
    let _daemon = support::ZstorDaemon::start(
        &stack.zstor.path,
        &app.zstor_config,
        &socket,
        &app.dir.path().join("zstor-daemon.log"),
    );
    let ns = app.data.join("zdbfs-data");
    std::fs::create_dir_all(&ns).unwrap();
    std::fs::create_dir_all(&app.state).unwrap();
    let d0 = ns.join("d0");
    let bytes = support::incompressible(2 << 20, 0x2545_f491_4f6c_dd1d);
    std::fs::write(&d0, &bytes).unwrap();
    app.zstor().store(&d0, None).unwrap();
    std::fs::remove_file(&d0).unwrap();

    // 2 MiB at 256 KiB/s: the retrieve needs about 8 s, the hook may wait 2 s.
    for link in &links {
        link.shape(Shape {
            rate: Some(256 * 1024),
            delay: Duration::ZERO,
        });
    }
    let started = Instant::now();
    let out = run_hook(&app, &["missing-data", "unix:///z", d0.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("gave up after 2 s"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
    // Past the time the retrieve would have taken: the file never appears.
    while started.elapsed() < Duration::from_secs(20) {
        assert!(
            !d0.exists(),
            "{} appeared {:?} after the hook started, once it had given up:\n{stderr}\nread lane:\n{}",
            d0.display(),
            started.elapsed(),
            app.reads.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // On a fast link the same read brings the file back, whole.
    for link in &links {
        link.shape(Shape::default());
    }
    let out = run_hook(&app, &["missing-data", "unix:///z", d0.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&d0).unwrap(), bytes);
}

#[test]
fn ready_reaches_the_notify_socket() {
    support::upstream::each_stack(check_ready_reaches_the_notify_socket);
}

fn check_ready_reaches_the_notify_socket(stack: &Stack) {
    let app = Appliance::on(stack, "");
    let notify = app.dir.path().join("notify");
    let socket = UnixDatagram::bind(&notify).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut zdb = app.start_zdb(&[], &[("NOTIFY_SOCKET", notify.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        "READY=1\nSTATUS=0-db is ready\n"
    );
    // Reading the barrier without taking its fd closes it, as systemd does once it has
    // processed the messages before it; the hook then returns at once.
    let started = Instant::now();
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), "BARRIER=1\n");
    zdb.client().ping().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the hook did not wait for its barrier timeout"
    );
}

/// `namespaces-init` with the appliance's roots, as zdb runs it.
pub(crate) fn namespaces_init_args(app: &Appliance) -> [&str; 4] {
    [
        "namespaces-init",
        "unix:///z",
        app.index.to_str().unwrap(),
        app.data.to_str().unwrap(),
    ]
}

pub(crate) fn run_hook(app: &Appliance, args: &[&str]) -> Output {
    Command::new(HOOK)
        .args(args)
        .env("QSFS_CONFIG", &app.qsfs_config)
        .env("QSFS_LOG_TARGET", "stderr")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap()
}

/// A tiny deterministic PRNG for the kill instants.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn sigkill_at_any_instant_never_leaves_a_partial_job() {
    let app = Appliance::new(None, "");
    let dir = app.index.join("zdbfs-data");
    std::fs::create_dir_all(&dir).unwrap();
    let mut state = 0x9e3779b97f4a7c15;
    for n in 0..3 {
        let content: Vec<u8> = (0..(4 << 20))
            .map(|_| next_random(&mut state) as u8)
            .collect();
        std::fs::write(dir.join(format!("i{n}")), content).unwrap();
    }
    let args = |dir: &Path| {
        vec![
            "jump-index".to_string(),
            "unix:///run/zdb.sock".into(),
            dir.join("i2").display().to_string(),
            dir.join("i3").display().to_string(),
            "0 1 ".into(),
        ]
    };
    let started = Instant::now();
    let out = Command::new(HOOK)
        .args(args(&dir))
        .env("QSFS_CONFIG", &app.qsfs_config)
        .env("QSFS_LOG_TARGET", "stderr")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full_run = started.elapsed();
    app.spool().remove(&app.jobs()[0].id).unwrap();

    let runs = 150;
    let (mut whole, mut none) = (0, 0);
    for _ in 0..runs {
        let before = app.jobs().len();
        let mut child = Command::new(HOOK)
            .args(args(&dir))
            .env("QSFS_CONFIG", &app.qsfs_config)
            .env("QSFS_LOG_TARGET", "stderr")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_micros(
            next_random(&mut state) % (full_run.as_micros() as u64 * 12 / 10 + 1),
        );
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait().unwrap();
        // Every job in the spool is whole, and so are the snapshots it names.
        let jobs = app.jobs();
        for job in &jobs {
            assert_eq!(job.files.len(), 3);
            for file in &job.files {
                let snapshot = std::fs::read(file.snapshot.as_ref().unwrap()).unwrap();
                assert!(
                    snapshot == std::fs::read(&file.path).unwrap(),
                    "snapshot of {} is whole",
                    file.path.display()
                );
            }
        }
        if jobs.len() > before {
            whole += 1
        } else {
            none += 1
        }
    }
    println!("{runs} kills: {whole} left a whole job, {none} left none (full run {full_run:?})");
    assert!(
        whole > 0 && none > 0,
        "the kills landed both before and after the job was written"
    );
    // What the killed writers left behind (temporary files, orphan snapshots) is garbage the
    // monitor collects; the jobs themselves are untouched by it.
    let jobs = app.jobs();
    app.spool().collect_garbage(Duration::ZERO).unwrap();
    assert_eq!(app.jobs(), jobs);
    let snapshots = std::fs::read_dir(app.spool.join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(snapshots, jobs.len(), "only snapshots of whole jobs remain");
}

#[test]
fn namespaces_init_restores_a_fresh_vm_from_the_backends() {
    support::upstream::each_stack(check_namespaces_init_restores_a_fresh_vm_from_the_backends);
}

fn check_namespaces_init_restores_a_fresh_vm_from_the_backends(stack: &Stack) {
    let app = Appliance::on(stack, "");
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    let mut c = zdb.client();
    let mut seed = 0;
    let mut keys: BTreeMap<(&str, Vec<u8>), Vec<u8>> = BTreeMap::new();
    for (ns, rotations) in [("zdbfs-meta", 1), ("zdbfs-data", 3)] {
        create_seq_namespace(&mut c, ns);
        for w in write_until_rotated(&app, &mut c, ns, rotations, &mut seed) {
            keys.insert((ns, w.key), w.value);
        }
    }
    assert_eq!(zdb.stop().code(), Some(143));
    wait_for("the namespace-closing jobs", || {
        (app.jobs()
            .iter()
            .filter(|j| j.event == Trigger::NamespaceClosing)
            .count()
            == 3)
            .then_some(())
    });
    app.drain_spool();

    // A fresh VM: the same configuration, empty zdb directories.
    std::fs::rename(&app.index, app.dir.path().join("index.old")).unwrap();
    std::fs::rename(&app.data, app.dir.path().join("data.old")).unwrap();

    // While zstor cannot be run the restore fails, and zdb must not start empty.
    let config = std::fs::read_to_string(&app.qsfs_config).unwrap();
    std::fs::write(
        &app.qsfs_config,
        config.replace(
            &stack.zstor.path.display().to_string(),
            "/nonexistent/zstor",
        ),
    )
    .unwrap();
    let mut refused = app.start_zdb(&["--datasize", "512k"], &[]);
    assert_eq!(
        refused.wait().code(),
        Some(0),
        "a failed ready hook makes zdb exit 0:\n{}",
        refused.log()
    );
    assert!(
        refused
            .log()
            .contains("namespaces-init did not complete (cannot run /nonexistent/zstor"),
        "{}",
        refused.log()
    );
    assert!(!app.index.join("zdbfs-data").exists());
    assert!(app.state.join("restore-failed").exists());

    // A restore killed halfway leaves its mark and part of the namespaces: a stop spools
    // nothing of them, and the next start removes them (they are the restore's) and restores.
    std::fs::write(&app.qsfs_config, &config).unwrap();
    let half = app.index.join("zdbfs-meta");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("i0"), b"half an index").unwrap();
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&half).unwrap());
    let created = serde_json::to_string(&[(&half, inode), (&app.data.join("zdbfs-meta"), 0)]);
    std::fs::write(app.state.join("restoring"), created.unwrap()).unwrap();
    for args in [
        vec!["close", "unix:///z"],
        vec![
            "namespace-closing",
            "unix:///z",
            "zdbfs-meta",
            half.join("i0").to_str().unwrap(),
            app.data.join("zdbfs-meta/d0").to_str().unwrap(),
            "0 ",
        ],
    ] {
        let out = run_hook(&app, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.contains("a restore is unfinished"),
            "{args:?}: {stderr}"
        );
    }
    assert!(app.jobs().is_empty(), "nothing spooled during a restore");

    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    let mut c = zdb.client();
    assert!(!app.state.join("restore-failed").exists());
    assert!(!app.state.join("restoring").exists());
    for ns in ["zdbfs-meta", "zdbfs-data"] {
        let old_index = app.dir.path().join("index.old").join(ns);
        let highest = qsfs::layout::highest_file_number(&old_index, 'i').unwrap();
        for n in 0..=highest {
            assert!(
                app.index.join(format!("{ns}/i{n}")).exists(),
                "{ns}/i{n} restored"
            );
        }
        assert!(app.index.join(format!("{ns}/zdb-namespace")).exists());
        assert!(
            app.data.join(format!("{ns}/d{highest}")).exists(),
            "the last data file is restored"
        );
        if highest > 0 {
            assert!(
                !app.data.join(format!("{ns}/d0")).exists(),
                "older data files come back on demand"
            );
        }
    }
    // The restored zdb serves the same keys (older data files through missing-data).
    for ((ns, key), data) in &keys {
        select(&mut c, ns);
        assert_eq!(&get(&mut c, key).unwrap(), data);
    }

    // zdbfs needs zdbfs-temp, which the restore does not bring back and autons does not create
    // on a zdb that has zdbfs-meta: the zdb unit's prepare-zdbfs step creates it, once.
    let socket = format!("unix://{}", app.socket.display());
    assert!(c.nsinfo("zdbfs-temp").is_err());
    for note in ["created zdbfs-temp", "nothing to prepare"] {
        let out = run_hook(&app, &["prepare-zdbfs", &socket]);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stderr).contains(note),
            "{out:?}"
        );
    }
    let temp = c.nsinfo("zdbfs-temp").unwrap();
    assert_eq!(
        (temp.mode, temp.public, temp.password),
        (qsfs::zdb::Mode::Sequential, false, true)
    );

    // A VM that has data restores nothing.
    assert_eq!(zdb.stop().code(), Some(143));
    // The stand-in logs its calls (the real zstor has no such log: there the journal line
    // below is the evidence).
    let retrieves = || {
        std::fs::read_to_string(app.store.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("retrieve"))
            .count()
    };
    let before = retrieves();
    let mut again = app.start_zdb(&["--datasize", "512k"], &[]);
    again.client().ping().unwrap();
    assert_eq!(retrieves(), before);
    assert!(
        again
            .log()
            .contains("the VM already has data, nothing to restore"),
        "{}",
        again.log()
    );
}

#[test]
fn a_stop_spools_every_index_file_changed_since_the_last_jump_while_zdb_waits() {
    support::upstream::each_stack(
        check_a_stop_spools_every_index_file_changed_since_the_last_jump_while_zdb_waits,
    );
}

/// An overwrite flags the old entry in an older index file. `namespace-closing` names it, but
/// zdb does not wait for that hook and systemd kills it with the cgroup (`KillMode=mixed`):
/// only what the blocking `close` spools is sure to be uploaded before a VM is retired.
fn check_a_stop_spools_every_index_file_changed_since_the_last_jump_while_zdb_waits(stack: &Stack) {
    let app = Appliance::on(stack, "");
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    let mut c = zdb.client();
    let ns = "zdbfs-data";
    create_seq_namespace(&mut c, ns);
    let mut seed = 0;
    write_until_rotated(&app, &mut c, ns, 1, &mut seed);
    // i0 is left alone from here on: more than the clock's slack before the next jump.
    std::thread::sleep(Duration::from_millis(1500));
    let written = write_until_rotated(&app, &mut c, ns, 1, &mut seed);
    app.drain_spool();
    let second = app.index.join(ns).join("i1");
    let before = std::fs::read(&second).unwrap();
    let old = written.iter().find(|w| w.file == 1).unwrap();
    select(&mut c, ns);
    match c.command(&[b"SET", &old.key, &value(200)]).unwrap() {
        Reply::Bulk(key) => assert_eq!(key, old.key),
        other => panic!("SET answered {other:?}"),
    }
    assert_ne!(
        std::fs::read(&second).unwrap(),
        before,
        "i1 flags the old entry"
    );

    assert_eq!(zdb.stop().code(), Some(143));
    let close = app
        .jobs()
        .into_iter()
        .find(|job| job.event == Trigger::Close && job.namespace == ns)
        .unwrap();
    assert_eq!(
        summary(&close).2,
        [
            (second.clone(), true),
            (app.index.join(ns).join("i2"), true),
            (app.data.join(ns).join("d2"), false)
        ],
        "the changed i1 and the active files; not i0, unchanged since the jump before"
    );
    let snapshot = close.files[0].snapshot.as_ref().unwrap();
    assert_eq!(
        std::fs::read(snapshot).unwrap(),
        std::fs::read(&second).unwrap()
    );
}

/// zdb starts only after a new VM fresh in every root restores a consistent state (or nothing).
fn start_refused(app: &Appliance, why: &str) {
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    assert_eq!(zdb.wait().code(), Some(0), "refused:\n{}", zdb.log());
    let log = zdb.log();
    assert!(
        log.contains(why) && log.contains("refusing to start zdb"),
        "{log}"
    );
    let mark = std::fs::read_to_string(app.state.join("restore-failed")).unwrap();
    assert!(mark.contains(why), "{mark}");
}

#[test]
fn a_restore_refuses_an_index_whose_data_file_is_not_stored() {
    support::upstream::each_stack(check_a_restore_refuses_an_index_whose_data_file_is_not_stored);
}

/// The crash the first version turned into an unmountable filesystem: the active index files
/// were uploaded while zdb appended, their data files only at a clean stop.
fn check_a_restore_refuses_an_index_whose_data_file_is_not_stored(stack: &Stack) {
    let app = Appliance::on(stack, "");
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    let mut c = zdb.client();
    for ns in ["zdbfs-meta", "zdbfs-data"] {
        create_seq_namespace(&mut c, ns);
        select(&mut c, ns);
        append(&mut c, &value(7));
    }
    drop(zdb); // SIGKILL: no close hook.
    let zstor = app.zstor();
    for ns in ["zdbfs-meta", "zdbfs-data"] {
        for file in ["zdb-namespace", "i0"] {
            zstor.store(&app.index.join(ns).join(file), None).unwrap();
        }
    }
    for root in [&app.index, &app.data] {
        std::fs::rename(root, root.with_extension("old")).unwrap();
    }
    start_refused(
        &app,
        "zdbfs-meta/i0 is stored on the backends but no restore point",
    );
    for ns in ["zdbfs-meta", "zdbfs-data"] {
        assert!(!app.index.join(ns).exists() && !app.data.join(ns).exists());
    }
    // The operator's way out, named in the refusal: start empty, once.
    let start_empty = app.state.join("start-empty");
    let mark = std::fs::read_to_string(app.state.join("restore-failed")).unwrap();
    assert!(
        mark.contains(&format!("create {}", start_empty.display())),
        "{mark}"
    );
    std::fs::write(&start_empty, "").unwrap();
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    zdb.client().ping().unwrap();
    assert!(!start_empty.exists() && !app.state.join("restore-failed").exists());
}

/// The version before this one wrote `restore-failed` ("the restore was interrupted") before
/// its restore began: after an upgrade, what that restore left is not taken for the VM's data.
#[test]
fn an_unfinished_restore_of_the_previous_version_is_not_started_on() {
    let app = Appliance::new(None, "");
    std::fs::create_dir_all(&app.state).unwrap();
    std::fs::write(
        app.state.join("restore-failed"),
        "the restore was interrupted\n",
    )
    .unwrap();
    for (root, file) in [(&app.index, "i0"), (&app.data, "d0")] {
        for ns in ["zdbfs-meta", "zdbfs-data"] {
            std::fs::create_dir_all(root.join(ns)).unwrap();
            std::fs::write(root.join(ns).join(file), b"half").unwrap();
        }
    }
    let init = namespaces_init_args(&app);
    for _ in 0..2 {
        let out = run_hook(&app, &init);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("may not be the unfinished restore's"),
            "{stderr}"
        );
        assert_eq!(
            run_hook(&app, &["ready", "unix:///z"]).status.code(),
            Some(1)
        );
    }
    assert_eq!(
        std::fs::read(app.index.join("zdbfs-meta/i0")).unwrap(),
        b"half"
    );
}

#[test]
fn partial_local_namespaces_are_refused_and_left_as_they_are() {
    support::upstream::each_stack(check_partial_local_namespaces_are_refused_and_left_as_they_are);
}

/// A VM whose index was lost but whose data files are still there: the first version took it
/// for a fresh VM and deleted the data directories when its restore failed.
fn check_partial_local_namespaces_are_refused_and_left_as_they_are(stack: &Stack) {
    let app = Appliance::on(stack, "");
    let data = app.data.join("zdbfs-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("d0"), b"the only copy").unwrap();
    start_refused(&app, "only part of zdbfs's namespaces is on this VM");
    assert_eq!(std::fs::read(data.join("d0")).unwrap(), b"the only copy");
    assert!(!app.index.join("zdbfs-data").exists());
    // Moved aside: a fresh VM again.
    std::fs::remove_dir_all(&app.data).unwrap();

    // Index files without their data: zdb, which loads what the index root holds whatever the
    // hook said, creates the missing data directory, so the next start sees all four. The
    // refusal stands until every one is moved aside or the operator removes its mark.
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    let mut c = zdb.client();
    for ns in ["zdbfs-meta", "zdbfs-data"] {
        create_seq_namespace(&mut c, ns);
        select(&mut c, ns);
        append(&mut c, &value(9));
    }
    assert_eq!(zdb.stop().code(), Some(143));
    std::fs::remove_dir_all(app.data.join("zdbfs-data")).unwrap();
    for _ in 0..2 {
        start_refused(&app, "only part of zdbfs's namespaces is on this VM");
    }
    std::fs::remove_file(app.state.join("local-state-refused")).unwrap();
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    zdb.client().ping().unwrap();
}

#[test]
fn ready_starts_zdb_only_after_namespaces_init_completed_for_it() {
    let app = Appliance::new(None, "");
    let out = run_hook(&app, &["ready", "unix:///z"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("namespaces-init did not complete for this zdb"),
        "{stderr}"
    );
    // The test process plays zdb: both hooks are its children.
    let init = namespaces_init_args(&app);
    assert!(run_hook(&app, &init).status.success());
    assert!(run_hook(&app, &["ready", "unix:///z"]).status.success());
    // A proof written for another zdb process does not count.
    std::fs::write(app.state.join("namespaces-init.done"), "1 1\n").unwrap();
    assert_eq!(
        run_hook(&app, &["ready", "unix:///z"]).status.code(),
        Some(1)
    );
}

#[test]
fn bad_input_is_refused_clearly() {
    let app = Appliance::new(None, "");
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["jump-index", "unix:///z", "/only/one"],
            2,
            "expected 3 arguments",
        ),
        (&["missing-data", "unix:///z"], 2, "expected 1 arguments"),
        (
            &["jump-index", "unix:///z", "/a", "/b", "1 x "],
            2,
            "bad id",
        ),
        (
            &["jump-data", "unix:///z", "/etc/passwd", "/etc/shadow"],
            1,
            "is not a file of a namespace under",
        ),
        (
            &["missing-data", "unix:///z", "/tmp/../etc/d1"],
            1,
            "is not a file of a namespace under",
        ),
        (
            &["namespace-created", "unix:///z", "../../etc"],
            1,
            "is not a file of a namespace under",
        ),
        (
            &[
                "namespaces-init",
                "unix:///z",
                "/other/index",
                "/other/data",
            ],
            1,
            "is not a file of a namespace under",
        ),
        (&["frobnicate", "unix:///z", "x"], 0, "frobnicate  handled"),
        (&["crash", "unix:///z"], 0, "logged only"),
    ];
    for (args, code, message) in cases {
        let out = run_hook(&app, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert!(app.jobs().is_empty());
    let out = Command::new(HOOK).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "no event at all is a usage error"
    );
    let out = Command::new(HOOK)
        .args(["jump-data", "unix:///z", "/a/b/c", "/a/b/d"])
        .env("QSFS_CONFIG", app.dir.path().join("absent.toml"))
        .env("QSFS_LOG_TARGET", "stderr")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.toml: file not found"));
}

/// The hook reads only its own tables of `qsfs.toml`: a typo in `[health.s3]` is
/// `qsfs-health`'s to refuse (exit 78, naming the key), and every zdb event still works.
#[test]
fn a_typo_in_a_health_table_does_not_stop_the_hook() {
    let app = Appliance::new(None, "[health.s3]\ntimout_ms = 300\n");
    let init = namespaces_init_args(&app);
    for args in [&init[..], &["ready", "unix:///z"]] {
        let out = run_hook(&app, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", args[0]);
    }

    let namespace = app.data.join("zdbfs-data");
    std::fs::create_dir_all(&namespace).unwrap();
    let (old, new) = (namespace.join("d0"), namespace.join("d1"));
    std::fs::write(&old, b"sealed").unwrap();
    std::fs::write(&new, b"").unwrap();
    let out = run_hook(
        &app,
        &[
            "jump-data",
            "unix:///z",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "jump-data: {stderr}");
    let jobs = app.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].files[0].path, old);

    let out = Command::new(env!("CARGO_BIN_EXE_qsfs-health"))
        .args(["--config", app.qsfs_config.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "qsfs-health: {stderr}");
    assert!(stderr.contains("key `health.s3.timout_ms`"), "{stderr}");
}

/// The spool's filesystem is full: the hook fails, and leaves neither temporary files nor a
/// partial snapshot directory on it, whether the snapshot or the job write ran out of space.
#[test]
fn a_full_spool_is_left_as_it_was() {
    let app = Appliance::new(None, "");
    let _tmpfs = support::Tmpfs::mount(&app.spool, "256k");
    let dir = app.index.join("zdbfs-data");
    std::fs::create_dir_all(&dir).unwrap();
    let jump = |app: &Appliance| {
        run_hook(
            app,
            &[
                "jump-index",
                "unix:///run/zdb.sock",
                dir.join("i2").to_str().unwrap(),
                dir.join("i3").to_str().unwrap(),
                "0 1 ",
            ],
        )
    };
    let leftovers = |app: &Appliance| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&app.spool)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "filler" && n != "lost+found")
            .collect();
        if let Ok(entries) = std::fs::read_dir(app.spool.join("snapshots")) {
            names.extend(
                entries.map(|e| format!("snapshots/{}", e.unwrap().file_name().to_string_lossy())),
            );
        }
        names.sort();
        names
    };
    // The hook fails saying `why`, and only the empty `snapshots/` is left.
    let fails_leaving_nothing = |app: &Appliance, why: &str, case: &str| {
        let out = jump(app);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
        assert!(stderr.contains(why), "{case}: {stderr}");
        assert_eq!(leftovers(app), ["snapshots"], "{case}");
    };

    // 1. The snapshots do not fit (3 × 100 KiB on 256 KiB).
    for n in 0..3 {
        std::fs::write(dir.join(format!("i{n}")), value(n)).unwrap();
    }
    fails_leaving_nothing(&app, "No space left on device", "snapshot failure");

    // 2. The snapshots fit, the job does not: one free page, taken by the one-page index file.
    for n in 0..3 {
        std::fs::write(dir.join(format!("i{n}")), [n; 1024]).unwrap();
    }
    let filler = app.spool.join("filler");
    let mut pages = 0;
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        while file.write_all(&[0; 4096]).is_ok() && file.sync_all().is_ok() {
            pages += 1;
        }
    }
    // Free exactly what the three snapshots need.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    file.set_len((pages - 3) * 4096).unwrap();
    drop(file);
    fails_leaving_nothing(&app, "cannot write spool job", "job write failure");

    // Space freed: the next event spools a whole job.
    std::fs::remove_file(&filler).unwrap();
    let out = jump(&app);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(app.jobs().len(), 1);
}
