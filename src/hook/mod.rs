//! `zdb-hook`: what the appliance does on each 0-db hook event.
//!
//! zdb execs the hook with `$1` the event, `$2` its instance id, then the event's arguments
//! (contracts §1.3–1.4). zdb is single-threaded and waits for `ready`, `close`, `jump-index`,
//! `missing-data` and `namespaces-init`, so every handler is short: uploads are only *spooled*
//! here ([`crate::spool`]) and done by `zstor_monitor`. The two handlers that must talk to the
//! backends (`missing-data`, `namespaces-init`) are bounded by timeouts.
//!
//! Exit codes: 0 when the event was handled; 2 for missing or malformed arguments; 78 when the
//! config is unusable; 1 for any other failure. For `jump-index` a non-zero exit makes zdb keep
//! its dirty list; for `missing-data` it fails the read; for `ready` it makes zdb exit with
//! status 0 (so systemd's `Restart=on-failure` would not restart it): `ready` fails only when
//! the appliance truly cannot run (a failed restore).

mod reads;
mod restore;

use crate::config::appliance::{self, HookConfig};
use crate::cuts::{self, Cuts, CLOCK_LAG};
use crate::fsutil::{self, Durability};
use crate::layout::{
    self, highest_file_number, DATA_NAMESPACE, INDEX_PREFIX, META_NAMESPACE, NAMESPACE_FILE,
    TEMP_NAMESPACE,
};
use crate::logging::message_id;
use crate::notify::Notifier;
use crate::restore_marks::{Marks, Process};
use crate::spool::{Job, JobFile, Spool, Trigger};
use crate::zdb_busy;
use crate::zstor::{Checksum, ZstorError};
use reads::Reads;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The password zdbfs always uses for zdbfs-temp (fixed in zdbfs 0.1.11, contracts §2.1).
const ZDBFS_TEMP_PASSWORD: &str = "hello";

/// A hook event with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `ready`: zdb listens and waits for us before serving.
    Ready,
    /// `close`: zdb is stopping (SIGTERM/SIGINT) and waits for us.
    Close,
    /// `crash`: zdb got SIGSEGV.
    Crash,
    /// `jump-index <old index> <new index> <dirty ids>`
    JumpIndex {
        /// The index file just closed.
        old: PathBuf,
        /// The new active index file.
        new: PathBuf,
        /// Ids of older index files changed since the last jump.
        dirty: Vec<u32>,
    },
    /// `jump-data <old data> <new data>`
    JumpData {
        /// The data file just sealed.
        old: PathBuf,
        /// The new active data file.
        new: PathBuf,
    },
    /// `missing-data <data file>`: zdb needs a file that is not on disk.
    MissingData {
        /// The file to bring back.
        path: PathBuf,
    },
    /// `namespace-created <ns>`
    NamespaceCreated {
        /// The namespace.
        namespace: String,
    },
    /// `namespace-updated <ns>`
    NamespaceUpdated {
        /// The namespace.
        namespace: String,
    },
    /// `namespace-deleted <ns>`
    NamespaceDeleted {
        /// The namespace.
        namespace: String,
    },
    /// `namespace-reloaded <ns>`
    NamespaceReloaded {
        /// The namespace.
        namespace: String,
    },
    /// `namespaces-init <index root> <data root>`: before zdb loads its namespaces.
    NamespacesInit {
        /// zdb's index root.
        index_root: PathBuf,
        /// zdb's data root.
        data_root: PathBuf,
    },
    /// `namespace-closing <ns> <index> <data> <dirty ids>`: zdb is about to exit.
    NamespaceClosing {
        /// The namespace.
        namespace: String,
        /// Its current index file.
        index: PathBuf,
        /// Its current data file.
        data: PathBuf,
        /// Ids of its dirty index files.
        dirty: Vec<u32>,
    },
    /// `prepare-zdbfs`: not a zdb event. `qsfs-zdb.service` runs it once zdb is ready, before
    /// zdbfs starts: a namespace loaded with an empty last index file jumps ([`jump_empty_at_load`]),
    /// and a restored VM (zdbfs-meta present) gets the zdbfs-temp namespace, which zdbfs's
    /// `autons` only creates on an empty zdb (qss#38).
    PrepareZdbfs,
    /// `serve-reads`: not a zdb event. `qsfs-zstor-reads@.service` runs it for one connection
    /// of the hook's read lane ([`reads`]).
    ServeReads,
    /// Any event this build does not know.
    Unknown(String),
}

