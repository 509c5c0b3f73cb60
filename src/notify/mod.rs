//! Notifications (the outbox) and signed webhooks, pure: which events exist, how an event is derived from
//! its cause (with an id derived from the cause, so replaying the cause cannot make a second event), how a
//! webhook endpoint is validated, how a delivery is signed and when a failed one is retried.
//!
//! Any module may produce events (loyalty today; analytics alerts and campaigns later): build a [`Notice`]
//! and hand it to the store in the same transaction as its cause. The delivery worker (`app/notify.rs`)
//! sends every stored event to every active endpoint subscribed to its type, at least once.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::Invalid;
use crate::loyalty::ledger::{Entry, Kind, Lot, State, Wallet};
use crate::loyalty::tiers::TierChange;
use crate::members::MemberId;

#[cfg(test)]
mod tests;

/// The kinds of events the outbox carries. New producers add a variant here (and to [`EventType::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// A member's tier went up or down.
    TierChanged,
    /// Pending points became spendable (the return window closed).
    PointsAvailable,
    /// Points will expire within the configured window.
    PointsExpiring,
    /// Points expired.
    PointsExpired,
    /// A reward was redeemed.
    RewardRedeemed,
    /// A shop KPI moved far from its usual level for the weekday (behaviour analytics).
    KpiAnomaly,
    /// An unused coupon's window closes within the configured window (a reminder to use it).
    CouponExpiring,
    /// An unused coupon's window closed.
    CouponExpired,
}

impl EventType {
    /// Every event type, for validation and documentation.
    pub const ALL: [EventType; 8] = [
        EventType::TierChanged,
        EventType::PointsAvailable,
        EventType::PointsExpiring,
        EventType::PointsExpired,
        EventType::RewardRedeemed,
        EventType::KpiAnomaly,
        EventType::CouponExpiring,
        EventType::CouponExpired,
    ];

    /// The type's wire name (`tier.changed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TierChanged => "tier.changed",
            EventType::PointsAvailable => "points.available",
            EventType::PointsExpiring => "points.expiring",
            EventType::PointsExpired => "points.expired",
            EventType::RewardRedeemed => "reward.redeemed",
            EventType::KpiAnomaly => "analytics.kpi_anomaly",
            EventType::CouponExpiring => "coupon.expiring",
            EventType::CouponExpired => "coupon.expired",
        }
    }

    /// The type a wire name names.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// An event to put in the outbox. `id` derives from the cause and is unique forever: storing the same id
/// again writes nothing, which is what makes producers idempotent.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub id: String,
    pub event_type: EventType,
    /// 0: not about one member.
    pub member_id: MemberId,
    pub occurred_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// The subscription that matches every event type.
pub const ALL_TYPES: &str = "*";

/// A tier change worth telling: only changes of tier (upgrades, downgrades), not enrolments or grace records.
/// `change_id` is the stored change's id, unique per member.
pub fn tier_changed(member: MemberId, change_id: i64, change: &TierChange) -> Option<Notice> {
    if change.from == change.to {
        return None;
    }
    Some(Notice {
        id: format!("tier.changed:{member}:{change_id}"),
        event_type: EventType::TierChanged,
        member_id: member,
        occurred_at: change.at,
        data: serde_json::json!({
            "from": change.from,
            "to": change.to,
            "kind": change.kind,
            "growth": change.growth,
            "reason": change.reason,
            "program_version": change.program_version,
        }),
    })
}

