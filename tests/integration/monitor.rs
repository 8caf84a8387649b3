//! `zstor_monitor` end to end: zdb with the real `zdb-hook` writes the spool, zstor stores on
//! the backends. The uploads, reconciliation and eviction tests run on the stand-ins and, when
//! `QSFS_UPSTREAM_BIN` has them, on the real zdb and zstor over real 0-db backends; the tests
//! of failures (injected store failures and hangs, backends that vanish) use the stand-ins,
//! which can be told to fail.

use crate::support;

use crate::support::upstream::Stack;
use crate::support::{monitor_config_text, wait_for, Appliance, Monitor};
use qsfs::logging::message_id;
use qsfs::monitor::status::{BackendState, MonitorStatus};
use qsfs::zdb::resp::Reply;
use qsfs::zdb::Client;
use qsfs::zstor::Checksum;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn seq_namespace(client: &mut Client, namespace: &str) {
    client.nsnew(namespace).unwrap();
    client.nsset(namespace, "mode", "seq").unwrap();
    client.select(namespace, None).unwrap();
}

/// Writes 100 KiB values into the selected namespace until `dir` has `files` data files.
fn write_until(
    client: &mut Client,
    dir: &Path,
    files: u32,
    seed: &mut u8,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut written = Vec::new();
    while qsfs::layout::highest_file_number(dir, 'd').unwrap_or(0) + 1 < files {
        *seed = seed.wrapping_add(1);
        let value: Vec<u8> = (0..100 * 1024)
            .map(|i: usize| (i as u8).wrapping_mul(7).wrapping_add(*seed))
            .collect();
        match client.command(&[b"SET", b"", &value]).unwrap() {
            Reply::Bulk(key) => written.push((key, value)),
            other => panic!("SET answered {other:?}"),
        }
    }
    written
}

/// The sealed files of the layout: every index file and descriptor, and every data file but
/// the active one, outside zdbfs-temp.
fn sealed_files(app: &Appliance) -> Vec<PathBuf> {
    let roots = qsfs::monitor::files::Roots {
        index: app.index.clone(),
        data: app.data.clone(),
    };
    let mut files: Vec<PathBuf> = roots
        .scan()
        .unwrap()
        .into_iter()
        .filter(|f| !f.active)
        .map(|f| f.path)
        .collect();
    files.sort();
    files
}

