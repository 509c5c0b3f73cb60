use proptest::prelude::*;

use super::*;

/// Times in tests are written in the business time zone (`+08:00`).
fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("test time")
}

fn g(at: &str, amount: i64) -> Growth {
    Growth { at: t(at), amount }
}

fn example() -> TierProgram {
    TierProgram::from_toml(EXAMPLE_TOML).expect("example program")
}

/// `(kind, from, to)` of each change, for compact assertions.
fn path(changes: &[TierChange]) -> Vec<(ChangeKind, &str, &str)> {
    changes.iter().map(|c| (c.kind, c.from.as_str(), c.to.as_str())).collect()
}

/// A member enrolled at 2025-01-01 with the given history, advanced to each instant in turn.
fn live(p: &TierProgram, history: &[Growth], steps: &[&str]) -> (TierState, Vec<TierChange>) {
    let (mut state, mut changes) = p.enroll(&[], t("2025-01-01T00:00:00+08:00")).unwrap();
    for s in steps {
        let now = t(s);
        let known: Vec<Growth> = history.iter().copied().filter(|m| m.at <= now).collect();
        changes.extend(p.advance(&mut state, &known, now).unwrap());
    }
    (state, changes)
}

use ChangeKind::*;

// ---------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------

#[test]
fn example_program_parses_and_round_trips_through_json() {
    let p = example();
    assert_eq!(p.version, 1);
    assert_eq!((p.window_months, p.grace_days), (12, 30));
    assert_eq!(p.reevaluation, Schedule { every_months: 1, day: 1 });
    let tiers: Vec<(&str, &str, i64, i64)> =
        p.tiers.iter().map(|t| (t.code.as_str(), t.name.as_str(), t.threshold, t.keep)).collect();
    assert_eq!(
        tiers,
        vec![
            ("regular", "普通", 0, 0),
            ("silver", "银卡", 2000, 1000),
            ("gold", "金卡", 5000, 3000),
            ("diamond", "钻石", 20_000, 15_000)
        ]
    );
    assert_eq!(p.tiers[0].benefits, Benefits::default());
    let gold = &p.tier("gold").unwrap().benefits;
    assert_eq!((gold.points_multiplier_bp, gold.discount_bp, gold.free_shipping), (15_000, 500, true));
    assert_eq!(gold.birthday_coupon.as_deref(), Some("birthday_gold"));
    assert!(p.tier("diamond").unwrap().benefits.exclusive_service);
    let plus = p.card("plus").unwrap();
    assert_eq!((plus.price, plus.validity), (9900, Validity::Months(12)));
    assert_eq!(p.rank("gold"), Some(2));

    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(TierProgram::from_json(&json).unwrap(), p);
}

#[test]
fn defaults_apply_when_omitted() {
    let p =
        TierProgram::from_toml("version = 2\n[[tiers]]\ncode = \"base\"\nname = \"基础\"\nthreshold = 0\nkeep = 0\n")
            .unwrap();
    assert_eq!((p.window_months, p.grace_days, p.time_zone), (12, 0, chrono_tz::Asia::Shanghai));
    assert_eq!(p.reevaluation, Schedule { every_months: 1, day: 1 });
    assert!(p.cards.is_empty());
}

