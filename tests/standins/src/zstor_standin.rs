//! A contract stand-in for upstream `zstor_v2` v0.5.0-rc.1 (0-stor_v2), for tests only: it is
//! built as the binary `zstor-standin` of `qsfs-standins` and never shipped.
//!
//! It behaves like the real binary in everything a caller can observe (command line, config
//! parsing, output, exit codes, the daemon and its socket, pid file and signals; see
//! `/work/shared/reference/upstream-contracts.md` §3.2, §4.2 and §8.1), but keeps objects in a
//! local directory instead of compressing, encrypting and erasure-coding them over 0-db
//! backends. Only `test` and `status` talk to the backends named in the config.
//! `tests/integration/zstor_standin.rs` runs the same contract on it and on the real zstor.
//!
//! # What it implements
//!
//! * Global flags `-c/--config` (default `zstor_config.toml`), `--log_file` (default
//!   `zstor.log`), `-d/--debug`. The log file is opened for append first thing (its parent
//!   directories are created, as log4rs does); if that fails the process aborts (SIGABRT), as
//!   upstream's `.unwrap()` under `panic = "abort"` does. Every command appends a line to it,
//!   stamped `YYYY-MM-DD HH:MM:SS +00:00: LEVEL message` as log4rs does.
//! * The config is parsed strictly with `qsfs::zstor::config::ZstorConfig::load`; an error is
//!   logged as `error during configuration: <message>` and printed as upstream's debug form of
//!   its TOML error, which holds the config's whole text (with its secrets), and exits 1. Any error of a command run in-process prints
//!   `Error: ` and upstream's `Debug` form of its error
//!   (`ZstorError { kind: LocalIo("no metadata found for file"), internal: Other(Kind(NotFound)) }`)
//!   and exits 1; the daemon answers with the `Display` form instead
//!   (`error during accessing local storage for no metadata found for file: entity not found`).
//!   Command-line usage errors exit 1 (upstream's structopt/clap 2 behaviour).
//! * `store -f PATH [-k DIR] [-e] [-s] [-d] [-n]`: a directory stores each regular file in it
//!   (not recursively, symlinks skipped, one store per file, the first failure ends the
//!   command). `-e` and `-s` are accepted and ignored, as upstream. `-n/--notblocking` is
//!   accepted but the store is performed blocking (upstream's daemon would answer at once and
//!   retry a failed store forever; the stand-in always answers with the real result). A file
//!   whose stored checksum equals its own is not stored again. `-d` removes the file after a
//!   successful (or skipped) store, best effort. As upstream, the file is read twice: once for
//!   the checksum (kept open meanwhile), then again for the data, so a file that changes in
//!   between is stored with the first content's checksum and the second content's data.
//! * `retrieve -f PATH`: creates the parent directories and writes the file in place with
//!   truncation (not atomically, as upstream). An unknown file fails with `no metadata found
//!   for file`.
//! * `check -f PATH`: prints the 32 hex digit blake2b-128 checksum and a newline when the file
//!   is stored, nothing when it is not; exits 0 in both cases.
//! * `rebuild (-f PATH | -k KEY)`: the object must exist; it is rewritten. `KEY` is upstream's
//!   raw metadata key `/{prefix}/meta/{hex}`; a bare hex key names nothing.
//! * `test`: connects to every data backend (PING, `SELECT` with the namespace's password:
//!   upstream sends it in clear, the stand-in uses the product's client, which answers zdb's
//!   challenge instead; then `NSINFO`) and fails
//!   unless all answer and are in sequential mode. `status`: two tables (meta backends, then
//!   data backends) from `NSINFO`, back to back, in upstream's prettytable layout (a `+===+`
//!   rule under the header, a rule after every row, numbers right-aligned); free space is the
//!   namespace limit (`u64::MAX` without one) and the usage percentage is cast to a u8, as
//!   upstream. Both always run in-process.
//! * `monitor`: the daemon. It needs `socket` in the config (else prints
//!   `Missing "socket" argument in config` and exits 1), refuses to start when the pid file
//!   (`pid_file`, default `/var/run/zstor.pid`) names a live process with our own
//!   `/proc/<pid>/comm` (`another daemon instance is running`), writes the pid file, removes a
//!   stale socket and binds. Requests are read concurrently and run one at a time by a single
//!   worker, in arrival order; a client that goes away cancels nothing (its command still runs,
//!   a retrieve still writes its file). A connection that sends no request is logged as
//!   `Error while handeling client: …` (upstream's spelling) and closed without an answer.
//!   SIGINT and SIGTERM finish the running and queued requests, remove the socket and the pid
//!   file and exit 0. SIGUSR1 reloads the config (and the store directory). The log lines of
//!   these events are upstream's.
//! * With `socket` set, `store`, `retrieve`, `check` and `rebuild` go through the daemon, with
//!   the paths exactly as given (the daemon resolves them in its own working directory). If
//!   nothing listens: `Error: ZstorError { kind: LocalIo("Could not connect to daemon socket"),
//!   … }`, exit 1, no fallback. A daemon error prints `Zstor error: <msg>` and exits 1. The
//!   wire format is upstream's ([`qsfs::zstor::socket`]): a u16 big-endian length and bincode 1
//!   of `ZstorCommand` (`Store`, `Retrieve`, `Rebuild`, `Check { path }`), answered the same way
//!   with `Success`, `Err(msg)` or `Checksum([u8; 16])`. The product sends `Check` (the health
//!   probe) and `Rebuild` with metadata (moving shards, real zstor only: the stand-in answers
//!   that with an error); `Store` and `Retrieve` pass only between the stand-in's own CLI and
//!   daemon.
//!
//! # Keys
//!
//! The key of a file is the hex blake2b-128 of a path, minus `root` when that is set (a path
//! outside `root` is refused: `… not in the file tree rooted at …` by store, `could not strip
//! path prefix` by the others). As upstream, the path differs by command:
//!
//! * `store` keys by `canonicalize(file)` (in its working directory, symlinks resolved), or
//!   with `--key-path DIR` by `canonicalize(DIR/name)`; when nothing is at `DIR/name` an empty
//!   dummy file is created there and removed after (`DIR` must exist: `could not create temp
//!   file`).
//! * `check`, `retrieve` and `rebuild` key by a lexical clean of the path as given (`.` dropped,
//!   `..` folded, no symlink resolved, a relative path left relative): through a symlink, or
//!   relative, they do not find what store stored.
//!
//! # Where it stores
//!
//! The store directory is, in this order: the environment variable `ZSTOR_STANDIN_STORE` (if
//! not empty); else the path written in a file `zstor-standin-store` next to the config file
//! (relative paths are relative to the config's directory); else `zstor-standin-store` in the
//! parent of the config's directory (`/var/zdbfs/etc/zstor-standin-store` for the credential
//! store's `/var/zdbfs/etc/credstore/zstor.toml`; the units, which read the credential from
//! `$CREDENTIALS_DIRECTORY`, get `ZSTOR_STANDIN_STORE` in the system tests).
//! Objects are `<store>/objects/<key>.data` and `<key>.meta` (JSON: path, checksum, checksum of
//! the data written, size), each
//! written atomically (temporary file, fsync, rename). Every command performed (by the
//! in-process CLI or by the daemon, not by a CLI that only forwards to the daemon) appends a
//! line `command<TAB>path<TAB>result` to `<store>/calls.log`, where path is the resolved key
//! path when known (else the path as given) and result is `ok`, `skipped` (same checksum),
//! `stored` / `missing` (check), or `failed: <message>`. An injected hang adds a line with the
//! result `hang` (and the path as given) before it sleeps; the store's own line follows if it
//! ever finishes.
//!
//! # Failure injection
//!
//! Each store (each file of a directory store) reads `<store>/inject.json` if it exists, in the
//! process that performs it, under an exclusive `flock` on `<store>/inject.lock`:
//!
//! ```json
//! {"fail_store_percent": 30, "hang_store_percent": 5, "hang_secs": 3600,
//!  "fail_next_stores": 2, "store_delay_ms": 100, "fail_retrieve": false, "ms_per_mib": 0}
//! ```
//!
//! All keys are optional. A hang (chosen with `hang_store_percent`) sleeps `hang_secs`
//! (default 3600) before doing anything else; then `store_delay_ms` is slept; then the store
//! fails when `fail_next_stores` is above zero (it is decremented in the file) or with
//! probability `fail_store_percent`. A failed store stores nothing and reports
//! `injected failure` (`Error: injected failure`, exit 1, in-process). `fail_retrieve` makes
//! every retrieve fail the same way. `ms_per_mib` (default 0) makes a store (between its two
//! reads, the file held open) and a retrieve (before it writes) take that long per MiB of the
//! file, the stand-in's model of encoding time: with it the daemon's one-at-a-time queue is
//! observable. The random choices use a small xorshift generator seeded from the clock and
//! the pid.

