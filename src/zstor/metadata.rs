//! zstor's own object metadata, read from its four metadata zdbs: which data backends hold the
//! shards of a stored file. No zstor command shows this (`zstor status` only counts objects per
//! configured backend), and `zstor rebuild` leaves intact shards where they are, so this is how
//! a decommission is checked.
//!
//! The format is zstor 0.5.0-rc.1's (`zstor/src/zdb_meta.rs`, `meta.rs`, `erasure.rs`,
//! `encryption.rs` upstream), checked against the real binary by
//! `tests/integration/zstor_metadata.rs`:
//! * the key is `/{prefix}/meta/{hex blake2b-128(path)}`, where the path is a lexical clean of
//!   the file's path as given (as `check`, `retrieve` and `rebuild` key it) minus `root`;
//! * each metadata backend holds one shard under that key: a byte with the shard's index, the
//!   shard, and the blake2b-128 of the shard;
//! * the shards are a Reed-Solomon (GF(2^8)) encoding with 2 data and 2 parity shards; the two
//!   data shards joined, minus their PKCS#7 padding, are a 12-byte nonce and the AES-256-GCM
//!   ciphertext of the metadata, under the key of the config's `[encryption]` (the data key:
//!   zstor ignores `[meta.config.encryption]`);
//! * the plaintext is not compressed: it is bincode 1 (fixed-width little-endian integers) of
//!   zstor's `MetaData`.
//!
//! [`move_shards_off`] moves a file's shards off backends that left the config, through the
//! zstor daemon's rebuild given the file's metadata (see `socket.rs`), which is why the whole
//! metadata is decoded. Its backend passwords and data key stay in memory: the model has no
//! `Debug`, [`ObjectMeta`] and every error leave them out.

use super::config::{Backend, ZstorConfig, META_BACKENDS};
use super::Checksum;
use crate::zdb::{Client, Endpoint};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use reed_solomon_erasure::galois_8::ReedSolomon;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Data shards of zstor's metadata encoding (`ZDB_METASTORE_DATA_SHARDS`).
const META_DATA_SHARDS: usize = 2;
/// The AES-GCM nonce zstor prepends to the ciphertext.
const NONCE_LEN: usize = 12;
/// The AES-GCM tag at the end of the ciphertext.
const TAG_LEN: usize = 16;
/// A blake2b-128 checksum.
const CHECKSUM_LEN: usize = 16;

/// Where zstor keeps a stored object, as its metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The checksum of the whole file (what `zstor check` prints).
    pub checksum: Checksum,
    /// Shards needed to decode the object.
    pub data_shards: usize,
    /// Shards that may be lost.
    pub disposable_shards: usize,
    /// Every shard, in encoding order.
    pub shards: Vec<ShardPlace>,
}

/// One shard of an object and the data backend holding it (never its password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlace {
    /// The shard's index in the encoding.
    pub index: usize,
    /// The backend's address.
    pub address: SocketAddr,
    /// The backend's namespace (`None`: the default namespace).
    pub namespace: Option<String>,
}

impl ShardPlace {
    /// `address/namespace`, as [`Backend::label`] writes it.
    pub fn label(&self) -> String {
        super::config::backend_label(&self.address, self.namespace.as_deref())
    }

    /// Whether this shard is on `backend` (same address and namespace).
    pub fn is_on(&self, backend: &Backend) -> bool {
        self.address == backend.address && self.namespace == backend.namespace
    }
}

impl ObjectMeta {
    /// The shards on backends that are not data backends of `config` (after a backend left
    /// the config, the ones still on it).
    pub fn shards_outside<'a>(
        &'a self,
        config: &'a ZstorConfig,
    ) -> impl Iterator<Item = &'a ShardPlace> + 'a {
        self.shards
            .iter()
            .filter(move |shard| !config.data_backends().any(|b| shard.is_on(b)))
    }
}

