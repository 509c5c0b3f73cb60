use proptest::prelude::*;

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("test time")
}

fn example() -> RiskPolicy {
    RiskPolicy::from_toml(EXAMPLE_TOML).expect("example policy is valid")
}

fn earn(at: &str, points: i64) -> Activity {
    Activity { at: t(at), kind: ActivityKind::Earn, points }
}

fn redeem(at: &str, points: i64) -> Activity {
    Activity { at: t(at), kind: ActivityKind::Redeem, points }
}

/// `n` earn events of `points` each, one a minute, the last at `last`.
fn burst(n: i64, last: &str, points: i64) -> Vec<Activity> {
    (0..n).map(|i| Activity { at: t(last) - Duration::minutes(i), kind: ActivityKind::Earn, points }).collect()
}

fn rules(c: &[Crossing]) -> Vec<&str> {
    c.iter().map(|c| c.rule.as_str()).collect()
}

// ---------------------------------------------------------------------------------------------------------
// The policy
// ---------------------------------------------------------------------------------------------------------

#[test]
fn the_example_policy_parses_and_round_trips() {
    let p = example();
    assert_eq!(p.time_zone, chrono_tz::Asia::Shanghai);
    assert_eq!(
        p.limits.iter().map(|l| (l.id.as_str(), l.activity, l.measure, l.window, l.max)).collect::<Vec<_>>(),
        vec![
            ("earn_events_per_hour", ActivityKind::Earn, Measure::Events, Span::Sliding { minutes: 60 }, 30),
            ("redemptions_per_day", ActivityKind::Redeem, Measure::Events, Span::LocalDay, 5),
            ("points_earned_per_day", ActivityKind::Earn, Measure::Points, Span::LocalDay, 5000),
        ]
    );
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(RiskPolicy::from_json(&json).unwrap(), p);
    // Every limit is optional: an empty policy is valid and flags nothing.
    let empty = RiskPolicy::from_json("{}").unwrap();
    assert_eq!(empty, RiskPolicy::default());
    assert!(crossed(&empty, &burst(1000, "2026-03-02T02:00:00Z", 100), &earn("2026-03-02T02:00:00Z", 100)).is_empty());
}

#[test]
fn policy_errors_name_the_field() {
    let invalid = |f: &dyn Fn(&mut RiskPolicy)| {
        let mut p = example();
        f(&mut p);
        let e = p.validate().unwrap_err();
        (e.field, e.code)
    };
    assert_eq!(invalid(&|p| p.limits[1].id = "Per Day".into()), ("limits[1].id".into(), "invalid_code"));
    assert_eq!(invalid(&|p| p.limits[2].id = "redemptions_per_day".into()), ("limits[2].id".into(), "duplicate"));
    assert_eq!(invalid(&|p| p.limits[0].max = 0), ("limits[0].max".into(), "out_of_range"));
    assert_eq!(
        invalid(&|p| p.limits[0].window = Span::Sliding { minutes: 0 }),
        ("limits[0].window.minutes".into(), "out_of_range")
    );
    assert_eq!(
        invalid(&|p| p.limits[0].window = Span::Sliding { minutes: MAX_WINDOW_MINUTES + 1 }),
        ("limits[0].window.minutes".into(), "out_of_range")
    );
    assert!(matches!(RiskPolicy::from_toml("time_zone = \"Mars/Olympus\""), Err(RiskPolicyError::Parse(_))));
    let unknown = EXAMPLE_TOML.replace("max = 30", "max = 30\nmaximum = 31");
    assert!(matches!(RiskPolicy::from_toml(&unknown), Err(RiskPolicyError::Parse(_))));
    let bad_window = EXAMPLE_TOML.replace("{ type = \"local_day\" }", "{ type = \"local_week\" }");
    assert!(matches!(RiskPolicy::from_toml(&bad_window), Err(RiskPolicyError::Parse(_))));
}

// ---------------------------------------------------------------------------------------------------------
// Windows
// ---------------------------------------------------------------------------------------------------------

