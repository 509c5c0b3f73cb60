use chrono::TimeZone;
use proptest::prelude::*;

use super::*;

fn example() -> RuleSet {
    RuleSet::from_toml(EXAMPLE_TOML).expect("example rule set is valid")
}

fn member(tier: &str) -> MemberSnapshot {
    MemberSnapshot {
        tier: tier.to_string(),
        birthday: NaiveDate::from_ymd_opt(1990, 1, 15),
        registered_at: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
        today: Usage::default(),
        this_month: Usage::default(),
        first_paid_order: false,
        referred_by: None,
        once_awarded: BTreeSet::new(),
        benefits: tier_benefits(tier),
    }
}

/// The benefits multiplier of a tier of the example tier program (no paid cards).
fn tier_benefits(tier: &str) -> Option<BenefitMultiplier> {
    let program = crate::loyalty::tiers::TierProgram::from_toml(crate::loyalty::tiers::EXAMPLE_TOML).unwrap();
    let t = program.tier(tier).unwrap_or(&program.tiers[0]);
    Some(BenefitMultiplier { multiplier_bp: t.benefits.points_multiplier_bp, sources: vec![t.code.clone()] })
}

/// Monday 2025-06-02 10:00 in Shanghai (02:00 UTC): no member day, no campaign.
fn monday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 2, 0, 0).unwrap()
}

fn line(line_no: i32, amount: i64) -> RuleLine {
    RuleLine {
        line_no,
        sku: format!("SKU-{line_no}"),
        category_path: Some("茶饮/绿茶".to_string()),
        brand: Some("其他".to_string()),
        kind: LineKind::Product,
        amount,
    }
}

fn order(at: DateTime<Utc>, lines: Vec<RuleLine>) -> RuleInput {
    RuleInput::Order(RuleOrder { channel: "tmall".to_string(), placed_at: at, paid: true, lines, shipping_fee: 0 })
}

fn event(behaviour: Behaviour) -> RuleInput {
    RuleInput::Event(BehaviourEvent { at: monday(), behaviour })
}

fn explanation<'a>(ev: &'a Evaluation, rule_id: &str, target: Target) -> &'a Explanation {
    ev.explanations
        .iter()
        .find(|e| e.rule_id == rule_id && e.target == target)
        .unwrap_or_else(|| panic!("no explanation for {rule_id} on {target:?}: {:#?}", ev.explanations))
}

fn line_points(ev: &Evaluation, line_no: i32) -> i64 {
    ev.effects.iter().find(|e| e.target == Target::Line { line_no }).map(|e| e.points).unwrap_or(-1)
}

fn usage(rule: &str, points: i64, count: u32) -> Usage {
    Usage { by_rule: BTreeMap::from([(rule.to_string(), RuleUsage { points, count })]) }
}

#[test]
fn example_toml_parses_validates_and_round_trips_through_json() {
    let set = example();
    assert_eq!(set.version, 3);
    assert_eq!(set.time_zone, chrono_tz::Asia::Shanghai);
    assert_eq!(set.rules.len(), 14);
    let json = serde_json::to_string(&set).unwrap();
    assert_eq!(RuleSet::from_json(&json).unwrap(), set);
}

#[test]
fn base_rate_floors_per_line_and_growth_has_its_own_rate() {
    let ev = evaluate(&order(monday(), vec![line(1, 12_399), line(2, 99)]), &member("regular"), &example());
    assert_eq!(line_points(&ev, 1), 123);
    assert_eq!(line_points(&ev, 2), 0);
    assert_eq!(ev.member_points(), 123);
    assert_eq!(ev.member_growth(), 123);
    assert!(ev.effects.iter().all(|e| e.rule_id == "base" && e.rule_version == 3));
}

