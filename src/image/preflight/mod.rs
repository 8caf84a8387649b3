//! `qsfs-image preflight`: checks that this machine can run the appliance, before anything
//! starts (qsfs-config.service runs it first) or by hand.
//!
//! One check per module, each with its pure decision ([`Outcome`] from facts) apart from the
//! I/O that gathers the facts: [`systemd`] (version), [`fuse`] (`/dev/fuse` and the kernel
//! module), [`libraries`] (what the loader finds for the programs in `/var/zdbfs/bin`),
//! [`space`] (free space for zdb's data files), [`port`] (MinIO's address is free) and
//! [`clock`] (not before the image's build time). Machine facts (systemd, `/dev`, `/proc`, the
//! loader, the network) are this machine's; image facts (the programs, the configs, the
//! `MANIFEST`) are read under the given root. Every failure says what to install or change
//! and has its own exit code ([`super::exit`]); a fact that cannot be read is reported as
//! `unknown`, never guessed.

pub mod clock;
pub mod fuse;
pub mod libraries;
pub mod port;
pub mod space;
pub mod systemd;

use super::layout::{DEFAULT_SUFFIX, ETC, QSFS_ENV};
use super::render::{parse_env, validate_config, EnvFile};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The machine meets the requirement.
    Ok,
    /// It does not; the message says what to install or change.
    Failed,
    /// A fact the check needs could not be read (the message says which and why).
    Unknown,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The check's name.
    pub check: &'static str,
    /// How it ended.
    pub status: Status,
    /// What was found, and on failure what to do.
    pub message: String,
    /// The exit code of a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl Outcome {
    /// A passed check.
    pub fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Outcome {
            check,
            status: Status::Ok,
            message: message.into(),
            exit_code: None,
        }
    }

    /// A failed check with its exit code.
    pub fn failed(check: &'static str, exit_code: i32, message: impl Into<String>) -> Self {
        Outcome {
            check,
            status: Status::Failed,
            message: message.into(),
            exit_code: Some(exit_code),
        }
    }

    /// A check that could not be made.
    pub fn unknown(check: &'static str, message: impl Into<String>) -> Self {
        Outcome {
            check,
            status: Status::Unknown,
            message: message.into(),
            exit_code: None,
        }
    }
}

/// Every check's outcome, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No check failed.
    pub ok: bool,
    /// The first failure's exit code, 0 when none failed.
    pub exit_code: i32,
    /// The outcomes.
    pub checks: Vec<Outcome>,
}

impl Report {
    /// The report of these outcomes.
    pub fn new(checks: Vec<Outcome>) -> Self {
        let exit_code = checks
            .iter()
            .find_map(|c| c.exit_code)
            .unwrap_or(super::exit::OK);
        Report {
            ok: exit_code == super::exit::OK,
            exit_code,
            checks,
        }
    }

    /// One line per check: `ok`, `FAILED` (with its exit code) or `unknown`.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for c in &self.checks {
            let status = match (c.status, c.exit_code) {
                (Status::Ok, _) => "ok".to_string(),
                (Status::Failed, Some(code)) => format!("FAILED ({code})"),
                (Status::Failed, None) => "FAILED".to_string(),
                (Status::Unknown, _) => "unknown".to_string(),
            };
            text.push_str(&format!("{status:<12} {:<10} {}\n", c.check, c.message));
        }
        text
    }
}

/// Runs every check on this machine, for the image unpacked under `root`.
pub fn run(root: &Path) -> Report {
    let env = UnitsEnv::read(root);
    Report::new(vec![
        systemd::check(),
        fuse::check(),
        libraries::check(root),
        space::check(root, &env),
        port::check(&env),
        clock::check(root, std::time::SystemTime::now()),
    ])
}

/// The units' environment file (`qsfs.env`), where the image's configs carry zdb's datasize
/// and MinIO's address.
pub enum UnitsEnv {
    /// Read and valid.
    Read {
        /// Its variables.
        vars: EnvFile,
        /// The file read: the installed one, or (before `install-config` ran) the shipped
        /// default it will be installed from.
        path: PathBuf,
    },
    /// Neither the installed file nor its default exists.
    Absent(String),
    /// The file is unreadable or invalid (the error names it, and the key).
    Invalid(String),
}

impl UnitsEnv {
    /// Reads `qsfs.env` under `root`, or its shipped default when it is not installed yet
    /// (preflight runs before `install-config`, which installs it from that default).
    pub fn read(root: &Path) -> Self {
        let installed = root.join(ETC).join(QSFS_ENV);
        let default = PathBuf::from(format!("{}{DEFAULT_SUFFIX}", installed.display()));
        let Some(path) = [&installed, &default].into_iter().find(|p| p.exists()) else {
            return UnitsEnv::Absent(format!(
                "neither {} nor {} exists (is the image unpacked under {}?)",
                installed.display(),
                default.display(),
                root.display()
            ));
        };
        let vars = validate_config(QSFS_ENV, path).and_then(|()| {
            let text = crate::config::read(path)?;
            Ok(parse_env(&text).unwrap_or_default())
        });
        match vars {
            Ok(vars) => UnitsEnv::Read {
                vars,
                path: path.clone(),
            },
            Err(e) => UnitsEnv::Invalid(e.to_string()),
        }
    }

