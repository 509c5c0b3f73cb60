use proptest::prelude::*;

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("test time")
}

fn line(order_id: i64, line_no: i32) -> Source {
    Source::OrderLine { order_id, line_no }
}

fn rule() -> Source {
    Source::Rule { rule_id: "checkin".into(), version: 1 }
}

fn reward() -> Source {
    Source::Reward { reward_id: "mug".into() }
}

const DAY: fn() -> Duration = || Duration::days(1);

fn assert_sound(l: &Ledger) {
    let v = verify(l.entries(), l.config().negative);
    assert!(v.is_empty(), "violations: {v:?}");
}

#[test]
fn spending_takes_earliest_expiring_lots_first() {
    let mut l = Ledger::new(Config { expiry: Expiry::RollingMonths(12), ..Config::default() });
    l.earn("late", Wallet::Points, 100, rule(), t("2026-03-01T00:00:00Z")).unwrap();
    l.adjust("never", Wallet::Points, 50, "op1", "goodwill", t("2026-01-01T00:00:00Z")).unwrap();
    l.config.expiry = Expiry::RollingMonths(1);
    l.earn("early", Wallet::Points, 30, rule(), t("2026-04-01T00:00:00Z")).unwrap();
    l.config.expiry = Expiry::Never;
    l.earn("forever", Wallet::Points, 70, rule(), t("2026-01-01T00:00:00Z")).unwrap();
    let out = l.redeem("r1", 120, reward(), t("2026-04-02T00:00:00Z")).unwrap();
    let taken: Vec<(&str, i64)> =
        out.entries.iter().map(|e| (e.lot.as_ref().map_or("", |x| x.0.as_str()), e.amount)).collect();
    // `early` expires 2026-05-01, `late` 2027-03-01, `never` 2027-01-01 (earned first, expires first).
    assert_eq!(taken, vec![("early#0", -30), ("never#0", -50), ("late#0", -40)]);
    assert_eq!(l.balances(t("2026-04-02T00:00:00Z"), DAY()).available, 130);
    assert_sound(&l);
}

#[test]
fn order_points_are_pending_until_the_return_window_closes() {
    let mut l = Ledger::new(Config::default());
    let at = t("2026-01-10T12:00:00Z");
    l.earn("o1-l1-p", Wallet::Points, 200, line(1, 1), at).unwrap();
    l.earn("o1-l1-g", Wallet::Growth, 20, line(1, 1), at).unwrap();
    let b = l.balances(at, DAY());
    assert_eq!((b.available, b.pending, b.growth, b.growth_pending), (0, 200, 0, 20));
    assert!(l.mature(at + Duration::days(7) - Duration::seconds(1)).unwrap().is_empty());
    assert!(matches!(l.redeem("r", 1, reward(), at).unwrap_err(), LedgerError::Insufficient { .. }));
    let m = l.mature(at + Duration::days(7)).unwrap();
    assert_eq!(m.len(), 4, "a -pending/+available pair per lot");
    assert!(l.mature(at + Duration::days(30)).unwrap().is_empty(), "maturing twice writes nothing");
    let b = l.balances(at + Duration::days(7), DAY());
    assert_eq!((b.available, b.pending, b.growth, b.growth_pending), (200, 0, 20, 0));
    assert_sound(&l);
}

#[test]
fn refund_reverses_per_line_pro_rata_with_the_last_unit_taking_the_remainder() {
    let mut l = Ledger::new(Config::default());
    let at = t("2026-01-10T00:00:00Z");
    l.earn("p1", Wallet::Points, 100, line(1, 1), at).unwrap();
    l.earn("g1", Wallet::Growth, 10, line(1, 1), at).unwrap();
    l.earn("p2", Wallet::Points, 50, line(1, 2), at).unwrap();
    // Line 1 has 3 units: refund 1, then 1 more, then the last.
    let rl = |q| [RefundedLine { line_no: 1, refunded_quantity: q, line_quantity: 3 }];
    let r1 = l.reverse_order_lines("rf1", 1, &rl(1), at).unwrap();
    let sums = |o: &Outcome, w| o.entries.iter().filter(|e| e.wallet == w).map(|e| e.amount).sum::<i64>();
    assert_eq!((sums(&r1, Wallet::Points), sums(&r1, Wallet::Growth)), (-33, -3));
    let r2 = l.reverse_order_lines("rf2", 1, &rl(2), at).unwrap();
    assert_eq!((sums(&r2, Wallet::Points), sums(&r2, Wallet::Growth)), (-33, -3));
    let r3 = l.reverse_order_lines("rf3", 1, &rl(3), at).unwrap();
    assert_eq!((sums(&r3, Wallet::Points), sums(&r3, Wallet::Growth)), (-34, -4));
    // Line 2 is untouched; a late duplicate refund of line 1 reverses nothing more.
    let b = l.balances(at, DAY());
    assert_eq!((b.pending, b.growth_pending), (50, 0));
    assert!(l.reverse_order_lines("rf4", 1, &rl(3), at).unwrap().entries.is_empty());
    assert_sound(&l);
}