#[test]
fn the_sliding_hour_excludes_an_event_exactly_sixty_minutes_earlier() {
    let p = example();
    let now = "2026-03-02T02:00:00Z";
    // 29 earlier events inside the hour, plus the new one: 30, at the limit, not over it.
    let mut recent = burst(29, "2026-03-02T01:59:00Z", 1);
    assert!(crossed(&p, &recent, &earn(now, 1)).is_empty());
    // One more exactly 60 minutes before `now`: outside the window, still 30.
    recent.push(earn("2026-03-02T01:00:00Z", 1));
    assert!(crossed(&p, &recent, &earn(now, 1)).is_empty());
    // One at 59:59 before `now` is inside: 31.
    recent.push(earn("2026-03-02T01:00:01Z", 1));
    let c = crossed(&p, &recent, &earn(now, 1));
    assert_eq!(
        c,
        vec![Crossing {
            rule: "earn_events_per_hour".into(),
            observed: 31,
            limit: 30,
            detail: "31 earn events in the last hour, limit 30".into(),
        }]
    );
}

#[test]
fn activity_after_now_and_of_the_other_kind_does_not_count() {
    let p = example();
    let now = "2026-03-02T02:00:00Z";
    let mut recent = burst(29, now, 1);
    recent.push(earn("2026-03-02T02:00:01Z", 1)); // a clock ahead of ours
    recent.extend((0..10).map(|i| Activity {
        at: t(now) - Duration::minutes(i),
        kind: ActivityKind::Redeem,
        points: 10,
    }));
    // 29 earns at or before now plus the new one: 30, not crossed. (The burst's last event is at `now`
    // itself, which is inside the window.)
    assert!(rules(&crossed(&p, &recent, &earn(now, 1))).is_empty());
}

#[test]
fn local_days_start_at_local_midnight() {
    let p = example();
    // 5 redemptions on local 2 March: the first at 00:00 local (16:00 UTC on 1 March).
    let recent: Vec<Activity> = [
        "2026-03-01T16:00:00Z",
        "2026-03-02T01:00:00Z",
        "2026-03-02T03:00:00Z",
        "2026-03-02T08:00:00Z",
        "2026-03-02T12:00:00Z",
    ]
    .iter()
    .map(|at| redeem(at, 100))
    .collect();
    // A sixth at local 23:59:59 crosses.
    let c = crossed(&p, &recent, &redeem("2026-03-02T15:59:59Z", 100));
    assert_eq!(rules(&c), vec!["redemptions_per_day"]);
    assert_eq!(c[0].detail, "6 redemptions on 2026-03-02 (Asia/Shanghai day), limit 5");
    // At local midnight of 3 March the count starts again.
    assert!(crossed(&p, &recent, &redeem("2026-03-02T16:00:00Z", 100)).is_empty());
    // An event one second before local midnight of 2 March is on 1 March: only 5 on the 2nd with it.
    let mut shifted = recent.clone();
    shifted[0] = redeem("2026-03-01T15:59:59Z", 100);
    assert!(crossed(&p, &shifted, &redeem("2026-03-02T15:00:00Z", 100)).is_empty());
    // In UTC, the same events fall on two days.
    let utc = RiskPolicy { time_zone: chrono_tz::UTC, ..p };
    assert!(crossed(&utc, &recent, &redeem("2026-03-02T15:59:59Z", 100)).is_empty());
}

#[test]
fn points_per_local_day_count_the_new_points() {
    let p = example();
    let recent = vec![earn("2026-03-01T17:00:00Z", 3000), earn("2026-03-02T01:00:00Z", 1999)];
    // 4999 + 1 = 5000: at the limit.
    assert!(crossed(&p, &recent, &earn("2026-03-02T02:00:00Z", 1)).is_empty());
    // 4999 + 2 = 5001: over.
    let c = crossed(&p, &recent, &earn("2026-03-02T02:00:00Z", 2));
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].observed, c[0].limit), (5001, 5000));
    assert_eq!(c[0].detail, "5001 points earned on 2026-03-02 (Asia/Shanghai day), limit 5000");
    // An earn of no points cannot cross a points limit (though it still counts as an event).
    assert!(crossed(&p, &[earn("2026-03-02T01:00:00Z", 9000)], &earn("2026-03-02T02:00:00Z", 0)).is_empty());
    // Negative points count as none.
    let c = crossed(
        &p,
        &[earn("2026-03-02T01:00:00Z", -4000), earn("2026-03-02T01:30:00Z", 4000)],
        &earn("2026-03-02T02:00:00Z", 1001),
    );
    assert_eq!(c[0].observed, 5001);
}