impl Event {
    /// Parses the event name and its arguments (after the instance id).
    pub fn parse(name: &str, args: &[OsString]) -> Result<Event, HookError> {
        let bad = |what: &str| HookError::BadArguments(format!("{name}: {what}"));
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(bad(&format!(
                    "expected {n} arguments after the instance id, got {}",
                    args.len()
                )))
            }
        };
        let path = |i: usize| PathBuf::from(&args[i]);
        let text = |i: usize| {
            args[i]
                .to_str()
                .map(str::to_string)
                .ok_or_else(|| bad("argument is not UTF-8"))
        };
        Ok(match name {
            "ready" => Event::Ready,
            "close" => Event::Close,
            "crash" => Event::Crash,
            "jump-index" => {
                arity(3)?;
                Event::JumpIndex {
                    old: path(0),
                    new: path(1),
                    dirty: dirty_ids(&text(2)?).map_err(|e| bad(&e))?,
                }
            }
            "jump-data" => {
                arity(2)?;
                Event::JumpData {
                    old: path(0),
                    new: path(1),
                }
            }
            "missing-data" => {
                arity(1)?;
                Event::MissingData { path: path(0) }
            }
            "namespace-created" | "namespace-updated" | "namespace-deleted"
            | "namespace-reloaded" => {
                arity(1)?;
                let namespace = text(0)?;
                match name {
                    "namespace-created" => Event::NamespaceCreated { namespace },
                    "namespace-updated" => Event::NamespaceUpdated { namespace },
                    "namespace-deleted" => Event::NamespaceDeleted { namespace },
                    _ => Event::NamespaceReloaded { namespace },
                }
            }
            "namespaces-init" => {
                arity(2)?;
                Event::NamespacesInit {
                    index_root: path(0),
                    data_root: path(1),
                }
            }
            "namespace-closing" => {
                arity(4)?;
                Event::NamespaceClosing {
                    namespace: text(0)?,
                    index: path(1),
                    data: path(2),
                    dirty: dirty_ids(&text(3)?).map_err(|e| bad(&e))?,
                }
            }
            "prepare-zdbfs" => Event::PrepareZdbfs,
            "serve-reads" => Event::ServeReads,
            other => Event::Unknown(other.to_string()),
        })
    }

    /// zdb waits for these events (contracts §1.4).
    pub fn is_blocking(&self) -> bool {
        matches!(
            self,
            Event::Ready
                | Event::Close
                | Event::JumpIndex { .. }
                | Event::MissingData { .. }
                | Event::NamespacesInit { .. }
        )
    }
}

/// Parses zdb's dirty list: decimal ids, each followed by a space (`"0 3 7 "`), possibly empty.
fn dirty_ids(list: &str) -> Result<Vec<u32>, String> {
    list.split_whitespace()
        .map(|id| {
            id.parse()
                .map_err(|_| format!("dirty list `{list}` has a bad id `{id}`"))
        })
        .collect()
}

/// Why an event could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The arguments do not match the event.
    #[error("bad arguments: {0}")]
    BadArguments(String),
    /// A path zdb passed is not where the config says zdb keeps its files.
    #[error("{path} is not a file of a namespace under {root}")]
    OutsideRoots {
        /// The path.
        path: PathBuf,
        /// The root it should be under.
        root: PathBuf,
    },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// zstor failed.
    #[error(transparent)]
    Zstor(#[from] ZstorError),
    /// The file is not stored on the backends.
    #[error("{0} is not stored on the backends")]
    NotStored(PathBuf),
    /// A retrieved file differs from what was stored.
    #[error("{path} came back with checksum {actual}, but {expected} was stored")]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The stored checksum.
        expected: Checksum,
        /// The checksum of what came back.
        actual: Checksum,
    },
    /// The read lane (`qsfs-zstor-reads.socket`) could not be used.
    #[error("the zstor read service at {socket}: {problem}")]
    Reads {
        /// Its socket.
        socket: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The read lane ran the zstor command, and it failed (zstor's error, or a bad request).
    #[error("{0}")]
    ReadFailed(String),
    /// A blocking event ran out of time.
    #[error("gave up after {0} s")]
    Timeout(u64),
    /// Talking to zdb failed.
    #[error("zdb: {0}")]
    Zdb(String),
    /// `namespaces-init` refused: this VM's namespaces or the backends' are not a state zdb
    /// may start on.
    #[error("{0}")]
    Restore(String),
    /// `ready`: the last `namespaces-init` refused or failed, for this reason.
    #[error("namespaces-init did not complete ({0}); refusing to start zdb")]
    RestoreFailed(String),
    /// `ready`: no proof that `namespaces-init` completed for this zdb.
    #[error(
        "namespaces-init did not complete for this zdb ({0} does not name it; its error is in \
         the journal just before): refusing to start zdb"
    )]
    NotInitialized(PathBuf),
}

