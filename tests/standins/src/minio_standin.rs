//! A stand-in for MinIO (`minio server`), for tests and a clearly labelled demo image only: it is
//! built as the binary `minio-standin` of `qsfs-standins` and is never part of a product image.
//!
//! It takes MinIO's command line and environment and serves real S3 over one directory with
//! [`s3s_fs::FileSystem`] from `s3s-fs` 0.14.1 (an S3 server from crates.io, storing buckets
//! as directories and objects as files), behind `s3s`'s SigV4/SigV2 authentication.
//!
//! # What it implements
//!
//! * `minio server [--address ADDR] [--console-address ADDR] [--quiet] [--json] DIR`. Flags may
//!   come before or after `DIR`, as `--flag VALUE` or `--flag=VALUE`, with one dash or two (Go's
//!   flag syntax); `--` ends the flags. `ADDR` is `:PORT` (all interfaces: IPv6 and IPv4 on one
//!   dual-stack socket, or IPv4 alone without IPv6), `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`
//!   (every address `HOST` resolves to); the default is `:9000`. `--console-address` is checked
//!   and ignored (there is no console); `--quiet` leaves only warnings and errors in the log;
//!   `--json` is accepted and ignored (the log stays plain text). `DIR` is created if missing,
//!   as MinIO does; only one local directory is supported (no erasure sets, no URLs).
//! * `minio --version` (or `-v`) prints a line naming the stand-in; `--help` prints the usage.
//!   An unknown command or flag, a missing or malformed value, or not exactly one `DIR` is a
//!   usage error: a message on stderr and exit status 2.
//! * Credentials: `MINIO_ROOT_USER` (at least 3 characters) and `MINIO_ROOT_PASSWORD` (at least
//!   8), as MinIO checks them, or as MinIO the files named by `MINIO_ROOT_USER_FILE` and
//!   `MINIO_ROOT_PASSWORD_FILE` (trimmed; they win), which is how systemd credentials reach it. Unlike MinIO, which starts with `minioadmin:minioadmin` when they
//!   are unset, the stand-in **refuses default credentials**: if either is missing or empty it
//!   logs why and exits 1. The password is never printed.
//! * Every request is handed to the S3 service, except `GET` and `HEAD` on MinIO's health
//!   endpoints, answered without authentication and with an empty body:
//!   `/minio/health/live` is 200 while the process serves; `/minio/health/ready` is 200 while
//!   `DIR` is usable (it is a directory we may read, write and search, and it answers within
//!   2 s), else 503. Readiness changes are logged once each.
//! * SIGTERM or SIGINT: the listeners are closed, in-flight requests are finished and idle
//!   connections closed (at most 10 s; a second signal stops waiting), then exit 0. A failure to
//!   start (credentials, `DIR`, binding) exits 1.
//! * Logs go to stderr through `tracing`: a line when it starts (with the addresses it listens
//!   on), one when it stops, one per error (a server error answered, a failed accept), none
//!   per request. `QSFS_LOG` (`error` … `trace`) changes the level; at `debug` and `trace` the
//!   S3 libraries' own logs (every failed request) are shown too.
//! * A header-signed SigV4 request without a body and without `x-amz-content-sha256` is taken
//!   as signing an empty payload, as MinIO does (s3s alone would refuse it); a request with a
//!   body must declare its payload hash (for instance `UNSIGNED-PAYLOAD`), else it gets 400.
//!
//! What it is not: no console, no IAM, no policies, no erasure coding, no bitrot protection,
//! no distributed mode; S3 coverage is what `s3s-fs` 0.14.1 implements (buckets, objects,
//! multipart uploads, listing, copying, checksums).

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{Body, HttpError, HttpResponse};
use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};
use tracing::level_filters::LevelFilter;
use tracing::{debug, error, info, warn};

/// The `s3s-fs` release this stand-in serves S3 with (pinned in Cargo.toml).
const S3S_FS_VERSION: &str = "0.14.1";
/// How long in-flight requests may take to finish after SIGTERM or SIGINT.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How long a readiness check of `DIR` may take before it counts as unusable.
const READY_CHECK_LIMIT: Duration = Duration::from_secs(2);
/// The smallest credentials MinIO accepts.
const MIN_USER_LEN: usize = 3;
const MIN_PASSWORD_LEN: usize = 8;

