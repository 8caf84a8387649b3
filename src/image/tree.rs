//! The content of an image: a sorted list of entries (directories and files, each with a path,
//! a normalized mode and a role), and the `MANIFEST` that describes them.
//!
//! Modes are normalized: directories 0755 (`var/zdbfs` itself, spool and state 0700), binaries
//! 0755, the configs that hold or may hold secrets 0600 ([`layout::PRIVATE_FILES`]), everything
//! else 0644. Config files ship as `var/zdbfs/etc/NAME.default`; the `qsfs-config.service` oneshot installs `NAME` from it (see [`super::install`]). System
//! directories (`etc/`, `var/`, …) get no entries of their own, so unpacking never changes
//! their modes or times.
//!
//! The `MANIFEST` (`var/zdbfs/MANIFEST`, TOML, `schema = 1`) lists the image (name, version, our
//! version, build time), the components and our binaries (name, version, sha256, origin) and
//! every entry (path, type, mode, size, sha256, role). It holds no local paths and no clock
//! time, so the same inputs give the same bytes.

use super::fetch::Resolved;
use super::layout::{self, DEFAULT_SUFFIX};
use super::render::RenderedFile;
use super::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `MANIFEST` schema this qsfs-image writes and reads.
pub const SCHEMA: u32 = 1;

/// What an entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A directory.
    Dir,
    /// An executable in `var/zdbfs/bin`.
    Binary,
    /// A unit file in `etc/systemd/system`.
    Unit,
    /// A preset file in `etc/systemd/system-preset`.
    Preset,
    /// A config default (`NAME.default`), installed as `NAME` by `install-config`.
    Config,
    /// A config default that holds secrets (mode 0600; listed without sha256 or size).
    Secret,
    /// The `MANIFEST` itself (not listed in it).
    Manifest,
}

/// Where an entry's bytes come from while building.
#[derive(Clone)]
pub enum Content {
    /// A directory: no content.
    None,
    /// A file on the build machine.
    File(PathBuf),
    /// Bytes in memory (rendered configs, the `MANIFEST`).
    Bytes(Vec<u8>),
}

/// One entry of an image.
#[derive(Clone)]
pub struct Entry {
    /// Relative path without a trailing slash (`var/zdbfs/bin/zdb`).
    pub path: String,
    /// Its role (directories are [`Role::Dir`]).
    pub role: Role,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// sha256 of the content (files only).
    pub sha256: Option<String>,
    /// The content.
    pub content: Content,
}

impl Entry {
    /// Whether this entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.role == Role::Dir
    }
}

/// The `MANIFEST` of an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Format version ([`SCHEMA`]).
    pub schema: u32,
    /// The image.
    pub image: ImageInfo,
    /// The on-disk formats its binaries write (an image from before they were recorded: 1).
    #[serde(default)]
    pub formats: Formats,
    /// The third-party components.
    pub components: Vec<ComponentInfo>,
    /// Our binaries.
    pub ours: Vec<ComponentInfo>,
    /// Every entry except the `MANIFEST` itself, sorted by path.
    pub entries: Vec<EntryInfo>,
}

/// `[formats]` of the `MANIFEST`: the version of each on-disk format that the image's binaries
/// write and that outlives them in `/var/zdbfs` (an upgrade keeps it), by name. A build reads
/// its own version of each and every older one, so a switch between two images (upgrade or
/// rollback) is safe exactly when the target knows every format the running one writes, at
/// least at its version ([`Formats::unreadable_by`]): a format the target does not name (added
/// later) is one it cannot read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Formats(pub BTreeMap<String, u32>);

/// The upload spool's job files ([`crate::spool::JOB_VERSION`]).
pub const SPOOL_JOB: &str = "spool_job";
/// The records of the monitor's state database ([`crate::monitor::state::RECORD_VERSION`]).
pub const MONITOR_STATE: &str = "monitor_state";
/// `/var/zdbfs/versions/state.json` ([`super::versions::STATE_SCHEMA`]).
pub const VERSIONS_STATE: &str = "versions_state";

impl Default for Formats {
    /// What images wrote before the formats were recorded.
    fn default() -> Self {
        // They have no `upgrade`, so `state.json` does not bother them.
        Formats::from([(SPOOL_JOB, 1), (MONITOR_STATE, 1), (VERSIONS_STATE, 1)])
    }
}

