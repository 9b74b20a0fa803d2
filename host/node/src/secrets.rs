//! API secrets at rest. An HMAC secret must be known to check a signature,
//! but it must never sit in clear in the journal, a snapshot or a log: those
//! are copied to backups, shipped to replicas, inspected with `exhost
//! journal`. So the gateway seals a new user's secret before it is journaled
//! (ChaCha20-Poly1305, the API key as associated data, a random nonce), and
//! only the directory in memory ever holds it open.
//!
//! The sealing key lives in its own file (`secrets_key_file`, by default
//! `<data-dir>/secrets.key`, mode 0600), apart from the database: a copy of
//! the database alone reveals no secret. An operator who keeps the key
//! elsewhere points the configuration at it. Losing the key loses every
//! HMAC user's ability to sign (their orders and balances stay); Ed25519
//! users, whose public keys only the host holds, are not affected.

use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::error::DataDirError;

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
/// The first byte of a sealed secret: its format.
const SEALED_FORMAT: u8 = 1;

/// Why a secret could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("no randomness for a nonce: {0}")]
    Randomness(String),
    #[error("the cipher refused to seal")]
    Cipher,
}

/// Seals and opens API secrets with the host's key.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    /// A one-way digest of the key, to tell whether two hosts hold the same one.
    check: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

impl Sealer {
    pub fn from_key(key: [u8; KEY_BYTES]) -> Sealer {
        use sha2::Digest;
        let check =
            sha2::Sha256::new().chain_update(b"exhost secrets key check v1").chain_update(key).finalize().into();
        Sealer { cipher: ChaCha20Poly1305::new(Key::from_slice(&key)), check }
    }

    /// A digest of the key (SHA-256 of a label and the key) that reveals
    /// nothing of it: the nodes of a cluster compare theirs, since each must
    /// open the secrets every other one sealed.
    pub fn key_check_hex(&self) -> String {
        hex::encode(self.check)
    }

