//! `qsfs-image build`: manifest + site settings + components → one deterministic tarball.
//!
//! The order matters for "nothing half-done": the manifest, the site settings and every config
//! that will be shipped are read and checked first; then the components are found (downloads
//! may record new hashes in the lock file); then our binaries; then the tarball is written
//! under a temporary name and renamed, and `SHA256SUMS` beside it is updated (and signed with
//! `--sign`; see [`super::sign`]).

use super::fetch::{self, FetchOptions};
use super::fsutil::TempDir;
use super::lock::LockFile;
use super::manifest::Manifest;
use super::render::{self, check_rendered, validate_config};
use super::sign::{self, Signer, SumsSignature};
use super::site::SiteSettings;
use super::tree::{self, ImageManifest, Inputs};
use super::{tarball, Error};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The manifest (`image/manifest.toml`).
    pub manifest: PathBuf,
    /// The site settings; without them the image holds no secrets.
    pub site: Option<PathBuf>,
    /// Where the tarball and `SHA256SUMS` go.
    pub output_dir: PathBuf,
    /// How to find the components.
    pub fetch: FetchOptions,
    /// The value of `SOURCE_DATE_EPOCH`, if set; otherwise the last commit's time is used.
    pub source_date_epoch: Option<String>,
    /// The key that signs `SHA256SUMS` (loaded before anything is built).
    pub signer: Option<Signer>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The tarball.
    pub tarball: PathBuf,
    /// Its sha256 (also in `SHA256SUMS`).
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its `MANIFEST`.
    pub manifest: ImageManifest,
    /// What became of `SHA256SUMS.minisig`.
    pub signature: SumsSignature,
}

/// Builds the image.
pub fn build(options: &BuildOptions) -> Result<BuildReport, Error> {
    let manifest = Manifest::load(&options.manifest)?;
    let site = options
        .site
        .as_deref()
        .map(SiteSettings::load)
        .transpose()?;
    let rendered = render::render(site.as_ref())?;

    let mut units = Vec::new();
    for dir in &manifest.units_dirs {
        units.extend(tree::list_units(dir).map_err(|e| in_manifest(&manifest, "files.units", e))?);
    }
    if !units.iter().any(|(name, _)| name == "qsfs.target") {
        let dirs: Vec<String> = manifest
            .units_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        return Err(super::manifest::invalid(
            &manifest.path,
            "files.units",
            &format!(
                "{} has no qsfs.target: the image would have nothing to start",
                dirs.join(", ")
            ),
        )
        .into());
    }
    let templates = tree::list_files(&manifest.etc_dir, |_| true)
        .map_err(|e| in_manifest(&manifest, "files.etc", e))?;

    // Every config that will be shipped must load with the parser of its program.
    let scratch = TempDir::new(&std::env::temp_dir(), "qsfs-image-check")?;
    check_rendered(&rendered, scratch.path())?;
    drop(scratch);
    for (name, path) in &templates {
        if !rendered.iter().any(|r| r.name == name) {
            validate_config(name, path)?;
        }
    }

    let epoch = source_date_epoch(options.source_date_epoch.as_deref(), &manifest)?;
    std::fs::create_dir_all(&options.output_dir).map_err(|e| Error::io(&options.output_dir, e))?;

    let mut lock = LockFile::load(&manifest.lock_path())?;
    let components = fetch::components(&manifest, &mut lock, &options.fetch)?;
    let ours = fetch::ours(&manifest, &options.fetch, epoch)?;

    let (entries, image_manifest) = tree::plan(&Inputs {
        name: &manifest.name,
        version: &manifest.version,
        epoch,
        components: &components,
        ours: &ours,
        units: &units,
        templates: &templates,
        rendered: &rendered,
    })?;
    let name = manifest.tarball_name();
    let target = options.output_dir.join(&name);
    let sha256 = tarball::write(&entries, epoch, &target)?;
    let signed = options.signer.is_some();
    tarball::write_sha256sums(&options.output_dir, &name, &sha256, signed)?;
    let signature = sign::after_sums_written(&options.output_dir, options.signer.as_ref())?;
    let size = std::fs::metadata(&target)
        .map_err(|e| Error::io(&target, e))?
        .len();
    Ok(BuildReport {
        tarball: target,
        sha256,
        size,
        manifest: image_manifest,
        signature,
    })
}

/// An unreadable `files.units`/`files.etc` directory, reported against the manifest key.
fn in_manifest(manifest: &Manifest, key: &str, error: Error) -> Error {
    match error {
        Error::Io { path, source } => super::manifest::invalid(
            &manifest.path,
            key,
            &format!("cannot read {}: {source}", path.display()),
        )
        .into(),
        other => other,
    }
}

/// `SOURCE_DATE_EPOCH` if given, else the time of the last commit of the repository that holds
/// the manifest.
fn source_date_epoch(value: Option<&str>, manifest: &Manifest) -> Result<u64, Error> {
    if let Some(value) = value {
        return value.trim().parse().map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH=`{value}` is not a Unix time in seconds"
            ))
        });
    }
    let dir = manifest
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["log", "-1", "--pretty=%ct"])
        .output();
    let hint = "set SOURCE_DATE_EPOCH (a Unix time) for the build time and every mtime";
    match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                Error::Usage(format!(
                    "git log printed no commit time in {}: {hint}",
                    dir.display()
                ))
            }),
        Ok(out) => Err(Error::Usage(format!(
            "cannot take the build time from the last commit in {} ({}): {hint}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Err(e) => Err(Error::Usage(format!(
            "cannot run git for the build time ({e}): {hint}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_from_the_environment_or_git() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("image/manifest.toml");
        let manifest = Manifest::load(&path).unwrap();
        assert_eq!(
            source_date_epoch(Some("1700000000"), &manifest).unwrap(),
            1_700_000_000
        );
        let err = source_date_epoch(Some("yesterday"), &manifest).unwrap_err();
        assert!(err.to_string().contains("SOURCE_DATE_EPOCH"), "{err}");
        // This package is a git checkout: the last commit's time.
        if let Ok(epoch) = source_date_epoch(None, &manifest) {
            assert!(epoch > 1_600_000_000);
        }
    }
}
