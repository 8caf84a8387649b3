//! The hook's read lane: the zstor `check` and `retrieve` of `missing-data` and
//! `namespaces-init`, run by `qsfs-zstor-reads@.service`, one instance per connection to
//! `qsfs-zstor-reads.socket`.
//!
//! zdb and its hook have no network, so their zstor commands run elsewhere. Through the zstor
//! daemon they waited in its one-command-at-a-time queue behind stores and rebuilds, and a
//! retrieve whose command line was killed at its timeout was finished later by the daemon,
//! written in place after the hook had given up. Here each request runs zstor in-process in a
//! service of its own, with network: it waits for no other command, it is killed at its
//! deadline, and the service answers only once that zstor is reaped and whatever it wrote of a
//! failed retrieve is removed. When the hook has its answer, nothing writes the file any more;
//! a service that dies without answering takes its zstor with it (`PR_SET_PDEATHSIG`, and
//! systemd stops the instance's cgroup).
//!
//! The protocol: one JSON line each way, [`Request`] then [`Reply`].

use super::HookError;
use crate::config::appliance::HookConfig;
use crate::zstor::config::ZstorConfig;
use crate::zstor::{Checksum, ZstorError};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the service may take past the request's timeout to stop zstor, remove a partial
/// file and answer.
const ANSWER_GRACE: Duration = Duration::from_secs(10);
/// How long the service waits for the request once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest line either side reads.
const LINE_LIMIT: u64 = 64 * 1024;

/// A zstor command of the read lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    /// `zstor check --file`: the checksum stored for a file.
    Check,
    /// `zstor retrieve --file`: the file brought back in place.
    Retrieve,
}

/// What the hook asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// The file, under zdb's index or data root.
    pub file: PathBuf,
    /// How long the command may run before it is killed.
    pub timeout_ms: u64,
}

/// What the service answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Reply {
    /// `check`: the stored checksum, or none when the file is not stored.
    Checked {
        /// The checksum.
        checksum: Option<Checksum>,
    },
    /// `retrieve`: the file is in place (not yet verified).
    Retrieved,
    /// The command ran past its timeout; it was killed and what it wrote removed.
    TimedOut {
        /// The timeout.
        seconds: u64,
    },
    /// The command failed (for a retrieve, what it wrote was removed), or the request was bad.
    Failed {
        /// Why.
        error: String,
    },
}

/// The hook's side: asks the service on `socket`.
#[derive(Debug, Clone)]
pub struct Reads {
    socket: PathBuf,
}

impl Reads {
    /// A client of the service listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Reads {
            socket: socket.into(),
        }
    }

    /// The checksum stored for `file`, or `None` when it is not stored.
    pub fn check(&self, file: &Path, deadline: Instant) -> Result<Option<Checksum>, HookError> {
        match self.ask(Command::Check, file, deadline)? {
            Reply::Checked { checksum } => Ok(checksum),
            other => Err(self.failure(Command::Check, file, other)),
        }
    }

    /// Brings `file` back in place before `deadline`. On failure nothing writes it any more.
    pub fn retrieve(&self, file: &Path, deadline: Instant) -> Result<(), HookError> {
        match self.ask(Command::Retrieve, file, deadline)? {
            Reply::Retrieved => Ok(()),
            other => Err(self.failure(Command::Retrieve, file, other)),
        }
    }

    fn ask(&self, command: Command, file: &Path, deadline: Instant) -> Result<Reply, HookError> {
        let timeout = super::remaining(deadline)?;
        let lost = |what: String| HookError::Reads {
            socket: self.socket.clone(),
            problem: what,
        };
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|e| lost(format!("cannot connect: {e}")))?;
        let request = Request {
            command,
            file: file.to_path_buf(),
            timeout_ms: timeout.as_millis() as u64,
        };
        let mut line = serde_json::to_string(&request).expect("a request serializes");
        line.push('\n');
        stream
            .set_read_timeout(Some(timeout + ANSWER_GRACE))
            .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
            .and_then(|()| stream.write_all(line.as_bytes()))
            .map_err(|e| lost(format!("cannot send the request: {e}")))?;
        match read_line(&stream) {
            Ok(Some(answer)) => serde_json::from_str(&answer)
                .map_err(|e| lost(format!("unreadable answer `{answer}`: {e}"))),
            Ok(None) => Err(lost("it closed the connection without answering".into())),
            Err(e) => Err(lost(format!("no answer: {e}"))),
        }
    }

    fn failure(&self, command: Command, file: &Path, reply: Reply) -> HookError {
        let file = file.display().to_string();
        let name = match command {
            Command::Check => "check",
            Command::Retrieve => "retrieve",
        };
        match reply {
            Reply::TimedOut { seconds } => HookError::Zstor(ZstorError::TimedOut {
                command: name,
                file,
                seconds,
            }),
            Reply::Failed { error } => HookError::ReadFailed(error),
            other => HookError::Reads {
                socket: self.socket.clone(),
                problem: format!("answered {other:?} to {name} {file}"),
            },
        }
    }
}

