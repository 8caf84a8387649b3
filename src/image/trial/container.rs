//! The throwaway container of `qsfs-image try`: a minimal Debian rootfs (debootstrap, cached),
//! copied, booted with real systemd as PID 1 (`systemd-nspawn --boot`, sharing the host's
//! network), commands run with `nsenter` into all of its namespaces, and removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The Debian release of the cached rootfs.
pub const SUITE: &str = "bookworm";
/// What the rootfs holds besides debootstrap's minbase: what the appliance needs of the host
/// (systemd as PID 1, D-Bus, FUSE), nothing more (no procps: the units must not need it).
pub const PACKAGES: &str = "systemd,systemd-sysv,dbus,fuse3";
/// The Debian mirror, unless `QSFS_DEBIAN_MIRROR` names another.
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// Set by SIGINT/SIGTERM: every wait gives up, and the container is removed.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C (or SIGTERM) was received.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The cached rootfs for [`SUITE`] and [`PACKAGES`]: `<cache>/try-rootfs-<suite>-<hash>`.
pub fn cached_rootfs(cache: &Path) -> PathBuf {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(format!("{SUITE} {PACKAGES}"));
    let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    cache.join(format!("try-rootfs-{SUITE}-{hex}"))
}

/// Whether `dir` is a bootable rootfs.
fn is_rootfs(dir: &Path) -> bool {
    dir.join("lib/systemd/systemd").is_file()
}

/// Whether `program` is on `$PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Checks that the host has what a container needs; names the package of what it lacks.
pub fn check_host() -> Result<(), String> {
    let missing: Vec<&str> = [
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
    ]
    .iter()
    .filter(|(program, _)| !on_path(program))
    .map(|(_, package)| *package)
    .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing on this machine: install {} (apt-get install {})",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    if unsafe { libc::geteuid() } != 0 {
        return Err("systemd-nspawn needs root: run qsfs-image try as root".into());
    }
    Ok(())
}

