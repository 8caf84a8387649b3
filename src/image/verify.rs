//! `qsfs-image verify`: checks a tarball, or an installed tree, against its `MANIFEST`.
//!
//! A tarball is first read entry by entry, header by header (a GNU long-name or PAX header is
//! an entry of its own): one that must never be unpacked (see [`tarball::header_refusal`]: not
//! a ustar header, a user or group name; and [`tarball::refusal`]: outside the image's
//! directories, `..`, absolute, a link, a special file, a long-name or PAX header) refuses the whole tarball, every such entry named, before its `MANIFEST` is parsed.
//! A `MANIFEST` that lists such a path is refused the same way.
//!
//! Then every difference is listed, never only the first:
//! * **missing**: an entry of the `MANIFEST` is absent;
//! * **changed**: type, mode, size, content (sha256) or, in a tarball, owner differ (a
//!   secret, listed without size and sha256, only by type, mode and owner); also a config that
//!   holds or may hold secrets readable by others, and a tarball whose sha256 is not the one in the
//!   `SHA256SUMS` beside it;
//! * **extra**: in a tarball, any entry the `MANIFEST` does not list; in a tree, an executable
//!   or symlink in `var/zdbfs/bin` or `var/zdbfs/etc` that the `MANIFEST` does not list.
//!
//! A tarball that is not exactly one gzip member holding one tar archive, its end marker (two
//! zero blocks) followed by nothing but zeros, is not an image (exit 65, before its `MANIFEST`
//! is trusted): GNU tar would unpack what follows the first member or a missing end marker.
//!
//! These are failures (exit 1). Configs the operator is expected to edit are installed from
//! their shipped `*.default` and reported as **modified** when they differ from it, or
//! **pending** when not installed yet; neither is a failure.

use super::layout::{self, DEFAULT_SUFFIX, PRIVATE_FILES, SECRET_FILES};
use super::tree::{EntryInfo, ImageManifest, Role};
use super::{sign, tarball, Error};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The kind of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingKind {
    /// An entry is absent (failure).
    Missing,
    /// An entry differs (failure).
    Changed,
    /// Something that should not be there (failure).
    Extra,
    /// A config differs from its shipped default (expected, not a failure).
    Modified,
    /// A config is not installed from its default yet (not a failure).
    Pending,
    /// Information (not a failure).
    Note,
}

impl FindingKind {
    /// Whether this finding fails the verification.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            FindingKind::Missing | FindingKind::Changed | FindingKind::Extra
        )
    }

    fn label(self) -> &'static str {
        match self {
            FindingKind::Missing => "MISSING",
            FindingKind::Changed => "CHANGED",
            FindingKind::Extra => "EXTRA",
            FindingKind::Modified => "MODIFIED",
            FindingKind::Pending => "PENDING",
            FindingKind::Note => "NOTE",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind.
    pub kind: FindingKind,
    /// The entry's path (relative to the root), or the tarball.
    pub path: String,
    /// Details.
    pub detail: String,
}

/// The result of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The tarball or root that was checked.
    pub target: String,
    /// `name version` of the image.
    pub image: String,
    /// How many `MANIFEST` entries were checked.
    pub checked: usize,
    /// No failures.
    pub ok: bool,
    /// Every finding, failures first.
    pub findings: Vec<Finding>,
    /// For a tarball: whether, and by whom, its origin was checked.
    pub origin: Option<Origin>,
}

/// Who vouches for a tarball.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "checked", rename_all = "snake_case")]
pub enum Origin {
    /// With `--key`: `SHA256SUMS` is signed by that key and lists the tarball's sha256.
    Signed {
        /// The key id.
        key_id: String,
        /// The signed comment (when it was signed).
        trusted_comment: String,
    },
    /// Without `--key`: nothing says who built the tarball.
    NotChecked,
}

impl Report {
    fn new(target: &Path, manifest: &ImageManifest, mut findings: Vec<Finding>) -> Report {
        findings.sort_by_key(|f| (!f.kind.is_failure(), f.path.clone()));
        Report {
            target: target.display().to_string(),
            image: format!("{} {}", manifest.image.name, manifest.image.version),
            checked: manifest.entries.len(),
            ok: !findings.iter().any(|f| f.kind.is_failure()),
            findings,
            origin: None,
        }
    }

    /// Number of failures.
    pub fn failures(&self) -> usize {
        self.findings.iter().filter(|f| f.kind.is_failure()).count()
    }

