//! Logging setup for every binary, and the stable journal `MESSAGE_ID`s of key events.
//!
//! Under systemd the binaries log natively to journald: one `SYSLOG_IDENTIFIER` per binary, and
//! the fields of each event as journal fields without a prefix, so `qsfs_event = "jump-data"`
//! becomes `QSFS_EVENT=jump-data` and `message_id = …` becomes the catalog `MESSAGE_ID=`.
//! Elsewhere they log to stderr without timestamps.
//!
//! Environment:
//! * `QSFS_LOG`: `error`, `warn`, `info` (default), `debug` or `trace`.
//! * `QSFS_LOG_TARGET`: `journal`, `stderr` or `auto` (default). `auto` picks the journal when
//!   `JOURNAL_STREAM` is set (systemd connected our output to the journal), or when the journal
//!   socket exists and stderr is not a terminal (a child of a service, such as the hook under
//!   zdb); an operator at a terminal sees stderr.

use std::io::IsTerminal;
use std::path::Path;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

/// Stable `MESSAGE_ID`s, so operators can run `journalctl MESSAGE_ID=<id>`. Never change a value.
pub mod message_id {
    /// A file's upload was verified: `zstor check` matches the local checksum.
    pub const UPLOAD_VERIFIED: &str = "1f4f549df4e24e509425aef720a706d7";
    /// A file's upload failed and will be retried.
    pub const UPLOAD_FAILED: &str = "e7128de9b35142518a1656786cc5103f";
    /// A sealed, verified data file was deleted from the local cache.
    pub const FILE_EVICTED: &str = "4d03c08fa132421e90cac0a3901e22bf";
    /// A backend changed state (healthy, low space, unknown, unreachable).
    pub const BACKEND_STATE_CHANGED: &str = "0de63988124a438b9c82dfdf67748f63";
    /// zdbfs's cache could not be written to zdb (its snapshot ioctl failed or hung).
    pub const ZDBFS_FLUSH_FAILED: &str = "d6a0f9d959b248fda38ce6fc427a53e1";
    /// A spool job could not be used (unparsable, a bad id, a snapshot outside its directory,
    /// a file outside the zdb roots) and was moved to the spool's `bad/`; `QSFS_JOB_FILE` names
    /// it.
    pub const SPOOL_JOB_QUARANTINED: &str = "1b728630434a4ac08c656fddd58e2436";
    /// A zdb hook event could not be handled.
    pub const HOOK_FAILED: &str = "fcb64dd5e8674a39bbf905c1cf0aff8e";
    /// qsfs-health: a probe changed state (ok, degraded, unknown, failed).
    pub const HEALTH_STATE_CHANGED: &str = "c55721f34d0ef8af85f68d9d6b919055";
    /// qsfs-health: a unit that is active but fails its probe is being restarted.
    pub const HEALTH_RESTART_REQUESTED: &str = "1d0920f050aeafadc447b9bc7407c6de";
    /// qsfs-health: a restart it requested finished (the job result is in `QSFS_JOB_RESULT`).
    pub const HEALTH_RESTART_DONE: &str = "ed87462283bacd5178d408467bc7c7e5";
    /// qsfs-health: a restart it requested failed or did not finish in time.
    pub const HEALTH_RESTART_FAILED: &str = "8aa5ad64adf55d7f0b2f611ffb9aac37";
    /// qsfs-health: it gave up restarting a unit (too many restarts in the window).
    pub const HEALTH_GAVE_UP: &str = "2063aa0de06865b18232ad414665431d";
    /// qsfs-health: it lazily unmounted a stale FUSE mount before restarting zdbfs.
    pub const HEALTH_STALE_MOUNT_CLEARED: &str = "ec728d235285b014c93fcd1589588462";
    /// A sealed data file differs from its verified remote copy: the local copy was set aside
    /// and the remote one kept.
    pub const LOCAL_COPY_DAMAGED: &str = "5b0c4e7f0f7a4d2c9a3e61d8b2f4c917";
    /// qsfs-image: an upgrade became healthy (`QSFS_FROM`, `QSFS_TO`: version ids).
    pub const UPGRADED: &str = "6fb73ef1ed2b47c8baf640a176d12fb0";
    /// qsfs-image: an upgrade did not become healthy and is being rolled back (`QSFS_REASON`).
    pub const UPGRADE_ROLLED_BACK: &str = "3b4e502448694436a4bf543a0b709697";
    /// qsfs-image: a rollback by hand became healthy.
    pub const ROLLED_BACK: &str = "071b1e38a1e44194b99eba723a6713f7";
    /// qsfs-image: the version switched to did not become healthy and stays (`QSFS_REASON`).
    pub const SWITCH_UNHEALTHY: &str = "57332686df2f498f935aa96ef52ea620";
    /// zdb-hook: `namespaces-init` refused or failed, so zdb will not start (`QSFS_REASON`
    /// says what is missing or partial).
    pub const RESTORE_REFUSED: &str = "a4d1e9f27c3b4c6e8f05b2d7e91c3a68";
    /// `zdb-hook` could not take a restore point (the last published one stays).
    pub const CUT_FAILED: &str = "9c2e7d41a85f4b0e93d6f1a27c4b8e05";
    /// `zstor_monitor` published a restore point: a fresh VM restores to it.
    pub const CUT_PUBLISHED: &str = "2f8b1c6e0d9a4e73b5c4a8f6e1d03b92";
    /// `zstor_monitor` cannot publish a restore point (what it names is not uploaded).
    pub const CUT_NOT_PUBLISHED: &str = "e41a7b9c3d2f4605a8b1c9e7f20d6a34";
}

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Native journald records with structured fields.
    Journal,
    /// Plain lines on stderr.
    Stderr,
}

