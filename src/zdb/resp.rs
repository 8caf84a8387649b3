//! The RESP (redis) wire format spoken by 0-db: an incremental reply parser that never panics on
//! arbitrary bytes, and encoders for commands and replies.

use std::fmt;

/// Largest bulk string accepted (0-db values are at most a few MiB).
pub const MAX_BULK_LEN: usize = 64 << 20;
/// Largest array accepted.
pub const MAX_ARRAY_LEN: usize = 1 << 20;
/// Deepest nesting of arrays accepted.
pub const MAX_DEPTH: usize = 8;

/// One RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-message`: an error answered by the server.
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`
    Nil,
    /// `*2\r\n…`
    Array(Vec<Reply>),
}

/// The bytes are not valid RESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn invalid<T>(message: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(message.into()))
}

/// Parses one reply from the start of `buf`. Returns `Ok(None)` when more bytes are needed, or
/// the reply and the number of bytes it used.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let Some((line, mut used)) = line(buf)? else {
        return Ok(None);
    };
    let (kind, rest) = match line.split_first() {
        Some(split) => split,
        None => return invalid("empty line"),
    };
    let reply = match kind {
        b'+' => Reply::Status(text(rest)?),
        b'-' => Reply::Error(text(rest)?),
        b':' => Reply::Integer(integer(rest)?),
        b'$' => {
            let len = integer(rest)?;
            if len == -1 {
                return Ok(Some((Reply::Nil, used)));
            }
            let len = match usize::try_from(len) {
                Ok(len) if len <= MAX_BULK_LEN => len,
                _ => return invalid(format!("bad bulk length {len}")),
            };
            let Some(end) = used.checked_add(len).and_then(|n| n.checked_add(2)) else {
                return invalid("bulk length overflow");
            };
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[used + len..end] != b"\r\n" {
                return invalid("bulk string not terminated by CRLF");
            }
            let data = buf[used..used + len].to_vec();
            used = end;
            Reply::Bulk(data)
        }
        b'*' => {
            let len = integer(rest)?;
            if len == -1 {
                return Ok(Some((Reply::Nil, used)));
            }
            let len = match usize::try_from(len) {
                Ok(len) if len <= MAX_ARRAY_LEN => len,
                _ => return invalid(format!("bad array length {len}")),
            };
            if depth >= MAX_DEPTH {
                return invalid("arrays nested too deeply");
            }
            let mut items = Vec::with_capacity(len.min(1024));
            for _ in 0..len {
                let Some((item, n)) = parse_at(&buf[used..], depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                used += n;
            }
            Reply::Array(items)
        }
        other => return invalid(format!("unknown reply type byte {other:#04x}")),
    };
    Ok(Some((reply, used)))
}

/// The first CRLF-terminated line (without CRLF) and the bytes it used.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(pos) => Ok(Some((&buf[..pos], pos + 2))),
        // A header line is short; a long run without CRLF is garbage, not a partial reply.
        None if buf.len() > 64 * 1024 => invalid("line too long"),
        None => Ok(None),
    }
}

fn text(bytes: &[u8]) -> Result<String, ProtocolError> {
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn integer(bytes: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .map_or_else(
            || invalid(format!("bad integer {:?}", String::from_utf8_lossy(bytes))),
            Ok,
        )
}

/// Encodes a command as an array of bulk strings.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Reply {
    /// Appends the wire form of this reply to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Status(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
            Reply::Integer(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(data) => {
                out.extend_from_slice(format!("${}\r\n", data.len()).as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_each_kind() {
        let cases: &[(&[u8], Reply)] = &[
            (b"+PONG\r\n", Reply::Status("PONG".into())),
            (
                b"-Namespace not found\r\n",
                Reply::Error("Namespace not found".into()),
            ),
            (b":-12\r\n", Reply::Integer(-12)),
            (b"$3\r\na\r\n\r\n", Reply::Bulk(b"a\r\n".to_vec())),
            (b"$-1\r\n", Reply::Nil),
            (b"*-1\r\n", Reply::Nil),
            (
                b"*2\r\n$1\r\nx\r\n:1\r\n",
                Reply::Array(vec![Reply::Bulk(b"x".to_vec()), Reply::Integer(1)]),
            ),
        ];
        for (wire, expected) in cases {
            assert_eq!(parse(wire).unwrap(), Some((expected.clone(), wire.len())));
            for cut in 0..wire.len() {
                assert_eq!(
                    parse(&wire[..cut]).unwrap(),
                    None,
                    "prefix {cut} of {wire:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_garbage() {
        for wire in [
            &b"?x\r\n"[..],
            b"$5\r\nabcdefg\r\n",
            b":12a\r\n",
            b"$-2\r\n",
            b"*99999999999\r\n",
            b"\r\n",
        ] {
            assert!(parse(wire).is_err(), "{wire:?}");
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).is_err());
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,20}".prop_map(Reply::Status),
            "[a-zA-Z0-9 ]{0,20}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Reply::Bulk),
            Just(Reply::Nil),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Reply::Array)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes give a reply, "need more" or an error: never a panic.
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        /// Bytes that start like RESP exercise the deeper paths.
        #[test]
        fn never_panics_on_resp_like_bytes(parts in proptest::collection::vec(
            prop_oneof![
                Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b":".to_vec()), Just(b"+".to_vec()),
                Just(b"-".to_vec()), Just(b"\r\n".to_vec()), Just(b"-1".to_vec()),
                "[0-9]{1,20}".prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..8),
            ], 0..40)) {
            let _ = parse(&parts.concat());
        }

        /// What we encode we parse back, with the exact length used, even with trailing bytes.
        #[test]
        fn round_trips(reply in reply(), trailing in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut wire = Vec::new();
            reply.encode(&mut wire);
            let used = wire.len();
            wire.extend_from_slice(&trailing);
            prop_assert_eq!(parse(&wire).unwrap(), Some((reply, used)));
        }
    }
}
