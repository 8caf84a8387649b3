//! The programs a contract test runs against: our stand-in always, and the real upstream
//! program (zdb 2.0.7, zdbfs 0.1.11, zstor 0.5.0-rc.1) when `QSFS_UPSTREAM_BIN` names a
//! directory holding it. The same assertions run on both, so a stand-in that drifts from the
//! real program fails the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The environment variable naming the directory of the real programs.
pub const UPSTREAM_BIN: &str = "QSFS_UPSTREAM_BIN";

/// One implementation of an upstream program.
#[derive(Clone, Debug)]
pub struct Program {
    /// `zdb`, `zdbfs` or `zstor`.
    pub name: &'static str,
    pub path: PathBuf,
    /// The real upstream program, not our stand-in.
    pub real: bool,
}

impl Program {
    /// `real zdb` or `zdb stand-in`, for messages.
    pub fn label(&self) -> String {
        if self.real {
            format!("real {}", self.name)
        } else {
            format!("{} stand-in", self.name)
        }
    }

    /// Our contract stand-in for `name`.
    pub fn standin(name: &'static str) -> Program {
        Program {
            name,
            path: super::bin(&format!("{name}-standin")),
            real: false,
        }
    }

    /// The real program, when `QSFS_UPSTREAM_BIN` is set (it must then hold it).
    pub fn real(name: &'static str) -> Option<Program> {
        let dir = std::env::var_os(UPSTREAM_BIN)?;
        let path = Path::new(&dir).join(name);
        assert!(
            path.is_file(),
            "{UPSTREAM_BIN}={} has no {name}",
            Path::new(&dir).display()
        );
        Some(Program {
            name,
            path,
            real: true,
        })
    }

    /// The implementation of `name` that goes with this one: the real program with a real one,
    /// the stand-in with a stand-in (real zdbfs runs over real zdb).
    pub fn partner(&self, name: &'static str) -> Program {
        if self.real {
            Program::real(name).unwrap_or_else(|| panic!("{UPSTREAM_BIN} has no {name}"))
        } else {
            Program::standin(name)
        }
    }

    /// The real program when there is one, else the stand-in.
    pub fn preferred(name: &'static str) -> Program {
        Program::real(name).unwrap_or_else(|| Program::standin(name))
    }
}

/// `QSFS_CONTRACT_ONLY=real` (or `standin`) runs the contract checks on that implementation
/// only, to look at one of them.
pub const CONTRACT_ONLY: &str = "QSFS_CONTRACT_ONLY";

/// The stand-in, then the real program when it is available (filtered by [`CONTRACT_ONLY`]).
pub fn implementations(name: &'static str) -> Vec<Program> {
    let mut all = vec![Program::standin(name)];
    all.extend(Program::real(name));
    match std::env::var(CONTRACT_ONLY).as_deref() {
        Ok("real") => all.retain(|p| p.real),
        Ok("standin") => all.retain(|p| !p.real),
        _ => {}
    }
    all
}

/// Runs a contract check on every implementation of `name`, saying which one runs, so a
/// failure names the implementation that broke the contract.
pub fn each(name: &'static str, mut check: impl FnMut(&Program)) {
    for program in implementations(name) {
        eprintln!(
            "---- contract on the {}: {}",
            program.label(),
            program.path.display()
        );
        check(&program);
    }
}

/// Remote 0-db backends on the loopback, as zstor sees them: `meta` namespaces in user mode
/// and `data` namespaces in sequential mode, each on its own 0-db, all password protected.
pub struct ZdbBackends {
    children: Vec<Child>,
    /// How each backend was started, to start it again.
    commands: Vec<(PathBuf, PathBuf, u16)>,
    /// Where they run: the network namespace (none: this one) and the address they listen on.
    place: (Option<String>, std::net::IpAddr),
    pub meta: Vec<SocketAddr>,
    pub data: Vec<SocketAddr>,
    pub dir: tempfile::TempDir,
}

/// The namespace and password every backend of [`ZdbBackends`] has.
pub const BACKEND_NAMESPACE: &str = "qsfs";
pub const BACKEND_PASSWORD: &str = "backend-password";

