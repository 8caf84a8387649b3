//! `zdb-hook`: the 0-db hook dispatcher (`zdb --hook /var/zdbfs/bin/zdb-hook`).

use clap::Parser;
use std::ffi::OsString;

/// The hook 0-db runs for every event (zdb --hook). zdb passes the event name, its instance id
/// and the event's arguments. Uploads are written to the spool for zstor_monitor; missing data
/// files are fetched back through zstor; on a fresh VM the namespaces are restored from the
/// backends (namespaces-init); READY=1 is sent to systemd on zdb's behalf (ready).
///
/// Settings come from the file named by $QSFS_CONFIG, by default /var/zdbfs/etc/qsfs.toml.
/// Exit codes: 0 handled, 1 failed, 2 bad arguments, 78 bad config.
#[derive(Parser)]
#[command(name = "zdb-hook", version)]
struct Cli {
    /// The event: ready, close, crash, jump-index, jump-data, missing-data, namespace-created,
    /// namespace-updated, namespace-deleted, namespace-reloaded, namespaces-init,
    /// namespace-closing (unknown events are logged and ignored).
    event: String,
    /// zdb's instance id (unix://<socket> or tcp://<address>:<port>).
    instance: String,
    /// The event's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

fn main() {
    let cli = Cli::parse();
    qsfs::logging::init("zdb-hook");
    std::process::exit(qsfs::hook::run(&cli.event, &cli.instance, &cli.args));
}
