//! `qsfs-image`: builds, inspects and verifies the appliance tarball of `/var/zdbfs`, and
//! manages the configs of an installed tree.

use clap::{Args, Parser, Subcommand, ValueEnum};
use qsfs::image::{self, build::BuildOptions, exit, fetch::FetchOptions, Error};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Builds a deterministic, verifiable appliance tarball of /var/zdbfs, and checks one.
///
/// The tarball unpacks on a fresh VM with `tar -xzpf qsfs-VERSION-x86_64.tar.gz -C /`; then
/// `systemctl start qsfs.target`. Its MANIFEST (var/zdbfs/MANIFEST) lists every entry with its
/// mode, size and sha256; SHA256SUMS beside the tarball holds the tarball's own sha256, and
/// with `build --sign KEY` SHA256SUMS.minisig signs it (minisign format; keys from `keygen`),
/// so that `verify --key PUB` proves who built the tarball. Formats of the manifest, lock
/// file and site settings: image/README.md.
#[derive(Parser)]
#[command(
    name = "qsfs-image",
    version,
    after_help = "\
Exit codes:
   0  success
   1  verify found a missing, changed or extra entry
   2  bad command line (also SOURCE_DATE_EPOCH unusable, configure or keygen refusing to
      overwrite, keygen without a password source)
  65  the input is not a readable qsfs image (not gzip/tar, no MANIFEST)
  66  an input file (manifest, site settings, tarball) does not exist or cannot be read
  74  an I/O error while writing
  78  invalid manifest, site settings, lock file or config (check-config: a config is missing
      or invalid); a key that is not a minisign key, or a wrong or missing password
  80  unknown component name (manifest or --component)
  81  a component path does not exist, is not a regular file or is not executable
  82  sha256 mismatch (expected and actual are shown)
  83  components missing (every one is listed, with how to supply it)
  84  a download failed (the URL is named)
  85  cargo build of our binaries failed
  86  verify refused a tarball before trusting anything in it: an entry outside var/zdbfs/,
      etc/systemd/system/ and etc/systemd/system-preset/, with `..`, absolute, a link or a
      special file (every such entry is named with why)
  87  verify --key: SHA256SUMS.minisig is missing, malformed, made by another key or does not
      verify SHA256SUMS (the file is named)
  88  verify --key: the tarball is not the one the signed SHA256SUMS lists (changed after
      signing)
  90-96  preflight: a check failed (the first failure's code; see `preflight --help`)
  98  try: a step failed (the report names it and why; the container is removed)
 100  upgrade: the new version did not become healthy; the old one is live again
 102  upgrade/rollback refused before anything was switched (no version to return to,
      on-disk formats the target cannot read, a live tree that does not match its MANIFEST,
      a switch cut short: run rollback, another one running, too little space)
 103  the version live at the end is not healthy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Builds the image: qsfs-VERSION-x86_64.tar.gz and SHA256SUMS in the output directory.
    ///
    /// Reads the manifest (components pinned by version and sha256, or local paths), renders
    /// the configs from the site settings (validated before anything is written), finds every
    /// component (local path, cache or download, sha256-verified; a first download records its
    /// sha256 in the lock file next to the manifest), builds our binaries with
    /// `cargo build --release` unless --ours-dir is given, and writes the tarball under a
    /// temporary name, renamed at the end. Every mtime is SOURCE_DATE_EPOCH (default: the last
    /// commit's time); the same inputs give a byte-identical tarball.
    Build(BuildArgs),
    /// Verifies a tarball, or an installed tree (--root), against its MANIFEST.
    ///
    /// With --key, a tarball is first checked to be the one that SHA256SUMS beside it lists,
    /// and SHA256SUMS to be signed by that key (exit 87 or 88 otherwise); without --key the
    /// report says that its origin was NOT checked. Lists every missing, changed (mode, size,
    /// sha256, owner) or extra entry (any in a tarball; executables and symlinks in
    /// var/zdbfs/bin and var/zdbfs/etc in a tree) and exits 1 if there is any. Without --key a
    /// tarball is also checked against SHA256SUMS beside it (damage, not forgery). Before
    /// its MANIFEST is read, every entry of a tarball must be a plain file or directory under
    /// var/zdbfs/, etc/systemd/system/ or etc/systemd/system-preset/ (no `..`, not absolute,
    /// no link): otherwise it is refused with exit 86, naming each such entry.
    /// Configs installed from their shipped *.default and then edited are reported as
    /// "modified", not as failures.
    Verify(VerifyArgs),
    /// Makes a minisign key pair for `build --sign` and `verify --key`.
    ///
    /// The secret key is written mode 0600 and the public key 0644, each whole (temporary file,
    /// fsync, rename); an existing file is never replaced. The secret key is password-protected
    /// unless --no-password: the password is taken from QSFS_IMAGE_KEY_PASSWORD if set (for
    /// CI), otherwise asked twice on the terminal. `build --sign` reads the password the same
    /// way. The files are minisign's: `minisign -Vm SHA256SUMS -p PUB` checks a signature too.
    Keygen(KeygenArgs),
    /// Shows what an image holds: components and versions, our version, the build time, and
    /// whether secrets are inside.
    Inspect(InspectArgs),
    /// Installs each config from its shipped NAME.default unless the operator edited it.
    ///
    /// Run by qsfs-config.service before the other qsfs units. A missing config is installed;
    /// one still equal to the default it was installed from follows the new default; an
    /// edited one is kept (with a note when the new default differs: merge by hand).
    InstallConfig(RootArgs),
    /// Checks that the configs exist and are valid; one line per problem, exit 78.
    ///
    /// For the units' ExecStartPre=: an image built without secrets has no credentials (zstor's
    /// config, MinIO's user and password) until the operator supplies them (see `configure`).
    CheckConfig(CheckArgs),
    /// Writes the configs rendered from site settings into an installed tree.
    ///
    /// Supplies the secrets of an image built without them: the credentials (zstor's config,
    /// MinIO's user and password) in /var/zdbfs/etc/credstore, encrypted with systemd-creds
    /// where it works on this machine (else plain, mode 0600), monitor_config.toml and
    /// qsfs.env. Refuses to replace a file with other content unless --force. Without --site,
    /// encrypts the credentials already installed.
    Configure(ConfigureArgs),
    /// Upgrades this machine to the image in a tarball, and rolls back by itself if the new
    /// version does not become healthy.
    ///
    /// Verifies the tarball (with --key, its signature) as `verify` does, then installs it
    /// beside the running version in /var/zdbfs/versions/ (the running one is recorded there
    /// first). Stops every qsfs unit cleanly, makes the new version's binaries, units and
    /// config defaults live, starts qsfs.target (install-config keeps edited configs, as
    /// always) and watches it: every qsfs unit active and `qsfs-health check` ok, still so
    /// --settle-secs later, within --watch-secs. Healthy: the old version is kept for
    /// `rollback`. Not healthy: a journal entry says why
    /// (MESSAGE_ID=3b4e502448694436a4bf543a0b709697) and the old version is made live again
    /// (exit 100; 103 if it is not healthy either). The data (index, data, spool, state) is
    /// never touched; an image whose binaries could not read the on-disk formats of the
    /// running one is refused (exit 102). Progress on stderr; Ctrl-C and SIGHUP are ignored
    /// while the units are switched. Run it as root on the appliance.
    Upgrade(UpgradeArgs),
    /// Returns to the version before the last upgrade (or finishes an interrupted switch
    /// back to the version it started from), watched as `upgrade` watches (exit 103 if it
    /// does not become healthy). Refused (exit 102) when there is none, or when it could not
    /// read the on-disk formats the live version wrote.
    Rollback(RollbackArgs),
    /// Lists the installed versions: which one is live, current and previous, an interrupted
    /// switch, the last upgrade or rollback.
    Status(StatusArgs),
    /// Checks that this machine can run the appliance; one line per check (ok, FAILED with
    /// what to install or change, or unknown when a fact cannot be read).
    ///
    /// Run by qsfs-config.service before anything else starts, and by hand. Checks systemd
    /// (>= 247), /dev/fuse and the kernel's FUSE, the libraries of the programs in
    /// /var/zdbfs/bin (asking the dynamic loader), free space for 4 x ZDB_DATASIZE on the file
    /// system holding /var/zdbfs, that MINIO_ADDRESS is free (or held by qsfs-minio.service
    /// itself), and that the clock is not before the image's build time. The two values come
    /// from qsfs.env (its shipped default before install-config ran); the build time from the
    /// MANIFEST. Each failure has its exit code, and with several the first one's is used:
    /// 90 systemd, 91 FUSE, 92 libraries, 93 free space, 94 S3 port, 95 clock, 96 qsfs.env or
    /// MANIFEST unreadable or invalid.
    Preflight(PreflightArgs),
    /// Tries an image in a throwaway container before deploying it.
    ///
    /// Needs root, systemd-nspawn (systemd-container) and, for the default rootfs, debootstrap.
    /// Boots the image in a fresh systemd-nspawn container (a copy of a Debian minbase rootfs:
    /// --rootfs, else one built once in /var/cache/qsfs), runs install-config and configure
    /// (--site applies site settings), starts qsfs.target and waits for every unit, PUTs and
    /// GETs objects through S3 from this machine (the container shares its network: the
    /// image's S3 and backend ports must be free here), waits until the sealed files are
    /// verified remote and qsfs-health check is ok, then removes the container. Prints every
    /// step with its time and the total; exit 98 when a step fails.
    Try(TryArgs),
}

