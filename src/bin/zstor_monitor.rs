//! `zstor_monitor`: uploads sealed zdb files through zstor, verifies every upload, keeps the
//! local cache under its limit and watches the remote backends.

use clap::Parser;

/// Uploads sealed 0-db files through zstor and verifies them, evicts verified files from the
/// local cache, watches the remote backends. Replaces the upstream v0.2.0 monitor and reads the
/// same config file.
#[derive(Parser)]
#[command(version)]
struct Cli {}

fn main() {
    Cli::parse();
    eprintln!("zstor_monitor: the monitor daemon is not part of this build yet; see --help");
    std::process::exit(qsfs::exit::USAGE);
}
