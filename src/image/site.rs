//! The operator's site settings: one TOML file (`image/site.example.toml` documents every key)
//! with everything specific to one deployment: the backends and their passwords, the zstor
//! key, shard counts, zdb's data file size and rotate time, the zdbfs size, the local cache
//! limit, and MinIO's address and credentials.
//!
//! Everything is validated here, before anything is written: a bad value is reported at its
//! own key and line (file:line:column: key `…`: why), secrets are never repeated, and the
//! checks that span keys (expected ≥ minimal shards, exactly four meta backends, enough data
//! backends, the cache limit against the data file size) point at the key to change.

use crate::config::{ConfigError, Secret, Source, Validate};
use crate::zstor::config::{hex_key, socket_address, META_BACKENDS};
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::Path;

/// zdb refuses data files smaller than this (`--datasize`).
pub const MIN_DATASIZE: u64 = 512 * 1024;
/// zdb refuses data files of this size or larger.
pub const MAX_DATASIZE: u64 = 4 * 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// The site settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSettings {
    /// zstor: backends, key, shards.
    pub zstor: ZstorSite,
    /// The local zdb.
    #[serde(default)]
    pub zdb: ZdbSite,
    /// The zdbfs mount.
    #[serde(default)]
    pub zdbfs: ZdbfsSite,
    /// The local cache of zdb data files.
    #[serde(default)]
    pub cache: CacheSite,
    /// Restore points, and so what a lost VM loses.
    #[serde(default)]
    pub restore: RestoreSite,
    /// The S3 endpoint.
    pub minio: MinioSite,
}

/// `[zstor]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZstorSite {
    /// Shards needed to read an object back.
    pub minimal_shards: usize,
    /// Shards written per object (≥ `minimal_shards`; the difference may be lost).
    pub expected_shards: usize,
    /// Groups that may be lost completely.
    #[serde(default)]
    pub redundant_groups: usize,
    /// Backends that may be lost in every group.
    #[serde(default)]
    pub redundant_nodes: usize,
    /// The AES-256 key for data and metadata: 64 hex digits.
    #[serde(deserialize_with = "hex_key")]
    pub key: Secret,
    /// The password of every backend that does not set its own.
    pub password: Option<Secret>,
    /// Key prefix of the metadata in the meta backends.
    #[serde(default = "default_prefix")]
    pub meta_prefix: String,
    /// zstor's Prometheus port (none: no metrics endpoint).
    pub prometheus_port: Option<u16>,
    /// Exactly four user-mode 0-db namespaces for the metadata.
    pub meta_backends: Vec<BackendSite>,
    /// The data backends (sequential-mode namespaces), in groups.
    pub groups: Vec<GroupSite>,
}

/// `[[zstor.groups]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSite {
    /// The group's backends.
    pub backends: Vec<BackendSite>,
}

/// One remote 0-db namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSite {
    /// `IP:port` or `[IPv6]:port` (zstor takes no host names).
    #[serde(deserialize_with = "socket_address")]
    pub address: SocketAddr,
    /// The namespace.
    pub namespace: String,
    /// Its password (default: `zstor.password`).
    pub password: Option<Secret>,
}

/// `[zdb]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZdbSite {
    /// Size at which zdb seals a data file and starts the next (`--datasize`).
    pub datasize: Size,
    /// Seal the files of an updated namespace after this many seconds (`--rotate`; 0: off).
    pub rotate_secs: u64,
    /// Force a sync to disk after this many seconds (`--synctime`; 0: off).
    pub synctime_secs: u64,
}

impl Default for ZdbSite {
    fn default() -> Self {
        ZdbSite {
            datasize: Size(64 * MIB),
            rotate_secs: 900,
            synctime_secs: 10,
        }
    }
}

/// `[zdbfs]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZdbfsSite {
    /// The filesystem size zdbfs reports (`-o size=`).
    pub size: Size,
}

