//! Restore points ("cuts"): what a fresh VM restores, taken while zdb waits so that zdbfs-meta
//! and zdbfs-data are seen at one instant (qss#38, issue 12).
//!
//! * **Taken** by `zdb-hook` in the blocking `jump-index` of zdbfs-data and in `close`
//!   ([`take`]): every index file and descriptor of both namespaces changed since the last cut
//!   is copied into `<state>/cuts/<id>/<ns>/<name>` (its zstor key is that path, so a cut's
//!   files never overwrite another cut's), and so is zdbfs-meta's active data file; zdbfs-data's
//!   data file (sealed by the jump, or the active one at a stop) keeps its own key. An
//!   unchanged file is named by the key of the cut that copied it. The cut's `manifest.json`,
//!   written last, lists every file a restore needs.
//! * **Published** by `zstor_monitor`: a cut's copies are uploaded, then, once every data file
//!   it needs is verified remote, its manifest is stored under the one key [`Cuts::latest`]
//!   (zstor replaces a key's metadata only once the new copy is whole). What the backends hold
//!   under that key is therefore always a whole, consistent restore point.
//! * **Restored** by `namespaces-init` from that key only: index files whose manifest is
//!   missing are never restored.
//!
//! zdbfs-data's ids handed out after the published cut are handed out again on the restored
//! VM; nothing restored refers to them (zdbfs-meta is restored to the same instant), and the
//! files the old VM wrote with them are replaced under their keys before any cut names them.

use crate::fsutil::{self, Durability};
use crate::layout::{self, DATA_NAMESPACE, INDEX_PREFIX, META_NAMESPACE, NAMESPACE_FILE};
use crate::zstor::Checksum;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Version of the manifest format this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const UPLOADED: &str = "uploaded";
const LAST_TAKEN: &str = "last-taken.json";
const PUBLISHED: &str = "published.json";
const LATEST: &str = "latest";
const FLUSHING: &str = "zdbfs-flushing";

/// How far behind the time of day the kernel's file timestamps may be (its coarse clock lags
/// by up to a tick): a file changed this long before a cut was taken counts as changed after.
pub const CLOCK_LAG: Duration = Duration::from_secs(1);

/// One file of a cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutFile {
    /// Its name in the namespace's directory (`zdb-namespace`, `i<N>`, `d<N>`).
    pub name: String,
    /// Its zstor key: a cut's copy, or the data file's own path.
    pub key: PathBuf,
    /// What the key holds; `None` only for zdbfs-data's data file of a cut not yet published.
    pub checksum: Option<Checksum>,
    /// Its size when the cut was taken.
    pub size: u64,
    /// Its modification time when the cut was taken (nanoseconds since the epoch).
    pub mtime_ns: i64,
}

/// One namespace in a cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceCut {
    /// The namespace.
    pub name: String,
    /// Its descriptor and index files `i0 ..= i<active>`.
    pub files: Vec<CutFile>,
    /// Its data file `d<active>` (a restore point without one is refused).
    pub data: Option<CutFile>,
    /// The number of the last index and data file (zdb's active pair after a restore).
    pub active: u32,
}

/// A restore point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// Sortable id (nanoseconds since the epoch, 20 digits), also its directory's name.
    pub id: String,
    /// When it was taken, unix milliseconds.
    pub taken_unix_ms: u64,
    /// zdbfs-meta and zdbfs-data.
    pub namespaces: Vec<NamespaceCut>,
}

