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
//! The backend passwords and the data key in the metadata are read past and dropped, never
//! kept.

use super::config::{Backend, ZstorConfig, META_BACKENDS};
use super::Checksum;
use crate::zdb::{Client, Endpoint};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use reed_solomon_erasure::galois_8::ReedSolomon;
use serde::{Deserialize, Deserializer};
use std::marker::PhantomData;
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

/// What one metadata backend answered: the value under the key, if any, or what failed.
type Answer = Result<Option<Vec<u8>>, String>;

/// The metadata under `key` from what each metadata backend (by label) answered.
fn assemble(
    key: String,
    hex_key: &str,
    answers: impl IntoIterator<Item = (String, Answer)>,
) -> Result<Option<ObjectMeta>, MetadataError> {
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

/// zstor's `MetaData`, field for field in bincode order.
#[derive(Deserialize)]
struct RawMeta {
    data_shards: usize,
    disposable_shards: usize,
    checksum: [u8; CHECKSUM_LEN],
    _encryption: RawEncryption,
    _compression: RawCompression,
    shards: Vec<RawShard>,
}

/// `EncryptionMeta`: the data key, dropped.
#[derive(Deserialize)]
enum RawEncryption {
    Aes(Skipped<String>),
}

/// `CompressionMeta`.
#[derive(Deserialize)]
enum RawCompression {
    Snappy,
}

/// `ShardInfo`.
#[derive(Deserialize)]
struct RawShard {
    shard_idx: usize,
    _checksum: Skipped<[u8; CHECKSUM_LEN]>,
    _keys: Skipped<Vec<RawKey>>,
    ci: RawConnection,
}

/// `Key`: a sequential 0-db key, of 0-db v1 or v2.
#[derive(Deserialize)]
enum RawKey {
    V1(Skipped<u32>),
    V2(Skipped<u64>),
}

/// `ZdbConnectionInfo`; the password is dropped.
#[derive(Deserialize)]
struct RawConnection {
    address: SocketAddr,
    namespace: Option<String>,
    _password: Option<Skipped<String>>,
}

/// A `T` read past and dropped at once (bincode cannot skip a value without its type).
struct Skipped<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Skipped<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(|_| Skipped(PhantomData))
    }
}

/// The fields we keep from bincode `MetaData`.
fn parse(plaintext: &[u8]) -> Result<ObjectMeta, String> {
    let raw: RawMeta =
        bincode::deserialize(plaintext).map_err(|e| format!("not zstor metadata: {e}"))?;
    Ok(ObjectMeta {
        checksum: Checksum(raw.checksum),
        data_shards: raw.data_shards,
        disposable_shards: raw.disposable_shards,
        shards: raw
            .shards
            .into_iter()
            .map(|s| ShardPlace {
                index: s.shard_idx,
                address: s.ci.address,
                namespace: s.ci.namespace,
            })
            .collect(),
    })
}

/// Upstream's lookup path (`path-clean`): `.` dropped, `..` folded into its parent, no symlink
/// resolved, a relative path left relative.
fn lexical_clean(path: &Path) -> PathBuf {
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
        assemble("/qsfs/meta/k".into(), key, answers(values))
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
        let err = assemble("/qsfs/meta/k".into(), DATA_KEY, failed).unwrap_err();
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
