//! A WAN-shaped place for backends on this machine: a network namespace behind a veth pair
//! whose two ends are rate-limited with `tc ... tbf` (this kernel has no `netem` qdisc, so the
//! delay is added by [`super::link::Link`] in front of each backend). Needs root and iproute2;
//! removed when dropped.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

/// A network namespace reached over a veth pair of `rate_mbit` in each direction.
pub struct Wan {
    /// The network namespace's name.
    pub namespace: String,
    host_end: String,
    /// The address of the namespace's end: where its backends listen.
    pub remote: IpAddr,
    /// The rate of each direction, Mbit/s.
    pub rate_mbit: u32,
}

/// Runs `ip` or `tc` with `args`; panics with its stderr when it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (iproute2 is needed)"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Wan {
    /// Creates the namespace (named after this process), its veth pair and their `tbf` qdiscs.
    pub fn start(rate_mbit: u32) -> Wan {
        let id = std::process::id();
        let wan = Wan {
            namespace: format!("qsfs-wan-{id}"),
            host_end: format!("qw{id}h"),
            remote: IpAddr::V4(Ipv4Addr::new(10, 201, 0, 2)),
            rate_mbit,
        };
        let remote_end = format!("qw{id}n");
        let ns = wan.namespace.as_str();
        let rate = format!("{rate_mbit}mbit");
        // Burst: at least a tick's worth at this rate; latency: the queue a sender may fill.
        let tbf = [
            "root", "tbf", "rate", &rate, "burst", "512kb", "latency", "200ms",
        ];
        run("ip", &["netns", "add", ns]);
        run(
            "ip",
            &[
                "link",
                "add",
                &wan.host_end,
                "type",
                "veth",
                "peer",
                "name",
                &remote_end,
            ],
        );
        run("ip", &["link", "set", &remote_end, "netns", ns]);
        run(
            "ip",
            &["addr", "add", "10.201.0.1/30", "dev", &wan.host_end],
        );
        run("ip", &["link", "set", &wan.host_end, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns];
            all.extend(args);
            run("ip", &all);
        };
        inside(&["ip", "addr", "add", "10.201.0.2/30", "dev", &remote_end]);
        inside(&["ip", "link", "set", &remote_end, "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        let mut host_qdisc = vec!["qdisc", "add", "dev", &wan.host_end];
        host_qdisc.extend(tbf);
        run("tc", &host_qdisc);
        let mut remote_qdisc = vec!["tc", "qdisc", "add", "dev", &remote_end];
        remote_qdisc.extend(tbf);
        inside(&remote_qdisc);
        wan
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the host's end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_end])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
