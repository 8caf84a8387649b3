//! A throwaway Debian container with real systemd as PID 1 (systemd-nspawn --boot), and the
//! commands to run inside it.
//!
//! Each container boots from its own copy of the cached rootfs (`tests/system/build-rootfs`),
//! sees the host's cargo `target/debug` read-only at `/opt/qsfs/target`, and gets `/dev/fuse`
//! (unless booted [`Container::without_fuse`]).
//! Commands run with `nsenter` into all of the container's namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the host's `target/debug` appears inside every container.
pub const TARGET_IN_CONTAINER: &str = "/opt/qsfs/target";

/// A booted container.
pub struct Container {
    name: String,
    dir: PathBuf,
    binds: Vec<String>,
    fuse: bool,
    nspawn: Option<Child>,
    leader: i32,
}

fn target_debug() -> PathBuf {
    // The test executable lives in target/debug/deps.
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/debug")
        .to_path_buf()
}

fn rootfs() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/system/build-rootfs");
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/system/build-rootfs");
    assert!(out.status.success(), "building the rootfs failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// nspawn without a host systemd needs this directory to be a tmpfs (DESIGN §6).
fn prepare_host() {
    let dir = Path::new("/run/systemd/nspawn");
    std::fs::create_dir_all(dir).unwrap();
    let mounted = Command::new("mountpoint")
        .arg("-q")
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        run_host(
            Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(dir),
        );
    }
}

fn run_host(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Container {
    /// Boots a fresh container named `name` (also its hostname) and waits until systemd says
    /// the system is running.
    pub fn boot(name: &str) -> Container {
        Container::boot_with(name, &[])
    }

    /// Boots a fresh container with host directories bound in (`(host, container)` pairs).
    pub fn boot_with(name: &str, binds: &[(&Path, &str)]) -> Container {
        Container::boot_options(name, binds, true)
    }

    /// Boots a fresh container that has no `/dev/fuse` (a VM without the device).
    pub fn without_fuse(name: &str, binds: &[(&Path, &str)]) -> Container {
        Container::boot_options(name, binds, false)
    }

    fn boot_options(name: &str, binds: &[(&Path, &str)], fuse: bool) -> Container {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "system tests need root: run tests/run"
        );
        prepare_host();
        let dir = PathBuf::from(format!(
            "/var/tmp/qsfs-system-tests/{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        run_host(
            Command::new("cp")
                .arg("-a")
                .arg(rootfs())
                .arg(dir.join("root")),
        );
        let binds = binds
            .iter()
            .map(|(host, inside)| format!("--bind={}:{inside}", host.display()))
            .collect();
        let mut container = Container {
            name: name.to_string(),
            dir,
            binds,
            fuse,
            nspawn: None,
            leader: 0,
        };
        container.start();
        container
    }

    /// Boots the root; a boot that does not come up is retried once (with its console and
    /// journal printed), so that one slow boot of a loaded machine does not fail a test.
    fn start(&mut self) {
        if let Err(first) = self.try_start() {
            eprintln!(
                "container {} did not boot, trying once more:\n{first}",
                self.name
            );
            self.kill();
            if let Err(second) = self.try_start() {
                panic!("container {} did not boot:\n{second}", self.name);
            }
        }
    }

    /// Kills the container at once: SIGKILL to its PID 1 takes its whole PID namespace down
    /// (SIGKILL to nspawn alone would leave the container's processes running).
    fn kill(&mut self) {
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
    }

    fn try_start(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.join("console.log")).unwrap();
        let child = Command::new("systemd-nspawn")
            .args(["--boot", "--register=no", "--keep-unit", "--console=pipe"])
            .args(self.fuse.then_some("--bind=/dev/fuse"))
            .arg(format!("--machine={}", self.name))
            .arg("-D")
            .arg(self.dir.join("root"))
            .arg(format!(
                "--bind-ro={}:{TARGET_IN_CONTAINER}",
                target_debug().display()
            ))
            .args(&self.binds)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn");
        let nspawn_pid = child.id() as i32;
        self.nspawn = Some(child);
        self.leader = wait_for(Duration::from_secs(30), || leader_of(nspawn_pid))
            .ok_or_else(|| format!("no PID 1 appeared: {}", self.console()))?;
        // systemctl fails until systemd has created its private socket; then --wait blocks
        // until the boot is finished.
        let state = wait_for(Duration::from_secs(60), || {
            let out = self.sh("timeout 60 systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!state.is_empty()).then_some(state)
        })
        .unwrap_or_default();
        if matches!(state.as_str(), "running" | "degraded") {
            Ok(())
        } else {
            Err(format!(
                "the system is `{state}`:\n{}\n{}",
                self.console(),
                self.journal_tail()
            ))
        }
    }

    /// What the container printed on its console.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// The container's root directory on the host.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Runs a shell script inside the container.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args([
                "-t",
                &self.leader.to_string(),
                "-a",
                "--",
                "/bin/sh",
                "-c",
                script,
            ])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// Runs a shell script inside the container and returns its stdout; panics with its output
    /// and the last journal lines if it fails.
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        if !out.status.success() {
            panic!(
                "in {}: `{script}` failed ({}):\nstdout: {}\nstderr: {}\njournal:\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.journal_tail(),
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last lines of the container's journal.
    pub fn journal_tail(&self) -> String {
        String::from_utf8_lossy(&self.sh("journalctl --no-pager -n 80").stdout).into_owned()
    }

    /// Writes a file inside the container.
    pub fn write(&self, path: &str, content: &str) {
        let host_path = self.root().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(host_path.parent().unwrap()).unwrap();
        std::fs::write(host_path, content).unwrap();
    }

    /// Copies an executable from the host to `path` inside (mode 0755).
    pub fn install_program(&self, host: &Path, path: &str) {
        let host_path = self.root().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(host_path.parent().unwrap()).unwrap();
        std::fs::copy(host, &host_path).unwrap();
        std::fs::set_permissions(
            &host_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }

    /// Stops the container cleanly (systemd powers off), or kills it after 60 s.
    pub fn shutdown(&mut self) {
        let Some(mut child) = self.nspawn.take() else {
            return;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let stopped = wait_for(Duration::from_secs(60), || child.try_wait().ok().flatten());
        if stopped.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Reboots: a clean shutdown, then a boot of the same root.
    pub fn reboot(&mut self) {
        self.shutdown();
        self.start();
    }

    /// The VM is lost: every process of the container is killed at once, nothing is stopped
    /// cleanly, and it does not boot again.
    pub fn lose(&mut self) {
        self.kill();
    }

    /// A power cut: every process of the container is killed at once, nothing is stopped
    /// cleanly; then it boots again from the same root.
    pub fn power_cycle(&mut self) {
        self.kill();
        self.start();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.shutdown();
        if !std::thread::panicking() && std::env::var_os("QSFS_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
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
                .map(|c| c.trim() == "systemd")
                .unwrap_or(false)
        })
}

/// Polls `probe` every 50 ms until it returns something or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
