//! The upload spool: how `zdb-hook` (the writer) hands files to `zstor_monitor` (the reader).
//!
//! # Format
//!
//! The spool is one directory (mode 0700). Each job is one file `<id>.job` holding a JSON
//! object:
//!
//! ```json
//! {"version": 1, "id": "1764081234567890123-4242-0", "event": "jump-index",
//!  "namespace": "zdbfs-data", "written_unix_ms": 1764081234567,
//!  "boot_id": "5b3c1bfe-7b4a-4c1e-9d55-0d6f9f2b8a11",
//!  "files": [{"path": "/var/zdbfs/index/zdbfs-data/i3",
//!             "snapshot": "/var/zdbfs/spool/snapshots/1764081234567890123-4242-0/i3"}]}
//! ```
//!
//! (version 1, recorded in `tests/fixtures/spool/job-v1.json`)
//!
//! * `id` sorts in the order jobs were written (nanoseconds, pid, sequence number: three
//!   decimal numbers joined by `-`, [`valid_id`]) and equals the file name without `.job`.
//! * `path` is the file's real path, which is also its zstor key.
//! * `snapshot`, for mutable files (index files), is a copy taken while zdb waited; it is what
//!   gets uploaded, with `zstor store --key-path <directory of path>` so the key stays the real
//!   path. Snapshots live in `snapshots/<id>/` and belong to the job with that id.
//! * `boot_id` is the kernel's boot id when the job was written (see below).
//!
//! # Validation
//!
//! A reader trusts nothing in a job file: a job whose id is not its file name or not of the
//! form above, or whose snapshot is not a file directly in its `snapshots/<id>/` (lexically
//! and once symlinks are resolved), is [`Problem::Invalid`]; the monitor also refuses a job
//! naming a file outside its zdb roots. Such a job is moved to `bad/` ([`Spool::quarantine`])
//! with a `<name>.job.reason` file next to it, never deleted; its snapshots stay until an
//! operator removes the job from `bad/`.
//!
//! # Atomicity and durability
//!
//! A job is written to `.tmp-<id>`, fsynced, renamed to `<id>.job`, and the directory is
//! fsynced; its snapshots are written before that. A crash of any process at any instant
//! leaves a whole job or none: readers ignore `.tmp-*` files, and [`Spool::collect_garbage`]
//! removes leftovers (temporary files and snapshot directories without a job). A job is
//! removed only by its reader, after its upload is verified, so if the monitor is down jobs
//! wait.
//!
//! Snapshots are not fsynced: that would double the time zdb waits in `jump-index`. Within one
//! boot the page cache holds them whole; after a power cut they may be torn. So a reader must
//! not trust the snapshots of a job written in an earlier boot ([`Job::snapshots_usable`]) and
//! uploads the file itself instead (index files only gain information, so the current file is
//! as good as the lost snapshot).

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Version of the job format written by this build.
pub const JOB_VERSION: u32 = 1;

const JOB_SUFFIX: &str = ".job";
const TEMP_PREFIX: &str = ".tmp-";
const SNAPSHOTS: &str = "snapshots";
const BAD: &str = "bad";
const REASON_SUFFIX: &str = ".reason";

/// A job id as the writer makes it: `<nanoseconds>-<pid>-<sequence>` (see [`valid_id`]).
fn make_id(nanos: u128, pid: u32, sequence: u32) -> String {
    format!("{nanos}-{pid}-{sequence}")
}

/// Whether `id` is of the form [`Spool::new_job`] gives: three decimal numbers joined by `-`.
/// Only such an id is ever used as a file name.
pub fn valid_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| (1..=39).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// One upload job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Format version ([`JOB_VERSION`]).
    pub version: u32,
    /// Unique, sortable id; also the file name without `.job`.
    pub id: String,
    /// The zdb event that produced the job.
    pub event: Trigger,
    /// The zdb namespace of the files.
    pub namespace: String,
    /// When the job was written, unix milliseconds.
    pub written_unix_ms: u64,
    /// The kernel's boot id when the job was written.
    pub boot_id: String,
    /// The files to upload.
    pub files: Vec<JobFile>,
}