/// The events a batch of newly written ledger entries of one member calls for: points that matured
/// (pending → available) and points that expired, one event of each per batch. Their ids derive from the
/// first entry's key, which is unique forever, so the same entries can never make a second event.
pub fn from_ledger_entries(member: MemberId, entries: &[Entry]) -> Vec<Notice> {
    let matured: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            e.wallet == Wallet::Points
                && e.kind == Kind::Earn
                && e.state == State::Available
                && e.amount > 0
                && e.op.ends_with("#mature")
        })
        .collect();
    let expired: Vec<&Entry> =
        entries.iter().filter(|e| e.wallet == Wallet::Points && e.kind == Kind::Expire && e.amount < 0).collect();
    let mut out = Vec::new();
    for (event_type, list, sign) in [(EventType::PointsAvailable, matured, 1), (EventType::PointsExpired, expired, -1)]
    {
        let Some(first) = list.first() else { continue };
        let lots: Vec<serde_json::Value> = list
            .iter()
            .map(|e| {
                serde_json::json!({
                    "lot": e.lot.as_ref().map(|l| l.0.clone()),
                    "points": sign * e.amount,
                    "source": e.source,
                })
            })
            .collect();
        out.push(Notice {
            id: format!("{}:{member}:{}", event_type.as_str(), first.key),
            event_type,
            member_id: member,
            occurred_at: first.at,
            data: serde_json::json!({
                "points": list.iter().map(|e| sign * e.amount).sum::<i64>(),
                "lots": lots,
            }),
        });
    }
    out
}

/// Warnings of points about to expire: one event per member and local expiry date (in `tz`) for available
/// points lots expiring after `now` and no later than `now + within`. The id is `(member, date)`, so running
/// this every hour warns once per date.
pub fn points_expiring(
    member: MemberId,
    lots: &[Lot],
    now: DateTime<Utc>,
    within: Duration,
    tz: chrono_tz::Tz,
) -> Vec<Notice> {
    let horizon = now + within;
    let mut by_day: BTreeMap<NaiveDate, (i64, DateTime<Utc>)> = BTreeMap::new();
    for lot in lots {
        let Some(at) = lot.expires_at else { continue };
        if lot.wallet != Wallet::Points || lot.available <= 0 || at <= now || at > horizon {
            continue;
        }
        let day = at.with_timezone(&tz).date_naive();
        let slot = by_day.entry(day).or_insert((0, at));
        slot.0 += lot.available;
        slot.1 = slot.1.min(at);
    }
    by_day
        .into_iter()
        .map(|(day, (points, at))| Notice {
            id: format!("points.expiring:{member}:{day}"),
            event_type: EventType::PointsExpiring,
            member_id: member,
            occurred_at: now,
            data: serde_json::json!({ "points": points, "expires_at": at, "expiry_date": day }),
        })
        .collect()
}

/// A reminder that an unused coupon's window closes soon. One per coupon (codes are unique forever); the
/// coupon sweep sends it once, when the end of the window comes within `expiring_soon_days`.
pub fn coupon_expiring(coupon: &crate::loyalty::coupons::Coupon, now: DateTime<Utc>) -> Notice {
    coupon_notice(EventType::CouponExpiring, coupon, now)
}

/// An unused coupon's window closed and the sweep recorded it as expired. One per coupon.
pub fn coupon_expired(coupon: &crate::loyalty::coupons::Coupon) -> Notice {
    coupon_notice(EventType::CouponExpired, coupon, coupon.valid_until)
}

fn coupon_notice(event_type: EventType, c: &crate::loyalty::coupons::Coupon, at: DateTime<Utc>) -> Notice {
    Notice {
        id: format!("{}:{}", event_type.as_str(), c.code),
        event_type,
        member_id: c.member_id,
        occurred_at: at,
        data: serde_json::json!({ "code": c.code, "template_id": c.template_id, "valid_until": c.valid_until }),
    }
}

/// A redemption was recorded (its id is unique per member).
pub fn reward_redeemed(member: MemberId, redemption: &crate::loyalty::rewards::Redemption) -> Notice {
    Notice {
        id: format!("reward.redeemed:{member}:{}", redemption.id),
        event_type: EventType::RewardRedeemed,
        member_id: member,
        occurred_at: redemption.created_at,
        data: serde_json::json!({
            "redemption_id": redemption.id,
            "reward_id": redemption.reward_id,
            "points": redemption.points,
            "cash": redemption.cash,
            "deliver": redemption.deliver,
            "prize": redemption.prize,
        }),
    }
}

