//! Rendering the site settings into the appliance's config files, and checking config files
//! with the parsers the appliance itself uses.
//!
//! * `credstore/zstor.toml` (secret, the credential `zstor.toml`): a [`ZstorConfig`] serialized with the TOML serializer;
//!   the daemon socket, pid file and zdbfs mountpoint are the appliance's, and zstor's own
//!   eviction (`zdb_data_dir_path`, `max_zdb_data_dir_size`) is left unset because
//!   `zstor_monitor` evicts.
//! * `monitor_config.toml`: the standard paths plus the cache limit.
//! * `credstore/minio-root-user`, `credstore/minio-root-password` (secrets): MinIO's root
//!   credentials, one value each (MinIO reads them from `MINIO_ROOT_USER_FILE` and
//!   `MINIO_ROOT_PASSWORD_FILE`, which qsfs-minio.service points at its credentials).
//! * `qsfs.env`: the units' environment (`ZDB_DATASIZE`, `ZDB_ROTATE_SECS`,
//!   `ZDB_SYNCTIME_SECS`, `ZDBFS_SIZE`, `MINIO_ADDRESS`); rendered from the defaults when the
//!   image is built without site settings.
//!
//! [`validate_config`] re-reads a file with `ZstorConfig::load`, `MonitorConfig::load`,
//! `HealthConfig::load` or the env-file parser; `build` runs it on every config it ships,
//! and `check-config` on the installed files.

use super::layout::{
    MINIO_PASSWORD, MINIO_USER, MONITOR_CONFIG, QSFS_ENV, QSFS_TOML, ZSTOR_CONFIG,
};
use super::site::{BackendSite, SiteSettings, ZdbSite, ZdbfsSite};
use super::Error;
use crate::config::monitor::MonitorConfig;
use crate::config::{ConfigError, Problem, Source};
use crate::layout::{MOUNTPOINT, ZSTOR_PID_FILE, ZSTOR_SOCKET};
use crate::zstor::config::{
    Backend, Compression, CompressionAlgorithm, Encryption, EncryptionAlgorithm, Group, Meta,
    MetaConfig, MetaType, ZstorConfig,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Variables `qsfs.env` must define.
pub const QSFS_ENV_KEYS: &[&str] = &[
    "ZDB_DATASIZE",
    "ZDB_ROTATE_SECS",
    "ZDB_SYNCTIME_SECS",
    "ZDBFS_SIZE",
    "MINIO_ADDRESS",
];
/// The shortest MinIO root user and password MinIO accepts.
const MINIO_MIN_LEN: [(&str, usize); 2] = [(MINIO_USER, 3), (MINIO_PASSWORD, 8)];

/// A rendered config file.
#[derive(Clone)]
pub struct RenderedFile {
    /// Its name in `/var/zdbfs/etc/`.
    pub name: &'static str,
    /// Its content.
    pub text: String,
}

impl std::fmt::Debug for RenderedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The text may hold secrets.
        write!(f, "RenderedFile({}, {} bytes)", self.name, self.text.len())
    }
}

/// Renders the config files: `qsfs.env` always; with site settings also zstor's config,
/// `monitor_config.toml` and MinIO's user and password.
pub fn render(site: Option<&SiteSettings>) -> Result<Vec<RenderedFile>, Error> {
    let mut files = vec![RenderedFile {
        name: QSFS_ENV,
        text: qsfs_env(site),
    }];
    if let Some(site) = site {
        files.push(RenderedFile {
            name: ZSTOR_CONFIG,
            text: zstor_config(site)?,
        });
        files.push(RenderedFile {
            name: MONITOR_CONFIG,
            text: monitor_config(site)?,
        });
        files.push(RenderedFile {
            name: MINIO_USER,
            text: format!("{}\n", site.minio.root_user),
        });
        files.push(RenderedFile {
            name: MINIO_PASSWORD,
            text: format!("{}\n", site.minio.root_password.expose()),
        });
    }
    files.sort_by_key(|f| f.name);
    Ok(files)
}

