//! Signing an image: a detached signature of `SHA256SUMS` (`SHA256SUMS.minisig` beside it),
//! made by `build --sign KEY`, checked by `verify --key PUB`; the keys come from `keygen`.
//!
//! The format is minisign's (Ed25519 over a BLAKE2b-512 prehash of the file, with a signed
//! "trusted comment"): the `minisign` tool reads the same keys and signatures
//! (`minisign -Vm SHA256SUMS -p qsfs.pub`). A secret key is password-protected (minisign's
//! scrypt scheme) unless made with `--no-password`, for a CI that keeps the key file in its
//! own secret store. The password comes from [`PASSWORD_ENV`] or, on a terminal, is asked for;
//! it never appears in a message.

use super::{tarball, Error};
use ct_codecs::{Base64, Decoder};
use minisign::{PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The signature of `SHA256SUMS`, beside it.
pub const SIGNATURE: &str = "SHA256SUMS.minisig";
/// The environment variable that holds the password of a secret key.
pub const PASSWORD_ENV: &str = "QSFS_IMAGE_KEY_PASSWORD";

/// A key id as minisign shows it (16 uppercase hex digits).
fn key_id(keynum: &[u8]) -> String {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&keynum[..8]);
    format!("{:016X}", u64::from_le_bytes(bytes))
}