impl Formats {
    /// Formats from `(name, version)` pairs.
    pub fn from<const N: usize>(pairs: [(&str, u32); N]) -> Formats {
        Formats(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    /// The formats this build's binaries write.
    pub fn this_build() -> Formats {
        Formats::from([
            (SPOOL_JOB, crate::spool::JOB_VERSION),
            (
                MONITOR_STATE,
                u32::from(crate::monitor::state::RECORD_VERSION),
            ),
            (VERSIONS_STATE, super::versions::STATE_SCHEMA),
        ])
    }

    /// Why binaries that write `target` could not read what binaries that wrote `self` left
    /// behind (one phrase per format), or nothing when they can.
    pub fn unreadable_by(&self, target: &Formats) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(name, written)| match target.0.get(name) {
                Some(readable) if readable >= written => None,
                Some(readable) => Some(format!(
                    "{name} of format {written} (it reads up to {readable})"
                )),
                None => Some(format!("{name} of format {written} (it does not know it)")),
            })
            .collect()
    }
}

/// `[image]` of the `MANIFEST`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// Version of the qsfs package that built it (and of our binaries).
    pub qsfs_version: String,
    /// The build time: `SOURCE_DATE_EPOCH`, also every entry's mtime.
    pub source_date_epoch: u64,
    /// The same, as UTC ISO 8601.
    pub build_time: String,
    /// Whether the image holds secrets (the credentials rendered from site settings).
    pub secrets: bool,
}

/// A component or one of our binaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// Name (`zdb`, `zdb-hook`, …).
    pub name: String,
    /// Version.
    pub version: String,
    /// sha256 of the binary.
    pub sha256: String,
    /// The URL it was downloaded from, `local file` or `built from this package`.
    pub origin: String,
}

/// One entry as the `MANIFEST` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    /// Relative path without a trailing slash.
    pub path: String,
    /// `dir` or `file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits in octal (`0755`).
    pub mode: String,
    /// Size in bytes (never for a [`Role::Secret`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// sha256 (files only, never for a [`Role::Secret`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// What the entry is for.
    pub role: Role,
}

impl EntryInfo {
    /// The mode as a number (0 if unparsable).
    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(&self.mode, 8).unwrap_or(0)
    }

    /// For a config default (`…/NAME.default`), the path of the config it installs.
    pub fn installs(&self) -> Option<String> {
        match self.role {
            Role::Config | Role::Secret => {
                self.path.strip_suffix(DEFAULT_SUFFIX).map(str::to_string)
            }
            _ => None,
        }
    }
}

const MANIFEST_HEADER: &str = "\
# qsfs image MANIFEST: every entry of this image with its type, mode, size and sha256, and the
# components it was built from. `qsfs-image verify --root /` checks an installed tree against it.
";

impl ImageManifest {
    /// The `MANIFEST` text.
    pub fn to_text(&self) -> Result<String, Error> {
        let body = toml::to_string(self)
            .map_err(|e| Error::io(layout::MANIFEST, std::io::Error::other(e.to_string())))?;
        Ok(format!("{MANIFEST_HEADER}\n{body}"))
    }

    /// Parses a `MANIFEST` read from `origin` (a tarball or a tree, for error messages).
    pub fn parse(text: &str, origin: &Path) -> Result<ImageManifest, Error> {
        let not_an_image = |message: String| Error::NotAnImage {
            path: origin.to_path_buf(),
            message,
        };
        let manifest: ImageManifest = toml::from_str(text)
            .map_err(|e| not_an_image(format!("its MANIFEST is invalid: {}", e.message())))?;
        if manifest.schema != SCHEMA {
            return Err(not_an_image(format!(
                "its MANIFEST has schema {}, this qsfs-image reads schema {SCHEMA}",
                manifest.schema
            )));
        }
        Ok(manifest)
    }

    /// The config defaults (entries that `install-config` installs).
    pub fn configs(&self) -> impl Iterator<Item = (&EntryInfo, String)> {
        self.entries
            .iter()
            .filter_map(|e| e.installs().map(|live| (e, live)))
    }
}

