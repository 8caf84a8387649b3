//! The server state and the RESP commands, with 0-db's replies and error texts
//! (`zdbd/commands*.c`). Every client is admin (there is no `--admin`).

use crate::hooks::{now, Hooks};
use crate::store::{Lock, Mode, Namespace, Options, ReadError, CLOSING, DISK, MAX_KEY_LENGTH};
use qsfs::zdb::resp::Reply;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes received and sent on client connections.
pub static NETWORK_RX: AtomicU64 = AtomicU64::new(0);
pub static NETWORK_TX: AtomicU64 = AtomicU64::new(0);

pub const NAMESPACE_DEFAULT: &str = "default";
const REVISION: &str = "v2.0.7-standin";

/// The parsed command line.
#[derive(Clone)]
pub struct Settings {
    pub data_root: String,
    pub index_root: String,
    pub datasize: u64,
    pub mode: Option<Mode>,
    pub hook: Option<String>,
    pub socket: Option<String>,
    pub listen: String,
    pub port: u16,
    pub dualnet: bool,
    pub maxsize: u64,
    pub rotate: u64,
    pub background: bool,
    pub logfile: Option<String>,
    pub options: Options,
}

impl Settings {
    /// The id every hook gets as `$2`.
    pub fn instance_id(&self) -> String {
        match &self.socket {
            Some(socket) => format!("unix://{socket}"),
            None => format!("tcp://{}:{}", self.listen, self.port),
        }
    }
}

/// A client connection's state.
pub struct Session {
    pub namespace: String,
    pub writable: bool,
    /// The last `AUTH SECURE CHALLENGE` nonce; `SELECT … SECURE` does not use it up.
    pub nonce: Option<String>,
}

impl Session {
    pub fn new() -> Self {
        Session {
            namespace: NAMESPACE_DEFAULT.to_string(),
            writable: true,
            nonce: None,
        }
    }
}

pub struct Server {
    pub settings: Settings,
    pub hooks: Hooks,
    pub namespaces: Vec<Namespace>,
    pub boot_time: i64,
    pub instance_id: u32,
    pub clients: u64,
    executed: u64,
    failed: u64,
}

fn error(message: &str) -> Reply {
    Reply::Error(message.to_string())
}

fn ok() -> Reply {
    Reply::Status("OK".to_string())
}

fn yes_no(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1024.0 * 1024.0))
}

/// C's `atoll`: optional blanks and sign, then digits; anything else ends the number.
pub fn atoll(bytes: &[u8]) -> i64 {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_start();
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut value: i64 = 0;
    for byte in digits.bytes().take_while(u8::is_ascii_digit) {
        value = value
            .saturating_mul(10)
            .saturating_add(i64::from(byte - b'0'));
    }
    if negative {
        -value
    } else {
        value
    }
}

/// statvfs `f_bsize * f_bavail`.
fn freespace(path: &str) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some((stat.block_size() as u64).saturating_mul(stat.blocks_available() as u64))
}

/// 0-db's `namespace_valid_name`.
fn valid_name(name: &str) -> bool {
    name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && name != NAMESPACE_DEFAULT
}

/// `command_args_validate`: exactly `expected` arguments (the command included), none empty
/// unless `empty_allowed`.
fn args_validate(argv: &[Vec<u8>], expected: usize, empty_allowed: bool) -> Result<(), Reply> {
    if argv.len() != expected {
        return Err(error("Unexpected arguments"));
    }
    if !empty_allowed && argv.iter().any(Vec::is_empty) {
        return Err(error("Invalid argument"));
    }
    Ok(())
}

/// The namespace name argument, at most 128 bytes.
fn namespace_arg(arg: &[u8]) -> Result<String, Reply> {
    if arg.len() > 128 {
        return Err(error("Namespace too long"));
    }
    Ok(String::from_utf8_lossy(arg).into_owned())
}

/// zdb's `strncasecmp(arg, word, len(arg))`: `arg` is any prefix of `word`, in any case (so
/// `SECUR`, and even an empty argument, count as `SECURE`).
fn prefix_of(arg: &[u8], word: &str) -> bool {
    word.len() >= arg.len() && word.as_bytes()[..arg.len()].eq_ignore_ascii_case(arg)
}

