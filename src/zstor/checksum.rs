//! The checksum zstor stores for every file: blake2b with a 128-bit output, shown as 32 hex
//! digits, identical to `b2sum -l 128`.

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

/// A blake2b-128 checksum.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checksum(pub [u8; 16]);

impl Checksum {
    /// The checksum of a byte string.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Checksum(Blake2b::<U16>::digest(bytes).into())
    }

    /// The checksum of a file's content, read in 1 MiB blocks.
    pub fn of_file(path: &Path) -> std::io::Result<Self> {
        Checksum::of_reader(&mut std::fs::File::open(path)?)
    }

    /// The checksum of a file's first `len` bytes (fewer if the file is shorter).
    pub fn of_prefix(path: &Path, len: u64) -> std::io::Result<Self> {
        Checksum::of_reader(&mut std::fs::File::open(path)?.take(len))
    }

    /// The checksum of everything `reader` yields, read in 1 MiB blocks.
    pub fn of_reader(file: &mut impl Read) -> std::io::Result<Self> {
        let mut hasher = Blake2b::<U16>::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Checksum(hasher.finalize().into()))
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({self})")
    }
}

/// The text is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a blake2b-128 checksum (32 hex digits)")]
pub struct BadChecksum(pub String);

impl FromStr for Checksum {
    type Err = BadChecksum;
    fn from_str(s: &str) -> Result<Self, BadChecksum> {
        let bad = || BadChecksum(s.chars().take(40).collect());
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Checksum(out))
    }
}

impl Serialize for Checksum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Checksum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_b2sum() {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("empty", Vec::new()),
            ("small", b"qsfs".to_vec()),
            ("big", (0..3_000_000u32).map(|i| (i % 251) as u8).collect()),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, &content).unwrap();
            let out = std::process::Command::new("b2sum")
                .args(["-l", "128"])
                .arg(&path)
                .output()
                .expect("b2sum (coreutils) must be installed");
            let expected = String::from_utf8(out.stdout).unwrap();
            let expected = expected.split_whitespace().next().unwrap();
            assert_eq!(
                Checksum::of_file(&path).unwrap().to_string(),
                expected,
                "{name}"
            );
            assert_eq!(Checksum::of_bytes(&content).to_string(), expected, "{name}");
        }
    }

    #[test]
    fn parses_and_rejects() {
        let hex = "00ff00ff00ff00ff00ff00ff00ff00ff";
        assert_eq!(hex.parse::<Checksum>().unwrap().to_string(), hex);
        for bad in [
            "",
            "00ff",
            "zzff00ff00ff00ff00ff00ff00ff00ff",
            "é0ff00ff00ff00ff00ff00ff00ff00f",
        ] {
            assert!(bad.parse::<Checksum>().is_err(), "{bad}");
        }
    }
}
