//! The three 0-db connections (meta, data, temp) and zdbfs's startup sequence against them
//! (`upstream-contracts.md` §2.2), with zdbfs's error mapping (§2.3).

use qsfs::zdb::resp::Reply;
use qsfs::zdb::{Client, Endpoint, Info, NsInfo, ServerError, ZdbError};
use std::net::ToSocketAddrs;
use std::time::Duration;

pub const META: &str = "zdbfs-meta";
pub const DATA: &str = "zdbfs-data";
pub const TEMP: &str = "zdbfs-temp";
/// v0.1.11 always uses this temp password, whatever `ts=` says.
pub const TEMP_PASSWORD: &str = "hello";

/// Connect and I/O timeout of a connection. hiredis (upstream) has none; a zdb that does not
/// answer for this long (a stuck `missing-data` hook) gives EIO instead of a hang.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Where one of the three namespaces lives.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub unix: Option<String>,
    pub namespace: &'static str,
    pub password: Option<String>,
}

impl Target {
    /// The endpoints to try: the unix socket when given (preferred, as zdbfs), else every
    /// address `host:port` resolves to.
    fn endpoints(&self) -> Result<Vec<Endpoint>, String> {
        if let Some(path) = &self.unix {
            return Ok(vec![Endpoint::Unix(path.into())]);
        }
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}:{}: {e}", self.host, self.port))?;
        Ok(addrs.map(Endpoint::Tcp).collect())
    }

    pub fn describe(&self) -> String {
        match &self.unix {
            Some(path) => format!("unix://{path}"),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// A failed zdb operation, as the filesystem sees it.
#[derive(Debug)]
pub enum Error {
    /// `No space left on this namespace` / `Namespace definitely full`: ENOSPC.
    NoSpace,
    /// `Namespace is temporarily locked`: SET and DEL retry, anything else gets EIO.
    Locked,
    /// Any other error answered by zdb: EIO.
    Server(String),
    /// The connection failed (it is dropped, so the next call reconnects): EIO.
    Io(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NoSpace => f.write_str("no space left on the namespace"),
            Error::Locked => f.write_str("namespace is locked"),
            Error::Server(message) | Error::Io(message) => f.write_str(message),
        }
    }
}

/// Bumped whenever a connection fails: zdbfs then reconnects all its connections.
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One connection, bound to one namespace.
pub struct Conn {
    pub target: Target,
    client: Option<Client>,
    /// The [`GENERATION`] this connection was (re)connected in.
    generation: u64,
}

impl Conn {
    /// Connects (no SELECT yet).
    pub fn connect(target: Target) -> Result<Conn, String> {
        let client = open(&target)?;
        Ok(Conn {
            target,
            client: Some(client),
            generation: GENERATION.load(std::sync::atomic::Ordering::SeqCst),
        })
    }

    /// A command during startup: no reconnection, errors as text.
    pub fn startup(&mut self, args: &[&[u8]]) -> Result<Reply, ZdbError> {
        match self.client.as_mut() {
            Some(client) => client.command(args),
            None => Err(ZdbError::Io {
                endpoint: self.target.describe(),
                source: std::io::Error::other("not connected"),
            }),
        }
    }

    /// `SELECT <namespace> [password]`.
    pub fn select(&mut self) -> Result<(), ZdbError> {
        let namespace = self.target.namespace.as_bytes().to_vec();
        let reply = match self.target.password.clone() {
            Some(password) => self.startup(&[b"SELECT", &namespace, password.as_bytes()])?,
            None => self.startup(&[b"SELECT", &namespace])?,
        };
        match reply {
            Reply::Status(s) if s == "OK" => Ok(()),
            other => Err(ZdbError::UnexpectedReply {
                command: "SELECT".into(),
                detail: format!("{other:?}"),
            }),
        }
    }

    /// Connects again and re-selects; the connection stays down when that fails.
    fn reconnect(&mut self) -> Result<(), Error> {
        self.client = None;
        self.generation = GENERATION.load(std::sync::atomic::Ordering::SeqCst);
        self.client = Some(open(&self.target).map_err(Error::Io)?);
        if let Err(e) = self.select() {
            self.client = None;
            return Err(Error::Io(format!(
                "{}: reconnect: SELECT {}: {e}",
                self.target.describe(),
                self.target.namespace
            )));
        }
        eprintln!(
            "[+] zdb: {}: reconnected ({})",
            self.target.namespace,
            self.target.describe()
        );
        Ok(())
    }

    /// Marks every connection for reconnection (after a failure of this one) and reconnects
    /// this one.
    fn failed(&mut self) {
        GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = self.reconnect() {
            eprintln!("[-] zdb: {}: {e}", self.target.namespace);
        }
    }

    /// Sends a command. As zdbfs 0.1.11: a connection-level failure fails this call with EIO
    /// and reconnects every connection *afterwards*; a connection whose reconnection failed
    /// fails its next call too (and tries again), so the first request after zdb comes back
    /// still gets EIO.
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply, Error> {
        if self.client.is_none() {
            self.failed();
            return Err(Error::Io(format!(
                "{}: not connected",
                self.target.describe()
            )));
        }
        if self.generation < GENERATION.load(std::sync::atomic::Ordering::SeqCst) {
            // another connection failed: zdbfs reconnected them all then
            self.reconnect()?;
        }
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| Error::Io("no client".into()))?;
        match client.command(args) {
            Ok(reply) => Ok(reply),
            Err(ZdbError::Server(ServerError::NoSpace)) => Err(Error::NoSpace),
            Err(ZdbError::Server(ServerError::Locked)) => Err(Error::Locked),
            Err(ZdbError::Server(e)) => Err(Error::Server(e.to_string())),
            Err(e) => {
                eprintln!("[-] zdb: {}: {e}", self.target.namespace);
                self.failed();
                Err(Error::Io(e.to_string()))
            }
        }
    }

    /// Like [`Conn::command`], but while zdb answers "Namespace is temporarily locked" the
    /// command is retried every 100 ms without end (zdbfs does this for SET and DEL).
    fn command_locked_retry(&mut self, args: &[&[u8]]) -> Result<Reply, Error> {
        let mut warned = false;
        loop {
            match self.command(args) {
                Err(Error::Locked) => {
                    if !warned {
                        eprintln!(
                            "[-] zdb: {}: namespace locked, retrying every 100 ms",
                            self.target.namespace
                        );
                        warned = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// `GET <key>`: the value, or `None` when the key does not exist.
    pub fn get(&mut self, key: u64) -> Result<Option<Vec<u8>>, Error> {
        match self.command(&[b"GET", &key.to_le_bytes()])? {
            Reply::Bulk(value) => Ok(Some(value)),
            Reply::Nil => Ok(None),
            other => Err(Error::Io(format!("GET: unexpected reply {other:?}"))),
        }
    }

    /// `SET <key> <value>`: a new sequential key when `key` is `None`, else an update of `key`.
    /// Returns the key.
    pub fn set(&mut self, key: Option<u64>, value: &[u8]) -> Result<u64, Error> {
        let key_bytes = key.map(u64::to_le_bytes);
        let key_arg: &[u8] = match &key_bytes {
            Some(bytes) => bytes,
            None => b"",
        };
        match self.command_locked_retry(&[b"SET", key_arg, value])? {
            Reply::Bulk(bytes) if bytes.len() == 8 => {
                let mut id = [0u8; 8];
                id.copy_from_slice(&bytes);
                Ok(u64::from_le_bytes(id))
            }
            // an update with an unchanged value
            Reply::Nil if key.is_some() => Ok(key.unwrap_or_default()),
            other => Err(Error::Io(format!("SET: unexpected reply {other:?}"))),
        }
    }

    /// `DEL <key>`; a key that is already gone is fine.
    pub fn del(&mut self, key: u64) -> Result<(), Error> {
        match self.command_locked_retry(&[b"DEL", &key.to_le_bytes()]) {
            Ok(_) => Ok(()),
            Err(Error::Server(message)) if message == "Key not found" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `DBSIZE`
    pub fn dbsize(&mut self) -> Result<u64, Error> {
        match self.command(&[b"DBSIZE"])? {
            Reply::Integer(n) => Ok(n.max(0) as u64),
            other => Err(Error::Io(format!("DBSIZE: unexpected reply {other:?}"))),
        }
    }

    /// `NSINFO <this namespace>`
    pub fn nsinfo(&mut self) -> Result<NsInfo, Error> {
        let namespace = self.target.namespace;
        match self.command(&[b"NSINFO", namespace.as_bytes()])? {
            Reply::Bulk(text) => NsInfo::parse(&String::from_utf8_lossy(&text))
                .map_err(|e| Error::Io(format!("NSINFO: {e}"))),
            other => Err(Error::Io(format!("NSINFO: unexpected reply {other:?}"))),
        }
    }
}

fn open(target: &Target) -> Result<Client, String> {
    let mut last = format!("{}: no address", target.describe());
    for endpoint in target.endpoints()? {
        match Client::connect(&endpoint, TIMEOUT) {
            Ok(client) => return Ok(client),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Startup (§2.2): connect the three namespaces' zdbs, check `INFO` (`sequential_key_size: 8`),
/// create the namespaces with `autons` the way v0.1.11 does, then `SELECT` each. `Err` is the
/// message to print before exiting 1.
pub fn init(targets: [Target; 3], autons: bool) -> Result<[Conn; 3], String> {
    let [meta, data, temp] = targets;
    let mut conns = Vec::with_capacity(3);
    for target in [meta, data, temp] {
        let describe = target.describe();
        let conn =
            Conn::connect(target).map_err(|e| format!("zdb: cannot connect to {describe}: {e}"))?;
        conns.push(conn);
    }
    if autons {
        // v0.1.11: the first failing NSNEW stops the sequence and its failure is ignored, so
        // on a restart (meta exists) nothing is created.
        let steps: [(&str, &[(&str, &str)]); 3] = [
            (META, &[("mode", "seq")]),
            (DATA, &[("mode", "seq")]),
            (
                TEMP,
                &[
                    ("mode", "seq"),
                    ("public", "0"),
                    ("password", TEMP_PASSWORD),
                ],
            ),
        ];
        let conn = &mut conns[0];
        'steps: for (namespace, settings) in steps {
            println!("[+] autons: creating namespace: {namespace}");
            if let Err(e) = conn.startup(&[b"NSNEW", namespace.as_bytes()]) {
                println!("[-] autons: {namespace}: {e}, stopping namespace creation");
                break 'steps;
            }
            for (property, value) in settings {
                if let Err(e) = conn.startup(&[
                    b"NSSET",
                    namespace.as_bytes(),
                    property.as_bytes(),
                    value.as_bytes(),
                ]) {
                    println!("[-] autons: {namespace}: NSSET {property}: {e}");
                }
            }
        }
    }
    for conn in &mut conns {
        if let Err(e) = conn.select() {
            return Err(format!(
                "zdb: {}: cannot select namespace {}: {e}",
                conn.target.describe(),
                conn.target.namespace
            ));
        }
    }
    // zdbfs checks the server after the SELECTs
    for conn in &mut conns {
        let info = match conn.startup(&[b"INFO"]) {
            Ok(Reply::Bulk(text)) => Info::parse(&String::from_utf8_lossy(&text)).ok(),
            _ => None,
        };
        if info.and_then(|i| i.sequential_key_size) != Some(8) {
            return Err("incompatible version of 0-db: v2 with 64 bits keys required".into());
        }
    }
    let mut conns = conns.into_iter();
    match (conns.next(), conns.next(), conns.next()) {
        (Some(meta), Some(data), Some(temp)) => Ok([meta, data, temp]),
        _ => Err("internal error: three connections expected".into()),
    }
}
