//! Members: the system of record for who a shop's customers are. A member has a profile, consent flags and
//! any number of identities; orders and events attach to members through those identities.
//!
//! This module is pure: validation and views. Encryption of personal data happens in `security`, storage
//! in `store`, and the use cases that tie them together in `app`.

pub mod identity;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Checked, Invalid};
pub use identity::{Identity, IdentityInput, IdentityKind};

/// Members are numbered by the store; 0 is never a member (it marks guest orders and unlinked events).
pub type MemberId = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Gender {
    Female,
    Male,
    Other,
    Unknown,
}

impl Gender {
    pub fn as_str(self) -> &'static str {
        match self {
            Gender::Female => "female",
            Gender::Male => "male",
            Gender::Other => "other",
            Gender::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Gender> {
        match s {
            "female" | "f" | "F" | "女" => Some(Gender::Female),
            "male" | "m" | "M" | "男" => Some(Gender::Male),
            "other" => Some(Gender::Other),
            "unknown" | "" => Some(Gender::Unknown),
            _ => None,
        }
    }
}

/// A member's lifecycle in the system of record (not the marketing lifecycle, which analytics computes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Active,
    /// Folded into another member by a merge; kept so the merge can be audited and undone.
    Merged,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Merged => "merged",
        }
    }

    pub fn parse(s: &str) -> Option<MemberStatus> {
        match s {
            "active" => Some(MemberStatus::Active),
            "merged" => Some(MemberStatus::Merged),
            _ => None,
        }
    }
}

/// Marketing consent per channel: campaigns must honour these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Consent {
    pub sms: bool,
    pub email: bool,
    pub wechat: bool,
    pub push: bool,
}

/// Consent as sent by a caller: absent flags leave the stored value alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsentInput {
    pub sms: Option<bool>,
    pub email: Option<bool>,
    pub wechat: Option<bool>,
    pub push: Option<bool>,
}

impl ConsentInput {
    pub fn apply(&self, to: Consent) -> Consent {
        Consent {
            sms: self.sms.unwrap_or(to.sms),
            email: self.email.unwrap_or(to.email),
            wechat: self.wechat.unwrap_or(to.wechat),
            push: self.push.unwrap_or(to.push),
        }
    }
}

/// Create-or-update a member by identity: if any identity is known, that member is updated (fields that are
/// present overwrite, absent ones stay) and the new identities are added; otherwise a member is created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    /// At least one identity; phone and email are stored encrypted.
    pub identities: Vec<IdentityInput>,
    pub name: Option<String>,
    pub gender: Option<Gender>,
    #[schema(value_type = Option<String>, format = Date)]
    pub birthday: Option<NaiveDate>,
    pub city: Option<String>,
    pub country: Option<String>,
    /// Defaults to the time of the request.
    pub registered_at: Option<DateTime<Utc>>,
    /// A channel code (`web`, `tmall`, `store`…).
    pub registration_channel: Option<String>,
    pub consent: Option<ConsentInput>,
    /// The member who referred this one (邀请人). Recorded once: a later, different referrer is ignored.
    pub referred_by: Option<MemberId>,
}

/// A validated member input: identities normalized and de-duplicated, text trimmed.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberDraft {
    pub identities: Vec<Identity>,
    pub name: Option<String>,
    pub gender: Option<Gender>,
    pub birthday: Option<NaiveDate>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub registered_at: Option<DateTime<Utc>>,
    pub registration_channel: Option<String>,
    pub consent: ConsentInput,
    pub referred_by: Option<MemberId>,
}

