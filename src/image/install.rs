//! Configs on an installed tree: the upgrade mechanism (`install-config`), the units' gate
//! (`check-config`) and supplying site settings after unpacking, the credentials encrypted
//! for the machine where `systemd-creds` works (`configure`).
//!
//! **Upgrades.** An image never ships a config under its live name: it ships
//! `var/zdbfs/etc/NAME.default`, so unpacking a newer image (`tar -xzpf … -C /`) replaces the
//! defaults and never an operator's file. `install-config` (run by the `qsfs-config.service`
//! oneshot before every other qsfs unit) then decides per config, like dpkg's conffiles:
//! * `NAME` missing: install it from `NAME.default` (atomically, with the default's mode);
//! * `NAME` equal to the default it was installed from (recorded by sha256 in
//!   `var/zdbfs/etc/.installed-defaults`), i.e. never edited: replace it with the new default;
//!   a secret is never recorded (its hash would let it be guessed), so an installed secret
//!   that differs from its default is always kept;
//! * otherwise the operator edited it: keep it, and say so when the new default differs
//!   (merge by hand from `NAME.default`).
//!
//! **Gate.** `check-config` prints one line per missing or invalid config (naming the file and
//! what to put there) and exits 78, for the units' `ExecStartPre=` (and the operator): an
//! image built without secrets has no credentials (zstor's config, MinIO's user and password)
//! until the operator supplies them (a unit whose credential is missing fails before its
//! `ExecStartPre=`, with systemd's 243/CREDENTIALS). A secret is checked as its unit reads it
//! (in `$CREDENTIALS_DIRECTORY`, decrypted); an encrypted one outside a unit only for its mode.
//! It also refuses what the
//! files say together when they disagree (the zdb roots, spool and state directories; two
//! metrics listeners on one TCP port) and, on the machine itself (`--root /`), a zstor
//! `prometheus_port` that is taken.

use super::fsutil::{sha256_file, write_atomic};
use super::layout::{self, DEFAULT_SUFFIX, PRIVATE_FILES, SECRET_FILES};
use super::render::{self, check_rendered, validate_config};
use super::site::SiteSettings;
use super::tree::{ImageManifest, Role};
use super::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The record of which default each config was installed from.
pub const RECORD: &str = ".installed-defaults";

const RECORD_HEADER: &str = "\
# Written by `qsfs-image install-config`: the sha256 of the shipped default each config was
# last installed from. A config still equal to it was never edited and follows new defaults.
# Secrets are not listed (their hash would let them be guessed): an installed one is kept.
";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    #[serde(default)]
    installed: BTreeMap<String, String>,
}

/// What `install-config` did with one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// It was missing and was installed from its default.
    Installed(String),
    /// It was never edited and now follows the new default.
    Updated(String),
    /// The operator edited it and the new default differs: kept, merge by hand.
    Kept(String),
    /// Nothing to do.
    Unchanged(String),
    /// Its default is missing or does not match the `MANIFEST`: left alone.
    Skipped(String, String),
    /// A secret of an older image, moved into the credential store: (from, to).
    Moved(String, String),
    /// A config that holds or may hold secrets was readable by others: now mode 0600.
    MadePrivate(String),
}

impl Action {
    /// A line for the journal, or `None` when there is nothing to say.
    pub fn describe(&self) -> Option<String> {
        match self {
            Action::Installed(path) => Some(format!("installed {path} from its shipped default")),
            Action::Updated(path) => Some(format!(
                "updated {path} to the new shipped default (it had not been edited)"
            )),
            Action::Kept(path) => Some(format!(
                "kept your edited {path}; the new default is {path}{DEFAULT_SUFFIX} (merge by hand)"
            )),
            Action::Unchanged(_) => None,
            Action::Skipped(path, why) => Some(format!("left {path} alone: {why}")),
            Action::Moved(from, to) => Some(format!(
                "moved {from} of an older image into the credential store as {to}"
            )),
            Action::MadePrivate(path) => Some(format!(
                "made {path} private (mode 0600): it holds or may hold secrets"
            )),
        }
    }
}

/// Installs every config from its shipped default where that is safe (see the module docs).
pub fn install_config(root: &Path) -> Result<Vec<Action>, Error> {
    let image = super::verify::read_tree_manifest(root, None)?;
    install_from(root, &image)
}

fn install_from(root: &Path, image: &ImageManifest) -> Result<Vec<Action>, Error> {
    let etc = root.join(layout::ETC);
    let record_path = etc.join(RECORD);
    let mut record: Record = match std::fs::read_to_string(&record_path) {
        Ok(text) => toml::from_str(&text).unwrap_or_default(),
        Err(_) => Record::default(),
    };
    let mut actions = migrate_legacy_secrets(root)?;
    // Only this image's configs that are not secrets are recorded: an older install-config
    // recorded the secrets' hashes too (`zstor-default.toml`, `minio.env`), which go.
    let recorded: Vec<String> = image
        .configs()
        .filter(|(default, _)| default.role != Role::Secret)
        .filter_map(|(_, live)| Some(live.rsplit('/').next()?.to_string()))
        .collect();
    let before = record.installed.len();
    record.installed.retain(|name, _| recorded.contains(name));
    let mut changed = record.installed.len() != before;
    for (default, live) in image.configs() {
        let name = live.rsplit('/').next().unwrap_or(&live).to_string();
        let shown = format!("/{live}");
        let default_path = root.join(&default.path);
        if default.role == Role::Secret {
            actions.push(install_secret(root, &default_path, &live, shown)?);
            continue;
        }
        let default_sha = match sha256_file(&default_path) {
            Ok((sha, _)) => sha,
            Err(_) => {
                actions.push(Action::Skipped(
                    shown,
                    format!("its default /{} is missing", default.path),
                ));
                continue;
            }
        };
        if Some(&default_sha) != default.sha256.as_ref() {
            actions.push(Action::Skipped(
                shown,
                format!(
                    "its default /{} differs from the MANIFEST (run qsfs-image verify --root /)",
                    default.path
                ),
            ));
            continue;
        }
        let live_path = root.join(&live);
        let live_sha = match sha256_file(&live_path) {
            Ok((sha, _)) => Some(sha),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let recorded = record.installed.get(&name).cloned();
        let action = match live_sha {
            None => Action::Installed(shown),
            Some(sha) if sha == default_sha => Action::Unchanged(shown),
            Some(sha) if Some(&sha) == recorded.as_ref() => Action::Updated(shown),
            Some(_) if recorded.as_ref() == Some(&default_sha) => Action::Unchanged(shown),
            Some(_) => Action::Kept(shown),
        };
        if matches!(action, Action::Installed(_) | Action::Updated(_)) {
            let bytes = std::fs::read(&default_path).map_err(|e| Error::io(&default_path, e))?;
            write_atomic(&live_path, &bytes, default.mode_bits())?;
        }
        // Record the default this config now corresponds to. For a kept (edited) config this
        // remembers that the operator was told about this default, so the note is given once.
        if recorded.as_ref() != Some(&default_sha) {
            record.installed.insert(name, default_sha);
            changed = true;
        }
        actions.push(action);
    }
    for name in PRIVATE_FILES {
        let path = etc.join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(&path, e))?;
            actions.push(Action::MadePrivate(format!("/{}/{name}", layout::ETC)));
        }
    }
    if changed {
        let body = toml::to_string(&record)
            .map_err(|e| Error::io(&record_path, std::io::Error::other(e.to_string())))?;
        write_atomic(
            &record_path,
            format!("{RECORD_HEADER}\n{body}").as_bytes(),
            0o644,
        )?;
    }
    Ok(actions)
}

