//! A contract stand-in for upstream 0-db (`zdb`, v2.0.7), for tests only: it is never shipped.
//!
//! It behaves like `zdb` to the letter for what it implements, as described in
//! `upstream-contracts.md` §1.1–§1.7 and the upstream sources (`zdbd/commands*.c`,
//! `libzdb/namespace.c`, `index*.c`), so tests can run the real hook dispatcher and monitor
//! against it. Where upstream has a quirk, the stand-in has it too (they are marked in the code).
//!
//! **Flags** (parsed like `getopt_long_only`: `-flag` or `--flag`, value as the next argument or
//! after `=`, unambiguous prefixes accepted): `--data`, `--index`, `--datasize`, `--mode
//! user|seq|direct`, `--listen`, `--port`, `--socket`, `--dualnet`, `--hook`, `--maxsize`,
//! `--sync`, `--synctime`, `--secure`, `--rotate`, `--background`, `--logfile`, `--verbose`
//! (no-op), `--version` (exit 0), `--help` (exit 1). `--admin`, `--protect` and `--dump` are
//! refused (exit 1): there is no admin password, so every client is admin.
//!
//! **Startup** (§1.2): create the roots; refuse equal realpaths (exit 1); `flock` both
//! `.lockfile`s (held: exit 1); blocking `namespaces-init <index root> <data root>`; load or create
//! `default`, then every namespace directory of the index root (in readdir order); bind and
//! listen; blocking `ready` (non-zero: `namespace-closing` per namespace, exit 0); serve.
//! SIGINT/SIGTERM: blocking `close`, `namespace-closing` per namespace, exit 128+signal (also
//! during `ready`, whose hook is not waited for); during `namespaces-init` instead `close`,
//! `crash` and death by SIGSEGV (§8.3). SIGSEGV (from `kill`): `crash`, `namespace-closing` per
//! namespace, exit 139. Hooks: see `hooks.rs`.
//!
//! **Commands**: `PING`, `TIME`, `INFO`, `HOOKS`, `INDEX DIRTY [RESET]`, `SET`/`SETX`, `GET`,
//! `MGET`, `DEL`, `EXISTS`, `CHECK`, `LENGTH`, `KEYTIME`, `DBSIZE`, `NSNEW`, `NSDEL`, `NSLIST`,
//! `NSSET`, `NSINFO`, `NSJUMP`, `SELECT` (with a password, plain or `SECURE` after a challenge),
//! `AUTH` (only `AUTH SECURE CHALLENGE` works: there is no admin password). Anything else:
//! `-Command not supported`.
//!
//! **On disk** (§1.5 layout, the stand-in's own binary formats, documented in `store.rs`):
//! `<index>/.lockfile`, `<index>/<ns>/zdb-namespace`, `<index>/<ns>/i0..iN` (mutable: records in
//! older files are flagged in place, which puts them on the dirty list), `<data>/.lockfile`,
//! `<data>/<ns>/d0..dN` (append-only). `iN`/`dN` are the active files; their numbers move together.
//!
//! Concurrency mirrors zdb's single thread: one global mutex is held around every command and
//! while any blocking hook runs, so a slow hook stalls every client.

#[path = "zdb_standin/commands.rs"]
mod commands;
#[path = "zdb_standin/hooks.rs"]
mod hooks;
#[path = "zdb_standin/store.rs"]
mod store;

use commands::{Server, Session, Settings, NAMESPACE_DEFAULT, NETWORK_RX, NETWORK_TX};
use hooks::Hooks;
use nix::sys::signal::{SigSet, Signal};
use qsfs::zdb::resp::Reply;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::process::exit;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::thread;
use std::time::Duration;
use store::{Mode, Options};

const BANNER: &str = "[*] 0-db engine (stand-in), v2.0.7-standin";

/// The server, once the namespaces are loaded.
static SERVER: OnceLock<Mutex<Server>> = OnceLock::new();
/// Hook path and instance id, for a signal that arrives before the server exists.
static EARLY_HOOK: OnceLock<(Option<String>, String)> = OnceLock::new();

fn server() -> MutexGuard<'static, Server> {
    // A panicking client thread must not take the server down with it.
    SERVER
        .get()
        .expect("server initialised")
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn fatal(message: &str) -> ! {
    eprintln!("[-] {message}");
    exit(1)
}