#[test]
fn several_limits_can_be_crossed_at_once() {
    let p = example();
    // 40 earns of 200 points in the last 40 minutes (local 2 March): 8000 points and 40 events.
    let recent = burst(40, "2026-03-02T01:59:00Z", 200);
    let c = crossed(&p, &recent, &earn("2026-03-02T02:00:00Z", 200));
    assert_eq!(
        c.iter().map(|c| (c.rule.as_str(), c.observed, c.detail.as_str())).collect::<Vec<_>>(),
        vec![
            ("earn_events_per_hour", 41, "41 earn events in the last hour, limit 30"),
            ("points_earned_per_day", 8200, "8200 points earned on 2026-03-02 (Asia/Shanghai day), limit 5000"),
        ]
    );
    // A redemption by the same member judges only the redemption limits.
    assert!(crossed(&p, &recent, &redeem("2026-03-02T02:00:00Z", 100)).is_empty());
}

#[test]
fn window_words_follow_the_span() {
    let limit = |minutes, activity, measure| VelocityLimit {
        id: "x".into(),
        description: String::new(),
        activity,
        measure,
        window: Span::Sliding { minutes },
        max: 1,
    };
    let detail = |l: VelocityLimit, new: Activity| {
        let p = RiskPolicy { limits: vec![l], ..RiskPolicy::default() };
        crossed(&p, &[Activity { at: new.at - Duration::seconds(30), ..new }], &new).remove(0).detail
    };
    let now = "2026-03-02T02:00:00Z";
    assert_eq!(
        detail(limit(10, ActivityKind::Redeem, Measure::Points), redeem(now, 600)),
        "1200 points redeemed in the last 10 minutes, limit 1"
    );
    assert_eq!(
        detail(limit(1440, ActivityKind::Redeem, Measure::Events), redeem(now, 1)),
        "2 redemptions in the last 24 hours, limit 1"
    );
    assert_eq!(
        detail(limit(1, ActivityKind::Earn, Measure::Events), earn(now, 1)),
        "2 earn events in the last minute, limit 1"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------------------

#[test]
fn flags_block_until_cleared_by_an_operator_with_a_note() {
    let p = example();
    let at = t("2026-03-02T02:00:00Z");
    let c = crossed(&p, &burst(40, "2026-03-02T01:59:00Z", 200), &earn("2026-03-02T02:00:00Z", 200));
    let mut flags = new_flags(&c, &[], at);
    assert_eq!(flags.len(), 2);
    assert_eq!(
        flags[0],
        RiskFlag {
            rule: "earn_events_per_hour".into(),
            detail: "41 earn events in the last hour, limit 30".into(),
            flagged_at: at,
            cleared_at: None,
            cleared_by: None,
            note: None,
        }
    );
    assert!(is_blocked(&flags));
    assert_eq!(block_reason(&flags), Some(BlockReason::RiskFlag { rule: "earn_events_per_hour".into() }));

    // The burst goes on: no second flag for a rule that is still open.
    let later = crossed(&p, &burst(41, "2026-03-02T02:00:00Z", 200), &earn("2026-03-02T02:01:00Z", 200));
    assert_eq!(later.len(), 2);
    assert!(new_flags(&later, &flags, t("2026-03-02T02:01:00Z")).is_empty());

    // Clearing needs an operator and a note.
    let e = clear(&flags[0], " ", "checked", at).unwrap_err();
    assert_eq!(e, ClearRefusal::Invalid(Invalid::missing("operator")));
    assert_eq!(e.to_string(), "operator (missing_field): `operator` is required");
    let e = clear(&flags[0], "ops.li", "", at).unwrap_err();
    assert_eq!(e, ClearRefusal::Invalid(Invalid::missing("note")));
    let cleared_at = t("2026-03-02T09:00:00Z");
    flags[0] = clear(&flags[0], "ops.li", " a live-stream giveaway, not a script ", cleared_at).unwrap();
    assert_eq!(flags[0].cleared_at, Some(cleared_at));
    assert_eq!(flags[0].cleared_by.as_deref(), Some("ops.li"));
    assert_eq!(flags[0].note.as_deref(), Some("a live-stream giveaway, not a script"));
    assert_eq!(flags[0].detail, "41 earn events in the last hour, limit 30", "the record stays");
    // Still blocked by the other flag.
    assert!(is_blocked(&flags));
    assert_eq!(block_reason(&flags), Some(BlockReason::RiskFlag { rule: "points_earned_per_day".into() }));
    flags[1] = clear(&flags[1], "ops.li", "same giveaway", cleared_at).unwrap();
    assert!(!is_blocked(&flags));
    assert_eq!(block_reason(&flags), None);

    // Clearing twice is refused; a crossing after clearing raises a new flag.
    let again = clear(&flags[0], "ops.wang", "again", cleared_at).unwrap_err();
    assert_eq!(again, ClearRefusal::AlreadyCleared { cleared_at, cleared_by: "ops.li".into() });
    assert_eq!(again.code(), "already_cleared");
    let fresh = new_flags(&later, &flags, t("2026-03-02T10:00:00Z"));
    assert_eq!(rules(&later), fresh.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>());
    // A clearing clock behind the flag's never clears before the flag was raised.
    let f = clear(&fresh[0], "ops.li", "ok", t("2026-03-02T09:59:00Z")).unwrap();
    assert_eq!(f.cleared_at, Some(t("2026-03-02T10:00:00Z")));
}

#[test]
fn the_earliest_open_flag_is_the_block_reason() {
    let flag = |rule: &str, at: &str| RiskFlag {
        rule: rule.into(),
        detail: String::new(),
        flagged_at: t(at),
        cleared_at: None,
        cleared_by: None,
        note: None,
    };
    let flags = vec![flag("b", "2026-03-02T00:00:00Z"), flag("a", "2026-03-01T00:00:00Z")];
    assert_eq!(block_reason(&flags), Some(BlockReason::RiskFlag { rule: "a".into() }));
    let json = serde_json::to_value(&flags[0]).unwrap();
    assert_eq!(json["cleared_at"], serde_json::Value::Null);
    assert_eq!(serde_json::from_value::<RiskFlag>(json).unwrap(), flags[0]);
}

proptest! {
    /// The events limit is crossed exactly when the events strictly inside the window, plus the new one,
    /// exceed the maximum: whatever the spacing, however many events lie outside.
    #[test]
    fn a_sliding_limit_counts_exactly_the_window(
        offsets in proptest::collection::vec(0..7_200i64, 0..80),
        max in 1..40i64,
        minutes in 1..120u32,
    ) {
        let p = RiskPolicy {
            limits: vec![VelocityLimit {
                id: "burst".into(),
                description: String::new(),
                activity: ActivityKind::Earn,
                measure: Measure::Events,
                window: Span::Sliding { minutes },
                max,
            }],
            ..RiskPolicy::default()
        };
        let now = t("2026-03-02T02:00:00Z");
        let recent: Vec<Activity> = offsets
            .iter()
            .map(|s| Activity { at: now - Duration::seconds(*s), kind: ActivityKind::Earn, points: 1 })
            .collect();
        let inside = offsets.iter().filter(|s| **s < i64::from(minutes) * 60).count() as i64 + 1;
        let c = crossed(&p, &recent, &Activity { at: now, kind: ActivityKind::Earn, points: 1 });
        prop_assert_eq!(c.len(), usize::from(inside > max));
        if let Some(c) = c.first() {
            prop_assert_eq!(c.observed, inside);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Earning read off the ledger
// ---------------------------------------------------------------------------------------------------------

mod from_the_ledger {
    use super::*;
    use crate::loyalty::ledger::{Config, Ledger, Source, Wallet};

    fn ledger() -> Ledger {
        Ledger::new(Config::default())
    }

    fn line(order_id: i64, line_no: i32) -> Source {
        Source::OrderLine { order_id, line_no }
    }

    fn rule(id: &str) -> Source {
        Source::Rule { rule_id: id.into(), version: 1 }
    }

    #[test]
    fn an_order_is_one_earn_event_whatever_its_lines_and_maturing_is_not_earning() {
        let mut l = ledger();
        let at = t("2026-03-02T02:00:00Z");
        let mut entries = l.earn("order:7:1:points", Wallet::Points, 100, line(7, 1), at).unwrap().entries;
        entries.extend(l.earn("order:7:2:points", Wallet::Points, 50, line(7, 2), at).unwrap().entries);
        entries.extend(l.earn("order:7:1:growth", Wallet::Growth, 100, line(7, 1), at).unwrap().entries);
        entries.extend(l.mature(at + Duration::days(8)).unwrap());
        entries.extend(l.earn("checkin:2026-03-02:points", Wallet::Points, 5, rule("check_in"), at).unwrap().entries);
        // Points given back by a reward and operator adjustments are not earning.
        let reward = Source::Reward { reward_id: "mug".into() };
        entries.extend(l.earn("cancel:3", Wallet::Points, 80, reward, at).unwrap().entries);
        let a = earn_activities(&entries);
        assert_eq!(
            a.iter().map(|(s, a)| (s.as_str(), a.points)).collect::<Vec<_>>(),
            vec![("order:7", 150), ("checkin:2026-03-02:points", 5)]
        );
        assert!(a.iter().all(|(_, a)| a.at == at && a.kind == ActivityKind::Earn));
    }

    fn three_an_hour() -> RiskPolicy {
        RiskPolicy::from_toml(
            r#"
            [[limits]]
            id = "fast"
            activity = "earn"
            measure = "events"
            window = { type = "sliding", minutes = 60 }
            max = 3
            "#,
        )
        .unwrap()
    }

    #[test]
    fn the_fourth_earn_in_an_hour_crosses_and_a_replay_or_late_history_does_not() {
        let p = three_an_hour();
        let now = t("2026-03-02T02:00:00Z");
        let mut l = ledger();
        let mut history = Vec::new();
        for i in 0..3 {
            let at = now - Duration::minutes(10 * i);
            history.extend(l.earn(&format!("share:{i}:points"), Wallet::Points, 5, rule("share"), at).unwrap().entries);
        }
        let new = l.earn("share:9:points", Wallet::Points, 5, rule("share"), now).unwrap().entries;
        let c = judge_earning(&p, &history, &new, now);
        assert_eq!(rules(&c), vec!["fast"]);
        assert_eq!(c[0].observed, 4);
        // The same entries again (a task settled twice) are not a new event.
        let mut all = history.clone();
        all.extend(new.iter().cloned());
        assert!(judge_earning(&p, &all, &new, now).is_empty());
        // Four old events loaded today (an import) flag nothing.
        let mut old = ledger();
        let mut late = Vec::new();
        for i in 0..4 {
            let at = now - Duration::days(30) + Duration::minutes(i);
            late.extend(old.earn(&format!("share:{i}:points"), Wallet::Points, 5, rule("share"), at).unwrap().entries);
        }
        assert!(judge_earning(&p, &[], &late, now).is_empty());
        // Four new ones in one operation: judged one after another.
        let mut burst = ledger();
        let mut fresh = Vec::new();
        for i in 0..4 {
            fresh.extend(burst.earn(&format!("s:{i}:points"), Wallet::Points, 5, rule("share"), now).unwrap().entries);
        }
        assert_eq!(rules(&judge_earning(&p, &[], &fresh, now)), vec!["fast"]);
        assert!(judge_earning(&RiskPolicy::default(), &[], &fresh, now).is_empty());
    }

    #[test]
    fn earning_that_arrives_late_counts_in_the_windows_of_what_came_after_it() {
        let p = three_an_hour();
        let now = t("2026-03-02T02:00:00Z");
        let share = |l: &mut Ledger, i: i64, at: DateTime<Utc>| {
            l.earn(&format!("share:{i}:points"), Wallet::Points, 5, rule("share"), at).unwrap().entries
        };
        let mut l = ledger();
        let mut history = Vec::new();
        for i in 1..=3 {
            history.extend(share(&mut l, i, now - Duration::minutes(6 - 2 * i)));
        }
        // Sent late: ten minutes ago, before the three stored. Its own window holds only itself, but the
        // window of the latest holds all four.
        let late = share(&mut l, 9, now - Duration::minutes(10));
        let c = judge_earning(&p, &history, &late, now);
        assert_eq!(rules(&c), vec!["fast"]);
        assert_eq!(c[0].observed, 4);
        // Already over the limit without it: nothing new to report.
        let mut over = history.clone();
        over.extend(share(&mut l, 4, now));
        let late = share(&mut l, 10, now - Duration::minutes(50));
        assert!(judge_earning(&p, &over, &late, now).is_empty());
    }
}
