//! Secrets at rest: webhook secrets and registry passwords are stored
//! encrypted (ChaCha20-Poly1305) with a key kept outside the redb file, so
//! that a copy of the database (a backup, a support bundle) yields none of
//! them without the key.
//!
//! The key is 32 random bytes: `CALLISTO_SECRET_KEY` (base64) when set,
//! otherwise `<data dir>/secret.key`, made on first start with mode 0600.
//! Losing it means re-entering the secrets; back it up apart from the data.

use std::path::{Path, PathBuf};

use crate::records::Sealed;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const PREFIX: &str = "enc:v1:";

/// The key's file in the data directory, when it is not configured.
pub const KEY_FILE: &str = "secret.key";

/// Where a gateway's key comes from: what must be kept with a backup of its
/// store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `secret_key` in the configuration (`CALLISTO_SECRET_KEY`).
    Configured,
    /// A key file: `seal_key_file`, by default `<data dir>/secret.key`.
    File(PathBuf),
}

impl KeySource {
    /// The source [`Sealer::load`] uses with the same arguments.
    pub fn of(path: &Path, configured: Option<&str>) -> Self {
        match configured {
            Some(_) => KeySource::Configured,
            None => KeySource::File(path.to_owned()),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SealError {
    #[error(
        "the secret cannot be decrypted: the key does not match this database (was the data directory copied without secret.key?)"
    )]
    WrongKey,
    #[error("the stored secret is not in a known format")]
    Format,
    #[error("secret key: {0}")]
    Key(String),
    #[error(
        "{path} is missing, but the store holds secrets sealed with the key it held: restore it from a backup (or give the key in CALLISTO_SECRET_KEY); to start over with a new key, after which every webhook secret and registry password must be entered again, start with --allow-new-secret-key"
    )]
    Missing { path: std::path::PathBuf },
    #[error(
        "{path} (seal_key_file, CALLISTO_SEAL_KEY_FILE) does not exist; it is never created: make it once with `head -c 32 /dev/urandom | base64 > {path}`, keep it with your secrets, and give the same file to every replica"
    )]
    NotGiven { path: std::path::PathBuf },
    #[error(
        "the sealing key ({origin}) is not the one the store's secrets were sealed with: give the right key; to use this one anyway, after which every webhook secret and registry password must be entered again, start with --allow-new-secret-key"
    )]
    Mismatch { origin: String },
}

/// Encrypts and decrypts secrets with the gateway's key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    id: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(key);
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            id: digest[..8].iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Names the key without revealing it (a prefix of its SHA-256), so a
    /// store can tell whether it is the key its secrets were sealed with.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// The gateway's key: `env` (base64) if given, else the key file at
    /// `path`, created if missing and `may_create`.
    pub fn load(path: &Path, env: Option<&str>, may_create: bool) -> Result<Self, SealError> {
        let bytes = match env {
            Some(b64) => STANDARD
                .decode(b64.trim())
                .map_err(|e| SealError::Key(format!("CALLISTO_SECRET_KEY is not base64: {e}")))?,
            None => {
                let path = path.to_owned();
                match std::fs::read_to_string(&path) {
                    Ok(text) => decode_key_file(&path, &text)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && !may_create => {
                        return Err(SealError::Missing { path });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let mut key = [0u8; 32];
                        crate::secrets::fill_random(&mut key);
                        crate::secrets::write_private(&path, &STANDARD.encode(key)).map_err(
                            |e| SealError::Key(format!("creating {}: {e}", path.display())),
                        )?;
                        key.to_vec()
                    }
                    Err(e) => return Err(SealError::Key(format!("{}: {e}", path.display()))),
                }
            }
        };
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SealError::Key("the secret key must be 32 bytes".into()))?;
        Ok(Self::new(&key))
    }

    /// The key in a key file (base64 of 32 bytes), such as one kept with a
    /// backup; never creates one.
    pub fn from_key_file(path: &Path) -> Result<Self, SealError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SealError::Key(format!("{}: {e}", path.display())))?;
        let key: [u8; 32] = decode_key_file(path, &text)?.try_into().map_err(|_| {
            SealError::Key(format!("{} does not hold a 32-byte key", path.display()))
        })?;
        Ok(Self::new(&key))
    }

    pub fn seal(&self, plaintext: &str) -> Sealed {
        let mut nonce = [0u8; 12];
        crate::secrets::fill_random(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("encryption with a valid key cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        Sealed::from_stored(format!("{PREFIX}{}", STANDARD.encode(blob)))
    }

    pub fn open(&self, sealed: &Sealed) -> Result<String, SealError> {
        let b64 = sealed
            .as_stored()
            .strip_prefix(PREFIX)
            .ok_or(SealError::Format)?;
        let blob = STANDARD.decode(b64).map_err(|_| SealError::Format)?;
        if blob.len() < 12 {
            return Err(SealError::Format);
        }
        let (nonce, ciphertext) = blob.split_at(12);
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SealError::WrongKey)?;
        String::from_utf8(plaintext).map_err(|_| SealError::Format)
    }
}

fn decode_key_file(path: &Path, text: &str) -> Result<Vec<u8>, SealError> {
    STANDARD
        .decode(text.trim())
        .map_err(|e| SealError::Key(format!("{} is not base64: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let sealer = Sealer::new(&[7u8; 32]);
        let sealed = sealer.seal("whsec_abc");
        assert!(!sealed.as_stored().contains("whsec_abc"));
        assert_ne!(sealer.seal("whsec_abc"), sealed, "fresh nonce each time");
        assert_eq!(sealer.open(&sealed).unwrap(), "whsec_abc");
        assert_eq!(format!("{sealed:?}"), "Sealed(..)");
    }

    #[test]
    fn another_key_opens_nothing() {
        let sealed = Sealer::new(&[7u8; 32]).seal("whsec_abc");
        let err = Sealer::new(&[8u8; 32]).open(&sealed).unwrap_err();
        assert!(matches!(err, SealError::WrongKey));
    }

    #[test]
    fn the_key_file_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = Sealer::load(&dir.path().join(KEY_FILE), None, true).unwrap();
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Sealer::load(&dir.path().join(KEY_FILE), None, true).unwrap();
        assert_eq!(b.open(&a.seal("x")).unwrap(), "x");
        let c = Sealer::from_key_file(&dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(c.open(&a.seal("x")).unwrap(), "x");
        assert!(Sealer::from_key_file(&dir.path().join("missing.key")).is_err());
        let env = STANDARD.encode([9u8; 32]);
        let c = Sealer::load(&dir.path().join(KEY_FILE), Some(&env), true).unwrap();
        assert!(c.open(&a.seal("x")).is_err(), "the environment's key wins");
        assert!(Sealer::load(&dir.path().join(KEY_FILE), Some("short"), true).is_err());
        assert_eq!(a.key_id(), b.key_id());
        assert_ne!(a.key_id(), c.key_id());
        let empty = tempfile::tempdir().unwrap();
        let err = Sealer::load(&empty.path().join(KEY_FILE), None, false)
            .err()
            .unwrap();
        assert!(matches!(err, SealError::Missing { .. }), "{err}");
        assert!(!empty.path().join("secret.key").exists());
    }
}
