//! Configs on an installed tree: the upgrade mechanism (`install-config`), the units' gate
//! (`check-config`) and supplying site settings after unpacking (`configure`).
//!
//! **Upgrades.** An image never ships a config under its live name: it ships
//! `var/zdbfs/etc/NAME.default`, so unpacking a newer image (`tar -xzpf … -C /`) replaces the
//! defaults and never an operator's file. `install-config` (run by the `qsfs-config.service`
//! oneshot before every other qsfs unit) then decides per config, like dpkg's conffiles:
//! * `NAME` missing: install it from `NAME.default` (atomically, with the default's mode);
//! * `NAME` equal to the default it was installed from (recorded by sha256 in
//!   `var/zdbfs/etc/.installed-defaults`), i.e. never edited: replace it with the new default;
//! * otherwise the operator edited it: keep it, and say so when the new default differs
//!   (merge by hand from `NAME.default`).
//!
//! **Gate.** `check-config` prints one line per missing or invalid config (naming the file and
//! what to put there) and exits 78, for the units' `ExecStartPre=`: an image built without
//! secrets has no `zstor-default.toml` and no `minio.env`, and the units refuse to start,
//! with that line in the journal, until the operator supplies them.

use super::fsutil::{sha256_file, write_atomic};
use super::layout::{self, DEFAULT_SUFFIX, SECRET_FILES};
use super::render::{self, check_rendered, validate_config};
use super::site::SiteSettings;
use super::tree::ImageManifest;
use super::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The record of which default each config was installed from.
pub const RECORD: &str = ".installed-defaults";

const RECORD_HEADER: &str = "\
# Written by `qsfs-image install-config`: the sha256 of the shipped default each config was
# last installed from. A config still equal to it was never edited and follows new defaults.
";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    #[serde(default)]
    installed: BTreeMap<String, String>,
}

/// What `install-config` did with one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// It was missing and was installed from its default.
    Installed(String),
    /// It was never edited and now follows the new default.
    Updated(String),
    /// The operator edited it and the new default differs: kept, merge by hand.
    Kept(String),
    /// Nothing to do.
    Unchanged(String),
    /// Its default is missing or does not match the `MANIFEST`: left alone.
    Skipped(String, String),
}

impl Action {
    /// A line for the journal, or `None` when there is nothing to say.
    pub fn describe(&self) -> Option<String> {
        match self {
            Action::Installed(path) => Some(format!("installed {path} from its shipped default")),
            Action::Updated(path) => Some(format!(
                "updated {path} to the new shipped default (it had not been edited)"
            )),
            Action::Kept(path) => Some(format!(
                "kept your edited {path}; the new default is {path}{DEFAULT_SUFFIX} (merge by hand)"
            )),
            Action::Unchanged(_) => None,
            Action::Skipped(path, why) => Some(format!("left {path} alone: {why}")),
        }
    }
}

/// Installs every config from its shipped default where that is safe (see the module docs).
pub fn install_config(root: &Path) -> Result<Vec<Action>, Error> {
    let image = super::verify::read_tree_manifest(root, None)?;
    install_from(root, &image)
}