fn spent_then_refunded(policy: NegativePolicy) -> Ledger {
    let mut l = Ledger::new(Config { negative: policy, ..Config::default() });
    let at = t("2026-01-10T00:00:00Z");
    l.earn("p1", Wallet::Points, 100, line(7, 1), at).unwrap();
    l.earn("bonus", Wallet::Points, 30, rule(), at).unwrap();
    l.mature(at + Duration::days(8)).unwrap();
    l.redeem("spend", 120, reward(), at + Duration::days(9)).unwrap();
    let out = l
        .reverse_order_lines(
            "refund",
            7,
            &[RefundedLine { line_no: 1, refunded_quantity: 1, line_quantity: 1 }],
            at + Duration::days(10),
        )
        .unwrap();
    assert_eq!(out.entries.iter().map(|e| e.amount).sum::<i64>(), -100, "the whole line is reversed on record");
    l
}

#[test]
fn spent_points_refunded_under_allow_negative_block_redemptions() {
    let mut l = spent_then_refunded(NegativePolicy::AllowNegativeBlockRedeem);
    let now = t("2026-02-01T00:00:00Z");
    assert_eq!(l.balances(now, DAY()).available, -90);
    assert_eq!(l.redeem("r2", 1, reward(), now).unwrap_err(), LedgerError::Blocked { available: -90 });
    l.earn("more", Wallet::Points, 100, rule(), now).unwrap();
    assert_eq!(l.balances(now, DAY()).available, 10);
    l.redeem("r3", 10, reward(), now).unwrap();
    assert_sound(&l);
}

#[test]
fn spent_points_refunded_under_clamp_at_zero_record_the_shortfall() {
    let l = spent_then_refunded(NegativePolicy::ClampAtZero);
    let now = t("2026-02-01T00:00:00Z");
    assert_eq!(l.balances(now, DAY()).available, 0);
    let voided: i64 = l.entries().iter().filter(|e| e.state == State::Voided).map(|e| e.amount).sum();
    assert_eq!(voided, -90);
    assert_sound(&l);
    // The same entries are a violation under the other policy's books, and vice versa.
    let neg = spent_then_refunded(NegativePolicy::AllowNegativeBlockRedeem);
    assert!(matches!(
        verify(neg.entries(), NegativePolicy::ClampAtZero)[..],
        [Violation::NegativeOutsidePolicy { .. }]
    ));
}

#[test]
fn negative_adjustments_follow_the_negative_policy() {
    let at = t("2026-01-10T00:00:00Z");
    for (policy, available, voided) in
        [(NegativePolicy::AllowNegativeBlockRedeem, -20, 0), (NegativePolicy::ClampAtZero, 0, -20)]
    {
        let mut l = Ledger::new(Config { negative: policy, ..Config::default() });
        l.earn("a", Wallet::Points, 30, rule(), at).unwrap();
        let out = l.adjust("fix", Wallet::Points, -50, "op7", "double credit", at).unwrap();
        assert_eq!(out.entries.iter().map(|e| e.amount).sum::<i64>(), -50);
        assert_eq!(l.balances(at, DAY()).available, available);
        let v: i64 = l.entries().iter().filter(|e| e.state == State::Voided).map(|e| e.amount).sum();
        assert_eq!(v, voided);
        assert_sound(&l);
    }
    let mut l = Ledger::new(Config::default());
    let e = l.adjust("x", Wallet::Points, 5, "op7", " ", at).unwrap_err();
    assert!(matches!(e, LedgerError::Invalid(Invalid { code: "missing_field", .. })));
}

