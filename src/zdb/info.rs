//! Typed `INFO` and `NSINFO` replies, with 0-db's exact field names.
//!
//! Both replies are bulk strings of `key: value` lines with `# section` headers. Fields that
//! 0-db only sends in some cases (a limit is set, statvfs worked, the client is admin) are
//! `Option`s; a field that is always sent but missing or malformed is an error.

use serde::Serialize;
use std::collections::BTreeMap;
use std::str::FromStr;

/// A reply field is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reply} reply: field `{field}` {problem}")]
pub struct FieldError {
    /// `INFO` or `NSINFO`.
    pub reply: &'static str,
    /// The field.
    pub field: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

struct Fields {
    reply: &'static str,
    map: BTreeMap<String, String>,
}

impl Fields {
    fn parse(reply: &'static str, text: &str) -> Self {
        let map = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once(':'))
            .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
            .collect();
        Fields { reply, map }
    }

    fn optional<T: FromStr>(&self, field: &str) -> Result<Option<T>, FieldError> {
        match self.map.get(field) {
            None => Ok(None),
            Some(value) => value.parse().map(Some).map_err(|_| FieldError {
                reply: self.reply,
                field: field.to_string(),
                problem: "is malformed",
            }),
        }
    }

    fn required<T: FromStr>(&self, field: &str) -> Result<T, FieldError> {
        self.optional(field)?.ok_or_else(|| FieldError {
            reply: self.reply,
            field: field.to_string(),
            problem: "is missing",
        })
    }

    fn yes_no(&self, field: &str) -> Result<bool, FieldError> {
        match self.required::<String>(field)?.as_str() {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => Err(FieldError {
                reply: self.reply,
                field: field.to_string(),
                problem: "is not yes or no",
            }),
        }
    }
}

/// The server-wide `INFO` reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Info {
    /// `server_name`, for example `0-db (zdb)`.
    pub server_name: String,
    /// `server_revision` (a git revision; there is no semantic version).
    pub server_revision: Option<String>,
    /// `engine_revision`.
    pub engine_revision: Option<String>,
    /// `instance_id`.
    pub instance_id: Option<String>,
    /// `boot_time`, unix seconds.
    pub boot_time: Option<u64>,
    /// `uptime`, seconds.
    pub uptime: Option<u64>,
    /// `sequential_key_size`: zdbfs needs 8.
    pub sequential_key_size: Option<u64>,
    /// `data_version`.
    pub data_version: Option<u64>,
    /// `index_version`.
    pub index_version: Option<u64>,
    /// `commands_failed`.
    pub commands_failed: Option<u64>,
    /// `index_disk_read_failed`.
    pub index_disk_read_failed: Option<u64>,
    /// `index_disk_write_failed`.
    pub index_disk_write_failed: Option<u64>,
    /// `data_disk_read_failed`.
    pub data_disk_read_failed: Option<u64>,
    /// `data_disk_write_failed`.
    pub data_disk_write_failed: Option<u64>,
}

impl Info {
    /// Parses the bulk text of an `INFO` reply.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let f = Fields::parse("INFO", text);
        Ok(Info {
            server_name: f.required("server_name")?,
            server_revision: f.optional("server_revision")?,
            engine_revision: f.optional("engine_revision")?,
            instance_id: f.optional("instance_id")?,
            boot_time: f.optional("boot_time")?,
            uptime: f.optional("uptime")?,
            sequential_key_size: f.optional("sequential_key_size")?,
            data_version: f.optional("data_version")?,
            index_version: f.optional("index_version")?,
            commands_failed: f.optional("commands_failed")?,
            index_disk_read_failed: f.optional("index_disk_read_failed")?,
            index_disk_write_failed: f.optional("index_disk_write_failed")?,
            data_disk_read_failed: f.optional("data_disk_read_failed")?,
            data_disk_write_failed: f.optional("data_disk_write_failed")?,
        })
    }

    /// Total disk read and write failures since boot.
    pub fn disk_failures(&self) -> u64 {
        [
            self.index_disk_read_failed,
            self.index_disk_write_failed,
            self.data_disk_read_failed,
            self.data_disk_write_failed,
        ]
        .into_iter()
        .flatten()
        .sum()
    }
}