impl HookError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            HookError::BadArguments(_) => crate::exit::USAGE,
            _ => crate::exit::FAILURE,
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HookError {
    let context = context.into();
    move |source| HookError::Io { context, source }
}

/// What a handled event did, for its journal entry.
#[derive(Debug, Default)]
pub struct Handled {
    /// The namespace concerned, if one.
    pub namespace: Option<String>,
    /// The files spooled, retrieved or restored.
    pub files: Vec<PathBuf>,
    /// The ids of the spool jobs written.
    pub jobs: Vec<String>,
    /// A note for the log (for example why nothing was done).
    pub note: Option<&'static str>,
}

/// The hook's context: settings, spool, the read lane and systemd notification.
pub struct Hook {
    config: HookConfig,
    spool: Spool,
    reads: Reads,
    notifier: Notifier,
}

impl Hook {
    /// A hook working with the given settings.
    pub fn new(config: HookConfig) -> Self {
        Hook {
            spool: Spool::new(&config.paths.spool_dir),
            reads: Reads::new(&config.paths.zstor_reads_socket),
            notifier: Notifier::from_env(),
            config,
        }
    }

    /// Handles one event.
    pub fn handle(&self, event: &Event) -> Result<Handled, HookError> {
        match event {
            Event::Ready => self.ready(),
            Event::JumpIndex { old, dirty, .. } => self.jump_index(old, dirty),
            Event::JumpData { old, .. } => self.jump_data(old),
            Event::NamespaceCreated { namespace } => {
                self.namespace_changed(Trigger::NamespaceCreated, namespace)
            }
            Event::NamespaceUpdated { namespace } => {
                self.namespace_changed(Trigger::NamespaceUpdated, namespace)
            }
            Event::Close => self.close(),
            Event::NamespaceClosing {
                namespace,
                index,
                data,
                dirty,
            } => self.namespace_closing(namespace, index, data, dirty),
            Event::MissingData { path } => self.missing_data(path),
            Event::NamespacesInit {
                index_root,
                data_root,
            } => self.namespaces_init(index_root, data_root),
            Event::PrepareZdbfs => self.prepare_zdbfs(),
            Event::ServeReads => reads::serve(&self.config).map(|file| Handled {
                files: vec![file],
                ..Handled::default()
            }),
            Event::Crash
            | Event::NamespaceDeleted { .. }
            | Event::NamespaceReloaded { .. }
            | Event::Unknown(_) => Ok(Handled {
                note: Some("logged only"),
                ..Handled::default()
            }),
        }
    }

    fn marks(&self) -> Marks {
        Marks::new(&self.config.paths.state_dir)
    }

    /// zdb starts only once `namespaces-init` completed for this very zdb.
    fn ready(&self) -> Result<Handled, HookError> {
        let marks = self.marks();
        if let Some(reason) = marks.failure() {
            return Err(HookError::RestoreFailed(reason));
        }
        if !Process::parent().is_some_and(|zdb| marks.done_for(&zdb)) {
            return Err(HookError::NotInitialized(marks.done_path()));
        }
        // zdb listens already; it serves clients as soon as we return.
        if let Err(e) = self
            .notifier
            .ready_and_wait("0-db is ready", Duration::from_secs(5))
        {
            tracing::warn!("systemd did not confirm READY=1: {e}");
        }
        Ok(Handled::default())
    }

    fn jump_index(&self, old: &Path, dirty: &[u32]) -> Result<Handled, HookError> {
        let (namespace, dir) = self.namespace_of(old, &self.config.paths.index_dir)?;
        if namespace == TEMP_NAMESPACE {
            return Ok(skipped_temp(namespace));
        }
        let began = SystemTime::now();
        let snapshots = with_dirty(old, &dir, dirty);
        let handled = self.spool_job(Trigger::JumpIndex, &namespace, &snapshots, &[])?;
        if layout::RESTORED_NAMESPACES.contains(&namespace.as_str()) && self.held().is_none() {
            // Its index file is sealed now: both namespaces are seen at this one instant.
            let sealed = layout::file_number(
                &old.file_name().unwrap_or_default().to_string_lossy(),
                INDEX_PREFIX,
            );
            self.take_cut(Some(namespace.as_str()).zip(sealed));
        }
        let mark = self.jump_mark(&namespace);
        let since_epoch = began.duration_since(UNIX_EPOCH).unwrap_or_default();
        if let Err(e) = std::fs::create_dir_all(fsutil::parent(&mark)).and_then(|()| {
            let text = format!("{}\n", since_epoch.as_nanos());
            // Without an fsync (zdb waits): a mark lost in a power cut leaves an older one, or
            // none, which only makes the next stop snapshot more index files.
            fsutil::write_atomic(&mark, text.as_bytes(), 0o644, Durability::Visible)
        }) {
            tracing::warn!("cannot record the jump in {}: {e}", mark.display());
        }
        Ok(handled)
    }

