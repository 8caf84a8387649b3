//! The zstor daemon: ready when its unix socket accepts a connection (upstream zinit used
//! `nc -z -U`). Nothing is sent.
//!
//! * ok: the connection is accepted;
//! * failed, a restart may help: no socket, refused, or no accept within the timeout.

use super::human;
use crate::health::Outcome;
use serde::Deserialize;
use std::path::Path;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `[health.zstor]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZstorProbeSettings {
    /// Longest a connect may take (`timeout_ms`, milliseconds). Default 1000.
    #[serde(rename = "timeout_ms", deserialize_with = "super::timeout_ms")]
    pub timeout: Duration,
    /// The zstor daemon's unix socket. Default [`crate::layout::ZSTOR_SOCKET`].
    #[serde(deserialize_with = "crate::config::absolute_path")]
    pub socket: PathBuf,
}

impl Default for ZstorProbeSettings {
    fn default() -> Self {
        ZstorProbeSettings {
            timeout: Duration::from_millis(1000),
            socket: crate::layout::ZSTOR_SOCKET.into(),
        }
    }
}

/// Connects to `socket` and closes the connection again.
pub async fn probe(socket: &Path, timeout: Duration) -> Outcome {
    let started = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(socket)).await {
        Ok(Ok(_stream)) => Outcome::ok(format!(
            "{} accepts connections ({})",
            socket.display(),
            human(started.elapsed())
        )),
        Ok(Err(e)) => Outcome::unresponsive(format!("connect {}: {e}", socket.display())),
        Err(_) => Outcome::unresponsive(format!(
            "connect {}: no answer within {}",
            socket.display(),
            human(timeout)
        )),
    }
}
