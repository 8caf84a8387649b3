//! Benchmark of `zdb-hook`, measured side by side with its floor in one run (run it through
//! `tests/bench/run`, which builds in release mode):
//!
//! * `jump-data` and `namespace-created` against `/bin/true`: the cost of fork+exec is the
//!   floor every hook pays; target median ratio ≤ 3.
//! * `jump-index` with 64 MiB of dirty index files against `cp` of the same files into a fresh
//!   directory; target median ratio ≤ 1.3.
//!
//! Runs are interleaved (A, B, A, B, …) so that machine noise hits both sides alike.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn timed(command: &mut Command) -> Duration {
    let started = Instant::now();
    let status = command.status().expect("run");
    let elapsed = started.elapsed();
    assert!(status.success(), "{command:?} failed");
    elapsed
}

fn clear_spool(spool: &Path) {
    let _ = std::fs::remove_dir_all(spool);
}

struct Comparison {
    name: &'static str,
    ours: Duration,
    floor_name: &'static str,
    floor: Duration,
    target: f64,
}

fn compare(
    name: &'static str,
    floor_name: &'static str,
    target: f64,
    runs: usize,
    mut ours: impl FnMut() -> Duration,
    mut floor: impl FnMut() -> Duration,
) -> Comparison {
    for _ in 0..runs / 10 + 1 {
        ours();
        floor();
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(ours());
        b.push(floor());
    }
    Comparison {
        name,
        ours: median(a),
        floor_name,
        floor: median(b),
        target,
    }
}

fn main() {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().to_path_buf();
    let hook = profile_dir.join("zdb-hook");
    assert!(
        hook.exists(),
        "{} is missing: cargo build --release --bins",
        hook.display()
    );
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = dir.path();
    let (index, data, spool) = (root.join("index"), root.join("data"), root.join("spool"));
    let config = root.join("qsfs.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\nindex_dir = \"{}\"\ndata_dir = \"{}\"\nspool_dir = \"{}\"\nstate_dir = \"{}\"\n",
            index.display(),
            data.display(),
            spool.display(),
            root.join("state").display()
        ),
    )
    .unwrap();
    let ns_index = index.join("zdbfs-data");
    let ns_data = data.join("zdbfs-data");
    std::fs::create_dir_all(&ns_index).unwrap();
    std::fs::create_dir_all(&ns_data).unwrap();
    std::fs::write(ns_index.join("zdb-namespace"), b"descriptor").unwrap();
    std::fs::write(ns_data.join("d0"), b"sealed").unwrap();
    // 64 MiB of index files: i0..i7, 8 MiB each.
    let mut seed: u64 = 0x2545f4914f6cdd1d;
    let index_files: Vec<PathBuf> = (0..8).map(|n| ns_index.join(format!("i{n}"))).collect();
    for file in &index_files {
        let content: Vec<u8> = (0..8 << 20)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        std::fs::write(file, content).unwrap();
    }

    let hook_command = |args: &[&str]| {
        let mut command = Command::new(&hook);
        command
            .args(args)
            .env("QSFS_CONFIG", &config)
            .env("QSFS_LOG_TARGET", "stderr")
            .stderr(Stdio::null());
        command
    };
    let true_run = || timed(&mut Command::new("/bin/true"));
    let d0 = ns_data.join("d0").display().to_string();
    let d1 = ns_data.join("d1").display().to_string();
    let mut results = Vec::new();
    let mut runs = 0;
    results.push(compare(
        "zdb-hook jump-data",
        "/bin/true",
        3.0,
        300,
        || {
            runs += 1;
            if runs % 50 == 0 {
                clear_spool(&spool);
            }
            timed(&mut hook_command(&[
                "jump-data",
                "unix:///run/qsfs/zdb.sock",
                &d0,
                &d1,
            ]))
        },
        true_run,
    ));
    clear_spool(&spool);
    results.push(compare(
        "zdb-hook namespace-created",
        "/bin/true",
        3.0,
        300,
        || {
            timed(&mut hook_command(&[
                "namespace-created",
                "unix:///run/qsfs/zdb.sock",
                "zdbfs-data",
            ]))
        },
        true_run,
    ));
    clear_spool(&spool);
    let old = index_files[7].display().to_string();
    let new = ns_index.join("i8").display().to_string();
    let copies = root.join("copies");
    results.push(compare(
        "zdb-hook jump-index (64 MiB)",
        "cp (64 MiB)",
        1.3,
        20,
        || {
            clear_spool(&spool);
            timed(&mut hook_command(&[
                "jump-index",
                "unix:///run/qsfs/zdb.sock",
                &old,
                &new,
                "0 1 2 3 4 5 6 ",
            ]))
        },
        || {
            let _ = std::fs::remove_dir_all(&copies);
            std::fs::create_dir(&copies).unwrap();
            timed(Command::new("cp").args(&index_files).arg(&copies))
        },
    ));

    println!(
        "{:<30} {:>12} {:<14} {:>12} {:>8} {:>8}",
        "benchmark", "median", "floor", "median", "ratio", "target"
    );
    let mut met = true;
    for r in &results {
        let ratio = r.ours.as_secs_f64() / r.floor.as_secs_f64();
        met &= ratio <= r.target;
        println!(
            "{:<30} {:>10.3}ms {:<14} {:>10.3}ms {:>8.2} {:>7}{}",
            r.name,
            r.ours.as_secs_f64() * 1e3,
            r.floor_name,
            r.floor.as_secs_f64() * 1e3,
            ratio,
            format!("≤{}", r.target),
            if ratio <= r.target { "" } else { "  (missed)" }
        );
    }
    if !met {
        println!("some targets were missed on this machine");
    }
}