const USAGE: &str = "\
usage: minio server [--address ADDR] [--console-address ADDR] [--quiet] [--json] DIR
       minio --version

The qsfs MinIO stand-in: S3 over DIR with s3s-fs, for tests and demos only.
ADDR is :PORT, IP:PORT, [IPv6]:PORT or HOST:PORT (default :9000).
Credentials come from MINIO_ROOT_USER and MINIO_ROOT_PASSWORD, or from the files that
MINIO_ROOT_USER_FILE and MINIO_ROOT_PASSWORD_FILE name; both are required.";

fn main() -> ExitCode {
    let server = match parse_args(std::env::args_os().skip(1)) {
        Ok(Cli::Version) => {
            println!(
                "minio version {} (the qsfs MinIO stand-in over s3s-fs {S3S_FS_VERSION}; not MinIO)",
                env!("CARGO_PKG_VERSION")
            );
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Server(server)) => server,
        Err(message) => {
            eprintln!("minio: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging(server.quiet);
    let credentials = match credentials_from_env() {
        Ok(credentials) => credentials,
        Err(message) => {
            error!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(server, credentials));
    // A readiness check stuck on a dead FUSE mount must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Command line

/// What the command line asks for.
#[derive(Debug)]
enum Cli {
    Version,
    Help,
    Server(ServerArgs),
}

/// `minio server`'s arguments.
#[derive(Debug)]
struct ServerArgs {
    address: Address,
    quiet: bool,
    dir: PathBuf,
}

/// A listen address as MinIO takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    /// `:PORT`: every interface.
    Any(u16),
    /// `IP:PORT` or `[IPv6]:PORT`.
    Ip(SocketAddr),
    /// `HOST:PORT`: every address the name resolves to.
    Host(String, u16),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Any(port) => write!(f, ":{port}"),
            Address::Ip(addr) => write!(f, "{addr}"),
            Address::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

fn parse_address(text: &str) -> Result<Address, String> {
    let bad = |why: &str| {
        format!(
            "invalid address {text:?}: {why} (expected :PORT, IP:PORT, [IPv6]:PORT or HOST:PORT)"
        )
    };
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Address::Ip(addr));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Ok(Address::Any(port));
    }
    if host.starts_with('[') || host.contains(':') {
        return Err(bad(
            "an IPv6 address must be written in brackets, as [::1]:9000",
        ));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(bad("not a host name"));
    }
    Ok(Address::Host(host.to_string(), port))
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Cli, String> {
    let mut args = args.into_iter();
    let command = match args.next() {
        None => return Err("no command given".into()),
        Some(command) => command
            .into_string()
            .map_err(|c| format!("unknown command {c:?}"))?,
    };
    match command.as_str() {
        "--version" | "-version" | "-v" => return Ok(Cli::Version),
        "--help" | "-help" | "-h" | "help" => return Ok(Cli::Help),
        "server" => {}
        other if other.starts_with('-') => return Err(format!("unknown flag {other:?}")),
        other => {
            return Err(format!(
                "unknown command {other:?} (the stand-in only has \"server\")"
            ))
        }
    }
    let mut address = Address::Any(9000);
    let mut quiet = false;
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut flags_done = false;
    while let Some(arg) = args.next() {
        let text = match arg.to_str() {
            Some(text) if !flags_done && text.len() > 1 && text.starts_with('-') => text,
            _ => {
                dirs.push(PathBuf::from(arg));
                continue;
            }
        };
        if text == "--" {
            flags_done = true;
            continue;
        }
        let flag = text.strip_prefix("--").unwrap_or(&text[1..]);
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag, None),
        };
        match name {
            "address" | "console-address" => {
                let value = match inline {
                    Some(value) => value,
                    None => args
                        .next()
                        .ok_or_else(|| format!("flag --{name} needs a value"))?
                        .into_string()
                        .map_err(|v| format!("invalid address {v:?}"))?,
                };
                let parsed = parse_address(&value).map_err(|e| format!("--{name}: {e}"))?;
                if name == "address" {
                    address = parsed;
                }
            }
            "quiet" | "json" => {
                let on = match inline.as_deref() {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(other) => {
                        return Err(format!("flag --{name} takes no value (got {other:?})"))
                    }
                };
                if name == "quiet" {
                    quiet = on;
                }
            }
            "help" | "h" => return Ok(Cli::Help),
            _ => return Err(format!("unknown flag {text:?}")),
        }
    }
    let dir = match dirs.len() {
        0 => return Err("no directory given".into()),
        1 => dirs.remove(0),
        n => {
            return Err(format!(
                "{n} directories given: the stand-in serves exactly one local directory"
            ))
        }
    };
    let shown = dir.to_string_lossy();
    if shown.contains("://") || shown.contains("{") || shown.contains("...") {
        return Err(format!(
            "{shown:?}: the stand-in serves one local directory (no URLs, no ellipses)"
        ));
    }
    Ok(Cli::Server(ServerArgs {
        address,
        quiet,
        dir,
    }))
}

// ----------------------------------------------------------------------------------------------
// Environment

struct Credentials {
    user: String,
    password: String,
}

/// Reads `MINIO_ROOT_USER` and `MINIO_ROOT_PASSWORD`, or, as MinIO does, the files that
/// `MINIO_ROOT_USER_FILE` and `MINIO_ROOT_PASSWORD_FILE` name (their content trimmed of
/// surrounding white space; they win over the plain variables). Messages never contain the
/// password.
fn credentials_from_env() -> Result<Credentials, String> {
    let read = |name: &str| {
        let file_var = format!("{name}_FILE");
        if let Some(path) = std::env::var_os(&file_var).filter(|p| !p.is_empty()) {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "{file_var}: cannot read {}: {e}",
                    std::path::Path::new(&path).display()
                )
            })?;
            let value = text.trim();
            return Ok((!value.is_empty()).then(|| value.to_string()));
        }
        match std::env::var(name) {
            Ok(value) if !value.is_empty() => Ok(Some(value)),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
        }
    };
    let (user, password) = (read("MINIO_ROOT_USER")?, read("MINIO_ROOT_PASSWORD")?);
    let missing: Vec<&str> = [
        ("MINIO_ROOT_USER", user.is_none()),
        ("MINIO_ROOT_PASSWORD", password.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, missing)| missing.then_some(name))
    .collect();
    let (Some(user), Some(password)) = (user, password) else {
        return Err(format!(
            "{} not set: the MinIO stand-in refuses to start with default credentials \
             (set MINIO_ROOT_USER and MINIO_ROOT_PASSWORD)",
            missing.join(" and ")
        ));
    };
    if user.chars().count() < MIN_USER_LEN {
        return Err(format!(
            "MINIO_ROOT_USER is too short: at least {MIN_USER_LEN} characters are required"
        ));
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!(
            "MINIO_ROOT_PASSWORD is too short: at least {MIN_PASSWORD_LEN} characters are required"
        ));
    }
    Ok(Credentials { user, password })
}