/// Writes files under the appliance's directory (`index/…`, `data/…`), as zdb would have.
fn plant(app: &Appliance, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = app.dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

fn remote_matches_local(app: &Appliance, file: &Path) -> bool {
    let local = Checksum::of_file(file).unwrap();
    app.zstor().check(file).unwrap() == Some(local)
}

#[test]
fn the_spool_drains_into_verified_uploads() {
    support::upstream::each_stack(check_the_spool_drains_into_verified_uploads);
}

fn check_the_spool_drains_into_verified_uploads(stack: &Stack) {
    let app = Appliance::on(stack, "");
    let mut monitor = Monitor::start(&app, "", &[]);
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    let mut c = zdb.client();
    seq_namespace(&mut c, "zdbfs-data");
    let mut seed = 0;
    write_until(&mut c, &app.data.join("zdbfs-data"), 4, &mut seed);

    // A hook may spool its job just after a status that says "0 jobs": the spool is empty
    // only once the monitor polled and finished that one too.
    let status = monitor.wait_status("every job verified and removed", |s| {
        s.uploads.spool_jobs == 0
            && s.uploads.queued_files == 0
            && s.uploads.verified_total >= 6
            && app.jobs().is_empty()
    });
    for file in sealed_files(&app) {
        assert!(
            remote_matches_local(&app, &file),
            "{} verified remote",
            file.display()
        );
    }
    assert_eq!(status.uploads.failed_total, 0, "{}", monitor.log());
    assert!(
        monitor
            .log()
            .contains(&format!("message_id=\"{}\"", message_id::UPLOAD_VERIFIED)),
        "{}",
        monitor.log()
    );

    // A clean stop, as systemd orders it: zdb first (its `close` hook spools the active
    // files), then the monitor, which uploads what is queued before it exits.
    assert_eq!(zdb.stop().code(), Some(143));
    monitor.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(monitor.wait().code(), Some(0), "{}", monitor.log());
    for active in [
        app.data.join("zdbfs-data/d3"),
        app.index.join("zdbfs-data/i3"),
    ] {
        assert!(
            remote_matches_local(&app, &active),
            "{} uploaded at the stop:\n{}",
            active.display(),
            monitor.log()
        );
    }
}

#[test]
fn reconciliation_uploads_what_no_job_named_and_evicted_files_stay_evicted() {
    support::upstream::each_stack(
        check_reconciliation_uploads_what_no_job_named_and_evicted_files_stay_evicted,
    );
}

fn check_reconciliation_uploads_what_no_job_named_and_evicted_files_stay_evicted(stack: &Stack) {
    let app = Appliance::on(stack, "");
    // Files zdb wrote while no hook ran (an older setup, or lost events).
    plant(
        &app,
        &[
            ("index/zdbfs-meta/zdb-namespace", "descriptor"),
            ("index/zdbfs-meta/i0", "index 0"),
            ("index/zdbfs-meta/i1", "index 1"),
            ("data/zdbfs-meta/d0", "sealed data 0"),
            ("data/zdbfs-meta/d1", "active data"),
            ("data/zdbfs-temp/d0", "never uploaded"),
        ],
    );
    let mut monitor = Monitor::start(&app, "", &[]);
    monitor.wait_status("reconciliation", |s| {
        s.uploads.verified_files == 3 && s.uploads.queued_files == 0
    });
    for file in sealed_files(&app) {
        assert!(remote_matches_local(&app, &file), "{}", file.display());
    }
    for active in [
        app.data.join("zdbfs-meta/d1"),
        app.index.join("zdbfs-meta/i1"),
    ] {
        assert_eq!(
            app.zstor().check(&active).unwrap(),
            None,
            "the active files are not sealed (a copy taken while zdb appends can be torn)"
        );
    }
    assert_eq!(
        app.zstor().check(&app.data.join("zdbfs-temp/d0")).unwrap(),
        None,
        "zdbfs-temp is never uploaded"
    );

    // An index file changes (zdb flags an entry): the next pass uploads it again.
    std::fs::write(app.index.join("zdbfs-meta/i0"), "index 0, flagged").unwrap();
    wait_for("the changed index file uploaded", || {
        remote_matches_local(&app, &app.index.join("zdbfs-meta/i0")).then_some(())
    });

    // A file removed behind the monitor's back is not fetched back.
    std::fs::remove_file(app.data.join("zdbfs-meta/d0")).unwrap();
    wait_for("the monitor to notice the missing file", || {
        monitor
            .log()
            .contains("disappeared without being evicted")
            .then_some(())
    });
    assert!(!app.data.join("zdbfs-meta/d0").exists());
    // The stand-in logs its calls; the real zstor has none (the file staying gone is the
    // evidence there).
    let retrieves = std::fs::read_to_string(app.store.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("retrieve"))
        .count();
    assert_eq!(retrieves, 0);
}

/// During a restore the files under the roots are half-written: none of them is uploaded (the
/// restore writes in place, so an upload would replace the good remote copy) until it ends.
#[test]
fn nothing_is_uploaded_while_a_restore_is_unfinished() {
    support::upstream::each_stack(check_nothing_is_uploaded_while_a_restore_is_unfinished);
}

fn check_nothing_is_uploaded_while_a_restore_is_unfinished(stack: &Stack) {
    let app = Appliance::on(stack, "");
    plant(
        &app,
        &[
            ("index/zdbfs-meta/zdb-namespace", "descriptor"),
            ("index/zdbfs-meta/i0", "half an index"),
            ("index/zdbfs-meta/i1", "index 1"),
            ("data/zdbfs-meta/d0", "half a data file"),
            ("data/zdbfs-meta/d1", "active data"),
        ],
    );
    std::fs::create_dir_all(&app.state).unwrap();
    std::fs::write(app.state.join("restoring"), "").unwrap();
    let mut monitor = Monitor::start(&app, "", &[]);
    // Two passes held back, so the second began after the first status.
    wait_for("two reconciliations held back", || {
        let held = "reconciliation and eviction wait: a restore from the backends has not finished";
        (monitor.log().matches(held).count() >= 2).then_some(())
    });
    let status = monitor.wait_status("a status", |_| true);
    assert_eq!(status.uploads.verified_files, 0);
    for file in sealed_files(&app) {
        assert_eq!(
            app.zstor().check(&file).unwrap(),
            None,
            "{}",
            file.display()
        );
    }
    std::fs::remove_file(app.state.join("restoring")).unwrap();
    monitor.wait_status("reconciliation once the restore ended", |s| {
        s.uploads.verified_files == 3
    });
}

/// zstor hashes a file, then reads it again to encode it (contracts §8): an active data file
/// that zdb appends to while it is stored would be stored with one content's checksum and
/// another's bytes, replacing the good remote copy. The active data file (a stop's job names
/// it; a restarted zdb appends to it) is stored from a private copy, so what the backends hold
/// always matches its checksum.
#[test]
fn an_active_data_file_appended_to_while_it_is_stored_keeps_a_whole_remote_copy() {
    support::upstream::each_stack(
        check_an_active_data_file_appended_to_while_it_is_stored_keeps_a_whole_remote_copy,
    );
}

fn check_an_active_data_file_appended_to_while_it_is_stored_keeps_a_whole_remote_copy(
    stack: &Stack,
) {
    use qsfs::spool::{JobFile, Trigger};
    use std::io::Write;
    let app = Appliance::on(stack, "");
    let data = app.data.join("zdbfs-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("d0"), b"sealed").unwrap();
    let active = data.join("d1");
    let block: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&active, block.repeat(64)).unwrap();
    let spool = app.spool();
    spool.create().unwrap();
    let mut job = spool.new_job(Trigger::Close, "zdbfs-data");
    job.files.push(JobFile {
        path: active.clone(),
        snapshot: None,
    });
    spool.write(&job).unwrap();

    // zdb, restarted after the stop, appends to the file the whole time it is stored.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (stop, active, block) = (stop.clone(), active.clone(), block.clone());
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&active)
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                file.write_all(&block[..4096]).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut monitor = Monitor::start(&app, "", &[]);
    monitor.wait_status("a store of the active file ended", |s| {
        s.uploads.verified_total + s.uploads.failed_total >= 1
    });
    monitor.signal(nix::sys::signal::Signal::SIGTERM);
    monitor.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    appender.join().unwrap();

    let grown = std::fs::read(&active).unwrap();
    std::fs::remove_file(&active).unwrap();
    let remote = app.zstor().check(&active).unwrap().expect("stored");
    app.zstor().retrieve(&active).unwrap();
    let retrieved = std::fs::read(&active).unwrap();
    assert_eq!(
        Checksum::of_bytes(&retrieved),
        remote,
        "the remote copy's bytes ({} of them) match its checksum:\n{}",
        retrieved.len(),
        monitor.log()
    );
    assert!(
        grown.starts_with(&retrieved) && retrieved.len() >= 64 * block.len(),
        "the remote copy is a whole prefix of the file, at least what the stop saw"
    );
}

#[test]
fn eviction_deletes_only_verified_sealed_files_oldest_first() {
    support::upstream::each_stack(check_eviction_deletes_only_verified_sealed_files_oldest_first);
}