/// `zdb_challenge`: 8 bytes of `getentropy` as 16 lowercase hex digits.
fn challenge() -> Option<String> {
    let mut bytes = [0u8; 8];
    // SAFETY: getentropy writes at most `bytes.len()` (≤ 256) bytes into the buffer.
    let rc = unsafe { libc::getentropy(bytes.as_mut_ptr().cast(), bytes.len()) };
    (rc == 0).then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn frozen() -> Reply {
    error("Namespace is temporarily frozen (read-write disabled)")
}

fn locked() -> Reply {
    error("Namespace is temporarily locked (read-only)")
}

impl Server {
    pub fn new(settings: Settings, hooks: Hooks) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Server {
            settings,
            hooks,
            namespaces: Vec::new(),
            boot_time: now(),
            instance_id: nanos ^ std::process::id().rotate_left(16),
            clients: 0,
            executed: 0,
            failed: 0,
        }
    }

    /// Loads (or creates) a namespace from the roots.
    pub fn load(&self, name: &str) -> std::io::Result<Namespace> {
        let s = &self.settings;
        Namespace::load(&s.index_root, &s.data_root, name, s.mode, s.options)
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.namespaces.iter().position(|ns| ns.name == name)
    }

    /// SIGINT/SIGTERM: `close` (blocking), or for SIGSEGV `crash` (not waited for); then
    /// `namespace-closing` per namespace and a flush. The caller exits.
    pub fn stop(&mut self, crashed: bool) {
        if crashed {
            self.hooks.run_async("crash", &[]);
        } else {
            self.hooks.run_wait("close", &[]);
        }
        self.close_namespaces();
    }

    /// `namespace-closing` per namespace (not waited for) and a flush.
    pub fn close_namespaces(&mut self) {
        for ns in &mut self.namespaces {
            println!("[+] namespaces: flushing: {}", ns.name);
            let args = [
                ns.name.clone(),
                ns.index_path(ns.file_id),
                ns.data_path(ns.file_id),
                ns.dirty_list(),
            ];
            self.hooks.run_async("namespace-closing", &args);
            ns.flush();
        }
    }

    /// The same while another thread holds the server in a blocking hook: from [`CLOSING`]
    /// (no flush: what was written is in the page cache and survives the exit).
    pub fn stop_without_lock(hooks: &mut Hooks, crashed: bool) {
        if crashed {
            hooks.run_async("crash", &[]);
        } else {
            hooks.run_wait("close", &[]);
        }
        let closing = CLOSING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for args in closing {
            println!("[+] namespaces: closing: {}", args[0]);
            hooks.run_async("namespace-closing", &args);
        }
    }

    /// Housekeeping from the idle loop: reap hooks, `--rotate`.
    pub fn tick(&mut self) {
        self.hooks.reap();
        let rotate = self.settings.rotate;
        if rotate == 0 {
            return;
        }
        for ns in &mut self.namespaces {
            if ns.updated_since_jump && ns.last_jump.elapsed().as_secs() >= rotate {
                if let Err(e) = ns.jump(&mut self.hooks) {
                    eprintln!("[-] namespace: {}: rotation failed: {e}", ns.name);
                }
            }
        }
    }

    /// Runs one request. Returns the reply and whether to close the connection after it.
    pub fn execute(&mut self, session: &mut Session, argv: &[Vec<u8>]) -> (Reply, bool) {
        if self.find(&session.namespace).is_none() {
            return (
                error("Your active namespace is not available anymore (probably removed)."),
                true,
            );
        }
        let command = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
        let known = [
            "PING", "TIME", "INFO", "HOOKS", "INDEX", "SET", "SETX", "GET", "MGET", "DEL",
            "EXISTS", "CHECK", "LENGTH", "KEYTIME", "DBSIZE", "NSNEW", "NSDEL", "NSLIST", "NSSET",
            "NSINFO", "NSJUMP", "SELECT", "AUTH", "STOP",
        ];
        if !known.contains(&command.as_str()) {
            self.failed += 1;
            return (error("Command not supported"), false);
        }
        self.executed += 1;
        let reply = match command.as_str() {
            "PING" => Ok(Reply::Status("PONG".to_string())),
            // zdb release builds compile STOP out of reach
            "STOP" => Err(error("Unauthorized")),
            "TIME" => Ok(self.time()),
            "INFO" => Ok(self.info()),
            "HOOKS" => Ok(self.hooks_list()),
            "INDEX" => self.index(session, argv),
            "SET" | "SETX" => self.set(session, argv),
            "GET" => self.get(session, argv),
            "MGET" => self.mget(session, argv),
            "DEL" => self.del(session, argv),
            "EXISTS" | "LENGTH" | "KEYTIME" => self.lookup(session, argv, &command),
            "CHECK" => self.check(session, argv),
            "DBSIZE" => Ok(Reply::Integer(self.current(session).entries as i64)),
            "NSNEW" => self.nsnew(argv),
            "NSDEL" => self.nsdel(session, argv),
            "NSLIST" => Ok(Reply::Array(
                self.namespaces
                    .iter()
                    .map(|ns| Reply::Bulk(ns.name.clone().into_bytes()))
                    .collect(),
            )),
            "NSSET" => self.nsset(argv),
            "NSINFO" => self.nsinfo(argv),
            "NSJUMP" => self.nsjump(session),
            "AUTH" => auth(session, argv),
            _ => self.select(session, argv),
        };
        (reply.unwrap_or_else(|e| e), false)
    }

    fn current(&mut self, session: &Session) -> &mut Namespace {
        let index = self.find(&session.namespace).unwrap_or(0);
        &mut self.namespaces[index]
    }

    fn time(&self) -> Reply {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Reply::Array(vec![
            Reply::Bulk(now.as_secs().to_string().into_bytes()),
            Reply::Bulk(now.subsec_micros().to_string().into_bytes()),
        ])
    }

    fn info(&self) -> Reply {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut line = |key: &str, value: String| out.push_str(&format!("{key}: {value}\n"));
        line("# server\nserver_name", "0-db (zdb)".into());
        line("server_revision", REVISION.into());
        line("engine_revision", REVISION.into());
        line("instance_id", self.instance_id.to_string());
        line("boot_time", self.boot_time.to_string());
        line("uptime", (now() - self.boot_time).to_string());
        line("\n# clients\nclients_lifetime", self.clients.to_string());
        line("\n# internals\nsequential_key_size", "8".into());
        line("data_version", "3".into());
        line("index_version", "4".into());
        line("\n# stats\ncommands_executed", self.executed.to_string());
        line("commands_failed", self.failed.to_string());
        line("commands_unauthorized", "0".into());
        line(
            "index_disk_read_failed",
            load(&DISK.index_read_failed).to_string(),
        );
        line(
            "index_disk_write_failed",
            load(&DISK.index_write_failed).to_string(),
        );
        line(
            "data_disk_read_failed",
            load(&DISK.data_read_failed).to_string(),
        );
        line(
            "data_disk_write_failed",
            load(&DISK.data_write_failed).to_string(),
        );
        for (name, counter) in [
            ("index_disk_read", &DISK.index_read_bytes),
            ("index_disk_write", &DISK.index_write_bytes),
            ("data_disk_read", &DISK.data_read_bytes),
            ("data_disk_write", &DISK.data_write_bytes),
            ("network_rx", &NETWORK_RX),
            ("network_tx", &NETWORK_TX),
        ] {
            line(&format!("{name}_bytes"), load(counter).to_string());
            line(&format!("{name}_mb"), mb(load(counter)));
        }
        Reply::Bulk(out.into_bytes())
    }

    fn hooks_list(&mut self) -> Reply {
        let items = self
            .hooks
            .list()
            .iter()
            .map(|h| {
                Reply::Array(vec![
                    Reply::Bulk(h.event.clone().into_bytes()),
                    Reply::Array(
                        h.args
                            .iter()
                            .map(|a| Reply::Bulk(a.clone().into_bytes()))
                            .collect(),
                    ),
                    Reply::Integer(h.pid),
                    Reply::Integer(h.created),
                    Reply::Integer(h.finished),
                    Reply::Integer(h.status),
                ])
            })
            .collect();
        Reply::Array(items)
    }

    /// `INDEX DIRTY [RESET]`
    fn index(&mut self, session: &Session, argv: &[Vec<u8>]) -> Result<Reply, Reply> {
        if argv.len() < 2 {
            return Err(error("Missing arguments"));
        }
        if argv.iter().any(Vec::is_empty) {
            return Err(error("Invalid argument"));
        }
        if !argv[1].eq_ignore_ascii_case(b"DIRTY") {
            return Err(error("Unknown INDEX subcommand"));
        }
        let ns = self.current(session);
        if argv.len() == 3 {
            if argv[2].eq_ignore_ascii_case(b"RESET") {
                ns.dirty.clear();
                ns.publish();
                return Ok(ok());
            }
            return Err(error("Unknown INDEX DIRTY subcommand"));
        }
        Ok(Reply::Array(
            ns.dirty
                .iter()
                .map(|id| Reply::Integer(i64::from(*id)))
                .collect(),
        ))
    }

    fn set(&mut self, session: &Session, argv: &[Vec<u8>]) -> Result<Reply, Reply> {
        if argv.len() != 4 {
            args_validate(argv, 3, true)?;
        }
        let (key, value) = (&argv[1], &argv[2]);
        if key.len() > MAX_KEY_LENGTH {
            return Err(error("Key too large"));
        }
        if !session.writable {
            return Err(error("Namespace is in read-only mode"));
        }
        let datasize = self.settings.datasize;
        let index = self.find(&session.namespace).unwrap_or(0);
        let ns = &mut self.namespaces[index];
        match ns.lock {
            Lock::Frozen => return Err(frozen()),
            Lock::Locked => return Err(locked()),
            Lock::Unlocked => {}
        }
        let existing = if key.is_empty() { None } else { ns.get(key) };
        if existing.is_some() && ns.worm {
            return Err(error("Namespace is protected by worm mode"));
        }
        if ns.maxsize > 0 {
            let floating = existing.as_ref().map_or(0, |e| u64::from(e.length));
            if ns.datasize.saturating_add(value.len() as u64) > ns.maxsize.wrapping_add(floating) {
                return Err(error("No space left on this namespace"));
            }
        }
        // As 0-db: jump before writing when the value would take the data file past --datasize.
        if ns.data_offset + value.len() as u64 > datasize {
            if let Err(e) = ns.jump(&mut self.hooks) {
                eprintln!("[-] namespace: {}: jump failed: {e}", ns.name);
            }
        }
        let timestamp = if argv.len() == 4 {
            atoll(&argv[3]) as u64
        } else {
            now() as u64
        };
        let crc = crate::store::crc32(value);
        match ns.mode {
            Mode::User if key.is_empty() => return Err(error("Invalid argument, key needed")),
            Mode::User => {
                if existing.as_ref().is_some_and(|e| e.crc == crc) {
                    return Ok(Reply::Nil);
                }
            }
            Mode::Seq => {
                if !key.is_empty() && existing.is_none() {
                    return Err(error("Invalid key, only update authorized"));
                }
                if existing
                    .as_ref()
                    .is_some_and(|e| e.crc == crc && e.length as usize == value.len())
                {
                    return Ok(Reply::Nil);
                }
            }
        }
        match ns.set(key, value, timestamp, existing) {
            Ok(key) => Ok(Reply::Bulk(key)),
            Err(e) => {
                eprintln!("[-] namespace: {}: write failed: {e}", ns.name);
                Err(error("Cannot write data right now"))
            }
        }
    }

    /// `GET` of one key (also used by `MGET`).
    fn get_one(&mut self, session: &Session, key: &[u8]) -> Reply {
        let index = self.find(&session.namespace).unwrap_or(0);
        let ns = &mut self.namespaces[index];
        let Some(entry) = ns.get(key) else {
            return Reply::Nil;
        };
        match ns.read(&mut self.hooks, &entry) {
            Ok(value) => Reply::Bulk(value),
            Err(ReadError::Missing | ReadError::Io) => error("Internal Error"),
        }
    }

    fn get(&mut self, session: &Session, argv: &[Vec<u8>]) -> Result<Reply, Reply> {
        args_validate(argv, 2, false)?;
        if argv[1].len() > MAX_KEY_LENGTH {
            return Err(error("Invalid key"));
        }
        if self.current(session).lock == Lock::Frozen {
            return Err(frozen());
        }
        Ok(self.get_one(session, &argv[1]))
    }

    fn mget(&mut self, session: &Session, argv: &[Vec<u8>]) -> Result<Reply, Reply> {
        if argv.len() < 2 {
            return Err(error("Invalid arguments"));
        }
        if argv[1..].iter().any(|k| k.len() > MAX_KEY_LENGTH) {
            return Err(error("Invalid key"));
        }
        if self.current(session).lock == Lock::Frozen {
            return Err(frozen());
        }
        Ok(Reply::Array(
            argv[1..]
                .iter()
                .map(|key| self.get_one(session, key))
                .collect(),
        ))
    }

    fn del(&mut self, session: &Session, argv: &[Vec<u8>]) -> Result<Reply, Reply> {
        if argv.len() != 3 {
            args_validate(argv, 2, false)?;
        }
        let key = &argv[1];
        if key.len() > MAX_KEY_LENGTH {
            return Err(error("Invalid key"));
        }
        if !session.writable {
            return Err(error("Namespace is in read-only mode"));
        }
        let ns = self.current(session);
        match ns.lock {
            Lock::Frozen => return Err(frozen()),
            Lock::Locked => return Err(locked()),
            Lock::Unlocked => {}
        }
        let Some(entry) = ns.get(key) else {
            return Err(error("Key not found"));
        };
        if ns.worm {
            return Err(error("Cannot delete a key when namespace is in worm mode"));
        }
        let timestamp = if argv.len() == 3 {
            atoll(&argv[2]) as u64
        } else {
            now() as u64
        };
        match ns.delete(key, &entry, timestamp) {
            Ok(()) => Ok(ok()),
            Err(e) => {
                eprintln!("[-] namespace: {}: delete failed: {e}", ns.name);
                Err(error("Cannot delete key (index)"))
            }
        }
    }

    /// `EXISTS`, `LENGTH`, `KEYTIME`: answered from the index alone.
    fn lookup(
        &mut self,
        session: &Session,
        argv: &[Vec<u8>],
        command: &str,
    ) -> Result<Reply, Reply> {
        args_validate(argv, 2, false)?;
        if argv[1].len() > MAX_KEY_LENGTH {
            return Err(error("Invalid key"));
        }
        let ns = self.current(session);
        if ns.lock == Lock::Frozen {
            return Err(frozen());
        }
        let entry = ns.get(&argv[1]);
        Ok(match (command, entry) {
            ("EXISTS", entry) => Reply::Integer(i64::from(entry.is_some())),
            (_, None) => Reply::Nil,
            ("LENGTH", Some(entry)) => Reply::Integer(i64::from(entry.length)),
            (_, Some(entry)) => Reply::Integer(entry.timestamp as i64),
        })
    }

    fn check(&mut self, session: &Session, argv: &[Vec<u8>]) -> Result<Reply, Reply> {
        args_validate(argv, 2, false)?;
        if argv[1].len() > MAX_KEY_LENGTH {
            return Err(error("Invalid key"));
        }
        let index = self.find(&session.namespace).unwrap_or(0);
        let ns = &mut self.namespaces[index];
        if ns.lock == Lock::Frozen {
            return Err(frozen());
        }
        let Some(entry) = ns.get(&argv[1]) else {
            return Ok(Reply::Nil);
        };
        // 1: the CRC matches, 0: it does not, -1: the data cannot be read (a missing data
        // file that missing-data did not bring back), as zdb 2.0.7 answers.
        let status = match ns.read(&mut self.hooks, &entry) {
            Ok(value) => i64::from(crate::store::crc32(&value) == entry.crc),
            Err(_) => -1,
        };
        Ok(Reply::Integer(status))
    }

    fn nsnew(&mut self, argv: &[Vec<u8>]) -> Result<Reply, Reply> {
        args_validate(argv, 2, false)?;
        let name = namespace_arg(&argv[1])?;
        if !valid_name(&name) || std::str::from_utf8(&argv[1]).is_err() {
            return Err(error("This name is not allowed"));
        }
        if self.find(&name).is_some() {
            return Err(error("This namespace is not available"));
        }
        println!("[+] namespace: creating: {name}");
        match self.load(&name) {
            Ok(ns) => self.namespaces.push(ns),
            Err(e) => {
                eprintln!("[-] namespace: {name}: {e}");
                return Err(error("Could not create namespace"));
            }
        }
        self.hooks.run_async("namespace-created", &[name]);
        Ok(ok())
    }

    fn nsdel(&mut self, session: &Session, argv: &[Vec<u8>]) -> Result<Reply, Reply> {
        args_validate(argv, 2, false)?;
        let name = namespace_arg(&argv[1])?;
        if name == NAMESPACE_DEFAULT {
            return Err(error("Cannot remove default namespace"));
        }
        let Some(index) = self.find(&name) else {
            return Err(error("This namespace doesn't exists"));
        };
        if session.namespace == name {
            return Err(error("Cannot remove namespace you're currently using."));
        }
        println!("[+] namespace: removing: {name}");
        let ns = self.namespaces.remove(index);
        crate::store::unpublish(&name);
        if let Err(e) = ns.remove_files() {
            eprintln!("[-] namespace: {name}: {e}");
        }
        self.hooks.run_async("namespace-deleted", &[name]);
        Ok(ok())
    }

    fn nsset(&mut self, argv: &[Vec<u8>]) -> Result<Reply, Reply> {
        args_validate(argv, 4, false)?;
        let name = namespace_arg(&argv[1])?;
        if argv[3].len() > 63 {
            return Err(error("Invalid value"));
        }
        let property = String::from_utf8_lossy(&argv[2]).into_owned();
        let value = String::from_utf8_lossy(&argv[3]).into_owned();
        if name == NAMESPACE_DEFAULT && !["mode", "lock", "freeze"].contains(&property.as_str()) {
            return Err(error("Cannot update default namespace"));
        }
        let Some(index) = self.find(&name) else {
            return Err(error("Namespace not found"));
        };
        let single_mode = self.settings.mode.is_some();
        let ns = &mut self.namespaces[index];
        let flag = value.as_bytes().first() == Some(&b'1');
        match property.as_str() {
            "maxsize" => ns.maxsize = atoll(value.as_bytes()) as u64,
            "password" if value == "*" => ns.password = None,
            "password" => ns.password = Some(value),
            "public" => ns.public = flag,
            "worm" => ns.worm = flag,
            "lock" => ns.lock = if flag { Lock::Locked } else { Lock::Unlocked },
            "freeze" => ns.lock = if flag { Lock::Frozen } else { Lock::Unlocked },
            "mode" => {
                if single_mode {
                    return Err(error(
                        "This server instance is configured to use a single runtime mode",
                    ));
                }
                if !ns.is_fresh() {
                    return Err(error("Cannot change mode of used namespace"));
                }
                let mode = match value.as_str() {
                    "user" => Mode::User,
                    "seq" => Mode::Seq,
                    _ => return Err(error("Invalid property value (expected: user, seq)")),
                };
                if let Err(e) = ns.set_mode(mode) {
                    eprintln!("[-] namespace: {name}: {e}");
                }
            }
            _ => return Err(error("Invalid property")),
        }
        if let Err(e) = ns.commit() {
            eprintln!("[-] namespace: {name}: descriptor: {e}");
        }
        self.hooks.run_async("namespace-updated", &[name]);
        Ok(ok())
    }

    fn nsinfo(&mut self, argv: &[Vec<u8>]) -> Result<Reply, Reply> {
        args_validate(argv, 2, false)?;
        let name = namespace_arg(&argv[1])?;
        let Some(index) = self.find(&name) else {
            return Err(error("Namespace not found"));
        };
        let ns = &self.namespaces[index];
        let mut out = String::from("# namespace\n");
        let mut line = |key: &str, value: String| out.push_str(&format!("{key}: {value}\n"));
        line("name", ns.name.clone());
        line("entries", ns.entries.to_string());
        line("public", yes_no(ns.public).into());
        line("worm", yes_no(ns.worm).into());
        line("locked", yes_no(ns.lock != Lock::Unlocked).into());
        line("password", yes_no(ns.password.is_some()).into());
        line("data_size_bytes", ns.datasize.to_string());
        line("data_size_mb", mb(ns.datasize));
        line("data_limits_bytes", ns.maxsize.to_string());
        line("index_size_bytes", ns.index_bytes.to_string());
        line(
            "index_size_kb",
            format!("{:.2}", ns.index_bytes as f64 / 1024.0),
        );
        // 0-db prints the 32-bit next id byte-swapped: `0x%08x` of `bswap_32(nextid)`.
        line(
            "next_internal_id",
            // zdb 2.0.7 prints bswap_64 of the 64-bit id with "0x%08" PRIx64
            format!("0x{:08x}", ns.next_entry.swap_bytes()),
        );
        line("mode", ns.mode.name().into());
        line("stats_index_io_errors", ns.stats.index_errors.to_string());
        line(
            "stats_index_io_error_last",
            ns.stats.index_error_last.to_string(),
        );
        line("stats_index_faults", "0".into());
        line("stats_data_io_errors", ns.stats.data_errors.to_string());
        line(
            "stats_data_io_error_last",
            ns.stats.data_error_last.to_string(),
        );
        line("stats_data_faults", "0".into());
        if ns.maxsize > 0 {
            // size_t arithmetic, as 0-db: wraps when the data already exceeds the limit.
            line(
                "space_available",
                ns.maxsize.wrapping_sub(ns.datasize).to_string(),
            );
        }
        if let Some(free) = freespace(&ns.index_dir) {
            line("index_disk_freespace_bytes", free.to_string());
            line("index_disk_freespace_mb", mb(free));
        }
        if let Some(free) = freespace(&ns.data_dir) {
            line("data_disk_freespace_bytes", free.to_string());
            line("data_disk_freespace_mb", mb(free));
        }
        line("data_path", ns.data_dir.clone());
        line("data_active", ns.data_path(ns.file_id));
        line("index_path", ns.index_dir.clone());
        line("index_active", ns.index_path(ns.file_id));
        line("data_current_id", ns.file_id.to_string());
        line("data_current_offset", ns.data_offset.to_string());
        Ok(Reply::Bulk(out.into_bytes()))
    }

    fn nsjump(&mut self, session: &Session) -> Result<Reply, Reply> {
        let index = self.find(&session.namespace).unwrap_or(0);
        let ns = &mut self.namespaces[index];
        match ns.jump(&mut self.hooks) {
            Ok(()) => Ok(ok()),
            Err(e) => {
                eprintln!("[-] namespace: {}: jump failed: {e}", ns.name);
                Err(error("Internal Error"))
            }
        }
    }

    fn select(&mut self, session: &mut Session, argv: &[Vec<u8>]) -> Result<Reply, Reply> {
        if argv.len() < 2 {
            return Err(error("Invalid argument"));
        }
        let name = namespace_arg(&argv[1])?;
        let Some(index) = self.find(&name) else {
            return Err(error("Namespace not found"));
        };
        let ns = &self.namespaces[index];
        let mut writable = true;
        if let Some(password) = &ns.password {
            if argv.len() < 3 {
                if !ns.public {
                    return Err(error("Namespace protected and private"));
                }
                writable = false;
            } else if argv.len() > 4 {
                return Err(error("Too many arguments"));
            } else if argv.len() == 3 {
                if argv[2].len() > 255 {
                    return Err(error("Password too long"));
                }
                if argv[2] != password.as_bytes() {
                    return Err(error("Access denied"));
                }
            } else if !prefix_of(&argv[2], "SECURE") {
                return Err(error("Only SECURE extra method supported"));
            } else {
                let Some(nonce) = &session.nonce else {
                    return Err(error(
                        "No CHALLENGE requested, secure authentication not available",
                    ));
                };
                if argv[3].len() != 40 {
                    return Err(error("Invalid hash length"));
                }
                let expected = qsfs::zdb::secure_hash(nonce, &qsfs::config::Secret::new(password));
                if argv[3] != expected.as_bytes() {
                    return Err(error("Access denied"));
                }
            }
        }
        session.namespace = name;
        session.writable = writable;
        Ok(ok())
    }
}

/// `AUTH`, as zdb without `--admin` answers it (`zdbd/commands_auth.c`): only
/// `AUTH SECURE CHALLENGE` works (a nonce for `SELECT … SECURE`); logging in is disabled.
fn auth(session: &mut Session, argv: &[Vec<u8>]) -> Result<Reply, Reply> {
    match argv.len() {
        2 => Err(error("Authentication disabled")),
        3 if !prefix_of(&argv[1], "SECURE") => Err(error("Only SECURE extra method supported")),
        3 if prefix_of(&argv[2], "CHALLENGE") => {
            let nonce = challenge().ok_or_else(|| error("Internal generator error"))?;
            session.nonce = Some(nonce.clone());
            Ok(Reply::Status(nonce))
        }
        3 => Err(error("Authentication disabled")),
        _ => Err(error("Unexpected arguments")),
    }
}
