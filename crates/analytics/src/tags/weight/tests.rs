use approx::assert_abs_diff_eq;
use chrono::{Duration, TimeZone};

use super::*;

fn day(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::days(n)
}

fn obs(member_id: i64, tag: &str, category: &str, source: TagSource, at: i64, strength: f64) -> TagObservation {
    TagObservation {
        member_id,
        tag: tag.into(),
        category: category.into(),
        source,
        at: day(at),
        strength,
        reason: format!("evidence for {tag} on day {at}"),
    }
}

fn stored(tag: &str, category: &str, source: TagSource, support_weight: f64, supported: i64, shown: f64) -> MemberTag {
    MemberTag {
        member_id: 1,
        tag: tag.into(),
        category: category.into(),
        source,
        weight: shown,
        support_weight,
        last_supported_at: day(supported),
        first_tagged_at: day(0),
        reason: "earlier".into(),
    }
}

#[test]
fn half_life_exactly_halves() {
    let h = Some(30.0);
    assert_abs_diff_eq!(decayed_weight(0.8, day(0), day(30), h), 0.4, epsilon = 1e-12);
    assert_abs_diff_eq!(decayed_weight(0.8, day(0), day(60), h), 0.2, epsilon = 1e-12);
    assert_abs_diff_eq!(decayed_weight(0.8, day(0), day(15), h), 0.8 / 2f64.sqrt(), epsilon = 1e-12);
    // Twelve hours is half a day: 0.5^(0.5/1).
    let noon = day(0) + Duration::hours(12);
    assert_abs_diff_eq!(decayed_weight(1.0, day(0), noon, Some(1.0)), 0.5f64.sqrt(), epsilon = 1e-12);
    assert_eq!(decayed_weight(0.8, day(0), day(999), None), 0.8);
    assert_eq!(decayed_weight(0.8, day(10), day(5), h), 0.8);
}

#[test]
fn new_observation_adds_a_tag_and_decay_is_reported() {
    let p = TagWeightParams::default();
    let first = update_member_tags(&[], &[obs(1, "复购客", "behaviour", TagSource::Rule, 0, 1.0)], day(0), &p).unwrap();
    assert_eq!(first.tags.len(), 1);
    assert_eq!(first.tags[0].weight, 1.0);
    assert_eq!(first.changes.len(), 1);
    assert_eq!(first.changes[0].kind, ChangeKind::Added);
    assert_eq!(first.changes[0].new_weight, Some(1.0));
    assert_eq!(first.changes[0].reason, "evidence for 复购客 on day 0");

    // 30 days later (behaviour half-life 30 d) with no evidence: exactly half.
    let later = update_member_tags(&first.tags, &[], day(30), &p).unwrap();
    assert_abs_diff_eq!(later.tags[0].weight, 0.5, epsilon = 1e-12);
    assert_eq!(later.tags[0].support_weight, 1.0);
    assert_eq!(later.tags[0].last_supported_at, day(0));
    assert_eq!(later.changes[0].kind, ChangeKind::Reweighted);
    assert_eq!(later.changes[0].old_weight, Some(1.0));
    assert!(later.changes[0].reason.starts_with("decayed from 1.000 to 0.500"), "{}", later.changes[0].reason);

    // One more day: the change (0.0114) is under the reporting threshold, so no change row.
    let next = update_member_tags(&later.tags, &[], day(31), &p).unwrap();
    assert_abs_diff_eq!(next.tags[0].weight, 0.5f64.powf(31.0 / 30.0), epsilon = 1e-12);
    assert!(next.changes.is_empty());
}

#[test]
fn reinforcement_is_noisy_or_of_the_decayed_weight() {
    let p = TagWeightParams::default();
    let prev = [stored("敏感肌", "behaviour", TagSource::Keyword, 0.8, 0, 0.8)];
    // Decays to 0.4 after 30 d, then 1 − 0.6 × 0.5 = 0.7.
    let up =
        update_member_tags(&prev, &[obs(1, "敏感肌", "behaviour", TagSource::Keyword, 30, 0.5)], day(30), &p).unwrap();
    let t = &up.tags[0];
    assert_abs_diff_eq!(t.support_weight, 0.7, epsilon = 1e-12);
    assert_abs_diff_eq!(t.weight, 0.7, epsilon = 1e-12);
    assert_eq!(t.last_supported_at, day(30));
    assert_eq!(t.first_tagged_at, day(0));
    assert_eq!(up.changes[0].kind, ChangeKind::Reweighted);
    assert!(up.changes[0].reason.starts_with("reinforced: "));

    // A fact (strength 1) resets to 1; then as_of 30 d after the evidence reports the decayed weight.
    let reset =
        update_member_tags(&prev, &[obs(1, "敏感肌", "behaviour", TagSource::Keyword, 30, 1.0)], day(60), &p).unwrap();
    assert_eq!(reset.tags[0].support_weight, 1.0);
    assert_abs_diff_eq!(reset.tags[0].weight, 0.5, epsilon = 1e-12);
}