/// Replace `from` with `to` in the example and return the validation error's field.
fn field_of(from: &str, to: &str) -> String {
    assert!(EXAMPLE_TOML.contains(from), "{from}");
    match TierProgram::from_toml(&EXAMPLE_TOML.replacen(from, to, 1)) {
        Err(TierProgramError::Invalid(e)) => e.field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn validation_errors_name_the_field() {
    assert_eq!(field_of("version = 1", "version = 0"), "version");
    assert_eq!(field_of("window_months = 12", "window_months = 0"), "window_months");
    assert_eq!(field_of("grace_days = 30", "grace_days = 400"), "grace_days");
    assert_eq!(field_of("every_months = 1", "every_months = 5"), "reevaluation.every_months");
    assert_eq!(field_of("day = 1", "day = 29"), "reevaluation.day");
    // The lowest tier starts at 0; thresholds strictly increase.
    assert_eq!(field_of("threshold = 0", "threshold = 10"), "tiers[0].threshold");
    assert_eq!(field_of("threshold = 5000", "threshold = 2000"), "tiers[2].threshold");
    assert_eq!(field_of("threshold = 20000", "threshold = 4999"), "tiers[3].threshold");
    // Keep levels: at most the threshold, never below the tier beneath's.
    assert_eq!(field_of("keep = 1000", "keep = 2001"), "tiers[1].keep");
    assert_eq!(field_of("keep = 3000", "keep = 999"), "tiers[2].keep");
    assert_eq!(field_of("keep = 1000", "keep = -1"), "tiers[1].keep");
    assert_eq!(field_of("code = \"gold\"", "code = \"silver\""), "tiers[2].code");
    assert_eq!(field_of("code = \"gold\"", "code = \"Gold\""), "tiers[2].code");
    assert_eq!(field_of("name = \"金卡\"", "name = \"银卡\""), "tiers[2].name");
    assert_eq!(field_of("name = \"金卡\"", "name = \" \""), "tiers[2].name");
    assert_eq!(field_of("discount_bp = 200", "discount_bp = 10000"), "tiers[1].benefits.discount_bp");
    assert_eq!(
        field_of("points_multiplier_bp = 15000   # ×1.5", "points_multiplier_bp = 1000001"),
        "tiers[2].benefits.points_multiplier_bp"
    );
    assert_eq!(
        field_of("birthday_coupon = \"birthday_gold\"", "birthday_coupon = \"birthday gold\""),
        "tiers[2].benefits.birthday_coupon"
    );
    assert_eq!(field_of("code = \"plus\"", "code = \"gold\""), "cards[0].code");
    assert_eq!(field_of("price = 9900", "price = -1"), "cards[0].price");
    assert_eq!(field_of("validity = { months = 12 }", "validity = { months = 0 }"), "cards[0].validity.months");
    assert_eq!(field_of("validity = { months = 12 }", "validity = { days = 4000 }"), "cards[0].validity.days");
    assert_eq!(field_of("discount_bp = 300", "discount_bp = -5"), "cards[0].benefits.discount_bp");

    let empty = TierProgram { tiers: Vec::new(), ..example() };
    assert_eq!(empty.validate().unwrap_err().field, "tiers");
}

#[test]
fn malformed_programs_do_not_parse() {
    let parse = |text: &str| matches!(TierProgram::from_toml(text), Err(TierProgramError::Parse(_)));
    assert!(parse(&EXAMPLE_TOML.replacen("grace_days = 30", "grace = 30", 1)), "unknown field");
    assert!(parse(&EXAMPLE_TOML.replacen("Asia/Shanghai", "Asia/Atlantis", 1)), "unknown time zone");
    assert!(parse(&EXAMPLE_TOML.replacen("{ months = 12 }", "{ years = 1 }", 1)), "unknown validity unit");
    assert!(parse(&EXAMPLE_TOML.replacen("free_shipping = true", "free_shipping = \"yes\"", 1)));
    assert!(matches!(TierProgram::from_json("{\"version\": 1}"), Err(TierProgramError::Parse(_))), "tiers required");
}

#[test]
fn reevaluations_run_at_local_midnight_on_schedule() {
    let p = example();
    assert_eq!(p.next_reevaluation(t("2026-01-15T12:00:00+08:00")), Some(t("2026-02-01T00:00:00+08:00")));
    // Strictly after: a re-evaluation instant itself gives the next one.
    assert_eq!(p.next_reevaluation(t("2026-02-01T00:00:00+08:00")), Some(t("2026-03-01T00:00:00+08:00")));
    assert_eq!(p.next_reevaluation(t("2026-12-31T23:59:59+08:00")), Some(t("2027-01-01T00:00:00+08:00")));
    // 2026-01-31T16:30Z is already February 1st in Shanghai.
    assert_eq!(p.next_reevaluation(t("2026-01-31T16:30:00Z")), Some(t("2026-03-01T00:00:00+08:00")));
    let q = TierProgram { reevaluation: Schedule { every_months: 3, day: 15 }, ..example() };
    assert_eq!(q.next_reevaluation(t("2026-02-20T00:00:00+08:00")), Some(t("2026-04-15T00:00:00+08:00")));
    assert_eq!(q.next_reevaluation(t("2026-04-15T00:00:00+08:00")), Some(t("2026-07-15T00:00:00+08:00")));
    assert_eq!(q.next_reevaluation(t("2026-10-16T00:00:00+08:00")), Some(t("2027-01-15T00:00:00+08:00")));
    let y = TierProgram { reevaluation: Schedule { every_months: 12, day: 1 }, ..example() };
    assert_eq!(y.next_reevaluation(t("2026-01-01T00:00:01+08:00")), Some(t("2027-01-01T00:00:00+08:00")));
}

// ---------------------------------------------------------------------------------------------------------
// Window growth
// ---------------------------------------------------------------------------------------------------------

#[test]
fn rolling_window_drops_old_growth_at_the_anniversary() {
    let p = example();
    let h = [g("2025-03-15T10:00:00+08:00", 1500), g("2025-09-01T00:00:00+08:00", 700)];
    assert_eq!(p.window_growth(&h, t("2025-03-15T09:59:59+08:00")), 0);
    assert_eq!(p.window_growth(&h, t("2025-03-15T10:00:00+08:00")), 1500, "counts from its own instant");
    assert_eq!(p.window_growth(&h, t("2026-03-15T09:59:59+08:00")), 2200);
    assert_eq!(p.window_growth(&h, t("2026-03-15T10:00:00+08:00")), 700, "gone 12 months later");
    assert_eq!(p.window_growth(&h, t("2026-09-01T00:00:00+08:00")), 0);
    // A one-month window clamps to the month's end: growth of 31 March leaves on 30 April.
    let m = TierProgram { window_months: 1, ..example() };
    let h = [g("2025-03-31T20:00:00+08:00", 100)];
    assert_eq!(m.window_growth(&h, t("2025-04-30T19:59:59+08:00")), 100);
    assert_eq!(m.window_growth(&h, t("2025-04-30T20:00:00+08:00")), 0);
}

#[test]
fn refunds_lower_window_growth_and_old_refunds_leaving_raise_it() {
    let p = example();
    let h = [
        g("2025-02-01T12:00:00+08:00", 6000),
        g("2025-02-20T12:00:00+08:00", -3500),
        g("2025-06-01T12:00:00+08:00", 1000),
    ];
    assert_eq!(p.window_growth(&h, t("2025-02-10T00:00:00+08:00")), 6000);
    assert_eq!(p.window_growth(&h, t("2025-03-01T00:00:00+08:00")), 2500);
    assert_eq!(p.window_growth(&h, t("2026-02-01T12:00:00+08:00")), -2500, "the refund outlives its order");
    assert_eq!(p.window_growth(&h, t("2026-02-20T12:00:00+08:00")), 1000);
}

// ---------------------------------------------------------------------------------------------------------
// Upgrades
// ---------------------------------------------------------------------------------------------------------

#[test]
fn upgrade_happens_at_the_movement_that_reaches_the_threshold() {
    let p = example();
    let h = [g("2025-02-10T09:00:00+08:00", 1500), g("2025-03-03T10:30:00+08:00", 600)];
    let (state, changes) = live(&p, &h, &["2025-02-10T09:00:00+08:00", "2025-03-03T10:30:00+08:00"]);
    assert_eq!(path(&changes), vec![(Enrolled, "regular", "regular"), (Upgraded, "regular", "silver")]);
    let up = &changes[1];
    assert_eq!((up.at, up.growth, up.program_version), (t("2025-03-03T10:30:00+08:00"), 2100, 1));
    assert_eq!(up.reason, "growth 2,100 in the 12 months to 2025-03-03 10:30 reached 银卡 threshold 2,000");
    assert_eq!(changes[0].reason, "enrolled at 普通");
    assert_eq!(
        state,
        TierState {
            tier: "silver".into(),
            since: t("2025-03-03T10:30:00+08:00"),
            grace: None,
            as_of: t("2025-03-03T10:30:00+08:00")
        }
    );
}

#[test]
fn upgrade_jumps_several_tiers_at_once() {
    let p = example();
    let h = [g("2025-04-01T15:20:00+08:00", 25_230)];
    let (state, changes) = replay(&p, &h, t("2025-01-01T00:00:00+08:00"), t("2025-04-02T00:00:00+08:00")).unwrap();
    assert_eq!(path(&changes), vec![(Enrolled, "regular", "regular"), (Upgraded, "regular", "diamond")]);
    assert_eq!(changes[1].reason, "growth 25,230 in the 12 months to 2025-04-01 15:20 reached 钻石 threshold 20,000");
    assert_eq!(state.tier, "diamond");
}

#[test]
fn upgrade_comes_late_when_an_old_refund_leaves_the_window() {
    let p = example();
    let h = [g("2025-02-01T12:00:00+08:00", -1000), g("2025-03-01T12:00:00+08:00", 2500)];
    let (_, changes) = replay(&p, &h, t("2025-01-01T00:00:00+08:00"), t("2026-03-01T00:00:00+08:00")).unwrap();
    assert_eq!(path(&changes)[1..], [(Upgraded, "regular", "silver")]);
    assert_eq!((changes[1].at, changes[1].growth), (t("2026-02-01T12:00:00+08:00"), 2500));
}

#[test]
fn enrolling_with_history_lands_on_the_tier_it_justifies() {
    let p = example();
    let h = [g("2024-11-11T20:00:00+08:00", 5230)];
    let (state, changes) = p.enroll(&h, t("2025-01-01T00:00:00+08:00")).unwrap();
    assert_eq!(path(&changes), vec![(Enrolled, "regular", "regular"), (Upgraded, "regular", "gold")]);
    assert_eq!(changes[1].reason, "growth 5,230 in the 12 months to 2025-01-01 reached 金卡 threshold 5,000");
    assert_eq!(state.since, t("2025-01-01T00:00:00+08:00"));
}

// ---------------------------------------------------------------------------------------------------------
// Re-evaluation, keep level and grace
// ---------------------------------------------------------------------------------------------------------

#[test]
fn keep_level_holds_the_tier_below_its_threshold() {
    let p = example();
    // Silver from March 2025; by April 2026 only 1,200 is in the window: below 2,000 but at the 1,000 keep level.
    let h = [g("2025-03-15T10:00:00+08:00", 2000), g("2026-02-10T10:00:00+08:00", 1200)];
    let (state, changes) = replay(&p, &h, t("2025-01-01T00:00:00+08:00"), t("2026-04-01T00:00:00+08:00")).unwrap();
    assert_eq!(path(&changes), vec![(Enrolled, "regular", "regular"), (Upgraded, "regular", "silver")]);
    assert_eq!(p.window_growth(&h, t("2026-04-01T00:00:00+08:00")), 1200);
    assert_eq!((state.tier.as_str(), state.grace), ("silver", None));
    assert_eq!(state.as_of, t("2026-04-01T00:00:00+08:00"));
}

#[test]
fn grace_then_downgrade_by_exactly_one_tier() {
    let p = example();
    let h = [g("2025-01-10T10:00:00+08:00", 25_000)];
    // Live: a growth write, then the scheduler every day at 00:05 would see the same as these visits.
    let (state, changes) = live(
        &p,
        &h,
        &[
            "2025-01-10T10:00:00+08:00",
            "2026-02-01T00:05:00+08:00",
            "2026-03-01T00:05:00+08:00",
            "2026-03-03T00:05:00+08:00",
        ],
    );
    assert_eq!(
        path(&changes),
        vec![
            (Enrolled, "regular", "regular"),
            (Upgraded, "regular", "diamond"),
            (GraceStarted, "diamond", "diamond"),
            (Downgraded, "diamond", "gold"),
        ]
    );
    let grace = &changes[2];
    assert_eq!(grace.at, t("2026-02-01T00:00:00+08:00"), "at the scheduled instant, not when the job ran");
    assert_eq!(grace.grace_ends_at, Some(t("2026-03-03T00:00:00+08:00")));
    assert_eq!(
        grace.reason,
        "growth 0 in the 12 months to 2026-02-01 below 钻石 keep level 15,000: 30 days of grace until 2026-03-03"
    );
    let down = &changes[3];
    assert_eq!((down.at, down.growth), (t("2026-03-03T00:00:00+08:00"), 0));
    assert_eq!(
        down.reason,
        "growth 0 in the 12 months to 2026-03-03 below 钻石 keep level 15,000 after 30 days of grace"
    );
    // Growth 0 justifies 普通, but one grace costs one tier.
    assert_eq!((state.tier.as_str(), state.since, state.grace), ("gold", t("2026-03-03T00:00:00+08:00"), None));
}

#[test]
fn each_later_reevaluation_costs_at_most_one_more_tier() {
    let p = example();
    let h = [g("2025-01-10T10:00:00+08:00", 25_000)];
    let (state, changes) = replay(&p, &h, t("2025-01-01T00:00:00+08:00"), t("2026-08-01T00:00:00+08:00")).unwrap();
    let summary: Vec<(ChangeKind, &str, DateTime<Utc>)> =
        changes.iter().skip(2).map(|c| (c.kind, c.to.as_str(), c.at)).collect();
    assert_eq!(
        summary,
        vec![
            (GraceStarted, "diamond", t("2026-02-01T00:00:00+08:00")),
            (Downgraded, "gold", t("2026-03-03T00:00:00+08:00")),
            // 1 March fell in diamond's grace; gold is first re-evaluated on 1 April.
            (GraceStarted, "gold", t("2026-04-01T00:00:00+08:00")),
            // Grace ends on 1 May at 00:00, which is also a re-evaluation: the grace end comes first, then
            // silver is re-evaluated on its own.
            (Downgraded, "silver", t("2026-05-01T00:00:00+08:00")),
            (GraceStarted, "silver", t("2026-05-01T00:00:00+08:00")),
            (Downgraded, "regular", t("2026-05-31T00:00:00+08:00")),
        ]
    );
    assert_eq!(state.tier, "regular");
}

#[test]
fn without_grace_the_downgrade_happens_at_the_reevaluation() {
    let p = TierProgram { grace_days: 0, ..example() };
    let h = [g("2025-01-10T10:00:00+08:00", 6000)];
    let (_, changes) = replay(&p, &h, t("2025-01-01T00:00:00+08:00"), t("2026-03-15T00:00:00+08:00")).unwrap();
    assert_eq!(
        path(&changes)[1..],
        [(Upgraded, "regular", "gold"), (Downgraded, "gold", "silver"), (Downgraded, "silver", "regular")]
    );
    assert_eq!(changes[2].at, t("2026-02-01T00:00:00+08:00"));
    assert_eq!(
        changes[2].reason,
        "growth 0 in the 12 months to 2026-02-01 below 金卡 keep level 3,000 at re-evaluation"
    );
    assert_eq!(changes[3].at, t("2026-03-01T00:00:00+08:00"));
}

#[test]
fn recovery_during_grace_cancels_it() {
    let p = example();
    let h = [
        g("2025-01-20T10:00:00+08:00", 2500),
        // Silver's keep level is 1,000: at 2026-02-01 the window is empty, grace runs to 2026-03-03.
        g("2026-02-14T19:30:00+08:00", 400),
        g("2026-02-20T19:30:00+08:00", 650),
    ];
    let (state, changes) = replay(&p, &h, t("2025-01-01T00:00:00+08:00"), t("2026-06-01T00:00:00+08:00")).unwrap();
    assert_eq!(
        path(&changes)[1..],
        [(Upgraded, "regular", "silver"), (GraceStarted, "silver", "silver"), (GraceCancelled, "silver", "silver")]
    );
    let cancel = &changes[3];
    assert_eq!((cancel.at, cancel.growth), (t("2026-02-20T19:30:00+08:00"), 1050));
    assert_eq!(
        cancel.reason,
        "growth 1,050 in the 12 months to 2026-02-20 19:30 back at 银卡 keep level 1,000: grace cancelled"
    );
    assert_eq!((state.tier.as_str(), state.since, state.grace), ("silver", t("2025-01-20T10:00:00+08:00"), None));
}

#[test]
fn an_upgrade_during_grace_ends_it() {
    let p = example();
    let h = [g("2025-01-20T10:00:00+08:00", 2500), g("2026-02-10T10:00:00+08:00", 5000)];
    let (state, changes) = replay(&p, &h, t("2025-01-01T00:00:00+08:00"), t("2026-04-01T00:00:00+08:00")).unwrap();
    assert_eq!(
        path(&changes)[1..],
        [(Upgraded, "regular", "silver"), (GraceStarted, "silver", "silver"), (Upgraded, "silver", "gold")]
    );
    assert_eq!((state.tier.as_str(), state.grace), ("gold", None));
}

#[test]
fn a_refund_can_push_a_member_below_the_keep_level() {
    let p = example();
    let h = [g("2025-06-01T10:00:00+08:00", 5200), g("2025-06-20T10:00:00+08:00", -2300)];
    let (state, changes) = replay(&p, &h, t("2025-01-01T00:00:00+08:00"), t("2025-07-01T00:00:00+08:00")).unwrap();
    assert_eq!(path(&changes)[1..], [(Upgraded, "regular", "gold"), (GraceStarted, "gold", "gold")]);
    assert_eq!(changes[2].growth, 2900);
    assert_eq!(
        changes[2].reason,
        "growth 2,900 in the 12 months to 2025-07-01 below 金卡 keep level 3,000: 30 days of grace until 2025-07-31"
    );
    assert_eq!(state.grace.map(|g| g.ends_at), Some(t("2025-07-31T00:00:00+08:00")));
}

#[test]
fn the_lowest_tier_never_enters_grace_even_with_negative_growth() {
    let p = example();
    let h = [g("2025-02-01T10:00:00+08:00", -500)];
    let (state, changes) = replay(&p, &h, t("2025-01-01T00:00:00+08:00"), t("2025-12-01T00:00:00+08:00")).unwrap();
    assert_eq!(path(&changes), vec![(Enrolled, "regular", "regular")]);
    assert_eq!((state.tier.as_str(), state.grace), ("regular", None));
}

#[test]
fn a_late_scheduler_applies_the_reevaluation_before_later_growth() {
    let p = example();
    let h = [g("2025-01-20T10:00:00+08:00", 2500), g("2026-02-01T00:02:00+08:00", 5000)];
    // The growth write at 00:02 runs first; the re-evaluation due at 00:00 is applied before it.
    let (_, changes) =
        live(&p, &h, &["2025-01-20T10:00:00+08:00", "2026-02-01T00:02:00+08:00", "2026-02-01T00:05:00+08:00"]);
    assert_eq!(
        path(&changes)[1..],
        [(Upgraded, "regular", "silver"), (GraceStarted, "silver", "silver"), (Upgraded, "silver", "gold")]
    );
    assert_eq!(changes[2].at, t("2026-02-01T00:00:00+08:00"));
    assert_eq!(changes[3].at, t("2026-02-01T00:02:00+08:00"));
}

#[test]
fn growth_recorded_before_as_of_is_counted_at_the_next_advance() {
    let p = example();
    let (mut state, _) = p.enroll(&[], t("2025-01-01T00:00:00+08:00")).unwrap();
    p.advance(&mut state, &[], t("2025-05-01T00:00:00+08:00")).unwrap();
    // A movement that reaches the kernel after the state moved past its instant.
    let h = [g("2025-04-30T23:00:00+08:00", 2100)];
    let c = p.advance(&mut state, &h, t("2025-05-01T00:10:00+08:00")).unwrap();
    assert_eq!(path(&c), vec![(Upgraded, "regular", "silver")]);
    assert_eq!(c[0].at, t("2025-05-01T00:10:00+08:00"));
    // Time never goes back: an earlier `now` changes nothing.
    let before = state.clone();
    assert!(p.advance(&mut state, &h, t("2025-04-01T00:00:00+08:00")).unwrap().is_empty());
    assert_eq!(state, before);
}

// ---------------------------------------------------------------------------------------------------------
// History and replay
// ---------------------------------------------------------------------------------------------------------

fn mixed_history() -> Vec<Growth> {
    vec![
        g("2025-01-05T10:00:00+08:00", 800),
        g("2025-02-14T20:00:00+08:00", 1500),
        g("2025-03-01T00:00:00+08:00", 3000),
        g("2025-03-08T12:00:00+08:00", -900),
        g("2025-06-18T09:00:00+08:00", 16_000),
        g("2025-11-11T00:00:00+08:00", 2000),
        g("2026-05-20T13:14:00+08:00", 700),
        g("2026-08-01T08:00:00+08:00", 2600),
        g("2026-12-12T12:12:00+08:00", -2600),
    ]
}

#[test]
fn replay_matches_step_by_step_application() {
    let p = example();
    let h = mixed_history();
    let until = t("2027-12-31T00:00:00+08:00");
    let (state, changes) = replay(&p, &h, t("2025-01-01T00:00:00+08:00"), until).unwrap();

    // Step by step: a growth write at each movement (seeing only what is stored by then) and a daily job.
    let mut visits: Vec<DateTime<Utc>> = h.iter().map(|m| m.at).collect();
    let mut day = t("2025-01-01T00:05:00+08:00");
    while day <= until {
        visits.push(day);
        day += chrono::Duration::days(1);
    }
    visits.push(until);
    visits.sort();
    let (mut live_state, mut live_changes) = p.enroll(&[], t("2025-01-01T00:00:00+08:00")).unwrap();
    for now in visits {
        let known: Vec<Growth> = h.iter().copied().filter(|m| m.at <= now).collect();
        live_changes.extend(p.advance(&mut live_state, &known, now).unwrap());
    }
    assert_eq!(live_changes, changes);
    assert_eq!(live_state, state);

    let summary: Vec<(ChangeKind, &str, DateTime<Utc>, i64)> =
        changes.iter().map(|c| (c.kind, c.to.as_str(), c.at, c.growth)).collect();
    assert_eq!(
        summary,
        vec![
            (Enrolled, "regular", t("2025-01-01T00:00:00+08:00"), 0),
            (Upgraded, "silver", t("2025-02-14T20:00:00+08:00"), 2300),
            // At 00:00 on 1 March the movement comes before that instant's re-evaluation.
            (Upgraded, "gold", t("2025-03-01T00:00:00+08:00"), 5300),
            // The refund of 8 March leaves 4,400: above gold's keep level, so nothing happens.
            (Upgraded, "diamond", t("2025-06-18T09:00:00+08:00"), 20_400),
            // The 16,000 leaves the window on 2026-06-18; the next re-evaluation sees 2,700.
            (GraceStarted, "diamond", t("2026-07-01T00:00:00+08:00"), 2700),
            // 2,700 would justify 银卡, but grace costs exactly one tier.
            (Downgraded, "gold", t("2026-07-31T00:00:00+08:00"), 2700),
            (GraceStarted, "gold", t("2026-08-01T00:00:00+08:00"), 2700),
            (GraceCancelled, "gold", t("2026-08-01T08:00:00+08:00"), 5300),
            // 2,000 of 11 November leaves, the refund of 12 December takes 2,600: 700 at the new year.
            (GraceStarted, "gold", t("2027-01-01T00:00:00+08:00"), 700),
            (Downgraded, "silver", t("2027-01-31T00:00:00+08:00"), 700),
            (GraceStarted, "silver", t("2027-02-01T00:00:00+08:00"), 700),
            (Downgraded, "regular", t("2027-03-03T00:00:00+08:00"), 700),
        ]
    );
    assert_eq!(
        changes[7].reason,
        "growth 5,300 in the 12 months to 2026-08-01 08:00 back at 金卡 keep level 3,000: grace cancelled"
    );
}

#[test]
fn the_state_is_rebuilt_from_its_history_records() {
    let p = example();
    let h = mixed_history();
    let until = t("2027-12-31T00:00:00+08:00");
    let (state, changes) = replay(&p, &h, t("2025-01-01T00:00:00+08:00"), until).unwrap();
    // Stored as JSON and read back.
    let json = serde_json::to_string(&changes).unwrap();
    let stored: Vec<TierChange> = serde_json::from_str(&json).unwrap();
    let mut rebuilt = TierState::from_changes(&stored).unwrap();
    assert_eq!((&rebuilt.tier, rebuilt.since, rebuilt.grace), (&state.tier, state.since, state.grace));
    assert_eq!(rebuilt.as_of, changes.last().unwrap().at);
    // Advancing the rebuilt state re-checks what came after the last record and finds nothing new.
    assert!(p.advance(&mut rebuilt, &h, until).unwrap().is_empty());
    assert_eq!(rebuilt, state);
    let state_json = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<TierState>(&state_json).unwrap(), state);
}

#[test]
fn malformed_history_is_refused() {
    let p = example();
    let (_, changes) =
        replay(&p, &mixed_history(), t("2025-01-01T00:00:00+08:00"), t("2027-01-01T00:00:00+08:00")).unwrap();
    assert_eq!(TierState::from_changes(&[]), Err(TierError::NotEnrolled));
    assert_eq!(TierState::from_changes(&changes[1..]), Err(TierError::NotEnrolled));
    let twice = [changes[0].clone(), changes[0].clone()];
    assert_eq!(TierState::from_changes(&twice), Err(TierError::AlreadyEnrolled));
    let skipped = [changes[0].clone(), changes[2].clone()];
    assert_eq!(
        TierState::from_changes(&skipped),
        Err(TierError::Mismatch { expected: "regular".into(), found: changes[2].from.clone() })
    );
    let mut early = changes[1].clone();
    early.at = changes[0].at - chrono::Duration::seconds(1);
    assert!(matches!(TierState::from_changes(&[changes[0].clone(), early]), Err(TierError::OutOfOrder { .. })));
    let mut cancel = changes[0].clone();
    cancel.kind = GraceCancelled;
    assert_eq!(TierState::from_changes(&[changes[0].clone(), cancel]), Err(TierError::NoGrace));
    let grace = changes.iter().position(|c| c.kind == GraceStarted).unwrap();
    let mut no_end = changes[..=grace].to_vec();
    no_end[grace].grace_ends_at = None;
    assert_eq!(TierState::from_changes(&no_end), Err(TierError::BadGrace));
    let mut twice = changes[..=grace].to_vec();
    twice.push(changes[grace].clone());
    assert_eq!(TierState::from_changes(&twice), Err(TierError::BadGrace));
}

#[test]
fn a_state_naming_a_retired_tier_is_refused() {
    let p = example();
    let mut state = TierState {
        tier: "platinum".into(),
        since: t("2025-01-01T00:00:00+08:00"),
        grace: None,
        as_of: t("2025-01-01T00:00:00+08:00"),
    };
    assert_eq!(
        p.advance(&mut state, &[], t("2025-02-01T00:00:00+08:00")),
        Err(TierError::UnknownTier { code: "platinum".into() })
    );
}

#[test]
fn progress_shows_what_is_missing() {
    let p = example();
    let h = [g("2025-03-01T10:00:00+08:00", 3200)];
    let (state, _) = replay(&p, &h, t("2025-01-01T00:00:00+08:00"), t("2025-03-10T00:00:00+08:00")).unwrap();
    let pr = p.progress(&state, &h, t("2025-03-10T00:00:00+08:00")).unwrap();
    assert_eq!(
        pr,
        Progress {
            tier: "silver".into(),
            growth: 3200,
            keep: 1000,
            keep_shortfall: 0,
            next_tier: Some("gold".into()),
            next_shortfall: Some(1800),
            grace_ends_at: None,
            next_reevaluation: Some(t("2025-04-01T00:00:00+08:00")),
        }
    );
}

// ---------------------------------------------------------------------------------------------------------
// Paid cards
// ---------------------------------------------------------------------------------------------------------

#[test]
fn renewing_an_active_card_extends_from_its_end() {
    let p = example();
    let first = p.buy_card("plus", &[], t("2026-01-10T15:00:00+08:00")).unwrap();
    assert_eq!((first.starts_at, first.ends_at), (t("2026-01-10T15:00:00+08:00"), t("2027-01-10T15:00:00+08:00")));
    assert_eq!((first.price, first.name.as_str()), (9900, "青禾 PLUS 年卡"));
    let mut terms = vec![first];
    let renewal = p.buy_card("plus", &terms, t("2026-06-01T09:00:00+08:00")).unwrap();
    assert_eq!(renewal.bought_at, t("2026-06-01T09:00:00+08:00"));
    assert_eq!((renewal.starts_at, renewal.ends_at), (t("2027-01-10T15:00:00+08:00"), t("2028-01-10T15:00:00+08:00")));
    terms.push(renewal);
    // Bought a third time ahead: chains after the renewal.
    let third = p.buy_card("plus", &terms, t("2026-07-01T09:00:00+08:00")).unwrap();
    assert_eq!(third.starts_at, t("2028-01-10T15:00:00+08:00"));

    assert!(!card_active(&terms, "plus", t("2026-01-10T14:59:59+08:00")));
    assert!(card_active(&terms, "plus", t("2026-01-10T15:00:00+08:00")));
    assert!(card_active(&terms, "plus", t("2027-01-10T15:00:00+08:00")), "seamless across the renewal");
    assert!(!card_active(&terms, "plus", t("2028-01-10T15:00:00+08:00")));
    assert!(!card_active(&terms, "other", t("2026-05-01T00:00:00+08:00")));

    // After it lapsed, a purchase starts now.
    let later = p.buy_card("plus", &terms, t("2028-03-01T00:00:00+08:00")).unwrap();
    assert_eq!(later.starts_at, t("2028-03-01T00:00:00+08:00"));
    assert_eq!(
        p.buy_card("vip", &terms, t("2028-03-01T00:00:00+08:00")),
        Err(TierError::UnknownPlan { code: "vip".into() })
    );
}

#[test]
fn card_validity_in_days_and_clamped_months() {
    let mut p = example();
    p.cards[0].validity = Validity::Days(30);
    let c = p.buy_card("plus", &[], t("2026-02-15T00:00:00+08:00")).unwrap();
    assert_eq!(c.ends_at, t("2026-03-17T00:00:00+08:00"));
    p.cards[0].validity = Validity::Months(1);
    let c = p.buy_card("plus", &[], t("2026-01-31T10:00:00+08:00")).unwrap();
    assert_eq!(c.ends_at, t("2026-02-28T10:00:00+08:00"), "the day is clamped to February's end");
}

#[test]
fn effective_benefits_take_the_best_of_tier_and_active_cards() {
    let p = example();
    let silver = p.tier("silver").unwrap();
    let card = p.buy_card("plus", &[], t("2026-01-10T00:00:00+08:00")).unwrap();
    let cards = [card];
    let e = effective_benefits(silver, &cards, t("2026-05-01T00:00:00+08:00"));
    assert_eq!(
        e,
        EffectiveBenefits {
            points_multiplier_bp: 15_000,
            discount_bp: 300,
            free_shipping: true,
            exclusive_service: false,
            birthday_coupons: vec!["birthday_silver".into(), "birthday_plus".into()],
            sources: vec!["silver".into(), "plus".into()],
        }
    );
    // Diamond beats the card everywhere; the card still adds its birthday gift.
    let e = effective_benefits(p.tier("diamond").unwrap(), &cards, t("2026-05-01T00:00:00+08:00"));
    assert_eq!((e.points_multiplier_bp, e.discount_bp, e.exclusive_service), (20_000, 800, true));
    assert_eq!(e.birthday_coupons, vec!["birthday_diamond".to_string(), "birthday_plus".to_string()]);
    // Once the card has ended, only the tier counts.
    let e = effective_benefits(silver, &cards, t("2027-01-10T00:00:00+08:00"));
    assert_eq!((e.points_multiplier_bp, e.discount_bp, e.free_shipping), (12_000, 200, false));
    assert_eq!(e.sources, vec!["silver".to_string()]);
}

#[test]
fn a_card_keeps_the_benefits_it_was_sold_with() {
    let mut p = example();
    let card = p.buy_card("plus", &[], t("2026-01-10T00:00:00+08:00")).unwrap();
    p.cards[0].benefits.discount_bp = 0;
    p.cards.clear();
    let e = effective_benefits(p.tier("regular").unwrap(), &[card], t("2026-02-01T00:00:00+08:00"));
    assert_eq!(e.discount_bp, 300);
}

// ---------------------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------------------

fn program() -> impl Strategy<Value = TierProgram> {
    (
        prop::collection::vec((1i64..3000, 0i64..=100), 1..5),
        0u32..45,
        1u32..=18,
        prop::sample::select(vec![1u32, 2, 3, 6, 12]),
        1u32..=28,
    )
        .prop_map(|(steps, grace_days, window_months, every_months, day)| {
            let mut tiers = vec![Tier {
                code: "t0".into(),
                name: "T0".into(),
                threshold: 0,
                keep: 0,
                benefits: Benefits::default(),
            }];
            for (i, (step, keep_pct)) in steps.into_iter().enumerate() {
                let below = tiers.last().unwrap();
                let threshold = below.threshold + step;
                let keep = (threshold * keep_pct / 100).max(below.keep);
                tiers.push(Tier {
                    code: format!("t{}", i + 1),
                    name: format!("T{}", i + 1),
                    threshold,
                    keep,
                    benefits: Benefits::default(),
                });
            }
            let p = TierProgram {
                version: 1,
                time_zone: chrono_tz::Asia::Shanghai,
                window_months,
                grace_days,
                reevaluation: Schedule { every_months, day },
                tiers,
                cards: Vec::new(),
            };
            p.validate().expect("generated program is valid");
            p
        })
}

/// Movements over three years from 2025-01-01 (local), mostly earning, some refunds.
fn history() -> impl Strategy<Value = Vec<Growth>> {
    prop::collection::vec((0i64..3 * 365 * 24 * 60, prop_oneof![4 => 1i64..4000, 1 => -3000i64..0]), 0..40).prop_map(
        |moves| {
            let base = t("2025-01-01T00:00:00+08:00");
            moves
                .into_iter()
                .map(|(minutes, amount)| Growth { at: base + chrono::Duration::minutes(minutes), amount })
                .collect()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Replay never moves down more than one tier at a time, only at a re-evaluation (without grace) or at
    /// the end of the grace started before; upgrades reach exactly the tier the recorded growth justifies;
    /// every state is a tier of the program; the records chain and rebuild the final state.
    #[test]
    fn replay_moves_down_one_tier_at_a_time(p in program(), h in history()) {
        let registered = t("2025-01-01T00:00:00+08:00");
        let until = t("2028-06-01T00:00:00+08:00");
        let (state, changes) = replay(&p, &h, registered, until).unwrap();
        prop_assert!(p.rank(&state.tier).is_some());
        prop_assert_eq!(changes[0].kind, Enrolled);
        let mut tier = changes[0].to.clone();
        let mut grace_end: Option<DateTime<Utc>> = None;
        let mut downgrades_at: Vec<DateTime<Utc>> = Vec::new();
        for c in &changes[1..] {
            prop_assert_eq!(&c.from, &tier);
            let (from, to) = (p.rank(&c.from).unwrap(), p.rank(&c.to).unwrap());
            prop_assert_eq!(c.growth, p.window_growth(&h, c.at));
            match c.kind {
                Upgraded => {
                    prop_assert!(to > from);
                    prop_assert_eq!(to, p.rank(&p.tier_for(c.growth).code).unwrap());
                    grace_end = None;
                }
                Downgraded => {
                    prop_assert_eq!(to + 1, from, "exactly one tier down");
                    prop_assert!(c.growth < p.tiers[from].keep);
                    prop_assert!(!downgrades_at.contains(&c.at), "one downgrade per instant");
                    downgrades_at.push(c.at);
                    if p.grace_days == 0 {
                        let scheduled = p.next_reevaluation(c.at - chrono::Duration::nanoseconds(1));
                        prop_assert_eq!(scheduled, Some(c.at), "only at a re-evaluation");
                    } else {
                        prop_assert_eq!(grace_end, Some(c.at), "only when grace ends");
                    }
                    grace_end = None;
                }
                GraceStarted => {
                    prop_assert!(p.grace_days > 0 && from > 0 && grace_end.is_none());
                    prop_assert!(c.growth < p.tiers[from].keep);
                    prop_assert_eq!(p.next_reevaluation(c.at - chrono::Duration::nanoseconds(1)), Some(c.at));
                    grace_end = c.grace_ends_at;
                }
                GraceCancelled => {
                    prop_assert!(grace_end.is_some_and(|e| c.at <= e));
                    prop_assert!(c.growth >= p.tiers[from].keep);
                    grace_end = None;
                }
                Enrolled => prop_assert!(false, "a second enrolment"),
            }
            tier = c.to.clone();
        }
        let rebuilt = TierState::from_changes(&changes).unwrap();
        prop_assert_eq!((&rebuilt.tier, rebuilt.since, rebuilt.grace), (&state.tier, state.since, state.grace));
    }

    /// The live system — advancing after each growth write with only what is stored by then, and from a
    /// scheduler at arbitrary times — writes exactly the records the replay computes from scratch.
    #[test]
    fn step_by_step_equals_replay(
        p in program(),
        h in history(),
        ticks in prop::collection::vec(0i64..3 * 365 * 24 * 60, 0..30),
    ) {
        let registered = t("2025-01-01T00:00:00+08:00");
        let until = t("2028-06-01T00:00:00+08:00");
        let (state, changes) = replay(&p, &h, registered, until).unwrap();
        let mut visits: Vec<DateTime<Utc>> = h.iter().map(|m| m.at).collect();
        visits.extend(ticks.iter().map(|m| registered + chrono::Duration::minutes(*m) + chrono::Duration::seconds(30)));
        visits.push(until);
        visits.sort();
        let (mut live_state, mut live_changes) =
            p.enroll(&h.iter().copied().filter(|m| m.at <= registered).collect::<Vec<_>>(), registered).unwrap();
        for now in visits {
            let known: Vec<Growth> = h.iter().copied().filter(|m| m.at <= now).collect();
            live_changes.extend(p.advance(&mut live_state, &known, now).unwrap());
        }
        prop_assert_eq!(live_changes, changes);
        prop_assert_eq!(live_state, state);
    }
}
