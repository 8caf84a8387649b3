//! A client of the zstor daemon's unix socket (`zstor monitor` with `socket` in its config), for
//! the one command its CLI cannot send: a rebuild from metadata we give it.
//!
//! The protocol is zstor 0.5.0-rc.1's (`zstor/src/main.rs` and `actors/zstor.rs` upstream): a
//! request is a u16 big-endian length and bincode 1 of `ZstorCommand`, the reply a u16
//! big-endian length and bincode of `ZstorResponse`. `ZstorCommand::Rebuild` is its third
//! variant and holds `file`, `key` and `metadata`; given metadata, the daemon rebuilds from it
//! instead of loading the stored one, encodes again every shard it cannot load (or whose
//! checksum does not match) onto a backend of its current config, and saves the new metadata
//! under the file's key. The metadata must list every shard, in index order: a shorter list
//! aborts the daemon. Checked against the real daemon by `tests/integration/zstor_metadata.rs`.

use super::metadata::StoredMeta;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The variant index of `Rebuild` in `ZstorCommand` (`Store`, `Retrieve`, `Rebuild`, `Check`).
const REBUILD_VARIANT: u32 = 2;

/// `ZstorCommand::Rebuild`'s message.
#[derive(Serialize)]
struct Rebuild<'a> {
    file: Option<&'a Path>,
    key: Option<&'a str>,
    metadata: Option<&'a StoredMeta>,
}

/// `ZstorResponse`.
#[derive(Deserialize)]
enum Response {
    Success,
    Err(String),
    Checksum([u8; 16]),
}

/// Asks the daemon on `socket` to rebuild `file` from `metadata` and waits for its answer, at
/// most `timeout` for each read and write. The error is the daemon's message or what failed on
/// the socket; it may quote the metadata's secrets, so callers hide them.
pub(super) fn rebuild_from(
    socket: &Path,
    file: &Path,
    metadata: &StoredMeta,
    timeout: Duration,
) -> Result<(), String> {
    let message = Rebuild {
        file: Some(file),
        key: None,
        metadata: Some(metadata),
    };
    let body = bincode::serialize(&(REBUILD_VARIANT, message)).map_err(|e| e.to_string())?;
    let length = u16::try_from(body.len())
        .map_err(|_| format!("a rebuild request of {} bytes is too long", body.len()))?;
    let socket_error = |what: &str, e: std::io::Error| format!("{what} {}: {e}", socket.display());
    let mut stream = UnixStream::connect(socket).map_err(|e| socket_error("connect to", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| socket_error("set a timeout on", e))?;
    stream
        .write_all(&length.to_be_bytes())
        .and_then(|()| stream.write_all(&body))
        .map_err(|e| socket_error("write to", e))?;
    let mut length = [0; 2];
    stream
        .read_exact(&mut length)
        .map_err(|e| socket_error("read the reply from", e))?;
    let mut reply = vec![0; usize::from(u16::from_be_bytes(length))];
    stream
        .read_exact(&mut reply)
        .map_err(|e| socket_error("read the reply from", e))?;
    match bincode::deserialize(&reply) {
        Ok(Response::Success) => Ok(()),
        Ok(Response::Err(message)) => Err(message),
        Ok(Response::Checksum(checksum)) => Err(format!(
            "the daemon answered a rebuild with a checksum ({})",
            super::Checksum(checksum)
        )),
        Err(e) => Err(format!("unreadable reply from {}: {e}", socket.display())),
    }
}
