//! MinIO's S3 address (`MINIO_ADDRESS`) is free: nothing listens there, unless
//! qsfs-minio.service itself does (a preflight run by hand on a running appliance).

use super::{Outcome, UnitsEnv};
use crate::image::exit;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::Path;

/// The unit that may hold the address.
pub const MINIO_UNIT: &str = "qsfs-minio.service";
const CHECK: &str = "s3-port";
const KEY: &str = "MINIO_ADDRESS";
/// `st` of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// The addresses to try to bind for MinIO's `--address`: `:PORT` is every address (IPv6 and
/// IPv4, or IPv4 alone where IPv6 is off), `IP:PORT` and `[IPv6]:PORT` that one.
pub fn parse_address(text: &str) -> Result<Vec<SocketAddr>, String> {
    let bad = || format!("`{text}` is not a listen address: use :PORT, IP:PORT or [IPv6]:PORT");
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        ]);
    }
    text.parse().map(|a| vec![a]).map_err(|_| bad())
}

/// The inodes of the sockets listening on `port` in a `/proc/net/tcp` or `tcp6` table.
pub fn listeners(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let listening = *fields.get(3)? == TCP_LISTEN;
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
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

/// A process that holds a listening socket on the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its PID.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// Its systemd unit, when it runs in one.
    pub unit: Option<String>,
}

/// Judges the outcome of binding `address` (from `from`) and who holds it.
pub fn decide(
    address: &str,
    from: &Path,
    bind: Result<(), ErrorKind>,
    holders: &[Holder],
) -> Outcome {
    let failed = |what: String| {
        Outcome::failed(
            CHECK,
            exit::PREFLIGHT_PORT,
            format!("{KEY} {address} ({}): {what}", from.display()),
        )
    };
    match bind {
        Ok(()) => Outcome::ok(CHECK, format!("{KEY} {address} is free")),
        Err(ErrorKind::AddrInUse)
            if !holders.is_empty()
                && holders
                    .iter()
                    .all(|h| h.unit.as_deref() == Some(MINIO_UNIT)) =>
        {
            Outcome::ok(
                CHECK,
                format!("{KEY} {address} is held by {MINIO_UNIT} itself"),
            )
        }
        Err(ErrorKind::AddrInUse) if holders.is_empty() => failed(
            "is in use by a process this preflight cannot see (another container or network \
             namespace; `ss -ltnp` shows it): stop it, or set another address in that file"
                .to_string(),
        ),
        Err(ErrorKind::AddrInUse) => failed(format!(
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
        )),
        Err(ErrorKind::PermissionDenied) => failed(
            "a port below 1024 needs a privilege MinIO does not have (it runs as a user of its \
             own): use a port of 1024 or above"
                .to_string(),
        ),
        Err(ErrorKind::AddrNotAvailable) => {
            failed("is not an address of this machine: use one of `ip address`, or :PORT".into())
        }
        Err(kind) => failed(format!("cannot be bound: {kind}")),
    }
}

/// Tries the addresses in order; the next is tried only where one cannot be bound for
/// another reason than being taken or privileged (its address family is off).
fn bind(addresses: &[SocketAddr]) -> Result<(), ErrorKind> {
    let mut result = Err(ErrorKind::AddrNotAvailable);
    for address in addresses {
        result = TcpListener::bind(address).map(drop).map_err(|e| e.kind());
        if matches!(
            result,
            Ok(()) | Err(ErrorKind::AddrInUse | ErrorKind::PermissionDenied)
        ) {
            break;
        }
    }
    result
}

/// Every process holding a socket listening on `port` (the ones this process can see).
fn holders(port: u16) -> Vec<Holder> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|table| listeners(&table, port))
        .collect();
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
            std::fs::read_link(fd.path()).is_ok_and(|link| {
                let link = link.to_string_lossy();
                inodes
                    .iter()
                    .any(|inode| link == format!("socket:[{inode}]").as_str())
            })
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

/// Reads MinIO's address, tries to bind it and, if it is taken, finds who holds it.
pub fn check(env: &UnitsEnv) -> Outcome {
    let (address, from) = match env.value(CHECK, KEY) {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let addresses = match parse_address(address) {
        Ok(addresses) => addresses,
        Err(why) => {
            return Outcome::failed(
                CHECK,
                exit::PREFLIGHT_CONFIG,
                format!("{}: {KEY}: {why}", from.display()),
            )
        }
    };
    let result = bind(&addresses);
    let found = if result == Err(ErrorKind::AddrInUse) {
        holders(addresses[0].port())
    } else {
        Vec::new()
    };
    decide(address, from, result, &found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::preflight::Status;

    #[test]
    fn addresses_are_minios() {
        assert_eq!(
            parse_address(":9000").unwrap(),
            [
                "[::]:9000".parse().unwrap(),
                "0.0.0.0:9000".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_address("127.0.0.1:9100").unwrap(),
            ["127.0.0.1:9100".parse().unwrap()]
        );
        assert_eq!(parse_address("[::1]:9000").unwrap()[0].port(), 9000);
        assert!(parse_address("localhost")
            .unwrap_err()
            .contains("`localhost`"));
        assert!(parse_address(":http").is_err());
    }

    #[test]
    fn listening_sockets_are_found_by_port() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:2328 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n\
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listeners(tcp, 9000), [4242]);
        assert_eq!(listeners(tcp, 8080), [4444]);
        assert!(listeners(tcp, 9001).is_empty());
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listeners(tcp6, 9000), [5151]);
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
        assert_eq!(decide(":9000", from, Ok(()), &[]).status, Status::Ok);
        let held = decide(
            ":9000",
            from,
            Err(ErrorKind::AddrInUse),
            std::slice::from_ref(&minio),
        );
        assert_eq!(held.status, Status::Ok);
        assert!(held.message.contains("held by qsfs-minio.service itself"));
        let taken = decide(":9000", from, Err(ErrorKind::AddrInUse), &[minio, other]);
        assert_eq!(taken.exit_code, Some(exit::PREFLIGHT_PORT));
        assert!(
            taken.message.contains("pid 9 (nginx, nginx.service)"),
            "{taken:?}"
        );
        assert!(taken
            .message
            .contains("MINIO_ADDRESS :9000 (/var/zdbfs/etc/qsfs.env)"));
        let unseen = decide(":9000", from, Err(ErrorKind::AddrInUse), &[]);
        assert!(unseen.message.contains("cannot see"));
        let low = decide(":80", from, Err(ErrorKind::PermissionDenied), &[]);
        assert!(low.message.contains("1024"));
        let foreign = decide("10.9.9.9:9000", from, Err(ErrorKind::AddrNotAvailable), &[]);
        assert!(foreign.message.contains("not an address of this machine"));
    }

    #[test]
    fn a_listening_port_is_found_taken_with_its_holder() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert_eq!(bind(&[address]), Err(ErrorKind::AddrInUse));
        let me = holders(port);
        assert!(me.iter().any(|h| h.pid == std::process::id()), "{me:?}");
        drop(listener);
        assert_eq!(bind(&[address]), Ok(()));
    }
}