/// What an operator asks for when registering a webhook endpoint.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// Where events are POSTed: an absolute `https://` (or `http://`) URL.
    pub url: String,
    /// Event types to receive (`reward.redeemed`, …) or `["*"]` for all.
    pub event_types: Vec<String>,
    /// The signing secret (16 to 256 printable characters); generated when absent.
    pub secret: Option<String>,
    pub description: Option<String>,
}

/// A validated endpoint, ready to store (the secret is sealed by the app).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookDraft {
    pub url: String,
    /// Sorted, without duplicates; `*` alone when it subscribes to everything.
    pub event_types: Vec<String>,
    pub description: Option<String>,
    #[serde(skip)]
    pub secret: Option<String>,
}

impl WebhookInput {
    /// Check the URL (absolute http(s) with a host, no credentials), the event types (known names or `*`)
    /// and the secret; errors name the field.
    pub fn validate(&self) -> Result<WebhookDraft, Invalid> {
        let url = self.url.trim();
        let parsed =
            reqwest::Url::parse(url).map_err(|e| Invalid::new("invalid_url", "url", format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
            return Err(Invalid::new("invalid_url", "url", "the URL must be absolute http:// or https:// with a host"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Invalid::new("invalid_url", "url", "credentials do not belong in the URL; events are signed"));
        }
        if url.len() > 2000 {
            return Err(Invalid::new("invalid_url", "url", "the URL is longer than 2000 characters"));
        }
        if self.event_types.is_empty() {
            return Err(Invalid::new("missing_field", "event_types", "name at least one event type, or `*`"));
        }
        let mut types = Vec::new();
        for (i, t) in self.event_types.iter().enumerate() {
            let t = t.trim();
            if t != ALL_TYPES && EventType::parse(t).is_none() {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                return Err(Invalid::new(
                    "unknown_event_type",
                    format!("event_types[{i}]"),
                    format!("unknown event type `{t}`; expected `*` or one of {}", known.join(", ")),
                ));
            }
            types.push(t.to_string());
        }
        types.sort();
        types.dedup();
        if types.iter().any(|t| t == ALL_TYPES) {
            types = vec![ALL_TYPES.to_string()];
        }
        let secret = match &self.secret {
            None => None,
            Some(s) if (16..=256).contains(&s.chars().count()) && !s.chars().any(|c| c.is_control() || c == ' ') => {
                Some(s.clone())
            }
            Some(_) => {
                return Err(Invalid::new(
                    "invalid_secret",
                    "secret",
                    "the secret must be 16 to 256 printable characters",
                ));
            }
        };
        let description = crate::members::optional_text(self.description.as_deref(), "description", 200)?;
        Ok(WebhookDraft { url: url.to_string(), event_types: types, description, secret })
    }
}

/// A fresh signing secret: 32 random bytes, hex, with a recognisable prefix.
pub fn generate_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("whsec_{}", hex::encode(b))
}

/// The stored event as a webhook body: `{"id","type","occurred_at","member_id","data"}`.
pub fn body(
    id: &str,
    event_type: &str,
    occurred_at: DateTime<Utc>,
    member: MemberId,
    data: &serde_json::Value,
) -> Vec<u8> {
    let v = serde_json::json!({
        "id": id,
        "type": event_type,
        "occurred_at": occurred_at,
        "member_id": (member != 0).then_some(member),
        "data": data,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The `X-Huiyuan-Signature` value: `sha256=` and the hex HMAC-SHA-256 of the exact body, keyed with the
/// endpoint's secret.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// How long to wait after the `attempts`-th failed attempt: 30 s, doubling, at most `cap`.
pub fn backoff(attempts: u32, cap: Duration) -> Duration {
    let base = Duration::seconds(30);
    let factor = 1i64 << attempts.saturating_sub(1).min(20);
    (base * factor as i32).min(cap)
}