    /// The value of `key` and the file it comes from; otherwise `check`'s outcome (unknown
    /// when the file is absent, failed with [`super::exit::PREFLIGHT_CONFIG`] when invalid).
    pub fn value(&self, check: &'static str, key: &str) -> Result<(&str, &Path), Outcome> {
        match self {
            UnitsEnv::Read { vars, path } => match vars.get(key) {
                Some((value, _)) => Ok((value, path)),
                None => Err(Outcome::failed(
                    check,
                    super::exit::PREFLIGHT_CONFIG,
                    format!("{}: {key} is not set", path.display()),
                )),
            },
            UnitsEnv::Absent(why) => Err(Outcome::unknown(
                check,
                format!("cannot check: {key} is not known: {why}"),
            )),
            UnitsEnv::Invalid(error) => Err(Outcome::failed(
                check,
                super::exit::PREFLIGHT_CONFIG,
                format!("cannot read {key}: {error}"),
            )),
        }
    }
}

/// `bytes` for a person: `512 KiB`, `64.0 MiB`, `3.2 GiB`.
pub fn size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB * KIB {
        format!("{:.0} KiB", b / KIB)
    } else if b < KIB * KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::exit;

    #[test]
    fn the_first_failure_gives_the_exit_code_and_every_check_is_printed() {
        let report = Report::new(vec![
            Outcome::ok("systemd", "systemd 252"),
            Outcome::unknown("space", "cannot check"),
            Outcome::failed("fuse", exit::PREFLIGHT_FUSE, "/dev/fuse does not exist"),
            Outcome::failed("clock", exit::PREFLIGHT_CLOCK, "behind"),
        ]);
        assert!(!report.ok);
        assert_eq!(report.exit_code, exit::PREFLIGHT_FUSE);
        let text = report.to_text();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(
            text.contains("FAILED (91)  fuse       /dev/fuse does not exist"),
            "{text}"
        );
        assert!(text.contains("unknown      space"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["checks"][2]["status"], "failed");
        assert_eq!(json["checks"][2]["exit_code"], 91);
        assert!(json["checks"][0].get("exit_code").is_none());
        let all_ok = Report::new(vec![Outcome::ok("systemd", "252")]);
        assert!(all_ok.ok);
        assert_eq!(all_ok.exit_code, 0);
    }

    #[test]
    fn the_units_env_comes_from_the_installed_file_else_its_default() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join(ETC);
        assert!(matches!(UnitsEnv::read(dir.path()), UnitsEnv::Absent(_)));
        let unknown = UnitsEnv::read(dir.path())
            .value("space", "ZDB_DATASIZE")
            .unwrap_err();
        assert_eq!(unknown.status, Status::Unknown);
        assert!(unknown.message.contains("qsfs.env.default"), "{unknown:?}");
        std::fs::create_dir_all(&etc).unwrap();
        let good = "ZDB_DATASIZE=1048576\nZDB_ROTATE_SECS=0\nZDB_SYNCTIME_SECS=1\nZDBFS_SIZE=1\nMINIO_ADDRESS=:9000\n";
        std::fs::write(etc.join("qsfs.env.default"), good).unwrap();
        let env = UnitsEnv::read(dir.path());
        let (value, path) = env.value("space", "ZDB_DATASIZE").unwrap();
        assert_eq!(value, "1048576");
        assert!(path.ends_with("qsfs.env.default"));
        std::fs::write(etc.join("qsfs.env"), good.replace("=:9000", "=:9100")).unwrap();
        let env = UnitsEnv::read(dir.path());
        let (value, path) = env.value("port", "MINIO_ADDRESS").unwrap();
        assert_eq!((value, path.ends_with("qsfs.env")), (":9100", true));
        std::fs::write(etc.join("qsfs.env"), good.replace("=1048576", "=big")).unwrap();
        let failed = UnitsEnv::read(dir.path())
            .value("space", "ZDB_DATASIZE")
            .unwrap_err();
        assert_eq!(failed.exit_code, Some(exit::PREFLIGHT_CONFIG));
        assert!(
            failed.message.contains("qsfs.env") && failed.message.contains("ZDB_DATASIZE"),
            "{failed:?}"
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(512 * 1024), "512 KiB");
        assert_eq!(size(64 << 20), "64.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }
}