/// Everything an image is made of.
pub struct Inputs<'a> {
    /// Image name.
    pub name: &'a str,
    /// Image version.
    pub version: &'a str,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
    /// The third-party components.
    pub components: &'a [Resolved],
    /// Our binaries.
    pub ours: &'a [Resolved],
    /// Unit and preset files, and drop-in files (`qsfs*.d/NAME.conf`): (name, path).
    pub units: &'a [(String, PathBuf)],
    /// Config templates: (file name, path).
    pub templates: &'a [(String, PathBuf)],
    /// Rendered configs (they replace templates of the same name).
    pub rendered: &'a [RenderedFile],
}

/// Plans the image: every entry, sorted, with the `MANIFEST` among them.
pub fn plan(inputs: &Inputs) -> Result<(Vec<Entry>, ImageManifest), Error> {
    let mut entries = Vec::new();
    let dir = |path: &str, mode: u32| Entry {
        path: path.to_string(),
        role: Role::Dir,
        mode,
        size: 0,
        sha256: None,
        content: Content::None,
    };
    // 0700: zdbfs mounts with allow_other (for MinIO's own user), so the mount below must not
    // be reachable by other local users.
    entries.push(dir(layout::ROOT, 0o700));
    entries.push(dir(layout::BIN, 0o755));
    entries.push(dir(layout::ETC, 0o755));
    entries.push(dir(layout::CREDSTORE, 0o700));
    for (name, mode) in layout::DATA_DIRS {
        entries.push(dir(&format!("{}/{name}", layout::ROOT), *mode));
    }

    for binary in inputs.components.iter().chain(inputs.ours) {
        entries.push(file_entry(
            format!("{}/{}", layout::BIN, binary.name),
            Role::Binary,
            0o755,
            &binary.file,
            Some(binary.sha256.clone()),
        )?);
    }
    let mut drop_in_dirs: Vec<&str> = inputs
        .units
        .iter()
        .filter_map(|(name, _)| Some(name.split_once('/')?.0))
        .collect();
    drop_in_dirs.sort();
    drop_in_dirs.dedup();
    for drop_in_dir in drop_in_dirs {
        entries.push(dir(&format!("{}/{drop_in_dir}", layout::UNITS), 0o755));
    }
    for (name, path) in inputs.units {
        let (dir, role) = if name.ends_with(".preset") {
            (layout::PRESETS, Role::Preset)
        } else {
            (layout::UNITS, Role::Unit)
        };
        entries.push(file_entry(
            format!("{dir}/{name}"),
            role,
            0o644,
            path,
            None,
        )?);
    }
    for (name, path) in inputs.templates {
        if inputs.rendered.iter().any(|r| r.name == name) {
            continue;
        }
        entries.push(file_entry(
            format!("{}/{name}{DEFAULT_SUFFIX}", layout::ETC),
            config_role(name),
            layout::config_mode(name),
            path,
            None,
        )?);
    }
    for file in inputs.rendered {
        entries.push(bytes_entry(
            format!("{}/{}{DEFAULT_SUFFIX}", layout::ETC, file.name),
            config_role(file.name),
            layout::config_mode(file.name),
            file.text.as_bytes().to_vec(),
        ));
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(pair) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(Error::Usage(format!(
            "two inputs would both be {} in the image",
            pair[0].path
        )));
    }

    let info = |r: &Resolved| ComponentInfo {
        name: r.name.clone(),
        version: r.version.clone(),
        sha256: r.sha256.clone(),
        origin: r.origin.describe(),
    };
    let manifest = ImageManifest {
        schema: SCHEMA,
        image: ImageInfo {
            name: inputs.name.to_string(),
            version: inputs.version.to_string(),
            arch: super::ARCH.to_string(),
            qsfs_version: env!("CARGO_PKG_VERSION").to_string(),
            source_date_epoch: inputs.epoch,
            build_time: crate::clock::utc(inputs.epoch * 1000),
            secrets: entries.iter().any(|e| e.role == Role::Secret),
        },
        formats: Formats::this_build(),
        components: inputs.components.iter().map(info).collect(),
        ours: inputs.ours.iter().map(info).collect(),
        entries: entries.iter().map(entry_info).collect(),
    };
    entries.push(bytes_entry(
        layout::MANIFEST.to_string(),
        Role::Manifest,
        0o644,
        manifest.to_text()?.into_bytes(),
    ));
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((entries, manifest))
}

/// The role of config default `name`: [`Role::Secret`] for [`layout::SECRET_FILES`].
fn config_role(name: &str) -> Role {
    if layout::SECRET_FILES.contains(&name) {
        Role::Secret
    } else {
        Role::Config
    }
}

