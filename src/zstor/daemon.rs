//! The zstor daemon (`zstor … monitor`), when the config names a `socket`: every CLI command
//! then runs in the daemon, with the config the daemon read at its start or at its last
//! SIGUSR1 (upstream `main.rs`), not the file as it is now. Before work that depends on a
//! changed config (a rebuild onto a new backend set) it must be asked to reload.

use super::config::ZstorConfig;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
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

    /// Sends SIGUSR1 to the daemon (it re-reads its config file); returns its pid.
    pub fn reload(&self) -> Result<i32, ReloadError> {
        let pid = self.pid()?;
        kill(Pid::from_raw(pid), Signal::SIGUSR1)
            .map_err(|source| ReloadError::Signal { pid, source })?;
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_daemon_by_its_pid_file_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("zstor.pid");
        // A process whose comm is `sleep` plays the daemon; SIGUSR1 would end it, so it
        // ignores the signal through `trap`.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' USR1; exec sleep 30"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        std::fs::write(&pid_file, format!("{}\n", child.id())).unwrap();
        let daemon = |bin: &str| Daemon {
            pid_file: pid_file.clone(),
            comm: bin.into(),
        };
        assert_eq!(daemon("sleep").reload().unwrap(), child.id() as i32);
        assert!(matches!(
            daemon("zstor").reload(),
            Err(ReloadError::NotZstor { .. })
        ));
        std::fs::write(&pid_file, "garbage").unwrap();
        let err = daemon("sleep").reload().unwrap_err().to_string();
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