    /// The key in `path` (64 hex digits), or a new one written there (mode 0600).
    pub fn load_or_create(path: &Path) -> Result<Sealer, DataDirError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut key = [0u8; KEY_BYTES];
                hex::decode_to_slice(text.trim(), &mut key).map_err(|error| DataDirError::Malformed {
                    path: path.to_path_buf(),
                    problem: format!("must hold 64 hex digits (the secrets key): {error}"),
                })?;
                Ok(Sealer::from_key(key))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_BYTES];
                getrandom::fill(&mut key).map_err(|error| DataDirError::Randomness {
                    purpose: "the secrets key",
                    reason: error.to_string(),
                })?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let written = options.open(path).and_then(|mut file| {
                    writeln!(file, "{}", hex::encode(key))?;
                    file.sync_all()?;
                    // Its entry too: sealed secrets journaled under a key a power cut took would never open.
                    crate::watermark::sync_directory(path.parent().unwrap_or(Path::new(".")))
                });
                match written {
                    // Another process sharing the file made it first (cluster nodes
                    // starting together): use that one.
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        return Sealer::load_or_create(path);
                    }
                    written => written.map_err(DataDirError::file("creating", path))?,
                }
                tracing::info!(path = %path.display(), "created the key that seals API secrets at rest");
                Ok(Sealer::from_key(key))
            }
            Err(error) => Err(DataDirError::file("reading", path)(error)),
        }
    }

    /// Seal `secret` for the user `api_key`.
    pub fn seal(&self, api_key: &str, secret: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|error| SealError::Randomness(error.to_string()))?;
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret.as_bytes(), aad: api_key.as_bytes() })
            .map_err(|_| SealError::Cipher)?;
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
        out.push(SEALED_FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The secret sealed for `api_key`, if this key sealed it and nothing changed it.
    pub fn open(&self, api_key: &str, sealed: &[u8]) -> Option<String> {
        let (&format, rest) = sealed.split_first()?;
        if format != SEALED_FORMAT || rest.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let opened =
            self.cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: api_key.as_bytes() }).ok()?;
        String::from_utf8(opened).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_check_tells_keys_apart_and_shows_no_key_byte() {
        let (a, b) = (Sealer::from_key([7; 32]), Sealer::from_key([8; 32]));
        assert_eq!(a.key_check_hex(), Sealer::from_key([7; 32]).key_check_hex());
        assert_ne!(a.key_check_hex(), b.key_check_hex());
        assert!(!a.key_check_hex().contains(&hex::encode([7u8; 4])));
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_user_and_hides_the_secret() {
        let sealer = Sealer::from_key([7; 32]);
        let sealed = sealer.seal("key-1", "the secret").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"the secret"), "the secret is not in the sealed bytes");
        assert_eq!(sealer.open("key-1", &sealed).as_deref(), Some("the secret"));
        assert_eq!(sealer.open("key-2", &sealed), None, "bound to its user");
        assert_eq!(Sealer::from_key([8; 32]).open("key-1", &sealed), None, "bound to its key");
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open("key-1", &damaged), None, "authenticated");
        assert_ne!(sealer.seal("key-1", "the secret").unwrap(), sealed, "a fresh nonce each time");
        assert_eq!(sealer.open("key-1", &[]), None);
    }

    #[test]
    fn the_key_file_is_created_once_and_read_back() {
        let dir = std::env::temp_dir().join(format!("exhost-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secrets.key");
        let sealed = Sealer::load_or_create(&path).unwrap().seal("k", "s").unwrap();
        assert_eq!(Sealer::load_or_create(&path).unwrap().open("k", &sealed).as_deref(), Some("s"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "not hex").unwrap();
        assert!(Sealer::load_or_create(&path).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// What checks one user's signatures, as the directory keeps it in memory.
#[derive(Clone)]
pub enum Verifier {
    /// HMAC-SHA256 with this secret.
    Hmac(String),
    /// An Ed25519 signature by this key.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// Nothing can sign for this user (its sealed secret does not open with
    /// this host's key, or its public key is malformed): why.
    Unusable(&'static str),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verifier::Hmac(_) => f.write_str("Hmac(<secret>)"),
            Verifier::Ed25519(key) => write!(f, "Ed25519({})", hex::encode(key.as_bytes())),
            Verifier::Unusable(why) => write!(f, "Unusable({why})"),
        }
    }
}

impl Verifier {
    pub fn of(api_key: &str, credential: &exhost_engine::Credential, sealer: Option<&Sealer>) -> Verifier {
        use exhost_engine::Credential;
        match credential {
            Credential::Clear(secret) => Verifier::Hmac(secret.clone()),
            Credential::SealedSecret(sealed) => match sealer.and_then(|sealer| sealer.open(api_key, sealed)) {
                Some(secret) => Verifier::Hmac(secret),
                None => Verifier::Unusable("the user's secret does not open with this host's secrets key"),
            },
            Credential::Ed25519(public_key) => match ed25519_dalek::VerifyingKey::from_bytes(public_key) {
                Ok(key) => Verifier::Ed25519(key),
                Err(_) => Verifier::Unusable("the user's public key is not a valid Ed25519 key"),
            },
        }
    }

    /// Whether `signature` (raw bytes) signs `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), &'static str> {
        match self {
            Verifier::Hmac(secret) => {
                use hmac::{Hmac, KeyInit, Mac};
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
                    .map_err(|_| "the user's secret cannot key an HMAC")?;
                mac.update(message);
                mac.verify_slice(signature).map_err(|_| "signature does not match")
            }
            Verifier::Ed25519(key) => {
                let signature =
                    <[u8; 64]>::try_from(signature).map_err(|_| "an Ed25519 signature is 64 bytes (128 hex digits)")?;
                key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature))
                    .map_err(|_| "signature does not match")
            }
            Verifier::Unusable(why) => Err(why),
        }
    }
}
