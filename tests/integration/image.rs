//! `qsfs-image` end to end: builds from local component files (small executables: fixtures
//! for a packager), unpacks into a temporary root, verifies, tampers, upgrades, and checks that
//! every bad input has its own error and exit code and leaves no partial tarball.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const EPOCH: &str = "1700000000";
const KEY: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";
const SECRETS: &[&str] = &[KEY, "backend-pass-secret", "minio-secret-pass"];
const COMPONENTS: &[&str] = &["zdb", "zdbfs", "zstor", "minio"];
const OURS: &[&str] = &["zdb-hook", "zstor_monitor", "qsfs-health", "qsfs-image"];

/// A site settings file; `datasize` and `cache` vary between image versions.
fn site_text(datasize: &str, cache: &str) -> String {
    let mut text = format!(
        "[zstor]\nminimal_shards = 2\nexpected_shards = 3\nkey = \"{KEY}\"\npassword = \"backend-pass-secret\"\n"
    );
    for i in 1..=4 {
        text.push_str(&format!(
            "\n[[zstor.meta_backends]]\naddress = \"[2a02:1802:5e::{i}]:9900\"\nnamespace = \"meta-{i}\"\n"
        ));
    }
    text.push_str("\n[[zstor.groups]]\n");
    for i in 1..=3 {
        text.push_str(&format!(
            "\n[[zstor.groups.backends]]\naddress = \"10.0.0.{i}:9900\"\nnamespace = \"data-{i}\"\n"
        ));
    }
    text.push_str(&format!(
        "\n[zdb]\ndatasize = \"{datasize}\"\n\n[cache]\nmax_size = \"{cache}\"\n\n\
         [minio]\nroot_user = \"qsfs\"\nroot_password = \"minio-secret-pass\"\n"
    ));
    text
}

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A build directory: component files, our binaries, units, config templates, a manifest
/// taking every component from a local path, and site settings.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let fixture = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        let root = fixture.path();
        for sub in ["components", "ours", "units", "etc", "cache"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        for name in COMPONENTS {
            write_executable(
                &root.join("components").join(name),
                &format!("#!/bin/sh\necho '{name} fixture'\n"),
            );
        }
        for name in OURS {
            write_executable(
                &root.join("ours").join(name),
                &format!("#!/bin/sh\necho '{name} fixture'\n"),
            );
        }
        let units = root.join("units");
        std::fs::write(units.join("qsfs.target"), "[Unit]\nDescription=qsfs\n").unwrap();
        std::fs::write(
            units.join("qsfs-zdb.service"),
            "[Service]\nEnvironmentFile=/var/zdbfs/etc/qsfs.env\nExecStart=/var/zdbfs/bin/zdb\n",
        )
        .unwrap();
        std::fs::write(units.join("50-qsfs.preset"), "enable qsfs.target\n").unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("units/qsfs-config.service"),
            units.join("qsfs-config.service"),
        )
        .unwrap();
        std::fs::write(units.join("README"), "not a unit\n").unwrap();
        let etc = root.join("etc");
        std::fs::write(etc.join("qsfs.toml"), "# appliance settings\n").unwrap();
        std::fs::write(
            etc.join("monitor_config.toml"),
            "zdb_index_dir_path = \"/var/zdbfs/index\"\nzdb_data_dir_path = \"/var/zdbfs/data\"\n\
             zstor_config_path = \"/var/zdbfs/etc/credstore/zstor.toml\"\nzstor_bin_path = \"/var/zdbfs/bin/zstor\"\n",
        )
        .unwrap();
        fixture.write_manifest("1.0.0", &BTreeMap::new());
        fixture.write_site("32M", "1G");
        fixture
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn manifest(&self) -> PathBuf {
        self.path().join("manifest.toml")
    }

    fn site(&self) -> PathBuf {
        self.path().join("site.toml")
    }

    fn write_site(&self, datasize: &str, cache: &str) {
        std::fs::write(self.site(), site_text(datasize, cache)).unwrap();
    }

    /// Writes the manifest; `sources` replaces a component's `path = …` line.
    fn write_manifest(&self, version: &str, sources: &BTreeMap<&str, String>) {
        let mut text = format!("[image]\nname = \"qsfs\"\nversion = \"{version}\"\n");
        for name in COMPONENTS {
            let source = sources
                .get(name)
                .cloned()
                .unwrap_or_else(|| format!("path = \"components/{name}\""));
            text.push_str(&format!(
                "\n[components.{name}]\nversion = \"{name}-1\"\n{source}\n"
            ));
        }
        text.push_str("\n[ours]\ndir = \"ours\"\n\n[files]\nunits = \"units\"\netc = \"etc\"\n");
        std::fs::write(self.manifest(), text).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// [`Fixture::run`] with more environment variables, whose values must not be printed
    /// either (passwords).
    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_qsfs-image"))
            .args(args)
            .current_dir(self.path())
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("XDG_CACHE_HOME", self.path().join("cache"))
            .env_remove("QSFS_IMAGE_KEY_PASSWORD")
            .envs(env.iter().copied())
            .output()
            .expect("run qsfs-image");
        for stream in [&output.stdout, &output.stderr] {
            let text = String::from_utf8_lossy(stream);
            for secret in SECRETS.iter().chain(env.iter().map(|(_, value)| value)) {
                assert!(
                    !text.contains(secret),
                    "qsfs-image printed a secret:\n{text}"
                );
            }
        }
        output
    }

    /// `build --manifest … --site … -o <out> --offline` plus `extra`.
    fn build(&self, out: &str, extra: &[&str]) -> Output {
        let manifest = self.manifest();
        let site = self.site();
        let mut args = vec![
            "build",
            "--manifest",
            manifest.to_str().unwrap(),
            "--output-dir",
            out,
        ];
        if !extra.contains(&"--no-site") {
            args.extend(["--site", site.to_str().unwrap()]);
        }
        args.extend(extra.iter().filter(|a| **a != "--no-site"));
        self.run(&args)
    }

    fn tarball(&self, out: &str, version: &str) -> PathBuf {
        self.path()
            .join(out)
            .join(format!("qsfs-{version}-x86_64.tar.gz"))
    }

    /// A fresh directory to unpack into.
    fn root(&self, name: &str) -> PathBuf {
        let root = self.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        root
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// `tar -xzpf TARBALL -C ROOT`, as an operator would.
fn unpack(tarball: &Path, root: &Path) {
    let status = Command::new("tar")
        .arg("-xzpf")
        .arg(tarball)
        .arg("-C")
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success(), "tar -xzpf failed");
}

