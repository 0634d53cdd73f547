//! The server's secret material: the master key, keyed hashes of presented secrets, and
//! minting new secrets from the OS random generator.
//!
//! Secrets are stored only as `HMAC-SHA256(hash_key, secret)`, with `hash_key` derived from
//! the master key. A stolen database therefore cannot be used to check guesses offline without
//! the master key too, which lives outside the store (`CUSTOS_MASTER_KEY` or a 0600 file).

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use custos_core::token::{self, SecretKind};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("CUSTOS_MASTER_KEY must be 32 bytes, base64 or hex encoded")]
    BadEnvKey,
    #[error("master key file {0} is malformed: expected 32 bytes in base64")]
    BadKeyFile(String),
    #[error("master key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "this store was initialised with a different master key; start with the original \
         CUSTOS_MASTER_KEY or master.key"
    )]
    Mismatch,
}

#[derive(Clone)]
pub struct Keys {
    hash_key: [u8; 32],
    /// The key-encryption key that seals private signing keys before they reach the store.
    kek: [u8; 32],
    check: String,
}

/// A sealed blob could not be opened: the wrong master key, or a changed blob.
#[derive(Debug, thiserror::Error)]
#[error("a sealed key could not be opened: wrong master key or tampered data")]
pub struct UnsealError;

/// The version byte in front of every sealed blob, so the format can change later.
const SEAL_V1: u8 = 1;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let bytes = hex::decode(text)
        .ok()
        .or_else(|| STANDARD.decode(text).ok())?;
    bytes.try_into().ok()
}

/// Writes `contents` to `path` readable by the owner only, atomically (temp file + rename).
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Keys {
    /// The master key from `env_key` if given, else `DATA_DIR/master.key`, created on first use.
    pub fn load(env_key: Option<&str>, data_dir: &Path) -> Result<Self, KeyError> {
        let master = match env_key {
            Some(text) => decode_key(text).ok_or(KeyError::BadEnvKey)?,
            None => {
                let path = data_dir.join("master.key");
                let io = |source| KeyError::Io {
                    path: path.display().to_string(),
                    source,
                };
                match std::fs::read_to_string(&path) {
                    Ok(text) => decode_key(&text)
                        .ok_or_else(|| KeyError::BadKeyFile(path.display().to_string()))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let key: [u8; 32] = rand::random();
                        write_private_file(&path, STANDARD.encode(key).as_bytes()).map_err(io)?;
                        key
                    }
                    Err(e) => return Err(io(e)),
                }
            }
        };
        Ok(Self::from_master(&master))
    }

    pub fn from_master(master: &[u8; 32]) -> Self {
        Self {
            hash_key: hmac(master, b"custos/secret-hash/v1"),
            kek: hmac(master, b"custos/key-encryption/v1"),
            check: hex::encode(hmac(master, b"custos/key-check/v1")),
        }
    }

    /// A non-secret value that identifies the master key, stored once per store so that a node
    /// started with the wrong key refuses to run instead of rejecting every token.
    pub fn check_value(&self) -> &str {
        &self.check
    }

    pub fn verify_check(&self, stored: &str) -> Result<(), KeyError> {
        if bool::from(stored.as_bytes().ct_eq(self.check.as_bytes())) {
            Ok(())
        } else {
            Err(KeyError::Mismatch)
        }
    }

    /// Encrypts `plaintext` with AES-256-GCM under the key-encryption key. `context` (say, a
    /// key id) is authenticated but not stored: a blob moved to another record will not open.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let cipher = aes_gcm::Aes256Gcm::new(&self.kek.into());
        let nonce: [u8; 12] = rand::random();
        let sealed = cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("aes-gcm encrypts any message shorter than 64 GiB");
        let mut out = Vec::with_capacity(1 + nonce.len() + sealed.len());
        out.push(SEAL_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`Keys::seal`] sealed with the same `context`.
    pub fn unseal(
        &self,
        context: &str,
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, UnsealError> {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let (&version, rest) = sealed.split_first().ok_or(UnsealError)?;
        if version != SEAL_V1 || rest.len() < 12 + 16 {
            return Err(UnsealError);
        }
        let (nonce, ciphertext) = rest.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| UnsealError)?;
        let cipher = aes_gcm::Aes256Gcm::new(&self.kek.into());
        cipher
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map(zeroize::Zeroizing::new)
            .map_err(|_| UnsealError)
    }

    /// The keyed hash under which a secret is stored and looked up.
    pub fn secret_hash(&self, secret: &str) -> [u8; 32] {
        hmac(&self.hash_key, secret.as_bytes())
    }

    /// The public name of a secret: a prefix of its keyed hash, safe to log and show.
    pub fn fingerprint(&self, secret: &str) -> String {
        fingerprint_of_hash(&self.secret_hash(secret))
    }
}

pub fn fingerprint_of_hash(hash: &[u8]) -> String {
    format!("fp_{}", hex::encode(&hash[..12.min(hash.len())]))
}

/// Compares a computed hash with a stored one in constant time.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// A fresh HMAC key of 256 random bits, base64url after `prefix` (`custos_whsec_` for a
/// webhook channel, `custos_hksec_` for a deployment hook), so that scanners know it.
pub fn mint_hmac_secret(prefix: &str) -> String {
    use base64::Engine as _;
    let random: [u8; 32] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    )
}

/// A fresh secret of `kind` from the operating system's random generator.
pub fn mint(kind: SecretKind) -> String {
    let random: [u8; 32] = rand::random();
    token::mint(kind, &random)
}