    /// Where `jump-index` records when zdb last jumped in `namespace`. zdb waits during the
    /// hook, so every index file changed since has a later mtime (less the lag of the coarse
    /// clock the kernel stamps files with): a stop snapshots exactly those.
    fn jump_mark(&self, namespace: &str) -> PathBuf {
        self.config.paths.state_dir.join("jumps").join(namespace)
    }

    /// The index files of `dir` changed since the last jump in `namespace` (all of them when
    /// no jump was recorded), and the active one.
    fn changed_since_jump(&self, namespace: &str, dir: &Path, active: u32) -> Vec<PathBuf> {
        let since = std::fs::read_to_string(self.jump_mark(namespace))
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos) - CLOCK_LAG);
        let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let number = layout::file_number(entry.file_name().to_str()?, INDEX_PREFIX)?;
                // A file whose time cannot be read counts as changed.
                let changed = entry
                    .metadata()
                    .and_then(|meta| meta.modified())
                    .map_or(true, |modified| since.is_none_or(|since| modified >= since));
                (changed && number != active).then(|| (number, entry.path()))
            })
            .collect();
        files.push((active, dir.join(layout::index_file(active))));
        files.sort();
        files.into_iter().map(|(_, path)| path).collect()
    }

    fn jump_data(&self, old: &Path) -> Result<Handled, HookError> {
        let (namespace, _) = self.namespace_of(old, &self.config.paths.data_dir)?;
        if namespace == TEMP_NAMESPACE {
            return Ok(skipped_temp(namespace));
        }
        // Sealed data files never change: no snapshot.
        self.spool_job(Trigger::JumpData, &namespace, &[], &[old.to_path_buf()])
    }

    fn namespace_changed(&self, event: Trigger, namespace: &str) -> Result<Handled, HookError> {
        let file = self.namespace_dir(namespace)?.join(NAMESPACE_FILE);
        if namespace == TEMP_NAMESPACE {
            return Ok(skipped_temp(namespace.to_string()));
        }
        // The descriptor is rewritten in place by zdb; the monitor verifies the checksum of
        // what it uploaded against the file, so a later change is uploaded again.
        self.spool_job(event, namespace, &[], &[file])
    }

    /// zdb stops: spool every namespace's active data file and, as snapshots, its active index
    /// and every index file changed since the last jump, so a clean stop loses nothing.
    fn close(&self) -> Result<Handled, HookError> {
        if let Some(held) = self.held() {
            return Ok(held);
        }
        let index_root = &self.config.paths.index_dir;
        let entries = std::fs::read_dir(index_root)
            .map_err(io(format!("cannot list {}", index_root.display())))?;
        let mut namespaces: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| name != TEMP_NAMESPACE && !name.starts_with('.'))
            .collect();
        namespaces.sort();
        let mut handled = Handled::default();
        for namespace in namespaces {
            let index_dir = index_root.join(&namespace);
            let Some(active) = highest_file_number(&index_dir, INDEX_PREFIX) else {
                continue;
            };
            let index = self.changed_since_jump(&namespace, &index_dir, active);
            let data = self
                .config
                .paths
                .data_dir
                .join(&namespace)
                .join(layout::data_file(active));
            let done = self.spool_job(Trigger::Close, &namespace, &index, &existing(&[data]))?;
            handled.files.extend(done.files);
            handled.jobs.extend(done.jobs);
        }
        self.take_cut(None);
        Ok(handled)
    }

    /// Takes a restore point ([`crate::cuts`]) while zdb waits: both namespaces as they are,
    /// except that a namespace that just `jumped` from index file `N` is taken up to `N`; none
    /// while zdbfs writes its cache (it would hold half of what the flush writes). A failure is
    /// logged and leaves the last published restore point in place (the next cut holds the
    /// changes).
    fn take_cut(&self, jumped: Option<(&str, u32)>) {
        let cuts = Cuts::new(&self.config.paths.state_dir);
        let active = |namespace: &str| {
            jumped
                .filter(|(jumped, _)| *jumped == namespace)
                .map(|(_, n)| n)
        };
        let takes = [
            cuts::Take {
                namespace: META_NAMESPACE,
                active: active(META_NAMESPACE),
                copy_data: true,
            },
            cuts::Take {
                namespace: DATA_NAMESPACE,
                active: active(DATA_NAMESPACE),
                copy_data: false,
            },
        ];
        let paths = &self.config.paths;
        match cuts::take(&cuts, &paths.index_dir, &paths.data_dir, &takes) {
            Ok(Some(manifest)) => tracing::info!(
                qsfs_cut = manifest.id,
                "restore point {} taken (zdbfs-meta up to i{}, zdbfs-data up to i{})",
                manifest.id,
                manifest.namespaces[0].active,
                manifest.namespaces[1].active
            ),
            Ok(None) => {}
            Err(e) => tracing::error!(
                message_id = message_id::CUT_FAILED,
                "cannot take a restore point in {}: {e}",
                cuts.dir().display()
            ),
        }
    }

    fn namespace_closing(
        &self,
        namespace: &str,
        index: &Path,
        data: &Path,
        dirty: &[u32],
    ) -> Result<Handled, HookError> {
        let (index_ns, index_dir) = self.namespace_of(index, &self.config.paths.index_dir)?;
        let (data_ns, _) = self.namespace_of(data, &self.config.paths.data_dir)?;
        if index_ns != namespace || data_ns != namespace {
            return Err(HookError::BadArguments(format!(
                "namespace-closing: {} and {} are not files of namespace {namespace}",
                index.display(),
                data.display()
            )));
        }
        if namespace == TEMP_NAMESPACE {
            return Ok(skipped_temp(namespace.to_string()));
        }
        if let Some(held) = self.held() {
            return Ok(held);
        }
        self.spool_job(
            Trigger::NamespaceClosing,
            namespace,
            &with_dirty(index, &index_dir, dirty),
            &existing(&[data.to_path_buf()]),
        )
    }

    /// zdb needs a data file that is not on disk (evicted from the cache): fetch it back and
    /// check it is whole, within the configured time. Never leaves a partial file behind.
    fn missing_data(&self, path: &Path) -> Result<Handled, HookError> {
        let (namespace, _) = self.namespace_of(path, &self.config.paths.data_dir)?;
        if namespace == TEMP_NAMESPACE {
            return Err(HookError::NotStored(path.to_path_buf()));
        }
        let deadline = Instant::now() + self.config.hook.missing_data_timeout;
        fetch_verified(&self.reads, path, deadline).map_err(|e| match e {
            HookError::Timeout(_) | HookError::Zstor(ZstorError::TimedOut { .. }) => {
                HookError::Timeout(self.config.hook.missing_data_timeout.as_secs())
            }
            e => e,
        })?;
        Ok(Handled {
            namespace: Some(namespace),
            files: vec![path.to_path_buf()],
            ..Handled::default()
        })
    }

    fn namespaces_init(&self, index_root: &Path, data_root: &Path) -> Result<Handled, HookError> {
        let roots = [
            (index_root, &self.config.paths.index_dir),
            (data_root, &self.config.paths.data_dir),
        ]
        .into_iter()
        .try_for_each(|(given, configured)| {
            if clean(given) == clean(configured) {
                Ok(())
            } else {
                Err(HookError::OutsideRoots {
                    path: given.to_path_buf(),
                    root: configured.clone(),
                })
            }
        });
        restore::run(&self.config, &self.reads, roots, Process::parent())
    }

    /// While a restore is unfinished or refused, the namespaces on disk are not the VM's to
    /// upload: a stop spools nothing.
    fn held(&self) -> Option<Handled> {
        let reason = self.marks().hold()?;
        tracing::warn!("nothing is spooled: {reason}");
        Some(Handled {
            note: Some("the namespaces are held: a restore is unfinished or was refused"),
            ..Handled::default()
        })
    }

    /// Jumps the namespaces zdb loaded with an empty last index file ([`jump_empty_at_load`]),
    /// then creates zdbfs-temp as zdbfs's `autons` would (sequential, private, password
    /// `hello`) when zdbfs-meta exists but zdbfs-temp does not.
    fn prepare_zdbfs(&self) -> Result<Handled, HookError> {
        let endpoint = crate::zdb::Endpoint::Unix(self.config.paths.zdb_socket.clone());
        let zdb = |e: crate::zdb::ZdbError| HookError::Zdb(e.to_string());
        let mut client =
            crate::zdb::Client::connect(&endpoint, Duration::from_secs(30)).map_err(zdb)?;
        let namespaces = client.nslist().map_err(zdb)?;
        let has = |name: &str| namespaces.iter().any(|ns| ns == name);
        jump_empty_at_load(&mut client, &self.config.paths)?;
        if !has(META_NAMESPACE) || has(TEMP_NAMESPACE) {
            return Ok(Handled {
                note: Some("nothing to prepare"),
                ..Handled::default()
            });
        }
        client.nsnew(TEMP_NAMESPACE).map_err(zdb)?;
        for (property, value) in [
            ("mode", "seq"),
            ("public", "0"),
            ("password", ZDBFS_TEMP_PASSWORD),
        ] {
            client.nsset(TEMP_NAMESPACE, property, value).map_err(zdb)?;
        }
        Ok(Handled {
            namespace: Some(TEMP_NAMESPACE.to_string()),
            note: Some("created zdbfs-temp for zdbfs (a restored VM)"),
            ..Handled::default()
        })
    }

    /// Writes one job: `snapshots` are copied first (mutable files), `files` are uploaded as
    /// they are at upload time.
    fn spool_job(
        &self,
        event: Trigger,
        namespace: &str,
        snapshots: &[PathBuf],
        files: &[PathBuf],
    ) -> Result<Handled, HookError> {
        self.spool.create().map_err(io(format!(
            "cannot create the spool {}",
            self.spool.dir().display()
        )))?;
        let mut job: Job = self.spool.new_job(event, namespace);
        let written = snapshots
            .iter()
            .try_for_each(|file| {
                self.spool.add_snapshot(&mut job, file).map_err(io(format!(
                    "cannot snapshot {} into the spool",
                    file.display()
                )))
            })
            .and_then(|()| {
                job.files.extend(files.iter().map(|path| JobFile {
                    path: path.clone(),
                    snapshot: None,
                }));
                self.spool
                    .write(&job)
                    .map_err(io(format!("cannot write spool job {}", job.id)))
            });
        if let Err(e) = written {
            // A full spool (ENOSPC) must not stay fuller: nothing of a job that was not written
            // is kept (one renamed into place is whole, only its directory fsync failed).
            if !self.spool.job_path(&job.id).exists() {
                if let Err(cleanup) = self.spool.remove(&job.id) {
                    tracing::warn!("cannot remove what job {} left: {cleanup}", job.id);
                }
            }
            return Err(e);
        }
        Ok(Handled {
            namespace: Some(namespace.to_string()),
            files: job.files.iter().map(|f| f.path.clone()).collect(),
            jobs: vec![job.id],
            note: None,
        })
    }

    /// Checks that `path` is `<root>/<namespace>/<file>` and returns the namespace and its dir.
    fn namespace_of(&self, path: &Path, root: &Path) -> Result<(String, PathBuf), HookError> {
        let outside = || HookError::OutsideRoots {
            path: path.to_path_buf(),
            root: root.to_path_buf(),
        };
        let cleaned = clean(path).ok_or_else(outside)?;
        let relative = cleaned
            .strip_prefix(clean(root).ok_or_else(outside)?)
            .map_err(|_| outside())?;
        let parts: Vec<_> = relative.components().collect();
        match parts.as_slice() {
            [Component::Normal(namespace), Component::Normal(_)] => {
                let namespace = namespace.to_str().ok_or_else(outside)?.to_string();
                let dir = cleaned.parent().ok_or_else(outside)?.to_path_buf();
                Ok((namespace, dir))
            }
            _ => Err(outside()),
        }
    }

    fn namespace_dir(&self, namespace: &str) -> Result<PathBuf, HookError> {
        let dir = self.config.paths.index_dir.join(namespace);
        self.namespace_of(&dir.join(NAMESPACE_FILE), &self.config.paths.index_dir)?;
        Ok(dir)
    }
}