#[test]
fn retries_return_the_original_outcome_and_conflicts_are_refused() {
    let mut l = Ledger::new(Config::default());
    let at = t("2026-01-10T00:00:00Z");
    let first = l.earn("k", Wallet::Points, 100, rule(), at).unwrap();
    let again = l.earn("k", Wallet::Points, 100, rule(), at).unwrap();
    assert!(again.replayed && !first.replayed);
    assert_eq!(first.entries, again.entries);
    assert_eq!(l.entries().len(), 1);
    assert_eq!(l.earn("k", Wallet::Points, 101, rule(), at).unwrap_err(), LedgerError::KeyConflict { key: "k".into() });
    assert_eq!(l.redeem("k", 100, reward(), at).unwrap_err(), LedgerError::KeyConflict { key: "k".into() });
    // After a restart the stored entries alone still recognise the retry.
    let mut back = Ledger::from_entries(Config::default(), l.entries()).unwrap();
    assert_eq!(back, l);
    assert!(back.earn("k", Wallet::Points, 100, rule(), at).unwrap().replayed);
    assert!(matches!(back.apply(&first.entries).unwrap_err(), LedgerError::DuplicateEntry { .. }));
    assert!(matches!(
        l.earn("a#b", Wallet::Points, 1, rule(), at).unwrap_err(),
        LedgerError::Invalid(Invalid { code: "invalid_key", .. })
    ));
}

#[test]
fn rolling_and_end_of_year_expiry() {
    let tz = chrono_tz::Asia::Shanghai;
    assert_eq!(
        Expiry::RollingMonths(1).expires_at(t("2026-01-31T10:00:00Z"), tz).unwrap(),
        Some(t("2026-02-28T10:00:00Z"))
    );
    // 2026-12-31T17:00Z is already 2027-01-01 01:00 in Shanghai: it lasts until the end of 2027.
    assert_eq!(Expiry::EndOfYear.expires_at(t("2026-12-31T17:00:00Z"), tz).unwrap(), Some(t("2027-12-31T16:00:00Z")));
    assert_eq!(Expiry::EndOfYear.expires_at(t("2026-06-01T00:00:00Z"), tz).unwrap(), Some(t("2026-12-31T16:00:00Z")));
    assert_eq!(Expiry::Never.expires_at(t("2026-06-01T00:00:00Z"), tz).unwrap(), None);

    let mut l = Ledger::new(Config { expiry: Expiry::EndOfYear, ..Config::default() });
    l.earn("a", Wallet::Points, 100, rule(), t("2026-03-01T00:00:00Z")).unwrap();
    l.earn("b", Wallet::Points, 40, rule(), t("2026-12-31T17:00:00Z")).unwrap();
    l.redeem("r", 30, reward(), t("2026-12-31T18:00:00Z")).unwrap();
    let now = t("2026-12-31T16:00:00Z");
    assert_eq!(l.balances(now - Duration::days(1), DAY()).expiring, 70);
    let expired = l.expire_due(now).unwrap();
    assert_eq!(expired.iter().map(|e| e.amount).collect::<Vec<_>>(), vec![-70]);
    assert!(l.expire_due(now + Duration::days(30)).unwrap().is_empty(), "expiring twice writes nothing");
    assert_eq!(l.balances(now, DAY()).available, 40);
    assert_sound(&l);
}

#[test]
fn verify_catches_tampering() {
    let mut l = Ledger::new(Config::default());
    let at = t("2026-01-10T00:00:00Z");
    l.earn("a", Wallet::Points, 100, rule(), at).unwrap();
    l.redeem("r", 60, reward(), at).unwrap();
    let mut es = l.entries().to_vec();
    es[1].amount = -160;
    let v = verify(&es, NegativePolicy::default());
    assert!(v.iter().any(|x| matches!(x, Violation::LotOverConsumed { .. })), "{v:?}");
    let mut es = l.entries().to_vec();
    es.push(es[0].clone());
    assert!(verify(&es, NegativePolicy::default()).contains(&Violation::DuplicateKey { key: "a#0".into() }));
    let mut es = l.entries().to_vec();
    es.push(Entry { key: "x#0".into(), op: "x".into(), kind: Kind::Expire, amount: -40, ..es[0].clone() });
    let v = verify(&es, NegativePolicy::default());
    assert!(v.iter().any(|x| matches!(x, Violation::ExpiredNotDue { .. })), "{v:?}");
    let mut es = l.entries().to_vec();
    es.push(Entry { key: "y#0".into(), op: "y".into(), lot: None, ..es[0].clone() });
    assert!(verify(&es, NegativePolicy::default()).contains(&Violation::CreditWithoutLot { key: "y#0".into() }));
}