/// A TCP port on the loopback that nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ZdbBackends {
    /// Starts `meta + data` instances of `zdb` (real or stand-in) under `/var/tmp`, on the
    /// loopback.
    pub fn start(zdb: &Program, meta: usize, data: usize) -> ZdbBackends {
        ZdbBackends::start_at(zdb, meta, data, (None, [127, 0, 0, 1].into()))
    }

    /// ... in `wan`'s network namespace, listening on its address.
    pub fn start_behind(
        zdb: &Program,
        meta: usize,
        data: usize,
        wan: &super::wan::Wan,
    ) -> ZdbBackends {
        ZdbBackends::start_at(zdb, meta, data, (Some(wan.namespace.clone()), wan.remote))
    }

    fn start_at(
        zdb: &Program,
        meta: usize,
        data: usize,
        place: (Option<String>, std::net::IpAddr),
    ) -> ZdbBackends {
        let mut backends = ZdbBackends {
            children: Vec::new(),
            commands: Vec::new(),
            place,
            meta: Vec::new(),
            data: Vec::new(),
            dir: super::work_dir(),
        };
        for n in 0..meta + data {
            let port = free_port();
            let root = backends.dir.path().join(format!("backend{n}"));
            backends.commands.push((zdb.path.clone(), root, port));
            let mut client = backends.spawn(n);
            let mode = if n < meta { "user" } else { "seq" };
            client.nsnew(BACKEND_NAMESPACE).unwrap();
            client.nsset(BACKEND_NAMESPACE, "mode", mode).unwrap();
            client
                .nsset(BACKEND_NAMESPACE, "password", BACKEND_PASSWORD)
                .unwrap();
            let address = SocketAddr::new(backends.place.1, port);
            if n < meta {
                backends.meta.push(address);
            } else {
                backends.data.push(address);
            }
        }
        backends
    }

    /// Starts backend `n` (again), on its port and files; returns a client once it answers.
    fn spawn(&mut self, n: usize) -> qsfs::zdb::Client {
        let (zdb, root, port) = self.commands[n].clone();
        let out = std::fs::File::create(root.with_extension("log")).unwrap();
        let (namespace, ip) = self.place.clone();
        let mut command = match &namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(&zdb);
                command
            }
            None => Command::new(&zdb),
        };
        let child = command
            .arg("--index")
            .arg(root.join("index"))
            .arg("--data")
            .arg(root.join("data"))
            .args(["--listen", &ip.to_string(), "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", zdb.display()));
        if n < self.children.len() {
            self.children[n] = child;
        } else {
            self.children.push(child);
        }
        let endpoint = qsfs::zdb::Endpoint::Tcp(SocketAddr::new(ip, port));
        super::wait_for("a backend to answer PING", || {
            let mut c =
                qsfs::zdb::Client::connect(&endpoint, std::time::Duration::from_secs(2)).ok()?;
            c.ping().ok().map(|()| c)
        })
    }

    /// Starts backend `n` again after [`ZdbBackends::kill`], with the data it had.
    pub fn restart(&mut self, n: usize) {
        self.spawn(n);
    }

    /// Kills backend `n` (metadata backends first, then data): it stops answering.
    pub fn kill(&mut self, n: usize) {
        let _ = self.children[n].kill();
        let _ = self.children[n].wait();
    }

    /// A zstor v0.5 config over these backends ([`super::zstor_config_over`]): all metadata
    /// backends, one group of the data backends. `socket` turns the daemon on.
    pub fn zstor_config(&self, socket: Option<&Path>) -> String {
        zstor_config_at(&self.meta, &self.data, socket)
    }
}

/// A zstor v0.5 config over backends of [`ZdbBackends`] (their namespace and password) reached
/// at these addresses (theirs, or [`super::link::Link`]s in front of them).
pub fn zstor_config_at(meta: &[SocketAddr], data: &[SocketAddr], socket: Option<&Path>) -> String {
    let list = |addresses: &[SocketAddr]| -> Vec<super::ConfigBackend> {
        addresses
            .iter()
            .map(|a| {
                (
                    a.to_string(),
                    BACKEND_NAMESPACE.to_string(),
                    BACKEND_PASSWORD.to_string(),
                )
            })
            .collect()
    };
    super::zstor_config_over(&list(meta), &list(data), socket)
}

impl Drop for ZdbBackends {
    fn drop(&mut self) {
        for n in 0..self.children.len() {
            self.kill(n);
        }
    }
}

/// The zdb and zstor a test of our product runs with: both stand-ins, or both real programs
/// (the real zstor then stores on real 0-db backends).
#[derive(Clone, Debug)]
pub struct Stack {
    pub zdb: Program,
    pub zstor: Program,
}

impl Stack {
    /// The contract stand-ins.
    pub fn standins() -> Stack {
        Stack {
            zdb: Program::standin("zdb"),
            zstor: Program::standin("zstor"),
        }
    }

    /// `the real programs` or `the stand-ins`, for messages.
    pub fn label(&self) -> &'static str {
        if self.zdb.real {
            "the real programs"
        } else {
            "the stand-ins"
        }
    }
}

/// The stand-ins, then the real zdb and zstor when they are available (filtered by
/// [`CONTRACT_ONLY`] like [`implementations`]).
pub fn stacks() -> Vec<Stack> {
    implementations("zdb")
        .into_iter()
        .map(|zdb| Stack {
            zstor: zdb.partner("zstor"),
            zdb,
        })
        .collect()
}

/// Runs a test of our product on every stack of [`stacks`], saying which one runs.
pub fn each_stack(mut test: impl FnMut(&Stack)) {
    for stack in stacks() {
        eprintln!("---- on {}", stack.label());
        test(&stack);
    }
}
