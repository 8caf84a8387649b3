//! The connection: endpoints, timeouts, request and reply.

use super::resp::{self, Reply};
use super::{Info, NsInfo, ServerError, ZdbError};
use crate::config::Secret;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Where a 0-db listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket: `/run/qsfs/zdb.sock` or `unix:///run/qsfs/zdb.sock`.
    Unix(PathBuf),
    /// TCP: `10.0.0.1:9900` or `[2a02::1]:9900` (IP literals only, as zstor requires).
    Tcp(SocketAddr),
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(path.into()));
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(s.into()));
        }
        let addr = s.strip_prefix("tcp://").unwrap_or(s);
        addr.parse().map(Endpoint::Tcp).map_err(|_| {
            format!("`{s}` is neither a unix socket path nor an IP address with a port (such as 10.0.0.1:9900 or [2a02::1]:9900)")
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }

    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s
                .set_read_timeout(Some(timeout))
                .and_then(|()| s.set_write_timeout(Some(timeout))),
            Stream::Tcp(s) => s
                .set_read_timeout(Some(timeout))
                .and_then(|()| s.set_write_timeout(Some(timeout))),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// One connection to a 0-db.
pub struct Client {
    stream: Stream,
    endpoint: String,
    io_timeout: Duration,
    /// When the connection's whole life ends, if it is bounded ([`Client::connect_within`]).
    deadline: Option<Instant>,
    buf: Vec<u8>,
}

impl Client {
    /// Connects, waiting at most `timeout`; every later read and write also waits at most
    /// `timeout`.
    pub fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Client, ZdbError> {
        let name = endpoint.to_string();
        let connect_error = |source| ZdbError::Connect {
            endpoint: name.clone(),
            source,
        };
        let stream = match endpoint {
            Endpoint::Unix(path) => {
                Stream::Unix(connect_unix(path, timeout).map_err(connect_error)?)
            }
            Endpoint::Tcp(addr) => {
                let s = TcpStream::connect_timeout(addr, timeout).map_err(connect_error)?;
                s.set_nodelay(true).map_err(connect_error)?;
                Stream::Tcp(s)
            }
        };
        stream.set_timeouts(timeout).map_err(connect_error)?;
        Ok(Client {
            stream,
            endpoint: name,
            io_timeout: timeout,
            deadline: None,
            buf: Vec::new(),
        })
    }

    /// Connects for a conversation that ends within `timeout` as a whole: a server that
    /// trickles its replies, a byte at a time, times out too.
    pub fn connect_within(endpoint: &Endpoint, timeout: Duration) -> Result<Client, ZdbError> {
        let deadline = Instant::now() + timeout;
        let mut client = Client::connect(endpoint, timeout)?;
        client.deadline = Some(deadline);
        Ok(client)
    }

    /// Before each read and write: what is left of the deadline bounds it.
    fn arm(&mut self) -> Result<(), ZdbError> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.io_error(ErrorKind::TimedOut.into()));
        }
        self.stream
            .set_timeouts(left.min(self.io_timeout))
            .map_err(|e| self.io_error(e))
    }

    /// Sends one command and reads its reply. An error reply becomes [`ZdbError::Server`].
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply, ZdbError> {
        let request = resp::encode_command(args);
        self.arm()?;
        self.stream
            .io()
            .write_all(&request)
            .map_err(|e| self.io_error(e))?;
        loop {
            let parsed = resp::parse(&self.buf).map_err(|source| ZdbError::Protocol {
                endpoint: self.endpoint.clone(),
                source,
            })?;
            if let Some((reply, used)) = parsed {
                self.buf.drain(..used);
                return match reply {
                    Reply::Error(message) => {
                        Err(ZdbError::Server(ServerError::from_message(&message)))
                    }
                    reply => Ok(reply),
                };
            }
            let mut chunk = [0u8; 16 * 1024];
            self.arm()?;
            let n = loop {
                match self.stream.io().read(&mut chunk) {
                    // A stopped and resumed process can see EINTR even without a handler.
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    other => break other,
                }
            }
            .map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(self.io_error(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "connection closed by zdb",
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn io_error(&self, source: std::io::Error) -> ZdbError {
        match source.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => ZdbError::Timeout {
                endpoint: self.endpoint.clone(),
                seconds: self.io_timeout.as_secs_f64(),
            },
            _ => ZdbError::Io {
                endpoint: self.endpoint.clone(),
                source,
            },
        }
    }

    fn expect_ok(&mut self, args: &[&[u8]]) -> Result<(), ZdbError> {
        match self.command(args)? {
            Reply::Status(s) if s == "OK" => Ok(()),
            other => Err(unexpected(args, &other)),
        }
    }

    fn bulk_text(&mut self, args: &[&[u8]]) -> Result<String, ZdbError> {
        match self.command(args)? {
            Reply::Bulk(data) => Ok(String::from_utf8_lossy(&data).into_owned()),
            other => Err(unexpected(args, &other)),
        }
    }

    /// `PING`: answers only once zdb has finished starting (its `ready` hook returned).
    pub fn ping(&mut self) -> Result<(), ZdbError> {
        match self.command(&[b"PING"])? {
            Reply::Status(s) if s == "PONG" => Ok(()),
            other => Err(unexpected(&[b"PING"], &other)),
        }
    }

    /// `INFO`
    pub fn info(&mut self) -> Result<Info, ZdbError> {
        Ok(Info::parse(&self.bulk_text(&[b"INFO"])?)?)
    }

    /// `NSINFO <namespace>`
    pub fn nsinfo(&mut self, namespace: &str) -> Result<NsInfo, ZdbError> {
        Ok(NsInfo::parse(
            &self.bulk_text(&[b"NSINFO", namespace.as_bytes()])?,
        )?)
    }

    /// `NSLIST`
    pub fn nslist(&mut self) -> Result<Vec<String>, ZdbError> {
        match self.command(&[b"NSLIST"])? {
            Reply::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Reply::Bulk(name) => Ok(String::from_utf8_lossy(&name).into_owned()),
                    other => Err(unexpected(&[b"NSLIST"], &other)),
                })
                .collect(),
            other => Err(unexpected(&[b"NSLIST"], &other)),
        }
    }

    /// `SELECT <namespace>`; with a password, by 0-db's challenge so the password never goes
    /// on the wire: `AUTH SECURE CHALLENGE` answers a nonce, then
    /// `SELECT <namespace> SECURE <secure_hash(nonce, password)>`. A refused hash is
    /// [`ZdbError::WrongPassword`].
    ///
    /// 0-db 2.0.7 (`zdbd/commands_auth.c`, `commands_namespace.c`, `libzdb/security.c`): the
    /// nonce is 16 lowercase hex digits of `getentropy`, kept per connection until the next
    /// challenge (SELECT does not use it up); the hash is compared exactly (lowercase); a
    /// namespace without a password takes any hash; a private one with a password refuses a
    /// bare SELECT (`Namespace protected and private`). The challenge works without `--admin`.
    /// Who records a nonce and its hash can still test guesses offline (one SHA-1 each), so
    /// backend passwords must be long and random; the link itself is neither encrypted nor
    /// authenticated.
    pub fn select(&mut self, namespace: &str, password: Option<&Secret>) -> Result<(), ZdbError> {
        let Some(password) = password else {
            return self.expect_ok(&[b"SELECT", namespace.as_bytes()]);
        };
        let challenge: &[&[u8]] = &[b"AUTH", b"SECURE", b"CHALLENGE"];
        let nonce = match self.command(challenge)? {
            Reply::Status(nonce) if !nonce.is_empty() => nonce,
            other => return Err(unexpected(challenge, &other)),
        };
        let hash = secure_hash(&nonce, password);
        match self.expect_ok(&[b"SELECT", namespace.as_bytes(), b"SECURE", hash.as_bytes()]) {
            Err(ZdbError::Server(ServerError::AccessDenied(_))) => Err(ZdbError::WrongPassword {
                endpoint: self.endpoint.clone(),
                namespace: namespace.to_string(),
            }),
            other => other,
        }
    }

    /// `GET <key>`: the value, or `None` when the key is not set.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ZdbError> {
        match self.command(&[b"GET", key])? {
            Reply::Bulk(value) => Ok(Some(value)),
            Reply::Nil => Ok(None),
            other => Err(unexpected(&[b"GET"], &other)),
        }
    }

    /// `NSNEW <namespace>` (admin).
    pub fn nsnew(&mut self, namespace: &str) -> Result<(), ZdbError> {
        self.expect_ok(&[b"NSNEW", namespace.as_bytes()])
    }

    /// `NSSET <namespace> <property> <value>` (admin).
    pub fn nsset(&mut self, namespace: &str, property: &str, value: &str) -> Result<(), ZdbError> {
        self.expect_ok(&[
            b"NSSET",
            namespace.as_bytes(),
            property.as_bytes(),
            value.as_bytes(),
        ])
    }
}

