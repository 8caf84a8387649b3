//! `zdb-hook`: the 0-db hook dispatcher.

use clap::Parser;

/// The hook 0-db runs for every event (zdb --hook).
#[derive(Parser)]
#[command(version)]
struct Cli {}

fn main() {
    Cli::parse();
    eprintln!("zdb-hook: event handling is not part of this build yet; see --help");
    std::process::exit(qsfs::exit::USAGE);
}