    /// The human-readable report: one line per finding, then a summary.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for f in &self.findings {
            text.push_str(&format!("{:<9} {}: {}\n", f.kind.label(), f.path, f.detail));
        }
        text.push_str(&format!(
            "verify: {} at {}: {} entries checked, {} failure{}\n",
            self.image,
            self.target,
            self.checked,
            self.failures(),
            if self.failures() == 1 { "" } else { "s" }
        ));
        match &self.origin {
            Some(Origin::Signed {
                key_id,
                trusted_comment,
            }) => text.push_str(&format!(
                "origin: signed by key {key_id} ({trusted_comment}): {} beside it verifies and \
                 lists this tarball's sha256\n",
                sign::SIGNATURE
            )),
            Some(Origin::NotChecked) => text.push_str(
                "origin NOT checked (no --key): SHA256SUMS beside the tarball proves nothing \
                 about who built it; verify --key PUB checks its signature\n",
            ),
            None => {}
        }
        text
    }
}

/// What was found for one path.
#[derive(Debug, Clone)]
struct Observed {
    kind: &'static str,
    mode: u32,
    owner: Option<(u64, u64)>,
    size: u64,
    sha256: Option<String>,
}

/// An entry the MANIFEST lists that is not there.
fn missing(expected: &EntryInfo) -> Finding {
    Finding {
        kind: FindingKind::Missing,
        path: expected.path.clone(),
        detail: format!("{} listed in the MANIFEST", expected.kind),
    }
}

/// An entry that differs from what the MANIFEST lists, if it does.
fn changed(expected: &EntryInfo, observed: &Observed) -> Option<Finding> {
    let diffs = differences(expected, observed);
    (!diffs.is_empty()).then(|| Finding {
        kind: FindingKind::Changed,
        path: expected.path.clone(),
        detail: diffs.join("; "),
    })
}

fn differences(expected: &EntryInfo, observed: &Observed) -> Vec<String> {
    let mut diffs = Vec::new();
    if observed.kind != expected.kind {
        diffs.push(format!(
            "is a {}, expected a {}",
            observed.kind, expected.kind
        ));
        return diffs;
    }
    if observed.mode != expected.mode_bits() {
        diffs.push(format!(
            "mode {:04o}, expected {}",
            observed.mode, expected.mode
        ));
    }
    if let Some((uid, gid)) = observed.owner {
        if (uid, gid) != (0, 0) {
            diffs.push(format!("owner {uid}:{gid}, expected 0:0"));
        }
    }
    if expected.kind == "file" && expected.role == Role::Secret {
        // A secret is listed without sha256 or size (they would let it be guessed): what is
        // checked is that it is there, a file, root's (in a tarball) and private.
        if expected.mode_bits() != 0o600 {
            diffs.push(format!(
                "a secret listed with mode {}, expected 0600",
                expected.mode
            ));
        }
        if expected.size.is_some() || expected.sha256.is_some() {
            diffs.push("a secret listed with a size or sha256, which give it away".into());
        }
    } else if expected.kind == "file" {
        if Some(observed.size) != expected.size {
            diffs.push(format!(
                "size {}, expected {}",
                observed.size,
                expected.size.map_or("-".into(), |s| s.to_string())
            ));
        }
        if observed.sha256 != expected.sha256 || expected.sha256.is_none() {
            diffs.push(format!(
                "sha256 {}, expected {}",
                observed.sha256.as_deref().unwrap_or("-"),
                expected.sha256.as_deref().unwrap_or("-")
            ));
        }
    }
    diffs
}