#[derive(Debug, Clone)]
enum Action {
    EarnOrder { lines: Vec<(i64, i64)> },
    EarnRule { amount: i64 },
    Redeem { amount: i64 },
    Adjust { amount: i64 },
    Refund { order: usize, line: usize, quantity: i64 },
    Advance { hours: i64 },
    Mature,
    Expire,
    Retry { index: usize },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => prop::collection::vec((1i64..5, 0i64..500), 1..4).prop_map(|lines| Action::EarnOrder { lines }),
        2 => (1i64..300).prop_map(|amount| Action::EarnRule { amount }),
        3 => (1i64..400).prop_map(|amount| Action::Redeem { amount }),
        1 => (-300i64..300).prop_map(|amount| Action::Adjust { amount }),
        3 => (0usize..20, 0usize..4, 1i64..4).prop_map(|(order, line, quantity)| Action::Refund { order, line, quantity }),
        3 => (1i64..24 * 60).prop_map(|hours| Action::Advance { hours }),
        2 => Just(Action::Mature),
        2 => Just(Action::Expire),
        2 => (0usize..100).prop_map(|index| Action::Retry { index }),
    ]
}

/// A call the model made, kept so it can be retried with the same key.
#[derive(Debug, Clone)]
enum Call {
    Earn(String, Wallet, i64, Source, DateTime<Utc>),
    Redeem(String, i64, DateTime<Utc>),
    Adjust(String, i64, DateTime<Utc>),
    Reverse(String, i64, Vec<RefundedLine>, DateTime<Utc>),
}

fn run(l: &mut Ledger, c: &Call) -> Result<Outcome, LedgerError> {
    match c {
        Call::Earn(k, w, a, s, at) => l.earn(k, *w, *a, s.clone(), *at),
        Call::Redeem(k, a, at) => l.redeem(k, *a, reward(), *at),
        Call::Adjust(k, a, at) => l.adjust(k, Wallet::Points, *a, "op", "correction", *at),
        Call::Reverse(k, o, lines, at) => l.reverse_order_lines(k, *o, lines, *at),
    }
}

