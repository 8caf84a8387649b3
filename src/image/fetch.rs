//! Finding every binary that goes into an image, each verified by sha256.
//!
//! A third-party component comes from, in this order: `--component NAME=PATH`; the
//! manifest's `path`; the cache; a download of the manifest's `url`. A download streams into
//! the cache (`$XDG_CACHE_HOME/qsfs-image`, else `~/.cache/qsfs-image`) with a progress bar
//! and is verified against the manifest's `sha256`, or the lock file's; a file with neither is
//! recorded in the lock file by its first download. Cached files are stored by their sha256
//! and re-hashed when used. `--offline` uses only the cache and local paths.
//!
//! Every component that cannot be found is reported in one error, each with how to supply it;
//! a sha256 mismatch is a hard error showing both hashes.
//!
//! Our own binaries come from `cargo build --release` of this package, or a directory.

use super::fsutil::{check_executable, sha256_file, HashingReader};
use super::lock::{LockFile, Locked};
use super::manifest::{Component, ComponentSource, Manifest, Ours};
use super::{Error, Missing, COMPONENTS, OURS};
use crate::fsutil::{Durability, TempFile};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One binary ready to go into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Component or binary name (`zdb`, `zdb-hook`, …).
    pub name: String,
    /// Its version.
    pub version: String,
    /// The local file with its content.
    pub file: PathBuf,
    /// The sha256 of that content.
    pub sha256: String,
    /// Where it came from, as recorded in the image's `MANIFEST`.
    pub origin: Origin,
}

/// Where a binary came from. Local paths are not recorded, so that the same inputs give the
/// same image wherever they sit on the build machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Downloaded from this URL (or taken from the cache of such a download).
    Url(String),
    /// A local file (the manifest's `path` or `--component`).
    Local,
    /// Built from this package.
    Built,
}

impl Origin {
    /// The text recorded in the `MANIFEST`.
    pub fn describe(&self) -> String {
        match self {
            Origin::Url(url) => url.clone(),
            Origin::Local => "local file".to_string(),
            Origin::Built => "built from this package".to_string(),
        }
    }
}

/// How to fetch.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Use only the cache and local paths.
    pub offline: bool,
    /// The cache directory (default [`default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// `--component NAME=PATH` overrides, third-party or ours.
    pub overrides: BTreeMap<String, PathBuf>,
    /// `--ours-dir`: take our binaries from here instead of the manifest's `[ours]`.
    pub ours_dir: Option<PathBuf>,
}