/// Plain lines on stderr: ours at `info` (`warn` with `--quiet`). The S3 libraries log every
/// failed request (even a 404) as an error, so they are silent unless `QSFS_LOG` asks for
/// `debug` or `trace`; server errors are logged by [`Standin`] instead.
fn init_logging(quiet: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    let requested = std::env::var("QSFS_LOG")
        .ok()
        .and_then(|level| level.parse::<LevelFilter>().ok());
    let ours = requested.unwrap_or(if quiet {
        LevelFilter::WARN
    } else {
        LevelFilter::INFO
    });
    let libraries = match requested {
        Some(level) if level > LevelFilter::INFO => level,
        _ => LevelFilter::OFF,
    };
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target(module_path!(), ours)
        .with_default(libraries);
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(filter);
    drop(tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(layer),
    ));
}

// ----------------------------------------------------------------------------------------------
// Serving

async fn serve(args: ServerArgs, credentials: Credentials) -> Result<(), String> {
    // Before anything listens, so a signal sent as soon as the port answers is ours.
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;

    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let root = std::fs::canonicalize(&args.dir)
        .map_err(|e| format!("cannot resolve {}: {e}", args.dir.display()))?;
    if !root.is_dir() {
        return Err(format!("{} is not a directory", root.display()));
    }
    let fs = s3s_fs::FileSystem::new(&root)
        .map_err(|e| format!("cannot serve {}: {e:?}", root.display()))?;
    let s3 = {
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(
            credentials.user,
            credentials.password,
        ));
        builder.build()
    };
    let service = Standin {
        s3,
        health: Arc::new(Health::new(root.clone())),
    };

    let listeners = bind(&args.address)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.address))?;
    let local: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| format!("http://{a}"))
        .collect();

    // One accept loop per listener, all feeding the serving loop.
    let (accepted_tx, mut accepted) = mpsc::channel::<TcpStream>(64);
    let accept_loops: Vec<_> = listeners
        .into_iter()
        .map(|listener| tokio::spawn(accept_loop(listener, accepted_tx.clone())))
        .collect();
    drop(accepted_tx);

    info!(
        "MinIO stand-in (s3s-fs {S3S_FS_VERSION}, test/demo only) serving S3 over {} on {}",
        root.display(),
        local.join(", ")
    );

    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let signal_name = loop {
        tokio::select! {
            stream = accepted.recv() => {
                let Some(stream) = stream else {
                    return Err("every listener failed".into());
                };
                let conn = http.serve_connection(TokioIo::new(stream), service.clone()).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!("connection ended with an error: {e}");
                    }
                });
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };

    // Stop accepting: the listeners close when their loops are dropped. Connections accepted
    // but not yet served are closed too.
    for task in &accept_loops {
        task.abort();
    }
    for task in accept_loops {
        let _ = task.await;
    }
    drop(accepted);
    let open = graceful.count();
    debug!("{signal_name}: draining {open} connections");

    let deadline = tokio::time::sleep(DRAIN_LIMIT);
    tokio::select! {
        () = graceful.shutdown() => {
            info!("stopped on {signal_name}: listeners closed, in-flight requests finished");
        }
        () = deadline => {
            warn!(
                "stopped on {signal_name}: requests still running after {}s were cut off",
                DRAIN_LIMIT.as_secs()
            );
        }
        _ = sigterm.recv() => warn!("stopped on a second signal after {signal_name}: requests cut off"),
        _ = sigint.recv() => warn!("stopped on a second signal after {signal_name}: requests cut off"),
    }
    Ok(())
}