/// The answer to 0-db's challenge `nonce` for `password`: `sha1hex("<nonce>:<password>")`,
/// lowercase (0-db's `zdb_hash_password`).
pub fn secure_hash(nonce: &str, password: &Secret) -> String {
    use sha1::Digest;
    let mut sha1 = sha1::Sha1::new();
    sha1.update(nonce.as_bytes());
    sha1.update(b":");
    sha1.update(password.expose().as_bytes());
    sha1.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Describes an unexpected reply without echoing arguments (they may hold a password).
fn unexpected(args: &[&[u8]], reply: &Reply) -> ZdbError {
    let command = args
        .first()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default();
    let detail = match reply {
        Reply::Status(s) => format!("status `{s}`"),
        Reply::Error(s) => format!("error `{s}`"),
        Reply::Integer(i) => format!("integer {i}"),
        Reply::Bulk(data) => format!("bulk string of {} bytes", data.len()),
        Reply::Nil => "nil".to_string(),
        Reply::Array(items) => format!("array of {} items", items.len()),
    };
    ZdbError::UnexpectedReply { command, detail }
}

/// Connects a unix stream socket without blocking past `timeout` (a full listen backlog makes
/// a plain connect wait).
fn connect_unix(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use nix::errno::Errno;
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;

    let deadline = Instant::now() + timeout;
    let addr = UnixAddr::new(path)?;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(Errno::EAGAIN) => {
                return Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    "listen backlog full",
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    #[test]
    fn secure_hash_is_sha1_of_nonce_colon_password() {
        // A nonce the real zdb 2.0.7 gave and the hash it accepted for the password `pw`.
        assert_eq!(
            secure_hash("6cd334277eea01ca", &Secret::new("pw")),
            "a41fce604ee8380f38b99ced6d55ca9073ec13a4"
        );
        assert_eq!(
            secure_hash("0123456789abcdef", &Secret::new("backend-password")),
            "8ac94bfcf6cf591a4f583079746e71b0d7ff749b"
        );
    }

    /// A server that answers each request of one connection with the next of `replies` and
    /// hands back every byte it received.
    fn serve_script(
        replies: &'static [&'static [u8]],
    ) -> (
        tempfile::TempDir,
        Endpoint,
        std::thread::JoinHandle<Vec<u8>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zdb.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut received = Vec::new();
            for reply in replies {
                let start = received.len();
                while resp::parse(&received[start..]).unwrap().is_none() {
                    reader.read_until(b'\n', &mut received).unwrap();
                }
                (&stream).write_all(reply).unwrap();
            }
            received
        });
        (dir, Endpoint::Unix(path), server)
    }

    #[test]
    fn select_with_a_password_answers_the_challenge() {
        let (_dir, endpoint, server) = serve_script(&[b"+0123456789abcdef\r\n", b"+OK\r\n"]);
        let mut client = Client::connect(&endpoint, Duration::from_secs(2)).unwrap();
        client
            .select("qsfs", Some(&Secret::new("backend-password")))
            .unwrap();
        drop(client);
        let received = server.join().unwrap();
        let mut expected = resp::encode_command(&[b"AUTH", b"SECURE", b"CHALLENGE"]);
        expected.extend(resp::encode_command(&[
            b"SELECT",
            b"qsfs",
            b"SECURE",
            b"8ac94bfcf6cf591a4f583079746e71b0d7ff749b",
        ]));
        assert_eq!(received, expected);
    }

    #[test]
    fn a_refused_hash_is_a_wrong_password_naming_the_namespace() {
        let (_dir, endpoint, _server) =
            serve_script(&[b"+0123456789abcdef\r\n", b"-Access denied\r\n"]);
        let mut client = Client::connect(&endpoint, Duration::from_secs(2)).unwrap();
        let err = client
            .select("qsfs", Some(&Secret::new("backend-password")))
            .unwrap_err();
        assert!(
            matches!(&err, ZdbError::WrongPassword { namespace, .. } if namespace == "qsfs"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("wrong password for namespace qsfs"),
            "{message}"
        );
        assert!(!message.contains("backend-password"), "{message}");
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            "/run/z.sock".parse(),
            Ok(Endpoint::Unix("/run/z.sock".into()))
        );
        assert_eq!(
            "unix:///run/z.sock".parse(),
            Ok(Endpoint::Unix("/run/z.sock".into()))
        );
        assert_eq!(
            "10.1.2.3:9900".parse(),
            Ok(Endpoint::Tcp("10.1.2.3:9900".parse().unwrap()))
        );
        assert_eq!(
            "[2a02::1]:9900".parse(),
            Ok(Endpoint::Tcp("[2a02::1]:9900".parse().unwrap()))
        );
        assert!("zdb.example.org:9900".parse::<Endpoint>().is_err());
        assert!("2a02::1:9900".parse::<Endpoint>().is_err());
        assert_eq!(Endpoint::Unix("/x".into()).to_string(), "unix:///x");
    }

    /// A server that reads one line-ish request and answers `reply` (or nothing).
    fn serve_once(reply: Option<&'static [u8]>) -> (tempfile::TempDir, Endpoint) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zdb.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            match reply {
                Some(reply) => (&stream).write_all(reply).unwrap(),
                None => std::thread::sleep(Duration::from_secs(2)),
            }
        });
        (dir, Endpoint::Unix(path))
    }

    #[test]
    fn server_errors_are_typed() {
        let (_dir, endpoint) = serve_once(Some(b"-Namespace not found\r\n"));
        let mut client = Client::connect(&endpoint, Duration::from_secs(2)).unwrap();
        match client.nsinfo("nope") {
            Err(ZdbError::Server(ServerError::NamespaceNotFound)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_silent_server_times_out() {
        let (_dir, endpoint) = serve_once(None);
        let mut client = Client::connect(&endpoint, Duration::from_millis(100)).unwrap();
        let started = Instant::now();
        assert!(matches!(client.ping(), Err(ZdbError::Timeout { .. })));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let (_dir, endpoint) = serve_once(Some(b"?garbage\r\n"));
        let mut client = Client::connect(&endpoint, Duration::from_secs(2)).unwrap();
        assert!(matches!(client.ping(), Err(ZdbError::Protocol { .. })));
    }

    #[test]
    fn connect_errors_name_the_endpoint() {
        let err = Client::connect(
            &Endpoint::Unix("/nonexistent/zdb.sock".into()),
            Duration::from_secs(1),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("unix:///nonexistent/zdb.sock"),
            "{err}"
        );
    }
}
