//! MinIO's S3 address (`MINIO_ADDRESS`) is free: no socket listens there, unless
//! qsfs-minio.service itself holds it (a preflight run by hand on a running appliance).
//!
//! The listening sockets are read from the kernel's tables (`/proc/PID/net/tcp`, `tcp6`) of
//! this process and of PID 1: qsfs-config.service runs preflight in its own network namespace
//! (`PrivateNetwork=` applies even to a `+` command), where only PID 1's tables show the
//! machine's network.

use super::{Outcome, UnitsEnv};
use crate::image::exit;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The unit that may hold the address.
pub const MINIO_UNIT: &str = "qsfs-minio.service";
const CHECK: &str = "s3-port";
const KEY: &str = "MINIO_ADDRESS";
/// `st` of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";
/// MinIO runs as a user of its own, without the privilege to bind a lower port.
const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// MinIO's `--address`: `:PORT` (every address, `[::]:PORT`), `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let bad = || format!("`{text}` is not a listen address: use :PORT, IP:PORT or [IPv6]:PORT");
    match text.strip_prefix(':') {
        Some(port) => port
            .parse()
            .map(|port| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
            .map_err(|_| bad()),
        None => text.parse().map_err(|_| bad()),
    }
}

/// An address of a kernel table (`0100007F` for 127.0.0.1; IPv6 as four 32-bit words, each
/// in the machine's byte order).
fn table_ip(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<u32>> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect();
    let bytes: Vec<u8> = words?.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

/// The listening sockets of a `/proc/net/tcp` or `tcp6` table: address and inode.
pub fn listeners(table: &str) -> Vec<(SocketAddr, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if *fields.get(3)? != TCP_LISTEN {
                return None;
            }
            let (ip, port) = fields.get(1)?.split_once(':')?;
            let address = SocketAddr::new(table_ip(ip)?, u16::from_str_radix(port, 16).ok()?);
            Some((address, fields.get(9)?.parse().ok()?))
        })
        .collect()
}

/// Whether a socket listening on `listener` keeps MinIO from binding `wanted`: the same port
/// and either address a wildcard or both the same (an IPv4-mapped IPv6 address is its IPv4).
pub fn conflicts(wanted: SocketAddr, listener: SocketAddr) -> bool {
    let plain = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    wanted.port() == listener.port()
        && (wanted.ip().is_unspecified()
            || listener.ip().is_unspecified()
            || plain(wanted.ip()) == plain(listener.ip()))
}

/// The systemd unit (`….service`, `….scope`) of a process from its `/proc/PID/cgroup`.
pub fn unit_of(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/')
            .find(|part| part.ends_with(".service") || part.ends_with(".scope"))
            .map(str::to_string)
    })
}

/// A process that holds a listening socket on the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its PID.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// Its systemd unit, when it runs in one.
    pub unit: Option<String>,
}