use clap::{Parser, Subcommand};
use qsfs::zdb::{Client, Endpoint, Mode};
use qsfs::zstor::config::{Backend, ZstorConfig};
use qsfs::zstor::Checksum;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::exit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Environment variable naming the store directory.
const STORE_ENV: &str = "ZSTOR_STANDIN_STORE";
/// File next to the config whose content names the store directory.
const STORE_FILE: &str = "zstor-standin-store";
/// Upstream's default pid file.
const DEFAULT_PID_FILE: &str = "/var/run/zstor.pid";
/// Timeout of every backend connection and command, as upstream's redis client.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(
    name = "zstor_v2",
    about = "zstor data encoder (contract stand-in for tests)"
)]
struct Opts {
    /// Path to the config file to use for this invocation.
    #[arg(short = 'c', long = "config", default_value = "zstor_config.toml")]
    config: PathBuf,
    /// Path to the log file to use.
    #[arg(long = "log_file", default_value = "zstor.log")]
    log_file: PathBuf,
    /// Enable debug logging.
    #[arg(short = 'd', long = "debug")]
    debug: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Encode data and store it in the 0-db backends.
    Store {
        /// Path to the file or directory to store.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Upload the file as if it was located in the directory at the given path.
        #[arg(short = 'k', long = "key-path")]
        key_path: Option<PathBuf>,
        /// Exits if a file can't be uploaded in directory upload mode (ignored, as upstream).
        #[arg(short = 'e', long = "error-on-failure")]
        error_on_failure: bool,
        /// Save data about upload failures in the metadata store (ignored, as upstream).
        #[arg(short = 's', long = "save-failure")]
        save_failure: bool,
        /// Deletes files after a successful upload.
        #[arg(short = 'd', long = "delete")]
        delete: bool,
        /// Do not wait for the upload through the daemon (performed blocking by the stand-in).
        #[arg(short = 'n', long = "notblocking")]
        notblocking: bool,
    },
    /// Rebuild already stored data.
    Rebuild {
        /// Path to the file to rebuild.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Raw key to reconstruct.
        #[arg(short = 'k', long = "key")]
        key: Option<String>,
    },
    /// Load encoded data.
    Retrieve {
        /// Path of the file to retrieve.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Check if a file exists in the backend.
    Check {
        /// Path of the file to check.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Run zstor in monitor daemon mode.
    Monitor,
    /// Test the configuration and backends.
    Test,
    /// Get statistics about the status of the backends.
    Status,
}

/// A command as the CLI hands it to whoever performs it (itself or the daemon).
#[derive(Serialize, Deserialize, Debug, Clone)]
enum Request {
    Store {
        file: PathBuf,
        key_path: Option<PathBuf>,
        save_failure: bool,
        delete: bool,
        blocking: bool,
    },
    Retrieve {
        file: PathBuf,
    },
    Rebuild {
        file: Option<PathBuf>,
        key: Option<String>,
        /// Upstream's metadata to rebuild from: only whether it was given is read (bincode
        /// ignores what follows).
        metadata: Option<()>,
    },
    Check {
        path: PathBuf,
    },
}

impl Request {
    fn name(&self) -> &'static str {
        match self {
            Request::Store { .. } => "store",
            Request::Retrieve { .. } => "retrieve",
            Request::Rebuild { .. } => "rebuild",
            Request::Check { .. } => "check",
        }
    }

    fn target(&self) -> String {
        match self {
            Request::Store { file, .. }
            | Request::Retrieve { file }
            | Request::Check { path: file } => file.display().to_string(),
            Request::Rebuild {
                file: Some(file), ..
            } => file.display().to_string(),
            Request::Rebuild { key: Some(key), .. } => key.clone(),
            Request::Rebuild { .. } => String::new(),
        }
    }
}

/// The daemon's answer.
#[derive(Serialize, Deserialize, Debug)]
enum Response {
    Success,
    Err(String),
    Checksum([u8; 16]),
}

// ---------------------------------------------------------------------------------------------
// Logging

struct Log {
    file: Mutex<File>,
    debug: bool,
}

static LOG: OnceLock<Log> = OnceLock::new();

/// Opens the log file for append, or dies like upstream's `.unwrap()` with `panic = "abort"`.
fn open_log(path: &Path, debug: bool) {
    let opened = (|| {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        OpenOptions::new().create(true).append(true).open(path)
    })();
    match opened {
        Ok(file) => {
            let _ = LOG.set(Log {
                file: Mutex::new(file),
                debug,
            });
        }
        Err(e) => {
            eprintln!(
                "thread 'main' panicked at src/main.rs: called `Result::unwrap()` on an `Err` value: {e} ({})",
                path.display()
            );
            std::process::abort();
        }
    }
}

fn log(level: &str, message: &str) {
    if let Some(log) = LOG.get() {
        if level == "DEBUG" && !log.debug {
            return;
        }
        let line = format!("{}: {level} {message}\n", timestamp());
        if let Ok(mut file) = log.file.lock() {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

fn info(message: &str) {
    log("INFO", message);
}

fn debug(message: &str) {
    log("DEBUG", message);
}

fn error(message: &str) {
    log("ERROR", message);
}

/// `YYYY-MM-DD HH:MM:SS +00:00`, zstor's log timestamp (log4rs' `{d(%Y-%m-%d %H:%M:%S %:z)}`;
/// the stand-in always writes UTC).
fn timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace('T', " ")
        .replace('Z', " +00:00")
}

// ---------------------------------------------------------------------------------------------
// Entry point

fn main() {
    let opts = match Opts::try_parse() {
        Ok(opts) => opts,
        Err(e) => {
            let _ = e.print();
            exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    open_log(&opts.log_file, opts.debug);

    let config = match ZstorConfig::load(&opts.config) {
        Ok(config) => config,
        Err(e) => {
            // As zstor 0.5: the log says what is wrong; stderr carries the debug form of the
            // TOML error, which holds the whole text of the config, secrets and all.
            let raw = std::fs::read_to_string(&opts.config).unwrap_or_default();
            fail(
                "loading the config",
                ZErr {
                    display: format!("error during configuration: {e}"),
                    debug: format!(
                        "ZstorError {{ kind: Config, internal: Other(Error {{ inner: Error {{ inner: TomlError {{ message: {:?}, raw: Some({raw:?}) }} }} }}) }}",
                        e.to_string()
                    ),
                },
            )
        }
    };
    let store = store_dir(&opts.config);
    debug(&format!(
        "config {} loaded, store directory {}",
        opts.config.display(),
        store.display()
    ));
    let mut ctx = Ctx {
        config_path: opts.config.clone(),
        config,
        store,
    };

    let requests = match opts.cmd {
        Cmd::Test => {
            let result = test_backends(&ctx.config);
            finish_local("test", result.map(|()| None));
        }
        Cmd::Status => {
            status(&ctx.config);
            info("status: ok");
            exit(0);
        }
        Cmd::Monitor => monitor(ctx),
        Cmd::Store {
            file,
            key_path,
            error_on_failure: _,
            save_failure,
            delete,
            notblocking,
        } => {
            let store = |file: PathBuf| Request::Store {
                file,
                key_path: key_path.clone(),
                save_failure,
                delete,
                blocking: !notblocking,
            };
            if file.is_dir() {
                match regular_files(&file) {
                    Ok(files) => files.into_iter().map(store).collect(),
                    Err(e) => fail(
                        "store",
                        io_error(
                            &format!("Could not read dir entries in {}", file.display()),
                            &e,
                        ),
                    ),
                }
            } else {
                vec![store(file)]
            }
        }
        Cmd::Retrieve { file } => vec![Request::Retrieve { file }],
        Cmd::Rebuild { file, key } => vec![Request::Rebuild {
            file,
            key,
            metadata: None,
        }],
        Cmd::Check { file } => vec![Request::Check { path: file }],
    };

    for request in requests {
        match ctx.config.socket.clone() {
            Some(socket) => via_daemon(&socket, &request),
            None => {
                let result = perform(&mut ctx, &request);
                if let Err(message) = &result {
                    fail(&format!("{} {}", request.name(), request.target()), message);
                }
                info(&format!("{} {}: ok", request.name(), request.target()));
                if let Ok(Some(checksum)) = result {
                    println!("{checksum}");
                }
            }
        }
    }
    exit(0);
}

/// Logs the error, prints `Error: <its Debug form>` and exits 1, as upstream's `main`
/// returning an error.
fn fail(what: &str, e: impl Into<ZErr>) -> ! {
    let e = e.into();
    debug(&format!("{what} failed"));
    error(&e.display);
    eprintln!("Error: {}", e.debug);
    exit(1);
}

fn finish_local(command: &str, result: Result<Option<Checksum>, String>) -> ! {
    match result {
        Ok(checksum) => {
            info(&format!("{command}: ok"));
            if let Some(checksum) = checksum {
                println!("{checksum}");
            }
            exit(0);
        }
        Err(message) => fail(command, message),
    }
}

/// The store directory: the environment, then the file next to the config, then
/// `zstor-standin-store` beside the config's directory.
fn store_dir(config: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os(STORE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let config_dir = match config.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Ok(text) = fs::read_to_string(config_dir.join(STORE_FILE)) {
        let text = text.trim();
        if !text.is_empty() {
            return config_dir.join(text);
        }
    }
    config_dir.join("..").join(STORE_FILE)
}

/// An error the way upstream's `ZstorError` shows it: the daemon answers with its `Display`
/// (`Zstor error: error during accessing local storage for …: entity not found`), the in-process
/// CLI prints its `Debug` (`Error: ZstorError { kind: LocalIo("…"), internal: Other(Kind(NotFound)) }`).
#[derive(Clone, Debug)]
struct ZErr {
    display: String,
    debug: String,
}

impl From<String> for ZErr {
    /// A stand-in-only message (failure injection, the stand-in's own problems): shown as is.
    fn from(message: String) -> ZErr {
        ZErr {
            display: message.clone(),
            debug: message,
        }
    }
}

impl From<&ZErr> for ZErr {
    fn from(e: &ZErr) -> ZErr {
        e.clone()
    }
}

impl From<&str> for ZErr {
    fn from(message: &str) -> ZErr {
        message.to_string().into()
    }
}

/// Upstream's local I/O error (`ZstorErrorKind::LocalIo(context)` over an `io::Error`).
fn io_error(context: &str, e: &io::Error) -> ZErr {
    ZErr {
        display: format!("error during accessing local storage for {context}: {e}"),
        debug: format!("ZstorError {{ kind: LocalIo({context:?}), internal: Other({e:?}) }}"),
    }
}

fn io_kind(context: &str, kind: io::ErrorKind) -> ZErr {
    io_error(context, &io::Error::from(kind))
}

fn not_found(context: &str) -> ZErr {
    io_kind(context, io::ErrorKind::NotFound)
}

/// Upstream's error for a lookup key outside `root` (check, retrieve, rebuild).
fn outside_root() -> ZErr {
    let message = "could not strip path prefix: prefix not found";
    ZErr {
        display: format!("error during metadata: error in the metastore: key: {message}"),
        debug: format!(
            "ZstorError {{ kind: Metadata, internal: Other(MetaStoreError {{ error: ZdbMetaStoreError {{ kind: Key, internal: Other({message:?}) }} }}) }}"
        ),
    }
}

/// The regular files directly in `dir`, by name.
fn regular_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        } else {
            debug(&format!(
                "Skipping entry {} for upload as it is not a file",
                entry.path().display()
            ));
        }
    }
    files.sort();
    Ok(files)
}

// ---------------------------------------------------------------------------------------------
// Performing commands (in-process or in the daemon)

struct Ctx {
    config_path: PathBuf,
    config: ZstorConfig,
    store: PathBuf,
}

impl Ctx {
    fn objects(&self) -> PathBuf {
        self.store.join("objects")
    }

    fn object(&self, key: &str, ext: &str) -> PathBuf {
        self.objects().join(format!("{key}.{ext}"))
    }

    /// The key of a path: hex blake2b-128 of the path minus `root`. `storing` picks upstream's
    /// error for a path outside `root` (store's, or the metastore's of the lookups).
    fn key(&self, path: &Path, storing: bool) -> Result<String, ZErr> {
        let relative = match &self.config.root {
            Some(root) => path.strip_prefix(root).map_err(|_| {
                if storing {
                    io_kind(
                        &format!(
                            "attempting to store file which is not in the file tree rooted at {}",
                            root.display()
                        ),
                        io::ErrorKind::InvalidData,
                    )
                } else {
                    outside_root()
                }
            })?,
            None => path,
        };
        Ok(Checksum::of_bytes(relative.as_os_str().as_bytes()).to_string())
    }

    /// Upstream's raw metadata key of a hex key: `/{prefix}/meta/{hex}`.
    fn raw_key(&self, key: &str) -> String {
        format!("/{}/meta/{key}", self.config.meta.config.prefix)
    }

    fn load_meta(&self, key: &str) -> Result<Option<ObjectMeta>, ZErr> {
        match fs::read(self.object(key, "meta")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                format!("error during metadata: corrupt metadata for key {key}: {e}").into()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("could not load metadata", &e)),
        }
    }

    fn calls_log(&self, command: &str, path: &str, result: &str) {
        let line = format!("{command}\t{path}\t{}\n", result.replace(['\n', '\t'], " "));
        let _ = fs::create_dir_all(&self.store);
        if let Ok(mut file) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.store.join("calls.log"))
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// `<key>.meta`
#[derive(Serialize, Deserialize, Debug)]
struct ObjectMeta {
    path: PathBuf,
    /// The checksum upstream keeps: of the file's content at its first read.
    checksum: Checksum,
    /// The checksum of the data actually written (the second read, which may differ): the
    /// stand-in's own shard check. Absent in objects written before it existed.
    #[serde(default)]
    data_checksum: Option<Checksum>,
    size: u64,
    stored_at: u64,
}

/// Performs one request; `Ok(Some(_))` is a checksum to print.
fn perform(ctx: &mut Ctx, request: &Request) -> Result<Option<Checksum>, ZErr> {
    let mut resolved: Option<PathBuf> = None;
    let result = match request {
        Request::Store {
            file,
            key_path,
            delete,
            ..
        } => store(ctx, file, key_path.as_deref(), *delete, &mut resolved)
            .map(|skipped| (None, skipped)),
        Request::Retrieve { file } => retrieve(ctx, file, &mut resolved).map(|()| (None, false)),
        Request::Rebuild {
            metadata: Some(()), ..
        } => Err(ZErr::from(
            "the stand-in does not rebuild from given metadata".to_string(),
        )),
        Request::Rebuild { file, key, .. } => {
            rebuild(ctx, file.as_deref(), key.as_deref(), &mut resolved).map(|()| (None, false))
        }
        Request::Check { path } => check(ctx, path, &mut resolved).map(|sum| (sum, false)),
    };
    let path = resolved.map_or_else(|| request.target(), |p| p.display().to_string());
    let outcome = match (&result, request) {
        (Err(e), _) => format!("failed: {}", e.display),
        (Ok((Some(_), _)), _) => "stored".to_string(),
        (Ok((None, _)), Request::Check { .. }) => "missing".to_string(),
        (Ok((None, true)), _) => "skipped".to_string(),
        (Ok((None, false)), _) => "ok".to_string(),
    };
    ctx.calls_log(request.name(), &path, &outcome);
    result.map(|(sum, _)| sum)
}

/// Store's key path: `canonicalize(file)`, or with `--key-path DIR` `canonicalize(DIR/name)`,
/// creating an empty dummy file there first (and removing it after) when nothing is there.
fn store_key_path(file: &Path, key_dir: Option<&Path>) -> Result<PathBuf, ZErr> {
    let Some(dir) = key_dir else {
        return fs::canonicalize(file).map_err(|e| io_error("could not canonicalize path", &e));
    };
    let name = file
        .file_name()
        .ok_or_else(|| not_found("Could not get file name of data file"))?;
    let target = dir.join(name);
    if fs::symlink_metadata(&target).is_ok() {
        return fs::canonicalize(&target).map_err(|e| io_error("could not canonicalize path", &e));
    }
    File::create(&target).map_err(|e| io_error("could not create temp file", &e))?;
    let canonical =
        fs::canonicalize(&target).map_err(|e| io_error("could not canonicalize path", &e));
    if let Err(e) = fs::remove_file(&target) {
        error(&format!(
            "could not remove temp file {}: {e}",
            target.display()
        ));
    }
    canonical
}

/// The stand-in's stand-in for encoding time: `ms_per_mib` of `inject.json` per MiB of `size`.
fn encode_delay(ctx: &Ctx, size: u64) -> Result<(), ZErr> {
    let per_mib = Injection::read(ctx)?.ms_per_mib;
    if per_mib > 0 {
        let micros = u128::from(size) * u128::from(per_mib) * 1000 / (1 << 20);
        std::thread::sleep(Duration::from_micros(
            u64::try_from(micros).unwrap_or(u64::MAX),
        ));
    }
    Ok(())
}

/// Stores one file; `Ok(true)` when it was already stored with the same checksum.
///
/// Like upstream's pipeline it reads the file twice: once for the checksum (kept in the
/// metadata, compared to skip an unchanged file), then again for the data. A file that changes
/// in between is stored with the first content's checksum and the second content's data.
fn store(
    ctx: &Ctx,
    file: &Path,
    key_dir: Option<&Path>,
    delete: bool,
    resolved: &mut Option<PathBuf>,
) -> Result<bool, ZErr> {
    let injected = Injection::take(ctx, file)?;
    if injected.fail {
        return Err("injected failure".into());
    }

    let metadata = fs::metadata(file).map_err(|e| io_error("Could not load file metadata", &e))?;
    if !metadata.is_file() {
        return Err(io_kind(
            "only files can be stored",
            io::ErrorKind::InvalidData,
        ));
    }
    let key_path = store_key_path(file, key_dir)?;
    *resolved = Some(key_path.clone());
    let key = ctx.key(&key_path, true)?;

    // First read: the checksum. The file stays open while the stand-in "encodes" (its delay),
    // as upstream holds it while hashing, so a test can see the store in flight.
    let mut first = File::open(file).map_err(|e| io_error("could not open file to encode", &e))?;
    let checksum = Checksum::of_reader(&mut first)
        .map_err(|e| io_error("could not read file to encode", &e))?;
    let skipped = matches!(ctx.load_meta(&key)?, Some(old) if old.checksum == checksum);
    if skipped {
        info(&format!(
            "file {} ({checksum}) already stored, skipping upload",
            key_path.display()
        ));
    } else {
        info(&format!(
            "stand-in: checksum {checksum} of {} taken, encoding",
            file.display()
        ));
        encode_delay(ctx, metadata.len())?;
        drop(first);
        fs::create_dir_all(ctx.objects())
            .map_err(|e| io_error("could not create the store directory", &e))?;
        // Second read: the data.
        let mut source =
            File::open(file).map_err(|e| io_error("could not open file to encode", &e))?;
        let data = ctx.object(&key, "data");
        let size = write_atomic(&data, |out| io::copy(&mut source, out))
            .map_err(|e| io_error("could not write the object", &e))?;
        let data_checksum =
            Checksum::of_file(&data).map_err(|e| io_error("could not read the object", &e))?;
        save_meta(ctx, &key, &key_path, checksum, data_checksum, size)?;
        info(&format!(
            "Stored file {} as {} ({size} bytes, {checksum})",
            file.display(),
            key_path.display()
        ));
    }
    if delete {
        if let Err(e) = fs::remove_file(file) {
            error(&format!("Failed to delete file {}: {e}", file.display()));
        }
    }
    Ok(skipped)
}

fn save_meta(
    ctx: &Ctx,
    key: &str,
    path: &Path,
    checksum: Checksum,
    data_checksum: Checksum,
    size: u64,
) -> Result<(), ZErr> {
    let stored_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let meta = ObjectMeta {
        path: path.to_path_buf(),
        checksum,
        data_checksum: Some(data_checksum),
        size,
        stored_at,
    };
    let json =
        serde_json::to_vec_pretty(&meta).map_err(|e| format!("error during metadata: {e}"))?;
    write_atomic(&ctx.object(key, "meta"), |out| {
        out.write_all(&json).map(|()| 0)
    })
    .map(|_| ())
    .map_err(|e| io_error("could not write the metadata", &e))
}

/// Loads an object's data and checks it against its metadata.
fn load_object(ctx: &Ctx, key: &str) -> Result<(ObjectMeta, Vec<u8>), ZErr> {
    let meta = ctx
        .load_meta(key)?
        .ok_or_else(|| not_found("no metadata found for file"))?;
    let data = fs::read(ctx.object(key, "data")).map_err(|e| io_error("shard not found", &e))?;
    if Checksum::of_bytes(&data) != meta.data_checksum.unwrap_or(meta.checksum) {
        return Err("error during encoding: shard checksum verification failed".into());
    }
    Ok((meta, data))
}

fn retrieve(ctx: &Ctx, file: &Path, resolved: &mut Option<PathBuf>) -> Result<(), ZErr> {
    let path = qsfs::zstor::metadata::lexical_clean(file);
    *resolved = Some(path.clone());
    let key = ctx.key(&path, false)?;
    if ctx.load_meta(&key)?.is_none() {
        return Err(not_found("no metadata found for file"));
    }
    if Injection::read(ctx)?.fail_retrieve {
        return Err("injected failure".into());
    }
    let (_, data) = load_object(ctx, &key)?;
    encode_delay(ctx, data.len() as u64)?;
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(|e| io_error("could not create parent directories", &e))?;
    }
    // In place and truncating, like upstream's `File::create`: not atomic.
    let mut out = File::create(file).map_err(|e| io_error("could not create output file", &e))?;
    out.write_all(&data)
        .map_err(|e| io_error("could not write output file", &e))?;
    info(&format!(
        "Recovered file {} ({} bytes)",
        file.display(),
        data.len()
    ));
    Ok(())
}

fn check(ctx: &Ctx, file: &Path, resolved: &mut Option<PathBuf>) -> Result<Option<Checksum>, ZErr> {
    let path = qsfs::zstor::metadata::lexical_clean(file);
    *resolved = Some(path.clone());
    Ok(ctx
        .load_meta(&ctx.key(&path, false)?)?
        .map(|meta| meta.checksum))
}

fn rebuild(
    ctx: &Ctx,
    file: Option<&Path>,
    key: Option<&str>,
    resolved: &mut Option<PathBuf>,
) -> Result<(), ZErr> {
    let key = match (file, key) {
        (None, None) => {
            return Err(io_kind(
                "Either `file` or `key` argument must be set",
                io::ErrorKind::InvalidInput,
            ))
        }
        (Some(_), Some(_)) => {
            return Err(io_kind(
                "Only one of `file` or `key` argument must be set",
                io::ErrorKind::InvalidInput,
            ))
        }
        (Some(file), None) => {
            let path = qsfs::zstor::metadata::lexical_clean(file);
            *resolved = Some(path.clone());
            ctx.key(&path, false)?
        }
        // A raw metadata key, `/{prefix}/meta/{hex}`, as upstream: a bare hex key names no
        // metadata.
        (None, Some(raw)) => match raw.rsplit('/').next() {
            Some(hex) if hex.parse::<Checksum>().is_ok() && ctx.raw_key(hex) == raw => {
                hex.to_string()
            }
            _ => return Err(not_found("no metadata found for file")),
        },
    };
    let (meta, data) = load_object(ctx, &key)?;
    let size = write_atomic(&ctx.object(&key, "data"), |out| {
        out.write_all(&data).map(|()| data.len() as u64)
    })
    .map_err(|e| io_error("could not write the object", &e))?;
    let data_checksum = meta.data_checksum.unwrap_or(meta.checksum);
    save_meta(ctx, &key, &meta.path, meta.checksum, data_checksum, size)?;
    info(&format!(
        "Rebuild file {} ({size} bytes)",
        meta.path.display()
    ));
    Ok(())
}

/// Writes `path` through a temporary file in the same directory: write, fsync, rename, fsync
/// the directory. Returns what `write` returned.
fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> io::Result<u64>) -> io::Result<u64> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut name: OsString = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(
        ".tmp.{}.{:016x}",
        std::process::id(),
        next_random()
    ));
    let tmp = dir.join(name);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let written = write(&mut file)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        Ok(written)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Failure injection