impl Default for ZdbfsSite {
    fn default() -> Self {
        ZdbfsSite {
            size: Size(10 * 1024 * MIB),
        }
    }
}

/// `[cache]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSite {
    /// Local cache limit of zdb's data files; sealed, verified files are evicted above it.
    /// None: never evict.
    pub max_size: Option<Size>,
}

/// `[restore]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreSite {
    /// Time between two restore points while zdbfs is written to (0: only at zdb's rotations
    /// and stops); with the flush interval and the upload time, what a lost VM loses.
    pub interval_secs: u64,
}

impl Default for RestoreSite {
    fn default() -> Self {
        RestoreSite { interval_secs: 30 }
    }
}

/// `[minio]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinioSite {
    /// The S3 listen address: `:9000`, `IP:port` or `[IPv6]:port`.
    #[serde(default = "default_minio_address", deserialize_with = "listen_address")]
    pub address: String,
    /// The S3 access key of the root user (at least 3 characters).
    pub root_user: String,
    /// The root user's secret key (at least 8 characters).
    pub root_password: Secret,
}

/// A size in bytes, written as a number of bytes or with a binary suffix (`64M`, `10GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(bytes) => Ok(Size(bytes)),
            Raw::Text(text) => parse_size(&text).map(Size).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a size: use bytes or a number with K, M, G or T (powers of 1024), such as \"64M\""
                ))
            }),
        }
    }
}

/// Parses `123`, `64K`, `64M`, `10G`, `1T` (also `KiB`…`TiB`, `KB`…; all powers of 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

fn default_prefix() -> String {
    "qsfs-meta".to_string()
}

fn default_minio_address() -> String {
    ":9000".to_string()
}

fn listen_address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    let valid = match text.strip_prefix(':') {
        Some(port) => port.parse::<u16>().is_ok_and(|p| p > 0),
        None => text.parse::<SocketAddr>().is_ok_and(|a| a.port() > 0),
    };
    if valid {
        Ok(text)
    } else {
        Err(serde::de::Error::custom(format!(
            "`{text}` is not a listen address: use :PORT, IP:PORT or [IPv6]:PORT"
        )))
    }
}

/// Characters allowed in a value written to a systemd `EnvironmentFile=` in double quotes
/// without escaping.
pub fn env_safe(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '`' | '$'))
}

impl SiteSettings {
    /// Reads and validates the site settings at `path`.
    pub fn load(path: &Path) -> Result<SiteSettings, ConfigError> {
        crate::config::load(path)
    }
}

