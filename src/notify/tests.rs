use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::loyalty::ledger::{Config, Ledger, Source};

#[test]
fn the_signature_is_hmac_sha256_of_the_body() {
    // RFC 4231 test case 2.
    assert_eq!(
        signature("Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn backoff_doubles_from_thirty_seconds_up_to_the_cap() {
    let cap = Duration::hours(6);
    let waits: Vec<i64> = (1..=12).map(|n| backoff(n, cap).num_seconds()).collect();
    assert_eq!(&waits[..5], &[30, 60, 120, 240, 480]);
    assert_eq!(backoff(11, cap), cap);
    assert_eq!(backoff(100, cap), cap);
}

#[test]
fn endpoints_are_validated_with_the_field_named() {
    let input = |url: &str, types: &[&str]| WebhookInput {
        url: url.into(),
        event_types: types.iter().map(|s| s.to_string()).collect(),
        secret: None,
        description: None,
    };
    assert_eq!(input("not a url", &["*"]).validate().unwrap_err().field, "url");
    assert_eq!(input("ftp://example.com/x", &["*"]).validate().unwrap_err().field, "url");
    assert_eq!(input("https://u:p@example.com/x", &["*"]).validate().unwrap_err().field, "url");
    let e = input("https://example.com/x", &["reward.redeemed", "points.bogus"]).validate().unwrap_err();
    assert_eq!((e.code, e.field.as_str()), ("unknown_event_type", "event_types[1]"));
    assert_eq!(input("https://example.com/x", &[]).validate().unwrap_err().field, "event_types");
    let d = input("https://example.com/x", &["tier.changed", "reward.redeemed", "tier.changed"]).validate().unwrap();
    assert_eq!(d.event_types, vec!["reward.redeemed", "tier.changed"]);
    let d = input("https://example.com/x", &["tier.changed", "*"]).validate().unwrap();
    assert_eq!(d.event_types, vec!["*"]);
    let mut short = input("https://example.com/x", &["*"]);
    short.secret = Some("short".into());
    assert_eq!(short.validate().unwrap_err().field, "secret");
}

#[test]
fn maturing_and_expiry_make_one_event_each_with_ids_from_their_entries() {
    let t0 = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap();
    let mut l = Ledger::new(Config::default());
    let src = Source::OrderLine { order_id: 1, line_no: 1 };
    let earned = l.earn("order:1:1:points", Wallet::Points, 100, src.clone(), t0).unwrap().entries;
    assert!(from_ledger_entries(7, &earned).is_empty(), "earning pending points is not an event");
    let matured = l.mature(t0 + Duration::days(8)).unwrap();
    let events = from_ledger_entries(7, &matured);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event_type, EventType::PointsAvailable);
    assert_eq!(events[0].data["points"], 100);
    assert_eq!(events[0].id, format!("points.available:7:{}", matured[1].key), "the +points entry of the pair");
    // Warned once per expiry date, inside the window only.
    let lots = l.lots().to_vec();
    let expires = lots[0].expires_at.unwrap();
    assert!(points_expiring(7, &lots, expires - Duration::days(31), Duration::days(30), chrono_tz::UTC).is_empty());
    let warn = points_expiring(7, &lots, expires - Duration::days(29), Duration::days(30), chrono_tz::UTC);
    assert_eq!(warn.len(), 1);
    assert_eq!(warn[0].data["points"], 100);
    let again = points_expiring(7, &lots, expires - Duration::days(2), Duration::days(30), chrono_tz::UTC);
    assert_eq!(again[0].id, warn[0].id, "the same date gives the same id");
    let expired = l.expire_due(expires).unwrap();
    let events = from_ledger_entries(7, &expired);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].event_type, events[0].data["points"].as_i64()), (EventType::PointsExpired, Some(100)));
}

#[test]
fn bodies_carry_id_type_time_member_and_data() {
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 1, 2, 3).unwrap();
    let b = body("reward.redeemed:1:2", "reward.redeemed", at, 1, &serde_json::json!({"points": 5}));
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["id"], "reward.redeemed:1:2");
    assert_eq!(v["type"], "reward.redeemed");
    assert_eq!(v["member_id"], 1);
    assert_eq!(v["data"]["points"], 5);
    assert_eq!(v["occurred_at"], "2026-11-23T01:02:03Z");
    let v: serde_json::Value = serde_json::from_slice(&body("x", "y", at, 0, &serde_json::json!({}))).unwrap();
    assert!(v["member_id"].is_null());
}