/// A namespace's key mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `userkey`: the client chooses keys (zstor's meta backends).
    Userkey,
    /// `sequential`: zdb assigns 8-byte keys (zdbfs namespaces, zstor's data backends).
    Sequential,
}

impl FromStr for Mode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "userkey" => Ok(Mode::Userkey),
            "sequential" => Ok(Mode::Sequential),
            _ => Err(()),
        }
    }
}

/// A namespace's `NSINFO` reply. `password_raw` is never kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NsInfo {
    /// `name`
    pub name: String,
    /// `entries`
    pub entries: u64,
    /// `public` (yes/no)
    pub public: bool,
    /// `worm` (yes/no)
    pub worm: bool,
    /// `locked` (yes/no)
    pub locked: bool,
    /// `password` (yes/no: whether one is set)
    pub password: bool,
    /// `data_size_bytes`
    pub data_size_bytes: u64,
    /// `data_limits_bytes`: 0 means unlimited.
    pub data_limits_bytes: u64,
    /// `index_size_bytes`
    pub index_size_bytes: u64,
    /// `next_internal_id` (hex)
    pub next_internal_id: String,
    /// `mode`
    pub mode: Mode,
    /// `stats_index_io_errors`
    pub stats_index_io_errors: u64,
    /// `stats_index_faults`
    pub stats_index_faults: u64,
    /// `stats_data_io_errors`
    pub stats_data_io_errors: u64,
    /// `stats_data_faults`
    pub stats_data_faults: u64,
    /// `space_available`: only when a limit is set.
    pub space_available: Option<u64>,
    /// `index_disk_freespace_bytes`: absent when statvfs failed.
    pub index_disk_freespace_bytes: Option<u64>,
    /// `data_disk_freespace_bytes`: absent when statvfs failed.
    pub data_disk_freespace_bytes: Option<u64>,
    /// `data_path` (admin only)
    pub data_path: Option<String>,
    /// `index_path` (admin only)
    pub index_path: Option<String>,
    /// `data_current_id` (admin only, since v2.0.5)
    pub data_current_id: Option<u64>,
    /// `data_current_offset` (admin only, since v2.0.5)
    pub data_current_offset: Option<u64>,
}

