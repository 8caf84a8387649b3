//! `zstor_monitor`: uploads sealed zdb files through zstor, verifies every upload, keeps the
//! local cache under its limit and watches the remote backends.

use clap::{Parser, Subcommand, ValueEnum};
use qsfs::config::monitor::MonitorConfig;
use qsfs::monitor::daemon::Daemon;
use qsfs::monitor::status::MonitorStatus;
use std::path::PathBuf;

/// Uploads sealed 0-db files through zstor and verifies each one (zstor check must return the
/// local checksum), evicts verified sealed data files when the cache passes
/// max_zdb_data_dir_size, watches every backend of the zstor config, asks for replacements
/// ([vdc_config]) and rebuilds onto a changed backend set. Replaces the upstream v0.2.0
/// monitor and reads the same config file (plus optional keys, see etc/monitor_config.toml).
///
/// Signals: SIGHUP reloads the config (a bad one is refused and the old one kept); SIGTERM
/// lets running uploads finish, saves the state and exits 0.
///
/// Exit codes: 0 ok; 3 `status` found no running monitor; 74 the state or spool cannot be
/// used; 78 a config file is invalid.
#[derive(Parser)]
#[command(name = "zstor_monitor", version)]
struct Cli {
    /// The monitor config.
    #[arg(short, long, default_value = "monitor_config.toml")]
    config: PathBuf,
    /// Accepted for compatibility with upstream's zstor_monitor and ignored: qsfs logs to the
    /// journal.
    #[arg(long = "log_file", value_name = "PATH")]
    log_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the monitor (the default).
    Run,
    /// Print the running monitor's status (from the file it publishes, `status_file`).
    Status {
        /// `human` or `json`.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
}

fn main() {
    let cli = Cli::parse();
    qsfs::logging::init("zstor_monitor");
    if cli.log_file.is_some() {
        tracing::info!("--log_file is ignored: zstor_monitor logs to the journal");
    }
    let code = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config),
        Command::Status { format } => status(&cli.config, format),
    };
    std::process::exit(code);
}

fn run(config: &std::path::Path) -> i32 {
    let daemon = match Daemon::new(config) {
        Ok(daemon) => daemon,
        Err(e) => {
            tracing::error!("{e}");
            return e.exit_code();
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return qsfs::exit::SOFTWARE;
        }
    };
    match runtime.block_on(daemon.run()) {
        Ok(()) => qsfs::exit::OK,
        Err(e) => {
            tracing::error!("{e}");
            e.exit_code()
        }
    }
}

fn status(config: &std::path::Path, format: Format) -> i32 {
    let path = match MonitorConfig::load(config) {
        Ok(config) => config.status_file,
        Err(e) => {
            eprintln!("{e}");
            return e.exit_code();
        }
    };
    let status = match MonitorStatus::read(&path) {
        Ok(status) => status,
        Err(e) => {
            eprintln!(
                "zstor_monitor is not running: cannot read {}: {e}",
                path.display()
            );
            return 3;
        }
    };
    let stale = status.age() > MonitorStatus::PUBLISH_INTERVAL * 5;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        ),
        Format::Human => print_human(&status),
    }
    if stale {
        eprintln!(
            "zstor_monitor is not running: its status is {} s old",
            status.age().as_secs()
        );
        return 3;
    }
    qsfs::exit::OK
}

fn print_human(status: &MonitorStatus) {
    let age = |ms: u64| qsfs::clock::ago(status.updated_unix_ms.saturating_sub(ms));
    println!(
        "zstor_monitor (pid {}), up {}",
        status.pid,
        age(status.started_unix_ms)
    );
    println!("{}", status.summary_line());
    let u = &status.uploads;
    println!(
        "uploads: {} spool jobs, {} files queued, {} running; {} of {} tracked files verified remote; {} verified and {} failed since start",
        u.spool_jobs, u.queued_files, u.in_flight, u.verified_files, u.tracked_files, u.verified_total, u.failed_total
    );
    if let Some(error) = &u.last_error {
        println!("last upload error: {error}");
    }
    println!(
        "cache: {} bytes used, {} evicted since start",
        status.cache.used_bytes, status.cache.evicted_total
    );
    for backend in &status.backends {
        println!(
            "  {:<4} {:<40} {:<12} for {}{}",
            backend.kind.as_str(),
            backend.label,
            backend.state.as_str(),
            age(backend.since_unix_ms),
            backend
                .reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    if let Some(rebuild) = &status.rebuild {
        println!("rebuild: {}/{} files", rebuild.done, rebuild.total);
    }
}
