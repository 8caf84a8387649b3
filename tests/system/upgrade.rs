//! `qsfs-image upgrade` and `rollback` on real systemd: an upgrade to a good image ends on the
//! new version; one whose MinIO does not start rolls back by itself, says why in the journal
//! and ends healthy on the old version; a rollback by hand returns to the version before. No
//! object is lost on the way.

use crate::appliance::{build_image_with, object, started_appliance, Appliance, Timing};
use std::path::Path;
use std::time::Duration;

/// Copies an image (and the SHA256SUMS beside it) into the container; its path there.
fn copy_in(appliance: &Appliance, image: &Path, name: &str) -> String {
    let dir = format!("root/{name}");
    let inside = appliance.container.root().join(&dir);
    std::fs::create_dir_all(&inside).unwrap();
    let file = image.file_name().unwrap();
    std::fs::copy(image, inside.join(file)).unwrap();
    std::fs::copy(
        image.with_file_name("SHA256SUMS"),
        inside.join("SHA256SUMS"),
    )
    .unwrap();
    format!("/{dir}/{}", file.to_string_lossy())
}

/// `qsfs-image status --format json`, parsed.
fn status(appliance: &Appliance) -> serde_json::Value {
    serde_json::from_str(&appliance.ok("/var/zdbfs/bin/qsfs-image status --format json")).unwrap()
}

/// Every object `0..n` of the `docs` bucket GETs back intact.
fn assert_docs_intact(appliance: &Appliance, dir: &Path, n: u32) {
    for i in 0..n {
        assert_eq!(
            appliance.get(dir, "docs", &format!("doc-{i}")).as_deref(),
            Ok(object(i).as_slice()),
            "doc-{i}:\n{}",
            appliance.dump()
        );
    }
}

#[test]
#[ignore = "needs root and systemd-nspawn: run tests/run"]
fn upgrade_to_a_good_image_then_to_one_whose_minio_fails() {
    let started = started_appliance("qsfs-upgrade", "");
    let (work, appliance) = (started.work.path(), &started.appliance);
    let _t = Timing::start("upgrade, automatic rollback, rollback");
    let site = std::fs::read_to_string(work.join("site.toml")).unwrap();
    for i in 0..3 {
        appliance.put(work, "docs", &format!("doc-{i}"), &object(i));
    }
    let v1 = status(appliance)["live"].as_str().unwrap().to_string();

    // A good image: the same programs, built at another (past: preflight checks the clock
    // against it) time, so another MANIFEST.
    let good_dir = work.join("good");
    std::fs::create_dir_all(&good_dir).unwrap();
    let good = build_image_with(&good_dir, &site, &[], Some(1_700_000_000));
    let good = copy_in(appliance, &good, "good");
    let out = appliance.ok(&format!(
        "/var/zdbfs/bin/qsfs-image upgrade {good} --watch-secs 180"
    ));
    println!("{out}");
    let after = status(appliance);
    let v2 = after["live"].as_str().unwrap().to_string();
    assert_ne!(v1, v2);
    assert_eq!(after["state"]["current"], v2.as_str(), "{after:#}");
    assert_eq!(after["state"]["previous"], v1.as_str(), "{after:#}");
    assert!(out.contains("upgraded from"), "{out}");
    appliance.wait_healthy(Duration::from_secs(60));
    assert_docs_intact(appliance, work, 3);
    appliance.put(work, "docs", "doc-3", &object(3));

    // A broken image: its MinIO exits at once.
    let broken_dir = work.join("broken");
    std::fs::create_dir_all(&broken_dir).unwrap();
    let broken = build_image_with(
        &broken_dir,
        &site,
        &[("minio", Path::new("/bin/false"))],
        Some(1_700_000_100),
    );
    let broken = copy_in(appliance, &broken, "broken");
    let out = appliance.container.sh(&format!(
        "/var/zdbfs/bin/qsfs-image upgrade {broken} --watch-secs 60"
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(100), "rolled back: {stdout}");
    assert!(stdout.contains("rolled back to"), "{stdout}");
    let after = status(appliance);
    assert_eq!(after["live"], v2.as_str(), "{after:#}");
    assert_eq!(after["state"]["current"], v2.as_str(), "{after:#}");
    assert_eq!(
        after["state"]["history"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["action"],
        "upgrade-rolled-back"
    );
    let journal = appliance.ok("journalctl --no-pager -o verbose \
         MESSAGE_ID=3b4e502448694436a4bf543a0b709697");
    assert!(
        journal.contains("qsfs-minio.service"),
        "the reason: {journal}"
    );
    appliance.wait_all_active(Duration::from_secs(60));
    appliance.wait_healthy(Duration::from_secs(60));
    assert_docs_intact(appliance, work, 4);

    // By hand, back to the first version.
    let out = appliance.ok("/var/zdbfs/bin/qsfs-image rollback --watch-secs 180");
    assert!(out.contains("rolled back from"), "{out}");
    let after = status(appliance);
    assert_eq!(after["live"], v1.as_str(), "{after:#}");
    assert_eq!(after["state"]["previous"], v2.as_str(), "{after:#}");
    appliance.wait_healthy(Duration::from_secs(60));
    assert_docs_intact(appliance, work, 4);
}