#[test]
fn excluded_lines_and_shipping_earn_nothing_and_say_why() {
    let mut gift = line(2, 50_000);
    gift.kind = LineKind::GiftCard;
    let mut card_category = line(3, 50_000);
    card_category.category_path = Some("礼品卡/电子卡".to_string());
    let mut not_card = line(4, 10_000);
    not_card.category_path = Some("礼品卡套".to_string());
    let mut ship_sku = line(5, 1_000);
    ship_sku.sku = "SHIPPING".to_string();
    let RuleInput::Order(mut o) = order(monday(), vec![line(1, 10_000), gift, card_category, not_card, ship_sku])
    else {
        unreachable!()
    };
    o.shipping_fee = 1_200;
    let ev = evaluate(&RuleInput::Order(o), &member("regular"), &example());
    assert_eq!(ev.effects.len(), 2, "{:#?}", ev.effects);
    assert_eq!(line_points(&ev, 1), 100);
    assert_eq!(line_points(&ev, 4), 100, "礼品卡套 is not under 礼品卡: prefixes match whole segments");
    assert_eq!(explanation(&ev, "base", Target::Line { line_no: 2 }).reason, "line kind gift_card excluded");
    assert!(explanation(&ev, "base", Target::Line { line_no: 3 }).reason.starts_with("category excluded"));
    assert_eq!(explanation(&ev, "base", Target::Line { line_no: 5 }).reason, "SKU SHIPPING excluded");
    let ship = explanation(&ev, "base", Target::Shipping);
    assert!(!ship.applied);
    assert_eq!(ship.reason, "shipping excluded");
}

#[test]
fn tier_multipliers_multiply() {
    let set = example();
    for (tier, expected) in [("regular", 100), ("silver", 120), ("gold", 150), ("diamond", 200), ("unknown", 100)] {
        let ev = evaluate(&order(monday(), vec![line(1, 10_000)]), &member(tier), &set);
        assert_eq!(ev.member_points(), expected, "{tier}");
        assert_eq!(ev.member_growth(), 100, "growth is not multiplied by tier ({tier})");
    }
}

#[test]
fn member_day_is_wednesday_in_shanghai_even_when_utc_says_tuesday() {
    let set = example();
    // Tuesday 2025-06-03 23:30 UTC is Wednesday 07:30 in Shanghai.
    let tue_utc = Utc.with_ymd_and_hms(2025, 6, 3, 23, 30, 0).unwrap();
    let ev = evaluate(&order(tue_utc, vec![line(1, 10_000)]), &member("regular"), &set);
    assert_eq!(ev.member_points(), 200);
    let e = explanation(&ev, "member_day", Target::Line { line_no: 1 });
    assert!(e.applied);
    assert_eq!(e.reason, "member day is Wednesday");
    // Wednesday 2025-06-04 16:30 UTC is Thursday 00:30 in Shanghai.
    let wed_utc = Utc.with_ymd_and_hms(2025, 6, 4, 16, 30, 0).unwrap();
    let ev = evaluate(&order(wed_utc, vec![line(1, 10_000)]), &member("regular"), &set);
    assert_eq!(ev.member_points(), 100);
    let e = explanation(&ev, "member_day", Target::Order);
    assert!(!e.applied);
    assert_eq!(e.reason, "order placed on Thursday (local), member day is Wednesday");
}

#[test]
fn best_of_keeps_only_the_best_in_its_group() {
    let mut m = member("regular");
    m.birthday = NaiveDate::from_ymd_opt(1990, 6, 20);
    let wed = Utc.with_ymd_and_hms(2025, 6, 4, 2, 0, 0).unwrap();
    let ev = evaluate(&order(wed, vec![line(1, 10_000)]), &m, &example());
    assert_eq!(ev.member_points(), 200, "birthday month and member day are ×2 best-of, not ×4");
    let target = Target::Line { line_no: 1 };
    assert!(explanation(&ev, "birthday_month", target).applied, "equal multipliers: higher priority wins");
    let lost = explanation(&ev, "member_day", target);
    assert!(!lost.applied);
    assert!(lost.reason.contains("outdone by birthday_month in best-of group date_bonus"), "{}", lost.reason);
    assert_eq!(ev.effects[0].multipliers, vec!["benefits", "birthday_month"]);
}