/// One line from `stream`, without its newline; `None` at the end of the stream.
fn read_line(stream: &UnixStream) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    BufReader::new(stream.take(LINE_LIMIT)).read_line(&mut line)?;
    Ok(line
        .strip_suffix('\n')
        .map(str::to_string)
        .or_else(|| (!line.is_empty()).then_some(line)))
}

/// The service's side (`zdb-hook serve-reads`, started by systemd with one accepted connection
/// as fd 3): reads one request, runs it, answers. What the request asked, for the journal.
pub fn serve(config: &HookConfig) -> Result<PathBuf, HookError> {
    let setup = |problem: String| HookError::Reads {
        socket: config.paths.zstor_reads_socket.clone(),
        problem,
    };
    let fds: Vec<_> = sd_notify::listen_fds()
        .map_err(|e| setup(format!("no socket from systemd: {e}")))?
        .collect();
    let [fd] = fds[..] else {
        return Err(setup(format!(
            "serve-reads runs from qsfs-zstor-reads.socket (Accept=yes) with one connection; \
             systemd passed {} sockets",
            fds.len()
        )));
    };
    // SAFETY: systemd passed this descriptor to this process, and nothing else owns it.
    let stream = unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(|e| setup(e.to_string()))?;
    let request = read_line(&stream)
        .map_err(|e| setup(format!("cannot read the request: {e}")))?
        .ok_or_else(|| setup("the connection closed before a request".into()))?;
    let (file, reply) = match serde_json::from_str::<Request>(&request) {
        Ok(request) => (request.file.clone(), answer(config, &request)),
        Err(e) => (
            PathBuf::new(),
            Reply::Failed {
                error: format!("bad request: {e}"),
            },
        ),
    };
    let mut line = serde_json::to_string(&reply).expect("a reply serializes");
    line.push('\n');
    (&stream)
        .write_all(line.as_bytes())
        .map_err(|e| setup(format!("cannot answer: {e}")))?;
    match reply {
        Reply::Failed { error } => Err(HookError::ReadFailed(error)),
        Reply::TimedOut { seconds } => Err(HookError::Timeout(seconds)),
        Reply::Checked { .. } | Reply::Retrieved => Ok(file),
    }
}

/// Runs `request` with zstor in-process.
fn answer(config: &HookConfig, request: &Request) -> Reply {
    let failed = |error: String| Reply::Failed { error };
    let cuts = crate::cuts::Cuts::new(&config.paths.state_dir)
        .dir()
        .to_path_buf();
    let roots = [&config.paths.index_dir, &config.paths.data_dir, &cuts];
    if !within(&request.file, &roots) {
        return failed(format!(
            "{} is not under {}, {} or {} (the restore points)",
            request.file.display(),
            roots[0].display(),
            roots[1].display(),
            roots[2].display()
        ));
    }
    let settings = &config.zstor;
    let zstor_config = match ZstorConfig::load(&settings.config) {
        Ok(zstor_config) => zstor_config,
        Err(e) => return failed(e.to_string()),
    };
    // The daemon's socket taken out, so that zstor runs here; kept until zstor is done.
    let copy = match zstor_config.in_process_file().transpose() {
        Ok(copy) => copy,
        Err(e) => return failed(format!("cannot write the in-process zstor config: {e}")),
    };
    let timeout = Duration::from_millis(request.timeout_ms).min(settings.timeout);
    let zstor = crate::zstor::Zstor::new(
        &settings.bin,
        copy.as_ref()
            .map_or(settings.config.as_path(), |file| file.path()),
        timeout,
    )
    .with_log_file(&settings.log_file);
    let result = match request.command {
        Command::Check => zstor
            .check(&request.file)
            .map(|checksum| Reply::Checked { checksum }),
        Command::Retrieve => zstor.retrieve(&request.file).map(|()| Reply::Retrieved),
    };
    // zstor is reaped: whatever a failed retrieve wrote can go, and nothing writes it again.
    if result.is_err() && request.command == Command::Retrieve {
        let _ = std::fs::remove_file(&request.file);
    }
    result.unwrap_or_else(|e| match e {
        ZstorError::TimedOut { seconds, .. } => Reply::TimedOut { seconds },
        e => failed(e.to_string()),
    })
}