impl Manifest {
    /// Parses a manifest, refusing another version.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not a restore point: {e}"))?;
        if manifest.version != MANIFEST_VERSION {
            return Err(format!(
                "a restore point of format {} (this build reads {MANIFEST_VERSION})",
                manifest.version
            ));
        }
        Ok(manifest)
    }

    /// The namespace `name`.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceCut> {
        self.namespaces.iter().find(|ns| ns.name == name)
    }

    /// Every file with its namespace.
    pub fn files(&self) -> impl Iterator<Item = (&str, &CutFile)> {
        self.namespaces.iter().flat_map(|ns| {
            ns.files
                .iter()
                .chain(ns.data.iter())
                .map(move |file| (ns.name.as_str(), file))
        })
    }

    /// Whether a restore can start zdb on it: both namespaces, each with its descriptor and
    /// the index files `i0 ..= i<active>` and nothing else, every file with a checksum, every
    /// key a cut's copy under `cuts` or a data file's own path under `data_root`.
    pub fn check(&self, cuts: &Path, data_root: &Path) -> Result<(), String> {
        for name in [META_NAMESPACE, DATA_NAMESPACE] {
            let ns = self
                .namespace(name)
                .ok_or_else(|| format!("restore point {} has no {name}", self.id))?;
            let mut expected: Vec<String> = (0..=ns.active).map(layout::index_file).collect();
            expected.push(NAMESPACE_FILE.to_string());
            let mut names: Vec<String> = ns.files.iter().map(|f| f.name.clone()).collect();
            expected.sort();
            names.sort();
            if names != expected {
                return Err(format!(
                    "restore point {}: {name} lists {} instead of its descriptor and i0 to i{}",
                    self.id,
                    names.join(" "),
                    ns.active
                ));
            }
            let data = ns.data.as_ref().map(|d| d.name.as_str());
            if data != Some(&layout::data_file(ns.active)) {
                return Err(format!(
                    "restore point {}: {name}'s data file is {}, not d{}",
                    self.id,
                    data.unwrap_or("missing"),
                    ns.active
                ));
            }
        }
        if self.namespaces.len() != 2 {
            return Err(format!("restore point {} lists other namespaces", self.id));
        }
        for (ns, file) in self.files() {
            let own = data_root.join(ns).join(&file.name);
            let copy = file.key.parent().and_then(Path::parent).map(Path::parent);
            let in_cuts = copy == Some(Some(cuts))
                && file.key.file_name() == Some(file.name.as_ref())
                && file.key.parent().and_then(Path::file_name) == Some(ns.as_ref());
            if !(in_cuts || file.key == own) || file.checksum.is_none() {
                return Err(format!(
                    "restore point {}: {ns}/{} has the key {} or no checksum",
                    self.id,
                    file.name,
                    file.key.display()
                ));
            }
        }
        Ok(())
    }
}

/// A cut taken and not yet published.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its manifest (zdbfs-data's data file without its checksum).
    pub manifest: Manifest,
    /// Its directory.
    pub dir: PathBuf,
    /// Whether its copies are verified remote.
    pub uploaded: bool,
}

impl Pending {
    /// The copies this cut made (its own files, to upload).
    pub fn copies(&self) -> Vec<PathBuf> {
        self.manifest
            .files()
            .filter(|(_, file)| file.key.starts_with(&self.dir))
            .map(|(_, file)| file.key.clone())
            .collect()
    }
}

/// The cuts directory, `<state>/cuts`.
#[derive(Debug, Clone)]
pub struct Cuts {
    dir: PathBuf,
}