#[test]
fn add_bonuses_sum_then_multiply_factors_apply() {
    let mut l = line(1, 10_000);
    l.category_path = Some("美妆/护肤/面霜".to_string());
    l.brand = Some("青禾".to_string());
    let RuleInput::Order(mut o) = order(monday(), vec![l]) else { unreachable!() };
    o.channel = "wechat_mp".to_string();
    let ev = evaluate(&RuleInput::Order(o), &member("silver"), &example());
    // add: 1 + 0.5 + 0.1 + 0.2 = 1.8; multiply by 银卡 1.2 → 2.16.
    assert_eq!(ev.effects[0].multiplier_bp, 21_600);
    assert_eq!(ev.member_points(), 216);
    assert_eq!(ev.effects[0].multipliers, vec!["skincare_bonus", "miniprogram", "own_brand", "benefits"]);
    assert_eq!(ev.member_growth(), 100);
}

fn two_multipliers(stacking: Stacking) -> RuleSet {
    let mk = |id: &str, m: f64, priority: i32| {
        Rule::Multiplier(MultiplierRule {
            id: id.to_string(),
            description: String::new(),
            stacking,
            group: (stacking == Stacking::BestOf).then(|| "g".to_string()),
            priority,
            multiplier: Factor::Fixed(m),
            applies_to_growth: false,
            when: Condition::Channel { channels: vec!["tmall".to_string()] },
        })
    };
    let set = RuleSet {
        version: 1,
        currency_unit: 100,
        time_zone: chrono_tz::Asia::Shanghai,
        rules: vec![
            Rule::Base(BaseRule {
                id: "base".to_string(),
                description: String::new(),
                points_per_unit: 1,
                growth_per_unit: 1,
                excluded_skus: vec![],
                excluded_categories: vec![],
                excluded_kinds: vec![],
                include_shipping: false,
            }),
            mk("a", 2.0, 1),
            mk("b", 1.5, 2),
        ],
        caps: vec![],
    };
    set.validate().unwrap();
    set
}

#[test]
fn each_stacking_mode_combines_as_documented() {
    let input = order(monday(), vec![line(1, 10_000)]);
    let m = member("regular");
    let add = evaluate(&input, &m, &two_multipliers(Stacking::Add));
    assert_eq!(add.member_points(), 250, "add: 1 + 1 + 0.5");
    let mul = evaluate(&input, &m, &two_multipliers(Stacking::Multiply));
    assert_eq!(mul.member_points(), 300, "multiply: 2 × 1.5");
    assert_eq!(mul.effects[0].multipliers, vec!["b", "a"], "multiply factors apply by descending priority");
    let best = evaluate(&input, &m, &two_multipliers(Stacking::BestOf));
    assert_eq!(best.member_points(), 200, "best_of: the larger factor wins regardless of priority");
    assert!(!explanation(&best, "b", Target::Line { line_no: 1 }).applied);
}

#[test]
fn campaign_window_is_half_open_in_local_time() {
    let set = example();
    let m = member("regular");
    // 2025-11-11 23:59 Shanghai = 15:59 UTC: inside. 2025-11-12 00:00 Shanghai = 16:00 UTC: outside.
    let inside =
        evaluate(&order(Utc.with_ymd_and_hms(2025, 11, 11, 15, 59, 0).unwrap(), vec![line(1, 10_000)]), &m, &set);
    assert_eq!(inside.member_points(), 200);
    assert_eq!(inside.effects[0].multipliers, vec!["double11", "benefits"]);
    // 2025-11-12 is a Wednesday: the campaign is over, but it is member day.
    let outside =
        evaluate(&order(Utc.with_ymd_and_hms(2025, 11, 11, 16, 0, 0).unwrap(), vec![line(1, 10_000)]), &m, &set);
    assert_eq!(outside.effects[0].multipliers, vec!["benefits", "member_day"]);
    assert!(explanation(&outside, "double11", Target::Order).reason.starts_with("outside campaign window"));
}

#[test]
fn growth_is_multiplied_only_when_a_rule_says_so() {
    let mut set = two_multipliers(Stacking::Multiply);
    if let Rule::Multiplier(m) = &mut set.rules[1] {
        m.applies_to_growth = true;
    }
    let ev = evaluate(&order(monday(), vec![line(1, 10_000)]), &member("regular"), &set);
    assert_eq!(ev.member_points(), 300);
    assert_eq!(ev.member_growth(), 200);
}

