//! Behaviour events from every channel. Known types are validated against their schema; custom types
//! (`custom.<name>`) are accepted as they come. A bad event is rejected with a reason, never dropped silently.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error::{Checked, Invalid};
use crate::members::identity::is_code;
use crate::members::{Identity, IdentityInput, IdentityKind, MemberId, optional_text};

/// Most events in one batch request.
pub const MAX_BATCH: usize = 10_000;

/// The event types Huiyuan understands; anything else must be `custom.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    PageView,
    ProductView,
    Search,
    AddToCart,
    Checkout,
    Purchase,
    Share,
    CheckIn,
    CampaignOpen,
    CampaignClick,
    Custom(String),
}

const KNOWN: [(&str, EventType); 10] = [
    ("page_view", EventType::PageView),
    ("product_view", EventType::ProductView),
    ("search", EventType::Search),
    ("add_to_cart", EventType::AddToCart),
    ("checkout", EventType::Checkout),
    ("purchase", EventType::Purchase),
    ("share", EventType::Share),
    ("check_in", EventType::CheckIn),
    ("campaign_open", EventType::CampaignOpen),
    ("campaign_click", EventType::CampaignClick),
];

impl EventType {
    pub fn parse(s: &str) -> Checked<EventType> {
        if let Some((_, t)) = KNOWN.iter().find(|(n, _)| *n == s) {
            return Ok(t.clone());
        }
        match s.strip_prefix("custom.") {
            Some(name) if is_code(name) => Ok(EventType::Custom(name.to_string())),
            _ => Err(Invalid::new(
                "unknown_event_type",
                "type",
                format!(
                    "unknown event type `{s}`; known types are {}, or custom.<name>",
                    KNOWN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    pub fn name(&self) -> String {
        match self {
            EventType::Custom(n) => format!("custom.{n}"),
            other => KNOWN.iter().find(|(_, t)| t == other).map(|(n, _)| n.to_string()).unwrap_or_default(),
        }
    }

    /// The schema of a known type: which fields it must carry.
    fn check(&self, sku: Option<&str>, props: &serde_json::Map<String, serde_json::Value>) -> Checked<()> {
        let need_sku = || {
            sku.map(|_| ())
                .ok_or_else(|| Invalid::new("missing_field", "sku", format!("a {} event needs `sku`", self.name())))
        };
        let need_str = |key: &str| match props.get(key) {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(()),
            Some(_) => Err(Invalid::new(
                "invalid_type",
                format!("properties.{key}"),
                format!("`properties.{key}` must be a non-empty string"),
            )),
            None => Err(Invalid::new(
                "missing_field",
                format!("properties.{key}"),
                format!("a {} event needs `properties.{key}`", self.name()),
            )),
        };
        let opt_positive_int = |key: &str| match props.get(key) {
            None => Ok(()),
            Some(v) if v.as_i64().is_some_and(|n| n > 0) => Ok(()),
            Some(_) => Err(Invalid::new(
                "invalid_type",
                format!("properties.{key}"),
                format!("`properties.{key}` must be a positive integer"),
            )),
        };
        match self {
            EventType::PageView => need_str("url"),
            EventType::ProductView => need_sku(),
            EventType::Search => need_str("query"),
            EventType::AddToCart => {
                need_sku()?;
                opt_positive_int("quantity")
            }
            EventType::Purchase => {
                if sku.is_none() && !props.contains_key("order_no") {
                    return Err(Invalid::new(
                        "missing_field",
                        "properties.order_no",
                        "a purchase event needs `properties.order_no` or `sku`",
                    ));
                }
                Ok(())
            }
            EventType::CampaignOpen | EventType::CampaignClick => need_str("campaign_id"),
            EventType::Checkout | EventType::Share | EventType::CheckIn | EventType::Custom(_) => Ok(()),
        }
    }
}

/// An event as sent by a caller. Give `member_id`, or an `identity`, or an `anonymous_id` for a visitor
/// not yet known; an event with both an identity and an `anonymous_id` links the visitor to the member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub member_id: Option<MemberId>,
    pub identity: Option<IdentityInput>,
    pub anonymous_id: Option<String>,
    pub session_id: Option<String>,
    /// Channel code; defaults to `web`.
    pub channel: Option<String>,
    pub sku: Option<String>,
    /// The caller's own id for this event, used to drop retried duplicates; derived from content if absent.
    pub event_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: serde_json::Map<String, serde_json::Value>,
}

/// Who did it, before identity resolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    Member(MemberId),
    Identity(Identity),
    Anonymous,
}

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub event_type: EventType,
    pub occurred_at: DateTime<Utc>,
    pub actor: Actor,
    pub anonymous_id: Option<String>,
    pub session_id: Option<String>,
    pub channel: String,
    pub sku: Option<String>,
    /// De-duplication key: the caller's `event_id` or a digest of the content.
    pub key: String,
    pub properties: serde_json::Value,
}

impl EventInput {
    pub fn validate(&self, now: DateTime<Utc>) -> Checked<EventDraft> {
        let event_type = EventType::parse(&self.event_type)?;
        if self.occurred_at > now + chrono::Duration::hours(1) {
            return Err(Invalid::new("out_of_range", "occurred_at", "occurred_at is in the future"));
        }
        let anonymous_id = match &self.anonymous_id {
            Some(a) => Some(IdentityKind::AnonymousId.normalize(a).map_err(|e| e.within("anonymous_id"))?),
            None => None,
        };
        let actor = match (&self.member_id, &self.identity) {
            (Some(_), Some(_)) => {
                return Err(Invalid::new("ambiguous_actor", "identity", "give member_id or identity, not both"));
            }
            (Some(id), None) if *id <= 0 => {
                return Err(Invalid::new("out_of_range", "member_id", "member_id must be positive"));
            }
            (Some(id), None) => Actor::Member(*id),
            (None, Some(i)) => Actor::Identity(i.normalize().map_err(|e| e.within("identity"))?),
            (None, None) if anonymous_id.is_some() => Actor::Anonymous,
            (None, None) => {
                return Err(Invalid::new(
                    "missing_field",
                    "member_id",
                    "an event needs member_id, identity or anonymous_id",
                ));
            }
        };
        let channel = self.channel.clone().unwrap_or_else(|| "web".to_string());
        if !is_code(&channel) {
            return Err(Invalid::new(
                "invalid_code",
                "channel",
                "a channel code is lower-case letters, digits and underscores",
            ));
        }
        if let Some(s) = &self.sku {
            crate::commerce::validate_sku_code(s, "sku")?;
        }
        let session_id = optional_text(self.session_id.as_deref(), "session_id", 128)?;
        event_type.check(self.sku.as_deref(), &self.properties)?;
        let properties = serde_json::Value::Object(self.properties.clone());
        if properties.to_string().len() > 16 * 1024 {
            return Err(Invalid::new("too_large", "properties", "properties must be at most 16 KiB of JSON"));
        }
        let key = match &self.event_id {
            Some(id) => optional_text(Some(id), "event_id", 128)?.ok_or_else(|| Invalid::missing("event_id"))?,
            None => content_key(self, &event_type),
        };
        Ok(EventDraft {
            event_type,
            occurred_at: self.occurred_at,
            actor,
            anonymous_id,
            session_id,
            channel,
            sku: self.sku.clone(),
            key,
            properties,
        })
    }
}

/// A digest of everything that makes an event this event, so a retried batch without ids is recognised.
fn content_key(e: &EventInput, t: &EventType) -> String {
    let mut h = Sha256::new();
    let who = match (&e.member_id, &e.identity) {
        (Some(id), _) => format!("m:{id}"),
        (_, Some(i)) => format!("i:{}:{}", i.kind, i.value),
        _ => String::new(),
    };
    for part in [
        t.name().as_str(),
        &e.occurred_at.timestamp_micros().to_string(),
        &who,
        e.anonymous_id.as_deref().unwrap_or(""),
        e.session_id.as_deref().unwrap_or(""),
        e.channel.as_deref().unwrap_or("web"),
        e.sku.as_deref().unwrap_or(""),
        &serde_json::Value::Object(e.properties.clone()).to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("h:{}", hex::encode(&h.finalize()[..16]))
}

/// A stored event as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    pub member_id: Option<MemberId>,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub anonymous_id: Option<String>,
    pub session_id: Option<String>,
    pub channel: String,
    pub sku: Option<String>,
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: &str) -> EventInput {
        EventInput {
            event_type: t.into(),
            occurred_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            member_id: Some(1),
            identity: None,
            anonymous_id: None,
            session_id: None,
            channel: None,
            sku: None,
            event_id: None,
            properties: Default::default(),
        }
    }

    #[test]
    fn known_types_are_checked_and_unknown_rejected() {
        let now = "2026-02-01T00:00:00Z".parse().unwrap();
        assert_eq!(ev("product_view").validate(now).unwrap_err().field, "sku");
        assert_eq!(ev("search").validate(now).unwrap_err().field, "properties.query");
        assert_eq!(ev("teleport").validate(now).unwrap_err().code, "unknown_event_type");
        assert!(ev("check_in").validate(now).is_ok());
        assert!(ev("custom.live_room_enter").validate(now).is_ok());
        let mut e = ev("add_to_cart");
        e.sku = Some("A".into());
        e.properties.insert("quantity".into(), serde_json::json!(-1));
        assert_eq!(e.validate(now).unwrap_err().field, "properties.quantity");
    }

    #[test]
    fn the_same_content_gives_the_same_key() {
        let now = "2026-02-01T00:00:00Z".parse().unwrap();
        let a = ev("check_in").validate(now).unwrap();
        let b = ev("check_in").validate(now).unwrap();
        assert_eq!(a.key, b.key);
        let mut c = ev("check_in");
        c.session_id = Some("s2".into());
        assert_ne!(a.key, c.validate(now).unwrap().key);
    }
}