fn check_eviction_deletes_only_verified_sealed_files_oldest_first(stack: &Stack) {
    let app = Appliance::on(stack, "");
    let mut zdb = app.start_zdb(&["--datasize", "512k"], &[]);
    let mut c = zdb.client();
    seq_namespace(&mut c, "zdbfs-data");
    let mut seed = 0;
    let written = write_until(&mut c, &app.data.join("zdbfs-data"), 6, &mut seed);
    let dir = app.data.join("zdbfs-data");
    // Every sealed file verified before the cache is limited: "oldest first" is among the
    // verified files, and uploads may finish in any order.
    let mut monitor = Monitor::start(&app, "", &[]);
    wait_for("d0..d4 stored", || {
        let stored = |n| app.zstor().check(&dir.join(format!("d{n}"))).unwrap();
        (0..5).all(|n| stored(n).is_some()).then_some(())
    });
    monitor.wait_status("nothing queued", |s| s.uploads.queued_files == 0);
    // The data files are ~500 KiB each: a 1 MiB cache keeps about two of the six.
    monitor.reconfigure(&app, "max_zdb_data_dir_size = 1");
    let status = monitor.wait_status("eviction", |s| s.cache.evicted_total >= 4);
    assert!(status.cache.used_bytes <= 1 << 20, "{status:?}");
    for n in 0..4 {
        assert!(
            !dir.join(format!("d{n}")).exists(),
            "d{n} evicted (oldest first)"
        );
        assert!(app
            .zstor()
            .check(&dir.join(format!("d{n}")))
            .unwrap()
            .is_some());
    }
    assert!(dir.join("d5").exists(), "the active data file stays");
    let log = monitor.log();
    assert_eq!(
        log.matches("evicted ").count() as u64,
        status.cache.evicted_total,
        "{log}"
    );

    // zdb asks for an evicted file: the hook brings it back (with no limit, so that nothing
    // is evicted before it is verified again).
    monitor.reconfigure(&app, "");
    monitor.wait_status("no limit", |s| s.cache.limit_bytes.is_none());
    let used = monitor.status().cache.used_bytes;
    let (key, value) = &written[0];
    match c.command(&[b"GET", key]).unwrap() {
        Reply::Bulk(data) => assert_eq!(&data, value),
        other => panic!("{other:?}"),
    }
    // A reconciliation counted it, so it also tracked it again.
    monitor.wait_status("d0 reconciled", |s| s.cache.used_bytes > used);

    // No thrash: d4 is read after d0, and the cache is limited again. d0 is the least
    // recently used, yet it stays (brought back by a read, kept for 600 s): d4 goes.
    std::fs::File::open(dir.join("d4"))
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_accessed(std::time::SystemTime::now()))
        .unwrap();
    monitor.reconfigure(&app, "max_zdb_data_dir_size = 1");
    let status = monitor.wait_status("one more eviction", |s| s.cache.evicted_total >= 5);
    assert!(
        dir.join("d0").exists() && !dir.join("d4").exists(),
        "{status:?}\n{}",
        monitor.log()
    );
    assert!(status.cache.used_bytes <= 1 << 20, "{status:?}");
}

#[test]
fn notify_ready_status_and_watchdog() {
    let app = Appliance::new(None, "");
    let socket_path = app.dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut monitor = Monitor::start(
        &app,
        "",
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while messages
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 2
    {
        let n = socket.recv(&mut buf).expect("a notification");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let ready = messages
        .iter()
        .find(|m| m.starts_with("READY=1"))
        .expect("READY=1");
    assert!(
        ready.contains("STATUS=uploads: none queued; backends 0/6 healthy; cache"),
        "{ready}"
    );
    // Unreachable backends at start: ready anyway, with a degraded STATUS.
    assert!(messages.iter().any(|m| m.starts_with("STATUS=")));

    // SIGHUP: RELOADING=1 then READY=1 again.
    monitor.signal(nix::sys::signal::Signal::SIGHUP);
    let mut saw_reloading = false;
    loop {
        let n = socket.recv(&mut buf).unwrap();
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        saw_reloading |= message.starts_with("RELOADING=1\nMONOTONIC_USEC=");
        if saw_reloading && message.starts_with("READY=1") {
            break;
        }
    }
    monitor.signal(nix::sys::signal::Signal::SIGTERM);
    loop {
        let n = socket.recv(&mut buf).unwrap();
        if String::from_utf8_lossy(&buf[..n]).starts_with("STOPPING=1") {
            break;
        }
    }
    assert_eq!(monitor.wait().code(), Some(0));
}

#[test]
fn sighup_takes_a_good_config_and_refuses_a_bad_one() {
    let app = Appliance::new(None, "");
    let mut monitor = Monitor::start(&app, "", &[]);
    monitor.wait_status("the first status", |_| true);
    let good = std::fs::read_to_string(&monitor.config).unwrap();

    std::fs::write(
        &monitor.config,
        format!("{good}max_zdb_data_dir_size = 7\n"),
    )
    .unwrap();
    monitor.signal(nix::sys::signal::Signal::SIGHUP);
    monitor.wait_status("the new limit", |s| s.cache.limit_bytes == Some(7 << 20));

    std::fs::write(
        &monitor.config,
        format!("{good}max_zdb_data_dir_size = \"lots\"\n"),
    )
    .unwrap();
    monitor.signal(nix::sys::signal::Signal::SIGHUP);
    let config = monitor.config.display().to_string();
    wait_for("the refusal in the log", || {
        monitor.log().contains(&format!("{config}:")).then_some(())
    });
    let log = monitor.log();
    assert!(
        log.contains("key `max_zdb_data_dir_size`: invalid type")
            && log.contains("keeping the previous configuration"),
        "{log}"
    );
    let refused = qsfs::clock::now_unix_ms();
    let status = monitor.wait_status("a status published after the refusal", |s| {
        s.updated_unix_ms > refused
    });
    assert_eq!(
        status.cache.limit_bytes,
        Some(7 << 20),
        "the previous config stays"
    );
}

#[test]
fn status_command_for_people_and_scripts() {
    let app = Appliance::new(None, "");
    let status = |monitor_config: &Path, format: &str| {
        Command::new(env!("CARGO_BIN_EXE_zstor_monitor"))
            .arg("-c")
            .arg(monitor_config)
            .args(["status", "--format", format])
            .output()
            .unwrap()
    };
    let config = app.dir.path().join("etc/monitor_config.toml");
    std::fs::write(&config, support::monitor_config_text(&app, "")).unwrap();
    let out = status(&config, "human");
    assert_eq!(out.status.code(), Some(3), "not running");
    assert!(String::from_utf8_lossy(&out.stderr).contains("zstor_monitor is not running"));

    let mut monitor = Monitor::start_with(&app, &config, &[]);
    monitor.wait_status("the first status", |_| true);
    let out = status(&config, "json");
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["backends"].as_array().unwrap().len(), 6);
    let out = status(&config, "human");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("uploads: none queued; backends 0/6 healthy"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1:5/data"), "{text}");

    monitor.signal(nix::sys::signal::Signal::SIGTERM);
    monitor.wait();
    let stopped = std::time::Instant::now();
    wait_for("a stale status to mean not running (exit 3)", || {
        (status(&config, "human").status.code() == Some(3)).then_some(())
    });
    assert!(
        stopped.elapsed() <= MonitorStatus::PUBLISH_INTERVAL * 6,
        "a stale status means not running: {:?} after the stop",
        stopped.elapsed()
    );
}

#[test]
fn bad_configs_exit_78_naming_file_key_and_line() {
    let app = Appliance::new(None, "");
    let run = |config: &Path| {
        Command::new(env!("CARGO_BIN_EXE_zstor_monitor"))
            .arg("-c")
            .arg(config)
            .env("QSFS_LOG_TARGET", "stderr")
            .output()
            .unwrap()
    };
    let config = app.dir.path().join("etc/monitor_config.toml");
    std::fs::write(
        &config,
        support::monitor_config_text(&app, "upload_concurrency = 0"),
    )
    .unwrap();
    let out = run(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("monitor_config.toml:")
            && stderr.contains("key `upload_concurrency`: must be at least 1"),
        "{stderr}"
    );

    std::fs::write(&config, support::monitor_config_text(&app, "")).unwrap();
    std::fs::write(
        &app.zstor_config,
        "minimal_shards = 1\n[encryption]\nalgorithm = \"AES\"\nkey = \"00\"\n",
    )
    .unwrap();
    let out = run(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("zstor-default.toml:") && stderr.contains("encryption.key"),
        "{stderr}"
    );
    assert!(!stderr.contains("\"00\""));
    std::fs::remove_file(&app.zstor_config).unwrap();
    let out = run(&config);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("zstor-default.toml: file not found"));

    // Under systemd zstor's config is the credential zstor.toml, where the unit loads it: a bad
    // one is named; a unit that loads other credentials only reads the configured path.
    let credentials = app.dir.path().join("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    let run_with_credentials = || {
        Command::new(env!("CARGO_BIN_EXE_zstor_monitor"))
            .arg("-c")
            .arg(&config)
            .env("QSFS_LOG_TARGET", "stderr")
            .env("CREDENTIALS_DIRECTORY", &credentials)
            .output()
            .unwrap()
    };
    let out = run_with_credentials();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("zstor-default.toml: file not found"),
        "{stderr}"
    );
    std::fs::write(credentials.join("zstor.toml"), "minimal_shards = \"one\"\n").unwrap();
    let out = run_with_credentials();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:", credentials.join("zstor.toml").display())),
        "{stderr}"
    );
}