/// `index` and the index files `i<id>` of `dir` that zdb's dirty list names, each once.
fn with_dirty(index: &Path, dir: &Path, dirty: &[u32]) -> Vec<PathBuf> {
    let mut files = vec![index.to_path_buf()];
    for id in dirty {
        let file = dir.join(layout::index_file(*id));
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files
}

fn skipped_temp(namespace: String) -> Handled {
    Handled {
        namespace: Some(namespace),
        note: Some("zdbfs-temp is never uploaded"),
        ..Handled::default()
    }
}

fn existing(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths.iter().filter(|p| p.exists()).cloned().collect()
}

/// A path without `.` components or trailing slashes; `None` if it has `..` or is relative.
fn clean(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    Some(
        path.components()
            .filter(|c| *c != Component::CurDir)
            .collect(),
    )
}

/// The time left before `deadline`, or a timeout error.
fn remaining(deadline: Instant) -> Result<Duration, HookError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or(HookError::Timeout(0))
}

/// Retrieves `path` through the read lane before `deadline`, unless it is already here and
/// whole.
fn fetch_verified(reads: &Reads, path: &Path, deadline: Instant) -> Result<(), HookError> {
    let expected = reads
        .check(path, deadline)?
        .ok_or_else(|| HookError::NotStored(path.to_path_buf()))?;
    if Checksum::of_file(path).ok() == Some(expected) {
        return Ok(());
    }
    retrieve_verified(reads, path, expected, deadline)
}

