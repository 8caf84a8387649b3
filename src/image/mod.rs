//! `qsfs-image`: the deterministic, verifiable appliance tarball of `/var/zdbfs`.
//!
//! One concern per module:
//! * [`manifest`]: `image/manifest.toml`, what goes into an image;
//! * [`lock`]: `image/manifest.lock`, the sha256 recorded by a component's first download;
//! * [`fetch`]: finding each component (local path, cache or download), sha256-verified;
//! * [`site`]: the operator's site settings, validated before anything is written;
//! * [`render`]: site settings → the credentials (zstor's config, MinIO's user and password),
//!   `monitor_config.toml`, `qsfs.env`, each re-read by its real parser as a check;
//! * [`tree`]: the sorted list of entries of an image (paths, modes, roles) and its `MANIFEST`;
//! * [`tarball`]: writing the deterministic `.tar.gz` and `SHA256SUMS`;
//! * [`build`]: the `build` subcommand, tying the above together;
//! * [`sign`]: the minisign signature of `SHA256SUMS`, and the keys that make it;
//! * [`verify`]: checking a tarball (its entries, its signature) or an installed tree against
//!   its `MANIFEST`;
//! * [`inspect`]: what an image holds;
//! * [`install`]: the config upgrade mechanism (`install-config`) and the units'
//!   `check-config`;
//! * [`versions`]: the installed versions (`/var/zdbfs/versions`) and their state file;
//! * [`upgrade`]: `upgrade`, `rollback` and `status`: switching versions, watched by
//!   `qsfs-health`, rolled back by themselves when the new one does not become healthy.
//! * [`preflight`]: whether this machine can run the appliance.
//! * [`trial`]: `try`, an image booted in a throwaway container and checked end to end.
//!
//! Every error names the file, key or argument at fault and maps to one exit code
//! ([`Error::exit_code`], listed in [`exit`]).

pub mod build;
pub mod fetch;
mod fsutil;
pub mod host;
pub mod inspect;
pub mod install;
pub mod lock;
pub mod manifest;
pub mod preflight;
pub mod render;
pub mod sign;
pub mod site;
pub mod tarball;
pub mod tree;
pub mod trial;
pub mod upgrade;
pub mod verify;
pub mod versions;

use crate::config::{ConfigError, Problem};
use std::path::PathBuf;

/// Exit codes of `qsfs-image`. The generic ones come from [`crate::exit`]; the others are
/// distinct so that a script can tell the failures of `build` apart.
pub mod exit {
    pub use crate::exit::{CONFIG, FAILURE, IO_ERROR, NO_INPUT, OK, USAGE};
    /// An input is not a readable qsfs image (not gzip, not tar, no `MANIFEST`) (`EX_DATAERR`).
    pub const NOT_AN_IMAGE: i32 = 65;
    /// A component name that qsfs-image does not know (in the manifest or `--component`).
    pub const UNKNOWN_COMPONENT: i32 = 80;
    /// A component's local path does not exist, is not a regular file or is not executable.
    pub const BAD_COMPONENT_PATH: i32 = 81;
    /// A component's sha256 is not the pinned one (manifest or lock file).
    pub const CHECKSUM_MISMATCH: i32 = 82;
    /// Components could not be found (offline and not cached, or no source at all).
    pub const MISSING_COMPONENT: i32 = 83;
    /// A download failed (network, HTTP status).
    pub const DOWNLOAD_FAILED: i32 = 84;
    /// `cargo build` of our own binaries failed.
    pub const BUILD_FAILED: i32 = 85;
    /// A tarball holds an entry that must never be unpacked (outside the image's directories,
    /// `..`, absolute, a link or a special file): refused before anything in it is trusted.
    pub const UNSAFE_ENTRY: i32 = 86;
    /// `verify --key`: `SHA256SUMS.minisig` is missing, malformed, made by another key, or
    /// does not verify `SHA256SUMS` (or `SHA256SUMS` is missing).
    pub const BAD_SIGNATURE: i32 = 87;
    /// `verify --key`: the tarball is not the one the signed `SHA256SUMS` lists.
    pub const NOT_SIGNED: i32 = 88;
    /// `preflight`: systemd is missing or older than 247.
    pub const PREFLIGHT_SYSTEMD: i32 = 90;
    /// `preflight`: `/dev/fuse` is missing, not the device or cannot be opened, or the kernel
    /// has no FUSE.
    pub const PREFLIGHT_FUSE: i32 = 91;
    /// `preflight`: a program in `/var/zdbfs/bin` lacks its loader, a library or a symbol
    /// version, or cannot run on this machine.
    pub const PREFLIGHT_LIBRARIES: i32 = 92;
    /// `preflight`: too little free space for zdb's data files.
    pub const PREFLIGHT_SPACE: i32 = 93;
    /// `preflight`: MinIO's address is taken (by anything but qsfs-minio.service) or cannot
    /// be bound.
    pub const PREFLIGHT_PORT: i32 = 94;
    /// `preflight`: the clock is before the image's build time.
    pub const PREFLIGHT_CLOCK: i32 = 95;
    /// `preflight`: a config it reads (`qsfs.env`, the `MANIFEST`) is unreadable or invalid.
    pub const PREFLIGHT_CONFIG: i32 = 96;
    /// `try`: a step failed (the report names it); the container is removed.
    pub const TRY_FAILED: i32 = 98;
    /// `upgrade`: the new version did not become healthy and the old one is live again.
    pub const ROLLED_BACK: i32 = 100;
    /// `upgrade`/`rollback` refused before anything was switched: no version to return to,
    /// on-disk formats the target cannot read, or a live tree that does not match its
    /// `MANIFEST`.
    pub const SWITCH_REFUSED: i32 = 102;
    /// The version switched to did not become healthy and stays (its rollback was refused,
    /// or a rollback by hand did not become healthy either).
    pub const UNHEALTHY: i32 = 103;
}

