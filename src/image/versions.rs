//! The installed versions of the appliance, for upgrades with a way back
//! (systemd-sysupdate's "versions + current", bootupd's atomic state file).
//!
//! `/var/zdbfs/versions/` (mode 0700: an image may hold secrets) holds:
//! * `<id>/`: one whole image tree per version (its `var/zdbfs/bin`, `MANIFEST`, config
//!   defaults, units and presets, exactly as the tarball holds them), named by
//!   [`version_id`]; at most the current and the previous one are kept;
//! * `state.json`: which version is current, which one a rollback returns to, a switch in
//!   progress, and the last events ([`State`], written atomically, with a schema version).
//!
//! The live tree (`/var/zdbfs/bin`, `/var/zdbfs/MANIFEST`, `/var/zdbfs/etc/*.default`, the
//! `qsfs*` units and presets) stays where units and operators look for it: the current
//! version's files are copied there ([`Store::activate`], each file written under a temporary
//! name and renamed, while every qsfs unit is stopped). Activating a version is idempotent, so a
//! switch interrupted half-way (recorded in `state.json` before it starts) is finished by
//! activating either side again. Only files listed in a `MANIFEST` are ever written or removed:
//! the data (`index`, `data`, `spool`, `state`, `mnt`) and the installed configs are never
//! touched.

use super::fsutil::TempDir;
use super::tree::{EntryInfo, ImageManifest, Role};
use super::{layout, Error};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The `state.json` format version.
pub const STATE_SCHEMA: u32 = 1;
/// How many events `state.json` keeps.
const HISTORY: usize = 20;

/// The name of a version's directory: the image version and the first 12 hex digits of its
/// `MANIFEST`'s sha256 (two builds of one version differ), with anything but `[A-Za-z0-9._+-]`
/// in the version replaced by `_`.
pub fn version_id(manifest_text: &str, manifest: &ImageManifest) -> String {
    let version: String = manifest
        .image
        .version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = super::hex(&Sha256::digest(manifest_text.as_bytes()));
    format!("{version}-{}", &digest[..12])
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// [`STATE_SCHEMA`].
    pub schema_version: u32,
    /// The version whose files are live.
    pub current: String,
    /// The version a rollback returns to.
    pub previous: Option<String>,
    /// A switch that started and did not finish (the live files may be a mix of both).
    pub switching: Option<Switch>,
    /// The last events, oldest first.
    pub history: Vec<Event>,
}

/// A switch between two versions in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// The version that was live.
    pub from: String,
    /// The version being made live.
    pub to: String,
    /// The version an interrupted switch returns to (`qsfs-image rollback`): the one that was
    /// live before the upgrade or rollback began.
    pub recover_to: String,
    /// When it started, unix milliseconds.
    pub started_unix_ms: u64,
}

/// What happened to the installed version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// An upgrade became healthy.
    Upgraded,
    /// An upgrade did not become healthy and was rolled back by itself.
    UpgradeRolledBack,
    /// An upgrade did not become healthy and could not be rolled back (it stays).
    UpgradeUnhealthy,
    /// A rollback by hand became healthy.
    RolledBack,
    /// A rollback by hand did not become healthy (it stays).
    RollbackUnhealthy,
}

/// One event of [`State::history`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When it ended, unix milliseconds.
    pub at_unix_ms: u64,
    /// What happened.
    pub action: Action,
    /// The version that was live before.
    pub from: String,
    /// The version asked for.
    pub to: String,
    /// Why it was rolled back or stays unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl State {
    /// The state of a machine whose live version is `current`, with nothing before it.
    pub fn new(current: &str) -> State {
        State {
            schema_version: STATE_SCHEMA,
            current: current.to_string(),
            previous: None,
            switching: None,
            history: Vec::new(),
        }
    }

    /// Records `event`, keeping the last [`HISTORY`] ones.
    pub fn record(&mut self, event: Event) {
        self.history.push(event);
        let excess = self.history.len().saturating_sub(HISTORY);
        self.history.drain(..excess);
    }
}

