//! API keys and roles. Keys are shown once and stored only as SHA-256 digests. Each role gets the least
//! it needs: integrations write but cannot list members or read personal data in bulk; analysts read
//! aggregates and pseudonymized data.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::members::Disclosure;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Analyst,
    Integration,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Analyst, Role::Integration];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Analyst => "analyst",
            Role::Integration => "integration",
        }
    }

    /// The permission table: the one place that says who may do what.
    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        use Role::*;
        match p {
            MembersWrite | OrdersWrite | CatalogWrite | Redeem => matches!(self, Admin | Operator | Integration),
            EventsWrite => matches!(self, Admin | Integration),
            MemberRead | OrdersRead | CatalogRead | LoyaltyRead => true,
            MembersList | StatsRead | AnalyticsRead => matches!(self, Admin | Operator | Analyst),
            AnalyticsRun => matches!(self, Admin | Operator),
            MembersMerge | ChannelsWrite | PointsAdjust | LoyaltyConfigure | RiskReview => {
                matches!(self, Admin | Operator)
            }
            KeysManage | AuditRead | WebhooksManage => matches!(self, Admin),
        }
    }

    /// How personal data is shown to this role on a single member's read. Lists never show it in clear.
    pub fn disclosure(self, single: bool) -> Disclosure {
        match self {
            Role::Admin | Role::Operator if single => Disclosure::Clear,
            Role::Admin | Role::Operator | Role::Integration => Disclosure::Masked,
            Role::Analyst => Disclosure::Omitted,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`; expected admin, operator, analyst or integration"))
    }
}

/// Things a caller may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    MembersWrite,
    MemberRead,
    MembersList,
    MembersMerge,
    OrdersWrite,
    OrdersRead,
    EventsWrite,
    CatalogWrite,
    CatalogRead,
    ChannelsWrite,
    StatsRead,
    /// Operator adjustments of a member's points.
    PointsAdjust,
    /// Read the loyalty program (rules, versions) and simulate earning.
    LoyaltyRead,
    /// Change the loyalty program (rule-set versions, rewards).
    LoyaltyConfigure,
    /// Redeem a member's points for a reward.
    Redeem,
    /// Review and clear a member's risk flags (风控).
    RiskReview,
    KeysManage,
    AuditRead,
    /// Register webhook endpoints, see their deliveries and read the outbox.
    WebhooksManage,
    /// Read behaviour analytics: aggregates, models, member profiles' analytic parts.
    AnalyticsRead,
    /// Start an analysis run on demand (the server also runs one on its schedule).
    AnalyticsRun,
}

/// A stored API key: never the key itself, only its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's public prefix, safe to log and show (`hy_AbCd1234`).
    pub id: String,
    pub digest: String,
    pub role: Role,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who is calling: the key id (for the audit log) and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub role: Role,
}

impl Principal {
    /// The principal for work done from the command line on the operator's own machine.
    pub fn cli() -> Self {
        Principal { key_id: "cli".into(), role: Role::Admin }
    }
}

/// A new random key: `hy_` + 43 URL-safe characters (256 bits). Returns the key (to show once) and the
/// record to store.
pub fn generate_key(role: Role, name: &str, now: DateTime<Utc>) -> (String, ApiKey) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("hy_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let record = key_record(&secret, role, name, now);
    (secret, record)
}

/// The stored record of a given key (used for `HUIYUAN_ADMIN_KEY`, whose value the operator chose).
pub fn key_record(secret: &str, role: Role, name: &str, now: DateTime<Utc>) -> ApiKey {
    ApiKey {
        id: key_id(secret),
        digest: digest_key(secret),
        role,
        name: name.to_string(),
        created_at: now,
        revoked_at: None,
    }
}

/// SHA-256 of the key, hex: keys are high-entropy, so a fast hash is the right tool (no password KDF needed).
pub fn digest_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn key_id(secret: &str) -> String {
    secret.chars().take(11).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_privilege() {
        assert!(Role::Integration.allows(Permission::OrdersWrite));
        assert!(!Role::Integration.allows(Permission::MembersList));
        assert!(!Role::Analyst.allows(Permission::MembersWrite));
        assert!(Role::Analyst.allows(Permission::StatsRead));
        assert!(!Role::Operator.allows(Permission::KeysManage));
        assert_eq!(Role::Analyst.disclosure(true), Disclosure::Omitted);
        assert_eq!(Role::Admin.disclosure(false), Disclosure::Masked);
    }

    #[test]
    fn keys_are_random_and_stored_as_digests() {
        let now = Utc::now();
        let (a, ra) = generate_key(Role::Admin, "a", now);
        let (b, _) = generate_key(Role::Admin, "b", now);
        assert_ne!(a, b);
        assert!(a.starts_with("hy_") && a.len() == 46);
        assert_eq!(ra.digest, digest_key(&a));
        assert!(!ra.digest.contains(&a[3..]));
    }
}