/// Long options and whether they take an argument.
const OPTIONS: &[(&str, bool)] = &[
    ("data", true),
    ("index", true),
    ("mode", true),
    ("datasize", true),
    ("listen", true),
    ("port", true),
    ("socket", true),
    ("dualnet", false),
    ("hook", true),
    ("admin", true),
    ("maxsize", true),
    ("protect", false),
    ("verbose", false),
    ("dump", false),
    ("sync", false),
    ("synctime", true),
    ("secure", false),
    ("background", false),
    ("logfile", true),
    ("rotate", true),
    ("version", false),
    ("help", false),
];

fn usage() -> ! {
    println!("{BANNER}\n");
    println!("Usage: zdb-standin [options]");
    println!("  --data <dir>       data files directory (default ./zdb-data)");
    println!("  --index <dir>      index files directory (default ./zdb-index)");
    println!("  --datasize <size>  data file split size, suffix k/M/G/T (default 256M)");
    println!("  --mode <mode>      user or seq (default: mixed, per namespace)");
    println!("  --listen <addr>    TCP listen address (default ::)");
    println!("  --port <port>      TCP port (default 9900)");
    println!("  --socket <path>    unix socket (replaces TCP unless --dualnet)");
    println!("  --dualnet          unix socket and TCP together");
    println!("  --hook <file>      hook executable");
    println!("  --maxsize <bytes>  size limit of the default namespace");
    println!("  --sync             fsync every write");
    println!("  --synctime <secs>  fsync at most every <secs> seconds");
    println!("  --secure           fsync before a jump");
    println!("  --rotate <secs>    jump to new files after <secs> seconds when updated");
    println!("  --background       fork after the ready hook");
    println!("  --logfile <file>   stdout/stderr of --background");
    println!("  --version, --help");
    exit(1)
}

/// `strtoul` then an optional `k`, `M`, `G` or `T` (powers of 1024).
fn parse_size(text: &str) -> u64 {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let value = text[..digits]
        .parse::<u64>()
        .unwrap_or(if digits > 0 { u64::MAX } else { 0 });
    let multiplier: u64 = match text[digits..].chars().next() {
        Some('k') => 1 << 10,
        Some('M') => 1 << 20,
        Some('G') => 1 << 30,
        Some('T') => 1 << 40,
        _ => 1,
    };
    value.saturating_mul(multiplier)
}

fn parse_args() -> Settings {
    let mut settings = Settings {
        data_root: "./zdb-data".into(),
        index_root: "./zdb-index".into(),
        datasize: 256 << 20,
        mode: None,
        hook: None,
        socket: None,
        listen: "::".into(),
        port: 9900,
        dualnet: false,
        maxsize: 0,
        rotate: 0,
        background: false,
        logfile: None,
        options: Options {
            sync: false,
            synctime: 0,
            secure: false,
        },
    };
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string()
                .unwrap_or_else(|a| fatal(&format!("argument {a:?} is not UTF-8")))
        })
        .collect();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty())
        else {
            continue; // getopt leaves non-options alone; zdbd ignores them
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        let matches: Vec<&(&str, bool)> = match OPTIONS.iter().find(|(o, _)| *o == name) {
            Some(exact) => vec![exact],
            None => OPTIONS
                .iter()
                .filter(|(o, _)| o.starts_with(name))
                .collect(),
        };
        let (option, takes_value) = match matches.as_slice() {
            [one] => **one,
            [] => {
                eprintln!("zdb-standin: unrecognized option '{arg}'");
                exit(1)
            }
            _ => {
                eprintln!("zdb-standin: option '{arg}' is ambiguous");
                exit(1)
            }
        };
        let value = if takes_value {
            match inline {
                Some(value) => value,
                None if i < args.len() => {
                    i += 1;
                    args[i - 1].clone()
                }
                None => {
                    eprintln!("zdb-standin: option '--{option}' requires an argument");
                    exit(1)
                }
            }
        } else {
            if inline.is_some() {
                eprintln!("zdb-standin: option '--{option}' doesn't allow an argument");
                exit(1)
            }
            String::new()
        };
        let number = || commands::atoll(value.as_bytes());
        match option {
            "data" => settings.data_root = value,
            "index" => settings.index_root = value,
            "mode" => {
                settings.mode = Some(match value.as_str() {
                    "user" => Mode::User,
                    "seq" => Mode::Seq,
                    "direct" => {
                        eprintln!("[!] mode 'direct' is deprecated, using 'seq'");
                        Mode::Seq
                    }
                    other => fatal(&format!("unsupported mode '{other}'")),
                })
            }
            "datasize" => {
                let size = parse_size(&value);
                if !(512 << 10..4 << 30).contains(&size) {
                    fatal("datasize: must be at least 512 KB and less than 4 GB");
                }
                settings.datasize = size;
            }
            "listen" => settings.listen = value,
            // atoi, then the 16 bits htons keeps
            "port" => settings.port = number() as u16,
            "socket" => settings.socket = Some(value),
            "dualnet" => settings.dualnet = true,
            "hook" => settings.hook = Some(value),
            "maxsize" => settings.maxsize = number() as u64,
            "sync" => settings.options.sync = true,
            "synctime" => settings.options.synctime = number().max(0) as u64,
            "secure" => settings.options.secure = true,
            "rotate" => settings.rotate = number().max(0) as u64,
            "background" => settings.background = true,
            "logfile" => settings.logfile = Some(value),
            "verbose" => {}
            "version" => {
                println!("{BANNER}");
                exit(0)
            }
            "help" => usage(),
            other => fatal(&format!("--{other} is not implemented by this stand-in")),
        }
    }
    settings
}