#[test]
fn birthday_day_handles_29_february() {
    let mut set = two_multipliers(Stacking::Multiply);
    if let Rule::Multiplier(m) = &mut set.rules[1] {
        m.when = Condition::BirthdayDay;
    }
    let mut m = member("regular");
    m.birthday = NaiveDate::from_ymd_opt(2000, 2, 29);
    // 2025-02-28 10:00 Shanghai.
    let ev = evaluate(&order(Utc.with_ymd_and_hms(2025, 2, 28, 2, 0, 0).unwrap(), vec![line(1, 10_000)]), &m, &set);
    assert_eq!(ev.member_points(), 300);
    assert_eq!(explanation(&ev, "a", Target::Line { line_no: 1 }).reason, "birthday today");
}

#[test]
fn check_in_streak_follows_the_cycle() {
    let set = example();
    let m = member("regular");
    let got: Vec<i64> =
        (1..=9).map(|day| evaluate(&event(Behaviour::CheckIn { streak_day: day }), &m, &set).member_points()).collect();
    assert_eq!(got, vec![1, 2, 3, 5, 5, 5, 10, 1, 2]);
    let ev = evaluate(&event(Behaviour::CheckIn { streak_day: 7 }), &m, &set);
    assert_eq!(
        explanation(&ev, "check_in", Target::Event).reason,
        "check-in streak day 7 is day 7 of the 7-day cycle: 10 point(s)"
    );
    let zero = evaluate(&event(Behaviour::CheckIn { streak_day: 0 }), &m, &set);
    assert_eq!(zero.member_points(), 0);
}

#[test]
fn behaviour_rules_award_fixed_points_and_once_only_rules_once() {
    let set = example();
    let mut m = member("regular");
    assert_eq!(evaluate(&event(Behaviour::Registration), &m, &set).member_points(), 100);
    assert_eq!(evaluate(&event(Behaviour::Review), &m, &set).member_points(), 20);
    assert_eq!(evaluate(&event(Behaviour::Share), &m, &set).member_points(), 5);
    assert_eq!(evaluate(&event(Behaviour::ProfileCompletion), &m, &set).member_points(), 50);
    m.once_awarded.insert("registration".to_string());
    let again = evaluate(&event(Behaviour::Registration), &m, &set);
    assert_eq!(again.member_points(), 0);
    assert_eq!(explanation(&again, "registration", Target::Event).reason, "already awarded once to this member");
}

#[test]
fn share_is_capped_at_three_a_day() {
    let set = example();
    let mut m = member("regular");
    m.today = usage("share", 10, 2);
    assert_eq!(evaluate(&event(Behaviour::Share), &m, &set).member_points(), 5);
    m.today = usage("share", 15, 3);
    let ev = evaluate(&event(Behaviour::Share), &m, &set);
    assert_eq!(ev.member_points(), 0);
    let cap = explanation(&ev, "share_daily", Target::Event);
    assert!(cap.applied);
    assert_eq!(cap.reason, "daily count cap reached (3)");
    // Other rules are outside the share cap's scope.
    assert_eq!(evaluate(&event(Behaviour::Review), &m, &set).member_points(), 20);
}

#[test]
fn daily_cap_trims_lines_in_order_and_keeps_the_sum_exact() {
    let set = example();
    let mut m = member("regular");
    m.today = usage("base", 1_850, 3);
    let ev = evaluate(&order(monday(), vec![line(1, 10_000), line(2, 10_000), line(3, 10_000)]), &m, &set);
    assert_eq!([line_points(&ev, 1), line_points(&ev, 2), line_points(&ev, 3)], [100, 50, 0]);
    assert_eq!(ev.member_points(), 150);
    assert_eq!(ev.effects[1].uncapped_points, 100);
    assert_eq!(ev.member_growth(), 300, "growth value is never capped");
    assert_eq!(
        explanation(&ev, "daily_points", Target::Order).reason,
        "daily cap reached (2000): 150 of 300 point(s) kept"
    );
    m.today = usage("base", 2_000, 4);
    let ev = evaluate(&order(monday(), vec![line(1, 10_000)]), &m, &set);
    assert_eq!(ev.member_points(), 0);
    assert_eq!(
        explanation(&ev, "daily_points", Target::Order).reason,
        "daily cap reached (2000): 0 of 100 point(s) kept"
    );
}