/// Files in `dir`, for "nothing was left behind".
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|items| {
            items
                .map(|i| i.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn build_unpack_verify_then_one_changed_byte_fails_naming_the_file() {
    let f = Fixture::new();
    let build = f.build("out", &["--offline"]);
    assert_code(&build, 0);
    let stdout = text(&build.stdout);
    assert!(stdout.contains("qsfs-1.0.0-x86_64.tar.gz"), "{stdout}");
    assert!(stdout.contains("secrets inside"), "{stdout}");
    let tarball = f.tarball("out", "1.0.0");
    assert_eq!(
        listing(&f.path().join("out")),
        ["SHA256SUMS", "qsfs-1.0.0-x86_64.tar.gz"]
    );

    let root = f.root("root");
    unpack(&tarball, &root);
    let root_arg = root.to_str().unwrap();
    // Unit files are copies in etc/systemd/system, not symlinks into /var.
    let unit = root.join("etc/systemd/system/qsfs.target");
    assert!(std::fs::symlink_metadata(&unit).unwrap().is_file());
    assert!(root
        .join("etc/systemd/system-preset/50-qsfs.preset")
        .is_file());
    assert!(!root.join("etc/systemd/system/README").exists());

    let install = f.run(&["install-config", "--root", root_arg]);
    assert_code(&install, 0);
    assert!(text(&install.stdout).contains("installed /var/zdbfs/etc/credstore/zstor.toml"));
    let zstor = root.join("var/zdbfs/etc/credstore/zstor.toml");
    let mode = std::fs::metadata(&zstor).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = qsfs::zstor::config::ZstorConfig::load(&zstor).unwrap();
    assert_eq!(loaded.expected_shards, 3);
    assert_code(&f.run(&["check-config", "--root", root_arg]), 0);

    let verify = f.run(&["verify", "--root", root_arg]);
    assert_code(&verify, 0);
    assert!(
        text(&verify.stdout).contains("0 failures"),
        "{}",
        text(&verify.stdout)
    );

    let zdb = root.join("var/zdbfs/bin/zdb");
    let mut bytes = std::fs::read(&zdb).unwrap();
    bytes[12] ^= 0x20;
    std::fs::write(&zdb, bytes).unwrap();
    write_executable(&root.join("var/zdbfs/bin/intruder"), "#!/bin/sh\n");
    std::fs::remove_file(root.join("etc/systemd/system/qsfs-zdb.service")).unwrap();
    let verify = f.run(&["verify", "--root", root_arg]);
    assert_code(&verify, 1);
    let report = text(&verify.stdout);
    assert!(
        report.contains("CHANGED   var/zdbfs/bin/zdb: sha256 "),
        "{report}"
    );
    assert!(
        report.contains("EXTRA     var/zdbfs/bin/intruder: executable not in the MANIFEST"),
        "{report}"
    );
    assert!(
        report.contains("MISSING   etc/systemd/system/qsfs-zdb.service"),
        "{report}"
    );
    assert!(report.contains("3 failures"), "{report}");

    let json = f.run(&["verify", "--root", root_arg, "--format", "json"]);
    assert_code(&json, 1);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["ok"], false);
    assert_eq!(value["findings"].as_array().unwrap().len(), 3);
}

#[test]
fn two_builds_are_byte_identical() {
    let f = Fixture::new();
    assert_code(&f.build("one", &["--offline"]), 0);
    assert_code(&f.build("two", &["--offline"]), 0);
    let one = std::fs::read(f.tarball("one", "1.0.0")).unwrap();
    let two = std::fs::read(f.tarball("two", "1.0.0")).unwrap();
    assert!(one == two, "the two tarballs differ");
    assert_eq!(
        &one[4..8],
        &[0, 0, 0, 0],
        "the gzip header has no timestamp"
    );
    assert_eq!(
        std::fs::read(f.path().join("one/SHA256SUMS")).unwrap(),
        std::fs::read(f.path().join("two/SHA256SUMS")).unwrap()
    );
    // The components' own paths are not recorded: moving them changes nothing.
    std::fs::rename(f.path().join("components"), f.path().join("elsewhere")).unwrap();
    let sources: BTreeMap<&str, String> = COMPONENTS
        .iter()
        .map(|n| (*n, format!("path = \"elsewhere/{n}\"")))
        .collect();
    f.write_manifest("1.0.0", &sources);
    assert_code(&f.build("three", &["--offline"]), 0);
    assert!(one == std::fs::read(f.tarball("three", "1.0.0")).unwrap());
}

#[test]
fn tar_listing_shows_root_owner_sorted_paths_one_mtime_and_private_secrets() {
    let f = Fixture::new();
    assert_code(&f.build("out", &["--offline"]), 0);
    let listing = Command::new("tar")
        .arg("-tvzf")
        .arg(f.tarball("out", "1.0.0"))
        .output()
        .unwrap();
    assert!(listing.status.success());
    let listing = text(&listing.stdout);
    let mut paths = Vec::new();
    let mut times = std::collections::BTreeSet::new();
    let mut modes = BTreeMap::new();
    for line in listing.lines() {
        // -rw------- 0/0  208 2023-11-14 22:13 var/zdbfs/etc/credstore/zstor.toml.default
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 6, "{line}");
        assert_eq!(fields[1], "0/0", "{line}");
        times.insert(format!("{} {}", fields[3], fields[4]));
        let path = fields[5].trim_end_matches('/').to_string();
        modes.insert(path.clone(), fields[0].to_string());
        paths.push(path);
    }
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "paths are sorted");
    assert_eq!(times.len(), 1, "one mtime: {times:?}");
    assert_eq!(
        modes["var/zdbfs/etc/credstore/zstor.toml.default"],
        "-rw-------"
    );
    assert_eq!(
        modes["var/zdbfs/etc/credstore/minio-root-password.default"],
        "-rw-------"
    );
    assert_eq!(modes["var/zdbfs/etc/credstore"], "drwx------");
    assert_eq!(modes["var/zdbfs/etc/qsfs.env.default"], "-rw-r--r--");
    assert_eq!(modes["var/zdbfs/spool"], "drwx------");
    assert_eq!(modes["var/zdbfs/state"], "drwx------");
    for name in COMPONENTS.iter().chain(OURS) {
        assert_eq!(modes[&format!("var/zdbfs/bin/{name}")], "-rwxr-xr-x");
    }
    assert_eq!(
        modes["etc/systemd/system/qsfs-config.service"],
        "-rw-r--r--"
    );
    assert!(modes.contains_key("var/zdbfs/MANIFEST"));
    assert!(!modes.contains_key("etc") && !modes.contains_key("var"));
}

#[test]
fn verify_a_tarball_against_its_manifest_and_sha256sums() {
    let f = Fixture::new();
    assert_code(&f.build("out", &["--offline"]), 0);
    let tarball = f.tarball("out", "1.0.0");
    let verify = f.run(&["verify", tarball.to_str().unwrap()]);
    assert_code(&verify, 0);

    // Repacked with one changed byte: the MANIFEST names the file.
    let mut entries = read_entries(&tarball);
    let zstor = entries
        .iter_mut()
        .find(|e| e.name == b"var/zdbfs/bin/zstor")
        .unwrap();
    zstor.body[15] ^= 0x01;
    let evil = f.path().join("evil/qsfs-1.0.0-x86_64.tar.gz");
    write_entries(&entries, &evil);
    std::fs::remove_file(f.path().join("evil/SHA256SUMS")).unwrap();
    let verify = f.run(&["verify", evil.to_str().unwrap()]);
    assert_code(&verify, 1);
    let report = text(&verify.stdout);
    assert!(
        report.contains("CHANGED   var/zdbfs/bin/zstor: sha256 "),
        "{report}"
    );
    assert!(report.contains("NOTE"), "no SHA256SUMS beside it: {report}");

    // Repacked with `tar -czf … etc var`: the entries for etc/ and var/ would change the modes
    // of system directories when unpacked, so they are refused.
    let root = f.root("repack");
    unpack(&tarball, &root);
    let status = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=ustar",
            "-czf",
        ])
        .arg(&evil)
        .arg("-C")
        .arg(&root)
        .args(["etc", "var"])
        .status()
        .unwrap();
    assert!(status.success());
    let verify = f.run(&["verify", evil.to_str().unwrap()]);
    assert_code(&verify, 86);
    let stderr = text(&verify.stderr);
    assert!(stderr.contains("\n  etc/: outside var/zdbfs/"), "{stderr}");
    assert!(stderr.contains("\n  var/: outside var/zdbfs/"), "{stderr}");

    // The original, against a SHA256SUMS that does not match it.
    std::fs::write(
        f.path().join("out/SHA256SUMS"),
        format!("{}  qsfs-1.0.0-x86_64.tar.gz\n", "0".repeat(64)),
    )
    .unwrap();
    let verify = f.run(&["verify", tarball.to_str().unwrap()]);
    assert_code(&verify, 1);
    assert!(text(&verify.stdout).contains("SHA256SUMS beside it says 0000"));

    // Not an image at all.
    let bytes = std::fs::read(&tarball).unwrap();
    let cut = f.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_code(&f.run(&["verify", cut.to_str().unwrap()]), 65);
    assert_code(&f.run(&["verify", "/nonexistent.tar.gz"]), 66);
}

