//! Our binaries log natively to journald under systemd: one SYSLOG_IDENTIFIER, structured
//! fields, stable MESSAGE_IDs for failures.

use crate::container::{Container, TARGET_IN_CONTAINER};
use serde_json::Value;

fn entries(container: &Container, filter: &str) -> Vec<Value> {
    container
        .ok(&format!("journalctl --no-pager -o json {filter}"))
        .lines()
        .map(|line| serde_json::from_str(line).expect("journal JSON"))
        .collect()
}

#[test]
#[ignore = "needs root and systemd-nspawn: run tests/run"]
fn hook_events_reach_the_journal_with_structured_fields() {
    let container = Container::boot("qsfs-logging");
    container.write(
        "/var/zdbfs/etc/qsfs.toml",
        "[paths]\nindex_dir = \"/var/zdbfs/index\"\ndata_dir = \"/var/zdbfs/data\"\n",
    );
    container
        .ok("mkdir -p /var/zdbfs/data/zdbfs-data && echo sealed > /var/zdbfs/data/zdbfs-data/d0");
    let hook = format!("{TARGET_IN_CONTAINER}/zdb-hook");
    let run = |args: &str| {
        container.sh(&format!(
            "systemd-run --quiet --wait --collect -p Environment=QSFS_CONFIG=/var/zdbfs/etc/qsfs.toml {hook} {args}"
        ))
    };
    assert!(run("jump-data unix:///run/qsfs/zdb.sock /var/zdbfs/data/zdbfs-data/d0 /var/zdbfs/data/zdbfs-data/d1").status.success());
    assert!(!run("missing-data unix:///run/qsfs/zdb.sock /etc/passwd")
        .status
        .success());
    container.ok("journalctl --sync");

    let all = entries(&container, "SYSLOG_IDENTIFIER=zdb-hook");
    let handled = all
        .iter()
        .find(|e| e["QSFS_EVENT"] == "jump-data")
        .expect("a jump-data entry");
    assert_eq!(handled["QSFS_NAMESPACE"], "zdbfs-data", "{handled}");
    assert_eq!(handled["QSFS_FILES"], "/var/zdbfs/data/zdbfs-data/d0");
    assert_eq!(handled["QSFS_INSTANCE"], "unix:///run/qsfs/zdb.sock");
    assert_eq!(handled["PRIORITY"], "6");
    let job = handled["QSFS_JOB"].as_str().unwrap();
    assert!(
        container
            .root()
            .join(format!("var/zdbfs/spool/{job}.job"))
            .exists(),
        "the logged job id names the spool file"
    );
    assert!(handled["QSFS_DURATION_MS"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());

    let failed = entries(&container, "MESSAGE_ID=fcb64dd5e8674a39bbf905c1cf0aff8e");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["QSFS_EVENT"], "missing-data");
    assert_eq!(failed[0]["PRIORITY"], "3");
    assert_eq!(failed[0]["SYSLOG_IDENTIFIER"], "zdb-hook");
    assert!(
        failed[0]["MESSAGE"]
            .as_str()
            .unwrap()
            .contains("/etc/passwd is not a file of a namespace"),
        "{}",
        failed[0]
    );
}