/// Retrieves `path` before `deadline` and checks it against the `expected` checksum. On any
/// failure what zstor wrote is removed (it writes in place, not atomically; the read lane has
/// stopped it and removed it already, unless it could not answer).
fn retrieve_verified(
    reads: &Reads,
    path: &Path,
    expected: Checksum,
    deadline: Instant,
) -> Result<(), HookError> {
    let result = reads.retrieve(path, deadline).and_then(|()| {
        let actual =
            Checksum::of_file(path).map_err(io(format!("cannot read back {}", path.display())))?;
        if actual == expected {
            Ok(())
        } else {
            Err(HookError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected,
                actual,
            })
        }
    });
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Runs the hook for `event` with `args` (after the instance id) and returns the exit code.
/// Writes one journal entry per event.
pub fn run(event_name: &str, instance: &str, args: &[OsString]) -> i32 {
    let started = Instant::now();
    // An event that cannot be parsed, or a config that cannot be loaded, fails before any work.
    let refuse = |message: String, code: i32| {
        tracing::error!(
            message_id = message_id::HOOK_FAILED,
            qsfs_event = event_name,
            qsfs_instance = instance,
            "{message}"
        );
        code
    };
    let event = match Event::parse(event_name, args) {
        Ok(event) => event,
        Err(e) => return refuse(e.to_string(), e.exit_code()),
    };
    let config = match HookConfig::load(&appliance::path_from_env()) {
        Ok(config) => config,
        Err(e) => return refuse(e.to_string(), e.exit_code()),
    };
    // While zdb waits, `qsfs-health` knows why it does not answer.
    let busy = event
        .is_blocking()
        .then(|| zdb_busy::Mark::begin(&config.paths.state_dir, event_name));
    let result = Hook::new(config).handle(&event);
    drop(busy);
    let duration_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(handled) => {
            let files = join_paths(&handled.files, " ");
            let jobs = handled.jobs.join(" ");
            let namespace = handled.namespace.as_deref().unwrap_or_default();
            let note = handled.note.map(|n| format!(" ({n})")).unwrap_or_default();
            tracing::info!(
                qsfs_event = event_name,
                qsfs_instance = instance,
                qsfs_namespace = namespace,
                qsfs_files = files,
                qsfs_job = jobs,
                qsfs_duration_ms = duration_ms,
                "{event_name} {namespace} handled in {duration_ms} ms{note}"
            );
            crate::exit::OK
        }
        Err(e) => {
            tracing::error!(
                message_id = message_id::HOOK_FAILED,
                qsfs_event = event_name,
                qsfs_instance = instance,
                qsfs_duration_ms = duration_ms,
                qsfs_blocking = event.is_blocking(),
                "{event_name} failed: {e}"
            );
            e.exit_code()
        }
    }
}