#[derive(Args)]
struct PreflightArgs {
    /// The root the image is unpacked under (the machine's facts are always this machine's).
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

/// How `try` prints its report.

#[derive(Args)]
struct TryArgs {
    /// The image tarball.
    image: PathBuf,
    /// Site settings to configure inside (`configure --force --site`).
    #[arg(long)]
    site: Option<PathBuf>,
    /// Leave the container running at the end, and print how to enter and remove it.
    #[arg(long)]
    keep: bool,
    /// Copy this rootfs (with systemd) instead of the cached one.
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

#[derive(Args)]
struct BuildArgs {
    /// The image manifest.
    #[arg(long, default_value = "image/manifest.toml")]
    manifest: PathBuf,
    /// Site settings (backends, passwords, key, sizes, MinIO credentials; see
    /// image/site.example.toml). Without them the image holds no secrets.
    #[arg(long)]
    site: Option<PathBuf>,
    /// Where to write the tarball and SHA256SUMS.
    #[arg(long, short, default_value = ".")]
    output_dir: PathBuf,
    /// Use only the cache and local paths; never download.
    #[arg(long)]
    offline: bool,
    /// Use this local file for one component or one of our binaries (zdb, zdbfs, zstor, minio,
    /// zdb-hook, zstor_monitor, qsfs-health, qsfs-image). Repeatable.
    #[arg(long = "component", value_name = "NAME=PATH")]
    components: Vec<String>,
    /// Take our binaries from this directory (such as target/release) instead of building them.
    #[arg(long, value_name = "DIR")]
    ours_dir: Option<PathBuf>,
    /// The download cache [default: $XDG_CACHE_HOME/qsfs-image or ~/.cache/qsfs-image].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// The build time and every mtime, in Unix seconds [default: the last commit's time].
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
    source_date_epoch: Option<String>,
    /// Sign SHA256SUMS with this minisign secret key (from `keygen`), writing
    /// SHA256SUMS.minisig beside it. A password-protected key takes its password from
    /// QSFS_IMAGE_KEY_PASSWORD or the terminal; it is loaded before anything is built. Without
    /// --sign, a SHA256SUMS.minisig left by an earlier build is removed (it no longer matches).
    #[arg(long, value_name = "SECRET_KEY")]
    sign: Option<PathBuf>,
}

#[derive(Args)]
struct KeygenArgs {
    /// Where to write the secret key (mode 0600; must not exist). Keep it off the VMs.
    #[arg(long, value_name = "PATH")]
    secret_key: PathBuf,
    /// Where to write the public key (must not exist); give it to whoever verifies images.
    #[arg(long, value_name = "PATH")]
    public_key: PathBuf,
    /// Do not protect the secret key with a password (for a CI that keeps the key file in its
    /// own secret store); only the file's mode protects it.
    #[arg(long)]
    no_password: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Args)]
struct VerifyArgs {
    /// The tarball to verify.
    #[arg(required_unless_present = "root", conflicts_with = "root")]
    tarball: Option<PathBuf>,
    /// Verify the tree installed under this root instead (`/` on the appliance).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// With --root: check against this MANIFEST instead of DIR/var/zdbfs/MANIFEST (for
    /// example one extracted from a trusted tarball).
    #[arg(long, requires = "root", value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Check that SHA256SUMS beside the tarball is signed (SHA256SUMS.minisig) by this
    /// minisign public key and lists the tarball's sha256, before anything else is read.
    #[arg(long, value_name = "PUBLIC_KEY", conflicts_with = "root")]
    key: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

#[derive(Args)]
struct InspectArgs {
    /// The tarball to inspect.
    #[arg(required_unless_present = "root", conflicts_with = "root")]
    tarball: Option<PathBuf>,
    /// Inspect the tree installed under this root instead.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

#[derive(Args)]
struct RootArgs {
    /// The root the image is unpacked under.
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Check {
    /// The credential zstor.toml (zstor's config)
    Zstor,
    /// MinIO's credentials minio-root-user and minio-root-password
    Minio,
    /// monitor_config.toml
    Monitor,
    /// qsfs.env
    Env,
    /// qsfs.toml
    Appliance,
}

#[derive(Args)]
struct CheckArgs {
    /// The root the image is unpacked under.
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
    /// Which configs to check [default: all].
    #[arg(value_enum)]
    which: Vec<Check>,
}

#[derive(Args)]
struct WatchArgs {
    /// How long the version switched to has to become healthy (longer than zdb takes to
    /// load its index).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    watch_secs: u64,
    /// How long it must then stay healthy to count.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    settle_secs: u64,
    /// Output format of the result.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

#[derive(Args)]
struct UpgradeArgs {
    /// The new image (qsfs-VERSION-x86_64.tar.gz, with SHA256SUMS beside it).
    tarball: PathBuf,
    /// Refuse the tarball unless SHA256SUMS beside it is signed by this minisign public key
    /// and lists it (as `verify --key`).
    #[arg(long, value_name = "PUBLIC_KEY")]
    key: Option<PathBuf>,
    #[command(flatten)]
    watch: WatchArgs,
}

#[derive(Args)]
struct RollbackArgs {
    #[command(flatten)]
    watch: WatchArgs,
}

#[derive(Args)]
struct StatusArgs {
    /// The root the image is installed under.
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

#[derive(Args)]
struct ConfigureArgs {
    /// The site settings. Without them, the credentials already installed (an image built
    /// with --site ships them plain) are encrypted for this machine.
    #[arg(long)]
    site: Option<PathBuf>,
    /// The root the image is unpacked under.
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
    /// Replace files that exist with other content.
    #[arg(long)]
    force: bool,
}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("qsfs-image: {err}");
            err.exit_code()
        }
    };
    std::process::exit(code);
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn run(command: Command) -> Result<i32, Error> {
    match command {
        Command::Build(args) => build(args),
        Command::Verify(args) => {
            let report = match (&args.tarball, &args.root) {
                (Some(tarball), _) => image::verify::verify_tarball(tarball, args.key.as_deref())?,
                (None, Some(root)) => image::verify::verify_root(root, args.manifest.as_deref())?,
                (None, None) => unreachable!("clap requires one"),
            };
            match args.format {
                Format::Human => print!("{}", report.to_text()),
                Format::Json => println!("{}", json(&report)),
            }
            Ok(if report.ok { exit::OK } else { exit::FAILURE })
        }
        Command::Keygen(args) => {
            let protection = if args.no_password {
                image::sign::Protection::None
            } else {
                image::sign::Protection::Password
            };
            let id = image::sign::keygen(&args.secret_key, &args.public_key, protection)?;
            println!(
                "qsfs-image: key {id}: secret key {} (keep it off the VMs), public key {}",
                args.secret_key.display(),
                args.public_key.display()
            );
            Ok(exit::OK)
        }
        Command::Inspect(args) => {
            let manifest = match (&args.tarball, &args.root) {
                (Some(tarball), _) => image::inspect::read_manifest(tarball)?,
                (None, Some(root)) => image::verify::read_tree_manifest(root, None)?,
                (None, None) => unreachable!("clap requires one"),
            };
            match args.format {
                Format::Human => print!("{}", image::inspect::to_text(&manifest)),
                Format::Json => println!("{}", json(&manifest)),
            }
            Ok(exit::OK)
        }
        Command::InstallConfig(args) => {
            for action in image::install::install_config(&args.root)? {
                if let Some(line) = action.describe() {
                    println!("qsfs-image: {line}");
                }
            }
            Ok(exit::OK)
        }
        Command::CheckConfig(args) => {
            let names: Vec<&str> = args
                .which
                .iter()
                .flat_map(|check| {
                    let short = match check {
                        Check::Zstor => "zstor",
                        Check::Minio => "minio",
                        Check::Monitor => "monitor",
                        Check::Env => "env",
                        Check::Appliance => "appliance",
                    };
                    image::install::CHECKS
                        .iter()
                        .filter(move |(name, _)| *name == short)
                        .map(|(_, file)| *file)
                })
                .collect();
            let problems = image::install::check_config(&args.root, &names);
            for problem in &problems {
                eprintln!("qsfs-image: {problem}");
            }
            Ok(if problems.is_empty() {
                exit::OK
            } else {
                exit::CONFIG
            })
        }
        Command::Upgrade(args) => {
            let store = image::versions::Store::new(std::path::Path::new("/"));
            store.live()?;
            let _lock = store.lock()?;
            image::upgrade::refuse_interrupted(&store)?;
            let (new, report) = store.add(&args.tarball, args.key.as_deref())?;
            progress(&format!(
                "{} verified ({}); installed as version {}",
                args.tarball.display(),
                match report.origin {
                    Some(image::verify::Origin::Signed { key_id, .. }) =>
                        format!("signed by {key_id}"),
                    _ => "origin NOT checked: no --key".to_string(),
                },
                new.id
            ));
            ignore_interruptions();
            let mut machine = image::host::Systemd::new(progress);
            let outcome = image::upgrade::upgrade(&store, &mut machine, &new, args.watch.watch())?;
            Ok(print_outcome(&outcome, args.watch.format))
        }
        Command::Rollback(args) => {
            let store = image::versions::Store::new(std::path::Path::new("/"));
            store.live()?;
            let _lock = store.lock()?;
            ignore_interruptions();
            let mut machine = image::host::Systemd::new(progress);
            let outcome = image::upgrade::rollback(&store, &mut machine, args.watch.watch())?;
            Ok(print_outcome(&outcome, args.watch.format))
        }
        Command::Status(args) => {
            let status = image::upgrade::status(&args.root)?;
            match args.format {
                Format::Human => print!("{}", status.to_text()),
                Format::Json => println!("{}", json(&status)),
            }
            Ok(exit::OK)
        }
        Command::Configure(args) => {
            let configured =
                image::install::configure(&args.root, args.site.as_deref(), args.force)?;
            for path in &configured.written {
                println!("qsfs-image: wrote {}", path.display());
            }
            println!("qsfs-image: {}", configured.form.describe());
            Ok(exit::OK)
        }
        Command::Preflight(args) => {
            let report = image::preflight::run(&args.root);
            match args.format {
                Format::Human => print!("{}", report.to_text()),
                Format::Json => println!("{}", json(&report)),
            }
            Ok(report.exit_code)
        }
        Command::Try(args) => {
            let report = image::trial::run(&image::trial::TrialOptions {
                image: args.image,
                site: args.site,
                keep: args.keep,
                rootfs: args.rootfs,
                cache_dir: qsfs::layout::TRY_CACHE_DIR.into(),
                work_dir: qsfs::layout::TRY_WORK_DIR.into(),
            });
            match args.format {
                Format::Human => print!("{}", report.to_text()),
                Format::Json => println!("{}", json(&report)),
            }
            Ok(report.exit_code())
        }
    }
}

impl WatchArgs {
    fn watch(&self) -> image::upgrade::Watch {
        image::upgrade::Watch {
            within: std::time::Duration::from_secs(self.watch_secs),
            settle: std::time::Duration::from_secs(self.settle_secs),
            every: std::time::Duration::from_secs(3),
        }
    }
}

/// A progress line of `upgrade` and `rollback`, on stderr (stdout carries the result, JSON
/// with --format json); a closed terminal never stops a switch half-way.
fn progress(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "qsfs-image: {line}");
}

/// A switch stops the units: Ctrl-C or a lost terminal must not leave them stopped. The watch
/// ends by itself.
fn ignore_interruptions() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

/// Prints the end of an upgrade or rollback; its exit code.
fn print_outcome(outcome: &image::upgrade::Outcome, format: Format) -> i32 {
    use std::io::Write;
    let text = match format {
        Format::Human => format!("qsfs-image: {}", outcome.describe()),
        Format::Json => json(outcome),
    };
    let _ = writeln!(std::io::stdout(), "{text}");
    outcome.exit_code()
}

fn build(args: BuildArgs) -> Result<i32, Error> {
    let mut overrides = BTreeMap::new();
    for arg in &args.components {
        let (name, path) = image::fetch::parse_override(arg)?;
        if overrides.insert(name.clone(), path).is_some() {
            return Err(Error::Usage(format!(
                "--component {name}=… is given more than once"
            )));
        }
    }
    if args.site.is_none() {
        eprintln!(
            "qsfs-image: no --site: building an image without secrets; the units refuse to start \
             until the credentials are supplied (qsfs-image configure --site FILE)"
        );
    }
    let signer = args
        .sign
        .as_deref()
        .map(image::sign::Signer::load)
        .transpose()?;
    let report = image::build::build(&BuildOptions {
        manifest: args.manifest,
        site: args.site,
        output_dir: args.output_dir,
        fetch: FetchOptions {
            offline: args.offline,
            cache_dir: args.cache_dir,
            overrides,
            ours_dir: args.ours_dir,
        },
        source_date_epoch: args.source_date_epoch,
        signer,
    })?;
    println!(
        "built {} ({:.1} MiB, sha256 {})",
        report.tarball.display(),
        report.size as f64 / (1024.0 * 1024.0),
        report.sha256
    );
    println!(
        "  {} {}, {} entries, built {}, secrets {}",
        report.manifest.image.name,
        report.manifest.image.version,
        report.manifest.entries.len() + 1,
        report.manifest.image.build_time,
        if report.manifest.image.secrets {
            "inside"
        } else {
            "not inside"
        }
    );
    for c in &report.manifest.components {
        println!("  {:<6} {:<30} {}", c.name, c.version, c.origin);
    }
    match &report.signature {
        image::sign::SumsSignature::Signed(path, key) => {
            println!("signed SHA256SUMS with key {key}: {}", path.display())
        }
        image::sign::SumsSignature::StaleRemoved(path) => println!(
            "removed the stale {} (SHA256SUMS changed; build with --sign KEY to sign it)",
            path.display()
        ),
        image::sign::SumsSignature::Unsigned => {}
    }
    Ok(exit::OK)
}