/// Parses `--component NAME=PATH`.
pub fn parse_override(arg: &str) -> Result<(String, PathBuf), Error> {
    let Some((name, path)) = arg.split_once('=') else {
        return Err(Error::Usage(format!(
            "--component {arg}: expected NAME=PATH, such as --component zstor=/root/zstor_v2"
        )));
    };
    if !COMPONENTS.contains(&name) && !OURS.contains(&name) {
        return Err(Error::UnknownComponent(format!(
            "--component {arg}: unknown component `{name}` (known: {}, {})",
            COMPONENTS.join(", "),
            OURS.join(", ")
        )));
    }
    if path.is_empty() {
        return Err(Error::Usage(format!(
            "--component {arg}: the path is empty"
        )));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

/// `$XDG_CACHE_HOME/qsfs-image`, else `$HOME/.cache/qsfs-image`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("qsfs-image")
}

/// Resolves the four third-party components. Downloads record new hashes in `lock`.
pub fn components(
    manifest: &Manifest,
    lock: &mut LockFile,
    options: &FetchOptions,
) -> Result<Vec<Resolved>, Error> {
    let cache = options.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let mut resolved = Vec::new();
    let mut missing = Vec::new();
    for component in &manifest.components {
        if let Some(path) = options.overrides.get(&component.name) {
            resolved.push(local(component, path, None, manifest)?);
            continue;
        }
        match &component.source {
            ComponentSource::Path(path) => resolved.push(local(
                component,
                path,
                component.sha256.as_deref(),
                manifest,
            )?),
            ComponentSource::Url(url) => {
                match remote(component, url, manifest, lock, &cache, options.offline)? {
                    Ok(r) => resolved.push(r),
                    Err(m) => missing.push(m),
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(resolved)
    } else {
        Err(Error::Missing(missing))
    }
}

fn local(
    component: &Component,
    path: &Path,
    pinned: Option<&str>,
    manifest: &Manifest,
) -> Result<Resolved, Error> {
    check_executable(path).map_err(|problem| Error::BadPath {
        name: component.name.clone(),
        path: path.to_path_buf(),
        problem,
    })?;
    let (sha256, _) = sha256_file(path)?;
    if let Some(expected) = pinned {
        if expected != sha256 {
            return Err(Error::ChecksumMismatch {
                name: component.name.clone(),
                what: path.display().to_string(),
                pinned_by: format!("sha256 in {}", manifest.path.display()),
                expected: expected.to_string(),
                actual: sha256,
            });
        }
    }
    Ok(Resolved {
        name: component.name.clone(),
        version: component.version.clone(),
        file: path.to_path_buf(),
        sha256,
        origin: Origin::Local,
    })
}

/// `Ok(Ok(_))` found, `Ok(Err(_))` missing (reported with the others), `Err` a hard error.
fn remote(
    component: &Component,
    url: &str,
    manifest: &Manifest,
    lock: &mut LockFile,
    cache: &Path,
    offline: bool,
) -> Result<Result<Resolved, Missing>, Error> {
    let (expected, pinned_by) = match (&component.sha256, lock.get(&component.name, url)) {
        (Some(sha), _) => (
            Some(sha.clone()),
            format!("sha256 in {}", manifest.path.display()),
        ),
        (None, Some(sha)) => (Some(sha.to_string()), lock.path().display().to_string()),
        (None, None) => (None, String::new()),
    };
    let resolved = |file: PathBuf, sha256: String| Resolved {
        name: component.name.clone(),
        version: component.version.clone(),
        file,
        sha256,
        origin: Origin::Url(url.to_string()),
    };
    let how = |extra: &str| {
        format!(
            "supply it with --component {name}=PATH, or `path = \"…\"` under [components.{name}] in {}{extra}",
            manifest.path.display(),
            name = component.name
        )
    };

    if let Some(expected) = &expected {
        let cached = cache.join("sha256").join(expected);
        if cached.is_file() {
            let (actual, _) = sha256_file(&cached)?;
            if &actual == expected {
                return Ok(Ok(resolved(cached, actual)));
            }
            // A corrupt cache entry: drop it and fetch again.
            let _ = std::fs::remove_file(&cached);
        }
    }
    if offline {
        let reason = if expected.is_some() {
            format!(
                "not in the cache ({}) and --offline was given",
                cache.display()
            )
        } else {
            format!(
                "its sha256 is not known yet (no `sha256` in the manifest, no entry in {}), so \
                 the cache cannot hold it, and --offline was given",
                lock.path().display()
            )
        };
        return Ok(Err(Missing {
            name: component.name.clone(),
            version: component.version.clone(),
            reason,
            download_failed: false,
            how: how(&format!(
                ", or run once without --offline to download {url}"
            )),
        }));
    }

    eprintln!(
        "qsfs-image: downloading {} {} from {url}",
        component.name, component.version
    );
    let (temp, actual) = match download(url, cache, &component.name) {
        Ok(done) => done,
        Err(message) => {
            return Ok(Err(Missing {
                name: component.name.clone(),
                version: component.version.clone(),
                reason: format!("downloading {url} failed: {message}"),
                download_failed: true,
                how: how(&format!(" (download {url} yourself, or retry later)")),
            }))
        }
    };
    if let Some(expected) = &expected {
        if &actual != expected {
            return Err(Error::ChecksumMismatch {
                name: component.name.clone(),
                what: url.to_string(),
                pinned_by,
                expected: expected.clone(),
                actual,
            });
        }
    }
    let target = cache.join("sha256").join(&actual);
    temp.persist_to(&target, Durability::Durable)
        .map_err(|e| Error::io(&target, e))?;
    if expected.is_none() {
        lock.record(Locked {
            name: component.name.clone(),
            version: component.version.clone(),
            url: url.to_string(),
            sha256: actual.clone(),
        })?;
        eprintln!(
            "qsfs-image: recorded sha256 {actual} of {} in {}",
            component.name,
            lock.path().display()
        );
    }
    Ok(Ok(resolved(target, actual)))
}

/// Downloads `url` into a temporary file of the cache; returns it (synced) and its sha256.
fn download(url: &str, cache: &Path, name: &str) -> Result<(TempFile, String), String> {
    let blobs = cache.join("sha256");
    std::fs::create_dir_all(&blobs)
        .map_err(|e| format!("cannot create the cache {}: {e}", blobs.display()))?;
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .user_agent(format!("qsfs-image/{}", env!("CARGO_PKG_VERSION")))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut response = agent.get(url).call().map_err(describe_http_error)?;
    let length = response.body().content_length();
    let mut temp =
        TempFile::create(&blobs.join(format!("{name}.part")), 0o644).map_err(|e| e.to_string())?;
    let bar = progress_bar(length, name);
    let mut reader = HashingReader::new(bar.wrap_read(response.body_mut().as_reader()));
    let copied = std::io::copy(&mut reader, temp.file());
    bar.finish_and_clear();
    let size = copied.map_err(|e| format!("transfer interrupted: {e}"))?;
    if let Some(expected) = length {
        if size != expected {
            return Err(format!("got {size} bytes, the server announced {expected}"));
        }
    }
    Ok((temp, reader.finish()))
}

fn describe_http_error(error: ureq::Error) -> String {
    match error {
        ureq::Error::StatusCode(code) => format!("the server answered HTTP {code}"),
        ureq::Error::HostNotFound => "host not found (no network or DNS?)".to_string(),
        ureq::Error::Io(e) => format!("{e} (no network, or no route to the host?)"),
        other => other.to_string(),
    }
}

fn progress_bar(length: Option<u64>, name: &str) -> indicatif::ProgressBar {
    let bar = match length {
        Some(len) => indicatif::ProgressBar::new(len).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_message(name.to_string());
    bar
}

/// Resolves our binaries: `--component` overrides, else `--ours-dir`, else the manifest's
/// `[ours]` (a directory, or `cargo build --release` of the package, run with the image's
/// `SOURCE_DATE_EPOCH`).
pub fn ours(
    manifest: &Manifest,
    options: &FetchOptions,
    epoch: u64,
) -> Result<Vec<Resolved>, Error> {
    let version = env!("CARGO_PKG_VERSION").to_string();
    let needed: Vec<&str> = OURS
        .iter()
        .copied()
        .filter(|name| !options.overrides.contains_key(*name))
        .collect();
    let source = match &options.ours_dir {
        Some(dir) => Ours::Dir(dir.clone()),
        None => manifest.ours.clone(),
    };
    let (mut found, origin) = match (&source, needed.is_empty()) {
        (_, true) => (BTreeMap::new(), Origin::Local),
        (Ours::Dir(dir), false) => (
            needed
                .iter()
                .map(|name| (name.to_string(), dir.join(name)))
                .collect(),
            Origin::Local,
        ),
        (Ours::Package(package), false) => (cargo_build(package, &needed, epoch)?, Origin::Built),
    };
    let mut resolved = Vec::new();
    for name in OURS {
        let (path, origin) = match options.overrides.get(*name) {
            Some(path) => (path.clone(), Origin::Local),
            None => match found.remove(*name) {
                Some(path) => (path, origin.clone()),
                None => {
                    return Err(Error::Build(format!(
                        "no binary `{name}` was found for the image"
                    )))
                }
            },
        };
        check_executable(&path).map_err(|problem| Error::BadPath {
            name: name.to_string(),
            path: path.clone(),
            problem,
        })?;
        let (sha256, _) = sha256_file(&path)?;
        resolved.push(Resolved {
            name: name.to_string(),
            version: version.clone(),
            file: path,
            sha256,
            origin,
        });
    }
    Ok(resolved)
}

/// Variables (prefixes) that cargo sets for the binary it runs, not for builds.
const RUN_ONLY_VARS: &[&str] = &[
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
];

/// `cargo build --release --locked --bins` in `package`; returns the executables by name.
fn cargo_build(
    package: &Path,
    needed: &[&str],
    epoch: u64,
) -> Result<BTreeMap<String, PathBuf>, Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest_path = package.join("Cargo.toml");
    eprintln!(
        "qsfs-image: building our binaries: cargo build --release --locked --bins --manifest-path {}",
        manifest_path.display()
    );
    let mut command = Command::new(&cargo);
    // Under `cargo run`, cargo sets variables describing *this* binary's package; build scripts
    // that track them (ring tracks CARGO_MANIFEST_DIR) would rebuild on every change between a
    // nested and a plain build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if RUN_ONLY_VARS.iter().any(|prefix| key.starts_with(prefix)) {
            command.env_remove(key.as_ref());
        }
    }
    let mut child = command
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args([
            "build",
            "--release",
            "--locked",
            "--bins",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            Error::Build(format!(
                "cannot run {}: {e} (install Rust, or pass --ours-dir DIR)",
                Path::new(&cargo).display()
            ))
        })?;
    let mut found = BTreeMap::new();
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let name = message["target"]["name"].as_str().unwrap_or_default();
        if let Some(executable) = message["executable"].as_str() {
            found.insert(name.to_string(), PathBuf::from(executable));
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::Build(format!("waiting for cargo: {e}")))?;
    if !status.success() {
        return Err(Error::Build(format!(
            "cargo build in {} exited with {status} (see its output above)",
            package.display()
        )));
    }
    for name in needed {
        if !found.contains_key(*name) {
            return Err(Error::Build(format!(
                "cargo build in {} produced no binary `{name}`",
                package.display()
            )));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::exit;
    use std::io::Read;

    #[test]
    fn overrides_parse_and_name_unknown_components() {
        let (name, path) = parse_override("zstor=/root/zstor_v2").unwrap();
        assert_eq!(
            (name.as_str(), path.as_path()),
            ("zstor", Path::new("/root/zstor_v2"))
        );
        assert!(parse_override("zdb-hook=/x").is_ok());
        let err = parse_override("zstorr=/x").unwrap_err();
        assert_eq!(err.exit_code(), exit::UNKNOWN_COMPONENT);
        assert!(
            err.to_string().contains("unknown component `zstorr`"),
            "{err}"
        );
        assert_eq!(
            parse_override("zstor").unwrap_err().exit_code(),
            exit::USAGE
        );
    }

    #[test]
    fn cache_dir_follows_xdg() {
        // Only checks the shape: the environment is shared between tests.
        assert!(default_cache_dir().ends_with("qsfs-image"));
    }

    #[test]
    fn hashing_reader_hashes_what_it_reads() {
        let mut reader = HashingReader::new(&b"abc"[..]);
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, b"abc");
        assert_eq!(
            reader.finish(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
