//! Local disk: free space of zdb's data and index directories against the thresholds.
//!
//! * ok: both filesystems have more than `free_degraded_percent` free (for unprivileged use);
//! * degraded: one has less; failed: one has less than `free_failed_percent`, or cannot be
//!   read (a missing directory);
//! * unknown: statvfs did not answer in time, or the probe thread could not run.

use super::{Lane, LaneError};
use crate::health::{worst, Outcome, Part, State};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[health.disk]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskSettings {
    /// Longest a statvfs may take (`timeout_ms`, milliseconds). Default 1000.
    #[serde(rename = "timeout_ms", deserialize_with = "super::timeout_ms")]
    pub timeout: Duration,
    /// Less free space than this (percent) on the data or index filesystem is degraded.
    /// Default 10.
    #[serde(deserialize_with = "super::percent")]
    pub free_degraded_percent: f64,
    /// ... and less than this, failed. Default 5.
    #[serde(deserialize_with = "super::percent")]
    pub free_failed_percent: f64,
}

impl Default for DiskSettings {
    fn default() -> Self {
        DiskSettings {
            timeout: Duration::from_millis(1000),
            free_degraded_percent: 10.0,
            free_failed_percent: 5.0,
        }
    }
}

impl DiskSettings {
    /// The checks that span several keys of the table.
    pub fn validate(&self) -> Result<(), String> {
        if self.free_failed_percent > self.free_degraded_percent {
            return Err(format!(
                "free_failed_percent ({}) must not be above free_degraded_percent ({})",
                self.free_failed_percent, self.free_degraded_percent
            ));
        }
        Ok(())
    }
}

/// Free space of one filesystem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Space {
    /// Bytes available to unprivileged users.
    pub available: u64,
    /// Size of the filesystem in bytes.
    pub total: u64,
}

impl Space {
    /// Percent of the filesystem available.
    pub fn free_percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.available as f64 / self.total as f64
        }
    }
}

fn statvfs(path: &Path) -> Result<Space, String> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| e.to_string())?;
    let fragment = s.fragment_size() as u64;
    Ok(Space {
        available: (s.blocks_available() as u64).saturating_mul(fragment),
        total: (s.blocks() as u64).saturating_mul(fragment),
    })
}

/// Judges one directory's space.
pub fn evaluate(name: &str, space: &Space, settings: &DiskSettings) -> Part {
    let free = space.free_percent();
    let state = if free < settings.free_failed_percent {
        State::Failed
    } else if free < settings.free_degraded_percent {
        State::Degraded
    } else {
        State::Ok
    };
    Part::new(
        name,
        state,
        format!(
            "{free:.1}% free ({} of {})",
            bytes(space.available),
            bytes(space.total)
        ),
    )
}

/// `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Statvfs's both directories on `lane`.
pub async fn probe(
    lane: &Lane,
    data_dir: &Path,
    index_dir: &Path,
    settings: &DiskSettings,
    timeout: Duration,
) -> Outcome {
    let dirs: Vec<PathBuf> = vec![data_dir.to_path_buf(), index_dir.to_path_buf()];
    let spaces = match lane
        .run(timeout, move || {
            dirs.iter()
                .map(|d| (d.display().to_string(), statvfs(d)))
                .collect::<Vec<_>>()
        })
        .await
    {
        Ok(spaces) => spaces,
        Err(e @ LaneError::Thread(_)) => return Outcome::new(State::Unknown, e.to_string()),
        Err(e) => return Outcome::new(State::Unknown, format!("statvfs: {e}")),
    };
    let parts: Vec<Part> = spaces
        .into_iter()
        .map(|(name, space)| match space {
            Ok(space) => evaluate(&name, &space, settings),
            Err(e) => Part::new(name, State::Failed, format!("statvfs: {e}")),
        })
        .collect();
    let state = worst(parts.iter().map(|p| p.state));
    let reason = parts
        .iter()
        .map(|p| format!("{}: {}", p.name, p.reason))
        .collect::<Vec<_>>()
        .join("; ");
    Outcome::new(state, reason).with_parts(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let s = DiskSettings::default();
        let space = |available| Space {
            available,
            total: 1000,
        };
        assert_eq!(evaluate("d", &space(500), &s).state, State::Ok);
        assert_eq!(evaluate("d", &space(99), &s).state, State::Degraded);
        assert_eq!(evaluate("d", &space(49), &s).state, State::Failed);
        assert_eq!(
            evaluate("d", &space(500), &s).reason,
            "50.0% free (500 B of 1000 B)"
        );
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
