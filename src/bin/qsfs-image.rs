//! `qsfs-image`: builds and verifies the appliance tarball of `/var/zdbfs`.

use clap::Parser;

/// Builds a deterministic, verifiable appliance tarball of /var/zdbfs.
#[derive(Parser)]
#[command(version)]
struct Cli {}

fn main() {
    Cli::parse();
    eprintln!("qsfs-image: the image builder is not part of this build yet; see --help");
    std::process::exit(qsfs::exit::USAGE);
}
