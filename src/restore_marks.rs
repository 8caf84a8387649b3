//! What `zdb-hook namespaces-init` leaves in the state directory, and what reads it: the
//! `ready` hook, the `close` hooks, `zstor_monitor` and `qsfs-health`.
//!
//! * `restoring`: a restore began (the four namespace directories were absent) and has not
//!   finished; it lists the directories the restore created, by inode. While it exists nothing
//!   uploads, evicts or spools the namespaces; the next `namespaces-init` removes those
//!   directories (only those, or empty ones) and restores again.
//! * `restore-failed`: why the last `namespaces-init` refused or failed, for `ready`'s error,
//!   the journal and `qsfs-health`. Removed when a later one completes.
//! * `local-state-refused`: this VM holds only part of the namespaces. Unlike a failure it is
//!   not cleared by a later start (zdb creates the missing directories of a namespace it loads,
//!   so the next start would see all four): only by moving every one aside, or by an operator
//!   removing it.
//! * `namespaces-init.done`: the proof that `namespaces-init` completed, naming the zdb process
//!   it ran for (boot, pid and start time). `ready` starts zdb only when it names its own zdb,
//!   so a `namespaces-init` that failed before it could write anything never lets zdb start.
//!
//! * `start-empty`: written by an operator to start a fresh VM empty although the backends
//!   hold files that cannot be restored (its uploads then replace them). Used once.
//!
//! The reasons may quote zstor's errors, so the marks are readable by root only.

use crate::fsutil::{self, Durability};
use std::path::{Path, PathBuf};

const RESTORING: &str = "restoring";
const FAILED: &str = "restore-failed";
const LOCAL_REFUSED: &str = "local-state-refused";
const DONE: &str = "namespaces-init.done";
const START_EMPTY: &str = "start-empty";
/// What the version before this one wrote to `restore-failed` before its restore began.
const LEGACY_INTERRUPTED: &str = "the restore was interrupted";

/// One zdb process: the boot, its pid and its start time (in clock ticks since boot), so that
/// a reused pid, or the same pid and time in another boot, is another process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process(String);

impl Process {
    /// The process that ran this one (zdb, for a hook).
    pub fn parent() -> Option<Process> {
        Process::of(std::os::unix::process::parent_id())
    }

