//! `qsfs::systemd::Systemd` against the real systemd of a container.

use crate::container::{wait_for, Container, TARGET_IN_CONTAINER};
use serde_json::Value;
use std::time::Duration;

const UNIT: &str = "qsfs-dbus-probe.service";

fn unit_control(container: &Container, verb: &str, unit: &str) -> Value {
    let out = container.sh(&format!("{TARGET_IN_CONTAINER}/unit-control {verb} {unit}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "unit-control {verb} {unit}: {e}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn show(container: &Container, property: &str) -> String {
    container
        .ok(&format!("systemctl show -P {property} {UNIT}"))
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root and systemd-nspawn: run tests/run"]
fn unit_control_drives_real_systemd() {
    crate::support::bin("unit-control");
    let container = Container::boot("qsfs-dbus");
    // Written after boot and never daemon-reloaded: LoadUnit must still find it.
    container.write(
        &format!("/etc/systemd/system/{UNIT}"),
        "[Service]\nExecStart=/bin/sleep infinity\nRestart=on-failure\nRestartSec=200ms\n",
    );
    container.write(
        "/etc/systemd/system/qsfs-dbus-fails.service",
        "[Service]\nType=oneshot\nExecStart=/bin/false\n",
    );

    let status = unit_control(&container, "status", UNIT);
    assert_eq!(status["load_state"], "loaded", "{status}");
    assert_eq!(status["active_state"], "inactive");
    assert_eq!(status["n_restarts"], 0);

    assert_eq!(
        unit_control(&container, "start", UNIT),
        serde_json::json!({ "job": "done" })
    );
    let status = unit_control(&container, "status", UNIT);
    assert_eq!(
        (
            status["active_state"].as_str(),
            status["sub_state"].as_str()
        ),
        (Some("active"), Some("running"))
    );
    assert_eq!(status["result"], "success");

    // A crash: systemd restarts it on its own, and NRestarts counts it.
    container.ok(&format!("kill -9 $(systemctl show -P MainPID {UNIT})"));
    wait_for(Duration::from_secs(10), || {
        (show(&container, "NRestarts") == "1" && show(&container, "SubState") == "running")
            .then_some(())
    })
    .expect("systemd restarted the unit");
    let status = unit_control(&container, "status", UNIT);
    assert_eq!(status["n_restarts"], 1, "{status}");
    assert_eq!(status["active_state"], show(&container, "ActiveState"));

    let before = show(&container, "MainPID");
    assert_eq!(unit_control(&container, "restart", UNIT)["job"], "done");
    assert_ne!(
        show(&container, "MainPID"),
        before,
        "restart gave the unit a new process"
    );

    assert_eq!(unit_control(&container, "stop", UNIT)["job"], "done");
    assert_eq!(
        unit_control(&container, "status", UNIT)["active_state"],
        "inactive"
    );

    // Failures are reported as such, not as "done".
    assert_eq!(
        unit_control(&container, "start", "qsfs-dbus-fails.service")["job"],
        "failed"
    );
    let status = unit_control(&container, "status", "qsfs-dbus-fails.service");
    assert_eq!(
        (status["active_state"].as_str(), status["result"].as_str()),
        (Some("failed"), Some("exit-code"))
    );
    let missing = unit_control(&container, "start", "qsfs-no-such.service");
    assert!(
        missing["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not found"),
        "{missing}"
    );
    assert_eq!(
        unit_control(&container, "status", "qsfs-no-such.service")["load_state"],
        "not-found"
    );
    // A target has no service properties.
    let target = unit_control(&container, "status", "multi-user.target");
    assert_eq!(target["active_state"], "active");
    assert!(target["n_restarts"].is_null());
}