fn bad_key(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Key {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn bad_signature(path: &Path, message: impl Into<String>) -> Error {
    Error::Signature {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The password from [`PASSWORD_ENV`], if it is set; an empty one is refused.
fn password_from_env() -> Result<Option<String>, Error> {
    match std::env::var(PASSWORD_ENV) {
        Ok(password) if password.is_empty() => Err(Error::Usage(format!(
            "{PASSWORD_ENV} is set but empty (unset it to be asked on the terminal)"
        ))),
        Ok(password) => Ok(Some(password)),
        Err(_) => Ok(None),
    }
}

/// A secret key, decrypted and ready to sign.
#[derive(Clone)]
pub struct Signer {
    key: SecretKey,
    public: PublicKey,
    path: PathBuf,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({}, key {})", self.path.display(), self.key_id())
    }
}

impl Signer {
    /// Loads the secret key at `path`, decrypting it with the password from [`PASSWORD_ENV`]
    /// or asked on the terminal.
    pub fn load(path: &Path) -> Result<Signer, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let not_a_key =
            |e: &dyn std::fmt::Display| bad_key(path, format!("not a minisign secret key ({e})"));
        let encoded = text
            .lines()
            .nth(1)
            .ok_or_else(|| not_a_key(&"no key line"))?;
        let raw = Base64::decode_to_vec(encoded.trim(), None).map_err(|e| not_a_key(&e))?;
        let encrypted = SecretKey::from_bytes(&raw)
            .map_err(|e| not_a_key(&e))?
            .is_encrypted();
        let key_box = SecretKeyBox::from_string(&text).map_err(|e| not_a_key(&e))?;
        let key = if !encrypted {
            SecretKey::from_unencrypted_box(key_box).map_err(|e| not_a_key(&e))?
        } else {
            let password = match password_from_env()? {
                Some(password) => Some(password),
                None if std::io::stdin().is_terminal() => None,
                None => {
                    return Err(bad_key(
                        path,
                        format!(
                            "the key is password-protected and there is no terminal to ask \
                             on: set {PASSWORD_ENV}"
                        ),
                    ))
                }
            };
            SecretKey::from_box(key_box, password).map_err(|e| match e.kind() {
                minisign::ErrorKind::Verify => bad_key(path, "wrong password for this key"),
                _ => not_a_key(&e),
            })?
        };
        let public = PublicKey::from_secret_key(&key).map_err(|e| not_a_key(&e))?;
        Ok(Signer {
            key,
            public,
            path: path.to_path_buf(),
        })
    }

    /// The key id (the one `keygen` printed and the public key file shows).
    pub fn key_id(&self) -> String {
        key_id(self.public.keynum())
    }

    /// Signs `dir/SHA256SUMS` into `dir/SHA256SUMS.minisig` (written whole or not at all);
    /// returns the signature's path.
    pub fn sign_sums(&self, dir: &Path) -> Result<PathBuf, Error> {
        let sums = dir.join(tarball::SUMS);
        let bytes = std::fs::read(&sums).map_err(|e| Error::io(&sums, e))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let comment = format!("timestamp:{now}\tfile:{}", tarball::SUMS);
        let signature = minisign::sign(
            Some(&self.public),
            &self.key,
            std::io::Cursor::new(&bytes),
            Some(&comment),
            Some("signature from qsfs-image secret key"),
        )
        .map_err(|e| bad_key(&self.path, format!("cannot sign {}: {e}", sums.display())))?;
        let target = dir.join(SIGNATURE);
        super::fsutil::write_atomic(&target, &signature.to_bytes(), 0o644)?;
        Ok(target)
    }
}

/// What a build did with `SHA256SUMS.minisig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SumsSignature {
    /// Signed `SHA256SUMS`: the signature's path and the key id.
    Signed(PathBuf, String),
    /// Not signed, and removed the signature an earlier signed build left: it no longer
    /// matches `SHA256SUMS`.
    StaleRemoved(PathBuf),
    /// Not signed.
    Unsigned,
}

/// After `dir/SHA256SUMS` was rewritten: signs it with `signer`, or removes a signature that
/// no longer matches it.
pub fn after_sums_written(dir: &Path, signer: Option<&Signer>) -> Result<SumsSignature, Error> {
    if let Some(signer) = signer {
        return Ok(SumsSignature::Signed(
            signer.sign_sums(dir)?,
            signer.key_id(),
        ));
    }
    let stale = dir.join(SIGNATURE);
    match std::fs::remove_file(&stale) {
        Ok(()) => {
            crate::fsutil::sync_dir(dir).map_err(|e| Error::io(dir, e))?;
            Ok(SumsSignature::StaleRemoved(stale))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SumsSignature::Unsigned),
        Err(e) => Err(Error::io(&stale, e)),
    }
}

/// `SHA256SUMS` whose signature by the expected key was checked.
#[derive(Debug, Clone)]
pub struct SignedSums {
    /// The text of `SHA256SUMS`, as signed.
    pub text: String,
    /// The id of the key that signed it.
    pub key_id: String,
    /// The signed comment (when it was signed).
    pub trusted_comment: String,
}

/// Checks that `dir/SHA256SUMS.minisig` is a good signature of `dir/SHA256SUMS` by the
/// public key in the file `key`; returns the signed text.
pub fn check_sums(dir: &Path, key: &Path) -> Result<SignedSums, Error> {
    let key_text = std::fs::read_to_string(key).map_err(|e| Error::io(key, e))?;
    let public = PublicKey::from_box(
        PublicKeyBox::from_string(&key_text)
            .map_err(|e| bad_key(key, format!("not a minisign public key ({e})")))?,
    )
    .map_err(|e| bad_key(key, format!("not a minisign public key ({e})")))?;
    let sums = dir.join(tarball::SUMS);
    let signature = dir.join(SIGNATURE);
    // A missing file is a refused signature (with why), any other read error an I/O error.
    let read = |path: &Path, missing: &str| match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(bad_signature(path, missing)),
        other => other.map_err(|e| Error::io(path, e)),
    };
    let bytes = read(
        &sums,
        "does not exist: there is no signed sha256 to check the tarball against",
    )?;
    let signature_text = String::from_utf8(read(
        &signature,
        "does not exist: the image is not signed (build it with --sign KEY)",
    )?)
    .map_err(|_| bad_signature(&signature, "is not text: not a minisign signature"))?;
    let signature_box = SignatureBox::from_string(&signature_text)
        .map_err(|e| bad_signature(&signature, format!("not a minisign signature ({e})")))?;
    if signature_box.keynum() != public.keynum() {
        return Err(bad_signature(
            &signature,
            format!(
                "made by key {}, not by the key in {} ({})",
                key_id(signature_box.keynum()),
                key.display(),
                key_id(public.keynum())
            ),
        ));
    }
    minisign::verify(
        &public,
        &signature_box,
        std::io::Cursor::new(&bytes),
        true,
        false,
        false,
    )
    .map_err(|e| {
        bad_signature(
            &signature,
            format!(
                "does not verify {} ({e}): it changed after it was signed",
                sums.display()
            ),
        )
    })?;
    let text =
        String::from_utf8(bytes).map_err(|_| bad_signature(&sums, "is signed but is not text"))?;
    let trusted_comment = signature_box
        .trusted_comment()
        .unwrap_or_default()
        .escape_debug()
        .to_string();
    Ok(SignedSums {
        text,
        key_id: key_id(public.keynum()),
        trusted_comment,
    })
}