/// Accepts connections until dropped (aborted). Errors such as running out of file descriptors
/// are logged and retried after a pause.
async fn accept_loop(listener: TcpListener, accepted: mpsc::Sender<TcpStream>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                if accepted.send(stream).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                error!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Binds `address` as MinIO would.
async fn bind(address: &Address) -> io::Result<Vec<TcpListener>> {
    match address {
        Address::Any(port) => match bind_dual_stack(*port) {
            Ok(listener) => Ok(vec![listener]),
            // No IPv6 on this host: IPv4 alone.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                ) =>
            {
                Ok(vec![
                    TcpListener::bind((Ipv4Addr::UNSPECIFIED, *port)).await?,
                ])
            }
            Err(e) => Err(e),
        },
        Address::Ip(addr) => Ok(vec![TcpListener::bind(addr).await?]),
        Address::Host(host, port) => {
            let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                .await?
                .collect();
            addrs.sort();
            addrs.dedup();
            if addrs.is_empty() {
                return Err(io::Error::other(format!("{host} resolves to no address")));
            }
            let mut listeners: Vec<TcpListener> = Vec::new();
            for mut addr in addrs {
                // With port 0 every address gets the port the first one got.
                if let Some(first) = listeners.first() {
                    addr.set_port(first.local_addr()?.port());
                }
                listeners.push(TcpListener::bind(addr).await?);
            }
            Ok(listeners)
        }
    }
}

/// One socket on `[::]:port` that also takes IPv4 connections.
fn bind_dual_stack(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v6()?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6V6Only, &false)
        .map_err(io::Error::from)?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
    socket.listen(1024)
}

// ----------------------------------------------------------------------------------------------
// Requests

