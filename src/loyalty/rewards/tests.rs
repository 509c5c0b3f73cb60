use proptest::prelude::*;

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("test time")
}

/// A 200-point coupon with 10 units of stock, open to everyone, always.
fn coupon() -> Reward {
    Reward {
        id: "coupon-20".into(),
        name: "满199减20 优惠券".into(),
        description: String::new(),
        kind: RewardKind::Coupon { template_id: "tpl_20_off_199".into() },
        points: 200,
        cash: 0,
        stock: Some(10),
        limits: Vec::new(),
        windows: Vec::new(),
        tiers: Vec::new(),
        active: true,
    }
}

fn ctx() -> RedeemContext {
    RedeemContext {
        tier: "银卡".into(),
        history: Vec::new(),
        stock_left: 10,
        available_points: 1_000,
        blocked: None,
        time_zone: chrono_tz::Asia::Shanghai,
        seed: 7,
    }
}

fn done(at: &str) -> PastRedemption {
    PastRedemption { at: t(at), state: RedemptionState::Completed }
}

fn lottery() -> Reward {
    Reward {
        id: "spring-draw".into(),
        name: "春季抽奖".into(),
        kind: RewardKind::Lottery(Lottery {
            prizes: vec![
                Prize {
                    id: "kettle".into(),
                    name: "青禾 electric kettle".into(),
                    weight: 1,
                    kind: PrizeKind::Goods { sku: "KETTLE-01".into() },
                },
                Prize {
                    id: "coupon-50".into(),
                    name: "50 off".into(),
                    weight: 9,
                    kind: PrizeKind::Coupon { template_id: "tpl_50".into() },
                },
                Prize {
                    id: "points-100".into(),
                    name: "100 points".into(),
                    weight: 30,
                    kind: PrizeKind::Points { points: 100 },
                },
                Prize { id: "retired".into(), name: "retired prize".into(), weight: 0, kind: PrizeKind::Service },
            ],
            no_prize_weight: 60,
        }),
        points: 50,
        stock: None,
        ..coupon()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Definition and validation
// ---------------------------------------------------------------------------------------------------------

const EXAMPLE_JSON: &str = r#"{
  "id": "tea-sampler",
  "name": "青禾 tea sampler",
  "kind": { "type": "goods", "sku": "TEA-SAMPLER" },
  "points": 1500,
  "cash": 990,
  "stock": 300,
  "limits": [ { "period": "month", "count": 1 }, { "period": "total", "count": 3 } ],
  "windows": [
    { "type": "monthly", "from_day": 20 },
    { "type": "daily", "start": "10:00:00", "end": "22:00:00" }
  ],
  "tiers": ["金卡", "钻石"]
}"#;

#[test]
fn a_reward_parses_from_json_with_defaults() {
    let r = Reward::from_json(EXAMPLE_JSON).unwrap();
    assert!(r.active, "active by default");
    assert_eq!(r.kind, RewardKind::Goods { sku: "TEA-SAMPLER".into() });
    assert_eq!((r.points, r.cash, r.stock), (1500, 990, Some(300)));
    assert_eq!(r.windows[0], Window::Monthly { from_day: 20, to_day: None });
    let back: Reward = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    let l: Reward = serde_json::from_str(&serde_json::to_string(&lottery()).unwrap()).unwrap();
    assert_eq!(l, lottery());
    lottery().validate().unwrap();
    let weekly: Window = serde_json::from_str(r#"{"type":"weekly","days":["Sat","Sunday"]}"#).unwrap();
    assert_eq!(weekly, Window::Weekly { days: vec![Weekday::Sat, Weekday::Sun] });
}

#[test]
fn unknown_fields_and_kinds_do_not_parse() {
    let extra = EXAMPLE_JSON.replace("\"cash\"", "\"price\"");
    assert!(matches!(Reward::from_json(&extra), Err(RewardError::Parse(_))));
    let kind = EXAMPLE_JSON.replace(r#""type": "goods", "sku""#, r#""type": "goods", "code""#);
    assert!(matches!(Reward::from_json(&kind), Err(RewardError::Parse(_))));
    let lottery_extra = r#"{"type":"lottery","prizes":[],"no_prize":1}"#;
    assert!(serde_json::from_str::<RewardKind>(lottery_extra).is_err());
}

fn field_of(r: &Reward) -> (String, &'static str) {
    let e = r.validate().unwrap_err();
    (e.field, e.code)
}

#[test]
fn validation_names_the_field() {
    let mut r = coupon();
    r.id = "Coupon 20".into();
    assert_eq!(field_of(&r), ("id".into(), "invalid_code"));

    let mut r = coupon();
    r.name = "  ".into();
    assert_eq!(field_of(&r), ("name".into(), "missing_field"));

    let mut r = coupon();
    r.points = 0;
    assert_eq!(field_of(&r), ("points".into(), "out_of_range"));

    let mut r = coupon();
    r.cash = -1;
    assert_eq!(field_of(&r), ("cash".into(), "out_of_range"));

    let mut r = coupon();
    r.stock = Some(-1);
    assert_eq!(field_of(&r), ("stock".into(), "out_of_range"));

    let mut r = coupon();
    r.kind = RewardKind::Coupon { template_id: String::new() };
    assert_eq!(field_of(&r), ("kind.template_id".into(), "missing_field"));

    let mut r = coupon();
    r.limits = vec![Limit { period: LimitPeriod::Day, count: 1 }, Limit { period: LimitPeriod::Day, count: 2 }];
    assert_eq!(field_of(&r), ("limits[1].period".into(), "duplicate"));

    let mut r = coupon();
    r.limits = vec![Limit { period: LimitPeriod::Month, count: 0 }];
    assert_eq!(field_of(&r), ("limits[0].count".into(), "out_of_range"));

    let mut r = coupon();
    r.windows = vec![Window::Weekly { days: vec![Weekday::Sat] }, Window::Monthly { from_day: 20, to_day: Some(19) }];
    assert_eq!(field_of(&r), ("windows[1].to_day".into(), "out_of_range"));

    let mut r = coupon();
    r.windows = vec![Window::Monthly { from_day: 0, to_day: None }];
    assert_eq!(field_of(&r), ("windows[0].from_day".into(), "out_of_range"));

    let mut r = coupon();
    r.windows = vec![Window::Weekly { days: vec![Weekday::Sat, Weekday::Sat] }];
    assert_eq!(field_of(&r), ("windows[0].days[1]".into(), "duplicate"));

    let mut r = coupon();
    r.windows = vec![Window::Weekly { days: vec![] }];
    assert_eq!(field_of(&r), ("windows[0].days".into(), "empty"));

    let mut r = coupon();
    let ten = NaiveTime::from_hms_opt(10, 0, 0).unwrap();
    r.windows = vec![Window::Daily { start: ten, end: ten }];
    assert_eq!(field_of(&r), ("windows[0].end".into(), "out_of_range"));

    let mut r = coupon();
    r.windows = vec![Window::Fixed { start: None, end: None }];
    assert_eq!(field_of(&r), ("windows[0].start".into(), "missing_field"));

    let mut r = coupon();
    r.tiers = vec!["金卡".into(), "金卡".into()];
    assert_eq!(field_of(&r), ("tiers[1]".into(), "duplicate"));

    let mut r = coupon();
    r.tiers = vec![" ".into()];
    assert_eq!(field_of(&r), ("tiers[0]".into(), "missing_field"));
}

#[test]
fn lottery_validation_names_the_prize() {
    let with = |f: &dyn Fn(&mut Lottery)| {
        let mut r = lottery();
        let RewardKind::Lottery(l) = &mut r.kind else { unreachable!() };
        f(l);
        field_of(&r)
    };
    assert_eq!(with(&|l| l.prizes[1].id = "kettle".into()), ("kind.prizes[1].id".into(), "duplicate"));
    assert_eq!(with(&|l| l.prizes[2].name = String::new()), ("kind.prizes[2].name".into(), "missing_field"));
    assert_eq!(
        with(&|l| l.prizes[2].kind = PrizeKind::Points { points: 0 }),
        ("kind.prizes[2].kind.points".into(), "out_of_range")
    );
    assert_eq!(with(&|l| l.prizes[1].weight = MAX_TOTAL_WEIGHT), ("kind.prizes[1].weight".into(), "out_of_range"));
    assert_eq!(with(&|l| l.no_prize_weight = MAX_TOTAL_WEIGHT - 39), ("kind.no_prize_weight".into(), "out_of_range"));
    assert_eq!(with(&|l| l.prizes.iter_mut().for_each(|p| p.weight = 0)), ("kind.prizes".into(), "out_of_range"));
    assert_eq!(with(&|l| l.prizes.clear()), ("kind.prizes".into(), "empty"));
}

// ---------------------------------------------------------------------------------------------------------
// Each refusal, and the plan
// ---------------------------------------------------------------------------------------------------------

#[test]
fn an_accepted_redemption_debits_the_cost_and_takes_one_unit() {
    let mut r = coupon();
    r.cash = 990;
    let plan = check(&r, &ctx(), t("2026-03-01T02:00:00Z")).unwrap();
    assert_eq!(
        plan,
        Plan {
            reward_id: "coupon-20".into(),
            points: 200,
            cash: 990,
            take_stock: 1,
            deliver: Deliver::Coupon { template_id: "tpl_20_off_199".into() },
            prize: None,
        }
    );
    // Unlimited stock takes nothing, whatever the store says is left.
    r.stock = None;
    let c = RedeemContext { stock_left: 0, ..ctx() };
    assert_eq!(check(&r, &c, t("2026-03-01T02:00:00Z")).unwrap().take_stock, 0);
    // Exactly enough points is enough.
    let c = RedeemContext { available_points: 200, ..ctx() };
    assert_eq!(check(&coupon(), &c, t("2026-03-01T02:00:00Z")).unwrap().points, 200);
}

#[test]
fn every_refusal_is_machine_readable_and_in_words() {
    let now = t("2026-03-01T02:00:00Z");

    let r = Reward { active: false, ..coupon() };
    let e = check(&r, &ctx(), now).unwrap_err();
    assert_eq!(e, RedeemRefusal::Inactive);
    assert_eq!((e.code(), e.to_string().as_str()), ("inactive", "this reward is not available for redemption"));

    let c = RedeemContext { stock_left: 0, ..ctx() };
    let e = check(&coupon(), &c, now).unwrap_err();
    assert_eq!((e.code(), e.to_string().as_str()), ("out_of_stock", "this reward is out of stock"));

    let r = Reward { tiers: vec!["金卡".into(), "钻石".into()], ..coupon() };
    let e = check(&r, &ctx(), now).unwrap_err();
    assert_eq!(e, RedeemRefusal::TierNotAllowed { tier: "银卡".into(), allowed: vec!["金卡".into(), "钻石".into()] });
    assert_eq!(e.to_string(), "tier 银卡 may not redeem this reward (allowed: 金卡, 钻石)");
    let gold = RedeemContext { tier: "金卡".into(), ..ctx() };
    assert!(check(&r, &gold, now).is_ok());

    let c = RedeemContext { available_points: -30, ..ctx() };
    let e = check(&coupon(), &c, now).unwrap_err();
    assert_eq!(e, RedeemRefusal::Blocked { reason: BlockReason::NegativeBalance { balance: -30 } });
    assert_eq!(e.to_string(), "redemptions are blocked: the points balance is negative (-30)");

    let c = RedeemContext { blocked: Some(BlockReason::RiskFlag { rule: "earn_per_hour".into() }), ..ctx() };
    let e = check(&coupon(), &c, now).unwrap_err();
    assert_eq!(e.code(), "blocked");
    assert_eq!(e.to_string(), "redemptions are blocked: the account is flagged for review (rule earn_per_hour)");

    let r = Reward { limits: vec![Limit { period: LimitPeriod::Total, count: 2 }], ..coupon() };
    let c = RedeemContext { history: vec![done("2025-01-01T00:00:00Z"), done("2025-06-01T00:00:00Z")], ..ctx() };
    let e = check(&r, &c, now).unwrap_err();
    assert_eq!(e, RedeemRefusal::LimitReached { period: LimitPeriod::Total, limit: 2, resets_at: None });
    assert_eq!(e.to_string(), "limit reached: at most 2 times in total");

    let c = RedeemContext { available_points: 199, ..ctx() };
    let e = check(&coupon(), &c, now).unwrap_err();
    assert_eq!(e, RedeemRefusal::InsufficientPoints { available: 199, cost: 200 });
    assert_eq!(e.to_string(), "not enough points: 199 available, 200 needed");
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        serde_json::json!({ "code": "insufficient_points", "available": 199, "cost": 200 })
    );

    let r = Reward { windows: vec![Window::Weekly { days: vec![Weekday::Sat] }], ..coupon() };
    let e = check(&r, &ctx(), now).unwrap_err();
    // 2026-03-01 is a Sunday; next Saturday 2026-03-07 00:00 local is 16:00 UTC on the 6th.
    assert_eq!(e, RedeemRefusal::OutsideWindow { next_opening: Some(t("2026-03-06T16:00:00Z")) });
    assert_eq!(e.to_string(), "outside the redemption window; it opens next at 2026-03-06 16:00:00 UTC");
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        serde_json::json!({ "code": "outside_window", "next_opening": "2026-03-06T16:00:00Z" })
    );
}

#[test]
fn the_first_failing_check_wins_in_the_documented_order() {
    let now = t("2026-03-01T02:00:00Z");
    // Everything wrong at once.
    let r = Reward {
        active: true,
        windows: vec![Window::Weekly { days: vec![Weekday::Sat] }],
        tiers: vec!["金卡".into()],
        limits: vec![Limit { period: LimitPeriod::Day, count: 1 }],
        ..coupon()
    };
    let mut c = RedeemContext {
        stock_left: 0,
        available_points: -5,
        history: vec![done("2026-03-01T01:00:00Z")],
        blocked: Some(BlockReason::RiskFlag { rule: "x".into() }),
        ..ctx()
    };
    let inactive = Reward { active: false, ..r.clone() };
    assert_eq!(check(&inactive, &c, now).unwrap_err().code(), "inactive");
    assert_eq!(check(&r, &c, now).unwrap_err().code(), "outside_window");
    let r = Reward { windows: vec![], ..r };
    assert_eq!(check(&r, &c, now).unwrap_err().code(), "out_of_stock");
    c.stock_left = 1;
    assert_eq!(check(&r, &c, now).unwrap_err().code(), "tier_not_allowed");
    c.tier = "金卡".into();
    assert_eq!(
        check(&r, &c, now).unwrap_err(),
        RedeemRefusal::Blocked { reason: BlockReason::NegativeBalance { balance: -5 } }
    );
    c.available_points = 5;
    assert_eq!(
        check(&r, &c, now).unwrap_err(),
        RedeemRefusal::Blocked { reason: BlockReason::RiskFlag { rule: "x".into() } }
    );
    c.blocked = None;
    assert_eq!(check(&r, &c, now).unwrap_err().code(), "limit_reached");
    c.history.clear();
    assert_eq!(check(&r, &c, now).unwrap_err().code(), "insufficient_points");
    c.available_points = 200;
    assert!(check(&r, &c, now).is_ok());
}

// ---------------------------------------------------------------------------------------------------------
// Windows, in Asia/Shanghai local time
// ---------------------------------------------------------------------------------------------------------

fn window_answer(windows: Vec<Window>, now: &str) -> Result<(), Option<DateTime<Utc>>> {
    let r = Reward { windows, ..coupon() };
    match check(&r, &ctx(), t(now)) {
        Ok(_) => Ok(()),
        Err(RedeemRefusal::OutsideWindow { next_opening }) => Err(next_opening),
        Err(other) => panic!("unexpected refusal {other:?}"),
    }
}

#[test]
fn monthly_from_the_20th_opens_at_local_midnight_and_closes_at_month_end() {
    let w = || vec![Window::Monthly { from_day: 20, to_day: None }];
    // Local 2026-01-19 23:59:59 is still outside; it opens at local midnight, 16:00 UTC on the 19th.
    assert_eq!(window_answer(w(), "2026-01-19T15:59:59Z"), Err(Some(t("2026-01-19T16:00:00Z"))));
    assert_eq!(window_answer(w(), "2026-01-19T16:00:00Z"), Ok(()));
    // Early in the month it opens on the 20th of the same month.
    assert_eq!(window_answer(w(), "2026-01-05T00:00:00Z"), Err(Some(t("2026-01-19T16:00:00Z"))));
    // Last second of local 31 January is inside; local 1 February is outside until 20 February.
    assert_eq!(window_answer(w(), "2026-01-31T15:59:59Z"), Ok(()));
    assert_eq!(window_answer(w(), "2026-01-31T16:00:00Z"), Err(Some(t("2026-02-19T16:00:00Z"))));
    // UTC says 31 January, local says 1 February: local wins.
    assert_eq!(window_answer(w(), "2026-01-31T20:00:00Z"), Err(Some(t("2026-02-19T16:00:00Z"))));
    // Across the year end.
    assert_eq!(window_answer(w(), "2026-12-31T16:00:00Z"), Err(Some(t("2027-01-19T16:00:00Z"))));
}

#[test]
fn monthly_windows_follow_month_lengths() {
    // Days 10 to 15: closes at local midnight after the 15th.
    let w = || vec![Window::Monthly { from_day: 10, to_day: Some(15) }];
    assert_eq!(window_answer(w(), "2026-03-15T15:59:59Z"), Ok(()));
    assert_eq!(window_answer(w(), "2026-03-15T16:00:00Z"), Err(Some(t("2026-04-09T16:00:00Z"))));
    // From the 30th: February 2026 has no such day, so the next opening is 30 March.
    let w = || vec![Window::Monthly { from_day: 30, to_day: Some(31) }];
    assert_eq!(window_answer(w(), "2026-02-10T00:00:00Z"), Err(Some(t("2026-03-29T16:00:00Z"))));
    // `to_day = 31` in April means 30 April, so 1 May is outside.
    assert_eq!(window_answer(w(), "2026-04-30T15:59:59Z"), Ok(()));
    assert_eq!(window_answer(w(), "2026-04-30T16:00:00Z"), Err(Some(t("2026-05-29T16:00:00Z"))));
    // The 29th of February exists in 2028.
    let w = || vec![Window::Monthly { from_day: 29, to_day: None }];
    assert_eq!(window_answer(w(), "2028-02-28T16:00:00Z"), Ok(()));
    assert_eq!(window_answer(w(), "2027-02-05T00:00:00Z"), Err(Some(t("2027-03-28T16:00:00Z"))));
}

#[test]
fn windows_narrow_each_other() {
    let ten = NaiveTime::from_hms_opt(10, 0, 0).unwrap();
    let ten_pm = NaiveTime::from_hms_opt(22, 0, 0).unwrap();
    let w =
        || vec![Window::Weekly { days: vec![Weekday::Sat, Weekday::Sun] }, Window::Daily { start: ten, end: ten_pm }];
    // Friday 2026-03-06 23:00 local → Saturday 10:00 local = 02:00 UTC.
    assert_eq!(window_answer(w(), "2026-03-06T15:00:00Z"), Err(Some(t("2026-03-07T02:00:00Z"))));
    assert_eq!(window_answer(w(), "2026-03-07T02:00:00Z"), Ok(()));
    assert_eq!(window_answer(w(), "2026-03-07T13:59:59Z"), Ok(()));
    // Saturday 22:00 local is closed; Sunday 10:00 opens.
    assert_eq!(window_answer(w(), "2026-03-07T14:00:00Z"), Err(Some(t("2026-03-08T02:00:00Z"))));
    // Sunday 22:00 → next Saturday 10:00.
    assert_eq!(window_answer(w(), "2026-03-08T14:00:00Z"), Err(Some(t("2026-03-14T02:00:00Z"))));

    // A campaign in local May 2026, from the 20th, on Saturdays: 23 May is the only match in that month,
    // and after the campaign it never opens again.
    let w = || {
        vec![
            Window::Fixed {
                start: Some(NaiveDate::from_ymd_opt(2026, 5, 1).unwrap().and_time(NaiveTime::MIN)),
                end: Some(NaiveDate::from_ymd_opt(2026, 6, 1).unwrap().and_time(NaiveTime::MIN)),
            },
            Window::Monthly { from_day: 20, to_day: None },
            Window::Weekly { days: vec![Weekday::Sat] },
        ]
    };
    assert_eq!(window_answer(w(), "2026-01-01T00:00:00Z"), Err(Some(t("2026-05-22T16:00:00Z"))));
    assert_eq!(window_answer(w(), "2026-05-23T04:00:00Z"), Ok(()));
    assert_eq!(window_answer(w(), "2026-05-30T15:59:59Z"), Ok(()));
    assert_eq!(window_answer(w(), "2026-05-30T16:00:00Z"), Err(None));
    let r = Reward { windows: w(), ..coupon() };
    let e = check(&r, &ctx(), t("2026-07-01T00:00:00Z")).unwrap_err();
    assert_eq!(e.to_string(), "outside the redemption window; it does not open again");
}

#[test]
fn a_fixed_window_is_half_open() {
    let start = NaiveDate::from_ymd_opt(2026, 6, 18).unwrap().and_time(NaiveTime::MIN);
    let w = || vec![Window::Fixed { start: Some(start), end: None }];
    assert_eq!(window_answer(w(), "2026-06-17T15:59:59Z"), Err(Some(t("2026-06-17T16:00:00Z"))));
    assert_eq!(window_answer(w(), "2026-06-17T16:00:00Z"), Ok(()));
    let w = || vec![Window::Fixed { start: None, end: Some(start) }];
    assert_eq!(window_answer(w(), "2026-06-17T15:59:59Z"), Ok(()));
    assert_eq!(window_answer(w(), "2026-06-17T16:00:00Z"), Err(None));
}

#[test]
fn windows_that_never_meet_have_no_next_opening() {
    // The 31st of a month in a fixed window covering only February.
    let w = vec![
        Window::Fixed {
            start: Some(NaiveDate::from_ymd_opt(2026, 2, 1).unwrap().and_time(NaiveTime::MIN)),
            end: Some(NaiveDate::from_ymd_opt(2026, 3, 1).unwrap().and_time(NaiveTime::MIN)),
        },
        Window::Monthly { from_day: 31, to_day: None },
    ];
    assert_eq!(window_answer(w, "2026-01-01T00:00:00Z"), Err(None));
}

#[test]
fn windows_use_the_given_time_zone() {
    let r = Reward { windows: vec![Window::Monthly { from_day: 20, to_day: None }], ..coupon() };
    let utc = RedeemContext { time_zone: chrono_tz::UTC, ..ctx() };
    assert_eq!(
        check(&r, &utc, t("2026-01-19T16:00:00Z")).unwrap_err(),
        RedeemRefusal::OutsideWindow { next_opening: Some(t("2026-01-20T00:00:00Z")) }
    );
    // New York: 2026-03-08 02:00 does not exist (clocks go to 03:00); a window opening then opens at 03:00
    // EDT, 07:00 UTC.
    let ny = RedeemContext { time_zone: chrono_tz::America::New_York, ..ctx() };
    let two = NaiveTime::from_hms_opt(2, 0, 0).unwrap();
    let r = Reward {
        windows: vec![Window::Daily { start: two, end: NaiveTime::from_hms_opt(4, 0, 0).unwrap() }],
        ..coupon()
    };
    assert_eq!(
        check(&r, &ny, t("2026-03-08T06:30:00Z")).unwrap_err(),
        RedeemRefusal::OutsideWindow { next_opening: Some(t("2026-03-08T07:00:00Z")) }
    );
}

// ---------------------------------------------------------------------------------------------------------
// Per-member limits
// ---------------------------------------------------------------------------------------------------------

fn limit_answer(limits: Vec<Limit>, history: Vec<PastRedemption>, now: &str) -> Result<(), RedeemRefusal> {
    let r = Reward { limits, ..coupon() };
    let c = RedeemContext { history, ..ctx() };
    check(&r, &c, t(now)).map(|_| ())
}

#[test]
fn monthly_limits_follow_local_months() {
    let once_a_month = || vec![Limit { period: LimitPeriod::Month, count: 1 }];
    // Redeemed at local 2026-01-31 23:30.
    let h = || vec![done("2026-01-31T15:30:00Z")];
    assert_eq!(
        limit_answer(once_a_month(), h(), "2026-01-31T15:59:59Z"),
        Err(RedeemRefusal::LimitReached {
            period: LimitPeriod::Month,
            limit: 1,
            resets_at: Some(t("2026-01-31T16:00:00Z"))
        })
    );
    assert_eq!(
        limit_answer(once_a_month(), h(), "2026-01-31T15:59:59Z").unwrap_err().to_string(),
        "limit reached: at most 1 time per month; again from 2026-01-31 16:00:00 UTC"
    );
    // Local 1 February 00:00 is a new month, though UTC still says 31 January.
    assert_eq!(limit_answer(once_a_month(), h(), "2026-01-31T16:00:00Z"), Ok(()));
    // A redemption at UTC 31 January 20:00 is local 1 February: it uses February's quota.
    let h = vec![done("2026-01-31T20:00:00Z")];
    assert!(limit_answer(once_a_month(), h.clone(), "2026-02-27T00:00:00Z").is_err());
    assert_eq!(limit_answer(once_a_month(), h, "2026-01-31T15:00:00Z"), Ok(()));
}

#[test]
fn day_week_and_year_limits_reset_at_local_boundaries() {
    let daily = || vec![Limit { period: LimitPeriod::Day, count: 2 }];
    let h = || vec![done("2026-03-01T16:00:00Z"), done("2026-03-02T15:59:59Z")];
    // Both are local 2 March.
    assert_eq!(
        limit_answer(daily(), h(), "2026-03-02T10:00:00Z"),
        Err(RedeemRefusal::LimitReached {
            period: LimitPeriod::Day,
            limit: 2,
            resets_at: Some(t("2026-03-02T16:00:00Z"))
        })
    );
    assert_eq!(limit_answer(daily(), h(), "2026-03-02T16:00:00Z"), Ok(()));

    // ISO weeks: local Sunday 2026-01-04 is in week 1 of 2026, which started on Monday 2025-12-29.
    let weekly = || vec![Limit { period: LimitPeriod::Week, count: 1 }];
    let h = || vec![done("2025-12-29T01:00:00Z")];
    assert_eq!(
        limit_answer(weekly(), h(), "2026-01-04T15:59:59Z"),
        Err(RedeemRefusal::LimitReached {
            period: LimitPeriod::Week,
            limit: 1,
            resets_at: Some(t("2026-01-04T16:00:00Z"))
        })
    );
    assert_eq!(limit_answer(weekly(), h(), "2026-01-04T16:00:00Z"), Ok(()));

    let yearly = || vec![Limit { period: LimitPeriod::Year, count: 1 }];
    let h = || vec![done("2026-06-01T00:00:00Z")];
    assert_eq!(
        limit_answer(yearly(), h(), "2026-12-31T15:59:59Z"),
        Err(RedeemRefusal::LimitReached {
            period: LimitPeriod::Year,
            limit: 1,
            resets_at: Some(t("2026-12-31T16:00:00Z"))
        })
    );
    assert_eq!(limit_answer(yearly(), h(), "2026-12-31T16:00:00Z"), Ok(()));
}

#[test]
fn cancelled_redemptions_do_not_count_and_the_longest_period_is_reported_first() {
    let cancelled = PastRedemption { at: t("2026-03-02T01:00:00Z"), state: RedemptionState::Cancelled };
    let daily = vec![Limit { period: LimitPeriod::Day, count: 1 }];
    assert_eq!(limit_answer(daily, vec![cancelled], "2026-03-02T02:00:00Z"), Ok(()));

    // Both the day and the month are used up: the month is what the member needs to hear.
    let limits = vec![Limit { period: LimitPeriod::Day, count: 1 }, Limit { period: LimitPeriod::Month, count: 2 }];
    let h = vec![done("2026-03-01T01:00:00Z"), done("2026-03-02T01:00:00Z")];
    assert_eq!(
        limit_answer(limits.clone(), h.clone(), "2026-03-02T02:00:00Z"),
        Err(RedeemRefusal::LimitReached {
            period: LimitPeriod::Month,
            limit: 2,
            resets_at: Some(t("2026-03-31T16:00:00Z"))
        })
    );
    // Only the day is used up.
    assert_eq!(limit_answer(limits, h[1..].to_vec(), "2026-03-02T02:00:00Z").unwrap_err().code(), "limit_reached");
}

// ---------------------------------------------------------------------------------------------------------
// Lottery draws
// ---------------------------------------------------------------------------------------------------------

#[test]
fn a_draw_is_a_pure_function_of_reward_and_seed() {
    let r = lottery();
    let c = RedeemContext { seed: draw_seed("redeem-8d1f"), ..ctx() };
    let first = check(&r, &c, t("2026-03-01T02:00:00Z")).unwrap();
    for _ in 0..5 {
        assert_eq!(check(&r, &c, t("2026-03-01T03:00:00Z")).unwrap(), first, "a retry draws the same prize");
    }
    assert_eq!(draw_seed("redeem-8d1f"), draw_seed("redeem-8d1f"));
    assert_ne!(draw_seed("redeem-8d1f"), draw_seed("redeem-8d1g"));
    let RewardKind::Lottery(l) = &r.kind else { unreachable!() };
    // The formula is the contract: these values must never change.
    assert_eq!(draw_seed("k"), 0x8254c329a92850f6);
    // Rolls of seeds 0..10, computed independently from the documented formula.
    let rolls: Vec<u64> = (0..10).map(|s| draw("spring-draw", l, s).roll).collect();
    assert_eq!(rolls, vec![76, 65, 5, 71, 46, 24, 27, 67, 96, 35]);
    assert_eq!(
        draw("spring-draw", l, 2),
        DrawnPrize { prize_id: Some("coupon-50".into()), roll: 5, total_weight: 100 }
    );
    assert_eq!(draw("spring-draw", l, 0).prize_id, None);
    // The same seed on another reward is an independent draw.
    let rolls: Vec<u64> = (0..20).map(|s| draw("spring-draw", l, s).roll).collect();
    let other: Vec<u64> = (0..20).map(|s| draw("autumn-draw", l, s).roll).collect();
    assert_ne!(rolls, other);
    // The plan delivers what the drawn prize gives.
    let prize = first.prize.clone().unwrap();
    let expected = match prize.prize_id.as_deref() {
        None => Deliver::Nothing,
        Some("kettle") => Deliver::Goods { sku: "KETTLE-01".into() },
        Some("coupon-50") => Deliver::Coupon { template_id: "tpl_50".into() },
        Some("points-100") => Deliver::Points { points: 100 },
        Some(other) => panic!("drew {other}"),
    };
    assert_eq!(first.deliver, expected);
    assert_eq!((first.points, first.take_stock), (50, 0));
}

#[test]
fn draws_pick_the_cumulative_range_of_the_roll() {
    let RewardKind::Lottery(l) = &lottery().kind else { unreachable!() };
    // Find seeds rolling at the range edges: 0 → kettle, 1..10 → coupon, 10..40 → points, 40.. → nothing.
    let expect = |roll: u64| match roll {
        0 => Some("kettle"),
        1..=9 => Some("coupon-50"),
        10..=39 => Some("points-100"),
        _ => None,
    };
    for seed in 0..2_000 {
        let d = draw("spring-draw", l, seed);
        assert_eq!(d.prize_id.as_deref(), expect(d.roll), "seed {seed} roll {}", d.roll);
    }
}

#[test]
fn draws_follow_the_weights_over_many_seeds() {
    let RewardKind::Lottery(l) = &lottery().kind else { unreachable!() };
    let n = 100_000u64;
    let mut counts = std::collections::BTreeMap::<Option<String>, u64>::new();
    for seed in 0..n {
        *counts.entry(draw("spring-draw", l, seed).prize_id).or_default() += 1;
    }
    // Expected 1% / 9% / 30% / 60%, each within 5 standard deviations.
    let within = |key: Option<&str>, p: f64| {
        let got = counts.get(&key.map(String::from)).copied().unwrap_or(0) as f64;
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!((got - mean).abs() < 5.0 * sd, "{key:?}: {got} draws, expected about {mean}");
    };
    within(Some("kettle"), 0.01);
    within(Some("coupon-50"), 0.09);
    within(Some("points-100"), 0.30);
    within(None, 0.60);
    assert!(!counts.contains_key(&Some("retired".into())), "a zero-weight prize is never drawn");
}

// ---------------------------------------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------------------------------------

fn redeemed(reward: &Reward, seed: u64) -> Redemption {
    let plan = check(reward, &RedeemContext { seed, ..ctx() }, t("2026-03-01T02:00:00Z")).unwrap();
    Redemption::new(41, 9, &plan, t("2026-03-01T02:00:00Z"))
}

#[test]
fn cancelling_gives_back_points_cash_and_stock() {
    let mut r = coupon();
    r.cash = 990;
    let red = redeemed(&r, 0);
    assert_eq!((red.id, red.member_id, red.points, red.cash, red.stock_taken), (41, 9, 200, 990, 1));
    assert_eq!(red.state, RedemptionState::Completed);
    let c = cancel(&red, t("2026-03-02T00:00:00Z"), &CancelPolicy::default()).unwrap();
    assert_eq!((c.points_back, c.cash_back, c.stock_back), (200, 990, 1));
    assert_eq!(c.revoke, Deliver::Coupon { template_id: "tpl_20_off_199".into() });
    assert_eq!(c.redemption.state, RedemptionState::Cancelled);
    assert_eq!(c.redemption.cancelled_at, Some(t("2026-03-02T00:00:00Z")));
    // Unchanged otherwise.
    assert_eq!(Redemption { state: RedemptionState::Completed, cancelled_at: None, ..c.redemption.clone() }, red);
    // Cancelling again is refused.
    let again = cancel(&c.redemption, t("2026-03-03T00:00:00Z"), &CancelPolicy::default()).unwrap_err();
    assert_eq!(again, CancelRefusal::AlreadyCancelled { cancelled_at: Some(t("2026-03-02T00:00:00Z")) });
    assert_eq!(again.code(), "already_cancelled");
    // Goods that cannot be resold: points back, no stock back.
    let c = cancel(&red, t("2026-03-02T00:00:00Z"), &CancelPolicy { restock: false, ..Default::default() }).unwrap();
    assert_eq!((c.points_back, c.stock_back), (200, 0));
    // A clock behind the redemption's never cancels before it was made.
    let c = cancel(&red, t("2026-03-01T01:00:00Z"), &CancelPolicy::default()).unwrap();
    assert_eq!(c.redemption.cancelled_at, Some(red.created_at));
}

#[test]
fn used_items_late_cancels_and_lottery_draws_are_refused() {
    let red = redeemed(&coupon(), 0);
    let used = CancelPolicy { item_used: true, ..Default::default() };
    assert_eq!(cancel(&red, t("2026-03-02T00:00:00Z"), &used), Err(CancelRefusal::ItemUsed));

    let week = CancelPolicy { within: Some(Duration::days(7)), ..Default::default() };
    assert!(cancel(&red, t("2026-03-08T02:00:00Z"), &week).is_ok(), "the deadline itself is allowed");
    let late = cancel(&red, t("2026-03-08T02:00:01Z"), &week).unwrap_err();
    assert_eq!(late, CancelRefusal::TooLate { deadline: t("2026-03-08T02:00:00Z") });
    assert_eq!(late.to_string(), "the redemption could be cancelled until 2026-03-08 02:00:00 UTC");

    let l = lottery();
    let RewardKind::Lottery(lot) = &l.kind else { unreachable!() };
    let seed = (0..).find(|s| draw("spring-draw", lot, *s).prize_id.as_deref() == Some("points-100")).unwrap();
    let drawn = redeemed(&l, seed);
    assert_eq!(cancel(&drawn, t("2026-03-02T00:00:00Z"), &CancelPolicy::default()), Err(CancelRefusal::LotteryFinal));
    // An operator may undo a draw: the points come back and the prize points are clawed back.
    let op = CancelPolicy { allow_lottery: true, ..Default::default() };
    let c = cancel(&drawn, t("2026-03-02T00:00:00Z"), &op).unwrap();
    assert_eq!((c.points_back, c.stock_back, c.revoke), (50, 0, Deliver::Points { points: 100 }));
}

#[test]
fn records_round_trip_through_json() {
    let red = Redemption { item_ref: Some("CPN-7788".into()), ..redeemed(&lottery(), 3) };
    let json = serde_json::to_string(&red).unwrap();
    assert_eq!(serde_json::from_str::<Redemption>(&json).unwrap(), red);
    let v = serde_json::to_value(redeemed(&coupon(), 0)).unwrap();
    assert_eq!(v["state"], "completed");
    assert_eq!(v["deliver"], serde_json::json!({ "type": "coupon", "template_id": "tpl_20_off_199" }));
}

// ---------------------------------------------------------------------------------------------------------
// Invariant
// ---------------------------------------------------------------------------------------------------------

fn any_limit() -> impl Strategy<Value = Vec<Limit>> {
    proptest::collection::btree_map(0..5u8, 1..4u32, 0..3).prop_map(|m| {
        m.into_iter()
            .map(|(p, count)| {
                let period =
                    [LimitPeriod::Total, LimitPeriod::Year, LimitPeriod::Month, LimitPeriod::Week, LimitPeriod::Day]
                        [p as usize];
                Limit { period, count }
            })
            .collect()
    })
}

proptest! {
    /// Whatever the member and the reward, an accepted plan debits exactly the cost, never more than is
    /// available, and takes stock only when some is left.
    #[test]
    fn a_plan_never_overdraws_points_or_stock(
        cost in 1..5_000i64,
        available in -1_000..6_000i64,
        stock in proptest::option::of(0..5i64),
        stock_left in -2..5i64,
        limits in any_limit(),
        history in proptest::collection::vec((0..120i64, any::<bool>()), 0..6),
        minutes in 0..(60 * 24 * 90i64),
        seed in any::<u64>(),
        lottery_reward in any::<bool>(),
    ) {
        let base = if lottery_reward { lottery() } else { coupon() };
        let r = Reward { points: cost, stock, limits, ..base };
        prop_assert!(r.validate().is_ok());
        let now = t("2026-01-01T00:00:00Z") + Duration::minutes(minutes);
        let history = history
            .into_iter()
            .map(|(days_ago, ok)| PastRedemption {
                at: now - Duration::days(days_ago),
                state: if ok { RedemptionState::Completed } else { RedemptionState::Cancelled },
            })
            .collect();
        let c = RedeemContext { available_points: available, stock_left, history, seed, ..ctx() };
        match check(&r, &c, now) {
            Ok(plan) => {
                prop_assert_eq!(plan.points, cost);
                prop_assert!(plan.points <= available);
                prop_assert!(plan.take_stock == 0 || plan.take_stock == 1);
                if stock.is_some() {
                    prop_assert_eq!(plan.take_stock, 1);
                    prop_assert!(stock_left >= plan.take_stock);
                } else {
                    prop_assert_eq!(plan.take_stock, 0);
                }
                prop_assert_eq!(plan.prize.is_some(), lottery_reward);
            }
            Err(RedeemRefusal::InsufficientPoints { available: a, cost: k }) => {
                prop_assert_eq!((a, k), (available, cost));
                prop_assert!(available < cost);
            }
            Err(RedeemRefusal::OutOfStock) => prop_assert!(stock.is_some() && stock_left < 1),
            Err(RedeemRefusal::Blocked { .. }) => prop_assert!(available < 0),
            Err(RedeemRefusal::LimitReached { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected refusal {other:?}"),
        }
    }
}