/// Lets hooks inherit the fd, as 0-db's fds (opened without `O_CLOEXEC`) are.
fn inheritable(fd: &impl AsRawFd) {
    // SAFETY: F_SETFD on an fd we own; no memory is involved.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0);
    }
}

/// `flock(LOCK_EX|LOCK_NB)` on `<root>/.lockfile`.
fn lock_root(root: &str) -> File {
    let path = format!("{root}/.lockfile");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| fatal(&format!("{path}: {e}")));
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == ErrorKind::WouldBlock {
            fatal(&format!(
                "an instance of zdb is already using this directory ({root})"
            ));
        }
        fatal(&format!("{path}: flock: {e}"));
    }
    inheritable(&file);
    file
}

/// SIGINT/SIGTERM: the `close` hook, `namespace-closing` for each namespace, exit 128+signal.
/// SIGSEGV (sent by `kill`: the stand-in does not crash by itself): the `crash` hook (not
/// waited for) instead of `close`, then the same, exit 139.
/// Like 0-db's signal handler this does not wait for a blocking hook that is running: it
/// closes from the published namespace state instead.
fn shutdown(signal: Signal) -> ! {
    let crashed = signal == Signal::SIGSEGV;
    if crashed {
        println!("[+] signal: crashed, trying to clean");
    } else {
        println!("[+] signal: request cleaning");
    }
    let hooks = || {
        EARLY_HOOK
            .get()
            .map(|(path, id)| Hooks::new(path.clone(), id.clone()))
    };
    match SERVER.get() {
        Some(mutex) => loop {
            match mutex.try_lock() {
                Ok(mut server) => break server.stop(crashed),
                Err(TryLockError::Poisoned(poisoned)) => break poisoned.into_inner().stop(crashed),
                Err(TryLockError::WouldBlock) if hooks::BLOCKING.load(Ordering::SeqCst) => {
                    if let Some(mut hooks) = hooks() {
                        Server::stop_without_lock(&mut hooks, crashed);
                    }
                    break;
                }
                // a command is running: it is short
                Err(TryLockError::WouldBlock) => thread::sleep(Duration::from_millis(2)),
            }
        },
        None => {
            // Before the namespaces exist (during `namespaces-init`) zdb 2.0.7 runs `close`,
            // then its emergency flush walks a namespace list not yet allocated: SIGSEGV, whose
            // handler fires `crash` (not waited for) and flushes again, which faults inside the
            // handler: the process dies by SIGSEGV (no exit code).
            if let Some(mut hooks) = hooks() {
                if !crashed {
                    hooks.run_wait("close", &[]);
                }
                hooks.run_async("crash", &[]);
            }
            println!("[-] fatal: segmentation fault");
            let _ = std::io::stdout().flush();
            crash()
        }
    }
    let _ = std::io::stdout().flush();
    exit(128 + signal as i32)
}

/// Dies by SIGSEGV, as zdb does after its SIGSEGV handler ran.
fn crash() -> ! {
    // SAFETY: restoring the default action and raising a signal touch no memory of ours.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGSEGV);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(libc::SIGSEGV);
    }
    // raise returns only if the signal could not be delivered
    exit(139)
}

fn spawn_signal_thread(signals: SigSet) {
    thread::spawn(move || loop {
        if let Ok(signal) = signals.wait() {
            shutdown(signal);
        }
    });
}

/// The largest bulk string zdb 2.0.7 reads: 8 MiB.
const MAX_PAYLOAD: i64 = 8 << 20;

