//! The zstor daemon (`zstor … monitor`), when the config names a `socket`: every CLI command
//! then runs in the daemon, with the config the daemon read at its start or at its last
//! SIGUSR1 (upstream `main.rs`), not the file as it is now. Before work that depends on a
//! changed config (a rebuild onto a new backend set) it must be asked to reload, and it must
//! read the same config as the monitor: under systemd each unit gets its own copy of the
//! credential `zstor.toml`, taken at the unit's start, which a SIGUSR1 does not renew.

use super::config::ZstorConfig;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// zstor's pid file when its config names none.
pub const DEFAULT_PID_FILE: &str = "/var/run/zstor.pid";

/// How to find the running daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    pid_file: PathBuf,
    /// `/proc/<pid>/comm` of a zstor started from the monitor's zstor binary.
    comm: String,
}

/// The daemon could not be asked to reload.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Its pid file cannot be read or holds no pid.
    #[error("cannot read the zstor daemon's pid from {path}: {problem}")]
    PidFile {
        /// The pid file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The pid is not a running zstor.
    #[error("pid {pid} (from {path}) is not a running zstor")]
    NotZstor {
        /// The pid found.
        pid: i32,
        /// The pid file.
        path: PathBuf,
    },
    /// The daemon reads another config than the caller (under systemd: a copy of the
    /// credential taken before it was changed), or its config cannot be read.
    #[error(
        "the zstor daemon (pid {pid}) reads {daemon_config}, which {problem} {config}: restart \
         qsfs-zstor.service (systemd copies the credential zstor.toml only when a unit starts)"
    )]
    OtherConfig {
        /// The pid.
        pid: i32,
        /// The daemon's config, as its `-c` names it.
        daemon_config: PathBuf,
        /// How it differs.
        problem: String,
        /// The caller's config.
        config: PathBuf,
    },
    /// The signal could not be sent.
    #[error("cannot signal the zstor daemon (pid {pid}): {source}")]
    Signal {
        /// The pid.
        pid: i32,
        /// Why.
        source: nix::Error,
    },
}

/// The pid file the daemon of `config` writes.
pub fn pid_file(config: &ZstorConfig) -> PathBuf {
    config
        .pid_file
        .clone()
        .unwrap_or_else(|| DEFAULT_PID_FILE.into())
}

impl Daemon {
    /// The daemon `config` makes the CLI use, if any (no `socket`: every command runs
    /// in-process and reads the config file itself). `bin` is the zstor binary it runs from.
    pub fn of(config: &ZstorConfig, bin: &Path) -> Option<Daemon> {
        config.socket.as_ref()?;
        Some(Daemon::new(config, bin))
    }

    /// The daemon that would run with `config` from `bin`, socket or not.
    pub fn new(config: &ZstorConfig, bin: &Path) -> Daemon {
        let name = bin.file_name().unwrap_or_default().to_string_lossy();
        Daemon {
            pid_file: pid_file(config),
            comm: name.chars().take(15).collect(),
        }
    }

    /// The pid of the running daemon: the one in its pid file, if that is a running zstor.
    pub fn pid(&self) -> Result<i32, ReloadError> {
        let pid_error = |problem: String| ReloadError::PidFile {
            path: self.pid_file.clone(),
            problem,
        };
        let text = std::fs::read_to_string(&self.pid_file).map_err(|e| pid_error(e.to_string()))?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| pid_error(format!("`{}` is not a pid", text.trim())))?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if pid <= 0 || comm.trim_end() != self.comm {
            return Err(ReloadError::NotZstor {
                pid,
                path: self.pid_file.clone(),
            });
        }
        Ok(pid)
    }

    /// Sends SIGUSR1 to the daemon (it re-reads its config file), once it is known to read the
    /// same bytes as `config`; returns its pid.
    pub fn reload(&self, config: &Path) -> Result<i32, ReloadError> {
        let pid = self.pid()?;
        let other = |daemon_config: PathBuf, problem: String| ReloadError::OtherConfig {
            pid,
            daemon_config,
            problem,
            config: config.to_path_buf(),
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let daemon_config = config_argument(&cmdline).ok_or_else(|| {
            other(
                "?".into(),
                "(no -c argument) cannot be compared with".into(),
            )
        })?;
        // Its file as the daemon sees it: through its own root (its mount namespace).
        let seen = Path::new(&format!("/proc/{pid}/root")).join(
            daemon_config
                .strip_prefix("/")
                .unwrap_or(&Path::new(&format!("/proc/{pid}/cwd")).join(&daemon_config)),
        );
        let theirs = std::fs::read(&seen).map_err(|e| {
            other(
                daemon_config.clone(),
                format!("cannot be read ({e}) to compare with"),
            )
        })?;
        let ours = std::fs::read(config).map_err(|e| {
            other(
                daemon_config.clone(),
                format!("cannot be compared ({e}) with"),
            )
        })?;
        if theirs != ours {
            return Err(other(daemon_config, "differs from".into()));
        }
        kill(Pid::from_raw(pid), Signal::SIGUSR1)
            .map_err(|source| ReloadError::Signal { pid, source })?;
        Ok(pid)
    }
}