/// zstor's config of an image before the credential store (`var/zdbfs/etc/…`).
const LEGACY_ZSTOR_CONFIG: &str = "zstor-default.toml";
/// MinIO's credentials of an image before the credential store (`MINIO_ROOT_USER=…` lines).
const LEGACY_MINIO_ENV: &str = "minio.env";

/// A credential to write: its file (relative to `var/zdbfs/etc`) and content.
type Credential = (&'static str, Vec<u8>);

/// Moves the secrets of an older image (`zstor-default.toml`, `minio.env` in
/// `var/zdbfs/etc`) into the credential store where it has none yet, and removes them and
/// their shipped defaults: nothing is lost, and no plain copy stays outside the store.
fn migrate_legacy_secrets(root: &Path) -> Result<Vec<Action>, Error> {
    let etc = root.join(layout::ETC);
    let shown = |name: &str| format!("/{}/{name}", layout::ETC);
    let mut actions = Vec::new();
    let mut moves: Vec<(&str, Vec<Credential>)> = Vec::new();
    if let Ok(bytes) = std::fs::read(etc.join(LEGACY_ZSTOR_CONFIG)) {
        moves.push((LEGACY_ZSTOR_CONFIG, vec![(layout::ZSTOR_CONFIG, bytes)]));
    }
    if let Ok(text) = std::fs::read_to_string(etc.join(LEGACY_MINIO_ENV)) {
        let vars = render::parse_env(&text).unwrap_or_default();
        let value = |key: &str| vars.get(key).map(|(v, _)| format!("{v}\n").into_bytes());
        match (value("MINIO_ROOT_USER"), value("MINIO_ROOT_PASSWORD")) {
            (Some(user), Some(password)) => moves.push((
                LEGACY_MINIO_ENV,
                vec![
                    (layout::MINIO_USER, user),
                    (layout::MINIO_PASSWORD, password),
                ],
            )),
            _ => actions.push(Action::Skipped(
                shown(LEGACY_MINIO_ENV),
                "it has no MINIO_ROOT_USER and MINIO_ROOT_PASSWORD to move into the credential \
                 store"
                    .into(),
            )),
        }
    }
    for (old, credentials) in moves {
        if credentials.iter().all(|(name, _)| etc.join(name).exists()) {
            // The store has them already: the old copies are only plain leftovers.
        } else {
            let store = root.join(layout::CREDSTORE);
            std::fs::create_dir_all(&store).map_err(|e| Error::io(&store, e))?;
            std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(&store, e))?;
            for (name, bytes) in &credentials {
                if !etc.join(name).exists() {
                    write_atomic(&etc.join(name), bytes, 0o600)?;
                }
            }
            let to: Vec<String> = credentials.iter().map(|(name, _)| shown(name)).collect();
            actions.push(Action::Moved(shown(old), to.join(" and ")));
        }
        for leftover in [old.to_string(), format!("{old}{DEFAULT_SUFFIX}")] {
            match std::fs::remove_file(etc.join(&leftover)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(etc.join(&leftover), e))
                }
                _ => {}
            }
        }
    }
    Ok(actions)
}