/// What the front of a client's buffer holds, as zdb 2.0.7's request reader sees it.
enum Request {
    /// A whole request: its arguments and the bytes it took.
    Whole(Vec<Vec<u8>>, usize),
    /// Not all there yet (a negative bulk length also waits for more, as zdb does).
    Incomplete,
    /// An error reply; the bytes stay in the buffer, so every later read answers it again.
    Keep(&'static str),
    /// An error reply, then the connection is closed.
    Close(&'static str),
}

/// `<digits>\r\n` at `at`: the number (atoi-like) and the offset after the line.
fn number_line(buf: &[u8], at: usize) -> Option<(i64, usize)> {
    let end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let text = std::str::from_utf8(&buf[at..end]).unwrap_or("");
    let digits = text
        .char_indices()
        .take_while(|(i, c)| c.is_ascii_digit() || (*i == 0 && *c == '-'))
        .count();
    Some((text[..digits].parse().unwrap_or(0), end + 2))
}

fn read_request(buf: &[u8]) -> Request {
    match buf.first() {
        None => return Request::Incomplete,
        Some(b'*') => {}
        Some(_) => return Request::Close("Malformed request, array expected"),
    }
    let Some((count, mut at)) = number_line(buf, 1) else {
        return Request::Incomplete;
    };
    if count < 0 {
        return Request::Close("Internal memory error");
    }
    if count == 0 {
        return Request::Keep("Missing arguments");
    }
    let mut argv = Vec::with_capacity(count.min(64) as usize);
    for _ in 0..count {
        match buf.get(at) {
            None => return Request::Incomplete,
            Some(b'$') => {}
            Some(_) => return Request::Keep("Malformed query string"),
        }
        let Some((length, start)) = number_line(buf, at + 1) else {
            return Request::Incomplete;
        };
        if length > MAX_PAYLOAD {
            return Request::Close("Payload too big");
        }
        if length < 0 {
            return Request::Incomplete;
        }
        let end = start + length as usize;
        if buf.len() < end + 2 {
            return Request::Incomplete;
        }
        argv.push(buf[start..end].to_vec());
        at = end + 2;
    }
    Request::Whole(argv, at)
}

fn send<S: Write>(stream: &mut S, reply: &Reply) -> bool {
    let mut out = Vec::new();
    reply.encode(&mut out);
    // Counted before it is sent, so a client that reads INFO right after a reply sees it.
    NETWORK_TX.fetch_add(out.len() as u64, Ordering::Relaxed);
    stream.write_all(&out).is_ok()
}

/// Serves one client: requests are arrays of bulk strings; anything else gets zdb's error
/// replies (see [`read_request`]).
fn serve<S: Read + Write>(mut stream: S) {
    let mut session = Session::new();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        loop {
            let (argv, used) = match read_request(&buf) {
                Request::Whole(argv, used) => (argv, used),
                Request::Incomplete => break,
                Request::Keep(message) => {
                    if !send(&mut stream, &Reply::Error(message.to_string())) {
                        return;
                    }
                    break;
                }
                Request::Close(message) => {
                    send(&mut stream, &Reply::Error(message.to_string()));
                    return;
                }
            };
            buf.drain(..used);
            let (reply, close) = server().execute(&mut session, &argv);
            if !send(&mut stream, &reply) || close {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                NETWORK_RX.fetch_add(n as u64, Ordering::Relaxed);
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn accept_loop<S, I>(incoming: I) -> !
where
    S: Read + Write + Send + 'static,
    I: Iterator<Item = std::io::Result<S>>,
{
    for stream in incoming {
        match stream {
            Ok(stream) => {
                server().clients += 1;
                thread::spawn(move || serve(stream));
            }
            Err(e) => {
                eprintln!("[-] accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    unreachable!("incoming() never ends")
}

fn main() {
    let settings = parse_args();
    println!("{BANNER}");

    // Signals are taken by one thread with sigwait; every thread inherits this mask (hook
    // children get a clean one from std::process).
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGSEGV);
    signals
        .thread_block()
        .unwrap_or_else(|e| fatal(&format!("sigprocmask: {e}")));
    let instance_id = settings.instance_id();
    let _ = EARLY_HOOK.set((settings.hook.clone(), instance_id.clone()));
    spawn_signal_thread(signals);

    // zdb_open: roots, same-directory check, locks
    for root in [&settings.data_root, &settings.index_root] {
        fs::create_dir_all(root).unwrap_or_else(|e| fatal(&format!("{root}: {e}")));
    }
    let data_real =
        fs::canonicalize(&settings.data_root).unwrap_or_else(|e| fatal(&format!("data: {e}")));
    let index_real =
        fs::canonicalize(&settings.index_root).unwrap_or_else(|e| fatal(&format!("index: {e}")));
    if data_real == index_real {
        fatal("index and data directories cannot be the same");
    }
    let locks = [
        lock_root(&settings.index_root),
        lock_root(&settings.data_root),
    ];

    // namespaces_init
    let mut hooks = Hooks::new(settings.hook.clone(), instance_id.clone());
    hooks.run_wait(
        "namespaces-init",
        &[settings.index_root.clone(), settings.data_root.clone()],
    );
    let mut state = Server::new(settings.clone(), hooks);
    let mut default = state.load(NAMESPACE_DEFAULT).unwrap_or_else(|e| {
        fatal(&format!(
            "could not load or create default namespace, this is fatal: {e}"
        ))
    });
    if settings.maxsize > 0 {
        default.maxsize = settings.maxsize;
    }
    state.namespaces.push(default);
    let names: Vec<String> = fs::read_dir(&settings.index_root)
        .unwrap_or_else(|e| fatal(&format!("opendir: {e}")))
        .filter_map(Result::ok)
        .filter(|d| d.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|d| d.file_name().into_string().ok())
        .filter(|name| name != "." && name != ".." && name != NAMESPACE_DEFAULT)
        .collect();
    // In readdir order, as zdb loads them (so NSLIST lists them in that order).
    for name in names {
        match state.load(&name) {
            Ok(ns) => state.namespaces.push(ns),
            Err(e) => eprintln!("[-] namespace: {name}: not loaded: {e}"),
        }
    }
    if SERVER.set(Mutex::new(state)).is_err() {
        fatal("server initialised twice");
    }

    // redis_listen: bind and listen; connections queue in the backlog until after `ready`.
    let unix = settings.socket.as_ref().map(|path| {
        let _ = fs::remove_file(path);
        let listener =
            UnixListener::bind(path).unwrap_or_else(|e| fatal(&format!("listen: {path}: {e}")));
        inheritable(&listener);
        println!("[+] listening on: {path} (unix socket)");
        listener
    });
    let tcp = (settings.socket.is_none() || settings.dualnet).then(|| {
        let addresses = (settings.listen.as_str(), settings.port)
            .to_socket_addrs()
            .unwrap_or_else(|e| fatal(&format!("listen: {}: {e}", settings.listen)));
        let listener =
            TcpListener::bind(addresses.collect::<Vec<_>>().as_slice()).unwrap_or_else(|e| {
                fatal(&format!(
                    "listen: {}:{}: {e}",
                    settings.listen, settings.port
                ))
            });
        inheritable(&listener);
        println!("[+] listening on: {}:{}", settings.listen, settings.port);
        listener
    });

    // The ready hook runs without the server lock, so a signal is handled meanwhile.
    let ready = {
        let mut hooks = Hooks::new(settings.hook.clone(), instance_id);
        let status = hooks.run_wait("ready", &[]);
        server().hooks.adopt(hooks); // HOOKS lists it
        status
    };
    if ready.is_some_and(|status| status != 0) {
        // zdb 2.0.7 returns from redis_listen and tears down: `namespace-closing` for every
        // namespace (not waited for, no `close` hook), then exit 0.
        eprintln!("[-] hook: ready: not ready, stopping");
        server().close_namespaces();
        let _ = std::io::stdout().flush();
        exit(0);
    }

    if settings.background {
        // SAFETY: the only other thread waits in sigwait and holds no lock.
        match unsafe { libc::fork() } {
            -1 => fatal(&format!("fork: {}", std::io::Error::last_os_error())),
            0 => {
                if let Some(logfile) = &settings.logfile {
                    let log =
                        File::create(logfile).unwrap_or_else(|e| fatal(&format!("{logfile}: {e}")));
                    // SAFETY: dup2 onto stdout and stderr.
                    unsafe {
                        libc::dup2(log.as_raw_fd(), 1);
                        libc::dup2(log.as_raw_fd(), 2);
                    }
                }
                spawn_signal_thread(signals);
            }
            _ => exit(0),
        }
    }

    println!("[+] ready, serving");
    thread::spawn(|| loop {
        thread::sleep(Duration::from_millis(200));
        server().tick();
    });
    let mut threads = Vec::new();
    if let Some(listener) = unix {
        threads.push(thread::spawn(move || accept_loop(listener.incoming())));
    }
    if let Some(listener) = tcp {
        threads.push(thread::spawn(move || accept_loop(listener.incoming())));
    }
    for thread in threads {
        let _ = thread.join();
    }
    drop(locks);
}