/// Judges MinIO's `address` (from `from`, parsed as `wanted`): whether a socket listens
/// there (`taken`) and which processes hold those sockets.
pub fn decide(
    address: &str,
    from: &Path,
    wanted: SocketAddr,
    taken: bool,
    holders: &[Holder],
) -> Outcome {
    let failed = |what: String| {
        Outcome::failed(
            CHECK,
            exit::PREFLIGHT_PORT,
            format!("{KEY} {address} ({}): {what}", from.display()),
        )
    };
    if wanted.port() < FIRST_UNPRIVILEGED_PORT {
        return failed(format!(
            "a port below {FIRST_UNPRIVILEGED_PORT} needs a privilege MinIO does not have (it \
             runs as a user of its own): use a port of {FIRST_UNPRIVILEGED_PORT} or above"
        ));
    }
    if !taken {
        return Outcome::ok(CHECK, format!("{KEY} {address} is free"));
    }
    if !holders.is_empty()
        && holders
            .iter()
            .all(|h| h.unit.as_deref() == Some(MINIO_UNIT))
    {
        return Outcome::ok(
            CHECK,
            format!("{KEY} {address} is held by {MINIO_UNIT} itself"),
        );
    }
    if holders.is_empty() {
        return failed(
            "is in use by a process this preflight cannot see (another container or PID \
             namespace; `ss -ltnp` shows it): stop it, or set another address in that file"
                .to_string(),
        );
    }
    failed(format!(
        "is in use by {}: stop it, or set another address in that file",
        holders
            .iter()
            .map(|h| format!(
                "pid {} ({}{})",
                h.pid,
                h.comm,
                h.unit
                    .as_ref()
                    .map(|u| format!(", {u}"))
                    .unwrap_or_default()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The inodes of the sockets listening where they keep MinIO from binding `wanted`, in this
/// process's and PID 1's network namespaces.
fn conflicting_sockets(wanted: SocketAddr) -> Vec<u64> {
    let mut inodes = BTreeMap::new();
    for proc in ["/proc/self/net", "/proc/1/net"] {
        for table in ["tcp", "tcp6"] {
            let Ok(text) = std::fs::read_to_string(format!("{proc}/{table}")) else {
                continue;
            };
            for (address, inode) in listeners(&text) {
                if conflicts(wanted, address) {
                    inodes.insert(inode, ());
                }
            }
        }
    }
    inodes.into_keys().collect()
}

/// Every process (this process can see) holding one of the sockets `inodes`.
fn holders(inodes: &[u64]) -> Vec<Holder> {
    let links: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for proc in procs.flatten() {
        let Ok(pid) = proc.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|link| links.iter().any(|l| link.as_os_str() == l.as_str()))
        });
        if holds {
            let read =
                |name: &str| std::fs::read_to_string(proc.path().join(name)).unwrap_or_default();
            found.push(Holder {
                pid,
                comm: read("comm").trim().to_string(),
                unit: unit_of(&read("cgroup")),
            });
        }
    }
    found
}

/// Reads MinIO's address and, if a socket listens there, finds who holds it.
pub fn check(env: &UnitsEnv) -> Outcome {
    let (address, from) = match env.value(CHECK, KEY) {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let wanted = match parse_address(address) {
        Ok(wanted) => wanted,
        Err(why) => {
            return Outcome::failed(
                CHECK,
                exit::PREFLIGHT_CONFIG,
                format!("{}: {KEY}: {why}", from.display()),
            )
        }
    };
    let sockets = conflicting_sockets(wanted);
    decide(
        address,
        from,
        wanted,
        !sockets.is_empty(),
        &holders(&sockets),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::preflight::Status;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_are_minios() {
        assert_eq!(parse_address(":9000").unwrap(), addr("[::]:9000"));
        assert_eq!(
            parse_address("127.0.0.1:9100").unwrap(),
            addr("127.0.0.1:9100")
        );
        assert_eq!(parse_address("[::1]:9000").unwrap(), addr("[::1]:9000"));
        assert!(parse_address("localhost")
            .unwrap_err()
            .contains("`localhost`"));
        assert!(parse_address(":http").is_err());
    }

    #[test]
    fn listening_sockets_are_read_from_the_kernel_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:2328 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n\
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(
            listeners(tcp),
            [(addr("127.0.0.1:9000"), 4242), (addr("0.0.0.0:8080"), 4444)]
        );
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0\n\
   1: 0000000000000000FFFF00000100007F:2329 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5252 1 0000000000000000 100 0 0 10 0\n\
   2: 00000000000000000000000001000000:232A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5353 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(
            listeners(tcp6),
            [
                (addr("[::]:9000"), 5151),
                (addr("[::ffff:127.0.0.1]:9001"), 5252),
                (addr("[::1]:9002"), 5353)
            ]
        );
    }

    #[test]
    fn a_listener_conflicts_on_the_same_port_and_an_overlapping_address() {
        let wanted = addr("[::]:9000");
        assert!(conflicts(wanted, addr("127.0.0.1:9000")));
        assert!(!conflicts(wanted, addr("127.0.0.1:9001")));
        let one = addr("127.0.0.1:9000");
        assert!(conflicts(one, addr("0.0.0.0:9000")));
        assert!(conflicts(one, addr("[::]:9000")));
        assert!(conflicts(one, addr("[::ffff:127.0.0.1]:9000")));
        assert!(!conflicts(one, addr("10.0.0.1:9000")));
    }

    #[test]
    fn units_are_read_from_the_cgroup() {
        assert_eq!(
            unit_of("0::/system.slice/qsfs-minio.service\n").as_deref(),
            Some(MINIO_UNIT)
        );
        assert_eq!(
            unit_of("0::/user.slice/user-0.slice/session-3.scope\n").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(unit_of("0::/\n"), None);
    }

    #[test]
    fn a_taken_port_passes_only_when_minio_holds_it() {
        let from = Path::new("/var/zdbfs/etc/qsfs.env");
        let wanted = addr("[::]:9000");
        let minio = Holder {
            pid: 7,
            comm: "minio".into(),
            unit: Some(MINIO_UNIT.into()),
        };
        let other = Holder {
            pid: 9,
            comm: "nginx".into(),
            unit: Some("nginx.service".into()),
        };
        assert_eq!(decide(":9000", from, wanted, false, &[]).status, Status::Ok);
        let held = decide(":9000", from, wanted, true, std::slice::from_ref(&minio));
        assert_eq!(held.status, Status::Ok);
        assert!(held.message.contains("held by qsfs-minio.service itself"));
        let taken = decide(":9000", from, wanted, true, &[minio, other]);
        assert_eq!(taken.exit_code, Some(exit::PREFLIGHT_PORT));
        assert!(
            taken.message.contains("pid 9 (nginx, nginx.service)"),
            "{taken:?}"
        );
        assert!(taken
            .message
            .contains("MINIO_ADDRESS :9000 (/var/zdbfs/etc/qsfs.env)"));
        let unseen = decide(":9000", from, wanted, true, &[]);
        assert!(unseen.message.contains("cannot see"));
        let low = decide(":80", from, addr("[::]:80"), false, &[]);
        assert_eq!(low.exit_code, Some(exit::PREFLIGHT_PORT));
        assert!(low.message.contains("1024"));
    }

    #[test]
    fn a_listening_socket_is_found_with_its_holder() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let wanted = addr(&format!("[::]:{}", listener.local_addr().unwrap().port()));
        let sockets = conflicting_sockets(wanted);
        assert_eq!(sockets.len(), 1);
        let me = holders(&sockets);
        assert!(me.iter().any(|h| h.pid == std::process::id()), "{me:?}");
        drop(listener);
        assert!(conflicting_sockets(wanted).is_empty());
    }
}