fn install_from(root: &Path, image: &ImageManifest) -> Result<Vec<Action>, Error> {
    let etc = root.join(layout::ETC);
    let record_path = etc.join(RECORD);
    let mut record: Record = match std::fs::read_to_string(&record_path) {
        Ok(text) => toml::from_str(&text).unwrap_or_default(),
        Err(_) => Record::default(),
    };
    let mut actions = Vec::new();
    let mut changed = false;
    for (default, live) in image.configs() {
        let name = live.rsplit('/').next().unwrap_or(&live).to_string();
        let shown = format!("/{live}");
        let default_path = root.join(&default.path);
        let default_sha = match sha256_file(&default_path) {
            Ok((sha, _)) => sha,
            Err(_) => {
                actions.push(Action::Skipped(
                    shown,
                    format!("its default /{} is missing", default.path),
                ));
                continue;
            }
        };
        if Some(&default_sha) != default.sha256.as_ref() {
            actions.push(Action::Skipped(
                shown,
                format!(
                    "its default /{} differs from the MANIFEST (run qsfs-image verify --root /)",
                    default.path
                ),
            ));
            continue;
        }
        let live_path = root.join(&live);
        let live_sha = match sha256_file(&live_path) {
            Ok((sha, _)) => Some(sha),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let recorded = record.installed.get(&name).cloned();
        let action = match live_sha {
            None => Action::Installed(shown),
            Some(sha) if sha == default_sha => Action::Unchanged(shown),
            Some(sha) if Some(&sha) == recorded.as_ref() => Action::Updated(shown),
            Some(_) if recorded.as_ref() == Some(&default_sha) => Action::Unchanged(shown),
            Some(_) => Action::Kept(shown),
        };
        if matches!(action, Action::Installed(_) | Action::Updated(_)) {
            let bytes = std::fs::read(&default_path).map_err(|e| Error::io(&default_path, e))?;
            write_atomic(&live_path, &bytes, default.mode_bits())?;
        }
        // Record the default this config now corresponds to. For a kept (edited) config this
        // remembers that the operator was told about this default, so the note is given once.
        if recorded.as_ref() != Some(&default_sha) {
            record.installed.insert(name, default_sha);
            changed = true;
        }
        actions.push(action);
    }
    if changed {
        let body = toml::to_string(&record)
            .map_err(|e| Error::io(&record_path, std::io::Error::other(e.to_string())))?;
        write_atomic(
            &record_path,
            format!("{RECORD_HEADER}\n{body}").as_bytes(),
            0o644,
        )?;
    }
    Ok(actions)
}

/// The configs `check-config` knows, by short name.
pub const CHECKS: &[(&str, &str)] = &[
    ("zstor", layout::ZSTOR_CONFIG),
    ("minio", layout::MINIO_ENV),
    ("monitor", layout::MONITOR_CONFIG),
    ("env", layout::QSFS_ENV),
    ("appliance", layout::QSFS_TOML),
];

fn what_to_put(name: &str) -> &'static str {
    match name {
        layout::ZSTOR_CONFIG => {
            "put the zstor v0.5 config there (the 4 meta backends and the data backends with their \
             passwords, the 64-hex encryption key), mode 0600; `qsfs-image configure --site \
             site.toml` writes it from site settings (see image/site.example.toml)"
        }
        layout::MINIO_ENV => {
            "put MINIO_ROOT_USER=\"…\" and MINIO_ROOT_PASSWORD=\"…\" (at least 8 characters) there, \
             mode 0600; `qsfs-image configure --site site.toml` writes it from site settings"
        }
        _ => "it ships with the image: unpack the image again, or run `qsfs-image configure`",
    }
}