/// What making a version live writes and removes (paths relative to the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// Directories to create when missing, with their mode.
    pub dirs: Vec<(String, u32)>,
    /// Files to copy from the version's tree, with their mode (the `MANIFEST` last).
    pub files: Vec<(String, u32)>,
    /// Files of the version that was live that the new one does not have.
    pub remove: Vec<String>,
}

/// Whether an upgrade may write (or remove) `entry` in the live tree: binaries in
/// `var/zdbfs/bin/`, config defaults in `var/zdbfs/etc/`, units (with the image's own drop-ins)
/// and presets, directories (created where missing), each a path an image may hold
/// ([`super::tarball::refusal`]). Never data, an installed config or an operator's drop-in.
fn may_write(entry: &EntryInfo) -> bool {
    let path = entry.path.as_str();
    let in_dir = |dir: &str| {
        path.strip_prefix(dir)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
    };
    let under = |dir: &str| path.starts_with(&format!("{dir}/"));
    let placed = match entry.role {
        // Only created where missing.
        Role::Dir => true,
        Role::Binary => in_dir(layout::BIN),
        Role::Config | Role::Secret => under(layout::ETC) && path.ends_with(layout::DEFAULT_SUFFIX),
        // Units and their shipped drop-ins (`qsfs*.d/`: `refusal` allows only qsfs's own).
        Role::Unit => under(layout::UNITS),
        Role::Preset => in_dir(layout::PRESETS),
        Role::Manifest => false,
    };
    let kind = if entry.role == Role::Dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    };
    placed && super::tarball::refusal(path.as_bytes(), kind, entry.mode_bits(), None).is_none()
}

/// The entries of `manifest`, refused if one of them is not for the live tree ([`may_write`]).
fn checked(manifest: &ImageManifest) -> Result<&[EntryInfo], Error> {
    let refused: Vec<String> = manifest
        .entries
        .iter()
        .filter(|e| !may_write(e))
        .map(|e| e.path.escape_debug().to_string())
        .collect();
    if refused.is_empty() {
        Ok(&manifest.entries)
    } else {
        Err(Error::SwitchRefused(format!(
            "the MANIFEST of {} {} lists what an upgrade never writes: {}",
            manifest.image.name,
            manifest.image.version,
            refused.join(", ")
        )))
    }
}

/// What activating `to` over `from` (the versions whose files may be live now) does.
pub fn activation(from: &[&ImageManifest], to: &ImageManifest) -> Result<Activation, Error> {
    let entries = checked(to)?;
    let dirs = entries
        .iter()
        .filter(|e| e.role == Role::Dir)
        .map(|e| (e.path.clone(), e.mode_bits()))
        .collect();
    let mut files: Vec<(String, u32)> = entries
        .iter()
        .filter(|e| e.role != Role::Dir)
        .map(|e| (e.path.clone(), e.mode_bits()))
        .collect();
    files.push((layout::MANIFEST.to_string(), 0o644));
    let mut remove = Vec::new();
    for manifest in from {
        for e in checked(manifest)? {
            if e.role != Role::Dir
                && !files.iter().any(|(kept, _)| *kept == e.path)
                && !remove.contains(&e.path)
            {
                remove.push(e.path.clone());
            }
        }
    }
    Ok(Activation {
        dirs,
        files,
        remove,
    })
}

/// One installed version.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Its directory name.
    pub id: String,
    /// Its `MANIFEST`.
    pub manifest: ImageManifest,
}