/// Chooses the log target from the environment (see the module documentation).
pub fn target_from_env() -> Target {
    match std::env::var("QSFS_LOG_TARGET").as_deref() {
        Ok("journal") => Target::Journal,
        Ok("stderr") => Target::Stderr,
        _ if std::env::var_os("JOURNAL_STREAM").is_some() => Target::Journal,
        _ if Path::new(JOURNAL_SOCKET).exists() && !std::io::stderr().is_terminal() => {
            Target::Journal
        }
        _ => Target::Stderr,
    }
}

fn level_from_env() -> LevelFilter {
    std::env::var("QSFS_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LevelFilter::INFO)
}

/// The journald layer of the binary named `identifier`, with our field and priority mapping.
fn journal_layer(identifier: &str) -> Option<tracing_journald::Layer> {
    let mappings = tracing_journald::PriorityMappings {
        info: tracing_journald::Priority::Informational,
        debug: tracing_journald::Priority::Debug,
        ..tracing_journald::PriorityMappings::new()
    };
    let layer = tracing_journald::layer().ok()?;
    Some(
        layer
            .with_syslog_identifier(identifier.to_string())
            .with_field_prefix(None)
            .with_priority_mappings(mappings),
    )
}

/// A logger that writes to the journal whatever the environment says, for the events an
/// operator must find there even when the program runs at a terminal (`qsfs-image upgrade`);
/// `None` when the journal cannot be reached.
pub fn journal_dispatch(identifier: &str) -> Option<tracing::Dispatch> {
    let layer = journal_layer(identifier)?;
    Some(tracing::Dispatch::new(
        tracing_subscriber::registry().with(layer),
    ))
}

/// Installs the global logger for the binary named `identifier`. Falls back to stderr when the
/// journal cannot be reached.
pub fn init(identifier: &str) {
    let level = level_from_env();
    let journal = match target_from_env() {
        Target::Journal => journal_layer(identifier),
        Target::Stderr => None,
    };
    let result = match journal {
        Some(layer) => {
            let layer = layer.with_filter(level);
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        }
        None => {
            let layer = tracing_subscriber::fmt::layer()
                .without_time()
                .with_target(false)
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .with_filter(level);
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        }
    };
    // Only a second call fails; the first logger stays.
    drop(result);
}