fn sums(l: &Ledger, now: DateTime<Utc>) -> Balances {
    let mut b = Balances::default();
    for e in l.entries() {
        match (e.wallet, e.state) {
            (Wallet::Points, State::Available) => b.available += e.amount,
            (Wallet::Points, State::Pending { .. }) => b.pending += e.amount,
            (Wallet::Growth, State::Available) => b.growth += e.amount,
            (Wallet::Growth, State::Pending { .. }) => b.growth_pending += e.amount,
            _ => {}
        }
    }
    b.expiring = l.balances(now, DAY()).expiring;
    b
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![Just(Expiry::RollingMonths(1)), Just(Expiry::EndOfYear), Just(Expiry::Never)],
        prop_oneof![Just(NegativePolicy::AllowNegativeBlockRedeem), Just(NegativePolicy::ClampAtZero)],
        prop_oneof![Just(Duration::days(7)), Just(Duration::zero())],
    )
        .prop_map(|(expiry, negative, return_window)| Config {
            expiry,
            negative,
            return_window,
            ..Config::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random histories keep every invariant, balances stay the sums of entries, retries never double
    /// anything, and folding the emitted entries rebuilds the same ledger (a restart).
    #[test]
    fn random_histories_keep_every_invariant(cfg in config(), actions in prop::collection::vec(action(), 1..60)) {
        let mut l = Ledger::new(cfg.clone());
        let mut emitted: Vec<Entry> = Vec::new();
        let mut now = t("2026-11-01T00:00:00Z");
        let mut orders: Vec<(i64, Vec<(i64, i64)>)> = Vec::new();
        let mut calls: Vec<(Call, Result<Outcome, LedgerError>)> = Vec::new();
        for (n, a) in actions.into_iter().enumerate() {
            let key = format!("k{n}");
            let call = match a {
                Action::EarnOrder { lines } => {
                    let order_id = orders.len() as i64 + 1;
                    for (i, &(_, pts)) in lines.iter().enumerate() {
                        let src = line(order_id, i as i32 + 1);
                        for (w, amount) in [(Wallet::Points, pts), (Wallet::Growth, pts / 10)] {
                            if amount > 0 {
                                let out = l.earn(&format!("{key}-{i}-{w:?}"), w, amount, src.clone(), now).unwrap();
                                emitted.extend(out.entries);
                            }
                        }
                    }
                    orders.push((order_id, lines.iter().map(|&(q, _)| (q, 0)).collect()));
                    None
                }
                Action::EarnRule { amount } => Some(Call::Earn(key, Wallet::Points, amount, rule(), now)),
                Action::Redeem { amount } => Some(Call::Redeem(key, amount, now)),
                Action::Adjust { amount } if amount != 0 => Some(Call::Adjust(key, amount, now)),
                Action::Adjust { .. } => None,
                Action::Refund { order, line: li, quantity } => {
                    match orders.get_mut(order) {
                        Some((order_id, lines)) if !lines.is_empty() => {
                            let i = li % lines.len();
                            let (q, done) = lines[i];
                            let after = (done + quantity).min(q);
                            lines[i].1 = after;
                            let rl = RefundedLine { line_no: i as i32 + 1, refunded_quantity: after, line_quantity: q };
                            Some(Call::Reverse(key, *order_id, vec![rl], now))
                        }
                        _ => None,
                    }
                }
                Action::Advance { hours } => { now += Duration::hours(hours); None }
                Action::Mature => { emitted.extend(l.mature(now).unwrap()); None }
                Action::Expire => { emitted.extend(l.expire_due(now).unwrap()); None }
                Action::Retry { index } => {
                    let index = index % calls.len().max(1);
                    if let Some((call, first)) = calls.get(index).cloned() {
                        let before = l.entries().len();
                        let again = run(&mut l, &call);
                        match (&first, &again) {
                            (Ok(f), Ok(a)) => {
                                // A call that wrote nothing left no record; its retry again writes nothing.
                                prop_assert!(a.replayed || f.entries.is_empty());
                                prop_assert_eq!(&f.entries, &a.entries);
                                prop_assert_eq!(l.entries().len(), before);
                            }
                            // A refused call was never recorded: its retry may now succeed.
                            (Err(_), Ok(a)) => {
                                prop_assert!(!a.replayed);
                                emitted.extend(a.entries.clone());
                                calls[index].1 = again.clone();
                            }
                            (Ok(_), Err(e)) => prop_assert!(false, "a retry of a recorded call failed: {:?}", e),
                            (Err(_), Err(e)) => prop_assert!(matches!(e, LedgerError::Insufficient { .. } | LedgerError::Blocked { .. }), "{:?}", e),
                        }
                    }
                    None
                }
            };
            if let Some(c) = call {
                let out = run(&mut l, &c);
                match &out {
                    Ok(o) => { prop_assert!(!o.replayed); emitted.extend(o.entries.clone()); }
                    Err(e) => prop_assert!(matches!(e, LedgerError::Insufficient { .. } | LedgerError::Blocked { .. }), "{:?}", e),
                }
                calls.push((c, out));
            }
            // Every refunded line has given back exactly its pro-rata share of what it earned, in both wallets.
            for (order_id, lines) in &orders {
                for (i, &(q, after)) in lines.iter().enumerate() {
                    let src = line(*order_id, i as i32 + 1);
                    for w in [Wallet::Points, Wallet::Growth] {
                        let of = |k: Kind| -> i64 {
                            l.entries().iter().filter(|e| e.kind == k && e.wallet == w && e.source == src && e.lot.as_ref().is_none_or(|x| x.0 == e.key || k == Kind::Reverse)).map(|e| e.amount).sum()
                        };
                        let earned = of(Kind::Earn);
                        prop_assert_eq!(-of(Kind::Reverse), earned * after / q, "order {} line {}", order_id, i + 1);
                    }
                }
            }
            let v = verify(l.entries(), cfg.negative);
            prop_assert!(v.is_empty(), "violations {:?}", v);
            let b = l.balances(now, DAY());
            prop_assert_eq!(b, sums(&l, now));
            prop_assert!(b.pending >= 0 && b.growth_pending >= 0);
            if cfg.negative == NegativePolicy::ClampAtZero {
                prop_assert!(b.available >= 0);
            }
        }
        prop_assert_eq!(&emitted[..], l.entries());
        let back = Ledger::from_entries(cfg, &emitted).unwrap();
        prop_assert_eq!(back, l);
    }
}

/// Orders a history placed: id, and per line (quantity, units refunded so far).
type Orders = Vec<(i64, Vec<(i64, i64)>)>;

/// Play random actions on a ledger without the retry checks (those are above): orders are numbered from
/// `first_order`; returns each order's lines as (quantity, refunded so far) and the clock at the end.
fn play(
    l: &mut Ledger,
    actions: &[Action],
    first_order: i64,
    prefix: &str,
    mut now: DateTime<Utc>,
) -> (Orders, DateTime<Utc>) {
    let mut orders: Orders = Vec::new();
    for (n, a) in actions.iter().enumerate() {
        let key = format!("{prefix}{n}");
        let call = match a {
            Action::EarnOrder { lines } => {
                let order_id = first_order + orders.len() as i64;
                for (i, &(_, pts)) in lines.iter().enumerate() {
                    for (w, amount) in [(Wallet::Points, pts), (Wallet::Growth, pts / 10)] {
                        if amount > 0 {
                            l.earn(&format!("{key}-{i}-{w:?}"), w, amount, line(order_id, i as i32 + 1), now).unwrap();
                        }
                    }
                }
                orders.push((order_id, lines.iter().map(|&(q, _)| (q, 0)).collect()));
                None
            }
            Action::EarnRule { amount } => Some(Call::Earn(key, Wallet::Points, *amount, rule(), now)),
            Action::Redeem { amount } => Some(Call::Redeem(key, *amount, now)),
            Action::Adjust { amount } if *amount != 0 => Some(Call::Adjust(key, *amount, now)),
            Action::Refund { order, line: li, quantity } => match orders.get_mut(*order) {
                Some((order_id, lines)) if !lines.is_empty() => {
                    let i = li % lines.len();
                    let (q, done) = lines[i];
                    lines[i].1 = (done + quantity).min(q);
                    let rl = RefundedLine { line_no: i as i32 + 1, refunded_quantity: lines[i].1, line_quantity: q };
                    Some(Call::Reverse(key, *order_id, vec![rl], now))
                }
                _ => None,
            },
            Action::Advance { hours } => {
                now += Duration::hours(*hours);
                None
            }
            Action::Mature => {
                l.mature(now).unwrap();
                None
            }
            Action::Expire => {
                l.expire_due(now).unwrap();
                None
            }
            Action::Adjust { .. } | Action::Retry { .. } => None,
        };
        if let Some(c) = call {
            // Refusals (insufficient, blocked) are part of a random history.
            let _ = run(l, &c);
        }
    }
    (orders, now)
}

#[test]
fn merge_moves_lots_debt_and_line_totals_to_the_survivor() {
    let cfg = Config::default();
    let at = t("2026-01-10T00:00:00Z");
    let mut from = Ledger::new(cfg.clone());
    from.earn("o1", Wallet::Points, 100, line(1, 1), at).unwrap();
    from.earn("o1g", Wallet::Growth, 10, line(1, 1), at).unwrap();
    from.earn("o2", Wallet::Points, 40, line(2, 1), at + Duration::days(20)).unwrap();
    from.mature(at + Duration::days(8)).unwrap();
    from.redeem("spend", 60, reward(), at + Duration::days(9)).unwrap();
    let mut into = Ledger::new(cfg);
    into.earn("own", Wallet::Points, 5, rule(), at).unwrap();
    let when = at + Duration::days(21);
    let m = merge(&mut from, &mut into, "merge:2:1", 2, 1, when).unwrap();
    assert!(!m.from.replayed && !m.into.replayed);
    let (bf, bi) = (from.balances(when, DAY()), into.balances(when, DAY()));
    assert_eq!((bf.available, bf.pending, bf.growth, bf.growth_pending), (0, 0, 0, 0));
    assert_eq!((bi.available, bi.pending, bi.growth), (45, 40, 10));
    // The moved lots keep their expiry and return window.
    let moved: Vec<&Lot> = into.lots().iter().filter(|l| l.source == line(1, 1) || l.source == line(2, 1)).collect();
    let o2 = moved.iter().find(|l| l.source == line(2, 1)).unwrap();
    assert_eq!(o2.available_at, Some(at + Duration::days(27)));
    let o1 = moved.iter().find(|l| l.source == line(1, 1) && l.wallet == Wallet::Points).unwrap();
    assert_eq!(o1.expires_at, from.lots()[0].expires_at);
    // Order 1 line 1 earned 100; refunding it on the survivor reverses 100 (its 40 left, then 5 + debt).
    let r = into
        .reverse_order_lines("rf", 1, &[RefundedLine { line_no: 1, refunded_quantity: 1, line_quantity: 1 }], when)
        .unwrap();
    let points: i64 = r.entries.iter().filter(|e| e.wallet == Wallet::Points).map(|e| e.amount).sum();
    assert_eq!(points, -100);
    assert_eq!(into.balances(when, DAY()).growth, 0);
    // A retry of the merge writes nothing.
    let again = merge(&mut from, &mut into, "merge:2:1", 2, 1, when).unwrap();
    assert!(again.from.replayed && again.into.replayed);
    assert_eq!(again.into.entries, m.into.entries);
    assert_sound(&from);
    assert_sound(&into);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// After any two histories, a merge moves every balance (debt included) to the survivor, leaves the
    /// merged member at zero, keeps both ledgers sound, and refunds of the merged member's orders on the
    /// survivor bring each line's total reversal to exactly its pro-rata share of what it earned.
    #[test]
    fn merged_ledgers_keep_every_invariant(
        cfg in config(),
        a in prop::collection::vec(action(), 1..40),
        b in prop::collection::vec(action(), 1..40),
        after in prop::collection::vec(action(), 1..30),
    ) {
        let start = t("2026-11-01T00:00:00Z");
        let mut from = Ledger::new(cfg.clone());
        let (mut orders, t1) = play(&mut from, &a, 1, "a", start);
        let mut into = Ledger::new(cfg.clone());
        let (_, t2) = play(&mut into, &b, 1000, "b", start);
        let now = t1.max(t2);
        let (bf, bi) = (from.balances(now, DAY()), into.balances(now, DAY()));
        merge(&mut from, &mut into, "m", 1, 2, now).unwrap();
        let zero = from.balances(now, DAY());
        prop_assert_eq!((zero.available, zero.pending, zero.growth, zero.growth_pending), (0, 0, 0, 0));
        let sum = into.balances(now, DAY());
        prop_assert_eq!(sum.available, bf.available + bi.available);
        prop_assert_eq!(sum.pending, bf.pending + bi.pending);
        prop_assert_eq!(sum.growth, bf.growth + bi.growth);
        prop_assert_eq!(sum.growth_pending, bf.growth_pending + bi.growth_pending);
        prop_assert!(verify(from.entries(), cfg.negative).is_empty(), "{:?}", verify(from.entries(), cfg.negative));
        // The survivor goes on; the merged member's orders are refunded on it.
        let mut t3 = now;
        for (n, act) in after.iter().enumerate() {
            match act {
                Action::Refund { order, line: li, quantity } if !orders.is_empty() => {
                    let k = order % orders.len();
                    let (order_id, lines) = &mut orders[k];
                    let i = li % lines.len();
                    let (q, done) = lines[i];
                    lines[i].1 = (done + quantity).min(q);
                    let rl = RefundedLine { line_no: i as i32 + 1, refunded_quantity: lines[i].1, line_quantity: q };
                    into.reverse_order_lines(&format!("after{n}"), *order_id, &[rl], t3).unwrap();
                }
                Action::Advance { hours } => t3 += Duration::hours(*hours),
                Action::Mature => { into.mature(t3).unwrap(); }
                Action::Expire => { into.expire_due(t3).unwrap(); }
                Action::Redeem { amount } => { let _ = into.redeem(&format!("after{n}"), *amount, reward(), t3); }
                _ => {}
            }
        }
        let v = verify(into.entries(), cfg.negative);
        prop_assert!(v.is_empty(), "violations {:?}", v);
        for (order_id, lines) in &orders {
            for (i, &(q, refunded)) in lines.iter().enumerate() {
                let src = line(*order_id, i as i32 + 1);
                for w in [Wallet::Points, Wallet::Growth] {
                    let earned: i64 = from.entries().iter()
                        .filter(|e| e.kind == Kind::Earn && e.wallet == w && e.source == src && e.lot.as_ref().is_some_and(|x| x.0 == e.key))
                        .map(|e| e.amount).sum();
                    let reversed: i64 = from.entries().iter().chain(into.entries())
                        .filter(|e| e.kind == Kind::Reverse && e.wallet == w && e.source == src)
                        .map(|e| -e.amount).sum();
                    prop_assert_eq!(reversed, earned * refunded / q, "order {} line {}", order_id, i + 1);
                }
            }
        }
        let back = Ledger::from_entries(cfg, into.entries()).unwrap();
        prop_assert_eq!(back, into);
    }
}
