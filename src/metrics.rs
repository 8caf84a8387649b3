//! Serving Prometheus metrics: a minimal HTTP/1.x responder for `GET /metrics` on a TCP address
//! or a unix socket, answering with text the owner replaces whenever it has new numbers.

use std::fmt;
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

/// The warning to log once at start when metrics are served on `address` and anyone on the
/// network can read them: any TCP address but a loopback one (`0.0.0.0` and `[::]` included).
/// `None` for loopback and unix sockets. The endpoint has no authentication, so such an
/// address is taken only because the operator wrote it.
pub fn exposure_warning(address: &Address) -> Option<String> {
    match address {
        Address::Tcp(addr) if !addr.ip().to_canonical().is_loopback() => Some(format!(
            "metrics on {addr} are unauthenticated and reachable from the network: anyone who \
             can connect reads them; use a loopback address or a unix socket unless that is meant"
        )),
        Address::Tcp(_) | Address::Unix(_) => None,
    }
}

/// What a metric family is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A count that only grows; its name ends in `_total`.
    Counter,
    /// A count whose name (kept from upstream zstor, `fs_*`) has no `_total`, which the text
    /// format requires of a counter: exposed as `untyped`.
    Untyped,
}

/// A sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A whole number.
    Int(u64),
    /// A whole number that may be negative.
    Signed(i64),
    /// A float.
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Signed(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// A sample's labels: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
    samples: Vec<(Labels, Value)>,
}

/// The metrics of one scrape, built from a snapshot of the owner's numbers and encoded by
/// `prometheus-client` in the Prometheus text format (0.0.4), families in the order added.
#[derive(Debug, Default)]
pub struct Exposition(Vec<Family>);

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Exposition::default()
    }

    /// Adds a family with its one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Into<Value>) {
        self.family(name, kind, help, vec![(Vec::new(), value.into())]);
    }

    /// Adds a family with its labelled samples.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str, samples: Vec<(Labels, Value)>) {
        // The encoder appends `_total` to a counter's name.
        let name = match kind {
            Kind::Counter => name.strip_suffix("_total").unwrap_or(name),
            Kind::Gauge | Kind::Untyped => name,
        };
        self.0.push(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            samples,
        });
    }

    /// The text format.
    pub fn render(self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("writing to a String does not fail");
        text
    }
}

impl prometheus_client::collector::Collector for Exposition {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        for family in &self.0 {
            let metric_type = match family.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
                Kind::Untyped => MetricType::Unknown,
            };
            let mut metric =
                encoder.encode_descriptor(&family.name, &family.help, None, metric_type)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                match (family.kind, *value) {
                    (Kind::Counter, Value::Int(v)) => ConstCounter::new(v).encode(sample)?,
                    (Kind::Counter, Value::Float(v)) => ConstCounter::new(v).encode(sample)?,
                    // The value's encoding does not depend on the kind; the name's does.
                    (_, Value::Signed(v)) => ConstGauge::new(v).encode(sample)?,
                    (_, Value::Int(v)) => ConstGauge::new(v).encode(sample)?,
                    (_, Value::Float(v)) => ConstGauge::new(v).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

/// The metrics text, shared between its owner (which replaces it) and the responder.
pub type Shared = Arc<Mutex<String>>;

/// Binds `address` and answers `GET /metrics` with the current `text` until the task is
/// aborted. A stale unix socket file is replaced. Logs [`exposure_warning`] when there is one.
pub async fn spawn(
    address: &Address,
    text: Shared,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if let Some(warning) = exposure_warning(address) {
        tracing::warn!("{warning}");
    }
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

    #[test]
    fn only_a_network_reachable_tcp_address_warns() {
        for quiet in [
            "127.0.0.1:9101",
            "127.8.9.10:9101",
            "[::1]:9101",
            "[::ffff:127.0.0.1]:9101",
            "unix:/run/qsfs/m.sock",
        ] {
            let address: Address = quiet.parse().unwrap();
            assert_eq!(exposure_warning(&address), None, "{quiet}");
        }
        for loud in [
            "0.0.0.0:9101",
            "[::]:9101",
            "10.0.0.5:9101",
            "[2a02::1]:9101",
        ] {
            let address: Address = loud.parse().unwrap();
            let warning = exposure_warning(&address).unwrap_or_else(|| panic!("{loud}"));
            assert!(
                warning.contains(loud)
                    && warning.contains("unauthenticated")
                    && warning.contains("reachable from the network"),
                "{warning}"
            );
        }
    }

    /// Every metrics address the shipped configs and the site templates show (in `"…"`,
    /// commented or not) is loopback or a unix socket.
    #[test]
    fn shipped_examples_are_loopback_or_unix() {
        let files = [
            (
                "etc/monitor_config.toml",
                include_str!("../etc/monitor_config.toml"),
            ),
            ("etc/qsfs.toml", include_str!("../etc/qsfs.toml")),
            (
                "image/site.example.toml",
                include_str!("../image/site.example.toml"),
            ),
            (
                "image/demo-site.toml",
                include_str!("../image/demo-site.toml"),
            ),
        ];
        let mut seen = 0;
        for (name, text) in files {
            let lines = text
                .lines()
                .filter(|l| l.to_lowercase().contains("metrics"));
            for quoted in lines.flat_map(|l| l.split('"').skip(1).step_by(2)) {
                if let Ok(address) = quoted.parse::<Address>() {
                    seen += 1;
                    assert_eq!(exposure_warning(&address), None, "{name}: {quoted}");
                }
            }
        }
        assert!(seen >= 4, "{seen} examples found");
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