#[test]
fn inspect_shows_components_versions_build_time_and_secrets() {
    let f = Fixture::new();
    assert_code(&f.build("out", &["--offline"]), 0);
    let tarball = f.tarball("out", "1.0.0");
    let inspect = f.run(&["inspect", tarball.to_str().unwrap()]);
    assert_code(&inspect, 0);
    let shown = text(&inspect.stdout);
    assert!(
        shown.contains("image        qsfs 1.0.0 (x86_64)"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("qsfs         {}", env!("CARGO_PKG_VERSION"))),
        "{shown}"
    );
    assert!(
        shown.contains("built        2023-11-14T22:13:20Z"),
        "{shown}"
    );
    assert!(shown.contains("secrets      inside: "), "{shown}");
    for name in COMPONENTS {
        assert!(shown.contains(&format!("{name}-1")), "{shown}");
    }
    let json = f.run(&["inspect", tarball.to_str().unwrap(), "--format", "json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["image"]["secrets"], true);
    assert_eq!(value["image"]["source_date_epoch"], 1_700_000_000);
    assert_eq!(value["components"][2]["name"], "zstor");
    assert_eq!(value["components"][2]["origin"], "local file");
}

/// A tiny HTTP server for the download path: `GET /<name>` answers the bytes stored under
/// `<name>`, anything else 404.
fn serve(files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let body = files
                .lock()
                .unwrap()
                .get(path.trim_start_matches('/'))
                .cloned();
            let _ = match body {
                Some(body) => stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|_| stream.write_all(&body)),
                None => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    format!("http://{address}")
}

#[test]
fn downloads_are_pinned_by_the_lock_file_and_served_from_the_cache() {
    let f = Fixture::new();
    let files = Arc::new(Mutex::new(BTreeMap::new()));
    files.lock().unwrap().insert(
        "zdb".to_string(),
        b"#!/bin/sh\necho downloaded zdb\n".to_vec(),
    );
    let base = serve(files.clone());
    let mut sources = BTreeMap::new();
    sources.insert("zdb", format!("url = \"{base}/zdb\""));
    f.write_manifest("1.0.0", &sources);

    // First build: downloads zdb and records its sha256 in manifest.lock.
    let first = f.build("one", &[]);
    assert_code(&first, 0);
    let lock = std::fs::read_to_string(f.path().join("manifest.lock")).unwrap();
    assert!(lock.contains(&format!("url = \"{base}/zdb\"")), "{lock}");
    assert!(
        text(&first.stderr).contains("recorded sha256"),
        "{}",
        text(&first.stderr)
    );

    // Offline: the cache serves it, and the image is the same.
    let offline = f.build("two", &["--offline"]);
    assert_code(&offline, 0);
    assert!(
        std::fs::read(f.tarball("one", "1.0.0")).unwrap()
            == std::fs::read(f.tarball("two", "1.0.0")).unwrap()
    );
    let inspect = f.run(&["inspect", f.tarball("two", "1.0.0").to_str().unwrap()]);
    assert!(text(&inspect.stdout).contains(&format!("{base}/zdb")));

    // Upstream changes the file under the same URL: the lock file catches it.
    std::fs::remove_dir_all(f.path().join("cache")).unwrap();
    files.lock().unwrap().insert(
        "zdb".to_string(),
        b"#!/bin/sh\necho something else\n".to_vec(),
    );
    let changed = f.build("three", &[]);
    assert_code(&changed, 82);
    let stderr = text(&changed.stderr);
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");
    assert!(
        stderr.contains("manifest.lock") && stderr.contains("actual"),
        "{stderr}"
    );
    assert_eq!(listing(&f.path().join("three")), Vec::<String>::new());

    // A download that fails names the URL and how to supply the file.
    sources.insert("zdb", format!("url = \"{base}/gone\""));
    f.write_manifest("1.0.0", &sources);
    let failed = f.build("four", &[]);
    assert_code(&failed, 84);
    let stderr = text(&failed.stderr);
    assert!(stderr.contains(&format!("{base}/gone")), "{stderr}");
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    assert!(stderr.contains("--component zdb=PATH"), "{stderr}");
}

#[test]
fn a_sha256_mismatch_is_a_hard_error_showing_both_hashes() {
    let f = Fixture::new();
    let wrong = "ab".repeat(32);
    let mut sources = BTreeMap::new();
    sources.insert(
        "zstor",
        format!("path = \"components/zstor\"\nsha256 = \"{wrong}\""),
    );
    f.write_manifest("1.0.0", &sources);
    let output = f.build("out", &["--offline"]);
    assert_code(&output, 82);
    let stderr = text(&output.stderr);
    let actual = qsfs_sha256(&f.path().join("components/zstor"));
    assert!(stderr.contains(&format!("expected {wrong}")), "{stderr}");
    assert!(stderr.contains(&format!("actual   {actual}")), "{stderr}");
    assert!(stderr.contains("component `zstor`"), "{stderr}");
    assert_eq!(
        listing(&f.path().join("out")),
        Vec::<String>::new(),
        "no partial tarball"
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn qsfs_sha256(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    text(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn offline_missing_components_are_all_listed_with_how_to_supply_them() {
    let f = Fixture::new();
    let mut sources = BTreeMap::new();
    sources.insert("zdb", "url = \"https://example.invalid/zdb\"".to_string());
    sources.insert(
        "minio",
        format!(
            "url = \"https://example.invalid/minio\"\nsha256 = \"{}\"",
            "cd".repeat(32)
        ),
    );
    f.write_manifest("1.0.0", &sources);
    let output = f.build("out", &["--offline"]);
    assert_code(&output, 83);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("2 components are missing"), "{stderr}");
    for name in ["zdb", "minio"] {
        assert!(
            stderr.contains(&format!("--component {name}=PATH")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("download https://example.invalid/{name}")),
            "{stderr}"
        );
    }
    assert!(stderr.contains("not in the cache"), "{stderr}");
    assert!(stderr.contains("not known yet"), "{stderr}");
    assert_eq!(listing(&f.path().join("out")), Vec::<String>::new());

    // --component supplies one; the other is still missing.
    let zdb = f.path().join("components/zdb");
    let output = f.build(
        "out",
        &[
            "--offline",
            "--component",
            &format!("zdb={}", zdb.display()),
        ],
    );
    assert_code(&output, 83);
    assert!(text(&output.stderr).contains("1 component is missing"));
    let minio = f.path().join("components/minio");
    let output = f.build(
        "out",
        &[
            "--offline",
            "--component",
            &format!("zdb={}", zdb.display()),
            "--component",
            &format!("minio={}", minio.display()),
        ],
    );
    assert_code(&output, 0);
}

#[test]
fn an_upgrade_keeps_an_edited_config_and_updates_unedited_ones() {
    let f = Fixture::new();
    assert_code(&f.build("v1", &["--offline"]), 0);
    let root = f.root("vm");
    let root_arg = root.to_str().unwrap();
    unpack(&f.tarball("v1", "1.0.0"), &root);
    assert_code(&f.run(&["install-config", "--root", root_arg]), 0);

    let etc = root.join("var/zdbfs/etc");
    let monitor = etc.join("monitor_config.toml");
    let mut edited = std::fs::read_to_string(&monitor).unwrap();
    edited = edited.replace(
        "max_zdb_data_dir_size = 1024",
        "max_zdb_data_dir_size = 4096",
    );
    edited.push_str("# the operator raised the cache limit\n");
    std::fs::write(&monitor, &edited).unwrap();

    // v2 changes the defaults of both monitor_config.toml and qsfs.env.
    f.write_manifest("2.0.0", &BTreeMap::new());
    f.write_site("16M", "2G");
    assert_code(&f.build("v2", &["--offline"]), 0);
    unpack(&f.tarball("v2", "2.0.0"), &root);
    assert_eq!(
        std::fs::read_to_string(&monitor).unwrap(),
        edited,
        "tar kept the edit"
    );

    let install = f.run(&["install-config", "--root", root_arg]);
    assert_code(&install, 0);
    let said = text(&install.stdout);
    assert!(
        said.contains("kept your edited /var/zdbfs/etc/monitor_config.toml"),
        "{said}"
    );
    assert!(said.contains("updated /var/zdbfs/etc/qsfs.env"), "{said}");
    assert_eq!(std::fs::read_to_string(&monitor).unwrap(), edited);
    let env = std::fs::read_to_string(etc.join("qsfs.env")).unwrap();
    assert!(env.contains(&format!("ZDB_DATASIZE={}", 16 << 20)), "{env}");
    assert!(
        std::fs::read_to_string(etc.join("monitor_config.toml.default"))
            .unwrap()
            .contains("max_zdb_data_dir_size = 2048")
    );

    let verify = f.run(&["verify", "--root", root_arg]);
    assert_code(&verify, 0);
    let report = text(&verify.stdout);
    assert!(
        report.contains("MODIFIED  var/zdbfs/etc/monitor_config.toml"),
        "{report}"
    );
    let inspect = f.run(&["inspect", "--root", root_arg]);
    assert!(text(&inspect.stdout).contains("qsfs 2.0.0"));

    // Running the oneshot again is quiet and still keeps the edit.
    let again = f.run(&["install-config", "--root", root_arg]);
    assert_code(&again, 0);
    assert_eq!(text(&again.stdout), "");
    assert_eq!(std::fs::read_to_string(&monitor).unwrap(), edited);
}

#[test]
fn an_image_without_secrets_keeps_the_units_from_starting_until_they_are_supplied() {
    let f = Fixture::new();
    let build = f.build("out", &["--offline", "--no-site"]);
    assert_code(&build, 0);
    assert!(text(&build.stderr).contains("without secrets"));
    let tarball = f.tarball("out", "1.0.0");
    let inspect = f.run(&["inspect", tarball.to_str().unwrap()]);
    assert!(text(&inspect.stdout).contains("secrets      none inside"));

    let root = f.root("vm");
    let root_arg = root.to_str().unwrap();
    unpack(&tarball, &root);
    let etc = root.join("var/zdbfs/etc");
    assert!(!etc.join("credstore/zstor.toml.default").exists());
    assert!(!etc.join("credstore/minio-root-password.default").exists());
    assert_code(&f.run(&["install-config", "--root", root_arg]), 0);
    assert!(etc.join("qsfs.env").exists() && etc.join("monitor_config.toml").exists());

    let check = f.run(&["check-config", "--root", root_arg]);
    assert_code(&check, 78);
    let lines: Vec<String> = text(&check.stderr).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].contains("credstore/zstor.toml is missing: the credential zstor.toml"));
    assert!(lines[1].contains("credstore/minio-root-user is missing: a credential of MinIO"));
    assert!(lines[2].contains("credstore/minio-root-password is missing"));
    let check = f.run(&["check-config", "--root", root_arg, "minio"]);
    assert_code(&check, 78);
    assert_eq!(text(&check.stderr).lines().count(), 2);
    assert_code(
        &f.run(&["check-config", "--root", root_arg, "env", "appliance"]),
        0,
    );

    // The operator supplies them from site settings (they differ from the installed monitor
    // config, hence --force).
    let site = f.site();
    let configure = f.run(&[
        "configure",
        "--root",
        root_arg,
        "--site",
        site.to_str().unwrap(),
    ]);
    assert_code(&configure, 2);
    assert!(text(&configure.stderr).contains("--force"));
    let configure = f.run(&[
        "configure",
        "--root",
        root_arg,
        "--site",
        site.to_str().unwrap(),
        "--force",
    ]);
    assert_code(&configure, 0);
    assert_code(&f.run(&["check-config", "--root", root_arg]), 0);
    assert!(
        text(&configure.stdout).contains("stored plain (mode 0600 in a 0700 directory)"),
        "{}",
        text(&configure.stdout)
    );
    let mode = std::fs::metadata(etc.join("credstore/minio-root-password"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_code(&f.run(&["verify", "--root", root_arg]), 0);
}

#[test]
fn bad_inputs_each_have_their_error_and_exit_code_and_leave_nothing() {
    let f = Fixture::new();
    let out = f.path().join("out");
    let manifest = f.manifest();
    let manifest_arg = manifest.to_str().unwrap().to_string();
    let expect = |args: &[&str], code: i32, needle: &str| {
        let output = f.run(args);
        assert_code(&output, code);
        let stderr = text(&output.stderr);
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
        assert_eq!(
            listing(&out),
            Vec::<String>::new(),
            "left behind after {args:?}"
        );
    };
    let build = ["build", "--offline", "--output-dir", "out", "--manifest"];
    let with = |extra: &[&'static str]| -> Vec<String> {
        build
            .iter()
            .map(|s| s.to_string())
            .chain([manifest_arg.clone()])
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };

    // The manifest: missing, unreadable TOML, unknown component.
    expect(
        &["build", "--manifest", "nope.toml", "-o", "out"],
        66,
        "nope.toml: file not found",
    );
    let good = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, "[image\nname = ").unwrap();
    expect(&strs(&with(&[])), 78, "manifest.toml:1:");
    std::fs::write(
        &manifest,
        good.replace("[components.minio]", "[components.minion]"),
    )
    .unwrap();
    expect(
        &strs(&with(&[])),
        80,
        "key `components.minion`: unknown component",
    );
    std::fs::write(&manifest, &good).unwrap();
    expect(
        &strs(&with(&["--component", "zstorr=/bin/true"])),
        80,
        "unknown component `zstorr`",
    );

    // Component paths: absent, not executable.
    std::fs::remove_file(f.path().join("components/zdbfs")).unwrap();
    expect(&strs(&with(&[])), 81, "component `zdbfs`");
    expect(&strs(&with(&[])), 81, "does not exist");
    std::fs::write(f.path().join("components/zdbfs"), "#!/bin/sh\n").unwrap();
    expect(&strs(&with(&[])), 81, "is not executable");
    std::fs::set_permissions(
        f.path().join("components/zdbfs"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::remove_file(f.path().join("ours/qsfs-health")).unwrap();
    expect(&strs(&with(&[])), 81, "component `qsfs-health`");
    write_executable(&f.path().join("ours/qsfs-health"), "#!/bin/sh\n");

    // Site settings: checked before anything is written (no download, no lock file).
    std::fs::write(
        f.site(),
        site_text("32M", "1G").replace("expected_shards = 3", "expected_shards = 1"),
    )
    .unwrap();
    let site = f.site();
    let site_arg = site.to_str().unwrap().to_string();
    let args = with(&[]);
    let mut args = strs(&args);
    args.extend(["--site", &site_arg]);
    expect(
        &args,
        78,
        "key `zstor.expected_shards`: must be at least zstor.minimal_shards (2)",
    );
    assert!(!f.path().join("manifest.lock").exists());
    f.write_site("32M", "1G");

    // Units without qsfs.target.
    std::fs::remove_file(f.path().join("units/qsfs.target")).unwrap();
    expect(&strs(&with(&[])), 78, "has no qsfs.target");
    std::fs::write(f.path().join("units/qsfs.target"), "[Unit]\n").unwrap();

    // A bad --component argument and a bad SOURCE_DATE_EPOCH are usage errors.
    expect(
        &strs(&with(&["--component", "zdb"])),
        2,
        "expected NAME=PATH",
    );
    expect(
        &strs(&with(&["--source-date-epoch", "yesterday"])),
        2,
        "SOURCE_DATE_EPOCH",
    );

    // And after all that, the same inputs build.
    assert_code(&f.run(&strs(&with(&[]))), 0);
}

/// One tar entry, for tarballs the builder never writes (`tar::Header::set_path` refuses `..`,
/// so names are copied into the header as they are).
struct RawEntry {
    name: Vec<u8>,
    kind: tar::EntryType,
    mode: u32,
    body: Vec<u8>,
    link: Option<Vec<u8>>,
    /// Changes the header last (before its checksum), for headers `tar::Header` never makes.
    tweak: fn(&mut tar::Header),
}

impl RawEntry {
    fn file(name: &str, mode: u32, body: &[u8]) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind: tar::EntryType::Regular,
            mode,
            body: body.to_vec(),
            link: None,
            tweak: |_| {},
        }
    }

    fn other(name: &str, kind: tar::EntryType, link: Option<&str>) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o755,
            body: Vec::new(),
            link: link.map(|l| l.as_bytes().to_vec()),
            tweak: |_| {},
        }
    }
}

fn read_entries(tarball: &Path) -> Vec<RawEntry> {
    let file = std::fs::File::open(tarball).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut entries = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut body).unwrap();
        entries.push(RawEntry {
            name: entry.path_bytes().into_owned(),
            kind: entry.header().entry_type(),
            mode: entry.header().mode().unwrap(),
            body,
            link: entry.link_name_bytes().map(|l| l.into_owned()),
            tweak: |_| {},
        });
    }
    entries
}