/// `<store>/inject.json`
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct InjectFile {
    fail_store_percent: u64,
    hang_store_percent: u64,
    hang_secs: Option<u64>,
    fail_next_stores: u64,
    store_delay_ms: u64,
    fail_retrieve: bool,
    ms_per_mib: u64,
}

/// What this store was dealt.
struct Injection {
    fail: bool,
}

impl Injection {
    fn read(ctx: &Ctx) -> Result<InjectFile, String> {
        match fs::read(ctx.store.join("inject.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("stand-in: invalid inject.json: {e}")),
            Err(_) => Ok(InjectFile::default()),
        }
    }

    /// Reads the injection file under its lock, consumes one of `fail_next_stores`, and then
    /// hangs and delays as asked (outside the lock).
    fn take(ctx: &Ctx, file: &Path) -> Result<Injection, String> {
        let path = ctx.store.join("inject.json");
        if !path.exists() {
            return Ok(Injection { fail: false });
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(ctx.store.join("inject.lock"))
            .map_err(|e| format!("stand-in: cannot open inject.lock: {e}"))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("stand-in: cannot lock inject.lock: {e}"))?;
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(_) => return Ok(Injection { fail: false }),
        };
        let settings: InjectFile = serde_json::from_slice(&text)
            .map_err(|e| format!("stand-in: invalid inject.json: {e}"))?;
        let hang = chance(settings.hang_store_percent);
        let mut fail = false;
        if settings.fail_next_stores > 0 {
            fail = true;
            let mut value: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| format!("stand-in: invalid inject.json: {e}"))?;
            value["fail_next_stores"] = (settings.fail_next_stores - 1).into();
            let json = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
            write_atomic(&path, |out| out.write_all(&json).map(|()| 0))
                .map_err(|e| format!("stand-in: cannot update inject.json: {e}"))?;
        } else if chance(settings.fail_store_percent) {
            fail = true;
        }
        drop(lock);