/// The versions installed on the machine whose root is `root`.
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store of the machine whose root is `root` (`/`).
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    /// `/var/zdbfs/versions`.
    pub fn dir(&self) -> PathBuf {
        self.root.join(layout::VERSIONS)
    }

    fn state_path(&self) -> PathBuf {
        self.dir().join("state.json")
    }

    /// The tree of version `id`.
    pub fn tree(&self, id: &str) -> PathBuf {
        self.dir().join(id)
    }

    fn ensure_dir(&self) -> Result<PathBuf, Error> {
        let dir = self.dir();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        Ok(dir)
    }

    /// Takes the store's lock (`versions/.lock`, `flock`), held until the returned value is
    /// dropped: one upgrade or rollback at a time. Removes what an earlier one that was killed
    /// left half-done (its staging directories).
    pub fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
        let dir = self.ensure_dir()?;
        let path = dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| {
                Error::SwitchRefused(format!(
                    "another upgrade or rollback is running (it holds {})",
                    path.display()
                ))
            })?;
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            if entry.file_name().to_string_lossy().starts_with('.') && entry.path().is_dir() {
                std::fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
        Ok(lock)
    }

    /// `state.json`, or `None` before the first upgrade.
    pub fn state(&self) -> Result<Option<State>, Error> {
        let path = self.state_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        crate::wire::parse(&bytes, "versions state", 1..=STATE_SCHEMA)
            .map(Some)
            .map_err(|e| Error::NotAnImage {
                path: path.clone(),
                message: format!("unreadable: {e}"),
            })
    }

    /// Replaces `state.json` atomically (temporary file, fsync, rename).
    pub fn write_state(&self, state: &State) -> Result<(), Error> {
        self.ensure_dir()?;
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other);
        let path = self.state_path();
        super::fsutil::write_atomic(&path, &bytes.map_err(|e| Error::io(&path, e))?, 0o600)
    }

    /// The `MANIFEST` of version `id`.
    pub fn manifest(&self, id: &str) -> Result<ImageManifest, Error> {
        super::verify::read_tree_manifest(&self.tree(id), None)
    }

    /// Every installed version, by name.
    pub fn installed(&self) -> Result<Vec<Installed>, Error> {
        let dir = self.dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut installed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let id = entry.file_name().to_string_lossy().into_owned();
            if id.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let manifest = self.manifest(&id)?;
            installed.push(Installed { id, manifest });
        }
        installed.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(installed)
    }

    /// The id and `MANIFEST` of the live tree.
    pub fn live(&self) -> Result<(String, ImageManifest), Error> {
        let path = self.root.join(layout::MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let manifest = ImageManifest::parse(&text, &path)?;
        Ok((version_id(&text, &manifest), manifest))
    }

    /// Records the live tree as a version (the first upgrade of a machine installed by
    /// unpacking a tarball) and returns its id. The copy must verify against its `MANIFEST`:
    /// a live tree changed by hand could not be restored by a rollback.
    pub fn capture_live(&self) -> Result<String, Error> {
        let (id, manifest) = self.live()?;
        if self.tree(&id).is_dir() {
            return Ok(id);
        }
        let staging = TempDir::new(&self.ensure_dir()?, "capture")?;
        let plan = activation(&[], &manifest)?;
        copy_tree(&self.root, staging.path(), &plan)?;
        let report = super::verify::verify_root(staging.path(), None)?;
        if !report.ok {
            return Err(Error::SwitchRefused(format!(
                "the installed tree does not match its MANIFEST, so a rollback could not \
                 restore it (see `qsfs-image verify --root /`):\n{}",
                report.to_text()
            )));
        }
        self.keep(staging, &id)?;
        Ok(id)
    }

    /// Adds the image in `tarball` as a version after `verify` (with `key`, its signature)
    /// accepted it, and returns its id and `MANIFEST`. The tarball (with `SHA256SUMS` and its
    /// signature beside it) is first copied into the store, so what is unpacked is what was
    /// verified.
    pub fn add(
        &self,
        tarball: &Path,
        key: Option<&Path>,
    ) -> Result<(Installed, super::verify::Report), Error> {
        // Nothing is created on a machine without an installed image, or for a missing input.
        let (live, live_manifest) = self.live()?;
        // A live tree not recorded yet is copied into the store too.
        let capture: u64 = if self.tree(&live).is_dir() {
            0
        } else {
            live_manifest.entries.iter().filter_map(|e| e.size).sum()
        };
        let size = std::fs::metadata(tarball)
            .map_err(|e| Error::io(tarball, e))?
            .len();
        let dir = self.ensure_dir()?;
        // The copy and the unpacked tree share a file system with zdb's data: never fill it.
        let stat = nix::sys::statvfs::statvfs(&dir).map_err(|e| Error::io(&dir, e.into()))?;
        let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        let needed = size * 4 + capture + (256 << 20);
        if free < needed {
            return Err(Error::SwitchRefused(format!(
                "{} has {} MiB free; unpacking {} needs {} MiB (4 x its size, a copy of the \
                 running version, 256 MiB)",
                dir.display(),
                free >> 20,
                tarball.display(),
                needed >> 20
            )));
        }
        let incoming = TempDir::new(&dir, "incoming")?;
        let name = tarball
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a file", tarball.display())))?;
        let copy = incoming.path().join(name);
        std::fs::copy(tarball, &copy).map_err(|e| Error::io(tarball, e))?;
        let beside = crate::fsutil::parent(tarball);
        for extra in [super::tarball::SUMS, super::sign::SIGNATURE] {
            let from = beside.join(extra);
            if from.is_file() {
                std::fs::copy(&from, incoming.path().join(extra))
                    .map_err(|e| Error::io(&from, e))?;
            }
        }
        let report = super::verify::verify_tarball(&copy, key)?;
        if !report.ok {
            return Err(Error::NotAnImage {
                path: tarball.to_path_buf(),
                message: format!("`verify` refuses it:\n{}", report.to_text()),
            });
        }
        let staging = TempDir::new(&self.dir(), "unpack")?;
        super::tarball::unpack(&copy, staging.path())?;
        let manifest_path = staging.path().join(layout::MANIFEST);
        let text =
            std::fs::read_to_string(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
        let manifest = ImageManifest::parse(&text, tarball)?;
        let id = version_id(&text, &manifest);
        if !self.tree(&id).is_dir() {
            self.keep(staging, &id)?;
        }
        Ok((Installed { id, manifest }, report))
    }

    /// Renames a staged tree to `versions/<id>`.
    fn keep(&self, staging: TempDir, id: &str) -> Result<(), Error> {
        let target = self.tree(id);
        std::fs::rename(staging.path(), &target).map_err(|e| Error::io(&target, e))?;
        crate::fsutil::sync_dir(&self.dir()).map_err(|e| Error::io(self.dir(), e))
    }

    /// Makes version `to` live over `from` (the versions whose files may be live now): copies
    /// its files into the live tree, each under a temporary name renamed into place, and
    /// removes the files of `from` that `to` does not ship. Idempotent.
    pub fn activate(&self, from: &[&ImageManifest], to: &str) -> Result<(), Error> {
        let plan = activation(from, &self.manifest(to)?)?;
        copy_tree(&self.tree(to), &self.root, &plan)?;
        for path in &plan.remove {
            let live = self.root.join(path);
            match std::fs::remove_file(&live) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&live, e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes every version but those in `keep`; returns the ids removed.
    pub fn prune(&self, keep: &[&str]) -> Result<Vec<String>, Error> {
        let mut removed = Vec::new();
        for version in self.installed()? {
            if !keep.contains(&version.id.as_str()) {
                // Renamed first: a removal cut short leaves a staging directory, which the
                // next lock removes, never a version without its MANIFEST.
                let tree = self.tree(&version.id);
                let trash = self.dir().join(format!(".trash-{}", version.id));
                std::fs::rename(&tree, &trash).map_err(|e| Error::io(&tree, e))?;
                std::fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
                removed.push(version.id);
            }
        }
        Ok(removed)
    }
}

/// Copies the files of `plan` from the tree `from` to the tree `to` (directories created with
/// their mode when missing; each file written under a temporary name, fsynced and renamed).
fn copy_tree(from: &Path, to: &Path, plan: &Activation) -> Result<(), Error> {
    for (dir, mode) in &plan.dirs {
        let path = to.join(dir);
        if !path.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(*mode)
                .create(&path)
                .map_err(|e| Error::io(&path, e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    for (file, mode) in &plan.files {
        let source = from.join(file);
        let target = to.join(file);
        let parent = crate::fsutil::parent(&target);
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let mut input = std::fs::File::open(&source).map_err(|e| Error::io(&source, e))?;
        let mut temp =
            crate::fsutil::TempFile::create(&target, *mode).map_err(|e| Error::io(&target, e))?;
        std::io::copy(&mut input, temp.file()).map_err(|e| Error::io(&target, e))?;
        temp.persist(crate::fsutil::Durability::Durable)
            .map_err(|e| Error::io(&target, e))?;
    }
    Ok(())
}
