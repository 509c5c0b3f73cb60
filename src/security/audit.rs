//! The audit trail: every change and every look at personal data, with who, when and what.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Principal;
use crate::members::MemberId;

/// One line of the audit log. Append-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The API key id, or `cli`/`system`.
    pub actor: String,
    /// What happened: `member.create`, `member.update`, `member.merge`, `member.read_personal`, `key.create`…
    pub action: String,
    /// The member concerned, if any.
    pub member_id: Option<MemberId>,
    /// Details that let the change be understood (never personal data in clear).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl AuditEntry {
    pub fn new(
        who: &Principal,
        at: DateTime<Utc>,
        action: &str,
        member_id: Option<MemberId>,
        detail: serde_json::Value,
    ) -> Self {
        Self { at, actor: who.key_id.clone(), action: action.to_string(), member_id, detail }
    }
}