#[test]
fn monthly_cap_counts_the_whole_month() {
    let set = example();
    let mut m = member("regular");
    m.this_month = Usage {
        by_rule: BTreeMap::from([
            ("base".to_string(), RuleUsage { points: 19_000, count: 40 }),
            ("check_in".to_string(), RuleUsage { points: 960, count: 20 }),
        ]),
    };
    let ev = evaluate(&order(monday(), vec![line(1, 10_000)]), &m, &set);
    assert_eq!(ev.member_points(), 40);
    assert!(explanation(&ev, "monthly_points", Target::Order).applied);
}

#[test]
fn referral_rewards_both_sides_on_the_first_paid_order_only() {
    let set = example();
    let mut m = member("regular");
    m.referred_by = Some(42);
    m.first_paid_order = true;
    let ev = evaluate(&order(monday(), vec![line(1, 10_000)]), &m, &set);
    let referral: Vec<&Effect> = ev.effects.iter().filter(|e| e.rule_id == "referral").collect();
    assert_eq!(referral.len(), 2);
    assert_eq!(referral[0].beneficiary, Beneficiary::Member);
    assert_eq!(referral[0].points, 500);
    assert_eq!(referral[1].beneficiary, Beneficiary::Referrer { member_id: 42 });
    assert_eq!(referral[1].points, 500);
    assert_eq!(ev.member_points(), 600);

    let RuleInput::Order(mut unpaid) = order(monday(), vec![line(1, 10_000)]) else { unreachable!() };
    unpaid.paid = false;
    let ev = evaluate(&RuleInput::Order(unpaid), &m, &set);
    assert_eq!(explanation(&ev, "referral", Target::Order).reason, "order is not paid yet");

    m.first_paid_order = false;
    let ev = evaluate(&order(monday(), vec![line(1, 10_000)]), &m, &set);
    assert!(ev.effects.iter().all(|e| e.rule_id != "referral"));
    assert_eq!(explanation(&ev, "referral", Target::Order).reason, "not the member's first paid order");
}

#[test]
fn every_rule_and_cap_is_explained_for_every_kind_of_input() {
    let set = example();
    let m = member("regular");
    let inputs = [
        order(monday(), vec![line(1, 10_000)]),
        order(monday(), vec![]),
        event(Behaviour::Registration),
        event(Behaviour::CheckIn { streak_day: 3 }),
        event(Behaviour::Share),
        event(Behaviour::Review),
        event(Behaviour::ProfileCompletion),
    ];
    for input in &inputs {
        let ev = evaluate(input, &m, &set);
        for id in set.rules.iter().map(Rule::id).chain(set.caps.iter().map(|c| c.id.as_str())) {
            let e = ev.explanations.iter().find(|e| e.rule_id == id);
            assert!(e.is_some_and(|e| !e.reason.is_empty()), "{id} unexplained for {input:?}");
        }
    }
}