impl MemberInput {
    /// Check and normalize; `now` bounds the dates a caller may send.
    pub fn validate(&self, now: DateTime<Utc>) -> Checked<MemberDraft> {
        if self.identities.is_empty() {
            return Err(Invalid::new("missing_field", "identities", "at least one identity is required"));
        }
        if self.identities.len() > 32 {
            return Err(Invalid::new("too_many", "identities", "at most 32 identities per member"));
        }
        let mut identities = Vec::with_capacity(self.identities.len());
        for (i, id) in self.identities.iter().enumerate() {
            let n = id.normalize().map_err(|e| e.within(&format!("identities[{i}]")))?;
            if !identities.contains(&n) {
                identities.push(n);
            }
        }
        let name = optional_text(self.name.as_deref(), "name", 100)?;
        if let Some(b) = self.birthday {
            let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or_default();
            if b < earliest || b > now.date_naive() {
                return Err(Invalid::new("out_of_range", "birthday", "birthday must be between 1900-01-01 and today"));
            }
        }
        if let Some(r) = self.registered_at
            && r > now + chrono::Duration::minutes(5)
        {
            return Err(Invalid::new("out_of_range", "registered_at", "registered_at is in the future"));
        }
        if let Some(c) = &self.registration_channel
            && !identity::is_code(c)
        {
            return Err(Invalid::new(
                "invalid_code",
                "registration_channel",
                "a channel code is lower-case letters, digits and underscores",
            ));
        }
        Ok(MemberDraft {
            identities,
            name,
            gender: self.gender,
            birthday: self.birthday,
            city: optional_text(self.city.as_deref(), "city", 64)?,
            country: optional_text(self.country.as_deref(), "country", 64)?,
            registered_at: self.registered_at,
            registration_channel: self.registration_channel.clone(),
            consent: self.consent.unwrap_or_default(),
            referred_by: self.referred_by,
        })
    }
}

/// Trim a free-text field; empty becomes absent; too long or control characters are rejected.
pub fn optional_text(v: Option<&str>, field: &str, max_chars: usize) -> Checked<Option<String>> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().count() > max_chars || v.chars().any(char::is_control) {
        return Err(Invalid::new(
            "invalid_text",
            field,
            format!("`{field}` must be at most {max_chars} printable characters"),
        ));
    }
    Ok(Some(v.to_string()))
}

/// How personal data appears in a response, decided by the caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Disclosure {
    /// In clear; the read is written to the audit log.
    Clear,
    /// Partly hidden: `138****1234`.
    Masked,
    /// Left out entirely (pseudonymized views for analysts).
    Omitted,
}

/// An identity as shown to a caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IdentityView {
    pub kind: IdentityKind,
    /// Absent when the caller's view omits personal data.
    pub value: Option<String>,
    pub linked_at: DateTime<Utc>,
}

/// A member as shown to a caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub id: MemberId,
    pub status: MemberStatus,
    pub name: Option<String>,
    pub gender: Option<Gender>,
    #[schema(value_type = Option<String>, format = Date)]
    pub birthday: Option<NaiveDate>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub registration_channel: Option<String>,
    pub consent: Consent,
    pub identities: Vec<IdentityView>,
    /// Set when this member was merged into another.
    pub merged_into: Option<MemberId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How personal data in this view is disclosed.
    pub personal_data: Disclosure,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn identities_are_required_and_deduplicated() {
        let empty = MemberInput::default();
        assert_eq!(empty.validate(now()).unwrap_err().field, "identities");
        let twice = MemberInput {
            identities: vec![
                IdentityInput::new(IdentityKind::Phone, "13812341234"),
                IdentityInput::new(IdentityKind::Phone, "+86 138 1234 1234"),
            ],
            ..Default::default()
        };
        assert_eq!(twice.validate(now()).unwrap().identities.len(), 1);
    }

    #[test]
    fn bad_fields_are_named() {
        let m = MemberInput {
            identities: vec![
                IdentityInput::new(IdentityKind::Phone, "1"),
                IdentityInput::new(IdentityKind::Email, "x"),
            ],
            ..Default::default()
        };
        let e = m.validate(now()).unwrap_err();
        assert_eq!(e.field, "identities[0].value");
        assert_eq!(e.code, "invalid_phone");
        let m = MemberInput {
            identities: vec![IdentityInput::new(IdentityKind::Email, "a@b.cn")],
            birthday: NaiveDate::from_ymd_opt(2030, 1, 1),
            ..Default::default()
        };
        assert_eq!(m.validate(now()).unwrap_err().field, "birthday");
    }
}
