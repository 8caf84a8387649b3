//! Every fixed path of the appliance and every fact of zdb's file layout, in one place.
//!
//! The config files may move most of the paths; these are their defaults, and the names zdb
//! and zdbfs use on disk, which nothing can move.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// zdbfs's metadata namespace.
pub const META_NAMESPACE: &str = "zdbfs-meta";
/// zdbfs's data namespace.
pub const DATA_NAMESPACE: &str = "zdbfs-data";
/// zdbfs's scratch namespace: never uploaded, never restored.
pub const TEMP_NAMESPACE: &str = "zdbfs-temp";
/// The namespaces zdbfs uses (zdbfs 0.1.11 ignores other names).
pub const ZDBFS_NAMESPACES: [&str; 3] = [META_NAMESPACE, DATA_NAMESPACE, TEMP_NAMESPACE];
/// The namespaces a fresh VM restores from the backends.
pub const RESTORED_NAMESPACES: [&str; 2] = [META_NAMESPACE, DATA_NAMESPACE];
/// The file of a namespace's index directory that describes it.
pub const NAMESPACE_FILE: &str = "zdb-namespace";

/// The prefix of zdb's index files (`i<N>`).
pub const INDEX_PREFIX: char = 'i';
/// The prefix of zdb's data files (`d<N>`).
pub const DATA_PREFIX: char = 'd';

/// The size of an index file without entries: 0-db 2.0.7's packed `index_header_t` (magic,
/// version, creation and open times, file id, mode), measured on the real zdb.
pub const INDEX_HEADER_LEN: u64 = 29;
/// The size of a data file without entries (0-db 2.0.7's `data_header_t`, measured).
pub const DATA_HEADER_LEN: u64 = 28;

/// Whether the index file `i<n>` of `index_dir` and the data file `d<n>` of `data_dir` hold
/// no entry (or are absent): a pair zdb opened at a jump and never wrote to.
pub fn pair_is_empty(index_dir: &Path, data_dir: &Path, n: u32) -> bool {
    let no_more_than =
        |path: PathBuf, len: u64| std::fs::metadata(path).map_or(true, |meta| meta.len() <= len);
    no_more_than(index_dir.join(index_file(n)), INDEX_HEADER_LEN)
        && no_more_than(data_dir.join(data_file(n)), DATA_HEADER_LEN)
}

/// Whether index file `i<n>` of `index_dir` holds an entry. zdb 2.0.7 maps the ids of an index
/// file when it jumps to it (or loads its first entry), so a jump away from one without entries
/// maps two files to the same first id, and what is then written to the new one cannot be
/// found (GET answers nothing; an overwrite lands in the empty file) until zdb restarts. Seen
/// on the real zdb: SET, SET, NSJUMP, NSJUMP, SET, and GET of the last id answers nothing.
pub fn index_has_entries(index_dir: &Path, n: u32) -> bool {
    std::fs::metadata(index_dir.join(index_file(n))).is_ok_and(|meta| meta.len() > INDEX_HEADER_LEN)
}

/// The name of index file number `id`: `i<id>`.
pub fn index_file(id: u32) -> String {
    format!("{INDEX_PREFIX}{id}")
}

/// The name of data file number `id`: `d<id>`.
pub fn data_file(id: u32) -> String {
    format!("{DATA_PREFIX}{id}")
}

/// The number of a file named `<prefix><N>` ([`INDEX_PREFIX`] or [`DATA_PREFIX`]).
pub fn file_number(name: &str, prefix: char) -> Option<u32> {
    name.strip_prefix(prefix)?.parse().ok()
}

/// The highest N of the files `<prefix><N>` in `dir`.
pub fn highest_file_number(dir: &Path, prefix: char) -> Option<u32> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| file_number(e.file_name().to_str()?, prefix))
        .max()
}

/// zdb's index root.
pub const INDEX_DIR: &str = "/var/zdbfs/index";
/// zdb's data root.
pub const DATA_DIR: &str = "/var/zdbfs/data";
/// Upload jobs written by `zdb-hook` and consumed by `zstor_monitor`.
pub const SPOOL_DIR: &str = "/var/zdbfs/spool";
/// `zstor_monitor`'s durable state.
pub const STATE_DIR: &str = "/var/zdbfs/state";
/// The zdbfs mountpoint served by MinIO.
pub const MOUNTPOINT: &str = "/var/zdbfs/mnt";
/// The appliance config (`qsfs.toml`) when `QSFS_CONFIG` is not set.
pub const QSFS_CONFIG: &str = "/var/zdbfs/etc/qsfs.toml";
/// The units' environment file (`qsfs.env`).
pub const UNITS_ENV: &str = "/var/zdbfs/etc/qsfs.env";
/// The zstor binary.
pub const ZSTOR_BIN: &str = "/var/zdbfs/bin/zstor";
/// The credential store: the secrets the units load as systemd credentials (`LoadCredential=`,
/// or `LoadCredentialEncrypted=` once `qsfs-image configure` encrypted them), mode 0700.
pub const CREDSTORE: &str = "/var/zdbfs/etc/credstore";
/// The credential that holds zstor's config (backends, passwords, the key), given to zstor,
/// zstor_monitor and zdb (for zdb-hook, its child), and to no other unit.
pub const ZSTOR_CREDENTIAL: &str = "zstor.toml";
/// The credential that holds MinIO's root user (MinIO reads it from `MINIO_ROOT_USER_FILE`).
pub const MINIO_USER_CREDENTIAL: &str = "minio-root-user";
/// The credential that holds MinIO's root password (`MINIO_ROOT_PASSWORD_FILE`).
pub const MINIO_PASSWORD_CREDENTIAL: &str = "minio-root-password";
/// The zstor config file outside the units: the credential store's copy.
pub const ZSTOR_CONFIG: &str = "/var/zdbfs/etc/credstore/zstor.toml";

