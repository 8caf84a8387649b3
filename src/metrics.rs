//! Serving Prometheus metrics: a minimal HTTP/1.x responder for `GET /metrics` on a TCP address
//! or a unix socket, answering with text the owner replaces whenever it has new numbers.

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where a metrics endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP address such as `127.0.0.1:9101` or `[::1]:9101`.
    Tcp(std::net::SocketAddr),
    /// A unix socket, written `unix:/run/qsfs/monitor-metrics.sock`.
    Unix(PathBuf),
}

impl FromStr for Address {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            return if path.is_absolute() {
                Ok(Address::Unix(path))
            } else {
                Err(format!("`{text}`: the socket path must be absolute"))
            };
        }
        text.parse()
            .map(Address::Tcp)
            .map_err(|_| format!("`{text}` is neither an IP address with a port (127.0.0.1:9101) nor unix:/absolute/path"))
    }
}

/// Deserializes an optional [`Address`] of a config file; an empty string, like an absent
/// key, turns the metrics off.
pub fn optional_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Address>, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "{addr}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a metric family; its samples follow.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes a metric family with its one unlabelled sample.
pub fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The metrics text, shared between its owner (which replaces it) and the responder.
pub type Shared = Arc<Mutex<String>>;

/// Binds `address` and answers `GET /metrics` with the current `text` until the task is
/// aborted. A stale unix socket file is replaced.
pub async fn spawn(
    address: &Address,
    text: Shared,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    match address {
        Address::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            Ok(tokio::spawn(async move {
                loop {
                    if let Ok((stream, _)) = listener.accept().await {
                        tokio::spawn(answer(stream, text.clone()));
                    }
                }
            }))
        }
        Address::Unix(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path)?;
            Ok(tokio::spawn(async move {
                loop {
                    if let Ok((stream, _)) = listener.accept().await {
                        tokio::spawn(answer(stream, text.clone()));
                    }
                }
            }))
        }
    }
}

/// Answers one connection: reads the request head (at most 8 KiB, 5 s), writes one response
/// and closes.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, text: Shared) {
    let mut head = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body) = match (method, target) {
        ("GET", "/metrics") => (
            "200 OK",
            text.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "only /metrics is served here\n".to_string(),
        ),
        _ => ("405 Method Not Allowed", "only GET\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            "127.0.0.1:9101".parse(),
            Ok(Address::Tcp("127.0.0.1:9101".parse().unwrap()))
        );
        assert_eq!(
            "[::1]:9101".parse(),
            Ok(Address::Tcp("[::1]:9101".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/qsfs/m.sock".parse(),
            Ok(Address::Unix("/run/qsfs/m.sock".into()))
        );
        assert!("unix:relative".parse::<Address>().is_err());
        assert!("localhost:9101".parse::<Address>().is_err());
        assert_eq!(Address::Unix("/x".into()).to_string(), "unix:/x");
    }

    #[tokio::test]
    async fn answers_get_metrics_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let text: Shared = Arc::new(Mutex::new("qsfs_health_state 0\n".into()));
        let task = spawn(&Address::Unix(path.clone()), text).await.unwrap();
        let get = |request: &'static str| {
            let path = path.clone();
            async move {
                let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
                s.write_all(request.as_bytes()).await.unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nqsfs_health_state 0\n"), "{ok}");
        assert!(get("GET / HTTP/1.0\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.0\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
        task.abort();
    }
}