/// Checks the configs named in `names` (file names in `var/zdbfs/etc`; all of [`CHECKS`] when
/// empty) and returns one line per problem.
pub fn check_config(root: &Path, names: &[&str]) -> Vec<String> {
    let all: Vec<&str> = CHECKS.iter().map(|(_, file)| *file).collect();
    let names = if names.is_empty() { &all[..] } else { names };
    let mut problems = Vec::new();
    for name in names {
        let path = root.join(layout::ETC).join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            let default = PathBuf::from(format!("{}{DEFAULT_SUFFIX}", path.display()));
            if default.exists() {
                problems.push(format!(
                    "{} is missing: it is not installed yet; start qsfs-config.service (or run \
                     `qsfs-image install-config`) to install it from {}",
                    path.display(),
                    default.display()
                ));
            } else {
                problems.push(format!(
                    "{} is missing: {}",
                    path.display(),
                    what_to_put(name)
                ));
            }
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if SECRET_FILES.contains(name) && mode & 0o077 != 0 {
            problems.push(format!(
                "{} holds secrets but other users can read it (mode {mode:04o}): chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
        if let Err(e) = validate_config(name, &path) {
            problems.push(e.to_string());
        }
    }
    problems
}

/// Writes the configs rendered from `site` into the tree under `root` (supplying secrets to an
/// image built without them). Files that exist with other content are replaced only with
/// `force`. Returns the paths written.
pub fn configure(root: &Path, site: &Path, force: bool) -> Result<Vec<PathBuf>, Error> {
    let settings = SiteSettings::load(site)?;
    let files = render::render(Some(&settings))?;
    let scratch = super::fsutil::TempDir::new(&std::env::temp_dir(), "qsfs-image-check")?;
    check_rendered(&files, scratch.path())?;
    drop(scratch);
    let etc = root.join(layout::ETC);
    let mut conflicts = Vec::new();
    for file in &files {
        let path = etc.join(file.name);
        if let Ok(existing) = std::fs::read(&path) {
            if existing != file.text.as_bytes() && !force {
                conflicts.push(path.display().to_string());
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(Error::Usage(format!(
            "these files exist with other content (edited by hand?): {}; pass --force to \
             replace them",
            conflicts.join(", ")
        )));
    }
    std::fs::create_dir_all(&etc).map_err(|e| Error::io(&etc, e))?;
    let mut written = Vec::new();
    for file in &files {
        let path = etc.join(file.name);
        let mode = if file.secret { 0o600 } else { 0o644 };
        write_atomic(&path, file.text.as_bytes(), mode)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tree::{EntryInfo, ImageInfo, Role};

    fn image(defaults: &[(&str, &[u8], Role)]) -> ImageManifest {
        ImageManifest {
            schema: 1,
            image: ImageInfo {
                name: "qsfs".into(),
                version: "1".into(),
                arch: "x86_64".into(),
                qsfs_version: "1".into(),
                source_date_epoch: 0,
                build_time: String::new(),
                secrets: false,
            },
            components: vec![],
            ours: vec![],
            entries: defaults
                .iter()
                .map(|(name, bytes, role)| EntryInfo {
                    path: format!("var/zdbfs/etc/{name}.default"),
                    kind: "file".into(),
                    mode: if *role == Role::Secret {
                        "0600"
                    } else {
                        "0644"
                    }
                    .into(),
                    size: bytes.len() as u64,
                    sha256: Some(crate::image::fsutil::sha256_reader(*bytes).unwrap().0),
                    role: *role,
                })
                .collect(),
        }
    }

    fn ship(root: &Path, name: &str, bytes: &[u8]) {
        let dir = root.join(layout::ETC);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.default")), bytes).unwrap();
    }

    fn live(root: &Path, name: &str) -> String {
        std::fs::read_to_string(root.join(layout::ETC).join(name)).unwrap()
    }

    #[test]
    fn first_install_then_upgrades_keep_edits_and_follow_unedited_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        ship(root, "a.toml", b"a1");
        ship(root, "b.env", b"b1");
        ship(root, "minio.env", b"s1");
        let v1 = image(&[
            ("a.toml", b"a1", Role::Config),
            ("b.env", b"b1", Role::Config),
            ("minio.env", b"s1", Role::Secret),
        ]);
        let actions = install_from(root, &v1).unwrap();
        assert!(
            actions.iter().all(|a| matches!(a, Action::Installed(_))),
            "{actions:?}"
        );
        assert_eq!(live(root, "a.toml"), "a1");
        let mode = std::fs::metadata(root.join(layout::ETC).join("minio.env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Running again changes nothing.
        let actions = install_from(root, &v1).unwrap();
        assert!(
            actions.iter().all(|a| matches!(a, Action::Unchanged(_))),
            "{actions:?}"
        );

        // The operator edits a.toml; v2 changes both defaults.
        std::fs::write(root.join(layout::ETC).join("a.toml"), "a1 edited").unwrap();
        ship(root, "a.toml", b"a2");
        ship(root, "b.env", b"b2");
        let v2 = image(&[
            ("a.toml", b"a2", Role::Config),
            ("b.env", b"b2", Role::Config),
            ("minio.env", b"s1", Role::Secret),
        ]);
        let actions = install_from(root, &v2).unwrap();
        assert_eq!(
            actions,
            [
                Action::Kept("/var/zdbfs/etc/a.toml".into()),
                Action::Updated("/var/zdbfs/etc/b.env".into()),
                Action::Unchanged("/var/zdbfs/etc/minio.env".into()),
            ]
        );
        assert_eq!(live(root, "a.toml"), "a1 edited");
        assert_eq!(live(root, "b.env"), "b2");
        // The notice about a.toml is given once.
        let actions = install_from(root, &v2).unwrap();
        assert_eq!(
            actions[0],
            Action::Unchanged("/var/zdbfs/etc/a.toml".into())
        );
        assert_eq!(live(root, "a.toml"), "a1 edited");
    }

    #[test]
    fn a_tampered_default_is_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        ship(dir.path(), "a.toml", b"evil");
        let actions = install_from(dir.path(), &image(&[("a.toml", b"a1", Role::Config)])).unwrap();
        assert!(matches!(&actions[0], Action::Skipped(_, why) if why.contains("MANIFEST")));
        assert!(!dir.path().join(layout::ETC).join("a.toml").exists());
    }

    #[test]
    fn check_config_names_each_missing_file_and_what_to_put_there() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(layout::ETC)).unwrap();
        ship(root, layout::QSFS_TOML, b"");
        let problems = check_config(root, &[]);
        assert_eq!(problems.len(), CHECKS.len(), "{problems:#?}");
        assert!(problems[0].contains("zstor-default.toml is missing: put the zstor v0.5 config"));
        assert!(problems[1].contains("minio.env is missing: put MINIO_ROOT_USER"));
        assert!(problems[4].contains("qsfs.toml is missing: it is not installed yet"));

        let site_path = root.join("site.toml");
        std::fs::write(&site_path, crate::image::site::tests::sample()).unwrap();
        let written = configure(root, &site_path, false).unwrap();
        assert_eq!(written.len(), 4);
        std::fs::write(root.join(layout::ETC).join(layout::QSFS_TOML), "").unwrap();
        assert_eq!(check_config(root, &[]), Vec::<String>::new());

        let minio = root.join(layout::ETC).join(layout::MINIO_ENV);
        std::fs::set_permissions(&minio, std::fs::Permissions::from_mode(0o644)).unwrap();
        let problems = check_config(root, &[layout::MINIO_ENV]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("chmod 600"), "{problems:?}");

        std::fs::write(&minio, "MINIO_ROOT_USER=x\n").unwrap();
        let err = configure(root, &site_path, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        configure(root, &site_path, true).unwrap();
    }
}
