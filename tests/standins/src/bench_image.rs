//! Benchmark of `qsfs-image build`, measured side by side with its floor in one run (run it
//! through `tests/bench/run`, which builds in release mode):
//!
//! * `qsfs-image build --offline` from local components (hashing every input, rendering and
//!   checking the configs, writing the deterministic tarball, MANIFEST and SHA256SUMS) against
//!   `tar -czf` of the same staged tree (the image unpacked once), both at gzip level 6 (gzip's
//!   default, which `tar -czf` uses); target median ratio ≤ 1.5. Reports the image size.
//!
//! The components are fixtures of realistic sizes (zdb 1 MiB, zdbfs 2 MiB, zstor 24 MiB,
//! minio 100 MiB) made of this machine's own ELF binaries and libraries, so they compress like
//! real executables; our binaries are the release builds next to this benchmark.
//! Runs are interleaved (A, B, A, B, …) so that machine noise hits both sides alike.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 5;
const TARGET: f64 = 1.5;
const EPOCH: &str = "1700000000";
const MIB: usize = 1024 * 1024;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn timed(command: &mut Command) -> Duration {
    let started = Instant::now();
    let output = command.output().expect("run");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

/// Executable-like bytes: this machine's ELF files, concatenated in a fixed order.
fn executable_bytes(total: usize) -> Vec<u8> {
    let mut sources = Vec::new();
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/bin",
        "/usr/sbin",
        "/usr/lib",
    ] {
        let Ok(items) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = items.flatten().map(|i| i.path()).collect();
        files.sort();
        sources.extend(files);
    }
    let mut bytes = Vec::with_capacity(total);
    for path in sources {
        if bytes.len() >= total {
            break;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.len() < 4096 {
            continue;
        }
        let mut content = Vec::new();
        if std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut content))
            .is_ok()
            && content.starts_with(b"\x7fELF")
        {
            bytes.extend_from_slice(&content);
        }
    }
    // Not enough ELF files on this machine: vary the copies so gzip cannot just match them.
    let original = bytes.len().max(1);
    let mut round = 1u8;
    while bytes.len() < total {
        let chunk: Vec<u8> = bytes[..original.min(bytes.len())]
            .iter()
            .map(|b| b ^ round)
            .collect();
        if chunk.is_empty() {
            bytes.resize(total, 0);
        }
        bytes.extend_from_slice(&chunk);
        round = round.wrapping_add(1).max(1);
    }
    bytes.truncate(total);
    bytes
}

fn write_executable(path: &Path, bytes: &[u8]) {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn main() {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().to_path_buf();
    let qsfs_image = profile_dir.join("qsfs-image");
    for name in ["qsfs-image", "zdb-hook", "zstor_monitor", "qsfs-health"] {
        assert!(
            profile_dir.join(name).exists(),
            "{} is missing: cargo build --release --bins",
            profile_dir.join(name).display()
        );
    }
    // The product's package: the workspace root, two levels above this crate.
    let package = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = dir.path();

    let components = root.join("components");
    std::fs::create_dir_all(&components).unwrap();
    let sizes = [("zdb", 1), ("zdbfs", 2), ("zstor", 24), ("minio", 100)];
    let total: usize = sizes.iter().map(|(_, mib)| mib * MIB).sum();
    let bytes = executable_bytes(total);
    let mut offset = 0;
    for (name, mib) in sizes {
        write_executable(&components.join(name), &bytes[offset..offset + mib * MIB]);
        offset += mib * MIB;
    }

    // The product's units when they are there, otherwise a minimal set.
    let units = if package.join("units/qsfs.target").exists() {
        package.join("units")
    } else {
        let units = root.join("units");
        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(units.join("qsfs.target"), "[Unit]\nDescription=qsfs\n").unwrap();
        for entry in std::fs::read_dir(package.join("units")).unwrap().flatten() {
            std::fs::copy(entry.path(), units.join(entry.file_name())).unwrap();
        }
        units
    };
    let manifest = root.join("manifest.toml");
    let mut text = String::from("[image]\nname = \"qsfs\"\nversion = \"bench\"\n");
    for (name, _) in sizes {
        text.push_str(&format!(
            "\n[components.{name}]\nversion = \"bench\"\npath = \"{}\"\n",
            components.join(name).display()
        ));
    }
    text.push_str(&format!(
        "\n[ours]\ndir = \"{}\"\n\n[files]\nunits = \"{}\"\netc = \"{}\"\n",
        profile_dir.display(),
        units.display(),
        package.join("etc").display()
    ));
    std::fs::write(&manifest, text).unwrap();
    let site = package.join("image/site.example.toml");
    let out = root.join("out");
    let tarball = out.join("qsfs-bench-x86_64.tar.gz");

    let mut build = Command::new(&qsfs_image);
    build
        .arg("build")
        .arg("--offline")
        .arg("--manifest")
        .arg(&manifest)
        .arg("--site")
        .arg(&site)
        .arg("--output-dir")
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .stdout(Stdio::null());
    timed(&mut build);

    // The staged tree: the image unpacked once.
    let stage = root.join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    timed(
        Command::new("tar")
            .arg("-xpf")
            .arg(&tarball)
            .arg("-C")
            .arg(&stage),
    );
    let floor_tarball = root.join("floor.tar.gz");
    let mut floor = Command::new("tar");
    floor
        .arg("-czf")
        .arg(&floor_tarball)
        .arg("-C")
        .arg(&stage)
        .args(["etc", "var"]);

    timed(&mut floor);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        ours.push(timed(&mut build));
        theirs.push(timed(&mut floor));
    }
    let (ours, theirs) = (median(ours), median(theirs));
    let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
    let size = |path: &Path| std::fs::metadata(path).unwrap().len() as f64 / MIB as f64;
    let staged: u64 = walk_size(&stage);

    println!(
        "{:<40} {:>12} {:<22} {:>12} {:>8} {:>8}",
        "benchmark", "median", "floor", "median", "ratio", "target"
    );
    println!(
        "{:<40} {:>10.1}ms {:<22} {:>10.1}ms {:>8.2} {:>7}{}",
        format!(
            "qsfs-image build ({:.0} MiB staged)",
            staged as f64 / MIB as f64
        ),
        ours.as_secs_f64() * 1e3,
        "tar -czf (level 6)",
        theirs.as_secs_f64() * 1e3,
        ratio,
        format!("≤{TARGET}"),
        if ratio <= TARGET { "" } else { "  (missed)" }
    );
    println!(
        "image size: {:.1} MiB (tar -czf of the same tree: {:.1} MiB)",
        size(&tarball),
        size(&floor_tarball)
    );
    if ratio > TARGET {
        println!("the target was missed on this machine");
    }
}

fn walk_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            total += walk_size(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}