/// Where the appliance lives, relative to the root of an image or an installed tree.
pub mod layout {
    /// The appliance root.
    pub const ROOT: &str = "var/zdbfs";
    /// Every binary, third-party and ours.
    pub const BIN: &str = "var/zdbfs/bin";
    /// Configuration files (and their shipped `*.default` versions).
    pub const ETC: &str = "var/zdbfs/etc";
    /// The image's `MANIFEST`.
    pub const MANIFEST: &str = "var/zdbfs/MANIFEST";
    /// Unit files (copies, never symlinks into `/var`).
    pub const UNITS: &str = "etc/systemd/system";
    /// Preset files.
    pub const PRESETS: &str = "etc/systemd/system-preset";
    /// The suffix of a shipped config default; `install-config` installs `NAME` from
    /// `NAME.default` (see [`super::install`]).
    pub const DEFAULT_SUFFIX: &str = ".default";
    /// The credential store (mode 0700): the secrets, which the units load as systemd
    /// credentials (see [`crate::layout::CREDSTORE`]).
    pub const CREDSTORE: &str = "var/zdbfs/etc/credstore";
    /// The zstor config (secret: backend passwords and the key), relative to [`ETC`]: the
    /// credential `zstor.toml`.
    pub const ZSTOR_CONFIG: &str = "credstore/zstor.toml";
    /// The monitor config.
    pub const MONITOR_CONFIG: &str = "monitor_config.toml";
    /// MinIO's root user (secret), the credential `minio-root-user`.
    pub const MINIO_USER: &str = "credstore/minio-root-user";
    /// MinIO's root password (secret), the credential `minio-root-password`.
    pub const MINIO_PASSWORD: &str = "credstore/minio-root-password";
    /// The config files that hold secrets: always mode 0600 in the 0700 credential store,
    /// and no `MANIFEST` or install record carries their sha256 or size (a secret could be
    /// guessed offline from them).
    pub const SECRET_FILES: &[&str] = &[ZSTOR_CONFIG, MINIO_USER, MINIO_PASSWORD];
    /// The config files that hold or may hold secrets (the monitor config may hold the eVDC
    /// password): always mode 0600, and `check-config` refuses one that others can read.
    pub const PRIVATE_FILES: &[&str] = &[ZSTOR_CONFIG, MINIO_USER, MINIO_PASSWORD, MONITOR_CONFIG];

    /// The name of the systemd credential a secret file is loaded as (its file name).
    pub fn credential_name(file: &str) -> &str {
        file.rsplit('/').next().unwrap_or(file)
    }