        if hang {
            let secs = settings.hang_secs.unwrap_or(3600);
            info(&format!(
                "injected hang of {secs} s storing {}",
                file.display()
            ));
            ctx.calls_log("store", &file.display().to_string(), "hang");
            std::thread::sleep(Duration::from_secs(secs));
        }
        if settings.store_delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(settings.store_delay_ms));
        }
        if fail {
            info(&format!("injected failure storing {}", file.display()));
        }
        Ok(Injection { fail })
    }
}

/// True with a probability of `percent` %.
fn chance(percent: u64) -> bool {
    percent >= 100 || (percent > 0 && next_random() % 100 < percent)
}

/// xorshift64*, seeded from the clock and the pid.
fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        x = nanos ^ (u64::from(std::process::id()) << 32) | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    STATE.store(x, Ordering::Relaxed);
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

// ---------------------------------------------------------------------------------------------
// test and status

fn connect(backend: &Backend) -> Result<(Client, String), String> {
    let namespace = backend
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let mut client = Client::connect(&Endpoint::Tcp(backend.address), BACKEND_TIMEOUT)
        .map_err(|e| e.to_string())?;
    client.ping().map_err(|e| e.to_string())?;
    client
        .select(&namespace, backend.password.as_ref())
        .map_err(|e| e.to_string())?;
    Ok((client, namespace))
}

