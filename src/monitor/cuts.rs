//! Publishing restore points ([`crate::cuts`]) and forcing them on an interval.
//!
//! A pass ([`publish`], blocking) uploads the copies of the cuts taken, oldest first (a cut
//! names the copies of the cuts before it), then stores the manifest of the newest one whose
//! data files are all remote under the one key a restore reads. Cuts older than it are then
//! superseded and removed. A cut naming a copy that no cut uploaded (its cut's directory was
//! lost) is dropped, and the next cut copies every file again.
//!
//! [`force`] makes zdb jump zdbfs-data, or zdbfs-meta when only it was written, once one of
//! them was written since the last cut: the jump hook takes the cut, which sees both namespaces
//! at that one instant. A namespace is only jumped when its last index file holds entries.

use crate::cuts::{self, Cuts, Manifest};
use crate::layout::{self, DATA_NAMESPACE, META_NAMESPACE};
use crate::logging::message_id;
use crate::zdb::{Client, Endpoint};
use crate::zstor::{Checksum, Zstor};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// The restore point now published, if this pass published one.
    pub id: Option<String>,
    /// Cuts still waiting (for their data files to be uploaded).
    pub waiting: usize,
}

/// One pass: uploads the copies of every cut taken, then publishes the newest cut whose data
/// files are remote. `sealed_remote(namespace, n)` says whether data file `n` of `namespace`
/// (sealed) is verified remote or was never local here; `scratch` is where the manifest's
/// upload copy goes.
pub fn publish(
    cuts: &Cuts,
    zstor: &Zstor,
    data_root: &Path,
    scratch: &Path,
    sealed_remote: impl Fn(&str, u32) -> bool,
) -> Result<Published, String> {
    let published = cuts.published();
    let mut known: HashSet<PathBuf> = published
        .iter()
        .flat_map(|m| m.files().map(|(_, f)| f.key.clone()))
        .collect();
    let mut uploaded = Vec::new();
    for cut in cuts.pending() {
        if !cut.uploaded {
            let unknown = cuts::unknown_keys(&cut.manifest, &cut.dir, &known, data_root);
            if let Some(key) = unknown.first() {
                tracing::error!(
                    message_id = message_id::CUT_NOT_PUBLISHED,
                    qsfs_cut = cut.manifest.id,
                    "restore point {} names {}, which no restore point uploaded: dropped; the \
                     next one copies every file",
                    cut.manifest.id,
                    key.display()
                );
                cuts.forget_taken()
                    .and_then(|()| std::fs::remove_dir_all(&cut.dir))
                    .map_err(|e| format!("cannot drop {}: {e}", cut.dir.display()))?;
                continue;
            }
            for copy in cut.copies() {
                store_verified(zstor, &copy, None)?;
            }
            cuts.mark_uploaded(&cut)
                .map_err(|e| format!("cannot mark {} uploaded: {e}", cut.dir.display()))?;
        }
        known.extend(cut.manifest.files().map(|(_, f)| f.key.clone()));
        uploaded.push(cut);
    }
    let since = |ns: &str| {
        published
            .as_ref()
            .and_then(|m| m.namespace(ns))
            .map_or(0, |ns| ns.active)
    };
    for (i, cut) in uploaded.iter().enumerate().rev() {
        let Some(manifest) = complete(&cut.manifest, zstor, &since, &sealed_remote)? else {
            continue;
        };
        let dir = scratch.join(format!("manifest-{}", manifest.id));
        let copy = dir.join(cuts.latest().file_name().unwrap_or_default());
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&copy, bytes))
            .map_err(|e| format!("cannot write {}: {e}", copy.display()))?;
        let stored = store_verified(zstor, &copy, Some(cuts.dir()));
        let _ = std::fs::remove_dir_all(&dir);
        stored?;
        cuts.record_published(&manifest)
            .and_then(|()| cuts.remove_up_to(&manifest.id))
            .map_err(|e| format!("cannot record restore point {}: {e}", manifest.id))?;
        tracing::info!(
            message_id = message_id::CUT_PUBLISHED,
            qsfs_cut = manifest.id,
            "restore point {} published (taken {}): a fresh VM restores to it",
            manifest.id,
            crate::clock::utc(manifest.taken_unix_ms)
        );
        return Ok(Published {
            id: Some(manifest.id),
            waiting: uploaded.len() - i - 1,
        });
    }
    Ok(Published {
        id: None,
        waiting: uploaded.len(),
    })
}

/// `manifest` with zdbfs-data's data file checksum filled in, when every data file it needs
/// is remote: the sealed ones newer than the last published cut, and its last one, whose
/// remote copy must be the local file (which only grows) or, once evicted, be stored at all.
fn complete(
    manifest: &Manifest,
    zstor: &Zstor,
    since: &impl Fn(&str) -> u32,
    sealed_remote: &impl Fn(&str, u32) -> bool,
) -> Result<Option<Manifest>, String> {
    for ns in &manifest.namespaces {
        if !(since(&ns.name)..ns.active).all(|n| sealed_remote(&ns.name, n)) {
            return Ok(None);
        }
    }
    let mut manifest = manifest.clone();
    for ns in &mut manifest.namespaces {
        let Some(data) = ns.data.as_mut().filter(|d| d.checksum.is_none()) else {
            continue;
        };
        let remote = zstor
            .check(&data.key)
            .map_err(|e| format!("cannot check {}: {e}", data.key.display()))?;
        let Some(remote) = remote else {
            return Ok(None);
        };
        match Checksum::of_file(&data.key) {
            Ok(local) if local != remote => return Ok(None),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot read {}: {e}", data.key.display()))
            }
            _ => data.checksum = Some(remote),
        }
    }
    Ok(Some(manifest))
}