fn join_paths(paths: &[PathBuf], separator: &str) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(separator)
}

/// Where `namespaces-init` lists the namespaces zdb loads with a last index file without
/// entries (`<namespace> <N>` lines), for `prepare-zdbfs` to jump.
fn empty_at_load_path(paths: &appliance::Paths) -> PathBuf {
    paths.state_dir.join("jumps").join("empty-at-load")
}

/// zdbfs-meta and zdbfs-data when their last index file `i<N>`, `N > 0`, holds no entry (only
/// our jumps leave one; zdbfs-temp only jumps on size): zdb 2.0.7 does
/// not map the ids of such a file when it loads it, so what is written to it could not be
/// found (seen on the real zdb after a jump and a restart) until a jump maps the next one
/// ([`layout::index_has_entries`]).
fn empty_last_index_files(paths: &appliance::Paths) -> Vec<(&'static str, u32)> {
    layout::RESTORED_NAMESPACES
        .into_iter()
        .filter_map(|namespace| {
            let dir = paths.index_dir.join(namespace);
            let last = highest_file_number(&dir, INDEX_PREFIX).filter(|&n| n > 0)?;
            (!layout::index_has_entries(&dir, last)).then_some((namespace, last))
        })
        .collect()
}

/// Records, before zdb loads them, which namespaces need a jump right after the start.
fn record_empty_at_load(paths: &appliance::Paths) -> std::io::Result<()> {
    let path = empty_at_load_path(paths);
    let empty = empty_last_index_files(paths);
    if empty.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let text: String = empty.iter().map(|(ns, n)| format!("{ns} {n}\n")).collect();
    std::fs::create_dir_all(fsutil::parent(&path))?;
    fsutil::write_atomic(&path, text.as_bytes(), 0o644, Durability::Durable)
}