/// The metadata of a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The path has no metadata key.
    #[error("no zstor metadata key for {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// Too few metadata backends answered with a valid shard.
    #[error(
        "zstor metadata {key}: {available} valid shards of the {needed} needed; {}",
        failures.join("; ")
    )]
    Unreadable {
        /// The metadata key.
        key: String,
        /// Valid shards found.
        available: usize,
        /// Shards needed.
        needed: usize,
        /// Per failed backend, `address/namespace: what went wrong`.
        failures: Vec<String>,
    },
    /// Enough shards, but they do not decode to zstor metadata.
    #[error("zstor metadata {key} does not decode: {reason}")]
    Corrupt {
        /// The metadata key.
        key: String,
        /// The step that failed.
        reason: String,
    },
}

/// The metadata key zstor looks `file` up by: `/{prefix}/meta/{hex blake2b-128}` of the lexical
/// clean of the path as given, minus `root`.
pub fn key(config: &ZstorConfig, file: &Path) -> Result<String, MetadataError> {
    let bad = |reason| MetadataError::Key {
        path: file.to_path_buf(),
        reason,
    };
    let clean = lexical_clean(file);
    let relative = match &config.root {
        Some(root) => clean
            .strip_prefix(root)
            .map_err(|_| bad("not under the zstor config's root"))?,
        None => &clean,
    };
    let text = relative.to_str().ok_or_else(|| bad("not UTF-8"))?;
    Ok(format!(
        "/{}/meta/{}",
        config.meta.config.prefix,
        Checksum::of_bytes(text.as_bytes())
    ))
}

/// The metadata of `file` from the metadata backends of `config` (each asked in parallel,
/// waiting at most `timeout`), or `None` when every backend answered that it has none.
pub fn shards_of(
    config: &ZstorConfig,
    file: &Path,
    timeout: Duration,
) -> Result<Option<ObjectMeta>, MetadataError> {
    Ok(stored(config, file, timeout)?.map(|meta| meta.object()))
}

/// zstor's whole metadata of `file`, as [`shards_of`] reads it.
pub(super) fn stored(
    config: &ZstorConfig,
    file: &Path,
    timeout: Duration,
) -> Result<Option<StoredMeta>, MetadataError> {
    let key = key(config, file)?;
    let answers: Vec<Answer> = std::thread::scope(|scope| {
        let reads: Vec<_> = config
            .meta_backends()
            .iter()
            .map(|backend| scope.spawn(|| read_shard(backend, &key, timeout)))
            .collect();
        reads
            .into_iter()
            .map(|read| {
                read.join()
                    .unwrap_or_else(|_| Err("reader panicked".into()))
            })
            .collect()
    });
    let labelled = config
        .meta_backends()
        .iter()
        .map(Backend::label)
        .zip(answers);
    assemble(key, config.encryption.key.expose(), labelled)
}

/// Moving a file's shards off backends that left the zstor config failed. Never shows a
/// password or key.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The metadata could not be read.
    #[error("{}: {source}", file.display())]
    Metadata {
        /// The file.
        file: PathBuf,
        /// Why.
        source: MetadataError,
    },
    /// The file has no metadata.
    #[error("{}: not stored (zstor has no metadata for it)", file.display())]
    NotStored {
        /// The file.
        file: PathBuf,
    },
    /// The config names no daemon socket.
    #[error("{}: the zstor config has no `socket`; shards are moved through the zstor daemon", file.display())]
    NoSocket {
        /// The file.
        file: PathBuf,
    },
    /// Too few shards are on backends of the config to rebuild from them.
    #[error(
        "{}: {kept} shards on backends of the config, {needed} needed to rebuild; on backends the config no longer has: {}",
        file.display(), outside.join(", ")
    )]
    TooFewKept {
        /// The file.
        file: PathBuf,
        /// Shards on backends of the config.
        kept: usize,
        /// Shards needed.
        needed: usize,
        /// The other backends, `address/namespace`.
        outside: Vec<String>,
    },
    /// The shard list is not one shard per index in index order, which the daemon's rebuild
    /// needs.
    #[error("{}: its zstor metadata does not list one shard per index in order; not rebuilt", file.display())]
    Unordered {
        /// The file.
        file: PathBuf,
    },
    /// The daemon's rebuild failed.
    #[error("{}: moving its shards off {} failed: {reason}", file.display(), outside.join(", "))]
    Rebuild {
        /// The file.
        file: PathBuf,
        /// The backends the shards were to leave.
        outside: Vec<String>,
        /// The daemon's message or the socket error, secrets hidden.
        reason: String,
    },
    /// After the rebuild, shards are still outside the config.
    #[error("{}: after the rebuild, shards are still on {}, which the config no longer has", file.display(), outside.join(", "))]
    StillOutside {
        /// The file.
        file: PathBuf,
        /// Those backends.
        outside: Vec<String>,
    },
}