impl Cuts {
    /// The cuts of the state directory `state_dir`.
    pub fn new(state_dir: &Path) -> Cuts {
        Cuts {
            dir: state_dir.join("cuts"),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Holds the lock every NSJUMP of ours is sent under (the monitor's forced cut and the
    /// zdb unit's `prepare-zdbfs`): each looks at a namespace's last index file and jumps it
    /// only while no other can jump it (see [`layout::index_has_entries`]). Released on drop.
    pub fn lock_jumps(&self) -> std::io::Result<std::fs::File> {
        let path = crate::fsutil::parent(&self.dir).join("jump.lock");
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        file.lock()?;
        Ok(file)
    }

    /// The zstor key of the published restore point.
    pub fn latest(&self) -> PathBuf {
        self.dir.join(LATEST)
    }

    fn read(path: &Path) -> Option<Manifest> {
        Manifest::parse(&std::fs::read(path).ok()?).ok()
    }

    /// Marks zdbfs's cache flush (its snapshot ioctl) as running until the mark is dropped, or
    /// at most `timeout` and 5 s: a cut taken meanwhile would hold part of what the flush
    /// writes (a directory's entry for a file whose inode and blocks are not written yet), so
    /// none is taken ([`Cuts::zdbfs_flushing`]). zdb serializes the writes, so the hook, which
    /// looks while zdb waits for it, sees every flush that wrote before it.
    pub fn flushing(&self, timeout: Duration) -> std::io::Result<Flushing> {
        let until =
            crate::clock::now_unix_ms() + (timeout + Duration::from_secs(5)).as_millis() as u64;
        let path = self.dir.join(FLUSHING);
        std::fs::create_dir_all(&self.dir)?;
        fsutil::write_atomic(
            &path,
            until.to_string().as_bytes(),
            0o600,
            Durability::Visible,
        )?;
        Ok(Flushing(path))
    }

    /// Whether a flush of zdbfs's cache is marked as running.
    pub fn zdbfs_flushing(&self) -> bool {
        std::fs::read_to_string(self.dir.join(FLUSHING))
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .is_some_and(|until| crate::clock::now_unix_ms() < until)
    }

    /// The last cut taken here (the base of the next one), if it can be read.
    pub fn last_taken(&self) -> Option<Manifest> {
        Cuts::read(&self.dir.join(LAST_TAKEN))
    }

    /// The last restore point published from here (or restored), if it can be read.
    pub fn published(&self) -> Option<Manifest> {
        Cuts::read(&self.dir.join(PUBLISHED))
    }

    /// Records `manifest` as the base of the next cut. Not fsynced: a lost record only makes
    /// the next cut copy more files.
    pub fn record_taken(&self, manifest: &Manifest) -> std::io::Result<()> {
        write(&self.dir.join(LAST_TAKEN), manifest, Durability::Visible)
    }

    /// Forgets the base: the next cut copies every file.
    pub fn forget_taken(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(LAST_TAKEN)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Records `manifest` as published (durably: later cuts name its files).
    pub fn record_published(&self, manifest: &Manifest) -> std::io::Result<()> {
        write(&self.dir.join(PUBLISHED), manifest, Durability::Durable)
    }

    /// The cuts taken and not yet published, oldest first. A directory without a readable
    /// manifest is a cut whose taking was cut short: it is skipped.
    pub fn pending(&self) -> Vec<Pending> {
        let mut cuts: Vec<Pending> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| valid_id(&e.file_name().to_string_lossy()))
            .filter_map(|e| {
                let dir = e.path();
                let manifest = Cuts::read(&dir.join(MANIFEST))?;
                Some(Pending {
                    uploaded: dir.join(UPLOADED).exists(),
                    manifest,
                    dir,
                })
            })
            .collect();
        cuts.sort_by(|a, b| a.manifest.id.cmp(&b.manifest.id));
        cuts
    }

    /// Whether a cut was taken and not published (without reading its manifest).
    pub fn any_pending(&self) -> bool {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| valid_id(&e.file_name().to_string_lossy()) && e.path().join(MANIFEST).exists())
    }

    /// Marks `cut`'s copies as verified remote.
    pub fn mark_uploaded(&self, cut: &Pending) -> std::io::Result<()> {
        fsutil::write_atomic(&cut.dir.join(UPLOADED), b"", 0o600, Durability::Durable)
    }

    /// Removes the directories of cuts older than `id` (and `id`'s), published or superseded,
    /// and of cuts whose taking was cut short.
    pub fn remove_up_to(&self, id: &str) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if valid_id(&name) && name.as_str() <= id {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }
}

/// A flush of zdbfs's cache in progress ([`Cuts::flushing`]); the mark goes when dropped.
#[derive(Debug)]
pub struct Flushing(PathBuf);

impl Drop for Flushing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write(path: &Path, manifest: &Manifest, durability: Durability) -> std::io::Result<()> {
    std::fs::create_dir_all(fsutil::parent(path))?;
    let bytes = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    fsutil::write_atomic(path, &bytes, 0o600, durability)
}

/// A cut id: 20 decimal digits.
fn valid_id(name: &str) -> bool {
    name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `file` (as it is now: `size`, `mtime_ns`) is the file `previous` recorded in a cut
/// taken at `taken_ns`: same size and time, and that time earlier than the cut by more than
/// the clock's lag (a change within the same tick would keep the time).
pub fn unchanged(previous: &CutFile, size: u64, mtime_ns: i64, taken_ns: i64) -> bool {
    previous.size == size
        && previous.mtime_ns == mtime_ns
        && mtime_ns < taken_ns.saturating_sub(CLOCK_LAG.as_nanos() as i64)
}

/// The keys `manifest` names that neither it copied nor `known` holds (the keys of the cuts
/// uploaded before it and of the last published one): a cut naming one cannot be published.
pub fn unknown_keys<'a>(
    manifest: &'a Manifest,
    own: &Path,
    known: &std::collections::HashSet<PathBuf>,
    data_root: &Path,
) -> Vec<&'a Path> {
    manifest
        .files()
        .map(|(_, file)| file.key.as_path())
        .filter(|key| !key.starts_with(own) && !key.starts_with(data_root) && !known.contains(*key))
        .collect()
}

/// Which file numbers a namespace's cut holds, and whether its data file is copied.
#[derive(Debug, Clone, Copy)]
pub struct Take<'a> {
    /// The namespace.
    pub namespace: &'a str,
    /// The last index file in the cut (`None`: the highest on disk).
    pub active: Option<u32>,
    /// Copy the data file into the cut (zdbfs-meta's active one, small) instead of naming it
    /// by its own key (zdbfs-data's, sealed by the jump or left by a stop).
    pub copy_data: bool,
}

