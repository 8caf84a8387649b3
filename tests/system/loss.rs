//! A VM lost without a stop, at five instants, under continuous S3 writes: each time a fresh
//! container with only the image and the backends restores the last restore point, zdbfs
//! mounts, and every object acknowledged longer than the loss window before the loss is
//! byte-identical; none is other bytes. Then the cache shrinks so old data files are evicted,
//! and every object still reads back byte-identical. On the real tier: the real zdb, zdbfs and
//! zstor.

use crate::appliance::{object, set_monitor_keys, started_appliance, Appliance, Started, Timing};
use std::time::{Duration, Instant};

/// A restore point every 10 s (set below), zdbfs's flush every 5 s, and up to 15 s for the
/// uploads of what was written meanwhile.
const LOSS_WINDOW: Duration = Duration::from_secs(30);
const INTERVAL: &str = "restore_point_interval_secs = 10\n";

/// How many journal entries of `identifier` contain `text`.
fn entries(appliance: &Appliance, identifier: &str, text: &str) -> usize {
    let out = appliance.container.sh(&format!(
        "journalctl -t {identifier} --no-pager -o cat | grep -c -- '{text}' || true"
    ));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// One object PUT while waiting, and when it was acknowledged.
struct Writer {
    next: u32,
    acknowledged: Vec<(u32, Instant)>,
}

impl Writer {
    fn put(&mut self, appliance: &Appliance, dir: &std::path::Path) {
        appliance.put(dir, "docs", &format!("o{}", self.next), &object(self.next));
        self.acknowledged.push((self.next, Instant::now()));
        self.next += 1;
    }

    /// Writes for `at_least`.
    fn write_for(&mut self, appliance: &Appliance, dir: &std::path::Path, at_least: Duration) {
        let start = Instant::now();
        while start.elapsed() < at_least {
            self.put(appliance, dir);
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Writes until a new journal entry of `identifier` contains `text` (at most 90 s).
    fn write_until_logged(
        &mut self,
        appliance: &Appliance,
        dir: &std::path::Path,
        identifier: &str,
        text: &str,
    ) {
        let before = entries(appliance, identifier, text);
        let deadline = Instant::now() + Duration::from_secs(90);
        while entries(appliance, identifier, text) == before {
            assert!(
                Instant::now() < deadline,
                "no new '{text}' of {identifier}:\n{}",
                appliance.dump()
            );
            self.put(appliance, dir);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every object acknowledged longer than the loss window before `lost_at` reads back
    /// byte-identical; a newer one is byte-identical or missing (then forgotten).
    fn check(&mut self, appliance: &Appliance, dir: &std::path::Path, lost_at: Option<Instant>) {
        let mut missing = Vec::new();
        self.acknowledged.retain(
            |(n, at)| match appliance.get(dir, "docs", &format!("o{n}")) {
                Ok(bytes) => {
                    assert!(
                        bytes == object(*n),
                        "o{n}, acknowledged {:?} before the loss, came back with other bytes \
                         ({} bytes, {} written): {}\n{}",
                        lost_at.map(|lost| lost.duration_since(*at)),
                        bytes.len(),
                        object(*n).len(),
                        describe_blocks(*n, &bytes),
                        appliance.dump()
                    );
                    true
                }
                Err(404) if lost_at.is_some_and(|lost| lost.duration_since(*at) < LOSS_WINDOW) => {
                    missing.push(*n);
                    false
                }
                Err(status) => panic!(
                    "o{n}, acknowledged {:?} before the loss, answers {status}:\n{}",
                    lost_at.map(|lost| lost.duration_since(*at)),
                    appliance.dump()
                ),
            },
        );
        eprintln!(
            "{} objects byte-identical; missing (acknowledged within the loss window): {missing:?}",
            self.acknowledged.len()
        );
    }
}

/// Which of zdbfs's 128 KiB blocks of object `n` differ, and whose bytes each holds instead
/// (the objects' bytes are `i * (n + 13) % 253`, so two neighbouring bytes name `n` modulo 253).
fn describe_blocks(n: u32, bytes: &[u8]) -> String {
    const BLOCK: usize = 128 * 1024;
    let expected = object(n);
    let mut out = Vec::new();
    for (k, got) in bytes.chunks(BLOCK).enumerate() {
        let want = &expected[(k * BLOCK).min(expected.len())..];
        if want.starts_with(got) {
            continue;
        }
        let what = if got.iter().all(|b| *b == 0) {
            "zeros".to_string()
        } else if got.len() >= 2 {
            let step = (got[1] as u32 + 253 - got[0] as u32) % 253;
            format!("bytes of an object n = {} mod 253", (step + 253 - 13) % 253)
        } else {
            "one byte".to_string()
        };
        out.push(format!("block {k}: {what}"));
    }
    out.join(", ")
}

#[test]
#[ignore = "needs root and systemd-nspawn: run tests/run"]
fn a_lost_vm_restores_every_object_acknowledged_before_the_loss_window() {
    let Started {
        work,
        backends,
        image,
        appliance,
    } = started_appliance("qsfs-loss-0", INTERVAL);
    let dir = work.path();
    let store = dir.join("store");
    let s3_port = appliance.s3_port;
    let mut appliance = Some(appliance);
    let mut writer = Writer {
        next: 0,
        acknowledged: Vec::new(),
    };
    let instants = [
        "lost right after a restore point was published",
        "lost right after zdbfs-data jumped",
        "lost mid-upload (a burst just acknowledged)",
        "lost at a random instant (seeded)",
        "lost right after the monitor restarted",
    ];
    let seed = std::process::id() as u64;
    eprintln!("seed {seed} (the random instant waits seed * 7919 % 5000 ms)");
    for (round, what) in instants.into_iter().enumerate() {
        let lost = appliance.take().unwrap();
        let _t = Timing::start(what);
        let mut restarted = None;
        writer.write_for(&lost, dir, LOSS_WINDOW + Duration::from_secs(5));
        match round {
            0 => writer.write_until_logged(&lost, dir, "zstor_monitor", "published"),
            1 => writer.write_until_logged(&lost, dir, "zdb-hook", "jump-index zdbfs-data handled"),
            2 => (0..4).for_each(|_| writer.put(&lost, dir)),
            3 => std::thread::sleep(Duration::from_millis(seed * 7919 % 5000)),
            _ => {
                // No restore point is taken while the monitor is stopped (its stop uploads
                // what is queued first): the window counts from when the restart began.
                restarted = Some(Instant::now());
                drop(lost.ok("systemctl restart qsfs-monitor"));
            }
        }
        let lost_at = restarted.unwrap_or_else(Instant::now);
        let mut lost = lost;
        lost.container.lose();
        drop(lost);
        let fresh =
            Appliance::install(&format!("qsfs-loss-{}", round + 1), &image, &store, s3_port);
        let config = fresh
            .container
            .root()
            .join("var/zdbfs/etc/monitor_config.toml");
        set_monitor_keys(&config, INTERVAL);
        fresh.ok("systemctl start qsfs.target");
        fresh.wait_all_active(Duration::from_secs(180));
        let journal = fresh.ok("journalctl -t zdb-hook --no-pager -o cat");
        assert!(journal.contains("restored the restore point"), "{journal}");
        writer.check(&fresh, dir, Some(lost_at));
        appliance = Some(fresh);
    }
    let appliance = appliance.unwrap();
    {
        let _t = Timing::start("evict old data files, then read everything");
        let config = "/var/zdbfs/etc/monitor_config.toml";
        appliance.ok(&format!(
            "sed -i 's/^max_zdb_data_dir_size = .*/max_zdb_data_dir_size = 4/' {config} && \
             systemctl reload qsfs-monitor"
        ));
        writer.write_until_logged(&appliance, dir, "zstor_monitor", "evicted");
        writer.check(&appliance, dir, None);
    }
    drop(appliance);
    drop(backends);
}