/// Moves the shards of `file` that sit on backends no longer in `config` onto backends of it,
/// through the zstor daemon on `config`'s socket (which must run with this config); zstor's own
/// `rebuild` keeps every shard whose backend still answers. The daemon's rebuild is given the
/// stored metadata with those shards marked lost; it encodes them again from the others onto
/// backends of its config that hold no shard of the file and saves the new metadata (the old
/// stays until then). Then the metadata is read again and checked. Returns where the shards
/// are now. `timeout` bounds each backend read and each socket read or write (the rebuild
/// itself may take as long as that).
///
/// A lost shard is marked, not left out: zstor 0.5.0-rc.1's rebuild indexes the given shard
/// list by shard index, and a shorter list aborts the daemon (`index out of bounds`,
/// `actors/zstor.rs:355`, seen with the real binary). It discards a shard whose data fails its
/// checksum, so the marked shards carry a checksum their data cannot have.
pub fn move_shards_off(
    config: &ZstorConfig,
    file: &Path,
    timeout: Duration,
) -> Result<ObjectMeta, MoveError> {
    let path = || file.to_path_buf();
    let read = || {
        stored(config, file, timeout)
            .map_err(|source| MoveError::Metadata {
                file: path(),
                source,
            })?
            .ok_or_else(|| MoveError::NotStored { file: path() })
    };
    let mut meta = read()?;
    let object = meta.object();
    let outside: Vec<String> = object
        .shards_outside(config)
        .map(ShardPlace::label)
        .collect();
    if outside.is_empty() {
        return Ok(object);
    }
    let socket = config
        .socket
        .as_deref()
        .ok_or_else(|| MoveError::NoSocket { file: path() })?;
    let secrets = secrets(config, &meta);
    let kept = object.shards.len() - outside.len();
    if kept < object.data_shards {
        return Err(MoveError::TooFewKept {
            file: path(),
            kept,
            needed: object.data_shards,
            outside,
        });
    }
    if !object.shards.iter().enumerate().all(|(n, s)| s.index == n)
        || object.shards.len() != object.data_shards + object.disposable_shards
    {
        return Err(MoveError::Unordered { file: path() });
    }
    for shard in &mut meta.shards {
        if !config.data_backends().any(|b| shard.place().is_on(b)) {
            shard.discard();
        }
    }
    super::socket::rebuild_from(socket, file, &meta, timeout).map_err(|reason| {
        MoveError::Rebuild {
            file: path(),
            outside: outside.clone(),
            reason: hide(reason, &secrets),
        }
    })?;
    let now = read()?.object();
    let still: Vec<String> = now.shards_outside(config).map(ShardPlace::label).collect();
    if !still.is_empty() {
        return Err(MoveError::StillOutside {
            file: path(),
            outside: still,
        });
    }
    Ok(now)
}

/// Every password and key of `config` and `meta`, to hide in messages.
fn secrets(config: &ZstorConfig, meta: &StoredMeta) -> Vec<String> {
    let keys = [&config.encryption.key, &config.meta.config.encryption.key];
    let passwords = config
        .meta_backends()
        .iter()
        .chain(config.data_backends())
        .filter_map(|b| b.password.as_ref());
    let mut all: Vec<String> = keys
        .into_iter()
        .chain(passwords)
        .map(|s| s.expose().to_string())
        .chain(meta.secrets())
        .filter(|s| !s.is_empty())
        .collect();
    all.sort();
    all.dedup();
    all
}

/// `text` with every secret replaced by `<hidden>`.
fn hide(mut text: String, secrets: &[String]) -> String {
    for secret in secrets {
        text = text.replace(secret.as_str(), "<hidden>");
    }
    text
}