impl Validate for SiteSettings {
    fn validate(&self, source: &Source) -> Result<(), ConfigError> {
        let z = &self.zstor;
        if z.minimal_shards == 0 {
            return Err(source.invalid("zstor.minimal_shards", "must be at least 1"));
        }
        if z.expected_shards < z.minimal_shards {
            return Err(source.invalid(
                "zstor.expected_shards",
                format!(
                    "must be at least zstor.minimal_shards ({})",
                    z.minimal_shards
                ),
            ));
        }
        if z.meta_backends.len() != META_BACKENDS {
            return Err(source.invalid(
                "zstor.meta_backends",
                format!(
                    "zstor v0.5 needs exactly {META_BACKENDS} meta backends, found {}",
                    z.meta_backends.len()
                ),
            ));
        }
        if z.groups.is_empty() {
            return Err(source.invalid("zstor", "needs at least one [[zstor.groups]]"));
        }
        for (g, group) in z.groups.iter().enumerate() {
            if group.backends.is_empty() {
                return Err(source.invalid(
                    &format!("zstor.groups[{g}]"),
                    "a group needs at least one [[zstor.groups.backends]]",
                ));
            }
        }
        let data: usize = z.groups.iter().map(|g| g.backends.len()).sum();
        if data < z.expected_shards {
            return Err(source.invalid(
                "zstor.expected_shards",
                format!(
                    "{} shards need at least as many data backends, found {data}",
                    z.expected_shards
                ),
            ));
        }
        if z.redundant_groups >= z.groups.len() {
            return Err(source.invalid(
                "zstor.redundant_groups",
                format!(
                    "must be less than the number of groups ({})",
                    z.groups.len()
                ),
            ));
        }
        let smallest = z.groups.iter().map(|g| g.backends.len()).min().unwrap_or(0);
        if z.redundant_nodes >= smallest {
            return Err(source.invalid(
                "zstor.redundant_nodes",
                format!("must be less than the size of the smallest group ({smallest})"),
            ));
        }
        if z.meta_prefix.is_empty() || z.meta_prefix.contains('/') {
            return Err(source.invalid("zstor.meta_prefix", "must be a non-empty name without `/`"));
        }
        let backends = z
            .meta_backends
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("zstor.meta_backends[{i}]"), b))
            .chain(z.groups.iter().enumerate().flat_map(|(g, group)| {
                group
                    .backends
                    .iter()
                    .enumerate()
                    .map(move |(i, b)| (format!("zstor.groups[{g}].backends[{i}]"), b))
            }));
        for (key, backend) in backends {
            if backend.namespace.is_empty() || backend.namespace.contains(char::is_whitespace) {
                return Err(source.invalid(
                    &format!("{key}.namespace"),
                    "must be a non-empty name without spaces",
                ));
            }
        }

        let datasize = self.zdb.datasize.0;
        if !(MIN_DATASIZE..MAX_DATASIZE).contains(&datasize) {
            return Err(source.invalid(
                "zdb.datasize",
                format!("zdb needs at least 512K and less than 4G, got {datasize} bytes"),
            ));
        }
        if self.zdbfs.size.0 < MIB {
            return Err(source.invalid("zdbfs.size", "must be at least 1M"));
        }
        if let Some(max) = self.cache.max_size {
            if max.0 < 2 * datasize {
                return Err(source.invalid(
                    "cache.max_size",
                    format!(
                        "must be at least twice zdb.datasize ({} MiB): the active data file \
                         is never evicted; leave the key out to never evict",
                        2 * datasize / MIB
                    ),
                ));
            }
        }

        let m = &self.minio;
        if m.root_user.chars().count() < 3 || !env_safe(&m.root_user) {
            return Err(source.invalid(
                "minio.root_user",
                "needs at least 3 printable characters, without spaces, quotes, `\\` or `$`",
            ));
        }
        let password = m.root_password.expose();
        if password.chars().count() < 8 || !env_safe(password) {
            return Err(source.invalid(
                "minio.root_password",
                "needs at least 8 printable characters, without spaces, quotes, `\\` or `$` \
                 (value not shown)",
            ));
        }
        Ok(())
    }
}

impl SiteSettings {
    /// The cache limit in MiB, as `monitor_config.toml` wants it.
    pub fn cache_limit_mib(&self) -> Option<u64> {
        self.cache.max_size.map(|s| s.0 / MIB)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Problem;

    pub(crate) const KEY: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";

    /// A valid site file with two groups of two data backends.
    pub(crate) fn sample() -> String {
        let mut text = format!(
            "[zstor]\nminimal_shards = 2\nexpected_shards = 4\nkey = \"{KEY}\"\npassword = \"backend-pass-1\"\n"
        );
        for i in 1..=4 {
            text.push_str(&format!(
                "\n[[zstor.meta_backends]]\naddress = \"[2a02:1802:5e::{i}]:9900\"\nnamespace = \"meta-{i}\"\n"
            ));
        }
        for g in 0..2 {
            text.push_str("\n[[zstor.groups]]\n");
            for i in 1..=2 {
                text.push_str(&format!(
                    "\n[[zstor.groups.backends]]\naddress = \"10.0.{g}.{i}:9900\"\nnamespace = \"data-{g}-{i}\"\n"
                ));
            }
        }
        text.push_str(
            "\n[zdb]\ndatasize = \"32M\"\nrotate_secs = 600\n\n[zdbfs]\nsize = \"1T\"\n\n\
             [cache]\nmax_size = \"2G\"\n\n[minio]\naddress = \"[::]:9000\"\nroot_user = \"qsfs\"\n\
             root_password = \"minio-secret-pass\"\n",
        );
        text
    }

    pub(crate) fn load(text: &str) -> Result<SiteSettings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.toml");
        std::fs::write(&path, text).unwrap();
        SiteSettings::load(&path)
    }