/// Every data backend must answer and be a sequential namespace.
fn test_backends(config: &ZstorConfig) -> Result<(), String> {
    debug("Testing 0-db reachability");
    let backends: Vec<&Backend> = config.data_backends().collect();
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = backends
            .iter()
            .map(|backend| {
                scope.spawn(move || {
                    let (mut client, namespace) = connect(backend)?;
                    let info = client.nsinfo(&namespace).map_err(|e| e.to_string())?;
                    if info.mode != Mode::Sequential {
                        return Err(format!("namespace {namespace} is not in sequential mode"));
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("backend check panicked".into()))
            })
            .collect()
    });
    for (backend, result) in backends.iter().zip(results) {
        result.map_err(|e| format!("error during storage: backend {}: {e}", backend.label()))?;
    }
    Ok(())
}

/// The two tables of `zstor status`, one right after the other (upstream's prettytable).
fn status(config: &ZstorConfig) {
    let meta: Vec<&Backend> = config.meta_backends().iter().collect();
    let data: Vec<&Backend> = config.data_backends().collect();
    print_status_table(&meta);
    print_status_table(&data);
}

fn print_status_table(backends: &[&Backend]) {
    let header = [
        "backend",
        "reachable",
        "objects",
        "used space",
        "free space",
        "usage percentage",
    ];
    let rows: Vec<[String; 6]> = std::thread::scope(|scope| {
        let handles: Vec<_> = backends
            .iter()
            .map(|backend| {
                scope.spawn(move || {
                    let name = format!(
                        "{} - {}",
                        backend.address,
                        backend.namespace.as_deref().unwrap_or("default")
                    );
                    let info = connect(backend)
                        .and_then(|(mut client, ns)| client.nsinfo(&ns).map_err(|e| e.to_string()));
                    match info {
                        Ok(info) => {
                            // Upstream's free_space: the limit, or u64::MAX without one; its
                            // percentage is cast to a u8 (wrapping: 1730 % shows as 194).
                            let free = info.limit().unwrap_or(u64::MAX);
                            let usage = info.limit().map_or(0, |limit| {
                                (u128::from(info.data_size_bytes) * 100 / u128::from(limit)) as u8
                            });
                            [
                                name,
                                "Yes".into(),
                                info.entries.to_string(),
                                info.data_size_bytes.to_string(),
                                free.to_string(),
                                usage.to_string(),
                            ]
                        }
                        Err(e) => {
                            debug(&format!("backend {name} unreachable: {e}"));
                            [
                                name,
                                "No".into(),
                                "-".into(),
                                "-".into(),
                                "-".into(),
                                "-".into(),
                            ]
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let rule = |c: &str| -> String {
        widths
            .iter()
            .map(|w| format!("+{}", c.repeat(w + 2)))
            .collect::<String>()
            + "+"
    };
    // Text columns left-aligned, numbers right-aligned; the header all left.
    let line = |cells: &[&str], header: bool| -> String {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if header || i < 2 {
                    format!("| {c:<w$} ")
                } else {
                    format!("| {c:>w$} ")
                }
            })
            .collect::<String>()
            + "|"
    };
    println!("{}", rule("-"));
    println!("{}", line(&header, true));
    println!("{}", rule("="));
    for row in &rows {
        println!(
            "{}",
            line(&row.iter().map(String::as_str).collect::<Vec<_>>(), false)
        );
        println!("{}", rule("-"));
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon and its client

fn write_frame(stream: &mut UnixStream, value: &impl Serialize) -> io::Result<()> {
    let body = bincode::serialize(value).map_err(io::Error::other)?;
    let len =
        u16::try_from(body.len()).map_err(|_| io::Error::other("message longer than 64 KiB"))?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame)
}

fn read_frame<T: for<'de> Deserialize<'de>>(stream: &mut UnixStream) -> io::Result<T> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf)?;
    bincode::deserialize(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads a request as upstream's daemon, with its error for a connection that sends nothing.
fn read_request(stream: &mut UnixStream) -> Result<Request, ZErr> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).map_err(|e| {
        let e = match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::from(io::ErrorKind::UnexpectedEof),
            _ => e,
        };
        io_error("failed to read msg length prefix", &e)
    })?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream
        .read_exact(&mut buf)
        .map_err(|e| io_error("failed to read msg", &e))?;
    bincode::deserialize(&buf)
        .map_err(|e| ZErr::from(format!("error during error in the wire format: {e}")))
}

/// Sends one request to the daemon and acts on its answer like upstream's CLI.
fn via_daemon(socket: &Path, request: &Request) {
    debug("Sending command to zstor daemon");
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e) => fail(
            request.name(),
            io_error("Could not connect to daemon socket", &e),
        ),
    };
    if let Err(e) = write_frame(&mut stream, request) {
        fail(
            request.name(),
            io_error("could not write command to socket", &e),
        );
    }
    let response: Response = match read_frame(&mut stream) {
        Ok(response) => response,
        Err(e) => fail(
            request.name(),
            io_error("could not read response from socket", &e),
        ),
    };
    match response {
        Response::Success => info(&format!(
            "{} {} through the daemon: ok",
            request.name(),
            request.target()
        )),
        Response::Checksum(bytes) => {
            let hex = Checksum(bytes);
            info(&format!(
                "{} {} through the daemon: {hex}",
                request.name(),
                request.target()
            ));
            println!("{hex}");
        }
        Response::Err(message) => {
            info(&format!(
                "{} {} through the daemon: failed: {message}",
                request.name(),
                request.target()
            ));
            eprintln!("Zstor error: {message}");
            exit(1);
        }
    }
}

enum Job {
    Request(Request, UnixStream),
    Reload,
    Shutdown,
}

/// Refuses when the pid file names another live process with our own comm.
fn check_pid_file(pid_file: &Path) -> Result<(), ZErr> {
    let Ok(text) = fs::read_to_string(pid_file) else {
        return Ok(());
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(());
    };
    if pid == std::process::id() {
        return Ok(());
    }
    let theirs = fs::read_to_string(format!("/proc/{pid}/comm"));
    let ours = fs::read_to_string("/proc/self/comm");
    match (theirs, ours) {
        (Ok(theirs), Ok(ours)) if theirs == ours => {
            let message = "another daemon instance is running";
            debug(&format!("pid {pid} of {} is alive", pid_file.display()));
            Err(ZErr {
                display: format!("error during accessing local storage for socket: {message}"),
                debug: format!(
                    "ZstorError {{ kind: LocalIo(\"socket\"), internal: Msg({message:?}) }}"
                ),
            })
        }
        _ => Ok(()),
    }
}

fn monitor(mut ctx: Ctx) -> ! {
    use nix::sys::signal::{SigSet, Signal};

    let Some(socket) = ctx.config.socket.clone() else {
        eprintln!("Missing \"socket\" argument in config");
        exit(1);
    };
    let pid_file = ctx
        .config
        .pid_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PID_FILE));
    if let Err(e) = check_pid_file(&pid_file) {
        fail("monitor", e);
    }

    // Signals are taken by a dedicated thread: block them before any thread starts.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGUSR1] {
        signals.add(signal);
    }
    if let Err(e) = signals.thread_block() {
        fail("monitor", format!("cannot block signals: {e}"));
    }

    if let Err(e) = fs::write(&pid_file, format!("{}\n", std::process::id())) {
        fail(
            "monitor",
            io_error(
                &format!("could not write pid file {}", pid_file.display()),
                &e,
            ),
        );
    }
    let _ = fs::remove_file(&socket);
    let listener = match UnixListener::bind(&socket) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = fs::remove_file(&pid_file);
            fail("monitor", io_error("Failed to bind unix socket", &e));
        }
    };
    info(&format!(
        "zstor daemon (stand-in) listening on {}, pid {}, store {}",
        socket.display(),
        std::process::id(),
        ctx.store.display()
    ));

    let (jobs, queue) = mpsc::channel::<Job>();
    let signal_jobs = jobs.clone();
    std::thread::spawn(move || loop {
        match signals.wait() {
            Ok(Signal::SIGUSR1) => {
                info("Reloading config after receiving SIGUSR1");
                let _ = signal_jobs.send(Job::Reload);
            }
            Ok(signal) => {
                info(&format!(
                    "Shutting down zstor daemon after receiving {}",
                    signal.as_str()
                ));
                let _ = signal_jobs.send(Job::Shutdown);
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    });
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let mut stream = match connection {
                Ok(stream) => stream,
                Err(e) => {
                    error(&format!("Could not accept client connection: {e}"));
                    continue;
                }
            };
            let jobs = jobs.clone();
            // Upstream's handle_client: an unreadable request is logged (with upstream's
            // spelling) and the connection closed without an answer.
            std::thread::spawn(move || match read_request(&mut stream) {
                Ok(request) => {
                    let _ = jobs.send(Job::Request(request, stream));
                }
                Err(e) => error(&format!("Error while handeling client: {}", e.display)),
            });
        }
    });

    // The single worker: one command at a time, in arrival order.
    let serve = |ctx: &mut Ctx, request: Request, mut stream: UnixStream| {
        let response = match perform(ctx, &request) {
            Ok(Some(checksum)) => Response::Checksum(checksum.0),
            Ok(None) => Response::Success,
            Err(e) => Response::Err(e.display.chars().take(16_000).collect()),
        };
        let answer = match &response {
            Response::Checksum(bytes) => format!("Checksum({})", Checksum(*bytes)),
            other => format!("{other:?}"),
        };
        info(&format!(
            "{} {}: {answer}",
            request.name(),
            request.target()
        ));
        if let Err(e) = write_frame(&mut stream, &response) {
            error(&format!("could not answer the client: {e}"));
        }
    };
    while let Ok(job) = queue.recv() {
        match job {
            Job::Request(request, stream) => serve(&mut ctx, request, stream),
            Job::Reload => match ZstorConfig::load(&ctx.config_path) {
                Ok(config) => {
                    ctx.config = config;
                    ctx.store = store_dir(&ctx.config_path);
                    debug(&format!("config {} reloaded", ctx.config_path.display()));
                }
                Err(e) => error(&format!(
                    "could not reload the config, keeping the old one: {e}"
                )),
            },
            Job::Shutdown => {
                while let Ok(job) = queue.try_recv() {
                    if let Job::Request(request, stream) = job {
                        serve(&mut ctx, request, stream);
                    }
                }
                break;
            }
        }
    }
    if let Err(e) = fs::remove_file(&socket) {
        error(&format!("Could not remove socket file: {e}"));
    }
    let _ = fs::remove_file(&pid_file);
    info("all commands should be fullfilled by now");
    exit(0);
}
