//! Clock sanity: the clock is not before the image's build time (its `MANIFEST`'s
//! `source_date_epoch`); a clock stuck in the past breaks TLS, zstor's and the monitor's
//! timestamps, and the health checks' ages.

use super::Outcome;
use crate::clock::utc;
use crate::image::{exit, layout::MANIFEST, verify::read_tree_manifest};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const CHECK: &str = "clock";

/// Judges the clock (`now`, Unix seconds) against the image's build time.
pub fn decide(now: u64, built: u64) -> Outcome {
    if now >= built {
        Outcome::ok(
            CHECK,
            format!(
                "{} is after the image's build time {}",
                utc(now * 1000),
                utc(built * 1000)
            ),
        )
    } else {
        Outcome::failed(
            CHECK,
            exit::PREFLIGHT_CLOCK,
            format!(
                "the clock says {}, before the image's build time {}: set the time (timedatectl \
                 set-ntp true, or timedatectl set-time 'YYYY-MM-DD hh:mm:ss')",
                utc(now * 1000),
                utc(built * 1000)
            ),
        )
    }
}

/// Reads the build time from the `MANIFEST` under `root`.
pub fn check(root: &Path, now: SystemTime) -> Outcome {
    let path = root.join(MANIFEST);
    if !path.exists() {
        return Outcome::unknown(
            CHECK,
            format!(
                "cannot check: {} does not exist (is the image unpacked under {}?)",
                path.display(),
                root.display()
            ),
        );
    }
    let manifest = match read_tree_manifest(root, None) {
        Ok(manifest) => manifest,
        Err(e) => {
            return Outcome::failed(
                CHECK,
                exit::PREFLIGHT_CONFIG,
                format!("cannot read the build time from {}: {e}", path.display()),
            )
        }
    };
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    decide(now, manifest.image.source_date_epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::preflight::Status;

    #[test]
    fn a_clock_before_the_build_fails() {
        let built = 1_700_000_000;
        assert_eq!(decide(built, built).status, Status::Ok);
        assert_eq!(decide(built + 86_400, built).status, Status::Ok);
        let behind = decide(0, built);
        assert_eq!(behind.exit_code, Some(exit::PREFLIGHT_CLOCK));
        assert!(
            behind.message.contains("1970-01-01T00:00:00Z"),
            "{behind:?}"
        );
        assert!(
            behind.message.contains("2023-11-14T22:13:20Z"),
            "{behind:?}"
        );
        assert!(behind.message.contains("timedatectl set-ntp true"));
    }

    #[test]
    fn without_a_manifest_the_clock_is_not_judged() {
        let dir = tempfile::tempdir().unwrap();
        let outcome = check(dir.path(), SystemTime::now());
        assert_eq!(outcome.status, Status::Unknown);
        assert!(outcome.message.contains("MANIFEST"), "{outcome:?}");
    }
}
