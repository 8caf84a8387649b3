//! When a local file may replace its verified remote copy: the one rule both the
//! reconciliation and the upload lane follow before they store a file again.
//!
//! * Index files and `zdb-namespace` change in place (zdb flags older entries, rewrites the
//!   descriptor): a newer local copy always replaces the remote one.
//! * A data file is append-only. Once its content is verified remote it may change only by
//!   growing: zdb reopens the last data file of a namespace after a restart (or a restore) and
//!   appends to it, so a file uploaded at a clean stop grows and is sealed again later. Such a
//!   file keeps, as its prefix, the content the monitor last accepted for it (its recorded
//!   stamp), and it is stored again.
//! * Any other difference between a data file and its verified remote copy (shorter, the same
//!   size with other bytes, a prefix that no longer matches, a copy brought back that is not
//!   the remote content) is damage: a killed hook, a partial retrieve, a bad disk. The remote
//!   copy is kept and the local one is set aside ([`Verdict::Damaged`]).

use super::files::Kind;
use super::state::LocalStamp;
use crate::zstor::Checksum;

/// What to do with a file whose local content is `current`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it (it is new, mutable by design, or an append to what was accepted).
    Store,
    /// Never store it: its verified remote copy is the good one.
    Damaged(String),
}

/// Judges a file of `kind` now `size` bytes with `checksum`, whose verified remote copy is
/// `remote` and whose last accepted local content is `accepted`. `prefix(len)` returns the
/// checksum of the file's first `len` bytes (read only when the file grew).
pub fn judge<E>(
    kind: Kind,
    remote: Option<Checksum>,
    accepted: Option<LocalStamp>,
    size: u64,
    checksum: Checksum,
    prefix: impl FnOnce(u64) -> Result<Checksum, E>,
) -> Result<Verdict, E> {
    let Some(remote) = remote else {
        return Ok(Verdict::Store);
    };
    if kind.mutable() || checksum == remote {
        return Ok(Verdict::Store);
    }
    let Some(accepted) = accepted else {
        return Ok(Verdict::Damaged(format!(
            "{size} bytes that are not its verified remote copy (checksum {checksum}, remote \
             {remote})"
        )));
    };
    if checksum == accepted.checksum {
        return Ok(Verdict::Store);
    }
    if size < accepted.size {
        return Ok(Verdict::Damaged(format!(
            "shrank from {} to {size} bytes",
            accepted.size
        )));
    }
    if size > accepted.size && prefix(accepted.size)? == accepted.checksum {
        return Ok(Verdict::Store);
    }
    Ok(Verdict::Damaged(format!(
        "its first {} bytes changed ({size} bytes now)",
        accepted.size
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(bytes: &[u8]) -> LocalStamp {
        LocalStamp {
            size: bytes.len() as u64,
            mtime_ns: 1,
            inode: 1,
            checksum: Checksum::of_bytes(bytes),
        }
    }

    /// Judges `now` against the accepted content `before`, verified remote.
    fn verdict(kind: Kind, before: Option<&[u8]>, remote: &[u8], now: &[u8]) -> Verdict {
        judge::<()>(
            kind,
            Some(Checksum::of_bytes(remote)),
            before.map(stamp),
            now.len() as u64,
            Checksum::of_bytes(now),
            |len| Ok(Checksum::of_bytes(&now[..len as usize])),
        )
        .unwrap()
    }

    #[test]
    fn mutable_files_and_first_uploads_are_stored() {
        assert_eq!(
            verdict(Kind::Index(0), Some(b"a"), b"a", b"b"),
            Verdict::Store
        );
        assert_eq!(verdict(Kind::Descriptor, None, b"a", b""), Verdict::Store);
        let first = judge::<()>(
            Kind::Data(0),
            None,
            None,
            1,
            Checksum::of_bytes(b"x"),
            |_| unreachable!(),
        );
        assert_eq!(first, Ok(Verdict::Store));
    }

    #[test]
    fn a_data_file_may_only_grow_from_what_was_accepted() {
        let data = Kind::Data(3);
        assert_eq!(verdict(data, Some(b"abc"), b"abc", b"abc"), Verdict::Store);
        assert_eq!(
            verdict(data, Some(b"abc"), b"abc", b"abcdef"),
            Verdict::Store
        );
        // An append recorded but not yet verified, grown again.
        assert_eq!(
            verdict(data, Some(b"abcd"), b"abc", b"abcdef"),
            Verdict::Store
        );
        assert_eq!(
            verdict(data, Some(b"abc"), b"abc", b"ab"),
            Verdict::Damaged("shrank from 3 to 2 bytes".into())
        );
        assert!(matches!(
            verdict(data, Some(b"abc"), b"abc", b"xbc"),
            Verdict::Damaged(_)
        ));
        assert!(matches!(
            verdict(data, Some(b"abc"), b"abc", b"xbcdef"),
            Verdict::Damaged(_)
        ));
    }

    #[test]
    fn a_copy_brought_back_must_be_the_remote_one() {
        let data = Kind::Data(0);
        assert_eq!(verdict(data, None, b"abc", b"abc"), Verdict::Store);
        assert!(matches!(
            verdict(data, None, b"abc", b"ab"),
            Verdict::Damaged(_)
        ));
    }
}