/// How `keygen` protects the secret key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// With a password from [`PASSWORD_ENV`], or asked twice on the terminal.
    Password,
    /// Unencrypted: only the file's mode (0600) protects it.
    None,
}

/// Makes a key pair: the secret key at `secret` (mode 0600) and the public key at `public`
/// (0644), each written whole (temporary file, fsync, rename). Never replaces a file; returns
/// the key id.
pub fn keygen(secret: &Path, public: &Path, protection: Protection) -> Result<String, Error> {
    if secret == public {
        return Err(Error::Usage(
            "--secret-key and --public-key name the same file".into(),
        ));
    }
    for path in [secret, public] {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(Error::Usage(format!(
                "{} exists: keygen never replaces a key (move it away first if you mean to)",
                path.display()
            )));
        }
    }
    let generated = match protection {
        Protection::None => minisign::KeyPair::generate_unencrypted_keypair(),
        Protection::Password => match password_from_env()? {
            Some(password) => minisign::KeyPair::generate_encrypted_keypair(Some(password)),
            None if std::io::stdin().is_terminal() => {
                minisign::KeyPair::generate_encrypted_keypair(None)
            }
            None => {
                return Err(Error::Usage(format!(
                    "no password for the secret key and no terminal to ask on: set \
                     {PASSWORD_ENV}, or pass --no-password for an unencrypted key"
                )))
            }
        },
    };
    let pair = generated.map_err(|e| bad_key(secret, format!("cannot make a key: {e}")))?;
    let comment = match protection {
        Protection::Password => "qsfs-image secret key (password-protected)",
        Protection::None => "qsfs-image secret key (unencrypted)",
    };
    let secret_bytes = pair
        .sk
        .to_box(Some(comment))
        .map_err(|e| bad_key(secret, e))?
        .to_bytes();
    let public_bytes = pair.pk.to_box().map_err(|e| bad_key(public, e))?.to_bytes();
    super::fsutil::write_atomic(secret, &secret_bytes, 0o600)?;
    if let Err(e) = super::fsutil::write_atomic(public, &public_bytes, 0o644) {
        // The secret key is new and useless without its public key: do not leave it.
        let _ = std::fs::remove_file(secret);
        return Err(e);
    }
    Ok(key_id(pair.pk.keynum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_checks_only_with_its_key_and_its_sums() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = (dir.path().join("k"), dir.path().join("k.pub"));
        let id = keygen(&secret, &public, Protection::None).unwrap();
        let signer = Signer::load(&secret).unwrap();
        assert_eq!(signer.key_id(), id);
        assert!(!format!("{signer:?}").contains(&std::fs::read_to_string(&secret).unwrap()));
        std::fs::write(dir.path().join(tarball::SUMS), "00  a.tar.gz\n").unwrap();
        let written = after_sums_written(dir.path(), Some(&signer)).unwrap();
        assert_eq!(
            written,
            SumsSignature::Signed(dir.path().join(SIGNATURE), id.clone())
        );
        let signed = check_sums(dir.path(), &public).unwrap();
        assert_eq!(
            (signed.text.as_str(), signed.key_id),
            ("00  a.tar.gz\n", id)
        );
        assert!(signed.trusted_comment.contains("file:SHA256SUMS"));

        std::fs::write(dir.path().join(tarball::SUMS), "11  a.tar.gz\n").unwrap();
        let err = check_sums(dir.path(), &public).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        assert_eq!(err.exit_code(), super::super::exit::BAD_SIGNATURE);

        let err = check_sums(dir.path(), &secret).unwrap_err();
        assert!(
            err.to_string().contains("not a minisign public key"),
            "{err}"
        );
        let err = Signer::load(&public).unwrap_err();
        assert!(
            err.to_string().contains("not a minisign secret key"),
            "{err}"
        );

        assert_eq!(
            after_sums_written(dir.path(), None).unwrap(),
            SumsSignature::StaleRemoved(dir.path().join(SIGNATURE))
        );
        assert_eq!(
            after_sums_written(dir.path(), None).unwrap(),
            SumsSignature::Unsigned
        );
    }
}
