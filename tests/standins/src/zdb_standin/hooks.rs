//! Hook invocation as 0-db does it (`libzdb/hook.c`): fork+exec of the hook file, no shell and
//! no `PATH` search, with argv `[<hook path>, <event>, <instance id>, <event args…>]`. The
//! environment, cwd, stdout/stderr and every fd without close-on-exec (the lock files and the
//! listening sockets, see `main`) are inherited.
//!
//! Blocking hooks are waited for and their exit status is what `WEXITSTATUS` gives, so a hook
//! killed by a signal reads as 0 (that is what 0-db's `waitpid` + `WEXITSTATUS` does). If the
//! exec fails, the status is 1 (0-db's child exits 1). Non-blocking hooks are started and reaped
//! later by [`Hooks::reap`]. Every run is kept for `HOOKS` until 300 s after it finished.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `ZDB_HOOKS_EXPIRE_SECONDS`
const EXPIRE_SECONDS: i64 = 300;

/// A blocking hook is running (its caller holds the server lock, so a signal must not wait for it).
pub static BLOCKING: AtomicBool = AtomicBool::new(false);

/// Unix time in seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One hook run, as `HOOKS` lists it.
pub struct HookRecord {
    pub event: String,
    pub args: Vec<String>,
    pub pid: i64,
    pub created: i64,
    /// 0 while the hook runs.
    pub finished: i64,
    pub status: i64,
    child: Option<Child>,
}

/// The configured hook (if any) and the runs so far.
pub struct Hooks {
    path: Option<String>,
    id: String,
    records: Vec<HookRecord>,
}

/// `WEXITSTATUS`: the exit code, or 0 for a child killed by a signal.
fn wexitstatus(status: ExitStatus) -> i64 {
    i64::from(status.code().unwrap_or(0))
}

impl Hooks {
    pub fn new(path: Option<String>, id: String) -> Self {
        Hooks {
            path,
            id,
            records: Vec::new(),
        }
    }

    fn command(&self, path: &str, event: &str, args: &[String]) -> Command {
        // execv semantics: a name without a slash is relative to the cwd, never looked up in PATH.
        let program = if path.contains('/') {
            path.to_string()
        } else {
            format!("./{path}")
        };
        let mut command = Command::new(program);
        command.arg0(path).arg(event).arg(&self.id).args(args);
        command
    }

    /// Runs a blocking hook and waits for it. `None` when no hook is configured.
    pub fn run_wait(&mut self, event: &str, args: &[String]) -> Option<i64> {
        let path = self.path.clone()?;
        println!("[+] hooks: running blocking hook: {event}");
        let created = now();
        BLOCKING.store(true, Ordering::SeqCst);
        let (pid, status) = match self.command(&path, event, args).spawn() {
            Ok(mut child) => {
                let pid = i64::from(child.id());
                let status = loop {
                    match child.wait() {
                        Ok(status) => break wexitstatus(status),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            eprintln!("[-] hooks: waitpid: {e}");
                            break 1;
                        }
                    }
                };
                (pid, status)
            }
            Err(e) => {
                eprintln!("[-] hooks: execv: {path}: {e}");
                (0, 1)
            }
        };
        BLOCKING.store(false, Ordering::SeqCst);
        self.records.push(HookRecord {
            event: event.to_string(),
            args: args.to_vec(),
            pid,
            created,
            finished: now(),
            status,
            child: None,
        });
        Some(status)
    }

    /// Starts a non-blocking hook; it is reaped later.
    pub fn run_async(&mut self, event: &str, args: &[String]) {
        let Some(path) = self.path.clone() else {
            return;
        };
        println!("[+] hooks: running hook: {event}");
        let created = now();
        let mut record = HookRecord {
            event: event.to_string(),
            args: args.to_vec(),
            pid: 0,
            created,
            finished: 0,
            status: 0,
            child: None,
        };
        match self.command(&path, event, args).spawn() {
            Ok(child) => {
                record.pid = i64::from(child.id());
                record.child = Some(child);
            }
            Err(e) => {
                eprintln!("[-] hooks: execv: {path}: {e}");
                record.finished = now();
                record.status = 1;
            }
        }
        self.records.push(record);
    }

    /// Collects finished non-blocking hooks and forgets runs older than the expiry.
    pub fn reap(&mut self) {
        let now = now();
        for record in &mut self.records {
            if let Some(child) = &mut record.child {
                if let Ok(Some(status)) = child.try_wait() {
                    record.finished = now;
                    record.status = wexitstatus(status);
                    record.child = None;
                }
            }
        }
        self.records
            .retain(|r| r.child.is_some() || now - r.finished <= EXPIRE_SECONDS);
    }

    /// Takes over the runs of `other` (a hook run outside the server, `ready`), after ours.
    pub fn adopt(&mut self, other: Hooks) {
        self.records.extend(other.records);
    }

    /// The runs `HOOKS` reports.
    pub fn list(&mut self) -> &[HookRecord] {
        self.reap();
        &self.records
    }
}