/// The `MANIFEST` line for an entry. A secret's line has neither sha256 nor size: either would
/// let a secret made from a fixed template be guessed offline.
pub fn entry_info(entry: &Entry) -> EntryInfo {
    let secret = entry.role == Role::Secret;
    EntryInfo {
        path: entry.path.clone(),
        kind: if entry.is_dir() { "dir" } else { "file" }.to_string(),
        mode: format!("{:04o}", entry.mode),
        size: (!secret).then_some(entry.size),
        sha256: entry.sha256.clone().filter(|_| !secret),
        role: entry.role,
    }
}

fn file_entry(
    path: String,
    role: Role,
    mode: u32,
    source: &Path,
    sha256: Option<String>,
) -> Result<Entry, Error> {
    let meta = std::fs::metadata(source).map_err(|e| Error::io(source, e))?;
    if !meta.is_file() {
        return Err(Error::io(
            source,
            std::io::Error::other("not a regular file"),
        ));
    }
    let sha256 = match sha256 {
        Some(sha) => sha,
        None => super::fsutil::sha256_file(source)?.0,
    };
    Ok(Entry {
        path,
        role,
        mode,
        size: meta.len(),
        sha256: Some(sha256),
        content: Content::File(source.to_path_buf()),
    })
}

fn bytes_entry(path: String, role: Role, mode: u32, bytes: Vec<u8>) -> Entry {
    let (sha256, size) = super::fsutil::sha256_reader(&bytes[..]).expect("reading memory");
    Entry {
        path,
        role,
        mode,
        size,
        sha256: Some(sha256),
        content: Content::Bytes(bytes),
    }
}

/// The regular files directly in `dir` whose names pass `keep`, sorted by name. Hidden files
/// are skipped; symlinks are followed (the image holds copies).
pub fn list_files(
    dir: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut files = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !keep(&name) {
            continue;
        }
        let path = item.path();
        if std::fs::metadata(&path)
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            files.push((name, path));
        }
    }
    files.sort();
    Ok(files)
}

