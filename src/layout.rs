//! Every fixed path of the appliance and every fact of zdb's file layout, in one place.
//!
//! The config files may move most of the paths; these are their defaults, and the names zdb
//! and zdbfs use on disk, which nothing can move.

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
pub fn highest_file_number(dir: &std::path::Path, prefix: char) -> Option<u32> {
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
/// The zstor config file.
pub const ZSTOR_CONFIG: &str = "/var/zdbfs/etc/zstor-default.toml";
/// zstor's own log file.
pub const ZSTOR_LOG: &str = "/var/zdbfs/log/zstor.log";

/// zdb's unix socket.
pub const ZDB_SOCKET: &str = "/run/qsfs/zdb.sock";
/// The zstor daemon's unix socket.
pub const ZSTOR_SOCKET: &str = "/run/qsfs/zstor.sock";
/// The zstor daemon's pid file.
pub const ZSTOR_PID_FILE: &str = "/run/qsfs/zstor.pid";
/// The status `zstor_monitor` publishes.
pub const MONITOR_STATUS: &str = "/run/qsfs/monitor-status.json";
/// The report `qsfs-health serve` publishes.
pub const HEALTH_STATUS: &str = "/run/qsfs/health-status.json";

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
}