/// Installs a secret (`live`, relative to `root`) from its shipped default (`default`) when it
/// is missing. The `MANIFEST` and the record hold no hash of a secret, so an installed one
/// whose content (decrypted, when `configure` encrypted it) differs from the default cannot be
/// told apart from an edited one: it is always kept.
fn install_secret(root: &Path, default: &Path, live: &str, shown: String) -> Result<Action, Error> {
    let bytes = match std::fs::read(default) {
        Ok(bytes) => bytes,
        Err(_) => {
            return Ok(Action::Skipped(
                shown,
                format!("its default {} is missing", default.display()),
            ))
        }
    };
    let name = live
        .strip_prefix(layout::ETC)
        .map_or(live, |n| n.trim_start_matches('/'));
    let path = root.join(live);
    match read_credential(root, name) {
        Ok(current) if current == bytes => Ok(Action::Unchanged(shown)),
        Ok(_) => Ok(Action::Kept(shown)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The units load the store encrypted (configure's drop-ins): a plain file would stop
            // them (`LoadCredentialEncrypted=` refuses it), so it is installed encrypted too.
            let bytes = if credentials_encrypted(root) {
                systemd_creds_encrypt(layout::credential_name(name), &bytes).map_err(|problem| {
                    Error::io(
                        &path,
                        std::io::Error::other(format!("systemd-creds encrypt: {problem}")),
                    )
                })?
            } else {
                bytes
            };
            write_atomic(&path, &bytes, 0o600)?;
            Ok(Action::Installed(shown))
        }
        // Encrypted for this machine but not decryptable here: it is the operator's.
        Err(_) if credentials_encrypted(root) => Ok(Action::Unchanged(shown)),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// The configs `check-config` knows, by short name (`minio` is two files).
pub const CHECKS: &[(&str, &str)] = &[
    ("zstor", layout::ZSTOR_CONFIG),
    ("minio", layout::MINIO_USER),
    ("minio", layout::MINIO_PASSWORD),
    ("monitor", layout::MONITOR_CONFIG),
    ("env", layout::QSFS_ENV),
    ("appliance", layout::QSFS_TOML),
];

fn what_to_put(name: &str) -> &'static str {
    match name {
        layout::ZSTOR_CONFIG => {
            "the credential zstor.toml: `qsfs-image configure --site site.toml` writes it from \
             site settings (see image/site.example.toml), encrypted where systemd-creds works; by \
             hand, put the zstor v0.5 config there (the 4 meta backends and the data backends \
             with their passwords, the 64-hex encryption key), mode 0600"
        }
        layout::MINIO_USER | layout::MINIO_PASSWORD => {
            "a credential of MinIO: `qsfs-image configure --site site.toml` writes it from site \
             settings; by hand, put the root user (at least 3 characters) or password (at least \
             8) there, alone, mode 0600"
        }
        _ => "it ships with the image: unpack the image again, or run `qsfs-image configure`",
    }
}

/// Checks the configs named in `names` (file names in `var/zdbfs/etc`; all of [`CHECKS`] when
/// empty) and returns one line per problem.
pub fn check_config(root: &Path, names: &[&str]) -> Vec<String> {
    let all: Vec<&str> = CHECKS.iter().map(|(_, file)| *file).collect();
    let names = if names.is_empty() { &all[..] } else { names };
    let mut problems = Vec::new();
    for name in names {
        let path = root.join(layout::ETC).join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            let default = PathBuf::from(format!("{}{DEFAULT_SUFFIX}", path.display()));
            if default.exists() {
                problems.push(format!(
                    "{} is missing: it is not installed yet; start qsfs-config.service (or run \
                     `qsfs-image install-config`) to install it from {}",
                    path.display(),
                    default.display()
                ));
            } else {
                problems.push(format!(
                    "{} is missing: {}",
                    path.display(),
                    what_to_put(name)
                ));
            }
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if PRIVATE_FILES.contains(name) && mode & 0o077 != 0 {
            problems.push(format!(
                "{} holds secrets but other users can read it (mode {mode:04o}): chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
        // An encrypted credential is read (decrypted) only where a unit loaded it.
        let Some(path) = readable(root, name) else {
            continue;
        };
        if let Err(e) = validate_config(name, &path) {
            problems.push(e.to_string());
        } else if *name == layout::ZSTOR_CONFIG && root == Path::new("/") {
            problems.extend(prometheus_port_taken(&path));
        }
    }
    if names.iter().any(|n| {
        [
            layout::MONITOR_CONFIG,
            layout::QSFS_TOML,
            layout::ZSTOR_CONFIG,
        ]
        .contains(n)
    }) {
        problems.extend(disagreements(root));
    }
    problems
}

/// Where config `name` of the tree under `root` can be read as its program reads it: a secret
/// on this machine is the unit's credential when systemd loaded it
/// ([`crate::layout::credential`]); an encrypted one elsewhere cannot be read (`None`).
fn readable(root: &Path, name: &str) -> Option<PathBuf> {
    let path = root.join(layout::ETC).join(name);
    if !SECRET_FILES.contains(&name) {
        return Some(path);
    }
    if root == Path::new("/") && std::env::var_os("CREDENTIALS_DIRECTORY").is_some() {
        return Some(crate::layout::credential(
            layout::credential_name(name),
            &path,
        ));
    }
    (!credentials_encrypted(root)).then_some(path)
}

/// The zdb unit, whose command line sets zdb's roots.
const ZDB_UNIT: &str = "qsfs-zdb.service";

/// What the configs of the tree under `root` say about one fact, where they say it: the zdb
/// roots (zdb's unit, `qsfs.toml`, `monitor_config.toml`), the spool and state directories
/// (`qsfs.toml`, `monitor_config.toml`) and the TCP ports of the metrics (the monitor's,
/// qsfs-health's, zstor's). One line per disagreement, naming every file and its value. A
/// config that is missing or invalid is left out (its own check reports it).
fn disagreements(root: &Path) -> Vec<String> {
    use crate::config::monitor::MonitorConfig;
    use crate::health::config::HealthConfig;
    let etc = root.join(layout::ETC);
    let file = |name: &str| etc.join(name).display().to_string();
    let unit_path = root.join(layout::UNITS).join(ZDB_UNIT);
    // The unit and its drop-ins (`<unit>.d/*.conf`, in name order), as systemd reads them.
    let unit = std::fs::read_to_string(&unit_path).ok().map(|mut text| {
        let mut drop_ins: Vec<PathBuf> = std::fs::read_dir(unit_path.with_extension("service.d"))
            .into_iter()
            .flatten()
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        drop_ins.sort();
        for drop_in in drop_ins {
            text.push('\n');
            text.push_str(&std::fs::read_to_string(drop_in).unwrap_or_default());
        }
        text
    });
    let appliance = HealthConfig::load(&etc.join(layout::QSFS_TOML)).ok();
    let monitor = MonitorConfig::load(&etc.join(layout::MONITOR_CONFIG)).ok();
    let zstor = readable(root, layout::ZSTOR_CONFIG)
        .and_then(|path| crate::zstor::config::ZstorConfig::load(&path).ok());

    let mut problems = Vec::new();
    type Place = (String, PathBuf);
    let mut agree = |what: &str, places: Vec<Option<Place>>| {
        let places: Vec<Place> = places.into_iter().flatten().collect();
        if places.windows(2).any(|w| w[0].1 != w[1].1) {
            let listed: Vec<String> = places
                .iter()
                .map(|(place, value)| format!("{place} = {:?}", value.display().to_string()))
                .collect();
            problems.push(format!(
                "{what} is set differently: {}; set them to the same directory",
                listed.join(", ")
            ));
        }
    };
    let unit_arg = |flag: &str| -> Option<Place> {
        let path = zdb_arg(unit.as_deref()?, flag)?;
        Some((
            format!("{} ExecStart= zdb {flag}", unit_path.display()),
            path,
        ))
    };
    let qsfs = |key: &str, value: Option<&PathBuf>| -> Option<Place> {
        Some((
            format!("{} [paths] {key}", file(layout::QSFS_TOML)),
            value?.clone(),
        ))
    };
    let mon = |key: &str, value: Option<&PathBuf>| -> Option<Place> {
        Some((
            format!("{} {key}", file(layout::MONITOR_CONFIG)),
            value?.clone(),
        ))
    };
    let paths = appliance.as_ref().map(|a| &a.paths);
    agree(
        "zdb's index root",
        vec![
            unit_arg("--index"),
            qsfs("index_dir", paths.map(|p| &p.index_dir)),
            mon(
                "zdb_index_dir_path",
                monitor.as_ref().map(|m| &m.zdb_index_dir_path),
            ),
        ],
    );
    agree(
        "zdb's data root",
        vec![
            unit_arg("--data"),
            qsfs("data_dir", paths.map(|p| &p.data_dir)),
            mon(
                "zdb_data_dir_path",
                monitor.as_ref().map(|m| &m.zdb_data_dir_path),
            ),
        ],
    );
    agree(
        "The spool directory",
        vec![
            qsfs("spool_dir", paths.map(|p| &p.spool_dir)),
            mon("spool_dir", monitor.as_ref().map(|m| &m.spool_dir)),
        ],
    );
    agree(
        "The state directory",
        vec![
            qsfs("state_dir", paths.map(|p| &p.state_dir)),
            mon("state_dir", monitor.as_ref().map(|m| &m.state_dir)),
        ],
    );

    // TCP metrics listeners: two on one port cannot both bind (zstor binds [::]:<port>, which
    // takes the port on every address).
    let tcp = |address: Option<&crate::metrics::Address>| match address {
        Some(crate::metrics::Address::Tcp(addr)) => Some(*addr),
        _ => None,
    };
    let listeners: Vec<(String, std::net::SocketAddr)> = [
        (
            format!("{} metrics_address", file(layout::MONITOR_CONFIG)),
            tcp(monitor.as_ref().and_then(|m| m.metrics_address.as_ref())),
        ),
        (
            format!("{} [health] metrics", file(layout::QSFS_TOML)),
            tcp(appliance.as_ref().and_then(|a| a.health.metrics.as_ref())),
        ),
        (
            format!("{} prometheus_port", file(layout::ZSTOR_CONFIG)),
            zstor
                .and_then(|z| z.prometheus_port)
                .map(|port| std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))),
        ),
    ]
    .into_iter()
    .filter_map(|(place, addr)| Some((place, addr?)))
    .collect();
    for (i, (first, a)) in listeners.iter().enumerate() {
        for (second, b) in &listeners[i + 1..] {
            let overlap = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
            if a.port() == b.port() && overlap {
                problems.push(format!(
                    "two metrics listeners on one TCP port: {first} = \"{a}\" and {second} = \"{b}\"; \
                     give each its own port (or a unix: socket)"
                ));
            }
        }
    }
    problems
}

/// The value of `flag` (`--flag VALUE` or `--flag=VALUE`) on the last `ExecStart=` line of a
/// unit file and its drop-ins (the one systemd runs: a drop-in resets it with an empty one).
fn zdb_arg(unit: &str, flag: &str) -> Option<PathBuf> {
    let command = unit
        .lines()
        .filter_map(|line| line.trim().strip_prefix("ExecStart="))
        .rfind(|command| !command.trim().is_empty())?;
    let mut words = command.split_whitespace();
    let inline = format!("{flag}=");
    while let Some(word) = words.next() {
        if word == flag {
            return words.next().map(PathBuf::from);
        }
        if let Some(value) = word.strip_prefix(&inline) {
            return Some(PathBuf::from(value));
        }
    }
    None
}

/// A problem when zstor's `prometheus_port` is taken on this machine: zstor aborts when it
/// cannot bind it. Skipped while the zstor daemon of the pid file runs (it holds the port).
fn prometheus_port_taken(config_path: &Path) -> Option<String> {
    let config = crate::zstor::config::ZstorConfig::load(config_path).ok()?;
    let port = config.prometheus_port?;
    let daemon = crate::zstor::daemon::Daemon::new(&config, Path::new(crate::layout::ZSTOR_BIN));
    let running = daemon.pid().is_ok();
    if running {
        return None;
    }
    port_in_use(port).map(|e| {
        format!(
            "{}: key `prometheus_port`: port {port} is taken on this machine ({e}); zstor \
             would abort at start: free the port or choose another",
            config_path.display()
        )
    })
}

/// Why `port` cannot be bound as zstor binds it (`[::]:<port>`, or `0.0.0.0:<port>` without
/// IPv6), or `None` when it is free.
fn port_in_use(port: u16) -> Option<std::io::Error> {
    let v6 = std::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, port));
    match v6 {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Some(e),
        Err(_) => std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).err(),
    }
}

