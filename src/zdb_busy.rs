//! `state/zdb-busy`: the blocking hook event zdb waits for right now.
//!
//! zdb is single-threaded and answers nobody while a blocking hook runs (contracts §1.4), so
//! during a long `missing-data` its PING, the zdbfs mount and S3 above it all time out. Without
//! this mark `qsfs-health serve` took that for a hung zdb and restarted the stack mid-read.
//!
//! `zdb-hook` writes the mark when a blocking event begins and removes it when the event ends.
//! It names the hook process (pid and start time, [`Process`]): a mark left by a hook that was
//! killed names a process that no longer runs and is ignored, and `qsfs-health` trusts a mark
//! only until the hook's own deadline has passed. zdb runs one blocking hook at a time, so one
//! mark is enough.

use crate::fsutil::{self, Durability};
use crate::restore_marks::Process;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FILE: &str = "zdb-busy";
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    version: u32,
    event: String,
    since_unix_ms: u64,
    process: String,
}

/// A blocking hook event that zdb waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// The event (`missing-data`, `namespaces-init`, ...).
    pub event: String,
    /// How long it has run.
    pub running_for: Duration,
}

/// The mark of the running hook; removed when dropped.
#[derive(Debug)]
pub struct Mark {
    path: PathBuf,
    process: Process,
}

impl Mark {
    /// Marks zdb busy with `event` for as long as the returned mark lives. `None` (and a
    /// warning) when it cannot be written: the hook goes on, unmarked.
    pub fn begin(state_dir: &Path, event: &str) -> Option<Mark> {
        let process = Process::of(std::process::id())?;
        let record = Record {
            version: VERSION,
            event: event.to_string(),
            since_unix_ms: unix_ms(SystemTime::now()),
            process: process.to_string(),
        };
        let path = state_dir.join(FILE);
        let text = serde_json::to_vec(&record).expect("a record serializes");
        // Without an fsync: zdb waits, and a mark lost in a power cut names nothing that runs.
        match fsutil::write_atomic(&path, &text, 0o644, Durability::Visible) {
            Ok(()) => Some(Mark { path, process }),
            Err(e) => {
                tracing::warn!("cannot mark zdb busy in {}: {e}", path.display());
                None
            }
        }
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        // Only our own: a newer zdb's hook may have replaced it.
        if read(&self.path).is_some_and(|r| r.process == self.process.to_string()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read(path: &Path) -> Option<Record> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<Record>(&bytes)
        .ok()
        .filter(|r| r.version == VERSION)
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The blocking event zdb waits for now, if its hook still runs.
pub fn current(state_dir: &Path) -> Option<Busy> {
    let record = read(&state_dir.join(FILE))?;
    if !Process::runs(&record.process) {
        return None;
    }
    let since = UNIX_EPOCH + Duration::from_millis(record.since_unix_ms);
    Some(Busy {
        event: record.event,
        running_for: SystemTime::now().duration_since(since).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_lives_as_long_as_its_hook() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(current(dir.path()), None);
        let mark = Mark::begin(dir.path(), "missing-data").unwrap();
        let busy = current(dir.path()).unwrap();
        assert_eq!(busy.event, "missing-data");
        assert!(busy.running_for < Duration::from_secs(60));
        drop(mark);
        assert_eq!(current(dir.path()), None);
        assert!(!dir.path().join(FILE).exists());
    }

    #[test]
    fn a_mark_of_a_process_that_is_gone_is_ignored_and_not_ours_to_remove() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = Process::of(child.id());
        child.wait().unwrap();
        let record = Record {
            version: VERSION,
            event: "missing-data".into(),
            since_unix_ms: 1,
            process: gone.map_or("boot 1 1".into(), |p| p.to_string()),
        };
        std::fs::write(dir.path().join(FILE), serde_json::to_vec(&record).unwrap()).unwrap();
        assert_eq!(current(dir.path()), None, "a killed hook's mark");

        // The same process seen with another boot id (a unit's own /proc in a container).
        let this = Process::of(std::process::id()).unwrap().to_string();
        let (_, pid_and_start) = this.split_once(' ').unwrap();
        assert!(Process::runs(&format!("other-boot {pid_and_start}")));
        assert!(!Process::runs(&format!(
            "other-boot {} 1",
            std::process::id()
        )));

        // A mark written by another hook is left to it.
        let mark = Mark {
            path: dir.path().join(FILE),
            process: Process::of(std::process::id()).unwrap(),
        };
        drop(mark);
        assert!(dir.path().join(FILE).exists());
    }
}