/// A zdb stand-in on TCP playing one remote backend.
fn backend(app: &Appliance, name: &str, mode: &str) -> (support::Zdb, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = app.dir.path().join(name);
    let log = app.dir.path().join(format!("{name}.log"));
    let child = Command::new(support::bin("zdb-standin"))
        .arg("--index")
        .arg(root.join("index"))
        .arg("--data")
        .arg(root.join("data"))
        .args(["--listen", "127.0.0.1", "--port", &port.to_string()])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let endpoint = qsfs::zdb::Endpoint::Tcp(format!("127.0.0.1:{port}").parse().unwrap());
    let mut zdb = support::Zdb {
        child,
        log,
        endpoint,
        program: support::upstream::Program::standin("zdb"),
        lockfile: root.join("index/.lockfile"),
    };
    let mut c = zdb.client();
    c.nsnew("data").unwrap();
    c.nsset("data", "mode", mode).unwrap();
    c.nsset("data", "password", "datapass-secret").unwrap();
    (zdb, port)
}

#[test]
fn backend_states_and_one_replacement_request_per_backend() {
    let app = Appliance::new(None, "");
    let (_healthy, good_port) = backend(&app, "good", "seq");
    let (_wrong_mode, user_port) = backend(&app, "wrong", "user");
    let (mut dying, dying_port) = backend(&app, "dying", "seq");
    let config = std::fs::read_to_string(&app.zstor_config).unwrap();
    let config = config
        .replacen("127.0.0.1:5\"", &format!("127.0.0.1:{good_port}\""), 1)
        .replacen("127.0.0.1:6\"", &format!("127.0.0.1:{user_port}\""), 1)
        .replace("[[groups]]\n", &format!("[[groups]]\n\n[[groups.backends]]\naddress = \"127.0.0.1:{dying_port}\"\nnamespace = \"data\"\npassword = \"datapass-secret\"\n"));
    std::fs::write(&app.zstor_config, config).unwrap();

    // The eVDC controller: counts replacement requests.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let vdc_url = format!("http://{}", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::{BufRead, Write};
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            std::io::Read::read_exact(&mut reader, &mut body).unwrap();
            seen.lock().unwrap().push(format!(
                "{} {}",
                line.trim(),
                String::from_utf8_lossy(&body)
            ));
            let _ = (&stream).write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let extra = format!("backend_grace_period_secs = 2\n\n[vdc_config]\nurl = \"{vdc_url}\"\npassword = \"vdc-secret\"\nnew_size = 50\n");
    let mut monitor = Monitor::start(&app, &extra, &[]);
    let state_of = |s: &MonitorStatus, port: u16| {
        s.backends
            .iter()
            .find(|b| b.label == format!("127.0.0.1:{port}/data"))
            .map(|b| b.state)
    };
    monitor.wait_status("the first checks", |s| {
        state_of(s, good_port) == Some(BackendState::Healthy)
            && state_of(s, dying_port) == Some(BackendState::Healthy)
    });
    let status = monitor.wait_status("the wrong mode found", |s| {
        state_of(s, user_port) == Some(BackendState::Unreachable)
    });
    let wrong = status
        .backends
        .iter()
        .find(|b| b.label.ends_with(&format!(":{user_port}/data")))
        .unwrap();
    assert!(
        wrong
            .reason
            .as_deref()
            .unwrap()
            .contains("Userkey mode, expected Sequential"),
        "{wrong:?}"
    );

    // A backend dies: unknown for the grace period, then unreachable.
    let _ = dying.child.kill();
    let _ = dying.child.wait();
    monitor.wait_status("the dead backend unknown", |s| {
        state_of(s, dying_port) == Some(BackendState::Unknown)
    });
    monitor.wait_status("the dead backend unreachable", |s| {
        state_of(s, dying_port) == Some(BackendState::Unreachable)
    });
    // Every unreachable backend gets one request: the wrong-mode and the dead data backends,
    // and the four meta backends nobody listens for.
    wait_for("six replacement requests", || {
        (requests.lock().unwrap().len() >= 6).then_some(())
    });
    let log = monitor.log();
    assert!(
        log.contains(&format!(
            "message_id=\"{}\"",
            message_id::BACKEND_STATE_CHANGED
        )),
        "{log}"
    );
    assert!(!log.contains("vdc-secret") && !log.contains("datapass-secret"));

    // Remembered across restarts: no new request for the same backends.
    monitor.signal(nix::sys::signal::Signal::SIGTERM);
    monitor.wait();
    let mut monitor = Monitor::start(&app, &extra, &[]);
    monitor.wait_status("unreachable again", |s| {
        state_of(s, dying_port) == Some(BackendState::Unreachable)
    });
    std::thread::sleep(Duration::from_secs(2));
    let requests = requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 6, "{requests:?}");
    for request in &requests {
        let (line, body) = request.split_once(" {").unwrap();
        assert_eq!(line, "POST /api/controller/zdb/add HTTP/1.1");
        let body: serde_json::Value = serde_json::from_str(&format!("{{{body}")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"capacity": 50, "password": "vdc-secret"})
        );
    }
}

