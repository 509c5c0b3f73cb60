use chrono::{Duration, TimeZone};

use super::*;
use crate::commerce::LineKind;
use crate::loyalty::ledger::{Config, State, verify};
use crate::loyalty::rules::{EXAMPLE_TOML, RuleLine};

fn rules() -> RuleSet {
    RuleSet::from_toml(EXAMPLE_TOML).expect("example rules")
}

fn facts() -> MemberFacts {
    MemberFacts {
        tier: "regular".into(),
        birthday: NaiveDate::from_ymd_opt(1990, 1, 15),
        registered_at: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
        referred_by: None,
        first_paid_order: false,
        benefits: Some(BenefitMultiplier { multiplier_bp: 10_000, sources: vec!["regular".into()] }),
    }
}

/// Monday 2025-06-02 10:00 Shanghai.
fn monday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 2, 0, 0).unwrap()
}

fn order(at: DateTime<Utc>, paid: bool, amounts: &[i64]) -> RuleOrder {
    RuleOrder {
        channel: "tmall".into(),
        placed_at: at,
        paid,
        lines: amounts
            .iter()
            .enumerate()
            .map(|(i, &amount)| RuleLine {
                line_no: i as i32 + 1,
                sku: format!("SKU-{i}"),
                category_path: Some("茶饮/绿茶".into()),
                brand: None,
                kind: LineKind::Product,
                amount,
            })
            .collect(),
        shipping_fee: 0,
    }
}

#[test]
fn an_order_earns_per_line_pending_and_a_retry_writes_nothing() {
    let mut l = Ledger::new(Config::default());
    let o = order(monday(), true, &[12_399, 5_000]);
    let first = earn_order(&mut l, 7, &o, &facts(), &rules()).unwrap();
    assert_eq!(first.subject, "order:7");
    // 123 + 50 points and the same growth value, four lots.
    let points: i64 = first.entries.iter().filter(|e| e.wallet == Wallet::Points).map(|e| e.amount).sum();
    let growth: i64 = first.entries.iter().filter(|e| e.wallet == Wallet::Growth).map(|e| e.amount).sum();
    assert_eq!((points, growth), (173, 173));
    assert_eq!(first.entries.len(), 4);
    assert!(first.entries.iter().all(|e| matches!(e.state, State::Pending { .. })));
    let keys: Vec<&str> = first.entries.iter().map(|e| e.op.as_str()).collect();
    assert_eq!(keys, ["order:7:1:points", "order:7:1:growth", "order:7:2:points", "order:7:2:growth"]);
    let again = earn_order(&mut l, 7, &o, &facts(), &rules()).unwrap();
    assert!(again.entries.is_empty());
    assert_eq!(l.entries().len(), 4);
    assert!(verify(l.entries(), l.config().negative).is_empty());
}

#[test]
fn an_unpaid_order_is_explained_but_earns_nothing() {
    let mut l = Ledger::new(Config::default());
    let e = earn_order(&mut l, 1, &order(monday(), false, &[10_000]), &facts(), &rules()).unwrap();
    assert!(e.entries.is_empty());
    assert_eq!(e.evaluation.member_points(), 100, "the evaluation still says what it would earn");
}

#[test]
fn a_refund_reverses_exactly_the_refunded_line() {
    let mut l = Ledger::new(Config::default());
    earn_order(&mut l, 3, &order(monday(), true, &[10_000, 20_000]), &facts(), &rules()).unwrap();
    let lines = [RefundedLine { line_no: 2, refunded_quantity: 1, line_quantity: 1 }];
    let out = reverse_refund(&mut l, 9, 3, &lines, monday() + Duration::days(1)).unwrap();
    let points: i64 = out.iter().filter(|e| e.wallet == Wallet::Points).map(|e| e.amount).sum();
    let growth: i64 = out.iter().filter(|e| e.wallet == Wallet::Growth).map(|e| e.amount).sum();
    assert_eq!((points, growth), (-200, -200));
    assert!(reverse_refund(&mut l, 9, 3, &lines, monday() + Duration::days(1)).unwrap().is_empty());
    let b = l.balances(monday(), Duration::days(1));
    assert_eq!((b.pending, b.growth_pending), (100, 100));
}

#[test]
fn check_in_streaks_count_consecutive_local_days() {
    let d = |day| NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
    assert_eq!(streak_on(d(10), &[]), 1);
    assert_eq!(streak_on(d(10), &[d(9), d(8), d(6)]), 3);
    assert_eq!(streak_on(d(10), &[d(8)]), 1, "a gap breaks the streak");
    assert_eq!(streak_on(d(10), &[d(9), d(9), d(10), d(11)]), 2, "duplicates and later days are ignored");
}

#[test]
fn check_in_earns_once_per_day_and_counts_against_the_daily_cap() {
    let set = rules();
    let mut l = Ledger::new(Config::default());
    let day = monday().with_timezone(&set.time_zone).date_naive();
    let input = BehaviourInput::check_in(monday(), day, 1);
    let first = earn_behaviour(&mut l, &input, &facts(), &set).unwrap();
    assert!(!first.entries.is_empty());
    assert!(first.entries.iter().all(|e| e.state == State::Available));
    let again = earn_behaviour(&mut l, &input, &facts(), &set).unwrap();
    assert!(again.entries.is_empty(), "the same local day never earns twice");
    let (today, month) = usage(l.entries(), &set, monday());
    let rule_id = first.evaluation.effects[0].rule_id.clone();
    assert_eq!(today.by_rule[&rule_id].count, 1);
    assert_eq!(month.by_rule[&rule_id].points, first.evaluation.member_points());
    let (next_day, _) = usage(l.entries(), &set, monday() + Duration::days(1));
    assert!(next_day.by_rule.is_empty(), "the day's usage resets at local midnight");
}

#[test]
fn registration_is_awarded_once_even_under_another_key() {
    let set = rules();
    let mut l = Ledger::new(Config::default());
    let reg = |subject: &str| BehaviourInput {
        subject: subject.into(),
        event: BehaviourEvent { at: monday(), behaviour: Behaviour::Registration },
    };
    let first = earn_behaviour(&mut l, &reg("registration"), &facts(), &set).unwrap();
    assert!(first.evaluation.member_points() > 0);
    let second = earn_behaviour(&mut l, &reg("registration-again"), &facts(), &set).unwrap();
    assert!(second.entries.is_empty());
    assert_eq!(second.evaluation.member_points(), 0);
}