/// What one metadata backend answered: the value under the key, if any, or what failed.
type Answer = Result<Option<Vec<u8>>, String>;

/// The metadata under `key` from what each metadata backend (by label) answered.
fn assemble(
    key: String,
    hex_key: &str,
    answers: impl IntoIterator<Item = (String, Answer)>,
) -> Result<Option<StoredMeta>, MetadataError> {
    let mut shards: Vec<Option<Vec<u8>>> = vec![None; META_BACKENDS];
    let mut failures = Vec::new();
    for (backend, answer) in answers {
        match answer.and_then(|value| Ok(value.map(|v| unframe(&v)).transpose()?.flatten())) {
            Ok(Some((index, shard))) => shards[index] = Some(shard),
            Ok(None) => {}
            Err(e) => failures.push(format!("{backend}: {e}")),
        }
    }
    let available = shards.iter().flatten().count();
    if available == 0 && failures.is_empty() {
        return Ok(None);
    }
    if available < META_DATA_SHARDS {
        return Err(MetadataError::Unreadable {
            key,
            available,
            needed: META_DATA_SHARDS,
            failures,
        });
    }
    let corrupt = |reason: String| MetadataError::Corrupt {
        key: key.clone(),
        reason,
    };
    let plaintext = decode(shards, hex_key).map_err(|e| corrupt(e.to_string()))?;
    parse(&plaintext).map(Some).map_err(corrupt)
}

/// `GET key` on one metadata backend, after `SELECT namespace password`.
fn read_shard(backend: &Backend, key: &str, timeout: Duration) -> Answer {
    let mut client =
        Client::connect(&Endpoint::Tcp(backend.address), timeout).map_err(|e| e.to_string())?;
    if let Some(namespace) = &backend.namespace {
        client
            .select(namespace, backend.password.as_ref())
            .map_err(|e| e.to_string())?;
    }
    client.get(key.as_bytes()).map_err(|e| e.to_string())
}

/// One stored metadata shard: its index, and the shard once its checksum matched. An empty
/// value is no shard (as upstream reads it).
fn unframe(value: &[u8]) -> Result<Option<(usize, Vec<u8>)>, String> {
    let Some((&index, rest)) = value.split_first() else {
        return Ok(None);
    };
    if usize::from(index) >= META_BACKENDS {
        return Err(format!("shard index {index} out of range"));
    }
    if rest.len() < CHECKSUM_LEN {
        return Err(format!("shard of {} bytes is too short", value.len()));
    }
    let (shard, checksum) = rest.split_at(rest.len() - CHECKSUM_LEN);
    if Checksum::of_bytes(shard).0 != checksum {
        return Err(format!("shard {index} fails its checksum"));
    }
    Ok(Some((usize::from(index), shard.to_vec())))
}

/// Why the shards do not decode.
#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error("Reed-Solomon reconstruction: {0:?}")]
    Erasure(reed_solomon_erasure::Error),
    #[error("bad padding")]
    Padding,
    #[error("{0} bytes are too short for AES-GCM")]
    TooShort(usize),
    #[error("AES-GCM authentication failed (another [encryption] key?)")]
    Decrypt,
}

/// The metadata plaintext from the shards (`None` where missing): erasure decoding, padding,
/// AES-256-GCM under `hex_key` (64 hex digits, validated with the config).
fn decode(mut shards: Vec<Option<Vec<u8>>>, hex_key: &str) -> Result<Vec<u8>, DecodeError> {
    ReedSolomon::new(META_DATA_SHARDS, META_BACKENDS - META_DATA_SHARDS)
        .and_then(|rs| rs.reconstruct_data(&mut shards))
        .map_err(DecodeError::Erasure)?;
    let mut data: Vec<u8> = shards
        .into_iter()
        .take(META_DATA_SHARDS)
        .flatten()
        .flatten()
        .collect();
    let padding = usize::from(*data.last().ok_or(DecodeError::Padding)?);
    if padding == 0 || padding > META_DATA_SHARDS || padding > data.len() {
        return Err(DecodeError::Padding);
    }
    data.truncate(data.len() - padding);
    if data.len() < NONCE_LEN + TAG_LEN {
        return Err(DecodeError::TooShort(data.len()));
    }
    let key: Vec<u8> = (0..hex_key.len() / 2)
        .map(|i| u8::from_str_radix(&hex_key[2 * i..2 * i + 2], 16).unwrap_or_default())
        .collect();
    let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| DecodeError::Decrypt)?;
    let (nonce, ciphertext) = data.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), ciphertext)
        .map_err(|_| DecodeError::Decrypt)
}