/// Writes each rendered file into `scratch` (a private directory) and re-reads it with the
/// appliance's parser; an error names the file as `<rendered NAME>`.
pub fn check_rendered(files: &[RenderedFile], scratch: &Path) -> Result<(), Error> {
    for file in files {
        let path = scratch.join(file.name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        super::fsutil::write_atomic(&path, file.text.as_bytes(), 0o600)?;
        let result = validate_config(file.name, &path);
        let _ = std::fs::remove_file(&path);
        result.map_err(|mut e| {
            e.path = PathBuf::from(format!("<rendered {}>", file.name));
            e
        })?;
    }
    Ok(())
}

fn to_toml<T: Serialize>(value: &T, name: &str) -> Result<String, Error> {
    toml::to_string(value).map_err(|e| {
        Error::io(
            format!("<rendered {name}>"),
            std::io::Error::other(e.to_string()),
        )
    })
}

fn zstor_config(site: &SiteSettings) -> Result<String, Error> {
    let z = &site.zstor;
    let backend = |b: &BackendSite| Backend {
        address: b.address,
        namespace: Some(b.namespace.clone()),
        password: b.password.clone().or_else(|| z.password.clone()),
    };
    let encryption = Encryption {
        algorithm: EncryptionAlgorithm::Aes,
        key: z.key.clone(),
    };
    let config = ZstorConfig {
        minimal_shards: z.minimal_shards,
        expected_shards: z.expected_shards,
        redundant_groups: z.redundant_groups,
        redundant_nodes: z.redundant_nodes,
        root: None,
        socket: Some(ZSTOR_SOCKET.into()),
        pid_file: Some(ZSTOR_PID_FILE.into()),
        zdb_data_dir_path: None,
        max_zdb_data_dir_size: None,
        zdbfs_mountpoint: Some(MOUNTPOINT.into()),
        prometheus_port: z.prometheus_port,
        encryption: encryption.clone(),
        compression: Compression {
            algorithm: CompressionAlgorithm::Snappy,
        },
        meta: Meta {
            kind: MetaType::Zdb,
            config: MetaConfig {
                prefix: z.meta_prefix.clone(),
                encryption,
                backends: z.meta_backends.iter().map(backend).collect(),
            },
        },
        groups: z
            .groups
            .iter()
            .map(|g| Group {
                backends: g.backends.iter().map(backend).collect(),
            })
            .collect(),
    };
    Ok(format!(
        "# zstor v0.5 config, rendered by qsfs-image from the site settings. Secret (mode 0600).\n\
         # The units expect `socket`, `pid_file` and `zdbfs_mountpoint` as they are. zstor's own\n\
         # eviction (zdb_data_dir_path, max_zdb_data_dir_size) stays unset: zstor_monitor evicts.\n\n{}",
        to_toml(&config, ZSTOR_CONFIG)?
    ))
}

/// The keys of `monitor_config.toml` that qsfs-image sets.
#[derive(Serialize)]
struct MonitorFile {
    zdb_index_dir_path: &'static str,
    zdb_data_dir_path: &'static str,
    zstor_config_path: &'static str,
    zstor_bin_path: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_zdb_data_dir_size: Option<u64>,
    restore_point_interval_secs: u64,
}

fn monitor_config(site: &SiteSettings) -> Result<String, Error> {
    let file = MonitorFile {
        zdb_index_dir_path: crate::layout::INDEX_DIR,
        zdb_data_dir_path: crate::layout::DATA_DIR,
        zstor_config_path: crate::layout::ZSTOR_CONFIG,
        zstor_bin_path: crate::layout::ZSTOR_BIN,
        max_zdb_data_dir_size: site.cache_limit_mib(),
        restore_point_interval_secs: site.restore.interval_secs,
    };
    let note = if file.max_zdb_data_dir_size.is_some() {
        "# max_zdb_data_dir_size is the local cache limit in MiB (site setting cache.max_size)."
    } else {
        "# No max_zdb_data_dir_size: the local cache is never evicted (site setting cache.max_size)."
    };
    let note = format!(
        "{note}\n# restore_point_interval_secs: site setting restore.interval_secs (what a lost VM \
         loses, README)."
    );
    Ok(format!(
        "# zstor_monitor configuration, rendered by qsfs-image from the site settings.\n\
         # Every key is documented in the shipped template (see image/README.md).\n{note}\n\n{}",
        to_toml(&file, MONITOR_CONFIG)?
    ))
}

fn qsfs_env(site: Option<&SiteSettings>) -> String {
    let zdb = site.map(|s| s.zdb.clone()).unwrap_or_default();
    let zdbfs = site.map(|s| s.zdbfs.clone()).unwrap_or_default();
    let address = site
        .map(|s| s.minio.address.clone())
        .unwrap_or_else(|| ":9000".to_string());
    let ZdbSite {
        datasize,
        rotate_secs,
        synctime_secs,
    } = zdb;
    let ZdbfsSite { size } = zdbfs;
    let from = if site.is_some() {
        "the site settings"
    } else {
        "the defaults (no site settings)"
    };
    format!(
        "# Environment of the qsfs units (EnvironmentFile=/var/zdbfs/etc/qsfs.env), rendered by\n\
         # qsfs-image from {from}. Edit a value and restart qsfs.target to apply it.\n\n\
         # zdb --datasize, in bytes: a data file is sealed and uploaded at this size.\n\
         ZDB_DATASIZE={}\n\
         # zdb --rotate, in seconds: seal an updated namespace's files after this long (0: off).\n\
         ZDB_ROTATE_SECS={rotate_secs}\n\
         # zdb --synctime, in seconds: force a sync to disk after this long (0: off).\n\
         ZDB_SYNCTIME_SECS={synctime_secs}\n\
         # zdbfs -o size=, in bytes: the filesystem size zdbfs reports.\n\
         ZDBFS_SIZE={}\n\
         # minio server --address: where the S3 endpoint listens.\n\
         MINIO_ADDRESS={address}\n",
        datasize.0, size.0
    )
}

/// A parsed env file: variable → (value, 1-based line).
pub type EnvFile = BTreeMap<String, (String, usize)>;

/// Parses systemd `EnvironmentFile=` syntax as this module writes it: `KEY=value` lines,
/// values optionally in double or single quotes, `#`/`;` comment lines. An error gives the
/// line and what is wrong (never the value).
pub fn parse_env(text: &str) -> Result<EnvFile, (usize, String)> {
    let mut vars = EnvFile::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err((number, "expected KEY=value".to_string()));
        };
        let key = key.trim();
        let valid_key = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err((number, format!("`{key}` is not a variable name")));
        }
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| {
                value
                    .strip_prefix(*q)
                    .and_then(|v| v.strip_suffix(*q))
                    .filter(|_| value.len() >= 2)
            })
            .unwrap_or(value);
        vars.insert(key.to_string(), (value.to_string(), number));
    }
    Ok(vars)
}