    #[test]
    fn sample_loads_with_sizes_parsed() {
        let site = load(&sample()).unwrap();
        assert_eq!(site.zdb.datasize, Size(32 * MIB));
        assert_eq!(site.zdb.synctime_secs, 10);
        assert_eq!(site.zdbfs.size, Size(1 << 40));
        assert_eq!(site.cache_limit_mib(), Some(2048));
        assert_eq!(site.zstor.meta_prefix, "qsfs-meta");
        assert!(!format!("{site:?}").contains("minio-secret-pass"));
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("image/site.example.toml");
        SiteSettings::load(&path).unwrap();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512K"), Some(512 * 1024));
        assert_eq!(parse_size("64MiB"), Some(64 * MIB));
        assert_eq!(parse_size("10 G"), Some(10 << 30));
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn each_rule_names_its_key_and_line() {
        let good = sample();
        let cases = [
            (
                good.replace("expected_shards = 4", "expected_shards = 1"),
                "zstor.expected_shards",
            ),
            (
                good.replace("expected_shards = 4", "expected_shards = 5"),
                "zstor.expected_shards",
            ),
            (
                good.replacen(
                    "[[zstor.meta_backends]]\naddress = \"[2a02:1802:5e::1]:9900\"\nnamespace = \"meta-1\"\n",
                    "",
                    1,
                ),
                "zstor.meta_backends",
            ),
            (good.replace(KEY, &KEY[..60]), "zstor.key"),
            (
                good.replace("10.0.1.2:9900", "backend.example.org:9900"),
                "zstor.groups[1].backends[1].address",
            ),
            (
                good.replace("namespace = \"data-0-2\"", "namespace = \"\""),
                "zstor.groups[0].backends[1].namespace",
            ),
            (good.replace("\"32M\"", "\"5G\""), "zdb.datasize"),
            (good.replace("\"32M\"", "\"lots\""), "zdb.datasize"),
            (good.replace("\"2G\"", "\"40M\""), "cache.max_size"),
            (
                good.replace("\"[::]:9000\"", "\"everywhere:9000\""),
                "minio.address",
            ),
            (
                good.replace("minio-secret-pass", "short"),
                "minio.root_password",
            ),
            (
                good.replace("minio-secret-pass", "has space in it"),
                "minio.root_password",
            ),
            (good.replace("[cache]", "[cache]\nmax = 1"), "cache.max"),
        ];
        for (text, key) in cases {
            let err = load(&text).unwrap_err();
            let shown = err.to_string();
            assert_eq!(err.key.as_deref(), Some(key), "{shown}");
            if err.problem != Problem::UnknownKey {
                assert!(err.position.is_some(), "{shown}");
            }
            assert_eq!(err.exit_code(), 78);
            for secret in ["minio-secret-pass", "short", "has space", &KEY[..60]] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn listen_addresses() {
        let site = load(&sample().replace("\"[::]:9000\"", "\":9100\"")).unwrap();
        assert_eq!(site.minio.address, ":9100");
        let site = load(&sample().replace("address = \"[::]:9000\"\n", "")).unwrap();
        assert_eq!(site.minio.address, ":9000");
        assert!(load(&sample().replace("\"[::]:9000\"", "\":0\"")).is_err());
    }
}