/// zstor's `MetaData`, field for field and type for type (bincode is positional), so what is
/// read can be written back unchanged: the metadata the daemon's rebuild is given. It holds the
/// data key and the backend passwords, so it has no `Debug` and never leaves this crate.
#[derive(Serialize, Deserialize, Clone)]
pub(super) struct StoredMeta {
    data_shards: usize,
    disposable_shards: usize,
    checksum: [u8; CHECKSUM_LEN],
    encryption: StoredEncryption,
    compression: StoredCompression,
    /// The shards, in the order zstor listed them.
    pub(super) shards: Vec<StoredShard>,
}

/// `EncryptionMeta`: the algorithm and the data key.
#[derive(Serialize, Deserialize, Clone)]
enum StoredEncryption {
    Aes(Hidden),
}

/// `CompressionMeta`.
#[derive(Serialize, Deserialize, Clone)]
enum StoredCompression {
    Snappy,
}

/// `ShardInfo`.
#[derive(Serialize, Deserialize, Clone)]
pub(super) struct StoredShard {
    shard_idx: usize,
    checksum: [u8; CHECKSUM_LEN],
    keys: Vec<StoredKey>,
    ci: StoredConnection,
}

/// `Key`: a sequential 0-db key, of 0-db v1 or v2.
#[derive(Serialize, Deserialize, Clone)]
enum StoredKey {
    V1(u32),
    V2(u64),
}

/// `ZdbConnectionInfo`.
#[derive(Serialize, Deserialize, Clone)]
struct StoredConnection {
    address: SocketAddr,
    namespace: Option<String>,
    password: Option<Hidden>,
}

/// A secret read from the metadata: kept in memory to be written back, never shown.
#[derive(Serialize, Deserialize, Clone)]
#[serde(transparent)]
struct Hidden(String);

impl StoredShard {
    /// Marks the shard as lost for the daemon's rebuild: a checksum its data cannot have (the
    /// bytes inverted), so the rebuild's load drops it and encodes it again.
    fn discard(&mut self) {
        for byte in &mut self.checksum {
            *byte = !*byte;
        }
    }

    /// Where the shard is, without the password.
    pub(super) fn place(&self) -> ShardPlace {
        ShardPlace {
            index: self.shard_idx,
            address: self.ci.address,
            namespace: self.ci.namespace.clone(),
        }
    }
}

impl StoredMeta {
    /// The data key and the backend passwords it holds.
    fn secrets(&self) -> impl Iterator<Item = String> + '_ {
        let StoredEncryption::Aes(key) = &self.encryption;
        let passwords = self.shards.iter().filter_map(|s| s.ci.password.as_ref());
        std::iter::once(key).chain(passwords).map(|h| h.0.clone())
    }

    /// What we show of it: placement and counts.
    pub(super) fn object(&self) -> ObjectMeta {
        ObjectMeta {
            checksum: Checksum(self.checksum),
            data_shards: self.data_shards,
            disposable_shards: self.disposable_shards,
            shards: self.shards.iter().map(StoredShard::place).collect(),
        }
    }
}

/// bincode `MetaData`, checked to encode back to the same bytes (else our model is not
/// zstor's, and a rebuild given it would store something else).
fn parse(plaintext: &[u8]) -> Result<StoredMeta, String> {
    let meta: StoredMeta =
        bincode::deserialize(plaintext).map_err(|e| format!("not zstor metadata: {e}"))?;
    match bincode::serialize(&meta) {
        Ok(again) if again == plaintext => Ok(meta),
        _ => Err("zstor metadata does not encode back to the same bytes".into()),
    }
}