/// Whether `path` is absolute, has no `..`, and lies under one of `roots`.
fn within(path: &Path, roots: &[&PathBuf]) -> bool {
    path.is_absolute()
        && !path.components().any(|c| c == Component::ParentDir)
        && roots
            .iter()
            .any(|root| path.starts_with(root) && path != root.as_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_one_json_line() {
        let request = Request {
            command: Command::Retrieve,
            file: "/var/zdbfs/data/zdbfs-data/d3".into(),
            timeout_ms: 120_000,
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(
            text,
            r#"{"command":"retrieve","file":"/var/zdbfs/data/zdbfs-data/d3","timeout_ms":120000}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
        let checksum = Checksum::of_bytes(b"x");
        for reply in [
            Reply::Checked {
                checksum: Some(checksum),
            },
            Reply::Checked { checksum: None },
            Reply::Retrieved,
            Reply::TimedOut { seconds: 3 },
            Reply::Failed {
                error: "no shards".into(),
            },
        ] {
            let text = serde_json::to_string(&reply).unwrap();
            assert!(!text.contains('\n'), "{text}");
            assert_eq!(serde_json::from_str::<Reply>(&text).unwrap(), reply);
        }
        assert_eq!(
            serde_json::to_string(&Reply::TimedOut { seconds: 3 }).unwrap(),
            r#"{"outcome":"timed-out","seconds":3}"#
        );
    }

    #[test]
    fn only_files_under_the_roots_are_served() {
        let index = PathBuf::from("/var/zdbfs/index");
        let data = PathBuf::from("/var/zdbfs/data");
        let roots = [&index, &data];
        assert!(within(Path::new("/var/zdbfs/data/zdbfs-data/d3"), &roots));
        assert!(within(Path::new("/var/zdbfs/index/zdbfs-meta/i0"), &roots));
        for outside in [
            "/var/zdbfs/data",
            "/var/zdbfs/data/../etc/credstore/zstor.toml",
            "/etc/passwd",
            "var/zdbfs/data/zdbfs-data/d3",
            "/var/zdbfs/datax/d3",
        ] {
            assert!(!within(Path::new(outside), &roots), "{outside}");
        }
    }

    /// The hook's side against a service that answers late, not at all, or badly.
    #[test]
    fn the_client_reports_a_service_that_does_not_answer() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("reads.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let reads = Reads::new(&socket);
        let file = Path::new("/var/zdbfs/data/zdbfs-data/d0");
        let server = std::thread::spawn(move || {
            // Closes without an answer, then answers nonsense, then a timeout.
            for answer in [
                "",
                "nonsense\n",
                "{\"outcome\":\"timed-out\",\"seconds\":2}\n",
            ] {
                let (stream, _) = listener.accept().unwrap();
                let request: Request =
                    serde_json::from_str(&read_line(&stream).unwrap().unwrap()).unwrap();
                assert_eq!(request.file, Path::new("/var/zdbfs/data/zdbfs-data/d0"));
                assert!(request.timeout_ms > 0 && request.timeout_ms <= 60_000);
                (&stream).write_all(answer.as_bytes()).unwrap();
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let closed = reads.retrieve(file, deadline).unwrap_err().to_string();
        assert!(closed.contains("without answering"), "{closed}");
        assert!(closed.contains("reads.sock"), "{closed}");
        let nonsense = reads.check(file, deadline).unwrap_err().to_string();
        assert!(
            nonsense.contains("unreadable answer `nonsense`"),
            "{nonsense}"
        );
        let timed_out = reads.retrieve(file, deadline).unwrap_err();
        assert!(
            matches!(
                timed_out,
                HookError::Zstor(ZstorError::TimedOut { seconds: 2, .. })
            ),
            "{timed_out}"
        );
        server.join().unwrap();
        drop(dir);
        let gone = reads.check(file, deadline).unwrap_err().to_string();
        assert!(gone.contains("cannot connect"), "{gone}");
    }
}