/// Where a program reads credential `name`: in `$CREDENTIALS_DIRECTORY` when systemd set it and
/// the unit loads this credential, else at `configured` (a unit may load other credentials: MinIO's
/// `qsfs-health wait s3` runs with MinIO's).
pub fn credential(name: &str, configured: &Path) -> PathBuf {
    credential_in(
        std::env::var_os("CREDENTIALS_DIRECTORY").as_deref(),
        name,
        configured,
    )
}

/// [`credential`] with the value of `$CREDENTIALS_DIRECTORY` given.
pub fn credential_in(directory: Option<&OsStr>, name: &str, configured: &Path) -> PathBuf {
    match directory.filter(|d| !d.is_empty()) {
        Some(directory) if Path::new(directory).join(name).exists() => {
            Path::new(directory).join(name)
        }
        _ => configured.to_path_buf(),
    }
}

/// The zstor config a program uses: the credential [`ZSTOR_CREDENTIAL`] in
/// `$CREDENTIALS_DIRECTORY` when set, else the configured path (qsfs.toml `[zstor] config`,
/// monitor_config.toml `zstor_config_path`).
pub fn zstor_config(configured: &Path) -> PathBuf {
    credential(ZSTOR_CREDENTIAL, configured)
}
/// zstor's own log file.
pub const ZSTOR_LOG: &str = "/var/zdbfs/log/zstor.log";

/// zdb's unix socket.
pub const ZDB_SOCKET: &str = "/run/qsfs/zdb.sock";
/// The zstor daemon's unix socket.
pub const ZSTOR_SOCKET: &str = "/run/qsfs/zstor.sock";
/// The hook's read lane: `qsfs-zstor-reads.socket` (zstor check and retrieve for zdb-hook).
pub const ZSTOR_READS_SOCKET: &str = "/run/qsfs/zstor-reads.sock";
/// The zstor daemon's pid file.
pub const ZSTOR_PID_FILE: &str = "/run/qsfs/zstor.pid";
/// The status `zstor_monitor` publishes.
pub const MONITOR_STATUS: &str = "/run/qsfs/monitor-status.json";
/// The report `qsfs-health serve` publishes.
pub const HEALTH_STATUS: &str = "/run/qsfs/health-status.json";
/// On the operator's machine: where `qsfs-image try` keeps its rootfs, built once.
pub const TRY_CACHE_DIR: &str = "/var/cache/qsfs";
/// On the operator's machine: where `qsfs-image try` makes its containers (not /tmp: a
/// tmpfs may be too small for a rootfs).
pub const TRY_WORK_DIR: &str = "/var/tmp/qsfs-try";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(index_file(3), "i3");
        assert_eq!(data_file(12), "d12");
        assert_eq!(file_number("i3", INDEX_PREFIX), Some(3));
        assert_eq!(file_number("d12", DATA_PREFIX), Some(12));
        assert_eq!(file_number("d12", INDEX_PREFIX), None);
        assert_eq!(file_number("dx", DATA_PREFIX), None);
        assert_eq!(file_number(NAMESPACE_FILE, DATA_PREFIX), None);
    }

    #[test]
    fn a_credential_is_read_from_the_credentials_directory_when_systemd_set_it() {
        let configured = Path::new("/etc/zstor.toml");
        let credentials = tempfile::tempdir().unwrap();
        std::fs::write(credentials.path().join(ZSTOR_CREDENTIAL), "").unwrap();
        let dir = credentials.path().as_os_str();
        assert_eq!(
            credential_in(Some(dir), ZSTOR_CREDENTIAL, configured),
            credentials.path().join("zstor.toml")
        );
        // A unit that loads other credentials only.
        assert_eq!(
            credential_in(Some(dir), MINIO_USER_CREDENTIAL, configured),
            configured
        );
        assert_eq!(
            credential_in(None, ZSTOR_CREDENTIAL, configured),
            configured
        );
        assert_eq!(
            credential_in(Some(OsStr::new("")), ZSTOR_CREDENTIAL, configured),
            configured
        );
        assert!(Path::new(ZSTOR_CONFIG).starts_with(CREDSTORE));
        assert!(ZSTOR_CONFIG.ends_with(ZSTOR_CREDENTIAL));
    }
}
