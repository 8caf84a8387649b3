//! Writing the image: a deterministic `.tar.gz` and the `SHA256SUMS` beside it; and the one
//! rule for what a tarball may hold ([`refusal`]), checked on every entry before anything in a
//! tarball is trusted.
//!
//! Entries go in the planned (sorted) order, as ustar headers with owner 0:0 and no user or
//! group names, the planned mode, and `SOURCE_DATE_EPOCH` as every mtime; the gzip header has
//! no timestamp and no file name, and the level is 6 (gzip's default). So the same inputs give
//! byte-identical output. Every file is re-hashed while it is copied in; a file that changed
//! since it was planned is an error. The tarball is written under a temporary name, fsynced
//! and renamed, so a failed build leaves nothing behind.

use super::fsutil::{write_atomic, HashingReader};
use super::layout;
use super::tree::{Content, Entry, Role};
use super::Error;
use crate::fsutil::{Durability, TempFile};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The file beside the tarballs that lists their sha256 (the `sha256sum -c` format).
pub const SUMS: &str = "SHA256SUMS";

/// Why a tar entry must never be unpacked, if it must not; `None` for an entry an image may
/// hold. Only regular files and directories, with a relative path of plain components (no
/// `..`, `.` or empty one, valid UTF-8, no control character) under `var/zdbfs` or inside
/// `etc/systemd/system/` or `etc/systemd/system-preset/` (never those directories themselves:
/// unpacking must not change a system directory), and no setuid, setgid or sticky bit. In
/// those two, only qsfs's own: units named `qsfs*` (and drop-in files in a `qsfs*.d/`
/// directory) and presets named `NN-qsfs*.preset`, so that an image cannot change another
/// unit (`sshd.service.d/…`) or enable one.
pub fn refusal(
    name: &[u8],
    kind: tar::EntryType,
    mode: u32,
    link: Option<&[u8]>,
) -> Option<String> {
    let link = || {
        String::from_utf8_lossy(link.unwrap_or_default())
            .escape_debug()
            .to_string()
    };
    let is_dir = match kind {
        tar::EntryType::Regular => false,
        tar::EntryType::Directory => true,
        tar::EntryType::Symlink => return Some(format!("is a symlink (to {})", link())),
        tar::EntryType::Link => return Some(format!("is a hard link (to {})", link())),
        other => {
            let what = match other {
                tar::EntryType::GNULongName => "a GNU long-name header".to_string(),
                tar::EntryType::GNULongLink => "a GNU long-link header".to_string(),
                tar::EntryType::XHeader => "a PAX extended header".to_string(),
                tar::EntryType::XGlobalHeader => "a PAX global header".to_string(),
                tar::EntryType::Char => "a character device".to_string(),
                tar::EntryType::Block => "a block device".to_string(),
                tar::EntryType::Fifo => "a fifo".to_string(),
                other => format!("an entry of type `{}`", other.as_byte().escape_ascii()),
            };
            return Some(format!(
                "is {what}: an image holds only files and directories"
            ));
        }
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return Some("its name is not UTF-8".into());
    };
    if name.chars().any(char::is_control) {
        return Some("has a control character".into());
    }
    if name.starts_with('/') {
        return Some("is an absolute path".into());
    }
    let path = if is_dir {
        name.strip_suffix('/').unwrap_or(name)
    } else {
        name
    };
    if path.split('/').any(|c| c == "..") {
        return Some("has a `..` component".into());
    }
    if path.split('/').any(|c| c.is_empty() || c == ".") {
        return Some("has a `.` or empty component".into());
    }
    let inside = |dir: &str| {
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    if !(path == layout::ROOT
        || inside(layout::ROOT)
        || inside(layout::UNITS)
        || inside(layout::PRESETS))
    {
        return Some(format!(
            "outside {}/, {}/ and {}/",
            layout::ROOT,
            layout::UNITS,
            layout::PRESETS
        ));
    }
    let qsfs_unit = |rest: &str| match rest.split_once('/') {
        None => rest.starts_with("qsfs"),
        Some((dir, file)) => dir.starts_with("qsfs") && dir.ends_with(".d") && !file.contains('/'),
    };
    let qsfs_preset = |rest: &str| {
        rest.split_once('-').is_some_and(|(priority, name)| {
            !priority.is_empty()
                && priority.bytes().all(|b| b.is_ascii_digit())
                && name.starts_with("qsfs")
                && name.ends_with(".preset")
                && !name.contains('/')
        })
    };
    if let Some(rest) = path.strip_prefix(&format!("{}/", layout::UNITS)) {
        if !qsfs_unit(rest) {
            return Some(format!(
                "not a qsfs unit: {}/ may hold only qsfs* units and qsfs*.d/ drop-in files",
                layout::UNITS
            ));
        }
    }
    if let Some(rest) = path.strip_prefix(&format!("{}/", layout::PRESETS)) {
        if !qsfs_preset(rest) {
            return Some(format!(
                "not a qsfs unit preset: {}/ may hold only NN-qsfs*.preset",
                layout::PRESETS
            ));
        }
    }
    if mode & 0o7000 != 0 {
        return Some(format!(
            "mode {:04o} has a setuid, setgid or sticky bit",
            mode & 0o7777
        ));
    }
    None
}

/// Why a tar header read from a tarball must not be trusted, if it must not: the builder
/// writes only POSIX ustar headers (magic `ustar\0`, version `00`: other formats read fields
/// such as the name prefix differently) with no user or group name (GNU tar, as root, takes
/// the owner from them when that user or group exists). Checked before [`refusal`].
pub fn header_refusal(header: &tar::Header) -> Option<String> {
    let Some(ustar) = header.as_ustar() else {
        let bytes = header.as_bytes();
        return Some(format!(
            "is not a ustar header (magic \"{}\", version \"{}\"): an image has only those",
            bytes[257..263].escape_ascii(),
            bytes[263..265].escape_ascii()
        ));
    };
    let (user, group) = (ustar.username_bytes(), ustar.groupname_bytes());
    if !user.is_empty() || !group.is_empty() {
        return Some(format!(
            "has a user or group name (\"{}\", \"{}\"): GNU tar would own it by name, an \
             image is root's by number",
            user.escape_ascii(),
            group.escape_ascii()
        ));
    }
    None
}

/// The gzip level (`gzip`'s and `tar -czf`'s default).
pub const LEVEL: u32 = 6;

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `entries` as a gzipped tarball to `target`; returns the tarball's sha256. An entry
/// that [`refusal`] would refuse (a unit file named with a control character, say) is an error
/// before anything is written: the builder never makes an image that `verify` refuses. A
/// tarball that holds a secret is mode 0600 from its creation on, else 0644.
pub fn write(entries: &[Entry], epoch: u64, target: &Path) -> Result<String, Error> {
    let refused: Vec<(String, String)> = entries
        .iter()
        .filter_map(|e| {
            let kind = if e.is_dir() {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            };
            let why = refusal(e.path.as_bytes(), kind, e.mode, None)?;
            Some((e.path.escape_debug().to_string(), why))
        })
        .collect();
    if !refused.is_empty() {
        return Err(Error::UnsafeEntries {
            path: target.to_path_buf(),
            entries: refused,
        });
    }
    let io = |e: std::io::Error| Error::io(target, e);
    let mode = if entries.iter().any(|e| e.role == Role::Secret) {
        0o600
    } else {
        0o644
    };
    let mut temp = TempFile::create(target, mode).map_err(io)?;
    let hashing = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, temp.file()),
        hasher: Sha256::new(),
    };
    let gzip = flate2::GzBuilder::new().write(hashing, flate2::Compression::new(LEVEL));
    let mut tar = tar::Builder::new(gzip);
    for entry in entries {
        append(&mut tar, entry, epoch)?;
    }
    let gzip = tar.into_inner().map_err(io)?;
    let HashingWriter { inner, hasher } = gzip.finish().map_err(io)?;
    inner.into_inner().map_err(|e| io(e.into_error()))?;
    let sha256 = super::hex(&hasher.finalize());
    temp.persist(Durability::Durable).map_err(io)?;
    Ok(sha256)
}