fn env_error(path: &Path, key: Option<&str>, line: Option<usize>, message: String) -> ConfigError {
    ConfigError {
        path: path.to_path_buf(),
        key: key.map(str::to_string),
        position: line.map(|l| (l, 1)),
        problem: Problem::InvalidValue,
        message,
    }
}

/// A credential that is one value (MinIO's user or password): one line, no spaces, at least
/// as long as MinIO wants. The error never shows the value.
fn validate_value(name: &str, path: &Path) -> Result<(), ConfigError> {
    let text = crate::config::read(path)?;
    let value = text.trim();
    let min = MINIO_MIN_LEN
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(1, |(_, min)| *min);
    let problem = if value.chars().count() < min {
        format!("must hold one value of at least {min} characters")
    } else if value.contains(char::is_whitespace) {
        "must hold one value without spaces or line breaks".to_string()
    } else {
        return Ok(());
    };
    Err(env_error(path, None, None, problem))
}

fn validate_env(path: &Path, required: &[&str], numeric: &[&str]) -> Result<(), ConfigError> {
    let text = crate::config::read(path)?;
    let vars = parse_env(&text).map_err(|(line, message)| ConfigError {
        problem: Problem::Syntax,
        ..env_error(path, None, Some(line), message)
    })?;
    for key in required {
        match vars.get(*key) {
            None => {
                return Err(ConfigError {
                    problem: Problem::MissingKey,
                    ..env_error(path, Some(key), None, format!("{key} is not set"))
                })
            }
            Some((value, line)) if value.is_empty() => {
                return Err(env_error(
                    path,
                    Some(key),
                    Some(*line),
                    "is empty".to_string(),
                ))
            }
            Some((value, line)) if numeric.contains(key) && value.parse::<u64>().is_err() => {
                return Err(env_error(
                    path,
                    Some(key),
                    Some(*line),
                    format!("`{value}` is not a whole number"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks an appliance config file with the parser its program uses (`name` is the file's
/// name in `/var/zdbfs/etc`). Files without a known parser pass.
pub fn validate_config(name: &str, path: &Path) -> Result<(), ConfigError> {
    match name {
        ZSTOR_CONFIG => {
            let text = crate::config::read(path)?;
            let source = Source::new(path, &text);
            let config: ZstorConfig = source.parse_valid()?;
            let expect = |key: &str, actual: Option<&Path>, wanted: &str| {
                if actual == Some(Path::new(wanted)) {
                    Ok(())
                } else {
                    Err(source.invalid(
                        key,
                        format!(
                            "must be \"{wanted}\": the qsfs units and programs expect it there"
                        ),
                    ))
                }
            };
            expect("socket", config.socket.as_deref(), ZSTOR_SOCKET)?;
            expect("pid_file", config.pid_file.as_deref(), ZSTOR_PID_FILE)?;
            expect(
                "zdbfs_mountpoint",
                config.zdbfs_mountpoint.as_deref(),
                MOUNTPOINT,
            )?;
            for (key, set) in [
                ("zdb_data_dir_path", config.zdb_data_dir_path.is_some()),
                (
                    "max_zdb_data_dir_size",
                    config.max_zdb_data_dir_size.is_some(),
                ),
            ] {
                if set {
                    return Err(source.invalid(
                        key,
                        "remove it: zstor_monitor evicts the cache (max_zdb_data_dir_size in \
                         monitor_config.toml); zstor's own eviction would delete files that are \
                         not verified remote",
                    ));
                }
            }
            Ok(())
        }
        MONITOR_CONFIG => MonitorConfig::load(path).map(drop),
        QSFS_TOML => crate::health::config::HealthConfig::load(path).map(drop),
        QSFS_ENV => validate_env(
            path,
            QSFS_ENV_KEYS,
            &[
                "ZDB_DATASIZE",
                "ZDB_ROTATE_SECS",
                "ZDB_SYNCTIME_SECS",
                "ZDBFS_SIZE",
            ],
        ),
        MINIO_USER | MINIO_PASSWORD => validate_value(name, path),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::site::tests::{load, sample, KEY};

    fn rendered(site: Option<&SiteSettings>) -> BTreeMap<&'static str, RenderedFile> {
        render(site)
            .unwrap()
            .into_iter()
            .map(|f| (f.name, f))
            .collect()
    }

    #[test]
    fn rendered_files_load_with_the_appliance_parsers() {
        let site = load(&sample()).unwrap();
        let files = render(Some(&site)).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                MINIO_PASSWORD,
                MINIO_USER,
                ZSTOR_CONFIG,
                MONITOR_CONFIG,
                QSFS_ENV
            ],
            "sorted"
        );
        let scratch = tempfile::tempdir().unwrap();
        check_rendered(&files, scratch.path()).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let files = rendered(Some(&site));
        let zstor_path = dir.path().join("zstor.toml");
        std::fs::write(&zstor_path, &files[ZSTOR_CONFIG].text).unwrap();
        let zstor = ZstorConfig::load(&zstor_path).unwrap();
        assert_eq!((zstor.minimal_shards, zstor.expected_shards), (2, 4));
        assert_eq!(zstor.socket.as_deref(), Some(Path::new(ZSTOR_SOCKET)));
        assert_eq!(zstor.pid_file.as_deref(), Some(Path::new(ZSTOR_PID_FILE)));
        assert_eq!(
            zstor.zdbfs_mountpoint.as_deref(),
            Some(Path::new(MOUNTPOINT))
        );
        assert!(zstor.zdb_data_dir_path.is_none() && zstor.max_zdb_data_dir_size.is_none());
        assert_eq!(zstor.meta_backends().len(), 4);
        assert_eq!(zstor.data_backends().count(), 4);
        assert_eq!(zstor.groups.len(), 2);
        assert_eq!(zstor.encryption.key.expose(), KEY);
        assert_eq!(zstor.meta.config.encryption.key.expose(), KEY);
        let first = zstor.data_backends().next().unwrap();
        assert_eq!(first.password.as_ref().unwrap().expose(), "backend-pass-1");
        assert_eq!(first.label(), "10.0.0.1:9900/data-0-1");
        let text = &files[ZSTOR_CONFIG].text;
        assert!(
            !text.contains("zdb_data_dir_path =") && !text.contains("\nroot ="),
            "{text}"
        );

        let monitor_path = dir.path().join(MONITOR_CONFIG);
        std::fs::write(&monitor_path, &files[MONITOR_CONFIG].text).unwrap();
        let monitor = MonitorConfig::load(&monitor_path).unwrap();
        assert_eq!(monitor.max_zdb_data_dir_size, Some(2048));
        assert_eq!(
            monitor.zstor_config_path,
            Path::new(crate::layout::ZSTOR_CONFIG)
        );

        let env = parse_env(&files[QSFS_ENV].text).unwrap();
        assert_eq!(env["ZDB_DATASIZE"].0, (32u64 << 20).to_string());
        assert_eq!(env["ZDB_ROTATE_SECS"].0, "600");
        assert_eq!(env["ZDBFS_SIZE"].0, (1u64 << 40).to_string());
        assert_eq!(env["MINIO_ADDRESS"].0, "[::]:9000");
        assert_eq!(files[MINIO_USER].text, "qsfs\n");
        assert_eq!(files[MINIO_PASSWORD].text, "minio-secret-pass\n");
        assert!(!format!("{:?}", files[MINIO_PASSWORD]).contains("minio-secret-pass"));
    }

    #[test]
    fn per_backend_passwords_win_over_the_default() {
        let text = sample().replacen(
            "namespace = \"data-0-1\"\n",
            "namespace = \"data-0-1\"\npassword = \"own-password\"\n",
            1,
        );
        let site = load(&text).unwrap();
        let files = rendered(Some(&site));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zstor.toml");
        std::fs::write(&path, &files[ZSTOR_CONFIG].text).unwrap();
        let zstor = ZstorConfig::load(&path).unwrap();
        let passwords: Vec<_> = zstor
            .data_backends()
            .map(|b| b.password.as_ref().unwrap().expose().to_string())
            .collect();
        assert_eq!(passwords[0], "own-password");
        assert_eq!(passwords[1], "backend-pass-1");
    }

    #[test]
    fn without_site_settings_only_the_unit_environment_is_rendered() {
        let files = render(None).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].name, QSFS_ENV);
        let env = parse_env(&files[0].text).unwrap();
        for key in QSFS_ENV_KEYS {
            assert!(env.contains_key(*key), "{key}");
        }
        assert_eq!(env["ZDB_DATASIZE"].0, (64u64 << 20).to_string());
        let scratch = tempfile::tempdir().unwrap();
        check_rendered(&files, scratch.path()).unwrap();
    }

    #[test]
    fn validate_config_catches_what_the_units_need() {
        let dir = tempfile::tempdir().unwrap();
        let site = load(&sample()).unwrap();
        let files = rendered(Some(&site));
        let path = dir.path().join("zstor.toml");
        let good = files[ZSTOR_CONFIG].text.clone();
        let cases = [
            (
                good.replace("/run/qsfs/zstor.sock", "/tmp/zstor.sock"),
                "socket",
            ),
            (
                good.replace(
                    "socket =",
                    "zdb_data_dir_path = \"/var/zdbfs/data/zdbfs-data\"\nsocket =",
                ),
                "zdb_data_dir_path",
            ),
        ];
        for (text, key) in cases {
            std::fs::write(&path, text).unwrap();
            let err = validate_config(ZSTOR_CONFIG, &path).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
            assert!(err.position.is_some(), "{err}");
        }

        let env = dir.path().join(QSFS_ENV);
        let cases = [
            ("ZDB_DATASIZE=1\n", Some("ZDB_ROTATE_SECS"), None),
            (
                "ZDB_DATASIZE=big\nZDB_ROTATE_SECS=1\nZDB_SYNCTIME_SECS=1\nZDBFS_SIZE=1\nMINIO_ADDRESS=:9000\n",
                Some("ZDB_DATASIZE"),
                Some(1),
            ),
            ("# comment\nnot a line\n", None, Some(2)),
        ];
        for (text, key, line) in cases {
            std::fs::write(&env, text).unwrap();
            let err = validate_config(QSFS_ENV, &env).unwrap_err();
            assert_eq!(err.key.as_deref(), key, "{err}");
            assert_eq!(err.position.map(|p| p.0), line, "{err}");
        }
        let minio = dir.path().join("minio-root-password");
        for (text, problem) in [
            ("short\n", "at least 8 characters"),
            ("long enough\n", "without spaces"),
        ] {
            std::fs::write(&minio, text).unwrap();
            let err = validate_config(MINIO_PASSWORD, &minio)
                .unwrap_err()
                .to_string();
            assert!(err.contains(problem) && !err.contains(text.trim()), "{err}");
        }
        std::fs::write(&minio, "qsfs\n").unwrap();
        validate_config(MINIO_USER, &minio).unwrap();

        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc");
        validate_config(QSFS_TOML, &shipped.join(QSFS_TOML)).unwrap();
        validate_config(MONITOR_CONFIG, &shipped.join(MONITOR_CONFIG)).unwrap();
    }
}