/// The unit files of `dir`: `*.service`, `*.socket`, `*.target` and `*.preset`, and the drop-in files
/// `*.conf` of its `qsfs*.d/` directories (named `qsfs….d/NAME.conf`), sorted.
pub fn list_units(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut units = list_files(dir, |name| {
        [".service", ".socket", ".target", ".preset"]
            .iter()
            .any(|kind| name.ends_with(kind))
    })?;
    for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with("qsfs") && name.ends_with(".d") && item.path().is_dir() {
            for (file, path) in list_files(&item.path(), |f| f.ends_with(".conf"))? {
                units.push((format!("{name}/{file}"), path));
            }
        }
    }
    units.sort();
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::fetch::Origin;

    #[test]
    fn units_and_their_drop_ins_are_listed_and_planned() {
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join("units");
        std::fs::create_dir_all(units.join("qsfs.target.d")).unwrap();
        std::fs::create_dir_all(units.join("other.service.d")).unwrap();
        for file in [
            "qsfs.target",
            "qsfs-demo@.service",
            "README",
            "qsfs.target.d/50-demo.conf",
            "qsfs.target.d/notes.txt",
            "other.service.d/50-x.conf",
        ] {
            std::fs::write(units.join(file), "[Unit]\n").unwrap();
        }
        let listed = list_units(&units).unwrap();
        let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "qsfs-demo@.service",
                "qsfs.target",
                "qsfs.target.d/50-demo.conf"
            ]
        );
        let (entries, _) = plan(&Inputs {
            name: "qsfs",
            version: "1.0",
            epoch: 1_700_000_000,
            components: &[],
            ours: &[],
            units: &listed,
            templates: &[],
            rendered: &[],
        })
        .unwrap();
        let drop_in_dir = entries
            .iter()
            .find(|e| e.path == "etc/systemd/system/qsfs.target.d")
            .unwrap();
        assert_eq!((drop_in_dir.role, drop_in_dir.mode), (Role::Dir, 0o755));
        let drop_in = entries
            .iter()
            .find(|e| e.path == "etc/systemd/system/qsfs.target.d/50-demo.conf")
            .unwrap();
        assert_eq!((drop_in.role, drop_in.mode), (Role::Unit, 0o644));
        for e in &entries {
            let kind = if e.role == Role::Dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            };
            assert_eq!(
                super::super::tarball::refusal(e.path.as_bytes(), kind, e.mode, None),
                None,
                "{}",
                e.path
            );
        }
    }

    #[test]
    fn plan_is_sorted_normalized_and_described_by_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let zdb = write("zdb", "#!/bin/sh\n");
        let resolved = |name: &str, path: &Path| Resolved {
            name: name.into(),
            version: "1".into(),
            file: path.to_path_buf(),
            sha256: crate::image::fsutil::sha256_file(path).unwrap().0,
            origin: Origin::Local,
        };
        let components = [resolved("zdb", &zdb)];
        let ours = [resolved("zdb-hook", &zdb)];
        let units = [
            ("qsfs.target".to_string(), write("qsfs.target", "[Unit]\n")),
            (
                "50-qsfs.preset".to_string(),
                write("50-qsfs.preset", "enable qsfs.target\n"),
            ),
        ];
        let templates = [
            ("qsfs.toml".to_string(), write("qsfs.toml", "")),
            ("qsfs.env".to_string(), write("qsfs.env", "template")),
        ];
        let rendered = [
            RenderedFile {
                name: "qsfs.env",
                text: "ZDB_DATASIZE=1\n".into(),
            },
            RenderedFile {
                name: layout::MINIO_PASSWORD,
                text: "password\n".into(),
            },
        ];
        let (entries, manifest) = plan(&Inputs {
            name: "qsfs",
            version: "1.0",
            epoch: 1_700_000_000,
            components: &components,
            ours: &ours,
            units: &units,
            templates: &templates,
            rendered: &rendered,
        })
        .unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        let mode = |path: &str| entries.iter().find(|e| e.path == path).unwrap().mode;
        assert_eq!(mode("var/zdbfs"), 0o700);
        assert_eq!(mode("var/zdbfs/spool"), 0o700);
        assert_eq!(mode("var/zdbfs/state"), 0o700);
        assert_eq!(mode("var/zdbfs/bin/zdb"), 0o755);
        assert_eq!(mode("var/zdbfs/etc/credstore"), 0o700);
        assert_eq!(
            mode("var/zdbfs/etc/credstore/minio-root-password.default"),
            0o600
        );
        assert_eq!(mode("var/zdbfs/etc/qsfs.env.default"), 0o644);
        assert_eq!(mode("etc/systemd/system/qsfs.target"), 0o644);
        assert_eq!(mode("etc/systemd/system-preset/50-qsfs.preset"), 0o644);
        assert!(paths.contains(&"var/zdbfs/MANIFEST"));
        assert!(!paths.iter().any(|p| *p == "etc" || *p == "var"));

        assert_eq!(manifest.entries.len(), entries.len() - 1);
        assert!(manifest.image.secrets);
        assert_eq!(manifest.image.build_time, "2023-11-14T22:13:20Z");
        let env = manifest
            .entries
            .iter()
            .find(|e| e.path == "var/zdbfs/etc/qsfs.env.default")
            .unwrap();
        assert_eq!(
            env.size,
            Some("ZDB_DATASIZE=1\n".len() as u64),
            "rendered wins"
        );
        let minio = manifest
            .entries
            .iter()
            .find(|e| e.path == "var/zdbfs/etc/credstore/minio-root-password.default")
            .unwrap();
        assert_eq!((minio.size, minio.sha256.as_deref()), (None, None));
        assert_eq!(env.installs().as_deref(), Some("var/zdbfs/etc/qsfs.env"));
        let configs: Vec<_> = manifest.configs().map(|(_, live)| live).collect();
        assert_eq!(
            configs,
            [
                "var/zdbfs/etc/credstore/minio-root-password",
                "var/zdbfs/etc/qsfs.env",
                "var/zdbfs/etc/qsfs.toml"
            ]
        );

        let text = manifest.to_text().unwrap();
        assert!(!text.contains(&dir.path().display().to_string()), "{text}");
        let back = ImageManifest::parse(&text, Path::new("x")).unwrap();
        assert_eq!(back, manifest);
        let err = ImageManifest::parse(&text.replace("schema = 1", "schema = 9"), Path::new("x"))
            .unwrap_err();
        assert!(err.to_string().contains("schema 9"), "{err}");
    }
}