fn append<W: Write>(tar: &mut tar::Builder<W>, entry: &Entry, epoch: u64) -> Result<(), Error> {
    let mut header = tar::Header::new_ustar();
    header.set_mode(entry.mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(epoch);
    header.set_size(entry.size);
    let path = if entry.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        format!("{}/", entry.path)
    } else {
        header.set_entry_type(tar::EntryType::Regular);
        entry.path.clone()
    };
    header
        .set_path(&path)
        .map_err(|e| Error::io(&entry.path, e))?;
    header.set_cksum();
    match &entry.content {
        Content::None => tar
            .append(&header, std::io::empty())
            .map_err(|e| Error::io(&entry.path, e)),
        Content::Bytes(bytes) => tar
            .append(&header, &bytes[..])
            .map_err(|e| Error::io(&entry.path, e)),
        Content::File(source) => {
            let changed = || {
                Error::io(
                    source,
                    std::io::Error::other(format!(
                        "changed while the image was being built (for {})",
                        entry.path
                    )),
                )
            };
            let file = std::fs::File::open(source).map_err(|e| Error::io(source, e))?;
            let len = file.metadata().map_err(|e| Error::io(source, e))?.len();
            if len != entry.size {
                return Err(changed());
            }
            let mut reader = HashingReader::new(file.take(entry.size));
            tar.append(&header, &mut reader)
                .map_err(|e| Error::io(source, e))?;
            if Some(reader.finish()) != entry.sha256 {
                return Err(changed());
            }
            Ok(())
        }
    }
}

