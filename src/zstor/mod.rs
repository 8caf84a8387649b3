//! Running the zstor command line, and the checksum it keys files by.
//!
//! Every command runs with a timeout; on expiry its whole process group is killed. The runner
//! works with zstor v0.5 in both of its modes (through the daemon socket named in its config,
//! or in-process: the CLI picks by itself) and understands both upstream behaviours of `check`.

pub mod checksum;
pub mod config;
pub mod daemon;
pub mod metadata;
pub mod socket;

pub use checksum::Checksum;

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;
use wait_timeout::ChildExt;

/// How much of a command's output is kept (for `check`'s answer and for error messages).
const OUTPUT_LIMIT: u64 = 64 * 1024;

/// A zstor command failed.
#[derive(Debug, thiserror::Error)]
pub enum ZstorError {
    /// The binary could not be started.
    #[error("cannot run {bin}: {source}")]
    Spawn {
        /// The zstor binary.
        bin: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The command ran past its timeout and was killed.
    #[error("zstor {command} {file} timed out after {seconds} s and was killed")]
    TimedOut {
        /// The subcommand.
        command: &'static str,
        /// The file it worked on (may be empty).
        file: String,
        /// The timeout.
        seconds: u64,
    },
    /// The command exited unsuccessfully.
    #[error("zstor {command} {file} failed ({status}): {stderr}")]
    Failed {
        /// The subcommand.
        command: &'static str,
        /// The file it worked on (may be empty).
        file: String,
        /// How it exited.
        status: String,
        /// The last line zstor printed to stderr.
        stderr: String,
    },
    /// The command succeeded but printed something unexpected.
    #[error("zstor {command} {file}: unexpected output `{output}`")]
    UnexpectedOutput {
        /// The subcommand.
        command: &'static str,
        /// The file it worked on.
        file: String,
        /// The first line of the output.
        output: String,
    },
}

/// What a finished command returned.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs one zstor binary with one config file.
#[derive(Debug, Clone)]
pub struct Zstor {
    bin: PathBuf,
    config: PathBuf,
    log_file: Option<PathBuf>,
    timeout: Duration,
}

impl Zstor {
    /// A runner for `bin -c config …`, killing commands that run longer than `timeout`.
    pub fn new(bin: impl Into<PathBuf>, config: impl Into<PathBuf>, timeout: Duration) -> Self {
        Zstor {
            bin: bin.into(),
            config: config.into(),
            log_file: None,
            timeout,
        }
    }

    /// Passes `--log_file`: zstor otherwise writes `zstor.log` into its working directory.
    pub fn with_log_file(mut self, log_file: impl Into<PathBuf>) -> Self {
        self.log_file = Some(log_file.into());
        self
    }

