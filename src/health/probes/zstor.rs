//! The zstor daemon: ready when it answers a command on its unix socket. The probe asks it to
//! check a path that is never stored ([`PROBE_PATH`]), the cheapest command of its protocol
//! ([`crate::zstor::socket`]): any answer, "not stored" included, shows the daemon takes
//! commands. Connecting alone is not enough: zstor logs an error for every connection that
//! sends nothing, and a daemon stuck on one command still accepts connections.
//!
//! * ok: an answer within the timeout;
//! * degraded, busy: no answer while the monitor rebuilds through the daemon (it runs one
//!   command at a time, and one rebuild may take longer than the timeout);
//! * failed, a restart may help: no socket, refused, or no answer within the timeout.

use super::human;
use crate::health::{Outcome, State};
use crate::monitor::status::RebuildStatus;
use crate::zstor::socket::{check_request, parse_response};
use serde::Deserialize;
use std::path::Path;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The path the probe checks: in a directory that does not exist, so it is never stored.
pub const PROBE_PATH: &str = "/nonexistent/qsfs-health-probe";

/// `[health.zstor]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZstorProbeSettings {
    /// Longest the daemon may take to answer (`timeout_ms`, milliseconds). Default 2000.
    #[serde(rename = "timeout_ms", deserialize_with = "super::timeout_ms")]
    pub timeout: Duration,
    /// The zstor daemon's unix socket. Default [`crate::layout::ZSTOR_SOCKET`].
    #[serde(deserialize_with = "crate::config::absolute_path")]
    pub socket: PathBuf,
}

impl Default for ZstorProbeSettings {
    fn default() -> Self {
        ZstorProbeSettings {
            timeout: Duration::from_millis(2000),
            socket: crate::layout::ZSTOR_SOCKET.into(),
        }
    }
}

/// Asks the daemon on `socket` to check [`PROBE_PATH`]. `rebuilding` is the monitor's rebuild
/// through the daemon, while one runs.
pub async fn probe(
    socket: &Path,
    timeout: Duration,
    rebuilding: Option<&RebuildStatus>,
) -> Outcome {
    let started = Instant::now();
    match tokio::time::timeout(timeout, ask(socket)).await {
        Ok(Ok(())) => Outcome::ok(format!(
            "{} answers ({})",
            socket.display(),
            human(started.elapsed())
        )),
        Ok(Err(e)) => Outcome::unresponsive(format!("{}: {e}", socket.display())),
        Err(_) => match rebuilding {
            Some(r) => Outcome::new(
                State::Degraded,
                format!(
                    "busy: {} answers none within {} while it rebuilds (file {} of {})",
                    socket.display(),
                    human(timeout),
                    r.done + 1,
                    r.total
                ),
            ),
            None => Outcome::unresponsive(format!(
                "{} answers none within {}",
                socket.display(),
                human(timeout)
            )),
        },
    }
}

/// One check of [`PROBE_PATH`]; any reply zstor's protocol can carry is an answer.
async fn ask(socket: &Path) -> Result<(), String> {
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(&check_request(Path::new(PROBE_PATH)))
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut length = [0; 2];
    stream
        .read_exact(&mut length)
        .await
        .map_err(|e| format!("read the reply: {e}"))?;
    let mut reply = vec![0; usize::from(u16::from_be_bytes(length))];
    stream
        .read_exact(&mut reply)
        .await
        .map_err(|e| format!("read the reply: {e}"))?;
    parse_response(&reply).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A daemon on `socket` that reads one request and then answers `reply` (framed), or
    /// nothing when `None`.
    fn daemon(socket: &Path, reply: Option<Vec<u8>>) -> tokio::task::JoinHandle<Vec<u8>> {
        let listener = UnixListener::bind(socket).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut length = [0; 2];
            stream.read_exact(&mut length).await.unwrap();
            let mut request = vec![0; usize::from(u16::from_be_bytes(length))];
            stream.read_exact(&mut request).await.unwrap();
            match reply {
                Some(body) => {
                    let mut framed = (body.len() as u16).to_be_bytes().to_vec();
                    framed.extend(body);
                    stream.write_all(&framed).await.unwrap();
                }
                None => tokio::time::sleep(Duration::from_secs(60)).await,
            }
            request
        })
    }

    #[tokio::test]
    async fn a_daemon_that_answers_the_check_is_ok_even_when_the_path_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("zstor.sock");
        let mut not_stored = vec![1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0];
        not_stored.extend(b"no!");
        let server = daemon(&socket, Some(not_stored));
        let outcome = probe(&socket, Duration::from_secs(2), None).await;
        assert_eq!(outcome.state, State::Ok, "{}", outcome.reason);
        assert_eq!(
            server.await.unwrap(),
            check_request(Path::new(PROBE_PATH))[2..]
        );
    }

    #[tokio::test]
    async fn a_daemon_that_accepts_but_never_answers_is_unresponsive() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("zstor.sock");
        let _server = daemon(&socket, None);
        let outcome = probe(&socket, Duration::from_millis(100), None).await;
        assert_eq!(outcome.state, State::Failed);
        assert!(outcome.restart_may_help);
        assert!(
            outcome.reason.contains("answers none within"),
            "{}",
            outcome.reason
        );
    }

    #[tokio::test]
    async fn a_daemon_that_does_not_answer_during_a_rebuild_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("zstor.sock");
        let _server = daemon(&socket, None);
        let rebuild = RebuildStatus { done: 2, total: 5 };
        let outcome = probe(&socket, Duration::from_millis(100), Some(&rebuild)).await;
        assert_eq!(outcome.state, State::Degraded);
        assert!(!outcome.restart_may_help);
        assert!(outcome.reason.contains("busy:"), "{}", outcome.reason);
        assert!(outcome.reason.contains("file 3 of 5"), "{}", outcome.reason);
    }

    #[tokio::test]
    async fn no_socket_or_a_garbled_reply_is_unresponsive() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("zstor.sock");
        let outcome = probe(&socket, Duration::from_secs(1), None).await;
        assert_eq!(outcome.state, State::Failed);
        assert!(outcome.reason.contains("connect"), "{}", outcome.reason);
        let _server = daemon(&socket, Some(vec![9]));
        let outcome = probe(&socket, Duration::from_secs(1), None).await;
        assert_eq!(outcome.state, State::Failed);
        assert!(outcome.reason.contains("unreadable"), "{}", outcome.reason);
    }
}