/// Adds (or replaces) the line for `file_name` in `dir/SHA256SUMS`, sorted by name (the
/// `sha256sum -c` format), keeping the lines of other files unless `only_this` (a signed
/// build: its signature vouches for this build's tarball, never for lines it did not write).
pub fn write_sha256sums(
    dir: &Path,
    file_name: &str,
    sha256: &str,
    only_this: bool,
) -> Result<(), Error> {
    let path = dir.join(SUMS);
    let existing = match std::fs::read_to_string(&path) {
        Ok(_) if only_this => String::new(),
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut lines: Vec<(String, String)> = existing
        .lines()
        .filter_map(|line| {
            let (sum, name) = line.split_once("  ")?;
            Some((name.to_string(), sum.to_string()))
        })
        .filter(|(name, _)| name != file_name)
        .collect();
    lines.push((file_name.to_string(), sha256.to_string()));
    lines.sort();
    let text: String = lines
        .iter()
        .map(|(name, sum)| format!("{sum}  {name}\n"))
        .collect();
    write_atomic(&path, text.as_bytes(), 0o644)
}

/// The sha256 recorded for `file_name` in `dir/SHA256SUMS`, if there is one.
pub fn read_sha256sums(dir: &Path, file_name: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(SUMS)).ok()?;
    sha256_in(&text, file_name)
}

/// The sha256 that the `SHA256SUMS` text `sums` records for `file_name`, if it records one.
pub fn sha256_in(sums: &str, file_name: &str) -> Option<String> {
    sums.lines().find_map(|line| {
        let (sum, name) = line.split_once("  ")?;
        (name.trim_start_matches('*') == file_name).then(|| sum.to_ascii_lowercase())
    })
}