fn store_verified(zstor: &Zstor, file: &Path, key_path: Option<&Path>) -> Result<(), String> {
    let checksum =
        Checksum::of_file(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    zstor
        .store(file, key_path)
        .map_err(|e| format!("cannot store {}: {e}", file.display()))?;
    let key = key_path.map_or(file.to_path_buf(), |dir| {
        dir.join(file.file_name().unwrap_or_default())
    });
    match zstor.check(&key) {
        Ok(Some(remote)) if remote == checksum => Ok(()),
        Ok(other) => Err(format!(
            "{} was stored with {checksum} but zstor check returned {}",
            key.display(),
            other.map_or("nothing".into(), |c| c.to_string())
        )),
        Err(e) => Err(format!("cannot check {}: {e}", key.display())),
    }
}

/// Whether zdbfs-meta or zdbfs-data was written since the last cut taken (any cut when none
/// was): an active file that holds entries is newer than it. Namespaces without entries are
/// never jumped (zdbfs may be creating them: a jump between its NSNEW and its NSSET of the
/// mode was seen to end the real zdb).
pub fn written_since_last_cut(cuts: &Cuts, index_root: &Path, data_root: &Path) -> bool {
    let taken_ns = cuts
        .last_taken()
        .and_then(|m| m.id.parse::<i64>().ok())
        .unwrap_or(i64::MIN);
    let since = taken_ns.saturating_sub(cuts::CLOCK_LAG.as_nanos() as i64);
    let files = [
        (index_root, layout::INDEX_PREFIX, layout::INDEX_HEADER_LEN),
        (data_root, layout::DATA_PREFIX, layout::DATA_HEADER_LEN),
    ];
    [META_NAMESPACE, DATA_NAMESPACE].iter().any(|ns| {
        files.iter().any(|(root, prefix, empty)| {
            let dir = root.join(ns);
            layout::highest_file_number(&dir, *prefix)
                .and_then(|n| std::fs::metadata(dir.join(format!("{prefix}{n}"))).ok())
                .is_some_and(|meta| {
                    meta.len() > *empty && meta.mtime() * 1_000_000_000 + meta.mtime_nsec() >= since
                })
        })
    })
}

/// Makes zdb jump zdbfs-data, or zdbfs-meta when zdbfs-data's last index file holds no entry
/// (a jump of it would lose what is written next, [`layout::index_has_entries`]); the jump
/// hook takes the cut. Neither jumps when both are without entries. zdb answers once the hook
/// returned, within `timeout`. Returns the namespace jumped.
pub fn force(
    zdb_socket: &Path,
    cuts: &Cuts,
    index_root: &Path,
    timeout: Duration,
) -> Result<Option<&'static str>, String> {
    let _jumps = cuts
        .lock_jumps()
        .map_err(|e| format!("cannot lock the jumps in {}: {e}", cuts.dir().display()))?;
    let Some(namespace) = [DATA_NAMESPACE, META_NAMESPACE].into_iter().find(|ns| {
        let dir = index_root.join(ns);
        layout::highest_file_number(&dir, layout::INDEX_PREFIX)
            .is_some_and(|n| layout::index_has_entries(&dir, n))
    }) else {
        return Ok(None);
    };
    let endpoint = Endpoint::Unix(zdb_socket.to_path_buf());
    let mut client = Client::connect(&endpoint, timeout).map_err(|e| e.to_string())?;
    // NSJUMP jumps the namespace the connection selected (its argument is ignored).
    client
        .select(namespace, None)
        .and_then(|()| client.command(&[b"NSJUMP"]).map(drop))
        .map_err(|e| format!("NSJUMP {namespace}: {e}"))?;
    Ok(Some(namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zdbfs_written_since_the_last_cut_or_with_none_taken_needs_one() {
        let dir = tempfile::tempdir().unwrap();
        let (index, data) = (dir.path().join("index"), dir.path().join("data"));
        let cuts = Cuts::new(&dir.path().join("state"));
        assert!(
            !written_since_last_cut(&cuts, &index, &data),
            "no namespace yet"
        );
        std::fs::create_dir_all(index.join(DATA_NAMESPACE)).unwrap();
        let i0 = index.join(DATA_NAMESPACE).join("i0");
        std::fs::write(&i0, [0; layout::INDEX_HEADER_LEN as usize]).unwrap();
        assert!(
            !written_since_last_cut(&cuts, &index, &data),
            "no entry yet"
        );
        std::fs::write(&i0, [0; layout::INDEX_HEADER_LEN as usize + 1]).unwrap();
        assert!(written_since_last_cut(&cuts, &index, &data), "none taken");
    }
}
