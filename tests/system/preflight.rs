//! `qsfs-image preflight` on real systemd: on a VM without `/dev/fuse` it fails naming the
//! device, and qsfs-config.service, which runs it first, keeps every other unit from starting,
//! with the reason in the journal. Every other system test boots with `/dev/fuse` and starts
//! qsfs.target, so preflight passes on a good machine.

use crate::appliance::{build_image, Appliance, Backends, Timing, UNITS};
use crate::support::upstream::free_port;

/// A container without `/dev/fuse`: `preflight` fails with its FUSE exit code naming the
/// device; `systemctl start qsfs.target` starts none of the qsfs units (qsfs-config fails,
/// the others depend on it) and the journal says why.
#[test]
#[ignore = "needs root and systemd-nspawn: run tests/run"]
fn without_dev_fuse_preflight_fails_and_nothing_starts() {
    let _t = Timing::start("preflight without /dev/fuse");
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let backends = Backends::start();
    let s3_port = free_port();
    let image = build_image(work.path(), &backends.site(s3_port));
    let appliance = Appliance::install_without_fuse("qsfs-nofuse", &image, &store, s3_port);
    appliance.ok("test ! -e /dev/fuse");

    let out = appliance
        .container
        .sh("/var/zdbfs/bin/qsfs-image preflight --root /");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(91), "{report}");
    let fuse = report
        .lines()
        .find(|l| l.contains(" fuse "))
        .unwrap_or_else(|| panic!("no fuse line: {report}"));
    assert!(
        fuse.starts_with("FAILED (91)") && fuse.contains("/dev/fuse does not exist"),
        "{report}"
    );
    for check in ["systemd", "libraries", "space", "s3-port", "clock"] {
        let line = report.lines().find(|l| l.contains(&format!(" {check} ")));
        assert!(
            line.is_some_and(|l| l.starts_with("ok ")),
            "{check} passes here: {report}"
        );
    }

    // The containers share the host's network: a listener there takes the S3 port, which
    // qsfs-config's preflight sees (PrivateNetwork= applies even to its "+" command: preflight
    // reads PID 1's tables).
    let _taken = std::net::TcpListener::bind(("127.0.0.1", s3_port)).unwrap();
    let _ = appliance
        .container
        .sh("timeout 120 systemctl start qsfs.target");
    assert_eq!(
        appliance.show("qsfs-config.service", "ActiveState"),
        "failed",
        "{}",
        appliance.dump()
    );
    for unit in UNITS {
        assert_eq!(
            appliance.show(unit, "InactiveExitTimestampMonotonic"),
            "0",
            "{unit} never started:\n{}",
            appliance.dump()
        );
    }
    let journal = appliance.ok("journalctl --no-pager -u qsfs-config.service -u qsfs-zdb.service");
    assert!(
        journal.contains("/dev/fuse does not exist"),
        "the journal names /dev/fuse:\n{journal}"
    );
    assert!(
        journal.contains("FAILED (94)  s3-port")
            && journal.contains(&format!("127.0.0.1:{s3_port}")),
        "qsfs-config's preflight sees the real network:\n{journal}"
    );
    assert!(
        journal.contains("Dependency failed"),
        "the journal says why zdb did not start:\n{journal}"
    );
}