/// Unpacks a verified image tarball into `dir`; returns the number of entries. Every entry is checked
/// again as `verify` checks it (only plain files and directories under the image's
/// directories), so nothing outside `dir` is ever written.
pub fn unpack(tarball: &Path, dir: &Path) -> Result<usize, Error> {
    let file = std::fs::File::open(tarball).map_err(|e| Error::io(tarball, e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let bad = |e: std::io::Error| Error::NotAnImage {
        path: tarball.to_path_buf(),
        message: e.to_string(),
    };
    let mut count = 0;
    for entry in archive.entries().map_err(bad)?.raw(true) {
        let mut entry = entry.map_err(bad)?;
        let header = entry.header().clone();
        let mode = header.mode().map_err(bad)? & 0o7777;
        let name = entry.path_bytes().into_owned();
        if let Some(why) =
            header_refusal(&header).or_else(|| refusal(&name, header.entry_type(), mode, None))
        {
            return Err(Error::UnsafeEntries {
                path: tarball.to_path_buf(),
                entries: vec![(
                    String::from_utf8_lossy(&name).escape_debug().to_string(),
                    why,
                )],
            });
        }
        let path = dir.join(String::from_utf8_lossy(&name).as_ref());
        if header.entry_type().is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(&path)
                .map_err(|e| Error::io(&path, e))?;
            // The umask may have narrowed the mode.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(&path, e))?;
        } else {
            let parent = crate::fsutil::parent(&path);
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            let mut temp =
                crate::fsutil::TempFile::create(&path, mode).map_err(|e| Error::io(&path, e))?;
            std::io::copy(&mut entry, temp.file()).map_err(|e| Error::io(&path, e))?;
            temp.persist(crate::fsutil::Durability::Durable)
                .map_err(|e| Error::io(&path, e))?;
        }
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries(dir: &Path) -> Vec<Entry> {
        let file = dir.join("input");
        std::fs::write(&file, b"#!/bin/sh\necho hi\n").unwrap();
        let sha = crate::image::fsutil::sha256_file(&file).unwrap().0;
        vec![
            Entry {
                path: "var/zdbfs".into(),
                role: Role::Dir,
                mode: 0o755,
                size: 0,
                sha256: None,
                content: Content::None,
            },
            Entry {
                path: "var/zdbfs/bin/zdb".into(),
                role: Role::Binary,
                mode: 0o755,
                size: 18,
                sha256: Some(sha),
                content: Content::File(file),
            },
            Entry {
                path: "var/zdbfs/etc/minio.env.default".into(),
                role: Role::Secret,
                mode: 0o600,
                size: 3,
                sha256: None,
                content: Content::Bytes(b"x=1".to_vec()),
            },
        ]
    }

    #[test]
    fn same_entries_same_bytes_and_normalized_headers() {
        let dir = tempfile::tempdir().unwrap();
        let list = entries(dir.path());
        let a = dir.path().join("a.tar.gz");
        let b = dir.path().join("b.tar.gz");
        let sha_a = write(&list, 1_700_000_000, &a).unwrap();
        let sha_b = write(&list, 1_700_000_000, &b).unwrap();
        assert_eq!(sha_a, sha_b);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&a), 0o600, "it holds a secret");
        let public = dir.path().join("public.tar.gz");
        write(&list[..2], 0, &public).unwrap();
        assert_eq!(mode(&public), 0o644);
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap());
        assert_eq!(crate::image::fsutil::sha256_file(&a).unwrap().0, sha_a);
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "no gzip timestamp");

        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.mtime().unwrap(), 1_700_000_000);
            seen.push((
                entry.path().unwrap().display().to_string(),
                h.mode().unwrap(),
            ));
        }
        assert_eq!(
            seen,
            [
                ("var/zdbfs/".to_string(), 0o755),
                ("var/zdbfs/bin/zdb".to_string(), 0o755),
                ("var/zdbfs/etc/minio.env.default".to_string(), 0o600),
            ]
        );
    }

    #[test]
    fn a_file_that_changed_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let list = entries(dir.path());
        std::fs::write(dir.path().join("input"), b"#!/bin/sh\necho HI\n").unwrap();
        let target = dir.path().join("out.tar.gz");
        let err = write(&list, 0, &target).unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["input"]);
    }

    #[test]
    fn only_plain_files_and_directories_of_the_image_may_be_unpacked() {
        use tar::EntryType::{Directory as D, Regular as F};
        let allowed = [
            ("var/zdbfs", D, 0o755),
            ("var/zdbfs/", D, 0o755),
            ("var/zdbfs/spool/", D, 0o700),
            ("var/zdbfs/bin/zdb", F, 0o755),
            ("etc/systemd/system/qsfs.target", F, 0o644),
            ("etc/systemd/system/qsfs-zdb.service.d/", D, 0o755),
            ("etc/systemd/system-preset/50-qsfs.preset", F, 0o644),
        ];
        for (name, kind, mode) in allowed {
            assert_eq!(refusal(name.as_bytes(), kind, mode, None), None, "{name}");
        }
        let refused: &[(&[u8], tar::EntryType, &str)] = &[
            (b"etc/cron.d/x", F, "outside var/zdbfs/"),
            (b"var/zdbfsx/bin", F, "outside"),
            (b"var/", D, "outside"),
            (b"etc/systemd/system", D, "outside"),
            (b"etc/systemd/system/", D, "outside"),
            (b"etc/systemd/systemx/a", F, "outside"),
            (
                b"var/zdbfs/bin/../../../root/.ssh/authorized_keys",
                F,
                "`..`",
            ),
            (b"var/zdbfs/..", D, "`..`"),
            (b"/var/zdbfs/bin/zdb", F, "absolute"),
            (b"./var/zdbfs/bin/zdb", F, "`.` or empty"),
            (b"var//zdbfs/bin/zdb", F, "`.` or empty"),
            (b"var/zdbfs/bin/", F, "`.` or empty"),
            (b"var/zdbfs/bin/\xff", F, "not UTF-8"),
            (b"var/zdbfs/bin/a\rb", F, "control character"),
            (
                b"var/zdbfs/bin/sh",
                tar::EntryType::Symlink,
                "symlink (to /bin/sh)",
            ),
            (
                b"var/zdbfs/bin/sh",
                tar::EntryType::Link,
                "hard link (to /bin/sh)",
            ),
            (b"var/zdbfs/dev", tar::EntryType::Block, "a block device"),
            (b"var/zdbfs/dev", tar::EntryType::Char, "a character device"),
            (b"var/zdbfs/f", tar::EntryType::GNUSparse, "of type `S`"),
            (b"var/zdbfs/f", tar::EntryType::Continuous, "of type `7`"),
            (
                b"etc/systemd/system/sshd.service.d/x.conf",
                F,
                "not a qsfs unit",
            ),
            (b"etc/systemd/system/qsfs.d/a/b", F, "not a qsfs unit"),
            (
                b"etc/systemd/system/qsfs.target.wants/x",
                F,
                "not a qsfs unit",
            ),
            (
                b"etc/systemd/system-preset/qsfs.preset",
                F,
                "not a qsfs unit preset",
            ),
            (
                b"etc/systemd/system-preset/90-sshd.preset",
                F,
                "not a qsfs unit preset",
            ),
        ];
        for (name, kind, why) in refused {
            let got = refusal(name, *kind, 0o644, Some(b"/bin/sh")).unwrap_or_default();
            assert!(
                got.contains(why),
                "{:?}: {got:?}",
                String::from_utf8_lossy(name)
            );
        }
        let got = refusal(b"var/zdbfs/bin/su", F, 0o4755, None).unwrap();
        assert_eq!(got, "mode 4755 has a setuid, setgid or sticky bit");
        assert!(refusal(b"var/zdbfs/spool", D, 0o1777, None).is_some());
    }

    #[test]
    fn an_entry_verify_would_refuse_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut list = entries(dir.path());
        list[2].path = "etc/systemd/system/a\nb.service".into();
        let target = dir.path().join("out.tar.gz");
        let err = write(&list, 0, &target).unwrap_err();
        assert!(
            err.to_string()
                .contains("a\\nb.service: has a control character"),
            "{err}"
        );
        assert_eq!(err.exit_code(), crate::image::exit::UNSAFE_ENTRY);
        assert!(!target.exists());
    }

    #[test]
    fn sha256sums_keep_other_files() {
        let dir = tempfile::tempdir().unwrap();
        write_sha256sums(dir.path(), "b.tar.gz", "22", false).unwrap();
        write_sha256sums(dir.path(), "a.tar.gz", "11", false).unwrap();
        write_sha256sums(dir.path(), "b.tar.gz", "33", false).unwrap();
        let text = std::fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap();
        assert_eq!(text, "11  a.tar.gz\n33  b.tar.gz\n");
        assert_eq!(
            read_sha256sums(dir.path(), "b.tar.gz").as_deref(),
            Some("33")
        );
        assert_eq!(read_sha256sums(dir.path(), "c.tar.gz"), None);
    }

    #[test]
    fn an_unsafe_tarball_is_never_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("evil.tar.gz");
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&image).unwrap(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(4);
        header.set_path("etc/passwd").unwrap();
        header.set_cksum();
        builder.append(&header, &b"evil"[..]).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let err = unpack(&image, &root).unwrap_err();
        assert_eq!(err.exit_code(), crate::image::exit::UNSAFE_ENTRY);
        assert!(err.to_string().contains("etc/passwd"), "{err}");
        assert!(!root.join("etc/passwd").exists());
    }
}