#[test]
fn invalid_rule_sets_are_rejected_with_the_field_named() {
    let field = |mutate: &dyn Fn(&mut RuleSet)| {
        let mut set = example();
        mutate(&mut set);
        set.validate().expect_err("must be rejected").field
    };
    let multiplier = |set: &mut RuleSet, i: usize| match &mut set.rules[i] {
        Rule::Multiplier(m) => m.clone(),
        _ => unreachable!(),
    };
    assert_eq!(field(&|s| s.version = 0), "version");
    assert_eq!(field(&|s| s.currency_unit = 0), "currency_unit");
    assert_eq!(
        field(&|s| {
            let mut m = multiplier(s, 4);
            m.multiplier = Factor::Fixed(0.0);
            s.rules[4] = Rule::Multiplier(m);
        }),
        "rules[4].multiplier"
    );
    assert_eq!(
        field(&|s| {
            let mut m = multiplier(s, 5);
            m.multiplier = Factor::Fixed(1.23456);
            s.rules[5] = Rule::Multiplier(m);
        }),
        "rules[5].multiplier"
    );
    assert_eq!(
        field(&|s| {
            let mut m = multiplier(s, 2);
            m.group = None;
            s.rules[2] = Rule::Multiplier(m);
        }),
        "rules[2].group"
    );
    assert_eq!(
        field(&|s| {
            let mut m = multiplier(s, 6);
            m.when = Condition::Campaign { start: m_end(), end: m_end() };
            s.rules[6] = Rule::Multiplier(m);
        }),
        "rules[6].when.end"
    );
    assert_eq!(
        field(&|s| {
            let mut m = multiplier(s, 1);
            m.when = Condition::Tier { tiers: vec![] };
            s.rules[1] = Rule::Multiplier(m);
        }),
        "rules[1].when.tiers"
    );
    assert_eq!(field(&|s| s.rules.push(s.rules[0].clone())), "rules[14].id");
    assert_eq!(
        field(&|s| {
            let Rule::Base(mut b) = s.rules[0].clone() else { unreachable!() };
            b.id = "base2".to_string();
            s.rules.push(Rule::Base(b));
        }),
        "rules[14].kind"
    );
    assert_eq!(
        field(&|s| {
            let Rule::Base(mut b) = s.rules[0].clone() else { unreachable!() };
            b.points_per_unit = -1;
            s.rules[0] = Rule::Base(b);
        }),
        "rules[0].points_per_unit"
    );
    assert_eq!(
        field(&|s| {
            let Rule::CheckIn(mut c) = s.rules[9].clone() else { unreachable!() };
            c.points_by_day.pop();
            s.rules[9] = Rule::CheckIn(c);
        }),
        "rules[9].points_by_day"
    );
    assert_eq!(
        field(&|s| {
            let Rule::CheckIn(mut c) = s.rules[9].clone() else { unreachable!() };
            c.points_by_day[2] = -3;
            s.rules[9] = Rule::CheckIn(c);
        }),
        "rules[9].points_by_day[2]"
    );
    assert_eq!(field(&|s| s.caps[2].rules = vec!["nope".to_string()]), "caps[2].rules[0]");
    assert_eq!(field(&|s| s.caps[2].rules = vec!["member_day".to_string()]), "caps[2].rules[0]");
    assert_eq!(
        field(&|s| {
            s.caps[0].points = None;
            s.caps[0].count = None;
        }),
        "caps[0].points"
    );
    assert_eq!(field(&|s| s.caps[1].id = "base".to_string()), "caps[1].id");
}

fn m_end() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2025, 11, 12).unwrap().and_hms_opt(0, 0, 0).unwrap()
}

