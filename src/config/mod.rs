//! Loading TOML configuration into typed, validated settings.
//!
//! Every config file goes through one pipeline, [`load`]: it is read once, deserialized once
//! into its typed settings ([`Source::parse`]), and checked once ([`Validate`]). So every error
//! has the same shape: it names the file, the key and the line, never shows a secret value, and
//! maps to exit code 78 (`EX_CONFIG`). Values are validated while they are deserialized (see
//! the newtypes here), so a bad value is reported at its own key and line; checks that span
//! several keys are [`Validate`] impls, reported with [`Source::invalid`].

pub mod appliance;
pub mod monitor;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};

/// Key names whose values are secrets: an error at such a key never repeats the value.
const SECRET_KEYS: &[&str] = &[
    "password",
    "key",
    "secret_key",
    "access_key",
    "root_password",
];

/// What is wrong with a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The file does not exist.
    Missing,
    /// The file exists but cannot be read.
    Unreadable,
    /// The file is not valid TOML.
    Syntax,
    /// A key that this file does not know.
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value has the wrong TOML type.
    WrongType,
    /// A value has the right type but is not acceptable.
    InvalidValue,
}

/// A configuration error that names the file, the key and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub path: PathBuf,
    /// The dotted key (`vdc_config.new_size`, `groups[0].backends[1].address`), when known.
    pub key: Option<String>,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// The kind of problem.
    pub problem: Problem,
    /// A human readable explanation, free of secret values.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The exit code every config error maps to.
    pub fn exit_code(&self) -> i32 {
        crate::exit::CONFIG
    }
}

/// The text of a config file, kept so that later checks can point at a key's line.
pub struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> Source<'a> {
    /// Wraps the text read from `path`.
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Source { path, text }
    }

    /// Deserializes the whole file into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let deserializer =
            toml::Deserializer::parse(self.text).map_err(|e| self.syntax_error(&e))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| self.value_error(&e))
    }

    /// Deserializes the whole file into `T` and runs its [`Validate`] pass.
    pub fn parse_valid<T: DeserializeOwned + Validate>(&self) -> Result<T, ConfigError> {
        let value: T = self.parse()?;
        value.validate(self)?;
        Ok(value)
    }

    /// An [`Problem::InvalidValue`] error at `key`, for checks that span several keys.
    pub fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            key: Some(key.to_string()),
            position: locate(self.text, key).map(|offset| self.position(offset)),
            problem: Problem::InvalidValue,
            message: message.into(),
        }
    }

    fn syntax_error(&self, error: &toml::de::Error) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            key: None,
            position: error.span().map(|span| self.position(span.start)),
            problem: Problem::Syntax,
            message: format!("not valid TOML: {}", error.message()),
        }
    }

    fn value_error(&self, error: &serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let inner = error.inner();
        let message = inner.message();
        let mut key = error.path().to_string();
        let problem = if let Some(field) = quoted(message, "missing field `") {
            key = join_key(&key, field);
            Problem::MissingKey
        } else if message.starts_with("unknown field") {
            Problem::UnknownKey
        } else if message.starts_with("invalid type") || message.starts_with("invalid length") {
            Problem::WrongType
        } else {
            Problem::InvalidValue
        };
        let last = key.rsplit('.').next().unwrap_or_default();
        let last = last.split('[').next().unwrap_or_default();
        let message = if SECRET_KEYS.contains(&last) && problem != Problem::MissingKey {
            "invalid value (not shown: this key holds a secret)".to_string()
        } else if problem == Problem::UnknownKey {
            format!("{message} (this file rejects keys it does not know)")
        } else {
            message.to_string()
        };
        ConfigError {
            path: self.path.to_path_buf(),
            key: (key != ".").then_some(key),
            // A missing top-level key has no line of its own (its span is the whole file).
            position: inner
                .span()
                .filter(|span| problem != Problem::MissingKey || span.start > 0)
                .map(|span| self.position(span.start)),
            problem,
            message,
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        (line, column)
    }
}

/// The checks of a config that span several keys, run once after it was deserialized.
pub trait Validate {
    /// The first problem found, as an error at its key in `source` ([`Source::invalid`]).
    fn validate(&self, source: &Source) -> Result<(), ConfigError>;
}

/// A part of a file that a reader skips unread (the `[health]` tables, for the hook).
impl Validate for serde::de::IgnoredAny {
    fn validate(&self, _: &Source) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Reads, deserializes and validates the TOML file at `path`.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let text = read(path)?;
    Source::new(path, &text).parse_valid()
}

/// Reads a config file, mapping I/O errors to [`ConfigError`].
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        key: None,
        position: None,
        problem: if e.kind() == std::io::ErrorKind::NotFound {
            Problem::Missing
        } else {
            Problem::Unreadable
        },
        message: if e.kind() == std::io::ErrorKind::NotFound {
            "file not found".to_string()
        } else {
            format!("cannot read: {e}")
        },
    })
}

