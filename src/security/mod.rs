//! Security and privacy: encryption of personal data at rest with a searchable blind index, API keys
//! and roles with least privilege, and the audit trail of changes and of every look at personal data.

pub mod audit;
pub mod auth;
pub mod vault;

pub use audit::AuditEntry;
pub use auth::{ApiKey, Permission, Principal, Role};
pub use vault::{Vault, VaultError};

use sha2::{Digest, Sha256};

/// SHA-256 of a value's canonical JSON: the "same content" test behind idempotent writes.
pub fn content_digest<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // serde_json writes struct fields in declaration order, so equal values give equal bytes.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Sha256::digest(&bytes).to_vec()
}