#[test]
fn several_observations_in_one_run_combine_in_time_order() {
    let p = TagWeightParams::default();
    // Two keyword texts on the same day at 0.5 each: 1 − 0.5 × 0.5 = 0.75.
    let same_day = [
        obs(1, "敏感肌", "interest", TagSource::Keyword, 10, 0.5),
        obs(1, "敏感肌", "interest", TagSource::Keyword, 10, 0.5),
    ];
    let r = update_member_tags(&[], &same_day, day(10), &p).unwrap();
    assert_abs_diff_eq!(r.tags[0].weight, 0.75, epsilon = 1e-12);
    assert!(r.changes[0].reason.ends_with("(2 observations this run)"));

    // 60 days apart (interest half-life 60 d), given out of order: 0.5 → 0.25 → 1 − 0.75 × 0.5 = 0.625.
    let apart = [
        obs(1, "敏感肌", "interest", TagSource::Keyword, 70, 0.5),
        obs(1, "敏感肌", "interest", TagSource::Keyword, 10, 0.5),
    ];
    let r = update_member_tags(&[], &apart, day(70), &p).unwrap();
    assert_abs_diff_eq!(r.tags[0].weight, 0.625, epsilon = 1e-12);
    assert_eq!(r.tags[0].first_tagged_at, day(10));
    assert_eq!(r.tags[0].last_supported_at, day(70));
}

#[test]
fn late_evidence_is_decayed_to_the_support_time() {
    let p = TagWeightParams::default();
    // Stored 0.5 at day 60; a review dated day 0 (interest, 60 d) is worth 0.25 at day 60:
    // 1 − 0.5 × 0.75 = 0.625, and the support time stays day 60.
    let prev = [stored("敏感肌", "interest", TagSource::Keyword, 0.5, 60, 0.5)];
    let r =
        update_member_tags(&prev, &[obs(1, "敏感肌", "interest", TagSource::Keyword, 0, 0.5)], day(60), &p).unwrap();
    assert_abs_diff_eq!(r.tags[0].support_weight, 0.625, epsilon = 1e-12);
    assert_eq!(r.tags[0].last_supported_at, day(60));
}

#[test]
fn tags_below_the_floor_drop() {
    let p = TagWeightParams::default();
    // 0.3 after two half-lives is 0.075 < 0.1.
    let prev = [stored("夜猫子", "behaviour", TagSource::Rule, 0.3, 0, 0.3)];
    let r = update_member_tags(&prev, &[], day(60), &p).unwrap();
    assert!(r.tags.is_empty());
    assert_eq!(r.changes.len(), 1);
    assert_eq!(r.changes[0].kind, ChangeKind::Dropped);
    assert_eq!(r.changes[0].old_weight, Some(0.3));
    assert_eq!(r.changes[0].new_weight, None);
    assert!(r.changes[0].reason.starts_with("weight 0.075 fell below the floor 0.1"), "{}", r.changes[0].reason);
    // At day 47 it survives: 0.3 × 0.5^(47/30) = 0.1013.
    let r = update_member_tags(&prev, &[], day(47), &p).unwrap();
    assert_eq!(r.tags.len(), 1);
    assert_abs_diff_eq!(r.tags[0].weight, 0.3 * 0.5f64.powf(47.0 / 30.0), epsilon = 1e-12);

    // Evidence too weak to reach the floor adds nothing.
    let weak = update_member_tags(&[], &[obs(1, "x", "behaviour", TagSource::Model, 0, 0.05)], day(0), &p).unwrap();
    assert!(weak.tags.is_empty() && weak.changes.is_empty());
}

#[test]
fn manual_tags_do_not_decay_unless_configured() {
    let prev = [stored("VIP客户", "value", TagSource::Manual, 1.0, 0, 1.0)];
    let p = TagWeightParams::default();
    let r = update_member_tags(&prev, &[], day(1000), &p).unwrap();
    assert_eq!(r.tags[0].weight, 1.0);
    assert!(r.changes.is_empty());
    let p = TagWeightParams { manual_half_life_days: Some(100.0), ..TagWeightParams::default() };
    let r = update_member_tags(&prev, &[], day(300), &p).unwrap();
    assert_abs_diff_eq!(r.tags[0].weight, 0.125, epsilon = 1e-12);
}

#[test]
fn state_categories_drop_rule_and_model_tags_when_unobserved() {
    let p = TagWeightParams::default();
    let prev = [
        stored("沉睡", "lifecycle", TagSource::Model, 1.0, 0, 1.0),
        stored("新客", "lifecycle", TagSource::Keyword, 1.0, 0, 1.0),
        stored("高价值", "value", TagSource::Rule, 1.0, 0, 1.0),
    ];
    let now = [obs(1, "活跃", "lifecycle", TagSource::Model, 1, 1.0)];
    let r = update_member_tags(&prev, &now, day(1), &p).unwrap();
    let names: Vec<&str> = r.tags.iter().map(|t| t.tag.as_str()).collect();
    assert_eq!(names, ["高价值", "活跃", "新客"]);
    let dropped: Vec<(&str, ChangeKind)> = r.changes.iter().map(|c| (c.tag.as_str(), c.kind)).collect();
    assert_eq!(dropped, [("沉睡", ChangeKind::Dropped), ("活跃", ChangeKind::Added)]);
    assert!(r.changes[0].reason.contains("recomputed every run"));
}

