//! `qsfs-health`: checks whether the appliance works, and why not.

use clap::{Parser, Subcommand, ValueEnum};
use qsfs::config::appliance::CONFIG_ENV;
use qsfs::health::check::{self, parse_duration, Format};
use qsfs::health::config::HealthConfig;
use qsfs::health::probes::ProbeName;
use qsfs::health::serve::{serve, ServeOptions};
use std::path::PathBuf;
use std::time::Duration;

const EXIT_CODES: &str = "\
Exit codes of check and wait: 0 ok, 1 degraded, 2 failed, 3 unknown (the worst probe wins;
failed outranks unknown). 78: the config file is missing or invalid. 2 is also clap's code for
a wrong command line.

Probes: units (qsfs units over D-Bus), zdb (PING, INFO, NSINFO of the zdbfs namespaces), mount
(the zdbfs FUSE mount answers, not stale), s3 (MinIO's health URLs), zstor (the zstor daemon's
socket accepts), monitor (zstor_monitor's status: backlog, backends), disk (free space of the
zdb data and index dirs). Settings: the [health] section of qsfs.toml.";

/// Checks the qsfs appliance (units, zdb, the mount, the S3 endpoint, zstor, uploads, disk
/// space), gates unit readiness, and repairs components that are up but broken.
#[derive(Parser)]
#[command(name = "qsfs-health", version, after_help = EXIT_CODES)]
struct Cli {
    /// The appliance config (qsfs.toml).
    #[arg(long, env = CONFIG_ENV, default_value = qsfs::layout::QSFS_CONFIG, global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every probe once, concurrently, and prints a table (component, state, since,
    /// reason) or JSON. Exits 0 ok, 1 degraded, 2 failed, 3 unknown.
    Check {
        /// `table` for people, `json` for scripts (with a schema_version).
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Runs only this probe (repeat for more); default: the probes in the config.
        #[arg(long, value_name = "PROBE")]
        only: Vec<ProbeName>,
        /// Lists every part (unit, namespace, URL, backend, directory), not only those that are
        /// not ok.
        #[arg(long)]
        all: bool,
    },
    /// Blocks until one probe is ok, for ExecStartPost= of units that cannot notify systemd
    /// (zdbfs: `wait mount`, MinIO: `wait s3`, zstor: `wait zstor`). Exits 0 once it is ok;
    /// on timeout prints the last reason and exits with the probe's state code (1, 2 or 3).
    Wait {
        /// units, zdb, mount, s3, zstor, monitor or disk.
        probe: ProbeName,
        /// How long to wait at most (500ms, 30s, 2m).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
        /// Time between two tries.
        #[arg(long, default_value = "250ms", value_parser = parse_duration)]
        interval: Duration,
    },
    /// Asks zdbfs to write its cache to zdb (its snapshot ioctl), for zdbfs's ExecStop=: every
    /// planned stop or restart flushes first. Exits 0 when flushed or when no zdbfs is mounted,
    /// 1 when the flush failed or did not answer in time.
    Flush {
        /// How long to wait for zdbfs at most.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// The daemon (Type=notify, with watchdog): runs the probes every interval, publishes
    /// STATUS, the status file and metrics, and restarts through systemd a unit that is active
    /// but fails its probe (with backoff and a give-up limit). Stops on SIGTERM.
    Serve {
        /// Time between rounds, instead of [health] interval_secs.
        #[arg(long, value_parser = parse_duration)]
        interval: Option<Duration>,
        /// Stops after this many rounds (for tests and benchmarks).
        #[arg(long)]
        rounds: Option<u64>,
    },
}

fn main() {
    let cli = Cli::parse();
    let config = match HealthConfig::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("qsfs-health: {e}");
            std::process::exit(e.exit_code());
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("qsfs-health: cannot start the runtime: {e}");
            std::process::exit(qsfs::exit::SOFTWARE);
        }
    };
    let code = match cli.command {
        Command::Check { format, only, all } => {
            let report = runtime.block_on(check::check(&config, &only));
            let format = match format {
                OutputFormat::Table => Format::Table,
                OutputFormat::Json => Format::Json,
            };
            check::print(&report, format, all)
        }
        Command::Wait {
            probe,
            timeout,
            interval,
        } => runtime.block_on(check::wait(&config, probe, timeout, interval)),
        Command::Flush { timeout } => {
            runtime.block_on(check::flush(&config.paths.mountpoint, timeout))
        }
        Command::Serve { interval, rounds } => {
            qsfs::logging::init("qsfs-health");
            runtime.block_on(serve(config, ServeOptions { interval, rounds }))
        }
    };
    // Probe threads blocked on a hung mount are abandoned, not joined.
    std::process::exit(code);
}
