//! Free space for zdb's data files on the file system holding `/var/zdbfs`: the active data
//! file, sealed ones waiting for their upload, one fetched back, and the index and spool
//! beside them: [`FACTOR`] × `ZDB_DATASIZE`.

use super::{size, Outcome, UnitsEnv};
use crate::image::exit;
use crate::image::layout::ROOT;
use std::path::Path;

/// How many data files' worth of space must be free.
pub const FACTOR: u64 = 4;
const CHECK: &str = "space";
const KEY: &str = "ZDB_DATASIZE";

/// Judges `available` bytes on the file system holding `dir` for zdb's `datasize` (read from
/// `from`).
pub fn decide(datasize: u64, available: u64, dir: &Path, from: &Path) -> Outcome {
    let needed = datasize.saturating_mul(FACTOR);
    let need = format!(
        "{FACTOR} x {KEY} ({}, {}) = {}",
        size(datasize),
        from.display(),
        size(needed)
    );
    if available >= needed {
        Outcome::ok(
            CHECK,
            format!(
                "{} free on {}, needs {need}",
                size(available),
                dir.display()
            ),
        )
    } else {
        Outcome::failed(
            CHECK,
            exit::PREFLIGHT_SPACE,
            format!(
                "only {} free on the file system holding {}, zdb needs {need}: free space there, \
                 grow the disk, or lower {KEY} in {}",
                size(available),
                dir.display(),
                from.display()
            ),
        )
    }
}

/// Reads the datasize and the free space (of `/var/zdbfs` or, before it exists, of its
/// nearest existing parent).
pub fn check(root: &Path, env: &UnitsEnv) -> Outcome {
    let (value, from) = match env.value(CHECK, KEY) {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let Ok(datasize) = value.parse::<u64>() else {
        return Outcome::failed(
            CHECK,
            exit::PREFLIGHT_CONFIG,
            format!("{}: {KEY} `{value}` is not a whole number", from.display()),
        );
    };
    let dir = root.join(ROOT);
    let Some(existing) = dir.ancestors().find(|p| p.exists()) else {
        return Outcome::unknown(
            CHECK,
            format!("cannot check: no part of {} exists", dir.display()),
        );
    };
    match nix::sys::statvfs::statvfs(existing) {
        Ok(s) => {
            let available = s.blocks_available().saturating_mul(s.fragment_size());
            decide(datasize, available, existing, from)
        }
        Err(e) => Outcome::unknown(
            CHECK,
            format!("cannot check: statvfs {}: {e}", existing.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::preflight::Status;

    #[test]
    fn four_data_files_must_fit() {
        let (dir, from) = (
            Path::new("/var/zdbfs"),
            Path::new("/var/zdbfs/etc/qsfs.env"),
        );
        let mib = 1 << 20;
        assert_eq!(decide(64 * mib, 256 * mib, dir, from).status, Status::Ok);
        let short = decide(64 * mib, 256 * mib - 1, dir, from);
        assert_eq!(short.exit_code, Some(exit::PREFLIGHT_SPACE));
        assert!(
            short.message.contains(
                "zdb needs 4 x ZDB_DATASIZE (64.0 MiB, /var/zdbfs/etc/qsfs.env) = 256.0 MiB"
            ),
            "{short:?}"
        );
        assert!(short
            .message
            .contains("lower ZDB_DATASIZE in /var/zdbfs/etc/qsfs.env"));
        // No overflow on a huge (invalid) datasize.
        assert_eq!(
            decide(u64::MAX, u64::MAX - 1, dir, from).status,
            Status::Failed
        );
    }
}