/// The zdb events that spool jobs, named as zdb names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// `jump-index`: the closed and the dirty index files.
    JumpIndex,
    /// `jump-data`: the sealed data file.
    JumpData,
    /// `close`: every namespace's active files at a stop.
    Close,
    /// `namespace-closing`: one namespace's active and dirty files.
    NamespaceClosing,
    /// `namespace-created`: the new descriptor.
    NamespaceCreated,
    /// `namespace-updated`: the changed descriptor.
    NamespaceUpdated,
}

impl Job {
    /// Whether the job's snapshots can be trusted: they were written in this boot.
    pub fn snapshots_usable(&self) -> bool {
        self.boot_id == boot_id()
    }
}

/// The kernel's id of the current boot (`/proc/sys/kernel/random/boot_id`), read once.
pub fn boot_id() -> &'static str {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    BOOT_ID.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|id| id.trim().to_string())
            .unwrap_or_default()
    })
}

/// One file of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The file's real path: its zstor key.
    pub path: PathBuf,
    /// A copy to upload instead of `path` (for mutable index files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<PathBuf>,
}

impl JobFile {
    /// What to pass to `zstor store`: the file to read, and the `--key-path` directory when
    /// that file is a snapshot. Use it only for a job whose [`Job::snapshots_usable`].
    pub fn upload_source(&self) -> (&Path, Option<&Path>) {
        match &self.snapshot {
            Some(snapshot) => (snapshot, self.path.parent()),
            None => (&self.path, None),
        }
    }
}

/// A job file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("spool job {path}: {problem}")]
pub struct BadJob {
    /// The job file.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: Problem,
}

