//! A client of the zstor daemon's unix socket (`zstor monitor` with `socket` in its config), for
//! the one command its CLI cannot send (a rebuild from metadata we give it) and for the health
//! probe's check.
//!
//! The protocol is zstor 0.5.0-rc.1's (`zstor/src/main.rs` and `actors/zstor.rs` upstream): a
//! request is a u16 big-endian length and bincode 1 of `ZstorCommand`, the reply a u16
//! big-endian length and bincode of `ZstorResponse`. `ZstorCommand::Rebuild` is its third
//! variant and holds `file`, `key` and `metadata`; given metadata, the daemon rebuilds from it
//! instead of loading the stored one, encodes again every shard it cannot load (or whose
//! checksum does not match) onto a backend of its current config, and saves the new metadata
//! under the file's key. The metadata must list every shard, in index order: a shorter list
//! aborts the daemon. `ZstorCommand::Check`, the fourth, holds `path`. Checked against the real
//! daemon by `tests/integration/zstor_metadata.rs` and `tests/integration/health.rs`.

use super::metadata::StoredMeta;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The variant index of `Rebuild` in `ZstorCommand` (`Store`, `Retrieve`, `Rebuild`, `Check`).
const REBUILD_VARIANT: u32 = 2;
/// ... and of `Check`.
const CHECK_VARIANT: u32 = 3;

/// `ZstorCommand::Rebuild`'s message.
#[derive(Serialize)]
struct Rebuild<'a> {
    file: Option<&'a Path>,
    key: Option<&'a str>,
    metadata: Option<&'a StoredMeta>,
}

/// `ZstorCommand::Check`'s message.
#[derive(Serialize)]
struct Check<'a> {
    path: &'a Path,
}

/// `ZstorResponse`.
#[derive(Debug, PartialEq, Deserialize)]
pub enum Response {
    /// The command succeeded.
    Success,
    /// It failed, with zstor's message.
    Err(String),
    /// A check found the file stored with this checksum.
    Checksum([u8; 16]),
}

/// `body` with its u16 big-endian length before it.
fn frame(body: Vec<u8>) -> Result<Vec<u8>, String> {
    let length = u16::try_from(body.len())
        .map_err(|_| format!("a request of {} bytes is too long", body.len()))?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend(body);
    Ok(framed)
}

/// The framed request that checks whether `path` is stored.
pub fn check_request(path: &Path) -> Vec<u8> {
    let body = bincode::serialize(&(CHECK_VARIANT, Check { path })).expect("a path serializes");
    frame(body).expect("a path of less than 64 KiB")
}

/// A reply's body (without its length).
pub fn parse_response(body: &[u8]) -> Result<Response, String> {
    bincode::deserialize(body).map_err(|e| format!("unreadable reply: {e}"))
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
    match exchange(socket, &frame(body)?, timeout)? {
        Response::Success => Ok(()),
        Response::Err(message) => Err(message),
        Response::Checksum(checksum) => Err(format!(
            "the daemon answered a rebuild with a checksum ({})",
            super::Checksum(checksum)
        )),
    }
}

/// Sends `request` to the daemon on `socket` and reads its reply, at most `timeout` for each
/// read and write.
fn exchange(socket: &Path, request: &[u8], timeout: Duration) -> Result<Response, String> {
    let socket_error = |what: &str, e: std::io::Error| format!("{what} {}: {e}", socket.display());
    let mut stream = UnixStream::connect(socket).map_err(|e| socket_error("connect to", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| socket_error("set a timeout on", e))?;
    stream
        .write_all(request)
        .map_err(|e| socket_error("write to", e))?;
    let mut length = [0; 2];
    stream
        .read_exact(&mut length)
        .map_err(|e| socket_error("read the reply from", e))?;
    let mut reply = vec![0; usize::from(u16::from_be_bytes(length))];
    stream
        .read_exact(&mut reply)
        .map_err(|e| socket_error("read the reply from", e))?;
    parse_response(&reply).map_err(|e| format!("{e} from {}", socket.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_request_is_the_length_then_bincode_of_the_fourth_variant_and_its_path() {
        let request = check_request(Path::new("/a"));
        // u32 variant 3, u64 length 2, "/a"
        let body = [3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'/', b'a'];
        assert_eq!(request[..2], [0, body.len() as u8]);
        assert_eq!(request[2..], body);
    }

    #[test]
    fn replies_parse_as_zstors_response() {
        assert_eq!(parse_response(&[0, 0, 0, 0]), Ok(Response::Success));
        let mut checksum = vec![2, 0, 0, 0];
        checksum.extend([7; 16]);
        assert_eq!(parse_response(&checksum), Ok(Response::Checksum([7; 16])));
        let mut err = vec![1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        err.extend(b"no");
        assert_eq!(parse_response(&err), Ok(Response::Err("no".into())));
        assert!(parse_response(&[9]).is_err());
    }
}