#[test]
fn malformed_documents_fail_to_parse() {
    let bad_tz = EXAMPLE_TOML.replace("Asia/Shanghai", "Mars/Olympus");
    assert!(matches!(RuleSet::from_toml(&bad_tz), Err(RuleSetError::Parse(m)) if m.contains("Mars/Olympus")));
    let bad_kind = EXAMPLE_TOML.replace("kind = \"review\"", "kind = \"like\"");
    assert!(matches!(RuleSet::from_toml(&bad_kind), Err(RuleSetError::Parse(_))));
    let bad_stacking = EXAMPLE_TOML.replace("stacking = \"add\"", "stacking = \"last_wins\"");
    assert!(matches!(RuleSet::from_toml(&bad_stacking), Err(RuleSetError::Parse(_))));
    let invalid = r#"{"version": 1, "rules": [{"kind": "share", "id": "share", "points": -5}]}"#;
    match RuleSet::from_json(invalid) {
        Err(RuleSetError::Invalid(e)) => assert_eq!(e.field, "rules[0].points"),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn rule_order_from_draft_reads_the_catalog() {
    let input = crate::commerce::order::OrderInput {
        channel: "tmall".to_string(),
        order_no: "A1".to_string(),
        store: None,
        member_id: Some(7),
        identity: None,
        status: OrderStatus::Paid,
        placed_at: monday(),
        paid_at: None,
        currency: None,
        lines: vec![crate::commerce::order::LineInput {
            sku: "TEA-1".to_string(),
            quantity: 2,
            unit_price: 5_000,
            discount: 500,
            kind: LineKind::Product,
            name: None,
            category_path: None,
            brand: None,
        }],
        shipping_fee: 800,
        order_discount: 0,
        coupon_code: None,
        total: None,
    };
    let draft = input.validate("CNY", monday()).expect("valid order");
    let o = RuleOrder::from_draft(&draft, |_| (Some("茶饮".to_string()), Some("青禾".to_string())));
    assert!(o.paid);
    assert_eq!(o.shipping_fee, 800);
    assert_eq!(o.lines[0].amount, 9_500);
    assert_eq!(o.lines[0].brand.as_deref(), Some("青禾"));
    let ev = evaluate(&RuleInput::Order(o), &member("regular"), &example());
    assert_eq!(ev.member_points(), 114, "95 yuan × (1 + 0.2 own brand) = 114");
}

fn arb_line() -> impl Strategy<Value = (i64, u8, u8, u8)> {
    (0i64..5_000_000, 0u8..4, 0u8..4, 0u8..3)
}

fn arb_snapshot() -> impl Strategy<Value = MemberSnapshot> {
    (0usize..5, 1u32..=12, 0i64..2_500, 0i64..25_000, 0u32..5, any::<bool>(), any::<bool>()).prop_map(
        |(tier, bmonth, day_pts, month_pts, shares, first, referred)| {
            let mut m = member(["regular", "silver", "gold", "diamond", "unknown"][tier]);
            m.birthday = NaiveDate::from_ymd_opt(1990, bmonth, 10);
            m.today = Usage {
                by_rule: BTreeMap::from([
                    ("base".to_string(), RuleUsage { points: day_pts, count: 1 }),
                    ("share".to_string(), RuleUsage { points: 5 * i64::from(shares), count: shares }),
                ]),
            };
            m.this_month = usage("base", month_pts, 10);
            m.first_paid_order = first;
            m.referred_by = referred.then_some(9);
            m
        },
    )
}

fn arb_order() -> impl Strategy<Value = RuleInput> {
    (prop::collection::vec(arb_line(), 0..12), 0i64..1_700_000_000, any::<bool>(), 0i64..2_000, any::<bool>()).prop_map(
        |(lines, secs, mp, shipping, paid)| {
            let lines = lines
                .into_iter()
                .enumerate()
                .map(|(i, (amount, kind, cat, brand))| RuleLine {
                    line_no: i as i32 + 1,
                    sku: format!("SKU-{}", i % 3),
                    category_path: [Some("美妆/护肤/面霜"), Some("礼品卡/实体卡"), Some("茶饮"), None][cat as usize]
                        .map(str::to_string),
                    brand: [Some("青禾"), Some("其他"), None][brand as usize].map(str::to_string),
                    kind: [LineKind::Product, LineKind::GiftCard, LineKind::Fee, LineKind::Product][kind as usize],
                    amount,
                })
                .collect();
            RuleInput::Order(RuleOrder {
                channel: if mp { "wechat_mp" } else { "tmall" }.to_string(),
                placed_at: DateTime::from_timestamp(secs, 0).unwrap_or_default(),
                paid,
                lines,
                shipping_fee: shipping,
            })
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Same inputs, identical output; per-line points are non-negative, one effect per earning line, and the
    /// order's total is exactly the sum of its lines (so a refund can reverse line by line).
    #[test]
    fn evaluation_is_deterministic_and_lines_sum_to_the_total(input in arb_order(), m in arb_snapshot()) {
        let set = example();
        let a = evaluate(&input, &m, &set);
        let b = evaluate(&input.clone(), &m.clone(), &set.clone());
        prop_assert_eq!(&a, &b);
        let RuleInput::Order(order) = &input else { unreachable!() };
        let line_effects: Vec<&Effect> =
            a.effects.iter().filter(|e| matches!(e.target, Target::Line { .. })).collect();
        for e in &line_effects {
            prop_assert!(e.points >= 0 && e.growth >= 0 && e.points <= e.uncapped_points);
            prop_assert_eq!(e.rule_version, 3);
        }
        let lines_no: BTreeSet<Target> = line_effects.iter().map(|e| e.target).collect();
        prop_assert_eq!(lines_no.len(), line_effects.len(), "at most one base effect per line");
        let order_level: i64 = a.effects.iter()
            .filter(|e| e.beneficiary == Beneficiary::Member && !matches!(e.target, Target::Line { .. }))
            .map(|e| e.points).sum();
        let line_sum: i64 = line_effects.iter().map(|e| e.points).sum();
        prop_assert_eq!(line_sum + order_level, a.member_points());
        // Caps hold: the day's total never exceeds 2000 unless it already did.
        let before = m.today.by_rule.values().map(|u| u.points).sum::<i64>();
        prop_assert!(a.member_points() == 0 || before + a.member_points() <= 2_000);
        // Excluded lines never earn.
        for l in &order.lines {
            if l.kind != LineKind::Product || l.category_path.as_deref().is_some_and(|p| p.starts_with("礼品卡")) {
                let target = Target::Line { line_no: l.line_no };
                prop_assert!(!line_effects.iter().any(|e| e.target == target));
            }
        }
    }

    /// Behaviour events are deterministic too, and never negative.
    #[test]
    fn behaviour_evaluation_is_deterministic(day in 0u32..40, kind in 0u8..5, m in arb_snapshot()) {
        let behaviour = match kind {
            0 => Behaviour::Registration,
            1 => Behaviour::CheckIn { streak_day: day },
            2 => Behaviour::Share,
            3 => Behaviour::Review,
            _ => Behaviour::ProfileCompletion,
        };
        let set = example();
        let input = event(behaviour);
        let a = evaluate(&input, &m, &set);
        prop_assert_eq!(&a, &evaluate(&input, &m, &set));
        prop_assert!(a.effects.iter().all(|e| e.points >= 0));
    }
}

#[test]
fn the_benefits_multiplier_reads_the_tier_and_card_and_says_so() {
    let set = example();
    // A silver member holding a PLUS card: the card's ×1.5 beats silver's ×1.2.
    let mut m = member("silver");
    m.benefits = Some(BenefitMultiplier { multiplier_bp: 15_000, sources: vec!["silver".into(), "plus".into()] });
    let ev = evaluate(&order(monday(), vec![line(1, 10_000)]), &m, &set);
    assert_eq!(ev.member_points(), 150);
    assert_eq!(ev.member_growth(), 100, "benefits do not inflate growth");
    assert_eq!(ev.effects[0].multipliers, vec!["benefits"]);
    let why = explanation(&ev, "benefits", Target::Line { line_no: 1 });
    assert!(why.applied);
    assert_eq!(why.reason, "applies to every order: benefits of silver + plus give ×1.5");
    // Without a tier program there are no benefits: the rule does not apply, and says why.
    m.benefits = None;
    let ev = evaluate(&order(monday(), vec![line(1, 10_000)]), &m, &set);
    assert_eq!(ev.member_points(), 100);
    let why = explanation(&ev, "benefits", Target::Order);
    assert!(!why.applied);
    assert_eq!(why.reason, "the member has no tier benefits (no tier program)");
}

#[test]
fn a_multiplier_is_a_number_or_benefits_and_nothing_else() {
    let parse =
        |m: &str| RuleSet::from_toml(&EXAMPLE_TOML.replace(r#"multiplier = "benefits""#, &format!("multiplier = {m}")));
    assert!(parse("2").is_ok(), "an integer factor");
    assert!(parse("1.25").is_ok());
    assert!(parse(r#""benefits""#).is_ok());
    assert!(parse(r#""tier""#).is_err(), "an unknown source is refused");
}