/// Why a job file gave no job.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The file could not be read this time (EMFILE, EIO, removed meanwhile): the job may be
    /// whole, so it is for the caller to try again or give up.
    #[error("{0}")]
    Unreadable(std::io::Error),
    /// The content is not a job of this format.
    #[error("{0}")]
    Invalid(String),
}

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// The spool at `dir` (not created until something is written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Spool { dir: dir.into() }
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the spool directory (0700) if needed.
    pub fn create(&self) -> std::io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.dir.join(SNAPSHOTS))
    }

    /// A new job for `event` in `namespace`, with a fresh id; add files, then [`Spool::write`].
    pub fn new_job(&self, event: Trigger, namespace: &str) -> Job {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let id = make_id(
            now.as_nanos(),
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed),
        );
        Job {
            version: JOB_VERSION,
            id,
            event,
            namespace: namespace.to_string(),
            written_unix_ms: now.as_millis() as u64,
            boot_id: boot_id().to_string(),
            files: Vec::new(),
        }
    }

    /// Copies a mutable file into the job's snapshot directory (a reflink where the filesystem
    /// offers one, else `copy_file_range`) and records it in the job.
    pub fn add_snapshot(&self, job: &mut Job, path: &Path) -> std::io::Result<()> {
        let dir = self.dir.join(SNAPSHOTS).join(&job.id);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let name = path
            .file_name()
            .ok_or_else(|| std::io::Error::other("path has no file name"))?;
        let snapshot = dir.join(name);
        copy_file(path, &snapshot)?;
        job.files.push(JobFile {
            path: path.to_path_buf(),
            snapshot: Some(snapshot),
        });
        Ok(())
    }

    /// Writes the job atomically (see the module documentation).
    pub fn write(&self, job: &Job) -> std::io::Result<()> {
        crate::fsutil::write_atomic(
            &self.job_path(&job.id),
            &serde_json::to_vec(job).map_err(std::io::Error::other)?,
            0o600,
            crate::fsutil::Durability::Durable,
        )
    }

    /// The file of the job `id`.
    pub fn job_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{JOB_SUFFIX}"))
    }

    /// The snapshot directory of the job `id`; `None` for an id that is not [`valid_id`].
    fn snapshot_dir(&self, id: &str) -> Option<PathBuf> {
        valid_id(id).then(|| self.dir.join(SNAPSHOTS).join(id))
    }

    /// Every whole job, oldest first. Unreadable jobs are returned as errors, not skipped.
    pub fn jobs(&self) -> std::io::Result<Vec<Result<Job, BadJob>>> {
        self.new_jobs(|_| false)
    }

    /// The jobs whose id `known` does not know, oldest first: the directory is listed by name
    /// and only those job files are read. Unreadable jobs are returned as errors, not skipped.
    pub fn new_jobs(
        &self,
        known: impl Fn(&str) -> bool,
    ) -> std::io::Result<Vec<Result<Job, BadJob>>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut ids = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(JOB_SUFFIX)) else {
                continue;
            };
            if !id.starts_with('.') && !known(id) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids
            .iter()
            .map(|id| self.read_job(&self.job_path(id)))
            .collect())
    }

    fn read_job(&self, path: &Path) -> Result<Job, BadJob> {
        let bad = |problem| BadJob {
            path: path.to_path_buf(),
            problem,
        };
        let bytes = fs::read(path).map_err(|e| bad(Problem::Unreadable(e)))?;
        let job: Job =
            serde_json::from_slice(&bytes).map_err(|e| bad(Problem::Invalid(e.to_string())))?;
        if job.version != JOB_VERSION {
            return Err(bad(Problem::Invalid(format!(
                "format version {} is not {JOB_VERSION}",
                job.version
            ))));
        }
        let stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(JOB_SUFFIX));
        if stem != Some(job.id.as_str()) {
            return Err(bad(Problem::Invalid(format!(
                "id {:?} is not the file name without {JOB_SUFFIX}",
                job.id
            ))));
        }
        let Some(dir) = self.snapshot_dir(&job.id) else {
            return Err(bad(Problem::Invalid(format!(
                "id {:?} is not <nanoseconds>-<pid>-<sequence>",
                job.id
            ))));
        };
        for snapshot in job.files.iter().filter_map(|f| f.snapshot.as_deref()) {
            if !inside(snapshot, &dir) {
                return Err(bad(Problem::Invalid(format!(
                    "snapshot {} is not a file in {}",
                    snapshot.display(),
                    dir.display()
                ))));
            }
        }
        Ok(job)
    }

    /// Removes a finished job (or what a failed [`Spool::write`] left of one): first the job
    /// file, then its snapshots. An id that is not [`valid_id`] is refused, so nothing outside
    /// `snapshots/<id>` is ever removed.
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        let snapshots = self.snapshot_dir(id).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{id:?} is not a spool job id"),
            )
        })?;
        match fs::remove_file(self.job_path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        crate::fsutil::sync_dir(&self.dir)?;
        match fs::remove_dir_all(snapshots) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Moves a job file that cannot be used into `bad/`, where it stays for an operator to
    /// look at, with `reason` in `bad/<name>.reason` next to it.
    pub fn quarantine(&self, job_file: &Path, reason: &str) -> std::io::Result<PathBuf> {
        let bad = self.dir.join(BAD);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&bad)?;
        let name = job_file.file_name().unwrap_or_default();
        let target = bad.join(name);
        let mut reason_file = name.to_os_string();
        reason_file.push(REASON_SUFFIX);
        crate::fsutil::write_atomic(
            &bad.join(reason_file),
            format!("{reason}\n").as_bytes(),
            0o600,
            crate::fsutil::Durability::Durable,
        )?;
        fs::rename(job_file, &target)?;
        crate::fsutil::sync_dir(&self.dir)?;
        Ok(target)
    }

    /// How many job files `bad/` holds.
    pub fn quarantined(&self) -> std::io::Result<usize> {
        match fs::read_dir(self.dir.join(BAD)) {
            Ok(entries) => Ok(entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(JOB_SUFFIX))
                .count()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Removes what an interrupted writer left: temporary job files and snapshot directories
    /// that no job names (in the spool or in `bad/`), if they are older than `min_age` (so a
    /// writer that is still at work is left alone). Returns how many entries were removed.
    pub fn collect_garbage(&self, min_age: Duration) -> std::io::Result<usize> {
        let old = |path: &Path| {
            fs::symlink_metadata(path)
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or(Duration::ZERO) >= min_age)
                .unwrap_or(false)
        };
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) && old(&entry.path()) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if let Ok(entries) = fs::read_dir(self.dir.join(SNAPSHOTS)) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                let quarantined = self.dir.join(BAD).join(format!("{id}{JOB_SUFFIX}"));
                if !self.job_path(&id).exists() && !quarantined.exists() && old(&entry.path()) {
                    fs::remove_dir_all(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Whether `path` names a file directly in `dir`, both as written (no `..`, no other
/// directory) and once symlinks are resolved (when it exists; `dir` must not be a symlink).
fn inside(path: &Path, dir: &Path) -> bool {
    let lexical = path.parent() == Some(dir)
        && path
            .file_name()
            .is_some_and(|n| n != "." && n != ".." && !n.is_empty())
        && !path
            .components()
            .any(|c| c == std::path::Component::ParentDir);
    if !lexical {
        return false;
    }
    // `dir` itself may be the symlink: resolve its parent and keep its own name.
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return false;
    };
    match (path.canonicalize(), parent.canonicalize()) {
        (Ok(real), Ok(real_parent)) => real.parent() == Some(real_parent.join(name).as_path()),
        (Err(e), _) | (_, Err(e)) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Copies `from` to a new file `to`: a reflink (FICLONE) where the filesystem can share
/// blocks, else `copy_file_range` (through `std::io::copy`). Not fsynced (see the module
/// documentation).
pub fn copy_file(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut source = File::open(from)?;
    let mut target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open for the call.
    if unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) } != 0 {
        std::io::copy(&mut source, &mut target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool"));
        spool.create().unwrap();
        assert_eq!(
            fs::metadata(spool.dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let index = dir.path().join("i3");
        fs::write(&index, b"index bytes").unwrap();
        let mut first = spool.new_job(Trigger::JumpIndex, "zdbfs-data");
        spool.add_snapshot(&mut first, &index).unwrap();
        spool.write(&first).unwrap();
        let mut second = spool.new_job(Trigger::JumpData, "zdbfs-data");
        second.files.push(JobFile {
            path: "/d/d3".into(),
            snapshot: None,
        });
        spool.write(&second).unwrap();

        // The snapshot does not change when the index file does.
        fs::write(&index, b"changed").unwrap();
        let jobs: Vec<Job> = spool
            .jobs()
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(jobs, [first.clone(), second.clone()]);
        let (source, key_path) = jobs[0].files[0].upload_source();
        assert_eq!(fs::read(source).unwrap(), b"index bytes");
        assert_eq!(key_path, Some(dir.path()));
        assert_eq!(jobs[1].files[0].upload_source(), (Path::new("/d/d3"), None));

        assert!(jobs[0].snapshots_usable());
        let from_an_earlier_boot = Job {
            boot_id: "00000000-0000-0000-0000-000000000000".into(),
            ..first.clone()
        };
        assert!(!from_an_earlier_boot.snapshots_usable());

        spool.remove(&first.id).unwrap();
        assert!(!spool.dir().join(SNAPSHOTS).join(&first.id).exists());
        assert_eq!(spool.jobs().unwrap().len(), 1);
        spool.remove(&first.id).unwrap();
    }

    #[test]
    fn leftovers_and_bad_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        spool.create().unwrap();
        fs::write(dir.path().join(".tmp-123"), b"{half").unwrap();
        fs::create_dir(dir.path().join("snapshots/123")).unwrap();
        fs::write(dir.path().join("999.job"), b"not json").unwrap();
        let jobs = spool.jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        assert!(jobs[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("999.job"));
        assert_eq!(spool.collect_garbage(Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(spool.collect_garbage(Duration::ZERO).unwrap(), 2);
        let moved = spool
            .quarantine(&dir.path().join("999.job"), "not json")
            .unwrap();
        assert_eq!(moved, dir.path().join("bad/999.job"));
        assert_eq!(
            fs::read_to_string(dir.path().join("bad/999.job.reason")).unwrap(),
            "not json\n"
        );
        assert_eq!(spool.quarantined().unwrap(), 1);
        assert!(spool.jobs().unwrap().is_empty());
        assert!(Spool::new(dir.path().join("absent"))
            .jobs()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn only_new_jobs_are_read_and_unreadable_is_not_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        spool.create().unwrap();
        let old = spool.new_job(Trigger::JumpData, "zdbfs-data");
        spool.write(&old).unwrap();
        let new = spool.new_job(Trigger::JumpData, "zdbfs-data");
        spool.write(&new).unwrap();
        // Known ids are never read: this one is not even a job any more.
        fs::write(spool.job_path(&old.id), b"not json").unwrap();
        let known = |id: &str| id == old.id;
        let jobs: Vec<Job> = spool
            .new_jobs(known)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(jobs, std::slice::from_ref(&new));
        assert!(spool.new_jobs(|_| true).unwrap().is_empty());

        // Cannot be read (here: it is a directory) is not the same as cannot be parsed.
        fs::create_dir(dir.path().join("1-dir.job")).unwrap();
        fs::write(
            spool.job_path("2-v2"),
            serde_json::to_vec(&Job {
                version: 2,
                ..new.clone()
            })
            .unwrap(),
        )
        .unwrap();
        let problems: Vec<String> = spool
            .new_jobs(|id| id == new.id)
            .unwrap()
            .into_iter()
            .map(|job| match job.unwrap_err().problem {
                Problem::Unreadable(e) => format!("unreadable: {:?}", e.kind()),
                Problem::Invalid(reason) => format!("invalid: {reason}"),
            })
            .collect();
        assert_eq!(
            problems,
            [
                "unreadable: IsADirectory".to_string(),
                "invalid: expected ident at line 1 column 2".to_string(),
                "invalid: format version 2 is not 1".to_string(),
            ]
        );
    }

    /// A job id is a file name only when it is the job's own and of the writer's form, and a
    /// snapshot is read only from its job's `snapshots/<id>/`: a job with id `../../victim`
    /// once made `remove` delete a directory outside the spool.
    #[test]
    fn ids_and_snapshots_are_confined_to_the_spool() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool"));
        spool.create().unwrap();
        let victim = dir.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("precious"), b"keep").unwrap();
        assert!(spool.remove("../../victim").is_err());
        assert!(victim.join("precious").exists());

        assert!(valid_id(&spool.new_job(Trigger::JumpData, "ns").id));
        for bad in [
            "",
            "1-2",
            "1-2-3-4",
            "1-2-x",
            "../../victim",
            "1-2-3/..",
            "-1-2",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }

        let outside = dir.path().join("outside");
        fs::write(&outside, b"secret").unwrap();
        let job = |id: &str, snapshot: Option<PathBuf>| Job {
            files: vec![JobFile {
                path: "/z/index/ns/i1".into(),
                snapshot,
            }],
            id: id.into(),
            ..spool.new_job(Trigger::JumpIndex, "ns")
        };
        let put = |name: &str, job: &Job| {
            fs::write(
                spool.dir().join(format!("{name}.job")),
                serde_json::to_vec(job).unwrap(),
            )
            .unwrap()
        };
        let snapshots = spool.dir().join(SNAPSHOTS);
        put("1-1-1", &job("../../victim", None));
        put("1-1-2", &job("1-1-2", Some(outside.clone())));
        put(
            "1-1-3",
            &job("1-1-3", Some(snapshots.join("1-1-3/../../../outside"))),
        );
        fs::create_dir(snapshots.join("1-1-4")).unwrap();
        symlink(&outside, snapshots.join("1-1-4/i1")).unwrap();
        put("1-1-4", &job("1-1-4", Some(snapshots.join("1-1-4/i1"))));
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("i1"), b"secret").unwrap();
        symlink(&elsewhere, snapshots.join("1-1-5")).unwrap();
        put("1-1-5", &job("1-1-5", Some(snapshots.join("1-1-5/i1"))));
        put("a-b-c", &job("a-b-c", None));
        fs::create_dir(snapshots.join("1-1-6")).unwrap();
        fs::write(snapshots.join("1-1-6/i1"), b"index").unwrap();
        put("1-1-6", &job("1-1-6", Some(snapshots.join("1-1-6/i1"))));

        let results = spool.jobs().unwrap();
        let problems: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|bad| match &bad.problem {
                Problem::Invalid(reason) => reason.clone(),
                Problem::Unreadable(e) => panic!("{e}"),
            })
            .collect();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(
            problems[0].contains("is not the file name"),
            "{problems:#?}"
        );
        for problem in &problems[1..5] {
            assert!(problem.contains("is not a file in"), "{problem}");
        }
        assert!(problems[5].contains("is not <nanoseconds>-<pid>-<sequence>"));
        let good: Vec<&Job> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].id, "1-1-6");

        // A quarantined job keeps its snapshots.
        spool
            .quarantine(&spool.job_path("1-1-6"), "for the test")
            .unwrap();
        for id in ["1-1-4", "1-1-5"] {
            fs::remove_file(spool.job_path(id)).unwrap();
        }
        assert_eq!(spool.collect_garbage(Duration::ZERO).unwrap(), 2);
        assert!(snapshots.join("1-1-6/i1").exists());
        assert!(outside.exists() && elsewhere.join("i1").exists());
    }

    /// Version 1 of the job format, as `tests/fixtures/spool/job-v1.json` records it: the
    /// reader parses it, and the writer writes exactly these fields.
    #[test]
    fn job_format_v1() {
        let dir = tempfile::tempdir().unwrap();
        // The reader accepts only snapshots in its own spool: move the fixture's there.
        let fixture = include_str!("../tests/fixtures/spool/job-v1.json")
            .replace("/var/zdbfs/spool", dir.path().to_str().unwrap());
        let fixture = fixture.as_str();
        let spool = Spool::new(dir.path());
        spool.create().unwrap();
        fs::write(spool.job_path("1764081234567890123-4242-0"), fixture).unwrap();
        let jobs = spool.jobs().unwrap();
        let job = jobs[0].as_ref().unwrap();
        let expected = Job {
            version: 1,
            id: "1764081234567890123-4242-0".into(),
            event: Trigger::JumpIndex,
            namespace: "zdbfs-data".into(),
            written_unix_ms: 1764081234567,
            boot_id: "5b3c1bfe-7b4a-4c1e-9d55-0d6f9f2b8a11".into(),
            files: vec![
                JobFile {
                    path: "/var/zdbfs/index/zdbfs-data/i3".into(),
                    snapshot: Some(dir.path().join("snapshots/1764081234567890123-4242-0/i3")),
                },
                JobFile {
                    path: "/var/zdbfs/data/zdbfs-data/d3".into(),
                    snapshot: None,
                },
            ],
        };
        assert_eq!(job, &expected);
        spool.remove(&expected.id).unwrap();
        spool.write(&expected).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&fs::read(spool.job_path(&expected.id)).unwrap()).unwrap();
        assert_eq!(
            written,
            serde_json::from_str::<serde_json::Value>(fixture).unwrap()
        );
    }
}