/// The rootfs to copy: `given` when it is one, else the cached one, built first if missing
/// (debootstrap into a temporary directory renamed into place, so an interrupted build leaves
/// nothing half-made). Returns it and whether it was built now.
pub fn rootfs(given: Option<&Path>, cache: &Path) -> Result<(PathBuf, bool), String> {
    if let Some(dir) = given {
        if !is_rootfs(dir) {
            return Err(format!(
                "--rootfs {}: not a rootfs with systemd (no lib/systemd/systemd)",
                dir.display()
            ));
        }
        return Ok((dir.to_path_buf(), false));
    }
    let dir = cached_rootfs(cache);
    if is_rootfs(&dir) {
        return Ok((dir, false));
    }
    if !on_path("debootstrap") {
        return Err(format!(
            "no rootfs in {} and no debootstrap to build one: apt-get install debootstrap, \
             or give --rootfs DIR",
            dir.display()
        ));
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let tmp = cache.join(format!(
        ".{}.tmp-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let built = debootstrap(&tmp).and_then(|()| {
        std::fs::rename(&tmp, &dir).map_err(|e| format!("cannot rename {}: {e}", tmp.display()))
    });
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    built.map(|()| (dir, true))
}

fn debootstrap(tmp: &Path) -> Result<(), String> {
    std::fs::create_dir_all(tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    // It becomes the container's /, which every user must be able to traverse.
    std::fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mirror = std::env::var("QSFS_DEBIAN_MIRROR").unwrap_or_else(|_| MIRROR.to_string());
    let out = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={PACKAGES}"))
        .arg(SUITE)
        .arg(tmp)
        .arg(&mirror)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("debootstrap: {e}"))?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        return Err(format!(
            "debootstrap {SUITE} from {mirror} failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    // nspawn gives the container its own machine ID and hostname; a quiet console, a short boot.
    let write = |path: &str, link: Option<&str>| -> std::io::Result<()> {
        let path = tmp.join(path);
        match link {
            None => std::fs::write(path, ""),
            Some(target) => {
                let _ = std::fs::remove_file(&path);
                std::os::unix::fs::symlink(target, path)
            }
        }
    };
    write("etc/machine-id", None)
        .and_then(|()| write("etc/systemd/system/getty@.service", Some("/dev/null")))
        .and_then(|()| {
            write(
                "etc/systemd/system/console-getty.service",
                Some("/dev/null"),
            )
        })
        .map_err(|e| format!("preparing the rootfs {}: {e}", tmp.display()))
}

/// nspawn on a host without systemd as PID 1 needs `/run/systemd/nspawn` to be a tmpfs.
fn prepare_host() -> Result<(), String> {
    if Path::new("/run/systemd/system").exists() {
        return Ok(());
    }
    let dir = Path::new("/run/systemd/nspawn");
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mounted = Command::new("mountpoint")
        .arg("-q")
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        run(Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(dir))?;
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// A container: its directory (the root and the console log), and once booted its nspawn
/// process and PID 1. Dropped, it is killed and removed unless [`Container::keep`] was called.
pub struct Container {
    name: String,
    dir: PathBuf,
    nspawn: Option<Child>,
    leader: i32,
    keep: bool,
}

impl Container {
    /// A fresh copy of `rootfs` in `<work>/<name>/root`.
    pub fn create(name: &str, rootfs: &Path, work: &Path) -> Result<Container, String> {
        let dir = work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let container = Container {
            name: name.to_string(),
            dir,
            nspawn: None,
            leader: 0,
            keep: false,
        };
        run(Command::new("cp")
            .arg("-a")
            .arg(rootfs)
            .arg(container.root()))?;
        Ok(container)
    }

    /// Its root directory on the host.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Its directory on the host (the root and the console log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its PID 1 on the host (0 before the boot).
    pub fn leader(&self) -> i32 {
        self.leader
    }

    /// The nspawn process on the host, once booted.
    pub fn nspawn_pid(&self) -> Option<u32> {
        self.nspawn.as_ref().map(Child::id)
    }

    /// Boots it (`/dev/fuse` bound in, the host's network shared) and waits until systemd says
    /// the system is running (or degraded), within `timeout`.
    pub fn boot(&mut self, timeout: Duration) -> Result<(), String> {
        prepare_host()?;
        let log = std::fs::File::create(self.dir.join("console.log"))
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new("systemd-nspawn")
                .args([
                    "--boot",
                    "--register=no",
                    "--keep-unit",
                    "--console=pipe",
                    "--bind=/dev/fuse",
                ])
                .arg(format!("--machine={}", self.name))
                .arg("-D")
                .arg(self.root())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err),
            // Its own process group: Ctrl-C reaches qsfs-image, which removes the container.
            0,
        )
        .spawn()
        .map_err(|e| format!("systemd-nspawn: {e}"))?;
        let nspawn_pid = child.id() as i32;
        self.nspawn = Some(child);
        let deadline = Instant::now() + timeout;
        self.leader = wait_until(deadline, || leader_of(nspawn_pid))?
            .ok_or_else(|| format!("no PID 1 appeared:\n{}", self.console_tail()))?;
        // systemctl fails until systemd has its private socket; then --wait blocks until the
        // boot is finished.
        let state = wait_until(deadline, || {
            let secs = deadline
                .saturating_duration_since(Instant::now())
                .as_secs()
                .max(1);
            let out = self
                .sh(&format!(
                    "timeout {secs} systemctl is-system-running --wait"
                ))
                .ok()?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!state.is_empty()).then_some(state)
        })?
        .unwrap_or_default();
        if matches!(state.as_str(), "running" | "degraded") {
            Ok(())
        } else {
            Err(format!(
                "the system is `{state}`:\n{}",
                self.journal(None, 20)
            ))
        }
    }

    /// The last lines of its console.
    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Runs a shell script inside.
    pub fn sh(&self, script: &str) -> Result<Output, String> {
        if self.leader <= 0 {
            return Err("the container is not running".into());
        }
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a", "--", "/bin/sh", "-c"])
            .arg(script)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("nsenter: {e}"))
    }

    /// Runs a shell script inside; its stdout, or why it failed (with its stderr).
    pub fn ok(&self, script: &str) -> Result<String, String> {
        let out = self.sh(script)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`{script}` failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The last `lines` lines of its journal (of `unit` only when given).
    pub fn journal(&self, unit: Option<&str>, lines: u32) -> String {
        let filter = unit.map(|u| format!(" -u {u}")).unwrap_or_default();
        self.sh(&format!(
            "journalctl --no-pager -o short -n {lines}{filter}"
        ))
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
    }

    /// Leaves it running (and its directory in place) when dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Kills it at once (SIGKILL to its PID 1 takes its whole PID namespace down) and removes
    /// its directory.
    pub fn remove(&mut self) -> Result<(), String> {
        if let Some(mut child) = self.nspawn.take() {
            if self.leader > 0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.leader),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.leader = 0;
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", self.dir.display())),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.keep {
            let _ = self.remove();
        }
    }
}

/// The container's PID 1 (systemd), a child of the nspawn process.
fn leader_of(nspawn_pid: i32) -> Option<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|pid: &i32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "systemd")
        })
}

/// Polls `probe` every 200 ms until it returns something or `deadline` passes (`Ok(None)`);
/// gives up with an error on Ctrl-C.
pub fn wait_until<T>(
    deadline: Instant,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<Option<T>, String> {
    loop {
        if interrupted() {
            return Err("interrupted (SIGINT or SIGTERM)".into());
        }
        if let Some(value) = probe() {
            return Ok(Some(value));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_rootfs_is_named_for_its_packages() {
        let dir = cached_rootfs(Path::new("/var/cache/qsfs"));
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("try-rootfs-bookworm-"), "{name}");
        assert_eq!(name.len(), "try-rootfs-bookworm-".len() + 12);
        assert!(!PACKAGES.contains("procps"));
    }

    #[test]
    fn a_given_rootfs_without_systemd_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = rootfs(Some(dir.path()), dir.path()).unwrap_err();
        assert!(err.contains("not a rootfs"), "{err}");
    }
}