impl NsInfo {
    /// Parses the bulk text of an `NSINFO` reply.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let f = Fields::parse("NSINFO", text);
        Ok(NsInfo {
            name: f.required("name")?,
            entries: f.required("entries")?,
            public: f.yes_no("public")?,
            worm: f.yes_no("worm")?,
            locked: f.yes_no("locked")?,
            password: f.yes_no("password")?,
            data_size_bytes: f.required("data_size_bytes")?,
            data_limits_bytes: f.required("data_limits_bytes")?,
            index_size_bytes: f.required("index_size_bytes")?,
            next_internal_id: f.required("next_internal_id")?,
            mode: f
                .required::<String>("mode")?
                .parse()
                .map_err(|()| FieldError {
                    reply: "NSINFO",
                    field: "mode".into(),
                    problem: "is neither userkey nor sequential",
                })?,
            stats_index_io_errors: f.required("stats_index_io_errors")?,
            stats_index_faults: f.required("stats_index_faults")?,
            stats_data_io_errors: f.required("stats_data_io_errors")?,
            stats_data_faults: f.required("stats_data_faults")?,
            space_available: f.optional("space_available")?,
            index_disk_freespace_bytes: f.optional("index_disk_freespace_bytes")?,
            data_disk_freespace_bytes: f.optional("data_disk_freespace_bytes")?,
            data_path: f.optional("data_path")?,
            index_path: f.optional("index_path")?,
            data_current_id: f.optional("data_current_id")?,
            data_current_offset: f.optional("data_current_offset")?,
        })
    }

    /// The namespace size limit, `None` when unlimited (`data_limits_bytes` is 0).
    pub fn limit(&self) -> Option<u64> {
        (self.data_limits_bytes > 0).then_some(self.data_limits_bytes)
    }

    /// How full the namespace is, in percent of its limit; `None` when it has no limit (the
    /// appliance then treats the backend as unlimited).
    pub fn fill_percent(&self) -> Option<f64> {
        self.limit()
            .map(|limit| 100.0 * self.data_size_bytes as f64 / limit as f64)
    }

    /// Index plus data I/O errors counted by zdb.
    pub fn io_errors(&self) -> u64 {
        self.stats_index_io_errors + self.stats_data_io_errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NSINFO reply as 0-db v2.0.7 sends it to an admin client, with a limit set.
    pub const NSINFO_LIMITED: &str = "# namespace\nname: zdbfs-data\nentries: 12\npublic: yes\nworm: no\nlocked: no\npassword: no\ndata_size_bytes: 5000\ndata_size_mb: 0.00\ndata_limits_bytes: 10000\nindex_size_bytes: 540\nindex_size_kb: 0.53\nnext_internal_id: 0x0000000c\nmode: sequential\nstats_index_io_errors: 0\nstats_index_io_error_last: 0\nstats_index_faults: 0\nstats_data_io_errors: 1\nstats_data_io_error_last: 1700000000\nstats_data_faults: 0\nspace_available: 5000\nindex_disk_freespace_bytes: 1000000\nindex_disk_freespace_mb: 0.95\ndata_disk_freespace_bytes: 2000000\ndata_disk_freespace_mb: 1.91\npassword_raw: hunter2\ndata_path: /var/zdbfs/data/zdbfs-data\ndata_active: /var/zdbfs/data/zdbfs-data/d3\nindex_path: /var/zdbfs/index/zdbfs-data\nindex_active: /var/zdbfs/index/zdbfs-data/i3\ndata_current_id: 3\ndata_current_offset: 4096\n";

    #[test]
    fn nsinfo_with_limit_and_admin_fields() {
        let ns = NsInfo::parse(NSINFO_LIMITED).unwrap();
        assert_eq!(ns.name, "zdbfs-data");
        assert_eq!(ns.mode, Mode::Sequential);
        assert!(ns.public && !ns.password);
        assert_eq!(ns.limit(), Some(10000));
        assert_eq!(ns.fill_percent(), Some(50.0));
        assert_eq!(ns.space_available, Some(5000));
        assert_eq!(ns.data_current_id, Some(3));
        assert_eq!(ns.io_errors(), 1);
        assert!(!serde_json::to_string(&ns).unwrap().contains("hunter2"));
    }

    #[test]
    fn nsinfo_unlimited_without_optional_fields() {
        let text = NSINFO_LIMITED
            .lines()
            .filter(|l| {
                !l.starts_with("space_available")
                    && !l.contains("freespace")
                    && !l.contains("_path")
                    && !l.contains("_current_")
                    && !l.contains("_active")
            })
            .map(|l| {
                if l.starts_with("data_limits_bytes") {
                    "data_limits_bytes: 0".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let ns = NsInfo::parse(&text).unwrap();
        assert_eq!(ns.limit(), None);
        assert_eq!(ns.fill_percent(), None);
        assert_eq!(ns.data_disk_freespace_bytes, None);
        assert_eq!(ns.data_path, None);
    }

    #[test]
    fn nsinfo_errors_name_the_field() {
        let err =
            NsInfo::parse(&NSINFO_LIMITED.replace("entries: 12", "entries: many")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "NSINFO reply: field `entries` is malformed"
        );
        let err =
            NsInfo::parse(&NSINFO_LIMITED.replace("mode: sequential", "mode: direct")).unwrap_err();
        assert_eq!(err.field, "mode");
        let err = NsInfo::parse("# namespace\nname: x\n").unwrap_err();
        assert_eq!(err.problem, "is missing");
    }

    #[test]
    fn info_reply() {
        let text = "# server\nserver_name: 0-db (zdb)\nserver_revision: v2.0.7\nengine_revision: v2.0.7\ninstance_id: 7\nboot_time: 1700000000\nuptime: 12\n\n# stats\nsequential_key_size: 8\ndata_version: 3\nindex_version: 4\ncommands_failed: 0\nindex_disk_read_failed: 1\ndata_disk_write_failed: 2\n";
        let info = Info::parse(text).unwrap();
        assert_eq!(info.server_name, "0-db (zdb)");
        assert_eq!(info.sequential_key_size, Some(8));
        assert_eq!(info.disk_failures(), 3);
        assert!(Info::parse("uptime: 1\n").is_err());
    }
}