    /// The mode of config file `name`: 0600 for [`PRIVATE_FILES`], 0644 for the others.
    pub fn config_mode(name: &str) -> u32 {
        if PRIVATE_FILES.contains(&name) {
            0o600
        } else {
            0o644
        }
    }
    /// The units' environment (`EnvironmentFile=`).
    pub const QSFS_ENV: &str = "qsfs.env";
    /// The appliance config read by `zdb-hook` and `qsfs-health`.
    pub const QSFS_TOML: &str = "qsfs.toml";
    /// The installed versions and their state (see [`super::versions`]).
    pub const VERSIONS: &str = "var/zdbfs/versions";
    /// Runtime directories: `(name, mode)`; spool and state are private.
    pub const DATA_DIRS: &[(&str, u32)] = &[
        ("data", 0o755),
        ("index", 0o755),
        ("log", 0o755),
        ("mnt", 0o755),
        ("spool", 0o700),
        ("state", 0o700),
    ];
}

/// The third-party components, installed as `/var/zdbfs/bin/<name>`.
pub const COMPONENTS: &[&str] = &["zdb", "zdbfs", "zstor", "minio"];
/// Our binaries, installed next to them.
pub const OURS: &[&str] = &["zdb-hook", "zstor_monitor", "qsfs-health", "qsfs-image"];
/// The architecture every image is built for (the pinned upstream binaries are amd64).
pub const ARCH: &str = "x86_64";