/// How `configure` stored the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialForm {
    /// Encrypted with `systemd-creds encrypt` (the VM's host key), loaded with
    /// `LoadCredentialEncrypted=` (drop-ins written next to the units).
    Encrypted,
    /// Plain files, mode 0600 in the 0700 store, loaded with `LoadCredential=`; why.
    Plain(String),
}

impl CredentialForm {
    /// A line for the operator.
    pub fn describe(&self) -> String {
        match self {
            CredentialForm::Encrypted => format!(
                "credentials in {} encrypted with systemd-creds (this machine's host key)",
                crate::layout::CREDSTORE
            ),
            CredentialForm::Plain(why) => format!(
                "credentials in {} stored plain (mode 0600 in a 0700 directory): {why}",
                crate::layout::CREDSTORE
            ),
        }
    }
}

/// What `configure` did.
#[derive(Debug)]
pub struct Configured {
    /// The files written.
    pub written: Vec<PathBuf>,
    /// How the credentials are stored.
    pub form: CredentialForm,
}

/// The drop-in `configure` writes next to each unit that loads credentials, when they are
/// encrypted.
pub const ENCRYPTED_DROP_IN: &str = "50-qsfs-credentials-encrypted.conf";

/// Writes the configs rendered from `site` into the tree under `root` (supplying secrets to an
/// image built without them), the credentials encrypted where `systemd-creds` works on this
/// machine (`root` is `/`). Files that exist with other content are replaced only with
/// `force`. Without `site`, encrypts the credentials already installed (an image built with
/// `--site` ships them plain: encryption is bound to the VM).
pub fn configure(root: &Path, site: Option<&Path>, force: bool) -> Result<Configured, Error> {
    let etc = root.join(layout::ETC);
    let files: Vec<(&str, Vec<u8>)> = match site {
        Some(site) => {
            let settings = SiteSettings::load(site)?;
            let files = render::render(Some(&settings))?;
            let scratch = super::fsutil::TempDir::new(&std::env::temp_dir(), "qsfs-image-check")?;
            check_rendered(&files, scratch.path())?;
            drop(scratch);
            files
                .into_iter()
                .map(|f| (f.name, f.text.into_bytes()))
                .collect()
        }
        None => {
            let mut installed = Vec::new();
            for name in SECRET_FILES {
                let path = etc.join(name);
                match read_credential(root, name) {
                    Ok(bytes) => installed.push((*name, bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(path, e)),
                }
            }
            if installed.is_empty() {
                return Err(Error::Usage(format!(
                    "no credentials in {} to encrypt: give --site FILE",
                    root.join(layout::CREDSTORE).display()
                )));
            }
            installed
        }
    };
    if site.is_some() {
        let mut conflicts = Vec::new();
        for (name, text) in &files {
            if let Ok(existing) = read_credential(root, name) {
                if &existing != text && !force {
                    conflicts.push(etc.join(name).display().to_string());
                }
            }
        }
        if !conflicts.is_empty() {
            return Err(Error::Usage(format!(
                "these files exist with other content (edited by hand?): {}; pass --force to \
                 replace them",
                conflicts.join(", ")
            )));
        }
    }
    let store = root.join(layout::CREDSTORE);
    std::fs::create_dir_all(&store).map_err(|e| Error::io(&store, e))?;
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(&store, e))?;
    let secrets: Vec<&(&str, Vec<u8>)> = files
        .iter()
        .filter(|(name, _)| SECRET_FILES.contains(name))
        .collect();
    let mut encrypted = Vec::new();
    let form = if root == Path::new("/") {
        let mut form = CredentialForm::Encrypted;
        for (name, text) in &secrets {
            match systemd_creds_encrypt(layout::credential_name(name), text) {
                Ok(bytes) => encrypted.push((*name, bytes)),
                Err(why) => {
                    form = CredentialForm::Plain(why);
                    break;
                }
            }
        }
        form
    } else {
        CredentialForm::Plain(format!(
            "{} is not this machine's root (encryption is bound to the machine that runs the units)",
            root.display()
        ))
    };
    let mut written = Vec::new();
    for (name, text) in &files {
        let bytes = match (&form, encrypted.iter().find(|(n, _)| n == name)) {
            (CredentialForm::Encrypted, Some((_, bytes))) => bytes,
            _ => text,
        };
        let path = etc.join(name);
        write_atomic(&path, bytes, layout::config_mode(name))?;
        written.push(path);
    }
    written.extend(write_drop_ins(root, form == CredentialForm::Encrypted)?);
    if root == Path::new("/") {
        // The units read their drop-ins when loaded; a running systemd reloads them now.
        let _ = std::process::Command::new("systemctl")
            .arg("daemon-reload")
            .stderr(std::process::Stdio::null())
            .status();
    }
    Ok(Configured { written, form })
}