fn quoted<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message.strip_prefix(prefix)?.split('`').next()
}

fn join_key(parent: &str, field: &str) -> String {
    if parent.is_empty() || parent == "." {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// Byte offset of the value at a dotted key such as `groups[0].backends[1].address`.
fn locate(text: &str, key: &str) -> Option<usize> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut span = root.span();
    let mut table = root.get_ref();
    let mut value: Option<&toml::de::DeValue> = None;
    for segment in key.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        if let Some(current) = value {
            table = current.as_table()?;
        }
        let mut item = table.get(name)?;
        if let Some(index) = index {
            item = item.get_ref().as_array()?.get(index)?;
        }
        span = item.span();
        value = Some(item.get_ref());
    }
    Some(span.start)
}

/// A secret from a config file (a password or key). It cannot be printed: `Debug` shows
/// `<hidden>` and there is no `Display`; code that must pass it on calls [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it (a SELECT, an HTTP body).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

/// A percentage between 0 and 100, validated when read.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Number {
            Integer(i64),
            Float(f64),
        }
        let value = match Number::deserialize(deserializer)? {
            Number::Integer(i) => i as f64,
            Number::Float(f) => f,
        };
        if (0.0..=100.0).contains(&value) {
            Ok(Percent(value))
        } else {
            Err(serde::de::Error::custom(format!(
                "{value} is not a percentage between 0 and 100"
            )))
        }
    }
}

/// Deserializes an absolute path; a relative path is refused because the appliance's
/// programs run with different working directories.
pub fn absolute_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(deserializer)?;
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(serde::de::Error::custom(format!(
            "`{}` is not an absolute path",
            path.display()
        )))
    }
}

/// Deserializes a number of seconds that must be at least 1, as a [`std::time::Duration`].
pub fn secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<std::time::Duration, D::Error> {
    positive_secs(deserializer).map(std::time::Duration::from_secs)
}

/// Deserializes a count that must be at least 1.
pub fn at_least_one<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<std::num::NonZeroU32, D::Error> {
    let n = u32::deserialize(deserializer)?;
    std::num::NonZeroU32::new(n).ok_or_else(|| serde::de::Error::custom("must be at least 1"))
}

/// Deserializes a number of seconds that must be at least 1.
pub fn positive_secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let secs = u64::deserialize(deserializer)?;
    if secs == 0 {
        Err(serde::de::Error::custom("must be at least 1 second"))
    } else {
        Ok(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        url: String,
        password: Secret,
        size: u64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(default, deserialize_with = "absolute_path")]
        dir: PathBuf,
        fill: Option<Percent>,
        inner: Option<Inner>,
    }

    fn parse(text: &str) -> Result<Outer, ConfigError> {
        Source::new(Path::new("/etc/test.toml"), text).parse()
    }

    #[test]
    fn wrong_type_names_file_key_and_line() {
        let err =
            parse("name = 'x'\n[inner]\nurl = 'u'\npassword = 'p'\nsize = 'big'\n").unwrap_err();
        assert_eq!(err.problem, Problem::WrongType);
        assert_eq!(err.key.as_deref(), Some("inner.size"));
        assert_eq!(err.position, Some((5, 8)));
        assert!(
            err.to_string()
                .starts_with("/etc/test.toml:5:8: key `inner.size`: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn secret_values_never_appear_in_errors() {
        let err =
            parse("name = 'x'\n[inner]\nurl = 'u'\npassword = 918273645\nsize = 1\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("inner.password"));
        assert!(!err.to_string().contains("918273645"), "{err}");
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "<hidden>");
    }

    #[test]
    fn validated_newtypes_report_their_key() {
        let err = parse("name = 'x'\nfill = 120\n").unwrap_err();
        assert_eq!(err.problem, Problem::InvalidValue);
        assert_eq!(err.key.as_deref(), Some("fill"));
        assert_eq!(err.position, Some((2, 8)));
        let err = parse("name = 'x'\ndir = 'relative/dir'\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("dir"));
        assert!(err.message.contains("not an absolute path"));
    }

    #[test]
    fn missing_key_is_named() {
        let err = parse("[inner]\nurl = 'u'\npassword = 'p'\nsize = 1\n").unwrap_err();
        assert_eq!(err.problem, Problem::MissingKey);
        assert_eq!(err.key.as_deref(), Some("name"));
    }

    #[test]
    fn invalid_points_at_a_nested_key() {
        let text = "name = 'x'\n\n[inner]\nurl = 'u'\npassword = 'p'\nsize = 1\n";
        let source = Source::new(Path::new("/etc/test.toml"), text);
        let err = source.invalid("inner.size", "too small");
        assert_eq!(err.position, Some((6, 8)));
        assert_eq!(
            err.to_string(),
            "/etc/test.toml:6:8: key `inner.size`: too small"
        );
    }
}
