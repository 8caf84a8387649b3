//! `qsfs-health` on real systemd: `wait` as a readiness gate, and `serve` restarting a unit that
//! is active but no longer answers (a SIGSTOPped zdb) through systemd's D-Bus API, with the
//! actions in the journal under their MESSAGE_IDs. zdb is the real one when available.

use crate::container::{wait_for, Container, TARGET_IN_CONTAINER};
use crate::support::upstream::Program;
use std::time::Duration;

const CONFIG: &str = "\
[paths]
zdb_socket = \"/run/qsfs/zdb.sock\"

[health]
probes = [\"units\", \"zdb\"]
status_file = \"/run/qsfs/health-status.json\"

[health.units]
units = [\"qsfs-zdb.service\"]

[health.zdb]
timeout_ms = 300
namespaces = []

[health.remediation]
restart = [\"zdb\"]
failures_before_restart = 2
backoff_initial_secs = 1
job_timeout_secs = 30
";

fn show(container: &Container, unit: &str, property: &str) -> String {
    container
        .ok(&format!("systemctl show -P {property} {unit}"))
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root and systemd-nspawn: run tests/run"]
fn serve_restarts_a_hung_zdb_through_systemd() {
    let zdb = Program::preferred("zdb");
    let container = Container::boot("qsfs-health");
    container.install_program(&zdb.path, "/usr/local/bin/zdb");
    container.write("/etc/qsfs-health-test.toml", CONFIG);
    container.write(
        "/etc/systemd/system/qsfs-zdb.service",
        "[Service]\nRuntimeDirectory=qsfs\nRuntimeDirectoryPreserve=yes\n\
         ExecStartPre=/bin/rm -f /run/qsfs/zdb.sock\n\
         ExecStart=/usr/local/bin/zdb --index /var/lib/zdb/index --data /var/lib/zdb/data --socket /run/qsfs/zdb.sock\n\
         SuccessExitStatus=143\n",
    );
    let health = format!("{TARGET_IN_CONTAINER}/qsfs-health --config /etc/qsfs-health-test.toml");
    container.ok("systemctl start qsfs-zdb.service");
    // The readiness gate: returns once zdb answers.
    container.ok(&format!("{health} wait zdb --timeout 20s"));

    container.ok(&format!(
        "systemd-run --unit=qsfs-health-test -p Type=notify -p WatchdogSec=20 {health} serve --interval 300ms"
    ));
    assert_eq!(
        show(&container, "qsfs-health-test", "ActiveState"),
        "active"
    );
    assert!(
        show(&container, "qsfs-health-test", "StatusText").starts_with("ok: 2 probes ok"),
        "{}",
        show(&container, "qsfs-health-test", "StatusText")
    );

    // zdb stops answering while systemd still sees it active.
    let hung = show(&container, "qsfs-zdb.service", "MainPID");
    container.ok(&format!("kill -STOP {hung}"));
    wait_for(Duration::from_secs(30), || {
        let pid = show(&container, "qsfs-zdb.service", "MainPID");
        let state = show(&container, "qsfs-zdb.service", "ActiveState");
        (pid != hung && pid != "0" && state == "active").then_some(())
    })
    .unwrap_or_else(|| panic!("qsfs-zdb was not restarted:\n{}", container.journal_tail()));
    container.ok(&format!("{health} wait zdb --timeout 20s"));

    container.ok("journalctl --sync");
    let requested =
        container.ok("journalctl --no-pager -o json MESSAGE_ID=1d0920f050aeafadc447b9bc7407c6de");
    let entry: serde_json::Value =
        serde_json::from_str(requested.lines().next().expect("a restart entry")).unwrap();
    assert_eq!(entry["QSFS_UNIT"], "qsfs-zdb.service", "{entry}");
    assert_eq!(entry["QSFS_PROBE"], "zdb");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "qsfs-health");
    let done =
        container.ok("journalctl --no-pager -o json MESSAGE_ID=ed87462283bacd5178d408467bc7c7e5");
    assert!(done.contains("\"QSFS_JOB_RESULT\":\"done\""), "{done}");
    // The failure was reported as a state change, and serve recovers to ok.
    let changed =
        container.ok("journalctl --no-pager -o cat MESSAGE_ID=c55721f34d0ef8af85f68d9d6b919055");
    assert!(changed.contains("zdb ok -> failed"), "{changed}");
    wait_for(Duration::from_secs(10), || {
        show(&container, "qsfs-health-test", "StatusText")
            .starts_with("ok:")
            .then_some(())
    })
    .expect("serve reports ok again");
    container.ok("systemctl stop qsfs-health-test");
}