/// Upstream's lookup key path for check, retrieve and rebuild (`path-clean`): `.` dropped,
/// `..` folded into its parent, no symlink resolved, a relative path left relative (so it
/// names another key than the absolute one).
pub fn lexical_clean(path: &Path) -> PathBuf {
    let mut parts: Vec<Component> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match parts.last() {
                Some(Component::Normal(_)) => {
                    parts.pop();
                }
                Some(Component::RootDir) => {}
                _ => parts.push(component),
            },
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return PathBuf::from(".");
    }
    parts.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const FIXTURE: &str = include_str!("../../tests/fixtures/zstor/meta-shards.hex");

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len() / 2)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    /// The four values the real zstor stored, and the header's data backends.
    fn fixture() -> (Vec<Vec<u8>>, Vec<SocketAddr>) {
        let values = FIXTURE
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(unhex)
            .collect();
        let header = FIXTURE.lines().nth(1).unwrap();
        let backends = header
            .split([' ', ','])
            .filter_map(|word| word.parse().ok())
            .collect();
        (values, backends)
    }

    fn answers(values: &[Option<Vec<u8>>]) -> Vec<(String, Answer)> {
        values
            .iter()
            .enumerate()
            .map(|(n, v)| (format!("meta{n}"), Ok(v.clone())))
            .collect()
    }

    fn read(values: &[Option<Vec<u8>>], key: &str) -> Result<Option<ObjectMeta>, MetadataError> {
        assemble("/qsfs/meta/k".into(), key, answers(values)).map(|m| m.map(|m| m.object()))
    }

    #[test]
    fn the_real_zstors_metadata_decodes() {
        let (values, data) = fixture();
        assert_eq!((values.len(), data.len()), (4, 3));
        let all: Vec<_> = values.into_iter().map(Some).collect();
        let meta = read(&all, DATA_KEY).unwrap().unwrap();
        assert_eq!(meta.checksum, Checksum::of_bytes(b"fixture"));
        assert_eq!((meta.data_shards, meta.disposable_shards), (2, 1));
        let indexes: Vec<_> = meta.shards.iter().map(|s| s.index).collect();
        assert_eq!(indexes, [0, 1, 2]);
        // zstor picks the backend of each shard: one shard on every data backend.
        let mut addresses: Vec<_> = meta.shards.iter().map(|s| s.address).collect();
        addresses.sort();
        assert_eq!(addresses, data);
        assert!(meta
            .shards
            .iter()
            .all(|s| s.namespace.as_deref() == Some("qsfs")));
        assert_eq!(
            meta.shards[0].label(),
            format!("{}/qsfs", meta.shards[0].address)
        );
        assert!(!format!("{meta:?}").contains("backend-password"));
    }

    /// The fixture's metadata plaintext.
    fn plaintext() -> Vec<u8> {
        let (values, _) = fixture();
        let mut shards = vec![None; META_BACKENDS];
        for value in values {
            let (index, shard) = unframe(&value).unwrap().unwrap();
            shards[index] = Some(shard);
        }
        decode(shards, DATA_KEY).unwrap()
    }

    #[test]
    fn the_real_zstors_metadata_encodes_back_to_the_same_bytes() {
        let plaintext = plaintext();
        let meta = parse(&plaintext).unwrap();
        assert!(bincode::serialize(&meta).unwrap() == plaintext);
        // Anything our model would not write back is refused, not half read.
        let mut longer = plaintext.clone();
        longer.push(0);
        let err = parse(&longer).err().unwrap();
        assert_eq!(err, "zstor metadata does not encode back to the same bytes");
    }

    #[test]
    fn secrets_of_the_metadata_are_hidden_in_messages() {
        let meta = parse(&plaintext()).unwrap();
        let secrets: Vec<String> = meta.secrets().collect();
        assert!(secrets.iter().any(|s| s == DATA_KEY));
        assert!(secrets.iter().any(|s| s == "backend-password"));
        let text = hide(
            format!("auth backend-password failed; key {DATA_KEY}"),
            &secrets,
        );
        assert_eq!(text, "auth <hidden> failed; key <hidden>");
    }

    #[test]
    fn a_discarded_shard_keeps_its_place_with_a_checksum_it_cannot_have() {
        let mut meta = parse(&plaintext()).unwrap();
        let before = meta.shards[1].checksum;
        meta.shards[1].discard();
        assert!(before
            .iter()
            .zip(meta.shards[1].checksum)
            .all(|(a, b)| *a != b));
        assert_eq!(
            meta.object().shards,
            parse(&plaintext()).unwrap().object().shards
        );
    }

    #[test]
    fn any_two_valid_shards_decode_and_one_does_not() {
        let (values, _) = fixture();
        for missing in [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]] {
            let mut some: Vec<_> = values.iter().cloned().map(Some).collect();
            for n in missing {
                some[n] = None;
            }
            let meta = read(&some, DATA_KEY).unwrap().unwrap();
            assert_eq!(meta.checksum, Checksum::of_bytes(b"fixture"), "{missing:?}");
        }
        let one = [Some(values[3].clone()), None, None, None];
        let err = read(&one, DATA_KEY).unwrap_err();
        assert!(
            matches!(
                err,
                MetadataError::Unreadable {
                    available: 1,
                    needed: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_or_foreign_shard_is_left_out_and_named() {
        let (values, _) = fixture();
        let mut damaged: Vec<_> = values.iter().cloned().map(Some).collect();
        damaged[1].as_mut().unwrap()[5] ^= 1;
        damaged[2] = Some(vec![9, 1, 2]);
        damaged[3] = Some(vec![3; 4]);
        let err = read(&damaged, DATA_KEY).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("meta1: shard 1 fails its checksum"), "{text}");
        assert!(text.contains("meta2: shard index 9 out of range"), "{text}");
        assert!(
            text.contains("meta3: shard of 4 bytes is too short"),
            "{text}"
        );
        // Two good ones are still enough.
        damaged[0] = Some(values[0].clone());
        damaged[3] = Some(values[3].clone());
        assert!(read(&damaged, DATA_KEY).unwrap().is_some());
    }

    #[test]
    fn another_key_does_not_decrypt() {
        let (values, _) = fixture();
        let all: Vec<_> = values.into_iter().map(Some).collect();
        let other = DATA_KEY.replace("00", "ff");
        let err = read(&all, &other).unwrap_err();
        assert!(matches!(err, MetadataError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("AES-GCM"), "{err}");
    }

    #[test]
    fn nothing_anywhere_is_not_stored_unless_a_backend_failed() {
        assert!(read(&[None, None, None, None], DATA_KEY).unwrap().is_none());
        // An empty value is no shard, as upstream reads it.
        let empty = [Some(Vec::new()), None, None, None];
        assert!(read(&empty, DATA_KEY).unwrap().is_none());
        let mut failed = answers(&[None, None, None, None]);
        failed[2].1 = Err("cannot connect".into());
        let err = assemble("/qsfs/meta/k".into(), DATA_KEY, failed)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "zstor metadata /qsfs/meta/k: 0 valid shards of the 2 needed; meta2: cannot connect"
        );
    }

    #[test]
    fn keys_are_upstreams() {
        let text = super::super::config::tests::sample(&["10.0.0.1:9900", "10.0.0.2:9900"]);
        let mut config: ZstorConfig = toml::from_str(&text).unwrap();
        let hash = |path: &str| format!("/qsfs/meta/{}", Checksum::of_bytes(path.as_bytes()));
        let file = Path::new("/var/zdb/data/zdbfs-data/d0");
        assert_eq!(
            key(&config, file).unwrap(),
            hash("/var/zdb/data/zdbfs-data/d0")
        );
        let dotted = Path::new("/var/zdb/./data/x/../zdbfs-data//d0");
        assert_eq!(
            key(&config, dotted).unwrap(),
            hash("/var/zdb/data/zdbfs-data/d0")
        );
        assert_eq!(key(&config, Path::new("./d0")).unwrap(), hash("d0"));
        config.root = Some("/var/zdb".into());
        assert_eq!(key(&config, file).unwrap(), hash("data/zdbfs-data/d0"));
        let err = key(&config, Path::new("/elsewhere/d0")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no zstor metadata key for /elsewhere/d0: not under the zstor config's root"
        );
    }
}
