//! `image/manifest.toml`: what goes into an image.
//!
//! The manifest names the image and its version, the four third-party components (each with a
//! version and either a `url`, pinned by `sha256` here or in the lock file, or a local `path`),
//! where our own binaries come from (built from this package, or a directory), and the
//! directories holding the units and the config templates. Relative paths are relative to the
//! manifest's own directory. The format is documented in `image/README.md`.

use super::{Error, COMPONENTS};
use crate::config::{ConfigError, Source};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The manifest as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    image: ImageSection,
    components: BTreeMap<String, ComponentSpec>,
    ours: OursSpec,
    files: FilesSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageSection {
    name: String,
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentSpec {
    version: String,
    url: Option<String>,
    path: Option<PathBuf>,
    #[serde(default, deserialize_with = "sha256_hex")]
    sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OursSpec {
    package: Option<PathBuf>,
    dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesSpec {
    units: UnitDirs,
    etc: PathBuf,
}

/// `units = "DIR"` or `units = ["DIR", …]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum UnitDirs {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

fn sha256_hex<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if super::is_sha256(&text) {
        Ok(Some(text.to_ascii_lowercase()))
    } else {
        Err(serde::de::Error::custom(format!(
            "`{text}` is not a sha256 (64 hex digits)"
        )))
    }
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// The image name (the tarball is `<name>-<version>-x86_64.tar.gz`).
    pub name: String,
    /// The image version (default: this package's version).
    pub version: String,
    /// The third-party components, in the order of [`COMPONENTS`].
    pub components: Vec<Component>,
    /// Where our binaries come from.
    pub ours: Ours,
    /// The directories with the unit files (`*.service`, `*.target`, `*.preset`, and drop-in
    /// files `qsfs*.d/*.conf`), in the manifest's order.
    pub units_dirs: Vec<PathBuf>,
    /// The directory with the config templates.
    pub etc_dir: PathBuf,
}

/// A third-party component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// One of [`COMPONENTS`].
    pub name: String,
    /// Its version, as recorded in the image's `MANIFEST`.
    pub version: String,
    /// Where it comes from.
    pub source: ComponentSource,
    /// The pinned sha256 (lowercase hex), if the manifest gives one.
    pub sha256: Option<String>,
}

/// Where a component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// Downloaded (or taken from the cache).
    Url(String),
    /// A local file.
    Path(PathBuf),
}

/// Where our own binaries come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ours {
    /// Built with `cargo build --release` from the package in this directory.
    Package(PathBuf),
    /// Taken from this directory.
    Dir(PathBuf),
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, Error> {
        let text = crate::config::read(path)?;
        let source = Source::new(path, &text);
        let file: ManifestFile = source.parse()?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };

        if !valid_file_name_part(&file.image.name) {
            return Err(source
                .invalid("image.name", "use letters, digits, `.`, `_` and `-` only")
                .into());
        }
        let version = file
            .image
            .version
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
        if !valid_file_name_part(&version) {
            return Err(source
                .invalid(
                    "image.version",
                    "use letters, digits, `.`, `_`, `+` and `-` only",
                )
                .into());
        }

        for name in file.components.keys() {
            if !COMPONENTS.contains(&name.as_str()) {
                let err = source.invalid(
                    &format!("components.{name}"),
                    format!("unknown component (known: {})", COMPONENTS.join(", ")),
                );
                return Err(Error::UnknownComponent(err.to_string()));
            }
        }
        let mut components = Vec::new();
        for name in COMPONENTS {
            let Some(spec) = file.components.get(*name) else {
                return Err(source
                    .invalid(
                        "components",
                        format!(
                            "[components.{name}] is missing: every image needs {}",
                            COMPONENTS.join(", ")
                        ),
                    )
                    .into());
            };
            let key = format!("components.{name}");
            let invalid = |sub: &str, message: &str| -> Error {
                source.invalid(&format!("{key}.{sub}"), message).into()
            };
            if spec.version.trim().is_empty() {
                return Err(invalid("version", "must not be empty"));
            }
            let component_source = match (&spec.url, &spec.path) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "path",
                        "give either `url` or `path`, not both (comment one out)",
                    ))
                }
                (None, None) => {
                    return Err(source
                        .invalid(&key, "needs `url` (with `sha256`) or a local `path`")
                        .into())
                }
                (Some(url), None) => {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(invalid("url", "must start with https:// or http://"));
                    }
                    ComponentSource::Url(url.clone())
                }
                (None, Some(path)) => ComponentSource::Path(resolve(path)),
            };
            components.push(Component {
                name: name.to_string(),
                version: spec.version.clone(),
                source: component_source,
                sha256: spec.sha256.clone(),
            });
        }

        let ours = match (&file.ours.package, &file.ours.dir) {
            (Some(package), None) => Ours::Package(resolve(package)),
            (None, Some(dir)) => Ours::Dir(resolve(dir)),
            _ => {
                return Err(source
                    .invalid("ours", "give exactly one of `package` or `dir`")
                    .into())
            }
        };

        let units_dirs: Vec<PathBuf> = match &file.files.units {
            UnitDirs::One(dir) => vec![resolve(dir)],
            UnitDirs::Many(dirs) => dirs.iter().map(|d| resolve(d)).collect(),
        };
        if units_dirs.is_empty() {
            return Err(source
                .invalid("files.units", "name at least one directory")
                .into());
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            name: file.image.name,
            version,
            components,
            ours,
            units_dirs,
            etc_dir: resolve(&file.files.etc),
        })
    }

    /// The lock file that belongs to this manifest: `<dir>/<stem>.lock`
    /// (`image/manifest.lock` for `image/manifest.toml`).
    pub fn lock_path(&self) -> PathBuf {
        self.path.with_extension("lock")
    }

    /// The tarball's file name: `<name>-<version>-x86_64.tar.gz`.
    pub fn tarball_name(&self) -> String {
        format!("{}-{}-{}.tar.gz", self.name, self.version, super::ARCH)
    }
}