/// The HTTP service: MinIO's health endpoints, and S3 for everything else.
#[derive(Clone)]
struct Standin {
    s3: S3Service,
    health: Arc<Health>,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>>;

impl Service<Request<Incoming>> for Standin {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = ResponseFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let probe = matches!(*request.method(), Method::GET | Method::HEAD);
        match request.uri().path() {
            "/minio/health/live" if probe => Box::pin(async { Ok(empty(StatusCode::OK)) }),
            "/minio/health/ready" if probe => {
                let health = Arc::clone(&self.health);
                Box::pin(async move {
                    Ok(empty(if health.ready().await {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }))
                })
            }
            _ => {
                default_content_sha256(&mut request);
                let what = format!("{} {}", request.method(), request.uri().path());
                let answer = Service::call(&self.s3, request);
                Box::pin(async move {
                    let result = answer.await;
                    // Client errors are the client's business; ours are logged, once each.
                    match &result {
                        Ok(response) if response.status() == StatusCode::NOT_IMPLEMENTED => {
                            debug!("S3 {what}: not implemented by s3s-fs");
                        }
                        Ok(response) if response.status().is_server_error() => {
                            error!("S3 {what}: answered {}", response.status());
                        }
                        Ok(_) => {}
                        Err(e) => error!("S3 {what}: {e:?}"),
                    }
                    result
                })
            }
        }
    }
}

/// MinIO takes a header-signed SigV4 request without `x-amz-content-sha256` as signing the
/// SHA-256 of an empty payload (as curl before 8 signs bodiless requests); s3s requires the
/// header. For a request without a body it is added with that value; a request with a body is
/// left alone, so s3s refuses it (400) unless it declares its payload (for instance
/// `UNSIGNED-PAYLOAD`), where MinIO would refuse it for the hash mismatch.
fn default_content_sha256(request: &mut Request<Incoming>) {
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let headers = request.headers_mut();
    let signed_v4 = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().get(..16))
        .is_some_and(|scheme| scheme == b"AWS4-HMAC-SHA256");
    let bodiless = !headers.contains_key(hyper::header::TRANSFER_ENCODING)
        && headers
            .get(hyper::header::CONTENT_LENGTH)
            .is_none_or(|length| length.as_bytes() == b"0");
    if signed_v4 && bodiless && !headers.contains_key("x-amz-content-sha256") {
        headers.insert(
            "x-amz-content-sha256",
            hyper::header::HeaderValue::from_static(EMPTY_SHA256),
        );
    }
}

fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// Readiness of `DIR`, checked on a blocking thread with a time limit (a dead FUSE mount may
/// hang). Checks run one at a time; while an abandoned check is still hanging, `DIR` counts as
/// unusable without starting another.
struct Health {
    dir: PathBuf,
    turn: tokio::sync::Mutex<()>,
    hanging: Arc<AtomicUsize>,
    usable: AtomicBool,
}

impl Health {
    fn new(dir: PathBuf) -> Self {
        Health {
            dir,
            turn: tokio::sync::Mutex::new(()),
            hanging: Arc::new(AtomicUsize::new(0)),
            usable: AtomicBool::new(true),
        }
    }

    async fn ready(&self) -> bool {
        let result = self.check().await;
        let was_usable = self.usable.swap(result.is_ok(), Ordering::SeqCst);
        match &result {
            Ok(()) if !was_usable => info!("ready again: {} is usable", self.dir.display()),
            Err(why) if was_usable => warn!("not ready: {why}"),
            _ => {}
        }
        result.is_ok()
    }

    async fn check(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_CHECK_LIMIT;
        let slow = || {
            format!(
                "{} did not answer within {}s",
                self.dir.display(),
                READY_CHECK_LIMIT.as_secs()
            )
        };
        let Ok(_turn) = timeout_at(deadline, self.turn.lock()).await else {
            return Err(slow());
        };
        if self.hanging.load(Ordering::SeqCst) > 0 {
            return Err(slow());
        }
        self.hanging.fetch_add(1, Ordering::SeqCst);
        let hanging = Arc::clone(&self.hanging);
        let dir = self.dir.clone();
        let task = tokio::task::spawn_blocking(move || {
            let result = check_dir(&dir);
            hanging.fetch_sub(1, Ordering::SeqCst);
            result
        });
        match timeout_at(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(format!("the check of {} failed: {e}", self.dir.display())),
            Err(_) => Err(slow()),
        }
    }
}

/// `dir` is a directory we can list, create files in and search.
fn check_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    let meta = std::fs::metadata(dir).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    std::fs::read_dir(dir).map_err(|e| format!("{shown}: {e}"))?;
    use nix::unistd::AccessFlags;
    nix::unistd::access(
        dir,
        AccessFlags::R_OK | AccessFlags::W_OK | AccessFlags::X_OK,
    )
    .map_err(|e| format!("{shown}: {}", io::Error::from(e)))
}