/// Why `qsfs-image` failed. Messages never contain a secret value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest, site settings, lock file or an installed config is missing or invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A component name that is not one of [`COMPONENTS`] or [`OURS`].
    #[error("{0}")]
    UnknownComponent(String),
    /// A local component file that cannot be used.
    #[error("component `{name}`: {}: {problem}", path.display())]
    BadPath {
        /// The component.
        name: String,
        /// The path given for it.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A component whose content is not the pinned one.
    #[error(
        "component `{name}`: sha256 mismatch for {what}\n  expected {expected} ({pinned_by})\n  actual   {actual}"
    )]
    ChecksumMismatch {
        /// The component.
        name: String,
        /// The URL, cache file or path whose content was hashed.
        what: String,
        /// Where the expected value comes from (the manifest or the lock file).
        pinned_by: String,
        /// The pinned sha256.
        expected: String,
        /// The sha256 of what was found.
        actual: String,
    },
    /// Components that could not be found; every one is listed with how to supply it.
    #[error("{}", missing_message(.0))]
    Missing(Vec<Missing>),
    /// Our own binaries could not be built.
    #[error("building our binaries failed: {0}")]
    Build(String),
    /// A wrong command-line argument that clap cannot check.
    #[error("{0}")]
    Usage(String),
    /// `upgrade`/`rollback` refused before switching anything: why.
    #[error("refused: {0}")]
    SwitchRefused(String),
    /// A switch stopped half-way with a version live that is not healthy: what to do.
    #[error("{0}")]
    SwitchCutShort(String),
    /// The input is not a readable qsfs image.
    #[error("{}: not a readable qsfs image: {message}", path.display())]
    NotAnImage {
        /// The tarball or tree.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tarball holds entries that must never be unpacked: each with why.
    #[error("{}", unsafe_message(path, entries))]
    UnsafeEntries {
        /// The tarball (or the `MANIFEST` that lists such paths).
        path: PathBuf,
        /// Each entry's name (escaped) and why it is refused.
        entries: Vec<(String, String)>,
    },
    /// A signing key that cannot be used (not a minisign key, wrong or no password).
    #[error("{}: {message}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `SHA256SUMS` is not signed by the expected key.
    #[error("{}: {message}", path.display())]
    Signature {
        /// The signature (or `SHA256SUMS`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tarball that the signed `SHA256SUMS` does not vouch for.
    #[error("{}: {message}", path.display())]
    NotSigned {
        /// The tarball.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A local I/O error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// One component that could not be found.
#[derive(Debug, Clone)]
pub struct Missing {
    /// The component.
    pub name: String,
    /// Its version from the manifest.
    pub version: String,
    /// Why it is missing (not cached while offline, download failed, …).
    pub reason: String,
    /// Whether the reason is a failed download (exit code [`exit::DOWNLOAD_FAILED`]).
    pub download_failed: bool,
    /// How to supply it instead.
    pub how: String,
}

fn missing_message(missing: &[Missing]) -> String {
    let mut text = format!(
        "{} component{} missing:",
        missing.len(),
        if missing.len() == 1 { " is" } else { "s are" }
    );
    for m in missing {
        text.push_str(&format!(
            "\n  {} {}: {}\n    {}",
            m.name, m.version, m.reason, m.how
        ));
    }
    text
}

fn unsafe_message(path: &std::path::Path, entries: &[(String, String)]) -> String {
    let mut text = format!(
        "{}: refused: {} {} that must never be unpacked:",
        path.display(),
        entries.len(),
        if entries.len() == 1 {
            "entry"
        } else {
            "entries"
        }
    );
    for (name, why) in entries {
        text.push_str(&format!("\n  {name}: {why}"));
    }
    text
}

impl Error {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(e) if matches!(e.problem, Problem::Missing | Problem::Unreadable) => {
                exit::NO_INPUT
            }
            Error::Config(_) => exit::CONFIG,
            Error::UnknownComponent(_) => exit::UNKNOWN_COMPONENT,
            Error::BadPath { .. } => exit::BAD_COMPONENT_PATH,
            Error::ChecksumMismatch { .. } => exit::CHECKSUM_MISMATCH,
            Error::Missing(missing) if missing.iter().any(|m| m.download_failed) => {
                exit::DOWNLOAD_FAILED
            }
            Error::Missing(_) => exit::MISSING_COMPONENT,
            Error::Build(_) => exit::BUILD_FAILED,
            Error::Usage(_) => exit::USAGE,
            Error::SwitchRefused(_) => exit::SWITCH_REFUSED,
            Error::SwitchCutShort(_) => exit::UNHEALTHY,
            Error::NotAnImage { .. } => exit::NOT_AN_IMAGE,
            Error::UnsafeEntries { .. } => exit::UNSAFE_ENTRY,
            Error::Key { .. } => exit::CONFIG,
            Error::Signature { .. } => exit::BAD_SIGNATURE,
            Error::NotSigned { .. } => exit::NOT_SIGNED,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                exit::NO_INPUT
            }
            Error::Io { .. } => exit::IO_ERROR,
        }
    }

    /// An I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// A lowercase hex sha256.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `true` if `text` is 64 lowercase or uppercase hex digits.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image's credential names are the ones the programs and units look for.
    #[test]
    fn credential_names_match_the_layout() {
        use layout::*;
        assert_eq!(
            format!("/{CREDSTORE}"),
            crate::layout::CREDSTORE,
            "one credential store"
        );
        assert_eq!(
            [ZSTOR_CONFIG, MINIO_USER, MINIO_PASSWORD].map(credential_name),
            [
                crate::layout::ZSTOR_CREDENTIAL,
                crate::layout::MINIO_USER_CREDENTIAL,
                crate::layout::MINIO_PASSWORD_CREDENTIAL
            ]
        );
        assert_eq!(
            format!("/{ETC}/{ZSTOR_CONFIG}"),
            crate::layout::ZSTOR_CONFIG
        );
    }

    #[test]
    fn image_exit_codes_are_distinct() {
        let mut codes = vec![
            exit::OK,
            exit::FAILURE,
            exit::USAGE,
            exit::NO_INPUT,
            exit::IO_ERROR,
            exit::CONFIG,
            exit::NOT_AN_IMAGE,
            exit::UNKNOWN_COMPONENT,
            exit::BAD_COMPONENT_PATH,
            exit::CHECKSUM_MISMATCH,
            exit::MISSING_COMPONENT,
            exit::DOWNLOAD_FAILED,
            exit::BUILD_FAILED,
            exit::UNSAFE_ENTRY,
            exit::BAD_SIGNATURE,
            exit::NOT_SIGNED,
            exit::PREFLIGHT_SYSTEMD,
            exit::PREFLIGHT_FUSE,
            exit::PREFLIGHT_LIBRARIES,
            exit::PREFLIGHT_SPACE,
            exit::PREFLIGHT_PORT,
            exit::PREFLIGHT_CLOCK,
            exit::PREFLIGHT_CONFIG,
            exit::TRY_FAILED,
            exit::ROLLED_BACK,
            exit::SWITCH_REFUSED,
            exit::UNHEALTHY,
        ];
        let count = codes.len();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), count);
    }

    #[test]
    fn missing_lists_every_component() {
        let missing = |name: &str, download_failed| Missing {
            name: name.into(),
            version: "1".into(),
            reason: "not cached".into(),
            download_failed,
            how: format!("--component {name}=PATH"),
        };
        let err = Error::Missing(vec![missing("zdb", false), missing("minio", false)]);
        let text = err.to_string();
        assert!(text.starts_with("2 components are missing:"), "{text}");
        assert!(text.contains("zdb 1: not cached") && text.contains("--component minio=PATH"));
        assert_eq!(err.exit_code(), exit::MISSING_COMPONENT);
        let err = Error::Missing(vec![missing("zdb", true)]);
        assert_eq!(err.exit_code(), exit::DOWNLOAD_FAILED);
    }
}