/// `systemd-creds encrypt --name=NAME - -` of `text`, or why it cannot be used.
fn systemd_creds_encrypt(name: &str, text: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut child = std::process::Command::new("systemd-creds")
        .args([
            "encrypt",
            "--with-key=host",
            &format!("--name={name}"),
            "-",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("systemd-creds cannot be run ({e})"))?;
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(text));
    let output = child
        .wait_with_output()
        .map_err(|e| format!("systemd-creds: {e}"))?;
    match written {
        Some(Ok(())) if output.status.success() && !output.stdout.is_empty() => Ok(output.stdout),
        _ => Err(format!(
            "systemd-creds encrypt failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

/// `systemd-creds decrypt --name=NAME - -` of `bytes`.
fn systemd_creds_decrypt(name: &str, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut child = std::process::Command::new("systemd-creds")
        .args(["decrypt", &format!("--name={name}"), "-", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(bytes)?;
    }
    let output = child.wait_with_output()?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(std::io::Error::other(format!(
            "systemd-creds decrypt of {name} failed ({})",
            output.status
        )))
    }
}

/// Whether the credentials under `root` are stored encrypted (`configure` wrote the drop-ins).
pub fn credentials_encrypted(root: &Path) -> bool {
    credential_units(root)
        .iter()
        .any(|(unit, _)| drop_in_path(root, unit).exists())
}

/// The content of config `name` under `root`, decrypted when it is an encrypted credential.
fn read_credential(root: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let bytes = std::fs::read(root.join(layout::ETC).join(name))?;
    if SECRET_FILES.contains(&name) && credentials_encrypted(root) {
        systemd_creds_decrypt(layout::credential_name(name), &bytes)
    } else {
        Ok(bytes)
    }
}

fn drop_in_path(root: &Path, unit: &str) -> PathBuf {
    root.join(layout::UNITS)
        .join(format!("{unit}.d"))
        .join(ENCRYPTED_DROP_IN)
}

/// The units under `root` that load credentials, with their `LoadCredential=` lines: the unit
/// files are the one place that says which unit gets which credential.
fn credential_units(root: &Path) -> Vec<(String, Vec<String>)> {
    let mut units: Vec<(String, Vec<String>)> = std::fs::read_dir(root.join(layout::UNITS))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|item| {
            let name = item.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("qsfs") && name.ends_with(".service")) {
                return None;
            }
            let text = std::fs::read_to_string(item.path()).ok()?;
            let lines = load_credentials(&text);
            (!lines.is_empty()).then_some((name, lines))
        })
        .collect();
    units.sort();
    units
}

/// The `ID:PATH` of every `LoadCredential=` line of a unit file.
fn load_credentials(unit: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|line| line.trim().strip_prefix("LoadCredential="))
        .filter(|value| !value.is_empty())
        .map(str::to_string)
        .collect()
}

/// The drop-in that loads a unit's credentials encrypted: `LoadCredentialEncrypted=` with the
/// same ID replaces the unit's `LoadCredential=` (systemd keeps one entry per ID, the last).
fn encrypted_drop_in(credentials: &[String]) -> String {
    let mut text = String::from(
        "# Written by `qsfs-image configure`: the credentials are encrypted with systemd-creds\n\
         # (this machine's host key). Same ID as the unit's LoadCredential=, so this replaces it.\n\
         [Service]\n",
    );
    for credential in credentials {
        text.push_str(&format!("LoadCredentialEncrypted={credential}\n"));
    }
    text
}

/// Writes (encrypted) or removes (plain) the drop-ins of the units that load credentials.
fn write_drop_ins(root: &Path, encrypted: bool) -> Result<Vec<PathBuf>, Error> {
    let mut written = Vec::new();
    for (unit, credentials) in credential_units(root) {
        let path = drop_in_path(root, &unit);
        if encrypted {
            let dir = path.parent().expect("a drop-in directory");
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            write_atomic(&path, encrypted_drop_in(&credentials).as_bytes(), 0o644)?;
            written.push(path);
        } else {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&path, e))
                }
                _ => {}
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tree::{EntryInfo, ImageInfo, Role};

    fn image(defaults: &[(&str, &[u8], Role)]) -> ImageManifest {
        ImageManifest {
            schema: 1,
            image: ImageInfo {
                name: "qsfs".into(),
                version: "1".into(),
                arch: "x86_64".into(),
                qsfs_version: "1".into(),
                source_date_epoch: 0,
                build_time: String::new(),
                secrets: false,
            },
            formats: Default::default(),
            components: vec![],
            ours: vec![],
            entries: defaults
                .iter()
                .map(|(name, bytes, role)| EntryInfo {
                    path: format!("var/zdbfs/etc/{name}.default"),
                    kind: "file".into(),
                    mode: if *role == Role::Secret {
                        "0600"
                    } else {
                        "0644"
                    }
                    .into(),
                    size: (*role != Role::Secret).then_some(bytes.len() as u64),
                    sha256: (*role != Role::Secret)
                        .then(|| crate::image::fsutil::sha256_reader(*bytes).unwrap().0),
                    role: *role,
                })
                .collect(),
        }
    }

    fn ship(root: &Path, name: &str, bytes: &[u8]) {
        let dir = root.join(layout::ETC);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.default")), bytes).unwrap();
    }

    fn live(root: &Path, name: &str) -> String {
        std::fs::read_to_string(root.join(layout::ETC).join(name)).unwrap()
    }

    #[test]
    fn first_install_then_upgrades_keep_edits_and_follow_unedited_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        ship(root, "a.toml", b"a1");
        ship(root, "b.env", b"b1");
        ship(root, "m.secret", b"s1");
        // The record of an older install-config, which listed the secret's hash.
        std::fs::write(
            root.join(layout::ETC).join(RECORD),
            "[installed]\n\"m.secret\" = \"00\"\n",
        )
        .unwrap();
        let v1 = image(&[
            ("a.toml", b"a1", Role::Config),
            ("b.env", b"b1", Role::Config),
            ("m.secret", b"s1", Role::Secret),
        ]);
        let actions = install_from(root, &v1).unwrap();
        assert!(
            actions.iter().all(|a| matches!(a, Action::Installed(_))),
            "{actions:?}"
        );
        assert_eq!(live(root, "a.toml"), "a1");
        let mode = std::fs::metadata(root.join(layout::ETC).join("m.secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let record = std::fs::read_to_string(root.join(layout::ETC).join(RECORD)).unwrap();
        assert!(!record.contains("m.secret"), "{record}");
        // Running again changes nothing.
        let actions = install_from(root, &v1).unwrap();
        assert!(
            actions.iter().all(|a| matches!(a, Action::Unchanged(_))),
            "{actions:?}"
        );

        // The operator edits a.toml; v2 changes both defaults.
        std::fs::write(root.join(layout::ETC).join("a.toml"), "a1 edited").unwrap();
        ship(root, "a.toml", b"a2");
        ship(root, "b.env", b"b2");
        let v2 = image(&[
            ("a.toml", b"a2", Role::Config),
            ("b.env", b"b2", Role::Config),
            ("m.secret", b"s1", Role::Secret),
        ]);
        let actions = install_from(root, &v2).unwrap();
        assert_eq!(
            actions,
            [
                Action::Kept("/var/zdbfs/etc/a.toml".into()),
                Action::Updated("/var/zdbfs/etc/b.env".into()),
                Action::Unchanged("/var/zdbfs/etc/m.secret".into()),
            ]
        );
        assert_eq!(live(root, "a.toml"), "a1 edited");
        assert_eq!(live(root, "b.env"), "b2");
        // The notice about a.toml is given once.
        let actions = install_from(root, &v2).unwrap();
        assert_eq!(
            actions[0],
            Action::Unchanged("/var/zdbfs/etc/a.toml".into())
        );
        assert_eq!(live(root, "a.toml"), "a1 edited");

        // A secret whose installed copy differs from the new default is kept: without a hash
        // there is no telling an edited one from an unedited one.
        ship(root, "m.secret", b"s2");
        let v3 = image(&[("m.secret", b"s2", Role::Secret)]);
        let actions = install_from(root, &v3).unwrap();
        assert_eq!(actions, [Action::Kept("/var/zdbfs/etc/m.secret".into())]);
        assert_eq!(live(root, "m.secret"), "s1");
    }

    /// A VM of an older image keeps its secrets: they move into the credential store, and
    /// the configs that may hold secrets become private.
    #[test]
    fn an_older_images_secrets_move_into_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let etc = root.join(layout::ETC);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("zstor-default.toml"), "zstor config\n").unwrap();
        std::fs::write(etc.join("zstor-default.toml.default"), "zstor config\n").unwrap();
        std::fs::write(
            etc.join("minio.env"),
            "# comment\nMINIO_ROOT_USER=\"qsfs\"\nMINIO_ROOT_PASSWORD=\"secret-pass\"\n",
        )
        .unwrap();
        std::fs::write(etc.join(layout::MONITOR_CONFIG), "x = 1\n").unwrap();
        std::fs::set_permissions(
            etc.join(layout::MONITOR_CONFIG),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let actions = install_from(root, &image(&[])).unwrap();
        assert_eq!(
            actions,
            [
                Action::Moved(
                    "/var/zdbfs/etc/zstor-default.toml".into(),
                    "/var/zdbfs/etc/credstore/zstor.toml".into()
                ),
                Action::Moved(
                    "/var/zdbfs/etc/minio.env".into(),
                    "/var/zdbfs/etc/credstore/minio-root-user and \
                     /var/zdbfs/etc/credstore/minio-root-password"
                        .into()
                ),
                Action::MadePrivate("/var/zdbfs/etc/monitor_config.toml".into()),
            ]
        );
        assert_eq!(live(root, layout::ZSTOR_CONFIG), "zstor config\n");
        assert_eq!(live(root, layout::MINIO_USER), "qsfs\n");
        assert_eq!(live(root, layout::MINIO_PASSWORD), "secret-pass\n");
        for gone in [
            "zstor-default.toml",
            "zstor-default.toml.default",
            "minio.env",
        ] {
            assert!(!etc.join(gone).exists(), "{gone}");
        }
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join(layout::CREDSTORE)), 0o700);
        assert_eq!(mode(&etc.join(layout::MINIO_PASSWORD)), 0o600);
        assert_eq!(mode(&etc.join(layout::MONITOR_CONFIG)), 0o600);
        // Nothing more to do the next time.
        assert_eq!(install_from(root, &image(&[])).unwrap(), []);
    }

    #[test]
    fn a_tampered_default_is_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        ship(dir.path(), "a.toml", b"evil");
        let actions = install_from(dir.path(), &image(&[("a.toml", b"a1", Role::Config)])).unwrap();
        assert!(matches!(&actions[0], Action::Skipped(_, why) if why.contains("MANIFEST")));
        assert!(!dir.path().join(layout::ETC).join("a.toml").exists());
    }

    /// A tree configured from the sample site settings, with an empty `qsfs.toml`.
    fn configured() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let site_path = dir.path().join("site.toml");
        std::fs::write(&site_path, crate::image::site::tests::sample()).unwrap();
        configure(dir.path(), Some(&site_path), false).unwrap();
        std::fs::write(dir.path().join(layout::ETC).join(layout::QSFS_TOML), "").unwrap();
        dir
    }

    #[test]
    fn the_shipped_zdb_unit_uses_the_standard_roots() {
        let unit = include_str!("../../units/qsfs-zdb.service");
        assert_eq!(
            zdb_arg(unit, "--index").as_deref(),
            Some(Path::new(crate::layout::INDEX_DIR))
        );
        assert_eq!(
            zdb_arg(unit, "--data").as_deref(),
            Some(Path::new(crate::layout::DATA_DIR))
        );
        // A drop-in that resets ExecStart= and sets another, in the `--flag=value` form.
        let overridden = format!("{unit}\nExecStart=\nExecStart=/bin/zdb --index=/srv/index\n");
        assert_eq!(
            zdb_arg(&overridden, "--index").as_deref(),
            Some(Path::new("/srv/index"))
        );
        assert_eq!(zdb_arg(&overridden, "--data"), None);
    }

    /// The zdb roots, spool and state directories are set in several files: a disagreement
    /// (which made the monitor drop every job) is refused, naming each file and value.
    #[test]
    fn check_config_refuses_paths_that_disagree() {
        let dir = configured();
        let root = dir.path();
        let etc = root.join(layout::ETC);
        assert_eq!(check_config(root, &[]), Vec::<String>::new());

        std::fs::write(
            etc.join(layout::QSFS_TOML),
            "[paths]\nindex_dir = \"/elsewhere/index\"\nspool_dir = \"/elsewhere/spool\"\n",
        )
        .unwrap();
        let problems = check_config(root, &[layout::QSFS_TOML]);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].starts_with("zdb's index root is set differently: ")
                && problems[0].contains("qsfs.toml [paths] index_dir = \"/elsewhere/index\"")
                && problems[0]
                    .contains("monitor_config.toml zdb_index_dir_path = \"/var/zdbfs/index\""),
            "{problems:#?}"
        );
        assert!(problems[1].starts_with("The spool directory is set differently"));
        // The monitor's unit checks only its own config, and is refused as well.
        assert_eq!(check_config(root, &[layout::MONITOR_CONFIG]), problems);

        std::fs::write(etc.join(layout::QSFS_TOML), "").unwrap();
        let units = root.join(layout::UNITS);
        std::fs::create_dir_all(&units).unwrap();
        let unit = include_str!("../../units/qsfs-zdb.service")
            .replace("--data /var/zdbfs/data", "--data /srv/data");
        std::fs::write(units.join(ZDB_UNIT), unit).unwrap();
        let problems = check_config(root, &[layout::QSFS_TOML]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("qsfs-zdb.service ExecStart= zdb --data = \"/srv/data\"")
                && problems[0].contains("qsfs.toml [paths] data_dir = \"/var/zdbfs/data\""),
            "{problems:#?}"
        );
        // A drop-in that puts it back is what systemd runs: no disagreement.
        let drop_ins = units.join(format!("{ZDB_UNIT}.d"));
        std::fs::create_dir_all(&drop_ins).unwrap();
        let standard = include_str!("../../units/qsfs-zdb.service")
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap();
        std::fs::write(
            drop_ins.join("roots.conf"),
            format!("[Service]\nExecStart=\n{standard}\n"),
        )
        .unwrap();
        assert_eq!(
            check_config(root, &[layout::QSFS_TOML]),
            Vec::<String>::new()
        );
    }

    /// Both example configs once suggested metrics on 127.0.0.1:9101: the second listener
    /// could not bind. Two TCP metrics listeners on one port are refused.
    #[test]
    fn check_config_refuses_one_metrics_port_twice() {
        let dir = configured();
        let root = dir.path();
        let etc = root.join(layout::ETC);
        let monitor = etc.join(layout::MONITOR_CONFIG);
        let text = std::fs::read_to_string(&monitor).unwrap();
        std::fs::write(
            &monitor,
            format!("{text}metrics_address = \"0.0.0.0:9101\"\n"),
        )
        .unwrap();
        std::fs::write(
            etc.join(layout::QSFS_TOML),
            "[health]\nmetrics = \"127.0.0.1:9102\"\n",
        )
        .unwrap();
        assert_eq!(check_config(root, &[]), Vec::<String>::new());
        std::fs::write(
            etc.join(layout::QSFS_TOML),
            "[health]\nmetrics = \"127.0.0.1:9101\"\n",
        )
        .unwrap();
        let problems = check_config(root, &[layout::MONITOR_CONFIG]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("monitor_config.toml metrics_address = \"0.0.0.0:9101\"")
                && problems[0].contains("qsfs.toml [health] metrics = \"127.0.0.1:9101\""),
            "{problems:#?}"
        );
    }

    /// The example TCP metrics addresses of the two shipped configs use different ports.
    #[test]
    fn the_example_configs_suggest_different_metrics_ports() {
        let ports = |text: &str| -> std::collections::BTreeSet<String> {
            text.match_indices("127.0.0.1:")
                .map(|(at, m)| {
                    text[at + m.len()..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect()
                })
                .collect()
        };
        let monitor = ports(include_str!("../../etc/monitor_config.toml"));
        let health = ports(include_str!("../../etc/qsfs.toml"));
        assert!(!monitor.is_empty() && !health.is_empty());
        assert!(monitor.is_disjoint(&health), "{monitor:?} {health:?}");
    }

    /// zstor aborts when its Prometheus port is taken: a taken port is refused beforehand.
    #[test]
    fn a_taken_prometheus_port_is_refused() {
        let dir = configured();
        let listener = std::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, 0))
            .or_else(|_| std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let zstor = dir.path().join(layout::ETC).join(layout::ZSTOR_CONFIG);
        let text = std::fs::read_to_string(&zstor).unwrap();
        std::fs::write(&zstor, format!("prometheus_port = {port}\n{text}")).unwrap();
        let problem = prometheus_port_taken(&zstor).expect("refused");
        assert!(
            problem.starts_with(&format!(
                "{}: key `prometheus_port`: port {port} is taken",
                zstor.display()
            )),
            "{problem}"
        );
        drop(listener);
        assert_eq!(prometheus_port_taken(&zstor), None);
        // Only on the machine itself: a tree elsewhere is not checked against this machine.
        let _held = std::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, port));
        assert_eq!(check_config(dir.path(), &[]), Vec::<String>::new());
    }

    #[test]
    fn check_config_names_each_missing_file_and_what_to_put_there() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(layout::ETC)).unwrap();
        ship(root, layout::QSFS_TOML, b"");
        let problems = check_config(root, &[]);
        assert_eq!(problems.len(), CHECKS.len(), "{problems:#?}");
        assert!(problems[0].contains("zstor.toml is missing: the credential zstor.toml"));
        assert!(problems[1].contains("minio-root-user is missing: a credential of MinIO"));
        assert!(problems[2].contains("minio-root-password is missing: a credential of MinIO"));
        assert!(problems[5].contains("qsfs.toml is missing: it is not installed yet"));

        let site_path = root.join("site.toml");
        std::fs::write(&site_path, crate::image::site::tests::sample()).unwrap();
        let configured = configure(root, Some(&site_path), false).unwrap();
        assert_eq!(configured.written.len(), 5);
        // Not this machine's root: plain.
        assert!(matches!(configured.form, CredentialForm::Plain(_)));
        let store = root.join(layout::CREDSTORE);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store), 0o700);
        for name in SECRET_FILES {
            assert_eq!(mode(&root.join(layout::ETC).join(name)), 0o600, "{name}");
        }
        std::fs::write(root.join(layout::ETC).join(layout::QSFS_TOML), "").unwrap();
        assert_eq!(check_config(root, &[]), Vec::<String>::new());

        let minio = root.join(layout::ETC).join(layout::MINIO_PASSWORD);
        std::fs::set_permissions(&minio, std::fs::Permissions::from_mode(0o644)).unwrap();
        let problems = check_config(root, &[layout::MINIO_PASSWORD]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("chmod 600"), "{problems:?}");

        std::fs::write(&minio, "another-password\n").unwrap();
        let err = configure(root, Some(&site_path), false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        configure(root, Some(&site_path), true).unwrap();
    }

    /// Encrypted credentials are loaded by a drop-in made from the unit's own
    /// `LoadCredential=` lines, so the unit files stay the one place that says who gets what.
    #[test]
    fn the_encrypted_drop_in_replaces_the_units_credentials() {
        let unit = include_str!("../../units/qsfs-minio.service");
        let credentials = load_credentials(unit);
        assert_eq!(
            credentials,
            [
                "minio-root-user:/var/zdbfs/etc/credstore/minio-root-user",
                "minio-root-password:/var/zdbfs/etc/credstore/minio-root-password"
            ]
        );
        let drop_in = encrypted_drop_in(&credentials);
        assert!(drop_in.contains(
            "[Service]\nLoadCredentialEncrypted=minio-root-user:/var/zdbfs/etc/credstore/minio-root-user\n"
        ));
        for unit in [
            include_str!("../../units/qsfs-zstor.service"),
            include_str!("../../units/qsfs-monitor.service"),
            include_str!("../../units/qsfs-zstor-reads@.service"),
        ] {
            assert_eq!(
                load_credentials(unit),
                [format!("zstor.toml:{}", crate::layout::ZSTOR_CONFIG)]
            );
        }
        for unit in [
            include_str!("../../units/qsfs-zdb.service"),
            include_str!("../../units/qsfs-zdbfs.service"),
            include_str!("../../units/qsfs-health.service"),
            include_str!("../../units/qsfs-config.service"),
        ] {
            assert_eq!(load_credentials(unit), Vec::<String>::new());
        }

        // configure writes them (for a tree, plain: the drop-ins are removed).
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join(layout::UNITS);
        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(units.join("qsfs-minio.service"), unit).unwrap();
        assert!(!credentials_encrypted(dir.path()));
        write_drop_ins(dir.path(), true).unwrap();
        assert!(credentials_encrypted(dir.path()));
        assert_eq!(
            std::fs::read_to_string(drop_in_path(dir.path(), "qsfs-minio.service")).unwrap(),
            drop_in
        );
        write_drop_ins(dir.path(), false).unwrap();
        assert!(!credentials_encrypted(dir.path()));
    }

    /// Where the units load the store encrypted, a missing credential is installed from its
    /// default encrypted too (a plain one would stop the unit: 243/CREDENTIALS).
    #[test]
    fn a_credential_installed_beside_encrypted_ones_is_encrypted() {
        if systemd_creds_encrypt("probe", b"x").is_err() {
            eprintln!("skipped: systemd-creds cannot encrypt on this machine");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join(layout::UNITS);
        std::fs::create_dir_all(&units).unwrap();
        let unit = include_str!("../../units/qsfs-minio.service");
        std::fs::write(units.join("qsfs-minio.service"), unit).unwrap();
        write_drop_ins(dir.path(), true).unwrap();
        let store = dir.path().join(layout::CREDSTORE);
        std::fs::create_dir_all(&store).unwrap();
        let default = store.join(format!("minio-root-password{DEFAULT_SUFFIX}"));
        std::fs::write(&default, "a-password\n").unwrap();
        let live = format!("{}/minio-root-password", layout::CREDSTORE);
        let action = install_secret(dir.path(), &default, &live, "shown".into()).unwrap();
        assert!(matches!(action, Action::Installed(_)));
        let installed = std::fs::read(dir.path().join(&live)).unwrap();
        assert_ne!(installed, b"a-password\n", "not plain");
        assert_eq!(
            systemd_creds_decrypt("minio-root-password", &installed).unwrap(),
            b"a-password\n"
        );
    }
}