fn not_an_image(path: &Path, message: impl Into<String>) -> Error {
    Error::NotAnImage {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads every entry of a tarball: its `MANIFEST` text, what was found per path, entries that
/// appear twice, and the sha256 of the whole file. Any entry that must never be unpacked
/// ([`tarball::refusal`]) refuses the whole tarball, every such entry named, before its
/// `MANIFEST` is parsed.
#[allow(clippy::type_complexity)]
fn read_tarball(
    path: &Path,
) -> Result<
    (
        Option<String>,
        BTreeMap<String, Observed>,
        Vec<String>,
        String,
    ),
    Error,
> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // A `bufread` decoder consumes exactly its gzip member, so what follows it can be seen.
    let raw = std::io::BufReader::with_capacity(1 << 20, super::fsutil::HashingReader::new(file));
    let mut archive = tar::Archive::new(flate2::bufread::GzDecoder::new(raw));
    let bad = |e: std::io::Error| not_an_image(path, e.to_string());
    let mut manifest = None;
    let mut observed = BTreeMap::new();
    let mut twice = Vec::new();
    let mut refused = Vec::new();
    // Raw: GNU long-name and PAX headers arrive as entries (and are refused), never applied
    // in tar-rs's way, which need not be GNU tar's.
    for entry in archive.entries().map_err(bad)?.raw(true) {
        let mut entry = entry.map_err(bad)?;
        let header = entry.header().clone();
        let mode = header.mode().map_err(bad)? & 0o7777;
        let why = tarball::header_refusal(&header).or_else(|| {
            tarball::refusal(
                &entry.path_bytes(),
                header.entry_type(),
                mode,
                entry.link_name_bytes().as_deref(),
            )
        });
        if let Some(why) = why {
            let name = String::from_utf8_lossy(&entry.path_bytes())
                .escape_debug()
                .to_string();
            refused.push((name, why));
            continue;
        }
        let name = entry
            .path()
            .map_err(bad)?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let kind = if header.entry_type().is_dir() {
            "dir"
        } else {
            "file"
        };
        let mut content = Vec::new();
        let sha256 = if kind == "file" {
            let mut hashing = super::fsutil::HashingReader::new(&mut entry);
            if name == layout::MANIFEST {
                hashing.read_to_end(&mut content).map_err(bad)?;
            } else {
                std::io::copy(&mut hashing, &mut std::io::sink()).map_err(bad)?;
            }
            Some(hashing.finish())
        } else {
            None
        };
        if name == layout::MANIFEST {
            manifest = Some(String::from_utf8_lossy(&content).into_owned());
        }
        let seen = Observed {
            kind,
            mode,
            owner: Some((header.uid().map_err(bad)?, header.gid().map_err(bad)?)),
            size: header.size().map_err(bad)?,
            sha256,
        };
        if observed.insert(name.clone(), seen).is_some() {
            twice.push(name);
        }
    }
    if !refused.is_empty() {
        return Err(Error::UnsafeEntries {
            path: path.to_path_buf(),
            entries: refused,
        });
    }
    let mut gzip = archive.into_inner();
    check_end(path, &mut gzip)?;
    let mut raw = gzip.into_inner();
    if !raw.fill_buf().map_err(bad)?.is_empty() {
        return Err(not_an_image(
            path,
            "it has data after its first gzip member, which GNU tar would unpack too \
             (an image is one gzip member)",
        ));
    }
    Ok((manifest, observed, twice, raw.into_inner().finish()))
}

/// After the last entry `tar-rs` read (it stops at the first zero block, or at the end of the
/// data): requires the rest of the gzip member to be zeros, at least the end marker's second
/// zero block, so that nothing hides behind an end GNU tar does not see.
fn check_end(path: &Path, rest: &mut impl Read) -> Result<(), Error> {
    let mut tail = Vec::new();
    rest.read_to_end(&mut tail)
        .map_err(|e| not_an_image(path, e.to_string()))?;
    if tail.iter().any(|&b| b != 0) {
        return Err(not_an_image(
            path,
            "it has data after the tar end marker, which GNU tar may unpack",
        ));
    }
    if tail.len() < 512 {
        return Err(not_an_image(
            path,
            "it has no tar end marker (two zero blocks): it may be cut short",
        ));
    }
    Ok(())
}

/// With `--key`: checks, before anything in the tarball is read, that `SHA256SUMS` beside it
/// is signed by the public key in the file `key` and lists the tarball's sha256; returns the
/// origin and that sha256.
fn check_origin(path: &Path, key: &Path) -> Result<(Origin, String), Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let signed = sign::check_sums(crate::fsutil::parent(path), key)?;
    let not_signed = |message: String| Error::NotSigned {
        path: path.to_path_buf(),
        message,
    };
    let expected = tarball::sha256_in(&signed.text, &name).ok_or_else(|| {
        not_signed(format!(
            "the signed {} has no line for {name}",
            tarball::SUMS
        ))
    })?;
    let (actual, _) = super::fsutil::sha256_file(path)?;
    if actual != expected {
        return Err(not_signed(format!(
            "sha256 {actual}, the signed {} says {expected}: it changed after it was signed",
            tarball::SUMS
        )));
    }
    let origin = Origin::Signed {
        key_id: signed.key_id,
        trusted_comment: signed.trusted_comment,
    };
    Ok((origin, expected))
}

