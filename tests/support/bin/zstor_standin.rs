//! A contract stand-in for upstream `zstor_v2` v0.5.0-rc.1 (0-stor_v2), for tests only: it is
//! built as the example `zstor-standin` and never shipped.
//!
//! It behaves like the real binary in everything a caller can observe (command line, config
//! parsing, output, exit codes, the daemon and its socket, pid file and signals; see
//! `/work/shared/reference/upstream-contracts.md` §3.2 and §4.2), but keeps objects in a local
//! directory instead of compressing, encrypting and erasure-coding them over 0-db backends.
//! Only `test` and `status` talk to the backends named in the config.
//!
//! # What it implements
//!
//! * Global flags `-c/--config` (default `zstor_config.toml`), `--log_file` (default
//!   `zstor.log`), `-d/--debug`. The log file is opened for append first thing (its parent
//!   directories are created, as log4rs does); if that fails the process aborts (SIGABRT), as
//!   upstream's `.unwrap()` under `panic = "abort"` does. Every command appends a line to it.
//! * The config is parsed strictly with `qsfs::zstor::config::ZstorConfig::load`; an error
//!   prints `Error: <message>` and exits 1. So does any error of a command run in-process.
//!   Command-line usage errors exit 1 (upstream's structopt/clap 2 behaviour).
//! * `store -f PATH [-k DIR] [-e] [-s] [-d] [-n]`: a directory stores each regular file in it
//!   (not recursively, symlinks skipped, one store per file, the first failure ends the
//!   command). `-e` and `-s` are accepted and ignored, as upstream. `-n/--notblocking` is
//!   accepted but the store is performed blocking (upstream's daemon would answer at once and
//!   retry a failed store forever; the stand-in always answers with the real result). A file
//!   whose stored checksum equals its own is not stored again. `-d` removes the file after a
//!   successful (or skipped) store, best effort.
//! * `retrieve -f PATH`: creates the parent directories and writes the file in place with
//!   truncation (not atomically, as upstream). An unknown file fails with a message ending in
//!   `entity not found`.
//! * `check -f PATH`: prints the 32 hex digit blake2b-128 checksum and a newline when the file
//!   is stored, nothing when it is not; exits 0 in both cases.
//! * `rebuild (-f PATH | -k KEY)`: the object must exist; it is rewritten. `KEY` is the hex key
//!   or upstream's raw metadata key `/{prefix}/meta/{hex}`.
//! * `test`: connects to every data backend (PING, `SELECT ns password`, `NSINFO`) and fails
//!   unless all answer and are in sequential mode. `status`: two tables (meta backends, then
//!   data backends) from `NSINFO`. Both always run in-process.
//! * `monitor`: the daemon. It needs `socket` in the config (else prints
//!   `Missing "socket" argument in config` and exits 1), refuses to start when the pid file
//!   (`pid_file`, default `/var/run/zstor.pid`) names a live process with our own
//!   `/proc/<pid>/comm`, writes the pid file, removes a stale socket and binds. Requests are
//!   read concurrently and run one at a time by a single worker, in arrival order. SIGINT and
//!   SIGTERM finish the running and queued requests, remove the socket and the pid file and
//!   exit 0. SIGUSR1 reloads the config (and the store directory).
//! * With `socket` set, `store`, `retrieve`, `check` and `rebuild` go through the daemon, with
//!   the paths exactly as given (the daemon resolves them in its own working directory). If
//!   nothing listens: `Error: Could not connect to daemon socket: …`, exit 1, no fallback. A
//!   daemon error prints `Zstor error: <msg>` and exits 1. The wire format is the stand-in's
//!   own: a u16 big-endian length and a JSON request, answered the same way with
//!   `"Success"`, `{"Err": msg}` or `{"Checksum": hex}`.
//!
//! # Keys
//!
//! The key of a file is the hex blake2b-128 of its canonicalized absolute path, minus `root`
//! when that is set (a path outside `root` is refused with `… not in the file tree rooted at
//! …`). `store` canonicalizes the file itself, or with `--key-path DIR` canonicalizes `DIR`
//! (which must exist) and joins the file name. The other commands canonicalize the file if it
//! exists, else its deepest existing ancestor, and join the rest.
//!
//! # Where it stores
//!
//! The store directory is, in this order: the environment variable `ZSTOR_STANDIN_STORE` (if
//! not empty); else the path written in a file `zstor-standin-store` next to the config file
//! (relative paths are relative to the config's directory); else `zstor-standin-store` in the
//! parent of the config's directory (`/var/zdbfs/zstor-standin-store` for the appliance's
//! `/var/zdbfs/etc/zstor-default.toml`: writable under the units' `ProtectSystem=strict`).
//! Objects are `<store>/objects/<key>.data` and `<key>.meta` (JSON: path, checksum, size), each
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
//!  "fail_next_stores": 2, "store_delay_ms": 100, "fail_retrieve": false}
//! ```
//!
//! All keys are optional. A hang (chosen with `hang_store_percent`) sleeps `hang_secs`
//! (default 3600) before doing anything else; then `store_delay_ms` is slept; then the store
//! fails when `fail_next_stores` is above zero (it is decremented in the file) or with
//! probability `fail_store_percent`. A failed store stores nothing and reports
//! `injected failure` (`Error: injected failure`, exit 1, in-process). `fail_retrieve` makes
//! every retrieve fail the same way. The random choices use a small xorshift generator seeded
//! from the clock and the pid.

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
    },
    Check {
        file: PathBuf,
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
            Request::Store { file, .. } | Request::Retrieve { file } | Request::Check { file } => {
                file.display().to_string()
            }
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
    Checksum(String),
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

/// `YYYY-MM-DD HH:MM:SS UTC`, zstor's log timestamp.
fn timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
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
        Err(e) => fail("loading the config", &e.to_string()),
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
                        &io_error(
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
        Cmd::Rebuild { file, key } => vec![Request::Rebuild { file, key }],
        Cmd::Check { file } => vec![Request::Check { file }],
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

/// Logs `what` failed, prints `Error: <message>` and exits 1, as upstream's `main` returning
/// an error.
fn fail(what: &str, message: &str) -> ! {
    error(&format!("{what} failed: {message}"));
    eprintln!("Error: {message}");
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
        Err(message) => fail(command, &message),
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

/// Upstream's message shape for local I/O errors (`ZstorErrorKind::LocalIo`).
fn io_error(context: &str, e: &io::Error) -> String {
    format!("error during accessing local storage for {context}: {e}")
}

fn not_found(context: &str) -> String {
    io_error(context, &io::Error::from(io::ErrorKind::NotFound))
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

    /// The key of a canonical path: hex blake2b-128 of the path minus `root`.
    fn key(&self, path: &Path) -> Result<String, String> {
        let relative = match &self.config.root {
            Some(root) => path.strip_prefix(root).map_err(|_| {
                io_error(
                    &format!(
                        "attempting to use a file which is not in the file tree rooted at {}",
                        root.display()
                    ),
                    &io::Error::from(io::ErrorKind::InvalidData),
                )
            })?,
            None => path,
        };
        Ok(Checksum::of_bytes(relative.as_os_str().as_bytes()).to_string())
    }

    fn load_meta(&self, key: &str) -> Result<Option<ObjectMeta>, String> {
        match fs::read(self.object(key, "meta")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("error during metadata: corrupt metadata for key {key}: {e}")),
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
    checksum: Checksum,
    size: u64,
    stored_at: u64,
}

/// Performs one request; `Ok(Some(_))` is a checksum to print.
fn perform(ctx: &mut Ctx, request: &Request) -> Result<Option<Checksum>, String> {
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
        Request::Rebuild { file, key } => {
            rebuild(ctx, file.as_deref(), key.as_deref(), &mut resolved).map(|()| (None, false))
        }
        Request::Check { file } => check(ctx, file, &mut resolved).map(|sum| (sum, false)),
    };
    let path = resolved.map_or_else(|| request.target(), |p| p.display().to_string());
    let outcome = match (&result, request) {
        (Err(message), _) => format!("failed: {message}"),
        (Ok((Some(_), _)), _) => "stored".to_string(),
        (Ok((None, _)), Request::Check { .. }) => "missing".to_string(),
        (Ok((None, true)), _) => "skipped".to_string(),
        (Ok((None, false)), _) => "ok".to_string(),
    };
    ctx.calls_log(request.name(), &path, &outcome);
    result.map(|(sum, _)| sum)
}

/// Canonicalizes a path that may not exist: the deepest existing ancestor is canonicalized and
/// the remaining components are joined to it.
fn canonical_lookup(path: &Path) -> Result<PathBuf, String> {
    match fs::canonicalize(path) {
        Ok(canonical) => Ok(canonical),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let name = path
                .file_name()
                .ok_or_else(|| not_found("could not get file name of path"))?;
            let parent = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            Ok(canonical_lookup(parent)?.join(name))
        }
        Err(e) => Err(io_error("could not canonicalize path", &e)),
    }
}

/// Stores one file; `Ok(true)` when it was already stored with the same checksum.
fn store(
    ctx: &Ctx,
    file: &Path,
    key_dir: Option<&Path>,
    delete: bool,
    resolved: &mut Option<PathBuf>,
) -> Result<bool, String> {
    let injected = Injection::take(ctx, file)?;
    if injected.fail {
        return Err("injected failure".to_string());
    }

    let key_path = match key_dir {
        None => fs::canonicalize(file).map_err(|e| io_error("could not load file metadata", &e))?,
        Some(dir) => {
            let name = file
                .file_name()
                .ok_or_else(|| not_found("Could not get file name of data file"))?;
            fs::canonicalize(dir)
                .map_err(|e| io_error("could not canonicalize key path", &e))?
                .join(name)
        }
    };
    *resolved = Some(key_path.clone());
    let key = ctx.key(&key_path)?;
    let metadata = fs::metadata(file).map_err(|e| io_error("could not load file metadata", &e))?;
    if !metadata.is_file() {
        return Err(io_error(
            "only files can be stored",
            &io::Error::from(io::ErrorKind::InvalidData),
        ));
    }

    let checksum =
        Checksum::of_file(file).map_err(|e| io_error("could not read file to encode", &e))?;
    let skipped = matches!(ctx.load_meta(&key)?, Some(old) if old.checksum == checksum);
    if skipped {
        info(&format!(
            "file {} ({checksum}) already stored, skipping upload",
            key_path.display()
        ));
    } else {
        fs::create_dir_all(ctx.objects())
            .map_err(|e| io_error("could not create the store directory", &e))?;
        let mut source =
            File::open(file).map_err(|e| io_error("could not open file to encode", &e))?;
        let data = ctx.object(&key, "data");
        let size = write_atomic(&data, |out| io::copy(&mut source, out))
            .map_err(|e| io_error("could not write the object", &e))?;
        // The checksum of what was written, in case the file changed since it was read.
        let checksum =
            Checksum::of_file(&data).map_err(|e| io_error("could not read the object", &e))?;
        save_meta(ctx, &key, &key_path, checksum, size)?;
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
    size: u64,
) -> Result<(), String> {
    let stored_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let meta = ObjectMeta {
        path: path.to_path_buf(),
        checksum,
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
fn load_object(ctx: &Ctx, key: &str) -> Result<(ObjectMeta, Vec<u8>), String> {
    let meta = ctx
        .load_meta(key)?
        .ok_or_else(|| not_found("no metadata found for file"))?;
    let data = fs::read(ctx.object(key, "data")).map_err(|e| io_error("shard not found", &e))?;
    if Checksum::of_bytes(&data) != meta.checksum {
        return Err("error during encoding: shard checksum verification failed".to_string());
    }
    Ok((meta, data))
}

fn retrieve(ctx: &Ctx, file: &Path, resolved: &mut Option<PathBuf>) -> Result<(), String> {
    let path = canonical_lookup(file)?;
    *resolved = Some(path.clone());
    let key = ctx.key(&path)?;
    if ctx.load_meta(&key)?.is_none() {
        return Err(not_found("no metadata found for file"));
    }
    if Injection::read(ctx)?.fail_retrieve {
        return Err("injected failure".to_string());
    }
    let (_, data) = load_object(ctx, &key)?;
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

fn check(
    ctx: &Ctx,
    file: &Path,
    resolved: &mut Option<PathBuf>,
) -> Result<Option<Checksum>, String> {
    let path = canonical_lookup(file)?;
    *resolved = Some(path.clone());
    Ok(ctx.load_meta(&ctx.key(&path)?)?.map(|meta| meta.checksum))
}

fn rebuild(
    ctx: &Ctx,
    file: Option<&Path>,
    key: Option<&str>,
    resolved: &mut Option<PathBuf>,
) -> Result<(), String> {
    let invalid = |message: &str| io_error(message, &io::Error::from(io::ErrorKind::InvalidInput));
    let key = match (file, key) {
        (None, None) => return Err(invalid("Either `file` or `key` argument must be set")),
        (Some(_), Some(_)) => {
            return Err(invalid("Only one of `file` or `key` argument must be set"))
        }
        (Some(file), None) => {
            let path = canonical_lookup(file)?;
            *resolved = Some(path.clone());
            ctx.key(&path)?
        }
        // Upstream's raw keys look like `/{prefix}/meta/{hex}`; a bare hex key works too.
        (None, Some(raw)) => raw.rsplit('/').next().unwrap_or(raw).to_string(),
    };
    if key.parse::<Checksum>().is_err() {
        return Err(not_found("no metadata found for file"));
    }
    let (meta, data) = load_object(ctx, &key)?;
    let size = write_atomic(&ctx.object(&key, "data"), |out| {
        out.write_all(&data).map(|()| data.len() as u64)
    })
    .map_err(|e| io_error("could not write the object", &e))?;
    save_meta(ctx, &key, &meta.path, meta.checksum, size)?;
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

/// The two tables of `zstor status`.
fn status(config: &ZstorConfig) {
    let meta: Vec<&Backend> = config.meta_backends().iter().collect();
    let data: Vec<&Backend> = config.data_backends().collect();
    print_status_table(&meta);
    println!();
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
                            // Upstream's free_space: the limit, or u64::MAX without one.
                            let free = info.limit().unwrap_or(u64::MAX);
                            let usage = info
                                .limit()
                                .map_or(0, |limit| 100 * info.data_size_bytes / limit);
                            [
                                name,
                                "Yes".into(),
                                info.entries.to_string(),
                                info.data_size_bytes.to_string(),
                                free.to_string(),
                                format!("{usage}%"),
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
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+";
    let line = |cells: &[&str]| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("| {c:<w$} "))
            .collect::<String>()
            + "|"
    };
    println!("{rule}");
    println!("{}", line(&header));
    println!("{rule}");
    for row in &rows {
        println!(
            "{}",
            line(&row.iter().map(String::as_str).collect::<Vec<_>>())
        );
    }
    println!("{rule}");
}

// ---------------------------------------------------------------------------------------------
// The daemon and its client

fn write_frame(stream: &mut UnixStream, value: &impl Serialize) -> io::Result<()> {
    let json = serde_json::to_vec(value).map_err(io::Error::other)?;
    let len =
        u16::try_from(json.len()).map_err(|_| io::Error::other("message longer than 64 KiB"))?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&json);
    stream.write_all(&frame)
}

fn read_frame<T: for<'de> Deserialize<'de>>(stream: &mut UnixStream) -> io::Result<T> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf)?;
    serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Sends one request to the daemon and acts on its answer like upstream's CLI.
fn via_daemon(socket: &Path, request: &Request) {
    debug("Sending command to zstor daemon");
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e) => fail(
            request.name(),
            &format!("Could not connect to daemon socket: {e}"),
        ),
    };
    if let Err(e) = write_frame(&mut stream, request) {
        fail(
            request.name(),
            &format!("Could not write command to socket: {e}"),
        );
    }
    let response: Response = match read_frame(&mut stream) {
        Ok(response) => response,
        Err(e) => fail(
            request.name(),
            &format!("Could not read response from socket: {e}"),
        ),
    };
    match response {
        Response::Success => info(&format!(
            "{} {} through the daemon: ok",
            request.name(),
            request.target()
        )),
        Response::Checksum(hex) => {
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
fn check_pid_file(pid_file: &Path) -> Result<(), String> {
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
        (Ok(theirs), Ok(ours)) if theirs == ours => Err(format!(
            "zstor daemon already running with pid {pid} (pid file {})",
            pid_file.display()
        )),
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
    if let Err(message) = check_pid_file(&pid_file) {
        fail("monitor", &message);
    }

    // Signals are taken by a dedicated thread: block them before any thread starts.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGUSR1] {
        signals.add(signal);
    }
    if let Err(e) = signals.thread_block() {
        fail("monitor", &format!("cannot block signals: {e}"));
    }

    if let Err(e) = fs::write(&pid_file, format!("{}\n", std::process::id())) {
        fail(
            "monitor",
            &io_error(
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
            fail("monitor", &io_error("Failed to bind unix socket", &e));
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
                let _ = signal_jobs.send(Job::Reload);
            }
            Ok(signal) => {
                info(&format!(
                    "received {signal}, shutting down after the queued commands"
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
            std::thread::spawn(move || match read_frame::<Request>(&mut stream) {
                Ok(request) => {
                    let _ = jobs.send(Job::Request(request, stream));
                }
                Err(e) => {
                    error(&format!("Error while handling client: {e}"));
                    let _ =
                        write_frame(&mut stream, &Response::Err(format!("invalid request: {e}")));
                }
            });
        }
    });

    // The single worker: one command at a time, in arrival order.
    let serve = |ctx: &mut Ctx, request: Request, mut stream: UnixStream| {
        let response = match perform(ctx, &request) {
            Ok(Some(checksum)) => Response::Checksum(checksum.to_string()),
            Ok(None) => Response::Success,
            Err(message) => Response::Err(message.chars().take(16_000).collect()),
        };
        info(&format!(
            "{} {}: {response:?}",
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
                    info(&format!("config {} reloaded", ctx.config_path.display()));
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
    info("zstor daemon stopped");
    exit(0);
}