    /// The same runner with another timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Zstor {
            timeout,
            ..self.clone()
        }
    }

    /// `store --file FILE [--key-path DIR]`: with a key path the file is stored as if it lived in
    /// `DIR` (how snapshots of index files keep the real path as their key).
    pub fn store(&self, file: &Path, key_path: Option<&Path>) -> Result<(), ZstorError> {
        let mut args: Vec<&OsStr> = vec!["store".as_ref(), "--file".as_ref(), file.as_os_str()];
        if let Some(dir) = key_path {
            args.extend(["--key-path".as_ref(), dir.as_os_str()]);
        }
        self.run_ok("store", file, &args)
    }

    /// `retrieve --file FILE`: zstor writes the file in place (not atomically).
    pub fn retrieve(&self, file: &Path) -> Result<(), ZstorError> {
        self.run_ok(
            "retrieve",
            file,
            &["retrieve".as_ref(), "--file".as_ref(), file.as_os_str()],
        )
    }

    /// `rebuild --file FILE`: re-encode a stored file onto the current backends.
    pub fn rebuild(&self, file: &Path) -> Result<(), ZstorError> {
        self.run_ok(
            "rebuild",
            file,
            &["rebuild".as_ref(), "--file".as_ref(), file.as_os_str()],
        )
    }

    /// `test`: the config is valid and the backends answer.
    pub fn test(&self) -> Result<(), ZstorError> {
        self.run_ok("test", Path::new(""), &["test".as_ref()])
    }

    /// `check --file FILE`: the checksum stored for the file, or `None` if it is not stored.
    ///
    /// zstor v0.5 exits 0 in both cases and prints only the hex checksum, or nothing. v0.2
    /// prints `<hex>\t<path>` and exits 0, or exits 1 without output when the file is unknown
    /// (an error also exits 1, but prints `Error: …`).
    pub fn check(&self, file: &Path) -> Result<Option<Checksum>, ZstorError> {
        let output = self.run(
            "check",
            file,
            &["check".as_ref(), "--file".as_ref(), file.as_os_str()],
        )?;
        parse_check(file, output.status, &output.stdout, &output.stderr)
    }

    fn run_ok(
        &self,
        command: &'static str,
        file: &Path,
        args: &[&OsStr],
    ) -> Result<(), ZstorError> {
        let output = self.run(command, file, args)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(failed(command, file, &output))
        }
    }

    fn run(
        &self,
        command: &'static str,
        file: &Path,
        args: &[&OsStr],
    ) -> Result<Output, ZstorError> {
        let mut cmd = Command::new(&self.bin);
        if let Some(log_file) = &self.log_file {
            cmd.arg("--log_file").arg(log_file);
        }
        cmd.arg("-c").arg(&self.config).args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // zstor dies with the thread that runs it (which waits for it): a runner that is killed
        // leaves no zstor behind that still writes (the read lane answers on that basis).
        // SAFETY: prctl is async-signal-safe, as a pre_exec closure must be.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(|source| ZstorError::Spawn {
            bin: self.bin.clone(),
            source,
        })?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = match child.wait_timeout(self.timeout) {
            Ok(Some(status)) => status,
            Ok(None) | Err(_) => {
                kill_group(child.id());
                let _ = child.wait();
                return Err(ZstorError::TimedOut {
                    command,
                    file: file.display().to_string(),
                    seconds: self.timeout.as_secs(),
                });
            }
        };
        let mut stderr = stderr.join().unwrap_or_default();
        if !stderr.is_empty() {
            // zstor 0.5 prints the offending lines of a config it cannot parse, and its whole
            // text in the debug form of the error: the key and the passwords with them.
            let config = std::fs::read_to_string(&self.config).unwrap_or_default();
            stderr = redact(&stderr, &secret_values(&config));
        }
        Ok(Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr,
        })
    }
}

/// The values of a zstor config's secret keys (`key`, `password`), read line by line so that
/// a config zstor cannot parse still yields them.
fn secret_values(config: &str) -> Vec<String> {
    config
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once('=')?;
            matches!(name.trim(), "key" | "password").then(|| {
                value
                    .trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_string()
            })
        })
        .filter(|value| value.len() >= 4)
        .collect()
}

/// `text` with every secret value replaced by `<redacted>`.
fn redact(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_string(), |text, secret| {
        text.replace(secret.as_str(), "<redacted>")
    })
}

/// Reads the answer of `zstor check --file FILE` from how it exited and what it printed (see
/// [`Zstor::check`]).
pub fn parse_check(
    file: &Path,
    status: ExitStatus,
    stdout: &str,
    stderr: &str,
) -> Result<Option<Checksum>, ZstorError> {
    let answer = stdout.split_whitespace().next().unwrap_or_default();
    match status.code() {
        Some(0) if answer.is_empty() => Ok(None),
        Some(0) => answer
            .parse()
            .map(Some)
            .map_err(|_| ZstorError::UnexpectedOutput {
                command: "check",
                file: file.display().to_string(),
                output: stdout.lines().next().unwrap_or_default().to_string(),
            }),
        Some(1) if answer.is_empty() && !stderr.to_lowercase().contains("error") => Ok(None),
        _ => Err(failed(
            "check",
            file,
            &Output {
                status,
                stdout: stdout.to_string(),
                stderr: stderr.to_string(),
            },
        )),
    }
}

fn failed(command: &'static str, file: &Path, output: &Output) -> ZstorError {
    let status = match (
        output.status.code(),
        std::os::unix::process::ExitStatusExt::signal(&output.status),
    ) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown status".to_string(),
    };
    let last_line = output
        .stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no error output");
    ZstorError::Failed {
        command,
        file: file.display().to_string(),
        status,
        stderr: last_line.trim().to_string(),
    }
}