/// Takes a cut of `namespaces` (zdb must be waiting: nothing changes meanwhile). `None` when
/// a namespace does not exist yet (nothing to restore).
pub fn take(
    cuts: &Cuts,
    index_root: &Path,
    data_root: &Path,
    namespaces: &[Take],
) -> std::io::Result<Option<Manifest>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let id = format!("{:020}", now.as_nanos());
    let dir = cuts.dir.join(&id);
    let base = cuts.last_taken();
    let taken_ns = base
        .as_ref()
        .and_then(|b| b.id.parse::<i64>().ok())
        .unwrap_or(0);
    let previous: BTreeMap<(&str, &str), &CutFile> = base
        .iter()
        .flat_map(|b| b.files())
        .map(|(ns, f)| ((ns, f.name.as_str()), f))
        .collect();
    let mut manifest = Manifest {
        version: MANIFEST_VERSION,
        id: id.clone(),
        taken_unix_ms: now.as_millis() as u64,
        namespaces: Vec::new(),
    };
    let mut copies = Vec::new();
    let result = (|| {
        for take in namespaces {
            let index_dir = index_root.join(take.namespace);
            let Some(mut active) = take
                .active
                .or_else(|| layout::highest_file_number(&index_dir, INDEX_PREFIX))
            else {
                return Ok(false);
            };
            // zdb 2.0.7 loses track of the ids written to a last index file that was empty
            // when it loaded it: a restore point never ends with an empty pair.
            while active > 0
                && layout::pair_is_empty(&index_dir, &data_root.join(take.namespace), active)
            {
                active -= 1;
            }
            let copy_dir = dir.join(take.namespace);
            let mut copy = |source: &Path, name: &str| -> std::io::Result<CutFile> {
                std::fs::create_dir_all(&copy_dir)?;
                let key = copy_dir.join(name);
                crate::spool::copy_file(source, &key)?;
                copies.push(key.clone());
                let meta = std::fs::metadata(source)?;
                Ok(CutFile {
                    name: name.to_string(),
                    checksum: Some(Checksum::of_file(&key)?),
                    size: std::fs::metadata(&key)?.size(),
                    mtime_ns: mtime_ns(&meta),
                    key,
                })
            };
            let mut names: Vec<String> = (0..=active).map(layout::index_file).collect();
            names.push(NAMESPACE_FILE.to_string());
            let mut files = Vec::new();
            for name in names {
                let path = index_dir.join(&name);
                let meta = std::fs::metadata(&path)?;
                let file = match previous.get(&(take.namespace, name.as_str())) {
                    Some(prev) if unchanged(prev, meta.size(), mtime_ns(&meta), taken_ns) => {
                        (*prev).clone()
                    }
                    _ => copy(&path, &name)?,
                };
                files.push(file);
            }
            let data_name = layout::data_file(active);
            let data_path = data_root.join(take.namespace).join(&data_name);
            // A sealed data file evicted (so verified remote) is named by its own key, like
            // one not copied; publishing fills in its remote checksum.
            let data = match std::fs::metadata(&data_path) {
                Ok(_) if take.copy_data => copy(&data_path, &data_name)?,
                Ok(meta) => CutFile {
                    name: data_name,
                    key: data_path,
                    checksum: None,
                    size: meta.size(),
                    mtime_ns: mtime_ns(&meta),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => CutFile {
                    name: data_name,
                    key: data_path,
                    checksum: None,
                    size: 0,
                    mtime_ns: 0,
                },
                Err(e) => return Err(e),
            };
            manifest.namespaces.push(NamespaceCut {
                name: take.namespace.to_string(),
                files,
                data: Some(data),
                active,
            });
        }
        // Durable before the manifest that makes the cut one.
        for copy in &copies {
            std::fs::File::open(copy)?.sync_all()?;
        }
        for ns in namespaces {
            let copy_dir = dir.join(ns.namespace);
            if copy_dir.exists() {
                fsutil::sync_dir(&copy_dir)?;
            }
        }
        write(&dir.join(MANIFEST), &manifest, Durability::Durable)?;
        Ok(true)
    })();
    match result {
        Ok(true) => {
            cuts.record_taken(&manifest)?;
            Ok(Some(manifest))
        }
        Ok(false) => {
            let _ = std::fs::remove_dir_all(&dir);
            Ok(None)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(n: u8) -> Checksum {
        format!("{n:032x}").parse().unwrap()
    }

    fn file(name: &str, key: &str, size: u64, mtime_ns: i64) -> CutFile {
        CutFile {
            name: name.into(),
            key: key.into(),
            checksum: Some(sum(1)),
            size,
            mtime_ns,
        }
    }

    #[test]
    fn no_cut_while_a_flush_is_marked_and_a_stale_mark_expires() {
        let dir = tempfile::tempdir().unwrap();
        let cuts = Cuts::new(dir.path());
        assert!(!cuts.zdbfs_flushing());
        let flushing = cuts.flushing(Duration::from_secs(10)).unwrap();
        assert!(cuts.zdbfs_flushing());
        drop(flushing);
        assert!(!cuts.zdbfs_flushing());
        std::fs::write(dir.path().join("cuts").join(FLUSHING), "1").unwrap();
        assert!(!cuts.zdbfs_flushing(), "a mark whose time has passed");
    }

    #[test]
    fn a_file_is_unchanged_only_with_the_same_size_and_time_well_before_the_cut() {
        let second = 1_000_000_000;
        let prev = file("i0", "/k", 10, 5 * second);
        assert!(unchanged(&prev, 10, 5 * second, 7 * second));
        assert!(!unchanged(&prev, 11, 5 * second, 7 * second), "size");
        assert!(!unchanged(&prev, 10, 6 * second, 7 * second), "time");
        assert!(
            !unchanged(&prev, 10, 5 * second, 5 * second + second / 2),
            "within the clock's lag of the cut"
        );
    }

    fn manifest(cuts: &Path) -> Manifest {
        let ns = |name: &str, active: u32| {
            let mut files: Vec<CutFile> = (0..=active)
                .map(|n| {
                    let key = cuts
                        .join("00000000000000000001")
                        .join(name)
                        .join(format!("i{n}"));
                    file(&format!("i{n}"), key.to_str().unwrap(), 1, 1)
                })
                .collect();
            let key = cuts
                .join("00000000000000000001")
                .join(name)
                .join(NAMESPACE_FILE);
            files.push(file(NAMESPACE_FILE, key.to_str().unwrap(), 1, 1));
            NamespaceCut {
                name: name.into(),
                files,
                data: Some(file(
                    &format!("d{active}"),
                    &format!("/d/{name}/d{active}"),
                    1,
                    1,
                )),
                active,
            }
        };
        Manifest {
            version: MANIFEST_VERSION,
            id: "00000000000000000001".into(),
            taken_unix_ms: 1,
            namespaces: vec![ns(META_NAMESPACE, 0), ns(DATA_NAMESPACE, 2)],
        }
    }

    #[test]
    fn a_restore_point_names_both_namespaces_every_index_file_and_only_its_keys() {
        let cuts = Path::new("/s/cuts");
        let data = Path::new("/d");
        let good = manifest(cuts);
        assert_eq!(good.check(cuts, data), Ok(()));
        assert_eq!(
            Manifest::parse(&serde_json::to_vec(&good).unwrap()).unwrap(),
            good
        );

        let mut gap = good.clone();
        gap.namespaces[1].files.remove(1);
        assert!(gap
            .check(cuts, data)
            .unwrap_err()
            .contains("instead of its"));
        let mut one = good.clone();
        one.namespaces.remove(0);
        assert!(one
            .check(cuts, data)
            .unwrap_err()
            .contains("has no zdbfs-meta"));
        let mut elsewhere = good.clone();
        elsewhere.namespaces[0].files[0].key = "/etc/passwd".into();
        assert!(elsewhere
            .check(cuts, data)
            .unwrap_err()
            .contains("/etc/passwd"));
        let mut unpublished = good.clone();
        unpublished.namespaces[1].data.as_mut().unwrap().checksum = None;
        assert!(unpublished.check(cuts, data).is_err());
        let mut wrong_data = good.clone();
        wrong_data.namespaces[1].data.as_mut().unwrap().name = "d1".into();
        assert!(wrong_data.check(cuts, data).is_err());
        let mut newer = serde_json::to_value(&good).unwrap();
        newer["version"] = 2.into();
        assert!(Manifest::parse(&serde_json::to_vec(&newer).unwrap())
            .unwrap_err()
            .contains("format 2"));
    }

    #[test]
    fn a_cut_names_keys_only_it_or_a_known_cut_holds() {
        let cuts = Path::new("/s/cuts");
        let m = manifest(cuts);
        let own = cuts.join("00000000000000000001");
        assert!(unknown_keys(&m, &own, &Default::default(), Path::new("/d")).is_empty());
        let other = cuts.join("00000000000000000002");
        let unknown = unknown_keys(&m, &other, &Default::default(), Path::new("/d"));
        assert_eq!(unknown.len(), 6, "{unknown:?}");
        let known = m.files().map(|(_, f)| f.key.clone()).collect();
        assert!(unknown_keys(&m, &other, &known, Path::new("/d")).is_empty());
    }

    #[test]
    fn a_cut_copies_what_changed_and_names_the_rest_by_their_earlier_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (index, data) = (dir.path().join("index"), dir.path().join("data"));
        let cuts = Cuts::new(&dir.path().join("state"));
        for ns in [META_NAMESPACE, DATA_NAMESPACE] {
            std::fs::create_dir_all(index.join(ns)).unwrap();
            std::fs::create_dir_all(data.join(ns)).unwrap();
            for name in [NAMESPACE_FILE, "i0", "i1"] {
                // Longer than a header: files with entries.
                std::fs::write(index.join(ns).join(name), format!("{ns} {name}").repeat(4))
                    .unwrap();
            }
            for name in ["d0", "d1"] {
                std::fs::write(data.join(ns).join(name), format!("{ns} {name}").repeat(4)).unwrap();
            }
        }
        // Older than the clock's lag before the next cut.
        let old = SystemTime::now() - Duration::from_secs(10);
        for ns in [META_NAMESPACE, DATA_NAMESPACE] {
            for name in [NAMESPACE_FILE, "i0", "i1"] {
                let f = std::fs::File::options()
                    .write(true)
                    .open(index.join(ns).join(name))
                    .unwrap();
                f.set_modified(old).unwrap();
            }
        }
        let takes = [
            Take {
                namespace: META_NAMESPACE,
                active: None,
                copy_data: true,
            },
            Take {
                namespace: DATA_NAMESPACE,
                active: Some(1),
                copy_data: false,
            },
        ];
        let first = take(&cuts, &index, &data, &takes).unwrap().unwrap();
        let first_dir = cuts.dir().join(&first.id);
        assert_eq!(
            first
                .files()
                .filter(|(_, f)| f.key.starts_with(&first_dir))
                .count(),
            7,
            "everything the first time but zdbfs-data's data file"
        );
        let data_file = first
            .namespace(DATA_NAMESPACE)
            .unwrap()
            .data
            .clone()
            .unwrap();
        assert_eq!(
            (data_file.key, data_file.checksum),
            (data.join(DATA_NAMESPACE).join("d1"), None)
        );
        std::thread::sleep(Duration::from_millis(5));
        std::fs::write(index.join(DATA_NAMESPACE).join("i0"), "changed".repeat(8)).unwrap();
        let second = take(&cuts, &index, &data, &takes).unwrap().unwrap();
        let second_dir = cuts.dir().join(&second.id);
        let copied: Vec<String> = second
            .files()
            .filter(|(_, f)| f.key.starts_with(&second_dir))
            .map(|(ns, f)| format!("{ns}/{}", f.name))
            .collect();
        assert_eq!(copied, ["zdbfs-meta/d1", "zdbfs-data/i0"]);
        assert_eq!(
            std::fs::read(second_dir.join("zdbfs-data/i0")).unwrap(),
            "changed".repeat(8).as_bytes()
        );
        let pending = cuts.pending();
        assert!(cuts.any_pending());
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[1].copies().len(), 2);
        assert_eq!(cuts.last_taken().unwrap(), second);
        cuts.remove_up_to(&first.id).unwrap();
        assert_eq!(cuts.pending().len(), 1);
        assert!(second
            .check(cuts.dir(), &data)
            .unwrap_err()
            .contains("no checksum"));
    }
}