/// Verifies a tarball against the `MANIFEST` inside it, and against `SHA256SUMS` beside it;
/// with `key` (a minisign public key file), refuses it unless `SHA256SUMS` is signed by that
/// key and lists the tarball's sha256.
pub fn verify_tarball(path: &Path, key: Option<&Path>) -> Result<Report, Error> {
    let signed = key.map(|key| check_origin(path, key)).transpose()?;
    let (manifest_text, mut observed, twice, sha256) = read_tarball(path)?;
    if let Some((_, expected)) = &signed {
        if sha256 != *expected {
            return Err(Error::NotSigned {
                path: path.to_path_buf(),
                message: format!("changed while it was verified (sha256 now {sha256})"),
            });
        }
    }
    let Some(manifest_text) = manifest_text else {
        return Err(not_an_image(
            path,
            format!("it has no {}", layout::MANIFEST),
        ));
    };
    let manifest = ImageManifest::parse(&manifest_text, path)?;
    refuse_unsafe_listed(&manifest, path)?;
    let mut findings = Vec::new();
    let origin = match signed {
        Some((origin, _)) => origin,
        None => {
            findings.extend(unsigned_sums(path, &sha256));
            Origin::NotChecked
        }
    };
    for name in twice {
        findings.push(Finding {
            kind: FindingKind::Extra,
            path: name,
            detail: "appears more than once in the tarball".into(),
        });
    }
    observed.remove(layout::MANIFEST);
    for expected in &manifest.entries {
        match observed.remove(&expected.path) {
            None => findings.push(missing(expected)),
            Some(seen) => findings.extend(changed(expected, &seen)),
        }
    }
    for (name, seen) in observed {
        findings.push(Finding {
            kind: FindingKind::Extra,
            path: name,
            detail: format!("{} not in the MANIFEST", seen.kind),
        });
    }
    let mut report = Report::new(path, &manifest, findings);
    report.origin = Some(origin);
    Ok(report)
}

/// Without `--key`: the tarball against the (unsigned) `SHA256SUMS` beside it, which catches
/// damage but not a forgery.
fn unsigned_sums(path: &Path, sha256: &str) -> Option<Finding> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = crate::fsutil::parent(path);
    match tarball::read_sha256sums(dir, &name) {
        Some(expected) if expected == sha256 => None,
        Some(expected) => Some(Finding {
            kind: FindingKind::Changed,
            path: path.display().to_string(),
            detail: format!("sha256 {sha256}, SHA256SUMS beside it says {expected}"),
        }),
        None => Some(Finding {
            kind: FindingKind::Note,
            path: path.display().to_string(),
            detail: format!(
                "no line for it in {} (the tarball's own sha256 is {sha256})",
                dir.join(tarball::SUMS).display()
            ),
        }),
    }
}

/// Refuses a `MANIFEST` that lists an entry no image may hold ([`tarball::refusal`]): in a
/// tree, checking it would read files outside the image.
fn refuse_unsafe_listed(manifest: &ImageManifest, origin: &Path) -> Result<(), Error> {
    let refused: Vec<(String, String)> = manifest
        .entries
        .iter()
        .filter_map(|e| {
            let why = match e.kind.as_str() {
                "dir" => tarball::refusal(
                    e.path.as_bytes(),
                    tar::EntryType::Directory,
                    e.mode_bits(),
                    None,
                ),
                "file" => tarball::refusal(
                    e.path.as_bytes(),
                    tar::EntryType::Regular,
                    e.mode_bits(),
                    None,
                ),
                other => Some(format!(
                    "is listed as a `{}`: an image holds only files and directories",
                    other.escape_debug()
                )),
            }?;
            Some((format!("{} (in the MANIFEST)", e.path.escape_debug()), why))
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Error::UnsafeEntries {
            path: origin.to_path_buf(),
            entries: refused,
        })
    }
}

/// Reads the `MANIFEST` of an installed tree (or the one given).
pub fn read_tree_manifest(root: &Path, manifest: Option<&Path>) -> Result<ImageManifest, Error> {
    let path = manifest
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join(layout::MANIFEST));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_an_image(
                root,
                format!(
                    "{} does not exist (is a qsfs image unpacked there?)",
                    path.display()
                ),
            ))
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    ImageManifest::parse(&text, &path)
}