    /// The process `pid`, if it runs.
    pub fn of(pid: u32) -> Option<Process> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let start = start_time(&stat)?;
        Some(Process(format!("{} {pid} {start}", boot.trim())))
    }

    /// Whether the process `recorded` (as [`Process`]'s text gives it) still runs: the same pid
    /// with the same start time. The boot id is not compared: in a container the boot id of a
    /// unit with a /proc of its own (`ProtectProc=`) is the kernel's, not the container's.
    pub fn runs(recorded: &str) -> bool {
        let Some((_, pid_and_start)) = recorded.split_once(' ') else {
            return false;
        };
        pid_and_start
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse().ok())
            .and_then(Process::of)
            .is_some_and(|now| now.0.split_once(' ').map(|(_, rest)| rest) == Some(pid_and_start))
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Field 22 of `/proc/<pid>/stat`, the start time: counted after the command name, which is
/// in parentheses and may itself hold spaces and parentheses.
fn start_time(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The marks in one state directory.
#[derive(Debug, Clone)]
pub struct Marks {
    dir: PathBuf,
}

impl Marks {
    /// The marks in `state_dir`.
    pub fn new(state_dir: &Path) -> Marks {
        Marks {
            dir: state_dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A restore began and has not finished.
    pub fn restoring(&self) -> bool {
        self.path(RESTORING).exists()
    }

    /// The directories an unfinished restore created, with their inodes.
    pub fn restored_dirs(&self) -> Vec<(PathBuf, u64)> {
        std::fs::read(self.path(RESTORING))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Why the last `namespaces-init` refused or failed.
    pub fn failure(&self) -> Option<String> {
        self.local_refusal().or_else(|| self.read(FAILED))
    }

    /// The version before this one marked a restore that had begun and not finished (it had no
    /// `restoring` mark).
    pub fn legacy_interrupted(&self) -> bool {
        !self.restoring() && self.read(FAILED).as_deref() == Some(LEGACY_INTERRUPTED)
    }

    /// An operator asked to start a fresh VM empty: consumes the request.
    pub fn take_start_empty(&self) -> std::io::Result<bool> {
        match std::fs::remove_file(self.path(START_EMPTY)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Where an operator asks to start a fresh VM empty (for error messages).
    pub fn start_empty_path(&self) -> PathBuf {
        self.path(START_EMPTY)
    }

    /// Why this VM's partial namespaces were refused, until they are moved aside or an operator
    /// removes the mark.
    pub fn local_refusal(&self) -> Option<String> {
        self.read(LOCAL_REFUSED)
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.path(name))
            .ok()
            .map(|reason| reason.trim().to_string())
    }

    /// Why the namespaces must be left alone now (a restore unfinished, or one that refused),
    /// or `None` when they may be uploaded, evicted and spooled.
    pub fn hold(&self) -> Option<String> {
        if self.restoring() {
            return Some("a restore from the backends has not finished".into());
        }
        self.failure()
            .map(|reason| format!("namespaces-init refused: {reason}"))
    }

    /// Records, durably, that a restore creates `dirs` (with their inodes; 0 for one not
    /// created yet): before it creates anything, and again once it has.
    pub fn restoring_dirs(&self, dirs: &[(PathBuf, u64)]) -> std::io::Result<()> {
        let json = serde_json::to_string(dirs).map_err(std::io::Error::other)?;
        self.write(RESTORING, &json)
    }

    /// Records that the restore finished (it succeeded, or removed what it created).
    pub fn end_restore(&self) -> std::io::Result<()> {
        self.remove(RESTORING)
    }

    /// Records why `namespaces-init` refused or failed.
    pub fn record_failure(&self, reason: &str) -> std::io::Result<()> {
        self.write(FAILED, &format!("{reason}\n"))
    }

    /// Records why this VM's partial namespaces are refused (see the module doc).
    pub fn refuse_local(&self, reason: &str) -> std::io::Result<()> {
        self.write(LOCAL_REFUSED, &format!("{reason}\n"))
    }

    /// Clears the refusal of partial namespaces: they were all moved aside.
    pub fn clear_local_refusal(&self) -> std::io::Result<()> {
        self.remove(LOCAL_REFUSED)
    }

    /// Forgets the proof of an earlier `namespaces-init`, first thing in a new one.
    pub fn clear_done(&self) -> std::io::Result<()> {
        self.remove(DONE)
    }

    /// Records that `namespaces-init` completed for `zdb`, and clears an earlier failure.
    pub fn record_done(&self, zdb: &Process) -> std::io::Result<()> {
        self.remove(FAILED)?;
        self.write(DONE, &format!("{}\n", zdb.0))
    }

    /// `namespaces-init` completed for `zdb` (this very process, not an earlier one).
    pub fn done_for(&self, zdb: &Process) -> bool {
        std::fs::read_to_string(self.path(DONE)).is_ok_and(|done| done.trim() == zdb.0)
    }

    /// Where the proof of a completed `namespaces-init` is kept (for error messages).
    pub fn done_path(&self) -> PathBuf {
        self.path(DONE)
    }

    /// Where the refusal of partial namespaces is kept (for error messages).
    pub fn local_refusal_path(&self) -> PathBuf {
        self.path(LOCAL_REFUSED)
    }

    fn write(&self, name: &str, text: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        fsutil::write_atomic(
            &self.path(name),
            text.as_bytes(),
            0o600,
            Durability::Durable,
        )
    }

    fn remove(&self, name: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => fsutil::sync_dir(&self.dir).or(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (zdb (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert_eq!(start_time(stat), Some(987654));
        assert_eq!(start_time("4242 (zdb) S 1"), None);
    }

    #[test]
    fn this_process_has_an_identity_that_an_earlier_process_with_its_pid_would_not() {
        let me = Process::of(std::process::id()).unwrap();
        assert_eq!(Process::of(std::process::id()), Some(me.clone()));
        assert!(me.0.contains(&format!(" {} ", std::process::id())));
    }

    #[test]
    fn done_names_one_zdb_and_a_failure_holds_the_namespaces_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let marks = Marks::new(&dir.path().join("state"));
        let zdb = Process::of(std::process::id()).unwrap();
        assert!(!marks.done_for(&zdb) && marks.hold().is_none());

        let dirs = vec![
            (PathBuf::from("/i/zdbfs-meta"), 12),
            (PathBuf::from("/d/x"), 0),
        ];
        marks.restoring_dirs(&dirs).unwrap();
        assert!(marks.restoring());
        assert_eq!(marks.restored_dirs(), dirs);
        assert!(marks.hold().unwrap().contains("has not finished"));
        marks.end_restore().unwrap();
        marks.end_restore().unwrap();
        assert!(marks.hold().is_none());

        marks
            .record_failure("zdbfs-data: i3 is stored, d3 is not")
            .unwrap();
        assert_eq!(
            marks.failure().as_deref(),
            Some("zdbfs-data: i3 is stored, d3 is not")
        );
        assert!(marks.hold().unwrap().contains("i3 is stored"));

        marks.record_done(&zdb).unwrap();
        assert!(marks.done_for(&zdb));
        assert!(marks.failure().is_none() && marks.hold().is_none());
        assert!(!marks.done_for(&Process("another-boot 1 12345".into())));
        marks.clear_done().unwrap();
        assert!(!marks.done_for(&zdb));

        // A refusal of partial namespaces outlives a completed namespaces-init.
        marks.refuse_local("only part").unwrap();
        marks.record_done(&zdb).unwrap();
        assert_eq!(marks.failure().as_deref(), Some("only part"));
        marks.clear_local_refusal().unwrap();
        assert!(marks.failure().is_none());

        // What the version before wrote before its restore began.
        marks.record_failure(LEGACY_INTERRUPTED).unwrap();
        assert!(marks.legacy_interrupted());
        marks.record_failure("zstor failed").unwrap();
        assert!(!marks.legacy_interrupted());

        assert!(!marks.take_start_empty().unwrap());
        std::fs::write(marks.start_empty_path(), "").unwrap();
        assert!(marks.take_start_empty().unwrap());
        assert!(!marks.take_start_empty().unwrap());
    }
}