/// A changed backend set is rebuilt file by file, and a rebuild whose placement cannot be read
/// back from the metadata backends is never reported done: the zstor stand-in keeps its
/// metadata in its store, so each file fails closed, the new set is not recorded and eviction
/// stays paused. (The real zstor's rebuild, checked shard by shard, is the decommission test.)
#[test]
fn a_rebuild_whose_placement_cannot_be_checked_is_never_done() {
    let app = Appliance::on(&support::upstream::Stack::standins(), "");
    for n in 0..4 {
        let path = app.data.join(format!("zdbfs-data/d{n}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("data {n}")).unwrap();
    }
    let mut monitor = Monitor::start(&app, "max_zdb_data_dir_size = 1000", &[]);
    monitor.wait_status("3 sealed files verified", |s| {
        s.uploads.verified_files == 3 && s.uploads.queued_files == 0
    });
    let config = std::fs::read_to_string(&app.zstor_config).unwrap();
    let replaced = format!("\"{}\"", app.backends.as_ref().unwrap().data[1]);
    std::fs::write(
        &app.zstor_config,
        config.replace(&replaced, "\"127.0.0.1:7\""),
    )
    .unwrap();
    monitor.signal(nix::sys::signal::Signal::SIGHUP);
    let log = wait_for("every file to fail its rebuild", || {
        let log = monitor.log();
        (log.matches("failed 3 times").count() == 3).then_some(log)
    });
    assert!(log.contains("rebuilding 3 files onto it"), "{log}");
    assert!(log.contains("cannot be checked"), "{log}");
    assert!(!log.contains("rebuild finished"), "{log}");
    let rebuilds = std::fs::read_to_string(app.store.join("calls.log"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("rebuild"))
        .count();
    assert_eq!(rebuilds, 9, "3 attempts for each file");
    let status = monitor.wait_status("eviction paused", |s| s.cache.eviction_paused.is_some());
    assert!(
        status
            .cache
            .eviction_paused
            .as_deref()
            .unwrap()
            .contains("rebuild"),
        "{status:#?}"
    );
}

/// The reliability test of the issue: 300 sealed files; zstor fails 30 % of stores and hangs
/// 5 % past the timeout; the monitor is SIGKILLed 5 times at random instants. In the end every
/// file is verified remote, and no file was evicted unless verified and sealed.
#[test]
fn three_hundred_files_through_failures_hangs_and_kills() {
    // Backends that answer: eviction waits for every backend to be known healthy.
    let app = Appliance::on(&support::upstream::Stack::standins(), "");
    let ns = app.data.join("zdbfs-data");
    std::fs::create_dir_all(&ns).unwrap();
    std::fs::create_dir_all(app.index.join("zdbfs-data")).unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for n in 0..=300u32 {
        let content: Vec<u8> = (0..16384u32)
            .map(|i| (i.wrapping_mul(n + 1) % 251) as u8)
            .collect();
        let path = ns.join(format!("d{n}"));
        std::fs::write(&path, &content).unwrap();
        expected.insert(path, Checksum::of_bytes(&content));
    }
    let active = ns.join("d300");
    let active_checksum = expected.remove(&active).unwrap();
    // Half of the files are announced by the hook (jump-data), the rest found by reconciliation.
    for n in (0..300).step_by(2) {
        let out = Command::new(env!("CARGO_BIN_EXE_zdb-hook"))
            .args(["jump-data", "unix:///z"])
            .arg(ns.join(format!("d{n}")))
            .arg(ns.join(format!("d{}", n + 1)))
            .env("QSFS_CONFIG", &app.qsfs_config)
            .env("QSFS_LOG_TARGET", "stderr")
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    std::fs::write(
        app.store.join("inject.json"),
        r#"{"fail_store_percent": 30, "hang_store_percent": 5, "hang_secs": 3600}"#,
    )
    .unwrap();
    // 301 files of 16 KiB, a 1 MiB cache: most are evicted as soon as they are verified.
    let extra = "zstor_timeout_secs = 1\nupload_concurrency = 4\nmax_zdb_data_dir_size = 1\nreconcile_interval_secs = 1";
    let config = app.dir.path().join("etc/monitor_config.toml");
    std::fs::write(&config, support::monitor_config_text(&app, extra)).unwrap();

    let mut random: u64 = 0x853c49e6748fea9b;
    let mut next = || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    for kill in 0..5 {
        let mut monitor = Monitor::start_with(&app, &config, &[]);
        std::thread::sleep(Duration::from_millis(300 + next() % 2500));
        monitor.child.kill().unwrap();
        monitor.child.wait().unwrap();
        println!("kill {kill}: {} spool jobs left", app.jobs().len());
    }
    let mut monitor = Monitor::start_with(&app, &config, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let all_verified = || {
        expected
            .iter()
            .all(|(path, sum)| app.zstor().check(path).ok().flatten() == Some(*sum))
    };
    while !(app.jobs().is_empty() && all_verified()) {
        assert!(
            std::time::Instant::now() < deadline,
            "not all verified in time:\n{}",
            monitor.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    monitor.wait_status("nothing left to upload", |s| s.uploads.queued_files == 0);

    // The failures really happened.
    let calls = std::fs::read_to_string(app.store.join("calls.log")).unwrap();
    let failures = calls
        .lines()
        .filter(|l| l.ends_with("failed: injected failure"))
        .count();
    let hangs = calls.lines().filter(|l| l.ends_with("\thang")).count();
    println!("{failures} injected failures, {hangs} hangs");
    assert!(
        failures > 50 && hangs > 3,
        "failures {failures}, hangs {hangs}"
    );

    // Every eviction of every run, exactly: never the active file, and each evicted file's
    // remote copy is the verified content (after an eviction the file is gone, so nothing
    // could have stored it later).
    let mut evicted = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(app.dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("monitor-") {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            if let Some(rest) = line
                .split("evicted ")
                .nth(1)
                .filter(|_| line.contains(message_id::FILE_EVICTED))
            {
                let path = PathBuf::from(rest.split(" (").next().unwrap());
                assert!(
                    evicted.insert(path.clone()),
                    "{} evicted twice",
                    path.display()
                );
            }
        }
    }
    assert!(evicted.len() > 200, "eviction ran: {} files", evicted.len());
    assert!(
        !evicted.contains(&active) && active.exists(),
        "the active file is never evicted"
    );
    assert_eq!(Checksum::of_file(&active).unwrap(), active_checksum);
    assert_eq!(
        app.zstor().check(&active).unwrap(),
        None,
        "the active file is not sealed, so not uploaded"
    );
    for path in &evicted {
        assert!(!path.exists(), "{} was evicted", path.display());
        assert_eq!(
            app.zstor().check(path).unwrap(),
            Some(expected[path]),
            "{} verified before eviction",
            path.display()
        );
    }
    // What is left locally fits the limit (or is not evictable).
    assert!(monitor.status().cache.used_bytes <= 1 << 20);
}

#[test]
fn a_damaged_sealed_data_file_never_replaces_its_verified_remote_copy() {
    support::upstream::each_stack(
        check_a_damaged_sealed_data_file_never_replaces_its_verified_remote_copy,
    );
}

fn check_a_damaged_sealed_data_file_never_replaces_its_verified_remote_copy(stack: &Stack) {
    let app = Appliance::on(stack, "");
    let sealed = app.data.join("zdbfs-data/d0");
    let grown = app.data.join("zdbfs-data/d1");
    std::fs::create_dir_all(sealed.parent().unwrap()).unwrap();
    let original: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&sealed, &original).unwrap();
    std::fs::write(&grown, &original[..50_000]).unwrap();
    std::fs::write(app.data.join("zdbfs-data/d2"), "active").unwrap();
    let mut monitor = Monitor::start(&app, "", &[]);
    monitor.wait_status("both sealed files verified", |s| {
        s.uploads.verified_files == 2 && s.uploads.queued_files == 0
    });
    monitor.signal(nix::sys::signal::Signal::SIGTERM);
    monitor.wait();

    // d0 loses its tail (a killed hook, a partial retrieve, a bad disk); d1 grows the way zdb
    // appends to a data file it reopens after a restart.
    std::fs::write(&sealed, &original[..40_000]).unwrap();
    std::fs::write(&grown, &original).unwrap();
    let mut monitor = Monitor::start(&app, "", &[]);
    monitor.wait_status("the append uploaded", |s| {
        s.uploads.queued_files == 0 && s.uploads.verified_total >= 1
    });
    assert_eq!(
        app.zstor().check(&sealed).unwrap(),
        Some(Checksum::of_bytes(&original)),
        "the good remote copy of d0 is kept:\n{}",
        monitor.log()
    );
    assert!(
        remote_matches_local(&app, &grown),
        "the appended d1 is stored again:\n{}",
        monitor.log()
    );
    assert!(
        monitor.log().contains(&format!(
            "message_id=\"{}\"",
            message_id::LOCAL_COPY_DAMAGED
        )),
        "{}",
        monitor.log()
    );
    let status = monitor.wait_status("the damage flagged", |s| s.uploads.damaged_files == 1);
    // The damaged copy is set aside, not lost, and zdb's next read of d0 finds it missing and
    // brings the good copy back through `missing-data`.
    assert!(!sealed.exists());
    let aside: Vec<_> = std::fs::read_dir(app.state.join("damaged"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(aside, vec![original[..40_000].to_vec()]);
    assert_eq!(status.uploads.failed_total, 0, "{}", monitor.log());
    app.zstor().retrieve(&sealed).unwrap();
    assert_eq!(std::fs::read(&sealed).unwrap(), original);
}

#[test]
fn eviction_waits_while_a_backend_does_not_answer() {
    support::upstream::each_stack(check_eviction_waits_while_a_backend_does_not_answer);
}

fn check_eviction_waits_while_a_backend_does_not_answer(stack: &Stack) {
    let mut app = Appliance::on(stack, "");
    let ns = app.data.join("zdbfs-data");
    std::fs::create_dir_all(&ns).unwrap();
    for n in 0..=3u8 {
        std::fs::write(ns.join(format!("d{n}")), vec![n; 600 * 1024]).unwrap();
    }
    let config = app.dir.path().join("etc/monitor_config.toml");
    std::fs::write(&config, monitor_config_text(&app, "")).unwrap();
    let mut monitor = Monitor::start_with(&app, &config, &[]);
    monitor.wait_status("the sealed files verified, every backend healthy", |s| {
        s.uploads.verified_files == 3 && s.backends.iter().all(|b| b.state == BackendState::Healthy)
    });

    // A data backend stops answering, then the cache is made smaller than its files.
    let data_backend = 4;
    app.backends.as_mut().unwrap().kill(data_backend);
    monitor.wait_status("the backend not healthy", |s| {
        s.backends.iter().any(|b| b.state != BackendState::Healthy)
    });
    std::fs::write(
        &config,
        monitor_config_text(&app, "max_zdb_data_dir_size = 1"),
    )
    .unwrap();
    monitor.signal(nix::sys::signal::Signal::SIGHUP);
    let status = monitor.wait_status("eviction paused", |s| s.cache.eviction_paused.is_some());
    assert!(
        status
            .cache
            .eviction_paused
            .as_deref()
            .unwrap()
            .contains("not every backend is known to answer"),
        "{status:#?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    for n in 0..3 {
        assert!(
            ns.join(format!("d{n}")).exists(),
            "d{n} kept while a backend is down:\n{}",
            monitor.log()
        );
    }
    assert_eq!(monitor.status().cache.evicted_total, 0);

    // It answers again: eviction resumes.
    app.backends.as_mut().unwrap().restart(data_backend);
    let status = monitor.wait_status("eviction resumed", |s| s.cache.evicted_total >= 2);
    assert_eq!(status.cache.eviction_paused, None);
    assert!(monitor.log().contains("cache eviction paused"));
    assert!(monitor.log().contains("cache eviction resumed"));
}

/// Fills the filesystem of `dir` with one file of zeros until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = [0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    // The last partial pages too.
    while file.write_all(&[0u8; 1]).is_ok() {}
    let _ = file.sync_all();
    path
}

/// Writes sealed data files `d<from>..d<to>` (and the active `d<to>`) of 2 KiB each.
fn sealed_data_files(ns: &Path, from: u32, to: u32) {
    std::fs::create_dir_all(ns).unwrap();
    for n in from..=to {
        let content: Vec<u8> = (0..2048u32)
            .map(|i| (i.wrapping_mul(n + 3) % 253) as u8)
            .collect();
        std::fs::write(ns.join(format!("d{n}")), content).unwrap();
    }
}

/// The health probe of the monitor on its published status.
fn monitor_health(monitor: &Monitor) -> qsfs::health::Outcome {
    qsfs::health::probes::monitor::probe(&qsfs::health::probes::monitor::MonitorSettings {
        status_file: monitor.status_file.clone(),
        ..Default::default()
    })
}

/// Polls `probe` every 100 ms for up to `timeout`, panicking with `what` and the monitor's log
/// when it never holds or the monitor exits.
fn wait_long<T>(
    monitor: &mut Monitor,
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut(&Monitor) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = monitor.child.try_wait() {
            panic!("zstor_monitor exited with {status}:\n{}", monitor.log());
        }
        if let Some(found) = probe(monitor) {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; last status: {:#?}\nlog:\n{}",
            MonitorStatus::read(&monitor.status_file).ok(),
            monitor.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_full_state_directory_is_reported_and_recovered_from_without_a_restart() {
    support::upstream::each_stack(
        check_a_full_state_directory_is_reported_and_recovered_from_without_a_restart,
    );
}

fn check_a_full_state_directory_is_reported_and_recovered_from_without_a_restart(stack: &Stack) {
    let app = Appliance::on(stack, "");
    let _state_fs = support::Tmpfs::mount(&app.state, "512k");
    let ns = app.data.join("zdbfs-data");
    std::fs::create_dir_all(app.index.join("zdbfs-data")).unwrap();
    sealed_data_files(&ns, 0, 150);
    let mut monitor = Monitor::start(&app, "upload_concurrency = 4", &[]);
    monitor.wait_status("the first uploads verified", |s| {
        s.uploads.verified_files >= 20
    });

    // The state directory fills while uploads go on, and 250 more sealed files appear: their
    // records do not fit.
    let ballast = fill(&app.state);
    sealed_data_files(&ns, 150, 400);
    let degraded = wait_long(
        &mut monitor,
        "health degraded, naming the state database",
        Duration::from_secs(60),
        |monitor| {
            let health = monitor_health(monitor);
            (health.state == qsfs::health::State::Degraded
                && health.reason.contains("state database"))
            .then_some(health)
        },
    );
    println!("while full: {}", degraded.reason);
    // (Not also "some files unverified": with uploads in parallel, all 250 may already be
    // verified in memory, which stays the truth while the database is behind.)
    let status = monitor.wait_status("the failure in the status", |s| {
        s.errors.state_database.is_some()
    });
    let failure = status.errors.state_database.unwrap();
    assert!(failure.error.contains("No space left"), "{failure:?}");

    // Space comes back: every file ends verified, with no restart.
    std::fs::remove_file(&ballast).unwrap();
    let pid = monitor.child.id();
    let status = wait_long(
        &mut monitor,
        "every sealed file verified",
        Duration::from_secs(180),
        |monitor| {
            let status = MonitorStatus::read(&monitor.status_file).ok()?;
            (status.uploads.verified_files == 400 && status.uploads.queued_files == 0)
                .then_some(status)
        },
    );
    assert_eq!(status.pid, pid, "the same monitor, never restarted");
    let status = monitor.wait_status("no error left", |s| s.errors.failing().next().is_none());
    assert_eq!(status.uploads.unverified_files, 0);
    let health = monitor_health(&monitor);
    assert!(
        !health.reason.contains("state database"),
        "{health:?}\n{}",
        monitor.log()
    );
    for file in sealed_files(&app) {
        assert!(remote_matches_local(&app, &file), "{}", file.display());
    }

    // What the monitor knows is in its database: a restart finds every file verified.
    monitor.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(monitor.wait().code(), Some(0), "{}", monitor.log());
    let mut monitor = Monitor::start(&app, "upload_concurrency = 4", &[]);
    let status = monitor.wait_status("the restarted monitor's status", |s| s.pid != pid);
    assert_eq!(status.uploads.verified_files, 400, "{}", monitor.log());
}

/// Decommissioning a data backend that still answers, on the real zstor (the stand-in keeps
/// no placement to check): the daemon is asked to re-read its config before the rebuild, and
/// the rebuild is reported done only once no object has a shard left on the backend that
/// left the config; with that backend gone, every file reads back byte for byte.
#[test]
fn a_backend_replaced_while_it_still_answers_keeps_no_shard() {
    let Some(stack) = support::upstream::stacks()
        .into_iter()
        .find(|s| s.zstor.real)
    else {
        eprintln!("skipped: the real zstor is not available (QSFS_UPSTREAM_BIN)");
        return;
    };
    let mut app = Appliance::on(&stack, "");
    let spare = support::upstream::ZdbBackends::start(&stack.zdb, 0, 1);
    let socket = app.dir.path().join("zstor.sock");
    let backends = app.backends.as_ref().unwrap();
    std::fs::write(&app.zstor_config, backends.zstor_config(Some(&socket))).unwrap();
    let removed = backends.data[0];
    let log = app.dir.path().join("zstor-daemon.log");
    // As under systemd, the daemon reads a copy of the config of its own (its credential).
    let daemon_config = app.dir.path().join("zstor-daemon-credential.toml");
    std::fs::copy(&app.zstor_config, &daemon_config).unwrap();
    let _daemon = support::ZstorDaemon::start(&stack.zstor.path, &daemon_config, &socket, &log);

    let ns = app.data.join("zdbfs-data");
    std::fs::create_dir_all(&ns).unwrap();
    let mut files = Vec::new();
    for n in 0..=3u8 {
        let content: Vec<u8> = (0..200_000u32).map(|i| (i as u8) ^ n).collect();
        let path = ns.join(format!("d{n}"));
        std::fs::write(&path, &content).unwrap();
        if n < 3 {
            files.push((path, content));
        }
    }
    let mut monitor = Monitor::start(&app, "", &[]);
    monitor.wait_status("the sealed files verified", |s| {
        s.uploads.verified_files == 3 && s.uploads.queued_files == 0
    });
    let placement = |config_path: &Path| {
        let config = qsfs::zstor::config::ZstorConfig::load(config_path).unwrap();
        files
            .iter()
            .map(|(path, _)| {
                qsfs::zstor::metadata::shards_of(&config, path, Duration::from_secs(5))
                    .unwrap()
                    .unwrap()
                    .shards
                    .into_iter()
                    .map(|s| s.address)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    assert!(
        placement(&app.zstor_config)
            .iter()
            .all(|shards| shards.contains(&removed)),
        "each file has a shard on every data backend"
    );

    // The operator replaces the first data backend by the spare; the old one still runs.
    let text = std::fs::read_to_string(&app.zstor_config).unwrap();
    let replaced = text.replace(&format!("\"{removed}\""), &format!("\"{}\"", spare.data[0]));
    assert_ne!(text, replaced);
    std::fs::write(&app.zstor_config, &replaced).unwrap();
    monitor.signal(nix::sys::signal::Signal::SIGHUP);
    // The daemon still reads the old copy: a SIGUSR1 would not show it the new set, so the
    // rebuild waits and says what to do.
    let waiting = wait_for("the rebuild to wait for the daemon's config", || {
        let log = monitor.log();
        log.contains("restart qsfs-zstor.service").then_some(log)
    });
    assert!(
        !waiting.contains("asked the zstor daemon (pid") && !waiting.contains("rebuild finished"),
        "nothing is rebuilt through a daemon on the old set:\n{waiting}"
    );
    // The daemon gets the new copy (a restart of qsfs-zstor under systemd).
    std::fs::write(&daemon_config, &replaced).unwrap();
    let outcome = wait_for("the rebuild to end", || {
        let log = monitor.log();
        (log.contains("rebuild finished") || log.contains("failed 3 times")).then_some(log)
    });
    assert!(
        outcome.contains("asked the zstor daemon (pid"),
        "the daemon re-read its config first:\n{outcome}"
    );
    assert!(
        outcome.contains("rebuild finished: 3 files"),
        "the rebuild is done:\n{outcome}"
    );
    for (shards, (path, _)) in placement(&app.zstor_config).iter().zip(&files) {
        assert!(
            !shards.contains(&removed),
            "{} has no shard left on {removed}: {shards:?}",
            path.display()
        );
    }

    // The removed backend goes away: every file still reads back, byte for byte.
    app.backends.as_mut().unwrap().kill(4);
    for (path, content) in &files {
        std::fs::remove_file(path).unwrap();
        app.zstor().retrieve(path).unwrap();
        assert_eq!(&std::fs::read(path).unwrap(), content, "{}", path.display());
    }
    // Done once: a restart with the same set rebuilds nothing.
    monitor.signal(nix::sys::signal::Signal::SIGTERM);
    monitor.wait();
    let mut monitor = Monitor::start(&app, "", &[]);
    monitor.wait_status("started", |_| true);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!monitor.log().contains("rebuilding"), "{}", monitor.log());
}

/// Spool input is checked before it is used: a job whose id is not its file name (or not of
/// the hook's alphabet), whose snapshot is outside its `snapshots/<id>/`, or whose file is
/// outside the roots is moved to `bad/` with its reason, never deleted, and nothing outside
/// the spool is touched.
#[test]
fn bad_spool_jobs_are_quarantined_and_touch_nothing_outside() {
    use qsfs::spool::{Job, JobFile, Trigger};
    let app = Appliance::new(None, "");
    let victim = app.dir.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious"), b"keep me").unwrap();
    let secret = app.dir.path().join("secret");
    std::fs::write(&secret, b"not an index file").unwrap();
    let data = app.data.join("zdbfs-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("d0"), b"sealed").unwrap();
    std::fs::write(data.join("d1"), b"active").unwrap();
    let index = app.index.join("zdbfs-data/i0");
    std::fs::create_dir_all(index.parent().unwrap()).unwrap();
    std::fs::write(&index, b"index").unwrap();

    let spool = app.spool();
    spool.create().unwrap();
    let job = |id: &str, files: Vec<JobFile>| Job {
        version: qsfs::spool::JOB_VERSION,
        id: id.into(),
        event: Trigger::JumpData,
        namespace: "zdbfs-data".into(),
        written_unix_ms: 1,
        boot_id: qsfs::spool::boot_id().into(),
        files,
    };
    let file = |path: &Path, snapshot: Option<&Path>| JobFile {
        path: path.into(),
        snapshot: snapshot.map(Into::into),
    };
    let put = |name: &str, job: &Job| {
        std::fs::write(
            app.spool.join(format!("{name}.job")),
            serde_json::to_vec(job).unwrap(),
        )
        .unwrap()
    };
    put("1-1-0", &job("../../victim", vec![]));
    put(
        "2-1-0",
        &job(
            "2-1-0",
            vec![file(&app.dir.path().join("other/ns/d0"), None)],
        ),
    );
    put("3-1-0", &job("3-1-0", vec![file(&index, Some(&secret))]));
    put("4-1-0", &job("4-1-0", vec![file(&data.join("d0"), None)]));
    let link = app.index.join("zdbfs-data/i1");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    put("6-1-0", &job("6-1-0", vec![file(&link, None)]));
    // A job file that cannot be read (here: a directory) is read again, not set aside.
    std::fs::create_dir(app.spool.join("5-1-0.job")).unwrap();

    let mut monitor = Monitor::start(&app, "", &[]);
    monitor.wait_status("the good job verified, the bad ones set aside", |s| {
        s.uploads.verified_total >= 1
            && ["2-1-0", "4-1-0", "6-1-0"]
                .iter()
                .all(|name| !app.spool.join(format!("{name}.job")).exists())
    });
    assert_eq!(
        std::fs::read(victim.join("precious")).unwrap(),
        b"keep me",
        "{}",
        monitor.log()
    );
    assert_ne!(
        app.zstor().check(&index).unwrap(),
        Some(Checksum::of_file(&secret).unwrap()),
        "a snapshot outside the spool is never uploaded"
    );
    assert_eq!(app.zstor().check(&link).unwrap(), None, "nor a symlink");
    let bad = app.spool.join("bad");
    for name in ["1-1-0", "2-1-0", "3-1-0", "6-1-0"] {
        assert!(
            bad.join(format!("{name}.job")).exists(),
            "{name} kept in bad/:\n{}",
            monitor.log()
        );
        let reason = std::fs::read_to_string(bad.join(format!("{name}.job.reason"))).unwrap();
        assert!(!reason.trim().is_empty());
    }
    let log = monitor.log();
    assert!(
        log.contains(&format!(
            "message_id=\"{}\"",
            message_id::SPOOL_JOB_QUARANTINED
        )) && log.contains("1-1-0.job"),
        "{log}"
    );
    monitor.wait_status("4 jobs in bad/", |s| s.uploads.bad_jobs == 4);
    assert!(app.spool.join("5-1-0.job").is_dir());
    assert!(!bad.join("5-1-0.job").exists());
    let log = monitor.log();
    assert!(
        log.contains("5-1-0.job (attempt 2 of 30): Is a directory"),
        "{log}"
    );
}