fn observe(path: &Path) -> std::io::Result<Observed> {
    let meta = std::fs::symlink_metadata(path)?;
    let kind = if meta.is_dir() {
        "dir"
    } else if meta.is_file() {
        "file"
    } else if meta.file_type().is_symlink() {
        "symlink"
    } else {
        "special file"
    };
    let sha256 = if kind == "file" {
        Some(
            super::fsutil::sha256_file(path)
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .0,
        )
    } else {
        None
    };
    Ok(Observed {
        kind,
        mode: meta.permissions().mode() & 0o7777,
        owner: None,
        size: meta.size(),
        sha256,
    })
}

/// Verifies an installed tree under `root` against its `MANIFEST` (or `manifest`).
pub fn verify_root(root: &Path, manifest: Option<&Path>) -> Result<Report, Error> {
    let image = read_tree_manifest(root, manifest)?;
    refuse_unsafe_listed(&image, manifest.unwrap_or(&root.join(layout::MANIFEST)))?;
    let mut findings = Vec::new();
    for expected in &image.entries {
        let path = root.join(&expected.path);
        match observe(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => findings.push(missing(expected)),
            Err(e) => findings.push(Finding {
                kind: FindingKind::Changed,
                path: expected.path.clone(),
                detail: format!("cannot be read: {e}"),
            }),
            Ok(seen) => findings.extend(changed(expected, &seen)),
        }
    }
    findings.extend(installed_configs(root, &image));
    findings.extend(extra_executables(root, &image));
    findings.extend(stale_units(root, &image));
    Ok(Report::new(root, &image, findings))
}

/// The configs installed from the shipped defaults: modified, pending, or a secret that others
/// can read.
fn installed_configs(root: &Path, image: &ImageManifest) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut live_paths: Vec<(String, Option<&EntryInfo>)> = image
        .configs()
        .map(|(default, live)| (live, Some(default)))
        .collect();
    for name in SECRET_FILES {
        let live = format!("{}/{name}", layout::ETC);
        if !live_paths.iter().any(|(p, _)| *p == live) {
            live_paths.push((live, None));
        }
    }
    for (live, default) in live_paths {
        let path = root.join(&live);
        let name = live.rsplit('/').next().unwrap_or_default();
        let secret =
            default.is_none_or(|d| d.role == Role::Secret) || PRIVATE_FILES.contains(&name);
        match observe(&path) {
            Err(_) => {
                if let Some(default) = default {
                    findings.push(Finding {
                        kind: FindingKind::Pending,
                        path: live,
                        detail: format!(
                            "not installed yet: qsfs-config.service (qsfs-image install-config) \
                             installs it from {}",
                            default.path
                        ),
                    });
                }
            }
            Ok(seen) => {
                if secret && seen.mode & 0o077 != 0 {
                    findings.push(Finding {
                        kind: FindingKind::Changed,
                        path: live.clone(),
                        detail: format!("mode {:04o}: it holds secrets, chmod 600 it", seen.mode),
                    });
                }
                if let Some(default) = default {
                    // A secret's default has no sha256 in the MANIFEST: compare with the file.
                    let shipped = match default.role {
                        Role::Secret => observe(&root.join(&default.path))
                            .ok()
                            .and_then(|d| d.sha256),
                        _ => default.sha256.clone(),
                    };
                    if seen.sha256 != shipped {
                        findings.push(Finding {
                            kind: FindingKind::Modified,
                            path: live,
                            detail: format!(
                                "differs from the shipped {} (expected for a config you edit)",
                                default.path.rsplit('/').next().unwrap_or(DEFAULT_SUFFIX)
                            ),
                        });
                    }
                }
            }
        }
    }
    findings
}

/// Executables and symlinks under `var/zdbfs/bin` and `var/zdbfs/etc` that the `MANIFEST`
/// does not list.
fn extra_executables(root: &Path, image: &ImageManifest) -> Vec<Finding> {
    let listed: std::collections::BTreeSet<&str> =
        image.entries.iter().map(|e| e.path.as_str()).collect();
    let mut findings = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.join(layout::BIN), root.join(layout::ETC)];
    while let Some(dir) = stack.pop() {
        let Ok(items) = std::fs::read_dir(&dir) else {
            continue;
        };
        for item in items.flatten() {
            let path = item.path();
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if listed.contains(relative.as_str()) {
                continue;
            }
            if meta.file_type().is_symlink() {
                findings.push(Finding {
                    kind: FindingKind::Extra,
                    path: relative,
                    detail: "symlink not in the MANIFEST".into(),
                });
            } else if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                findings.push(Finding {
                    kind: FindingKind::Extra,
                    path: relative,
                    detail: "executable not in the MANIFEST".into(),
                });
            }
        }
    }
    findings
}