/// Writes `entries` as a gzipped tarball at `target`, and its line in `SHA256SUMS` beside it
/// (what someone who repacks a tarball would do).
fn write_entries(entries: &[RawEntry], target: &Path) {
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let file = std::fs::File::create(target).unwrap();
    let gzip = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut builder = tar::Builder::new(gzip);
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.as_ustar_mut().unwrap().name[..entry.name.len()].copy_from_slice(&entry.name);
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_size(entry.body.len() as u64);
        if let Some(link) = &entry.link {
            header.as_ustar_mut().unwrap().linkname[..link.len()].copy_from_slice(link);
        }
        (entry.tweak)(&mut header);
        header.set_cksum();
        builder.append(&header, &entry.body[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
    let name = target.file_name().unwrap().to_str().unwrap();
    std::fs::write(
        target.with_file_name("SHA256SUMS"),
        format!("{}  {name}\n", qsfs_sha256(target)),
    )
    .unwrap();
}

/// The entries of a built tarball plus `extra`; with `listed`, the extra files are also in the
/// `MANIFEST` (with their true size and sha256), so that only the entry rules can catch them.
fn repack(f: &Fixture, extra: Vec<RawEntry>, listed: bool) -> PathBuf {
    let mut entries = read_entries(&f.tarball("out", "1.0.0"));
    if listed {
        let manifest = entries
            .iter_mut()
            .find(|e| e.name == b"var/zdbfs/MANIFEST")
            .unwrap();
        let mut text = String::from_utf8(manifest.body.clone()).unwrap();
        for e in extra.iter().filter(|e| e.kind == tar::EntryType::Regular) {
            let dir = tempfile::tempdir().unwrap();
            let body = dir.path().join("body");
            std::fs::write(&body, &e.body).unwrap();
            text.push_str(&format!(
                "\n[[entries]]\npath = {:?}\ntype = \"file\"\nmode = \"{:04o}\"\nsize = {}\nsha256 = \"{}\"\nrole = \"config\"\n",
                String::from_utf8_lossy(&e.name),
                e.mode,
                e.body.len(),
                qsfs_sha256(&body)
            ));
        }
        manifest.body = text.into_bytes();
    }
    entries.extend(extra);
    let target = f.path().join("evil/qsfs-1.0.0-x86_64.tar.gz");
    write_entries(&entries, &target);
    target
}

#[test]
fn entries_outside_the_image_escaping_or_not_plain_are_refused_before_the_manifest_is_trusted() {
    let f = Fixture::new();
    assert_code(&f.build("out", &["--offline"]), 0);

    // The reproduction: both entries are in the tarball's own MANIFEST and SHA256SUMS
    // matches, so only the entry rules can refuse them.
    let escaping = "var/zdbfs/bin/../../../root/.ssh/authorized_keys";
    let evil = repack(
        &f,
        vec![
            RawEntry::file("etc/cron.d/x", 0o644, b"* * * * * root /bin/sh -c id\n"),
            RawEntry::file(escaping, 0o600, b"ssh-ed25519 AAAA attacker\n"),
        ],
        true,
    );
    let verify = f.run(&["verify", evil.to_str().unwrap()]);
    assert_code(&verify, 86);
    let stderr = text(&verify.stderr);
    assert!(
        stderr.contains(
            "etc/cron.d/x: outside var/zdbfs/, etc/systemd/system/ and etc/systemd/system-preset/"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{escaping}: has a `..` component")),
        "{stderr}"
    );
    assert!(stderr.contains("2 entries"), "{stderr}");
    assert!(!text(&verify.stdout).contains("0 failures"));

    // Each other kind of entry that must never be unpacked, each with its reason.
    let cases = [
        (
            RawEntry::file("/etc/passwd", 0o644, b"root::0:0::/:/bin/sh\n"),
            "/etc/passwd: is an absolute path",
        ),
        (
            RawEntry::other("var/zdbfs/bin/sh", tar::EntryType::Symlink, Some("/bin/sh")),
            "var/zdbfs/bin/sh: is a symlink (to /bin/sh)",
        ),
        (
            RawEntry::other(
                "var/zdbfs/bin/zdb2",
                tar::EntryType::Link,
                Some("var/zdbfs/bin/zdb"),
            ),
            "var/zdbfs/bin/zdb2: is a hard link (to var/zdbfs/bin/zdb)",
        ),
        (
            RawEntry::other("var/zdbfs/fifo", tar::EntryType::Fifo, None),
            "var/zdbfs/fifo: is a fifo",
        ),
        (
            RawEntry::other("etc/", tar::EntryType::Directory, None),
            "etc/: outside var/zdbfs/",
        ),
        (
            RawEntry::other("etc/systemd/system/", tar::EntryType::Directory, None),
            "etc/systemd/system/: outside var/zdbfs/",
        ),
        (
            RawEntry::file("var/zdbfs/bin/./zdb", 0o755, b"#!/bin/sh\n"),
            "var/zdbfs/bin/./zdb: has a `.` or empty component",
        ),
        (
            RawEntry::file("var/zdbfs/bin/su", 0o4755, b"#!/bin/sh\n"),
            "var/zdbfs/bin/su: mode 4755 has a setuid, setgid or sticky bit",
        ),
        (
            RawEntry::file("var/zdbfs/bin/x\nverify: 0 failures", 0o755, b"#!/bin/sh\n"),
            "var/zdbfs/bin/x\\nverify: 0 failures: has a control character",
        ),
    ];
    for (entry, reason) in cases {
        let evil = repack(&f, vec![entry], true);
        let verify = f.run(&["verify", evil.to_str().unwrap()]);
        assert_code(&verify, 86);
        let stderr = text(&verify.stderr);
        assert!(stderr.contains(reason), "{reason:?} not in:\n{stderr}");
    }

    // A MANIFEST listing a path outside the image: checking a tree against it would read files
    // outside the root.
    let root = f.root("tree");
    unpack(&f.tarball("out", "1.0.0"), &root);
    let manifest = root.join("var/zdbfs/MANIFEST");
    let mut listed = std::fs::read_to_string(&manifest).unwrap();
    listed.push_str("\n[[entries]]\npath = \"var/zdbfs/../../etc/shadow\"\ntype = \"file\"\nmode = \"0640\"\nsize = 1\nsha256 = \"00\"\nrole = \"config\"\n");
    std::fs::write(&manifest, listed).unwrap();
    let verify = f.run(&["verify", "--root", root.to_str().unwrap()]);
    assert_code(&verify, 86);
    assert!(
        text(&verify.stderr)
            .contains("var/zdbfs/../../etc/shadow (in the MANIFEST): has a `..` component"),
        "{}",
        text(&verify.stderr)
    );

    // Inside the image but not in its MANIFEST: an extra entry, a failure.
    let evil = repack(
        &f,
        vec![RawEntry::file("var/zdbfs/bin/extra", 0o755, b"#!/bin/sh\n")],
        false,
    );
    let verify = f.run(&["verify", evil.to_str().unwrap()]);
    assert_code(&verify, 1);
    let report = text(&verify.stdout);
    assert!(
        report.contains("EXTRA     var/zdbfs/bin/extra: file not in the MANIFEST"),
        "{report}"
    );
}

/// A copy of `out` (tarball, SHA256SUMS and its signature) in `name`, and its tarball.
fn copy_out(f: &Fixture, name: &str) -> PathBuf {
    let dir = f.root(name);
    for file in listing(&f.path().join("out")) {
        std::fs::copy(f.path().join("out").join(&file), dir.join(&file)).unwrap();
    }
    dir.join("qsfs-1.0.0-x86_64.tar.gz")
}

/// A `keys` directory in the fixture and the secret and public key paths in it.
fn key_paths(f: &Fixture) -> (PathBuf, PathBuf, PathBuf) {
    let keys = f.root("keys");
    let (secret, public) = (keys.join("qsfs.key"), keys.join("qsfs.pub"));
    (keys, secret, public)
}

/// `qsfs-image keygen` for these key paths, with `extra` flags.
fn keygen_args<'a>(secret: &'a str, public: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["keygen", "--secret-key", secret, "--public-key", public];
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_signed_image_verifies_with_its_key_and_is_refused_when_anything_changed() {
    let f = Fixture::new();
    let (keys, secret, public) = key_paths(&f);
    let (secret_arg, public_arg) = (secret.to_str().unwrap(), public.to_str().unwrap());
    let keygen = keygen_args(secret_arg, public_arg, &["--no-password"]);
    assert_code(&f.run(&keygen), 0);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&secret), 0o600);
    assert_eq!(mode(&public), 0o644);
    assert_eq!(
        listing(&keys),
        ["qsfs.key", "qsfs.pub"],
        "no temporary file left"
    );
    let secret_bytes = std::fs::read(&secret).unwrap();
    // Never replaces a key.
    let again = f.run(&keygen);
    assert_code(&again, 2);
    assert!(
        text(&again.stderr).contains(&format!("{secret_arg} exists")),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read(&secret).unwrap(), secret_bytes);

    let build = f.build("out", &["--offline", "--sign", secret_arg]);
    assert_code(&build, 0);
    assert!(
        text(&build.stdout).contains("signed SHA256SUMS"),
        "{}",
        text(&build.stdout)
    );
    assert_eq!(
        listing(&f.path().join("out")),
        [
            "SHA256SUMS",
            "SHA256SUMS.minisig",
            "qsfs-1.0.0-x86_64.tar.gz"
        ]
    );
    let tarball = f.tarball("out", "1.0.0");
    let tarball_arg = tarball.to_str().unwrap();
    let verify = f.run(&["verify", "--key", public_arg, tarball_arg]);
    assert_code(&verify, 0);
    let report = text(&verify.stdout);
    assert!(report.contains("origin: signed by key "), "{report}");
    let json = f.run(&[
        "verify",
        "--key",
        public_arg,
        tarball_arg,
        "--format",
        "json",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["origin"]["checked"], "signed");

    // Without --key it still verifies, and says that nothing vouches for the origin.
    let verify = f.run(&["verify", tarball_arg]);
    assert_code(&verify, 0);
    assert!(
        text(&verify.stdout).contains("origin NOT checked"),
        "{}",
        text(&verify.stdout)
    );

    // The tarball changed after signing.
    let changed = copy_out(&f, "changed");
    let mut bytes = std::fs::read(&changed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&changed, &bytes).unwrap();
    let verify = f.run(&["verify", "--key", public_arg, changed.to_str().unwrap()]);
    assert_code(&verify, 88);
    let stderr = text(&verify.stderr);
    assert!(stderr.contains(changed.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("the signed SHA256SUMS says"), "{stderr}");

    // ... and SHA256SUMS edited to match it: the signature no longer verifies.
    std::fs::write(
        changed.with_file_name("SHA256SUMS"),
        format!("{}  qsfs-1.0.0-x86_64.tar.gz\n", qsfs_sha256(&changed)),
    )
    .unwrap();
    let verify = f.run(&["verify", "--key", public_arg, changed.to_str().unwrap()]);
    assert_code(&verify, 87);
    let stderr = text(&verify.stderr);
    assert!(
        stderr.contains("SHA256SUMS.minisig: does not verify"),
        "{stderr}"
    );

    // Signed by another key.
    let other = keys.join("other.pub");
    assert_code(
        &f.run(&[
            "keygen",
            "--secret-key",
            keys.join("other.key").to_str().unwrap(),
            "--public-key",
            other.to_str().unwrap(),
            "--no-password",
        ]),
        0,
    );
    let verify = f.run(&["verify", "--key", other.to_str().unwrap(), tarball_arg]);
    assert_code(&verify, 87);
    let stderr = text(&verify.stderr);
    assert!(
        stderr.contains("SHA256SUMS.minisig: made by key "),
        "{stderr}"
    );
    assert!(stderr.contains("not by the key in"), "{stderr}");

    // No signature at all.
    let unsigned = copy_out(&f, "unsigned");
    std::fs::remove_file(unsigned.with_file_name("SHA256SUMS.minisig")).unwrap();
    let verify = f.run(&["verify", "--key", public_arg, unsigned.to_str().unwrap()]);
    assert_code(&verify, 87);
    let stderr = text(&verify.stderr);
    assert!(
        stderr.contains("SHA256SUMS.minisig: does not exist"),
        "{stderr}"
    );

    // A build without --sign does not leave the old signature beside a new SHA256SUMS.
    let build = f.build("out", &["--offline"]);
    assert_code(&build, 0);
    assert!(
        text(&build.stdout).contains("removed the stale"),
        "{}",
        text(&build.stdout)
    );
    assert_eq!(
        listing(&f.path().join("out")),
        ["SHA256SUMS", "qsfs-1.0.0-x86_64.tar.gz"]
    );
}

#[test]
fn a_password_protected_key_takes_its_password_from_the_environment() {
    let f = Fixture::new();
    let (keys, secret, public) = key_paths(&f);
    let (secret_arg, public_arg) = (secret.to_str().unwrap(), public.to_str().unwrap());
    let keygen = keygen_args(secret_arg, public_arg, &[]);
    let password = [("QSFS_IMAGE_KEY_PASSWORD", "correct horse battery")];
    let wrong = [("QSFS_IMAGE_KEY_PASSWORD", "wrong horse battery")];

    // No password given and no terminal to ask on: refused, nothing written.
    let refused = f.run(&keygen);
    assert_code(&refused, 2);
    assert!(
        text(&refused.stderr).contains("QSFS_IMAGE_KEY_PASSWORD"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(listing(&keys), Vec::<String>::new());
    assert_code(&f.run_env(&keygen, &password), 0);
    let text_of_key = std::fs::read_to_string(&secret).unwrap();
    assert!(text_of_key.contains("password-protected"), "{text_of_key}");

    // Wrong or no password: refused before anything is built.
    for env in [&wrong[..], &[]] {
        let build = f.run_env(
            &[
                "build",
                "--manifest",
                f.manifest().to_str().unwrap(),
                "-o",
                "out",
                "--offline",
                "--sign",
                secret_arg,
            ],
            env,
        );
        assert_code(&build, 78);
        let stderr = text(&build.stderr);
        assert!(stderr.contains(secret_arg), "{stderr}");
        assert!(
            stderr.contains("wrong password") || stderr.contains("set QSFS_IMAGE_KEY_PASSWORD"),
            "{stderr}"
        );
        assert_eq!(listing(&f.path().join("out")), Vec::<String>::new());
    }
    let build = f.run_env(
        &[
            "build",
            "--manifest",
            f.manifest().to_str().unwrap(),
            "-o",
            "out",
            "--offline",
            "--sign",
            secret_arg,
        ],
        &password,
    );
    assert_code(&build, 0);
    let tarball = f.tarball("out", "1.0.0");
    assert_code(
        &f.run(&["verify", "--key", public_arg, tarball.to_str().unwrap()]),
        0,
    );
}

/// The lowercase hex sha256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every entry of a tarball: path → (mode, content).
fn tar_entries(tarball: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    read_entries(tarball)
        .into_iter()
        .map(|e| {
            let name = String::from_utf8(e.name).unwrap();
            (name.trim_end_matches('/').to_string(), (e.mode, e.body))
        })
        .collect()
}

/// A tarball built with site settings holds secrets: it is written 0600, its secret files are
/// 0600 inside, and neither its MANIFEST nor the install record on the VM carries a hash or a
/// size of a secret (the MinIO password could be guessed offline from the hash of its fixed
/// template). Verify still checks what it can of them: presence, type, mode, owner.
#[test]
fn an_image_with_secrets_is_private_and_records_nothing_to_guess_them_by() {
    let f = Fixture::new();
    assert_code(&f.build("out", &["--offline"]), 0);
    let tarball = f.tarball("out", "1.0.0");
    let mode = std::fs::metadata(&tarball).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the tarball holds secrets");
    let entries = tar_entries(&tarball);
    let manifest_text = String::from_utf8(entries["var/zdbfs/MANIFEST"].1.clone()).unwrap();
    let manifest: toml::Value = toml::from_str(&manifest_text).unwrap();
    let listed = manifest["entries"].as_array().unwrap();
    let secrets: Vec<&toml::Value> = listed
        .iter()
        .filter(|e| e["role"].as_str() == Some("secret"))
        .collect();
    let secret_paths: Vec<&str> = secrets
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        secret_paths,
        [
            "var/zdbfs/etc/credstore/minio-root-password.default",
            "var/zdbfs/etc/credstore/minio-root-user.default",
            "var/zdbfs/etc/credstore/zstor.toml.default"
        ]
    );
    for entry in &secrets {
        let path = entry["path"].as_str().unwrap();
        assert_eq!(entry["mode"].as_str(), Some("0600"), "{path}");
        assert!(entry.get("sha256").is_none(), "{path}: {entry}");
        assert!(entry.get("size").is_none(), "{path}: {entry}");
        let (mode, content) = &entries[path];
        assert_eq!(mode & 0o777, 0o600, "{path}");
        assert!(!manifest_text.contains(&sha256_hex(content)), "{path}");
    }
    // The monitor config may hold the eVDC password: private as well.
    assert_eq!(
        entries["var/zdbfs/etc/monitor_config.toml.default"].0 & 0o777,
        0o600
    );
    assert_code(&f.run(&["verify", tarball.to_str().unwrap()]), 0);

    let root = f.root("vm");
    let root_arg = root.to_str().unwrap();
    unpack(&tarball, &root);
    assert_code(&f.run(&["install-config", "--root", root_arg]), 0);
    let etc = root.join("var/zdbfs/etc");
    let record_text = std::fs::read_to_string(etc.join(".installed-defaults")).unwrap();
    let record: toml::Value = toml::from_str(&record_text).unwrap();
    let installed = record["installed"].as_table().unwrap();
    for name in [
        "credstore/minio-root-user",
        "credstore/minio-root-password",
        "credstore/zstor.toml",
    ] {
        let file = name.rsplit('/').next().unwrap();
        assert!(!installed.contains_key(file), "{record_text}");
        let content = std::fs::read(etc.join(name)).unwrap();
        assert!(!record_text.contains(&sha256_hex(&content)), "{name}");
        let mode = std::fs::metadata(etc.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let store = std::fs::metadata(etc.join("credstore")).unwrap();
    assert_eq!(
        store.permissions().mode() & 0o777,
        0o700,
        "the credential store"
    );
    let monitor = etc.join("monitor_config.toml");
    assert_eq!(
        std::fs::metadata(&monitor).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_code(&f.run(&["check-config", "--root", root_arg]), 0);
    assert_code(&f.run(&["verify", "--root", root_arg]), 0);

    // A secret readable by others, or one that is gone, fails verify, naming it.
    let minio = etc.join("credstore/minio-root-password.default");
    std::fs::set_permissions(&minio, std::fs::Permissions::from_mode(0o644)).unwrap();
    let verify = f.run(&["verify", "--root", root_arg]);
    assert_code(&verify, 1);
    assert!(
        text(&verify.stdout)
            .contains("CHANGED   var/zdbfs/etc/credstore/minio-root-password.default: mode 0644"),
        "{}",
        text(&verify.stdout)
    );
    std::fs::remove_file(&minio).unwrap();
    let verify = f.run(&["verify", "--root", root_arg]);
    assert_code(&verify, 1);
    assert!(
        text(&verify.stdout)
            .contains("MISSING   var/zdbfs/etc/credstore/minio-root-password.default"),
        "{}",
        text(&verify.stdout)
    );

    // check-config guards the monitor config like the other secret files.
    std::fs::set_permissions(&monitor, std::fs::Permissions::from_mode(0o644)).unwrap();
    let check = f.run(&["check-config", "--root", root_arg, "monitor"]);
    assert_code(&check, 78);
    let said = text(&check.stderr);
    assert!(
        said.contains(&format!("{} holds secrets", monitor.display()))
            && said.contains("chmod 600"),
        "{said}"
    );

    // An image without site settings holds no secret: an ordinary 0644 tarball.
    assert_code(&f.build("public", &["--offline", "--no-site"]), 0);
    let public = f.tarball("public", "1.0.0");
    let mode = std::fs::metadata(&public).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

/// A gzip member holding a tar archive of one file `name` (no end marker when `end` is false).
fn gzip_member(name: &str, body: &[u8], end: bool) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_path(name).unwrap();
    header.set_mode(0o644);
    header.set_size(body.len() as u64);
    header.set_cksum();
    tar.append(&header, body).unwrap();
    let mut bytes = tar.into_inner().unwrap();
    if !end {
        bytes.truncate(bytes.len() - 1024);
    }
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&bytes).unwrap();
    gzip.finish().unwrap()
}

/// The tarball at `target` rewritten by `change` (and its line in `SHA256SUMS` updated).
fn rewrite(f: &Fixture, name: &str, change: impl FnOnce(Vec<u8>) -> Vec<u8>) -> PathBuf {
    let target = copy_out(f, name);
    std::fs::write(&target, change(std::fs::read(&target).unwrap())).unwrap();
    std::fs::write(
        target.with_file_name("SHA256SUMS"),
        format!("{}  qsfs-1.0.0-x86_64.tar.gz\n", qsfs_sha256(&target)),
    )
    .unwrap();
    target
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(bytes).unwrap();
    gzip.finish().unwrap()
}

/// A tar archive without its end marker (the zero blocks at its end).
fn without_end(mut tar: Vec<u8>) -> Vec<u8> {
    while tar.ends_with(&[0; 512]) {
        tar.truncate(tar.len() - 512);
    }
    tar
}

#[test]
fn anything_after_the_first_gzip_member_or_the_tar_end_marker_is_refused() {
    let f = Fixture::new();
    assert_code(&f.build("out", &["--offline"]), 0);

    // GNU tar unpacks a second gzip member too (when the first has no tar end marker).
    let evil = rewrite(&f, "two-members", |bytes| {
        let mut bytes = gzip(&without_end(gunzip(&bytes)));
        bytes.extend(gzip_member("etc/cron.d/evil", b"* * * * * root id\n", true));
        bytes
    });
    let root = f.root("unpacked");
    unpack(&evil, &root);
    assert!(root.join("etc/cron.d/evil").exists(), "GNU tar reads it");
    let verify = f.run(&["verify", evil.to_str().unwrap()]);
    assert_code(&verify, 65);
    let stderr = text(&verify.stderr);
    assert!(
        stderr.contains(&format!("{}: not a readable qsfs image", evil.display()))
            && stderr.contains("no tar end marker"),
        "{stderr}"
    );
    // Any byte after the first member, even behind an intact end marker.
    let evil = rewrite(&f, "second-member", |mut bytes| {
        bytes.extend(gzip_member("etc/cron.d/evil", b"* * * * * root id\n", true));
        bytes
    });
    let verify = f.run(&["verify", evil.to_str().unwrap()]);
    assert_code(&verify, 65);
    let stderr = text(&verify.stderr);
    assert!(stderr.contains("after its first gzip member"), "{stderr}");

    // Inside the one gzip member: data after the tar end marker, or no end marker.
    type Change = fn(Vec<u8>) -> Vec<u8>;
    let cases: [(&str, Change, &str); 2] = [
        (
            "after-end",
            |mut tar| {
                let member = gunzip(&gzip_member("etc/cron.d/evil", b"x\n", true));
                tar.extend(member);
                tar
            },
            "after the tar end marker",
        ),
        ("no-end", without_end, "no tar end marker"),
    ];
    for (name, change, why) in cases {
        let evil = rewrite(&f, name, |bytes| gzip(&change(gunzip(&bytes))));
        let verify = f.run(&["verify", evil.to_str().unwrap()]);
        assert_code(&verify, 65);
        let stderr = text(&verify.stderr);
        assert!(stderr.contains(why), "{why:?} not in:\n{stderr}");
    }
}

#[test]
fn headers_the_builder_never_writes_are_refused_long_names_pax_other_formats_and_owner_names() {
    let f = Fixture::new();
    assert_code(&f.build("out", &["--offline"]), 0);
    let script = |name: &str| RawEntry::file(name, 0o755, b"#!/bin/sh\n");
    let header = |name: &str, kind, body: &[u8]| RawEntry {
        kind,
        body: body.to_vec(),
        ..RawEntry::file(name, 0o644, b"")
    };
    let cases = [
        (
            vec![
                header(
                    "././@LongLink",
                    tar::EntryType::GNULongName,
                    b"var/zdbfs/bin/long\0",
                ),
                script("var/zdbfs/bin/short"),
            ],
            "././@LongLink: is a GNU long-name header",
        ),
        (
            vec![
                header(
                    "var/zdbfs/PaxHeaders/x",
                    tar::EntryType::XHeader,
                    b"31 path=var/zdbfs/bin/pax-name\n",
                ),
                script("var/zdbfs/bin/x"),
            ],
            "var/zdbfs/PaxHeaders/x: is a PAX extended header",
        ),
        (
            vec![RawEntry {
                // GNU tar reads the prefix of a header with ustar's magic, whatever its version.
                tweak: |h| {
                    let u = h.as_ustar_mut().unwrap();
                    u.prefix[..10].copy_from_slice(b"etc/cron.d");
                    u.version = *b" \0";
                },
                ..script("var/zdbfs/bin/prefixed")
            }],
            "var/zdbfs/bin/prefixed: is not a ustar header (magic \"ustar\\x00\", version \" \\x00\")",
        ),
        (
            vec![RawEntry {
                // GNU tar, as root, takes the owner from the name when that user exists.
                tweak: |h| h.set_username("nobody").unwrap(),
                ..script("var/zdbfs/bin/owned")
            }],
            "var/zdbfs/bin/owned: has a user or group name (\"nobody\", \"\")",
        ),
    ];
    for (entries, reason) in cases {
        let evil = repack(&f, entries, true);
        let verify = f.run(&["verify", evil.to_str().unwrap()]);
        let stderr = text(&verify.stderr);
        assert!(stderr.contains(reason), "{reason:?} not in:\n{stderr}");
        assert_code(&verify, 86);
    }
}

#[test]
fn only_qsfs_units_and_presets_may_be_shipped_into_systemd_directories() {
    let f = Fixture::new();
    assert_code(&f.build("out", &["--offline"]), 0);
    let conf = |name: &str| RawEntry::file(name, 0o644, b"[Service]\nExecStartPre=/bin/id\n");
    let refused = [
        "etc/systemd/system/sshd.service.d/x.conf",
        "etc/systemd/system/getty@.service.d/autologin.conf",
        "etc/systemd/system/multi-user.target.wants/evil.service",
        "etc/systemd/system/evil.service",
        "etc/systemd/system-preset/00-evil.preset",
        "etc/systemd/system-preset/50-qsfs.preset.d/x",
    ];
    let evil = repack(&f, refused.iter().map(|n| conf(n)).collect(), true);
    let verify = f.run(&["verify", evil.to_str().unwrap()]);
    let stderr = text(&verify.stderr);
    assert_code(&verify, 86);
    for name in refused {
        assert!(
            stderr.contains(&format!("\n  {name}: not a qsfs unit")),
            "{name} not in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("{} entries", refused.len())),
        "{stderr}"
    );
}

#[test]
fn a_signed_build_signs_only_its_own_line_and_an_unsigned_one_keeps_the_others() {
    let f = Fixture::new();
    let keys = f.root("keys");
    let (secret, public) = (keys.join("qsfs.key"), keys.join("qsfs.pub"));
    let (secret, public) = (secret.to_str().unwrap(), public.to_str().unwrap());
    let keygen = ["keygen", "--secret-key", secret, "--public-key", public];
    assert_code(&f.run(&[&keygen[..], &["--no-password"]].concat()), 0);
    // A line someone left in out/SHA256SUMS (or a tarball of an earlier build).
    let out = f.root("out");
    let planted = format!("{}  evil.tar.gz\n", "1".repeat(64));
    std::fs::write(out.join("evil.tar.gz"), b"not signed by anyone\n").unwrap();
    std::fs::write(out.join("SHA256SUMS"), &planted).unwrap();

    assert_code(&f.build("out", &["--offline", "--sign", secret]), 0);
    let tarball = f.tarball("out", "1.0.0");
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert_eq!(
        sums,
        format!("{}  qsfs-1.0.0-x86_64.tar.gz\n", qsfs_sha256(&tarball)),
        "a signature vouches only for this build"
    );
    assert_code(
        &f.run(&["verify", "--key", public, tarball.to_str().unwrap()]),
        0,
    );

    // Unsigned: other lines are kept, as before.
    std::fs::write(out.join("SHA256SUMS"), format!("{sums}{planted}")).unwrap();
    assert_code(&f.build("out", &["--offline"]), 0);
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert!(sums.contains(&planted), "{sums}");
}

#[test]
fn image_build_never_signs_the_demo_image() {
    // image/build in a copy of the checkout, with stand-ins for cargo and qsfs-image that
    // record their arguments (the upstream components "cannot be downloaded": exit 84).
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("image/build");
    std::fs::create_dir_all(dir.path().join("image")).unwrap();
    std::fs::copy(&script, dir.path().join("image/build")).unwrap();
    let log = dir.path().join("calls");
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    write_executable(&dir.path().join("bin/cargo"), "#!/bin/sh\nexit 0\n");
    write_executable(
        &dir.path().join("target/release/qsfs-image"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> {}\ncase \"$*\" in *demo.toml*) exit 0;; esac\nexit 84\n",
            log.display()
        ),
    );
    let path = format!(
        "{}:{}",
        dir.path().join("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let output = Command::new(dir.path().join("image/build"))
        .env("PATH", path)
        .env("QSFS_IMAGE_SIGN_KEY", "/keys/qsfs.key")
        .output()
        .unwrap();
    assert_code(&output, 0);
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].contains("--sign /keys/qsfs.key"), "{calls:?}");
    assert!(
        calls[1].contains("demo.toml") && !calls[1].contains("--sign"),
        "{calls:?}"
    );
    assert!(
        text(&output.stderr).contains("The DEMO image is not signed"),
        "{}",
        text(&output.stderr)
    );
}

/// `preflight --format json` on `root`: the report and the process's exit code, which is the
/// first failed check's.
fn preflight(f: &Fixture, root: &Path) -> (serde_json::Value, i32) {
    let out = f.run(&[
        "preflight",
        "--root",
        root.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("preflight JSON: {e}: {}", text(&out.stdout)));
    let code = out.status.code().unwrap();
    let first_failure = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|c| c["exit_code"].as_i64())
        .unwrap_or(0);
    assert_eq!(i64::from(code), first_failure, "{report:#}");
    assert_eq!(report["exit_code"], code);
    (report, code)
}

/// The outcome of check `name`: (status, exit code or 0, message).
fn outcome(report: &serde_json::Value, name: &str) -> (String, i64, String) {
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report:#}"));
    (
        c["status"].as_str().unwrap().to_string(),
        c["exit_code"].as_i64().unwrap_or(0),
        c["message"].as_str().unwrap().to_string(),
    )
}

/// The checks that read the image (its programs, qsfs.env, the MANIFEST) judge the tree under
/// --root: before install-config ran they read the shipped default; a taken S3 port, a clock
/// before the build or a garbled config fails with its code naming the file; a missing one is
/// `unknown`, not guessed.
#[test]
fn preflight_judges_an_unpacked_tree_by_its_configs_and_names_a_bad_one() {
    let f = Fixture::new();
    assert_code(&f.build("out", &[]), 0);
    let root = f.root("root");
    unpack(&f.tarball("out", "1.0.0"), &root);
    let etc = root.join("var/zdbfs/etc");

    let (report, _) = preflight(&f, &root);
    assert_eq!(report["checks"].as_array().unwrap().len(), 6, "{report:#}");
    let (status, _, message) = outcome(&report, "libraries");
    assert_eq!(status, "ok", "{message}");
    assert!(message.contains("8 programs"), "{message}");
    let (status, _, message) = outcome(&report, "space");
    assert_eq!(status, "ok", "{message}");
    assert!(
        message.contains("4 x ZDB_DATASIZE (32.0 MiB") && message.contains("qsfs.env.default"),
        "before install-config, the shipped default: {message}"
    );
    let (status, _, message) = outcome(&report, "clock");
    assert_eq!(status, "ok", "{message}");
    assert!(message.contains("2023-11-14T22:13:20Z"), "{message}");

    // An installed qsfs.env wins; a port something else listens on fails and names it.
    let default = std::fs::read_to_string(etc.join("qsfs.env.default")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let address = default
        .lines()
        .find(|l| l.starts_with("MINIO_ADDRESS="))
        .unwrap()
        .to_string();
    let installed = default.replace(&address, &format!("MINIO_ADDRESS=127.0.0.1:{port}"));
    std::fs::write(etc.join("qsfs.env"), &installed).unwrap();
    let (report, _) = preflight(&f, &root);
    let (status, code, message) = outcome(&report, "s3-port");
    assert_eq!((status.as_str(), code), ("failed", 94), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{port}"))
            && message.contains(etc.join("qsfs.env").to_str().unwrap())
            && message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    drop(listener);
    let (report, _) = preflight(&f, &root);
    assert_eq!(outcome(&report, "s3-port").0, "ok", "{report:#}");

    // A garbled qsfs.env: the checks that need it fail with 96, naming the file and the key.
    std::fs::write(
        etc.join("qsfs.env"),
        installed.replace("ZDB_DATASIZE=", "ZDB_DATASIZE=lots"),
    )
    .unwrap();
    let (report, _) = preflight(&f, &root);
    let (status, code, message) = outcome(&report, "space");
    assert_eq!((status.as_str(), code), ("failed", 96), "{message}");
    assert!(
        message.contains(etc.join("qsfs.env").to_str().unwrap())
            && message.contains("ZDB_DATASIZE"),
        "{message}"
    );

    // Neither qsfs.env nor its default: unknown, saying which files are missing.
    std::fs::remove_file(etc.join("qsfs.env")).unwrap();
    std::fs::remove_file(etc.join("qsfs.env.default")).unwrap();
    let (report, _) = preflight(&f, &root);
    for check in ["space", "s3-port"] {
        let (status, _, message) = outcome(&report, check);
        assert_eq!(status, "unknown", "{message}");
        assert!(message.contains("qsfs.env.default"), "{message}");
    }

    // A MANIFEST built in the future: the clock is behind (95); a garbled one is named (96).
    let manifest = root.join("var/zdbfs/MANIFEST");
    let original = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        original.contains("source_date_epoch = 1700000000"),
        "{original}"
    );
    std::fs::write(
        &manifest,
        original.replace(
            "source_date_epoch = 1700000000",
            "source_date_epoch = 32503680000",
        ),
    )
    .unwrap();
    let (report, _) = preflight(&f, &root);
    let (status, code, message) = outcome(&report, "clock");
    assert_eq!((status.as_str(), code), ("failed", 95), "{message}");
    assert!(message.contains("timedatectl"), "{message}");
    std::fs::write(&manifest, "schema = \"not a number\"\n").unwrap();
    let (report, _) = preflight(&f, &root);
    let (status, code, message) = outcome(&report, "clock");
    assert_eq!((status.as_str(), code), ("failed", 96), "{message}");
    assert!(message.contains(manifest.to_str().unwrap()), "{message}");

    // The text format: one line per check.
    let out = f.run(&["preflight", "--root", root.to_str().unwrap()]);
    let lines = text(&out.stdout);
    assert_eq!(lines.lines().count(), 6, "{lines}");
    assert!(lines.contains("FAILED (96)  clock"), "{lines}");
}