/// Reads a pipe to its end (keeping at most [`OUTPUT_LIMIT`] bytes) on a thread, so a chatty
/// child never blocks on a full pipe.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.by_ref().take(OUTPUT_LIMIT).read_to_end(&mut kept);
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fake zstor that answers with a fixed script: it only checks how the runner reads
    /// exit codes and output. The contract stand-in is tested in `tests/integration/zstor_standin.rs`.
    fn fake(dir: &Path, script: &str) -> Zstor {
        let bin = dir.join("zstor");
        std::fs::write(&bin, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Zstor::new(bin, dir.join("zstor.toml"), Duration::from_secs(5))
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn check_understands_v05_and_v02() {
        let dir = tempfile::tempdir().unwrap();
        let file = Path::new("/var/zdbfs/data/zdbfs-data/d1");
        let cases: &[(&str, Option<&str>)] = &[
            (&format!("echo {HEX}"), Some(HEX)), // v0.5 stored
            ("exit 0", None),                    // v0.5 not stored
            (&format!("printf '{HEX}\\t/data/d1\\n'"), Some(HEX)), // v0.2 stored
            ("exit 1", None),                    // v0.2 not stored
        ];
        for (script, expected) in cases {
            let answer = fake(dir.path(), script).check(file).unwrap();
            assert_eq!(
                answer.map(|c| c.to_string()).as_deref(),
                *expected,
                "{script}"
            );
        }
        for script in [
            "echo 'Error: metastore unreachable' >&2; exit 1",
            "echo nonsense",
            "exit 3",
        ] {
            assert!(fake(dir.path(), script).check(file).is_err(), "{script}");
        }
    }

    /// What the real zstor 0.5 prints for a config it cannot parse: its whole text, in the
    /// debug form of the error (`tests/fixtures/zstor/`).
    #[test]
    fn errors_never_repeat_the_configs_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let key = "5ec2".repeat(16);
        std::fs::write(
            dir.path().join("zstor.toml"),
            format!(
                "[encryption]\nkey = \"{key}\"\n[[groups.backends]]\npassword = 'hunter2-pw'\n\
                 [[meta.config.backends]]\npassword = 918273645\n"
            ),
        )
        .unwrap();
        let zstor = fake(
            dir.path(),
            &format!(
                "echo 'Error: raw: Some(\\\"key = \\\"{key}\\\" password = hunter2-pw 918273645\\\")' >&2; exit 1"
            ),
        );
        let error = zstor.retrieve(Path::new("/d/d1")).unwrap_err().to_string();
        assert!(error.contains("<redacted>"), "{error}");
        for secret in [key.as_str(), "hunter2-pw", "918273645"] {
            assert!(!error.contains(secret), "{error}");
        }
    }

    #[test]
    fn arguments_follow_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("args");
        let zstor = fake(dir.path(), &format!("echo \"$@\" >> {}", log.display()))
            .with_log_file("/l/zstor.log");
        zstor
            .store(Path::new("/s/i1"), Some(Path::new("/idx/ns")))
            .unwrap();
        zstor.retrieve(Path::new("/d/d1")).unwrap();
        zstor.rebuild(Path::new("/d/d2")).unwrap();
        zstor.test().unwrap();
        let cfg = dir.path().join("zstor.toml");
        let cfg = cfg.display();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!(
                "--log_file /l/zstor.log -c {cfg} store --file /s/i1 --key-path /idx/ns\n\
                 --log_file /l/zstor.log -c {cfg} retrieve --file /d/d1\n\
                 --log_file /l/zstor.log -c {cfg} rebuild --file /d/d2\n\
                 --log_file /l/zstor.log -c {cfg} test\n"
            )
        );
    }

    #[test]
    fn failures_and_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        let err = fake(
            dir.path(),
            "echo 'Zstor error: Metastore is not writable' >&2; exit 1",
        )
        .store(Path::new("/d/d1"), None)
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "zstor store /d/d1 failed (exit code 1): Zstor error: Metastore is not writable"
        );

        // The grandchild keeps the pipes open: the whole group must die for the runner to return.
        let slow = fake(dir.path(), "sleep 30 & sleep 30").with_timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        assert!(matches!(
            slow.retrieve(Path::new("/d/d1")),
            Err(ZstorError::TimedOut { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(5));

        let missing = Zstor::new("/nonexistent/zstor", "/c", Duration::from_secs(1));
        assert!(matches!(missing.test(), Err(ZstorError::Spawn { .. })));
    }
}
