//! Reading versioned JSON formats (the health report, the monitor status): the version is read
//! first, so a file written by a newer build is refused as such, not with a confusing field
//! error, and a reader names the versions it accepts.

use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::RangeInclusive;

/// Why a versioned document could not be read.
#[derive(Debug)]
pub enum Error {
    /// Not JSON, or not this format.
    Json(serde_json::Error),
    /// A version this build does not read.
    Version {
        /// What the document is (`health report`).
        what: &'static str,
        /// The version it has.
        found: u32,
        /// The versions this build reads.
        accepted: RangeInclusive<u32>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Json(e) => write!(f, "{e}"),
            Error::Version {
                what,
                found,
                accepted,
            } => write!(
                f,
                "{what} schema_version {found} is not one this build reads ({}..={}); \
                 was it written by a newer qsfs?",
                accepted.start(),
                accepted.end()
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

#[derive(serde::Deserialize)]
struct Versioned {
    schema_version: u32,
}

/// Parses `bytes` as a `T` whose `schema_version` is in `accepted`.
pub fn parse<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    accepted: RangeInclusive<u32>,
) -> Result<T, Error> {
    let Versioned { schema_version } = serde_json::from_slice(bytes).map_err(Error::Json)?;
    if !accepted.contains(&schema_version) {
        return Err(Error::Version {
            what,
            found: schema_version,
            accepted,
        });
    }
    serde_json::from_slice(bytes).map_err(Error::Json)
}

/// Replaces the `schema_version` of a JSON document (tests: a future version of a fixture).
#[cfg(test)]
pub fn with_version(json: &str, version: u32) -> String {
    let mut value: serde_json::Value = serde_json::from_str(json).expect("JSON");
    value["schema_version"] = version.into();
    value.to_string()
}