/// The config path in a zstor command line (`/proc/<pid>/cmdline`: NUL-separated): the value of
/// its last `-c` or `--config`.
fn config_argument(cmdline: &[u8]) -> Option<PathBuf> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let mut found = None;
    for (i, arg) in args.iter().enumerate() {
        let value = match *arg {
            b"-c" | b"--config" => args.get(i + 1).copied(),
            _ => arg.strip_prefix(b"--config="),
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            found = Some(PathBuf::from(std::ffi::OsStr::from_bytes(value)));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_argument_of_a_command_line() {
        let of = |args: &[&str]| config_argument(args.join("\0").as_bytes());
        let daemon = [
            "zstor",
            "--log_file",
            "/l",
            "-c",
            "/run/credentials/u/zstor.toml",
            "monitor",
        ];
        assert_eq!(of(&daemon), Some("/run/credentials/u/zstor.toml".into()));
        assert_eq!(
            of(&["zstor", "--config=/z.toml", "monitor"]),
            Some("/z.toml".into())
        );
        assert_eq!(of(&["zstor", "monitor"]), None);
        assert_eq!(of(&["zstor", "-c"]), None);
    }

    #[test]
    fn finds_the_daemon_by_its_pid_file_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("zstor.pid");
        // A shell whose command line names a config plays the daemon; SIGUSR1 would end it, so
        // it ignores the signal through `trap`.
        let config = dir.path().join("zstor.toml");
        std::fs::write(&config, "the config").unwrap();
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "an older copy").unwrap();
        // `sh -c SCRIPT -c CONFIG`: the last `-c` names the config, as zstor's does.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' USR1; sleep 30; true", "-c"])
            .arg(&config)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        std::fs::write(&pid_file, format!("{}\n", child.id())).unwrap();
        let daemon = |bin: &str| Daemon {
            pid_file: pid_file.clone(),
            comm: bin.into(),
        };
        assert_eq!(daemon("sh").reload(&config).unwrap(), child.id() as i32);
        assert!(matches!(
            daemon("zstor").reload(&config),
            Err(ReloadError::NotZstor { .. })
        ));
        // A daemon that reads another copy is never told to reload: it would not see the change.
        let err = daemon("sh").reload(&other).unwrap_err().to_string();
        assert!(err.contains("differs from"), "{err}");
        assert!(err.contains("restart qsfs-zstor.service"), "{err}");
        std::fs::write(&pid_file, "garbage").unwrap();
        let err = daemon("sh").reload(&config).unwrap_err().to_string();
        assert!(err.contains("`garbage` is not a pid"), "{err}");
        assert!(child.try_wait().unwrap().is_none(), "still running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn the_daemon_of_a_config_with_a_socket() {
        let text = include_str!("../../tests/fixtures/zstor/zstor.toml");
        let in_process: ZstorConfig = toml::from_str(text).unwrap();
        let bin = Path::new("/var/zdbfs/bin/zstor");
        assert_eq!(Daemon::of(&in_process, bin), None);
        let with_socket = ZstorConfig {
            socket: Some("/run/qsfs/zstor.sock".into()),
            pid_file: None,
            ..in_process
        };
        let daemon = Daemon::of(&with_socket, bin).unwrap();
        assert_eq!(daemon.pid_file, Path::new(DEFAULT_PID_FILE));
        assert_eq!(daemon.comm, "zstor");
        let named = ZstorConfig {
            pid_file: Some("/run/qsfs/zstor.pid".into()),
            ..with_socket
        };
        assert_eq!(
            Daemon::of(&named, bin).unwrap().pid_file,
            Path::new("/run/qsfs/zstor.pid")
        );
    }
}