/// Jumps each namespace `namespaces-init` found loaded with an empty last index file, while it
/// is still that file (a jump since mapped the next one already), under the jump lock. zdbfs
/// has not started yet: nothing was written to it.
fn jump_empty_at_load(
    client: &mut crate::zdb::Client,
    paths: &appliance::Paths,
) -> Result<(), HookError> {
    let path = empty_at_load_path(paths);
    let text = match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other.map_err(io(format!("cannot read {}", path.display())))?,
    };
    let cuts = Cuts::new(&paths.state_dir);
    let _jumps = cuts.lock_jumps().map_err(io(format!(
        "cannot lock the jumps in {}",
        cuts.dir().display()
    )))?;
    for (namespace, n) in text.lines().filter_map(|line| {
        let (ns, n) = line.split_once(' ')?;
        Some((ns, n.parse::<u32>().ok()?))
    }) {
        let dir = paths.index_dir.join(namespace);
        if highest_file_number(&dir, INDEX_PREFIX) != Some(n) || layout::index_has_entries(&dir, n)
        {
            continue;
        }
        let zdb = |e: crate::zdb::ZdbError| HookError::Zdb(format!("NSJUMP {namespace}: {e}"));
        client.select(namespace, None).map_err(zdb)?;
        client.command(&[b"NSJUMP"]).map_err(zdb)?;
        tracing::info!(
            "{namespace} jumped past its empty last index file i{n} (zdb 2.0.7 would not find \
             what is written to it)"
        );
    }
    std::fs::remove_file(&path).map_err(io(format!("cannot remove {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_events() {
        assert_eq!(
            Event::parse("jump-index", &args(&["/i/ns/i2", "/i/ns/i3", "0 1 "])).unwrap(),
            Event::JumpIndex {
                old: "/i/ns/i2".into(),
                new: "/i/ns/i3".into(),
                dirty: vec![0, 1]
            }
        );
        assert_eq!(
            Event::parse("jump-index", &args(&["/i/ns/i2", "/i/ns/i3", ""])).unwrap(),
            Event::JumpIndex {
                old: "/i/ns/i2".into(),
                new: "/i/ns/i3".into(),
                dirty: vec![]
            }
        );
        assert_eq!(
            Event::parse("frobnicate", &args(&["x"])).unwrap(),
            Event::Unknown("frobnicate".into())
        );
        assert!(Event::parse("jump-index", &args(&["/i/ns/i2"])).is_err());
        assert!(Event::parse("jump-index", &args(&["/a", "/b", "1 x "])).is_err());
        assert!(Event::parse("missing-data", &args(&[])).is_err());
        assert!(Event::parse("namespace-closing", &args(&["ns", "/i", "/d", "2 "])).is_ok());
        assert!(Event::parse("ready", &[]).unwrap().is_blocking());
        assert!(!Event::parse("jump-data", &args(&["/a", "/b"]))
            .unwrap()
            .is_blocking());
    }

    #[test]
    fn paths_must_be_namespace_files_under_the_roots() {
        let hook = Hook::new(HookConfig::default());
        let index = Path::new("/var/zdbfs/index");
        assert_eq!(
            hook.namespace_of(Path::new("/var/zdbfs/index/zdbfs-meta/i3"), index)
                .unwrap(),
            (
                "zdbfs-meta".to_string(),
                PathBuf::from("/var/zdbfs/index/zdbfs-meta")
            )
        );
        assert!(hook
            .namespace_of(Path::new("/var/zdbfs/index/./zdbfs-meta/i3"), index)
            .is_ok());
        for bad in [
            "/etc/passwd",
            "/var/zdbfs/index/i3",
            "/var/zdbfs/index/ns/sub/i3",
            "/var/zdbfs/index/ns/../../x/i3",
            "relative/ns/i3",
        ] {
            assert!(hook.namespace_of(Path::new(bad), index).is_err(), "{bad}");
        }
        assert!(hook.namespace_dir("../etc").is_err());
    }
}