/// `qsfs*` units in `etc/systemd/system` that this image does not ship (left from an older one).
fn stale_units(root: &Path, image: &ImageManifest) -> Vec<Finding> {
    let Ok(items) = std::fs::read_dir(root.join(layout::UNITS)) else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    for item in items.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let relative = format!("{}/{name}", layout::UNITS);
        let is_file = item.file_type().map(|t| !t.is_dir()).unwrap_or(false);
        if name.starts_with("qsfs") && is_file && !image.entries.iter().any(|e| e.path == relative)
        {
            findings.push(Finding {
                kind: FindingKind::Note,
                path: relative,
                detail: "a qsfs unit this image does not ship (left from an older image?)".into(),
            });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, mode: &str, size: u64, sha: Option<&str>) -> EntryInfo {
        EntryInfo {
            path: "var/zdbfs/bin/zdb".into(),
            kind: kind.into(),
            mode: mode.into(),
            size: Some(size),
            sha256: sha.map(str::to_string),
            role: Role::Binary,
        }
    }

    #[test]
    fn differences_list_everything_that_differs() {
        let expected = entry("file", "0755", 3, Some("aa"));
        let seen = Observed {
            kind: "file",
            mode: 0o644,
            owner: Some((1000, 0)),
            size: 4,
            sha256: Some("bb".into()),
        };
        let diffs = differences(&expected, &seen);
        assert_eq!(
            diffs,
            [
                "mode 0644, expected 0755",
                "owner 1000:0, expected 0:0",
                "size 4, expected 3",
                "sha256 bb, expected aa"
            ]
        );
        let seen = Observed {
            kind: "symlink",
            ..seen
        };
        assert_eq!(
            differences(&expected, &seen),
            ["is a symlink, expected a file"]
        );
    }

    /// A secret is listed without sha256 or size: its presence, type, mode and owner are
    /// checked; a file that is not a secret and has no sha256 is refused.
    #[test]
    fn a_secret_is_checked_without_its_hash_or_size() {
        let secret = EntryInfo {
            path: "var/zdbfs/etc/minio.env.default".into(),
            kind: "file".into(),
            mode: "0600".into(),
            size: None,
            sha256: None,
            role: Role::Secret,
        };
        let seen = Observed {
            kind: "file",
            mode: 0o600,
            owner: Some((0, 0)),
            size: 61,
            sha256: Some("cc".into()),
        };
        assert_eq!(differences(&secret, &seen), Vec::<String>::new());
        let readable = Observed {
            mode: 0o644,
            owner: Some((1000, 0)),
            ..seen.clone()
        };
        assert_eq!(
            differences(&secret, &readable),
            ["mode 0644, expected 0600", "owner 1000:0, expected 0:0"]
        );
        let loose = EntryInfo {
            mode: "0644".into(),
            size: Some(61),
            ..secret.clone()
        };
        assert_eq!(
            differences(
                &loose,
                &Observed {
                    mode: 0o644,
                    ..seen.clone()
                }
            ),
            [
                "a secret listed with mode 0644, expected 0600",
                "a secret listed with a size or sha256, which give it away"
            ]
        );
        let unhashed = EntryInfo {
            role: Role::Config,
            size: Some(61),
            ..secret
        };
        assert_eq!(differences(&unhashed, &seen), ["sha256 cc, expected -"]);
    }

    #[test]
    fn failures_sort_first_and_count() {
        let manifest_text = "schema = 1\ncomponents = []\nours = []\nentries = []\n[image]\nname = 'qsfs'\nversion = '1'\narch = 'x86_64'\nqsfs_version = '1'\nsource_date_epoch = 0\nbuild_time = 'x'\nsecrets = false\n";
        let manifest = ImageManifest::parse(manifest_text, Path::new("M")).unwrap();
        let finding = |kind, path: &str| Finding {
            kind,
            path: path.into(),
            detail: "d".into(),
        };
        let report = Report::new(
            Path::new("/"),
            &manifest,
            vec![
                finding(FindingKind::Modified, "a"),
                finding(FindingKind::Missing, "b"),
            ],
        );
        assert!(!report.ok);
        assert_eq!(report.failures(), 1);
        assert_eq!(report.findings[0].kind, FindingKind::Missing);
        let text = report.to_text();
        assert!(
            text.starts_with("MISSING   b: d\nMODIFIED  a: d\n"),
            "{text}"
        );
        assert!(text.ends_with("0 entries checked, 1 failure\n"), "{text}");
    }
}
