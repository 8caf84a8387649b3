//! `qsfs-image inspect`: what an image holds, from its `MANIFEST`: the components and their
//! versions, our version, the build time, and whether secrets are inside.

use super::layout;
use super::tree::{ImageManifest, Role};
use super::Error;
use std::io::Read;
use std::path::Path;

/// Reads the `MANIFEST` of a tarball (it sorts early, so little is decompressed).
pub fn read_manifest(tarball: &Path) -> Result<ImageManifest, Error> {
    let file = std::fs::File::open(tarball).map_err(|e| Error::io(tarball, e))?;
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let bad = |e: std::io::Error| Error::NotAnImage {
        path: tarball.to_path_buf(),
        message: e.to_string(),
    };
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if entry.path().map_err(bad)?.as_os_str() == layout::MANIFEST {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(bad)?;
            return ImageManifest::parse(&text, tarball);
        }
    }
    Err(Error::NotAnImage {
        path: tarball.to_path_buf(),
        message: format!("it has no {}", layout::MANIFEST),
    })
}

/// The human-readable summary of an image.
pub fn to_text(manifest: &ImageManifest) -> String {
    let image = &manifest.image;
    let mut text = format!(
        "image        {} {} ({})\nqsfs         {} ({})\nbuilt        {} (SOURCE_DATE_EPOCH={})\n",
        image.name,
        image.version,
        image.arch,
        image.qsfs_version,
        manifest
            .ours
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        image.build_time,
        image.source_date_epoch,
    );
    let secrets: Vec<&str> = manifest
        .entries
        .iter()
        .filter(|e| e.role == Role::Secret)
        .map(|e| e.path.as_str())
        .collect();
    if secrets.is_empty() {
        text.push_str(
            "secrets      none inside: supply the credentials (zstor's config, MinIO's user and password) after unpacking \
             (qsfs-image configure --site FILE); the units refuse to start until then\n",
        );
    } else {
        text.push_str(&format!(
            "secrets      inside: {} (mode 0600)\n",
            secrets.join(", ")
        ));
    }
    text.push_str("components\n");
    for c in manifest.components.iter().chain(&manifest.ours) {
        text.push_str(&format!(
            "  {:<14} {:<30} sha256 {}  {}\n",
            c.name, c.version, c.sha256, c.origin
        ));
    }
    let files = manifest.entries.iter().filter(|e| e.kind == "file");
    let (count, bytes) = files.fold((0, 0u64), |(n, b), e| (n + 1, b + e.size.unwrap_or(0)));
    text.push_str(&format!(
        "entries      {} ({} files, {:.1} MiB unpacked, secrets not counted)\n",
        manifest.entries.len() + 1,
        count + 1,
        bytes as f64 / (1024.0 * 1024.0)
    ));
    text
}