#[test]
fn the_same_tag_from_two_sources_is_two_rows() {
    let p = TagWeightParams::default();
    let prev = [stored("敏感肌", "interest", TagSource::Manual, 1.0, 0, 1.0)];
    let r =
        update_member_tags(&prev, &[obs(1, "敏感肌", "interest", TagSource::Keyword, 5, 0.5)], day(65), &p).unwrap();
    assert_eq!(r.tags.len(), 2);
    let manual = r.tags.iter().find(|t| t.source == TagSource::Manual).unwrap();
    let keyword = r.tags.iter().find(|t| t.source == TagSource::Keyword).unwrap();
    assert_eq!(manual.weight, 1.0);
    assert_abs_diff_eq!(keyword.weight, 0.25, epsilon = 1e-12);
}

#[test]
fn unlisted_categories_use_the_default_half_life() {
    let p = TagWeightParams::default();
    let prev = [stored("x", "custom", TagSource::Rule, 1.0, 0, 1.0)];
    let r = update_member_tags(&prev, &[], day(90), &p).unwrap();
    assert_abs_diff_eq!(r.tags[0].weight, 0.5, epsilon = 1e-12);
}

#[test]
fn invalid_input_is_a_typed_error() {
    let p = TagWeightParams::default();
    for s in [0.0, -0.1, 1.5, f64::NAN] {
        assert!(matches!(
            update_member_tags(&[], &[obs(1, "x", "value", TagSource::Model, 0, s)], day(0), &p),
            Err(TagError::InvalidStrength { .. })
        ));
    }
    assert!(matches!(
        update_member_tags(&[], &[obs(1, "x", "value", TagSource::Model, 5, 1.0)], day(4), &p),
        Err(TagError::FutureObservation { .. })
    ));
    let dup = [stored("x", "value", TagSource::Rule, 1.0, 0, 1.0), stored("x", "value", TagSource::Rule, 0.5, 0, 0.5)];
    assert!(matches!(update_member_tags(&dup, &[], day(1), &p), Err(TagError::DuplicateTag { .. })));
    let nan = [stored("x", "value", TagSource::Rule, f64::NAN, 0, 1.0)];
    assert!(matches!(update_member_tags(&nan, &[], day(1), &p), Err(TagError::InvalidWeight { .. })));
    let bad = TagWeightParams { floor: 1.0, ..TagWeightParams::default() };
    assert!(matches!(update_member_tags(&[], &[], day(0), &bad), Err(TagError::InvalidParam { .. })));
    let bad = TagWeightParams { default_half_life_days: 0.0, ..TagWeightParams::default() };
    assert!(matches!(update_member_tags(&[], &[], day(0), &bad), Err(TagError::InvalidParam { .. })));
    // Empty input is fine.
    let empty = update_member_tags(&[], &[], day(0), &p).unwrap();
    assert!(empty.tags.is_empty() && empty.changes.is_empty());
}

#[test]
fn params_deserialize_with_defaults() {
    let p: TagWeightParams =
        serde_json::from_str(r#"{"floor": 0.2, "categories": {"interest": {"half_life_days": 14}}}"#).unwrap();
    assert_eq!(p.floor, 0.2);
    assert_eq!(p.default_half_life_days, 90.0);
    assert_eq!(p.half_life_days("interest", TagSource::Keyword), Some(14.0));
    assert_eq!(p.half_life_days("behaviour", TagSource::Rule), Some(90.0));
    assert_eq!(p.half_life_days("interest", TagSource::Manual), None);
}

/// Throughput of the weight update: 200,000 members × 5 stored tags, 200,000 observations.
/// `cargo test --release -p huiyuan-analytics tags::weight::tests::bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_update() {
    let cats = ["basic", "behaviour", "interest", "value", "lifecycle"];
    let prev: Vec<MemberTag> = (0..200_000i64)
        .flat_map(|m| {
            cats.iter().enumerate().map(move |(i, c)| MemberTag {
                member_id: m,
                tag: format!("{c}_{}", (m + i as i64) % 7),
                category: (*c).into(),
                source: TagSource::Rule,
                weight: 0.8,
                support_weight: 0.8,
                last_supported_at: day(m % 30),
                first_tagged_at: day(0),
                reason: "x".into(),
            })
        })
        .collect();
    let observations: Vec<TagObservation> =
        (0..200_000i64).map(|m| obs(m, &format!("value_{}", (m + 3) % 7), "value", TagSource::Rule, 40, 1.0)).collect();
    let start = std::time::Instant::now();
    let up = update_member_tags(&prev, &observations, day(40), &TagWeightParams::default()).unwrap();
    println!(
        "{} stored tags + {} observations: {:.0} ms → {} tags, {} changes",
        prev.len(),
        observations.len(),
        start.elapsed().as_secs_f64() * 1e3,
        up.tags.len(),
        up.changes.len()
    );
}
