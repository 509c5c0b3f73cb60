//! Personal data (phone, email, name) is encrypted with AES-256-GCM; look-ups go through a keyed blind
//! index (HMAC-SHA-256), so the database alone reveals neither the values nor which members share one.
//! Both keys are derived from one 32-byte master key with HKDF, so operators keep a single secret.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Ciphertext layout version, so keys or algorithms can rotate later.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the secret key must be 32 bytes written as 64 hex characters ({0})")]
    BadKey(String),
    #[error("cannot read or write the key file {path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
    #[error("a stored value cannot be decrypted with this key (wrong key or corrupted data)")]
    Decrypt,
}

/// Holds the derived keys. Cheap to clone behind an `Arc`.
pub struct Vault {
    cipher: Aes256Gcm,
    index_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

impl Vault {
    /// Derive the encryption and index keys from the master key.
    pub fn new(master: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"huiyuan"), master);
        let mut enc = Zeroizing::new([0u8; 32]);
        let mut idx = Zeroizing::new([0u8; 32]);
        // 32-byte outputs are always within HKDF-SHA-256's limit.
        hk.expand(b"pii-encryption/v1", enc.as_mut()).expect("hkdf length");
        hk.expand(b"blind-index/v1", idx.as_mut()).expect("hkdf length");
        let cipher = Aes256Gcm::new_from_slice(enc.as_ref()).expect("aes key length");
        Self { cipher, index_key: idx }
    }

    /// Parse a master key written as hex.
    pub fn from_hex(hex_key: &str) -> Result<Self, VaultError> {
        let bytes = Zeroizing::new(hex::decode(hex_key.trim()).map_err(|e| VaultError::BadKey(e.to_string()))?);
        let key: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| VaultError::BadKey(format!("got {} bytes", bytes.len())))?;
        Ok(Self::new(&key))
    }

    /// Load the master key from a file, creating it with a fresh random key (mode 0600) if it does not exist.
    /// Returns the vault and whether the file was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), VaultError> {
        let io = |source| VaultError::KeyFile { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(s) => Ok((Self::from_hex(&s)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new([0u8; 32]);
                rand::rng().fill_bytes(key.as_mut());
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                write_private(path, &hex::encode(key.as_ref())).map_err(io)?;
                Ok((Self::new(&key), true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Encrypt `plain`; `context` (e.g. `identity.phone`) is bound as associated data so a ciphertext
    /// cannot be moved to another field.
    pub fn seal(&self, context: &str, plain: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: context.as_bytes() })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt what `seal` produced with the same context.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<String, VaultError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != FORMAT_V1 {
            return Err(VaultError::Decrypt);
        }
        let (nonce, ct) = sealed[1..].split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: context.as_bytes() })
            .map_err(|_| VaultError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| VaultError::Decrypt)
    }

    /// The blind index of a normalized value: equal inputs give equal outputs, and without the key the
    /// output says nothing about the input.
    pub fn blind_index(&self, kind: &str, normalized: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.index_key.as_ref()).expect("hmac key");
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(normalized.as_bytes());
        format!("bi1:{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// A key check value stored in the database, so a server started with the wrong key refuses to run
    /// instead of writing data no one can read.
    pub fn check_value(&self) -> String {
        self.blind_index("key-check", "huiyuan")[4..20].to_string()
    }
}

/// Write a file readable by its owner only.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_context() {
        let v = Vault::new(&[7u8; 32]);
        let s = v.seal("identity.phone", "8613812341234");
        assert!(!s.windows(13).any(|w| w == b"8613812341234"));
        assert_eq!(v.open("identity.phone", &s).unwrap(), "8613812341234");
        assert!(v.open("member.name", &s).is_err());
        assert!(Vault::new(&[8u8; 32]).open("identity.phone", &s).is_err());
        assert_ne!(s, v.seal("identity.phone", "8613812341234"), "nonces differ");
    }

    #[test]
    fn blind_index_is_deterministic_and_keyed() {
        let v = Vault::new(&[7u8; 32]);
        assert_eq!(v.blind_index("phone", "86138"), v.blind_index("phone", "86138"));
        assert_ne!(v.blind_index("phone", "86138"), v.blind_index("email", "86138"));
        assert_ne!(v.blind_index("phone", "86138"), Vault::new(&[9u8; 32]).blind_index("phone", "86138"));
    }

    #[test]
    fn key_files_are_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let (a, created) = Vault::load_or_create(&p).unwrap();
        assert!(created);
        let (b, created) = Vault::load_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(a.check_value(), b.check_value());
    }
}