fn valid_file_name_part(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with('.')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

/// A config error for a manifest problem found after parsing (for callers outside this module).
pub fn invalid(path: &Path, key: &str, message: &str) -> ConfigError {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    Source::new(path, &text).invalid(key, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::exit;

    pub(crate) const GOOD: &str = r#"
[image]
name = "qsfs"
version = "1.2.3"

[components.zdb]
version = "2.0.8"
url = "https://example.org/zdb"
sha256 = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"

[components.zdbfs]
version = "0.1.11"
path = "bin/zdbfs"

[components.zstor]
version = "0.5.0-rc.1"
url = "https://example.org/zstor"

[components.minio]
version = "RELEASE.2025-04-22T22-12-26Z"
path = "/opt/minio"

[ours]
package = ".."

[files]
units = "../units"
etc = "../etc"
"#;

    fn load(text: &str) -> Result<Manifest, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.toml");
        std::fs::write(&path, text).unwrap();
        Manifest::load(&path)
    }

    #[test]
    fn good_manifest_loads_with_paths_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.toml");
        std::fs::write(&path, GOOD).unwrap();
        let m = Manifest::load(&path).unwrap();
        assert_eq!(m.tarball_name(), "qsfs-1.2.3-x86_64.tar.gz");
        assert_eq!(m.lock_path(), dir.path().join("manifest.lock"));
        let names: Vec<_> = m.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, COMPONENTS);
        assert_eq!(
            m.components[0].sha256.as_deref(),
            Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
        );
        assert_eq!(
            m.components[1].source,
            ComponentSource::Path(dir.path().join("bin/zdbfs"))
        );
        assert_eq!(
            m.components[3].source,
            ComponentSource::Path("/opt/minio".into())
        );
        assert_eq!(m.ours, Ours::Package(dir.path().join("..")));
        assert_eq!(m.units_dirs, [dir.path().join("../units")]);
    }

    #[test]
    fn the_demo_manifest_ships_its_local_backends() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let m = Manifest::load(&repo.join("image/demo.toml")).unwrap();
        let units: Vec<String> = m
            .units_dirs
            .iter()
            .flat_map(|dir| crate::image::tree::list_units(dir).unwrap())
            .map(|(name, _)| name)
            .collect();
        for unit in [
            "qsfs.target",
            "qsfs-demo-meta-backend@.service",
            "qsfs-demo-data-backend@.service",
            "qsfs.target.d/50-demo-backends.conf",
            "qsfs-zstor.service.d/50-demo-zstor-store.conf",
        ] {
            assert!(units.iter().any(|u| u == unit), "{unit} in {units:?}");
        }
        let site =
            crate::image::site::SiteSettings::load(&repo.join("image/demo-site.toml")).unwrap();
        let wants = std::fs::read_to_string(
            repo.join("image/demo-units/qsfs.target.d/50-demo-backends.conf"),
        )
        .unwrap();
        for (backend, kind) in site.zstor.meta_backends.iter().map(|b| (b, "meta")).chain(
            site.zstor
                .groups
                .iter()
                .flat_map(|g| &g.backends)
                .map(|b| (b, "data")),
        ) {
            let port = backend.address.port();
            assert!(
                wants.contains(&format!("qsfs-demo-{kind}-backend@{port}.service")),
                "{} is started by qsfs.target",
                backend.address
            );
        }
    }

    #[test]
    fn units_may_be_several_directories_but_not_none() {
        let m = load(&GOOD.replace(
            "units = \"../units\"",
            "units = [\"../units\", \"/opt/demo-units\"]",
        ))
        .unwrap();
        assert_eq!(m.units_dirs.len(), 2);
        assert_eq!(m.units_dirs[1], PathBuf::from("/opt/demo-units"));
        let err = load(&GOOD.replace("units = \"../units\"", "units = []")).unwrap_err();
        assert!(err.to_string().contains("files.units"), "{err}");
    }

    #[test]
    fn version_defaults_to_the_package_version() {
        let m = load(&GOOD.replace("version = \"1.2.3\"\n", "")).unwrap();
        assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn the_shipped_manifest_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("image/manifest.toml");
        let m = Manifest::load(&path).unwrap();
        assert_eq!(m.name, "qsfs");
        for c in &m.components {
            assert!(matches!(c.source, ComponentSource::Url(_)), "{c:?}");
        }
        assert_eq!(m.components[0].version, "2.0.7");
    }

    #[test]
    fn errors_name_the_key_and_have_their_exit_code() {
        let cases = [
            (
                GOOD.replace("[components.minio]", "[components.minioo]"),
                "components.minioo",
                exit::UNKNOWN_COMPONENT,
            ),
            (
                GOOD.replace(
                    "path = \"bin/zdbfs\"",
                    "path = \"bin/zdbfs\"\nurl = \"https://x\"",
                ),
                "components.zdbfs.path",
                exit::CONFIG,
            ),
            (
                GOOD.replace("url = \"https://example.org/zstor\"", "url = \"ftp://x\""),
                "components.zstor.url",
                exit::CONFIG,
            ),
            (
                GOOD.replace("sha256 = \"ABCDEF", "sha256 = \"XYZ"),
                "components.zdb.sha256",
                exit::CONFIG,
            ),
            (
                GOOD.replace("package = \"..\"", "package = \"..\"\ndir = \"x\""),
                "ours",
                exit::CONFIG,
            ),
            (
                GOOD.replace("name = \"qsfs\"", "name = \"../evil\""),
                "image.name",
                exit::CONFIG,
            ),
            (
                GOOD.replace("[files]", "[files]\nextra = 1"),
                "files.extra",
                exit::CONFIG,
            ),
        ];
        for (text, key, code) in cases {
            let err = load(&text).unwrap_err();
            let shown = err.to_string();
            assert!(shown.contains(&format!("key `{key}`")), "{key}: {shown}");
            assert!(shown.contains("manifest.toml:"), "{shown}");
            assert_eq!(err.exit_code(), code, "{shown}");
        }
        let text = GOOD.replace("[components.zstor]", "[unused.zstor]");
        let err = load(&text).unwrap_err();
        assert_eq!(err.exit_code(), exit::CONFIG, "{err}");
    }

    #[test]
    fn missing_and_unreadable_manifests() {
        let err = Manifest::load(Path::new("/nonexistent/manifest.toml")).unwrap_err();
        assert_eq!(err.exit_code(), exit::NO_INPUT);
        assert!(err.to_string().contains("/nonexistent/manifest.toml"));
        let err = load("[image\nname=").unwrap_err();
        assert_eq!(err.exit_code(), exit::CONFIG);
    }
}
