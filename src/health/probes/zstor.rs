//! The zstor daemon: ready when its unix socket accepts a connection (upstream zinit used
//! `nc -z -U`). Nothing is sent.
//!
//! * ok: the connection is accepted;
//! * failed, a restart may help: no socket, refused, or no accept within the timeout.

use super::human;
use crate::health::Outcome;
use std::path::Path;
use std::time::{Duration, Instant};

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
